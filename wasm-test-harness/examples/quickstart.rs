//! The README's example, runnable: `make build && cargo run -p wasm-test-harness --example quickstart`.

use std::time::Duration;

use wasm_test_harness::{Action, Harness, Headers, LogLevel};

fn main() -> Result<(), wasm_test_harness::Error> {
    // One harness = one simulated Envoy process (shared data, stats, clock).
    let harness = Harness::builder().seed(7).build();
    let module = harness.module("dist/ab-routing.wasm")?; // compiled once per process

    // One VM = one worker. configure() runs on_configure and returns its verdict.
    let mut vm = harness.vm(&module).vm_id("meshguard").start()?;
    let config = r#"{"experiments": [{"name": "checkout",
        "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}],
        "sticky_key": [{"header": "x-user-id"}, "visitor_cookie"]}]}"#;
    assert!(vm.configure(config)?);

    // Drive one request the way Envoy would.
    let mut http = vm.new_http()?;
    let action = http.request_headers(
        [
            (":path", "/checkout"),
            (":authority", "shop"),
            ("x-user-id", "bob"),
            ("x-ab-variant", "forged"),
        ],
        true,
    )?;
    assert_eq!(action, Action::Continue);
    println!(
        "upstream sees x-ab-variant: {:?}",
        http.request_header("x-ab-variant")
    );
    http.response_headers(Headers::from([(":status", "200")]), true)?;
    http.finish()?; // on_log, on_done, on_delete

    // A bad config is refused, and the log says where the mistake is.
    let mut bad = harness.vm(&module).start()?;
    assert!(!bad.configure(r#"{"experiments": [{"name": "x", "wieght": 1}]}"#)?);
    println!("refused: {:?}", bad.logs_at(LogLevel::Error));

    // Metrics are process-wide, by name.
    println!(
        "treatment count: {}",
        harness.counter("meshguard_ab_assigned.checkout.treatment")
    );

    // The clock belongs to the test: ticks and callout timeouts fire when it moves.
    vm.advance_clock(Duration::from_secs(60))?;
    Ok(())
}
