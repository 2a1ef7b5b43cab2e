//! dist/ratelimit.wasm: the ratelimit stage alone.
meshguard_shell::module!(meshguard_ratelimit::RateLimit);
