//! A guard in front of the HCL parser, which recurses once per nesting level with no limit
//! of its own: a small file nested thousands deep would overflow the stack and abort the
//! process (on a reload, the running server). Real configuration nests a few levels.

/// Deeper than this is refused before parsing.
pub const MAX_NESTING: usize = 128;

/// The byte offset at which `text` first nests deeper than [`MAX_NESTING`], if it does.
/// Counts brackets, braces and parentheses outside strings, `${`/`%{` templates inside
/// strings (and strings inside those), and chains of unary operators (`!`, `-`), each of
/// which is a level of recursion for the parser. Comments are skipped.
pub fn too_deep(text: &str) -> Option<usize> {
    #[derive(PartialEq)]
    enum Level {
        Str,
        Open,
    }
    let b = text.as_bytes();
    let mut stack: Vec<Level> = Vec::new();
    let mut unary = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if stack.last() == Some(&Level::Str) {
            match c {
                b'\\' => i += 1,
                b'"' => {
                    stack.pop();
                }
                b'$' | b'%' if next == Some(b'{') => {
                    stack.push(Level::Open);
                    i += 1;
                }
                b'\n' => {
                    // Quoted strings end at the line; don't let a stray quote swallow the file.
                    stack.pop();
                }
                _ => {}
            }
        } else {
            match c {
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if next == Some(b'/') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if next == Some(b'*') => {
                    i += 2;
                    while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                        i += 1;
                    }
                    i += 1;
                }
                b'"' => stack.push(Level::Str),
                b'[' | b'{' | b'(' => stack.push(Level::Open),
                b']' | b'}' | b')' => {
                    if stack.last() == Some(&Level::Open) {
                        stack.pop();
                    }
                }
                b'!' | b'-' => unary += 1,
                b' ' | b'\t' => {}
                _ => unary = 0,
            }
        }
        if c != b'!' && c != b'-' && c != b' ' && c != b'\t' {
            unary = 0;
        }
        if stack.len() + unary > MAX_NESTING {
            return Some(i.min(b.len()));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_kind_of_nesting() {
        let deep = |open: &str, close: &str, n: usize| {
            format!("x = {}1{}", open.repeat(n), close.repeat(n))
        };
        for (o, c) in [("[", "]"), ("{a = ", "}"), ("(", ")")] {
            assert!(too_deep(&deep(o, c, MAX_NESTING)).is_none(), "{o}");
            assert!(too_deep(&deep(o, c, MAX_NESTING + 1)).is_some(), "{o}");
        }
        assert!(too_deep(&format!("x = {}1", "!".repeat(MAX_NESTING + 1))).is_some());
        assert!(too_deep(&format!("x = {}1", "- ".repeat(MAX_NESTING + 1))).is_some());
        let templates = format!("x = {}", "\"${".repeat(MAX_NESTING));
        assert!(too_deep(&templates).is_some());
        // Brackets inside strings and comments are not nesting.
        let quoted = format!("x = \"{}\"\n# {}\n", "[".repeat(500), "{".repeat(500));
        assert!(too_deep(&quoted).is_none());
        // Ordinary configuration with hyphens and negative numbers.
        assert!(too_deep("a-b-c = -1\nprovider_mirror \"m\" {\n  x = [1, -2]\n}\n").is_none());
    }
}
