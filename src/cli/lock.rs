//! `lock`: write or complete a `.terraform.lock.hcl` with `h1:` and `zh:` hashes for every
//! requested platform, from the cache. Terraform itself records only the local platform's
//! hash when installing from a mirror, which breaks lock files on mixed-OS teams and CI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::warm::{
    mirror_name, plan, platform_selection, warm_first, Backend, CachedH1, Job, Selection, WarmError,
};
use crate::config::Config;
use crate::provider::constraints::Constraints;
use crate::provider::hash::zh_from_sha256_hex;
use crate::provider::requirements::{self, Requirement};
use crate::provider::ProviderAddress;

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// The provider_mirror whose cache to read (default: the only one configured).
    #[arg(long)]
    pub mirror: Option<String>,
    /// OS_ARCH to record hashes for (repeatable); `all` for every platform the version has
    /// (each must be in the cache). Default: this host's.
    #[arg(long = "platform", value_name = "OS_ARCH")]
    pub platforms: Vec<String>,
    /// The configuration directory whose required_providers to lock and whose
    /// .terraform.lock.hcl to write (default: the current directory).
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// Lock these instead of the configuration's providers: ADDR@VERSION.
    #[arg(value_name = "ADDR@VERSION")]
    pub specs: Vec<String>,
}

struct Locked {
    version: semver::Version,
    constraints: Option<String>,
    hashes: BTreeSet<String>,
}

pub async fn run(config: Config, args: LockArgs) -> Result<(), WarmError> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let lock_path = dir.join(".terraform.lock.hcl");
    let sel = Selection {
        mirror: args.mirror.clone(),
        platforms: args.platforms.clone(),
        lock_files: Vec::new(),
        dirs: Vec::new(),
        all_matching: false,
        specs: args.specs.clone(),
    };
    let mirror = mirror_name(&config, &sel)?;
    let platforms = platform_selection(&args.platforms)?;

    // What is locked already: kept, and its versions preferred.
    let mut locked: BTreeMap<ProviderAddress, Locked> = BTreeMap::new();
    if lock_path.exists() {
        let mut constraints = requirements::lock_file_constraints(&lock_path)?;
        for r in requirements::from_lock_file(&lock_path)? {
            locked.insert(
                r.address.clone(),
                Locked {
                    version: exact_version(&r).ok_or_else(|| {
                        WarmError::Usage(format!(
                            "{}: cannot read the version of {}",
                            lock_path.display(),
                            r.address
                        ))
                    })?,
                    constraints: constraints.remove(&r.address),
                    hashes: r.locked_hashes.into_iter().collect(),
                },
            );
        }
    }
    let from_config = args.specs.is_empty();
    let reqs: Vec<(Requirement, Option<String>)> = if from_config {
        let found = requirements::from_config_dir(&dir)?;
        if !found.not_installed.is_empty() {
            // A lock file without those modules' providers would be incomplete.
            return Err(WarmError::Incomplete {
                what: "the lock file was not written",
                failures: found
                    .not_installed
                    .iter()
                    .map(|m| format!("{m} is not installed, so its providers cannot be read; run `terraform init` or `terraform get` in {} first", dir.display()))
                    .collect(),
            });
        }
        found
            .requirements
            .into_iter()
            .map(|r| {
                let text = (!r.constraints.is_any()).then(|| r.constraints.normalized());
                (r, text)
            })
            .collect()
    } else {
        args.specs
            .iter()
            .map(|s| requirements::parse_spec(s).map(|r| (r, None)))
            .collect::<Result<_, _>>()?
    };
    if reqs.is_empty() {
        return Err(WarmError::Usage(format!(
            "no providers to lock: {} declares no required_providers; name them as ADDR@VERSION",
            dir.display()
        )));
    }

    let backend = Backend::offline(&config, &mirror, Some("lock reads the cache")).await?;
    let mut failures = Vec::new();
    for (mut req, constraints_text) in reqs {
        // Keep a locked version that still satisfies the constraints, as terraform init does.
        if let Some(l) = locked.get(&req.address) {
            if req.constraints.allows(&l.version) {
                req.constraints = Constraints::parse(&format!("= {}", l.version))
                    .expect("a version is a constraint");
            }
        }
        let jobs = match plan(&backend, &req, &platforms, false).await {
            // A provider is locked for every requested platform or not at all.
            Ok(p) if !p.missing.is_empty() => {
                failures.extend(p.missing);
                continue;
            }
            Ok(p) => p.jobs,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let Some(version) = jobs.first().map(|j| j.version.clone()) else {
            failures.push(format!(
                "{}: no package to lock (the chosen version lists no platform)",
                req.address
            ));
            continue;
        };
        let entry = locked.entry(req.address.clone()).or_insert_with(|| Locked {
            version: version.clone(),
            constraints: None,
            hashes: BTreeSet::new(),
        });
        // Each requested package is looked up once, for both checks below.
        let mut requested = Vec::with_capacity(jobs.len());
        for job in jobs {
            let cached = backend.cached_h1(&job).await;
            requested.push((job, cached));
        }
        if entry.version == version && !entry.hashes.is_empty() {
            if let Err(e) = check_recorded_hashes(
                &backend,
                &entry.hashes,
                &req.address,
                &version,
                &requested,
                &lock_path,
            )
            .await
            {
                failures.push(e);
                continue;
            }
        }
        if entry.version != version {
            // A new version: the old hashes are for the old one.
            entry.version = version.clone();
            entry.hashes.clear();
        }
        if from_config {
            // The configuration's constraints, as terraform providers lock writes them: none
            // when it sets no version.
            entry.constraints = constraints_text;
        } else if let Some(c) = entry.constraints.as_deref() {
            // An explicit ADDR@VERSION outside the recorded constraints would make an entry
            // that contradicts itself, which terraform init refuses.
            if Constraints::parse(c).is_ok_and(|c| !c.allows(&version)) {
                failures.push(format!(
                    "{} {version}: outside the constraints the lock file records ({c}); change the configuration's version constraint and run `lock --dir` instead",
                    req.address
                ));
                continue;
            }
        }
        for (job, cached) in requested {
            match cached {
                Ok(Some(h1)) => {
                    if let Some(h1) = h1 {
                        entry.hashes.insert(h1);
                    }
                    entry.hashes.insert(zh_from_sha256_hex(job.digest.hex()));
                }
                Ok(None) => failures.push(warm_first(&config, &mirror, &job)),
                Err(e) => failures.push(e),
            }
        }
    }
    if !failures.is_empty() {
        return Err(WarmError::Incomplete {
            what: "the lock file was not written",
            failures,
        });
    }
    let text = render(&locked);
    let tmp = lock_path.with_extension("hcl.partial");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &lock_path))
        .map_err(|e| WarmError::Setup(format!("{}: {e}", lock_path.display())))?;
    println!(
        "Wrote {} ({} provider(s)).",
        lock_path.display(),
        locked.len()
    );
    Ok(())
}

/// Hashes a lock file records for the version it locks must name a package of that version
/// in the cache, as terraform providers lock insists: a lock file naming other builds (or
/// forged hashes) is refused, not completed. A hash is per platform, so any cached platform
/// will do: the `requested` ones (already looked up) first, then the version's others.
async fn check_recorded_hashes(
    backend: &Backend,
    recorded: &BTreeSet<String>,
    address: &ProviderAddress,
    version: &semver::Version,
    requested: &[(Job, CachedH1)],
    lock_path: &Path,
) -> Result<(), String> {
    let mut uncached = Vec::new();
    let mut error = None;
    // Whether a looked-up package is named by the recorded hashes (its zh: is its digest).
    let mut names = |job: &Job, cached: &CachedH1| match cached {
        Ok(Some(h1)) => {
            recorded.contains(&zh_from_sha256_hex(job.digest.hex()))
                || h1.as_ref().is_some_and(|h| recorded.contains(h))
        }
        Ok(None) => {
            uncached.push(job.platform.to_string());
            false
        }
        Err(e) => {
            error = Some(e.clone());
            false
        }
    };
    if requested.iter().any(|(job, cached)| names(job, cached)) {
        return Ok(());
    }
    let others = backend
        .packages(address, version)
        .await
        .map_err(|e| format!("{address} {version}: {e}"))?;
    for listed in others {
        if requested.iter().any(|(job, _)| job.digest == listed.1) {
            continue;
        }
        let job = Job::listed(address, version, listed);
        let cached = backend.cached_h1(&job).await;
        if names(&job, &cached) {
            return Ok(());
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    Err(if uncached.is_empty() {
        format!(
            "{address} {version}: no package in the cache matches the hashes {} records for this version; it names other packages (fix or remove its entry)",
            lock_path.display()
        )
    } else {
        format!(
            "{address} {version}: no cached package matches the hashes {} records for this version; they may be for a platform not in the cache ({}): warm it and run lock again",
            lock_path.display(),
            uncached.join(", ")
        )
    })
}

fn exact_version(r: &Requirement) -> Option<semver::Version> {
    // from_lock_file turns `version = "X"` into the constraint `= X`.
    let text = r.constraints.to_string();
    semver::Version::parse(text.trim_start_matches('=').trim()).ok()
}

/// The lock file exactly as Terraform formats it.
fn render(locked: &BTreeMap<ProviderAddress, Locked>) -> String {
    let mut out = String::from("# This file is maintained automatically by \"terraform init\".\n# Manual edits may be lost in future updates.\n");
    for (addr, l) in locked {
        out.push_str(&format!("\nprovider \"{addr}\" {{\n"));
        match &l.constraints {
            Some(c) => {
                out.push_str(&format!("  version     = \"{}\"\n", l.version));
                out.push_str(&format!("  constraints = \"{}\"\n", c));
            }
            None => out.push_str(&format!("  version = \"{}\"\n", l.version)),
        }
        out.push_str("  hashes = [\n");
        for h in &l.hashes {
            out.push_str(&format!("    \"{h}\",\n"));
        }
        out.push_str("  ]\n}\n");
    }
    out
}
