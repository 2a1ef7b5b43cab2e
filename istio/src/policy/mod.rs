//! The policy file: one YAML document describing a mesh's services,
//! experiments and filters, per environment. [`PolicyFile::resolve`] checks
//! all of it (the schema, Istio's validation rules, each filter's config
//! with the filter's own code) and returns the model [`render`] turns into
//! DestinationRules, VirtualServices, WasmPlugins and EnvoyFilters. Every
//! mistake is reported as `POLICY:LINE: path: what is wrong`.

pub mod render;
pub mod types;

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::filters;
use crate::rules;
use crate::yaml::{self, child, index, Located};
use meshguard_stage::Stage;
use types::*;

/// The service-governance baseline every service starts from (then
/// `defaults`, then the service's own settings, each per environment).
pub fn baseline() -> Traffic {
    Traffic {
        connection_pool: Some(ConnectionPool {
            tcp: Some(Tcp {
                connect_timeout: Some("500ms".into()),
                ..Tcp::default()
            }),
            http: Some(Http {
                http2_max_requests: Some(10),
                max_requests_per_connection: Some(2),
                max_retries: Some(3),
                ..Http::default()
            }),
        }),
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx_errors: Some(3),
            interval: Some("10s".into()),
            base_ejection_time: Some("30s".into()),
            ..OutlierDetection::default()
        }),
        retries: Some(Retries {
            attempts: Some(3),
            per_try_timeout: Some("2s".into()),
            ..Retries::default()
        }),
        timeout: None,
    }
}

const TOP_LEVEL: &[&str] = &[
    "mesh",
    "defaults",
    "services",
    "experiments",
    "filters",
    "environments",
];
const OVERRIDABLE: &[&str] = &["mesh", "defaults", "services", "experiments", "filters"];

/// `dist/images.lock.json` as `make push` writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct LockEntry {
    pub reference: String,
    pub manifest_digest: String,
}
pub type Lock = BTreeMap<String, LockEntry>;

pub fn load_lock(path: &Path) -> Result<Lock, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&text))
        .map_err(|e| format!("{}: at {}: {}", path.display(), e.path(), e.inner()))
}

/// A loaded policy file.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub origin: String,
    pub doc: Located,
}

/// The policy for one environment, checked and ready to render.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub env: Option<String>,
    pub origin: String,
    pub mesh: Mesh,
    pub services: Vec<ResolvedService>,
    pub filters: Vec<ResolvedFilter>,
}

#[derive(Debug, Clone)]
pub struct ResolvedService {
    pub name: String,
    pub namespace: String,
    pub host: String,
    pub role: Role,
    pub hash: Option<HashOn>,
    pub algorithm: Option<Algorithm>,
    /// Subset name -> labels (the service's own and its experiments').
    pub subsets: BTreeMap<String, BTreeMap<String, String>>,
    /// Header routes, in order: (route name, header, value, subset).
    pub header_routes: Vec<HeaderRoute>,
    /// The route for everything else: (subset, weight); empty = the host.
    pub default_route: Vec<(String, i64)>,
    pub traffic: Traffic,
}

#[derive(Debug, Clone)]
pub struct HeaderRoute {
    pub name: String,
    pub header: String,
    pub value: String,
    pub subset: String,
}

#[derive(Debug, Clone)]
pub struct ResolvedFilter {
    pub name: String,
    pub config_key: String,
    pub namespace: String,
    pub url: String,
    pub sha256: String,
    pub phase: String,
    pub priority: i32,
    pub fail_strategy: String,
    pub image_pull_policy: String,
    pub image_pull_secret: Option<String>,
    pub selector: Option<Selector>,
    pub target_refs: Option<Vec<TargetRef>>,
    pub match_: Option<Vec<TrafficMatch>>,
    pub plugin_config: Value,
}

/// Collects errors with their place in the policy file.
struct Ctx<'a> {
    file: &'a PolicyFile,
    env: Option<&'a str>,
    errors: Vec<String>,
}

impl Ctx<'_> {
    /// `path` is a path in the merged (environment) document; the error
    /// names where it was written: the environment's override if it has
    /// one at that place (or closer to it), else the base document.
    fn err(&mut self, path: &str, msg: impl std::fmt::Display) {
        let (shown, line) = self.locate(path);
        let line = line.map(|l| format!("{l}:")).unwrap_or_default();
        let shown = if shown.is_empty() {
            "(document)".to_string()
        } else {
            shown
        };
        let env = match self.env {
            Some(e) => format!(" (environment {e})"),
            None => String::new(),
        };
        self.errors
            .push(format!("{}:{line} {shown}: {msg}{env}", self.file.origin));
    }

    fn locate(&self, path: &str) -> (String, Option<usize>) {
        let lines = &self.file.doc.lines;
        let mut p = Some(path);
        while let Some(at) = p {
            if let Some(env) = self.env {
                let in_env = child(&child("environments", env), at);
                let in_env = in_env.trim_end_matches('.');
                if let Some(l) = lines.get(in_env) {
                    let shown = format!("{in_env}{}", path.get(at.len()..).unwrap_or(""));
                    return (shown, Some(*l));
                }
            }
            if let Some(l) = lines.get(at) {
                return (path.to_string(), Some(*l));
            }
            p = yaml::parent(at);
        }
        (path.to_string(), None)
    }

    /// Deserializes `value` (found at `path`) into `T`; a schema mistake is
    /// reported at its exact path.
    fn parse<T: DeserializeOwned>(&mut self, path: &str, value: &Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let at = if inner == "." {
                    path.to_string()
                } else if inner.starts_with('[') {
                    format!("{path}{inner}")
                } else {
                    child(path, &inner)
                };
                self.err(&at, e.into_inner());
                None
            }
        }
    }

    fn check(&mut self, path: &str, r: Result<(), String>) {
        if let Err(e) = r {
            self.err(path, e);
        }
    }
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` deletes,
/// anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn opt_to_value<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

impl PolicyFile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{origin}: cannot read: {e}"))?;
        Self::parse(&text, &origin)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let doc = yaml::load(text, origin)?;
        if !doc.value.is_object() {
            return Err(format!(
                "{origin}:1: expected a mapping with `mesh`, `services`, `filters`, …"
            ));
        }
        Ok(Self {
            origin: origin.to_string(),
            doc,
        })
    }

    /// The environments the policy defines, sorted.
    pub fn environments(&self) -> Vec<String> {
        self.doc
            .value
            .get("environments")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Checks the base policy and every environment; all errors, one a line.
    pub fn validate(&self, lock: Option<&Lock>) -> Result<usize, Vec<String>> {
        let mut errors = Vec::new();
        let mut envs: Vec<Option<String>> = vec![None];
        envs.extend(self.environments().into_iter().map(Some));
        for env in &envs {
            if let Err(e) = self.resolve(env.as_deref(), lock) {
                for line in e {
                    // A mistake in the base shows in every environment:
                    // report it once.
                    let base = match env {
                        Some(name) => line
                            .strip_suffix(&format!(" (environment {name})"))
                            .unwrap_or(&line)
                            .to_string(),
                        None => line.clone(),
                    };
                    if !errors.contains(&line) && !errors.contains(&base) {
                        errors.push(line);
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(envs.len())
        } else {
            Err(errors)
        }
    }

    /// The policy for `env` (none: the base policy without overrides).
    pub fn resolve(&self, env: Option<&str>, lock: Option<&Lock>) -> Result<Resolved, Vec<String>> {
        let mut cx = Ctx {
            file: self,
            env,
            errors: Vec::new(),
        };
        let merged = self.merged(&mut cx);
        let resolved = merged.and_then(|m| resolve_doc(&mut cx, &m, lock));
        match resolved {
            Some(r) if cx.errors.is_empty() => Ok(r),
            _ => Err(cx.errors),
        }
    }

    fn merged(&self, cx: &mut Ctx<'_>) -> Option<Value> {
        let base = &self.doc.value;
        if let Some(m) = base.as_object() {
            for k in m.keys() {
                if !TOP_LEVEL.contains(&k.as_str()) {
                    cx.err(
                        k,
                        format!(
                            "unknown field `{k}`, expected one of {}",
                            TOP_LEVEL.join(", ")
                        ),
                    );
                }
            }
        }
        let mut merged = base.clone();
        if let Some(m) = merged.as_object_mut() {
            m.remove("environments");
        }
        let Some(env) = cx.env else {
            return Some(merged);
        };
        let envs = base.get("environments");
        let Some(patch) = envs.and_then(|e| e.get(env)) else {
            let known = self.environments();
            cx.errors.push(format!(
                "{}: no environment `{env}`; the policy defines: {}",
                self.origin,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
            return None;
        };
        let at = child("environments", env);
        match patch {
            Value::Null => {}
            Value::Object(p) => {
                for k in p.keys() {
                    if !OVERRIDABLE.contains(&k.as_str()) {
                        // Report at the override itself (not mapped back).
                        let line = self.doc.line_of(&child(&at, k));
                        cx.errors.push(format!(
                            "{}:{} {}: an environment overrides {}; not `{k}`",
                            self.origin,
                            line.map(|l| format!("{l}:")).unwrap_or_default(),
                            child(&at, k),
                            OVERRIDABLE.join(", ")
                        ));
                    }
                }
                merge_patch(&mut merged, patch);
            }
            _ => {
                let line = self.doc.line_of(&at).unwrap_or(0);
                cx.errors.push(format!(
                    "{}:{line}: {at}: expected a mapping of overrides (mesh, defaults, services, experiments, filters)",
                    self.origin
                ));
                return None;
            }
        }
        Some(merged)
    }
}

fn section<'v>(cx: &mut Ctx<'_>, doc: &'v Value, key: &str) -> Vec<(String, &'v Value)> {
    match doc.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Some(_) => {
            cx.err(key, "expected a mapping keyed by name");
            Vec::new()
        }
    }
}

fn check_traffic_fields(cx: &mut Ctx<'_>, at: &str, t: &Traffic) {
    let dur = |cx: &mut Ctx<'_>, path: String, d: &Option<String>| {
        if let Some(d) = d {
            cx.check(&path, rules::duration_ms(d).map(|_| ()));
        }
    };
    let int = |cx: &mut Ctx<'_>, path: String, n: &Option<i64>| {
        if let Some(n) = n {
            cx.check(&path, rules::non_negative(*n));
        }
    };
    if let Some(cp) = &t.connection_pool {
        let p = child(at, "connectionPool");
        if cp.tcp.is_none() && cp.http.is_none() {
            cx.err(&p, "a connectionPool needs `tcp` or `http`");
        }
        if let Some(tcp) = &cp.tcp {
            let p = child(&p, "tcp");
            int(cx, child(&p, "maxConnections"), &tcp.max_connections);
            dur(cx, child(&p, "connectTimeout"), &tcp.connect_timeout);
            dur(
                cx,
                child(&p, "maxConnectionDuration"),
                &tcp.max_connection_duration,
            );
            // idleTimeout: `0s` disables it (Istio allows it here).
            if let Some(d) = tcp.idle_timeout.as_deref().filter(|d| *d != "0s") {
                cx.check(&child(&p, "idleTimeout"), rules::duration_ms(d).map(|_| ()));
            }
        }
        if let Some(h) = &cp.http {
            let p = child(&p, "http");
            int(
                cx,
                child(&p, "http1MaxPendingRequests"),
                &h.http1_max_pending_requests,
            );
            int(cx, child(&p, "http2MaxRequests"), &h.http2_max_requests);
            int(
                cx,
                child(&p, "maxRequestsPerConnection"),
                &h.max_requests_per_connection,
            );
            int(cx, child(&p, "maxRetries"), &h.max_retries);
            int(
                cx,
                child(&p, "maxConcurrentStreams"),
                &h.max_concurrent_streams,
            );
            dur(cx, child(&p, "idleTimeout"), &h.idle_timeout);
            if let Some(u) = &h.h2_upgrade_policy {
                cx.check(
                    &child(&p, "h2UpgradePolicy"),
                    rules::one_of("h2UpgradePolicy", u, rules::H2_UPGRADE),
                );
            }
        }
    }
    if let Some(od) = &t.outlier_detection {
        let p = child(at, "outlierDetection");
        int(
            cx,
            child(&p, "consecutive5xxErrors"),
            &od.consecutive_5xx_errors,
        );
        int(
            cx,
            child(&p, "consecutiveGatewayErrors"),
            &od.consecutive_gateway_errors,
        );
        int(
            cx,
            child(&p, "consecutiveLocalOriginFailures"),
            &od.consecutive_local_origin_failures,
        );
        dur(cx, child(&p, "interval"), &od.interval);
        dur(cx, child(&p, "baseEjectionTime"), &od.base_ejection_time);
        for (name, v) in [
            ("maxEjectionPercent", od.max_ejection_percent),
            ("minHealthPercent", od.min_health_percent),
        ] {
            if let Some(v) = v {
                cx.check(&child(&p, name), rules::percent(v));
            }
        }
    }
    if let Some(r) = &t.retries {
        let p = child(at, "retries");
        int(cx, child(&p, "attempts"), &r.attempts);
        dur(cx, child(&p, "perTryTimeout"), &r.per_try_timeout);
        if let Some(on) = &r.retry_on {
            cx.check(&child(&p, "retryOn"), rules::retry_on(on));
        }
    }
    dur(cx, child(at, "timeout"), &t.timeout);
}

/// Rules that look at several fields: checked on the merged settings a
/// service really gets, reported at the service.
fn check_traffic_combined(cx: &mut Ctx<'_>, at: &str, t: &Traffic) {
    if let Some(h) = t.connection_pool.as_ref().and_then(|c| c.http.as_ref()) {
        if h.h2_upgrade_policy.as_deref() == Some("UPGRADE") && h.use_client_protocol == Some(true)
        {
            cx.err(
                &child(at, "connectionPool.http"),
                "h2UpgradePolicy UPGRADE and useClientProtocol cannot be combined",
            );
        }
    }
    if let Some(od) = &t.outlier_detection {
        if od.consecutive_local_origin_failures.unwrap_or(0) > 0
            && od.split_external_local_origin_errors != Some(true)
        {
            cx.err(
                &child(at, "outlierDetection"),
                "consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true",
            );
        }
    }
    if let Some(r) = &t.retries {
        if r.attempts == Some(0)
            && (r.per_try_timeout.is_some()
                || r.retry_on.is_some()
                || r.retry_remote_localities.is_some())
        {
            cx.err(
                &child(at, "retries"),
                "attempts: 0 disables retries; perTryTimeout, retryOn and retryRemoteLocalities cannot be set with it",
            );
        }
    }
}

/// Layers `over` onto `base` field by field (JSON merge of the set fields).
/// `retries: {attempts: 0}` turns retries off: nothing below it is kept.
fn layer(base: &Traffic, over: &Traffic) -> Traffic {
    let mut v = opt_to_value(base);
    merge_patch(&mut v, &opt_to_value(over));
    let mut t: Traffic = serde_json::from_value(v).unwrap_or_else(|_| base.clone());
    if over.retries.as_ref().and_then(|r| r.attempts) == Some(0) {
        t.retries = over.retries.clone();
    }
    t
}

fn resolve_doc(cx: &mut Ctx<'_>, doc: &Value, lock: Option<&Lock>) -> Option<Resolved> {
    let Some(mesh) = doc.get("mesh").filter(|m| !m.is_null()) else {
        cx.err(
            "",
            "missing `mesh` (its namespace and the OCI registry of the filters)",
        );
        return None;
    };
    let mesh: Mesh = cx.parse("mesh", mesh)?;
    cx.check("mesh.namespace", rules::dns1123_label(&mesh.namespace));
    for (i, ns) in mesh.namespaces.iter().enumerate() {
        cx.check(&index("mesh.namespaces", i), rules::dns1123_label(ns));
    }
    if mesh.registry.is_empty() || mesh.registry.contains("://") {
        cx.err(
            "mesh.registry",
            format!(
                "`{}`: expected host[:port]/path without a scheme (`oci://` is added)",
                mesh.registry
            ),
        );
    }
    let ns_ok = |ns: &str| ns == mesh.namespace || mesh.namespaces.iter().any(|n| n == ns);
    let allowed_ns = || {
        let mut all = vec![mesh.namespace.clone()];
        all.extend(mesh.namespaces.iter().cloned());
        all.join(", ")
    };

    let mut defaults = baseline();
    if let Some(d) = doc.get("defaults").filter(|d| !d.is_null()) {
        if let Some(t) = cx.parse::<Traffic>("defaults", d) {
            check_traffic_fields(cx, "defaults", &t);
            defaults = layer(&defaults, &t);
        }
    }

    // Services.
    let mut services: BTreeMap<String, (Service, ResolvedService)> = BTreeMap::new();
    for (name, v) in section(cx, doc, "services") {
        let at = child("services", &name);
        let Some(s) = cx.parse::<Service>(&at, v) else {
            continue;
        };
        cx.check(&at, rules::dns1123_label(&name));
        let namespace = s
            .namespace
            .clone()
            .unwrap_or_else(|| mesh.namespace.clone());
        if !ns_ok(&namespace) {
            cx.err(
                &child(&at, "namespace"),
                format!("`{namespace}` is not in mesh.namespaces ({})", allowed_ns()),
            );
        }
        let own = Traffic {
            connection_pool: s.connection_pool.clone(),
            outlier_detection: s.outlier_detection.clone(),
            retries: s.retries.clone(),
            timeout: s.timeout.clone(),
        };
        check_traffic_fields(cx, &at, &own);
        let traffic = layer(&defaults, &own);
        check_traffic_combined(cx, &at, &traffic);
        check_lb(cx, &at, &s);
        if let Some(host) = &s.host {
            let name = host.strip_prefix("*.").unwrap_or(host);
            if let Err(e) = rules::dns1123_subdomain(name) {
                cx.err(
                    &child(&at, "host"),
                    format!("{e}; a host is a service name or FQDN, optionally `*.`-prefixed"),
                );
            }
        }
        let mut subsets = BTreeMap::new();
        for (sub, def) in &s.subsets {
            let p = child(&child(&at, "subsets"), sub);
            cx.check(&p, rules::dns1123_label(sub));
            if def.labels.is_empty() {
                cx.err(&child(&p, "labels"), "a subset needs at least one label");
            }
            subsets.insert(sub.clone(), def.labels.clone());
        }
        let resolved = ResolvedService {
            name: name.clone(),
            namespace,
            host: s.host.clone().unwrap_or_else(|| name.clone()),
            role: s.role,
            hash: s.hash.clone(),
            algorithm: s.algorithm.clone(),
            subsets,
            header_routes: Vec::new(),
            default_route: s
                .split
                .iter()
                .map(|x| (x.subset.clone(), x.weight))
                .collect(),
            traffic,
        };
        services.insert(name, (s, resolved));
    }

    // Experiments: subsets and header routes on their service; the
    // ab-routing pluginConfig's `experiments`.
    let mut plugin_experiments = Vec::new();
    let mut experiments_failed = false;
    let mut experiment_names = Vec::new();
    let mut defaults_from_experiments: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, v) in section(cx, doc, "experiments") {
        let at = child("experiments", &name);
        let Some(e) = cx.parse::<Experiment>(&at, v) else {
            experiments_failed = true;
            continue;
        };
        let header = e
            .header
            .clone()
            .unwrap_or_else(|| meshguard_common::contract::AB_VARIANT_HEADER.to_string());
        if e.header.is_some() {
            cx.check(&child(&at, "header"), rules::match_header_name(&header));
        }
        let mut exp = json!({
            "name": name,
            "variants": e.variants.iter().map(|v| json!({"name": v.name, "weight": v.weight})).collect::<Vec<_>>(),
            "sticky_key": e.sticky_key,
        });
        if let Some(h) = &e.header {
            exp["header"] = json!(h);
        }
        if let Some(m) = &e.match_ {
            exp["match"] = m.clone();
        }
        plugin_experiments.push(exp);
        experiment_names.push(name.clone());
        let Some((_, svc)) = services.get_mut(&e.service) else {
            cx.err(
                &child(&at, "service"),
                format!("no service `{}` in `services`", e.service),
            );
            continue;
        };
        for (i, var) in e.variants.iter().enumerate() {
            let p = index(&child(&at, "variants"), i);
            if let Err(msg) = rules::dns1123_label(&var.name) {
                cx.err(
                    &child(&p, "name"),
                    format!("the variant is also the subset name: {msg}"),
                );
            }
            if var.labels.is_empty() {
                cx.err(
                    &child(&p, "labels"),
                    "a variant's subset needs at least one label",
                );
            }
            match svc.subsets.get(&var.name) {
                Some(l) if *l != var.labels => cx.err(
                    &child(&p, "labels"),
                    format!(
                        "service `{}` already has a subset `{}` with other labels",
                        e.service, var.name
                    ),
                ),
                _ => {
                    svc.subsets.insert(var.name.clone(), var.labels.clone());
                }
            }
            svc.header_routes.push(HeaderRoute {
                name: format!("{name}-{}", var.name),
                header: header.clone(),
                value: var.name.clone(),
                subset: var.name.clone(),
            });
        }
        let default = match &e.default {
            Some(d) => {
                if !e.variants.iter().any(|v| &v.name == d) {
                    cx.err(
                        &child(&at, "default"),
                        format!("`{d}` is not one of the experiment's variants"),
                    );
                }
                d.clone()
            }
            None => e
                .variants
                .first()
                .map(|v| v.name.clone())
                .unwrap_or_default(),
        };
        if e.default.is_some() && !svc.default_route.is_empty() {
            cx.err(
                &child(&at, "default"),
                format!(
                    "service `{}` has a `split` for unassigned requests already",
                    e.service
                ),
            );
        }
        defaults_from_experiments
            .entry(e.service.clone())
            .or_insert((name.clone(), default));
    }

    // Routes and subsets agree: every subset a route names exists.
    let mut out_services = Vec::new();
    for (name, (s, mut svc)) in services {
        let at = child("services", &name);
        if !s.split.is_empty() {
            let weights: Vec<i64> = s.split.iter().map(|x| x.weight).collect();
            cx.check(&child(&at, "split"), rules::weights_sum_100(&weights));
            for (i, x) in s.split.iter().enumerate() {
                if !svc.subsets.contains_key(&x.subset) {
                    cx.err(
                        &child(&index(&child(&at, "split"), i), "subset"),
                        format!(
                            "no subset `{}` in this service's subsets or experiments",
                            x.subset
                        ),
                    );
                }
            }
        } else if let Some((_, d)) = defaults_from_experiments.get(&name) {
            if !d.is_empty() {
                svc.default_route = vec![(d.clone(), 100)];
            }
        }
        out_services.push(svc);
    }

    // Filters.
    let mut out_filters = Vec::new();
    let mut experiments_used = false;
    let filter_entries = section(cx, doc, "filters");
    // The accesslog runs as its own module: authn and ratelimit hand it
    // the identity and the decision through filter state, which they only
    // write when asked.
    let logs_facts = filter_entries
        .iter()
        .any(|(n, _)| n == meshguard_accesslog::AccessLog::NAME);
    for (name, v) in filter_entries {
        let at = child("filters", &name);
        let f = match filters::find(&name) {
            Ok(f) => f,
            Err(e) => {
                cx.err(&at, e);
                continue;
            }
        };
        // Present, even if its entry has mistakes (reported already).
        experiments_used |= f.takes_experiments;
        let Some(fp) = cx.parse::<FilterPolicy>(&at, v) else {
            continue;
        };
        let namespace = fp
            .namespace
            .clone()
            .unwrap_or_else(|| mesh.namespace.clone());
        if !ns_ok(&namespace) {
            cx.err(
                &child(&at, "namespace"),
                format!("`{namespace}` is not in mesh.namespaces ({})", allowed_ns()),
            );
        }
        check_filter_wiring(cx, &at, &fp);
        let url = format!("oci://{}/{}:{}", mesh.registry, f.name, fp.version);
        if fp.version.is_empty()
            || !fp
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            || fp.version.len() > 128
        {
            cx.err(
                &child(&at, "version"),
                format!(
                    "`{}` is not an image tag ([A-Za-z0-9_.-], at most 128)",
                    fp.version
                ),
            );
        }
        let sha256 = pin(cx, &at, &name, &url, fp.digest.as_deref(), lock);
        // The pluginConfig, checked by the filter's own code.
        let mut config = fp.config.clone().unwrap_or_else(|| json!({}));
        let config_at = child(&at, "config");
        if !config.is_object() {
            cx.err(&config_at, "expected a mapping (the filter's pluginConfig)");
            continue;
        }
        let publish_flag = match f.name {
            n if n == meshguard_authn::Authn::NAME => Some("identity_filter_state"),
            n if n == meshguard_ratelimit::RateLimit::NAME => Some("decision_filter_state"),
            _ => None,
        };
        if let Some(flag) = publish_flag.filter(|_| logs_facts) {
            if config.get(flag).is_none() {
                config[flag] = Value::Bool(true);
            }
        }
        if f.takes_experiments {
            if config.get("experiments").is_some() {
                cx.err(
                    &child(&config_at, "experiments"),
                    "experiments come from the policy's top-level `experiments` (they also render the routes)",
                );
            } else {
                config["experiments"] = Value::Array(plugin_experiments.clone());
            }
        }
        match serde_json::to_vec(&config) {
            // An experiment that did not parse is reported already; the
            // filter would only complain that it is missing.
            Ok(_) if f.takes_experiments && experiments_failed => {}
            Ok(json) => {
                if let Err(e) = (f.validate)(&json) {
                    let path = config_path(&e.path, &config_at, &experiment_names);
                    cx.err(&path, format!("{} (checked by {})", e.message, f.name));
                }
            }
            Err(e) => cx.err(&config_at, e),
        }
        out_filters.push(ResolvedFilter {
            name: f.name.to_string(),
            config_key: f.config_key.to_string(),
            namespace,
            url,
            sha256,
            phase: fp.phase.clone().unwrap_or_else(|| f.phase.to_string()),
            priority: fp.priority.unwrap_or(f.priority),
            fail_strategy: fp
                .fail_strategy
                .clone()
                .unwrap_or_else(|| "FAIL_CLOSE".into()),
            image_pull_policy: fp
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| "IfNotPresent".into()),
            image_pull_secret: fp.image_pull_secret.clone(),
            selector: fp.selector.clone(),
            target_refs: fp.target_refs.clone(),
            match_: fp.match_.clone(),
            plugin_config: config,
        });
    }
    if !experiment_names.is_empty() && !experiments_used {
        cx.err(
            "experiments",
            "experiments need a filter that assigns variants: add `ab-routing` to `filters`",
        );
    }
    Some(Resolved {
        env: cx.env.map(str::to_string),
        origin: cx.file.origin.clone(),
        mesh,
        services: out_services,
        filters: out_filters,
    })
}

fn check_lb(cx: &mut Ctx<'_>, at: &str, s: &Service) {
    match s.role {
        Role::Base => {
            for (field, set) in [("hash", s.hash.is_some()), ("algorithm", s.algorithm.is_some())] {
                if set {
                    cx.err(
                        &child(at, field),
                        "a `base` service is balanced by LEAST_REQUEST; consistent hashing is for `role: business`",
                    );
                }
            }
        }
        Role::Business => match &s.hash {
            None => cx.err(
                &child(at, "hash"),
                "a `business` service needs `hash`: {header: NAME}, {cookie: {name: NAME}}, {sourceIp: true} or {queryParameter: NAME}",
            ),
            Some(HashOn::Header(h)) | Some(HashOn::QueryParameter(h)) if h.is_empty() => {
                cx.err(&child(at, "hash"), "the name to hash on cannot be empty")
            }
            Some(HashOn::Cookie(c)) => {
                if c.name.is_empty() {
                    cx.err(&child(at, "hash.cookie.name"), "a hash cookie needs a name");
                }
                if let Some(ttl) = c.ttl.as_deref().filter(|t| *t != "0s") {
                    cx.check(&child(at, "hash.cookie.ttl"), rules::duration_ms(ttl).map(|_| ()));
                }
            }
            Some(HashOn::SourceIp(false)) => cx.err(
                &child(at, "hash.sourceIp"),
                "`sourceIp: false` hashes on nothing; use `true` or another key",
            ),
            Some(_) => {}
        },
    }
    match &s.algorithm {
        Some(Algorithm::Maglev(m)) => match m.table_size {
            None => cx.err(
                &child(at, "algorithm.maglev.tableSize"),
                "maglev needs a tableSize (a prime, e.g. 65537)",
            ),
            Some(n) => cx.check(
                &child(at, "algorithm.maglev.tableSize"),
                rules::maglev_table_size(n),
            ),
        },
        Some(Algorithm::RingHash(r)) if r.minimum_ring_size == Some(0) => cx.err(
            &child(at, "algorithm.ringHash.minimumRingSize"),
            "must be positive",
        ),
        _ => {}
    }
}

fn check_filter_wiring(cx: &mut Ctx<'_>, at: &str, fp: &FilterPolicy) {
    if fp.selector.is_some() && fp.target_refs.is_some() {
        cx.err(at, "at most one of `selector` and `targetRefs` (Istio)");
    }
    if let Some(sel) = &fp.selector {
        for (k, v) in &sel.match_labels {
            cx.check(
                &child(&child(at, "selector.matchLabels"), k),
                rules::selector_label(k, v),
            );
        }
    }
    if let Some(refs) = &fp.target_refs {
        let p = child(at, "targetRefs");
        if refs.is_empty() || refs.len() > 16 {
            cx.err(&p, "expected 1 to 16 targetRefs");
        }
        for (i, r) in refs.iter().enumerate() {
            let p = index(&p, i);
            let group = r.group.as_deref().unwrap_or("");
            let ok = match r.kind.as_str() {
                "Gateway" | "GatewayClass" => group == "gateway.networking.k8s.io",
                "Service" => group.is_empty() || group == "core",
                "ServiceEntry" => group == "networking.istio.io",
                _ => false,
            };
            if !ok {
                cx.err(&p, format!(
                    "kind `{}` group `{group}`: expected Gateway or GatewayClass (gateway.networking.k8s.io), Service (group \"\") or ServiceEntry (networking.istio.io)",
                    r.kind
                ));
            }
            if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
                cx.err(
                    &child(&p, "namespace"),
                    "targetRefs name objects in the WasmPlugin's own namespace; leave namespace empty",
                );
            }
            if r.name.is_empty() {
                cx.err(&child(&p, "name"), "a targetRef needs a name");
            }
        }
    }
    if let Some(ms) = &fp.match_ {
        for (i, m) in ms.iter().enumerate() {
            let p = index(&child(at, "match"), i);
            if let Some(mode) = &m.mode {
                cx.check(
                    &child(&p, "mode"),
                    rules::one_of("match mode", mode, rules::MATCH_MODES),
                );
            }
            for (j, port) in m.ports.iter().enumerate() {
                if !(1..=65535).contains(&port.number) {
                    cx.err(
                        &index(&child(&p, "ports"), j),
                        format!("port {} outside 1-65535", port.number),
                    );
                }
            }
        }
    }
    if let Some(s) = &fp.fail_strategy {
        cx.check(
            &child(at, "failStrategy"),
            rules::one_of("failStrategy", s, rules::FAIL_STRATEGIES),
        );
    }
    if let Some(s) = &fp.image_pull_policy {
        cx.check(
            &child(at, "imagePullPolicy"),
            rules::one_of("imagePullPolicy", s, rules::PULL_POLICIES),
        );
    }
    if let Some(s) = &fp.phase {
        cx.check(
            &child(at, "phase"),
            rules::one_of("phase", s, rules::PHASES),
        );
    }
    if let Some(s) = &fp.image_pull_secret {
        if s.is_empty() || s.len() > 253 {
            cx.err(
                &child(at, "imagePullSecret"),
                "expected 1 to 253 characters",
            );
        }
    }
}

/// The WasmPlugin `sha256`: the policy's digest, or the lock file's for
/// the same image; both present must agree.
fn pin(
    cx: &mut Ctx<'_>,
    at: &str,
    name: &str,
    url: &str,
    digest: Option<&str>,
    lock: Option<&Lock>,
) -> String {
    let from_policy = digest.map(|d| {
        let hex = d.strip_prefix("sha256:").unwrap_or(d).to_string();
        cx.check(&child(at, "digest"), rules::sha256_hex(&hex));
        hex
    });
    let from_lock = lock.and_then(|l| l.get(name)).and_then(|e| {
        if e.reference != url {
            cx.err(
                at,
                format!(
                    "the lock file pins {} but the policy renders {url}: push this version or fix `version`/mesh.registry",
                    e.reference
                ),
            );
            return None;
        }
        Some(
            e.manifest_digest
                .strip_prefix("sha256:")
                .unwrap_or(&e.manifest_digest)
                .to_string(),
        )
    });
    match (from_policy, from_lock) {
        (Some(p), Some(l)) if p != l => {
            cx.err(
                &child(at, "digest"),
                format!("sha256:{p} differs from the lock file's sha256:{l}"),
            );
            p
        }
        (Some(p), _) => p,
        (None, Some(l)) => l,
        (None, None) => {
            cx.err(
                at,
                "no digest to pin: set `digest: sha256:…` (the manifest digest `meshguard push` prints) or pass --lock dist/images.lock.json",
            );
            String::new()
        }
    }
}

/// A filter's JSON path (`$.experiments[0].variants[1].weight`) as a place
/// in the policy: experiments live at `experiments.<name>`, the rest under
/// the filter's `config`.
fn config_path(json_path: &str, config_at: &str, experiments: &[String]) -> String {
    let rest = json_path.strip_prefix('$').unwrap_or(json_path);
    if let Some(after) = rest.strip_prefix(".experiments[") {
        if let Some((i, tail)) = after.split_once(']') {
            if let Some(name) = i.parse::<usize>().ok().and_then(|i| experiments.get(i)) {
                return format!("{}{tail}", child("experiments", name));
            }
        }
    }
    if rest == ".experiments" {
        return "experiments".to_string();
    }
    format!("{config_at}{rest}")
}

#[cfg(test)]
mod tests;
