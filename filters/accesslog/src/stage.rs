//! accesslog as a meshguard stage: in the log phase, decide whether the
//! request is logged, render the record, write it as a log line and/or
//! buffer it for shipping; on ticks, ship batches from the root context.

use meshguard_common::config::{ConfigError, JsonPath};
use meshguard_stage::{
    Cx, FactKinds, Facts, LogView, MetricId, MetricsRegistry, Needs, Reply, Request, RootCx, Stage,
    Step, Token,
};
use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::config::{AccessLogConfig, LineLevel};
use crate::record::{Props, Recorder};
use crate::ship::{Counts, Shipper};

/// Metric ids, defined once per configuration.
struct Metrics {
    /// `meshguard_accesslog_records`: records written (line and/or buffer)
    records: MetricId,
    /// `meshguard_accesslog_sampled_out`: successes not logged by sampling
    sampled_out: MetricId,
    /// `meshguard_accesslog_excluded`: requests on excluded paths
    excluded: MetricId,
    /// `meshguard_accesslog_dropped`: records lost before the collector
    /// accepted them (buffer full, retries exhausted, rejected)
    dropped: MetricId,
    /// `meshguard_accesslog_shipped`: records the collector accepted
    shipped: MetricId,
    /// `meshguard_accesslog_ship_failures`: failed send attempts
    ship_failures: MetricId,
    /// `meshguard_accesslog_retries`: batches sent again
    retries: MetricId,
    /// `meshguard_accesslog_buffer_bytes` (gauge): bytes held for shipping
    buffer_bytes: MetricId,
}

/// The accesslog stage.
pub struct AccessLog {
    recorder: Recorder,
    line: Option<log::Level>,
    metrics: Metrics,
    /// One per worker VM; the stage is shared by the VM's streams, which
    /// never run concurrently.
    shipper: Option<RefCell<ShipState>>,
    /// Per-record counters (records, sampled out, excluded), added up in
    /// this worker and handed to the proxy on the timer: a host call per
    /// second instead of one per request.
    pending: Cell<Pending>,
    /// The facts read from filter state when this chain has none.
    state_facts: FactKinds,
}

#[derive(Clone, Copy, Default)]
struct Pending {
    records: i64,
    sampled_out: i64,
    excluded: i64,
}

/// How often the per-record counters reach the proxy when no shipping
/// timer runs (a shipping timer, faster, does it too).
const COUNTER_PERIOD: Duration = Duration::from_secs(1);

struct ShipState {
    shipper: Shipper,
    /// The buffer size last reported through the gauge.
    reported: i64,
}

impl AccessLog {
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    fn counts(&self, c: Counts, bump: &mut dyn FnMut(MetricId, i64)) {
        let m = &self.metrics;
        for (id, n) in [
            (m.shipped, c.shipped),
            (m.dropped, c.dropped),
            (m.ship_failures, c.failures),
            (m.retries, c.retries),
        ] {
            if n > 0 {
                bump(id, i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    fn pend(&self, f: impl FnOnce(&mut Pending)) {
        let mut p = self.pending.get();
        f(&mut p);
        self.pending.set(p);
    }

    /// Hands the per-record counters to the proxy.
    fn flush_pending(&self, bump: &mut dyn FnMut(MetricId, i64)) {
        let p = self.pending.take();
        let m = &self.metrics;
        for (id, n) in [
            (m.records, p.records),
            (m.sampled_out, p.sampled_out),
            (m.excluded, p.excluded),
        ] {
            if n > 0 {
                bump(id, n);
            }
        }
    }

    fn report_buffer(&self, st: &mut ShipState, bump: &mut dyn FnMut(MetricId, i64)) {
        let now = i64::try_from(st.shipper.held_bytes()).unwrap_or(i64::MAX);
        if now != st.reported {
            bump(self.metrics.buffer_bytes, now - st.reported);
            st.reported = now;
        }
    }
}

impl Stage for AccessLog {
    const NAME: &'static str = "accesslog";
    const CONFIG_KEY: &'static str = "accesslog";
    type Config = AccessLogConfig;
    type PerRequest = ();

    fn build(
        config: AccessLogConfig,
        at: &JsonPath,
        m: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError> {
        config.validate_at(at)?;
        let metrics = Metrics {
            records: m.counter("meshguard_accesslog_records"),
            sampled_out: m.counter("meshguard_accesslog_sampled_out"),
            excluded: m.counter("meshguard_accesslog_excluded"),
            dropped: m.counter("meshguard_accesslog_dropped"),
            shipped: m.counter("meshguard_accesslog_shipped"),
            ship_failures: m.counter("meshguard_accesslog_ship_failures"),
            retries: m.counter("meshguard_accesslog_retries"),
            buffer_bytes: m.gauge("meshguard_accesslog_buffer_bytes"),
        };
        let line = config
            .log_line
            .enabled
            .then_some(match config.log_line.level {
                LineLevel::Info => log::Level::Info,
                LineLevel::Warn => log::Level::Warn,
                LineLevel::Error => log::Level::Error,
            });
        let shipper = config.ship.as_ref().map(|s| {
            RefCell::new(ShipState {
                shipper: Shipper::new(s, &config.tags),
                reported: 0,
            })
        });
        log::info!(
            "accesslog: configured (log line: {}, shipping: {})",
            if line.is_some() { "on" } else { "off" },
            config
                .ship
                .as_ref()
                .map(|s| format!("{:?} to cluster {}", s.format, s.cluster))
                .unwrap_or_else(|| "off".into())
        );
        Ok(Self {
            recorder: Recorder::new(&config),
            line,
            metrics,
            shipper,
            pending: Cell::new(Pending::default()),
            state_facts: config.fact_kinds(),
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            log: true,
            facts: true,
            // Nothing before the log phase (in a chain, earlier stages'
            // facts reach the log hook without a request hook here).
            log_only: true,
            tick: Some(
                self.shipper
                    .as_ref()
                    .and_then(|s| s.try_borrow().ok().map(|s| s.shipper.tick_period()))
                    .map_or(COUNTER_PERIOD, |p| p.min(COUNTER_PERIOD)),
            ),
            ..Needs::default()
        }
    }

    fn on_request_headers(&self, _rq: &mut Request<'_>, _st: &mut (), _cx: &mut Cx<'_>) -> Step {
        Step::Continue
    }

    fn on_log(&self, log: &LogView<'_>, _st: &(), cx: &mut Cx<'_>) {
        let m = &self.metrics;
        if self.recorder.excluded(log.request) {
            self.pend(|p| p.excluded += 1);
            return;
        }
        let mut props = Props::read_outcome(cx.host(), log.response);
        let sampled = self.recorder.sampled(log.request, &props, || {
            let mut b = [0u8; 4];
            cx.host().random(&mut b);
            u32::from_le_bytes(b)
        });
        if !sampled {
            self.pend(|p| p.sampled_out += 1);
            return;
        }
        props.read_rest(cx.host());
        // Facts from this VM's chain; what is missing, from filter state
        // (modules in other VMs, or this module as an access logger).
        let from_state;
        let want = FactKinds {
            identity: self.state_facts.identity && log.facts.identity.is_none(),
            variants: self.state_facts.variants && log.facts.variants.is_empty(),
            rate_limit: self.state_facts.rate_limit && log.facts.rate_limit.is_none(),
        };
        let facts: &Facts = if want.any() {
            let state = Facts::from_filter_state(cx.host(), want);
            from_state = Facts {
                identity: log.facts.identity.clone().or(state.identity),
                variants: if log.facts.variants.is_empty() {
                    state.variants
                } else {
                    log.facts.variants.clone()
                },
                rate_limit: log.facts.rate_limit.or(state.rate_limit),
            };
            &from_state
        } else {
            log.facts
        };
        let now = cx.host().now();
        let rendered = self
            .recorder
            .render(log.request, log.response, &props, facts, now);
        if let Some(level) = self.line {
            log::log!(level, "{}", rendered.line);
        }
        self.pend(|p| p.records += 1);
        if let Some(cell) = &self.shipper {
            let Ok(mut st) = cell.try_borrow_mut() else {
                cx.count(m.dropped);
                return;
            };
            // The buffer gauge follows on the timer.
            if st.shipper.push(&rendered, now).is_err() {
                cx.count(m.dropped);
            }
        }
    }

    fn on_tick(&self, cx: &mut RootCx<'_>) {
        self.flush_pending(&mut |id, d| cx.add(id, d));
        let Some(cell) = &self.shipper else {
            return;
        };
        let Ok(mut st) = cell.try_borrow_mut() else {
            return;
        };
        let now = cx.host().now();
        let counts = st.shipper.tick(now, &mut |call| cx.http_call(call));
        self.counts(counts, &mut |id, d| cx.add(id, d));
        self.report_buffer(&mut st, &mut |id, d| cx.add(id, d));
    }

    fn on_root_callout(&self, token: Token, reply: Reply<'_>, cx: &mut RootCx<'_>) {
        let Some(cell) = &self.shipper else {
            return;
        };
        let Ok(mut st) = cell.try_borrow_mut() else {
            return;
        };
        let now = cx.host().now();
        let mut counts = Counts::default();
        st.shipper.on_reply(token, reply, now, &mut counts);
        // Room freed and retries due: send on right away rather than at the
        // next tick.
        let more = st.shipper.tick(now, &mut |call| cx.http_call(call));
        counts.shipped += more.shipped;
        counts.dropped += more.dropped;
        counts.failures += more.failures;
        counts.retries += more.retries;
        self.counts(counts, &mut |id, d| cx.add(id, d));
        self.report_buffer(&mut st, &mut |id, d| cx.add(id, d));
    }
}
