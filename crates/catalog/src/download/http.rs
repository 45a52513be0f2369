//! The HTTP side of a download: one GET with its range, redirects followed by hand, and
//! what the answer's headers and status mean.
//!
//! Redirects are followed here, not by the client, so that only http(s) targets are
//! followed, the hub's `X-Linked-*` headers on the redirect are seen, and the hub token is
//! sent to the hub's host only.

use reqwest::header::{LOCATION, RANGE};
use reqwest::{StatusCode, Url};

use super::Inner;
use super::checksum::linked_sha256;
use crate::error::DownloadError;

/// How many redirects a download follows.
const MAX_REDIRECTS: usize = 10;

/// What the hub says about an LFS file on its redirect.
#[derive(Debug, Default)]
pub(super) struct Linked {
    /// `X-Linked-Etag`, when it is a sha256.
    pub(super) sha256: Option<String>,
    /// `X-Linked-Size`.
    pub(super) size: Option<u64>,
}

/// One GET of `start` from byte `offset` on, following redirects by hand; records the hub's
/// `X-Linked-*` headers on the way. Returns the answer and the URL that gave it.
pub(super) async fn fetch(
    inner: &Inner,
    start: &Url,
    offset: u64,
    if_range: Option<&str>,
    linked: &mut Linked,
) -> Result<(reqwest::Response, Url), DownloadError> {
    let config = &inner.config;
    let mut url = start.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut request = inner.client()?.get(url.clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
            // A file that changed since the partial one answers whole (200): a clean
            // restart instead of a splice.
            if let Some(tag) = if_range {
                request = request.header(reqwest::header::IF_RANGE, tag);
            }
        }
        if let Some(token) = &config.hub_token
            && same_origin(&url, &config.hub_endpoint)
        {
            request = request.bearer_auth(token);
        }
        let stall = config.stall_timeout;
        let response = match tokio::time::timeout(stall, request.send()).await {
            Err(_) => {
                return Err(DownloadError::Stalled {
                    url: url.to_string(),
                    secs: stall.as_secs(),
                    received: offset,
                });
            }
            Ok(sent) => sent.map_err(|error| DownloadError::Transport {
                url: url.to_string(),
                received: offset,
                reason: error_chain(&error),
            })?,
        };

        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(digest) = header("x-linked-etag").as_deref().and_then(linked_sha256) {
            linked.sha256 = Some(digest);
        }
        if let Some(size) = header("x-linked-size").and_then(|v| v.trim().parse().ok()) {
            linked.size = Some(size);
        }
        if !response.status().is_redirection() {
            return Ok((response, url));
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| DownloadError::Redirect {
                from: url.to_string(),
                reason: "no Location header".into(),
            })?;
        let next = url
            .join(location)
            .map_err(|error| DownloadError::Redirect {
                from: url.to_string(),
                reason: format!("bad Location {location:?}: {error}"),
            })?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(DownloadError::Redirect {
                from: url.to_string(),
                reason: format!(
                    "it leads to a {}: URL; only http(s) is followed",
                    next.scheme()
                ),
            });
        }
        url = next;
    }
    Err(DownloadError::Redirect {
        from: start.to_string(),
        reason: format!("more than {MAX_REDIRECTS} redirects"),
    })
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A status that is not a success, in words that say what to check.
pub(super) fn status_error(url: &Url, status: StatusCode) -> DownloadError {
    let detail = match status.as_u16() {
        401 | 403 => {
            "; the file may be gated or private: set HF_TOKEN in the hive's environment".to_owned()
        }
        404 => "; check the repository and file name".to_owned(),
        _ => String::new(),
    };
    DownloadError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        detail,
    }
}

/// `bytes <start>-<end>/<total>` → (start, total).
pub(super) fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// An error with its causes (reqwest's own text says little).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn the_hub_token_goes_to_the_hub_only() {
        let hub = Url::parse("https://huggingface.co").unwrap();
        assert!(same_origin(
            &Url::parse("https://huggingface.co:443/a/b").unwrap(),
            &hub
        ));
        assert!(!same_origin(
            &Url::parse("http://huggingface.co/a").unwrap(),
            &hub
        ));
        assert!(!same_origin(
            &Url::parse("https://cdn-lfs.huggingface.co/a").unwrap(),
            &hub
        ));
    }
}
