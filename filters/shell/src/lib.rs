//! The one proxy-wasm shell. It runs a [`meshguard_stage::Chain`] (one stage,
//! or several in one VM) inside Envoy: builds it in `on_configure` (a bad
//! config refuses to load and logs the JSON path of the mistake), drives the
//! per-stream [`meshguard_stage::pipeline::Stream`] from the proxy's
//! callbacks, applies edits and metrics, fails closed (503) if a stream ever
//! runs unconfigured, and forwards the `log` facade to the proxy's log at
//! the proxy's level.
//!
//! A filter's wasm module is one line:
//!
//! ```text
//! meshguard_shell::module!(meshguard_ab_routing::AbRouting);
//! // or a chain in one VM:
//! meshguard_shell::module!(StageA, StageB);
//! ```

#[cfg(target_arch = "wasm32")]
mod proxy;
#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(target_arch = "wasm32")]
pub use wasm::install;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use proxy_wasm;

/// Defines the module's entry point (`_initialize`) running these stages,
/// in order, as one chain. Use it once, in a cdylib crate.
#[macro_export]
macro_rules! module {
    ($($stage:ty),+ $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        $crate::proxy_wasm::main! {{
            $crate::install::<($($stage,)+)>();
        }}
    };
}
