//! The HTTP side of the OCI client: one shared connection pool, timeouts, the auth challenge
//! flow, digest verification of manifests and of streamed blobs.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LINK, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;

use super::auth::{Challenge, Credential, TokenCache};
use super::{Digest, Manifest, OciError, TagList, MANIFEST_ACCEPT};

/// OpenTofu refuses manifests over 4 MiB; so do we by default, so a hostile origin cannot
/// make us buffer more.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
const MAX_TAG_PAGE_BYTES: u64 = 8 * 1024 * 1024;
const MAX_TOKEN_RESPONSE_BYTES: u64 = 1024 * 1024;
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Longest silence allowed while reading any response.
    pub read_timeout: Duration,
    /// Whole-request limit for small documents (tags, manifests, tokens).
    pub metadata_timeout: Duration,
    /// Whole-request limit for a blob download, body included.
    pub blob_timeout: Duration,
    /// Blob downloads running at once per origin (scheme, host and port); more wait for a
    /// turn, at most `blob_timeout`.
    pub max_blob_fetches: usize,
    pub max_manifest_bytes: u64,
    /// Bounds on tag listing, against origins that page forever.
    pub max_tag_pages: usize,
    pub max_tags: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions::from_limits(&crate::config::Limits::default())
    }
}

impl ClientOptions {
    pub fn from_limits(l: &crate::config::Limits) -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            metadata_timeout: l.origin_metadata_timeout,
            blob_timeout: l.origin_fetch_timeout,
            max_blob_fetches: l.max_origin_fetches,
            max_manifest_bytes: l.max_manifest_size,
            max_tag_pages: l.max_tag_pages,
            max_tags: l.max_tags,
        }
    }
}

/// One origin registry, identified by its base URL (always ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registry {
    base: url::Url,
}

impl Registry {
    pub fn new(base: url::Url) -> Registry {
        Registry { base }
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// A short name for messages: scheme, host and port.
    pub fn display_name(&self) -> String {
        let host = self.base.host_str().unwrap_or("?");
        match self.base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        }
    }

    fn api(&self, path: &str) -> Result<url::Url, OciError> {
        self.base
            .join(path)
            .map_err(|e| OciError::Protocol(format!("cannot build URL for {path}: {e}")))
    }
}

#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub body: Bytes,
    pub manifest: Manifest,
}

/// A blob's body as it arrives from the origin.
pub struct BlobStream {
    pub content_length: Option<u64>,
    pub stream: Pin<Box<dyn Stream<Item = Result<Bytes, OciError>> + Send>>,
}

/// What a request is for: decides the token scope asked for and the timeout applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestKind {
    /// Small documents (tags, manifests): whole-request timeout, pull scope.
    Metadata,
    /// Blob downloads, pull scope: the longer whole-request timeout for packages, less the
    /// time spent waiting for a download turn (`within` is what is left of it).
    Blob { within: Duration },
    /// Uploads: whole-request timeout, pull and push scope.
    Push,
}

impl RequestKind {
    fn actions(self) -> &'static str {
        match self {
            RequestKind::Metadata | RequestKind::Blob { .. } => "pull",
            RequestKind::Push => "pull,push",
        }
    }
}

/// The shared OCI Distribution client.
pub struct OciClient {
    http: reqwest::Client,
    tokens: TokenCache,
    options: ClientOptions,
    /// Turns for blob downloads, per origin: a slow or hanging origin holds only its own
    /// turns, never another origin's.
    blob_fetches: std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Semaphore>>>,
}

impl OciClient {
    pub fn new(options: ClientOptions) -> Result<OciClient, OciError> {
        let redirect = reqwest::redirect::Policy::custom(|attempt| {
            let scheme = attempt.url().scheme();
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if scheme != "http" && scheme != "https" {
                attempt.error("redirect to a non-HTTP URL")
            } else if scheme == "http" && attempt.previous().iter().any(|u| u.scheme() == "https") {
                attempt.error("redirect from https to plain http")
            } else {
                // reqwest drops Authorization (and cookies) itself when the host changes,
                // so object-storage redirects never see the registry's credentials.
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .redirect(redirect)
            .user_agent(concat!(
                "oci-distribution-terraform-registry/",
                env!("CARGO_PKG_VERSION")
            ))
            .pool_idle_timeout(Duration::from_secs(90))
            // A burst of cold fills opens many connections; keep only a few idle afterwards.
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| OciError::Protocol(format!("cannot build HTTP client: {e}")))?;
        Ok(OciClient {
            http,
            tokens: TokenCache::default(),
            blob_fetches: std::sync::Mutex::new(HashMap::new()),
            options,
        })
    }

    fn blob_turns(&self, reg: &Registry) -> std::sync::Arc<tokio::sync::Semaphore> {
        let origin = reg.base().origin().ascii_serialization();
        let mut map = self.blob_fetches.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(origin)
            .or_insert_with(|| {
                std::sync::Arc::new(tokio::sync::Semaphore::new(
                    self.options.max_blob_fetches.max(1),
                ))
            })
            .clone()
    }

    /// All tags of `repo`, following `Link` pagination.
    pub async fn list_tags(
        &self,
        reg: &Registry,
        repo: &str,
        cred: &Credential,
    ) -> Result<Vec<String>, OciError> {
        let mut url = reg.api(&format!("v2/{repo}/tags/list"))?;
        url.query_pairs_mut().append_pair("n", "1000");
        let mut tags = Vec::new();
        let (max_pages, max_tags) = (self.options.max_tag_pages, self.options.max_tags);
        for _ in 0..max_pages {
            let u = url.clone();
            let resp = self
                .send(reg, repo, cred, RequestKind::Metadata, |c| c.get(u.clone()))
                .await?;
            let resp = check_status(resp, repo, || format!("repository {repo}"))?;
            let next = next_link(resp.headers()).map(|l| url.join(&l));
            let body = read_limited(
                reg,
                resp,
                MAX_TAG_PAGE_BYTES,
                &format!("tag list of {repo}"),
            )
            .await?;
            let page: TagList = serde_json::from_slice(&body).map_err(|e| {
                OciError::Protocol(format!("tag list of {repo} is not valid JSON: {e}"))
            })?;
            tags.extend(page.tags.unwrap_or_default());
            if tags.len() > max_tags {
                return Err(OciError::TooMany {
                    what: format!("the tag list of {repo}"),
                    limit: max_tags as u64,
                    items: "tags",
                    setting: "max_tags",
                });
            }
            match next {
                None => return Ok(tags),
                Some(Ok(n)) if n.origin() == url.origin() => url = n,
                Some(_) => {
                    return Err(OciError::Protocol(format!(
                        "tag list of {repo} links to an invalid or foreign next page"
                    )))
                }
            }
        }
        Err(OciError::TooMany {
            what: format!("the tag list of {repo}"),
            limit: max_pages as u64,
            items: "pages",
            setting: "max_tag_pages",
        })
    }

    /// A manifest by tag or digest, with its digest checked against the body.
    pub async fn get_manifest(
        &self,
        reg: &Registry,
        repo: &str,
        reference: &str,
        cred: &Credential,
    ) -> Result<FetchedManifest, OciError> {
        let url = reg.api(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self
            .send(reg, repo, cred, RequestKind::Metadata, |c| {
                c.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let resp = check_status(resp, repo, || format!("manifest {repo}:{reference}"))?;
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(
            reg,
            resp,
            self.options.max_manifest_bytes,
            &format!("manifest {repo}:{reference}"),
        )
        .await?;
        let digest = Digest::of_bytes(&body);
        let claimed =
            Digest::parse(reference).or_else(|| header_digest.as_deref().and_then(Digest::parse));
        if let Some(claimed) = claimed {
            if claimed != digest {
                return Err(OciError::DigestMismatch {
                    expected: claimed,
                    actual: digest.to_string(),
                });
            }
        }
        let manifest = Manifest::parse(content_type.as_deref(), &body).map_err(|reason| {
            OciError::InvalidManifest {
                reference: format!("{repo}:{reference}"),
                reason,
            }
        })?;
        Ok(FetchedManifest {
            digest,
            body,
            manifest,
        })
    }

    /// Starts streaming a blob. The caller decides whether to verify it (see [`BlobStream::verified`]).
    pub async fn get_blob(
        &self,
        reg: &Registry,
        repo: &str,
        digest: &Digest,
        cred: &Credential,
    ) -> Result<BlobStream, OciError> {
        let url = reg.api(&format!("v2/{repo}/blobs/{digest}"))?;
        // Held until the body is read or dropped: bounds this origin's downloads running at
        // once. The wait for a turn counts against the download's own time limit, so the
        // whole of it stays within origin_fetch_timeout.
        let started = tokio::time::Instant::now();
        let turns = self.blob_turns(reg);
        let permit = tokio::time::timeout(self.options.blob_timeout, turns.acquire_owned())
            .await
            .map_err(|_| OciError::Busy {
                registry: reg.display_name(),
                turns: self.options.max_blob_fetches.max(1),
            })?
            .map_err(|_| OciError::Protocol("the client is shutting down".into()))?;
        let within = self.options.blob_timeout.saturating_sub(started.elapsed());
        let resp = self
            .send(reg, repo, cred, RequestKind::Blob { within }, |c| {
                c.get(url.clone())
            })
            .await?;
        let resp = check_status(resp, repo, || format!("blob {digest} in {repo}"))?;
        let content_length = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let name = reg.display_name();
        let stream = resp.bytes_stream().map(move |r| {
            let _held = &permit;
            r.map_err(|e| OciError::from_reqwest(&name, e))
        });
        Ok(BlobStream {
            content_length,
            stream: Box::pin(stream),
        })
    }

    /// The digest a tag points at, by `HEAD` (no body): a cheap way to revalidate a tag.
    /// `None` when the registry does not say (`Docker-Content-Digest` missing).
    pub async fn manifest_digest(
        &self,
        reg: &Registry,
        repo: &str,
        reference: &str,
        cred: &Credential,
    ) -> Result<Option<Digest>, OciError> {
        let url = reg.api(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self
            .send(reg, repo, cred, RequestKind::Metadata, |c| {
                c.head(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let resp = check_status(resp, repo, || format!("manifest {repo}:{reference}"))?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(Digest::parse))
    }

    /// Whether the registry demands credentials of an anonymous client: its `GET /v2/`
    /// answers 401, and, for a Bearer challenge, its token realm refuses an anonymous token
    /// (registries such as Docker Hub or GHCR challenge everyone but hand anonymous pull
    /// tokens out). An unreachable registry does not (the client hears of that later).
    pub async fn demands_credentials(&self, reg: &Registry) -> bool {
        let Ok(url) = reg.api("v2/") else {
            return false;
        };
        let timeout = self.options.metadata_timeout;
        let resp = match self.http.get(url).timeout(timeout).send().await {
            Ok(r) => r,
            Err(_) => return false,
        };
        if resp.status() != StatusCode::UNAUTHORIZED {
            return false;
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        let Some(realm) = challenge
            .filter(Challenge::is_bearer)
            .and_then(|c| c.token_url(None))
        else {
            return true;
        };
        match self.http.get(realm).timeout(timeout).send().await {
            Ok(r) => !r.status().is_success(),
            Err(_) => true,
        }
    }

    /// Whether the registry lets `cred` read this blob (a `HEAD`, no body transferred).
    pub async fn head_blob(
        &self,
        reg: &Registry,
        repo: &str,
        digest: &Digest,
        cred: &Credential,
    ) -> Result<(), OciError> {
        let url = reg.api(&format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self
            .send(reg, repo, cred, RequestKind::Metadata, |c| {
                c.head(url.clone())
            })
            .await?;
        check_status(resp, repo, || format!("blob {digest} in {repo}")).map(|_| ())
    }

    /// Sends a request built by `build`, answering a 401 challenge once: Bearer by fetching a
    /// token from the realm (with the credential, if any), Basic by the credential itself.
    pub(super) async fn send(
        &self,
        reg: &Registry,
        repo: &str,
        cred: &Credential,
        kind: RequestKind,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OciError> {
        let name = reg.display_name();
        let scope = format!("repository:{repo}:{}", kind.actions());
        let with_timeout = |r: reqwest::RequestBuilder| {
            r.timeout(match kind {
                RequestKind::Blob { within } => within,
                RequestKind::Metadata | RequestKind::Push => self.options.metadata_timeout,
            })
        };
        let first = match self.tokens.get(reg.base().as_str(), &scope, cred) {
            Some(token) => build(&self.http).bearer_auth(token),
            None => cred.apply(build(&self.http)),
        };
        let resp = with_timeout(first)
            .send()
            .await
            .map_err(|e| OciError::from_reqwest(&name, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let unauthorized = || OciError::Unauthorized {
            repository: repo.to_owned(),
        };
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        let Some(challenge) = challenge.filter(Challenge::is_bearer) else {
            return Err(unauthorized());
        };
        let Some(token) = self.fetch_token(reg, &challenge, &scope, cred).await? else {
            return Err(unauthorized());
        };
        let resp = with_timeout(build(&self.http).bearer_auth(&token))
            .send()
            .await
            .map_err(|e| OciError::from_reqwest(&name, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(unauthorized());
        }
        Ok(resp)
    }

    /// Asks the challenge's token realm for a pull token. `Ok(None)` means the realm refused
    /// or could not be used: to the client that is the origin demanding authorization.
    async fn fetch_token(
        &self,
        reg: &Registry,
        challenge: &Challenge,
        scope: &str,
        cred: &Credential,
    ) -> Result<Option<String>, OciError> {
        // The challenge's scope may name more than a pull; we ask for pull only.
        let Some(realm_url) = challenge.token_url(Some(scope)) else {
            return Ok(None);
        };
        let req = cred
            .apply(self.http.get(realm_url))
            .timeout(self.options.metadata_timeout);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(registry = %reg.display_name(), error = %e.without_url(), "token realm could not be reached");
                return Ok(None);
            }
        };
        if !resp.status().is_success() {
            tracing::debug!(registry = %reg.display_name(), status = %resp.status(), "token realm refused");
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = read_limited(reg, resp, MAX_TOKEN_RESPONSE_BYTES, "token response").await?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            OciError::Protocol(format!(
                "token realm of {} answered invalid JSON: {e}",
                reg.display_name()
            ))
        })?;
        let Some(token) = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
        else {
            return Ok(None);
        };
        // The spec's default lifetime is 60 s; never trust a lifetime beyond a day.
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60).clamp(1, 86_400));
        self.tokens
            .put(reg.base().as_str(), scope, cred, token.clone(), lifetime);
        Ok(Some(token))
    }
}

pub(super) fn check_status(
    resp: reqwest::Response,
    repo: &str,
    what: impl Fn() -> String,
) -> Result<reqwest::Response, OciError> {
    match resp.status() {
        s if s.is_success() => Ok(resp),
        StatusCode::NOT_FOUND => Err(OciError::NotFound { what: what() }),
        StatusCode::FORBIDDEN => Err(OciError::Forbidden {
            repository: repo.to_owned(),
        }),
        s => Err(OciError::UnexpectedStatus {
            status: s.as_u16(),
            what: what(),
        }),
    }
}

/// Reads a whole body, refusing more than `limit` bytes (checked while reading, not trusted
/// from `Content-Length`).
pub(super) async fn read_limited(
    reg: &Registry,
    resp: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Bytes, OciError> {
    let too_large = || OciError::TooLarge {
        what: what.to_owned(),
        limit,
    };
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OciError::from_reqwest(&reg.display_name(), e))?;
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// The target of a `Link: <...>; rel="next"` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers.get_all(LINK).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.split(',').find_map(|part| {
            let (target, params) = part.split_once(';')?;
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            params
                .split(';')
                .any(|p| {
                    let p = p.trim().replace(' ', "");
                    p == "rel=\"next\"" || p == "rel=next"
                })
                .then(|| target.to_owned())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn link_header() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static("</v2/a/tags/list?n=2&last=b>; rel=\"next\""),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?n=2&last=b"));
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static("<http://x/prev>; rel=\"prev\""),
        );
        assert_eq!(next_link(&h), None);
    }
}
