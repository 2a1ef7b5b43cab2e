//! The limits file: limitador-server's format, so its configs can be reused.
//!
//! A YAML list of limits:
//!
//! ```yaml
//! - namespace: api                 # must equal the request's `domain`
//!   max_value: 100
//!   seconds: 60
//!   conditions: ["descriptors[0].path == '/v1/x'"]   # CEL, all must hold
//!   variables: ["descriptors[0].client_id"]          # CEL, one counter per value
//!   name: per-client                                 # optional, shown in X-RateLimit-Limit
//! ```
//!
//! Everything is checked before the service starts: unknown fields, CEL that does
//! not parse, CEL that names anything but `descriptors` (limitador 1.x's
//! `path == '/v1/x'` parses as CEL but could never match), a zero window, and
//! duplicates (limitador keys a limit by namespace, window, conditions and variables).

use limitador::limit::{Expression, Limit, Predicate};
use serde::Deserialize;
use std::fmt;

/// One entry of the file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitEntry {
    namespace: String,
    max_value: u64,
    seconds: u64,
    #[serde(default)]
    conditions: Vec<String>,
    #[serde(default)]
    variables: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    /// limitador-server accepts an `id`; kept so its files load unchanged.
    #[serde(default)]
    id: Option<String>,
}

/// Why a limits file was refused; `entry` is the 0-based index in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsError {
    pub entry: Option<usize>,
    pub message: String,
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entry {
            Some(i) => write!(f, "limit #{i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for LimitsError {}

/// The names a condition or variable may use: the request's descriptors (what
/// limitador-server binds for Envoy's API) and the limit itself.
const BOUND_NAMES: [&str; 2] = ["descriptors", "limit"];

/// Parses and validates a limits file's text into limitador limits.
pub fn parse_limits(text: &str) -> Result<Vec<Limit>, LimitsError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let entries: Option<Vec<LimitEntry>> =
        serde_path_to_error::deserialize(de).map_err(yaml_error)?;
    let entries = entries.ok_or_else(|| LimitsError {
        entry: None,
        message: "the file is empty (`[]` is a list of no limits)".to_string(),
    })?;

    let mut limits: Vec<Limit> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let limit = to_limit(entry).map_err(|message| LimitsError {
            entry: Some(i),
            message,
        })?;
        if let Some(j) = limits.iter().position(|l| l == &limit) {
            return Err(LimitsError {
                entry: Some(i),
                message: format!(
                    "same namespace, seconds, conditions and variables as limit #{j} \
                     (limitador would keep only one of them)"
                ),
            });
        }
        limits.push(limit);
    }
    Ok(limits)
}

/// serde's error as `field: message`, the entry index apart (serde_yaml's own
/// `.[3].field: ` prefix dropped: the index is in `entry`).
fn yaml_error(err: serde_path_to_error::Error<serde_yaml::Error>) -> LimitsError {
    let mut entry = None;
    let mut fields = String::new();
    for segment in err.path().iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } if entry.is_none() => entry = Some(*index),
            other => fields.push_str(&other.to_string()),
        }
    }
    let inner = err.inner().to_string();
    let inner = match inner.split_once(": ") {
        Some((path, rest)) if path.starts_with(".[") || path.starts_with('[') => rest.to_string(),
        _ => inner,
    }
    .replace(
        "struct LimitEntry",
        "a limit (namespace, max_value, seconds, conditions, variables, name, id)",
    );
    let fields = fields.trim_start_matches('.');
    let message = if fields.is_empty() {
        inner
    } else {
        format!("{fields}: {inner}")
    };
    LimitsError { entry, message }
}

fn to_limit(entry: LimitEntry) -> Result<Limit, String> {
    if entry.namespace.is_empty() {
        return Err(
            "namespace: must not be empty (it is matched against the request's domain)".to_string(),
        );
    }
    if entry.seconds == 0 {
        return Err("seconds: must be at least 1".to_string());
    }
    let mut conditions = Vec::with_capacity(entry.conditions.len());
    for (k, source) in entry.conditions.iter().enumerate() {
        let what = format!("conditions[{k}] `{source}`");
        check_names(&what, source)?;
        conditions.push(Predicate::parse(source).map_err(|e| format!("{what}: {e}"))?);
    }
    let mut variables = Vec::with_capacity(entry.variables.len());
    for (k, source) in entry.variables.iter().enumerate() {
        let what = format!("variables[{k}] `{source}`");
        check_names(&what, source)?;
        variables.push(Expression::parse(source).map_err(|e| format!("{what}: {e}"))?);
    }
    let mut limit = match entry.id {
        Some(id) => Limit::with_id(
            id,
            entry.namespace,
            entry.max_value,
            entry.seconds,
            conditions,
            variables,
        ),
        None => Limit::new(
            entry.namespace,
            entry.max_value,
            entry.seconds,
            conditions,
            variables,
        ),
    };
    if let Some(name) = entry.name {
        limit.set_name(name);
    }
    Ok(limit)
}

/// Refuses CEL that names anything limitador does not bind for Envoy's API: such
/// a limit would parse and load but never apply.
fn check_names(what: &str, source: &str) -> Result<(), String> {
    let expr = Expression::parse(source).map_err(|e| format!("{what}: {e}"))?;
    let mut unbound: Vec<String> = expr
        .variables()
        .into_iter()
        .filter(|v| !BOUND_NAMES.contains(&v.as_str()))
        .collect();
    if unbound.is_empty() {
        return Ok(());
    }
    unbound.sort();
    Err(format!(
        "{what}: names {}; only `descriptors` (the request's descriptors, e.g. \
         `descriptors[0].path == '/v1/x'`) and `limit` are defined, so this limit would never apply \
         (limitador 1.x's `path == '/v1/x'` is `descriptors[0].path == '/v1/x'` since 2.0)",
        unbound
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
- namespace: api
  max_value: 100
  seconds: 60
  conditions: ["descriptors[0].path == '/v1/x'"]
  variables: ["descriptors[0].client_id"]
- namespace: api
  max_value: 5
  seconds: 1
  name: burst
- namespace: other
  max_value: 0
  seconds: 3600
  id: blocked
  conditions:
    - "descriptors[0]['req.method'] == 'DELETE'"
    - "descriptors[1].tier != 'gold'"
"#;

    fn err(text: &str) -> LimitsError {
        match parse_limits(text) {
            Ok(limits) => panic!("accepted: {limits:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_limitador_server_format() {
        let limits = parse_limits(EXAMPLE).unwrap();
        assert_eq!(limits.len(), 3);
        let first = &limits[0];
        assert_eq!(first.namespace().as_ref(), "api");
        assert_eq!(first.max_value(), 100);
        assert_eq!(first.seconds(), 60);
        assert_eq!(
            first.conditions().into_iter().collect::<Vec<_>>(),
            vec!["descriptors[0].path == '/v1/x'".to_string()]
        );
        assert_eq!(
            first.variables().into_iter().collect::<Vec<_>>(),
            vec!["descriptors[0].client_id".to_string()]
        );
        assert_eq!(first.name(), None);
        assert_eq!(limits[1].name(), Some("burst"));
        assert!(limits[1].conditions().is_empty());
        assert_eq!(limits[2].id(), Some("blocked"));
        assert_eq!(limits[2].max_value(), 0);
        assert_eq!(limits[2].conditions().len(), 2);
    }

    #[test]
    fn empty_list_is_no_limits_but_an_empty_file_is_refused() {
        assert!(parse_limits("[]").unwrap().is_empty());
        let e = err("\n# nothing\n");
        assert_eq!(e.entry, None);
        assert!(e.message.starts_with("the file is empty"), "{e}");
        let e = err("");
        assert_eq!(e.entry, None);
        assert!(e.message.starts_with("the file is empty"), "{e}");
    }

    #[test]
    fn missing_field_names_the_entry() {
        let e = err("- {namespace: a, max_value: 1, seconds: 1}\n- {namespace: a, max_value: 1}\n");
        assert_eq!(e.entry, Some(1));
        assert!(e.message.contains("missing field `seconds`"), "{e}");
        assert!(e.to_string().starts_with("limit #1: "), "{e}");
    }

    #[test]
    fn wrong_type_names_the_entry_and_field() {
        let e = err("- {namespace: a, max_value: lots, seconds: 1}\n");
        assert_eq!(e.entry, Some(0));
        assert_eq!(
            e.to_string(),
            "limit #0: max_value: invalid type: string \"lots\", expected u64 at line 1 column 29"
        );
        let e = err("- {namespace: a, max_value: 1, seconds: 1, conditions: [1, {a: b}]}\n");
        assert_eq!(
            e.to_string(),
            "limit #0: conditions[1]: invalid type: map, expected a string at line 1 column 60"
        );
        let e = err("- {namespace: a, max_value: 1, seconds: 1}\n- just a string\n");
        assert_eq!(e.entry, Some(1));
        assert!(
            e.message.starts_with(
                "invalid type: string \"just a string\", expected a limit (namespace, "
            ),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let e = err("- {namespace: a, max_value: 1, seconds: 1, max_vaule: 2}\n");
        assert_eq!(e.entry, Some(0));
        assert!(e.message.contains("unknown field `max_vaule`"), "{e}");
    }

    #[test]
    fn not_a_list_has_no_entry() {
        let e = err("namespace: a\n");
        assert_eq!(e.entry, None);
        assert!(e.message.contains("expected a sequence"), "{e}");
    }

    #[test]
    fn bad_cel_names_entry_and_expression() {
        let e = err(concat!(
            "- {namespace: a, max_value: 1, seconds: 1}\n",
            "- {namespace: a, max_value: 1, seconds: 1, conditions: [\"descriptors[0].x ==\"]}\n"
        ));
        assert_eq!(e.entry, Some(1));
        assert!(
            e.message
                .starts_with("conditions[0] `descriptors[0].x ==`: "),
            "{e}"
        );
        let e =
            err("- {namespace: a, max_value: 1, seconds: 1, variables: [\"descriptors[0].\"]}\n");
        assert!(e.message.starts_with("variables[0] "), "{e}");
    }

    #[test]
    fn limitador_1x_syntax_is_refused_with_the_new_spelling() {
        let e =
            err("- {namespace: a, max_value: 1, seconds: 1, conditions: [\"path == '/v1/x'\"]}\n");
        assert_eq!(e.entry, Some(0));
        assert!(e.message.contains("names `path`"), "{e}");
        assert!(e.message.contains("descriptors[0].path == '/v1/x'"), "{e}");
        let e = err("- {namespace: a, max_value: 1, seconds: 1, variables: [user]}\n");
        assert!(
            e.message.contains("variables[0] `user`: names `user`"),
            "{e}"
        );
    }

    #[test]
    fn zero_window_and_empty_namespace_are_refused() {
        let e = err("- {namespace: a, max_value: 1, seconds: 0}\n");
        assert_eq!(e.message, "seconds: must be at least 1");
        let e = err("- {namespace: '', max_value: 1, seconds: 1}\n");
        assert!(e.message.starts_with("namespace: must not be empty"), "{e}");
    }

    #[test]
    fn duplicate_limit_is_refused() {
        let e = err(concat!(
            "- {namespace: a, max_value: 1, seconds: 60, variables: [\"descriptors[0].u\"]}\n",
            "- {namespace: b, max_value: 1, seconds: 60}\n",
            "- {namespace: a, max_value: 9, seconds: 60, variables: [\"descriptors[0].u\"]}\n",
        ));
        assert_eq!(e.entry, Some(2));
        assert!(e.message.contains("as limit #0"), "{e}");
    }
}
