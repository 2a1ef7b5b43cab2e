//! dist/authn.wasm: the authn stage alone.
meshguard_shell::module!(meshguard_authn::Authn);
