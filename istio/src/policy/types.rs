//! The policy file's schema. Traffic settings use Istio's own field names
//! and shapes (camelCase, durations as strings), so what you write is what
//! the DestinationRule or VirtualService gets. Unknown fields are errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mesh {
    /// Where services and filters go unless they say otherwise.
    pub namespace: String,
    /// Every namespace the policy may put resources in (`namespace` is
    /// always allowed).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// OCI registry and path the filter images live under:
    /// `registry.example.com/meshguard` -> `oci://…/ab-routing:<version>`.
    pub registry: String,
    /// Where EnvoyFilters with `--envoyfilter local` expect the modules in
    /// the proxy container (mounted with `sidecar.istio.io/userVolume`).
    #[serde(default = "default_wasm_dir")]
    pub wasm_dir: String,
}

fn default_wasm_dir() -> String {
    "/var/local/wasm".into()
}

/// Traffic settings: the governance baseline, `defaults`, and each
/// service's own (each layer overrides the one before, field by field).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Traffic {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// VirtualService route retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// VirtualService route timeout (none by default, as in Istio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionPool {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Tcp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tcp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Http {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retries {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Load balancing `LEAST_REQUEST`.
    Base,
    /// Consistent hashing on `hash` (ring hash or maglev).
    Business,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    pub role: Role,
    /// Defaults to `mesh.namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The DestinationRule/VirtualService host; defaults to the service's
    /// name (a short name, resolved in the namespace).
    #[serde(default)]
    pub host: Option<String>,
    /// `business` only: what requests are hashed on.
    #[serde(default)]
    pub hash: Option<HashOn>,
    /// `business` only: `{ringHash: {minimumRingSize: N}}` or
    /// `{maglev: {tableSize: PRIME}}`; default Istio's ring hash.
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// Named subsets (DNS-1123 names) with their pod labels.
    #[serde(default)]
    pub subsets: BTreeMap<String, Subset>,
    /// Weighted routes to subsets (summing to 100) for requests no
    /// experiment route takes.
    #[serde(default)]
    pub split: Vec<Split>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub retries: Option<Retries>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum HashOn {
    /// `{header: x-user-id}`
    Header(String),
    /// `{cookie: {name: session, ttl: 3600s, path: /}}`
    Cookie(Cookie),
    /// `{sourceIp: true}`
    SourceIp(bool),
    /// `{queryParameter: user}`
    QueryParameter(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cookie {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Algorithm {
    RingHash(RingHash),
    Maglev(Maglev),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RingHash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Maglev {
    #[serde(default)]
    pub table_size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subset {
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Split {
    pub subset: String,
    pub weight: i64,
}

/// One A/B experiment: ab-routing's experiment (its own field names, its
/// own validation) plus where its variants route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The service (key in `services`) whose VirtualService routes on the
    /// variant header, and whose DestinationRule gets one subset per variant.
    pub service: String,
    #[serde(default)]
    pub header: Option<String>,
    pub sticky_key: Value,
    #[serde(default, rename = "match")]
    pub match_: Option<Value>,
    pub variants: Vec<Variant>,
    /// The variant that requests without the header (unmatched, or no
    /// sticky key) are routed to; default the first variant.
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The header value, and the subset name (so a DNS-1123 label).
    pub name: String,
    pub weight: u32,
    /// Pod labels of the variant's subset.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterPolicy {
    /// Image tag: `oci://<registry>/<filter>:<version>`.
    pub version: String,
    /// The image's manifest digest (`sha256:…` or hex), the WasmPlugin's
    /// `sha256`; else from `--lock dist/images.lock.json`.
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub target_refs: Option<Vec<TargetRef>>,
    #[serde(default, rename = "match")]
    pub match_: Option<Vec<TrafficMatch>>,
    #[serde(default)]
    pub fail_strategy: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub image_pull_secret: Option<String>,
    /// Overrides the filter's built-in phase (rarely right).
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub priority: Option<i32>,
    /// The pluginConfig (for ab-routing without `experiments`: those come
    /// from the policy's `experiments`).
    #[serde(default)]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortNumber>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortNumber {
    pub number: i64,
}
