//! `export DIR`: write a static network mirror from the cache — the layout `terraform
//! providers mirror` produces (`HOST/NS/TYPE/index.json`, `VERSION.json`, the zips) — for
//! any static web server or a `filesystem_mirror`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::warm::{
    gather_requirements, mirror_name, plan, platform_selection, warm_first, Backend, Selection,
    WarmError,
};
use crate::config::Config;
use crate::provider::hash::zh_from_sha256_hex;
use crate::provider::ProviderAddress;
use crate::store::hash_file;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The directory to write the static mirror into (created if needed).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub selection: Selection,
}

pub async fn run(config: Config, args: ExportArgs) -> Result<(), WarmError> {
    let sel = &args.selection;
    let mirror = mirror_name(&config, sel)?;
    let reqs = gather_requirements(sel)?;
    if reqs.is_empty() {
        return Err(WarmError::Usage(
            "nothing to export: give ADDR[@CONSTRAINTS] arguments, --lock-file or --dir".into(),
        ));
    }
    let platforms = platform_selection(&sel.platforms)?;
    let backend = Backend::offline(&config, &mirror, None).await?;
    let mut failures = Vec::new();
    // (address, version) → platform → what to export
    let mut planned: BTreeMap<(ProviderAddress, semver::Version), BTreeMap<String, Export>> =
        BTreeMap::new();
    for req in &reqs {
        let jobs = match plan(&backend, req, &platforms, sel.all_matching).await {
            Ok(p) => {
                failures.extend(p.missing);
                p.jobs
            }
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        for job in jobs {
            let Some(blob) = backend.cached(&job.digest) else {
                failures.push(warm_first(&config, &mirror, &job));
                continue;
            };
            let a = &job.address;
            let file_name = format!(
                "terraform-provider-{}_{}_{}.zip",
                a.type_name, job.version, job.platform
            );
            let mut hashes: Vec<String> = backend.h1(&job).await.into_iter().collect();
            hashes.push(zh_from_sha256_hex(job.digest.hex()));
            planned
                .entry((a.clone(), job.version.clone()))
                .or_default()
                .insert(
                    job.platform.to_string(),
                    Export {
                        file_name,
                        hashes,
                        file: blob.file,
                        hex: job.digest.hex().to_owned(),
                    },
                );
        }
    }
    // Per version: the documents there are checked first, so a refusal leaves no new file
    // behind; a package that cannot be copied is left out of the documents.
    let (mut exported, mut written) = (0, 0);
    for ((addr, version), exports) in planned {
        let dir = args
            .dir
            .join(&addr.hostname)
            .join(&addr.namespace)
            .join(&addr.type_name);
        let archives: Archives = exports
            .iter()
            .map(|(p, e)| (p.clone(), (e.file_name.clone(), e.hashes.clone())))
            .collect();
        if let Err(e) = merged_docs(&dir, &version, &archives) {
            failures.push(format!("{addr} {version}: {e}"));
            continue;
        }
        let (mut copied, mut new_files) = (Archives::new(), 0);
        for (platform, e) in exports {
            match copy_if_absent(&e.file, &dir, &e.file_name, &e.hex) {
                Ok(new) => {
                    new_files += usize::from(new);
                    copied.insert(platform, (e.file_name, e.hashes));
                }
                Err(e) => failures.push(e),
            }
        }
        if copied.is_empty() {
            continue;
        }
        match write_version_docs(&dir, &version, &copied) {
            Ok(()) => {
                exported += copied.len();
                written += new_files;
            }
            Err(e) => failures.push(format!("{addr} {version}: {e}")),
        }
    }
    println!(
        "Exported {exported} package(s) ({written} written, {} already there) into {}.",
        exported - written,
        args.dir.display()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(WarmError::Incomplete {
            what: "the export is incomplete",
            failures,
        })
    }
}

/// platform → (file name, hashes) of one version.
type Archives = BTreeMap<String, (String, Vec<String>)>;

/// One package to export, read from the cache.
struct Export {
    file_name: String,
    hashes: Vec<String>,
    file: std::sync::Arc<std::fs::File>,
    hex: String,
}

/// Copies the stored package unless `dir/name` already holds it; refuses different content.
fn copy_if_absent(src: &std::fs::File, dir: &Path, name: &str, hex: &str) -> Result<bool, String> {
    let dest = dir.join(name);
    if dest.exists() {
        return match hash_file(&dest) {
            Ok(h) if h == hex => Ok(false),
            Ok(_) => Err(format!(
                "{} exists with different content; refusing to overwrite it",
                dest.display()
            )),
            Err(e) => Err(format!("{}: {e}", dest.display())),
        };
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.partial"));
    let result = (|| -> std::io::Result<()> {
        let mut out = std::fs::File::create(&tmp)?;
        let mut input = src.try_clone()?;
        std::io::Seek::rewind(&mut input)?;
        std::io::copy(&mut input, &mut out)?;
        out.sync_all()?;
        std::fs::rename(&tmp, &dest)
    })();
    result.map(|_| true).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", dest.display())
    })
}

/// Writes (or extends) `VERSION.json` and `index.json`, never changing what is there.
fn write_version_docs(
    dir: &Path,
    version: &semver::Version,
    archives: &Archives,
) -> Result<(), String> {
    let (doc, index) = merged_docs(dir, version, archives)?;
    write_json(&dir.join(format!("{version}.json")), &doc)?;
    write_json(&dir.join("index.json"), &index)
}

/// `VERSION.json` and `index.json` in `dir` with `archives` of `version` added; an error if
/// `VERSION.json` lists another package for one of their platforms, or if either cannot be
/// read. Nothing is written.
fn merged_docs(
    dir: &Path,
    version: &semver::Version,
    archives: &Archives,
) -> Result<(serde_json::Value, serde_json::Value), String> {
    let index_path = dir.join("index.json");
    let mut index =
        read_json(&index_path)?.unwrap_or_else(|| serde_json::json!({ "versions": {} }));
    index["versions"]
        .as_object_mut()
        .ok_or_else(|| format!("{} has no versions object", index_path.display()))?
        .insert(version.to_string(), serde_json::json!({}));
    let version_path = dir.join(format!("{version}.json"));
    let mut doc =
        read_json(&version_path)?.unwrap_or_else(|| serde_json::json!({ "archives": {} }));
    let existing = doc["archives"]
        .as_object_mut()
        .ok_or_else(|| format!("{} has no archives object", version_path.display()))?;
    for (platform, (url, hashes)) in archives {
        let entry = serde_json::json!({ "url": url, "hashes": hashes });
        match existing.get(platform) {
            Some(old) if old["url"] != entry["url"] || !same_package(&old["hashes"], hashes) => {
                return Err(format!(
                    "{} already lists a different {platform} package; refusing to overwrite it",
                    version_path.display()
                ))
            }
            _ => {
                existing.insert(platform.clone(), entry);
            }
        }
    }
    Ok((doc, index))
}

/// Whether a listed entry's hashes can name the package whose hashes are `ours`: for each
/// kind both list (`h1:`, `zh:`), they share one. An entry without hashes says nothing.
fn same_package(listed: &serde_json::Value, ours: &[String]) -> bool {
    let listed: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|h| h.as_str()).collect())
        .unwrap_or_default();
    ["h1:", "zh:"].iter().all(|kind| {
        let theirs: Vec<&&str> = listed.iter().filter(|h| h.starts_with(kind)).collect();
        theirs.is_empty()
            || ours
                .iter()
                .filter(|h| h.starts_with(kind))
                .any(|h| theirs.iter().any(|t| **t == h.as_str()))
            || !ours.iter().any(|h| h.starts_with(kind))
    })
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), String> {
    let tmp = path.with_extension("json.partial");
    let body = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    std::fs::write(&tmp, body)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}
