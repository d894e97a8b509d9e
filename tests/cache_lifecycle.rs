//! The cache directory over the server's life: eviction within `max_size`, recovery from
//! kill -9 in the middle of a download, one owner per directory, and the `cache` subcommands.

mod common;

use std::time::Duration;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const PLATFORM: &str = "linux_amd64";
const KIB: usize = 1024;
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

fn has_blob(dir: &std::path::Path, hex: &str) -> bool {
    cache_blob_files(dir).iter().any(|(h, _)| h == hex)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_cache_within_max_size_and_keeps_the_newest() {
    let fx = CacheFixture::start(false, "50KiB");
    let cache = fx.cache_dir().to_owned();
    let mut packages = Vec::new();
    for i in 0..5u64 {
        let version = format!("1.0.{i}");
        let zip = random_provider_zip("foo", &version, 20 * KIB, 10 + i);
        let hex = push_one(&fx, &version, &zip).await;
        packages.push((version, zip, hex));
    }
    for (version, zip, hex) in &packages {
        let url = fx.archive_url(FOO, version, PLATFORM).await;
        let d = download_hashed(&fx.client, &url, &[]).await;
        assert!(d.is_exactly(zip), "{version}: {d:?}");
        // Eviction runs right after the new package is kept.
        let settled = wait_until(Duration::from_secs(5), || {
            has_blob(&cache, hex) && cache_blob_bytes(&cache) <= 50 * KIB as u64
        });
        assert!(
            settled,
            "after downloading {version}: cache holds {} bytes in {:?} (max 51200), newest {hex} kept: {}",
            cache_blob_bytes(&cache),
            cache_blob_files(&cache),
            has_blob(&cache, hex)
        );
    }
    // Two ~20 KiB packages fit in 50 KiB: the two most recent.
    let kept: Vec<String> = cache_blob_files(&cache)
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    let mut newest_two = vec![packages[3].2.clone(), packages[4].2.clone()];
    newest_two.sort();
    assert_eq!(kept, newest_two, "kept blobs");

    // An evicted package is fetched again from the origin.
    let before = fx.proxy.blob_gets();
    let url = fx.archive_url(FOO, &packages[0].0, PLATFORM).await;
    let d = download_hashed(&fx.client, &url, &[]).await;
    assert!(d.is_exactly(&packages[0].1), "re-download: {d:?}");
    assert_eq!(fx.proxy.blob_gets(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_download_leaves_a_cache_that_restarts_clean_and_verifies() {
    let mut fx = CacheFixture::start(false, "1GiB");
    let cache = fx.cache_dir().to_owned();
    let small = random_provider_zip("foo", "1.0.0", 64 * KIB, 20);
    let small_hex = push_one(&fx, "1.0.0", &small).await;
    let big = random_provider_zip("foo", "2.0.0", 8 * MIB, 21);
    let big_hex = push_one(&fx, "2.0.0", &big).await;

    // A complete package in the cache before the crash.
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    assert!(download_hashed(&fx.client, &url, &[])
        .await
        .is_exactly(&small));
    assert!(wait_until(Duration::from_secs(5), || has_blob(
        &cache, &small_hex
    )));

    // Start a slow download of the big one and kill the server in the middle of it.
    let big_url = fx.archive_url(FOO, "2.0.0", PLATFORM).await;
    fx.proxy.set_mode(ProxyMode::SlowBlobs(MIB as u64));
    let client = https_client(&fx.cert);
    let url = big_url.clone();
    let transfer = tokio::spawn(async move { download_hashed(&client, &url, &[]).await });
    let partial = wait_until(Duration::from_secs(15), || {
        cache_temp_files(&cache)
            .iter()
            .any(|(_, size)| *size >= 512 * KIB as u64)
    });
    assert!(
        partial,
        "no partial temp file grew past 512 KiB: {:?}",
        cache_temp_files(&cache)
    );
    let pid = fx.server.pid();
    fx.server.kill9();
    let d = tokio::time::timeout(Duration::from_secs(20), transfer)
        .await
        .expect("the interrupted download did not end within 20 s")
        .unwrap();
    assert!(
        !d.is_exactly(&big) && (d.error.is_some() || d.status != 200),
        "download survived kill -9 of pid {pid}: {d:?}"
    );
    assert!(
        !cache_temp_files(&cache).is_empty(),
        "kill -9 should have left the partial temp file behind"
    );
    assert!(!has_blob(&cache, &big_hex), "a partial package was kept");

    // A new server on the same directory starts (the OS released the lock) and cleans up.
    fx.proxy.set_mode(ProxyMode::Normal);
    fx.server = Server::start(fx.config());
    assert!(
        cache_temp_files(&cache).is_empty(),
        "temp files left after restart: {:?}",
        cache_temp_files(&cache)
    );
    fx.stop_server();
    let verify = run_cli(fx.config(), &["cache", "verify"], Duration::from_secs(30));
    assert!(verify.success(), "cache verify failed:\n{verify}");
    assert!(
        verify.stdout.contains("1 good, 0 bad"),
        "cache verify:\n{verify}"
    );
    assert!(cache_temp_files(&cache).is_empty());
    assert_eq!(
        cache_blob_files(&cache),
        vec![(small_hex.clone(), small.len() as u64)]
    );

    // And the download now completes.
    fx.server = Server::start(fx.config());
    let url = fx.archive_url(FOO, "2.0.0", PLATFORM).await;
    let d = download_hashed(&fx.client, &url, &[]).await;
    assert!(d.is_exactly(&big), "download after recovery: {d:?}");
    assert!(wait_until(Duration::from_secs(5), || has_blob(
        &cache, &big_hex
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_cache_directory_is_refused_naming_the_owner() {
    let fx = CacheFixture::start(false, "1GiB");
    let second = run_cli(fx.config(), &["server"], Duration::from_secs(20));
    assert!(
        second.status.is_some(),
        "the second server did not exit within 20 s (it should refuse the locked cache directory):\n{second}"
    );
    assert!(!second.success(), "second server exited 0:\n{second}");
    assert!(
        !second.stdout.contains("listening on"),
        "second server listened:\n{second}"
    );
    let dir = fx.cache_dir().display().to_string();
    assert!(
        second.stderr.contains(&dir),
        "the error does not name the cache directory {dir}:\n{second}"
    );
    let owner = format!("pid {}", fx.server.pid());
    assert!(
        second.stderr.contains(&owner),
        "the error does not name the owner ({owner}):\n{second}"
    );
    // Commands that change the directory are refused too while the server owns it.
    for args in [
        &["cache", "verify"][..],
        &["cache", "prune", "--max-size", "0"][..],
    ] {
        let out = run_cli(fx.config(), args, Duration::from_secs(20));
        assert!(
            out.status.is_some() && !out.success(),
            "{args:?} while the server runs should fail:\n{out}"
        );
        assert!(
            out.stderr.contains(&dir) && out.stderr.contains(&owner),
            "{args:?}: the error does not name {dir} and {owner}:\n{out}"
        );
    }
    // The first server is unaffected.
    fetch(&fx.client, fx.server.base_url(), None)
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stats_while_running_then_prune_to_zero_after_stopping() {
    let mut fx = CacheFixture::start(false, "1GiB");
    let cache = fx.cache_dir().to_owned();
    let zip = random_provider_zip("foo", "1.0.0", 256 * KIB, 30);
    let hex = push_one(&fx, "1.0.0", &zip).await;
    let url = fx.archive_url(FOO, "1.0.0", PLATFORM).await;
    // A miss, then (once kept) a hit.
    assert!(download_hashed(&fx.client, &url, &[])
        .await
        .is_exactly(&zip));
    assert!(wait_until(Duration::from_secs(5), || has_blob(
        &cache, &hex
    )));
    assert!(download_hashed(&fx.client, &url, &[])
        .await
        .is_exactly(&zip));

    // The server writes its figures every few seconds; poll `cache stats` (bounded).
    let pid = fx.server.pid();
    let mut last = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let out = run_cli(fx.config(), &["cache", "stats"], Duration::from_secs(10));
        assert!(out.success(), "cache stats failed while running:\n{out}");
        let done = out.stdout.contains("1 hits, 1 misses");
        last = Some(out);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let stats = last.unwrap();
    for want in [
        "entries:         1".to_owned(),
        format!("running (pid {pid})"),
        "hit ratio:       50.0% (1 hits, 1 misses, 0 joined".to_owned(),
        "in 1 fetch(es); 0 digest mismatch(es); 0 eviction(s)".to_owned(),
    ] {
        assert!(
            stats.stdout.contains(&want),
            "cache stats while running lacks {want:?}:\n{stats}"
        );
    }

    fx.stop_server();
    let stopped = run_cli(fx.config(), &["cache", "stats"], Duration::from_secs(10));
    assert!(stopped.success(), "{stopped}");
    assert!(
        stopped.stdout.contains("entries:         1")
            && stopped.stdout.contains("the server is not running"),
        "cache stats after stopping:\n{stopped}"
    );
    let prune = run_cli(
        fx.config(),
        &["cache", "prune", "--max-size", "0"],
        Duration::from_secs(10),
    );
    assert!(prune.success(), "{prune}");
    assert!(
        prune.stdout.contains("removed 1 package(s)"),
        "cache prune:\n{prune}"
    );
    assert_eq!(cache_blob_files(&cache), vec![], "blobs left after prune");
    let after = run_cli(fx.config(), &["cache", "stats"], Duration::from_secs(10));
    assert!(
        after.success() && after.stdout.contains("entries:         0"),
        "cache stats after prune:\n{after}"
    );
}
