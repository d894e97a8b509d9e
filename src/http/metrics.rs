//! Operations: Prometheus metrics, health and readiness, and the access log (one line per
//! request, written when its body has been sent, with the bytes and the cache outcome).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::body::{full, Body, BoxError};
use super::AppState;

/// Latency buckets in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Where the answer came from, set by handlers as a response extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Package served from the cache, or metadata fresh in the cache.
    Hit,
    /// Metadata served stale (revalidating, or the origin failing).
    Stale,
    /// Package fetched from the origin by this request.
    Miss,
    /// Package being fetched by another request, joined.
    Join,
}

impl CacheOutcome {
    fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Join => "join",
        }
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Requests of one route: counts by status, and the latency histogram.
#[derive(Default)]
struct RouteStats {
    statuses: Vec<(u16, u64)>,
    latency: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    /// One lock per request, taken briefly: routes are few, statuses per route fewer.
    routes: Mutex<HashMap<&'static str, RouteStats>>,
    bytes_sent: Mutex<HashMap<&'static str, u64>>,
    pub in_flight_downloads: AtomicI64,
    next_request_id: AtomicU64,
    started: Option<Instant>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: Some(Instant::now()),
            ..Default::default()
        }
    }

    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Relaxed) + 1
    }

    /// Counts a response when its headers go out (latency is time to headers).
    pub fn record(&self, route: &'static str, status: u16, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let stats = routes.entry(route).or_default();
        match stats.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => stats.statuses.push((status, 1)),
        }
        let h = &mut stats.latency;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    fn record_bytes(&self, outcome: &'static str, n: u64) {
        *self
            .bytes_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += n;
    }

    /// The Prometheus text exposition.
    pub fn render(&self, state: &AppState) -> String {
        let mut out = String::new();
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        header(
            &mut out,
            "odtr_requests_total",
            "counter",
            "HTTP requests by route and status.",
        );
        let lat = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut reqs: Vec<_> = lat
            .iter()
            .flat_map(|(route, st)| st.statuses.iter().map(move |(s, n)| ((*route, *s), *n)))
            .collect();
        reqs.sort();
        for ((route, status), n) in reqs {
            let _ = writeln!(
                out,
                "odtr_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        header(
            &mut out,
            "odtr_request_duration_seconds",
            "histogram",
            "Time to response headers, by route.",
        );
        let mut routes: Vec<_> = lat.keys().copied().collect();
        routes.sort();
        for route in routes {
            let h = &lat[route].latency;
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "odtr_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "odtr_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "odtr_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "odtr_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        drop(lat);
        let _ = writeln!(out, "# HELP odtr_response_bytes_total Body bytes sent, by cache outcome.\n# TYPE odtr_response_bytes_total counter");
        let mut bytes: Vec<_> = self
            .bytes_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        bytes.sort();
        for (outcome, n) in bytes {
            let _ = writeln!(
                out,
                "odtr_response_bytes_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let c = &state.store.counters;
        let m = &state.meta.counters;
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "odtr_cache_hits_total",
            "counter",
            "Package requests answered from the cache.",
            c.hits.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "odtr_cache_misses_total",
            "counter",
            "Package requests that started an origin fetch.",
            c.misses.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "odtr_cache_singleflight_joins_total",
            "counter",
            "Package requests that joined a fetch already running.",
            c.joins.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "odtr_origin_blob_fetches_total",
            "counter",
            "Package fetches from origins.",
            c.origin_fetches.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "odtr_origin_blob_bytes_total",
            "counter",
            "Package bytes received from origins.",
            c.bytes_from_origin.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "odtr_digest_mismatches_total",
            "counter",
            "Packages whose bytes did not match their digest.",
            c.digest_mismatches.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "odtr_cache_evictions_total",
            "counter",
            "Packages evicted from the cache.",
            c.evictions.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "odtr_cache_bytes",
            "gauge",
            "Bytes of packages in the cache.",
            state.store.total_bytes().to_string(),
        );
        gauge(
            &mut out,
            "odtr_cache_max_bytes",
            "gauge",
            "Configured cache size limit.",
            state.store.max_size().to_string(),
        );
        gauge(
            &mut out,
            "odtr_metadata_fresh_total",
            "counter",
            "Metadata answers served fresh from the cache.",
            m.fresh.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "odtr_metadata_stale_served_total",
            "counter",
            "Metadata answers served stale.",
            m.stale_served.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "odtr_metadata_origin_requests_total",
            "counter",
            "Metadata refreshes sent to origins.",
            m.origin_requests.load(Relaxed).to_string(),
        );
        let _ = writeln!(out, "# HELP odtr_revalidations_total Metadata revalidations by result.\n# TYPE odtr_revalidations_total counter");
        for (result, v) in [
            ("unchanged", &m.revalidations_unchanged),
            ("changed", &m.revalidations_changed),
            ("failed", &m.revalidations_failed),
        ] {
            let _ = writeln!(
                out,
                "odtr_revalidations_total{{result=\"{result}\"}} {}",
                v.load(Relaxed)
            );
        }
        gauge(
            &mut out,
            "odtr_downloads_in_flight",
            "gauge",
            "Package downloads being sent.",
            self.in_flight_downloads.load(Relaxed).to_string(),
        );
        if let Some(s) = self.started {
            gauge(
                &mut out,
                "odtr_uptime_seconds",
                "gauge",
                "Seconds since the server started.",
                s.elapsed().as_secs().to_string(),
            );
        }
        out
    }
}

pub fn metrics_response(state: &AppState) -> Response<Body> {
    let mut resp = Response::new(full(state.metrics.render(state)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// `/healthz`: the process answers.
pub fn healthz() -> Response<Body> {
    let mut resp = Response::new(full("ok\n"));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    resp
}

/// `/readyz`: the cache is open and the configuration loaded (origins are reported, not required).
pub fn readyz(state: &AppState) -> Response<Body> {
    let cache_dir_ok = state.store.root().join("blobs").is_dir();
    let body = serde_json::json!({
        "ready": cache_dir_ok,
        "cache": { "directory": state.store.root().display().to_string(), "ok": cache_dir_ok, "bytes": state.store.total_bytes() },
        "mirrors": state.mirrors.keys().collect::<Vec<_>>(),
        "provider_registry": state.provider_registry.as_ref().map(|r| serde_json::json!({ "signing_key_id": r.key().key_id })),
        "module_registry": state.module_registry.is_some(),
        "offline": state.meta.is_offline(),
    });
    let mut resp = Response::new(full(body.to_string() + "\n"));
    if !cache_dir_ok {
        *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    }
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// What the access log line says about a request.
pub struct AccessEntry {
    pub id: u64,
    pub peer: std::net::SocketAddr,
    pub method: http::Method,
    /// The whole URI (cheap to keep); only its path is ever logged, never the query.
    pub uri: http::Uri,
    pub status: u16,
    pub outcome: Option<CacheOutcome>,
    pub started: Instant,
    pub is_download: bool,
}

/// Wraps a response body to count what is sent and write the access log line when it ends
/// (or when the client goes away).
pub struct LoggedBody {
    inner: Body,
    sent: u64,
    entry: Option<AccessEntry>,
    metrics: std::sync::Arc<Metrics>,
    completed: bool,
    /// The declared `Content-Length`: hyper stops polling a body once that much is written,
    /// so a streamed body never gets to say it ended.
    expected: Option<u64>,
    /// The connection's count of requests in progress, given back when the body is done.
    in_flight: Option<std::sync::Arc<super::listener::Activity>>,
}

impl LoggedBody {
    /// Counts this response in `counter` until its body is done or dropped.
    pub fn hold(mut self, activity: std::sync::Arc<super::listener::Activity>) -> LoggedBody {
        activity.begin();
        self.in_flight = Some(activity);
        self
    }

    /// Not boxed again: hyper takes this type as it is.
    pub fn wrap(
        inner: Body,
        entry: AccessEntry,
        expected: Option<u64>,
        metrics: std::sync::Arc<Metrics>,
    ) -> LoggedBody {
        if entry.is_download {
            metrics.in_flight_downloads.fetch_add(1, Relaxed);
        }
        LoggedBody {
            inner,
            sent: 0,
            entry: Some(entry),
            metrics,
            completed: false,
            expected,
            in_flight: None,
        }
    }

    fn finish(&mut self) {
        let Some(e) = self.entry.take() else { return };
        if e.is_download {
            self.metrics.in_flight_downloads.fetch_sub(1, Relaxed);
        }
        let outcome = e.outcome.map(CacheOutcome::label).unwrap_or("-");
        self.metrics.record_bytes(outcome, self.sent);
        tracing::info!(
            target: "access",
            id = e.id,
            peer = %e.peer,
            method = %e.method,
            path = %e.uri.path(),
            status = e.status,
            bytes = self.sent,
            ms = e.started.elapsed().as_millis() as u64,
            cache = outcome,
            complete = self.completed,
            "request"
        );
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                self.completed = true;
                self.finish();
            }
            Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() || self.expected == Some(self.sent) {
            self.completed = true;
        }
        self.finish();
        if let Some(a) = self.in_flight.take() {
            a.end();
        }
    }
}
