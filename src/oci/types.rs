//! Manifest and index documents (OCI image spec, and Docker schema 2 equivalents).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Digest;

pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";

/// The `Accept` header for manifest requests: everything we can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A plain descriptor: no artifact type, annotations or platform.
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.clone(),
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// OCI 1.1: the manifest this one refers to (signatures name what they sign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Box<Descriptor>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A parsed manifest document of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl Manifest {
    /// The media type to serve the document with: its own `mediaType`, else the OCI type of
    /// its kind.
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image(m) => m.media_type.as_deref().unwrap_or(MEDIA_TYPE_OCI_MANIFEST),
            Manifest::Index(i) => i.media_type.as_deref().unwrap_or(MEDIA_TYPE_OCI_INDEX),
        }
    }

    /// Parses `body`, deciding the kind from the response's `Content-Type` and, when that is
    /// vague, from the document's own `mediaType` or shape.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, String> {
        let declared = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim().to_owned())
            .filter(|c| is_index_type(c) || is_manifest_type(c));
        let kind = match declared {
            Some(c) => c,
            None => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Probe {
                    media_type: Option<String>,
                    manifests: Option<serde_json::Value>,
                }
                let probe: Probe = serde_json::from_slice(body)
                    .map_err(|e| format!("manifest is not valid JSON: {e}"))?;
                match probe.media_type {
                    Some(m) if is_index_type(&m) || is_manifest_type(&m) => m,
                    _ if probe.manifests.is_some() => MEDIA_TYPE_OCI_INDEX.to_owned(),
                    _ => MEDIA_TYPE_OCI_MANIFEST.to_owned(),
                }
            }
        };
        if is_index_type(&kind) {
            serde_json::from_slice(body)
                .map(Manifest::Index)
                .map_err(|e| format!("invalid image index: {e}"))
        } else {
            serde_json::from_slice(body)
                .map(Manifest::Image)
                .map_err(|e| format!("invalid image manifest: {e}"))
        }
    }
}

pub fn is_index_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

pub fn is_manifest_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_MANIFEST || media_type == MEDIA_TYPE_DOCKER_MANIFEST
}

#[derive(Debug, Deserialize)]
pub struct TagList {
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}
