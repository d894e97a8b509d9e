//! `warm`: prefetch into the cache providers of a provider_mirror (`--mirror`) or of the
//! provider_registry (`--provider-registry`), or modules of the module_registry
//! (`--module-registry`), from specs, lock files or configurations.
//!
//! The cache has one owner. When no server runs, warm opens the cache itself; when a server
//! owns it, warm asks that server for the same documents and packages over its own
//! endpoints (on loopback, pinned to the configured certificate), so the server fills it.
//! Besides the packages, warm reads every document a client reads (index and version
//! documents; for the registries their versions lists, download documents, SHA256SUMS and
//! signatures), so that a server started with `--offline` on the cache answers them all.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use semver::Version;

use crate::config::units::format_size;
use crate::config::Config;
use crate::http::AppState;
use crate::mirror::MirrorService;
use crate::oci::{Credential, Digest};
use crate::provider::constraints::Constraints;
use crate::provider::requirements::{self, Requirement};
use crate::provider::{ProviderAddress, TargetPlatform, THIS_HOST};
use crate::registry::modules::{ModuleAddress, ModuleRegistry};
use crate::registry::providers::ProviderRegistry;
use crate::store::{BlobStore, Lookup};

/// Which providers, versions and platforms: shared by `warm`, `export` and `lock`.
#[derive(Debug, Clone, clap::Args)]
pub struct Selection {
    /// The provider_mirror to use (default: the only one configured).
    #[arg(long)]
    pub mirror: Option<String>,
    /// OS_ARCH (repeatable); `all` for every platform there is. Default: this host's.
    #[arg(long = "platform", value_name = "OS_ARCH")]
    pub platforms: Vec<String>,
    /// Exact versions (and hashes to check) from a .terraform.lock.hcl (repeatable).
    #[arg(long = "lock-file", value_name = "PATH")]
    pub lock_files: Vec<PathBuf>,
    /// The required_providers of the .tf files in a configuration directory (repeatable).
    #[arg(long = "dir", value_name = "PATH")]
    pub dirs: Vec<PathBuf>,
    /// Every version matching the constraints, not only the newest.
    #[arg(long)]
    pub all_matching: bool,
    /// Providers as ADDR or ADDR@CONSTRAINTS, e.g. hashicorp/aws@"~> 5.0" (modules with
    /// --module-registry: NAMESPACE/NAME/SYSTEM[@CONSTRAINTS]).
    #[arg(value_name = "ADDR[@CONSTRAINTS]")]
    pub specs: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct WarmArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Warm providers of the provider_registry instead of a provider_mirror: ADDR is
    /// NAMESPACE/TYPE (or HOST/NAMESPACE/TYPE, the host being whatever your users call this
    /// server).
    #[arg(long, conflicts_with_all = ["mirror", "module_registry"])]
    pub provider_registry: bool,
    /// With --provider-registry: the host name your configurations give this server (e.g.
    /// registry.example.com). Of the providers in --lock-file and --dir, only that host's are
    /// warmed; required with --lock-file or --dir.
    #[arg(long, value_name = "HOST", requires = "provider_registry")]
    pub registry_host: Option<String>,
    /// Warm modules of the module_registry: the arguments are NAMESPACE/NAME/SYSTEM or
    /// NAMESPACE/NAME/SYSTEM@CONSTRAINTS.
    #[arg(long, conflicts_with_all = ["mirror", "provider_registry", "platforms", "lock_files", "dirs"])]
    pub module_registry: bool,
    /// Packages fetched at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Requirements(#[from] requirements::RequirementsError),
    #[error("{0}")]
    Setup(String),
    #[error("{} of {} package(s) could not be warmed:\n{}", .failures.len(), .total, .failures.iter().map(|f| format!("  - {f}")).collect::<Vec<_>>().join("\n"))]
    Failed { failures: Vec<String>, total: usize },
    /// `lock` and `export`: what did not happen, and every reason.
    #[error("{what}:\n{}", .failures.iter().map(|f| format!("  - {f}")).collect::<Vec<_>>().join("\n"))]
    Incomplete {
        what: &'static str,
        failures: Vec<String>,
    },
}

/// The warm command that brings one missing package into the cache, for `lock` and `export`.
pub(crate) fn warm_first(config: &Config, mirror: &str, job: &Job) -> String {
    let path = config.source.display().to_string();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c);
    let path = match path.chars().all(plain) {
        true => path,
        false => format!("'{}'", path.replace('\'', "'\\''")),
    };
    format!(
        "{} {} {}: not in the cache; run `oci-distribution-terraform-registry --config={} warm --mirror {mirror} --platform {} {}@{}` first",
        job.address,
        job.version,
        job.platform,
        path,
        job.platform,
        job.address,
        job.version
    )
}

/// `Ok(None)`: the cache does not hold the package; `Ok(Some(h1))`: it does, with its `h1:`
/// hash if known.
pub(crate) type CachedH1 = Result<Option<Option<String>>, String>;

/// One provider package to bring into the cache.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub address: ProviderAddress,
    pub version: Version,
    pub platform: TargetPlatform,
    pub digest: Digest,
    /// The absolute archive URL on the running server (server mode).
    url: Option<String>,
    pub locked_hashes: Vec<String>,
}

impl Job {
    /// A package of `address` `version` as [`Backend::packages`] lists it.
    pub(crate) fn listed(
        address: &ProviderAddress,
        version: &Version,
        (platform, digest, url): (TargetPlatform, Digest, Option<String>),
    ) -> Job {
        Job {
            address: address.clone(),
            version: version.clone(),
            platform,
            digest,
            url,
            locked_hashes: Vec::new(),
        }
    }

    fn is_same_package(&self, other: &Job) -> bool {
        self.address == other.address
            && self.version == other.version
            && self.platform == other.platform
    }

    fn label(&self) -> String {
        format!("{} {} {}", self.address, self.version, self.platform)
    }
}

/// One module package to bring into the cache.
#[derive(Debug, Clone)]
struct ModuleJob {
    module: ModuleAddress,
    version: Version,
    digest: Digest,
    /// The absolute zip URL on the running server (server mode).
    url: Option<String>,
}

enum Outcome {
    AlreadyCached,
    Fetched { bytes: u64 },
}

/// How warm reaches the cache, for providers.
pub(crate) enum Backend {
    /// A provider_mirror, through the cache this process opened.
    Direct {
        mirror: Arc<MirrorService>,
        cred: Credential,
    },
    /// A provider_mirror of the running server.
    Server(ServerClient),
    /// The provider_registry, through the cache this process opened.
    Registry {
        registry: Arc<ProviderRegistry>,
        cred: Credential,
    },
    /// The provider_registry of the running server.
    RegistryServer(ServerClient),
}

/// How warm reaches the cache, for modules.
enum ModuleBackend {
    Direct {
        registry: Arc<ModuleRegistry>,
        cred: Credential,
    },
    Server(Box<ServerClient>),
}

/// The mirror the selection names (or the only one).
pub(crate) fn mirror_name(config: &Config, sel: &Selection) -> Result<String, WarmError> {
    match (&sel.mirror, config.provider_mirrors.as_slice()) {
        (Some(m), _) => config.mirror(m).map(|m| m.name.clone()).ok_or_else(|| {
            WarmError::Usage(format!(
                "no provider_mirror named {m:?} in {}",
                config.source.display()
            ))
        }),
        (None, [only]) => Ok(only.name.clone()),
        (None, []) => Err(WarmError::Usage(format!(
            "{} configures no provider_mirror (warm takes --provider-registry or --module-registry for the registries)",
            config.source.display()
        ))),
        (None, _) => Err(WarmError::Usage(
            "several provider_mirror blocks are configured: choose one with --mirror NAME".into(),
        )),
    }
}

/// The credential for an origin, from docker's configuration (`auths`, `credHelpers`,
/// `credsStore`).
fn origin_credential(origin: &url::Url) -> Result<Credential, WarmError> {
    crate::oci::credentials::credential_for(origin).map_err(|e| WarmError::Setup(e.to_string()))
}

/// How long warm waits for a server to file away a package it has verified.
const KEPT_WAIT: Duration = Duration::from_secs(120);

/// How long a command waits for another process that holds the cache without serving it.
const WAIT_FOR_CACHE: Duration = Duration::from_secs(600);

/// What a command gets when it asks for the cache.
pub(crate) enum Claim {
    /// A running server owns it: go through it, at this address.
    Server {
        addr: std::net::SocketAddr,
        pid: u32,
    },
    /// This process opened it.
    Own(Box<AppState>),
}

/// Opens the cache for this process, or finds the running server that owns it (saying so
/// when `through` names what will go through it). Another holder that is not a running
/// server (another warm, a lock or an export, a server starting or stopping) is waited for,
/// up to [`WAIT_FOR_CACHE`]; losing the race for a cache that just became free waits again.
pub(crate) async fn claim_cache(
    config: &Config,
    through: Option<&str>,
) -> Result<Claim, WarmError> {
    use crate::store::CacheHolder;
    let dir = &config.cache.directory;
    let started = Instant::now();
    let mut told = false;
    let name =
        |pid: Option<u32>| pid.map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"));
    loop {
        let holder = match crate::store::cache_holder(dir) {
            CacheHolder::Nobody => match AppState::from_config(config) {
                Ok(state) => return Ok(Claim::Own(Box::new(state))),
                Err(crate::http::ServerError::Store(crate::store::StoreError::Lock(
                    crate::store::LockError::Held { owner, .. },
                ))) => owner,
                Err(e) => return Err(WarmError::Setup(e.to_string())),
            },
            CacheHolder::Server { addr, pid } => {
                if let Some(what) = through {
                    eprintln!(
                        "The cache {} is owned by a running server (pid {pid}); {what} through it.",
                        dir.display()
                    );
                }
                return Ok(Claim::Server { addr, pid });
            }
            CacheHolder::UnprovenServer { pid, addr } => {
                return Err(WarmError::Setup(format!(
                    "the cache {} is in use by {}, and {} names a server at {addr} without its pid (written by an older version): if that server is running, restart it; if not, delete that file",
                    dir.display(),
                    name(pid),
                    dir.join(crate::store::SERVER_ADDRESS_FILE).display()
                )))
            }
            CacheHolder::Other(pid) => name(pid),
        };
        if started.elapsed() > WAIT_FOR_CACHE {
            return Err(WarmError::Setup(format!(
                "the cache {} is still in use by {holder} after {} minutes; it is not a running server (another warm, lock or export?)",
                dir.display(),
                WAIT_FOR_CACHE.as_secs() / 60
            )));
        }
        if !told {
            eprintln!(
                "The cache {} is in use by {holder}, which is not a running server (another warm, lock or export, or a server starting or stopping); waiting for it.",
                dir.display()
            );
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(config: Config, args: WarmArgs) -> Result<(), WarmError> {
    if args.module_registry {
        return run_modules(&config, &args).await;
    }
    let started = Instant::now();
    let sel = &args.selection;
    // `None`: the provider registry.
    let (mirror, reqs, origin_url) = if args.provider_registry {
        let r = config.provider_registry.as_ref().ok_or_else(|| {
            WarmError::Usage(format!(
                "--provider-registry: {} has no provider_registry block",
                config.source.display()
            ))
        })?;
        (
            None,
            registry_requirements(sel, args.registry_host.as_deref())?,
            r.origin.origin_url.clone(),
        )
    } else {
        let name = mirror_name(&config, sel)?;
        let url = config
            .mirror(&name)
            .expect("checked above")
            .origin_url
            .clone();
        (Some(name), gather_requirements(sel)?, url)
    };
    if reqs.is_empty() {
        let from_files = !sel.lock_files.is_empty() || !sel.dirs.is_empty();
        return Err(WarmError::Usage(match (&args.registry_host, from_files) {
            (Some(host), true) => format!(
                "nothing to warm: no provider of the lock files or configurations is on host {host}"
            ),
            _ => "nothing to warm: give ADDR[@CONSTRAINTS] arguments, --lock-file or --dir".into(),
        }));
    }
    let platforms = platform_selection(&sel.platforms)?;
    let cred = origin_credential(&origin_url)?;

    let backend = match (claim_cache(&config, Some("warming")).await?, &mirror) {
        (Claim::Server { addr, .. }, Some(m)) => {
            Backend::Server(ServerClient::new(&config, addr, &format!("{m}/"), &cred)?)
        }
        (Claim::Server { addr, .. }, None) => {
            Backend::RegistryServer(ServerClient::new(&config, addr, "", &cred)?)
        }
        (Claim::Own(state), Some(m)) => {
            let mirror = state.mirrors.get(m).cloned().expect("mirror exists");
            Backend::Direct { mirror, cred }
        }
        (Claim::Own(state), None) => {
            let registry = state
                .provider_registry
                .clone()
                .expect("the provider_registry is configured");
            Backend::Registry { registry, cred }
        }
    };
    if let Some(store) = backend.store() {
        store.set_fill_mode(crate::store::FillMode::Batch);
    }

    // Requirements resolve concurrently (a tag list and a few manifests each at the origin),
    // and each one's packages start downloading as soon as it is resolved: the origin's
    // metadata latency overlaps the downloads instead of preceding them.
    let parallel = usize::from(args.jobs).max(1);
    let plan_failures = Mutex::new(Vec::new());
    // Every package once, with the hashes of every lock file that asked for it.
    let unique: Mutex<Vec<Job>> = Mutex::new(Vec::new());
    let ui = Ui::new(0);
    // The planner is its own branch of the join, feeding an unbounded channel: while every
    // download slot is busy, plans in flight are still polled, so their origin requests are
    // not left unread until a timeout fires.
    let (job_tx, job_rx) = futures::channel::mpsc::unbounded::<Job>();
    let planner = futures::stream::iter(
        reqs.iter()
            .map(|req| plan(&backend, req, &platforms, sel.all_matching)),
    )
    .buffered(parallel)
    .for_each({
        let (unique, plan_failures, ui) = (&unique, &plan_failures, &ui);
        // Owns the sender: when planning ends the closure is dropped, ending the job stream.
        move |planned| {
            match planned {
                Ok(Plan { jobs, missing }) => {
                    plan_failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(missing);
                    let mut unique = unique.lock().unwrap_or_else(|p| p.into_inner());
                    for job in jobs {
                        match unique.iter_mut().find(|o| o.is_same_package(&job)) {
                            Some(o) => o.locked_hashes.extend(job.locked_hashes),
                            None => {
                                unique.push(job.clone());
                                ui.add_jobs(1);
                                // The receiver lives until the join ends: this cannot fail.
                                let _ = job_tx.unbounded_send(job);
                            }
                        }
                    }
                }
                Err(e) => plan_failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e),
            }
            futures::future::ready(())
        }
    });
    let ((), mut results) = futures::join!(planner, fetch_all(&backend, job_rx, parallel, &ui));
    // Lock-file hashes are checked once every source of a package has been read.
    let unique = unique.into_inner().unwrap_or_else(|p| p.into_inner());
    for (job, label, outcome) in &mut results {
        if let (Ok(done), Some(merged)) = (&outcome, unique.iter().find(|o| o.is_same_package(job)))
        {
            if let Err(e) = backend.check_locked_hashes(merged).await {
                // Fetched for a lock file that refuses it: not kept either.
                if matches!(done, Outcome::Fetched { .. }) {
                    if let Some(store) = backend.store() {
                        if let Err(r) = store.remove(&job.digest) {
                            tracing::warn!(error = %r, "cannot remove a package the lock file refuses");
                        }
                    }
                }
                ui.failed(label, &e);
                *outcome = Err(e);
            }
        }
    }
    ui.done();
    let mut failures = plan_failures
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let planned = failures.len();
    if let Some(store) = backend.store() {
        if let Err(e) = store.flush() {
            failures.push(format!("the cache could not be made durable: {e}"));
        }
    }
    let what = match &mirror {
        Some(m) => format!("mirror {m:?}"),
        None => "the provider registry".to_owned(),
    };
    summarize(&what, results, failures, planned, started)
}

/// Prints the summary line; the error lists every failure.
fn summarize<J>(
    what: &str,
    results: Vec<(J, String, Result<Outcome, String>)>,
    mut failures: Vec<String>,
    planned: usize,
    started: Instant,
) -> Result<(), WarmError> {
    let (mut fetched, mut cached, mut bytes) = (0usize, 0usize, 0u64);
    for (_, label, r) in &results {
        match r {
            Ok(Outcome::AlreadyCached) => cached += 1,
            Ok(Outcome::Fetched { bytes: b }) => {
                fetched += 1;
                bytes += b;
            }
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }
    // Requirements that failed before any package was known count as one each.
    let total = results.len() + planned;
    if fetched == 0 && failures.is_empty() {
        println!(
            "Nothing to fetch: all {cached} package(s) already cached ({:.1}s).",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "Warmed {what}: {fetched} fetched ({}), {cached} already cached, {} failed, in {:.1}s.",
            format_size(bytes),
            failures.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(WarmError::Failed {
            total: total.max(failures.len()),
            failures,
        })
    }
}

/// All requirements, one per provider (constraints combined, lock-file hashes kept).
pub(crate) fn gather_requirements(args: &Selection) -> Result<Vec<Requirement>, WarmError> {
    let mut all = Vec::new();
    for s in &args.specs {
        all.push(requirements::parse_spec(s)?);
    }
    for f in &args.lock_files {
        all.extend(requirements::from_lock_file(f)?);
    }
    for d in &args.dirs {
        all.extend(config_dir_requirements(d)?);
    }
    Ok(unique(all))
}

/// A configuration's providers; a module not installed yet is warned about (its providers
/// cannot be read until `terraform init` or `terraform get` installs it).
fn config_dir_requirements(dir: &std::path::Path) -> Result<Vec<Requirement>, WarmError> {
    let found = requirements::from_config_dir(dir)?;
    for m in &found.not_installed {
        eprintln!(
            "warning: {}: {m} is not installed, so its providers are not included; run `terraform init` or `terraform get` there first",
            dir.display()
        );
    }
    Ok(found.requirements)
}

/// Each source is its own requirement: two lock files pinning different versions want both
/// versions, not a version satisfying both. Exact repeats are dropped.
fn unique(all: Vec<Requirement>) -> Vec<Requirement> {
    let mut unique: Vec<Requirement> = Vec::new();
    for r in all {
        if !unique.contains(&r) {
            unique.push(r);
        }
    }
    unique
}

/// The requirements for the provider registry: every ADDR argument (its host, if any, is
/// ignored), and the providers of lock files and configurations whose host is `host`.
fn registry_requirements(
    sel: &Selection,
    host: Option<&str>,
) -> Result<Vec<Requirement>, WarmError> {
    let from_files = !sel.lock_files.is_empty() || !sel.dirs.is_empty();
    let host = match host {
        Some(h) => Some(
            ProviderAddress::new(h, "x", "x")
                .map(|a| a.hostname)
                .map_err(|_| {
                    WarmError::Usage(format!("--registry-host {h:?} is not a host name"))
                })?,
        ),
        None if from_files => {
            return Err(WarmError::Usage(
                "with --provider-registry, --lock-file and --dir need --registry-host HOST: the host name your configurations use for this server (e.g. registry.example.com), so that their other providers are left out".into(),
            ))
        }
        None => None,
    };
    let ours = |r: Requirement| -> Result<Requirement, WarmError> {
        let address = ProviderAddress::new(THIS_HOST, &r.address.namespace, &r.address.type_name)
            .map_err(|e| WarmError::Usage(e.to_string()))?;
        Ok(Requirement { address, ..r })
    };
    let mut all = Vec::new();
    for s in &sel.specs {
        all.push(ours(requirements::parse_spec(s)?)?);
    }
    let mut from = Vec::new();
    for f in &sel.lock_files {
        from.push((f, requirements::from_lock_file(f)?));
    }
    for d in &sel.dirs {
        from.push((d, config_dir_requirements(d)?));
    }
    for (path, reqs) in from {
        for r in reqs {
            if Some(&r.address.hostname) == host.as_ref() {
                all.push(ours(r)?);
            } else {
                eprintln!(
                    "note: {}: skipping {} (not a provider of --registry-host {})",
                    path.display(),
                    r.address,
                    host.as_deref().unwrap_or_default()
                );
            }
        }
    }
    Ok(unique(all))
}

/// `None` means every platform the origin has.
pub(crate) fn platform_selection(
    given: &[String],
) -> Result<Option<Vec<TargetPlatform>>, WarmError> {
    if given.iter().any(|p| p == "all") {
        return Ok(None);
    }
    if given.is_empty() {
        return Ok(Some(vec![host_platform()]));
    }
    given
        .iter()
        .map(|p| {
            TargetPlatform::parse(p).ok_or_else(|| {
                WarmError::Usage(format!("{p:?} is not a platform like linux_amd64"))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// This machine's platform in Terraform's (Go's) names.
pub fn host_platform() -> TargetPlatform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    };
    TargetPlatform {
        os: std::env::consts::OS.to_owned(),
        arch: arch.to_owned(),
    }
}

/// The versions `constraints` select from `versions` (sorted): the newest, or all of them.
fn choose(
    versions: &mut [Version],
    constraints: &Constraints,
    all_matching: bool,
    what: &str,
) -> Result<Vec<Version>, String> {
    versions.sort();
    let chosen: Vec<Version> = if all_matching {
        versions
            .iter()
            .filter(|v| constraints.allows(v))
            .cloned()
            .collect()
    } else {
        constraints
            .newest(versions.iter())
            .cloned()
            .into_iter()
            .collect()
    };
    if chosen.is_empty() {
        let available: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
        return Err(format!(
            "{what}: no version matches {constraints} (available: {})",
            if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            }
        ));
    }
    Ok(chosen)
}

/// What one requirement resolved to.
pub(crate) struct Plan {
    pub jobs: Vec<Job>,
    /// One message per chosen version or platform that cannot be had (a version whose
    /// packages cannot be listed, a platform it has no package for): the rest still goes ahead.
    pub missing: Vec<String>,
}

/// The packages `req` asks for. An error when no version can be chosen; otherwise every
/// package that exists is planned and each one that does not is listed in `missing`.
pub(crate) async fn plan(
    backend: &Backend,
    req: &Requirement,
    platforms: &Option<Vec<TargetPlatform>>,
    all_matching: bool,
) -> Result<Plan, String> {
    let addr = &req.address;
    let mut versions = backend
        .versions(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let chosen = choose(
        &mut versions,
        &req.constraints,
        all_matching,
        &addr.to_string(),
    )?;
    let mut jobs = Vec::new();
    let mut missing = Vec::new();
    for version in chosen {
        let packages = match backend.packages(addr, &version).await {
            Ok(p) => p,
            Err(e) => {
                missing.push(format!("{addr} {version}: {e}"));
                continue;
            }
        };
        let wanted: Vec<TargetPlatform> = match platforms {
            None => packages.iter().map(|p| p.0.clone()).collect(),
            Some(list) => list.clone(),
        };
        for platform in wanted {
            match packages.iter().find(|p| p.0 == platform) {
                Some((_, digest, url)) => jobs.push(Job {
                    address: addr.clone(),
                    version: version.clone(),
                    platform,
                    digest: digest.clone(),
                    url: url.clone(),
                    locked_hashes: req.locked_hashes.clone(),
                }),
                None => {
                    let has: Vec<String> = packages.iter().map(|p| p.0.to_string()).collect();
                    missing.push(format!(
                        "{addr} {version} has no package for {platform} (it has: {})",
                        has.join(", ")
                    ));
                }
            }
        }
    }
    Ok(Plan { jobs, missing })
}

/// Something that brings packages of one kind into the cache.
trait Warmer {
    type Job;
    fn label(job: &Self::Job) -> String;
    async fn fetch(&self, job: &Self::Job, bar: &ProgressBar) -> Result<Outcome, String>;
}

/// Fetches `jobs`, `parallel` at a time, showing progress; (job, label, outcome) each.
async fn fetch_all<W: Warmer>(
    warmer: &W,
    jobs: impl Stream<Item = W::Job>,
    parallel: usize,
    ui: &Ui,
) -> Vec<(W::Job, String, Result<Outcome, String>)> {
    jobs.map(|job| async move {
        let label = W::label(&job);
        let bar = ui.start(&label);
        let r = warmer.fetch(&job, &bar).await;
        ui.finish(&label, &bar, &r);
        (job, label, r)
    })
    .buffer_unordered(parallel)
    .collect()
    .await
}

impl Warmer for Backend {
    type Job = Job;

    fn label(job: &Job) -> String {
        job.label()
    }

    async fn fetch(&self, job: &Job, bar: &ProgressBar) -> Result<Outcome, String> {
        self.fetch_package(job, bar).await
    }
}

impl Backend {
    /// A fetched package must match one of the hashes its lock files record, if they do.
    async fn check_locked_hashes(&self, job: &Job) -> Result<(), String> {
        if job.locked_hashes.is_empty() {
            return Ok(());
        }
        let zh = crate::provider::hash::zh_from_sha256_hex(job.digest.hex());
        if job.locked_hashes.contains(&zh) {
            return Ok(());
        }
        let h1 = self.h1(job).await;
        if h1.as_ref().is_some_and(|h| job.locked_hashes.contains(h)) {
            return Ok(());
        }
        Err(format!(
            "the package (zh {zh}{}) matches none of the hashes the lock file records for {}",
            h1.map(|h| format!(", {h}")).unwrap_or_default(),
            job.address
        ))
    }
}

/// Waits for a fill started (or joined) for `digest`, showing its progress on `bar`.
async fn await_fill(
    store: &BlobStore,
    lookup: Lookup,
    digest: &Digest,
    bar: &ProgressBar,
) -> Result<Outcome, String> {
    let fill = match lookup {
        Lookup::Hit(_) => return Ok(Outcome::AlreadyCached),
        Lookup::Fill { fill, .. } => fill,
    };
    let wait = fill.finished();
    tokio::pin!(wait);
    loop {
        tokio::select! {
            r = &mut wait => {
                let size = r.map_err(|e| e.to_string())?;
                if store.meta(digest).is_none() {
                    return Err("downloaded and verified, but it could not be kept in the cache (larger than max_size, or the disk is full)".into());
                }
                return Ok(Outcome::Fetched { bytes: size });
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let (done, total) = fill.progress();
                if let Some(t) = total { bar.set_length(t); }
                bar.set_position(done);
            }
        }
    }
}

/// The digest in `.../sha256/HEX/FILE`, the end of every download and SHA256SUMS path this
/// server issues (names earlier in the path may themselves read `sha256`).
fn digest_before_file_name(url: &url::Url) -> Option<Digest> {
    let segments: Vec<&str> = url.path_segments()?.collect();
    match segments.as_slice() {
        [.., "sha256", hex, _file] => Digest::from_sha256_hex(hex),
        _ => None,
    }
}

/// Whether a URL of the server carries a seal, which expires (`download_url_ttl`).
fn is_sealed(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "t"))
}

/// The manifest digest and seal (`t=`) of a SHA256SUMS URL issued by the provider registry:
/// `/v1/providers/NS/TYPE/VERSION/sha256/HEX/NAME[?t=TOKEN]`.
fn sums_reference(shasums_url: &str) -> Result<(Digest, Option<String>), String> {
    // Never the query: it holds a sealed credential.
    let bad = || {
        format!(
            "unexpected shasums_url {:?}",
            shasums_url.split('?').next().unwrap_or_default()
        )
    };
    let url = url::Url::parse("http://localhost/")
        .and_then(|b| b.join(shasums_url))
        .map_err(|_| bad())?;
    let digest = digest_before_file_name(&url).ok_or_else(bad)?;
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "t")
        .map(|(_, v)| v.into_owned());
    Ok((digest, token))
}

impl Backend {
    /// The cache opened by this process, in offline mode: answers come from the cache only.
    /// When a server owns the cache: through it if `through_server` names what for, else an
    /// error.
    pub(crate) async fn offline(
        config: &Config,
        mirror: &str,
        through_server: Option<&str>,
    ) -> Result<Backend, WarmError> {
        let mut config = config.clone();
        config.server.offline = true;
        let state = match claim_cache(&config, through_server).await? {
            Claim::Own(state) => state,
            Claim::Server { addr, pid } => {
                if through_server.is_none() {
                    return Err(WarmError::Setup(format!(
                        "the cache {} is in use by the running server (pid {pid}); stop it first",
                        config.cache.directory.display()
                    )));
                }
                let cred =
                    origin_credential(&config.mirror(mirror).expect("mirror exists").origin_url)?;
                return Ok(Backend::Server(ServerClient::new(
                    &config,
                    addr,
                    &format!("{mirror}/"),
                    &cred,
                )?));
            }
        };
        let mirror = state.mirrors.get(mirror).cloned().expect("mirror exists");
        Ok(Backend::Direct {
            mirror,
            cred: Credential::Anonymous,
        })
    }

    /// The package store this process opened (direct backends only).
    fn store(&self) -> Option<&Arc<BlobStore>> {
        match self {
            Backend::Direct { mirror, .. } => Some(mirror.store()),
            Backend::Registry { registry, .. } => Some(registry.origin().store()),
            Backend::Server(_) | Backend::RegistryServer(_) => None,
        }
    }

    /// The stored package file and its metadata (direct backends only).
    pub(crate) fn cached(&self, digest: &Digest) -> Option<crate::store::CachedBlob> {
        self.store()?.cached(digest)
    }

    async fn versions(&self, addr: &ProviderAddress) -> Result<Vec<Version>, String> {
        match self {
            Backend::Direct { mirror, cred } => {
                let doc = mirror.index(addr, cred).await.map_err(|e| e.to_string())?;
                Ok(doc
                    .value
                    .versions
                    .keys()
                    .filter_map(|v| Version::parse(v).ok())
                    .collect())
            }
            Backend::Server(s) => s.versions(addr).await,
            // The whole versions list, as Terraform reads it: this reads (and caches) every
            // version's manifest, so the list is complete offline too.
            Backend::Registry { registry, cred } => {
                let doc = registry
                    .versions(addr, cred)
                    .await
                    .map_err(|e| e.to_string())?;
                if doc.stale {
                    eprintln!("warning: {addr}: the versions list is stale or incomplete (the origin did not answer for all of it; see the log): warm chose from what could be read");
                }
                Ok(doc
                    .value
                    .versions
                    .iter()
                    .filter_map(|v| Version::parse(&v.version).ok())
                    .collect())
            }
            Backend::RegistryServer(s) => s.registry_versions(addr).await,
        }
    }

    /// (platform, digest, archive URL in server mode). For the registry, every platform's
    /// download document and the version's SHA256SUMS and signature are read too, so that
    /// their lookups (the author's signature, or its absence) are cached.
    pub(crate) async fn packages(
        &self,
        addr: &ProviderAddress,
        version: &Version,
    ) -> Result<Vec<(TargetPlatform, Digest, Option<String>)>, String> {
        match self {
            Backend::Direct { mirror, cred } => {
                let p = mirror
                    .packages(addr, version, cred)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(p.value
                    .1
                    .iter()
                    .map(|p| (p.platform.clone(), p.digest.clone(), None))
                    .collect())
            }
            Backend::Server(s) => s.packages(addr, version).await,
            Backend::Registry { registry, cred } => {
                let p = registry
                    .origin()
                    .packages(addr, version, cred)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                for (i, package) in p.value.1.iter().enumerate() {
                    let doc = registry
                        .download(addr, version, &package.platform, cred)
                        .await
                        .map_err(|e| format!("{}: {e}", package.platform))?
                        .value;
                    if doc.shasum != package.digest.hex() {
                        return Err(format!(
                            "{}: the download document names {}, not the package {}",
                            package.platform, doc.shasum, package.digest
                        ));
                    }
                    // What the SHA256SUMS URLs read was cached by `download` already; reading
                    // it once checks that it is complete. A sealed URL carries no credential
                    // for a configured (docker config) one, so that check is left out then.
                    let sealed_for_another = registry.origin().needs_authorization()
                        && !matches!(cred, Credential::Anonymous);
                    if i == 0 && !sealed_for_another {
                        let (manifest, token) = sums_reference(&doc.shasums_url)?;
                        registry
                            .sums(addr, version, &manifest, token.as_deref())
                            .await
                            .map_err(|e| format!("its SHA256SUMS: {e}"))?;
                    }
                    out.push((package.platform.clone(), package.digest.clone(), None));
                }
                Ok(out)
            }
            Backend::RegistryServer(s) => s.registry_packages(addr, version).await,
        }
    }

    async fn fetch_package(&self, job: &Job, bar: &ProgressBar) -> Result<Outcome, String> {
        match self {
            Backend::Direct { mirror, cred } => {
                let lookup = mirror.warm_package(&job.address, &job.digest, cred);
                await_fill(mirror.store(), lookup, &job.digest, bar).await
            }
            Backend::Registry { registry, cred } => {
                let origin = registry.origin();
                let lookup = origin.warm_package(&job.address, &job.digest, cred);
                await_fill(origin.store(), lookup, &job.digest, bar).await
            }
            Backend::Server(s) | Backend::RegistryServer(s) => {
                let url = self.current_url(job).await?;
                s.fetch(url.as_deref(), bar, async || self.current_url(job).await)
                    .await
            }
        }
    }

    /// The package's URL on the running server, asked for again when it is sealed: a seal
    /// made when the job was planned expires after `download_url_ttl`, perhaps before its turn.
    async fn current_url(&self, job: &Job) -> Result<Option<String>, String> {
        let planned = match job.url.as_deref() {
            Some(u) if is_sealed(u) => u,
            other => return Ok(other.map(str::to_owned)),
        };
        let fresh = match self {
            Backend::Server(s) => s
                .packages(&job.address, &job.version)
                .await?
                .into_iter()
                .find(|(p, _, _)| *p == job.platform)
                .and_then(|(_, _, url)| url),
            Backend::RegistryServer(s) => Some(
                s.download_doc(&job.address, &job.version.to_string(), &job.platform)
                    .await?
                    .1,
            ),
            _ => None,
        };
        Ok(Some(fresh.unwrap_or_else(|| planned.to_owned())))
    }

    /// Whether the cache holds the package, and its `h1:` hash.
    pub(crate) async fn cached_h1(&self, job: &Job) -> CachedH1 {
        match self {
            Backend::Server(s) => {
                let what = job.label();
                let url = job
                    .url
                    .as_deref()
                    .ok_or_else(|| format!("{what}: the server gave no archive URL"))?;
                let url = url::Url::parse(url).map_err(|e| format!("{what}: {e}"))?;
                match s.kept(&url).await? {
                    Kept::Yes => {}
                    Kept::Filling | Kept::No => return Ok(None),
                    Kept::Unknown(other) => {
                        return Err(format!(
                            "{what}: the server answered {other} when asked whether it keeps the package"
                        ))
                    }
                }
                Ok(Some(s.h1(job).await))
            }
            _ => match self.cached(&job.digest) {
                Some(_) => Ok(Some(self.h1(job).await)),
                None => Ok(None),
            },
        }
    }

    /// The package's `h1:` hash (derived now if the cache left it pending).
    pub(crate) async fn h1(&self, job: &Job) -> Option<String> {
        match self {
            Backend::Direct { .. } | Backend::Registry { .. } => {
                self.store()?.package_h1_async(&job.digest).await
            }
            Backend::Server(s) => s.h1(job).await,
            Backend::RegistryServer(s) => {
                let url = self.current_url(job).await.ok().flatten()?;
                s.download_h1(&url).await
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------------

/// A module and the versions wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModuleRequirement {
    module: ModuleAddress,
    constraints: Constraints,
}

/// `NAMESPACE/NAME/SYSTEM` or `NAMESPACE/NAME/SYSTEM@CONSTRAINTS` (a host in front is ignored).
fn parse_module_spec(s: &str) -> Result<ModuleRequirement, WarmError> {
    let (addr, constraints) = match s.split_once('@') {
        Some((a, c)) => (
            a,
            Constraints::parse(c).map_err(|e| WarmError::Usage(format!("{s:?}: {e}")))?,
        ),
        None => (s, Constraints::any()),
    };
    Ok(ModuleRequirement {
        module: ModuleAddress::parse(addr.trim()).map_err(WarmError::Usage)?,
        constraints,
    })
}

async fn run_modules(config: &Config, args: &WarmArgs) -> Result<(), WarmError> {
    let started = Instant::now();
    let sel = &args.selection;
    let r = config.module_registry.as_ref().ok_or_else(|| {
        WarmError::Usage(format!(
            "--module-registry: {} has no module_registry block",
            config.source.display()
        ))
    })?;
    let mut reqs: Vec<ModuleRequirement> = Vec::new();
    for s in &sel.specs {
        let req = parse_module_spec(s)?;
        if !reqs.contains(&req) {
            reqs.push(req);
        }
    }
    if reqs.is_empty() {
        return Err(WarmError::Usage(
            "nothing to warm: give modules as NAMESPACE/NAME/SYSTEM[@CONSTRAINTS] arguments".into(),
        ));
    }
    let cred = origin_credential(&r.origin.origin_url)?;
    let backend = match claim_cache(config, Some("warming")).await? {
        Claim::Server { addr, .. } => {
            ModuleBackend::Server(Box::new(ServerClient::new(config, addr, "", &cred)?))
        }
        Claim::Own(state) => ModuleBackend::Direct {
            registry: state
                .module_registry
                .clone()
                .expect("the module_registry is configured"),
            cred,
        },
    };

    let mut failures = Vec::new();
    let mut jobs: Vec<ModuleJob> = Vec::new();
    let mut planned = 0;
    let plans: Vec<_> =
        futures::stream::iter(reqs.iter().map(|req| backend.plan(req, sel.all_matching)))
            .buffered(usize::from(args.jobs).max(1))
            .collect()
            .await;
    for planned_jobs in plans {
        match planned_jobs {
            Ok(j) => {
                for job in j {
                    if !jobs
                        .iter()
                        .any(|o| o.module == job.module && o.version == job.version)
                    {
                        jobs.push(job);
                    }
                }
            }
            Err(e) => {
                planned += 1;
                failures.push(e);
            }
        }
    }
    let ui = Ui::new(jobs.len());
    let results = fetch_all(
        &backend,
        futures::stream::iter(jobs),
        usize::from(args.jobs).max(1),
        &ui,
    )
    .await;
    ui.done();
    if let ModuleBackend::Direct { registry, .. } = &backend {
        if let Err(e) = registry.origin().store().flush() {
            failures.push(format!("the cache could not be made durable: {e}"));
        }
    }
    summarize("the module registry", results, failures, planned, started)
}

impl ModuleBackend {
    async fn plan(
        &self,
        req: &ModuleRequirement,
        all_matching: bool,
    ) -> Result<Vec<ModuleJob>, String> {
        let module = &req.module;
        let what = format!("module {module}");
        let mut versions = self
            .versions(module)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let chosen = choose(&mut versions, &req.constraints, all_matching, &what)?;
        let mut jobs = Vec::new();
        for version in chosen {
            let (digest, url) = self
                .locate(module, &version)
                .await
                .map_err(|e| format!("{what} {version}: {e}"))?;
            jobs.push(ModuleJob {
                module: module.clone(),
                version,
                digest,
                url,
            });
        }
        Ok(jobs)
    }

    async fn versions(&self, module: &ModuleAddress) -> Result<Vec<Version>, String> {
        match self {
            ModuleBackend::Direct { registry, cred, .. } => {
                let doc = registry
                    .versions(module, cred)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(doc
                    .value
                    .modules
                    .iter()
                    .flat_map(|m| &m.versions)
                    .filter_map(|v| Version::parse(&v.version).ok())
                    .collect())
            }
            ModuleBackend::Server(s) => s.module_versions(module).await,
        }
    }

    /// The version's zip: its digest, and its URL on the running server (server mode).
    async fn locate(
        &self,
        module: &ModuleAddress,
        version: &Version,
    ) -> Result<(Digest, Option<String>), String> {
        match self {
            ModuleBackend::Direct { registry, cred, .. } => {
                let digest = registry
                    .package_digest(module, version, cred)
                    .await
                    .map_err(|e| e.to_string())?
                    .value;
                Ok((digest, None))
            }
            ModuleBackend::Server(s) => s
                .module_location(module, version)
                .await
                .map(|(d, u)| (d, Some(u))),
        }
    }
}

impl Warmer for ModuleBackend {
    type Job = ModuleJob;

    fn label(job: &ModuleJob) -> String {
        format!("module {} {}", job.module, job.version)
    }

    async fn fetch(&self, job: &ModuleJob, bar: &ProgressBar) -> Result<Outcome, String> {
        match self {
            ModuleBackend::Direct { registry, cred } => {
                let origin = registry.origin();
                let repo = registry.repository(&job.module);
                let lookup = origin.warm_blob(&repo, &job.digest, cred);
                await_fill(origin.store(), lookup, &job.digest, bar).await
            }
            ModuleBackend::Server(s) => {
                // A sealed URL planned earlier may have expired: ask for it again.
                let current = async || match job.url.as_deref() {
                    Some(u) if is_sealed(u) => s
                        .module_location(&job.module, &job.version)
                        .await
                        .map(|(_, location)| Some(location)),
                    other => Ok(other.map(str::to_owned)),
                };
                let url = current().await?;
                s.fetch(url.as_deref(), bar, current).await
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The running server
// ---------------------------------------------------------------------------------------------

/// The server's answer to "do you keep this package?".
enum Kept {
    Yes,
    /// Being fetched, or verified and being filed away.
    Filling,
    No,
    /// Any other status (a refused or expired seal, say).
    Unknown(reqwest::StatusCode),
}

/// Talks to the running server that owns the cache, over its endpoints on loopback.
pub(crate) struct ServerClient {
    http: reqwest::Client,
    /// `SCHEME://HOST:PORT/`
    root: url::Url,
    /// The mirror's base URL (`ROOT/MIRROR/`), or the root.
    base: url::Url,
    authorization: Option<String>,
    pinned: Option<Vec<u8>>,
    /// Provider registry versions lists, per provider, as read in planning.
    registry_docs: Mutex<HashMap<ProviderAddress, serde_json::Value>>,
}

impl ServerClient {
    /// A client for the server's endpoints under `path` (`MIRROR/`, or empty for the root).
    /// `addr`: the address the server recorded in the cache (the configured port may be 0).
    fn new(
        config: &Config,
        mut addr: std::net::SocketAddr,
        path: &str,
        cred: &Credential,
    ) -> Result<ServerClient, WarmError> {
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let host = match addr {
            std::net::SocketAddr::V4(a) => a.to_string(),
            std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let root = url::Url::parse(&format!("{scheme}://{host}/"))
            .map_err(|e| WarmError::Setup(e.to_string()))?;
        let base = root
            .join(path)
            .map_err(|e| WarmError::Setup(e.to_string()))?;
        // Our own server's certificate often names a public host, not 127.0.0.1: instead of
        // name checks, the connection is pinned to the configured certificate itself.
        let pinned = match &config.server.tls {
            Some(t) => {
                let pem = std::fs::read(&t.certificate_file).map_err(|e| {
                    WarmError::Setup(format!("{}: {e}", t.certificate_file.display()))
                })?;
                let der = rustls_pemfile::certs(&mut pem.as_slice())
                    .next()
                    .and_then(|c| c.ok())
                    .ok_or_else(|| {
                        WarmError::Setup(format!(
                            "{}: no certificate",
                            t.certificate_file.display()
                        ))
                    })?;
                Some(der.to_vec())
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .danger_accept_invalid_certs(pinned.is_some())
            .tls_info(true)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| WarmError::Setup(e.to_string()))?;
        let authorization = match cred {
            Credential::Basic { username, password } => {
                use base64::Engine;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"))
                ))
            }
            _ => None,
        };
        Ok(ServerClient {
            http,
            root,
            base,
            authorization,
            pinned,
            registry_docs: Mutex::new(HashMap::new()),
        })
    }

    async fn get(&self, url: url::Url) -> Result<reqwest::Response, String> {
        self.request(self.http.get(url)).await
    }

    /// A successful answer of the server, or why not.
    async fn request(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("the server answered {status}: {}", body.trim()));
        }
        Ok(resp)
    }

    /// Any answer of the server (with our credential, from the pinned certificate).
    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        if let Some(a) = &self.authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("the server did not answer: {}", e.without_url()))?;
        if let Some(pin) = &self.pinned {
            let presented = resp
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|i| i.peer_certificate());
            if presented != Some(pin.as_slice()) {
                return Err("the server on the configured address does not present the configured certificate".into());
            }
        }
        Ok(resp)
    }

    fn url(&self, path: &str) -> Result<url::Url, String> {
        self.base.join(path).map_err(|e| e.to_string())
    }

    /// `ROOT/SEGMENTS...`, each segment escaped.
    fn root_url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.root.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// A URL the server handed out (absolute, or relative to the root).
    fn resolve(&self, reference: &str) -> Result<url::Url, String> {
        self.root
            .join(reference)
            .map_err(|e| format!("the server handed out an invalid URL {reference:?}: {e}"))
    }

    async fn versions(&self, addr: &ProviderAddress) -> Result<Vec<Version>, String> {
        let resp = self.get(self.url(&format!("{addr}/index.json"))?).await?;
        let doc = json_body(resp).await?;
        Ok(doc["versions"]
            .as_object()
            .map(|m| m.keys().filter_map(|v| Version::parse(v).ok()).collect())
            .unwrap_or_default())
    }

    async fn version_doc(
        &self,
        addr: &ProviderAddress,
        version: &Version,
    ) -> Result<(url::Url, serde_json::Value), String> {
        let url = self.url(&format!("{addr}/{version}.json"))?;
        let resp = self.get(url.clone()).await?;
        Ok((url, json_body(resp).await?))
    }

    async fn packages(
        &self,
        addr: &ProviderAddress,
        version: &Version,
    ) -> Result<Vec<(TargetPlatform, Digest, Option<String>)>, String> {
        let (doc_url, doc) = self.version_doc(addr, version).await?;
        let mut out = Vec::new();
        for (platform, archive) in doc["archives"].as_object().into_iter().flatten() {
            let Some(p) = TargetPlatform::parse(platform) else {
                continue;
            };
            let digest = archive["hashes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str()?.strip_prefix("zh:"))
                .find_map(Digest::from_sha256_hex)
                .ok_or_else(|| format!("{platform} has no zh: hash"))?;
            let url = archive["url"].as_str().ok_or("archive without url")?;
            let absolute = doc_url.join(url).map_err(|e| e.to_string())?;
            out.push((p, digest, Some(absolute.to_string())));
        }
        Ok(out)
    }

    async fn h1(&self, job: &Job) -> Option<String> {
        // The server lists the h1 it computed once the package is stored, a moment after
        // the last byte went out; wait for it briefly.
        for _ in 0..50 {
            let (_, doc) = self.version_doc(&job.address, &job.version).await.ok()?;
            let h1 = doc["archives"][job.platform.to_string()]["hashes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str())
                .find(|h| h.starts_with("h1:"))
                .map(str::to_owned);
            if h1.is_some() {
                return h1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// `GET /v1/providers/NS/TYPE/versions`, kept for [`ServerClient::registry_packages`].
    async fn registry_versions(&self, addr: &ProviderAddress) -> Result<Vec<Version>, String> {
        let url = self.root_url(&[
            "v1",
            "providers",
            &addr.namespace,
            &addr.type_name,
            "versions",
        ]);
        let doc = json_body(self.get(url).await?).await?;
        let versions = doc["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Version::parse(v["version"].as_str()?).ok())
            .collect();
        self.registry_docs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.clone(), doc);
        Ok(versions)
    }

    /// Every platform's download document of a version (and its SHA256SUMS and signature,
    /// once), as Terraform reads them.
    async fn registry_packages(
        &self,
        addr: &ProviderAddress,
        version: &Version,
    ) -> Result<Vec<(TargetPlatform, Digest, Option<String>)>, String> {
        let known = self
            .registry_docs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned();
        let doc = match known {
            Some(d) => d,
            None => {
                self.registry_versions(addr).await?;
                self.registry_docs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(addr)
                    .cloned()
                    .unwrap_or_default()
            }
        };
        let entry = doc["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| {
                v["version"]
                    .as_str()
                    .and_then(|s| Version::parse(s).ok())
                    .as_ref()
                    == Some(version)
            })
            .ok_or_else(|| "not in the server's versions list".to_owned())?;
        let platforms: Vec<(String, String)> = entry["platforms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["os"].as_str()?.to_owned(), p["arch"].as_str()?.to_owned())))
            .collect();
        let version_text = version.to_string();
        let mut out = Vec::new();
        let mut sums_read = false;
        for (os, arch) in &platforms {
            let Some(platform) = TargetPlatform::parse(&format!("{os}_{arch}")) else {
                continue;
            };
            let (doc, download) = self.download_doc(addr, &version_text, &platform).await?;
            let digest = doc["shasum"]
                .as_str()
                .and_then(Digest::from_sha256_hex)
                .ok_or_else(|| format!("{platform}: the download document has no shasum"))?;
            if !sums_read {
                sums_read = true;
                for key in ["shasums_url", "shasums_signature_url"] {
                    let u = doc[key]
                        .as_str()
                        .ok_or_else(|| format!("the download document has no {key}"))?;
                    let resp = self
                        .get(self.resolve(u)?)
                        .await
                        .map_err(|e| format!("{key}: {e}"))?;
                    resp.bytes()
                        .await
                        .map_err(|e| format!("{key}: {}", e.without_url()))?;
                }
            }
            out.push((platform, digest, Some(download)));
        }
        Ok(out)
    }

    /// One platform's download document, and its absolute `download_url`.
    async fn download_doc(
        &self,
        addr: &ProviderAddress,
        version: &str,
        platform: &TargetPlatform,
    ) -> Result<(serde_json::Value, String), String> {
        let url = self.root_url(&[
            "v1",
            "providers",
            &addr.namespace,
            &addr.type_name,
            version,
            "download",
            &platform.os,
            &platform.arch,
        ]);
        let doc = json_body(
            self.get(url)
                .await
                .map_err(|e| format!("{platform}: {e}"))?,
        )
        .await?;
        let download = doc["download_url"]
            .as_str()
            .ok_or_else(|| format!("{platform}: the download document has no download_url"))?;
        let absolute = self.resolve(download)?.to_string();
        Ok((doc, absolute))
    }

    /// `GET /v1/modules/NS/NAME/SYSTEM/versions`.
    async fn module_versions(&self, module: &ModuleAddress) -> Result<Vec<Version>, String> {
        let url = self.root_url(&[
            "v1",
            "modules",
            &module.namespace,
            &module.name,
            &module.system,
            "versions",
        ]);
        let doc = json_body(self.get(url).await?).await?;
        Ok(doc["modules"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["versions"].as_array().into_iter().flatten())
            .filter_map(|v| Version::parse(v["version"].as_str()?).ok())
            .collect())
    }

    /// `GET /v1/modules/NS/NAME/SYSTEM/VERSION/download`: the zip's digest and URL, from
    /// `X-Terraform-Get` (`.../download/sha256/HEX/NAME.zip[?t=...]`).
    async fn module_location(
        &self,
        module: &ModuleAddress,
        version: &Version,
    ) -> Result<(Digest, String), String> {
        let url = self.root_url(&[
            "v1",
            "modules",
            &module.namespace,
            &module.name,
            &module.system,
            &version.to_string(),
            "download",
        ]);
        let resp = self.get(url).await?;
        let location = resp
            .headers()
            .get("x-terraform-get")
            .and_then(|v| v.to_str().ok())
            .ok_or("the server's answer has no X-Terraform-Get header")?;
        let absolute = self.resolve(location)?;
        let digest = digest_before_file_name(&absolute).ok_or_else(|| {
            format!(
                "unexpected X-Terraform-Get {:?}",
                location.split('?').next().unwrap_or_default()
            )
        })?;
        Ok((digest, absolute.to_string()))
    }

    /// Brings the package at `url` into the server's cache. `current_url` gives the URL
    /// again, freshly sealed: a seal may expire during a long download.
    async fn fetch(
        &self,
        url: Option<&str>,
        bar: &ProgressBar,
        current_url: impl AsyncFn() -> Result<Option<String>, String>,
    ) -> Result<Outcome, String> {
        let mut url = url::Url::parse(url.ok_or("no archive URL")?).map_err(|e| e.to_string())?;
        if let Kept::Yes = self.kept(&url).await? {
            return Ok(Outcome::AlreadyCached);
        }
        let resp = self.get(url.clone()).await?;
        if let Some(len) = resp.content_length() {
            bar.set_length(len);
        }
        let mut stream = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                format!(
                    "the download from the server was cut short (the package failed verification, its origin failed, or the connection broke; the server's log says which): {}",
                    e.without_url()
                )
            })?;
            n += chunk.len() as u64;
            bar.set_position(n);
        }
        // The body ends once the package is verified; the server files it away just after,
        // or finds it cannot (larger than its max_size, disk full). Ask without starting a
        // fetch (only-if-cached) until it is kept or known not to be.
        if is_sealed(url.as_str()) {
            if let Some(fresh) = current_url().await? {
                url = url::Url::parse(&fresh).map_err(|e| e.to_string())?;
            }
        }
        let deadline = Instant::now() + KEPT_WAIT;
        let mut pause = Duration::from_millis(20);
        loop {
            match self.kept(&url).await? {
                Kept::Yes => return Ok(Outcome::Fetched { bytes: n }),
                Kept::Filling if Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Kept::Filling => {
                    return Err(format!(
                        "downloaded and verified through the server, which had not kept it {} s later",
                        KEPT_WAIT.as_secs()
                    ))
                }
                Kept::No => return Err("downloaded and verified through the server, but the server could not keep it in its cache (larger than its max_size, or its disk is full; see its log)".into()),
                Kept::Unknown(s) => {
                    return Err(format!(
                        "downloaded through the server, which answered {s} when asked whether it kept the package"
                    ))
                }
            }
        }
    }

    /// Whether the server keeps the package at `url`, asked without starting a fetch:
    /// `HEAD` with `Cache-Control: only-if-cached` is a 200 when it does, else a 504 with
    /// `X-Cache: JOIN` (being fetched or filed away) or `MISS`.
    async fn kept(&self, url: &url::Url) -> Result<Kept, String> {
        let head = self
            .send(
                self.http
                    .head(url.clone())
                    .header(reqwest::header::CACHE_CONTROL, "only-if-cached"),
            )
            .await?;
        let joining = head.headers().get("x-cache").is_some_and(|v| v == "JOIN");
        Ok(match head.status() {
            s if s.is_success() => Kept::Yes,
            reqwest::StatusCode::GATEWAY_TIMEOUT if joining => Kept::Filling,
            reqwest::StatusCode::GATEWAY_TIMEOUT => Kept::No,
            other => Kept::Unknown(other),
        })
    }

    /// The `h1:` hash of the package at `url` (the registry documents list none): downloaded
    /// from the server into a temporary file and hashed.
    async fn download_h1(&self, url: &str) -> Option<String> {
        use tokio::io::AsyncWriteExt;
        let resp = self.get(url::Url::parse(url).ok()?).await.ok()?;
        let path = std::env::temp_dir().join(format!(
            "odtr-warm-{}-{:016x}.zip",
            std::process::id(),
            rand::random::<u64>()
        ));
        let hashed = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
                .ok()?;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                file.write_all(&chunk.ok()?).await.ok()?;
            }
            file.flush().await.ok()?;
            drop(file);
            let p = path.clone();
            tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(p).ok()?;
                crate::provider::hash::h1_from_reader(std::io::BufReader::new(f)).ok()
            })
            .await
            .ok()?
        }
        .await;
        let _ = std::fs::remove_file(&path);
        hashed
    }
}

async fn json_body(resp: reqwest::Response) -> Result<serde_json::Value, String> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| e.without_url().to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the server answered invalid JSON: {e}"))
}

/// Progress bars on a terminal, one line per package otherwise.
struct Ui {
    multi: Option<MultiProgress>,
    total: Option<ProgressBar>,
    /// What the total line adds up (terminal only).
    sums: Arc<Sums>,
    /// Refreshes the total line from the package bars.
    summer: Option<tokio::task::JoinHandle<()>>,
}

/// The packages in flight and those done, for the total line's bytes, speed and ETA.
#[derive(Default)]
struct Sums {
    active: Mutex<Vec<ProgressBar>>,
    done_bytes: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
    packages: std::sync::atomic::AtomicU64,
}

impl Sums {
    fn refresh(&self, total: &ProgressBar) {
        use std::sync::atomic::Ordering::Relaxed;
        let done = self.done_bytes.load(Relaxed);
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let (pos, len) = active.iter().fold((done, done), |(p, l), b| {
            (p + b.position(), l + b.length().unwrap_or(0))
        });
        // Packages not started yet count at the average size of those in flight, so the
        // ETA covers the whole run, not only what has started.
        let sized: Vec<u64> = active.iter().filter_map(|b| b.length()).collect();
        let started = self.done.load(Relaxed) + active.len() as u64;
        drop(active);
        let waiting = self.packages.load(Relaxed).saturating_sub(started);
        let len = match sized.len() as u64 {
            0 => len,
            n => len + waiting * (sized.iter().sum::<u64>() / n),
        };
        total.set_length(len.max(pos));
        total.set_position(pos);
        total.set_message(format!(
            "{}/{} packages",
            self.done.load(Relaxed),
            self.packages.load(Relaxed)
        ));
    }
}

impl Ui {
    fn new(jobs: usize) -> Ui {
        let sums = Arc::new(Sums::default());
        sums.packages
            .store(jobs as u64, std::sync::atomic::Ordering::Relaxed);
        if !std::io::stderr().is_terminal() {
            return Ui {
                multi: None,
                total: None,
                sums,
                summer: None,
            };
        }
        let multi = MultiProgress::new();
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta}, {msg}, {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        total.set_prefix("total");
        let summer = {
            let (sums, total) = (sums.clone(), total.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    sums.refresh(&total);
                }
            })
        };
        Ui {
            multi: Some(multi),
            total: Some(total),
            sums,
            summer: Some(summer),
        }
    }

    /// More packages to fetch, known once their requirement is resolved.
    fn add_jobs(&self, n: usize) {
        self.sums
            .packages
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn start(&self, label: &str) -> ProgressBar {
        match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:50} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(label.to_owned());
                self.sums
                    .active
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(bar.clone());
                bar
            }
            None => ProgressBar::hidden(),
        }
    }

    fn finish(&self, label: &str, bar: &ProgressBar, r: &Result<Outcome, String>) {
        let line = match r {
            Ok(Outcome::AlreadyCached) => format!("cached   {label}"),
            Ok(Outcome::Fetched { bytes }) => {
                format!("fetched  {label} ({})", format_size(*bytes))
            }
            Err(e) => format!("FAILED   {label}: {e}"),
        };
        if let Some(m) = &self.multi {
            use std::sync::atomic::Ordering::Relaxed;
            let mut active = self.sums.active.lock().unwrap_or_else(|p| p.into_inner());
            // A bar's message is its package's label, unique in a run.
            active.retain(|b| b.message() != bar.message());
            drop(active);
            let bytes = match r {
                Ok(Outcome::Fetched { bytes }) => *bytes,
                _ => 0,
            };
            self.sums.done_bytes.fetch_add(bytes, Relaxed);
            self.sums.done.fetch_add(1, Relaxed);
            bar.finish_and_clear();
            m.remove(bar);
        }
        self.line(&line);
    }

    /// A package reported fetched that failed a check afterwards (its lock-file hashes).
    fn failed(&self, label: &str, error: &str) {
        self.line(&format!("FAILED   {label}: {error}"));
    }

    fn line(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn done(&self) {
        if let Some(s) = &self.summer {
            s.abort();
        }
        if let Some(t) = &self.total {
            t.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_read_from_the_end_of_the_path() {
        let hex = "ab".repeat(32);
        // Names earlier in the path may read `sha256`.
        let u = url::Url::parse(&format!(
            "https://h/v1/modules/sha256/sha256/aws/download/sha256/{hex}/x.zip?t=secret"
        ))
        .unwrap();
        assert_eq!(digest_before_file_name(&u).unwrap().hex(), hex);
        let (d, t) = sums_reference(&format!(
            "/v1/providers/sha256/foo/1.0.0/sha256/{hex}/terraform-provider-foo_1.0.0_SHA256SUMS?t=tok"
        ))
        .unwrap();
        assert_eq!((d.hex(), t.as_deref()), (hex.as_str(), Some("tok")));
        let err = sums_reference("/v1/providers/a/b/1.0.0/nope?t=secret").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert!(is_sealed("https://h/x.zip?t=abc"));
        assert!(!is_sealed("https://h/x.zip"));
    }

    #[test]
    fn sums_references() {
        let hex = "ab".repeat(32);
        let (d, t) = sums_reference(&format!(
            "/v1/providers/acme/foo/1.0.0/sha256/{hex}/terraform-provider-foo_1.0.0_SHA256SUMS?t=abc-_1"
        ))
        .unwrap();
        assert_eq!(d.hex(), hex);
        assert_eq!(t.as_deref(), Some("abc-_1"));
        let (_, t) = sums_reference(&format!(
            "/v1/providers/acme/foo/1.0.0/sha256/{hex}/terraform-provider-foo_1.0.0_SHA256SUMS"
        ))
        .unwrap();
        assert_eq!(t, None);
        assert!(sums_reference("/v1/providers/acme/foo/1.0.0/SHA256SUMS").is_err());
    }

    #[test]
    fn module_specs() {
        let r = parse_module_spec("acme/net/aws@~> 1.0").unwrap();
        assert_eq!(r.module.to_string(), "acme/net/aws");
        assert!(r.constraints.allows(&Version::new(1, 4, 0)));
        assert!(!r.constraints.allows(&Version::new(2, 0, 0)));
        let r = parse_module_spec("registry.example.com/acme/net/aws").unwrap();
        assert_eq!(r.module.to_string(), "acme/net/aws");
        assert!(r.constraints.is_any());
        assert!(parse_module_spec("acme/net").is_err());
        assert!(parse_module_spec("acme/net/aws@~>").is_err());
    }

    #[test]
    fn registry_requirements_take_the_registry_host_only() {
        let dir = std::env::temp_dir().join(format!(
            "odtr-warm-unit-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join(".terraform.lock.hcl");
        std::fs::write(
            &lock,
            "provider \"registry.example.com/acme/foo\" {\n  version = \"1.0.0\"\n  hashes = [\"zh:00\"]\n}\nprovider \"registry.terraform.io/hashicorp/null\" {\n  version = \"3.0.0\"\n}\n",
        )
        .unwrap();
        let sel = Selection {
            mirror: None,
            platforms: Vec::new(),
            lock_files: vec![lock],
            dirs: Vec::new(),
            all_matching: false,
            specs: vec!["other/bar@>= 2".into(), "Some.Host/acme/baz".into()],
        };
        assert!(matches!(
            registry_requirements(&sel, None),
            Err(WarmError::Usage(_))
        ));
        let reqs = registry_requirements(&sel, Some("Registry.Example.com")).unwrap();
        let names: Vec<String> = reqs.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(names, ["other/bar", "acme/baz", "acme/foo"]);
        assert!(reqs.iter().all(|r| r.address.hostname == THIS_HOST));
        assert_eq!(reqs[2].locked_hashes, ["zh:00"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
