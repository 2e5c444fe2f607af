//! A run's media files read for upload: each checked against the size and
//! SHA-256 its row recorded before a byte of it leaves the machine, so a
//! file that changed or was swapped after recording is never sent as the
//! recorded one. The uploader (sync/) reads media through here only.

use crate::error::{Error, Result};
use sha2::Digest as _;
use std::path::{Path, PathBuf};

/// Files up to this size are read whole and checked before sending; larger
/// ones are checked while they stream ([`Checker`]).
pub const SMALL_FILE: u64 = 8 * 1024 * 1024;

/// The error for a media file that is not what the run recorded.
pub fn damaged(path: &Path, why: impl Into<String>) -> Error {
    Error::Damaged {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Checks a media file's bytes as they are read in order: its length and
/// SHA-256 against the recorded ones, once the end is reached.
pub struct Checker {
    path: PathBuf,
    digest: String,
    len: u64,
    hasher: sha2::Sha256,
    seen: u64,
}

impl Checker {
    /// A checker for `path`, recorded with `len` bytes and SHA-256 `digest`.
    pub fn new(path: &Path, digest: &str, len: u64) -> Checker {
        Checker {
            path: path.to_path_buf(),
            digest: digest.to_string(),
            len,
            hasher: sha2::Sha256::new(),
            seen: 0,
        }
    }

    /// Takes the next bytes read.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.seen += bytes.len() as u64;
    }

    /// Whether more bytes were read than were recorded (no need to read on).
    pub fn past_end(&self) -> bool {
        self.seen > self.len
    }

    /// At the end of the file: whether what was read is what was recorded.
    pub fn finish(&self) -> Result<()> {
        let got = crate::format::hex(&self.hasher.clone().finalize());
        if self.seen != self.len || got != self.digest {
            return Err(damaged(
                &self.path,
                format!(
                    "changed since it was recorded ({} bytes, digest {got}; recorded {}, {})",
                    self.seen, self.len, self.digest
                ),
            ));
        }
        Ok(())
    }
}

/// Opens a media file for upload, checking its size against the record.
#[cfg(feature = "sync")]
pub async fn open_checked(path: &Path, len: u64) -> Result<tokio::fs::File> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(path, "open for upload", e))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(u64::MAX);
    if size != len {
        return Err(damaged(path, format!("size {size} but {len} recorded")));
    }
    Ok(file)
}

/// A small media file's bytes, read whole and checked against the recorded
/// size and SHA-256.
#[cfg(feature = "sync")]
pub async fn read_checked(path: &Path, digest: &str, len: u64) -> Result<Vec<u8>> {
    let mut file = open_checked(path, len).await?;
    let mut buf = Vec::with_capacity(len.min(SMALL_FILE) as usize);
    tokio::io::AsyncReadExt::read_to_end(
        &mut tokio::io::AsyncReadExt::take(&mut file, len + 1),
        &mut buf,
    )
    .await
    .map_err(|e| Error::io(path, "read for upload", e))?;
    let got = crate::format::hex(&sha2::Sha256::digest(&buf));
    if buf.len() as u64 != len || got != digest {
        return Err(damaged(
            path,
            format!("content digest {got} is not the recorded {digest}"),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_accepts_the_recorded_bytes_only() {
        let bytes = b"recorded bytes";
        let digest = crate::format::hex(&sha2::Sha256::digest(bytes));
        let p = Path::new("media/x.png");
        let mut c = Checker::new(p, &digest, bytes.len() as u64);
        c.update(&bytes[..4]);
        c.update(&bytes[4..]);
        assert!(c.finish().is_ok());
        let mut short = Checker::new(p, &digest, bytes.len() as u64);
        short.update(&bytes[..4]);
        let e = short.finish().unwrap_err();
        assert_eq!(e.code(), "damaged");
        assert!(e.to_string().contains("media/x.png"), "{e}");
        let mut other = Checker::new(p, &digest, bytes.len() as u64);
        other.update(b"recorded bytez");
        assert!(other.finish().is_err());
    }
}
