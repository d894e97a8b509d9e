//! End-to-end: the provider registry protocol and the module registry protocol, served from
//! a real docker-registry by the real server binary, with Terraform 1.0.3 installing directly
//! from them (no `provider_installation` block), keys made by `keygen` and by GnuPG, providers
//! and modules published with `push --provider-registry` / `push --module-registry`, and
//! author signatures that Terraform verifies (and rejects once tampered with).

mod common;
mod registry_support;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use registry_support::*;
use serde_json::json;

fn provider_addr(port: u16) -> String {
    format!("localhost:{port}/acme/foo")
}

/// Checks `GET /v1/providers/acme/foo/versions`: exactly version 1.0.0, on `platforms`.
async fn check_provider_versions(client: &reqwest::Client, server: &Server, platforms: &[&str]) {
    let url = format!("{}v1/providers/acme/foo/versions", server.base_url());
    let json = get_json(client, &url, None).await;
    let versions = json["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {url}: no \"versions\" array: {json}"));
    assert_eq!(versions.len(), 1, "GET {url}: {json}");
    assert_eq!(versions[0]["version"], "1.0.0", "GET {url}: {json}");
    let protocols = versions[0]["protocols"].as_array();
    assert!(
        protocols.is_some_and(|p| !p.is_empty()),
        "GET {url}: no protocols: {json}"
    );
    let got = version_platforms(&versions[0]);
    let mut want: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "GET {url}: platforms: {json}");
}

/// Checks `GET /v1/providers/acme/foo/1.0.0/download/OS/ARCH` for `package`: the filename,
/// shasum and download URL (serving exactly the package), a public (never private) signing key
/// whose key ID is `expected_key_id` (by the JSON and by gpg), and a SHA256SUMS listing the
/// package whose detached signature gpg accepts with that key.
async fn check_provider_download(
    client: &reqwest::Client,
    server: &Server,
    package: &Package,
    expected_key_id: &str,
) -> SignedDownload {
    let url = provider_doc_url(server.base_url(), "foo", "1.0.0", &package.platform);
    let served = fetch_signed_download(client, &url, None).await;
    let json = &served.json;
    assert_eq!(
        json["filename"],
        package.filename.as_str(),
        "GET {url}: {json}"
    );
    assert_eq!(
        json["shasum"],
        sha256_hex(&package.zip).as_str(),
        "GET {url}: {json}"
    );
    assert!(
        json["protocols"].as_array().is_some_and(|p| !p.is_empty()),
        "GET {url}: no protocols: {json}"
    );

    let download = fetch_ok(client, &served.urls.download, None).await;
    assert!(
        download.body == package.zip,
        "GET {}: {} bytes, not the {}-byte package {}",
        served.urls.download,
        download.body.len(),
        package.zip.len(),
        package.filename
    );

    let (key_id, ascii_armor) = (&served.key_id, &served.armor);
    assert!(
        key_id.eq_ignore_ascii_case(expected_key_id),
        "GET {url}: key_id {key_id}, expected {expected_key_id}"
    );
    assert!(
        is_armored_public_key(ascii_armor),
        "GET {url}: ascii_armor is not an armored public key:\n{ascii_armor}"
    );
    let verifier = Gpg::with_key(ascii_armor);
    assert_eq!(
        verifier.key_id(),
        expected_key_id.to_ascii_uppercase(),
        "GET {url}: gpg reads another key ID from ascii_armor"
    );

    let (sums, sig) = (&served.sums, &served.signature);
    let listed = parse_sha256sums(&sums.body);
    assert!(
        listed.contains(&(sha256_hex(&package.zip), package.filename.clone())),
        "GET {}: no line for {}:\n{}",
        sums.url,
        package.filename,
        sums.text()
    );
    let (good, report) = verifier.verify(&sig.body, &sums.body);
    assert!(
        good,
        "gpg does not accept {} as a signature of {} by {expected_key_id}:\n{report}",
        sig.url, sums.url
    );
    served
}

/// Terraform recorded provider `addr` 1.0.0 with the `zh:` of every package and the `h1:` of
/// the local one.
fn assert_lock_file(lock: Option<&str>, addr: &str, packages: &[Package], output: &str) {
    let lock = lock.unwrap_or_else(|| panic!("no .terraform.lock.hcl written:\n{output}"));
    assert_eq!(
        lock_file_version(lock, addr).as_deref(),
        Some("1.0.0"),
        "lock file:\n{lock}"
    );
    let hashes = lock_file_hashes(lock, addr);
    let local = local_platform();
    for p in packages {
        assert!(
            hashes.contains(&zh(&p.zip)),
            "lock file lacks {} ({}); hashes {hashes:?}\n{lock}",
            zh(&p.zip),
            p.platform
        );
        if p.platform == local {
            assert!(
                hashes.contains(&h1(&p.zip)),
                "lock file lacks {} (h1 of {}); hashes {hashes:?}\n{lock}",
                h1(&p.zip),
                p.platform
            );
        }
    }
}

/// `terraform init` (`what`) succeeded, reported the provider as self-signed by `key_id`, and
/// recorded it as [`assert_lock_file`] checks.
fn assert_signed_install(init: &TfInit, port: u16, key_id: &str, packages: &[Package], what: &str) {
    assert!(init.success, "{what} failed:\n{}", init.output);
    assert!(
        init.output
            .contains(&format!("self-signed, key ID {key_id}")),
        "{what} does not report the provider as self-signed by key {key_id}:\n{}",
        init.output
    );
    assert_lock_file(
        init.lock_file.as_deref(),
        &provider_addr(port),
        packages,
        &init.output,
    );
}

/// The module `net` was installed from the registry: its `main.tf`, without `.git/` or
/// `.terraform/`, recorded in `modules.json` at version 1.0.0.
fn assert_module_installed(work: &Path, port: u16, output: &str) {
    let dir = work.join(".terraform/modules/net");
    let main_tf = fs::read_to_string(dir.join("main.tf"))
        .unwrap_or_else(|e| panic!("{}/main.tf: {e}\n{output}", dir.display()));
    assert_eq!(main_tf, MODULE_MAIN_TF, "installed module main.tf");
    for junk in [".git", ".terraform"] {
        assert!(
            !dir.join(junk).exists(),
            "the installed module holds {junk}/ (push must leave it out): {:?}",
            dir_snapshot(&dir).keys().collect::<Vec<_>>()
        );
    }
    let modules_json = fs::read(work.join(".terraform/modules/modules.json"))
        .unwrap_or_else(|e| panic!(".terraform/modules/modules.json: {e}\n{output}"));
    let modules = parse_json(&modules_json);
    let entry = modules["Modules"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["Key"] == "net"))
        .unwrap_or_else(|| panic!("modules.json has no module net: {modules}"));
    assert_eq!(entry["Version"], "1.0.0", "modules.json: {modules}");
    assert_eq!(
        entry["Source"],
        format!("127.0.0.1:{port}/acme/net/aws").as_str(),
        "modules.json: {modules}"
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario: keygen key, provider pushed as zips, module pushed from a directory, one server
// with both registries
// ---------------------------------------------------------------------------------------------

/// Fields drop in order: the server stops before the registry.
struct BothRegistries {
    server: Server,
    registry: Option<Registry>,
    cert: TestCert,
    key: KeyPair,
    packages: Vec<Package>,
    _dir: tempfile::TempDir,
}

impl BothRegistries {
    fn start() -> BothRegistries {
        let registry = Registry::start(RegistryAuth::None);
        let dir = temp_dir("odtr-regproto-");
        let keys = dir.path().join("keys");
        fs::create_dir_all(&keys).unwrap();
        let key = keygen(&keys, "server-signing", None);
        let cert = TestCert::generate();
        let config_hcl = registry_config(
            &cert,
            &registry.url(),
            Some(&key.private_key),
            true,
            &dir.path().join("cache"),
        );
        let config = write_config(dir.path(), "config.hcl", &config_hcl);

        let local = local_platform();
        let packages = write_packages(
            &dir.path().join("dist"),
            "foo",
            "1.0.0",
            &[&local, other_platform(&local)],
        );
        let out = push_zips(&config, "acme/foo", "1.0.0", &packages, &[]);
        assert!(out.success(), "push --provider-registry failed:\n{out}");

        let module = dir.path().join("module");
        write_module_dir(&module);
        let out = push_module(&config, &module, "1.0.0", &[]);
        assert!(out.success(), "push --module-registry failed:\n{out}");

        let server = Server::start(&config_hcl);
        BothRegistries {
            server,
            registry: Some(registry),
            cert,
            key,
            packages,
            _dir: dir,
        }
    }

    fn port(&self) -> u16 {
        server_port(&self.server)
    }
}

#[test]
fn terraform_installs_provider_and_module_from_the_registries() {
    let rt = runtime();
    let s = BothRegistries::start();
    let port = s.port();

    // keygen's key ID is the one gpg reads from the public key it wrote.
    let public_key = fs::read_to_string(&s.key.public_key).expect("keygen public key");
    assert_eq!(
        gpg_key_id_of(&public_key),
        s.key.printed_id,
        "keygen printed another key ID than gpg reads from {}:\n{}",
        s.key.public_key.display(),
        s.key.output
    );

    // What push wrote: the module at modules/acme/net/aws:1.0.0, the provider at
    // providers/acme/foo:1.0.0 (no hostname in the repository).
    let registry_url = s.registry.as_ref().unwrap().url();
    rt.block_on(async {
        let provider_tags = tags(&registry_url, PROVIDER_REPO).await;
        assert!(
            provider_tags.contains(&"1.0.0".to_owned()),
            "{PROVIDER_REPO} tags: {provider_tags:?}"
        );
        assert_eq!(
            tags(&registry_url, MODULE_REPO).await,
            vec!["1.0.0".to_owned()],
            "{MODULE_REPO} tags"
        );
    });

    let client = https_client(&s.cert);
    let base = s.server.base_url().to_owned();
    rt.block_on(async {
        // Discovery names both protocols.
        let discovery = get_json(&client, &format!("{base}.well-known/terraform.json"), None).await;
        assert_eq!(
            discovery,
            json!({"providers.v1": "/v1/providers/", "modules.v1": "/v1/modules/"}),
            "GET /.well-known/terraform.json"
        );

        // Provider: versions, and the download of each platform, signed by the keygen key.
        let platforms: Vec<&str> = s.packages.iter().map(|p| p.platform.as_str()).collect();
        check_provider_versions(&client, &s.server, &platforms).await;
        for package in &s.packages {
            let served =
                check_provider_download(&client, &s.server, package, &s.key.printed_id).await;
            assert_eq!(
                parse_sha256sums(&served.sums.body),
                package_listing(&s.packages),
                "the server's SHA256SUMS lists every package of the version:\n{}",
                served.sums.text()
            );
            assert!(!served.key_id.is_empty() && !served.armor.is_empty());
            assert!(!served.signature.body.is_empty());
        }

        // Module: versions, and the download redirect to the zip on this server.
        let versions_url = format!("{base}v1/modules/acme/net/aws/versions");
        let versions = get_json(&client, &versions_url, None).await;
        assert_eq!(
            module_versions(&versions),
            vec!["1.0.0"],
            "GET {versions_url}: {versions}"
        );
        assert_eq!(
            versions["modules"].as_array().map(Vec::len),
            Some(1),
            "GET {versions_url}: {versions}"
        );

        let download_url = format!("{base}v1/modules/acme/net/aws/1.0.0/download");
        let (get, zip_url) = module_zip_url(&client, &download_url, None).await;
        assert!(
            zip_url.starts_with(&base),
            "X-Terraform-Get {get:?} does not point at this server ({base})"
        );
        let zip = fetch_ok(&client, &zip_url, None).await;
        let (names, main_tf) = zip_entries(&zip.body);
        assert_eq!(
            main_tf.as_deref(),
            Some(MODULE_MAIN_TF),
            "module zip entries {names:?}"
        );
        assert!(
            names.iter().any(|n| n == "docs/usage.txt"),
            "module zip lacks docs/usage.txt: {names:?}"
        );
        let junk: Vec<&String> = names
            .iter()
            .filter(|n| n.split('/').any(|seg| seg == ".git" || seg == ".terraform"))
            .collect();
        assert!(
            junk.is_empty(),
            "module zip holds .git/ or .terraform/ entries: {junk:?}"
        );
    });

    // Terraform installs both, directly from the registries.
    let (work, init) = init_fresh(&main_tf(port, true), &s.cert);
    assert_signed_install(
        &init,
        port,
        &s.key.printed_id,
        &s.packages,
        "terraform init",
    );
    assert_module_installed(work.path(), port, &init.output);
}

#[test]
fn origin_stopped_both_still_install_from_cache() {
    let mut s = BothRegistries::start();
    let port = s.port();

    let (_first_work, first) = init_fresh(&main_tf(port, true), &s.cert);
    assert!(
        first.success,
        "first terraform init failed:\n{}",
        first.output
    );
    let first_hashes = lock_file_hashes(
        first.lock_file.as_deref().unwrap_or(""),
        &provider_addr(port),
    );

    // The origin goes away; the server has everything in its caches.
    stop_origin(&mut s.registry);

    let (work, second) = init_fresh(&main_tf(port, true), &s.cert);
    assert_signed_install(
        &second,
        port,
        &s.key.printed_id,
        &s.packages,
        "terraform init with the origin stopped",
    );
    let mut a = first_hashes;
    let mut b = lock_file_hashes(
        second.lock_file.as_deref().unwrap_or(""),
        &provider_addr(port),
    );
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same hashes with and without the origin");
    assert_module_installed(work.path(), port, &second.output);
}

// ---------------------------------------------------------------------------------------------
// Scenario: an author-signed release (gpg), pushed with --author-key; the server has its own
// (other) gpg key
// ---------------------------------------------------------------------------------------------

struct AuthorRelease {
    registry: Registry,
    cert: TestCert,
    keys: SigningKeys,
    release: PathBuf,
    packages: Vec<Package>,
    sums: Vec<u8>,
    sig: Vec<u8>,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl AuthorRelease {
    fn push() -> AuthorRelease {
        let registry = Registry::start(RegistryAuth::None);
        let dir = temp_dir("odtr-regproto-author-");
        let cert = TestCert::generate();

        let keys = SigningKeys::generate(dir.path());

        let release = dir.path().join("release");
        let local = local_platform();
        let packages = write_packages(&release, "foo", "1.0.0", &[&local, other_platform(&local)]);
        let (sums_path, sums) = write_sha256sums(&release, "foo", "1.0.0", &packages);
        let sig = keys.author.sign_sha256sums(&sums_path);

        let config = dir.path().join("config.hcl");
        let s = AuthorRelease {
            registry,
            cert,
            keys,
            release,
            packages,
            sums,
            sig,
            config,
            dir,
        };
        fs::write(&s.config, s.config_hcl(&s.dir.path().join("cache-push"))).unwrap();
        let out = push_release_dir(&s.config, "acme/foo", &s.release, Some(&s.keys.author_pub));
        assert!(
            out.success(),
            "push --provider-registry --author-key failed:\n{out}"
        );
        s
    }

    /// Provider registry only, signing with the server's gpg key, cache in `cache`.
    fn config_hcl(&self, cache: &Path) -> String {
        registry_config(
            &self.cert,
            &self.registry.url(),
            Some(&self.keys.server_key),
            false,
            cache,
        )
    }

    /// `sha256-<hex of 1.0.0's manifest digest>.terraform-sig`
    async fn signature_tag(&self) -> String {
        let (_, body) = get_manifest_raw(&self.registry.url(), PROVIDER_REPO, "1.0.0")
            .await
            .unwrap_or_else(|| panic!("{PROVIDER_REPO}:1.0.0 not in the registry"));
        format!("sha256-{}.terraform-sig", sha256_hex(&body))
    }
}

#[test]
fn author_signature_is_served_and_verified() {
    let rt = runtime();
    let a = AuthorRelease::push();
    let registry_url = a.registry.url();

    // The stored signature artifact: tag, artifactType, and the three layers in order.
    rt.block_on(async {
        let sig_tag = a.signature_tag().await;
        let repo_tags = tags(&registry_url, PROVIDER_REPO).await;
        assert!(
            repo_tags.contains(&"1.0.0".to_owned()) && repo_tags.contains(&sig_tag),
            "{PROVIDER_REPO} tags {repo_tags:?} lack 1.0.0 or {sig_tag}"
        );
        let (content_type, body) = get_manifest_raw(&registry_url, PROVIDER_REPO, &sig_tag)
            .await
            .unwrap();
        assert!(
            content_type.starts_with(MEDIA_TYPE_OCI_MANIFEST),
            "{sig_tag}: Content-Type {content_type}"
        );
        let manifest = parse_json(&body);
        assert_eq!(
            manifest["artifactType"], ARTIFACT_TYPE_SIGNATURES,
            "{sig_tag}: {manifest}"
        );
        let layers = manifest["layers"]
            .as_array()
            .unwrap_or_else(|| panic!("{sig_tag}: no layers: {manifest}"));
        let media_types: Vec<&str> = layers
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(
            media_types,
            vec![
                MEDIA_TYPE_SHA256SUMS,
                MEDIA_TYPE_PGP_SIGNATURE,
                MEDIA_TYPE_PGP_KEYS
            ],
            "{sig_tag}: {manifest}"
        );
        let digest = |i: usize| layers[i]["digest"].as_str().unwrap().to_owned();
        assert!(
            get_blob(&registry_url, PROVIDER_REPO, &digest(0)).await == a.sums,
            "the stored SHA256SUMS is not the author's"
        );
        assert!(
            get_blob(&registry_url, PROVIDER_REPO, &digest(1)).await == a.sig,
            "the stored signature is not the author's"
        );
        let stored_key = get_blob(&registry_url, PROVIDER_REPO, &digest(2)).await;
        assert_eq!(
            gpg_key_id_of(&String::from_utf8_lossy(&stored_key)),
            a.keys.author_id,
            "the stored key is not the author's"
        );
    });

    // The server serves the author's SHA256SUMS, signature and key, not its own.
    let cache = a.dir.path().join("cache");
    let server = Server::start(&a.config_hcl(&cache));
    let client = https_client(&a.cert);
    let port = server_port(&server);
    rt.block_on(async {
        for package in &a.packages {
            let served =
                check_provider_download(&client, &server, package, &a.keys.author_id).await;
            assert!(
                !served.key_id.eq_ignore_ascii_case(&a.keys.server_id),
                "the server's own key is served for an author-signed release"
            );
            assert!(
                served.sums.body == a.sums,
                "served SHA256SUMS differs from the author's:\n{}\n--- author's ---\n{}",
                served.sums.text(),
                String::from_utf8_lossy(&a.sums)
            );
            assert!(
                served.signature.body == a.sig,
                "served signature is not the author's .sig ({} vs {} bytes)",
                served.signature.body.len(),
                a.sig.len()
            );
        }
    });

    let (_work, init) = init_fresh(&main_tf(port, false), &a.cert);
    assert_signed_install(
        &init,
        port,
        &a.keys.author_id,
        &a.packages,
        "terraform init",
    );
}

/// `doc` with the first hex digit of the line for `filename` changed (same length).
fn tamper_sums(doc: &[u8], filename: &str) -> Vec<u8> {
    let text = String::from_utf8(doc.to_vec()).expect("SHA256SUMS is UTF-8");
    let mut found = false;
    let out: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            if !found && line.trim_end().ends_with(filename) {
                found = true;
                let first = line.chars().next().unwrap();
                let swapped = if first == '0' { '1' } else { '0' };
                format!("{swapped}{}", &line[1..])
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(found, "no line for {filename} in SHA256SUMS:\n{text}");
    let out = out.concat().into_bytes();
    assert_eq!(out.len(), doc.len());
    assert_ne!(out, doc);
    out
}

#[test]
fn tampered_sha256sums_is_rejected_by_terraform() {
    let rt = runtime();
    let a = AuthorRelease::push();
    let registry_url = a.registry.url();
    let tags_before = rt.block_on(tags(&registry_url, PROVIDER_REPO));

    // push refuses an author-signed directory without --author-key.
    let out = push_release_dir(&a.config, "acme/foo", &a.release, None);
    assert!(
        !out.success(),
        "push accepted a release with a .sig but no --author-key:\n{out}"
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("--author-key"),
        "push's refusal does not name --author-key:\n{out}"
    );

    // push refuses a .sig that is not a signature of the SHA256SUMS, and a good signature by
    // another key than --author-key.
    let other_doc = a.dir.path().join("other-document.txt");
    fs::write(&other_doc, "not the SHA256SUMS\n").unwrap();
    for (name, version, signer, signed_other, what) in [
        (
            "bad-signature",
            "1.0.1",
            &a.keys.author,
            true,
            "a .sig of another document",
        ),
        (
            "wrong-key",
            "1.0.2",
            &a.keys.server_gpg,
            false,
            "a .sig made by another key than --author-key",
        ),
    ] {
        let release = a.dir.path().join(name);
        let packages = write_packages(&release, "foo", version, &[&local_platform()]);
        let (sums, _) = write_sha256sums(&release, "foo", version, &packages);
        let signed = if signed_other { &other_doc } else { &sums };
        signer.detach_sign(signed, &sig_path(&sums));
        let out = push_release_dir(&a.config, "acme/foo", &release, Some(&a.keys.author_pub));
        assert!(!out.success(), "push accepted {what}:\n{out}");
        assert!(
            format!("{}{}", out.stdout, out.stderr)
                .to_ascii_lowercase()
                .contains("signature"),
            "push's refusal of {what} does not mention the signature:\n{out}"
        );
    }
    assert_eq!(
        rt.block_on(tags(&registry_url, PROVIDER_REPO)),
        tags_before,
        "refused pushes changed the repository's tags"
    );

    // Tamper at the origin: one hex digit of the other platform's line, signature unchanged.
    let local = local_platform();
    let other = a
        .packages
        .iter()
        .find(|p| p.platform != local)
        .expect("a non-local package");
    rt.block_on(async {
        let sig_tag = a.signature_tag().await;
        let (_, body) = get_manifest_raw(&registry_url, PROVIDER_REPO, &sig_tag)
            .await
            .unwrap_or_else(|| panic!("{PROVIDER_REPO}:{sig_tag} not in the registry"));
        let mut manifest = parse_json(&body);
        assert_eq!(
            manifest["layers"][0]["mediaType"], MEDIA_TYPE_SHA256SUMS,
            "{sig_tag}: {manifest}"
        );
        let sums_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
        let sums = get_blob(&registry_url, PROVIDER_REPO, &sums_digest).await;
        let tampered = tamper_sums(&sums, &other.filename);
        let new_digest = push_blob(&a.registry, PROVIDER_REPO, &tampered, None).await;
        manifest["layers"][0]["digest"] = json!(new_digest);
        manifest["layers"][0]["size"] = json!(tampered.len());
        let new_body = serde_json::to_vec(&manifest).unwrap();
        push_manifest(
            &a.registry,
            PROVIDER_REPO,
            &sig_tag,
            MEDIA_TYPE_OCI_MANIFEST,
            &new_body,
            None,
        )
        .await;
        let (_, now) = get_manifest_raw(&registry_url, PROVIDER_REPO, &sig_tag)
            .await
            .unwrap();
        assert_eq!(now, new_body, "the tampered signature manifest is in place");
    });

    // A fresh server (fresh caches) reads the tampered artifact; Terraform refuses it.
    let server = Server::start(&a.config_hcl(&a.dir.path().join("cache-fresh")));
    let port = server_port(&server);
    let (_work, init) = init_fresh(&main_tf(port, false), &a.cert);
    assert!(
        !init.success,
        "terraform init accepted a tampered SHA256SUMS:\n{}",
        init.output
    );
    // Terraform wraps its messages; compare with the whitespace collapsed.
    let flat = init.output.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("Failed to install provider")
            && flat.contains(&format!(
                "Error while installing {} v1.0.0: error checking signature: openpgp: invalid signature",
                provider_addr(port)
            )),
        "terraform init did not fail on the signature check:\n{}",
        init.output
    );
    let recorded = init
        .lock_file
        .as_deref()
        .map(|l| lock_file_hashes(l, &provider_addr(port)))
        .unwrap_or_default();
    assert!(
        recorded.is_empty(),
        "terraform recorded hashes from a tampered SHA256SUMS: {recorded:?}"
    );
}

#[test]
fn gpg_private_key_works_as_signing_key() {
    let rt = runtime();
    let registry = Registry::start(RegistryAuth::None);
    let dir = temp_dir("odtr-regproto-gpgkey-");
    let cert = TestCert::generate();
    let gpg = Gpg::new();
    gpg.generate_key(SERVER_UID);
    let key_id = gpg.key_id();
    let secret = dir.path().join("gpg-secret.asc");
    fs::write(&secret, gpg.export_secret()).unwrap();

    // A release directory without an author signature: the server signs.
    let release = dir.path().join("release");
    let local = local_platform();
    let packages = write_packages(&release, "foo", "1.0.0", &[&local, other_platform(&local)]);
    write_sha256sums(&release, "foo", "1.0.0", &packages);
    let config_hcl = registry_config(
        &cert,
        &registry.url(),
        Some(&secret),
        false,
        &dir.path().join("cache"),
    );
    let config = write_config(dir.path(), "config.hcl", &config_hcl);
    let out = push_release_dir(&config, "acme/foo", &release, None);
    assert!(out.success(), "push --provider-registry DIR failed:\n{out}");

    let server = Server::start(&config_hcl);
    let client = https_client(&cert);
    let base = server.base_url().to_owned();
    rt.block_on(async {
        // Only the configured protocol is discovered and served.
        let discovery = get_json(&client, &format!("{base}.well-known/terraform.json"), None).await;
        assert_eq!(
            discovery,
            json!({"providers.v1": "/v1/providers/"}),
            "GET /.well-known/terraform.json without a module_registry"
        );
        fetch(
            &client,
            &format!("{base}v1/modules/acme/net/aws/versions"),
            None,
        )
        .await
        .expect_status(404);

        let local_package = packages.iter().find(|p| p.platform == local).unwrap();
        let served = check_provider_download(&client, &server, local_package, &key_id).await;
        assert_eq!(
            parse_sha256sums(&served.sums.body),
            package_listing(&packages),
            "the server's SHA256SUMS:\n{}",
            served.sums.text()
        );
    });

    let port = server_port(&server);
    let (_work, init) = init_fresh(&main_tf(port, false), &cert);
    assert_signed_install(&init, port, &key_id, &packages, "terraform init");
}

#[test]
fn keygen_refuses_to_overwrite() {
    let dir = temp_dir("odtr-keygen-");
    let uid = "Test Registry <registry@example.test>";

    // A first run, without any configuration file, writes an armored key pair.
    let key = keygen(dir.path(), "k", Some(uid));
    let private = fs::read_to_string(&key.private_key).expect("private key written");
    let public = fs::read_to_string(&key.public_key).expect("public key written");
    assert!(
        private.contains("-----BEGIN PGP PRIVATE KEY BLOCK-----"),
        "private key file is not an armored private key:\n{private}"
    );
    assert!(
        is_armored_public_key(&public),
        "public key file is not an armored public key:\n{public}"
    );
    let from_public = Gpg::with_key(&public);
    assert_eq!(
        from_public.key_id(),
        key.printed_id,
        "key ID of the public key"
    );
    assert_eq!(from_public.user_ids(), vec![uid.to_owned()], "user IDs");
    let from_private = Gpg::with_key(&private);
    assert_eq!(
        from_private.key_id(),
        key.printed_id,
        "key ID of the private key"
    );

    let run = |args: Vec<String>| run_bin(&args_of(&args), std::time::Duration::from_secs(180));

    // Both files exist: refused, both unchanged.
    let out = run(keygen_args(&key.private_key, &key.public_key));
    assert!(
        !out.success(),
        "keygen overwrote an existing key pair:\n{out}"
    );
    assert_eq!(fs::read_to_string(&key.private_key).unwrap(), private);
    assert_eq!(fs::read_to_string(&key.public_key).unwrap(), public);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("k.asc") || text.contains("k.pub.asc"),
        "keygen's refusal does not name the existing file:\n{out}"
    );

    // Only one file of a pair exists (p2: the private key, p3: the public key): refused, it is
    // unchanged, the other is not written.
    for (name, existing_is_private) in [("p2", true), ("p3", false)] {
        let private = dir.path().join(format!("{name}.asc"));
        let public = dir.path().join(format!("{name}.pub.asc"));
        let (existing, absent, which) = if existing_is_private {
            (&private, &public, "private")
        } else {
            (&public, &private, "public")
        };
        let content = format!("precious {which} key\n");
        fs::write(existing, &content).unwrap();
        let out = run(keygen_args(&private, &public));
        assert!(
            !out.success(),
            "keygen overwrote an existing {which} key file:\n{out}"
        );
        assert_eq!(fs::read_to_string(existing).unwrap(), content);
        assert!(
            !absent.exists(),
            "a refused keygen still wrote {}",
            absent.display()
        );
        let file_name = existing.file_name().unwrap().to_string_lossy();
        assert!(
            format!("{}{}", out.stdout, out.stderr).contains(&*file_name),
            "keygen's refusal does not name the existing file {file_name}:\n{out}"
        );
    }
}
