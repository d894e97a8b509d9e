//! Cached metadata fetched with a client's credential is only served to credentials the
//! origin accepted (within `auth_ttl`) — with the origin up, and more importantly with the
//! origin down. The registry uses distribution's `silly` auth: any `Authorization` header is
//! accepted, none is refused with a Bearer challenge (whose realm is unreachable).

mod common;

use std::time::{Duration, Instant};

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const A: Option<&str> = Some("Bearer a");
const B: Option<&str> = Some("Bearer b");
const C: Option<&str> = Some("Bearer c");

fn assert_no_data(a: &Fetched, expected: &[u16], who: &str) {
    assert!(
        expected.contains(&a.status),
        "GET {} as {who}: expected one of {expected:?}, got {} {}",
        a.url,
        a.status,
        a.text()
    );
    let text = a.text();
    assert!(
        !text.contains("\"versions\"") && !text.contains("\"archives\""),
        "GET {} as {who}: the answer holds cached data: {text}",
        a.url
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_private_metadata_is_served_only_to_accepted_credentials() {
    let f = MetaFixture::start(
        RegistryAuth::Silly,
        true,
        "  index_max_age          = \"1s\"\n  stale_while_revalidate = \"0s\"\n  auth_ttl               = \"2s\"\n",
        "",
    );
    let platform = local_platform();
    push_seed_layout(
        &f.registry,
        FOO_REPO,
        "1.0.0",
        &[(
            platform.as_str(),
            fake_provider_zip_for("foo", "1.0.0", &platform),
        )],
        f.registry.push_auth(),
    )
    .await;
    let index_url = f.index_url(FOO);
    let version_url = f.version_url(FOO, "1.0.0");

    // A fills the cache.
    let a_index = f.get(&index_url, A).await;
    a_index.expect_status(200);
    assert_eq!(index_versions(&a_index), vec!["1.0.0"]);
    f.get(&version_url, A).await.expect_status(200);
    assert!(
        a_index
            .header("cache-control")
            .is_some_and(|c| c.contains("private")),
        "credential-dependent answers must not be publicly cacheable: {:?}",
        a_index.header("cache-control")
    );

    // Anonymous: the origin says 401, and so do we (not the cached data).
    for url in [&index_url, &version_url] {
        let anon = f.get(url, None).await;
        assert_no_data(&anon, &[401], "anonymous");
        assert!(
            anon.header("www-authenticate").is_some(),
            "a 401 without WWW-Authenticate: {:?}",
            anon.headers
        );
    }
    // B: never seen, but the origin accepts it.
    let mark = f.proxy.request_mark();
    let b = f.get(&index_url, B).await;
    b.expect_status(200);
    assert_eq!(b.body, a_index.body);
    f.get(&version_url, B).await.expect_status(200);
    assert!(
        !f.proxy
            .requests_since_matching(mark, &["/tags/list"])
            .is_empty(),
        "B's credential was not checked with the origin: {:?}",
        f.proxy.requests()
    );

    // A again (verified now), then the origin goes down once the entries are stale.
    f.get(&index_url, A).await.expect_status(200);
    std::thread::sleep(Duration::from_millis(1100));
    let a_verified = Instant::now();
    f.get(&index_url, A).await.expect_status(200); // past max_age: a refresh, A accepted
    f.get(&version_url, A).await.expect_status(200);
    f.proxy.set_mode(ProxyMode::Down);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        a_verified.elapsed() < Duration::from_millis(1800),
        "too slow: {:?}",
        a_verified.elapsed()
    );

    // Within auth_ttl of A's last acceptance: A gets stale data.
    for url in [&index_url, &version_url] {
        let a = f.get(url, A).await;
        a.expect_status(200);
        assert!(
            a.header("warning").is_some(),
            "GET {url} as A with the origin down: {:?}",
            a.headers
        );
    }
    // C, never seen: an error, not the data.
    for url in [&index_url, &version_url] {
        assert_no_data(
            &f.get(url, C).await,
            &[502, 504],
            "C (never seen), origin down",
        );
        assert_no_data(
            &f.get(url, None).await,
            &[401, 502, 504],
            "anonymous, origin down",
        );
    }
    // B was accepted more than auth_ttl ago: no data either.
    assert_no_data(
        &f.get(&index_url, B).await,
        &[502, 504],
        "B (accepted > auth_ttl ago), origin down",
    );

    // Past auth_ttl with the origin still down: A no longer gets the data.
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(a_verified.elapsed()));
    for url in [&index_url, &version_url] {
        assert_no_data(
            &f.get(url, A).await,
            &[502, 504],
            "A, auth_ttl after its last acceptance, origin down",
        );
    }
}

/// Within auth_ttl, a verified credential is served fresh cached data with no origin
/// request; past it, the next request re-checks the credential with the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_credentials_are_rechecked_after_auth_ttl() {
    let f = MetaFixture::start(
        RegistryAuth::Silly,
        true,
        "  index_max_age = \"1h\"\n  auth_ttl = \"2s\"\n",
        "",
    );
    let platform = local_platform();
    push_seed_layout(
        &f.registry,
        FOO_REPO,
        "1.0.0",
        &[(
            platform.as_str(),
            fake_provider_zip_for("foo", "1.0.0", &platform),
        )],
        f.registry.push_auth(),
    )
    .await;
    let index_url = f.index_url(FOO);
    f.get(&index_url, A).await.expect_status(200);
    let accepted = Instant::now();
    let mark = f.proxy.request_mark();
    for _ in 0..10 {
        f.get(&index_url, A).await.expect_status(200);
    }
    assert!(accepted.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        f.proxy.requests_since_matching(mark, &[]),
        Vec::<String>::new(),
        "within auth_ttl and index_max_age"
    );
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(accepted.elapsed()));
    let mark = f.proxy.request_mark();
    f.get(&index_url, A).await.expect_status(200);
    assert_eq!(
        f.proxy
            .requests_since_matching(mark, &["GET ", "/tags/list"])
            .len(),
        1,
        "past auth_ttl, A's credential should be checked with the origin again: {:?}",
        f.proxy.requests()
    );
}
