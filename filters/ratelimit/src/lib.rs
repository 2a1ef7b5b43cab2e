//! ratelimit: token buckets per key (client IP, a header such as the
//! identity authn sets, the path, or a combination) in proxy-wasm shared
//! data, updated with compare-and-swap so every Envoy worker spends the same
//! tokens: admitted requests never exceed `burst + rate × elapsed`.
//! Over the limit: 429 with `Retry-After` and rate-limit headers; shadow
//! rules only count and log.
//!
//! Plain Rust, no proxy-wasm: `config` (the schema, crate
//! `meshguard-ratelimit-config`), `bucket` (integer
//! token buckets and their shared-data slots), `client_ip`
//! (`x-forwarded-for` with trusted hops), `stage` (the stage). The wasm
//! module is `wasm/` (one line: `meshguard_shell::module!(RateLimit)`).
//! Local mode only: the global mode (Envoy's rate-limit gRPC service) is
//! not built yet.

pub mod bucket;
pub mod client_ip;
pub mod rls;
pub mod stage;

pub use config::RateLimitConfig;
/// The config schema, in its own crate (`filters/ratelimit/config`) so it
/// is compiled for size and the per-request code for speed.
pub use meshguard_ratelimit_config as config;
pub use stage::RateLimit;
