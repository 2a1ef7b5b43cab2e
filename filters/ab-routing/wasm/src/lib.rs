//! dist/ab-routing.wasm: the ab-routing stage alone.
meshguard_shell::module!(no_log; meshguard_ab_routing::AbRouting);
