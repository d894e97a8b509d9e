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

async fn every_case_cold_and_warm(proxy_packages: bool, http1: bool) {
    let fx = CacheFixture::start(proxy_packages, "1GiB");
    let client = if http1 {
        https_client_http1(&fx.cert)
    } else {
        fx.client.clone()
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
            !cache_blob_files(&cache).iter().any(|(h, _)| *h == hex),
            "{case:?}: package already cached before its first request"
        );
        check(&client, &url, zip, *case, "cold", proxy_packages).await;
        // Make sure it is cached (a 304 or HEAD alone need not bring it in), then again warm.
        let full = download_hashed(&fx.client, &url, &[]).await;
        assert!(full.is_exactly(zip), "{case:?}: full download {full:?}");
        assert!(
            wait_until(Duration::from_secs(5), || cache_blob_files(&cache)
                .iter()
                .any(|(h, _)| *h == hex)),
            "{case:?}: package not cached after a full download"
        );
        check(&client, &url, zip, *case, "warm", proxy_packages).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_head_and_validators_on_cold_and_warm_packages() {
    every_case_cold_and_warm(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_head_and_validators_over_http1() {
    every_case_cold_and_warm(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_head_and_validators_with_proxy_packages_are_private() {
    every_case_cold_and_warm(true, false).await;
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
    let hex = sha256_hex(&zip);
    let cache = fx.cache_dir().to_owned();
    assert!(
        wait_until(Duration::from_secs(5), || cache_blob_files(&cache)
            .iter()
            .any(|(h, _)| *h == hex)),
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
