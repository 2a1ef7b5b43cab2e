//! Host state: everything the harness remembers, and the proxy-wasm rules
//! that govern it (CAS, queue notification, which phase may touch which
//! header map, local replies). Nothing here knows about wasmtime or guest
//! memory, so every rule is unit-tested directly in its module; the
//! `imports` layer only translates guest calls into these methods.

pub(crate) mod callouts;
pub(crate) mod host;
pub(crate) mod local_reply;
pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod properties;
pub(crate) mod queues;
pub(crate) mod shared_data;
pub(crate) mod stream;

use crate::abi::Status;

/// Why a host call did not succeed: a status the guest sees, or a failure
/// Envoy would turn into a VM crash (the import traps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostError {
    Status(Status),
    Trap(String),
}

impl From<Status> for HostError {
    fn from(s: Status) -> Self {
        HostError::Status(s)
    }
}
