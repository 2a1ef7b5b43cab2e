//! authn: JWT authentication for Envoy/Istio as a meshguard stage.
//!
//! - [`config`]: the pluginConfig schema and its validation.
//! - [`jwt`]: strict compact-JWS parsing and claim checks (plain Rust).
//! - [`keys`]: JWKS documents to verifying keys (`meshguard-authn-crypto`).
//! - [`jwks`]: fetched key sets in shared data, one fetch at a time.
//! - [`cache`]: verified tokens in shared data, bounded, keyed by a secret.
//! - [`stage`]: the [`Authn`] stage: rules, token sources, outputs.

pub mod cache;
pub mod config;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod msgsig;
pub mod sf;
pub mod stage;

pub use config::AuthnConfig;
pub use stage::Authn;
