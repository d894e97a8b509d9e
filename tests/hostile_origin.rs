//! The mirror in front of a hostile origin: an "evil" OCI registry of our own
//! (`hostile_support`) that serves wrong bytes, lying digests, endless and dripping bodies,
//! absurd JSON, redirects to `file://`, `ftp://` and `gopher://`, redirect loops and chains,
//! HTML pages, truncated bodies and reset connections.
//!
//! For every bad input the tests check that:
//! - the client gets a clear error (`502`/`504` with a message naming the problem), or, for a
//!   package download that had already started, an aborted body — never a hang, never a
//!   complete `200` of wrong bytes;
//! - the server's log names the problem;
//! - nothing is cached: no blob file for that digest, `cache verify` clean, and once the origin
//!   behaves again the next request succeeds with the right bytes;
//! - the server stays healthy (`/healthz`, no panic in its log) with bounded memory (VmHWM).
//!
//! `warm` is run against the same faults for packages.

mod common;
mod hostile_support;

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use common::*;
use hostile_support::*;

const MIB: u64 = 1024 * 1024;
/// The server's peak resident memory must stay below this (KiB).
const RSS_LIMIT_KIB: u64 = 200 * 1024;
/// Longest any single request may take against the hostile origin.
const REQUEST_BOUND: Duration = Duration::from_secs(25);
/// How much of a response body is kept for messages (the rest is only hashed).
const KEEP_BODY: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Fixture and helpers
// ---------------------------------------------------------------------------------------------

/// Evil registry ← server (TLS, mirror `mirror`, name prefix `terraform-providers`, its own
/// cache directory). Fields drop in order: the server stops first.
struct Fixture {
    server: Server,
    evil: EvilRegistry,
    cert: TestCert,
    cache: tempfile::TempDir,
    client: reqwest::Client,
    config: String,
    /// Bad inputs tried, for the summary.
    tried: usize,
    /// Complete `200` answers that carried wrong bytes.
    wrong_bytes: usize,
}

/// A configuration in front of `origin` with its own cache directory, `mirror_lines` in the
/// `provider_mirror` block and `limits` (attribute lines) in a `limits` block.
fn config_for(
    cert: &TestCert,
    origin: &str,
    cache: &Path,
    mirror_lines: &str,
    limits: &str,
) -> String {
    let mut mc = MirrorConfig::new(cert, origin, false);
    mc.extra_mirror = mirror_lines;
    let mut config = with_cache(&mc.to_hcl(), cache, "1GiB");
    if !limits.is_empty() {
        config.push_str(&format!("\nlimits {{\n{limits}\n}}\n"));
    }
    config
}

impl Fixture {
    fn start(mirror_lines: &str, limits: &str) -> Fixture {
        let evil = EvilRegistry::start();
        let cert = TestCert::generate();
        let cache = temp_dir("odtr-hostile-cache-");
        let config = config_for(&cert, &evil.url(), cache.path(), mirror_lines, limits);
        let server = Server::start(&config);
        let client = https_client(&cert);
        Fixture {
            server,
            evil,
            cert,
            cache,
            client,
            config,
            tried: 0,
            wrong_bytes: 0,
        }
    }

    fn index_url(&self, p: &Provider) -> String {
        format!("{}{}/index.json", self.server.mirror_url(), p.address())
    }

    fn version_url(&self, p: &Provider) -> String {
        format!("{}{}/{VERSION}.json", self.server.mirror_url(), p.address())
    }

    fn download_url(&self, p: &Provider) -> String {
        format!(
            "{}{}/download/sha256/{}/terraform-provider-{}_{VERSION}_{PLATFORM}.zip",
            self.server.mirror_url(),
            p.address(),
            p.zip_hex,
            p.type_name
        )
    }

    fn url_for(&self, endpoint: Endpoint, p: &Provider) -> String {
        match endpoint {
            Endpoint::Tags => self.index_url(p),
            Endpoint::Manifest => self.version_url(p),
            Endpoint::Blob => self.download_url(p),
        }
    }

    /// `/healthz` answers, the log has no panic, and peak memory stayed bounded.
    async fn check_health(&self, problems: &mut Vec<String>) {
        let health = get(
            &self.client,
            &format!("{}healthz", self.server.base_url()),
            Duration::from_secs(10),
        )
        .await;
        if health.status != 200 {
            problems.push(format!("/healthz answered {health:?}"));
        }
        let stderr = self.server.stderr();
        if stderr.contains("panicked") {
            problems.push("the server's log shows a panic".to_owned());
        }
        match memory_kib(self.server.pid()) {
            Some((rss, hwm)) => {
                eprintln!(
                    "server memory: VmRSS {} MiB, VmHWM (peak) {} MiB",
                    rss / 1024,
                    hwm / 1024
                );
                if hwm >= RSS_LIMIT_KIB {
                    problems.push(format!(
                        "the server's peak RSS was {} MiB (limit {} MiB)",
                        hwm / 1024,
                        RSS_LIMIT_KIB / 1024
                    ));
                }
            }
            None => problems.push("the server process is gone".to_owned()),
        }
    }

    /// Stops the server (it must exit cleanly) and runs `cache verify` on its directory.
    fn stop_and_verify(&mut self, problems: &mut Vec<String>) {
        let status = self.server.terminate(Duration::from_secs(35));
        if !status.is_some_and(|s| s.success()) {
            problems.push(format!(
                "the server did not exit cleanly on SIGTERM: {status:?}"
            ));
        }
        if self.server.stderr().contains("panicked") {
            problems.push("the server's log shows a panic".to_owned());
        }
        verify_cache(&self.config, "the server's cache", problems);
    }

    /// The end of every test: the server's health, a clean stop and `cache verify`, then
    /// the verdict over everything found.
    async fn conclude(mut self, test: &str, mut problems: Vec<String>) {
        self.check_health(&mut problems).await;
        self.stop_and_verify(&mut problems);
        finish(&self, test, &problems);
    }
}

/// `cache verify` exits 0 and reports no bad package.
fn verify_cache(config: &str, what: &str, problems: &mut Vec<String>) {
    let out = run_cli(config, &["cache", "verify"], Duration::from_secs(30));
    if !out.success() || !out.stdout.contains(" 0 bad") || out.stderr.contains("panicked") {
        problems.push(format!("`cache verify` of {what} is not clean:\n{out}"));
    }
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `index.json` (the tag list)
    Tags,
    /// `VERSION.json` (the tag's manifest)
    Manifest,
    /// the package download (the blob)
    Blob,
}

/// One bad input: a provider of the evil registry with a fault, asked for at one endpoint.
struct Case {
    type_name: &'static str,
    fault: Fault,
    endpoint: Endpoint,
    /// What the error message should say (any one of these, lowercase).
    needles: &'static [&'static str],
}

impl Case {
    fn new(
        type_name: &'static str,
        endpoint: Endpoint,
        fault: Fault,
        needles: &'static [&'static str],
    ) -> Case {
        Case {
            type_name,
            fault,
            endpoint,
            needles,
        }
    }
}

/// Messages for each kind of fault.
const DIGEST: &[&str] = &["does not match its digest", "digest mismatch"];
/// A `file://` redirect cannot even be made into a request, so the 302 itself is refused.
const REDIRECT: &[&str] = &["redirect", "http 302"];
const TOO_LARGE: &[&str] = &["larger than", "too large", "exceeds"];
const NOT_JSON: &[&str] = &["not valid json", "invalid json", "expected value"];
const INCOMPLETE: &[&str] = &[
    "ended after",
    "incomplete",
    "end of file",
    "eof",
    "before the message",
    "reset",
    "closed",
];
const TIMEOUT: &[&str] = &["in time", "timed out", "timeout"];

/// What one GET returned: status, how the body ended, its hash, and its start.
#[derive(Debug)]
struct Got {
    status: u16,
    /// Sending the request or reading the body failed.
    error: Option<String>,
    /// The request did not end within its bound.
    timed_out: bool,
    elapsed: Duration,
    len: u64,
    sha256: String,
    /// The first [`KEEP_BODY`] bytes.
    body: Vec<u8>,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn complete(&self) -> bool {
        !self.timed_out && self.error.is_none()
    }

    fn is_exactly(&self, bytes: &[u8]) -> bool {
        self.status == 200
            && self.complete()
            && self.len == bytes.len() as u64
            && self.sha256 == sha256_hex(bytes)
    }
}

/// `GET url`, giving up after `bound`.
async fn get(client: &reqwest::Client, url: &str, bound: Duration) -> Got {
    let start = Instant::now();
    let mut status = 0;
    let mut error = None;
    let mut len = 0u64;
    let mut body = Vec::new();
    let mut hasher = Sha256::new();
    let transfer = async {
        let mut resp = match client.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                error = Some(format!("{e:?}"));
                return;
            }
        };
        status = resp.status().as_u16();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    hasher.update(&c);
                    len += c.len() as u64;
                    let room = KEEP_BODY.saturating_sub(body.len()).min(c.len());
                    body.extend_from_slice(&c[..room]);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("{e:?}"));
                    break;
                }
            }
        }
    };
    let timed_out = tokio::time::timeout(bound, transfer).await.is_err();
    Got {
        status,
        error,
        timed_out,
        elapsed: start.elapsed(),
        len,
        sha256: hex::encode(hasher.finalize()),
        body,
    }
}

fn mentions(text: &str, needles: &[&str]) -> bool {
    let text = text.to_lowercase();
    needles.iter().any(|n| text.contains(n))
}

/// The server's log has a line mentioning `anchor` (if given) and one of `needles`.
fn log_mentions(server: &Server, anchor: Option<&str>, needles: &[&str]) -> bool {
    wait_until(Duration::from_secs(5), || {
        server
            .stderr()
            .lines()
            .any(|l| anchor.is_none_or(|a| l.contains(a)) && mentions(l, needles))
    })
}

/// Checks a refused answer for `case`; records problems.
fn check_refused(
    fx: &mut Fixture,
    case: &Case,
    p: &Provider,
    got: &Got,
    problems: &mut Vec<String>,
) {
    let label = format!(
        "{} ({:?} {:?})",
        case.type_name,
        case.endpoint,
        case.fault_label()
    );
    fx.tried += 1;
    if got.timed_out {
        problems.push(format!(
            "{label}: no answer within {}s: {got:?}",
            REQUEST_BOUND.as_secs()
        ));
        return;
    }
    // A limit on a number of tags or pages must not be reported as a number of bytes.
    if matches!(case.fault, Fault::TagsEndlessPages | Fault::TagsMany { .. })
        && got.text().contains("00 bytes")
    {
        problems.push(format!(
            "{label}: a tag or page count limit is reported as a byte limit: {}",
            got.text()
        ));
    }
    if got.text().contains("root:x:0:0") {
        problems.push(format!(
            "{label}: the answer holds /etc/passwd: {}",
            got.text()
        ));
    }
    let right: &[u8] = match case.endpoint {
        Endpoint::Blob => &p.zip,
        _ => &[],
    };
    match got.status {
        // A download aborted before its response head left: over HTTP/2 a stream reset as
        // the body fails can overtake the queued head, so the client sees no status at all.
        // As with an aborted 200, no byte was delivered as a package and only the log can
        // say why.
        0 if case.endpoint == Endpoint::Blob && got.error.is_some() => {
            if !log_mentions(&fx.server, Some(&p.zip_hex), case.needles) {
                problems.push(format!(
                    "{label}: download reset, but no log line about {} names the problem ({:?})",
                    p.zip_hex, case.needles
                ));
            }
        }
        200 if case.endpoint == Endpoint::Blob => {
            if got.complete() {
                if got.sha256 != sha256_hex(right) {
                    fx.wrong_bytes += 1;
                    problems.push(format!(
                        "{label}: a complete 200 of WRONG bytes ({} bytes) was served",
                        got.len
                    ));
                } else {
                    problems.push(format!(
                        "{label}: a complete 200 was served though the origin misbehaved (it must have read what it should have refused)"
                    ));
                }
            }
            // An aborted 200: the failure is only in the log.
            if !log_mentions(&fx.server, Some(&p.zip_hex), case.needles) {
                problems.push(format!(
                    "{label}: aborted download, but no log line about {} names the problem ({:?})",
                    p.zip_hex, case.needles
                ));
            }
        }
        502 | 504 => {
            if !mentions(&got.text(), case.needles) {
                problems.push(format!(
                    "{label}: {} does not say what went wrong ({:?}): {}",
                    got.status,
                    case.needles,
                    got.text()
                ));
            }
            if !got.text().contains("\"errors\"") {
                problems.push(format!(
                    "{label}: the error is not a JSON errors document: {}",
                    got.text()
                ));
            }
            if !log_mentions(&fx.server, None, case.needles) {
                problems.push(format!(
                    "{label}: the server's log does not name the problem ({:?})",
                    case.needles
                ));
            }
        }
        other => {
            if other == 200
                && case.endpoint == Endpoint::Manifest
                && mentions(&got.text(), &[&p.evil_zip_digest[7..]])
            {
                fx.wrong_bytes += 1;
            }
            problems.push(format!(
                "{label}: expected 502/504 (or an aborted package download), got {other} after {:?}: error {:?}, body {}",
                got.elapsed,
                got.error,
                got.text()
            ))
        }
    }
}

impl Case {
    fn fault_label(&self) -> String {
        match &self.fault {
            Fault::ManifestHuge { body, .. } => format!("ManifestHuge({} bytes)", body.len()),
            f => format!("{f:?}"),
        }
    }
}

/// Checks that the right answer now comes for `p` at `endpoint`.
fn check_right(
    endpoint: Endpoint,
    p: &Provider,
    got: &Got,
    label: &str,
    problems: &mut Vec<String>,
) {
    let ok = match endpoint {
        Endpoint::Blob => got.is_exactly(&p.zip),
        Endpoint::Tags => {
            got.status == 200
                && got.complete()
                && serde_json::from_slice::<serde_json::Value>(&got.body)
                    .ok()
                    .is_some_and(|j| j["versions"].get(VERSION).is_some())
        }
        Endpoint::Manifest => {
            got.status == 200
                && got.complete()
                && serde_json::from_slice::<serde_json::Value>(&got.body)
                    .ok()
                    .and_then(|j| j["archives"][PLATFORM]["hashes"].as_array().cloned())
                    .is_some_and(|h| h.iter().any(|x| x.as_str() == Some(p.zh().as_str())))
        }
    };
    if !ok {
        problems.push(format!(
            "{label}: once the origin behaves, {:?} still does not give the right answer: status {}, error {:?}, {} bytes, body {}",
            endpoint,
            got.status,
            got.error,
            got.len,
            got.text().chars().take(600).collect::<String>()
        ));
    }
}

fn has_blob(dir: &Path, hex: &str) -> bool {
    cache_blob_files(dir).iter().any(|(h, _)| h == hex)
}

/// Runs every case against the server at once; then the origin behaves again and every case
/// must now succeed. Returns the providers.
async fn run_cases(
    fx: &mut Fixture,
    cases: &[Case],
    problems: &mut Vec<String>,
) -> (Vec<Provider>, Vec<Got>) {
    let providers: Vec<Provider> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| fx.evil.add(c.type_name, 1000 + i as u64, c.fault.clone()))
        .collect();
    let urls: Vec<String> = cases
        .iter()
        .zip(&providers)
        .map(|(c, p)| fx.url_for(c.endpoint, p))
        .collect();
    let client = fx.client.clone();
    let refused =
        futures::future::join_all(urls.iter().map(|u| get(&client, u, REQUEST_BOUND))).await;
    for ((case, p), got) in cases.iter().zip(&providers).zip(&refused) {
        eprintln!(
            "{:<22} {} after {:>5} ms, {:>7} bytes{}: {}",
            case.type_name,
            got.status,
            got.elapsed.as_millis(),
            got.len,
            if got.error.is_some() {
                " (aborted)"
            } else {
                ""
            },
            if got.status == 200 && case.endpoint == Endpoint::Blob {
                "<package bytes>".to_owned()
            } else {
                got.text().chars().take(200).collect::<String>()
            }
        );
        check_refused(fx, case, p, got, problems);
    }

    // Nothing kept: no blob, no temp file left behind.
    let cache = fx.cache.path().to_owned();
    if !wait_until(Duration::from_secs(10), || {
        cache_temp_files(&cache).is_empty()
    }) {
        problems.push(format!(
            "temp files left in the cache after the failures: {:?}",
            cache_temp_files(&cache)
        ));
    }
    for (case, p) in cases.iter().zip(&providers) {
        if has_blob(&cache, &p.zip_hex) {
            problems.push(format!(
                "{}: the package was cached after a failure",
                case.type_name
            ));
        }
    }
    fx.check_health(problems).await;

    // The origin behaves: every one of them must now work (the failure was not remembered).
    fx.evil.all_good();
    let results =
        futures::future::join_all(urls.iter().map(|u| get(&client, u, REQUEST_BOUND))).await;
    for ((case, p), got) in cases.iter().zip(&providers).zip(&results) {
        check_right(case.endpoint, p, got, case.type_name, problems);
        if case.endpoint == Endpoint::Blob
            && !wait_until(Duration::from_secs(5), || has_blob(&cache, &p.zip_hex))
        {
            problems.push(format!(
                "{}: the right package, served once the origin behaved, was not cached",
                case.type_name
            ));
        }
    }
    (providers, refused)
}

/// Redirects of every kind, as cases for `endpoint`.
fn redirect_cases(endpoint: Endpoint, names: [&'static str; 6]) -> Vec<Case> {
    let kinds = [
        Redirect::PasswdFile,
        Redirect::CanaryFile,
        Redirect::Ftp,
        Redirect::Gopher,
        Redirect::Loop,
        Redirect::LongChain,
    ];
    kinds
        .into_iter()
        .zip(names)
        .map(|(kind, name)| {
            let fault = match endpoint {
                Endpoint::Tags => Fault::TagsRedirect(kind),
                Endpoint::Manifest => Fault::ManifestRedirect(kind),
                Endpoint::Blob => Fault::BlobRedirect(kind),
            };
            Case::new(name, endpoint, fault, REDIRECT)
        })
        .collect()
}

/// Redirect loops and chains were cut short; nothing connected to the ftp/gopher trap.
fn check_redirects_bounded(evil: &EvilRegistry, cases: &[Case], problems: &mut Vec<String>) {
    for c in cases {
        let needle = format!("/{}/", c.type_name);
        let loops = evil.requests_matching(&["/loop/", &needle]).len();
        let chain = evil.requests_matching(&["/chain/", &needle]).len();
        if loops > 30 || chain > 30 {
            problems.push(format!(
                "{}: {loops} loop and {chain} chain hops were followed",
                c.type_name
            ));
        }
        let ends = evil.requests_matching(&["chain=done", &needle]);
        if !ends.is_empty() {
            problems.push(format!(
                "{}: a {CHAIN_LENGTH}-hop redirect chain was followed to its end: {ends:?}",
                c.type_name
            ));
        }
    }
    if evil.trap_connections() > 0 {
        problems.push(format!(
            "{} connection(s) were made to ftp:// or gopher:// redirect targets",
            evil.trap_connections()
        ));
    }
}

/// Runs `warm` for every blob case, on its own cache directory (no server owns it): each
/// package must fail with its problem named and nothing cached; once the origin behaves, a
/// second `warm` fetches them all, and `cache verify` is clean.
fn warm_cases(fx: &mut Fixture, limits: &str, cases: &[Case], problems: &mut Vec<String>) {
    let providers: Vec<Provider> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| fx.evil.add(c.type_name, 5000 + i as u64, c.fault.clone()))
        .collect();
    let cache = temp_dir("odtr-hostile-warm-");
    let config = config_for(&fx.cert, &fx.evil.url(), cache.path(), "", limits);
    let mut args = vec![
        "warm".to_owned(),
        "--platform".to_owned(),
        PLATFORM.to_owned(),
        "--jobs".to_owned(),
        "32".to_owned(),
    ];
    args.extend(
        providers
            .iter()
            .map(|p| format!("{}@{VERSION}", p.address())),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let started = Instant::now();
    let out = run_cli(&config, &args, Duration::from_secs(60));
    let took = started.elapsed();
    fx.tried += cases.len();
    if out.status.is_none() {
        problems.push(format!(
            "warm against the hostile origin was killed after {took:?}:\n{out}"
        ));
    } else if out.success() {
        problems.push(format!("warm against the hostile origin succeeded:\n{out}"));
    }
    if out.stderr.contains("panicked") || out.stdout.contains("panicked") {
        problems.push(format!("warm panicked:\n{out}"));
    }
    let all = format!("{}\n{}", out.stdout, out.stderr);
    for (case, p) in cases.iter().zip(&providers) {
        let named = all
            .lines()
            .any(|l| l.contains(&p.address()) && mentions(l, case.needles));
        if !named {
            problems.push(format!(
                "warm {}: no line names {} with its problem ({:?}):\n{out}",
                case.type_name,
                p.address(),
                case.needles
            ));
        }
        if has_blob(cache.path(), &p.zip_hex) {
            problems.push(format!(
                "warm {}: the package was cached after a failure",
                case.type_name
            ));
        }
    }
    if !cache_temp_files(cache.path()).is_empty() {
        problems.push(format!(
            "warm left temp files: {:?}",
            cache_temp_files(cache.path())
        ));
    }
    verify_cache(&config, "warm's cache after the failures", problems);

    for p in &providers {
        fx.evil.set_fault(&p.type_name, Fault::Good);
    }
    let out = run_cli(&config, &args, Duration::from_secs(60));
    if !out.success() {
        problems.push(format!("warm once the origin behaves failed:\n{out}"));
    }
    for (case, p) in cases.iter().zip(&providers) {
        let kept = cache_blob_files(cache.path())
            .into_iter()
            .any(|(h, size)| h == p.zip_hex && size == p.zip.len() as u64);
        if !kept {
            problems.push(format!(
                "warm {}: the right package is not in the cache once the origin behaves",
                case.type_name
            ));
        }
    }
    verify_cache(&config, "warm's cache", problems);
}

fn finish(fx: &Fixture, test: &str, problems: &[String]) {
    eprintln!(
        "{test}: {} bad inputs tried, {} wrong-byte answers, {} problem(s)",
        fx.tried,
        fx.wrong_bytes,
        problems.len()
    );
    assert_eq!(fx.wrong_bytes, 0, "wrong bytes were served");
    assert!(
        problems.is_empty(),
        "{test}: {} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

// ---------------------------------------------------------------------------------------------
// Packages: wrong bytes, HTML, truncated bodies, resets, redirects (and warm)
// ---------------------------------------------------------------------------------------------

fn blob_cases(prefix: &'static str) -> Vec<Case> {
    // Names are 'static: one set for the server, one for warm.
    let n =
        |s: &'static str| -> &'static str { Box::leak(format!("{prefix}{s}").into_boxed_str()) };
    let mut cases = vec![
        Case::new(
            n("same-length"),
            Endpoint::Blob,
            Fault::BlobWrongBytesSameLength,
            DIGEST,
        ),
        Case::new(
            n("longer"),
            Endpoint::Blob,
            Fault::BlobWrongBytesLonger,
            DIGEST,
        ),
        Case::new(
            n("shorter"),
            Endpoint::Blob,
            Fault::BlobWrongBytesShorter,
            DIGEST,
        ),
        Case::new(n("html"), Endpoint::Blob, Fault::BlobHtml, DIGEST),
        Case::new(
            n("truncated"),
            Endpoint::Blob,
            Fault::BlobTruncated,
            INCOMPLETE,
        ),
        Case::new(n("rst"), Endpoint::Blob, Fault::BlobReset, INCOMPLETE),
        Case::new(
            n("cl-too-large"),
            Endpoint::Blob,
            Fault::BlobContentLengthTooLarge,
            INCOMPLETE,
        ),
        Case::new(
            n("chunked-cut"),
            Endpoint::Blob,
            Fault::BlobChunkedTruncated,
            INCOMPLETE,
        ),
    ];
    cases.extend(redirect_cases(
        Endpoint::Blob,
        [
            n("to-passwd"),
            n("to-canary"),
            n("to-ftp"),
            n("to-gopher"),
            n("loop"),
            n("chain"),
        ],
    ));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_package_bytes_and_broken_transfers_are_refused_and_never_cached() {
    let mut fx = Fixture::start("", "");
    let mut problems = Vec::new();

    let cases = blob_cases("pkg-");
    let _ = run_cases(&mut fx, &cases, &mut problems).await;
    check_redirects_bounded(&fx.evil, &cases, &mut problems);

    let warm = blob_cases("warm-");
    warm_cases(&mut fx, "", &warm, &mut problems);
    check_redirects_bounded(&fx.evil, &warm, &mut problems);

    fx.conclude("packages", problems).await;
}

// ---------------------------------------------------------------------------------------------
// Manifests and tag lists: lying digests, HTML, endless and oversize bodies, redirects
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_manifests_and_broken_tag_lists_are_refused_and_not_remembered() {
    let mut fx = Fixture::start("", "");
    let mut problems = Vec::new();

    let mut cases = vec![
        Case::new(
            "m-tampered",
            Endpoint::Manifest,
            Fault::ManifestTamperedByDigest,
            DIGEST,
        ),
        Case::new(
            "m-wrong-header",
            Endpoint::Manifest,
            Fault::ManifestWrongDigestHeader,
            DIGEST,
        ),
        Case::new(
            "m-wrong-header-get",
            Endpoint::Manifest,
            Fault::ManifestWrongDigestHeaderOnGet,
            DIGEST,
        ),
        Case::new("m-html", Endpoint::Manifest, Fault::ManifestHtml, NOT_JSON),
        Case::new(
            "m-endless",
            Endpoint::Manifest,
            Fault::ManifestEndless,
            TOO_LARGE,
        ),
        Case::new(
            "m-oversize",
            Endpoint::Manifest,
            Fault::ManifestOversize,
            TOO_LARGE,
        ),
        Case::new("t-html", Endpoint::Tags, Fault::TagsHtml, NOT_JSON),
        Case::new("t-endless", Endpoint::Tags, Fault::TagsEndless, TOO_LARGE),
        Case::new(
            "t-link-forever",
            Endpoint::Tags,
            Fault::TagsEndlessPages,
            &["page"],
        ),
    ];
    cases.extend(redirect_cases(
        Endpoint::Manifest,
        [
            "m-to-passwd",
            "m-to-canary",
            "m-to-ftp",
            "m-to-gopher",
            "m-loop",
            "m-chain",
        ],
    ));
    cases.extend(redirect_cases(
        Endpoint::Tags,
        [
            "t-to-passwd",
            "t-to-canary",
            "t-to-ftp",
            "t-to-gopher",
            "t-loop",
            "t-chain",
        ],
    ));
    let (providers, _) = run_cases(&mut fx, &cases, &mut problems).await;
    check_redirects_bounded(&fx.evil, &cases, &mut problems);

    // The tampered manifest pointed at another package: that one must never be listed.
    let tampered = &providers[0];
    let got = get(&fx.client, &fx.version_url(tampered), REQUEST_BOUND).await;
    if got.text().contains(&tampered.evil_zip_digest[7..]) {
        fx.wrong_bytes += 1;
        problems.push(format!(
            "the tampered manifest's package is listed: {}",
            got.text()
        ));
    }

    fx.conclude("metadata", problems).await;
}

// ---------------------------------------------------------------------------------------------
// Huge JSON: absurd but valid manifests, tag lists over max_tags
// ---------------------------------------------------------------------------------------------

/// A ~3 MiB seed manifest with thousands of package layers, each for its own platform.
fn manifest_with_many_platforms() -> Vec<u8> {
    let mut layers = Vec::new();
    let mut i = 0u64;
    let mut size = 0;
    while size < 3 * MIB as usize {
        let layer = serde_json::json!({
            "mediaType": MEDIA_TYPE_SEED_PACKAGE,
            "digest": sha256_digest(&i.to_le_bytes()),
            "size": 1000 + i,
            "annotations": { ANNOTATION_TARGET_PLATFORMS: format!("os{i}_arch{i}") },
        });
        size += layer.to_string().len() + 1;
        layers.push(layer);
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": { "mediaType": MEDIA_TYPE_SEED_CONFIG, "digest": sha256_digest(b"{}"), "size": 2 },
        "layers": layers,
    }))
    .unwrap()
}

/// A ~3 MiB image manifest of ordinary container layers (not a provider); `variant` changes
/// the layer digests (and so the manifest's).
fn manifest_of_container_layers(variant: u8) -> Vec<u8> {
    let layer = format!(
        "{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:{}\",\"size\":1}}",
        format!("{variant:02x}").repeat(32)
    );
    let count = (3 * MIB as usize) / (layer.len() + 1);
    let layers = vec![layer; count].join(",");
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{MEDIA_TYPE_OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{}\",\"size\":2}},\"layers\":[{layers}]}}",
        sha256_digest(b"{}")
    )
    .into_bytes()
}

/// Valid JSON nested a million levels deep, in a field a manifest parser looks at.
fn deeply_nested_manifest() -> Vec<u8> {
    let depth = 1_000_000;
    let mut s = String::with_capacity(2 * depth + 64);
    s.push_str("{\"schemaVersion\":2,\"manifests\":");
    s.push_str(&"[".repeat(depth));
    s.push_str(&"]".repeat(depth));
    s.push('}');
    s.into_bytes()
}

/// The right manifest of `p`, with a 3 MiB annotation.
fn manifest_with_huge_annotation(p: &Provider) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(&p.manifest).unwrap();
    m["annotations"] = serde_json::json!({ "org.example.padding": "x".repeat(3 * MIB as usize) });
    serde_json::to_vec(&m).unwrap()
}

/// Distinct 3 MiB manifests in the flood (about 60 MiB of JSON).
const FLOOD: u8 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_json_from_the_origin_neither_crashes_nor_sticks() {
    // A short max age, so the (valid, if absurd) answers give way to the right ones quickly.
    let mut fx = Fixture::start("  index_max_age = \"1s\"", "");
    let mut problems = Vec::new();

    let many = fx.evil.add("h-many-platforms", 1, Fault::Good);
    let containers = fx.evil.add("h-container-layers", 2, Fault::Good);
    let nested = fx.evil.add("h-nested", 3, Fault::Good);
    let padded = fx.evil.add("h-padded", 4, Fault::Good);
    let tags_flat = fx.evil.add("h-200k", 5, Fault::Good);
    let tags_paged = fx.evil.add("h-200k-paged", 6, Fault::Good);
    let oci = MEDIA_TYPE_OCI_MANIFEST;
    let huge = |body: Vec<u8>, content_type: &'static str| Fault::ManifestHuge {
        body: std::sync::Arc::new(body),
        content_type,
    };
    let cases: Vec<(&Provider, Endpoint, Fault, bool, &[&str])> = vec![
        // (provider, endpoint, fault, may it be answered 200?, message when refused)
        (
            &many,
            Endpoint::Manifest,
            huge(manifest_with_many_platforms(), oci),
            true,
            &["not a provider", "layout", "too many", "limit"],
        ),
        (
            &containers,
            Endpoint::Manifest,
            huge(manifest_of_container_layers(0xab), oci),
            false,
            &["not a provider"],
        ),
        (
            &nested,
            Endpoint::Manifest,
            huge(deeply_nested_manifest(), "application/json"),
            false,
            &["recursion", "not valid json", "invalid", "depth"],
        ),
        (
            &padded,
            Endpoint::Manifest,
            huge(manifest_with_huge_annotation(&padded), oci),
            true,
            &["limit"],
        ),
        (
            &tags_flat,
            Endpoint::Tags,
            Fault::TagsMany {
                count: 200_000,
                per_page: None,
            },
            false,
            &["100000"],
        ),
        (
            &tags_paged,
            Endpoint::Tags,
            Fault::TagsMany {
                count: 200_000,
                per_page: Some(1000),
            },
            false,
            &["100000"],
        ),
    ];
    for (p, endpoint, fault, may_succeed, needles) in &cases {
        fx.evil.set_fault(&p.type_name, fault.clone());
        let body_len = match fault {
            Fault::ManifestHuge { body, .. } => body.len(),
            _ => 0,
        };
        let got = get(&fx.client, &fx.url_for(*endpoint, p), REQUEST_BOUND).await;
        fx.tried += 1;
        let label = format!("{} ({body_len} bytes)", p.type_name);
        if let Some((rss, hwm)) = memory_kib(fx.server.pid()) {
            eprintln!(
                "{label}: server VmRSS {} MiB, VmHWM {} MiB",
                rss / 1024,
                hwm / 1024
            );
        }
        eprintln!(
            "{label}: {} in {:?}, {} bytes: {}",
            got.status,
            got.elapsed,
            got.len,
            got.text().chars().take(300).collect::<String>()
        );
        match got.status {
            200 if *may_succeed && got.complete() => {
                if serde_json::from_slice::<serde_json::Value>(&got.body).is_err()
                    && got.len as usize <= KEEP_BODY
                {
                    problems.push(format!("{label}: a 200 that is not JSON: {}", got.text()));
                }
            }
            502 | 504 if got.complete() => {
                if !mentions(&got.text(), needles) {
                    problems.push(format!(
                        "{label}: {} does not say what went wrong ({needles:?}): {}",
                        got.status,
                        got.text()
                    ));
                }
            }
            _ => problems.push(format!("{label}: unexpected answer {got:?}")),
        }
        // The limit is a number of tags: the message must not call it bytes.
        if *endpoint == Endpoint::Tags && got.text().contains("100000 bytes") {
            problems.push(format!(
                "{label}: the tag-count limit is reported as a byte limit: {}",
                got.text()
            ));
        }
    }

    fx.check_health(&mut problems).await;

    // The origin behaves: within a few max ages, every one gives the right answer.
    fx.evil.all_good();
    for (p, endpoint, ..) in &cases {
        let url = fx.url_for(*endpoint, p);
        let deadline = Instant::now() + Duration::from_secs(15);
        let got = loop {
            let got = get(&fx.client, &url, REQUEST_BOUND).await;
            let ok = match endpoint {
                Endpoint::Manifest => got.status == 200 && got.text().contains(&p.zh()),
                _ => got.status == 200 && got.text().contains(VERSION),
            };
            if ok || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        check_right(*endpoint, p, &got, &p.type_name, &mut problems);
    }

    fx.conclude("huge JSON", problems).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_huge_manifests_keeps_memory_bounded() {
    let mut fx = Fixture::start("", "");
    let mut problems = Vec::new();
    // What the server keeps of refused or absurd manifests must be bounded by size, not only
    // by count, or an origin exhausts its memory with a few dozen big documents.
    for i in 0..FLOOD {
        let p = fx.evil.add(
            &format!("h-flood-{i}"),
            100 + u64::from(i),
            Fault::ManifestHuge {
                body: std::sync::Arc::new(manifest_of_container_layers(i)),
                content_type: MEDIA_TYPE_OCI_MANIFEST,
            },
        );
        let got = get(&fx.client, &fx.version_url(&p), REQUEST_BOUND).await;
        fx.tried += 1;
        if got.status != 502 || !mentions(&got.text(), &["not a provider"]) {
            problems.push(format!("{}: unexpected answer {got:?}", p.type_name));
        }
        if let Some((rss, hwm)) = memory_kib(fx.server.pid()) {
            eprintln!(
                "after {} distinct 3 MiB manifests: server VmRSS {} MiB, VmHWM {} MiB",
                i + 1,
                rss / 1024,
                hwm / 1024
            );
        }
    }
    fx.conclude("manifest flood", problems).await;
}

// ---------------------------------------------------------------------------------------------
// Endless and dripping bodies (need the `limits` block)
// ---------------------------------------------------------------------------------------------

const LIMITS: &str = "  max_package_size        = \"8MiB\"\n  origin_fetch_timeout    = \"3s\"\n  origin_metadata_timeout = \"3s\"";

fn slow_cases(prefix: &'static str) -> Vec<Case> {
    let n =
        |s: &'static str| -> &'static str { Box::leak(format!("{prefix}{s}").into_boxed_str()) };
    vec![
        Case::new(
            n("endless"),
            Endpoint::Blob,
            Fault::BlobEndless {
                content_length: None,
            },
            TOO_LARGE,
        ),
        Case::new(
            n("endless-100gib"),
            Endpoint::Blob,
            Fault::BlobEndless {
                content_length: Some(100 << 30),
            },
            TOO_LARGE,
        ),
        Case::new(n("drip"), Endpoint::Blob, Fault::BlobDripBody, TIMEOUT),
        Case::new(
            n("drip-headers"),
            Endpoint::Blob,
            Fault::BlobDripHeaders,
            TIMEOUT,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_dripping_origins_are_cut_off_within_the_limits() {
    let mut fx = Fixture::start("", LIMITS);
    let mut problems = Vec::new();

    let mut cases = slow_cases("slow-");
    cases.extend([
        Case::new(
            "m-drip",
            Endpoint::Manifest,
            Fault::ManifestDripBody,
            TIMEOUT,
        ),
        Case::new(
            "m-drip-headers",
            Endpoint::Manifest,
            Fault::ManifestDripHeaders,
            TIMEOUT,
        ),
        Case::new("t-drip", Endpoint::Tags, Fault::TagsDripBody, TIMEOUT),
    ]);
    let started = Instant::now();
    let (_, refused) = run_cases(&mut fx, &cases, &mut problems).await;
    eprintln!("slow cases took {:?}", started.elapsed());
    for (case, got) in cases.iter().zip(&refused) {
        // Cut off well within the bound: a few seconds past the 3 s timeouts at most.
        if got.elapsed >= Duration::from_secs(20) {
            problems.push(format!(
                "{}: the request took {:?} (bound 20 s)",
                case.type_name, got.elapsed
            ));
        }
        // Never more than max_package_size passed on to the client.
        if got.len > 8 * MIB {
            problems.push(format!(
                "{}: {} bytes were sent to the client, over max_package_size (8 MiB)",
                case.type_name, got.len
            ));
        }
    }

    warm_cases(&mut fx, LIMITS, &slow_cases("warm-slow-"), &mut problems);

    fx.conclude("endless and slow", problems).await;
}

/// A request waiting on a slow origin is the client waiting for us, not an idle connection:
/// with `idle_timeout` shorter than the origin's timeout, the client still gets the answer
/// to the origin timing out (504), not a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_a_slow_origin_is_not_cut_by_the_idle_timeout() {
    let fx = Fixture::start(
        "",
        "  idle_timeout = \"1s\"\n  origin_metadata_timeout = \"4s\"",
    );
    let p = fx.evil.add("slow-manifest", 1, Fault::ManifestDripHeaders);
    let started = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        fx.client.get(fx.version_url(&p)).send(),
    )
    .await
    .expect("bounded")
    .expect("the connection must not be dropped while the server waits on the origin");
    assert_eq!(resp.status(), 504, "the origin's timeout is the answer");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "answered after {:?}, before the origin timeout",
        started.elapsed()
    );
}

/// An evil registry, a certificate, a cache directory and a configuration in front of them
/// with `limits`.
fn evil_origin(limits: &str) -> (EvilRegistry, TestCert, tempfile::TempDir, String) {
    let evil = EvilRegistry::start();
    let cert = TestCert::generate();
    let cache = temp_dir("odtr-hostile-cache-");
    let config = config_for(&cert, &evil.url(), cache.path(), "", limits);
    (evil, cert, cache, config)
}

/// The mirror's download URL of a provider of the evil registry.
fn package_url(mirror_url: &str, p: &Provider) -> String {
    format!(
        "{mirror_url}{}/download/sha256/{}/terraform-provider-{}_{VERSION}_{PLATFORM}.zip",
        p.address(),
        p.zip_hex,
        p.type_name
    )
}

/// Starts a download (bounded by `secs`) from a hanging origin and returns once the origin
/// has its request, and so the download holds the origin's only turn.
async fn take_the_only_turn(
    client: &reqwest::Client,
    evil: &EvilRegistry,
    url: String,
    secs: u64,
) -> tokio::task::JoinHandle<Got> {
    let client = client.clone();
    let download = tokio::spawn(async move { get(&client, &url, Duration::from_secs(secs)).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while evil.requests_matching(&["/blobs/"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the hanging origin was never asked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    download
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_origin_does_not_hold_up_another_origins_downloads() {
    // One download at a time per origin; the first origin sends its headers at a byte a
    // second, so its one turn stays taken until the download's own time limit.
    let limits = "  max_origin_fetches = 1\n  origin_fetch_timeout = \"60s\"";
    let evil = EvilRegistry::start();
    let good = EvilRegistry::start();
    let cert = TestCert::generate();
    let cache = temp_dir("odtr-hostile-cache-");
    let mut config = config_for(&cert, &evil.url(), cache.path(), "", limits);
    config.push_str(&format!(
        "\nprovider_mirror \"other\" {{\n  origin_url     = \"{}\"\n  name_prefix    = \"terraform-providers\"\n  proxy_packages = false\n}}\n",
        good.url()
    ));
    let server = Server::start(&config);
    let client = https_client(&cert);
    let hanging = evil.add("hangs", 1, Fault::BlobDripHeaders);
    let fine = good.add("fine", 2, Fault::Good);
    let mirror_url = server.mirror_url();
    let stuck = take_the_only_turn(&client, &evil, package_url(&mirror_url, &hanging), 5).await;
    let fine_url = package_url(&mirror_url.replace("/mirror/", "/other/"), &fine);
    let got = get(&client, &fine_url, Duration::from_secs(10)).await;
    assert!(
        got.is_exactly(&fine.zip),
        "the other origin's package waited on the hanging origin's turn: {} {:?} after {:?}",
        got.status,
        got.error,
        got.elapsed
    );
    assert!(
        stuck.await.expect("join").timed_out,
        "the hanging download should still hang"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_keeps_resolving_requirements_while_every_download_slot_is_busy() {
    // Two download slots. The first requirement resolves at once and its download takes a
    // slot for 4 s; the second resolves in 0.6 s and takes the other slot for 4 s; the third
    // resolves meanwhile, each of its origin answers coming after 0.5 s, and each must be read
    // within the 2 s metadata timeout even while both slots are busy.
    let (evil, _cert, cache, config) = evil_origin("  origin_metadata_timeout = \"2s\"");
    let delayed = |metadata_ms: u64, blob_ms: u64| Fault::Delayed {
        metadata: Duration::from_millis(metadata_ms),
        blob: Duration::from_millis(blob_ms),
    };
    let providers = [
        evil.add("slowa", 31, delayed(0, 4000)),
        evil.add("slowb", 32, delayed(300, 4000)),
        evil.add("lateplan", 33, delayed(500, 0)),
    ];
    let mut args = vec![
        "warm".to_owned(),
        "--platform".to_owned(),
        PLATFORM.to_owned(),
        "--jobs".to_owned(),
        "2".to_owned(),
    ];
    args.extend(
        providers
            .iter()
            .map(|p| format!("{}@{VERSION}", p.address())),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_cli(&config, &args, Duration::from_secs(60));
    assert!(
        out.success(),
        "warm failed while its download slots were busy:\n{out}"
    );
    for p in &providers {
        assert!(
            has_blob(cache.path(), &p.zip_hex),
            "{} is not in the cache:\n{out}",
            p.address()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_download_turn_counts_against_the_download_time_limit() {
    // One turn for the origin, taken by a download whose headers drip; a second one, from the
    // same origin and just as slow, waits for the turn. Its whole time, waiting included,
    // stays within origin_fetch_timeout: the wait does not come on top of it.
    let (evil, cert, _cache, config) =
        evil_origin("  max_origin_fetches = 1\n  origin_fetch_timeout = \"3s\"");
    let server = Server::start(&config);
    let client = https_client(&cert);
    let first = evil.add("hangs", 1, Fault::BlobDripHeaders);
    let queued = evil.add("hangstoo", 2, Fault::BlobDripHeaders);
    let mirror_url = server.mirror_url();
    let first = take_the_only_turn(&client, &evil, package_url(&mirror_url, &first), 20).await;
    let got = get(
        &client,
        &package_url(&mirror_url, &queued),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        got.status == 504 || got.status == 503,
        "queued download: {} {:?} {}",
        got.status,
        got.error,
        got.text()
    );
    assert!(
        got.elapsed < Duration::from_millis(4500),
        "the queued download took {:?}: its wait for a turn came on top of the 3 s limit",
        got.elapsed
    );
    let first = first.await.expect("join");
    assert_eq!(first.status, 504, "the first download: {:?}", first.error);
}
