//! The stage interface: what one filter's logic looks like to the shell.

use std::time::Duration;

use serde::de::DeserializeOwned;

use meshguard_common::config::{ConfigError, JsonPath};
use meshguard_common::headers::PairsView;

use crate::facts::Facts;
use crate::host::{
    Bumps, CalloutError, GrpcCallout, Host, HttpCallout, MetricId, MetricsRegistry, Seam, Token,
};
use crate::message::{Request, Response};
use crate::text::Text;

/// What a request hook tells the shell to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Go on with the next stage (or forward the request).
    Continue,
    /// Pause the request until the callout with this token answers; then
    /// the same stage's [`Stage::on_callout`] runs.
    Wait(Token),
    /// Answer the client now; later stages and the upstream never see it.
    Respond(LocalReply),
}

/// A response the proxy sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    /// Headers with an invalid name or a CR, LF or NUL in the value are
    /// dropped when sent.
    pub headers: Vec<(Text, Text)>,
    /// Shared text, so a reply prepared once (authn's 401s) is cloned
    /// without copying.
    pub body: Text,
    /// For gRPC requests; `None` lets Envoy derive it from `status`
    /// (403 → PERMISSION_DENIED, 429/503 → UNAVAILABLE, ...).
    pub grpc_status: Option<u32>,
    /// Envoy's response code details (`%RESPONSE_CODE_DETAILS%`), e.g.
    /// `meshguard_authn_denied`. Lowercase, no spaces.
    pub details: &'static str,
}

impl LocalReply {
    pub fn new(status: u16, body: impl Into<Text>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            grpc_status: None,
            details: "",
        }
    }

    pub fn header(mut self, name: impl Into<Text>, value: impl Into<Text>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn details(mut self, details: &'static str) -> Self {
        self.details = details;
        self
    }

    pub fn grpc_status(mut self, code: u32) -> Self {
        self.grpc_status = Some(code);
        self
    }
}

/// The answer to a callout.
#[derive(Debug, Clone, Copy)]
pub enum Reply<'a> {
    /// The upstream answered (any status).
    Response {
        /// `:status`, 0 if missing or unparsable.
        status: u16,
        headers: &'a PairsView<'a>,
        body: &'a [u8],
    },
    /// No answer: connection failure or reset. (A callout whose timeout
    /// passes is answered by Envoy's async client with a local 504.)
    Failed,
    /// A gRPC callout's answer: `status` 0 (OK) with the response message,
    /// or the gRPC status code (4 DEADLINE_EXCEEDED for a timeout, 14
    /// UNAVAILABLE, ...) and an empty message.
    Grpc { status: u32, message: &'a [u8] },
}

/// What a stage needs from the shell beyond request headers, so the shell
/// reads (and pauses for) nothing nobody uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Buffer up to this many bytes of request body for
    /// [`Stage::on_request_body`]. In Envoy a Wasm filter cannot see the
    /// body while it holds the headers, so when a body follows, the request
    /// headers go upstream once every stage's headers hook has run (with
    /// their edits); body hooks then run on the buffered body and can only
    /// wait on callouts or answer locally, no longer edit request headers.
    pub request_body: Option<usize>,
    /// Read the response headers for [`Stage::on_response_headers`] (the
    /// hook always runs; without this it sees an empty map, and can still
    /// add headers).
    pub response_headers: bool,
    /// [`Stage::on_response_headers`] does nothing for this config (it
    /// would add no header). When every stage of a chain says so, the
    /// pipeline skips the response headers hook altogether: no map, no
    /// edits, a few hundred guest instructions fewer per request.
    pub no_response_hook: bool,
    /// Call [`Stage::on_log`] (with request and response headers read).
    pub log: bool,
    /// Call [`Stage::on_tick`] at this period.
    pub tick: Option<Duration>,
    /// Reads [`Facts`] that earlier stages record. Stages record facts only
    /// when some stage in the chain reads them ([`Cx::facts_wanted`]), so a
    /// chain without readers pays nothing for them.
    pub facts: bool,
    /// The stage works in the log phase only: its request and response
    /// hooks do nothing and it owns no request headers. A chain of such
    /// stages can run in a module built without the request-side exports
    /// (`meshguard_shell::module!(log_only; …)`), so Envoy makes no call
    /// into the VM for request or response headers.
    pub log_only: bool,
}

/// Per-request context for a hook: the host seam, the facts of this
/// request, and the metrics to bump (the shell bumps them all in one pass
/// after the hook).
pub struct Cx<'a> {
    host: &'a mut dyn Seam,
    pub facts: &'a mut Facts,
    bumps: &'a mut Bumps,
    dispatched: &'a mut Vec<Token>,
    facts_wanted: bool,
    answered_locally: bool,
    skip_body: bool,
}

impl<'a> Cx<'a> {
    pub fn new(
        host: &'a mut dyn Seam,
        facts: &'a mut Facts,
        bumps: &'a mut Bumps,
        dispatched: &'a mut Vec<Token>,
    ) -> Self {
        Self {
            host,
            facts,
            bumps,
            dispatched,
            facts_wanted: false,
            answered_locally: false,
            skip_body: false,
        }
    }

    pub(crate) fn with_flags(mut self, facts_wanted: bool, answered_locally: bool) -> Self {
        self.facts_wanted = facts_wanted;
        self.answered_locally = answered_locally;
        self
    }

    /// Whether any stage in the chain reads [`Facts`]: record them only then.
    pub fn facts_wanted(&self) -> bool {
        self.facts_wanted
    }

    /// In response hooks: the response is this chain's own local reply, not
    /// the upstream's.
    pub fn answered_locally(&self) -> bool {
        self.answered_locally
    }

    pub fn host(&mut self) -> &mut dyn Host {
        self.host
    }

    /// In a headers hook (or the callout answer that ends one) of a stage
    /// with [`Needs::request_body`]: this request's body is not needed
    /// (the rule that matched reads none), so the shell neither buffers it
    /// nor holds it back for this stage.
    pub fn skip_body(&mut self) {
        self.skip_body = true;
    }

    pub(crate) fn body_skipped(&self) -> bool {
        self.skip_body
    }

    /// Adds one to a counter.
    pub fn count(&mut self, id: MetricId) {
        self.add(id, 1);
    }

    pub fn add(&mut self, id: MetricId, delta: i64) {
        if id != MetricId::NONE {
            self.bumps.push(id, delta);
        }
    }

    /// Dispatches a callout; return `Step::Wait(token)` to pause on it. (A
    /// wait on a token not dispatched in the same hook fails closed.)
    pub fn http_call(&mut self, call: &HttpCallout<'_>) -> Result<Token, CalloutError> {
        let token = self.host.http_call(call)?;
        self.dispatched.push(token);
        Ok(token)
    }

    /// Dispatches a unary gRPC call; return `Step::Wait(token)` to pause on
    /// it ([`Reply::Grpc`] answers).
    pub fn grpc_call(&mut self, call: &GrpcCallout<'_>) -> Result<Token, CalloutError> {
        let token = self.host.grpc_call(call)?;
        self.dispatched.push(token);
        Ok(token)
    }
}

/// Context for root-level hooks (timers, root callouts): no request.
pub struct RootCx<'a> {
    host: &'a mut dyn Seam,
    bumps: &'a mut Bumps,
    /// Callouts dispatched during this hook; their replies go to
    /// [`Stage::on_root_callout`] of the same stage.
    pub(crate) dispatched: Vec<Token>,
}

impl<'a> RootCx<'a> {
    pub fn new(host: &'a mut dyn Seam, bumps: &'a mut Bumps) -> Self {
        Self {
            host,
            bumps,
            dispatched: Vec::new(),
        }
    }

    pub fn host(&mut self) -> &mut dyn Host {
        self.host
    }

    pub fn count(&mut self, id: MetricId) {
        self.add(id, 1);
    }

    pub fn add(&mut self, id: MetricId, delta: i64) {
        if id != MetricId::NONE {
            self.bumps.push(id, delta);
        }
    }

    pub fn http_call(&mut self, call: &HttpCallout<'_>) -> Result<Token, CalloutError> {
        let token = self.host.http_call(call)?;
        self.dispatched.push(token);
        Ok(token)
    }
}

/// What the log phase sees: the final request and response headers and the
/// facts; properties (`response.code`, timings) through the host.
pub struct LogView<'a> {
    pub request: &'a PairsView<'a>,
    pub response: &'a PairsView<'a>,
    pub facts: &'a Facts,
}

/// One filter's logic. A stage is built once per configuration and shared
/// by every request; per-request data lives in [`Stage::PerRequest`].
/// Hooks never call the proxy directly: they read through [`Request`],
/// record edits, and ask the host through [`Cx`].
pub trait Stage: Sized + 'static {
    /// The filter's name: `ab-routing`. Its CLI name and module name.
    const NAME: &'static str;
    /// Its key in a combined chain config: `ab_routing`.
    const CONFIG_KEY: &'static str;
    /// The pluginConfig: these serde types are the schema.
    type Config: DeserializeOwned;
    type PerRequest: Default;

    /// Reads this stage's section of the config into [`Stage::Config`],
    /// every error naming its JSON path. Stages override it with this same
    /// body (and `#[inline(never)]`) so that the parse and its serde code
    /// are compiled in the stage's own crate, at that crate's opt-level:
    /// the default is generic, so it would be compiled in the module's
    /// crate, whose opt-level is chosen for the per-request code.
    fn parse_config(value: serde_json::Value, at: &JsonPath) -> Result<Self::Config, ConfigError> {
        meshguard_common::config::from_value_at(value, at)
    }

    /// Validates `config` (which sits at `at` in the document: `$` alone,
    /// `$.ab_routing` in a chain) and compiles it; defines metrics.
    fn build(
        config: Self::Config,
        at: &JsonPath,
        metrics: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError>;

    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// Request headers this stage sets (identity, variant): its outputs.
    /// The stage itself always replaces or removes any client copy (it has
    /// the last word on them); the pipeline also removes client copies
    /// before the first stage runs when stages come before this one, so no
    /// stage ever reads a forged value.
    fn owned_request_headers(&self) -> &[std::rc::Rc<str>] {
        &[]
    }

    /// Request headers only this stage reads and that must never reach the
    /// upstream (a QA override and its secret). The stage strips them
    /// itself; if the proxy cannot hand over the request headers, the
    /// pipeline strips them along with the owned ones.
    fn private_request_headers(&self) -> &[std::rc::Rc<str>] {
        &[]
    }

    /// What to do when the request headers cannot be read at all.
    fn when_headers_unreadable(&self) -> Step {
        Step::Continue
    }

    fn on_request_headers(
        &self,
        rq: &mut Request<'_>,
        st: &mut Self::PerRequest,
        cx: &mut Cx<'_>,
    ) -> Step;

    /// With [`Needs::request_body`]: the body buffered up to the limit
    /// (`rq.end_of_stream()` tells whether it is all of it). When a body
    /// followed the headers, they have gone upstream: `rq` shows no headers
    /// and header edits are dropped (read what you need in the headers hook
    /// and keep it in `PerRequest`).
    fn on_request_body(
        &self,
        _rq: &mut Request<'_>,
        _st: &mut Self::PerRequest,
        _cx: &mut Cx<'_>,
    ) -> Step {
        Step::Continue
    }

    /// The answer to the callout this stage waited on.
    fn on_callout(
        &self,
        _reply: Reply<'_>,
        _rq: &mut Request<'_>,
        _st: &mut Self::PerRequest,
        _cx: &mut Cx<'_>,
    ) -> Step {
        Step::Continue
    }

    fn on_response_headers(
        &self,
        _rs: &mut Response<'_>,
        _st: &mut Self::PerRequest,
        _cx: &mut Cx<'_>,
    ) {
    }

    /// With [`Needs::log`]: after the stream ends. The stream is gone:
    /// callouts from here never answer; ship through the root (tick, queue).
    fn on_log(&self, _log: &LogView<'_>, _st: &Self::PerRequest, _cx: &mut Cx<'_>) {}

    /// With [`Needs::tick`]: timers (key refresh, cleanup, flushing).
    fn on_tick(&self, _cx: &mut RootCx<'_>) {}

    /// The answer to a callout dispatched from [`Stage::on_tick`].
    fn on_root_callout(&self, _token: Token, _reply: Reply<'_>, _cx: &mut RootCx<'_>) {}
}
