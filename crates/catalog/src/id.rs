//! Catalog entry ids: the name of an entry's folder, so the one place that decides what
//! may become a path component under the catalog.

use std::fmt;

use crate::error::CatalogError;

/// The longest id, in bytes (a file name on common file systems).
pub(crate) const MAX_ID_LEN: usize = 255;

/// A validated catalog id: non-empty, at most 255 bytes, no `/`, `\`, `..`, NUL or other
/// control character, and no leading `-` (it would read as a flag) or `.` (hidden, `.`, `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CatalogId(String);

impl CatalogId {
    /// Checks `text` as an id.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let refuse = |reason: &str| CatalogError::InvalidId {
            id: printable(text),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(refuse("must not be empty"));
        }
        if text.len() > MAX_ID_LEN {
            return Err(refuse("is longer than 255 bytes"));
        }
        if text.contains(['/', '\\']) {
            return Err(refuse("must not contain '/' or '\\'"));
        }
        if text.contains("..") {
            return Err(refuse("must not contain '..'"));
        }
        if text.chars().any(char::is_control) {
            return Err(refuse("must not contain NUL or control characters"));
        }
        if text.starts_with('-') || text.starts_with('.') {
            return Err(refuse("must not start with '-' or '.'"));
        }
        Ok(Self(text.to_owned()))
    }

    /// An id made from a file name: the extension `.gguf` dropped, characters outside
    /// `A-Za-z0-9._-` replaced by `-`, leading `-`/`.` removed, cut to 255 bytes.
    pub fn from_file_name(file_name: &str) -> Result<Self, CatalogError> {
        let stem = file_name
            .strip_suffix(".gguf")
            .or_else(|| file_name.strip_suffix(".GGUF"))
            .unwrap_or(file_name);
        Self::parse(&safe_file_name(stem))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CatalogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `name` as a safe file name: characters outside `A-Za-z0-9._-` replaced by `-`, no `..`,
/// no leading `-` or `.`, at most 255 bytes (may be empty).
pub(crate) fn safe_file_name(name: &str) -> String {
    let mut safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while safe.contains("..") {
        safe = safe.replace("..", ".");
    }
    let safe = safe.trim_start_matches(['-', '.']);
    safe[..safe.len().min(MAX_ID_LEN)].to_owned()
}

/// `text` cut to 80 characters with control characters shown as `?`, for error messages.
pub(crate) fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        for id in [
            "tinyllama",
            "TinyLlama-1.1B.Q4_K_M",
            "a",
            "x_y-z.gguf",
            &"a".repeat(255),
        ] {
            assert_eq!(CatalogId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn refuses_what_could_leave_the_folder_or_read_as_a_flag() {
        for id in [
            "",
            "..",
            ".",
            "../etc",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "a..b",
            "-rf",
            ".hidden",
            "nul\0byte",
            "new\nline",
            &"a".repeat(256),
        ] {
            assert!(CatalogId::parse(id).is_err(), "{id:?} was accepted");
        }
    }

    #[test]
    fn ids_from_file_names() {
        let id = |name: &str| CatalogId::from_file_name(name).map(|id| id.0);
        assert_eq!(
            id("tinyllama-1.1b.Q4_K_M.gguf").unwrap(),
            "tinyllama-1.1b.Q4_K_M"
        );
        assert_eq!(id("model file (1).gguf").unwrap(), "model-file--1-");
        assert_eq!(id("..gguf..x.gguf").unwrap(), "gguf.x");
        assert_eq!(id("-.-model").unwrap(), "model");
        assert!(id("....").is_err());
    }
}
