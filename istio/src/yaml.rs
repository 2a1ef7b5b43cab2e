//! YAML for the policy file and the rendered manifests, on `saphyr`
//! (YAML 1.2, pure Rust, maintained; see the README's library notes).
//!
//! Reading keeps the line of every node: [`Located`] is the document as a
//! `serde_json::Value` plus a map from each node's path (`services.checkout
//! .connectionPool`, `experiments.checkout.variants[1].weight`, the same
//! spelling `serde_path_to_error` uses) to its 1-based line, so every error
//! can name both. Writing turns a `serde_json::Value` into block YAML with
//! keys in sorted order (serde_json's maps are sorted), so output is stable.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, Yaml, YamlData, YamlEmitter};
use serde_json::{Map, Number, Value};

/// A YAML document with the line of every node.
#[derive(Debug, Clone, Default)]
pub struct Located {
    pub value: Value,
    pub lines: HashMap<String, usize>,
}

impl Located {
    /// Line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            p = parent(p)?;
        }
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> `` -> None.
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    path.get(..cut)
}

/// `parent` + `key`, as serde_path_to_error spells it.
pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Parses one YAML document. Errors carry `origin:line:column`.
pub fn load(text: &str, origin: &str) -> Result<Located, String> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let m = e.marker();
        format!(
            "{origin}:{}:{}: not valid YAML: {}",
            m.line(),
            m.col() + 1,
            e.info()
        )
    })?;
    let mut docs = docs.into_iter();
    let Some(doc) = docs.next() else {
        return Err(format!("{origin}: empty document"));
    };
    if let Some(extra) = docs.next() {
        return Err(format!(
            "{origin}:{}: expected one YAML document, found another",
            extra.span.start.line()
        ));
    }
    let mut lines = HashMap::new();
    let value = convert(&doc, "", &mut lines, origin)?;
    Ok(Located { value, lines })
}

fn convert(
    node: &MarkedYaml<'_>,
    path: &str,
    lines: &mut HashMap<String, usize>,
    origin: &str,
) -> Result<Value, String> {
    let line = node.span.start.line();
    lines.insert(path.to_string(), line);
    let at = |what: &str| {
        let shown = if path.is_empty() { "(document)" } else { path };
        format!("{origin}:{line}: {shown}: {what}")
    };
    Ok(match &node.data {
        YamlData::Value(s) => scalar(s).ok_or_else(|| at("numbers must be finite"))?,
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, n)| convert(n, &index(path, i), lines, origin))
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(s) => match scalar(s) {
                        Some(Value::String(s)) => s,
                        Some(other) => other.to_string(),
                        None => return Err(at("a key must be a string")),
                    },
                    _ => return Err(at("a key must be a string")),
                };
                let p = child(path, &key);
                let value = convert(v, &p, lines, origin)?;
                lines.insert(p, k.span.start.line());
                out.insert(key, value);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => convert(inner, path, lines, origin)?,
        YamlData::Alias(_) => {
            return Err(at("YAML aliases are not supported; write the value out"))
        }
        YamlData::BadValue => return Err(at("a value that is not valid YAML")),
    })
}

fn scalar(s: &Scalar<'_>) -> Option<Value> {
    Some(match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number(Number::from(*i)),
        Scalar::FloatingPoint(f) => Value::Number(Number::from_f64(f.into_inner())?),
        Scalar::String(s) => Value::String(s.to_string()),
    })
}

fn to_yaml(v: &Value) -> Yaml<'static> {
    match v {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Yaml::Value(Scalar::Integer(i)),
            (None, Some(f)) => Yaml::Value(Scalar::FloatingPoint(f.into())),
            (None, None) => Yaml::Value(Scalar::String(n.to_string().into())),
        },
        Value::String(s) => Yaml::Value(Scalar::String(s.clone().into())),
        Value::Array(a) => Yaml::Sequence(a.iter().map(to_yaml).collect()),
        Value::Object(m) => Yaml::Mapping(
            m.iter()
                .map(|(k, v)| (Yaml::Value(Scalar::String(k.clone().into())), to_yaml(v)))
                .collect(),
        ),
    }
}

/// One document as block YAML (no `---`), ending in a newline.
pub fn emit(v: &Value) -> Result<String, String> {
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&to_yaml(v))
        .map_err(|e| format!("writing YAML: {e}"))?;
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    let mut body = body.trim_end_matches('\n').to_string();
    body.push('\n');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_node_has_its_line() {
        let text = "a:\n  b: 1\n  list:\n  - x\n  - {y: 2}\nc: \"10s\"\n";
        let doc = load(text, "p.yaml").unwrap();
        assert_eq!(
            doc.value,
            json!({"a": {"b": 1, "list": ["x", {"y": 2}]}, "c": "10s"})
        );
        assert_eq!(doc.line_of("a.b"), Some(2));
        assert_eq!(doc.line_of("a.list[0]"), Some(4));
        assert_eq!(doc.line_of("a.list[1].y"), Some(5));
        assert_eq!(doc.line_of("c"), Some(6));
        // A path that is not in the document: its nearest ancestor.
        assert_eq!(doc.line_of("a.list[1].zz"), Some(5));
    }

    #[test]
    fn syntax_errors_duplicates_and_aliases_name_the_line() {
        let err = load("a: 1\nb: [\n", "p.yaml").unwrap_err();
        assert!(err.starts_with("p.yaml:"), "{err}");
        let err = load("a: 1\nb: 2\na: 3\n", "p.yaml").unwrap_err();
        assert!(err.starts_with("p.yaml:3:"), "{err}");
        assert!(err.contains("duplicated key"), "{err}");
        // Anchors and aliases are resolved by the parser.
        let doc = load("a: &x {k: 1}\nb: *x\n", "p.yaml").unwrap();
        assert_eq!(doc.value["b"], serde_json::json!({"k": 1}));
        let err = load("a: 1\n---\nb: 2\n", "p.yaml").unwrap_err();
        assert!(err.contains("one YAML document"), "{err}");
    }

    #[test]
    fn emitted_yaml_reads_back_the_same() {
        let v = json!({"s": ["true", "10s", "1.0", "", "oci://r/x:1", "a b", "null", "0x1"],
                       "n": 3, "f": 0.5, "b": false, "z": null, "m": {}, "l": []});
        let text = emit(&v).unwrap();
        assert_eq!(load(&text, "o").unwrap().value, v, "{text}");
    }
}
