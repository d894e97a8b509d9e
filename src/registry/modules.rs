//! The module registry protocol: module `HOST/NAMESPACE/NAME/SYSTEM` at version V is the OCI
//! repository `NAME_PREFIX/NAMESPACE/NAME/SYSTEM`, tag V, in OpenTofu's module package layout
//! (one image manifest, artifactType `application/vnd.opentofu.modulepkg`, one `archive/zip`
//! layer). Downloads point at the zip on this server, served from the verified cache.

use std::sync::Arc;

use serde::Serialize;

use super::push_segment;
use crate::metadata::Cached;
use crate::mirror::{MirrorError, MirrorService};
use crate::oci::{join_repository, Credential, Digest, Manifest};
use crate::provider::{tag_for_version, versions_from_tags};

pub const MODULE_ARTIFACT_TYPE: &str = "application/vnd.opentofu.modulepkg";
pub const MODULE_LAYER_MEDIA_TYPE: &str = "archive/zip";

/// `NAMESPACE/NAME/SYSTEM`, lower-cased (OCI repository names are).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleAddress {
    pub namespace: String,
    pub name: String,
    pub system: String,
}

impl ModuleAddress {
    pub fn new(namespace: &str, name: &str, system: &str) -> Result<ModuleAddress, String> {
        let label = |what: &str, s: &str, separators: bool| {
            let ok = !s.is_empty()
                && s.len() <= 64
                && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || (separators && (b == b'-' || b == b'_'))
                })
                // OCI repository components allow `_` only singly and not next to `-`.
                && !s.contains("__")
                && !s.contains("_-")
                && !s.contains("-_");
            if ok {
                Ok(s.to_ascii_lowercase())
            } else if separators {
                Err(format!("module {what} {s:?} must be 1-64 letters, digits, '-' or '_', starting and ending with a letter or digit"))
            } else {
                Err(format!(
                    "module {what} {s:?} must be 1-64 letters and digits"
                ))
            }
        };
        Ok(ModuleAddress {
            namespace: label("namespace", namespace, true)?,
            name: label("name", name, true)?,
            system: label("system", system, false)?,
        })
    }

    /// `NAMESPACE/NAME/SYSTEM`, also with this server's host in front (`HOST/NS/NAME/SYSTEM`).
    pub fn parse(s: &str) -> Result<ModuleAddress, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [ns, name, system] | [_, ns, name, system] => ModuleAddress::new(ns, name, system),
            _ => Err(format!(
                "{s:?} is not a module address; expected NAMESPACE/NAME/SYSTEM, e.g. acme/network/aws"
            )),
        }
    }

    pub fn repository(&self, name_prefix: &str) -> String {
        join_repository(name_prefix, &[&self.namespace, &self.name, &self.system])
    }
}

impl std::fmt::Display for ModuleAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.name, self.system)
    }
}

/// `GET .../versions`: `{"modules":[{"versions":[{"version":"1.0.0"}]}]}`.
#[derive(Debug, Serialize)]
pub struct VersionsDocument {
    pub modules: [ModuleVersions; 1],
}

#[derive(Debug, Serialize)]
pub struct ModuleVersions {
    pub versions: Vec<VersionEntry>,
}

#[derive(Debug, Serialize)]
pub struct VersionEntry {
    pub version: String,
}

/// The configured `module_registry`.
pub struct ModuleRegistry {
    origin: Arc<MirrorService>,
}

impl ModuleRegistry {
    pub fn new(origin: Arc<MirrorService>) -> ModuleRegistry {
        ModuleRegistry { origin }
    }

    pub fn origin(&self) -> &Arc<MirrorService> {
        &self.origin
    }

    pub fn repository(&self, module: &ModuleAddress) -> String {
        module.repository(&self.origin.config.name_prefix)
    }

    pub async fn versions(
        &self,
        module: &ModuleAddress,
        client: &Credential,
    ) -> Result<Cached<VersionsDocument>, MirrorError> {
        let tags = self
            .origin
            .tags_for(
                &self.repository(module),
                client,
                || MirrorError::Unknown(format!("module {module}")),
                || module.to_string(),
            )
            .await?;
        let versions = versions_from_tags(&tags.value);
        Ok(Cached {
            value: VersionsDocument {
                modules: [ModuleVersions {
                    versions: versions
                        .iter()
                        .map(|v| VersionEntry {
                            version: v.to_string(),
                        })
                        .collect(),
                }],
            },
            age: tags.age,
            stale: tags.stale,
            anonymous: tags.anonymous,
        })
    }

    /// The digest of a version's module zip.
    pub async fn package_digest(
        &self,
        module: &ModuleAddress,
        version: &semver::Version,
        client: &Credential,
    ) -> Result<Cached<Digest>, MirrorError> {
        let m = self
            .origin
            .tagged_manifest(
                &self.repository(module),
                &tag_for_version(version),
                client,
                || MirrorError::UnknownVersion(format!("module {module}"), version.clone()),
                || format!("{module}@{version}"),
            )
            .await?;
        let digest = module_layer(&m.value.1).map_err(|reason| MirrorError::NotAModule {
            what: format!("module {module} {version}"),
            reason,
        })?;
        Ok(Cached {
            value: digest,
            age: m.age,
            stale: m.stale,
            anonymous: m.anonymous,
        })
    }

    /// Where Terraform downloads a version's zip (`X-Terraform-Get`): a path on this
    /// server, sealed with the client's credential when the origin needs one.
    pub fn download_location(
        &self,
        module: &ModuleAddress,
        version: &semver::Version,
        digest: &Digest,
        client: &Credential,
    ) -> Result<String, MirrorError> {
        let mut url = String::from("/v1/modules");
        for s in [&module.namespace, &module.name, &module.system] {
            push_segment(&mut url, s);
        }
        url.push_str("/download/sha256/");
        url.push_str(digest.hex());
        push_segment(
            &mut url,
            &format!("{}-{}-{version}.zip", module.name, module.system),
        );
        url.push_str(
            &self
                .origin
                .seal_query(&self.repository(module), digest.as_str(), client)?,
        );
        Ok(url)
    }
}

/// The zip layer of a module package manifest.
pub fn module_layer(manifest: &Manifest) -> Result<Digest, String> {
    let Manifest::Image(m) = manifest else {
        return Err("an image index, not an image manifest".into());
    };
    let declared = m.artifact_type.as_deref() == Some(MODULE_ARTIFACT_TYPE)
        || m.config.media_type == MODULE_ARTIFACT_TYPE;
    if !declared {
        return Err(format!("artifactType is not {MODULE_ARTIFACT_TYPE}"));
    }
    match m.layers.as_slice() {
        [layer] if layer.media_type == MODULE_LAYER_MEDIA_TYPE => Ok(layer.digest.clone()),
        _ => Err(format!(
            "it must have exactly one layer, of mediaType {MODULE_LAYER_MEDIA_TYPE}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let m = ModuleAddress::parse("Acme/net_work/aws").unwrap();
        assert_eq!(m.to_string(), "acme/net_work/aws");
        assert_eq!(m.repository("modules"), "modules/acme/net_work/aws");
        assert_eq!(m.repository(""), "acme/net_work/aws");
        assert_eq!(
            ModuleAddress::parse("127.0.0.1:8443/acme/net/aws").unwrap(),
            ModuleAddress::new("acme", "net", "aws").unwrap()
        );
        for bad in [
            "acme/net",
            "acme/-net/aws",
            "acme/net/aws-x",
            "acme/n__et/aws",
            "acme/n_-et/aws",
            "ac me/net/aws",
            "acme/net/",
        ] {
            assert!(ModuleAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn module_layers() {
        let doc = |artifact: &str, layers: &str| {
            Manifest::parse(
                Some("application/vnd.oci.image.manifest.v1+json"),
                format!(
                    r#"{{"schemaVersion":2,"artifactType":"{artifact}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:{e}","size":2}},"layers":[{layers}]}}"#,
                    e = "4".repeat(64)
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let zip = format!(
            r#"{{"mediaType":"archive/zip","digest":"sha256:{}","size":3}}"#,
            "a".repeat(64)
        );
        assert_eq!(
            module_layer(&doc(MODULE_ARTIFACT_TYPE, &zip))
                .unwrap()
                .hex(),
            "a".repeat(64)
        );
        assert!(module_layer(&doc("application/x", &zip)).is_err());
        assert!(module_layer(&doc(MODULE_ARTIFACT_TYPE, &format!("{zip},{zip}"))).is_err());
        assert!(module_layer(&doc(MODULE_ARTIFACT_TYPE, "")).is_err());
    }
}
