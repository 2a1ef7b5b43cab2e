//! Runs a [`Chain`] for one stream: in order, pausing on `Wait` and
//! resuming at the same stage, buffering a body for the stage that asked,
//! answering locally on `Respond`, and applying every stage's edits once.
//! Plain Rust over the [`Proxy`] seam: the proxy-wasm shell drives it with
//! host calls, native tests with [`crate::testing::FakeProxy`], and both run
//! exactly this code.

use std::time::SystemTime;

use meshguard_common::headers::{HeaderSource, PairsView};

use crate::chain::Chain;
use crate::facts::Facts;
use crate::host::{Bumps, Host, MetricId, Token};
use crate::message::{Edits, HostEdit, Message};
use crate::stage::{Cx, LocalReply, LogView, Reply, RootCx, Step};

/// Which header map an edit goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    Request,
    Response,
}

/// Everything the pipeline needs from the proxy for a stream (on top of
/// what stages may ask through [`Host`]).
pub trait Proxy: Host {
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
    /// Stop iteration (headers) or stop and buffer (body).
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Request headers not seen yet, or being run.
    Start,
    /// Paused on stage `stage`'s callout; `then_body` if the body hook of
    /// that stage still has to run after the callout.
    Waiting {
        stage: usize,
        token: Token,
        in_body: bool,
    },
    /// Paused until the request body is complete for stage `stage`.
    AwaitBody { stage: usize },
    /// Every stage let it through; edits applied.
    Forwarded,
    /// A stage answered locally.
    Replied,
}

/// Working space for one hook: the edits and metric bumps it records.
/// Both are applied and emptied before the hook's callback returns (a
/// stream that waits on a callout has already applied its edits), so one
/// `Scratch` serves every stream of a VM and its buffers are reused instead
/// of allocated per request.
#[derive(Debug, Default)]
pub struct Scratch {
    edits: Edits,
    bumps: Bumps,
    /// What the chain's stages need, summed up once (see [`Scratch::for_chain`]).
    any_facts: bool,
    any_response_headers: bool,
    any_log: bool,
    /// Bit `i`: stage `i` wants the request body.
    body_stages: u64,
}

impl Scratch {
    /// Working space for `chain`, with its stages' [`crate::Needs`] summed up
    /// so no request pays for asking each stage again.
    pub fn for_chain<C: Chain>(chain: &C) -> Self {
        let mut sc = Scratch::default();
        for i in 0..C::LEN {
            let n = chain.needs(i);
            sc.any_facts |= n.facts;
            sc.any_response_headers |= n.response_headers;
            sc.any_log |= n.log;
            if n.request_body.is_some() {
                sc.body_stages |= 1u64.checked_shl(i as u32).unwrap_or(0);
            }
        }
        sc
    }

    fn wants_body(&self, i: usize) -> bool {
        self.body_stages & 1u64.checked_shl(i as u32).unwrap_or(0) != 0
    }
}

/// One stream's progress through the chain.
pub struct Stream<C: Chain> {
    state: C::State,
    facts: Facts,
    phase: Phase,
    request_complete: bool,
}

impl<C: Chain> Default for Stream<C> {
    fn default() -> Self {
        Self {
            state: C::State::default(),
            facts: Facts::default(),
            phase: Phase::Start,
            request_complete: false,
        }
    }
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
        self.phase == Phase::Replied
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
        self.request_complete = end_of_stream;
        if self.phase != Phase::Start {
            return Flow::Continue;
        }
        self.run(chain, p, sc, 0, Entry::Headers)
    }

    pub fn on_request_body<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        self.request_complete = end_of_stream;
        match self.phase {
            Phase::AwaitBody { stage } => {
                let max = chain.needs(stage).request_body.unwrap_or(0);
                if !end_of_stream && body_size < max {
                    return Flow::Pause; // keep buffering
                }
                self.run_body(chain, p, sc, stage, body_size, max)
            }
            // Body arriving while a callout is pending: the proxy buffers it.
            Phase::Waiting { .. } => Flow::Pause,
            _ => Flow::Continue,
        }
    }

    /// A callout answered. `num_headers == 0` means it failed or timed out.
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
            in_body,
        } = self.phase
        else {
            return; // late answer after a local reply, or not ours
        };
        if token != want {
            return;
        }
        let (raw_headers, body) = if num_headers == 0 {
            (Vec::new(), Vec::new())
        } else {
            p.callout_response(num_headers, body_size)
        };
        let reply_headers = PairsView::parse(&raw_headers).unwrap_or_else(PairsView::empty);
        let reply = if num_headers == 0 {
            Reply::Failed
        } else {
            let status = reply_headers
                .first(":status")
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Reply::Response {
                status,
                headers: &reply_headers,
                body: &body,
            }
        };
        let raw = p.headers(MapKind::Request);
        let parsed = raw.as_deref().and_then(PairsView::parse);
        let empty = PairsView::empty();
        let view = parsed.as_ref().unwrap_or(&empty);
        let step = {
            let mut rq = Message::new(view, &mut sc.edits);
            let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, sc.any_facts);
            chain.on_callout(stage, reply, &mut rq, &mut self.state, &mut cx)
        };
        self.flush_bumps(p, sc);
        match self.after_step(chain, p, sc, stage, step) {
            Some(flow) => {
                if flow == Flow::Continue {
                    p.resume_request();
                }
            }
            None => {
                // The stage is done with its callout: its body hook (if it
                // wants one) and then the rest of the chain.
                let entry = if in_body {
                    Entry::Next
                } else {
                    Entry::AfterHeaders
                };
                if self.run(chain, p, sc, stage, entry) == Flow::Continue {
                    p.resume_request();
                }
            }
        }
    }

    pub fn on_response_headers<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
    ) -> Flow {
        let wants = sc.any_response_headers;
        let raw = if wants {
            p.headers(MapKind::Response)
        } else {
            None
        };
        let view = raw
            .as_deref()
            .and_then(PairsView::parse)
            .unwrap_or_else(PairsView::empty);
        sc.edits.clear();
        let wanted = sc.any_facts;
        for i in 0..C::LEN {
            let mut rs = Message::new(&view, &mut sc.edits);
            let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, wanted);
            chain.on_response_headers(i, &mut rs, &mut self.state, &mut cx);
        }
        sc.edits.plan(|e| p.edit(MapKind::Response, &e));
        sc.edits.clear();
        self.flush_bumps(p, sc);
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
        let mut facts = std::mem::take(&mut self.facts);
        for i in (0..C::LEN).filter(|i| chain.needs(*i).log) {
            let view = LogView {
                request: &request,
                response: &response,
                facts: &facts,
            };
            let mut scratch = Facts::default();
            let mut cx = Cx::new(p, &mut scratch, &mut sc.bumps, false);
            chain.on_log(i, &view, &self.state, &mut cx);
        }
        std::mem::swap(&mut self.facts, &mut facts);
        self.flush_bumps(p, sc);
    }

    /// Runs stages from `from`, entering it at `entry`.
    fn run<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        from: usize,
        entry: Entry,
    ) -> Flow {
        let raw = p.headers(MapKind::Request);
        let parsed = raw.as_deref().and_then(PairsView::parse);
        let Some(view) = parsed else {
            return self.headers_unreadable(chain, p, sc);
        };
        let mut i = from;
        let mut entry = entry;
        while i < C::LEN {
            if entry == Entry::Headers {
                let step = {
                    let mut rq =
                        Message::new(&view, &mut sc.edits).with_body(None, self.request_complete);
                    let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, sc.any_facts);
                    chain.on_request_headers(i, &mut rq, &mut self.state, &mut cx)
                };
                self.flush_bumps(p, sc);
                if let Some(flow) = self.after_step(chain, p, sc, i, step) {
                    return flow;
                }
            }
            if entry != Entry::Next && sc.wants_body(i) {
                if !self.request_complete {
                    self.apply_request_edits(p, sc);
                    self.phase = Phase::AwaitBody { stage: i };
                    return Flow::Pause;
                }
                // The whole request was in the headers: the body is empty.
                let step = {
                    let mut rq = Message::new(&view, &mut sc.edits).with_body(Some(&[]), true);
                    let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, sc.any_facts);
                    chain.on_request_body(i, &mut rq, &mut self.state, &mut cx)
                };
                self.flush_bumps(p, sc);
                if let Some(flow) = self.after_step_in_body(chain, p, sc, i, step) {
                    return flow;
                }
            }
            i += 1;
            entry = Entry::Headers;
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
        stage: usize,
        size: usize,
        max: usize,
    ) -> Flow {
        let body = p.request_body(size, max);
        let raw = p.headers(MapKind::Request);
        let parsed = raw.as_deref().and_then(PairsView::parse);
        let empty = PairsView::empty();
        let view = parsed.as_ref().unwrap_or(&empty);
        let step = {
            let complete = self.request_complete && size <= max;
            let mut rq = Message::new(view, &mut sc.edits).with_body(Some(&body), complete);
            let mut cx = Cx::new(p, &mut self.facts, &mut sc.bumps, sc.any_facts);
            chain.on_request_body(stage, &mut rq, &mut self.state, &mut cx)
        };
        self.flush_bumps(p, sc);
        if let Some(flow) = self.after_step_in_body(chain, p, sc, stage, step) {
            return flow;
        }
        self.run(chain, p, sc, stage, Entry::Next)
    }

    /// `None`: the stage continued. `Some(flow)`: stop here.
    fn after_step<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        i: usize,
        step: Step,
    ) -> Option<Flow> {
        self.after(chain, p, sc, i, step, false)
    }

    fn after_step_in_body<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        i: usize,
        step: Step,
    ) -> Option<Flow> {
        self.after(chain, p, sc, i, step, true)
    }

    fn after<P: Proxy>(
        &mut self,
        _chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        i: usize,
        step: Step,
        in_body: bool,
    ) -> Option<Flow> {
        match step {
            Step::Continue => None,
            Step::Wait(token) => {
                // Edits go to the proxy now: the headers are re-read on resume.
                self.apply_request_edits(p, sc);
                self.phase = Phase::Waiting {
                    stage: i,
                    token,
                    in_body,
                };
                Some(Flow::Pause)
            }
            Step::Respond(reply) => {
                sc.edits.clear();
                self.phase = Phase::Replied;
                p.send_reply(&reply);
                Some(Flow::Pause)
            }
        }
    }

    fn apply_request_edits<P: Proxy>(&mut self, p: &mut P, sc: &mut Scratch) {
        if sc.edits.is_empty() {
            return;
        }
        sc.edits.plan(|e| p.edit(MapKind::Request, &e));
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
            for name in chain.owned_request_headers(i) {
                Message::new(&view, &mut sc.edits).remove(name);
            }
        }
        sc.edits.plan(|e| p.edit(MapKind::Request, &e));
        sc.edits.clear();
        for i in 0..C::LEN {
            if let Step::Respond(reply) = chain.when_headers_unreadable(i) {
                self.phase = Phase::Replied;
                p.send_reply(&reply);
                return Flow::Pause;
            }
        }
        self.phase = Phase::Forwarded;
        Flow::Continue
    }

    fn flush_bumps<P: Proxy>(&mut self, p: &mut P, sc: &mut Scratch) {
        sc.bumps.drain(|id, delta| p.bump(id, delta));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Run the stage's headers hook.
    Headers,
    /// Its headers hook (and callout) are done: body hook next if wanted.
    AfterHeaders,
    /// The stage is done: go on with the next one.
    Next,
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
                *slot = Some(now + period);
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
        let (raw, body) = if num_headers == 0 {
            (Vec::new(), Vec::new())
        } else {
            p.callout_response(num_headers, body_size)
        };
        let headers = PairsView::parse(&raw).unwrap_or_else(PairsView::empty);
        let reply = if num_headers == 0 {
            Reply::Failed
        } else {
            let status = headers
                .first(":status")
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Reply::Response {
                status,
                headers: &headers,
                body: &body,
            }
        };
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
