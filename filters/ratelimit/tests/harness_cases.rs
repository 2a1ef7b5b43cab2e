//! The same case table as native_cases.rs, run against the compiled
//! `dist/ratelimit.wasm` in wasm-test-harness with the harness's clock;
//! plus what only the VM shows: two VMs (two Envoy workers) on two threads
//! spending one bucket with compare-and-swap, the key count under 50 000
//! clients, refused configs, hostile input.

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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshguard_common::contract::RATE_LIMIT_STATE;
use meshguard_stage::testing::{run_table, Runtime};
use wasm_test_harness::{Action, Harness, Headers, LogLevel, MetricValue, Module, Vm};

use cases::{check, Case, Step};

const VM_ID: &str = "meshguard_ratelimit";

/// The module exactly as `make build` builds it (package
/// meshguard-ratelimit-wasm, profile `wasm-small`), rebuilt by the test when
/// any filter source is newer.
fn module(h: &Harness) -> Module {
    h.module(fixtures::fixture("meshguard-ratelimit-wasm"))
        .unwrap()
}

fn vm(h: &Harness, config: &str) -> Vm {
    let mut vm = h.vm(&module(h)).vm_id(VM_ID).start().unwrap();
    assert!(
        vm.configure(config.as_bytes()).unwrap(),
        "{}",
        vm.log_text()
    );
    vm
}

/// One request: (status, response headers, filter state).
fn send(
    vm: &mut Vm,
    request: Headers,
    source: &str,
) -> (u16, Vec<(String, String)>, Option<String>) {
    let mut http = vm.new_http().unwrap();
    http.set_property(&["source", "address"], source.as_bytes().to_vec())
        .unwrap();
    let action = http.request_headers(request, true).unwrap();
    let state = http
        .filter_state(&[RATE_LIMIT_STATE])
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let out = if action == Action::Pause {
        let r = http.local_response().expect("paused without a local reply");
        (r.status as u16, r.headers.pairs(), state)
    } else {
        http.response_headers([(":status", "200")], true).unwrap();
        (200, http.response_headers_map().pairs(), state)
    };
    http.finish().unwrap();
    out
}

struct InHarness;

impl Runtime<Case> for InHarness {
    fn runtime_name(&self) -> &str {
        "harness"
    }

    fn run_case(&mut self, case: &Case) -> Vec<String> {
        let h = Harness::new();
        let mut vm = vm(&h, case.config);
        let mut problems = Vec::new();
        for (i, step) in case.steps.iter().enumerate() {
            let (n, headers, source, want) = match step {
                Step::Wait(ms) => {
                    vm.advance_clock(Duration::from_millis(*ms)).unwrap();
                    continue;
                }
                Step::Send(h, s, w) => (1, *h, *s, w),
                Step::Repeat(n, h, s, w) => (*n, *h, *s, w),
            };
            for k in 0..n {
                let (status, got, state) = send(&mut vm, Headers::from_pairs(headers), source);
                for p in check(want, status, &got, state.as_deref()) {
                    problems.push(format!("step {i} (#{k}): {p}"));
                }
            }
        }
        if let Some(f) = vm.failure() {
            problems.push(format!("VM failed: {f}"));
        }
        problems
    }
}

#[test]
fn case_table_in_wasm() {
    run_table(&mut InHarness, cases::CASES);
}

fn gauge(h: &Harness, name: &str) -> i64 {
    match h.metric(name) {
        Some(MetricValue::Gauge(v)) => v,
        other => panic!("{name}: {other:?}"),
    }
}

/// Two VMs with one vm_id (two Envoy workers) on two threads hammer one
/// key while the clock moves: every token is spent exactly once. Admitted
/// equals burst + rate × elapsed (whole tokens): not one more (no lost
/// update), not one fewer (no token wasted).
#[test]
fn two_vms_on_two_threads_share_one_bucket_exactly() {
    const BURST: u64 = 50;
    const RATE: u64 = 100; // per second
    let config = format!(
        r#"{{"rules": [{{"name": "one", "key": ["header"], "limit": {{"requests": {RATE}, "per": "second", "burst": {BURST}}}}}]}}"#
    );
    let h = Harness::new();
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    const STEPS: u64 = 200;
    const STEP_MS: u64 = 7;
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let mut vm = vm(&h, &config);
            let h = h.clone();
            let (admitted, refused) = (Arc::clone(&admitted), Arc::clone(&refused));
            std::thread::spawn(move || {
                for step in 0..STEPS {
                    // Thread 0 moves the shared clock; both keep sending.
                    if t == 0 {
                        h.advance_clock(Duration::from_millis(STEP_MS));
                    }
                    for _ in 0..3 {
                        let (status, _, _) = send(
                            &mut vm,
                            Headers::from_pairs(&[(":path", "/"), ("x-user-id", "hot")]),
                            "10.0.0.1:1",
                        );
                        match status {
                            200 => admitted.fetch_add(1, Ordering::Relaxed),
                            429 => refused.fetch_add(1, Ordering::Relaxed),
                            other => panic!("status {other} at step {step}"),
                        };
                    }
                }
                assert!(vm.failure().is_none());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The last requests of thread 1 may run after thread 0's last advance:
    // the bound uses the whole elapsed time; and after that time every
    // token has been claimed (both threads keep asking after each step).
    let elapsed_ms = STEPS * STEP_MS;
    let allowed = BURST + RATE * elapsed_ms / 1000;
    let admitted = admitted.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    println!("two VMs: admitted {admitted}, allowed {allowed}, refused {refused}");
    assert!(
        admitted <= allowed,
        "over-admission: {admitted} > {allowed}"
    );
    assert!(
        admitted + RATE * STEP_MS * 2 / 1000 + 1 >= allowed,
        "tokens lost: {admitted} of {allowed}"
    );
    assert!(refused > 0);
    assert_eq!(admitted + refused, 2 * STEPS * 3);
}

/// `worker_batch`: a worker takes up to 32 tokens at once from the shared
/// bucket and spends them without touching shared data. With the clock
/// standing still the two VMs together admit exactly the burst, and tokens
/// one VM holds go back to the shared bucket on its tick, where the other
/// VM finds them. (While time passes, held tokens may be spent after the
/// bucket refilled behind them: the documented short-window excess.)
#[test]
fn token_batches_spend_exactly_the_burst_and_unspent_tokens_go_back() {
    let config = r#"{"worker_batch": 32, "rules": [{"name": "one", "key": ["header"], "limit": {"requests": 1, "per": "hour", "burst": 1000}}]}"#;
    let h = Harness::new();
    let mut a = vm(&h, config);
    let mut b = vm(&h, config);
    let hot = || Headers::from_pairs(&[(":path", "/"), ("x-user-id", "hot")]);
    let until_refused = |vm: &mut Vm| {
        let mut n = 0u64;
        while send(vm, hot(), "10.0.0.1:1").0 == 200 {
            n += 1;
            assert!(n <= 1000, "over-admission");
        }
        n
    };
    // A takes 32 and spends one; B gets what is left in shared data.
    assert_eq!(send(&mut a, hot(), "10.0.0.1:1").0, 200);
    let by_b = until_refused(&mut b);
    assert_eq!(by_b, 1000 - 32);
    // A spends what it holds, then is refused too: exactly the burst.
    let by_a = until_refused(&mut a);
    assert_eq!(1 + by_a + by_b, 1000);
    // Again from a fresh bucket (another key): A holds 31 unspent; on A's
    // tick they go back and B gets them.
    let other = || Headers::from_pairs(&[(":path", "/"), ("x-user-id", "other")]);
    assert_eq!(send(&mut a, other(), "10.0.0.1:1").0, 200);
    let mut by_b = 0;
    while send(&mut b, other(), "10.0.0.1:1").0 == 200 {
        by_b += 1;
    }
    assert_eq!(by_b, 1000 - 32);
    a.advance_clock(Duration::from_secs(1)).unwrap();
    while send(&mut b, other(), "10.0.0.1:1").0 == 200 {
        by_b += 1;
    }
    assert_eq!(1 + by_b, 1000, "A's 31 unspent tokens went back to B");
    assert_eq!(send(&mut a, other(), "10.0.0.1:1").0, 429);
    assert!(a.failure().is_none() && b.failure().is_none());
}

/// Istio gives every WasmPlugin an empty vm_id, so two ratelimit plugins on
/// one proxy share one shared-data space. Each keeps its own buckets (the
/// plugin's name is in the slot key): interleaved, each limit holds.
#[test]
fn two_plugins_in_one_vm_id_keep_their_own_buckets() {
    let h = Harness::new();
    let start = |plugin: &str, requests: u32| {
        let config = format!(
            r#"{{"rules": [{{"name": "r", "key": ["header"], "limit": {{"requests": {requests}, "per": "minute"}}}}]}}"#
        );
        let mut vm = h
            .vm(&module(&h))
            .vm_id("")
            .plugin_name(plugin)
            .start()
            .unwrap();
        assert!(
            vm.configure(config.as_bytes()).unwrap(),
            "{}",
            vm.log_text()
        );
        vm
    };
    let mut strict = start("shop.strict", 2);
    let mut loose = start("shop.loose", 100);
    let req = || Headers::from_pairs(&[(":path", "/"), ("x-user-id", "alice")]);
    let mut strict_statuses = Vec::new();
    for _ in 0..4 {
        strict_statuses.push(send(&mut strict, req(), "10.0.0.1:1").0);
        assert_eq!(send(&mut loose, req(), "10.0.0.1:1").0, 200);
    }
    assert_eq!(strict_statuses, [200, 200, 429, 429]);
    let keys = h.shared_data_keys("");
    assert_eq!(keys.len(), 2, "one slot per plugin: {keys:?}");
}

/// 50 000 distinct clients through the module, 2 000 slots: the shared-data
/// key count stops at 2 000 and stays there; the gauge of live buckets
/// never passes it; the timer empties idle buckets.
#[test]
fn key_count_stays_flat_under_50k_clients_in_wasm() {
    let config = r#"{"rules": [{"name": "ip", "key": ["client_ip"],
        "limit": {"requests": 10, "per": "second", "burst": 10}}], "max_keys": 2000,
        "client_ip": {"trusted_hops": 1}}"#;
    let h = Harness::new();
    let mut vm = vm(&h, config);
    let mut counts = Vec::new();
    let mut admitted = 0u64;
    for i in 0..50_000u32 {
        let xff = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        let (status, _, _) = send(
            &mut vm,
            Headers::from_pairs(&[(":path", "/"), ("x-forwarded-for", &xff)]),
            "127.0.0.1:9",
        );
        assert!(status == 200 || status == 429, "{status}");
        if status == 200 {
            admitted += 1;
        }
        if i % 10_000 == 9_999 {
            counts.push(h.shared_data_keys(VM_ID).len());
            let live = gauge(&h, "meshguard_ratelimit_buckets");
            assert!(live > 0 && live <= 2000, "live buckets {live}");
            vm.advance_clock(Duration::from_millis(100)).unwrap();
        }
    }
    println!("shared-data keys after each 10 000 clients: {counts:?}");
    // The first 10 000 clients leave a few of the 2 000 slots untouched
    // (2 000 × e^-5 ≈ 13); from then on the count is flat at the bound.
    assert!(counts.iter().all(|c| *c <= 2000), "{counts:?}");
    assert_eq!(counts[1..], [2000; 4], "{counts:?}");
    assert!(h.counter("meshguard_ratelimit_evictions") > 40_000);
    // 2 000 buckets of 10 refilling 10/s over the 0.5 s the clock moved:
    // at most 30 000 (colliding keys inherit their slot's tokens).
    println!("admitted {admitted} of 50 000");
    assert!(admitted <= 2000 * 10 + 2000 * 5, "admitted {admitted}");
    assert!(admitted > 15_000, "admitted {admitted}");
    // Idle: after a second every bucket is full again, and two more ticks
    // (1 024 slots each) empty all 2 000.
    vm.advance_clock(Duration::from_secs(3)).unwrap();
    assert_eq!(h.counter("meshguard_ratelimit_allowed.ip"), admitted);
    assert_eq!(gauge(&h, "meshguard_ratelimit_buckets"), 0);
    assert_eq!(h.shared_data_keys(VM_ID).len(), 2000);
    assert!(vm.failure().is_none());
}

#[test]
fn bad_configs_refuse_to_start_in_wasm_with_json_path() {
    let h = Harness::new();
    let m = module(&h);
    for (config, want) in [
        (
            r#"{"rules":[{"name":"r","limit":{"requests":1,"per":"day"}}]}"#,
            "at $.rules[0].limit.per: unknown variant `day`",
        ),
        (
            r#"{"rules":[{"name":"r","limit":{"requests":0,"per":"hour"}}]}"#,
            "at $.rules[0].limit.requests: expected 1 to",
        ),
        (
            r#"{"rules":[{"name":"r","key":[{"header":"a b"}],"limit":{"requests":1,"per":"hour"}}]}"#,
            "at $.rules[0].key[0].header: `a b` is not a valid header name",
        ),
        (
            r#"{"rules":[{"name":"r","limit":{"requests":1,"per":"hour"}}],"max_keys":0}"#,
            "at $.max_keys: expected 1 to",
        ),
        ("", "at $: config is truncated"),
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

/// Spoofed and malformed `x-forwarded-for`, 64 KB values, non-UTF-8 bytes
/// in every header a rule reads: never a trap.
#[test]
fn hostile_header_bytes_never_trap() {
    let config = r#"{"rules": [
        {"name": "ip", "match": {"paths": [{"prefix": "/ip"}]}, "key": ["client_ip"], "limit": {"requests": 1, "per": "hour"}},
        {"name": "all", "key": ["header", "path", {"header": "x-k"}], "limit": {"requests": 100, "per": "hour"}}
    ], "client_ip": {"trusted_hops": 3}}"#;
    let h = Harness::new();
    let mut vm = vm(&h, config);
    let big = vec![b'z'; 64 * 1024];
    for value in [
        big.clone(),
        vec![0xff, 0xfe],
        vec![0x80; 300],
        b"1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4, 5.5.5.5".to_vec(),
        [b"::1,".repeat(10_000), b"[::1]:99".to_vec()].concat(),
        b"\"\\;=,".to_vec(),
    ] {
        for name in ["x-forwarded-for", "x-user-id", "x-k", "host"] {
            let request = Headers::from_bytes(&[
                (b":path".as_slice(), b"/ip/x".as_slice()),
                (name.as_bytes(), value.as_slice()),
            ]);
            let mut http = vm.new_http().unwrap();
            let action = http.request_headers(request, true).unwrap();
            assert!(matches!(action, Action::Continue | Action::Pause));
            http.finish().unwrap();
        }
    }
    // No source address at all: the client_ip rule is skipped.
    for _ in 0..3 {
        let mut http = vm.new_http().unwrap();
        let action = http
            .request_headers(Headers::from_pairs(&[(":path", "/ip")]), true)
            .unwrap();
        assert_eq!(action, Action::Continue);
        http.finish().unwrap();
    }
    assert!(vm.failure().is_none());
    for key in h.shared_data_keys(VM_ID) {
        let (v, _) = h.shared_data(VM_ID, &key).unwrap();
        assert!(v.len() < 400, "{key}: {} bytes", v.len());
    }
}
