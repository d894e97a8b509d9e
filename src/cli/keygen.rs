//! `keygen`: makes an OpenPGP key pair for the provider registry to sign SHA256SUMS with.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::signing::{self, DEFAULT_RSA_BITS};

/// Create an OpenPGP key pair for `provider_registry { signing_key_file = ... }`.
///
/// Writes an RSA key (which Terraform's OpenPGP code verifies) as ASCII armor: the private key
/// unencrypted with mode 0600, and the public key. Existing files are never overwritten.
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (the provider_registry's signing_key_file).
    #[arg(long, value_name = "FILE")]
    pub private_key: PathBuf,

    /// Where to write the public key (what Terraform is given to check signatures).
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,

    /// The key's user ID, conventionally `Name <email>`.
    #[arg(
        long,
        value_name = "USER_ID",
        default_value = "Terraform provider registry <registry@localhost>"
    )]
    pub user_id: String,

    /// RSA key size in bits.
    #[arg(long, default_value_t = DEFAULT_RSA_BITS, value_parser = clap::value_parser!(u32).range(2048..=8192))]
    pub bits: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error(
        "{0} already exists; keygen never overwrites a key (move it away, or choose another name)"
    )]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Signing(#[from] signing::SigningError),
}

/// Generates the key pair and writes both files; returns the key ID.
pub fn run(args: &KeygenArgs) -> Result<String, KeygenError> {
    for p in [&args.private_key, &args.public_key] {
        if p.exists() {
            return Err(KeygenError::Exists(p.clone()));
        }
    }
    let (private, public, key_id) = signing::generate(&args.user_id, args.bits)?;
    write_new(&args.private_key, private.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&args.public_key, public.as_bytes(), 0o644) {
        // Never leave half a key pair behind.
        let _ = std::fs::remove_file(&args.private_key);
        return Err(e);
    }
    Ok(key_id)
}

/// Creates `path` (failing if it exists) with `mode`, and syncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeygenError> {
    let err = |source| KeygenError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeygenError::Exists(path.to_owned())
        } else {
            err(e)
        }
    })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Never leave a half-written key behind.
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(err(e));
    }
    Ok(())
}

/// Entry point from `main` (no configuration file needed).
pub fn main(args: KeygenArgs) -> ExitCode {
    match run(&args) {
        Ok(key_id) => {
            println!(
                "Created key {key_id} ({}):\n  private key: {}\n  public key:  {}\nSet signing_key_file = \"{}\" in the provider_registry block.",
                args.user_id,
                args.private_key.display(),
                args.public_key.display(),
                args.private_key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
