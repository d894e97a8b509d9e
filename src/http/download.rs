//! Package downloads: from the cache with full HTTP semantics (Range, HEAD, ETag,
//! conditional requests), or streamed from the single shared origin fetch.

use futures::StreamExt;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};

use super::body::{empty, streaming, Body};
use super::error::ApiError;
use super::metrics::CacheOutcome;
use super::range::{choose_range, if_range_allows, none_match, NoneMatch, RangeChoice};
use super::sendfile::{file_body, FileSender};
use super::AppState;
use crate::mirror::{MirrorService, PackageBody};
use crate::oci::Digest;
use crate::provider::ProviderAddress;
use crate::store::{file_range, Residence};

pub async fn download<B>(
    state: &AppState,
    name: &str,
    addr: &ProviderAddress,
    digest: &Digest,
    req: &Request<B>,
    is_head: bool,
) -> Result<Response<Body>, ApiError> {
    let m = state
        .mirrors
        .get(name)
        .ok_or_else(|| ApiError::UnknownMirror(name.to_owned()))?;
    let what = m.describe(addr);
    let warm = || m.warm_command(&m.describe(addr));
    sealed_zip(m, &m.repository(addr), digest, req, is_head, &what, warm).await
}

/// A zip named by a download URL of this server (a mirror's or a registry's provider
/// package, or a module), sealed with the client's credential when the origin needs it.
pub async fn sealed_zip<B>(
    origin: &MirrorService,
    repo: &str,
    digest: &Digest,
    req: &Request<B>,
    is_head: bool,
    what: &str,
    warm: impl FnOnce() -> String,
) -> Result<Response<Body>, ApiError> {
    let token = sealed_token(req);
    // RFC 9111 `only-if-cached`: answer from the cache or with a 504, never by fetching.
    // `warm` asks so to learn whether what it fetched through us was kept.
    let cached_only = if only_if_cached(req) {
        origin
            .sealed_credential(repo, digest.as_str(), token.as_deref())
            .map_err(ApiError::from)?;
        let cached = match origin.store().residence(digest) {
            Residence::Kept => origin.store().cached(digest).ok_or("MISS"),
            Residence::Filling => Err("JOIN"),
            Residence::Absent => Err("MISS"),
        };
        match cached {
            Ok(blob) => Some(blob),
            Err(label) => {
                let mut resp = respond(StatusCode::GATEWAY_TIMEOUT, HeaderMap::new(), empty());
                resp.headers_mut()
                    .insert("x-cache", HeaderValue::from_static(label));
                // "Not kept" is an answer, not a server error: counted under its own route,
                // so 5xx alerts on downloads stay meaningful.
                resp.extensions_mut()
                    .insert(super::handlers::RouteLabel("cache_probe"));
                return Ok(resp);
            }
        }
    } else {
        None
    };
    let blob = BlobHeaders {
        content_type: "application/zip",
        // The URL names the content, so it never changes; but an origin that needs
        // authorization must not have shared caches keep it for others.
        private: origin.needs_authorization(),
    };
    // Still only for clients allowed to have it.
    let authorize = async {
        origin
            .sealed_credential(repo, digest.as_str(), token.as_deref())
            .map(|_| ())
            .map_err(ApiError::from)
    };
    let lookup = async {
        if let Some(blob) = cached_only {
            return Ok(PackageBody::Cached(blob));
        }
        origin
            .sealed_blob(repo, digest, token.as_deref(), warm)
            .await
            .map_err(ApiError::from)
    };
    serve_blob(req, is_head, digest, blob, what, authorize, lookup).await
}

/// `Cache-Control: only-if-cached`.
fn only_if_cached<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"))
}

/// The sealed token of a download URL (`?t=...`), if any.
pub fn sealed_token<B>(req: &Request<B>) -> Option<String> {
    req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "t")
            .map(|(_, v)| v.into_owned())
    })
}

/// How a blob response is labelled.
pub struct BlobHeaders {
    pub content_type: &'static str,
    /// Answers depend on the client's credentials: shared caches must not keep them.
    pub private: bool,
}

/// Serves a blob named by its digest with full HTTP semantics. `authorize` is enough for a
/// `304`; `lookup` gives the blob, cached or arriving. `what` names it in logs.
pub async fn serve_blob<B>(
    req: &Request<B>,
    is_head: bool,
    digest: &Digest,
    blob: BlobHeaders,
    what: impl std::fmt::Display,
    authorize: impl std::future::Future<Output = Result<(), ApiError>>,
    lookup: impl std::future::Future<Output = Result<PackageBody, ApiError>>,
) -> Result<Response<Body>, ApiError> {
    let etag = format!("\"{digest}\"");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("digest is ASCII"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(blob.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if blob.private {
            "private, max-age=31536000, immutable"
        } else {
            "public, max-age=31536000, immutable"
        }),
    );
    if let Ok(v) = HeaderValue::from_str(digest.as_str()) {
        headers.insert("docker-content-digest", v);
    }

    let header_str = |h| {
        req.headers()
            .get(h)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let condition = none_match(header_str(header::IF_NONE_MATCH), &etag);
    if condition == NoneMatch::Tag {
        authorize.await?;
        return Ok(respond(StatusCode::NOT_MODIFIED, headers, empty()));
    }
    let range =
        header_str(header::RANGE).filter(|_| if_range_allows(header_str(header::IF_RANGE), &etag));

    let package = lookup.await?;
    if condition == NoneMatch::Any {
        // `*` matches once the blob is known to exist: cached, or the origin answering.
        if let PackageBody::Filling { fill, .. } = &package {
            fill.started().await.map_err(ApiError::Fill)?;
        }
        return Ok(respond(StatusCode::NOT_MODIFIED, headers, empty()));
    }
    match package {
        PackageBody::Cached(blob) => {
            let size = blob.meta.size;
            let file = blob.file;
            // Only HTTP/1 connections of plain HTTP listeners carry a sender.
            let sender = (req.version() <= http::Version::HTTP_11)
                .then(|| req.extensions().get::<FileSender>().cloned())
                .flatten();
            Ok(with_outcome(
                CacheOutcome::Hit,
                ranged(
                    size,
                    range,
                    headers,
                    is_head,
                    move |start, end| match sender {
                        Some(sender) => file_body(sender, file, start, end),
                        None => streaming(file_range(file, start, end)),
                    },
                ),
            ))
        }
        PackageBody::Filling { fill, started } if range.is_some() => {
            let outcome = fill_outcome(started, &fill);
            // A part of a blob is only served once the whole blob is verified.
            let size = fill.verified().await.map_err(ApiError::Fill)?;
            Ok(with_outcome(
                outcome,
                ranged(size, range, headers, is_head, move |start, end| {
                    streaming(fill.stream(start, Some(end)))
                }),
            ))
        }
        PackageBody::Filling { fill, started } => {
            let outcome = fill_outcome(started, &fill);
            let total = fill.started().await.map_err(ApiError::Fill)?;
            if let Some(len) = total {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            let body = if is_head {
                empty()
            } else {
                let what = format!("{what} {digest}");
                streaming(fill.stream(0, None).inspect(move |r| {
                    if let Err(e) = r {
                        tracing::warn!(package = %what, error = %e, "package download aborted");
                    }
                }))
            };
            Ok(with_outcome(
                outcome,
                respond(StatusCode::OK, headers, body),
            ))
        }
    }
}

fn fill_outcome(started: bool, fill: &crate::store::Fill) -> CacheOutcome {
    if started {
        CacheOutcome::Miss
    } else if fill.is_verified() {
        // Verified and being filed away: as good as cached.
        CacheOutcome::Hit
    } else {
        CacheOutcome::Join
    }
}

/// Records where the package came from, for metrics and logs, and tells the client in
/// `X-Cache` (`HIT`, `MISS`, `JOIN`), which `warm` uses and operators find handy.
fn with_outcome(outcome: CacheOutcome, mut resp: Response<Body>) -> Response<Body> {
    let label = match outcome {
        CacheOutcome::Hit | CacheOutcome::Stale => "HIT",
        CacheOutcome::Miss => "MISS",
        CacheOutcome::Join => "JOIN",
    };
    resp.headers_mut()
        .insert("x-cache", HeaderValue::from_static(label));
    resp.extensions_mut().insert(outcome);
    resp
}

/// A 200, 206 or 416 for a representation of `size` bytes; `body(start, end_exclusive)`.
fn ranged(
    size: u64,
    range: Option<&str>,
    mut headers: HeaderMap,
    is_head: bool,
    body: impl FnOnce(u64, u64) -> Body,
) -> Response<Body> {
    let (status, start, end) = match choose_range(range, size) {
        RangeChoice::Full => (StatusCode::OK, 0, size),
        RangeChoice::Partial { start, end } => {
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")).expect("ASCII"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end + 1)
        }
        RangeChoice::Unsatisfiable => {
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return respond(StatusCode::RANGE_NOT_SATISFIABLE, headers, empty());
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    let body = if is_head || start == end {
        empty()
    } else {
        body(start, end)
    };
    respond(status, headers, body)
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}
