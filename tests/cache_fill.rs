//! The verified package cache filling from the origin: one origin fetch for many concurrent
//! clients, serving from the cache while the origin is down, and never delivering or keeping
//! bytes that do not match their digest.

mod common;

use std::time::Duration;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const PLATFORM: &str = "linux_amd64";
const MIB: usize = 1024 * 1024;

async fn push_one(fx: &CacheFixture, version: &str, zip: &[u8]) -> String {
    let pushed = push_seed_layout(
        &fx.registry,
        FOO_REPO,
        version,
        &[(PLATFORM, zip.to_vec())],
        None,
    )
    .await;
    pushed.layer_digests[0]
        .trim_start_matches("sha256:")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_downloads_share_one_origin_fetch() {
    let fx = CacheFixture::start(false, "1GiB");
    let zip = random_provider_zip("foo", "1.0.0", 20 * MIB, 1);
    let hex = push_one(&fx, "1.0.0", &zip).await;
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    assert_eq!(fx.proxy.blob_gets(), 0);

    // Drip the origin's body (about 0.5 s for the whole package) so that all 50 requests
    // arrive while the one fill is running.
    fx.proxy.set_mode(ProxyMode::SlowBlobs(40 * MIB as u64));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        // One client (connection) per request, like 50 Terraform processes.
        let client = https_client(&fx.cert);
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            download_hashed(&client, &url, &[]).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let d = tokio::time::timeout(Duration::from_secs(45), t)
            .await
            .unwrap_or_else(|_| panic!("download {i} took over 45 s"))
            .unwrap();
        assert!(
            d.is_exactly(&zip),
            "download {i}: status {} len {} of {} error {:?}",
            d.status,
            d.len,
            zip.len(),
            d.error
        );
    }
    assert_eq!(
        fx.proxy.blob_gets(),
        1,
        "origin blob GETs for 50 concurrent cold downloads: {:#?}",
        fx.proxy.requests()
    );
    let cache = fx.cache_dir().to_owned();
    // The server's own figures (written to DIR/stats.json every few seconds): one miss, the
    // other 49 joined the running fill (or, if they came late, hit the kept copy).
    let mut stats = serde_json::Value::Null;
    let counted = wait_until(Duration::from_secs(12), || {
        stats = std::fs::read(cache.join("stats.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        n("hits") + n("misses") + n("joins") == 50
    });
    assert!(counted, "stats.json never counted 50 lookups: {stats}");
    assert_eq!(stats["misses"], 1, "{stats}");
    assert_eq!(stats["origin_fetches"], 1, "{stats}");
    assert!(
        stats["joins"].as_u64().unwrap() >= 1,
        "no request joined the fill: {stats}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || cache_blob_files(&cache)
            == vec![(hex.clone(), zip.len() as u64)]),
        "cache blob files {:?}",
        cache_blob_files(&cache)
    );
    assert!(
        wait_until(Duration::from_secs(5), || cache_temp_files(&cache)
            .is_empty()),
        "temp files left: {:?}",
        cache_temp_files(&cache)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_package_is_served_while_the_origin_is_down() {
    let mut fx = CacheFixture::start(false, "1GiB");
    let zip = random_provider_zip("foo", "1.0.0", MIB, 2);
    let hex = push_one(&fx, "1.0.0", &zip).await;
    // VERSION.json still goes to the origin: get it while the origin is up.
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    let first = download_hashed(&fx.client, &url, &[]).await;
    assert!(first.is_exactly(&zip), "first download: {first:?}");
    let cache = fx.cache_dir().to_owned();
    assert!(wait_until(Duration::from_secs(5), || cache_blob_files(
        &cache
    )
    .iter()
    .any(|(h, _)| *h == hex)));

    fx.proxy.set_mode(ProxyMode::Down);
    let second = download_hashed(&fx.client, &url, &[]).await;
    assert!(
        second.is_exactly(&zip),
        "download with the origin down: {second:?}\nserver stderr:\n{}",
        fx.server.stderr()
    );

    // Also after a restart: the cache is on disk, not in memory.
    fx.restart();
    let path = url::Url::parse(&url).unwrap();
    let url = format!(
        "{}{}",
        fx.server.base_url().trim_end_matches('/'),
        path.path()
    );
    let third = download_hashed(&fx.client, &url, &[]).await;
    assert!(
        third.is_exactly(&zip),
        "download after a restart with the origin down: {third:?}\nserver stderr:\n{}",
        fx.server.stderr()
    );
    assert_eq!(fx.proxy.blob_gets(), 1, "{:#?}", fx.proxy.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupting_origin_never_gets_a_package_delivered_or_cached() {
    let fx = CacheFixture::start(false, "1GiB");
    let zip = random_provider_zip("foo", "1.0.0", 4 * MIB, 3);
    let hex = push_one(&fx, "1.0.0", &zip).await;
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;

    fx.proxy.set_mode(ProxyMode::CorruptBlobs);
    let mut tasks = Vec::new();
    for i in 0..4 {
        // HTTP/2 (a reset stream) and HTTP/1.1 (a connection closed short of Content-Length).
        let client = if i % 2 == 0 {
            https_client(&fx.cert)
        } else {
            https_client_http1(&fx.cert)
        };
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            download_hashed(&client, &url, &[]).await
        }));
    }
    for t in tasks {
        let d = t.await.unwrap();
        let complete = d.status == 200 && d.error.is_none() && d.len == zip.len() as u64;
        assert!(
            !complete,
            "a corrupted package was delivered as a complete body (sha256 {} vs {}): {d:?}",
            d.sha256,
            sha256_hex(&zip)
        );
        assert!(
            d.status != 200 || d.error.is_some(),
            "a short body ended cleanly instead of aborting: {d:?}"
        );
    }
    let corrupt_fetches = fx.proxy.blob_gets();
    assert!(corrupt_fetches >= 1);
    let cache = fx.cache_dir().to_owned();
    assert!(
        wait_until(Duration::from_secs(5), || cache_temp_files(&cache)
            .is_empty()),
        "temp files left after a failed fill: {:?}",
        cache_temp_files(&cache)
    );
    assert_eq!(
        cache_blob_files(&cache),
        vec![],
        "a corrupted package was kept"
    );

    // The origin recovers: the next download fetches again and succeeds.
    fx.proxy.set_mode(ProxyMode::Normal);
    let d = download_hashed(&fx.client, &url, &[]).await;
    assert!(
        d.is_exactly(&zip),
        "download after the origin recovered: {d:?}\nserver stderr:\n{}",
        fx.server.stderr()
    );
    assert_eq!(fx.proxy.blob_gets(), corrupt_fetches + 1);
    assert!(
        wait_until(Duration::from_secs(5), || cache_blob_files(&cache)
            == vec![(hex.clone(), zip.len() as u64)]),
        "cache blob files {:?}",
        cache_blob_files(&cache)
    );
}
