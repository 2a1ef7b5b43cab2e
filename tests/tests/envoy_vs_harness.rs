//! The same requests through real Envoy (V8) and through wasm-test-harness
//! (wasmtime) must leave the same headers: the harness is only worth
//! trusting if it behaves like Envoy.

#[path = "../../filters/ab-routing/tests/cases/mod.rs"]
mod cases;
#[path = "../../wasm-test-harness/tests/common/fixtures.rs"]
mod fixtures;

use meshguard_e2e::*;
use wasm_test_harness::{Action, Harness, Headers, HttpCallResponse, LogLevel};

/// Request headers as the filter sees them inside Envoy: pseudo-headers from
/// the request line, the client's headers, then what Envoy adds first.
fn as_envoy_presents(path: &str, client: &[(&str, &str)], request_id: &str) -> Headers {
    let mut h = Headers::new();
    let authority = client
        .iter()
        .find(|(k, _)| *k == "host")
        .map(|(_, v)| *v)
        .unwrap_or("localhost");
    h.add(":authority", authority.as_bytes());
    h.add(":path", path.as_bytes());
    h.add(":method", b"GET");
    h.add(":scheme", b"http");
    for (k, v) in client {
        if *k != "host" {
            h.add(k, v.as_bytes());
        }
    }
    h.add("x-forwarded-proto", b"http");
    h.add("x-request-id", request_id.as_bytes());
    h
}

/// Split a case's request into the path and the client headers.
fn client_request(case: &cases::Case) -> (String, Vec<(&'static str, &'static str)>) {
    let mut path = "/".to_string();
    let mut headers = Vec::new();
    for (k, v) in case.request {
        match *k {
            ":path" => path = v.to_string(),
            ":authority" => headers.push(("host", *v)),
            ":method" => {}
            _ => headers.push((*k, *v)),
        }
    }
    (path, headers)
}

#[test]
fn ab_routing_case_table_same_headers_in_envoy_and_harness() {
    let stack = Stack::start("envoy-vs-harness");
    let h = Harness::new();
    let module = h.module(wasm_module("ab-routing")).unwrap();
    let mut vm = h.configured_vm(&module, cases::CONFIG.as_bytes()).unwrap();
    let mut failures = Vec::new();
    for case in cases::CASES {
        let (path, client) = client_request(case);
        let envoy = stack.envoy.get(&path, &client);
        let request_id = envoy.upstream_header("x-request-id").unwrap_or_default();
        let mut http = vm.new_http().unwrap();
        assert_eq!(
            http.request_headers(as_envoy_presents(&path, &client, &request_id), true)
                .unwrap(),
            Action::Continue
        );
        http.response_headers([(":status", "200")], true).unwrap();
        let harness_cookies = http.response_headers_map().get_all("set-cookie");
        let harness_headers = without_envoy_headers(http.request_headers_map().pairs());
        http.finish().unwrap();

        let mut envoy_headers = without_envoy_headers(envoy.upstream_headers());
        let mut harness_headers = harness_headers;
        // A new visitor's variant depends on its random id (V8's random vs
        // the harness seed): compare those values by shape only.
        for (name, want) in case.upstream {
            if let cases::Want::OneOf(_) = want {
                for list in [&mut envoy_headers, &mut harness_headers] {
                    for (k, v) in list.iter_mut() {
                        if k == name {
                            *v = "<one of>".into();
                        }
                    }
                }
            }
        }
        if envoy_headers != harness_headers {
            failures.push(format!(
                "{}:\n  envoy:   {envoy_headers:?}\n  harness: {harness_headers:?}",
                case.name
            ));
        }
        let envoy_cookies = envoy.header_all("set-cookie");
        let shape = |c: &[String]| {
            c.iter()
                .map(|v| cases::is_new_visitor_cookie(v))
                .collect::<Vec<_>>()
        };
        if shape(&envoy_cookies) != shape(&harness_cookies) {
            failures.push(format!(
                "{}: set-cookie envoy {envoy_cookies:?} harness {harness_cookies:?}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The probe fixture, built on first use if missing or stale.
fn probe_path() -> std::path::PathBuf {
    fixtures::fixture("harness-probe")
}

fn probe_stack(name: &str) -> (Upstream, Envoy) {
    envoy_bin();
    let dir = scratch_dir(name);
    let upstream = Upstream::start(&dir);
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let config = single_filter_envoy_config(&ports, upstream.port, &probe_path(), "probe", "");
    let envoy = Envoy::start(&dir, &config, ports, 1);
    (upstream, envoy)
}

/// Header-map semantics are Envoy's: replace drops every old value and
/// appends the new one, add lowercases and appends, remove drops all, get
/// returns the first value, a missing key is NotFound.
#[test]
fn probe_header_semantics_match_envoy() {
    let (_up, envoy) = probe_stack("probe-headers");
    let h = Harness::new();
    let module = h.module(probe_path()).unwrap();
    let mut vm = h.configured_vm(&module, b"").unwrap();
    let requests: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/h",
            vec![
                ("x-probe", "headers"),
                ("x-dup", "a"),
                ("x-keep", "k"),
                ("x-dup", "b"),
                ("x-remove-me", "1"),
                ("x-multi", "first"),
                ("x-multi", "second"),
            ],
        ),
        ("/h", vec![("x-probe", "headers")]),
        // Not compared: "replace-all" (set_header_map_pairs). Envoy 1.40
        // answers it with 404 route_not_found even with every pseudo-header
        // present, so nothing reaches the upstream to compare with.
    ];
    for (path, client) in requests {
        let e = envoy.get(path, &client);
        assert_eq!(e.status, 200, "{}", envoy.proc.log_tail());
        let request_id = e.upstream_header("x-request-id").unwrap_or_default();
        let mut http = vm.new_http().unwrap();
        http.request_headers(as_envoy_presents(path, &client, &request_id), true)
            .unwrap();
        let harness = without_envoy_headers(http.request_headers_map().pairs());
        let harness_path = http.request_header(":path");
        http.finish().unwrap();
        assert_eq!(
            without_envoy_headers(e.upstream_headers()),
            harness,
            "{client:?}"
        );
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(
            v["path"].as_str(),
            harness_path.as_deref(),
            "path seen upstream"
        );
    }
}

/// A local reply goes through the response path in both (on_response_headers
/// adds x-probe-response), with the same status, headers and body.
#[test]
fn probe_local_reply_matches_envoy() {
    let (_up, envoy) = probe_stack("probe-local-reply");
    let h = Harness::new();
    let module = h.module(probe_path()).unwrap();
    let mut vm = h.configured_vm(&module, b"").unwrap();
    let client = [("x-probe", "local-reply")];
    let e = envoy.get("/denied", &client);
    let mut http = vm.new_http().unwrap();
    http.request_headers(as_envoy_presents("/denied", &client, "id"), true)
        .unwrap();
    let resp = http.response_headers_map();
    assert_eq!(e.status.to_string(), resp.get(":status").unwrap());
    for name in [
        "x-probe",
        "content-type",
        "content-length",
        "x-probe-response",
    ] {
        assert_eq!(e.header(name).map(str::to_string), resp.get(name), "{name}");
    }
    assert_eq!(e.body, http.response_body_forwarded());
}

/// Reading response headers during the request phase: Envoy answers
/// BadArgument, the SDK panics, the VM fails and Envoy (fail closed) sends
/// 503; the harness reports the same trap.
#[test]
fn probe_wrong_phase_traps_in_both() {
    let (_up, envoy) = probe_stack("probe-wrong-phase");
    let e = envoy.get("/", &[("x-probe", "wrong-phase")]);
    assert_eq!(e.status, 503);
    assert!(
        envoy.proc.log_text().contains("unexpected status: 2"),
        "{}",
        envoy.proc.log_tail()
    );
    let h = Harness::new();
    let module = h.module(probe_path()).unwrap();
    let mut vm = h.configured_vm(&module, b"").unwrap();
    let err = vm
        .new_http()
        .unwrap()
        .request_headers([("x-probe", "wrong-phase")], true)
        .unwrap_err();
    assert!(err.to_string().contains("unexpected status: 2"), "{err}");
}

/// A body that arrives while the filter is paused (waiting for its
/// callout) reaches `on_request_body` once the filter continues, and the
/// upstream, without any further data from the client.
#[test]
fn probe_body_parked_during_callout_is_delivered_like_envoy() {
    let (_up, envoy) = probe_stack("probe-parked-body");
    let client = [
        ("x-probe", "http-call-body"),
        ("x-probe-cluster", "upstream"),
    ];
    let e = envoy.request("POST", "/upload", &client, b"hello");
    assert_eq!(e.status, 200, "{}", envoy.proc.log_tail());
    let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(v["body_bytes"].as_u64(), Some(5), "{}", e.body_text());
    assert!(
        envoy.proc.log_text().contains("parked body size 5"),
        "{}",
        envoy.proc.log_tail()
    );

    let h = Harness::new();
    h.declare_cluster("upstream");
    let module = h.module(probe_path()).unwrap();
    let mut vm = h.configured_vm(&module, b"").unwrap();
    let mut http = vm.new_http().unwrap();
    let mut headers = as_envoy_presents("/upload", &client, "id");
    headers.replace(":method", b"POST");
    assert_eq!(http.request_headers(headers, false).unwrap(), Action::Pause);
    assert_eq!(http.request_body(b"hello", true).unwrap(), Action::Pause);
    let id = http.id();
    let token = vm.http_calls()[0].token;
    vm.respond_http_call(token, HttpCallResponse::new(200, &[], b"{}"))
        .unwrap();
    let http = vm.http(id).unwrap();
    assert_eq!(http.request_body_forwarded(), b"HELLO");
    assert!(vm
        .logs_at(LogLevel::Info)
        .contains(&"parked body size 5".to_string()));
}

/// Local replies to gRPC, gRPC-Web and HEAD requests: the same status,
/// headers (in order) and body from Envoy and the harness.
#[test]
fn probe_local_reply_variants_match_envoy() {
    let (_up, envoy) = probe_stack("probe-local-reply-variants");
    let h = Harness::new();
    let module = h.module(probe_path()).unwrap();
    let mut vm = h.configured_vm(&module, b"").unwrap();
    // Headers the filter pipeline decides; Envoy's codec adds the rest.
    let compared = |headers: Vec<(String, String)>| -> Vec<(String, String)> {
        headers
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "date" | "server" | "connection" | ":status"))
            .filter(|(k, v)| !(k == "content-length" && v == "0"))
            .collect()
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("GET", vec![("content-type", "application/grpc")]),
        (
            "GET",
            vec![
                ("content-type", "application/grpc"),
                ("x-probe-status", "401"),
            ],
        ),
        (
            "GET",
            vec![
                ("content-type", "application/grpc+proto"),
                ("x-probe-status", "503"),
            ],
        ),
        (
            "GET",
            vec![
                ("content-type", "application/grpc"),
                ("x-probe-status", "404"),
            ],
        ),
        ("GET", vec![("content-type", "application/grpc-web")]),
        ("HEAD", vec![]),
    ];
    let mut failures = Vec::new();
    for (method, extra) in cases {
        let mut client = vec![("x-probe", "local-reply")];
        client.extend(extra.iter().copied());
        let e = envoy.request(method, "/denied", &client, b"");
        let mut http = vm.new_http().unwrap();
        let mut headers = as_envoy_presents("/denied", &client, "id");
        headers.replace(":method", method.as_bytes());
        http.request_headers(headers, true).unwrap();
        let resp = http.response_headers_map();
        let envoy_view = (
            e.status.to_string(),
            compared(e.headers.clone()),
            e.body.clone(),
        );
        let harness_view = (
            resp.get(":status").unwrap_or_default(),
            compared(resp.pairs()),
            http.response_body_forwarded(),
        );
        http.finish().unwrap();
        if envoy_view != harness_view {
            failures.push(format!(
                "{method} {extra:?}:\n  envoy:   {envoy_view:?}\n  harness: {harness_view:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A minimal proxy-wasm module whose `_initialize` runs `init`.
fn init_module_wat(init: &str) -> String {
    format!(
        r#"(module
        (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
        (import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "random_get"
            (func $random_get (param i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 0) "\10\00\00\00\08\00\00\00")
        (data (i32.const 16) "started\0a")
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "malloc") (param i32) (result i32) i32.const 1024)
        (func (export "proxy_on_context_create") (param i32 i32))
        (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
        (func (export "proxy_on_configure") (param i32 i32) (result i32)
            (drop (call $level (i32.const 200)))
            i32.const 1)
        (func (export "_initialize") {init}))"#
    )
}

/// Envoy refuses host calls other than `proxy_log` and WASI while
/// `_initialize` runs (cpp-host `WasmBase::startVm`): a module reading the
/// log level there fails to load; one logging and using WASI loads. The
/// harness starts or refuses the same modules.
#[test]
fn host_calls_in_initialize_are_restricted_in_both() {
    envoy_bin();
    let cases = [
        (
            "init-restricted",
            "(drop (call $level (i32.const 200)))",
            false,
        ),
        (
            "init-allowed",
            "(drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))
             (drop (call $random_get (i32.const 104) (i32.const 8)))
             (drop (call $log (i32.const 2) (i32.const 16) (i32.const 7)))",
            true,
        ),
    ];
    for (name, init, starts) in cases {
        let wat = init_module_wat(init);
        let dir = scratch_dir(name);
        let wasm = dir.join(format!("{name}.wasm"));
        std::fs::write(&wasm, wat::parse_str(&wat).unwrap()).unwrap();
        let ports = EnvoyPorts {
            listen: free_port(),
            admin: free_port(),
        };
        let h = Harness::new();
        let module = h.module_from_bytes(wat.as_bytes(), name).unwrap();
        let harness = h.vm(&module).start();
        if starts {
            let upstream = Upstream::start(&dir);
            let config = single_filter_envoy_config(&ports, upstream.port, &wasm, name, "");
            let envoy = Envoy::start(&dir, &config, ports, 1);
            assert_eq!(envoy.get("/", &[]).status, 200);
            let log = envoy.proc.log_text();
            assert!(log.contains("wasm log: started"), "{log}");
            let mut vm = harness.unwrap();
            assert_eq!(vm.stdout(), "started\n");
            assert!(vm.configure(b"").unwrap());
        } else {
            let config = single_filter_envoy_config(&ports, free_port(), &wasm, name, "");
            let log = Envoy::expect_refused(&dir, &config, ports);
            assert!(
                log.contains("Function: _initialize failed: Uncaught Error: restricted_callback"),
                "{log}"
            );
            assert!(log.contains("Failed to initialize Wasm code"), "{log}");
            let err = harness.err().expect("the harness must refuse it too");
            let text = err.to_string();
            assert!(
                text.contains("guest trapped in _initialize: restricted_callback"),
                "{text}"
            );
            assert!(text.contains("`env.proxy_get_log_level`"), "{text}");
        }
    }
}
