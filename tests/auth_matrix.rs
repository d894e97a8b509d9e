//! Who gets what: the full matrix of clients × requests in front of an authenticating
//! registry, printed as a table and asserted cell by cell.
//!
//! The registry uses distribution's `silly` auth. Its rule (registry/auth/silly): a request
//! without an `Authorization` header gets `401` with a Bearer challenge; a request with any
//! non-empty `Authorization` header is accepted, whatever its scheme or content. So for the
//! origin, `Basic garbage` and `Bearer ` (empty token) are as good as a real token, and the
//! only refused credentials are none and an empty header. The mirror passes the client's
//! `Authorization` to the origin and lets the origin decide, so it must give exactly the
//! origin's answer; each row's expectation is also checked against the registry directly.
//!
//! With `proxy_packages = true`, download URLs carry the client's credential sealed into
//! `?t=`; packages are served only through such URLs (cached or not), whoever presents them.

mod common;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const RIGHT: &str = "Bearer abc";

/// One client of the matrix.
struct Who {
    name: &'static str,
    auth: Option<&'static str>,
    /// Whether silly auth accepts this credential.
    origin_accepts: bool,
}

const CLIENTS: &[Who] = &[
    Who {
        name: "anonymous",
        auth: None,
        origin_accepts: false,
    },
    Who {
        name: "empty Authorization header",
        auth: Some(""),
        origin_accepts: false,
    },
    Who {
        name: "\"Bearer \" (empty token)",
        auth: Some("Bearer "),
        origin_accepts: true,
    },
    Who {
        name: "\"Basic garbage\"",
        auth: Some("Basic garbage"),
        origin_accepts: true,
    },
    Who {
        name: "right token",
        auth: Some(RIGHT),
        origin_accepts: true,
    },
];

/// One platform per client (its own cold download) and one more for the package the right
/// client caches first.
const PLATFORMS: &[&str] = &[
    "linux_amd64",
    "darwin_arm64",
    "windows_amd64",
    "freebsd_amd64",
    "linux_arm64",
    "openbsd_amd64",
];
const CACHED_PLATFORM: &str = "openbsd_amd64";

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// One cell: what happened, and whether it is what must happen.
struct Cell {
    got: String,
    expected: String,
    ok: bool,
}

impl Cell {
    fn na(why: &str) -> Cell {
        Cell {
            got: why.to_owned(),
            expected: why.to_owned(),
            ok: true,
        }
    }
}

struct Table {
    title: String,
    columns: Vec<&'static str>,
    rows: Vec<(String, Vec<Cell>)>,
}

impl Table {
    fn new(title: &str, columns: &[&'static str]) -> Table {
        Table {
            title: title.to_owned(),
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn render(&self) -> String {
        let name_w = self
            .rows
            .iter()
            .map(|(n, _)| n.len())
            .chain(std::iter::once("client".len()))
            .max()
            .unwrap_or(0);
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.len()).collect();
        for (_, cells) in &self.rows {
            for (i, c) in cells.iter().enumerate() {
                widths[i] = widths[i].max(c.got.len() + if c.ok { 0 } else { 2 });
            }
        }
        let mut out = format!("{}\n", self.title);
        let _ = write!(out, "| {:name_w$} |", "client");
        for (c, w) in self.columns.iter().zip(&widths) {
            let _ = write!(out, " {c:w$} |");
        }
        out.push('\n');
        let _ = write!(out, "|{}|", "-".repeat(name_w + 2));
        for w in &widths {
            let _ = write!(out, "{}|", "-".repeat(w + 2));
        }
        out.push('\n');
        for (name, cells) in &self.rows {
            let _ = write!(out, "| {name:name_w$} |");
            for (c, w) in cells.iter().zip(&widths) {
                let text = if c.ok {
                    c.got.clone()
                } else {
                    format!("{} ✗", c.got)
                };
                let _ = write!(out, " {text:w$} |");
            }
            out.push('\n');
        }
        out
    }

    /// Prints the table and fails listing every cell that is not what it must be.
    fn assert_all(&self) {
        let rendered = self.render();
        eprintln!("\n{rendered}");
        let wrong: Vec<String> = self
            .rows
            .iter()
            .flat_map(|(name, cells)| {
                cells
                    .iter()
                    .zip(&self.columns)
                    .filter(|(c, _)| !c.ok)
                    .map(move |(c, col)| {
                        format!("{name} × {col}: got {}, expected {}", c.got, c.expected)
                    })
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{} cell(s) wrong:\n{}\n\n{rendered}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}

/// A JSON request's cell: `expected` status (and for 401, a `WWW-Authenticate`).
fn json_cell(got: &Fetched, expected: u16) -> Cell {
    let mut ok = got.status == expected;
    let mut text = got.status.to_string();
    if got.status == 401 && got.header("www-authenticate").is_none() {
        ok = false;
        text.push_str(" without WWW-Authenticate");
    }
    if got.status != 200 {
        let body = got.text();
        if body.contains("\"versions\"") || body.contains("\"archives\"") {
            ok = false;
            text.push_str(" with data");
        }
    }
    Cell {
        got: text,
        expected: expected.to_string(),
        ok,
    }
}

/// A download's cell: 200 must carry exactly `package` (with `cache_control` and, if given,
/// `X-Cache`); a refusal must not carry it.
fn download_cell(
    got: &Fetched,
    package: &[u8],
    expected: u16,
    cache_control: &str,
    x_cache: Option<&str>,
) -> Cell {
    let mut problems = Vec::new();
    if got.status == 200 {
        if got.body != package {
            problems.push("WRONG BYTES");
        }
        if !got
            .header("cache-control")
            .is_some_and(|c| c.starts_with(cache_control))
        {
            problems.push("cache-control");
        }
        if let Some(x) = x_cache {
            if got.header("x-cache") != Some(x) {
                problems.push("x-cache");
            }
        }
    } else if got.body == package {
        problems.push("WITH THE PACKAGE");
    }
    if got.status == 401 && got.header("www-authenticate").is_none() {
        problems.push("no WWW-Authenticate");
    }
    let mut text = got.status.to_string();
    if got.status == 200 && problems.is_empty() {
        text.push_str(" bytes ok");
        if let Some(x) = got.header("x-cache") {
            text.push_str(&format!(" {x}"));
        }
    }
    for p in &problems {
        text.push(' ');
        text.push_str(p);
    }
    Cell {
        ok: got.status == expected && problems.is_empty(),
        got: text,
        expected: match (expected, x_cache) {
            (200, Some(x)) => format!("200 with the exact bytes, {cache_control}, X-Cache {x}"),
            (200, None) => format!("200 with the exact bytes, {cache_control}"),
            (s, _) => format!("{s} without the package"),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Status of `GET /v2/<repo>/tags/list` asked of the registry directly with `auth`.
async fn origin_status(registry: &Registry, auth: Option<&str>) -> u16 {
    let mut req = plain_client().get(format!("{}v2/{FOO_REPO}/tags/list", registry.url()));
    if let Some(a) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    req.send()
        .await
        .expect("ask the registry")
        .status()
        .as_u16()
}

fn packages() -> Vec<(&'static str, Vec<u8>)> {
    PLATFORMS
        .iter()
        .map(|p| (*p, fake_provider_zip_for("foo", "1.0.0", p)))
        .collect()
}

fn package_for<'a>(packages: &'a [(&str, Vec<u8>)], platform: &str) -> &'a [u8] {
    &packages.iter().find(|(p, _)| *p == platform).unwrap().1
}

/// Flips one alphanumeric character in the middle of the `t` parameter.
fn tamper_token(url: &url::Url) -> url::Url {
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "t")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{url} has no t= parameter"));
    let mut chars: Vec<char> = token.chars().collect();
    let middle = chars.len() / 2;
    let pos = (middle..chars.len())
        .chain(0..middle)
        .find(|&i| chars[i].is_ascii_alphanumeric())
        .expect("an alphanumeric character");
    chars[pos] = if chars[pos] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let mut out = url.clone();
    out.query_pairs_mut().clear().append_pair("t", &tampered);
    assert_ne!(&out, url);
    out
}

fn without_query(url: &url::Url) -> url::Url {
    let mut out = url.clone();
    out.set_query(None);
    out
}

/// The download URL the mirror would issue for `platform`, without any query.
fn bare_download_url(mirror_url: &str, package: &[u8], platform: &str) -> String {
    format!(
        "{mirror_url}{FOO}/download/sha256/{}/terraform-provider-foo_1.0.0_{platform}.zip",
        sha256_hex(package)
    )
}

// ---------------------------------------------------------------------------------------------
// The matrix over an authenticating registry, proxy_packages = true
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_with_sealed_download_urls() {
    let registry = Registry::start(RegistryAuth::Silly);
    let packages = packages();
    push_seed_layout(
        &registry,
        FOO_REPO,
        "1.0.0",
        &packages
            .iter()
            .map(|(p, z)| (*p, z.clone()))
            .collect::<Vec<_>>(),
        registry.push_auth(),
    )
    .await;
    // The silly rules, as the origin itself applies them.
    for who in CLIENTS {
        let status = origin_status(&registry, who.auth).await;
        assert_eq!(
            status,
            if who.origin_accepts { 200 } else { 401 },
            "the registry's own answer to {} differs from distribution's silly auth rule",
            who.name
        );
    }
    let cert = TestCert::generate();
    let cache = tempfile::Builder::new()
        .prefix("odtr-auth-matrix-")
        .tempdir()
        .expect("tempdir");
    let registry_url = registry.url();
    let config = with_cache(
        &MirrorConfig::new(&cert, &registry_url, true).to_hcl(),
        cache.path(),
        "1GiB",
    );
    let server = Server::start(&config);
    let client = https_client(&cert);
    let mirror = server.mirror_url();
    let index_url = format!("{mirror}{FOO}/index.json");
    let version_url = format!("{mirror}{FOO}/1.0.0.json");

    // The right client caches one package first.
    let right_archives = fetch_archives(&client, &mirror, FOO, "1.0.0", Some(RIGHT)).await;
    let right_url = right_archives[CACHED_PLATFORM].url.clone();
    let cached_package = package_for(&packages, CACHED_PLATFORM);
    let first = fetch(&client, right_url.as_str(), None).await;
    first.expect_status(200);
    assert!(
        first.body == cached_package,
        "the right client's first download"
    );
    // Filed away just after the last byte went out.
    assert!(
        wait_until(Duration::from_secs(10), || cache_blob_files(cache.path())
            .iter()
            .any(|(hex, _)| *hex == sha256_hex(cached_package))),
        "the right client's download was not cached"
    );

    let mut table = Table::new(
        "Silly-auth registry, proxy_packages = true (P = the package the right client cached first)",
        &[
            "index.json",
            "1.0.0.json",
            "own URL (cold)",
            "P, own URL",
            "P, right's URL",
            "P, right's URL w/o t=",
            "P, right's URL tampered",
        ],
    );
    for (i, who) in CLIENTS.iter().enumerate() {
        let expected_json = if who.origin_accepts { 200 } else { 401 };
        let mut cells = Vec::new();
        let index = fetch(&client, &index_url, who.auth).await;
        let mut index_cell = json_cell(&index, expected_json);
        if index.status == 200 && index_versions(&index) != vec!["1.0.0".to_owned()] {
            index_cell.ok = false;
            index_cell.got.push_str(" wrong versions");
        }
        cells.push(index_cell);
        let version = fetch(&client, &version_url, who.auth).await;
        cells.push(json_cell(&version, expected_json));
        let own = if version.status == 200 {
            Some(fetch_archives(&client, &mirror, FOO, "1.0.0", who.auth).await)
        } else {
            None
        };
        match &own {
            Some(archives) => {
                // Own package, never fetched before: a cold fetch with this client's credential.
                let platform = PLATFORMS[i];
                let url = &archives[platform].url;
                let got = fetch(&client, url.as_str(), None).await;
                let mut cell = download_cell(
                    &got,
                    package_for(&packages, platform),
                    200,
                    "private",
                    Some("MISS"),
                );
                if url.query_pairs().all(|(k, _)| k != "t") {
                    cell.ok = false;
                    cell.got.push_str(" (URL without t=)");
                }
                cells.push(cell);
                // P, through this client's own URL: from the cache.
                let got = fetch(&client, archives[CACHED_PLATFORM].url.as_str(), None).await;
                cells.push(download_cell(
                    &got,
                    cached_package,
                    200,
                    "private",
                    Some("HIT"),
                ));
            }
            None => {
                cells.push(Cell::na("n/a (no URL)"));
                // No URL to use: the package's path with no token, with this client's header.
                let got = fetch(
                    &client,
                    &bare_download_url(&mirror, cached_package, CACHED_PLATFORM),
                    who.auth,
                )
                .await;
                let mut cell = download_cell(&got, cached_package, 401, "private", None);
                cell.got = format!("{} (bare path)", cell.got);
                cells.push(cell);
            }
        }
        // The right client's URL: the sealed credential is the authority, whoever holds it.
        let got = fetch(&client, right_url.as_str(), who.auth).await;
        cells.push(download_cell(
            &got,
            cached_package,
            200,
            "private",
            Some("HIT"),
        ));
        // ... without its token: refused, even with a header the origin would accept.
        let got = fetch(&client, without_query(&right_url).as_str(), who.auth).await;
        cells.push(download_cell(&got, cached_package, 401, "private", None));
        // ... tampered: refused.
        let got = fetch(&client, tamper_token(&right_url).as_str(), who.auth).await;
        cells.push(download_cell(&got, cached_package, 403, "private", None));
        table.rows.push((who.name.to_owned(), cells));
    }
    table.assert_all();
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
    // Sealed credentials never reach the log.
    let token = right_url
        .query_pairs()
        .find(|(k, _)| k == "t")
        .map(|(_, v)| v.into_owned())
        .expect("t=");
    assert!(
        !stderr.contains(&token),
        "a sealed download token was logged:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// An anonymous registry, proxy_packages = false: everyone gets everything
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_anonymous_registry_without_sealed_urls() {
    let registry = Registry::start(RegistryAuth::None);
    let packages = packages();
    push_seed_layout(
        &registry,
        FOO_REPO,
        "1.0.0",
        &packages
            .iter()
            .map(|(p, z)| (*p, z.clone()))
            .collect::<Vec<_>>(),
        None,
    )
    .await;
    let cert = TestCert::generate();
    let cache = tempfile::Builder::new()
        .prefix("odtr-auth-matrix-anon-")
        .tempdir()
        .expect("tempdir");
    let registry_url = registry.url();
    let config = with_cache(
        &MirrorConfig::new(&cert, &registry_url, false).to_hcl(),
        cache.path(),
        "1GiB",
    );
    let server = Server::start(&config);
    let client = https_client(&cert);
    let mirror = server.mirror_url();
    let index_url = format!("{mirror}{FOO}/index.json");
    let version_url = format!("{mirror}{FOO}/1.0.0.json");
    let clients: Vec<&Who> = CLIENTS
        .iter()
        .filter(|w| matches!(w.auth, None | Some("Basic garbage") | Some(RIGHT)))
        .collect();

    let right_archives = fetch_archives(&client, &mirror, FOO, "1.0.0", Some(RIGHT)).await;
    let cached_package = package_for(&packages, CACHED_PLATFORM);
    let first = fetch(
        &client,
        right_archives[CACHED_PLATFORM].url.as_str(),
        Some(RIGHT),
    )
    .await;
    first.expect_status(200);
    assert!(first.body == cached_package);

    let mut table = Table::new(
        "Anonymous registry, proxy_packages = false (P = cached first by the right client)",
        &[
            "index.json",
            "1.0.0.json",
            "own URL (cold)",
            "P, own URL",
            "P, URL + bogus t=",
        ],
    );
    for (i, who) in clients.iter().enumerate() {
        let mut cells = Vec::new();
        let index = fetch(&client, &index_url, who.auth).await;
        cells.push(json_cell(&index, 200));
        let version = fetch(&client, &version_url, who.auth).await;
        cells.push(json_cell(&version, 200));
        if version.status != 200 {
            table.rows.push((who.name.to_owned(), cells));
            continue;
        }
        let archives = fetch_archives(&client, &mirror, FOO, "1.0.0", who.auth).await;
        let platform = PLATFORMS[i];
        let url = &archives[platform].url;
        let got = fetch(&client, url.as_str(), None).await;
        let mut cell = download_cell(
            &got,
            package_for(&packages, platform),
            200,
            "public",
            Some("MISS"),
        );
        if url.query().is_some() {
            cell.ok = false;
            cell.got.push_str(" (URL has a query)");
        }
        cells.push(cell);
        let p_url = &archives[CACHED_PLATFORM].url;
        let got = fetch(&client, p_url.as_str(), None).await;
        cells.push(download_cell(
            &got,
            cached_package,
            200,
            "public",
            Some("HIT"),
        ));
        let bogus = format!("{p_url}?t=bogus");
        let got = fetch(&client, &bogus, who.auth).await;
        cells.push(download_cell(
            &got,
            cached_package,
            200,
            "public",
            Some("HIT"),
        ));
        table.rows.push((who.name.to_owned(), cells));
    }
    table.assert_all();
}

// ---------------------------------------------------------------------------------------------
// A package warmed with server-side credentials does not leak to anonymous clients
// ---------------------------------------------------------------------------------------------

/// Runs the binary with `config_hcl` and extra environment; killed after 60 s.
fn run_cli_env(config_hcl: &str, args: &[&str], env: &[(&str, &Path)]) -> CliOutput {
    let binary = env!("CARGO_BIN_EXE_oci-distribution-terraform-registry");
    let dir = tempfile::Builder::new()
        .prefix("odtr-cli-")
        .tempdir()
        .expect("tempdir");
    let config_path = dir.path().join("config.hcl");
    fs::write(&config_path, config_hcl).expect("write config");
    let out_path = dir.path().join("stdout.log");
    let err_path = dir.path().join("stderr.log");
    let mut cmd = Command::new(binary);
    cmd.arg(format!("--config={}", config_path.display()))
        .args(args)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env("HOME", dir.path())
        .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&out_path).unwrap()))
        .stderr(Stdio::from(File::create(&err_path).unwrap()));
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the binary");
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    CliOutput {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_warmed_with_credentials_does_not_leak_to_anonymous_clients() {
    use base64::Engine;
    let registry = Registry::start(RegistryAuth::Silly);
    let local = local_platform();
    let local_zip = fake_provider_zip_for("foo", "1.0.0", &local);
    let other_platform = if local == "darwin_arm64" {
        "linux_amd64"
    } else {
        "darwin_arm64"
    };
    let other_zip = fake_provider_zip_for("foo", "1.0.0", other_platform);
    push_seed_layout(
        &registry,
        FOO_REPO,
        "1.0.0",
        &[
            (local.as_str(), local_zip.clone()),
            (other_platform, other_zip.clone()),
        ],
        registry.push_auth(),
    )
    .await;
    let cert = TestCert::generate();
    let cache = tempfile::Builder::new()
        .prefix("odtr-auth-warm-")
        .tempdir()
        .expect("tempdir");
    let registry_url = registry.url();
    let plain_config = with_cache(
        &MirrorConfig::new(&cert, &registry_url, false).to_hcl(),
        cache.path(),
        "1GiB",
    );

    // Server-side credentials for the registry, as `docker login` leaves them.
    let docker = tempfile::Builder::new()
        .prefix("odtr-docker-config-")
        .tempdir()
        .expect("tempdir");
    let auth = base64::engine::general_purpose::STANDARD.encode("warm-user:warm-password");
    fs::write(
        docker.path().join("config.json"),
        serde_json::json!({ "auths": { format!("127.0.0.1:{}", registry.port()): { "auth": auth } } })
            .to_string(),
    )
    .unwrap();
    let spec = format!("{FOO}@1.0.0");
    let warm = run_cli_env(
        &plain_config,
        &["warm", "--platform", &local, &spec],
        &[("DOCKER_CONFIG", docker.path())],
    );
    assert!(warm.success(), "warm with credentials failed:\n{warm}");
    assert!(
        cache_blob_files(cache.path())
            .iter()
            .any(|(hex, _)| *hex == sha256_hex(&local_zip)),
        "warm did not cache the package:\n{warm}"
    );
    // Without credentials, warm itself is refused by the origin (the registry does need them).
    let anon_cache = tempfile::Builder::new()
        .prefix("odtr-auth-warm-anon-")
        .tempdir()
        .expect("tempdir");
    let anon_warm = run_cli_env(
        &with_cache(
            &MirrorConfig::new(&cert, &registry_url, false).to_hcl(),
            anon_cache.path(),
            "1GiB",
        ),
        &["warm", "--platform", &local, &spec],
        &[("DOCKER_CONFIG", anon_cache.path())],
    );
    assert!(
        !anon_warm.success(),
        "warm without credentials succeeded against an authenticating registry:\n{anon_warm}"
    );

    let client = https_client(&cert);
    let mut table = Table::new(
        "Silly-auth registry; the local package was warmed with server-side credentials",
        &[
            "index.json",
            "warmed package (bare path)",
            "other package (bare path)",
            "1.0.0.json",
            "warmed package, own URL",
        ],
    );

    // 1. proxy_packages = false: download URLs carry no credential, so a stored package is
    //    only handed out if it was fetched anonymously here before, or the origin says an
    //    anonymous client may have it (it does not).
    {
        let server = Server::start(&plain_config);
        let mirror = server.mirror_url();
        for who in CLIENTS
            .iter()
            .filter(|w| matches!(w.auth, None | Some(RIGHT)))
        {
            let mut cells = Vec::new();
            let index = fetch(&client, &format!("{mirror}{FOO}/index.json"), who.auth).await;
            cells.push(json_cell(
                &index,
                if who.auth.is_some() { 200 } else { 401 },
            ));
            // Package downloads carry no credential in the network mirror protocol: the
            // client's header is not used for them, whoever sends it.
            let got = fetch(
                &client,
                &bare_download_url(&mirror, &local_zip, &local),
                who.auth,
            )
            .await;
            cells.push(download_cell(&got, &local_zip, 401, "public", None));
            let got = fetch(
                &client,
                &bare_download_url(&mirror, &other_zip, other_platform),
                who.auth,
            )
            .await;
            cells.push(download_cell(&got, &other_zip, 401, "public", None));
            cells.push(Cell::na("-"));
            cells.push(Cell::na("-"));
            table
                .rows
                .push((format!("{} (proxy_packages = false)", who.name), cells));
        }
        let stderr = server.stderr();
        assert!(
            !stderr.contains("panicked"),
            "the server panicked:\n{stderr}"
        );
    }

    // 2. proxy_packages = true over the same cache: the right client's sealed URL is served
    //    from the cache; anonymous gets no URL and the bare path is refused.
    {
        let sealed_config = with_cache(
            &MirrorConfig::new(&cert, &registry_url, true).to_hcl(),
            cache.path(),
            "1GiB",
        );
        let server = Server::start(&sealed_config);
        let mirror = server.mirror_url();
        for who in CLIENTS
            .iter()
            .filter(|w| matches!(w.auth, None | Some(RIGHT)))
        {
            let mut cells = Vec::new();
            let expected_json = if who.auth.is_some() { 200 } else { 401 };
            let index = fetch(&client, &format!("{mirror}{FOO}/index.json"), who.auth).await;
            cells.push(json_cell(&index, expected_json));
            let got = fetch(
                &client,
                &bare_download_url(&mirror, &local_zip, &local),
                who.auth,
            )
            .await;
            cells.push(download_cell(&got, &local_zip, 401, "private", None));
            let got = fetch(
                &client,
                &bare_download_url(&mirror, &other_zip, other_platform),
                who.auth,
            )
            .await;
            cells.push(download_cell(&got, &other_zip, 401, "private", None));
            let version = fetch(&client, &format!("{mirror}{FOO}/1.0.0.json"), who.auth).await;
            cells.push(json_cell(&version, expected_json));
            if version.status == 200 {
                let archives = fetch_archives(&client, &mirror, FOO, "1.0.0", who.auth).await;
                let got = fetch(&client, archives[&local].url.as_str(), None).await;
                cells.push(download_cell(&got, &local_zip, 200, "private", Some("HIT")));
            } else {
                cells.push(Cell::na("n/a (no URL)"));
            }
            table
                .rows
                .push((format!("{} (proxy_packages = true)", who.name), cells));
        }
        let stderr = server.stderr();
        assert!(
            !stderr.contains("panicked"),
            "the server panicked:\n{stderr}"
        );
    }
    table.assert_all();
}

// ---------------------------------------------------------------------------------------------
// public = true: the server's own credential, and everyone gets everything
// ---------------------------------------------------------------------------------------------

/// The server binary started with extra environment (the harness's [`Server`] inherits the
/// test's); killed on drop.
struct EnvServer {
    child: std::process::Child,
    base_url: String,
    dir: tempfile::TempDir,
}

impl EnvServer {
    fn start(config_hcl: &str, env: &[(&str, &Path)]) -> EnvServer {
        use std::io::BufRead;
        let binary = env!("CARGO_BIN_EXE_oci-distribution-terraform-registry");
        let dir = tempfile::Builder::new()
            .prefix("odtr-env-server-")
            .tempdir()
            .expect("tempdir");
        let config_path = dir.path().join("config.hcl");
        fs::write(&config_path, config_hcl).expect("write config");
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config={}", config_path.display()))
            .arg("server")
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .env("HOME", dir.path())
            .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                File::create(dir.path().join("stderr.log")).unwrap(),
            ));
        for var in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => EnvServer {
                child,
                base_url: if url.ends_with('/') {
                    url
                } else {
                    format!("{url}/")
                },
                dir,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server not ready within 20 s:\n{}",
                    fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
                );
            }
        }
    }

    fn mirror_url(&self) -> String {
        format!("{}mirror/", self.base_url)
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for EnvServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- server stderr -----\n{}\n-----", self.stderr());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_public_mirror_uses_the_servers_credential() {
    use base64::Engine;
    let registry = Registry::start(RegistryAuth::Silly);
    let packages = packages();
    push_seed_layout(
        &registry,
        FOO_REPO,
        "1.0.0",
        &packages
            .iter()
            .map(|(p, z)| (*p, z.clone()))
            .collect::<Vec<_>>(),
        registry.push_auth(),
    )
    .await;
    let cert = TestCert::generate();
    let cache = tempfile::Builder::new()
        .prefix("odtr-auth-public-")
        .tempdir()
        .expect("tempdir");
    let registry_url = registry.url();
    let mut mc = MirrorConfig::new(&cert, &registry_url, false);
    mc.extra_mirror = "  public = true";
    let config = with_cache(&mc.to_hcl(), cache.path(), "1GiB");
    let docker = tempfile::Builder::new()
        .prefix("odtr-docker-config-")
        .tempdir()
        .expect("tempdir");
    let auth = base64::engine::general_purpose::STANDARD.encode("server-user:server-password");
    fs::write(
        docker.path().join("config.json"),
        serde_json::json!({ "auths": { format!("127.0.0.1:{}", registry.port()): { "auth": auth } } })
            .to_string(),
    )
    .unwrap();
    let client = https_client(&cert);

    // Without a server credential, a public mirror is as anonymous as its server: refused.
    {
        let no_creds = tempfile::tempdir().expect("tempdir");
        let server = EnvServer::start(&config, &[("DOCKER_CONFIG", no_creds.path())]);
        let mirror = server.mirror_url();
        for who in CLIENTS {
            let got = fetch(&client, &format!("{mirror}{FOO}/index.json"), who.auth).await;
            let cell = json_cell(&got, 401);
            assert!(
                cell.ok,
                "public mirror with no server credential, {}: index.json {}",
                who.name, cell.got
            );
        }
    }

    let server = EnvServer::start(&config, &[("DOCKER_CONFIG", docker.path())]);
    let mirror = server.mirror_url();
    let index_url = format!("{mirror}{FOO}/index.json");
    let version_url = format!("{mirror}{FOO}/1.0.0.json");
    let cached_package = package_for(&packages, CACHED_PLATFORM);
    let first = fetch(
        &client,
        &bare_download_url(&mirror, cached_package, CACHED_PLATFORM),
        None,
    )
    .await;
    first.expect_status(200);
    assert!(first.body == cached_package);

    let mut table = Table::new(
        "Silly-auth registry, public = true, server credential from its docker config (P = cached first by an anonymous client)",
        &[
            "index.json",
            "1.0.0.json",
            "own URL (cold)",
            "P, own URL",
            "P, URL + bogus t=",
        ],
    );
    for (i, who) in CLIENTS.iter().enumerate() {
        let mut cells = Vec::new();
        let index = fetch(&client, &index_url, who.auth).await;
        cells.push(json_cell(&index, 200));
        let version = fetch(&client, &version_url, who.auth).await;
        let mut cell = json_cell(&version, 200);
        if version.status == 200
            && !version
                .header("cache-control")
                .is_some_and(|c| c.starts_with("public"))
        {
            cell.ok = false;
            cell.got.push_str(" not Cache-Control public");
        }
        cells.push(cell);
        if version.status != 200 {
            table.rows.push((who.name.to_owned(), cells));
            continue;
        }
        let archives = fetch_archives(&client, &mirror, FOO, "1.0.0", who.auth).await;
        let platform = PLATFORMS[i];
        let url = &archives[platform].url;
        let got = fetch(&client, url.as_str(), None).await;
        let mut cell = download_cell(
            &got,
            package_for(&packages, platform),
            200,
            "public",
            Some("MISS"),
        );
        if url.query().is_some() {
            cell.ok = false;
            cell.got.push_str(" (URL has a query)");
        }
        cells.push(cell);
        let p_url = &archives[CACHED_PLATFORM].url;
        let got = fetch(&client, p_url.as_str(), who.auth).await;
        cells.push(download_cell(
            &got,
            cached_package,
            200,
            "public",
            Some("HIT"),
        ));
        let got = fetch(&client, &format!("{p_url}?t=bogus"), who.auth).await;
        cells.push(download_cell(
            &got,
            cached_package,
            200,
            "public",
            Some("HIT"),
        ));
        table.rows.push((who.name.to_owned(), cells));
    }
    table.assert_all();
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
    assert!(
        !stderr.contains("server-password") && !stderr.contains(&auth),
        "the server's credential was logged:\n{stderr}"
    );
}
