//! Global mode: rules decided by a rate-limit service speaking Envoy's
//! `RateLimitService/ShouldRateLimit` (meshguard-rls, Limitador,
//! envoyproxy/ratelimit), so many Envoys share one limit. The matching
//! global rules become one call's descriptors, after the local rules let
//! the request through.

use std::borrow::Cow;
use std::rc::Rc;
use std::time::Duration;

use meshguard_common::metrics::name;
use meshguard_common::num::{push_u64, u64_text};
use meshguard_stage::{
    Cx, GrpcCallout, LocalReply, MetricId, MetricsRegistry, RateLimitVerdict, Reply, Request, Step,
};

use super::{Matcher, PerRequest, RateLimit};
use crate::config::{GlobalConfig, KeyPart, OnError, RuleConfig, WhenKeyMissing};
use crate::rls;

pub(super) struct GlobalRule {
    name: Rc<str>,
    matcher: Option<Matcher>,
    /// (descriptor entry key, part)
    parts: Vec<(String, KeyPart)>,
    missing: WhenKeyMissing,
    key_missing: MetricId,
}

pub(super) struct Global {
    cluster: String,
    domain: String,
    timeout: Duration,
    on_error: OnError,
    rules: Vec<GlobalRule>,
    allowed: MetricId,
    limited: MetricId,
    errors: MetricId,
}

/// A global call in flight: which rules it asked about, and what the local
/// rules decided.
pub(super) struct Waiting {
    rules: Vec<usize>,
    local: Option<RateLimitVerdict>,
}

/// Most headers, and bytes of them, taken from one service answer.
const MAX_SERVICE_HEADERS: usize = 16;
const MAX_SERVICE_HEADER_BYTES: usize = 8192;
/// The longest `Retry-After` a service can make the filter send (a day).
const MAX_RETRY_AFTER: u64 = 86_400;

/// Headers the service may not set: framing and hop-by-hop headers (they
/// could desync a connection), Envoy's own, cookies and redirects, and the
/// identity other meshguard stages vouch for.
fn forbidden(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
            | "host"
            | "set-cookie"
            | "location"
    ) || name.starts_with("x-envoy-")
        || name.starts_with(':')
        || name == meshguard_common::contract::IDENTITY_HEADER
}

/// The service's headers the filter applies: lowercase names, forbidden
/// ones dropped, at most [`MAX_SERVICE_HEADERS`] and
/// [`MAX_SERVICE_HEADER_BYTES`].
fn service_headers(from: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for (k, v) in from {
        let k = k.to_ascii_lowercase();
        if forbidden(&k) {
            continue;
        }
        bytes += k.len() + v.len();
        if out.len() >= MAX_SERVICE_HEADERS || bytes > MAX_SERVICE_HEADER_BYTES {
            break;
        }
        out.push((k, v.clone()));
    }
    out
}

/// The descriptor key of a key part: `client_ip`, `path`, or the header's
/// name with `-` as `_` (`x-user-id` → `x_user_id`), so a Limitador
/// condition reads `descriptors[0].x_user_id`.
fn entry_key(part: &KeyPart) -> String {
    match part {
        KeyPart::ClientIp => "client_ip".into(),
        KeyPart::Path => "path".into(),
        KeyPart::Header(h) => h.to_ascii_lowercase().replace('-', "_"),
    }
}

pub(super) fn build(
    g: &GlobalConfig,
    rules: &[RuleConfig],
    reg: &mut dyn MetricsRegistry,
) -> Global {
    Global {
        cluster: g.cluster.clone(),
        domain: g.domain.clone(),
        timeout: Duration::from_millis(g.timeout_ms),
        on_error: g.on_error,
        rules: rules
            .iter()
            .filter(|r| r.global)
            .map(|r| GlobalRule {
                name: Rc::from(r.name.as_str()),
                matcher: r.match_.as_ref().map(Matcher::new),
                parts: r
                    .key
                    .iter()
                    .map(|k| {
                        let k = match k {
                            KeyPart::Header(h) => KeyPart::Header(h.to_ascii_lowercase()),
                            other => other.clone(),
                        };
                        (entry_key(&k), k)
                    })
                    .collect(),
                missing: r.when_key_missing.clone(),
                key_missing: reg.counter(&name("meshguard_ratelimit_key_missing", &[&r.name])),
            })
            .collect(),
        allowed: reg.counter("meshguard_ratelimit_global_allowed"),
        limited: reg.counter("meshguard_ratelimit_global_limited"),
        errors: reg.counter("meshguard_ratelimit_service_errors"),
    }
}

impl RateLimit {
    /// Asks the service about the matching global rules; `None` when none
    /// matches (the request goes on).
    pub(super) fn ask_global<'r>(
        &self,
        rq: &'r Request<'_>,
        st: &mut PerRequest,
        cx: &mut Cx<'_>,
        local: Option<RateLimitVerdict>,
        ip: &mut Option<Option<String>>,
        path: &mut Option<Option<Cow<'r, [u8]>>>,
    ) -> Option<Step> {
        let g = self.global.as_ref()?;
        let mut asked = Vec::new();
        let mut descriptors: Vec<Vec<(&str, Vec<u8>)>> = Vec::new();
        'rules: for (i, rule) in g.rules.iter().enumerate() {
            if rule.matcher.as_ref().is_some_and(|m| !m.matches(rq, path)) {
                continue;
            }
            let mut entries: Vec<(&str, Vec<u8>)> = vec![("rule", rule.name.as_bytes().to_vec())];
            for (key, part) in &rule.parts {
                // `Entry.value` is a protobuf string: a header value that is
                // not UTF-8 would make the service refuse the whole call (and
                // with `on_error: allow` let the request through).
                let value = self
                    .part_value(part, rq, cx, ip, path)
                    .filter(|v| std::str::from_utf8(v).is_ok());
                let value = match (value, &rule.missing) {
                    (Some(v), _) => v.to_vec(),
                    (None, WhenKeyMissing::Fallback(f)) => f.as_bytes().to_vec(),
                    (None, WhenKeyMissing::Skip) => {
                        cx.count(rule.key_missing);
                        continue 'rules;
                    }
                };
                entries.push((key.as_str(), value));
            }
            asked.push(i);
            descriptors.push(entries);
            // The first matching global rule only: its descriptor is always
            // `descriptors[0]`, the one limits' CEL reads (meshguard-rls and
            // Limitador bind descriptors by position).
            break;
        }
        if descriptors.is_empty() {
            return None;
        }
        let borrowed: Vec<Vec<(&str, &[u8])>> = descriptors
            .iter()
            .map(|d| d.iter().map(|(k, v)| (*k, v.as_slice())).collect())
            .collect();
        let message = rls::encode_request(&g.domain, &borrowed, 1);
        let call = GrpcCallout {
            cluster: &g.cluster,
            service: rls::SERVICE,
            method: rls::METHOD,
            metadata: Vec::new(),
            message: &message,
            timeout: g.timeout,
        };
        match cx.grpc_call(&call) {
            Ok(token) => {
                st.global = Some(Waiting {
                    rules: asked,
                    local,
                });
                Some(Step::Wait(token))
            }
            Err(e) => {
                log::warn!(
                    "ratelimit: cannot call the rate-limit service (cluster `{}`): {e:?}",
                    g.cluster
                );
                Some(self.global_failed(g, st, local, cx))
            }
        }
    }

    fn global_failed(
        &self,
        g: &Global,
        st: &mut PerRequest,
        local: Option<RateLimitVerdict>,
        cx: &mut Cx<'_>,
    ) -> Step {
        cx.count(g.errors);
        if g.on_error == OnError::Deny {
            return Step::Respond(self.unavailable());
        }
        self.record(local, cx);
        let _ = st;
        Step::Continue
    }

    /// The service's answer.
    pub(super) fn global_answered(
        &self,
        reply: Reply<'_>,
        rq: &mut Request<'_>,
        st: &mut PerRequest,
        cx: &mut Cx<'_>,
    ) -> Step {
        let (Some(g), Some(w)) = (self.global.as_ref(), st.global.take()) else {
            return Step::Continue;
        };
        let decoded = match reply {
            Reply::Grpc { status: 0, message } => rls::decode_response(message),
            _ => None,
        };
        let Some(r) = decoded else {
            return self.global_failed(g, st, w.local, cx);
        };
        for (k, v) in service_headers(&r.request_headers) {
            rq.add(k, v);
        }
        if r.overall != rls::Code::OverLimit {
            cx.count(g.allowed);
            st.global_headers = service_headers(&r.response_headers);
            self.record(w.local.or(Some(RateLimitVerdict::Allowed)), cx);
            return Step::Continue;
        }
        cx.count(g.limited);
        self.record(Some(RateLimitVerdict::Limited), cx);
        // The rule: the first descriptor the service says is over (when it
        // fills `statuses`, in descriptor order), else the first asked.
        let over = r.statuses.iter().position(|s| s.over_limit).unwrap_or(0);
        let rule = w
            .rules
            .get(over)
            .or(w.rules.first())
            .and_then(|i| g.rules.get(*i))
            .map(|r| r.name.as_ref())
            .unwrap_or("global");
        let reset = r
            .statuses
            .iter()
            .filter(|s| s.over_limit)
            .filter_map(|s| s.reset_s)
            .min()
            .or_else(|| {
                r.response_headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("x-ratelimit-reset"))
                    .and_then(|(_, v)| std::str::from_utf8(v).ok())
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(1)
            .clamp(1, MAX_RETRY_AFTER);
        let mut body = String::with_capacity(rule.len() + 80);
        body.push_str("{\"error\":\"rate_limited\",\"rule\":\"");
        body.push_str(rule);
        body.push_str("\",\"retry_after_seconds\":");
        push_u64(&mut body, reset);
        body.push_str("}\n");
        let mut reply = LocalReply::new(429, body)
            .header("content-type", "application/json")
            .header("retry-after", u64_text(reset))
            .details("meshguard_ratelimit_global_limited");
        for (k, v) in service_headers(&r.response_headers) {
            if k != "retry-after" && k != "content-type" {
                reply = reply.header(k, v);
            }
        }
        Step::Respond(reply)
    }
}
