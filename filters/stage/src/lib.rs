//! # The stage interface
//!
//! Every meshguard filter is a **stage**: a config type (the schema), a
//! compiled form built once per configuration, per-request state, and
//! hooks. One shared proxy-wasm shell (`meshguard-shell`) runs a stage on
//! its own, or an ordered chain of stages in one VM. Nothing here depends on
//! proxy-wasm; the same code runs natively in tests.
//!
//! ## Design
//!
//! - **Hooks return what to do, never do it.** [`Stage::on_request_headers`],
//!   [`Stage::on_request_body`] and [`Stage::on_callout`] return a [`Step`]:
//!   `Continue` (next stage), `Wait(token)` (pause until the callout this
//!   stage dispatched answers; then `on_callout` of the same stage runs and
//!   the chain resumes there) or `Respond(LocalReply)` (answer the client;
//!   later stages never run). Response, log and tick hooks cannot stop
//!   anything.
//! - **Headers are read in place and edited as data.** A [`Request`] reads
//!   Envoy's pairs buffer without copying a header, overlaid with the edits
//!   earlier stages made (a later stage reads what an earlier one set). Edits
//!   (`set`/`add`/`remove`) are applied by the shell once, when the chain
//!   finishes or pauses, with the fewest host calls ([`Edits::plan`]).
//! - **Facts between stages are typed.** [`Facts`] (identity, variants,
//!   rate-limit verdict) travel in memory within one VM; between separately
//!   deployed modules they travel as the owned headers in
//!   `meshguard_common::contract` ([`Facts::contract_headers`]).
//! - **One seam.** Stages reach the proxy only through [`Host`] (time,
//!   randomness, callouts, shared data, properties) inside [`Cx`]/[`RootCx`];
//!   the pipeline reaches it through [`pipeline::Proxy`]. The shell
//!   implements both with proxy-wasm; [`testing::FakeProxy`] natively.
//! - **Metrics are defined at build, bumped in one pass.** `build` gets a
//!   [`MetricsRegistry`]; hooks record bumps in [`Cx`]; the pipeline applies
//!   them after each hook.
//! - **Logging** goes through the `log` facade; the shell forwards records
//!   to the proxy's log at the proxy's level (a disabled level costs no
//!   formatting), [`testing::capture_logs`] collects them natively.
//! - **Config paths have a base.** A single-stage module takes the stage's
//!   config as the whole pluginConfig (`$`); a chain takes
//!   `{"<config_key>": {...}, ...}` and errors name `$.<config_key>…`
//!   ([`chain`]).
//! - **Memory**: a chain is a tuple of stages with static dispatch; per
//!   request the pipeline allocates the edit list and whatever stages do.
//!
//! ## A new filter
//!
//! A config type, a `Stage` impl, a cdylib of a few lines
//! (`meshguard_shell::module!(MyStage);`), a case table run with
//! [`testing::run_table`], one line in the Makefile's `FILTERS`, and its
//! entry in the Envoy config renderer (`meshguard envoy-config`).

pub mod chain;
pub mod facts;
pub mod host;
pub mod message;
pub mod pipeline;
pub mod stage;
pub mod testing;
pub mod text;

pub use chain::Chain;
pub use facts::{FactKinds, Facts, Identity, RateLimitVerdict, Variant};
pub use host::{
    Bumps, CalloutError, Callouts, GrpcCallout, Host, HttpCallout, MetricId, MetricsRegistry,
    NoMetrics, SharedWrite, Token,
};
pub use message::{Edits, HostEdit, Message, Request, Response};
pub use stage::{Cx, LocalReply, LogView, Needs, Reply, RootCx, Stage, Step};
pub use text::Text;
