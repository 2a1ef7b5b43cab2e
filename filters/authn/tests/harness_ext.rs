//! The external-auth and HMAC case table (ext_cases) against the compiled
//! `dist/authn.wasm` in wasm-test-harness: callouts answered by the test
//! like the demo auth service, failed, or left to time out on the harness
//! clock; the decision cache shared by two VMs.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod ext_cases;
#[path = "../../../wasm-test-harness/tests/common/fixtures.rs"]
mod fixtures;

use std::time::{Duration, UNIX_EPOCH};

use meshguard_stage::testing::{run_table, Runtime};
use serde_json::Value;
use wasm_test_harness::{Action, Harness, Headers, HttpCallResponse, Module, Vm};

const T0: u64 = 1_800_000_000;
const JWKS: &str = include_str!("../../../deploy/local/demo-keys/jwks.json");

fn config() -> String {
    ext_cases::config(&serde_json::from_str::<Value>(JWKS).unwrap())
}

fn harness() -> Harness {
    let h = Harness::builder()
        .start_time(UNIX_EPOCH + Duration::from_secs(T0))
        .build();
    h.declare_cluster("auth");
    h.declare_cluster("auth_down");
    h
}

fn module(h: &Harness) -> Module {
    h.module(fixtures::fixture("meshguard-authn-wasm")).unwrap()
}

use ext_cases::Reply;

/// Answers the VM's pending callouts as the demo auth service would: a
/// dead cluster fails, "slow" is left to time out (the harness answers 504
/// as Envoy does).
fn answer_calls(vm: &mut Vm) {
    for call in vm.http_calls() {
        if call.cluster == "auth_down" {
            vm.fail_http_call(call.token).unwrap();
            continue;
        }
        match ext_cases::auth_service(&call.headers.pairs()) {
            Some((status, headers, body)) => {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                vm.respond_http_call(
                    call.token,
                    HttpCallResponse::new(status, &h, body.as_bytes()),
                )
                .unwrap();
            }
            None => vm.advance_clock(Duration::from_secs(1)).unwrap(),
        }
    }
}

fn exchange(
    vm: &mut Vm,
    req: &[(String, String)],
    body: &[u8],
) -> (Option<Vec<(String, String)>>, Option<Reply>) {
    let mut http = vm.new_http().unwrap();
    let mut action = http
        .request_headers(Headers::from_pairs(req), body.is_empty())
        .unwrap();
    let id = http.id();
    if action != Action::Continue {
        answer_calls(vm);
    }
    let mut http = vm.http(id).unwrap();
    if !body.is_empty() && http.local_response().is_none() {
        action = http.request_body(body, true).unwrap();
    }
    if let Some(r) = http.local_response() {
        return (
            None,
            Some((
                r.status as u16,
                r.headers.get("www-authenticate"),
                String::from_utf8_lossy(&r.body).into_owned(),
                r.headers.pairs(),
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
    h: Harness,
    vm: Vm,
}

impl Runtime<ext_cases::Case> for InHarness {
    fn runtime_name(&self) -> &str {
        "harness"
    }
    fn run_case(&mut self, case: &ext_cases::Case) -> Vec<String> {
        // The harness clock moves (timeouts): sign at its current time.
        let now = self.h.now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let (req, body) = case.request(now);
        let (up, reply) = exchange(&mut self.vm, &req, &body);
        ext_cases::check(case, up.as_deref(), reply)
    }
}

#[test]
fn case_table_in_wasm() {
    let h = harness();
    let vm = h.configured_vm(&module(&h), config().as_bytes()).unwrap();
    let mut rt = InHarness { h, vm };
    run_table(&mut rt, ext_cases::CASES);
    run_table(&mut rt, ext_cases::CASES);
    // Hits and allows reach the proxy's counters with the timer.
    rt.vm.advance_clock(Duration::from_secs(2)).unwrap();
    rt.vm.tick().unwrap();
    let h = &rt.h;
    assert!(h.counter("meshguard_authn_ext_cache_hit.legacy") >= 4);
    assert!(h.counter("meshguard_authn_hmac_allowed.partners") > 0);
    assert!(h.counter("meshguard_authn_denied.sig_bad_signature") > 0);
}

fn legacy(user: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), "GET".into()),
        (":path".into(), "/legacy/orders".into()),
        (":authority".into(), "shop.example.com".into()),
        ("authorization".into(), format!("Bearer {user}")),
    ]
}

#[test]
fn decision_cache_is_shared_by_two_vms_and_a_hit_makes_no_call() {
    let h = harness();
    let m = module(&h);
    let mut a = h.configured_vm(&m, config().as_bytes()).unwrap();
    let mut b = h.configured_vm(&m, config().as_bytes()).unwrap();
    let (up, _) = exchange(&mut a, &legacy("alice"), b"");
    assert!(up.unwrap().contains(&("x-user-id".into(), "alice".into())));
    assert_eq!(h.counter("meshguard_authn_ext_cache_miss.legacy"), 1);
    // VM b: answered from shared data, no callout made.
    let mut http = b.new_http().unwrap();
    let action = http
        .request_headers(Headers::from_pairs(&legacy("alice")), true)
        .unwrap();
    assert_eq!(action, Action::Continue);
    let id = http.id();
    assert!(b.http_calls().is_empty(), "a cache hit made a call");
    let http = b.http(id).unwrap();
    assert_eq!(http.request_header("x-user-id").as_deref(), Some("alice"));
    assert_eq!(http.request_header("x-tenant").as_deref(), Some("acme"));
    b.advance_clock(Duration::from_secs(2)).unwrap();
    b.tick().unwrap();
    assert_eq!(h.counter("meshguard_authn_ext_cache_hit.legacy"), 1);
}

#[test]
fn a_timed_out_call_is_503_within_the_timeout_never_a_hang() {
    let h = harness();
    let mut vm = h.configured_vm(&module(&h), config().as_bytes()).unwrap();
    let mut http = vm.new_http().unwrap();
    let action = http
        .request_headers(Headers::from_pairs(&legacy("slow")), true)
        .unwrap();
    assert_eq!(action, Action::Pause);
    let id = http.id();
    vm.advance_clock(Duration::from_millis(299)).unwrap();
    assert!(vm.http(id).unwrap().local_response().is_none());
    vm.advance_clock(Duration::from_millis(2)).unwrap();
    let r = vm
        .http(id)
        .unwrap()
        .local_response()
        .expect("no answer after the timeout");
    assert_eq!(r.status, 503);
    assert_eq!(h.counter("meshguard_authn_ext_error.legacy"), 1);
}
