use serde_json::json;

use super::render::{self, Wiring};
use super::*;

const DIGEST: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A small valid policy; each rule case below edits one line of it.
fn base() -> String {
    format!(
        "mesh:
  namespace: shop
  registry: r.example/mg
services:
  api:
    role: base
  cart:
    role: business
    hash: {{header: x-user-id}}
experiments:
  exp:
    service: cart
    sticky_key: [visitor_cookie]
    variants:
    - {{name: a, weight: 50, labels: {{version: v1}}}}
    - {{name: b, weight: 50, labels: {{version: v2}}}}
filters:
  ab-routing:
    version: '1'
    digest: sha256:{DIGEST}
    selector: {{matchLabels: {{app: web}}}}
environments:
  prod:
    services:
      api:
        connectionPool: {{http: {{http2MaxRequests: 100}}}}
"
    )
}

fn errors_of(text: &str) -> Vec<String> {
    let file = match PolicyFile::parse(text, "t.yaml") {
        Ok(f) => f,
        Err(e) => return vec![e],
    };
    match file.validate(None) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in the policy"))
}

#[test]
fn the_base_policy_is_valid() {
    assert_eq!(errors_of(&base()), Vec::<String>::new());
}

const API: &str = "  api:\n    role: base\n";

fn api_with(extra: &str) -> String {
    format!("{API}{extra}")
}

/// One case per rule: (rule, replace this, with this, the path the error
/// must name, a fragment of its message, text on the line it must name).
#[test]
fn every_rule_has_an_error_with_path_and_line() {
    let cases: Vec<(&str, String, String, &str, &str, &str)> = vec![
        ("duration whole ms", API.into(), api_with("    timeout: 1.5ms\n"), "services.api.timeout", "whole milliseconds", "timeout: 1.5ms"),
        ("duration at least 1ms", API.into(), api_with("    timeout: 0s\n"), "services.api.timeout", "at least 1ms", "timeout: 0s"),
        ("duration unit", API.into(), api_with("    timeout: 10\n"), "services.api.timeout", "invalid type", "timeout: 10"),
        ("maglev prime", "hash: {header: x-user-id}".into(), "hash: {header: x-user-id}\n    algorithm: {maglev: {tableSize: 1000}}".into(), "services.cart.algorithm.maglev.tableSize", "prime", "tableSize: 1000"),
        ("maglev needs a table size", "hash: {header: x-user-id}".into(), "hash: {header: x-user-id}\n    algorithm: {maglev: {}}".into(), "services.cart.algorithm.maglev.tableSize", "needs a tableSize", "maglev: {}"),
        ("ring size positive", "hash: {header: x-user-id}".into(), "hash: {header: x-user-id}\n    algorithm: {ringHash: {minimumRingSize: 0}}".into(), "services.cart.algorithm.ringHash.minimumRingSize", "positive", "minimumRingSize: 0"),
        ("split weights sum to 100", API.into(), api_with("    subsets: {v1: {labels: {v: '1'}}, v2: {labels: {v: '2'}}}\n    split:\n    - {subset: v1, weight: 60}\n    - {subset: v2, weight: 30}\n"), "services.api.split", "sum to 90; expected 100", "split:"),
        ("split names an existing subset", API.into(), api_with("    split:\n    - {subset: v9, weight: 100}\n"), "services.api.split[0].subset", "no subset `v9`", "subset: v9"),
        ("retryOn tokens", API.into(), api_with("    retries: {retryOn: '5xx,bogus'}\n"), "services.api.retries.retryOn", "`bogus` is not a retryOn policy", "retryOn"),
        ("attempts 0 excludes the rest", API.into(), api_with("    retries: {attempts: 0, perTryTimeout: 1s}\n"), "services.api.retries", "attempts: 0 disables retries", "retries:"),
        ("negative attempts", API.into(), api_with("    retries: {attempts: -1}\n"), "services.api.retries.attempts", "negative", "attempts: -1"),
        ("variant subset DNS-1123", "{name: b, weight".into(), "{name: B_x, weight".into(), "experiments.exp.variants[1].name", "not a DNS-1123 label", "B_x"),
        ("service subset DNS-1123", API.into(), api_with("    subsets: {V1: {labels: {v: '1'}}}\n"), "services.api.subsets.V1", "not a DNS-1123 label", "subsets:"),
        ("subset needs labels", API.into(), api_with("    subsets: {v1: {labels: {}}}\n"), "services.api.subsets.v1.labels", "at least one label", "subsets:"),
        ("service name DNS-1123", "  api:\n".into(), "  Api_1:\n".into(), "services.Api_1", "not a DNS-1123 label", "Api_1:"),
        ("selector or targetRefs", "    selector: {matchLabels: {app: web}}\n".into(), "    selector: {matchLabels: {app: web}}\n    targetRefs: [{kind: Service, name: web}]\n".into(), "filters.ab-routing", "at most one of `selector` and `targetRefs`", "  ab-routing:"),
        ("selector wildcard", "{app: web}".into(), "{app: 'web*'}".into(), "filters.ab-routing.selector.matchLabels.app", "wildcards", "matchLabels"),
        ("targetRef kind", "    selector: {matchLabels: {app: web}}\n".into(), "    targetRefs:\n    - {kind: Deployment, name: web}\n".into(), "filters.ab-routing.targetRefs[0]", "kind `Deployment`", "kind: Deployment"),
        ("targetRef namespace empty", "    selector: {matchLabels: {app: web}}\n".into(), "    targetRefs:\n    - {kind: Service, name: web, namespace: other}\n".into(), "filters.ab-routing.targetRefs[0].namespace", "leave namespace empty", "namespace: other"),
        ("sha256 format", format!("sha256:{DIGEST}"), "sha256:ABC".into(), "filters.ab-routing.digest", "not a sha256 digest", "digest:"),
        ("phase names", "    version: '1'\n".into(), "    version: '1'\n    phase: AUTHORIZATION\n".into(), "filters.ab-routing.phase", "not a phase: expected one of UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS", "phase:"),
        ("failStrategy names", "    version: '1'\n".into(), "    version: '1'\n    failStrategy: OPEN\n".into(), "filters.ab-routing.failStrategy", "not a failStrategy", "failStrategy:"),
        ("imagePullPolicy names", "    version: '1'\n".into(), "    version: '1'\n    imagePullPolicy: Never\n".into(), "filters.ab-routing.imagePullPolicy", "not a imagePullPolicy", "imagePullPolicy:"),
        ("imagePullSecret length", "    version: '1'\n".into(), "    version: '1'\n    imagePullSecret: ''\n".into(), "filters.ab-routing.imagePullSecret", "1 to 253", "imagePullSecret:"),
        ("match mode names", "    version: '1'\n".into(), "    version: '1'\n    match: [{mode: OUTBOUND}]\n".into(), "filters.ab-routing.match[0].mode", "not a match mode", "match:"),
        ("match port range", "    version: '1'\n".into(), "    version: '1'\n    match: [{ports: [{number: 70000}]}]\n".into(), "filters.ab-routing.match[0].ports[0]", "outside 1-65535", "match:"),
        ("image tag", "version: '1'".into(), "version: '1 2'".into(), "filters.ab-routing.version", "not an image tag", "version: '1 2'"),
        ("percentages", API.into(), api_with("    outlierDetection: {maxEjectionPercent: 150}\n"), "services.api.outlierDetection.maxEjectionPercent", "not a percentage", "outlierDetection"),
        ("pool integers non-negative", API.into(), api_with("    connectionPool: {http: {maxRetries: -1}}\n"), "services.api.connectionPool.http.maxRetries", "negative", "connectionPool"),
        ("pool needs tcp or http", API.into(), api_with("    connectionPool: {}\n"), "services.api.connectionPool", "needs `tcp` or `http`", "connectionPool"),
        ("h2UpgradePolicy names", API.into(), api_with("    connectionPool: {http: {h2UpgradePolicy: ALWAYS}}\n"), "services.api.connectionPool.http.h2UpgradePolicy", "not a h2UpgradePolicy", "connectionPool"),
        ("UPGRADE excludes useClientProtocol", API.into(), api_with("    connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}\n"), "services.api.connectionPool.http", "cannot be combined", "connectionPool"),
        ("local origin failures need the split", API.into(), api_with("    outlierDetection: {consecutiveLocalOriginFailures: 2}\n"), "services.api.outlierDetection", "splitExternalLocalOriginErrors", "outlierDetection"),
        ("hash cookie needs a name", "hash: {header: x-user-id}".into(), "hash: {cookie: {ttl: 10s}}".into(), "services.cart.hash.cookie.name", "needs a name", "hash:"),
        ("cookie ttl duration", "hash: {header: x-user-id}".into(), "hash: {cookie: {name: s, ttl: 1us}}".into(), "services.cart.hash.cookie.ttl", "whole milliseconds", "hash:"),
        ("sourceIp true", "hash: {header: x-user-id}".into(), "hash: {sourceIp: false}".into(), "services.cart.hash.sourceIp", "hashes on nothing", "hash:"),
        ("base services do not hash", API.into(), api_with("    hash: {header: x}\n"), "services.api.hash", "LEAST_REQUEST", "hash: {header: x}"),
        ("business services hash", "    hash: {header: x-user-id}\n".into(), "".into(), "services.cart.hash", "needs `hash`", "  cart:"),
        ("roles", "role: base".into(), "role: core".into(), "services.api.role", "unknown variant `core`", "role: core"),
        ("unknown fields", API.into(), api_with("    timout: 1s\n"), "services.api.timout", "unknown field `timout`", "timout"),
        ("hosts are DNS names", API.into(), api_with("    host: api.shop.svc:80\n"), "services.api.host", "not a valid Kubernetes name", "host: api"),
        ("namespaces declared", API.into(), api_with("    namespace: other\n"), "services.api.namespace", "not in mesh.namespaces", "namespace: other"),
        ("variant header lowercase", "    service: cart\n".into(), "    service: cart\n    header: X-Variant\n".into(), "experiments.exp.header", "must be lowercase", "header: X-Variant"),
        ("experiment service exists", "service: cart".into(), "service: carts".into(), "experiments.exp.service", "no service `carts`", "service: carts"),
        ("experiment default is a variant", "    service: cart\n".into(), "    service: cart\n    default: c\n".into(), "experiments.exp.default", "not one of the experiment's variants", "default: c"),
        ("variant subsets agree with the service's", "    hash: {header: x-user-id}\n".into(), "    hash: {header: x-user-id}\n    subsets: {a: {labels: {version: v9}}}\n".into(), "experiments.exp.variants[0].labels", "already has a subset `a` with other labels", "{name: a,"),
        ("unknown filters are refused", "  ab-routing:\n".into(), "  waf: {version: '1'}\n  ab-routing:\n".into(), "filters.waf", "unknown filter `waf`; meshguard ships: authn, ab-routing, ratelimit, accesslog", "waf:"),
        ("filter config by the filter's own code", "sticky_key: [visitor_cookie]".into(), "sticky_key: []".into(), "experiments.exp.sticky_key", "(checked by ab-routing)", "sticky_key: []"),
        ("filter config fields by the filter's own code", "    version: '1'\n".into(), "    version: '1'\n    config: {visitor_cookie: {max_age_seconds: 0}}\n".into(), "filters.ab-routing.config.visitor_cookie.max_age_seconds", "checked by ab-routing", "config:"),
        ("experiments come from the policy", "    version: '1'\n".into(), "    version: '1'\n    config: {experiments: []}\n".into(), "filters.ab-routing.config.experiments", "top-level `experiments`", "config:"),
        ("a digest to pin", format!("    digest: sha256:{DIGEST}\n"), "".into(), "filters.ab-routing", "no digest to pin", "  ab-routing:"),
        ("registry without scheme", "registry: r.example/mg".into(), "registry: oci://r.example/mg".into(), "mesh.registry", "without a scheme", "registry:"),
        ("environment overrides name their line", "http2MaxRequests: 100".into(), "http2MaxRequests: -5".into(), "environments.prod.services.api.connectionPool.http.http2MaxRequests", "negative (environment prod)", "http2MaxRequests: -5"),
        ("environment overrides known sections", "  prod:\n".into(), "  prod:\n    mesh2: {}\n".into(), "environments.prod.mesh2", "an environment overrides", "mesh2"),
        ("top-level fields", "services:\n".into(), "servises: {}\nservices:\n".into(), "servises", "unknown field `servises`", "servises"),
    ];
    for (rule, from, to, path, fragment, line_text) in cases {
        let text = base();
        assert!(
            text.contains(&from),
            "{rule}: `{from}` not in the base policy"
        );
        let text = text.replacen(&from, &to, 1);
        let errors = errors_of(&text);
        let line = line_of(&text, line_text);
        let prefix = format!("t.yaml:{line}: {path}: ");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&prefix) && e.contains(fragment)),
            "rule `{rule}`: expected `{prefix}…{fragment}…`, got:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn experiments_need_the_ab_routing_filter() {
    let text = base();
    let cut = text.find("filters:").unwrap();
    let env = text.find("environments:").unwrap();
    let text = format!("{}{}", &text[..cut], &text[env..]);
    let errors = errors_of(&text);
    let line = line_of(&text, "experiments:");
    assert!(
        errors.iter().any(|e| e.starts_with(&format!(
            "t.yaml:{line}: experiments: experiments need a filter"
        ))),
        "{errors:?}"
    );
}

#[test]
fn missing_mesh_and_syntax_errors() {
    let errors = errors_of("services: {}\n");
    assert!(
        errors[0].starts_with("t.yaml:1: (document): missing `mesh`"),
        "{errors:?}"
    );
    let errors = errors_of("mesh: {namespace: shop\n");
    assert!(errors[0].starts_with("t.yaml:"), "{errors:?}");
    assert!(errors[0].contains("not valid YAML"), "{errors:?}");
    let errors = errors_of("- a\n");
    assert!(errors[0].contains("expected a mapping"), "{errors:?}");
}

#[test]
fn a_base_mistake_is_reported_once_not_per_environment() {
    let text = base().replace("role: base", "role: base\n    timeout: 0s");
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
}

fn resolve(text: &str, env: Option<&str>) -> Resolved {
    PolicyFile::parse(text, "t.yaml")
        .unwrap()
        .resolve(env, None)
        .unwrap_or_else(|e| panic!("{}", e.join("\n")))
}

fn doc<'a>(res: &'a [render::Resource], kind: &str, name: &str) -> &'a Value {
    &res.iter()
        .find(|r| r.kind == kind && r.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .doc
}

/// A service with the default profile gets exactly the governance baseline.
#[test]
fn default_profile_is_exactly_the_baseline() {
    let r = resolve(&base(), None);
    let res = render::resources(&r, Wiring::WasmPlugin).unwrap();
    let dr = doc(&res, "DestinationRule", "api");
    assert_eq!(
        dr["spec"]["trafficPolicy"],
        json!({
            "loadBalancer": {"simple": "LEAST_REQUEST"},
            "connectionPool": {
                "tcp": {"connectTimeout": "500ms"},
                "http": {"http2MaxRequests": 10, "maxRequestsPerConnection": 2, "maxRetries": 3},
            },
            "outlierDetection": {"consecutive5xxErrors": 3, "interval": "10s", "baseEjectionTime": "30s"},
        })
    );
    let vs = doc(&res, "VirtualService", "api");
    assert_eq!(
        vs["spec"]["http"],
        json!([{"name": "default", "route": [{"destination": {"host": "api"}}],
                "retries": {"attempts": 3, "perTryTimeout": "2s"}}])
    );
    // business: consistent hash on the header.
    let dr = doc(&res, "DestinationRule", "cart");
    assert_eq!(
        dr["spec"]["trafficPolicy"]["loadBalancer"],
        json!({"consistentHash": {"httpHeaderName": "x-user-id"}})
    );
}

#[test]
fn overrides_layer_field_by_field_per_environment() {
    let text = base().replace(
        "role: base\n",
        "role: base\n    outlierDetection: {interval: 5s}\n    retries: {attempts: 0}\n",
    );
    let r = resolve(&text, Some("prod"));
    let res = render::resources(&r, Wiring::WasmPlugin).unwrap();
    let dr = doc(&res, "DestinationRule", "api");
    let tp = &dr["spec"]["trafficPolicy"];
    assert_eq!(tp["connectionPool"]["http"]["http2MaxRequests"], 100);
    assert_eq!(tp["connectionPool"]["http"]["maxRequestsPerConnection"], 2);
    assert_eq!(tp["outlierDetection"]["interval"], "5s");
    assert_eq!(tp["outlierDetection"]["consecutive5xxErrors"], 3);
    let vs = doc(&res, "VirtualService", "api");
    assert_eq!(vs["spec"]["http"][0]["retries"], json!({"attempts": 0}));
    assert_eq!(dr["metadata"]["labels"]["meshguard.io/environment"], "prod");
    // Without --env: no override.
    let r = resolve(&text, None);
    let res = render::resources(&r, Wiring::WasmPlugin).unwrap();
    let dr = doc(&res, "DestinationRule", "api");
    assert_eq!(
        dr["spec"]["trafficPolicy"]["connectionPool"]["http"]["http2MaxRequests"],
        10
    );
    let err = PolicyFile::parse(&text, "t.yaml")
        .unwrap()
        .resolve(Some("qa"), None)
        .unwrap_err();
    assert_eq!(
        err,
        ["t.yaml: no environment `qa`; the policy defines: prod"]
    );
}

/// One experiment definition: the filter's config, the subsets and the
/// routes agree, and every routed subset exists on the same host.
#[test]
fn experiments_render_config_subsets_and_routes_that_agree() {
    let r = resolve(&base(), None);
    let res = render::resources(&r, Wiring::WasmPlugin).unwrap();
    let wp = doc(&res, "WasmPlugin", "ab-routing");
    assert_eq!(
        wp["spec"]["pluginConfig"]["experiments"],
        json!([{"name": "exp", "sticky_key": ["visitor_cookie"],
                "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]}])
    );
    let dr = doc(&res, "DestinationRule", "cart");
    assert_eq!(
        dr["spec"]["subsets"],
        json!([{"name": "a", "labels": {"version": "v1"}}, {"name": "b", "labels": {"version": "v2"}}])
    );
    let vs = doc(&res, "VirtualService", "cart");
    let http = vs["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), 3);
    assert_eq!(
        http[1]["match"],
        json!([{"headers": {"x-ab-variant": {"exact": "b"}}}])
    );
    assert_eq!(
        http[1]["route"],
        json!([{"destination": {"host": "cart", "subset": "b"}}])
    );
    // Unassigned requests go to the first variant.
    assert_eq!(
        http[2]["route"],
        json!([{"destination": {"host": "cart", "subset": "a"}}])
    );
    assert_routes_have_subsets(&res);
}

/// Every route's subset exists in the DestinationRule of the same host.
pub fn assert_routes_have_subsets(res: &[render::Resource]) {
    for vs in res.iter().filter(|r| r.kind == "VirtualService") {
        for route in vs.doc["spec"]["http"].as_array().unwrap() {
            for dest in route["route"].as_array().unwrap() {
                let d = &dest["destination"];
                let Some(subset) = d["subset"].as_str() else {
                    continue;
                };
                let dr = res
                    .iter()
                    .find(|r| {
                        r.kind == "DestinationRule"
                            && r.namespace == vs.namespace
                            && r.doc["spec"]["host"] == d["host"]
                    })
                    .unwrap_or_else(|| panic!("no DestinationRule for {}", d["host"]));
                assert!(
                    dr.doc["spec"]["subsets"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|x| x["name"] == subset)),
                    "{}/{}: subset {subset} not in its DestinationRule",
                    vs.namespace,
                    vs.name
                );
            }
        }
    }
}

#[test]
fn wasmplugin_is_pinned_and_placed() {
    let r = resolve(&base(), None);
    let res = render::resources(&r, Wiring::WasmPlugin).unwrap();
    let spec = &doc(&res, "WasmPlugin", "ab-routing")["spec"];
    assert_eq!(spec["url"], "oci://r.example/mg/ab-routing:1");
    assert_eq!(spec["sha256"], DIGEST);
    assert_eq!(spec["phase"], "AUTHZ");
    assert_eq!(spec["priority"], 10);
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(spec["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["pluginName"], "ab_routing");
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "web"}}));
}

#[test]
fn digests_come_from_the_lock_file() {
    let text = base().replace(&format!("    digest: sha256:{DIGEST}\n"), "");
    let file = PolicyFile::parse(&text, "t.yaml").unwrap();
    let lock: Lock = serde_json::from_value(json!({"ab-routing": {
        "reference": "oci://r.example/mg/ab-routing:1", "format": "compat",
        "manifest_digest": format!("sha256:{}", "b".repeat(64)), "module_sha256": "c"}}))
    .unwrap();
    let r = file.resolve(None, Some(&lock)).unwrap();
    assert_eq!(r.filters[0].sha256, "b".repeat(64));
    // Another version in the lock: refused, not silently pinned.
    let other: Lock = serde_json::from_value(json!({"ab-routing": {
        "reference": "oci://r.example/mg/ab-routing:2",
        "manifest_digest": format!("sha256:{}", "b".repeat(64))}}))
    .unwrap();
    let err = file.resolve(None, Some(&other)).unwrap_err();
    assert!(
        err[0].contains("the lock file pins oci://r.example/mg/ab-routing:2"),
        "{err:?}"
    );
    // Policy digest and lock disagree: refused.
    let file = PolicyFile::parse(&base(), "t.yaml").unwrap();
    let err = file.resolve(None, Some(&lock)).unwrap_err();
    assert!(err[0].contains("differs from the lock file"), "{err:?}");
}

#[test]
fn envoyfilter_patches_are_the_envoy_blocks() {
    let r = resolve(&base(), None);
    let res = render::resources(&r, Wiring::EnvoyFilterLocal).unwrap();
    assert!(res.iter().all(|x| x.kind != "WasmPlugin"));
    let ef = doc(&res, "EnvoyFilter", "meshguard-ab-routing");
    assert_eq!(
        ef["spec"]["workloadSelector"],
        json!({"labels": {"app": "web"}})
    );
    let patch = &ef["spec"]["configPatches"][0];
    assert_eq!(patch["applyTo"], "HTTP_FILTER");
    assert_eq!(patch["match"]["context"], "ANY");
    assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
    // The value is exactly what the local Envoy renderer writes for the
    // same module and config.
    let f = &r.filters[0];
    let w =
        crate::envoy::WasmFilter::shipped("ab-routing", "/var/local/wasm", f.plugin_config.clone())
            .unwrap();
    assert_eq!(patch["patch"]["value"], w.block());

    let res = render::resources(&r, Wiring::EnvoyFilterEcds).unwrap();
    let ef = doc(&res, "EnvoyFilter", "meshguard-ab-routing");
    let patches = ef["spec"]["configPatches"].as_array().unwrap();
    assert_eq!(patches[0]["applyTo"], "EXTENSION_CONFIG");
    let code = &patches[0]["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"];
    assert_eq!(
        code["remote"]["http_uri"]["uri"],
        "oci://r.example/mg/ab-routing:1"
    );
    assert_eq!(code["remote"]["sha256"], DIGEST);
    assert_eq!(
        patches[1]["patch"]["value"]["name"],
        patches[0]["patch"]["value"]["name"]
    );
    assert!(patches[1]["patch"]["value"]["config_discovery"].is_object());
}

#[test]
fn envoyfilter_contexts_follow_the_match_mode_and_fail_strategy() {
    let text = base().replace(
        "    version: '1'\n",
        "    version: '1'\n    match: [{mode: CLIENT}]\n    failStrategy: FAIL_OPEN\n",
    );
    let r = resolve(&text, None);
    let res = render::resources(&r, Wiring::EnvoyFilterLocal).unwrap();
    let ef = doc(&res, "EnvoyFilter", "meshguard-ab-routing");
    let contexts: Vec<&str> = ef["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["match"]["context"].as_str().unwrap())
        .collect();
    assert_eq!(contexts, ["SIDECAR_OUTBOUND", "GATEWAY"]);
    assert_eq!(
        ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
            ["failure_policy"],
        "FAIL_OPEN"
    );
    let text = base().replace(
        "    selector: {matchLabels: {app: web}}\n",
        "    targetRefs: [{kind: Service, name: web}]\n",
    );
    let r = resolve(&text, None);
    let err = render::resources(&r, Wiring::EnvoyFilterLocal).unwrap_err();
    assert!(err.contains("targetRefs"), "{err}");
}

#[test]
fn output_is_stable_and_ordered() {
    let r = resolve(&base(), Some("prod"));
    let a = render::resources(&r, Wiring::WasmPlugin).unwrap();
    let b = render::resources(&resolve(&base(), Some("prod")), Wiring::WasmPlugin).unwrap();
    assert_eq!(a, b);
    let kinds: Vec<(&str, &str)> = a.iter().map(|r| (r.kind, r.name.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("DestinationRule", "api"),
            ("DestinationRule", "cart"),
            ("VirtualService", "api"),
            ("VirtualService", "cart"),
            ("WasmPlugin", "ab-routing"),
        ]
    );
    let text = render::to_stream(&r, &a).unwrap();
    assert!(text.starts_with("# Generated by `meshguard render t.yaml --env prod`"));
    assert_eq!(text.matches("\n---\n").count(), 5);
}

/// Broken input of every shape gives errors that name the file, never a
/// panic: the example policy cut at every few bytes and with each line
/// removed, checked for every environment.
#[test]
fn no_input_panics_and_every_error_names_the_file() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop.yaml"),
    )
    .unwrap();
    let mut inputs: Vec<String> = (0..text.len())
        .step_by(5)
        .filter(|i| text.is_char_boundary(*i))
        .map(|i| text[..i].to_string())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    for skip in 0..lines.len() {
        let mut kept = lines.clone();
        kept.remove(skip);
        inputs.push(kept.join("\n"));
    }
    let mut failing = 0;
    for input in &inputs {
        for e in errors_of(input) {
            failing += 1;
            assert!(e.starts_with("t.yaml"), "{e}\n--- input:\n{input}");
        }
    }
    assert!(failing > inputs.len() / 2, "most cut inputs are invalid");
}

/// authn writes the identity to filter state only when asked (a host call
/// per request); a policy that also deploys the accesslog (another module,
/// which reads it there) asks for it, unless the user said otherwise.
#[test]
fn authn_and_ratelimit_hand_their_facts_to_the_accesslog_only_when_it_deploys() {
    let authn = |extra: &str| {
        format!(
            "  authn:
    version: '1'
    digest: sha256:{DIGEST}
    config:
      providers:
      - name: idp
        algorithms: [RS256]
        jwks: {{remote: {{cluster: idp, path: /jwks}}}}
      rules:
      - requires: {{any: [idp]}}
{extra}"
        )
    };
    let accesslog = format!("  accesslog:\n    version: '1'\n    digest: sha256:{DIGEST}\n");
    let ratelimit = format!(
        "  ratelimit:\n    version: '1'\n    digest: sha256:{DIGEST}\n    config:\n      rules:\n      - {{name: r, limit: {{requests: 1, per: second}}}}\n"
    );
    let flag_of = |text: &str, plugin: &str, key: &str| {
        let r = resolve(text, None);
        let res = render::resources(&r, Wiring::WasmPlugin).unwrap();
        doc(&res, "WasmPlugin", plugin)["spec"]["pluginConfig"][key].clone()
    };
    let flag = |text: String| flag_of(&text, "authn", "identity_filter_state");
    let with = |filters: String| base().replace("filters:\n", &format!("filters:\n{filters}"));
    assert_eq!(flag(with(authn(""))), Value::Null);
    assert_eq!(flag(with(authn("") + &accesslog)), json!(true));
    assert_eq!(
        flag(with(
            authn("      identity_filter_state: false\n") + &accesslog
        )),
        json!(false)
    );
    // ratelimit's decision the same way.
    let both = with(ratelimit.clone() + &accesslog);
    assert_eq!(
        flag_of(&both, "ratelimit", "decision_filter_state"),
        json!(true)
    );
    let alone = with(ratelimit.clone());
    assert_eq!(
        flag_of(&alone, "ratelimit", "decision_filter_state"),
        Value::Null
    );
    // The accesslog's facts_from_filter_state is left to the user: modules
    // deployed outside this policy (ab-routing always publishes) would
    // otherwise go unlogged.
    let facts = |text: String| flag_of(&text, "accesslog", "facts_from_filter_state");
    assert_eq!(
        facts(with(authn("") + &ratelimit + &accesslog)),
        Value::Null
    );
    let own = format!("{accesslog}    config:\n      facts_from_filter_state: [variants]\n");
    assert_eq!(facts(with(own)), json!(["variants"]));
}
