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

#[test]
fn a_key_that_is_not_utf8_is_missing_not_a_failed_call() {
    // `Entry.value` is a protobuf string: the service would refuse the call
    // and `on_error: allow` would let every global rule pass.
    let mut d = driver(global_cases::CONFIG, &["rls"]);
    d.proxy.request = vec![
        (":method".into(), b"GET".to_vec()),
        (":path".into(), b"/api/items".to_vec()),
        ("x-user-id".into(), vec![0x62, 0xff, 0x62]),
    ];
    let (_, flow) = d.request_as_is(true);
    assert_eq!(flow, Flow::Continue);
    assert!(d.proxy.grpc_calls.is_empty());
    assert_eq!(
        d.proxy.counter("meshguard_ratelimit_key_missing.api-user"),
        1
    );
}

#[test]
fn the_service_cannot_set_framing_envoy_or_identity_headers() {
    let mut d = driver(global_cases::CONFIG, &["rls"]);
    let req = [
        (":method", "GET"),
        (":path", "/api/x"),
        ("x-user-id", "bob"),
    ];
    let (mut s, _) = d.request(&req, true);
    let headers = [
        ("connection", "close"),
        ("content-length", "0"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
        ("x-user-id", "admin"),
        ("x-tenant-plan", "gold"),
    ];
    // RateLimitResponse{overall_code: OK, request_headers_to_add: ...,
    // response_headers_to_add: ...} (fields 1, 4, 3).
    let mut m = vec![0x08, 1];
    for field in [0x22u8, 0x1a] {
        for (k, v) in headers {
            let mut hv = vec![0x0a, k.len() as u8];
            hv.extend_from_slice(k.as_bytes());
            hv.extend_from_slice(&[0x12, v.len() as u8]);
            hv.extend_from_slice(v.as_bytes());
            m.push(field);
            m.push(hv.len() as u8);
            m.extend_from_slice(&hv);
        }
    }
    d.answer_grpc(&mut s, 0, &m);
    assert_eq!(d.proxy.request_header("x-user-id").as_deref(), Some("bob"));
    assert_eq!(
        d.proxy.request_header("x-tenant-plan").as_deref(),
        Some("gold")
    );
    assert!(d.proxy.request_header("connection").is_none());
    assert!(d
        .proxy
        .request_header("x-envoy-upstream-rq-timeout-ms")
        .is_none());
    d.response(&mut s, &[(":status", "200")]);
    assert_eq!(d.proxy.response_header_all("x-tenant-plan"), ["gold"]);
    assert!(d.proxy.response_header_all("connection").is_empty());
    assert!(d.proxy.response_header_all("content-length").is_empty());
}
