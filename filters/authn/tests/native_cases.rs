//! The shared case table (tests/cases) through the authn stage and the
//! pipeline the module runs, on the fake proxy; plus the cache and the
//! key fetch state machine natively.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cases;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshguard_authn::Authn;
use meshguard_stage::pipeline::Flow;
use meshguard_stage::testing::{run_table, Answer, Driver, FakeProxy, Runtime};

const T0: u64 = 1_800_000_000;

fn driver(config: &str) -> Driver<(Authn,)> {
    let mut proxy = FakeProxy::new().with_clusters(&["idp"]);
    proxy.now = Some(UNIX_EPOCH + Duration::from_secs(T0));
    Driver::with_proxy(config.as_bytes(), proxy).unwrap()
}

fn owned(req: &[(String, String)]) -> Vec<(&str, &str)> {
    req.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Upstream headers, or the local reply (status, WWW-Authenticate, body).
type Seen = (
    Option<Vec<(String, String)>>,
    Option<(u16, Option<String>, String)>,
);

/// Runs one request; returns upstream headers or the local reply.
fn exchange(d: &mut Driver<(Authn,)>, req: &[(String, String)]) -> Seen {
    let replies = d.proxy.replies.len();
    let (mut s, flow) = d.request(&owned(req), true);
    if d.proxy.replies.len() > replies {
        let r = d.proxy.replies.last().unwrap().clone();
        let www = r
            .headers
            .iter()
            .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(b"www-authenticate"))
            .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return (
            None,
            Some((
                r.status,
                www,
                String::from_utf8_lossy(r.body.as_bytes()).into_owned(),
            )),
        );
    }
    assert_eq!(flow, Flow::Continue, "request paused without a reply");
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

impl Runtime<cases::Case> for Native {
    fn runtime_name(&self) -> &str {
        "native"
    }
    fn run_case(&mut self, case: &cases::Case) -> Vec<String> {
        let req = case.request(T0 as i64);
        let (up, reply) = exchange(&mut self.d, &req);
        cases::check(case, up.as_deref(), reply)
    }
}

#[test]
fn case_table() {
    let mut rt = Native {
        d: driver(&cases::config()),
    };
    run_table(&mut rt, cases::CASES);
    // Twice: the second pass is served from the cache and must agree.
    run_table(&mut rt, cases::CASES);
    // Hits and allowed requests reach the proxy with the timer.
    rt.d.tick();
    assert!(rt.d.proxy.counter("meshguard_authn_cache_hit") > 0);
    assert!(rt.d.proxy.counter("meshguard_authn_allowed") > 0);
}

#[test]
fn cache_hit_skips_signature_and_respects_exp() {
    let mut d = driver(&cases::config());
    let req = cases::bearer_request(cases::Tok::Rs256, T0);
    assert!(exchange(&mut d, &req).0.is_some());
    assert_eq!(d.proxy.counter("meshguard_authn_cache_miss"), 1);
    assert!(exchange(&mut d, &req).0.is_some());
    d.tick();
    assert_eq!(d.proxy.counter("meshguard_authn_cache_hit"), 1);
    assert_eq!(d.proxy.counter("meshguard_authn_allowed"), 2);
    // Past exp (+60 s skew): the cached entry is not served.
    d.proxy.now = Some(UNIX_EPOCH + Duration::from_secs(T0 + 3600 + 61));
    let (_, reply) = exchange(&mut d, &req);
    assert_eq!(reply.unwrap().0, 401);
    // 401s are counted by the timer, like hits.
    assert_eq!(d.proxy.counter("meshguard_authn_denied.expired"), 0);
    d.tick();
    assert_eq!(d.proxy.counter("meshguard_authn_denied.expired"), 1);
}

/// Junk is refused before the shared cache: a token naming a key that
/// cannot verify its `alg`, an unknown kid, a bad header — none is looked
/// up (no miss counted), none is verified.
#[test]
fn junk_never_reaches_the_shared_cache() {
    let mut d = driver(&cases::config());
    for tok in [
        cases::Tok::SignedHeader(r#"{"alg":"RS256","kid":"demo-ec"}"#),
        cases::Tok::UnknownKid,
        cases::Tok::SignedHeader(r#"{"alg":"RS256","kid":"demo-rsa","crit":null}"#),
        cases::Tok::BadJson,
    ] {
        let t = cases::mint(tok, T0 as i64);
        let req = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), "/api".to_string()),
            (":authority".to_string(), "shop.example.com".to_string()),
            ("authorization".to_string(), format!("Bearer {t}")),
        ];
        let (_, reply) = exchange(&mut d, &req);
        assert_eq!(reply.unwrap().0, 401, "{tok:?}");
    }
    assert_eq!(d.proxy.counter("meshguard_authn_cache_miss"), 0);
    assert!(
        d.proxy
            .shared
            .keys()
            .all(|k| !k.starts_with("meshguard.authn.c.")),
        "{:?}",
        d.proxy.shared.keys()
    );
}

/// Workers starting together can each write their own random cache key
/// (shared data has no create-if-absent; the last write wins). One that
/// kept an earlier key would miss every entry the others tag: its timer
/// brings it to the shared key, and it forgets what it tagged before.
#[test]
fn a_worker_with_a_stale_cache_key_adopts_the_shared_one() {
    let mut d = driver(&cases::config());
    let req = cases::bearer_request(cases::Tok::Rs256, T0);
    assert!(exchange(&mut d, &req).0.is_some());
    assert_eq!(d.proxy.counter("meshguard_authn_cache_miss"), 1);
    // Another worker's key won the race.
    let (mine, cas) = d.proxy.shared["meshguard.authn.hashkey"].clone();
    let theirs: Vec<u8> = mine.iter().map(|b| b ^ 0xff).collect();
    d.proxy
        .shared
        .insert("meshguard.authn.hashkey".into(), (theirs, cas + 1));
    // Until the timer runs, this worker still answers from its own table.
    assert!(exchange(&mut d, &req).0.is_some());
    assert_eq!(d.proxy.counter("meshguard_authn_cache_miss"), 1);
    d.tick();
    // Now it tags with the shared key: its old entry is not found under it.
    assert!(exchange(&mut d, &req).0.is_some());
    assert_eq!(d.proxy.counter("meshguard_authn_cache_miss"), 2);
    assert!(exchange(&mut d, &req).0.is_some());
    assert_eq!(d.proxy.counter("meshguard_authn_cache_miss"), 2);
}

/// The filter alone (no normalizing proxy in front): a path the upstream
/// could read as another is a 400 before any rule, with a valid token too.
#[test]
fn paths_not_in_normal_form_are_400_before_any_rule() {
    let mut d = driver(&cases::config());
    let token = cases::bearer_request(cases::Tok::Rs256, T0)
        .into_iter()
        .find(|(k, _)| k == "authorization")
        .unwrap();
    for (i, path) in [
        "/public/../api/items",
        "/public/%2e%2e/api/items",
        "/public%2f..%2fapi",
        "//api/items",
        "/api/./items",
        "/public/..;/api/items",
        "/%61pi/items",
        "/public#/../api",
    ]
    .iter()
    .enumerate()
    {
        let req = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), "shop.example.com".to_string()),
            token.clone(),
        ];
        let (up, reply) = exchange(&mut d, &req);
        assert!(up.is_none(), "{path} reached the upstream");
        let (status, www, body) = reply.unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(www.is_none());
        assert!(body.contains("invalid_request"), "{body}");
        assert_eq!(d.proxy.counter("meshguard_authn_denied.path"), i as i64 + 1);
    }
}

/// The identity reaches filter state for modules in other VMs (the
/// accesslog) only when `identity_filter_state` is true (it costs a host
/// call per request); the identity header is set either way.
#[test]
fn identity_filter_state_is_written_only_when_asked() {
    let key = vec!["meshguard.identity".to_string()];
    let req = cases::bearer_request(cases::Tok::Rs256, T0);
    for (flag, want) in [(None, false), (Some(true), true), (Some(false), false)] {
        let mut config: serde_json::Value = serde_json::from_str(&cases::config()).unwrap();
        if let Some(f) = flag {
            config["identity_filter_state"] = serde_json::Value::Bool(f);
        }
        let mut d = driver(&config.to_string());
        // Twice: the second request is a cache hit, the path that matters.
        for _ in 0..2 {
            d.proxy.properties.clear();
            let (up, _) = exchange(&mut d, &req);
            let up = up.expect("allowed");
            assert!(up.iter().any(|(k, v)| k == "x-user-id" && v == "alice"));
            let state = d.proxy.properties.get(&key).cloned();
            assert_eq!(state.is_some(), want, "identity_filter_state {flag:?}");
            if let Some(state) = state {
                let pairs = meshguard_common::contract::decode_state_pairs(&state).unwrap();
                assert!(
                    pairs.iter().any(|(k, v)| k == "subject" && v == "alice"),
                    "{pairs:?}"
                );
            }
        }
    }
}

#[test]
fn cache_stays_bounded() {
    let cfg = cases::config().replace("\"rules\"", "\"cache\":{\"max_entries\":8},\"rules\"");
    let mut d = driver(&cfg);
    for i in 0..40u64 {
        let req = cases::bearer_request(cases::Tok::Rs256, T0 - i);
        assert!(exchange(&mut d, &req).0.is_some());
    }
    let slots = d
        .proxy
        .shared
        .keys()
        .filter(|k| k.starts_with("meshguard.authn.c."))
        .count();
    assert!(slots <= 8, "{slots} cache keys");
    assert!(d.proxy.counter("meshguard_authn_cache_evicted") > 0);
}

fn jwks_answer(doc: &str) -> Answer {
    Answer::Response {
        status: 200,
        headers: vec![],
        body: doc.as_bytes().to_vec(),
    }
}

#[test]
fn first_request_fetches_keys_and_waits() {
    let mut d = driver(&cases::remote_config());
    let req = cases::bearer_request(cases::Tok::Rs256, T0);
    let (mut s, flow) = d.request(&owned(&req), true);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(d.proxy.calls.len(), 1);
    assert_eq!(d.proxy.calls[0].cluster, "idp");
    d.answer(&mut s, jwks_answer(cases::JWKS));
    assert_eq!(d.proxy.resumed, 1);
    assert_eq!(
        d.proxy.request_header("x-user-id").as_deref(),
        Some("alice")
    );
    assert_eq!(d.proxy.counter("meshguard_authn_jwks_fetch_ok.demo"), 1);
    assert_eq!(d.proxy.counter("meshguard_authn_jwks_keys.demo"), 2);
}

#[test]
fn failed_first_fetch_is_503_never_a_hang() {
    let mut d = driver(&cases::remote_config());
    let req = cases::bearer_request(cases::Tok::Rs256, T0);
    let (mut s, _) = d.request(&owned(&req), true);
    d.answer(&mut s, Answer::Failed);
    let r = d.proxy.replies.last().unwrap();
    assert_eq!(r.status, 503);
    // Within the backoff, the next request does not fetch again: 503 now.
    let calls = d.proxy.calls.len();
    let (r, _) = (exchange(&mut d, &req).1.unwrap(), ());
    assert_eq!(r.0, 503);
    assert_eq!(d.proxy.calls.len(), calls);
}

#[test]
fn unknown_kid_refetches_at_most_once_per_interval_and_garbage_keeps_old_keys() {
    let mut d = driver(&cases::remote_config());
    let req = cases::bearer_request(cases::Tok::Rs256, T0);
    let (mut s, _) = d.request(&owned(&req), true);
    d.answer(&mut s, jwks_answer(cases::JWKS));
    // A junk kid right after the fetch: no refetch (min interval 30 s),
    // and within a worker's quiet period (100 ms, the clock stands still
    // here) no shared-data read either after the first look.
    let junk = cases::bearer_request(cases::Tok::UnknownKid, T0);
    let calls = d.proxy.calls.len();
    assert_eq!(exchange(&mut d, &junk).1.unwrap().0, 401);
    let reads = d.proxy.shared_reads.get();
    for _ in 0..50 {
        assert_eq!(exchange(&mut d, &junk).1.unwrap().0, 401);
    }
    assert_eq!(d.proxy.calls.len(), calls, "junk kids caused fetches");
    assert_eq!(
        d.proxy.shared_reads.get(),
        reads,
        "junk kids read shared data"
    );
    // After the quiet period a worker looks again (once).
    d.proxy.now = Some(UNIX_EPOCH + Duration::from_millis(T0 * 1000 + 200));
    assert_eq!(exchange(&mut d, &junk).1.unwrap().0, 401);
    assert!(d.proxy.shared_reads.get() > reads);
    assert_eq!(d.proxy.calls.len(), calls);
    // 31 s later an unknown kid may refetch; the server returns garbage.
    d.proxy.now = Some(UNIX_EPOCH + Duration::from_secs(T0 + 31));
    let (mut s, flow) = d.request(
        &owned(&cases::bearer_request(cases::Tok::UnknownKid, T0 + 31)),
        true,
    );
    assert_eq!(flow, Flow::Pause);
    d.answer(&mut s, jwks_answer("{\"keys\": 5}"));
    assert_eq!(d.proxy.replies.last().unwrap().status, 401);
    assert_eq!(d.proxy.counter("meshguard_authn_jwks_fetch_failed.demo"), 1);
    // The old keys still verify (a fresh token: not from the cache).
    let fresh = cases::bearer_request(cases::Tok::Es256, T0 + 31);
    assert!(exchange(&mut d, &fresh).0.is_some());
}

#[test]
fn rotation_new_kid_is_fetched_on_demand() {
    let mut d = driver(&cases::remote_config());
    let (mut s, _) = d.request(&owned(&cases::bearer_request(cases::Tok::Rs256, T0)), true);
    d.answer(&mut s, jwks_answer(cases::JWKS));
    d.proxy.now = Some(UNIX_EPOCH + Duration::from_secs(T0 + 40));
    // A token from the next key: kid unknown → one fetch, then verified.
    let next = rotated_token(T0 + 40);
    let (mut s, flow) = d.request(&owned(&next), true);
    assert_eq!(flow, Flow::Pause);
    let both = merged_jwks();
    d.answer(&mut s, jwks_answer(&both));
    assert_eq!(
        d.proxy.request_header("x-user-id").as_deref(),
        Some("carol")
    );
}

pub fn rotated_token(now: u64) -> Vec<(String, String)> {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("demo-rsa-next".into());
    let c =
        serde_json::json!({"iss": cases::ISSUER, "aud": "shop", "sub": "carol", "exp": now + 600});
    let k = jsonwebtoken::EncodingKey::from_rsa_pem(cases::NEXT_PEM.as_bytes()).unwrap();
    let t = jsonwebtoken::encode(&h, &c, &k).unwrap();
    vec![
        (":method".into(), "GET".into()),
        (":path".into(), "/api".into()),
        (":authority".into(), "shop.example.com".into()),
        ("authorization".into(), format!("Bearer {t}")),
    ]
}

pub fn merged_jwks() -> String {
    let mut a: serde_json::Value = serde_json::from_str(cases::JWKS).unwrap();
    let b: serde_json::Value = serde_json::from_str(include_str!(
        "../../../deploy/local/demo-keys/jwks-next.json"
    ))
    .unwrap();
    a["keys"]
        .as_array_mut()
        .unwrap()
        .extend(b["keys"].as_array().unwrap().iter().cloned());
    a.to_string()
}

#[test]
fn timer_refreshes_keys_after_ttl() {
    let mut d = driver(&cases::remote_config());
    d.tick();
    assert_eq!(d.proxy.calls.len(), 1, "first tick fetches");
    // Answer the root callout.
    let token = d.proxy.calls[0].token;
    d.answer_root(token, jwks_answer(cases::JWKS));
    assert_eq!(d.proxy.counter("meshguard_authn_jwks_fetch_ok.demo"), 1);
    d.tick();
    assert_eq!(d.proxy.calls.len(), 1, "fresh keys: no fetch");
    d.proxy.now = Some(UNIX_EPOCH + Duration::from_secs(T0 + 61));
    d.tick();
    assert_eq!(d.proxy.calls.len(), 2, "stale keys: refresh");
    let _ = SystemTime::now();
}

#[test]
fn bad_configs_name_their_path() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"providers":[],"rules":[{"requires":{"any":["x"]}}]}"#,
            "$.providers",
        ),
        (
            r#"{"providers":[{"name":"a","algorithms":["none"],"jwks":{"inline":{"keys":[]}}}],"rules":[]}"#,
            "$.providers[0].algorithms[0]",
        ),
        (
            r#"{"providers":[{"name":"a","algorithms":["RS256","HS256"],"jwks":{"remote":{"cluster":"c","path":"/j"}}}],"rules":[{"requires":"public"}]}"#,
            "$.providers[0].algorithms",
        ),
        (
            r#"{"providers":[{"name":"a","algorithms":["RS256"],"jwks":{}}],"rules":[{"requires":"public"}]}"#,
            "$.providers[0].jwks",
        ),
        (
            r#"{"providers":[{"name":"a","algorithms":["RS256"],"jwks":{"remote":{"cluster":"c","path":"/j"}}}],"rules":[{"requires":{"any":["b"]}}]}"#,
            "$.rules[0].requires.any[0]",
        ),
        (
            r#"{"providers":[{"name":"a","algorithms":["RS256"],"jwks":{"remote":{"cluster":"c","path":"/j"}}}],"rules":[{"match":{"path":{"regex":"("}},"requires":"public"}]}"#,
            "$.rules[0].match.path.regex",
        ),
        (
            r#"{"providers":[{"name":"a","algorithms":["RS256"],"jwks":{"remote":{"cluster":"c","path":"/j"}},"clock_skew_seconds":999}],"rules":[{"requires":"public"}]}"#,
            "$.providers[0].clock_skew_seconds",
        ),
        (
            r#"{"providers":[{"name":"a","algorithms":["RS256"],"jwks":{"remote":{"cluster":"c","path":"/j"}},"wat":1}],"rules":[{"requires":"public"}]}"#,
            "$.providers[0].wat",
        ),
    ];
    for (cfg, path) in cases {
        let err = match Driver::<(Authn,)>::new(cfg.as_bytes()) {
            Ok(_) => panic!("accepted: {cfg}"),
            Err(e) => e,
        };
        assert_eq!(err.path, *path, "{cfg}: {}", err.message);
    }
}

#[test]
fn weak_inline_rsa_key_is_a_config_error() {
    // A 1024-bit modulus (any odd number of that size will do for the check).
    let n = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        [0xC5u8; 128],
    );
    let cfg = format!(
        r#"{{"providers":[{{"name":"a","algorithms":["RS256"],"jwks":{{"inline":{{"keys":[{{"kty":"RSA","kid":"w","n":"{n}","e":"AQAB"}}]}}}}}}],"rules":[{{"requires":{{"any":["a"]}}}}]}}"#
    );
    let err = match Driver::<(Authn,)>::new(cfg.as_bytes()) {
        Ok(_) => panic!("accepted a 1024-bit key"),
        Err(e) => e,
    };
    assert_eq!(err.path, "$.providers[0].jwks.inline.keys[0]");
    assert!(err.message.contains("2048"), "{}", err.message);
}

#[test]
fn fetched_weak_rsa_keys_are_skipped_and_counted() {
    let mut d = driver(&cases::remote_config());
    let n = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        [0xC5u8; 128],
    );
    let mut doc: serde_json::Value = serde_json::from_str(cases::JWKS).unwrap();
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"kty": "RSA", "kid": "weak", "n": n, "e": "AQAB"}));
    let (mut s, _) = d.request(&owned(&cases::bearer_request(cases::Tok::Rs256, T0)), true);
    d.answer(&mut s, jwks_answer(&doc.to_string()));
    assert_eq!(
        d.proxy.request_header("x-user-id").as_deref(),
        Some("alice")
    );
    assert_eq!(
        d.proxy
            .counter("meshguard_authn_jwks_keys_skipped_weak.demo"),
        1
    );
    assert_eq!(d.proxy.counter("meshguard_authn_jwks_keys.demo"), 2);
}

#[test]
fn all_of_needs_every_provider_and_payload_header_carries_the_payload() {
    let mut v: serde_json::Value = serde_json::from_str(&cases::config()).unwrap();
    v["providers"][0]["payload_header"] = serde_json::json!("x-jwt-payload");
    v["rules"] = serde_json::json!([{"requires": {"all": ["demo", "internal"]}}]);
    let mut d = driver(&v.to_string());
    let user = cases::mint(cases::Tok::Rs256, T0 as i64);
    let svc = cases::mint(cases::Tok::Hs256Internal, T0 as i64);
    let both: Vec<(String, String)> = vec![
        (":method".into(), "GET".into()),
        (":path".into(), "/x".into()),
        (":authority".into(), "shop.example.com".into()),
        ("authorization".into(), format!("Bearer {user}")),
        ("x-service-token".into(), format!("Token {svc}")),
    ];
    let (up, reply) = exchange(&mut d, &both);
    let up = up.unwrap_or_else(|| panic!("denied: {reply:?}"));
    let get = |n: &str| up.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("x-user-id").as_deref(), Some("alice"));
    assert_eq!(get("x-service").as_deref(), Some("billing"));
    assert_eq!(get("x-jwt-payload").as_deref(), user.split('.').nth(1));
    // Only one of the two: 401.
    let one: Vec<(String, String)> = both.iter().take(4).cloned().collect();
    let (_, reply) = exchange(&mut d, &one);
    assert_eq!(reply.unwrap().0, 401);
}

#[test]
fn the_timer_empties_expired_cache_slots() {
    let mut d = driver(&cases::config());
    for i in 0..5 {
        let req = cases::bearer_request(cases::Tok::Rs256, T0 - i);
        assert!(exchange(&mut d, &req).0.is_some());
    }
    let live = |d: &Driver<(Authn,)>| {
        d.proxy
            .shared
            .iter()
            .filter(|(k, (v, _))| k.starts_with("meshguard.authn.c.") && !v.is_empty())
            .count()
    };
    assert_eq!(live(&d), 5);
    d.tick();
    assert_eq!(live(&d), 5, "nothing expired yet");
    // exp is now + 3600 for every token; past exp and the largest skew.
    for i in 0..(10_000 / 256 + 1) {
        // The timer runs once a second: advance the clock with it.
        d.proxy.now = Some(UNIX_EPOCH + Duration::from_secs(T0 + 3600 + 301 + i));
        d.tick();
    }
    assert_eq!(live(&d), 0);
    assert_eq!(d.proxy.counter("meshguard_authn_cache_expired_removed"), 5);
}

#[test]
fn repeated_authorization_headers_joined_by_envoy_are_each_read() {
    let mut d = driver(&cases::config());
    let a = cases::mint(cases::Tok::Rs256, T0 as i64);
    let b = cases::mint(cases::Tok::OtherUser, T0 as i64);
    let req = |v: String| -> Vec<(String, String)> {
        vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/api".into()),
            (":authority".into(), "shop.example.com".into()),
            ("authorization".into(), v),
        ]
    };
    // The same token twice (Envoy's `,` join of two headers): fine.
    let (up, reply) = exchange(&mut d, &req(format!("Bearer {a},Bearer {a}")));
    assert!(up.is_some(), "{reply:?}");
    // Two different tokens: 401, counted as ambiguous.
    let (_, reply) = exchange(&mut d, &req(format!("Bearer {a}, Bearer {b}")));
    assert_eq!(reply.unwrap().0, 401);
    d.tick();
    assert_eq!(d.proxy.counter("meshguard_authn_denied.ambiguous"), 1);
}
