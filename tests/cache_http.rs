//! HTTP semantics of package downloads (Range, HEAD, ETag, conditional requests, caching
//! headers), each checked on a cold package (the first request for that digest since the
//! server started, nothing cached) and on the same package once it is cached.

mod common;

use std::time::Duration;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const PLATFORM: &str = "linux_amd64";

#[derive(Debug, Clone, Copy)]
enum Case {
    FirstTen,
    LastFive,
    FromTen,
    Unsatisfiable,
    MultiRange,
    Head,
    IfNoneMatch,
    IfNoneMatchOther,
    IfRangeWrong,
    IfRangeRight,
    Plain,
}

const CASES: &[Case] = &[
    Case::FirstTen,
    Case::LastFive,
    Case::FromTen,
    Case::Unsatisfiable,
    Case::MultiRange,
    Case::Head,
    Case::IfNoneMatch,
    Case::IfNoneMatchOther,
    Case::IfRangeWrong,
    Case::IfRangeRight,
    Case::Plain,
];

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, String)],
) -> Answer {
    let mut req = client.request(method.clone(), url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url} {headers:?}: {e:?}"));
    let status = resp.status().as_u16();
    let headers_out = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{method} {url} {headers:?}: body: {e:?}"))
        .to_vec();
    Answer {
        status,
        headers: headers_out,
        body,
    }
}

/// Runs one case against `url` (the package `zip`) and checks the answer.
async fn check(
    client: &reqwest::Client,
    url: &str,
    zip: &[u8],
    case: Case,
    temperature: &str,
    private: bool,
) {
    let size = zip.len();
    let etag = format!("\"sha256:{}\"", sha256_hex(zip));
    let wrong_etag = format!("\"sha256:{}\"", "0".repeat(64));
    let range = |r: &str| ("range", r.to_owned());
    let (method, headers) = match case {
        Case::FirstTen => (reqwest::Method::GET, vec![range("bytes=0-9")]),
        Case::LastFive => (reqwest::Method::GET, vec![range("bytes=-5")]),
        Case::FromTen => (reqwest::Method::GET, vec![range("bytes=10-")]),
        Case::Unsatisfiable => (reqwest::Method::GET, vec![range("bytes=999999999-")]),
        Case::MultiRange => (reqwest::Method::GET, vec![range("bytes=0-1,5-6")]),
        Case::Head => (reqwest::Method::HEAD, vec![]),
        Case::IfNoneMatch => (reqwest::Method::GET, vec![("if-none-match", etag.clone())]),
        Case::IfNoneMatchOther => (
            reqwest::Method::GET,
            vec![("if-none-match", wrong_etag.clone())],
        ),
        Case::IfRangeWrong => (
            reqwest::Method::GET,
            vec![range("bytes=0-9"), ("if-range", wrong_etag.clone())],
        ),
        Case::IfRangeRight => (
            reqwest::Method::GET,
            vec![range("bytes=0-9"), ("if-range", etag.clone())],
        ),
        Case::Plain => (reqwest::Method::GET, vec![]),
    };
    let a = request(client, method.clone(), url, &headers).await;
    let what = format!(
        "{temperature} {method} {headers:?} ({case:?}): got {} headers {:?}",
        a.status, a.headers
    );
    // (status, Content-Range, body)
    let (status, content_range, body): (u16, Option<String>, &[u8]) = match case {
        Case::FirstTen | Case::IfRangeRight => (206, Some(format!("bytes 0-9/{size}")), &zip[..10]),
        Case::LastFive => (
            206,
            Some(format!("bytes {}-{}/{size}", size - 5, size - 1)),
            &zip[size - 5..],
        ),
        Case::FromTen => (
            206,
            Some(format!("bytes 10-{}/{size}", size - 1)),
            &zip[10..],
        ),
        Case::Unsatisfiable => (416, Some(format!("bytes */{size}")), &[]),
        Case::MultiRange | Case::IfRangeWrong | Case::Plain | Case::IfNoneMatchOther => {
            (200, None, zip)
        }
        Case::Head => (200, None, &[]),
        Case::IfNoneMatch => (304, None, &[]),
    };
    assert_eq!(a.status, status, "{what}");
    assert_eq!(
        a.header("content-range"),
        content_range.as_deref(),
        "{what}"
    );
    assert!(
        a.body == body,
        "{what}: body of {} bytes, expected {} bytes{}",
        a.body.len(),
        body.len(),
        if a.body.len() == body.len() {
            " (different content)"
        } else {
            ""
        }
    );
    assert_eq!(a.header("etag"), Some(etag.as_str()), "{what}");
    if matches!(case, Case::Unsatisfiable | Case::IfNoneMatch) {
        return;
    }
    let expected_len = match case {
        Case::Head => size,
        _ => body.len(),
    };
    assert_eq!(
        a.header("content-length"),
        Some(expected_len.to_string().as_str()),
        "{what}"
    );
    assert_eq!(a.header("accept-ranges"), Some("bytes"), "{what}");
    assert_eq!(a.header("content-type"), Some("application/zip"), "{what}");
    let cc = a.header("cache-control").unwrap_or("");
    assert!(cc.contains("immutable"), "{what}: Cache-Control {cc:?}");
    let scope = if private { "private" } else { "public" };
    assert!(
        cc.split(',').any(|d| d.trim() == scope),
        "{what}: Cache-Control {cc:?} is not {scope}"
    );
}

/// Whether the package with sha256 `hex` is among the files in the cache directory `cache`.
fn is_cached(cache: &std::path::Path, hex: &str) -> bool {
    cache_blob_files(cache).iter().any(|(h, _)| h == hex)
}

/// How the client reaches the server.
#[derive(Debug, Clone, Copy)]
enum Transport {
    /// HTTPS, HTTP/2 by ALPN.
    Https,
    HttpsHttp1,
    /// Plain HTTP/1.1: cached packages go out with sendfile.
    PlainHttp,
}

fn fixture(transport: Transport, proxy_packages: bool, max_size: &str) -> CacheFixture {
    match transport {
        Transport::PlainHttp => CacheFixture::start_plain_http(proxy_packages, max_size),
        Transport::Https | Transport::HttpsHttp1 => CacheFixture::start(proxy_packages, max_size),
    }
}

async fn every_case_cold_and_warm(proxy_packages: bool, transport: Transport) {
    let fx = fixture(transport, proxy_packages, "1GiB");
    let client = match transport {
        Transport::HttpsHttp1 => https_client_http1(&fx.cert),
        Transport::Https | Transport::PlainHttp => fx.client.clone(),
    };
    // One package (digest) per case, so every case meets a cold package first.
    let mut packages = Vec::new();
    for (i, _) in CASES.iter().enumerate() {
        let version = format!("1.0.{i}");
        let zip = random_provider_zip("foo", &version, 100_000 + i, 100 + i as u64);
        push_seed_layout(
            &fx.registry,
            FOO_REPO,
            &version,
            &[(PLATFORM, zip.clone())],
            None,
        )
        .await;
        packages.push((version, zip));
    }
    let cache = fx.cache_dir().to_owned();
    for (case, (version, zip)) in CASES.iter().zip(&packages) {
        let url = fx.archive_url(FOO, version, PLATFORM).await;
        let hex = sha256_hex(zip);
        assert!(
            !is_cached(&cache, &hex),
            "{case:?}: package already cached before its first request"
        );
        check(&client, &url, zip, *case, "cold", proxy_packages).await;
        // Make sure it is cached (a 304 or HEAD alone need not bring it in), then again warm.
        let full = download_hashed(&fx.client, &url, &[]).await;
        assert!(full.is_exactly(zip), "{case:?}: full download {full:?}");
        assert!(
            wait_until(Duration::from_secs(5), || is_cached(&cache, &hex)),
            "{case:?}: package not cached after a full download"
        );
        check(&client, &url, zip, *case, "warm", proxy_packages).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_head_and_validators_on_cold_and_warm_packages() {
    every_case_cold_and_warm(false, Transport::Https).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_head_and_validators_over_http1() {
    every_case_cold_and_warm(false, Transport::HttpsHttp1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_head_and_validators_over_plain_http() {
    every_case_cold_and_warm(false, Transport::PlainHttp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_head_and_validators_with_proxy_packages_are_private() {
    every_case_cold_and_warm(true, Transport::Https).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_version_answer_gains_the_h1_hash_once_the_package_is_cached() {
    // VERSION.json asked repeatedly (the second answer comes ready, without lookups) offers
    // the zh: hash only; once the package is in the cache the very next answer must offer
    // its h1: too (the store generation is one of what a ready answer was built from).
    let fx = CacheFixture::start(false, "1GiB");
    let zip = random_provider_zip("foo", "1.0.0", 50_000, 7);
    push_seed_layout(
        &fx.registry,
        FOO_REPO,
        "1.0.0",
        &[(PLATFORM, zip.clone())],
        None,
    )
    .await;
    let mirror = fx.server.mirror_url();
    for _ in 0..3 {
        let archives = fetch_archives(&fx.client, &mirror, FOO, "1.0.0", None).await;
        let hashes = &archives[PLATFORM].hashes;
        assert!(hashes.contains(&zh(&zip)), "{hashes:?}");
        assert!(
            !hashes.contains(&h1(&zip)),
            "h1 before the package was cached: {hashes:?}"
        );
    }
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    let got = download_hashed(&fx.client, &url, &[]).await;
    assert!(got.is_exactly(&zip), "{got:?}");
    let (cache, hex) = (fx.cache_dir().to_owned(), sha256_hex(&zip));
    assert!(
        wait_until(Duration::from_secs(5), || is_cached(&cache, &hex)),
        "package not cached after a full download"
    );
    // The file is in place a moment before its index entry (with the h1:) is: allow that
    // moment, far less than the minute a ready answer may otherwise be reused.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let archives = fetch_archives(&fx.client, &mirror, FOO, "1.0.0", None).await;
        if archives[PLATFORM].hashes.contains(&h1(&zip)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "5 s after caching the answer still lacks the h1: hash: {:?}",
            archives[PLATFORM].hashes
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let archives = fetch_archives(&fx.client, &mirror, FOO, "1.0.0", None).await;
        let hashes = &archives[PLATFORM].hashes;
        assert!(
            hashes.contains(&h1(&zip)) && hashes.contains(&zh(&zip)),
            "a later answer lacks a hash: {hashes:?}"
        );
    }
}

/// A random package of `mib` MiB published as `version` and brought into the cache by one
/// full download; returns it and its download URL.
async fn cached_package(
    fx: &CacheFixture,
    version: &str,
    mib: usize,
    seed: u64,
) -> (Vec<u8>, String) {
    let zip = random_provider_zip("foo", version, mib * 1024 * 1024, seed);
    push_seed_layout(
        &fx.registry,
        FOO_REPO,
        version,
        &[(PLATFORM, zip.clone())],
        None,
    )
    .await;
    let url = fx.archive_url(FOO, version, PLATFORM).await;
    let first = download_hashed(&fx.client, &url, &[]).await;
    assert!(first.is_exactly(&zip), "first download: {first:?}");
    let (cache, hex) = (fx.cache_dir().to_owned(), sha256_hex(&zip));
    assert!(
        wait_until(Duration::from_secs(10), || is_cached(&cache, &hex)),
        "package not cached after a full download"
    );
    (zip, url)
}

/// The request target (path and query) and `host:port` of `url`, for raw requests.
fn target_and_host(url: &str) -> (String, String) {
    let parsed = url::Url::parse(url).unwrap();
    let target = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let host = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
    (target, host)
}

/// Cached packages over plain HTTP go out with sendfile, in frames of 8 MiB: ranges across
/// frame boundaries, other answers in between on the same kept-alive connection, and
/// pipelined requests must all get exactly the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_cached_packages_over_plain_http_keep_alive_and_pipelining() {
    const MIB: usize = 1024 * 1024;
    let fx = CacheFixture::start_plain_http(false, "1GiB");
    let (zip, url) = cached_package(&fx, "2.0.0", 20, 7).await;
    assert!(url.starts_with("http://"), "{url}");
    let size = zip.len();
    let frame = 8 * MIB;
    // One client, so one kept-alive connection, with answers of every kind in turn.
    let client = &fx.client;
    let index = format!(
        "{}registry.terraform.io/acme/foo/index.json",
        fx.server.mirror_url()
    );
    let ranges: &[(usize, usize)] = &[
        (frame - 1000, frame + 1000),
        (100, 2 * frame + 300),
        (size - 10 * MIB, size - 1),
        (0, 0),
        (frame, frame),
    ];
    for round in 0..2 {
        let full = download_hashed(client, &url, &[]).await;
        assert!(full.is_exactly(&zip), "round {round}: full {full:?}");
        for &(a, b) in ranges {
            let got = request(
                client,
                reqwest::Method::GET,
                &url,
                &[("range", format!("bytes={a}-{b}"))],
            )
            .await;
            assert_eq!(got.status, 206, "round {round} {a}-{b}");
            assert!(
                got.body == zip[a..=b],
                "round {round}: range {a}-{b}: {} bytes, expected {}",
                got.body.len(),
                b + 1 - a
            );
        }
        let head = request(client, reqwest::Method::HEAD, &url, &[]).await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        let listing = request(client, reqwest::Method::GET, &index, &[]).await;
        assert_eq!(
            listing.status,
            200,
            "{}",
            String::from_utf8_lossy(&listing.body)
        );
        assert!(serde_json::from_slice::<serde_json::Value>(&listing.body).is_ok());
    }

    // Every whole download is logged as complete (hyper stops polling a body once its
    // Content-Length is written, so the body itself never says it ended).
    let stderr = fx.server.stderr();
    let whole = format!("bytes={size} ");
    let logged: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("request") && l.contains(&whole) && l.contains("status=200"))
        .collect();
    assert!(
        logged.len() >= 3,
        "access lines of whole downloads: {logged:#?}"
    );
    assert!(
        logged.iter().all(|l| l.contains("complete=true")),
        "whole downloads logged as incomplete: {logged:#?}"
    );

    // HTTP/2 without TLS (prior knowledge) is not sent with sendfile; still the same bytes.
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let over_h2c = h2c.get(&url).send().await.unwrap();
    assert_eq!(over_h2c.version(), reqwest::Version::HTTP_2);
    assert!(over_h2c.bytes().await.unwrap() == zip, "h2c body differs");

    // Pipelined: three requests written at once, answered in order on one connection.
    let (target, host) = target_and_host(&url);
    let head = |extra: &str| format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
    let wire = format!(
        "{}{}{}",
        head(""),
        head(&format!("Range: bytes={}-{}\r\n", frame - 5, frame + 5)),
        head("Connection: close\r\n")
    );
    let answers = tokio::time::timeout(Duration::from_secs(60), async {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        tcp.write_all(wire.as_bytes()).await.unwrap();
        let mut r = tokio::io::BufReader::new(tcp);
        let mut answers = Vec::new();
        for _ in 0..3 {
            let mut status = String::new();
            r.read_line(&mut status).await.unwrap();
            let mut len = None;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse::<usize>().ok();
                    }
                }
            }
            let mut body = vec![0u8; len.expect("a content-length")];
            r.read_exact(&mut body).await.unwrap();
            answers.push((status.trim().to_owned(), body));
        }
        answers
    })
    .await
    .expect("pipelined answers within 60 s");
    assert_eq!(answers[0].0, "HTTP/1.1 200 OK");
    assert!(answers[0].1 == zip, "pipelined full body differs");
    assert_eq!(answers[1].0, "HTTP/1.1 206 Partial Content");
    assert!(answers[1].1 == zip[frame - 5..=frame + 5]);
    assert_eq!(answers[2].0, "HTTP/1.1 200 OK");
    assert!(answers[2].1 == zip, "pipelined last body differs");
}

/// Hostile and careless clients of the sendfile path: one that stops reading is dropped
/// after `idle_timeout` having received only correct bytes, and clients that vanish mid-way
/// leave the server serving everyone else exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_clients_that_stop_reading_or_vanish_get_correct_prefixes_and_harm_nobody() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MIB: usize = 1024 * 1024;
    let idle_timeout = Duration::from_secs(3);
    let fx = CacheFixture::start_with(
        false,
        false,
        "1GiB",
        "\nlimits {\n  idle_timeout = \"3s\"\n}\n",
    );
    let (zip, url) = cached_package(&fx, "3.0.0", 16, 11).await;
    let (target, host) = target_and_host(&url);
    let addr: std::net::SocketAddr = host.parse().unwrap();
    let request = |range: Option<&str>| {
        let range = range.map_or(String::new(), |r| format!("Range: bytes={r}\r\n"));
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{range}\r\n")
    };
    /// Reads a response head; returns it and the body bytes that came with it.
    async fn read_head(tcp: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
                .await
                .expect("a response head within 10 s")
                .expect("read");
            assert!(n > 0, "closed before the response head");
            got.extend_from_slice(&buf[..n]);
            if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..p]).into_owned();
                return (head, got[p + 4..].to_vec());
            }
        }
    }

    // A reader that stops: a tiny receive buffer, the head read, then nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    stalled.write_all(request(None).as_bytes()).await.unwrap();
    let (head, mut body) = read_head(&mut stalled).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let stalled_at = std::time::Instant::now();

    // Clients that vanish: whole downloads and ranges across frames, dropped mid-way.
    for i in 0..8 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let range = (i % 2 == 1).then(|| format!("{}-", 8 * MIB - 1000));
        tcp.write_all(request(range.as_deref()).as_bytes())
            .await
            .unwrap();
        let (head, mut got) = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 20"), "{head}");
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < (i + 1) * 256 * 1024 {
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
                .await
                .expect("bytes within 10 s")
                .unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        let offset = if range.is_some() { 8 * MIB - 1000 } else { 0 };
        assert!(
            got[..] == zip[offset..offset + got.len()],
            "client {i}: wrong bytes before it vanished"
        );
        drop(tcp);
    }
    // Everyone else is still served exactly, on fresh and kept-alive connections.
    for _ in 0..3 {
        let d = download_hashed(&fx.client, &url, &[]).await;
        assert!(d.is_exactly(&zip), "after the vanished clients: {d:?}");
    }

    // The stalled reader is dropped once nothing moved for idle_timeout: reading now gives a
    // correct prefix, then the close, never the whole package.
    tokio::time::sleep(
        (idle_timeout + Duration::from_secs(3)).saturating_sub(stalled_at.elapsed()),
    )
    .await;
    let ended = read_until_closed(&mut stalled, &mut body, Duration::from_secs(10)).await;
    assert_ne!(
        ended, "timeout",
        "the stalled connection was neither closed nor continued"
    );
    assert!(
        body.len() < zip.len(),
        "the stalled connection delivered the whole package: it was never closed"
    );
    assert!(
        body[..] == zip[..body.len()],
        "the stalled connection delivered wrong bytes"
    );
    let stderr = fx.server.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("placeholder"), "{stderr}");
}
