//! The push side of the OCI client: blob existence checks, cross-repository mounts, monolithic
//! and chunked blob uploads, manifest writes. Transient failures (connection errors, 429, 5xx)
//! are retried with exponential backoff, a bounded number of times.

use std::future::Future;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::client::{check_status, RequestKind};
use super::{Credential, Digest, OciClient, OciError, Registry, MANIFEST_ACCEPT};

/// Blobs up to this size go up in one `PUT`; larger ones in `PATCH` chunks.
pub const DEFAULT_MONOLITHIC_LIMIT: u64 = 8 * 1024 * 1024;
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;

const OCTET_STREAM: &str = "application/octet-stream";

#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub monolithic_limit: u64,
    pub chunk_size: u64,
    /// Attempts per operation, including the first.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            monolithic_limit: DEFAULT_MONOLITHIC_LIMIT,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

/// Where a blob's bytes come from. Both can be read again, which retries need.
#[derive(Debug, Clone)]
pub enum BlobSource {
    Memory(Bytes),
    File(PathBuf),
}

/// One blob to put into a repository.
#[derive(Debug, Clone, Copy)]
pub struct BlobUpload<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    pub source: &'a BlobSource,
    /// Another repository of the same registry known to hold the blob: tried as a
    /// cross-repository mount before uploading.
    pub mount_from: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The repository already had the blob; nothing was sent.
    AlreadyPresent,
    /// The registry linked the blob from another repository; nothing was sent.
    Mounted,
    /// The bytes were uploaded.
    Uploaded,
}

/// What a `HEAD` on a manifest tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// Whether an error is worth retrying: the network, rate limits and server-side failures.
pub fn is_transient(err: &OciError) -> bool {
    match err {
        OciError::Unreachable { .. } | OciError::Timeout { .. } => true,
        OciError::UnexpectedStatus { status, .. } => *status == 429 || (500..600).contains(status),
        _ => false,
    }
}

impl OciClient {
    /// Whether `repo` holds the blob (`HEAD /v2/<repo>/blobs/<digest>`).
    pub async fn blob_exists(
        &self,
        reg: &Registry,
        repo: &str,
        digest: &Digest,
        cred: &Credential,
        opts: &UploadOptions,
    ) -> Result<bool, OciError> {
        with_retries(opts, || self.blob_exists_once(reg, repo, digest, cred)).await
    }

    async fn blob_exists_once(
        &self,
        reg: &Registry,
        repo: &str,
        digest: &Digest,
        cred: &Credential,
    ) -> Result<bool, OciError> {
        let url = api(reg, &format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self
            .send(reg, repo, cred, RequestKind::Push, |c| c.head(url.clone()))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check_status(resp, repo, || format!("blob {digest} in {repo}")).map(|_| true)
    }

    /// Puts a blob into `repo` unless it is already there: `HEAD` first, then a
    /// cross-repository mount if `blob.mount_from` is given, then an upload (monolithic up to
    /// `opts.monolithic_limit`, chunked above). `progress` is told the bytes sent so far for
    /// this blob (it restarts from 0 when a failed attempt is retried).
    pub async fn upload_blob(
        &self,
        reg: &Registry,
        repo: &str,
        blob: BlobUpload<'_>,
        cred: &Credential,
        opts: &UploadOptions,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<UploadOutcome, OciError> {
        // A failed attempt abandons its upload session and the next one starts afresh: a
        // partially received PATCH cannot be resumed reliably across registries.
        with_retries(opts, || async {
            progress(0);
            self.upload_blob_once(reg, repo, blob, cred, opts, progress)
                .await
        })
        .await
    }

    async fn upload_blob_once(
        &self,
        reg: &Registry,
        repo: &str,
        blob: BlobUpload<'_>,
        cred: &Credential,
        opts: &UploadOptions,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<UploadOutcome, OciError> {
        let digest = blob.digest;
        if self.blob_exists_once(reg, repo, digest, cred).await? {
            return Ok(UploadOutcome::AlreadyPresent);
        }
        let what = || format!("upload of blob {digest} to {repo}");

        let mut start = api(reg, &format!("v2/{repo}/blobs/uploads/"))?;
        if let Some(from) = blob.mount_from.filter(|from| *from != repo) {
            start
                .query_pairs_mut()
                .append_pair("mount", digest.as_str())
                .append_pair("from", from);
        }
        let resp = self
            .send(reg, repo, cred, RequestKind::Push, |c| {
                c.post(start.clone()).header(CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() == StatusCode::CREATED && blob.mount_from.is_some() {
            return Ok(UploadOutcome::Mounted);
        }
        if resp.status() != StatusCode::ACCEPTED {
            check_status(resp, repo, what)?;
            return Err(OciError::Protocol(format!(
                "{}: the registry did not open an upload session (expected HTTP 202)",
                what()
            )));
        }
        // 202: an upload session (also the registry's answer when it declines a mount).
        let mut location = upload_location(reg, resp.headers(), repo)?;

        if blob.size <= opts.monolithic_limit {
            let bytes = read_all(blob.source, blob.size).await?;
            let mut url = location;
            url.query_pairs_mut().append_pair("digest", digest.as_str());
            let resp = self
                .send(reg, repo, cred, RequestKind::Push, |c| {
                    c.put(url.clone())
                        .header(CONTENT_TYPE, OCTET_STREAM)
                        .header(CONTENT_LENGTH, bytes.len())
                        .body(bytes.clone())
                })
                .await?;
            expect_created(resp, repo, what)?;
            progress(blob.size);
            return Ok(UploadOutcome::Uploaded);
        }

        if let BlobSource::File(path) = blob.source {
            let len = tokio::fs::metadata(path)
                .await
                .map_err(|e| io_error(blob.source, e))?
                .len();
            check_size(blob.source, len, blob.size)?;
        }
        let chunk_size = opts.chunk_size.max(1);
        let mut offset = 0u64;
        while offset < blob.size {
            let len = chunk_size.min(blob.size - offset);
            let chunk = read_range(blob.source, offset, len).await?;
            let url = location.clone();
            let range = format!("{}-{}", offset, offset + len - 1);
            let resp = self
                .send(reg, repo, cred, RequestKind::Push, |c| {
                    c.patch(url.clone())
                        .header(CONTENT_TYPE, OCTET_STREAM)
                        .header(CONTENT_RANGE, range.as_str())
                        .header(CONTENT_LENGTH, chunk.len())
                        .body(chunk.clone())
                })
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                check_status(resp, repo, what)?;
                return Err(OciError::Protocol(format!(
                    "{}: chunk {range} was not accepted (expected HTTP 202)",
                    what()
                )));
            }
            // Each answer names where the next request goes (it may carry new state).
            location = upload_location(reg, resp.headers(), repo)?;
            offset += len;
            progress(offset);
        }
        let mut url = location;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let resp = self
            .send(reg, repo, cred, RequestKind::Push, |c| {
                c.put(url.clone()).header(CONTENT_LENGTH, "0")
            })
            .await?;
        expect_created(resp, repo, what)?;
        Ok(UploadOutcome::Uploaded)
    }

    /// `PUT /v2/<repo>/manifests/<reference>`; returns the manifest's digest, checked against
    /// the one the registry reports.
    #[allow(clippy::too_many_arguments)] // the request's parts, as for the other calls
    pub async fn put_manifest(
        &self,
        reg: &Registry,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
        cred: &Credential,
        opts: &UploadOptions,
    ) -> Result<Digest, OciError> {
        let digest = Digest::of_bytes(&body);
        let url = api(reg, &format!("v2/{repo}/manifests/{reference}"))?;
        let what = || format!("manifest {repo}:{reference}");
        with_retries(opts, || async {
            let resp = self
                .send(reg, repo, cred, RequestKind::Push, |c| {
                    c.put(url.clone())
                        .header(CONTENT_TYPE, media_type)
                        .header(CONTENT_LENGTH, body.len())
                        .body(body.clone())
                })
                .await?;
            let resp = expect_created(resp, repo, what)?;
            if let Some(reported) = header_digest(resp.headers()) {
                if reported != digest {
                    return Err(OciError::DigestMismatch {
                        expected: digest.clone(),
                        actual: reported.to_string(),
                    });
                }
            }
            Ok(digest.clone())
        })
        .await
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`: `None` if there is no such manifest.
    pub async fn head_manifest(
        &self,
        reg: &Registry,
        repo: &str,
        reference: &str,
        cred: &Credential,
        opts: &UploadOptions,
    ) -> Result<Option<ManifestHead>, OciError> {
        let url = api(reg, &format!("v2/{repo}/manifests/{reference}"))?;
        with_retries(opts, || async {
            let resp = self
                .send(reg, repo, cred, RequestKind::Push, |c| {
                    c.head(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let resp = check_status(resp, repo, || format!("manifest {repo}:{reference}"))?;
            let headers = resp.headers();
            Ok(Some(ManifestHead {
                digest: header_digest(headers),
                media_type: headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                size: headers
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            }))
        })
        .await
    }
}

/// Runs `op` until it succeeds, fails for good, or `opts.max_attempts` are used up.
pub(crate) async fn with_retries<T, F, Fut>(opts: &UploadOptions, mut op: F) -> Result<T, OciError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OciError>>,
{
    let mut delay = opts.initial_backoff;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if is_transient(&e) && attempt < opts.max_attempts.max(1) => {
                tracing::warn!(error = %e, attempt, retry_in = ?delay, "transient registry error; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn api(reg: &Registry, path: &str) -> Result<url::Url, OciError> {
    reg.base()
        .join(path)
        .map_err(|e| OciError::Protocol(format!("cannot build URL for {path}: {e}")))
}

fn header_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(Digest::parse)
}

fn expect_created(
    resp: reqwest::Response,
    repo: &str,
    what: impl Fn() -> String,
) -> Result<reqwest::Response, OciError> {
    // The spec says 201; a few registries answer 200 or 204, which mean the same here.
    check_status(resp, repo, what)
}

/// The upload session URL from a `Location` header, resolved against the registry (it is
/// often relative). A location on another host is refused: the request carries credentials.
fn upload_location(reg: &Registry, headers: &HeaderMap, repo: &str) -> Result<url::Url, OciError> {
    let raw = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            OciError::Protocol(format!(
                "the registry opened an upload session for {repo} without a Location header"
            ))
        })?;
    let url = reg.base().join(raw).map_err(|e| {
        OciError::Protocol(format!("invalid upload Location {raw:?} for {repo}: {e}"))
    })?;
    if url.origin() != reg.base().origin() {
        return Err(OciError::Protocol(format!(
            "the registry {} sent the upload for {repo} to another host ({}); refusing to send credentials there",
            reg.display_name(),
            url.host_str().unwrap_or("?")
        )));
    }
    Ok(url)
}

async fn read_all(source: &BlobSource, expected: u64) -> Result<Bytes, OciError> {
    match source {
        BlobSource::Memory(b) => {
            check_size(source, b.len() as u64, expected)?;
            Ok(b.clone())
        }
        BlobSource::File(path) => {
            let data = tokio::fs::read(path)
                .await
                .map_err(|e| io_error(source, e))?;
            check_size(source, data.len() as u64, expected)?;
            Ok(Bytes::from(data))
        }
    }
}

async fn read_range(source: &BlobSource, offset: u64, len: u64) -> Result<Bytes, OciError> {
    match source {
        BlobSource::Memory(b) => {
            let end = offset.saturating_add(len);
            let slice = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(start, end)| b.get(start..end));
            slice
                .map(|s| b.slice_ref(s))
                .ok_or_else(|| size_error(source, b.len() as u64, end))
        }
        BlobSource::File(path) => {
            let mut file = tokio::fs::File::open(path)
                .await
                .map_err(|e| io_error(source, e))?;
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| io_error(source, e))?;
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
            file.read_exact(&mut buf)
                .await
                .map_err(|e| io_error(source, e))?;
            Ok(Bytes::from(buf))
        }
    }
}

fn check_size(source: &BlobSource, actual: u64, expected: u64) -> Result<(), OciError> {
    if actual == expected {
        Ok(())
    } else {
        Err(size_error(source, actual, expected))
    }
}

fn size_error(source: &BlobSource, actual: u64, expected: u64) -> OciError {
    OciError::Protocol(format!(
        "{} is {actual} bytes but was {expected} bytes when it was checked; did it change? Run the push again",
        describe(source)
    ))
}

fn io_error(source: &BlobSource, e: std::io::Error) -> OciError {
    OciError::Protocol(format!("cannot read {}: {e}", describe(source)))
}

fn describe(source: &BlobSource) -> String {
    match source {
        BlobSource::Memory(_) => "the in-memory blob".to_owned(),
        BlobSource::File(p) => p.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn reg(base: &str) -> Registry {
        Registry::new(url::Url::parse(base).unwrap())
    }

    #[test]
    fn locations_resolve_against_the_registry_and_stay_on_it() {
        let r = reg("http://127.0.0.1:5000/");
        let mut h = HeaderMap::new();
        h.insert(
            LOCATION,
            HeaderValue::from_static("/v2/a/b/blobs/uploads/uuid?_state=x"),
        );
        assert_eq!(
            upload_location(&r, &h, "a/b").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid?_state=x"
        );
        h.insert(
            LOCATION,
            HeaderValue::from_static("http://127.0.0.1:5000/v2/a/b/blobs/uploads/u2"),
        );
        assert!(upload_location(&r, &h, "a/b").is_ok());
        h.insert(
            LOCATION,
            HeaderValue::from_static("https://elsewhere.example/upload"),
        );
        let err = upload_location(&r, &h, "a/b").unwrap_err().to_string();
        assert!(err.contains("another host"), "{err}");
        assert!(upload_location(&r, &HeaderMap::new(), "a/b").is_err());
    }

    #[test]
    fn transient_errors() {
        let status = |s| OciError::UnexpectedStatus {
            status: s,
            what: "x".into(),
        };
        assert!(is_transient(&status(503)));
        assert!(is_transient(&status(429)));
        assert!(!is_transient(&status(400)));
        assert!(is_transient(&OciError::Timeout {
            registry: "r".into()
        }));
        assert!(!is_transient(&OciError::Unauthorized {
            repository: "r".into()
        }));
    }

    #[tokio::test]
    async fn retries_are_bounded_and_stop_on_permanent_errors() {
        let opts = UploadOptions {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            ..UploadOptions::default()
        };
        let calls = std::sync::atomic::AtomicU32::new(0);
        let r: Result<(), _> = with_retries(&opts, || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(OciError::Timeout {
                registry: "r".into(),
            })
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);

        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let r: Result<(), _> = with_retries(&opts, || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(OciError::Forbidden {
                repository: "r".into(),
            })
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let r = with_retries(&opts, || async {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 {
                Err(OciError::UnexpectedStatus {
                    status: 502,
                    what: "x".into(),
                })
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 1);
    }

    /// A scripted registry: answers the first upload POST with 503, hands out relative
    /// Locations, checks every chunk's Content-Range against what it has, and verifies the
    /// digest on the final PUT. Records "METHOD path" of every request.
    mod fake {
        use std::convert::Infallible;
        use std::sync::{Arc, Mutex};

        use http_body_util::{BodyExt, Full};
        use hyper::{Request, Response};
        use hyper_util::rt::TokioIo;

        #[derive(Default)]
        pub struct State {
            pub log: Vec<String>,
            pub received: Vec<u8>,
            pub stored: Option<Vec<u8>>,
            posts: usize,
        }

        fn reply(status: u16, headers: &[(&str, String)]) -> Response<Full<bytes::Bytes>> {
            let mut r = Response::builder().status(status);
            for (k, v) in headers {
                r = r.header(*k, v);
            }
            r.body(Full::new(bytes::Bytes::new())).unwrap()
        }

        async fn handle(
            state: Arc<Mutex<State>>,
            req: Request<hyper::body::Incoming>,
        ) -> Result<Response<Full<bytes::Bytes>>, Infallible> {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let range = req
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut st = state.lock().unwrap();
            st.log.push(format!("{method} {path}"));
            let resp = match (method.as_str(), path.as_str()) {
                ("HEAD", p) if p.contains("/blobs/sha256:") => match &st.stored {
                    Some(_) => reply(200, &[]),
                    None => reply(404, &[]),
                },
                ("POST", "/v2/r/blobs/uploads/") => {
                    st.posts += 1;
                    if st.posts == 1 {
                        reply(503, &[])
                    } else {
                        st.received.clear();
                        reply(202, &[("location", "/v2/r/blobs/uploads/u?n=0".into())])
                    }
                }
                ("PATCH", "/v2/r/blobs/uploads/u") => {
                    let start = st.received.len();
                    let want = format!("{}-{}", start, start + body.len() - 1);
                    if range.as_deref() != Some(want.as_str()) {
                        reply(416, &[])
                    } else {
                        st.received.extend_from_slice(&body);
                        let next = format!("/v2/r/blobs/uploads/u?n={}", st.received.len());
                        reply(202, &[("location", next)])
                    }
                }
                ("PUT", "/v2/r/blobs/uploads/u") => {
                    let mut all = st.received.clone();
                    all.extend_from_slice(&body);
                    let digest = crate::oci::Digest::of_bytes(&all);
                    let given = url::form_urlencoded::parse(query.as_bytes())
                        .find(|(k, _)| k == "digest")
                        .map(|(_, v)| v.into_owned());
                    if given.as_deref() == Some(digest.as_str()) {
                        st.stored = Some(all);
                        reply(201, &[])
                    } else {
                        reply(400, &[])
                    }
                }
                ("PUT", p) if p.starts_with("/v2/r/manifests/") => reply(
                    201,
                    &[(
                        "docker-content-digest",
                        crate::oci::Digest::of_bytes(&body).to_string(),
                    )],
                ),
                _ => reply(404, &[]),
            };
            Ok(resp)
        }

        /// Serves on 127.0.0.1 until the test's runtime ends; returns the base URL.
        pub async fn start(state: Arc<Mutex<State>>) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            });
            format!("http://{addr}/")
        }
    }

    #[tokio::test]
    async fn chunked_upload_with_a_retry_and_relative_locations() {
        let state = std::sync::Arc::new(std::sync::Mutex::new(fake::State::default()));
        let base = fake::start(state.clone()).await;
        let client = OciClient::new(super::super::ClientOptions::default()).unwrap();
        let registry = reg(&base);
        let data: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let digest = Digest::of_bytes(&data);
        let source = BlobSource::Memory(Bytes::from(data.clone()));
        let opts = UploadOptions {
            monolithic_limit: 64,
            chunk_size: 100,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
        };
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |n: u64| seen.lock().unwrap().push(n);
        let blob = BlobUpload {
            digest: &digest,
            size: data.len() as u64,
            source: &source,
            mount_from: None,
        };
        let outcome = client
            .upload_blob(
                &registry,
                "r",
                blob,
                &Credential::Anonymous,
                &opts,
                &progress,
            )
            .await
            .unwrap();
        assert_eq!(outcome, UploadOutcome::Uploaded);
        assert_eq!(state.lock().unwrap().stored.as_deref(), Some(&data[..]));
        let log = state.lock().unwrap().log.clone();
        let count = |m: &str| log.iter().filter(|l| l.starts_with(m)).count();
        assert_eq!(count("POST"), 2, "the 503 was retried: {log:?}");
        assert_eq!(count("PATCH"), 3, "{log:?}");
        assert_eq!(*seen.lock().unwrap().last().unwrap(), 250);

        // Present now: HEAD only, nothing sent.
        let before = log.len();
        let outcome = client
            .upload_blob(
                &registry,
                "r",
                blob,
                &Credential::Anonymous,
                &opts,
                &progress,
            )
            .await
            .unwrap();
        assert_eq!(outcome, UploadOutcome::AlreadyPresent);
        assert_eq!(state.lock().unwrap().log.len(), before + 1);

        let body = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let d = client
            .put_manifest(
                &registry,
                "r",
                "1.0.0",
                "application/vnd.oci.image.manifest.v1+json",
                body.clone(),
                &Credential::Anonymous,
                &opts,
            )
            .await
            .unwrap();
        assert_eq!(d, Digest::of_bytes(&body));
    }

    #[tokio::test]
    async fn ranges_of_memory_and_files() {
        let source = BlobSource::Memory(Bytes::from_static(b"hello world"));
        assert_eq!(&read_range(&source, 6, 5).await.unwrap()[..], b"world");
        assert!(read_range(&source, 8, 5).await.is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"hello world").unwrap();
        let source = BlobSource::File(path);
        assert_eq!(&read_range(&source, 0, 5).await.unwrap()[..], b"hello");
        assert_eq!(&read_all(&source, 11).await.unwrap()[..], b"hello world");
        let err = read_all(&source, 12).await.unwrap_err().to_string();
        assert!(err.contains("did it change"), "{err}");
    }
}
