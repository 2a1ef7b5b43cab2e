//! The one renderer of Envoy config for meshguard's Wasm filters: the
//! `http_filters` entry for a module (one filter, or a chain in one VM) and
//! the whole local `envoy.yaml` that `make run`, the end-to-end tests and
//! docker-compose run. Nothing else writes a Wasm filter block.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::filters;

/// One Wasm module in the filter chain.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmFilter {
    /// `ab-routing`; the Envoy filter is named `meshguard.<key>`.
    pub name: String,
    /// `ab_routing`: root_id, and the vm_id `meshguard_<key>`.
    pub key: String,
    /// Path of the `.wasm` file as Envoy sees it.
    pub module: String,
    /// The pluginConfig (sent to the module as a JSON string).
    pub config: Value,
}

impl WasmFilter {
    /// A shipped filter, `<wasm_dir>/<name>.wasm`, its config checked with
    /// the filter's own code first.
    pub fn shipped(name: &str, wasm_dir: &str, config: Value) -> Result<Self, String> {
        let f = filters::find(name)?;
        let json = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
        (f.validate)(&json).map_err(|e| format!("filter `{name}`: {e}"))?;
        Ok(Self {
            name: f.name.to_string(),
            key: f.config_key.to_string(),
            module: format!("{}/{}.wasm", wasm_dir.trim_end_matches('/'), f.name),
            config,
        })
    }

    /// Any module (test fixtures, chains): no validation here.
    pub fn module(name: &str, module: &Path, config: Value) -> Self {
        Self {
            name: name.to_string(),
            key: name.replace('-', "_"),
            module: module.to_string_lossy().into_owned(),
            config,
        }
    }

    /// The `http_filters` entry: Envoy's Wasm filter, V8, fail closed.
    pub fn block(&self) -> Value {
        let config_text = match &self.config {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        json!({
            "name": format!("meshguard.{}", self.key),
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": format!("meshguard.{}", self.key),
                    "root_id": self.key,
                    // A module that cannot load or refuses its config stops
                    // traffic rather than letting it through unfiltered.
                    "failure_policy": "FAIL_CLOSED",
                    "vm_config": {
                        "vm_id": format!("meshguard_{}", self.key),
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": self.module}},
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": config_text,
                    },
                },
            },
        })
    }
}

/// A module Envoy fetches itself (`vm_config.code.remote`) instead of
/// reading a file: what the agent's fetch is replaced by when Envoy loads a
/// filter straight from an OCI registry blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCode {
    /// e.g. `http://127.0.0.1:5000/v2/mg/ab-routing/blobs/sha256:…`.
    pub uri: String,
    /// The Envoy cluster that reaches `uri`'s host.
    pub cluster: String,
    /// Hex sha256 of the fetched bytes (the raw module layer's digest).
    pub sha256: String,
}

impl WasmFilter {
    /// [`WasmFilter::block`] with its `code` fetched from `remote`.
    pub fn remote_block(&self, remote: &RemoteCode) -> Value {
        let mut block = self.block();
        block["typed_config"]["config"]["vm_config"]["code"] = json!({"remote": {
            "http_uri": {"uri": remote.uri, "cluster": remote.cluster, "timeout": "30s"},
            "sha256": remote.sha256.trim_start_matches("sha256:"),
        }});
        block
    }
}

/// `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl Addr {
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_string(),
            port,
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}`: expected HOST:PORT"))?;
        let port = port
            .parse()
            .map_err(|_| format!("`{s}`: `{port}` is not a port number"))?;
        Ok(Self::new(host, port))
    }
}

/// The local setup: Envoy in front of the demo upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Local {
    pub listen: Addr,
    pub admin: Addr,
    pub upstream: Addr,
    /// Wasm filters in order, before the router.
    pub filters: Vec<WasmFilter>,
    /// More clusters (e.g. an auth service a stage calls out to).
    pub clusters: Vec<(String, Addr)>,
    /// Which of `clusters` speak gRPC (HTTP/2 upstream).
    pub grpc_clusters: Vec<String>,
}

/// `deploy/local/filters.yaml`: which filters run locally, with which config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersFile {
    pub filters: Vec<FilterEntry>,
    /// Services the filters call out to (authn's auth service), as Envoy
    /// clusters.
    #[serde(default)]
    pub clusters: Vec<ClusterEntry>,
}

/// A cluster a filter calls: its address for `make run` and for compose.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEntry {
    pub name: String,
    /// `HOST:PORT` for `make run` (`--cluster NAME=HOST:PORT` overrides).
    pub local: String,
    /// `HOST:PORT` inside docker-compose.
    pub compose: String,
    /// A gRPC service (the rate-limit service): HTTP/2 upstream.
    #[serde(default)]
    pub grpc: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterEntry {
    pub name: String,
    pub config: Value,
}

impl FiltersFile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let file: Self =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        // Validate now, so every error names this file.
        file.wasm_filters("/")
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, c) in file.clusters.iter().enumerate() {
            Addr::parse(&c.local)
                .and(Addr::parse(&c.compose))
                .map_err(|e| format!("{}: clusters[{i}] ({}): {e}", path.display(), c.name))?;
        }
        Ok(file)
    }

    /// The names of the gRPC clusters.
    pub fn grpc_clusters(&self) -> Vec<String> {
        self.clusters
            .iter()
            .filter(|c| c.grpc)
            .map(|c| c.name.clone())
            .collect()
    }

    /// The clusters at their `local` (or `compose`) addresses.
    pub fn cluster_addrs(&self, compose: bool) -> Result<Vec<(String, Addr)>, String> {
        self.clusters
            .iter()
            .map(|c| {
                Addr::parse(if compose { &c.compose } else { &c.local })
                    .map(|a| (c.name.clone(), a))
            })
            .collect()
    }

    /// The shipped filters it lists, configs validated; errors name the
    /// entry (`filters[0] (ab-routing): ...`).
    pub fn wasm_filters(&self, wasm_dir: &str) -> Result<Vec<WasmFilter>, String> {
        self.filters
            .iter()
            .enumerate()
            .map(|(i, f)| {
                WasmFilter::shipped(&f.name, wasm_dir, f.config.clone())
                    .map_err(|e| format!("filters[{i}] ({}): {e}", f.name))
            })
            .collect()
    }

    /// Like [`FiltersFile::wasm_filters`], and every module must exist
    /// (a local run, where `wasm_dir` is on this machine).
    pub fn local_wasm_filters(&self, wasm_dir: &str) -> Result<Vec<WasmFilter>, String> {
        let filters = self.wasm_filters(wasm_dir)?;
        for f in &filters {
            if !Path::new(&f.module).is_file() {
                return Err(format!("{} missing: run `make build`", f.module));
            }
        }
        Ok(filters)
    }
}

/// The repository's `deploy/local/filters.yaml`.
pub fn default_filters_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/filters.yaml")
}

fn socket(a: &Addr) -> Value {
    json!({"socket_address": {"address": a.host, "port_value": a.port}})
}

fn cluster(name: &str, a: &Addr) -> Value {
    // An IP needs no resolver; a name (compose's `upstream`) does.
    let kind = if a.host.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    json!({
        "name": name,
        "type": kind,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(a)}}]}],
        },
    })
}

impl Local {
    pub fn to_value(&self) -> Value {
        let mut http_filters: Vec<Value> = self.filters.iter().map(WasmFilter::block).collect();
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }));
        let mut clusters = vec![cluster("demo_upstream", &self.upstream)];
        clusters.extend(self.clusters.iter().map(|(n, a)| {
            let mut c = cluster(n, a);
            if self.grpc_clusters.contains(n) {
                c["typed_extension_protocol_options"] = json!({
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                });
            }
            c
        }));
        let route = |name: &str, demo_route: &str, variant: Option<&str>| {
            let mut m = json!({"prefix": "/"});
            if let Some(v) = variant {
                m["headers"] = json!([{"name": "x-ab-variant", "string_match": {"exact": v}}]);
            }
            json!({
                "name": name,
                "match": m,
                "route": {"cluster": "demo_upstream"},
                "request_headers_to_add": [{
                    "header": {"key": "x-demo-route", "value": demo_route},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }],
            })
        };
        json!({
            "admin": {"address": socket(&self.admin)},
            "stats_config": {
                // meshguard_ab_assigned.checkout.treatment ->
                // meshguard_ab_assigned{experiment="checkout",variant="treatment"}
                "stats_tags": [
                    {"tag_name": "experiment", "regex": r"^wasmcustom\.meshguard_ab_[a-z_]+(\.([^.]+))"},
                    {"tag_name": "variant", "regex": r"^wasmcustom\.meshguard_ab_(?:assigned|forced)\.[^.]+(\.([^.]+))$"},
                ],
            },
            "static_resources": {
                "listeners": [{
                    "name": "ingress",
                    "address": socket(&self.listen),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "ingress",
                            // What filters match paths on must be what the
                            // upstream reads: `//a`, `/p/../a`, `%2e%2e` and
                            // `%2F` normalized before any filter (Istio:
                            // meshConfig.pathNormalization).
                            "normalize_path": true,
                            "merge_slashes": true,
                            "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
                            "access_log": [{
                                "name": "envoy.access_loggers.stdout",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                                    "log_format": {"text_format_source": {"inline_string":
                                        "[access] %REQ(:METHOD)% %REQ(:PATH)% -> %RESPONSE_CODE% variant=%REQ(X-AB-VARIANT)% search=%REQ(X-AB-SEARCH)% route=%ROUTE_NAME%\n"}},
                                },
                            }],
                            "route_config": {
                                "name": "local",
                                "virtual_hosts": [{
                                    "name": "demo",
                                    "domains": ["*"],
                                    // What an Istio VirtualService header match does:
                                    // requests in `treatment` take their own route
                                    // (in a mesh: another subset).
                                    "routes": [
                                        route("checkout-treatment", "treatment", Some("treatment")),
                                        route("default", "default", None),
                                    ],
                                }],
                            },
                            "http_filters": http_filters,
                        },
                    }]}],
                }],
                "clusters": clusters,
            },
        })
    }

    /// The config as YAML, with a header saying where it came from.
    pub fn to_yaml(&self, header: &str) -> Result<String, String> {
        let body = serde_yaml::to_string(&self.to_value()).map_err(|e| e.to_string())?;
        let mut out = String::new();
        for line in header.lines() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&body);
        Ok(out)
    }
}

/// The header of the compose config (`deploy/local/envoy.yaml`).
pub const GENERATED: &str = "Generated by `meshguard envoy-config --compose` from deploy/local/filters.yaml; do not edit.\nRegenerate: make deploy/local/envoy.yaml";

/// The header of a config rendered from `filters_file`.
pub fn generated_from(filters_file: &Path) -> String {
    format!(
        "Generated by `meshguard envoy-config` from {}; do not edit.",
        filters_file.display()
    )
}

/// The config docker-compose.yaml runs (`deploy/local/envoy.yaml`): Envoy
/// in a container next to the `upstream` service, modules under /meshguard/dist.
pub fn compose(filters_file: &Path) -> Result<String, String> {
    let file = FiltersFile::load(filters_file)?;
    let local = Local {
        listen: Addr::new("0.0.0.0", 10000),
        admin: Addr::new("0.0.0.0", 9901),
        upstream: Addr::new("upstream", 8081),
        filters: file.wasm_filters("/meshguard/dist")?,
        clusters: file.cluster_addrs(true)?,
        grpc_clusters: file.grpc_clusters(),
    };
    local.to_yaml(GENERATED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names_root_and_vm_after_the_key() {
        let f = WasmFilter::shipped(
            "ab-routing",
            "/d/",
            json!({"experiments":[{"name":"e","variants":[{"name":"a","weight":1}],"sticky_key":["visitor_cookie"]}]}),
        )
        .unwrap();
        let b = f.block();
        assert_eq!(b["name"], "meshguard.ab_routing");
        let c = &b["typed_config"]["config"];
        assert_eq!(c["root_id"], "ab_routing");
        assert_eq!(c["vm_config"]["vm_id"], "meshguard_ab_routing");
        assert_eq!(
            c["vm_config"]["code"]["local"]["filename"],
            "/d/ab-routing.wasm"
        );
        assert_eq!(c["failure_policy"], "FAIL_CLOSED");
        let cfg: Value =
            serde_json::from_str(c["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(cfg, f.config);
    }

    #[test]
    fn remote_block_only_changes_the_code() {
        let f = WasmFilter::module("noop", Path::new("/d/noop.wasm"), json!({}));
        let remote = RemoteCode {
            uri: "http://127.0.0.1:5000/v2/mg/noop/blobs/sha256:ab".into(),
            cluster: "oci_registry".into(),
            sha256: "sha256:ab".into(),
        };
        let mut b = f.remote_block(&remote);
        let code = b["typed_config"]["config"]["vm_config"]["code"].take();
        assert_eq!(code["remote"]["http_uri"]["uri"], remote.uri);
        assert_eq!(code["remote"]["http_uri"]["cluster"], "oci_registry");
        assert_eq!(code["remote"]["sha256"], "ab");
        let mut local = f.block();
        local["typed_config"]["config"]["vm_config"]["code"].take();
        assert_eq!(b, local);
    }

    #[test]
    fn bad_filter_configs_are_refused_before_envoy_sees_them() {
        let err = WasmFilter::shipped("ab-routing", "/d", json!({"experiments": []})).unwrap_err();
        assert!(err.contains("$.experiments"), "{err}");
        assert!(WasmFilter::shipped("nope", "/d", json!({}))
            .unwrap_err()
            .contains("unknown filter"));
    }

    #[test]
    fn compose_config_is_the_checked_in_file() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let rendered = compose(&default_filters_file()).unwrap();
        let checked_in = std::fs::read_to_string(root.join("deploy/local/envoy.yaml")).unwrap();
        assert!(
            rendered == checked_in,
            "deploy/local/envoy.yaml is out of date: run `make deploy/local/envoy.yaml`"
        );
    }
}
