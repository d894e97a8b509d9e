//! TLS server configuration from PEM files (rustls with the ring provider), shared by config
//! validation and the HTTP server so both agree on what is acceptable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {source}")]
    CertificateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate file {0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("cannot read private key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("private key file {0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    #[error("the private key in {key} does not fit the certificate in {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

impl TlsError {
    /// Whether the certificate file (rather than the key file) is the one to blame.
    pub fn is_about_certificate(&self) -> bool {
        matches!(
            self,
            TlsError::CertificateFile { .. } | TlsError::NoCertificate(_)
        )
    }
}

pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the certificate chain and key and builds a server config offering HTTP/2 and HTTP/1.1.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::CertificateFile {
        path: cert.to_owned(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::CertificateFile {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_pem = std::fs::read(key).map_err(|source| TlsError::KeyFile {
        path: key.to_owned(),
        source,
    })?;
    let private_key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::KeyFile {
            path: key.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key.to_owned()))?;
    let mismatch = |e: rustls::Error| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(mismatch)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
