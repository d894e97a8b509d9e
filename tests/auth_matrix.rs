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
use std::fs;
use std::path::Path;
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

/// What a download must get: a status, and for a 200 the start of its `Cache-Control` and,
/// if given, its `X-Cache`.
#[derive(Clone, Copy)]
struct Want {
    status: u16,
    cache_control: &'static str,
    x_cache: Option<&'static str>,
}

impl Want {
    /// 200 with the package, from the cache.
    fn hit(cache_control: &'static str) -> Want {
        Want {
            status: 200,
            cache_control,
            x_cache: Some("HIT"),
        }
    }

    /// 200 with the package, fetched from the origin.
    fn miss(cache_control: &'static str) -> Want {
        Want {
            status: 200,
            cache_control,
            x_cache: Some("MISS"),
        }
    }

    /// `status`, without the package.
    fn refused(status: u16, cache_control: &'static str) -> Want {
        Want {
            status,
            cache_control,
            x_cache: None,
        }
    }
}

/// A download's cell: 200 must carry exactly `package` (with the `Cache-Control` and, if
/// given, the `X-Cache` of `want`); a refusal must not carry it.
fn download_cell(got: &Fetched, package: &[u8], want: Want) -> Cell {
    let Want {
        status: expected,
        cache_control,
        x_cache,
    } = want;
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

/// A registry (`auth`) holding foo 1.0.0 with one package per platform of [`PLATFORMS`].
async fn registry_with_packages(auth: RegistryAuth) -> (Registry, Vec<(&'static str, Vec<u8>)>) {
    let registry = Registry::start(auth);
    let packages = packages();
    push_seed_layout(
        &registry,
        FOO_REPO,
        "1.0.0",
        &packages,
        registry.push_auth(),
    )
    .await;
    (registry, packages)
}

/// A docker config directory holding `user_password` for the registry, as `docker login`
/// leaves it, and the `auth` value written there.
fn docker_config(registry: &Registry, user_password: &str) -> (tempfile::TempDir, String) {
    use base64::Engine;
    let docker = temp_dir("odtr-docker-config-");
    let auth = base64::engine::general_purpose::STANDARD.encode(user_password);
    fs::write(
        docker.path().join("config.json"),
        serde_json::json!({ "auths": { format!("127.0.0.1:{}", registry.port()): { "auth": auth } } })
            .to_string(),
    )
    .unwrap();
    (docker, auth)
}

/// `path` as an environment variable's value.
fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The server's log, after asserting that it shows no panic.
fn stderr_without_panic(server: &Server) -> String {
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
    stderr
}

/// The `t` parameter of a download URL.
fn sealed_token(url: &url::Url) -> String {
    url.query_pairs()
        .find(|(k, _)| k == "t")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{url} has no t= parameter"))
}

/// Flips one alphanumeric character in the middle of the `t` parameter.
fn tamper_token(url: &url::Url) -> url::Url {
    let token = sealed_token(url);
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

/// The mirror's `index.json` and `1.0.0.json` URLs of foo.
fn json_urls(mirror: &str) -> (String, String) {
    (
        format!("{mirror}{FOO}/index.json"),
        format!("{mirror}{FOO}/1.0.0.json"),
    )
}

/// P's first download, before the matrix: 200 with exactly its bytes.
async fn first_download(client: &reqwest::Client, url: &str, auth: Option<&str>, package: &[u8]) {
    let first = fetch(client, url, auth).await;
    first.expect_status(200);
    assert!(first.body == package, "the first download of P from {url}");
}

/// Fetches `url` with `auth` and judges the answer with [`json_cell`].
async fn fetch_json(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    expected: u16,
) -> (Fetched, Cell) {
    let got = fetch(client, url, auth).await;
    let cell = json_cell(&got, expected);
    (got, cell)
}

/// Fetches `url` with `auth` and judges the answer with [`download_cell`].
async fn fetch_download(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    package: &[u8],
    want: Want,
) -> Cell {
    let got = fetch(client, url, auth).await;
    download_cell(&got, package, want)
}

/// "own URL (cold)": the package of `platform`, never fetched before, through the URL the
/// client's `archives` name, with no header: 200 with the exact bytes, `cache_control` and
/// `X-Cache: MISS`. `url_problem` says what is wrong with the URL itself, if anything.
async fn own_cold_cell(
    client: &reqwest::Client,
    archives: &std::collections::BTreeMap<String, Archive>,
    packages: &[(&str, Vec<u8>)],
    platform: &str,
    cache_control: &'static str,
    url_problem: fn(&url::Url) -> Option<&'static str>,
) -> Cell {
    let url = &archives[platform].url;
    let package = package_for(packages, platform);
    let mut cell = fetch_download(
        client,
        url.as_str(),
        None,
        package,
        Want::miss(cache_control),
    )
    .await;
    if let Some(problem) = url_problem(url) {
        cell.ok = false;
        cell.got.push_str(problem);
    }
    cell
}

/// The download cells of a client of a mirror whose URLs carry no credential: "own URL
/// (cold)", then P (cached before, `cached_package`) through its own URL sent with `p_auth`
/// ("P, own URL"), and with a bogus `t=` and the client's `auth` ("P, URL + bogus t="): all
/// 200, `public`, and every P a HIT.
async fn public_download_cells(
    client: &reqwest::Client,
    archives: &std::collections::BTreeMap<String, Archive>,
    packages: &[(&str, Vec<u8>)],
    platform: &str,
    p_auth: Option<&str>,
    auth: Option<&str>,
) -> Vec<Cell> {
    let cached_package = package_for(packages, CACHED_PLATFORM);
    let p_url = &archives[CACHED_PLATFORM].url;
    vec![
        own_cold_cell(client, archives, packages, platform, "public", |url| {
            url.query().is_some().then_some(" (URL has a query)")
        })
        .await,
        fetch_download(
            client,
            p_url.as_str(),
            p_auth,
            cached_package,
            Want::hit("public"),
        )
        .await,
        fetch_download(
            client,
            &format!("{p_url}?t=bogus"),
            auth,
            cached_package,
            Want::hit("public"),
        )
        .await,
    ]
}

/// The columns of a mirror where everyone gets everything (P = a package cached before).
const PUBLIC_COLUMNS: &[&str] = &[
    "index.json",
    "1.0.0.json",
    "own URL (cold)",
    "P, own URL",
    "P, URL + bogus t=",
];

/// The table `title` ([`PUBLIC_COLUMNS`]) of `clients` (the i-th owning platform
/// `PLATFORMS[i]`) of a mirror where everyone gets everything: index.json and 1.0.0.json 200
/// (`check_version` may fault the latter further), then [`public_download_cells`], P through
/// the client's own URL sent with its header if `p_with_header`, else with none.
async fn public_table(
    title: &str,
    clients: &[&Who],
    client: &reqwest::Client,
    mirror: &str,
    packages: &[(&str, Vec<u8>)],
    p_with_header: bool,
    check_version: fn(&Fetched, &mut Cell),
) -> Table {
    let mut table = Table::new(title, PUBLIC_COLUMNS);
    let (index_url, version_url) = json_urls(mirror);
    for (i, who) in clients.iter().enumerate() {
        let (_, index_cell) = fetch_json(client, &index_url, who.auth, 200).await;
        let mut cells = vec![index_cell];
        let (version, mut version_cell) = fetch_json(client, &version_url, who.auth, 200).await;
        check_version(&version, &mut version_cell);
        cells.push(version_cell);
        if version.status == 200 {
            let archives = fetch_archives(client, mirror, FOO, "1.0.0", who.auth).await;
            let p_auth = if p_with_header { who.auth } else { None };
            cells.extend(
                public_download_cells(client, &archives, packages, PLATFORMS[i], p_auth, who.auth)
                    .await,
            );
        }
        table.rows.push((who.name.to_owned(), cells));
    }
    table
}

/// The cells of a client asking for the bare path (no `t=`) of each of `packages` with its
/// header: refused with 401, whatever the header.
async fn bare_path_cells(
    client: &reqwest::Client,
    mirror: &str,
    auth: Option<&str>,
    packages: &[(&str, &[u8])],
    cache_control: &'static str,
) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (platform, package) in packages {
        let url = bare_download_url(mirror, package, platform);
        let want = Want::refused(401, cache_control);
        cells.push(fetch_download(client, &url, auth, package, want).await);
    }
    cells
}

// ---------------------------------------------------------------------------------------------
// The matrix over an authenticating registry, proxy_packages = true
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_with_sealed_download_urls() {
    let (registry, packages) = registry_with_packages(RegistryAuth::Silly).await;
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
    let cache = temp_dir("odtr-auth-matrix-");
    let config = cached_mirror_config(&cert, &registry.url(), true, cache.path(), "1GiB");
    let server = Server::start(&config);
    let client = https_client(&cert);
    let mirror = server.mirror_url();
    let (index_url, version_url) = json_urls(&mirror);

    // The right client caches one package first.
    let right_archives = fetch_archives(&client, &mirror, FOO, "1.0.0", Some(RIGHT)).await;
    let right_url = right_archives[CACHED_PLATFORM].url.clone();
    let cached_package = package_for(&packages, CACHED_PLATFORM);
    first_download(&client, right_url.as_str(), None, cached_package).await;
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
        let (index, mut index_cell) =
            fetch_json(&client, &index_url, who.auth, expected_json).await;
        if index.status == 200 && index_versions(&index) != vec!["1.0.0".to_owned()] {
            index_cell.ok = false;
            index_cell.got.push_str(" wrong versions");
        }
        cells.push(index_cell);
        let (version, version_cell) =
            fetch_json(&client, &version_url, who.auth, expected_json).await;
        cells.push(version_cell);
        if version.status == 200 {
            let archives = fetch_archives(&client, &mirror, FOO, "1.0.0", who.auth).await;
            // Own package, never fetched before: a cold fetch with this client's credential.
            cells.push(
                own_cold_cell(
                    &client,
                    &archives,
                    &packages,
                    PLATFORMS[i],
                    "private",
                    |url| {
                        url.query_pairs()
                            .all(|(k, _)| k != "t")
                            .then_some(" (URL without t=)")
                    },
                )
                .await,
            );
            // P, through this client's own URL: from the cache.
            let p_url = archives[CACHED_PLATFORM].url.as_str();
            cells.push(
                fetch_download(&client, p_url, None, cached_package, Want::hit("private")).await,
            );
        } else {
            cells.push(Cell::na("n/a (no URL)"));
            // No URL to use: the package's path with no token, with this client's header.
            let mut cell = bare_path_cells(
                &client,
                &mirror,
                who.auth,
                &[(CACHED_PLATFORM, cached_package)],
                "private",
            )
            .await
            .remove(0);
            cell.got = format!("{} (bare path)", cell.got);
            cells.push(cell);
        }
        // The right client's URL: the sealed credential is the authority, whoever holds it;
        // without its token: refused, even with a header the origin would accept; tampered:
        // refused.
        for (url, want) in [
            (right_url.clone(), Want::hit("private")),
            (without_query(&right_url), Want::refused(401, "private")),
            (tamper_token(&right_url), Want::refused(403, "private")),
        ] {
            cells.push(fetch_download(&client, url.as_str(), who.auth, cached_package, want).await);
        }
        table.rows.push((who.name.to_owned(), cells));
    }
    table.assert_all();
    let stderr = stderr_without_panic(&server);
    // Sealed credentials never reach the log.
    let token = sealed_token(&right_url);
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
    let (registry, packages) = registry_with_packages(RegistryAuth::None).await;
    let cert = TestCert::generate();
    let cache = temp_dir("odtr-auth-matrix-anon-");
    let config = cached_mirror_config(&cert, &registry.url(), false, cache.path(), "1GiB");
    let server = Server::start(&config);
    let client = https_client(&cert);
    let mirror = server.mirror_url();
    let clients: Vec<&Who> = CLIENTS
        .iter()
        .filter(|w| matches!(w.auth, None | Some("Basic garbage") | Some(RIGHT)))
        .collect();

    let right_archives = fetch_archives(&client, &mirror, FOO, "1.0.0", Some(RIGHT)).await;
    let cached_package = package_for(&packages, CACHED_PLATFORM);
    let right_url = right_archives[CACHED_PLATFORM].url.as_str();
    first_download(&client, right_url, Some(RIGHT), cached_package).await;

    public_table(
        "Anonymous registry, proxy_packages = false (P = cached first by the right client)",
        &clients,
        &client,
        &mirror,
        &packages,
        false,
        |_, _| {},
    )
    .await
    .assert_all();
}

// ---------------------------------------------------------------------------------------------
// A package warmed with server-side credentials does not leak to anonymous clients
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_warmed_with_credentials_does_not_leak_to_anonymous_clients() {
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
    let cache = temp_dir("odtr-auth-warm-");
    let registry_url = registry.url();
    let plain_config = cached_mirror_config(&cert, &registry_url, false, cache.path(), "1GiB");

    // Server-side credentials for the registry, as `docker login` leaves them.
    let (docker, _) = docker_config(&registry, "warm-user:warm-password");
    let spec = format!("{FOO}@1.0.0");
    let warm = run_cli_with_env(
        &plain_config,
        &["warm", "--platform", &local, &spec],
        &[("DOCKER_CONFIG", path_str(docker.path()))],
        Duration::from_secs(60),
    );
    assert!(warm.success(), "warm with credentials failed:\n{warm}");
    assert!(
        cache_blob_files(cache.path())
            .iter()
            .any(|(hex, _)| *hex == sha256_hex(&local_zip)),
        "warm did not cache the package:\n{warm}"
    );
    // Without credentials, warm itself is refused by the origin (the registry does need them).
    let anon_cache = temp_dir("odtr-auth-warm-anon-");
    let anon_warm = run_cli_with_env(
        &cached_mirror_config(&cert, &registry_url, false, anon_cache.path(), "1GiB"),
        &["warm", "--platform", &local, &spec],
        &[("DOCKER_CONFIG", path_str(anon_cache.path()))],
        Duration::from_secs(60),
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
    let both: &[(&str, &[u8])] = &[
        (local.as_str(), local_zip.as_slice()),
        (other_platform, other_zip.as_slice()),
    ];

    // proxy_packages = false: download URLs carry no credential, so a stored package is only
    // handed out if it was fetched anonymously here before, or the origin says an anonymous
    // client may have it (it does not).
    // proxy_packages = true over the same cache: the right client's sealed URL is served from
    // the cache; anonymous gets no URL and the bare path is refused.
    for (proxy_packages, cache_control) in [(false, "public"), (true, "private")] {
        let config =
            cached_mirror_config(&cert, &registry_url, proxy_packages, cache.path(), "1GiB");
        let server = Server::start(&config);
        let mirror = server.mirror_url();
        let (index_url, version_url) = json_urls(&mirror);
        for who in CLIENTS
            .iter()
            .filter(|w| matches!(w.auth, None | Some(RIGHT)))
        {
            let expected_json = if who.auth.is_some() { 200 } else { 401 };
            let (_, index_cell) = fetch_json(&client, &index_url, who.auth, expected_json).await;
            let mut cells = vec![index_cell];
            // Package downloads carry no credential in the network mirror protocol: the
            // client's header is not used for them, whoever sends it.
            cells.extend(bare_path_cells(&client, &mirror, who.auth, both, cache_control).await);
            if !proxy_packages {
                cells.push(Cell::na("-"));
                cells.push(Cell::na("-"));
            } else {
                let (version, version_cell) =
                    fetch_json(&client, &version_url, who.auth, expected_json).await;
                cells.push(version_cell);
                if version.status == 200 {
                    let archives = fetch_archives(&client, &mirror, FOO, "1.0.0", who.auth).await;
                    let url = archives[&local].url.as_str();
                    cells.push(
                        fetch_download(&client, url, None, &local_zip, Want::hit("private")).await,
                    );
                } else {
                    cells.push(Cell::na("n/a (no URL)"));
                }
            }
            table.rows.push((
                format!("{} (proxy_packages = {proxy_packages})", who.name),
                cells,
            ));
        }
        stderr_without_panic(&server);
    }
    table.assert_all();
}

// ---------------------------------------------------------------------------------------------
// public = true: the server's own credential, and everyone gets everything
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_public_mirror_uses_the_servers_credential() {
    let (registry, packages) = registry_with_packages(RegistryAuth::Silly).await;
    let cert = TestCert::generate();
    let cache = temp_dir("odtr-auth-public-");
    let registry_url = registry.url();
    let mut mc = MirrorConfig::new(&cert, &registry_url, false);
    mc.extra_mirror = "  public = true";
    let config = with_cache(&mc.to_hcl(), cache.path(), "1GiB");
    let (docker, auth) = docker_config(&registry, "server-user:server-password");
    let client = https_client(&cert);

    // Without a server credential, a public mirror is as anonymous as its server: refused.
    {
        let no_creds = tempfile::tempdir().expect("tempdir");
        let server = Server::start_with_env(
            &config,
            &[],
            &[("DOCKER_CONFIG", path_str(no_creds.path()))],
        );
        let (index_url, _) = json_urls(&server.mirror_url());
        for who in CLIENTS {
            let (_, cell) = fetch_json(&client, &index_url, who.auth, 401).await;
            assert!(
                cell.ok,
                "public mirror with no server credential, {}: index.json {}",
                who.name, cell.got
            );
        }
    }

    let server =
        Server::start_with_env(&config, &[], &[("DOCKER_CONFIG", path_str(docker.path()))]);
    let mirror = server.mirror_url();
    let cached_package = package_for(&packages, CACHED_PLATFORM);
    let bare_url = bare_download_url(&mirror, cached_package, CACHED_PLATFORM);
    first_download(&client, &bare_url, None, cached_package).await;

    let clients: Vec<&Who> = CLIENTS.iter().collect();
    public_table(
        "Silly-auth registry, public = true, server credential from its docker config (P = cached first by an anonymous client)",
        &clients,
        &client,
        &mirror,
        &packages,
        true,
        |version, cell| {
            if version.status == 200
                && !version
                    .header("cache-control")
                    .is_some_and(|c| c.starts_with("public"))
            {
                cell.ok = false;
                cell.got.push_str(" not Cache-Control public");
            }
        },
    )
    .await
    .assert_all();
    let stderr = stderr_without_panic(&server);
    assert!(
        !stderr.contains("server-password") && !stderr.contains(&auth),
        "the server's credential was logged:\n{stderr}"
    );
}
