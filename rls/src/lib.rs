//! meshguard-rls: a rate-limit service for the ratelimit filter's global mode,
//! Envoy's `envoy.service.ratelimit.v3.RateLimitService` over limitador.

pub mod limits;

pub use limits::{parse_limits, LimitsError};
