//! A resolved policy as Istio resources. Output is stable: resources in a
//! fixed order (kind, namespace, name), keys sorted, lists in policy order
//! where order means something (routes, variants) and sorted elsewhere.

use serde_json::{json, Map, Value};

use super::types::{Algorithm, HashOn, Traffic};
use super::{Resolved, ResolvedFilter, ResolvedService};
use crate::envoy::WasmFilter;
use crate::yaml;

/// How the filters reach the proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// `WasmPlugin`s (the default; istio-agent pulls the image).
    WasmPlugin,
    /// `EnvoyFilter`s inserting the filter with the module from a file in
    /// the proxy container (`mesh.wasmDir`).
    EnvoyFilterLocal,
    /// `EnvoyFilter`s delivering the filter by ECDS with `code.remote`
    /// (istio-agent fetches the `oci://` image, as for a WasmPlugin).
    EnvoyFilterEcds,
}

impl Wiring {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::EnvoyFilterLocal),
            "ecds" => Ok(Self::EnvoyFilterEcds),
            _ => Err(format!("--envoyfilter `{s}`: expected local or ecds")),
        }
    }
}

/// One rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub kind: &'static str,
    pub name: String,
    pub namespace: String,
    pub doc: Value,
}

impl Resource {
    /// `-o DIR` file name: `destinationrule.shop.checkout.yaml`.
    pub fn file_name(&self) -> String {
        format!(
            "{}.{}.{}.yaml",
            self.kind.to_ascii_lowercase(),
            self.namespace,
            self.name
        )
    }
}

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

fn metadata(name: &str, namespace: &str, env: &Option<String>) -> Value {
    let mut labels = json!({ MANAGED_BY: "meshguard" });
    if let Some(e) = env {
        labels["meshguard.io/environment"] = json!(e);
    }
    json!({"name": name, "namespace": namespace, "labels": labels})
}

fn value<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

pub fn destination_rule(s: &ResolvedService, env: &Option<String>) -> Value {
    let mut policy = Map::new();
    let lb = match &s.hash {
        None => json!({"simple": "LEAST_REQUEST"}),
        Some(h) => {
            let mut ch = match h {
                HashOn::Header(n) => json!({"httpHeaderName": n}),
                HashOn::Cookie(c) => json!({"httpCookie": value(c)}),
                HashOn::SourceIp(b) => json!({"useSourceIp": b}),
                HashOn::QueryParameter(q) => json!({"httpQueryParameterName": q}),
            };
            match &s.algorithm {
                Some(Algorithm::RingHash(r)) => ch["ringHash"] = value(r),
                Some(Algorithm::Maglev(m)) => ch["maglev"] = value(m),
                None => {}
            }
            json!({ "consistentHash": ch })
        }
    };
    policy.insert("loadBalancer".into(), lb);
    let Traffic {
        connection_pool,
        outlier_detection,
        ..
    } = &s.traffic;
    if let Some(cp) = connection_pool {
        policy.insert("connectionPool".into(), value(cp));
    }
    if let Some(od) = outlier_detection {
        policy.insert("outlierDetection".into(), value(od));
    }
    let mut spec = json!({"host": s.host, "trafficPolicy": policy});
    if !s.subsets.is_empty() {
        spec["subsets"] = s
            .subsets
            .iter()
            .map(|(name, labels)| json!({"name": name, "labels": labels}))
            .collect();
    }
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": metadata(&s.name, &s.namespace, env),
        "spec": spec,
    })
}

pub fn virtual_service(s: &ResolvedService, env: &Option<String>) -> Value {
    let with_policy = |mut route: Value| {
        if let Some(r) = &s.traffic.retries {
            route["retries"] = value(r);
        }
        if let Some(t) = &s.traffic.timeout {
            route["timeout"] = json!(t);
        }
        route
    };
    let dest = |subset: Option<&str>| {
        let mut d = json!({"host": s.host});
        if let Some(sub) = subset {
            d["subset"] = json!(sub);
        }
        json!({ "destination": d })
    };
    let mut http: Vec<Value> = s
        .header_routes
        .iter()
        .map(|r| {
            with_policy(json!({
                "name": r.name,
                "match": [{"headers": {r.header.as_str(): {"exact": r.value}}}],
                "route": [dest(Some(&r.subset))],
            }))
        })
        .collect();
    let default_route: Vec<Value> = match s.default_route.as_slice() {
        [] => vec![dest(None)],
        [(subset, _)] => vec![dest(Some(subset))],
        many => many
            .iter()
            .map(|(subset, w)| {
                let mut d = dest(Some(subset));
                d["weight"] = json!(w);
                d
            })
            .collect(),
    };
    http.push(with_policy(
        json!({"name": "default", "route": default_route}),
    ));
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(&s.name, &s.namespace, env),
        "spec": {"hosts": [s.host], "http": http},
    })
}

pub fn wasm_plugin(f: &ResolvedFilter, env: &Option<String>) -> Value {
    let mut spec = json!({
        "url": f.url,
        "sha256": f.sha256,
        "imagePullPolicy": f.image_pull_policy,
        "phase": f.phase,
        "priority": f.priority,
        "failStrategy": f.fail_strategy,
        "pluginName": f.config_key,
        "pluginConfig": f.plugin_config,
    });
    if let Some(s) = &f.image_pull_secret {
        spec["imagePullSecret"] = json!(s);
    }
    if let Some(s) = &f.selector {
        spec["selector"] = value(s);
    }
    if let Some(t) = &f.target_refs {
        spec["targetRefs"] = value(t);
    }
    if let Some(m) = &f.match_ {
        spec["match"] = value(m);
    }
    json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": metadata(&f.name, &f.namespace, env),
        "spec": spec,
    })
}

/// Envoy's `failure_policy` for a WasmPlugin `failStrategy`.
pub fn failure_policy(fail_strategy: &str) -> &'static str {
    match fail_strategy {
        "FAIL_OPEN" => "FAIL_OPEN",
        "FAIL_RELOAD" => "FAIL_RELOAD",
        _ => "FAIL_CLOSED",
    }
}

/// The filter's `http_filters` entry, as the local Envoy config renders it
/// (the same code: [`WasmFilter::block`]), with the module at `module`.
pub fn envoy_block(f: &ResolvedFilter, module: &str) -> Value {
    let w = WasmFilter {
        name: f.name.clone(),
        key: f.config_key.clone(),
        module: module.to_string(),
        config: f.plugin_config.clone(),
    };
    let mut block = w.block();
    block["typed_config"]["config"]["failure_policy"] = json!(failure_policy(&f.fail_strategy));
    block
}

const HCM: &str = "envoy.filters.network.http_connection_manager";
const ROUTER: &str = "envoy.filters.http.router";
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// Patch contexts (and listener ports) for a filter's `match`.
fn contexts(f: &ResolvedFilter) -> Vec<(&'static str, Option<i64>)> {
    let mut out: Vec<(&'static str, Option<i64>)> = Vec::new();
    let matches = f.match_.clone().unwrap_or_default();
    if matches.is_empty() {
        return vec![("ANY", None)];
    }
    for m in matches {
        let ctxs: &[&'static str] = match m.mode.as_deref() {
            Some("CLIENT") => &["SIDECAR_OUTBOUND", "GATEWAY"],
            Some("SERVER") => &["SIDECAR_INBOUND"],
            _ => &["ANY"],
        };
        for c in ctxs {
            if m.ports.is_empty() {
                out.push((c, None));
            }
            for p in &m.ports {
                out.push((c, Some(p.number)));
            }
        }
    }
    out.dedup();
    out
}

fn listener_match(context: &str, port: Option<i64>) -> Value {
    let mut listener =
        json!({"filterChain": {"filter": {"name": HCM, "subFilter": {"name": ROUTER}}}});
    if let Some(p) = port {
        listener["portNumber"] = json!(p);
    }
    json!({"context": context, "listener": listener})
}

/// An EnvoyFilter for one filter. `order` is its place in the chain
/// (phase, then priority): patches inserted before the router in that
/// order keep the filters in the order WasmPlugin phases would give.
pub fn envoy_filter(
    f: &ResolvedFilter,
    wiring: Wiring,
    wasm_dir: &str,
    order: usize,
    env: &Option<String>,
) -> Result<Value, String> {
    let name = format!("meshguard.{}", f.config_key);
    let module = format!("{}/{}.wasm", wasm_dir.trim_end_matches('/'), f.name);
    let mut patches = Vec::new();
    let http_filter_value = match wiring {
        Wiring::EnvoyFilterEcds => {
            let mut block = envoy_block(f, &module);
            block["typed_config"]["config"]["vm_config"]["code"] = json!({"remote": {
                "http_uri": {"uri": f.url, "cluster": "_", "timeout": "30s"},
                "sha256": f.sha256,
            }});
            patches.push(json!({
                "applyTo": "EXTENSION_CONFIG",
                "patch": {"operation": "ADD", "value": block},
            }));
            json!({
                "name": name,
                "config_discovery": {
                    "config_source": {"ads": {}, "initial_fetch_timeout": "0s"},
                    "type_urls": [WASM_TYPE],
                },
            })
        }
        _ => envoy_block(f, &module),
    };
    for (context, port) in contexts(f) {
        patches.push(json!({
            "applyTo": "HTTP_FILTER",
            "match": listener_match(context, port),
            "patch": {"operation": "INSERT_BEFORE", "value": http_filter_value},
        }));
    }
    let mut spec = json!({"configPatches": patches, "priority": order as i64 + 1});
    match (&f.selector, &f.target_refs) {
        (Some(s), _) => spec["workloadSelector"] = json!({"labels": s.match_labels}),
        (None, Some(_)) => {
            return Err(format!(
                "filter `{}`: EnvoyFilter wiring selects workloads by `selector`; `targetRefs` is for WasmPlugins",
                f.name
            ))
        }
        (None, None) => {}
    }
    Ok(json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata(&format!("meshguard-{}", f.name), &f.namespace, env),
        "spec": spec,
    }))
}

fn phase_rank(p: &str) -> usize {
    match p {
        "AUTHN" => 0,
        "AUTHZ" => 1,
        "STATS" => 2,
        _ => 3,
    }
}

/// The filters in chain order: phase, higher priority first, name.
pub fn chain_order(filters: &[ResolvedFilter]) -> Vec<&ResolvedFilter> {
    let mut v: Vec<&ResolvedFilter> = filters.iter().collect();
    v.sort_by(|a, b| {
        (phase_rank(&a.phase), -(a.priority as i64), &a.name).cmp(&(
            phase_rank(&b.phase),
            -(b.priority as i64),
            &b.name,
        ))
    });
    v
}

pub fn resources(r: &Resolved, wiring: Wiring) -> Result<Vec<Resource>, String> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<Resource>, kind: &'static str, doc: Value| {
        let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        out.push(Resource {
            kind,
            name,
            namespace,
            doc,
        });
    };
    for s in &r.services {
        push(&mut out, "DestinationRule", destination_rule(s, &r.env));
        push(&mut out, "VirtualService", virtual_service(s, &r.env));
    }
    match wiring {
        Wiring::WasmPlugin => {
            for f in &r.filters {
                push(&mut out, "WasmPlugin", wasm_plugin(f, &r.env));
            }
        }
        _ => {
            for (i, f) in chain_order(&r.filters).into_iter().enumerate() {
                let doc = envoy_filter(f, wiring, &r.mesh.wasm_dir, i, &r.env)?;
                push(&mut out, "EnvoyFilter", doc);
            }
        }
    }
    let rank = |k: &str| match k {
        "DestinationRule" => 0,
        "VirtualService" => 1,
        "WasmPlugin" => 2,
        _ => 3,
    };
    out.sort_by(|a, b| {
        (rank(a.kind), &a.namespace, &a.name).cmp(&(rank(b.kind), &b.namespace, &b.name))
    });
    Ok(out)
}

/// The header comment of rendered output.
pub fn header(r: &Resolved) -> String {
    let env = r
        .env
        .as_deref()
        .map(|e| format!(" --env {e}"))
        .unwrap_or_default();
    format!(
        "# Generated by `meshguard render {}{env}`; do not edit.\n",
        r.origin
    )
}

/// Multi-document YAML.
pub fn to_stream(r: &Resolved, resources: &[Resource]) -> Result<String, String> {
    let mut out = header(r);
    for res in resources {
        out.push_str("---\n");
        out.push_str(&yaml::emit(&res.doc)?);
    }
    Ok(out)
}

/// One document with the header, for `-o DIR`.
pub fn to_file(r: &Resolved, res: &Resource) -> Result<String, String> {
    Ok(format!("{}{}", header(r), yaml::emit(&res.doc)?))
}
