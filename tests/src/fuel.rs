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

use wasm_test_harness::{Action, Harness, Headers, Module, Vm};

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
    /// Checks that the path still does what its name says (so a budget can
    /// never be met by silently taking a cheaper path). Gets the headers the
    /// upstream saw and the response's `set-cookie` values.
    pub check: fn(&Headers, &[String]) -> Result<(), String>,
}

/// Request headers in the order Envoy hands them to a filter: pseudo
/// headers, the client's headers (wrk sends `user-agent` and `accept`), then
/// what Envoy adds.
fn request(
    authority: &'static str,
    path: &'static str,
    client: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut h = vec![
        (":authority", authority),
        (":path", path),
        (":method", "GET"),
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

const AUTHN: &str = "dist/authn.wasm";
const AB: &str = "dist/ab-routing.wasm";
const AL: &str = "dist/accesslog.wasm";
const RL: &str = "dist/ratelimit.wasm";

/// ratelimit as `make bench` runs it: one rule keyed on the identity
/// header; a limit nothing reaches, and one (1 a second) that answers 429.
const RL_HIGH_CONFIG: &str = r#"{"rules":[{"name":"bench","key":["header"],"limit":{"requests":1000000,"per":"second","burst":1000000}}]}"#;
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
            check: |up, _| {
                if up.contains("x-user-id") {
                    return Err("forged x-user-id reached the upstream".into());
                }
                Ok(())
            },
        },
        FuelPath {
            name: "accesslog/record",
            module: AL,
            build: AB_BUILD,
            config: AL_BENCH_CONFIG,
            // A record with every field, written as a log line.
            request: request("shop.example.com", "/checkout?token=abc&page=2", AL_CLIENT),
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "accesslog/sampled-out",
            module: AL,
            build: AB_BUILD,
            config: r#"{"sampling":{"success_rate":0}}"#,
            request: request("shop.example.com", "/checkout", AL_CLIENT),
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "accesslog/ship-otlp",
            module: AL,
            build: AB_BUILD,
            config: AL_SHIP_CONFIG,
            // The record buffered as an OTLP logRecord (no line).
            request: request("shop.example.com", "/checkout", AL_CLIENT),
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "ratelimit/allowed",
            module: RL,
            build: AB_BUILD,
            config: RL_HIGH_CONFIG,
            request: request("shop.example.com", "/checkout", BENCH_CLIENT),
            check: identity,
        },
        FuelPath {
            name: "ratelimit/limited",
            module: RL,
            build: AB_BUILD,
            config: RL_LOW_CONFIG,
            // The harness clock stands still: after the warm-up request
            // every one is over the limit.
            request: request("shop.example.com", "/checkout", BENCH_CLIENT),
            check: |_, _| Ok(()),
        },
        FuelPath {
            name: "wasm-noop/request",
            module: "target/fixtures/noop-filter.wasm",
            build: "make build-fixtures",
            config: "",
            request: request("shop.example.com", "/checkout", BENCH_CLIENT),
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

fn cycle(vm: &mut Vm, request: &Headers) -> Result<(Headers, Vec<String>), String> {
    let mut http = vm.new_http().map_err(|e| e.to_string())?;
    let action = http
        .request_headers(request.clone(), true)
        .map_err(|e| e.to_string())?;
    if action != Action::Continue {
        // A local reply (authn's 401): the path ends there.
        if let Some(r) = http.local_response() {
            http.finish().map_err(|e| e.to_string())?;
            let status = r.status.to_string();
            return Ok((
                Headers::from_pairs(&[(":local-status", status)]),
                Vec::new(),
            ));
        }
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
    Ok((upstream, cookies))
}

/// Guest instructions per request cycle (request headers → response
/// headers → log → done → delete), averaged over [`CYCLES`], for each path
/// in order. Each path gets a fresh VM; modules are compiled once.
pub fn measure_all(paths: &[FuelPath]) -> Vec<Result<u64, String>> {
    let h = Harness::builder().fuel(true).build();
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

fn measure(h: &Harness, module: &Module, p: &FuelPath) -> Result<u64, String> {
    let mut vm = h
        .configured_vm(module, p.config.as_bytes())
        .map_err(|e| format!("configure: {e}"))?;
    let request = Headers::from_pairs(&p.request);
    let (upstream, cookies) = cycle(&mut vm, &request)?;
    (p.check)(&upstream, &cookies).map_err(|e| format!("path no longer does its job: {e}"))?;
    let before = vm.fuel_consumed();
    for _ in 0..CYCLES {
        cycle(&mut vm, &request)?;
    }
    Ok((vm.fuel_consumed() - before) / CYCLES)
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
