//! dist/accesslog.wasm: the accesslog stage alone.
meshguard_shell::module!(log_only; meshguard_accesslog::AccessLog);
