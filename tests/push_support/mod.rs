//! Helpers for tests/push.rs: a `docker-registry` with `htpasswd` auth, provider source
//! directories in the three shapes `push` reads, raw OCI reads, and running the binary.
//! Uses the shared harness in tests/common (the including file declares `mod common;`).
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tempfile::TempDir;

use crate::common::{
    free_port, h1, plain_client, raw_http_status, sha256_hex, wait_bounded, which, INSTALL_HINT,
};

pub const USER: &str = "pusher";
pub const PASSWORD: &str = "correct horse battery staple";

/// The `service` and `issuer` of [`HtpasswdRegistry::start_token`]'s registry.
pub const TOKEN_SERVICE: &str = "odtr-test-registry";
pub const TOKEN_ISSUER: &str = "odtr-test-token-issuer";

/// `docker-registry serve` with authentication on 127.0.0.1, storage in a temporary
/// directory. Killed on drop.
pub struct HtpasswdRegistry {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl HtpasswdRegistry {
    /// With `auth: htpasswd`: Basic auth, user [`USER`], password [`PASSWORD`].
    pub fn start() -> HtpasswdRegistry {
        let dir = tempfile::Builder::new()
            .prefix("odtr-htpasswd-registry-")
            .tempdir()
            .expect("tempdir");
        // Cost 4 (the minimum) keeps each request's password check fast.
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        let htpasswd = dir.path().join("htpasswd");
        fs::write(&htpasswd, format!("{USER}:{hash}\n")).expect("write htpasswd");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: \"odtr-test\"\n    path: \"{}\"\n",
            htpasswd.display()
        );
        HtpasswdRegistry::start_in(dir, &auth)
    }

    /// With `auth: token`: Bearer tokens from `realm` (service [`TOKEN_SERVICE`], issuer
    /// [`TOKEN_ISSUER`]), signed by the key of the certificate `root_cert_pem`.
    pub fn start_token(realm: &str, root_cert_pem: &str) -> HtpasswdRegistry {
        let dir = tempfile::Builder::new()
            .prefix("odtr-token-registry-")
            .tempdir()
            .expect("tempdir");
        let bundle = dir.path().join("token-root.pem");
        fs::write(&bundle, root_cert_pem).expect("write the token root certificate");
        let auth = format!(
            "auth:\n  token:\n    realm: \"{realm}\"\n    service: \"{TOKEN_SERVICE}\"\n    issuer: \"{TOKEN_ISSUER}\"\n    rootcertbundle: \"{}\"\n",
            bundle.display()
        );
        HtpasswdRegistry::start_in(dir, &auth)
    }

    fn start_in(dir: TempDir, auth_yaml: &str) -> HtpasswdRegistry {
        let binary = which("docker-registry").unwrap_or_else(|| {
            panic!("docker-registry not found on PATH: {INSTALL_HINT} (Debian package docker-registry)")
        });
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                r#"version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: "{data}"
  delete:
    enabled: true
http:
  addr: "127.0.0.1:{port}"
{auth_yaml}"#,
                data = dir.path().join("data").display(),
            );
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let log = File::create(&log_path).expect("registry log");
            let mut cmd = Command::new(&binary);
            cmd.arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("dup log")))
                .stderr(Stdio::from(log));
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(key);
                }
            }
            let mut child = cmd.spawn().expect("spawn docker-registry");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "exited with {status}: {}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                if raw_http_status(port, "/v2/") == Some(401) {
                    return HtpasswdRegistry { child, port, dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = "not ready after 10 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start docker-registry with authentication: {last_error}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `Basic ...` for [`USER`]/[`PASSWORD`].
    pub fn auth_header(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for HtpasswdRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- docker-registry log -----\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Source directories
// ---------------------------------------------------------------------------------------------

/// A package of `terraform-provider-{type_name}` whose content differs per platform.
pub fn package(type_name: &str, version: &str, platform: &str) -> Vec<u8> {
    crate::common::fake_provider_zip_for(type_name, version, platform)
}

pub fn package_name(type_name: &str, version: &str, platform: &str) -> String {
    format!("terraform-provider-{type_name}_{version}_{platform}.zip")
}

/// A release directory: the zips and `terraform-provider-TYPE_VERSION_SHA256SUMS`.
pub fn write_release_dir(
    dir: &Path,
    type_name: &str,
    version: &str,
    platforms: &[&str],
) -> Vec<(String, Vec<u8>)> {
    fs::create_dir_all(dir).expect("mkdir");
    let mut sums = String::new();
    let mut out = Vec::new();
    for platform in platforms {
        let zip = package(type_name, version, platform);
        let name = package_name(type_name, version, platform);
        fs::write(dir.join(&name), &zip).expect("write zip");
        sums.push_str(&format!("{}  {name}\n", sha256_hex(&zip)));
        out.push((platform.to_string(), zip));
    }
    fs::write(
        dir.join(format!(
            "terraform-provider-{type_name}_{version}_SHA256SUMS"
        )),
        sums,
    )
    .expect("write SHA256SUMS");
    out
}

/// What `terraform providers mirror DIR` writes for one provider version:
/// `DIR/HOST/NS/TYPE/{zips, index.json, VERSION.json}`.
pub fn write_mirror_dir(
    root: &Path,
    address: &str,
    version: &str,
    platforms: &[&str],
) -> Vec<(String, Vec<u8>)> {
    let type_name = address.rsplit('/').next().expect("address");
    let dir = root.join(address);
    fs::create_dir_all(&dir).expect("mkdir");
    let mut archives = serde_json::Map::new();
    let mut out = Vec::new();
    for platform in platforms {
        let zip = package(type_name, version, platform);
        let name = package_name(type_name, version, platform);
        fs::write(dir.join(&name), &zip).expect("write zip");
        archives.insert(
            platform.to_string(),
            serde_json::json!({ "url": name, "hashes": [h1(&zip)] }),
        );
        out.push((platform.to_string(), zip));
    }
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({ "versions": {} }));
    index["versions"][version] = serde_json::json!({});
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).expect("write index.json");
    fs::write(
        dir.join(format!("{version}.json")),
        serde_json::to_vec(&serde_json::json!({ "archives": archives })).unwrap(),
    )
    .expect("write VERSION.json");
    out
}

// ---------------------------------------------------------------------------------------------
// Reading the registry back
// ---------------------------------------------------------------------------------------------

pub const MANIFEST_ACCEPT: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

/// A manifest as the registry serves it.
#[derive(Debug)]
pub struct RawManifest {
    pub content_type: String,
    pub digest: String,
    pub json: serde_json::Value,
}

pub async fn get_manifest(
    registry_url: &str,
    repo: &str,
    reference: &str,
    auth: Option<&str>,
) -> Option<RawManifest> {
    let url = format!("{registry_url}v2/{repo}/manifests/{reference}");
    let mut req = plain_client()
        .get(&url)
        .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
    if let Some(a) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    if resp.status() == 404 {
        return None;
    }
    assert_eq!(resp.status(), 200, "GET {url}");
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.bytes().await.expect("manifest body");
    Some(RawManifest {
        content_type,
        digest: crate::common::sha256_digest(&body),
        json: serde_json::from_slice(&body).expect("manifest JSON"),
    })
}

pub async fn get_blob(registry_url: &str, repo: &str, digest: &str, auth: Option<&str>) -> Vec<u8> {
    let url = format!("{registry_url}v2/{repo}/blobs/{digest}");
    let mut req = plain_client().get(&url);
    if let Some(a) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.bytes().await.expect("blob body").to_vec()
}

/// The repository's tags; `None` if the registry does not know the repository.
pub async fn tags(registry_url: &str, repo: &str, auth: Option<&str>) -> Option<Vec<String>> {
    let url = format!("{registry_url}v2/{repo}/tags/list");
    let mut req = plain_client().get(&url);
    if let Some(a) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    if resp.status() == 404 {
        return None;
    }
    assert_eq!(resp.status(), 200, "GET {url}");
    let body = resp.bytes().await.expect("tags body");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("tags JSON");
    Some(
        json["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The sorted keys of a JSON object.
pub fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct CliRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn describe(&self) -> String {
        format!(
            "success={}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.success, self.stdout, self.stderr
        )
    }
}

/// Runs `oci-distribution-terraform-registry ARGS` with `env` (and `DOCKER_CONFIG` pointing at
/// an empty directory unless `env` sets it, so the machine's docker login never leaks in),
/// feeding `stdin`, killed after 120 s.
pub fn push_cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> CliRun {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_oci-distribution-terraform-registry"));
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(&binary);
    cmd.args(args)
        .env("DOCKER_CONFIG", dir.path().join("docker"))
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::from(File::create(&out_path).expect("stdout file")))
        .stderr(Stdio::from(File::create(&err_path).expect("stderr file")));
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let mut stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str("\n<killed after 120 s>");
    }
    CliRun {
        success: status.is_some_and(|s| s.success()),
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr,
    }
}
