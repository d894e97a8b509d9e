//! End-to-end: a mirror in front of a registry that requires authentication (distribution's
//! `silly` auth). The server passes the client's `Authorization` through to the registry, and
//! seals it into download URLs (`proxy_packages = true`) since Terraform does not send its
//! token with archive downloads.

mod common;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const TOKEN: &str = "abc";
const BEARER: &str = "Bearer abc";

struct Fixture {
    // Field order = drop order: stop the server before the registry.
    server: Server,
    cert: TestCert,
    _registry: Registry,
    /// Package for the local platform (digest A).
    local_zip: Vec<u8>,
    /// Package for darwin_arm64 (digest B).
    darwin_zip: Vec<u8>,
}

async fn setup(extra_server: &str) -> Fixture {
    let registry = Registry::start(RegistryAuth::Silly);
    let local = local_platform();
    assert_ne!(
        local, "darwin_arm64",
        "these tests assume another local platform"
    );
    let local_zip = fake_provider_zip_for("foo", "1.0.0", &local);
    let darwin_zip = fake_provider_zip_for("foo", "1.0.0", "darwin_arm64");
    push_seed_layout(
        &registry,
        FOO_REPO,
        "1.0.0",
        &[
            (local.as_str(), local_zip.clone()),
            ("darwin_arm64", darwin_zip.clone()),
        ],
        registry.push_auth(),
    )
    .await;
    let cert = TestCert::generate();
    let registry_url = registry.url();
    let mut config = MirrorConfig::new(&cert, &registry_url, true);
    config.extra_server = extra_server;
    let server = Server::start(&config.to_hcl());
    Fixture {
        server,
        cert,
        _registry: registry,
        local_zip,
        darwin_zip,
    }
}

/// Flips one character in the middle of the longest query parameter value (raw, no
/// re-encoding), keeping it in the same alphabet.
fn tamper_query(url: &url::Url) -> url::Url {
    let query = url
        .query()
        .unwrap_or_else(|| panic!("archive URL {url} has no query string (no sealed credential)"));
    let params: Vec<&str> = query.split('&').collect();
    let (which, _) = params
        .iter()
        .enumerate()
        .max_by_key(|(_, p)| p.split_once('=').map(|(_, v)| v.len()).unwrap_or(0))
        .unwrap();
    let (key, value) = params[which].split_once('=').expect("key=value");
    let mut chars: Vec<char> = value.chars().collect();
    // Pick an alphanumeric character near the middle (not part of a %XX escape).
    let middle = chars.len() / 2;
    let pos = (middle..chars.len())
        .chain(0..middle)
        .find(|&i| {
            chars[i].is_ascii_alphanumeric()
                && !(i >= 1 && chars[i - 1] == '%')
                && !(i >= 2 && chars[i - 2] == '%')
        })
        .expect("an alphanumeric character to flip");
    chars[pos] = if chars[pos] == 'A' { 'B' } else { 'A' };
    let tampered_value: String = chars.into_iter().collect();
    let mut new_params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
    new_params[which] = format!("{key}={tampered_value}");
    let mut tampered = url.clone();
    tampered.set_query(Some(&new_params.join("&")));
    assert_ne!(&tampered, url);
    tampered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_json_requests_are_challenged() {
    let fx = setup("").await;
    let client = https_client(&fx.cert);
    for path in ["index.json", "1.0.0.json"] {
        let url = format!("{}{FOO}/{path}", fx.server.mirror_url());
        let got = fetch(&client, &url, None).await;
        got.expect_status(401);
        assert!(
            got.header("www-authenticate").is_some(),
            "GET {url} (anonymous): 401 without WWW-Authenticate; headers {:?}",
            got.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_passed_through() {
    let fx = setup("").await;
    let client = https_client(&fx.cert);
    let url = format!("{}{FOO}/index.json", fx.server.mirror_url());
    let got = fetch(&client, &url, Some(BEARER)).await;
    got.expect_status(200);
    assert_eq!(
        got.json(),
        serde_json::json!({"versions": {"1.0.0": {}}}),
        "GET {url}"
    );
    let archives =
        fetch_archives(&client, &fx.server.mirror_url(), FOO, "1.0.0", Some(BEARER)).await;
    assert!(archives.contains_key(&local_platform()), "{archives:?}");
    assert!(archives.contains_key("darwin_arm64"), "{archives:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_init_with_token_succeeds() {
    let fx = setup("").await;
    let init = tokio::task::block_in_place(|| {
        terraform_init(
            &fx.server.mirror_url(),
            &fx.cert,
            &[(FOO, "1.0.0")],
            Some(TOKEN),
        )
    });
    assert!(init.success, "terraform init failed:\n{}", init.output);
    let lock = init.lock_file.expect("lock file");
    assert_eq!(lock_file_version(&lock, FOO).as_deref(), Some("1.0.0"));
    let hashes = lock_file_hashes(&lock, FOO);
    assert!(
        hashes.contains(&h1(&fx.local_zip)),
        "lock hashes {hashes:?} lack {}",
        h1(&fx.local_zip)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_init_without_token_fails() {
    let fx = setup("").await;
    let init = tokio::task::block_in_place(|| {
        terraform_init(&fx.server.mirror_url(), &fx.cert, &[(FOO, "1.0.0")], None)
    });
    assert!(
        !init.success,
        "terraform init without credentials succeeded against an authenticated origin:\n{}",
        init.output
    );
    // Terraform's wording for a 401 from the mirror.
    assert!(
        init.output.contains("authentication credentials"),
        "terraform init failed, but not because the mirror asked for credentials:\n{}",
        init.output
    );
    assert!(init.lock_file.is_none(), "a lock file was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_download_urls_cannot_be_tampered_with() {
    let fx = setup("").await;
    let client = https_client(&fx.cert);
    let archives =
        fetch_archives(&client, &fx.server.mirror_url(), FOO, "1.0.0", Some(BEARER)).await;
    let a = archives[&local_platform()].url.clone();
    let b = archives["darwin_arm64"].url.clone();

    // The genuine URLs work without any Authorization header.
    let got = fetch(&client, a.as_str(), None).await;
    got.expect_status(200);
    assert!(got.body == fx.local_zip, "GET {a}: not the package bytes");
    let got = fetch(&client, b.as_str(), None).await;
    got.expect_status(200);
    assert!(got.body == fx.darwin_zip, "GET {b}: not the package bytes");

    // One character flipped in the sealed value.
    let tampered = tamper_query(&a);
    fetch(&client, tampered.as_str(), None)
        .await
        .expect_status(403);

    // No query at all.
    let mut bare = a.clone();
    bare.set_query(None);
    let got = fetch(&client, bare.as_str(), None).await;
    assert!(
        got.status == 401 || got.status == 403,
        "GET {bare} (sealed query removed): expected 401 or 403, got {} body: {}",
        got.status,
        got.text()
    );

    // A's sealed credential on B's path.
    assert_ne!(
        a.path(),
        b.path(),
        "archive URLs of two packages share a path: {a} {b}"
    );
    let mut swapped = b.clone();
    swapped.set_query(a.query());
    fetch(&client, swapped.as_str(), None)
        .await
        .expect_status(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_download_urls_expire() {
    let fx = setup("  download_url_ttl = \"2s\"").await;
    let client = https_client(&fx.cert);
    let platform = local_platform();

    // Fresh URL: works.
    let archives =
        fetch_archives(&client, &fx.server.mirror_url(), FOO, "1.0.0", Some(BEARER)).await;
    let fresh = archives[&platform].url.clone();
    fetch(&client, fresh.as_str(), None)
        .await
        .expect_status(200);

    // Another URL, used after its TTL: refused.
    let archives =
        fetch_archives(&client, &fx.server.mirror_url(), FOO, "1.0.0", Some(BEARER)).await;
    let stale = archives[&platform].url.clone();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    fetch(&client, stale.as_str(), None)
        .await
        .expect_status(403);
}
