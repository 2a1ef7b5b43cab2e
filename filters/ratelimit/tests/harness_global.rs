//! The global-mode case table (global_cases) against the compiled
//! `dist/ratelimit.wasm` in wasm-test-harness: the filter's gRPC call to the
//! rate-limit service answered, failed and timed out by the test.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../../wasm-test-harness/tests/common/fixtures.rs"]
mod fixtures;
mod global_cases;

use std::time::Duration;

use global_cases::{Case, Expect, Service};
use meshguard_stage::testing::{run_table, Runtime};
use wasm_test_harness::{Action, Harness, Headers, Vm};

fn vm(h: &Harness) -> Vm {
    let m = h
        .module(fixtures::fixture("meshguard-ratelimit-wasm"))
        .unwrap();
    h.declare_cluster("rls");
    h.configured_vm(&m, global_cases::CONFIG.as_bytes())
        .unwrap()
}

struct InHarness {
    vm: Vm,
}

impl Runtime<Case> for InHarness {
    fn runtime_name(&self) -> &str {
        "harness"
    }
    fn run_case(&mut self, case: &Case) -> Vec<String> {
        let vm = &mut self.vm;
        let mut http = vm.new_http().unwrap();
        let action = http
            .request_headers(Headers::from_pairs(&case.request()), true)
            .unwrap();
        let id = http.id();
        let calls = vm.grpc_calls();
        let mut problems = case.check_call(calls.first().map(|c| c.message.as_slice()));
        if let Some(call) = calls.first() {
            problems.extend(
                [
                    (call.cluster.as_str(), "rls"),
                    (
                        call.service.as_str(),
                        "envoy.service.ratelimit.v3.RateLimitService",
                    ),
                    (call.method.as_str(), "ShouldRateLimit"),
                ]
                .iter()
                .filter(|(got, want)| got != want)
                .map(|(got, want)| format!("call: want {want}, got {got}")),
            );
            match (case.service, case.answer()) {
                // A timeout: the harness's clock passes the call's 50 ms.
                (Service::Error(4), _) => vm.advance_clock(Duration::from_millis(60)).unwrap(),
                (_, Ok(m)) => vm.respond_grpc_call(call.token, &m).unwrap(),
                (_, Err(status)) => vm.fail_grpc_call(call.token, status, "failed").unwrap(),
            }
        }
        let mut http = vm.http(id).unwrap();
        let reply = http.local_response();
        match (case.expect, reply) {
            (Expect::Allowed(header), None) => {
                if action != Action::Continue && http.request_resumed() == 0 {
                    problems.push("request held".into());
                }
                http.response_headers(Headers::from_pairs(&[(":status", "200")]), true)
                    .unwrap();
                if let Some((k, v)) = header {
                    let got = http.response_header(k);
                    if got.as_deref() != Some(v) {
                        problems.push(format!("response {k}: want {v}, got {got:?}"));
                    }
                }
            }
            (Expect::Allowed(_), Some(r)) => problems.push(format!("refused: {}", r.status)),
            (Expect::Refused(..), None) => problems.push("forwarded".into()),
            (Expect::Refused(status, retry), Some(r)) => {
                if r.status != u32::from(status) {
                    problems.push(format!("status: want {status}, got {}", r.status));
                }
                if let Some(want) = retry {
                    let got = r.headers.get("retry-after");
                    if got.as_deref() != Some(want) {
                        problems.push(format!("retry-after: want {want}, got {got:?}"));
                    }
                }
            }
        }
        problems
    }
}

#[test]
fn case_table_in_wasm() {
    let h = Harness::builder().build();
    let vm = vm(&h);
    let mut rt = InHarness { vm };
    run_table(&mut rt, global_cases::CASES);
    rt.vm.advance_clock(Duration::from_secs(2)).unwrap();
    rt.vm.tick().unwrap();
    assert_eq!(h.counter("meshguard_ratelimit_service_errors"), 3);
    assert_eq!(h.counter("meshguard_ratelimit_global_limited"), 2);
}
