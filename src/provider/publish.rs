//! Publishing checked provider versions ([`ProviderRelease`]s) into an OCI registry, in
//! either layout:
//! - **OpenTofu** (default): the version's tag (`+` → `_`) names an image index with
//!   artifactType `application/vnd.opentofu.provider`, listing one image manifest per platform
//!   (artifactType `application/vnd.opentofu.provider-target`, the empty config, one
//!   `archive/zip` layer), exactly what OpenTofu 1.10's `oci_mirror` reads;
//! - **seed** (the prototype's): one image manifest with the provider config type and one
//!   layer per package, annotated with the platforms it serves.
//!
//! Every package layer also carries its `h1:` hash ([`layout::H1_ANNOTATION`]). Manifest
//! JSON is deterministic, so pushing the same packages again yields the same digests: an
//! identical tag is left alone, a different one is refused unless forced.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use super::layout::{
    H1_ANNOTATION, SEED_CONFIG_MEDIA_TYPE, SEED_LAYER_MEDIA_TYPE, SEED_PLATFORMS_ANNOTATION,
    TITLE_ANNOTATION, TOFU_INDEX_ARTIFACT_TYPE, TOFU_LAYER_MEDIA_TYPE, TOFU_TARGET_ARTIFACT_TYPE,
};
use super::sources::{AuthorSignatures, PackageFile, ProviderRelease};
use super::{tag_for_version, Naming, ProviderAddress};
use crate::oci::{
    is_valid_repository_name, is_valid_tag, with_retries, BlobSource, BlobUpload, Credential,
    Descriptor, Digest, ImageIndex, ImageManifest, OciClient, OciError, Platform, Registry,
    UploadOptions, UploadOutcome, MEDIA_TYPE_EMPTY_JSON, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use crate::registry::providers::{
    signatures_tag, PROTOCOLS_ANNOTATION, PUBLIC_KEY_MEDIA_TYPE, SHA256SUMS_MEDIA_TYPE,
    SIGNATURES_ARTIFACT_TYPE, SIGNATURE_MEDIA_TYPE,
};

/// The content of the empty config blob, `{}`.
const EMPTY_JSON: &[u8] = b"{}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishLayout {
    OpenTofu,
    Seed,
}

impl std::fmt::Display for PublishLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublishLayout::OpenTofu => "opentofu",
            PublishLayout::Seed => "seed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{address}: repository name {repository:?} is not valid in OCI registries (lower-case letters, digits, `.`, `_`, `-` and `/` only); choose another repository prefix")]
    InvalidRepository { address: String, repository: String },
    /// `release` is `ADDRESS VERSION`.
    #[error("{release}: the tag {tag:?} is not valid in OCI registries")]
    InvalidTag { release: String, tag: String },
    #[error("{release}: no packages")]
    NoPackages { release: String },
}

/// A blob a version needs in its repository.
#[derive(Debug, Clone)]
pub struct PlannedBlob {
    pub digest: Digest,
    pub size: u64,
    pub source: BlobSource,
    /// For progress and messages: the package file name, or "config".
    pub label: String,
}

/// A manifest to write, by digest (per-platform manifests) or by tag (the version's).
#[derive(Debug, Clone)]
pub struct PlannedManifest {
    pub media_type: &'static str,
    pub body: Bytes,
    pub digest: Digest,
}

/// Everything one provider version becomes in the registry.
#[derive(Debug, Clone)]
pub struct VersionPlan {
    pub address: ProviderAddress,
    pub version: semver::Version,
    pub repository: String,
    pub tag: String,
    /// Each distinct blob once.
    pub blobs: Vec<PlannedBlob>,
    /// OpenTofu layout: one image manifest per platform, written before the index.
    pub platform_manifests: Vec<PlannedManifest>,
    /// The manifest the tag points at.
    pub tagged: PlannedManifest,
    /// The author's SHA256SUMS, signature and key, written after `tagged` under
    /// [`signatures_tag`] of its digest (their blobs are in `blobs`).
    pub signatures: Option<PlannedManifest>,
}

fn manifest_json<T: serde::Serialize>(media_type: &'static str, doc: &T) -> PlannedManifest {
    // The documents are plain structs of strings and numbers, which always serialize; the
    // field order is fixed by the struct definitions and annotations are BTreeMaps, so the
    // bytes (and so the digest) depend only on the content.
    let body = Bytes::from(serde_json::to_vec(doc).expect("manifest structs serialize"));
    PlannedManifest {
        media_type,
        digest: Digest::of_bytes(&body),
        body,
    }
}

fn package_blob(p: &PackageFile) -> PlannedBlob {
    PlannedBlob {
        digest: p.digest.clone(),
        size: p.size,
        source: BlobSource::File(p.path.clone()),
        label: p.file_name.clone(),
    }
}

fn empty_config_blob() -> PlannedBlob {
    PlannedBlob {
        digest: Digest::of_bytes(EMPTY_JSON),
        size: EMPTY_JSON.len() as u64,
        source: BlobSource::Memory(Bytes::from_static(EMPTY_JSON)),
        label: "config".to_owned(),
    }
}

/// Builds the manifests of one version. Pure: nothing is sent anywhere.
pub fn plan_version(
    release: &ProviderRelease,
    layout: PublishLayout,
    name_prefix: &str,
    naming: Naming,
) -> Result<VersionPlan, PlanError> {
    let repository = release.address.repository_named(name_prefix, naming);
    if !is_valid_repository_name(&repository) {
        return Err(PlanError::InvalidRepository {
            address: release.address.to_string(),
            repository,
        });
    }
    let tag = tag_for_version(&release.version);
    if !is_valid_tag(&tag) {
        return Err(PlanError::InvalidTag {
            release: format!("{} {}", release.address, release.version),
            tag,
        });
    }
    if release.packages.is_empty() {
        return Err(PlanError::NoPackages {
            release: format!("{} {}", release.address, release.version),
        });
    }
    let config = empty_config_blob();
    let mut blobs = vec![config.clone()];
    for p in &release.packages {
        if !blobs.iter().any(|b| b.digest == p.digest) {
            blobs.push(package_blob(p));
        }
    }
    let (platform_manifests, tagged) = match layout {
        PublishLayout::Seed => (Vec::new(), seed_manifest(release, &config)),
        PublishLayout::OpenTofu => opentofu_manifests(release, &config),
    };
    let signatures = release.signatures.as_ref().map(|s| {
        let (manifest, parts) = signatures_manifest(s, &tagged, &config);
        blobs.extend(parts);
        manifest
    });
    Ok(VersionPlan {
        address: release.address.clone(),
        version: release.version.clone(),
        repository,
        tag,
        blobs,
        platform_manifests,
        tagged,
        signatures,
    })
}

/// The version's protocol versions, as an annotation of the manifest its tag names.
fn version_annotations(release: &ProviderRelease) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    if !release.protocols.is_empty() {
        a.insert(PROTOCOLS_ANNOTATION.to_owned(), release.protocols.join(","));
    }
    a
}

/// The author's signature material as an artifact whose subject is the version's manifest.
fn signatures_manifest(
    s: &AuthorSignatures,
    subject: &PlannedManifest,
    config: &PlannedBlob,
) -> (PlannedManifest, Vec<PlannedBlob>) {
    let part = |media_type: &str, bytes: Vec<u8>, label: &str| {
        let bytes = Bytes::from(bytes);
        let blob = PlannedBlob {
            digest: Digest::of_bytes(&bytes),
            size: bytes.len() as u64,
            source: BlobSource::Memory(bytes),
            label: label.to_owned(),
        };
        (Descriptor::new(media_type, &blob.digest, blob.size), blob)
    };
    let parts = [
        part(SHA256SUMS_MEDIA_TYPE, s.sums.clone(), "SHA256SUMS"),
        part(SIGNATURE_MEDIA_TYPE, s.signature.clone(), "SHA256SUMS.sig"),
        part(
            PUBLIC_KEY_MEDIA_TYPE,
            s.public_key.clone().into_bytes(),
            "public key",
        ),
    ];
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
        artifact_type: Some(SIGNATURES_ARTIFACT_TYPE.to_owned()),
        config: Descriptor::new(MEDIA_TYPE_EMPTY_JSON, &config.digest, config.size),
        layers: parts.iter().map(|(d, _)| d.clone()).collect(),
        subject: Some(Box::new(Descriptor::new(
            subject.media_type,
            &subject.digest,
            subject.body.len() as u64,
        ))),
        annotations: BTreeMap::new(),
    };
    (
        manifest_json(MEDIA_TYPE_OCI_MANIFEST, &manifest),
        parts.into_iter().map(|(_, b)| b).collect(),
    )
}

fn layer_annotations(p: &PackageFile) -> BTreeMap<String, String> {
    BTreeMap::from([
        (H1_ANNOTATION.to_owned(), p.h1.clone()),
        (TITLE_ANNOTATION.to_owned(), p.file_name.clone()),
    ])
}

/// Seed layout: one layer per distinct package, naming every platform it serves.
fn seed_manifest(release: &ProviderRelease, config: &PlannedBlob) -> PlannedManifest {
    let mut layers: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for p in &release.packages {
        match layers.iter_mut().find(|(d, _)| d.digest == p.digest) {
            Some((_, platforms)) => platforms.push(p.platform.to_string()),
            None => {
                let mut d = Descriptor::new(SEED_LAYER_MEDIA_TYPE, &p.digest, p.size);
                d.annotations = layer_annotations(p);
                layers.push((d, vec![p.platform.to_string()]));
            }
        }
    }
    let layers = layers
        .into_iter()
        .map(|(mut d, platforms)| {
            d.annotations
                .insert(SEED_PLATFORMS_ANNOTATION.to_owned(), platforms.join(","));
            d
        })
        .collect();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
        artifact_type: None,
        config: Descriptor::new(SEED_CONFIG_MEDIA_TYPE, &config.digest, config.size),
        layers,
        subject: None,
        annotations: version_annotations(release),
    };
    manifest_json(MEDIA_TYPE_OCI_MANIFEST, &manifest)
}

/// OpenTofu layout: a manifest per platform, and the index listing them.
fn opentofu_manifests(
    release: &ProviderRelease,
    config: &PlannedBlob,
) -> (Vec<PlannedManifest>, PlannedManifest) {
    let mut platform_manifests = Vec::new();
    let mut entries = Vec::new();
    for p in &release.packages {
        let mut layer = Descriptor::new(TOFU_LAYER_MEDIA_TYPE, &p.digest, p.size);
        layer.annotations = layer_annotations(p);
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
            artifact_type: Some(TOFU_TARGET_ARTIFACT_TYPE.to_owned()),
            config: Descriptor::new(MEDIA_TYPE_EMPTY_JSON, &config.digest, config.size),
            layers: vec![layer],
            subject: None,
            annotations: BTreeMap::new(),
        };
        let planned = manifest_json(MEDIA_TYPE_OCI_MANIFEST, &manifest);
        let mut entry = Descriptor::new(
            MEDIA_TYPE_OCI_MANIFEST,
            &planned.digest,
            planned.body.len() as u64,
        );
        entry.artifact_type = Some(TOFU_TARGET_ARTIFACT_TYPE.to_owned());
        // Terraform's OS and architecture names are Go's, which is what OCI platforms use.
        entry.platform = Some(Platform {
            os: p.platform.os.clone(),
            architecture: p.platform.arch.clone(),
            variant: None,
        });
        entries.push(entry);
        platform_manifests.push(planned);
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.to_owned()),
        artifact_type: Some(TOFU_INDEX_ARTIFACT_TYPE.to_owned()),
        manifests: entries,
        annotations: version_annotations(release),
    };
    (
        platform_manifests,
        manifest_json(MEDIA_TYPE_OCI_INDEX, &index),
    )
}

// ---------------------------------------------------------------------------------------------
// Pushing
// ---------------------------------------------------------------------------------------------

/// Where to publish.
#[derive(Debug, Clone)]
pub struct PushTarget {
    pub registry: Registry,
    /// Repository prefix, without leading or trailing `/` (may be empty).
    pub name_prefix: String,
    /// Mirrors name repositories `PREFIX/HOST/NAMESPACE/TYPE`; a provider registry, whose
    /// providers all belong to its own host, `PREFIX/NAMESPACE/TYPE`.
    pub naming: Naming,
    pub credential: Credential,
}

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub layout: PublishLayout,
    /// Overwrite a tag that holds different content.
    pub force: bool,
    /// Only look: read the registry, write nothing.
    pub dry_run: bool,
    /// Blobs uploaded at once.
    pub jobs: usize,
    pub upload: UploadOptions,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            layout: PublishLayout::OpenTofu,
            force: false,
            dry_run: false,
            jobs: 4,
            upload: UploadOptions::default(),
        }
    }
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    Present,
    Mounted,
    Uploaded,
    /// Dry run: missing, would be uploaded.
    WouldUpload,
}

/// What happened to one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionOutcome {
    /// Written to a tag that did not exist.
    Pushed,
    /// Written over a tag that held other content (`--force`).
    Replaced {
        previous: Option<Digest>,
    },
    /// The tag already held exactly this content; nothing was written.
    UpToDate,
    /// Dry run: would be written (`replacing` if the tag holds other content and `--force`).
    WouldPush {
        replacing: bool,
    },
    /// The tag holds other content and `--force` was not given; nothing was written.
    Conflict {
        existing: Option<Digest>,
    },
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct VersionReport {
    pub address: ProviderAddress,
    pub version: semver::Version,
    pub repository: String,
    pub tag: String,
    /// Digest of the manifest the tag points at (or would).
    pub digest: Option<Digest>,
    pub outcome: VersionOutcome,
}

impl VersionReport {
    /// A line for the failure list, or `None` if this version did not fail.
    pub fn failure(&self) -> Option<String> {
        let what = format!(
            "{} {} ({}:{})",
            self.address, self.version, self.repository, self.tag
        );
        match &self.outcome {
            VersionOutcome::Conflict { existing } => Some(format!(
                "{what}: the tag already exists with different content{}; pass --force to overwrite it",
                existing
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )),
            VersionOutcome::Failed(e) => Some(format!("{what}: {e}")),
            _ => None,
        }
    }
}

/// The summary of a push.
#[derive(Debug, Clone, Default)]
pub struct PushReport {
    pub dry_run: bool,
    pub versions: Vec<VersionReport>,
    /// In a dry run: blobs and bytes that would be uploaded.
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_mounted: usize,
    pub blobs_present: usize,
    pub manifests_written: usize,
    pub elapsed: Duration,
}

impl PushReport {
    pub fn count(&self, pred: impl Fn(&VersionOutcome) -> bool) -> usize {
        self.versions.iter().filter(|v| pred(&v.outcome)).count()
    }

    pub fn failures(&self) -> Vec<String> {
        self.versions.iter().filter_map(|v| v.failure()).collect()
    }

    pub fn is_success(&self) -> bool {
        self.versions.iter().all(|v| v.failure().is_none())
    }
}

/// Told about each step, for progress display. Every method has a do-nothing default.
pub trait PushProgress: Send + Sync {
    fn push_started(&self, _target: &PushTarget, _plans: &[VersionPlan], _opts: &PushOptions) {}
    fn version_started(&self, _plan: &VersionPlan) {}
    fn blob_started(&self, _id: usize, _plan: &VersionPlan, _blob: &PlannedBlob) {}
    /// Bytes of the blob sent so far (back to 0 when an attempt is retried).
    fn blob_progress(&self, _id: usize, _sent: u64) {}
    fn blob_finished(
        &self,
        _id: usize,
        _plan: &VersionPlan,
        _blob: &PlannedBlob,
        _result: &Result<BlobOutcome, OciError>,
    ) {
    }
    fn version_finished(&self, _report: &VersionReport) {}
}

/// A [`PushProgress`] that shows nothing.
pub struct NoProgress;
impl PushProgress for NoProgress {}

/// Pushes every release, one version after another (blobs of a version in parallel). Failures
/// do not stop the others; they are in the report. Validation of the packages must have
/// happened before (see [`super::sources::collect`]), and plan errors are checked for all
/// versions before anything is written.
pub async fn push(
    client: &OciClient,
    target: &PushTarget,
    releases: &[ProviderRelease],
    opts: &PushOptions,
    progress: &dyn PushProgress,
) -> Result<PushReport, Vec<PlanError>> {
    let started = Instant::now();
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for r in releases {
        match plan_version(r, opts.layout, &target.name_prefix, target.naming) {
            Ok(p) => plans.push(p),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    progress.push_started(target, &plans, opts);
    let pusher = Pusher {
        client,
        target,
        opts,
        progress,
        known: Mutex::new(HashMap::new()),
        next_blob_id: AtomicUsize::new(0),
        report: Mutex::new(PushReport {
            dry_run: opts.dry_run,
            ..PushReport::default()
        }),
    };
    for plan in &plans {
        progress.version_started(plan);
        let (digest, outcome) = match pusher.push_version(plan).await {
            Ok(outcome) => (Some(plan.tagged.digest.clone()), outcome),
            Err(e) => (None, VersionOutcome::Failed(e.to_string())),
        };
        let report = VersionReport {
            address: plan.address.clone(),
            version: plan.version.clone(),
            repository: plan.repository.clone(),
            tag: plan.tag.clone(),
            digest,
            outcome,
        };
        progress.version_finished(&report);
        lock(&pusher.report).versions.push(report);
    }
    let mut report = pusher
        .report
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    report.elapsed = started.elapsed();
    Ok(report)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Pusher<'a> {
    client: &'a OciClient,
    target: &'a PushTarget,
    opts: &'a PushOptions,
    progress: &'a dyn PushProgress,
    /// A repository known to hold each blob, for cross-repository mounts.
    known: Mutex<HashMap<Digest, String>>,
    next_blob_id: AtomicUsize,
    report: Mutex<PushReport>,
}

impl Pusher<'_> {
    async fn push_version(&self, plan: &VersionPlan) -> Result<VersionOutcome, OciError> {
        let reg = &self.target.registry;
        let cred = &self.target.credential;
        let repo = plan.repository.as_str();
        let fetched = with_retries(&self.opts.upload, || {
            self.client.get_manifest(reg, repo, &plan.tag, cred)
        })
        .await;
        let existing = match fetched {
            Ok(m) if m.digest == plan.tagged.digest => {
                // Signatures may be added to a version pushed without them.
                if self.signatures_missing(plan).await? {
                    self.push_blobs(plan).await?;
                    if !self.opts.dry_run {
                        self.put_signatures(plan).await?;
                    }
                }
                return Ok(VersionOutcome::UpToDate);
            }
            Ok(m) => Some(Some(m.digest)),
            Err(OciError::NotFound { .. }) => None,
            // Something is there that we cannot even read as a manifest: it differs.
            Err(OciError::InvalidManifest { .. } | OciError::DigestMismatch { .. }) => Some(None),
            Err(e) => return Err(e),
        };
        if let Some(previous) = &existing {
            if !self.opts.force {
                return Ok(VersionOutcome::Conflict {
                    existing: previous.clone(),
                });
            }
        }

        self.push_blobs(plan).await?;
        if self.opts.dry_run {
            return Ok(VersionOutcome::WouldPush {
                replacing: existing.is_some(),
            });
        }
        for m in &plan.platform_manifests {
            let reference = m.digest.to_string();
            let present = self
                .client
                .head_manifest(reg, repo, &reference, cred, &self.opts.upload)
                .await?
                .is_some();
            if !present {
                self.put_manifest(repo, &reference, m).await?;
            }
        }
        self.put_manifest(repo, &plan.tag, &plan.tagged).await?;
        self.put_signatures(plan).await?;
        Ok(match existing {
            None => VersionOutcome::Pushed,
            Some(previous) => VersionOutcome::Replaced { previous },
        })
    }

    async fn push_blobs(&self, plan: &VersionPlan) -> Result<(), OciError> {
        let results: Vec<Result<(), OciError>> = futures::stream::iter(&plan.blobs)
            .map(|blob| self.push_blob(plan, blob))
            .buffer_unordered(self.opts.jobs.max(1))
            .collect()
            .await;
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether the plan carries author signatures the registry does not hold yet.
    async fn signatures_missing(&self, plan: &VersionPlan) -> Result<bool, OciError> {
        let Some(s) = &plan.signatures else {
            return Ok(false);
        };
        let tag = signatures_tag(&plan.tagged.digest);
        let present = self
            .client
            .head_manifest(
                &self.target.registry,
                &plan.repository,
                &tag,
                &self.target.credential,
                &self.opts.upload,
            )
            .await?;
        Ok(present.and_then(|h| h.digest).as_ref() != Some(&s.digest))
    }

    async fn put_signatures(&self, plan: &VersionPlan) -> Result<(), OciError> {
        match &plan.signatures {
            Some(s) => {
                let tag = signatures_tag(&plan.tagged.digest);
                self.put_manifest(&plan.repository, &tag, s).await
            }
            None => Ok(()),
        }
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        m: &PlannedManifest,
    ) -> Result<(), OciError> {
        self.client
            .put_manifest(
                &self.target.registry,
                repo,
                reference,
                m.media_type,
                m.body.clone(),
                &self.target.credential,
                &self.opts.upload,
            )
            .await?;
        lock(&self.report).manifests_written += 1;
        Ok(())
    }

    async fn push_blob(&self, plan: &VersionPlan, blob: &PlannedBlob) -> Result<(), OciError> {
        let id = self.next_blob_id.fetch_add(1, Ordering::Relaxed);
        self.progress.blob_started(id, plan, blob);
        let reg = &self.target.registry;
        let cred = &self.target.credential;
        let repo = plan.repository.as_str();
        let result = if self.opts.dry_run {
            self.client
                .blob_exists(reg, repo, &blob.digest, cred, &self.opts.upload)
                .await
                .map(|exists| {
                    if exists {
                        BlobOutcome::Present
                    } else {
                        BlobOutcome::WouldUpload
                    }
                })
        } else {
            let mount_from = lock(&self.known)
                .get(&blob.digest)
                .filter(|r| r.as_str() != repo)
                .cloned();
            let upload = BlobUpload {
                digest: &blob.digest,
                size: blob.size,
                source: &blob.source,
                mount_from: mount_from.as_deref(),
            };
            let report_progress = |sent: u64| self.progress.blob_progress(id, sent);
            self.client
                .upload_blob(reg, repo, upload, cred, &self.opts.upload, &report_progress)
                .await
                .map(|o| match o {
                    UploadOutcome::AlreadyPresent => BlobOutcome::Present,
                    UploadOutcome::Mounted => BlobOutcome::Mounted,
                    UploadOutcome::Uploaded => BlobOutcome::Uploaded,
                })
        };
        if let Ok(outcome) = &result {
            {
                let mut r = lock(&self.report);
                match outcome {
                    BlobOutcome::Present => r.blobs_present += 1,
                    BlobOutcome::Mounted => r.blobs_mounted += 1,
                    BlobOutcome::Uploaded | BlobOutcome::WouldUpload => {
                        r.blobs_uploaded += 1;
                        r.bytes_uploaded += blob.size;
                    }
                }
            }
            if *outcome != BlobOutcome::WouldUpload {
                lock(&self.known).insert(blob.digest.clone(), repo.to_owned());
            }
        }
        self.progress.blob_finished(id, plan, blob, &result);
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Manifest;
    use crate::provider::layout;
    use crate::provider::TargetPlatform;
    use std::path::PathBuf;

    fn release(packages: &[(&str, u8)]) -> ProviderRelease {
        ProviderRelease {
            address: ProviderAddress::new("registry.terraform.io", "acme", "foo").unwrap(),
            version: "1.2.3+b1".parse().unwrap(),
            protocols: Vec::new(),
            signatures: None,
            packages: packages
                .iter()
                .map(|(platform, n)| PackageFile {
                    platform: TargetPlatform::parse(platform).unwrap(),
                    path: PathBuf::from(format!("/x/{platform}.zip")),
                    file_name: format!("terraform-provider-foo_1.2.3+b1_{platform}.zip"),
                    size: 100 + *n as u64,
                    digest: Digest::from_sha256_hex(&format!("{n:02x}").repeat(32)).unwrap(),
                    h1: format!("h1:{n}"),
                })
                .collect(),
        }
    }

    #[test]
    fn opentofu_plan_matches_the_layout_and_is_read_back() {
        let r = release(&[("darwin_arm64", 1), ("linux_amd64", 2)]);
        let plan = plan_version(&r, PublishLayout::OpenTofu, "tp", Naming::WithHostname).unwrap();
        assert_eq!(plan.repository, "tp/registry.terraform.io/acme/foo");
        assert_eq!(plan.tag, "1.2.3_b1");
        assert_eq!(plan.blobs.len(), 3);
        assert_eq!(plan.tagged.media_type, MEDIA_TYPE_OCI_INDEX);
        let index: serde_json::Value = serde_json::from_slice(&plan.tagged.body).unwrap();
        assert_eq!(index["artifactType"], TOFU_INDEX_ARTIFACT_TYPE);
        assert_eq!(index["mediaType"], MEDIA_TYPE_OCI_INDEX);
        assert_eq!(index["manifests"][1]["platform"]["os"], "linux");
        assert_eq!(index["manifests"][1]["platform"]["architecture"], "amd64");
        assert_eq!(
            index["manifests"][1]["artifactType"],
            TOFU_TARGET_ARTIFACT_TYPE
        );
        let target: serde_json::Value =
            serde_json::from_slice(&plan.platform_manifests[1].body).unwrap();
        assert_eq!(target["artifactType"], TOFU_TARGET_ARTIFACT_TYPE);
        assert_eq!(target["config"]["mediaType"], MEDIA_TYPE_EMPTY_JSON);
        assert_eq!(
            target["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(target["config"]["size"], 2);
        assert_eq!(target["layers"][0]["mediaType"], "archive/zip");
        assert_eq!(target["layers"][0]["annotations"][H1_ANNOTATION], "h1:2");

        // What we write is what the mirror reads.
        let m = Manifest::parse(Some(MEDIA_TYPE_OCI_INDEX), &plan.tagged.body).unwrap();
        let layout::VersionLayout::OpenTofu(targets) = layout::classify(&m).unwrap() else {
            panic!("not read as OpenTofu layout")
        };
        assert_eq!(targets.len(), 2);
        let Manifest::Image(tm) = Manifest::parse(None, &plan.platform_manifests[1].body).unwrap()
        else {
            panic!()
        };
        let pkg = layout::opentofu_package(targets[1].0.clone(), &tm).unwrap();
        assert_eq!(pkg.digest, r.packages[1].digest);
        assert_eq!(targets[1].1.digest, plan.platform_manifests[1].digest);

        // Deterministic.
        let again = plan_version(&r, PublishLayout::OpenTofu, "tp", Naming::WithHostname).unwrap();
        assert_eq!(again.tagged.digest, plan.tagged.digest);
    }

    #[test]
    fn seed_plan_shares_layers_between_identical_packages() {
        let r = release(&[("darwin_arm64", 1), ("linux_amd64", 2), ("linux_arm64", 2)]);
        let plan = plan_version(&r, PublishLayout::Seed, "", Naming::WithHostname).unwrap();
        assert_eq!(plan.repository, "registry.terraform.io/acme/foo");
        assert!(plan.platform_manifests.is_empty());
        assert_eq!(plan.blobs.len(), 3);
        let m: serde_json::Value = serde_json::from_slice(&plan.tagged.body).unwrap();
        assert_eq!(m["config"]["mediaType"], SEED_CONFIG_MEDIA_TYPE);
        assert_eq!(m["layers"].as_array().unwrap().len(), 2);
        assert_eq!(
            m["layers"][1]["annotations"][SEED_PLATFORMS_ANNOTATION],
            "linux_amd64,linux_arm64"
        );
        assert_eq!(m["layers"][1]["annotations"][H1_ANNOTATION], "h1:2");
        let parsed = Manifest::parse(Some(MEDIA_TYPE_OCI_MANIFEST), &plan.tagged.body).unwrap();
        let layout::VersionLayout::Seed(pkgs) = layout::classify(&parsed).unwrap() else {
            panic!("not read as seed layout")
        };
        assert_eq!(pkgs.len(), 3);
    }

    #[test]
    fn invalid_repository_names_are_refused() {
        let mut r = release(&[("linux_amd64", 1)]);
        r.address = ProviderAddress::new("localhost:8080", "acme", "foo").unwrap();
        let err =
            plan_version(&r, PublishLayout::OpenTofu, "tp", Naming::WithHostname).unwrap_err();
        assert!(matches!(err, PlanError::InvalidRepository { .. }), "{err}");
    }
}
