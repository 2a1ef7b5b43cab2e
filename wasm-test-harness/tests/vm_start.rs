//! VM start as Envoy runs it: while `_initialize` (then `main` /
//! `__main_void`) or `_start` runs, and while the guest allocator runs for
//! the host, only some imports may be called; any other traps with
//! `restricted_callback` (proxy-wasm-cpp-host `WasmBase::startVm`,
//! `WasmBase::allocMemory`). Checked against Envoy in
//! `tests/tests/envoy_vs_harness.rs`.

mod common;

use wasm_test_harness::{Error, Harness, LogLevel, Module};

/// A minimal proxy-wasm module whose `_initialize` runs `init`; `extra`
/// adds exports. Its `on_configure` reads the log level (allowed there)
/// and its `on_vm_start` reads the VM configuration (which allocates).
fn module(h: &Harness, name: &str, init: &str, extra: &str) -> Module {
    let wat = format!(
        r#"(module
        (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
        (import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))
        (import "env" "proxy_get_buffer_bytes"
            (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "random_get"
            (func $random_get (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "clock_time_get"
            (func $clock_time_get (param i32 i64 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 0) "\10\00\00\00\08\00\00\00")
        (data (i32.const 16) "started\0a")
        (func (export "proxy_abi_version_0_2_1"))
        (func $malloc (export "malloc") (param i32) (result i32) i32.const 1024)
        (func (export "proxy_on_context_create") (param i32 i32))
        (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
            (drop (call $buffer (i32.const 6) (i32.const 0) (local.get 1)
                (i32.const 200) (i32.const 204)))
            i32.const 1)
        (func (export "proxy_on_configure") (param i32 i32) (result i32)
            (drop (call $level (i32.const 200)))
            i32.const 1)
        (func (export "_initialize") {init})
        {extra})"#
    );
    h.module_from_bytes(wat.as_bytes(), name).unwrap()
}

fn refused(err: &Error, callback: &str, import: &str) -> bool {
    matches!(err, Error::Trap { callback: c, message }
        if c == callback
            && message.contains("restricted_callback")
            && message.contains(&format!("`{import}`")))
}

#[test]
fn proxy_call_in_initialize_fails_start_like_envoy() {
    let h = Harness::new();
    let m = module(
        &h,
        "init-log-level.wat",
        "(drop (call $level (i32.const 200)))",
        "",
    );
    let err = h.vm(&m).start().err().expect("start must fail");
    assert!(
        refused(&err, "_initialize", "env.proxy_get_log_level"),
        "{err}"
    );
    assert!(
        err.to_string().contains("guest trapped in _initialize"),
        "{err}"
    );
}

#[test]
fn logging_and_wasi_in_initialize_are_allowed() {
    let init = r#"
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))
        (drop (call $random_get (i32.const 104) (i32.const 8)))
        (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 112)))
        (drop (call $log (i32.const 2) (i32.const 16) (i32.const 7)))"#;
    let h = Harness::new();
    let m = module(&h, "init-wasi.wat", init, "");
    let mut vm = h.vm(&m).vm_configuration(b"cfg").start().unwrap();
    assert_eq!(vm.stdout(), "started\n");
    assert_eq!(vm.logs_at(LogLevel::Info), vec!["started"]);
    // The restriction ends with start: on_vm_start allocated, on_configure
    // reads the log level.
    assert!(vm.configure(b"").unwrap());
    assert!(vm.failure().is_none());
}

#[test]
fn main_after_initialize_and_start_are_restricted_too() {
    let h = Harness::new();
    let level = "(drop (call $level (i32.const 200)))";
    let main =
        format!(r#"(func (export "main") (param i32 i32) (result i32) {level} i32.const 0)"#);
    let m = module(&h, "init-main.wat", "", &main);
    let err = h.vm(&m).start().err().expect("main is restricted");
    assert!(refused(&err, "main", "env.proxy_get_log_level"), "{err}");

    // A WASI command: `_start` instead of `_initialize`.
    let wat = r#"(module
        (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "malloc") (param i32) (result i32) i32.const 1024)
        (func (export "_start") (drop (call $tick (i32.const 1000)))))"#;
    let m = h.module_from_bytes(wat.as_bytes(), "start.wat").unwrap();
    let err = h.vm(&m).start().err().expect("_start is restricted");
    assert!(
        refused(&err, "_start", "env.proxy_set_tick_period_milliseconds"),
        "{err}"
    );
}

#[test]
fn guest_allocator_may_only_log() {
    let h = Harness::new();
    // The allocator asks for the log level; the host calls it to hand
    // on_vm_start the VM configuration.
    let wat = r#"(module
        (import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))
        (import "env" "proxy_get_buffer_bytes"
            (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "malloc") (param i32) (result i32)
            (drop (call $level (i32.const 200)))
            i32.const 1024)
        (func (export "proxy_on_context_create") (param i32 i32))
        (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
            (drop (call $buffer (i32.const 6) (i32.const 0) (local.get 1)
                (i32.const 200) (i32.const 204)))
            i32.const 1))"#;
    let m = h.module_from_bytes(wat.as_bytes(), "alloc.wat").unwrap();
    let err = h
        .vm(&m)
        .vm_configuration(b"cfg")
        .start()
        .err()
        .expect("the allocator is restricted");
    assert!(
        refused(&err, "proxy_on_vm_start", "env.proxy_get_log_level"),
        "{err}"
    );
    // Without data to hand over there is no allocation: it starts.
    assert!(h.vm(&m).start().is_ok());
}

/// Every fixture still starts under the restriction: those in
/// target/fixtures/ (noop is built if stale, the others by `make
/// build-fixtures`). The probe (tests/abi.rs) and dist/ab-routing.wasm
/// (meshguard-ab-routing's harness cases) start in their own suites; not
/// compiled again here, as debug-built wasmtime takes seconds per module.
#[test]
fn every_other_fixture_starts() {
    let h = Harness::new();
    common::fixtures::fixture("noop-filter");
    let dir = common::repo_root().join("target/fixtures");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let covered = path.file_stem().is_some_and(|s| s == "harness-probe");
        if covered || path.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        let m = h.module(&path).unwrap();
        if let Err(e) = h.vm(&m).start() {
            panic!("{} does not start: {e}", path.display());
        }
    }
}
