//! The HTTP server: hyper 1 over TLS (rustls, HTTP/2 and HTTP/1.1 by ALPN) or plain TCP,
//! routing to the handlers, with graceful shutdown.

mod body;
mod download;
mod error;
mod handlers;
mod hot;
mod listener;
mod metrics;
pub mod range;
mod registry;
pub mod router;
mod sendfile;
mod v2;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::server::graceful::GracefulShutdown;
use tokio_rustls::TlsAcceptor;

use crate::access::MirrorAccess;
use crate::config::Config;
use crate::metadata::MetadataCache;
use crate::mirror::sealed_url::UrlSealer;
use crate::mirror::{MirrorService, Naming};
use crate::oci::{ClientOptions, OciClient, OciError};
use crate::registry::modules::ModuleRegistry;
use crate::registry::providers::ProviderRegistry;
use crate::store::{BlobStore, StoreConfig};

pub use error::ApiError;
pub use listener::Role;

/// How often the cache figures are written for `cache stats`.
const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// How long in-flight requests may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub struct AppState {
    pub metrics: Arc<metrics::Metrics>,
    pub mirrors: HashMap<String, Arc<MirrorService>>,
    pub provider_registry: Option<Arc<ProviderRegistry>>,
    pub module_registry: Option<Arc<ModuleRegistry>>,
    pub store: Arc<BlobStore>,
    pub meta: Arc<MetadataCache>,
    pub tls: bool,
    pub max_path_length: usize,
    /// Ready answers for hot anonymous metadata requests; a reload starts afresh.
    hot: hot::HotResponses,
    sealer: Arc<UrlSealer>,
    /// No query_string_secret is configured: the sealer's key is random, made at start.
    random_sealer: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("OCI client: {0}")]
    Client(#[from] OciError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("provider_registry signing_key_file: {0}")]
    SigningKey(#[from] crate::signing::SigningError),
    #[error(
        "public mirror {mirror:?}: cannot get the server's credential for its origin: {source}"
    )]
    Credential {
        mirror: String,
        source: crate::oci::credentials::CredentialsError,
    },
}

impl AppState {
    pub fn from_config(config: &Config) -> Result<AppState, ServerError> {
        let store = BlobStore::open(&StoreConfig::from_config(config))?;
        tracing::info!(directory = %store.root().display(), entries = store.entries().len(), bytes = store.total_bytes(), max_size = store.max_size(), "package cache open");
        let client = Arc::new(OciClient::new(ClientOptions::from_limits(&config.limits))?);
        let meta = MetadataCache::new(client, store.index().clone(), config.server.offline);
        if config.server.offline {
            tracing::info!(
                "offline mode: no origin will be contacted; serving only what the cache holds"
            );
        }
        AppState::with_config(config, store, meta, Arc::new(metrics::Metrics::new()), None)
    }

    /// The state for `config` around an already open cache (used again on reload, with the
    /// running state as `previous`).
    fn with_config(
        config: &Config,
        store: Arc<BlobStore>,
        meta: Arc<MetadataCache>,
        metrics: Arc<metrics::Metrics>,
        previous: Option<&AppState>,
    ) -> Result<AppState, ServerError> {
        // The purge of expired "not found" answers keeps them at least this long, also for
        // keys nobody has asked for since a restart.
        for origin in config.origins() {
            meta.note_negative_ttl(origin.freshness.negative_ttl);
        }
        let ttl = config.server.download_url_ttl;
        let sealer = match (&config.server.query_string_secret, previous) {
            (Some(secret), _) => {
                let previous: Vec<[u8; 32]> = config
                    .server
                    .previous_query_string_secrets
                    .iter()
                    .map(|s| s.0)
                    .collect();
                Arc::new(UrlSealer::with_previous(&secret.0, &previous, ttl))
            }
            // A reload keeps the random key, so URLs handed out before it still work.
            (None, Some(running)) if running.random_sealer => {
                Arc::new(running.sealer.with_ttl(ttl))
            }
            (None, _) => {
                if config.origins().any(|m| m.proxy_packages) {
                    tracing::warn!("no server.query_string_secret configured: using a random one, so download URLs only work on this instance until it restarts");
                }
                Arc::new(UrlSealer::random(ttl))
            }
        };
        let service = |m: &crate::config::ProviderMirrorConfig, naming| {
            let access = MirrorAccess::from_config(m).map_err(|e| ServerError::Credential {
                mirror: m.name.clone(),
                source: e,
            })?;
            if m.public {
                tracing::info!(mirror = %m.name, "public mirror: its data is served to every client, fetched with the server's own credential");
            }
            Ok::<_, ServerError>(Arc::new(MirrorService::new(
                m.clone(),
                naming,
                access,
                meta.clone(),
                sealer.clone(),
                store.clone(),
            )))
        };
        let mut mirrors = HashMap::new();
        for m in &config.provider_mirrors {
            mirrors.insert(m.name.clone(), service(m, Naming::WithHostname)?);
        }
        let provider_registry = match &config.provider_registry {
            Some(r) => {
                let key = crate::signing::SigningKey::load(&r.signing_key_file)?;
                tracing::info!(key_id = %key.key_id, "provider registry: signing SHA256SUMS documents");
                Some(Arc::new(ProviderRegistry::new(
                    service(&r.origin, Naming::WithoutHostname)?,
                    Arc::new(key),
                )))
            }
            None => None,
        };
        let module_registry = match &config.module_registry {
            Some(r) => Some(Arc::new(ModuleRegistry::new(service(
                &r.origin,
                Naming::WithoutHostname,
            )?))),
            None => None,
        };
        Ok(AppState {
            metrics,
            mirrors,
            provider_registry,
            module_registry,
            store,
            meta,
            tls: config.server.tls.is_some(),
            max_path_length: config.limits.max_path_length,
            hot: hot::HotResponses::default(),
            random_sealer: config.server.query_string_secret.is_none(),
            sealer,
        })
    }
}

/// Runs the server until SIGINT/SIGTERM. `on_ready` is called with the bound address once
/// connections are being accepted.
pub async fn serve(
    config: &Config,
    on_ready: impl FnOnce(SocketAddr, bool),
) -> Result<(), ServerError> {
    let state = Arc::new(AppState::from_config(config)?);
    // The cache is ours now: a record left by a server that was killed goes before a tool
    // could mistake us (whose pid may be the dead server's, reused) for it while we bind.
    let _ = std::fs::remove_file(state.store.root().join(crate::store::SERVER_ADDRESS_FILE));
    let acceptor = load_acceptor(config)?;
    let addr = config.server.listen_addr;
    let admin_addr = config.server.admin_listen_addr;
    let main = listener::bind(
        addr,
        Role::Main {
            with_admin: admin_addr.is_none(),
        },
        acceptor.is_some(),
    )
    .await?;
    let admin = match admin_addr {
        Some(a) => {
            let l = listener::bind(a, Role::Admin, false).await?;
            if let Ok(bound) = l.tcp.local_addr() {
                tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz on the admin listener (plain HTTP)");
            }
            Some(l)
        }
        None => None,
    };
    let local = main
        .tcp
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    if acceptor.is_none() {
        tracing::warn!("no tls block configured: serving plain HTTP; Terraform only uses https mirrors, so put a TLS-terminating proxy in front");
    }
    // Local tools (warm) find us here, even when the port was chosen at start.
    if let Err(e) = crate::store::record_server_address(state.store.root(), local) {
        tracing::warn!(error = %e, "cannot record the server's address in the cache directory");
    }
    on_ready(local, acceptor.is_some());
    let refresher = crate::metadata::spawn_hot_set_refresher(state.meta.clone());
    // Packages `warm` kept without their h1: hash get it now, in the background.
    let hasher = tokio::spawn(state.store.clone().derive_pending_hashes());
    let stats_writer = {
        let store = state.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_INTERVAL);
            loop {
                tick.tick().await;
                let s = store.clone();
                // Also makes the packages stored since the last tick durable (their renames).
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = s.flush() {
                        tracing::warn!(error = %e, "flushing the cache failed");
                    }
                    s.write_stats_file()
                })
                .await;
            }
        })
    };

    let graceful = GracefulShutdown::new();
    let live = Arc::new(std::sync::RwLock::new(Live {
        state: state.clone(),
        acceptor: acceptor.clone(),
    }));
    let reloader = spawn_reloader(config.clone(), live.clone());
    // Every accept loop stops on the same signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let limits = &config.limits;
    let main_loop = listener::accept_loop(
        main,
        live.clone(),
        limits,
        &graceful,
        stopped(stop_rx.clone()),
    );
    let admin_loop = async {
        if let Some(admin) = admin {
            listener::accept_loop(
                admin,
                live.clone(),
                limits,
                &graceful,
                stopped(stop_rx.clone()),
            )
            .await;
        }
    };
    let signal = async {
        shutdown_signal().await;
        // A warm started now waits for the cache instead of asking a server that is leaving.
        crate::store::clear_server_address(state.store.root());
        let _ = stop_tx.send(true);
    };
    tokio::join!(main_loop, admin_loop, signal);
    tracing::info!("shutting down: no new connections, waiting for in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within {SHUTDOWN_GRACE:?}; exiting anyway"
        );
    }
    stats_writer.abort();
    hasher.abort();
    reloader.abort();
    if let Some(r) = refresher {
        r.abort();
    }
    let _ = state.store.write_stats_file();
    if let Err(e) = state.store.flush() {
        tracing::warn!(error = %e, "flushing the cache index failed");
    }
    Ok(())
}

fn load_acceptor(config: &Config) -> Result<Option<TlsAcceptor>, ServerError> {
    Ok(match &config.server.tls {
        Some(t) => Some(TlsAcceptor::from(Arc::new(crate::tls::load_server_config(
            &t.certificate_file,
            &t.private_key_file,
        )?))),
        None => None,
    })
}

/// What new connections are served with; replaced on SIGHUP.
struct Live {
    state: Arc<AppState>,
    acceptor: Option<TlsAcceptor>,
}

/// On SIGHUP, re-reads the configuration file and the TLS certificate. An invalid new
/// configuration keeps the old one (and says why); settings that need a restart (listen
/// address, cache, offline mode, TLS on/off) are reported and left as they were.
fn spawn_reloader(
    initial: Config,
    live: Arc<std::sync::RwLock<Live>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                let path = initial.source.clone();
                let mut new = match tokio::task::spawn_blocking(move || Config::load(&path)).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reload: the configuration is invalid; keeping the running one");
                        continue;
                    }
                    Err(_) => continue,
                };
                // `server --offline` on the command line outlives reloads.
                new.server.offline |= initial.server.offline;
                let restart_needed = new.server.listen_addr != initial.server.listen_addr
                    || new.cache.directory != initial.cache.directory
                    || new.cache.max_size != initial.cache.max_size
                    || new.server.offline != initial.server.offline
                    || new.server.admin_listen_addr != initial.server.admin_listen_addr
                    || new.limits != initial.limits
                    || new.server.tls.is_some() != initial.server.tls.is_some();
                if restart_needed {
                    tracing::warn!("reload: listen_addr, admin_listen_addr, cache, limits, offline and turning TLS on or off take effect only after a restart; those settings keep their running values");
                }
                let acceptor = match load_acceptor(&new) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = %e, "reload: cannot load the TLS certificate; keeping the running configuration");
                        continue;
                    }
                };
                let old = live.read().unwrap_or_else(|p| p.into_inner()).state.clone();
                let mut effective = new.clone();
                effective.server.offline = initial.server.offline;
                effective.limits = initial.limits.clone();
                // Resolving a public mirror's credential may run a credential helper.
                let state = tokio::task::spawn_blocking(move || {
                    AppState::with_config(
                        &effective,
                        old.store.clone(),
                        old.meta.clone(),
                        old.metrics.clone(),
                        Some(&old),
                    )
                })
                .await;
                let state = match state {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reload: keeping the running configuration");
                        continue;
                    }
                    Err(_) => continue,
                };
                let mut l = live.write().unwrap_or_else(|p| p.into_inner());
                l.state = Arc::new(state);
                if acceptor.is_some() == l.acceptor.is_some() {
                    l.acceptor = acceptor;
                }
                tracing::info!(mirrors = ?new.provider_mirrors.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), "configuration reloaded");
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (initial, live);
        }
    })
}

/// One request: handle it, count it, and arrange for its access-log line.
async fn serve_one<B>(
    state: Arc<AppState>,
    peer: SocketAddr,
    role: Role,
    req: http::Request<B>,
) -> http::Response<metrics::LoggedBody> {
    let started = Instant::now();
    let id = state.metrics.next_request_id();
    let method = req.method().clone();
    // Logged by path only: query strings can hold sealed credentials.
    let uri = req.uri().clone();
    let mut resp = handlers::handle(state.clone(), role, req).await;
    let route = resp
        .extensions()
        .get::<handlers::RouteLabel>()
        .map_or("other", |l| l.0);
    let status = resp.status().as_u16();
    state.metrics.record(route, status, started);
    resp.headers_mut()
        .insert("x-request-id", http::HeaderValue::from(id));
    let entry = metrics::AccessEntry {
        id,
        peer,
        method,
        uri,
        status,
        outcome: resp.extensions().get::<metrics::CacheOutcome>().copied(),
        started,
        is_download: route == "download",
    };
    let expected = (entry.method != http::Method::HEAD)
        .then(|| resp.headers().get(http::header::CONTENT_LENGTH))
        .flatten()
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let (parts, body) = resp.into_parts();
    http::Response::from_parts(
        parts,
        metrics::LoggedBody::wrap(body, entry, expected, state.metrics.clone()),
    )
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
