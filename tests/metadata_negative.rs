//! Negative caching: a "not found" from the origin is remembered for `negative_ttl`, so a
//! flood of requests for a provider that does not exist costs one origin request per
//! `negative_ttl`.

mod common;

use std::time::{Duration, Instant};

use common::*;

const MISSING: &str = "registry.terraform.io/acme/nosuch";
const MISSING_REPO: &str = "terraform-providers/registry.terraform.io/acme/nosuch";

fn tag_gets_for_missing(f: &MetaFixture, mark: usize) -> Vec<String> {
    f.proxy
        .requests_since_matching(mark, &["GET ", MISSING_REPO, "/tags/list"])
}

async fn fifty_404s(f: &MetaFixture) {
    let url = f.index_url(MISSING);
    // Half of them at once, half one after the other.
    let concurrent = futures::future::join_all((0..25).map(|_| f.get(&url, None))).await;
    for a in &concurrent {
        a.expect_status(404);
    }
    for _ in 0..25 {
        f.get(&url, None).await.expect_status(404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_remembered_for_negative_ttl() {
    let f = MetaFixture::start(RegistryAuth::None, false, "  negative_ttl = \"3s\"\n", "");
    let mark = f.proxy.request_mark();
    let started = Instant::now();
    fifty_404s(&f).await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "50 requests took {:?}",
        started.elapsed()
    );
    assert_eq!(
        tag_gets_for_missing(&f, mark).len(),
        1,
        "50 requests within negative_ttl: {:?}",
        f.proxy.requests()
    );
    let body = f.get(&f.index_url(MISSING), None).await;
    assert!(
        body.text().contains("registry.terraform.io/acme/nosuch"),
        "the 404 should name the provider: {}",
        body.text()
    );

    // After negative_ttl: one more, however many ask.
    std::thread::sleep(Duration::from_millis(3300).saturating_sub(started.elapsed()));
    let mark2 = f.proxy.request_mark();
    fifty_404s(&f).await;
    assert_eq!(
        tag_gets_for_missing(&f, mark2).len(),
        1,
        "50 requests just after negative_ttl: {:?}",
        f.proxy.requests()
    );
}

/// The provider appearing at the origin is seen once `negative_ttl` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_published_later_appears_after_negative_ttl() {
    let f = MetaFixture::start(RegistryAuth::None, false, "  negative_ttl = \"2s\"\n", "");
    let url = f.index_url(MISSING);
    f.get(&url, None).await.expect_status(404);
    let published = Instant::now();
    let platform = local_platform();
    push_seed_layout(
        &f.registry,
        MISSING_REPO,
        "0.1.0",
        &[(
            platform.as_str(),
            fake_provider_zip_for("nosuch", "0.1.0", &platform),
        )],
        None,
    )
    .await;
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let a = f.get(&url, None).await;
        if a.status == 200 {
            assert_eq!(index_versions(&a), vec!["0.1.0"]);
            assert!(
                published.elapsed() >= Duration::from_millis(1500),
                "seen after {:?}: the negative answer was not cached",
                published.elapsed()
            );
            return;
        }
        last = Some(a);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("never appeared: last answer {:?}", last.map(|a| a.text()));
}

/// The background refresher must not re-ask about a "not found" more often than
/// `negative_ttl` says, even when `index_max_age` is shorter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refresher_respects_negative_ttl() {
    let f = MetaFixture::start(
        RegistryAuth::None,
        false,
        "  index_max_age = \"1s\"\n  negative_ttl  = \"7s\"\n",
        "",
    );
    let url = f.index_url(MISSING);
    let mark = f.proxy.request_mark();
    let started = Instant::now();
    let mut n = 0;
    // 50 requests spread over ~6 s (all within negative_ttl of the first).
    while n < 50 && started.elapsed() < Duration::from_secs(6) {
        f.get(&url, None).await.expect_status(404);
        n += 1;
        tokio::time::sleep(Duration::from_millis(110)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(7));
    assert_eq!(
        tag_gets_for_missing(&f, mark).len(),
        1,
        "{n} requests within negative_ttl (7s; index_max_age 1s): {:?}",
        f.proxy.requests()
    );
}
