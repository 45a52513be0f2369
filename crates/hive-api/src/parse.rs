//! The parser of `POST /v1/jobs` bodies.
//!
//! The body is a flat JSON object: `"operation"` holds the snake_case name and the fields
//! sit beside it. The parser is written out by hand rather than derived so that every error
//! names the field at fault (serde's internally tagged enums say "invalid type: integer,
//! expected a string" without saying which field), and so that values that could be
//! mistaken for flags or break a log line are refused here, before any job exists. Unknown
//! extra keys are ignored (PROTOCOL §3). It matches every [`OperationKind`] exhaustively.

use serde_json::{Map, Value};

use crate::operation::{
    LoadDevice, MAX_FIELD_LEN, MAX_GRACE_MS, Operation, OperationError, OperationKind,
    is_upstream_only,
};

impl Operation {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<Self, OperationError> {
        match serde_json::from_slice::<TopLevel>(body) {
            Ok(TopLevel::Object(fields)) => Self::from_fields(&fields),
            Ok(TopLevel::Other(kind)) => Err(OperationError::NotAnObject(kind)),
            Err(error) => match error.to_string().strip_prefix(DUPLICATE_KEY) {
                Some(rest) => {
                    let key = rest.split('`').next().unwrap_or_default();
                    Err(OperationError::DuplicateKey(key.to_owned()))
                }
                None => Err(OperationError::MalformedJson(error.to_string())),
            },
        }
    }

    fn from_fields(fields: &Map<String, Value>) -> Result<Self, OperationError> {
        let name = match fields.get("operation") {
            None => return Err(OperationError::MissingOperation),
            Some(Value::String(name)) => name.as_str(),
            Some(other) => {
                return Err(OperationError::WrongType {
                    field: "operation",
                    expected: "a string naming the operation",
                    got: type_name(other).to_owned(),
                });
            }
        };
        let kind = match name.parse::<OperationKind>() {
            Ok(kind) => kind,
            Err(_) if is_upstream_only(name) => {
                return Err(OperationError::UnsupportedOperation {
                    name: name.to_owned(),
                });
            }
            Err(_) => {
                return Err(OperationError::UnknownOperation {
                    name: shorten(name),
                });
            }
        };
        let f = Fields {
            operation: kind.name(),
            map: fields,
        };
        let operation = match kind {
            OperationKind::WorkerSpawn => Self::WorkerSpawn {
                hive_id: f.hive_id()?,
                model: f.argument("model")?,
                worker: f.worker_type()?,
                device: f.required_u32("device")?,
            },
            OperationKind::WorkerList => Self::WorkerList {
                hive_id: f.hive_id()?,
            },
            OperationKind::WorkerGet => Self::WorkerGet {
                hive_id: f.hive_id()?,
                id: f.worker_id()?,
            },
            OperationKind::WorkerDelete => Self::WorkerDelete {
                hive_id: f.hive_id()?,
                id: f.worker_id()?,
                grace_ms: f.optional_grace_ms()?,
            },
            OperationKind::WorkerProcessList => Self::WorkerProcessList {
                hive_id: f.hive_id()?,
            },
            OperationKind::WorkerProcessGet => Self::WorkerProcessGet {
                hive_id: f.hive_id()?,
                pid: f.required_pid()?,
            },
            OperationKind::WorkerProcessDelete => Self::WorkerProcessDelete {
                hive_id: f.hive_id()?,
                pid: f.required_pid()?,
            },
            OperationKind::WorkerBinaryList => Self::WorkerBinaryList {
                hive_id: f.hive_id()?,
            },
            OperationKind::WorkerBinaryGet => Self::WorkerBinaryGet {
                hive_id: f.hive_id()?,
                worker_type: f.required_string("worker_type", CATALOG_ID)?,
            },
            OperationKind::WorkerBinaryDelete => Self::WorkerBinaryDelete {
                hive_id: f.hive_id()?,
                worker_type: f.required_string("worker_type", CATALOG_ID)?,
            },
            OperationKind::ModelList => Self::ModelList {
                hive_id: f.hive_id()?,
            },
            OperationKind::ModelGet => Self::ModelGet {
                hive_id: f.hive_id()?,
                id: f.required_string("id", CATALOG_ID)?,
            },
            OperationKind::ModelDelete => Self::ModelDelete {
                hive_id: f.hive_id()?,
                id: f.required_string("id", CATALOG_ID)?,
                force: f.optional_bool("force")?,
            },
            OperationKind::ModelDownload => Self::ModelDownload {
                hive_id: f.hive_id()?,
                model: f.required_string(
                    "model",
                    "an http(s):// URL or a Hugging Face reference 'owner/repo:file.gguf'",
                )?,
                id: f.optional_string("id", CATALOG_ID)?,
                sha256: f.optional_string("sha256", "64 hexadecimal digits")?,
            },
            OperationKind::WorkerListInstalled => Self::WorkerListInstalled {
                hive_id: f.hive_id()?,
            },
            OperationKind::WorkerInstalledGet => Self::WorkerInstalledGet {
                hive_id: f.hive_id()?,
                worker_id: f.catalog_id("worker_id")?,
            },
            OperationKind::WorkerRemove => Self::WorkerRemove {
                hive_id: f.hive_id()?,
                worker_id: f.catalog_id("worker_id")?,
            },
            OperationKind::ModelLoad => Self::ModelLoad {
                hive_id: f.hive_id()?,
                id: f.required_string("id", CATALOG_ID)?,
                device: f.load_device()?,
            },
            OperationKind::ModelUnload => Self::ModelUnload {
                hive_id: f.hive_id()?,
                id: f.required_string("id", CATALOG_ID)?,
            },
            OperationKind::HiveCheck => Self::HiveCheck { alias: f.alias()? },
            OperationKind::WorkerCatalogList => Self::WorkerCatalogList {
                hive_id: f.hive_id()?,
            },
            OperationKind::WorkerCatalogGet => Self::WorkerCatalogGet {
                hive_id: f.hive_id()?,
                worker_id: f.catalog_id("worker_id")?,
            },
            OperationKind::WorkerInstall => Self::WorkerInstall {
                hive_id: f.hive_id()?,
                worker_id: f.catalog_id("worker_id")?,
            },
        };
        Ok(operation)
    }
}

const DUPLICATE_KEY: &str = "duplicate key `";

/// What a catalog id field holds (its rules are checked by the catalog, in the job).
const CATALOG_ID: &str = "a catalog id string such as \"tinyllama\"";

/// The top level of a request body, read in one pass that refuses duplicated keys.
enum TopLevel {
    Object(Map<String, Value>),
    Other(&'static str),
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> serde::de::Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("{DUPLICATE_KEY}{key}`")));
            }
            let value: Value = map.next_value()?;
            fields.insert(key, value);
        }
        Ok(TopLevel::Object(fields))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other("an array"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a string"))
    }

    fn visit_unit<E>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("null"))
    }
}

struct Fields<'a> {
    operation: &'static str,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn required_string(
        &self,
        field: &'static str,
        expected: &'static str,
    ) -> Result<String, OperationError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Err(OperationError::MissingField {
                operation: self.operation,
                field,
                expected,
            }),
            Some(Value::String(text)) => check_text(field, text).map(|()| text.clone()),
            Some(other) => Err(OperationError::WrongType {
                field,
                expected,
                got: type_name(other).to_owned(),
            }),
        }
    }

    fn optional_string(
        &self,
        field: &'static str,
        expected: &'static str,
    ) -> Result<Option<String>, OperationError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.required_string(field, expected).map(Some),
        }
    }

    fn optional_bool(&self, field: &'static str) -> Result<bool, OperationError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(value)) => Ok(*value),
            Some(other) => Err(OperationError::WrongType {
                field,
                expected: "true or false",
                got: type_name(other).to_owned(),
            }),
        }
    }

    fn hive_id(&self) -> Result<String, OperationError> {
        let id = self.required_string("hive_id", "a string")?;
        if id.len() > 256 {
            return Err(OperationError::InvalidValue {
                field: "hive_id",
                reason: "is longer than 256 bytes".into(),
            });
        }
        Ok(id)
    }

    /// A catalog entry id, checked by the catalog's rules (PROTOCOL §8): it becomes a folder
    /// name under the catalog and a path segment of the catalog server's URLs.
    fn catalog_id(&self, field: &'static str) -> Result<String, OperationError> {
        let id = self.required_string(field, CATALOG_ID)?;
        let reason = if id.len() > 255 {
            Some("is longer than 255 bytes")
        } else if id.contains(['/', '\\']) {
            Some("must not contain '/' or '\\'")
        } else if id.contains("..") {
            Some("must not contain '..'")
        } else if id.starts_with('-') || id.starts_with('.') {
            Some("must not start with '-' or '.'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(OperationError::InvalidValue {
                field,
                reason: format!("must be a catalog id: {reason}"),
            }),
            None => Ok(id),
        }
    }

    /// `hive_check`'s `alias`: optional (default `localhost`), held to `hive_id`'s limits.
    fn alias(&self) -> Result<String, OperationError> {
        let alias = self
            .optional_string("alias", "a string naming the hive")?
            .unwrap_or_else(|| crate::DEFAULT_HIVE_ID.to_owned());
        if alias.len() > 256 {
            return Err(OperationError::InvalidValue {
                field: "alias",
                reason: "is longer than 256 bytes".into(),
            });
        }
        Ok(alias)
    }

    /// `model_load`'s `device`: a string naming a device kind and ordinal.
    fn load_device(&self) -> Result<LoadDevice, OperationError> {
        let text =
            self.required_string("device", "a device string such as \"cpu\" or \"cuda:0\"")?;
        text.parse().map_err(|reason| OperationError::InvalidValue {
            field: "device",
            reason,
        })
    }

    fn worker_id(&self) -> Result<String, OperationError> {
        let id = self.required_string("id", "a worker id string such as \"worker-1\"")?;
        // Worker ids are short ASCII; anything else would only be echoed into logs.
        if id.len() > 64 || !id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(OperationError::InvalidValue {
                field: "id",
                reason: "must be a worker id: at most 64 printable ASCII characters, such as \"worker-1\"".into(),
            });
        }
        Ok(id)
    }

    fn worker_type(&self) -> Result<String, OperationError> {
        let name =
            self.required_string("worker", "a worker type string such as \"cpu\" or \"demo\"")?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || name.len() > 64
        {
            return Err(OperationError::InvalidValue {
                field: "worker",
                reason: "must be a worker type name: letters, digits, '-' and '_' (at most 64)"
                    .into(),
            });
        }
        Ok(name)
    }

    /// A string that becomes a worker's command-line argument: it must not look like a flag.
    fn argument(&self, field: &'static str) -> Result<String, OperationError> {
        let value = self.required_string(field, "a string")?;
        if value.starts_with('-') {
            return Err(OperationError::InvalidValue {
                field,
                reason: "must not start with '-' (it would be read as a command-line flag)".into(),
            });
        }
        Ok(value)
    }

    fn required_u32(&self, field: &'static str) -> Result<u32, OperationError> {
        let expected = "a non-negative integer below 2^32";
        match self.map.get(field) {
            None | Some(Value::Null) => Err(OperationError::MissingField {
                operation: self.operation,
                field,
                expected,
            }),
            Some(Value::Number(n)) => {
                n.as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| OperationError::WrongType {
                        field,
                        expected,
                        got: format!("the number {n}"),
                    })
            }
            Some(other) => Err(OperationError::WrongType {
                field,
                expected,
                got: type_name(other).to_owned(),
            }),
        }
    }

    fn required_pid(&self) -> Result<u64, OperationError> {
        let field = "pid";
        let expected = "a process id (a non-negative integer)";
        match self.map.get(field) {
            None | Some(Value::Null) => Err(OperationError::MissingField {
                operation: self.operation,
                field,
                expected,
            }),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| OperationError::WrongType {
                field,
                expected,
                got: format!("the number {n}"),
            }),
            Some(other) => Err(OperationError::WrongType {
                field,
                expected,
                got: type_name(other).to_owned(),
            }),
        }
    }

    fn optional_grace_ms(&self) -> Result<Option<u64>, OperationError> {
        let field = "grace_ms";
        let expected = "a non-negative integer number of milliseconds";
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(ms) if ms <= MAX_GRACE_MS => Ok(Some(ms)),
                Some(_) => Err(OperationError::InvalidValue {
                    field,
                    reason: format!("must be at most {MAX_GRACE_MS} (one hour)"),
                }),
                None => Err(OperationError::WrongType {
                    field,
                    expected,
                    got: format!("the number {n}"),
                }),
            },
            Some(other) => Err(OperationError::WrongType {
                field,
                expected,
                got: type_name(other).to_owned(),
            }),
        }
    }
}

fn check_text(field: &'static str, text: &str) -> Result<(), OperationError> {
    if text.is_empty() {
        return Err(OperationError::InvalidValue {
            field,
            reason: "must not be empty".into(),
        });
    }
    if text.len() > MAX_FIELD_LEN {
        return Err(OperationError::InvalidValue {
            field,
            reason: format!("is longer than {MAX_FIELD_LEN} bytes"),
        });
    }
    if text.chars().any(char::is_control) {
        return Err(OperationError::InvalidValue {
            field,
            reason: "must not contain control characters".into(),
        });
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn shorten(text: &str) -> String {
    let mut short: String = text
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 64 {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use super::*;

    fn parse(text: &str) -> Result<Operation, OperationError> {
        Operation::parse(text.as_bytes())
    }

    #[test]
    fn parses_each_operation() {
        assert_eq!(
            parse(r#"{"operation":"worker_list","hive_id":"localhost"}"#),
            Ok(Operation::WorkerList {
                hive_id: "localhost".into()
            })
        );
        assert_eq!(
            parse(
                r#"{"device":1,"hive_id":"gpu-box","model":"m","operation":"worker_spawn","worker":"cuda"}"#
            ),
            Ok(Operation::WorkerSpawn {
                hive_id: "gpu-box".into(),
                model: "m".into(),
                worker: "cuda".into(),
                device: 1
            })
        );
        assert_eq!(
            parse(r#"{"operation":"worker_get","hive_id":"h","id":"worker-1","extra":true}"#),
            Ok(Operation::WorkerGet {
                hive_id: "h".into(),
                id: "worker-1".into()
            })
        );
        assert_eq!(
            parse(r#"{"operation":"worker_delete","hive_id":"h","id":"worker-1","grace_ms":250}"#),
            Ok(Operation::WorkerDelete {
                hive_id: "h".into(),
                id: "worker-1".into(),
                grace_ms: Some(250)
            })
        );
    }

    #[test]
    fn names_round_trip_through_serde() {
        let op = Operation::WorkerDelete {
            hive_id: "h".into(),
            id: "worker-2".into(),
            grace_ms: None,
        };
        let json = serde_json::to_vec(&op).unwrap();
        assert_eq!(Operation::parse(&json), Ok(op.clone()));
        assert_eq!(op.name(), "worker_delete");
        for kind in OperationKind::VARIANTS {
            let name = kind.name();
            if *kind == OperationKind::HiveCheck {
                // Upstream's hive_check carries no hive_id; its alias has a default.
                assert!(parse(&format!(r#"{{"operation":"{name}"}}"#)).is_ok());
                continue;
            }
            let err = parse(&format!(r#"{{"operation":"{name}"}}"#)).unwrap_err();
            assert!(
                matches!(
                    err,
                    OperationError::MissingField {
                        field: "hive_id",
                        ..
                    }
                ),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn every_kind_parses_and_serialises_under_its_one_name() {
        for kind in OperationKind::VARIANTS {
            // `device` is an ordinal for worker_spawn and a device name for model_load.
            let device = match kind {
                OperationKind::ModelLoad => serde_json::json!("cuda:1"),
                _ => serde_json::json!(0),
            };
            let body = serde_json::json!({
                "operation": kind.name(), "hive_id": "h", "id": "worker-1", "model": "m",
                "worker": "cpu", "device": device, "pid": 42, "worker_type": "cpu-llm",
                "worker_id": "cpu-llm", "alias": "gpu-box",
            });
            let operation = Operation::parse(body.to_string().as_bytes()).unwrap();
            assert_eq!(operation.kind(), *kind);
            assert_eq!(operation.name(), kind.name());
            assert_eq!(
                serde_json::to_value(&operation).unwrap()["operation"],
                kind.name()
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse(r#"{"operation":"worker_spawn","hive_id":"h","model":"m","worker":"cpu"}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing field `device` (a non-negative integer below 2^32) for operation worker_spawn"
        );
        let err = parse(
            r#"{"operation":"worker_spawn","hive_id":"h","model":"m","worker":"cpu","device":"0"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `device` must be a non-negative integer below 2^32, got a string"
        );
        let err = parse(r#"{"operation":"worker_spawn","hive_id":"h","model":"m","worker":"cpu","device":4294967296}"#)
            .unwrap_err();
        assert!(err.to_string().contains("`device`"));
        let err = parse(r#"{"operation":"worker_get","hive_id":5,"id":"w"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `hive_id` must be a string, got a number"
        );
    }

    #[test]
    fn unknown_operation_lists_supported_ones() {
        let supported = "worker_spawn, worker_list, worker_get, worker_delete, \
                         worker_process_list, worker_process_get, worker_process_delete, \
                         worker_binary_list, worker_binary_get, worker_binary_delete, \
                         model_list, model_get, model_delete, model_download, \
                         worker_catalog_list, worker_catalog_get, worker_install, \
                         worker_list_installed, worker_installed_get, worker_remove, \
                         model_load, model_unload, hive_check";
        let err = parse(r#"{"operation":"frobnicate","hive_id":"h"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("unknown operation 'frobnicate'; supported operations: {supported}")
        );
        assert_eq!(err.code(), "unknown_operation");
        let err = parse(r#"{"operation":"worker_build","hive_id":"h"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "operation 'worker_build' is not run by this rbee-hive; \
                 supported operations: {supported}"
            )
        );
        assert_eq!(err.code(), "unsupported_operation");
    }

    #[test]
    fn catalog_operations_take_upstreams_fields() {
        assert_eq!(
            parse(r#"{"operation":"model_delete","hive_id":"h","id":"tiny","force":true}"#),
            Ok(Operation::ModelDelete {
                hive_id: "h".into(),
                id: "tiny".into(),
                force: true
            })
        );
        assert_eq!(
            parse(
                r#"{"operation":"model_download","hive_id":"h","model":"TheBloke/TinyLlama-GGUF"}"#
            ),
            Ok(Operation::ModelDownload {
                hive_id: "h".into(),
                model: "TheBloke/TinyLlama-GGUF".into(),
                id: None,
                sha256: None
            })
        );
        assert_eq!(
            parse(
                r#"{"operation":"worker_binary_get","hive_id":"h","worker_type":"cpu-llm-worker-rbee-v0.1.0-linux"}"#
            ),
            Ok(Operation::WorkerBinaryGet {
                hive_id: "h".into(),
                worker_type: "cpu-llm-worker-rbee-v0.1.0-linux".into()
            })
        );
        let err = parse(r#"{"operation":"model_delete","hive_id":"h","id":"x","force":"yes"}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `force` must be true or false, got a string"
        );
    }

    #[test]
    fn worker_catalog_operations_take_todays_fields() {
        assert_eq!(
            parse(r#"{"operation":"worker_catalog_list","hive_id":"h"}"#),
            Ok(Operation::WorkerCatalogList {
                hive_id: "h".into()
            })
        );
        assert_eq!(
            parse(
                r#"{"operation":"worker_catalog_get","hive_id":"h","worker_id":"llm-worker-rbee-cpu"}"#
            ),
            Ok(Operation::WorkerCatalogGet {
                hive_id: "h".into(),
                worker_id: "llm-worker-rbee-cpu".into()
            })
        );
        assert_eq!(
            parse(r#"{"operation":"worker_install","hive_id":"h","worker_id":"w-bin"}"#),
            Ok(Operation::WorkerInstall {
                hive_id: "h".into(),
                worker_id: "w-bin".into()
            })
        );
        let err = parse(r#"{"operation":"worker_install","hive_id":"h"}"#).unwrap_err();
        assert_eq!(
            err,
            OperationError::MissingField {
                operation: "worker_install",
                field: "worker_id",
                expected: CATALOG_ID
            }
        );
        for id in [
            "../etc", "a/b", ".hidden", "-rf", "a\\b", "nul\u{0}", "x..y",
        ] {
            let body =
                serde_json::json!({"operation": "worker_install", "hive_id": "h", "worker_id": id});
            let err = parse(&body.to_string()).unwrap_err();
            assert_eq!(err.code(), "invalid_field", "{id:?}: {err}");
        }
        assert!(!is_upstream_only("worker_install"));
    }

    #[test]
    fn todays_catalog_names_take_worker_id() {
        assert_eq!(
            parse(r#"{"operation":"worker_list_installed","hive_id":"h"}"#),
            Ok(Operation::WorkerListInstalled {
                hive_id: "h".into()
            })
        );
        assert_eq!(
            parse(r#"{"operation":"worker_installed_get","hive_id":"h","worker_id":"llm-cpu"}"#),
            Ok(Operation::WorkerInstalledGet {
                hive_id: "h".into(),
                worker_id: "llm-cpu".into()
            })
        );
        assert_eq!(
            parse(r#"{"hive_id":"h","operation":"worker_remove","worker_id":"llm-cpu"}"#),
            Ok(Operation::WorkerRemove {
                hive_id: "h".into(),
                worker_id: "llm-cpu".into()
            })
        );
        // Each keeps its own name (jobs and metrics count by the name sent).
        let op = parse(r#"{"operation":"worker_remove","hive_id":"h","worker_id":"x"}"#).unwrap();
        assert_eq!(op.name(), "worker_remove");
        let err = parse(r#"{"operation":"worker_installed_get","hive_id":"h","worker_type":"x"}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing field `worker_id` (a catalog id string such as \"tinyllama\") for operation worker_installed_get"
        );
        let err =
            parse(r#"{"operation":"worker_remove","hive_id":"h","worker_id":3}"#).unwrap_err();
        assert_eq!(err.code(), "invalid_field");
    }

    #[test]
    fn model_load_parses_each_device_form() {
        let load = |device: &str| {
            parse(&format!(
                r#"{{"operation":"model_load","hive_id":"h","id":"tiny","device":"{device}"}}"#
            ))
        };
        for (text, device) in [
            ("cpu", LoadDevice::Cpu(0)),
            ("CPU-0", LoadDevice::Cpu(0)),
            ("cpu:2", LoadDevice::Cpu(2)),
            ("cuda:1", LoadDevice::Cuda(1)),
            ("cuda", LoadDevice::Cuda(0)),
            ("GPU-3", LoadDevice::Cuda(3)),
            ("gpu-0", LoadDevice::Cuda(0)),
            ("metal:0", LoadDevice::Metal(0)),
            ("METAL-1", LoadDevice::Metal(1)),
        ] {
            assert_eq!(
                load(text),
                Ok(Operation::ModelLoad {
                    hive_id: "h".into(),
                    id: "tiny".into(),
                    device
                }),
                "{text}"
            );
        }
        // Serialised as the device name, which parses back to the same device.
        let op = load("cuda:1").unwrap();
        let json = serde_json::to_value(&op).unwrap();
        assert_eq!(json["device"], "GPU-1");
        assert_eq!(Operation::parse(json.to_string().as_bytes()), Ok(op));
        assert_eq!(LoadDevice::Cuda(1).ordinal(), 1);
        assert_eq!(LoadDevice::Metal(0).kind_name(), "metal");
    }

    #[test]
    fn model_load_refuses_bad_devices_naming_the_field() {
        for device in [
            "tpu:0",
            "cuda:",
            "cuda:x",
            "cuda:-1",
            "cuda:+1",
            "GPU-",
            "cuda:99999999999",
            "cpu 0",
            "gpu:0:1",
        ] {
            let body = format!(
                r#"{{"operation":"model_load","hive_id":"h","id":"tiny","device":"{device}"}}"#
            );
            let err = parse(&body).unwrap_err();
            assert_eq!(err.code(), "invalid_field", "{device}: {err}");
            assert!(
                err.to_string()
                    .starts_with("field `device` must be a device such as \"cpu\""),
                "{err}"
            );
        }
        // An ordinal number (worker_spawn's form) is the wrong type here.
        let err = parse(r#"{"operation":"model_load","hive_id":"h","id":"tiny","device":0}"#)
            .unwrap_err();
        assert!(
            matches!(
                err,
                OperationError::WrongType {
                    field: "device",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse(r#"{"operation":"model_load","hive_id":"h","id":"tiny"}"#).unwrap_err();
        assert!(
            matches!(
                err,
                OperationError::MissingField {
                    field: "device",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse(r#"{"operation":"model_load","hive_id":"h","device":"cpu"}"#).unwrap_err();
        assert!(
            matches!(err, OperationError::MissingField { field: "id", .. }),
            "{err}"
        );
    }

    #[test]
    fn model_unload_takes_an_id() {
        assert_eq!(
            parse(r#"{"operation":"model_unload","hive_id":"h","id":"tiny"}"#),
            Ok(Operation::ModelUnload {
                hive_id: "h".into(),
                id: "tiny".into()
            })
        );
        let err = parse(r#"{"operation":"model_unload","hive_id":"h"}"#).unwrap_err();
        assert!(
            matches!(err, OperationError::MissingField { field: "id", .. }),
            "{err}"
        );
        let err = parse(r#"{"operation":"model_unload","hive_id":"h","id":""}"#).unwrap_err();
        assert_eq!(err.code(), "invalid_field");
    }

    #[test]
    fn hive_check_takes_an_optional_alias_and_no_hive_id() {
        assert_eq!(
            parse(r#"{"operation":"hive_check"}"#),
            Ok(Operation::HiveCheck {
                alias: "localhost".into()
            })
        );
        let op = parse(r#"{"operation":"hive_check","alias":"gpu-box"}"#).unwrap();
        assert_eq!(
            op,
            Operation::HiveCheck {
                alias: "gpu-box".into()
            }
        );
        assert_eq!(op.hive_id(), None);
        assert!(!is_upstream_only("hive_check"));
        // The other hive_* names stay refused as jobs.
        assert_eq!(
            parse(r#"{"operation":"hive_start","hive_id":"h"}"#)
                .unwrap_err()
                .code(),
            "unsupported_operation"
        );
        let err = parse(r#"{"operation":"hive_check","alias":7}"#).unwrap_err();
        assert!(
            matches!(err, OperationError::WrongType { field: "alias", .. }),
            "{err}"
        );
        let err = parse(&format!(
            r#"{{"operation":"hive_check","alias":"{}"}}"#,
            "a".repeat(300)
        ))
        .unwrap_err();
        assert_eq!(err.code(), "invalid_field");
    }

    #[test]
    fn process_operations_take_any_non_negative_pid() {
        assert_eq!(
            parse(r#"{"hive_id":"tap","operation":"worker_process_get","pid":4294967295}"#),
            Ok(Operation::WorkerProcessGet {
                hive_id: "tap".into(),
                pid: 4_294_967_295
            })
        );
        assert_eq!(
            parse(r#"{"hive_id":"tap","operation":"worker_process_list"}"#),
            Ok(Operation::WorkerProcessList {
                hive_id: "tap".into()
            })
        );
        assert_eq!(
            parse(r#"{"hive_id":"t","operation":"worker_process_delete","pid":-1}"#)
                .unwrap_err()
                .code(),
            "invalid_field"
        );
        assert_eq!(
            parse(r#"{"hive_id":"t","operation":"worker_process_delete"}"#)
                .unwrap_err()
                .code(),
            "missing_field"
        );
    }

    #[test]
    fn refuses_dangerous_values() {
        for body in [
            r#"{"operation":"worker_spawn","hive_id":"h","model":"--help","worker":"cpu","device":0}"#,
            r#"{"operation":"worker_spawn","hive_id":"h","model":"m","worker":"../cpu","device":0}"#,
            r#"{"operation":"worker_get","hive_id":"h","id":"a\u0000b"}"#,
            r#"{"operation":"worker_get","hive_id":"h\nx","id":"w"}"#,
            r#"{"operation":"worker_get","hive_id":"","id":"w"}"#,
            r#"{"operation":"worker_delete","hive_id":"h","id":"w","grace_ms":-1}"#,
            r#"{"operation":"worker_delete","hive_id":"h","id":"w","grace_ms":1e30}"#,
            r#"{"operation":"worker_delete","hive_id":"h","id":"w","grace_ms":99999999999}"#,
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.code(), "invalid_field", "{body}: {err}");
        }
    }

    #[test]
    fn duplicated_keys_are_refused() {
        let err = parse(r#"{"operation":"worker_list","hive_id":"a","hive_id":"b"}"#).unwrap_err();
        assert_eq!(err, OperationError::DuplicateKey("hive_id".into()));
        assert_eq!(err.code(), "duplicate_key");
        let err = parse(r#"{"operation":"worker_list","operation":"worker_delete","hive_id":"a"}"#)
            .unwrap_err();
        assert_eq!(err, OperationError::DuplicateKey("operation".into()));
        // Nested objects are not the operation's fields; only the top level is checked.
        assert!(parse(r#"{"operation":"worker_list","hive_id":"a","x":{"k":1,"k":2}}"#).is_ok());
    }

    #[test]
    fn malformed_bodies() {
        assert_eq!(parse("{").unwrap_err().code(), "malformed_json");
        assert_eq!(
            parse("[]").unwrap_err(),
            OperationError::NotAnObject("an array")
        );
        assert_eq!(parse("{}").unwrap_err(), OperationError::MissingOperation);
        assert_eq!(
            parse(r#"{"operation":7}"#).unwrap_err().code(),
            "invalid_field"
        );
    }
}

/// Property tests (a fuzz target run on every `cargo test`): the parser never panics, and
/// whatever it accepts is a valid operation that survives a round trip.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("worker_spawn"),
                Just("worker_list"),
                Just("worker_get"),
                Just("worker_delete"),
                Just("model_load"),
                Just("hive_check"),
                Just("cuda:1"),
                Just("worker-1"),
                Just("-x"),
                Just("")
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("operation"),
            Just("hive_id"),
            Just("id"),
            Just("model"),
            Just("worker"),
            Just("device"),
            Just("grace_ms"),
            Just("worker_id"),
            Just("alias"),
            Just("extra")
        ]
        .prop_map(str::to_owned)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Operation::parse(&bytes);
        }

        #[test]
        fn arbitrary_objects_parse_or_name_their_problem(
            fields in prop::collection::btree_map(field_name(), json_value(), 0..7)
        ) {
            let body = serde_json::to_vec(&Value::Object(fields.into_iter().collect())).unwrap();
            match Operation::parse(&body) {
                Ok(operation) => {
                    let again = Operation::parse(&serde_json::to_vec(&operation).unwrap()).unwrap();
                    prop_assert_eq!(&again, &operation);
                    prop_assert!(!operation.hive_id().is_some_and(str::is_empty));
                    if let Operation::WorkerSpawn { model, .. } = &operation {
                        prop_assert!(!model.starts_with('-'));
                    }
                }
                Err(error) => {
                    prop_assert!(!error.to_string().is_empty());
                    prop_assert!(!error.code().is_empty());
                }
            }
        }

        #[test]
        fn valid_spawns_round_trip(
            hive_id in "[a-z][a-z0-9-]{0,20}",
            model in "[a-zA-Z0-9_./][a-zA-Z0-9_./ -]{0,40}",
            worker in "[a-z][a-z0-9_-]{0,20}",
            device in any::<u32>(),
        ) {
            let op = Operation::WorkerSpawn { hive_id, model, worker, device };
            prop_assert_eq!(Operation::parse(&serde_json::to_vec(&op).unwrap()).unwrap(), op);
        }
    }
}
