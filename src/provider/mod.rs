//! Terraform's vocabulary: provider addresses, versions, platforms, package hashes, and how
//! the two OCI layouts describe one provider version.

pub mod constraints;
pub mod hash;
pub mod layout;
pub mod publish;
pub mod requirements;
pub mod sources;

use std::fmt;

/// `HOSTNAME/NAMESPACE/TYPE`, normalised as Terraform sends it in mirror paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderAddress {
    pub hostname: String,
    pub namespace: String,
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("invalid provider hostname {0:?}")]
    Hostname(String),
    #[error("invalid provider namespace {0:?}")]
    Namespace(String),
    #[error("invalid provider type {0:?}")]
    Type(String),
}

impl ProviderAddress {
    pub fn new(
        hostname: &str,
        namespace: &str,
        type_name: &str,
    ) -> Result<ProviderAddress, AddressError> {
        Ok(ProviderAddress {
            hostname: normalize_hostname(hostname)
                .ok_or_else(|| AddressError::Hostname(hostname.to_owned()))?,
            namespace: normalize_label(namespace)
                .ok_or_else(|| AddressError::Namespace(namespace.to_owned()))?,
            type_name: normalize_label(type_name)
                .ok_or_else(|| AddressError::Type(type_name.to_owned()))?,
        })
    }

    /// The OCI repository for this provider under `name_prefix`, named as `naming` says.
    pub fn repository_named(&self, name_prefix: &str, naming: Naming) -> String {
        match naming {
            Naming::WithHostname => self.repository(name_prefix),
            Naming::WithoutHostname => {
                crate::oci::join_repository(name_prefix, &[&self.namespace, &self.type_name])
            }
        }
    }

    /// The OCI repository for this provider under `name_prefix`.
    pub fn repository(&self, name_prefix: &str) -> String {
        if name_prefix.is_empty() {
            format!("{}/{}/{}", self.hostname, self.namespace, self.type_name)
        } else {
            format!(
                "{name_prefix}/{}/{}/{}",
                self.hostname, self.namespace, self.type_name
            )
        }
    }
}

/// How a provider address maps to an OCI repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `NAME_PREFIX/HOSTNAME/NAMESPACE/TYPE`: a mirror serves providers of any host.
    WithHostname,
    /// `NAME_PREFIX/NAMESPACE/TYPE`: a registry's providers belong to this server's host.
    WithoutHostname,
}

/// The versions a list of tags names, sorted, each once (other tags are ignored).
pub fn versions_from_tags(tags: &[String]) -> Vec<semver::Version> {
    let mut versions: Vec<semver::Version> =
        tags.iter().filter_map(|t| version_from_tag(t)).collect();
    versions.sort();
    versions.dedup();
    versions
}

/// The conventional file name of a provider package.
pub fn package_filename(
    type_name: &str,
    version: &semver::Version,
    platform: &TargetPlatform,
) -> String {
    format!("terraform-provider-{type_name}_{version}_{platform}.zip")
}

/// The hostname of providers served by this server's own provider registry. Clients name
/// the server by whatever host they reach it at; nothing depends on it (nor on `Host`), so
/// addresses carry this placeholder, which is never shown.
pub const THIS_HOST: &str = "this-host.invalid";

impl fmt::Display for ProviderAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hostname == THIS_HOST {
            write!(f, "{}/{}", self.namespace, self.type_name)
        } else {
            write!(f, "{}/{}/{}", self.hostname, self.namespace, self.type_name)
        }
    }
}

/// Lower-cases and punycode-normalises a hostname (optionally with `:port`); `None` if invalid.
fn normalize_hostname(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 253 + 6 {
        return None;
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p.parse().ok().filter(|p| *p != 0)?;
            (h, Some(port))
        }
        None => (s, None),
    };
    // Decided on the lower-cased name, so the answer never depends on letter case (the URL
    // parser reads `0X` and `0x` differently when a label looks like a number).
    let lower = host.to_ascii_lowercase();
    let host = lower.as_str();
    // Already normalised (what Terraform sends): skip the IDNA machinery on the hot path.
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !host.split('.').any(|l| l.starts_with("xn--"))
        && host.bytes().any(|b| b.is_ascii_lowercase())
        // A numeric last label reads as an IPv4 address to the full parser, which refuses
        // it: leave those to it, so the answer never depends on letter case.
        && !host
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    let ascii = if plain {
        url::Host::Domain(host.to_owned())
    } else {
        url::Host::parse(host).ok()?
    };
    let host = match ascii {
        url::Host::Domain(d) => d,
        // Terraform provider hostnames are DNS names; IP literals are not valid in addresses.
        _ => return None,
    };
    let ok = host.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if !ok {
        return None;
    }
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// Namespaces and types: letters, digits and dashes, 1-64 characters, compared case-insensitively.
fn normalize_label(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| s.to_ascii_lowercase())
}

/// `os_arch`, e.g. `linux_amd64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetPlatform {
    pub os: String,
    pub arch: String,
}

impl TargetPlatform {
    pub fn parse(s: &str) -> Option<TargetPlatform> {
        let (os, arch) = s.split_once('_')?;
        let word = |w: &str| {
            !w.is_empty()
                && w.len() <= 32
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        (word(os) && word(arch)).then(|| TargetPlatform {
            os: os.to_owned(),
            arch: arch.to_owned(),
        })
    }
}

impl fmt::Display for TargetPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.os, self.arch)
    }
}

/// Provider version ↔ OCI tag. OCI tags cannot hold `+`, so OpenTofu writes it as `_`.
pub fn version_from_tag(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(&tag.replace('_', "+")).ok()
}

pub fn tag_for_version(v: &semver::Version) -> String {
    v.to_string().replace('+', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = ProviderAddress::new("registry.terraform.io", "HashiCorp", "aws").unwrap();
        assert_eq!(a.to_string(), "registry.terraform.io/hashicorp/aws");
        assert_eq!(a.repository("tp"), "tp/registry.terraform.io/hashicorp/aws");
        assert_eq!(a.repository(""), "registry.terraform.io/hashicorp/aws");
        assert!(ProviderAddress::new("example.com:8443", "a", "b").is_ok());
        assert_eq!(
            ProviderAddress::new("Example.COM", "a", "b")
                .unwrap()
                .hostname,
            "example.com"
        );
        assert_eq!(
            ProviderAddress::new("bücher.example", "a", "b")
                .unwrap()
                .hostname,
            "xn--bcher-kva.example"
        );
        for bad_host in [
            "",
            "..",
            "a..b",
            "ex ample.com",
            "127.0.0.1",
            "x:0",
            "x:99999",
            "-a.com",
        ] {
            assert!(
                ProviderAddress::new(bad_host, "a", "b").is_err(),
                "{bad_host}"
            );
        }
        for bad in ["", "a_b", "-a", "a/b", "..", &"a".repeat(65)] {
            assert!(ProviderAddress::new("h.io", bad, "b").is_err(), "{bad}");
            assert!(ProviderAddress::new("h.io", "a", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_and_versions() {
        assert_eq!(version_from_tag("1.2.3").unwrap().to_string(), "1.2.3");
        assert_eq!(
            version_from_tag("1.2.3_build.5").unwrap().to_string(),
            "1.2.3+build.5"
        );
        assert_eq!(
            version_from_tag("1.2.3-beta.1").unwrap().to_string(),
            "1.2.3-beta.1"
        );
        assert!(version_from_tag("latest").is_none());
        assert!(version_from_tag("v1.2.3").is_none());
        assert_eq!(tag_for_version(&"1.0.0+x".parse().unwrap()), "1.0.0_x");
    }

    #[test]
    fn platforms() {
        assert_eq!(
            TargetPlatform::parse("linux_amd64").unwrap().to_string(),
            "linux_amd64"
        );
        assert!(TargetPlatform::parse("linux").is_none());
        assert!(TargetPlatform::parse("Linux_amd64").is_none());
        assert!(TargetPlatform::parse("linux_").is_none());
    }
}
