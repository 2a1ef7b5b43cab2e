//! authn in real Envoy: the whole case table (tokens minted now, real
//! clock) against dist/authn.wasm, and the local chain (authn, then
//! ab-routing) that `make run` runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../filters/authn/tests/cases/mod.rs"]
mod cases;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshguard::envoy::WasmFilter;
use meshguard_e2e::*;
use meshguard_stage::testing::{run_table, Runtime};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct InEnvoy {
    envoy: Envoy,
}

impl Runtime<cases::Case> for InEnvoy {
    fn runtime_name(&self) -> &str {
        "envoy"
    }
    fn run_case(&mut self, case: &cases::Case) -> Vec<String> {
        let req = case.request(now());
        let path = req.iter().find(|(k, _)| k == ":path").unwrap().1.clone();
        let headers: Vec<(&str, &str)> = req
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("host", "shop.example.com")])
            .collect();
        let r = self.envoy.request(case.method, &path, &headers, b"");
        // The demo upstream echoes what it received (JSON with `headers`);
        // a local reply does not.
        let echo: Option<serde_json::Value> = serde_json::from_slice(&r.body)
            .ok()
            .filter(|v: &serde_json::Value| v.get("headers").is_some());
        match echo {
            Some(v) => {
                let mut up = r.upstream_headers();
                up.push((
                    ":path".into(),
                    v["path"].as_str().unwrap_or_default().to_string(),
                ));
                cases::check(case, Some(&up), None)
            }
            None => {
                let www = r.header("www-authenticate").map(str::to_string);
                cases::check(case, None, Some((r.status, www, r.body_text())))
            }
        }
    }
}

#[test]
fn case_table_in_envoy() {
    envoy_bin();
    let dir = scratch_dir("authn-cases");
    let upstream = Upstream::start(&dir);
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let config: serde_json::Value = serde_json::from_str(&cases::config()).unwrap();
    let filters = vec![WasmFilter::module("authn", &wasm_module("authn"), config)];
    let envoy = Envoy::start(
        &dir,
        &local_envoy_config(&ports, upstream.port, filters),
        ports,
        2,
    );
    let mut rt = InEnvoy { envoy };
    run_table(&mut rt, cases::CASES);
    // 401s reach the counters on the filter's 1 s timer.
    let counted = wait_until(Duration::from_secs(5), || {
        rt.envoy
            .counter("wasmcustom.meshguard_authn_denied.algorithm")
            >= 3
    });
    assert!(counted.is_some(), "denied.algorithm never reached 3");
    drop(upstream);
}

/// demo/idp/idp.mjs: oauth2-mock-server on `port` (discovery, JWKS) and
/// its test hooks on `port + 1`.
struct Idp {
    port: u16,
    proc: Proc,
}

impl Idp {
    fn start(dir: &std::path::Path) -> Self {
        let script = repo_root().join("demo/idp/idp.mjs");
        assert!(
            repo_root()
                .join("demo/idp/node_modules/oauth2-mock-server")
                .exists(),
            "demo/idp/node_modules is missing: run `make idp-deps` (needs Node.js and npm)"
        );
        // Two adjacent free ports.
        let port = free_ports(2);
        let mut cmd = std::process::Command::new("node");
        cmd.arg(script).arg(port.to_string());
        let mut proc = Proc::spawn("idp", cmd, dir.join("idp.log"));
        wait_until(std::time::Duration::from_secs(20), || {
            if let Some(status) = proc.exited() {
                panic!("idp exited ({status}):\n{}", proc.log_tail());
            }
            proc.log_text().contains("ready ")
        })
        .unwrap_or_else(|| panic!("idp not ready:\n{}", proc.log_tail()));
        Self { port, proc }
    }

    fn issuer(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    fn hook(&self, path: &str, body: &str) -> String {
        let r = request(
            self.port + 1,
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("idp {path}: {e}\n{}", self.proc.log_tail()));
        assert_eq!(r.status, 200, "idp {path}: {}", r.body_text());
        r.body_text()
    }

    fn token(&self, sub: &str, kid: &str) -> String {
        self.hook("/_token", &format!(r#"{{"sub":"{sub}","kid":"{kid}"}}"#))
    }
}

/// A real OIDC provider on loopback: discovery, then JWKS through an Envoy
/// cluster, tokens from its token machinery, and a key rotation at the
/// provider picked up on the first token signed with the new key.
#[test]
fn real_oidc_provider_with_key_rotation() {
    envoy_bin();
    let dir = scratch_dir("authn-oidc");
    let idp = Idp::start(&dir);
    let upstream = Upstream::start(&dir);
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let config = serde_json::json!({
        "providers": [{
            "name": "idp",
            "issuer": idp.issuer(),
            "audiences": ["shop"],
            "algorithms": ["RS256"],
            "jwks": {
                "oidc": {"cluster": "idp", "authority": format!("localhost:{}", idp.port), "timeout_ms": 2000},
                "cache_seconds": 600,
                "min_refetch_seconds": 1
            }
        }],
        "rules": [{"requires": {"any": ["idp"]}}]
    });
    let local = meshguard::envoy::Local {
        listen: meshguard::envoy::Addr::new("127.0.0.1", ports.listen),
        admin: meshguard::envoy::Addr::new("127.0.0.1", ports.admin),
        upstream: meshguard::envoy::Addr::new("127.0.0.1", upstream.port),
        filters: vec![WasmFilter::module("authn", &wasm_module("authn"), config)],
        grpc_clusters: Vec::new(),
        clusters: vec![(
            "idp".into(),
            meshguard::envoy::Addr::new("127.0.0.1", idp.port),
        )],
    };
    let envoy = Envoy::start(&dir, &local.to_yaml("authn oidc e2e").unwrap(), ports, 2);

    // No token: 401, with the challenge.
    let r = envoy.get("/api", &[]);
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("Bearer realm="));

    // The first token: discovery + JWKS fetched on demand, then verified.
    let t1 = idp.token("bob", "idp-1");
    let r = envoy.get("/api", &[("authorization", &format!("Bearer {t1}"))]);
    assert_eq!(
        r.status,
        200,
        "{}\n{}",
        r.body_text(),
        envoy.proc.log_tail()
    );
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("bob"));
    assert_eq!(
        r.upstream_header("authorization"),
        None,
        "the token must not reach the upstream"
    );

    // Rotation at the provider: a new signing key; its first token makes
    // authn refetch (unknown kid, after min_refetch_seconds) and succeed.
    idp.hook("/_rotate", r#"{"kid":"idp-2"}"#);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let t2 = idp.token("carol", "idp-2");
    let r = envoy.get("/api", &[("authorization", &format!("Bearer {t2}"))]);
    assert_eq!(
        r.status,
        200,
        "{}\n{}",
        r.body_text(),
        envoy.proc.log_tail()
    );
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("carol"));
    // Old-key tokens still verify (the key is still published).
    let r = envoy.get(
        "/api",
        &[(
            "authorization",
            &format!("Bearer {}", idp.token("dan", "idp-1")),
        )],
    );
    assert_eq!(r.status, 200);
    assert!(envoy.counter("wasmcustom.meshguard_authn_jwks_fetch_ok.idp") >= 2);
    // A forged token with the provider's kid but another key: 401.
    let forged = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some("idp-2".into());
        let claims = serde_json::json!({"iss": idp.issuer(), "aud": "shop", "sub": "mallory", "exp": now() + 600});
        let k = jsonwebtoken::EncodingKey::from_rsa_pem(cases::RSA_PEM.as_bytes()).unwrap();
        jsonwebtoken::encode(&h, &claims, &k).unwrap()
    };
    let r = envoy.get("/api", &[("authorization", &format!("Bearer {forged}"))]);
    assert_eq!(r.status, 401);
    drop(upstream);
}
