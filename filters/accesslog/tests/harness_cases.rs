//! The same case table as native_cases.rs, and shipping, against the
//! compiled `dist/accesslog.wasm` in wasm-test-harness: properties set by
//! the test, the timer driving flushes, callouts answered, failed and
//! retried, the buffer filling up.

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

use std::time::Duration;

use meshguard_stage::testing::{run_table, Runtime};
use wasm_test_harness::{Harness, Headers, HttpCallResponse, LogLevel, Module, Vm};

/// The accesslog module built exactly as `make build` builds it, rebuilt by
/// the test when any filter source is newer.
fn module(h: &Harness) -> Module {
    h.module(fixtures::fixture("meshguard-accesslog-wasm"))
        .unwrap()
}

fn records(vm: &Vm) -> Vec<String> {
    vm.logs()
        .iter()
        .filter(|l| l.message.starts_with('{'))
        .map(|l| l.message.clone())
        .collect()
}

/// One exchange with properties; returns the new record lines.
fn exchange(
    vm: &mut Vm,
    request: Headers,
    response: Headers,
    props: &[(&[&str], Vec<u8>)],
) -> Vec<String> {
    let before = records(vm).len();
    let mut http = vm.new_http().unwrap();
    for (path, v) in props {
        http.set_property(path, v.clone()).unwrap();
    }
    http.request_headers(request, true).unwrap();
    http.response_headers(response, true).unwrap();
    http.finish().unwrap();
    records(vm).split_off(before)
}

struct InHarness {
    h: Harness,
    module: Module,
}

impl Runtime<cases::Case> for InHarness {
    fn runtime_name(&self) -> &str {
        "harness"
    }

    fn run_case(&mut self, case: &cases::Case) -> Vec<String> {
        // A fresh harness per case: counters start at zero.
        self.h = Harness::new();
        let mut vm = self
            .h
            .configured_vm(&self.module, case.config.as_bytes())
            .unwrap();
        let props: Vec<(&[&str], Vec<u8>)> =
            case.props.iter().map(|(p, v)| (*p, v.bytes())).collect();
        let lines = exchange(
            &mut vm,
            Headers::from_pairs(case.request),
            Headers::from_pairs(case.response),
            &props,
        );
        if lines.len() > 1 {
            return vec![format!("{} lines for one request: {lines:?}", lines.len())];
        }
        // Per-record counters reach the proxy on the timer.
        vm.tick().unwrap();
        let h = &self.h;
        cases::check(case, lines.first().map(String::as_str), |c| {
            h.counter(c) as i64
        })
    }
}

#[test]
fn case_table_in_wasm() {
    let h = Harness::new();
    let module = module(&h);
    run_table(&mut InHarness { h, module }, cases::CASES);
}

const SHIP: &str = r#"{"log_line": {"enabled": false},
  "ship": {"cluster": "otel", "batch_max_records": 3, "flush_interval_ms": 1000, "max_retries": 1,
           "retry_backoff_ms": 1000, "retry_backoff_max_ms": 4000, "max_in_flight": 1,
           "buffer_max_bytes": 16384, "batch_max_bytes": 4096}}"#;

fn ok_status() -> Vec<(&'static [&'static str], Vec<u8>)> {
    vec![(&["response", "code"][..], 200i64.to_le_bytes().to_vec())]
}

fn log_n(vm: &mut Vm, n: usize) {
    for i in 0..n {
        let id = format!("r{i}");
        exchange(
            vm,
            Headers::from_pairs(&[(":path", "/x"), ("x-request-id", id.as_str())]),
            Headers::from_pairs(&[(":status", "200")]),
            &ok_status(),
        );
    }
}

#[test]
fn timer_flushes_batches_and_answers_count_as_shipped() {
    let h = Harness::new();
    h.declare_cluster("otel");
    let mut vm = h.configured_vm(&module(&h), SHIP.as_bytes()).unwrap();
    assert_eq!(vm.tick_period(), Some(Duration::from_millis(250)));
    log_n(&mut vm, 2);
    vm.advance_clock(Duration::from_millis(500)).unwrap();
    assert!(vm.http_calls().is_empty(), "not full, not old");
    vm.advance_clock(Duration::from_millis(600)).unwrap();
    let calls = vm.http_calls();
    assert_eq!(calls.len(), 1, "the timer flushed the old records");
    let call = &calls[0];
    assert_eq!(call.cluster, "otel");
    assert_eq!(call.headers.get(":path").as_deref(), Some("/v1/logs"));
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    let recs = body["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        .as_array()
        .unwrap();
    assert_eq!(recs.len(), 2);
    vm.respond_http_call(call.token, HttpCallResponse::new(200, &[], b"{}"))
        .unwrap();
    assert_eq!(h.counter("meshguard_accesslog_shipped"), 2);
    // A full batch leaves on the next tick.
    log_n(&mut vm, 3);
    vm.advance_clock(Duration::from_millis(250)).unwrap();
    assert_eq!(vm.http_calls().len(), 1);
    assert_eq!(h.counter("meshguard_accesslog_records"), 5);
    assert!(vm.failure().is_none());
}

#[test]
fn failed_callouts_are_retried_then_dropped() {
    let h = Harness::new();
    h.declare_cluster("otel");
    let mut vm = h.configured_vm(&module(&h), SHIP.as_bytes()).unwrap();
    log_n(&mut vm, 3);
    vm.advance_clock(Duration::from_millis(250)).unwrap();
    let first = vm.http_calls()[0].clone();
    vm.fail_http_call(first.token).unwrap();
    assert_eq!(h.counter("meshguard_accesslog_ship_failures"), 1);
    vm.advance_clock(Duration::from_millis(750)).unwrap();
    assert!(vm.http_calls().is_empty(), "backoff");
    vm.advance_clock(Duration::from_millis(250)).unwrap();
    let again = vm.http_calls();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, first.body);
    assert_eq!(h.counter("meshguard_accesslog_retries"), 1);
    // Envoy answers a callout whose timeout passed with a local 504:
    // retryable, but max_retries (1) is used up.
    vm.time_out_http_call(again[0].token).unwrap();
    assert_eq!(h.counter("meshguard_accesslog_dropped"), 3);
    assert_eq!(h.counter("meshguard_accesslog_ship_failures"), 2);
    assert!(vm.failure().is_none());
}

#[test]
fn buffer_full_drops_are_counted_and_requests_unaffected() {
    let h = Harness::new();
    h.declare_cluster("otel");
    let mut vm = h.configured_vm(&module(&h), SHIP.as_bytes()).unwrap();
    // The collector never answers.
    log_n(&mut vm, 100);
    vm.advance_clock(Duration::from_millis(2000)).unwrap();
    log_n(&mut vm, 100);
    assert_eq!(vm.http_calls().len(), 1, "max_in_flight");
    let dropped = h.counter("meshguard_accesslog_dropped");
    assert!(dropped > 100, "dropped {dropped}");
    // Per-record counters reach the proxy on the timer.
    assert!(h.counter("meshguard_accesslog_records") < 200);
    vm.advance_clock(Duration::from_millis(1000)).unwrap();
    assert_eq!(h.counter("meshguard_accesslog_records"), 200);
    let gauge = h.metric("meshguard_accesslog_buffer_bytes");
    assert!(format!("{gauge:?}").contains("Gauge"), "{gauge:?}");
    assert!(vm.failure().is_none());
}

#[test]
fn bad_configs_refuse_to_start_in_wasm_with_json_path() {
    let h = Harness::new();
    let m = module(&h);
    for (config, want) in [
        (r#"{"tagz":{}}"#, "at $.tagz: unknown field `tagz`"),
        (
            r#"{"sampling":{"success_rate":2}}"#,
            "at $.sampling.success_rate: not a share",
        ),
        (
            r#"{"ship":{"cluster":""}}"#,
            "at $.ship.cluster: expected an Envoy cluster name",
        ),
        ("[", "at $: config is"),
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
fn hostile_header_bytes_give_one_valid_line_each() {
    let h = Harness::new();
    let mut vm = h
        .configured_vm(&module(&h), br#"{"headers":{"request":["x-h"]}}"#)
        .unwrap();
    for value in [
        vec![0xff, 0xfe],
        vec![0x80; 300],
        b"\"\\;=}{".to_vec(),
        "\u{2028}\u{2029}".as_bytes().to_vec(),
        vec![0x01, 0x1f, 0x7f],
        vec![b'a'; 70_000],
    ] {
        let request = Headers::from_bytes(&[
            (b":path".as_slice(), b"/".as_slice()),
            (b"x-h".as_slice(), value.as_slice()),
            (b"user-agent".as_slice(), value.as_slice()),
        ]);
        let lines = exchange(
            &mut vm,
            request,
            Headers::from_pairs(&[(":status", "200")]),
            &ok_status(),
        );
        assert_eq!(lines.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let want = String::from_utf8_lossy(&value).into_owned();
        assert_eq!(v["user_agent"].as_str(), Some(want.as_str()));
        assert_eq!(v["request_headers"]["x-h"].as_str(), Some(want.as_str()));
    }
    assert!(vm.failure().is_none());
}
