//! Provider packages on disk, found and checked before anything is published:
//! - a directory written by `terraform providers mirror` (`HOST/NAMESPACE/TYPE/*.zip` plus the
//!   `index.json` and `VERSION.json` documents, whose hashes are checked),
//! - one provider directory inside such a mirror (`.../HOST/NAMESPACE/TYPE`),
//! - a release directory (`terraform-provider-TYPE_VERSION_OS_ARCH.zip` files and the
//!   `terraform-provider-TYPE_VERSION_SHA256SUMS` file they are checked against), with `--address`,
//! - single zip files, with `--address` (and `--version` unless the file name has it).
//!
//! Every zip is opened and hashed (`zh:` and `h1:`), so a corrupt package is refused here.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::hash::{self, HashError};
use super::{ProviderAddress, TargetPlatform};
use crate::oci::Digest;

/// One checked package file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    pub platform: TargetPlatform,
    pub path: PathBuf,
    pub file_name: String,
    pub size: u64,
    /// sha256 of the zip: the OCI layer digest, and Terraform's `zh:` hash.
    pub digest: Digest,
    /// Terraform's `h1:` hash of the zip's contents.
    pub h1: String,
}

/// All packages of one provider version, sorted by platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRelease {
    pub address: ProviderAddress,
    pub version: semver::Version,
    pub packages: Vec<PackageFile>,
    /// Plugin protocol versions (`5.0`, `6.0`) the provider speaks, when known.
    pub protocols: Vec<String>,
    /// The author's signed SHA256SUMS, to be published with the version.
    pub signatures: Option<AuthorSignatures>,
}

/// A release's SHA256SUMS as its author signed it, with the signature and public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorSignatures {
    pub sums: Vec<u8>,
    /// A binary (or armored) detached OpenPGP signature of `sums`.
    pub signature: Vec<u8>,
    /// The author's ASCII-armored public key.
    pub public_key: String,
}

/// What a release directory may hold beside its packages: the author's detached signature
/// of SHA256SUMS (`terraform-provider-TYPE_VERSION_SHA256SUMS.sig`) and the registry manifest
/// declaring protocol versions (`terraform-provider-TYPE_VERSION_manifest.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseExtras {
    pub sums: Option<(PathBuf, Vec<u8>)>,
    pub signature: Option<(PathBuf, Vec<u8>)>,
    pub protocols: Option<Vec<String>>,
}

/// Largest SHA256SUMS, signature or manifest read from a release directory.
const MAX_EXTRA_FILE: u64 = 1 << 20;

/// Reads the [`ReleaseExtras`] of `type_name` `version` in `dir`, if it has any.
pub fn release_extras(
    dir: &Path,
    type_name: &str,
    version: &semver::Version,
) -> Result<ReleaseExtras, SourceError> {
    let prefix = format!("terraform-provider-{type_name}_{version}");
    let read = |suffix: &str| -> Result<Option<(PathBuf, Vec<u8>)>, SourceError> {
        let path = dir.join(format!("{prefix}_{suffix}"));
        if !path.is_file() {
            return Ok(None);
        }
        let io = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        let len = std::fs::metadata(&path).map_err(io)?.len();
        if len > MAX_EXTRA_FILE {
            return Err(SourceError::Io {
                path: path.clone(),
                source: std::io::Error::other(format!("larger than {MAX_EXTRA_FILE} bytes")),
            });
        }
        let bytes = std::fs::read(&path).map_err(io)?;
        Ok(Some((path, bytes)))
    };
    let protocols = match read("manifest.json")? {
        None => None,
        Some((path, bytes)) => {
            #[derive(serde::Deserialize)]
            struct Manifest {
                metadata: Metadata,
            }
            #[derive(serde::Deserialize)]
            struct Metadata {
                protocol_versions: Vec<String>,
            }
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| SourceError::Io {
                path: path.clone(),
                source: std::io::Error::other(format!(
                    "not a registry manifest ({{\"version\":1,\"metadata\":{{\"protocol_versions\":[\"5.0\"]}}}}): {e}"
                )),
            })?;
            Some(m.metadata.protocol_versions)
        }
    };
    Ok(ReleaseExtras {
        sums: read("SHA256SUMS")?,
        signature: read("SHA256SUMS.sig")?,
        protocols,
    })
}

/// Settings from the command line that some kinds of source need.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// Required for release directories and single zips.
    pub address: Option<ProviderAddress>,
    /// For single zips whose name does not carry the version.
    pub version: Option<semver::Version>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no provider packages found; expected a `terraform providers mirror` directory (HOST/NAMESPACE/TYPE/*.zip), a release directory of terraform-provider-TYPE_VERSION_OS_ARCH.zip files with their SHA256SUMS, or zip files")]
    Empty { path: PathBuf },
    #[error("{path}: pushing a release directory or a zip file needs the provider's address: pass --address HOST/NAMESPACE/TYPE")]
    NeedsAddress { path: PathBuf },
    #[error("{path}: the file name does not say the provider version: pass --version")]
    NeedsVersion { path: PathBuf },
    #[error(
        "{path}: {reason}; provider packages are named terraform-provider-TYPE_VERSION_OS_ARCH.zip"
    )]
    BadFileName { path: PathBuf, reason: String },
    #[error("{path}: the file is a package of provider type {file_type:?}, but the address is {address}")]
    AddressMismatch {
        path: PathBuf,
        file_type: String,
        address: String,
    },
    #[error("{path}: the file name says version {in_name}, but --version says {given}")]
    VersionMismatch {
        path: PathBuf,
        in_name: String,
        given: String,
    },
    #[error("{path}: not a valid provider package: {source}")]
    InvalidZip { path: PathBuf, source: HashError },
    #[error("{path}: no {sums} next to it, so the package cannot be checked; put the release's SHA256SUMS file there, or push the zip files themselves with --address and --version")]
    Sha256SumsMissing { path: PathBuf, sums: String },
    #[error("{sums}:{line}: not a SHA256SUMS line (expected `<64 hex digits>  <file name>`)")]
    Sha256SumsInvalid { sums: PathBuf, line: usize },
    #[error("{path}: not listed in {sums}; is it from another release?")]
    NotInSha256Sums { path: PathBuf, sums: PathBuf },
    #[error("{path}: sha256 is {actual}, but {sums} says {expected}: the file is corrupt or was replaced; download it again")]
    Sha256SumsMismatch {
        path: PathBuf,
        sums: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: {document} lists hash {listed} for {platform}, but the file's is {actual}: the file is corrupt or was replaced; run `terraform providers mirror` again")]
    MirrorHashMismatch {
        path: PathBuf,
        document: PathBuf,
        platform: String,
        listed: String,
        actual: String,
    },
    #[error("{document}: lists {platform} as {file}, which is missing; run `terraform providers mirror` again, or remove the entry")]
    MirrorFileMissing {
        document: PathBuf,
        platform: String,
        file: String,
    },
    #[error("{document}: not a valid version document: {reason}")]
    MirrorDocumentInvalid { document: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    BadMirrorPath { path: PathBuf, reason: String },
    #[error("{release}: two different packages for one platform, {first} and {second}")]
    DuplicatePlatform {
        /// `ADDRESS VERSION PLATFORM`
        release: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// What a package file name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    /// `None` for names that only end in `_OS_ARCH.zip`.
    pub type_name: Option<String>,
    pub version: Option<String>,
    pub platform: TargetPlatform,
}

/// Parses `terraform-provider-TYPE_VERSION_OS_ARCH.zip` (or any `..._OS_ARCH.zip`). Semantic
/// versions, provider types and platforms cannot contain `_`, so the name splits cleanly.
pub fn parse_package_name(name: &str) -> Result<ParsedName, String> {
    let stem = name
        .strip_suffix(".zip")
        .ok_or_else(|| "not a .zip file".to_owned())?;
    let parts: Vec<&str> = stem.split('_').collect();
    let n = parts.len();
    if n < 3 {
        return Err("the name does not end in _OS_ARCH.zip".to_owned());
    }
    let platform_text = format!("{}_{}", parts[n - 2], parts[n - 1]);
    let platform = TargetPlatform::parse(&platform_text)
        .ok_or_else(|| format!("{platform_text:?} is not a platform like linux_amd64"))?;
    match parts.as_slice() {
        [prefix, version, _, _] if prefix.starts_with("terraform-provider-") => {
            let type_name = &prefix["terraform-provider-".len()..];
            if type_name.is_empty() {
                return Err("the provider type is empty".to_owned());
            }
            Ok(ParsedName {
                type_name: Some(type_name.to_ascii_lowercase()),
                version: Some((*version).to_owned()),
                platform,
            })
        }
        _ if parts[0].starts_with("terraform-provider-") => {
            Err("expected exactly TYPE_VERSION_OS_ARCH after terraform-provider-".to_owned())
        }
        _ => Ok(ParsedName {
            type_name: None,
            version: None,
            platform,
        }),
    }
}

fn parse_version(path: &Path, text: &str) -> Result<semver::Version, SourceError> {
    semver::Version::parse(text).map_err(|e| SourceError::BadFileName {
        path: path.to_owned(),
        reason: format!("{text:?} is not a semantic version ({e})"),
    })
}

/// Hashes a package: reads it once for sha256 and once through the zip reader for `h1:`
/// (which also checks every entry's CRC, so truncated or damaged archives fail here).
pub fn hash_package(path: &Path) -> Result<(u64, Digest, String), SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let digest = Digest::from_sha256_hex(&hex::encode(hasher.finalize()))
        .expect("a sha256 in lowercase hex is a valid digest");
    let file = File::open(path).map_err(io)?;
    let h1 =
        hash::h1_from_reader(BufReader::new(file)).map_err(|source| SourceError::InvalidZip {
            path: path.to_owned(),
            source,
        })?;
    Ok((size, digest, h1))
}

/// A package found on disk, before grouping.
struct Found {
    address: ProviderAddress,
    version: semver::Version,
    package: PackageFile,
}

/// Finds and checks every package in `sources`. All problems are collected, so one run lists
/// everything that needs fixing; any problem means nothing should be published.
pub fn collect(
    sources: &[PathBuf],
    opts: &SourceOptions,
) -> Result<Vec<ProviderRelease>, Vec<SourceError>> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for source in sources {
        let before = found.len();
        let errors_before = errors.len();
        match std::fs::metadata(source) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                errors.push(SourceError::NotFound {
                    path: source.clone(),
                })
            }
            Err(source_err) => errors.push(SourceError::Io {
                path: source.clone(),
                source: source_err,
            }),
            Ok(meta) if meta.is_file() => {
                zip_file(source, opts, &mut found, &mut errors);
            }
            Ok(_) => directory(source, opts, &mut found, &mut errors),
        }
        if found.len() == before && errors.len() == errors_before {
            errors.push(SourceError::Empty {
                path: source.clone(),
            });
        }
    }
    let releases = group(found, &mut errors);
    if errors.is_empty() {
        Ok(releases)
    } else {
        Err(errors)
    }
}

fn group(found: Vec<Found>, errors: &mut Vec<SourceError>) -> Vec<ProviderRelease> {
    type Key = (ProviderAddress, semver::Version);
    let mut by_version: BTreeMap<Key, BTreeMap<TargetPlatform, PackageFile>> = BTreeMap::new();
    for f in found {
        let platforms = by_version
            .entry((f.address.clone(), f.version.clone()))
            .or_default();
        match platforms.get(&f.package.platform) {
            // The same bytes given twice (say, a mirror directory and a zip from it) are fine.
            Some(prev) if prev.digest == f.package.digest => {}
            Some(prev) => errors.push(SourceError::DuplicatePlatform {
                release: format!("{} {} {}", f.address, f.version, f.package.platform),
                first: prev.path.clone(),
                second: f.package.path,
            }),
            None => {
                platforms.insert(f.package.platform.clone(), f.package);
            }
        }
    }
    by_version
        .into_iter()
        .map(|((address, version), packages)| ProviderRelease {
            address,
            version,
            packages: packages.into_values().collect(),
            protocols: Vec::new(),
            signatures: None,
        })
        .collect()
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A zip given on the command line.
fn zip_file(
    path: &Path,
    opts: &SourceOptions,
    found: &mut Vec<Found>,
    errors: &mut Vec<SourceError>,
) {
    let name = file_name_of(path);
    let parsed = match parse_package_name(&name) {
        Ok(p) => p,
        Err(reason) => {
            errors.push(SourceError::BadFileName {
                path: path.to_owned(),
                reason,
            });
            return;
        }
    };
    let Some(address) = opts.address.clone() else {
        errors.push(SourceError::NeedsAddress {
            path: path.to_owned(),
        });
        return;
    };
    if let Some(t) = &parsed.type_name {
        if *t != address.type_name {
            errors.push(SourceError::AddressMismatch {
                path: path.to_owned(),
                file_type: t.clone(),
                address: address.to_string(),
            });
            return;
        }
    }
    let version = match (&parsed.version, &opts.version) {
        (Some(in_name), Some(given)) => match parse_version(path, in_name) {
            Ok(v) if v == *given => v,
            Ok(_) => {
                errors.push(SourceError::VersionMismatch {
                    path: path.to_owned(),
                    in_name: in_name.clone(),
                    given: given.to_string(),
                });
                return;
            }
            Err(e) => {
                errors.push(e);
                return;
            }
        },
        (Some(in_name), None) => match parse_version(path, in_name) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                return;
            }
        },
        (None, Some(given)) => given.clone(),
        (None, None) => {
            errors.push(SourceError::NeedsVersion {
                path: path.to_owned(),
            });
            return;
        }
    };
    match hash_package(path) {
        Ok((size, digest, h1)) => found.push(Found {
            address,
            version,
            package: PackageFile {
                platform: parsed.platform,
                path: path.to_owned(),
                file_name: name,
                size,
                digest,
                h1,
            },
        }),
        Err(e) => errors.push(e),
    }
}

struct DirEntries {
    files: Vec<(String, PathBuf)>,
    dirs: Vec<(String, PathBuf)>,
}

fn read_dir_sorted(dir: &Path) -> Result<DirEntries, SourceError> {
    let io = |source| SourceError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Follows symlinks, as `terraform providers mirror` output copied around may have them.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => dirs.push((name, path)),
            Ok(m) if m.is_file() => files.push((name, path)),
            _ => {}
        }
    }
    files.sort();
    dirs.sort();
    Ok(DirEntries { files, dirs })
}

fn directory(
    dir: &Path,
    opts: &SourceOptions,
    found: &mut Vec<Found>,
    errors: &mut Vec<SourceError>,
) {
    let entries = match read_dir_sorted(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    let has = |pred: &dyn Fn(&str) -> bool| entries.files.iter().any(|(n, _)| pred(n));
    let has_zips = has(&|n: &str| n.ends_with(".zip"));
    let has_sums = has(&|n: &str| n.ends_with("_SHA256SUMS"));
    let has_index = has(&|n: &str| n == "index.json");
    if has_index && has_zips && !has_sums {
        // One provider's directory inside a `terraform providers mirror` tree.
        let address = match &opts.address {
            Some(a) => Some(a.clone()),
            None => address_from_path(dir),
        };
        match address {
            Some(address) => mirror_provider_dir(&entries, &address, found, errors),
            None => errors.push(SourceError::NeedsAddress {
                path: dir.to_owned(),
            }),
        }
    } else if has_zips || has_sums {
        match &opts.address {
            Some(address) => release_dir(dir, &entries, address, found, errors),
            None => errors.push(SourceError::NeedsAddress {
                path: dir.to_owned(),
            }),
        }
    } else {
        mirror_root(dir, &entries, found, errors);
    }
}

/// The address from the last three components of `.../HOST/NAMESPACE/TYPE`.
fn address_from_path(dir: &Path) -> Option<ProviderAddress> {
    let canonical = std::fs::canonicalize(dir).ok()?;
    let mut parts = canonical
        .iter()
        .rev()
        .map(|c| c.to_string_lossy().into_owned());
    let type_name = parts.next()?;
    let namespace = parts.next()?;
    let hostname = parts.next()?;
    ProviderAddress::new(&hostname, &namespace, &type_name).ok()
}

/// The top of a `terraform providers mirror` directory: `HOST/NAMESPACE/TYPE/`.
fn mirror_root(
    root: &Path,
    entries: &DirEntries,
    found: &mut Vec<Found>,
    errors: &mut Vec<SourceError>,
) {
    for (host, host_dir) in &entries.dirs {
        let Ok(namespaces) = read_dir_sorted(host_dir) else {
            continue;
        };
        for (namespace, ns_dir) in &namespaces.dirs {
            let Ok(types) = read_dir_sorted(ns_dir) else {
                continue;
            };
            for (type_name, type_dir) in &types.dirs {
                let provider_entries = match read_dir_sorted(type_dir) {
                    Ok(e) => e,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                if !provider_entries
                    .files
                    .iter()
                    .any(|(n, _)| n.ends_with(".zip"))
                {
                    continue;
                }
                match ProviderAddress::new(host, namespace, type_name) {
                    Ok(address) => mirror_provider_dir(&provider_entries, &address, found, errors),
                    Err(e) => errors.push(SourceError::BadMirrorPath {
                        path: type_dir.clone(),
                        reason: format!(
                            "{e}; expected HOST/NAMESPACE/TYPE under {}",
                            root.display()
                        ),
                    }),
                }
            }
        }
    }
}

/// `VERSION.json` as `terraform providers mirror` writes it.
#[derive(serde::Deserialize)]
struct VersionDocument {
    archives: BTreeMap<String, ArchiveEntry>,
}

#[derive(serde::Deserialize)]
struct ArchiveEntry {
    url: String,
    #[serde(default)]
    hashes: Vec<String>,
}

/// One provider's directory in a mirror: its zips, checked against the `VERSION.json`
/// documents beside them.
fn mirror_provider_dir(
    entries: &DirEntries,
    address: &ProviderAddress,
    found: &mut Vec<Found>,
    errors: &mut Vec<SourceError>,
) {
    // (file name, version) → (document, listed hashes)
    let mut listed: HashMap<(String, String), (PathBuf, Vec<String>)> = HashMap::new();
    let files: HashMap<&str, &PathBuf> =
        entries.files.iter().map(|(n, p)| (n.as_str(), p)).collect();
    for (name, path) in &entries.files {
        let Some(version) = name.strip_suffix(".json").filter(|v| *v != "index") else {
            continue;
        };
        let doc: VersionDocument = match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(reason) => {
                errors.push(SourceError::MirrorDocumentInvalid {
                    document: path.clone(),
                    reason,
                });
                continue;
            }
        };
        for (platform, archive) in doc.archives {
            // Terraform writes the file name; anything with a path is not ours to follow.
            if archive.url.contains('/') || !files.contains_key(archive.url.as_str()) {
                errors.push(SourceError::MirrorFileMissing {
                    document: path.clone(),
                    platform,
                    file: archive.url,
                });
                continue;
            }
            listed.insert(
                (archive.url.clone(), version.to_owned()),
                (path.clone(), archive.hashes),
            );
        }
    }
    for (name, path) in entries.files.iter().filter(|(n, _)| n.ends_with(".zip")) {
        let parsed = match parse_package_name(name) {
            Ok(p) => p,
            Err(reason) => {
                errors.push(SourceError::BadFileName {
                    path: path.clone(),
                    reason,
                });
                continue;
            }
        };
        let (Some(type_name), Some(version_text)) = (&parsed.type_name, &parsed.version) else {
            errors.push(SourceError::BadFileName {
                path: path.clone(),
                reason: "the name does not carry the provider type and version".to_owned(),
            });
            continue;
        };
        if *type_name != address.type_name {
            errors.push(SourceError::AddressMismatch {
                path: path.clone(),
                file_type: type_name.clone(),
                address: address.to_string(),
            });
            continue;
        }
        let version = match parse_version(path, version_text) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let (size, digest, h1) = match hash_package(path) {
            Ok(h) => h,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if let Some((document, hashes)) = listed.get(&(name.clone(), version_text.clone())) {
            let zh = hash::zh_from_sha256_hex(digest.hex());
            for listed_hash in hashes {
                let actual = if listed_hash.starts_with("h1:") {
                    &h1
                } else if listed_hash.starts_with("zh:") {
                    &zh
                } else {
                    continue;
                };
                if listed_hash != actual {
                    errors.push(SourceError::MirrorHashMismatch {
                        path: path.clone(),
                        document: document.clone(),
                        platform: parsed.platform.to_string(),
                        listed: listed_hash.clone(),
                        actual: actual.clone(),
                    });
                }
            }
        }
        found.push(Found {
            address: address.clone(),
            version,
            package: PackageFile {
                platform: parsed.platform,
                path: path.clone(),
                file_name: name.clone(),
                size,
                digest,
                h1,
            },
        });
    }
}

/// `file name → lowercase hex sha256`.
type Sha256Sums = HashMap<String, String>;

/// Parses a SHA256SUMS file.
fn read_sha256sums(path: &Path) -> Result<Sha256Sums, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut sums = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let invalid = || SourceError::Sha256SumsInvalid {
            sums: path.to_owned(),
            line: i + 1,
        };
        let (hex, rest) = line.split_once(char::is_whitespace).ok_or_else(invalid)?;
        // `sha256sum` writes two spaces, or ` *` in binary mode.
        let name = rest
            .trim_start_matches(' ')
            .trim_start_matches('*')
            .trim_end();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
            return Err(invalid());
        }
        sums.insert(name.to_owned(), hex.to_ascii_lowercase());
    }
    Ok(sums)
}

/// A release directory: zips checked against their release's SHA256SUMS.
fn release_dir(
    dir: &Path,
    entries: &DirEntries,
    address: &ProviderAddress,
    found: &mut Vec<Found>,
    errors: &mut Vec<SourceError>,
) {
    let mut sums_cache: HashMap<String, Option<(PathBuf, Sha256Sums)>> = HashMap::new();
    for (name, path) in entries.files.iter().filter(|(n, _)| n.ends_with(".zip")) {
        let parsed = match parse_package_name(name) {
            Ok(p) => p,
            Err(reason) => {
                errors.push(SourceError::BadFileName {
                    path: path.clone(),
                    reason,
                });
                continue;
            }
        };
        let (Some(type_name), Some(version_text)) = (&parsed.type_name, &parsed.version) else {
            errors.push(SourceError::BadFileName {
                path: path.clone(),
                reason: "the name does not carry the provider type and version".to_owned(),
            });
            continue;
        };
        if *type_name != address.type_name {
            errors.push(SourceError::AddressMismatch {
                path: path.clone(),
                file_type: type_name.clone(),
                address: address.to_string(),
            });
            continue;
        }
        let version = match parse_version(path, version_text) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        // The release's own spelling of the type (case) is kept in the SUMS file name.
        let prefix = name.split('_').next().unwrap_or_default().to_owned();
        let sums_name = format!("{prefix}_{version_text}_SHA256SUMS");
        let sums = sums_cache.entry(sums_name.clone()).or_insert_with(|| {
            let sums_path = dir.join(&sums_name);
            if !sums_path.is_file() {
                return None;
            }
            match read_sha256sums(&sums_path) {
                Ok(s) => Some((sums_path, s)),
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        });
        let Some((sums_path, sums)) = sums else {
            if !dir.join(&sums_name).is_file() {
                errors.push(SourceError::Sha256SumsMissing {
                    path: path.clone(),
                    sums: sums_name,
                });
            }
            continue;
        };
        let Some(expected) = sums.get(name.as_str()) else {
            errors.push(SourceError::NotInSha256Sums {
                path: path.clone(),
                sums: sums_path.clone(),
            });
            continue;
        };
        let (size, digest, h1) = match hash_package(path) {
            Ok(h) => h,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if digest.hex() != expected {
            errors.push(SourceError::Sha256SumsMismatch {
                path: path.clone(),
                sums: sums_path.clone(),
                expected: expected.clone(),
                actual: digest.hex().to_owned(),
            });
            continue;
        }
        found.push(Found {
            address: address.clone(),
            version,
            package: PackageFile {
                platform: parsed.platform,
                path: path.clone(),
                file_name: name.clone(),
                size,
                digest,
                h1,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut out);
            for (name, data) in files {
                w.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                w.write_all(data).unwrap();
            }
            w.finish().unwrap();
        }
        out.into_inner()
    }

    fn pkg(platform: &str) -> Vec<u8> {
        zip_of(&[("terraform-provider-foo_v1.0.0", platform.as_bytes())])
    }

    fn addr() -> ProviderAddress {
        ProviderAddress::new("registry.terraform.io", "acme", "foo").unwrap()
    }

    fn sha_hex(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[test]
    fn package_names() {
        let p = parse_package_name("terraform-provider-foo-bar_1.2.3-beta.1+b5_linux_amd64.zip")
            .unwrap();
        assert_eq!(p.type_name.as_deref(), Some("foo-bar"));
        assert_eq!(p.version.as_deref(), Some("1.2.3-beta.1+b5"));
        assert_eq!(p.platform.to_string(), "linux_amd64");
        let p = parse_package_name("custom_darwin_arm64.zip").unwrap();
        assert_eq!(p.type_name, None);
        assert_eq!(p.platform.to_string(), "darwin_arm64");
        for bad in [
            "terraform-provider-foo_1.0.0_linux_amd64.tar.gz",
            "linux_amd64.zip",
            "terraform-provider-foo_linux_amd64.zip",
            "terraform-provider-_1.0.0_linux_amd64.zip",
            "terraform-provider-foo_1.0.0_Linux_amd64.zip",
        ] {
            assert!(parse_package_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn release_directory_is_checked_against_sha256sums() {
        let dir = tempfile::tempdir().unwrap();
        let a = pkg("linux_amd64");
        let b = pkg("darwin_arm64");
        std::fs::write(
            dir.path()
                .join("terraform-provider-foo_1.0.0_linux_amd64.zip"),
            &a,
        )
        .unwrap();
        std::fs::write(
            dir.path()
                .join("terraform-provider-foo_1.0.0_darwin_arm64.zip"),
            &b,
        )
        .unwrap();
        let sums = format!(
            "{}  terraform-provider-foo_1.0.0_linux_amd64.zip\n{}  terraform-provider-foo_1.0.0_darwin_arm64.zip\n{}  terraform-provider-foo_1.0.0_windows_386.zip\n",
            sha_hex(&a),
            sha_hex(&b),
            "0".repeat(64)
        );
        std::fs::write(
            dir.path().join("terraform-provider-foo_1.0.0_SHA256SUMS"),
            &sums,
        )
        .unwrap();
        let opts = SourceOptions {
            address: Some(addr()),
            version: None,
        };
        let releases = collect(&[dir.path().to_owned()], &opts).unwrap();
        assert_eq!(releases.len(), 1);
        let r = &releases[0];
        assert_eq!(r.version.to_string(), "1.0.0");
        let platforms: Vec<String> = r.packages.iter().map(|p| p.platform.to_string()).collect();
        assert_eq!(platforms, ["darwin_arm64", "linux_amd64"]);
        assert_eq!(r.packages[1].digest.hex(), sha_hex(&a));
        assert_eq!(r.packages[1].h1, hash::h1_from_zip(&a).unwrap());

        // Without --address: refused with a hint.
        let errs = collect(&[dir.path().to_owned()], &SourceOptions::default()).unwrap_err();
        assert!(errs[0].to_string().contains("--address"), "{}", errs[0]);

        // A replaced file: refused, naming the file and the SUMS file.
        std::fs::write(
            dir.path()
                .join("terraform-provider-foo_1.0.0_linux_amd64.zip"),
            &b,
        )
        .unwrap();
        let errs = collect(&[dir.path().to_owned()], &opts).unwrap_err();
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(
            msg.contains("linux_amd64.zip") && msg.contains("SHA256SUMS"),
            "{msg}"
        );

        // No SUMS file at all.
        std::fs::remove_file(dir.path().join("terraform-provider-foo_1.0.0_SHA256SUMS")).unwrap();
        let errs = collect(&[dir.path().to_owned()], &opts).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(matches!(errs[0], SourceError::Sha256SumsMissing { .. }));
    }

    #[test]
    fn mirror_directory_with_documents() {
        let root = tempfile::tempdir().unwrap();
        let pdir = root.path().join("registry.terraform.io/acme/foo");
        std::fs::create_dir_all(&pdir).unwrap();
        let a = pkg("linux_amd64");
        let name = "terraform-provider-foo_2.0.0_linux_amd64.zip";
        std::fs::write(pdir.join(name), &a).unwrap();
        std::fs::write(pdir.join("index.json"), r#"{"versions":{"2.0.0":{}}}"#).unwrap();
        let doc = format!(
            r#"{{"archives":{{"linux_amd64":{{"url":"{name}","hashes":["{}"]}}}}}}"#,
            hash::h1_from_zip(&a).unwrap()
        );
        std::fs::write(pdir.join("2.0.0.json"), &doc).unwrap();
        let releases = collect(&[root.path().to_owned()], &SourceOptions::default()).unwrap();
        assert_eq!(releases.len(), 1);
        assert_eq!(releases[0].address, addr());
        // The provider directory itself works too, with the address from its path.
        let releases = collect(std::slice::from_ref(&pdir), &SourceOptions::default()).unwrap();
        assert_eq!(releases[0].address, addr());

        // A package that no longer matches its document is refused.
        std::fs::write(pdir.join(name), pkg("other")).unwrap();
        let errs = collect(&[root.path().to_owned()], &SourceOptions::default()).unwrap_err();
        assert!(
            matches!(errs[0], SourceError::MirrorHashMismatch { .. }),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn corrupt_zip_and_version_flags() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir
            .path()
            .join("terraform-provider-foo_1.0.0_linux_amd64.zip");
        std::fs::write(&good, pkg("linux_amd64")).unwrap();
        let mut corrupt = pkg("linux_arm64");
        let n = corrupt.len();
        corrupt.truncate(n / 2);
        let bad = dir
            .path()
            .join("terraform-provider-foo_1.0.0_linux_arm64.zip");
        std::fs::write(&bad, &corrupt).unwrap();
        let opts = SourceOptions {
            address: Some(addr()),
            version: None,
        };
        let errs = collect(&[good.clone(), bad.clone()], &opts).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(matches!(errs[0], SourceError::InvalidZip { .. }));
        assert!(errs[0].to_string().contains("linux_arm64.zip"));

        let opts = SourceOptions {
            address: Some(addr()),
            version: Some("1.0.1".parse().unwrap()),
        };
        let errs = collect(std::slice::from_ref(&good), &opts).unwrap_err();
        assert!(matches!(errs[0], SourceError::VersionMismatch { .. }));

        let plain = dir.path().join("build_linux_amd64.zip");
        std::fs::write(&plain, pkg("x")).unwrap();
        let errs = collect(
            std::slice::from_ref(&plain),
            &SourceOptions {
                address: Some(addr()),
                version: None,
            },
        )
        .unwrap_err();
        assert!(matches!(errs[0], SourceError::NeedsVersion { .. }));
        let releases = collect(&[plain], &opts).unwrap();
        assert_eq!(releases[0].version.to_string(), "1.0.1");

        let other = ProviderAddress::new("example.com", "acme", "bar").unwrap();
        let errs = collect(
            &[good],
            &SourceOptions {
                address: Some(other),
                version: None,
            },
        )
        .unwrap_err();
        assert!(matches!(errs[0], SourceError::AddressMismatch { .. }));
    }

    #[test]
    fn duplicates_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let name = "terraform-provider-foo_1.0.0_linux_amd64.zip";
        std::fs::write(a.join(name), pkg("1")).unwrap();
        std::fs::write(b.join(name), pkg("2")).unwrap();
        let opts = SourceOptions {
            address: Some(addr()),
            version: None,
        };
        let errs = collect(&[a.join(name), b.join(name)], &opts).unwrap_err();
        assert!(matches!(errs[0], SourceError::DuplicatePlatform { .. }));
        assert_eq!(
            collect(&[a.join(name), a.join(name)], &opts).unwrap().len(),
            1
        );

        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let errs = collect(&[empty, dir.path().join("missing")], &opts).unwrap_err();
        assert!(matches!(errs[0], SourceError::Empty { .. }));
        assert!(matches!(errs[1], SourceError::NotFound { .. }));
    }

    #[test]
    fn sha256sums_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("S");
        std::fs::write(
            &p,
            format!("{} *bin.zip\n\n{}  b.zip\n", "A".repeat(64), "b".repeat(64)),
        )
        .unwrap();
        let sums = read_sha256sums(&p).unwrap();
        assert_eq!(sums["bin.zip"], "a".repeat(64));
        assert_eq!(sums["b.zip"], "b".repeat(64));
        std::fs::write(&p, "xyz file\n").unwrap();
        assert!(matches!(
            read_sha256sums(&p),
            Err(SourceError::Sha256SumsInvalid { line: 1, .. })
        ));
    }
}
