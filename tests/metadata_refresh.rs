//! Changes at the origin reach clients through the metadata cache: a new version, a tag moved
//! to other content, a deleted tag — within `index_max_age` plus the background refresher's
//! tick (bounded waits).

mod common;

use std::time::{Duration, Instant};

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";

const POLICY: &str = r#"  index_max_age          = "2s"
  stale_while_revalidate = "60s"
"#;

/// index_max_age + the refresher's 2 s tick + its 0.5 s jitter + slack.
const PICKUP: Duration = Duration::from_secs(7);

async fn push_foo(f: &MetaFixture, version: &str, content_seed: &str) -> Pushed {
    let platform = local_platform();
    let zip = fake_provider_zip_for("foo", version, &format!("{platform} {content_seed}"));
    push_seed_layout(
        &f.registry,
        FOO_REPO,
        version,
        &[(platform.as_str(), zip)],
        f.registry.push_auth(),
    )
    .await
}

async fn zh_of(f: &MetaFixture, version: &str) -> Vec<String> {
    let archives = fetch_archives(&f.client, &f.server.mirror_url(), FOO, version, None).await;
    archives[&local_platform()]
        .hashes
        .iter()
        .filter(|h| h.starts_with("zh:"))
        .cloned()
        .collect()
}

/// Without any client asking, the background refresher notices a new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refresh_picks_up_a_new_version() {
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    push_foo(&f, "1.0.0", "a").await;
    assert_eq!(f.versions(FOO, None).await, vec!["1.0.0"]);
    push_foo(&f, "1.1.0", "a").await;
    let pushed = Instant::now();

    // No requests: wait for the refresher's tag-list request, then ask once.
    let mark = f.proxy.request_mark();
    let refreshed = wait_until(PICKUP, || {
        !f.proxy
            .requests_since_matching(mark, &["GET ", "/tags/list", "[Normal]"])
            .is_empty()
    });
    assert!(
        refreshed,
        "no background refresh of the tag list within {PICKUP:?}: {:?}",
        f.proxy.requests()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        f.versions(FOO, None).await,
        vec!["1.0.0", "1.1.0"],
        "after the background refresh ({:?} after the push)",
        pushed.elapsed()
    );
}

/// A client polling sees the new version within index_max_age (plus a refresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_client_sees_a_new_version_within_max_age() {
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    push_foo(&f, "1.0.0", "a").await;
    assert_eq!(f.versions(FOO, None).await, vec!["1.0.0"]);
    push_foo(&f, "1.1.0", "a").await;
    let pushed = Instant::now();
    loop {
        let v = f.versions(FOO, None).await;
        if v == ["1.0.0", "1.1.0"] {
            break;
        }
        assert!(
            pushed.elapsed() < Duration::from_millis(4500),
            "1.1.0 not in index.json {:?} after the push: {v:?}",
            pushed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pushing other content under an existing version tag shows in VERSION.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_tag_shows_the_new_digest() {
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    let old = push_foo(&f, "1.0.0", "first").await;
    assert_eq!(zh_of(&f, "1.0.0").await, vec![old.zh(0)]);
    let new = push_foo(&f, "1.0.0", "second").await;
    assert_ne!(old.layer_digests, new.layer_digests);
    let pushed = Instant::now();
    loop {
        let zh = zh_of(&f, "1.0.0").await;
        if zh == [new.zh(0)] {
            break;
        }
        assert_eq!(zh, vec![old.zh(0)], "neither the old nor the new package");
        assert!(
            pushed.elapsed() < PICKUP,
            "VERSION.json still has the old package {:?} after the tag moved",
            pushed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And the new package is what downloads.
    let archives = fetch_archives(&f.client, &f.server.mirror_url(), FOO, "1.0.0", None).await;
    let d = download_hashed(&f.client, archives[&local_platform()].url.as_str(), &[]).await;
    assert_eq!(d.status, 200, "{d:?}");
    assert_eq!(
        format!("zh:{}", d.sha256),
        new.zh(0),
        "the download is not the new package"
    );
}

/// A deleted tag leaves index.json, and its VERSION.json becomes 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_tag_disappears() {
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    push_foo(&f, "1.0.0", "a").await;
    let doomed = push_foo(&f, "1.1.0", "a").await;
    assert_eq!(f.versions(FOO, None).await, vec!["1.0.0", "1.1.0"]);
    assert_eq!(zh_of(&f, "1.1.0").await, vec![doomed.zh(0)]);
    let status = delete_manifest(
        &f.registry,
        FOO_REPO,
        &doomed.manifest_digest,
        f.registry.push_auth(),
    )
    .await;
    assert_eq!(status, 202, "DELETE manifest");
    let deleted = Instant::now();

    let mut index_gone = false;
    let mut version_gone = false;
    while !(index_gone && version_gone) {
        if !index_gone {
            let v = f.versions(FOO, None).await;
            index_gone = v == ["1.0.0"];
            if !index_gone {
                assert_eq!(v, vec!["1.0.0", "1.1.0"]);
            }
        }
        if !version_gone {
            let a = f.get(&f.version_url(FOO, "1.1.0"), None).await;
            version_gone = a.status == 404;
            if !version_gone {
                a.expect_status(200);
            }
        }
        assert!(
            deleted.elapsed() < PICKUP,
            "after {:?}: index.json without 1.1.0: {index_gone}, 1.1.0.json 404: {version_gone}",
            deleted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // 1.0.0 is untouched.
    f.get(&f.version_url(FOO, "1.0.0"), None)
        .await
        .expect_status(200);
}
