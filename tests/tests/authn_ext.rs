//! authn's external-auth and HMAC modes in real Envoy: the ext_cases table
//! (rules combining public, JWT, ext-auth and HMAC) against the real demo
//! auth service (demo/auth.py) and an unreachable one; the decision cache
//! making no call on a hit; and requests signed by an independent RFC 9421
//! implementation (PyPI http-message-signatures) verifying, altered ones not.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../filters/authn/tests/cases/mod.rs"]
mod cases;
#[path = "../../filters/authn/tests/ext_cases/mod.rs"]
mod ext_cases;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use meshguard_e2e::*;
use meshguard_stage::testing::{run_table, Runtime};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Setup {
    envoy: Envoy,
    auth: Upstream,
    _upstream: Upstream,
    _dir: std::path::PathBuf,
}

fn start(name: &str, config: &str) -> Setup {
    envoy_bin();
    let dir = scratch_dir(name);
    let upstream = Upstream::start(&dir);
    // Slow answers take 1 s: the filter's 300 ms timeout must cut them.
    let auth = Upstream::start_script(&dir, "demo/auth.py", &["--slow-seconds", "1"]);
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    // auth_down: a port nothing listens on.
    let down = free_port();
    let envoy_config = module_envoy_config(
        &ports,
        upstream.port,
        &wasm_module("authn"),
        "authn",
        config,
        &[("auth", auth.port), ("auth_down", down)],
    );
    let envoy = Envoy::start(&dir, &envoy_config, ports, 2);
    Setup {
        envoy,
        auth,
        _upstream: upstream,
        _dir: dir,
    }
}

fn config() -> String {
    ext_cases::config(&serde_json::from_str(cases::JWKS).unwrap())
}

/// Sends a request as the table describes it; returns what the upstream
/// saw or the local reply.
fn send(
    envoy: &Envoy,
    method: &str,
    req: &[(String, String)],
    body: &[u8],
) -> (Option<Vec<(String, String)>>, Option<ext_cases::Reply>) {
    let path = req.iter().find(|(k, _)| k == ":path").unwrap().1.clone();
    let headers: Vec<(&str, &str)> = req
        .iter()
        .filter_map(|(k, v)| match k.as_str() {
            ":authority" => Some(("host", v.as_str())),
            k if k.starts_with(':') => None,
            k => Some((k, v.as_str())),
        })
        .collect();
    let r = envoy.request(method, &path, &headers, body);
    let echo: Option<serde_json::Value> = serde_json::from_slice(&r.body)
        .ok()
        .filter(|v: &serde_json::Value| v.get("headers").is_some());
    match echo {
        Some(_) => (Some(r.upstream_headers()), None),
        None => (
            None,
            Some((
                r.status,
                r.header("www-authenticate").map(str::to_string),
                r.body_text(),
                r.headers.clone(),
            )),
        ),
    }
}

struct InEnvoy {
    envoy: Envoy,
}

impl Runtime<ext_cases::Case> for InEnvoy {
    fn runtime_name(&self) -> &str {
        "envoy"
    }
    fn run_case(&mut self, case: &ext_cases::Case) -> Vec<String> {
        let (req, body) = case.request(now());
        let method = req.iter().find(|(k, _)| k == ":method").unwrap().1.clone();
        let (up, reply) = send(&self.envoy, &method, &req, &body);
        ext_cases::check(case, up.as_deref(), reply)
    }
}

fn auth_calls(auth: &Upstream) -> u64 {
    let r = get(auth.port, "/__stats", &[]).unwrap();
    serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["calls"]
        .as_u64()
        .unwrap()
}

#[test]
fn case_table_in_envoy_with_the_real_auth_service() {
    let s = start("authn-ext-cases", &config());
    let mut rt = InEnvoy { envoy: s.envoy };
    run_table(&mut rt, ext_cases::CASES);
    // A JWT rule in the same rule set: a valid token passes on /api.
    let token = cases::mint(cases::Tok::Rs256, now());
    let r = rt.envoy.get(
        "/api/items",
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("alice"));
    drop(s.auth);
}

#[test]
fn a_cached_decision_makes_no_call() {
    let s = start("authn-ext-cache", &config());
    let before = auth_calls(&s.auth);
    for _ in 0..5 {
        let r = s
            .envoy
            .get("/legacy/orders", &[("authorization", "Bearer carol")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("carol"));
    }
    // Two workers: each may miss once before the other's entry lands.
    let calls = auth_calls(&s.auth) - before;
    assert!(
        (1..=2).contains(&calls),
        "{calls} auth calls for 5 requests with one credential"
    );
    // No credentials: never cached, every request is a call.
    let before = auth_calls(&s.auth);
    for _ in 0..3 {
        assert_eq!(s.envoy.get("/legacy/orders", &[]).status, 401);
    }
    assert_eq!(auth_calls(&s.auth) - before, 3);
}

#[test]
fn requests_signed_by_an_independent_rfc9421_library_verify_and_altered_ones_do_not() {
    let python = repo_root().join(".venv/bin/python");
    let probe = std::process::Command::new(&python)
        .args(["-c", "import http_message_signatures, requests"])
        .status()
        .unwrap();
    assert!(
        probe.success(),
        "PyPI http-message-signatures/requests missing in .venv: run `make venv`"
    );
    let s = start("authn-ext-interop", &config());
    let out = std::process::Command::new(&python)
        .arg(repo_root().join("tests/interop/rfc9421_client.py"))
        .args(["--port", &s.envoy.ports.listen.to_string()])
        .args(["--key-id", "partner-a"])
        .args([
            "--secret-b64",
            &base64::engine::general_purpose::STANDARD.encode(ext_cases::PARTNER_SECRET),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 11, "{results:?}");
    for r in &results {
        let name = r["name"].as_str().unwrap();
        if name.starts_with("valid") {
            assert_eq!(r["status"], 200, "{r}");
            assert_eq!(r["user"], "partner-a", "{r}");
        } else {
            assert_eq!(r["status"], 401, "{r}");
        }
    }
}
