//! Which provider versions a user needs: from command-line specs (`ADDR[@CONSTRAINTS]`),
//! from `.terraform.lock.hcl` files, and from the `required_providers` of a configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hcl_edit::expr::{Expression, ObjectKey};
use hcl_edit::structure::{Block, BlockLabel, Body, Structure};

use super::constraints::{ConstraintError, Constraints};
use super::ProviderAddress;

/// Terraform's default provider registry hostname.
pub const DEFAULT_HOSTNAME: &str = "registry.terraform.io";

#[derive(Debug, thiserror::Error)]
pub enum RequirementsError {
    #[error("{0:?} is not a provider address (HOSTNAME/NAMESPACE/TYPE or NAMESPACE/TYPE)")]
    Address(String),
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
}

/// What to fetch for one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub address: ProviderAddress,
    pub constraints: Constraints,
    /// Hashes a lock file recorded (checked against what is cached).
    pub locked_hashes: Vec<String>,
}

/// `registry.terraform.io/hashicorp/aws`, or the short `hashicorp/aws`.
pub fn parse_address(s: &str) -> Result<ProviderAddress, RequirementsError> {
    let bad = || RequirementsError::Address(s.to_owned());
    let parts: Vec<&str> = s.trim().split('/').collect();
    match parts.as_slice() {
        [ns, ty] => ProviderAddress::new(DEFAULT_HOSTNAME, ns, ty).map_err(|_| bad()),
        [host, ns, ty] => ProviderAddress::new(host, ns, ty).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// `ADDR` or `ADDR@CONSTRAINTS`.
pub fn parse_spec(s: &str) -> Result<Requirement, RequirementsError> {
    let (addr, constraints) = match s.split_once('@') {
        Some((a, c)) => (a, Constraints::parse(c)?),
        None => (s, Constraints::any()),
    };
    Ok(Requirement {
        address: parse_address(addr)?,
        constraints,
        locked_hashes: Vec::new(),
    })
}

fn parse_hcl(path: &Path) -> Result<Body, RequirementsError> {
    let text = std::fs::read_to_string(path).map_err(|source| RequirementsError::Read {
        path: path.to_owned(),
        source,
    })?;
    if let Some(at) = crate::config::nesting::too_deep(&text) {
        let line = text[..at].matches('\n').count() + 1;
        return Err(RequirementsError::Syntax {
            path: path.to_owned(),
            message: format!(
                "line {line}: nested more than {} levels deep",
                crate::config::nesting::MAX_NESTING
            ),
        });
    }
    crate::config::nesting::parse_body(&text).map_err(|e| RequirementsError::Syntax {
        path: path.to_owned(),
        message: format!("line {}: {}", e.location().line(), e.message()),
    })
}

fn string_value(e: &Expression) -> Option<String> {
    match e {
        Expression::String(s) => Some(s.value().clone()),
        _ => None,
    }
}

fn blocks<'a>(body: &'a Body, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.iter().filter_map(move |s| match s {
        Structure::Block(b) if b.ident.as_str() == ident => Some(b),
        _ => None,
    })
}

/// The `constraints` a `.terraform.lock.hcl` records, per provider (`lock` keeps them).
pub fn lock_file_constraints(
    path: &Path,
) -> Result<BTreeMap<ProviderAddress, String>, RequirementsError> {
    let body = parse_hcl(path)?;
    let mut out = BTreeMap::new();
    for block in blocks(&body, "provider") {
        let (Some(label), Some(c)) = (
            first_label(block),
            attribute(&block.body, "constraints").and_then(string_value),
        ) else {
            continue;
        };
        if let Ok(addr) = parse_address(&label) {
            out.insert(addr, c);
        }
    }
    Ok(out)
}

/// The providers of a `.terraform.lock.hcl`, each pinned to its exact version.
pub fn from_lock_file(path: &Path) -> Result<Vec<Requirement>, RequirementsError> {
    let body = parse_hcl(path)?;
    let syntax = |message: String| RequirementsError::Syntax {
        path: path.to_owned(),
        message,
    };
    let mut out = Vec::new();
    for block in blocks(&body, "provider") {
        let addr = match block.labels.first() {
            Some(BlockLabel::String(s)) => parse_address(s.value())?,
            _ => return Err(syntax("a provider block without its address label".into())),
        };
        let mut version = None;
        let mut hashes = Vec::new();
        for s in block.body.iter() {
            let Structure::Attribute(a) = s else { continue };
            match a.key.as_str() {
                "version" => version = string_value(&a.value),
                "hashes" => {
                    if let Expression::Array(arr) = &a.value {
                        hashes.extend(arr.iter().filter_map(string_value));
                    }
                }
                _ => {}
            }
        }
        let version = version.ok_or_else(|| syntax(format!("provider {addr} has no version")))?;
        out.push(Requirement {
            address: addr,
            constraints: Constraints::parse(&format!("= {version}"))?,
            locked_hashes: hashes,
        });
    }
    Ok(out)
}

/// The providers a configuration needs, as `terraform providers lock` counts them: the
/// `required_providers` of every `.tf` and `.tf.json` file in `dir` and in the modules it
/// calls (local `./` and `../` sources, and the modules `terraform init` or `terraform get`
/// installed under `.terraform/modules`), plus providers only implied by `provider`,
/// `resource` and `data` blocks. The constraints of all modules are combined per provider;
/// within a module, an override file's entry replaces the one it names.
///
/// Modules are followed from the root by their keys (`net`, `net.subnets`), as Terraform
/// loads them: an installed module from its directory in `modules.json`, a local one from its
/// source path. A remote module that is not installed cannot be read; it is listed in
/// `not_installed`.
pub fn from_config_dir(dir: &Path) -> Result<ConfigProviders, RequirementsError> {
    let installed = installed_modules(dir);
    let mut found: BTreeMap<ProviderAddress, Constraints> = BTreeMap::new();
    let mut not_installed = Vec::new();
    let mut todo = vec![(dir.to_owned(), String::new())];
    let mut seen: Vec<PathBuf> = Vec::new();
    while let Some((module, key)) = todo.pop() {
        let canonical = module.canonicalize().unwrap_or_else(|_| module.clone());
        if seen.contains(&canonical) {
            continue;
        }
        seen.push(canonical);
        for (name, source) in read_module(&module, &mut found)? {
            let child = match key.is_empty() {
                true => name,
                false => format!("{key}.{name}"),
            };
            if let Some(d) = installed.get(&child) {
                todo.push((d.clone(), child));
            } else if source.starts_with("./") || source.starts_with("../") {
                todo.push((module.join(&source), child));
            } else {
                not_installed.push(format!("module.{child} ({source})"));
            }
        }
    }
    Ok(ConfigProviders {
        requirements: found
            .into_iter()
            .map(|(address, constraints)| Requirement {
                address,
                constraints,
                locked_hashes: Vec::new(),
            })
            .collect(),
        not_installed,
    })
}

/// What a configuration needs.
#[derive(Debug)]
pub struct ConfigProviders {
    pub requirements: Vec<Requirement>,
    /// Remote module calls `terraform init` or `terraform get` has not installed: their
    /// providers could not be read.
    pub not_installed: Vec<String>,
}

/// Module key → directory, from `.terraform/modules/modules.json` (installed remote and
/// local modules; directories relative to the root module).
fn installed_modules(root: &Path) -> BTreeMap<String, PathBuf> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(rename = "Modules", default)]
        modules: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "Key", default)]
        key: String,
        #[serde(rename = "Dir", default)]
        dir: String,
    }
    let path = root.join(".terraform").join("modules").join("modules.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return BTreeMap::new();
    };
    match serde_json::from_str::<Manifest>(&text) {
        Ok(m) => m
            .modules
            .into_iter()
            .filter(|e| !e.key.is_empty() && !e.dir.is_empty())
            .map(|e| (e.key, root.join(e.dir)))
            .filter(|(_, d)| d.is_dir())
            .collect(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the installed modules; only local module sources are followed");
            BTreeMap::new()
        }
    }
}

/// One entry of a `required_providers` block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequiredEntry {
    local_name: String,
    source: Option<String>,
    version: Option<String>,
}

/// What one configuration file (`.tf` or `.tf.json`) says about providers and modules.
#[derive(Debug, Default)]
struct FileProviders {
    /// Each `required_providers` block of the file.
    required: Vec<Vec<RequiredEntry>>,
    /// `module` blocks: name → `source`.
    modules: Vec<(String, Option<String>)>,
    /// `provider` blocks: (local name, alias) → the deprecated `version` argument, which
    /// Terraform still adds to the provider's constraints.
    providers: Vec<((String, String), Option<String>)>,
    /// `resource` and `data` blocks: (kind, type, name) → the local name of their
    /// `provider` argument.
    resources: Vec<((String, String, String), Option<String>)>,
}

/// Adds a file's blocks to a module's, by address. An override file's block changes the
/// argument it sets in the block it names (and adds a block that names none, which
/// Terraform refuses anyway).
fn merge_blocks<K: Ord, V>(
    into: &mut BTreeMap<K, Option<V>>,
    blocks: Vec<(K, Option<V>)>,
    overriding: bool,
) {
    for (key, value) in blocks {
        match into.get_mut(&key) {
            Some(slot) if overriding => {
                if value.is_some() {
                    *slot = value;
                }
            }
            _ => {
                into.insert(key, value);
            }
        }
    }
}

/// Whether Terraform reads `name` as a configuration file: `.tf` or `.tf.json`, not hidden
/// nor an editor's backup.
fn is_config_file(name: &str) -> bool {
    (name.ends_with(".tf") || name.ends_with(".tf.json"))
        && !name.starts_with('.')
        && !name.ends_with('~')
        && !(name.starts_with('#') && name.ends_with('#'))
}

/// `override.tf`, `x_override.tf` and their `.tf.json` twins, which Terraform merges over the
/// other files instead of reading them alongside.
fn is_override_file(name: &str) -> bool {
    let stem = name
        .strip_suffix(".tf.json")
        .or_else(|| name.strip_suffix(".tf"))
        .unwrap_or(name);
    stem == "override" || stem.ends_with("_override")
}

/// Adds one module's provider requirements to `found`; returns the modules it calls, as
/// (name, source).
fn read_module(
    dir: &Path,
    found: &mut BTreeMap<ProviderAddress, Constraints>,
) -> Result<Vec<(String, String)>, RequirementsError> {
    let read_err = |source| RequirementsError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| is_config_file(&n.to_string_lossy()))
                && p.is_file()
        })
        .collect();
    files.sort();
    // Override files last, as Terraform merges them over the others.
    files.sort_by_key(|f| {
        f.file_name()
            .is_some_and(|n| is_override_file(&n.to_string_lossy()))
    });
    let mut local_names: BTreeMap<String, (ProviderAddress, Constraints)> = BTreeMap::new();
    let mut modules = BTreeMap::new();
    let mut providers = BTreeMap::new();
    let mut resources = BTreeMap::new();
    let mut required_blocks = 0;
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let overriding = is_override_file(&name);
        let content = match name.ends_with(".json") {
            true => json_file_providers(file)?,
            false => hcl_file_providers(&parse_hcl(file)?),
        };
        for block in content.required {
            if !overriding {
                required_blocks += 1;
                if required_blocks > 1 {
                    // As Terraform: "A module may have only one required providers
                    // configuration."
                    return Err(RequirementsError::Syntax {
                        path: file.clone(),
                        message: format!(
                            "a second required_providers block in the module {}; Terraform allows one per module",
                            dir.display()
                        ),
                    });
                }
            }
            for entry in block {
                let addr = match &entry.source {
                    Some(s) => parse_address(s)?,
                    None => implied_address(&entry.local_name)?,
                };
                let c = match &entry.version {
                    Some(v) => Constraints::parse(v)?,
                    None => Constraints::any(),
                };
                // An override file's entry replaces the one it names.
                local_names.insert(entry.local_name, (addr, c));
            }
        }
        merge_blocks(&mut modules, content.modules, overriding);
        merge_blocks(&mut providers, content.providers, overriding);
        merge_blocks(&mut resources, content.resources, overriding);
    }
    let mut add = |addr: &ProviderAddress, c: &Constraints| {
        let entry = found.entry(addr.clone()).or_default();
        *entry = std::mem::take(entry).and(c);
    };
    for (addr, c) in local_names.values() {
        add(addr, c);
    }
    for ((name, _alias), version) in &providers {
        let Some(version) = version else { continue };
        let addr = match local_names.get(name) {
            Some((addr, _)) => addr.clone(),
            None => implied_address(name)?,
        };
        add(&addr, &Constraints::parse(version)?);
    }
    // Providers used without being required: `provider "NAME"`, and the prefix of each
    // resource and data source type (or its `provider` argument).
    let used = providers.into_keys().map(|(name, _)| name).chain(
        resources
            .into_iter()
            .map(|((_, ty, _), explicit)| explicit.unwrap_or_else(|| type_prefix(&ty))),
    );
    for name in used {
        // `terraform` is Terraform's built-in provider (terraform_remote_state), never installed.
        if name.is_empty() || name == "terraform" || local_names.contains_key(&name) {
            continue;
        }
        found.entry(implied_address(&name)?).or_default();
    }
    Ok(modules
        .into_iter()
        .filter_map(|(name, source)| Some((name, source?)))
        .collect())
}

/// The provider a local name stands for when no `required_providers` entry gives its
/// source: Terraform assumes `hashicorp/<local name>`.
fn implied_address(local_name: &str) -> Result<ProviderAddress, RequirementsError> {
    parse_address(&format!("hashicorp/{local_name}"))
}

/// The local name in a provider reference written as a string: `"aws.west"` or
/// `"${aws.west}"` → `aws`.
fn quoted_reference(text: &str) -> String {
    let text = text.trim().trim_start_matches("${").trim_end_matches('}');
    text.split('.').next().unwrap_or_default().to_owned()
}

/// The providers and module calls of a `.tf` file.
fn hcl_file_providers(body: &Body) -> FileProviders {
    let mut out = FileProviders::default();
    for tf in blocks(body, "terraform") {
        for rp in blocks(&tf.body, "required_providers") {
            let mut entries = Vec::new();
            for s in rp.body.iter() {
                let Structure::Attribute(a) = s else { continue };
                let (source, version) = match &a.value {
                    // Legacy form: `aws = "~> 5.0"`.
                    Expression::String(v) => (None, Some(v.value().clone())),
                    Expression::Object(obj) => {
                        let mut source = None;
                        let mut version = None;
                        for (k, v) in obj.iter() {
                            let key = match k {
                                ObjectKey::Ident(i) => i.as_str().to_owned(),
                                ObjectKey::Expression(e) => string_value(e).unwrap_or_default(),
                            };
                            match key.as_str() {
                                "source" => source = string_value(v.expr()),
                                "version" => version = string_value(v.expr()),
                                _ => {}
                            }
                        }
                        (source, version)
                    }
                    _ => continue,
                };
                entries.push(RequiredEntry {
                    local_name: a.key.as_str().to_owned(),
                    source,
                    version,
                });
            }
            out.required.push(entries);
        }
    }
    for call in blocks(body, "module") {
        if let Some(name) = first_label(call) {
            let source = attribute(&call.body, "source").and_then(string_value);
            out.modules.push((name, source));
        }
    }
    for p in blocks(body, "provider") {
        if let Some(name) = first_label(p) {
            let alias = attribute(&p.body, "alias")
                .and_then(string_value)
                .unwrap_or_default();
            let version = attribute(&p.body, "version").and_then(string_value);
            out.providers.push(((name, alias), version));
        }
    }
    for kind in ["resource", "data"] {
        for r in blocks(body, kind) {
            let (Some(ty), Some(name)) = (first_label(r), label(r, 1)) else {
                continue;
            };
            let explicit = attribute(&r.body, "provider").and_then(provider_reference);
            out.resources.push(((kind.to_owned(), ty, name), explicit));
        }
    }
    out
}

/// The local provider name a resource type implies: `aws_instance` → `aws`.
fn type_prefix(resource_type: &str) -> String {
    resource_type
        .split('_')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A JSON value whose objects keep every key, in order, repeated ones too: Terraform's JSON
/// syntax reads a repeated block type or label as one more block.
#[derive(Debug)]
enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    String(String),
    /// Numbers, booleans and null: nothing a provider requirement is made of.
    Other,
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = m.next_entry::<String, Json>()? {
                    entries.push(entry);
                }
                Ok(Json::Object(entries))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element::<Json>()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_owned()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Other)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Json {
    /// The bodies of the blocks this value stands for: one object, or an array of them.
    fn bodies(&self) -> Vec<&[(String, Json)]> {
        match self {
            Json::Object(o) => vec![o.as_slice()],
            Json::Array(a) => a
                .iter()
                .filter_map(|v| match v {
                    Json::Object(o) => Some(o.as_slice()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// (label, value) pairs of a level keyed by labels (an object, or an array of objects),
    /// `//` comments left out.
    fn labelled(&self) -> Vec<(&str, &Json)> {
        self.bodies()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k != "//")
            .map(|(k, v)| (k.as_str(), v))
            .collect()
    }

    fn text(&self) -> Option<String> {
        match self {
            Json::String(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// Every value of `key` in a block body (a repeated key is another block).
fn all<'a>(body: &'a [(String, Json)], key: &'a str) -> impl Iterator<Item = &'a Json> + 'a {
    body.iter().filter(move |(k, _)| k == key).map(|(_, v)| v)
}

/// The first string value of argument `key` in a block body.
fn text_arg(body: &[(String, Json)], key: &str) -> Option<String> {
    all(body, key).find_map(Json::text)
}

/// The providers and module calls of a `.tf.json` file, read as Terraform's JSON syntax maps
/// blocks: a block type's value is an object (or an array of objects) keyed by the labels in
/// turn, a repeated key is one more block, and the key `//` is a comment.
fn json_file_providers(path: &Path) -> Result<FileProviders, RequirementsError> {
    let syntax = |message: String| RequirementsError::Syntax {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| RequirementsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let root: Json =
        serde_json::from_str(&text).map_err(|e| syntax(format!("line {}: {e}", e.line())))?;
    let roots = root.bodies();
    if roots.is_empty() {
        return Err(syntax(
            "a .tf.json file must hold a JSON object (or an array of objects)".into(),
        ));
    }
    let mut out = FileProviders::default();
    for body in roots {
        for tf in all(body, "terraform").flat_map(Json::bodies) {
            for rp in all(tf, "required_providers").flat_map(Json::bodies) {
                let mut entries = Vec::new();
                for (local_name, v) in rp.iter().filter(|(k, _)| k != "//") {
                    let (source, version) = match v {
                        Json::String(version) => (None, Some(version.clone())),
                        Json::Object(o) => (text_arg(o, "source"), text_arg(o, "version")),
                        _ => continue,
                    };
                    entries.push(RequiredEntry {
                        local_name: local_name.clone(),
                        source,
                        version,
                    });
                }
                out.required.push(entries);
            }
        }
        for (name, v) in all(body, "module").flat_map(Json::labelled) {
            for call in v.bodies() {
                out.modules
                    .push((name.to_owned(), text_arg(call, "source")));
            }
        }
        for (name, v) in all(body, "provider").flat_map(Json::labelled) {
            for config in v.bodies() {
                let alias = text_arg(config, "alias").unwrap_or_default();
                out.providers
                    .push(((name.to_owned(), alias), text_arg(config, "version")));
            }
        }
        for kind in ["resource", "data"] {
            for (ty, named) in all(body, kind).flat_map(Json::labelled) {
                for (name, v) in named.labelled() {
                    for r in v.bodies() {
                        // `"provider": "google.beta"` (a reference, written as a string).
                        let explicit = text_arg(r, "provider").map(|r| quoted_reference(&r));
                        let key = (kind.to_owned(), ty.to_owned(), name.to_owned());
                        out.resources.push((key, explicit));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The value of a block's attribute `name`.
fn attribute<'a>(body: &'a Body, name: &str) -> Option<&'a Expression> {
    body.iter().find_map(|s| match s {
        Structure::Attribute(a) if a.key.as_str() == name => Some(&a.value),
        _ => None,
    })
}

fn first_label(b: &Block) -> Option<String> {
    label(b, 0)
}

fn label(b: &Block, index: usize) -> Option<String> {
    match b.labels.get(index)? {
        BlockLabel::String(s) => Some(s.value().clone()),
        BlockLabel::Ident(i) => Some(i.as_str().to_owned()),
    }
}

/// The local name in a `provider = NAME` or `provider = NAME.ALIAS` argument.
fn provider_reference(e: &Expression) -> Option<String> {
    match e {
        Expression::Variable(v) => Some(v.as_str().to_owned()),
        // Provider names HCL parses as literals: `provider = null.other`.
        Expression::Null(_) => Some("null".to_owned()),
        Expression::Bool(b) => Some(b.value().to_string()),
        // The quoted form of Terraform 0.11, which 1.x still accepts: `provider = "aws.west"`.
        Expression::String(s) => Some(quoted_reference(s.value())),
        Expression::Traversal(t) => provider_reference(&t.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let r = parse_spec("hashicorp/aws@~> 5.0").unwrap();
        assert_eq!(r.address.to_string(), "registry.terraform.io/hashicorp/aws");
        assert_eq!(r.constraints.to_string(), "~> 5.0");
        let r = parse_spec("example.com/acme/foo").unwrap();
        assert!(r.constraints.is_any());
        assert!(parse_spec("aws").is_err());
        assert!(parse_spec("a/b/c/d").is_err());
        assert!(parse_spec("a/b@>= x").is_err());
    }

    #[test]
    fn lock_files_and_config_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(".terraform.lock.hcl");
        std::fs::write(
            &lock,
            r#"# This file is maintained automatically by "terraform init".
provider "registry.terraform.io/acme/foo" {
  version     = "1.0.0"
  constraints = "1.0.0"
  hashes = [
    "h1:abc=",
    "zh:0123",
  ]
}
"#,
        )
        .unwrap();
        let locked = from_lock_file(&lock).unwrap();
        assert_eq!(locked.len(), 1);
        assert_eq!(
            locked[0].address.to_string(),
            "registry.terraform.io/acme/foo"
        );
        assert!(locked[0].constraints.allows(&semver::Version::new(1, 0, 0)));
        assert!(!locked[0].constraints.allows(&semver::Version::new(1, 0, 1)));
        assert_eq!(locked[0].locked_hashes, ["h1:abc=", "zh:0123"]);

        std::fs::write(
            dir.path().join("main.tf"),
            r#"terraform {
  required_providers {
    foo = { source = "acme/foo", version = ">= 1.0" }
    aws = "~> 5.0"
  }
}
"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("versions.tf"),
            "terraform {\n  required_providers {\n    foo = {\n      source  = \"registry.terraform.io/acme/foo\"\n      version = \"< 2.0\"\n    }\n  }\n}\n",
        )
        .unwrap();
        // Two required_providers blocks in one module: refused, as Terraform refuses them.
        let err = from_config_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("versions.tf") && err.contains("required_providers"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("versions.tf")).unwrap();
        let reqs = from_config_dir(dir.path()).unwrap().requirements;
        let by: BTreeMap<String, String> = reqs
            .iter()
            .map(|r| (r.address.to_string(), r.constraints.to_string()))
            .collect();
        assert_eq!(by["registry.terraform.io/acme/foo"], ">= 1.0");
        assert_eq!(by["registry.terraform.io/hashicorp/aws"], "~> 5.0");
    }

    /// Writes `text` to `root/rel`, creating directories.
    fn writer(root: &Path) -> impl Fn(&str, &str) + '_ {
        move |rel, text| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    /// The providers `by` (address → constraints) holds are exactly `expected`, sorted.
    fn assert_providers(by: &BTreeMap<String, String>, expected: &[&str]) {
        let names: Vec<&str> = by.keys().map(String::as_str).collect();
        assert_eq!(names, expected, "{by:?}");
    }

    /// address → constraints of a configuration directory.
    fn required(dir: &Path) -> BTreeMap<String, String> {
        from_config_dir(dir)
            .unwrap()
            .requirements
            .iter()
            .map(|r| (r.address.to_string(), r.constraints.to_string()))
            .collect()
    }

    #[test]
    fn json_configurations_read_as_terraform_maps_blocks() {
        let root = tempfile::tempdir().unwrap();
        let write = writer(root.path());
        write(
            "main.tf.json",
            r#"{
  "//": "generated",
  "terraform": [{
    "required_providers": {
      "//": "pinned",
      "foo": {"source": "acme/foo", "version": ">= 1.2"},
      "aws": "~> 5.0"
    }
  }],
  "module": {"net": {"source": "./net"}},
  "provider": {"google": [{}, {"alias": "beta"}]},
  "resource": {
    "random_id": {"a": {}},
    "other_thing": {"b": {"provider": "google.beta"}},
    "bar_thing": {"c": [{"provider": "${foo}"}]}
  },
  "data": {"terraform_remote_state": {"s": {}}, "http_thing": {"d": {}}}
}"#,
        );
        write(
            "net/versions.tf.json",
            r#"{"terraform": {"required_providers": {"foo": {"source": "acme/foo", "version": "~> 1"}}}}"#,
        );
        // Not configuration files.
        write(".hidden.tf.json", "not json");
        write("main.tf.json~", "not json");
        write("notes.json", "not json");
        let by = required(root.path());
        assert_providers(
            &by,
            &[
                "registry.terraform.io/acme/foo",
                "registry.terraform.io/hashicorp/aws",
                "registry.terraform.io/hashicorp/google",
                "registry.terraform.io/hashicorp/http",
                "registry.terraform.io/hashicorp/random",
            ],
        );
        let foo = Constraints::parse(&by["registry.terraform.io/acme/foo"]).unwrap();
        assert_eq!(foo.normalized(), "~> 1.0, >= 1.2.0");
        assert_eq!(by["registry.terraform.io/hashicorp/aws"], "~> 5.0");

        // Syntax errors name the file and the line.
        write("broken.tf.json", "{\n  \"terraform\": [\n}");
        let err = from_config_dir(root.path()).unwrap_err().to_string();
        assert!(
            err.contains("broken.tf.json") && err.contains("line 3"),
            "{err}"
        );
        write("broken.tf.json", "3");
        let err = from_config_dir(root.path()).unwrap_err().to_string();
        assert!(err.contains("a JSON object"), "{err}");
    }

    #[test]
    fn json_blocks_may_repeat_and_come_in_arrays_at_every_level() {
        // The forms Terraform's JSON decoder accepts (checked with `terraform providers`):
        // a root array of objects, arrays at label levels, repeated keys.
        let root = tempfile::tempdir().unwrap();
        let write = writer(root.path());
        write(
            "a.tf.json",
            r#"{"provider": [{"google": {}}], "resource": [{"random_id": {"a": {}}}],
                "data": {"http_x": [{"d": {}}]}, "provider": {"null": {}}}"#,
        );
        write(
            "b.tf.json",
            r#"[{"resource": {"tls_key": [{"k": {}}]}}, {"module": [{"net": {"source": "./net"}}]},
                {"provider": {"aws": {"version": "~> 4.0"}}}]"#,
        );
        write(
            "net/main.tf",
            "provider \"dns\" {\n  version = \">= 3.0\"\n}\n",
        );
        // A directory named like a configuration file is not one.
        std::fs::create_dir_all(root.path().join("sub.tf")).unwrap();
        let by = required(root.path());
        assert_providers(
            &by,
            &[
                "registry.terraform.io/hashicorp/aws",
                "registry.terraform.io/hashicorp/dns",
                "registry.terraform.io/hashicorp/google",
                "registry.terraform.io/hashicorp/http",
                "registry.terraform.io/hashicorp/null",
                "registry.terraform.io/hashicorp/random",
                "registry.terraform.io/hashicorp/tls",
            ],
        );
        // The deprecated `version` of a provider block still constrains it.
        assert_eq!(by["registry.terraform.io/hashicorp/aws"], "~> 4.0");
        assert_eq!(by["registry.terraform.io/hashicorp/dns"], ">= 3.0");
    }

    #[test]
    fn override_files_replace_required_provider_entries() {
        let root = tempfile::tempdir().unwrap();
        let write = writer(root.path());
        write(
            "main.tf",
            r#"terraform {
  required_providers {
    foo = { source = "acme/foo", version = ">= 1.0" }
    aws = { source = "hashicorp/aws", version = "~> 4.0" }
  }
}
"#,
        );
        write(
            "override.tf",
            "terraform {\n  required_providers {\n    foo = { source = \"acme/foo\", version = \"~> 2.1\" }\n  }\n}\n",
        );
        write(
            "pins_override.tf.json",
            r#"{"terraform": {"required_providers": {"aws": {"source": "hashicorp/aws", "version": "5.1.0"}}}}"#,
        );
        // Not a second required_providers block: overrides merge over the first.
        let by = required(root.path());
        assert_eq!(by["registry.terraform.io/acme/foo"], "~> 2.1");
        assert_eq!(by["registry.terraform.io/hashicorp/aws"], "5.1.0");
    }

    #[test]
    fn provider_references_in_every_form_terraform_accepts() {
        // `terraform providers` 1.0.3 lists acme/foo and hashicorp/null only.
        let root = tempfile::tempdir().unwrap();
        let write = writer(root.path());
        write(
            "main.tf",
            r#"terraform {
  required_providers {
    corp = { source = "acme/foo" }
  }
}
provider "corp" { alias = "eu" }
resource "zzz_thing" "x" { provider = "corp.eu" }
resource "dns_a_record_set" "y" { provider = null }
data "http_thing" "z" { provider = null.other }
"#,
        );
        let by = required(root.path());
        assert_providers(
            &by,
            &[
                "registry.terraform.io/acme/foo",
                "registry.terraform.io/hashicorp/null",
            ],
        );
    }

    #[test]
    fn override_files_change_the_arguments_of_the_blocks_they_name() {
        // What `terraform providers` 1.0.3 reports for this directory: google, aws ~> 5.0,
        // and module.m (from ./b) needing tls.
        let root = tempfile::tempdir().unwrap();
        let write = writer(root.path());
        write(
            "main.tf",
            "resource \"random_id\" \"a\" {}\nmodule \"m\" { source = \"./a\" }\nprovider \"aws\" { version = \"~> 4.0\" }\n",
        );
        write(
            "override.tf",
            "resource \"random_id\" \"a\" { provider = google }\nmodule \"m\" { source = \"./b\" }\nprovider \"aws\" { version = \"~> 5.0\" }\n",
        );
        write("a/main.tf", "resource \"dns_a_record_set\" \"x\" {}\n");
        write("b/main.tf", "resource \"tls_private_key\" \"x\" {}\n");
        let by = required(root.path());
        assert_providers(
            &by,
            &[
                "registry.terraform.io/hashicorp/aws",
                "registry.terraform.io/hashicorp/google",
                "registry.terraform.io/hashicorp/tls",
            ],
        );
        assert_eq!(by["registry.terraform.io/hashicorp/aws"], "~> 5.0");
    }

    #[test]
    fn config_dirs_include_called_modules_and_implied_providers() {
        let root = tempfile::tempdir().unwrap();
        let write = writer(root.path());
        write(
            "main.tf",
            r#"terraform {
  required_providers {
    foo = { source = "acme/foo", version = ">= 1.2" }
  }
}
module "net" { source = "./modules/net" }
module "remote" { source = "acme/remote/aws" }
module "later" { source = "acme/later/aws" }
resource "foo_thing" "a" {}
resource "random_id" "b" {}
data "terraform_remote_state" "c" {}
provider "google" {}
resource "other_thing" "d" { provider = google.beta }
"#,
        );
        write(
            "modules/net/main.tf",
            r#"terraform {
  required_providers {
    foo = { source = "acme/foo", version = "~> 1" }
    bar = { source = "acme/bar", version = "0.1.0" }
  }
}
module "loop" { source = "../net" }
"#,
        );
        // A remote module, as `terraform get` installs it.
        write(
            ".terraform/modules/remote/main.tf",
            "terraform {\n  required_providers {\n    baz = { source = \"acme/baz\" }\n  }\n}\n",
        );
        write(
            ".terraform/modules/modules.json",
            r#"{"Modules":[{"Key":"","Source":"","Dir":"."},{"Key":"net","Source":"./modules/net","Dir":"modules/net"},{"Key":"remote","Source":"registry.terraform.io/acme/remote/aws","Version":"1.0.0","Dir":".terraform/modules/remote"},{"Key":"gone","Source":"registry.terraform.io/acme/gone/aws","Version":"1.0.0","Dir":".terraform/modules/gone"}]}"#,
        );
        // Installed once, no longer called: not read.
        write(
            ".terraform/modules/gone/main.tf",
            "terraform {\n  required_providers {\n    gone = { source = \"acme/gone\" }\n  }\n}\n",
        );
        let found = from_config_dir(root.path()).unwrap();
        assert_eq!(found.not_installed, ["module.later (acme/later/aws)"]);
        let reqs = found.requirements;
        let by: BTreeMap<String, String> = reqs
            .iter()
            .map(|r| (r.address.to_string(), r.constraints.to_string()))
            .collect();
        assert_providers(
            &by,
            &[
                "registry.terraform.io/acme/bar",
                "registry.terraform.io/acme/baz",
                "registry.terraform.io/acme/foo",
                "registry.terraform.io/hashicorp/google",
                "registry.terraform.io/hashicorp/random",
            ],
        );
        let foo = Constraints::parse(&by["registry.terraform.io/acme/foo"]).unwrap();
        assert_eq!(foo.normalized(), "~> 1.0, >= 1.2.0");
        assert_eq!(by["registry.terraform.io/acme/bar"], "0.1.0");
    }
}
