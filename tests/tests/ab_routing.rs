//! ab-routing in real Envoy (V8), configured as `make run` configures it
//! (deploy/local/filters.yaml through `meshguard envoy-config`).

#[path = "../../filters/ab-routing/tests/cases/mod.rs"]
mod cases;

use meshguard_ab_routing::Router;
use meshguard_e2e::*;
use meshguard_stage::testing::{run_table, Runtime};

/// The demo config users run is the case table's config, so the table's
/// expectations describe `make run` exactly.
#[test]
fn demo_config_is_the_case_table_config() {
    let local = local_plugin_config("ab-routing");
    let table: serde_json::Value = serde_json::from_str(cases::CONFIG).unwrap();
    assert_eq!(local, table);
}

struct InEnvoy {
    stack: Stack,
}

impl Runtime<cases::Case> for InEnvoy {
    fn runtime_name(&self) -> &str {
        "envoy"
    }

    fn run_case(&mut self, case: &cases::Case) -> Vec<String> {
        let mut path = "/";
        let mut headers: Vec<(&str, &str)> = Vec::new();
        for (k, v) in case.request {
            match *k {
                ":path" => path = v,
                ":authority" => headers.push(("host", v)),
                ":method" => {}
                _ => headers.push((k, v)),
            }
        }
        let r = self.stack.envoy.get(path, &headers);
        if r.status != 200 {
            return vec![format!(
                "status {}: {}",
                r.status,
                self.stack.envoy.proc.log_tail()
            )];
        }
        cases::check(case, &r.upstream_headers(), &r.header_all("set-cookie"))
    }
}

#[test]
fn case_table_through_envoy() {
    let stack = Stack::start("ab-cases");
    run_table(&mut InEnvoy { stack }, cases::CASES);
}

#[test]
fn same_key_same_variant_across_workers_and_connections() {
    let stack = Stack::start("ab-sticky");
    for user in ["alice", "bob", "user-1", "user-2", "carol"] {
        let seen: Vec<String> = (0..12)
            .map(|_| {
                let r = stack.envoy.get("/checkout", &[("x-user-id", user)]);
                assert_eq!(r.status, 200);
                r.upstream_header("x-ab-variant")
                    .expect("variant header present")
            })
            .collect();
        assert!(seen.iter().all(|v| v == &seen[0]), "{user}: {seen:?}");
    }
}

#[test]
fn visitor_cookie_makes_anonymous_users_sticky() {
    let stack = Stack::start("ab-cookie");
    for _ in 0..10 {
        let first = stack.envoy.get("/checkout", &[]);
        let cookies = first.header_all("set-cookie");
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        assert!(cases::is_new_visitor_cookie(&cookies[0]), "{cookies:?}");
        let variant = first.upstream_header("x-ab-variant").expect("variant");
        let pair = cookies[0].split(';').next().unwrap().to_string();
        for _ in 0..3 {
            let again = stack.envoy.get("/checkout/pay", &[("cookie", &pair)]);
            assert_eq!(
                again.upstream_header("x-ab-variant").as_deref(),
                Some(variant.as_str())
            );
            assert!(again.header("set-cookie").is_none(), "cookie set again");
        }
    }
    assert_eq!(
        stack
            .envoy
            .counter("wasmcustom.meshguard_ab_visitor_cookie_set"),
        10
    );
}

#[test]
fn forged_variant_header_never_reaches_upstream_or_routing() {
    let stack = Stack::start("ab-forged");
    // bob hashes to treatment; a forged `control` must be replaced ...
    let r = stack.envoy.get(
        "/checkout",
        &[("x-user-id", "bob"), ("x-ab-variant", "control")],
    );
    let seen: Vec<_> = r
        .upstream_headers()
        .into_iter()
        .filter(|(k, _)| k == "x-ab-variant")
        .collect();
    assert_eq!(
        seen,
        vec![("x-ab-variant".to_string(), "treatment".to_string())]
    );
    // ... and routing follows the filter's header, not the client's
    // (the route cache is cleared when the filter changes headers).
    assert_eq!(
        r.upstream_header("x-demo-route").as_deref(),
        Some("treatment")
    );
    let r = stack.envoy.get(
        "/checkout",
        &[("x-user-id", "alice"), ("x-ab-variant", "treatment")],
    );
    assert_eq!(
        r.upstream_header("x-ab-variant").as_deref(),
        Some("control")
    );
    assert_eq!(
        r.upstream_header("x-demo-route").as_deref(),
        Some("default")
    );
    // Outside the experiment's paths the forged header is dropped.
    let r = stack.envoy.get("/home", &[("x-ab-variant", "treatment")]);
    assert_eq!(r.upstream_header("x-ab-variant"), None);
    assert_eq!(
        r.upstream_header("x-demo-route").as_deref(),
        Some("default")
    );
}

/// Envoy assigns exactly what the native Router computes, for thousands of
/// keys, and the split holds.
#[test]
fn weights_hold_and_match_native_over_3000_keys() {
    let stack = Stack::start("ab-weights");
    let router = Router::from_json(cases::CONFIG.as_bytes()).unwrap();
    const N: usize = 3000;
    let mut treatment = 0;
    let mut mismatches = Vec::new();
    for i in 0..N {
        let user = format!("e2e-user-{i}");
        let r = stack.envoy.get("/checkout", &[("x-user-id", &user)]);
        let got = r.upstream_header("x-ab-variant").expect("variant");
        let req = vec![
            (":path".to_string(), "/checkout".to_string()),
            ("x-user-id".to_string(), user.clone()),
        ];
        let want = router.decide(&req, || None).set[0].value.to_string();
        if got != want {
            mismatches.push(format!("{user}: envoy {got}, native {want}"));
        }
        if got == "treatment" {
            treatment += 1;
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}",
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    let share = treatment as f64 / N as f64 * 100.0;
    // 50% weight; with 3000 keys one standard deviation is 0.9 points.
    assert!((share - 50.0).abs() < 4.0, "treatment share {share:.1}%");
    let counted = stack
        .envoy
        .counter("wasmcustom.meshguard_ab_assigned.checkout.treatment");
    assert_eq!(
        counted, treatment as u64,
        "metric disagrees with what upstream saw"
    );
    assert_eq!(
        stack
            .envoy
            .counter("wasmcustom.meshguard_ab_assigned.checkout.control"),
        (N - treatment) as u64
    );
}

#[test]
fn metrics_show_up_in_prometheus_with_labels() {
    let stack = Stack::start("ab-metrics");
    stack.envoy.get("/checkout", &[("x-user-id", "bob")]);
    stack.envoy.get(
        "/checkout",
        &[("x-user-id", "bob"), ("x-ab-force", "control")],
    );
    stack.envoy.get(
        "/checkout",
        &[
            ("x-user-id", "bob"),
            ("x-ab-force", "control"),
            ("x-ab-force-secret", cases::QA_SECRET),
        ],
    );
    let prom = stack.envoy.admin_get("/stats/prometheus").body_text();
    for line in [
        r#"meshguard_ab_assigned{experiment="checkout",variant="treatment"} 2"#,
        r#"meshguard_ab_forced{experiment="checkout",variant="control"} 1"#,
        r#"meshguard_ab_override_rejected{} 1"#,
    ] {
        assert!(
            prom.lines().any(|l| l == line),
            "missing `{line}` in:\n{prom}"
        );
    }
}

#[test]
fn hostile_headers_get_answers_and_never_kill_the_vm() {
    let stack = Stack::start("ab-hostile");
    let long = "k".repeat(8000);
    let nasty: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![
        // obs-text bytes in values (not UTF-8): the SDK's String accessor would panic.
        vec![(b"x-user-id".to_vec(), vec![0xff, 0xfe, b'a'])],
        vec![(
            b"cookie".to_vec(),
            vec![b's', b'e', b's', b's', b'i', b'o', b'n', b'=', 0xc3, 0x28],
        )],
        vec![
            (b"x-ab-force".to_vec(), vec![0x80; 10]),
            (b"x-ab-force-secret".to_vec(), vec![0xff; 64]),
        ],
        vec![(b"x-user-id".to_vec(), long.clone().into_bytes())],
        vec![(
            b"cookie".to_vec(),
            format!("mg_visitor={long}").into_bytes(),
        )],
        vec![(b"cookie".to_vec(), b";;;;====;;;".to_vec()); 50],
    ];
    for headers in &nasty {
        let r = get_raw(stack.envoy.ports.listen, "/checkout", headers).expect("response");
        assert_eq!(
            r.status,
            200,
            "{headers:?}\n{}",
            stack.envoy.proc.log_tail()
        );
        assert!(r.upstream_header("x-ab-variant").is_some());
    }
    // The VM is still the one we started with, and still answering.
    let r = stack.envoy.get("/checkout", &[("x-user-id", "bob")]);
    assert_eq!(
        r.upstream_header("x-ab-variant").as_deref(),
        Some("treatment")
    );
    let log = stack.envoy.proc.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.contains("Function: proxy_on_request_headers failed"),
        "{log}"
    );
}

#[test]
fn bad_plugin_config_is_refused_with_json_path() {
    let bad: &[(&str, &str)] = &[
        (
            r#"{"experiments":[{"name":"e","variants":[{"name":"a","wieght":1}],"sticky_key":["visitor_cookie"]}]}"#,
            "invalid plugin config at $.experiments[0].variants[0].wieght: unknown field `wieght`",
        ),
        (
            r#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":0},{"name":"b","weight":0}],"sticky_key":["visitor_cookie"]}]}"#,
            "invalid plugin config at $.experiments[0].variants: the variants' weights sum to 0",
        ),
        (
            r#"{"experiments":[{"name":"e","header":"x ab","variants":[{"name":"a","weight":1}],"sticky_key":["visitor_cookie"]}]}"#,
            "invalid plugin config at $.experiments[0].header: `x ab` is not a valid header name",
        ),
        (
            "not json",
            "invalid plugin config at $: config is not valid JSON",
        ),
    ];
    envoy_bin();
    wasm_module("ab-routing");
    for (json, want) in bad {
        let dir = scratch_dir("ab-badconfig");
        let ports = EnvoyPorts {
            listen: free_port(),
            admin: free_port(),
        };
        let config = local_envoy_config(
            &ports,
            free_port(),
            local_filters_with_raw_config("ab-routing", json),
        );
        let log = Envoy::expect_refused(&dir, &config, ports);
        assert!(log.contains(want), "log lacks `{want}`:\n{log}");
        assert!(
            log.contains("Unable to create Wasm plugin meshguard.ab_routing"),
            "{log}"
        );
    }
}
