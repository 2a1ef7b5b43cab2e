//! The shared case table (tests/cases) run natively against `Router`.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cases;

use meshguard_ab_routing::router::{visitor_id_from, How};
use meshguard_ab_routing::{AbRouting, Router};
use meshguard_stage::pipeline::Flow;
use meshguard_stage::testing::{run_table, Driver, Runtime};

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The table through the stage and the pipeline the module runs, on the
/// fake proxy (the same code as in Envoy, minus the SDK calls).
struct NativePipeline {
    driver: Driver<(AbRouting,)>,
}

impl Runtime<cases::Case> for NativePipeline {
    fn runtime_name(&self) -> &str {
        "native"
    }

    fn run_case(&mut self, case: &cases::Case) -> Vec<String> {
        let d = &mut self.driver;
        let (mut s, flow) = d.request(case.request, true);
        if flow != Flow::Continue {
            return vec![format!("request not continued: {flow:?}")];
        }
        d.response(&mut s, &[(":status", "200")]);
        let upstream: Vec<(String, String)> = d
            .proxy
            .request
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        cases::check(case, &upstream, &d.proxy.response_header_all("set-cookie"))
    }
}

#[test]
fn case_table() {
    let driver = Driver::new(cases::CONFIG.as_bytes()).unwrap();
    run_table(&mut NativePipeline { driver }, cases::CASES);
}

/// The router alone (no pipeline): the decision, then its edits applied.
struct NativeRouter {
    router: Router,
    seed: u8,
}

impl Runtime<cases::Case> for NativeRouter {
    fn runtime_name(&self) -> &str {
        "router"
    }

    fn run_case(&mut self, case: &cases::Case) -> Vec<String> {
        let mut req = headers(case.request);
        self.seed = self.seed.wrapping_add(37);
        let seed = self.seed;
        let d = self.router.decide(&req, || Some([seed; 16]));
        d.apply_to(&mut req);
        let cookies: Vec<String> = d.set_cookie.into_iter().collect();
        cases::check(case, &req, &cookies)
    }
}

#[test]
fn case_table_router_only() {
    let router = Router::from_json(cases::CONFIG.as_bytes()).unwrap();
    run_table(&mut NativeRouter { router, seed: 0 }, cases::CASES);
}

#[test]
fn new_visitor_is_sticky_through_its_cookie() {
    let router = Router::from_json(cases::CONFIG.as_bytes()).unwrap();
    for seed in 0..50u8 {
        let req = headers(&[(":authority", "shop"), (":path", "/checkout")]);
        let d = router.decide(&req, || Some([seed; 16]));
        let cookie = d.set_cookie.clone().unwrap();
        assert!(cases::is_new_visitor_cookie(&cookie), "{cookie}");
        let first = d.set.clone();
        assert_eq!(d.assignments[0].how, How::NewVisitor);
        let id = cookie.split(';').next().unwrap().to_string();
        assert_eq!(id, format!("mg_visitor={}", visitor_id_from([seed; 16])));
        let again = headers(&[
            (":authority", "shop"),
            (":path", "/checkout"),
            ("cookie", &id),
        ]);
        let d2 = router.decide(&again, || panic!("must not generate a second id"));
        assert_eq!(d2.set, first);
        assert_eq!(d2.set_cookie, None);
        assert_eq!(d2.assignments[0].how, How::Sticky);
    }
}

#[test]
fn random_source_failure_leaves_experiment_unassigned() {
    let router = Router::from_json(cases::CONFIG.as_bytes()).unwrap();
    let req = headers(&[
        (":authority", "shop"),
        (":path", "/checkout"),
        ("x-ab-variant", "forged"),
    ]);
    let d = router.decide(&req, || None);
    assert!(d.set.is_empty());
    assert_eq!(d.unassigned, vec![0]);
    assert_eq!(d.remove, vec!["x-ab-variant"]);
    assert_eq!(d.set_cookie, None);
}

#[test]
fn override_rejection_is_reported() {
    let router = Router::from_json(cases::CONFIG.as_bytes()).unwrap();
    let req = headers(&[
        (":path", "/checkout"),
        ("x-user-id", "u"),
        ("x-ab-force", "control"),
    ]);
    assert!(router.decide(&req, || None).override_rejected);
    let req = headers(&[(":path", "/checkout"), ("x-user-id", "u")]);
    assert!(!router.decide(&req, || None).override_rejected);
}

#[test]
fn override_headers_stripped_even_when_overrides_are_disabled() {
    let cfg = r#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":1},{"name":"b","weight":1}],"sticky_key":[{"header":"x-user-id"}]}]}"#;
    let router = Router::from_json(cfg.as_bytes()).unwrap();
    let mut req = headers(&[
        (":path", "/"),
        ("x-user-id", "u1"),
        ("x-ab-force", "b"),
        ("x-ab-force-secret", "s"),
    ]);
    let d = router.decide(&req, || None);
    assert!(!d.override_rejected);
    d.apply_to(&mut req);
    assert!(
        req.iter().all(|(k, _)| !k.starts_with("x-ab-force")),
        "{req:?}"
    );
}

/// Over 100 000 distinct keys every variant's share is within ±1 percentage
/// point of its weight.
#[test]
fn weights_hold_over_100k_keys() {
    for weights in [
        vec![50u32, 50],
        vec![90, 10],
        vec![1, 1, 1],
        vec![70, 20, 9, 1],
        vec![5, 0, 95],
    ] {
        let variants: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!(r#"{{"name":"v{i}","weight":{w}}}"#))
            .collect();
        let cfg = format!(
            r#"{{"experiments":[{{"name":"exp","variants":[{}],"sticky_key":[{{"header":"x-user-id"}}]}}]}}"#,
            variants.join(",")
        );
        let router = Router::from_json(cfg.as_bytes()).unwrap();
        let mut counts = vec![0u32; weights.len()];
        const N: u32 = 100_000;
        for i in 0..N {
            let req = vec![("x-user-id".to_string(), format!("user-{i}"))];
            let d = router.decide(&req, || None);
            counts[d.assignments[0].variant] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, (&w, &c)) in weights.iter().zip(&counts).enumerate() {
            let want = f64::from(w) / f64::from(total) * 100.0;
            let got = f64::from(c) / f64::from(N) * 100.0;
            assert!(
                (want - got).abs() <= 1.0,
                "weights {weights:?}: v{i} got {got:.2}% want {want:.2}%"
            );
        }
    }
}

/// Raising the last variant's weight only moves users into it — checked on
/// real keys through the whole router, not just the bucket table.
#[test]
fn ramp_up_is_monotonic_for_users() {
    let cfg = |last: u32| {
        format!(
            r#"{{"experiments":[{{"name":"ramp","variants":[{{"name":"a","weight":50}},{{"name":"b","weight":30}},{{"name":"new","weight":{last}}}],"sticky_key":[{{"header":"x-user-id"}}]}}]}}"#
        )
    };
    let steps: Vec<Router> = [0, 1, 10, 20, 50, 80, 400]
        .iter()
        .map(|w| Router::from_json(cfg(*w).as_bytes()).unwrap())
        .collect();
    let mut moved_into_new = 0;
    for i in 0..20_000 {
        let req = vec![("x-user-id".to_string(), format!("u{i}"))];
        let seq: Vec<usize> = steps
            .iter()
            .map(|r| r.decide(&req, || None).assignments[0].variant)
            .collect();
        for pair in seq.windows(2) {
            assert!(
                pair[0] == pair[1] || pair[1] == 2,
                "user u{i} moved {seq:?}"
            );
            if pair[0] != pair[1] {
                moved_into_new += 1;
            }
        }
    }
    assert!(
        moved_into_new > 1000,
        "ramp moved only {moved_into_new} users"
    );
}

#[test]
fn visitor_cookie_name_max_age_and_secure_are_honoured() {
    let cfg = r#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":1}],"sticky_key":["visitor_cookie"]}],
        "visitor_cookie":{"name":"vid","max_age_seconds":60,"secure":true}}"#;
    let router = Router::from_json(cfg.as_bytes()).unwrap();
    let d = router.decide(&headers(&[(":path", "/")]), || Some([0xab; 16]));
    assert_eq!(
        d.set_cookie.as_deref(),
        Some("vid=abababababababababababababababab; Max-Age=60; Path=/; HttpOnly; SameSite=Lax; Secure")
    );
    // The configured name is the one read back.
    let d = router.decide(
        &headers(&[
            (":path", "/"),
            ("cookie", "vid=abababababababababababababababab"),
        ]),
        || None,
    );
    assert_eq!(d.set_cookie, None);
    assert_eq!(d.value_of("x-ab-variant"), Some("a"));
}
