use super::Digest;

/// Everything that can go wrong talking to a registry. Messages never contain credentials or
/// the (possibly pre-signed) URLs of redirect targets.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("registry {registry} could not be reached: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("registry {registry} did not answer in time")]
    Timeout { registry: String },
    /// Our own queue, not the registry: every download turn for it stayed taken.
    #[error("all {turns} download turns for registry {registry} stayed taken for the whole origin_fetch_timeout (limits.max_origin_fetches)")]
    Busy { registry: String, turns: usize },
    #[error("the registry requires authorization for repository {repository}")]
    Unauthorized { repository: String },
    #[error("the registry refused access to repository {repository}")]
    Forbidden { repository: String },
    #[error("{what} was not found in the registry")]
    NotFound { what: String },
    #[error("the registry answered HTTP {status} for {what}")]
    UnexpectedStatus { status: u16, what: String },
    #[error("manifest {reference}: {reason}")]
    InvalidManifest { reference: String, reason: String },
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: String },
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// A count limit (tags, pages) passed; `setting` names the `limits` attribute.
    #[error("{what} has more than {limit} {items} (limits.{setting})")]
    TooMany {
        what: String,
        limit: u64,
        items: &'static str,
        setting: &'static str,
    },
    #[error("registry protocol error: {0}")]
    Protocol(String),
}

impl OciError {
    pub(crate) fn from_reqwest(registry: &str, err: reqwest::Error) -> OciError {
        let err = err.without_url();
        if err.is_timeout() {
            OciError::Timeout {
                registry: registry.to_owned(),
            }
        } else if err.is_connect() || err.is_request() || err.is_redirect() {
            OciError::Unreachable {
                registry: registry.to_owned(),
                detail: error_chain(&err),
            }
        } else {
            OciError::Protocol(format!("{registry}: {}", error_chain(&err)))
        }
    }
}

/// The error and its sources, because reqwest's top-level message alone ("error sending
/// request") rarely says what happened.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}
