//! What `model_download` was asked for: an `http(s)://` URL, or a Hugging Face reference
//! `owner/repo:path/to/file.gguf` resolved against the hub endpoint.

use reqwest::Url;

use crate::error::DownloadError;
use crate::id::{CatalogId, printable, safe_file_name};

/// A resolved download source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where the file is fetched from.
    pub url: Url,
    /// The file's name in its catalog folder.
    pub file_name: String,
    /// The catalog id the model gets.
    pub id: CatalogId,
}

impl Source {
    /// Resolves `model` (and an explicit `id`, if given) against `hub_endpoint`.
    pub fn resolve(
        model: &str,
        id: Option<&str>,
        hub_endpoint: &Url,
    ) -> Result<Self, DownloadError> {
        let lower = model.to_ascii_lowercase();
        let url = if lower.starts_with("http://") || lower.starts_with("https://") {
            Url::parse(model).map_err(|error| {
                DownloadError::Source(format!(
                    "'{}' is not a valid URL: {error}",
                    printable(model)
                ))
            })?
        } else if let Some((scheme, _)) = model.split_once("://") {
            return Err(DownloadError::Source(format!(
                "unsupported URL scheme '{}': model_download fetches http:// and https:// URLs only",
                printable(scheme)
            )));
        } else {
            hub_url(model, hub_endpoint)?
        };
        let last = url
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .unwrap_or_default();
        let file_name = safe_file_name(&percent_decoded(last));
        if file_name.is_empty() {
            return Err(DownloadError::Source(format!(
                "'{}' does not end in a file name",
                printable(model)
            )));
        }
        // Names the catalog uses for its own files in an entry folder.
        let lower = file_name.to_ascii_lowercase();
        if lower == "metadata.json"
            || [".part", ".source", ".tmp", ".lock"]
                .iter()
                .any(|end| lower.ends_with(end))
        {
            return Err(DownloadError::Source(format!(
                "'{file_name}' is a name the catalog keeps for its own files; download a model file (such as a .gguf)"
            )));
        }
        let id = match id {
            Some(id) => CatalogId::parse(id)?,
            None => CatalogId::from_file_name(&file_name)?,
        };
        Ok(Self { url, file_name, id })
    }
}

/// `owner/repo:file` → `<endpoint>/owner/repo/resolve/main/file`.
fn hub_url(model: &str, endpoint: &Url) -> Result<Url, DownloadError> {
    let example =
        "for example 'TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf'";
    let Some((repo, file)) = model.split_once(':') else {
        return Err(DownloadError::Source(format!(
            "'{}' names no file: a Hugging Face repository holds several files, so give \
             'owner/repo:file.gguf' ({example}) or an http(s):// URL",
            printable(model)
        )));
    };
    let repo_parts: Vec<&str> = repo.split('/').collect();
    let name_ok = |part: &&str| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if repo_parts.len() != 2 || !repo_parts.iter().all(name_ok) || repo.contains("..") {
        return Err(DownloadError::Source(format!(
            "'{}' is not a Hugging Face repository 'owner/repo' ({example})",
            printable(repo)
        )));
    }
    let file_parts: Vec<&str> = file.split('/').collect();
    let file_ok = |part: &&str| {
        !part.is_empty()
            && *part != "."
            && *part != ".."
            && !part.chars().any(|c| c.is_control() || c == '?' || c == '#')
    };
    if !file_parts.iter().all(file_ok) {
        return Err(DownloadError::Source(format!(
            "'{}' is not a file path in the repository ({example})",
            printable(file)
        )));
    }
    let mut url = endpoint.clone();
    url.path_segments_mut()
        .map_err(|()| DownloadError::Source(format!("hub endpoint {endpoint} cannot hold a path")))?
        .pop_if_empty()
        .extend(repo_parts)
        .extend(["resolve", "main"])
        .extend(file_parts);
    Ok(url)
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Url {
        Url::parse("http://127.0.0.1:9/hub/").unwrap()
    }

    #[test]
    fn urls_and_hub_references() {
        let source = Source::resolve(
            "https://example.com/a/TinyLlama%20Q4.gguf?download=1",
            None,
            &hub(),
        )
        .unwrap();
        assert_eq!(source.file_name, "TinyLlama-Q4.gguf");
        assert_eq!(source.id.as_str(), "TinyLlama-Q4");

        let source =
            Source::resolve("owner/repo-GGUF:sub/m.Q4_K_M.gguf", Some("tiny"), &hub()).unwrap();
        assert_eq!(
            source.url.as_str(),
            "http://127.0.0.1:9/hub/owner/repo-GGUF/resolve/main/sub/m.Q4_K_M.gguf"
        );
        assert_eq!(source.file_name, "m.Q4_K_M.gguf");
        assert_eq!(source.id.as_str(), "tiny");
    }

    #[test]
    fn refusals_say_what_to_give() {
        let error = |model: &str| {
            Source::resolve(model, None, &hub())
                .unwrap_err()
                .to_string()
        };
        assert!(error("TheBloke/TinyLlama-GGUF").contains("names no file"));
        assert!(error("file:///etc/passwd").contains("unsupported URL scheme 'file'"));
        assert!(error("../x:y.gguf").contains("not a Hugging Face repository"));
        assert!(error("a/b:../../etc/passwd").contains("not a file path"));
        assert!(error("https://example.com/").contains("does not end in a file name"));
        let bad_id = Source::resolve("a/b:c.gguf", Some("../x"), &hub())
            .unwrap_err()
            .to_string();
        assert!(bad_id.contains("invalid catalog id"), "{bad_id}");
    }
}
