//! An "evil" OCI Distribution registry for `tests/hostile_origin.rs`: a tokio `TcpListener` on
//! 127.0.0.1 writing hand-made HTTP/1.1 responses, so every byte and every pause is under the
//! test's control.
//!
//! It serves any number of providers `registry.terraform.io/evil/TYPE` (repository
//! `terraform-providers/registry.terraform.io/evil/TYPE`), each with one version `1.0.0` in the
//! seed layout: an OCI image manifest whose single layer (type
//! `application/vnd.hashicorp.terraform.provider-package+zip`, annotated
//! `io.terraform.target-platforms = linux_amd64`) is the package. Each provider has its own
//! [`Fault`]: how the registry misbehaves for it (one endpoint misbehaves, the others answer
//! well). [`Fault::Good`] is a well-behaved registry.
//!
//! Redirect targets that are not HTTP point at a "trap" listener (ftp, gopher) that counts
//! connections, or at `file://` paths: `/etc/passwd`, or a canary file holding exactly the
//! right bytes — a client that followed a `file://` redirect would then *succeed*, which the
//! tests would notice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{
    random_provider_zip, sha256_digest, sha256_hex, temp_dir, ServeThread,
    ANNOTATION_TARGET_PLATFORMS, MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_SEED_CONFIG,
    MEDIA_TYPE_SEED_PACKAGE,
};

pub const HOSTNAME: &str = "registry.terraform.io";
pub const NAMESPACE: &str = "evil";
pub const NAME_PREFIX: &str = "terraform-providers";
pub const VERSION: &str = "1.0.0";
pub const PLATFORM: &str = "linux_amd64";
/// Size of the executable inside each provider's package (the zip is a little larger).
pub const PACKAGE_PAYLOAD: usize = 192 * 1024;
/// Hops of [`Redirect::LongChain`]; the last one leads to the right content.
pub const CHAIN_LENGTH: usize = 30;
/// The most any misbehaviour goes on for (an endless body, a drip), whatever the client does.
const FOREVER: Duration = Duration::from_secs(90);

/// Where a redirect points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    /// `file:///etc/passwd`
    PasswdFile,
    /// `file:///tmp/.../canary`, a file holding exactly the right answer.
    CanaryFile,
    /// `ftp://127.0.0.1:TRAP/...`
    Ftp,
    /// `gopher://127.0.0.1:TRAP/...`
    Gopher,
    /// `/loop/a/...` → `/loop/b/...` → `/loop/a/...` → ...
    Loop,
    /// `/chain/1/...` → ... → `/chain/30/...` → the right content.
    LongChain,
}

/// How the registry answers for one provider.
#[derive(Debug, Clone)]
pub enum Fault {
    Good,

    // --- blobs (the package) ---
    /// The package with one byte flipped in the middle.
    BlobWrongBytesSameLength,
    /// Other bytes, 1000 more of them (honest `Content-Length`).
    BlobWrongBytesLonger,
    /// The package without its last 1000 bytes (honest `Content-Length`).
    BlobWrongBytesShorter,
    /// `200`, `Content-Type: text/html`, an HTML page.
    BlobHtml,
    /// `Content-Length` of the package, half of it sent, then the connection closed.
    BlobTruncated,
    /// `Content-Length` of the package, half of it sent, then the connection reset (RST).
    BlobReset,
    /// The whole right package, announced with a `Content-Length` 1000 bytes larger, then closed.
    BlobContentLengthTooLarge,
    /// Chunked, half of the package, then closed without the last chunk.
    BlobChunkedTruncated,
    /// Bytes forever: chunked, or under a (huge) `Content-Length`.
    BlobEndless {
        content_length: Option<u64>,
    },
    /// Honest headers, then one byte per second.
    BlobDripBody,
    /// The status line and headers at one byte per second.
    BlobDripHeaders,
    BlobRedirect(Redirect),

    // --- manifests (VERSION.json) ---
    /// `HEAD` of the tag names the right digest; `GET` by that digest returns another (valid)
    /// manifest, pointing at another package, still labelled with the requested digest.
    ManifestTamperedByDigest,
    /// `HEAD`/`GET` of the tag say `Docker-Content-Digest` of something else; the body is right.
    ManifestWrongDigestHeader,
    /// `HEAD` of the tag says no digest; `GET` of the tag has a wrong `Docker-Content-Digest`.
    ManifestWrongDigestHeaderOnGet,
    /// `200`, `Content-Type: text/html`, an HTML page, for every manifest request.
    ManifestHtml,
    /// `HEAD` says no digest; `GET` is a JSON manifest that never ends (chunked).
    ManifestEndless,
    /// `HEAD` says no digest; `GET` is a 5 MiB JSON document with an honest `Content-Length`.
    ManifestOversize,
    /// A huge (but correctly digested) document: `HEAD` of the tag names its digest, `GET`
    /// returns it with that `Content-Type`.
    ManifestHuge {
        body: Arc<Vec<u8>>,
        content_type: &'static str,
    },
    /// `HEAD` right; `GET` has honest headers, then one byte per second.
    ManifestDripBody,
    /// Every manifest request's status line and headers at one byte per second.
    ManifestDripHeaders,
    ManifestRedirect(Redirect),

    // --- tag lists (index.json) ---
    TagsHtml,
    /// A JSON tag list that never ends (chunked).
    TagsEndless,
    /// One tag per page, every page linking to a next one.
    TagsEndlessPages,
    /// `count` tags, all on one page or `per_page` at a time.
    TagsMany {
        count: usize,
        per_page: Option<usize>,
    },
    /// Honest headers, then one byte per second.
    TagsDripBody,
    TagsRedirect(Redirect),

    // --- slow but right ---
    /// Right answers, each after a pause: `metadata` before tag lists and manifests, `blob`
    /// before the package.
    Delayed {
        metadata: Duration,
        blob: Duration,
    },
}

/// One provider the registry serves.
#[derive(Debug, Clone)]
pub struct Provider {
    pub type_name: String,
    /// The package (a zip).
    pub zip: Arc<Vec<u8>>,
    pub zip_hex: String,
    pub config: Vec<u8>,
    pub manifest: Arc<Vec<u8>>,
    pub manifest_digest: String,
    /// A valid manifest pointing at another package ([`Fault::ManifestTamperedByDigest`]).
    pub tampered_manifest: Arc<Vec<u8>>,
    /// The `sha256:` of the package the tampered manifest points at.
    pub evil_zip_digest: String,
}

impl Provider {
    fn new(type_name: &str, seed: u64) -> Provider {
        let zip = random_provider_zip(type_name, VERSION, PACKAGE_PAYLOAD, seed);
        let evil_zip = random_provider_zip(type_name, VERSION, PACKAGE_PAYLOAD, seed ^ 0xE71);
        let config = b"{}".to_vec();
        let manifest = seed_manifest(&config, &zip);
        let tampered = seed_manifest(&config, &evil_zip);
        Provider {
            type_name: type_name.to_owned(),
            zip_hex: sha256_hex(&zip),
            manifest_digest: sha256_digest(&manifest),
            zip: Arc::new(zip),
            config,
            manifest: Arc::new(manifest),
            tampered_manifest: Arc::new(tampered),
            evil_zip_digest: sha256_digest(&evil_zip),
        }
    }

    /// `registry.terraform.io/evil/TYPE`
    pub fn address(&self) -> String {
        format!("{HOSTNAME}/{NAMESPACE}/{}", self.type_name)
    }

    /// `terraform-providers/registry.terraform.io/evil/TYPE`
    pub fn repository(&self) -> String {
        format!("{NAME_PREFIX}/{}", self.address())
    }

    /// `zh:` of the right package.
    pub fn zh(&self) -> String {
        format!("zh:{}", self.zip_hex)
    }

    fn tag_list(&self, tags: &[String]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "name": self.repository(), "tags": tags })).unwrap()
    }

    fn good_tag_list(&self) -> Vec<u8> {
        self.tag_list(&[VERSION.to_owned()])
    }
}

/// The seed layout's manifest for one package (as `push_seed_layout` writes it).
fn seed_manifest(config: &[u8], zip: &[u8]) -> Vec<u8> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_SEED_CONFIG,
            "digest": sha256_digest(config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": MEDIA_TYPE_SEED_PACKAGE,
            "digest": sha256_digest(zip),
            "size": zip.len(),
            "annotations": { ANNOTATION_TARGET_PLATFORMS: PLATFORM },
        }],
    });
    serde_json::to_vec(&manifest).unwrap()
}

struct Shared {
    providers: Mutex<HashMap<String, (Provider, Fault)>>,
    log: Mutex<Vec<String>>,
    canary_dir: PathBuf,
    trap_port: u16,
    trap_connections: AtomicUsize,
}

impl Shared {
    fn lookup(&self, type_name: &str) -> Option<(Provider, Fault)> {
        self.providers.lock().unwrap().get(type_name).cloned()
    }
}

/// The evil registry, on its own thread and runtime; stopped on drop.
pub struct EvilRegistry {
    port: u16,
    shared: Arc<Shared>,
    serving: ServeThread,
    _canaries: tempfile::TempDir,
}

impl EvilRegistry {
    pub fn start() -> EvilRegistry {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind evil registry");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("bind trap listener");
        trap.set_nonblocking(true).unwrap();
        let canaries = temp_dir("odtr-evil-canary-");
        let shared = Arc::new(Shared {
            providers: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            canary_dir: canaries.path().to_owned(),
            trap_port: trap.local_addr().unwrap().port(),
            trap_connections: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let serving = ServeThread::spawn(format!("evil-registry-{port}"), move |stop| {
            accept_loop(listener, trap, s, stop)
        });
        EvilRegistry {
            port,
            shared,
            serving,
            _canaries: canaries,
        }
    }

    /// `http://127.0.0.1:PORT/`: the mirror's `origin_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Adds provider `registry.terraform.io/evil/TYPE` (its package seeded by `seed`),
    /// misbehaving as `fault`.
    pub fn add(&self, type_name: &str, seed: u64, fault: Fault) -> Provider {
        let p = Provider::new(type_name, seed);
        self.shared
            .providers
            .lock()
            .unwrap()
            .insert(type_name.to_owned(), (p.clone(), fault));
        p
    }

    pub fn set_fault(&self, type_name: &str, fault: Fault) {
        let mut map = self.shared.providers.lock().unwrap();
        map.get_mut(type_name).expect("known provider").1 = fault;
    }

    /// Every provider answers well from now on.
    pub fn all_good(&self) {
        for (_, f) in self.shared.providers.lock().unwrap().values_mut() {
            *f = Fault::Good;
        }
    }

    /// Every request seen, as `METHOD TARGET [fault]`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Requests whose line contains every one of `needles`.
    pub fn requests_matching(&self, needles: &[&str]) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| needles.iter().all(|n| r.contains(n)))
            .collect()
    }

    /// Connections made to the ftp/gopher trap.
    pub fn trap_connections(&self) -> usize {
        self.shared.trap_connections.load(Ordering::SeqCst)
    }
}

impl Drop for EvilRegistry {
    fn drop(&mut self) {
        self.serving.stop();
        if std::thread::panicking() {
            let log = self.requests();
            let shown = log.len().min(300);
            eprintln!(
                "----- evil registry requests (port {}, last {shown} of {}) -----\n{}\n-----",
                self.port,
                log.len(),
                log[log.len() - shown..].join("\n")
            );
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    trap: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("evil listener");
    let trap = tokio::net::TcpListener::from_std(trap).expect("trap listener");
    loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((tcp, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move { connection(tcp, shared).await });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            t = trap.accept() => {
                if t.is_ok() {
                    shared.trap_connections.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ = &mut shutdown => return,
        }
    }
}

struct Request {
    method: String,
    /// Path and query, as sent.
    target: String,
    path: String,
    query: String,
}

impl Request {
    fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The value of query parameter `key`.
    fn param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// The index of the first tag of the page asked for: one past the last number of the
    /// `last` tag (`0.0.N`), or 0.
    fn page_start(&self) -> usize {
        self.param("last")
            .and_then(|l| l.rsplit('.').next().and_then(|n| n.parse().ok()))
            .map_or(0, |n: usize| n + 1)
    }
}

/// What to do with the connection after a response.
enum After {
    KeepAlive,
    Close,
    /// Drop it with `SO_LINGER` 0: the peer sees a reset.
    Reset,
}

async fn connection(mut tcp: TcpStream, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut tcp, &mut buf).await else {
            return;
        };
        match serve(&mut tcp, &shared, &req).await {
            Ok(After::KeepAlive) => continue,
            Ok(After::Close) => {
                let _ = tcp.shutdown().await;
                return;
            }
            Ok(After::Reset) => {
                // SO_LINGER 0: the close is an immediate RST (nothing to wait for on drop).
                #[allow(deprecated)]
                let _ = tcp.set_linger(Some(Duration::ZERO));
                return;
            }
            Err(_) => return,
        }
    }
}

async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let mut parts = head.lines().next()?.split(' ');
            let method = parts.next()?.to_owned();
            let target = parts.next()?.to_owned();
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_owned(), q.to_owned()),
                None => (target.clone(), String::new()),
            };
            return Some(Request {
                method,
                target,
                path,
                query,
            });
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(60), tcp.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        404 => "Not Found",
        _ => "Whatever",
    }
}

fn head_bytes(status: u16, headers: &[(&str, String)]) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// How a body is delimited.
enum Framing {
    /// `Content-Length: N`
    Length(u64),
    /// `Transfer-Encoding: chunked`
    Chunked,
}

/// The head of a `200`: `Content-Type`, then the framing header, then `extra`.
fn ok_head(content_type: &str, framing: Framing, extra: &[(&str, String)]) -> Vec<u8> {
    let mut headers = vec![
        ("Content-Type", content_type.to_owned()),
        match framing {
            Framing::Length(n) => ("Content-Length", n.to_string()),
            Framing::Chunked => ("Transfer-Encoding", "chunked".to_owned()),
        },
    ];
    headers.extend_from_slice(extra);
    head_bytes(200, &headers)
}

/// A complete, well-delimited response.
async fn send(
    tcp: &mut TcpStream,
    req: &Request,
    status: u16,
    content_type: &str,
    extra: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<After> {
    let mut headers = vec![
        ("Content-Type", content_type.to_owned()),
        ("Content-Length", body.len().to_string()),
        ("Docker-Distribution-Api-Version", "registry/2.0".to_owned()),
    ];
    headers.extend(extra.iter().cloned());
    tcp.write_all(&head_bytes(status, &headers)).await?;
    if !req.is_head() {
        tcp.write_all(body).await?;
    }
    Ok(After::KeepAlive)
}

async fn not_found(tcp: &mut TcpStream, req: &Request, code: &str) -> std::io::Result<After> {
    let body = format!("{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"unknown\"}}]}}");
    send(tcp, req, 404, "application/json", &[], body.as_bytes()).await
}

async fn chunk(tcp: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    tcp.write_all(&out).await
}

/// Writes `bytes` one per second (for at most [`FOREVER`]), then closes.
async fn drip(tcp: &mut TcpStream, bytes: &[u8]) -> std::io::Result<After> {
    let start = Instant::now();
    for b in bytes {
        if start.elapsed() > FOREVER {
            break;
        }
        tcp.write_all(std::slice::from_ref(b)).await?;
        tcp.flush().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(After::Close)
}

/// Writes `first`, then `pattern(i)` for i = 0, 1, ... as chunks (or raw bytes when `chunked`
/// is false), until the peer goes away or [`FOREVER`] has passed.
async fn endless(
    tcp: &mut TcpStream,
    chunked: bool,
    first: &[u8],
    mut pattern: impl FnMut(u64) -> Vec<u8>,
) -> std::io::Result<After> {
    let start = Instant::now();
    let mut i = 0u64;
    let mut next = first.to_vec();
    while start.elapsed() < FOREVER {
        if chunked {
            chunk(tcp, &next).await?;
        } else {
            tcp.write_all(&next).await?;
        }
        next = pattern(i);
        i += 1;
    }
    Ok(After::Close)
}

/// A 200 with an HTML page, as a captive portal or a misconfigured proxy would send.
async fn send_html(tcp: &mut TcpStream, req: &Request, what: &str) -> std::io::Result<After> {
    let page = format!(
        "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><h1>Welcome to the hotel Wi-Fi</h1><p>Please sign in to continue to {what}.</p><form action=\"/login\"><input name=\"room\"></form></body></html>\n"
    );
    send(
        tcp,
        req,
        200,
        "text/html; charset=utf-8",
        &[],
        page.as_bytes(),
    )
    .await
}

const REPO_PREFIX: &str = "/v2/terraform-providers/registry.terraform.io/evil/";

async fn serve(tcp: &mut TcpStream, shared: &Shared, req: &Request) -> std::io::Result<After> {
    // Redirect plumbing first: loops and chains of our own making.
    if let Some(rest) = req.target.strip_prefix("/loop/a") {
        log(shared, req, "loop");
        return redirect(tcp, req, 307, &format!("/loop/b{rest}")).await;
    }
    if let Some(rest) = req.target.strip_prefix("/loop/b") {
        log(shared, req, "loop");
        return redirect(tcp, req, 307, &format!("/loop/a{rest}")).await;
    }
    if let Some(rest) = req.target.strip_prefix("/chain/") {
        log(shared, req, "chain");
        let (n, original) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let n: usize = n.parse().unwrap_or(CHAIN_LENGTH);
        let next = if n < CHAIN_LENGTH {
            format!("/chain/{}{original}", n + 1)
        } else {
            let sep = if original.contains('?') { '&' } else { '?' };
            format!("{original}{sep}chain=done")
        };
        return redirect(tcp, req, 308, &next).await;
    }
    if req.path == "/v2/" || req.path == "/v2" {
        log(shared, req, "base");
        return send(tcp, req, 200, "application/json", &[], b"{}").await;
    }
    let Some(rest) = req.path.strip_prefix(REPO_PREFIX) else {
        log(shared, req, "unknown");
        return not_found(tcp, req, "NAME_UNKNOWN").await;
    };
    let Some((type_name, endpoint)) = rest.split_once('/') else {
        log(shared, req, "unknown");
        return not_found(tcp, req, "NAME_UNKNOWN").await;
    };
    let Some((p, mut fault)) = shared.lookup(type_name) else {
        log(shared, req, "unknown provider");
        return not_found(tcp, req, "NAME_UNKNOWN").await;
    };
    // The end of a long chain is the right answer: reaching it means the chain was followed.
    if req.param("chain").as_deref() == Some("done") {
        fault = Fault::Good;
    }
    log(shared, req, &fault_label(&fault));
    if let Fault::Delayed { metadata, blob } = fault {
        let pause = if endpoint.starts_with("blobs/") {
            blob
        } else {
            metadata
        };
        tokio::time::sleep(pause).await;
        fault = Fault::Good;
    }
    if endpoint == "tags/list" {
        tags(tcp, shared, req, &p, &fault).await
    } else if let Some(reference) = endpoint.strip_prefix("manifests/") {
        manifest(tcp, shared, req, &p, &fault, reference).await
    } else if let Some(digest) = endpoint.strip_prefix("blobs/") {
        blob(tcp, shared, req, &p, &fault, digest).await
    } else {
        not_found(tcp, req, "UNSUPPORTED").await
    }
}

fn fault_label(f: &Fault) -> String {
    match f {
        Fault::ManifestHuge { body, .. } => format!("ManifestHuge({} bytes)", body.len()),
        other => format!("{other:?}"),
    }
}

fn log(shared: &Shared, req: &Request, label: &str) {
    let mut log = shared.log.lock().unwrap();
    if log.len() < 100_000 {
        log.push(format!("{} {} [{label}]", req.method, req.target));
    }
}

async fn redirect(
    tcp: &mut TcpStream,
    req: &Request,
    status: u16,
    location: &str,
) -> std::io::Result<After> {
    send(
        tcp,
        req,
        status,
        "text/plain",
        &[("Location", location.to_owned())],
        b"",
    )
    .await
}

/// Answers with a redirect of kind `kind`; `right` is the right answer (for the canary file).
async fn evil_redirect(
    tcp: &mut TcpStream,
    shared: &Shared,
    req: &Request,
    p: &Provider,
    kind: Redirect,
    right: &[u8],
) -> std::io::Result<After> {
    let location = match kind {
        Redirect::PasswdFile => "file:///etc/passwd".to_owned(),
        Redirect::CanaryFile => {
            let name = format!(
                "{}-{}",
                p.type_name,
                sha256_hex(req.path.as_bytes()).get(..16).unwrap_or("x")
            );
            let path = shared.canary_dir.join(name);
            std::fs::write(&path, right)?;
            format!("file://{}", path.display())
        }
        Redirect::Ftp => format!(
            "ftp://127.0.0.1:{}/pub/{}.zip",
            shared.trap_port, p.type_name
        ),
        Redirect::Gopher => format!("gopher://127.0.0.1:{}/1/{}", shared.trap_port, p.type_name),
        Redirect::Loop => format!("/loop/a{}", req.target),
        Redirect::LongChain => format!("/chain/1{}", req.target),
    };
    redirect(tcp, req, 302, &location).await
}

async fn tags(
    tcp: &mut TcpStream,
    shared: &Shared,
    req: &Request,
    p: &Provider,
    fault: &Fault,
) -> std::io::Result<After> {
    let json = "application/json";
    match fault {
        Fault::TagsHtml => send_html(tcp, req, "tags").await,
        Fault::TagsEndless => {
            let head = ok_head(json, Framing::Chunked, &[]);
            tcp.write_all(&head).await?;
            let first = format!("{{\"name\":\"{}\",\"tags\":[\"0.0.0\"", p.repository());
            endless(tcp, true, first.as_bytes(), |i| {
                let mut s = String::with_capacity(64 * 1024);
                let base = i * 5000;
                for k in 0..5000 {
                    s.push_str(&format!(
                        ",\"0.{}.{}\"",
                        (base + k) / 1000,
                        (base + k) % 1000
                    ));
                }
                s.into_bytes()
            })
            .await
        }
        Fault::TagsEndlessPages => {
            let page = req.page_start();
            let tag = format!("0.0.{page}");
            let link = format!(
                "</v2/{}/tags/list?n=1000&last={tag}>; rel=\"next\"",
                p.repository()
            );
            send(
                tcp,
                req,
                200,
                json,
                &[("Link", link)],
                &p.tag_list(std::slice::from_ref(&tag)),
            )
            .await
        }
        Fault::TagsMany { count, per_page } => {
            let per_page = per_page.unwrap_or(*count);
            let start = req.page_start();
            let end = (start + per_page).min(*count);
            let tags: Vec<String> = (start..end).map(|i| format!("0.0.{i}")).collect();
            let mut extra = Vec::new();
            if end < *count {
                extra.push((
                    "Link",
                    format!(
                        "</v2/{}/tags/list?n={per_page}&last=0.0.{}>; rel=\"next\"",
                        p.repository(),
                        end - 1
                    ),
                ));
            }
            send(tcp, req, 200, json, &extra, &p.tag_list(&tags)).await
        }
        Fault::TagsDripBody => {
            let body = p.good_tag_list();
            let head = ok_head(json, Framing::Length(body.len() as u64), &[]);
            tcp.write_all(&head).await?;
            drip(tcp, &body).await
        }
        Fault::TagsRedirect(kind) => {
            evil_redirect(tcp, shared, req, p, *kind, &p.good_tag_list()).await
        }
        _ => send(tcp, req, 200, json, &[], &p.good_tag_list()).await,
    }
}

/// A manifest answer: the body, with a `Docker-Content-Digest` header if `digest` is given.
async fn send_manifest(
    tcp: &mut TcpStream,
    req: &Request,
    body: &[u8],
    content_type: &str,
    digest: Option<&str>,
) -> std::io::Result<After> {
    let extra: Vec<(&str, String)> = digest
        .map(|d| vec![("Docker-Content-Digest", d.to_owned())])
        .unwrap_or_default();
    send(tcp, req, 200, content_type, &extra, body).await
}

async fn manifest(
    tcp: &mut TcpStream,
    shared: &Shared,
    req: &Request,
    p: &Provider,
    fault: &Fault,
    reference: &str,
) -> std::io::Result<After> {
    let by_tag = reference == VERSION;
    let by_right_digest = reference == p.manifest_digest;
    let by_digest = reference.starts_with("sha256:");
    if !by_tag && !by_digest {
        return not_found(tcp, req, "MANIFEST_UNKNOWN").await;
    }
    let oci = MEDIA_TYPE_OCI_MANIFEST;
    let wrong_digest = sha256_digest(format!("not the manifest of {}", p.type_name).as_bytes());
    match fault {
        Fault::ManifestTamperedByDigest => {
            if req.is_head() && by_tag {
                send_manifest(tcp, req, &p.manifest, oci, Some(&p.manifest_digest)).await
            } else {
                // Whatever was asked for, labelled as what was asked for.
                let label = if by_digest {
                    reference
                } else {
                    &p.manifest_digest
                };
                send_manifest(tcp, req, &p.tampered_manifest, oci, Some(label)).await
            }
        }
        Fault::ManifestWrongDigestHeader => {
            // The right body always; the tag claims another digest, and a request by any
            // digest gets the right body labelled with the digest asked for.
            let label = if by_digest { reference } else { &wrong_digest };
            send_manifest(tcp, req, &p.manifest, oci, Some(label)).await
        }
        Fault::ManifestWrongDigestHeaderOnGet => {
            if by_tag && req.is_head() {
                send_manifest(tcp, req, &p.manifest, oci, None).await
            } else if by_tag {
                send_manifest(tcp, req, &p.manifest, oci, Some(&wrong_digest)).await
            } else {
                good_manifest(tcp, req, p, by_right_digest).await
            }
        }
        Fault::ManifestHtml => send_html(tcp, req, "manifests").await,
        Fault::ManifestEndless => {
            if req.is_head() {
                return send_manifest(tcp, req, &p.manifest, oci, None).await;
            }
            let head = ok_head(oci, Framing::Chunked, &[]);
            tcp.write_all(&head).await?;
            let first = format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{oci}\",\"config\":{{\"mediaType\":\"{MEDIA_TYPE_SEED_CONFIG}\",\"digest\":\"{}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"x\",\"digest\":\"sha256:{}\",\"size\":0}}",
                sha256_digest(&p.config),
                "0".repeat(64)
            );
            let layer = format!(
                ",{{\"mediaType\":\"x\",\"digest\":\"sha256:{}\",\"size\":0}}",
                "0".repeat(64)
            );
            let block = layer.repeat(600).into_bytes();
            endless(tcp, true, first.as_bytes(), |_| block.clone()).await
        }
        Fault::ManifestOversize => {
            if req.is_head() {
                return send_manifest(tcp, req, &p.manifest, oci, None).await;
            }
            let mut body = b"{\"schemaVersion\":2,\"padding\":\"".to_vec();
            body.resize(5 * 1024 * 1024 - 2, b'a');
            body.extend_from_slice(b"\"}");
            send_manifest(tcp, req, &body, oci, None).await
        }
        Fault::ManifestHuge { body, content_type } => {
            let digest = sha256_digest(body);
            if by_tag || reference == digest {
                send_manifest(tcp, req, body, content_type, Some(&digest)).await
            } else {
                not_found(tcp, req, "MANIFEST_UNKNOWN").await
            }
        }
        Fault::ManifestDripBody => {
            if req.is_head() {
                return good_manifest(tcp, req, p, by_tag || by_right_digest).await;
            }
            let head = ok_head(
                oci,
                Framing::Length(p.manifest.len() as u64),
                &[("Docker-Content-Digest", p.manifest_digest.clone())],
            );
            tcp.write_all(&head).await?;
            drip(tcp, &p.manifest).await
        }
        Fault::ManifestDripHeaders => {
            let head = ok_head(
                oci,
                Framing::Length(p.manifest.len() as u64),
                &[("Docker-Content-Digest", p.manifest_digest.clone())],
            );
            drip(tcp, &head).await
        }
        Fault::ManifestRedirect(kind) => {
            evil_redirect(tcp, shared, req, p, *kind, &p.manifest).await
        }
        _ => good_manifest(tcp, req, p, by_tag || by_right_digest).await,
    }
}

async fn good_manifest(
    tcp: &mut TcpStream,
    req: &Request,
    p: &Provider,
    known: bool,
) -> std::io::Result<After> {
    if known {
        send_manifest(
            tcp,
            req,
            &p.manifest,
            MEDIA_TYPE_OCI_MANIFEST,
            Some(&p.manifest_digest),
        )
        .await
    } else {
        not_found(tcp, req, "MANIFEST_UNKNOWN").await
    }
}

async fn blob(
    tcp: &mut TcpStream,
    shared: &Shared,
    req: &Request,
    p: &Provider,
    fault: &Fault,
    digest: &str,
) -> std::io::Result<After> {
    let octets = "application/octet-stream";
    if digest == sha256_digest(&p.config) {
        return send(tcp, req, 200, octets, &[], &p.config).await;
    }
    if digest != format!("sha256:{}", p.zip_hex) {
        return not_found(tcp, req, "BLOB_UNKNOWN").await;
    }
    let zip: &[u8] = &p.zip;
    let half = zip.len() / 2;
    let digest_header = ("Docker-Content-Digest", digest.to_owned());
    if req.is_head() {
        return send(tcp, req, 200, octets, &[digest_header], zip).await;
    }
    match fault {
        Fault::BlobWrongBytesSameLength => {
            let mut bad = zip.to_vec();
            bad[half] ^= 0x5a;
            send(tcp, req, 200, octets, &[digest_header], &bad).await
        }
        Fault::BlobWrongBytesLonger => {
            let mut bad = zip.to_vec();
            bad.extend(std::iter::repeat_n(0x42u8, 1000));
            send(tcp, req, 200, octets, &[digest_header], &bad).await
        }
        Fault::BlobWrongBytesShorter => {
            send(
                tcp,
                req,
                200,
                octets,
                &[digest_header],
                &zip[..zip.len() - 1000],
            )
            .await
        }
        Fault::BlobHtml => send_html(tcp, req, "the download").await,
        Fault::BlobTruncated | Fault::BlobReset => {
            let head = ok_head(octets, Framing::Length(zip.len() as u64), &[]);
            tcp.write_all(&head).await?;
            tcp.write_all(&zip[..half]).await?;
            tcp.flush().await?;
            // Let the bytes arrive before the end.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(if matches!(fault, Fault::BlobReset) {
                After::Reset
            } else {
                After::Close
            })
        }
        Fault::BlobContentLengthTooLarge => {
            let head = ok_head(octets, Framing::Length((zip.len() + 1000) as u64), &[]);
            tcp.write_all(&head).await?;
            tcp.write_all(zip).await?;
            tcp.flush().await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(After::Close)
        }
        Fault::BlobChunkedTruncated => {
            let head = ok_head(octets, Framing::Chunked, &[]);
            tcp.write_all(&head).await?;
            for piece in zip[..half].chunks(16 * 1024) {
                chunk(tcp, piece).await?;
            }
            tcp.flush().await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(After::Close)
        }
        Fault::BlobEndless { content_length } => {
            let framing = match content_length {
                Some(l) => Framing::Length(*l),
                None => Framing::Chunked,
            };
            tcp.write_all(&ok_head(octets, framing, &[])).await?;
            // The real package first, then more and more.
            let filler: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
            endless(tcp, content_length.is_none(), zip, |_| filler.clone()).await
        }
        Fault::BlobDripBody => {
            let head = ok_head(octets, Framing::Length(zip.len() as u64), &[]);
            tcp.write_all(&head).await?;
            drip(tcp, zip).await
        }
        Fault::BlobDripHeaders => {
            let head = ok_head(octets, Framing::Length(zip.len() as u64), &[]);
            drip(tcp, &head).await
        }
        Fault::BlobRedirect(kind) => evil_redirect(tcp, shared, req, p, *kind, zip).await,
        _ => send(tcp, req, 200, octets, &[digest_header], zip).await,
    }
}
