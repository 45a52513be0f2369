//! The sha256 of a download: the digest it is checked against (the request's, else the
//! hub's `X-Linked-Etag`) and the hasher that computes it beside the writes.

use std::path::PathBuf;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::writer::WRITE_QUEUE;
use crate::disk;
use crate::error::DownloadError;

/// An expected digest and where it came from.
pub(super) type Expected = (String, &'static str);

/// The request's `sha256` field, as lowercase hex.
pub(super) fn parse_sha256(text: &str) -> Result<Expected, DownloadError> {
    let lower = text.trim().to_ascii_lowercase();
    if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok((lower, "the request's sha256"))
    } else {
        Err(DownloadError::Source(
            "field `sha256` must be 64 hexadecimal digits".into(),
        ))
    }
}

/// The hub's `X-Linked-Etag` is the LFS file's sha256 (quoted); other etags are not digests.
pub(super) fn linked_sha256(value: &str) -> Option<String> {
    let value = value.trim().trim_start_matches("W/").trim_matches('"');
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

/// A sha256 over a `.part`'s first `offset` bytes (read back from the file) and then every
/// chunk fed to it, computed on its own thread.
pub(super) struct Hasher {
    chunks: std::sync::mpsc::SyncSender<Bytes>,
    thread: std::thread::JoinHandle<Result<String, DownloadError>>,
}

impl Hasher {
    pub(super) fn start(part: PathBuf, offset: u64) -> Self {
        let (chunks, receiver) = std::sync::mpsc::sync_channel::<Bytes>(WRITE_QUEUE);
        let thread = std::thread::spawn(move || {
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            let mut hasher = Sha256::new();
            if offset > 0 {
                let file = std::fs::File::options()
                    .read(true)
                    .custom_flags(disk::O_NOFOLLOW)
                    .open(&part)
                    .map_err(|e| DownloadError::io("read", &part, e))?;
                let mut prefix = file.take(offset);
                let mut buffer = vec![0u8; 1 << 20];
                loop {
                    let n = prefix
                        .read(&mut buffer)
                        .map_err(|e| DownloadError::io("read", &part, e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buffer[..n]);
                }
            }
            for chunk in receiver {
                hasher.update(&chunk);
            }
            Ok(hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect())
        });
        Self { chunks, thread }
    }

    pub(super) fn feed(&self, chunk: Bytes) {
        // A hasher that stopped has an error of its own, reported by `finish`.
        let _ = self.chunks.send(chunk);
    }

    pub(super) fn finish(self) -> Result<String, DownloadError> {
        drop(self.chunks);
        self.thread.join().unwrap_or_else(|_| {
            Err(DownloadError::Io {
                action: "hash",
                path: PathBuf::from("(download hasher)"),
                reason: "the hashing thread panicked".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_etags_and_requested_digests() {
        let digest = "a".repeat(64);
        assert_eq!(
            linked_sha256(&format!("\"{digest}\"")),
            Some(digest.clone())
        );
        assert_eq!(linked_sha256("\"abc\""), None);
        assert!(parse_sha256(&digest.to_uppercase()).is_ok());
        assert!(parse_sha256("xyz").is_err());
    }
}
