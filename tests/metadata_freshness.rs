//! The metadata cache's freshness policy, seen through the real server in front of a counting
//! proxy and the real docker-registry: fresh answers cost no origin request and say how old
//! they are; past `index_max_age` and within `stale_while_revalidate`, answers are immediate,
//! stale (with a `Warning`), and however many clients ask, one refresh reaches the origin.

mod common;

use std::time::{Duration, Instant};

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";

const POLICY: &str = r#"  index_max_age          = "3s"
  stale_while_revalidate = "60s"
"#;

async fn push_foo(f: &MetaFixture, version: &str) -> Pushed {
    let platform = local_platform();
    push_seed_layout(
        &f.registry,
        FOO_REPO,
        version,
        &[(
            platform.as_str(),
            fake_provider_zip_for("foo", version, &platform),
        )],
        f.registry.push_auth(),
    )
    .await
}

fn age_of(f: &Fetched) -> u64 {
    f.header("age")
        .unwrap_or_else(|| panic!("GET {}: no Age header: {:?}", f.url, f.headers))
        .parse()
        .unwrap_or_else(|e| panic!("GET {}: bad Age header: {e}", f.url))
}

fn assert_fresh_headers(f: &Fetched) {
    f.expect_status(200);
    let cc = f.header("cache-control").unwrap_or("");
    assert!(
        cc.split(',').any(|d| d.trim() == "max-age=3"),
        "GET {}: Cache-Control {cc:?} should state max-age=3",
        f.url
    );
    let age = age_of(f);
    assert!(age <= 3, "GET {}: fresh answer with Age {age}", f.url);
    assert!(
        f.header("warning").is_none(),
        "GET {}: a fresh answer carries a Warning: {:?}",
        f.url,
        f.header("warning")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_answers_cost_no_origin_request_and_carry_age_and_cache_control() {
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    push_foo(&f, "1.0.0").await;
    let index_url = f.index_url(FOO);
    let version_url = f.version_url(FOO, "1.0.0");

    let before = f.proxy.counts();
    let started = Instant::now();
    let first = f.get(&index_url, None).await;
    assert_fresh_headers(&first);
    assert_eq!(index_versions(&first), vec!["1.0.0"]);
    let v = f.get(&version_url, None).await;
    assert_fresh_headers(&v);
    let after_fill = f.proxy.counts();
    assert_eq!(
        after_fill.tag_gets - before.tag_gets,
        1,
        "the first index.json asks for the tag list once: {:?}",
        f.proxy.requests()
    );
    assert!(
        after_fill.heads + after_fill.manifest_gets > before.heads + before.manifest_gets,
        "the first VERSION.json asks the origin about the tag: {:?}",
        f.proxy.requests()
    );

    // Well inside index_max_age (and before the background refresher's 75% mark): nothing
    // reaches the origin, however often clients ask.
    for _ in 0..20 {
        let a = f.get(&index_url, None).await;
        assert_fresh_headers(&a);
        assert_eq!(a.body, first.body);
        let b = f.get(&version_url, None).await;
        assert_fresh_headers(&b);
        assert_eq!(b.body, v.body);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(2200),
        "the repeated requests took {elapsed:?}: too slow for this test to mean anything"
    );
    assert_eq!(
        f.proxy.counts(),
        after_fill,
        "requests within index_max_age reached the origin: {:?}",
        f.proxy.requests()
    );
}

/// Fires `n` concurrent GETs and returns them with the time the slowest took.
async fn burst(
    f: &MetaFixture,
    url: &str,
    auth: Option<&str>,
    n: usize,
) -> (Vec<Fetched>, Duration) {
    let started = Instant::now();
    let all = futures::future::join_all((0..n).map(|_| f.get(url, auth))).await;
    (all, started.elapsed())
}

/// Every answer of a burst on an entry past index_max_age: 200 with the cached content,
/// either stale (`Warning: 110`, Age ≥ 3) or — once the one refresh has landed — fresh
/// (no Warning, Age < 3); the first answers at least are stale.
fn assert_burst_stale(all: &[Fetched], body: &[u8]) {
    let mut stale = 0;
    for a in all {
        a.expect_status(200);
        assert_eq!(
            a.body, body,
            "GET {}: stale answer has other content",
            a.url
        );
        match a.header("warning") {
            Some(w) => {
                assert!(w.starts_with("110"), "Warning {w:?}");
                assert!(
                    age_of(a) >= 3,
                    "GET {}: stale answer with Age {:?}",
                    a.url,
                    a.header("age")
                );
                stale += 1;
            }
            None => assert!(
                age_of(a) < 3,
                "GET {}: answer past index_max_age without a Warning header (Age {:?})",
                a.url,
                a.header("age")
            ),
        }
    }
    assert!(
        stale > 0,
        "no answer of the burst was stale (with a Warning): {:?}",
        all.iter().map(|a| &a.headers).collect::<Vec<_>>()
    );
}

/// Waits (bounded) until the proxy has seen `want` requests matching `needles` since `mark`,
/// then a little longer to catch any extra ones; returns what it saw.
fn settle(f: &MetaFixture, mark: usize, needles: &[&str], want: usize) -> Vec<String> {
    wait_until(Duration::from_secs(5), || {
        f.proxy.requests_since_matching(mark, needles).len() >= want
    });
    std::thread::sleep(Duration::from_millis(700));
    f.proxy.requests_since_matching(mark, needles)
}

/// Anonymous data is also kept fresh by the background refresher (at 75% of index_max_age,
/// every 2 s); the proxy is `Down` while the entries age so that it cannot refresh them,
/// and back to normal just before the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_for_20_clients() {
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    push_foo(&f, "1.0.0").await;
    let index_url = f.index_url(FOO);
    let version_url = f.version_url(FOO, "1.0.0");
    let index = f.get(&index_url, None).await;
    index.expect_status(200);
    let version = f.get(&version_url, None).await;
    version.expect_status(200);
    let filled = Instant::now();

    f.proxy.set_mode(ProxyMode::Down);
    std::thread::sleep(Duration::from_millis(3600).saturating_sub(filled.elapsed()));
    f.proxy.set_mode(ProxyMode::Normal);

    let mark = f.proxy.request_mark();
    let (all, took) = burst(&f, &index_url, None, 20).await;
    assert_burst_stale(&all, &index.body);
    assert!(
        took < Duration::from_secs(2),
        "20 stale index.json answers took {took:?}"
    );
    let (all, took) = burst(&f, &version_url, None, 20).await;
    assert_burst_stale(&all, &version.body);
    assert!(
        took < Duration::from_secs(2),
        "20 stale VERSION.json answers took {took:?}"
    );

    let tags = settle(&f, mark, &["GET ", "/tags/list", "[Normal]"], 1);
    assert_eq!(
        tags.len(),
        1,
        "20 stale index.json answers should trigger exactly one tag-list refresh: {:?}",
        f.proxy.requests()
    );
    let tag_checks = settle(&f, mark, &["/manifests/1.0.0", "[Normal]"], 1);
    assert_eq!(
        tag_checks.len(),
        1,
        "20 stale VERSION.json answers should trigger exactly one check of the tag: {:?}",
        f.proxy.requests()
    );

    // Refreshed: fresh again.
    let again = f.get(&index_url, None).await;
    again.expect_status(200);
    assert!(again.header("warning").is_none(), "{:?}", again.headers);
    assert!(age_of(&again) < 3);
}

/// The same with a client credential (the registry ignores it): data fetched with a
/// credential is not refreshed in the background, so it goes stale without tricks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_refreshes_once_per_credential_for_20_clients() {
    const AUTH: Option<&str> = Some("Bearer some-client");
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    push_foo(&f, "1.0.0").await;
    let index_url = f.index_url(FOO);
    let version_url = f.version_url(FOO, "1.0.0");
    let index = f.get(&index_url, AUTH).await;
    index.expect_status(200);
    let version = f.get(&version_url, AUTH).await;
    version.expect_status(200);
    let filled = Instant::now();
    let mark = f.proxy.request_mark();

    std::thread::sleep(Duration::from_millis(3600).saturating_sub(filled.elapsed()));
    assert_eq!(
        f.proxy.requests_since_matching(mark, &[]),
        Vec::<String>::new(),
        "nothing should refresh credential-bound data in the background"
    );
    let (all, took) = burst(&f, &index_url, AUTH, 20).await;
    assert_burst_stale(&all, &index.body);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let (all, took) = burst(&f, &version_url, AUTH, 20).await;
    assert_burst_stale(&all, &version.body);
    assert!(took < Duration::from_secs(2), "took {took:?}");

    let tags = settle(&f, mark, &["GET ", "/tags/list"], 1);
    assert_eq!(tags.len(), 1, "{:?}", f.proxy.requests());
    let tag_checks = settle(&f, mark, &["/manifests/1.0.0"], 1);
    assert_eq!(tag_checks.len(), 1, "{:?}", f.proxy.requests());
    let again = f.get(&index_url, AUTH).await;
    again.expect_status(200);
    assert!(again.header("warning").is_none(), "{:?}", again.headers);
}

/// 20 clients asking at once for something not cached yet: one origin request each for the
/// tag list and for the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_burst_of_20_costs_one_origin_request_per_key() {
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    push_foo(&f, "1.0.0").await;
    let mark = f.proxy.request_mark();
    let (all, _) = burst(&f, &f.index_url(FOO), None, 20).await;
    for a in &all {
        a.expect_status(200);
        assert_eq!(index_versions(a), vec!["1.0.0"]);
    }
    let (all, _) = burst(&f, &f.version_url(FOO, "1.0.0"), None, 20).await;
    for a in &all {
        a.expect_status(200);
    }
    assert_eq!(
        f.proxy
            .requests_since_matching(mark, &["GET ", "/tags/list"])
            .len(),
        1,
        "{:?}",
        f.proxy.requests()
    );
    assert_eq!(
        f.proxy
            .requests_since_matching(mark, &["/manifests/1.0.0"])
            .len(),
        1,
        "{:?}",
        f.proxy.requests()
    );
}

/// Many rounds of many concurrent requests on a just-expired entry: each round must cost
/// exactly one refresh per key (a request that saw the stale entry must not start a second
/// refresh after the first one has landed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_per_expiry_under_concurrency() {
    const AUTH: Option<&str> = Some("Bearer some-client");
    let f = MetaFixture::start(
        RegistryAuth::None,
        false,
        "  index_max_age = \"1s\"\n  stale_while_revalidate = \"60s\"\n",
        "",
    );
    push_foo(&f, "1.0.0").await;
    let index_url = f.index_url(FOO);
    let version_url = f.version_url(FOO, "1.0.0");
    f.get(&index_url, AUTH).await.expect_status(200);
    f.get(&version_url, AUTH).await.expect_status(200);
    let mut rounds = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1300));
        let mark = f.proxy.request_mark();
        let urls: Vec<&String> = (0..50)
            .map(|i| if i % 2 == 0 { &index_url } else { &version_url })
            .collect();
        let all = futures::future::join_all(urls.iter().map(|u| f.get(u, AUTH))).await;
        for a in &all {
            a.expect_status(200);
        }
        std::thread::sleep(Duration::from_millis(500));
        let tags = f
            .proxy
            .requests_since_matching(mark, &["GET ", "/tags/list"])
            .len();
        let heads = f
            .proxy
            .requests_since_matching(mark, &["HEAD ", "/manifests/1.0.0"])
            .len();
        rounds.push((tags, heads));
    }
    assert!(
        rounds.iter().all(|r| *r == (1, 1)),
        "(tag-list GETs, tag HEADs) per round of 50 concurrent requests on an expired entry: {rounds:?}"
    );
}

/// A tag never looked up before costs one `GET` of the manifest by tag (its digest and its
/// document in one answer), not a `HEAD` and then a `GET` by digest; once it expires, a
/// `HEAD` revalidates it and the manifest is not fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_tag_costs_one_manifest_get_and_revalidation_one_head() {
    let f = MetaFixture::start(RegistryAuth::None, false, POLICY, "");
    push_foo(&f, "1.0.0").await;
    let mark = f.proxy.request_mark();
    f.get(&f.index_url(FOO), None).await.expect_status(200);
    let version_url = f.version_url(FOO, "1.0.0");
    let first = f.get(&version_url, None).await;
    first.expect_status(200);
    let manifests = f.proxy.requests_since_matching(mark, &["/manifests/"]);
    assert_eq!(
        manifests.len(),
        1,
        "origin manifest requests for a cold VERSION.json: {manifests:?}"
    );
    assert!(
        manifests[0].starts_with("GET ") && manifests[0].contains("/manifests/1.0.0"),
        "{manifests:?}"
    );
    // Past index_max_age (3 s): one HEAD revalidates the tag, nothing else.
    std::thread::sleep(Duration::from_millis(3300));
    let mark = f.proxy.request_mark();
    let again = f.get(&version_url, None).await;
    again.expect_status(200);
    assert_eq!(again.body, first.body, "the answer after revalidation");
    std::thread::sleep(Duration::from_millis(500));
    let manifests = f.proxy.requests_since_matching(mark, &["/manifests/"]);
    assert!(
        manifests.len() == 1 && manifests[0].starts_with("HEAD "),
        "origin manifest requests when the tag expired: {manifests:?}"
    );
}
