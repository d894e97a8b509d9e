//! Publishing a Terraform module: its directory zipped reproducibly (sorted entries, fixed
//! timestamps, without `.terraform/` and `.git/`) and pushed in OpenTofu's module package
//! layout, one image manifest with one `archive/zip` layer, tagged with the version.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::modules::{ModuleAddress, MODULE_ARTIFACT_TYPE, MODULE_LAYER_MEDIA_TYPE};
use crate::oci::{
    with_retries, BlobSource, BlobUpload, Credential, Descriptor, Digest, ImageManifest, OciClient,
    OciError, Registry, UploadOptions, MEDIA_TYPE_EMPTY_JSON, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::provider::tag_for_version;

/// Directories that are never part of a module package.
const SKIPPED_DIRS: &[&str] = &[".terraform", ".git"];
const EMPTY_JSON: &[u8] = b"{}";

#[derive(Debug, thiserror::Error)]
pub enum ModulePackageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("{0}: symbolic links are not packaged (they could point outside the module); replace it with the file")]
    Symlink(PathBuf),
    #[error("{0}: the module directory holds no files")]
    Empty(PathBuf),
    #[error("{path}: cannot be zipped: {reason}")]
    Zip { path: PathBuf, reason: String },
}

/// A module zip and the manifest that publishes it.
#[derive(Debug, Clone)]
pub struct ModulePlan {
    pub repository: String,
    pub tag: String,
    pub zip: Bytes,
    pub zip_digest: Digest,
    pub manifest: Bytes,
    pub manifest_digest: Digest,
}

/// What pushing a module version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleOutcome {
    Pushed,
    Replaced,
    UpToDate,
    /// The tag holds other content and `force` was not given.
    Conflict {
        existing: Option<Digest>,
    },
    WouldPush,
}

/// Zips `dir` reproducibly: the same files give the same bytes.
pub fn zip_directory(dir: &Path) -> Result<Vec<u8>, ModulePackageError> {
    if !dir.is_dir() {
        return Err(ModulePackageError::NotADirectory(dir.to_owned()));
    }
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    if files.is_empty() {
        return Err(ModulePackageError::Empty(dir.to_owned()));
    }
    files.sort();
    let zip_err = |path: &Path, e: &dyn std::fmt::Display| ModulePackageError::Zip {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut out);
        for (name, path) in &files {
            let executable = is_executable(path);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .last_modified_time(zip::DateTime::default())
                .unix_permissions(if executable { 0o755 } else { 0o644 });
            let bytes = std::fs::read(path).map_err(|source| ModulePackageError::Io {
                path: path.clone(),
                source,
            })?;
            w.start_file(name.as_str(), options)
                .map_err(|e| zip_err(path, &e))?;
            w.write_all(&bytes).map_err(|e| zip_err(path, &e))?;
        }
        w.finish().map_err(|e| zip_err(dir, &e))?;
    }
    Ok(out.into_inner())
}

/// `(name inside the zip, path)` of every file under `dir`, skipping [`SKIPPED_DIRS`].
fn collect_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), ModulePackageError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModulePackageError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        let name = entry.file_name();
        if kind.is_symlink() {
            return Err(ModulePackageError::Symlink(path));
        }
        if kind.is_dir() {
            if SKIPPED_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let parts: Option<Vec<&str>> = relative
                .components()
                .map(|c| c.as_os_str().to_str())
                .collect();
            let Some(parts) = parts else {
                return Err(ModulePackageError::Zip {
                    path: path.clone(),
                    reason: "the file name is not UTF-8".into(),
                });
            };
            out.push((parts.join("/"), path));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_: &Path) -> bool {
    false
}

/// The manifest publishing `zip` as `module` at `version` under `name_prefix`.
pub fn plan(
    module: &ModuleAddress,
    version: &semver::Version,
    name_prefix: &str,
    zip: Vec<u8>,
) -> ModulePlan {
    let zip = Bytes::from(zip);
    let zip_digest = Digest::of_bytes(&zip);
    let mut layer = Descriptor::new(MODULE_LAYER_MEDIA_TYPE, &zip_digest, zip.len() as u64);
    layer.annotations.insert(
        crate::provider::layout::TITLE_ANNOTATION.to_owned(),
        format!("{}-{}-{version}.zip", module.name, module.system),
    );
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
        artifact_type: Some(MODULE_ARTIFACT_TYPE.to_owned()),
        config: Descriptor::new(
            MEDIA_TYPE_EMPTY_JSON,
            &Digest::of_bytes(EMPTY_JSON),
            EMPTY_JSON.len() as u64,
        ),
        layers: vec![layer],
        subject: None,
        annotations: BTreeMap::new(),
    };
    let manifest = Bytes::from(serde_json::to_vec(&manifest).expect("manifest structs serialize"));
    ModulePlan {
        repository: module.repository(name_prefix),
        tag: tag_for_version(version),
        manifest_digest: Digest::of_bytes(&manifest),
        manifest,
        zip_digest,
        zip,
    }
}

/// Pushes a planned module version; an identical tag is left alone, a different one is only
/// replaced with `force`.
pub async fn push(
    client: &OciClient,
    registry: &Registry,
    credential: &Credential,
    plan: &ModulePlan,
    force: bool,
    dry_run: bool,
) -> Result<ModuleOutcome, OciError> {
    let opts = UploadOptions::default();
    let repo = plan.repository.as_str();
    let existing = match with_retries(&opts, || {
        client.get_manifest(registry, repo, &plan.tag, credential)
    })
    .await
    {
        Ok(m) if m.digest == plan.manifest_digest => return Ok(ModuleOutcome::UpToDate),
        Ok(m) => Some(Some(m.digest)),
        Err(OciError::NotFound { .. }) => None,
        Err(OciError::InvalidManifest { .. } | OciError::DigestMismatch { .. }) => Some(None),
        Err(e) => return Err(e),
    };
    if let Some(previous) = &existing {
        if !force {
            return Ok(ModuleOutcome::Conflict {
                existing: previous.clone(),
            });
        }
    }
    if dry_run {
        return Ok(ModuleOutcome::WouldPush);
    }
    let config = BlobSource::Memory(Bytes::from_static(EMPTY_JSON));
    let zip = BlobSource::Memory(plan.zip.clone());
    let config_digest = Digest::of_bytes(EMPTY_JSON);
    for (digest, size, source) in [
        (&config_digest, EMPTY_JSON.len() as u64, &config),
        (&plan.zip_digest, plan.zip.len() as u64, &zip),
    ] {
        let upload = BlobUpload {
            digest,
            size,
            source,
            mount_from: None,
        };
        client
            .upload_blob(registry, repo, upload, credential, &opts, &|_| {})
            .await?;
    }
    client
        .put_manifest(
            registry,
            repo,
            &plan.tag,
            MEDIA_TYPE_OCI_MANIFEST,
            plan.manifest.clone(),
            credential,
            &opts,
        )
        .await?;
    Ok(match existing {
        None => ModuleOutcome::Pushed,
        Some(_) => ModuleOutcome::Replaced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zips_are_reproducible_and_skip_tool_directories() {
        let dir = tempfile_dir();
        std::fs::write(dir.join("main.tf"), "output \"x\" { value = 1 }\n").unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/vars.tf"), "variable \"y\" {}\n").unwrap();
        std::fs::create_dir_all(dir.join(".git/objects")).unwrap();
        std::fs::write(dir.join(".git/HEAD"), "ref").unwrap();
        std::fs::create_dir_all(dir.join(".terraform/providers")).unwrap();
        std::fs::write(dir.join(".terraform/providers/x"), "junk").unwrap();
        let a = zip_directory(&dir).unwrap();
        let b = zip_directory(&dir).unwrap();
        assert_eq!(a, b);
        let archive = zip::ZipArchive::new(std::io::Cursor::new(a)).unwrap();
        let mut names: Vec<&str> = archive.file_names().collect();
        names.sort();
        assert_eq!(names, ["main.tf", "sub/vars.tf"]);
        let module = ModuleAddress::new("acme", "net", "aws").unwrap();
        let p = plan(&module, &semver::Version::new(1, 0, 0), "modules", b);
        assert_eq!(p.repository, "modules/acme/net/aws");
        assert_eq!(p.tag, "1.0.0");
        let m = crate::oci::Manifest::parse(Some(MEDIA_TYPE_OCI_MANIFEST), &p.manifest).unwrap();
        assert_eq!(
            super::super::modules::module_layer(&m).unwrap(),
            p.zip_digest
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "odtr-module-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
