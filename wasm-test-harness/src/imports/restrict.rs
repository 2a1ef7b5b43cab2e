//! Host calls Envoy refuses while the host, not a callback, is running
//! guest code. proxy-wasm-cpp-host (which Envoy 1.40 embeds) marks those
//! windows with `WasmVm::setRestrictedCallback` and every host function
//! first asks `isHostFunctionAllowed("module.name")`; a refused call traps
//! with the bare message `restricted_callback` (src/v8/v8.cc), so the VM
//! call fails and, at start, Envoy reports "Failed to initialize Wasm code".
//!
//! - VM start (`WasmBase::startVm`, src/wasm.cc): `_initialize` and then
//!   `main`/`__main_void` (WASI reactor), or `_start` (WASI command). Only
//!   `env.proxy_log`, `env.emscripten_notify_memory_growth` and the WASI
//!   calls below are allowed: no other `proxy_*` import.
//! - Guest allocation (`WasmBase::allocMemory`, include/proxy-wasm/wasm.h):
//!   while `malloc`/`proxy_on_memory_allocate` runs for the host, only
//!   `env.proxy_log`, `fd_write`, `clock_time_get` and `poll_oneoff`.

use super::memory::C;

/// A window in which only some imports may be called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// `_initialize` (+ `main` / `__main_void`) or `_start`.
    Start,
    /// The guest allocator, called by the host to hand the guest data.
    Alloc,
}

/// WASI calls allowed during VM start, under both `wasi_unstable` and
/// `wasi_snapshot_preview1` (cpp-host `WasmBase::startVm`).
const START_WASI: &[&str] = &[
    "fd_write",
    "args_sizes_get",
    "args_get",
    "environ_sizes_get",
    "environ_get",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    // Go runtime initialisation.
    "poll_oneoff",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    // "Should not" be called, allowed for compilers' global initialisers.
    "fd_advise",
    "fd_allocate",
    "fd_datasync",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_dir_name",
    "fd_prestat_get",
    "fd_pwrite",
    "fd_readdir",
    "fd_renumber",
    "fd_sync",
    "fd_tell",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

const START_ENV: &[&str] = &["proxy_log", "emscripten_notify_memory_growth"];

/// cpp-host `WasmBase::allocMemory`.
const ALLOC_WASI: &[&str] = &["fd_write", "clock_time_get", "poll_oneoff"];
const ALLOC_ENV: &[&str] = &["proxy_log"];

impl Window {
    pub(crate) fn allows(self, module: &str, name: &str) -> bool {
        let (env, wasi) = match self {
            Window::Start => (START_ENV, START_WASI),
            Window::Alloc => (ALLOC_ENV, ALLOC_WASI),
        };
        match module {
            "env" => env.contains(&name),
            "wasi_snapshot_preview1" | "wasi_unstable" => wasi.contains(&name),
            _ => false,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Window::Start => {
                "while the VM starts (_initialize/_start); Envoy allows only \
                 proxy_log and WASI calls there"
            }
            Window::Alloc => {
                "from the guest allocator called by the host; Envoy allows only \
                 proxy_log, fd_write, clock_time_get and poll_oneoff there"
            }
        }
    }

    /// The trap for a refused call: Envoy's message, then which import.
    pub(crate) fn refuse(self, module: &str, name: &str) -> wasmtime::Error {
        wasmtime::Error::msg(format!(
            "restricted_callback: the guest called `{module}.{name}` {}",
            self.describe()
        ))
    }
}

/// Run first by every host function (`host_fn!`): counts the call
/// (`Vm::crossings`), then [`check`].
#[inline]
pub(super) fn count_and_check(
    c: &C<'_>,
    module: &'static str,
    name: &'static str,
) -> wasmtime::Result<()> {
    // Only `Vm::crossings` borrows it otherwise, never while guest code
    // runs, so the borrow always succeeds.
    if let Ok(mut n) = c.data().crossings.try_borrow_mut() {
        n.count_import(module, name);
    }
    crate::crossings::trace(format_args!("{name}"), || c.get_fuel().unwrap_or(0));
    check(c, module, name)
}

/// One load and a branch outside a restricted window.
#[inline]
pub(super) fn check(c: &C<'_>, module: &str, name: &str) -> wasmtime::Result<()> {
    match c.data().restricted {
        Some(w) if !w.allows(module, name) => Err(w.refuse(module, name)),
        _ => Ok(()),
    }
}

/// `host_fn!(l.func_wrap(module, name, closure))`: `func_wrap` with
/// [`count_and_check`] run before the closure's body. The closure is written as for
/// `func_wrap`, with an explicit return type.
macro_rules! host_fn {
    ($l:ident.func_wrap($m:expr, $n:expr,
     |mut $c:ident: $ct:ty $(, $a:ident: $at:ty)* $(,)?| -> $r:ty $body:block $(,)?)) => {
        $l.func_wrap($m, $n, move |mut $c: $ct $(, $a: $at)*| -> $r {
            $crate::imports::restrict::count_and_check(&$c, $m, $n)?;
            $body
        })
    };
    ($l:ident.func_wrap($m:expr, $n:expr,
     |$c:ident: $ct:ty $(, $a:ident: $at:ty)* $(,)?| -> $r:ty $body:block $(,)?)) => {
        $l.func_wrap($m, $n, move |$c: $ct $(, $a: $at)*| -> $r {
            $crate::imports::restrict::count_and_check(&$c, $m, $n)?;
            $body
        })
    };
}
pub(super) use host_fn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_allows_logging_and_wasi_only() {
        let w = Window::Start;
        assert!(w.allows("env", "proxy_log"));
        assert!(w.allows("wasi_snapshot_preview1", "fd_write"));
        assert!(w.allows("wasi_unstable", "random_get"));
        assert!(w.allows("wasi_snapshot_preview1", "environ_get"));
        assert!(!w.allows("env", "proxy_get_log_level"));
        assert!(!w.allows("env", "proxy_get_property"));
        assert!(!w.allows("wasi_snapshot_preview1", "proc_exit"));
        assert!(!w.allows("wasi_snapshot_preview1", "sched_yield"));
        assert!(!w.allows("other", "fd_write"));
        // cpp-host's list: 39 WASI names under two module names, 2 env.
        assert_eq!(START_WASI.len(), 39);
        let alloc = Window::Alloc;
        assert!(alloc.allows("env", "proxy_log"));
        assert!(alloc.allows("wasi_snapshot_preview1", "clock_time_get"));
        assert!(!alloc.allows("wasi_snapshot_preview1", "random_get"));
        let msg = w.refuse("env", "proxy_get_log_level").to_string();
        assert!(msg.starts_with("restricted_callback: "), "{msg}");
        assert!(msg.contains("`env.proxy_get_log_level`"), "{msg}");
    }
}
