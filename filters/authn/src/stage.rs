//! authn as a meshguard stage: rules pick what a request needs, tokens
//! are found, checked (cache first, junk refused before any signature
//! work), and turned into owned request headers and the identity fact.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use meshguard_authn_crypto::Alg;
use meshguard_common::config::{ConfigError, JsonPath};
use meshguard_common::headers::{host_without_port, path_only, HeaderSource, HostPattern};
use meshguard_common::metrics::name;
use meshguard_stage::host::CREATE_ONLY;
use meshguard_stage::{
    Cx, Facts, Host, HttpCallout, Identity, LocalReply, MetricId, MetricsRegistry, Needs, Reply,
    Request, RootCx, SharedWrite, Stage, Step, Token,
};

use crate::cache::{self, ClaimVal, Lookup, Tagger, Verified};
use crate::config::{AuthnConfig, PathMatch, Requirement, TokenSource};
use crate::jwks::{self, Why};
use crate::jwt::{self, Invalid, TimeRules};
use crate::keys::{self, KeySet};
use crate::msgsig::SigError;

mod ext;

/// The cache's hash key, per plugin (`Authn::hash_key_name`).
const HASH_KEY: &str = "hashkey";
/// Slots the timer checks for expired entries per tick.
const SWEEP_PER_TICK: u32 = 256;

enum KeySource {
    Inline,
    Remote {
        cluster: String,
        authority: String,
        path: String,
        timeout: Duration,
    },
    Oidc {
        cluster: String,
        authority: String,
        path: String,
        timeout: Duration,
    },
}

struct ProviderMetrics {
    fetch_ok: MetricId,
    fetch_failed: MetricId,
    keys_loaded: MetricId,
    keys_skipped_weak: MetricId,
    fail_open: MetricId,
}

struct Provider {
    name: String,
    issuer: Option<Rc<str>>,
    audiences: Vec<String>,
    algs: Vec<Alg>,
    keys_from: KeySource,
    ttl_ms: u64,
    min_refetch_ms: u64,
    fail_open: bool,
    sources: Vec<TokenSource>,
    skew: i64,
    require_exp: bool,
    max_token: usize,
    identity_header: Rc<str>,
    identity_claim: usize,
    claim_headers: Vec<(usize, Rc<str>)>,
    payload_header: Option<Rc<str>>,
    forward: bool,
    m: ProviderMetrics,
}

impl Provider {
    fn timeout_ms(&self) -> u64 {
        match &self.keys_from {
            KeySource::Inline => 0,
            KeySource::Remote { timeout, .. } | KeySource::Oidc { timeout, .. } => {
                timeout.as_millis() as u64
            }
        }
    }
}

/// Where [`Authn::rule_for`] sends a request.
enum Routed<'a> {
    /// The path is not in normal form: 400 before any rule.
    BadPath,
    /// A CORS preflight let through.
    Preflight,
    /// The first matching rule, if any.
    Rule(Option<&'a Rule>),
}

enum PathPat {
    Exact(String),
    Prefix(String),
    Regex(regex_lite::Regex),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Any,
    All,
    Optional,
    /// The external auth service with this index decides.
    ExtAuth(usize),
    /// An RFC 9421 signature by a key of this HMAC verifier.
    Hmac(usize),
}

struct Rule {
    hosts: Vec<HostPattern>,
    path: Option<PathPat>,
    methods: Vec<String>,
    kind: Kind,
    providers: Vec<usize>,
    /// (claim index, value)
    claims: Vec<(usize, String)>,
    /// The `scope` parameter of a 403 challenge.
    scope: Option<String>,
    forward: bool,
}

struct Metrics {
    allowed: MetricId,
    public: MetricId,
    denied: Vec<(Invalid, MetricId)>,
    denied_missing: MetricId,
    denied_claims: MetricId,
    denied_no_rule: MetricId,
    denied_path: MetricId,
    unavailable: MetricId,
    cors: MetricId,
    cache_hit: MetricId,
    cache_miss: MetricId,
    cache_evicted: MetricId,
    cache_expired_removed: MetricId,
    sig_denied: Vec<(SigError, MetricId)>,
}

struct Local {
    keys: Rc<KeySet>,
    /// CAS of the shared entry these keys were parsed from (0: none).
    cas: u32,
    fetched_at_ms: u64,
    /// Until then an unknown `kid` is refused at once: no shared-data read
    /// of the key set or the fetch lock, so a flood of junk kids costs
    /// this worker one look per [`UNKNOWN_KID_QUIET_MS`]. Cleared when new
    /// keys arrive.
    quiet_until_ms: u64,
}

/// How long after looking for an unknown `kid` (re-reading the shared key
/// set, asking for a fetch) a worker refuses unknown kids without looking.
const UNKNOWN_KID_QUIET_MS: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
enum FetchKind {
    Discovery,
    Jwks,
}

#[derive(Default)]
struct Vm {
    local: Vec<Local>,
    tagger: Option<Tagger>,
    /// This worker's recently verified tokens, in front of shared data: a
    /// repeated token costs no host call, no SipHash and no decoding.
    /// Bounded ([`cache::L1_SLOTS`] slots); entries obey `exp` like the
    /// shared cache's. Made with the tagger (its seed comes from the
    /// tagger's random key).
    l1: Option<cache::L1>,
    /// The two counters every allowed request bumps (`allowed`,
    /// `cache_hit`), added up here and handed to the proxy by the timer
    /// once a second: two host calls fewer per request.
    batched_allowed: i64,
    batched_hits: i64,
    /// 401s by reason ([`Invalid::ALL`] order), batched the same way: a
    /// flood of junk tokens costs no metric host call per request.
    batched_invalid: [i64; Invalid::ALL.len()],
    sweep_next: u32,
    /// This plugin's part of every shared-data key
    /// (`meshguard_common::contract::plugin_scope`), read once.
    scope: Option<Rc<str>>,
    /// Root callouts in flight: (token, provider, kind).
    root_calls: Vec<(Token, usize, FetchKind)>,
    /// When this worker last logged an auth-service failure: an outage
    /// logs once a second per worker, not once per request.
    ext_logged_ms: u64,
    /// This worker's recent ext-auth decisions, in front of shared data.
    ext_l1: ext::ExtL1,
    /// Counters bumped on every ext-auth/HMAC request (allowed, cache
    /// hits), added up here and handed over by the timer.
    batched: Vec<(MetricId, i64)>,
}

/// The authn stage.
pub struct Authn {
    providers: Vec<Provider>,
    ext: Vec<ext::ExtProvider>,
    hmacs: Vec<ext::HmacProvider>,
    rules: Vec<Rule>,
    bypass_cors: bool,
    /// `identity_filter_state`.
    publish_state: bool,
    realm: String,
    cache_slots: u32,
    config_fp: u64,
    claim_paths: Vec<String>,
    owned: Vec<Rc<str>>,
    /// The 401 for each reason, prepared once.
    replies: Vec<(Invalid, LocalReply)>,
    vm: RefCell<Vm>,
    m: Metrics,
}

/// Per request: the key fetch this request waits on, if any.
#[derive(Default)]
pub struct PerRequest {
    waiting: Option<(usize, FetchKind)>,
    /// External auth and HMAC: the call in flight, the digest to check.
    ext: ext::ExtState,
    /// A fetch already ran for this request: never wait twice.
    fetched: bool,
}

/// How one provider's check ended.
enum Check {
    Ok(Rc<Verified>),
    Absent,
    Bad(Invalid),
    /// Keys are being fetched for this request.
    Fetch(Token, usize, FetchKind),
    /// No keys yet and none can be fetched now.
    Unavailable(usize),
}

fn claim_index(paths: &mut Vec<String>, p: &str) -> usize {
    match paths.iter().position(|x| x == p) {
        Some(i) => i,
        None => {
            paths.push(p.to_string());
            paths.len() - 1
        }
    }
}

/// `v` contains `needle`: eight bytes per step (wasm has 64-bit integers,
/// while `memchr` on wasm32 steps four at a time), with the exact
/// zero-byte test on the XOR with the needle repeated.
fn has_byte(v: &[u8], needle: u8) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO.wrapping_mul(u64::from(needle));
    let (words, rest) = v.as_chunks::<8>();
    for w in words {
        let x = u64::from_le_bytes(*w) ^ pattern;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            return true;
        }
    }
    rest.contains(&needle)
}

fn now_secs(host: &dyn Host) -> i64 {
    host.now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_ms(host: &dyn Host) -> u64 {
    host.now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn json_escape(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl Stage for Authn {
    const NAME: &'static str = "authn";
    const CONFIG_KEY: &'static str = "authn";
    type Config = AuthnConfig;
    type PerRequest = PerRequest;

    fn build(
        config: AuthnConfig,
        at: &JsonPath,
        reg: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError> {
        let algs = config.validate_at(at)?;
        // Debug, not serde_json: no serializer in the module (-20 KB). It
        // shows every field but HMAC secrets, which no cache entry depends on.
        let config_fp = cache::fingerprint(format!("{config:?}").as_bytes());
        let mut claim_paths = Vec::new();
        let mut owned: Vec<Rc<str>> = Vec::new();
        let mut own = |h: &str| -> Rc<str> {
            let lower = h.to_ascii_lowercase();
            match owned.iter().find(|o| o.as_ref() == lower) {
                Some(o) => Rc::clone(o),
                None => {
                    let rc: Rc<str> = lower.into();
                    owned.push(Rc::clone(&rc));
                    rc
                }
            }
        };
        let mut providers = Vec::new();
        let mut local = Vec::new();
        for ((i, p), algs) in config.providers.iter().enumerate().zip(algs) {
            let pat = at.field("providers").index(i);
            let mut keys = KeySet::default();
            let keys_from = if let Some(doc) = &p.jwks.inline {
                keys = keys::parse_inline(doc, &algs).map_err(|(k, e)| {
                    let path = pat.field("jwks").field("inline");
                    match k {
                        Some(k) => path.field("keys").index(k).err(e),
                        None => path.err(e),
                    }
                })?;
                KeySource::Inline
            } else if let Some(r) = &p.jwks.remote {
                KeySource::Remote {
                    cluster: r.cluster.clone(),
                    authority: r.authority.clone().unwrap_or_else(|| r.cluster.clone()),
                    path: r.path.clone().unwrap_or_default(),
                    timeout: Duration::from_millis(r.timeout_ms),
                }
            } else if let Some(r) = &p.jwks.oidc {
                KeySource::Oidc {
                    cluster: r.cluster.clone(),
                    authority: r.authority.clone().unwrap_or_else(|| r.cluster.clone()),
                    path: r
                        .path
                        .clone()
                        .unwrap_or_else(|| "/.well-known/openid-configuration".into()),
                    timeout: Duration::from_millis(r.timeout_ms),
                }
            } else {
                return Err(pat
                    .field("jwks")
                    .err("expected one of `inline`, `remote`, `oidc`"));
            };
            local.push(Local {
                keys: Rc::new(keys),
                cas: 0,
                fetched_at_ms: 0,
                quiet_until_ms: 0,
            });
            let n = p.name.as_str();
            providers.push(Provider {
                name: p.name.clone(),
                issuer: p.issuer.as_deref().map(Rc::from),
                audiences: p.audiences.clone(),
                algs,
                keys_from,
                ttl_ms: p.jwks.cache_seconds * 1000,
                min_refetch_ms: p.jwks.min_refetch_seconds * 1000,
                fail_open: p.jwks.fail_open,
                sources: p.sources.clone(),
                skew: p.clock_skew_seconds as i64,
                require_exp: p.require_expiration,
                max_token: p.max_token_bytes,
                identity_header: own(&p.identity.header),
                identity_claim: claim_index(&mut claim_paths, &p.identity.claim),
                claim_headers: p
                    .claims_to_headers
                    .iter()
                    .map(|c| (claim_index(&mut claim_paths, &c.claim), own(&c.header)))
                    .collect(),
                payload_header: p.payload_header.as_deref().map(&mut own),
                forward: p.forward,
                m: ProviderMetrics {
                    fetch_ok: reg.counter(&name("meshguard_authn_jwks_fetch_ok", &[n])),
                    fetch_failed: reg.counter(&name("meshguard_authn_jwks_fetch_failed", &[n])),
                    keys_loaded: reg.gauge(&name("meshguard_authn_jwks_keys", &[n])),
                    keys_skipped_weak: reg
                        .counter(&name("meshguard_authn_jwks_keys_skipped_weak", &[n])),
                    fail_open: reg.counter(&name("meshguard_authn_fail_open", &[n])),
                },
            });
        }
        let ext: Vec<ext::ExtProvider> = config
            .ext_auth
            .iter()
            .map(|x| ext::build_ext(x, &mut own, reg))
            .collect();
        let mut hmacs = Vec::new();
        for (i, h) in config.hmac.iter().enumerate() {
            hmacs.push(ext::build_hmac(
                h,
                &at.field("hmac").index(i),
                &mut own,
                reg,
            )?);
        }
        let index: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        let mut rules = Vec::new();
        for r in &config.rules {
            let none = Vec::new();
            let (kind, list) = match &r.requires {
                Requirement::Public => (Kind::Public, &none),
                Requirement::Any(l) => (Kind::Any, l),
                Requirement::All(l) => (Kind::All, l),
                Requirement::Optional(l) => (Kind::Optional, l),
                Requirement::ExtAuth(n) => (
                    Kind::ExtAuth(
                        config
                            .ext_auth
                            .iter()
                            .position(|x| &x.name == n)
                            .unwrap_or(usize::MAX),
                    ),
                    &none,
                ),
                Requirement::Hmac(n) => (
                    Kind::Hmac(
                        config
                            .hmac
                            .iter()
                            .position(|x| &x.name == n)
                            .unwrap_or(usize::MAX),
                    ),
                    &none,
                ),
            };
            let m = r.match_.clone().unwrap_or(crate::config::MatchConfig {
                hosts: Vec::new(),
                path: None,
                methods: Vec::new(),
            });
            let scope: Vec<&str> = r
                .claims
                .iter()
                .filter(|c| c.claim == "scope")
                .map(|c| c.contains.as_str())
                .collect();
            rules.push(Rule {
                hosts: m.hosts.iter().map(|h| HostPattern::new(h)).collect(),
                path: match m.path {
                    None => None,
                    Some(PathMatch::Exact(p)) => Some(PathPat::Exact(p)),
                    Some(PathMatch::Prefix(p)) => Some(PathPat::Prefix(p)),
                    Some(PathMatch::Regex(r)) => {
                        // Validated already; anchored to the whole path.
                        regex_lite::Regex::new(&format!("^(?:{r})$"))
                            .ok()
                            .map(PathPat::Regex)
                    }
                },
                methods: m.methods,
                kind,
                providers: list
                    .iter()
                    .filter_map(|n| index.iter().position(|x| x == n))
                    .collect(),
                claims: r
                    .claims
                    .iter()
                    .map(|c| (claim_index(&mut claim_paths, &c.claim), c.contains.clone()))
                    .collect(),
                scope: (!scope.is_empty()).then(|| scope.join(" ")),
                forward: r.forward_token,
            });
        }
        let m = Metrics {
            allowed: reg.counter("meshguard_authn_allowed"),
            public: reg.counter("meshguard_authn_public"),
            denied: Invalid::ALL
                .iter()
                .map(|i| {
                    (
                        *i,
                        reg.counter(&name("meshguard_authn_denied", &[i.reason()])),
                    )
                })
                .collect(),
            denied_missing: reg.counter("meshguard_authn_denied.missing"),
            denied_claims: reg.counter("meshguard_authn_denied.insufficient_claims"),
            denied_no_rule: reg.counter("meshguard_authn_denied.no_rule"),
            denied_path: reg.counter("meshguard_authn_denied.path"),
            unavailable: reg.counter("meshguard_authn_unavailable"),
            cors: reg.counter("meshguard_authn_cors_preflight"),
            cache_hit: reg.counter("meshguard_authn_cache_hit"),
            cache_miss: reg.counter("meshguard_authn_cache_miss"),
            cache_evicted: reg.counter("meshguard_authn_cache_evicted"),
            cache_expired_removed: reg.counter("meshguard_authn_cache_expired_removed"),
            sig_denied: if config.hmac.is_empty() {
                Vec::new()
            } else {
                SigError::ALL
                    .iter()
                    .map(|e| {
                        (
                            *e,
                            reg.counter(&name("meshguard_authn_denied", &[e.reason()])),
                        )
                    })
                    .collect()
            },
        };
        log::info!(
            "authn: configured {} provider(s), {} rule(s)",
            providers.len(),
            rules.len()
        );
        let mut stage = Self {
            providers,
            ext,
            hmacs,
            rules,
            bypass_cors: config.bypass_cors_preflight,
            publish_state: config.identity_filter_state,
            realm: config.realm,
            cache_slots: config.cache.max_entries,
            config_fp,
            claim_paths,
            owned,
            replies: Vec::new(),
            vm: RefCell::new(Vm {
                local,
                ..Vm::default()
            }),
            m,
        };
        stage.replies = Invalid::ALL
            .iter()
            .filter_map(|i| {
                let d = i.description();
                match stage.deny(
                    401,
                    Some(stage.challenge(Some(("invalid_token", d)), None)),
                    "invalid_token",
                    d,
                ) {
                    Step::Respond(r) => Some((*i, r)),
                    _ => None,
                }
            })
            .collect();
        Ok(stage)
    }

    fn needs(&self) -> Needs {
        // Key refresh, the cache sweep and the batched counters.
        Needs {
            tick: Some(Duration::from_secs(1)),
            // Content-Digest checks; requests that need no body skip it.
            request_body: ext::max_body(&self.hmacs),
            ..Needs::default()
        }
    }

    fn owned_request_headers(&self) -> &[Rc<str>] {
        &self.owned
    }

    fn when_headers_unreadable(&self) -> Step {
        Step::Respond(
            LocalReply::new(503, "{\"error\":\"temporarily_unavailable\"}\n")
                .header("content-type", "application/json")
                .details("meshguard_authn_unreadable"),
        )
    }

    fn on_request_headers(
        &self,
        rq: &mut Request<'_>,
        st: &mut PerRequest,
        cx: &mut Cx<'_>,
    ) -> Step {
        self.ensure_scope(cx.host());
        // Client copies of every header authn sets, in any case and any
        // number: one pass over the headers, a host call only for those
        // present (whatever authn sets later replaces them anyway).
        let present: Vec<&Rc<str>> = self
            .owned
            .iter()
            .filter(|h| {
                rq.original()
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case(h.as_bytes()))
            })
            .collect();
        for h in present {
            rq.remove(h);
        }
        self.decide(rq, st, cx)
    }

    fn on_request_body(&self, rq: &mut Request<'_>, st: &mut PerRequest, cx: &mut Cx<'_>) -> Step {
        self.hmac_body(rq, st, cx)
    }

    fn on_callout(
        &self,
        reply: Reply<'_>,
        rq: &mut Request<'_>,
        st: &mut PerRequest,
        cx: &mut Cx<'_>,
    ) -> Step {
        if let Some((i, tag)) = st.ext.call.take() {
            return self.ext_answered(i, tag, reply, rq, cx);
        }
        let Some((p, kind)) = st.waiting.take() else {
            return self.decide(rq, st, cx);
        };
        st.fetched = true;
        let mut next = None;
        self.fetch_answered(p, kind, reply, cx.host(), &mut |id, d| {
            next_bump(&mut next, id, d)
        });
        let mut follow_up = None;
        if let Some(call) = self.follow_up(p, kind, cx.host()) {
            match cx.http_call(&call.callout()) {
                Ok(t) => follow_up = Some(t),
                Err(e) => {
                    log::warn!(
                        "authn: cannot fetch keys for `{}`: {e:?}",
                        self.providers.get(p).map(|x| x.name.as_str()).unwrap_or("")
                    );
                    if let Some(pr) = self.providers.get(p) {
                        jwks::release(cx.host(), &self.sid(&pr.name));
                    }
                }
            }
        }
        for (id, d) in next.unwrap_or_default() {
            cx.add(id, d);
        }
        if let Some(t) = follow_up {
            st.waiting = Some((p, FetchKind::Jwks));
            return Step::Wait(t);
        }
        self.decide(rq, st, cx)
    }

    fn on_tick(&self, cx: &mut RootCx<'_>) {
        self.ensure_scope(cx.host());
        let now = now_ms(cx.host());
        let mut bumps: Option<Vec<(MetricId, i64)>> = None;
        for (i, p) in self.providers.iter().enumerate() {
            if matches!(p.keys_from, KeySource::Inline) {
                continue;
            }
            self.sync(i, cx.host());
            let fetched_at = self
                .vm
                .borrow()
                .local
                .get(i)
                .map(|l| l.fetched_at_ms)
                .unwrap_or(0);
            let due = fetched_at == 0 || now >= fetched_at.saturating_add(p.ttl_ms);
            if !due
                || !jwks::try_acquire(
                    cx.host(),
                    &self.sid(&p.name),
                    now,
                    Why::Refresh,
                    p.min_refetch_ms,
                    p.timeout_ms(),
                )
            {
                continue;
            }
            let call = self.first_call(i, cx.host());
            match call.as_ref().map(|c| cx.http_call(&c.callout())) {
                Some(Ok(t)) => {
                    if let (Ok(mut vm), Some(c)) = (self.vm.try_borrow_mut(), call) {
                        vm.root_calls.push((t, i, c.kind));
                    }
                }
                Some(Err(e)) => {
                    log::warn!("authn: cannot fetch keys for `{}`: {e:?}", p.name);
                    next_bump(&mut bumps, p.m.fetch_failed, 1);
                    jwks::release(cx.host(), &self.sid(&p.name));
                }
                None => jwks::release(cx.host(), &self.sid(&p.name)),
            }
        }
        self.sweep(cx.host(), &mut bumps);
        self.adopt_shared_hash_key(cx.host());
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            if vm.batched_allowed > 0 {
                next_bump(
                    &mut bumps,
                    self.m.allowed,
                    std::mem::take(&mut vm.batched_allowed),
                );
            }
            if vm.batched_hits > 0 {
                next_bump(
                    &mut bumps,
                    self.m.cache_hit,
                    std::mem::take(&mut vm.batched_hits),
                );
            }
            for (id, n) in std::mem::take(&mut vm.batched) {
                next_bump(&mut bumps, id, n);
            }
            let invalid = std::mem::take(&mut vm.batched_invalid);
            for (why, n) in Invalid::ALL.iter().zip(invalid) {
                if n > 0 {
                    if let Some((_, id)) = self.m.denied.iter().find(|(i, _)| i == why) {
                        next_bump(&mut bumps, *id, n);
                    }
                }
            }
        }
        for (id, d) in bumps.unwrap_or_default() {
            cx.add(id, d);
        }
    }

    fn on_root_callout(&self, token: Token, reply: Reply<'_>, cx: &mut RootCx<'_>) {
        let found = {
            let Ok(mut vm) = self.vm.try_borrow_mut() else {
                return;
            };
            let pos = vm.root_calls.iter().position(|(t, _, _)| *t == token);
            pos.map(|i| vm.root_calls.swap_remove(i))
        };
        let Some((_, p, kind)) = found else { return };
        let mut bumps = None;
        self.fetch_answered(p, kind, reply, cx.host(), &mut |id, d| {
            next_bump(&mut bumps, id, d)
        });
        if let Some(call) = self.follow_up(p, kind, cx.host()) {
            match cx.http_call(&call.callout()) {
                Ok(t) => {
                    if let Ok(mut vm) = self.vm.try_borrow_mut() {
                        vm.root_calls.push((t, p, call.kind));
                    }
                }
                Err(_) => {
                    if let Some(pr) = self.providers.get(p) {
                        jwks::release(cx.host(), &self.sid(&pr.name));
                    }
                }
            }
        }
        for (id, d) in bumps.unwrap_or_default() {
            cx.add(id, d);
        }
    }
}

fn next_bump(b: &mut Option<Vec<(MetricId, i64)>>, id: MetricId, d: i64) {
    b.get_or_insert_with(Vec::new).push((id, d));
}

/// A key-server request to make.
struct Call {
    kind: FetchKind,
    cluster: String,
    authority: String,
    path: String,
    timeout: Duration,
}

impl Call {
    fn callout(&self) -> HttpCallout<'_> {
        HttpCallout {
            cluster: &self.cluster,
            headers: vec![
                (":method", "GET"),
                (":path", self.path.as_str()),
                (":authority", self.authority.as_str()),
                ("accept", "application/json"),
            ],
            body: None,
            timeout: self.timeout,
        }
    }
}

impl Authn {
    /// The stage's claim-path table (cache records are indexed by it).
    pub fn claim_paths(&self) -> &[String] {
        &self.claim_paths
    }

    fn deny(&self, status: u16, challenge: Option<String>, error: &str, description: &str) -> Step {
        let mut body = format!("{{\"error\":{}", json_escape(error));
        if !description.is_empty() {
            body.push_str(&format!(
                ",\"error_description\":{}",
                json_escape(description)
            ));
        }
        body.push_str("}\n");
        // Shared text: the 401s are prepared once and cloned per request.
        let mut reply = LocalReply::new(status, Rc::<str>::from(body))
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .details(match status {
                400 => "meshguard_authn_bad_request",
                401 => "meshguard_authn_unauthorized",
                403 => "meshguard_authn_forbidden",
                413 => "meshguard_authn_body_too_large",
                _ => "meshguard_authn_unavailable",
            });
        if let Some(c) = challenge {
            reply = reply.header("www-authenticate", Rc::<str>::from(c));
        }
        Step::Respond(reply)
    }

    fn challenge(&self, error: Option<(&str, &str)>, scope: Option<&str>) -> String {
        let mut c = format!("Bearer realm=\"{}\"", self.realm);
        if let Some((e, d)) = error {
            c.push_str(&format!(", error=\"{e}\", error_description=\"{d}\""));
        }
        if let Some(s) = scope {
            if s.bytes()
                .all(|b| b > 0x20 && b != b'"' && b != b'\\' && b < 0x7f || b == b' ')
            {
                c.push_str(&format!(", scope=\"{s}\""));
            }
        }
        c
    }

    fn invalid(&self, why: Invalid, cx: &mut Cx<'_>) -> Step {
        let batched = Invalid::ALL.iter().position(|i| *i == why).and_then(|at| {
            let mut vm = self.vm.try_borrow_mut().ok()?;
            *vm.batched_invalid.get_mut(at)? += 1;
            Some(())
        });
        if batched.is_none() {
            if let Some((_, id)) = self.m.denied.iter().find(|(i, _)| *i == why) {
                cx.count(*id);
            }
        }
        // Built once per reason at configure time: a junk flood pays no
        // formatting.
        if let Some((_, reply)) = self.replies.iter().find(|(i, _)| *i == why) {
            return Step::Respond(reply.clone());
        }
        let d = why.description();
        self.deny(
            401,
            Some(self.challenge(Some(("invalid_token", d)), None)),
            "invalid_token",
            d,
        )
    }

    /// The first matching rule, or `Err(())` for a CORS preflight that
    /// passes (both from one pass over the headers).
    /// The rule a request falls under, from one pass over its headers.
    fn rule_for(&self, rq: &Request<'_>) -> Routed<'_> {
        let mut want = [None; 5];
        rq.first_many(
            &[
                ":authority",
                ":path",
                ":method",
                "origin",
                "access-control-request-method",
            ],
            &mut want,
        );
        let [authority, path, method, origin, acrm] = want;
        // Rules match the path as sent; the upstream might read `//api`,
        // `/public/../api` or `%2e%2e` as another path than the rule saw.
        // (No `:path`, as in CONNECT: nothing to misread.)
        if path.is_some_and(|p| !meshguard_common::path::is_normal(p)) {
            return Routed::BadPath;
        }
        if self.bypass_cors
            && method == Some(b"OPTIONS".as_slice())
            && origin.is_some()
            && acrm.is_some()
        {
            return Routed::Preflight;
        }
        let host = host_without_port(authority.unwrap_or_default());
        let path = path_only(path.unwrap_or_default());
        let method = method.unwrap_or_default();
        Routed::Rule(self.rules.iter().find(|r| {
            (r.hosts.is_empty() || r.hosts.iter().any(|h| h.matches(host)))
                && (r.methods.is_empty() || r.methods.iter().any(|m| m.as_bytes() == method))
                && match &r.path {
                    None => true,
                    Some(PathPat::Exact(e)) => path == e.as_bytes(),
                    Some(PathPat::Prefix(p)) => path.starts_with(p.as_bytes()),
                    Some(PathPat::Regex(re)) => {
                        std::str::from_utf8(path).is_ok_and(|p| re.is_match(p))
                    }
                }
        }))
    }

    /// The one token `p` reads, if any. Two different ones: ambiguous.
    fn token_for<'r>(
        &self,
        p: &Provider,
        rq: &'r Request<'_>,
    ) -> Result<Option<(&'r [u8], usize)>, Invalid> {
        // Bytes, not text: UTF-8 is checked by the parser, on a cache miss
        // (a cached token is valid text already).
        let mut found: Option<(&'r [u8], usize)> = None;
        let mut note = |t: &'r [u8], src: usize| -> Result<(), Invalid> {
            let t = t.trim_ascii();
            if t.is_empty() {
                return Ok(());
            }
            match found {
                Some((prev, _)) if prev != t => Err(Invalid::Ambiguous),
                Some(_) => Ok(()),
                None => {
                    found = Some((t, src));
                    Ok(())
                }
            }
        };
        for (si, s) in p.sources.iter().enumerate() {
            match s {
                TokenSource::Bearer => {
                    for (k, v) in rq.pairs() {
                        if !k.eq_ignore_ascii_case(b"authorization") {
                            continue;
                        }
                        // Envoy joins repeated `authorization` headers with
                        // `,` (JWTs never contain one): each part counts.
                        // The common case has none: one word-wise search.
                        let mut parts = v.split(|b| *b == b',');
                        let single = [v];
                        let parts: &mut dyn Iterator<Item = &[u8]> = if has_byte(v, b',') {
                            &mut parts
                        } else {
                            &mut single.into_iter()
                        };
                        for part in parts {
                            let part = part.trim_ascii_start();
                            if part.len() > 7
                                && part
                                    .get(..7)
                                    .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
                            {
                                note(part.get(7..).unwrap_or_default(), si)?;
                            }
                        }
                    }
                }
                TokenSource::Header { name, prefix } => {
                    for (k, v) in rq.pairs() {
                        if !k.eq_ignore_ascii_case(name.as_bytes()) {
                            continue;
                        }
                        let v = match prefix {
                            None => Some(v),
                            Some(pre) => v
                                .get(..pre.len())
                                .filter(|h| h.eq_ignore_ascii_case(pre.as_bytes()))
                                .and_then(|_| v.get(pre.len()..)),
                        };
                        if let Some(v) = v {
                            note(v, si)?;
                        }
                    }
                }
                TokenSource::Query(q) => {
                    let path = rq.header(":path").unwrap_or_default();
                    if let Some(i) = path.iter().position(|b| *b == b'?') {
                        for pair in path.get(i + 1..).unwrap_or_default().split(|b| *b == b'&') {
                            let mut kv = pair.splitn(2, |b| *b == b'=');
                            if kv.next() == Some(q.as_bytes()) {
                                note(kv.next().unwrap_or_default(), si)?;
                            }
                        }
                    }
                }
                TokenSource::Cookie(c) => {
                    for (k, v) in rq.pairs() {
                        if !k.eq_ignore_ascii_case(b"cookie") {
                            continue;
                        }
                        for pair in v.split(|b| *b == b';') {
                            let mut kv = pair.splitn(2, |b| *b == b'=');
                            if kv.next().map(<[u8]>::trim_ascii) == Some(c.as_bytes()) {
                                note(kv.next().unwrap_or_default().trim_ascii(), si)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    fn tagger(&self, host: &mut dyn Host) -> Option<Tagger> {
        if let Some(t) = self.vm.try_borrow().ok().and_then(|vm| vm.tagger.clone()) {
            return Some(t);
        }
        let key = match host.shared_get(&self.hash_key_name()) {
            Some((v, _)) if v.len() == 16 => v,
            _ => {
                let mut k = [0u8; 16];
                if !host.random(&mut k) {
                    return None;
                }
                // Only if still absent: the first worker's key wins and
                // every other reads it (see `adopt_shared_hash_key`).
                let _ = host.shared_set(&self.hash_key_name(), &k, CREATE_ONLY);
                host.shared_get(&self.hash_key_name())
                    .map(|(v, _)| v)
                    .filter(|v| v.len() == 16)?
            }
        };
        let key: [u8; 16] = key.as_slice().try_into().ok()?;
        let t = Tagger::new(key, self.config_fp, self.cache_slots);
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.tagger = Some(t.clone());
            // The table's seed: derived one-way from the secret hash key.
            let seed = t.tag(b"meshguard.authn.l1-seed").bytes;
            let seed = <[u8; 8]>::try_from(seed.get(..8).unwrap_or_default())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            vm.l1 = Some(cache::L1::new(seed));
        }
        Some(t)
    }

    /// The cache key is written only if absent (`CREATE_ONLY`), so workers
    /// starting together agree on the first one. Should a worker still hold
    /// another (the CAS trick's 2^-32 case, or a host that replaces on any
    /// write), it would tag differently from the rest and all its lookups
    /// would miss: the timer brings it to the shared key.
    fn adopt_shared_hash_key(&self, host: &mut dyn Host) {
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            return;
        };
        let Some(mine) = vm.tagger.as_ref().map(|t| t.key) else {
            return;
        };
        if let Some((shared, _)) = host.shared_get(&self.hash_key_name()) {
            if shared.len() == 16 && shared != mine {
                // Made again from the shared key on the next request.
                vm.tagger = None;
                vm.l1 = None;
            }
        }
    }

    /// Reads the plugin's name once (`plugin_name`, in whichever context
    /// runs first: Envoy answers it in both) for [`Self::scope`].
    fn ensure_scope(&self, host: &dyn Host) {
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            return;
        };
        if vm.scope.is_none() {
            let name = host.property(&["plugin_name"]);
            if name.as_deref().is_none_or(<[u8]>::is_empty) {
                log::warn!(
                    "authn: the proxy does not tell the plugin's name; shared data is not \
                     separated from other authn plugins with the same vm_id"
                );
            }
            vm.scope = Some(meshguard_common::contract::plugin_scope(name.as_deref()).into());
        }
    }

    /// This plugin's scope for shared-data keys (empty before
    /// [`Self::ensure_scope`], which every entry point runs first).
    fn scope(&self) -> Rc<str> {
        self.vm
            .try_borrow()
            .ok()
            .and_then(|vm| vm.scope.clone())
            .unwrap_or_else(|| Rc::from(""))
    }

    /// `name` (a provider) within this plugin's shared-data keys.
    fn sid(&self, name: &str) -> String {
        format!("{}{name}", self.scope())
    }

    fn hash_key_name(&self) -> String {
        format!("meshguard.authn.{}{HASH_KEY}", self.scope())
    }

    /// Re-reads a provider's shared key set if it changed.
    fn sync(&self, p: usize, host: &mut dyn Host) {
        let Some(pr) = self.providers.get(p) else {
            return;
        };
        if matches!(pr.keys_from, KeySource::Inline) {
            return;
        }
        let Some((cas, fetched, _, doc)) = jwks::load(host, &self.sid(&pr.name)) else {
            return;
        };
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            return;
        };
        let Some(local) = vm.local.get_mut(p) else {
            return;
        };
        if local.cas == cas {
            return;
        }
        match keys::parse_fetched(&doc, &pr.algs) {
            Ok((set, _)) => {
                local.keys = Rc::new(set);
                local.cas = cas;
                local.fetched_at_ms = fetched;
                local.quiet_until_ms = 0;
            }
            Err(e) => log::warn!("authn: shared JWKS of `{}` unusable: {e}", pr.name),
        }
    }

    fn keys(&self, p: usize) -> Rc<KeySet> {
        self.vm
            .try_borrow()
            .ok()
            .and_then(|vm| vm.local.get(p).map(|l| Rc::clone(&l.keys)))
            .unwrap_or_default()
    }

    fn first_call(&self, p: usize, host: &dyn Host) -> Option<Call> {
        let pr = self.providers.get(p)?;
        match &pr.keys_from {
            KeySource::Inline => None,
            KeySource::Remote {
                cluster,
                authority,
                path,
                timeout,
            } => Some(Call {
                kind: FetchKind::Jwks,
                cluster: cluster.clone(),
                authority: authority.clone(),
                path: path.clone(),
                timeout: *timeout,
            }),
            KeySource::Oidc {
                cluster,
                authority,
                path,
                timeout,
            } => Some(match jwks::discovered(host, &self.sid(&pr.name)) {
                Some((a, jp)) => Call {
                    kind: FetchKind::Jwks,
                    cluster: cluster.clone(),
                    authority: a,
                    path: jp,
                    timeout: *timeout,
                },
                None => Call {
                    kind: FetchKind::Discovery,
                    cluster: cluster.clone(),
                    authority: authority.clone(),
                    path: path.clone(),
                    timeout: *timeout,
                },
            }),
        }
    }

    /// After discovery answered: the JWKS fetch, if discovery worked.
    fn follow_up(&self, p: usize, kind: FetchKind, host: &dyn Host) -> Option<Call> {
        if kind != FetchKind::Discovery {
            return None;
        }
        let pr = self.providers.get(p)?;
        jwks::discovered(host, &self.sid(&pr.name))?;
        self.first_call(p, host)
    }

    /// Handles a key-server answer: publish good keys, keep old ones
    /// otherwise; releases the lock unless a follow-up call comes.
    fn fetch_answered(
        &self,
        p: usize,
        kind: FetchKind,
        reply: Reply<'_>,
        host: &mut dyn Host,
        bump: &mut dyn FnMut(MetricId, i64),
    ) {
        let Some(pr) = self.providers.get(p) else {
            return;
        };
        let body = match reply {
            Reply::Response {
                status: 200, body, ..
            } => Ok(body),
            Reply::Response { status, .. } => Err(format!("status {status}")),
            Reply::Failed | Reply::Grpc { .. } => Err("no answer".to_string()),
        };
        let result = body.and_then(|b| match kind {
            FetchKind::Discovery => keys::discovery_jwks_uri(b).map(|(a, path)| {
                jwks::store_discovered(host, &self.sid(&pr.name), &a, &path);
                None
            }),
            FetchKind::Jwks => keys::parse_fetched(b, &pr.algs).map(|(set, skipped)| {
                let now = now_ms(host);
                let prev = jwks::store(host, &self.sid(&pr.name), now, set.len() as u32, b);
                bump(pr.m.keys_loaded, set.len() as i64 - i64::from(prev));
                if skipped.weak > 0 {
                    bump(pr.m.keys_skipped_weak, i64::from(skipped.weak));
                }
                Some(set.len())
            }),
        });
        match result {
            Ok(None) => return, // discovery done; the JWKS fetch follows
            Ok(Some(n)) => {
                bump(pr.m.fetch_ok, 1);
                log::info!("authn: loaded {n} key(s) for `{}`", pr.name);
            }
            Err(e) => {
                bump(pr.m.fetch_failed, 1);
                log::warn!(
                    "authn: key fetch for `{}` failed ({e}); keeping the last good keys",
                    pr.name
                );
            }
        }
        jwks::release(host, &self.sid(&pr.name));
        self.sync(p, host);
    }

    /// The keys for a token, fetching (and waiting) when allowed.
    fn key_check(
        &self,
        p: usize,
        jws: &jwt::Jws<'_>,
        st: &PerRequest,
        cx: &mut Cx<'_>,
    ) -> Result<Rc<KeySet>, Check> {
        let Some(pr) = self.providers.get(p) else {
            return Err(Check::Bad(Invalid::UnknownKey));
        };
        let mut keys = self.keys(p);
        let inline = matches!(pr.keys_from, KeySource::Inline);
        let known = |k: &KeySet| match jws.kid.as_deref() {
            Some(kid) => k.has_kid(kid),
            None => !k.is_empty(),
        };
        if !inline && !known(&keys) {
            let now = now_ms(cx.host());
            let quiet = !keys.is_empty()
                && self
                    .vm
                    .try_borrow()
                    .ok()
                    .and_then(|vm| vm.local.get(p).map(|l| now < l.quiet_until_ms))
                    .unwrap_or(false);
            if quiet {
                return Err(Check::Bad(Invalid::UnknownKey));
            }
            self.sync(p, cx.host());
            keys = self.keys(p);
        }
        if known(&keys) {
            // A key for this `alg` too (an RS256 token naming the EC key,
            // or no kid when several keys fit, goes no further: no cache
            // lookup, no signature).
            let selected = keys.select(jws.kid.as_deref(), jws.alg).map(|_| ());
            return match selected {
                Ok(()) => Ok(keys),
                Err(e) => Err(Check::Bad(e)),
            };
        }
        if inline {
            return Err(Check::Bad(Invalid::UnknownKey));
        }
        let why = if keys.is_empty() {
            Why::NoKeys
        } else {
            Why::UnknownKid
        };
        let now = now_ms(cx.host());
        if why == Why::UnknownKid {
            if let Ok(mut vm) = self.vm.try_borrow_mut() {
                if let Some(l) = vm.local.get_mut(p) {
                    l.quiet_until_ms = now.saturating_add(UNKNOWN_KID_QUIET_MS);
                }
            }
        }
        if !st.fetched
            && jwks::try_acquire(
                cx.host(),
                &self.sid(&pr.name),
                now,
                why,
                pr.min_refetch_ms,
                pr.timeout_ms(),
            )
        {
            if let Some(call) = self.first_call(p, cx.host()) {
                match cx.http_call(&call.callout()) {
                    Ok(t) => return Err(Check::Fetch(t, p, call.kind)),
                    Err(e) => {
                        log::warn!("authn: cannot fetch keys for `{}`: {e:?}", pr.name);
                        cx.count(pr.m.fetch_failed);
                    }
                }
            }
            jwks::release(cx.host(), &self.sid(&pr.name));
        }
        if keys.is_empty() {
            Err(Check::Unavailable(p))
        } else {
            Err(Check::Bad(Invalid::UnknownKey))
        }
    }

    /// Checks `token` for provider `p`: cache, then parse, key, signature,
    /// claims; stores a success in the cache.
    fn check(&self, p: usize, token: &[u8], st: &PerRequest, cx: &mut Cx<'_>) -> Check {
        let Some(pr) = self.providers.get(p) else {
            return Check::Bad(Invalid::UnknownKey);
        };
        if token.len() > pr.max_token {
            return Check::Bad(Invalid::TooLong);
        }
        let now = now_secs(cx.host());
        let tagger = if self.cache_slots > 0 {
            self.tagger(cx.host())
        } else {
            None
        };
        if tagger.is_some() {
            let local = self
                .vm
                .try_borrow()
                .ok()
                .and_then(|vm| vm.l1.as_ref()?.get(token).cloned());
            if let Some(v) = local {
                if usize::from(v.provider) == p && v.live(now, pr.skew) {
                    self.batch_hit();
                    return Check::Ok(v);
                }
            }
        }
        // Garbage is refused before the shared cache is looked at (no
        // SipHash, no host call): bad shape, disallowed `alg`, unknown
        // `kid`. A token the cache knows always passes these.
        let Ok(text) = std::str::from_utf8(token) else {
            return Check::Bad(Invalid::Malformed);
        };
        let jws = match jwt::parse(text, pr.max_token, &pr.algs) {
            Ok(j) => j,
            Err(e) => return Check::Bad(e),
        };
        let keys = match self.key_check(p, &jws, st, cx) {
            Ok(k) => k,
            Err(c) => return c,
        };
        let tag = tagger.map(|t| t.tag(token));
        let mut evicts = false;
        if let Some(tag) = &tag {
            let slot = cache::slot_key(&self.scope(), tag.slot);
            if let Some((v, _)) = cx.host().shared_get(&slot) {
                match cache::lookup(&v, tag, now, pr.skew) {
                    Lookup::Hit(v) if usize::from(v.provider) == p => {
                        self.batch_hit();
                        let v = Rc::new(v);
                        self.remember(token, &v);
                        return Check::Ok(v);
                    }
                    Lookup::Hit(_) | Lookup::Free => {}
                    Lookup::Taken => evicts = true,
                }
            }
            cx.count(self.m.cache_miss);
        }
        let verified = keys.select(jws.kid.as_deref(), jws.alg).and_then(|k| {
            if k.key.verify(jws.alg, jws.signing_input, &jws.signature()?) {
                Ok(())
            } else {
                Err(Invalid::Signature)
            }
        });
        if let Err(e) = verified {
            return Check::Bad(e);
        }
        let claims = match jwt::payload(&jws) {
            Ok(c) => c,
            Err(e) => return Check::Bad(e),
        };
        let rules = TimeRules {
            now,
            skew: pr.skew,
            require_exp: pr.require_exp,
            issuer: pr.issuer.as_deref(),
            audiences: &pr.audiences,
        };
        let (exp, nbf) = match rules.check(&claims) {
            Ok(t) => t,
            Err(e) => return Check::Bad(e),
        };
        let subject = self
            .claim_paths
            .get(pr.identity_claim)
            .and_then(|path| jwt::claim(&claims, path))
            .map(|c| Rc::from(jwt::claim_text(c)));
        // The subject becomes a header value shared as is (no per-request
        // copy to check): a validly signed CR/LF/NUL in it is refused here.
        if subject
            .as_deref()
            .is_some_and(|s: &str| !meshguard_stage::message::valid_value(s.as_bytes()))
        {
            return Check::Bad(Invalid::Malformed);
        }
        let v = Verified {
            provider: p as u16,
            exp,
            nbf,
            subject,
            claims: self
                .claim_paths
                .iter()
                .map(|path| {
                    jwt::claim(&claims, path).map(|c| ClaimVal {
                        text: jwt::claim_text(c),
                        items: jwt::claim_items(c),
                    })
                })
                .collect(),
            payload_b64: pr
                .payload_header
                .as_ref()
                .map(|_| jws.payload_b64.to_string()),
        };
        let v = Rc::new(v);
        if let Some(tag) = &tag {
            let value = cache::entry(tag, &v);
            if cx
                .host()
                .shared_set(&cache::slot_key(&self.scope(), tag.slot), &value, 0)
                == SharedWrite::Written
                && evicts
            {
                cx.count(self.m.cache_evicted);
            }
            self.remember(token, &v);
        }
        Check::Ok(v)
    }

    /// Keeps a verified token in this worker's local cache.
    fn remember(&self, token: &[u8], v: &Rc<Verified>) {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            if let Some(l1) = vm.l1.as_mut() {
                l1.put(token, v);
            }
        }
    }

    fn decide(&self, rq: &mut Request<'_>, st: &mut PerRequest, cx: &mut Cx<'_>) -> Step {
        let routed = self.rule_for(rq);
        // Only HMAC rules read the body: nothing else buffers or holds it.
        if !matches!(&routed, Routed::Rule(Some(r)) if matches!(r.kind, Kind::Hmac(_))) {
            cx.skip_body();
        }
        let rule = match routed {
            Routed::BadPath => {
                cx.count(self.m.denied_path);
                return self.deny(
                    400,
                    None,
                    "invalid_request",
                    "the request path is not in normal form",
                );
            }
            Routed::Preflight => {
                cx.count(self.m.cors);
                return Step::Continue;
            }
            Routed::Rule(Some(rule)) => rule,
            Routed::Rule(None) => {
                cx.count(self.m.denied_no_rule);
                return self.deny(403, None, "forbidden", "");
            }
        };
        match rule.kind {
            Kind::Public => {
                cx.count(self.m.public);
                return Step::Continue;
            }
            Kind::ExtAuth(i) => return self.ext_check(i, rq, st, cx),
            Kind::Hmac(i) => return self.hmac_check(i, rq, st, cx),
            _ => {}
        }
        let mut ok: Vec<(usize, Rc<Verified>, usize)> = Vec::new();
        let mut first_bad: Option<Invalid> = None;
        let mut missing = false;
        let mut unavailable: Option<usize> = None;
        for &p in &rule.providers {
            let Some(pr) = self.providers.get(p) else {
                continue;
            };
            let found = match self.token_for(pr, rq) {
                Ok(f) => f,
                Err(e) => {
                    first_bad.get_or_insert(e);
                    if rule.kind == Kind::All {
                        break;
                    }
                    continue;
                }
            };
            let check = match found {
                None => Check::Absent,
                Some((token, _)) => self.check(p, token, st, cx),
            };
            match check {
                Check::Ok(v) => {
                    let src = found.map(|(_, s)| s).unwrap_or(0);
                    ok.push((p, v, src));
                    if rule.kind != Kind::All {
                        break;
                    }
                }
                Check::Absent => missing = true,
                Check::Bad(e) => {
                    first_bad.get_or_insert(e);
                }
                Check::Fetch(t, p, kind) => {
                    st.waiting = Some((p, kind));
                    return Step::Wait(t);
                }
                Check::Unavailable(p) => {
                    unavailable.get_or_insert(p);
                }
            }
            if rule.kind == Kind::All && (missing || first_bad.is_some() || unavailable.is_some()) {
                break;
            }
        }
        let satisfied = match rule.kind {
            Kind::All => ok.len() == rule.providers.len(),
            _ => !ok.is_empty(),
        };
        if !satisfied {
            if let Some(e) = first_bad {
                return self.invalid(e, cx);
            }
            if let Some(p) = unavailable {
                if let Some(pr) = self.providers.get(p).filter(|pr| pr.fail_open) {
                    cx.count(pr.m.fail_open);
                    log::warn!("authn: no keys for `{}` yet; failing open", pr.name);
                    return Step::Continue;
                }
                cx.count(self.m.unavailable);
                let mut s = self.deny(503, None, "temporarily_unavailable", "");
                if let Step::Respond(r) = &mut s {
                    r.headers.push(("retry-after".into(), "1".into()));
                }
                return s;
            }
            if rule.kind == Kind::Optional && missing {
                cx.count(self.m.public);
                return Step::Continue;
            }
            cx.count(self.m.denied_missing);
            return self.deny(
                401,
                Some(self.challenge(None, None)),
                "unauthorized",
                "a bearer token is required",
            );
        }
        // Required claims: each must be in one of the verified tokens.
        for (ci, want) in &rule.claims {
            let has = ok.iter().any(|(_, v, _)| {
                v.claims
                    .get(*ci)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| c.items.iter().any(|i| i == want))
            });
            if !has {
                cx.count(self.m.denied_claims);
                let d = "the token lacks a required claim";
                return self.deny(
                    403,
                    Some(self.challenge(Some(("insufficient_scope", d)), rule.scope.as_deref())),
                    "insufficient_scope",
                    d,
                );
            }
        }
        for (p, v, src) in &ok {
            let Some(pr) = self.providers.get(*p) else {
                continue;
            };
            if let Some(s) = &v.subject {
                rq.set(Rc::clone(&pr.identity_header), Rc::clone(s));
            }
            for (ci, h) in &pr.claim_headers {
                if let Some(Some(c)) = v.claims.get(*ci) {
                    rq.set(Rc::clone(h), c.text.clone());
                }
            }
            if let (Some(h), Some(b)) = (&pr.payload_header, &v.payload_b64) {
                rq.set(Rc::clone(h), b.clone());
            }
            if !pr.forward && !rule.forward {
                self.strip_token(rq, pr.sources.get(*src));
            }
        }
        // The identity as a typed fact for later stages in this module, and
        // in filter state for other modules (a separate accesslog filter or
        // access logger): `meshguard_common::contract::IDENTITY_STATE`.
        if let Some((p, v, _)) = ok.first() {
            if let Some(s) = &v.subject {
                let facts = Facts {
                    identity: Some(Identity {
                        subject: Rc::clone(s),
                        issuer: self.providers.get(*p).and_then(|pr| pr.issuer.clone()),
                    }),
                    ..Facts::default()
                };
                if self.publish_state && !facts.publish_identity(cx.host()) {
                    log::debug!("authn: the proxy refused the identity filter state");
                }
                if cx.facts_wanted() {
                    cx.facts.identity = facts.identity;
                }
            }
        }
        match self.vm.try_borrow_mut() {
            Ok(mut vm) => vm.batched_allowed += 1,
            Err(_) => cx.count(self.m.allowed),
        }
        Step::Continue
    }

    fn batch_hit(&self) {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.batched_hits += 1;
        }
    }

    fn strip_token(&self, rq: &mut Request<'_>, source: Option<&TokenSource>) {
        match source {
            Some(TokenSource::Bearer) => rq.remove("authorization"),
            Some(TokenSource::Header { name, .. }) => rq.remove(name.to_ascii_lowercase()),
            Some(TokenSource::Query(q)) => {
                let path = rq.header(":path").unwrap_or_default().to_vec();
                if let Some(i) = path.iter().position(|b| *b == b'?') {
                    let (base, query) = (
                        path.get(..i).unwrap_or_default(),
                        path.get(i + 1..).unwrap_or_default(),
                    );
                    let kept: Vec<&[u8]> = query
                        .split(|b| *b == b'&')
                        .filter(|pair| pair.splitn(2, |b| *b == b'=').next() != Some(q.as_bytes()))
                        .collect();
                    let mut out = base.to_vec();
                    if !kept.is_empty() {
                        out.push(b'?');
                        out.extend_from_slice(&kept.join(&b'&'));
                    }
                    if let Ok(s) = String::from_utf8(out) {
                        rq.set(":path", s);
                    }
                }
            }
            Some(TokenSource::Cookie(c)) => {
                let mut kept: Vec<String> = Vec::new();
                for (k, v) in rq.pairs() {
                    if !k.eq_ignore_ascii_case(b"cookie") {
                        continue;
                    }
                    for pair in v.split(|b| *b == b';') {
                        let name = pair
                            .splitn(2, |b| *b == b'=')
                            .next()
                            .map(<[u8]>::trim_ascii);
                        if name != Some(c.as_bytes()) && !pair.trim_ascii().is_empty() {
                            kept.push(String::from_utf8_lossy(pair.trim_ascii()).into_owned());
                        }
                    }
                }
                if kept.is_empty() {
                    rq.remove("cookie");
                } else {
                    rq.set("cookie", kept.join("; "));
                }
            }
            None => {}
        }
    }

    /// Empties expired cache slots, a few per tick.
    fn sweep(&self, host: &mut dyn Host, bumps: &mut Option<Vec<(MetricId, i64)>>) {
        if self.cache_slots == 0 {
            return;
        }
        let now = now_secs(host);
        let scope = self.scope();
        let start = self.vm.try_borrow().map(|vm| vm.sweep_next).unwrap_or(0);
        let n = SWEEP_PER_TICK.min(self.cache_slots);
        let mut removed = 0;
        for i in 0..n {
            let slot = (start + i) % self.cache_slots;
            let key = cache::slot_key(&scope, slot);
            if let Some((v, cas)) = host.shared_get(&key) {
                if !v.is_empty()
                    && cache::expired(&v, now, 300)
                    && host.shared_set(&key, &[], cas) == SharedWrite::Written
                {
                    removed += 1;
                }
            }
        }
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.sweep_next = (start + n) % self.cache_slots;
        }
        if removed > 0 {
            next_bump(bumps, self.m.cache_expired_removed, removed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::has_byte;

    #[test]
    fn has_byte_matches_contains() {
        for len in 0..40 {
            for at in 0..=len {
                let mut v = vec![b'a'; len];
                if at < len {
                    v[at] = b',';
                }
                assert_eq!(has_byte(&v, b','), v.contains(&b','), "len {len} at {at}");
            }
        }
        // Every other byte value, high bytes included, never matches.
        let others: Vec<u8> = (0..=255u8).filter(|b| *b != b',').collect();
        assert!(!has_byte(&others, b','));
        assert!(has_byte(b"\xff\xff\xff\xff\xff\xff\xff,", b','));
        assert!(has_byte(b"\x2d\x2b\xac,\xff\xff\xff\xff", b','));
    }
}
