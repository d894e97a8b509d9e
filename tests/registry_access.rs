//! Edge cases and access rules of the provider registry and module registry protocols, against
//! a real docker-registry and the real server binary: sealed download URLs on an origin that
//! needs credentials, JSON 404s, offline hints, SHA256SUMS URLs bound to their version,
//! protocol versions, non-provider tags, keygen's file mode, pushing without the signing key,
//! author signatures pushed later, route metrics, and re-pushing modules.

mod common;
mod registry_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use registry_support::*;

const CLIENT_TOKEN: &str = "Bearer x";

/// The value of the query parameter `t` of `url`, which must be there and not empty.
fn token_of(url: &str) -> String {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let t = parsed
        .query_pairs()
        .find(|(k, _)| k == "t")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{url} carries no ?t= (no sealed credential)"));
    assert!(!t.is_empty(), "{url}: empty t");
    t
}

/// `url` with its query replaced by `t=TOKEN`, or removed when `token` is `None`.
fn with_token(url: &str, token: Option<&str>) -> String {
    let mut parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    parsed.set_query(None);
    if let Some(t) = token {
        parsed.query_pairs_mut().append_pair("t", t);
    }
    parsed.to_string()
}

/// What the tests here start from: a docker-registry, a temporary directory (configurations,
/// caches, releases) and a test certificate. Fields drop in order: the registry stops first.
struct Setup {
    registry: Registry,
    registry_url: String,
    dir: tempfile::TempDir,
    cert: TestCert,
}

impl Setup {
    fn start(auth: RegistryAuth, prefix: &str) -> Setup {
        let registry = Registry::start(auth);
        Setup {
            registry_url: registry.url(),
            registry,
            dir: temp_dir(prefix),
            cert: TestCert::generate(),
        }
    }

    /// `DIR/NAME`
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`registry_config_with`] on this registry: a fixed `query_string_secret` in the server
    /// block, `registry_extra` (attribute lines) inside each registry block, and the package
    /// cache in `DIR/CACHE`.
    fn hcl(
        &self,
        signing_key: Option<&Path>,
        modules: bool,
        registry_extra: &str,
        cache: &str,
    ) -> String {
        registry_config_with(
            &self.cert,
            &self.registry_url,
            signing_key,
            modules,
            &format!("  query_string_secret = \"{TEST_QUERY_STRING_SECRET}\"\n"),
            registry_extra,
            &self.path(cache),
        )
    }
}

/// A module package zip holding `main.tf`.
fn module_zip(main_tf: &str) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        writer
            .start_file("main.tf", options)
            .expect("zip start_file");
        writer.write_all(main_tf.as_bytes()).expect("zip write");
        writer.finish().expect("zip finish");
    }
    out.into_inner()
}

/// Pushes `zip` as OpenTofu's module package layout (one image manifest, artifactType
/// modulepkg, the empty config, one archive/zip layer) tagged `version`.
async fn push_module_package(
    registry: &Registry,
    repo: &str,
    version: &str,
    zip: &[u8],
    auth: Option<&str>,
) -> String {
    let empty = push_blob(registry, repo, b"{}", auth).await;
    assert_eq!(empty, EMPTY_DIGEST);
    let layer = push_blob(registry, repo, zip, auth).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": MODULE_ARTIFACT_TYPE,
        "config": {"mediaType": MEDIA_TYPE_EMPTY, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": MEDIA_TYPE_ZIP, "digest": layer, "size": zip.len()}],
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    push_manifest(
        registry,
        repo,
        version,
        MEDIA_TYPE_OCI_MANIFEST,
        &body,
        auth,
    )
    .await
}

/// Pushes an ordinary container image manifest (image config type, one tar layer) under `tag`:
/// not a provider in any layout.
async fn push_container_image(registry: &Registry, repo: &str, tag: &str) -> String {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let config_digest = push_blob(registry, repo, config, None).await;
    let layer = b"not really a tar layer, but the registry does not care".to_vec();
    let layer_digest = push_blob(registry, repo, &layer, None).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len()
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer.len()
        }],
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    push_manifest(registry, repo, tag, MEDIA_TYPE_OCI_MANIFEST, &body, None).await
}

/// Expects a `404` with `Content-Type: application/json` and a body `{"errors":[...]}` of
/// non-empty strings; returns the messages joined by newlines.
fn expect_json_404(f: &Fetched) -> String {
    f.expect_status(404);
    let content_type = f.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "GET {}: 404 with Content-Type {content_type:?}, expected application/json; body {}",
        f.url,
        f.text()
    );
    let json = f.json();
    let errors = json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {}: 404 body has no \"errors\" array: {json}", f.url));
    assert!(
        !errors.is_empty(),
        "GET {}: empty \"errors\": {json}",
        f.url
    );
    errors
        .iter()
        .map(|e| {
            let s = e
                .as_str()
                .unwrap_or_else(|| panic!("GET {}: error {e} is not a string", f.url));
            assert!(!s.is_empty(), "GET {}: empty error message: {json}", f.url);
            s.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(version, protocols)` of each entry of a provider `versions` document.
fn listed_versions(json: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    json["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"versions\" array: {json}"))
        .iter()
        .map(|v| {
            let protocols = v["protocols"]
                .as_array()
                .unwrap_or_else(|| panic!("version without protocols: {json}"))
                .iter()
                .map(|p| p.as_str().unwrap_or("?").to_owned())
                .collect();
            (v["version"].as_str().unwrap_or("?").to_owned(), protocols)
        })
        .collect()
}

fn strings(json: &serde_json::Value) -> Vec<String> {
    json.as_array()
        .unwrap_or_else(|| panic!("not an array: {json}"))
        .iter()
        .map(|v| v.as_str().unwrap_or("?").to_owned())
        .collect()
}

/// `GET url` without headers must answer `status` (`what` says why).
async fn expect_refusal(client: &reqwest::Client, url: &str, status: u16, what: &str) {
    let f = fetch(client, url, None).await;
    assert_eq!(
        f.status,
        status,
        "{what}: GET {url}: expected {status}, got {} {}",
        f.status,
        f.text()
    );
}

/// Fetches the SHA256SUMS and signature of a download document (no Authorization), checks
/// that gpg verifies the signature with the document's key and that the list is exactly
/// `packages`; returns `(key_id, sums, signature)`.
async fn check_signed_sums(
    client: &reqwest::Client,
    doc_url: &str,
    packages: &[Package],
) -> (String, Vec<u8>, Vec<u8>) {
    let SignedDownload {
        urls,
        key_id,
        armor,
        sums,
        signature,
        ..
    } = fetch_signed_download(client, doc_url, None).await;
    assert_eq!(
        parse_sha256sums(&sums.body),
        package_listing(packages),
        "GET {}: the SHA256SUMS does not list exactly its version's packages:\n{}",
        urls.shasums,
        sums.text()
    );
    let verifier = Gpg::with_key(&armor);
    assert_eq!(verifier.key_id(), key_id, "GET {doc_url}: key_id vs armor");
    let (good, report) = verifier.verify(&signature.body, &sums.body);
    assert!(
        good,
        "gpg does not accept {} as a signature of {} by the served key {key_id}:\n{report}",
        urls.signature, urls.shasums
    );
    (key_id, sums.body, signature.body)
}

// ---------------------------------------------------------------------------------------------
// 1. Sealed URLs on an origin that needs credentials
// ---------------------------------------------------------------------------------------------

#[test]
fn sealed_urls_on_an_authenticating_origin() {
    let rt = runtime();
    let fx = Setup::start(RegistryAuth::Silly, "odtr-regaccess-sealed-");
    let auth = fx.registry.push_auth();
    assert!(auth.is_some(), "a Silly registry needs push credentials");
    let keys = fx.path("keys");
    fs::create_dir_all(&keys).unwrap();
    let key = keygen(&keys, "server", None);

    let local = local_platform();
    let other = other_platform(&local);
    let packages = write_packages(&fx.path("dist"), "foo", "1.0.0", &[&local, other]);
    let zip = module_zip(MODULE_MAIN_TF);
    rt.block_on(async {
        let tofu: Vec<(&str, &str, Vec<u8>)> = packages
            .iter()
            .map(|p| {
                let (os, arch) = p.platform.split_once('_').unwrap();
                (os, arch, p.zip.clone())
            })
            .collect();
        push_opentofu_layout(&fx.registry, PROVIDER_REPO, "1.0.0", &tofu, auth).await;
        push_module_package(&fx.registry, MODULE_REPO, "1.0.0", &zip, auth).await;
    });

    let hcl = fx.hcl(
        Some(&key.private_key),
        true,
        "  proxy_packages = true\n",
        "cache",
    );
    let server = Server::start(&hcl);
    let client = https_client(&fx.cert);
    let base = server.base_url().to_owned();

    rt.block_on(async {
        // The versions list: refused without credentials (never an empty 200), listed with.
        let versions_url = format!("{base}v1/providers/acme/foo/versions");
        let anonymous = fetch(&client, &versions_url, None).await;
        assert_eq!(
            anonymous.status,
            401,
            "GET {versions_url} without Authorization: expected 401, got {} {}",
            anonymous.status,
            anonymous.text()
        );
        let challenge = anonymous.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer"),
            "GET {versions_url}: 401 without a Bearer WWW-Authenticate: {:?}",
            anonymous.headers
        );
        let listed = get_json(&client, &versions_url, Some(CLIENT_TOKEN)).await;
        let versions: Vec<String> = listed_versions(&listed)
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(versions, vec!["1.0.0"], "GET {versions_url}: {listed}");

        // Each platform's download document: every URL is sealed and works without headers.
        let mut docs = Vec::new();
        for p in &packages {
            let doc_url = provider_doc_url(&base, "foo", "1.0.0", &p.platform);
            let served = fetch_signed_download(&client, &doc_url, Some(CLIENT_TOKEN)).await;
            let (urls, sums, sig) = (served.urls, &served.sums, &served.signature);
            for u in [&urls.download, &urls.shasums, &urls.signature] {
                token_of(u);
            }
            assert_eq!(served.key_id, key.printed_id, "GET {doc_url}: key_id");

            let package = fetch_ok(&client, &urls.download, None).await;
            assert!(
                package.body == p.zip,
                "GET {} without Authorization: {} bytes, not the package {}",
                urls.download,
                package.body.len(),
                p.filename
            );
            assert!(
                parse_sha256sums(&sums.body).contains(&(sha256_hex(&p.zip), p.filename.clone())),
                "GET {}: no line for {}:\n{}",
                urls.shasums,
                p.filename,
                sums.text()
            );
            let (good, report) = Gpg::with_key(&served.armor).verify(&sig.body, &sums.body);
            assert!(
                good,
                "gpg refuses {} over {}:\n{report}",
                urls.signature, urls.shasums
            );

            // Without the token: 401.
            for u in [&urls.download, &urls.shasums, &urls.signature] {
                expect_refusal(&client, &with_token(u, None), 401, "sealed URL without t").await;
            }
            docs.push(urls);
        }

        // Tokens only open the URL they were issued for: 403 otherwise.
        let package_token = token_of(&docs[0].download);
        let sums_token = token_of(&docs[0].shasums);
        let misuses = [
            (
                "the package's token on the SHA256SUMS URL",
                with_token(&docs[0].shasums, Some(package_token.as_str())),
            ),
            (
                "the package's token on the signature URL",
                with_token(&docs[0].signature, Some(package_token.as_str())),
            ),
            (
                "the SHA256SUMS token on the package URL",
                with_token(&docs[0].download, Some(sums_token.as_str())),
            ),
            (
                "one package's token on another package's URL (digest)",
                with_token(&docs[1].download, Some(package_token.as_str())),
            ),
        ];
        for (what, u) in misuses {
            expect_refusal(&client, &u, 403, what).await;
        }

        // The module: X-Terraform-Get is sealed and works without headers, not without t.
        let download_url = format!("{base}v1/modules/acme/net/aws/1.0.0/download");
        let (_, zip_url) = module_zip_url(&client, &download_url, Some(CLIENT_TOKEN)).await;
        token_of(&zip_url);
        let fetched = fetch_ok(&client, &zip_url, None).await;
        assert!(
            fetched.body == zip,
            "GET {zip_url} without Authorization: {} bytes, not the {}-byte module zip",
            fetched.body.len(),
            zip.len()
        );
        expect_refusal(
            &client,
            &with_token(&zip_url, None),
            401,
            "module zip without t",
        )
        .await;
    });
}

// ---------------------------------------------------------------------------------------------
// 2-6, 10. One registry with several providers and a module; servers online, offline, and
// without a module_registry
// ---------------------------------------------------------------------------------------------

#[test]
fn catalogue_errors_protocols_and_metrics() {
    let rt = runtime();
    let fx = Setup::start(RegistryAuth::None, "odtr-regaccess-catalogue-");
    let keys = fx.path("keys");
    fs::create_dir_all(&keys).unwrap();
    let key = keygen(&keys, "server", None);
    // push has no use for the signing key: this configuration names one that does not exist.
    let push_config = write_config(
        fx.dir.path(),
        "push.hcl",
        &fx.hcl(Some(&fx.path("no-such-key.asc")), true, "", "push-cache"),
    );

    let local = local_platform();
    let other = other_platform(&local);
    let platforms = [local.as_str(), other];

    // acme/foo 1.0.0 and 2.0.0, no protocols given.
    let foo1 = write_packages(&fx.path("foo1"), "foo", "1.0.0", &platforms);
    let foo2 = write_packages(&fx.path("foo2"), "foo", "2.0.0", &platforms);
    for (version, packages) in [("1.0.0", &foo1), ("2.0.0", &foo2)] {
        let out = push_zips(&push_config, "acme/foo", version, packages, &[]);
        assert!(out.success(), "push acme/foo {version} failed:\n{out}");
    }
    // acme/NAME 1.0.0 pushed with --protocols PROTOCOLS.
    let push_with_protocols = |name: &str, protocols: &str| {
        let packages = write_packages(&fx.path(name), name, "1.0.0", &platforms);
        let address = format!("acme/{name}");
        push_zips(
            &push_config,
            &address,
            "1.0.0",
            &packages,
            &["--protocols", protocols],
        )
    };
    // acme/six 1.0.0 with --protocols 6.0.
    let out = push_with_protocols("six", "6.0");
    assert!(out.success(), "push --protocols 6.0 failed:\n{out}");
    // acme/both 1.0.0: a release directory whose manifest.json names 5.0 and 6.0.
    let both_dir = fx.path("both");
    let both = write_packages(&both_dir, "both", "1.0.0", &platforms);
    write_sha256sums(&both_dir, "both", "1.0.0", &both);
    fs::write(
        both_dir.join("terraform-provider-both_1.0.0_manifest.json"),
        r#"{"version":1,"metadata":{"protocol_versions":["5.0","6.0"]}}"#,
    )
    .unwrap();
    let out = push_release_dir(&push_config, "acme/both", &both_dir, None);
    assert!(
        out.success(),
        "push of a release directory with manifest.json failed:\n{out}"
    );
    // --protocols 6.x is refused, naming it, and writes nothing.
    let out = push_with_protocols("bad", "6.x");
    assert!(!out.success(), "push --protocols 6.x succeeded:\n{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("6.x"),
        "push's refusal of --protocols 6.x does not name it:\n{out}"
    );
    // The module acme/net/aws 1.0.0.
    let module_dir = fx.path("module");
    write_module_dir(&module_dir);
    let out = push_module(&push_config, &module_dir, "1.0.0", &[]);
    assert!(out.success(), "push --module-registry failed:\n{out}");

    rt.block_on(async {
        assert_eq!(
            tags(&fx.registry_url, "providers/acme/bad").await,
            Vec::<String>::new(),
            "a refused push (--protocols 6.x) wrote tags"
        );
        // An ordinary container image under tag 3.0.0 of acme/foo.
        push_container_image(&fx.registry, PROVIDER_REPO, "3.0.0").await;
        assert_eq!(
            tags(&fx.registry_url, PROVIDER_REPO).await,
            vec!["1.0.0", "2.0.0", "3.0.0"],
            "{PROVIDER_REPO} tags"
        );
    });

    // The servers' configurations: signing with keygen's key, the cache in DIR/CACHE.
    let server_hcl =
        |modules: bool, cache: &str| fx.hcl(Some(&key.private_key), modules, "", cache);
    let server = Server::start(&server_hcl(true, "cache"));
    let client = https_client(&fx.cert);
    let base = server.base_url().to_owned();

    rt.block_on(async {
        // 6. The container image tag is left out; the provider versions remain.
        let url = format!("{base}v1/providers/acme/foo/versions");
        let json = get_json(&client, &url, None).await;
        let listed = listed_versions(&json);
        assert_eq!(
            listed,
            vec![
                ("1.0.0".to_owned(), vec!["5.0".to_owned()]),
                ("2.0.0".to_owned(), vec!["5.0".to_owned()]),
            ],
            "GET {url}: the versions (with protocols) of acme/foo: {json}"
        );

        // 5. Protocols in the versions and download documents.
        for (provider, want) in [
            ("foo", vec!["5.0"]),
            ("six", vec!["6.0"]),
            ("both", vec!["5.0", "6.0"]),
        ] {
            let url = format!("{base}v1/providers/acme/{provider}/versions");
            let json = get_json(&client, &url, None).await;
            let entry = listed_versions(&json)
                .into_iter()
                .find(|(v, _)| v == "1.0.0")
                .unwrap_or_else(|| panic!("GET {url}: no 1.0.0: {json}"));
            assert_eq!(entry.1, want, "GET {url}: protocols of 1.0.0: {json}");
            let url = provider_doc_url(&base, provider, "1.0.0", &local);
            let json = get_json(&client, &url, None).await;
            assert_eq!(
                strings(&json["protocols"]),
                want,
                "GET {url}: protocols: {json}"
            );
        }

        // 2. Unknown things: 404 with JSON errors.
        let unknown_platform = if local == "windows_386" {
            "windows/amd64"
        } else {
            "windows/386"
        };
        for path in [
            "v1/providers/acme/nope/versions".to_owned(),
            "v1/providers/acme/foo/9.9.9/download/linux/amd64".to_owned(),
            format!("v1/providers/acme/foo/1.0.0/download/{unknown_platform}"),
            "v1/modules/acme/nope/aws/versions".to_owned(),
            "v1/modules/acme/net/aws/9.9.9/download".to_owned(),
        ] {
            let f = fetch(&client, &format!("{base}{path}"), None).await;
            expect_json_404(&f);
        }

        // 4. A SHA256SUMS URL of 1.0.0 with its version segment changed to 2.0.0: 404.
        let doc1 = provider_doc_url(&base, "foo", "1.0.0", &local);
        let json = get_json(&client, &doc1, None).await;
        let urls = download_urls(&doc1, &json);
        for u in [&urls.shasums, &urls.signature] {
            assert!(
                u.contains("/1.0.0/"),
                "SHA256SUMS URL {u} has no /1.0.0/ segment"
            );
            let swapped = u.replacen("/1.0.0/", "/2.0.0/", 1);
            let f = fetch(&client, &swapped, None).await;
            expect_json_404(&f);
        }
        // The real documents of both versions are unaffected.
        for (version, packages) in [("1.0.0", &foo1), ("2.0.0", &foo2), ("1.0.0", &foo1)] {
            let doc = provider_doc_url(&base, "foo", version, &local);
            let (key_id, _, _) = check_signed_sums(&client, &doc, packages).await;
            assert_eq!(key_id, key.printed_id, "GET {doc}: key_id");
        }

        // Downloads, for the metrics below.
        let json = get_json(&client, &doc1, None).await;
        let urls = download_urls(&doc1, &json);
        fetch_ok(&client, &urls.download, None).await;
        let download_url = format!("{base}v1/modules/acme/net/aws/1.0.0/download");
        let (_, zip_url) = module_zip_url(&client, &download_url, None).await;
        let zip = fetch_ok(&client, &zip_url, None).await;
        assert_eq!(
            zip_entries(&zip.body).1.as_deref(),
            Some(MODULE_MAIN_TF),
            "module zip main.tf"
        );
        fetch_ok(
            &client,
            &format!("{base}v1/modules/acme/net/aws/versions"),
            None,
        )
        .await;

        // 10. Requests by route in /metrics.
        let metrics = fetch(&client, &format!("{base}metrics"), None).await;
        metrics.expect_status(200);
        let text = metrics.text();
        for (route, status) in [
            ("provider_versions", 200),
            ("provider_download", 200),
            ("provider_download", 404),
            ("provider_shasums", 200),
            ("provider_shasums", 404),
            ("provider_package", 200),
            ("module_versions", 200),
            ("module_versions", 404),
            ("module_download", 204),
            ("module_download", 404),
            ("module_package", 200),
        ] {
            let prefix = format!("odtr_requests_total{{route=\"{route}\",status=\"{status}\"}} ");
            let count = text
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|n| n.trim().parse::<f64>().ok());
            assert!(
                count.is_some_and(|n| n >= 1.0),
                "GET /metrics has no {prefix}N with N >= 1:\n{}",
                text.lines()
                    .filter(|l| l.starts_with("odtr_requests_total"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        for route in [
            "provider_versions",
            "provider_download",
            "provider_shasums",
            "provider_package",
            "module_versions",
            "module_download",
            "module_package",
        ] {
            let needle = format!("odtr_request_duration_seconds_count{{route=\"{route}\"}} ");
            assert!(
                text.lines().any(|l| l.starts_with(&needle)),
                "GET /metrics has no latency histogram for route {route}"
            );
        }
    });
    drop(server);

    // 3. Offline, with a cache that holds nothing: 404 naming the warm command.
    let offline = Server::start_with_args(&server_hcl(true, "cache-offline"), &["--offline"]);
    let offline_base = offline.base_url().to_owned();
    rt.block_on(async {
        for (path, hint) in [
            ("v1/providers/acme/foo/versions", "warm --provider-registry"),
            ("v1/modules/acme/net/aws/versions", "warm --module-registry"),
        ] {
            let f = fetch(&client, &format!("{offline_base}{path}"), None).await;
            let message = expect_json_404(&f);
            assert!(
                message.contains(hint),
                "GET {path} offline: the 404 does not say `{hint}`: {message}"
            );
        }
    });
    drop(offline);

    // 2. Without a module_registry, /v1/modules/ is 404.
    let server = Server::start(&server_hcl(false, "cache-provider-only"));
    let only_base = server.base_url().to_owned();
    rt.block_on(async {
        for path in [
            "v1/modules/acme/net/aws/versions",
            "v1/modules/acme/net/aws/1.0.0/download",
        ] {
            let f = fetch(&client, &format!("{only_base}{path}"), None).await;
            expect_json_404(&f);
        }
        // The provider registry itself answers.
        fetch_ok(
            &client,
            &format!("{only_base}v1/providers/acme/foo/versions"),
            None,
        )
        .await;
    });
}

// ---------------------------------------------------------------------------------------------
// 7. keygen's private key mode
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn keygen_private_key_is_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("odtr-regaccess-keygen-");
    let key = keygen(dir.path(), "k", None);
    let mode = fs::metadata(&key.private_key)
        .expect("private key written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode,
        0o600,
        "keygen wrote {} with mode {mode:o}, expected 600",
        key.private_key.display()
    );
}

// ---------------------------------------------------------------------------------------------
// 8. push does not need the signing key
// ---------------------------------------------------------------------------------------------

#[test]
fn push_works_without_the_signing_key_file() {
    let rt = runtime();
    let fx = Setup::start(RegistryAuth::None, "odtr-regaccess-nokey-");
    let missing = fx.path("keys/never-created.asc");
    let config = write_config(
        fx.dir.path(),
        "config.hcl",
        &fx.hcl(Some(&missing), false, "", "cache"),
    );
    let local = local_platform();
    let packages = write_packages(&fx.path("dist"), "foo", "1.0.0", &[&local]);
    let out = push_zips(&config, "acme/foo", "1.0.0", &packages, &[]);
    assert!(
        out.success(),
        "push --provider-registry failed with a signing_key_file that does not exist:\n{out}"
    );
    assert!(!missing.exists(), "push created {}", missing.display());
    let repo_tags = rt.block_on(tags(&fx.registry_url, PROVIDER_REPO));
    assert_eq!(repo_tags, vec!["1.0.0"], "{PROVIDER_REPO} tags after push");
}

// ---------------------------------------------------------------------------------------------
// 9. Author signatures pushed after the version
// ---------------------------------------------------------------------------------------------

#[test]
fn author_signatures_pushed_later_replace_the_servers() {
    let rt = runtime();
    let fx = Setup::start(RegistryAuth::None, "odtr-regaccess-author-");

    let SigningKeys {
        author,
        author_id,
        author_pub,
        server_id,
        server_key,
        ..
    } = SigningKeys::generate(fx.dir.path());

    let release = fx.path("release");
    let local = local_platform();
    let packages = write_packages(&release, "foo", "1.0.0", &[&local, other_platform(&local)]);
    let (sums_path, author_sums) = write_sha256sums(&release, "foo", "1.0.0", &packages);

    // The JSON documents and remembered absences are only fresh for 1 s.
    let hcl = fx.hcl(
        Some(&server_key),
        false,
        "  index_max_age    = \"1s\"\n  negative_ttl     = \"1s\"\n",
        "cache",
    );
    let config = write_config(fx.dir.path(), "config.hcl", &hcl);

    // First without the author's signature: the server signs.
    let out = push_release_dir(&config, "acme/foo", &release, None);
    assert!(out.success(), "push without a .sig failed:\n{out}");
    let server = Server::start(&hcl);
    let client = https_client(&fx.cert);
    let doc_url = provider_doc_url(server.base_url(), "foo", "1.0.0", &local);
    let (first_id, _, _) = rt.block_on(check_signed_sums(&client, &doc_url, &packages));
    assert_eq!(first_id, server_id, "before the author's signature");

    // Then the same directory with the author's .sig.
    let author_sig = author.sign_sha256sums(&sums_path);
    let out = push_release_dir(&config, "acme/foo", &release, Some(&author_pub));
    assert!(
        out.success(),
        "push of the author's signature for a pushed version failed:\n{out}"
    );

    // Within a bounded time the download document names the author's key.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let json = rt.block_on(get_json(&client, &doc_url, None));
        let (id, _) = served_key(&doc_url, &json);
        if id == author_id {
            break;
        }
        if !seen.contains(&id) {
            seen.push(id);
        }
        assert!(
            Instant::now() < deadline,
            "30 s after the author's signature was pushed, {doc_url} still names key(s) {seen:?}, not the author's {author_id} (index_max_age and negative_ttl are 1 s)"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // From then on: the author's key, SHA256SUMS and signature, consistently.
    for round in 0..3 {
        let (id, sums, sig) = rt.block_on(check_signed_sums(&client, &doc_url, &packages));
        assert_eq!(id, author_id, "round {round}: key_id");
        assert!(
            sums == author_sums,
            "round {round}: served SHA256SUMS is not the author's:\n{}",
            String::from_utf8_lossy(&sums)
        );
        assert!(
            sig == author_sig,
            "round {round}: served signature is not the author's .sig ({} vs {} bytes)",
            sig.len(),
            author_sig.len()
        );
        std::thread::sleep(Duration::from_millis(600));
    }
}

// ---------------------------------------------------------------------------------------------
// 11. Re-pushing a module
// ---------------------------------------------------------------------------------------------

/// The digest of the manifest `tag` of the module repository names (`None`: no such tag).
fn module_tag_digest(
    rt: &tokio::runtime::Runtime,
    registry_url: &str,
    tag: &str,
) -> Option<String> {
    rt.block_on(get_manifest_raw(registry_url, MODULE_REPO, tag))
        .map(|(_, body)| sha256_digest(&body))
}

/// The `main.tf` of the module zip tagged `tag`.
fn module_main_tf(rt: &tokio::runtime::Runtime, registry_url: &str, tag: &str) -> Option<String> {
    rt.block_on(async {
        let (_, body) = get_manifest_raw(registry_url, MODULE_REPO, tag).await?;
        let manifest = parse_json(&body);
        let digest = manifest["layers"][0]["digest"].as_str()?.to_owned();
        let zip = get_blob(registry_url, MODULE_REPO, &digest).await;
        zip_entries(&zip).1
    })
}

#[test]
fn module_push_is_idempotent_refuses_changes_and_forces() {
    let rt = runtime();
    let fx = Setup::start(RegistryAuth::None, "odtr-regaccess-module-");
    let config = write_config(
        fx.dir.path(),
        "config.hcl",
        &fx.hcl(None, true, "", "cache"),
    );
    let module = fx.path("module");
    write_module_dir(&module);

    let out = push_module(&config, &module, "1.0.0", &[]);
    assert!(out.success(), "first module push failed:\n{out}");
    let first = module_tag_digest(&rt, &fx.registry_url, "1.0.0").expect("tag 1.0.0 after push");

    // The same directory again: nothing to do.
    let out = push_module(&config, &module, "1.0.0", &[]);
    assert!(
        out.success(),
        "second push of the same module failed:\n{out}"
    );
    assert!(
        out.stdout.contains("already up to date"),
        "second push of the same module does not say \"already up to date\":\n{out}"
    );
    assert_eq!(
        module_tag_digest(&rt, &fx.registry_url, "1.0.0").as_deref(),
        Some(first.as_str()),
        "an up-to-date push moved the tag"
    );

    // Changed content: refused, suggesting --force; the tag is unchanged.
    let changed_tf = "output \"x\" {\n  value = 2\n}\n";
    fs::write(module.join("main.tf"), changed_tf).unwrap();
    let out = push_module(&config, &module, "1.0.0", &[]);
    assert!(
        !out.success(),
        "push of changed module content over an existing tag succeeded:\n{out}"
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("already holds other content") && text.contains("--force"),
        "the refusal does not say the tag holds other content and suggest --force:\n{out}"
    );
    assert_eq!(
        module_tag_digest(&rt, &fx.registry_url, "1.0.0").as_deref(),
        Some(first.as_str()),
        "a refused push moved the tag"
    );

    // --dry-run writes nothing: not over an existing tag (even with --force), nor a new one.
    let out = push_module(&config, &module, "1.0.0", &["--dry-run", "--force"]);
    assert!(out.success(), "push --dry-run --force failed:\n{out}");
    assert_eq!(
        module_tag_digest(&rt, &fx.registry_url, "1.0.0").as_deref(),
        Some(first.as_str()),
        "push --dry-run --force moved the tag"
    );
    let out = push_module(&config, &module, "1.1.0", &["--dry-run"]);
    assert!(
        out.success(),
        "push --dry-run of a new version failed:\n{out}"
    );
    assert_eq!(
        rt.block_on(tags(&fx.registry_url, MODULE_REPO)),
        vec!["1.0.0"],
        "push --dry-run of 1.1.0 wrote a tag"
    );
    assert_eq!(
        module_main_tf(&rt, &fx.registry_url, "1.0.0").as_deref(),
        Some(MODULE_MAIN_TF),
        "the module at 1.0.0 after the dry runs"
    );

    // --force replaces it.
    let out = push_module(&config, &module, "1.0.0", &["--force"]);
    assert!(out.success(), "push --force failed:\n{out}");
    let replaced = module_tag_digest(&rt, &fx.registry_url, "1.0.0").expect("tag 1.0.0");
    assert_ne!(replaced, first, "push --force left the tag where it was");
    assert_eq!(
        module_main_tf(&rt, &fx.registry_url, "1.0.0").as_deref(),
        Some(changed_tf),
        "the module at 1.0.0 after push --force"
    );
    let manifest = rt
        .block_on(get_manifest_raw(&fx.registry_url, MODULE_REPO, "1.0.0"))
        .map(|(_, body)| parse_json(&body))
        .unwrap();
    assert_eq!(
        manifest["artifactType"], MODULE_ARTIFACT_TYPE,
        "the replaced manifest: {manifest}"
    );
}
