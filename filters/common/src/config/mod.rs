//! Plugin configuration parsing with errors that name the JSON path of the
//! mistake, e.g. `$.experiments[0].variants[1].weight: expected u32`.
//!
//! Two kinds of mistakes are reported the same way:
//! * shape errors (unknown field, wrong type, missing field) come from serde,
//!   with the path tracked by this module's deserializer ([`de`]);
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

mod de;

/// Deserialize `bytes` (the pluginConfig JSON) into `T`, reporting the JSON
/// path of the first mistake.
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    parse_config_at(bytes, &JsonPath::root())
}

/// Like [`parse_config`], for a document that sits at `base` inside a larger
/// one (a stage's section of a combined config): paths start at `base`.
/// A JSON syntax error has no path; it is reported at `base` with the line
/// and column of the mistake.
pub fn parse_config_at<T: DeserializeOwned>(
    bytes: &[u8],
    base: &JsonPath,
) -> Result<T, ConfigError> {
    from_value_at(parse_json_at(bytes, base)?, base)
}

/// The document as a JSON value; syntax errors (and trailing garbage after
/// the document) reported at `base` with their line and column.
pub fn parse_json_at(bytes: &[u8], base: &JsonPath) -> Result<serde_json::Value, ConfigError> {
    json_value(bytes).map_err(|err| ConfigError::at(base.as_str(), describe_serde_error(&err)))
}

/// `bytes` as a JSON value. One non-generic copy of serde_json's `Value`
/// parser for every user in a module (each crate compiled at opt-level 3
/// would otherwise carry its own, ~5 KB of wasm).
pub fn json_value(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Deserialize an already parsed JSON value (a section of a combined config)
/// into `T`, with paths starting at `base`.
pub fn from_value_at<T: DeserializeOwned>(
    value: serde_json::Value,
    base: &JsonPath,
) -> Result<T, ConfigError> {
    de::from_value(value).map_err(|err| {
        ConfigError::at(
            format!("{}{}", base.as_str(), err.path_suffix()),
            err.message,
        )
    })
}

fn describe_serde_error(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Eof => format!(
            "config is truncated: the JSON document ends early (line {}, column {})",
            err.line(),
            err.column()
        ),
        Category::Syntax => format!(
            "config is not valid JSON: {} (line {}, column {})",
            syntax_message(err),
            err.line(),
            err.column()
        ),
        Category::Io => format!("could not read config ({err})"),
        Category::Data => err.to_string(),
    }
}

/// serde_json's message without its own " at line X column Y" suffix.
fn syntax_message(err: &serde_json::Error) -> String {
    let full = err.to_string();
    match full.rfind(" at line ") {
        Some(i) => full.get(..i).unwrap_or(&full).to_string(),
        None => full,
    }
}

/// A JSONPath (`$.experiments[0].name`), built while validating so every
/// message names the same place the same way. A stage inside a combined
/// config starts from its own base (`$.ab_routing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(String);

impl JsonPath {
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
        assert_eq!(err.path, "$");
        let err = parse_config::<Outer>(br#"{"items": []} x"#).unwrap_err();
        assert_eq!(err.path, "$");
        let err = parse_config::<Outer>(b"").unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
    }

    #[test]
    fn display_includes_path() {
        let e = JsonPath::root().field("a").index(2).err("boom");
        assert_eq!(e.to_string(), "invalid plugin config at $.a[2]: boom");
    }

    #[test]
    fn paths_start_at_the_base() {
        let base = JsonPath::root().field("ab_routing");
        let err = parse_config_at::<Outer>(br#"{"items":[{"weight":"x"}]}"#, &base).unwrap_err();
        assert_eq!(err.path, "$.ab_routing.items[0].weight");
        let err = parse_config_at::<Outer>(br#"{"nope":1}"#, &base).unwrap_err();
        assert_eq!(err.path, "$.ab_routing.nope");
        let value = serde_json::json!({"items": [{"weight": 1}, {}]});
        let err = from_value_at::<Outer>(value, &base).unwrap_err();
        assert_eq!(err.path, "$.ab_routing.items[1]");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Part {
        Ip,
        Header(String),
        Pair { a: u8 },
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Parts {
        parts: Vec<Part>,
        limit: Option<u32>,
    }

    #[test]
    fn enums_sequences_and_options_name_their_paths() {
        let ok = parse_config::<Parts>(
            br#"{"parts":["ip",{"header":"x"},{"pair":{"a":1}}],"limit":null}"#,
        );
        assert!(ok.is_ok(), "{ok:?}");
        let err = parse_config::<Parts>(br#"{"parts":["ip",{"header":5}]}"#).unwrap_err();
        assert_eq!(err.path, "$.parts[1].header");
        assert!(err.message.contains("expected a string"), "{}", err.message);
        let err = parse_config::<Parts>(br#"{"parts":[{"pair":{"a":300}}]}"#).unwrap_err();
        assert_eq!(err.path, "$.parts[0].pair.a");
        assert!(
            err.message.contains("invalid value: integer `300`"),
            "{}",
            err.message
        );
        let err = parse_config::<Parts>(br#"{"parts":["port"]}"#).unwrap_err();
        assert_eq!(err.path, "$.parts[0]");
        assert!(
            err.message.contains("unknown variant `port`"),
            "{}",
            err.message
        );
        let err = parse_config::<Parts>(br#"{"parts":[{"ip":null,"header":"x"}]}"#).unwrap_err();
        assert_eq!(err.path, "$.parts[0]");
        let err = parse_config::<Parts>(br#"{"parts":[],"limit":1.5}"#).unwrap_err();
        assert_eq!(err.path, "$.limit");
        assert_eq!(
            err.message,
            "invalid type: floating point `1.5`, expected u32"
        );
        let err = parse_config::<Parts>(br#"{"parts":null}"#).unwrap_err();
        assert_eq!(err.message, "invalid type: null, expected a sequence");
        let err = parse_config::<Parts>(br#"[1]"#).unwrap_err();
        assert_eq!(err.path, "$");
        assert!(
            err.message.contains("invalid type: sequence"),
            "{}",
            err.message
        );
    }

    #[test]
    fn syntax_errors_give_line_and_column_not_a_bogus_path() {
        let err =
            parse_config::<Outer>(b"{\n  \"items\": [\n    {\"weight\": 1,}\n  ]\n}").unwrap_err();
        assert_eq!(err.path, "$");
        assert!(err.message.contains("line 3, column 18"), "{}", err.message);
        assert!(!err.message.contains(" at line "), "{}", err.message);
    }
}

/// Helpers for the config tests every filter writes: a good document with
/// one edit must fail at one JSON path with a message saying why.
pub mod testing {
    #![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

    use super::ConfigError;

    /// `good` (JSON) with `edit` applied, parsed by `parse`: its error.
    /// Panics if the edited document still parses.
    pub fn error_after_edit<T>(
        good: &str,
        edit: impl FnOnce(&mut serde_json::Value),
        parse: impl FnOnce(&[u8]) -> Result<T, ConfigError>,
    ) -> ConfigError {
        let mut v: serde_json::Value = serde_json::from_str(good).expect("the good config is JSON");
        edit(&mut v);
        match parse(v.to_string().as_bytes()) {
            Ok(_) => panic!("the edited config was accepted: {v}"),
            Err(e) => e,
        }
    }

    /// The error names `path` and its message contains `needle`.
    pub fn assert_error(err: &ConfigError, path: &str, needle: &str) {
        assert_eq!(err.path, path, "{err}");
        assert!(
            err.message.contains(needle),
            "`{}` lacks `{needle}`",
            err.message
        );
    }
}
