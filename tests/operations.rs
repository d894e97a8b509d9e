//! Operating the server: the admin listener, metrics after real traffic, SIGHUP reloads
//! (a valid one that rotates the URL secret, an invalid one that is refused), and a public
//! mirror over a registry that demands a password, served with the server's own credential.

mod common;
#[path = "push_support/mod.rs"]
mod push_support;

use std::time::Duration;

use common::*;
use push_support::{push_cli, write_release_dir, HtpasswdRegistry, PASSWORD, USER};

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const OTHER_SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn hup(server: &Server) {
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(server.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits until the server's log has `needle` `count` times.
fn wait_for_log(server: &Server, needle: &str, count: usize) {
    assert!(
        wait_until(Duration::from_secs(15), || server
            .stderr()
            .matches(needle)
            .count()
            >= count),
        "the server never logged {needle:?} ({count}x):\n{}",
        server.stderr()
    );
}

async fn one_provider(registry: &Registry) -> Vec<u8> {
    let zip = fake_provider_zip_for("foo", "1.0.0", "linux_amd64");
    push_seed_layout(
        registry,
        FOO_REPO,
        "1.0.0",
        &[("linux_amd64", zip.clone())],
        registry.push_auth(),
    )
    .await;
    zip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_has_the_operational_endpoints_and_metrics_count_traffic() {
    let registry = Registry::start(RegistryAuth::None);
    let zip = one_provider(&registry).await;
    let cert = TestCert::generate();
    let url = registry.url();
    let admin_port = free_port();
    let extra = format!("  admin_listen_addr = \"127.0.0.1:{admin_port}\"");
    let mut config = MirrorConfig::new(&cert, &url, false);
    config.extra_server = &extra;
    let server = Server::start(&config.to_hcl());
    let client = https_client(&cert);
    let admin = format!("http://127.0.0.1:{admin_port}/");

    // Off the public listener, on the admin one.
    for path in ["metrics", "healthz", "readyz"] {
        fetch(&client, &format!("{}{path}", server.base_url()), None)
            .await
            .expect_status(404);
        fetch(&plain_client(), &format!("{admin}{path}"), None)
            .await
            .expect_status(200);
    }
    // ... and the admin listener serves nothing else.
    fetch(
        &plain_client(),
        &format!("{admin}mirror/{FOO}/index.json"),
        None,
    )
    .await
    .expect_status(404);

    let archives = fetch_archives(&client, &server.mirror_url(), FOO, "1.0.0", None).await;
    let archive = &archives["linux_amd64"];
    for _ in 0..3 {
        let d = download_hashed(&client, archive.url.as_str(), &[]).await;
        assert!(d.is_exactly(&zip), "package bytes differ");
    }
    // The package is filed away (fsync, rename) just after it is served: wait for that.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let text = fetch(&plain_client(), &format!("{admin}metrics"), None)
            .await
            .expect_status(200)
            .text();
        let filed = format!("odtr_cache_bytes {}", zip.len());
        if text.lines().any(|l| l == filed) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric line {line_start:?} in:\n{metrics}"))
    };
    assert_eq!(
        value("odtr_requests_total{route=\"download\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        value("odtr_requests_total{route=\"version\",status=\"200\"}"),
        1.0
    );
    assert_eq!(value("odtr_cache_misses_total"), 1.0);
    assert_eq!(value("odtr_cache_hits_total"), 2.0);
    assert_eq!(value("odtr_origin_blob_fetches_total"), 1.0);
    assert_eq!(value("odtr_cache_bytes"), zip.len() as f64);
    assert_eq!(
        value("odtr_request_duration_seconds_count{route=\"download\"}"),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rotates_the_url_secret_and_refuses_a_broken_config() {
    let registry = Registry::start(RegistryAuth::None);
    let zip = one_provider(&registry).await;
    let cert = TestCert::generate();
    let url = registry.url();
    let config = MirrorConfig::new(&cert, &url, true);
    let original = config.to_hcl();
    let server = Server::start(&original);
    let client = https_client(&cert);
    let issued_before = fetch_archives(&client, &server.mirror_url(), FOO, "1.0.0", None).await;
    let old_url = issued_before["linux_amd64"].url.clone();

    // Rotate: a new current secret, the old one kept for URLs already handed out.
    let rotated = original
        .replace(TEST_QUERY_STRING_SECRET, OTHER_SECRET)
        .replace(
            "server {",
            &format!(
                "server {{\n  previous_query_string_secrets = [\"{TEST_QUERY_STRING_SECRET}\"]"
            ),
        );
    std::fs::write(server.config_path(), &rotated).unwrap();
    hup(&server);
    wait_for_log(&server, "configuration reloaded", 1);
    let d = download_hashed(&client, old_url.as_str(), &[]).await;
    assert_eq!(
        d.status, 200,
        "a URL sealed before the rotation must still work"
    );
    assert!(d.is_exactly(&zip));
    let new_url = fetch_archives(&client, &server.mirror_url(), FOO, "1.0.0", None).await
        ["linux_amd64"]
        .url
        .clone();
    assert_ne!(new_url, old_url);
    assert_eq!(
        download_hashed(&client, new_url.as_str(), &[]).await.status,
        200
    );

    // An invalid file is refused, and the running configuration goes on serving.
    std::fs::write(server.config_path(), "server { listen_addr = 12 }\n").unwrap();
    hup(&server);
    wait_for_log(&server, "keeping the running one", 1);
    assert_eq!(
        download_hashed(&client, new_url.as_str(), &[]).await.status,
        200
    );
    assert_eq!(
        download_hashed(&client, old_url.as_str(), &[]).await.status,
        200
    );

    // Drop the old secret: URLs sealed under it are refused from now on.
    let only_new = original.replace(TEST_QUERY_STRING_SECRET, OTHER_SECRET);
    std::fs::write(server.config_path(), &only_new).unwrap();
    hup(&server);
    wait_for_log(&server, "configuration reloaded", 2);
    assert_eq!(
        download_hashed(&client, old_url.as_str(), &[]).await.status,
        403
    );
    assert_eq!(
        download_hashed(&client, new_url.as_str(), &[]).await.status,
        200
    );
}

/// Pushes foo 1.0.0 for linux_amd64 to the htpasswd registry; returns the package.
fn push_with_password(registry: &HtpasswdRegistry) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let files = write_release_dir(dir.path(), "foo", "1.0.0", &["linux_amd64"]);
    let url = registry.url();
    let run = push_cli(
        &[
            "push",
            "--registry",
            &url,
            "--repository-prefix",
            "terraform-providers",
            "--address",
            FOO,
            "--layout",
            "seed",
            "--username",
            USER,
            "--password-stdin",
            dir.path().to_str().unwrap(),
        ],
        &[],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(run.success, "{}", run.describe());
    files.into_iter().next().unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_mirror_serves_everyone_with_the_servers_credential() {
    let registry = HtpasswdRegistry::start();
    let zip = push_with_password(&registry);
    let cert = TestCert::generate();
    let url = registry.url();
    let docker = tempfile::tempdir().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            r#"{{"auths":{{"http://127.0.0.1:{}":{{"auth":"{auth}"}}}}}}"#,
            registry.port()
        ),
    )
    .unwrap();
    let env = [("DOCKER_CONFIG", docker.path().to_str().unwrap())];
    let client = https_client(&cert);

    // Not public: the server's credential is never used for clients, who get the origin's answer.
    let private =
        Server::start_with_env(&MirrorConfig::new(&cert, &url, false).to_hcl(), &[], &env);
    fetch(
        &client,
        &format!("{}{FOO}/index.json", private.mirror_url()),
        None,
    )
    .await
    .expect_status(401);
    drop(private);

    let mut config = MirrorConfig::new(&cert, &url, false);
    config.extra_mirror = "  public = true";
    let server = Server::start_with_env(&config.to_hcl(), &[], &env);
    let index = fetch(
        &client,
        &format!("{}{FOO}/index.json", server.mirror_url()),
        None,
    )
    .await
    .expect_status(200)
    .json();
    assert_eq!(index["versions"]["1.0.0"], serde_json::json!({}));
    let archives = fetch_archives(&client, &server.mirror_url(), FOO, "1.0.0", None).await;
    assert!(
        archives["linux_amd64"].url.query().is_none(),
        "a public mirror's URLs carry no sealed credential: {}",
        archives["linux_amd64"].url
    );
    for _ in 0..2 {
        let d = download_hashed(&client, archives["linux_amd64"].url.as_str(), &[]).await;
        assert_eq!(d.status, 200);
        assert!(d.is_exactly(&zip));
    }
    let version = fetch(
        &client,
        &format!("{}{FOO}/1.0.0.json", server.mirror_url()),
        None,
    )
    .await;
    assert_eq!(
        version
            .header("cache-control")
            .map(|v| v.starts_with("public")),
        Some(true),
        "public answers may be kept by shared caches"
    );
    assert!(
        !server.stderr().contains(PASSWORD),
        "the server's credential must never be logged"
    );
}
