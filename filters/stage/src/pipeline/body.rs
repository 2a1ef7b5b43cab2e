//! The body phase: buffering the request body for the stages that asked,
//! and running their body hooks (see the module docs of `pipeline`).

use meshguard_common::headers::PairsView;

use crate::chain::Chain;
use crate::message::Message;
use crate::stage::Cx;

use super::{Flow, MapKind, Next, Part, Phase, Proxy, Scratch, Stream};

impl<C: Chain> Stream<C> {
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

    pub(super) fn run_body<P: Proxy>(
        &mut self,
        chain: &C,
        p: &mut P,
        sc: &mut Scratch,
        from: usize,
        held: bool,
    ) -> Flow {
        if held {
            let raw = p.headers(MapKind::Request);
            let Some(view) = raw.as_deref().and_then(super::parse_view) else {
                return self.headers_unreadable(chain, p, sc);
            };
            return self.run_body_with(chain, p, sc, from, true, &view);
        }
        self.run_body_with(chain, p, sc, from, false, &PairsView::empty())
    }

    pub(super) fn run_body_with<P: Proxy>(
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
        let body_stages = self.body_mask;
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
}
