//! Runs a [`Chain`] for one stream: header hooks in order (pausing on
//! `Wait`, resuming at the same stage), then body hooks for the stages that
//! asked for the body, answering locally on `Respond`, applying every
//! stage's edits in one go. Plain Rust over the [`Proxy`] seam: the
//! proxy-wasm shell drives it with host calls, native tests with
//! [`crate::testing::FakeProxy`], and both run exactly this code.
//!
//! Envoy's rules this follows (checked against Envoy by the harness):
//! - While a filter holds the request headers (`Pause`), Envoy holds the
//!   body back too; it is delivered once the filter continues. So a stage
//!   that needs the body cannot see it before the headers go on: header
//!   hooks all run first, their edits are applied, the headers continue,
//!   and the body is then buffered (`Pause` from the body callback) for the
//!   body hooks, which may still wait on callouts or answer locally.
//! - Request headers can be edited only while they are held.
//! - A local reply is sent after the callback returns and goes through the
//!   response hooks; late callout answers are ignored.

use meshguard_common::headers::{HeaderSource, PairsView};

use crate::chain::Chain;
use crate::facts::Facts;
use crate::host::{Callouts, Host, MetricId, Token};
use crate::message::{HostEdit, Message};
use crate::stage::{Cx, LocalReply, LogView, Reply, Step};
use crate::text::Text;

mod body;
mod root;
mod scratch;

pub use root::Root;
pub use scratch::Scratch;

/// Which header map an edit goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    Request,
    Response,
}

/// Callout answers larger than this are treated as failed: a huge answer
/// must not exhaust the VM's memory.
pub const MAX_CALLOUT_RESPONSE: usize = 1 << 20;
/// The same for gRPC answers (a rate-limit verdict is a few hundred bytes).
pub const MAX_GRPC_RESPONSE: usize = 64 << 10;

/// Everything the pipeline needs from the proxy for a stream (on top of
/// what stages may ask through [`Host`] and [`Callouts`]).
pub trait Proxy: Host + Callouts {
    /// The header map in proxy-wasm pairs encoding; `None` if unreadable.
    fn headers(&mut self, map: MapKind) -> Option<Vec<u8>>;
    fn edit(&mut self, map: MapKind, edit: &HostEdit<'_>);
    /// The request body buffered so far, up to `max` bytes.
    fn request_body(&mut self, size: usize, max: usize) -> Vec<u8>;
    /// The callout response headers (pairs encoding) and body.
    fn callout_response(&mut self, num_headers: usize, body_size: usize) -> (Vec<u8>, Vec<u8>);
    /// A gRPC callout's response message.
    fn grpc_response(&mut self, size: usize) -> Vec<u8>;
    fn send_reply(&mut self, reply: &LocalReply);
    /// Resumes a request paused in an earlier callback.
    fn resume_request(&mut self);
    fn bump(&mut self, id: MetricId, delta: i64);
}

/// What the shell returns to the proxy from a stream callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop iteration (headers) or stop and buffer (body, trailers).
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Headers,
    /// Body hooks; `held`: the headers are still held (the request ended
    /// with its headers), so header edits still apply.
    Body {
        held: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    /// Paused on a stage's callout.
    Waiting {
        stage: usize,
        token: Token,
        part: Part,
    },
    /// Headers went on; buffering the body for the body hooks.
    AwaitBody,
    /// Every stage let it through.
    Forwarded,
    /// A stage answered locally.
    Replied,
    /// The response started (upstream or local): request-side events are
    /// over.
    Responding,
}

/// One stream's progress through the chain.
pub struct Stream<C: Chain> {
    state: C::State,
    facts: Facts,
    phase: Phase,
    replied: bool,
    /// The request ended with its headers (no body follows).
    headers_end: bool,
    /// Bytes of body buffered when the body hooks started.
    body_size: usize,
    body_complete: bool,
    /// Bit `i`: stage `i` wants this request's body (its [`crate::Needs`],
    /// less [`Cx::skip_body`]).
    body_mask: u64,
    /// The request headers as the proxy holds them, kept while a stage
    /// waits on a callout that no edit went out before: the answer's hook
    /// reads them from here instead of asking the proxy again (a host call
    /// and a guest allocation per callout).
    held_headers: Option<Vec<u8>>,
}

impl<C: Chain> Default for Stream<C> {
    fn default() -> Self {
        Self {
            state: C::State::default(),
            facts: Facts::default(),
            phase: Phase::Start,
            replied: false,
            headers_end: false,
            body_size: 0,
            body_complete: false,
            body_mask: 0,
            held_headers: None,
        }
    }
}

/// What the pipeline does after a hook returned.
enum Next {
    Go,
    Stop(Flow),
}

impl<C: Chain> Stream<C> {
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    pub fn state(&self) -> &C::State {
        &self.state
    }

    /// Whether a stage answered the request locally.
    pub fn replied(&self) -> bool {
        self.replied
    }

    /// The callout this stream waits on, if any.
    pub fn waiting_on(&self) -> Option<Token> {
        match self.phase {
            Phase::Waiting { token, .. } => Some(token),
            _ => None,
        }
    }

    pub fn on_request_headers<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        end_of_stream: bool,
    ) -> Flow {
        if self.phase != Phase::Start {
            return Flow::Continue;
        }
        self.headers_end = end_of_stream;
        let raw = p.headers(MapKind::Request);
        self.run_headers(chain, p, sc, 0, true, raw)
    }

    /// A callout answered. `num_headers == 0` means it failed.
    pub fn on_callout<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        token: Token,
        num_headers: usize,
        body_size: usize,
    ) {
        let Phase::Waiting {
            stage,
            token: want,
            part,
        } = self.phase
        else {
            return; // late answer after a local reply or the response, or not ours
        };
        if token != want {
            return;
        }
        let (raw_headers, body) = read_answer(p, num_headers, body_size);
        let reply_headers = parse_view(&raw_headers).unwrap_or_else(PairsView::empty);
        let reply = reply_of(num_headers, body_size, &reply_headers, &body);
        self.deliver(chain, p, sc, stage, part, reply);
    }

    /// A gRPC callout answered: `status` 0 with a message of `size` bytes,
    /// or a gRPC error status.
    pub fn on_grpc_callout<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        token: Token,
        status: u32,
        size: usize,
    ) {
        let Phase::Waiting {
            stage,
            token: want,
            part,
        } = self.phase
        else {
            return; // late answer after a local reply or the response, or not ours
        };
        if token != want {
            return;
        }
        let (status, message) = if status != 0 {
            (status, Vec::new())
        } else if size > MAX_GRPC_RESPONSE {
            log::warn!("meshguard: gRPC answer of {size} bytes is over the {MAX_GRPC_RESPONSE}-byte limit; treated as UNAVAILABLE");
            (14, Vec::new())
        } else {
            (0, p.grpc_response(size))
        };
        let reply = Reply::Grpc {
            status,
            message: &message,
        };
        self.deliver(chain, p, sc, stage, part, reply);
    }

    /// Runs the waiting stage's callout hook with `reply`, then the rest.
    fn deliver<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        stage: usize,
        part: Part,
        reply: Reply<'_>,
    ) {
        let flow = match part {
            Part::Headers => {
                // Unchanged since the wait when kept; else edits went out
                // then, and the proxy's copy is the current one.
                let raw = self
                    .held_headers
                    .take()
                    .or_else(|| p.headers(MapKind::Request));
                let parsed = raw.as_deref().and_then(parse_view);
                let empty = PairsView::empty();
                let view = parsed.as_ref().unwrap_or(&empty);
                let step = {
                    let mut rq = Message::new(view, &mut sc.edits);
                    let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, &mut sc.dispatched)
                        .with_flags(sc.any_facts, false);
                    let step = chain.on_callout(stage, reply, &mut rq, &mut self.state, &mut cx);
                    if cx.body_skipped() {
                        self.body_mask &= !1u64.checked_shl(stage as u32).unwrap_or(0);
                    }
                    step
                };
                match self.after(p, sc, stage, step, Part::Headers) {
                    Next::Stop(flow) => flow,
                    // The later stages see these headers with the pending
                    // edits, as in one pass: no second read.
                    Next::Go => self.run_headers(chain, p, sc, stage + 1, false, raw),
                }
            }
            Part::Body { held } => {
                let body_now = p.request_body(self.body_size, self.body_size);
                let raw = if held {
                    p.headers(MapKind::Request)
                } else {
                    None
                };
                let parsed = raw.as_deref().and_then(parse_view);
                let empty = PairsView::empty();
                let view = parsed.as_ref().unwrap_or(&empty);
                let step = {
                    let mut rq = Message::new(view, &mut sc.edits)
                        .with_body(Some(&body_now), self.body_complete);
                    let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, &mut sc.dispatched)
                        .with_flags(sc.any_facts, false);
                    chain.on_callout(stage, reply, &mut rq, &mut self.state, &mut cx)
                };
                match self.after(p, sc, stage, step, Part::Body { held }) {
                    Next::Stop(flow) => flow,
                    Next::Go => self.run_body(chain, p, sc, stage + 1, held),
                }
            }
        };
        if flow == Flow::Continue {
            p.resume_request();
        }
    }

    pub fn on_response_headers<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
    ) -> Flow {
        self.phase = Phase::Responding;
        if sc.no_response_hooks {
            return Flow::Continue;
        }
        let raw = if sc.any_response_headers {
            p.headers(MapKind::Response)
        } else {
            None
        };
        let view = raw
            .as_deref()
            .and_then(parse_view)
            .unwrap_or_else(PairsView::empty);
        sc.edits.clear();
        for i in 0..C::LEN {
            let mut rs = Message::new(&view, &mut sc.edits);
            let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, &mut sc.dispatched)
                .with_flags(sc.any_facts, self.replied);
            chain.on_response_headers(i, &mut rs, &mut self.state, &mut cx);
        }
        sc.edits.plan(|e| p.edit(MapKind::Response, &e));
        sc.edits.clear();
        self.flush(p, sc);
        Flow::Continue
    }

    pub fn on_log<P: Proxy>(&mut self, chain: &C, p: &mut P, sc: &mut Scratch) {
        if !sc.any_log {
            return;
        }
        let rq_raw = p.headers(MapKind::Request).unwrap_or_default();
        let rs_raw = p.headers(MapKind::Response).unwrap_or_default();
        let request = parse_view(&rq_raw).unwrap_or_else(PairsView::empty);
        let response = parse_view(&rs_raw).unwrap_or_else(PairsView::empty);
        let facts = std::mem::take(&mut self.facts);
        for i in (0..C::LEN).filter(|i| chain.needs(*i).log) {
            let view = LogView {
                request: &request,
                response: &response,
                facts: &facts,
            };
            let mut scratch = Facts::default();
            let mut cx = Cx::new(p, &mut scratch, &mut sc.bumps, &mut sc.dispatched);
            chain.on_log(i, &view, &self.state, &mut cx);
        }
        self.facts = facts;
        sc.dispatched.clear();
        self.flush(p, sc);
    }

    /// Header hooks from stage `from` on the request headers as the proxy
    /// handed them over (`raw`); `first`: strip owned headers first.
    fn run_headers<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        from: usize,
        first: bool,
        raw: Option<Vec<u8>>,
    ) -> Flow {
        let Some(view) = raw.as_deref().and_then(parse_view) else {
            return self.headers_unreadable(chain, p, sc);
        };
        if first {
            strip_owned(&view, sc);
            self.body_mask = sc.body_stages;
        }
        for i in from..C::LEN {
            let step = {
                let mut rq = Message::new(&view, &mut sc.edits).with_body(None, self.headers_end);
                let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, &mut sc.dispatched)
                    .with_flags(sc.any_facts, false);
                let step = chain.on_request_headers(i, &mut rq, &mut self.state, &mut cx);
                if cx.body_skipped() {
                    self.body_mask &= !1u64.checked_shl(i as u32).unwrap_or(0);
                }
                step
            };
            let edits_pending = !sc.edits.is_empty();
            if let Next::Stop(flow) = self.after(p, sc, i, step, Part::Headers) {
                // Waiting with no edit sent: the proxy's headers are still
                // these bytes when the answer comes.
                if matches!(self.phase, Phase::Waiting { .. }) && !edits_pending {
                    self.held_headers = raw.clone();
                }
                return flow;
            }
        }
        if self.body_mask != 0 {
            if self.headers_end {
                // No body follows: body hooks run now on an empty body,
                // while the headers are still held.
                self.body_complete = true;
                return self.run_body_with(chain, p, sc, 0, true, &view);
            }
            self.apply_request_edits(p, sc);
            self.phase = Phase::AwaitBody;
            return Flow::Continue;
        }
        self.apply_request_edits(p, sc);
        self.phase = Phase::Forwarded;
        Flow::Continue
    }

    /// Bumps metrics, then acts on the step.
    fn after<P: Proxy>(
        &mut self,
        p: &mut P,
        sc: &mut Scratch,
        i: usize,
        step: Step,
        part: Part,
    ) -> Next {
        self.flush(p, sc);
        let dispatched = matches!(step, Step::Wait(t) if sc.dispatched.contains(&t));
        sc.dispatched.clear();
        match step {
            Step::Continue => Next::Go,
            Step::Wait(token) if dispatched => {
                // Edits go to the proxy now: the headers are re-read on resume.
                let held = matches!(part, Part::Headers | Part::Body { held: true });
                self.apply_request_edits_if(p, sc, held);
                self.phase = Phase::Waiting {
                    stage: i,
                    token,
                    part,
                };
                Next::Stop(Flow::Pause)
            }
            Step::Wait(token) => {
                log::error!(
                    "meshguard: stage {} waited on callout {token}, which it did not dispatch in this hook; failing closed",
                    C::names().get(i).map(|n| n.0).unwrap_or("?")
                );
                let reply = LocalReply::new(500, "meshguard: internal error\n")
                    .details("meshguard_bad_wait");
                self.reply(p, sc, &reply);
                Next::Stop(Flow::Pause)
            }
            Step::Respond(reply) => {
                self.reply(p, sc, &reply);
                Next::Stop(Flow::Pause)
            }
        }
    }

    fn reply<P: Proxy>(&mut self, p: &mut P, sc: &mut Scratch, reply: &LocalReply) {
        sc.edits.clear();
        self.phase = Phase::Replied;
        self.replied = true;
        p.send_reply(reply);
    }

    fn apply_request_edits<P: Proxy>(&mut self, p: &mut P, sc: &mut Scratch) {
        self.apply_request_edits_if(p, sc, true);
    }

    /// Applies request edits while the headers are held; after they went
    /// upstream, edits are dropped (and logged): Envoy would refuse them.
    fn apply_request_edits_if<P: Proxy>(&mut self, p: &mut P, sc: &mut Scratch, held: bool) {
        let refused = sc.edits.take_refused();
        if refused > 0 {
            p.bump(sc.refused_metric, i64::from(refused));
        }
        if sc.edits.is_empty() {
            return;
        }
        if held {
            sc.edits.plan(|e| p.edit(MapKind::Request, &e));
        } else {
            log::warn!(
                "meshguard: request header edits after the headers went upstream are dropped"
            );
        }
        sc.edits.clear();
    }

    /// The proxy would not hand over the headers: strip every header a
    /// stage owns (unconditionally), then fail closed if any stage says so.
    fn headers_unreadable<P: Proxy>(&mut self, chain: &C, p: &mut P, sc: &mut Scratch) -> Flow {
        log::error!(
            "meshguard: cannot read the request headers; stripping the headers meshguard owns"
        );
        sc.edits.clear();
        let view = PairsView::empty();
        for i in 0..C::LEN {
            for name in chain
                .owned_request_headers(i)
                .iter()
                .chain(chain.private_request_headers(i))
            {
                Message::new(&view, &mut sc.edits).remove(name);
            }
        }
        sc.edits.plan(|e| p.edit(MapKind::Request, &e));
        sc.edits.clear();
        for i in 0..C::LEN {
            if let Step::Respond(reply) = chain.when_headers_unreadable(i) {
                self.reply(p, sc, &reply);
                return Flow::Pause;
            }
        }
        self.phase = Phase::Forwarded;
        Flow::Continue
    }

    fn flush<P: Proxy>(&mut self, p: &mut P, sc: &mut Scratch) {
        sc.bumps.drain(|id, delta| p.bump(id, delta));
    }
}

/// [`PairsView::parse`] compiled here, once, at this crate's opt-level: the
/// pipeline's generic code is compiled in each module's crate, which is
/// built for size.
#[inline(never)]
pub(super) fn parse_view(buf: &[u8]) -> Option<PairsView<'_>> {
    PairsView::parse(buf)
}

/// Records removals of every owned header the client sent, in one pass.
fn strip_owned(view: &PairsView<'_>, sc: &mut Scratch) {
    if sc.owned.is_empty() {
        return;
    }
    let mut inline = [None; 16];
    let mut spilled = Vec::new();
    let found: &mut [Option<&[u8]>] = match inline.get_mut(..sc.owned.len()) {
        Some(slots) => slots,
        None => {
            spilled.resize(sc.owned.len(), None);
            &mut spilled
        }
    };
    view.first_many(&sc.owned, found);
    for (name, hit) in sc.owned.iter().zip(found.iter()) {
        if hit.is_some() {
            Message::new(view, &mut sc.edits).remove(Text::from(name));
        }
    }
}

pub(super) fn read_answer<P: Proxy>(
    p: &mut P,
    num_headers: usize,
    body_size: usize,
) -> (Vec<u8>, Vec<u8>) {
    if num_headers == 0 || body_size > MAX_CALLOUT_RESPONSE {
        return (Vec::new(), Vec::new());
    }
    p.callout_response(num_headers, body_size)
}

pub(super) fn reply_of<'a>(
    num_headers: usize,
    body_size: usize,
    headers: &'a PairsView<'a>,
    body: &'a [u8],
) -> Reply<'a> {
    if num_headers == 0 {
        return Reply::Failed;
    }
    if body_size > MAX_CALLOUT_RESPONSE {
        log::warn!("meshguard: callout answer of {body_size} bytes is over the {MAX_CALLOUT_RESPONSE}-byte limit; treated as failed");
        return Reply::Failed;
    }
    let status = headers
        .first(":status")
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply::Response {
        status,
        headers,
        body,
    }
}
