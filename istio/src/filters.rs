//! The filters meshguard ships, by name. Validation runs the filter's own
//! stage build (the code `on_configure` runs), so the CLI can never accept a
//! config the filter would refuse, or the reverse. Adding a filter is one
//! line in [`FILTERS`].

use std::path::Path;

use meshguard_common::config::ConfigError;
use meshguard_stage::{Chain, NoMetrics, Stage};

/// One shipped filter.
pub struct Filter {
    /// CLI and module name: `ab-routing` (`dist/ab-routing.wasm`).
    pub name: &'static str,
    /// Key in combined configs and Envoy names: `ab_routing`.
    pub config_key: &'static str,
    /// Parses and validates a pluginConfig (JSON) exactly as the filter does.
    pub validate: fn(&[u8]) -> Result<(), ConfigError>,
    /// Where `meshguard render` puts its WasmPlugin: Istio phase, and the
    /// priority within the phase (higher runs first).
    pub phase: &'static str,
    pub priority: i32,
    /// Its pluginConfig's `experiments` come from the policy's experiments
    /// (ab-routing), which also render DestinationRule subsets and routes.
    pub takes_experiments: bool,
}

fn validate_stage<S: Stage>(json: &[u8]) -> Result<(), ConfigError> {
    <(S,)>::build(json, &mut NoMetrics).map(|_| ())
}

fn filter<S: Stage>(phase: &'static str, priority: i32) -> Filter {
    Filter {
        name: S::NAME,
        config_key: S::CONFIG_KEY,
        validate: validate_stage::<S>,
        phase,
        priority,
        takes_experiments: false,
    }
}

/// Every shipped filter, with its place in Istio's HTTP filter chain
/// (AUTHN plugins -> jwt_authn -> AUTHZ plugins -> RBAC -> STATS plugins ->
/// router; higher priority first within a phase).
pub fn all() -> Vec<Filter> {
    vec![
        filter::<meshguard_authn::Authn>("AUTHN", 0),
        // After authn (its sticky key, x-user-id, must be trustworthy) and
        // before ratelimit and accesslog (they see the variant). Every wasm
        // phase runs before the router, and Envoy re-selects the route when
        // a filter changes request headers, so VirtualService header matches
        // see the variant. See README "Where ab-routing runs".
        Filter {
            takes_experiments: true,
            ..filter::<meshguard_ab_routing::AbRouting>("AUTHZ", 10)
        },
        // After authn and ab-routing: it may key on the verified identity.
        filter::<meshguard_ratelimit::RateLimit>("AUTHZ", 0),
        filter::<meshguard_accesslog::AccessLog>("STATS", 0),
    ]
}

pub fn find(name: &str) -> Result<Filter, String> {
    all().into_iter().find(|f| f.name == name).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|f| f.name).collect();
        format!(
            "unknown filter `{name}`; meshguard ships: {}",
            names.join(", ")
        )
    })
}

/// A pluginConfig as written by a user: JSON, or YAML (the way it sits in a
/// WasmPlugin's `pluginConfig`). Returns it as JSON bytes, the form the
/// filter receives from Istio.
pub fn config_to_json(text: &[u8], origin: &str) -> Result<Vec<u8>, String> {
    let trimmed = text.iter().position(|b| !b.is_ascii_whitespace());
    let looks_json = trimmed
        .and_then(|i| text.get(i))
        .is_some_and(|b| *b == b'{' || *b == b'[');
    if looks_json || origin.ends_with(".json") {
        return Ok(text.to_vec());
    }
    let value: serde_json::Value = serde_yaml::from_slice(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        format!("{origin}: not valid YAML or JSON{at}: {e}")
    })?;
    serde_json::to_vec(&value).map_err(|e| format!("{origin}: {e}"))
}

/// `meshguard validate <filter> <file>`: the file's config checked by the
/// filter's own code; errors name the file and the JSON path.
pub fn validate_file(filter: &str, path: &Path) -> Result<(), String> {
    let f = find(filter)?;
    let origin = path.display().to_string();
    let text = std::fs::read(path).map_err(|e| format!("{origin}: cannot read: {e}"))?;
    validate_bytes(&f, &text, &origin)
}

pub fn validate_bytes(f: &Filter, text: &[u8], origin: &str) -> Result<(), String> {
    let json = config_to_json(text, origin)?;
    (f.validate)(&json).map_err(|e| format!("{origin}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":1}],"sticky_key":["visitor_cookie"]}]}"#;

    #[test]
    fn validates_with_the_filters_own_code() {
        let f = find("ab-routing").unwrap();
        validate_bytes(&f, GOOD.as_bytes(), "c.json").unwrap();
        let bad = GOOD.replace("\"weight\":1", "\"weight\":0");
        let err = validate_bytes(&f, bad.as_bytes(), "c.json").unwrap_err();
        assert_eq!(err, "c.json: invalid plugin config at $.experiments[0].variants: the variants' weights sum to 0; expected a positive total");
        assert!(find("nope").err().unwrap().contains("ab-routing"));
    }

    #[test]
    fn yaml_as_in_a_wasmplugin_is_accepted() {
        let f = find("ab-routing").unwrap();
        let yaml = "experiments:\n- name: e\n  variants:\n  - {name: a, weight: 1}\n  sticky_key: [visitor_cookie]\n";
        validate_bytes(&f, yaml.as_bytes(), "c.yaml").unwrap();
        let bad = yaml.replace("weight: 1", "weight: x");
        let err = validate_bytes(&f, bad.as_bytes(), "c.yaml").unwrap_err();
        assert!(
            err.starts_with("c.yaml: invalid plugin config at $.experiments[0].variants[0].weight"),
            "{err}"
        );
        let err = validate_bytes(&f, b"experiments: [\n", "c.yaml").unwrap_err();
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn json_syntax_errors_give_line_and_column() {
        let f = find("ab-routing").unwrap();
        let err = validate_bytes(&f, b"{\n  \"experiments\": [,]\n}", "c.json").unwrap_err();
        assert!(
            err.starts_with("c.json: invalid plugin config at $: config is not valid JSON"),
            "{err}"
        );
        assert!(err.contains("line 2, column 19"), "{err}");
    }
}
