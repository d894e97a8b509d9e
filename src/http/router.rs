//! Request paths → routes. Every segment is percent-decoded and checked here, so handlers
//! only ever see well-formed names.

use crate::oci::Digest;
use crate::provider::{AddressError, ProviderAddress, TargetPlatform};
use crate::registry::modules::ModuleAddress;
use crate::registry::REGISTRY_HOST;

/// Longest request path parsed at all; the configured limit (`max_path_length`) is lower.
pub const MAX_PATH_LEN: usize = 65_536;

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Home,
    Metrics,
    Healthz,
    Readyz,
    MirrorIndex {
        mirror: String,
        addr: ProviderAddress,
    },
    MirrorVersion {
        mirror: String,
        addr: ProviderAddress,
        version: semver::Version,
    },
    MirrorDownload {
        mirror: String,
        addr: ProviderAddress,
        digest: Digest,
    },
    /// The OCI Distribution pull API (`/v2/...`).
    Registry(RegistryRoute),
    /// `/.well-known/terraform.json`: which registry protocols this host speaks.
    Discovery,
    /// The provider registry protocol (`/v1/providers/...`).
    Providers(ProviderRoute),
    /// The module registry protocol (`/v1/modules/...`).
    Modules(ModuleRoute),
}

/// `/v1/providers/NAMESPACE/TYPE/...`. Addresses carry [`REGISTRY_HOST`]: the host is ours.
#[derive(Debug, PartialEq, Eq)]
pub enum ProviderRoute {
    Versions {
        addr: ProviderAddress,
    },
    Download {
        addr: ProviderAddress,
        version: semver::Version,
        platform: TargetPlatform,
    },
    /// The SHA256SUMS of the version whose manifest has this digest, or its signature.
    Sums {
        addr: ProviderAddress,
        version: semver::Version,
        manifest: Digest,
        signature: bool,
    },
    Package {
        addr: ProviderAddress,
        digest: Digest,
    },
}

/// `/v1/modules/NAMESPACE/NAME/SYSTEM/...`.
#[derive(Debug, PartialEq, Eq)]
pub enum ModuleRoute {
    Versions {
        module: ModuleAddress,
    },
    Download {
        module: ModuleAddress,
        version: semver::Version,
    },
    Package {
        module: ModuleAddress,
        digest: Digest,
    },
}

/// `/v2/` paths. Repository names hold slashes, so the endpoint is found from the end.
#[derive(Debug, PartialEq, Eq)]
pub enum RegistryRoute {
    Base,
    Tags {
        name: String,
    },
    Manifest {
        name: String,
        reference: String,
    },
    Blob {
        name: String,
        digest: Digest,
    },
    /// Upload and other write endpoints: refused as unsupported.
    Write,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such endpoint")]
    NotFound,
    #[error("request path is longer than {0} bytes")]
    TooLong(usize),
    #[error("malformed request path: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("{0:?} is not a semantic version")]
    Version(String),
    #[error("{0:?} is not a sha256 digest")]
    Digest(String),
    #[error("invalid module address: {0}")]
    Module(String),
    #[error("{0:?} is not a platform (OS and architecture)")]
    Platform(String),
}

impl Route {
    /// `/metrics`, `/healthz`, `/readyz`: for operators, served by the admin listener when
    /// there is one.
    pub fn is_operational(&self) -> bool {
        matches!(self, Route::Metrics | Route::Healthz | Route::Readyz)
    }

    /// A short name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Home => "home",
            Route::Metrics => "metrics",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::MirrorIndex { .. } => "index",
            Route::MirrorVersion { .. } => "version",
            Route::MirrorDownload { .. } => "download",
            Route::Discovery => "discovery",
            Route::Providers(r) => match r {
                ProviderRoute::Versions { .. } => "provider_versions",
                ProviderRoute::Download { .. } => "provider_download",
                ProviderRoute::Sums { .. } => "provider_shasums",
                ProviderRoute::Package { .. } => "provider_package",
            },
            Route::Modules(r) => match r {
                ModuleRoute::Versions { .. } => "module_versions",
                ModuleRoute::Download { .. } => "module_download",
                ModuleRoute::Package { .. } => "module_package",
            },
            Route::Registry(r) => match r {
                RegistryRoute::Base => "v2_base",
                RegistryRoute::Tags { .. } => "v2_tags",
                RegistryRoute::Manifest { .. } => "v2_manifest",
                RegistryRoute::Blob { .. } => "v2_blob",
                RegistryRoute::Write => "v2_write",
            },
        }
    }
}

pub fn route(path: &str) -> Result<Route, RouteError> {
    if path.len() > MAX_PATH_LEN {
        return Err(RouteError::TooLong(MAX_PATH_LEN));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(RouteError::Malformed("path must start with /"));
    };
    if rest.is_empty() {
        return Ok(Route::Home);
    }
    if rest == "v2" {
        return Ok(Route::Registry(RegistryRoute::Base));
    }
    if let Some(v2) = rest.strip_prefix("v2/") {
        return registry_route(v2).map(Route::Registry);
    }
    let segments = rest
        .split('/')
        .map(decode_segment)
        .collect::<Result<Vec<_>, _>>()?;
    let seg: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
    match seg.as_slice() {
        ["metrics"] => Ok(Route::Metrics),
        ["healthz"] => Ok(Route::Healthz),
        ["readyz"] => Ok(Route::Readyz),
        [".well-known", "terraform.json"] => Ok(Route::Discovery),
        ["v1", "providers", rest @ ..] => provider_route(rest).map(Route::Providers),
        ["v1", "modules", rest @ ..] => module_route(rest).map(Route::Modules),
        [_mirror] | [_mirror, ""] => Ok(Route::Home),
        [mirror, host, ns, ty, file] => {
            let addr = ProviderAddress::new(host, ns, ty)?;
            let mirror = (*mirror).to_owned();
            if *file == "index.json" {
                return Ok(Route::MirrorIndex { mirror, addr });
            }
            let Some(v) = file.strip_suffix(".json") else {
                return Err(RouteError::NotFound);
            };
            let version =
                semver::Version::parse(v).map_err(|_| RouteError::Version(v.to_owned()))?;
            Ok(Route::MirrorVersion {
                mirror,
                addr,
                version,
            })
        }
        [mirror, host, ns, ty, "download", "sha256", hex, filename] => {
            let addr = ProviderAddress::new(host, ns, ty)?;
            let digest = Digest::from_sha256_hex(hex)
                .ok_or_else(|| RouteError::Digest((*hex).to_owned()))?;
            if !filename.ends_with(".zip") {
                return Err(RouteError::NotFound);
            }
            Ok(Route::MirrorDownload {
                mirror: (*mirror).to_owned(),
                addr,
                digest,
            })
        }
        _ => Err(RouteError::NotFound),
    }
}

fn version(v: &str) -> Result<semver::Version, RouteError> {
    semver::Version::parse(v).map_err(|_| RouteError::Version(v.to_owned()))
}

fn digest(hex: &str) -> Result<Digest, RouteError> {
    Digest::from_sha256_hex(hex).ok_or_else(|| RouteError::Digest(hex.to_owned()))
}

fn provider_route(seg: &[&str]) -> Result<ProviderRoute, RouteError> {
    let addr = |ns: &str, ty: &str| ProviderAddress::new(REGISTRY_HOST, ns, ty);
    match seg {
        [ns, ty, "versions"] => Ok(ProviderRoute::Versions {
            addr: addr(ns, ty)?,
        }),
        [ns, ty, "download", "sha256", hex, file] if file.ends_with(".zip") => {
            Ok(ProviderRoute::Package {
                addr: addr(ns, ty)?,
                digest: digest(hex)?,
            })
        }
        [ns, ty, v, "download", os, arch] => Ok(ProviderRoute::Download {
            addr: addr(ns, ty)?,
            version: version(v)?,
            platform: TargetPlatform::parse(&format!("{os}_{arch}"))
                .ok_or_else(|| RouteError::Platform(format!("{os}_{arch}")))?,
        }),
        [ns, ty, v, "sha256", hex, file] => {
            let signature = if file.ends_with("SHA256SUMS.sig") {
                true
            } else if file.ends_with("SHA256SUMS") {
                false
            } else {
                return Err(RouteError::NotFound);
            };
            Ok(ProviderRoute::Sums {
                addr: addr(ns, ty)?,
                version: version(v)?,
                manifest: digest(hex)?,
                signature,
            })
        }
        _ => Err(RouteError::NotFound),
    }
}

fn module_route(seg: &[&str]) -> Result<ModuleRoute, RouteError> {
    let module = |ns: &str, name: &str, system: &str| {
        ModuleAddress::new(ns, name, system).map_err(RouteError::Module)
    };
    match seg {
        [ns, name, system, "versions"] => Ok(ModuleRoute::Versions {
            module: module(ns, name, system)?,
        }),
        [ns, name, system, "download", "sha256", hex, file] if file.ends_with(".zip") => {
            Ok(ModuleRoute::Package {
                module: module(ns, name, system)?,
                digest: digest(hex)?,
            })
        }
        [ns, name, system, v, "download"] => Ok(ModuleRoute::Download {
            module: module(ns, name, system)?,
            version: version(v)?,
        }),
        _ => Err(RouteError::NotFound),
    }
}

fn registry_route(path: &str) -> Result<RegistryRoute, RouteError> {
    let name = |n: &str| {
        if crate::oci::is_valid_repository_name(n) {
            Ok(n.to_owned())
        } else {
            Err(RouteError::Malformed("invalid repository name"))
        }
    };
    if path.is_empty() {
        return Ok(RegistryRoute::Base);
    }
    if let Some(n) = path.strip_suffix("/tags/list") {
        return Ok(RegistryRoute::Tags { name: name(n)? });
    }
    // The endpoint is read from the end: repository names may hold `manifests` or `blobs`.
    let Some((rest, last)) = path.rsplit_once('/') else {
        return Err(RouteError::NotFound);
    };
    if let Some(n) = rest.strip_suffix("/manifests") {
        let valid = crate::oci::is_valid_tag(last) || Digest::parse(last).is_some();
        if !valid {
            return Err(RouteError::Malformed("invalid tag or digest"));
        }
        return Ok(RegistryRoute::Manifest {
            name: name(n)?,
            reference: last.to_owned(),
        });
    }
    if rest.ends_with("/blobs/uploads") || (rest.ends_with("/blobs") && last == "uploads") {
        return Ok(RegistryRoute::Write);
    }
    if let Some(n) = rest.strip_suffix("/blobs") {
        let digest = Digest::parse(last).ok_or_else(|| RouteError::Digest(last.to_owned()))?;
        return Ok(RegistryRoute::Blob {
            name: name(n)?,
            digest,
        });
    }
    Err(RouteError::NotFound)
}

/// Borrowed when there is nothing to decode, which is the usual case.
fn decode_segment(raw: &str) -> Result<std::borrow::Cow<'_, str>, RouteError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| RouteError::Malformed("path is not UTF-8"))?;
    if decoded == "." || decoded == ".." || decoded.contains(['/', '\\', '\0']) {
        return Err(RouteError::Malformed(
            "path segments must not be '.', '..' or contain slashes",
        ));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/").unwrap(), Route::Home);
        assert_eq!(route("/mirror/").unwrap(), Route::Home);
        let Route::MirrorIndex { mirror, addr } =
            route("/mirror/registry.terraform.io/hashicorp/aws/index.json").unwrap()
        else {
            panic!()
        };
        assert_eq!(mirror, "mirror");
        assert_eq!(addr.to_string(), "registry.terraform.io/hashicorp/aws");
        let Route::MirrorVersion { version, .. } = route("/m/h.io/a/b/1.2.3%2Bx.json").unwrap()
        else {
            panic!()
        };
        assert_eq!(version.to_string(), "1.2.3+x");
        let hex = "ab".repeat(32);
        let Route::MirrorDownload { digest, .. } =
            route(&format!("/m/h.io/a/b/download/sha256/{hex}/f.zip")).unwrap()
        else {
            panic!()
        };
        assert_eq!(digest.hex(), hex);
    }

    #[test]
    fn registry_routes() {
        assert_eq!(route("/.well-known/terraform.json"), Ok(Route::Discovery));
        let foo = ProviderAddress::new(REGISTRY_HOST, "acme", "foo").unwrap();
        assert_eq!(
            route("/v1/providers/Acme/foo/versions"),
            Ok(Route::Providers(ProviderRoute::Versions {
                addr: foo.clone()
            }))
        );
        assert_eq!(
            route("/v1/providers/acme/foo/1.2.0/download/linux/amd64"),
            Ok(Route::Providers(ProviderRoute::Download {
                addr: foo.clone(),
                version: semver::Version::new(1, 2, 0),
                platform: TargetPlatform::parse("linux_amd64").unwrap(),
            }))
        );
        let hex = "ab".repeat(32);
        assert_eq!(
            route(&format!(
                "/v1/providers/acme/foo/1.2.0/sha256/{hex}/SHA256SUMS.sig"
            )),
            Ok(Route::Providers(ProviderRoute::Sums {
                addr: foo.clone(),
                version: semver::Version::new(1, 2, 0),
                manifest: Digest::from_sha256_hex(&hex).unwrap(),
                signature: true,
            }))
        );
        assert_eq!(
            route(&format!(
                "/v1/providers/acme/foo/download/sha256/{hex}/x.zip"
            )),
            Ok(Route::Providers(ProviderRoute::Package {
                addr: foo,
                digest: Digest::from_sha256_hex(&hex).unwrap(),
            }))
        );
        let net = ModuleAddress::new("acme", "net", "aws").unwrap();
        assert_eq!(
            route("/v1/modules/acme/net/aws/versions"),
            Ok(Route::Modules(ModuleRoute::Versions {
                module: net.clone()
            }))
        );
        assert_eq!(
            route("/v1/modules/acme/net/aws/1.0.0/download"),
            Ok(Route::Modules(ModuleRoute::Download {
                module: net.clone(),
                version: semver::Version::new(1, 0, 0),
            }))
        );
        assert_eq!(
            route(&format!(
                "/v1/modules/acme/net/aws/download/sha256/{hex}/m.zip"
            )),
            Ok(Route::Modules(ModuleRoute::Package {
                module: net,
                digest: Digest::from_sha256_hex(&hex).unwrap(),
            }))
        );
    }

    #[test]
    fn rejects_bad_paths() {
        assert_eq!(
            route("/m/h.io/a/b/nope.json"),
            Err(RouteError::Version("nope".into()))
        );
        assert!(matches!(
            route("/m/h.io/a/b/1.0.0.txt"),
            Err(RouteError::NotFound)
        ));
        assert!(matches!(
            route("/m/h..io/a/b/index.json"),
            Err(RouteError::Address(_))
        ));
        assert!(matches!(
            route("/m/h.io/../b/index.json"),
            Err(RouteError::Malformed(_))
        ));
        assert!(matches!(
            route("/m/h.io/%2e%2e/b/index.json"),
            Err(RouteError::Malformed(_))
        ));
        assert!(matches!(
            route("/m/h.io/a%2fb/b/index.json"),
            Err(RouteError::Malformed(_))
        ));
        assert!(matches!(
            route("/m/h.io/a/b/download/sha256/xyz/f.zip"),
            Err(RouteError::Digest(_))
        ));
        assert_eq!(route("/v2/"), Ok(Route::Registry(RegistryRoute::Base)));
        assert_eq!(
            route("/v2/tp/registry.terraform.io/acme/foo/tags/list"),
            Ok(Route::Registry(RegistryRoute::Tags {
                name: "tp/registry.terraform.io/acme/foo".into()
            }))
        );
        assert_eq!(
            route("/v2/a/b/manifests/1.0.0"),
            Ok(Route::Registry(RegistryRoute::Manifest {
                name: "a/b".into(),
                reference: "1.0.0".into()
            }))
        );
        let hex = "a".repeat(64);
        assert_eq!(
            route(&format!("/v2/a/blobs/sha256:{hex}")),
            Ok(Route::Registry(RegistryRoute::Blob {
                name: "a".into(),
                digest: Digest::from_sha256_hex(&hex).unwrap()
            }))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/"),
            Ok(Route::Registry(RegistryRoute::Write))
        );
        assert!(route("/v2/A/tags/list").is_err());
        assert!(route("/v2/a/manifests/..").is_err());
        assert!(route("/v2/a/blobs/sha256:zz").is_err());
        assert!(matches!(
            route(&format!("/{}", "a".repeat(70_000))),
            Err(RouteError::TooLong(MAX_PATH_LEN))
        ));
        assert!(matches!(
            route("/m/%ff/a/b/index.json"),
            Err(RouteError::Malformed(_))
        ));
        assert!(matches!(route("/a/b/c"), Err(RouteError::NotFound)));
        assert!(matches!(
            route("/v1/providers/acme/foo/nope/download/linux/amd64"),
            Err(RouteError::Version(_))
        ));
        assert!(matches!(
            route("/v1/modules/acme/net/aws/1.0.0/download/x"),
            Err(RouteError::NotFound)
        ));
        assert!(matches!(
            route("/v1/modules/ac%20me/net/aws/versions"),
            Err(RouteError::Module(_))
        ));
        assert!(matches!(route("relative"), Err(RouteError::Malformed(_))));
    }
}
