//! The record: which requests are logged (exclusions, sampling) and the
//! `meshguard.access.v1` JSON line built from the request and response
//! headers (read in place), the proxy's log-phase properties and the facts
//! other meshguard filters decided. Plain data in, a line out.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshguard_common::hash::murmur3_32;
use meshguard_common::headers::{path_only, HeaderSource, PairsView};
use meshguard_stage::{Facts, Host};

use crate::config::{AccessLogConfig, QueryMode, SensitiveMode};
use crate::json;
use crate::SCHEMA;

/// Request headers a record reads, in one pass ([`HeaderSource::first_many`]).
const RQ_HEADERS: [&str; 11] = [
    ":method",
    ":authority",
    ":path",
    "x-envoy-original-path",
    "x-request-id",
    "traceparent",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "user-agent",
    "x-forwarded-for",
];
const METHOD: usize = 0;
const AUTHORITY: usize = 1;
const PATH: usize = 2;
const ORIGINAL_PATH: usize = 3;
const REQUEST_ID: usize = 4;
const TRACEPARENT: usize = 5;
const B3: usize = 6;
const B3_TRACE: usize = 7;
const B3_SPAN: usize = 8;
const USER_AGENT: usize = 9;
const XFF: usize = 10;

/// Envoy's response flags in bit order (`response.flags` is the legacy
/// bit-vector: bit i = the i-th flag), with `%RESPONSE_FLAGS%`'s short names.
pub const RESPONSE_FLAGS: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    "UDO",
];

/// `%RESPONSE_FLAGS%`-style names of a flags bit-vector (`UF,URX`); bits
/// past the table as hex. `None` when no flag is set.
pub fn flag_names(bits: u64) -> Option<String> {
    if bits == 0 {
        return None;
    }
    let mut out = String::new();
    for (i, name) in RESPONSE_FLAGS.iter().enumerate() {
        if bits & (1u64 << i) != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(name);
        }
    }
    let unknown = bits & !((1u64 << RESPONSE_FLAGS.len()) - 1);
    if unknown != 0 {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "0x{unknown:x}");
    }
    Some(out)
}

/// The proxy's log-phase properties (REFERENCE §7), decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    /// `request.time`
    pub start: Option<SystemTime>,
    /// `request.duration`
    pub duration: Option<Duration>,
    /// `response.code` (absent or 0: no response was sent)
    pub status: Option<u32>,
    /// `response.flags`
    pub flags: u64,
    /// `response.code_details`
    pub code_details: Option<Vec<u8>>,
    /// `request.size`: request body bytes (`%BYTES_RECEIVED%`)
    pub bytes_received: Option<u64>,
    /// `response.size`: response body bytes (`%BYTES_SENT%`)
    pub bytes_sent: Option<u64>,
    /// `request.protocol`
    pub protocol: Option<Vec<u8>>,
    /// `upstream.address`
    pub upstream_host: Option<Vec<u8>>,
    /// `xds.cluster_name` (or `cluster_name`): the upstream cluster
    pub upstream_cluster: Option<Vec<u8>>,
    /// `source.address`: the downstream peer
    pub downstream_address: Option<Vec<u8>>,
}

/// A `:status` value: three ASCII digits.
fn parse_status(v: &[u8]) -> Option<u32> {
    match v {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u32::from(a - b'0') * 100 + u32::from(b - b'0') * 10 + u32::from(c - b'0'))
        }
        _ => None,
    }
}

fn int(v: Option<Vec<u8>>) -> Option<i64> {
    let b: [u8; 8] = v?.as_slice().try_into().ok()?;
    Some(i64::from_le_bytes(b))
}

impl Props {
    /// Status and flags only: what sampling needs. The status comes from
    /// the response's `:status` (the headers are already read; Envoy sets
    /// `response.code` from them), the `response.code` property only when
    /// there is none (no response was sent): one host call when there is
    /// a response.
    pub fn read_outcome(host: &dyn Host, rs: &PairsView<'_>) -> Props {
        let status = rs.first(":status").and_then(parse_status).or_else(|| {
            int(host.property(&["response", "code"])).and_then(|c| u32::try_from(c).ok())
        });
        Props {
            status,
            flags: int(host.property(&["response", "flags"]))
                .map(|f| f as u64)
                .unwrap_or(0),
            ..Props::default()
        }
    }

    /// The rest, for a record that is logged.
    pub fn read_rest(&mut self, host: &dyn Host) {
        self.start = int(host.property(&["request", "time"]))
            .and_then(|ns| u64::try_from(ns).ok())
            .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns));
        self.duration = int(host.property(&["request", "duration"]))
            .and_then(|ns| u64::try_from(ns).ok())
            .map(Duration::from_nanos);
        self.code_details = host.property(&["response", "code_details"]);
        self.bytes_received =
            int(host.property(&["request", "size"])).and_then(|n| u64::try_from(n).ok());
        self.bytes_sent =
            int(host.property(&["response", "size"])).and_then(|n| u64::try_from(n).ok());
        self.protocol = host.property(&["request", "protocol"]);
        self.upstream_host = host.property(&["upstream", "address"]);
        // Envoy 1.40 answers `xds.cluster_name`; older ones `cluster_name`.
        self.upstream_cluster = host
            .property(&["xds", "cluster_name"])
            .or_else(|| host.property(&["cluster_name"]));
        self.downstream_address = host.property(&["source", "address"]);
    }

    /// An error outcome is always logged: status ≥ 400, no response at
    /// all, or any response flag.
    pub fn is_error(&self) -> bool {
        self.flags != 0 || self.status.is_none_or(|s| s == 0 || s >= 400)
    }
}

/// Why a request is not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Excluded,
    SampledOut,
}

/// The config compiled for the per-request path.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// `"environment":…,"workload":…,` pre-escaped.
    tags: String,
    query: QueryMode,
    redact_params: Vec<String>,
    request_headers: Vec<String>,
    response_headers: Vec<String>,
    sensitive: Vec<String>,
    sensitive_mode: SensitiveMode,
    exclude_exact: Vec<String>,
    exclude_prefix: Vec<String>,
    /// Successes whose bucket (0..10000) is below this are logged.
    success_threshold: u32,
}

/// A rendered record and what shipping needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub line: String,
    pub time: SystemTime,
    pub status: Option<u32>,
    pub error: bool,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
}

impl Recorder {
    pub fn new(c: &AccessLogConfig) -> Self {
        let mut tags = String::new();
        for (k, v) in [
            ("environment", &c.tags.environment),
            ("cluster", &c.tags.cluster),
            ("namespace", &c.tags.namespace),
            ("workload", &c.tags.workload),
        ] {
            let _ = write!(tags, "\"{k}\":");
            json::string(&mut tags, v);
            tags.push(',');
        }
        let lower =
            |v: &[String]| -> Vec<String> { v.iter().map(|s| s.to_ascii_lowercase()).collect() };
        let (exclude_prefix, exclude_exact): (Vec<String>, Vec<String>) = c
            .sampling
            .exclude_paths
            .iter()
            .cloned()
            .partition(|p| p.ends_with('*'));
        Self {
            tags,
            query: c.query.mode,
            redact_params: c.query.redact_params.clone(),
            request_headers: lower(&c.headers.request),
            response_headers: lower(&c.headers.response),
            sensitive: lower(&c.headers.sensitive),
            sensitive_mode: c.headers.sensitive_mode,
            exclude_exact,
            exclude_prefix: exclude_prefix
                .into_iter()
                .map(|p| p.trim_end_matches('*').to_string())
                .collect(),
            success_threshold: (c.sampling.success_rate * 10_000.0).round() as u32,
        }
    }

    /// Whether the path (query ignored) is excluded. Before any property read.
    pub fn excluded(&self, rq: &PairsView<'_>) -> bool {
        if self.exclude_exact.is_empty() && self.exclude_prefix.is_empty() {
            return false;
        }
        let path = path_only(rq.first(":path").unwrap_or_default());
        self.exclude_exact.iter().any(|p| p.as_bytes() == path)
            || self
                .exclude_prefix
                .iter()
                .any(|p| path.starts_with(p.as_bytes()))
    }

    /// Sampling: errors always; successes by a hash of `x-request-id`, so
    /// every proxy on a request's path keeps or drops it alike; `random`
    /// when the request has no id.
    pub fn sampled(
        &self,
        rq: &PairsView<'_>,
        outcome: &Props,
        random: impl FnOnce() -> u32,
    ) -> bool {
        if outcome.is_error() || self.success_threshold >= 10_000 {
            return true;
        }
        if self.success_threshold == 0 {
            return false;
        }
        let h = match rq.first("x-request-id") {
            Some(id) if !id.is_empty() => murmur3_32(id, 0),
            _ => random(),
        };
        h % 10_000 < self.success_threshold
    }

    /// The record. `now` stands in when the proxy has no `request.time`.
    pub fn render(
        &self,
        rq: &PairsView<'_>,
        rs: &PairsView<'_>,
        props: &Props,
        facts: &Facts,
        now: SystemTime,
    ) -> Rendered {
        let mut h: [Option<&[u8]>; RQ_HEADERS.len()] = [None; RQ_HEADERS.len()];
        rq.first_many(&RQ_HEADERS, &mut h);
        let get = |i: usize| h.get(i).copied().flatten();
        let mut invalid: Vec<String> = Vec::new();
        let mut o = String::with_capacity(640);
        let time = props.start.unwrap_or(now);

        o.push_str("{\"schema\":\"");
        o.push_str(SCHEMA);
        o.push_str("\",\"timestamp\":\"");
        json::push_rfc3339_millis(&mut o, time);
        o.push_str("\",");
        o.push_str(&self.tags);

        let mut field = |o: &mut String, name: &str, v: Option<&[u8]>| {
            o.push('"');
            o.push_str(name);
            o.push_str("\":");
            match v {
                Some(v) => {
                    if json::bytes(o, v) {
                        invalid.push(name.to_string());
                    }
                }
                None => o.push_str("null"),
            }
            o.push(',');
        };
        field(&mut o, "request_id", get(REQUEST_ID));
        let (trace_id, span_id) = trace_ids(get(TRACEPARENT), get(B3), get(B3_TRACE), get(B3_SPAN));
        field(&mut o, "trace_id", trace_id.as_deref().map(str::as_bytes));
        field(&mut o, "span_id", span_id.as_deref().map(str::as_bytes));
        field(&mut o, "method", get(METHOD));
        field(&mut o, "authority", get(AUTHORITY));
        let raw_path = get(ORIGINAL_PATH).or(get(PATH));
        let path = raw_path.map(|p| self.path(p));
        field(&mut o, "path", path.as_deref());
        field(&mut o, "protocol", props.protocol.as_deref());
        number(
            &mut o,
            "status",
            props.status.filter(|s| *s != 0).map(u64::from),
        );
        let flags = flag_names(props.flags);
        field(
            &mut o,
            "response_flags",
            flags.as_deref().map(str::as_bytes),
        );
        field(
            &mut o,
            "response_code_details",
            props.code_details.as_deref(),
        );
        number(&mut o, "bytes_received", props.bytes_received);
        number(&mut o, "bytes_sent", props.bytes_sent);
        o.push_str("\"duration_ms\":");
        match props.duration {
            Some(d) => {
                let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                json::push_u64(&mut o, us / 1000);
                o.push('.');
                let frac = us % 1000;
                for digit in [frac / 100, frac / 10 % 10, frac % 10] {
                    o.push(char::from(b'0' + digit as u8));
                }
            }
            None => o.push_str("null"),
        }
        o.push(',');
        let ust = rs
            .first("x-envoy-upstream-service-time")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        number(&mut o, "upstream_service_time_ms", ust);
        field(&mut o, "upstream_host", props.upstream_host.as_deref());
        field(
            &mut o,
            "upstream_cluster",
            props.upstream_cluster.as_deref(),
        );
        field(
            &mut o,
            "downstream_address",
            props.downstream_address.as_deref(),
        );
        field(&mut o, "user_agent", get(USER_AGENT));
        field(&mut o, "x_forwarded_for", get(XFF));

        o.push_str("\"identity\":");
        match &facts.identity {
            Some(id) => {
                o.push_str("{\"subject\":");
                json::string(&mut o, &id.subject);
                o.push_str(",\"issuer\":");
                match &id.issuer {
                    Some(i) => json::string(&mut o, i),
                    None => o.push_str("null"),
                }
                o.push('}');
            }
            None => o.push_str("null"),
        }
        o.push_str(",\"variants\":");
        if facts.variants.is_empty() {
            o.push_str("null");
        } else {
            o.push('{');
            for (i, v) in facts.variants.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                json::string(&mut o, &v.experiment);
                o.push(':');
                json::string(&mut o, &v.variant);
            }
            o.push('}');
        }
        o.push_str(",\"rate_limit\":");
        match facts.rate_limit {
            Some(r) => {
                o.push('"');
                o.push_str(r.as_str());
                o.push('"');
            }
            None => o.push_str("null"),
        }
        if !self.request_headers.is_empty() {
            o.push_str(",\"request_headers\":");
            self.headers(
                &mut o,
                rq,
                &self.request_headers,
                "request_headers",
                &mut invalid,
            );
        }
        if !self.response_headers.is_empty() {
            o.push_str(",\"response_headers\":");
            self.headers(
                &mut o,
                rs,
                &self.response_headers,
                "response_headers",
                &mut invalid,
            );
        }
        if !invalid.is_empty() {
            o.push_str(",\"invalid_utf8\":[");
            for (i, name) in invalid.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                json::string(&mut o, name);
            }
            o.push(']');
        }
        o.push('}');
        Rendered {
            line: o,
            time,
            status: props.status,
            error: props.is_error(),
            trace_id,
            span_id,
        }
    }

    /// The path as configured: query kept, dropped or with listed values
    /// redacted.
    pub fn path(&self, raw: &[u8]) -> Vec<u8> {
        match self.query {
            QueryMode::Keep => raw.to_vec(),
            QueryMode::Drop => path_only(raw).to_vec(),
            QueryMode::Redact => {
                let base = path_only(raw);
                let Some(query) = raw.get(base.len() + 1..) else {
                    return raw.to_vec();
                };
                let mut out = base.to_vec();
                out.push(b'?');
                for (i, param) in query.split(|b| *b == b'&').enumerate() {
                    if i > 0 {
                        out.push(b'&');
                    }
                    let name_len = param.iter().position(|b| *b == b'=').unwrap_or(param.len());
                    let name = param.get(..name_len).unwrap_or_default();
                    if self.redact_params.iter().any(|p| p.as_bytes() == name) {
                        out.extend_from_slice(name);
                        out.extend_from_slice(b"=REDACTED");
                    } else {
                        out.extend_from_slice(param);
                    }
                }
                out
            }
        }
    }

    /// `{"name":"v1,v2",…}` for the allow-listed headers present; repeated
    /// headers joined with `,` (as Envoy joins them); sensitive ones
    /// redacted or left out.
    fn headers(
        &self,
        o: &mut String,
        map: &PairsView<'_>,
        allow: &[String],
        section: &str,
        invalid: &mut Vec<String>,
    ) {
        // Most headers are none of the allowed: reject them by length first.
        let mut lengths: u64 = 0;
        for name in allow {
            lengths |= 1u64.checked_shl(name.len() as u32).unwrap_or(1);
        }
        let mut values: Vec<Option<Vec<u8>>> = vec![None; allow.len()];
        for (k, v) in map.pairs() {
            if lengths & 1u64.checked_shl(k.len() as u32).unwrap_or(1) == 0 {
                continue;
            }
            for (name, slot) in allow.iter().zip(values.iter_mut()) {
                if k.eq_ignore_ascii_case(name.as_bytes()) {
                    match slot {
                        Some(acc) => {
                            acc.push(b',');
                            acc.extend_from_slice(v);
                        }
                        None => *slot = Some(v.to_vec()),
                    }
                }
            }
        }
        o.push('{');
        let mut first = true;
        for (name, value) in allow.iter().zip(values) {
            let Some(value) = value else { continue };
            let sensitive = self.sensitive.iter().any(|s| s == name);
            if sensitive && self.sensitive_mode == SensitiveMode::Omit {
                continue;
            }
            if !first {
                o.push(',');
            }
            first = false;
            json::string(o, name);
            o.push(':');
            if sensitive {
                o.push_str("\"[REDACTED]\"");
            } else if json::bytes(o, &value) {
                invalid.push(format!("{section}.{name}"));
            }
        }
        o.push('}');
    }
}

fn number(o: &mut String, name: &str, v: Option<u64>) {
    o.push('"');
    o.push_str(name);
    o.push_str("\":");
    match v {
        Some(n) => json::push_u64(o, n),
        None => o.push_str("null"),
    }
    o.push(',');
}

fn is_hex(b: &[u8]) -> bool {
    b.iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn nonzero(b: &[u8]) -> bool {
    b.iter().any(|c| *c != b'0')
}

/// 32 lowercase hex trace id from a 16- or 32-hex-digit one (B3's 64-bit
/// ids are left-padded with zeros, as B3→W3C bridges do).
fn trace_id_of(b: &[u8]) -> Option<String> {
    let b = trim(b);
    let lower = b.to_ascii_lowercase();
    if !(lower.len() == 16 || lower.len() == 32) || !is_hex(&lower) || !nonzero(&lower) {
        return None;
    }
    let s = String::from_utf8(lower).ok()?;
    Some(format!("{s:0>32}"))
}

fn span_id_of(b: &[u8]) -> Option<String> {
    let lower = trim(b).to_ascii_lowercase();
    if lower.len() != 16 || !is_hex(&lower) || !nonzero(&lower) {
        return None;
    }
    String::from_utf8(lower).ok()
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Trace and span id: W3C `traceparent` first, then B3 single (`b3`), then
/// B3 multi (`x-b3-traceid`/`x-b3-spanid`). Malformed ids are ignored.
pub fn trace_ids(
    traceparent: Option<&[u8]>,
    b3: Option<&[u8]>,
    b3_trace: Option<&[u8]>,
    b3_span: Option<&[u8]>,
) -> (Option<String>, Option<String>) {
    if let Some(tp) = traceparent {
        // version-traceid-parentid-flags; version ff is invalid.
        let parts: Vec<&[u8]> = trim(tp).split(|c| *c == b'-').collect();
        if let [version, trace, span, flags, ..] = parts.as_slice() {
            if version.len() == 2
                && is_hex(version)
                && *version != b"ff"
                && trace.len() == 32
                && flags.len() == 2
            {
                if let (Some(t), Some(s)) = (trace_id_of(trace), span_id_of(span)) {
                    return (Some(t), Some(s));
                }
            }
        }
    }
    if let Some(b3) = b3 {
        let mut parts = trim(b3).split(|c| *c == b'-');
        if let (Some(t), Some(s)) = (parts.next(), parts.next()) {
            if let (Some(t), Some(s)) = (trace_id_of(t), span_id_of(s)) {
                return (Some(t), Some(s));
            }
        }
    }
    if let Some(t) = b3_trace.and_then(trace_id_of) {
        return (Some(t), b3_span.and_then(span_id_of));
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_sources() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice();
        assert_eq!(
            trace_ids(Some(tp), None, None, None),
            (
                Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                Some("00f067aa0ba902b7".into())
            )
        );
        // Invalid traceparent (all-zero trace id) falls through to B3.
        let bad = b"00-00000000000000000000000000000000-00f067aa0ba902b7-01".as_slice();
        let b3 = b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1".as_slice();
        assert_eq!(
            trace_ids(Some(bad), Some(b3), None, None),
            (
                Some("80f198ee56343ba864fe8b2a57d3eff7".into()),
                Some("e457b5a2e4d86bd1".into())
            )
        );
        assert_eq!(
            trace_ids(
                None,
                Some(b"1"),
                Some(b"463ac35c9f6413ad"),
                Some(b"A2FB4A1D1A96D312")
            ),
            (
                Some("0000000000000000463ac35c9f6413ad".into()),
                Some("a2fb4a1d1a96d312".into())
            )
        );
        assert_eq!(trace_ids(None, None, Some(b"xyz\"}"), None), (None, None));
        assert_eq!(
            trace_ids(
                Some(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                None,
                None,
                None
            ),
            (None, None)
        );
    }

    #[test]
    fn flags_render_like_envoy() {
        assert_eq!(flag_names(0), None);
        assert_eq!(flag_names(0x20).as_deref(), Some("UF"));
        assert_eq!(flag_names(0x20 | 0x8000).as_deref(), Some("UF,URX"));
        assert_eq!(flag_names(1 << 40).as_deref(), Some("0x10000000000"));
    }

    fn recorder(json: &str) -> Recorder {
        let c: AccessLogConfig = serde_json::from_str(json).unwrap();
        Recorder::new(&c)
    }

    #[test]
    fn query_modes() {
        let raw = b"/a/b?token=s3cr3t&x=1&token&tokens=2&=3".as_slice();
        assert_eq!(recorder("{}").path(raw), raw);
        assert_eq!(recorder(r#"{"query":{"mode":"drop"}}"#).path(raw), b"/a/b");
        assert_eq!(
            recorder(r#"{"query":{"mode":"redact","redact_params":["token"]}}"#).path(raw),
            b"/a/b?token=REDACTED&x=1&token=REDACTED&tokens=2&=3"
        );
        assert_eq!(
            recorder(r#"{"query":{"mode":"redact","redact_params":["token"]}}"#).path(b"/p"),
            b"/p"
        );
    }

    #[test]
    fn errors_are_always_sampled_successes_by_request_id() {
        let r = recorder(r#"{"sampling":{"success_rate":0.25}}"#);
        let mut kept = 0;
        for i in 0..4000 {
            let id = format!("req-{i}");
            let buf = meshguard_common::headers::encode_pairs(&[("x-request-id", id.as_str())]);
            let rq = PairsView::parse(&buf).unwrap();
            let ok = Props {
                status: Some(200),
                ..Props::default()
            };
            if r.sampled(&rq, &ok, || unreachable!()) {
                kept += 1;
            }
            // The same id always gives the same answer.
            assert_eq!(r.sampled(&rq, &ok, || 0), r.sampled(&rq, &ok, || 0));
            for err in [
                Props {
                    status: Some(404),
                    ..Props::default()
                },
                Props {
                    status: Some(200),
                    flags: 0x10,
                    ..Props::default()
                },
                Props {
                    status: None,
                    ..Props::default()
                },
            ] {
                assert!(r.sampled(&rq, &err, || 0));
            }
        }
        assert!((900..1100).contains(&kept), "{kept} of 4000 at 25%");
        let none = recorder(r#"{"sampling":{"success_rate":0}}"#);
        let rq = PairsView::empty();
        assert!(!none.sampled(
            &rq,
            &Props {
                status: Some(204),
                ..Props::default()
            },
            || 0
        ));
    }

    #[test]
    fn exclusions() {
        let r = recorder(r#"{"sampling":{"exclude_paths":["/healthz","/internal/*"]}}"#);
        for (path, want) in [
            ("/healthz", true),
            ("/healthz?probe=1", true),
            ("/healthzz", false),
            ("/internal/x", true),
            ("/internal", false),
            ("/", false),
        ] {
            let buf = meshguard_common::headers::encode_pairs(&[(":path", path)]);
            assert_eq!(r.excluded(&PairsView::parse(&buf).unwrap()), want, "{path}");
        }
    }
}
