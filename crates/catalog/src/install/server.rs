//! The worker catalog server (upstream's `bin/80-hono-worker-catalog`): its JSON shapes as
//! serde types, tolerant of fields it adds later, and the client of its three reads
//! (`GET /workers`, `GET /workers/{id}`, `GET /workers/{id}/PKGBUILD`).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::error::InstallError;
use crate::id::CatalogId;

/// The longest catalog answer read (a JSON list or a PKGBUILD), so that a wrong URL cannot
/// make the hive buffer a huge body.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Where a worker's source lives, as the catalog entry says (`source`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogWorkerSource {
    /// `git` or `tarball`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository or archive URL.
    pub url: String,
    /// Fields this hive does not use (`branch`, `tag`, `path`, …), kept as sent.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// One entry of the worker catalog (upstream's `WorkerCatalogEntry`). Only `id` is required;
/// the rest defaults when absent, and fields this hive does not know are kept in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogWorker {
    /// The worker's id, e.g. `llm-worker-rbee-cpu`.
    pub id: String,
    /// A display name.
    #[serde(default)]
    pub name: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// `cpu`, `cuda` or `metal`.
    #[serde(default)]
    pub worker_type: String,
    /// `llm-worker-rbee`, `llama-cpp-adapter`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation: Option<String>,
    /// `linux`, `macos`, `windows`.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// `x86_64`, `aarch64`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// A short description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The PKGBUILD's path on the catalog server (or a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkgbuild_url: Option<String>,
    /// The build system of a source build (`cargo`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_system: Option<String>,
    /// Where its source lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CatalogWorkerSource>,
    /// The executable's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_name: Option<String>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl CatalogWorker {
    /// `linux, macos` / `x86_64` as one phrase for list lines (`any` when none is listed).
    pub fn platforms_phrase(&self) -> String {
        let join = |items: &[String]| {
            if items.is_empty() {
                "any".to_owned()
            } else {
                items.join(",")
            }
        };
        format!("{} / {}", join(&self.platforms), join(&self.architectures))
    }

    /// Whether the entry lists `platform` and `arch` (an empty list allows any).
    pub fn offers(&self, platform: &str, arch: &str) -> bool {
        let allows = |items: &[String], wanted: &str| {
            items.is_empty() || items.iter().any(|item| item.eq_ignore_ascii_case(wanted))
        };
        allows(&self.platforms, platform) && allows(&self.architectures, arch)
    }
}

/// `GET /workers`'s body.
#[derive(Debug, Deserialize)]
struct WorkerList {
    workers: Vec<CatalogWorker>,
}

/// A client of one worker catalog server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerCatalogServer {
    base: Url,
    client: reqwest::Client,
}

impl WorkerCatalogServer {
    /// A client of the server at `base` (`worker_catalog_url`; a path prefix is kept).
    pub fn new(base: Url, user_agent: &str) -> Result<Self, InstallError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(user_agent)
            .build()
            .map_err(|error| InstallError::Unreachable {
                url: base.to_string(),
                reason: format!("cannot create an HTTP client: {error}"),
            })?;
        Ok(Self { base, client })
    }

    /// The configured base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The HTTP client (also used for the archive download).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `{base}/workers[/{id}[/PKGBUILD]]`, each segment percent-encoded.
    pub fn url(&self, id: Option<&CatalogId>, pkgbuild: bool) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("workers");
            if let Some(id) = id {
                segments.push(id.as_str());
                if pkgbuild {
                    segments.push("PKGBUILD");
                }
            }
        }
        url
    }

    /// Every worker the catalog offers.
    pub async fn list(&self) -> Result<Vec<CatalogWorker>, InstallError> {
        let url = self.url(None, false);
        let body = self.fetch(&url, None).await?;
        let list: WorkerList =
            serde_json::from_slice(&body).map_err(|error| InstallError::Shape {
                url: url.to_string(),
                reason: error.to_string(),
            })?;
        Ok(list.workers)
    }

    /// One worker's entry.
    pub async fn get(&self, id: &CatalogId) -> Result<CatalogWorker, InstallError> {
        let url = self.url(Some(id), false);
        let body = self.fetch(&url, Some(id)).await?;
        let worker: CatalogWorker =
            serde_json::from_slice(&body).map_err(|error| InstallError::Shape {
                url: url.to_string(),
                reason: error.to_string(),
            })?;
        if worker.id != id.as_str() {
            return Err(InstallError::Shape {
                url: url.to_string(),
                reason: format!("it describes '{}', not '{id}'", worker.id),
            });
        }
        Ok(worker)
    }

    /// One worker's PKGBUILD, as text (read as data by the caller, never run). Fetched from
    /// the entry's `pkgbuild_url` when it is set (a path on the server or a URL), else
    /// `{base}/workers/{id}/PKGBUILD`.
    pub async fn pkgbuild(
        &self,
        worker: &CatalogWorker,
        id: &CatalogId,
    ) -> Result<(Url, String), InstallError> {
        let url = match worker.pkgbuild_url.as_deref().filter(|u| !u.is_empty()) {
            Some(given) => self.resolve(given)?,
            None => self.url(Some(id), true),
        };
        let body = self.fetch(&url, Some(id)).await?;
        let text = String::from_utf8(body).map_err(|_| InstallError::Shape {
            url: url.to_string(),
            reason: "the PKGBUILD is not UTF-8 text".into(),
        })?;
        Ok((url, text))
    }

    /// `given` (`/workers/x/PKGBUILD` or a full URL) against the server. A path is taken
    /// relative to the configured base's path prefix, as upstream's entries give it.
    fn resolve(&self, given: &str) -> Result<Url, InstallError> {
        let shape = |reason: String| InstallError::Shape {
            url: self.base.to_string(),
            reason,
        };
        if let Some(path) = given.strip_prefix('/') {
            let mut base = self.base.clone();
            if !base.path().ends_with('/') {
                let with_slash = format!("{}/", base.path());
                base.set_path(&with_slash);
            }
            return base
                .join(path)
                .map_err(|e| shape(format!("pkgbuild_url {given:?}: {e}")));
        }
        let url = Url::parse(given).map_err(|e| shape(format!("pkgbuild_url {given:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(shape(format!(
                "pkgbuild_url {given:?} is not an http(s) URL"
            )));
        }
        Ok(url)
    }

    async fn fetch(&self, url: &Url, id: Option<&CatalogId>) -> Result<Vec<u8>, InstallError> {
        let unreachable = |error: reqwest::Error| InstallError::Unreachable {
            url: self.base.to_string(),
            reason: plain(&error),
        };
        let response = self
            .client
            .get(url.clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND
            && let Some(id) = id
        {
            return Err(InstallError::NotInCatalog {
                id: id.to_string(),
                url: url.to_string(),
            });
        }
        if !status.is_success() {
            return Err(InstallError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(InstallError::Shape {
                url: url.to_string(),
                reason: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
            });
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(InstallError::Shape {
                    url: url.to_string(),
                    reason: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A reqwest error with its causes, in one line ("error sending request: … Connection refused").
pub(crate) fn plain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_upstreams_entry_and_keeps_unknown_fields() {
        let text = r#"{"workers":[{
            "id": "llm-worker-rbee-cpu", "implementation": "llm-worker-rbee",
            "worker_type": "cpu", "version": "0.1.0",
            "platforms": ["linux", "macos", "windows"], "architectures": ["x86_64", "aarch64"],
            "name": "LLM Worker (CPU)", "description": "Candle-based", "license": "GPL-3.0-or-later",
            "pkgbuild_url": "/workers/llm-worker-rbee-cpu/PKGBUILD", "build_system": "cargo",
            "source": {"type": "git", "url": "https://github.com/user/llama-orch.git",
                       "branch": "main", "path": "bin/30_llm_worker_rbee"},
            "build": {"features": ["cpu"], "profile": "release"},
            "depends": ["gcc"], "makedepends": ["rust", "cargo"],
            "binary_name": "llm-worker-rbee-cpu", "install_path": "/usr/local/bin/llm-worker-rbee-cpu",
            "supported_formats": ["gguf", "safetensors"], "max_context_length": 32768,
            "supports_streaming": true, "supports_batching": false, "added_later": 1}]}"#;
        let list: WorkerList = serde_json::from_str(text).unwrap();
        let worker = &list.workers[0];
        assert_eq!(worker.id, "llm-worker-rbee-cpu");
        assert_eq!(
            worker.platforms_phrase(),
            "linux,macos,windows / x86_64,aarch64"
        );
        assert!(worker.offers("linux", "x86_64"));
        assert!(!worker.offers("linux", "riscv64"));
        assert_eq!(worker.source.as_ref().unwrap().kind, "git");
        assert_eq!(worker.other["added_later"], 1);
        let back = serde_json::to_value(worker).unwrap();
        assert_eq!(back["source"]["branch"], "main");
        assert_eq!(back["max_context_length"], 32768);
        // Not the shape: no `id`, or no `workers` list.
        assert!(serde_json::from_str::<CatalogWorker>(r#"{"name":"x"}"#).is_err());
        assert!(serde_json::from_str::<WorkerList>(r#"[{"id":"x"}]"#).is_err());
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_ids() {
        let server =
            WorkerCatalogServer::new(Url::parse("http://h:8787/api/").unwrap(), "t").unwrap();
        let id = CatalogId::parse("a b#c").unwrap();
        assert_eq!(
            server.url(Some(&id), true).as_str(),
            "http://h:8787/api/workers/a%20b%23c/PKGBUILD"
        );
        let server = WorkerCatalogServer::new(Url::parse("http://h:8787").unwrap(), "t").unwrap();
        assert_eq!(server.url(None, false).as_str(), "http://h:8787/workers");
        assert_eq!(
            server.resolve("/workers/x/PKGBUILD").unwrap().as_str(),
            "http://h:8787/workers/x/PKGBUILD"
        );
        let server =
            WorkerCatalogServer::new(Url::parse("http://h:8787/api").unwrap(), "t").unwrap();
        assert_eq!(
            server.resolve("/workers/x/PKGBUILD").unwrap().as_str(),
            "http://h:8787/api/workers/x/PKGBUILD"
        );
        assert!(server.resolve("file:///etc/passwd").is_err());
    }
}
