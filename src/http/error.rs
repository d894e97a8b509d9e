//! The one place where errors become HTTP statuses.

use http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, Body};
use super::router::RouteError;
use crate::mirror::MirrorError;
use crate::oci::OciError;
use crate::store::FillError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("no provider mirror named {0:?} is configured on this server")]
    UnknownMirror(String),
    #[error("no configured mirror serves repository {0:?} (its name_prefix must lead it)")]
    UnknownRepository(String),
    #[error("this server has no {0} configured")]
    NotConfigured(&'static str),
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("invalid query parameter {0:?}")]
    BadQuery(&'static str),
    #[error("method not allowed: this server only answers GET and HEAD")]
    MethodNotAllowed,
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Fill(FillError),
}

fn origin_status(o: &OciError) -> StatusCode {
    match o {
        OciError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        OciError::Forbidden { .. } => StatusCode::FORBIDDEN,
        OciError::NotFound { .. } => StatusCode::NOT_FOUND,
        OciError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        // Our own download queue is full: the client may retry later.
        OciError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        OciError::Unreachable { .. }
        | OciError::UnexpectedStatus { .. }
        | OciError::InvalidManifest { .. }
        | OciError::DigestMismatch { .. }
        | OciError::TooLarge { .. }
        | OciError::TooMany { .. }
        | OciError::Protocol(_) => StatusCode::BAD_GATEWAY,
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Route(RouteError::NotFound) => StatusCode::NOT_FOUND,
            ApiError::Route(RouteError::TooLong(_)) => StatusCode::URI_TOO_LONG,
            ApiError::Route(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownMirror(_)
            | ApiError::UnknownRepository(_)
            | ApiError::NotConfigured(_) => StatusCode::NOT_FOUND,
            ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Mirror(m) => match m {
                MirrorError::Unknown(_) | MirrorError::UnknownVersion(..) => StatusCode::NOT_FOUND,
                MirrorError::NotAProvider { .. }
                | MirrorError::NotAModule { .. }
                | MirrorError::BadSignatures { .. } => StatusCode::BAD_GATEWAY,
                MirrorError::Signing(_) | MirrorError::Local(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                MirrorError::MissingDownloadToken => StatusCode::UNAUTHORIZED,
                MirrorError::BadDownloadToken(_) => StatusCode::FORBIDDEN,
                MirrorError::Origin(o) => origin_status(o),
                MirrorError::Offline { .. } => StatusCode::NOT_FOUND,
            },
            ApiError::Fill(f) => match f {
                FillError::Origin(o) => origin_status(o),
                FillError::Local(_) => StatusCode::INTERNAL_SERVER_ERROR,
                FillError::Abandoned => StatusCode::BAD_GATEWAY,
            },
        }
    }

    fn log(&self, status: StatusCode) {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
    }

    /// The error in the OCI Distribution format, for the `/v2/` API; `not_found` is the
    /// endpoint's code for a missing thing (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, ...).
    pub fn into_oci_response(self, not_found: &'static str) -> Response<Body> {
        let status = self.status();
        self.log(status);
        let code = match status {
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::FORBIDDEN => "DENIED",
            StatusCode::NOT_FOUND => match self {
                ApiError::UnknownRepository(_) => "NAME_UNKNOWN",
                _ => not_found,
            },
            StatusCode::BAD_REQUEST => "NAME_INVALID",
            StatusCode::METHOD_NOT_ALLOWED => "UNSUPPORTED",
            StatusCode::TOO_MANY_REQUESTS => "TOOMANYREQUESTS",
            _ => "UNKNOWN",
        };
        super::v2::oci_error(status, code, &self.to_string())
    }

    /// A JSON error response in the Terraform registry's `{"errors":[...]}` shape.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        self.log(status);
        let body = serde_json::json!({ "errors": [self.to_string()] }).to_string() + "\n";
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            // Terraform sends the token from its CLI configuration as a Bearer token.
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"oci-distribution-terraform-registry\""),
            );
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}
