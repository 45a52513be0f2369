//! `owner/repo` with no file (today's rbee, PROTOCOL §9): the repository's files are listed
//! through the hub API (`GET <endpoint>/api/models/<owner>/<repo>`, whose `siblings` name
//! every file) and its GGUF file is picked by the quantisation order of [`QUANTS`].

use reqwest::Url;
use serde::Deserialize;

use super::Inner;
use super::http::{error_chain, status_error};
use crate::error::DownloadError;
use crate::id::printable;

/// The quantisations a bare repository reference looks for, best first (upstream's order).
pub const QUANTS: &[&str] = &["Q4_K_M", "Q5_K_M", "Q4_0", "Q5_0", "Q8_0", "F16"];

/// The file picked from a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickedFile {
    /// The repository, `owner/repo`.
    pub repo: String,
    /// The file's path in the repository.
    pub file: String,
    /// The quantisation it was picked for.
    pub quant: &'static str,
}

impl PickedFile {
    /// The catalog id a download of it gets by default: the reference as sent, `owner/repo`,
    /// with `/` replaced by `-` (PROTOCOL §9).
    pub fn default_id(&self) -> String {
        self.repo.replace(['/', ':'], "-")
    }

    /// The reference that names the file: `owner/repo:file`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repo, self.file)
    }
}

/// Whether `model` is a bare `owner/repo` reference: no scheme, no file, one `/`.
pub fn is_bare_repo(model: &str) -> bool {
    !model.contains("://")
        && !model.contains(':')
        && model.split('/').count() == 2
        && model.split('/').all(|part| !part.is_empty())
}

/// What the hub API says of a repository (only the part read).
#[derive(Debug, Deserialize)]
struct RepoInfo {
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
}

/// Lists `repo` on the hub and picks its file. Every refusal starts the same way (the
/// seed's clients read "names no file"), then says why no file could be picked.
pub(super) async fn pick(inner: &Inner, repo: &str) -> Result<PickedFile, DownloadError> {
    let files = list(inner, repo).await.map_err(|reason| {
        DownloadError::Source(format!("'{}' names no file, and {reason}", printable(repo)))
    })?;
    choose(repo, &files)
}

/// The paths of `repo`'s files, or why they could not be read (a phrase).
async fn list(inner: &Inner, repo: &str) -> Result<Vec<String>, String> {
    let config = &inner.config;
    let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
    let mut url: Url = config.hub_endpoint.clone();
    url.path_segments_mut()
        .map_err(|()| format!("hub endpoint {} cannot hold a path", config.hub_endpoint))?
        .pop_if_empty()
        .extend(["api", "models", owner, name]);
    let unreadable = |why: String| format!("its list of files could not be read from {url}: {why}");
    let mut request = inner
        .client()
        .map_err(|e| unreadable(e.to_string()))?
        .get(url.clone());
    // The listing goes to the hub's own endpoint, the one host the token is for.
    if let Some(token) = &config.hub_token {
        request = request.bearer_auth(token);
    }
    let stall = config.stall_timeout;
    let response = tokio::time::timeout(stall, request.send())
        .await
        .map_err(|_| unreadable(format!("no answer within {} s", stall.as_secs())))?
        .map_err(|error| unreadable(error_chain(&error)))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(format!(
            "the hub knows no repository of that name ({url} answered 404); check the name, \
             or give 'owner/repo:file.gguf' or an http(s):// URL"
        ));
    }
    if !status.is_success() {
        return Err(unreadable(status_error(&url, status).to_string()));
    }
    // A listing is small; a body past this is not one.
    const MAX_LISTING: usize = 8 * 1024 * 1024;
    let too_large = || unreadable("the answer is too large for a list of files".into());
    if response
        .content_length()
        .is_some_and(|n| n > MAX_LISTING as u64)
    {
        return Err(too_large());
    }
    let body = tokio::time::timeout(stall, response.bytes())
        .await
        .map_err(|_| unreadable(format!("the answer stalled for {} s", stall.as_secs())))?
        .map_err(|error| unreadable(error_chain(&error)))?;
    if body.len() > MAX_LISTING {
        return Err(too_large());
    }
    let info: RepoInfo = serde_json::from_slice(&body)
        .map_err(|error| unreadable(format!("not the hub's JSON: {error}")))?;
    Ok(info
        .siblings
        .into_iter()
        .map(|sibling| sibling.rfilename)
        .collect())
}

/// The first quantisation of [`QUANTS`] that a single-file GGUF of `files` carries as its
/// name's last part (`model.Q4_K_M.gguf`, `model-q4_k_m.gguf`); among several, the first
/// path in order.
fn choose(repo: &str, files: &[String]) -> Result<PickedFile, DownloadError> {
    let mut ggufs: Vec<&String> = files
        .iter()
        .filter(|file| file.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    ggufs.sort();
    for quant in QUANTS {
        if let Some(file) = ggufs.iter().find(|file| carries(file, quant)) {
            return Ok(PickedFile {
                repo: repo.to_owned(),
                file: (*file).clone(),
                quant,
            });
        }
    }
    let mut shown: Vec<String> = files.iter().take(40).map(|f| printable(f)).collect();
    if files.len() > shown.len() {
        shown.push(format!("… ({} files in all)", files.len()));
    }
    let has = match shown.is_empty() {
        true => "it has no files".to_owned(),
        false => format!("it has: {}", shown.join(", ")),
    };
    Err(DownloadError::Source(format!(
        "'{}' names no file, and the repository has no GGUF file of {}; {has}; \
         name one as 'owner/repo:file.gguf'",
        printable(repo),
        QUANTS.join(", ")
    )))
}

/// Whether `file`'s name ends with `quant` (any case) after a `.`, `-` or `_`.
fn carries(file: &str, quant: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    let stem = &name[..name.len() - ".gguf".len()];
    let (stem, quant) = (stem.to_ascii_uppercase(), quant.to_ascii_uppercase());
    stem.strip_suffix(&quant)
        .is_some_and(|before| before.ends_with(['.', '-', '_']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_by_quantisation_order() {
        let repo = files(&[
            "README.md",
            "tiny.Q8_0.gguf",
            "tiny.Q4_K_M.gguf",
            "tiny.Q5_K_M.gguf",
        ]);
        let picked = choose("o/r", &repo).unwrap();
        assert_eq!(picked.file, "tiny.Q4_K_M.gguf");
        assert_eq!(picked.quant, "Q4_K_M");
        assert_eq!(picked.reference(), "o/r:tiny.Q4_K_M.gguf");
        assert_eq!(picked.default_id(), "o-r");
        let picked = choose("o/r", &files(&["a-f16.gguf", "a-q8_0.gguf"])).unwrap();
        assert_eq!(picked.file, "a-q8_0.gguf");
        let picked = choose("o/r", &files(&["sub/m_Q5_0.GGUF", "m.Q4_0_4_4.gguf"])).unwrap();
        assert_eq!(picked.file, "sub/m_Q5_0.GGUF");
    }

    #[test]
    fn no_match_lists_what_the_repository_has() {
        let error = choose("o/r", &files(&["m.IQ2_XS.gguf", "README.md"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("names no file"), "{error}");
        assert!(
            error.contains("Q4_K_M, Q5_K_M, Q4_0, Q5_0, Q8_0, F16"),
            "{error}"
        );
        assert!(
            error.contains("it has: m.IQ2_XS.gguf, README.md"),
            "{error}"
        );
        let error = choose("o/r", &[]).unwrap_err().to_string();
        assert!(error.contains("it has no files"), "{error}");
    }

    #[test]
    fn bare_repositories() {
        assert!(is_bare_repo("TheBloke/TinyLlama-GGUF"));
        assert!(!is_bare_repo("TheBloke/TinyLlama-GGUF:x.gguf"));
        assert!(!is_bare_repo("https://example.com/a"));
        assert!(!is_bare_repo("a/b/c"));
        assert!(!is_bare_repo("tiny"));
        assert!(!is_bare_repo("/b"));
    }
}
