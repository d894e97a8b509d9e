//! `warm --provider-registry` and `warm --module-registry`: a real docker-registry (behind a
//! counting proxy) holding provider acme/foo (two platforms, pushed with `push
//! --provider-registry`) and module acme/net/aws (two versions, pushed with `push
//! --module-registry`); the signing key made by `keygen`. Warmed directly and through a
//! running server, then the registry is stopped and `server --offline` on the warmed cache
//! must answer everything Terraform's registry protocols ask for, with the right bytes — and
//! the real `terraform init` must install from it.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tempfile::TempDir;

const MODULE_REPO: &str = "modules/acme/net/aws";
const MODULE_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];
/// The host the lock files and configurations of these tests give the server.
const USERS_HOST: &str = "registry.example.com";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn other_platform() -> String {
    if local_platform() == "linux_arm64" {
        "darwin_amd64".to_owned()
    } else {
        "linux_arm64".to_owned()
    }
}

fn package_name(platform: &str) -> String {
    format!("terraform-provider-foo_1.0.0_{platform}.zip")
}

/// The module's `main.tf` at `version`.
fn module_main_tf(version: &str) -> String {
    format!("output \"release\" {{\n  value = \"module release {version}\"\n}}\n")
}

/// Registry ← counting proxy; a key from `keygen`; acme/foo 1.0.0 for this platform and
/// another, acme/foo 0.9.0 for this platform, and module acme/net/aws 1.0.0 and 1.1.0, pushed; a configuration with both
/// registries in front of the proxy and an empty cache directory.
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
    /// (platform, zip) of acme/foo 1.0.0: this platform first.
    packages: Vec<(String, Vec<u8>)>,
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

        let key = dir.path().join("signing.asc");
        let keygen = run_cli(
            "# keygen reads no configuration\n",
            &[
                "keygen",
                "--bits",
                "2048",
                "--private-key",
                key.to_str().unwrap(),
                "--public-key",
                dir.path().join("signing.pub.asc").to_str().unwrap(),
            ],
            Duration::from_secs(60),
        );
        assert!(keygen.success(), "keygen failed:\n{keygen}");
        let key_id = keygen
            .stdout
            .split_whitespace()
            .find(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()))
            .unwrap_or_else(|| panic!("keygen printed no key ID:\n{keygen}"))
            .to_owned();

        let config = config_hcl(&cert, &proxy.url(), &key, cache.path());
        // Pushes go straight to the registry, so the proxy counts only what the server and
        // `warm` ask for.
        let push_config = config_hcl(&cert, &registry.url(), &key, cache.path());

        let release = dir.path().join("release");
        fs::create_dir_all(&release).unwrap();
        let mut packages = Vec::new();
        for platform in [local_platform(), other_platform()] {
            let zip = fake_provider_zip_for("foo", "1.0.0", &platform);
            fs::write(release.join(package_name(&platform)), &zip).unwrap();
            packages.push((platform, zip));
        }
        let push = match author {
            None => {
                let mut args = vec![
                    "push".to_owned(),
                    "--provider-registry".to_owned(),
                    "--address".to_owned(),
                    "acme/foo".to_owned(),
                    "--version".to_owned(),
                    "1.0.0".to_owned(),
                ];
                for (platform, _) in &packages {
                    args.push(release.join(package_name(platform)).display().to_string());
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_cli(&push_config, &args, Duration::from_secs(90))
            }
            Some(author) => {
                author.sign_release(&release, &packages);
                run_cli(
                    &push_config,
                    &[
                        "push",
                        "--provider-registry",
                        "--address",
                        "acme/foo",
                        "--author-key",
                        author.public_key.to_str().unwrap(),
                        release.to_str().unwrap(),
                    ],
                    Duration::from_secs(90),
                )
            }
        };
        assert!(push.success(), "push --provider-registry failed:\n{push}");
        // An older version, never selected below: the offline versions list must still
        // show it (warm reads the whole list, as Terraform does).
        let old = dir.path().join(format!(
            "terraform-provider-foo_0.9.0_{}.zip",
            local_platform()
        ));
        fs::write(
            &old,
            fake_provider_zip_for("foo", "0.9.0", &local_platform()),
        )
        .unwrap();
        let push = run_cli(
            &push_config,
            &[
                "push",
                "--provider-registry",
                "--address",
                "acme/foo",
                "--version",
                "0.9.0",
                old.to_str().unwrap(),
            ],
            Duration::from_secs(90),
        );
        assert!(
            push.success(),
            "push --provider-registry 0.9.0 failed:\n{push}"
        );

        let mut module_hexes = Vec::new();
        for version in MODULE_VERSIONS {
            let module = dir.path().join(format!("module-{version}"));
            fs::create_dir_all(&module).unwrap();
            fs::write(module.join("main.tf"), module_main_tf(version)).unwrap();
            let push = run_cli(
                &push_config,
                &[
                    "push",
                    "--module-registry",
                    "--module",
                    module.to_str().unwrap(),
                    "--address",
                    "acme/net/aws",
                    "--version",
                    version,
                ],
                Duration::from_secs(90),
            );
            assert!(push.success(), "push --module-registry failed:\n{push}");
            module_hexes.push(runtime().block_on(module_layer_hex(&registry, version)));
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
            key_id,
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

    /// Kills the registry; the proxy then answers 502 for everything.
    fn stop_registry(&mut self) {
        let port = self.registry.as_ref().expect("registry running").port();
        self.registry = None;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the registry still answers on port {port}"
        );
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
        let mut v: Vec<String> = self.packages.iter().map(|(_, z)| sha256_hex(z)).collect();
        v.push(self.module_hexes[1].clone());
        v.sort();
        v
    }

    /// Warms acme/foo (every platform) and module acme/net/aws (newest 1.x), checks the
    /// progress lines and the cache, then warms both again: nothing to fetch, no blob from
    /// the origin.
    fn warm_both_twice(&self) -> (CliOutput, CliOutput) {
        let providers = self.warm(&["--provider-registry", "--platform", "all", "acme/foo"]);
        assert!(
            providers.success(),
            "warm --provider-registry:\n{providers}"
        );
        for (platform, zip) in &self.packages {
            assert!(
                providers
                    .stderr
                    .contains(&format!("fetched  acme/foo 1.0.0 {platform} (")),
                "no `fetched` line for the {platform} package:\n{providers}"
            );
            assert!(
                self.cached_hexes().contains(&sha256_hex(zip)),
                "the {platform} package is not in the cache:\n{providers}"
            );
        }
        assert!(
            providers
                .stdout
                .contains("Warmed the provider registry: 2 fetched"),
            "{providers}"
        );
        let modules = self.warm(&["--module-registry", "acme/net/aws@~> 1.0"]);
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

        let again = self.warm(&["--provider-registry", "--platform", "all", "acme/foo"]);
        assert!(again.success(), "{again}");
        assert!(
            again
                .stdout
                .contains("Nothing to fetch: all 2 package(s) already cached"),
            "the second provider warm does not say so:\n{again}"
        );
        let modules_again = self.warm(&["--module-registry", "acme/net/aws@~> 1.0"]);
        assert!(modules_again.success(), "{modules_again}");
        assert!(
            modules_again
                .stdout
                .contains("Nothing to fetch: all 1 package(s) already cached"),
            "the second module warm does not say so:\n{modules_again}"
        );
        assert!(
            modules_again
                .stderr
                .contains("cached   module acme/net/aws 1.1.0"),
            "{modules_again}"
        );
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
            self.stop_registry();
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

fn config_hcl(cert: &TestCert, origin: &str, key: &Path, cache: &Path) -> String {
    format!(
        r#"server {{
  listen_addr = "127.0.0.1:0"
  tls {{
    certificate_file = "{cert}"
    private_key_file = "{cert_key}"
  }}
}}

provider_registry {{
  origin_url       = "{origin}"
  name_prefix      = "providers"
  signing_key_file = "{key}"
}}

module_registry {{
  origin_url  = "{origin}"
  name_prefix = "modules"
}}

cache {{
  directory = "{cache}"
  max_size  = "1GiB"
}}
"#,
        cert = cert.cert_path().display(),
        cert_key = cert.key_path().display(),
        key = key.display(),
        cache = cache.display(),
    )
}

/// The digest hex of the zip layer of module acme/net/aws `version`, read from the registry.
async fn module_layer_hex(registry: &Registry, version: &str) -> String {
    let url = format!("{}v2/{MODULE_REPO}/manifests/{version}", registry.url());
    let resp = plain_client()
        .get(&url)
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.unwrap()).expect("manifest JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    layers[0]["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .unwrap_or_else(|| panic!("no sha256 layer digest: {manifest}"))
        .to_owned()
}

fn resolve(base: &str, reference: &str) -> String {
    url::Url::parse(base)
        .unwrap()
        .join(reference)
        .unwrap_or_else(|e| panic!("resolve {reference:?} against {base}: {e}"))
        .to_string()
}

/// `main.tf` of a zip archive.
fn zip_main_tf(bytes: &[u8]) -> String {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec()))
        .unwrap_or_else(|e| panic!("not a zip archive ({e}), {} bytes", bytes.len()));
    let mut s = String::new();
    archive
        .by_name("main.tf")
        .expect("main.tf in the module zip")
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// What an offline server on a warmed cache must answer (acme/foo 1.0.0 on both platforms,
/// module acme/net/aws 1.1.0), with the right bytes.
async fn check_offline(fx: &Fx, server: &Server) {
    let client = https_client(&fx.cert);
    let base = server.base_url();

    // The provider's versions list: complete, with both platforms.
    let url = format!("{base}v1/providers/acme/foo/versions");
    let f = fetch(&client, &url, None).await;
    f.expect_status(200);
    let json = f.json();
    let versions = json["versions"].as_array().expect("versions array");
    let listed: Vec<&str> = versions
        .iter()
        .map(|v| v["version"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(listed, ["0.9.0", "1.0.0"], "GET {url}: {json}");
    let mut platforms: Vec<String> = versions[1]["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .map(|p| {
            format!(
                "{}_{}",
                p["os"].as_str().unwrap(),
                p["arch"].as_str().unwrap()
            )
        })
        .collect();
    platforms.sort();
    let mut want: Vec<String> = fx.packages.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    assert_eq!(platforms, want, "GET {url}: {json}");

    // Each platform's download document, its package, its SHA256SUMS and signature.
    for (platform, zip) in &fx.packages {
        let (os, arch) = platform.split_once('_').unwrap();
        let url = format!("{base}v1/providers/acme/foo/1.0.0/download/{os}/{arch}");
        let f = fetch(&client, &url, None).await;
        f.expect_status(200);
        let doc = f.json();
        assert_eq!(doc["shasum"], sha256_hex(zip).as_str(), "GET {url}: {doc}");
        assert_eq!(
            doc["filename"],
            package_name(platform).as_str(),
            "GET {url}: {doc}"
        );
        let key_id = doc["signing_keys"]["gpg_public_keys"][0]["key_id"]
            .as_str()
            .unwrap_or_else(|| panic!("GET {url}: no signing key: {doc}"));
        assert!(
            key_id.eq_ignore_ascii_case(&fx.key_id),
            "GET {url}: signing key {key_id}, expected keygen's {}: {doc}",
            fx.key_id
        );

        let package_url = resolve(&url, doc["download_url"].as_str().expect("download_url"));
        let p = fetch(&client, &package_url, None).await;
        p.expect_status(200);
        assert!(
            p.body == *zip,
            "GET {package_url}: {} bytes, not the {}-byte {platform} package",
            p.body.len(),
            zip.len()
        );

        let sums_url = resolve(&url, doc["shasums_url"].as_str().expect("shasums_url"));
        let sums = fetch(&client, &sums_url, None).await;
        sums.expect_status(200);
        for (other, other_zip) in &fx.packages {
            let line = format!("{}  {}", sha256_hex(other_zip), package_name(other));
            assert!(
                sums.text().lines().any(|l| l == line),
                "GET {sums_url}: no line {line:?} in\n{}",
                sums.text()
            );
        }
        let sig_url = resolve(
            &url,
            doc["shasums_signature_url"]
                .as_str()
                .expect("shasums_signature_url"),
        );
        let sig = fetch(&client, &sig_url, None).await;
        sig.expect_status(200);
        assert!(!sig.body.is_empty(), "GET {sig_url}: empty signature");
    }

    // The module: versions, the warmed version's download and zip.
    let url = format!("{base}v1/modules/acme/net/aws/versions");
    let f = fetch(&client, &url, None).await;
    f.expect_status(200);
    let json = f.json();
    let mut listed: Vec<String> = json["modules"][0]["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {url}: {json}"))
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, MODULE_VERSIONS, "GET {url}: {json}");

    let url = format!("{base}v1/modules/acme/net/aws/1.1.0/download");
    let f = fetch(&client, &url, None).await;
    f.expect_status(204);
    let location = f
        .header("x-terraform-get")
        .unwrap_or_else(|| panic!("GET {url}: no X-Terraform-Get"))
        .to_owned();
    let zip_url = resolve(&url, &location);
    let z = fetch(&client, &zip_url, None).await;
    z.expect_status(200);
    assert_eq!(
        sha256_hex(&z.body),
        fx.module_hexes[1],
        "GET {zip_url}: not module 1.1.0's zip"
    );
    assert_eq!(zip_main_tf(&z.body), module_main_tf("1.1.0"));

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

fn server_port(server: &Server) -> u16 {
    url::Url::parse(server.base_url()).unwrap().port().unwrap()
}

/// `terraform init` in a fresh directory requiring provider `localhost:PORT/acme/foo` 1.0.0 and
/// module `127.0.0.1:PORT/acme/net/aws` ~> 1.0 (Terraform reads `localhost:PORT/...` as a URL), with no provider_installation block (so
/// Terraform talks the registry protocols) and the test certificate trusted. (success,
/// output, lock file, the working directory).
fn terraform_init(server: &Server, cert: &TestCert) -> (bool, String, String, TempDir) {
    let port = server_port(server);
    let terraform = terraform_path();
    let work = temp_dir("odtr-warmreg-tf-");
    fs::write(
        work.path().join("main.tf"),
        format!(
            r#"terraform {{
  required_providers {{
    foo = {{
      source  = "localhost:{port}/acme/foo"
      version = "1.0.0"
    }}
  }}
}}

module "net" {{
  source  = "127.0.0.1:{port}/acme/net/aws"
  version = "~> 1.0"
}}
"#
        ),
    )
    .unwrap();
    let aux = temp_dir("odtr-warmreg-tf-aux-");
    let cli_config = aux.path().join("cli.tfrc");
    fs::write(&cli_config, "# no provider_installation: direct installs\n").unwrap();
    let home = aux.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let log = aux.path().join("output.log");
    let out = fs::File::create(&log).unwrap();
    let mut child = Command::new(&terraform)
        .args(["init", "-no-color", "-input=false"])
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("TF_CLI_CONFIG_FILE", &cli_config)
        .env("SSL_CERT_FILE", cert.cert_path())
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e} ({INSTALL_HINT})", terraform.display()));
    let status = wait_bounded(&mut child, Duration::from_secs(90));
    let mut output = fs::read_to_string(&log).unwrap_or_default();
    if status.is_none() {
        output.push_str("\n<terraform init killed after 90 s>\n");
    }
    let lock = fs::read_to_string(work.path().join(".terraform.lock.hcl")).unwrap_or_default();
    (status.is_some_and(|s| s.success()), output, lock, work)
}

/// Terraform installs acme/foo and module 1.1.0 from the offline server.
fn check_terraform_offline(fx: &Fx, server: &Server) {
    let (ok, output, lock, work) = terraform_init(server, &fx.cert);
    assert!(
        ok,
        "terraform init from the offline server failed:\n{output}\n--- server ---\n{}",
        server.stderr()
    );
    assert!(
        output.contains(&format!("key ID {}", fx.key_id)),
        "terraform init does not report the signature by keygen's key {}:\n{output}",
        fx.key_id
    );
    let addr = format!("localhost:{}/acme/foo", server_port(server));
    let hashes = lock_file_hashes(&lock, &addr);
    for (platform, zip) in &fx.packages {
        assert!(
            hashes.contains(&zh(zip)),
            "the lock file lacks the {platform} package's zh: hash {hashes:?}:\n{lock}"
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
        fs::write(
            &path,
            format!(
                "provider \"{USERS_HOST}/acme/foo\" {{\n  version = \"1.0.0\"\n  hashes = [\n    \"{hash}\",\n  ]\n}}\n"
            ),
        )
        .unwrap();
        path
    };
    let good = lock("good.lock.hcl", h1(&local.1));
    let out = fx.warm(&[
        "--provider-registry",
        "--registry-host",
        USERS_HOST,
        "--lock-file",
        good.to_str().unwrap(),
    ]);
    assert!(out.success(), "the h1: of the package is locked:\n{out}");
    assert!(
        out.stderr
            .contains(&format!("cached   acme/foo 1.0.0 {}", local.0)),
        "{out}"
    );
    let bad = lock("bad.lock.hcl", h1(&other.1));
    let out = fx.warm(&[
        "--provider-registry",
        "--registry-host",
        USERS_HOST,
        "--lock-file",
        bad.to_str().unwrap(),
    ]);
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
    let out = fx.warm(&["--provider-registry", "--platform", "all", "acme/foo"]);
    assert!(out.success(), "{out}");
    fx.stop_registry();
    let server = Server::start_with_args(&fx.config, &["--offline"]);
    let client = https_client(&fx.cert);
    runtime().block_on(async {
        for (platform, zip) in &fx.packages {
            let (os, arch) = platform.split_once('_').unwrap();
            let url = format!(
                "{}v1/providers/acme/foo/1.0.0/download/{os}/{arch}",
                server.base_url()
            );
            let f = fetch(&client, &url, None).await;
            f.expect_status(200);
            let doc = f.json();
            let key_id = doc["signing_keys"]["gpg_public_keys"][0]["key_id"]
                .as_str()
                .unwrap_or_default();
            assert!(
                key_id.eq_ignore_ascii_case(&author.key_id),
                "GET {url}: signed by {key_id:?}, not the author's key {}: {doc}",
                author.key_id
            );
            let sums_url = resolve(&url, doc["shasums_url"].as_str().unwrap());
            let sums = fetch(&client, &sums_url, None).await;
            sums.expect_status(200);
            assert_eq!(
                sums.body,
                fs::read(author.sums_path(&fx)).unwrap(),
                "GET {sums_url}: not the author's SHA256SUMS"
            );
            let sig_url = resolve(&url, doc["shasums_signature_url"].as_str().unwrap());
            let sig = fetch(&client, &sig_url, None).await;
            sig.expect_status(200);
            assert_eq!(
                sig.body,
                fs::read(author.signature_path(&fx)).unwrap(),
                "GET {sig_url}: not the author's signature"
            );
            let package_url = resolve(&url, doc["download_url"].as_str().unwrap());
            let p = fetch(&client, &package_url, None).await;
            p.expect_status(200);
            assert!(
                p.body == *zip,
                "GET {package_url}: not the {platform} package"
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
        fs::write(
            &lock,
            format!(
                "provider \"{USERS_HOST}/acme/foo\" {{\n  version = \"1.0.0\"\n  hashes = [\n    \"{hash}\",\n  ]\n}}\n\nprovider \"registry.terraform.io/hashicorp/null\" {{\n  version = \"3.2.1\"\n  hashes = [\n    \"zh:{}\",\n  ]\n}}\n",
                "0".repeat(64)
            ),
        )
        .unwrap();
    };
    write_lock(&zh(&local.1));

    let refused = fx.warm(&["--provider-registry", "--lock-file", lock.to_str().unwrap()]);
    assert!(!refused.success(), "{refused}");
    assert!(refused.stderr.contains("--registry-host"), "{refused}");
    assert_eq!(fx.proxy.counts().total(), 0, "{:?}", fx.proxy.requests());

    let out = fx.warm(&[
        "--provider-registry",
        "--registry-host",
        USERS_HOST,
        "--lock-file",
        lock.to_str().unwrap(),
    ]);
    assert!(out.success(), "{out}");
    assert!(
        out.stderr
            .contains("skipping registry.terraform.io/hashicorp/null"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains(&format!("fetched  acme/foo 1.0.0 {} (", local.0)),
        "{out}"
    );
    assert_eq!(fx.cached_hexes(), vec![sha256_hex(&local.1)], "{out}");

    // A locked hash the package does not have fails the warm.
    write_lock(&zh(&other.1));
    let out = fx.warm(&[
        "--provider-registry",
        "--registry-host",
        USERS_HOST,
        "--lock-file",
        lock.to_str().unwrap(),
    ]);
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
        &other.0,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.success(), "{out}");
    assert!(
        out.stderr
            .contains(&format!("fetched  acme/foo 1.0.0 {} (", other.0)),
        "{out}"
    );
    let mut want = vec![sha256_hex(&local.1), sha256_hex(&other.1)];
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

/// A GnuPG key in a private homedir (its agent stopped on drop).
struct Author {
    gpg: PathBuf,
    home: TempDir,
    key_id: String,
    public_key: PathBuf,
}

impl Author {
    fn new() -> Author {
        let gpg = which("gpg").unwrap_or_else(|| {
            panic!("gpg not found on PATH: install GnuPG (Debian package gnupg); {INSTALL_HINT}")
        });
        let home = temp_dir("odtr-warmreg-gpg-");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).unwrap();
        }
        let mut author = Author {
            gpg,
            public_key: home.path().join("author.pub.asc"),
            home,
            key_id: String::new(),
        };
        author.run(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            "Acme Releases <releases@acme.test>",
            "rsa2048",
            "sign",
            "never",
        ]);
        let listing = author.run(&["--with-colons", "--list-keys"]);
        author.key_id = listing
            .lines()
            .find(|l| l.starts_with("pub:"))
            .and_then(|l| l.split(':').nth(4))
            .unwrap_or_else(|| panic!("gpg listed no key:\n{listing}"))
            .to_ascii_uppercase();
        let armored = author.run(&["--armor", "--export"]);
        fs::write(&author.public_key, armored).unwrap();
        author
    }

    /// `gpg --homedir H --batch ARGS...`, which must succeed (killed after 60 s): its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = self.home.path().join("stdout");
        let err = self.home.path().join("stderr");
        let mut child = Command::new(&self.gpg)
            .arg("--homedir")
            .arg(self.home.path())
            .arg("--batch")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(&out).unwrap()))
            .stderr(Stdio::from(fs::File::create(&err).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn gpg: {e}"));
        let status = wait_bounded(&mut child, Duration::from_secs(60));
        assert!(
            status.is_some_and(|s| s.success()),
            "gpg {args:?}: {status:?}\n{}",
            fs::read_to_string(&err).unwrap_or_default()
        );
        fs::read_to_string(&out).unwrap_or_default()
    }

    /// Writes the release's SHA256SUMS and the author's detached signature of it.
    fn sign_release(&self, release: &Path, packages: &[(String, Vec<u8>)]) {
        let mut sums = String::new();
        for (platform, zip) in packages {
            sums.push_str(&format!(
                "{}  {}\n",
                sha256_hex(zip),
                package_name(platform)
            ));
        }
        let path = release.join("terraform-provider-foo_1.0.0_SHA256SUMS");
        fs::write(&path, sums).unwrap();
        let sig = release.join("terraform-provider-foo_1.0.0_SHA256SUMS.sig");
        self.run(&[
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--detach-sign",
            "-o",
            sig.to_str().unwrap(),
            path.to_str().unwrap(),
        ]);
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
        fx.dir
            .path()
            .join("release")
            .join("terraform-provider-foo_1.0.0_SHA256SUMS.sig")
    }
}

impl Drop for Author {
    fn drop(&mut self) {
        if let Some(gpgconf) = which("gpgconf") {
            let child = Command::new(gpgconf)
                .arg("--homedir")
                .arg(self.home.path())
                .args(["--kill", "gpg-agent"])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            if let Ok(mut child) = child {
                let _ = wait_bounded(&mut child, Duration::from_secs(10));
            }
        }
    }
}
