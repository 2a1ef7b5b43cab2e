//! pluginConfig for authn. These serde types are the schema: the filter
//! parses them in `on_configure` and the `meshguard` CLI validates policy
//! files with the same types. Unknown fields are errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use meshguard_authn_crypto::Alg;
use meshguard_common::config::{ConfigError, JsonPath};
use meshguard_common::contract::IDENTITY_HEADER;
use meshguard_common::headers::{validate_cookie_name, validate_header_name};

/// Top-level pluginConfig.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthnConfig {
    /// Token issuers, by name.
    pub providers: Vec<ProviderConfig>,
    /// Evaluated in order; the first rule whose `match` fits the request
    /// decides. A request no rule matches is denied (403): end the list with
    /// a rule without `match` to choose a default.
    pub rules: Vec<RuleConfig>,
    /// Let CORS preflights (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) through without a token.
    #[serde(default = "yes")]
    pub bypass_cors_preflight: bool,
    /// `realm` in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default)]
    pub cache: CacheConfig,
    /// Also write the verified identity (subject, issuer) to filter state
    /// `meshguard.identity` (`meshguard_common::contract`), where meshguard
    /// filters in other modules read it: the accesslog as its own filter
    /// or as an access logger. One `set_property` per allowed request,
    /// ~3 µs of Envoy CPU (BENCHMARKS.md), the most expensive step of a
    /// cache hit, so it is off unless asked for: `meshguard render` turns
    /// it on when the policy also deploys the accesslog, and the local
    /// chain (deploy/local/filters.yaml) sets it. The identity header is
    /// set either way.
    #[serde(default)]
    pub identity_filter_state: bool,
    /// External auth services (the Lua `httpCall` pattern), by name: rules
    /// name them with `{"ext_auth": "<name>"}`.
    #[serde(default)]
    pub ext_auth: Vec<ExtAuthConfig>,
    /// RFC 9421 HMAC request-signature verifiers, by name: rules name them
    /// with `{"hmac": "<name>"}`.
    #[serde(default)]
    pub hmac: Vec<HmacConfig>,
}

/// An external auth service: each request (or its cached decision) is
/// checked by an HTTP call to `cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthConfig {
    /// `[a-z0-9_-]{1,64}`: what rules name, and part of metric names.
    pub name: String,
    /// Envoy cluster of the auth service.
    pub cluster: String,
    /// `:authority` of the call. Default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// Prepended to the request's path (`/check` + `/orders?id=1`).
    /// Default: the path alone.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// 1..=30000. Past it the request gets 503 (or passes with `fail_open`).
    #[serde(default = "default_ext_timeout")]
    pub timeout_ms: u64,
    /// Request headers sent to the service; also the credentials the
    /// decision cache is keyed by. Default `authorization`, `cookie`.
    #[serde(default = "default_ext_request_headers")]
    pub request_headers: Vec<String>,
    /// Headers of an allowing answer copied into the request (client copies
    /// are always removed first). Default: the identity header `x-user-id`.
    #[serde(default = "default_ext_response_headers")]
    pub response_headers: Vec<String>,
    /// Which of `response_headers` carries the user's identity (the
    /// identity fact and filter state). Default `x-user-id` when listed.
    #[serde(default)]
    pub identity_header: Option<String>,
    /// Allow on any 2xx. Default: only 200 allows, as Envoy's `ext_authz`
    /// (a 204 is a denial there).
    #[serde(default)]
    pub allow_any_2xx: bool,
    /// Timeout, connection failure or 5xx: let the request through (without
    /// identity; metric `meshguard_authn_ext_fail_open.<name>` and a log
    /// line). Default: fail closed with 503.
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub cache: ExtAuthCacheConfig,
}

/// The decision cache: in shared data, so every worker shares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthCacheConfig {
    /// How long an allow is reused, seconds (0 disables; ..=3600).
    #[serde(default = "default_allow_ttl")]
    pub allow_seconds: u64,
    /// How long a 401/403 is reused, seconds (0 disables, the default;
    /// ..=300).
    #[serde(default)]
    pub deny_seconds: u64,
    /// Slots in shared data (1..=1000000); a new decision evicts the
    /// slot's previous one.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u32,
    /// Key decisions by method and path as well as by the credentials: for
    /// services whose answer depends on the path (authorization, not only
    /// authentication). Default: credentials only.
    #[serde(default)]
    pub per_path: bool,
}

impl Default for ExtAuthCacheConfig {
    fn default() -> Self {
        Self {
            allow_seconds: default_allow_ttl(),
            deny_seconds: 0,
            max_entries: default_cache_entries(),
            per_path: false,
        }
    }
}

/// RFC 9421 HTTP Message Signatures with `hmac-sha256`, and RFC 9530
/// `Content-Digest` checked against the buffered body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// `[a-z0-9_-]{1,64}`: what rules name, and part of metric names.
    pub name: String,
    /// The shared secrets, by `keyid`.
    pub keys: Vec<HmacKeyConfig>,
    /// Components every signature must cover. Default `@method`,
    /// `@authority`, `@path`, `@query`.
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Requests with a body must cover `content-digest`, and the body must
    /// match it (default true).
    #[serde(default = "yes")]
    pub require_content_digest: bool,
    /// `created` may be this far from now, either way, seconds (1..=3600).
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// Bodies over this are refused with 413 (1..=16777216).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Verify only the signature with this label (default: the first whose
    /// `keyid` is one of `keys`).
    #[serde(default)]
    pub label: Option<String>,
    /// Require a `nonce` and refuse one seen within the window.
    #[serde(default)]
    pub nonce: Option<NonceConfig>,
    /// Receives the key's `subject` (owned: client copies are removed).
    #[serde(default = "default_identity_header")]
    pub identity_header: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacKeyConfig {
    /// The signature's `keyid`.
    pub id: String,
    /// The key bytes, base64 (standard alphabet); at least 32 bytes. Never
    /// logged or echoed in errors (not even a wrong type's value).
    #[serde(deserialize_with = "secret_string")]
    pub secret: String,
    /// The identity of requests signed with this key. Default: `id`.
    #[serde(default)]
    pub subject: Option<String>,
}

/// A string, and for anything else an error that does not quote the value
/// (serde's own would: `invalid type: integer 1311768467294899695`).
fn secret_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl<'v> serde::de::Visitor<'v> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a base64 string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<String, E> {
            Err(E::custom("expected a base64 string, got a boolean"))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<String, E> {
            Err(E::custom(
                "expected a base64 string, got a number (quote the secret)",
            ))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<String, E> {
            Err(E::custom(
                "expected a base64 string, got a number (quote the secret)",
            ))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<String, E> {
            Err(E::custom(
                "expected a base64 string, got a number (quote the secret)",
            ))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
            Err(E::custom("expected a base64 string, got null"))
        }
        fn visit_seq<A: serde::de::SeqAccess<'v>>(self, _: A) -> Result<String, A::Error> {
            Err(serde::de::Error::custom(
                "expected a base64 string, got a list",
            ))
        }
        fn visit_map<A: serde::de::MapAccess<'v>>(self, _: A) -> Result<String, A::Error> {
            Err(serde::de::Error::custom(
                "expected a base64 string, got an object",
            ))
        }
    }
    d.deserialize_any(V)
}

impl std::fmt::Debug for HmacKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacKeyConfig")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("subject", &self.subject)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceConfig {
    /// Nonces remembered (1..=1000000 shared-data slots). A nonce is
    /// refused while its slot still holds it within the window.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `[a-z0-9_-]{1,64}`: what rules name, and part of metric names.
    pub name: String,
    /// Required `iss` value. Absent: `iss` is not checked.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` must contain one of these. Absent or empty: not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The algorithms this provider's tokens may use. `none` is never
    /// accepted; HS* only verify with `oct` keys, never with RSA/EC/OKP keys.
    pub algorithms: Vec<String>,
    pub jwks: JwksConfig,
    /// Where the token is looked for, in order. Default: `Authorization:
    /// Bearer`.
    #[serde(default = "default_sources")]
    pub sources: Vec<TokenSource>,
    /// Leeway for `exp`, `nbf` and `iat`, seconds (0..=300).
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// Tokens without `exp` are refused unless this is false.
    #[serde(default = "yes")]
    pub require_expiration: bool,
    /// Tokens longer than this are refused before any parsing (64..=65536).
    #[serde(default = "default_max_token")]
    pub max_token_bytes: usize,
    /// The verified subject goes here (owned: client copies are removed).
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Claims copied into request headers (owned headers).
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimToHeader>,
    /// Header that receives the verified payload, base64url (owned).
    #[serde(default)]
    pub payload_header: Option<String>,
    /// Keep the token in the request sent upstream (default: removed).
    #[serde(default)]
    pub forward: bool,
}

/// Where the keys come from: exactly one of `inline`, `remote`, `oidc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// A JWKS document (`{"keys": [...]}`), as an object or a JSON string.
    #[serde(default)]
    pub inline: Option<serde_json::Value>,
    /// A JWKS URL served through an Envoy cluster.
    #[serde(default)]
    pub remote: Option<RemoteJwks>,
    /// OIDC discovery: the issuer's `/.well-known/openid-configuration`
    /// names `jwks_uri`, fetched through the same cluster.
    #[serde(default)]
    pub oidc: Option<RemoteJwks>,
    /// Refresh period for fetched keys, seconds (10..=86400).
    #[serde(default = "default_ttl")]
    pub cache_seconds: u64,
    /// A token with an unknown `kid` triggers a refetch at most this often,
    /// seconds (1..=3600).
    #[serde(default = "default_min_refetch")]
    pub min_refetch_seconds: u64,
    /// Until the first fetch succeeds, requests that need this provider get
    /// 503; with `fail_open` they pass unauthenticated (no identity).
    #[serde(default)]
    pub fail_open: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    /// Envoy cluster that reaches the key server.
    pub cluster: String,
    /// `:authority` of the fetch. Default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// Path of the JWKS (remote) or of the discovery document (oidc;
    /// default `/.well-known/openid-configuration`).
    #[serde(default)]
    pub path: Option<String>,
    /// 1..=30000.
    #[serde(default = "default_fetch_timeout")]
    pub timeout_ms: u64,
}

/// One place a token can come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (scheme case-insensitive).
    Bearer,
    /// `{"header": {"name": "x-jwt", "prefix": "Token "}}`.
    Header {
        name: String,
        #[serde(default)]
        prefix: Option<String>,
    },
    /// `{"query": "access_token"}`.
    Query(String),
    /// `{"cookie": "session"}`.
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default = "default_identity_header")]
    pub header: String,
    /// Dotted claim path.
    #[serde(default = "default_identity_claim")]
    pub claim: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            header: default_identity_header(),
            claim: default_identity_claim(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Dotted path (`realm_access.roles`). Arrays are joined with commas,
    /// strings copied, other values written as JSON text.
    pub claim: String,
    pub header: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Absent: matches every request.
    #[serde(default, rename = "match")]
    pub match_: Option<MatchConfig>,
    pub requires: Requirement,
    /// Claims the token must carry, all of them (403 when one is missing).
    #[serde(default)]
    pub claims: Vec<ClaimRequirement>,
    /// Keep the token upstream on this rule even if the provider strips it.
    #[serde(default)]
    pub forward_token: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `:authority` without port, case-insensitive; `*.example.com` matches
    /// subdomains. Empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Upper-case methods. Empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    /// The path without query string equals this.
    Exact(String),
    /// The path without query string starts with this.
    Prefix(String),
    /// The whole path without query string matches (anchored).
    Regex(String),
}

/// What a matching request must present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Requirement {
    /// `"public"`: no token needed (owned headers are still stripped).
    Public,
    /// `{"any": ["a", "b"]}`: a valid token from one of these providers.
    Any(Vec<String>),
    /// `{"all": ["a", "b"]}`: a valid token from each.
    All(Vec<String>),
    /// `{"optional": ["a"]}`: verified when present (an invalid token is
    /// 401), no token passes without identity.
    Optional(Vec<String>),
    /// `{"ext_auth": "legacy"}`: the named external auth service decides.
    ExtAuth(String),
    /// `{"hmac": "partners"}`: a valid RFC 9421 signature by one of the
    /// named verifier's keys.
    Hmac(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequirement {
    /// Dotted claim path.
    pub claim: String,
    /// The claim contains this value: an array element, a word of a
    /// space-separated string (`scope`), or the string itself.
    pub contains: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Verified tokens remembered across workers (0 disables; ..=1000000).
    #[serde(default = "default_cache_entries")]
    pub max_entries: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_realm() -> String {
    "meshguard".into()
}
fn default_sources() -> Vec<TokenSource> {
    vec![TokenSource::Bearer]
}
fn default_skew() -> u64 {
    60
}
fn default_max_token() -> usize {
    8192
}
fn default_identity_header() -> String {
    IDENTITY_HEADER.into()
}
fn default_identity_claim() -> String {
    "sub".into()
}
fn default_ttl() -> u64 {
    600
}
fn default_min_refetch() -> u64 {
    30
}
fn default_fetch_timeout() -> u64 {
    2000
}
fn default_cache_entries() -> u32 {
    10_000
}
fn default_ext_timeout() -> u64 {
    200
}
fn default_ext_request_headers() -> Vec<String> {
    vec!["authorization".into(), "cookie".into()]
}
fn default_ext_response_headers() -> Vec<String> {
    vec![IDENTITY_HEADER.into()]
}
fn default_allow_ttl() -> u64 {
    30
}
fn default_components() -> Vec<String> {
    ["@method", "@authority", "@path", "@query"]
        .map(String::from)
        .to_vec()
}
fn default_window() -> u64 {
    300
}
fn default_max_body() -> usize {
    1 << 20
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_claim_path(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.split('.').all(|seg| !seg.is_empty())
}

fn check_header(at: &JsonPath, name: &str) -> Result<String, ConfigError> {
    validate_header_name(name).map_err(|e| at.err(e))
}

impl AuthnConfig {
    /// Semantic checks serde cannot express, each reported at its path.
    /// Returns the parsed algorithm lists, one per provider.
    pub fn validate_at(&self, at: &JsonPath) -> Result<Vec<Vec<Alg>>, ConfigError> {
        if self.providers.is_empty()
            && self.rules.iter().any(|r| {
                matches!(
                    r.requires,
                    Requirement::Any(_) | Requirement::All(_) | Requirement::Optional(_)
                )
            })
        {
            return Err(at.field("providers").err("expected at least one provider"));
        }
        if self.realm.is_empty()
            || self.realm.len() > 128
            || self
                .realm
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
        {
            return Err(at
                .field("realm")
                .err("expected 1 to 128 printable ASCII characters without `\"` or `\\`"));
        }
        if self.cache.max_entries > 1_000_000 {
            return Err(at
                .field("cache")
                .field("max_entries")
                .err("expected at most 1000000"));
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut algs = Vec::new();
        let mut outputs: BTreeMap<String, String> = BTreeMap::new();
        for (i, p) in self.providers.iter().enumerate() {
            let pat = at.field("providers").index(i);
            if !valid_name(&p.name) {
                return Err(pat.field("name").err(format!(
                    "`{}` is not a valid provider name: expected [a-z0-9_-], 1 to 64 characters",
                    p.name
                )));
            }
            if names.insert(&p.name, i).is_some() {
                return Err(pat
                    .field("name")
                    .err(format!("provider `{}` is defined twice", p.name)));
            }
            algs.push(p.validate_at(&pat, &mut outputs)?);
        }
        if self.rules.is_empty() {
            return Err(at
                .field("rules")
                .err("expected at least one rule (use {\"requires\": \"public\"} to let everything through)"));
        }
        let mut ext_names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, x) in self.ext_auth.iter().enumerate() {
            let xat = at.field("ext_auth").index(i);
            if !valid_name(&x.name) {
                return Err(xat.field("name").err(format!(
                    "`{}` is not a valid name: expected [a-z0-9_-], 1 to 64 characters",
                    x.name
                )));
            }
            if names.contains_key(x.name.as_str()) || ext_names.insert(&x.name, i).is_some() {
                return Err(xat
                    .field("name")
                    .err(format!("`{}` is defined twice", x.name)));
            }
            x.validate_at(&xat)?;
        }
        let mut hmac_names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, h) in self.hmac.iter().enumerate() {
            let hat = at.field("hmac").index(i);
            if !valid_name(&h.name) {
                return Err(hat.field("name").err(format!(
                    "`{}` is not a valid name: expected [a-z0-9_-], 1 to 64 characters",
                    h.name
                )));
            }
            if names.contains_key(h.name.as_str())
                || ext_names.contains_key(h.name.as_str())
                || hmac_names.insert(&h.name, i).is_some()
            {
                return Err(hat
                    .field("name")
                    .err(format!("`{}` is defined twice", h.name)));
            }
            h.validate_at(&hat)?;
        }
        for (i, r) in self.rules.iter().enumerate() {
            let rat = at.field("rules").index(i);
            r.validate_at(&rat, &names, &ext_names, &hmac_names)?;
        }
        Ok(algs)
    }
}

impl ProviderConfig {
    fn validate_at(
        &self,
        at: &JsonPath,
        outputs: &mut BTreeMap<String, String>,
    ) -> Result<Vec<Alg>, ConfigError> {
        if self.algorithms.is_empty() {
            return Err(at
                .field("algorithms")
                .err("expected at least one algorithm"));
        }
        let mut algs = Vec::new();
        for (i, a) in self.algorithms.iter().enumerate() {
            let alg = Alg::from_jose(a).ok_or_else(|| {
                at.field("algorithms").index(i).err(format!(
                    "`{a}` is not an accepted algorithm: expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512 (`none` is never accepted)"
                ))
            })?;
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
        if let Some(iss) = &self.issuer {
            if iss.is_empty() {
                return Err(at.field("issuer").err("expected a non-empty issuer"));
            }
        }
        for (i, a) in self.audiences.iter().enumerate() {
            if a.is_empty() {
                return Err(at
                    .field("audiences")
                    .index(i)
                    .err("expected a non-empty audience"));
            }
        }
        self.jwks.validate_at(&at.field("jwks"))?;
        if self.sources.is_empty() {
            return Err(at
                .field("sources")
                .err("expected at least one token source"));
        }
        for (i, s) in self.sources.iter().enumerate() {
            let sat = at.field("sources").index(i);
            match s {
                TokenSource::Bearer => {}
                TokenSource::Header { name, prefix } => {
                    if !name.eq_ignore_ascii_case("authorization") {
                        check_header(&sat.field("header").field("name"), name)?;
                    }
                    if let Some(p) = prefix {
                        if p.bytes().any(|b| b < 0x20 || b == 0x7f) {
                            return Err(sat
                                .field("header")
                                .field("prefix")
                                .err("expected printable characters"));
                        }
                    }
                }
                TokenSource::Query(q) => {
                    if q.is_empty()
                        || q.bytes().any(|b| {
                            !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
                        })
                    {
                        return Err(sat
                            .field("query")
                            .err("expected a query parameter name of [A-Za-z0-9_.-]"));
                    }
                }
                TokenSource::Cookie(c) => {
                    validate_cookie_name(c).map_err(|e| sat.field("cookie").err(e))?;
                }
            }
        }
        if self.clock_skew_seconds > 300 {
            return Err(at
                .field("clock_skew_seconds")
                .err("expected at most 300 seconds (RFC 8725: a few minutes at most)"));
        }
        if !(64..=65536).contains(&self.max_token_bytes) {
            return Err(at.field("max_token_bytes").err("expected 64 to 65536"));
        }
        let mut own = |path: JsonPath, header: &str| -> Result<(), ConfigError> {
            let lower = check_header(&path, header)?;
            if let Some(prev) = outputs.insert(lower.clone(), path.as_str().to_string()) {
                // The same header from several providers is fine only for
                // the identity header (one verified token sets it).
                if !path.as_str().ends_with(".identity.header")
                    || !prev.ends_with(".identity.header")
                {
                    return Err(path.err(format!("header `{lower}` is already set at {prev}")));
                }
            }
            Ok(())
        };
        own(at.field("identity").field("header"), &self.identity.header)?;
        if !valid_claim_path(&self.identity.claim) {
            return Err(at
                .field("identity")
                .field("claim")
                .err("expected a dotted claim path"));
        }
        for (i, c) in self.claims_to_headers.iter().enumerate() {
            let cat = at.field("claims_to_headers").index(i);
            if !valid_claim_path(&c.claim) {
                return Err(cat.field("claim").err("expected a dotted claim path"));
            }
            own(cat.field("header"), &c.header)?;
        }
        if let Some(h) = &self.payload_header {
            own(at.field("payload_header"), h)?;
        }
        let needs_secret = algs.iter().any(|a| a.as_str().starts_with("HS"));
        let asymmetric = algs.iter().any(|a| !a.as_str().starts_with("HS"));
        if needs_secret && asymmetric {
            return Err(at.field("algorithms").err(
                "mixes HMAC (HS*) with public-key algorithms: use one provider for each, so a public key can never be used as an HMAC secret",
            ));
        }
        Ok(algs)
    }
}

impl JwksConfig {
    fn validate_at(&self, at: &JsonPath) -> Result<(), ConfigError> {
        let n = [
            self.inline.is_some(),
            self.remote.is_some(),
            self.oidc.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if n != 1 {
            return Err(at.err("expected exactly one of `inline`, `remote`, `oidc`"));
        }
        for (field, r) in [("remote", &self.remote), ("oidc", &self.oidc)] {
            let Some(r) = r else { continue };
            let rat = at.field(field);
            if r.cluster.is_empty() {
                return Err(rat.field("cluster").err("expected a cluster name"));
            }
            if let Some(a) = &r.authority {
                if a.is_empty() || a.bytes().any(|b| b <= 0x20 || b == 0x7f) {
                    return Err(rat.field("authority").err("expected a host[:port]"));
                }
            }
            if let Some(p) = &r.path {
                if !p.starts_with('/') || p.bytes().any(|b| b <= 0x20 || b == 0x7f) {
                    return Err(rat
                        .field("path")
                        .err("expected a path starting with `/`, without spaces"));
                }
            } else if field == "remote" {
                return Err(rat.field("path").err("expected the JWKS path"));
            }
            if !(1..=30_000).contains(&r.timeout_ms) {
                return Err(rat
                    .field("timeout_ms")
                    .err("expected 1 to 30000 milliseconds"));
            }
        }
        if !(10..=86_400).contains(&self.cache_seconds) {
            return Err(at
                .field("cache_seconds")
                .err("expected 10 to 86400 seconds"));
        }
        if !(1..=3600).contains(&self.min_refetch_seconds) {
            return Err(at
                .field("min_refetch_seconds")
                .err("expected 1 to 3600 seconds"));
        }
        Ok(())
    }
}

fn check_authority(at: &JsonPath, a: &str) -> Result<(), ConfigError> {
    if a.is_empty() || a.len() > 255 || a.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return Err(at.err("expected a host[:port]"));
    }
    Ok(())
}

impl ExtAuthConfig {
    fn validate_at(&self, at: &JsonPath) -> Result<(), ConfigError> {
        if self.cluster.is_empty() {
            return Err(at.field("cluster").err("expected a cluster name"));
        }
        if let Some(a) = &self.authority {
            check_authority(&at.field("authority"), a)?;
        }
        if let Some(p) = &self.path_prefix {
            if !p.starts_with('/')
                || p.ends_with('/')
                || p.bytes()
                    .any(|b| b <= 0x20 || b == 0x7f || b == b'?' || b == b'#')
            {
                return Err(at.field("path_prefix").err(
                    "expected a path starting with `/`, not ending with `/`, without spaces, `?` or `#`",
                ));
            }
        }
        if !(1..=30_000).contains(&self.timeout_ms) {
            return Err(at
                .field("timeout_ms")
                .err("expected 1 to 30000 milliseconds"));
        }
        for (field, n) in [
            ("request_headers", self.request_headers.len()),
            ("response_headers", self.response_headers.len()),
        ] {
            if n > MAX_EXT_HEADERS {
                return Err(at
                    .field(field)
                    .err(format!("expected at most {MAX_EXT_HEADERS} headers")));
            }
        }
        let mut seen = Vec::new();
        for (i, h) in self.request_headers.iter().enumerate() {
            // Read, not set: any header name, reserved ones (authorization,
            // cookie) included.
            let lower = h.to_ascii_lowercase();
            if h.is_empty()
                || h.len() > 256
                || !h.chars().all(meshguard_common::headers::is_token_char)
            {
                return Err(at
                    .field("request_headers")
                    .index(i)
                    .err(format!("`{h}` is not a valid header name")));
            }
            if seen.contains(&lower) {
                return Err(at
                    .field("request_headers")
                    .index(i)
                    .err(format!("`{h}` is listed twice")));
            }
            seen.push(lower);
        }
        let mut out = Vec::new();
        for (i, h) in self.response_headers.iter().enumerate() {
            let lower = check_header(&at.field("response_headers").index(i), h)?;
            if out.contains(&lower) {
                return Err(at
                    .field("response_headers")
                    .index(i)
                    .err(format!("`{h}` is listed twice")));
            }
            out.push(lower);
        }
        if let Some(id) = &self.identity_header {
            if !out.contains(&id.to_ascii_lowercase()) {
                return Err(at
                    .field("identity_header")
                    .err("expected one of `response_headers`"));
            }
        }
        let c = &self.cache;
        let cat = at.field("cache");
        if c.allow_seconds > 3600 {
            return Err(cat
                .field("allow_seconds")
                .err("expected at most 3600 seconds"));
        }
        if c.deny_seconds > 300 {
            return Err(cat
                .field("deny_seconds")
                .err("expected at most 300 seconds"));
        }
        if !(1..=1_000_000).contains(&c.max_entries) {
            return Err(cat.field("max_entries").err("expected 1 to 1000000"));
        }
        Ok(())
    }
}

/// Most headers an ext-auth service is sent or may set.
pub const MAX_EXT_HEADERS: usize = 32;

/// Components this verifier can check (RFC 9421 §2.2, and header names).
pub const DERIVED_COMPONENTS: [&str; 7] = [
    "@method",
    "@authority",
    "@scheme",
    "@path",
    "@query",
    "@request-target",
    "@target-uri",
];

impl HmacConfig {
    /// The decoded secrets, in `keys` order.
    pub fn secrets(&self, at: &JsonPath) -> Result<Vec<Vec<u8>>, ConfigError> {
        use base64::Engine;
        let mut out = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let kat = at.field("keys").index(i);
            // The error never shows the secret.
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(k.secret.trim())
                .map_err(|_| {
                    kat.field("secret")
                        .err("expected base64 (standard alphabet, padded)")
                })?;
            if bytes.len() < 32 {
                return Err(kat
                    .field("secret")
                    .err("expected at least 32 bytes of key (RFC 9421 §3.3.3 keys are random, as long as the hash)"));
            }
            out.push(bytes);
        }
        Ok(out)
    }

    fn validate_at(&self, at: &JsonPath) -> Result<(), ConfigError> {
        if self.keys.is_empty() {
            return Err(at.field("keys").err("expected at least one key"));
        }
        let mut ids: Vec<&str> = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let kat = at.field("keys").index(i);
            if k.id.is_empty()
                || k.id.len() > 128
                || k.id
                    .bytes()
                    .any(|b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
            {
                return Err(kat
                    .field("id")
                    .err("expected 1 to 128 printable ASCII characters without `\"` or `\\`"));
            }
            if ids.contains(&k.id.as_str()) {
                return Err(kat
                    .field("id")
                    .err(format!("key `{}` is listed twice", k.id)));
            }
            ids.push(&k.id);
            if let Some(s) = &k.subject {
                if s.is_empty() || s.len() > 256 || s.bytes().any(|b| b < 0x20 || b == 0x7f) {
                    return Err(kat
                        .field("subject")
                        .err("expected 1 to 256 printable characters"));
                }
            }
        }
        self.secrets(at)?;
        let mut seen: Vec<&str> = Vec::new();
        for (i, c) in self.components.iter().enumerate() {
            let cat = at.field("components").index(i);
            if c.starts_with('@') {
                if !DERIVED_COMPONENTS.contains(&c.as_str()) {
                    return Err(cat.err(format!(
                        "`{c}` is not supported: expected a header name or one of {}",
                        DERIVED_COMPONENTS.join(", ")
                    )));
                }
            } else {
                check_header(&cat, c)?;
                if c.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(cat.err("expected a lower-case header name"));
                }
            }
            if seen.contains(&c.as_str()) {
                return Err(cat.err(format!("`{c}` is listed twice")));
            }
            seen.push(c);
        }
        if !(1..=3600).contains(&self.window_seconds) {
            return Err(at.field("window_seconds").err("expected 1 to 3600 seconds"));
        }
        if !(1..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(at
                .field("max_body_bytes")
                .err("expected 1 to 16777216 bytes"));
        }
        if let Some(l) = &self.label {
            let ok = l
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
            if !ok {
                return Err(at
                    .field("label")
                    .err("expected a structured-field key ([a-z*][a-z0-9_.*-]*)"));
            }
        }
        if let Some(n) = &self.nonce {
            if !(1..=1_000_000).contains(&n.max_entries) {
                return Err(at
                    .field("nonce")
                    .field("max_entries")
                    .err("expected 1 to 1000000"));
            }
        }
        check_header(&at.field("identity_header"), &self.identity_header)?;
        Ok(())
    }
}

impl RuleConfig {
    fn validate_at(
        &self,
        at: &JsonPath,
        providers: &BTreeMap<&str, usize>,
        ext: &BTreeMap<&str, usize>,
        hmac: &BTreeMap<&str, usize>,
    ) -> Result<(), ConfigError> {
        if let Some(m) = &self.match_ {
            let mat = at.field("match");
            for (i, h) in m.hosts.iter().enumerate() {
                let bare = h.strip_prefix("*.").unwrap_or(h);
                if bare.is_empty()
                    || bare.contains('*')
                    || bare
                        .bytes()
                        .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
                {
                    return Err(mat.field("hosts").index(i).err(format!(
                        "`{h}` is not a host name (a leading `*.` is the only wildcard)"
                    )));
                }
            }
            match &m.path {
                Some(PathMatch::Exact(p)) | Some(PathMatch::Prefix(p)) if !p.starts_with('/') => {
                    return Err(mat.field("path").err("expected a path starting with `/`"));
                }
                Some(PathMatch::Exact(_)) | Some(PathMatch::Prefix(_)) => {}
                Some(PathMatch::Regex(r)) => {
                    if r.len() > 1024 {
                        return Err(mat
                            .field("path")
                            .field("regex")
                            .err("expected at most 1024 characters"));
                    }
                    regex_lite::Regex::new(r).map_err(|e| {
                        mat.field("path")
                            .field("regex")
                            .err(format!("invalid regex: {e}"))
                    })?;
                }
                None => {}
            }
            for (i, method) in m.methods.iter().enumerate() {
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(mat
                        .field("methods")
                        .index(i)
                        .err(format!("`{method}` is not an upper-case HTTP method")));
                }
            }
        }
        let rat = at.field("requires");
        let list = match &self.requires {
            Requirement::Public => {
                if !self.claims.is_empty() {
                    return Err(at
                        .field("claims")
                        .err("a public rule cannot require claims"));
                }
                return Ok(());
            }
            Requirement::Any(l) => (l, "any"),
            Requirement::All(l) => (l, "all"),
            Requirement::Optional(l) => (l, "optional"),
            Requirement::ExtAuth(n) | Requirement::Hmac(n) => {
                let (map, key) = match &self.requires {
                    Requirement::ExtAuth(_) => (ext, "ext_auth"),
                    _ => (hmac, "hmac"),
                };
                if !map.contains_key(n.as_str()) {
                    return Err(rat.field(key).err(format!(
                        "unknown {key} `{n}`; defined: {}",
                        map.keys().copied().collect::<Vec<_>>().join(", ")
                    )));
                }
                if !self.claims.is_empty() {
                    return Err(at.field("claims").err("claims apply to JWT rules only"));
                }
                return Ok(());
            }
        };
        let (names, key) = list;
        if names.is_empty() {
            return Err(rat.field(key).err("expected at least one provider"));
        }
        for (i, n) in names.iter().enumerate() {
            if !providers.contains_key(n.as_str()) {
                return Err(rat.field(key).index(i).err(format!(
                    "unknown provider `{n}`; defined: {}",
                    providers.keys().copied().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        for (i, c) in self.claims.iter().enumerate() {
            if !valid_claim_path(&c.claim) {
                return Err(at
                    .field("claims")
                    .index(i)
                    .field("claim")
                    .err("expected a dotted claim path"));
            }
        }
        Ok(())
    }
}
