//! What `meshguard render` produces for the example policy runs in real
//! Envoy: the EnvoyFilter's HTTP_FILTER patch value goes into the listener
//! as is (only the module path points at this checkout's dist/), it carries
//! the same pluginConfig as the WasmPlugin, and the VirtualService's routes,
//! translated to Envoy routes the way istiod would (header match -> the
//! subset's cluster), send each user to the subset of the variant the filter
//! assigned — the native router's answer for that user.

use meshguard::policy::render::{self, Resource, Wiring};
use meshguard::policy::PolicyFile;
use meshguard_ab_routing::Router;
use meshguard_e2e::*;
use serde_json::{json, Value};

fn find<'a>(res: &'a [Resource], kind: &str, name: &str) -> &'a Value {
    &res.iter()
        .find(|r| r.kind == kind && r.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
        .doc
}

/// The VirtualService's http routes as Envoy routes to the demo upstream;
/// each adds `x-demo-route: <subset>` so the upstream shows which route
/// (which subset, in a mesh) took the request.
fn envoy_routes(vs: &Value) -> Vec<Value> {
    vs["spec"]["http"]
        .as_array()
        .expect("http routes")
        .iter()
        .map(|r| {
            let mut m = json!({"prefix": "/"});
            if let Some(matches) = r["match"].as_array() {
                assert_eq!(matches.len(), 1, "one match per rendered route");
                let headers: Vec<Value> = matches[0]["headers"]
                    .as_object()
                    .expect("header match")
                    .iter()
                    .map(|(name, sm)| json!({"name": name, "string_match": {"exact": sm["exact"]}}))
                    .collect();
                m["headers"] = json!(headers);
            }
            let dest = &r["route"][0]["destination"];
            let subset = dest["subset"].as_str().unwrap_or("none");
            json!({
                "name": r["name"],
                "match": m,
                "route": {"cluster": "demo_upstream"},
                "request_headers_to_add": [{
                    "header": {"key": "x-demo-route", "value": subset},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }],
            })
        })
        .collect()
}

#[test]
fn rendered_filter_and_routes_work_in_envoy() {
    envoy_bin();
    let module = wasm_module("ab-routing");
    let policy = PolicyFile::load(&repo_root().join("istio/examples/shop.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    for env in ["production", "test"] {
        let resolved = policy
            .resolve(Some(env), None)
            .unwrap_or_else(|e| panic!("{}", e.join("\n")));
        let plugins = render::resources(&resolved, Wiring::WasmPlugin).unwrap();
        let filters = render::resources(&resolved, Wiring::EnvoyFilterLocal).unwrap();
        let plugin_config = &find(&plugins, "WasmPlugin", "ab-routing")["spec"]["pluginConfig"];
        let ef = find(&filters, "EnvoyFilter", "meshguard-ab-routing");
        let patch = ef["spec"]["configPatches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["applyTo"] == "HTTP_FILTER")
            .expect("an HTTP_FILTER patch");
        assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
        assert_eq!(
            patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
            "envoy.filters.http.router"
        );
        let mut block = patch["patch"]["value"].clone();
        let config = &mut block["typed_config"]["config"];
        // Both wirings hand the filter the same config.
        let configured: Value =
            serde_json::from_str(config["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(&configured, plugin_config, "{env}");
        let filename = &mut config["vm_config"]["code"]["local"]["filename"];
        assert_eq!(*filename, "/var/local/wasm/ab-routing.wasm");
        *filename = json!(module.to_string_lossy());

        let dir = scratch_dir(&format!("render-{env}"));
        let upstream = Upstream::start(&dir);
        let ports = EnvoyPorts {
            listen: free_port(),
            admin: free_port(),
        };
        let local = Local {
            listen: Addr::new("127.0.0.1", ports.listen),
            admin: Addr::new("127.0.0.1", ports.admin),
            upstream: Addr::new("127.0.0.1", upstream.port),
            filters: Vec::new(),
            grpc_clusters: Vec::new(),
            clusters: Vec::new(),
        };
        let mut cfg = local.to_value();
        let hcm = &mut cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let router = hcm["http_filters"][0].clone();
        assert_eq!(router["name"], "envoy.filters.http.router");
        hcm["http_filters"] = json!([block, router]);
        hcm["route_config"]["virtual_hosts"][0]["routes"] =
            json!(envoy_routes(find(&plugins, "VirtualService", "checkout")));
        let envoy = Envoy::start(&dir, &cfg.to_string(), ports, 1);

        let router = Router::from_json(plugin_config.to_string().as_bytes()).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..60 {
            let user = format!("render-user-{i}");
            // A forged variant never decides the route.
            let r = envoy.get(
                "/checkout/pay",
                &[("x-user-id", &user), ("x-ab-variant", "treatment")],
            );
            assert_eq!(r.status, 200, "{env}: {}", envoy.proc.log_tail());
            let req = vec![
                (":path".to_string(), "/checkout/pay".to_string()),
                ("x-user-id".to_string(), user.clone()),
            ];
            let want = router.decide(&req, || None).set[0].value.to_string();
            assert_eq!(
                r.upstream_header("x-ab-variant").as_deref(),
                Some(want.as_str()),
                "{env} {user}"
            );
            assert_eq!(
                r.upstream_header("x-demo-route").as_deref(),
                Some(want.as_str()),
                "{env} {user}: routed to another subset than its variant"
            );
            seen.insert(want);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["control", "treatment"],
            "{env}: both variants"
        );
        // Outside the experiment's paths: no variant, the default route
        // (the experiment's first variant).
        let r = envoy.get("/cart", &[("x-user-id", "someone")]);
        assert_eq!(r.upstream_header("x-ab-variant"), None);
        assert_eq!(
            r.upstream_header("x-demo-route").as_deref(),
            Some("control")
        );
    }
}
