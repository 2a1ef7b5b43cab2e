//! ratelimit's global mode natively: the global case table with the
//! rate-limit service's answers scripted, `on_error: deny`, and an unknown
//! cluster.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod global_cases;

use std::time::{Duration, UNIX_EPOCH};

use global_cases::{Case, Expect};
use meshguard_ratelimit::stage::RateLimit;
use meshguard_stage::pipeline::Flow;
use meshguard_stage::testing::{run_table, Driver, FakeProxy, Runtime};

fn driver(config: &str, clusters: &[&str]) -> Driver<(RateLimit,)> {
    let mut p = FakeProxy::new().with_clusters(clusters);
    p.now = Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    Driver::with_proxy(config.as_bytes(), p).unwrap()
}

struct Native {
    d: Driver<(RateLimit,)>,
}

impl Runtime<Case> for Native {
    fn runtime_name(&self) -> &str {
        "native"
    }
    fn run_case(&mut self, case: &Case) -> Vec<String> {
        let d = &mut self.d;
        let req = case.request();
        let pairs: Vec<(&str, &str)> = req.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let calls = d.proxy.grpc_calls.len();
        let replies = d.proxy.replies.len();
        let (mut s, flow) = d.request(&pairs, true);
        let message = d.proxy.grpc_calls.get(calls).map(|c| c.message.clone());
        let mut problems = case.check_call(message.as_deref());
        if flow == Flow::Pause && s.stream.waiting_on().is_some() {
            match case.answer() {
                Ok(m) => d.answer_grpc(&mut s, 0, &m),
                Err(status) => d.answer_grpc(&mut s, status, b""),
            }
        }
        let reply = d.proxy.replies.get(replies).cloned();
        match (case.expect, reply) {
            (Expect::Allowed(header), None) => {
                d.response(&mut s, &[(":status", "200")]);
                if let Some((k, v)) = header {
                    let got = d.proxy.response_header_all(k);
                    if got != [v.to_string()] {
                        problems.push(format!("response {k}: want {v}, got {got:?}"));
                    }
                }
            }
            (Expect::Allowed(_), Some(r)) => problems.push(format!("refused: {}", r.status)),
            (Expect::Refused(..), None) => problems.push("forwarded".into()),
            (Expect::Refused(status, retry), Some(r)) => {
                if r.status != status {
                    problems.push(format!("status: want {status}, got {}", r.status));
                }
                let got = r
                    .headers
                    .iter()
                    .find(|(k, _)| k.as_bytes() == b"retry-after")
                    .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned());
                if let Some(want) = retry {
                    if got.as_deref() != Some(want) {
                        problems.push(format!("retry-after: want {want}, got {got:?}"));
                    }
                }
            }
        }
        problems
    }
}

#[test]
fn case_table() {
    let mut rt = Native {
        d: driver(global_cases::CONFIG, &["rls"]),
    };
    run_table(&mut rt, global_cases::CASES);
    rt.d.tick();
    assert_eq!(rt.d.proxy.counter("meshguard_ratelimit_service_errors"), 3);
    assert_eq!(rt.d.proxy.counter("meshguard_ratelimit_global_limited"), 2);
    assert_eq!(rt.d.proxy.counter("meshguard_ratelimit_global_allowed"), 4);
    assert_eq!(
        rt.d.proxy
            .counter("meshguard_ratelimit_key_missing.api-user"),
        1
    );
    let call = &rt.d.proxy.grpc_calls[0];
    assert_eq!(call.cluster, "rls");
    assert_eq!(call.service, "envoy.service.ratelimit.v3.RateLimitService");
    assert_eq!(call.method, "ShouldRateLimit");
    assert_eq!(call.timeout, Duration::from_millis(50));
}

#[test]
fn on_error_deny_answers_503_when_the_service_fails() {
    let config = global_cases::CONFIG.replace(
        r#""timeout_ms": 50}"#,
        r#""timeout_ms": 50, "on_error": "deny"}"#,
    );
    let mut d = driver(&config, &["rls"]);
    for (status, message) in [(14u32, &b""[..]), (4, b""), (0, &[0x12, 0xff][..])] {
        let req = [
            (":method", "GET"),
            (":path", "/api/x"),
            ("x-user-id", "bob"),
        ];
        let (mut s, _) = d.request(&req, true);
        d.answer_grpc(&mut s, status, message);
        assert_eq!(
            d.proxy.replies.last().unwrap().status,
            503,
            "status {status}"
        );
    }
    // An unknown cluster: refused at dispatch, the same 503.
    let mut d = driver(&config, &[]);
    d.request(
        &[
            (":method", "GET"),
            (":path", "/api/x"),
            ("x-user-id", "bob"),
        ],
        true,
    );
    assert_eq!(d.proxy.replies.last().unwrap().status, 503);
    // ...and allowed by default.
    let mut d = driver(global_cases::CONFIG, &[]);
    let (_, flow) = d.request(
        &[
            (":method", "GET"),
            (":path", "/api/x"),
            ("x-user-id", "bob"),
        ],
        true,
    );
    assert_eq!(flow, Flow::Continue);
    assert!(d.proxy.replies.is_empty());
}
