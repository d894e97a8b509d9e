//! Checks the integration-test harness itself (registry, push helpers, Terraform, lock-file
//! parsing), independent of the server under test.

mod common;

use common::*;

async fn get_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    accept: &str,
    auth: Option<&str>,
) -> (String, Vec<u8>, Option<String>) {
    let url = format!("{}v2/{repo}/manifests/{reference}", registry.url());
    let mut req = plain_client()
        .get(&url)
        .header(reqwest::header::ACCEPT, accept);
    if let Some(auth) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {url}");
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_owned());
    (content_type, body_bytes(resp).await, digest)
}

async fn get_blob(registry: &Registry, repo: &str, digest: &str, auth: Option<&str>) -> Vec<u8> {
    let url = format!("{}v2/{repo}/blobs/{digest}", registry.url());
    let mut req = plain_client().get(&url);
    if let Some(auth) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {url}");
    body_bytes(resp).await
}

#[tokio::test]
async fn registry_seed_layout_roundtrip() {
    let registry = Registry::start(RegistryAuth::None);
    let repo = "terraform-providers/registry.terraform.io/acme/foo";
    let linux = fake_provider_zip_for("foo", "1.0.0", "linux_amd64");
    let darwin = fake_provider_zip_for("foo", "1.0.0", "darwin_arm64");
    assert_ne!(linux, darwin);
    let pushed = push_seed_layout(
        &registry,
        repo,
        "1.0.0",
        &[
            ("linux_amd64", linux.clone()),
            ("darwin_arm64,darwin_amd64", darwin.clone()),
        ],
        None,
    )
    .await;
    assert_eq!(pushed.layer_digests[0], sha256_digest(&linux));
    assert_eq!(pushed.zh(1), zh(&darwin));

    let (content_type, body, digest) =
        get_manifest(&registry, repo, "1.0.0", MEDIA_TYPE_OCI_MANIFEST, None).await;
    assert_eq!(content_type, MEDIA_TYPE_OCI_MANIFEST);
    assert_eq!(digest.as_deref(), Some(pushed.manifest_digest.as_str()));
    assert_eq!(sha256_digest(&body), pushed.manifest_digest);
    let manifest = parse_json(&body);
    assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_SEED_CONFIG);
    assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_TYPE_SEED_PACKAGE);
    assert_eq!(
        manifest["layers"][1]["annotations"][ANNOTATION_TARGET_PLATFORMS],
        "darwin_arm64,darwin_amd64"
    );
    assert_eq!(
        get_blob(&registry, repo, &pushed.layer_digests[0], None).await,
        linux
    );

    let tags_url = format!("{}v2/{repo}/tags/list", registry.url());
    let tags = parse_json(&body_bytes(plain_client().get(&tags_url).send().await.unwrap()).await);
    assert_eq!(tags["tags"], serde_json::json!(["1.0.0"]));
}

#[tokio::test]
async fn registry_opentofu_layout_roundtrip_with_silly_auth() {
    let registry = Registry::start(RegistryAuth::Silly);
    let auth = registry.push_auth();
    assert!(auth.is_some());

    // Silly auth: 401 + Bearer challenge without Authorization, 200 with any.
    let client = plain_client();
    let resp = client
        .get(format!("{}v2/", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains("realm=\"http://127.0.0.1:1/token\""),
        "{challenge}"
    );
    let resp = client
        .get(format!("{}v2/", registry.url()))
        .header("authorization", "Bearer whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    let repo = "terraform-providers/registry.terraform.io/acme/bar";
    let linux = fake_provider_zip_for("bar", "2.0.0+build.7", "linux_amd64");
    let darwin = fake_provider_zip_for("bar", "2.0.0+build.7", "darwin_arm64");
    let pushed = push_opentofu_layout(
        &registry,
        repo,
        "2.0.0+build.7",
        &[
            ("linux", "amd64", linux.clone()),
            ("darwin", "arm64", darwin.clone()),
        ],
        auth,
    )
    .await;
    assert_eq!(pushed.tag, "2.0.0_build.7");

    let (content_type, body, digest) =
        get_manifest(&registry, repo, "2.0.0_build.7", MEDIA_TYPE_OCI_INDEX, auth).await;
    assert_eq!(content_type, MEDIA_TYPE_OCI_INDEX);
    assert_eq!(digest.as_deref(), Some(pushed.manifest_digest.as_str()));
    let index = parse_json(&body);
    assert_eq!(index["artifactType"], ARTIFACT_TYPE_TOFU_PROVIDER);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["platform"]["os"], "darwin");
    assert_eq!(entries[1]["platform"]["architecture"], "arm64");
    assert_eq!(entries[1]["artifactType"], ARTIFACT_TYPE_TOFU_TARGET);

    let platform_digest = entries[0]["digest"].as_str().unwrap();
    assert_eq!(platform_digest, pushed.platform_manifest_digests[0]);
    let (content_type, body, _) = get_manifest(
        &registry,
        repo,
        platform_digest,
        MEDIA_TYPE_OCI_MANIFEST,
        auth,
    )
    .await;
    assert_eq!(content_type, MEDIA_TYPE_OCI_MANIFEST);
    let manifest = parse_json(&body);
    assert_eq!(manifest["artifactType"], ARTIFACT_TYPE_TOFU_TARGET);
    assert_eq!(manifest["config"]["digest"], EMPTY_DIGEST);
    assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_TYPE_ZIP);
    assert_eq!(manifest["layers"][0]["digest"], pushed.layer_digests[0]);
    assert_eq!(
        get_blob(&registry, repo, &pushed.layer_digests[0], auth).await,
        linux
    );
}

#[test]
fn fake_provider_zip_holds_one_executable() {
    let zip_bytes = fake_provider_zip("foo", "1.2.3");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&zip_bytes)).unwrap();
    assert_eq!(archive.len(), 1);
    let file = archive.by_index(0).unwrap();
    assert_eq!(file.name(), "terraform-provider-foo_v1.2.3");
    assert_eq!(file.unix_mode().map(|m| m & 0o777), Some(0o755));
    drop(file);
    assert!(h1(&zip_bytes).starts_with("h1:"));
    assert_ne!(h1(&zip_bytes), h1(&fake_provider_zip("foo", "1.2.4")));
}

#[test]
fn terraform_is_1_0_3() {
    let out = std::process::Command::new(terraform_path())
        .arg("version")
        .env("CHECKPOINT_DISABLE", "1")
        .env_remove("TF_CLI_CONFIG_FILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Terraform v1.0.3\n"), "{stdout}");
}

#[test]
fn test_cert_files_exist() {
    let cert = TestCert::generate();
    assert!(std::fs::read_to_string(cert.cert_path())
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(std::fs::read_to_string(cert.key_path())
        .unwrap()
        .contains("PRIVATE KEY"));
    let _client = https_client(&cert);
    let hcl = server_config(&cert, "http://127.0.0.1:5000/", true);
    assert!(hcl.contains("origin_url     = \"http://127.0.0.1:5000/\""));
    assert!(hcl.contains("proxy_packages = true"));
    assert!(hcl.contains(&cert.cert_path().display().to_string()));
}

#[test]
fn lock_file_parsing() {
    let lock = r#"# This file is maintained automatically by "terraform init".
# Manual edits may be lost in future updates.

provider "registry.terraform.io/acme/bar" {
  version = "2.0.0"
  hashes = [
    "h1:bbbb=",
  ]
}

provider "registry.terraform.io/acme/foo" {
  version     = "1.0.0"
  constraints = "1.0.0"
  hashes = [
    "h1:abc=",
    "zh:0123",
  ]
}
"#;
    assert_eq!(
        lock_file_hashes(lock, "registry.terraform.io/acme/foo"),
        vec!["h1:abc=".to_owned(), "zh:0123".to_owned()]
    );
    assert_eq!(
        lock_file_version(lock, "registry.terraform.io/acme/foo").as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        lock_file_hashes(lock, "registry.terraform.io/acme/bar"),
        vec!["h1:bbbb=".to_owned()]
    );
    assert!(lock_file_hashes(lock, "registry.terraform.io/acme/baz").is_empty());
}
