//! Helpers for tests/registry_protocols.rs, tests/registry_access.rs and
//! tests/warm_registries.rs: a private GnuPG home, runs of the binary without a configuration
//! search (keygen, push), configurations with `provider_registry` / `module_registry`, provider
//! release files and module directories, the registry protocols' documents, raw OCI reads, and
//! `terraform init` installing directly from a registry (no `provider_installation` block).
//! Uses the shared harness in tests/common (the including file declares `mod common;`).
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::{
    fake_provider_zip_for, fetch, plain_client, sha256_hex, temp_dir, terraform_path, wait_bounded,
    which, CliOutput, Fetched, Registry, Server, TestCert, INSTALL_HINT,
};

/// Where `push --provider-registry --address acme/foo` stores the provider.
pub const PROVIDER_REPO: &str = "providers/acme/foo";
/// Where `push --module-registry --address acme/net/aws` stores the module.
pub const MODULE_REPO: &str = "modules/acme/net/aws";
/// The artifactType of the author-signature artifact of a provider version.
pub const ARTIFACT_TYPE_SIGNATURES: &str = "application/vnd.terraform.provider.signatures.v1";
/// The artifactType of OpenTofu's module package layout.
pub const MODULE_ARTIFACT_TYPE: &str = "application/vnd.opentofu.modulepkg";
pub const MEDIA_TYPE_SHA256SUMS: &str = "application/vnd.terraform.provider.sha256sums";
pub const MEDIA_TYPE_PGP_SIGNATURE: &str = "application/pgp-signature";
pub const MEDIA_TYPE_PGP_KEYS: &str = "application/pgp-keys";
/// The user ID of the release author's GnuPG key.
pub const AUTHOR_UID: &str = "Acme Releases <releases@acme.test>";
/// The user ID of the server's GnuPG signing key.
pub const SERVER_UID: &str = "Registry Signing <registry@example.test>";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A second platform, different from the local one.
pub fn other_platform(local: &str) -> &'static str {
    if local == "linux_arm64" {
        "darwin_amd64"
    } else {
        "linux_arm64"
    }
}

pub fn args_of(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Environment variables that could send test traffic through a proxy.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// What a bounded run of some program printed.
#[derive(Debug)]
pub struct Captured {
    /// `None` when it was killed for running past its time limit.
    pub status: Option<std::process::ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Captured {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `cmd` with stdin closed and stdout/stderr captured in files, killing it after `limit`.
pub fn run_captured(mut cmd: Command, limit: Duration) -> Captured {
    let io = temp_dir("odtr-run-");
    let out_path = io.path().join("stdout");
    let err_path = io.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&out_path).expect("stdout file")))
        .stderr(Stdio::from(File::create(&err_path).expect("stderr file")));
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let status = wait_bounded(&mut child, limit);
    let mut stderr = String::from_utf8_lossy(&fs::read(&err_path).unwrap_or_default()).into_owned();
    if status.is_none() {
        stderr.push_str(&format!("\n<{program} killed after {limit:?}>\n"));
    }
    Captured {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr,
    }
}

// ---------------------------------------------------------------------------------------------
// GnuPG
// ---------------------------------------------------------------------------------------------

/// `gpg` with a private `--homedir` in a temporary directory (mode 700). The homedir's
/// gpg-agent is stopped on drop.
pub struct Gpg {
    binary: PathBuf,
    home: TempDir,
}

impl Gpg {
    pub fn new() -> Gpg {
        let binary = which("gpg").unwrap_or_else(|| {
            panic!(
                "gpg not found on PATH: install GnuPG (Debian package gnupg: `apt-get install gnupg`); \
                 {INSTALL_HINT} installs the other test tools"
            )
        });
        let home = temp_dir("odtr-gpg-");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700))
                .expect("chmod 700 gpg homedir");
        }
        Gpg { binary, home }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `gpg --homedir H --batch ARGS...` (killed after 60 s).
    pub fn run(&self, args: &[&str]) -> Captured {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--homedir")
            .arg(self.home.path())
            .arg("--batch")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(self.home.path());
        run_captured(cmd, Duration::from_secs(60))
    }

    fn run_ok(&self, args: &[&str]) -> Captured {
        let out = self.run(args);
        assert!(
            out.success(),
            "gpg {args:?} failed: {:?}\n{}",
            out.status,
            out.stderr
        );
        out
    }

    /// Generates an RSA 3072 signing key (no passphrase, no expiry) for `user_id`.
    pub fn generate_key(&self, user_id: &str) {
        self.generate_key_with(user_id, "rsa3072");
    }

    /// Generates a signing key of algorithm `algo` (no passphrase, no expiry) for `user_id`.
    pub fn generate_key_with(&self, user_id: &str, algo: &str) {
        self.run_ok(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            user_id,
            algo,
            "sign",
            "never",
        ]);
    }

    /// Field `field` of each `--with-colons --list-keys` record of type `record`.
    fn listed(&self, record: &str, field: usize) -> Vec<String> {
        let out = self.run_ok(&["--with-colons", "--list-keys"]);
        out.stdout_text()
            .lines()
            .filter(|l| l.split(':').next() == Some(record))
            .map(|l| l.split(':').nth(field).unwrap_or("").to_owned())
            .collect()
    }

    /// The primary keys' long key IDs (16 uppercase hex digits), as `--list-keys` shows them.
    pub fn key_ids(&self) -> Vec<String> {
        self.listed("pub", 4)
            .iter()
            .map(|id| id.to_ascii_uppercase())
            .collect()
    }

    /// The only primary key's long key ID.
    pub fn key_id(&self) -> String {
        let ids = self.key_ids();
        assert_eq!(
            ids.len(),
            1,
            "expected one key in {:?}: {ids:?}",
            self.home()
        );
        ids[0].clone()
    }

    /// The user IDs of the keyring.
    pub fn user_ids(&self) -> Vec<String> {
        self.listed("uid", 9)
    }

    /// The armored public key(s).
    pub fn export_public(&self) -> String {
        let out = self.run_ok(&["--armor", "--export"]);
        let text = out.stdout_text();
        assert!(
            text.contains("BEGIN PGP PUBLIC KEY BLOCK"),
            "gpg --export: {text}"
        );
        text
    }

    /// The armored, unencrypted secret key(s).
    pub fn export_secret(&self) -> String {
        let out = self.run_ok(&[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--armor",
            "--export-secret-keys",
        ]);
        let text = out.stdout_text();
        assert!(
            text.contains("BEGIN PGP PRIVATE KEY BLOCK"),
            "gpg --export-secret-keys: {text}"
        );
        text
    }

    /// Writes a binary detached signature of `input` to `output`.
    pub fn detach_sign(&self, input: &Path, output: &Path) {
        let (input, output) = (input.to_str().unwrap(), output.to_str().unwrap());
        self.run_ok(&[
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--detach-sign",
            "-o",
            output,
            input,
        ]);
    }

    /// Writes a binary detached signature of the SHA256SUMS file `sums` to `SUMS.sig` (as a
    /// release directory holds it); returns the signature.
    pub fn sign_sha256sums(&self, sums: &Path) -> Vec<u8> {
        let sig = sig_path(sums);
        self.detach_sign(sums, &sig);
        fs::read(&sig).expect("read the detached signature")
    }

    /// Imports the keys of `file` (armored or binary).
    pub fn import(&self, file: &Path) {
        self.run_ok(&["--import", file.to_str().unwrap()]);
    }

    /// A new keyring holding only the keys of `armored` (armored key text).
    pub fn with_key(armored: &str) -> Gpg {
        let gpg = Gpg::new();
        let path = gpg.home().join("import.asc");
        fs::write(&path, armored).expect("write key to import");
        gpg.import(&path);
        gpg
    }

    /// `gpg --verify SIG DATA` on bytes: whether gpg accepts the signature, and its report.
    pub fn verify(&self, signature: &[u8], data: &[u8]) -> (bool, String) {
        let dir = temp_dir("odtr-gpg-verify-");
        let sig = dir.path().join("data.sig");
        let doc = dir.path().join("data");
        fs::write(&sig, signature).unwrap();
        fs::write(&doc, data).unwrap();
        let out = self.run(&["--verify", sig.to_str().unwrap(), doc.to_str().unwrap()]);
        (out.success(), out.stderr)
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // Only the agent of this homedir (found by its socket in the homedir).
        if let Some(gpgconf) = which("gpgconf") {
            let mut cmd = Command::new(gpgconf);
            cmd.arg("--homedir")
                .arg(self.home.path())
                .arg("--kill")
                .arg("gpg-agent")
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
            let _ = run_captured(cmd, Duration::from_secs(10));
        }
    }
}

/// The long key ID (16 uppercase hex digits) of the primary key in `armored`, as gpg reads it.
pub fn gpg_key_id_of(armored: &str) -> String {
    Gpg::with_key(armored).key_id()
}

/// Whether `text` is an armored public key (and holds no private key).
pub fn is_armored_public_key(text: &str) -> bool {
    text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") && !text.contains("PRIVATE")
}

/// Two GnuPG keys: a release author's (its public key exported for `--author-key`) and the
/// server's (its secret key exported for `signing_key_file`).
pub struct SigningKeys {
    pub author: Gpg,
    pub author_id: String,
    /// The author's armored public key, `DIR/author.pub.asc`.
    pub author_pub: PathBuf,
    pub server_gpg: Gpg,
    pub server_id: String,
    /// The server's armored secret key, `DIR/server-secret.asc`.
    pub server_key: PathBuf,
}

impl SigningKeys {
    /// Generates both keys (user IDs [`AUTHOR_UID`] and [`SERVER_UID`]) and writes their
    /// exports into `dir`.
    pub fn generate(dir: &Path) -> SigningKeys {
        let author = Gpg::new();
        author.generate_key(AUTHOR_UID);
        let author_id = author.key_id();
        let author_pub = dir.join("author.pub.asc");
        fs::write(&author_pub, author.export_public()).unwrap();
        let server_gpg = Gpg::new();
        server_gpg.generate_key(SERVER_UID);
        let server_id = server_gpg.key_id();
        assert_ne!(author_id, server_id);
        let server_key = dir.join("server-secret.asc");
        fs::write(&server_key, server_gpg.export_secret()).unwrap();
        SigningKeys {
            author,
            author_id,
            author_pub,
            server_gpg,
            server_id,
            server_key,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oci-distribution-terraform-registry"))
}

/// Runs `oci-distribution-terraform-registry ARGS...` in a temporary directory, with the
/// configuration search directories (`XDG_CONFIG_HOME`, `XDG_CONFIG_DIRS`), the cache
/// directory and `DOCKER_CONFIG` all pointing at empty temporary directories, and no proxy.
/// Killed after `limit`.
pub fn run_bin(args: &[&str], limit: Duration) -> CliOutput {
    let dir = temp_dir("odtr-bin-");
    for sub in ["xdg-config", "xdg-dirs", "xdg-cache", "docker", "home"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mut cmd = Command::new(bin_path());
    cmd.args(args)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env("HOME", dir.path().join("home"))
        .env("XDG_CONFIG_HOME", dir.path().join("xdg-config"))
        .env("XDG_CONFIG_DIRS", dir.path().join("xdg-dirs"))
        .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
        .env("DOCKER_CONFIG", dir.path().join("docker"));
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    let out = run_captured(cmd, limit);
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: out.stderr,
    }
}

/// `--config=CONFIG push ARGS...` (killed after 90 s).
pub fn push(config: &Path, args: &[&str]) -> CliOutput {
    let mut all = vec![format!("--config={}", config.display()), "push".to_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run_bin(&all, Duration::from_secs(90))
}

/// `push --provider-registry --address ADDRESS --version VERSION EXTRA... ZIP...`
pub fn push_zips(
    config: &Path,
    address: &str,
    version: &str,
    packages: &[Package],
    extra: &[&str],
) -> CliOutput {
    let mut args: Vec<String> = [
        "--provider-registry",
        "--address",
        address,
        "--version",
        version,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    args.extend(packages.iter().map(|p| p.path.display().to_string()));
    push(config, &args_of(&args))
}

/// `push --provider-registry --address ADDRESS [--author-key KEY] DIR`
pub fn push_release_dir(
    config: &Path,
    address: &str,
    dir: &Path,
    author_key: Option<&Path>,
) -> CliOutput {
    let mut args: Vec<String> = ["--provider-registry", "--address", address]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(key) = author_key {
        args.push("--author-key".to_owned());
        args.push(key.display().to_string());
    }
    args.push(dir.display().to_string());
    push(config, &args_of(&args))
}

/// `push --module-registry --module DIR --address acme/net/aws --version VERSION EXTRA...`
pub fn push_module(config: &Path, dir: &Path, version: &str, extra: &[&str]) -> CliOutput {
    let dir_arg = dir.display().to_string();
    let mut args = vec![
        "--module-registry",
        "--module",
        &dir_arg,
        "--address",
        "acme/net/aws",
        "--version",
        version,
    ];
    args.extend_from_slice(extra);
    push(config, &args)
}

/// A key pair written by `keygen`.
#[derive(Debug)]
pub struct KeyPair {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    /// The key ID `keygen` printed (16 uppercase hex digits).
    pub printed_id: String,
    pub output: String,
}

/// The first OpenPGP key ID in `text`: a 16-hex-digit key ID, or the last 16 digits of a
/// 40-hex-digit fingerprint (either may be written with a `0x` prefix or in groups of four).
pub fn find_key_id(text: &str) -> Option<String> {
    for line in text.lines() {
        // Join groups of four ("6EDB E92B ...") as gpg prints fingerprints.
        let compact: String = {
            let mut s = String::new();
            let mut tokens = line.split_whitespace().peekable();
            while let Some(t) = tokens.next() {
                s.push_str(t);
                let group = t.len() == 4 && t.chars().all(|c| c.is_ascii_hexdigit());
                let next_group = tokens
                    .peek()
                    .is_some_and(|n| n.len() == 4 && n.chars().all(|c| c.is_ascii_hexdigit()));
                if !(group && next_group) {
                    s.push(' ');
                }
            }
            s
        };
        for token in compact.split(|c: char| !c.is_ascii_alphanumeric()) {
            let token = token.strip_prefix("0x").unwrap_or(token);
            if !token.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            if token.len() == 16 || token.len() == 40 {
                return Some(token[token.len() - 16..].to_ascii_uppercase());
            }
        }
    }
    None
}

/// `keygen --private-key PRIVATE --public-key PUBLIC`
pub fn keygen_args(private: &Path, public: &Path) -> Vec<String> {
    vec![
        "keygen".to_owned(),
        "--private-key".to_owned(),
        private.display().to_string(),
        "--public-key".to_owned(),
        public.display().to_string(),
    ]
}

/// `keygen --private-key DIR/NAME.asc --public-key DIR/NAME.pub.asc [--user-id ID]`, which
/// must succeed and print a key ID.
pub fn keygen(dir: &Path, name: &str, user_id: Option<&str>) -> KeyPair {
    keygen_with(dir, name, user_id, &[])
}

/// [`keygen`] with `extra` arguments (e.g. `--bits 2048`).
pub fn keygen_with(dir: &Path, name: &str, user_id: Option<&str>, extra: &[&str]) -> KeyPair {
    let private_key = dir.join(format!("{name}.asc"));
    let public_key = dir.join(format!("{name}.pub.asc"));
    let mut args = keygen_args(&private_key, &public_key);
    if let Some(uid) = user_id {
        args.push("--user-id".to_owned());
        args.push(uid.to_owned());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let out = run_bin(&args_of(&args), Duration::from_secs(180));
    assert!(out.success(), "keygen failed:\n{out}");
    let printed_id = find_key_id(&out.stdout)
        .unwrap_or_else(|| panic!("keygen printed no key ID on stdout:\n{out}"));
    KeyPair {
        private_key,
        public_key,
        printed_id,
        output: out.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A server configuration: TLS with `cert`, `listen_addr` on a free port, a `provider_registry`
/// (name prefix `providers`, signing with `signing_key`) when `signing_key` is given, a
/// `module_registry` (name prefix `modules`) when `modules`, both on `origin_url`, and the
/// package cache in `cache_dir`.
pub fn registry_config(
    cert: &TestCert,
    origin_url: &str,
    signing_key: Option<&Path>,
    modules: bool,
    cache_dir: &Path,
) -> String {
    registry_config_with(cert, origin_url, signing_key, modules, "", "", cache_dir)
}

/// [`registry_config`] with `server_extra` (attribute lines) inside the `server` block and
/// `registry_extra` (attribute lines) inside each registry block.
pub fn registry_config_with(
    cert: &TestCert,
    origin_url: &str,
    signing_key: Option<&Path>,
    modules: bool,
    server_extra: &str,
    registry_extra: &str,
    cache_dir: &Path,
) -> String {
    let mut hcl = format!(
        r#"server {{
  listen_addr = "127.0.0.1:0"
{server_extra}  tls {{
    certificate_file = "{cert}"
    private_key_file = "{key}"
  }}
}}
"#,
        cert = cert.cert_path().display(),
        key = cert.key_path().display(),
    );
    if let Some(key) = signing_key {
        hcl.push_str(&format!(
            r#"
provider_registry {{
  origin_url       = "{origin_url}"
  name_prefix      = "providers"
  signing_key_file = "{key}"
{registry_extra}}}
"#,
            key = key.display()
        ));
    }
    if modules {
        hcl.push_str(&format!(
            r#"
module_registry {{
  origin_url  = "{origin_url}"
  name_prefix = "modules"
{registry_extra}}}
"#
        ));
    }
    hcl.push_str(&format!(
        "\ncache {{\n  directory = \"{}\"\n  max_size  = \"1GiB\"\n}}\n",
        cache_dir.display()
    ));
    hcl
}

/// Writes `hcl` to `DIR/NAME` and returns the path.
pub fn write_config(dir: &Path, name: &str, hcl: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, hcl).expect("write config");
    path
}

// ---------------------------------------------------------------------------------------------
// Provider release files and module directories
// ---------------------------------------------------------------------------------------------

/// One provider package written to disk.
#[derive(Debug, Clone)]
pub struct Package {
    pub platform: String,
    pub filename: String,
    pub path: PathBuf,
    pub zip: Vec<u8>,
}

/// Writes `terraform-provider-{type}_{version}_{platform}.zip` for each platform into `dir`.
pub fn write_packages(
    dir: &Path,
    type_name: &str,
    version: &str,
    platforms: &[&str],
) -> Vec<Package> {
    fs::create_dir_all(dir).expect("mkdir");
    platforms
        .iter()
        .map(|platform| {
            let zip = fake_provider_zip_for(type_name, version, platform);
            let filename = format!("terraform-provider-{type_name}_{version}_{platform}.zip");
            let path = dir.join(&filename);
            fs::write(&path, &zip).expect("write zip");
            Package {
                platform: platform.to_string(),
                filename,
                path,
                zip,
            }
        })
        .collect()
}

/// Writes `terraform-provider-{type}_{version}_SHA256SUMS` (`<hex>  <filename>` lines) into
/// `dir`; returns its path and bytes.
pub fn write_sha256sums(
    dir: &Path,
    type_name: &str,
    version: &str,
    packages: &[Package],
) -> (PathBuf, Vec<u8>) {
    let mut sums = String::new();
    for p in packages {
        sums.push_str(&format!("{}  {}\n", sha256_hex(&p.zip), p.filename));
    }
    let path = dir.join(format!(
        "terraform-provider-{type_name}_{version}_SHA256SUMS"
    ));
    fs::write(&path, &sums).expect("write SHA256SUMS");
    (path, sums.into_bytes())
}

/// `SUMS.sig`: where a release directory holds the signature of the SHA256SUMS file `sums`.
pub fn sig_path(sums: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sig", sums.display()))
}

/// `(hex, filename)` of each package, sorted: what [`parse_sha256sums`] reads from a
/// SHA256SUMS listing exactly `packages`.
pub fn package_listing(packages: &[Package]) -> Vec<(String, String)> {
    let mut want: Vec<(String, String)> = packages
        .iter()
        .map(|p| (sha256_hex(&p.zip), p.filename.clone()))
        .collect();
    want.sort();
    want
}

/// `(hex, filename)` of each line of a SHA256SUMS document, sorted.
pub fn parse_sha256sums(doc: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = String::from_utf8_lossy(doc)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split_whitespace();
            let hex = fields.next().unwrap_or("").to_owned();
            let name = fields
                .next()
                .unwrap_or("")
                .trim_start_matches('*')
                .to_owned();
            (hex, name)
        })
        .collect();
    out.sort();
    out
}

/// The module's `main.tf`.
pub const MODULE_MAIN_TF: &str = "output \"x\" {\n  value = 1\n}\n";

/// A module directory: `main.tf`, `docs/usage.txt`, and junk under `.git/` and `.terraform/`
/// that `push --module-registry` must leave out.
pub fn write_module_dir(dir: &Path) {
    fs::create_dir_all(dir.join("docs")).unwrap();
    fs::create_dir_all(dir.join(".git/objects/ab")).unwrap();
    fs::create_dir_all(dir.join(".terraform/providers")).unwrap();
    fs::write(dir.join("main.tf"), MODULE_MAIN_TF).unwrap();
    fs::write(dir.join("docs/usage.txt"), "Use it.\n").unwrap();
    fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::write(dir.join(".git/objects/ab/cdef"), b"\x78\x9cjunk object").unwrap();
    fs::write(dir.join(".terraform/providers/junk.bin"), vec![0x5a; 4096]).unwrap();
    fs::write(
        dir.join(".terraform/terraform.tfstate"),
        "{\"junk\": true}\n",
    )
    .unwrap();
}

/// The entry names of a zip archive, and `main.tf`'s content if it has one.
pub fn zip_entries(bytes: &[u8]) -> (Vec<String>, Option<String>) {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes.to_vec()))
        .unwrap_or_else(|e| panic!("not a zip archive ({e}), {} bytes", bytes.len()));
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    let main_tf = archive.by_name("main.tf").ok().map(|mut f| {
        let mut s = String::new();
        f.read_to_string(&mut s).expect("read main.tf from zip");
        s
    });
    (names, main_tf)
}

// ---------------------------------------------------------------------------------------------
// Terraform, installing directly from the registries
// ---------------------------------------------------------------------------------------------

/// What [`terraform_init_direct`] returned.
#[derive(Debug)]
pub struct TfInit {
    pub success: bool,
    /// stdout and stderr, interleaved.
    pub output: String,
    pub lock_file: Option<String>,
}

/// `main.tf` requiring provider `localhost:PORT/acme/foo` 1.0.0 and, if `module`, module
/// `net` from `127.0.0.1:PORT/acme/net/aws` 1.0.0.
pub fn main_tf(port: u16, module: bool) -> String {
    main_tf_with(port, module.then_some("1.0.0"))
}

/// `main.tf` requiring provider `localhost:PORT/acme/foo` 1.0.0 and, given a version
/// constraint, module `net` from `127.0.0.1:PORT/acme/net/aws` (Terraform would read
/// `localhost:PORT/...` as a URL).
pub fn main_tf_with(port: u16, module_version: Option<&str>) -> String {
    let mut tf = format!(
        r#"terraform {{
  required_providers {{
    foo = {{
      source  = "localhost:{port}/acme/foo"
      version = "1.0.0"
    }}
  }}
}}
"#
    );
    if let Some(version) = module_version {
        tf.push_str(&format!(
            r#"
module "net" {{
  source  = "127.0.0.1:{port}/acme/net/aws"
  version = "{version}"
}}
"#
        ));
    }
    tf
}

/// Runs `terraform init -no-color -input=false` in `work` (which holds the configuration),
/// with an empty CLI configuration (so providers install directly from their registry), a
/// fresh HOME, and `SSL_CERT_FILE` = the test certificate. Killed after 120 s.
pub fn terraform_init_direct(work: &Path, cert: &TestCert) -> TfInit {
    let terraform = terraform_path();
    let aux = temp_dir("odtr-tf-aux-");
    let cli_path = aux.path().join("cli.tfrc");
    fs::write(&cli_path, "# no provider_installation: direct installs\n").unwrap();
    let home = aux.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let output_path = aux.path().join("terraform-output.log");
    let output_file = File::create(&output_path).unwrap();
    let mut cmd = Command::new(&terraform);
    cmd.args(["init", "-no-color", "-input=false"])
        .current_dir(work)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("TF_CLI_CONFIG_FILE", &cli_path)
        .env("SSL_CERT_FILE", cert.cert_path())
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(output_file.try_clone().unwrap()))
        .stderr(Stdio::from(output_file));
    if let Some(level) = std::env::var_os("ODTR_TF_LOG") {
        cmd.env("TF_LOG", level);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e} ({INSTALL_HINT})", terraform.display()));
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let mut output =
        String::from_utf8_lossy(&fs::read(&output_path).unwrap_or_default()).into_owned();
    if status.is_none() {
        output.push_str("\n<terraform init killed after 120 s>\n");
    }
    TfInit {
        success: status.is_some_and(|s| s.success()),
        output,
        lock_file: fs::read_to_string(work.join(".terraform.lock.hcl")).ok(),
    }
}

/// A fresh working directory holding `main_tf`, and `terraform init` run in it.
pub fn init_fresh(main_tf: &str, cert: &TestCert) -> (TempDir, TfInit) {
    let work = temp_dir("odtr-tf-work-");
    fs::write(work.path().join("main.tf"), main_tf).unwrap();
    let init = terraform_init_direct(work.path(), cert);
    (work, init)
}

// ---------------------------------------------------------------------------------------------
// The servers and the registry protocols' documents
// ---------------------------------------------------------------------------------------------

pub fn server_port(server: &Server) -> u16 {
    url::Url::parse(server.base_url())
        .expect("server base URL")
        .port()
        .expect("server base URL has a port")
}

/// Stops the origin registry, which must then no longer answer on its port.
pub fn stop_origin(registry: &mut Option<Registry>) {
    let port = registry.as_ref().expect("registry running").port();
    *registry = None;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the registry still answers on port {port}"
    );
}

pub fn resolve(base: &str, reference: &str) -> String {
    url::Url::parse(base)
        .expect("base URL")
        .join(reference)
        .unwrap_or_else(|e| panic!("resolve {reference:?} against {base}: {e}"))
        .to_string()
}

/// `GET url` (with `auth`) expecting 200.
pub async fn fetch_ok(client: &reqwest::Client, url: &str, auth: Option<&str>) -> Fetched {
    let f = fetch(client, url, auth).await;
    f.expect_status(200);
    f
}

/// `GET url` (with `auth`) expecting 200 JSON.
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
) -> serde_json::Value {
    fetch_ok(client, url, auth).await.json()
}

/// `BASE/v1/providers/acme/PROVIDER/VERSION/download/OS/ARCH` for `platform` = `OS_ARCH`.
pub fn provider_doc_url(base: &str, provider: &str, version: &str, platform: &str) -> String {
    let (os, arch) = platform
        .split_once('_')
        .unwrap_or_else(|| panic!("platform {platform:?} is not OS_ARCH"));
    format!("{base}v1/providers/acme/{provider}/{version}/download/{os}/{arch}")
}

/// The sorted `OS_ARCH` platforms of one entry of a provider `versions` document.
pub fn version_platforms(entry: &serde_json::Value) -> Vec<String> {
    let mut got: Vec<String> = entry["platforms"]
        .as_array()
        .unwrap_or_else(|| panic!("no platforms: {entry}"))
        .iter()
        .map(|p| {
            format!(
                "{}_{}",
                p["os"].as_str().unwrap_or("?"),
                p["arch"].as_str().unwrap_or("?")
            )
        })
        .collect();
    got.sort();
    got
}

/// The versions of the first module of a module `versions` document, in order.
pub fn module_versions(json: &serde_json::Value) -> Vec<String> {
    json["modules"][0]["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no modules[0].versions array: {json}"))
        .iter()
        .map(|v| v["version"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The URLs of a provider download document, resolved against `doc_url`.
pub struct DownloadUrls {
    pub download: String,
    pub shasums: String,
    pub signature: String,
}

pub fn download_urls(doc_url: &str, json: &serde_json::Value) -> DownloadUrls {
    let field = |name: &str| {
        resolve(
            doc_url,
            json[name]
                .as_str()
                .unwrap_or_else(|| panic!("GET {doc_url}: no {name}: {json}")),
        )
    };
    DownloadUrls {
        download: field("download_url"),
        shasums: field("shasums_url"),
        signature: field("shasums_signature_url"),
    }
}

/// The served key of a download document: `(key_id in uppercase, ascii_armor)`.
pub fn served_key(doc_url: &str, json: &serde_json::Value) -> (String, String) {
    let key = &json["signing_keys"]["gpg_public_keys"][0];
    let id = key["key_id"]
        .as_str()
        .unwrap_or_else(|| {
            panic!("GET {doc_url}: no signing_keys.gpg_public_keys[0].key_id: {json}")
        })
        .to_ascii_uppercase();
    let armor = key["ascii_armor"]
        .as_str()
        .unwrap_or_else(|| {
            panic!("GET {doc_url}: no signing_keys.gpg_public_keys[0].ascii_armor: {json}")
        })
        .to_owned();
    (id, armor)
}

/// A provider download document with its SHA256SUMS and signature.
pub struct SignedDownload {
    pub json: serde_json::Value,
    pub urls: DownloadUrls,
    /// The served key ID, in uppercase.
    pub key_id: String,
    pub armor: String,
    pub sums: Fetched,
    pub signature: Fetched,
}

/// `GET doc_url` (with `auth`), then its SHA256SUMS and signature URLs (no Authorization),
/// each expecting 200.
pub async fn fetch_signed_download(
    client: &reqwest::Client,
    doc_url: &str,
    auth: Option<&str>,
) -> SignedDownload {
    let json = get_json(client, doc_url, auth).await;
    let urls = download_urls(doc_url, &json);
    let (key_id, armor) = served_key(doc_url, &json);
    let sums = fetch_ok(client, &urls.shasums, None).await;
    let signature = fetch_ok(client, &urls.signature, None).await;
    SignedDownload {
        json,
        urls,
        key_id,
        armor,
        sums,
        signature,
    }
}

/// `GET` a module download URL (with `auth`) expecting 204 and an `X-Terraform-Get` header:
/// `(the header, the URL it names resolved against download_url)`.
pub async fn module_zip_url(
    client: &reqwest::Client,
    download_url: &str,
    auth: Option<&str>,
) -> (String, String) {
    let download = fetch(client, download_url, auth).await;
    download.expect_status(204);
    let get = download
        .header("x-terraform-get")
        .unwrap_or_else(|| {
            panic!(
                "GET {download_url}: no X-Terraform-Get: {:?}",
                download.headers
            )
        })
        .to_owned();
    let zip_url = resolve(download_url, &get);
    (get, zip_url)
}

// ---------------------------------------------------------------------------------------------
// Raw OCI reads
// ---------------------------------------------------------------------------------------------

pub const MANIFEST_ACCEPT: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

/// `GET url` on the registry, with `Accept: ACCEPT` when given.
async fn registry_get(url: &str, accept: Option<&str>) -> reqwest::Response {
    let mut req = plain_client().get(url);
    if let Some(accept) = accept {
        req = req.header(reqwest::header::ACCEPT, accept);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `GET /v2/REPO/manifests/REFERENCE`: `(Content-Type, body)`, or `None` on 404.
pub async fn get_manifest_raw(
    registry_url: &str,
    repo: &str,
    reference: &str,
) -> Option<(String, Vec<u8>)> {
    let url = format!("{registry_url}v2/{repo}/manifests/{reference}");
    let resp = registry_get(&url, Some(MANIFEST_ACCEPT)).await;
    if resp.status() == 404 {
        return None;
    }
    assert_eq!(resp.status(), 200, "GET {url}");
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.bytes().await.expect("manifest body").to_vec();
    Some((content_type, body))
}

/// `GET /v2/REPO/blobs/DIGEST` (expects 200).
pub async fn get_blob(registry_url: &str, repo: &str, digest: &str) -> Vec<u8> {
    let url = format!("{registry_url}v2/{repo}/blobs/{digest}");
    let resp = registry_get(&url, None).await;
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.bytes().await.expect("blob body").to_vec()
}

/// The repository's tags (empty if the registry does not know the repository).
pub async fn tags(registry_url: &str, repo: &str) -> Vec<String> {
    let url = format!("{registry_url}v2/{repo}/tags/list");
    let resp = registry_get(&url, None).await;
    if resp.status() == 404 {
        return Vec::new();
    }
    assert_eq!(resp.status(), 200, "GET {url}");
    let json: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.expect("tags body")).expect("tags JSON");
    let mut tags: Vec<String> = json["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}
