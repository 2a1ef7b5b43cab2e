//! proxy-wasm shell: moves data between Envoy and `Router`. No decisions here.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

use meshguard_common::headers::PairsView;
use meshguard_common::host::header_map_pairs;

use crate::router::{How, Router};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(AbRoot { state: None }) });
}}

fn log(level: LogLevel, msg: &str) {
    // Logging must never take the filter down; a failed log call is dropped.
    let _ = hostcalls::log(level, msg);
}

/// Counter ids, defined once per configuration.
struct Metrics {
    /// `[experiment][variant]`: `meshguard_ab_assigned.<experiment>.<variant>`
    assigned: Vec<Vec<u32>>,
    /// `[experiment][variant]`: `meshguard_ab_forced.<experiment>.<variant>`
    forced: Vec<Vec<u32>>,
    /// `[experiment]`: `meshguard_ab_unassigned.<experiment>`
    unassigned: Vec<u32>,
    /// `meshguard_ab_visitor_cookie_set`
    visitor_cookie_set: u32,
    /// `meshguard_ab_override_rejected`
    override_rejected: u32,
}

fn counter(name: &str) -> u32 {
    match hostcalls::define_metric(MetricType::Counter, name) {
        Ok(id) => id,
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!("ab-routing: cannot define metric {name}: {status:?}"),
            );
            // u32::MAX is never a valid id; incrementing it fails quietly.
            u32::MAX
        }
    }
}

fn bump(id: u32) {
    let _ = hostcalls::increment_metric(id, 1);
}

impl Metrics {
    fn define(router: &Router) -> Self {
        use meshguard_common::metrics::name;
        let mut assigned = Vec::new();
        let mut forced = Vec::new();
        let mut unassigned = Vec::new();
        for (exp, variants) in router.experiment_names() {
            assigned.push(
                variants
                    .iter()
                    .map(|v| counter(&name("meshguard_ab_assigned", &[exp, v])))
                    .collect(),
            );
            forced.push(
                variants
                    .iter()
                    .map(|v| counter(&name("meshguard_ab_forced", &[exp, v])))
                    .collect(),
            );
            unassigned.push(counter(&name("meshguard_ab_unassigned", &[exp])));
        }
        Self {
            assigned,
            forced,
            unassigned,
            visitor_cookie_set: counter("meshguard_ab_visitor_cookie_set"),
            override_rejected: counter("meshguard_ab_override_rejected"),
        }
    }

    fn get(table: &[Vec<u32>], e: usize, v: usize) -> Option<u32> {
        table.get(e).and_then(|row| row.get(v)).copied()
    }
}

struct State {
    router: Router,
    metrics: Metrics,
}

struct AbRoot {
    state: Option<Rc<State>>,
}

impl Context for AbRoot {}

impl RootContext for AbRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Router::from_json(&bytes) {
            Ok(router) => {
                let metrics = Metrics::define(&router);
                log(
                    LogLevel::Info,
                    &format!(
                        "ab-routing: configured {} experiment(s)",
                        router.experiment_names().count()
                    ),
                );
                self.state = Some(Rc::new(State { router, metrics }));
                true
            }
            Err(err) => {
                // Envoy refuses the filter; the message names the JSON path.
                log(LogLevel::Error, &format!("ab-routing: {err}"));
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AbStream {
            state: self.state.clone(),
            set_cookie: None,
        }))
    }
}

struct AbStream {
    state: Option<Rc<State>>,
    set_cookie: Option<String>,
}

impl Context for AbStream {}

impl AbStream {
    /// When the headers cannot be read, assign nothing but still make sure
    /// no client-sent variant or override header reaches the upstream.
    fn strip_owned_headers(&self, router: &Router) -> Action {
        for name in router.owned_headers() {
            self.set_http_request_header(name, None);
        }
        Action::Continue
    }
}

impl HttpContext for AbStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(state) = self.state.clone() else {
            // Envoy never runs an unconfigured filter; if it ever did, fail
            // closed rather than forward client-forged variant headers.
            self.send_http_response(503, vec![], Some(b"ab-routing: not configured\n"));
            return Action::Pause;
        };
        // One buffer, read in place: the SDK's accessors would copy every
        // header (and its String accessor panics on non-UTF-8 values).
        let raw = match header_map_pairs(MapType::HttpRequestHeaders) {
            Ok(raw) => raw,
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("ab-routing: cannot read request headers: {status:?}"),
                );
                return self.strip_owned_headers(&state.router);
            }
        };
        let Some(headers) = PairsView::parse(&raw) else {
            log(
                LogLevel::Error,
                "ab-routing: malformed header map from host",
            );
            return self.strip_owned_headers(&state.router);
        };
        let decision = state.router.decide(&headers, || {
            let mut id = [0u8; 16];
            getrandom::fill(&mut id).ok().map(|()| id)
        });
        for name in &decision.remove {
            self.set_http_request_header(name, None);
        }
        for h in &decision.set {
            if h.replace {
                // Envoy's replace drops every client value and appends ours.
                self.set_http_request_header(h.name, Some(h.value));
            } else {
                self.add_http_request_header(h.name, h.value);
            }
        }
        let m = &state.metrics;
        for a in &decision.assignments {
            let table = if a.how == How::Forced {
                &m.forced
            } else {
                &m.assigned
            };
            if let Some(id) = Metrics::get(table, a.experiment, a.variant) {
                bump(id);
            }
        }
        for e in &decision.unassigned {
            if let Some(id) = m.unassigned.get(*e) {
                bump(*id);
            }
        }
        if decision.override_rejected {
            bump(m.override_rejected);
        }
        if decision.set_cookie.is_some() {
            bump(m.visitor_cookie_set);
        }
        self.set_cookie = decision.set_cookie;
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(cookie) = self.set_cookie.take() {
            self.add_http_response_header("set-cookie", &cookie);
        }
        Action::Continue
    }
}
