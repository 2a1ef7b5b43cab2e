//! ratelimit as a meshguard stage: rules pick the requests, keys pick the
//! bucket, buckets in shared data decide (compare-and-swap, so every
//! worker spends the same tokens), and the decision becomes a 429, response
//! headers, metrics and the `meshguard.ratelimit` filter state.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use meshguard_common::config::{ConfigError, JsonPath};
use meshguard_common::headers::{host_without_port, HostPattern};
use meshguard_common::metrics::name;
use meshguard_common::num::{push_u64, u64_text};
use meshguard_common::path::normalized;
use meshguard_stage::host::CREATE_ONLY;
use meshguard_stage::Text;
use meshguard_stage::{
    Cx, Facts, Host, LocalReply, MetricId, MetricsRegistry, Needs, RateLimitVerdict, Reply,
    Request, Response, RootCx, SharedWrite, Stage, Step,
};

mod global;

use crate::bucket::{self, Bucket, Limit, Taken};
use crate::client_ip;
use crate::config::{
    Apply, ClientIpConfig, KeyPart, MatchConfig, OnError, PathMatch, RateLimitConfig,
    ResponseHeadersConfig, WhenKeyMissing,
};

/// Compare-and-swap attempts before a request counts as an error. Each
/// retry means another worker updated the same bucket in between; with a
/// handful of workers a few suffice.
const CAS_TRIES: u32 = 32;
/// Slots the timer looks at per tick, at least (every worker sweeps).
const SWEEP_MIN: u64 = 1024;
/// A full pass over every slot takes at most this many ticks.
const SWEEP_PASS_TICKS: u64 = 30;

struct Matcher {
    hosts: Vec<HostPattern>,
    paths: Vec<PathMatch>,
    methods: Vec<String>,
    /// (lowercase name, exact value, must be present)
    headers: Vec<(String, Option<String>, bool)>,
}

impl Matcher {
    fn new(m: &MatchConfig) -> Self {
        Self {
            hosts: m.hosts.iter().map(|h| HostPattern::new(h)).collect(),
            paths: m.paths.clone(),
            methods: m.methods.clone(),
            headers: m
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        h.exact.clone(),
                        h.present.unwrap_or(true),
                    )
                })
                .collect(),
        }
    }

    /// `path`: the request's path as the upstream reads it, worked out
    /// once per request (lazily) and shared by every rule.
    fn matches<'r>(&self, rq: &'r Request<'_>, path: &mut Option<Option<Cow<'r, [u8]>>>) -> bool {
        if !self.hosts.is_empty() {
            let host = rq.header(":authority").map(host_without_port);
            let ok = host.is_some_and(|h| self.hosts.iter().any(|p| p.matches(h)));
            if !ok {
                return false;
            }
        }
        if !self.paths.is_empty() {
            // As the upstream will read it: `//limited` or `/x/../limited`
            // must not slip past a rule for `/limited`.
            let path = path
                .get_or_insert_with(|| rq.header(":path").map(normalized))
                .as_deref();
            let ok = path.is_some_and(|p| {
                self.paths.iter().any(|m| match m {
                    PathMatch::Exact(e) => p == e.as_bytes(),
                    PathMatch::Prefix(pre) => p.starts_with(pre.as_bytes()),
                })
            });
            if !ok {
                return false;
            }
        }
        if !self.methods.is_empty() {
            let method = rq.header(":method");
            if !method.is_some_and(|m| self.methods.iter().any(|x| x.as_bytes() == m)) {
                return false;
            }
        }
        self.headers.iter().all(|(name, exact, present)| {
            let v = rq.header(name);
            match (exact, present) {
                (Some(want), _) => v == Some(want.as_bytes()),
                (None, true) => v.is_some(),
                (None, false) => v.is_none(),
            }
        })
    }
}

struct RuleMetrics {
    allowed: MetricId,
    limited: MetricId,
    shadow_limited: MetricId,
    key_missing: MetricId,
}

struct Rule {
    name: Rc<str>,
    matcher: Option<Matcher>,
    key: Vec<KeyPart>,
    limit: Limit,
    fingerprint: u64,
    shadow: bool,
    missing: WhenKeyMissing,
    slots: u32,
    /// Tokens this worker takes from the shared bucket at once
    /// (`worker_batch`); 1: none held.
    batch: u64,
    /// `X-RateLimit-Limit`: `<burst>, <requests>;w=<seconds>`.
    limit_header: Rc<str>,
    /// `RateLimit-Policy`: `"<name>";q=<requests>;w=<seconds>`.
    policy_header: Rc<str>,
    m: RuleMetrics,
}

struct Metrics {
    buckets: MetricId,
    evictions: MetricId,
    errors: MetricId,
}

/// Per-worker state: counters batched until the next tick (the hot path
/// makes no metric host call), and the sweep's position.
#[derive(Default)]
struct Vm {
    /// Per rule: allowed, limited, shadow-limited since the last tick.
    counts: Vec<[i64; 3]>,
    sweep_next: u64,
    /// The slot keys' prefix, read once from the plugin's name.
    prefix: Option<Rc<str>>,
    /// Per rule, its slot keys up to the slot number (`bucket::rule_prefix`).
    rule_prefixes: Vec<Rc<str>>,
    /// Buffers the hot path reuses: no allocation per request for them.
    bufs: Bufs,
    /// Tokens taken from shared buckets and not spent yet: (rule, stored
    /// key, tokens), at most [`MAX_BATCHED_KEYS`]; given back at the next
    /// tick. A short list: the keys hot enough to batch.
    batches: Vec<(usize, Vec<u8>, Batch)>,
}

/// A slot key and a bucket value being built, reused from request to
/// request (taken out of [`Vm`] while host calls run).
#[derive(Default)]
struct Bufs {
    skey: String,
    value: Vec<u8>,
}

/// Tokens one worker holds for one key.
#[derive(Debug, Clone, Copy)]
struct Batch {
    tokens: u64,
    /// The shared bucket's whole tokens after they were taken, and when
    /// the next one arrives then: what the rate headers show.
    remaining: u64,
    reset_s: u64,
}

/// Keys a worker holds batches for at once (between ticks); past it a key
/// goes to the shared bucket every request, as with `worker_batch: 1`.
const MAX_BATCHED_KEYS: usize = 64;

/// The ratelimit stage.
pub struct RateLimit {
    rules: Vec<Rule>,
    apply: Apply,
    client_ip: ClientIpConfig,
    headers: ResponseHeadersConfig,
    publish: bool,
    on_error: OnError,
    /// Slots over every rule, for the sweep.
    total_slots: u64,
    m: Metrics,
    vm: RefCell<Vm>,
    /// Global rules and their service, when configured.
    global: Option<global::Global>,
}

/// What one rule said about a request, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    rule: usize,
    remaining: u64,
    reset_s: u64,
}

/// Per request: the headers to add to an allowed response.
#[derive(Default)]
pub struct PerRequest {
    shown: Option<Shown>,
    /// The rate-limit service call in flight.
    global: Option<global::Waiting>,
    /// Headers the service asked to add to the response.
    global_headers: Vec<(String, Vec<u8>)>,
}

/// How a bucket lookup ended.
enum Outcome {
    Taken(Taken),
    /// Allowed, with this many tokens taken (1 + those now held).
    Batch(Taken, u64),
    Error,
}

impl Stage for RateLimit {
    const NAME: &'static str = "ratelimit";
    const CONFIG_KEY: &'static str = "ratelimit";
    type Config = RateLimitConfig;
    type PerRequest = PerRequest;

    #[inline(never)]
    fn parse_config(
        value: serde_json::Value,
        at: &JsonPath,
    ) -> Result<RateLimitConfig, ConfigError> {
        RateLimitConfig::from_value_at(value, at)
    }

    #[inline(never)]
    fn build(
        config: RateLimitConfig,
        at: &JsonPath,
        reg: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError> {
        config.validate_at(at)?;
        let mut rules = Vec::with_capacity(config.rules.len());
        let mut total_slots = 0u64;
        // Local rules here; global ones go to `global::build`.
        for r in config.rules.iter().filter(|r| !r.global) {
            let Some(l) = &r.limit else {
                continue; // validated: every local rule has a limit
            };
            let per = l.per.seconds();
            let burst = l.burst.unwrap_or(l.requests);
            let limit = Limit::new(l.requests, per, burst);
            let slots = if r.key.is_empty() { 1 } else { config.max_keys };
            // Off unless asked for (exact: see `worker_batch`).
            let batch = config.worker_batch.unwrap_or(1);
            total_slots += u64::from(slots);
            let n = r.name.as_str();
            rules.push(Rule {
                name: Rc::from(n),
                matcher: r.match_.as_ref().map(Matcher::new),
                key: r
                    .key
                    .iter()
                    .map(|k| match k {
                        KeyPart::Header(h) => KeyPart::Header(h.to_ascii_lowercase()),
                        other => other.clone(),
                    })
                    .collect(),
                fingerprint: bucket::fingerprint(n, &limit),
                limit,
                shadow: r.shadow,
                missing: r.when_key_missing.clone(),
                slots,
                batch: u64::from(batch.max(1)),
                limit_header: Rc::from(format!("{burst}, {};w={per}", l.requests)),
                policy_header: Rc::from(format!("\"{n}\";q={};w={per}", l.requests)),
                m: RuleMetrics {
                    allowed: reg.counter(&name("meshguard_ratelimit_allowed", &[n])),
                    limited: reg.counter(&name("meshguard_ratelimit_limited", &[n])),
                    shadow_limited: reg.counter(&name("meshguard_ratelimit_shadow_limited", &[n])),
                    key_missing: reg.counter(&name("meshguard_ratelimit_key_missing", &[n])),
                },
            });
        }
        let m = Metrics {
            buckets: reg.gauge("meshguard_ratelimit_buckets"),
            evictions: reg.counter("meshguard_ratelimit_evictions"),
            errors: reg.counter("meshguard_ratelimit_errors"),
        };
        let global = config
            .global
            .as_ref()
            .map(|g| global::build(g, &config.rules, reg));
        log::info!(
            "ratelimit: configured {} local rule(s), {} global",
            rules.len(),
            config.rules.len() - rules.len()
        );
        Ok(Self {
            global,
            vm: RefCell::new(Vm {
                counts: vec![[0; 3]; rules.len()],
                sweep_next: 0,
                prefix: None,
                rule_prefixes: Vec::new(),
                bufs: Bufs::default(),
                batches: Vec::new(),
            }),
            rules,
            apply: config.apply,
            client_ip: config.client_ip,
            headers: config.response_headers,
            publish: config.decision_filter_state,
            on_error: config.on_error,
            total_slots,
            m,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            // Batched counters, idle-bucket sweep, shadow summaries.
            tick: Some(Duration::from_secs(1)),
            // Rate headers on allowed responses, and the rate-limit
            // service's headers, are the hook's only work.
            no_response_hook: !self.headers.on_allowed && self.global.is_none(),
            ..Needs::default()
        }
    }

    fn when_headers_unreadable(&self) -> Step {
        match self.on_error {
            OnError::Allow => Step::Continue,
            OnError::Deny => Step::Respond(self.unavailable()),
        }
    }

    fn on_request_headers(
        &self,
        rq: &mut Request<'_>,
        st: &mut PerRequest,
        cx: &mut Cx<'_>,
    ) -> Step {
        // The clock is a host call: read it when a shared bucket is touched.
        let mut now: Option<u64> = None;
        // The client IP costs a host call: read it once, when a rule needs it.
        let mut ip: Option<Option<String>> = None;
        let mut path: Option<Option<Cow<'_, [u8]>>> = None;
        let mut verdict: Option<RateLimitVerdict> = None;
        let mut reply: Option<LocalReply> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule
                .matcher
                .as_ref()
                .is_some_and(|m| !m.matches(rq, &mut path))
            {
                continue;
            }
            let Some(key) = self.key_for(rule, rq, cx, &mut ip, &mut path) else {
                cx.count(rule.m.key_missing);
                continue;
            };
            let held = self.spend_held(i, &key);
            let taken = match held {
                Some(t) => t,
                None => match self.take(i, rule, key, &mut now, cx) {
                    Outcome::Taken(t) | Outcome::Batch(t, _) => t,
                    Outcome::Error => {
                        cx.count(self.m.errors);
                        // A shadow rule never refuses, not even on errors.
                        if self.on_error == OnError::Deny && !rule.shadow {
                            return Step::Respond(self.unavailable());
                        }
                        if self.apply == Apply::First && !rule.shadow {
                            break;
                        }
                        continue;
                    }
                },
            };
            let shown = Shown {
                rule: i,
                remaining: taken.remaining,
                reset_s: taken.reset_s,
            };
            if taken.allowed {
                self.batch(i, 0);
                verdict.get_or_insert(RateLimitVerdict::Allowed);
                // The headers show the enforcing rule closest to its limit.
                if !rule.shadow && st.shown.is_none_or(|s| shown.remaining < s.remaining) {
                    st.shown = Some(shown);
                }
            } else if rule.shadow {
                self.batch(i, 2);
                log::debug!(
                    "ratelimit: shadow rule `{}` would limit this request",
                    rule.name
                );
                verdict = Some(RateLimitVerdict::ShadowLimited);
            } else {
                self.batch(i, 1);
                verdict = Some(RateLimitVerdict::Limited);
                reply = Some(self.too_many(rule, &shown));
                break;
            }
            // A shadow rule is on trial beside the rules after it: under
            // `first` it does not end the search.
            if self.apply == Apply::First && !rule.shadow {
                break;
            }
        }
        // Local rules first: a flood they refuse never reaches the service.
        if reply.is_none() {
            if let Some(step) = self.ask_global(rq, st, cx, verdict, &mut ip, &mut path) {
                return step;
            }
        }
        self.record(verdict, cx);
        match reply {
            Some(r) => Step::Respond(r),
            None => Step::Continue,
        }
    }

    fn on_callout(
        &self,
        reply: Reply<'_>,
        rq: &mut Request<'_>,
        st: &mut PerRequest,
        cx: &mut Cx<'_>,
    ) -> Step {
        self.global_answered(reply, rq, st, cx)
    }

    fn on_response_headers(&self, rs: &mut Response<'_>, st: &mut PerRequest, cx: &mut Cx<'_>) {
        if cx.answered_locally() {
            return;
        }
        // The rate-limit service's headers for an allowed request.
        for (k, v) in std::mem::take(&mut st.global_headers) {
            rs.add(k, v);
        }
        if !self.headers.on_allowed {
            return;
        }
        let Some(shown) = st.shown.take() else {
            return;
        };
        let Some(rule) = self.rules.get(shown.rule) else {
            return;
        };
        self.rate_headers(rule, &shown, |k, v| rs.set(k, v));
    }

    fn on_tick(&self, cx: &mut RootCx<'_>) {
        let counts = match self.vm.try_borrow_mut() {
            Ok(mut vm) => std::mem::replace(&mut vm.counts, vec![[0; 3]; self.rules.len()]),
            Err(_) => Vec::new(),
        };
        for (rule, c) in self.rules.iter().zip(counts.iter()) {
            let [allowed, limited, shadow] = *c;
            if allowed > 0 {
                cx.add(rule.m.allowed, allowed);
            }
            if limited > 0 {
                cx.add(rule.m.limited, limited);
            }
            if shadow > 0 {
                cx.add(rule.m.shadow_limited, shadow);
                log::info!(
                    "ratelimit: shadow rule `{}` would have limited {shadow} request(s) since the last tick",
                    rule.name
                );
            }
        }
        self.give_back_held(cx);
        self.sweep(cx);
    }
}

impl RateLimit {
    /// The decision as a fact for later stages and, when configured, in
    /// filter state for other modules.
    fn record(&self, verdict: Option<RateLimitVerdict>, cx: &mut Cx<'_>) {
        let Some(v) = verdict else {
            return;
        };
        cx.facts.rate_limit = Some(v);
        if self.publish {
            let published = Facts {
                rate_limit: Some(v),
                ..Facts::default()
            }
            .publish_rate_limit(cx.host());
            if !published {
                log::debug!("ratelimit: the proxy refused to store the decision in filter state");
            }
        }
    }

    /// This plugin's slot-key prefix (`bucket::slot_prefix`), read from the
    /// `plugin_name` property on first use.
    fn slot_prefix(&self, host: &dyn Host) -> Rc<str> {
        if let Some(p) = self.vm.try_borrow().ok().and_then(|vm| vm.prefix.clone()) {
            return p;
        }
        let p: Rc<str> = bucket::slot_prefix(host.property(&["plugin_name"]).as_deref()).into();
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.prefix = Some(Rc::clone(&p));
        }
        p
    }

    /// Rule `ri`'s slot-key prefix (`bucket::rule_prefix`), built for
    /// every rule on first use.
    fn rule_prefix(&self, ri: usize, host: &dyn Host) -> Rc<str> {
        if let Some(p) = self
            .vm
            .try_borrow()
            .ok()
            .and_then(|vm| vm.rule_prefixes.get(ri).cloned())
        {
            return p;
        }
        let prefix = self.slot_prefix(host);
        let all: Vec<Rc<str>> = (0..self.rules.len())
            .map(|i| bucket::rule_prefix(&prefix, i).into())
            .collect();
        let p = all
            .get(ri)
            .cloned()
            .unwrap_or_else(|| bucket::rule_prefix(&prefix, ri).into());
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.rule_prefixes = all;
        }
        p
    }

    fn batch(&self, rule: usize, what: usize) {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            if let Some(c) = vm.counts.get_mut(rule).and_then(|c| c.get_mut(what)) {
                *c += 1;
            }
        }
    }

    /// The rule's bucket key (stored form), or `None` to skip the rule.
    fn key_for<'r>(
        &self,
        rule: &Rule,
        rq: &'r Request<'_>,
        cx: &mut Cx<'_>,
        ip: &mut Option<Option<String>>,
        path: &mut Option<Option<Cow<'r, [u8]>>>,
    ) -> Option<Vec<u8>> {
        // The stored form's marker first, so a short key is built in place.
        let mut raw = Vec::with_capacity(64);
        raw.push(b'=');
        for part in &rule.key {
            let value = self.part_value(part, rq, cx, ip, path);
            let value: &[u8] = match (&value, &rule.missing) {
                (Some(v), _) => v,
                (None, WhenKeyMissing::Fallback(f)) => f.as_bytes(),
                (None, WhenKeyMissing::Skip) => return None,
            };
            // Length-prefixed: ("a,b", "c") and ("a", "b,c") never meet.
            raw.extend_from_slice(&(value.len() as u32).to_le_bytes());
            raw.extend_from_slice(value);
        }
        Some(bucket::stored_key_marked(raw))
    }

    /// A key part's value, if the request has it (the client IP and the
    /// normalized path worked out once per request, for every rule),
    /// borrowed where it can be.
    fn part_value<'v, 'r: 'v>(
        &self,
        part: &KeyPart,
        rq: &'r Request<'_>,
        cx: &mut Cx<'_>,
        ip: &'v mut Option<Option<String>>,
        path: &'v mut Option<Option<Cow<'r, [u8]>>>,
    ) -> Option<&'v [u8]> {
        match part {
            KeyPart::ClientIp => ip
                .get_or_insert_with(|| self.client_ip(rq, cx.host()))
                .as_deref()
                .map(str::as_bytes),
            // Every spelling of a path shares its bucket.
            KeyPart::Path => path
                .get_or_insert_with(|| rq.header(":path").map(normalized))
                .as_deref(),
            KeyPart::Header(h) => rq.header(h).filter(|v| !v.is_empty()),
        }
    }

    fn client_ip(&self, rq: &Request<'_>, host: &dyn Host) -> Option<String> {
        let hops = self.client_ip.trusted_hops;
        let from_xff = if hops > 0 {
            rq.header("x-forwarded-for")
                .and_then(|v| client_ip::from_forwarded_for(v, hops))
        } else {
            None
        };
        let ip = match from_xff {
            Some(ip) => ip,
            None => {
                let raw = host.property(&["source", "address"])?;
                client_ip::parse_entry(&raw)?
            }
        };
        Some(client_ip::key_text(ip, self.client_ip.ipv6_prefix))
    }

    /// A token from this worker's batch for `key`, if it holds one.
    fn spend_held(&self, ri: usize, key: &[u8]) -> Option<Taken> {
        // Without batches (the default) nothing is ever held.
        if self.rules.get(ri).is_none_or(|r| r.batch <= 1) {
            return None;
        }
        let mut vm = self.vm.try_borrow_mut().ok()?;
        let (_, _, b) = vm
            .batches
            .iter_mut()
            .find(|(r, k, _)| *r == ri && k.as_slice() == key)?;
        if b.tokens == 0 {
            return None;
        }
        b.tokens -= 1;
        Some(Taken {
            allowed: true,
            remaining: b.remaining + b.tokens,
            reset_s: b.reset_s,
        })
    }

    /// Takes a token (up to the rule's batch: the rest held by this worker)
    /// from `key`'s bucket, compare-and-swap against every other worker.
    fn take(
        &self,
        ri: usize,
        rule: &Rule,
        key: Vec<u8>,
        now: &mut Option<u64>,
        cx: &mut Cx<'_>,
    ) -> Outcome {
        let prefix = self.rule_prefix(ri, cx.host());
        let now = *now.get_or_insert_with(|| cx.host().now_ns());
        let want = self.want(rule);
        let mut bufs = self
            .vm
            .try_borrow_mut()
            .map(|mut vm| std::mem::take(&mut vm.bufs))
            .unwrap_or_default();
        let (outcome, evicted, created) =
            take_in(&prefix, ri, rule, &key, now, want, cx.host(), &mut bufs);
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.bufs = bufs;
        }
        if evicted {
            cx.count(self.m.evictions);
        }
        if created {
            cx.add(self.m.buckets, 1);
        }
        match outcome {
            Outcome::Batch(t, got) => {
                self.hold(ri, key, got - 1, &t);
                Outcome::Taken(t)
            }
            other => other,
        }
    }

    /// Keeps `tokens` taken for `key` for this worker's next requests.
    fn hold(&self, ri: usize, key: Vec<u8>, tokens: u64, t: &Taken) {
        if tokens == 0 {
            return;
        }
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            return; // not held: given back by nobody, so never over-admits
        };
        let batch = Batch {
            tokens,
            remaining: t.remaining,
            reset_s: t.reset_s,
        };
        if let Some((_, _, b)) = vm
            .batches
            .iter_mut()
            .find(|(r, k, _)| *r == ri && *k == key)
        {
            *b = batch;
        } else if vm.batches.len() < MAX_BATCHED_KEYS {
            vm.batches.push((ri, key, batch));
        } else if let Some(spent) = vm.batches.iter_mut().find(|(_, _, b)| b.tokens == 0) {
            *spent = (ri, key, batch);
        }
        // Else (not reached: `take` asks for one token when there is no
        // room) the tokens would be lost until the bucket refills: fewer
        // admitted, never more.
    }

    /// How many tokens to take: the rule's batch when this worker has room
    /// to hold the rest (a free entry, or a spent one: the key's own, if it
    /// had one), else one (a key that cannot be held must not lose the
    /// rest of a batch).
    fn want(&self, rule: &Rule) -> u64 {
        if rule.batch <= 1 {
            return 1;
        }
        match self.vm.try_borrow() {
            Ok(vm)
                if vm.batches.len() < MAX_BATCHED_KEYS
                    || vm.batches.iter().any(|(_, _, b)| b.tokens == 0) =>
            {
                rule.batch
            }
            _ => 1,
        }
    }

    /// Gives every token this worker holds back to its shared bucket.
    fn give_back_held(&self, cx: &mut RootCx<'_>) {
        let batches = match self.vm.try_borrow_mut() {
            Ok(mut vm) if !vm.batches.is_empty() => std::mem::take(&mut vm.batches),
            _ => return,
        };
        for (ri, key, b) in batches {
            if let (Some(rule), true) = (self.rules.get(ri), b.tokens > 0) {
                let prefix = self.rule_prefix(ri, cx.host());
                give_back_in(&prefix, ri, rule, &key, b.tokens, cx.host());
            }
        }
    }

    /// Empties buckets that are full again (forgetting them loses nothing)
    /// and buckets of older configs, a slice of the slots per tick.
    fn sweep(&self, cx: &mut RootCx<'_>) {
        if self.total_slots == 0 {
            return;
        }
        let mut skey = String::new();
        let now = cx.host().now_ns();
        let n = self
            .total_slots
            .min(SWEEP_MIN.max(self.total_slots / SWEEP_PASS_TICKS));
        let start = self.vm.try_borrow().map(|vm| vm.sweep_next).unwrap_or(0);
        let mut freed = 0i64;
        let mut pos = start % self.total_slots;
        // Walk rule by rule from the global position.
        let mut done = 0u64;
        while done < n {
            let (ri, slot) = self.locate(pos);
            let Some(rule) = self.rules.get(ri) else {
                break;
            };
            let prefix = self.rule_prefix(ri, cx.host());
            bucket::slot_key_into(&mut skey, &prefix, slot);
            if let Some((value, cas)) = cx.host().shared_get(&skey) {
                if !value.is_empty() {
                    let decoded = bucket::decode(&value);
                    let clear = match decoded {
                        Some((fp, b, _)) if fp == rule.fingerprint => {
                            b.refilled(&rule.limit, now).is_full(&rule.limit)
                        }
                        _ => true,
                    };
                    // Only buckets count as live; a foreign value never did.
                    if clear
                        && cx.host().shared_set(&skey, &[], cas) == SharedWrite::Written
                        && decoded.is_some()
                    {
                        freed += 1;
                    }
                }
            }
            pos = (pos + 1) % self.total_slots;
            done += 1;
        }
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.sweep_next = pos;
        }
        if freed > 0 {
            cx.add(self.m.buckets, -freed);
        }
    }

    /// (rule, slot) of a global slot position.
    fn locate(&self, mut pos: u64) -> (usize, u32) {
        for (i, r) in self.rules.iter().enumerate() {
            if pos < u64::from(r.slots) {
                return (i, pos as u32);
            }
            pos -= u64::from(r.slots);
        }
        (self.rules.len(), 0)
    }

    /// The rate headers for `s`, each handed to `put` (no list built).
    fn rate_headers(&self, rule: &Rule, s: &Shown, mut put: impl FnMut(&'static str, Text)) {
        if self.headers.x_ratelimit {
            put("x-ratelimit-limit", (&rule.limit_header).into());
            put("x-ratelimit-remaining", u64_text(s.remaining).into());
            put("x-ratelimit-reset", u64_text(s.reset_s).into());
        }
        if self.headers.ietf {
            put("ratelimit-policy", (&rule.policy_header).into());
            // `"<rule>";r=<remaining>;t=<seconds>`, without core::fmt.
            let mut v = String::with_capacity(rule.name.len() + 32);
            v.push('"');
            v.push_str(&rule.name);
            v.push_str("\";r=");
            push_u64(&mut v, s.remaining);
            v.push_str(";t=");
            push_u64(&mut v, s.reset_s);
            put("ratelimit", v.into());
        }
    }

    fn too_many(&self, rule: &Rule, s: &Shown) -> LocalReply {
        // A flood over the limit is all 429s: built without core::fmt, in
        // as few allocations as it takes.
        let mut body = String::with_capacity(rule.name.len() + 80);
        body.push_str("{\"error\":\"rate_limited\",\"rule\":\"");
        body.push_str(&rule.name);
        body.push_str("\",\"retry_after_seconds\":");
        push_u64(&mut body, s.reset_s);
        body.push_str("}\n");
        let mut reply = LocalReply::new(429, body).details("meshguard_ratelimit_limited");
        reply.headers.reserve_exact(7);
        reply
            .headers
            .push(("content-type".into(), "application/json".into()));
        reply
            .headers
            .push(("retry-after".into(), u64_text(s.reset_s).into()));
        self.rate_headers(rule, s, |k, v| reply.headers.push((k.into(), v)));
        reply
    }

    fn unavailable(&self) -> LocalReply {
        LocalReply::new(503, "{\"error\":\"rate_limit_unavailable\"}\n")
            .header("content-type", "application/json")
            .details("meshguard_ratelimit_error")
    }
}

/// [`RateLimit::take`] against the host: up to `want` tokens (at least
/// one, or refused). Returns (outcome, another key's bucket was taken
/// over, a bucket went into a free slot).
#[allow(clippy::too_many_arguments)]
fn take_in(
    rule_prefix: &str,
    ri: usize,
    rule: &Rule,
    key: &[u8],
    now: u64,
    want: u64,
    host: &mut dyn Host,
    bufs: &mut Bufs,
) -> (Outcome, bool, bool) {
    let slot = bucket::slot_of(ri, key, rule.slots);
    bucket::slot_key_into(&mut bufs.skey, rule_prefix, slot);
    let skey = bufs.skey.as_str();
    let mut created_placeholder = false;
    for _ in 0..CAS_TRIES {
        let Some((value, cas)) = host.shared_get(skey) else {
            // A never-used slot: it gets an empty value (a free slot) only
            // if still absent — an unconditional write here could wipe a
            // bucket another worker just put in (tokens spent, forgotten) —
            // and the bucket goes in with compare-and-swap.
            if created_placeholder {
                return (Outcome::Error, false, false);
            }
            created_placeholder = true;
            match host.shared_set(skey, &[], CREATE_ONLY) {
                SharedWrite::Written | SharedWrite::CasMismatch => continue,
                SharedWrite::Failed => return (Outcome::Error, false, false),
            }
        };
        let decoded = bucket::decode(&value);
        let (start, evicting, new_bucket) = match decoded {
            Some((fp, b, k)) if fp == rule.fingerprint && k == key => (b, false, false),
            // Another key of this rule: take the slot over with its tokens
            // (see bucket.rs: no key ever gets more than its limit).
            Some((fp, b, _)) if fp == rule.fingerprint => (b, true, false),
            // A bucket of an older config: its units may differ.
            Some(_) => (Bucket::full(&rule.limit, now), false, false),
            None => (Bucket::full(&rule.limit, now), false, true),
        };
        let (next, taken, got) = start.take_up_to(&rule.limit, now, want);
        if !taken.allowed && !evicting {
            // Nothing spent: nothing to write.
            return (Outcome::Taken(taken), false, false);
        }
        bucket::encode_into(&mut bufs.value, rule.fingerprint, &next, key);
        match host.shared_set(skey, &bufs.value, cas) {
            SharedWrite::Written if got > 1 => {
                return (Outcome::Batch(taken, got), evicting, new_bucket)
            }
            SharedWrite::Written => return (Outcome::Taken(taken), evicting, new_bucket),
            SharedWrite::CasMismatch => continue,
            SharedWrite::Failed => return (Outcome::Error, false, false),
        }
    }
    log::warn!(
        "ratelimit: rule `{}`: {CAS_TRIES} compare-and-swap attempts lost; on_error applies",
        rule.name
    );
    (Outcome::Error, false, false)
}

/// Puts `tokens` a worker took for `key` and did not spend back into its
/// shared bucket. If the slot now holds another key, an older config's
/// bucket or nothing (swept: it was full), or the compare-and-swap keeps
/// losing, they are dropped: fewer admitted, never more.
fn give_back_in(
    rule_prefix: &str,
    ri: usize,
    rule: &Rule,
    key: &[u8],
    tokens: u64,
    host: &mut dyn Host,
) {
    let slot = bucket::slot_of(ri, key, rule.slots);
    let mut skey = String::new();
    bucket::slot_key_into(&mut skey, rule_prefix, slot);
    for _ in 0..CAS_TRIES {
        let Some((value, cas)) = host.shared_get(&skey) else {
            return;
        };
        let b = match bucket::decode(&value) {
            Some((fp, b, k)) if fp == rule.fingerprint && k == key => b,
            _ => return,
        };
        let back = b.give_back(&rule.limit, tokens);
        match host.shared_set(&skey, &bucket::encode(rule.fingerprint, &back, key), cas) {
            SharedWrite::CasMismatch => continue,
            SharedWrite::Written | SharedWrite::Failed => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshguard_common::config::JsonPath;
    use meshguard_stage::host::NoMetrics;
    use std::collections::HashMap;
    use std::time::SystemTime;

    /// Shared data with Envoy's semantics, where another worker creates
    /// and spends the slot between this worker's read and its write.
    struct Racing {
        map: HashMap<String, (Vec<u8>, u32)>,
        next_cas: u32,
        /// Written right after the first read of a missing key.
        other: Option<Vec<u8>>,
    }

    impl Host for Racing {
        fn now(&self) -> SystemTime {
            SystemTime::UNIX_EPOCH
        }
        fn random(&mut self, _: &mut [u8]) -> bool {
            false
        }
        fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.map.get(key).cloned()
        }
        fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> SharedWrite {
            if let Some(other) = self.other.take() {
                // The other worker got in first: it created the slot and
                // put its bucket in.
                self.next_cas += 1;
                self.map.insert(key.to_string(), (other, self.next_cas));
            }
            if let Some((_, c)) = self.map.get(key) {
                if cas != 0 && cas != *c {
                    return SharedWrite::CasMismatch;
                }
            }
            self.next_cas += 1;
            self.map
                .insert(key.to_string(), (value.to_vec(), self.next_cas));
            SharedWrite::Written
        }
        fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
            None
        }
        fn set_property(&mut self, _: &[&str], _: &[u8]) -> bool {
            false
        }
    }

    /// Both workers found the slot missing; the other one created it and
    /// spent a token first. This worker's creation must not wipe that
    /// bucket: it spends from it, so two requests cost two tokens.
    #[test]
    fn creating_a_slot_never_wipes_another_workers_bucket() {
        let config: RateLimitConfig = serde_json::from_str(
            r#"{"rules":[{"name":"r","key":["path"],"limit":{"requests":5,"per":"minute"}}]}"#,
        )
        .unwrap();
        let rl = RateLimit::build(config, &JsonPath::root(), &mut NoMetrics).unwrap();
        let rule = &rl.rules[0];
        let key = b"k".as_slice();
        let now = 1_000_000_000_000;
        let (spent, _) = Bucket::full(&rule.limit, now).take(&rule.limit, now);
        let mut host = Racing {
            map: HashMap::new(),
            next_cas: 0,
            other: Some(bucket::encode(rule.fingerprint, &spent, key)),
        };
        let (outcome, _, _) = take_in(
            "meshguard.rl.0.",
            0,
            rule,
            key,
            now,
            1,
            &mut host,
            &mut Bufs::default(),
        );
        let Outcome::Taken(t) = outcome else {
            panic!("no decision");
        };
        assert!(t.allowed);
        assert_eq!(t.remaining, 3, "5 tokens, two requests");
    }
}
