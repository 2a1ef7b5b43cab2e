//! The per-request decision: which variant each experiment assigns, which
//! client headers to strip, and whether to set a visitor cookie. Pure: the
//! proxy-wasm shell hands in the request headers and a random source, and
//! applies the returned [`Decision`].

use std::rc::Rc;

use sha2::{Digest, Sha256};

use meshguard_common::config::ConfigError;
use meshguard_common::contract::{AB_FORCE_HEADER, AB_FORCE_SECRET_HEADER};
use meshguard_common::hash;
use meshguard_common::headers::{self, HeaderSource};

use crate::assign::VariantTable;
use crate::config::{AbRoutingConfig, KeySource, MatchConfig};

/// Compiled, validated configuration: built once in `on_configure`.
#[derive(Debug, Clone)]
pub struct Router {
    experiments: Vec<Experiment>,
    visitor_cookie: String,
    /// `; Max-Age=...; Path=/; HttpOnly; SameSite=Lax[; Secure]`
    visitor_cookie_attributes: String,
    qa: Option<QaOverride>,
    /// Every header this filter owns; any client-sent copy is stripped.
    owned_headers: Vec<Rc<str>>,
    /// The variant headers it sets (outputs).
    variant_headers: Vec<Rc<str>>,
    /// The QA override headers it reads and strips (private inputs).
    override_headers: Vec<Rc<str>>,
    has_matchers: bool,
    /// Every header the decision reads, looked up in one pass per request
    /// (`HeaderSource::first_many`); the `*_at` fields index into it.
    lookup: Vec<Rc<str>>,
    /// Index in `lookup` of each owned header (same order as `owned_headers`).
    owned_at: Vec<usize>,
    authority_at: usize,
    path_at: usize,
}

/// Requests' header lookups fit on the stack up to this many names.
const LOOKUP_INLINE: usize = 16;

/// Index of `name` in `lookup`, adding it if new.
fn lookup_slot(lookup: &mut Vec<Rc<str>>, name: &str) -> usize {
    match lookup.iter().position(|n| n.as_ref() == name) {
        Some(i) => i,
        None => {
            lookup.push(name.into());
            lookup.len() - 1
        }
    }
}

#[derive(Debug, Clone)]
struct Experiment {
    name: Rc<str>,
    header: Rc<str>,
    variants: Vec<Rc<str>>,
    table: VariantTable,
    sticky_key: Vec<Source>,
    matcher: Option<Matcher>,
}

#[derive(Debug, Clone)]
enum Source {
    /// Index of the header in `Router::lookup`.
    Header(usize),
    Cookie(String),
    Visitor,
}

#[derive(Debug, Clone)]
struct Matcher {
    hosts: Vec<headers::HostPattern>,
    path_prefixes: Vec<String>,
}

#[derive(Debug, Clone)]
struct QaOverride {
    header_at: usize,
    secret_at: usize,
    secret_sha256: [u8; 32],
}

/// How a variant was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Hashed from a key the request carried.
    Sticky,
    /// Hashed from a visitor id generated for this request (cookie set).
    NewVisitor,
    /// QA override with a valid secret.
    Forced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub experiment: usize,
    pub variant: usize,
    pub how: How,
}

/// One header the filter sets on the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetHeader<'r> {
    pub name: &'r str,
    pub value: &'r str,
    /// The client sent this header: replace it (Envoy's replace drops every
    /// old value and appends the new one), else add it.
    pub replace: bool,
}

/// What the shell must do to the request and response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision<'r> {
    /// Owned headers the client sent that the filter does not set: remove
    /// them (all values).
    pub remove: Vec<&'r str>,
    /// Headers to set.
    pub set: Vec<SetHeader<'r>>,
    /// A `Set-Cookie` value for the response (new visitor id).
    pub set_cookie: Option<String>,
    pub assignments: Vec<Assignment>,
    /// Matching experiments that found no key (no header set).
    pub unassigned: Vec<usize>,
    /// An override header came without a valid secret and was ignored.
    pub override_rejected: bool,
}

impl Decision<'_> {
    /// Applies the request-header part to a plain header list, the way the
    /// proxy-wasm shell applies it to Envoy's map. Used by native tests.
    pub fn apply_to(&self, headers: &mut Vec<(String, String)>) {
        headers.retain(|(k, _)| !self.remove.iter().any(|r| k.eq_ignore_ascii_case(r)));
        for h in &self.set {
            headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(h.name));
            headers.push((h.name.to_string(), h.value.to_string()));
        }
    }

    /// Value set for `header`, if any.
    pub fn value_of(&self, header: &str) -> Option<&str> {
        self.set.iter().find(|h| h.name == header).map(|h| h.value)
    }
}

/// Visitor ids the filter generates are 32 hex chars; accept a little more
/// variety from older deployments but nothing that could smuggle bytes.
fn valid_visitor_id(v: &[u8]) -> bool {
    (16..=64).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Lowercase hex of 16 random bytes.
pub fn visitor_id_from(bytes: [u8; 16]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(32);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Router {
    /// Parses, validates and compiles pluginConfig JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Ok(Self::new(&AbRoutingConfig::from_json(bytes)?))
    }

    /// Compiles an already validated config.
    pub fn new(config: &AbRoutingConfig) -> Self {
        let mut owned_headers = Vec::new();
        let mut lookup: Vec<Rc<str>> = Vec::new();
        let experiments: Vec<Experiment> = config
            .experiments
            .iter()
            .map(|e| {
                let header: Rc<str> = e.header.to_ascii_lowercase().into();
                owned_headers.push(Rc::clone(&header));
                let weights: Vec<u32> = e.variants.iter().map(|v| v.weight).collect();
                Experiment {
                    name: e.name.as_str().into(),
                    header,
                    variants: e.variants.iter().map(|v| v.name.as_str().into()).collect(),
                    table: VariantTable::new(&weights),
                    sticky_key: e
                        .sticky_key
                        .iter()
                        .map(|s| match s {
                            KeySource::Header(h) => {
                                Source::Header(lookup_slot(&mut lookup, &h.to_ascii_lowercase()))
                            }
                            KeySource::Cookie(c) => Source::Cookie(c.clone()),
                            KeySource::VisitorCookie => Source::Visitor,
                        })
                        .collect(),
                    matcher: e.match_.as_ref().map(Matcher::new),
                }
            })
            .collect();
        let qa = config.qa_override.as_ref().map(|q| QaOverride {
            header_at: lookup_slot(&mut lookup, &q.header.to_ascii_lowercase()),
            secret_at: lookup_slot(&mut lookup, &q.secret_header.to_ascii_lowercase()),
            secret_sha256: decode_hex32(&q.secret_sha256),
        });
        match &config.qa_override {
            Some(q) => {
                owned_headers.push(q.header.to_ascii_lowercase().into());
                owned_headers.push(q.secret_header.to_ascii_lowercase().into());
            }
            // Without overrides configured, the default override headers are
            // still never forwarded: an upstream must not see (or trust) them.
            None => {
                owned_headers.push(AB_FORCE_HEADER.into());
                owned_headers.push(AB_FORCE_SECRET_HEADER.into());
            }
        }
        let variant_headers: Vec<Rc<str>> = experiments
            .iter()
            .map(|e: &Experiment| Rc::clone(&e.header))
            .collect();
        let override_headers: Vec<Rc<str>> = owned_headers
            .iter()
            .filter(|h| !variant_headers.contains(h))
            .cloned()
            .collect();
        let vc = &config.visitor_cookie;
        let mut attrs = format!(
            "; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            vc.max_age_seconds
        );
        if vc.secure {
            attrs.push_str("; Secure");
        }
        let owned_at = owned_headers
            .iter()
            .map(|h| lookup_slot(&mut lookup, h))
            .collect();
        // Only experiments with a `match` need host and path.
        let has_matchers = config.experiments.iter().any(|e| e.match_.is_some());
        let (authority_at, path_at) = if has_matchers {
            (
                lookup_slot(&mut lookup, ":authority"),
                lookup_slot(&mut lookup, ":path"),
            )
        } else {
            (usize::MAX, usize::MAX)
        };
        Self {
            variant_headers,
            override_headers,
            lookup,
            owned_at,
            authority_at,
            path_at,
            has_matchers,
            experiments,
            visitor_cookie: vc.name.clone(),
            visitor_cookie_attributes: attrs,
            qa,
            owned_headers,
        }
    }

    /// Every request header this filter owns (variant and override headers).
    pub fn owned_headers(&self) -> impl Iterator<Item = &str> {
        self.owned_headers.iter().map(|h| h.as_ref())
    }

    /// The owned headers as shared strings (for edits without copies).
    pub fn owned_header_names(&self) -> &[Rc<str>] {
        &self.owned_headers
    }

    /// The variant headers the router sets.
    pub fn variant_header_names(&self) -> &[Rc<str>] {
        &self.variant_headers
    }

    /// The QA override headers it reads and strips.
    pub fn override_header_names(&self) -> &[Rc<str>] {
        &self.override_headers
    }

    /// (experiment, its variants) in declared order.
    pub fn experiment_names(&self) -> impl Iterator<Item = (&str, &[Rc<str>])> {
        self.experiments
            .iter()
            .map(|e| (e.name.as_ref(), e.variants.as_slice()))
    }

    /// Shared strings for an assignment: (experiment, header, variant).
    pub fn assignment_names(&self, a: &Assignment) -> Option<(&Rc<str>, &Rc<str>, &Rc<str>)> {
        let exp = self.experiments.get(a.experiment)?;
        Some((&exp.name, &exp.header, exp.variants.get(a.variant)?))
    }

    /// Decides for one request. `headers` are the request headers as the
    /// proxy passes them (including `:authority` and `:path`);
    /// `random_id` is called at most once, only when a new visitor id is
    /// needed, and may fail (then no visitor-based assignment happens).
    pub fn decide<'r, H: HeaderSource + ?Sized>(
        &'r self,
        headers: &H,
        random_id: impl FnOnce() -> Option<[u8; 16]>,
    ) -> Decision<'r> {
        let mut d = Decision::default();
        // Every header the decision needs, in one pass over the map.
        let mut inline = [None; LOOKUP_INLINE];
        let mut spilled = Vec::new();
        let found: &mut [Option<&[u8]>] = match inline.get_mut(..self.lookup.len()) {
            Some(slots) => slots,
            None => {
                spilled.resize(self.lookup.len(), None);
                &mut spilled
            }
        };
        headers.first_many(&self.lookup, found);
        let found: &[Option<&[u8]>] = found;
        let at = |i: usize| found.get(i).copied().flatten();
        let forced = self.forced_variants(at, &mut d);
        let (host, path) = if self.has_matchers {
            (
                at(self.authority_at).map(headers::host_without_port),
                at(self.path_at).map(headers::path_only),
            )
        } else {
            (None, None)
        };

        // The visitor id is resolved lazily and at most once per request.
        let mut visitor: Option<Option<String>> = None;
        let mut random_id = Some(random_id);

        for (ei, exp) in self.experiments.iter().enumerate() {
            if let Some(m) = &exp.matcher {
                if !m.matches(host, path) {
                    continue;
                }
            }
            if let Some(vi) = forced.and_then(|f| find_forced(f, exp)) {
                self.assign(&mut d, ei, exp, vi, How::Forced);
                continue;
            }
            let bucket_of = |key: &[u8]| hash::bucket(&exp.name, key);
            let found = exp.sticky_key.iter().find_map(|src| match src {
                Source::Header(i) => at(*i)
                    .filter(|v| !v.is_empty())
                    .map(|k| (bucket_of(k), How::Sticky)),
                Source::Cookie(c) => headers::cookie(headers, c)
                    .filter(|v| !v.is_empty())
                    .map(|k| (bucket_of(k), How::Sticky)),
                Source::Visitor => {
                    match headers::cookie(headers, &self.visitor_cookie)
                        .filter(|v| valid_visitor_id(v))
                    {
                        Some(k) => Some((bucket_of(k), How::Sticky)),
                        None => visitor
                            .get_or_insert_with(|| {
                                random_id.take().and_then(|f| f()).map(visitor_id_from)
                            })
                            .as_deref()
                            .map(|k| (bucket_of(k.as_bytes()), How::NewVisitor)),
                    }
                }
            });
            match found {
                Some((bucket, how)) => {
                    let vi = exp.table.pick(bucket);
                    self.assign(&mut d, ei, exp, vi, how);
                }
                None => d.unassigned.push(ei),
            }
        }

        // Owned headers the client sent: replaced where set, removed otherwise.
        for (owned, i) in self.owned_headers.iter().zip(&self.owned_at) {
            if at(*i).is_none() {
                continue;
            }
            match d.set.iter_mut().find(|s| s.name == owned.as_ref()) {
                Some(s) => s.replace = true,
                None => d.remove.push(owned.as_ref()),
            }
        }

        if let Some(Some(id)) = visitor {
            if d.assignments.iter().any(|a| a.how == How::NewVisitor) {
                d.set_cookie = Some(format!(
                    "{}={}{}",
                    self.visitor_cookie, id, self.visitor_cookie_attributes
                ));
            }
        }
        d
    }

    fn assign<'r>(
        &'r self,
        d: &mut Decision<'r>,
        ei: usize,
        exp: &'r Experiment,
        vi: usize,
        how: How,
    ) {
        if let Some(variant) = exp.variants.get(vi) {
            d.set.push(SetHeader {
                name: exp.header.as_ref(),
                value: variant.as_ref(),
                replace: false,
            });
            d.assignments.push(Assignment {
                experiment: ei,
                variant: vi,
                how,
            });
        }
    }

    /// The override value if the request carries both the override header
    /// and the right secret; records a rejection otherwise.
    fn forced_variants<'h>(
        &self,
        at: impl Fn(usize) -> Option<&'h [u8]>,
        d: &mut Decision<'_>,
    ) -> Option<&'h str> {
        let qa = self.qa.as_ref()?;
        let value = at(qa.header_at)?;
        let secret_ok = at(qa.secret_at).is_some_and(|secret| {
            let digest: [u8; 32] = Sha256::digest(secret).into();
            constant_time_eq(&digest, &qa.secret_sha256)
        });
        if !secret_ok {
            d.override_rejected = true;
            return None;
        }
        // Variant names are ASCII; a non-UTF-8 override names none of them.
        std::str::from_utf8(value).ok()
    }
}

/// `exp=variant` items win over bare `variant` items.
fn find_forced(value: &str, exp: &Experiment) -> Option<usize> {
    let items = || value.split(',').map(str::trim).filter(|s| !s.is_empty());
    let by_name = items().find_map(|item| {
        let (e, v) = item.split_once('=')?;
        (e.trim() == exp.name.as_ref()).then_some(v.trim())
    });
    let wanted = by_name.or_else(|| items().find(|item| !item.contains('=')))?;
    exp.variants.iter().position(|v| v.as_ref() == wanted)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Config validation guarantees 64 lowercase hex chars; anything else
/// decodes to zeros, which no SHA-256 output realistically matches.
fn decode_hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let nibble = |c: u8| -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => 0,
        }
    };
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        if let [hi, lo] = pair {
            *o = (nibble(*hi) << 4) | nibble(*lo);
        }
    }
    out
}

impl Matcher {
    fn new(m: &MatchConfig) -> Self {
        Self {
            hosts: m
                .hosts
                .iter()
                .map(|h| headers::HostPattern::new(h))
                .collect(),
            path_prefixes: m.path_prefixes.clone(),
        }
    }

    fn matches(&self, host: Option<&[u8]>, path: Option<&[u8]>) -> bool {
        let host_ok =
            self.hosts.is_empty() || host.is_some_and(|h| self.hosts.iter().any(|p| p.matches(h)));
        let path_ok = self.path_prefixes.is_empty()
            || path.is_some_and(|p| {
                self.path_prefixes
                    .iter()
                    .any(|pre| p.starts_with(pre.as_bytes()))
            });
        host_ok && path_ok
    }
}
