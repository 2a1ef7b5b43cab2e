//! authn's external-auth mode (an HTTP call to an auth service, decisions
//! cached in shared data) and its RFC 9421 HMAC request signatures.

use std::rc::Rc;
use std::time::Duration;

use meshguard_authn_crypto::HmacSha256;
use meshguard_common::config::{ConfigError, JsonPath};
use meshguard_common::contract::IDENTITY_HEADER;
use meshguard_common::headers::HeaderSource;
use meshguard_common::metrics::name;
use meshguard_stage::host::CREATE_ONLY;
use meshguard_stage::{
    Cx, Facts, HttpCallout, Identity, LocalReply, MetricId, MetricsRegistry, Reply, Request,
    SharedWrite, Step,
};

use super::{now_ms, now_secs, Authn, PerRequest};
use crate::cache::Tag;
use crate::config::{ExtAuthConfig, HmacConfig};
use crate::msgsig::{self, Digest, Policy, SigError, SigKey};

/// Longest body of a denial passed to the client (and cached).
const MAX_DENY_BODY: usize = 64 * 1024;
/// Longest value of a copied response header.
const MAX_COPIED_VALUE: usize = 8192;

pub(super) struct ExtMetrics {
    allowed: MetricId,
    denied: MetricId,
    cache_hit: MetricId,
    cache_miss: MetricId,
    cache_evicted: MetricId,
    error: MetricId,
    fail_open: MetricId,
}

pub(super) struct ExtProvider {
    name: String,
    cluster: String,
    authority: String,
    path_prefix: String,
    timeout: Duration,
    /// Lowercase.
    request_headers: Vec<String>,
    /// Owned, lowercase.
    pub(super) response_headers: Vec<Rc<str>>,
    identity: Option<usize>,
    issuer: Rc<str>,
    allow_any_2xx: bool,
    fail_open: bool,
    allow_ttl_ms: u64,
    deny_ttl_ms: u64,
    slots: u32,
    per_path: bool,
    m: ExtMetrics,
}

pub(super) struct HmacProvider {
    name: String,
    policy: Policy,
    max_body: usize,
    pub(super) identity_header: Rc<str>,
    issuer: Rc<str>,
    nonce_slots: Option<u32>,
    allowed: MetricId,
}

/// What a request waits for or checks later.
#[derive(Default)]
pub(super) struct ExtState {
    /// The auth-service call in flight: (provider, cache tag).
    pub(super) call: Option<(usize, Option<Tag>)>,
    /// The body must match this digest (HMAC provider, digest).
    pub(super) digest: Option<(usize, Digest)>,
}

pub(super) fn build_ext(
    x: &ExtAuthConfig,
    own: &mut dyn FnMut(&str) -> Rc<str>,
    reg: &mut dyn MetricsRegistry,
) -> ExtProvider {
    let n = x.name.as_str();
    let response_headers: Vec<Rc<str>> = x.response_headers.iter().map(|h| own(h)).collect();
    let id = x
        .identity_header
        .clone()
        .unwrap_or_else(|| IDENTITY_HEADER.to_string())
        .to_ascii_lowercase();
    ExtProvider {
        name: x.name.clone(),
        cluster: x.cluster.clone(),
        authority: x.authority.clone().unwrap_or_else(|| x.cluster.clone()),
        path_prefix: x.path_prefix.clone().unwrap_or_default(),
        timeout: Duration::from_millis(x.timeout_ms),
        request_headers: x
            .request_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        identity: response_headers.iter().position(|h| h.as_ref() == id),
        response_headers,
        issuer: format!("ext_auth:{n}").into(),
        allow_any_2xx: x.allow_any_2xx,
        fail_open: x.fail_open,
        allow_ttl_ms: x.cache.allow_seconds * 1000,
        deny_ttl_ms: x.cache.deny_seconds * 1000,
        slots: x.cache.max_entries.max(1),
        per_path: x.cache.per_path,
        m: ExtMetrics {
            allowed: reg.counter(&name("meshguard_authn_ext_allowed", &[n])),
            denied: reg.counter(&name("meshguard_authn_ext_denied", &[n])),
            cache_hit: reg.counter(&name("meshguard_authn_ext_cache_hit", &[n])),
            cache_miss: reg.counter(&name("meshguard_authn_ext_cache_miss", &[n])),
            cache_evicted: reg.counter(&name("meshguard_authn_ext_cache_evicted", &[n])),
            error: reg.counter(&name("meshguard_authn_ext_error", &[n])),
            fail_open: reg.counter(&name("meshguard_authn_ext_fail_open", &[n])),
        },
    }
}

pub(super) fn build_hmac(
    h: &HmacConfig,
    at: &JsonPath,
    own: &mut dyn FnMut(&str) -> Rc<str>,
    reg: &mut dyn MetricsRegistry,
) -> Result<HmacProvider, ConfigError> {
    let secrets = h.secrets(at)?;
    let mut keys = Vec::new();
    for (i, (k, s)) in h.keys.iter().zip(secrets).enumerate() {
        let mac = HmacSha256::new(&s).ok_or_else(|| {
            at.field("keys")
                .index(i)
                .field("secret")
                .err("expected a non-empty key")
        })?;
        keys.push(SigKey {
            id: k.id.clone(),
            mac,
            subject: k.subject.as_deref().unwrap_or(&k.id).into(),
        });
    }
    Ok(HmacProvider {
        name: h.name.clone(),
        policy: Policy {
            keys,
            label: h.label.clone(),
            required: h.components.clone(),
            digest_with_body: h.require_content_digest,
            window_secs: h.window_seconds as i64,
            require_nonce: h.nonce.is_some(),
        },
        max_body: h.max_body_bytes,
        identity_header: own(&h.identity_header),
        issuer: format!("hmac:{}", h.name).into(),
        nonce_slots: h.nonce.as_ref().map(|n| n.max_entries.max(1)),
        allowed: reg.counter(&name("meshguard_authn_hmac_allowed", &[h.name.as_str()])),
    })
}

/// The largest body any HMAC verifier buffers.
pub(super) fn max_body(hmacs: &[HmacProvider]) -> Option<usize> {
    hmacs.iter().map(|h| h.max_body).max()
}

fn slot_of(tag: &Tag, slots: u32) -> u32 {
    let mut hi = [0u8; 8];
    for (o, i) in hi.iter_mut().zip(tag.bytes.iter().skip(8)) {
        *o = *i;
    }
    (u64::from_le_bytes(hi) % u64::from(slots.max(1))) as u32
}

/// Decisions a worker keeps in front of shared data: a repeated
/// credential costs no shared-data read.
#[derive(Default)]
pub(super) struct ExtL1 {
    /// (provider, tag) → (expires, decision).
    map: std::collections::HashMap<(usize, [u8; 16]), (u64, Rc<Decision>)>,
    /// Bytes of header values and bodies held.
    bytes: usize,
}

/// Entries per worker and bytes they may hold; the table is emptied when
/// either would be passed (a flood of new credentials costs shared-data
/// reads, never memory).
const L1_ENTRIES: usize = 4096;
const L1_BYTES: usize = 2 << 20;
/// Decisions bigger than this (header values plus body) are not cached,
/// in shared data or in a worker.
const MAX_CACHED_DECISION: usize = 4096;

impl ExtL1 {
    fn get(&self, p: usize, tag: &Tag, now_ms: u64) -> Option<Rc<Decision>> {
        self.map
            .get(&(p, tag.bytes))
            .filter(|(exp, _)| *exp > now_ms)
            .map(|(_, d)| Rc::clone(d))
    }

    fn put(&mut self, p: usize, tag: &Tag, expires_ms: u64, d: &Rc<Decision>) {
        let size = d.size();
        if size > MAX_CACHED_DECISION {
            return;
        }
        if self.map.len() >= L1_ENTRIES || self.bytes + size > L1_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        if let Some((_, old)) = self.map.insert((p, tag.bytes), (expires_ms, Rc::clone(d))) {
            self.bytes = self.bytes.saturating_sub(old.size());
        }
        self.bytes += size;
    }
}

/// A cached decision.
enum Decision {
    /// Values for `response_headers` (by index).
    Allow(Vec<(u8, Vec<u8>)>),
    Deny {
        status: u16,
        headers: Vec<(&'static str, Vec<u8>)>,
        body: Vec<u8>,
    },
}

const DENY_HEADERS: [&str; 3] = ["www-authenticate", "location", "content-type"];

impl Decision {
    /// Bytes of header values and body it holds.
    fn size(&self) -> usize {
        match self {
            Decision::Allow(values) => values.iter().map(|(_, v)| v.len() + 8).sum(),
            Decision::Deny { headers, body, .. } => {
                headers.iter().map(|(_, v)| v.len() + 8).sum::<usize>() + body.len()
            }
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(b.get(..n).unwrap_or_default());
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = b.split_at_checked(n)?;
    *b = rest;
    Some(head)
}

fn take_u16(b: &mut &[u8]) -> Option<u16> {
    let h = take(b, 2)?;
    Some(u16::from_le_bytes(h.try_into().ok()?))
}

fn take_bytes(b: &mut &[u8]) -> Option<Vec<u8>> {
    let n = take_u16(b)? as usize;
    take(b, n).map(<[u8]>::to_vec)
}

fn encode(tag: &Tag, expires_ms: u64, d: &Decision) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&tag.bytes);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    match d {
        Decision::Allow(values) => {
            out.push(1);
            out.push(values.len().min(255) as u8);
            for (i, v) in values.iter().take(255) {
                out.push(*i);
                put_bytes(&mut out, v);
            }
        }
        Decision::Deny {
            status,
            headers,
            body,
        } => {
            out.push(2);
            out.extend_from_slice(&status.to_le_bytes());
            for name in DENY_HEADERS {
                let v = headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
                put_bytes(&mut out, v.map(Vec::as_slice).unwrap_or_default());
            }
            put_bytes(&mut out, body);
        }
    }
    out
}

/// The slot's decision for `tag` and its expiry if live; `Err(live_other)`
/// otherwise.
fn decode(value: &[u8], tag: &Tag, now_ms: u64) -> Result<(Decision, u64), bool> {
    let mut b = value;
    let (Some(t), Some(exp)) = (take(&mut b, 16), take(&mut b, 8)) else {
        return Err(false);
    };
    let exp = <[u8; 8]>::try_from(exp)
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let live = exp > now_ms;
    if t != tag.bytes || !live {
        return Err(live && t != tag.bytes);
    }
    let parsed = (|| -> Option<Decision> {
        match take(&mut b, 1)? {
            [1] => {
                let n = *take(&mut b, 1)?.first()?;
                let mut values = Vec::new();
                for _ in 0..n {
                    let i = *take(&mut b, 1)?.first()?;
                    values.push((i, take_bytes(&mut b)?));
                }
                Some(Decision::Allow(values))
            }
            [2] => {
                let status = take_u16(&mut b)?;
                let mut headers = Vec::new();
                for name in DENY_HEADERS {
                    let v = take_bytes(&mut b)?;
                    if !v.is_empty() {
                        headers.push((name, v));
                    }
                }
                let body = take_bytes(&mut b)?;
                Some(Decision::Deny {
                    status,
                    headers,
                    body,
                })
            }
            _ => None,
        }
    })();
    parsed.map(|d| (d, exp)).ok_or(false)
}

impl Authn {
    fn ext_key(&self, x: &ExtProvider, rq: &Request<'_>, cx: &mut Cx<'_>) -> Option<Tag> {
        if x.allow_ttl_ms == 0 && x.deny_ttl_ms == 0 {
            return None;
        }
        // Keyed by the credentials: no credentials, no caching (anonymous
        // answers often depend on the path).
        let mut input = Vec::with_capacity(128);
        input.extend_from_slice(b"meshguard.authn.ext\0");
        input.extend_from_slice(x.name.as_bytes());
        let mut any = false;
        for h in &x.request_headers {
            input.push(0);
            input.extend_from_slice(h.as_bytes());
            for (k, v) in rq.pairs() {
                if k.eq_ignore_ascii_case(h.as_bytes()) {
                    any = true;
                    input.push(0);
                    input.extend_from_slice(v);
                }
            }
        }
        if !any {
            return None;
        }
        if x.per_path {
            for h in [":method", ":path"] {
                input.push(0);
                input.extend_from_slice(rq.header(h).unwrap_or_default());
            }
        }
        let t = self.tagger(cx.host())?;
        let mut tag = t.tag(&input);
        tag.slot = slot_of(&tag, x.slots);
        Some(tag)
    }

    fn ext_slot_key(&self, x: &ExtProvider, slot: u32) -> String {
        format!("meshguard.authn.x.{}{}.{slot}", self.scope(), x.name)
    }

    pub(super) fn ext_check(
        &self,
        i: usize,
        rq: &mut Request<'_>,
        st: &mut PerRequest,
        cx: &mut Cx<'_>,
    ) -> Step {
        let Some(x) = self.ext.get(i) else {
            return self.deny(403, None, "forbidden", "");
        };
        let tag = self.ext_key(x, rq, cx);
        if let Some(tag) = &tag {
            let now = now_ms(cx.host());
            let local = self
                .vm
                .try_borrow()
                .ok()
                .and_then(|vm| vm.ext_l1.get(i, tag, now));
            if let Some(d) = local {
                self.batch(x.m.cache_hit);
                return self.ext_apply(x, &d, rq, cx);
            }
            let key = self.ext_slot_key(x, tag.slot);
            match cx
                .host()
                .shared_get(&key)
                .map(|(v, _)| decode(&v, tag, now))
            {
                Some(Ok((d, exp))) => {
                    self.batch(x.m.cache_hit);
                    let d = Rc::new(d);
                    if let Ok(mut vm) = self.vm.try_borrow_mut() {
                        vm.ext_l1.put(i, tag, exp, &d);
                    }
                    return self.ext_apply(x, &d, rq, cx);
                }
                _ => cx.count(x.m.cache_miss),
            }
        }
        let path = rq.header(":path").unwrap_or(b"/");
        let mut full = String::with_capacity(x.path_prefix.len() + path.len());
        full.push_str(&x.path_prefix);
        full.push_str(&String::from_utf8_lossy(path));
        let method = String::from_utf8_lossy(rq.header(":method").unwrap_or(b"GET")).into_owned();
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", method.as_str()),
            (":path", full.as_str()),
            (":authority", x.authority.as_str()),
        ];
        for h in &x.request_headers {
            for (k, v) in rq.pairs() {
                if k.eq_ignore_ascii_case(h.as_bytes()) {
                    if let Ok(v) = std::str::from_utf8(v) {
                        headers.push((h.as_str(), v));
                    }
                }
            }
        }
        let call = HttpCallout {
            cluster: &x.cluster,
            headers,
            body: None,
            timeout: x.timeout,
        };
        match cx.http_call(&call) {
            Ok(token) => {
                st.ext.call = Some((i, tag));
                Step::Wait(token)
            }
            Err(e) => {
                if self.log_failure(cx) {
                    log::warn!(
                        "authn: cannot call the auth service `{}` (cluster `{}`): {e:?}",
                        x.name,
                        x.cluster
                    );
                }
                self.ext_failed(x, cx)
            }
        }
    }

    /// Whether to log a service failure now: at most once a second per
    /// worker (the metrics count every one).
    fn log_failure(&self, cx: &mut Cx<'_>) -> bool {
        let now = now_ms(cx.host());
        match self.vm.try_borrow_mut() {
            Ok(mut vm) if now.saturating_sub(vm.ext_logged_ms) >= 1000 => {
                vm.ext_logged_ms = now;
                true
            }
            _ => false,
        }
    }

    fn ext_failed(&self, x: &ExtProvider, cx: &mut Cx<'_>) -> Step {
        cx.count(x.m.error);
        let log = self.log_failure(cx);
        if x.fail_open {
            cx.count(x.m.fail_open);
            if log {
                log::warn!(
                    "authn: auth service `{}` failed; failing open (no identity; logged at most once a second)",
                    x.name
                );
            }
            return Step::Continue;
        }
        if log {
            log::warn!(
                "authn: auth service `{}` failed; answering 503 (logged at most once a second)",
                x.name
            );
        }
        let mut s = self.deny(503, None, "temporarily_unavailable", "");
        if let Step::Respond(r) = &mut s {
            r.headers.push(("retry-after".into(), "1".into()));
            r.details = "meshguard_authn_ext_unavailable";
        }
        s
    }

    pub(super) fn ext_answered(
        &self,
        i: usize,
        tag: Option<Tag>,
        reply: Reply<'_>,
        rq: &mut Request<'_>,
        cx: &mut Cx<'_>,
    ) -> Step {
        let Some(x) = self.ext.get(i) else {
            return self.deny(403, None, "forbidden", "");
        };
        let Reply::Response {
            status,
            headers,
            body,
        } = reply
        else {
            return self.ext_failed(x, cx);
        };
        let allowed = status == 200 || (x.allow_any_2xx && (200..300).contains(&status));
        let decision = if allowed {
            let values: Vec<(u8, Vec<u8>)> = x
                .response_headers
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let v = headers.first(h)?;
                    (v.len() <= MAX_COPIED_VALUE).then(|| (i as u8, v.to_vec()))
                })
                .collect();
            Decision::Allow(values)
        } else if !(200..500).contains(&status) {
            // 5xx, Envoy's local 504 for a timeout, or nonsense.
            return self.ext_failed(x, cx);
        } else {
            Decision::Deny {
                status,
                headers: DENY_HEADERS
                    .iter()
                    .filter(|n| **n != "location" || (300..400).contains(&status))
                    .filter_map(|n| {
                        let v = headers.first(n)?;
                        (v.len() <= MAX_COPIED_VALUE).then(|| (*n, v.to_vec()))
                    })
                    .collect(),
                body: body.get(..MAX_DENY_BODY).unwrap_or(body).to_vec(),
            }
        };
        if let Some(tag) = tag {
            let ttl = match &decision {
                _ if decision.size() > MAX_CACHED_DECISION => 0,
                Decision::Allow(_) => x.allow_ttl_ms,
                Decision::Deny {
                    status: 401 | 403, ..
                } => x.deny_ttl_ms,
                Decision::Deny { .. } => 0,
            };
            if ttl > 0 {
                let now = now_ms(cx.host());
                let key = self.ext_slot_key(x, tag.slot);
                if let Some((old, _)) = cx.host().shared_get(&key) {
                    if matches!(decode(&old, &tag, now), Err(true)) {
                        cx.count(x.m.cache_evicted);
                    }
                }
                let _ = cx
                    .host()
                    .shared_set(&key, &encode(&tag, now + ttl, &decision), 0);
                let d = Rc::new(decision);
                if let Ok(mut vm) = self.vm.try_borrow_mut() {
                    vm.ext_l1.put(i, &tag, now + ttl, &d);
                }
                return self.ext_apply(x, &d, rq, cx);
            }
        }
        self.ext_apply(x, &decision, rq, cx)
    }

    /// Adds one to a counter on the worker's tally, handed to the proxy by
    /// the timer (no host call per request); directly if the tally is busy.
    fn batch(&self, id: MetricId) {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            match vm.batched.iter_mut().find(|(m, _)| *m == id) {
                Some((_, n)) => *n += 1,
                None => vm.batched.push((id, 1)),
            }
        }
    }

    fn ext_apply(
        &self,
        x: &ExtProvider,
        d: &Decision,
        rq: &mut Request<'_>,
        cx: &mut Cx<'_>,
    ) -> Step {
        match d {
            Decision::Allow(values) => {
                self.batch(x.m.allowed);
                let mut subject = None;
                for (i, v) in values {
                    let i = *i as usize;
                    let Some(h) = x.response_headers.get(i) else {
                        continue;
                    };
                    if x.identity == Some(i) && !v.is_empty() {
                        subject = std::str::from_utf8(v).ok().map(Rc::<str>::from);
                    }
                    rq.set(Rc::clone(h), v.clone());
                }
                if let Some(s) = subject {
                    self.publish(s, Some(Rc::clone(&x.issuer)), cx);
                }
                Step::Continue
            }
            Decision::Deny {
                status,
                headers,
                body,
            } => {
                cx.count(x.m.denied);
                let mut r =
                    LocalReply::new(*status, body.clone()).details("meshguard_authn_ext_denied");
                for (n, v) in headers {
                    r = r.header(*n, v.clone());
                }
                Step::Respond(r)
            }
        }
    }

    /// The identity as a fact for later stages and, when configured, in
    /// filter state for other modules.
    pub(super) fn publish(&self, subject: Rc<str>, issuer: Option<Rc<str>>, cx: &mut Cx<'_>) {
        let facts = Facts {
            identity: Some(Identity { subject, issuer }),
            ..Facts::default()
        };
        if self.publish_state && !facts.publish_identity(cx.host()) {
            log::debug!("authn: the proxy refused the identity filter state");
        }
        if cx.facts_wanted() {
            cx.facts.identity = facts.identity;
        }
    }

    fn sig_denied(&self, e: SigError, cx: &mut Cx<'_>) -> Step {
        if let Some((_, id)) = self.m.sig_denied.iter().find(|(x, _)| *x == e) {
            cx.count(*id);
        }
        let status = if e == SigError::TooLarge { 413 } else { 401 };
        let mut s = self.deny(
            status,
            None,
            if status == 413 {
                "payload_too_large"
            } else {
                "invalid_signature"
            },
            e.description(),
        );
        if let Step::Respond(r) = &mut s {
            if status == 401 {
                r.headers.push((
                    "www-authenticate".into(),
                    format!("Signature realm=\"{}\"", self.realm).into(),
                ));
            }
        }
        s
    }

    pub(super) fn hmac_check(
        &self,
        i: usize,
        rq: &mut Request<'_>,
        st: &mut PerRequest,
        cx: &mut Cx<'_>,
    ) -> Step {
        let Some(h) = self.hmacs.get(i) else {
            return self.deny(403, None, "forbidden", "");
        };
        let with_body = msgsig::has_body(rq, rq.end_of_stream());
        let declared = rq
            .header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > h.max_body as u64) {
            cx.skip_body();
            return self.sig_denied(SigError::TooLarge, cx);
        }
        let now = now_secs(cx.host());
        let v = match msgsig::verify(rq, &h.policy, now, with_body) {
            Ok(v) => v,
            Err(e) => {
                cx.skip_body();
                return self.sig_denied(e, cx);
            }
        };
        if let (Some(slots), Some(nonce)) = (h.nonce_slots, v.nonce.as_deref()) {
            if !self.nonce_fresh(h, slots, v.key, nonce, v.created, cx) {
                cx.skip_body();
                return self.sig_denied(SigError::Replay, cx);
            }
        }
        match (with_body, v.digest) {
            (true, Some(d)) => st.ext.digest = Some((i, d)),
            _ => cx.skip_body(),
        }
        self.batch(h.allowed);
        if let Some(k) = h.policy.keys.get(v.key) {
            rq.set(Rc::clone(&h.identity_header), Rc::clone(&k.subject));
            self.publish(Rc::clone(&k.subject), Some(Rc::clone(&h.issuer)), cx);
        }
        Step::Continue
    }

    /// Records `nonce` (per key) unless it was seen within the window.
    fn nonce_fresh(
        &self,
        h: &HmacProvider,
        slots: u32,
        key: usize,
        nonce: &str,
        created: i64,
        cx: &mut Cx<'_>,
    ) -> bool {
        let Some(t) = self.tagger(cx.host()) else {
            return false; // no randomness for the hash key: fail closed
        };
        let mut input = format!("meshguard.authn.nonce\0{}\0{key}\0", h.name).into_bytes();
        input.extend_from_slice(nonce.as_bytes());
        let mut tag = t.tag(&input);
        tag.slot = slot_of(&tag, slots);
        let key = format!("meshguard.authn.n.{}{}.{}", self.scope(), h.name, tag.slot);
        // Remembered until `created` leaves the window.
        let until = created.saturating_add(h.policy.window_secs).max(0) as u64;
        let mut value = tag.bytes.to_vec();
        value.extend_from_slice(&until.to_le_bytes());
        let now = now_secs(cx.host()).max(0) as u64;
        for _ in 0..2 {
            let cur = cx.host().shared_get(&key);
            let cas = match &cur {
                Some((v, cas)) => {
                    let same = v.get(..16) == Some(tag.bytes.as_slice());
                    let live = v
                        .get(16..24)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_le_bytes)
                        .is_some_and(|u| u >= now);
                    if same && live {
                        return false;
                    }
                    *cas
                }
                None => CREATE_ONLY,
            };
            match cx.host().shared_set(&key, &value, cas) {
                SharedWrite::Written => return true,
                SharedWrite::CasMismatch => continue,
                SharedWrite::Failed => return false,
            }
        }
        false
    }

    pub(super) fn hmac_body(&self, rq: &Request<'_>, st: &mut PerRequest, cx: &mut Cx<'_>) -> Step {
        let Some((i, digest)) = st.ext.digest.take() else {
            return Step::Continue;
        };
        let max = self.hmacs.get(i).map(|h| h.max_body).unwrap_or(0);
        let body = rq.body().unwrap_or_default();
        if !rq.end_of_stream() || body.len() > max {
            return self.sig_denied(SigError::TooLarge, cx);
        }
        if !digest.matches(body) {
            return self.sig_denied(SigError::Digest, cx);
        }
        Step::Continue
    }
}
