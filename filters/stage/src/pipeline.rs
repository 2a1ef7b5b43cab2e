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

use std::time::SystemTime;

use meshguard_common::headers::{HeaderSource, PairsView};

use crate::chain::Chain;
use crate::facts::Facts;
use crate::host::{Bumps, Callouts, Host, MetricId, MetricsRegistry, Token};
use crate::message::{Edits, HostEdit, Message};
use crate::stage::{Cx, LocalReply, LogView, Reply, RootCx, Step};
use crate::text::Text;

/// Which header map an edit goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    Request,
    Response,
}

/// Callout answers larger than this are treated as failed: a huge answer
/// must not exhaust the VM's memory.
pub const MAX_CALLOUT_RESPONSE: usize = 1 << 20;

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

/// Working space for one hook: the edits and metric bumps it records, the
/// callouts it dispatched. All are applied and emptied before the callback
/// returns (a stream that waits has already applied its edits), so one
/// `Scratch` serves every stream of a VM: no allocation per request.
#[derive(Debug, Default)]
pub struct Scratch {
    edits: Edits,
    bumps: Bumps,
    dispatched: Vec<Token>,
    /// What the chain's stages need, summed up once.
    any_facts: bool,
    any_response_headers: bool,
    any_log: bool,
    /// Bit `i`: stage `i` wants the request body.
    body_stages: u64,
    /// The largest body any stage wants.
    max_body: usize,
    /// Owned (output) headers of every stage after the first, stripped
    /// from the client before stage 0 runs.
    owned: Vec<std::rc::Rc<str>>,
    /// `meshguard_refused_header_edits`.
    refused_metric: MetricId,
}

impl Scratch {
    /// Working space for `chain`, with its stages' [`crate::Needs`] summed up
    /// so no request pays for asking each stage again.
    pub fn for_chain<C: Chain>(chain: &C, metrics: &mut dyn MetricsRegistry) -> Self {
        let mut sc = Scratch {
            refused_metric: metrics.counter("meshguard_refused_header_edits"),
            ..Scratch::default()
        };
        for i in 0..C::LEN {
            let n = chain.needs(i);
            sc.any_facts |= n.facts;
            sc.any_response_headers |= n.response_headers;
            sc.any_log |= n.log;
            if let Some(limit) = n.request_body {
                sc.body_stages |= 1u64.checked_shl(i as u32).unwrap_or(0);
                sc.max_body = sc.max_body.max(limit);
            }
            // Stage 0 has no stage before it and strips its own outputs;
            // only later stages' outputs need stripping up front (which
            // costs a pass over the headers and an overlay lookup later).
            if i == 0 {
                continue;
            }
            for h in chain.owned_request_headers(i) {
                if !sc.owned.iter().any(|o| o.eq_ignore_ascii_case(h)) {
                    sc.owned.push(std::rc::Rc::clone(h));
                }
            }
        }
        sc
    }
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
        self.run_headers(chain, p, sc, 0, true)
    }

    pub fn on_request_body<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        match self.phase {
            Phase::AwaitBody => {
                if !end_of_stream && body_size < sc.max_body {
                    return Flow::Pause; // keep buffering
                }
                self.body_size = body_size.min(sc.max_body);
                self.body_complete = end_of_stream && body_size <= sc.max_body;
                self.run_body(chain, p, sc, 0, false)
            }
            Phase::Waiting { .. } => Flow::Pause,
            _ => Flow::Continue,
        }
    }

    /// Trailers end the body: run the body hooks on what was buffered, and
    /// never let trailers carry a request past a pending decision.
    pub fn on_request_trailers<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
    ) -> Flow {
        match self.phase {
            Phase::AwaitBody => {
                self.body_size = p.request_body(sc.max_body, sc.max_body).len();
                self.body_complete = self.body_size < sc.max_body;
                self.run_body(chain, p, sc, 0, false)
            }
            Phase::Waiting { .. } => Flow::Pause,
            _ => Flow::Continue,
        }
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
        let reply_headers = PairsView::parse(&raw_headers).unwrap_or_else(PairsView::empty);
        let reply = reply_of(num_headers, body_size, &reply_headers, &body);
        let flow = match part {
            Part::Headers => {
                let raw = p.headers(MapKind::Request);
                let parsed = raw.as_deref().and_then(PairsView::parse);
                let empty = PairsView::empty();
                let view = parsed.as_ref().unwrap_or(&empty);
                let step = {
                    let mut rq = Message::new(view, &mut sc.edits);
                    let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, &mut sc.dispatched)
                        .with_flags(sc.any_facts, false);
                    chain.on_callout(stage, reply, &mut rq, &mut self.state, &mut cx)
                };
                match self.after(p, sc, stage, step, Part::Headers) {
                    Next::Stop(flow) => flow,
                    Next::Go => self.run_headers(chain, p, sc, stage + 1, false),
                }
            }
            Part::Body { held } => {
                let body_now = p.request_body(self.body_size, self.body_size);
                let raw = if held {
                    p.headers(MapKind::Request)
                } else {
                    None
                };
                let parsed = raw.as_deref().and_then(PairsView::parse);
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
        let raw = if sc.any_response_headers {
            p.headers(MapKind::Response)
        } else {
            None
        };
        let view = raw
            .as_deref()
            .and_then(PairsView::parse)
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
        let request = PairsView::parse(&rq_raw).unwrap_or_else(PairsView::empty);
        let response = PairsView::parse(&rs_raw).unwrap_or_else(PairsView::empty);
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

    /// Header hooks from stage `from`; `first`: strip owned headers first.
    fn run_headers<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        from: usize,
        first: bool,
    ) -> Flow {
        let raw = p.headers(MapKind::Request);
        let Some(view) = raw.as_deref().and_then(PairsView::parse) else {
            return self.headers_unreadable(chain, p, sc);
        };
        if first {
            strip_owned(&view, sc);
        }
        for i in from..C::LEN {
            let step = {
                let mut rq = Message::new(&view, &mut sc.edits).with_body(None, self.headers_end);
                let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, &mut sc.dispatched)
                    .with_flags(sc.any_facts, false);
                chain.on_request_headers(i, &mut rq, &mut self.state, &mut cx)
            };
            if let Next::Stop(flow) = self.after(p, sc, i, step, Part::Headers) {
                return flow;
            }
        }
        if sc.body_stages != 0 {
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

    fn run_body<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        from: usize,
        held: bool,
    ) -> Flow {
        if held {
            let raw = p.headers(MapKind::Request);
            let Some(view) = raw.as_deref().and_then(PairsView::parse) else {
                return self.headers_unreadable(chain, p, sc);
            };
            return self.run_body_with(chain, p, sc, from, true, &view);
        }
        self.run_body_with(chain, p, sc, from, false, &PairsView::empty())
    }

    fn run_body_with<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        from: usize,
        held: bool,
        view: &PairsView<'_>,
    ) -> Flow {
        let body = if self.body_size == 0 {
            Vec::new()
        } else {
            p.request_body(self.body_size, self.body_size)
        };
        let body_stages = sc.body_stages;
        let wants = |i: usize| body_stages & 1u64.checked_shl(i as u32).unwrap_or(0) != 0;
        for i in (from..C::LEN).filter(|i| wants(*i)) {
            let step = {
                let mut rq =
                    Message::new(view, &mut sc.edits).with_body(Some(&body), self.body_complete);
                let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, &mut sc.dispatched)
                    .with_flags(sc.any_facts, false);
                chain.on_request_body(i, &mut rq, &mut self.state, &mut cx)
            };
            if let Next::Stop(flow) = self.after(p, sc, i, step, Part::Body { held }) {
                return flow;
            }
        }
        self.apply_request_edits_if(p, sc, held);
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

fn read_answer<P: Proxy>(p: &mut P, num_headers: usize, body_size: usize) -> (Vec<u8>, Vec<u8>) {
    if num_headers == 0 || body_size > MAX_CALLOUT_RESPONSE {
        return (Vec::new(), Vec::new());
    }
    p.callout_response(num_headers, body_size)
}

fn reply_of<'a>(
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

/// Root-level driver: timers and callouts made from them.
pub struct Root {
    next_due: Vec<Option<SystemTime>>,
    /// Root callouts in flight: (token, stage).
    pending: Vec<(Token, usize)>,
    bumps: Bumps,
}

impl Root {
    pub fn new<C: Chain>(_chain: &C) -> Self {
        Self {
            next_due: vec![None; C::LEN],
            pending: Vec::new(),
            bumps: Bumps::default(),
        }
    }

    /// The tick period the proxy should use: the shortest any stage wants.
    pub fn tick_period<C: Chain>(chain: &C) -> Option<std::time::Duration> {
        (0..C::LEN).filter_map(|i| chain.needs(i).tick).min()
    }

    pub fn on_tick<C: Chain, P: Proxy>(&mut self, chain: &C, p: &mut P) {
        let now = p.now();
        for i in 0..C::LEN {
            let Some(period) = chain.needs(i).tick else {
                continue;
            };
            let due = self.next_due.get(i).copied().flatten();
            if due.is_some_and(|d| now < d) {
                continue;
            }
            if let Some(slot) = self.next_due.get_mut(i) {
                *slot = now.checked_add(period);
            }
            let dispatched = {
                let mut cx = RootCx::new(p, &mut self.bumps);
                chain.on_tick(i, &mut cx);
                std::mem::take(&mut cx.dispatched)
            };
            self.pending.extend(dispatched.into_iter().map(|t| (t, i)));
            self.bumps.drain(|id, delta| p.bump(id, delta));
        }
    }

    /// A root callout answered; false if the token is not one of ours.
    pub fn on_callout<C: Chain, P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        token: Token,
        num_headers: usize,
        body_size: usize,
    ) -> bool {
        let Some(pos) = self.pending.iter().position(|(t, _)| *t == token) else {
            return false;
        };
        let (_, stage) = self.pending.swap_remove(pos);
        let (raw, body) = read_answer(p, num_headers, body_size);
        let headers = PairsView::parse(&raw).unwrap_or_else(PairsView::empty);
        let reply = reply_of(num_headers, body_size, &headers, &body);
        let dispatched = {
            let mut cx = RootCx::new(p, &mut self.bumps);
            chain.on_root_callout(stage, token, reply, &mut cx);
            std::mem::take(&mut cx.dispatched)
        };
        self.pending
            .extend(dispatched.into_iter().map(|t| (t, stage)));
        self.bumps.drain(|id, delta| p.bump(id, delta));
        true
    }
}
