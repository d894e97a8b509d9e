//! Terraform's package hashes: `zh:` (sha256 of the zip) and `h1:` (the "dirhash" of its contents).

use std::io::{Cursor, Read, Seek};

use base64::Engine;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("package is not a valid zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("reading a file in the package: {0}")]
    Io(#[from] std::io::Error),
}

/// `zh:` hash of a package whose sha256 digest (lowercase hex) is already known, as an OCI
/// layer digest is: the two are the same thing.
pub fn zh_from_sha256_hex(hex_digest: &str) -> String {
    format!("zh:{hex_digest}")
}

/// `h1:` hash of a provider package zip, computed exactly as Terraform does: one line
/// `"{sha256 hex}  {name}\n"` per regular file, sorted by name, hashed again and base64'd.
pub fn h1_from_zip(zip_bytes: &[u8]) -> Result<String, HashError> {
    h1_from_reader(Cursor::new(zip_bytes))
}

/// [`h1_from_zip`] for a zip read from a file (or anything seekable), without loading it whole.
pub fn h1_from_reader(reader: impl Read + Seek) -> Result<String, HashError> {
    let mut archive = zip::ZipArchive::new(reader)?;
    let mut lines = Vec::with_capacity(archive.len());
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..archive.len() {
        let mut file = archive.by_index(i)?;
        if file.is_dir() {
            continue;
        }
        let name = file.name().to_owned();
        let mut hasher = Sha256::new();
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        lines.push((name, hex::encode(hasher.finalize())));
    }
    lines.sort();
    let mut summary = Sha256::new();
    for (name, digest) in &lines {
        summary.update(format!("{digest}  {name}\n").as_bytes());
    }
    Ok(format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(summary.finalize())
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut out);
            for (name, data) in files {
                w.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                w.write_all(data).unwrap();
            }
            w.finish().unwrap();
        }
        out.into_inner()
    }

    #[test]
    fn h1_is_order_independent_and_matches_manual_computation() {
        let a = zip_of(&[("b", b"two"), ("a", b"one")]);
        let b = zip_of(&[("a", b"one"), ("b", b"two")]);
        let h = h1_from_zip(&a).unwrap();
        assert_eq!(h, h1_from_zip(&b).unwrap());
        let manual = format!(
            "{}  a\n{}  b\n",
            hex::encode(Sha256::digest(b"one")),
            hex::encode(Sha256::digest(b"two"))
        );
        let expect = format!(
            "h1:{}",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(manual.as_bytes()))
        );
        assert_eq!(h, expect);
    }

    #[test]
    fn h1_rejects_garbage() {
        assert!(h1_from_zip(b"not a zip").is_err());
    }
}
