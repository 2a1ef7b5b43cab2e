//! ab-routing: gives each request a variant header (sticky by user, cookie or
//! a generated visitor id, weighted) so Istio VirtualService header matches
//! can route it to a subset.
//!
//! Plain Rust, no proxy-wasm: `config` (the schema), `assign` and `router`
//! (the decision), `stage` (the decision as a meshguard stage). The wasm
//! module is `wasm/` (one line: `meshguard_shell::module!(AbRouting)`).

pub mod assign;
pub mod config;
pub mod router;
pub mod stage;

pub use config::AbRoutingConfig;
pub use router::{Decision, Router};
pub use stage::AbRouting;
