//! The shared case table (tests/cases) run natively through the stage and
//! the pipeline the module runs, on the fake proxy with a test clock; plus
//! the native-only checks: key count under 50 000 keys, metrics, sweep.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cases;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshguard_common::contract::RATE_LIMIT_STATE;
use meshguard_ratelimit::RateLimit;
use meshguard_stage::pipeline::Flow;
use meshguard_stage::testing::{capture_logs, run_table, Driver, FakeProxy, Runtime};

use cases::{check, Case, Step};

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn driver(config: &str) -> Driver<(RateLimit,)> {
    let mut proxy = FakeProxy::new();
    proxy.now = Some(start());
    Driver::with_proxy(config.as_bytes(), proxy).unwrap()
}

/// Sends one request; returns (status, response headers, filter state).
fn send(
    d: &mut Driver<(RateLimit,)>,
    headers: &[(&str, &str)],
    source: &str,
) -> (u16, Vec<(String, String)>, Option<String>) {
    d.proxy.properties.insert(
        vec!["source".into(), "address".into()],
        source.as_bytes().to_vec(),
    );
    d.proxy
        .properties
        .remove(&vec![RATE_LIMIT_STATE.to_string()]);
    let replies = d.proxy.replies.len();
    let (mut s, flow) = d.request(headers, true);
    let state = d
        .proxy
        .properties
        .get(&vec![RATE_LIMIT_STATE.to_string()])
        .map(|v| String::from_utf8_lossy(v).into_owned());
    if flow == Flow::Pause {
        let r = d
            .proxy
            .replies
            .get(replies)
            .cloned()
            .expect("a local reply");
        let headers = r
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k.as_bytes()).into_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        return (r.status, headers, state);
    }
    d.response(&mut s, &[(":status", "200")]);
    let headers = d
        .proxy
        .response
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    (200, headers, state)
}

struct Native;

impl Runtime<Case> for Native {
    fn runtime_name(&self) -> &str {
        "native"
    }

    fn run_case(&mut self, case: &Case) -> Vec<String> {
        let mut d = driver(case.config);
        let mut problems = Vec::new();
        for (i, step) in case.steps.iter().enumerate() {
            let (n, headers, source, want) = match step {
                Step::Wait(ms) => {
                    d.proxy.now = d.proxy.now.map(|t| t + Duration::from_millis(*ms));
                    continue;
                }
                Step::Send(h, s, w) => (1, *h, *s, w),
                Step::Repeat(n, h, s, w) => (*n, *h, *s, w),
            };
            for k in 0..n {
                let (status, got, state) = send(&mut d, headers, source);
                for p in check(want, status, &got, state.as_deref()) {
                    problems.push(format!("step {i} (#{k}): {p}"));
                }
            }
        }
        problems
    }
}

#[test]
fn case_table() {
    run_table(&mut Native, cases::CASES);
}

const ONE_RULE: &str = r#"{"rules": [{"name": "ip", "key": ["client_ip"],
    "limit": {"requests": 1, "per": "second", "burst": 2}}], "max_keys": 1000}"#;

/// 50 000 distinct clients, one every millisecond, 1 000 slots: the
/// shared-data key count stops at 1 000 and stays there; the buckets gauge
/// never exceeds it; evictions are counted; admissions stay within what
/// 1 000 buckets can give (evicted keys inherit their slot's tokens); the
/// sweep empties the buckets once they are full again.
#[test]
fn key_count_stays_flat_under_50k_clients() {
    let mut d = driver(ONE_RULE);
    let mut counts = Vec::new();
    let mut admitted = 0u64;
    for i in 0..50_000u32 {
        let ip = format!("10.{}.{}.{}:1234", i >> 16, (i >> 8) & 255, i & 255);
        if send(&mut d, &[(":path", "/")], &ip).0 == 200 {
            admitted += 1;
        }
        d.proxy.now = d.proxy.now.map(|t| t + Duration::from_millis(1));
        if i % 10_000 == 9_999 {
            counts.push(d.proxy.shared.len());
            let live = d.proxy.counter("meshguard_ratelimit_buckets");
            assert!(live > 0 && live <= 1000, "live buckets {live}");
        }
    }
    assert_eq!(
        counts,
        vec![1000; 5],
        "shared-data keys after each 10 000 clients"
    );
    // 1 000 buckets of burst 2 refilling 1/s for 50 s.
    assert!(admitted <= 1000 * 2 + 1000 * 50, "admitted {admitted}");
    // ~50 clients share each slot, one request per slot per second on
    // average against a refill of 1/s: collisions refuse some first
    // requests (the inherited-tokens trade-off), most pass.
    assert!(admitted > 30_000, "admitted {admitted}");
    println!("50 000 clients, 1 000 slots: admitted {admitted}");
    let evictions = d.proxy.counter("meshguard_ratelimit_evictions");
    assert!(evictions > 45_000, "evictions {evictions}");
    d.tick();
    assert_eq!(
        d.proxy.counter("meshguard_ratelimit_allowed.ip"),
        admitted as i64
    );
    // Two seconds later every bucket is full again: the sweep empties them
    // all, and the key count does not move.
    d.proxy.now = d.proxy.now.map(|t| t + Duration::from_secs(2));
    d.tick();
    assert_eq!(d.proxy.counter("meshguard_ratelimit_buckets"), 0);
    assert_eq!(d.proxy.shared.len(), 1000);
    assert!(d.proxy.shared.values().all(|(v, _)| v.is_empty()));
}

/// A key colliding with a busy key takes its slot with the tokens left:
/// alternating two keys in one slot never gets either more than its limit.
#[test]
fn eviction_never_hands_out_a_fresh_bucket() {
    let config = r#"{"rules": [{"name": "ip", "key": ["client_ip"],
        "limit": {"requests": 1, "per": "hour", "burst": 3}}], "max_keys": 1}"#;
    let mut d = driver(config);
    let mut admitted = 0;
    for i in 0..100 {
        let ip = if i % 2 == 0 {
            "10.0.0.1:1"
        } else {
            "10.0.0.2:1"
        };
        if send(&mut d, &[(":path", "/")], ip).0 == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "one slot, burst 3");
    assert_eq!(d.proxy.shared.len(), 1);
    assert!(d.proxy.counter("meshguard_ratelimit_evictions") >= 98);
}

/// A shadow rule on trial in front of an enforcing rule: under `first` the
/// enforcing rule still applies, the shadow rule never refuses (not even
/// with `on_error: deny`) and its numbers are not the ones shown.
#[test]
fn a_shadow_rule_does_not_switch_off_the_rules_after_it() {
    let config = r#"{"apply": "first", "on_error": "deny",
        "response_headers": {"on_allowed": true},
        "rules": [
        {"name": "trial", "key": ["client_ip"], "limit": {"requests": 1, "per": "hour"}, "shadow": true},
        {"name": "enforced", "key": ["client_ip"], "limit": {"requests": 2, "per": "hour"}}]}"#;
    let mut d = driver(config);
    let statuses: Vec<u16> = (0..4)
        .map(|_| send(&mut d, &[(":path", "/")], "10.0.0.1:1").0)
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
    d.tick();
    assert_eq!(
        d.proxy.counter("meshguard_ratelimit_shadow_limited.trial"),
        3
    );
    assert_eq!(d.proxy.counter("meshguard_ratelimit_limited.enforced"), 2);
}

#[test]
fn metrics_are_batched_until_the_tick() {
    let mut d = driver(cases::CONFIG);
    for _ in 0..3 {
        send(
            &mut d,
            &[(":method", "POST"), (":path", "/login")],
            "10.0.0.1:1",
        );
    }
    for _ in 0..2 {
        send(&mut d, &[(":path", "/shadow")], "10.0.0.1:1");
    }
    send(&mut d, &[(":path", "/api")], "10.0.0.1:1");
    assert_eq!(d.proxy.counter("meshguard_ratelimit_allowed.login"), 0);
    let ((), logs) = capture_logs(|| d.tick());
    assert_eq!(d.proxy.counter("meshguard_ratelimit_allowed.login"), 2);
    assert_eq!(d.proxy.counter("meshguard_ratelimit_limited.login"), 1);
    assert_eq!(d.proxy.counter("meshguard_ratelimit_allowed.shadow"), 1);
    assert_eq!(
        d.proxy.counter("meshguard_ratelimit_shadow_limited.shadow"),
        1
    );
    assert_eq!(d.proxy.counter("meshguard_ratelimit_key_missing.api"), 1);
    assert_eq!(d.proxy.counter("meshguard_ratelimit_buckets"), 2);
    assert!(
        logs.iter()
            .any(|(_, l)| l.contains("shadow rule `shadow` would have limited 1 request(s)")),
        "{logs:?}"
    );
    d.tick();
    assert_eq!(d.proxy.counter("meshguard_ratelimit_allowed.login"), 2);
}

/// Hostile input: 64 KB and non-UTF-8 values in every header the filter
/// reads, too many hops, no source address. Never a panic; the huge key
/// is stored as a hash, so a slot stays small.
#[test]
fn hostile_input_never_panics_and_keeps_values_small() {
    let config = r#"{"rules": [
        {"name": "ip", "match": {"paths": [{"prefix": "/ip"}]}, "key": ["client_ip"], "limit": {"requests": 1, "per": "hour"}},
        {"name": "all", "key": ["header", "path", {"header": "x-k"}], "limit": {"requests": 100, "per": "hour"}}
    ], "client_ip": {"trusted_hops": 3}}"#;
    let mut d = driver(config);
    let big = vec![b'z'; 64 * 1024];
    let values: Vec<Vec<u8>> = vec![
        big.clone(),
        vec![0xff, 0xfe, 0x80],
        b"1.2.3.4, , ,,,".to_vec(),
        [b"::1,".repeat(10_000), b"[::1]:99".to_vec()].concat(),
        b"\"\\,;=".to_vec(),
    ];
    for v in &values {
        for name in ["x-forwarded-for", "x-user-id", "x-k", ":path", ":authority"] {
            d.proxy.request = vec![
                (":method".into(), b"GET".to_vec()),
                (":path".into(), b"/ip/x".to_vec()),
                (name.into(), v.clone()),
            ];
            d.proxy.properties.clear();
            let (_, flow) = d.request_as_is(true);
            let _ = flow;
        }
    }
    assert!(d.proxy.shared.values().all(|(v, _)| v.len() < 400));
    // Without any source address, the client_ip rule is skipped.
    d.proxy.properties.clear();
    d.proxy.request = vec![(":path".into(), b"/ip".to_vec())];
    for _ in 0..3 {
        let (_, flow) = d.request_as_is(true);
        assert_eq!(flow, Flow::Continue);
    }
    assert!(d.proxy.counter("meshguard_ratelimit_key_missing.ip") >= 3);
}

/// A slot holding a value that is not a bucket (another writer, an older
/// layout) is taken over as a free slot.
#[test]
fn a_foreign_value_in_a_slot_is_replaced() {
    let config = r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "hour"}}]}"#;
    let mut d = driver(config);
    d.proxy
        .shared
        .insert("meshguard.rl.0.0".into(), (b"garbage".to_vec(), 7));
    assert_eq!(send(&mut d, &[(":path", "/")], "10.0.0.1:1").0, 200);
    assert_eq!(send(&mut d, &[(":path", "/")], "10.0.0.1:1").0, 429);
    assert_eq!(d.proxy.counter("meshguard_ratelimit_buckets"), 1);
}

/// Headers the proxy will not hand over: `on_error: allow` lets the request
/// through, `deny` answers 503.
#[test]
fn unreadable_headers_follow_on_error() {
    let config = |mode: &str| {
        format!(
            r#"{{"rules": [{{"name": "r", "limit": {{"requests": 1, "per": "hour"}}}}], "on_error": "{mode}"}}"#
        )
    };
    let mut d = driver(&config("deny"));
    d.proxy.unreadable_request = true;
    let (_, flow) = d.request(&[(":path", "/")], true);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(d.proxy.replies[0].status, 503);
    let mut d = driver(&config("allow"));
    d.proxy.unreadable_request = true;
    let (_, flow) = d.request(&[(":path", "/")], true);
    assert_eq!(flow, Flow::Continue);
    assert!(d.proxy.replies.is_empty());
}

#[test]
fn bad_config_is_refused_with_its_path() {
    let err = Driver::<(RateLimit,)>::new(
        br#"{"rules": [{"name": "r", "limit": {"requests": 0, "per": "hour"}}]}"#,
    )
    .err()
    .unwrap();
    assert_eq!(err.path, "$.rules[0].limit.requests");
    let err = Driver::<(RateLimit,)>::new(br#"{"rules": [], "x": 1}"#)
        .err()
        .unwrap();
    assert_eq!(err.path, "$.x");
}

/// More hot keys than a worker holds batches for: the keys that cannot be
/// held take one token at a time, so every key still gets exactly its
/// burst (a batch taken and then dropped would cost a key 31 tokens).
#[test]
fn keys_past_the_batch_list_lose_no_tokens() {
    let mut d = driver(
        r#"{"worker_batch": 32, "rules": [{"name": "k", "key": ["header"], "limit": {"requests": 1, "per": "hour", "burst": 100}}]}"#,
    );
    const KEYS: usize = 80;
    let mut admitted = [0u32; KEYS];
    for _round in 0..120 {
        for (k, n) in admitted.iter_mut().enumerate() {
            let user = format!("user-{k}");
            let (status, _, _) = send(
                &mut d,
                &[(":path", "/"), ("x-user-id", &user)],
                "10.0.0.1:1",
            );
            if status == 200 {
                *n += 1;
            } else {
                assert_eq!(status, 429);
            }
        }
    }
    assert!(admitted.iter().all(|n| *n == 100), "{admitted:?}");
}

/// Without rate headers on allowed responses and without a rate-limit
/// service, the response hook has nothing to do and the pipeline skips it
/// (`Needs::no_response_hook`): no response edit at all. With
/// `on_allowed`, the hook runs and adds the headers.
#[test]
fn the_response_hook_runs_only_when_it_has_headers_to_add() {
    let rule = r#""rules": [{"name": "r", "key": ["client_ip"], "limit": {"requests": 5, "per": "minute"}}]"#;
    let mut quiet = driver(&format!("{{{rule}}}"));
    let (status, headers, _) = send(&mut quiet, &[(":path", "/")], "10.0.0.1:1");
    assert_eq!(status, 200);
    assert_eq!(headers, [(":status".to_string(), "200".to_string())]);
    assert!(
        !quiet
            .proxy
            .host_edits
            .iter()
            .any(|e| e.starts_with("response")),
        "{:?}",
        quiet.proxy.host_edits
    );

    let mut shown = driver(&format!(
        r#"{{"response_headers": {{"on_allowed": true}}, {rule}}}"#
    ));
    let (status, headers, _) = send(&mut shown, &[(":path", "/")], "10.0.0.1:1");
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-ratelimit-remaining" && v == "4"),
        "{headers:?}"
    );
}
