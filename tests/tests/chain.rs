//! A chain in one VM, in real Envoy: the test-only callout stage asks the
//! demo auth service (demo/auth.py) about every request and ab-routing
//! then keys on the identity it established. Same case table as the
//! native and harness runs (tests/fixtures/chain/tests/cases).

#[path = "../fixtures/chain/tests/cases/mod.rs"]
mod cases;
#[path = "../../wasm-test-harness/tests/common/fixtures.rs"]
mod fixtures;

use cases::{AuthAnswer, Case, Want};
use meshguard_e2e::*;
use meshguard_stage::testing::{run_table, Runtime};

struct InEnvoy {
    envoy: Envoy,
    /// The same module with the auth cluster pointing at a closed port.
    envoy_no_auth: Envoy,
}

impl Runtime<Case> for InEnvoy {
    fn runtime_name(&self) -> &str {
        "envoy"
    }

    fn run_case(&mut self, case: &Case) -> Vec<String> {
        let envoy = if case.answer == AuthAnswer::Fail {
            &self.envoy_no_auth
        } else {
            &self.envoy
        };
        let r = envoy.get("/checkout", case.headers);
        let mut problems = Vec::new();
        match case.want {
            Want::Forwarded { user, variant } => {
                if r.status != 200 {
                    return vec![format!("status {} body {}", r.status, r.body_text())];
                }
                let users: Vec<String> = r
                    .upstream_headers()
                    .into_iter()
                    .filter(|(k, _)| k == "x-user-id")
                    .map(|(_, v)| v)
                    .collect();
                if users != [user] {
                    problems.push(format!("upstream x-user-id {users:?}, want [{user}]"));
                }
                let variants: Vec<String> = r
                    .upstream_headers()
                    .into_iter()
                    .filter(|(k, _)| k == "x-ab-variant")
                    .map(|(_, v)| v)
                    .collect();
                if variants != [variant] {
                    problems.push(format!(
                        "upstream x-ab-variant {variants:?}, want [{variant}]"
                    ));
                }
            }
            Want::ForwardedAnonymous => {
                if r.status != 200 {
                    return vec![format!("status {} body {}", r.status, r.body_text())];
                }
                for name in ["x-user-id", "x-ab-variant"] {
                    if r.upstream_headers().iter().any(|(k, _)| k == name) {
                        problems.push(format!("upstream saw {name}"));
                    }
                }
            }
            Want::Reply(status) => {
                if r.status != status {
                    problems.push(format!(
                        "status {}, want {status}: {}",
                        r.status,
                        r.body_text()
                    ));
                }
                if (status == 401) != r.header("www-authenticate").is_some() {
                    problems.push(format!(
                        "www-authenticate {:?}",
                        r.header("www-authenticate")
                    ));
                }
                if r.body_text().contains("\"headers\"") {
                    problems.push("the upstream answered a refused request".into());
                }
            }
        }
        problems
    }
}

#[test]
fn chain_case_table_in_envoy_with_a_real_auth_service() {
    envoy_bin();
    let module = fixtures::fixture("meshguard-chain-fixture");
    let dir = scratch_dir("chain");
    let upstream = Upstream::start(&dir);
    // Slower than the stage's 500 ms callout timeout.
    let auth = Upstream::start_script(&dir, "demo/auth.py", &["--slow-seconds", "1.5"]);
    let start = |name: &str, auth_port: u16| {
        let ports = EnvoyPorts {
            listen: free_port(),
            admin: free_port(),
        };
        let config = module_envoy_config(
            &ports,
            upstream.port,
            &module,
            "chain",
            cases::CONFIG,
            &[("auth", auth_port)],
        );
        Envoy::start(&dir.join(name), &config, ports, 2)
    };
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::create_dir_all(dir.join("b")).unwrap();
    let envoy = start("a", auth.port);
    let envoy_no_auth = start("b", free_port());
    run_table(
        &mut InEnvoy {
            envoy,
            envoy_no_auth,
        },
        cases::CASES,
    );
}
