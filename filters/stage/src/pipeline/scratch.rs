//! The per-VM working space the pipeline shares between streams.

use crate::chain::Chain;
use crate::host::{Bumps, MetricId, MetricsRegistry, Token};
use crate::message::Edits;

/// Working space for one hook: the edits and metric bumps it records, the
/// callouts it dispatched. All are applied and emptied before the callback
/// returns (a stream that waits has already applied its edits), so one
/// `Scratch` serves every stream of a VM: no allocation per request.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(super) edits: Edits,
    pub(super) bumps: Bumps,
    pub(super) dispatched: Vec<Token>,
    /// What the chain's stages need, summed up once.
    pub(super) any_facts: bool,
    pub(super) any_response_headers: bool,
    /// Every stage's response hook does nothing ([`crate::Needs::no_response_hook`]).
    pub(super) no_response_hooks: bool,
    pub(super) any_log: bool,
    /// Every stage is [`crate::Needs::log_only`].
    pub(super) all_log_only: bool,
    /// Bit `i`: stage `i` wants the request body.
    pub(super) body_stages: u64,
    /// The largest body any stage wants.
    pub(super) max_body: usize,
    /// Owned (output) headers of every stage after the first, stripped
    /// from the client before stage 0 runs.
    pub(super) owned: Vec<std::rc::Rc<str>>,
    /// `meshguard_refused_header_edits`.
    pub(super) refused_metric: MetricId,
}

impl Scratch {
    /// Whether some stage of the chain runs a log hook.
    pub fn any_log(&self) -> bool {
        self.any_log
    }

    /// Whether every stage of the chain works in the log phase only.
    pub fn all_log_only(&self) -> bool {
        self.all_log_only
    }

    /// Working space for `chain`, with its stages' [`crate::Needs`] summed up
    /// so no request pays for asking each stage again.
    pub fn for_chain<C: Chain>(chain: &C, metrics: &mut dyn MetricsRegistry) -> Self {
        let mut sc = Scratch {
            refused_metric: metrics.counter("meshguard_refused_header_edits"),
            all_log_only: true,
            no_response_hooks: true,
            ..Scratch::default()
        };
        for i in 0..C::LEN {
            let n = chain.needs(i);
            // A stage that owns request headers must strip client copies
            // of them before the upstream: never log-only.
            sc.all_log_only &= n.log_only && chain.owned_request_headers(i).is_empty();
            sc.any_facts |= n.facts;
            sc.any_response_headers |= n.response_headers;
            sc.no_response_hooks &= n.no_response_hook && !n.response_headers;
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
