//! `push`: publishes provider packages into an OCI registry, in the OpenTofu layout (default)
//! or the seed layout, so the mirror (and OpenTofu's own `oci_mirror`) can serve them.
//! See the README, "Publishing providers with `push`".

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{Config, ConfigError};
use crate::oci::credentials::{self, CredentialsError};
use crate::oci::{ClientOptions, Credential, OciClient, OciError, Registry};
use crate::provider::publish::{
    self, BlobOutcome, PlanError, PlannedBlob, PublishLayout, PushOptions, PushProgress,
    PushReport, PushTarget, VersionOutcome, VersionPlan, VersionReport,
};
use crate::provider::sources::{self, SourceError, SourceOptions};
use crate::provider::ProviderAddress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// OpenTofu 1.10+ `oci_mirror` layout: an image index per version, a manifest per platform.
    Opentofu,
    /// The prototype's layout: one manifest per version, one layer per package.
    Seed,
}

impl From<LayoutArg> for PublishLayout {
    fn from(l: LayoutArg) -> Self {
        match l {
            LayoutArg::Opentofu => PublishLayout::OpenTofu,
            LayoutArg::Seed => PublishLayout::Seed,
        }
    }
}

/// Publish provider packages into an OCI registry.
///
/// SOURCE is a directory written by `terraform providers mirror`, a provider release directory
/// (terraform-provider-TYPE_VERSION_OS_ARCH.zip files and their _SHA256SUMS file, with
/// --address), or zip files (with --address, and --version unless their names carry it).
/// Every package is checked before anything is written.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["mirror", "registry", "provider_registry", "module_registry"])))]
pub struct PushArgs {
    /// Push to the origin registry and name prefix of this provider_mirror of the configuration.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["registry", "repository_prefix", "module"])]
    pub mirror: Option<String>,

    /// Push to the configuration's provider_registry (repositories PREFIX/NAMESPACE/TYPE);
    /// --address may then be just NAMESPACE/TYPE.
    #[arg(long, conflicts_with_all = ["registry", "repository_prefix", "mirror", "module"])]
    pub provider_registry: bool,

    /// Push a --module to the configuration's module_registry.
    #[arg(long, requires = "module", conflicts_with_all = ["registry", "repository_prefix", "mirror"])]
    pub module_registry: bool,

    /// Publish the Terraform module in this directory (with --address NAMESPACE/NAME/SYSTEM
    /// and --version), zipped without .terraform/ and .git/.
    #[arg(long, value_name = "DIR", requires_all = ["address", "provider_version"])]
    pub module: Option<PathBuf>,

    /// The author's ASCII-armored OpenPGP public key: release directories holding the
    /// author's terraform-provider-TYPE_VERSION_SHA256SUMS.sig are checked against it, and
    /// SHA256SUMS, signature and key are published with the version for the provider registry.
    #[arg(long, value_name = "FILE")]
    pub author_key: Option<PathBuf>,

    /// Plugin protocol versions the provider speaks, comma-separated (default: from the
    /// release's terraform-provider-TYPE_VERSION_manifest.json, else 5.0).
    #[arg(long, value_name = "VERSIONS", value_delimiter = ',')]
    pub protocols: Vec<String>,

    /// Push to this registry (e.g. https://ghcr.io or http://127.0.0.1:5000); no configuration
    /// file is needed.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,

    /// Repository prefix with --registry: providers go to PREFIX/HOST/NAMESPACE/TYPE.
    #[arg(long, value_name = "PREFIX", requires = "registry")]
    pub repository_prefix: Option<String>,

    /// Layout to write.
    #[arg(long, value_enum, default_value_t = LayoutArg::Opentofu)]
    pub layout: LayoutArg,

    /// Overwrite versions whose tag already holds different content.
    #[arg(long)]
    pub force: bool,

    /// Check everything and show what would be pushed, without writing to the registry.
    #[arg(long)]
    pub dry_run: bool,

    /// Provider address for release directories and zip files.
    #[arg(long, value_name = "HOST/NAMESPACE/TYPE")]
    pub address: Option<String>,

    /// Provider version for zip files whose names do not carry one.
    #[arg(long = "version", value_name = "VERSION")]
    pub provider_version: Option<String>,

    /// Registry user name (instead of docker's config.json); the password is read from stdin.
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,

    /// Read the registry password (or token) from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// Blobs uploaded at the same time.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Provider packages: a `terraform providers mirror` directory; a release directory
    /// (terraform-provider-TYPE_VERSION_OS_ARCH.zip files and their _SHA256SUMS) with
    /// --address; or zip files with --address (and --version if their names lack it).
    #[arg(required_unless_present = "module", value_name = "SOURCE")]
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the configuration {config} has no provider_mirror named {name:?}{}", known_list(.known))]
    UnknownMirror {
        config: PathBuf,
        name: String,
        known: Vec<String>,
    },
    #[error("--registry {url:?}: {reason}")]
    RegistryUrl { url: String, reason: String },
    #[error("--address {address:?}: {reason}; expected HOST/NAMESPACE/TYPE, e.g. registry.terraform.io/hashicorp/aws")]
    Address { address: String, reason: String },
    #[error("--version {version:?} is not a semantic version: {reason}")]
    Version { version: String, reason: String },
    #[error("cannot read the password from standard input: {0}")]
    PasswordStdin(std::io::Error),
    #[error("--password-stdin: standard input held no password")]
    EmptyPassword,
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("nothing was pushed: {}", problem_list(.0))]
    Sources(Vec<SourceError>),
    #[error("nothing was pushed: {}", problem_list(.0))]
    Plan(Vec<PlanError>),
    #[error(transparent)]
    Client(#[from] OciError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the configuration {0} has no {1} block")]
    NoRegistry(PathBuf, &'static str),
    #[error("{path}: the author's signature of SHA256SUMS {problem}")]
    AuthorSignature { path: PathBuf, problem: String },
    #[error("--author-key {path}: {reason}")]
    AuthorKey { path: PathBuf, reason: String },
    #[error("--protocols: {0:?} is not a protocol version (MAJOR.MINOR, e.g. 5.0)")]
    Protocol(String),
    #[error(transparent)]
    Module(#[from] crate::registry::module_package::ModulePackageError),
    #[error("--address {0}")]
    ModuleAddress(String),
    #[error("module {module} {version}: the tag already holds other content{}; pass --force to replace it", .existing.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    ModuleConflict {
        module: String,
        version: String,
        existing: Option<crate::oci::Digest>,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (it has none)".to_owned()
    } else {
        format!("; it has: {}", known.join(", "))
    }
}

fn problem_list<E: std::fmt::Display>(errors: &[E]) -> String {
    let mut s = format!(
        "{} problem{} with the packages:",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        s.push_str("\n  - ");
        s.push_str(&e.to_string());
    }
    s
}

/// The registry URL as given: a scheme is optional (https is assumed); the path must end in `/`.
pub fn parse_registry_url(s: &str) -> Result<url::Url, PushError> {
    let err = |reason: String| PushError::RegistryUrl {
        url: s.to_owned(),
        reason,
    };
    let text = if s.contains("://") {
        s.to_owned()
    } else {
        format!("https://{s}")
    };
    let mut url = url::Url::parse(&text).map_err(|e| err(e.to_string()))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(err(
            "only http:// and https:// registries are supported".into()
        ));
    }
    if url.host_str().is_none() {
        return Err(err("no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("a registry URL has no query or fragment".into()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// `HOST/NAMESPACE/TYPE`; for a provider registry (`registry_host`) also `NAMESPACE/TYPE`.
pub fn parse_address(s: &str, registry_host: Option<&str>) -> Result<ProviderAddress, PushError> {
    let parts: Vec<&str> = s.split('/').collect();
    let (host, namespace, type_name) = match (parts.as_slice(), registry_host) {
        ([host, namespace, type_name], _) => (*host, *namespace, *type_name),
        ([namespace, type_name], Some(host)) => (host, *namespace, *type_name),
        _ => {
            return Err(PushError::Address {
                address: s.to_owned(),
                reason: "not three parts".into(),
            })
        }
    };
    ProviderAddress::new(host, namespace, type_name).map_err(|e| PushError::Address {
        address: s.to_owned(),
        reason: e.to_string(),
    })
}

/// Where `args` say to push: registry and repository prefix (credentials come separately).
pub fn resolve_destination(
    config_path: Option<&Path>,
    args: &PushArgs,
) -> Result<(Registry, String), PushError> {
    if args.provider_registry || args.module_registry {
        let config = Config::locate_and_load(config_path)?;
        let origin = if args.provider_registry {
            config.provider_registry.as_ref().map(|r| &r.origin)
        } else {
            config.module_registry.as_ref().map(|r| &r.origin)
        };
        let block = if args.provider_registry {
            "provider_registry"
        } else {
            "module_registry"
        };
        let origin = origin.ok_or_else(|| PushError::NoRegistry(config.source.clone(), block))?;
        return Ok((
            Registry::new(origin.origin_url.clone()),
            origin.name_prefix.clone(),
        ));
    }
    match (&args.mirror, &args.registry) {
        (Some(name), _) => {
            let config = Config::locate_and_load(config_path)?;
            let Some(m) = config.mirror(name) else {
                return Err(PushError::UnknownMirror {
                    config: config.source.clone(),
                    name: name.clone(),
                    known: config
                        .provider_mirrors
                        .iter()
                        .map(|m| m.name.clone())
                        .collect(),
                });
            };
            Ok((Registry::new(m.origin_url.clone()), m.name_prefix.clone()))
        }
        (None, Some(url)) => {
            let prefix = args
                .repository_prefix
                .as_deref()
                .unwrap_or("")
                .trim_matches('/')
                .to_owned();
            Ok((Registry::new(parse_registry_url(url)?), prefix))
        }
        // clap requires one of the two.
        (None, None) => Err(PushError::RegistryUrl {
            url: String::new(),
            reason: "pass --registry URL or --mirror NAME".into(),
        }),
    }
}

/// The credential: `--username` with the password from `stdin`, else docker's configuration.
pub fn resolve_credential(
    args: &PushArgs,
    registry: &Registry,
    stdin: &mut dyn Read,
) -> Result<Credential, PushError> {
    if let Some(username) = &args.username {
        let mut password = String::new();
        stdin
            .read_to_string(&mut password)
            .map_err(PushError::PasswordStdin)?;
        let password = password.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            return Err(PushError::EmptyPassword);
        }
        return Ok(Credential::Basic {
            username: username.clone(),
            password,
        });
    }
    Ok(credentials::credential_for(registry.base())?)
}

/// [`resolve_credential`] off the async threads: reading stdin and running credential
/// helpers block.
async fn blocking_credential(
    args: &PushArgs,
    registry: &Registry,
) -> Result<Credential, PushError> {
    let (args, registry) = (args.clone(), registry.clone());
    tokio::task::spawn_blocking(move || {
        resolve_credential(&args, &registry, &mut std::io::stdin().lock())
    })
    .await
    .map_err(|e| PushError::Runtime(std::io::Error::other(e)))?
}

pub fn source_options(args: &PushArgs) -> Result<SourceOptions, PushError> {
    let registry_host = args
        .provider_registry
        .then_some(crate::registry::REGISTRY_HOST);
    let address = args
        .address
        .as_deref()
        .map(|a| parse_address(a, registry_host))
        .transpose()?;
    let version = args
        .provider_version
        .as_deref()
        .map(|v| {
            semver::Version::parse(v).map_err(|e| PushError::Version {
                version: v.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()?;
    Ok(SourceOptions { address, version })
}

/// Everything `push` does after parsing: resolve, check the packages, push.
pub async fn run(
    config_path: Option<&Path>,
    args: &PushArgs,
    progress: &dyn PushProgress,
) -> Result<PushReport, PushError> {
    let (registry, name_prefix) = resolve_destination(config_path, args)?;
    let source_opts = source_options(args)?;
    let credential = blocking_credential(args, &registry).await?;
    let sources = args.sources.clone();
    let releases = tokio::task::spawn_blocking(move || sources::collect(&sources, &source_opts))
        .await
        .map_err(|e| PushError::Runtime(std::io::Error::other(e)))?
        .map_err(PushError::Sources)?;
    let releases = with_release_extras(args, releases)?;
    if args.provider_registry {
        // The registry's providers belong to whatever host clients call the server by.
        let mut hosts: Vec<&str> = releases
            .iter()
            .map(|r| r.address.hostname.as_str())
            .filter(|h| *h != crate::provider::THIS_HOST)
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        for h in hosts {
            eprintln!("note: the provider registry serves NAMESPACE/TYPE under its own host; the hostname {h} of the sources is not part of the repository name");
        }
    }
    let client = OciClient::new(ClientOptions::default())?;
    let target = PushTarget {
        registry,
        name_prefix,
        naming: if args.provider_registry {
            crate::provider::Naming::WithoutHostname
        } else {
            crate::provider::Naming::WithHostname
        },
        credential,
    };
    let opts = PushOptions {
        layout: args.layout.into(),
        force: args.force,
        dry_run: args.dry_run,
        jobs: usize::from(args.jobs),
        ..PushOptions::default()
    };
    publish::push(&client, &target, &releases, &opts, progress)
        .await
        .map_err(PushError::Plan)
}

/// Adds what release directories hold beside the packages: protocol versions, and the
/// author's signed SHA256SUMS (checked against `--author-key`).
fn with_release_extras(
    args: &PushArgs,
    mut releases: Vec<sources::ProviderRelease>,
) -> Result<Vec<sources::ProviderRelease>, PushError> {
    for p in &args.protocols {
        if !crate::registry::providers::is_protocol_version(p) {
            return Err(PushError::Protocol(p.clone()));
        }
    }
    let author_key = match &args.author_key {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| PushError::AuthorKey {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            crate::signing::public_key_id(&text).map_err(|e| PushError::AuthorKey {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Some(text)
        }
        None => None,
    };
    let dirs: Vec<&PathBuf> = args.sources.iter().filter(|p| p.is_dir()).collect();
    for release in &mut releases {
        let mut protocols = None;
        for dir in &dirs {
            let extras = sources::release_extras(dir, &release.address.type_name, &release.version)
                .map_err(|e| PushError::Sources(vec![e]))?;
            protocols = protocols.or(extras.protocols);
            let (Some((sums_path, sums)), Some((sig_path, signature))) =
                (extras.sums, extras.signature)
            else {
                continue;
            };
            let Some(key) = &author_key else {
                return Err(PushError::AuthorSignature {
                    path: sig_path,
                    problem: "needs the author's public key to be checked and published: pass --author-key FILE".into(),
                });
            };
            // Every package pushed must be what the signed list names.
            let listed = String::from_utf8_lossy(&sums).into_owned();
            for p in &release.packages {
                let ok = listed.lines().any(|l| {
                    l.split_once(char::is_whitespace)
                        .is_some_and(|(hex, name)| {
                            hex.eq_ignore_ascii_case(p.digest.hex())
                                && name.trim_start().trim_start_matches('*') == p.file_name
                        })
                });
                if !ok {
                    return Err(PushError::AuthorSignature {
                        path: sums_path.clone(),
                        problem: format!(
                            "does not list {} with its sha256 {}",
                            p.file_name,
                            p.digest.hex()
                        ),
                    });
                }
            }
            crate::signing::verify_detached(key, &sums, &signature).map_err(|e| {
                PushError::AuthorSignature {
                    path: sig_path.clone(),
                    problem: format!(
                        "does not verify against --author-key ({e}); was {} changed after signing?",
                        sums_path.display()
                    ),
                }
            })?;
            release.signatures = Some(sources::AuthorSignatures {
                sums,
                signature,
                public_key: key.clone(),
            });
        }
        if author_key.is_some() && release.signatures.is_none() {
            return Err(PushError::AuthorSignature {
                path: dirs.first().map(|d| d.to_path_buf()).unwrap_or_default(),
                problem: format!(
                    "is missing: --author-key was given, but no terraform-provider-{}_{}_SHA256SUMS and .sig were found next to the packages",
                    release.address.type_name, release.version
                ),
            });
        }
        release.protocols = if args.protocols.is_empty() {
            protocols.unwrap_or_default()
        } else {
            args.protocols.clone()
        };
        if let Some(p) = release
            .protocols
            .iter()
            .find(|p| !crate::registry::providers::is_protocol_version(p))
        {
            return Err(PushError::Protocol(p.clone()));
        }
    }
    Ok(releases)
}

/// `push --module DIR`: zips the module and publishes it; prints what happened.
async fn run_module(
    config_path: Option<&Path>,
    args: &PushArgs,
    dir: &Path,
) -> Result<String, PushError> {
    use crate::registry::module_package::{self, ModuleOutcome};
    let (registry, name_prefix) = resolve_destination(config_path, args)?;
    let module =
        crate::registry::modules::ModuleAddress::parse(args.address.as_deref().unwrap_or_default())
            .map_err(PushError::ModuleAddress)?;
    let version_text = args.provider_version.as_deref().unwrap_or_default();
    let version = semver::Version::parse(version_text).map_err(|e| PushError::Version {
        version: version_text.to_owned(),
        reason: e.to_string(),
    })?;
    let credential = blocking_credential(args, &registry).await?;
    let owned = dir.to_owned();
    let zip = tokio::task::spawn_blocking(move || module_package::zip_directory(&owned))
        .await
        .map_err(|e| PushError::Runtime(std::io::Error::other(e)))??;
    let plan = module_package::plan(&module, &version, &name_prefix, zip);
    let client = OciClient::new(ClientOptions::default())?;
    let outcome = module_package::push(
        &client,
        &registry,
        &credential,
        &plan,
        args.force,
        args.dry_run,
    )
    .await?;
    let size = HumanBytes(plan.zip.len() as u64);
    let at = format!(
        "{}:{} ({})",
        plan.repository, plan.tag, plan.manifest_digest
    );
    match outcome {
        ModuleOutcome::Pushed => Ok(format!("Pushed module {module} {version}, {size}, to {at}.")),
        ModuleOutcome::Replaced => Ok(format!("Replaced module {module} {version}, {size}, at {at}.")),
        ModuleOutcome::UpToDate => Ok(format!("Module {module} {version} is already up to date at {at}.")),
        ModuleOutcome::WouldPush => Ok(format!("Dry run, nothing was written: module {module} {version}, {size}, would be pushed to {at}.")),
        ModuleOutcome::Conflict { existing } => Err(PushError::ModuleConflict {
            module: module.to_string(),
            version: version.to_string(),
            existing,
        }),
    }
}

/// Entry point from `main`: runs, prints the summary, and sets the exit status.
pub fn main(config_path: Option<&Path>, args: PushArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: {}", PushError::Runtime(e));
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = &args.module {
        return match runtime.block_on(run_module(config_path, &args, dir)) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let progress = ConsoleProgress::new(std::io::stderr().is_terminal());
    let result = runtime.block_on(run(config_path, &args, &progress));
    progress.clear();
    match result {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", summary(&report));
            let _ = out.flush();
            let failures = report.failures();
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("Error: {}", failure_list(&failures));
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn failure_list(failures: &[String]) -> String {
    let mut s = format!(
        "{} version{} not pushed:",
        failures.len(),
        if failures.len() == 1 {
            " was"
        } else {
            "s were"
        }
    );
    for f in failures {
        s.push_str("\n  - ");
        s.push_str(f);
    }
    s
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The closing summary, e.g. `Pushed 2 versions, 1 already up to date, 0 failed. Blobs: 3
/// uploaded (1.2 MiB), 1 mounted, 2 already present; 4 manifests written in 0.8 s.`
pub fn summary(r: &PushReport) -> String {
    let up_to_date = r.count(|o| *o == VersionOutcome::UpToDate);
    let failed = r.count(|o| {
        matches!(
            o,
            VersionOutcome::Conflict { .. } | VersionOutcome::Failed(_)
        )
    });
    let secs = r.elapsed.as_secs_f64();
    if r.dry_run {
        let would = r.count(|o| matches!(o, VersionOutcome::WouldPush { .. }));
        let replacing = r.count(|o| *o == VersionOutcome::WouldPush { replacing: true });
        format!(
            "Dry run, nothing was written: {} would be pushed{}, {} already up to date, {} failed. Blobs: {} to upload ({}), {} already present; checked in {secs:.1} s.",
            plural(would, "version", "versions"),
            if replacing > 0 { format!(" ({replacing} replacing a tag)") } else { String::new() },
            up_to_date,
            failed,
            r.blobs_uploaded,
            HumanBytes(r.bytes_uploaded),
            r.blobs_present,
        )
    } else {
        let pushed =
            r.count(|o| matches!(o, VersionOutcome::Pushed | VersionOutcome::Replaced { .. }));
        let replaced = r.count(|o| matches!(o, VersionOutcome::Replaced { .. }));
        format!(
            "Pushed {}{}, {} already up to date, {} failed. Blobs: {} uploaded ({}), {} mounted, {} already present; {} written in {secs:.1} s.",
            plural(pushed, "version", "versions"),
            if replaced > 0 { format!(" ({replaced} replaced)") } else { String::new() },
            up_to_date,
            failed,
            r.blobs_uploaded,
            HumanBytes(r.bytes_uploaded),
            r.blobs_mounted,
            r.blobs_present,
            plural(r.manifests_written, "manifest", "manifests"),
        )
    }
}

/// Progress on stderr: bars for blobs in flight on a terminal, and in any case one line per
/// blob and per version, so logs of non-interactive runs say what happened.
pub struct ConsoleProgress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<usize, ProgressBar>>,
}

impl ConsoleProgress {
    pub fn new(terminal: bool) -> ConsoleProgress {
        let multi = terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        ConsoleProgress {
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
            }
        }
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, HashMap<usize, ProgressBar>> {
        self.bars.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn clear(&self) {
        for (_, bar) in self.bars().drain() {
            bar.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

impl PushProgress for ConsoleProgress {
    fn push_started(&self, target: &PushTarget, plans: &[VersionPlan], opts: &PushOptions) {
        self.line(&format!(
            "{} {} to {} ({} layout{})",
            if opts.dry_run { "Checking" } else { "Pushing" },
            plural(plans.len(), "version", "versions"),
            target.registry.base(),
            opts.layout,
            if opts.force { ", --force" } else { "" },
        ));
    }

    fn version_started(&self, plan: &VersionPlan) {
        self.line(&format!(
            "{} {} → {}:{}",
            plan.address, plan.version, plan.repository, plan.tag
        ));
    }

    fn blob_started(&self, id: usize, _plan: &VersionPlan, blob: &PlannedBlob) {
        let Some(multi) = &self.multi else {
            return;
        };
        let bar = multi.add(ProgressBar::new(blob.size));
        let style = ProgressStyle::with_template(
            "  {spinner} {msg:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(blob.label.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars().insert(id, bar);
    }

    fn blob_progress(&self, id: usize, sent: u64) {
        if let Some(bar) = self.bars().get(&id) {
            bar.set_position(sent);
        }
    }

    fn blob_finished(
        &self,
        id: usize,
        _plan: &VersionPlan,
        blob: &PlannedBlob,
        result: &Result<BlobOutcome, OciError>,
    ) {
        if let Some(bar) = self.bars().remove(&id) {
            bar.finish_and_clear();
        }
        let what = match result {
            Ok(BlobOutcome::Uploaded) => "uploaded     ",
            Ok(BlobOutcome::Mounted) => "mounted      ",
            Ok(BlobOutcome::Present) => "present      ",
            Ok(BlobOutcome::WouldUpload) => "would upload ",
            Err(_) => "FAILED       ",
        };
        let mut text = format!(
            "  {what}{} ({}, {})",
            blob.label,
            HumanBytes(blob.size),
            blob.digest
        );
        if let Err(e) = result {
            text.push_str(&format!(": {e}"));
        }
        self.line(&text);
    }

    fn version_finished(&self, report: &VersionReport) {
        let digest = report
            .digest
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        let text = match &report.outcome {
            VersionOutcome::Pushed => format!("  pushed {digest}"),
            VersionOutcome::Replaced { previous } => format!(
                "  pushed {digest}, replacing {}",
                previous
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "an unreadable manifest".into())
            ),
            VersionOutcome::UpToDate => format!("  up to date {digest}"),
            VersionOutcome::WouldPush { replacing: false } => format!("  would push {digest}"),
            VersionOutcome::WouldPush { replacing: true } => {
                format!("  would push {digest}, replacing the tag's other content")
            }
            VersionOutcome::Conflict { .. } | VersionOutcome::Failed(_) => {
                format!("  NOT PUSHED: {}", report.failure().unwrap_or_default())
            }
        };
        self.line(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Push(PushArgs),
    }

    fn parse(args: &[&str]) -> Result<PushArgs, clap::Error> {
        let mut all = vec!["x", "push"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| match c.cmd {
            Cmd::Push(a) => a,
        })
    }

    #[test]
    fn arguments() {
        let a = parse(&[
            "--registry",
            "http://127.0.0.1:5000",
            "--repository-prefix",
            "/tp/",
            "--layout",
            "seed",
            "--address",
            "registry.terraform.io/acme/foo",
            "--version",
            "1.0.0",
            "a.zip",
        ])
        .unwrap();
        assert_eq!(a.layout, LayoutArg::Seed);
        assert_eq!(a.provider_version.as_deref(), Some("1.0.0"));
        let (reg, prefix) = resolve_destination(None, &a).unwrap();
        assert_eq!(reg.base().as_str(), "http://127.0.0.1:5000/");
        assert_eq!(prefix, "tp");
        let opts = source_options(&a).unwrap();
        assert_eq!(
            opts.address.unwrap().to_string(),
            "registry.terraform.io/acme/foo"
        );

        assert!(parse(&["dir"]).is_err(), "a destination is required");
        assert!(parse(&["--registry", "r", "--mirror", "m", "dir"]).is_err());
        assert!(parse(&["--mirror", "m", "--repository-prefix", "p", "dir"]).is_err());
        assert!(parse(&["--registry", "r"]).is_err(), "a source is required");
        assert!(parse(&["--registry", "r", "--username", "u", "d"]).is_err());
    }

    #[test]
    fn registry_urls() {
        assert_eq!(
            parse_registry_url("ghcr.io").unwrap().as_str(),
            "https://ghcr.io/"
        );
        assert_eq!(
            parse_registry_url("https://reg.example/base")
                .unwrap()
                .as_str(),
            "https://reg.example/base/"
        );
        assert!(parse_registry_url("ftp://x/").is_err());
        assert!(parse_registry_url("https://x/?a=b").is_err());
        assert!(parse_address("registry.terraform.io/acme", None).is_err());
        assert!(parse_address("registry.terraform.io/acme/foo_bar", None).is_err());
        assert_eq!(
            parse_address("acme/foo", Some("h.invalid"))
                .unwrap()
                .to_string(),
            "h.invalid/acme/foo"
        );
    }

    #[test]
    fn password_from_stdin() {
        let a = parse(&[
            "--registry",
            "r",
            "--username",
            "alice",
            "--password-stdin",
            "d",
        ])
        .unwrap();
        let reg = Registry::new(url::Url::parse("http://r/").unwrap());
        let cred = resolve_credential(&a, &reg, &mut &b"s3cret\n"[..]).unwrap();
        assert!(
            matches!(cred, Credential::Basic { ref username, ref password } if username == "alice" && password == "s3cret")
        );
        assert!(matches!(
            resolve_credential(&a, &reg, &mut &b"\n"[..]),
            Err(PushError::EmptyPassword)
        ));
    }

    #[test]
    fn summaries() {
        let r = PushReport {
            blobs_uploaded: 3,
            bytes_uploaded: 2048,
            blobs_present: 1,
            manifests_written: 4,
            ..PushReport::default()
        };
        let s = summary(&r);
        assert!(
            s.starts_with("Pushed 0 versions, 0 already up to date, 0 failed."),
            "{s}"
        );
        assert!(s.contains("3 uploaded (2.00 KiB)"), "{s}");
        assert!(s.contains("4 manifests written"), "{s}");
    }
}
