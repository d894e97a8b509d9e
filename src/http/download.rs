//! Package downloads: from the cache with full HTTP semantics (Range, HEAD, ETag,
//! conditional requests), or streamed from the single shared origin fetch.

use futures::StreamExt;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};

use super::body::{empty, streaming, Body};
use super::error::ApiError;
use super::metrics::CacheOutcome;
use super::range::{choose_range, if_range_allows, none_match, NoneMatch, RangeChoice};
use super::AppState;
use crate::mirror::PackageBody;
use crate::oci::Digest;
use crate::provider::ProviderAddress;
use crate::store::file_range;

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
    let token = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "t")
            .map(|(_, v)| v.into_owned())
    });
    let etag = format!("\"{digest}\"");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("digest is ASCII"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    // The URL names the content, so it never changes; but a mirror that needs authorization
    // must not have shared caches keep it for others.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if m.needs_authorization() {
            "private, max-age=31536000, immutable"
        } else {
            "public, max-age=31536000, immutable"
        }),
    );

    let header_str = |h| {
        req.headers()
            .get(h)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let condition = none_match(header_str(header::IF_NONE_MATCH), &etag);
    if condition == NoneMatch::Tag {
        // Still only for clients allowed to have it.
        m.download_credential(addr, digest, token.as_deref())?;
        return Ok(respond(StatusCode::NOT_MODIFIED, headers, empty()));
    }
    let range =
        header_str(header::RANGE).filter(|_| if_range_allows(header_str(header::IF_RANGE), &etag));

    let package = m.package(addr, digest, token.as_deref()).await?;
    if condition == NoneMatch::Any {
        // `*` matches once the package is known to exist: cached, or the origin answering.
        if let PackageBody::Filling { fill, .. } = &package {
            fill.started().await.map_err(ApiError::Fill)?;
        }
        return Ok(respond(StatusCode::NOT_MODIFIED, headers, empty()));
    }
    match package {
        PackageBody::Cached(blob) => {
            let size = blob.meta.size;
            let file = blob.file;
            Ok(with_outcome(
                CacheOutcome::Hit,
                ranged(size, range, headers, is_head, move |start, end| {
                    streaming(file_range(file, start, end))
                }),
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
                let what = format!("{addr} {digest}");
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
