use std::fmt;

/// Everything that can go wrong when driving a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The guest trapped (panic, unreachable, out-of-bounds, interrupted
    /// after the call timeout, it called an import the harness lacks, or
    /// one Envoy refuses at that point: `restricted_callback`). The message
    /// is the cause, then the wasm backtrace. The VM is now failed, as
    /// Envoy marks it.
    Trap { callback: String, message: String },
    /// A call on a VM that already failed (Envoy answers such requests with
    /// 503 under FAIL_CLOSED).
    VmFailed(String),
    /// `on_configure` returned false (from `Harness::configured_vm`).
    Refused(String),
    /// The module or harness could not be set up (compile, link, ABI).
    Setup(String),
    /// The test used the harness wrongly (unknown stream, unknown token...).
    Harness(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Trap { callback, message } => {
                write!(f, "guest trapped in {callback}: {message}")
            }
            Error::VmFailed(m) => write!(f, "VM has failed earlier: {m}"),
            Error::Refused(m) => write!(f, "plugin refused its configuration: {m}"),
            Error::Setup(m) => write!(f, "setup: {m}"),
            Error::Harness(m) => write!(f, "harness misuse: {m}"),
        }
    }
}

impl std::error::Error for Error {}
