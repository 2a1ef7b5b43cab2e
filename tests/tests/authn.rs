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

use std::time::{SystemTime, UNIX_EPOCH};

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
    assert!(
        rt.envoy
            .counter("wasmcustom.meshguard_authn_denied.algorithm")
            >= 3
    );
    drop(upstream);
}
