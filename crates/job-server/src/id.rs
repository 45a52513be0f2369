//! Job ids: `job-<uuid v4>`, assigned by the server.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job id, `job-<uuid>`.
/// Deserialisable so that clients can read status documents; the server makes ids only
/// with [`JobId::generate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// A new, random id.
    pub fn generate() -> Self {
        Self(format!("job-{}", Uuid::new_v4()))
    }

    /// Parses an id from a client (a URL path segment); `None` unless it is `job-<uuid>`.
    pub fn parse(text: &str) -> Option<Self> {
        let uuid = text.strip_prefix("job-")?;
        let parsed = Uuid::try_parse(uuid).ok()?;
        // Canonical form only, so that one job has exactly one spelling.
        (parsed.hyphenated().to_string() == uuid).then(|| Self(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::JobId;

    #[test]
    fn generated_ids_parse_back() {
        let id = JobId::generate();
        assert!(id.as_str().starts_with("job-"));
        assert_eq!(JobId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "",
            "job-",
            "job-123",
            "worker-1",
            "../job",
            "job-00000000-0000-0000-0000-00000000000G",
        ] {
            assert_eq!(JobId::parse(bad), None, "{bad}");
        }
        assert_eq!(
            JobId::parse("job-0E1F5B2C-8C55-4F3E-9B8A-1A2B3C4D5E6F"),
            None,
            "upper case is not canonical"
        );
    }
}
