//! dist/accesslog.wasm: the accesslog stage alone.
meshguard_shell::module!(meshguard_accesslog::AccessLog);
