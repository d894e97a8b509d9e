//! Terraform's version constraint syntax (`>= 4.0, < 6.0`, `~> 5.1`, `!= 5.2.0`, `1.2.3`), with
//! its pre-release rule: a pre-release version is only selected when a constraint names it
//! exactly.

use std::fmt;

use semver::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// `~>`: the rightmost given component may increase.
    Pessimistic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Constraint {
    op: Op,
    version: Version,
    /// How many of major.minor.patch were written (for `~>`).
    parts: usize,
}

impl Constraint {
    /// Terraform's order of operators on the same version: lower bounds first, upper
    /// bounds last (`~> 1.2.0` is "patch only", `~> 1.2` "minor only").
    fn order_at_same_version(&self) -> u8 {
        match self.op {
            Op::Gt => 1,
            Op::Ge => 2,
            Op::Eq => 3,
            Op::Pessimistic if self.parts >= 3 => 4,
            Op::Pessimistic => 5,
            Op::Le => 6,
            Op::Lt => 7,
            Op::Ne => 8,
        }
    }
}

/// A comma-separated list of constraints, all of which must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Constraints {
    all: Vec<Constraint>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version constraint {text:?}: {reason}")]
pub struct ConstraintError {
    pub text: String,
    pub reason: String,
}

impl Constraints {
    /// No constraint: any release (not pre-release) version.
    pub fn any() -> Constraints {
        Constraints::default()
    }

    pub fn parse(text: &str) -> Result<Constraints, ConstraintError> {
        let err = |reason: String| ConstraintError {
            text: text.to_owned(),
            reason,
        };
        let mut all = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(err("empty constraint".into()));
            }
            for (wrong, right) in [("=>", ">="), ("=<", "<=")] {
                if part.starts_with(wrong) {
                    return Err(err(format!(
                        "{wrong:?} is not an operator; did you mean {right:?}?"
                    )));
                }
            }
            let (op, rest) = [
                ("~>", Op::Pessimistic),
                (">=", Op::Ge),
                ("<=", Op::Le),
                ("!=", Op::Ne),
                (">", Op::Gt),
                ("<", Op::Lt),
                ("=", Op::Eq),
            ]
            .iter()
            .find_map(|(p, op)| part.strip_prefix(p).map(|r| (*op, r.trim())))
            .unwrap_or((Op::Eq, part));
            let (version, parts) =
                parse_partial(rest).ok_or_else(|| err(format!("{rest:?} is not a version")))?;
            all.push(Constraint { op, version, parts });
        }
        Ok(Constraints {
            all,
            text: text.trim().to_owned(),
        })
    }

    /// Combines two sets (both must hold), as Terraform does for several modules' requirements.
    pub fn and(mut self, other: &Constraints) -> Constraints {
        self.all.extend(other.all.iter().cloned());
        self.text = match (self.text.is_empty(), other.text.is_empty()) {
            (true, _) => other.text.clone(),
            (_, true) => self.text,
            _ => format!("{}, {}", self.text, other.text),
        };
        self
    }

    /// The constraints as Terraform writes them in lock files: full versions (`~>` keeps
    /// the parts given, at least two), no `=`, without repeats, sorted by version and, for
    /// the same version, by operator in Terraform's order. `terraform init` refuses a lock
    /// file whose constraints are not in exactly this form.
    pub fn normalized(&self) -> String {
        let mut parts: Vec<(Version, u8, String)> = self
            .all
            .iter()
            .map(|c| {
                let v = &c.version;
                let version = if c.op == Op::Pessimistic && c.parts < 3 {
                    // Terraform writes the pre-release after the two parts: `~> 2.0-beta.1`.
                    match v.pre.is_empty() {
                        true => format!("{}.{}", v.major, v.minor),
                        false => format!("{}.{}-{}", v.major, v.minor, v.pre),
                    }
                } else {
                    v.to_string()
                };
                let op = match c.op {
                    Op::Eq => "",
                    Op::Ne => "!= ",
                    Op::Gt => "> ",
                    Op::Ge => ">= ",
                    Op::Lt => "< ",
                    Op::Le => "<= ",
                    Op::Pessimistic => "~> ",
                };
                (
                    v.clone(),
                    c.order_at_same_version(),
                    format!("{op}{version}"),
                )
            })
            .collect();
        parts.sort_by(|a, b| {
            cmp_ignoring_build(&a.0, &b.0)
                .then_with(|| a.0.build.cmp(&b.0.build))
                .then_with(|| a.1.cmp(&b.1))
        });
        let mut out: Vec<String> = Vec::new();
        for (_, _, p) in parts {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out.join(", ")
    }

    pub fn is_any(&self) -> bool {
        self.all.is_empty()
    }

    pub fn allows(&self, v: &Version) -> bool {
        if !v.pre.is_empty() {
            // Pre-releases only when asked for by exact version.
            let named = self.all.iter().any(|c| {
                c.op == Op::Eq && cmp_ignoring_build(&c.version, v) == std::cmp::Ordering::Equal
            });
            if !named {
                return false;
            }
        }
        self.all.iter().all(|c| c.allows(v))
    }

    /// The newest allowed version of `versions`.
    pub fn newest<'a>(
        &self,
        versions: impl IntoIterator<Item = &'a Version>,
    ) -> Option<&'a Version> {
        versions.into_iter().filter(|v| self.allows(v)).max()
    }
}

impl fmt::Display for Constraints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            f.write_str("(any version)")
        } else {
            f.write_str(&self.text)
        }
    }
}

impl Constraint {
    fn allows(&self, v: &Version) -> bool {
        // Build metadata never takes part in comparisons.
        let cmp = cmp_ignoring_build(v, &self.version);
        use std::cmp::Ordering::*;
        match self.op {
            Op::Eq => cmp == Equal,
            Op::Ne => cmp != Equal,
            Op::Gt => cmp == Greater,
            Op::Ge => cmp != Less,
            Op::Lt => cmp == Less,
            Op::Le => cmp != Greater,
            Op::Pessimistic => {
                if cmp == Less {
                    return false;
                }
                let c = &self.version;
                match self.parts {
                    // ~> 1 and ~> 1.2 both allow any 1.x (≥ the given).
                    1 | 2 => v.major == c.major,
                    _ => v.major == c.major && v.minor == c.minor,
                }
            }
        }
    }
}

fn cmp_ignoring_build(a: &Version, b: &Version) -> std::cmp::Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

/// `1`, `1.2`, `1.2.3`, `1.2.3-beta.1`, `1.2-beta.1` (Terraform takes no leading `v`).
fn parse_partial(s: &str) -> Option<(Version, usize)> {
    if let Ok(v) = Version::parse(s) {
        return Some((v, 3));
    }
    let (s, pre) = match s.split_once('-') {
        Some((_, "")) => return None,
        Some((nums, pre)) => (nums, Some(semver::Prerelease::new(pre).ok()?)),
        None => (s, None),
    };
    let nums: Vec<&str> = s.split('.').collect();
    if nums.is_empty()
        || nums.len() > 2
        || !nums
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let major = nums[0].parse().ok()?;
    let minor = nums.get(1).map_or(Some(0), |m| m.parse().ok())?;
    let mut version = Version::new(major, minor, 0);
    if let Some(pre) = pre {
        version.pre = pre;
    }
    Some((version, nums.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    /// Terraform's documented semantics, table-driven.
    #[test]
    fn terraform_semantics() {
        let cases: &[(&str, &str, bool)] = &[
            ("1.2.3", "1.2.3", true),
            ("1.2.3", "1.2.4", false),
            ("= 1.2.3", "1.2.3", true),
            ("!= 1.2.3", "1.2.3", false),
            ("!= 1.2.3", "1.2.4", true),
            (">= 1.2.0", "1.2.0", true),
            (">= 1.2.0", "1.1.9", false),
            ("> 1.2.0", "1.2.0", false),
            ("< 2.0.0", "1.9.9", true),
            ("< 2.0.0", "2.0.0", false),
            ("<= 2.0.0", "2.0.0", true),
            (">= 4.0, < 6.0", "5.9.0", true),
            (">= 4.0, < 6.0", "6.0.0", false),
            (">= 4.0, < 6.0", "3.9.0", false),
            ("~> 1.2.3", "1.2.9", true),
            ("~> 1.2.3", "1.3.0", false),
            ("~> 1.2.3", "1.2.2", false),
            ("~> 1.2", "1.9.0", true),
            ("~> 1.2", "2.0.0", false),
            ("~> 1.2", "1.1.0", false),
            ("~> 1", "1.5.0", true),
            ("~> 1", "2.0.0", false),
            ("1.2", "1.2.0", true),
            // Pre-releases: only when named exactly.
            (">= 1.0.0", "2.0.0-beta.1", false),
            ("~> 2.0.0-beta.1", "2.0.0-beta.2", false),
            ("2.0.0-beta.1", "2.0.0-beta.1", true),
            ("= 2.0.0-beta.1", "2.0.0-beta.1", true),
            // Build metadata is ignored in comparisons.
            ("1.2.3", "1.2.3+build.5", true),
        ];
        for (c, ver, want) in cases {
            let cs = Constraints::parse(c).unwrap();
            assert_eq!(cs.allows(&v(ver)), *want, "{c} vs {ver}");
        }
    }

    #[test]
    fn newest_and_any() {
        let versions: Vec<Version> = ["1.0.0", "1.5.0", "2.0.0", "3.0.0-rc.1"]
            .iter()
            .map(|s| v(s))
            .collect();
        assert_eq!(
            Constraints::any().newest(&versions).unwrap().to_string(),
            "2.0.0"
        );
        assert_eq!(
            Constraints::parse("~> 1.0")
                .unwrap()
                .newest(&versions)
                .unwrap()
                .to_string(),
            "1.5.0"
        );
        assert!(Constraints::parse("> 5")
            .unwrap()
            .newest(&versions)
            .is_none());
        let both = Constraints::parse(">= 1.0")
            .unwrap()
            .and(&Constraints::parse("< 2.0").unwrap());
        assert_eq!(both.newest(&versions).unwrap().to_string(), "1.5.0");
        assert_eq!(both.to_string(), ">= 1.0, < 2.0");
    }

    #[test]
    fn normalized_as_terraform_writes_lock_files() {
        for (given, want) in [
            (">= 1.0, < 2.0", ">= 1.0.0, < 2.0.0"),
            (">=1.0,<2", ">= 1.0.0, < 2.0.0"),
            ("~> 1", "~> 1.0"),
            ("~> 1.2", "~> 1.2"),
            ("~> 1.2.3", "~> 1.2.3"),
            ("= 1.1.0", "1.1.0"),
            ("< 2.0, >= 1.0, != 1.0.1", ">= 1.0.0, != 1.0.1, < 2.0.0"),
            (">= 1.0, >= 1.0.0", ">= 1.0.0"),
            ("~> 2.0-beta.1", "~> 2.0-beta.1"),
            // Same version: the operator decides, in Terraform's order (what `terraform
            // init` 1.0.3 asked for when given the order the version alone left).
            (
                "!= 1.2.0, >= 1.2.0, < 2, ~> 1.2, >= 1.2",
                ">= 1.2.0, ~> 1.2, != 1.2.0, < 2.0.0",
            ),
            (
                "!= 1.0.0, <= 1.0.0, < 1.0.0, ~> 1.0, ~> 1.0.0, 1.0.0, > 1.0.0, >= 1.0.0",
                "> 1.0.0, >= 1.0.0, 1.0.0, ~> 1.0.0, ~> 1.0, <= 1.0.0, < 1.0.0, != 1.0.0",
            ),
        ] {
            assert_eq!(
                Constraints::parse(given).unwrap().normalized(),
                want,
                "{given}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", ">=", "abc", ">= 1.x", "1.2.3.4", "v1.2.5", ">= v1.0", ">= 1.0,", "1.2-", "=> 1.0",
        ] {
            assert!(Constraints::parse(bad).is_err(), "{bad}");
        }
    }
}
