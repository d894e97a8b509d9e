//! Who may have what. The origin registry is the authority on who may read a repository;
//! this module is the one place that decides which credential goes to the origin for a
//! request, and when data already held (cached metadata, stored packages) may be handed to
//! a client without asking the origin again. docs/security.md explains the model.

use crate::config::ProviderMirrorConfig;
use crate::oci::credentials::{credential_for, CredentialsError};
use crate::oci::Credential;

/// How one mirror decides access.
#[derive(Debug, Clone)]
pub enum MirrorAccess {
    /// Each client's own `Authorization` goes to the origin, and held data is served to a
    /// client only on the origin's word. With `sealed_urls` (`proxy_packages = true`) the
    /// client's credential travels, encrypted, inside its download URLs, because Terraform
    /// sends no credentials with package downloads.
    PerClient { sealed_urls: bool },
    /// `public = true`: the operator vouches that everyone who can reach the server may have
    /// this mirror's data. The server's own credential for the origin (docker config) is used
    /// for every request, and held data is served to every client.
    Public { server: Credential },
}

impl MirrorAccess {
    /// Resolves the server's credential of a public mirror (running a credential helper if the
    /// docker config names one).
    pub fn from_config(config: &ProviderMirrorConfig) -> Result<MirrorAccess, CredentialsError> {
        Ok(if config.public {
            MirrorAccess::Public {
                server: credential_for(&config.origin_url)?,
            }
        } else {
            MirrorAccess::PerClient {
                sealed_urls: config.proxy_packages,
            }
        })
    }

    /// The credential the origin sees for a request from a client presenting `client`.
    pub fn origin_credential(&self, client: Credential) -> Credential {
        match self {
            MirrorAccess::PerClient { .. } => client,
            MirrorAccess::Public { server } => server.clone(),
        }
    }

    /// Whether download URLs carry the client's sealed credential (and are refused without it).
    pub fn sealed_urls(&self) -> bool {
        matches!(self, MirrorAccess::PerClient { sealed_urls: true })
    }

    /// Whether answers differ between clients, so that shared caches must not keep them.
    pub fn answers_are_private(&self) -> bool {
        self.sealed_urls()
    }

    /// Whether a stored (or arriving) blob may go to a client only after the origin confirms
    /// the client may read it from this repository. Blobs are scoped to a repository at the
    /// origin, so a copy counts only if it was fetched for this mirror and repository
    /// (`seen_here`); `same_kind_here` says it was fetched here with the client's kind of
    /// access (anonymous or not). Not needed:
    /// - for a client holding a sealed URL, bound to this mirror, repository and digest and
    ///   issued only after the origin accepted its credential;
    /// - on a public mirror, for a copy seen here;
    /// - for an anonymous client, when an anonymous fetch here got the copy;
    /// - for a credentialed client, when the copy was seen here and the origin accepted this
    ///   very credential for the repository within `auth_ttl` (`accepted_recently`).
    pub fn blob_needs_origin_check(
        &self,
        via_sealed_url: bool,
        client: &Credential,
        seen_here: bool,
        same_kind_here: bool,
        accepted_recently: impl FnOnce() -> bool,
    ) -> bool {
        match self {
            MirrorAccess::PerClient { .. } if via_sealed_url => false,
            MirrorAccess::Public { .. } => !seen_here,
            MirrorAccess::PerClient { .. } => match client {
                Credential::Anonymous => !same_kind_here,
                _ => !(seen_here && accepted_recently()),
            },
        }
    }
}

/// Whether cached metadata may be served to a credential without asking the origin: data
/// fetched anonymously to anyone; data fetched with a credential only to a credential the
/// origin accepted for that repository recently (`accepted_recently`, checked lazily).
pub fn cached_metadata_visible(
    fetched_anonymously: bool,
    accepted_recently: impl FnOnce() -> bool,
) -> bool {
    fetched_anonymously || accepted_recently()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decisions() {
        let sealed = MirrorAccess::PerClient { sealed_urls: true };
        let open = MirrorAccess::PerClient { sealed_urls: false };
        let public = MirrorAccess::Public {
            server: Credential::Basic {
                username: "svc".into(),
                password: "pw".into(),
            },
        };
        let client = Credential::Anonymous;
        assert!(matches!(
            sealed.origin_credential(client.clone()),
            Credential::Anonymous
        ));
        assert!(matches!(
            public.origin_credential(client),
            Credential::Basic { .. }
        ));
        assert!(sealed.sealed_urls() && !open.sealed_urls() && !public.sealed_urls());
        let anon = Credential::Anonymous;
        let token = Credential::PassThrough(http::HeaderValue::from_static("Bearer t"));
        // Anonymous: only an anonymous copy fetched here.
        assert!(open.blob_needs_origin_check(false, &anon, true, false, || true));
        assert!(!open.blob_needs_origin_check(false, &anon, true, true, || false));
        // Credentialed: seen here AND this credential accepted for the repository.
        assert!(open.blob_needs_origin_check(false, &token, true, true, || false));
        assert!(open.blob_needs_origin_check(false, &token, false, false, || true));
        assert!(!open.blob_needs_origin_check(false, &token, true, false, || true));
        // Sealed URLs are the proof; without one, the credential rules apply.
        assert!(!sealed.blob_needs_origin_check(true, &token, false, false, || false));
        assert!(sealed.blob_needs_origin_check(false, &token, false, false, || true));
        // Public mirrors: only copies seen here, whoever asks.
        assert!(!public.blob_needs_origin_check(false, &anon, true, false, || false));
        assert!(public.blob_needs_origin_check(false, &anon, false, false, || false));
        assert!(cached_metadata_visible(true, || unreachable!()));
        assert!(!cached_metadata_visible(false, || false));
        assert!(cached_metadata_visible(false, || true));
    }
}
