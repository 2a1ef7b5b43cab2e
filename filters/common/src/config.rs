//! Plugin configuration parsing with errors that name the JSON path of the
//! mistake, e.g. `$.experiments[0].variants[1].weight: expected u32`.
//!
//! Two kinds of mistakes are reported the same way:
//! * shape errors (unknown field, wrong type, missing field) come from serde,
//!   with the path tracked by `serde_path_to_error`;
//! * meaning errors (zero total weight, duplicate names, bad header names)
//!   come from each filter's validation step via [`ConfigError::at`].

use std::fmt;

use serde::de::DeserializeOwned;

/// A configuration mistake: where it is (JSONPath) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSONPath of the offending value, `$` for the document itself.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid plugin config at {}: {}",
            self.path, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Deserialize `bytes` (the pluginConfig JSON) into `T`, reporting the JSON
/// path of the first mistake.
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = json_path(&err.path().to_string());
        let inner = err.into_inner();
        ConfigError::at(path, describe_serde_error(&inner))
    })?;
    // Trailing garbage after the document is a mistake too, not something to ignore.
    de.end()
        .map_err(|err| ConfigError::at("$", describe_serde_error(&err)))?;
    Ok(value)
}

/// `serde_path_to_error` prints `a.b[0]`, or `.` for the root; turn it into JSONPath.
fn json_path(raw: &str) -> String {
    match raw {
        "" | "." => "$".to_string(),
        p if p.starts_with('[') => format!("${p}"),
        p => format!("$.{p}"),
    }
}

fn describe_serde_error(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Eof => format!("config is truncated ({err})"),
        Category::Syntax => format!("config is not valid JSON ({err})"),
        Category::Io => format!("could not read config ({err})"),
        Category::Data => err.to_string(),
    }
}

/// Builds child JSON paths while validating, so messages stay consistent.
#[derive(Debug, Clone)]
pub struct PathBuf(String);

impl PathBuf {
    pub fn root() -> Self {
        Self("$".to_string())
    }
    pub fn field(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }
    pub fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.0.clone(), message)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        weight: u32,
    }

    #[test]
    fn wrong_type_names_path() {
        let err = parse_config::<Outer>(br#"{"items":[{"weight":1},{"weight":"x"}]}"#).unwrap_err();
        assert_eq!(err.path, "$.items[1].weight");
        assert!(err.message.contains("expected u32"), "{}", err.message);
    }

    #[test]
    fn unknown_field_names_path() {
        let err = parse_config::<Outer>(br#"{"items":[{"weight":1,"wieght":2}]}"#).unwrap_err();
        assert_eq!(err.path, "$.items[0].wieght");
        assert!(
            err.message.contains("unknown field `wieght`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_field_names_parent() {
        let err = parse_config::<Outer>(br#"{"items":[{}]}"#).unwrap_err();
        assert_eq!(err.path, "$.items[0]");
        assert!(
            err.message.contains("missing field `weight`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn syntax_error_and_trailing_garbage() {
        let err = parse_config::<Outer>(br#"{"items": [}"#).unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        let err = parse_config::<Outer>(br#"{"items": []} x"#).unwrap_err();
        assert_eq!(err.path, "$");
        let err = parse_config::<Outer>(b"").unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
    }

    #[test]
    fn display_includes_path() {
        let e = PathBuf::root().field("a").index(2).err("boom");
        assert_eq!(e.to_string(), "invalid plugin config at $.a[2]: boom");
    }
}
