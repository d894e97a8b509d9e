//! Terraform's provider network mirror protocol, answered from an OCI registry: which versions
//! exist (`index.json`), which packages a version has (`VERSION.json`), and the packages.

pub mod sealed_url;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::access::MirrorAccess;
use crate::config::ProviderMirrorConfig;
use crate::metadata::{Cached, MetadataCache, MetadataError};
use crate::oci::{Credential, Digest, Manifest, OciError, Registry};
use crate::provider::layout::{self, LayoutError, Package, VersionLayout};
use crate::provider::{hash, tag_for_version, version_from_tag, ProviderAddress};
use crate::store::{BlobSource, BlobStore, CachedBlob, Fill, Lookup};
use sealed_url::{Binding, SealError, UrlSealer};

/// How many per-platform manifests of one OpenTofu-layout version are fetched at once.
const TARGET_FETCH_CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Origin(Arc<OciError>),
    /// Offline mode, or nothing cached: says what is missing and how to fetch it.
    #[error("the cache does not hold {what}, and in offline mode the origin is not asked; to add it, run on a host that can reach the registry: {warm_command}")]
    Offline { what: String, warm_command: String },
    /// What is missing, as the client names it (`provider NS/TYPE`, `module NS/NAME/SYSTEM`).
    #[error("{0} is not available from this mirror")]
    Unknown(String),
    #[error("{0} has no version {1} in this mirror")]
    UnknownVersion(String, semver::Version),
    #[error("the origin's data for {what} is not a provider in a known layout: {reason}")]
    NotAProvider { what: String, reason: LayoutError },
    #[error("the origin's data for {what} is not a module package ({reason})")]
    NotAModule { what: String, reason: String },
    /// The author's signature material of a version is malformed.
    #[error("the origin's signatures for {what} are unusable: {reason}")]
    BadSignatures { what: String, reason: String },
    /// Signing with the server's own key failed.
    #[error("cannot sign SHA256SUMS: {0}")]
    Signing(String),
    /// The cache could not be read.
    #[error("cannot read the cache: {0}")]
    Local(String),
    #[error("this download URL needs its signed query string; get a fresh URL from the version's JSON document")]
    MissingDownloadToken,
    #[error("this download URL is invalid or has expired; get a fresh URL from the version's JSON document")]
    BadDownloadToken(SealError),
}

impl From<OciError> for MirrorError {
    fn from(e: OciError) -> Self {
        MirrorError::Origin(Arc::new(e))
    }
}

/// A package on its way to the client: from the cache, or from the fetch filling it.
pub enum PackageBody {
    Cached(CachedBlob),
    /// `started`: this request started the origin fetch (else it joined one).
    Filling {
        fill: Arc<Fill>,
        started: bool,
    },
}

/// `index.json`: `{"versions":{"1.0.0":{}}}`.
#[derive(Debug, Serialize)]
pub struct IndexDocument {
    pub versions: BTreeMap<String, EmptyObject>,
}

#[derive(Debug, Serialize)]
pub struct EmptyObject {}

/// `VERSION.json`: `{"archives":{"linux_amd64":{"url":"...","hashes":["zh:..."]}}}`.
#[derive(Debug, Serialize)]
pub struct VersionDocument {
    pub archives: BTreeMap<String, Archive>,
}

#[derive(Debug, Serialize)]
pub struct Archive {
    pub url: String,
    pub hashes: Vec<String>,
}

pub use crate::provider::Naming;

/// One configured origin: a `provider_mirror`, or the origin behind a registry.
pub struct MirrorService {
    pub config: ProviderMirrorConfig,
    naming: Naming,
    access: MirrorAccess,
    registry: Registry,
    meta: Arc<MetadataCache>,
    sealer: Arc<UrlSealer>,
    store: Arc<BlobStore>,
    /// Packages per manifest digest: manifests never change, so neither does this.
    resolved: Mutex<HashMap<Digest, Arc<Vec<Package>>>>,
    /// Serialised `VERSION.json` bodies of mirrors without sealed URLs (which are the same
    /// for every client), valid for one manifest digest and one store generation.
    /// Keyed by manifest digest (looked up without allocating); the address and version are
    /// checked, since one manifest may be pushed under several names.
    version_bodies: Mutex<HashMap<Digest, VersionBody>>,
    /// `Cache-Control` of the JSON documents: `[public, private]`.
    json_cache_control: [http::HeaderValue; 2],
    /// Whether the origin challenged an anonymous `GET /v2/`, and when we last asked.
    origin_challenge: Mutex<Option<(std::time::Instant, bool)>>,
}

/// A serialised `VERSION.json`: for which address, version and store generation it was built.
type VersionBody = (ProviderAddress, semver::Version, u64, bytes::Bytes);

/// Bound on remembered manifest resolutions.
const MAX_RESOLVED: usize = 10_000;

impl MirrorService {
    pub fn new(
        config: ProviderMirrorConfig,
        naming: Naming,
        access: MirrorAccess,
        meta: Arc<MetadataCache>,
        sealer: Arc<UrlSealer>,
        store: Arc<BlobStore>,
    ) -> MirrorService {
        MirrorService {
            naming,
            registry: Registry::new(config.origin_url.clone()),
            meta,
            sealer,
            store,
            resolved: Mutex::new(HashMap::new()),
            version_bodies: Mutex::new(HashMap::new()),
            json_cache_control: [false, true].map(|private| {
                http::HeaderValue::from_str(&format!(
                    "{}, max-age={}, stale-while-revalidate={}",
                    if private { "private" } else { "public" },
                    config.freshness.index_max_age.as_secs(),
                    config.freshness.stale_while_revalidate.as_secs()
                ))
                .expect("an ASCII header value")
            }),
            access,
            origin_challenge: Mutex::new(None),
            config,
        }
    }

    /// Whether its documents carry download URLs sealed for the asking client.
    pub fn seals_urls(&self) -> bool {
        self.access.sealed_urls()
    }

    /// The `Cache-Control` of this mirror's JSON documents for a client, stating the
    /// freshness policy. Answers depend on the client's credential (and shared caches must
    /// not keep them) when URLs are sealed or the client sent one, unless the mirror is public.
    pub fn json_cache_control(&self, client: &Credential) -> http::HeaderValue {
        let private = self.access.answers_are_private()
            || (!matches!(self.access, MirrorAccess::Public { .. })
                && !matches!(client, Credential::Anonymous));
        self.json_cache_control[usize::from(private)].clone()
    }

    /// The command that would put what is missing into the cache.
    pub fn warm_command(&self, what: &str) -> String {
        let target = match self.name() {
            crate::config::PROVIDER_REGISTRY_NAME => "--provider-registry".to_owned(),
            crate::config::MODULE_REGISTRY_NAME => "--module-registry".to_owned(),
            name => format!("--mirror {name}"),
        };
        format!("oci-distribution-terraform-registry warm {target} {what}")
    }

    /// A provider as this service's clients name it (registry providers without the host).
    pub fn describe(&self, addr: &ProviderAddress) -> String {
        match self.naming {
            Naming::WithHostname => addr.to_string(),
            Naming::WithoutHostname => format!("{}/{}", addr.namespace, addr.type_name),
        }
    }

    pub fn metadata_error(
        &self,
        e: MetadataError,
        not_found: impl FnOnce() -> MirrorError,
        warm: impl FnOnce() -> String,
    ) -> MirrorError {
        match e {
            MetadataError::NotFound(_) => not_found(),
            MetadataError::Origin(o) => MirrorError::Origin(o),
            MetadataError::Offline(what) => MirrorError::Offline {
                what,
                warm_command: self.warm_command(&warm()),
            },
        }
    }

    /// Whether packages are only handed out through sealed, credential-bound URLs.
    pub fn needs_authorization(&self) -> bool {
        self.access.sealed_urls()
    }

    /// The credential the origin sees for a client presenting `client`.
    pub fn origin_credential(&self, client: Credential) -> Credential {
        self.access.origin_credential(client)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn repository(&self, addr: &ProviderAddress) -> String {
        addr.repository_named(&self.config.name_prefix, self.naming)
    }

    /// The tags of `repo` for a client presenting `client`; `unknown` is the error when the
    /// origin has no such repository, `warm` what `warm` would need to fetch it.
    pub async fn tags_for(
        &self,
        repo: &str,
        client: &Credential,
        unknown: impl FnOnce() -> MirrorError,
        warm: impl FnOnce() -> String,
    ) -> Result<Cached<Arc<Vec<String>>>, MirrorError> {
        let cred = &self.origin_credential(client.clone());
        self.meta
            .tags(&self.registry, repo, cred, &self.config.freshness)
            .await
            .map_err(|e| self.metadata_error(e, unknown, warm))
    }

    /// The manifest (or index) `tag` of `repo` points at, for a client presenting `client`.
    pub async fn tagged_manifest(
        &self,
        repo: &str,
        tag: &str,
        client: &Credential,
        unknown: impl FnOnce() -> MirrorError,
        warm: impl FnOnce() -> String,
    ) -> Result<Cached<(Digest, Arc<Manifest>)>, MirrorError> {
        let cred = &self.origin_credential(client.clone());
        self.meta
            .manifest_for_tag(&self.registry, repo, tag, cred, &self.config.freshness)
            .await
            .map_err(|e| self.metadata_error(e, unknown, warm))
    }

    /// The manifest `tag` of `repo` points at, or `None` when the origin has no such tag
    /// (or, offline, when the cache does not know it).
    pub async fn optional_manifest(
        &self,
        repo: &str,
        tag: &str,
        client: &Credential,
    ) -> Result<Option<(Digest, Arc<Manifest>)>, MirrorError> {
        let cred = &self.origin_credential(client.clone());
        match self
            .meta
            .manifest_for_tag(&self.registry, repo, tag, cred, &self.config.freshness)
            .await
        {
            Ok(m) => Ok(Some(m.value)),
            Err(MetadataError::NotFound(_)) | Err(MetadataError::Offline(_)) => Ok(None),
            Err(MetadataError::Origin(o)) => Err(MirrorError::Origin(o)),
        }
    }

    /// The versions available: every tag that reads as a semantic version.
    pub async fn index(
        &self,
        addr: &ProviderAddress,
        cred: &Credential,
    ) -> Result<Cached<IndexDocument>, MirrorError> {
        let tags = self
            .tags_for(
                &self.repository(addr),
                cred,
                || MirrorError::Unknown(format!("provider {}", self.describe(addr))),
                || self.describe(addr),
            )
            .await?;
        let versions = tags
            .value
            .iter()
            .filter_map(|t| version_from_tag(t))
            .map(|v| (v.to_string(), EmptyObject {}))
            .collect();
        Ok(Cached {
            value: IndexDocument { versions },
            age: tags.age,
            stale: tags.stale,
            anonymous: tags.anonymous,
        })
    }

    /// The manifest (or index) a version's tag points at, for a client presenting `cred`.
    pub async fn version_manifest(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        cred: &Credential,
    ) -> Result<Cached<(Digest, Arc<Manifest>)>, MirrorError> {
        let unknown = || {
            MirrorError::UnknownVersion(
                format!("provider {}", self.describe(addr)),
                version.clone(),
            )
        };
        self.tagged_manifest(
            &self.repository(addr),
            &tag_for_version(version),
            cred,
            unknown,
            || format!("{}@{version}", self.describe(addr)),
        )
        .await
    }

    /// A manifest of `repo` by digest, for a client presenting `cred`.
    pub async fn manifest_by_digest(
        &self,
        repo: &str,
        digest: &Digest,
        cred: &Credential,
        warm: &str,
    ) -> Result<Arc<Manifest>, MirrorError> {
        let cred = &self.origin_credential(cred.clone());
        self.meta
            .manifest(&self.registry, repo, digest, cred, &self.config.freshness)
            .await
            .map(|m| m.value)
            .map_err(|e| {
                self.metadata_error(
                    e,
                    || {
                        MirrorError::Origin(Arc::new(OciError::NotFound {
                            what: format!("manifest {digest} of {repo}"),
                        }))
                    },
                    || warm.to_owned(),
                )
            })
    }

    /// The packages of one version, whichever layout it is stored in.
    pub async fn packages(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        cred: &Credential,
    ) -> Result<Cached<(Digest, Arc<Vec<Package>>)>, MirrorError> {
        let m = self.version_manifest(addr, version, cred).await?;
        let (digest, manifest) = &m.value;
        let packages = self
            .manifest_packages(addr, version, digest, manifest, cred)
            .await?;
        Ok(Cached {
            value: (digest.clone(), packages),
            age: m.age,
            stale: m.stale,
            anonymous: m.anonymous,
        })
    }

    /// The packages a version's manifest lists (remembered per manifest digest).
    pub async fn manifest_packages(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        digest: &Digest,
        manifest: &Manifest,
        cred: &Credential,
    ) -> Result<Arc<Vec<Package>>, MirrorError> {
        let cached = self
            .resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned();
        let packages = match cached {
            Some(p) => p,
            None => {
                let repo = self.repository(addr);
                let cred = &self.origin_credential(cred.clone());
                let warm = format!("{}@{version}", self.describe(addr));
                let p = Arc::new(
                    self.resolve(addr, version, &repo, manifest, cred, &warm)
                        .await?,
                );
                let mut map = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() >= MAX_RESOLVED {
                    map.clear();
                }
                map.insert(digest.clone(), p.clone());
                p
            }
        };
        Ok(packages)
    }

    /// `VERSION.json` as bytes. For mirrors without sealed URLs the body is the same for
    /// every client, so it is built once per manifest and cache state.
    pub async fn version_json(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        cred: &Credential,
    ) -> Result<Cached<bytes::Bytes>, MirrorError> {
        let p = self.packages(addr, version, cred).await?;
        let (digest, packages) = &p.value;
        let cacheable = !self.access.sealed_urls();
        let generation = self.store.generation();
        if cacheable {
            let bodies = self
                .version_bodies
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some((a, v, g, body)) = bodies.get(digest) {
                if a == addr && v == version && *g == generation {
                    return Ok(Cached {
                        value: body.clone(),
                        age: p.age,
                        stale: p.stale,
                        anonymous: p.anonymous,
                    });
                }
            }
        }
        // Packages warm kept without their h1: get it before they are listed, so that a
        // cached package is always listed with the hash of its verified bytes (a local read,
        // once per package; concurrent requests wait for the one derivation).
        for p in packages.iter() {
            if self.store.meta(&p.digest).is_some_and(|m| m.h1_pending) {
                self.store.package_h1_async(&p.digest).await;
            }
        }
        // Read again before the body is built: a derivation above bumps it.
        let generation = self.store.generation();
        let doc = self.version_document(addr, version, packages, cred)?;
        let body =
            bytes::Bytes::from(serde_json::to_vec(&doc).expect("documents always serialise"));
        if cacheable {
            let mut bodies = self
                .version_bodies
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if bodies.len() >= MAX_RESOLVED {
                bodies.clear();
            }
            bodies.insert(
                digest.clone(),
                (addr.clone(), version.clone(), generation, body.clone()),
            );
        }
        Ok(Cached {
            value: body,
            age: p.age,
            stale: p.stale,
            anonymous: p.anonymous,
        })
    }

    async fn resolve(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        repo: &str,
        manifest: &Manifest,
        cred: &Credential,
        warm: &str,
    ) -> Result<Vec<Package>, MirrorError> {
        let what = format!("{} {version}", self.describe(addr));
        let not_a_provider = |reason| MirrorError::NotAProvider {
            what: what.clone(),
            reason,
        };
        match layout::classify(manifest).map_err(not_a_provider)? {
            VersionLayout::Seed(packages) => Ok(packages),
            VersionLayout::OpenTofu(targets) => {
                let what = &what;
                let not_a_provider = &not_a_provider;
                futures::stream::iter(targets)
                    .map(|(platform, desc)| async move {
                        let m = self
                            .meta
                            .manifest(
                                &self.registry,
                                repo,
                                &desc.digest,
                                cred,
                                &self.config.freshness,
                            )
                            .await
                            .map_err(|e| {
                                self.metadata_error(
                                    e,
                                    || MirrorError::NotAProvider {
                                        what: what.clone(),
                                        reason: LayoutError(format!(
                                            "the {platform} manifest {} is missing",
                                            desc.digest
                                        )),
                                    },
                                    || warm.to_owned(),
                                )
                            })?;
                        match &*m.value {
                            Manifest::Image(im) => {
                                layout::opentofu_package(platform, im).map_err(not_a_provider)
                            }
                            Manifest::Index(_) => Err(not_a_provider(LayoutError(format!(
                                "the {platform} entry is an index, not an image manifest"
                            )))),
                        }
                    })
                    .buffered(TARGET_FETCH_CONCURRENCY)
                    .try_collect()
                    .await
            }
        }
    }

    /// Builds `VERSION.json`, with archive URLs relative to it that point back at this server.
    pub fn version_document(
        &self,
        addr: &ProviderAddress,
        version: &semver::Version,
        packages: &[Package],
        cred: &Credential,
    ) -> Result<VersionDocument, MirrorError> {
        let repo = self.repository(addr);
        let mut archives = BTreeMap::new();
        for p in packages {
            let mut url = format!(
                "download/sha256/{}/{}",
                p.digest.hex(),
                crate::provider::package_filename(&addr.type_name, version, &p.platform)
            );
            url.push_str(&self.seal_query(&repo, p.digest.as_str(), cred)?);
            // h1: ours, computed from the verified bytes in the cache, when we have it;
            // else the publisher's annotation (push records it), so clients can lock every
            // platform without the mirror downloading them all first.
            let computed = self.store.meta(&p.digest).and_then(|m| m.h1);
            if let (Some(ours), Some(theirs)) = (&computed, &p.annotated_h1) {
                if ours != theirs {
                    tracing::warn!(package = %p.digest, annotated = %theirs, computed = %ours, "the layer's h1 annotation does not match the package; listing the computed one");
                }
            }
            let mut hashes: Vec<String> = computed
                .or_else(|| p.annotated_h1.clone())
                .into_iter()
                .collect();
            hashes.push(hash::zh_from_sha256_hex(p.digest.hex()));
            archives.insert(p.platform.to_string(), Archive { url, hashes });
        }
        Ok(VersionDocument { archives })
    }

    /// The query string (`?t=...`, or nothing) that lets a URL of this server naming
    /// `subject` in `repo` be fetched without credentials, when this service seals URLs.
    pub fn seal_query(
        &self,
        repo: &str,
        subject: &str,
        cred: &Credential,
    ) -> Result<String, MirrorError> {
        if !self.access.sealed_urls() {
            return Ok(String::new());
        }
        let credential: &[u8] = match cred {
            Credential::PassThrough(v) => v.as_bytes(),
            _ => b"",
        };
        let binding = Binding {
            mirror: self.name(),
            repository: repo,
            digest: subject,
        };
        let token = self
            .sealer
            .seal(&binding, credential)
            .map_err(MirrorError::BadDownloadToken)?;
        Ok(format!("?t={token}"))
    }

    /// The credential a URL sealed by [`MirrorService::seal_query`] carries (the server's
    /// own when URLs are not sealed).
    pub fn sealed_credential(
        &self,
        repo: &str,
        subject: &str,
        token: Option<&str>,
    ) -> Result<Credential, MirrorError> {
        if !self.access.sealed_urls() {
            return Ok(self.origin_credential(Credential::Anonymous));
        }
        let token = token.ok_or(MirrorError::MissingDownloadToken)?;
        let binding = Binding {
            mirror: self.name(),
            repository: repo,
            digest: subject,
        };
        let credential = self
            .sealer
            .open(&binding, token)
            .map_err(MirrorError::BadDownloadToken)?;
        if credential.is_empty() {
            return Ok(Credential::Anonymous);
        }
        let header = reqwest::header::HeaderValue::from_bytes(&credential)
            .map_err(|_| MirrorError::BadDownloadToken(SealError::Invalid))?;
        Ok(Credential::PassThrough(header))
    }

    /// For `warm`: the package from the cache, or a fill started with `cred` (a server-side
    /// credential, no sealed URL involved).
    pub fn warm_package(
        &self,
        addr: &ProviderAddress,
        digest: &Digest,
        cred: &Credential,
    ) -> Lookup {
        self.warm_blob(&self.repository(addr), digest, cred)
    }

    /// For `warm`: the zip `digest` of `repo` from the cache, or a fill started with `cred`.
    pub fn warm_blob(&self, repo: &str, digest: &Digest, cred: &Credential) -> Lookup {
        let repo = repo.to_owned();
        let source = BlobSource {
            mirror: self.name().to_owned(),
            repository: repo.clone(),
            anonymous: matches!(cred, Credential::Anonymous),
        };
        let client = self.meta.client().clone();
        let registry = self.registry.clone();
        let (d, cred) = (digest.clone(), cred.clone());
        self.store
            .get_or_fill(digest, source, "application/zip", move || {
                Box::pin(async move { client.get_blob(&registry, &repo, &d, &cred).await })
            })
    }

    pub fn store(&self) -> &Arc<BlobStore> {
        &self.store
    }

    /// A zip named by a URL from [`MirrorService::seal_query`] (or unsealed, when this
    /// service does not seal URLs), from the cache or one shared origin fetch.
    pub async fn sealed_blob(
        &self,
        repo: &str,
        digest: &Digest,
        token: Option<&str>,
        warm_command: impl FnOnce() -> String,
    ) -> Result<PackageBody, MirrorError> {
        let cred = self.sealed_credential(repo, digest.as_str(), token)?;
        let sealed = self.access.sealed_urls();
        self.blob(repo, digest, cred, "application/zip", warm_command, sealed)
            .await
    }

    /// A small blob (a signature, a key, a checksum list) read whole, at most `max` bytes,
    /// through the same verified cache and access rules as packages. `cred` is the client's,
    /// or the one a sealed URL carried (`via_sealed_url`).
    pub async fn small_blob(
        &self,
        repo: &str,
        descriptor: &crate::oci::Descriptor,
        client: Credential,
        via_sealed_url: bool,
        max: u64,
        warm_command: String,
    ) -> Result<bytes::Bytes, MirrorError> {
        let what = || format!("blob {} of {repo}", descriptor.digest);
        if descriptor.size > max {
            return Err(MirrorError::Origin(Arc::new(OciError::TooLarge {
                what: what(),
                limit: max,
            })));
        }
        let cred = if via_sealed_url {
            client
        } else {
            self.origin_credential(client)
        };
        let body = self
            .blob(
                repo,
                &descriptor.digest,
                cred,
                "application/octet-stream",
                || warm_command,
                via_sealed_url,
            )
            .await?;
        let stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, MirrorError>> =
            match body {
                PackageBody::Cached(blob) => {
                    let size = blob.meta.size;
                    crate::store::file_range(blob.file, 0, size)
                        .map_err(|e| MirrorError::Local(e.to_string()))
                        .boxed()
                }
                PackageBody::Filling { fill, .. } => fill
                    .stream(0, None)
                    .map_err(|e| match e {
                        crate::store::FillError::Origin(o) => MirrorError::Origin(o),
                        other => MirrorError::Local(other.to_string()),
                    })
                    .boxed(),
            };
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            out.extend_from_slice(&chunk);
            if out.len() as u64 > max {
                return Err(MirrorError::Origin(Arc::new(OciError::TooLarge {
                    what: what(),
                    limit: max,
                })));
            }
        }
        Ok(out.into())
    }

    /// Whether an anonymous client of this mirror would be asked for credentials by the
    /// origin (its `GET /v2/` answers 401). Asked at most once a minute.
    pub async fn origin_demands_credentials(&self) -> bool {
        if self.meta.is_offline() || matches!(self.access, MirrorAccess::Public { .. }) {
            return false;
        }
        let cached = *self
            .origin_challenge
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((at, answer)) = cached {
            if at.elapsed() < std::time::Duration::from_secs(60) {
                return answer;
            }
        }
        let answer = self.meta.client().demands_credentials(&self.registry).await;
        *self
            .origin_challenge
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), answer));
        answer
    }

    /// Whether this mirror's origin holds `repo`, as the OCI pull API names it: under the
    /// mirror's `name_prefix`. Longer matches are preferred by the caller.
    pub fn holds_repository(&self, repo: &str) -> bool {
        let prefix = &self.config.name_prefix;
        prefix.is_empty()
            || repo
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// All tags of a repository (the OCI pull API), for a client presenting `client`.
    pub async fn repository_tags(
        &self,
        repo: &str,
        client: Credential,
    ) -> Result<Cached<Arc<Vec<String>>>, MirrorError> {
        let cred = self.origin_credential(client);
        self.meta
            .tags(&self.registry, repo, &cred, &self.config.freshness)
            .await
            .map_err(|e| self.pull_api_error(e, repo, || format!("repository {repo}")))
    }

    /// A metadata error of the OCI pull API: "not found" as the registry would say it, and
    /// an offline hint naming the provider the repository holds.
    fn pull_api_error(
        &self,
        e: MetadataError,
        repo: &str,
        what: impl FnOnce() -> String,
    ) -> MirrorError {
        self.metadata_error(
            e,
            || MirrorError::Origin(Arc::new(OciError::NotFound { what: what() })),
            || self.provider_of(repo).to_owned(),
        )
    }

    /// The provider address part of a repository name (without the mirror's prefix).
    fn provider_of<'a>(&self, repo: &'a str) -> &'a str {
        repo.strip_prefix(self.config.name_prefix.as_str())
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(repo)
    }

    /// A manifest by tag or digest (the OCI pull API), as the origin sent it.
    pub async fn repository_manifest(
        &self,
        repo: &str,
        reference: &str,
        client: Credential,
    ) -> Result<Cached<(Digest, Arc<crate::metadata::ManifestBody>)>, MirrorError> {
        let cred = self.origin_credential(client);
        self.meta
            .manifest_document(
                &self.registry,
                repo,
                reference,
                &cred,
                &self.config.freshness,
            )
            .await
            .map_err(|e| self.pull_api_error(e, repo, || format!("manifest {repo}:{reference}")))
    }

    /// Any blob of a repository this mirror serves, for a client presenting `client`
    /// (the OCI pull API).
    pub async fn repository_blob(
        &self,
        repo: &str,
        digest: &Digest,
        client: Credential,
    ) -> Result<PackageBody, MirrorError> {
        let cred = self.origin_credential(client);
        let warm = || self.warm_command(self.provider_of(repo));
        self.blob(repo, digest, cred, "application/octet-stream", warm, false)
            .await
    }

    async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
        cred: Credential,
        media_type: &str,
        warm_command: impl FnOnce() -> String,
        via_sealed_url: bool,
    ) -> Result<PackageBody, MirrorError> {
        if self.meta.is_offline() {
            return match self.store.cached(digest) {
                Some(blob) => {
                    self.store
                        .counters
                        .hits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(PackageBody::Cached(blob))
                }
                None => Err(MirrorError::Offline {
                    what: format!("blob {digest} of {repo}"),
                    warm_command: warm_command(),
                }),
            };
        }
        let source = BlobSource {
            mirror: self.name().to_owned(),
            repository: repo.to_owned(),
            anonymous: matches!(cred, Credential::Anonymous),
        };
        let client = self.meta.client().clone();
        let (registry, fill_repo, d, fill_cred) = (
            self.registry.clone(),
            repo.to_owned(),
            digest.clone(),
            cred.clone(),
        );
        let lookup = self
            .store
            .get_or_fill(digest, source.clone(), media_type, move || {
                Box::pin(
                    async move { client.get_blob(&registry, &fill_repo, &d, &fill_cred).await },
                )
            });
        // A copy fetched for someone else (another mirror or repository, or with other
        // credentials), stored or still arriving, is only handed out once the origin says
        // this client may have it from this repository (src/access.rs decides when).
        let here = |s: &BlobSource| s.mirror == source.mirror && s.repository == source.repository;
        let (seen_here, same_kind_here) = match &lookup {
            Lookup::Hit(blob) => (
                blob.meta.sources.iter().any(here),
                blob.meta.sources.contains(&source),
            ),
            Lookup::Fill { fill, started } => (
                *started || here(&fill.source),
                *started || fill.source == source,
            ),
        };
        let needs_check = self.access.blob_needs_origin_check(
            via_sealed_url,
            &cred,
            seen_here,
            same_kind_here,
            || {
                self.meta.credential_accepted(
                    &self.registry,
                    repo,
                    &cred,
                    self.config.freshness.auth_ttl,
                )
            },
        );
        if needs_check {
            self.meta
                .client()
                .head_blob(&self.registry, repo, digest, &cred)
                .await?;
            self.meta
                .record_credential_accepted(&self.registry, repo, &cred);
            match &lookup {
                Lookup::Hit(_) => self.store.add_source(digest, &source),
                Lookup::Fill { fill, .. } => {
                    let (store, fill, digest) = (self.store.clone(), fill.clone(), digest.clone());
                    tokio::spawn(async move {
                        if fill.finished().await.is_ok() {
                            store.add_source(&digest, &source);
                        }
                    });
                }
            }
        }
        Ok(match lookup {
            Lookup::Hit(blob) => PackageBody::Cached(blob),
            Lookup::Fill { fill, started } => PackageBody::Filling { fill, started },
        })
    }
}
