//! Ticks, callout deadlines and queue notifications: what Envoy's event
//! loop delivers to a worker as the (test-controlled) clock moves.

use std::time::Duration;

use super::Vm;
use crate::error::Error;
use crate::state::process::lock;

impl Vm {
    /// Fires `on_tick` once on the root context.
    pub fn tick(&mut self) -> Result<(), Error> {
        let root = self.root_context;
        let f = self.exports.on_tick.clone();
        self.invoke("proxy_on_tick", root, f, root as i32)
            .map(|_| ())
    }

    /// Tick period the guest asked for (None if never set or 0).
    pub fn tick_period(&self) -> Option<Duration> {
        match self.host().tick_period_ms {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        }
    }

    /// Moves the shared clock forward by `d`, firing this VM's ticks at
    /// each period boundary and timing out callouts whose deadline passes,
    /// in time order; then delivers queue notifications.
    pub fn advance_clock(&mut self, d: Duration) -> Result<(), Error> {
        let target = lock(&self.process)
            .now_unix_ns
            .saturating_add(d.as_nanos() as u64);
        while let Some(t) = self.next_timer_ns().filter(|t| *t <= target) {
            lock(&self.process).advance_to(t);
            self.fire_due_timers()?;
        }
        lock(&self.process).advance_to(target);
        self.poll()
    }

    /// Delivers what Envoy's event loop would deliver to this VM now: ticks
    /// and callout timeouts that are due, and `on_queue_ready` for items
    /// enqueued to queues this VM registered.
    pub fn poll(&mut self) -> Result<(), Error> {
        self.fire_due_timers()?;
        let vm = self.host().vm_number;
        let ready = lock(&self.process).queues.take_ready(vm);
        for (ctx, queue) in ready {
            let f = self.exports.on_queue_ready.clone();
            self.invoke("proxy_on_queue_ready", ctx, f, (ctx as i32, queue as i32))?;
        }
        Ok(())
    }

    fn next_timer_ns(&self) -> Option<u64> {
        let h = self.host();
        h.next_tick_ns
            .into_iter()
            .chain(h.callouts.next_deadline())
            .min()
    }

    fn fire_due_timers(&mut self) -> Result<(), Error> {
        let now = self.host().now_ns();
        let (http, grpc) = self.host().callouts.expired(now);
        for token in http {
            self.time_out_http_call(token)?;
        }
        for token in grpc {
            self.fail_grpc_call(token, 4, "gRPC call timed out")?;
        }
        if self.host().next_tick_ns.is_some_and(|t| t <= now) {
            let period = u64::from(self.host().tick_period_ms) * 1_000_000;
            // Envoy re-arms the timer after the callback, from "now".
            self.host_mut().next_tick_ns = Some(now + period);
            self.tick()?;
        }
        Ok(())
    }
}
