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
use crate::provider::{versions_from_tags, ProviderAddress, TargetPlatform};
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

/// Largest author SHA256SUMS, signature and public key read from an origin. Real ones are a
/// few KiB; a key with many certifications can be tens.
const MAX_AUTHOR_SUMS: u64 = 64 << 10;
const MAX_AUTHOR_SIGNATURE: u64 = 16 << 10;
const MAX_AUTHOR_KEY: u64 = 256 << 10;
/// Versions whose manifests are read at once for the versions list.
const VERSION_FETCH_CONCURRENCY: usize = 8;
/// The versions list covers at most this many (the newest): each costs a manifest.
pub const MAX_LISTED_VERSIONS: usize = 2_000;
/// Bound on the bytes of remembered signed documents.
const MAX_SIGNED_BYTES: usize = 64 << 20;

/// The tag of a version's signature material: named after the manifest it signs, like
/// cosign's `sha256-HEX.sig`, so a moved version tag never pairs with stale signatures.
pub fn signatures_tag(subject: &Digest) -> String {
    format!("sha256-{}.terraform-sig", subject.hex())
}

pub use crate::provider::package_filename;

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

impl GpgPublicKey {
    /// A key without a partner trust signature: Terraform reports the provider as
    /// self-signed, with this key ID.
    fn new(key_id: String, ascii_armor: String) -> GpgPublicKey {
        GpgPublicKey {
            key_id,
            ascii_armor,
            trust_signature: String::new(),
            source: String::new(),
            source_url: None,
        }
    }
}

/// A version's SHA256SUMS, its detached signature and the key that made it.
#[derive(Debug)]
pub struct SignedSums {
    pub document: Bytes,
    pub signature: Bytes,
    pub key: GpgPublicKey,
}

/// (repository, version, version manifest, author signatures manifest).
type SignedKey = (String, semver::Version, Digest, Option<Digest>);

impl SignedSums {
    fn bytes(&self) -> usize {
        self.document.len() + self.signature.len() + self.key.ascii_armor.len()
    }
}

/// The configured `provider_registry`.
pub struct ProviderRegistry {
    origin: Arc<MirrorService>,
    key: Arc<SigningKey>,
    /// Signed documents per version and manifests: the digests name immutable content, so
    /// an entry never goes stale. With the bytes they hold, which are bounded.
    signed: Mutex<(HashMap<SignedKey, Arc<SignedSums>>, usize)>,
}

impl ProviderRegistry {
    pub fn new(origin: Arc<MirrorService>, key: Arc<SigningKey>) -> ProviderRegistry {
        ProviderRegistry {
            origin,
            key,
            signed: Mutex::new((HashMap::new(), 0)),
        }
    }

    pub fn origin(&self) -> &Arc<MirrorService> {
        &self.origin
    }

    pub fn key(&self) -> &Arc<SigningKey> {
        &self.key
    }

    /// Every version with its protocols and platforms (the newest [`MAX_LISTED_VERSIONS`]).
    /// A version whose manifest is not a provider is left out and logged, so one bad push
    /// does not hide the rest. One that cannot be read now (origin failing, or offline and not
    /// cached) is left out too, and the list is marked stale; if no version can be read, the
    /// error is the answer, so offline clients get the hint to `warm`.
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
                || self.origin.describe(addr),
            )
            .await?;
        let mut versions = versions_from_tags(&tags.value);
        if versions.len() > MAX_LISTED_VERSIONS {
            tracing::warn!(provider = %self.origin.describe(addr), versions = versions.len(), listed = MAX_LISTED_VERSIONS, "listing only the newest versions");
            versions.drain(..versions.len() - MAX_LISTED_VERSIONS);
        }
        let entries: Vec<(semver::Version, Result<VersionEntry, MirrorError>)> =
            futures::stream::iter(versions)
                .map(|v| async move {
                    let e = self.version_entry(addr, &v, client).await;
                    (v, e)
                })
                .buffered(VERSION_FETCH_CONCURRENCY)
                .collect()
                .await;
        let mut list = Vec::new();
        let mut unavailable = None;
        for (v, e) in entries {
            match e {
                Ok(e) => list.push(e),
                Err(e @ (MirrorError::NotAProvider { .. } | MirrorError::UnknownVersion(..))) => {
                    tracing::warn!(provider = %self.origin.describe(addr), version = %v, error = %e, "not a provider: left out of the versions list");
                }
                Err(e) if is_denial(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(provider = %self.origin.describe(addr), version = %v, error = %e, "cannot be read now: left out of the versions list");
                    unavailable.get_or_insert(e);
                }
            }
        }
        if list.is_empty() {
            if let Some(e) = unavailable {
                return Err(e);
            }
        }
        Ok(Cached {
            value: VersionsDocument { versions: list },
            age: tags.age,
            stale: tags.stale || unavailable.is_some(),
            anonymous: tags.anonymous,
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
            .seal_query(&repo, &sums_subject(digest, version), client)?;
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
            anonymous: m.anonymous,
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
            .sealed_credential(&repo, &sums_subject(manifest, version), token)?;
        // The document names the version's packages: it is only made for the manifest the
        // version's tag names, never for a version picked by the caller.
        let current = self.origin.version_manifest(addr, version, &cred).await?;
        let (digest, parsed) = &current.value;
        if digest != manifest {
            return Err(MirrorError::UnknownVersion(
                format!(
                    "SHA256SUMS for manifest {manifest} of provider {}",
                    self.origin.describe(addr)
                ),
                version.clone(),
            ));
        }
        let packages = self
            .origin
            .manifest_packages(addr, version, manifest, parsed, &cred)
            .await?;
        let sealed = self.origin.needs_authorization();
        self.signed_sums(addr, version, manifest, &packages, &cred, sealed)
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
        // Without author signatures (or, offline, none cached) the server signs.
        let author = self
            .origin
            .optional_manifest(&repo, &signatures_tag(manifest), client)
            .await?;
        let key = (
            repo.clone(),
            version.clone(),
            manifest.clone(),
            author.as_ref().map(|(d, _)| d.clone()),
        );
        if let Some(s) = self
            .signed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
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
                let signature = self
                    .key
                    .sign(document.as_bytes())
                    .map_err(|e| MirrorError::Signing(e.to_string()))?;
                SignedSums {
                    document: document.into(),
                    signature: signature.into(),
                    key: GpgPublicKey::new(
                        self.key.key_id.clone(),
                        self.key.public_armored.clone(),
                    ),
                }
            }
        };
        let listed = listed_packages(&signed.document);
        for p in packages {
            let file = package_filename(&addr.type_name, version, &p.platform);
            if listed.get(file.as_str()) != Some(&p.digest.hex()) {
                tracing::warn!(provider = %self.origin.describe(addr), %version, package = %file, "the author's SHA256SUMS does not list this package as stored; Terraform will refuse it");
            }
        }
        let signed = Arc::new(signed);
        let mut guard = self.signed.lock().unwrap_or_else(|p| p.into_inner());
        let (map, bytes) = &mut *guard;
        if *bytes + signed.bytes() > MAX_SIGNED_BYTES {
            map.clear();
            *bytes = 0;
        }
        *bytes += signed.bytes();
        if let Some(old) = map.insert(key, signed.clone()) {
            *bytes -= old.bytes();
        }
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
        let bad = |reason: &str| MirrorError::BadSignatures {
            what: repo.to_owned(),
            reason: reason.to_owned(),
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
        let read = |d, max| {
            self.origin.small_blob(
                repo,
                d,
                client.clone(),
                via_sealed_url,
                max,
                self.origin.warm_command(warm),
            )
        };
        let (document, signature, armor) = futures::try_join!(
            read(sums, MAX_AUTHOR_SUMS),
            read(sig, MAX_AUTHOR_SIGNATURE),
            read(key, MAX_AUTHOR_KEY)
        )?;
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
            key: GpgPublicKey::new(key_id, armor),
        })
    }
}

/// What a SHA256SUMS URL's seal is bound to: the version and its manifest, kept apart from
/// blobs.
fn sums_subject(manifest: &Digest, version: &semver::Version) -> String {
    format!("sha256sums:{version}:{manifest}")
}

/// File name → hex digest of the lines of a SHA256SUMS document (`<hex>  <name>`; a `*`
/// before the name marks binary mode). Other lines are ignored.
fn listed_packages(document: &[u8]) -> HashMap<&str, &str> {
    std::str::from_utf8(document)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (hex, name) = l.split_once(char::is_whitespace)?;
            let name = name.trim_start();
            Some((name.strip_prefix('*').unwrap_or(name), hex))
        })
        .collect()
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
