//! The OCI Distribution pull API (`/v2/`) served from the cache: skopeo reads through the
//! server with digests intact, and tiered caches (edges whose origin is a site instance in
//! front of the registry) fetch each package from the origin once.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";

/// A mirror config for an instance whose origin is `origin` (a registry or another instance).
fn instance_config(cert: &TestCert, origin: &str) -> String {
    MirrorConfig::new(cert, origin, false).to_hcl()
}

/// An edge: an instance whose origin is the site, trusting the site's certificate.
fn start_edge(cert: &TestCert, site: &Server) -> Server {
    let cert_file = cert.cert_path();
    Server::start_with_env(
        &instance_config(cert, site.base_url()),
        &[],
        &[("SSL_CERT_FILE", cert_file.to_str().unwrap())],
    )
}

struct Tiers {
    // Field order = drop order.
    edges: Vec<Server>,
    site: Server,
    proxy: FaultProxy,
    _registry: Registry,
    cert: TestCert,
    /// Package per platform.
    zips: BTreeMap<String, Vec<u8>>,
}

async fn tiers(edges: usize) -> Tiers {
    let registry = Registry::start(RegistryAuth::None);
    let local = local_platform();
    let mut zips = BTreeMap::new();
    for platform in [local.as_str(), "darwin_arm64"] {
        zips.insert(
            platform.to_owned(),
            random_provider_zip("foo", "1.0.0", 300_000, platform.len() as u64),
        );
    }
    let layers: Vec<(&str, Vec<u8>)> = zips.iter().map(|(p, z)| (p.as_str(), z.clone())).collect();
    push_seed_layout(&registry, FOO_REPO, "1.0.0", &layers, None).await;
    let proxy = FaultProxy::start(&registry.url());
    let cert = TestCert::generate();
    let site = Server::start(&instance_config(&cert, &proxy.url()));
    let edges = (0..edges).map(|_| start_edge(&cert, &site)).collect();
    Tiers {
        edges,
        site,
        proxy,
        _registry: registry,
        cert,
        zips,
    }
}

fn skopeo() -> std::path::PathBuf {
    which("skopeo").unwrap_or_else(|| {
        panic!("skopeo not found on PATH: {INSTALL_HINT} (Debian package skopeo)")
    })
}

fn run_skopeo(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let mut child = Command::new(skopeo())
        .args(args)
        .env("HOME", dir.path())
        .env("REGISTRY_AUTH_FILE", dir.path().join("auth.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .expect("spawn skopeo");
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    (
        status.is_some_and(|s| s.success()),
        read_file_lossy(&out),
        read_file_lossy(&err),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_reads_through_the_server_with_digests_intact() {
    let t = tiers(0).await;
    let host = t.site.host_port();
    let image = format!("docker://{host}/{FOO_REPO}:1.0.0");

    let (ok, tags, err) = run_skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{host}/{FOO_REPO}"),
    ]);
    assert!(ok, "skopeo list-tags failed: {err}");
    assert_eq!(
        parse_json(tags.as_bytes())["Tags"],
        serde_json::json!(["1.0.0"])
    );

    let (ok, raw, err) = run_skopeo(&["inspect", "--raw", "--tls-verify=false", &image]);
    assert!(ok, "skopeo inspect failed: {err}");
    let from_registry = plain_client()
        .get(format!("{}v2/{FOO_REPO}/manifests/1.0.0", t.proxy.url()))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    let registry_digest = from_registry.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sha256_digest(raw.as_bytes()),
        registry_digest,
        "the manifest must come through byte for byte"
    );

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let (ok, _, err) = run_skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &image,
        &format!("dir:{}", dest.display()),
    ]);
    assert!(ok, "skopeo copy failed: {err}");
    for zip in t.zips.values() {
        let file = dest.join(sha256_hex(zip));
        let copied = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("skopeo did not write {}: {e}", file.display()));
        assert!(copied == *zip, "package bytes differ after skopeo copy");
    }

    // Writes are refused in the spec's format; unknown names and malformed paths likewise.
    let client = https_client(&t.cert);
    let base = t.site.base_url();
    let resp = client
        .post(format!("{base}v2/{FOO_REPO}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let body = parse_json(&resp.bytes().await.unwrap());
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
    let missing = fetch(
        &client,
        &format!("{base}v2/{FOO_REPO}/manifests/9.9.9"),
        None,
    )
    .await;
    missing.expect_status(404);
    assert_eq!(missing.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let elsewhere = fetch(&client, &format!("{base}v2/other/thing/tags/list"), None).await;
    elsewhere.expect_status(404);
    assert_eq!(elsewhere.json()["errors"][0]["code"], "NAME_UNKNOWN");
    let base_check = fetch(&client, &format!("{base}v2/"), None).await;
    base_check.expect_status(200);
    assert_eq!(
        base_check.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_fill_from_the_site_and_the_origin_sees_each_package_once() {
    let t = tiers(2).await;
    let local = local_platform();
    let zip = Arc::new(t.zips[&local].clone());

    // 20 clients over two edges, all cold, all at once.
    let client = https_client(&t.cert);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mirror = t.edges[i % 2].mirror_url();
        let (client, zip, local) = (client.clone(), zip.clone(), local.clone());
        tasks.push(tokio::spawn(async move {
            let archives = fetch_archives(&client, &mirror, FOO, "1.0.0", None).await;
            let d = download_hashed(&client, archives[&local].url.as_str(), &[]).await;
            assert_eq!(d.status, 200);
            assert!(d.is_exactly(&zip), "client {i} got wrong bytes");
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("a client hung")
            .expect("a client failed");
    }
    let blob_gets = t
        .proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains(&sha256_hex(&zip)))
        .count();
    assert_eq!(blob_gets, 1, "origin requests: {:#?}", t.proxy.requests());

    // Terraform through an edge.
    let init = terraform_init(&t.edges[0].mirror_url(), &t.cert, &[(FOO, "1.0.0")], None);
    assert!(
        init.success,
        "terraform init through the edge:\n{}",
        init.output
    );

    // The registry goes away; a new, cold edge still installs, from the site's cache.
    t.proxy.set_mode(ProxyMode::Down);
    let cold = start_edge(&t.cert, &t.site);
    let init = terraform_init(&cold.mirror_url(), &t.cert, &[(FOO, "1.0.0")], None);
    assert!(
        init.success,
        "a cold edge with the registry down:\n{}\n--- site ---\n{}",
        init.output,
        t.site.stderr()
    );
}

/// The figure for the README: origin requests for 1000 simulated CI jobs (each fetches
/// `index.json`, `VERSION.json` and its platform's package from one of 4 edges) in front of
/// one site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_ci_jobs_over_four_edges_cost_the_origin_a_handful_of_requests() {
    let t = tiers(4).await;
    let local = local_platform();
    let client = https_client(&t.cert);
    let mirrors: Vec<String> = t.edges.iter().map(|e| e.mirror_url()).collect();
    let platforms: Vec<String> = t.zips.keys().cloned().collect();
    let jobs = 1000;
    let started = std::time::Instant::now();
    let results = futures::stream::iter(0..jobs)
        .map(|i| {
            let client = client.clone();
            let mirror = mirrors[i % mirrors.len()].clone();
            // Most jobs run on the local platform, some on another.
            let platform = if i % 5 == 0 {
                platforms.iter().find(|p| **p != local).unwrap().clone()
            } else {
                local.clone()
            };
            let expected = t.zips[&platform].clone();
            async move {
                fetch(&client, &format!("{mirror}{FOO}/index.json"), None)
                    .await
                    .expect_status(200);
                let archives = fetch_archives(&client, &mirror, FOO, "1.0.0", None).await;
                let d = download_hashed(&client, archives[&platform].url.as_str(), &[]).await;
                d.status == 200 && d.is_exactly(&expected)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<bool>>()
        .await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|ok| *ok), "a job got a wrong answer");
    let counts = t.proxy.counts();
    eprintln!(
        "FIGURE: {jobs} CI jobs over 4 edges and 1 site in {:.1} s: origin requests {} \
         (blob GETs {}, manifest GETs {}, tag lists {}, HEADs {}, other {})",
        elapsed.as_secs_f64(),
        counts.blob_gets + counts.manifest_gets + counts.tag_gets + counts.heads + counts.other,
        counts.blob_gets,
        counts.manifest_gets,
        counts.tag_gets,
        counts.heads,
        counts.other
    );
    // Each package once; each tag list and manifest about once (revalidation is 5 minutes
    // away); the registry's `/v2/` check at most once per edge-site pair.
    assert_eq!(counts.blob_gets, t.zips.len());
    assert!(
        counts.manifest_gets + counts.tag_gets + counts.heads + counts.other <= 8,
        "{counts:?}"
    );
}

use futures::StreamExt as _;

/// The access rules hold on `/v2/` too: an anonymous client of a registry demanding
/// credentials is challenged (Basic, so OCI clients use their credential stores), and a blob
/// cached for a credentialed client is not handed to an anonymous one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_api_never_hands_cached_content_to_a_client_the_origin_refuses() {
    let registry = Registry::start(RegistryAuth::Silly);
    let zip = fake_provider_zip_for("foo", "1.0.0", "linux_amd64");
    push_seed_layout(
        &registry,
        FOO_REPO,
        "1.0.0",
        &[("linux_amd64", zip.clone())],
        registry.push_auth(),
    )
    .await;
    let cert = TestCert::generate();
    let server = Server::start(&instance_config(&cert, &registry.url()));
    let client = https_client(&cert);
    let base = server.base_url();
    let token = Some("Bearer abc");

    let ping = fetch(&client, &format!("{base}v2/"), None).await;
    ping.expect_status(401);
    assert!(
        ping.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic ")),
        "{:?}",
        ping.header("www-authenticate")
    );
    fetch(&client, &format!("{base}v2/"), token)
        .await
        .expect_status(200);

    let manifest_url = format!("{base}v2/{FOO_REPO}/manifests/1.0.0");
    let denied = fetch(&client, &manifest_url, None).await;
    denied.expect_status(401);
    assert_eq!(denied.json()["errors"][0]["code"], "UNAUTHORIZED");
    let manifest = fetch(&client, &manifest_url, token).await;
    manifest.expect_status(200);
    assert_eq!(
        manifest.header("cache-control"),
        Some("private, no-cache"),
        "credentialed answers are not for shared caches"
    );

    let blob_url = format!("{base}v2/{FOO_REPO}/blobs/{}", sha256_digest(&zip));
    let d = download_hashed(&client, &blob_url, &[("authorization", "Bearer abc")]).await;
    assert_eq!(d.status, 200);
    assert!(d.is_exactly(&zip));
    // Cached now; still refused to a client without credentials.
    let d = download_hashed(&client, &blob_url, &[]).await;
    assert_eq!(d.status, 401, "a cached blob leaked to an anonymous client");
    let d = download_hashed(&client, &blob_url, &[("authorization", "Bearer other")]).await;
    assert_eq!(d.status, 200);
    assert!(d.is_exactly(&zip));
}

/// Blobs are scoped to a repository at the origin: a blob cached for one repository is not
/// handed out under another (whose credential the origin accepted) without the origin's
/// word, nor by a public mirror over another origin that shares the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_blob_never_leaks_to_another_repository_or_mirror() {
    const OWN_REPO: &str = "terraform-providers/registry.terraform.io/mallory/own";
    let private = Registry::start(RegistryAuth::Silly);
    let secret = random_provider_zip("foo", "1.0.0", 50_000, 7);
    let own = random_provider_zip("own", "1.0.0", 50_000, 8);
    push_seed_layout(
        &private,
        FOO_REPO,
        "1.0.0",
        &[("linux_amd64", secret.clone())],
        private.push_auth(),
    )
    .await;
    push_seed_layout(
        &private,
        OWN_REPO,
        "1.0.0",
        &[("linux_amd64", own.clone())],
        private.push_auth(),
    )
    .await;
    // A second, anonymous registry behind a public mirror sharing the same cache.
    let open = Registry::start(RegistryAuth::None);
    let cert = TestCert::generate();
    let config = format!(
        "{}\nprovider_mirror \"pub\" {{\n  origin_url  = \"{}\"\n  name_prefix = \"public-providers\"\n  public      = true\n}}\n",
        instance_config(&cert, &private.url()),
        open.url()
    );
    let docker = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &config,
        &[],
        &[("DOCKER_CONFIG", docker.path().to_str().unwrap())],
    );
    let client = https_client(&cert);
    let base = server.base_url();
    let secret_digest = sha256_digest(&secret);

    // Alice caches the secret package.
    let alice = [("authorization", "Bearer alice")];
    let url = format!("{base}v2/{FOO_REPO}/blobs/{secret_digest}");
    let d = download_hashed(&client, &url, &alice).await;
    assert_eq!(d.status, 200);
    assert!(d.is_exactly(&secret));

    // Mallory's credential is accepted for his own repository...
    fetch(
        &client,
        &format!("{base}v2/{OWN_REPO}/tags/list"),
        Some("Bearer mallory"),
    )
    .await
    .expect_status(200);
    // ...which is no proof that the secret blob is in it.
    let url = format!("{base}v2/{OWN_REPO}/blobs/{secret_digest}");
    let d = download_hashed(&client, &url, &[("authorization", "Bearer mallory")]).await;
    assert_eq!(d.status, 404, "a blob cached for another repository leaked");

    // The public mirror's origin does not have it either.
    let hex = sha256_hex(&secret);
    let url = format!(
        "{}pub/registry.terraform.io/acme/foo/download/sha256/{hex}/terraform-provider-foo_1.0.0_linux_amd64.zip",
        base
    );
    let d = download_hashed(&client, &url, &[]).await;
    assert_eq!(
        d.status, 404,
        "a blob cached for another mirror leaked through a public one"
    );
}
