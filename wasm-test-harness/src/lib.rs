//! wasm-test-harness: a proxy-wasm ABI 0.2.1 host on wasmtime that runs a
//! compiled Envoy/Istio filter (`.wasm`) in-process, the way Envoy runs it,
//! with everything it does inspectable and the clock under test control.
//!
//! ```no_run
//! use wasm_test_harness::{Action, Harness};
//!
//! let harness = Harness::new();
//! let module = harness.module("dist/ab-routing.wasm").unwrap();
//! let mut vm = harness.configured_vm(&module, br#"{"experiments": []}"#).unwrap();
//! let mut http = vm.new_http().unwrap();
//! let action = http
//!     .request_headers([(":path", "/checkout"), ("x-user-id", "bob")], true)
//!     .unwrap();
//! assert_eq!(action, Action::Continue);
//! assert_eq!(http.request_header("x-ab-variant").as_deref(), Some("treatment"));
//! ```
//!
//! Layers, each using only those before it: `abi`/`headers`/`property`
//! (encodings) → `state` (host state and ABI rules, no wasmtime) →
//! `imports` (guest memory ↔ one host call) → `engine`/`vm` (wasmtime,
//! callbacks) → `harness`/`http` (the test API). See
//! `wasm-test-harness/README.md` for the full tour.

mod abi;
mod crossings;
mod engine;
mod error;
mod harness;
mod headers;
mod http;
mod imports;
pub mod property;
mod state;
mod vm;

pub use abi::{decode_pairs, encode_pairs, Action, LogLevel, MetricType, Status};
pub use crossings::Crossings;
pub use engine::Module;
pub use error::Error;
pub use harness::{Harness, HarnessBuilder, DEFAULT_START_UNIX_NS};
pub use headers::Headers;
pub use http::Http;
pub use state::callouts::{GrpcCall, GrpcStream, HttpCall, HttpCallResponse};
pub use state::host::LogRecord;
pub use state::local_reply::LocalResponse;
pub use state::metrics::MetricValue;
pub use vm::{Vm, VmBuilder};
