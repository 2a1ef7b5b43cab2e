//! A module exports only the callbacks its build asks for (Envoy skips a
//! callback a module does not export), so a stage in a module built without
//! the callbacks it needs would silently never run. The shell refuses such
//! a config instead: checked here on the compiled modules, each beside the
//! shipped module that accepts the same config.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../wasm-test-harness/tests/common/fixtures.rs"]
mod fixtures;

use meshguard_e2e::fuel::{AB_BENCH_CONFIG, AL_BENCH_CONFIG};
use wasm_test_harness::{Error, Harness};

fn refused(module: &str, config: &str) -> String {
    let h = Harness::builder().build();
    let m = h.module(fixtures::fixture(module)).unwrap();
    match h.configured_vm(&m, config.as_bytes()) {
        Err(Error::Refused(logs)) => logs,
        Err(e) => panic!("{module}: expected the config refused, got {e}"),
        Ok(_) => panic!("{module}: a stage that would never run was configured"),
    }
}

fn accepted(module: &str, config: &str) {
    let h = Harness::builder().build();
    let m = h.module(fixtures::fixture(module)).unwrap();
    if let Err(e) = h.configured_vm(&m, config.as_bytes()) {
        panic!("{module}: the shipped module refused the config: {e}");
    }
}

#[test]
fn a_stage_needing_the_log_hook_is_refused_in_a_module_without_it() {
    let logs = refused("meshguard-no-log-fixture", AL_BENCH_CONFIG);
    assert!(
        logs.contains("needs the log hook") && logs.contains("module!(no_log"),
        "the refusal says why: {logs}"
    );
    // The shipped accesslog module (log callbacks exported) takes it.
    accepted("meshguard-accesslog-wasm", AL_BENCH_CONFIG);
}

#[test]
fn a_request_stage_is_refused_in_a_log_only_module() {
    let logs = refused("meshguard-log-only-fixture", AB_BENCH_CONFIG);
    assert!(
        logs.contains("works on requests or responses") && logs.contains("module!(log_only"),
        "the refusal says why: {logs}"
    );
    accepted("meshguard-ab-routing-wasm", AB_BENCH_CONFIG);
}
