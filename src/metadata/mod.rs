//! Cached origin metadata — tag lists, tag → manifest digest, manifests by digest — kept in
//! the index (so they survive restarts and outages) and in memory (so the hot path never
//! touches the disk), with a freshness policy: fresh, stale-while-revalidate, stale-if-error,
//! negative caching, and one refresh per key at a time however many clients ask.
//!
//! Cached data fetched with a credential is only served to a credential the origin accepted
//! for that repository within `auth_ttl`; data fetched anonymously is served to anyone.

mod refresh;

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::FreshnessPolicy;
use crate::oci::{Credential, Digest, FetchedManifest, Manifest, OciClient, OciError, Registry};
use crate::store::{now_millis, Index};

pub use refresh::spawn_hot_set_refresher;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Origin(Arc<OciError>),
    /// The origin said (now or recently) that this does not exist.
    #[error("{0} was not found in the registry")]
    NotFound(String),
    #[error("the mirror is offline and has no cached copy of {0}")]
    Offline(String),
}

impl From<OciError> for MetadataError {
    fn from(e: OciError) -> Self {
        match e {
            OciError::NotFound { what } => MetadataError::NotFound(what),
            e => MetadataError::Origin(Arc::new(e)),
        }
    }
}

/// A value with how old it is.
#[derive(Debug, Clone)]
pub struct Cached<T> {
    pub value: T,
    pub age: Duration,
    /// Served past `index_max_age` (while revalidating, or because the origin failed).
    pub stale: bool,
    /// Built only from answers the origin gave without a credential: anyone may have it, at
    /// any time (what was fetched with a credential is only shown while one is accepted).
    pub anonymous: bool,
}

/// What is kept per key. `value: None` records a "not found".
struct Entry<T> {
    fetched_at: u64,
    anonymous: bool,
    value: Option<Arc<T>>,
}

/// [`Entry`] as written to the index.
#[derive(Serialize, Deserialize)]
struct StoredEntry<S> {
    fetched_at: u64,
    anonymous: bool,
    value: Option<S>,
}

/// One cacheable question to the origin.
#[derive(Clone)]
pub(crate) struct Query {
    pub registry: Registry,
    pub repository: String,
    pub kind: QueryKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum QueryKind {
    Tags,
    TagDigest(String),
    Manifest(Digest),
}

impl Query {
    fn new(registry: &Registry, repository: &str, kind: QueryKind) -> Query {
        Query {
            registry: registry.clone(),
            repository: repository.to_owned(),
            kind,
        }
    }

    fn tags(registry: &Registry, repository: &str) -> Query {
        Query::new(registry, repository, QueryKind::Tags)
    }

    fn key(&self) -> String {
        let reg = self.registry.base().as_str();
        let repo = &self.repository;
        match &self.kind {
            QueryKind::Tags => format!("tags|{reg}|{repo}"),
            QueryKind::TagDigest(t) => format!("tag|{reg}|{repo}|{t}"),
            QueryKind::Manifest(d) => format!("manifest|{reg}|{repo}|{d}"),
        }
    }

    fn describe(&self) -> String {
        match &self.kind {
            QueryKind::Tags => format!("repository {}", self.repository),
            QueryKind::TagDigest(t) => format!("tag {}:{t}", self.repository),
            QueryKind::Manifest(d) => format!("manifest {}@{d}", self.repository),
        }
    }

    /// Manifests by digest never change; only authorization is ever re-checked.
    fn is_immutable(&self) -> bool {
        matches!(self.kind, QueryKind::Manifest(_))
    }
}

type FlightResult = Result<Arc<dyn Any + Send + Sync>, MetadataError>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;

pub struct MetadataCache {
    client: Arc<OciClient>,
    index: Index,
    offline: bool,
    /// Decoded entries, so the hot path neither reads the disk nor parses JSON.
    memory: RwLock<MemoryMap>,
    /// One origin request per (key, credential) at a time.
    flights: Mutex<HashMap<(String, [u8; 32]), Flight>>,
    /// When the origin last accepted a credential for a repository, by keyed credential hash.
    accepted: Mutex<HashMap<(String, [u8; 32]), u64>>,
    /// Random per process: credential hashes mean nothing outside it.
    hash_key: [u8; 32],
    pub(crate) hot: refresh::HotSet,
    pub counters: Counters,
    /// Bumped whenever a cached value is replaced by another or dropped: answers built from
    /// cached metadata are reusable while it stays the same.
    epoch: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub fresh: std::sync::atomic::AtomicU64,
    pub stale_served: std::sync::atomic::AtomicU64,
    pub origin_requests: std::sync::atomic::AtomicU64,
    pub revalidations_changed: std::sync::atomic::AtomicU64,
    pub revalidations_unchanged: std::sync::atomic::AtomicU64,
    pub revalidations_failed: std::sync::atomic::AtomicU64,
}

/// An entry refreshed by another request this recently, with this credential accepted this
/// recently, is used instead of asking the origin again.
const JUST_REFRESHED: Duration = Duration::from_secs(10);

/// Decoded entries with the memory they hold (roughly), so that a flood of big manifests
/// cannot grow the process without bound.
#[derive(Default)]
struct MemoryMap {
    entries: HashMap<String, (usize, Arc<dyn Any + Send + Sync>)>,
    bytes: usize,
}

/// Bound on the memory of decoded entries; past it the map is cleared (entries stay on disk).
const MAX_MEMORY_BYTES: usize = 32 << 20;

/// Bound on decoded entries kept in memory; past it the map is cleared (entries stay on disk).
const MAX_MEMORY_ENTRIES: usize = 100_000;

fn bump(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl MetadataCache {
    pub fn new(client: Arc<OciClient>, index: Index, offline: bool) -> Arc<MetadataCache> {
        Arc::new(MetadataCache {
            client,
            index,
            offline,
            memory: RwLock::new(MemoryMap::default()),
            flights: Mutex::new(HashMap::new()),
            accepted: Mutex::new(HashMap::new()),
            hash_key: rand::random(),
            hot: refresh::HotSet::default(),
            counters: Counters::default(),
            epoch: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Changes whenever a cached value is replaced by another or dropped.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn changed(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    pub fn client(&self) -> &Arc<OciClient> {
        &self.client
    }

    /// The tags of a repository.
    pub async fn tags(
        self: &Arc<Self>,
        registry: &Registry,
        repository: &str,
        cred: &Credential,
        policy: &FreshnessPolicy,
    ) -> Result<Cached<Arc<Vec<String>>>, MetadataError> {
        let q = Query::new(registry, repository, QueryKind::Tags);
        self.lookup::<Vec<String>>(q, cred, policy).await
    }

    /// The manifest a tag points at now (digest, then the manifest itself by digest).
    pub async fn manifest_for_tag(
        self: &Arc<Self>,
        registry: &Registry,
        repository: &str,
        tag: &str,
        cred: &Credential,
        policy: &FreshnessPolicy,
    ) -> Result<Cached<(Digest, Arc<Manifest>)>, MetadataError> {
        let doc = self
            .manifest_document(registry, repository, tag, cred, policy)
            .await?;
        let (digest, body) = doc.value;
        Ok(Cached {
            value: (digest, body.parsed.clone()),
            age: doc.age,
            stale: doc.stale,
            anonymous: doc.anonymous,
        })
    }

    /// A manifest document by tag or digest, with its bytes as the origin sent them.
    pub async fn manifest_document(
        self: &Arc<Self>,
        registry: &Registry,
        repository: &str,
        reference: &str,
        cred: &Credential,
        policy: &FreshnessPolicy,
    ) -> Result<Cached<(Digest, Arc<ManifestBody>)>, MetadataError> {
        let (digest, age, stale, tag_anonymous, tag_key) = match Digest::parse(reference) {
            Some(d) => (d, Duration::ZERO, false, true, None),
            None => {
                let q = Query::new(
                    registry,
                    repository,
                    QueryKind::TagDigest(reference.to_owned()),
                );
                let key = q.key();
                let d = self.lookup::<TagTarget>(q, cred, policy).await?;
                (
                    d.value.digest.clone(),
                    d.age,
                    d.stale,
                    d.anonymous,
                    Some(key),
                )
            }
        };
        let q = Query::new(registry, repository, QueryKind::Manifest(digest.clone()));
        let body = self
            .lookup::<ManifestBody>(q, cred, policy)
            .await
            .inspect_err(|e| {
                if let Some(k) = &tag_key {
                    self.forget_if_bad_pointer(k, e)
                }
            })?;
        Ok(Cached {
            value: (digest, body.value),
            age,
            stale,
            anonymous: tag_anonymous && body.anonymous,
        })
    }

    /// Keeps a manifest fetched by tag as the entry for its digest, unless there is one: the
    /// same answer the origin would give (verified against the digest), under the same access
    /// (`anonymous`: fetched without a credential).
    fn seed_manifest(
        &self,
        tag: &Query,
        digest: &Digest,
        body: Arc<ManifestBody>,
        anonymous: bool,
    ) {
        let q = Query::new(
            &tag.registry,
            &tag.repository,
            QueryKind::Manifest(digest.clone()),
        );
        let key = q.key();
        if self.load::<ManifestBody>(&key).is_none() {
            self.store(
                &key,
                Entry {
                    fetched_at: now_millis(),
                    anonymous,
                    value: Some(body),
                },
            );
        }
    }

    /// A manifest by digest (immutable, verified against its digest when fetched).
    pub async fn manifest(
        self: &Arc<Self>,
        registry: &Registry,
        repository: &str,
        digest: &Digest,
        cred: &Credential,
        policy: &FreshnessPolicy,
    ) -> Result<Cached<Arc<Manifest>>, MetadataError> {
        let q = Query::new(registry, repository, QueryKind::Manifest(digest.clone()));
        let body = self.lookup::<ManifestBody>(q, cred, policy).await?;
        Ok(Cached {
            value: body.value.parsed.clone(),
            age: body.age,
            stale: false,
            anonymous: body.anonymous,
        })
    }

    fn credential_hash(&self, cred: &Credential) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.hash_key);
        h.update(cred.fingerprint());
        h.finalize().into()
    }

    /// Whether the origin accepted `cred` for `repository` within `within`.
    pub fn credential_accepted(
        &self,
        registry: &Registry,
        repository: &str,
        cred: &Credential,
        within: Duration,
    ) -> bool {
        self.accepted_recently(&Query::tags(registry, repository), cred, within)
    }

    /// Notes that the origin just accepted `cred` for `repository`.
    pub fn record_credential_accepted(
        &self,
        registry: &Registry,
        repository: &str,
        cred: &Credential,
    ) {
        self.record_acceptance(&Query::tags(registry, repository), cred, true);
    }

    fn accepted_recently(&self, q: &Query, cred: &Credential, within: Duration) -> bool {
        let key = (
            format!("{}|{}", q.registry.base(), q.repository),
            self.credential_hash(cred),
        );
        let map = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key)
            .is_some_and(|t| now_millis().saturating_sub(*t) < within.as_millis() as u64)
    }

    fn record_acceptance(&self, q: &Query, cred: &Credential, accepted: bool) {
        let key = (
            format!("{}|{}", q.registry.base(), q.repository),
            self.credential_hash(cred),
        );
        let mut map = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        if accepted {
            if map.len() > MAX_MEMORY_ENTRIES {
                map.clear();
            }
            map.insert(key, now_millis());
        } else {
            map.remove(&key);
        }
    }

    fn load<T: Cacheable>(&self, key: &str) -> Option<Arc<Entry<T>>> {
        if let Some(v) = self
            .memory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .get(key)
        {
            return v.1.clone().downcast::<Entry<T>>().ok();
        }
        let bytes = self.index.get_metadata(key).ok().flatten()?;
        let stored: StoredEntry<T::Stored> = serde_json::from_slice(&bytes).ok()?;
        let entry = Arc::new(Entry {
            fetched_at: stored.fetched_at,
            anonymous: stored.anonymous,
            value: match stored.value {
                Some(s) => Some(T::from_stored(s)?),
                None => None,
            },
        });
        self.remember(key, entry.clone());
        Some(entry)
    }

    fn remember<T: Cacheable>(&self, key: &str, entry: Arc<Entry<T>>) {
        let weight = key.len() + 64 + entry.value.as_ref().map_or(0, |v| v.weight());
        if weight > MAX_MEMORY_BYTES / 4 {
            // Kept on disk only: a few giants must not push everything else out.
            return;
        }
        let mut mem = self.memory.write().unwrap_or_else(|p| p.into_inner());
        if mem.entries.len() >= MAX_MEMORY_ENTRIES || mem.bytes + weight > MAX_MEMORY_BYTES {
            mem.entries.clear();
            mem.bytes = 0;
        }
        if let Some((old, _)) = mem.entries.insert(key.to_owned(), (weight, entry)) {
            mem.bytes -= old;
        }
        mem.bytes += weight;
    }

    /// A tag's digest is only as good as the manifest it names: if that manifest turns out
    /// missing, invalid or not matching its digest, the tag entry goes too, so the next
    /// request asks the origin again instead of repeating a lie.
    fn forget_if_bad_pointer(&self, tag_key: &str, e: &MetadataError) {
        let bad = match e {
            MetadataError::NotFound(_) => true,
            MetadataError::Origin(o) => matches!(
                **o,
                OciError::DigestMismatch { .. } | OciError::InvalidManifest { .. }
            ),
            MetadataError::Offline(_) => false,
        };
        if bad {
            self.forget(tag_key);
        }
    }

    /// Notes a configured `negative_ttl`: purges keep "not found" answers at least that long.
    pub fn note_negative_ttl(&self, ttl: Duration) {
        self.hot.note_negative_ttl(ttl);
    }

    /// Removes "not found" answers fetched before `cutoff` (Unix milliseconds). Past their
    /// `negative_ttl` they no longer spare the origin a request, and names nobody publishes
    /// (typos, scanners) would otherwise pile up in the index for ever. Returns how many.
    pub fn purge_negatives(&self, cutoff: u64) -> usize {
        #[derive(Deserialize)]
        struct Head {
            fetched_at: u64,
            value: Option<serde::de::IgnoredAny>,
        }
        let stale: Vec<(String, Vec<u8>)> = self
            .index
            .small_metadata()
            .filter(|(_, bytes)| {
                serde_json::from_slice::<Head>(bytes)
                    .is_ok_and(|head| head.value.is_none() && head.fetched_at < cutoff)
            })
            .collect();
        let mut purged = 0;
        for (key, bytes) in &stale {
            // Only if unchanged since the scan: a request may have just refreshed it.
            match self.index.remove_metadata_if_unchanged(key, bytes) {
                // Answers are built from found entries only: dropping "not found" ones
                // changes none of them.
                Ok(true) => {
                    self.drop_from_memory(key);
                    purged += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot drop cached metadata"),
            }
        }
        purged
    }

    fn drop_from_memory(&self, key: &str) {
        let mut mem = self.memory.write().unwrap_or_else(|p| p.into_inner());
        if let Some((weight, _)) = mem.entries.remove(key) {
            mem.bytes -= weight;
        }
    }

    /// Drops an entry, in memory and on disk.
    fn forget(&self, key: &str) {
        self.drop_from_memory(key);
        if let Err(e) = self.index.remove_metadata(key) {
            tracing::warn!(error = %e, "cannot drop cached metadata");
        }
        // After the removal: whoever reads the new epoch no longer finds the entry.
        self.changed();
    }

    fn store<T: Cacheable>(&self, key: &str, entry: Entry<T>) -> Arc<Entry<T>> {
        let stored = StoredEntry {
            fetched_at: entry.fetched_at,
            anonymous: entry.anonymous,
            value: entry.value.as_ref().map(T::to_stored),
        };
        // Answers are built from entries that exist: only replacing one with something else
        // (another value, or the same one under other access) can change them. A revalidation
        // that found nothing new, or a first answer for a key, changes none.
        let changes_answers = self.load::<T>(key).is_some_and(|old| {
            old.anonymous != entry.anonymous
                || serde_json::to_vec(&old.value.as_ref().map(T::to_stored)).ok()
                    != serde_json::to_vec(&stored.value).ok()
        });
        if let Ok(bytes) = serde_json::to_vec(&stored) {
            if let Err(e) = self.index.put_metadata(key, &bytes) {
                tracing::warn!(error = %e, "cannot persist cached metadata");
            }
        }
        let entry = Arc::new(entry);
        self.remember(key, entry.clone());
        if changes_answers {
            self.changed();
        }
        entry
    }

    /// The core policy: fresh → serve; stale within stale-while-revalidate → serve and
    /// refresh in the background; otherwise refresh now, falling back to stale-if-error.
    async fn lookup<T: Cacheable>(
        self: &Arc<Self>,
        q: Query,
        cred: &Credential,
        policy: &FreshnessPolicy,
    ) -> Result<Cached<Arc<T>>, MetadataError> {
        let key = q.key();
        let entry = self.load::<T>(&key);
        if self.offline {
            return match entry {
                Some(e) => {
                    let age = Duration::from_millis(now_millis().saturating_sub(e.fetched_at));
                    let stale = !q.is_immutable() && age >= policy.index_max_age;
                    entry_result(&q, &e, stale)
                }
                None => Err(MetadataError::Offline(q.describe())),
            };
        }
        if !q.is_immutable() {
            self.hot.touch(&key, &q, policy);
        }
        if let Some(e) = &entry {
            let age_ms = now_millis().saturating_sub(e.fetched_at);
            let authorized = crate::access::cached_metadata_visible(e.anonymous, || {
                self.accepted_recently(&q, cred, policy.auth_ttl)
            });
            let fresh_for = if e.value.is_none() {
                policy.negative_ttl
            } else if q.is_immutable() {
                Duration::MAX
            } else {
                policy.index_max_age
            };
            if authorized && u128::from(age_ms) < fresh_for.as_millis() {
                bump(&self.counters.fresh);
                return entry_result(&q, e, false);
            }
            let swr_until = fresh_for.saturating_add(policy.stale_while_revalidate);
            if authorized && e.value.is_some() && u128::from(age_ms) < swr_until.as_millis() {
                bump(&self.counters.stale_served);
                let me = self.clone();
                let (q2, cred2, prev) = (q.clone(), cred.clone(), e.clone());
                tokio::spawn(async move {
                    let _ = me.refresh::<T>(q2, cred2, Some(prev)).await;
                });
                return entry_result(&q, e, true);
            }
        }
        match self
            .refresh::<T>(q.clone(), cred.clone(), entry.clone())
            .await
        {
            Ok(new) => entry_result(&q, &new, false),
            Err(err) => {
                let Some(e) = entry.filter(|e| e.value.is_some()) else {
                    return Err(err);
                };
                let age = Duration::from_millis(now_millis().saturating_sub(e.fetched_at));
                let within = policy.stale_if_error.is_none_or(|limit| age < limit);
                // Stale data only to whoever may see it: anyone for anonymous data, else a
                // credential the origin accepted within auth_ttl.
                let authorized = crate::access::cached_metadata_visible(e.anonymous, || {
                    self.accepted_recently(&q, cred, policy.auth_ttl)
                });
                if within && authorized && is_origin_failure(&err) {
                    bump(&self.counters.stale_served);
                    tracing::warn!(what = %q.describe(), error = %err, age_secs = age.as_secs(), "origin failing; serving stale metadata");
                    return entry_result(&q, &e, true);
                }
                Err(err)
            }
        }
    }

    /// Asks the origin (once per key and credential at a time) and stores the answer.
    fn refresh<T: Cacheable>(
        self: &Arc<Self>,
        q: Query,
        cred: Credential,
        prev: Option<Arc<Entry<T>>>,
    ) -> impl Future<Output = Result<Arc<Entry<T>>, MetadataError>> + Send + 'static {
        let key = q.key();
        let flight_key = (key.clone(), cred.fingerprint());
        let prev_fetched_at = prev.as_ref().map_or(0, |p| p.fetched_at);
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(&flight_key) {
                Some(f) => Ok(f.clone()),
                None => {
                    // A refresh may have finished between our look at the entry and now: then
                    // its answer is the one to give, if this credential may see it.
                    let newer = self.load::<T>(&key).filter(|cur| {
                        cur.fetched_at > prev_fetched_at
                            && crate::access::cached_metadata_visible(cur.anonymous, || {
                                self.accepted_recently(&q, &cred, JUST_REFRESHED)
                            })
                    });
                    match newer {
                        Some(cur) => Err(cur),
                        None => {
                            let me = self.clone();
                            let fk = flight_key.clone();
                            let fut = async move {
                                let r = me.fetch_and_store::<T>(&q, &cred, prev).await;
                                me.flights
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .remove(&fk);
                                r.map(|e| e as Arc<dyn Any + Send + Sync>)
                            }
                            .boxed()
                            .shared();
                            flights.insert(flight_key, fut.clone());
                            Ok(fut)
                        }
                    }
                }
            }
        };
        async move {
            let flight = match flight {
                Ok(f) => f,
                Err(already) => return Ok(already),
            };
            let any = flight.await?;
            any.downcast::<Entry<T>>().map_err(|_| {
                MetadataError::Origin(Arc::new(OciError::Protocol("cache type confusion".into())))
            })
        }
    }

    async fn fetch_and_store<T: Cacheable>(
        &self,
        q: &Query,
        cred: &Credential,
        prev: Option<Arc<Entry<T>>>,
    ) -> Result<Arc<Entry<T>>, MetadataError> {
        bump(&self.counters.origin_requests);
        let key = q.key();
        let anonymous = matches!(cred, Credential::Anonymous);
        let prev_value = prev.as_ref().and_then(|p| p.value.clone());
        let result = T::fetch(&self.client, q, cred, prev_value.as_deref()).await;
        match result {
            Ok(Fetched::Unchanged) => {
                bump(&self.counters.revalidations_unchanged);
                self.record_acceptance(q, cred, true);
                let prev = prev.expect("Unchanged only with a previous value");
                Ok(self.store(
                    &key,
                    Entry {
                        fetched_at: now_millis(),
                        anonymous: anonymous || prev.anonymous,
                        value: prev.value.clone(),
                    },
                ))
            }
            Ok(Fetched::New(v)) => {
                if prev_value.is_some() {
                    bump(&self.counters.revalidations_changed);
                }
                let v = v.settle(self, q, anonymous);
                self.record_acceptance(q, cred, true);
                Ok(self.store(
                    &key,
                    Entry {
                        fetched_at: now_millis(),
                        anonymous,
                        value: Some(Arc::new(v)),
                    },
                ))
            }
            Err(OciError::NotFound { what }) => {
                // Not an acceptance: registries that hide what a credential may not see
                // answer 404 too.
                self.store::<T>(
                    &key,
                    Entry {
                        fetched_at: now_millis(),
                        anonymous,
                        value: None,
                    },
                );
                Err(MetadataError::NotFound(what))
            }
            Err(e) => {
                if prev.is_some() {
                    bump(&self.counters.revalidations_failed);
                }
                if matches!(
                    e,
                    OciError::Unauthorized { .. } | OciError::Forbidden { .. }
                ) {
                    self.record_acceptance(q, cred, false);
                }
                Err(e.into())
            }
        }
    }
}

fn entry_result<T>(q: &Query, e: &Entry<T>, stale: bool) -> Result<Cached<Arc<T>>, MetadataError> {
    let age = Duration::from_millis(now_millis().saturating_sub(e.fetched_at));
    match &e.value {
        Some(v) => Ok(Cached {
            value: v.clone(),
            age,
            stale,
            anonymous: e.anonymous,
        }),
        None => Err(MetadataError::NotFound(q.describe())),
    }
}

/// Failures that stale-if-error covers: the origin unreachable, slow or broken — not a
/// refusal of the client's credential, nor a "not found".
fn is_origin_failure(e: &MetadataError) -> bool {
    match e {
        MetadataError::Origin(o) => match &**o {
            OciError::Unreachable { .. }
            | OciError::Timeout { .. }
            | OciError::Protocol(_)
            | OciError::TooLarge { .. }
            | OciError::TooMany { .. }
            | OciError::InvalidManifest { .. }
            | OciError::DigestMismatch { .. } => true,
            OciError::UnexpectedStatus { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        },
        _ => false,
    }
}

pub(crate) enum Fetched<T> {
    New(T),
    Unchanged,
}

/// A kind of cached metadata: how to fetch it and how to keep it.
pub(crate) trait Cacheable: Sized + Send + Sync + 'static {
    type Stored: Serialize + DeserializeOwned;
    fn to_stored(v: &Arc<Self>) -> Self::Stored;
    fn from_stored(s: Self::Stored) -> Option<Arc<Self>>;
    /// Roughly the memory a decoded value holds.
    fn weight(&self) -> usize {
        64
    }
    /// A value just fetched, before it is stored under `q`: it may leave parts of itself in
    /// the cache under other keys; returns what the entry keeps.
    fn settle(self, _cache: &MetadataCache, _q: &Query, _anonymous: bool) -> Self {
        self
    }
    fn fetch<'a>(
        client: &'a OciClient,
        q: &'a Query,
        cred: &'a Credential,
        prev: Option<&'a Self>,
    ) -> BoxFuture<'a, Result<Fetched<Self>, OciError>>;
}

impl Cacheable for Vec<String> {
    type Stored = Vec<String>;
    fn weight(&self) -> usize {
        self.iter().map(|t| t.len() + 24).sum()
    }
    fn to_stored(v: &Arc<Self>) -> Self::Stored {
        (**v).clone()
    }
    fn from_stored(s: Self::Stored) -> Option<Arc<Self>> {
        Some(Arc::new(s))
    }
    fn fetch<'a>(
        client: &'a OciClient,
        q: &'a Query,
        cred: &'a Credential,
        prev: Option<&'a Self>,
    ) -> BoxFuture<'a, Result<Fetched<Self>, OciError>> {
        async move {
            let tags = client.list_tags(&q.registry, &q.repository, cred).await?;
            Ok(if prev == Some(&tags) {
                Fetched::Unchanged
            } else {
                Fetched::New(tags)
            })
        }
        .boxed()
    }
}

/// What a tag points at: a manifest digest, and, from a first fetch by `GET` until it is
/// stored, the manifest itself, which is kept as the digest's entry and spares the `GET` by
/// digest that would follow.
#[derive(Clone)]
pub(crate) struct TagTarget {
    digest: Digest,
    /// Only between the fetch and [`Cacheable::settle`]; never after a `HEAD`.
    fetched: Option<Arc<ManifestBody>>,
}

impl PartialEq for TagTarget {
    fn eq(&self, other: &TagTarget) -> bool {
        self.digest == other.digest
    }
}

impl Cacheable for TagTarget {
    type Stored = Digest;
    fn settle(mut self, cache: &MetadataCache, q: &Query, anonymous: bool) -> Self {
        if let Some(body) = self.fetched.take() {
            cache.seed_manifest(q, &self.digest, body, anonymous);
        }
        self
    }
    fn to_stored(v: &Arc<Self>) -> Self::Stored {
        v.digest.clone()
    }
    fn from_stored(s: Self::Stored) -> Option<Arc<Self>> {
        Some(Arc::new(TagTarget {
            digest: s,
            fetched: None,
        }))
    }
    /// A first fetch is a `GET`: the digest and the document in one request. Revalidation
    /// is a `HEAD` comparing `Docker-Content-Digest`, so an unchanged tag costs one small
    /// request (a `GET` if the registry does not say).
    fn fetch<'a>(
        client: &'a OciClient,
        q: &'a Query,
        cred: &'a Credential,
        prev: Option<&'a Self>,
    ) -> BoxFuture<'a, Result<Fetched<Self>, OciError>> {
        async move {
            let QueryKind::TagDigest(tag) = &q.kind else {
                unreachable!("TagTarget entries are tag lookups")
            };
            if let Some(prev) = prev {
                if let Some(now) = client
                    .manifest_digest(&q.registry, &q.repository, tag, cred)
                    .await?
                {
                    return Ok(if now == prev.digest {
                        Fetched::Unchanged
                    } else {
                        Fetched::New(TagTarget {
                            digest: now,
                            fetched: None,
                        })
                    });
                }
            }
            let FetchedManifest {
                body,
                manifest,
                digest,
                ..
            } = client
                .get_manifest(&q.registry, &q.repository, tag, cred)
                .await?;
            Ok(Fetched::New(TagTarget {
                digest,
                fetched: Some(Arc::new(ManifestBody {
                    raw: body.to_vec(),
                    parsed: Arc::new(manifest),
                })),
            }))
        }
        .boxed()
    }
}

/// A manifest document as fetched (verified), with its parse.
pub struct ManifestBody {
    raw: Vec<u8>,
    parsed: Arc<Manifest>,
}

impl ManifestBody {
    /// The bytes exactly as the origin sent them (they hash to the manifest's digest).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn parsed(&self) -> &Arc<Manifest> {
        &self.parsed
    }
}

impl Cacheable for ManifestBody {
    type Stored = String;
    fn weight(&self) -> usize {
        // The raw bytes, and a parse that takes up to about three times as much.
        self.raw.len() * 4
    }
    fn to_stored(v: &Arc<Self>) -> Self::Stored {
        // Manifests are JSON text; keep them as they came.
        String::from_utf8_lossy(&v.raw).into_owned()
    }
    fn from_stored(s: Self::Stored) -> Option<Arc<Self>> {
        let parsed = Manifest::parse(None, s.as_bytes()).ok()?;
        Some(Arc::new(ManifestBody {
            raw: s.into_bytes(),
            parsed: Arc::new(parsed),
        }))
    }
    fn fetch<'a>(
        client: &'a OciClient,
        q: &'a Query,
        cred: &'a Credential,
        _prev: Option<&'a Self>,
    ) -> BoxFuture<'a, Result<Fetched<Self>, OciError>> {
        async move {
            let QueryKind::Manifest(d) = &q.kind else {
                unreachable!("ManifestBody entries are digests")
            };
            let FetchedManifest { body, manifest, .. } = client
                .get_manifest(&q.registry, &q.repository, d.as_str(), cred)
                .await?;
            Ok(Fetched::New(ManifestBody {
                raw: body.to_vec(),
                parsed: Arc::new(manifest),
            }))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_drops_only_expired_not_found_answers() {
        let dir = tempfile::tempdir().unwrap();
        let client = Arc::new(OciClient::new(crate::oci::ClientOptions::default()).unwrap());
        let cache = MetadataCache::new(client, Index::open(&dir.path().join("i")).unwrap(), false);
        let digest = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let entry = |fetched_at, value: Option<TagTarget>| Entry {
            fetched_at,
            anonymous: true,
            value: value.map(Arc::new),
        };
        cache.store::<TagTarget>("tag|old-missing", entry(1_000, None));
        cache.store::<TagTarget>("tag|new-missing", entry(5_000, None));
        let target = TagTarget {
            digest: digest.clone(),
            fetched: None,
        };
        cache.store::<TagTarget>("tag|old-found", entry(1_000, Some(target)));
        assert_eq!(cache.purge_negatives(2_000), 1);
        assert!(cache.load::<TagTarget>("tag|old-missing").is_none());
        assert!(cache.load::<TagTarget>("tag|new-missing").is_some());
        assert_eq!(
            cache
                .load::<TagTarget>("tag|old-found")
                .unwrap()
                .value
                .as_ref()
                .map(|t| &t.digest),
            Some(&digest)
        );
        assert_eq!(cache.purge_negatives(2_000), 0);
    }
}
