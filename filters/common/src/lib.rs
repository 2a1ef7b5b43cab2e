//! Shared building blocks for meshguard filters.
//!
//! Nothing in here touches proxy-wasm except the `host` module (wasm32 only):
//! every other function is plain Rust so the filters' decision logic can be
//! unit-tested natively and reused by the CLI.

pub mod config;
pub mod contract;
pub mod hash;
pub mod headers;
#[cfg(target_arch = "wasm32")]
pub mod host;
pub mod metrics;
pub mod num;
pub mod path;

pub use config::{parse_config, ConfigError};
