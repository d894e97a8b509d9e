//! A guard in front of the HCL parser, which recurses once per nesting level with no limit
//! of its own: a small file nested thousands deep would overflow the stack and abort the
//! process (on a reload, the running server). Real configuration nests a few levels.

/// Deeper than this is refused before parsing.
pub const MAX_NESTING: usize = 128;

/// The parser runs on a thread of its own with this much stack (reserved, not committed), so
/// that what the guard does not count (long operator chains) still cannot overflow it.
const PARSE_STACK: usize = 256 << 20;

/// `hcl_edit::parser::parse_body` on a thread with a large stack.
pub fn parse_body(text: &str) -> Result<hcl_edit::structure::Body, hcl_edit::parser::Error> {
    let owned = text.to_owned();
    let spawned = std::thread::Builder::new()
        .name("hcl-parse".into())
        .stack_size(PARSE_STACK)
        .spawn(move || hcl_edit::parser::parse_body(&owned));
    match spawned {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        // No thread to be had: the guard in front still bounds the recursion.
        Err(_) => hcl_edit::parser::parse_body(text),
    }
}

#[derive(PartialEq)]
enum Level {
    /// A quoted string (a template).
    Str,
    /// A heredoc template, ended by a line holding just this word.
    Heredoc(String),
    /// A bracket, brace, parenthesis or `${`/`%{` interpolation.
    Open,
}

/// The byte offset at which `text` first nests deeper than [`MAX_NESTING`], if it does.
/// Counts brackets, braces and parentheses outside templates, `${`/`%{` inside strings and
/// heredocs (and what they contain), and chains of unary operators (`!`, `-`), each of which
/// is a level of recursion for the parser. Comments and template text are skipped.
pub fn too_deep(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut stack: Vec<Level> = Vec::new();
    let mut unary = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match stack.last() {
            Some(Level::Str) | Some(Level::Heredoc(_)) => {
                let in_string = stack.last() == Some(&Level::Str);
                match c {
                    b'\\' if in_string => i += 1,
                    b'"' if in_string => {
                        stack.pop();
                    }
                    // `$${` and `%%{` are escapes, not interpolations.
                    b'$' | b'%' if next == Some(c) && b.get(i + 2) == Some(&b'{') => i += 2,
                    b'$' | b'%' if next == Some(b'{') => {
                        stack.push(Level::Open);
                        i += 1;
                    }
                    b'\n' if in_string => {
                        // Quoted strings end at the line; a stray quote must not swallow the file.
                        stack.pop();
                    }
                    b'\n' => {
                        let line_end = b[i + 1..]
                            .iter()
                            .position(|&x| x == b'\n')
                            .map_or(b.len(), |p| i + 1 + p);
                        let line = text.get(i + 1..line_end).unwrap_or("").trim();
                        if let Some(Level::Heredoc(word)) = stack.last() {
                            if line == word {
                                stack.pop();
                                i = line_end;
                                continue;
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {
                match c {
                    b'#' => {
                        while i < b.len() && b[i] != b'\n' {
                            i += 1;
                        }
                        continue;
                    }
                    b'/' if next == Some(b'/') => {
                        while i < b.len() && b[i] != b'\n' {
                            i += 1;
                        }
                        continue;
                    }
                    b'/' if next == Some(b'*') => {
                        i += 2;
                        while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                            i += 1;
                        }
                        // Comments do not break a chain of unary operators.
                        i += 2;
                        continue;
                    }
                    b'<' if next == Some(b'<') => {
                        // `<<WORD` or `<<-WORD`, then a newline: a heredoc.
                        let start = i + 2 + usize::from(b.get(i + 2) == Some(&b'-'));
                        let word_end = b[start..]
                            .iter()
                            .position(|x| !(x.is_ascii_alphanumeric() || *x == b'_'))
                            .map_or(b.len(), |p| start + p);
                        if word_end > start && b.get(word_end) == Some(&b'\n') {
                            let word = text.get(start..word_end).unwrap_or("").to_owned();
                            stack.push(Level::Heredoc(word));
                            i = word_end;
                            continue;
                        }
                    }
                    b'"' => stack.push(Level::Str),
                    b'[' | b'{' | b'(' => stack.push(Level::Open),
                    b']' | b'}' | b')' if stack.last() == Some(&Level::Open) => {
                        stack.pop();
                    }
                    _ => {}
                }
                match c {
                    b'!' | b'-' => unary += 1,
                    b' ' | b'\t' => {}
                    _ => unary = 0,
                }
            }
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
        // Escapes are not interpolations; heredoc text is not code; comments do not break a
        // unary chain.
        let escaped: String = (0..200).map(|i| format!("a{i} = \"$${{HOME\"\n")).collect();
        assert!(too_deep(&escaped).is_none());
        let heredoc = format!(
            "x = <<-EOT\n{}\n{}\n  EOT\ny = 1\n",
            "-".repeat(300),
            "-- a ( note\n".repeat(200)
        );
        assert!(too_deep(&heredoc).is_none(), "heredoc");
        let deep_in_heredoc = format!("x = <<EOT\n${{{}\nEOT\n", "[".repeat(MAX_NESTING + 1));
        assert!(too_deep(&deep_in_heredoc).is_some());
        assert!(too_deep(&format!("x = {}1", "-/**/".repeat(MAX_NESTING + 1))).is_some());
        // Ordinary configuration with hyphens and negative numbers.
        assert!(too_deep("a-b-c = -1\nprovider_mirror \"m\" {\n  x = [1, -2]\n}\n").is_none());
    }
}
