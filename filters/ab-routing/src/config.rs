//! pluginConfig for ab-routing. These serde types are the schema: the filter
//! parses them in `on_configure` and the `meshguard` CLI uses the same types
//! to validate policy files. Unknown fields are errors.

use serde::{Deserialize, Serialize};

use meshguard_common::config::{parse_config, ConfigError, JsonPath};
use meshguard_common::contract::{AB_FORCE_HEADER, AB_FORCE_SECRET_HEADER, AB_VARIANT_HEADER};
use meshguard_common::headers::{validate_cookie_name, validate_header_name};

/// Top-level pluginConfig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbRoutingConfig {
    /// Experiments, evaluated independently for every request.
    pub experiments: Vec<ExperimentConfig>,
    /// The generated visitor-id cookie used by the `visitor_cookie` key source.
    #[serde(default)]
    pub visitor_cookie: VisitorCookieConfig,
    /// Lets QA force a variant with a secret; absent = overrides disabled
    /// (the override headers are still stripped).
    #[serde(default)]
    pub qa_override: Option<QaOverrideConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// `[A-Za-z0-9_.-]{1,64}`; part of the hash input, so renaming an
    /// experiment reshuffles its users.
    pub name: String,
    /// Request header that carries the variant to the upstream/VirtualService.
    #[serde(default = "default_variant_header")]
    pub header: String,
    /// Variants with integer weights; shares are weight / sum(weights).
    pub variants: Vec<VariantConfig>,
    /// Where the sticky key comes from, tried in order.
    pub sticky_key: Vec<KeySource>,
    /// Only requests matching this get a variant (the header is still stripped
    /// from all others). Absent = every request.
    #[serde(default, rename = "match")]
    pub match_: Option<MatchConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    /// `[A-Za-z0-9_.-]{1,64}`: the header value VirtualServices match on.
    pub name: String,
    pub weight: u32,
}

/// One place a sticky key can come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// `{"header": "x-user-id"}`: value of a request header (e.g. set by authn).
    Header(String),
    /// `{"cookie": "session"}`: value of an existing cookie.
    Cookie(String),
    /// `"visitor_cookie"`: the filter's own random visitor id; generated and
    /// set with `Set-Cookie` when the request has none.
    VisitorCookie,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorCookieConfig {
    #[serde(default = "default_visitor_cookie_name")]
    pub name: String,
    #[serde(default = "default_visitor_max_age")]
    pub max_age_seconds: u64,
    /// Adds `Secure` (set it when clients reach you over HTTPS).
    #[serde(default)]
    pub secure: bool,
}

impl Default for VisitorCookieConfig {
    fn default() -> Self {
        Self {
            name: default_visitor_cookie_name(),
            max_age_seconds: default_visitor_max_age(),
            secure: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaOverrideConfig {
    #[serde(default = "default_force_header")]
    pub header: String,
    #[serde(default = "default_force_secret_header")]
    pub secret_header: String,
    /// Lowercase hex SHA-256 of the secret (`printf %s "$SECRET" | sha256sum`),
    /// so the secret itself never sits in the WasmPlugin object.
    pub secret_sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact hosts (`shop.example.com`) or `*.example.com`; port ignored.
    /// Empty = any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefixes (plain string prefix of the path without query, as in
    /// Envoy's `prefix` route match). Empty = any path.
    #[serde(default)]
    pub path_prefixes: Vec<String>,
}

fn default_variant_header() -> String {
    AB_VARIANT_HEADER.to_string()
}
fn default_visitor_cookie_name() -> String {
    "mg_visitor".to_string()
}
fn default_visitor_max_age() -> u64 {
    // 90 days: long enough for an experiment, short enough to expire.
    90 * 24 * 3600
}
fn default_force_header() -> String {
    AB_FORCE_HEADER.to_string()
}
fn default_force_secret_header() -> String {
    AB_FORCE_SECRET_HEADER.to_string()
}

pub(crate) const MAX_EXPERIMENTS: usize = 64;
pub(crate) const MAX_VARIANTS: usize = 100;

impl AbRoutingConfig {
    /// Parses and validates pluginConfig JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: Self = parse_config(bytes)?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks serde cannot express. Returns the first mistake.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at(&JsonPath::root())
    }

    /// [`Self::validate`] for a config that sits at `root` inside a larger
    /// document (e.g. `$.ab_routing` in a chain's combined config).
    pub fn validate_at(&self, root: &JsonPath) -> Result<(), ConfigError> {
        let root = root.clone();
        let exps = root.field("experiments");
        if self.experiments.is_empty() {
            return Err(exps.err("expected at least one experiment"));
        }
        if self.experiments.len() > MAX_EXPERIMENTS {
            return Err(exps.err(format!(
                "{} experiments configured, at most {MAX_EXPERIMENTS} are allowed",
                self.experiments.len()
            )));
        }

        // Headers the filter owns must not collide with each other or with
        // headers it reads; otherwise a client could steer its own variant.
        let mut owned_headers: Vec<(String, String)> = Vec::new();
        let mut claim = |header: String, path: &JsonPath| -> Result<(), ConfigError> {
            if let Some((_, other)) = owned_headers.iter().find(|(h, _)| *h == header) {
                return Err(path.err(format!("header `{header}` is already used at {other}")));
            }
            owned_headers.push((header, path.as_str().to_string()));
            Ok(())
        };

        let mut names: Vec<&str> = Vec::new();
        for (i, exp) in self.experiments.iter().enumerate() {
            let p = exps.index(i);
            check_name(&exp.name).map_err(|m| p.field("name").err(m))?;
            if names.contains(&exp.name.as_str()) {
                return Err(p
                    .field("name")
                    .err(format!("duplicate experiment name `{}`", exp.name)));
            }
            names.push(&exp.name);
            let header = validate_header_name(&exp.header).map_err(|m| p.field("header").err(m))?;
            claim(header, &p.field("header"))?;
            validate_variants(&exp.variants, &p.field("variants"))?;
            validate_sticky_key(&exp.sticky_key, &p.field("sticky_key"))?;
            if let Some(m) = &exp.match_ {
                validate_match(m, &p.field("match"))?;
            }
        }
        if let Some(qa) = &self.qa_override {
            let q = root.field("qa_override");
            let h = validate_header_name(&qa.header).map_err(|m| q.field("header").err(m))?;
            claim(h, &q.field("header"))?;
            let s = validate_header_name(&qa.secret_header)
                .map_err(|m| q.field("secret_header").err(m))?;
            claim(s, &q.field("secret_header"))?;
            if qa.secret_sha256.len() != 64
                || !qa
                    .secret_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(q.field("secret_sha256").err(
                    "expected 64 lowercase hex characters (the SHA-256 of the secret, e.g. `printf %s \"$SECRET\" | sha256sum`)",
                ));
            }
        }
        // Sticky-key headers are inputs; an experiment must not be able to
        // feed another experiment's output back in as its key.
        for (i, exp) in self.experiments.iter().enumerate() {
            for (j, src) in exp.sticky_key.iter().enumerate() {
                if let KeySource::Header(h) = src {
                    let lower = h.to_ascii_lowercase();
                    if let Some((_, other)) = owned_headers.iter().find(|(o, _)| *o == lower) {
                        return Err(exps
                            .index(i)
                            .field("sticky_key")
                            .index(j)
                            .field("header")
                            .err(format!(
                                "`{lower}` is set by this filter (at {other}); it cannot also be a sticky key"
                            )));
                    }
                }
            }
        }

        let vc = root.field("visitor_cookie");
        validate_cookie_name(&self.visitor_cookie.name).map_err(|m| vc.field("name").err(m))?;
        if self.visitor_cookie.max_age_seconds == 0 {
            return Err(vc
                .field("max_age_seconds")
                .err("expected a positive number of seconds"));
        }

        Ok(())
    }
}

/// Experiment and variant names: they appear in header values, metric names
/// and the hash input, so keep them to a safe alphabet.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("expected 1 to 64 characters, got {}", name.len()));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "`{name}` contains {bad:?}; expected only letters, digits, `_`, `-` and `.`"
        ));
    }
    Ok(())
}

fn validate_variants(variants: &[VariantConfig], p: &JsonPath) -> Result<(), ConfigError> {
    if variants.is_empty() {
        return Err(p.err("expected at least one variant"));
    }
    if variants.len() > MAX_VARIANTS {
        return Err(p.err(format!(
            "{} variants configured, at most {MAX_VARIANTS} are allowed",
            variants.len()
        )));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        check_name(&v.name).map_err(|m| p.index(i).field("name").err(m))?;
        if seen.contains(&v.name.as_str()) {
            return Err(p
                .index(i)
                .field("name")
                .err(format!("duplicate variant name `{}`", v.name)));
        }
        seen.push(&v.name);
    }
    if variants.iter().all(|v| v.weight == 0) {
        return Err(p.err("the variants' weights sum to 0; expected a positive total"));
    }
    Ok(())
}

fn validate_sticky_key(sources: &[KeySource], p: &JsonPath) -> Result<(), ConfigError> {
    if sources.is_empty() {
        return Err(p.err(
            "expected at least one key source: {\"header\": NAME}, {\"cookie\": NAME} or \"visitor_cookie\"",
        ));
    }
    for (i, src) in sources.iter().enumerate() {
        let sp = p.index(i);
        match src {
            KeySource::Header(h) => {
                validate_header_name(h).map_err(|m| sp.field("header").err(m))?;
            }
            KeySource::Cookie(c) => {
                validate_cookie_name(c).map_err(|m| sp.field("cookie").err(m))?;
            }
            KeySource::VisitorCookie => {
                if sources.get(i + 1).is_some() {
                    return Err(sp.err(
                        "\"visitor_cookie\" always yields a key, so it must be the last source",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_match(m: &MatchConfig, p: &JsonPath) -> Result<(), ConfigError> {
    for (i, host) in m.hosts.iter().enumerate() {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty()
            || bare.contains('*')
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(p.field("hosts").index(i).err(format!(
                "`{host}` is not a host name; expected e.g. `shop.example.com` or `*.example.com` (no port)"
            )));
        }
    }
    for (i, prefix) in m.path_prefixes.iter().enumerate() {
        if !prefix.starts_with('/') {
            return Err(p
                .field("path_prefixes")
                .index(i)
                .err(format!("`{prefix}` must start with `/`")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "experiments": [{
            "name": "checkout",
            "variants": [{"name": "control", "weight": 90}, {"name": "treatment", "weight": 10}],
            "sticky_key": [{"header": "x-user-id"}, {"cookie": "session"}, "visitor_cookie"],
            "match": {"hosts": ["shop.example.com", "*.shop.example.com"], "path_prefixes": ["/checkout"]}
        }],
        "visitor_cookie": {"name": "mgv", "max_age_seconds": 60, "secure": true},
        "qa_override": {"secret_sha256": "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"}
    }"#;

    /// Parses GOOD with `edit` applied to it and returns the error.
    fn err_with(edit: impl FnOnce(&mut serde_json::Value)) -> ConfigError {
        meshguard_common::config::testing::error_after_edit(GOOD, edit, AbRoutingConfig::from_json)
    }

    fn assert_err(err: ConfigError, path: &str, needle: &str) {
        meshguard_common::config::testing::assert_error(&err, path, needle);
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = AbRoutingConfig::from_json(GOOD.as_bytes()).unwrap();
        assert_eq!(c.experiments[0].header, "x-ab-variant");
        assert_eq!(c.qa_override.as_ref().unwrap().header, "x-ab-force");
        assert_eq!(c.qa_override.unwrap().secret_header, "x-ab-force-secret");
        assert_eq!(c.visitor_cookie.name, "mgv");
        let minimal = r#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":1}],"sticky_key":["visitor_cookie"]}]}"#;
        let c = AbRoutingConfig::from_json(minimal.as_bytes()).unwrap();
        assert_eq!(c.visitor_cookie, VisitorCookieConfig::default());
        assert_eq!(c.visitor_cookie.max_age_seconds, 7_776_000);
    }

    #[test]
    fn unknown_field() {
        assert_err(
            err_with(|v| v["experiments"][0]["wieght"] = 1.into()),
            "$.experiments[0].wieght",
            "unknown field `wieght`",
        );
        assert_err(
            err_with(|v| v["extra"] = 1.into()),
            "$.extra",
            "unknown field `extra`",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["variants"][1]["color"] = "red".into()),
            "$.experiments[0].variants[1].color",
            "unknown field",
        );
    }

    #[test]
    fn wrong_types_and_missing_fields() {
        assert_err(
            err_with(|v| v["experiments"][0]["variants"][1]["weight"] = (-1).into()),
            "$.experiments[0].variants[1].weight",
            "expected u32",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["variants"][0]["weight"] = "50".into()),
            "$.experiments[0].variants[0].weight",
            "expected u32",
        );
        assert_err(
            err_with(|v| {
                v["experiments"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("variants");
            }),
            "$.experiments[0]",
            "missing field `variants`",
        );
        assert_err(
            err_with(|v| *v = serde_json::json!([])),
            "$",
            "expected struct",
        );
    }

    #[test]
    fn not_json() {
        let e = AbRoutingConfig::from_json(b"{experiments: []}").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e}");
        let e = AbRoutingConfig::from_json(b"").unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");
    }

    #[test]
    fn zero_total_weight() {
        assert_err(
            err_with(|v| {
                v["experiments"][0]["variants"][0]["weight"] = 0.into();
                v["experiments"][0]["variants"][1]["weight"] = 0.into();
            }),
            "$.experiments[0].variants",
            "sum to 0",
        );
    }

    #[test]
    fn no_variants_or_experiments() {
        assert_err(
            err_with(|v| v["experiments"][0]["variants"] = serde_json::json!([])),
            "$.experiments[0].variants",
            "at least one variant",
        );
        assert_err(
            err_with(|v| v["experiments"] = serde_json::json!([])),
            "$.experiments",
            "at least one experiment",
        );
    }

    #[test]
    fn too_many_experiments_or_variants() {
        assert_err(
            err_with(|v| {
                let many: Vec<_> = (0..=MAX_VARIANTS)
                    .map(|i| serde_json::json!({"name": format!("v{i}"), "weight": 1}))
                    .collect();
                v["experiments"][0]["variants"] = many.into();
            }),
            "$.experiments[0].variants",
            "at most 100",
        );
        assert_err(
            err_with(|v| {
                let one = v["experiments"][0].clone();
                let many: Vec<_> = (0..=MAX_EXPERIMENTS)
                    .map(|i| {
                        let mut e = one.clone();
                        e["name"] = format!("e{i}").into();
                        e["header"] = format!("x-ab-{i}").into();
                        e
                    })
                    .collect();
                v["experiments"] = many.into();
            }),
            "$.experiments",
            "at most 64",
        );
    }

    #[test]
    fn duplicate_variant_names() {
        assert_err(
            err_with(|v| v["experiments"][0]["variants"][1]["name"] = "control".into()),
            "$.experiments[0].variants[1].name",
            "duplicate variant name `control`",
        );
    }

    #[test]
    fn duplicate_experiment_names_and_headers() {
        assert_err(
            err_with(|v| {
                let mut e = v["experiments"][0].clone();
                e["header"] = "x-other".into();
                v["experiments"].as_array_mut().unwrap().push(e);
            }),
            "$.experiments[1].name",
            "duplicate experiment name",
        );
        assert_err(
            err_with(|v| {
                let mut e = v["experiments"][0].clone();
                e["name"] = "search".into();
                v["experiments"].as_array_mut().unwrap().push(e);
            }),
            "$.experiments[1].header",
            "already used at $.experiments[0].header",
        );
    }

    #[test]
    fn bad_names() {
        assert_err(
            err_with(|v| v["experiments"][0]["name"] = "check out".into()),
            "$.experiments[0].name",
            "contains ' '",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["name"] = "a:b".into()),
            "$.experiments[0].name",
            "contains ':'",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["variants"][0]["name"] = "".into()),
            "$.experiments[0].variants[0].name",
            "1 to 64",
        );
    }

    #[test]
    fn bad_header_names() {
        assert_err(
            err_with(|v| v["experiments"][0]["header"] = "x ab".into()),
            "$.experiments[0].header",
            "not a valid header name",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["header"] = ":path".into()),
            "$.experiments[0].header",
            "pseudo-header",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["header"] = "Cookie".into()),
            "$.experiments[0].header",
            "reserved",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["sticky_key"][0]["header"] = "".into()),
            "$.experiments[0].sticky_key[0].header",
            "empty",
        );
        assert_err(
            err_with(|v| v["qa_override"]["secret_header"] = "x\u{1}".into()),
            "$.qa_override.secret_header",
            "not a valid header name",
        );
    }

    #[test]
    fn sticky_key_mistakes() {
        assert_err(
            err_with(|v| v["experiments"][0]["sticky_key"] = serde_json::json!([])),
            "$.experiments[0].sticky_key",
            "at least one key source",
        );
        assert_err(
            err_with(|v| {
                v["experiments"][0]["sticky_key"] =
                    serde_json::json!(["visitor_cookie", {"header": "x-u"}])
            }),
            "$.experiments[0].sticky_key[0]",
            "must be the last source",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["sticky_key"][0] = serde_json::json!({"query": "u"})),
            "$.experiments[0].sticky_key[0]",
            "unknown variant `query`",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["sticky_key"][1]["cookie"] = "a;b".into()),
            "$.experiments[0].sticky_key[1].cookie",
            "not a valid cookie name",
        );
        // Reading the variant header back as a key would let a client choose.
        assert_err(
            err_with(|v| v["experiments"][0]["sticky_key"][0]["header"] = "X-AB-Variant".into()),
            "$.experiments[0].sticky_key[0].header",
            "set by this filter",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["sticky_key"][0]["header"] = "x-ab-force".into()),
            "$.experiments[0].sticky_key[0].header",
            "set by this filter",
        );
    }

    #[test]
    fn qa_override_mistakes() {
        assert_err(
            err_with(|v| v["qa_override"]["secret_sha256"] = "hunter2".into()),
            "$.qa_override.secret_sha256",
            "64 lowercase hex",
        );
        assert_err(
            err_with(|v| {
                v["qa_override"]["secret_sha256"] =
                    "2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25B".into()
            }),
            "$.qa_override.secret_sha256",
            "64 lowercase hex",
        );
        assert_err(
            err_with(|v| v["qa_override"]["header"] = "x-ab-variant".into()),
            "$.qa_override.header",
            "already used at $.experiments[0].header",
        );
        assert_err(
            err_with(|v| {
                v["qa_override"]
                    .as_object_mut()
                    .unwrap()
                    .remove("secret_sha256")
                    .map(|_| ())
                    .unwrap()
            }),
            "$.qa_override",
            "missing field `secret_sha256`",
        );
    }

    #[test]
    fn visitor_cookie_wrong_types() {
        assert_err(
            err_with(|v| v["visitor_cookie"]["secure"] = "yes".into()),
            "$.visitor_cookie.secure",
            "expected a boolean",
        );
        assert_err(
            err_with(|v| v["visitor_cookie"]["max_age_seconds"] = (-5).into()),
            "$.visitor_cookie.max_age_seconds",
            "expected u64",
        );
        assert_err(
            err_with(|v| v["visitor_cookie"]["path"] = "/".into()),
            "$.visitor_cookie.path",
            "unknown field `path`",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["match"]["hosts"] = "shop.example.com".into()),
            "$.experiments[0].match.hosts",
            "expected a sequence",
        );
    }

    #[test]
    fn visitor_cookie_mistakes() {
        assert_err(
            err_with(|v| v["visitor_cookie"]["max_age_seconds"] = 0.into()),
            "$.visitor_cookie.max_age_seconds",
            "positive",
        );
        assert_err(
            err_with(|v| v["visitor_cookie"]["name"] = "a b".into()),
            "$.visitor_cookie.name",
            "not a valid cookie name",
        );
    }

    #[test]
    fn match_mistakes() {
        assert_err(
            err_with(|v| v["experiments"][0]["match"]["hosts"][0] = "shop.example.com:443".into()),
            "$.experiments[0].match.hosts[0]",
            "not a host name",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["match"]["hosts"][0] = "a.*.com".into()),
            "$.experiments[0].match.hosts[0]",
            "not a host name",
        );
        assert_err(
            err_with(|v| v["experiments"][0]["match"]["path_prefixes"][0] = "checkout".into()),
            "$.experiments[0].match.path_prefixes[0]",
            "must start with `/`",
        );
    }
}
