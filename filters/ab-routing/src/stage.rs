//! ab-routing as a meshguard stage: the router's decision turned into
//! request edits, a response cookie, metrics and facts.

use std::rc::Rc;

use meshguard_common::config::{ConfigError, JsonPath};
use meshguard_common::metrics::name;
use meshguard_stage::{Cx, MetricId, MetricsRegistry, Request, Response, Stage, Step, Variant};

use crate::config::AbRoutingConfig;
use crate::router::{How, Router};

/// Counter ids, defined once per configuration.
struct Metrics {
    /// `[experiment][variant]`: `meshguard_ab_assigned.<experiment>.<variant>`
    assigned: Vec<Vec<MetricId>>,
    /// `[experiment][variant]`: `meshguard_ab_forced.<experiment>.<variant>`
    forced: Vec<Vec<MetricId>>,
    /// `[experiment]`: `meshguard_ab_unassigned.<experiment>`
    unassigned: Vec<MetricId>,
    /// `meshguard_ab_visitor_cookie_set`
    visitor_cookie_set: MetricId,
    /// `meshguard_ab_override_rejected`
    override_rejected: MetricId,
}

impl Metrics {
    fn define(router: &Router, m: &mut dyn MetricsRegistry) -> Self {
        let mut assigned = Vec::new();
        let mut forced = Vec::new();
        let mut unassigned = Vec::new();
        for (exp, variants) in router.experiment_names() {
            assigned.push(
                variants
                    .iter()
                    .map(|v| m.counter(&name("meshguard_ab_assigned", &[exp, v])))
                    .collect(),
            );
            forced.push(
                variants
                    .iter()
                    .map(|v| m.counter(&name("meshguard_ab_forced", &[exp, v])))
                    .collect(),
            );
            unassigned.push(m.counter(&name("meshguard_ab_unassigned", &[exp])));
        }
        Self {
            assigned,
            forced,
            unassigned,
            visitor_cookie_set: m.counter("meshguard_ab_visitor_cookie_set"),
            override_rejected: m.counter("meshguard_ab_override_rejected"),
        }
    }

    fn get(table: &[Vec<MetricId>], e: usize, v: usize) -> Option<MetricId> {
        table.get(e).and_then(|row| row.get(v)).copied()
    }
}

/// The ab-routing stage.
pub struct AbRouting {
    router: Router,
    metrics: Metrics,
}

impl AbRouting {
    pub fn router(&self) -> &Router {
        &self.router
    }
}

impl Stage for AbRouting {
    const NAME: &'static str = "ab-routing";
    const CONFIG_KEY: &'static str = "ab_routing";
    type Config = AbRoutingConfig;
    /// The `Set-Cookie` value for a new visitor, added to the response.
    type PerRequest = Option<String>;

    fn build(
        config: AbRoutingConfig,
        at: &JsonPath,
        metrics: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError> {
        config.validate_at(at)?;
        let router = Router::new(&config);
        let metrics = Metrics::define(&router, metrics);
        log::info!(
            "ab-routing: configured {} experiment(s)",
            router.experiment_names().count()
        );
        Ok(Self { router, metrics })
    }

    /// Variant headers: the pipeline strips client copies before any stage.
    fn owned_request_headers(&self) -> &[Rc<str>] {
        self.router.variant_header_names()
    }

    /// The QA override headers: read here, stripped here.
    fn private_request_headers(&self) -> &[Rc<str>] {
        self.router.override_header_names()
    }

    fn on_request_headers(
        &self,
        rq: &mut Request<'_>,
        set_cookie: &mut Self::PerRequest,
        cx: &mut Cx<'_>,
    ) -> Step {
        let decision = self.router.decide(&*rq, || {
            let mut id = [0u8; 16];
            cx.host().random(&mut id).then_some(id)
        });
        let owned = self.router.owned_header_names();
        for name in &decision.remove {
            if let Some(rc) = owned.iter().find(|o| o.as_ref() == *name) {
                rq.remove(rc);
            }
        }
        let m = &self.metrics;
        for a in &decision.assignments {
            let Some((exp, header, variant)) = self.router.assignment_names(a) else {
                continue;
            };
            rq.set(header, variant);
            if cx.facts_wanted() {
                cx.facts.variants.push(Variant {
                    experiment: Rc::clone(exp),
                    header: Rc::clone(header),
                    variant: Rc::clone(variant),
                });
            }
            let table = if a.how == How::Forced {
                &m.forced
            } else {
                &m.assigned
            };
            if let Some(id) = Metrics::get(table, a.experiment, a.variant) {
                cx.count(id);
            }
        }
        // The inter-filter contract: the assignments in filter state, so an
        // accesslog module in another VM (or Envoy's wasm access logger)
        // logs the variants without trusting any request header.
        let published = meshguard_stage::facts::publish_variants(
            cx.host(),
            decision
                .assignments
                .iter()
                .filter_map(|a| self.router.assignment_names(a))
                .map(|(exp, _, variant)| (exp.as_ref(), variant.as_ref())),
        );
        if !published {
            log::debug!("ab-routing: the proxy refused to store the variants in filter state");
        }
        for e in &decision.unassigned {
            if let Some(id) = m.unassigned.get(*e) {
                cx.count(*id);
            }
        }
        if decision.override_rejected {
            cx.count(m.override_rejected);
        }
        if decision.set_cookie.is_some() {
            cx.count(m.visitor_cookie_set);
        }
        *set_cookie = decision.set_cookie;
        Step::Continue
    }

    fn on_response_headers(
        &self,
        rs: &mut Response<'_>,
        set_cookie: &mut Self::PerRequest,
        _cx: &mut Cx<'_>,
    ) {
        if let Some(cookie) = set_cookie.take() {
            rs.add("set-cookie", cookie);
        }
    }
}
