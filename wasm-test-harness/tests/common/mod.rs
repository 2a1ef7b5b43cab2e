#![allow(dead_code)]

pub mod fixtures;

use std::path::PathBuf;

use wasm_test_harness::{Harness, Module};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The probe fixture (built on first use if missing or stale), or the
/// module `$HARNESS_PROBE_WASM` names.
pub fn probe(h: &Harness) -> Module {
    let path = std::env::var_os("HARNESS_PROBE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures::fixture("harness-probe"));
    h.module(&path).unwrap()
}

pub fn ab_routing(h: &Harness) -> Module {
    let path = repo_root().join("dist/ab-routing.wasm");
    assert!(
        path.exists(),
        "{} missing: run `make build`",
        path.display()
    );
    h.module(&path).unwrap()
}

pub fn req(op: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), "/probe?x=1".to_string()),
        (":authority".to_string(), "probe.local".to_string()),
        ("x-probe".to_string(), op.to_string()),
    ];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}
