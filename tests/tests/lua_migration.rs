//! The Lua auth EnvoyFilter (istio/examples/lua-auth/envoyfilter.yaml) and
//! its replacement, authn in ext-auth mode (wasmplugin.yaml next to it),
//! side by side in real Envoy against the same real auth service
//! (demo/auth.py): the same requests to both, the same allow/deny decisions
//! and identity headers at the upstream, except where the Lua script is
//! wrong. Those differences are listed here (and in the README) and checked
//! to be exactly what they are.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use meshguard_e2e::*;

const CLUSTER: &str = "outbound|8082||auth.auth-system.svc.cluster.local";

fn example(name: &str) -> serde_yaml::Value {
    let path = repo_root().join("istio/examples/lua-auth").join(name);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The Lua source, exactly as the EnvoyFilter carries it.
fn lua_code() -> String {
    let ef = example("envoyfilter.yaml");
    ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["inlineCode"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The WasmPlugin's pluginConfig, as JSON.
fn plugin_config() -> String {
    let wp = example("wasmplugin.yaml");
    let v: serde_json::Value = serde_json::to_value(&wp["spec"]["pluginConfig"]).unwrap();
    v.to_string()
}

fn lua_envoy_config(ports: &EnvoyPorts, upstream: u16, auth: u16) -> String {
    let cluster = |name: &str, port: u16| {
        serde_json::json!({
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}
        })
    };
    serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}},
        "static_resources": {
            "listeners": [{
                "name": "lua",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.listen}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "lua",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}}]}]},
                        "http_filters": [
                            {"name": "envoy.filters.http.lua",
                             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                                              "default_source_code": {"inline_string": lua_code()}}},
                            {"name": "envoy.filters.http.router",
                             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]
                    }
                }]}]
            }],
            "clusters": [cluster("upstream", upstream), cluster(CLUSTER, auth)]
        }
    })
    .to_string()
}

/// What one side did with a request.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    status: u16,
    /// (x-user-id, x-tenant) at the upstream, when it got there.
    identity: Option<(Option<String>, Option<String>)>,
    www_authenticate: Option<String>,
    leaked_internal: bool,
    body: String,
    elapsed: Duration,
}

fn send(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Outcome {
    let t = Instant::now();
    let r = envoy.get(path, headers);
    let elapsed = t.elapsed();
    let echo = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .filter(|v| v.get("headers").is_some());
    Outcome {
        status: r.status,
        identity: echo.map(|_| {
            (
                r.upstream_header("x-user-id"),
                r.upstream_header("x-tenant"),
            )
        }),
        www_authenticate: r.header("www-authenticate").map(str::to_string),
        leaked_internal: r.header("x-internal-debug").is_some(),
        body: r.body_text(),
        elapsed,
    }
}

fn id(user: &str) -> Option<(Option<String>, Option<String>)> {
    Some((Some(user.into()), Some("acme".into())))
}

#[test]
fn lua_envoyfilter_and_authn_ext_auth_decide_alike_except_where_lua_is_wrong() {
    envoy_bin();
    let dir = scratch_dir("lua-migration");
    std::fs::create_dir_all(dir.join("lua")).unwrap();
    std::fs::create_dir_all(dir.join("authn")).unwrap();
    let upstream = Upstream::start(&dir);
    let auth = Upstream::start_script(&dir, "demo/auth.py", &["--slow-seconds", "2"]);
    let lua_ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let lua = Envoy::start(
        &dir.join("lua"),
        &lua_envoy_config(&lua_ports, upstream.port, auth.port),
        lua_ports,
        1,
    );
    let wasm_ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let wasm = Envoy::start(
        &dir.join("authn"),
        &module_envoy_config(
            &wasm_ports,
            upstream.port,
            &wasm_module("authn"),
            "authn",
            &plugin_config(),
            &[(CLUSTER, auth.port)],
        ),
        wasm_ports,
        1,
    );

    // Same decision and same identity at the upstream.
    type Request<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let alike: &[Request] = &[
        (
            "valid bearer",
            "/orders/1",
            &[("authorization", "Bearer alice")],
        ),
        (
            "valid session cookie",
            "/orders/1",
            &[("cookie", "session=bob")],
        ),
        (
            "forged identity with valid credentials",
            "/orders/1",
            &[
                ("authorization", "Bearer alice"),
                ("x-user-id", "admin"),
                ("x-tenant", "evil"),
            ],
        ),
        (
            "invalid credentials",
            "/orders/1",
            &[("authorization", "Basic Zm9vOmJhcg==")],
        ),
        ("missing credentials", "/orders/1", &[]),
        (
            "the service's 403",
            "/orders/1",
            &[("authorization", "Bearer blocked")],
        ),
        ("public path", "/health", &[]),
    ];
    for (name, path, headers) in alike {
        let l = send(&lua, path, headers);
        let w = send(&wasm, path, headers);
        assert_eq!(l.status, w.status, "{name}: lua {l:?} / authn {w:?}");
        assert_eq!(l.identity, w.identity, "{name}: lua {l:?} / authn {w:?}");
        assert!(
            !w.leaked_internal,
            "{name}: authn leaked the service's headers"
        );
    }
    let w = send(&wasm, "/orders/1", &[("authorization", "Bearer alice")]);
    assert_eq!(w.identity, id("alice"));
    let w = send(&wasm, "/orders/1", &[("cookie", "session=bob")]);
    assert_eq!(w.identity, id("bob"));

    // Where the Lua script is wrong.
    // 1. Anonymous access: the client's own identity headers reach the
    //    upstream through Lua; authn removes them.
    let forged = [
        ("authorization", "Bearer anonymous"),
        ("x-user-id", "admin"),
        ("x-tenant", "evil"),
    ];
    let l = send(&lua, "/orders/1", &forged);
    let w = send(&wasm, "/orders/1", &forged);
    assert_eq!((l.status, w.status), (200, 200));
    assert_eq!(
        l.identity,
        Some((Some("admin".into()), Some("evil".into()))),
        "lua: {l:?}"
    );
    assert_eq!(w.identity, Some((None, None)), "authn: {w:?}");
    // 2. A 401 keeps its WWW-Authenticate through authn; Lua drops it.
    let l = send(&lua, "/orders/1", &[]);
    let w = send(&wasm, "/orders/1", &[]);
    assert_eq!(l.www_authenticate, None);
    assert_eq!(w.www_authenticate.as_deref(), Some("Bearer realm=\"demo\""));
    // 3. The service fails (500): Lua sends its status and body to the
    //    client; authn fails closed with 503 and its own body.
    let l = send(&lua, "/orders/1", &[("authorization", "Bearer boom")]);
    let w = send(&wasm, "/orders/1", &[("authorization", "Bearer boom")]);
    assert_eq!(l.status, 500, "{l:?}");
    assert!(l.body.contains("internal"), "{l:?}");
    assert_eq!(w.status, 503, "{w:?}");
    assert!(!w.body.contains("internal"), "{w:?}");
    // 4. A slow service (2 s): Lua holds the request until the answer
    //    comes (up to its 5 s timeout) and then lets it through; authn
    //    answers 503 at its 500 ms deadline.
    let l = send(&lua, "/orders/1", &[("authorization", "Bearer slow")]);
    let w = send(&wasm, "/orders/1", &[("authorization", "Bearer slow")]);
    assert_eq!(l.status, 200, "{l:?}");
    assert!(l.elapsed >= Duration::from_secs(2), "{l:?}");
    assert_eq!(w.status, 503, "{w:?}");
    assert!(w.elapsed < Duration::from_millis(1500), "{w:?}");
    // 5. Cached decisions: a second request with the same credentials
    //    makes no call through authn; Lua calls every time.
    let calls = || -> u64 {
        let r = get(auth.port, "/__stats", &[]).unwrap();
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["calls"]
            .as_u64()
            .unwrap()
    };
    let before = calls();
    for _ in 0..3 {
        send(&lua, "/orders/1", &[("authorization", "Bearer dave")]);
    }
    assert_eq!(calls() - before, 3);
    let before = calls();
    for _ in 0..3 {
        send(&wasm, "/orders/1", &[("authorization", "Bearer dave")]);
    }
    assert_eq!(calls() - before, 1);

    // The auth service down: both refuse (503), neither hangs.
    drop(auth);
    for (side, envoy) in [("lua", &lua), ("authn", &wasm)] {
        let o = send(envoy, "/orders/1", &[("authorization", "Bearer erin")]);
        assert_eq!(o.status, 503, "{side}: {o:?}");
        assert!(o.elapsed < Duration::from_secs(3), "{side}: {o:?}");
    }
    drop(upstream);
}
