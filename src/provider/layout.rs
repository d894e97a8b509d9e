//! The two ways a provider version can be laid out in an OCI registry, both read into one
//! list of [`Package`]s:
//! - **seed** (the Go prototype's): one image manifest, one layer per package, each layer
//!   annotated with the platforms it serves;
//! - **OpenTofu** (1.10+): an image index with one image manifest per platform, each with a
//!   single `archive/zip` layer.

use std::collections::BTreeMap;

use crate::oci::{Descriptor, Digest, ImageIndex, ImageManifest, Manifest, MEDIA_TYPE_EMPTY_JSON};

use super::TargetPlatform;

pub const SEED_CONFIG_MEDIA_TYPE: &str =
    "application/vnd.hashicorp.terraform-provider.config.v1+json";
pub const SEED_LAYER_MEDIA_TYPE: &str = "application/vnd.hashicorp.terraform.provider-package+zip";
pub const SEED_PLATFORMS_ANNOTATION: &str = "io.terraform.target-platforms";

pub const TOFU_INDEX_ARTIFACT_TYPE: &str = "application/vnd.opentofu.provider";
pub const TOFU_TARGET_ARTIFACT_TYPE: &str = "application/vnd.opentofu.provider-target";
pub const TOFU_LAYER_MEDIA_TYPE: &str = "archive/zip";

/// On each package layer (both layouts, written by `push`): the package's `h1:` hash, so a
/// mirror can list `h1:` for every platform without downloading the packages.
pub const H1_ANNOTATION: &str = "io.terraform.package-h1";
/// The standard OCI annotation naming a layer's file; ORAS uses it when pulling.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// One downloadable provider package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub platform: TargetPlatform,
    pub digest: Digest,
    pub size: u64,
    /// The `h1:` hash the publisher recorded in the layer's annotation, if well-formed.
    pub annotated_h1: Option<String>,
}

/// A layer's `io.terraform.package-h1` annotation, if it looks like an `h1:` hash
/// (`h1:` + base64 of 32 bytes); anything else is ignored rather than passed to clients.
fn annotated_h1(layer: &Descriptor) -> Option<String> {
    let v = layer.annotations.get(H1_ANNOTATION)?;
    let b64 = v.strip_prefix("h1:")?;
    let ok = b64.len() == 44
        && b64.ends_with('=')
        && b64[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    ok.then(|| v.clone())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(pub String);

/// What a version's tag points at, once recognised.
#[derive(Debug)]
pub enum VersionLayout {
    /// Seed layout: the packages are all known from the one manifest.
    Seed(Vec<Package>),
    /// OpenTofu layout: per-platform manifests still to be fetched.
    OpenTofu(Vec<(TargetPlatform, Descriptor)>),
}

/// Recognises the layout of a version's manifest, or says why it is not a provider.
pub fn classify(manifest: &Manifest) -> Result<VersionLayout, LayoutError> {
    match manifest {
        Manifest::Image(m) => seed_packages(m).map(VersionLayout::Seed),
        Manifest::Index(i) => opentofu_targets(i).map(VersionLayout::OpenTofu),
    }
}

fn seed_packages(m: &ImageManifest) -> Result<Vec<Package>, LayoutError> {
    let has_seed_layers = m
        .layers
        .iter()
        .any(|l| l.media_type == SEED_LAYER_MEDIA_TYPE);
    if m.config.media_type != SEED_CONFIG_MEDIA_TYPE && !has_seed_layers {
        return Err(LayoutError(format!(
            "image manifest is not a provider package manifest: its config type is {:?} (expected {SEED_CONFIG_MEDIA_TYPE:?}) and no layer has type {SEED_LAYER_MEDIA_TYPE:?}; an OpenTofu-layout version is tagged as an image index instead",
            m.config.media_type
        )));
    }
    let mut by_platform: BTreeMap<TargetPlatform, Package> = BTreeMap::new();
    for layer in m
        .layers
        .iter()
        .filter(|l| l.media_type == SEED_LAYER_MEDIA_TYPE)
    {
        let Some(platforms) = layer.annotations.get(SEED_PLATFORMS_ANNOTATION) else {
            return Err(LayoutError(format!(
                "layer {} has no {SEED_PLATFORMS_ANNOTATION} annotation",
                layer.digest
            )));
        };
        for p in platforms
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let platform = TargetPlatform::parse(p).ok_or_else(|| {
                LayoutError(format!(
                    "layer {} names an invalid platform {p:?}",
                    layer.digest
                ))
            })?;
            let pkg = Package {
                platform: platform.clone(),
                digest: layer.digest.clone(),
                size: layer.size,
                annotated_h1: annotated_h1(layer),
            };
            if let Some(prev) = by_platform.insert(platform.clone(), pkg) {
                if prev.digest != layer.digest {
                    return Err(LayoutError(format!("two layers claim platform {platform}")));
                }
            }
        }
    }
    if by_platform.is_empty() {
        return Err(LayoutError(
            "provider manifest has no package layers".into(),
        ));
    }
    Ok(by_platform.into_values().collect())
}

fn opentofu_targets(i: &ImageIndex) -> Result<Vec<(TargetPlatform, Descriptor)>, LayoutError> {
    if i.artifact_type.as_deref() != Some(TOFU_INDEX_ARTIFACT_TYPE) {
        return Err(LayoutError(format!(
            "image index is not an OpenTofu provider index: its artifactType is {:?} (expected {TOFU_INDEX_ARTIFACT_TYPE:?})",
            i.artifact_type
        )));
    }
    let mut out: BTreeMap<TargetPlatform, Descriptor> = BTreeMap::new();
    for d in &i.manifests {
        // Entries of another artifact type (signatures, attestations) are not packages.
        if d.artifact_type
            .as_deref()
            .is_some_and(|a| a != TOFU_TARGET_ARTIFACT_TYPE)
        {
            continue;
        }
        let Some(p) = &d.platform else {
            return Err(LayoutError(format!(
                "index entry {} has no platform",
                d.digest
            )));
        };
        let platform =
            TargetPlatform::parse(&format!("{}_{}", p.os, p.architecture)).ok_or_else(|| {
                LayoutError(format!(
                    "index entry {} has an invalid platform {}/{}",
                    d.digest, p.os, p.architecture
                ))
            })?;
        if out.insert(platform.clone(), d.clone()).is_some() {
            return Err(LayoutError(format!(
                "two index entries claim platform {platform}"
            )));
        }
    }
    if out.is_empty() {
        return Err(LayoutError("provider index lists no platforms".into()));
    }
    Ok(out.into_iter().collect())
}

/// The package in one OpenTofu per-platform manifest.
pub fn opentofu_package(
    platform: TargetPlatform,
    m: &ImageManifest,
) -> Result<Package, LayoutError> {
    if m.artifact_type
        .as_deref()
        .is_some_and(|a| a != TOFU_TARGET_ARTIFACT_TYPE)
    {
        return Err(LayoutError(format!(
            "{platform} manifest has artifactType {:?}, expected {TOFU_TARGET_ARTIFACT_TYPE:?}",
            m.artifact_type
        )));
    }
    if m.config.media_type != MEDIA_TYPE_EMPTY_JSON && m.artifact_type.is_none() {
        return Err(LayoutError(format!(
            "{platform} manifest is not an OpenTofu provider target"
        )));
    }
    let zips: Vec<&Descriptor> = m
        .layers
        .iter()
        .filter(|l| l.media_type == TOFU_LAYER_MEDIA_TYPE)
        .collect();
    match zips.as_slice() {
        [one] => Ok(Package {
            platform,
            digest: one.digest.clone(),
            size: one.size,
            annotated_h1: annotated_h1(one),
        }),
        [] => Err(LayoutError(format!(
            "{platform} manifest has no {TOFU_LAYER_MEDIA_TYPE:?} layer"
        ))),
        _ => Err(LayoutError(format!(
            "{platform} manifest has several {TOFU_LAYER_MEDIA_TYPE:?} layers"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(media: &str, n: u8) -> String {
        format!(
            r#"{{"mediaType":"{media}","digest":"sha256:{}","size":{n}}}"#,
            format!("{n:02x}").repeat(32)
        )
    }

    #[test]
    fn seed_layout() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[
              {{"mediaType":"{SEED_LAYER_MEDIA_TYPE}","digest":"sha256:{}","size":10,"annotations":{{"{SEED_PLATFORMS_ANNOTATION}":"linux_amd64, linux_arm64"}}}},
              {{"mediaType":"{SEED_LAYER_MEDIA_TYPE}","digest":"sha256:{}","size":11,"annotations":{{"{SEED_PLATFORMS_ANNOTATION}":"darwin_arm64","{H1_ANNOTATION}":"h1:FqpvIzt3j8H/WFgI/DLsi9lYd4gg82/RuwFAIv3QbHA="}}}}]}}"#,
            d(SEED_CONFIG_MEDIA_TYPE, 1),
            "aa".repeat(32),
            "bb".repeat(32)
        );
        let m = Manifest::parse(
            Some("application/vnd.oci.image.manifest.v1+json"),
            body.as_bytes(),
        )
        .unwrap();
        let VersionLayout::Seed(pkgs) = classify(&m).unwrap() else {
            panic!()
        };
        let names: Vec<String> = pkgs.iter().map(|p| p.platform.to_string()).collect();
        assert_eq!(names, ["darwin_arm64", "linux_amd64", "linux_arm64"]);
        assert_eq!(pkgs[1].digest.hex(), "aa".repeat(32));
        assert_eq!(
            pkgs[0].annotated_h1.as_deref(),
            Some("h1:FqpvIzt3j8H/WFgI/DLsi9lYd4gg82/RuwFAIv3QbHA=")
        );
        assert_eq!(pkgs[1].annotated_h1, None);
    }

    #[test]
    fn not_a_provider() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{},"layers":[{}]}}"#,
            d("application/vnd.oci.image.config.v1+json", 1),
            d("application/vnd.oci.image.layer.v1.tar+gzip", 2)
        );
        let m = Manifest::parse(None, body.as_bytes()).unwrap();
        let err = classify(&m).unwrap_err().to_string();
        assert!(err.contains("not a provider package manifest"), "{err}");
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            d("application/vnd.oci.image.manifest.v1+json", 3)
        );
        let m = Manifest::parse(None, idx.as_bytes()).unwrap();
        assert!(classify(&m)
            .unwrap_err()
            .to_string()
            .contains("not an OpenTofu provider index"));
    }

    #[test]
    fn opentofu_layout() {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","artifactType":"{TOFU_INDEX_ARTIFACT_TYPE}","manifests":[
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":100,"artifactType":"{TOFU_TARGET_ARTIFACT_TYPE}","platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            "cc".repeat(32)
        );
        let m = Manifest::parse(
            Some("application/vnd.oci.image.index.v1+json"),
            idx.as_bytes(),
        )
        .unwrap();
        let VersionLayout::OpenTofu(targets) = classify(&m).unwrap() else {
            panic!()
        };
        assert_eq!(targets[0].0.to_string(), "linux_amd64");
        let target = format!(
            r#"{{"schemaVersion":2,"artifactType":"{TOFU_TARGET_ARTIFACT_TYPE}","config":{{"mediaType":"{MEDIA_TYPE_EMPTY_JSON}","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[{}]}}"#,
            d(TOFU_LAYER_MEDIA_TYPE, 7)
        );
        let Manifest::Image(tm) = Manifest::parse(None, target.as_bytes()).unwrap() else {
            panic!()
        };
        let p = opentofu_package(targets[0].0.clone(), &tm).unwrap();
        assert_eq!(p.size, 7);
        assert_eq!(p.annotated_h1, None);
    }
}
