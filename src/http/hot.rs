//! Ready answers for the hottest requests: an anonymous `GET` of a mirror's `index.json` or
//! `VERSION.json` that was just answered from fresh cached metadata is answered again from
//! here, by its exact path, without routing, address parsing or metadata lookups (they cost
//! several times the bytes on the wire in CPU, and `terraform init` asks these on every run).
//!
//! An answer is used only while everything it was built from is unchanged: no metadata was
//! stored or dropped since (the metadata epoch), no package entered or left the cache (the
//! store generation, which decides the `h1:` hashes offered), the metadata it came from is
//! still fresh, and at most [`MAX_LIFETIME`] has passed, so the slow path still runs often
//! enough to keep the background revalidator's view of what is hot. Only answers built from
//! what the origin gave without a credential are kept (see `handlers::remember_hot`), and
//! only for paths in their plain spelling, so a client cannot fill the table with variants.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response};

use super::body::Body;
use super::handlers::{json_answer, RouteLabel};

/// The longest an answer is reused without the slow path running again.
const MAX_LIFETIME: Duration = Duration::from_secs(60);
/// Paths remembered, and the bytes of their answers: beyond either, new ones are not kept
/// (after dropping the answers that no longer hold).
const MAX_ENTRIES: usize = 4096;
const MAX_BYTES: usize = 32 << 20;

/// What a ready answer was built from, to tell whether it still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub metadata_epoch: u64,
    pub store_generation: u64,
}

impl Sources {
    fn newer_than(&self, other: &Sources) -> bool {
        self != other
            && self.metadata_epoch >= other.metadata_epoch
            && self.store_generation >= other.store_generation
    }
}

struct Ready {
    body: Bytes,
    cache_control: HeaderValue,
    label: &'static str,
    /// When the metadata it was built from was fetched (for `Age`).
    fetched: Instant,
    until: Instant,
    sources: Sources,
}

#[derive(Default)]
pub struct HotResponses {
    ready: RwLock<ReadyMap>,
}

#[derive(Default)]
struct ReadyMap {
    by_path: HashMap<Box<str>, Ready>,
    bytes: usize,
}

/// A path as Terraform writes it: no percent-escapes, no capitals, no empty or dot segments.
/// Other spellings of the same document are answered by the full path, never kept.
fn plain_spelling(path: &str) -> bool {
    path.bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'-' | b'_'))
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
}

impl HotResponses {
    /// The ready answer for `path`, if it still holds.
    pub fn get(&self, path: &str, sources: Sources) -> Option<Response<Body>> {
        let map = self.ready.read().unwrap_or_else(|p| p.into_inner());
        let r = map.by_path.get(path)?;
        let now = Instant::now();
        if r.sources != sources || now >= r.until {
            return None;
        }
        let mut resp = json_answer(
            r.body.clone(),
            r.cache_control.clone(),
            now.saturating_duration_since(r.fetched),
            false,
        );
        resp.extensions_mut().insert(RouteLabel(r.label));
        Some(resp)
    }

    /// Remembers a fresh answer for `path`, built from `sources`, whose metadata was `age`
    /// old and stays fresh for `fresh_for` after its fetch.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        path: &str,
        label: &'static str,
        body: Bytes,
        cache_control: HeaderValue,
        age: Duration,
        fresh_for: Duration,
        sources: Sources,
    ) {
        if !plain_spelling(path) {
            return;
        }
        let now = Instant::now();
        let Some(fetched) = now.checked_sub(age) else {
            return;
        };
        let Some(fresh_until) = fetched.checked_add(fresh_for) else {
            return;
        };
        let until = fresh_until.min(now + MAX_LIFETIME);
        if until <= now {
            return;
        }
        let mut guard = self.ready.write().unwrap_or_else(|p| p.into_inner());
        let map = &mut *guard;
        if let Some(old) = map.by_path.get(path) {
            if old.sources.newer_than(&sources) {
                return; // a slower request, built from older sources
            }
        }
        let full =
            |m: &ReadyMap| m.by_path.len() >= MAX_ENTRIES || m.bytes + body.len() > MAX_BYTES;
        if full(map) {
            // Make room from the answers that no longer hold; if that is not enough, this one
            // is simply not kept.
            map.by_path
                .retain(|_, r| r.until > now && !sources.newer_than(&r.sources));
            map.bytes = map.by_path.values().map(|r| r.body.len()).sum();
            if full(map) {
                return;
            }
        }
        map.bytes += body.len();
        let ready = Ready {
            body,
            cache_control,
            label,
            fetched,
            until,
            sources,
        };
        if let Some(old) = map.by_path.insert(path.into(), ready) {
            map.bytes -= old.body.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    const SOURCES: Sources = Sources {
        metadata_epoch: 1,
        store_generation: 7,
    };

    fn put(hot: &HotResponses, path: &str, age: Duration, fresh_for: Duration) {
        hot.put(
            path,
            "version",
            Bytes::from_static(b"{}"),
            HeaderValue::from_static("public, max-age=60"),
            age,
            fresh_for,
            SOURCES,
        );
    }

    #[test]
    fn answers_only_while_its_sources_are_unchanged_and_fresh() {
        let hot = HotResponses::default();
        put(
            &hot,
            "/m/a/1.0.0.json",
            Duration::from_secs(5),
            Duration::from_secs(3600),
        );
        let resp = hot.get("/m/a/1.0.0.json", SOURCES).expect("ready");
        assert_eq!(resp.headers()[header::AGE], "5");
        assert!(hot.get("/m/b/1.0.0.json", SOURCES).is_none());
        let stored_since = Sources {
            metadata_epoch: 2,
            ..SOURCES
        };
        assert!(hot.get("/m/a/1.0.0.json", stored_since).is_none());
        let package_added = Sources {
            store_generation: 8,
            ..SOURCES
        };
        assert!(hot.get("/m/a/1.0.0.json", package_added).is_none());
        // Other spellings of a path are never kept.
        for path in ["/m/A/1.0.0.json", "/m/%61/1.0.0.json", "/m/./a/1.0.0.json"] {
            put(&hot, path, Duration::ZERO, Duration::from_secs(3600));
            assert!(hot.get(path, SOURCES).is_none(), "{path}");
        }
        // A slower request built from older sources does not replace a newer answer.
        let newer = Sources {
            metadata_epoch: 5,
            ..SOURCES
        };
        hot.put(
            "/m/n/1.0.0.json",
            "version",
            Bytes::from_static(b"new"),
            HeaderValue::from_static("public"),
            Duration::ZERO,
            Duration::from_secs(3600),
            newer,
        );
        put(
            &hot,
            "/m/n/1.0.0.json",
            Duration::ZERO,
            Duration::from_secs(3600),
        );
        assert!(hot.get("/m/n/1.0.0.json", newer).is_some());
        // Metadata past its freshness is never kept.
        put(
            &hot,
            "/m/c/index.json",
            Duration::from_secs(10),
            Duration::from_secs(10),
        );
        assert!(hot.get("/m/c/index.json", SOURCES).is_none());
    }
}
