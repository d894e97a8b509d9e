//! Integration-test harness shared by the files in `tests/` (each does `mod common;`).
//!
//! It runs real external programs, all on 127.0.0.1:
//! - `docker-registry` (CNCF distribution 2.8, Debian package) as the OCI origin,
//! - the server binary of this crate,
//! - Terraform 1.0.3 as the mirror client.
//!
//! A missing tool is a panic telling how to install it (`scripts/install-test-deps.sh`);
//! nothing is silently skipped.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const INSTALL_HINT: &str = "run scripts/install-test-deps.sh";

/// Environment variables that could send test traffic through a proxy instead of to 127.0.0.1.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Lowercase hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Locates an executable on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Minimal blocking `GET` over plain HTTP/1.0 returning the status code; used for readiness
/// checks so that process start-up does not need an async runtime.
fn raw_http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut first_line = String::new();
    BufReader::new(stream).read_line(&mut first_line).ok()?;
    // "HTTP/1.1 200 OK"
    first_line.split_whitespace().nth(1)?.parse().ok()
}

fn read_to_string_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<could not read {}: {e}>", path.display()),
    }
}

fn kill_and_wait(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// docker-registry
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryAuth {
    /// No authentication at all.
    None,
    /// distribution's `silly` auth: 401 + Bearer challenge without an `Authorization` header,
    /// anything with one is accepted.
    Silly,
}

/// A `docker-registry serve` child process listening on 127.0.0.1 with filesystem storage in
/// a temporary directory. Killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    auth: RegistryAuth,
    dir: TempDir,
}

impl Registry {
    pub fn start(auth: RegistryAuth) -> Registry {
        let binary = which("docker-registry").unwrap_or_else(|| {
            panic!("docker-registry not found on PATH: {INSTALL_HINT} (Debian package docker-registry)")
        });
        let dir = tempfile::Builder::new()
            .prefix("odtr-registry-")
            .tempdir()
            .expect("tempdir");
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let config = registry_config_yaml(&dir.path().join("data"), port, auth);
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let log = File::create(&log_path).expect("create registry log");
            let mut cmd = Command::new(&binary);
            cmd.arg("serve")
                .arg(&config_path)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log));
            // Do not let the caller's environment reconfigure the registry.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(key);
                }
            }
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "docker-registry exited with {status} on port {port}:\n{}",
                        read_to_string_lossy(&log_path)
                    );
                    break;
                }
                match raw_http_status(port, "/v2/") {
                    Some(200) | Some(401) => {
                        return Registry {
                            child,
                            port,
                            auth,
                            dir,
                        }
                    }
                    _ => {}
                }
                if Instant::now() > deadline {
                    kill_and_wait(&mut child);
                    last_error = format!(
                        "docker-registry on port {port} not ready after 10 s:\n{}",
                        read_to_string_lossy(&log_path)
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start docker-registry: {last_error}");
    }

    /// `http://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn auth(&self) -> RegistryAuth {
        self.auth
    }

    /// An `Authorization` header value the push helpers can use against this registry
    /// (`None` when it needs none).
    pub fn push_auth(&self) -> Option<&'static str> {
        match self.auth {
            RegistryAuth::None => None,
            RegistryAuth::Silly => Some("Bearer harness-pusher"),
        }
    }

    pub fn log(&self) -> String {
        read_to_string_lossy(&self.dir.path().join("registry.log"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "----- docker-registry log (port {}) -----\n{}\n-----",
                self.port,
                self.log()
            );
        }
    }
}

fn registry_config_yaml(data_dir: &Path, port: u16, auth: RegistryAuth) -> String {
    let mut yaml = format!(
        r#"version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: "{data}"
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: "127.0.0.1:{port}"
"#,
        data = data_dir.display(),
    );
    if auth == RegistryAuth::Silly {
        yaml.push_str(
            r#"auth:
  silly:
    realm: "http://127.0.0.1:1/token"
    service: "test-registry"
"#,
        );
    }
    yaml
}

// ---------------------------------------------------------------------------------------------
// OCI push helpers
// ---------------------------------------------------------------------------------------------

pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_SEED_CONFIG: &str =
    "application/vnd.hashicorp.terraform-provider.config.v1+json";
pub const MEDIA_TYPE_SEED_PACKAGE: &str =
    "application/vnd.hashicorp.terraform.provider-package+zip";
pub const ANNOTATION_TARGET_PLATFORMS: &str = "io.terraform.target-platforms";
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
pub const ARTIFACT_TYPE_TOFU_PROVIDER: &str = "application/vnd.opentofu.provider";
pub const ARTIFACT_TYPE_TOFU_TARGET: &str = "application/vnd.opentofu.provider-target";
pub const MEDIA_TYPE_ZIP: &str = "archive/zip";

/// What a push helper put into the registry.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Tag that was written (the version, `+` replaced by `_` for the OpenTofu layout).
    pub tag: String,
    /// Digest of the manifest the tag points at (image manifest for layout A, index for B).
    pub manifest_digest: String,
    /// One per package, in the order given: `sha256:<hex>` of the zip (= the layer digest).
    pub layer_digests: Vec<String>,
    /// Layout B only: digests of the per-platform image manifests, in the order given.
    pub platform_manifest_digests: Vec<String>,
}

impl Pushed {
    /// `zh:<hex>` for package number `i`.
    pub fn zh(&self, i: usize) -> String {
        format!("zh:{}", self.layer_digests[i].trim_start_matches("sha256:"))
    }
}

/// A reqwest client that never uses a proxy (all test traffic is for 127.0.0.1).
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build reqwest client")
}

fn with_auth(req: reqwest::RequestBuilder, auth: Option<&str>) -> reqwest::RequestBuilder {
    match auth {
        Some(value) => req.header(reqwest::header::AUTHORIZATION, value),
        None => req,
    }
}

/// Uploads a blob (monolithic: POST to start, PUT with the digest) and returns its digest.
pub async fn push_blob(
    registry: &Registry,
    repo: &str,
    bytes: &[u8],
    auth: Option<&str>,
) -> String {
    let client = plain_client();
    let digest = sha256_digest(bytes);
    let start_url = format!("{}v2/{repo}/blobs/uploads/", registry.url());
    let resp = with_auth(client.post(&start_url), auth)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {start_url}: {e}"));
    let status = resp.status();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 202, "POST {start_url}: {body}");
    let location = location.expect("blob upload: no Location header");
    let base = url::Url::parse(&registry.url()).unwrap();
    let mut put_url = base.join(&location).expect("resolve Location").to_string();
    put_url.push(if put_url.contains('?') { '&' } else { '?' });
    put_url.push_str("digest=");
    put_url.push_str(&digest);
    let resp = with_auth(client.put(&put_url), auth)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {put_url}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 201, "PUT {put_url}: {body}");
    digest
}

/// `PUT /v2/<repo>/manifests/<reference>`; returns the manifest's digest.
pub async fn push_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
    auth: Option<&str>,
) -> String {
    let client = plain_client();
    let url = format!("{}v2/{repo}/manifests/{reference}", registry.url());
    let resp = with_auth(client.put(&url), auth)
        .header(reqwest::header::CONTENT_TYPE, media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = resp.status();
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 201, "PUT {url}: {text}");
    let digest = sha256_digest(body);
    if let Some(header_digest) = header_digest {
        assert_eq!(header_digest, digest, "registry computed another digest");
    }
    digest
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// Layout A (the prototype's "seed" layout): one OCI image manifest tagged `version`, config
/// of the HashiCorp provider config type, one layer per package annotated with its
/// comma-separated target platforms.
pub async fn push_seed_layout(
    registry: &Registry,
    repo: &str,
    version: &str,
    packages: &[(&str, Vec<u8>)],
    auth: Option<&str>,
) -> Pushed {
    let config = b"{}";
    let config_digest = push_blob(registry, repo, config, auth).await;
    let mut layers = Vec::new();
    let mut layer_digests = Vec::new();
    for (platforms, zip) in packages {
        let digest = push_blob(registry, repo, zip, auth).await;
        let mut layer = descriptor(MEDIA_TYPE_SEED_PACKAGE, &digest, zip.len());
        layer["annotations"] = serde_json::json!({ ANNOTATION_TARGET_PLATFORMS: platforms });
        layers.push(layer);
        layer_digests.push(digest);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": descriptor(MEDIA_TYPE_SEED_CONFIG, &config_digest, config.len()),
        "layers": layers,
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = push_manifest(
        registry,
        repo,
        version,
        MEDIA_TYPE_OCI_MANIFEST,
        &body,
        auth,
    )
    .await;
    Pushed {
        tag: version.to_owned(),
        manifest_digest,
        layer_digests,
        platform_manifest_digests: Vec::new(),
    }
}

/// Layout B (OpenTofu 1.10+): one image manifest per platform (pushed by digest), and an image
/// index tagged with the version (`+` → `_`).
pub async fn push_opentofu_layout(
    registry: &Registry,
    repo: &str,
    version: &str,
    packages: &[(&str, &str, Vec<u8>)],
    auth: Option<&str>,
) -> Pushed {
    let empty = b"{}";
    let empty_digest = push_blob(registry, repo, empty, auth).await;
    assert_eq!(empty_digest, EMPTY_DIGEST);
    let mut entries = Vec::new();
    let mut layer_digests = Vec::new();
    let mut platform_manifest_digests = Vec::new();
    for (os, arch, zip) in packages {
        let layer_digest = push_blob(registry, repo, zip, auth).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE_TOFU_TARGET,
            "config": descriptor(MEDIA_TYPE_EMPTY, EMPTY_DIGEST, 2),
            "layers": [descriptor(MEDIA_TYPE_ZIP, &layer_digest, zip.len())],
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let digest = sha256_digest(&body);
        push_manifest(
            registry,
            repo,
            &digest,
            MEDIA_TYPE_OCI_MANIFEST,
            &body,
            auth,
        )
        .await;
        let mut entry = descriptor(MEDIA_TYPE_OCI_MANIFEST, &digest, body.len());
        entry["artifactType"] = ARTIFACT_TYPE_TOFU_TARGET.into();
        entry["platform"] = serde_json::json!({ "os": os, "architecture": arch });
        entries.push(entry);
        layer_digests.push(layer_digest);
        platform_manifest_digests.push(digest);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "artifactType": ARTIFACT_TYPE_TOFU_PROVIDER,
        "manifests": entries,
    });
    let body = serde_json::to_vec(&index).unwrap();
    let tag = version.replace('+', "_");
    let manifest_digest =
        push_manifest(registry, repo, &tag, MEDIA_TYPE_OCI_INDEX, &body, auth).await;
    Pushed {
        tag,
        manifest_digest,
        layer_digests,
        platform_manifest_digests,
    }
}

// ---------------------------------------------------------------------------------------------
// Provider packages and hashes
// ---------------------------------------------------------------------------------------------

/// A fake provider package: a zip holding one executable `terraform-provider-{type}_v{version}`.
pub fn fake_provider_zip(type_name: &str, version: &str) -> Vec<u8> {
    fake_provider_zip_for(type_name, version, "linux_amd64")
}

/// Like [`fake_provider_zip`], with content that differs per platform (so each platform's
/// package has its own digest).
pub fn fake_provider_zip_for(type_name: &str, version: &str, platform: &str) -> Vec<u8> {
    let name = format!("terraform-provider-{type_name}_v{version}");
    let content = format!(
        "#!/bin/sh\n# fake provider {type_name} version {version} for {platform}\necho 'not a real provider' >&2\nexit 1\n"
    );
    let mut out = Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o755);
        writer.start_file(name, options).expect("zip start_file");
        writer.write_all(content.as_bytes()).expect("zip write");
        writer.finish().expect("zip finish");
    }
    out.into_inner()
}

/// Terraform's `h1:` hash of a package, from the library.
pub fn h1(zip: &[u8]) -> String {
    odtr::provider::hash::h1_from_zip(zip).expect("h1_from_zip")
}

/// `zh:` hash of a package.
pub fn zh(zip: &[u8]) -> String {
    format!("zh:{}", sha256_hex(zip))
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
#[derive(Debug)]
pub struct TestCert {
    dir: TempDir,
    cert_pem: String,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("rcgen");
        let dir = tempfile::Builder::new()
            .prefix("odtr-cert-")
            .tempdir()
            .expect("tempdir");
        let cert_pem = cert.pem();
        fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
        fs::write(dir.path().join("key.pem"), key_pair.serialize_pem()).unwrap();
        TestCert { dir, cert_pem }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// A reqwest client that trusts the test certificate (and nothing else), no proxy, no
/// redirects followed (so tests see exactly what the server answers).
pub fn https_client(cert: &TestCert) -> reqwest::Client {
    let certificate =
        reqwest::Certificate::from_pem(cert.cert_pem().as_bytes()).expect("parse test cert");
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(certificate)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build https client")
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// 64 hex chars, fixed so failures are reproducible.
pub const TEST_QUERY_STRING_SECRET: &str =
    "8f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

/// Options for [`server_config`].
#[derive(Debug, Clone)]
pub struct MirrorConfig<'a> {
    pub cert: Option<&'a TestCert>,
    pub origin_url: &'a str,
    pub proxy_packages: bool,
    /// Extra lines inside the `server` block, e.g. `download_url_ttl = "2s"`.
    pub extra_server: &'a str,
    /// Extra lines inside the `provider_mirror "mirror"` block.
    pub extra_mirror: &'a str,
}

impl<'a> MirrorConfig<'a> {
    pub fn new(cert: &'a TestCert, origin_url: &'a str, proxy_packages: bool) -> Self {
        MirrorConfig {
            cert: Some(cert),
            origin_url,
            proxy_packages,
            extra_server: "",
            extra_mirror: "",
        }
    }

    pub fn to_hcl(&self) -> String {
        let tls = match self.cert {
            Some(cert) => format!(
                "  tls {{\n    certificate_file = \"{}\"\n    private_key_file = \"{}\"\n  }}\n",
                cert.cert_path().display(),
                cert.key_path().display()
            ),
            None => String::new(),
        };
        format!(
            r#"server {{
  listen_addr         = "127.0.0.1:0"
  query_string_secret = "{secret}"
{extra_server}
{tls}}}

provider_mirror "mirror" {{
  origin_url     = "{origin}"
  name_prefix    = "terraform-providers"
  proxy_packages = {proxy}
{extra_mirror}
}}
"#,
            secret = TEST_QUERY_STRING_SECRET,
            extra_server = self.extra_server,
            origin = self.origin_url,
            proxy = self.proxy_packages,
            extra_mirror = self.extra_mirror,
        )
    }
}

/// The usual config: TLS with `cert`, one provider mirror named `mirror` in front of
/// `registry_url` with name prefix `terraform-providers`.
pub fn server_config(cert: &TestCert, registry_url: &str, proxy_packages: bool) -> String {
    MirrorConfig::new(cert, registry_url, proxy_packages).to_hcl()
}

/// The server binary running with a config file; killed on drop (its stderr is printed then
/// if the test is failing).
pub struct Server {
    child: Child,
    base_url: String,
    dir: TempDir,
}

impl Server {
    pub fn start(config_hcl: &str) -> Server {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_oci-distribution-terraform-registry"));
        let dir = tempfile::Builder::new()
            .prefix("odtr-server-")
            .tempdir()
            .expect("tempdir");
        let config_path = dir.path().join("config.hcl");
        fs::write(&config_path, config_hcl).expect("write server config");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).expect("create stderr log");
        let mut cmd = Command::new(&binary);
        cmd.arg(format!("--config={}", config_path.display()))
            .arg("server")
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            // Each server gets its own default package cache unless the config names one.
            .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));

        // Read stdout on a thread: the first `listening on ...` line is the ready signal; the
        // rest is kept in stdout.log (and the pipe keeps being drained).
        let stdout = child.stdout.take().unwrap();
        let stdout_log = dir.path().join("stdout.log");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut log = File::create(stdout_log).ok();
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                if line.starts_with("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let url = line.trim_start_matches("listening on ").trim().to_owned();
                    assert!(
                        url.starts_with("https://127.0.0.1:")
                            || url.starts_with("http://127.0.0.1:"),
                        "unexpected ready line from server: {line:?}"
                    );
                    let base_url = if url.ends_with('/') {
                        url
                    } else {
                        format!("{url}/")
                    };
                    return Server {
                        child,
                        base_url,
                        dir,
                    };
                }
                Err(mpsc::RecvTimeoutError::Timeout)
                | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Give the stdout thread a moment to finish its log.
                        std::thread::sleep(Duration::from_millis(100));
                        panic!(
                            "server exited with {status} before it was ready\n--- config ---\n{config_hcl}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                            read_to_string_lossy(&dir.path().join("stdout.log")),
                            read_to_string_lossy(&stderr_path)
                        );
                    }
                    if Instant::now() > deadline {
                        kill_and_wait(&mut child);
                        panic!(
                            "server printed no `listening on` line within 20 s\n--- stdout ---\n{}\n--- stderr ---\n{}",
                            read_to_string_lossy(&dir.path().join("stdout.log")),
                            read_to_string_lossy(&stderr_path)
                        );
                    }
                }
            }
        }
    }

    /// `https://127.0.0.1:PORT/`
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The network-mirror base URL of the `mirror` block: `https://127.0.0.1:PORT/mirror/`.
    pub fn mirror_url(&self) -> String {
        format!("{}mirror/", self.base_url)
    }

    /// `127.0.0.1:PORT` (the host Terraform's `credentials` block is keyed on).
    pub fn host_port(&self) -> String {
        let rest = self.base_url.split("://").nth(1).unwrap();
        rest.trim_end_matches('/').to_owned()
    }

    pub fn stderr(&self) -> String {
        read_to_string_lossy(&self.dir.path().join("stderr.log"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "----- server stderr ({}) -----\n{}\n-----",
                self.base_url,
                self.stderr()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Terraform
// ---------------------------------------------------------------------------------------------

/// Path of the Terraform 1.0.3 binary: `$ODTR_TERRAFORM`, else `.tools/terraform-1.0.3/terraform`.
pub fn terraform_path() -> PathBuf {
    let path = match std::env::var_os("ODTR_TERRAFORM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/terraform-1.0.3/terraform"),
    };
    if !path.is_file() {
        panic!(
            "Terraform 1.0.3 not found at {}: {INSTALL_HINT} (or set ODTR_TERRAFORM)",
            path.display()
        );
    }
    path
}

/// The result of [`terraform_init`].
#[derive(Debug)]
pub struct TerraformInit {
    pub success: bool,
    /// stdout and stderr, interleaved.
    pub output: String,
    /// `.terraform.lock.hcl`, when Terraform wrote one.
    pub lock_file: Option<String>,
}

/// Runs `terraform init` in a fresh directory whose configuration requires `providers`
/// (`(address, version constraint)`), installing only through the network mirror at
/// `mirror_url` (trusting `cert`), with `token` as the mirror host's credentials.
pub fn terraform_init(
    mirror_url: &str,
    cert: &TestCert,
    providers: &[(&str, &str)],
    token: Option<&str>,
) -> TerraformInit {
    let terraform = terraform_path();
    let work = tempfile::Builder::new()
        .prefix("odtr-tf-")
        .tempdir()
        .expect("tempdir");
    let mut main_tf = String::from("terraform {\n  required_providers {\n");
    for (addr, constraint) in providers {
        let name = addr.rsplit('/').next().unwrap();
        main_tf.push_str(&format!(
            "    {name} = {{\n      source  = \"{addr}\"\n      version = \"{constraint}\"\n    }}\n"
        ));
    }
    main_tf.push_str("  }\n}\n");
    fs::write(work.path().join("main.tf"), main_tf).unwrap();

    let mut cli = format!(
        "provider_installation {{\n  network_mirror {{\n    url = \"{mirror_url}\"\n  }}\n}}\n"
    );
    if let Some(token) = token {
        let host = url::Url::parse(mirror_url).expect("mirror url");
        let host_port = match host.port() {
            Some(port) => format!("{}:{port}", host.host_str().unwrap()),
            None => host.host_str().unwrap().to_owned(),
        };
        cli.push_str(&format!(
            "credentials \"{host_port}\" {{\n  token = \"{token}\"\n}}\n"
        ));
    }
    let cli_path = work.path().join("cli.tfrc");
    fs::write(&cli_path, cli).unwrap();
    let home = work.path().join("home");
    fs::create_dir_all(&home).unwrap();

    let output_path = work.path().join("terraform-output.log");
    let output_file = File::create(&output_path).unwrap();
    let mut cmd = Command::new(&terraform);
    cmd.args(["init", "-no-color", "-input=false"])
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("TF_CLI_CONFIG_FILE", &cli_path)
        .env("SSL_CERT_FILE", cert.cert_path())
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(output_file.try_clone().unwrap()))
        .stderr(Stdio::from(output_file));
    if let Some(level) = std::env::var_os("ODTR_TF_LOG") {
        cmd.env("TF_LOG", level);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e} ({INSTALL_HINT})", terraform.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait terraform") {
            break Some(status);
        }
        if Instant::now() > deadline {
            kill_and_wait(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut output = read_to_string_lossy(&output_path);
    if status.is_none() {
        output.push_str("\n<terraform init killed after 120 s>\n");
    }
    let lock_file = fs::read_to_string(work.path().join(".terraform.lock.hcl")).ok();
    TerraformInit {
        success: status.map(|s| s.success()).unwrap_or(false),
        output,
        lock_file,
    }
}

/// Finds the `provider "ADDR" { ... }` block of a lock file.
fn lock_file_block<'a>(lock: &'a str, addr: &str) -> Option<&'a str> {
    let header = format!("provider \"{addr}\"");
    let start = lock.find(&header)?;
    let rest = &lock[start..];
    // Blocks are not nested beyond `hashes = [ ... ]`; the block ends at the first line that
    // is exactly "}".
    let end = rest.find("\n}").map(|i| i + 2).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The `hashes` recorded for `addr` in a `.terraform.lock.hcl`.
pub fn lock_file_hashes(lock: &str, addr: &str) -> Vec<String> {
    let Some(block) = lock_file_block(lock, addr) else {
        return Vec::new();
    };
    let Some(start) = block.find("hashes") else {
        return Vec::new();
    };
    let after = &block[start..];
    let Some(open) = after.find('[') else {
        return Vec::new();
    };
    let close = after.find(']').unwrap_or(after.len());
    after[open + 1..close]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The `version` recorded for `addr` in a `.terraform.lock.hcl`.
pub fn lock_file_version(lock: &str, addr: &str) -> Option<String> {
    let block = lock_file_block(lock, addr)?;
    block.lines().find_map(|line| {
        let line = line.trim();
        let rest = line.strip_prefix("version")?.trim_start();
        let rest = rest.strip_prefix('=')?.trim();
        Some(rest.trim_matches('"').to_owned())
    })
}

/// Reads a whole response body, panicking with context on error.
pub async fn body_bytes(resp: reqwest::Response) -> Vec<u8> {
    let url = resp.url().clone();
    resp.bytes()
        .await
        .unwrap_or_else(|e| panic!("reading body of {url}: {e}"))
        .to_vec()
}

/// Parses JSON from bytes, panicking with the text on error.
pub fn parse_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Everything from a file, for debugging output.
pub fn read_file_lossy(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Mirror client helpers
// ---------------------------------------------------------------------------------------------

/// Terraform's name for the platform the tests run on (`linux_amd64`, `darwin_arm64`, ...):
/// the package `terraform init` installs.
pub fn local_platform() -> String {
    let os = std::env::consts::OS;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    };
    format!("{os}_{arch}")
}

/// What a GET returned.
#[derive(Debug)]
pub struct Fetched {
    pub url: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        parse_json(&self.body)
    }

    /// Panics with the request and response unless the status is `expected`.
    pub fn expect_status(&self, expected: u16) -> &Self {
        assert_eq!(
            self.status,
            expected,
            "GET {}: expected {expected}, got {} (headers {:?}) body: {}",
            self.url,
            self.status,
            self.headers,
            self.text()
        );
        self
    }
}

/// `GET url` with an optional `Authorization` header value.
pub async fn fetch(client: &reqwest::Client, url: &str, auth: Option<&str>) -> Fetched {
    let mut req = client.get(url);
    if let Some(auth) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = body_bytes(resp).await;
    Fetched {
        url: url.to_owned(),
        status,
        headers,
        body,
    }
}

/// One entry of a `{version}.json` answer, with its URL resolved.
#[derive(Debug, Clone)]
pub struct Archive {
    pub url: url::Url,
    pub hashes: Vec<String>,
}

/// Fetches `{mirror}{addr}/{version}.json` (expecting 200 and `application/json`) and resolves
/// every archive URL against it.
pub async fn fetch_archives(
    client: &reqwest::Client,
    mirror_url: &str,
    addr: &str,
    version: &str,
    auth: Option<&str>,
) -> std::collections::BTreeMap<String, Archive> {
    let version_url = format!("{mirror_url}{addr}/{version}.json");
    let fetched = fetch(client, &version_url, auth).await;
    fetched.expect_status(200);
    let content_type = fetched.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "GET {version_url}: Content-Type {content_type:?}, expected application/json"
    );
    let json = fetched.json();
    let archives = json["archives"]
        .as_object()
        .unwrap_or_else(|| panic!("GET {version_url}: no \"archives\" object: {json}"));
    let base = url::Url::parse(&version_url).unwrap();
    archives
        .iter()
        .map(|(platform, entry)| {
            let raw = entry["url"]
                .as_str()
                .unwrap_or_else(|| panic!("{version_url}: archive {platform} has no url: {json}"));
            let url = base
                .join(raw)
                .unwrap_or_else(|e| panic!("{version_url}: bad archive url {raw:?}: {e}"));
            let hashes = entry["hashes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|h| h.as_str().expect("hash is a string").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (platform.clone(), Archive { url, hashes })
        })
        .collect()
}
