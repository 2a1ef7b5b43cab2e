//! accesslog: one JSON object per request with a fixed, versioned field set
//! (`meshguard.access.v1`), written as a log line and optionally shipped in
//! batches to a collector (OTLP/HTTP JSON logs or Elasticsearch `_bulk`).
//!
//! Plain Rust, no proxy-wasm: `config` (the schema), `json` (escaping),
//! `record` (the record from headers, properties and facts), `ship`
//! (batches, bounded buffer, retries), `stage` (all of it as a meshguard
//! stage). The wasm module is `wasm/` (one line).

pub mod config;
pub mod json;
pub mod record;
pub mod ship;
pub mod stage;

pub use config::AccessLogConfig;
pub use stage::AccessLog;

/// The schema id every record carries in `"schema"`.
pub const SCHEMA: &str = "meshguard.access.v1";
