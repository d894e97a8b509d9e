//! The origin going away: stale metadata (with a `Warning`) and cached packages keep
//! `terraform init` working, within `stale_if_error`; the cache survives a server restart.

mod common;

use std::time::{Duration, Instant};

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const BAR: &str = "registry.terraform.io/acme/bar";
const BAR_REPO: &str = "terraform-providers/registry.terraform.io/acme/bar";

/// Publishes foo 1.0.0 and bar 2.0.0 (local platform and linux_arm64/darwin_arm64).
async fn publish(registry: &Registry) -> Vec<Vec<u8>> {
    let local = local_platform();
    let other = if local == "darwin_arm64" {
        "linux_arm64"
    } else {
        "darwin_arm64"
    };
    let mut zips = Vec::new();
    for (repo, name, version) in [(FOO_REPO, "foo", "1.0.0"), (BAR_REPO, "bar", "2.0.0")] {
        let a = fake_provider_zip_for(name, version, &local);
        let b = fake_provider_zip_for(name, version, other);
        push_seed_layout(
            registry,
            repo,
            version,
            &[(local.as_str(), a.clone()), (other, b.clone())],
            registry.push_auth(),
        )
        .await;
        zips.push(a);
        zips.push(b);
    }
    zips
}

const PROVIDERS: &[(&str, &str)] = &[(FOO, "1.0.0"), (BAR, "2.0.0")];

/// Asks for everything once: index.json, VERSION.json, every archive (so the package cache
/// holds them all), then `terraform init`.
async fn warm(client: &reqwest::Client, server: &Server, cert: &TestCert) {
    for (addr, version) in PROVIDERS {
        fetch(
            client,
            &format!("{}{addr}/index.json", server.mirror_url()),
            None,
        )
        .await
        .expect_status(200);
        let archives = fetch_archives(client, &server.mirror_url(), addr, version, None).await;
        assert_eq!(archives.len(), 2);
        for a in archives.values() {
            let d = download_hashed(client, a.url.as_str(), &[]).await;
            assert_eq!(d.status, 200, "{} {d:?}", a.url);
        }
    }
    let init = terraform_init(&server.mirror_url(), cert, PROVIDERS, None);
    assert!(init.success, "terraform init (origin up):\n{}", init.output);
}

/// index.json and VERSION.json answered 200, stale (Warning), with the data; every archive
/// downloads; `terraform init` works.
async fn assert_served_stale(client: &reqwest::Client, server: &Server, cert: &TestCert) {
    for (addr, version) in PROVIDERS {
        let index = fetch(
            client,
            &format!("{}{addr}/index.json", server.mirror_url()),
            None,
        )
        .await;
        index.expect_status(200);
        assert_eq!(index_versions(&index), vec![version.to_string()]);
        assert!(
            index.header("warning").is_some(),
            "stale index.json without a Warning: {:?}",
            index.headers
        );
        let v = fetch(
            client,
            &format!("{}{addr}/{version}.json", server.mirror_url()),
            None,
        )
        .await;
        v.expect_status(200);
        assert!(
            v.header("warning").is_some(),
            "stale VERSION.json without a Warning: {:?}",
            v.headers
        );
        let archives = fetch_archives(client, &server.mirror_url(), addr, version, None).await;
        for a in archives.values() {
            let d = download_hashed(client, a.url.as_str(), &[]).await;
            assert_eq!(d.status, 200, "{} with the origin down: {d:?}", a.url);
            assert!(d.error.is_none(), "{d:?}");
        }
    }
    let init = terraform_init(&server.mirror_url(), cert, PROVIDERS, None);
    assert!(
        init.success,
        "terraform init with the origin down:\n{}\n--- server stderr ---\n{}",
        init.output,
        server.stderr()
    );
}

const POLICY: &str = r#"  index_max_age          = "2s"
  stale_while_revalidate = "1s"
  stale_if_error         = "forever"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_stale_metadata_and_cached_packages_still_serve_terraform_init() {
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    publish(&f.registry).await;
    warm(&f.client, &f.server, &f.cert).await;
    let warmed = Instant::now();
    f.proxy.set_mode(ProxyMode::Down);
    // Past index_max_age + stale_while_revalidate: every answer needs the origin, which fails.
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(warmed.elapsed()));
    let down = f.proxy.counts();
    assert_served_stale(&f.client, &f.server, &f.cert).await;
    let after = f.proxy.counts();
    assert!(
        after.tag_gets > down.tag_gets,
        "the server should still have tried the origin: {:?}",
        f.proxy.requests()
    );
    assert_eq!(
        after.blob_gets,
        down.blob_gets,
        "cached packages were fetched again: {:?}",
        f.proxy.requests()
    );
}

/// The registry process itself killed (connection refused), no proxy in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_killed_stale_metadata_and_cached_packages_still_serve_terraform_init() {
    let registry = Registry::start(RegistryAuth::None);
    publish(&registry).await;
    let cert = TestCert::generate();
    let cache = tempfile::tempdir().unwrap();
    let registry_url = registry.url();
    let mut mc = MirrorConfig::new(&cert, &registry_url, false);
    mc.extra_mirror = POLICY;
    let server = Server::start(&with_cache(&mc.to_hcl(), cache.path(), "1GiB"));
    let client = https_client(&cert);
    warm(&client, &server, &cert).await;
    let warmed = Instant::now();
    drop(registry);
    assert!(
        !accepts_connections(&registry_url),
        "the registry should be gone"
    );
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(warmed.elapsed()));
    assert_served_stale(&client, &server, &cert).await;
}

fn accepts_connections(url: &str) -> bool {
    let port = url::Url::parse(url).unwrap().port().unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Past stale_if_error, a failing origin is an error, not old data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_has_a_limit() {
    let f = MetaFixture::start(
        RegistryAuth::None,
        false,
        "  index_max_age = \"1s\"\n  stale_while_revalidate = \"0s\"\n  stale_if_error = \"4s\"\n",
        "",
    );
    publish(&f.registry).await;
    let index_url = f.index_url(FOO);
    let version_url = f.version_url(FOO, "1.0.0");
    f.get(&index_url, None).await.expect_status(200);
    f.get(&version_url, None).await.expect_status(200);
    let filled = Instant::now();
    f.proxy.set_mode(ProxyMode::Down);
    std::thread::sleep(Duration::from_millis(2000).saturating_sub(filled.elapsed()));
    for url in [&index_url, &version_url] {
        let a = f.get(url, None).await;
        a.expect_status(200);
        assert!(a.header("warning").is_some(), "{:?}", a.headers);
    }
    std::thread::sleep(Duration::from_millis(4600).saturating_sub(filled.elapsed()));
    for url in [&index_url, &version_url] {
        let a = f.get(url, None).await;
        assert!(
            a.status == 502 || a.status == 504,
            "GET {url} {:?} after the fill with the origin down and stale_if_error = 4s: {} {}",
            filled.elapsed(),
            a.status,
            a.text()
        );
    }
    // The origin back: fresh data again.
    f.proxy.set_mode(ProxyMode::Normal);
    let a = f.get(&index_url, None).await;
    a.expect_status(200);
    assert!(a.header("warning").is_none());
}

/// Stop the server, start a new one on the same cache directory with the origin down: the
/// cached metadata and packages are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_survives_a_restart_with_the_origin_down() {
    let mut f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    publish(&f.registry).await;
    warm(&f.client, &f.server, &f.cert).await;
    let warmed = Instant::now();
    f.proxy.set_mode(ProxyMode::Down);
    f.restart_with_args(&[]);
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(warmed.elapsed()));
    let index = f.get(&f.index_url(FOO), None).await;
    index.expect_status(200);
    let age: u64 = index.header("age").unwrap_or("0").parse().unwrap();
    assert!(
        age >= 3,
        "Age {age}: the entry should date from before the restart"
    );
    assert_served_stale(&f.client, &f.server, &f.cert).await;
}

/// The same after a crash (SIGKILL) a moment after the cache was filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_survives_a_crash_with_the_origin_down() {
    let mut f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    publish(&f.registry).await;
    warm(&f.client, &f.server, &f.cert).await;
    let warmed = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    f.server.kill9();
    f.proxy.set_mode(ProxyMode::Down);
    f.server = Server::start(&f.config);
    // The refresher may have refreshed entries just before the kill.
    std::thread::sleep(Duration::from_millis(5000).saturating_sub(warmed.elapsed()));
    assert_served_stale(&f.client, &f.server, &f.cert).await;
}
