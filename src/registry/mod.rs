//! Terraform's registry protocols for this host: service discovery, the provider registry
//! protocol and the module registry protocol. Both read the same OCI origins, through the same
//! metadata cache, verified package store and access rules as the mirrors
//! ([`crate::mirror::MirrorService`] does that part).

pub mod module_package;
pub mod modules;
pub mod providers;

use serde::Serialize;

pub use crate::provider::THIS_HOST as REGISTRY_HOST;

pub const PROVIDERS_PATH: &str = "/v1/providers/";
pub const MODULES_PATH: &str = "/v1/modules/";

/// `/.well-known/terraform.json`: only the services configured.
#[derive(Debug, Serialize)]
pub struct Discovery {
    #[serde(rename = "providers.v1", skip_serializing_if = "Option::is_none")]
    pub providers: Option<&'static str>,
    #[serde(rename = "modules.v1", skip_serializing_if = "Option::is_none")]
    pub modules: Option<&'static str>,
}

impl Discovery {
    pub fn new(providers: bool, modules: bool) -> Discovery {
        Discovery {
            providers: providers.then_some(PROVIDERS_PATH),
            modules: modules.then_some(MODULES_PATH),
        }
    }
}

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Appends `segment` percent-encoded as one URL path segment.
fn push_segment(url: &mut String, segment: &str) {
    url.push('/');
    url.extend(percent_encoding::utf8_percent_encode(segment, SEGMENT));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_only_configured_services() {
        let both = serde_json::to_string(&Discovery::new(true, true)).unwrap();
        assert_eq!(
            both,
            r#"{"providers.v1":"/v1/providers/","modules.v1":"/v1/modules/"}"#
        );
        let modules = serde_json::to_string(&Discovery::new(false, true)).unwrap();
        assert_eq!(modules, r#"{"modules.v1":"/v1/modules/"}"#);
    }
}
