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
pub fn raw_http_status(port: u16, path: &str) -> Option<u16> {
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

/// Waits for `child` at most `limit`, killing it past that: `None` means it was killed.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child process") {
            return Some(status);
        }
        if Instant::now() > deadline {
            kill_and_wait(child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A new temporary directory named `<prefix>XXXXXX`; removed on drop.
pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

/// A future served on its own thread and current-thread tokio runtime. The future is given
/// the receiving end of the stop signal and must return once it fires; [`ServeThread::stop`]
/// (or drop) fires it and waits for the thread.
pub struct ServeThread {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServeThread {
    /// Starts `serve(stop)` on a thread named `name`.
    pub fn spawn<F, Fut>(name: String, serve: F) -> ServeThread
    where
        F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("{name} runtime: {e}"));
                rt.block_on(serve(rx));
            })
            .expect("spawn a serving thread");
        ServeThread {
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Fires the stop signal and waits for the thread to end.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServeThread {
    fn drop(&mut self) {
        self.stop();
    }
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
        Server::start_with_args(config_hcl, &[])
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
    let status = wait_bounded(&mut child, Duration::from_secs(120));
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

// ---------------------------------------------------------------------------------------------
// Package cache: configuration, packages, the cache directory, the CLI (tests/cache_*.rs)
// ---------------------------------------------------------------------------------------------

/// `config_hcl` with a top-level `cache { directory, max_size }` block appended.
pub fn with_cache(config_hcl: &str, directory: &Path, max_size: &str) -> String {
    format!(
        "{config_hcl}\ncache {{\n  directory = \"{}\"\n  max_size  = \"{max_size}\"\n}}\n",
        directory.display()
    )
}

/// The usual config (see [`MirrorConfig::new`]) in front of `origin_url`, with a package
/// cache of `max_size` in `cache`.
pub fn cached_mirror_config(
    cert: &TestCert,
    origin_url: &str,
    proxy_packages: bool,
    cache: &Path,
    max_size: &str,
) -> String {
    with_cache(
        &MirrorConfig::new(cert, origin_url, proxy_packages).to_hcl(),
        cache,
        max_size,
    )
}

/// The parts of a one-range `Content-Range` value `bytes A-B/TOTAL`: A, B and TOTAL as
/// written.
pub fn parse_content_range<N: std::str::FromStr>(value: &str) -> Option<(N, N, &str)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total))
}

/// A provider package of about `size` bytes that does not compress: one stored (uncompressed)
/// executable `terraform-provider-{type}_v{version}` of seeded random bytes.
pub fn random_provider_zip(type_name: &str, version: &str, size: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut content = vec![0u8; size];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut content);
    let name = format!("terraform-provider-{type_name}_v{version}");
    let mut out = Cursor::new(Vec::with_capacity(size + 1024));
    {
        let mut writer = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o755);
        writer.start_file(name, options).expect("zip start_file");
        writer.write_all(&content).expect("zip write");
        writer.finish().expect("zip finish");
    }
    out.into_inner()
}

/// The stored blobs of a cache directory: `(hex, size)` of every file under `blobs/sha256/`.
pub fn cache_blob_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(prefixes) = fs::read_dir(dir.join("blobs").join("sha256")) else {
        return out;
    };
    for prefix in prefixes.flatten() {
        let Ok(files) = fs::read_dir(prefix.path()) else {
            continue;
        };
        for f in files.flatten() {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((f.file_name().to_string_lossy().into_owned(), size));
        }
    }
    out.sort();
    out
}

/// Total size of [`cache_blob_files`].
pub fn cache_blob_bytes(dir: &Path) -> u64 {
    cache_blob_files(dir).iter().map(|(_, s)| s).sum()
}

/// Files in the cache's `tmp/` directory (a running server's transient `stats.json.new` left out).
pub fn cache_temp_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = fs::read_dir(dir.join("tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|f| {
                    (
                        f.file_name().to_string_lossy().into_owned(),
                        f.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .filter(|(name, _)| name != "stats.json.new")
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a run of the binary printed.
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when it was killed for running past its time limit.
    pub status: Option<std::process::ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `oci-distribution-terraform-registry --config=FILE ARGS...` with `config_hcl` written
/// to a temporary FILE, killing it after `timeout`.
pub fn run_cli(config_hcl: &str, args: &[&str], timeout: Duration) -> CliOutput {
    run_cli_with_env(config_hcl, args, &[], timeout)
}

/// Like [`run_cli`], with extra environment variables for the binary.
pub fn run_cli_with_env(
    config_hcl: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> CliOutput {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_oci-distribution-terraform-registry"));
    let dir = temp_dir("odtr-cli-");
    let config_path = dir.path().join("config.hcl");
    fs::write(&config_path, config_hcl).expect("write config");
    let out_path = dir.path().join("stdout.log");
    let err_path = dir.path().join("stderr.log");
    let mut cmd = Command::new(&binary);
    cmd.arg(format!("--config={}", config_path.display()))
        .args(args)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&out_path).unwrap()))
        .stderr(Stdio::from(File::create(&err_path).unwrap()));
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
    let status = wait_bounded(&mut child, timeout);
    CliOutput {
        status,
        stdout: read_to_string_lossy(&out_path),
        stderr: read_to_string_lossy(&err_path),
    }
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        kill_and_wait(&mut self.child);
    }

    /// SIGTERM (graceful shutdown), then waits up to `timeout` for the exit; SIGKILL after.
    /// Returns the exit status if it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                kill_and_wait(&mut self.child);
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `config.hcl` as the server was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.hcl")
    }
}

/// What a streamed download returned: the body is hashed, not kept.
#[derive(Debug)]
pub struct Download {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// Bytes received before the end or the error.
    pub len: u64,
    pub sha256: String,
    /// Set when sending the request or reading the body failed.
    pub error: Option<String>,
}

impl Download {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A complete 200 whose body is exactly `expected`.
    pub fn is_exactly(&self, expected: &[u8]) -> bool {
        self.status == 200
            && self.error.is_none()
            && self.len == expected.len() as u64
            && self.sha256 == sha256_hex(expected)
    }
}

/// Reads what a connection still delivers, appending it to `body`, until it ends: "eof",
/// "error" (a reset), or "timeout" when nothing arrives for `quiet` (the connection was
/// neither closed nor continued).
pub async fn read_until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    body: &mut Vec<u8>,
    quiet: Duration,
) -> &'static str {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Err(_) => return "timeout",
            Ok(Ok(0)) => return "eof",
            Ok(Err(_)) => return "error",
            Ok(Ok(n)) => body.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET url` (with extra headers), hashing the body as it arrives.
pub async fn download_hashed(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> Download {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Download {
                status: 0,
                headers: Default::default(),
                len: 0,
                sha256: String::new(),
                error: Some(format!("{e:?}")),
            }
        }
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut error = None;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                hasher.update(&c);
                len += c.len() as u64;
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    Download {
        status,
        headers,
        len,
        sha256: hex::encode(hasher.finalize()),
        error,
    }
}

// ---------------------------------------------------------------------------------------------
// A counting, fault-injecting reverse proxy in front of the registry
// ---------------------------------------------------------------------------------------------

/// How [`FaultProxy`] treats the requests that arrive from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything unchanged.
    Normal,
    /// Blob bodies have one byte flipped in the middle (same length).
    CorruptBlobs,
    /// Blob bodies are dripped at this many bytes per second.
    SlowBlobs(u64),
    /// Every request is answered `502 Bad Gateway` without reaching the registry.
    Down,
}

/// Requests seen by a [`FaultProxy`], by kind (counted on arrival, whatever the mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    pub blob_gets: usize,
    pub manifest_gets: usize,
    pub tag_gets: usize,
    pub heads: usize,
    pub other: usize,
}

struct ProxyShared {
    upstream: String,
    mode: std::sync::Mutex<ProxyMode>,
    counts: std::sync::Mutex<ProxyCounts>,
    log: std::sync::Mutex<Vec<String>>,
}

type ProxyBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

/// A reverse proxy on 127.0.0.1 forwarding every request to a registry, counting them by
/// kind and injecting faults into blob downloads (see [`ProxyMode`]). Runs on its own thread
/// and runtime; stopped on drop.
pub struct FaultProxy {
    port: u16,
    shared: std::sync::Arc<ProxyShared>,
    serving: ServeThread,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream_url` (`http://127.0.0.1:PORT/`).
    pub fn start(upstream_url: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = std::sync::Arc::new(ProxyShared {
            upstream: upstream_url.trim_end_matches('/').to_owned(),
            mode: std::sync::Mutex::new(ProxyMode::Normal),
            counts: Default::default(),
            log: Default::default(),
        });
        let s = shared.clone();
        let serving = ServeThread::spawn(format!("fault-proxy-{port}"), move |stop| {
            proxy_accept_loop(listener, s, stop)
        });
        FaultProxy {
            port,
            shared,
            serving,
        }
    }

    /// `http://127.0.0.1:PORT/`: use it as the server's `origin_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn counts(&self) -> ProxyCounts {
        *self.shared.counts.lock().unwrap()
    }

    pub fn blob_gets(&self) -> usize {
        self.counts().blob_gets
    }

    /// Every request seen, as `METHOD /path?query [mode]`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.serving.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- fault proxy requests (port {}) -----\n{}\n-----",
                self.port,
                self.requests().join("\n")
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ProxyKind {
    BlobGet,
    ManifestGet,
    TagGet,
    Head,
    Other,
}

fn proxy_classify(method: &http::Method, path: &str) -> ProxyKind {
    if method == http::Method::HEAD {
        ProxyKind::Head
    } else if method != http::Method::GET {
        ProxyKind::Other
    } else if path.contains("/blobs/") && !path.contains("/uploads") {
        ProxyKind::BlobGet
    } else if path.contains("/manifests/") {
        ProxyKind::ManifestGet
    } else if path.ends_with("/tags/list") {
        ProxyKind::TagGet
    } else {
        ProxyKind::Other
    }
}

async fn proxy_accept_loop(
    listener: TcpListener,
    shared: std::sync::Arc<ProxyShared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("proxy listener");
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("proxy client");
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let shared = shared.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let client = client.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(proxy_handle(&shared, &client, req).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn proxy_status(status: u16) -> http::Response<ProxyBody> {
    use http_body_util::BodyExt;
    let mut resp = http::Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp
}

async fn proxy_handle(
    shared: &ProxyShared,
    client: &reqwest::Client,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<ProxyBody> {
    use futures::StreamExt;
    use http_body_util::BodyExt;
    let method = req.method().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let kind = proxy_classify(&method, req.uri().path());
    let mode = *shared.mode.lock().unwrap();
    {
        let mut c = shared.counts.lock().unwrap();
        match kind {
            ProxyKind::BlobGet => c.blob_gets += 1,
            ProxyKind::ManifestGet => c.manifest_gets += 1,
            ProxyKind::TagGet => c.tag_gets += 1,
            ProxyKind::Head => c.heads += 1,
            ProxyKind::Other => c.other += 1,
        }
    }
    shared
        .log
        .lock()
        .unwrap()
        .push(format!("{method} {path_and_query} [{mode:?}]"));
    if mode == ProxyMode::Down {
        return proxy_status(502);
    }
    let mut upstream = client.request(method, format!("{}{path_and_query}", shared.upstream));
    for (name, value) in req.headers() {
        if !matches!(
            name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive"
        ) {
            upstream = upstream.header(name, value);
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return proxy_status(400),
    };
    if !body.is_empty() {
        upstream = upstream.body(body);
    }
    let resp = match upstream.send().await {
        Ok(r) => r,
        Err(_) => return proxy_status(502),
    };
    let status = resp.status();
    let mut headers = resp.headers().clone();
    for h in ["connection", "transfer-encoding", "keep-alive"] {
        headers.remove(h);
    }
    let length = resp.content_length();
    let fault = kind == ProxyKind::BlobGet && status.is_success();
    let upstream_body = resp
        .bytes_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let body: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> = match mode {
        ProxyMode::CorruptBlobs if fault => {
            let flip_at = length.unwrap_or(0) / 2;
            let mut pos = 0u64;
            upstream_body
                .map(move |r| {
                    r.map(|chunk| {
                        let start = pos;
                        pos += chunk.len() as u64;
                        if flip_at >= start && flip_at < pos {
                            let mut v = chunk.to_vec();
                            v[(flip_at - start) as usize] ^= 0xff;
                            bytes::Bytes::from(v)
                        } else {
                            chunk
                        }
                    })
                })
                .boxed()
        }
        ProxyMode::SlowBlobs(bytes_per_sec) if fault => {
            let bps = bytes_per_sec.max(1);
            let piece = (bps / 20).clamp(1, 64 * 1024) as usize;
            let start = tokio::time::Instant::now();
            futures::stream::unfold(
                (upstream_body.boxed(), bytes::Bytes::new(), 0u64),
                move |(mut s, mut pending, mut sent)| async move {
                    while pending.is_empty() {
                        match s.next().await {
                            None => return None,
                            Some(Err(e)) => return Some((Err(e), (s, pending, sent))),
                            Some(Ok(b)) => pending = b,
                        }
                    }
                    let out = pending.split_to(piece.min(pending.len()));
                    sent += out.len() as u64;
                    let due = start + Duration::from_secs_f64(sent as f64 / bps as f64);
                    tokio::time::sleep_until(due).await;
                    Some((Ok(out), (s, pending, sent)))
                },
            )
            .boxed()
        }
        _ => upstream_body.boxed(),
    };
    let body = http_body_util::StreamBody::new(body.map(|r| r.map(hyper::body::Frame::data)));
    let mut out = http::Response::new(body.boxed_unsync());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

// ---------------------------------------------------------------------------------------------
// A server with its own cache directory, behind a FaultProxy in front of a registry
// ---------------------------------------------------------------------------------------------

/// Registry ← [`FaultProxy`] ← server (TLS, mirror `mirror`, name prefix `terraform-providers`,
/// its own cache directory). Fields drop in order: the server stops first.
pub struct CacheFixture {
    pub server: Server,
    pub proxy: FaultProxy,
    pub cert: TestCert,
    pub cache: TempDir,
    pub registry: Registry,
    pub client: reqwest::Client,
    config: String,
}

impl CacheFixture {
    pub fn start(proxy_packages: bool, max_size: &str) -> CacheFixture {
        CacheFixture::start_with(true, proxy_packages, max_size, "")
    }

    /// Like [`CacheFixture::start`], with the server listening on plain HTTP (where cached
    /// packages go out with sendfile).
    pub fn start_plain_http(proxy_packages: bool, max_size: &str) -> CacheFixture {
        CacheFixture::start_with(false, proxy_packages, max_size, "")
    }

    /// `extra_hcl` is appended to the configuration (e.g. a `limits` block).
    pub fn start_with(
        tls: bool,
        proxy_packages: bool,
        max_size: &str,
        extra_hcl: &str,
    ) -> CacheFixture {
        let registry = Registry::start(RegistryAuth::None);
        let proxy = FaultProxy::start(&registry.url());
        let cert = TestCert::generate();
        let cache = temp_dir("odtr-cache-");
        let origin_url = proxy.url();
        let mut mirror = MirrorConfig::new(&cert, &origin_url, proxy_packages);
        if !tls {
            mirror.cert = None;
        }
        let config = with_cache(&mirror.to_hcl(), cache.path(), max_size) + extra_hcl;
        let server = Server::start(&config);
        let client = https_client(&cert);
        CacheFixture {
            server,
            proxy,
            cert,
            cache,
            registry,
            client,
            config,
        }
    }

    /// The server's configuration (for the CLI's `--config`, or another server).
    pub fn config(&self) -> &str {
        &self.config
    }

    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// Stops the server (SIGTERM; SIGKILL after 35 s) and starts a new one on the same
    /// configuration and cache directory (on a new port).
    pub fn restart(&mut self) {
        self.server.terminate(Duration::from_secs(35));
        self.server = Server::start(&self.config);
    }

    /// Stops the server gracefully and asserts that it exited with success.
    pub fn stop_server(&mut self) {
        let status = self.server.terminate(Duration::from_secs(35));
        assert!(
            status.is_some_and(|s| s.success()),
            "server did not exit cleanly on SIGTERM: {status:?}\n{}",
            self.server.stderr()
        );
    }

    /// The archive URL for `platform` from `{version}.json` (a request to the origin).
    pub async fn archive_url(&self, addr: &str, version: &str, platform: &str) -> String {
        let archives =
            fetch_archives(&self.client, &self.server.mirror_url(), addr, version, None).await;
        archives
            .get(platform)
            .unwrap_or_else(|| panic!("{addr} {version}.json has no {platform}: {archives:?}"))
            .url
            .to_string()
    }
}

/// Like [`https_client`], speaking HTTP/1.1 only (no HTTP/2 by ALPN).
pub fn https_client_http1(cert: &TestCert) -> reqwest::Client {
    let certificate =
        reqwest::Certificate::from_pem(cert.cert_pem().as_bytes()).expect("parse test cert");
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_built_in_root_certs(false)
        .add_root_certificate(certificate)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build https client")
}

// ---------------------------------------------------------------------------------------------
// Metadata cache tests (tests/metadata_*.rs): servers started with extra CLI arguments, and a
// fixture with a freshness policy, behind a FaultProxy
// ---------------------------------------------------------------------------------------------

impl Server {
    /// Like [`Server::start`], with extra arguments after `server` (e.g. `--offline`).
    pub fn start_with_args(config_hcl: &str, server_args: &[&str]) -> Server {
        Server::start_with_env(config_hcl, server_args, &[])
    }

    /// Like [`Server::start_with_args`], with extra environment variables for the server.
    pub fn start_with_env(config_hcl: &str, server_args: &[&str], env: &[(&str, &str)]) -> Server {
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
            .args(server_args)
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
        cmd.envs(env.iter().copied());
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
}

/// `DELETE /v2/<repo>/manifests/<digest>` (the harness registry has deletes enabled); returns
/// the status.
pub async fn delete_manifest(
    registry: &Registry,
    repo: &str,
    digest: &str,
    auth: Option<&str>,
) -> u16 {
    let url = format!("{}v2/{repo}/manifests/{digest}", registry.url());
    let resp = with_auth(plain_client().delete(&url), auth)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DELETE {url}: {e}"));
    resp.status().as_u16()
}

impl ProxyCounts {
    /// Every request that reached the proxy.
    pub fn total(&self) -> usize {
        self.blob_gets + self.manifest_gets + self.tag_gets + self.heads + self.other
    }
}

impl FaultProxy {
    /// Requests logged from index `from` on (see [`FaultProxy::requests`]) that contain every
    /// one of `needles` (e.g. `["GET ", "/tags/list", "[Normal]"]`).
    pub fn requests_since_matching(&self, from: usize, needles: &[&str]) -> Vec<String> {
        self.requests()
            .into_iter()
            .skip(from)
            .filter(|r| needles.iter().all(|n| r.contains(n)))
            .collect()
    }

    /// How many requests have been logged so far (a mark for [`Self::requests_since_matching`]).
    pub fn request_mark(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }
}

/// Registry ← [`FaultProxy`] ← server (TLS, mirror `mirror` with name prefix
/// `terraform-providers`, a freshness policy, its own cache directory). Fields drop in
/// order: the server stops first.
pub struct MetaFixture {
    pub server: Server,
    pub proxy: FaultProxy,
    pub cert: TestCert,
    pub cache: TempDir,
    pub registry: Registry,
    pub client: reqwest::Client,
    pub config: String,
}

impl MetaFixture {
    /// `mirror_lines` go into the `provider_mirror` block (e.g. `index_max_age = "3s"`),
    /// `server_lines` into the `server` block.
    pub fn start(
        auth: RegistryAuth,
        proxy_packages: bool,
        mirror_lines: &str,
        server_lines: &str,
    ) -> MetaFixture {
        let registry = Registry::start(auth);
        let proxy = FaultProxy::start(&registry.url());
        let cert = TestCert::generate();
        let cache = tempfile::Builder::new()
            .prefix("odtr-meta-cache-")
            .tempdir()
            .expect("tempdir");
        let proxy_url = proxy.url();
        let mut mc = MirrorConfig::new(&cert, &proxy_url, proxy_packages);
        mc.extra_mirror = mirror_lines;
        mc.extra_server = server_lines;
        let config = with_cache(&mc.to_hcl(), cache.path(), "1GiB");
        let server = Server::start(&config);
        let client = https_client(&cert);
        MetaFixture {
            server,
            proxy,
            cert,
            cache,
            registry,
            client,
            config,
        }
    }

    /// Stops the server (SIGTERM) and starts another on the same configuration and cache
    /// directory, with `server_args` after `server` (e.g. `["--offline"]`).
    pub fn restart_with_args(&mut self, server_args: &[&str]) {
        let status = self.server.terminate(Duration::from_secs(35));
        assert!(
            status.is_some_and(|s| s.success()),
            "server did not exit cleanly on SIGTERM: {status:?}\n{}",
            self.server.stderr()
        );
        self.server = Server::start_with_args(&self.config, server_args);
    }

    pub fn index_url(&self, addr: &str) -> String {
        format!("{}{addr}/index.json", self.server.mirror_url())
    }

    pub fn version_url(&self, addr: &str, version: &str) -> String {
        format!("{}{addr}/{version}.json", self.server.mirror_url())
    }

    pub async fn get(&self, url: &str, auth: Option<&str>) -> Fetched {
        fetch(&self.client, url, auth).await
    }

    /// The sorted version keys of `index.json` (expects 200).
    pub async fn versions(&self, addr: &str, auth: Option<&str>) -> Vec<String> {
        let f = self.get(&self.index_url(addr), auth).await;
        f.expect_status(200);
        index_versions(&f)
    }
}

/// The sorted version keys of an `index.json` answer.
pub fn index_versions(f: &Fetched) -> Vec<String> {
    let json = f.json();
    let mut v: Vec<String> = json["versions"]
        .as_object()
        .unwrap_or_else(|| panic!("GET {}: no \"versions\" object: {json}", f.url))
        .keys()
        .cloned()
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// warm, export and lock (tests/warm_*.rs): a registry behind a FaultProxy with a cache
// directory and a configuration whose `listen_addr` has a fixed port (so `warm` can reach a
// server that owns the cache), Terraform runs in a given directory, a static HTTPS file
// server, and directory snapshots
// ---------------------------------------------------------------------------------------------

/// Registry ← [`FaultProxy`]; a cache directory and a configuration (TLS with `cert`, mirror
/// `mirror` with name prefix `terraform-providers` in front of the proxy, `listen_addr` on a
/// fixed free port, the cache directory) for CLI runs and servers. No server runs until
/// [`WarmFixture::start_server`]. The registry can be stopped ([`WarmFixture::stop_registry`]).
pub struct WarmFixture {
    pub proxy: FaultProxy,
    pub cert: TestCert,
    pub cache: TempDir,
    pub registry: Option<Registry>,
    pub config: String,
    /// The port of `listen_addr`.
    pub port: u16,
}

impl WarmFixture {
    pub fn start() -> WarmFixture {
        let registry = Registry::start(RegistryAuth::None);
        let proxy = FaultProxy::start(&registry.url());
        let cert = TestCert::generate();
        let cache = tempfile::Builder::new()
            .prefix("odtr-warm-cache-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let proxy_url = proxy.url();
        let hcl = MirrorConfig::new(&cert, &proxy_url, false).to_hcl();
        let fixed = hcl.replace(
            "listen_addr         = \"127.0.0.1:0\"",
            &format!("listen_addr         = \"127.0.0.1:{port}\""),
        );
        assert_ne!(
            hcl, fixed,
            "MirrorConfig no longer writes listen_addr as expected"
        );
        let config = with_cache(&fixed, cache.path(), "1GiB");
        WarmFixture {
            proxy,
            cert,
            cache,
            registry: Some(registry),
            config,
            port,
        }
    }

    pub fn registry(&self) -> &Registry {
        self.registry.as_ref().expect("the registry was stopped")
    }

    /// Kills the registry: from now on the proxy answers 502 for every request.
    pub fn stop_registry(&mut self) {
        self.registry = None;
    }

    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// `oci-distribution-terraform-registry --config=FILE ARGS...` (killed after 50 s).
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        run_cli(&self.config, args, Duration::from_secs(50))
    }

    /// The hex digests of the packages in the cache directory, sorted.
    pub fn cached_hexes(&self) -> Vec<String> {
        cache_blob_files(self.cache.path())
            .into_iter()
            .map(|(hex, _)| hex)
            .collect()
    }

    /// A server on this configuration (and so this cache directory), `server ARGS...`.
    pub fn start_server(&self, args: &[&str]) -> Server {
        Server::start_with_args(&self.config, args)
    }

    /// `https://127.0.0.1:PORT/mirror/` of a server started with [`Self::start_server`].
    pub fn mirror_url(&self) -> String {
        format!("https://127.0.0.1:{}/mirror/", self.port)
    }
}

/// The sorted hex sha256 of each of `packages`.
pub fn hexes_of<'a>(packages: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<String> {
    let mut v: Vec<String> = packages.into_iter().map(|p| sha256_hex(p)).collect();
    v.sort();
    v.dedup();
    v
}

/// What [`terraform_in`] returned.
#[derive(Debug)]
pub struct TerraformRun {
    pub success: bool,
    /// stdout and stderr, interleaved.
    pub output: String,
}

/// Runs `terraform ARGS...` in `dir` with `cli_config` as its CLI configuration
/// (`TF_CLI_CONFIG_FILE`), a fresh HOME, and `SSL_CERT_FILE` = `cert` if given. Killed after
/// 50 s.
pub fn terraform_in(
    dir: &Path,
    args: &[&str],
    cli_config: &str,
    cert: Option<&TestCert>,
) -> TerraformRun {
    let terraform = terraform_path();
    let aux = tempfile::Builder::new()
        .prefix("odtr-tf-aux-")
        .tempdir()
        .expect("tempdir");
    let cli_path = aux.path().join("cli.tfrc");
    fs::write(&cli_path, cli_config).unwrap();
    let home = aux.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let output_path = aux.path().join("terraform-output.log");
    let output_file = File::create(&output_path).unwrap();
    let mut cmd = Command::new(&terraform);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("TF_CLI_CONFIG_FILE", &cli_path)
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(output_file.try_clone().unwrap()))
        .stderr(Stdio::from(output_file));
    if let Some(cert) = cert {
        cmd.env("SSL_CERT_FILE", cert.cert_path());
    }
    if let Some(level) = std::env::var_os("ODTR_TF_LOG") {
        cmd.env("TF_LOG", level);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e} ({INSTALL_HINT})", terraform.display()));
    let status = wait_bounded(&mut child, Duration::from_secs(50));
    let mut output = read_to_string_lossy(&output_path);
    if status.is_none() {
        output.push_str("\n<terraform killed after 50 s>\n");
    }
    TerraformRun {
        success: status.is_some_and(|s| s.success()),
        output,
    }
}

/// A Terraform CLI configuration installing only through the network mirror at `url`.
pub fn tf_network_mirror_config(url: &str) -> String {
    format!("provider_installation {{\n  network_mirror {{\n    url = \"{url}\"\n  }}\n}}\n")
}

/// A Terraform CLI configuration installing only from the filesystem mirror at `path`.
pub fn tf_filesystem_mirror_config(path: &Path) -> String {
    format!(
        "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n  }}\n}}\n",
        path.display()
    )
}

/// A configuration directory's `main.tf` requiring `providers` (`(address, constraint)`).
pub fn required_providers_tf(providers: &[(&str, &str)]) -> String {
    let mut tf = String::from("terraform {\n  required_providers {\n");
    for (addr, constraint) in providers {
        let name = addr.rsplit('/').next().unwrap();
        tf.push_str(&format!(
            "    {name} = {{\n      source  = \"{addr}\"\n      version = \"{constraint}\"\n    }}\n"
        ));
    }
    tf.push_str("  }\n}\n");
    tf
}

/// Every regular file under `root`: path relative to `root` (with `/`) → contents.
pub fn dir_snapshot(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(root, &path, out);
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(rel, fs::read(&path).unwrap_or_default());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `GET /v2/.../blobs/...` lines in a docker-registry log (its access log, which it writes
/// whatever its log level).
pub fn registry_log_blob_gets(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .count()
}

/// A static file server over HTTPS (HTTP/1.1, the test certificate) on 127.0.0.1, serving
/// the files under a directory with `Content-Type: application/json` for `.json` and
/// `application/zip` for `.zip` — what `nginx` would do for an exported mirror. Runs on its
/// own thread; stopped on drop.
pub struct StaticHttpsServer {
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    serving: ServeThread,
}

impl StaticHttpsServer {
    pub fn start(root: &Path, cert: &TestCert) -> StaticHttpsServer {
        let mut tls = odtr::tls::load_server_config(&cert.cert_path(), &cert.key_path())
            .expect("TLS config from the test certificate");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind static server");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let root = root.to_owned();
        let log2 = log.clone();
        let serving =
            ServeThread::spawn(format!("static-https-{port}"), move |mut rx| async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("static listener");
                loop {
                    let (tcp, _) = tokio::select! {
                        a = listener.accept() => match a {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                        _ = &mut rx => return,
                    };
                    let acceptor = acceptor.clone();
                    let root = root.clone();
                    let log = log2.clone();
                    tokio::spawn(async move {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await
                        else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let resp = static_file_response(&root, &req);
                            log.lock().unwrap().push(format!(
                                "{} {} {}",
                                req.method(),
                                req.uri().path(),
                                resp.status().as_u16()
                            ));
                            async move { Ok::<_, std::convert::Infallible>(resp) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        StaticHttpsServer { port, log, serving }
    }

    /// `https://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    /// Every request, as `METHOD /path STATUS`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for StaticHttpsServer {
    fn drop(&mut self) {
        self.serving.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- static HTTPS server requests (port {}) -----\n{}\n-----",
                self.port,
                self.requests().join("\n")
            );
        }
    }
}

fn static_file_response<B>(
    root: &Path,
    req: &http::Request<B>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let respond = |status: u16, content_type: &str, body: Vec<u8>| {
        let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_str(content_type).unwrap(),
        );
        resp
    };
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return respond(405, "text/plain", b"method not allowed\n".to_vec());
    }
    let decoded = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy();
    let mut path = root.to_owned();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == ".." || segment == "." || segment.contains('\\') {
            return respond(400, "text/plain", b"bad path\n".to_vec());
        }
        path.push(segment);
    }
    match fs::read(&path) {
        Ok(body) if path.is_file() => {
            let content_type = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => "application/json",
                Some("zip") => "application/zip",
                _ => "application/octet-stream",
            };
            let body = if req.method() == http::Method::HEAD {
                Vec::new()
            } else {
                body
            };
            respond(200, content_type, body)
        }
        _ => respond(404, "text/plain", b"not found\n".to_vec()),
    }
}

/// Pushes fake packages of provider `type_name` for every `versions` × `platforms`
/// (`os_arch`) into `repo`, one OpenTofu-layout index per version. Returns
/// (version, platform) → package.
pub async fn push_fake_versions(
    registry: &Registry,
    repo: &str,
    type_name: &str,
    versions: &[&str],
    platforms: &[&str],
) -> std::collections::BTreeMap<(String, String), Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for version in versions {
        let mut packages = Vec::new();
        for platform in platforms {
            let zip = fake_provider_zip_for(type_name, version, platform);
            let (os, arch) = platform.split_once('_').expect("platform is os_arch");
            packages.push((os, arch, zip.clone()));
            out.insert((version.to_string(), platform.to_string()), zip);
        }
        push_opentofu_layout(registry, repo, version, &packages, None).await;
    }
    out
}
