//! pluginConfig for ratelimit. These serde types are the schema: the filter
//! parses them in `on_configure` and the `meshguard` CLI validates with the
//! same code (`meshguard validate ratelimit`). Unknown fields are errors;
//! every error names its JSON path.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use meshguard_common::config::{parse_config, ConfigError, JsonPath};
use meshguard_common::contract::IDENTITY_HEADER;
use meshguard_common::headers::is_token_char;

/// Largest `worker_batch`.
pub const MAX_WORKER_BATCH: u32 = 1000;

/// Top-level pluginConfig.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Evaluated in order.
    pub rules: Vec<RuleConfig>,
    /// `first` (default): only the first matching rule that has a key
    /// applies. `all`: every matching rule applies, in order, until one
    /// limits the request.
    #[serde(default)]
    pub apply: Apply,
    /// Where the client IP comes from (the `client_ip` key part).
    #[serde(default)]
    pub client_ip: ClientIpConfig,
    /// Buckets per rule (fixed shared-data slots): the most keys a rule
    /// tracks at once. A rule without key parts uses one slot.
    #[serde(default = "default_max_keys")]
    pub max_keys: u32,
    /// Opt-in (default 1: every request reads and writes the shared
    /// bucket, exact): the most tokens one worker takes from a shared
    /// bucket at once and then spends without touching shared data
    /// (1..=1000). Fewer shared-data calls, weaker guarantee: a worker
    /// spends tokens it took up to a tick (1 s) earlier while the bucket
    /// refills behind them, so over a short window a key may get up to
    /// `batch − 1` tokens per worker beyond `burst + rate × window`; unspent
    /// tokens go back at the worker's next tick (a reconfiguration drops
    /// them: they return as the bucket refills).
    #[serde(default)]
    pub worker_batch: Option<u32>,
    #[serde(default)]
    pub response_headers: ResponseHeadersConfig,
    /// Write the decision to filter state (`meshguard.ratelimit`) for the
    /// accesslog filter or an access logger in another VM. A host call per
    /// decided request (~3 µs of Envoy CPU), so off unless asked for:
    /// `meshguard render` turns it on when the policy also deploys the
    /// accesslog, and the local chain sets it.
    #[serde(default)]
    pub decision_filter_state: bool,
    /// What to do when shared data cannot be read or written, or the
    /// compare-and-swap keeps losing: `allow` (default) or `deny` (503).
    #[serde(default)]
    pub on_error: OnError,
    /// The rate-limit service global rules ask (Envoy's
    /// `RateLimitService/ShouldRateLimit` over gRPC: meshguard-rls,
    /// Limitador, envoyproxy/ratelimit).
    #[serde(default)]
    pub global: Option<GlobalConfig>,
}

/// Where global rules are decided.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Envoy cluster of the service (HTTP/2: `typed_extension_protocol_options`
    /// with `explicit_http_config.http2_protocol_options`).
    pub cluster: String,
    /// The request's `domain` (Limitador: the limits' `namespace`).
    pub domain: String,
    /// 1..=10000. Past it the call counts as failed (`on_error`).
    #[serde(default = "default_global_timeout")]
    pub timeout_ms: u64,
    /// The service fails, times out or answers garbage: `allow` (default,
    /// as Envoy's `failure_mode_deny: false`) or `deny` (503).
    #[serde(default)]
    pub on_error: OnError,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    #[default]
    First,
    All,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `[A-Za-z0-9_.-]{1,64}`: metric label and the IETF policy name.
    pub name: String,
    /// Absent: every request (a default rule).
    #[serde(default, rename = "match")]
    pub match_: Option<MatchConfig>,
    /// The bucket key: the parts, combined. Empty: one bucket for every
    /// request the rule matches.
    #[serde(default)]
    pub key: Vec<KeyPart>,
    /// Required for local rules; global rules have none (the service holds
    /// their limits).
    #[serde(default)]
    pub limit: Option<LimitConfig>,
    /// Decided by the rate-limit service (`global` at the top level): the
    /// rule's name and key parts go to it as one descriptor. Local rules
    /// run first, so a local rule can turn a flood away before any call.
    #[serde(default)]
    pub global: bool,
    /// Count and log what would be limited, let it through.
    #[serde(default)]
    pub shadow: bool,
    /// A key part the request does not have: `skip` the rule (default) or
    /// `{"fallback": "VALUE"}` (that part takes VALUE: every such request
    /// shares its bucket).
    #[serde(default)]
    pub when_key_missing: WhenKeyMissing,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Requests per `per`, refilled continuously.
    pub requests: u32,
    pub per: Per,
    /// The bucket size: how many requests may come at once. Default:
    /// `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    pub fn seconds(self) -> u64 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenKeyMissing {
    #[default]
    Skip,
    Fallback(String),
}

/// One part of a bucket key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// `"client_ip"`: see [`ClientIpConfig`].
    ClientIp,
    /// `"path"`: the path without query string.
    Path,
    /// `"header"`: the identity header authn sets
    /// (`meshguard_common::contract::IDENTITY_HEADER`, `x-user-id`);
    /// `{"header": "x-api-key"}`: any request header (first value).
    Header(String),
}

impl<'de> Deserialize<'de> for KeyPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyPart;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"client_ip\", \"path\", \"header\" (the identity header) or {\"header\": NAME}",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyPart, E> {
                match s {
                    "client_ip" => Ok(KeyPart::ClientIp),
                    "path" => Ok(KeyPart::Path),
                    "header" => Ok(KeyPart::Header(IDENTITY_HEADER.to_string())),
                    other => Err(E::unknown_variant(other, &["client_ip", "path", "header"])),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<KeyPart, A::Error> {
                let Some(k) = m.next_key::<String>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                if k != "header" {
                    return Err(de::Error::unknown_field(&k, &["header"]));
                }
                let name: String = m.next_value()?;
                if let Some(extra) = m.next_key::<String>()? {
                    return Err(de::Error::unknown_field(&extra, &["header"]));
                }
                Ok(KeyPart::Header(name))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact hosts or `*.example.com`; port ignored. Empty = any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Any of these; the path without query string. Empty = any path.
    #[serde(default)]
    pub paths: Vec<PathMatch>,
    /// Any of these (uppercase). Empty = any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// All of these must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    /// The first value equals this.
    #[serde(default)]
    pub exact: Option<String>,
    /// `true`: present (any value); `false`: absent. Default `true`.
    #[serde(default)]
    pub present: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIpConfig {
    /// Proxies in front of this Envoy that append to `x-forwarded-for`
    /// (count Envoy itself when its `use_remote_address` is on). 0: ignore
    /// the header, use the connection's `source.address`. N: the client is
    /// the N-th address from the right; a header with fewer addresses, or
    /// an entry that is not an IP, falls back to `source.address`.
    #[serde(default)]
    pub trusted_hops: u32,
    /// IPv6 clients are keyed by this prefix (a host usually owns a /64).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        Self {
            trusted_hops: 0,
            ipv6_prefix: default_ipv6_prefix(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseHeadersConfig {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset` (Envoy's DRAFT_VERSION_03).
    #[serde(default = "yes")]
    pub x_ratelimit: bool,
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
    #[serde(default = "yes")]
    pub ietf: bool,
    /// Also on responses the limit let through (not only on 429s).
    #[serde(default)]
    pub on_allowed: bool,
}

impl Default for ResponseHeadersConfig {
    fn default() -> Self {
        Self {
            x_ratelimit: true,
            ietf: true,
            on_allowed: false,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_max_keys() -> u32 {
    10_000
}
fn default_global_timeout() -> u64 {
    100
}
fn default_ipv6_prefix() -> u8 {
    64
}

pub const MAX_RULES: usize = 64;
pub const MAX_KEYS: u32 = 1_000_000;
pub const MAX_REQUESTS: u32 = 1_000_000;
pub const MAX_KEY_PARTS: usize = 8;
pub const MAX_TRUSTED_HOPS: u32 = 16;

impl RateLimitConfig {
    /// Parses and validates pluginConfig JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: Self = parse_config(bytes)?;
        config.validate_at(&JsonPath::root())?;
        Ok(config)
    }

    /// Reads a config section at `at` (not yet validated: the stage's
    /// build calls [`RateLimitConfig::validate_at`]). Not generic and never
    /// inlined, so the serde code is compiled in this crate (for size).
    #[inline(never)]
    pub fn from_value_at(value: serde_json::Value, at: &JsonPath) -> Result<Self, ConfigError> {
        meshguard_common::config::from_value_at(value, at)
    }

    /// Semantic checks serde cannot express, for a config at `root`.
    pub fn validate_at(&self, root: &JsonPath) -> Result<(), ConfigError> {
        let rules = root.field("rules");
        if self.rules.is_empty() {
            return Err(rules.err("expected at least one rule"));
        }
        if self.rules.len() > MAX_RULES {
            return Err(rules.err(format!(
                "{} rules configured, at most {MAX_RULES} are allowed",
                self.rules.len()
            )));
        }
        if let Some(b) = self.worker_batch {
            if !(1..=MAX_WORKER_BATCH).contains(&b) {
                return Err(root
                    .field("worker_batch")
                    .err(format!("expected 1..={MAX_WORKER_BATCH} tokens, got {b}")));
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let p = rules.index(i);
            check_name(&r.name).map_err(|m| p.field("name").err(m))?;
            if names.contains(&r.name.as_str()) {
                return Err(p
                    .field("name")
                    .err(format!("duplicate rule name `{}`", r.name)));
            }
            names.push(&r.name);
            match (&r.limit, r.global) {
                (Some(l), false) => validate_limit(l, &p.field("limit"))?,
                (None, false) => {
                    return Err(p.field("limit").err(
                        "expected a limit (`{\"requests\": N, \"per\": \"second\"}`) for a local rule",
                    ))
                }
                (Some(_), true) => {
                    return Err(p.field("limit").err(
                        "a global rule has no limit here: the rate-limit service holds it (e.g. a Limitador limit on this rule's descriptor)",
                    ))
                }
                (None, true) => {
                    // Descriptor entry keys: `rule`, then one per part; a
                    // header whose key collides would let the client pick
                    // another rule's or part's value.
                    let mut keys = vec!["rule".to_string()];
                    for (j, part) in r.key.iter().enumerate() {
                        let k = match part {
                            KeyPart::ClientIp => "client_ip".to_string(),
                            KeyPart::Path => "path".to_string(),
                            KeyPart::Header(h) => h.to_ascii_lowercase().replace('-', "_"),
                        };
                        if keys.contains(&k) {
                            return Err(p.field("key").index(j).err(format!(
                                "descriptor entry `{k}` would appear twice (`rule`, `client_ip`, `path`, header names with `-` as `_`)"
                            )));
                        }
                        keys.push(k);
                    }
                    if self.global.is_none() {
                        return Err(p.field("global").err(
                            "a global rule needs the top-level `global` (the service's cluster and domain)",
                        ));
                    }
                    if r.shadow {
                        return Err(p.field("shadow").err(
                            "shadow mode is for local rules: the service decides a global rule's descriptor with the others",
                        ));
                    }
                }
            }
            validate_key(&r.key, &p.field("key"))?;
            if let WhenKeyMissing::Fallback(v) = &r.when_key_missing {
                if v.is_empty() || v.len() > 256 {
                    return Err(p
                        .field("when_key_missing")
                        .field("fallback")
                        .err("expected 1 to 256 characters"));
                }
            }
            if let Some(m) = &r.match_ {
                validate_match(m, &p.field("match"))?;
            }
        }
        if self.max_keys == 0 || self.max_keys > MAX_KEYS {
            return Err(root
                .field("max_keys")
                .err(format!("expected 1 to {MAX_KEYS}")));
        }
        let ip = root.field("client_ip");
        if self.client_ip.trusted_hops > MAX_TRUSTED_HOPS {
            return Err(ip
                .field("trusted_hops")
                .err(format!("expected at most {MAX_TRUSTED_HOPS}")));
        }
        if self.client_ip.ipv6_prefix == 0 || self.client_ip.ipv6_prefix > 128 {
            return Err(ip.field("ipv6_prefix").err("expected 1 to 128"));
        }
        if let Some(g) = &self.global {
            let gp = root.field("global");
            if g.cluster.is_empty() {
                return Err(gp.field("cluster").err("expected a cluster name"));
            }
            if g.domain.is_empty() || g.domain.len() > 256 {
                return Err(gp.field("domain").err("expected 1 to 256 characters"));
            }
            if !(1..=10_000).contains(&g.timeout_ms) {
                return Err(gp
                    .field("timeout_ms")
                    .err("expected 1 to 10000 milliseconds"));
            }
            if !self.rules.iter().any(|r| r.global) {
                return Err(gp.err("no rule is `global: true`"));
            }
        }
        Ok(())
    }
}

/// Rule names appear in metric names and in the `RateLimit-Policy` field.
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

fn validate_limit(l: &LimitConfig, p: &JsonPath) -> Result<(), ConfigError> {
    if l.requests == 0 || l.requests > MAX_REQUESTS {
        return Err(p
            .field("requests")
            .err(format!("expected 1 to {MAX_REQUESTS}")));
    }
    if let Some(b) = l.burst {
        if b == 0 || b > MAX_REQUESTS {
            return Err(p
                .field("burst")
                .err(format!("expected 1 to {MAX_REQUESTS}")));
        }
    }
    Ok(())
}

/// A header name this filter reads: a lowercase-able token, not a
/// pseudo-header. (Reading `authorization` or `cookie` is fine, unlike
/// setting them.)
pub fn check_read_header(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > 256 {
        return Err(format!(
            "expected a header name of 1 to 256 characters, got {}",
            name.len()
        ));
    }
    if name.starts_with(':') {
        return Err(format!(
            "`{name}` is a pseudo-header; use `match.paths`, `match.methods` or `match.hosts`"
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_token_char(*c)) {
        return Err(format!(
            "`{name}` is not a valid header name: character {bad:?} is not allowed (RFC 9110 token)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn validate_key(parts: &[KeyPart], p: &JsonPath) -> Result<(), ConfigError> {
    if parts.len() > MAX_KEY_PARTS {
        return Err(p.err(format!("at most {MAX_KEY_PARTS} key parts are allowed")));
    }
    for (i, part) in parts.iter().enumerate() {
        if let KeyPart::Header(h) = part {
            check_read_header(h).map_err(|m| p.index(i).field("header").err(m))?;
        }
        let normalized = |k: &KeyPart| match k {
            KeyPart::Header(h) => KeyPart::Header(h.to_ascii_lowercase()),
            other => other.clone(),
        };
        if parts
            .iter()
            .take(i)
            .any(|earlier| normalized(earlier) == normalized(part))
        {
            return Err(p.index(i).err("duplicate key part"));
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
    for (i, pm) in m.paths.iter().enumerate() {
        let (kind, s) = match pm {
            PathMatch::Exact(s) => ("exact", s),
            PathMatch::Prefix(s) => ("prefix", s),
        };
        if !s.starts_with('/') {
            return Err(p
                .field("paths")
                .index(i)
                .field(kind)
                .err(format!("`{s}` must start with `/`")));
        }
        if s.contains('?') || s.contains('#') {
            return Err(p.field("paths").index(i).field(kind).err(format!(
                "`{s}`: paths are matched without the query string; remove `?`/`#`"
            )));
        }
    }
    for (i, method) in m.methods.iter().enumerate() {
        if method.is_empty()
            || method.len() > 32
            || !method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-')
        {
            return Err(p.field("methods").index(i).err(format!(
                "`{method}` is not an HTTP method; expected uppercase, e.g. `POST`"
            )));
        }
    }
    for (i, h) in m.headers.iter().enumerate() {
        let hp = p.field("headers").index(i);
        check_read_header(&h.name).map_err(|e| hp.field("name").err(e))?;
        if h.exact.is_some() && h.present == Some(false) {
            return Err(hp.err("`exact` and `present: false` contradict each other"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "apply": "all",
        "rules": [
            {"name": "login", "match": {"paths": [{"exact": "/login"}], "methods": ["POST"]},
             "key": ["client_ip"], "limit": {"requests": 5, "per": "minute"}},
            {"name": "api", "match": {"hosts": ["*.example.com"], "paths": [{"prefix": "/api"}],
             "headers": [{"name": "x-plan", "exact": "free"}, {"name": "x-debug", "present": false}]},
             "key": ["header", {"header": "x-tenant"}, "path"], "limit": {"requests": 100, "per": "second", "burst": 200},
             "shadow": true, "when_key_missing": {"fallback": "anonymous"}},
            {"name": "default", "key": ["client_ip"], "limit": {"requests": 1000, "per": "hour"}}
        ],
        "client_ip": {"trusted_hops": 1, "ipv6_prefix": 56},
        "max_keys": 5000,
        "response_headers": {"ietf": false, "on_allowed": true},
        "decision_filter_state": true,
        "on_error": "deny"
    }"#;

    fn err_with(edit: impl FnOnce(&mut serde_json::Value)) -> ConfigError {
        meshguard_common::config::testing::error_after_edit(GOOD, edit, RateLimitConfig::from_json)
    }

    fn assert_err(err: ConfigError, path: &str, needle: &str) {
        meshguard_common::config::testing::assert_error(&err, path, needle);
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = RateLimitConfig::from_json(GOOD.as_bytes()).unwrap();
        assert_eq!(c.apply, Apply::All);
        assert_eq!(
            c.rules[1].key,
            vec![
                KeyPart::Header("x-user-id".into()),
                KeyPart::Header("x-tenant".into()),
                KeyPart::Path
            ]
        );
        assert_eq!(
            c.rules[1].when_key_missing,
            WhenKeyMissing::Fallback("anonymous".into())
        );
        assert!(c.response_headers.x_ratelimit);
        assert!(!c.response_headers.ietf);
        assert_eq!(c.on_error, OnError::Deny);
        let minimal = r#"{"rules":[{"name":"r","limit":{"requests":1,"per":"second"}}]}"#;
        let c = RateLimitConfig::from_json(minimal.as_bytes()).unwrap();
        assert_eq!(c.apply, Apply::First);
        assert_eq!(c.max_keys, 10_000);
        assert_eq!(c.worker_batch, None);
        assert_eq!(c.client_ip, ClientIpConfig::default());
        assert_eq!(c.client_ip.ipv6_prefix, 64);
        assert!(!c.decision_filter_state);
        assert_eq!(c.on_error, OnError::Allow);
        assert!(c.rules[0].key.is_empty());
        assert_eq!(c.rules[0].when_key_missing, WhenKeyMissing::Skip);
    }

    #[test]
    fn shape_errors_name_the_path() {
        assert_err(
            err_with(|v| v["rules"][0]["limit"]["per"] = "day".into()),
            "$.rules[0].limit.per",
            "unknown variant `day`",
        );
        assert_err(
            err_with(|v| v["rules"][0]["limt"] = 1.into()),
            "$.rules[0].limt",
            "unknown field `limt`",
        );
        assert_err(
            err_with(|v| v["rules"][1]["limit"]["requests"] = (-1).into()),
            "$.rules[1].limit.requests",
            "expected u32",
        );
        assert_err(
            err_with(|v| v["rules"][0]["key"][0] = "cookie".into()),
            "$.rules[0].key[0]",
            "unknown variant `cookie`",
        );
        assert_err(
            err_with(|v| v["rules"][0]["key"][0] = serde_json::json!({"query": "a"})),
            "$.rules[0].key[0]",
            "unknown field `query`",
        );
        assert_err(
            err_with(|v| v["rules"][0]["key"][0] = serde_json::json!({"header": 5})),
            "$.rules[0].key[0].header",
            "expected a string",
        );
        assert_err(
            err_with(|v| v["rules"][0]["key"][0] = 5.into()),
            "$.rules[0].key[0]",
            "\"client_ip\"",
        );
        assert_err(
            err_with(|v| v["rules"][0]["when_key_missing"] = "deny".into()),
            "$.rules[0].when_key_missing",
            "unknown variant `deny`",
        );
        assert_err(
            err_with(|v| v["rules"][0]["match"]["paths"][0] = serde_json::json!({"regex": "x"})),
            "$.rules[0].match.paths[0]",
            "unknown variant `regex`",
        );
        assert_err(
            err_with(|v| v["apply"] = "any".into()),
            "$.apply",
            "unknown variant `any`",
        );
        assert_err(
            err_with(|v| v["on_error"] = "ignore".into()),
            "$.on_error",
            "unknown variant `ignore`",
        );
        assert_err(
            err_with(|v| {
                v["rules"][0].as_object_mut().unwrap().remove("limit");
            }),
            "$.rules[0].limit",
            "expected a limit",
        );
        // Global mode: a global rule has no limit here and needs `global`.
        assert_err(
            err_with(|v| v["rules"][0]["global"] = true.into()),
            "$.rules[0].limit",
            "the rate-limit service holds it",
        );
        assert_err(
            err_with(|v| {
                v["rules"][0]["global"] = true.into();
                v["rules"][0].as_object_mut().unwrap().remove("limit");
            }),
            "$.rules[0].global",
            "needs the top-level `global`",
        );
        assert_err(
            err_with(|v| {
                v["global"] = serde_json::json!({"cluster": "rls", "domain": "shop"});
            }),
            "$.global",
            "no rule is `global: true`",
        );
        assert_err(
            err_with(|v| {
                v["global"] =
                    serde_json::json!({"cluster": "rls", "domain": "shop", "timeout_ms": 0});
                v["rules"][0]["global"] = true.into();
                v["rules"][0].as_object_mut().unwrap().remove("limit");
            }),
            "$.global.timeout_ms",
            "expected 1 to 10000",
        );
        assert_err(
            err_with(|v| {
                v["global"] = serde_json::json!({"cluster": "rls", "domain": "shop"});
                v["rules"][0]["global"] = true.into();
                v["rules"][0]["key"] = serde_json::json!(["client_ip", {"header": "rule"}]);
                v["rules"][0].as_object_mut().unwrap().remove("limit");
            }),
            "$.rules[0].key[1]",
            "descriptor entry `rule` would appear twice",
        );
        assert_err(
            err_with(|v| {
                v["global"] =
                    serde_json::json!({"cluster": "rls", "domain": "shop", "on_error": "maybe"});
            }),
            "$.global.on_error",
            "unknown variant",
        );
        assert_err(
            err_with(|v| v["response_headers"]["x_rate_limit"] = true.into()),
            "$.response_headers.x_rate_limit",
            "unknown field",
        );
    }

    #[test]
    fn meaning_errors_name_the_path() {
        assert_err(
            err_with(|v| v["rules"] = serde_json::json!([])),
            "$.rules",
            "at least one rule",
        );
        assert_err(
            err_with(|v| v["rules"][2]["name"] = "login".into()),
            "$.rules[2].name",
            "duplicate rule name `login`",
        );
        assert_err(
            err_with(|v| v["rules"][0]["name"] = "a b".into()),
            "$.rules[0].name",
            "contains ' '",
        );
        assert_err(
            err_with(|v| v["rules"][0]["limit"]["requests"] = 0.into()),
            "$.rules[0].limit.requests",
            "expected 1 to",
        );
        assert_err(
            err_with(|v| v["rules"][1]["limit"]["burst"] = 0.into()),
            "$.rules[1].limit.burst",
            "expected 1 to",
        );
        assert_err(
            err_with(|v| v["rules"][1]["key"][1]["header"] = "x tenant".into()),
            "$.rules[1].key[1].header",
            "not a valid header name",
        );
        assert_err(
            err_with(|v| v["rules"][1]["key"][1]["header"] = "X-User-Id".into()),
            "$.rules[1].key[1]",
            "duplicate key part",
        );
        assert_err(
            err_with(|v| v["rules"][1]["when_key_missing"]["fallback"] = "".into()),
            "$.rules[1].when_key_missing.fallback",
            "1 to 256",
        );
        assert_err(
            err_with(|v| v["rules"][0]["match"]["paths"][0]["exact"] = "login".into()),
            "$.rules[0].match.paths[0].exact",
            "must start with `/`",
        );
        assert_err(
            err_with(|v| v["rules"][0]["match"]["methods"][0] = "post".into()),
            "$.rules[0].match.methods[0]",
            "uppercase",
        );
        assert_err(
            err_with(|v| v["rules"][1]["match"]["hosts"][0] = "a.example.com:80".into()),
            "$.rules[1].match.hosts[0]",
            "not a host name",
        );
        assert_err(
            err_with(|v| v["rules"][1]["match"]["headers"][0]["name"] = ":path".into()),
            "$.rules[1].match.headers[0].name",
            "pseudo-header",
        );
        assert_err(
            err_with(|v| v["rules"][1]["match"]["headers"][1]["exact"] = "1".into()),
            "$.rules[1].match.headers[1]",
            "contradict",
        );
        assert_err(
            err_with(|v| v["max_keys"] = 0.into()),
            "$.max_keys",
            "expected 1 to",
        );
        assert_err(
            err_with(|v| v["worker_batch"] = 0.into()),
            "$.worker_batch",
            "expected 1..=1000",
        );
        assert_err(
            err_with(|v| v["worker_batch"] = 1001.into()),
            "$.worker_batch",
            "expected 1..=1000",
        );
        assert_err(
            err_with(|v| v["client_ip"]["trusted_hops"] = 17.into()),
            "$.client_ip.trusted_hops",
            "at most 16",
        );
        assert_err(
            err_with(|v| v["client_ip"]["ipv6_prefix"] = 129.into()),
            "$.client_ip.ipv6_prefix",
            "1 to 128",
        );
    }

    #[test]
    fn not_json() {
        let e = RateLimitConfig::from_json(b"{rules: []}").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e}");
        let e = RateLimitConfig::from_json(b"").unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");
    }
}
