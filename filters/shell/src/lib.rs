//! The one proxy-wasm shell. It runs a [`meshguard_stage::Chain`] (one stage,
//! or several in one VM) inside Envoy: builds it in `on_configure` (a bad
//! config refuses to load and logs the JSON path of the mistake), drives the
//! per-stream [`meshguard_stage::pipeline::Stream`] from the proxy's
//! callbacks, applies edits and metrics, fails closed (503) if a stream ever
//! runs unconfigured, and forwards the `log` facade to the proxy's log at
//! the proxy's level.
//!
//! It speaks the proxy-wasm ABI 0.2.1 itself (the host calls are in
//! `meshguard_common::host`): no SDK dispatcher, and only the callbacks
//! meshguard handles are exported, so Envoy skips the others.
//!
//! A filter's wasm module is one line:
//!
//! ```text
//! meshguard_shell::module!(meshguard_ab_routing::AbRouting);
//! // or a chain in one VM:
//! meshguard_shell::module!(StageA, StageB);
//! ```

mod alloc;
#[cfg(target_arch = "wasm32")]
mod proxy;
#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use wasm::{allocate, install, install_log_only, install_no_log, Shell};

#[doc(hidden)]
pub use alloc::SizeClasses;

/// Defines the module's exports (`_initialize`, the proxy-wasm callbacks)
/// running these stages, in order, as one chain. Use it once, in a cdylib
/// crate.
///
/// `module!(no_log; Stage…)` leaves out `proxy_on_log`, so Envoy makes one
/// call into the VM fewer per request, for chains without a log hook (the
/// module refuses a config whose stages need one).
///
/// `module!(log_only; Stage…)` leaves out the request and response
/// callbacks (headers, body, trailers), so Envoy calls into the VM only to
/// create the stream, log it and delete it, for chains whose stages all
/// work in the log phase ([`meshguard_stage::Needs::log_only`]; the module
/// refuses any other config).
#[macro_export]
macro_rules! module {
    (@log) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_log(id: u32) {
            with((), |s| s.on_log(id))
        }
    };
    (@request) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_request_headers(id: u32, _n: usize, eos: bool) -> u32 {
            with(0, |s| s.on_request_headers(id, eos))
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_request_body(id: u32, size: usize, eos: bool) -> u32 {
            with(0, |s| s.on_request_body(id, size, eos))
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_request_trailers(id: u32, _n: usize) -> u32 {
            with(0, |s| s.on_request_trailers(id))
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_response_headers(id: u32, _n: usize, _eos: bool) -> u32 {
            with(0, |s| s.on_response_headers(id))
        }
    };
    (no_log; $($stage:ty),+ $(,)?) => {
        $crate::module!(@build [install_no_log] [] [$crate::module!{@request}] $($stage),+);
    };
    (log_only; $($stage:ty),+ $(,)?) => {
        $crate::module!(@build [install_log_only] [$crate::module!{@log}] [] $($stage),+);
    };
    ($($stage:ty),+ $(,)?) => {
        $crate::module!(@build [install] [$crate::module!{@log}] [$crate::module!{@request}] $($stage),+);
    };
    (@build [$install:ident] [$($log:tt)*] [$($request:tt)*] $($stage:ty),+) => {
        #[cfg(target_arch = "wasm32")]
        mod meshguard_module {
            #[allow(unused_imports)]
            use super::*;
            type C = ($($stage,)+);

            /// Size-class free lists over dlmalloc (`meshguard_shell::alloc`).
            #[global_allocator]
            static ALLOC: $crate::SizeClasses = $crate::SizeClasses::new();

            ::std::thread_local! {
                static SHELL: ::std::cell::RefCell<$crate::Shell<C>> =
                    ::std::cell::RefCell::new(<$crate::Shell<C> as ::std::default::Default>::default());
            }

            /// Runs `f` on the shell; `or` if a callback ever re-entered.
            fn with<T>(or: T, f: impl FnOnce(&mut $crate::Shell<C>) -> T) -> T {
                SHELL.with(|s| match s.try_borrow_mut() {
                    Ok(mut s) => f(&mut s),
                    Err(_) => or,
                })
            }

            extern "C" {
                fn __wasm_call_ctors();
            }

            #[no_mangle]
            pub extern "C" fn _initialize() {
                // SAFETY: the reactor's constructors, run once, first.
                unsafe { __wasm_call_ctors() };
                $crate::$install();
            }

            #[no_mangle]
            pub extern "C" fn proxy_abi_version_0_2_1() {}

            #[no_mangle]
            pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
                $crate::allocate(size)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_context_create(id: u32, root_id: u32) {
                with((), |s| s.on_context_create(id, root_id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_vm_start(_id: u32, _size: usize) -> bool {
                true
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_configure(id: u32, size: usize) -> bool {
                with(false, |s| s.on_configure(id, size))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_tick(id: u32) {
                with((), |s| s.on_tick(id))
            }

            $($request)*

            $($log)*

            #[no_mangle]
            pub extern "C" fn proxy_on_delete(id: u32) {
                with((), |s| s.on_delete(id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_http_call_response(
                _root_id: u32,
                token: u32,
                headers: usize,
                body: usize,
                _trailers: usize,
            ) {
                with((), |s| s.on_http_call_response(token, headers, body))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_grpc_receive(_root_id: u32, token: u32, size: usize) {
                with((), |s| s.on_grpc_response(token, 0, size))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_grpc_close(_root_id: u32, token: u32, status: u32) {
                with((), |s| s.on_grpc_response(token, status, 0))
            }
        }
    };
}
