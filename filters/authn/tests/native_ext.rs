//! authn's external-auth and HMAC modes natively: the shared case table
//! (ext_cases), the decision cache, callouts answered, failed and timed
//! out by the test, nonces, and configs refused at their JSON path.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod ext_cases;

use std::time::{Duration, UNIX_EPOCH};

use meshguard_authn::stage::Authn;
use meshguard_stage::pipeline::Flow;
use meshguard_stage::testing::{
    capture_logs, run_table, Answer, Driver, FakeProxy, Runtime, TestStream,
};
use serde_json::{json, Value};

const T0: u64 = 1_800_000_000;
const JWKS: &str = include_str!("../../../deploy/local/demo-keys/jwks.json");

fn jwks() -> Value {
    serde_json::from_str(JWKS).unwrap()
}

fn proxy() -> FakeProxy {
    let mut p = FakeProxy::new().with_clusters(&["auth", "auth_down"]);
    p.now = Some(UNIX_EPOCH + Duration::from_secs(T0));
    p
}

fn driver(config: &str) -> Driver<(Authn,)> {
    Driver::with_proxy(config.as_bytes(), proxy()).unwrap()
}

use ext_cases::Reply;

/// What the demo auth service (or Envoy, for a timeout or a dead cluster)
/// answers the last callout.
fn service_answer(d: &Driver<(Authn,)>) -> Answer {
    let call = d.proxy.calls.last().unwrap();
    if call.cluster == "auth_down" {
        return Answer::Failed;
    }
    match ext_cases::auth_service(&call.headers) {
        Some((status, headers, body)) => Answer::Response {
            status,
            headers,
            body: body.into_bytes(),
        },
        // Envoy's async client answers a timed-out call with a local 504.
        None => Answer::Response {
            status: 504,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"upstream request timeout".to_vec(),
        },
    }
}

/// Runs one request (answering callouts like the demo service); returns
/// the upstream's headers or the local reply.
fn exchange(
    d: &mut Driver<(Authn,)>,
    req: &[(String, String)],
    body: &[u8],
) -> (Option<Vec<(String, String)>>, Option<Reply>) {
    let replies = d.proxy.replies.len();
    let pairs: Vec<(&str, &str)> = req.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut s, mut flow) = d.request(&pairs, body.is_empty());
    if s.stream.waiting_on().is_some() {
        let a = service_answer(d);
        d.answer(&mut s, a);
        flow = Flow::Continue;
    }
    if !body.is_empty() && d.proxy.replies.len() == replies {
        flow = d.body(&mut s, body, true);
    }
    if d.proxy.replies.len() > replies {
        let r = d.proxy.replies.last().unwrap().clone();
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k.as_bytes()).into_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let www = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("www-authenticate"))
            .map(|(_, v)| v.clone());
        return (
            None,
            Some((
                r.status,
                www,
                String::from_utf8_lossy(r.body.as_bytes()).into_owned(),
                headers,
            )),
        );
    }
    assert_eq!(flow, Flow::Continue, "request held without a reply");
    d.response(&mut s, &[(":status", "200")]);
    let up = d
        .proxy
        .request
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    (Some(up), None)
}

struct Native {
    d: Driver<(Authn,)>,
}

impl Runtime<ext_cases::Case> for Native {
    fn runtime_name(&self) -> &str {
        "native"
    }
    fn run_case(&mut self, case: &ext_cases::Case) -> Vec<String> {
        let (req, body) = case.request(T0 as i64);
        let (up, reply) = exchange(&mut self.d, &req, &body);
        ext_cases::check(case, up.as_deref(), reply)
    }
}

#[test]
fn case_table() {
    let mut rt = Native {
        d: driver(&ext_cases::config(&jwks())),
    };
    run_table(&mut rt, ext_cases::CASES);
    // Again: allowed decisions now come from the cache, with the same
    // results.
    let calls = rt.d.proxy.calls.len();
    run_table(&mut rt, ext_cases::CASES);
    assert!(rt.d.proxy.calls.len() > calls);
    // Hits reach the proxy's counters with the timer.
    rt.d.tick();
    assert!(rt.d.proxy.counter("meshguard_authn_ext_cache_hit.legacy") >= 4);
}

fn legacy(req: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = vec![
        (":method".into(), "GET".into()),
        (":path".into(), "/legacy/orders?id=1".into()),
        (":authority".into(), "shop.example.com".into()),
    ];
    h.extend(req.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

#[test]
fn the_call_carries_method_prefixed_path_listed_headers_and_timeout() {
    let mut d = driver(&ext_cases::config(&jwks()));
    let req = legacy(&[
        ("authorization", "Bearer alice"),
        ("cookie", "a=b"),
        ("x-secret", "not for the auth service"),
    ]);
    let pairs: Vec<(&str, &str)> = req.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (s, flow) = d.request(&pairs, true);
    assert_eq!(flow, Flow::Pause);
    assert!(s.stream.waiting_on().is_some());
    let call = d.proxy.calls.last().unwrap();
    assert_eq!(call.cluster, "auth");
    assert_eq!(call.timeout, Duration::from_millis(300));
    let get = |n: &str| {
        call.headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get(":method"), ["GET"]);
    assert_eq!(get(":path"), ["/check/legacy/orders?id=1"]);
    assert_eq!(get(":authority"), ["auth"]);
    assert_eq!(get("authorization"), ["Bearer alice"]);
    assert_eq!(get("cookie"), ["a=b"]);
    assert!(get("x-secret").is_empty());
}

#[test]
fn an_allow_is_cached_and_a_hit_makes_no_call() {
    let mut d = driver(&ext_cases::config(&jwks()));
    let req = legacy(&[("authorization", "Bearer alice")]);
    let (up, _) = exchange(&mut d, &req, b"");
    assert!(up.is_some());
    assert_eq!(d.proxy.calls.len(), 1);
    for _ in 0..3 {
        let (up, _) = exchange(&mut d, &req, b"");
        let up = up.unwrap();
        assert!(up.contains(&("x-user-id".into(), "alice".into())));
        assert!(up.contains(&("x-tenant".into(), "acme".into())));
    }
    assert_eq!(d.proxy.calls.len(), 1, "cache hits made calls");
    d.tick();
    assert_eq!(d.proxy.counter("meshguard_authn_ext_cache_hit.legacy"), 3);
    assert_eq!(d.proxy.counter("meshguard_authn_ext_allowed.legacy"), 4);
    // Other credentials: another call.
    exchange(&mut d, &legacy(&[("authorization", "Bearer bob")]), b"");
    assert_eq!(d.proxy.calls.len(), 2);
    // After the TTL (30 s): a call again.
    d.proxy.now = Some(UNIX_EPOCH + Duration::from_secs(T0 + 31));
    exchange(&mut d, &req, b"");
    assert_eq!(d.proxy.calls.len(), 3);
}

#[test]
fn denials_are_not_cached_unless_configured_and_errors_never() {
    let mut d = driver(&ext_cases::config(&jwks()));
    for _ in 0..2 {
        exchange(&mut d, &legacy(&[("authorization", "Bearer blocked")]), b"");
        exchange(&mut d, &legacy(&[("authorization", "Bearer boom")]), b"");
    }
    assert_eq!(d.proxy.calls.len(), 4);
    let mut v: Value = serde_json::from_str(&ext_cases::config(&jwks())).unwrap();
    v["ext_auth"][0]["cache"]["deny_seconds"] = json!(5);
    let mut d = driver(&v.to_string());
    for _ in 0..3 {
        let (_, r) = exchange(&mut d, &legacy(&[("authorization", "Bearer blocked")]), b"");
        let r = r.unwrap();
        assert_eq!(r.0, 403);
        assert_eq!(r.2, "{\"error\": \"forbidden\"}\n");
    }
    assert_eq!(d.proxy.calls.len(), 1, "a cached 403 made calls");
    for _ in 0..2 {
        exchange(&mut d, &legacy(&[("authorization", "Bearer boom")]), b"");
    }
    assert_eq!(d.proxy.calls.len(), 3, "errors must not be cached");
}

#[test]
fn decisions_too_big_to_cache_are_not_cached() {
    let mut d = driver(&ext_cases::config(&jwks()));
    let big = "u".repeat(5000);
    let req = legacy(&[("authorization", &format!("Bearer {big}"))]);
    for _ in 0..2 {
        let (up, _) = exchange(&mut d, &req, b"");
        assert!(up
            .unwrap()
            .contains(&("x-user-id".to_string(), big.clone())));
    }
    assert_eq!(d.proxy.calls.len(), 2, "a 5 KB identity was cached");
}

#[test]
fn requests_without_credentials_are_never_cached() {
    let mut d = driver(&ext_cases::config(&jwks()));
    for _ in 0..3 {
        exchange(&mut d, &legacy(&[]), b"");
    }
    assert_eq!(d.proxy.calls.len(), 3);
}

#[test]
fn per_path_keys_decisions_by_method_and_path() {
    let mut v: Value = serde_json::from_str(&ext_cases::config(&jwks())).unwrap();
    v["ext_auth"][0]["cache"]["per_path"] = json!(true);
    let mut d = driver(&v.to_string());
    let mut req = legacy(&[("authorization", "Bearer alice")]);
    exchange(&mut d, &req, b"");
    exchange(&mut d, &req, b"");
    assert_eq!(d.proxy.calls.len(), 1);
    req[1].1 = "/legacy/admin".into();
    exchange(&mut d, &req, b"");
    assert_eq!(d.proxy.calls.len(), 2);
}

#[test]
fn the_cache_is_shared_by_workers() {
    let config = ext_cases::config(&jwks());
    let mut a = driver(&config);
    let mut b = driver(&config);
    let req = legacy(&[("authorization", "Bearer alice")]);
    exchange(&mut a, &req, b"");
    assert_eq!(a.proxy.calls.len(), 1);
    // Worker b sees worker a's shared data.
    b.proxy.shared = a.proxy.shared.clone();
    let (up, _) = exchange(&mut b, &req, b"");
    assert!(up.unwrap().contains(&("x-user-id".into(), "alice".into())));
    assert!(b.proxy.calls.is_empty());
}

#[test]
fn fail_open_passes_without_identity_and_counts() {
    let mut v: Value = serde_json::from_str(&ext_cases::config(&jwks())).unwrap();
    v["ext_auth"][1]["fail_open"] = json!(true);
    let mut d = driver(&v.to_string());
    let mut req = legacy(&[("authorization", "Bearer alice"), ("x-user-id", "mallory")]);
    req[1].1 = "/down/x".into();
    let ((up, _), logs) = capture_logs(|| exchange(&mut d, &req, b""));
    assert!(
        logs.iter()
            .any(|(l, m)| *l == log::Level::Warn && m.contains("failing open")),
        "{logs:?}"
    );
    let up = up.unwrap();
    assert!(!up.iter().any(|(k, _)| k == "x-user-id"), "{up:?}");
    assert_eq!(d.proxy.counter("meshguard_authn_ext_fail_open.down"), 1);
    assert_eq!(d.proxy.counter("meshguard_authn_ext_error.down"), 1);
}

#[test]
fn only_200_allows_unless_any_2xx() {
    let run = |config: &str| {
        let mut d = driver(config);
        let pairs = legacy(&[("authorization", "Bearer alice")]);
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (mut s, _) = d.request(&pairs, true);
        d.answer(
            &mut s,
            Answer::Response {
                status: 204,
                headers: vec![("x-user-id".into(), "alice".into())],
                body: vec![],
            },
        );
        d.proxy.replies.last().map(|r| r.status)
    };
    let config = ext_cases::config(&jwks());
    assert_eq!(run(&config), Some(204));
    let mut v: Value = serde_json::from_str(&config).unwrap();
    v["ext_auth"][0]["allow_any_2xx"] = json!(true);
    assert_eq!(run(&v.to_string()), None);
}

#[test]
fn an_unknown_cluster_fails_closed_at_once() {
    let mut p = proxy();
    p.clusters.retain(|c| c != "auth");
    let mut d = Driver::<(Authn,)>::with_proxy(ext_cases::config(&jwks()).as_bytes(), p).unwrap();
    let (up, r) = exchange(&mut d, &legacy(&[("authorization", "Bearer alice")]), b"");
    assert!(up.is_none());
    assert_eq!(r.unwrap().0, 503);
}

fn signed_request(now: i64, nonce: Option<&str>) -> Vec<(String, String)> {
    use meshguard_authn::msgsig;
    use meshguard_authn::sf::Bare;
    let mut h: Vec<(String, String)> = vec![
        (":method".into(), "GET".into()),
        (":path".into(), "/signed/x".into()),
        (":authority".into(), "shop.example.com".into()),
    ];
    let mut params = vec![
        ("created".to_string(), Bare::Integer(now)),
        ("keyid".into(), Bare::String("partner-a".into())),
    ];
    if let Some(n) = nonce {
        params.push(("nonce".into(), Bare::String(n.into())));
    }
    let mac = meshguard_authn_crypto::HmacSha256::new(ext_cases::PARTNER_SECRET).unwrap();
    let (i, s) = msgsig::sign(
        &h,
        &mac,
        "sig1",
        &["@method", "@authority", "@path", "@query"],
        &params,
    )
    .unwrap();
    h.push(("signature-input".into(), i));
    h.push(("signature".into(), s));
    h
}

#[test]
fn required_nonces_refuse_replays_within_the_window() {
    let mut v: Value = serde_json::from_str(&ext_cases::config(&jwks())).unwrap();
    v["hmac"][0]["nonce"] = json!({"max_entries": 64});
    let mut d = driver(&v.to_string());
    let now = T0 as i64;
    let (up, _) = exchange(&mut d, &signed_request(now, Some("n-1")), b"");
    assert!(up.is_some());
    let (_, r) = exchange(&mut d, &signed_request(now, Some("n-1")), b"");
    assert_eq!(r.unwrap().0, 401, "a replayed nonce passed");
    let (up, _) = exchange(&mut d, &signed_request(now, Some("n-2")), b"");
    assert!(up.is_some());
    let (_, r) = exchange(&mut d, &signed_request(now, None), b"");
    assert_eq!(r.unwrap().0, 401, "a missing nonce passed");
    assert_eq!(d.proxy.counter("meshguard_authn_denied.sig_replay"), 2);
    // Without the nonce rule, a replay within the window passes (documented).
    let mut d = driver(&ext_cases::config(&jwks()));
    for _ in 0..2 {
        let (up, _) = exchange(&mut d, &signed_request(now, Some("n-1")), b"");
        assert!(up.is_some());
    }
}

#[test]
fn jwt_and_public_rules_never_buffer_the_body() {
    let mut d = driver(&ext_cases::config(&jwks()));
    let req: Vec<(&str, &str)> = vec![
        (":method", "POST"),
        (":path", "/health"),
        (":authority", "shop.example.com"),
    ];
    let (mut s, flow) = d.request(&req, false);
    assert_eq!(flow, Flow::Continue);
    // The body streams on: no pause for a rule that reads none.
    assert_eq!(d.body(&mut s, b"part", false), Flow::Continue);
    let _: &TestStream<(Authn,)> = &s;
}

#[test]
fn bad_configs_name_their_path_and_never_echo_secrets() {
    let base: Value = serde_json::from_str(&ext_cases::config(&jwks())).unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/ext_auth/0/timeout_ms",
            json!(0),
            "$.ext_auth[0].timeout_ms",
        ),
        (
            "/ext_auth/0/path_prefix",
            json!("check"),
            "$.ext_auth[0].path_prefix",
        ),
        (
            "/ext_auth/0/request_headers/0",
            json!("bad header"),
            "$.ext_auth[0].request_headers[0]",
        ),
        (
            "/ext_auth/0/cache",
            json!({"max_entries": 0}),
            "$.ext_auth[0].cache.max_entries",
        ),
        (
            "/ext_auth/0/identity_header",
            json!("x-other"),
            "$.ext_auth[0].identity_header",
        ),
        ("/ext_auth/1/name", json!("legacy"), "$.ext_auth[1].name"),
        (
            "/hmac/0/keys/0/secret",
            json!("c2hvcnQ="),
            "$.hmac[0].keys[0].secret",
        ),
        (
            "/hmac/0/keys/0/secret",
            json!("not base64 !!"),
            "$.hmac[0].keys[0].secret",
        ),
        (
            "/hmac/0/components",
            json!(["@method", "@status"]),
            "$.hmac[0].components[1]",
        ),
        (
            "/hmac/0/window_seconds",
            json!(0),
            "$.hmac[0].window_seconds",
        ),
        (
            "/hmac/0/max_body_bytes",
            json!(0),
            "$.hmac[0].max_body_bytes",
        ),
        ("/hmac/0/label", json!("Sig"), "$.hmac[0].label"),
        (
            "/rules/2/requires/ext_auth",
            json!("nope"),
            "$.rules[2].requires.ext_auth",
        ),
        (
            "/rules/4/requires/hmac",
            json!("nope"),
            "$.rules[4].requires.hmac",
        ),
        ("/ext_auth/0/unknown", json!(1), "$.ext_auth[0]"),
        (
            "/ext_auth/0/response_headers",
            json!((0..33).map(|i| format!("x-h{i}")).collect::<Vec<_>>()),
            "$.ext_auth[0].response_headers",
        ),
        (
            "/hmac/0/keys/0/secret",
            json!(1311768467294899695u64),
            "$.hmac[0].keys[0].secret",
        ),
    ];
    for (pointer, value, path) in cases {
        let mut v = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = v.pointer_mut(parent).unwrap();
        match target {
            Value::Array(a) => a[key.parse::<usize>().unwrap()] = value,
            Value::Object(o) => {
                o.insert(key.to_string(), value);
            }
            _ => panic!("{pointer}"),
        }
        let err = match Driver::<(Authn,)>::with_proxy(v.to_string().as_bytes(), proxy()) {
            Ok(_) => panic!("{pointer}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(path), "{pointer}: {err}");
        assert!(
            !err.contains("c2hvcnQ")
                && !err.contains("not base64")
                && !err.contains("1311768467294899695"),
            "{err}"
        );
    }
}
