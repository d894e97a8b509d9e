//! HCL → [`Config`], collecting every problem with its line and column (hcl-edit keeps spans).

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl_edit::expr::Expression;
use hcl_edit::structure::{Attribute, Block, BlockLabel, Body, Structure};
use hcl_edit::Span;

use super::{
    units, CacheConfig, Config, Diagnostic, FreshnessPolicy, Limits, ModuleRegistryConfig,
    ProviderMirrorConfig, ProviderRegistryConfig, QueryStringSecret, ServerConfig, TlsConfig,
    DEFAULT_CACHE_MAX_SIZE, DEFAULT_DOWNLOAD_URL_TTL, DEFAULT_LISTEN_ADDR, MODULE_REGISTRY_NAME,
    PROVIDER_REGISTRY_NAME,
};

/// Mirror names we keep for our own endpoints, so a mirror can never shadow them.
pub const RESERVED_NAMES: &[&str] = &["v1", "v2", "metrics", "healthz", "readyz", "admin"];

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let offset = span.map(|s| s.start).unwrap_or(0).min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        self.diags.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        });
    }

    /// A string attribute's literal value; anything else (numbers, templates, references) is an error.
    fn string(&mut self, attr: &Attribute) -> Option<String> {
        match &attr.value {
            Expression::String(s) => Some(s.value().clone()),
            other => {
                self.error(
                    other.span(),
                    format!(
                        "attribute \"{}\" must be a quoted string",
                        attr.key.as_str()
                    ),
                );
                None
            }
        }
    }

    fn bool(&mut self, attr: &Attribute) -> Option<bool> {
        match &attr.value {
            Expression::Bool(b) => Some(*b.value()),
            other => {
                self.error(
                    other.span(),
                    format!("attribute \"{}\" must be true or false", attr.key.as_str()),
                );
                None
            }
        }
    }

    /// A whole number attribute within `range`.
    fn count(&mut self, attr: &Attribute, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
        let key = attr.key.as_str();
        let n = match &attr.value {
            Expression::Number(n) => n.value().as_u64(),
            _ => None,
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    attr.value.span(),
                    format!(
                        "attribute \"{key}\" must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A list of quoted strings.
    fn strings(&mut self, attr: &Attribute) -> Option<Vec<String>> {
        let Expression::Array(items) = &attr.value else {
            self.error(
                attr.value.span(),
                format!(
                    "attribute \"{}\" must be a list of quoted strings, like [\"a\", \"b\"]",
                    attr.key.as_str()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item {
                Expression::String(s) => out.push(s.value().clone()),
                other => {
                    self.error(
                        other.span(),
                        format!(
                            "attribute \"{}\" must hold quoted strings only",
                            attr.key.as_str()
                        ),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    /// A size (`"4MiB"`) within `range` bytes.
    fn size(&mut self, attr: &Attribute, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
        let key = attr.key.as_str();
        let s = self.string(attr)?;
        match units::parse_size(&s) {
            Ok(n) if range.contains(&n) => Some(n),
            Ok(_) => {
                self.error(
                    attr.value.span(),
                    format!(
                        "{key} must be between {} and {} bytes",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
            Err(e) => {
                self.error(attr.value.span(), format!("{key}: {e}"));
                None
            }
        }
    }

    /// A duration (`"30s"`) of at least one second and at most `max`.
    fn duration(&mut self, attr: &Attribute, max: Duration) -> Option<Duration> {
        let key = attr.key.as_str();
        let s = self.string(attr)?;
        match units::parse_duration(&s) {
            Ok(d) if d >= Duration::from_secs(1) && d <= max => Some(d),
            Ok(_) => {
                self.error(
                    attr.value.span(),
                    format!("{key} must be between 1s and {}s", max.as_secs()),
                );
                None
            }
            Err(e) => {
                self.error(attr.value.span(), format!("{key}: {e}"));
                None
            }
        }
    }

    /// A file path, relative ones taken from the configuration file's directory.
    fn path(&mut self, attr: &Attribute) -> Option<PathBuf> {
        let s = self.string(attr)?;
        if s.is_empty() {
            self.error(
                attr.value.span(),
                format!("\"{}\" is empty", attr.key.as_str()),
            );
            return None;
        }
        let p = PathBuf::from(s);
        Some(if p.is_absolute() {
            p
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        })
    }

    /// Splits a body into attributes and blocks, reporting attributes not in `allowed_attrs`,
    /// blocks not in `allowed_blocks`, and attributes given twice.
    fn members<'b>(
        &mut self,
        body: &'b Body,
        where_: &str,
        allowed_attrs: &[&str],
        allowed_blocks: &[&str],
    ) -> (Vec<&'b Attribute>, Vec<&'b Block>) {
        let mut attrs: Vec<&Attribute> = Vec::new();
        let mut blocks = Vec::new();
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    if !allowed_attrs.contains(&key) {
                        self.error(
                            attr.key.span(),
                            format!(
                                "unknown attribute \"{key}\" in {where_}{}",
                                expected(allowed_attrs)
                            ),
                        );
                    } else if attrs.iter().any(|a| a.key.as_str() == key) {
                        self.error(
                            attr.key.span(),
                            format!("attribute \"{key}\" is set twice in {where_}"),
                        );
                    } else {
                        attrs.push(attr);
                    }
                }
                Structure::Block(block) => {
                    let ident = block.ident.as_str();
                    if allowed_blocks.contains(&ident) {
                        blocks.push(block);
                    } else {
                        self.error(
                            block.ident.span(),
                            format!(
                                "unknown block \"{ident}\" in {where_}{}",
                                if allowed_blocks.is_empty() {
                                    " (no blocks are allowed here)".to_owned()
                                } else {
                                    format!(" (expected one of: {})", allowed_blocks.join(", "))
                                }
                            ),
                        );
                    }
                }
            }
        }
        (attrs, blocks)
    }
}

fn expected(allowed: &[&str]) -> String {
    if allowed.is_empty() {
        " (no attributes are allowed here)".to_owned()
    } else {
        format!(" (expected one of: {})", allowed.join(", "))
    }
}

fn labels(block: &Block) -> Vec<(String, Option<Range<usize>>)> {
    block
        .labels
        .iter()
        .map(|l| match l {
            BlockLabel::String(s) => (s.value().clone(), s.span()),
            BlockLabel::Ident(i) => (i.as_str().to_owned(), i.span()),
        })
        .collect()
}

/// Parses and validates a whole configuration; `file` is used for messages and relative paths.
/// No configuration is anywhere near this long; a larger file is refused unread.
const MAX_CONFIG_BYTES: usize = 1 << 20;

pub fn parse_config(file: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(vec![Diagnostic {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: format!(
                "the configuration file is larger than {MAX_CONFIG_BYTES} bytes; this is not a configuration"
            ),
        }]);
    }
    if let Some(at) = super::nesting::too_deep(text) {
        let mut ctx = Ctx {
            file,
            text,
            diags: Vec::new(),
        };
        ctx.error(
            Some(at..at),
            format!(
                "nested more than {} levels deep",
                super::nesting::MAX_NESTING
            ),
        );
        return Err(ctx.diags);
    }
    let body = match crate::config::nesting::parse_body(text) {
        Ok(b) => b,
        Err(e) => {
            return Err(vec![Diagnostic {
                file: file.to_owned(),
                line: e.location().line(),
                column: e.location().column(),
                message: format!("HCL syntax error: {}", e.message()),
            }])
        }
    };
    let mut ctx = Ctx {
        file,
        text,
        diags: Vec::new(),
    };
    let (_, blocks) = ctx.members(
        &body,
        "the configuration file",
        &[],
        &[
            "server",
            "cache",
            "metadata_cache",
            "limits",
            "provider_mirror",
            "provider_registry",
            "module_registry",
        ],
    );
    let mut limits: Option<Limits> = None;

    let mut cache: Option<CacheConfig> = None;
    let mut freshness_defaults: Option<FreshnessOverrides> = None;
    let mut mirror_freshness: Vec<FreshnessOverrides> = Vec::new();
    let mut server = None;
    let mut mirrors: Vec<ProviderMirrorConfig> = Vec::new();
    let mut provider_registry: Option<(ProviderRegistryConfig, FreshnessOverrides)> = None;
    let mut module_registry: Option<(ModuleRegistryConfig, FreshnessOverrides)> = None;
    for block in blocks {
        match block.ident.as_str() {
            "server" => {
                if server.is_some() {
                    ctx.error(block.ident.span(), "only one \"server\" block is allowed");
                    continue;
                }
                if !block.labels.is_empty() {
                    ctx.error(block.ident.span(), "a \"server\" block takes no label");
                }
                server = Some(parse_server(&mut ctx, block));
            }
            "cache" => {
                if cache.is_some() {
                    ctx.error(block.ident.span(), "only one \"cache\" block is allowed");
                    continue;
                }
                if !block.labels.is_empty() {
                    ctx.error(block.ident.span(), "a \"cache\" block takes no label");
                }
                cache = Some(parse_cache(&mut ctx, block));
            }
            "limits" => {
                if limits.is_some() {
                    ctx.error(block.ident.span(), "only one \"limits\" block is allowed");
                    continue;
                }
                limits = Some(parse_limits(&mut ctx, block));
            }
            "metadata_cache" => {
                if freshness_defaults.is_some() {
                    ctx.error(
                        block.ident.span(),
                        "only one \"metadata_cache\" block is allowed",
                    );
                    continue;
                }
                freshness_defaults = Some(parse_metadata_cache(&mut ctx, block));
            }
            "provider_mirror" => {
                if let Some((m, overrides)) = parse_provider_mirror(&mut ctx, block) {
                    if mirrors.iter().any(|o| o.name == m.name) {
                        ctx.error(
                            block.labels.first().and_then(|l| l.span()),
                            format!("a provider_mirror named \"{}\" is declared twice", m.name),
                        );
                    } else {
                        mirrors.push(m);
                        mirror_freshness.push(overrides);
                    }
                }
            }
            "provider_registry" => {
                if provider_registry.is_some() {
                    ctx.error(
                        block.ident.span(),
                        "only one \"provider_registry\" block is allowed (Terraform finds one per host)",
                    );
                    continue;
                }
                provider_registry = parse_provider_registry(&mut ctx, block);
            }
            "module_registry" => {
                if module_registry.is_some() {
                    ctx.error(
                        block.ident.span(),
                        "only one \"module_registry\" block is allowed (Terraform finds one per host)",
                    );
                    continue;
                }
                module_registry = parse_module_registry(&mut ctx, block);
            }
            _ => unreachable!("members() only returns allowed blocks"),
        }
    }
    let server = server.unwrap_or_else(default_server);
    // Mirrors take the global metadata_cache settings for what they do not set themselves.
    let defaults = freshness_defaults.unwrap_or_default();
    for (m, overrides) in mirrors.iter_mut().zip(&mirror_freshness) {
        m.freshness = overrides.apply(defaults.apply(FreshnessPolicy::default()));
    }
    if let Some((r, overrides)) = &mut provider_registry {
        r.origin.freshness = overrides.apply(defaults.apply(FreshnessPolicy::default()));
    }
    if let Some((r, overrides)) = &mut module_registry {
        r.origin.freshness = overrides.apply(defaults.apply(FreshnessPolicy::default()));
    }
    if mirrors.is_empty()
        && provider_registry.is_none()
        && module_registry.is_none()
        && ctx.diags.is_empty()
    {
        ctx.error(
            None,
            "no provider_mirror, provider_registry or module_registry block: the server would have nothing to serve",
        );
    }
    if ctx.diags.is_empty() {
        Ok(Config {
            source: file.to_owned(),
            server,
            cache: cache.unwrap_or_else(default_cache),
            limits: limits.unwrap_or_default(),
            provider_mirrors: mirrors,
            provider_registry: provider_registry.map(|(r, _)| r),
            module_registry: module_registry.map(|(r, _)| r),
        })
    } else {
        Err(ctx.diags)
    }
}

fn parse_server(ctx: &mut Ctx, block: &Block) -> ServerConfig {
    let (attrs, blocks) = ctx.members(
        &block.body,
        "the server block",
        &[
            "listen_addr",
            "query_string_secret",
            "previous_query_string_secrets",
            "admin_listen_addr",
            "download_url_ttl",
            "offline",
        ],
        &["tls"],
    );
    let mut server = default_server();
    for attr in attrs.iter().copied() {
        match attr.key.as_str() {
            "offline" => {
                if let Some(b) = ctx.bool(attr) {
                    server.offline = b;
                }
            }
            "listen_addr" => {
                if let Some(a) = socket_addr(ctx, attr) {
                    server.listen_addr = a;
                }
            }
            "admin_listen_addr" => {
                server.admin_listen_addr = socket_addr(ctx, attr);
            }
            "previous_query_string_secrets" => {
                for s in ctx.strings(attr).unwrap_or_default() {
                    match parse_secret(&s) {
                        Some(k) => server
                            .previous_query_string_secrets
                            .push(QueryStringSecret(k)),
                        None => ctx.error(
                            attr.value.span(),
                            "each of previous_query_string_secrets must be exactly 64 hexadecimal characters",
                        ),
                    }
                }
            }
            "query_string_secret" => {
                if let Some(s) = ctx.string(attr) {
                    match parse_secret(&s) {
                        Some(k) => server.query_string_secret = Some(QueryStringSecret(k)),
                        None => ctx.error(
                            attr.value.span(),
                            "query_string_secret must be exactly 64 hexadecimal characters (32 random bytes; e.g. the output of `openssl rand -hex 32`)",
                        ),
                    }
                }
            }
            "download_url_ttl" => {
                if let Some(s) = ctx.string(attr) {
                    match units::parse_duration(&s) {
                        Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(86400) => {
                            server.download_url_ttl = d
                        }
                        Ok(_) => ctx.error(
                            attr.value.span(),
                            "download_url_ttl must be between 1s and 1d",
                        ),
                        Err(e) => ctx.error(attr.value.span(), format!("download_url_ttl: {e}")),
                    }
                }
            }
            _ => unreachable!(),
        }
    }
    let has_previous = attrs
        .iter()
        .any(|a| a.key.as_str() == "previous_query_string_secrets");
    if has_previous && server.query_string_secret.is_none() {
        ctx.error(
            block.ident.span(),
            "previous_query_string_secrets needs a current query_string_secret to seal new URLs with",
        );
    }
    if server.admin_listen_addr.is_some() && server.admin_listen_addr == Some(server.listen_addr) {
        ctx.error(
            block.ident.span(),
            "admin_listen_addr must differ from listen_addr",
        );
    }
    for (i, tls) in blocks.into_iter().enumerate() {
        if i > 0 {
            ctx.error(tls.ident.span(), "only one \"tls\" block is allowed");
            continue;
        }
        server.tls = parse_tls(ctx, tls);
    }
    server
}

fn socket_addr(ctx: &mut Ctx, attr: &Attribute) -> Option<SocketAddr> {
    let s = ctx.string(attr)?;
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            ctx.error(
                attr.value.span(),
                format!(
                    "{} {s:?} is not an IP address and port, like \"0.0.0.0:8443\" or \"[::]:443\"",
                    attr.key.as_str()
                ),
            );
            None
        }
    }
}

const DAY: Duration = Duration::from_secs(86_400);

fn parse_limits(ctx: &mut Ctx, block: &Block) -> Limits {
    let (attrs, _) = ctx.members(
        &block.body,
        "the limits block",
        &[
            "max_request_header_bytes",
            "max_request_headers",
            "max_path_length",
            "header_read_timeout",
            "idle_timeout",
            "max_connections",
            "max_origin_fetches",
            "max_manifest_size",
            "max_tag_pages",
            "max_tags",
            "max_package_size",
            "origin_fetch_timeout",
            "origin_metadata_timeout",
        ],
        &[],
    );
    let mut l = Limits::default();
    for attr in attrs {
        // Lower bounds keep the server usable (hyper needs an 8 KiB read buffer; a
        // manifest needs room); upper bounds keep a typo from disabling a limit.
        match attr.key.as_str() {
            "max_request_header_bytes" => {
                if let Some(n) = ctx.size(attr, 8192..=1 << 20) {
                    l.max_request_header_bytes = n as usize;
                }
            }
            "max_request_headers" => {
                if let Some(n) = ctx.count(attr, 8..=1000) {
                    l.max_request_headers = n as usize;
                }
            }
            "max_path_length" => {
                if let Some(n) = ctx.count(attr, 256..=65_536) {
                    l.max_path_length = n as usize;
                }
            }
            "header_read_timeout" => {
                if let Some(d) = ctx.duration(attr, Duration::from_secs(600)) {
                    l.header_read_timeout = d;
                }
            }
            "idle_timeout" => {
                if let Some(d) = ctx.duration(attr, DAY) {
                    l.idle_timeout = d;
                }
            }
            "max_connections" => {
                if let Some(n) = ctx.count(attr, 1..=1_000_000) {
                    l.max_connections = n as usize;
                }
            }
            "max_origin_fetches" => {
                if let Some(n) = ctx.count(attr, 1..=10_000) {
                    l.max_origin_fetches = n as usize;
                }
            }
            "max_manifest_size" => {
                if let Some(n) = ctx.size(attr, 1024..=64 << 20) {
                    l.max_manifest_size = n;
                }
            }
            "max_tag_pages" => {
                if let Some(n) = ctx.count(attr, 1..=100_000) {
                    l.max_tag_pages = n as usize;
                }
            }
            "max_tags" => {
                if let Some(n) = ctx.count(attr, 1..=10_000_000) {
                    l.max_tags = n as usize;
                }
            }
            "max_package_size" => {
                if let Some(n) = ctx.size(attr, 1024..=1 << 40) {
                    l.max_package_size = n;
                }
            }
            "origin_fetch_timeout" => {
                if let Some(d) = ctx.duration(attr, DAY) {
                    l.origin_fetch_timeout = d;
                }
            }
            "origin_metadata_timeout" => {
                if let Some(d) = ctx.duration(attr, Duration::from_secs(3600)) {
                    l.origin_metadata_timeout = d;
                }
            }
            _ => unreachable!("members() only returns allowed attributes"),
        }
    }
    l
}

fn default_server() -> ServerConfig {
    ServerConfig {
        listen_addr: DEFAULT_LISTEN_ADDR.parse().expect("valid default"),
        query_string_secret: None,
        previous_query_string_secrets: Vec::new(),
        admin_listen_addr: None,
        download_url_ttl: DEFAULT_DOWNLOAD_URL_TTL,
        tls: None,
        offline: false,
    }
}

const FRESHNESS_ATTRS: [&str; 5] = [
    "index_max_age",
    "stale_while_revalidate",
    "stale_if_error",
    "negative_ttl",
    "auth_ttl",
];

/// Freshness attributes given in one block; unset ones fall back to the next level.
#[derive(Debug, Default, Clone)]
struct FreshnessOverrides {
    index_max_age: Option<Duration>,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Option<Duration>>,
    negative_ttl: Option<Duration>,
    auth_ttl: Option<Duration>,
}

impl FreshnessOverrides {
    fn apply(&self, base: FreshnessPolicy) -> FreshnessPolicy {
        FreshnessPolicy {
            index_max_age: self.index_max_age.unwrap_or(base.index_max_age),
            stale_while_revalidate: self
                .stale_while_revalidate
                .unwrap_or(base.stale_while_revalidate),
            stale_if_error: self.stale_if_error.unwrap_or(base.stale_if_error),
            negative_ttl: self.negative_ttl.unwrap_or(base.negative_ttl),
            auth_ttl: self.auth_ttl.unwrap_or(base.auth_ttl),
        }
    }

    /// Reads one freshness attribute; false if `attr` is not one.
    fn read(&mut self, ctx: &mut Ctx, attr: &Attribute) -> bool {
        let key = attr.key.as_str();
        if !FRESHNESS_ATTRS.contains(&key) {
            return false;
        }
        let Some(s) = ctx.string(attr) else {
            return true;
        };
        if key == "stale_if_error" && s == "forever" {
            self.stale_if_error = Some(None);
            return true;
        }
        let d = match units::parse_duration(&s) {
            Ok(d) => d,
            Err(e) => {
                let hint = if key == "stale_if_error" {
                    " (or \"forever\")"
                } else {
                    ""
                };
                ctx.error(attr.value.span(), format!("{key}: {e}{hint}"));
                return true;
            }
        };
        match key {
            "index_max_age" => self.index_max_age = Some(d),
            "stale_while_revalidate" => self.stale_while_revalidate = Some(d),
            "stale_if_error" => self.stale_if_error = Some(Some(d)),
            "negative_ttl" => self.negative_ttl = Some(d),
            "auth_ttl" => self.auth_ttl = Some(d),
            _ => unreachable!(),
        }
        true
    }
}

fn parse_metadata_cache(ctx: &mut Ctx, block: &Block) -> FreshnessOverrides {
    let (attrs, _) = ctx.members(
        &block.body,
        "the metadata_cache block",
        &FRESHNESS_ATTRS,
        &[],
    );
    let mut o = FreshnessOverrides::default();
    for attr in attrs {
        o.read(ctx, attr);
    }
    o
}

fn default_cache() -> CacheConfig {
    CacheConfig {
        directory: CacheConfig::default_directory(|k| std::env::var(k).ok()),
        max_size: DEFAULT_CACHE_MAX_SIZE,
    }
}

fn parse_cache(ctx: &mut Ctx, block: &Block) -> CacheConfig {
    let (attrs, _) = ctx.members(
        &block.body,
        "the cache block",
        &["directory", "max_size"],
        &[],
    );
    let mut cache = default_cache();
    for attr in attrs {
        match attr.key.as_str() {
            "directory" => {
                if let Some(p) = ctx.path(attr) {
                    cache.directory = p;
                }
            }
            "max_size" => {
                if let Some(s) = ctx.string(attr) {
                    match units::parse_size(&s) {
                        Ok(n) => cache.max_size = n,
                        Err(e) => ctx.error(attr.value.span(), format!("max_size: {e}")),
                    }
                }
            }
            _ => unreachable!(),
        }
    }
    cache
}

fn parse_secret(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

fn parse_tls(ctx: &mut Ctx, block: &Block) -> Option<TlsConfig> {
    let (attrs, _) = ctx.members(
        &block.body,
        "the tls block",
        &["certificate_file", "private_key_file"],
        &[],
    );
    let mut cert = None;
    let mut key = None;
    for attr in &attrs {
        match attr.key.as_str() {
            "certificate_file" => cert = ctx.path(attr).map(|p| (p, attr.value.span())),
            "private_key_file" => key = ctx.path(attr).map(|p| (p, attr.value.span())),
            _ => unreachable!(),
        }
    }
    let have_attr = |k: &str| attrs.iter().any(|a| a.key.as_str() == k);
    for required in ["certificate_file", "private_key_file"] {
        if !have_attr(required) {
            ctx.error(
                block.ident.span(),
                format!("the tls block needs \"{required}\""),
            );
        }
    }
    let ((cert, cert_span), (key, key_span)) = (cert?, key?);
    // Fail now, not at the first handshake: unreadable files and a key that does not
    // belong to the certificate are the usual mistakes.
    if let Err(e) = crate::tls::load_server_config(&cert, &key) {
        let span = if e.is_about_certificate() {
            cert_span
        } else {
            key_span
        };
        ctx.error(span, e.to_string());
    }
    Some(TlsConfig {
        certificate_file: cert,
        private_key_file: key,
    })
}

fn parse_provider_mirror(
    ctx: &mut Ctx,
    block: &Block,
) -> Option<(ProviderMirrorConfig, FreshnessOverrides)> {
    let labels = labels(block);
    let name = match labels.as_slice() {
        [(name, span)] => {
            if let Err(why) = check_mirror_name(name) {
                ctx.error(span.clone(), format!("provider_mirror name {name:?} {why}"));
            }
            name.clone()
        }
        _ => {
            ctx.error(
                block.ident.span(),
                "a provider_mirror block needs exactly one label, its name: provider_mirror \"mirror\" { ... }",
            );
            return None;
        }
    };
    let where_ = format!("provider_mirror \"{name}\"");
    let (m, overrides, _) = parse_origin_block(ctx, block, name, &where_, &[])?;
    Some((m, overrides))
}

fn parse_provider_registry(
    ctx: &mut Ctx,
    block: &Block,
) -> Option<(ProviderRegistryConfig, FreshnessOverrides)> {
    let where_ = "provider_registry";
    if !block.labels.is_empty() {
        ctx.error(
            block.ident.span(),
            "a \"provider_registry\" block takes no label",
        );
    }
    let (origin, overrides, extras) = parse_origin_block(
        ctx,
        block,
        PROVIDER_REGISTRY_NAME.to_owned(),
        where_,
        &["signing_key_file"],
    )?;
    let mut signing_key_file = None;
    for attr in extras {
        // Read (and checked) by the server at start and on reload, not here: push, warm and
        // the other subcommands have no use for the private key.
        if let Some(p) = ctx.path(attr) {
            signing_key_file = Some(p);
        }
    }
    let Some(signing_key_file) = signing_key_file else {
        ctx.error(
            block.ident.span(),
            "provider_registry needs \"signing_key_file\", an ASCII-armored OpenPGP private key that signs the SHA256SUMS documents (create one with the keygen subcommand)",
        );
        return None;
    };
    Some((
        ProviderRegistryConfig {
            origin,
            signing_key_file,
        },
        overrides,
    ))
}

fn parse_module_registry(
    ctx: &mut Ctx,
    block: &Block,
) -> Option<(ModuleRegistryConfig, FreshnessOverrides)> {
    if !block.labels.is_empty() {
        ctx.error(
            block.ident.span(),
            "a \"module_registry\" block takes no label",
        );
    }
    let (origin, overrides, _) = parse_origin_block(
        ctx,
        block,
        MODULE_REGISTRY_NAME.to_owned(),
        "module_registry",
        &[],
    )?;
    Some((ModuleRegistryConfig { origin }, overrides))
}

/// Attributes every block backed by an OCI origin takes.
const ORIGIN_ATTRIBUTES: &[&str] = &[
    "origin_url",
    "name_prefix",
    "proxy_packages",
    "public",
    "index_max_age",
    "stale_while_revalidate",
    "stale_if_error",
    "negative_ttl",
    "auth_ttl",
];

/// The body of a `provider_mirror`, `provider_registry` or `module_registry` block; the
/// attributes named in `extra` are returned for the caller to read.
fn parse_origin_block<'b>(
    ctx: &mut Ctx,
    block: &'b Block,
    name: String,
    where_: &str,
    extra: &[&str],
) -> Option<(ProviderMirrorConfig, FreshnessOverrides, Vec<&'b Attribute>)> {
    let allowed: Vec<&str> = ORIGIN_ATTRIBUTES.iter().chain(extra).copied().collect();
    let (attrs, _) = ctx.members(&block.body, where_, &allowed, &[]);
    let mut extras = Vec::new();
    let mut freshness = FreshnessOverrides::default();
    let mut origin_url = None;
    let mut name_prefix = String::new();
    let mut proxy_packages = false;
    let mut public = false;
    for attr in attrs {
        match attr.key.as_str() {
            "origin_url" => {
                if let Some(s) = ctx.string(attr) {
                    match check_origin_url(&s) {
                        Ok(u) => origin_url = Some(u),
                        Err(why) => ctx.error(attr.value.span(), format!("origin_url {s:?} {why}")),
                    }
                }
            }
            "name_prefix" => {
                if let Some(s) = ctx.string(attr) {
                    let trimmed = s.trim_matches('/').to_owned();
                    if !trimmed.is_empty() && !crate::oci::is_valid_repository_name(&trimmed) {
                        ctx.error(
                            attr.value.span(),
                            format!("name_prefix {s:?} is not a valid OCI repository path (lower-case letters, digits, and . _ - separators, path parts joined by /)"),
                        );
                    }
                    name_prefix = trimmed;
                }
            }
            "proxy_packages" => {
                if let Some(b) = ctx.bool(attr) {
                    proxy_packages = b;
                }
            }
            "public" => {
                if let Some(b) = ctx.bool(attr) {
                    public = b;
                }
            }
            k if extra.contains(&k) => extras.push(attr),
            _ => {
                let known = freshness.read(ctx, attr);
                debug_assert!(known, "members() only returns allowed attributes");
            }
        }
    }
    if public && proxy_packages {
        ctx.error(
            block.ident.span(),
            format!("{where_}: public = true serves everyone with the server's credential, so proxy_packages (sealing each client's credential into URLs) cannot apply; set one of them"),
        );
    }
    let Some(origin_url) = origin_url else {
        if !ctx
            .diags
            .iter()
            .any(|d| d.message.starts_with("origin_url"))
        {
            ctx.error(
                block.ident.span(),
                format!("{where_} needs \"origin_url\", the URL of its OCI registry"),
            );
        }
        return None;
    };
    Some((
        ProviderMirrorConfig {
            name,
            origin_url,
            name_prefix,
            proxy_packages,
            public,
            freshness: FreshnessPolicy::default(),
        },
        freshness,
        extras,
    ))
}

/// The mirror's name becomes one URL path segment (`https://HOST/NAME/`).
fn check_mirror_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
    {
        return Err("must be a single URL path segment: letters, digits, and - _ . ~ only".into());
    }
    if name.starts_with('.') || name.starts_with('_') {
        return Err("must not start with '.' or '_'".into());
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "is reserved for the server's own endpoints ({})",
            RESERVED_NAMES.join(", ")
        ));
    }
    Ok(())
}

fn check_origin_url(s: &str) -> Result<url::Url, String> {
    let mut u = url::Url::parse(s).map_err(|e| format!("is not a valid URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err("must start with http:// or https://".into());
    }
    if u.host().is_none() {
        return Err("has no host".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("must not have a query string or fragment".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials (they would leak into logs)".into());
    }
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_defaults_and_overrides() {
        let c = parse(
            r#"
metadata_cache {
  index_max_age  = "1m"
  stale_if_error = "forever"
}
provider_mirror "a" {
  origin_url = "http://x/"
}
provider_mirror "b" {
  origin_url    = "http://x/"
  index_max_age = "10s"
  auth_ttl      = "2m"
}
server {
  offline = true
}
"#,
        )
        .unwrap();
        let a = c.mirror("a").unwrap().freshness;
        assert_eq!(a.index_max_age, Duration::from_secs(60));
        assert_eq!(a.stale_if_error, None);
        assert_eq!(a.negative_ttl, FreshnessPolicy::default().negative_ttl);
        let b = c.mirror("b").unwrap().freshness;
        assert_eq!(b.index_max_age, Duration::from_secs(10));
        assert_eq!(b.stale_if_error, None);
        assert_eq!(b.auth_ttl, Duration::from_secs(120));
        assert!(c.server.offline);
        let e = errors("provider_mirror \"a\" {\n  origin_url = \"http://x/\"\n  stale_if_error = \"always\"\n}\n");
        assert!(
            e.contains(":3:20: stale_if_error:") && e.contains("forever"),
            "{e}"
        );
    }

    fn parse(text: &str) -> Result<Config, Vec<Diagnostic>> {
        parse_config(Path::new("/etc/x/config.hcl"), text)
    }

    const MIRROR: &str =
        "provider_mirror \"m\" {\n  origin_url = \"http://x/\"\n  public = true\n}\n";

    #[test]
    fn limits_rotation_admin_and_public() {
        let c = parse(&format!(
            r#"
server {{
  query_string_secret           = "{a}"
  previous_query_string_secrets = ["{b}"]
  admin_listen_addr             = "127.0.0.1:9100"
}}
limits {{
  max_request_header_bytes = "32KiB"
  max_request_headers      = 50
  max_path_length          = 1024
  header_read_timeout      = "5s"
  idle_timeout             = "2m"
  max_connections          = 100
  max_origin_fetches       = 4
  max_manifest_size        = "1MiB"
  max_tag_pages            = 10
  max_tags                 = 5000
  max_package_size         = "512MiB"
  origin_fetch_timeout     = "10m"
  origin_metadata_timeout  = "20s"
}}
{MIRROR}"#,
            a = "1".repeat(64),
            b = "2".repeat(64)
        ))
        .unwrap();
        let l = &c.limits;
        assert_eq!(l.max_request_header_bytes, 32 * 1024);
        assert_eq!((l.max_request_headers, l.max_path_length), (50, 1024));
        assert_eq!(l.header_read_timeout, Duration::from_secs(5));
        assert_eq!(l.idle_timeout, Duration::from_secs(120));
        assert_eq!((l.max_connections, l.max_origin_fetches), (100, 4));
        assert_eq!(
            (l.max_manifest_size, l.max_package_size),
            (1 << 20, 512 << 20)
        );
        assert_eq!((l.max_tag_pages, l.max_tags), (10, 5000));
        assert_eq!(l.origin_fetch_timeout, Duration::from_secs(600));
        assert_eq!(l.origin_metadata_timeout, Duration::from_secs(20));
        assert_eq!(c.server.previous_query_string_secrets.len(), 1);
        assert_eq!(
            c.server.admin_listen_addr,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert!(c.mirror("m").unwrap().public);
        assert_eq!(parse(MIRROR).unwrap().limits, Limits::default());
    }

    #[test]
    fn limits_are_checked() {
        let e = errors(&format!(
            "limits {{\n  max_request_header_bytes = \"1KiB\"\n  max_connections = 0\n  idle_timeout = \"0s\"\n  max_tags = \"many\"\n  nonsense = 1\n}}\n{MIRROR}"
        ));
        assert!(
            e.contains(":2:30: max_request_header_bytes must be between 8192"),
            "{e}"
        );
        assert!(
            e.contains(":3:21: attribute \"max_connections\" must be a whole number from 1"),
            "{e}"
        );
        assert!(e.contains(":4:18: idle_timeout must be between 1s"), "{e}");
        assert!(
            e.contains(":5:14: attribute \"max_tags\" must be a whole number"),
            "{e}"
        );
        assert!(
            e.contains(":6:3: unknown attribute \"nonsense\" in the limits block"),
            "{e}"
        );
        let e = errors(&format!(
            "server {{\n  previous_query_string_secrets = [\"zz\"]\n}}\n{MIRROR}"
        ));
        assert!(
            e.contains(
                "each of previous_query_string_secrets must be exactly 64 hexadecimal characters"
            ),
            "{e}"
        );
        assert!(e.contains("needs a current query_string_secret"), "{e}");
    }

    fn errors(text: &str) -> String {
        parse(text)
            .expect_err("should fail")
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn minimal_mirror() {
        let c = parse(
            r#"
provider_mirror "mirror" {
  origin_url = "http://127.0.0.1:5000"
  name_prefix = "terraform-providers/"
  proxy_packages = true
}
"#,
        )
        .unwrap();
        let m = c.mirror("mirror").unwrap();
        assert_eq!(m.origin_url.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(m.name_prefix, "terraform-providers");
        assert!(m.proxy_packages);
        assert_eq!(c.server.download_url_ttl, DEFAULT_DOWNLOAD_URL_TTL);
        assert!(c.server.tls.is_none());
    }

    #[test]
    fn errors_name_file_line_and_attribute() {
        let e = errors(
            r#"provider_mirror "mirror" {
  origin_url = "http://127.0.0.1:5000/"
  proxy_pakages = true
}
"#,
        );
        assert!(
            e.contains("/etc/x/config.hcl:3:3: unknown attribute \"proxy_pakages\""),
            "{e}"
        );
    }

    #[test]
    fn all_the_validations() {
        let e = errors(
            r#"server {
  listen_addr = "nonsense"
  query_string_secret = "abc"
}
provider_mirror "a/b" {
  origin_url = "ftp://x/"
}
provider_mirror "m" {
  origin_url = "http://ok/"
  name_prefix = "UPPER"
}
provider_mirror "m" {
  origin_url = "http://ok/"
}
provider_mirror "v2" {
  origin_url = "http://ok/"
}
provider_mirror "n" {
  origin_url = 5
}
frobnicate {}
"#,
        );
        for expect in [
            ":2:17: listen_addr \"nonsense\"",
            ":3:25: query_string_secret must be exactly 64",
            ":5:17: provider_mirror name \"a/b\"",
            ":6:16: origin_url \"ftp://x/\" must start with http",
            ":10:17: name_prefix \"UPPER\"",
            ":12:17: a provider_mirror named \"m\" is declared twice",
            ":15:17: provider_mirror name \"v2\" is reserved",
            ":19:16: attribute \"origin_url\" must be a quoted string",
            ":21:1: unknown block \"frobnicate\"",
        ] {
            assert!(e.contains(expect), "missing {expect:?} in:\n{e}");
        }
    }

    #[test]
    fn syntax_errors_have_locations() {
        let e = errors("provider_mirror \"m\" {\n  origin_url = \n}\n");
        assert!(e.starts_with("/etc/x/config.hcl:"), "{e}");
        assert!(e.contains("HCL syntax error"), "{e}");
    }

    #[test]
    fn tls_files_are_checked() {
        let e = errors(
            r#"server {
  tls {
    certificate_file = "/nonexistent/cert.pem"
    private_key_file = "/nonexistent/key.pem"
  }
}
provider_mirror "m" { origin_url = "http://ok/" }
"#,
        );
        assert!(
            e.contains(":3:24:") && e.contains("/nonexistent/cert.pem"),
            "{e}"
        );
    }

    #[test]
    fn registries() {
        let dir = std::env::temp_dir().join(format!("odtr-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key.asc"), "x").unwrap();
        let file = dir.join("config.hcl");
        let c = parse_config(
            &file,
            "provider_registry {\n  origin_url = \"http://r/\"\n  name_prefix = \"p\"\n  signing_key_file = \"key.asc\"\n  index_max_age = \"1m\"\n}\nmodule_registry {\n  origin_url = \"http://r/\"\n  public = true\n}\n",
        )
        .unwrap();
        let p = c.provider_registry.as_ref().unwrap();
        assert_eq!(p.signing_key_file, dir.join("key.asc"));
        assert_eq!(p.origin.name, PROVIDER_REGISTRY_NAME);
        assert_eq!(p.origin.name_prefix, "p");
        assert_eq!(p.origin.freshness.index_max_age, Duration::from_secs(60));
        let m = c.module_registry.as_ref().unwrap();
        assert!(m.origin.public);
        assert_eq!(m.origin.name, MODULE_REGISTRY_NAME);
        assert!(c.provider_mirrors.is_empty());
        assert_eq!(c.origins().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();

        let e = errors("provider_registry {\n  origin_url = \"http://r/\"\n}\n");
        assert!(e.contains("needs \"signing_key_file\""), "{e}");
        // A missing key file is the server's concern (at start), not the configuration's.
        assert!(parse_config(
            &file,
            "provider_registry {\n  origin_url = \"http://r/\"\n  signing_key_file = \"/nonexistent/k.asc\"\n}\n"
        )
        .is_ok());
        let e = errors("module_registry \"x\" {\n  origin_url = \"http://r/\"\n}\nmodule_registry {\n  origin_url = \"http://r/\"\n}\n");
        assert!(e.contains("takes no label"), "{e}");
        assert!(e.contains("only one \"module_registry\""), "{e}");
        let e = errors("provider_mirror \"v1\" {\n  origin_url = \"http://r/\"\n}\n");
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn empty_config_complains() {
        assert!(
            errors("").contains("no provider_mirror, provider_registry or module_registry block")
        );
    }
}

#[cfg(test)]
mod example_config {
    /// The shipped example must parse, apart from the certificate files it names, which a
    /// reader creates themselves.
    #[test]
    fn example_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config.hcl");
        let text = std::fs::read_to_string(&path).unwrap();
        let without_tls = text.replace("  tls {\n    certificate_file = \"cert.pem\"\n    private_key_file = \"key.pem\"\n  }\n", "");
        assert_ne!(
            text, without_tls,
            "the example's tls block changed; update this test"
        );
        let config = super::parse_config(&path, &without_tls).unwrap();
        let m = config.mirror("mirror").unwrap();
        assert_eq!(m.origin_url.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(m.name_prefix, "terraform-providers");
        assert!(m.proxy_packages);
        // With the tls block, the only complaint is about the missing certificate files.
        let errs = super::parse_config(&path, &text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("cert.pem"), "{errs:?}");
    }
}
