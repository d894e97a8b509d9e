//! The provider registry protocol: provider `HOST/NAMESPACE/TYPE` is the OCI repository
//! `NAME_PREFIX/NAMESPACE/TYPE`, in either provider layout. Each version's SHA256SUMS lists its
//! packages and is signed with the configured key, unless the author's own SHA256SUMS,
//! signature and key were pushed with it: then those are served, so Terraform checks the
//! author's signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use super::push_segment;
use crate::metadata::Cached;
use crate::mirror::{MirrorError, MirrorService};
use crate::oci::{Credential, Digest, Manifest, OciError};
use crate::provider::layout::{self, Package, VersionLayout};
use crate::provider::{version_from_tag, ProviderAddress, TargetPlatform};
use crate::signing::SigningKey;

/// The author's signature material of a version: an image manifest tagged
/// [`signatures_tag`] in the version's repository, its `subject` the version's manifest.
pub const SIGNATURES_ARTIFACT_TYPE: &str = "application/vnd.terraform.provider.signatures.v1";
pub const SHA256SUMS_MEDIA_TYPE: &str = "application/vnd.terraform.provider.sha256sums";
pub const SIGNATURE_MEDIA_TYPE: &str = "application/pgp-signature";
pub const PUBLIC_KEY_MEDIA_TYPE: &str = "application/pgp-keys";
/// The plugin protocol versions a provider speaks, comma-separated (`5.0,6.0`), on the
/// version's manifest or index. Without it: `5.0`.
pub const PROTOCOLS_ANNOTATION: &str = "io.terraform.provider.protocols";
pub const DEFAULT_PROTOCOLS: &[&str] = &["5.0"];

/// Largest SHA256SUMS, signature or key read from an origin.
const MAX_SIGNATURE_PART: u64 = 1 << 20;
/// Versions whose manifests are read at once for the versions list.
const VERSION_FETCH_CONCURRENCY: usize = 8;
/// Bound on remembered signed documents.
const MAX_SIGNED: usize = 10_000;

/// The tag of a version's signature material: named after the manifest it signs, like
/// cosign's `sha256-HEX.sig`, so a moved version tag never pairs with stale signatures.
pub fn signatures_tag(subject: &Digest) -> String {
    format!("sha256-{}.terraform-sig", subject.hex())
}

/// The conventional file name of a provider package.
pub fn package_filename(
    type_name: &str,
    version: &semver::Version,
    platform: &TargetPlatform,
) -> String {
    format!("terraform-provider-{type_name}_{version}_{platform}.zip")
}

/// A SHA256SUMS document listing `packages` under their conventional names, sorted.
pub fn sha256sums(type_name: &str, version: &semver::Version, packages: &[Package]) -> String {
    let mut entries: Vec<(String, &str)> = packages
        .iter()
        .map(|p| {
            (
                package_filename(type_name, version, &p.platform),
                p.digest.hex(),
            )
        })
        .collect();
    entries.sort();
    entries.dedup();
    entries
        .iter()
        .map(|(file, hex)| format!("{hex}  {file}\n"))
        .collect()
}

/// The protocol versions a version's manifest declares.
pub fn protocols(manifest: &Manifest) -> Vec<String> {
    let annotations = match manifest {
        Manifest::Image(m) => &m.annotations,
        Manifest::Index(i) => &i.annotations,
    };
    let declared: Vec<String> = annotations
        .get(PROTOCOLS_ANNOTATION)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| is_protocol_version(p))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if declared.is_empty() {
        DEFAULT_PROTOCOLS.iter().map(|p| (*p).to_owned()).collect()
    } else {
        declared
    }
}

/// `MAJOR` or `MAJOR.MINOR`, small numbers.
pub fn is_protocol_version(p: &str) -> bool {
    let mut parts = p.split('.');
    let num = |s: Option<&str>| {
        s.is_some_and(|s| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
    };
    let major = num(parts.next());
    match parts.next() {
        None => major,
        minor => major && num(minor) && parts.next().is_none(),
    }
}

/// `GET .../versions`.
#[derive(Debug, Serialize)]
pub struct VersionsDocument {
    pub versions: Vec<VersionEntry>,
}

#[derive(Debug, Serialize)]
pub struct VersionEntry {
    pub version: String,
    pub protocols: Vec<String>,
    pub platforms: Vec<PlatformEntry>,
}

#[derive(Debug, Serialize)]
pub struct PlatformEntry {
    pub os: String,
    pub arch: String,
}

/// `GET .../VERSION/download/OS/ARCH`.
#[derive(Debug, Serialize)]
pub struct DownloadDocument {
    pub protocols: Vec<String>,
    pub os: String,
    pub arch: String,
    pub filename: String,
    pub download_url: String,
    pub shasums_url: String,
    pub shasums_signature_url: String,
    pub shasum: String,
    pub signing_keys: SigningKeys,
}

#[derive(Debug, Serialize)]
pub struct SigningKeys {
    pub gpg_public_keys: Vec<GpgPublicKey>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpgPublicKey {
    pub key_id: String,
    pub ascii_armor: String,
    pub trust_signature: String,
    pub source: String,
    pub source_url: Option<String>,
}

/// A version's SHA256SUMS, its detached signature and the key that made it.
#[derive(Debug)]
pub struct SignedSums {
    pub document: Bytes,
    pub signature: Bytes,
    pub key: GpgPublicKey,
}

/// (version manifest, author signatures manifest).
type SignedKey = (Digest, Option<Digest>);

/// The configured `provider_registry`.
pub struct ProviderRegistry {
    origin: Arc<MirrorService>,
    key: Arc<SigningKey>,
    /// Signed documents per (version manifest, author signatures manifest): both digests
    /// name immutable content, so the entry never goes stale.
    signed: Mutex<HashMap<SignedKey, Arc<SignedSums>>>,
}

impl ProviderRegistry {
    pub fn new(origin: Arc<MirrorService>, key: Arc<SigningKey>) -> ProviderRegistry {
        ProviderRegistry {
            origin,
            key,
            signed: Mutex::new(HashMap::new()),
        }
    }

    pub fn origin(&self) -> &Arc<MirrorService> {
        &self.origin
    }

    pub fn key(&self) -> &Arc<SigningKey> {
        &self.key
    }

    /// Every version with its protocols and platforms. A version whose manifest cannot be
    /// read as a provider is left out (and logged), so one bad push does not hide the rest.
    pub async fn versions(
        &self,
        addr: &ProviderAddress,
        client: &Credential,
    ) -> Result<Cached<VersionsDocument>, MirrorError> {
        let repo = self.origin.repository(addr);
        let tags = self
            .origin
            .tags_for(
                &repo,
                client,
                || MirrorError::Unknown(format!("provider {}", self.origin.describe(addr))),
                &self.origin.describe(addr),
            )
            .await?;
        let mut versions: Vec<semver::Version> = tags
            .value
            .iter()
            .filter_map(|t| version_from_tag(t))
            .collect();
        versions.sort();
        versions.dedup();
        let entries: Vec<Result<Option<VersionEntry>, MirrorError>> =
            futures::stream::iter(versions)
                .map(|v| async move {
                    match self.version_entry(addr, &v, client).await {
                        Ok(e) => Ok(Some(e)),
                        Err(e) if is_denial(&e) => Err(e),
                        Err(e) => {
                            tracing::warn!(provider = %self.origin.describe(addr), version = %v, error = %e, "left out of the versions list");
                            Ok(None)
                        }
                    }
                })
                .buffered(VERSION_FETCH_CONCURRENCY)
                .collect()
                .await;
        let mut list = Vec::new();
        for e in entries {
            if let Some(e) = e? {
                list.push(e);
            }
        }
        Ok(Cached {
            value: VersionsDocument { versions: list },
            age: tags.age,
            stale: tags.stale,
        })
    }

    async fn version_entry(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        client: &Credential,
    ) -> Result<VersionEntry, MirrorError> {
        let m = self.origin.version_manifest(addr, version, client).await?;
        let manifest = &m.value.1;
        // The platforms are in the version's own manifest in both layouts: listing them
        // needs no per-platform manifest.
        let layout = layout::classify(manifest).map_err(|reason| MirrorError::NotAProvider {
            what: format!("provider {} {version}", self.origin.describe(addr)),
            reason,
        })?;
        let mut platforms: Vec<&TargetPlatform> = match &layout {
            VersionLayout::Seed(packages) => packages.iter().map(|p| &p.platform).collect(),
            VersionLayout::OpenTofu(targets) => targets.iter().map(|(p, _)| p).collect(),
        };
        platforms.sort();
        platforms.dedup();
        Ok(VersionEntry {
            version: version.to_string(),
            protocols: protocols(manifest),
            platforms: platforms
                .into_iter()
                .map(|p| PlatformEntry {
                    os: p.os.clone(),
                    arch: p.arch.clone(),
                })
                .collect(),
        })
    }

    /// Where to get one platform's package, and what vouches for it.
    pub async fn download(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        platform: &TargetPlatform,
        client: &Credential,
    ) -> Result<Cached<DownloadDocument>, MirrorError> {
        let m = self.origin.version_manifest(addr, version, client).await?;
        let (digest, manifest) = &m.value;
        let packages = self
            .origin
            .manifest_packages(addr, version, digest, manifest, client)
            .await?;
        let Some(package) = packages.iter().find(|p| &p.platform == platform) else {
            return Err(MirrorError::Unknown(format!(
                "a {platform} package of provider {} {version}",
                self.origin.describe(addr)
            )));
        };
        let repo = self.origin.repository(addr);
        let signed = self
            .signed_sums(addr, version, digest, &packages, client, false)
            .await?;
        let filename = package_filename(&addr.type_name, version, platform);
        let base = provider_path(addr);
        let mut download_url = format!("{base}/download/sha256/{}", package.digest.hex());
        push_segment(&mut download_url, &filename);
        download_url.push_str(
            &self
                .origin
                .seal_query(&repo, package.digest.as_str(), client)?,
        );
        let sums_seal = self
            .origin
            .seal_query(&repo, &sums_subject(digest), client)?;
        let mut shasums_url = base.clone();
        push_segment(&mut shasums_url, &version.to_string());
        shasums_url.push_str("/sha256/");
        shasums_url.push_str(digest.hex());
        let sums_name = format!("terraform-provider-{}_{version}_SHA256SUMS", addr.type_name);
        let mut shasums_signature_url = shasums_url.clone();
        push_segment(&mut shasums_url, &sums_name);
        push_segment(&mut shasums_signature_url, &format!("{sums_name}.sig"));
        shasums_url.push_str(&sums_seal);
        shasums_signature_url.push_str(&sums_seal);
        Ok(Cached {
            value: DownloadDocument {
                protocols: protocols(manifest),
                os: platform.os.clone(),
                arch: platform.arch.clone(),
                filename,
                download_url,
                shasums_url,
                shasums_signature_url,
                shasum: package.digest.hex().to_owned(),
                signing_keys: SigningKeys {
                    gpg_public_keys: vec![signed.key.clone()],
                },
            },
            age: m.age,
            stale: m.stale,
        })
    }

    /// The SHA256SUMS (or its signature) of the version whose manifest is `manifest`, for a
    /// URL issued by [`ProviderRegistry::download`].
    pub async fn sums(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        manifest: &Digest,
        token: Option<&str>,
    ) -> Result<Arc<SignedSums>, MirrorError> {
        let repo = self.origin.repository(addr);
        let cred = self
            .origin
            .sealed_credential(&repo, &sums_subject(manifest), token)?;
        let warm = format!("{}@{version}", self.origin.describe(addr));
        let parsed = self
            .origin
            .manifest_by_digest(&repo, manifest, &cred, &warm)
            .await?;
        let packages = self
            .origin
            .manifest_packages(addr, version, manifest, &parsed, &cred)
            .await?;
        self.signed_sums(addr, version, manifest, &packages, &cred, true)
            .await
    }

    async fn signed_sums(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        manifest: &Digest,
        packages: &[Package],
        client: &Credential,
        via_sealed_url: bool,
    ) -> Result<Arc<SignedSums>, MirrorError> {
        let repo = self.origin.repository(addr);
        let warm = format!("{}@{version}", self.origin.describe(addr));
        let not_there = || MirrorError::Unknown(String::new());
        let author = match self
            .origin
            .tagged_manifest(&repo, &signatures_tag(manifest), client, not_there, &warm)
            .await
        {
            Ok(m) => Some(m.value),
            // No author signature (or none cached while offline): the server signs.
            Err(MirrorError::Unknown(_)) | Err(MirrorError::Offline { .. }) => None,
            Err(e) => return Err(e),
        };
        let key = (manifest.clone(), author.as_ref().map(|(d, _)| d.clone()));
        if let Some(s) = self
            .signed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(s.clone());
        }
        let signed = match &author {
            Some((_, m)) => {
                self.author_sums(&repo, m, client, via_sealed_url, &warm)
                    .await?
            }
            None => {
                let document = sha256sums(&addr.type_name, version, packages);
                let signature = self.key.sign(document.as_bytes()).map_err(|e| {
                    MirrorError::Origin(Arc::new(OciError::Protocol(format!(
                        "signing SHA256SUMS: {e}"
                    ))))
                })?;
                SignedSums {
                    document: document.into(),
                    signature: signature.into(),
                    key: GpgPublicKey {
                        key_id: self.key.key_id.clone(),
                        ascii_armor: self.key.public_armored.clone(),
                        trust_signature: String::new(),
                        source: String::new(),
                        source_url: None,
                    },
                }
            }
        };
        if let Some(expected) = packages.first() {
            let line = format!(
                "{}  {}",
                expected.digest.hex(),
                package_filename(&addr.type_name, version, &expected.platform)
            );
            if !String::from_utf8_lossy(&signed.document).contains(&line) {
                tracing::warn!(provider = %self.origin.describe(addr), %version, "the author's SHA256SUMS does not list the packages as stored; Terraform will refuse them");
            }
        }
        let signed = Arc::new(signed);
        let mut map = self.signed.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SIGNED {
            map.clear();
        }
        map.insert(key, signed.clone());
        Ok(signed)
    }

    /// The author's SHA256SUMS, signature and key, as pushed. Served as they are, so the
    /// client's verification is the one that counts; a mismatch is logged here too.
    async fn author_sums(
        &self,
        repo: &str,
        manifest: &Manifest,
        client: &Credential,
        via_sealed_url: bool,
        warm: &str,
    ) -> Result<SignedSums, MirrorError> {
        let bad = |reason: &str| MirrorError::NotAProvider {
            what: format!("the signatures of {repo}"),
            reason: crate::provider::layout::LayoutError(reason.to_owned()),
        };
        let Manifest::Image(m) = manifest else {
            return Err(bad(
                "the signature tag holds an index, not an image manifest",
            ));
        };
        if m.artifact_type.as_deref() != Some(SIGNATURES_ARTIFACT_TYPE) {
            return Err(bad("the signature manifest has another artifactType"));
        }
        let layer = |media_type: &str| {
            m.layers
                .iter()
                .find(|l| l.media_type == media_type)
                .ok_or_else(|| bad(&format!("no {media_type} layer")))
        };
        let (sums, sig, key) = (
            layer(SHA256SUMS_MEDIA_TYPE)?,
            layer(SIGNATURE_MEDIA_TYPE)?,
            layer(PUBLIC_KEY_MEDIA_TYPE)?,
        );
        let read = |d| {
            self.origin.small_blob(
                repo,
                d,
                client.clone(),
                via_sealed_url,
                MAX_SIGNATURE_PART,
                self.origin.warm_command(warm),
            )
        };
        let (document, signature, armor) = futures::try_join!(read(sums), read(sig), read(key))?;
        let armor = String::from_utf8(armor.to_vec())
            .map_err(|_| bad("the author's public key is not ASCII-armored text"))?;
        let key_id = crate::signing::public_key_id(&armor)
            .map_err(|e| bad(&format!("the author's public key: {e}")))?;
        if let Err(e) = crate::signing::verify_detached(&armor, &document, &signature) {
            tracing::warn!(repository = %repo, error = %e, "the author's SHA256SUMS signature does not verify; serving it as pushed, so Terraform will refuse it");
        }
        Ok(SignedSums {
            document,
            signature,
            key: GpgPublicKey {
                key_id,
                ascii_armor: armor,
                trust_signature: String::new(),
                source: String::new(),
                source_url: None,
            },
        })
    }
}

/// What a SHA256SUMS URL's seal is bound to: the version's manifest, kept apart from blobs.
fn sums_subject(manifest: &Digest) -> String {
    format!("sha256sums:{manifest}")
}

/// `/v1/providers/NAMESPACE/TYPE`.
fn provider_path(addr: &ProviderAddress) -> String {
    let mut p = String::from("/v1/providers");
    push_segment(&mut p, &addr.namespace);
    push_segment(&mut p, &addr.type_name);
    p
}

/// An error that means "not for you": it must not be hidden by leaving a version out.
fn is_denial(e: &MirrorError) -> bool {
    match e {
        MirrorError::Origin(o) => matches!(
            **o,
            OciError::Unauthorized { .. } | OciError::Forbidden { .. }
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_sorted_by_file_name() {
        let v = semver::Version::new(1, 2, 0);
        let pkg = |platform: &str, c: char| Package {
            platform: TargetPlatform::parse(platform).unwrap(),
            digest: Digest::from_sha256_hex(&c.to_string().repeat(64)).unwrap(),
            size: 1,
            annotated_h1: None,
        };
        let doc = sha256sums(
            "foo",
            &v,
            &[pkg("linux_amd64", 'a'), pkg("darwin_arm64", 'b')],
        );
        assert_eq!(
            doc,
            format!(
                "{}  terraform-provider-foo_1.2.0_darwin_arm64.zip\n{}  terraform-provider-foo_1.2.0_linux_amd64.zip\n",
                "b".repeat(64),
                "a".repeat(64)
            )
        );
    }

    #[test]
    fn protocol_versions() {
        for ok in ["5", "5.0", "6.12"] {
            assert!(is_protocol_version(ok), "{ok}");
        }
        for bad in ["", "5.", ".5", "5.0.1", "x", "5.0a", "1234"] {
            assert!(!is_protocol_version(bad), "{bad}");
        }
    }
}
