//! Edge cases of the package cache: ranges against a hostile origin, eviction of a package
//! while it is being read, packages larger than the cache, cached copies and repositories
//! that lack them, abandoned downloads, damaged files found by `cache verify`, unknown digests.

mod common;

use std::time::Duration;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const BAR: &str = "registry.terraform.io/acme/bar";
const BAR_REPO: &str = "terraform-providers/registry.terraform.io/acme/bar";
const PLATFORM: &str = "linux_amd64";
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

async fn push_one(fx: &CacheFixture, repo: &str, version: &str, zip: &[u8]) -> String {
    let pushed = push_seed_layout(
        &fx.registry,
        repo,
        version,
        &[(PLATFORM, zip.to_vec())],
        None,
    )
    .await;
    pushed.layer_digests[0]
        .trim_start_matches("sha256:")
        .to_owned()
}

fn has_blob(dir: &std::path::Path, hex: &str) -> bool {
    cache_blob_files(dir).iter().any(|(h, _)| h == hex)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_range_against_a_corrupting_origin_is_an_error_not_bytes() {
    let fx = CacheFixture::start(false, "1GiB");
    let zip = random_provider_zip("foo", "1.0.0", MIB, 40);
    push_one(&fx, FOO_REPO, "1.0.0", &zip).await;
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    fx.proxy.set_mode(ProxyMode::CorruptBlobs);
    // The corrupted byte is in the middle; ask for a range around it and one before it.
    let middle = zip.len() / 2;
    for range in [
        format!("bytes={}-{}", middle - 5, middle + 5),
        "bytes=0-9".to_owned(),
    ] {
        let d = download_hashed(&fx.client, &url, &[("range", &range)]).await;
        assert!(
            d.status >= 500 && d.error.is_none(),
            "Range {range} against a corrupting origin: expected a 5xx, got {d:?}"
        );
    }
    let cache = fx.cache_dir().to_owned();
    assert!(wait_until(Duration::from_secs(5), || cache_temp_files(
        &cache
    )
    .is_empty()));
    assert_eq!(cache_blob_files(&cache), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_evicted_while_being_read_is_still_delivered_whole() {
    let fx = CacheFixture::start(false, "24MiB");
    let cache = fx.cache_dir().to_owned();
    let a = random_provider_zip("foo", "1.0.0", 16 * MIB, 41);
    let a_hex = push_one(&fx, FOO_REPO, "1.0.0", &a).await;
    let b = random_provider_zip("foo", "2.0.0", 16 * MIB, 42);
    let b_hex = push_one(&fx, FOO_REPO, "2.0.0", &b).await;
    let a_url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    let b_url = fx.archive_url(FOO, "2.0.0", PLATFORM).await;
    assert!(download_hashed(&fx.client, &a_url, &[])
        .await
        .is_exactly(&a));
    assert!(wait_until(Duration::from_secs(5), || has_blob(
        &cache, &a_hex
    )));

    // Start reading the cached A, stop after 256 KiB.
    let slow = https_client_http1(&fx.cert);
    let mut resp = slow.get(&a_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut received = Vec::new();
    while received.len() < 256 * KIB {
        let chunk = resp.chunk().await.unwrap().expect("body ended early");
        received.extend_from_slice(&chunk);
    }
    // B does not fit beside A: A is evicted while its download is paused.
    assert!(download_hashed(&fx.client, &b_url, &[])
        .await
        .is_exactly(&b));
    assert!(
        wait_until(Duration::from_secs(5), || !has_blob(&cache, &a_hex)
            && has_blob(&cache, &b_hex)),
        "A was not evicted for B: {:?}",
        cache_blob_files(&cache)
    );
    // The paused download of A still gets every byte.
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = resp.chunk().await.expect("reading the rest of A") {
            received.extend_from_slice(&chunk);
        }
    })
    .await;
    assert!(rest.is_ok(), "the rest of A did not arrive within 30 s");
    assert_eq!(received.len(), a.len());
    assert!(received == a, "A's bytes changed after its eviction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_larger_than_the_cache_stream_through_without_being_kept() {
    let fx = CacheFixture::start(false, "50KiB");
    let zip = random_provider_zip("foo", "1.0.0", 200 * KIB, 43);
    push_one(&fx, FOO_REPO, "1.0.0", &zip).await;
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let client = https_client(&fx.cert);
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            download_hashed(&client, &url, &[]).await
        }));
    }
    for t in tasks {
        let d = t.await.unwrap();
        assert!(d.is_exactly(&zip), "{d:?}");
    }
    // Ranges too, although the package is never kept.
    let d = download_hashed(&fx.client, &url, &[("range", "bytes=-5")]).await;
    assert_eq!(d.status, 206, "{d:?}");
    assert_eq!(d.sha256, sha256_hex(&zip[zip.len() - 5..]));
    let cache = fx.cache_dir().to_owned();
    assert!(wait_until(Duration::from_secs(5), || cache_temp_files(
        &cache
    )
    .is_empty()));
    assert_eq!(cache_blob_files(&cache), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_package_is_served_for_another_repository_only_if_the_origin_has_it_there() {
    let fx = CacheFixture::start(false, "1GiB");
    let cache = fx.cache_dir().to_owned();
    let zip = random_provider_zip("foo", "1.0.0", 128 * KIB, 44);
    let hex = push_one(&fx, FOO_REPO, "1.0.0", &zip).await;
    // BAR exists, but without this package.
    let other = random_provider_zip("bar", "1.0.0", 16 * KIB, 45);
    push_one(&fx, BAR_REPO, "1.0.0", &other).await;

    let foo_url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    assert!(download_hashed(&fx.client, &foo_url, &[])
        .await
        .is_exactly(&zip));
    assert!(wait_until(Duration::from_secs(5), || has_blob(
        &cache, &hex
    )));
    let bar_url = format!(
        "{}{BAR}/download/sha256/{hex}/terraform-provider-bar_1.0.0_{PLATFORM}.zip",
        fx.server.mirror_url()
    );
    let before = fx.proxy.counts();
    let d = download_hashed(&fx.client, &bar_url, &[]).await;
    assert_eq!(
        d.status, 404,
        "the cached package was served for a repository that lacks it: {d:?}"
    );
    let after = fx.proxy.counts();
    assert_eq!(
        after.blob_gets,
        before.blob_gets,
        "{:#?}",
        fx.proxy.requests()
    );

    // Once BAR has it too, the cached copy is served for BAR without downloading it again.
    push_one(&fx, BAR_REPO, "2.0.0", &zip).await;
    let d = download_hashed(&fx.client, &bar_url, &[]).await;
    assert!(d.is_exactly(&zip), "{d:?}");
    let d = download_hashed(&fx.client, &bar_url, &[]).await;
    assert!(d.is_exactly(&zip), "{d:?}");
    let last = fx.proxy.counts();
    assert_eq!(
        last.blob_gets,
        before.blob_gets,
        "{:#?}",
        fx.proxy.requests()
    );
    assert!(
        last.heads <= after.heads + 1,
        "the origin was asked more than once for BAR: {:#?}",
        fx.proxy.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_download_still_completes_the_fill() {
    let fx = CacheFixture::start(false, "1GiB");
    let cache = fx.cache_dir().to_owned();
    let zip = random_provider_zip("foo", "1.0.0", 2 * MIB, 46);
    let hex = push_one(&fx, FOO_REPO, "1.0.0", &zip).await;
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    fx.proxy.set_mode(ProxyMode::SlowBlobs(2 * MIB as u64));
    {
        let client = https_client(&fx.cert);
        let mut resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let _ = resp.chunk().await;
        // The client gives up here.
    }
    assert!(
        wait_until(Duration::from_secs(10), || has_blob(&cache, &hex)),
        "the fill stopped when its only client went away"
    );
    fx.proxy.set_mode(ProxyMode::Down);
    let d = download_hashed(&fx.client, &url, &[]).await;
    assert!(d.is_exactly(&zip), "{d:?}");
    assert_eq!(fx.proxy.blob_gets(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_verify_removes_a_damaged_file_and_the_server_fetches_it_again() {
    let mut fx = CacheFixture::start(false, "1GiB");
    let cache = fx.cache_dir().to_owned();
    let zip = random_provider_zip("foo", "1.0.0", 64 * KIB, 47);
    let hex = push_one(&fx, FOO_REPO, "1.0.0", &zip).await;
    let good = random_provider_zip("foo", "2.0.0", 64 * KIB, 48);
    let good_hex = push_one(&fx, FOO_REPO, "2.0.0", &good).await;
    for v in ["1.0.0", "2.0.0"] {
        let url = fx.archive_url(FOO, v, PLATFORM).await;
        assert!(download_hashed(&fx.client, &url, &[]).await.status == 200);
    }
    assert!(wait_until(Duration::from_secs(5), || has_blob(
        &cache, &hex
    ) && has_blob(
        &cache, &good_hex
    )));
    fx.stop_server();

    // Flip a byte in the stored file (same size).
    let path = cache.join("blobs/sha256").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let verify = run_cli(fx.config(), &["cache", "verify"], Duration::from_secs(30));
    assert_eq!(
        verify.status.and_then(|s| s.code()),
        Some(1),
        "cache verify should fail:\n{verify}"
    );
    assert!(
        verify.stdout.contains(&format!("BAD  sha256:{hex}"))
            && verify.stdout.contains("1 good, 1 bad"),
        "cache verify:\n{verify}"
    );
    assert!(!path.exists(), "the damaged file was not removed");
    let again = run_cli(fx.config(), &["cache", "verify"], Duration::from_secs(30));
    assert!(again.success(), "second verify:\n{again}");

    fx.server = Server::start(fx.config());
    let before = fx.proxy.blob_gets();
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    let d = download_hashed(&fx.client, &url, &[]).await;
    assert!(d.is_exactly(&zip), "{d:?}");
    assert_eq!(fx.proxy.blob_gets(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_digest_is_404_and_nothing_is_cached() {
    let fx = CacheFixture::start(false, "1GiB");
    let zip = random_provider_zip("foo", "1.0.0", 16 * KIB, 49);
    push_one(&fx, FOO_REPO, "1.0.0", &zip).await;
    let missing = sha256_hex(b"no such package");
    let url = format!(
        "{}{FOO}/download/sha256/{missing}/terraform-provider-foo_1.0.0_{PLATFORM}.zip",
        fx.server.mirror_url()
    );
    for headers in [vec![], vec![("range", "bytes=0-9")]] {
        let d = tokio::time::timeout(
            Duration::from_secs(15),
            download_hashed(&fx.client, &url, &headers),
        )
        .await
        .expect("no answer within 15 s");
        assert_eq!(d.status, 404, "{headers:?}: {d:?}");
    }
    let cache = fx.cache_dir().to_owned();
    assert!(wait_until(Duration::from_secs(5), || cache_temp_files(
        &cache
    )
    .is_empty()));
    assert_eq!(cache_blob_files(&cache), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_star_on_an_unknown_package_is_404_not_304() {
    // RFC 9110 13.1.2: `If-None-Match: *` is false only when a current representation
    // exists; for a digest the origin does not have, the request proceeds (to a 404).
    let fx = CacheFixture::start(false, "1GiB");
    let zip = random_provider_zip("foo", "1.0.0", 16 * KIB, 50);
    push_one(&fx, FOO_REPO, "1.0.0", &zip).await;
    let missing = sha256_hex(b"no such package");
    let url = format!(
        "{}{FOO}/download/sha256/{missing}/terraform-provider-foo_1.0.0_{PLATFORM}.zip",
        fx.server.mirror_url()
    );
    let d = download_hashed(&fx.client, &url, &[("if-none-match", "*")]).await;
    assert_eq!(
        d.status, 404,
        "If-None-Match: * for a package that does not exist: {d:?}"
    );
}
