//! Hostile and broken clients, over raw TLS sockets, against a running server (a mirror over a
//! real docker-registry holding one provider). Every case states the precise outcome it
//! expects; whatever the input, the server must never answer 5xx to a client's mistake, never
//! panic, never send wrong bytes, and must still answer `/healthz` afterwards.
//!
//! The `limits { ... }` block (README, "limits") bounds what a client can make the server do:
//! header bytes and count (431), path length (414), the time to send a request head
//! (`header_read_timeout`), idle connections (`idle_timeout`) and connections served at once
//! (`max_connections`).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";

// ---------------------------------------------------------------------------------------------
// Fixture: registry with one provider ← server (TLS, a cache, a `limits` block)
// ---------------------------------------------------------------------------------------------

struct Fixture {
    // Field order = drop order: the server stops before the registry.
    server: Server,
    cert: TestCert,
    _cache: tempfile::TempDir,
    _registry: Registry,
    /// The local platform's package (already in the cache).
    package: Vec<u8>,
    /// Path (and query, if any) of the package's download URL.
    download_path: String,
    port: u16,
    connector: tokio_rustls::TlsConnector,
    client: reqwest::Client,
}

/// A rustls client trusting only the test certificate, offering HTTP/1.1 by ALPN.
fn tls_connector(cert: &TestCert) -> tokio_rustls::TlsConnector {
    tls_connector_alpn(cert, b"http/1.1")
}

/// Like [`tls_connector`], offering `alpn` instead.
fn tls_connector_alpn(cert: &TestCert, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut cert.cert_pem().as_bytes()) {
        roots.add(c.expect("test cert PEM")).expect("add test cert");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(odtr::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn server_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("127.0.0.1".to_owned()).expect("server name")
}

fn port_of(base_url: &str) -> u16 {
    url::Url::parse(base_url)
        .expect("base url")
        .port()
        .expect("base url has a port")
}

/// `limits` holds the lines of the `limits { }` block.
async fn setup(limits: &str, package_size: usize) -> Fixture {
    let registry = Registry::start(RegistryAuth::None);
    let platform = local_platform();
    let package = random_provider_zip("foo", "1.0.0", package_size, 0x5eed);
    push_seed_layout(
        &registry,
        FOO_REPO,
        "1.0.0",
        &[(platform.as_str(), package.clone())],
        None,
    )
    .await;
    let cert = TestCert::generate();
    let cache = temp_dir("odtr-hostile-cache-");
    let config = format!(
        "{}\nlimits {{\n{limits}\n}}\n",
        cached_mirror_config(&cert, &registry.url(), false, cache.path(), "1GiB")
    );
    let server = Server::start(&config);
    let port = port_of(server.base_url());
    let client = https_client(&cert);
    let archives = fetch_archives(&client, &server.mirror_url(), FOO, "1.0.0", None).await;
    let url = archives
        .get(&platform)
        .unwrap_or_else(|| panic!("1.0.0.json has no {platform}: {archives:?}"))
        .url
        .clone();
    let download_path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    // Into the cache, so the download cases below are served from disk.
    let d = download_hashed(&client, url.as_str(), &[]).await;
    assert!(
        d.is_exactly(&package),
        "warming {url}: status {} len {} error {:?}",
        d.status,
        d.len,
        d.error
    );
    let connector = tls_connector(&cert);
    Fixture {
        server,
        cert,
        _cache: cache,
        _registry: registry,
        package,
        download_path,
        port,
        connector,
        client,
    }
}

impl Fixture {
    /// `/healthz` answers 200 `ok` within 5 s, and the server has not panicked.
    async fn assert_alive(&self) {
        let client = https_client(&self.cert);
        let url = format!("{}healthz", self.server.base_url());
        let got = tokio::time::timeout(Duration::from_secs(5), fetch(&client, &url, None))
            .await
            .unwrap_or_else(|_| panic!("GET {url}: no answer within 5 s"));
        got.expect_status(200);
        self.assert_no_panic();
    }

    fn assert_no_panic(&self) {
        let stderr = self.server.stderr();
        let panics = stderr.matches("panicked").count();
        assert_eq!(panics, 0, "the server panicked:\n{stderr}");
    }

    async fn exchange(&self, request: &[u8]) -> Reply {
        exchange_with(&self.connector, self.port, request, Duration::from_secs(15)).await
    }

    /// `GET /healthz` with `headers` (whole lines, without CRLF) added.
    async fn healthz_with(&self, headers: &[String]) -> Reply {
        let headers: Vec<&[u8]> = headers.iter().map(|h| h.as_bytes()).collect();
        self.exchange(&request_with(b"GET", b"/healthz", &headers))
            .await
    }

    async fn tls(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to the server");
        tokio::time::timeout(
            Duration::from_secs(10),
            self.connector.connect(server_name(), tcp),
        )
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake")
    }

    async fn in_flight_downloads(&self) -> i64 {
        let url = format!("{}metrics", self.server.base_url());
        let got = fetch(&self.client, &url, None).await;
        got.expect_status(200);
        let text = got.text();
        text.lines()
            .find_map(|l| l.strip_prefix("odtr_downloads_in_flight "))
            .unwrap_or_else(|| panic!("no odtr_downloads_in_flight in /metrics:\n{text}"))
            .trim()
            .parse()
            .expect("gauge value")
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 exchange over TLS
// ---------------------------------------------------------------------------------------------

/// What came back on a raw connection.
#[derive(Debug, Default)]
struct Reply {
    /// `None`: the connection ended (closed or reset) before a whole HTTP/1.x response head.
    status: Option<u16>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Neither an answer nor a close within the time limit.
    timed_out: bool,
    /// The start of whatever arrived, for messages.
    preview: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn describe(&self) -> String {
        match self.status {
            Some(s) => format!("{s}"),
            None if self.timed_out => "no answer and no close (timed out)".to_owned(),
            None if self.preview.is_empty() => "closed without a response".to_owned(),
            None => format!("closed after a non-HTTP reply {:?}", self.preview),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

type Headers = Vec<(String, String)>;

/// Parses a response head (`HTTP/1.x NNN ...` and headers).
fn parse_head(head: &[u8]) -> Option<(u16, Headers)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some((status, headers))
}

/// Sends `request` on a new TLS connection and reads one response: its head, then
/// `Content-Length` bytes of body (or up to the close when there is none).
async fn exchange_with(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    request: &[u8],
    limit: Duration,
) -> Reply {
    let deadline = tokio::time::Instant::now() + limit;
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the server");
    let mut tls = tokio::time::timeout_at(deadline, connector.connect(server_name(), tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake");
    // The server may answer and close before taking everything (e.g. oversized heads).
    let _ = tls.write_all(request).await;
    let _ = tls.flush().await;
    let is_head = request.starts_with(b"HEAD ");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // (end of the head, status, headers)
    let mut head: Option<(usize, u16, Headers)> = None;
    let mut body_len: Option<usize> = None;
    let mut timed_out = false;
    loop {
        if let (Some((end, ..)), Some(len)) = (&head, body_len) {
            if buf.len() >= end + len {
                break;
            }
        }
        let n = match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Err(_) => {
                timed_out = true;
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none() {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                let Some((status, headers)) = parse_head(&buf[..pos]) else {
                    break;
                };
                let content_length = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse::<usize>().ok());
                body_len = if is_head || status < 200 || status == 204 || status == 304 {
                    Some(0)
                } else {
                    content_length
                };
                head = Some((pos + 4, status, headers));
            }
        }
    }
    let preview = String::from_utf8_lossy(&buf[..buf.len().min(80)]).into_owned();
    match head {
        Some((end, status, headers)) => {
            let mut body = buf[end..].to_vec();
            if let Some(len) = body_len {
                body.truncate(len);
            }
            Reply {
                status: Some(status),
                headers,
                body,
                // A complete head arrived: a late body is reported by the callers' checks.
                timed_out: false,
                preview,
            }
        }
        None => Reply {
            status: None,
            timed_out,
            preview,
            ..Default::default()
        },
    }
}

/// `GET <target> HTTP/1.1` with Host and `Connection: close`.
fn get(target: &[u8]) -> Vec<u8> {
    request_with(b"GET", target, &[])
}

fn request_with(method: &[u8], target: &[u8], extra_headers: &[&[u8]]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(method);
    r.push(b' ');
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in extra_headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r
}

// ---------------------------------------------------------------------------------------------
// Tally: every bad input tried, its kind, and what went wrong
// ---------------------------------------------------------------------------------------------

struct Tally {
    test: &'static str,
    tried: usize,
    kinds: BTreeSet<&'static str>,
    server_errors: Vec<String>,
    failures: Vec<String>,
}

/// What a case may get back.
struct Expect<'a> {
    statuses: &'a [u16],
    /// A close without a response is also acceptable.
    closed_ok: bool,
}

const fn status(statuses: &[u16]) -> Expect<'_> {
    Expect {
        statuses,
        closed_ok: false,
    }
}

const fn status_or_closed(statuses: &[u16]) -> Expect<'_> {
    Expect {
        statuses,
        closed_ok: true,
    }
}

impl Tally {
    fn new(test: &'static str) -> Tally {
        Tally {
            test,
            tried: 0,
            kinds: BTreeSet::new(),
            server_errors: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Records one bad input and checks its reply.
    fn check(&mut self, kind: &'static str, what: &str, reply: &Reply, expect: Expect<'_>) {
        self.tried += 1;
        self.kinds.insert(kind);
        let outcome = reply.describe();
        match reply.status {
            Some(s) if s >= 500 => {
                self.server_errors.push(format!("[{kind}] {what}: {s}"));
                self.failures.push(format!(
                    "[{kind}] {what}: a server error ({s}) for a client's mistake; body {:?}",
                    String::from_utf8_lossy(&reply.body)
                ));
            }
            Some(s) if expect.statuses.contains(&s) => {}
            None if expect.closed_ok && !reply.timed_out => {}
            _ => self.failures.push(format!(
                "[{kind}] {what}: got {outcome}, expected {}{:?}",
                if expect.closed_ok {
                    "a close or one of "
                } else {
                    "one of "
                },
                expect.statuses
            )),
        }
        eprintln!("  [{kind}] {what} -> {outcome}");
    }

    fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    /// Prints the figures and fails with every problem found.
    fn finish(&self, fx: &Fixture) {
        let stderr = fx.server.stderr();
        let panics = stderr.matches("panicked").count();
        eprintln!(
            "HOSTILE-TALLY {}: bad inputs tried = {}, kinds = {} {:?}, 5xx for client errors = {}, panics = {}",
            self.test,
            self.tried,
            self.kinds.len(),
            self.kinds,
            self.server_errors.len(),
            panics
        );
        assert!(
            self.failures.is_empty() && panics == 0,
            "{} problem(s), {panics} panic(s):\n{}\n--- server stderr ---\n{stderr}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed requests: 4xx, never 5xx
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_never_5xx() {
    let fx = setup(
        "  max_request_header_bytes = \"16KiB\"\n  max_request_headers = 100\n  max_path_length = 2048",
        64 * 1024,
    )
    .await;
    let mut t = Tally::new("malformed_requests");
    let idx = format!("/mirror/{FOO}");

    // A control: the raw client itself works.
    let ok = fx.exchange(&get(b"/healthz")).await;
    assert_eq!(
        ok.status,
        Some(200),
        "GET /healthz over the raw client: {ok:?}"
    );
    assert_eq!(
        ok.body.trim_ascii(),
        b"ok",
        "GET /healthz over the raw client: {ok:?}"
    );

    // --- Request lines ---
    let bad_400: &[u16] = &[400];
    for (what, raw) in [
        ("not HTTP at all", b"GARBAGE\r\n\r\n".to_vec()),
        ("method only", b"GET\r\n\r\n".to_vec()),
        (
            "HTTP/0.9 style, no version",
            b"GET /healthz\r\n\r\n".to_vec(),
        ),
        (
            "a fourth token on the request line",
            b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "two spaces after the method",
            b"GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "leading space",
            b" GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "control byte in the method",
            b"G\x01T /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "tab instead of space",
            b"GET\t/healthz\tHTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "empty request target",
            b"GET  HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("only CRLFs", b"\r\n\r\n\r\n\r\n".to_vec()),
        (
            "binary garbage",
            (0u8..=255).rev().cycle().take(600).collect::<Vec<u8>>(),
        ),
    ] {
        let r = fx.exchange(&raw).await;
        t.check("request line", what, &r, status_or_closed(bad_400));
    }

    // --- HTTP versions ---
    for version in [
        "HTTP/1.2",
        "HTTP/2.0",
        "HTTP/3",
        "http/1.1",
        "HTTP/1.1111111111111111111111111111111111111111",
        "HTTP/",
        "HTTPS/1.1",
        "HTTP/1.1.1",
    ] {
        let raw = format!("GET /healthz {version}\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = fx.exchange(raw.as_bytes()).await;
        t.check(
            "HTTP version",
            &format!("version {version:?}"),
            &r,
            status_or_closed(bad_400),
        );
    }

    // --- Line endings and header syntax ---
    {
        // RFC 9112 §2.2 lets a server accept a bare LF as a line terminator; what it must not
        // do is misframe. Accepted: 400, a close, or the correct answer to GET /healthz.
        let r = fx
            .exchange(b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n")
            .await;
        t.check(
            "line endings",
            "bare LF line endings",
            &r,
            status_or_closed(&[200, 400]),
        );
        if r.status == Some(200) && r.body.trim_ascii() != b"ok" {
            t.fail(format!(
                "bare LF: a 200 that is not /healthz's answer: {:?}",
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    for (what, raw) in [
        (
            "bare CR in the request line",
            b"GET /healthz HTTP/1.1\rHost: x\r\n\r\n".to_vec(),
        ),
        (
            "bare CR inside a header value",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n".to_vec(),
        ),
        (
            "header line without a colon",
            b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        ),
        (
            "whitespace between header name and colon",
            b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(),
        ),
        (
            "empty header name",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n".to_vec(),
        ),
        (
            "conflicting Content-Length headers",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
        ),
        (
            "non-numeric Content-Length",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
        ),
        (
            "negative Content-Length",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
    ] {
        let r = fx.exchange(&raw).await;
        t.check("header syntax", what, &r, status_or_closed(bad_400));
    }
    {
        // obs-fold: RFC 9112 §5.2 — reject with 400, or replace the fold with spaces.
        let r = fx
            .exchange(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n",
            )
            .await;
        t.check(
            "header syntax",
            "obsolete line folding",
            &r,
            status_or_closed(&[200, 400]),
        );
    }

    // --- NUL bytes ---
    for (what, raw) in [
        (
            "NUL in the path",
            b"GET /heal\0thz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a header value",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a header name",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-\0A: b\r\n\r\n".to_vec(),
        ),
        ("only NULs", vec![0u8; 64]),
        (
            "NUL in the method",
            b"GE\0 /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ] {
        let r = fx.exchange(&raw).await;
        t.check("NUL bytes", what, &r, status_or_closed(bad_400));
    }

    // --- Header size and count ---
    {
        let big = |kib: usize| vec![format!("X-Big: {}", "a".repeat(kib * 1024))];
        let numbered = |prefix: &str, n: usize| -> Vec<String> {
            (0..n).map(|i| format!("{prefix}{i}: v")).collect()
        };
        for (what, headers, expect) in [
            (
                "one 20 KiB header (limit 16 KiB)",
                big(20),
                status_or_closed(&[431]),
            ),
            ("one 200 KiB header", big(200), status_or_closed(&[431])),
            (
                "150 headers (limit 100)",
                numbered("X-H-", 150),
                status(&[431]),
            ),
            (
                "1000 headers",
                numbered("X-", 1000),
                status_or_closed(&[431]),
            ),
        ] {
            let r = fx.healthz_with(&headers).await;
            t.check("header limits", what, &r, expect);
        }
        // Within the limits: served (the limits do not refuse legitimate requests).
        for (what, headers) in [
            ("92 headers (under the limit of 100)", numbered("X-H-", 90)),
            ("a 12 KiB header (under the limit of 16 KiB)", big(12)),
        ] {
            let r = fx.healthz_with(&headers).await;
            if r.status != Some(200) {
                t.fail(format!("{what}: expected 200, got {}", r.describe()));
            }
        }
    }

    // --- Path length ---
    {
        let at_limit = format!("/x/{}", "a".repeat(2048 - 3));
        assert_eq!(at_limit.len(), 2048);
        let r = fx.exchange(&get(at_limit.as_bytes())).await;
        if r.status != Some(404) {
            t.fail(format!(
                "a 2048-byte path (exactly max_path_length) to no endpoint: expected 404, got {}",
                r.describe()
            ));
        }
        for len in [2049usize, 3000, 10_000] {
            let path = format!("/x/{}", "a".repeat(len - 3));
            let r = fx.exchange(&get(path.as_bytes())).await;
            t.check(
                "path length",
                &format!("a {len}-byte path (limit 2048)"),
                &r,
                status(&[414]),
            );
        }
        let path = format!("{idx}/{}.json", "1.0.0-".to_owned() + &"a".repeat(2100));
        let r = fx.exchange(&get(path.as_bytes())).await;
        t.check(
            "path length",
            "a version.json path over 2048 bytes",
            &r,
            status(&[414]),
        );
        let path = format!("/x/{}", "a".repeat(30_000));
        let r = fx.exchange(&get(path.as_bytes())).await;
        t.check(
            "path length",
            "a 30000-byte path (also over the header limit)",
            &r,
            status_or_closed(&[414, 431]),
        );
    }

    // --- Percent-encoding ---
    for (what, path, expect) in [
        (
            "invalid escape %zz in the namespace",
            "/mirror/registry.terraform.io/%zz/foo/index.json".to_owned(),
            &[400u16][..],
        ),
        (
            "truncated escape %4",
            "/mirror/registry.terraform.io/acme/fo%4/index.json".to_owned(),
            &[400],
        ),
        (
            "lone % at the end of the file name",
            format!("{idx}/index.json%"),
            &[400, 404],
        ),
        (
            "escaped non-UTF-8 %ff%fe",
            "/mirror/%ff%fe/acme/foo/index.json".to_owned(),
            &[400],
        ),
        (
            "escaped NUL %00",
            "/mirror/registry.terraform.io/acme/foo%00/index.json".to_owned(),
            &[400],
        ),
        (
            "escaped slash %2f",
            "/mirror/registry.terraform.io/acme%2ffoo/x/index.json".to_owned(),
            &[400],
        ),
        (
            "escaped overlong UTF-8 %c0%af",
            "/mirror/registry.terraform.io/%c0%af/foo/index.json".to_owned(),
            &[400],
        ),
        (
            "escaped CRLF %0d%0a",
            "/mirror/registry.terraform.io/acme/foo%0d%0aX-Injected:%20yes/index.json".to_owned(),
            &[400],
        ),
        (
            "bad escape in the digest",
            format!("{idx}/download/sha256/%zz{}/x.zip", "a".repeat(62)),
            &[400],
        ),
    ] {
        let r = fx.exchange(&get(path.as_bytes())).await;
        t.check("percent-encoding", what, &r, status(expect));
        if r.header("x-injected").is_some() {
            t.fail(format!("{what}: the escaped CRLF became a response header"));
        }
    }
    {
        // Valid escapes are decoded: %66%6f%6f is "foo".
        let r = fx
            .exchange(&get(
                b"/mirror/registry.terraform.io/acme/%66%6f%6f/index.json",
            ))
            .await;
        if r.status != Some(200) {
            t.fail(format!(
                "a correctly escaped provider name: expected 200, got {}",
                r.describe()
            ));
        }
    }

    // --- Path traversal ---
    let hex = "0".repeat(64);
    for (what, path) in [
        ("../ segments", format!("{idx}/../../../../etc/passwd")),
        (
            "%2e%2e segment",
            "/mirror/registry.terraform.io/acme/%2e%2e/index.json".to_owned(),
        ),
        (
            "%2E%2E (upper case)",
            "/mirror/registry.terraform.io/%2E%2E/foo/index.json".to_owned(),
        ),
        (
            "single-dot segment",
            "/mirror/registry.terraform.io/./foo/index.json".to_owned(),
        ),
        (
            "%2e segment",
            "/mirror/registry.terraform.io/acme/%2e/index.json".to_owned(),
        ),
        (
            "../ in a download path",
            format!("{idx}/download/sha256/../../../../../../etc/passwd.zip"),
        ),
        (
            "escaped ../ in the download file name",
            format!("{idx}/download/sha256/{hex}/..%2f..%2f..%2fetc%2fpasswd.zip"),
        ),
        ("..%2f chain", "/..%2f..%2f..%2fetc%2fpasswd".to_owned()),
        ("backslash traversal", format!("{idx}/..%5c..%5cindex.json")),
        (
            "raw backslashes",
            "/mirror/registry.terraform.io/acme/..\\..\\foo/index.json".to_owned(),
        ),
        (
            "../ in the mirror name",
            "/../mirror/registry.terraform.io/acme/foo/index.json".to_owned(),
        ),
    ] {
        let r = fx.exchange(&get(path.as_bytes())).await;
        t.check("path traversal", what, &r, status(&[400]));
        if r.body.windows(5).any(|w| w == b"root:") {
            t.fail(format!("{what}: the answer holds /etc/passwd"));
        }
    }

    // --- Double slashes ---
    for (what, path) in [
        ("//healthz", "//healthz".to_owned()),
        ("// after the mirror", format!("/mirror//{FOO}/index.json")),
        (
            "// inside the address",
            "/mirror/registry.terraform.io//acme/foo/index.json".to_owned(),
        ),
        ("// before the file", format!("{idx}//index.json")),
        ("trailing //", format!("{idx}/index.json//")),
        ("/// only", "///".to_owned()),
        (
            "// in a download path",
            format!("{idx}/download//sha256/{hex}/x.zip"),
        ),
    ] {
        let r = fx.exchange(&get(path.as_bytes())).await;
        t.check("double slashes", what, &r, status(&[400, 404]));
    }

    // --- Versions ---
    for (what, file, expect) in [
        (
            "a 1500-character pre-release",
            format!("1.0.0-{}.json", "a".repeat(1500)),
            &[400u16, 404][..],
        ),
        (
            "1000 characters of build metadata",
            format!("1.0.0+{}.json", "b".repeat(1000)),
            &[400, 404],
        ),
        (
            "a major version over u64",
            "99999999999999999999999999.0.0.json".to_owned(),
            &[400],
        ),
        (
            "a 600-part dotted pre-release",
            format!("1.0.0-{}.json", vec!["1"; 600].join(".")),
            &[400, 404],
        ),
        ("leading v", "v1.0.0.json".to_owned(), &[400]),
        ("two parts", "1.0.json".to_owned(), &[400]),
        ("negative", "-1.0.0.json".to_owned(), &[400]),
        ("leading zeros", "01.0.0.json".to_owned(), &[400]),
        (
            "non-ASCII pre-release",
            "1.0.0-%CE%B1.json".to_owned(),
            &[400],
        ),
        ("empty version", ".json".to_owned(), &[400]),
        (
            "a version that does not exist",
            "9.9.9.json".to_owned(),
            &[404],
        ),
    ] {
        let r = fx.exchange(&get(format!("{idx}/{file}").as_bytes())).await;
        t.check("version strings", what, &r, status(expect));
    }
    for (what, path) in [
        ("short digest", format!("{idx}/download/sha256/abc/x.zip")),
        (
            "non-hex digest",
            format!("{idx}/download/sha256/{}/x.zip", "g".repeat(64)),
        ),
        (
            "sha512 instead of sha256",
            format!("{idx}/download/sha512/{}/x.zip", "a".repeat(128)),
        ),
        (
            "digest of 10000 hex characters",
            format!("{idx}/download/sha256/{}/x.zip", "a".repeat(1900)),
        ),
    ] {
        let r = fx.exchange(&get(path.as_bytes())).await;
        t.check("digests", what, &r, status(&[400, 404]));
    }

    // --- Non-UTF-8 and non-ASCII bytes in the raw path ---
    for (what, path) in [
        (
            "raw 0xff 0xfe",
            b"/mirror/\xff\xfe/acme/foo/index.json".to_vec(),
        ),
        ("raw overlong UTF-8 slash", b"/\xc0\xaf/etc/passwd".to_vec()),
        ("raw DEL", format!("{idx}/\x7f.json").into_bytes()),
        ("raw lone continuation byte", {
            let mut p = format!("{idx}/").into_bytes();
            p.extend_from_slice(b"\x80index.json");
            p
        }),
        (
            "raw UTF-8 (unescaped) in the name",
            "/mirror/registry.terraform.io/acme/f\u{f6}\u{f6}/index.json"
                .as_bytes()
                .to_vec(),
        ),
        ("raw 0x80 in the version", {
            let mut p = format!("{idx}/").into_bytes();
            p.extend_from_slice(b"1.0.\x80.json");
            p
        }),
        ("raw space in the path", b"/mirror/a b/index.json".to_vec()),
    ] {
        let r = fx.exchange(&get(&path)).await;
        t.check("non-UTF-8 path", what, &r, status_or_closed(bad_400));
    }

    // --- Methods ---
    for method in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "PROPFIND", "MKCOL",
    ] {
        for target in [
            "/healthz".to_owned(),
            format!("{idx}/index.json"),
            fx.download_path.clone(),
        ] {
            let raw = request_with(
                method.as_bytes(),
                target.as_bytes(),
                &[b"Content-Length: 0"],
            );
            let r = fx.exchange(&raw).await;
            t.check(
                "methods",
                &format!("{method} {}", short(&target)),
                &r,
                status(&[405]),
            );
            if r.status == Some(405) && r.header("allow").is_none() {
                t.fail(format!("{method} {target}: 405 without an Allow header"));
            }
        }
    }
    {
        let raw = b"POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello";
        let r = fx.exchange(raw).await;
        t.check("methods", "POST with a body", &r, status(&[405]));
        let raw = b"POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let r = fx.exchange(raw).await;
        t.check(
            "methods",
            "POST with a broken chunked body",
            &r,
            status_or_closed(&[400, 405]),
        );
        let raw = b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n";
        let r = fx.exchange(raw).await;
        t.check("methods", "CONNECT", &r, status_or_closed(&[400, 405]));
    }
    // HEAD and GET still work after all that (controls, not bad inputs).
    let r = fx
        .exchange(&request_with(b"HEAD", fx.download_path.as_bytes(), &[]))
        .await;
    assert_eq!(r.status, Some(200), "HEAD of the package: {r:?}");
    let r = fx.exchange(&get(fx.download_path.as_bytes())).await;
    assert_eq!(r.status, Some(200), "GET of the package: {r:?}");
    assert!(r.body == fx.package, "GET of the package: wrong bytes");

    fx.assert_alive().await;
    t.finish(&fx);
}

fn short(s: &str) -> String {
    if s.len() > 60 {
        format!("{}...", &s[..60])
    } else {
        s.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Range headers: 206 with the right bytes, 416, or 200 with the whole package
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_range_headers_never_give_wrong_bytes() {
    let fx = setup("  max_request_header_bytes = \"16KiB\"", 200 * 1024).await;
    let size = fx.package.len() as u64;
    let mut t = Tally::new("range_headers");

    let thousand: String = (0..1000)
        .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
        .collect::<Vec<_>>()
        .join(",");
    let overlapping: String = (0..200).map(|_| "0-").collect::<Vec<_>>().join(",");
    let cases: Vec<(&str, String, &[u16])> = vec![
        ("reversed", "bytes=9-1".into(), &[200, 416]),
        ("letters", "bytes=abc".into(), &[200, 416]),
        ("letters in a range", "bytes=a-b".into(), &[200, 416]),
        ("hex numbers", "bytes=0x10-0x20".into(), &[200, 416]),
        ("plus sign", "bytes=+1-2".into(), &[200, 416]),
        ("double dash", "bytes=0--1".into(), &[200, 416]),
        ("three parts", "bytes=1-2-3".into(), &[200, 416]),
        ("only a dash", "bytes=-".into(), &[200, 416]),
        ("empty set", "bytes=".into(), &[200, 416]),
        ("no equals sign", "bytes".into(), &[200, 416]),
        ("empty header", "".into(), &[200, 416]),
        ("other unit", "items=0-1".into(), &[200, 416]),
        (
            "parameter after the range",
            "bytes=0-1;x=y".into(),
            &[200, 206, 416],
        ),
        ("zero suffix", "bytes=-0".into(), &[416]),
        (
            "end past u64",
            "bytes=0-99999999999999999999999999".into(),
            &[200, 206, 416],
        ),
        (
            "start past u64",
            "bytes=99999999999999999999999999-".into(),
            &[200, 416],
        ),
        (
            "start = u64::MAX",
            format!("bytes={}-{}", u64::MAX, u64::MAX),
            &[416],
        ),
        (
            "suffix past u64",
            "bytes=-99999999999999999999999999".into(),
            &[200, 206, 416],
        ),
        (
            "suffix = u64::MAX",
            format!("bytes=-{}", u64::MAX),
            &[200, 206],
        ),
        ("start at the size", format!("bytes={size}-"), &[416]),
        (
            "start past the size",
            format!("bytes={}-{}", size + 5, size + 10),
            &[416],
        ),
        ("1000 ranges", format!("bytes={thousand}"), &[200, 206, 416]),
        (
            "200 overlapping open ranges",
            format!("bytes={overlapping}"),
            &[200, 206, 416],
        ),
        ("two ranges", "bytes=0-0,-1".into(), &[200, 206, 416]),
        ("spaces", "bytes = 0 - 1".into(), &[200, 206, 416]),
        ("upper-case unit", "BYTES=0-1".into(), &[200, 206]),
        (
            "non-ASCII digits",
            "bytes=\u{661}-\u{662}".into(),
            &[200, 416],
        ),
        (
            "10000 zeros",
            format!("bytes={}-1", "0".repeat(10_000)),
            &[200, 206, 416],
        ),
    ];
    for (what, value, allowed) in &cases {
        let header = format!("Range: {value}");
        let raw = request_with(b"GET", fx.download_path.as_bytes(), &[header.as_bytes()]);
        let r = fx.exchange(&raw).await;
        t.check("Range", what, &r, status(allowed));
        check_range_reply(&mut t, what, &r, &fx.package);
    }

    // Valid ranges (controls): exactly the bytes asked for.
    for (value, start, end) in [
        ("bytes=0-0".to_owned(), 0, 0),
        ("bytes=-1".to_owned(), size - 1, size - 1),
        (format!("bytes={}-", size - 1), size - 1, size - 1),
        (format!("bytes=100-{}", size + 1000), 100, size - 1),
        (format!("bytes=-{}", size * 2), 0, size - 1),
        ("bytes=1000-1999".to_owned(), 1000, 1999),
    ] {
        let header = format!("Range: {value}");
        let raw = request_with(b"GET", fx.download_path.as_bytes(), &[header.as_bytes()]);
        let r = fx.exchange(&raw).await;
        let expected = format!("bytes {start}-{end}/{size}");
        if r.status != Some(206)
            || r.header("content-range") != Some(expected.as_str())
            || r.body != fx.package[start as usize..=end as usize]
        {
            t.fail(format!(
                "valid {value}: expected 206 {expected} with those bytes, got {} {:?} ({} bytes)",
                r.describe(),
                r.header("content-range"),
                r.body.len()
            ));
        }
    }
    // If-Range with another validator: the whole package.
    let raw = request_with(
        b"GET",
        fx.download_path.as_bytes(),
        &[b"Range: bytes=0-9", b"If-Range: \"sha256:0000\""],
    );
    let r = fx.exchange(&raw).await;
    if r.status != Some(200) || r.body != fx.package {
        t.fail(format!(
            "Range with a non-matching If-Range: expected 200 and the whole package, got {}",
            r.describe()
        ));
    }

    fx.assert_alive().await;
    t.finish(&fx);
}

/// 200: exactly the package; 206: one range, exactly those bytes; 416: `bytes */SIZE`.
fn check_range_reply(t: &mut Tally, what: &str, r: &Reply, package: &[u8]) {
    let size = package.len();
    match r.status {
        Some(200) if r.body != package => {
            t.fail(format!(
                "Range {what}: 200 with {} bytes that are not the package",
                r.body.len()
            ));
        }
        Some(206) => {
            let cr = r.header("content-range").unwrap_or("");
            match parse_content_range::<usize>(cr) {
                Some((a, b, total)) if a <= b && b < size && total == size.to_string() => {
                    if r.body != package[a..=b] {
                        t.fail(format!("Range {what}: 206 {cr} with the wrong bytes"));
                    }
                }
                _ => t.fail(format!(
                    "Range {what}: 206 with an unusable Content-Range {cr:?} (content-type {:?})",
                    r.header("content-type")
                )),
            }
        }
        Some(416) => {
            let expected = format!("bytes */{size}");
            if r.header("content-range") != Some(expected.as_str()) {
                t.fail(format!(
                    "Range {what}: 416 with Content-Range {:?}, expected {expected:?}",
                    r.header("content-range")
                ));
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Slow and silent clients: header_read_timeout
// ---------------------------------------------------------------------------------------------

/// What became of a connection that sends `bytes` one at a time, `interval` apart.
struct Dripped {
    /// Time from the end of the TLS handshake to the server closing the connection.
    closed_after: Option<Duration>,
    received: Vec<u8>,
    bytes_sent: usize,
}

async fn drip(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    bytes: &'static [u8],
    interval: Duration,
    limit: Duration,
) -> Dripped {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(server_name(), tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .expect("TLS handshake");
    let started = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent2 = sent.clone();
    let writer = tokio::spawn(async move {
        for b in bytes {
            if wr.write_all(std::slice::from_ref(b)).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            sent2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(interval).await;
        }
        // Everything sent: keep the write half open, silent.
        std::future::pending::<()>().await;
    });
    let mut received = Vec::new();
    let mut buf = vec![0u8; 4096];
    let closed_after = loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, rd.read(&mut buf)).await {
            Err(_) => break None,
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    };
    writer.abort();
    Dripped {
        closed_after,
        received,
        bytes_sent: sent.load(std::sync::atomic::Ordering::Relaxed),
    }
}

const SLOW_REQUEST: &[u8] =
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nX-Padding: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_dropped() {
    let header_read_timeout = Duration::from_secs(2);
    let fx = setup("  header_read_timeout = \"2s\"", 16 * 1024).await;
    let mut t = Tally::new("slow_and_silent");
    // Handshake (bounded by header_read_timeout too) + head + scheduling slack.
    let bound = header_read_timeout + Duration::from_secs(3);
    let observe = bound + Duration::from_secs(3);
    let h1 = fx.connector.clone();
    let h2 = tls_connector_alpn(&fx.cert, b"h2");

    // All at once, each in its own task: slowloris heads, and connections that go silent
    // after the TLS handshake.
    let mut cases: Vec<(&'static str, String, tokio::task::JoinHandle<Dripped>)> = Vec::new();
    for i in 0..30 {
        let interval = if i % 2 == 0 {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(400)
        };
        let (connector, port) = (h1.clone(), fx.port);
        cases.push((
            "slowloris",
            format!("request head dripped one byte every {interval:?}"),
            tokio::spawn(
                async move { drip(&connector, port, SLOW_REQUEST, interval, observe).await },
            ),
        ));
    }
    let silent: [(&str, &tokio_rustls::TlsConnector, &'static [u8]); 4] = [
        ("TLS handshake, then nothing", &h1, b""),
        ("TLS handshake with ALPN h2, then nothing", &h2, b""),
        (
            "the first 10 bytes of the HTTP/2 preface, then nothing",
            &h1,
            b"PRI * HTTP",
        ),
        (
            "half a request head, then nothing",
            &h1,
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        ),
    ];
    for (what, connector, bytes) in silent {
        let (connector, port) = (connector.clone(), fx.port);
        cases.push((
            "silent connection",
            what.to_owned(),
            tokio::spawn(
                async move { drip(&connector, port, bytes, Duration::ZERO, observe).await },
            ),
        ));
    }
    // No TLS handshake at all: TCP connect and silence, half a ClientHello, plain HTTP.
    let mut raw_cases = Vec::new();
    for (what, bytes) in [
        ("TCP connect, no TLS handshake", &b""[..]),
        (
            "the first bytes of a ClientHello, then nothing",
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..],
        ),
        (
            "plain-text HTTP to the TLS port",
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
    ] {
        let port = fx.port;
        raw_cases.push((
            what,
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tcp = TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                let _ = tcp.write_all(bytes).await;
                let mut buf = vec![0u8; 1024];
                loop {
                    let left = observe.saturating_sub(started.elapsed());
                    match tokio::time::timeout(left, tcp.read(&mut buf)).await {
                        Err(_) => break None,
                        Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
                        Ok(Ok(_)) => {}
                    }
                }
            }),
        ));
    }

    // Meanwhile, others are served promptly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let r = fx.exchange(&get(b"/healthz")).await;
        assert_eq!(r.status, Some(200), "/healthz during the slowloris: {r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "/healthz took {:?} during the slowloris",
            started.elapsed()
        );
        let d = download_hashed(
            &fx.client,
            &format!("{}{}", fx.server.base_url(), &fx.download_path[1..]),
            &[],
        )
        .await;
        assert!(
            d.is_exactly(&fx.package),
            "a download during the slowloris: {d:?}"
        );
    }

    for (kind, what, task) in cases {
        let d = task.await.expect("client task");
        t.tried += 1;
        t.kinds.insert(kind);
        check_dropped(&mut t, &what, &d, bound);
        eprintln!(
            "  [{kind}] {what}: {} byte(s) sent, closed after {:?}",
            d.bytes_sent, d.closed_after
        );
    }
    for (what, task) in raw_cases {
        let closed_after = task.await.expect("client task");
        t.tried += 1;
        t.kinds.insert("no TLS handshake");
        eprintln!("  [no TLS handshake] {what}: closed after {closed_after:?}");
        match closed_after {
            Some(after) if after <= bound => {}
            other => t.fail(format!(
                "{what}: expected the server to close within {bound:?}, got {other:?}"
            )),
        }
    }

    // A slow client within the limit is served (the timeout does not cut legitimate ones).
    let d = drip(
        &fx.connector,
        fx.port,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        Duration::from_millis(15),
        Duration::from_secs(10),
    )
    .await;
    let head = String::from_utf8_lossy(&d.received).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "a request head sent over ~1 s (under header_read_timeout) was not served: {head:?} (closed after {:?})",
        d.closed_after
    );

    fx.assert_alive().await;
    t.finish(&fx);
}

/// The server closed the connection within `bound`, answering nothing or a 4xx (408), never
/// a 5xx and never a success for the unfinished request.
fn check_dropped(t: &mut Tally, what: &str, d: &Dripped, bound: Duration) {
    match d.closed_after {
        Some(after) if after <= bound => {}
        Some(after) => t.fail(format!(
            "{what}: closed only after {after:?}, expected within {bound:?}"
        )),
        None => t.fail(format!(
            "{what}: still open after the observation window; expected a close within {bound:?}"
        )),
    }
    if !d.received.is_empty() {
        let text = String::from_utf8_lossy(&d.received);
        let status: Option<u16> = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok());
        match status {
            Some(s) if (400..500).contains(&s) => {}
            Some(s) if s >= 500 => {
                t.server_errors.push(format!("{what}: {s}"));
                t.fail(format!("{what}: answered {s}"));
            }
            _ => t.fail(format!("{what}: answered {:?}", short(&text))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A client that starts a download and never reads: idle_timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_after_idle_timeout() {
    let idle_timeout = Duration::from_secs(3);
    // Larger than every socket buffer between us and the server, so the server's writes stall.
    let fx = setup("  idle_timeout = \"3s\"", 16 * 1024 * 1024).await;
    let mut t = Tally::new("idle_timeout");
    assert_eq!(fx.in_flight_downloads().await, 0);

    // A tiny receive buffer, a GET for the 16 MiB package, the response head read, then no more.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket
        .connect(([127, 0, 0, 1], fx.port).into())
        .await
        .expect("connect");
    let mut tls = fx
        .connector
        .connect(server_name(), tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(&request_with(
        b"GET",
        fx.download_path.as_bytes(),
        &[b"Connection: keep-alive"],
    ))
    .await
    .expect("send the request");
    tls.flush().await.expect("flush");
    let mut received = Vec::new();
    let mut small = [0u8; 512];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut small))
            .await
            .expect("response head within 10 s")
            .expect("read the response head");
        assert!(n > 0, "closed before the response head");
        received.extend_from_slice(&small[..n]);
        if let Some(p) = find(&received, b"\r\n\r\n") {
            break p + 4;
        }
    };
    let stalled_at = Instant::now();
    let (status, _) = parse_head(&received[..head_end]).expect("an HTTP response head");
    assert_eq!(status, 200, "the stalled download's status");
    t.tried += 1;
    t.kinds.insert("reader that stops reading");

    // The download is in flight, and others are served meanwhile.
    assert_eq!(
        fx.in_flight_downloads().await,
        1,
        "the stalled download is not in flight"
    );
    let url = format!("{}{}", fx.server.base_url(), &fx.download_path[1..]);
    let d = download_hashed(&fx.client, &url, &[]).await;
    assert!(
        d.is_exactly(&fx.package),
        "another client's download meanwhile: {d:?}"
    );
    fx.client
        .get(format!("{}healthz", fx.server.base_url()))
        .send()
        .await
        .expect("/healthz meanwhile")
        .error_for_status()
        .expect("/healthz meanwhile");
    let still = fx.in_flight_downloads().await;
    let checked_at = stalled_at.elapsed();
    if checked_at < idle_timeout - Duration::from_millis(500) && still != 1 {
        t.fail(format!(
            "the stalled download ended after only {checked_at:?} (idle_timeout is {idle_timeout:?})"
        ));
    }

    // The server gives up on it once nothing has moved for idle_timeout.
    let bound = idle_timeout + Duration::from_secs(4);
    let mut dropped_after = None;
    while stalled_at.elapsed() < bound + Duration::from_secs(5) {
        if fx.in_flight_downloads().await == 0 {
            dropped_after = Some(stalled_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("  [idle] stalled download dropped after {dropped_after:?}");
    match dropped_after {
        Some(after) if after >= idle_timeout - Duration::from_millis(500) && after <= bound => {}
        other => t.fail(format!(
            "a download whose client stopped reading: expected it dropped between {:?} and {bound:?} after the stall, got {other:?}",
            idle_timeout - Duration::from_millis(500)
        )),
    }

    // Reading now gets what was buffered, then the close: a correct prefix, never the whole
    // package (that would mean the server was still waiting on us).
    let mut body = received[head_end..].to_vec();
    let read_started = Instant::now();
    let ended = read_until_closed(&mut tls, &mut body, Duration::from_secs(10)).await;
    eprintln!(
        "  [idle] after the stall: read {} more bytes of {} in {:?}, then {ended}",
        body.len(),
        fx.package.len(),
        read_started.elapsed()
    );
    if ended == "timeout" {
        t.fail("the stalled connection was neither closed nor continued".to_owned());
    }
    if body.len() >= fx.package.len() {
        t.fail(format!(
            "the stalled connection delivered the whole package ({} bytes) after {:?}: it was never closed",
            body.len(),
            stalled_at.elapsed()
        ));
    }
    if body[..] != fx.package[..body.len().min(fx.package.len())] {
        t.fail("the stalled connection delivered wrong bytes".to_owned());
    }

    // A keep-alive connection left silent after a complete exchange is closed too.
    let mut tls = fx.tls().await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    let started = Instant::now();
    let closed_after = match read_until_closed(&mut tls, &mut got, Duration::from_secs(15)).await {
        "timeout" => None,
        _ => Some(started.elapsed()),
    };
    t.tried += 1;
    t.kinds.insert("idle keep-alive connection");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "keep-alive /healthz: {:?}",
        String::from_utf8_lossy(&got)
    );
    eprintln!("  [idle] silent keep-alive connection closed after {closed_after:?}");
    match closed_after {
        Some(after) if after <= idle_timeout + Duration::from_secs(3) => {}
        other => t.fail(format!(
            "a silent keep-alive connection: expected a close within {:?}, got {other:?}",
            idle_timeout + Duration::from_secs(3)
        )),
    }

    fx.assert_alive().await;
    t.finish(&fx);
}

// ---------------------------------------------------------------------------------------------
// max_connections
// ---------------------------------------------------------------------------------------------

/// When a connection's TLS handshake completed and when the server closed it.
type ConnEvents = (Option<Duration>, Option<Duration>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_bounds_what_is_served_at_once() {
    let max = 20usize;
    let fx = setup(
        "  max_connections = 20\n  header_read_timeout = \"2s\"\n  idle_timeout = \"3s\"",
        16 * 1024,
    )
    .await;
    let mut t = Tally::new("max_connections");
    let started = Instant::now();
    // (handshake done, closed by the server), as offsets from `started`.
    let events: Arc<Mutex<Vec<ConnEvents>>> = Arc::new(Mutex::new(vec![(None, None); 40]));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let connector = fx.connector.clone();
        let port = fx.port;
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::time::timeout(
                Duration::from_secs(5),
                TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            .expect("TCP connect within 5 s (kernel backlog)")
            .expect("TCP connect");
            let Ok(Ok(mut tls)) = tokio::time::timeout(
                Duration::from_secs(40),
                connector.connect(server_name(), tcp),
            )
            .await
            else {
                return;
            };
            events.lock().unwrap()[i].0 = Some(started.elapsed());
            // Idle: wait for the server to close it.
            let mut buf = [0u8; 256];
            loop {
                match tokio::time::timeout(Duration::from_secs(40), tls.read(&mut buf)).await {
                    Err(_) => return,
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {}
                }
            }
            events.lock().unwrap()[i].1 = Some(started.elapsed());
        }));
    }
    // Before any idle connection can have been dropped (header_read_timeout is 2 s), no more
    // than max_connections have been taken on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let early: usize = events
        .lock()
        .unwrap()
        .iter()
        .filter(|(h, _)| h.is_some())
        .count();
    t.tried += 40;
    t.kinds.insert("idle connections beyond max_connections");
    eprintln!("  [max_connections] handshakes completed in the first 1.5 s: {early} of 40");
    if early > max {
        t.fail(format!(
            "{early} connections were taken on at once, max_connections is {max}"
        ));
    }
    if early == 0 {
        t.fail("no connection was taken on in 1.5 s".to_owned());
    }

    // A 41st client is served once idle ones are dropped.
    let client = https_client(&fx.cert);
    let url = format!("{}healthz", fx.server.base_url());
    let asked = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(25), client.get(&url).send()).await;
    match got {
        Ok(Ok(resp)) if resp.status() == 200 => {
            eprintln!(
                "  [max_connections] the 41st client was served after {:?}",
                asked.elapsed()
            )
        }
        Ok(Ok(resp)) => t.fail(format!("the 41st client got {}", resp.status())),
        Ok(Err(e)) => t.fail(format!("the 41st client failed: {e:?}")),
        Err(_) => t.fail("the 41st client was not served within 25 s".to_owned()),
    }

    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(45), task).await;
    }
    let events = events.lock().unwrap().clone();
    let served = events.iter().filter(|(h, _)| h.is_some()).count();
    let closed = events.iter().filter(|(_, c)| c.is_some()).count();
    // The most connections open (handshake done, not yet closed) at any handshake instant.
    let peak = events
        .iter()
        .filter_map(|(h, _)| *h)
        .map(|at| {
            events
                .iter()
                .filter(|(h, c)| h.is_some_and(|h| h <= at) && c.is_none_or(|c| c > at))
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "  [max_connections] of 40 idle connections: {served} taken on, {closed} closed by the server; peak open at once (as observed by the clients) {peak}"
    );
    if served != 40 || closed != 40 {
        t.fail(format!(
            "every idle connection should eventually be taken on and then dropped: {served} taken on, {closed} closed"
        ));
    }

    fx.assert_alive().await;
    t.finish(&fx);
}
