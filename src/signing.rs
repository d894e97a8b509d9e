//! OpenPGP signing for the provider registry protocol: the server's key signs the SHA256SUMS
//! documents it builds; `keygen` makes a key pair; `push` checks an author's signature.
//! Terraform (golang.org/x/crypto/openpgp) wants a binary detached v4 signature; RSA keys work.

use std::path::Path;

use pgp::composed::{
    ArmorOptions, Deserializable, DetachedSignature, EncryptionCaps, KeyType,
    SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, Password};

/// Largest key file read; real armored keys are a few KiB.
const MAX_KEY_FILE: u64 = 1 << 20;
/// RSA size `keygen` uses: what gpg defaults to.
pub const DEFAULT_RSA_BITS: u32 = 3072;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_KEY_FILE} bytes; it is not an OpenPGP key")]
    TooLarge { path: String },
    #[error("{path} is not an ASCII-armored OpenPGP private key (as `gpg --export-secret-keys --armor` writes): {reason}")]
    NotASecretKey { path: String, reason: String },
    #[error("{path} cannot sign: {reason} (the key must be unencrypted, with a primary key that may sign)")]
    CannotSign { path: String, reason: String },
    #[error("not an ASCII-armored OpenPGP public key: {0}")]
    NotAPublicKey(String),
    #[error("not an OpenPGP signature: {0}")]
    NotASignature(String),
    #[error("the signature does not verify with the given key")]
    BadSignature,
    #[error("OpenPGP: {0}")]
    Pgp(String),
}

fn pgp_error(e: pgp::errors::Error) -> SigningError {
    SigningError::Pgp(e.to_string())
}

/// A private key that signs SHA256SUMS documents, with its public half as Terraform wants it.
pub struct SigningKey {
    secret: SignedSecretKey,
    /// The public key, ASCII-armored (`signing_keys.gpg_public_keys[].ascii_armor`).
    pub public_armored: String,
    /// The 16-hex-digit key ID, upper case (`key_id`).
    pub key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.key_id)
    }
}

impl SigningKey {
    /// Loads an ASCII-armored, unencrypted private key and checks that it can sign.
    pub fn load(path: &Path) -> Result<SigningKey, SigningError> {
        let shown = path.display().to_string();
        let read_err = |source| SigningError::Read {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        #[cfg(unix)]
        if let Ok(meta) = file.metadata() {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %shown, "the signing key file is readable by other users; `chmod 600` it");
            }
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_KEY_FILE + 1), &mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_KEY_FILE {
            return Err(SigningError::TooLarge { path: shown });
        }
        SigningKey::from_armored(&text).map_err(|e| match e {
            SigningError::NotASecretKey { reason, .. } => SigningError::NotASecretKey {
                path: shown.clone(),
                reason,
            },
            SigningError::CannotSign { reason, .. } => SigningError::CannotSign {
                path: shown.clone(),
                reason,
            },
            other => other,
        })
    }

    pub fn from_armored(text: &str) -> Result<SigningKey, SigningError> {
        let not_secret = |reason: String| SigningError::NotASecretKey {
            path: String::new(),
            reason,
        };
        if !text.contains("PRIVATE KEY BLOCK") {
            return Err(not_secret("no PGP PRIVATE KEY BLOCK in it".into()));
        }
        let (secret, _) =
            SignedSecretKey::from_string(text).map_err(|e| not_secret(e.to_string()))?;
        let public = secret.to_public_key();
        let public_armored = public
            .to_armored_string(ArmorOptions::default())
            .map_err(pgp_error)?;
        let key_id = hex::encode_upper(secret.legacy_key_id().as_ref());
        if !matches!(
            secret.algorithm(),
            pgp::crypto::public_key::PublicKeyAlgorithm::RSA
        ) {
            tracing::warn!(key_id = %key_id, algorithm = ?secret.algorithm(), "the signing key is not RSA: Terraform before 1.1 cannot check its signatures");
        }
        let key = SigningKey {
            secret,
            public_armored,
            key_id,
        };
        // Fail at start, not on the first client: an encrypted key or one that cannot sign.
        let probe = key.sign(b"probe").map_err(|e| SigningError::CannotSign {
            path: String::new(),
            reason: e.to_string(),
        })?;
        verify_detached(&key.public_armored, b"probe", &probe).map_err(|e| {
            SigningError::CannotSign {
                path: String::new(),
                reason: e.to_string(),
            }
        })?;
        Ok(key)
    }

    /// A binary detached signature over `data` (what `gpg --detach-sign` writes).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, SigningError> {
        let sig = DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            &self.secret.primary_key,
            &Password::empty(),
            HashAlgorithm::Sha256,
            data,
        )
        .map_err(pgp_error)?;
        sig.to_bytes().map_err(pgp_error)
    }
}

/// A new RSA key pair for signing, ASCII-armored: `(private, public, key ID)`.
pub fn generate(user_id: &str, bits: u32) -> Result<(String, String, String), SigningError> {
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Rsa(bits))
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id(user_id.into());
    let params = params
        .build()
        .map_err(|e| SigningError::Pgp(e.to_string()))?;
    let secret = params.generate(rand::thread_rng()).map_err(pgp_error)?;
    let private = secret
        .to_armored_string(ArmorOptions::default())
        .map_err(pgp_error)?;
    let public = secret
        .to_public_key()
        .to_armored_string(ArmorOptions::default())
        .map_err(pgp_error)?;
    let key_id = hex::encode_upper(secret.legacy_key_id().as_ref());
    Ok((private, public, key_id))
}

/// An armored public key's ID (16 upper-case hex digits).
pub fn public_key_id(armored: &str) -> Result<String, SigningError> {
    let (key, _) = SignedPublicKey::from_string(armored)
        .map_err(|e| SigningError::NotAPublicKey(e.to_string()))?;
    Ok(hex::encode_upper(key.legacy_key_id().as_ref()))
}

/// Checks a binary (or armored) detached signature over `data` against an armored public
/// key, its primary key or any subkey (gpg keys often sign with a subkey).
pub fn verify_detached(
    public_armored: &str,
    data: &[u8],
    signature: &[u8],
) -> Result<(), SigningError> {
    let (key, _) = SignedPublicKey::from_string(public_armored)
        .map_err(|e| SigningError::NotAPublicKey(e.to_string()))?;
    let sig = if signature.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(signature)
            .map_err(|_| SigningError::NotASignature("armored text is not UTF-8".into()))?;
        DetachedSignature::from_string(text)
            .map(|(s, _)| s)
            .map_err(|e| SigningError::NotASignature(e.to_string()))?
    } else {
        DetachedSignature::from_bytes(signature)
            .map_err(|e| SigningError::NotASignature(e.to_string()))?
    };
    if sig.verify(&key.primary_key, data).is_ok() {
        return Ok(());
    }
    for sub in &key.public_subkeys {
        if sig.verify(&sub.key, data).is_ok() {
            return Ok(());
        }
    }
    Err(SigningError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify() {
        let (private, public, id) = generate("Test <test@example.test>", 2048).unwrap();
        assert_eq!(id.len(), 16);
        let key = SigningKey::from_armored(&private).unwrap();
        assert_eq!(key.key_id, id);
        assert_eq!(public_key_id(&public).unwrap(), id);
        let sig = key.sign(b"hello\n").unwrap();
        verify_detached(&public, b"hello\n", &sig).unwrap();
        assert!(matches!(
            verify_detached(&public, b"hello!\n", &sig),
            Err(SigningError::BadSignature)
        ));
        assert!(SigningKey::from_armored(&public).is_err());
        assert!(SigningKey::from_armored("nonsense").is_err());
    }
}
