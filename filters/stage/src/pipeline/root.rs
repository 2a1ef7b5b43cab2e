//! Root-level driver: timers and the callouts stages make from them.

use std::time::SystemTime;

use meshguard_common::headers::PairsView;

use crate::chain::Chain;
use crate::host::{Bumps, Token};
use crate::stage::RootCx;

use super::{read_answer, reply_of, Proxy};

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
        let headers = super::parse_view(&raw).unwrap_or_else(PairsView::empty);
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
