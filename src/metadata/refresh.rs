//! The background revalidator: entries asked for recently (the hot set) are refreshed as
//! they expire, so clients keep getting fresh answers without waiting on the origin, and
//! each key costs at most one origin request per `index_max_age`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use super::{MetadataCache, Query, QueryKind, TagTarget};
use crate::config::FreshnessPolicy;
use crate::oci::Credential;
use crate::store::now_millis;

/// How often the hot set is scanned.
const TICK: Duration = Duration::from_millis(500);
/// Entries not asked for within this long leave the hot set.
const HOT_WINDOW: Duration = Duration::from_secs(3600);
/// Refreshes running at once.
const CONCURRENCY: usize = 4;
/// How often expired "not found" answers are purged from the index.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// "Not found" answers are kept at least this long (longer when a `negative_ttl` is longer).
const NEGATIVE_RETENTION: Duration = Duration::from_secs(3600);

struct HotEntry {
    query: Query,
    policy: FreshnessPolicy,
    last_asked: u64,
}

#[derive(Default)]
pub(crate) struct HotSet {
    entries: Mutex<HashMap<String, HotEntry>>,
    /// The longest `negative_ttl` asked with, in milliseconds.
    longest_negative_ttl: AtomicU64,
}

impl HotSet {
    pub(crate) fn note_negative_ttl(&self, ttl: Duration) {
        self.longest_negative_ttl.fetch_max(
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Notes that `q` (whose cache key is `key`) was asked for now.
    pub(crate) fn touch(&self, key: &str, q: &Query, policy: &FreshnessPolicy) {
        self.note_negative_ttl(policy.negative_ttl);
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_millis();
        match map.get_mut(key) {
            Some(e) => {
                e.last_asked = now;
                e.policy = *policy;
            }
            None => {
                if map.len() >= super::MAX_MEMORY_ENTRIES {
                    return;
                }
                map.insert(
                    key.to_owned(),
                    HotEntry {
                        query: q.clone(),
                        policy: *policy,
                        last_asked: now,
                    },
                );
            }
        }
    }

    /// Queries due for a refresh, forgetting those no longer asked for.
    fn due(&self, cache: &MetadataCache) -> Vec<(Query, u64)> {
        let now = now_millis();
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| now.saturating_sub(e.last_asked) < HOT_WINDOW.as_millis() as u64);
        map.values()
            .filter_map(|e| {
                let meta = cache.entry_meta(&e.query);
                let due = match meta {
                    // Only what the background credential may fetch: anonymous data, since
                    // data fetched with a client's credential is refreshed on that client's
                    // next request. Due when it expires, so a key costs at most one origin
                    // request per lifetime; the short tick keeps the stale window small.
                    Some((fetched_at, anonymous, negative)) => {
                        let lifetime = if negative {
                            e.policy.negative_ttl
                        } else {
                            e.policy.index_max_age
                        };
                        anonymous && now.saturating_sub(fetched_at) >= lifetime.as_millis() as u64
                    }
                    None => false,
                };
                due.then(|| (e.query.clone(), meta.map_or(0, |m| m.0)))
            })
            .collect()
    }
}

impl MetadataCache {
    /// (fetched_at, anonymous, is a "not found") of a cached entry.
    fn entry_meta(&self, q: &Query) -> Option<(u64, bool, bool)> {
        let key = q.key();
        match &q.kind {
            QueryKind::Tags => self
                .load::<Vec<String>>(&key)
                .map(|e| (e.fetched_at, e.anonymous, e.value.is_none())),
            QueryKind::TagDigest(_) => self
                .load::<TagTarget>(&key)
                .map(|e| (e.fetched_at, e.anonymous, e.value.is_none())),
            QueryKind::Manifest(_) => None,
        }
    }

    async fn refresh_query(self: &Arc<Self>, q: Query, seen_fetched_at: u64) {
        let key = q.key();
        let cred = Credential::Anonymous;
        let _ = match &q.kind {
            QueryKind::Tags => {
                let prev = self.load::<Vec<String>>(&key);
                if prev
                    .as_ref()
                    .is_some_and(|p| p.fetched_at > seen_fetched_at)
                {
                    return; // refreshed since it was found due (by a client's request)
                }
                self.refresh::<Vec<String>>(q, cred, prev).await.map(|_| ())
            }
            QueryKind::TagDigest(_) => {
                let prev = self.load::<TagTarget>(&key);
                if prev
                    .as_ref()
                    .is_some_and(|p| p.fetched_at > seen_fetched_at)
                {
                    return; // refreshed since it was found due (by a client's request)
                }
                self.refresh::<TagTarget>(q, cred, prev).await.map(|_| ())
            }
            QueryKind::Manifest(_) => Ok(()),
        };
    }
}

/// Starts the background revalidator (not in offline mode: it would contact origins).
pub fn spawn_hot_set_refresher(cache: Arc<MetadataCache>) -> Option<tokio::task::JoinHandle<()>> {
    if cache.is_offline() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            if last_purge.elapsed() >= PURGE_INTERVAL {
                last_purge = tokio::time::Instant::now();
                let retention = (NEGATIVE_RETENTION.as_millis() as u64)
                    .max(cache.hot.longest_negative_ttl.load(Ordering::Relaxed));
                let cutoff = now_millis().saturating_sub(retention);
                let c = cache.clone();
                match tokio::task::spawn_blocking(move || c.purge_negatives(cutoff)).await {
                    Ok(n) if n > 0 => {
                        tracing::debug!(purged = n, "expired not-found answers purged")
                    }
                    _ => {}
                }
            }
            let due = cache.hot.due(&cache);
            if due.is_empty() {
                continue;
            }
            futures::stream::iter(due)
                .for_each_concurrent(CONCURRENCY, |(q, seen)| {
                    let cache = cache.clone();
                    async move {
                        // Jitter, so many entries due at once do not hit the origin together.
                        let jitter = rand::random::<u64>() % 100;
                        tokio::time::sleep(Duration::from_millis(jitter)).await;
                        cache.refresh_query(q, seen).await;
                    }
                })
                .await;
        }
    }))
}
