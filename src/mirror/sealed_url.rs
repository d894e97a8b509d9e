//! Download URLs that carry the client's authorization, sealed (XChaCha20-Poly1305) under the
//! server's `query_string_secret` and bound to mirror, repository, digest and an expiry time.
//! Terraform does not send credentials when it downloads a package, so this is how a download
//! made on the client's behalf is authorised by the client's own credential.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const NONCE_LEN: usize = 24;
/// Longest credential we are willing to seal; keeps URLs within common length limits.
const MAX_SEALED_CREDENTIAL: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Tampered, truncated, sealed under another key, or bound to something else.
    #[error("invalid download token")]
    Invalid,
    #[error("download token expired")]
    Expired,
    #[error("credential too long to seal into a URL")]
    TooLong,
}

/// What a sealed token is bound to: using it for anything else fails to open.
pub struct Binding<'a> {
    pub mirror: &'a str,
    pub repository: &'a str,
    pub digest: &'a str,
}

impl Binding<'_> {
    fn associated_data(&self) -> Vec<u8> {
        // NUL cannot occur in any of the parts, so the encoding is unambiguous.
        format!(
            "odtr-download-v1\0{}\0{}\0{}",
            self.mirror, self.repository, self.digest
        )
        .into_bytes()
    }
}

pub struct UrlSealer {
    current: XChaCha20Poly1305,
    /// Keys rotated out: URLs sealed under them still open until they expire.
    previous: Vec<XChaCha20Poly1305>,
    ttl: Duration,
}

impl UrlSealer {
    pub fn new(secret: &[u8; 32], ttl: Duration) -> UrlSealer {
        UrlSealer::with_previous(secret, &[], ttl)
    }

    /// Seals under `secret`; opens under it or any of `previous` (for secret rotation).
    pub fn with_previous(secret: &[u8; 32], previous: &[[u8; 32]], ttl: Duration) -> UrlSealer {
        UrlSealer {
            current: XChaCha20Poly1305::new(secret.into()),
            previous: previous
                .iter()
                .map(|k| XChaCha20Poly1305::new(k.into()))
                .collect(),
            ttl,
        }
    }

    /// The same keys with another lifetime for new URLs (a reload that changed only that).
    pub fn with_ttl(&self, ttl: Duration) -> UrlSealer {
        UrlSealer {
            current: self.current.clone(),
            previous: self.previous.clone(),
            ttl,
        }
    }

    /// A sealer with a random key, for servers configured without a `query_string_secret`
    /// (fine for one instance; several behind a balancer need a shared secret).
    pub fn random(ttl: Duration) -> UrlSealer {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        UrlSealer::new(&key, ttl)
    }

    /// Seals `credential` (an `Authorization` header value, or empty for anonymous).
    pub fn seal(&self, binding: &Binding, credential: &[u8]) -> Result<String, SealError> {
        self.seal_at(binding, credential, SystemTime::now())
    }

    fn seal_at(
        &self,
        binding: &Binding,
        credential: &[u8],
        now: SystemTime,
    ) -> Result<String, SealError> {
        if credential.len() > MAX_SEALED_CREDENTIAL {
            return Err(SealError::TooLong);
        }
        let expires = unix_secs(now) + self.ttl.as_secs().max(1);
        let mut plaintext = Vec::with_capacity(8 + credential.len());
        plaintext.extend_from_slice(&expires.to_be_bytes());
        plaintext.extend_from_slice(credential);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = binding.associated_data();
        let ciphertext = self
            .current
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Invalid)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a token for `binding`, returning the sealed credential (empty for anonymous).
    pub fn open(&self, binding: &Binding, token: &str) -> Result<Vec<u8>, SealError> {
        self.open_at(binding, token, SystemTime::now())
    }

    fn open_at(
        &self,
        binding: &Binding,
        token: &str,
        now: SystemTime,
    ) -> Result<Vec<u8>, SealError> {
        if token.len() > 2 * MAX_SEALED_CREDENTIAL {
            return Err(SealError::Invalid);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| SealError::Invalid)?;
        if raw.len() < NONCE_LEN + 8 {
            return Err(SealError::Invalid);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let aad = binding.associated_data();
        let payload = || Payload {
            msg: ciphertext,
            aad: &aad,
        };
        let plaintext = std::iter::once(&self.current)
            .chain(&self.previous)
            .find_map(|key| key.decrypt(XNonce::from_slice(nonce), payload()).ok())
            .ok_or(SealError::Invalid)?;
        let (expiry, credential) = plaintext.split_at(8);
        let expiry = u64::from_be_bytes(expiry.try_into().map_err(|_| SealError::Invalid)?);
        if unix_secs(now) >= expiry {
            return Err(SealError::Expired);
        }
        Ok(credential.to_vec())
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Binding = Binding {
        mirror: "mirror",
        repository: "tp/registry.terraform.io/acme/foo",
        digest: "sha256:aa",
    };

    #[test]
    fn round_trip_and_binding() {
        let s = UrlSealer::new(&[7; 32], Duration::from_secs(180));
        let t = s.seal(&B, b"Bearer abc").unwrap();
        assert_eq!(s.open(&B, &t).unwrap(), b"Bearer abc");
        assert!(!t.contains("abc"));
        let other_digest = Binding {
            digest: "sha256:bb",
            ..B
        };
        assert_eq!(s.open(&other_digest, &t), Err(SealError::Invalid));
        let other_repo = Binding {
            repository: "x",
            ..B
        };
        assert_eq!(s.open(&other_repo, &t), Err(SealError::Invalid));
        let other_mirror = Binding { mirror: "m2", ..B };
        assert_eq!(s.open(&other_mirror, &t), Err(SealError::Invalid));
        let other_key = UrlSealer::new(&[8; 32], Duration::from_secs(180));
        assert_eq!(other_key.open(&B, &t), Err(SealError::Invalid));
    }

    #[test]
    fn rotated_secrets_still_open_until_dropped() {
        let old = UrlSealer::new(&[1; 32], Duration::from_secs(180));
        let t = old.seal(&B, b"Bearer x").unwrap();
        let rotated = UrlSealer::with_previous(&[2; 32], &[[1; 32]], Duration::from_secs(180));
        assert_eq!(rotated.open(&B, &t).unwrap(), b"Bearer x");
        // New URLs are sealed under the new secret only.
        let fresh = rotated.seal(&B, b"Bearer y").unwrap();
        assert_eq!(old.open(&B, &fresh), Err(SealError::Invalid));
        let dropped = UrlSealer::new(&[2; 32], Duration::from_secs(180));
        assert_eq!(dropped.open(&B, &t), Err(SealError::Invalid));
        assert_eq!(dropped.open(&B, &fresh).unwrap(), b"Bearer y");
    }

    #[test]
    fn tampering_and_expiry() {
        let s = UrlSealer::new(&[7; 32], Duration::from_secs(180));
        let t = s.seal(&B, b"").unwrap();
        let mut chars: Vec<char> = t.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert_eq!(s.open(&B, &tampered), Err(SealError::Invalid));
        assert_eq!(s.open(&B, "!!!"), Err(SealError::Invalid));
        assert_eq!(s.open(&B, ""), Err(SealError::Invalid));
        let later = SystemTime::now() + Duration::from_secs(181);
        assert_eq!(s.open_at(&B, &t, later), Err(SealError::Expired));
        assert!(s
            .open_at(&B, &t, SystemTime::now() + Duration::from_secs(170))
            .is_ok());
    }
}
