//! The configuration file: HCL blocks `server { ... }`, `provider_mirror "NAME" { ... }`,
//! `provider_registry { ... }` and `module_registry { ... }`,
//! loaded and validated up front so that every mistake is reported with its file and line.

pub mod nesting;
mod parse;
pub mod search;
pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use parse::{parse_config, RESERVED_NAMES};

/// Default lifetime of a sealed download URL, as in the prototype.
pub const DEFAULT_DOWNLOAD_URL_TTL: Duration = Duration::from_secs(180);
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8443";

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it are relative to its directory.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub limits: Limits,
    pub provider_mirrors: Vec<ProviderMirrorConfig>,
    pub provider_registry: Option<ProviderRegistryConfig>,
    pub module_registry: Option<ModuleRegistryConfig>,
}

/// Internal names of the registries' origins (in cache records and sealed URLs). Mirror names
/// cannot start with `_`, so these never collide with one.
pub const PROVIDER_REGISTRY_NAME: &str = "_providers";
pub const MODULE_REGISTRY_NAME: &str = "_modules";

/// `provider_registry { ... }`: Terraform's provider registry protocol for this host.
#[derive(Debug, Clone)]
pub struct ProviderRegistryConfig {
    /// Where the providers live; their repositories are `NAME_PREFIX/NAMESPACE/TYPE`.
    pub origin: ProviderMirrorConfig,
    pub signing_key_file: PathBuf,
}

/// `module_registry { ... }`: Terraform's module registry protocol for this host.
#[derive(Debug, Clone)]
pub struct ModuleRegistryConfig {
    /// Where the modules live; their repositories are `NAME_PREFIX/NAMESPACE/NAME/SYSTEM`.
    pub origin: ProviderMirrorConfig,
}

/// Hard bounds on what clients and origins may make the server do. Each has a safe default;
/// exceeding one gets the request a 4xx/5xx and a log line, never unbounded memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes (HTTP/1.1; the HTTP/2 header list likewise).
    pub max_request_header_bytes: usize,
    pub max_request_headers: usize,
    pub max_path_length: usize,
    /// How long a client may take to complete the TLS handshake, and then each request head.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this wait to be accepted.
    pub max_connections: usize,
    /// Package downloads from origins running at once; more wait their turn.
    pub max_origin_fetches: usize,
    pub max_manifest_size: u64,
    pub max_tag_pages: usize,
    pub max_tags: usize,
    pub max_package_size: u64,
    /// Whole time allowed for one package download from an origin.
    pub origin_fetch_timeout: Duration,
    /// Whole time allowed for one tag list, manifest or token request to an origin.
    pub origin_metadata_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: 16 * 1024,
            max_request_headers: 100,
            max_path_length: 2048,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_origin_fetches: 64,
            max_manifest_size: 4 << 20,
            max_tag_pages: 1000,
            max_tags: 100_000,
            max_package_size: 4 << 30,
            origin_fetch_timeout: Duration::from_secs(30 * 60),
            origin_metadata_timeout: Duration::from_secs(60),
        }
    }
}

pub const DEFAULT_CACHE_MAX_SIZE: u64 = 10 << 30;

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub directory: PathBuf,
    pub max_size: u64,
}

impl CacheConfig {
    /// The XDG cache directory for this program.
    pub fn default_directory(env: impl Fn(&str) -> Option<String>) -> PathBuf {
        let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
        match non_empty("XDG_CACHE_HOME") {
            Some(d) => PathBuf::from(d).join(search::APP_DIR),
            None => match non_empty("HOME") {
                Some(h) => PathBuf::from(h).join(".cache").join(search::APP_DIR),
                None => PathBuf::from("/var/cache").join(search::APP_DIR),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen_addr: SocketAddr,
    pub query_string_secret: Option<QueryStringSecret>,
    /// Secrets that download URLs sealed before a rotation may still be opened with.
    pub previous_query_string_secrets: Vec<QueryStringSecret>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served instead of the main listener.
    pub admin_listen_addr: Option<SocketAddr>,
    pub download_url_ttl: Duration,
    pub tls: Option<TlsConfig>,
    /// Never contact any origin; serve only what the cache holds.
    pub offline: bool,
}

/// The 32-byte key that seals credentials into download URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct QueryStringSecret(pub [u8; 32]);

impl std::fmt::Debug for QueryStringSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryStringSecret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub certificate_file: PathBuf,
    pub private_key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ProviderMirrorConfig {
    pub name: String,
    /// Base URL of the OCI Distribution registry, always ending in `/`.
    pub origin_url: url::Url,
    /// Repository path prefix, without leading or trailing `/` (may be empty).
    pub name_prefix: String,
    pub proxy_packages: bool,
    /// Serve this mirror's data to every client, fetched with the server's own credential
    /// for the origin: the operator vouches that everyone who can reach the server may have it.
    pub public: bool,
    pub freshness: FreshnessPolicy,
}

/// How long cached origin metadata (tag lists, tag → manifest) is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessPolicy {
    /// Served with no origin contact while younger than this.
    pub index_max_age: Duration,
    /// After `index_max_age`, served at once for this long while one background refresh runs.
    pub stale_while_revalidate: Duration,
    /// Served when the origin is down or failing, up to this age; `None` means forever.
    pub stale_if_error: Option<Duration>,
    /// How long a "not found" from the origin is remembered.
    pub negative_ttl: Duration,
    /// How long the origin's acceptance of a client credential for a repository is trusted
    /// before cached data is served to that credential again without asking the origin.
    pub auth_ttl: Duration,
}

impl Default for FreshnessPolicy {
    fn default() -> Self {
        FreshnessPolicy {
            index_max_age: Duration::from_secs(300),
            stale_while_revalidate: Duration::from_secs(3600),
            stale_if_error: Some(Duration::from_secs(30 * 86400)),
            negative_ttl: Duration::from_secs(60),
            auth_ttl: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    #[error(transparent)]
    Search(#[from] search::SearchError),
}

/// One problem in a configuration file, located for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse_config(path, &text).map_err(ConfigError::Invalid)
    }

    /// Loads `explicit` if given, else the one `config.hcl` found in the config directories.
    pub fn locate_and_load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        match explicit {
            Some(p) => Config::load(p),
            None => {
                let dirs = search::config_dirs(|k| std::env::var(k).ok());
                let file = search::find_config_file(&dirs)?;
                Config::load(&file)
            }
        }
    }

    pub fn mirror(&self, name: &str) -> Option<&ProviderMirrorConfig> {
        self.provider_mirrors.iter().find(|m| m.name == name)
    }

    /// Every origin the server serves from: the mirrors, then the registries.
    pub fn origins(&self) -> impl Iterator<Item = &ProviderMirrorConfig> {
        self.provider_mirrors
            .iter()
            .chain(self.provider_registry.iter().map(|r| &r.origin))
            .chain(self.module_registry.iter().map(|r| &r.origin))
    }
}
