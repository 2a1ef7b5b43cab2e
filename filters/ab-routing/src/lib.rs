//! ab-routing: gives each request a variant header (sticky by user, cookie or
//! a generated visitor id, weighted) so Istio VirtualService header matches
//! can route it to a subset.
//!
//! The decision logic (`config`, `assign`, `router`) is plain Rust and knows
//! nothing about proxy-wasm; `filter` is the thin proxy-wasm shell and only
//! exists in the wasm32 build.

pub mod assign;
pub mod config;
pub mod router;

#[cfg(target_arch = "wasm32")]
mod filter;

pub use config::AbRoutingConfig;
pub use router::{Decision, Router};
