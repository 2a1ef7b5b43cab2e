//! dist/authn.wasm: the authn stage alone.
meshguard_shell::module!(no_log; meshguard_authn::Authn);
