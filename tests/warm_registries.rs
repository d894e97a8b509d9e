//! `warm --provider-registry` and `warm --module-registry`: a real docker-registry (behind a
//! counting proxy) holding provider acme/foo (two platforms, pushed with `push
//! --provider-registry`) and module acme/net/aws (two versions, pushed with `push
//! --module-registry`); the signing key made by `keygen`. Warmed directly and through a
//! running server, then the registry is stopped and `server --offline` on the warmed cache
//! must answer everything Terraform's registry protocols ask for, with the right bytes — and
//! the real `terraform init` must install from it.

mod common;
mod registry_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use registry_support::*;
use tempfile::TempDir;

const MODULE_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];
/// The host the lock files and configurations of these tests give the server.
const USERS_HOST: &str = "registry.example.com";
/// `warm` arguments: acme/foo, every platform.
const WARM_PROVIDERS: [&str; 4] = ["--provider-registry", "--platform", "all", "acme/foo"];
/// `warm` arguments: module acme/net/aws, the newest 1.x.
const WARM_MODULES: [&str; 2] = ["--module-registry", "acme/net/aws@~> 1.0"];

/// The module's `main.tf` at `version`.
fn module_main_tf(version: &str) -> String {
    format!("output \"release\" {{\n  value = \"module release {version}\"\n}}\n")
}

/// A lock file's block for provider `USERS_HOST/acme/foo` 1.0.0 with the one hash `hash`.
fn users_lock_block(hash: &str) -> String {
    lock_block(&format!("{USERS_HOST}/acme/foo"), "1.0.0", hash)
}

/// A lock file's `provider "ADDR"` block: `version` with the one hash `hash`.
fn lock_block(addr: &str, version: &str, hash: &str) -> String {
    format!(
        "provider \"{addr}\" {{\n  version = \"{version}\"\n  hashes = [\n    \"{hash}\",\n  ]\n}}\n"
    )
}

/// Registry ← counting proxy; a key from `keygen`; acme/foo 1.0.0 for this platform and
/// another, acme/foo 0.9.0 for this platform, and module acme/net/aws 1.0.0 and 1.1.0, pushed;
/// a configuration with both registries in front of the proxy and an empty cache directory.
struct Fx {
    registry: Option<Registry>,
    proxy: FaultProxy,
    cert: TestCert,
    dir: TempDir,
    cache: TempDir,
    /// Both registries in front of the proxy, the cache in `cache`.
    config: String,
    /// The key ID `keygen` printed.
    key_id: String,
    /// acme/foo 1.0.0: this platform first.
    packages: Vec<Package>,
    /// The hex digest of each module version's zip (as MODULE_VERSIONS).
    module_hexes: Vec<String>,
}

impl Fx {
    /// Publishes the provider without author signatures.
    fn start() -> Fx {
        Fx::start_with(None)
    }

    /// `author`: the provider is published as a release directory whose SHA256SUMS the
    /// author signed with this key (see [`Author`]).
    fn start_with(author: Option<&Author>) -> Fx {
        let registry = Registry::start(RegistryAuth::None);
        let proxy = FaultProxy::start(&registry.url());
        let cert = TestCert::generate();
        let dir = temp_dir("odtr-warmreg-");
        let cache = temp_dir("odtr-warmreg-cache-");

        let key = keygen_with(dir.path(), "signing", None, &["--bits", "2048"]);
        let config = registry_config(
            &cert,
            &proxy.url(),
            Some(&key.private_key),
            true,
            cache.path(),
        );
        // Pushes go straight to the registry, so the proxy counts only what the server and
        // `warm` ask for.
        let push_config = write_config(
            dir.path(),
            "push.hcl",
            &registry_config(
                &cert,
                &registry.url(),
                Some(&key.private_key),
                true,
                cache.path(),
            ),
        );

        let release = dir.path().join("release");
        let local = local_platform();
        let packages = write_packages(&release, "foo", "1.0.0", &[&local, other_platform(&local)]);
        let push = match author {
            None => push_zips(&push_config, "acme/foo", "1.0.0", &packages, &[]),
            Some(author) => {
                author.sign_release(&release, &packages);
                push_release_dir(&push_config, "acme/foo", &release, Some(&author.public_key))
            }
        };
        assert!(push.success(), "push --provider-registry failed:\n{push}");
        // An older version, never selected below: the offline versions list must still
        // show it (warm reads the whole list, as Terraform does).
        let old = write_packages(dir.path(), "foo", "0.9.0", &[&local]);
        let push = push_zips(&push_config, "acme/foo", "0.9.0", &old, &[]);
        assert!(
            push.success(),
            "push --provider-registry 0.9.0 failed:\n{push}"
        );

        let rt = runtime();
        let mut module_hexes = Vec::new();
        for version in MODULE_VERSIONS {
            let module = dir.path().join(format!("module-{version}"));
            fs::create_dir_all(&module).unwrap();
            fs::write(module.join("main.tf"), module_main_tf(version)).unwrap();
            let push = push_module(&push_config, &module, version, &[]);
            assert!(push.success(), "push --module-registry failed:\n{push}");
            module_hexes.push(rt.block_on(module_layer_hex(&registry, version)));
        }
        assert_ne!(module_hexes[0], module_hexes[1]);
        assert_eq!(
            proxy.counts().total(),
            0,
            "nothing went through the proxy yet: {:?}",
            proxy.requests()
        );
        Fx {
            registry: Some(registry),
            proxy,
            cert,
            dir,
            cache,
            config,
            key_id: key.printed_id,
            packages,
            module_hexes,
        }
    }

    /// `oci-distribution-terraform-registry --config=FILE warm ARGS...` (killed after 60 s).
    fn warm(&self, args: &[&str]) -> CliOutput {
        let mut all = vec!["warm"];
        all.extend_from_slice(args);
        run_cli(&self.config, &all, Duration::from_secs(60))
    }

    /// `warm --provider-registry --registry-host USERS_HOST --lock-file LOCK`
    fn warm_lock_file(&self, lock: &Path) -> CliOutput {
        self.warm(&[
            "--provider-registry",
            "--registry-host",
            USERS_HOST,
            "--lock-file",
            lock.to_str().unwrap(),
        ])
    }

    /// The hex digests of the stored blobs, sorted.
    fn cached_hexes(&self) -> Vec<String> {
        cache_blob_files(self.cache.path())
            .into_iter()
            .map(|(hex, _)| hex)
            .collect()
    }

    /// The provider zips and the zip of module version 1.1.0: what the warms below store.
    fn expected_hexes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.packages.iter().map(|p| sha256_hex(&p.zip)).collect();
        v.push(self.module_hexes[1].clone());
        v.sort();
        v
    }

    /// Warms acme/foo (every platform) and module acme/net/aws (newest 1.x), checks the
    /// progress lines and the cache, then warms both again: nothing to fetch, no blob from
    /// the origin.
    fn warm_both_twice(&self) -> (CliOutput, CliOutput) {
        let providers = self.warm(&WARM_PROVIDERS);
        assert!(
            providers.success(),
            "warm --provider-registry:\n{providers}"
        );
        for p in &self.packages {
            let platform = &p.platform;
            assert!(
                providers
                    .stderr
                    .contains(&format!("fetched  acme/foo 1.0.0 {platform} (")),
                "no `fetched` line for the {platform} package:\n{providers}"
            );
            assert!(
                self.cached_hexes().contains(&sha256_hex(&p.zip)),
                "the {platform} package is not in the cache:\n{providers}"
            );
        }
        assert!(
            providers
                .stdout
                .contains("Warmed the provider registry: 2 fetched"),
            "{providers}"
        );
        let modules = self.warm(&WARM_MODULES);
        assert!(modules.success(), "warm --module-registry:\n{modules}");
        assert!(
            modules
                .stderr
                .contains("fetched  module acme/net/aws 1.1.0 ("),
            "no `fetched` line for module 1.1.0:\n{modules}"
        );
        assert!(
            !modules.stderr.contains("acme/net/aws 1.0.0"),
            "only the newest matching version is warmed:\n{modules}"
        );
        assert!(
            modules
                .stdout
                .contains("Warmed the module registry: 1 fetched"),
            "{modules}"
        );
        assert_eq!(
            self.cached_hexes(),
            self.expected_hexes(),
            "the cache holds exactly the two provider packages and module 1.1.0"
        );
        assert_eq!(
            self.proxy.blob_gets(),
            3,
            "one blob GET per package: {:?}",
            self.proxy.requests()
        );

        for (args, count, what, cached_line) in [
            (&WARM_PROVIDERS[..], 2, "provider", None),
            (
                &WARM_MODULES[..],
                1,
                "module",
                Some("cached   module acme/net/aws 1.1.0"),
            ),
        ] {
            let again = self.warm(args);
            assert!(again.success(), "{again}");
            assert!(
                again.stdout.contains(&format!(
                    "Nothing to fetch: all {count} package(s) already cached"
                )),
                "the second {what} warm does not say so:\n{again}"
            );
            if let Some(line) = cached_line {
                assert!(again.stderr.contains(line), "{again}");
            }
        }
        assert_eq!(
            self.proxy.blob_gets(),
            3,
            "the second warms fetched blobs from the origin: {:?}",
            self.proxy.requests()
        );
        (providers, modules)
    }

    /// The registry stopped, `server --offline` on the warmed cache; every check of
    /// [`check_offline`]; and not one request reaches the origin meanwhile.
    fn check_offline_server(&mut self) -> Server {
        if self.registry.is_some() {
            stop_origin(&mut self.registry);
        }
        let before = self.proxy.counts().total();
        let server = Server::start_with_args(&self.config, &["--offline"]);
        runtime().block_on(check_offline(self, &server));
        assert_eq!(
            self.proxy.counts().total(),
            before,
            "the offline server asked the origin: {:?}",
            self.proxy.requests()
        );
        server
    }
}

/// The digest hex of the zip layer of module acme/net/aws `version`, read from the registry.
async fn module_layer_hex(registry: &Registry, version: &str) -> String {
    let (_, body) = get_manifest_raw(&registry.url(), MODULE_REPO, version)
        .await
        .unwrap_or_else(|| panic!("{MODULE_REPO}:{version} not in the registry"));
    let manifest = parse_json(&body);
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    layers[0]["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .unwrap_or_else(|| panic!("no sha256 layer digest: {manifest}"))
        .to_owned()
}

/// What an offline server on a warmed cache must answer (acme/foo 1.0.0 on both platforms,
/// module acme/net/aws 1.1.0), with the right bytes.
async fn check_offline(fx: &Fx, server: &Server) {
    let client = https_client(&fx.cert);
    let base = server.base_url();

    // The provider's versions list: complete, with both platforms.
    let url = format!("{base}v1/providers/acme/foo/versions");
    let json = get_json(&client, &url, None).await;
    let versions = json["versions"].as_array().expect("versions array");
    let listed: Vec<&str> = versions
        .iter()
        .map(|v| v["version"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(listed, ["0.9.0", "1.0.0"], "GET {url}: {json}");
    let mut want: Vec<String> = fx.packages.iter().map(|p| p.platform.clone()).collect();
    want.sort();
    assert_eq!(version_platforms(&versions[1]), want, "GET {url}: {json}");

    // Each platform's download document, its package, its SHA256SUMS and signature.
    for p in &fx.packages {
        let url = provider_doc_url(base, "foo", "1.0.0", &p.platform);
        let served = fetch_signed_download(&client, &url, None).await;
        let doc = &served.json;
        assert_eq!(
            doc["shasum"],
            sha256_hex(&p.zip).as_str(),
            "GET {url}: {doc}"
        );
        assert_eq!(doc["filename"], p.filename.as_str(), "GET {url}: {doc}");
        assert!(
            served.key_id.eq_ignore_ascii_case(&fx.key_id),
            "GET {url}: signing key {}, expected keygen's {}: {doc}",
            served.key_id,
            fx.key_id
        );

        let package_url = &served.urls.download;
        let package = fetch_ok(&client, package_url, None).await;
        assert!(
            package.body == p.zip,
            "GET {package_url}: {} bytes, not the {}-byte {} package",
            package.body.len(),
            p.zip.len(),
            p.platform
        );

        let sums = served.sums.text();
        for other in &fx.packages {
            let line = format!("{}  {}", sha256_hex(&other.zip), other.filename);
            assert!(
                sums.lines().any(|l| l == line),
                "GET {}: no line {line:?} in\n{sums}",
                served.urls.shasums
            );
        }
        assert!(
            !served.signature.body.is_empty(),
            "GET {}: empty signature",
            served.urls.signature
        );
    }

    // The module: versions, the warmed version's download and zip.
    let url = format!("{base}v1/modules/acme/net/aws/versions");
    let json = get_json(&client, &url, None).await;
    let mut listed = module_versions(&json);
    listed.sort();
    assert_eq!(listed, MODULE_VERSIONS, "GET {url}: {json}");

    let url = format!("{base}v1/modules/acme/net/aws/1.1.0/download");
    let (_, zip_url) = module_zip_url(&client, &url, None).await;
    let z = fetch_ok(&client, &zip_url, None).await;
    assert_eq!(
        sha256_hex(&z.body),
        fx.module_hexes[1],
        "GET {zip_url}: not module 1.1.0's zip"
    );
    assert_eq!(
        zip_entries(&z.body).1.expect("main.tf in the module zip"),
        module_main_tf("1.1.0")
    );

    // Version 1.0.0 was not warmed: offline, the server says how to get it.
    let url = format!("{base}v1/modules/acme/net/aws/1.0.0/download");
    let f = fetch(&client, &url, None).await;
    assert_ne!(f.status, 204, "GET {url}: module 1.0.0 was never warmed");
    assert!(
        f.text()
            .contains("warm --module-registry acme/net/aws@1.0.0"),
        "GET {url}: {} {}",
        f.status,
        f.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Terraform, installing directly from the registries
// ---------------------------------------------------------------------------------------------

/// Terraform installs acme/foo and module 1.1.0 from the offline server: `terraform init` in a
/// fresh directory requiring provider `localhost:PORT/acme/foo` 1.0.0 and module
/// `127.0.0.1:PORT/acme/net/aws` ~> 1.0, with no provider_installation block (so Terraform
/// talks the registry protocols) and the test certificate trusted.
fn check_terraform_offline(fx: &Fx, server: &Server) {
    let port = server_port(server);
    let (work, init) = init_fresh(&main_tf_with(port, Some("~> 1.0")), &fx.cert);
    let output = &init.output;
    assert!(
        init.success,
        "terraform init from the offline server failed:\n{output}\n--- server ---\n{}",
        server.stderr()
    );
    assert!(
        output.contains(&format!("key ID {}", fx.key_id)),
        "terraform init does not report the signature by keygen's key {}:\n{output}",
        fx.key_id
    );
    let lock = init.lock_file.as_deref().unwrap_or_default();
    let hashes = lock_file_hashes(lock, &format!("localhost:{port}/acme/foo"));
    for p in &fx.packages {
        assert!(
            hashes.contains(&zh(&p.zip)),
            "the lock file lacks the {} package's zh: hash {hashes:?}:\n{lock}",
            p.platform
        );
    }
    let installed = fs::read_to_string(work.path().join(".terraform/modules/net/main.tf"))
        .unwrap_or_else(|e| panic!("module net not installed ({e}):\n{output}"));
    assert_eq!(installed, module_main_tf("1.1.0"), "{output}");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Direct mode (no server owns the cache): warm opens the cache itself. Then the origin goes
/// away, and the offline server answers every document and package, and Terraform installs.
#[test]
fn warmed_directly_the_offline_server_answers_everything() {
    let mut fx = Fx::start();
    fx.warm_both_twice();
    let server = fx.check_offline_server();
    check_terraform_offline(&fx, &server);
}

/// Server mode: a running server owns the cache, so warm goes through its registry
/// endpoints. Then the same offline checks, on a new offline server.
#[test]
fn warmed_through_a_running_server_the_offline_server_answers_everything() {
    let mut fx = Fx::start();
    let mut online = Server::start(&fx.config);
    let (providers, modules) = fx.warm_both_twice();
    for out in [&providers, &modules] {
        assert!(
            out.stderr.contains("warming through it"),
            "warm did not go through the running server:\n{out}"
        );
    }

    // Lock files name the provider with this server's host; only h1: hashes (which the
    // registry protocol does not list) are checked by hashing the package the server serves.
    let local = &fx.packages[0];
    let other = &fx.packages[1];
    let lock = |name: &str, hash: String| -> PathBuf {
        let path = fx.dir.path().join(name);
        fs::write(&path, users_lock_block(&hash)).unwrap();
        path
    };
    let good = lock("good.lock.hcl", h1(&local.zip));
    let out = fx.warm_lock_file(&good);
    assert!(out.success(), "the h1: of the package is locked:\n{out}");
    assert!(
        out.stderr
            .contains(&format!("cached   acme/foo 1.0.0 {}", local.platform)),
        "{out}"
    );
    let bad = lock("bad.lock.hcl", h1(&other.zip));
    let out = fx.warm_lock_file(&bad);
    assert!(!out.success(), "another package's h1: is locked:\n{out}");
    assert!(out.stderr.contains("matches none of the hashes"), "{out}");
    assert_eq!(fx.proxy.blob_gets(), 3, "{:?}", fx.proxy.requests());

    assert!(
        online.terminate(Duration::from_secs(20)).is_some(),
        "the online server did not stop on SIGTERM:\n{}",
        online.stderr()
    );
    let server = fx.check_offline_server();
    check_terraform_offline(&fx, &server);
}

/// The author's own SHA256SUMS, signature and key (pushed with `--author-key`) are what the
/// offline server serves after a warm: warm read the author-signature lookup and its blobs.
#[test]
fn warm_keeps_the_authors_signature_for_offline_use() {
    let author = Author::new();
    let mut fx = Fx::start_with(Some(&author));
    let out = fx.warm(&WARM_PROVIDERS);
    assert!(out.success(), "{out}");
    stop_origin(&mut fx.registry);
    let server = Server::start_with_args(&fx.config, &["--offline"]);
    let client = https_client(&fx.cert);
    runtime().block_on(async {
        for p in &fx.packages {
            let url = provider_doc_url(server.base_url(), "foo", "1.0.0", &p.platform);
            let served = fetch_signed_download(&client, &url, None).await;
            assert!(
                served.key_id.eq_ignore_ascii_case(&author.key_id),
                "GET {url}: signed by {:?}, not the author's key {}: {}",
                served.key_id,
                author.key_id,
                served.json
            );
            assert_eq!(
                served.sums.body,
                fs::read(author.sums_path(&fx)).unwrap(),
                "GET {}: not the author's SHA256SUMS",
                served.urls.shasums
            );
            assert_eq!(
                served.signature.body,
                fs::read(author.signature_path(&fx)).unwrap(),
                "GET {}: not the author's signature",
                served.urls.signature
            );
            let package = fetch_ok(&client, &served.urls.download, None).await;
            assert!(
                package.body == p.zip,
                "GET {}: not the {} package",
                served.urls.download,
                p.platform
            );
        }
    });
}

/// Lock files and configurations name registry providers with the host users give this
/// server: `--registry-host` picks those (others are skipped with a note), locked hashes are
/// checked, and without it `--lock-file`/`--dir` are refused.
#[test]
fn lock_files_and_dirs_take_the_providers_of_the_registry_host() {
    let fx = Fx::start();
    let (local, other) = (&fx.packages[0], &fx.packages[1]);
    let lock = fx.dir.path().join(".terraform.lock.hcl");
    let write_lock = |hash: &str| {
        let null = lock_block(
            "registry.terraform.io/hashicorp/null",
            "3.2.1",
            &format!("zh:{}", "0".repeat(64)),
        );
        fs::write(&lock, format!("{}\n{null}", users_lock_block(hash))).unwrap();
    };
    write_lock(&zh(&local.zip));

    let refused = fx.warm(&["--provider-registry", "--lock-file", lock.to_str().unwrap()]);
    assert!(!refused.success(), "{refused}");
    assert!(refused.stderr.contains("--registry-host"), "{refused}");
    assert_eq!(fx.proxy.counts().total(), 0, "{:?}", fx.proxy.requests());

    let out = fx.warm_lock_file(&lock);
    assert!(out.success(), "{out}");
    assert!(
        out.stderr
            .contains("skipping registry.terraform.io/hashicorp/null"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains(&format!("fetched  acme/foo 1.0.0 {} (", local.platform)),
        "{out}"
    );
    assert_eq!(fx.cached_hexes(), vec![sha256_hex(&local.zip)], "{out}");

    // A locked hash the package does not have fails the warm.
    write_lock(&zh(&other.zip));
    let out = fx.warm_lock_file(&lock);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("matches none of the hashes"), "{out}");

    // A configuration's required_providers, for the other platform.
    let dir = fx.dir.path().join("config");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("main.tf"),
        required_providers_tf(&[
            (&format!("{USERS_HOST}/acme/foo"), "~> 1.0"),
            ("hashicorp/null", ">= 3.0"),
        ]),
    )
    .unwrap();
    let out = fx.warm(&[
        "--provider-registry",
        "--registry-host",
        USERS_HOST,
        "--platform",
        &other.platform,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.success(), "{out}");
    assert!(
        out.stderr
            .contains(&format!("fetched  acme/foo 1.0.0 {} (", other.platform)),
        "{out}"
    );
    let mut want = vec![sha256_hex(&local.zip), sha256_hex(&other.zip)];
    want.sort();
    assert_eq!(fx.cached_hexes(), want, "{out}");
}

/// `--mirror`, `--provider-registry` and `--module-registry` exclude each other; `export` and
/// `lock` stay mirror-only; a missing block or a bad module address is a clear error.
#[test]
fn the_flags_exclude_each_other_and_export_and_lock_refuse_them() {
    let cert = TestCert::generate();
    let mirror_only = server_config(&cert, "http://127.0.0.1:9/", false);
    let modules_only = format!(
        "server {{\n  listen_addr = \"127.0.0.1:0\"\n}}\n\nmodule_registry {{\n  origin_url = \"http://127.0.0.1:9/\"\n}}\n\ncache {{\n  directory = \"{}\"\n}}\n",
        temp_dir("odtr-warmreg-flags-").path().display()
    );
    let cli = |config: &str, args: &[&str]| run_cli(config, args, Duration::from_secs(30));
    for (args, expected) in [
        (
            &[
                "warm",
                "--mirror",
                "mirror",
                "--provider-registry",
                "acme/foo",
            ][..],
            "cannot be used with",
        ),
        (
            &[
                "warm",
                "--provider-registry",
                "--module-registry",
                "acme/net/aws",
            ][..],
            "cannot be used with",
        ),
        (
            &[
                "warm",
                "--module-registry",
                "--lock-file",
                "x.hcl",
                "acme/net/aws",
            ][..],
            "cannot be used with",
        ),
        (
            &[
                "warm",
                "--module-registry",
                "--platform",
                "all",
                "acme/net/aws",
            ][..],
            "cannot be used with",
        ),
        (
            &["warm", "--registry-host", USERS_HOST, "acme/foo"][..],
            "--provider-registry",
        ),
        (
            &["export", "--provider-registry", "out", "acme/foo"][..],
            "unexpected argument '--provider-registry'",
        ),
        (
            &["lock", "--module-registry", "acme/foo@1.0.0"][..],
            "unexpected argument '--module-registry'",
        ),
        (
            &["warm", "--provider-registry", "acme/foo"][..],
            "has no provider_registry block",
        ),
        (
            &["warm", "--module-registry", "acme/net/aws"][..],
            "has no module_registry block",
        ),
    ] {
        let out = cli(&mirror_only, args);
        assert!(!out.success(), "{args:?} succeeded:\n{out}");
        assert!(
            out.stderr.contains(expected),
            "{args:?}: no {expected:?}:\n{out}"
        );
    }
    let out = cli(&modules_only, &["warm", "--module-registry", "acme/net"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("NAMESPACE/NAME/SYSTEM"), "{out}");
    let out = cli(&modules_only, &["warm", "--module-registry"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("nothing to warm"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// An author's release, signed with GnuPG
// ---------------------------------------------------------------------------------------------

/// A release author's GnuPG key (RSA 2048, in a private homedir) and its exported public key.
struct Author {
    gpg: Gpg,
    key_id: String,
    public_key: PathBuf,
}

impl Author {
    fn new() -> Author {
        let gpg = Gpg::new();
        gpg.generate_key_with(AUTHOR_UID, "rsa2048");
        let key_id = gpg.key_id();
        let public_key = gpg.home().join("author.pub.asc");
        fs::write(&public_key, gpg.export_public()).unwrap();
        Author {
            gpg,
            key_id,
            public_key,
        }
    }

    /// Writes the release's SHA256SUMS and the author's detached signature of it.
    fn sign_release(&self, release: &Path, packages: &[Package]) {
        let (sums, _) = write_sha256sums(release, "foo", "1.0.0", packages);
        self.gpg.sign_sha256sums(&sums);
    }

    /// The SHA256SUMS written by [`Author::sign_release`] for `fx`.
    fn sums_path(&self, fx: &Fx) -> PathBuf {
        fx.dir
            .path()
            .join("release")
            .join("terraform-provider-foo_1.0.0_SHA256SUMS")
    }

    /// The signature written by [`Author::sign_release`] for `fx`.
    fn signature_path(&self, fx: &Fx) -> PathBuf {
        sig_path(&self.sums_path(fx))
    }
}
