//! The same case table as native_cases.rs, run against the compiled
//! `dist/ab-routing.wasm` in wasm-test-harness: one table, two runtimes.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cases;
#[path = "../../../wasm-test-harness/tests/common/fixtures.rs"]
mod fixtures;

use meshguard_ab_routing::Router;
use meshguard_stage::testing::{run_table, Runtime};
use wasm_test_harness::{Action, Harness, Headers, LogLevel, Module, Vm};

/// The ab-routing module built exactly as `make build` builds it (package
/// meshguard-ab-routing-wasm, profile `wasm`), rebuilt by the test when
/// any filter source is newer: `cargo test` never tests a stale module.
fn module(h: &Harness) -> Module {
    h.module(fixtures::fixture("meshguard-ab-routing-wasm"))
        .unwrap()
}

fn configured(h: &Harness, config: &str) -> Vm {
    h.configured_vm(&module(h), config.as_bytes()).unwrap()
}

/// Request headers → (headers the upstream gets, set-cookie values).
fn exchange(vm: &mut Vm, request: Headers) -> (Headers, Vec<String>) {
    let mut http = vm.new_http().unwrap();
    assert_eq!(
        http.request_headers(request, true).unwrap(),
        Action::Continue
    );
    let upstream = http.request_headers_map();
    http.response_headers([(":status", "200")], true).unwrap();
    let cookies = http.response_headers_map().get_all("set-cookie");
    http.finish().unwrap();
    (upstream, cookies)
}

struct InHarness {
    vm: Vm,
}

impl Runtime<cases::Case> for InHarness {
    fn runtime_name(&self) -> &str {
        "harness"
    }

    fn run_case(&mut self, case: &cases::Case) -> Vec<String> {
        let (upstream, cookies) = exchange(&mut self.vm, Headers::from_pairs(case.request));
        cases::check(case, &upstream.pairs(), &cookies)
    }
}

#[test]
fn case_table_in_wasm() {
    let h = Harness::new();
    let vm = configured(&h, cases::CONFIG);
    run_table(&mut InHarness { vm }, cases::CASES);
}

#[test]
fn wasm_matches_native_router() {
    let h = Harness::new();
    let mut vm = configured(&h, cases::CONFIG);
    let router = Router::from_json(cases::CONFIG.as_bytes()).unwrap();
    for i in 0..2000 {
        let user = format!("k{i}");
        let request = vec![
            (":authority".to_string(), "shop.example.com".to_string()),
            (":path".to_string(), "/checkout".to_string()),
            ("x-user-id".to_string(), user.clone()),
        ];
        let (upstream, _) = exchange(&mut vm, Headers::from_pairs(&request));
        let native = router.decide(&request, || None);
        for set in &native.set {
            assert_eq!(upstream.get(set.name).as_deref(), Some(set.value), "{user}");
        }
    }
    assert_eq!(
        h.counter("meshguard_ab_assigned.checkout.control")
            + h.counter("meshguard_ab_assigned.checkout.treatment"),
        2000
    );
}

#[test]
fn visitor_cookie_round_trip_in_wasm() {
    let h = Harness::builder().seed(42).build();
    let mut vm = configured(&h, cases::CONFIG);
    let (first, cookies) = exchange(&mut vm, Headers::from_pairs(&[(":path", "/checkout")]));
    assert_eq!(cookies.len(), 1);
    assert!(cases::is_new_visitor_cookie(&cookies[0]), "{cookies:?}");
    let pair = cookies[0].split(';').next().unwrap();
    let (again, cookies) = exchange(
        &mut vm,
        Headers::from_pairs(&[(":path", "/checkout"), ("cookie", pair)]),
    );
    assert!(cookies.is_empty());
    assert_eq!(again.get("x-ab-variant"), first.get("x-ab-variant"));
    assert_eq!(h.counter("meshguard_ab_visitor_cookie_set"), 1);
    // WASI random_get is the source: another seed, another visitor id.
    let h2 = Harness::builder().seed(43).build();
    let mut vm2 = configured(&h2, cases::CONFIG);
    let (_, other) = exchange(&mut vm2, Headers::from_pairs(&[(":path", "/checkout")]));
    assert_ne!(other[0].split(';').next(), Some(pair));
}

#[test]
fn metrics_in_wasm() {
    let h = Harness::new();
    let mut vm = configured(&h, cases::CONFIG);
    let shop = (":authority", "shop.example.com");
    exchange(
        &mut vm,
        Headers::from_pairs(&[shop, (":path", "/checkout"), ("x-user-id", "bob")]),
    );
    exchange(
        &mut vm,
        Headers::from_pairs(&[
            shop,
            (":path", "/checkout"),
            ("x-user-id", "bob"),
            ("x-ab-force", "control"),
        ]),
    );
    exchange(
        &mut vm,
        Headers::from_pairs(&[
            shop,
            (":path", "/x"),
            ("x-user-id", "bob"),
            ("x-ab-force", "b"),
            ("x-ab-force-secret", cases::QA_SECRET),
        ]),
    );
    exchange(&mut vm, Headers::from_pairs(&[shop, (":path", "/x")]));
    assert_eq!(h.counter("meshguard_ab_assigned.checkout.treatment"), 2);
    assert_eq!(h.counter("meshguard_ab_assigned.search.a"), 2);
    assert_eq!(h.counter("meshguard_ab_forced.search.b"), 1);
    assert_eq!(h.counter("meshguard_ab_override_rejected"), 1);
    assert_eq!(h.counter("meshguard_ab_unassigned.search"), 1);
    assert_eq!(h.counter("meshguard_ab_unassigned.checkout"), 0);
}

#[test]
fn bad_configs_refuse_to_start_in_wasm_with_json_path() {
    let h = Harness::new();
    let m = module(&h);
    for (config, want) in [
        (
            r#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":1}],"sticky_key":["visitor_cookie"],"extra":1}]}"#,
            "at $.experiments[0].extra: unknown field `extra`",
        ),
        (
            r#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":0}],"sticky_key":["visitor_cookie"]}]}"#,
            "at $.experiments[0].variants: the variants' weights sum to 0",
        ),
        (
            r#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":1},{"name":"a","weight":1}],"sticky_key":["visitor_cookie"]}]}"#,
            "at $.experiments[0].variants[1].name: duplicate variant name `a`",
        ),
        ("", "at $: config is truncated"),
        ("\u{0}\u{ff}", "not valid JSON"),
    ] {
        let mut vm = h.vm(&m).start().unwrap();
        assert!(!vm.configure(config.as_bytes()).unwrap(), "{config}");
        let errors = vm.logs_at(LogLevel::Error);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{config}: {errors:?}"
        );
    }
}

#[test]
fn hostile_header_bytes_never_trap() {
    let h = Harness::new();
    let mut vm = configured(&h, cases::CONFIG);
    for value in [
        vec![0xff, 0xfe],
        vec![0x80; 300],
        b"\"\\;=".to_vec(),
        vec![b'a'; 70_000],
    ] {
        for name in [
            "x-user-id",
            "cookie",
            "x-ab-force",
            "x-ab-force-secret",
            "x-ab-variant",
        ] {
            let request = Headers::from_bytes(&[
                (b":path".as_slice(), b"/checkout".as_slice()),
                (name.as_bytes(), value.as_slice()),
            ]);
            let mut http = vm.new_http().unwrap();
            assert_eq!(
                http.request_headers(request, true).unwrap(),
                Action::Continue
            );
            http.finish().unwrap();
        }
    }
    assert!(vm.failure().is_none());
}
