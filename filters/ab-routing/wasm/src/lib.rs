//! dist/ab-routing.wasm: the ab-routing stage alone.
meshguard_shell::module!(meshguard_ab_routing::AbRouting);
