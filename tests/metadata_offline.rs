//! Offline mode (`server --offline`, or `offline = true` in the server block): a server on a
//! cache directory filled by an online server answers from it without a single request to
//! the origin, and says precisely what is missing (and how to add it) for anything else.

mod common;

use std::time::Duration;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const BAR: &str = "registry.terraform.io/acme/bar";
const BAR_REPO: &str = "terraform-providers/registry.terraform.io/acme/bar";
const OTHER_PLATFORM: &str = "windows_386";

struct Published {
    local_zip: Vec<u8>,
    other_zip: Vec<u8>,
}

async fn publish(f: &MetaFixture) -> Published {
    let local = local_platform();
    let local_zip = fake_provider_zip_for("foo", "1.0.0", &local);
    let other_zip = fake_provider_zip_for("foo", "1.0.0", OTHER_PLATFORM);
    push_seed_layout(
        &f.registry,
        FOO_REPO,
        "1.0.0",
        &[
            (local.as_str(), local_zip.clone()),
            (OTHER_PLATFORM, other_zip.clone()),
        ],
        None,
    )
    .await;
    let bar_zip = fake_provider_zip_for("bar", "3.0.0", &local);
    push_seed_layout(
        &f.registry,
        BAR_REPO,
        "3.0.0",
        &[(local.as_str(), bar_zip)],
        None,
    )
    .await;
    Published {
        local_zip,
        other_zip,
    }
}

/// Online: index.json, 1.0.0.json and the local platform's package of foo (not the other
/// platform's, not bar).
async fn warm_foo(f: &MetaFixture, p: &Published) {
    assert_eq!(f.versions(FOO, None).await, vec!["1.0.0"]);
    let archives = fetch_archives(&f.client, &f.server.mirror_url(), FOO, "1.0.0", None).await;
    let d = download_hashed(&f.client, archives[&local_platform()].url.as_str(), &[]).await;
    assert!(d.is_exactly(&p.local_zip), "{d:?}");
}

fn error_message(a: &Fetched) -> String {
    let json = a.json();
    json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {}: no errors array: {json}", a.url))
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A 404 saying the mirror is offline, naming what is missing, with the warm command.
fn assert_offline_404(a: &Fetched, names: &[&str]) {
    assert_eq!(a.status, 404, "GET {}: {} {}", a.url, a.status, a.text());
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        a.headers
    );
    let msg = error_message(a);
    assert!(msg.contains("offline"), "GET {}: {msg}", a.url);
    for n in names {
        assert!(
            msg.contains(n),
            "GET {}: message does not name {n:?}: {msg}",
            a.url
        );
    }
    assert!(
        msg.contains("oci-distribution-terraform-registry warm"),
        "GET {}: no warm command in {msg}",
        a.url
    );
}

async fn check_offline_server(f: &MetaFixture, p: &Published) {
    let mark = f.proxy.request_mark();
    let before = f.proxy.counts();

    // What the cache holds.
    let index = f.get(&f.index_url(FOO), None).await;
    index.expect_status(200);
    assert_eq!(index_versions(&index), vec!["1.0.0"]);
    let archives = fetch_archives(&f.client, &f.server.mirror_url(), FOO, "1.0.0", None).await;
    let local = &archives[&local_platform()];
    assert!(
        local.hashes.contains(&zh(&p.local_zip)) && local.hashes.contains(&h1(&p.local_zip)),
        "{:?}",
        local.hashes
    );
    let d = download_hashed(&f.client, local.url.as_str(), &[]).await;
    assert!(d.is_exactly(&p.local_zip), "{d:?}");
    let init = terraform_init(&f.server.mirror_url(), &f.cert, &[(FOO, "1.0.0")], None);
    assert!(
        init.success,
        "terraform init from an offline server:\n{}",
        init.output
    );

    // What it does not.
    assert_offline_404(&f.get(&f.index_url(BAR), None).await, &["acme/bar"]);
    assert_offline_404(
        &f.get(&f.version_url(BAR, "3.0.0"), None).await,
        &["acme/bar", "3.0.0"],
    );
    assert_offline_404(
        &f.get(&f.version_url(FOO, "9.9.9"), None).await,
        &["acme/foo", "9.9.9"],
    );
    let other = &archives[OTHER_PLATFORM];
    let d = f.get(other.url.as_str(), None).await;
    assert_offline_404(&d, &[&sha256_hex(&p.other_zip)]);

    // Long enough for the background refresher to have run, had it been started.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        f.proxy.counts(),
        before,
        "an offline server contacted the origin: {:?}",
        f.proxy.requests_since_matching(mark, &[])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_flag_serves_the_cache_and_never_contacts_the_origin() {
    let mut f = MetaFixture::start(RegistryAuth::None, false, "", "");
    let p = publish(&f).await;
    warm_foo(&f, &p).await;
    f.restart_with_args(&["--offline"]);
    check_offline_server(&f, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_attribute_serves_the_cache_and_never_contacts_the_origin() {
    let mut f = MetaFixture::start(
        RegistryAuth::None,
        false,
        "  index_max_age = \"1s\"\n  stale_if_error = \"1s\"\n",
        "",
    );
    let p = publish(&f).await;
    warm_foo(&f, &p).await;
    let status = f.server.terminate(Duration::from_secs(35));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // Offline, cached data is served however old (the freshness policy needs an origin).
    std::thread::sleep(Duration::from_millis(2200));
    let offline_config = f
        .config
        .replace("server {\n", "server {\n  offline = true\n");
    assert_ne!(offline_config, f.config);
    f.server = Server::start(&offline_config);
    check_offline_server(&f, &p).await;
}

/// The command the offline 404 recommends, run where the registry is reachable, makes the
/// missing provider available to the offline server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recommended_warm_command_fills_what_was_missing() {
    let mut f = MetaFixture::start(RegistryAuth::None, false, "", "");
    let p = publish(&f).await;
    warm_foo(&f, &p).await;
    f.restart_with_args(&["--offline"]);
    let missing = f.get(&f.index_url(BAR), None).await;
    assert_offline_404(&missing, &["acme/bar"]);
    let msg = error_message(&missing);
    let command = msg
        .split("oci-distribution-terraform-registry ")
        .nth(1)
        .expect("a command")
        .trim()
        .to_owned();
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args.first(), Some(&"warm"), "{msg}");

    // On the "connected host": no server running on this cache.
    let status = f.server.terminate(Duration::from_secs(35));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let out = run_cli(&f.config, &args, Duration::from_secs(60));
    assert!(out.success(), "`{command}` failed:\n{out}");

    f.server = Server::start_with_args(&f.config, &["--offline"]);
    assert_eq!(f.versions(BAR, None).await, vec!["3.0.0"]);
    let archives = fetch_archives(&f.client, &f.server.mirror_url(), BAR, "3.0.0", None).await;
    let d = download_hashed(&f.client, archives[&local_platform()].url.as_str(), &[]).await;
    assert_eq!(d.status, 200, "{d:?}");
}

/// Offline answers older than index_max_age are stale, and say so like any other stale
/// answer (`Warning: 110`, an `Age` past `max-age`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_answers_past_max_age_are_marked_stale() {
    let mut f = MetaFixture::start(RegistryAuth::None, false, "  index_max_age = \"1s\"\n", "");
    let p = publish(&f).await;
    warm_foo(&f, &p).await;
    f.restart_with_args(&["--offline"]);
    std::thread::sleep(Duration::from_millis(2100));
    for url in [f.index_url(FOO), f.version_url(FOO, "1.0.0")] {
        let a = f.get(&url, None).await;
        a.expect_status(200);
        let age: u64 = a.header("age").unwrap_or("0").parse().unwrap();
        assert!(age >= 2, "GET {url}: Age {age}");
        assert!(
            a.header("warning").is_some_and(|w| w.starts_with("110")),
            "GET {url} (offline, Age {age}, max-age=1): no Warning 110: {:?}",
            a.headers
        );
    }
}
