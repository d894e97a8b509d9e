//! `warm`: prefetch providers into the cache, from specs, lock files or configurations.
//!
//! The cache has one owner. When no server runs, warm opens the cache itself; when a server
//! owns it, warm asks that server for the same documents and packages over its own mirror
//! endpoints (on loopback, pinned to the configured certificate), so the server fills it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use semver::Version;

use crate::config::units::format_size;
use crate::config::Config;
use crate::http::AppState;
use crate::mirror::MirrorService;
use crate::oci::{Credential, Digest};
use crate::provider::requirements::{self, Requirement};
use crate::provider::{ProviderAddress, TargetPlatform};
use crate::store::{DirLock, Lookup};

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
    /// Providers as ADDR or ADDR@CONSTRAINTS, e.g. hashicorp/aws@"~> 5.0".
    #[arg(value_name = "ADDR[@CONSTRAINTS]")]
    pub specs: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct WarmArgs {
    #[command(flatten)]
    pub selection: Selection,
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
}

/// One package to bring into the cache.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub address: ProviderAddress,
    pub version: Version,
    pub platform: TargetPlatform,
    pub digest: Digest,
    /// The archive URL (server mode), relative to the VERSION.json URL.
    url: Option<String>,
    pub locked_hashes: Vec<String>,
}

impl Job {
    fn label(&self) -> String {
        format!("{} {} {}", self.address, self.version, self.platform)
    }
}

enum Outcome {
    AlreadyCached,
    Fetched { bytes: u64 },
}

/// How warm reaches the cache.
pub(crate) enum Backend {
    Direct {
        mirror: Arc<MirrorService>,
        cred: Credential,
    },
    Server(ServerClient),
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
        (None, _) => Err(WarmError::Usage(
            "several provider_mirror blocks are configured: choose one with --mirror NAME".into(),
        )),
    }
}

pub async fn run(config: Config, args: WarmArgs) -> Result<(), WarmError> {
    let started = Instant::now();
    let sel = &args.selection;
    let mirror_name = mirror_name(&config, sel)?;
    let reqs = gather_requirements(sel)?;
    if reqs.is_empty() {
        return Err(WarmError::Usage(
            "nothing to warm: give ADDR[@CONSTRAINTS] arguments, --lock-file or --dir".into(),
        ));
    }
    let platforms = platform_selection(&sel.platforms)?;
    let mirror_config = config.mirror(&mirror_name).expect("checked above").clone();
    let cred = crate::oci::credentials::credential_for(&mirror_config.origin_url)
        .map_err(|e| WarmError::Setup(e.to_string()))?;

    let backend = match DirLock::owner(&config.cache.directory) {
        Some(owner) => {
            eprintln!(
                "The cache {} is owned by a running server ({owner}); warming through it.",
                config.cache.directory.display()
            );
            Backend::Server(ServerClient::new(&config, &mirror_name, &cred)?)
        }
        None => {
            let state =
                AppState::from_config(&config).map_err(|e| WarmError::Setup(e.to_string()))?;
            let mirror = state
                .mirrors
                .get(&mirror_name)
                .cloned()
                .expect("mirror exists");
            Backend::Direct { mirror, cred }
        }
    };

    // Plan: resolve versions and packages first, so failures are known before any download.
    let mut failures = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut planned = 0;
    for req in &reqs {
        match plan(&backend, req, &platforms, sel.all_matching).await {
            Ok(j) => {
                for job in j {
                    // The same package asked for by several sources is fetched once, checked
                    // against every lock file's hashes.
                    match jobs.iter_mut().find(|o| {
                        o.address == job.address
                            && o.version == job.version
                            && o.platform == job.platform
                    }) {
                        Some(o) => o.locked_hashes.extend(job.locked_hashes),
                        None => jobs.push(job),
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
    let results: Vec<(Job, Result<Outcome, String>)> =
        futures::stream::iter(jobs.into_iter().map(|job| {
            let ui = &ui;
            let backend = &backend;
            async move {
                let bar = ui.start(&job);
                let r = fetch(backend, &job, &bar).await;
                ui.finish(&job, &bar, &r);
                (job, r)
            }
        }))
        .buffer_unordered(usize::from(args.jobs))
        .collect()
        .await;
    ui.done();

    let (mut fetched, mut cached, mut bytes) = (0usize, 0usize, 0u64);
    for (job, r) in &results {
        match r {
            Ok(Outcome::AlreadyCached) => cached += 1,
            Ok(Outcome::Fetched { bytes: b }) => {
                fetched += 1;
                bytes += b;
            }
            Err(e) => failures.push(format!("{}: {e}", job.label())),
        }
    }
    if let Backend::Direct { mirror, .. } = &backend {
        let _ = mirror.store().flush();
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
            "Warmed mirror {mirror_name:?}: {fetched} fetched ({}), {cached} already cached, {} failed, in {:.1}s.",
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
        all.extend(requirements::from_config_dir(d)?);
    }
    // Each source is its own requirement: two lock files pinning different versions want
    // both versions, not a version satisfying both. Exact repeats are dropped.
    let mut unique: Vec<Requirement> = Vec::new();
    for r in all {
        if !unique.contains(&r) {
            unique.push(r);
        }
    }
    Ok(unique)
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

pub(crate) async fn plan(
    backend: &Backend,
    req: &Requirement,
    platforms: &Option<Vec<TargetPlatform>>,
    all_matching: bool,
) -> Result<Vec<Job>, String> {
    let addr = &req.address;
    let mut versions = backend
        .versions(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    versions.sort();
    let chosen: Vec<Version> = if all_matching {
        versions
            .iter()
            .filter(|v| req.constraints.allows(v))
            .cloned()
            .collect()
    } else {
        req.constraints
            .newest(&versions)
            .cloned()
            .into_iter()
            .collect()
    };
    if chosen.is_empty() {
        let available: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
        return Err(format!(
            "{addr}: no version matches {} (available: {})",
            req.constraints,
            if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            }
        ));
    }
    let mut jobs = Vec::new();
    for version in chosen {
        let packages = backend
            .packages(addr, &version)
            .await
            .map_err(|e| format!("{addr} {version}: {e}"))?;
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
                    return Err(format!(
                        "{addr} {version} has no package for {platform} (it has: {})",
                        has.join(", ")
                    ));
                }
            }
        }
    }
    Ok(jobs)
}

async fn fetch(backend: &Backend, job: &Job, bar: &ProgressBar) -> Result<Outcome, String> {
    let outcome = backend.fetch(job, bar).await?;
    if !job.locked_hashes.is_empty() {
        let h1 = backend.h1(job).await;
        let zh = crate::provider::hash::zh_from_sha256_hex(job.digest.hex());
        let matches = job.locked_hashes.contains(&zh)
            || h1.as_ref().is_some_and(|h| job.locked_hashes.contains(h));
        if !matches {
            return Err(format!(
                "the package (zh {zh}{}) matches none of the hashes the lock file records for {}",
                h1.map(|h| format!(", {h}")).unwrap_or_default(),
                job.address
            ));
        }
    }
    Ok(outcome)
}

impl Backend {
    /// The cache opened by this process, in offline mode: answers come from the cache only.
    pub(crate) fn offline(config: &Config, mirror: &str) -> Result<Backend, WarmError> {
        let mut config = config.clone();
        config.server.offline = true;
        if let Some(owner) = DirLock::owner(&config.cache.directory) {
            return Err(WarmError::Setup(format!(
                "the cache {} is in use by the server ({owner}); stop it first",
                config.cache.directory.display()
            )));
        }
        let state = AppState::from_config(&config).map_err(|e| WarmError::Setup(e.to_string()))?;
        let mirror = state.mirrors.get(mirror).cloned().expect("mirror exists");
        Ok(Backend::Direct {
            mirror,
            cred: Credential::Anonymous,
        })
    }

    /// The stored package file and its metadata (direct backends only).
    pub(crate) fn cached(&self, digest: &Digest) -> Option<crate::store::CachedBlob> {
        match self {
            Backend::Direct { mirror, .. } => mirror.store().cached(digest),
            Backend::Server(_) => None,
        }
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
        }
    }

    /// (platform, digest, archive URL in server mode)
    async fn packages(
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
        }
    }

    async fn fetch(&self, job: &Job, bar: &ProgressBar) -> Result<Outcome, String> {
        match self {
            Backend::Direct { mirror, cred } => {
                match mirror.warm_package(&job.address, &job.digest, cred) {
                    Lookup::Hit(_) => Ok(Outcome::AlreadyCached),
                    Lookup::Fill { fill, .. } => {
                        let wait = fill.finished();
                        tokio::pin!(wait);
                        loop {
                            tokio::select! {
                                r = &mut wait => {
                                    let size = r.map_err(|e| e.to_string())?;
                                    if mirror.store().meta(&job.digest).is_none() {
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
                }
            }
            Backend::Server(s) => s.fetch(job, bar).await,
        }
    }

    async fn h1(&self, job: &Job) -> Option<String> {
        match self {
            Backend::Direct { mirror, .. } => mirror.store().meta(&job.digest).and_then(|m| m.h1),
            Backend::Server(s) => s.h1(job).await,
        }
    }
}

/// Talks to the running server that owns the cache, over its mirror endpoints on loopback.
pub(crate) struct ServerClient {
    http: reqwest::Client,
    base: url::Url,
    authorization: Option<String>,
    pinned: Option<Vec<u8>>,
}

impl ServerClient {
    fn new(config: &Config, mirror: &str, cred: &Credential) -> Result<ServerClient, WarmError> {
        // The address the server actually bound (the configured port may be 0).
        let recorded = std::fs::read_to_string(
            config
                .cache
                .directory
                .join(crate::http::SERVER_ADDRESS_FILE),
        )
        .ok()
        .and_then(|s| s.trim().parse::<std::net::SocketAddr>().ok());
        let mut addr = recorded.unwrap_or(config.server.listen_addr);
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
        let base = url::Url::parse(&format!("{scheme}://{host}/{mirror}/"))
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
            base,
            authorization,
            pinned,
        })
    }

    async fn get(&self, url: url::Url) -> Result<reqwest::Response, String> {
        self.request(self.http.get(url)).await
    }

    async fn request(&self, mut req: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
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
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("the server answered {status}: {}", body.trim()));
        }
        Ok(resp)
    }

    fn url(&self, path: &str) -> Result<url::Url, String> {
        self.base.join(path).map_err(|e| e.to_string())
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

    async fn fetch(&self, job: &Job, bar: &ProgressBar) -> Result<Outcome, String> {
        let url = job.url.as_deref().ok_or("no archive URL")?;
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        // A HEAD says whether the server holds it (X-Cache: HIT); on a miss it has started
        // the fetch, which the GET below joins.
        let head = self.request(self.http.head(parsed.clone())).await?;
        if head.headers().get("x-cache").is_some_and(|v| v == "HIT") {
            return Ok(Outcome::AlreadyCached);
        }
        let url = job.url.as_deref().ok_or("no archive URL")?;
        let resp = self
            .get(url::Url::parse(url).map_err(|e| e.to_string())?)
            .await?;
        if let Some(len) = resp.content_length() {
            bar.set_length(len);
        }
        let mut stream = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("download interrupted: {}", e.without_url()))?;
            n += chunk.len() as u64;
            bar.set_position(n);
        }
        Ok(Outcome::Fetched { bytes: n })
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
}

impl Ui {
    fn new(jobs: usize) -> Ui {
        if !std::io::stderr().is_terminal() {
            return Ui {
                multi: None,
                total: None,
            };
        }
        let multi = MultiProgress::new();
        let total = multi.add(ProgressBar::new(jobs as u64));
        total.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} packages, {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        total.set_prefix("total");
        Ui {
            multi: Some(multi),
            total: Some(total),
        }
    }

    fn start(&self, job: &Job) -> ProgressBar {
        match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:50} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(job.label());
                bar
            }
            None => ProgressBar::hidden(),
        }
    }

    fn finish(&self, job: &Job, bar: &ProgressBar, r: &Result<Outcome, String>) {
        let line = match r {
            Ok(Outcome::AlreadyCached) => format!("cached   {}", job.label()),
            Ok(Outcome::Fetched { bytes }) => {
                format!("fetched  {} ({})", job.label(), format_size(*bytes))
            }
            Err(e) => format!("FAILED   {}: {e}", job.label()),
        };
        match &self.multi {
            Some(m) => {
                bar.finish_and_clear();
                m.remove(bar);
                let _ = m.println(line);
                if let Some(t) = &self.total {
                    t.inc(1);
                }
            }
            None => eprintln!("{line}"),
        }
    }

    fn done(&self) {
        if let Some(t) = &self.total {
            t.finish_and_clear();
        }
    }
}
