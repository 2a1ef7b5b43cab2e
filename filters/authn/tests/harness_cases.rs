//! The same case table as native_cases.rs against the compiled
//! `dist/authn.wasm` in wasm-test-harness, and the key fetch, refresh,
//! refetch and shared cache with real VMs.

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

use std::time::{Duration, UNIX_EPOCH};

use meshguard_stage::testing::{run_table, Runtime};
use wasm_test_harness::{Action, Harness, Headers, HttpCallResponse, Module, Vm};

const T0: u64 = 1_800_000_000;

fn harness() -> Harness {
    Harness::builder()
        .start_time(UNIX_EPOCH + Duration::from_secs(T0))
        .build()
}

fn module(h: &Harness) -> Module {
    h.module(fixtures::fixture("meshguard-authn-wasm")).unwrap()
}

type Seen = (
    Option<Vec<(String, String)>>,
    Option<(u16, Option<String>, String)>,
);

/// Sends a request; answers pending callouts with `answer` (if any).
fn exchange(vm: &mut Vm, req: &[(String, String)], answer: Option<&HttpCallResponse>) -> Seen {
    let mut http = vm.new_http().unwrap();
    let action = http
        .request_headers(Headers::from_pairs(req), true)
        .unwrap();
    let id = http.id();
    if action != Action::Continue {
        if let Some(a) = answer {
            for call in vm.http_calls() {
                vm.respond_http_call(call.token, a.clone()).unwrap();
            }
        }
    }
    let http = vm.http(id).unwrap();
    if let Some(r) = http.local_response() {
        return (
            None,
            Some((
                r.status as u16,
                r.headers.get("www-authenticate"),
                String::from_utf8_lossy(&r.body).into_owned(),
            )),
        );
    }
    assert!(
        http.request_resumed() > 0 || action == Action::Continue,
        "request held"
    );
    (Some(http.request_headers_map().pairs()), None)
}

struct InHarness {
    vm: Vm,
}

impl Runtime<cases::Case> for InHarness {
    fn runtime_name(&self) -> &str {
        "harness"
    }
    fn run_case(&mut self, case: &cases::Case) -> Vec<String> {
        let (up, reply) = exchange(&mut self.vm, &case.request(T0 as i64), None);
        cases::check(case, up.as_deref(), reply)
    }
}

#[test]
fn case_table_in_wasm() {
    let h = harness();
    let vm = h
        .configured_vm(&module(&h), cases::config().as_bytes())
        .unwrap();
    let mut rt = InHarness { vm };
    run_table(&mut rt, cases::CASES);
    run_table(&mut rt, cases::CASES);
    // Hits and allowed requests reach the proxy with the timer.
    rt.vm.advance_clock(Duration::from_secs(2)).unwrap();
    rt.vm.tick().unwrap();
    assert!(h.counter("meshguard_authn_cache_hit") > 0);
    assert!(h.counter("meshguard_authn_allowed") > 0);
}

#[test]
fn cache_is_shared_by_two_vms() {
    let h = harness();
    let m = module(&h);
    let mut a = h.configured_vm(&m, cases::config().as_bytes()).unwrap();
    let mut b = h.configured_vm(&m, cases::config().as_bytes()).unwrap();
    let req = cases::bearer_request(cases::Tok::Rs256, T0);
    assert!(exchange(&mut a, &req, None).0.is_some());
    assert_eq!(h.counter("meshguard_authn_cache_miss"), 1);
    assert!(exchange(&mut b, &req, None).0.is_some());
    b.advance_clock(Duration::from_secs(2)).unwrap();
    b.tick().unwrap();
    assert_eq!(
        h.counter("meshguard_authn_cache_hit"),
        1,
        "the second VM verified again"
    );
}

fn jwks(doc: &str) -> HttpCallResponse {
    HttpCallResponse::new(200, &[("content-type", "application/json")], doc.as_bytes())
}

#[test]
fn jwks_fetch_refresh_refetch_and_failure_in_wasm() {
    let h = harness();
    h.declare_cluster("idp");
    let m = module(&h);
    let mut vm = h
        .configured_vm(&m, cases::remote_config().as_bytes())
        .unwrap();
    // First request: fetch through the callout the test answers, then verified.
    let (up, _) = exchange(
        &mut vm,
        &cases::bearer_request(cases::Tok::Rs256, T0),
        Some(&jwks(cases::JWKS)),
    );
    let up = up.expect("verified after the fetch");
    assert!(up.iter().any(|(k, v)| k == "x-user-id" && v == "alice"));
    assert_eq!(h.counter("meshguard_authn_jwks_fetch_ok.demo"), 1);
    // A second VM uses the shared keys without fetching.
    let mut other = h
        .configured_vm(&m, cases::remote_config().as_bytes())
        .unwrap();
    let (up, _) = exchange(
        &mut other,
        &cases::bearer_request(cases::Tok::Es256, T0),
        None,
    );
    assert!(up.is_some());
    assert!(other.http_calls().is_empty());
    // Junk kids within the minimum interval: 401, no fetch.
    for _ in 0..20 {
        let (_, r) = exchange(
            &mut vm,
            &cases::bearer_request(cases::Tok::UnknownKid, T0),
            None,
        );
        assert_eq!(r.unwrap().0, 401);
    }
    assert!(vm.http_calls().is_empty());
    // After the interval an unknown kid refetches once; the server fails:
    // old keys stay.
    vm.advance_clock(Duration::from_secs(31)).unwrap();
    let mut http = vm.new_http().unwrap();
    let action = http
        .request_headers(
            Headers::from_pairs(&cases::bearer_request(cases::Tok::UnknownKid, T0 + 31)),
            true,
        )
        .unwrap();
    let id = http.id();
    assert_ne!(action, Action::Continue);
    let calls = vm.http_calls();
    assert_eq!(calls.len(), 1);
    vm.fail_http_call(calls[0].token).unwrap();
    assert_eq!(vm.http(id).unwrap().local_response().unwrap().status, 401);
    assert_eq!(h.counter("meshguard_authn_jwks_fetch_failed.demo"), 1);
    let (up, _) = exchange(
        &mut vm,
        &cases::bearer_request(cases::Tok::Rs256, T0 + 31),
        None,
    );
    assert!(up.is_some(), "last good keys dropped after a failed fetch");
    // The timer refreshes after cache_seconds.
    vm.advance_clock(Duration::from_secs(60)).unwrap();
    vm.tick().unwrap();
    let calls = vm.http_calls();
    assert_eq!(calls.len(), 1, "timer refresh");
    vm.respond_http_call(calls[0].token, jwks(cases::JWKS))
        .unwrap();
    assert_eq!(h.counter("meshguard_authn_jwks_fetch_ok.demo"), 2);
}

/// Istio gives every WasmPlugin the same empty vm_id, so two authn
/// plugins on one proxy share one shared-data space. Each keeps its own
/// key sets (and cache): plugin B, whose provider has the same name but
/// fetches from another cluster, never verifies with the keys plugin A
/// fetched — it fetches its own.
#[test]
fn two_plugins_in_one_vm_id_keep_their_own_keys() {
    let h = harness();
    h.declare_cluster("idp");
    h.declare_cluster("idp-b");
    let m = module(&h);
    let start = |plugin: &str, config: &str| {
        let mut vm = h.vm(&m).vm_id("").plugin_name(plugin).start().unwrap();
        assert!(
            vm.configure(config.as_bytes()).unwrap(),
            "{}",
            vm.log_text()
        );
        vm
    };
    let mut a = start("shop.a", &cases::remote_config());
    let config_b = cases::remote_config().replace("\"idp\"", "\"idp-b\"");
    assert!(config_b.contains("idp-b"));
    let mut b = start("shop.b", &config_b);
    let req = cases::bearer_request(cases::Tok::Rs256, T0);
    let (up, _) = exchange(&mut a, &req, Some(&jwks(cases::JWKS)));
    assert!(up.is_some(), "A verified after its fetch");
    // B has no keys of its own yet: it fetches from its cluster (and here
    // its key server has none of A's keys: 401), never A's set.
    let mut http = b.new_http().unwrap();
    let action = http
        .request_headers(Headers::from_pairs(&req), true)
        .unwrap();
    assert_ne!(action, Action::Continue, "B accepted a token with A's keys");
    let calls = b.http_calls();
    assert_eq!(calls.len(), 1, "B did not fetch its own keys");
    assert_eq!(calls[0].cluster, "idp-b");
}
