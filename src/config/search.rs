//! Where the configuration file is looked for when `--config` is not given (XDG base dirs,
//! then `/etc`), as the prototype did: zero or several candidates are both errors.

use std::path::{Path, PathBuf};

pub const APP_DIR: &str = "oci-distribution-terraform-registry";
pub const FILE_NAME: &str = "config.hcl";

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("no configuration file found; looked for {FILE_NAME} in these directories:\n{}\nCreate one there, or name a file with --config=FILE (see example-config.hcl)", list(.searched))]
    NotFound { searched: Vec<PathBuf> },
    #[error("several configuration files found, and it is not clear which to use:\n{}\nRemove all but one, or choose one with --config=FILE", list(.found))]
    Ambiguous { found: Vec<PathBuf> },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The directories searched, most specific first, without duplicates.
pub fn config_dirs(env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut dirs = Vec::new();
    let user_base = non_empty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(base) = user_base {
        dirs.push(base.join(APP_DIR));
    }
    let system = non_empty("XDG_CONFIG_DIRS").unwrap_or_else(|| "/etc/xdg".to_owned());
    for base in system.split(':').filter(|s| !s.is_empty()) {
        dirs.push(Path::new(base).join(APP_DIR));
    }
    dirs.push(Path::new("/etc").join(APP_DIR));
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Finds exactly one `config.hcl` in `dirs`.
pub fn find_config_file(dirs: &[PathBuf]) -> Result<PathBuf, SearchError> {
    let found: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join(FILE_NAME))
        .filter(|f| f.is_file())
        .collect();
    match found.len() {
        0 => Err(SearchError::NotFound {
            searched: dirs.to_vec(),
        }),
        1 => Ok(found.into_iter().next().expect("one element")),
        _ => Err(SearchError::Ambiguous { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_follow_xdg_with_defaults() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/u".to_owned()),
            _ => None,
        };
        assert_eq!(
            config_dirs(env),
            vec![
                PathBuf::from("/home/u/.config/oci-distribution-terraform-registry"),
                PathBuf::from("/etc/xdg/oci-distribution-terraform-registry"),
                PathBuf::from("/etc/oci-distribution-terraform-registry"),
            ]
        );
        let env = |k: &str| match k {
            "XDG_CONFIG_HOME" => Some("/x".to_owned()),
            "XDG_CONFIG_DIRS" => Some("/a:/b:/etc".to_owned()),
            _ => None,
        };
        assert_eq!(
            config_dirs(env),
            vec![
                PathBuf::from("/x/oci-distribution-terraform-registry"),
                PathBuf::from("/a/oci-distribution-terraform-registry"),
                PathBuf::from("/b/oci-distribution-terraform-registry"),
                PathBuf::from("/etc/oci-distribution-terraform-registry"),
            ]
        );
    }

    #[test]
    fn none_and_several_are_errors_listing_paths() {
        let tmp = std::env::temp_dir().join(format!("odtr-search-{}", std::process::id()));
        let a = tmp.join("a");
        let b = tmp.join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let dirs = vec![a.clone(), b.clone()];
        let err = find_config_file(&dirs).unwrap_err().to_string();
        assert!(err.contains(&a.display().to_string()) && err.contains(&b.display().to_string()));
        std::fs::write(a.join(FILE_NAME), "").unwrap();
        assert_eq!(find_config_file(&dirs).unwrap(), a.join(FILE_NAME));
        std::fs::write(b.join(FILE_NAME), "").unwrap();
        let err = find_config_file(&dirs).unwrap_err().to_string();
        assert!(err.contains("several"), "{err}");
        assert!(err.contains(&b.join(FILE_NAME).display().to_string()));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
