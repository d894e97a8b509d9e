//! End-to-end: Terraform 1.0.3 installs providers through the server's network mirror, backed
//! by a docker-registry holding both OCI layouts.

mod common;

use common::*;
use serde_json::json;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const BAR: &str = "registry.terraform.io/acme/bar";
const BAR_REPO: &str = "terraform-providers/registry.terraform.io/acme/bar";

/// Checks a `{version}.json` answer: exactly `platforms`, each with `zh:` = the layer digest
/// (and, if the server sends an `h1:`, the right one), and each archive URL serving exactly
/// the package.
async fn check_version_json(
    client: &reqwest::Client,
    server: &Server,
    addr: &str,
    version: &str,
    packages: &[(String, Vec<u8>, String)], // (platform, zip, layer digest)
) {
    let archives = fetch_archives(client, &server.mirror_url(), addr, version, None).await;
    let mut got: Vec<&String> = archives.keys().collect();
    got.sort();
    let mut want: Vec<&String> = packages.iter().map(|(p, _, _)| p).collect();
    want.sort();
    assert_eq!(got, want, "{addr} {version}: platforms in {version}.json");
    for (platform, zip, layer_digest) in packages {
        let archive = &archives[platform];
        let zh = format!("zh:{}", layer_digest.trim_start_matches("sha256:"));
        assert!(
            archive.hashes.contains(&zh),
            "{addr} {version} {platform}: hashes {:?} lack {zh}",
            archive.hashes
        );
        for hash in archive.hashes.iter().filter(|h| h.starts_with("h1:")) {
            assert_eq!(hash, &h1(zip), "{addr} {version} {platform}: wrong h1");
        }
        let download = fetch(client, archive.url.as_str(), None).await;
        download.expect_status(200);
        assert!(
            download.body == *zip,
            "GET {} ({addr} {version} {platform}): body is {} bytes, not the {}-byte package",
            archive.url,
            download.body.len(),
            zip.len()
        );
    }
}

fn assert_init_installed(init: &TerraformInit, addr: &str, version: &str, local_zip: &[u8]) {
    assert!(init.success, "terraform init failed:\n{}", init.output);
    let lock = init
        .lock_file
        .as_deref()
        .unwrap_or_else(|| panic!("no .terraform.lock.hcl written:\n{}", init.output));
    assert_eq!(
        lock_file_version(lock, addr).as_deref(),
        Some(version),
        "lock file:\n{lock}"
    );
    let hashes = lock_file_hashes(lock, addr);
    assert!(
        hashes.contains(&h1(local_zip)),
        "lock file hashes {hashes:?} lack {} (h1 of the {} package); lock file:\n{lock}",
        h1(local_zip),
        local_platform()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_layout_serves_index_version_json_archives_and_terraform_init() {
    let registry = Registry::start(RegistryAuth::None);
    let local = local_platform();
    let mut packages_by_version = Vec::new();
    for version in ["1.0.0", "1.1.0"] {
        let local_zip = fake_provider_zip_for("foo", version, &local);
        let darwin_zip = fake_provider_zip_for("foo", version, "darwin_arm64");
        let pushed = push_seed_layout(
            &registry,
            FOO_REPO,
            version,
            &[
                (local.as_str(), local_zip.clone()),
                ("darwin_arm64", darwin_zip.clone()),
            ],
            None,
        )
        .await;
        packages_by_version.push((
            version,
            vec![
                (local.clone(), local_zip, pushed.layer_digests[0].clone()),
                (
                    "darwin_arm64".to_owned(),
                    darwin_zip,
                    pushed.layer_digests[1].clone(),
                ),
            ],
        ));
    }

    let cert = TestCert::generate();
    let server = Server::start(&server_config(&cert, &registry.url(), true));
    let client = https_client(&cert);

    let index_url = format!("{}{FOO}/index.json", server.mirror_url());
    let index = fetch(&client, &index_url, None).await;
    index.expect_status(200);
    let content_type = index.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "GET {index_url}: Content-Type {content_type:?}"
    );
    assert_eq!(
        index.json(),
        json!({"versions": {"1.0.0": {}, "1.1.0": {}}}),
        "GET {index_url}"
    );

    for (version, packages) in &packages_by_version {
        check_version_json(&client, &server, FOO, version, packages).await;
    }

    let (_, packages_100) = &packages_by_version[0];
    let init = tokio::task::block_in_place(|| {
        terraform_init(&server.mirror_url(), &cert, &[(FOO, "1.0.0")], None)
    });
    assert_init_installed(&init, FOO, "1.0.0", &packages_100[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentofu_layout_serves_index_version_json_archives_and_terraform_init() {
    let registry = Registry::start(RegistryAuth::None);
    let local = local_platform();
    let (local_os, local_arch) = local.split_once('_').unwrap();
    let mut packages_by_version = Vec::new();
    for version in ["2.0.0", "2.1.0-beta.1"] {
        let local_zip = fake_provider_zip_for("bar", version, &local);
        let darwin_zip = fake_provider_zip_for("bar", version, "darwin_arm64");
        let pushed = push_opentofu_layout(
            &registry,
            BAR_REPO,
            version,
            &[
                (local_os, local_arch, local_zip.clone()),
                ("darwin", "arm64", darwin_zip.clone()),
            ],
            None,
        )
        .await;
        packages_by_version.push((
            version,
            vec![
                (local.clone(), local_zip, pushed.layer_digests[0].clone()),
                (
                    "darwin_arm64".to_owned(),
                    darwin_zip,
                    pushed.layer_digests[1].clone(),
                ),
            ],
        ));
    }

    let cert = TestCert::generate();
    let server = Server::start(&server_config(&cert, &registry.url(), true));
    let client = https_client(&cert);

    let index_url = format!("{}{BAR}/index.json", server.mirror_url());
    let index = fetch(&client, &index_url, None).await;
    index.expect_status(200);
    assert_eq!(
        index.json(),
        json!({"versions": {"2.0.0": {}, "2.1.0-beta.1": {}}}),
        "GET {index_url}"
    );

    for (version, packages) in &packages_by_version {
        check_version_json(&client, &server, BAR, version, packages).await;
    }

    let (_, packages_200) = &packages_by_version[0];
    let init = tokio::task::block_in_place(|| {
        terraform_init(&server.mirror_url(), &cert, &[(BAR, "= 2.0.0")], None)
    });
    assert_init_installed(&init, BAR, "2.0.0", &packages_200[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_provider_is_404() {
    let registry = Registry::start(RegistryAuth::None);
    push_seed_layout(
        &registry,
        FOO_REPO,
        "1.0.0",
        &[("linux_amd64", fake_provider_zip("foo", "1.0.0"))],
        None,
    )
    .await;
    let cert = TestCert::generate();
    let server = Server::start(&server_config(&cert, &registry.url(), true));
    let client = https_client(&cert);

    let url = format!(
        "{}registry.terraform.io/acme/nope/index.json",
        server.mirror_url()
    );
    fetch(&client, &url, None).await.expect_status(404);
    let url = format!("{}{FOO}/9.9.9.json", server.mirror_url());
    fetch(&client, &url, None).await.expect_status(404);
}
