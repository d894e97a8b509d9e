//! Request handlers: the home page and the three network-mirror endpoints.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::body::{full, Body};
use super::error::ApiError;
use super::metrics::{self, CacheOutcome};
use super::router::{route, Route, RouteError};
use super::{AppState, Role};
use crate::mirror::MirrorService;
use crate::oci::Credential;
use crate::provider::ProviderAddress;

/// Handles one request; the response carries its route's metrics label as an extension.
pub async fn handle<B>(state: Arc<AppState>, role: Role, req: Request<B>) -> Response<Body> {
    if role.serves_mirrors() && hot_candidate(&req) {
        if let Some(resp) = state.hot.get(req.uri().path(), hot_sources(&state)) {
            // Counted as the fresh metadata hit it stands for.
            state
                .meta
                .counters
                .fresh
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return resp;
        }
    }
    // Boxed: the routes' futures together are large, and a hot answer should not pay for
    // moving them around.
    Box::pin(handle_routed(state, role, req)).await
}

/// A request whose answer may come from (and go to) the ready answers: an anonymous plain
/// `GET` (the documents for credentialed clients depend on the credential).
fn hot_candidate<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req.uri().query().is_none()
        && !req.headers().contains_key(header::AUTHORIZATION)
}

fn hot_sources(state: &AppState) -> super::hot::Sources {
    super::hot::Sources {
        metadata_epoch: state.meta.epoch(),
        store_generation: state.store.generation(),
    }
}

async fn handle_routed<B>(state: Arc<AppState>, role: Role, req: Request<B>) -> Response<Body> {
    let is_head = req.method() == Method::HEAD;
    let path = req.uri().path();
    let routed = if path.len() > state.max_path_length {
        Err(RouteError::TooLong(state.max_path_length))
    } else {
        route(path).and_then(|r| {
            // Each listener answers only its own endpoints.
            let allowed = if r.is_operational() {
                role.serves_admin()
            } else {
                role.serves_mirrors()
            };
            if allowed {
                Ok(r)
            } else {
                Err(RouteError::NotFound)
            }
        })
    };
    let label = RouteLabel(routed.as_ref().map(Route::label).unwrap_or("other"));
    let routed = match routed {
        // The OCI API has its own error format, method errors included.
        Ok(Route::Registry(r)) => {
            let mut resp = super::v2::handle(&state, r, &req, client_credential(&req)).await;
            resp.extensions_mut().insert(label);
            return resp;
        }
        Err(e) if req.uri().path().starts_with("/v2/") => {
            let mut resp = ApiError::Route(e).into_oci_response("NAME_UNKNOWN");
            resp.extensions_mut().insert(label);
            return resp;
        }
        other => other,
    };
    if req.method() != Method::GET && !is_head {
        let mut resp = ApiError::MethodNotAllowed.into_response();
        resp.extensions_mut().insert(label);
        return resp;
    }
    let result = match routed {
        Err(e) => Err(e.into()),
        Ok(Route::Home) => Ok(home(&state, &req)),
        Ok(Route::Metrics) => Ok(metrics::metrics_response(&state)),
        Ok(Route::Healthz) => Ok(metrics::healthz()),
        Ok(Route::Readyz) => Ok(metrics::readyz(&state)),
        Ok(Route::MirrorIndex { mirror, addr }) => index(&state, &mirror, &addr, &req).await,
        Ok(Route::MirrorVersion {
            mirror,
            addr,
            version,
        }) => version_json(&state, &mirror, &addr, &version, &req).await,
        Ok(Route::MirrorDownload {
            mirror,
            addr,
            digest,
        }) => super::download::download(&state, &mirror, &addr, &digest, &req, is_head).await,
        Ok(Route::Discovery) => Ok(super::registry::discovery(&state)),
        Ok(Route::Providers(r)) => super::registry::providers(&state, r, &req, is_head).await,
        Ok(Route::Modules(r)) => super::registry::modules(&state, r, &req, is_head).await,
        Ok(Route::Registry(_)) => unreachable!("answered above"),
    };
    let mut resp = result.unwrap_or_else(ApiError::into_response);
    // A handler may have named its answer more precisely (a cache probe's "not kept").
    if resp.extensions().get::<RouteLabel>().is_none() {
        resp.extensions_mut().insert(label);
    }
    resp
}

/// The route's name in metrics.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

fn mirror<'a>(state: &'a AppState, name: &str) -> Result<&'a Arc<MirrorService>, ApiError> {
    state
        .mirrors
        .get(name)
        .ok_or_else(|| ApiError::UnknownMirror(name.to_owned()))
}

pub(super) fn client_credential<B>(req: &Request<B>) -> Credential {
    match req.headers().get(header::AUTHORIZATION) {
        Some(v) if !v.is_empty() => Credential::PassThrough(v.clone()),
        _ => Credential::Anonymous,
    }
}

/// A mirror JSON document with the cache's view of it: `Age`, a `Cache-Control` that
/// states the mirror's freshness policy, and a `Warning` when it is served stale.
pub(super) fn json_response(
    m: &MirrorService,
    client: &Credential,
    body: bytes::Bytes,
    age: Duration,
    stale: bool,
) -> Response<Body> {
    json_answer(body, m.json_cache_control(client), age, stale)
}

/// [`json_response`] with its `Cache-Control` already chosen (ready answers keep theirs).
pub(super) fn json_answer(
    body: bytes::Bytes,
    cache_control: HeaderValue,
    age: Duration,
    stale: bool,
) -> Response<Body> {
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, cache_control);
    h.insert(header::AGE, HeaderValue::from(age.as_secs()));
    resp.extensions_mut().insert(if stale {
        CacheOutcome::Stale
    } else {
        CacheOutcome::Hit
    });
    let h = resp.headers_mut();
    if stale {
        h.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
    }
    resp
}

async fn index<B>(
    state: &AppState,
    name: &str,
    addr: &ProviderAddress,
    req: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    let m = mirror(state, name)?;
    let cred = client_credential(req);
    let sources = hot_sources(state);
    let doc = m.index(addr, &cred).await?;
    let body =
        bytes::Bytes::from(serde_json::to_vec(&doc.value).expect("documents always serialise"));
    remember_hot(state, m, req, "index", &body, &doc, sources);
    Ok(json_response(m, &cred, body, doc.age, doc.stale))
}

/// Keeps a fresh answer (`body`, the document `doc` serialised) to an anonymous request ready
/// for the next identical one, if it was built only from what the origin gives without a
/// credential (anything fetched with one is shown only while a credential is accepted, which
/// a ready answer does not re-check). `sources` were read before the answer was built, so a
/// change while building makes it unusable, never wrong.
#[allow(clippy::too_many_arguments)]
fn remember_hot<B, T>(
    state: &AppState,
    m: &MirrorService,
    req: &Request<B>,
    label: &'static str,
    body: &bytes::Bytes,
    doc: &crate::metadata::Cached<T>,
    sources: super::hot::Sources,
) {
    if doc.stale || !doc.anonymous || !hot_candidate(req) || m.seals_urls() {
        return;
    }
    let freshness = &m.config.freshness;
    state.hot.put(
        req.uri().path(),
        label,
        body.clone(),
        m.json_cache_control(&Credential::Anonymous),
        doc.age,
        freshness.index_max_age,
        sources,
    );
}

async fn version_json<B>(
    state: &AppState,
    name: &str,
    addr: &ProviderAddress,
    version: &semver::Version,
    req: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    let m = mirror(state, name)?;
    let cred = client_credential(req);
    let sources = hot_sources(state);
    let body = m.version_json(addr, version, &cred).await?;
    remember_hot(state, m, req, "version", &body.value, &body, sources);
    Ok(json_response(m, &cred, body.value, body.age, body.stale))
}

fn home<B>(state: &AppState, req: &Request<B>) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("HOST")
        .to_owned();
    let host = html_escape(&host);
    let scheme = if state.tls {
        "https"
    } else {
        "https (via your TLS proxy)"
    };
    let mut names: Vec<&String> = state.mirrors.keys().collect();
    names.sort();
    let mut items = String::new();
    let mut snippets = String::new();
    for name in names {
        let name = html_escape(name);
        items.push_str(&format!("<li><code>https://{host}/{name}/</code></li>\n"));
        snippets.push_str(&format!(
            "provider_installation {{\n  network_mirror {{\n    url = \"https://{host}/{name}/\"\n  }}\n}}\n"
        ));
    }
    let mirrors = if items.is_empty() {
        String::new()
    } else {
        format!("<p>It serves Terraform's provider network mirror protocol ({scheme}) from OCI registries. Mirrors:</p>\n<ul>\n{items}</ul>\n<p>To install providers through them, put this in your Terraform CLI configuration (<code>~/.terraformrc</code>, or the file named by <code>TF_CLI_CONFIG_FILE</code>):</p>\n<pre>{snippets}</pre>\n")
    };
    let mut registries = String::new();
    if state.provider_registry.is_some() {
        registries.push_str(&format!("<p>It is the provider registry of this host: <code>required_providers {{ x = {{ source = \"{host}/NAMESPACE/TYPE\" }} }}</code>.</p>\n"));
    }
    if state.module_registry.is_some() {
        registries.push_str(&format!("<p>It is the module registry of this host: <code>module \"x\" {{ source = \"{host}/NAMESPACE/NAME/SYSTEM\" }}</code>.</p>\n"));
    }
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Terraform provider mirror</title></head>\n<body>\n<h1>Terraform provider mirror</h1>\n{mirrors}{registries}<p>oci-distribution-terraform-registry {}</p>\n</body></html>\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut resp = Response::new(full(page));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
