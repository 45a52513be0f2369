//! The body's way to disk: chunks go through a bounded queue to a blocking thread that
//! appends them to the `.part` (and feeds the hasher), then fsyncs it.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::checksum::Hasher;
use crate::disk;
use crate::error::DownloadError;

/// Chunks queued between the network and the file writer (and between it and the hasher).
pub(super) const WRITE_QUEUE: usize = 64;

/// Writes (and hashes) the body on a thread of its own, so that the network is read while
/// the disk writes.
pub(super) struct Writer {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<Result<(u64, Option<String>), DownloadError>>,
}

impl Writer {
    /// Writes to `part` from `offset` on (the bytes before it are kept, the rest cut off),
    /// hashing the whole file when `hash`.
    pub(super) fn start(part: PathBuf, offset: u64, hash: bool) -> Self {
        let (chunks, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let done = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let io = |action, e| DownloadError::io(action, &part, e);
            let mut file = if offset > 0 {
                let file = std::fs::File::options()
                    .append(true)
                    .custom_flags(disk::O_NOFOLLOW)
                    .open(&part)
                    .map_err(|e| io("open", e))?;
                file.set_len(offset).map_err(|e| io("truncate", e))?;
                file
            } else {
                std::fs::File::options()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(disk::O_NOFOLLOW)
                    .open(&part)
                    .map_err(|e| io("create", e))?
            };
            // Hashing runs on a thread of its own, beside the writes and the final fsync.
            let hasher = hash.then(|| Hasher::start(part.clone(), offset));
            let mut written = offset;
            while let Some(chunk) = receiver.blocking_recv() {
                file.write_all(&chunk).map_err(|e| io("write", e))?;
                written += chunk.len() as u64;
                if let Some(hasher) = &hasher {
                    hasher.feed(chunk);
                }
            }
            file.sync_all().map_err(|e| io("sync", e))?;
            let digest = hasher.map(Hasher::finish).transpose()?;
            Ok((written, digest))
        });
        Self { chunks, done }
    }

    /// Queues `chunk`; false when the writer has stopped (its error comes from `finish`).
    pub(super) async fn write(&self, chunk: Bytes) -> bool {
        self.chunks.send(chunk).await.is_ok()
    }

    /// Ends the body; returns the file's length and, when hashed, its sha256.
    pub(super) async fn finish(self) -> Result<(u64, Option<String>), DownloadError> {
        drop(self.chunks);
        self.done.await.unwrap_or_else(|error| {
            Err(DownloadError::Io {
                action: "write",
                path: Path::new("(download writer)").to_path_buf(),
                reason: error.to_string(),
            })
        })
    }
}
