//! The partial file of a download and what a resume needs to know about it.
//!
//! A transfer writes `<file>.part` in the entry folder and, beside it,
//! `<file>.part.source` (JSON: the URL and ETag it came from), so that a later transfer
//! continues only the same file: another URL starts over, and the ETag is sent as
//! `If-Range` so that a file changed on the server answers whole instead of being spliced.
//! A finished file is renamed into place; a failure that cannot be resumed removes both.

use std::path::{Path, PathBuf};

use reqwest::Url;

use crate::disk;
use crate::error::DownloadError;

/// Where a `.part` came from (`<file>.part.source`, JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PartSource {
    url: String,
    etag: Option<String>,
}

impl PartSource {
    fn read(path: &Path) -> Option<Self> {
        if !disk::is_real_file(path) {
            return None;
        }
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn write(&self, path: &Path) -> Result<(), DownloadError> {
        disk::write_json_atomic(path, self).map_err(DownloadError::from)
    }
}

/// The `.part` of one file in its entry folder, and the record of its source beside it.
pub(super) struct Partial {
    part: PathBuf,
    source: PathBuf,
}

impl Partial {
    /// The partial file of `file_name` in `folder`.
    pub(super) fn new(folder: &Path, file_name: &str) -> Self {
        Self {
            part: folder.join(format!("{file_name}.part")),
            source: folder.join(format!("{file_name}.part.source")),
        }
    }

    /// The `.part` itself.
    pub(super) fn path(&self) -> &Path {
        &self.part
    }

    /// Where a transfer of `url` starts: the `.part`'s length when it continues the same
    /// URL's download, else 0; and the ETag recorded with it (for `If-Range`).
    pub(super) fn resume_point(&self, url: &Url) -> (u64, Option<String>) {
        let recorded = PartSource::read(&self.source);
        let offset = match &recorded {
            // A partial file continues only the same URL's download.
            Some(recorded) if recorded.url == url.as_str() && disk::is_real_file(&self.part) => {
                std::fs::metadata(&self.part).map(|m| m.len()).unwrap_or(0)
            }
            _ => 0,
        };
        (offset, recorded.and_then(|r| r.etag))
    }

    /// Records the source of the bytes about to be written, before the first one is.
    pub(super) fn record(&self, url: &Url, etag: Option<String>) -> Result<(), DownloadError> {
        PartSource {
            url: url.to_string(),
            etag,
        }
        .write(&self.source)
    }

    /// The file is whole: renames it to `final_path` (the record goes first) and syncs
    /// `folder`, so that the rename survives a crash.
    pub(super) fn complete(&self, final_path: &Path, folder: &Path) -> Result<(), DownloadError> {
        let _ = std::fs::remove_file(&self.source);
        std::fs::rename(&self.part, final_path)
            .map_err(|e| DownloadError::io("rename", &self.part, e))?;
        disk::sync_dir(folder).map_err(|e| DownloadError::io("sync", folder, e))
    }

    /// Removes the `.part` and its record (a failure a resume could not continue).
    pub(super) async fn discard(&self) {
        let part = self.part.clone();
        let source = self.source.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(part);
            let _ = std::fs::remove_file(source);
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_resumes_only_the_url_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let partial = Partial::new(dir.path(), "m.gguf");
        let url = Url::parse("http://h/m.gguf").unwrap();
        // Nothing on disk, or a .part without its record: start over.
        assert_eq!(partial.resume_point(&url), (0, None));
        std::fs::write(partial.path(), b"12345").unwrap();
        assert_eq!(partial.resume_point(&url), (0, None));
        partial.record(&url, Some("\"v1\"".into())).unwrap();
        assert_eq!(partial.resume_point(&url), (5, Some("\"v1\"".into())));
        let other = Url::parse("http://h/other/m.gguf").unwrap();
        assert_eq!(partial.resume_point(&other).0, 0);
        let final_path = dir.path().join("m.gguf");
        partial.complete(&final_path, dir.path()).unwrap();
        assert_eq!(std::fs::read(&final_path).unwrap(), b"12345");
        assert_eq!(partial.resume_point(&url), (0, None));
    }
}
