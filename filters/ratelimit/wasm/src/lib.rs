//! dist/ratelimit.wasm: the ratelimit stage alone.
meshguard_shell::module!(no_log; meshguard_ratelimit::RateLimit);
