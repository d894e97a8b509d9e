//! HTTP for Terraform's registry protocols: service discovery, provider registry and module
//! registry endpoints. The work is done in [`crate::registry`]; this maps it onto HTTP.

use http::{header, HeaderValue, Request, Response, StatusCode};

use super::body::{empty, full, Body};
use super::download::{sealed_token, sealed_zip};
use super::error::ApiError;
use super::handlers::{client_credential, json_response};
use super::router::{ModuleRoute, ProviderRoute};
use super::AppState;
use crate::metadata::Cached;
use crate::mirror::MirrorService;
use crate::oci::Credential;
use crate::registry::Discovery;

/// A registry JSON document, with the origin's freshness headers.
fn json_doc(
    origin: &MirrorService,
    cred: &Credential,
    doc: Cached<impl serde::Serialize>,
) -> Response<Body> {
    let body = serde_json::to_vec(&doc.value).expect("documents always serialise");
    json_response(origin, cred, body.into(), doc.age, doc.stale)
}

pub fn discovery(state: &AppState) -> Response<Body> {
    let doc = Discovery::new(
        state.provider_registry.is_some(),
        state.module_registry.is_some(),
    );
    let mut resp = Response::new(full(
        serde_json::to_vec(&doc).expect("documents always serialise"),
    ));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

pub async fn providers<B>(
    state: &AppState,
    route: ProviderRoute,
    req: &Request<B>,
    is_head: bool,
) -> Result<Response<Body>, ApiError> {
    let r = state
        .provider_registry
        .as_ref()
        .ok_or(ApiError::NotConfigured("provider_registry"))?;
    let origin = r.origin();
    let cred = client_credential(req);
    match route {
        ProviderRoute::Versions { addr } => {
            Ok(json_doc(origin, &cred, r.versions(&addr, &cred).await?))
        }
        ProviderRoute::Download {
            addr,
            version,
            platform,
        } => Ok(json_doc(
            origin,
            &cred,
            r.download(&addr, &version, &platform, &cred).await?,
        )),
        ProviderRoute::Sums {
            addr,
            version,
            manifest,
            signature,
        } => {
            let token = sealed_token(req);
            let signed = r.sums(&addr, &version, &manifest, token.as_deref()).await?;
            let (body, content_type) = if signature {
                (signed.signature.clone(), "application/pgp-signature")
            } else {
                (signed.document.clone(), "text/plain; charset=utf-8")
            };
            let len = body.len();
            let mut resp = Response::new(if is_head { empty() } else { full(body) });
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            // The version's manifest fixes the list, but not who signs it (author signatures
            // may be pushed later, the server's key may be rotated): as fresh as the JSON.
            h.insert(header::CACHE_CONTROL, origin.json_cache_control(&cred));
            Ok(resp)
        }
        ProviderRoute::Package { addr, digest } => {
            let what = origin.describe(&addr);
            let warm = || origin.warm_command(&origin.describe(&addr));
            let repo = origin.repository(&addr);
            sealed_zip(origin, &repo, &digest, req, is_head, &what, warm).await
        }
    }
}

pub async fn modules<B>(
    state: &AppState,
    route: ModuleRoute,
    req: &Request<B>,
    is_head: bool,
) -> Result<Response<Body>, ApiError> {
    let r = state
        .module_registry
        .as_ref()
        .ok_or(ApiError::NotConfigured("module_registry"))?;
    let origin = r.origin();
    let cred = client_credential(req);
    match route {
        ModuleRoute::Versions { module } => {
            Ok(json_doc(origin, &cred, r.versions(&module, &cred).await?))
        }
        ModuleRoute::Download { module, version } => {
            let digest = r.package_digest(&module, &version, &cred).await?;
            let location = r.download_location(&module, &version, &digest.value, &cred)?;
            // The location is built from checked path segments and a base64url token.
            let location = HeaderValue::from_str(&location)
                .map_err(|_| ApiError::Internal("module location is not a header value"))?;
            // Like a JSON answer (Age, Cache-Control, Warning), without a body.
            let mut resp =
                json_response(origin, &cred, bytes::Bytes::new(), digest.age, digest.stale);
            *resp.status_mut() = StatusCode::NO_CONTENT;
            let h = resp.headers_mut();
            h.remove(header::CONTENT_TYPE);
            h.insert("x-terraform-get", location);
            Ok(resp)
        }
        ModuleRoute::Package { module, digest } => {
            let what = format!("module {module}");
            let warm = || origin.warm_command(&module.to_string());
            let repo = r.repository(&module);
            sealed_zip(origin, &repo, &digest, req, is_head, &what, warm).await
        }
    }
}
