//! The read side of the OCI Distribution API (`/v2/`), answered from the same caches as the
//! network mirror, so that one instance can be another's `origin_url` (tiered caches) and
//! OCI clients (skopeo, ORAS, OpenTofu's `oci_mirror`) can pull through it.
//!
//! A repository is served by the configured mirror whose `name_prefix` it is under (the
//! longest such prefix), from that mirror's origin, under the same name.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::body::{empty, full, Body};
use super::download::{serve_blob, BlobHeaders};
use super::error::ApiError;
use super::metrics::CacheOutcome;
use super::router::RegistryRoute;
use super::AppState;
use crate::mirror::MirrorService;
use crate::oci::Credential;

/// The most tags one page holds when the client does not say (`n`).
const DEFAULT_PAGE: usize = 1000;

pub async fn handle<B>(
    state: &AppState,
    route: RegistryRoute,
    req: &Request<B>,
    client: Credential,
) -> Response<Body> {
    let is_head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !is_head || route == RegistryRoute::Write {
        return oci_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this registry is read-only: push to the origin registry",
        );
    }
    let (result, unknown) = match route {
        RegistryRoute::Base => (base(state, &client).await, "UNKNOWN"),
        RegistryRoute::Tags { name } => (tags(state, &name, req, client).await, "NAME_UNKNOWN"),
        RegistryRoute::Manifest { name, reference } => (
            manifest(state, &name, &reference, client, is_head).await,
            "MANIFEST_UNKNOWN",
        ),
        RegistryRoute::Blob { name, digest } => {
            let result = match mirror_for(state, &name) {
                Ok(m) => {
                    let blob = BlobHeaders {
                        content_type: "application/octet-stream",
                        private: !is_public(m, &client),
                    };
                    let lookup = || async {
                        m.repository_blob(&name, &digest, client.clone())
                            .await
                            .map_err(ApiError::from)
                    };
                    // No cheaper proof of access than the lookup itself on the pull API.
                    let authorize = async { lookup().await.map(|_| ()) };
                    serve_blob(req, is_head, &digest, blob, &name, authorize, lookup()).await
                }
                Err(e) => Err(e),
            };
            (result, "BLOB_UNKNOWN")
        }
        RegistryRoute::Write => unreachable!("refused above"),
    };
    match result {
        Ok(mut resp) => {
            resp.headers_mut().insert(
                "docker-distribution-api-version",
                HeaderValue::from_static("registry/2.0"),
            );
            resp
        }
        Err(e) => e.into_oci_response(unknown),
    }
}

/// Answers that depend on no credential may be kept by shared caches.
fn is_public(m: &MirrorService, client: &Credential) -> bool {
    !m.needs_authorization() && matches!(client, Credential::Anonymous)
}

/// The mirror serving repository `name`: the longest matching `name_prefix`.
fn mirror_for<'a>(state: &'a AppState, name: &str) -> Result<&'a Arc<MirrorService>, ApiError> {
    state
        .mirrors
        .values()
        .filter(|m| m.holds_repository(name))
        // Longest prefix; on a tie, deterministically the stricter mirror (not public),
        // then the first name.
        .max_by(|a, b| {
            let (a, b) = (&a.config, &b.config);
            a.name_prefix
                .len()
                .cmp(&b.name_prefix.len())
                .then(b.public.cmp(&a.public))
                .then(b.name.cmp(&a.name))
        })
        .ok_or_else(|| ApiError::UnknownRepository(name.to_owned()))
}

/// `GET /v2/`: the API version check. A client without credentials is challenged when the
/// origin of any mirror would challenge it, so OCI clients know to send theirs.
async fn base(state: &AppState, client: &Credential) -> Result<Response<Body>, ApiError> {
    if matches!(client, Credential::Anonymous) {
        for m in state.mirrors.values() {
            if m.origin_demands_credentials().await {
                return Err(ApiError::Mirror(crate::mirror::MirrorError::Origin(
                    Arc::new(crate::oci::OciError::Unauthorized {
                        repository: String::new(),
                    }),
                )));
            }
        }
    }
    Ok(json(full("{}"), CacheOutcome::Hit))
}

async fn tags<B>(
    state: &AppState,
    name: &str,
    req: &Request<B>,
    client: Credential,
) -> Result<Response<Body>, ApiError> {
    let m = mirror_for(state, name)?;
    let public = is_public(m, &client);
    let all = m.repository_tags(name, client).await?;
    let (mut n, mut last) = (None, None);
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match &*k {
            "n" => n = Some(v.parse::<usize>().map_err(|_| ApiError::BadQuery("n"))?),
            "last" => last = Some(v.into_owned()),
            _ => {}
        }
    }
    let (page, more) = page_of_tags(&all.value, n, last.as_deref());
    let body = serde_json::json!({ "name": name, "tags": page }).to_string();
    let mut resp = json(
        full(body),
        if all.stale {
            CacheOutcome::Stale
        } else {
            CacheOutcome::Hit
        },
    );
    if let (true, Some(last)) = (more, page.last()) {
        let next = format!(
            "</v2/{name}/tags/list?n={}&last={}>; rel=\"next\"",
            n.unwrap_or(DEFAULT_PAGE),
            url::form_urlencoded::byte_serialize(last.as_bytes()).collect::<String>()
        );
        if let Ok(v) = HeaderValue::from_str(&next) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    cache_control(&mut resp, public);
    Ok(resp)
}

/// Tags in lexical order after `last`, at most `n` of them; and whether more follow.
pub fn page_of_tags<'a>(
    tags: &'a [String],
    n: Option<usize>,
    last: Option<&str>,
) -> (Vec<&'a String>, bool) {
    let mut sorted: Vec<&String> = tags
        .iter()
        .filter(|t| last.is_none_or(|l| t.as_str() > l))
        .collect();
    sorted.sort();
    let n = n.unwrap_or(DEFAULT_PAGE);
    let more = sorted.len() > n;
    sorted.truncate(n);
    (sorted, more)
}

async fn manifest(
    state: &AppState,
    name: &str,
    reference: &str,
    client: Credential,
    is_head: bool,
) -> Result<Response<Body>, ApiError> {
    let m = mirror_for(state, name)?;
    let public = is_public(m, &client);
    let doc = m.repository_manifest(name, reference, client).await?;
    let (digest, body) = &doc.value;
    let raw = bytes::Bytes::copy_from_slice(body.raw());
    let len = raw.len();
    let mut resp = Response::new(if is_head { empty() } else { full(raw) });
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(body.parsed().media_type()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(digest.as_str()) {
        h.insert("docker-content-digest", v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        h.insert(header::ETAG, v);
    }
    resp.extensions_mut().insert(if doc.stale {
        CacheOutcome::Stale
    } else {
        CacheOutcome::Hit
    });
    cache_control(&mut resp, public);
    Ok(resp)
}

fn json(body: Body, outcome: CacheOutcome) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.extensions_mut().insert(outcome);
    resp
}

fn cache_control(resp: &mut Response<Body>, public: bool) {
    // Tags move, so revalidate; credentialed answers are for their client only.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if public {
            "public, no-cache"
        } else {
            "private, no-cache"
        }),
    );
}

/// An error in the OCI Distribution format.
pub fn oci_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "errors": [{ "code": code, "message": message }]
    })
    .to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if status == StatusCode::UNAUTHORIZED {
        // OCI clients answer a Basic challenge from their usual credential stores; the
        // credential goes on to the origin (exchanged at its token realm if it uses one).
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"oci-distribution-terraform-registry\""),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_pages_follow_lexical_order() {
        let tags: Vec<String> = ["b", "a", "d", "c"].iter().map(|s| s.to_string()).collect();
        let (p, more) = page_of_tags(&tags, Some(2), None);
        assert_eq!(p, ["a", "b"]);
        assert!(more);
        let (p, more) = page_of_tags(&tags, Some(2), Some("b"));
        assert_eq!(p, ["c", "d"]);
        assert!(!more);
        let (p, more) = page_of_tags(&tags, None, Some("d"));
        assert!(p.is_empty() && !more);
        let (p, _) = page_of_tags(&tags, Some(0), None);
        assert!(p.is_empty());
    }

    #[test]
    fn errors_follow_the_spec_format() {
        let r = oci_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "read-only");
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }
}
