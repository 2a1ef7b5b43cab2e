//! Guest instructions per request (wasmtime fuel) for every filter and path
//! that matters: the noise-free cost figure CI tracks.
//!
//! Wall-clock numbers depend on the machine and on whatever else it is
//! doing; fuel counts the wasm instructions the guest executes, so the same
//! module, config and request give the same number on every machine. One
//! table of paths serves the budget test (`tests/fuel_budget.rs`, part of
//! `make test`) and `make bench` (`benches/fuel.rs`), against the budget in
//! `bench/fuel-budget.json`.
//!
//! A later filter adds its paths to [`paths`] and a line per path to the
//! budget file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wasm_test_harness::{
    Action, Harness, Headers, HttpCallResponse, Module, Vm, DEFAULT_START_UNIX_NS,
};

use crate::repo_root;

/// A path may cost this much more than its budget before the test fails.
pub const TOLERANCE_PERCENT: u64 = 10;

/// Cycles averaged per path (after one warm-up cycle that is not counted:
/// the first request allocates buffers the later ones reuse).
pub const CYCLES: u64 = 100;

/// The plugin config `make bench` runs in Envoy: one experiment keyed by a
/// header, visitor cookie as the fallback, no `match`.
pub const AB_BENCH_CONFIG: &str = r#"{"experiments":[{"name":"checkout","variants":[{"name":"control","weight":50},{"name":"treatment","weight":50}],"sticky_key":[{"header":"x-user-id"},"visitor_cookie"]}]}"#;

/// The same experiment limited to a host and a path prefix (the shape most
/// deployments use), with a QA override.
pub const AB_MATCH_CONFIG: &str = r#"{"experiments":[{"name":"checkout","variants":[{"name":"control","weight":50},{"name":"treatment","weight":50}],"sticky_key":[{"header":"x-user-id"},"visitor_cookie"],"match":{"hosts":["shop.example.com"],"path_prefixes":["/checkout"]}}],"qa_override":{"secret_sha256":"1c8bfe8f801d79745c4631d09fff36c82aa37fc4cce4fc946683d7b336b63032"}}"#;

/// authn as `make bench` runs it: the demo provider with the demo keys
/// inline, every path requiring a token.
pub const AUTHN_BENCH_CONFIG: &str = concat!(
    r#"{"providers":[{"name":"demo","issuer":"https://demo.meshguard.local","audiences":["shop"],"algorithms":["RS256","ES256"],"jwks":{"inline":"#,
    include_str!("../../deploy/local/demo-keys/jwks.json"),
    r#"}}],"rules":[{"match":{"path":{"prefix":"/public"}},"requires":"public"},{"requires":{"any":["demo"]}}]}"#
);

/// The same without the token cache: every request verifies a signature.
pub const AUTHN_COLD_CONFIG: &str = concat!(
    r#"{"providers":[{"name":"demo","issuer":"https://demo.meshguard.local","audiences":["shop"],"algorithms":["RS256","ES256"],"jwks":{"inline":"#,
    include_str!("../../deploy/local/demo-keys/jwks.json"),
    r#"}}],"rules":[{"match":{"path":{"prefix":"/public"}},"requires":"public"},{"requires":{"any":["demo"]}}],"cache":{"max_entries":0}}"#
);

/// Tokens for the bench and this table (bench/authn-tokens.json).
pub fn authn_token(which: &str) -> &'static str {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../bench/authn-tokens.json")).unwrap_or_default();
    let t = v[which].as_str().unwrap_or_default();
    Box::leak(format!("Bearer {t}").into_boxed_str())
}

/// authn's external-auth mode as `make bench FILTER=authn-ext` runs it
/// (`authn_ext_config` in bench/bench.py): every path asks the auth
/// service, an allow is reused for 30 s per credential.
pub const AUTHN_EXT_CACHE_CONFIG: &str = r#"{"providers":[],"ext_auth":[{"name":"legacy","cluster":"auth","path_prefix":"/check","timeout_ms":300,"request_headers":["authorization","cookie"],"response_headers":["x-user-id","x-tenant"],"cache":{"allow_seconds":30}}],"rules":[{"requires":{"ext_auth":"legacy"}}]}"#;

/// The same with the decision cache off: every request is a call.
pub const AUTHN_EXT_CALL_CONFIG: &str = r#"{"providers":[],"ext_auth":[{"name":"legacy","cluster":"auth","path_prefix":"/check","timeout_ms":300,"request_headers":["authorization","cookie"],"response_headers":["x-user-id","x-tenant"],"cache":{"allow_seconds":0}}],"rules":[{"requires":{"ext_auth":"legacy"}}]}"#;

/// authn's HMAC mode as the bench runs it (`HMAC_SECRET` in
/// bench/bench.py: base64 of `meshguard bench partner-a secret, 32+
/// bytes`).
pub const AUTHN_HMAC_CONFIG: &str = r#"{"providers":[],"hmac":[{"name":"partners","keys":[{"id":"partner-a","secret":"bWVzaGd1YXJkIGJlbmNoIHBhcnRuZXItYSBzZWNyZXQsIDMyKyBieXRlcw=="}],"max_body_bytes":1024}],"rules":[{"requires":{"hmac":"partners"}}]}"#;

/// The bench's signed request body (`HMAC_BODY` in bench/bench.py).
pub const HMAC_BODY: &str = r#"{"order":7,"qty":1}"#;

/// `POST http://shop.example.com/orders?id=7` with [`HMAC_BODY`], signed
/// (`@method @authority @path @query content-digest`, key `partner-a`) at
/// `created` = the harness's start time, whose clock stands still, so the
/// request stays valid for every cycle and the figure is exact. Made with
/// RFC 9421's base and HMAC-SHA256 (what `meshguard sign` prints at that
/// time; the check below fails if it no longer verifies).
const HMAC_CLIENT: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("content-length", "19"),
    (
        "content-digest",
        "sha-256=:vxIBitG8n4OJLDe/A6U9zHLqhXzgMKUuL1C1gsTY6nM=:",
    ),
    (
        "signature-input",
        r#"sig1=("@method" "@authority" "@path" "@query" "content-digest");created=1767225600;keyid="partner-a";alg="hmac-sha256""#,
    ),
    (
        "signature",
        "sig1=:o2EjskUmO4hjjFw6QszecXJuejk50bDGbT20cuDbJVk=:",
    ),
];
const _: () = assert!(
    DEFAULT_START_UNIX_NS == 1_767_225_600 * 1_000_000_000,
    "the harness start time moved: re-sign HMAC_CLIENT for the new `created`"
);

/// The bench's auth service (an Envoy `direct_response` in
/// bench/bench.py): 200 with the identity headers.
const AUTH_SERVICE: AuthService = AuthService {
    cluster: "auth",
    headers: &[("x-user-id", "user-42"), ("x-tenant", "acme")],
    calls_per_request: 0,
};

/// The credentials every ext-auth request carries.
const EXT_CLIENT: &[(&str, &str)] = &[("authorization", "Bearer user-42")];

/// One request path through one filter.
pub struct FuelPath {
    /// `<filter>/<path>`: the key in `bench/fuel-budget.json`.
    pub name: &'static str,
    /// Module file relative to the repo root.
    pub module: &'static str,
    /// What builds it when it is missing.
    pub build: &'static str,
    pub config: &'static str,
    /// Request headers as Envoy presents them to the filter.
    pub request: Vec<(&'static str, &'static str)>,
    /// A request body, sent after the headers (end of stream with it);
    /// `None`: the headers end the request.
    pub body: Option<&'static str>,
    /// Answers the path's HTTP callouts; `None`: a callout is an error.
    pub auth_service: Option<AuthService>,
    /// Checks that the path still does what its name says (so a budget can
    /// never be met by silently taking a cheaper path). Gets the headers the
    /// upstream saw and the response's `set-cookie` values.
    pub check: fn(&Headers, &[String]) -> Result<(), String>,
}

/// An auth service (authn's ext-auth mode): every callout to `cluster` is
/// answered 200 with `headers`.
#[derive(Debug, Clone, Copy)]
pub struct AuthService {
    pub cluster: &'static str,
    pub headers: &'static [(&'static str, &'static str)],
    /// Callouts each measured request makes: 0 for a cache hit (the
    /// warm-up request's call fills the cache), 1 for a call per request.
    pub calls_per_request: u64,
}

/// Request headers in the order Envoy hands them to a filter: pseudo
/// headers, the client's headers (wrk sends `user-agent` and `accept`), then
/// what Envoy adds.
fn request(
    authority: &'static str,
    path: &'static str,
    client: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    request_with("GET", authority, path, client)
}

fn request_with(
    method: &'static str,
    authority: &'static str,
    path: &'static str,
    client: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut h = vec![
        (":authority", authority),
        (":path", path),
        (":method", method),
        (":scheme", "http"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
    ];
    h.extend_from_slice(client);
    h.push(("x-forwarded-proto", "http"));
    h.push(("x-request-id", "4a4f2c1e-9d6b-4b1f-8f0e-6f4d3c2b1a00"));
    h
}

/// The `make bench` request (user id plus a forged variant header).
const BENCH_CLIENT: &[(&str, &str)] = &[("x-user-id", "user-42"), ("x-ab-variant", "forged")];

fn variant_set(up: &Headers) -> Result<(), String> {
    match up.get_all("x-ab-variant").as_slice() {
        [v] if v == "control" || v == "treatment" => Ok(()),
        other => Err(format!(
            "expected one x-ab-variant control|treatment, got {other:?}"
        )),
    }
}

fn no_cookie(cookies: &[String]) -> Result<(), String> {
    if cookies.is_empty() {
        Ok(())
    } else {
        Err(format!("expected no set-cookie, got {cookies:?}"))
    }
}

fn identity(up: &Headers, _: &[String]) -> Result<(), String> {
    match up.get_all("x-user-id").as_slice() {
        [v] if v == "user-42" => Ok(()),
        other => Err(format!("expected x-user-id user-42, got {other:?}")),
    }
}

/// authn's ext-auth paths: the auth service's identity headers, once
/// each (the client's copies removed).
fn ext_identity(up: &Headers, _: &[String]) -> Result<(), String> {
    match (
        up.get_all("x-user-id").as_slice(),
        up.get_all("x-tenant").as_slice(),
    ) {
        ([u], [t]) if u == "user-42" && t == "acme" => Ok(()),
        other => Err(format!(
            "expected x-user-id user-42 and x-tenant acme, got {other:?}"
        )),
    }
}

const AUTHN: &str = "dist/authn.wasm";
const AB: &str = "dist/ab-routing.wasm";
const AL: &str = "dist/accesslog.wasm";
const RL: &str = "dist/ratelimit.wasm";
const FLOOR: &str = "target/fixtures/floor-experiment.wasm";

/// ratelimit as `make bench` runs it: one rule keyed on the identity
/// header; a limit nothing reaches, and one (1 a second) that answers 429.
const RL_HIGH_CONFIG: &str = r#"{"rules":[{"name":"bench","key":["header"],"limit":{"requests":1000000,"per":"second","burst":1000000}}]}"#;
/// The same rule limited to a path the bench never requests: the shell and
/// the rule match, no bucket (`make bench`'s "rule never matches").
const RL_UNMATCHED_CONFIG: &str = r#"{"rules":[{"name":"bench","key":["header"],"match":{"paths":[{"exact":"/never-requested"}]},"limit":{"requests":1000000,"per":"second","burst":1000000}}]}"#;
const RL_LOW_CONFIG: &str = r#"{"rules":[{"name":"bench","key":["header"],"limit":{"requests":1,"per":"second","burst":1}}]}"#;

/// The config `make bench` runs accesslog with: the demo's (tags, query
/// redaction, header allow-list), every request logged as a line.
pub const AL_BENCH_CONFIG: &str = r#"{"tags":{"environment":"test","cluster":"local","namespace":"demo","workload":"envoy"},"query":{"mode":"redact","redact_params":["token","password"]},"headers":{"request":["x-tenant","authorization","x-user-id"],"response":["content-type","set-cookie"]},"sampling":{"success_rate":1.0,"exclude_paths":["/healthz","/internal/*"]}}"#;

/// Shipping only (no line), OTLP, to the `collector` cluster.
pub const AL_SHIP_CONFIG: &str = r#"{"tags":{"environment":"test","workload":"envoy"},"log_line":{"enabled":false},"ship":{"cluster":"collector"}}"#;

/// What the accesslog bench request carries besides wrk's headers.
const AL_CLIENT: &[(&str, &str)] = &[
    ("x-user-id", "user-42"),
    ("x-tenant", "acme"),
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
];
const AB_BUILD: &str = "make build";

/// Every measured path. Keep names stable: they are the budget file's keys.
pub fn paths() -> Vec<FuelPath> {
    vec![
        FuelPath {
            name: "ab-routing/header-key",
            module: AB,
            build: AB_BUILD,
            config: AB_BENCH_CONFIG,
            // The `make bench` request: user id header plus a forged variant.
            request: request("shop.example.com", "/checkout", BENCH_CLIENT),
            body: None,
            auth_service: None,
            check: |up, cookies| {
                variant_set(up)?;
                no_cookie(cookies)
            },
        },
        FuelPath {
            name: "ab-routing/new-visitor",
            module: AB,
            build: AB_BUILD,
            config: AB_BENCH_CONFIG,
            request: request("shop.example.com", "/checkout", &[]),
            body: None,
            auth_service: None,
            check: |up, cookies| {
                variant_set(up)?;
                match cookies {
                    [c] if c.starts_with("mg_visitor=") => Ok(()),
                    other => Err(format!("expected one mg_visitor set-cookie, got {other:?}")),
                }
            },
        },
        FuelPath {
            name: "ab-routing/visitor-cookie",
            module: AB,
            build: AB_BUILD,
            config: AB_BENCH_CONFIG,
            request: request(
                "shop.example.com",
                "/checkout",
                &[(
                    "cookie",
                    "session=s-81f2; mg_visitor=5f0c6b8e2a9d4c7b8e1f3a2d6c9b0e4f; theme=dark",
                )],
            ),
            body: None,
            auth_service: None,
            check: |up, cookies| {
                variant_set(up)?;
                no_cookie(cookies)
            },
        },
        FuelPath {
            name: "ab-routing/no-match",
            module: AB,
            build: AB_BUILD,
            config: AB_MATCH_CONFIG,
            // Matching host, other path: the owned headers are still stripped.
            request: request("shop.example.com", "/search?q=socks", BENCH_CLIENT),
            body: None,
            auth_service: None,
            check: |up, cookies| {
                if up.contains("x-ab-variant") {
                    return Err("x-ab-variant must be stripped and not set".into());
                }
                no_cookie(cookies)
            },
        },
        FuelPath {
            name: "ab-routing/qa-override",
            module: AB,
            build: AB_BUILD,
            config: AB_MATCH_CONFIG,
            request: request(
                "shop.example.com",
                "/checkout",
                &[
                    ("x-user-id", "user-42"),
                    ("x-ab-force", "treatment"),
                    ("x-ab-force-secret", "letmein"),
                ],
            ),
            body: None,
            auth_service: None,
            check: |up, cookies| {
                if up.get_all("x-ab-variant") != ["treatment"] {
                    return Err(format!(
                        "expected forced x-ab-variant treatment, got {:?}",
                        up.get_all("x-ab-variant")
                    ));
                }
                no_cookie(cookies)
            },
        },
        FuelPath {
            name: "authn/warm-cache-rs256",
            module: AUTHN,
            build: AB_BUILD,
            config: AUTHN_BENCH_CONFIG,
            request: request(
                "shop.example.com",
                "/checkout",
                &[("authorization", authn_token("rs256"))],
            ),
            body: None,
            auth_service: None,
            check: identity,
        },
        FuelPath {
            name: "authn/cold-rs256",
            module: AUTHN,
            build: AB_BUILD,
            config: AUTHN_COLD_CONFIG,
            request: request(
                "shop.example.com",
                "/checkout",
                &[("authorization", authn_token("rs256"))],
            ),
            body: None,
            auth_service: None,
            check: identity,
        },
        FuelPath {
            name: "authn/cold-es256",
            module: AUTHN,
            build: AB_BUILD,
            config: AUTHN_COLD_CONFIG,
            request: request(
                "shop.example.com",
                "/checkout",
                &[("authorization", authn_token("es256"))],
            ),
            body: None,
            auth_service: None,
            check: identity,
        },
        FuelPath {
            name: "authn/junk-unknown-kid",
            module: AUTHN,
            build: AB_BUILD,
            config: AUTHN_BENCH_CONFIG,
            request: request(
                "shop.example.com",
                "/checkout",
                &[("authorization", authn_token("junk"))],
            ),
            body: None,
            auth_service: None,
            check: |up, _| match up.get(":local-status").as_deref() {
                Some("401") => Ok(()),
                other => Err(format!("expected a local 401, got {other:?}")),
            },
        },
        FuelPath {
            name: "authn/junk-malformed",
            module: AUTHN,
            build: AB_BUILD,
            config: AUTHN_BENCH_CONFIG,
            request: request(
                "shop.example.com",
                "/checkout",
                &[("authorization", "Bearer not-a-jwt")],
            ),
            body: None,
            auth_service: None,
            check: |up, _| match up.get(":local-status").as_deref() {
                Some("401") => Ok(()),
                other => Err(format!("expected a local 401, got {other:?}")),
            },
        },
        FuelPath {
            name: "authn/public-forged-identity",
            module: AUTHN,
            build: AB_BUILD,
            config: AUTHN_BENCH_CONFIG,
            request: request(
                "shop.example.com",
                "/public/x",
                &[("x-user-id", "admin"), ("X-User-Id", "root")],
            ),
            body: None,
            auth_service: None,
            check: |up, _| {
                if up.contains("x-user-id") {
                    return Err("forged x-user-id reached the upstream".into());
                }
                Ok(())
            },
        },
        FuelPath {
            // The auth service's allow is in the decision cache (the
            // warm-up request's call put it there): no call.
            name: "authn/ext-auth-cache-hit",
            module: AUTHN,
            build: AB_BUILD,
            config: AUTHN_EXT_CACHE_CONFIG,
            request: request("shop.example.com", "/checkout", EXT_CLIENT),
            body: None,
            auth_service: Some(AUTH_SERVICE),
            check: ext_identity,
        },
        FuelPath {
            // The cache off: every request calls the auth service (the
            // callout and its answer, both in the guest's count).
            name: "authn/ext-auth-call",
            module: AUTHN,
            build: AB_BUILD,
            config: AUTHN_EXT_CALL_CONFIG,
            request: request("shop.example.com", "/checkout", EXT_CLIENT),
            body: None,
            auth_service: Some(AuthService {
                calls_per_request: 1,
                ..AUTH_SERVICE
            }),
            check: ext_identity,
        },
        FuelPath {
            // RFC 9421 hmac-sha256 over method, authority, path, query and
            // Content-Digest, and the body's SHA-256 against the digest.
            name: "authn/hmac-small-body",
            module: AUTHN,
            build: AB_BUILD,
            config: AUTHN_HMAC_CONFIG,
            request: request_with("POST", "shop.example.com", "/orders?id=7", HMAC_CLIENT),
            body: Some(HMAC_BODY),
            auth_service: None,
            check: |up, _| match up.get_all("x-user-id").as_slice() {
                [v] if v == "partner-a" => Ok(()),
                other => Err(format!("expected x-user-id partner-a, got {other:?}")),
            },
        },
        FuelPath {
            name: "accesslog/record",
            module: AL,
            build: AB_BUILD,
            config: AL_BENCH_CONFIG,
            // A record with every field, written as a log line.
            request: request("shop.example.com", "/checkout?token=abc&page=2", AL_CLIENT),
            body: None,
            auth_service: None,
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "accesslog/sampled-out",
            module: AL,
            build: AB_BUILD,
            config: r#"{"sampling":{"success_rate":0}}"#,
            request: request("shop.example.com", "/checkout", AL_CLIENT),
            body: None,
            auth_service: None,
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "accesslog/ship-otlp",
            module: AL,
            build: AB_BUILD,
            config: AL_SHIP_CONFIG,
            // The record buffered as an OTLP logRecord (no line).
            request: request("shop.example.com", "/checkout", AL_CLIENT),
            body: None,
            auth_service: None,
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "ratelimit/allowed",
            module: RL,
            build: AB_BUILD,
            config: RL_HIGH_CONFIG,
            request: request("shop.example.com", "/checkout", BENCH_CLIENT),
            body: None,
            auth_service: None,
            check: identity,
        },
        FuelPath {
            name: "ratelimit/no-rule-matches",
            module: RL,
            build: AB_BUILD,
            config: RL_UNMATCHED_CONFIG,
            request: request("shop.example.com", "/checkout", BENCH_CLIENT),
            body: None,
            auth_service: None,
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "ratelimit/limited",
            module: RL,
            build: AB_BUILD,
            config: RL_LOW_CONFIG,
            // The harness clock stands still: after the warm-up request
            // every one is over the limit.
            request: request("shop.example.com", "/checkout", BENCH_CLIENT),
            body: None,
            auth_service: None,
            check: |_, _| Ok(()),
        },
        // The floors (bench/fixtures/floor): the host calls each job cannot
        // avoid, made by an SDK filter that does nothing else.
        FuelPath {
            name: "ratelimit/floor-bucket",
            module: FLOOR,
            build: "make build-fixtures",
            config: "bucket-pairs",
            request: request("shop.example.com", "/checkout", BENCH_CLIENT),
            body: None,
            auth_service: None,
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "authn/floor-callout",
            module: FLOOR,
            build: "make build-fixtures",
            config: "callout",
            request: request("shop.example.com", "/checkout", EXT_CLIENT),
            body: None,
            auth_service: Some(AuthService {
                calls_per_request: 1,
                ..AUTH_SERVICE
            }),
            check: ext_identity,
        },
        FuelPath {
            name: "accesslog/floor-log-read",
            module: FLOOR,
            build: "make build-fixtures",
            config: "log-read",
            request: request("shop.example.com", "/checkout", AL_CLIENT),
            body: None,
            auth_service: None,
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "wasm-noop/request",
            module: "target/fixtures/noop-filter.wasm",
            build: "make build-fixtures",
            config: "",
            request: request("shop.example.com", "/checkout", BENCH_CLIENT),
            body: None,
            auth_service: None,
            check: |_, _| Ok(()),
        },
    ]
}

/// The baseline paths plus those of one filter (`<filter>/...`); all paths
/// with an empty filter.
pub fn paths_for(filter: &str) -> Vec<FuelPath> {
    paths()
        .into_iter()
        .filter(|p| {
            filter.is_empty()
                || p.name.starts_with(BASELINE_PREFIX)
                || p.name
                    .strip_prefix(filter)
                    .is_some_and(|r| r.starts_with('/'))
        })
        .collect()
}

/// Paths every selection keeps: what a filter costs is read against them.
pub const BASELINE_PREFIX: &str = "wasm-noop/";

fn load(h: &Harness, p: &FuelPath) -> Result<Module, String> {
    let path = repo_root().join(p.module);
    if !path.exists() {
        return Err(format!("{} is missing: run `{}`", path.display(), p.build));
    }
    h.module(&path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What one request cycle left: the headers the upstream saw (or
/// `:local-status` for a local reply), the response's `set-cookie` values,
/// and the number of callouts it made.
type Seen = (Headers, Vec<String>, u64);

fn cycle(vm: &mut Vm, p: &FuelPath, request: &Headers) -> Result<Seen, String> {
    let mut http = vm.new_http().map_err(|e| e.to_string())?;
    let id = http.id();
    let mut action = http
        .request_headers(request.clone(), p.body.is_none())
        .map_err(|e| e.to_string())?;
    // A paused request may wait for a callout (authn's ext-auth mode).
    let calls = if action == Action::Continue {
        0
    } else {
        answer_calls(vm, p)?
    };
    let mut http = vm.http(id).map_err(|e| e.to_string())?;
    if let Some(body) = p.body {
        if http.local_response().is_none() {
            action = http
                .request_body(body.as_bytes(), true)
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(r) = http.local_response() {
        // A local reply (authn's 401): the path ends there.
        http.finish().map_err(|e| e.to_string())?;
        let status = r.status.to_string();
        return Ok((
            Headers::from_pairs(&[(":local-status", status)]),
            Vec::new(),
            calls,
        ));
    }
    if action != Action::Continue && http.request_resumed() == 0 {
        return Err(format!(
            "request headers: expected Continue, got {action:?}"
        ));
    }
    let upstream = http.request_headers_map();
    http.response_headers(
        Headers::from_pairs(&[(":status", "200"), ("content-length", "3")]),
        true,
    )
    .map_err(|e| e.to_string())?;
    let cookies = http.response_headers_map().get_all("set-cookie");
    http.finish().map_err(|e| e.to_string())?;
    Ok((upstream, cookies, calls))
}

/// Answers the VM's pending callouts as the path's auth service; returns
/// how many there were.
fn answer_calls(vm: &mut Vm, p: &FuelPath) -> Result<u64, String> {
    let calls = vm.http_calls();
    let mut n = 0;
    for call in calls {
        let Some(a) = p.auth_service.filter(|a| a.cluster == call.cluster) else {
            return Err(format!("unexpected callout to cluster {}", call.cluster));
        };
        vm.respond_http_call(call.token, HttpCallResponse::new(200, a.headers, b""))
            .map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// Guest instructions per request cycle (request headers → response
/// headers → log → done → delete), averaged over [`CYCLES`], for each path
/// in order. Each path gets a fresh VM; modules are compiled once.
pub fn measure_all(paths: &[FuelPath]) -> Vec<Result<u64, String>> {
    measure_all_detailed(paths)
        .into_iter()
        .map(|r| r.map(|m| m.instructions))
        .collect()
}

/// One path's figures per request cycle.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Guest instructions (fuel), averaged over [`CYCLES`].
    pub instructions: u64,
    /// Crossings of the VM boundary over all [`CYCLES`] measured requests
    /// (divide by [`CYCLES`]): callbacks, host calls, allocations.
    pub crossings: wasm_test_harness::Crossings,
}

impl Measured {
    /// `n` per request, to one decimal.
    pub fn per_request(n: u64) -> f64 {
        (n as f64 / CYCLES as f64 * 10.0).round() / 10.0
    }
}

/// [`measure_all`] with the crossings of the VM boundary per path.
pub fn measure_all_detailed(paths: &[FuelPath]) -> Vec<Result<Measured, String>> {
    let h = Harness::builder().fuel(true).build();
    // authn's ext-auth paths call the bench's auth service.
    h.declare_cluster(AUTH_SERVICE.cluster);
    let mut modules: BTreeMap<&str, Result<Module, String>> = BTreeMap::new();
    paths
        .iter()
        .map(|p| {
            let module = modules
                .entry(p.module)
                .or_insert_with(|| load(&h, p))
                .clone()?;
            measure(&h, &module, p)
        })
        .collect()
}

fn measure(h: &Harness, module: &Module, p: &FuelPath) -> Result<Measured, String> {
    let mut vm = h
        .configured_vm(module, p.config.as_bytes())
        .map_err(|e| format!("configure: {e}"))?;
    let request = Headers::from_pairs(&p.request);
    let (upstream, cookies, _) = cycle(&mut vm, p, &request)?;
    (p.check)(&upstream, &cookies).map_err(|e| format!("path no longer does its job: {e}"))?;
    let before = vm.fuel_consumed();
    let crossed_before = vm.crossings();
    let mut calls = 0;
    let mut last = None;
    for _ in 0..CYCLES {
        let (upstream, cookies, n) = cycle(&mut vm, p, &request)?;
        calls += n;
        last = Some((upstream, cookies));
    }
    let fuel = (vm.fuel_consumed() - before) / CYCLES;
    let crossings = vm.crossings().since(&crossed_before);
    // The measured requests do the job too (a cache hit is not the
    // warm-up's miss), and make the callouts the path says.
    if let Some((upstream, cookies)) = last {
        (p.check)(&upstream, &cookies)
            .map_err(|e| format!("path no longer does its job after warm-up: {e}"))?;
    }
    let want = p.auth_service.map_or(0, |a| a.calls_per_request) * CYCLES;
    if calls != want {
        return Err(format!(
            "path no longer does its job: {calls} callouts in {CYCLES} requests, expected {want}"
        ));
    }
    Ok(Measured {
        instructions: fuel,
        crossings,
    })
}

pub fn budget_file() -> PathBuf {
    repo_root().join("bench/fuel-budget.json")
}

/// `bench/fuel-budget.json`: `{"<filter>/<path>": instructions, ...}`.
pub fn read_budget(path: &Path) -> Result<BTreeMap<String, u64>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: {e}; expected {{\"<filter>/<path>\": <instructions per request>, ...}}",
            path.display()
        )
    })
}

/// How one path compares with its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget + tolerance.
    Ok,
    /// More than [`TOLERANCE_PERCENT`] over the budget.
    Over,
    /// More than [`TOLERANCE_PERCENT`] under: fine, but the budget should
    /// come down so the next regression is caught.
    Under,
    /// Measured, but the budget file has no line for it.
    NoBudget,
    /// In the budget file, but no such path is measured any more.
    NotMeasured,
}

pub fn verdict(measured: Option<u64>, budget: Option<u64>) -> Verdict {
    match (measured, budget) {
        (Some(_), None) => Verdict::NoBudget,
        (None, _) => Verdict::NotMeasured,
        (Some(m), Some(b)) => {
            if m * 100 > b * (100 + TOLERANCE_PERCENT) {
                Verdict::Over
            } else if m * 100 < b * (100 - TOLERANCE_PERCENT) {
                Verdict::Under
            } else {
                Verdict::Ok
            }
        }
    }
}

/// Signed change against the budget in percent, for reports.
pub fn change_percent(measured: u64, budget: u64) -> f64 {
    if budget == 0 {
        return 0.0;
    }
    (measured as f64 - budget as f64) * 100.0 / budget as f64
}
