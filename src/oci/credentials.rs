//! Registry credentials of our own (not a client's), found where docker, podman and ORAS keep
//! them: docker's `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`),
//! with its `auths` entries, per-registry `credHelpers` and the default `credsStore`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

use super::Credential;

/// How long a credential helper may take (some prompt a keychain unlock).
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// docker's key for Docker Hub, whichever of its host names is used.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const DOCKER_HUB_HOSTS: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the docker configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the docker configuration {path} is not valid: {source}; fix the file, or point DOCKER_CONFIG at another directory")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the `auth` entry for {key:?} in {path} is not base64 of `user:password`; log in again (`docker login {key}`) or remove the entry")]
    BadAuth { path: PathBuf, key: String },
    #[error("credential helper docker-credential-{helper} failed for {server}: {detail}")]
    Helper {
        helper: String,
        server: String,
        detail: String,
    },
}

/// The parts of docker's `config.json` that hold registry credentials.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    pub cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    pub creds_store: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuthEntry {
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub identitytoken: Option<String>,
}

/// What the configuration says about one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Username and password stored in the file.
    Basic { username: String, password: String },
    /// Ask `docker-credential-{helper} get` for `server`.
    Helper { helper: String, server: String },
    /// Nothing: use the registry anonymously.
    None,
}

/// `host[:port]` of a registry URL, lower-case: what docker keys credentials by.
pub fn registry_key(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// The host part of a `config.json` key, which docker writes in several shapes:
/// `ghcr.io`, `localhost:5000`, `https://index.docker.io/v1/`, `http://reg:5000/v2/`.
fn key_host(key: &str) -> String {
    let key = key.trim();
    let lower = key.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    rest.split('/').next().unwrap_or("").to_owned()
}

fn is_docker_hub(host: &str) -> bool {
    DOCKER_HUB_HOSTS.contains(&host)
}

fn same_registry(key: &str, host: &str) -> bool {
    let k = key_host(key);
    k == host || (is_docker_hub(&k) && is_docker_hub(host))
}

impl DockerConfig {
    pub fn parse(text: &str) -> Result<DockerConfig, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Reads `path`; `Ok(None)` if there is no such file.
    pub fn load(path: &Path) -> Result<Option<DockerConfig>, CredentialsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CredentialsError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        DockerConfig::parse(&text)
            .map(Some)
            .map_err(|source| CredentialsError::Parse {
                path: path.to_owned(),
                source,
            })
    }

    /// Finds the credentials for `host` (`host[:port]`, as [`registry_key`] gives), in docker's
    /// order: a `credHelpers` entry, then an `auths` entry holding a secret, then `credsStore`.
    /// `path` is only used in messages.
    pub fn lookup(&self, host: &str, path: &Path) -> Result<Lookup, CredentialsError> {
        let host = host.to_ascii_lowercase();
        let server_for_helper = |key: Option<&str>| match key {
            Some(k) => k.to_owned(),
            None if is_docker_hub(&host) => DOCKER_HUB_KEY.to_owned(),
            None => host.clone(),
        };
        if let Some((key, helper)) = self
            .cred_helpers
            .iter()
            .find(|(k, _)| same_registry(k, &host))
        {
            return Ok(Lookup::Helper {
                helper: helper.clone(),
                server: server_for_helper(Some(key)),
            });
        }
        // An exact key wins over one that only matches after normalisation.
        let mut entries: Vec<(&String, &AuthEntry)> = self
            .auths
            .iter()
            .filter(|(k, _)| same_registry(k, &host))
            .collect();
        entries.sort_by_key(|(k, _)| k.as_str() != host);
        let mut stored_key = None;
        for (key, entry) in entries {
            stored_key.get_or_insert(key.as_str());
            if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                let bad = || CredentialsError::BadAuth {
                    path: path.to_owned(),
                    key: key.clone(),
                };
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad())?;
                let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
                let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
                return Ok(Lookup::Basic {
                    username: user.to_owned(),
                    password: pass.to_owned(),
                });
            }
            if let (Some(u), Some(p)) = (entry.username.as_deref(), entry.password.as_deref()) {
                return Ok(Lookup::Basic {
                    username: u.to_owned(),
                    password: p.to_owned(),
                });
            }
            if entry.identitytoken.is_some() {
                tracing::warn!(registry = %host, "docker config holds an identity token for this registry, which is not supported; log in with a username and password or use --username");
            }
        }
        if let Some(store) = self.creds_store.as_deref().filter(|s| !s.is_empty()) {
            return Ok(Lookup::Helper {
                helper: store.to_owned(),
                server: server_for_helper(stored_key),
            });
        }
        Ok(Lookup::None)
    }
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn docker_config_path(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The credential to use for `registry`, from the docker configuration of this process's
/// environment. No configuration, or nothing in it for this registry, means anonymous.
pub fn credential_for(registry: &url::Url) -> Result<Credential, CredentialsError> {
    let Some(path) = docker_config_path(|k| std::env::var_os(k)) else {
        return Ok(Credential::Anonymous);
    };
    let Some(config) = DockerConfig::load(&path)? else {
        return Ok(Credential::Anonymous);
    };
    resolve(&config.lookup(&registry_key(registry), &path)?)
}

/// Turns a [`Lookup`] into a credential, running the helper it names.
pub fn resolve(lookup: &Lookup) -> Result<Credential, CredentialsError> {
    match lookup {
        Lookup::None => Ok(Credential::Anonymous),
        Lookup::Basic { username, password } => Ok(Credential::Basic {
            username: username.clone(),
            password: password.clone(),
        }),
        Lookup::Helper { helper, server } => {
            let program = OsString::from(format!("docker-credential-{helper}"));
            match run_credential_helper(&program, server, HELPER_TIMEOUT) {
                Ok(Some((username, password))) => Ok(Credential::Basic { username, password }),
                Ok(None) => Ok(Credential::Anonymous),
                Err(detail) => Err(CredentialsError::Helper {
                    helper: helper.clone(),
                    server: server.clone(),
                    detail,
                }),
            }
        }
    }
}

/// Runs `program get` with `server` on stdin, as docker does. `Ok(None)` when the helper has
/// no credentials for it. Identity tokens (user `<token>`) are not usable as Basic
/// credentials and count as none.
pub fn run_credential_helper(
    program: &std::ffi::OsStr,
    server: &str,
    timeout: Duration,
) -> Result<Option<(String, String)>, String> {
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{} is not installed (not found on PATH); install it, remove the entry from the docker configuration, or pass --username and --password-stdin",
                    program.to_string_lossy()
                )
            } else {
                format!("cannot run {}: {e}", program.to_string_lossy())
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin makes this fail; its exit status says more.
        let _ = stdin.write_all(server.as_bytes());
    }
    let read_all = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = read_all(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = read_all(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not answer within {} s", timeout.as_secs()));
            }
            Err(e) => return Err(format!("waiting for it failed: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let out_text = String::from_utf8_lossy(&stdout);
    if !status.success() {
        // docker's helpers say this on stdout when they hold nothing for the server.
        if out_text.contains("credentials not found") {
            return Ok(None);
        }
        let err_text = String::from_utf8_lossy(&stderr);
        let detail = [out_text.trim(), err_text.trim()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("; ");
        return Err(format!("exited with {status}: {detail}"));
    }
    #[derive(Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_slice(&stdout)
        .map_err(|e| format!("answered something that is not its JSON format: {e}"))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    if answer.username == "<token>" {
        tracing::warn!(%server, "the credential helper holds an identity token, which is not supported; use --username and --password-stdin");
        return Ok(None);
    }
    Ok(Some((answer.username, answer.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(u: &str, p: &str) -> Lookup {
        Lookup::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn auth_entries_in_every_key_shape() {
        let config = DockerConfig::parse(&format!(
            r#"{{"auths":{{
                "ghcr.io":{{"auth":"{}"}},
                "http://localhost:5000/v2/":{{"auth":"{}"}},
                "https://index.docker.io/v1/":{{"auth":"{}"}},
                "reg.example:8443":{{"username":"u","password":"p"}},
                "empty.example":{{}}
            }}}}"#,
            b64("alice:s3cret:with:colons"),
            b64("bob:pw"),
            b64("hub:pw")
        ))
        .unwrap();
        let p = Path::new("config.json");
        assert_eq!(
            config.lookup("ghcr.io", p).unwrap(),
            basic("alice", "s3cret:with:colons")
        );
        assert_eq!(
            config.lookup("localhost:5000", p).unwrap(),
            basic("bob", "pw")
        );
        assert_eq!(
            config.lookup("registry-1.docker.io", p).unwrap(),
            basic("hub", "pw")
        );
        assert_eq!(
            config.lookup("REG.example:8443", p).unwrap(),
            basic("u", "p")
        );
        assert_eq!(config.lookup("localhost", p).unwrap(), Lookup::None);
        assert_eq!(config.lookup("empty.example", p).unwrap(), Lookup::None);
        assert_eq!(config.lookup("other.example", p).unwrap(), Lookup::None);
    }

    #[test]
    fn exact_keys_win() {
        let config = DockerConfig::parse(&format!(
            r#"{{"auths":{{"https://ghcr.io":{{"auth":"{}"}},"ghcr.io":{{"auth":"{}"}}}}}}"#,
            b64("old:x"),
            b64("new:y")
        ))
        .unwrap();
        assert_eq!(
            config.lookup("ghcr.io", Path::new("c")).unwrap(),
            basic("new", "y")
        );
    }

    #[test]
    fn bad_auth_is_reported_with_the_key() {
        let config = DockerConfig::parse(r#"{"auths":{"ghcr.io":{"auth":"!!!"}}}"#).unwrap();
        let err = config
            .lookup("ghcr.io", Path::new("/x/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ghcr.io") && err.contains("/x/config.json"),
            "{err}"
        );
        let config = DockerConfig::parse(&format!(
            r#"{{"auths":{{"a":{{"auth":"{}"}}}}}}"#,
            b64("nocolon")
        ))
        .unwrap();
        assert!(config.lookup("a", Path::new("c")).is_err());
    }

    #[test]
    fn helpers_and_stores() {
        let config = DockerConfig::parse(
            r#"{"auths":{"https://index.docker.io/v1/":{},"ghcr.io":{}},
                "credHelpers":{"123.dkr.ecr.us-east-1.amazonaws.com":"ecr-login"},
                "credsStore":"desktop"}"#,
        )
        .unwrap();
        let p = Path::new("c");
        assert_eq!(
            config
                .lookup("123.dkr.ecr.us-east-1.amazonaws.com", p)
                .unwrap(),
            Lookup::Helper {
                helper: "ecr-login".into(),
                server: "123.dkr.ecr.us-east-1.amazonaws.com".into()
            }
        );
        // The store is asked with the key docker stored the login under.
        assert_eq!(
            config.lookup("registry-1.docker.io", p).unwrap(),
            Lookup::Helper {
                helper: "desktop".into(),
                server: DOCKER_HUB_KEY.into()
            }
        );
        assert_eq!(
            config.lookup("quay.io", p).unwrap(),
            Lookup::Helper {
                helper: "desktop".into(),
                server: "quay.io".into()
            }
        );
        assert_eq!(
            DockerConfig::parse("{}").unwrap().lookup("x", p).unwrap(),
            Lookup::None
        );
    }

    #[test]
    fn config_path_from_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            docker_config_path(env(&[("DOCKER_CONFIG", "/d"), ("HOME", "/h")])),
            Some(PathBuf::from("/d/config.json"))
        );
        assert_eq!(
            docker_config_path(env(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.docker/config.json"))
        );
        assert_eq!(docker_config_path(env(&[])), None);
    }

    #[test]
    fn registry_keys() {
        let k = |u: &str| registry_key(&url::Url::parse(u).unwrap());
        assert_eq!(k("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        assert_eq!(k("https://GHCR.io/"), "ghcr.io");
        assert_eq!(k("https://ghcr.io:443/"), "ghcr.io");
    }

    #[cfg(unix)]
    #[test]
    fn runs_a_credential_helper() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("docker-credential-test");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\ncase \"$server\" in\n  ghcr.io) printf '{\"ServerURL\":\"ghcr.io\",\"Username\":\"u\",\"Secret\":\"s\"}' ;;\n  tok.example) printf '{\"Username\":\"<token>\",\"Secret\":\"t\"}' ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = Duration::from_secs(10);
        // Another test thread forking while the script was open for writing can make the
        // first exec fail with "Text file busy" for a moment.
        let first = (0..50)
            .map(|_| run_credential_helper(script.as_os_str(), "ghcr.io", t))
            .find(|r| {
                let busy = matches!(r, Err(e) if e.contains("busy"));
                if busy {
                    std::thread::sleep(Duration::from_millis(20));
                }
                !busy
            });
        assert_eq!(first.unwrap().unwrap(), Some(("u".into(), "s".into())));
        assert_eq!(
            run_credential_helper(script.as_os_str(), "quay.io", t).unwrap(),
            None
        );
        assert_eq!(
            run_credential_helper(script.as_os_str(), "tok.example", t).unwrap(),
            None
        );
        let missing = dir.path().join("docker-credential-missing");
        let err = run_credential_helper(missing.as_os_str(), "x", t).unwrap_err();
        assert!(err.contains("not installed"), "{err}");
    }
}
