//! pluginConfig for accesslog. These serde types are the schema: the filter
//! parses them in `on_configure` and `meshguard validate accesslog` uses the
//! same types. Unknown fields are errors.

use serde::{Deserialize, Serialize};

use meshguard_common::config::{ConfigError, JsonPath};
use meshguard_common::contract::AB_FORCE_SECRET_HEADER;
use meshguard_common::headers::is_token_char;

/// Top-level pluginConfig. Every field has a default: `{}` logs every
/// request as a log line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Where this proxy runs; copied into every record so a namespace stays
    /// unique across clusters and environments.
    #[serde(default)]
    pub tags: Tags,
    /// What of the query string reaches the record.
    #[serde(default)]
    pub query: QueryConfig,
    /// Extra headers by allow-list; sensitive ones redacted or left out.
    #[serde(default)]
    pub headers: HeadersConfig,
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// The record as a line in Envoy's log (stderr).
    #[serde(default)]
    pub log_line: LogLineConfig,
    /// Batches to a collector; absent = no shipping.
    #[serde(default)]
    pub ship: Option<ShipConfig>,
    /// Which facts other meshguard modules publish to filter state this
    /// module reads for each record (one host call each): `identity`
    /// (authn), `variants` (ab-routing), `rate_limit` (ratelimit). Absent =
    /// all three; `meshguard render` lists the ones its policy deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts_from_filter_state: Option<Vec<FactKind>>,
}

/// A fact another meshguard module publishes to filter state
/// (`meshguard_common::contract`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactKind {
    Identity,
    Variants,
    RateLimit,
}

impl AccessLogConfig {
    /// [`Self::facts_from_filter_state`] as the stage reads it.
    pub fn fact_kinds(&self) -> meshguard_stage::FactKinds {
        match &self.facts_from_filter_state {
            None => meshguard_stage::FactKinds::ALL,
            Some(list) => meshguard_stage::FactKinds {
                identity: list.contains(&FactKind::Identity),
                variants: list.contains(&FactKind::Variants),
                rate_limit: list.contains(&FactKind::RateLimit),
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub workload: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    /// The path as received, query included.
    #[default]
    Keep,
    /// The path without `?` and what follows.
    Drop,
    /// The query kept, the values of the listed parameters replaced by
    /// `REDACTED`.
    Redact,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    #[serde(default)]
    pub mode: QueryMode,
    /// With `redact`: parameter names (exact, case-sensitive, as sent).
    #[serde(default)]
    pub redact_params: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensitiveMode {
    /// Logged as `"[REDACTED]"`: you see the header was there.
    #[default]
    Redact,
    /// Not logged at all.
    Omit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Request headers logged under `request_headers` (lowercase names).
    #[serde(default)]
    pub request: Vec<String>,
    /// Response headers logged under `response_headers`.
    #[serde(default)]
    pub response: Vec<String>,
    /// Headers whose values are never logged, even when allow-listed.
    #[serde(default = "default_sensitive")]
    pub sensitive: Vec<String>,
    #[serde(default)]
    pub sensitive_mode: SensitiveMode,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        Self {
            request: Vec::new(),
            response: Vec::new(),
            sensitive: default_sensitive(),
            sensitive_mode: SensitiveMode::default(),
        }
    }
}

/// Credentials and session secrets a log must never hold.
pub fn default_sensitive() -> Vec<String> {
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        AB_FORCE_SECRET_HEADER,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Share of successful requests logged, 0.0–1.0 (in steps of 0.0001).
    /// Errors (status ≥ 400, no status, or any response flag) are always
    /// logged.
    #[serde(default = "one")]
    pub success_rate: f64,
    /// Paths (without query) never logged: exact, or a prefix when ending
    /// in `*` (`/healthz`, `/internal/*`).
    #[serde(default)]
    pub exclude_paths: Vec<String>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            success_rate: 1.0,
            exclude_paths: Vec::new(),
        }
    }
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineLevel {
    #[default]
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLineConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The proxy log level of the lines. Envoy drops lines below its `wasm`
    /// logger's level (Istio sidecars default to `warning`).
    #[serde(default)]
    pub level: LineLevel,
}

impl Default for LogLineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            level: LineLevel::default(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipFormat {
    /// OTLP/HTTP JSON logs (`POST /v1/logs`).
    #[default]
    Otlp,
    /// Elasticsearch `_bulk` NDJSON (`POST /_bulk`).
    Bulk,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipConfig {
    /// The Envoy cluster of the collector.
    pub cluster: String,
    #[serde(default)]
    pub format: ShipFormat,
    /// Request path; default `/v1/logs` (otlp) or `/_bulk` (bulk).
    #[serde(default)]
    pub path: Option<String>,
    /// `:authority` of the calls; default the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// `_index` of bulk `create` actions.
    #[serde(default = "default_index")]
    pub index: String,
    #[serde(default = "default_batch_records")]
    pub batch_max_records: usize,
    #[serde(default = "default_batch_bytes")]
    pub batch_max_bytes: usize,
    /// A batch goes out when it is full or its oldest record is this old.
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    /// Records waiting, being sent or waiting to be retried, in bytes; a
    /// record that does not fit is dropped and counted.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_max_bytes: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Resends of a batch after a retryable failure (connection failure,
    /// 429, 502, 503, 504), then it is dropped and counted.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// First backoff; doubles per attempt up to `retry_backoff_max_ms`. A
    /// `Retry-After` (seconds) in the answer wins, capped the same way.
    #[serde(default = "default_backoff_ms")]
    pub retry_backoff_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// Batches in flight at once, per worker.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
}

fn default_index() -> String {
    "meshguard-access".to_string()
}
fn default_batch_records() -> usize {
    500
}
fn default_batch_bytes() -> usize {
    512 * 1024
}
fn default_flush_ms() -> u64 {
    1000
}
fn default_buffer_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_retries() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_in_flight() -> usize {
    2
}

impl ShipConfig {
    pub fn path(&self) -> &str {
        match (&self.path, self.format) {
            (Some(p), _) => p,
            (None, ShipFormat::Otlp) => "/v1/logs",
            (None, ShipFormat::Bulk) => "/_bulk",
        }
    }

    pub fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }
}

fn header_list(at: &JsonPath, names: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        // Reading any header is fine (even `cookie`: the sensitive list
        // decides what is shown); the name only has to be one.
        if n.starts_with(':') {
            return Err(at.index(i).err(format!(
                "`{n}` is a pseudo-header; its value is already a record field"
            )));
        }
        if n.is_empty() || n.len() > 256 || !n.chars().all(is_token_char) {
            return Err(at
                .index(i)
                .err(format!("`{n}` is not a valid header name (RFC 9110 token)")));
        }
        let name = n.to_ascii_lowercase();
        if out.contains(&name) {
            return Err(at.index(i).err(format!("duplicate header `{name}`")));
        }
        out.push(name);
    }
    Ok(out)
}

impl AccessLogConfig {
    /// Semantic checks; errors name the JSON path under `at`.
    pub fn validate_at(&self, at: &JsonPath) -> Result<(), ConfigError> {
        if let Some(list) = &self.facts_from_filter_state {
            for (i, k) in list.iter().enumerate() {
                if list.get(..i).is_some_and(|before| before.contains(k)) {
                    return Err(at
                        .field("facts_from_filter_state")
                        .index(i)
                        .err("listed twice"));
                }
            }
        }
        let h = at.field("headers");
        header_list(&h.field("request"), &self.headers.request)?;
        header_list(&h.field("response"), &self.headers.response)?;
        header_list(&h.field("sensitive"), &self.headers.sensitive)?;

        let q = at.field("query");
        if self.query.mode == QueryMode::Redact && self.query.redact_params.is_empty() {
            return Err(q
                .field("redact_params")
                .err("mode `redact` needs at least one parameter name"));
        }
        if self.query.mode != QueryMode::Redact && !self.query.redact_params.is_empty() {
            return Err(q
                .field("redact_params")
                .err("only used with mode `redact`; set `\"mode\": \"redact\"` or remove it"));
        }
        for (i, p) in self.query.redact_params.iter().enumerate() {
            if p.is_empty() || p.contains(['&', '=', '?', '#']) {
                return Err(q
                    .field("redact_params")
                    .index(i)
                    .err(format!("`{p}` is not a query parameter name")));
            }
        }

        let s = at.field("sampling");
        let rate = self.sampling.success_rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(s
                .field("success_rate")
                .err("not a share; expected 0.0 to 1.0".to_string()));
        }
        for (i, p) in self.sampling.exclude_paths.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(s
                    .field("exclude_paths")
                    .index(i)
                    .err(format!("`{p}` must start with `/`")));
            }
            if p.trim_end_matches('*').contains('*') || p.contains('?') {
                return Err(s.field("exclude_paths").index(i).err(format!(
                    "`{p}`: only a trailing `*` (prefix) is supported, and no query"
                )));
            }
        }

        if let Some(ship) = &self.ship {
            ship.validate_at(&at.field("ship"))?;
        } else if !self.log_line.enabled {
            return Err(at
                .field("log_line")
                .field("enabled")
                .err("with no `ship` either, nothing would be logged"));
        }
        Ok(())
    }
}

impl ShipConfig {
    fn validate_at(&self, at: &JsonPath) -> Result<(), ConfigError> {
        if self.cluster.is_empty() {
            return Err(at.field("cluster").err("expected an Envoy cluster name"));
        }
        if !self.path().starts_with('/') {
            return Err(at.field("path").err("must start with `/`"));
        }
        if self.authority().is_empty() || self.authority().contains(['\r', '\n', '\0', ' ']) {
            return Err(at.field("authority").err("expected a host[:port]"));
        }
        if self.index.is_empty() || self.index.contains(['"', '\\', '\r', '\n', ' ', ',', '/']) {
            return Err(at
                .field("index")
                .err("expected an Elasticsearch index name"));
        }
        for (field, value, min) in [
            ("batch_max_records", self.batch_max_records, 1),
            ("batch_max_bytes", self.batch_max_bytes, 1024),
            ("max_in_flight", self.max_in_flight, 1),
        ] {
            if value < min {
                return Err(at.field(field).err(format!("expected at least {min}")));
            }
        }
        if self.buffer_max_bytes < self.batch_max_bytes {
            return Err(at.field("buffer_max_bytes").err(format!(
                "smaller than batch_max_bytes ({}): a full batch would never fit",
                self.batch_max_bytes
            )));
        }
        for (field, value, min) in [
            ("flush_interval_ms", self.flush_interval_ms, 10),
            ("timeout_ms", self.timeout_ms, 1),
            ("retry_backoff_ms", self.retry_backoff_ms, 1),
        ] {
            if value < min {
                return Err(at.field(field).err(format!("expected at least {min} ms")));
            }
        }
        if self.retry_backoff_max_ms < self.retry_backoff_ms {
            return Err(at
                .field("retry_backoff_max_ms")
                .err("smaller than retry_backoff_ms"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshguard_common::config::parse_config;

    fn check(json: &str) -> Result<AccessLogConfig, ConfigError> {
        let c: AccessLogConfig = parse_config(json.as_bytes())?;
        c.validate_at(&JsonPath::root())?;
        Ok(c)
    }

    #[test]
    fn empty_config_logs_lines_with_defaults() {
        let c = check("{}").unwrap();
        assert!(c.log_line.enabled);
        assert_eq!(c.sampling.success_rate, 1.0);
        assert!(c.headers.sensitive.contains(&"authorization".to_string()));
        assert!(c.ship.is_none());
    }

    #[test]
    fn mistakes_name_their_path() {
        for (json, path, want) in [
            (r#"{"tagz":{}}"#, "$.tagz", "unknown field"),
            (r#"{"tags":{"env":"x"}}"#, "$.tags.env", "unknown field"),
            (
                r#"{"query":{"mode":"hide"}}"#,
                "$.query.mode",
                "unknown variant",
            ),
            (
                r#"{"query":{"mode":"redact"}}"#,
                "$.query.redact_params",
                "at least one",
            ),
            (
                r#"{"query":{"redact_params":["a"]}}"#,
                "$.query.redact_params",
                "only used with",
            ),
            (
                r#"{"query":{"mode":"redact","redact_params":["a=b"]}}"#,
                "$.query.redact_params[0]",
                "not a query parameter",
            ),
            (
                r#"{"headers":{"request":["x ok"]}}"#,
                "$.headers.request[0]",
                "not a valid header name",
            ),
            (
                r#"{"headers":{"request":[":path"]}}"#,
                "$.headers.request[0]",
                "pseudo-header",
            ),
            (
                r#"{"headers":{"response":["a","A"]}}"#,
                "$.headers.response[1]",
                "duplicate",
            ),
            (
                r#"{"sampling":{"success_rate":1.5}}"#,
                "$.sampling.success_rate",
                "expected 0.0 to 1.0",
            ),
            (
                r#"{"sampling":{"exclude_paths":["healthz"]}}"#,
                "$.sampling.exclude_paths[0]",
                "start with",
            ),
            (
                r#"{"sampling":{"exclude_paths":["/a*b"]}}"#,
                "$.sampling.exclude_paths[0]",
                "trailing",
            ),
            (
                r#"{"log_line":{"enabled":false}}"#,
                "$.log_line.enabled",
                "nothing would be logged",
            ),
            (
                r#"{"log_line":{"level":"debug"}}"#,
                "$.log_line.level",
                "unknown variant",
            ),
            (r#"{"ship":{}}"#, "$.ship", "missing field `cluster`"),
            (
                r#"{"ship":{"cluster":"c","format":"kafka"}}"#,
                "$.ship.format",
                "unknown variant",
            ),
            (
                r#"{"ship":{"cluster":"c","path":"v1"}}"#,
                "$.ship.path",
                "start with",
            ),
            (
                r#"{"ship":{"cluster":"c","batch_max_records":0}}"#,
                "$.ship.batch_max_records",
                "at least 1",
            ),
            (
                r#"{"ship":{"cluster":"c","buffer_max_bytes":2048}}"#,
                "$.ship.buffer_max_bytes",
                "smaller than batch_max_bytes",
            ),
            (
                r#"{"ship":{"cluster":"c","flush_interval_ms":1}}"#,
                "$.ship.flush_interval_ms",
                "at least 10",
            ),
            (
                r#"{"ship":{"cluster":"c","retry_backoff_ms":100,"retry_backoff_max_ms":10}}"#,
                "$.ship.retry_backoff_max_ms",
                "smaller",
            ),
            (
                r#"{"ship":{"cluster":"c","index":"a b"}}"#,
                "$.ship.index",
                "index name",
            ),
            (
                r#"{"facts_from_filter_state":["identity","user"]}"#,
                "$.facts_from_filter_state[1]",
                "unknown variant",
            ),
            (
                r#"{"facts_from_filter_state":"identity"}"#,
                "$.facts_from_filter_state",
                "invalid type",
            ),
            (
                r#"{"facts_from_filter_state":["variants","rate_limit","variants"]}"#,
                "$.facts_from_filter_state[2]",
                "listed twice",
            ),
        ] {
            let err = check(json).unwrap_err();
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn facts_from_filter_state_reads_what_is_listed() {
        let all = check("{}").unwrap().fact_kinds();
        assert!(all.identity && all.variants && all.rate_limit);
        let none = check(r#"{"facts_from_filter_state":[]}"#)
            .unwrap()
            .fact_kinds();
        assert!(!none.identity && !none.variants && !none.rate_limit);
        let one = check(r#"{"facts_from_filter_state":["variants"]}"#)
            .unwrap()
            .fact_kinds();
        assert!(!one.identity && one.variants && !one.rate_limit);
    }

    #[test]
    fn ship_defaults_follow_the_format() {
        let c = check(r#"{"ship":{"cluster":"otel"}}"#).unwrap();
        let s = c.ship.unwrap();
        assert_eq!((s.path(), s.authority()), ("/v1/logs", "otel"));
        let c = check(r#"{"ship":{"cluster":"es","format":"bulk","authority":"es.local:9200"}}"#)
            .unwrap();
        let s = c.ship.unwrap();
        assert_eq!((s.path(), s.authority()), ("/_bulk", "es.local:9200"));
    }
}
