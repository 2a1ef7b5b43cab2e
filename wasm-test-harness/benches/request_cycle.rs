//! Cost of one full request cycle in wasm-test-harness (context create →
//! request headers → response headers → log → done → delete):
//! wall-clock median/p99 per cycle, and guest instructions per cycle from
//! wasmtime fuel (noise-free, comparable across machines and runs).
//!
//!     cargo bench -p wasm-test-harness --bench request_cycle
//!
//! Needs `make build build-fixtures`. Prints a markdown table (used by `make bench`).

use std::path::PathBuf;
use std::time::Instant;

use wasm_test_harness::{Harness, Headers, Module, Vm};

const AB_CONFIG: &str = r#"{"experiments":[{"name":"checkout","variants":[{"name":"control","weight":50},{"name":"treatment","weight":50}],"sticky_key":[{"header":"x-user-id"},"visitor_cookie"]}]}"#;

/// A module that does nothing in every callback: the harness's own cost.
const EMPTY_FILTER: &str = r#"(module
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32)
    (local $p i32) (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get 0))) (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))"#;

fn request() -> Headers {
    Headers::from_pairs(&[
        (":authority", "shop.example.com"),
        (":path", "/checkout"),
        (":method", "GET"),
        (":scheme", "http"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
        ("x-user-id", "user-42"),
        ("x-ab-variant", "forged"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "4a4f2c1e-9d6b-4b1f-8f0e-6f4d3c2b1a00"),
    ])
}

fn cycle(vm: &mut Vm, req: &Headers, resp: &Headers) {
    let mut http = vm.new_http().expect("context");
    http.request_headers(req.clone(), true)
        .expect("request headers");
    http.response_headers(resp.clone(), true)
        .expect("response headers");
    http.finish().expect("finish");
}

struct Result {
    name: &'static str,
    median_us: f64,
    p99_us: f64,
    fuel: u64,
}

fn measure(name: &'static str, load: impl Fn(&Harness) -> Module, config: &[u8]) -> Result {
    let req = request();
    let resp = Headers::from_pairs(&[(":status", "200"), ("content-length", "3")]);

    let h = Harness::new();
    let m = load(&h);
    let mut vm = h.configured_vm(&m, config).expect("configure");
    for _ in 0..5_000 {
        cycle(&mut vm, &req, &resp);
    }
    let mut samples = Vec::with_capacity(50_000);
    for _ in 0..50_000 {
        let t = Instant::now();
        cycle(&mut vm, &req, &resp);
        samples.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let median_us = samples[samples.len() / 2];
    let p99_us = samples[samples.len() * 99 / 100];

    let hf = Harness::builder().fuel(true).build();
    let mf = load(&hf);
    let mut vmf = hf.configured_vm(&mf, config).expect("configure");
    cycle(&mut vmf, &req, &resp);
    let before = vmf.fuel_consumed();
    const N: u64 = 100;
    for _ in 0..N {
        cycle(&mut vmf, &req, &resp);
    }
    let fuel = (vmf.fuel_consumed() - before) / N;
    Result {
        name,
        median_us,
        p99_us,
        fuel,
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let ab = root.join("dist/ab-routing.wasm");
    if !ab.exists() {
        eprintln!("{} missing: run `make build`", ab.display());
        std::process::exit(1);
    }
    let noop = root.join("target/fixtures/noop-filter.wasm");
    if !noop.exists() {
        eprintln!("{} missing: run `make build-fixtures`", noop.display());
        std::process::exit(1);
    }
    let results = [
        measure(
            "empty module (harness overhead)",
            |h| {
                h.module_from_bytes(EMPTY_FILTER.as_bytes(), "empty")
                    .expect("wat")
            },
            b"",
        ),
        measure(
            "no-op filter (Rust proxy-wasm SDK)",
            |h| h.module(&noop).expect("module"),
            b"",
        ),
        measure(
            "meshguard ab-routing",
            |h| h.module(&ab).expect("module"),
            AB_CONFIG.as_bytes(),
        ),
    ];
    println!("| module | median µs/cycle | p99 µs/cycle | guest instructions/cycle (fuel) |");
    println!("|---|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.2} | {:.2} | {} |",
            r.name, r.median_us, r.p99_us, r.fuel
        );
    }
}
