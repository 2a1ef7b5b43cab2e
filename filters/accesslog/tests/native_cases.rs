//! The case table (tests/cases) through the stage and the pipeline on the
//! fake proxy, plus shipping (ticks, callouts, retries, drops), the chain
//! with ab-routing, and the escaping property test.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cases;

use std::time::Duration;

use meshguard_ab_routing::AbRouting;
use meshguard_accesslog::AccessLog;
use meshguard_stage::testing::{capture_logs, run_table, Answer, Driver, FakeProxy, Runtime};
use proptest::prelude::*;

fn props_proxy(props: &[(&[&str], cases::Prop)]) -> FakeProxy {
    let mut p = FakeProxy::new();
    for (path, v) in props {
        p.properties
            .insert(path.iter().map(|s| s.to_string()).collect(), v.bytes());
    }
    p
}

/// Runs one request through a fresh driver; returns the record line (if
/// any) and the driver.
fn one<C: meshguard_stage::Chain>(
    config: &str,
    proxy: FakeProxy,
    request: &[(&str, &str)],
    response: &[(&str, &str)],
) -> (Option<String>, Driver<C>) {
    let mut d = Driver::<C>::with_proxy(config.as_bytes(), proxy).unwrap();
    let (mut s, _) = d.request(request, true);
    d.response(&mut s, response);
    let ((), logs) = capture_logs(|| d.log(&mut s));
    // Per-record counters reach the proxy on the timer.
    d.tick();
    let lines: Vec<String> = logs
        .into_iter()
        .filter(|(_, m)| m.starts_with('{'))
        .map(|(_, m)| m)
        .collect();
    assert!(lines.len() <= 1, "more than one line per record: {lines:?}");
    (lines.into_iter().next(), d)
}

struct Native;

impl Runtime<cases::Case> for Native {
    fn runtime_name(&self) -> &str {
        "native"
    }

    fn run_case(&mut self, case: &cases::Case) -> Vec<String> {
        let (line, d) = one::<(AccessLog,)>(
            case.config,
            props_proxy(case.props),
            case.request,
            case.response,
        );
        cases::check(case, line.as_deref(), |c| d.proxy.counter(c))
    }
}

#[test]
fn case_table() {
    run_table(&mut Native, cases::CASES);
}

#[test]
fn records_counter_counts_written_records() {
    let (_, d) = one::<(AccessLog,)>(
        cases::CONFIG,
        FakeProxy::new(),
        &[(":path", "/")],
        &[(":status", "200")],
    );
    assert_eq!(d.proxy.counter("meshguard_accesslog_records"), 1);
    let (_, d) = one::<(AccessLog,)>(
        cases::SAMPLE_NONE,
        props_proxy(&[(&["response", "code"], cases::Prop::Int(200))]),
        &[(":path", "/")],
        &[],
    );
    assert_eq!(d.proxy.counter("meshguard_accesslog_records"), 0);
}

/// The host calls a record makes: the status comes from `:status` when
/// there is a response, and only the filter-state facts the config lists
/// are read (one property read each).
#[test]
fn property_reads_are_only_what_the_record_needs() {
    let state_reads = |d: &Driver<(AccessLog,)>| -> Vec<String> {
        d.proxy
            .property_reads
            .borrow()
            .iter()
            .filter(|p| p.starts_with("wasm.") || p.starts_with("meshguard"))
            .cloned()
            .collect()
    };
    let (line, d) = one::<(AccessLog,)>(
        "{}",
        FakeProxy::new(),
        &[(":path", "/")],
        &[(":status", "200")],
    );
    assert!(line.is_some());
    let reads = d.proxy.property_reads.borrow().clone();
    assert!(!reads.contains(&"response.code".to_string()), "{reads:?}");
    assert_eq!(state_reads(&d).len(), 3, "{reads:?}");

    let (line, d) = one::<(AccessLog,)>(
        r#"{"facts_from_filter_state": []}"#,
        FakeProxy::new(),
        &[(":path", "/")],
        &[(":status", "200")],
    );
    assert!(line.is_some());
    assert_eq!(state_reads(&d), Vec::<String>::new());

    let mut proxy = FakeProxy::new();
    proxy.properties.insert(
        vec![meshguard_common::contract::VARIANTS_STATE.to_string()],
        meshguard_common::contract::encode_state_pairs(&[("checkout", "treatme")]),
    );
    let (line, d) = one::<(AccessLog,)>(
        r#"{"facts_from_filter_state": ["variants"]}"#,
        proxy,
        &[(":path", "/")],
        &[(":status", "200")],
    );
    assert_eq!(
        state_reads(&d),
        vec![meshguard_common::contract::VARIANTS_STATE.to_string()]
    );
    let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
    assert_eq!(v["variants"]["checkout"], "treatme", "{v}");

    // No response at all: the status property is the fallback.
    let (_, d) = one::<(AccessLog,)>("{}", FakeProxy::new(), &[(":path", "/")], &[]);
    assert!(d
        .proxy
        .property_reads
        .borrow()
        .contains(&"response.code".to_string()));
}

#[test]
fn a_fact_listed_twice_is_refused_with_its_path() {
    let err = Driver::<(AccessLog,)>::with_proxy(
        br#"{"facts_from_filter_state": ["identity", "identity"]}"#,
        FakeProxy::new(),
    )
    .err()
    .expect("refused");
    assert!(
        err.to_string().contains("facts_from_filter_state[1]"),
        "{err}"
    );
}

/// ab-routing then accesslog in one VM: the variant reaches the record in
/// memory (facts), and ab-routing also publishes it to filter state for
/// modules in other VMs.
#[test]
fn chain_with_ab_routing_logs_the_variant() {
    let config = r#"{
      "ab_routing": {"experiments": [{"name": "checkout", "variants": [{"name": "control", "weight": 0}, {"name": "treatment", "weight": 1}], "sticky_key": [{"header": "x-user-id"}]}]},
      "accesslog": {}
    }"#;
    let (line, d) = one::<(AbRouting, AccessLog)>(
        config,
        FakeProxy::new(),
        &[(":path", "/checkout"), ("x-user-id", "bob")],
        &[(":status", "200")],
    );
    let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
    assert_eq!(v["variants"], serde_json::json!({"checkout": "treatment"}));
    let state = d
        .proxy
        .properties
        .get(&vec!["meshguard.variants".to_string()])
        .unwrap();
    assert_eq!(
        meshguard_common::contract::decode_state_pairs(state).unwrap(),
        vec![("checkout".to_string(), "treatment".to_string())]
    );
}

const SHIP: &str = r#"{"tags": {"workload": "web", "environment": "prod"}, "log_line": {"enabled": false},
  "ship": {"cluster": "otel", "batch_max_records": 3, "flush_interval_ms": 1000, "max_retries": 2,
           "retry_backoff_ms": 1000, "retry_backoff_max_ms": 4000, "max_in_flight": 1}}"#;

fn shipping(config: &str) -> Driver<(AccessLog,)> {
    let mut proxy = FakeProxy::new().with_clusters(&["otel", "es"]);
    proxy.properties.insert(
        vec!["response".into(), "code".into()],
        200i64.to_le_bytes().to_vec(),
    );
    Driver::with_proxy(config.as_bytes(), proxy).unwrap()
}

fn log_requests(d: &mut Driver<(AccessLog,)>, n: usize) {
    for i in 0..n {
        let id = format!("req-{i}");
        let (mut s, _) = d.request(&[(":path", "/x"), ("x-request-id", &id)], true);
        d.response(&mut s, &[(":status", "200")]);
        d.log(&mut s);
    }
}

fn advance(d: &mut Driver<(AccessLog,)>, ms: u64) {
    let now = meshguard_stage::Host::now(&d.proxy);
    d.proxy.now = Some(now + Duration::from_millis(ms));
}

/// The next timer tick: the proxy ticks every period (250 ms for a 1 s
/// flush interval), and the clock moves with it.
fn tick(d: &mut Driver<(AccessLog,)>) {
    advance(d, 250);
    d.tick();
}

fn ok() -> Answer {
    Answer::Response {
        status: 200,
        headers: vec![],
        body: b"{}".to_vec(),
    }
}

#[test]
fn batches_by_count_and_by_time_as_otlp_json() {
    let mut d = shipping(SHIP);
    log_requests(&mut d, 2);
    tick(&mut d);
    assert!(
        d.proxy.calls.is_empty(),
        "2 < batch_max_records and not old yet"
    );
    log_requests(&mut d, 2);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 1, "a full batch goes out");
    let call = d.proxy.calls[0].clone();
    assert_eq!(call.cluster, "otel");
    let h = |n: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h(":path").as_deref(), Some("/v1/logs"));
    assert_eq!(h(":method").as_deref(), Some("POST"));
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(call.body.as_ref().unwrap()).unwrap();
    let rl = &body["resourceLogs"][0];
    assert_eq!(
        rl["resource"]["attributes"][0],
        serde_json::json!({"key": "service.name", "value": {"stringValue": "web"}})
    );
    let records = rl["scopeLogs"][0]["logRecords"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    for r in records {
        assert_eq!(r["severityNumber"], 9);
        assert!(r["timeUnixNano"].as_str().unwrap().parse::<u128>().is_ok());
        let line: serde_json::Value =
            serde_json::from_str(r["body"]["stringValue"].as_str().unwrap()).unwrap();
        assert_eq!(line["schema"], "meshguard.access.v1");
        assert_eq!(line["environment"], "prod");
    }
    assert!(d.answer_root(call.token, ok()));
    assert_eq!(d.proxy.counter("meshguard_accesslog_shipped"), 3);
    // The 4th record leaves once it is old enough.
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 1);
    advance(&mut d, 1000);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 2);
    assert!(d.answer_root(d.proxy.calls[1].token, ok()));
    assert_eq!(d.proxy.counter("meshguard_accesslog_shipped"), 4);
    assert_eq!(d.proxy.counter("meshguard_accesslog_buffer_bytes"), 0);
}

#[test]
fn failures_are_retried_with_backoff_then_dropped() {
    let mut d = shipping(SHIP);
    log_requests(&mut d, 3);
    tick(&mut d);
    assert!(d.answer_root(d.proxy.calls[0].token, Answer::Failed));
    assert_eq!(d.proxy.counter("meshguard_accesslog_ship_failures"), 1);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 1, "backoff (1 s): not yet");
    advance(&mut d, 750);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 2);
    assert_eq!(d.proxy.counter("meshguard_accesslog_retries"), 1);
    assert_eq!(
        d.proxy.calls[1].body, d.proxy.calls[0].body,
        "the same batch"
    );
    // 503 with Retry-After: 1 → retried after 1 s, not after the 2 s the
    // doubled backoff would wait.
    let busy = Answer::Response {
        status: 503,
        headers: vec![("retry-after".into(), "1".into())],
        body: vec![],
    };
    assert!(d.answer_root(d.proxy.calls[1].token, busy));
    advance(&mut d, 500);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 2);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 3);
    // max_retries = 2: the third failure drops the batch.
    assert!(d.answer_root(d.proxy.calls[2].token, Answer::Failed));
    assert_eq!(d.proxy.counter("meshguard_accesslog_dropped"), 3);
    assert_eq!(d.proxy.counter("meshguard_accesslog_ship_failures"), 3);
    assert_eq!(d.proxy.counter("meshguard_accesslog_buffer_bytes"), 0);
    advance(&mut d, 10_000);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 3, "nothing left");
}

#[test]
fn non_retryable_status_and_partial_success_are_not_retried() {
    let mut d = shipping(SHIP);
    log_requests(&mut d, 3);
    tick(&mut d);
    let bad = Answer::Response {
        status: 400,
        headers: vec![],
        body: b"bad".to_vec(),
    };
    assert!(d.answer_root(d.proxy.calls[0].token, bad));
    assert_eq!(d.proxy.counter("meshguard_accesslog_dropped"), 3);
    log_requests(&mut d, 3);
    tick(&mut d);
    let partial = Answer::Response {
        status: 200,
        headers: vec![],
        body: br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"x"}}"#.to_vec(),
    };
    assert!(d.answer_root(d.proxy.calls[1].token, partial));
    assert_eq!(d.proxy.counter("meshguard_accesslog_shipped"), 1);
    assert_eq!(d.proxy.counter("meshguard_accesslog_dropped"), 5);
    advance(&mut d, 10_000);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 2);
    assert_eq!(d.proxy.counter("meshguard_accesslog_retries"), 0);
}

#[test]
fn buffer_full_drops_and_counts_and_memory_stays_bounded() {
    let config = r#"{"log_line": {"enabled": false},
      "ship": {"cluster": "otel", "batch_max_records": 10, "batch_max_bytes": 4096, "buffer_max_bytes": 8192, "max_in_flight": 1}}"#;
    let mut d = shipping(config);
    // Collector never answers: one batch in flight, the rest buffered.
    log_requests(&mut d, 200);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 1);
    log_requests(&mut d, 200);
    // Per-record counters and the buffer gauge follow on the timer.
    tick(&mut d);
    let records = d.proxy.counter("meshguard_accesslog_records");
    let dropped = d.proxy.counter("meshguard_accesslog_dropped");
    assert_eq!(records, 400);
    assert!(dropped > 300, "dropped {dropped}");
    let held = d.proxy.counter("meshguard_accesslog_buffer_bytes");
    assert!(held > 0 && held <= 8192, "held {held}");
    // Once the collector answers, records flow again: new ones are
    // buffered, not dropped, and the next tick sends them.
    assert!(d.answer_root(d.proxy.calls[0].token, ok()));
    let dropped_before = d.proxy.counter("meshguard_accesslog_dropped");
    log_requests(&mut d, 2);
    assert_eq!(
        d.proxy.counter("meshguard_accesslog_dropped"),
        dropped_before
    );
    advance(&mut d, 1000);
    tick(&mut d);
    assert_eq!(d.proxy.calls.len(), 2);
    assert!(d.answer_root(d.proxy.calls[1].token, ok()));
    assert!(d.proxy.counter("meshguard_accesslog_shipped") > 4);
}

#[test]
fn unknown_cluster_counts_as_a_failed_attempt() {
    let config = r#"{"log_line": {"enabled": false}, "ship": {"cluster": "nowhere", "batch_max_records": 1, "max_retries": 0}}"#;
    let mut d = shipping(config);
    log_requests(&mut d, 1);
    tick(&mut d);
    assert!(d.proxy.calls.is_empty());
    assert_eq!(d.proxy.counter("meshguard_accesslog_ship_failures"), 1);
    assert_eq!(d.proxy.counter("meshguard_accesslog_dropped"), 1);
}

#[test]
fn bulk_ndjson_and_item_errors() {
    let config = r#"{"log_line": {"enabled": false},
      "ship": {"cluster": "es", "format": "bulk", "index": "logs-mesh", "batch_max_records": 2}}"#;
    let mut d = shipping(config);
    log_requests(&mut d, 2);
    tick(&mut d);
    let call = d.proxy.calls[0].clone();
    let h = |n: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h(":path").as_deref(), Some("/_bulk"));
    assert_eq!(h("content-type").as_deref(), Some("application/x-ndjson"));
    let body = String::from_utf8(call.body.unwrap()).unwrap();
    assert!(body.ends_with('\n'));
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], r#"{"create":{"_index":"logs-mesh"}}"#);
    let rec: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(rec["request_id"], "req-0");
    let answer = Answer::Response {
        status: 200,
        headers: vec![],
        body: br#"{"took":1,"errors":true,"items":[{"create":{"status":201}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}"#.to_vec(),
    };
    assert!(d.answer_root(call.token, answer));
    assert_eq!(d.proxy.counter("meshguard_accesslog_shipped"), 1);
    assert_eq!(d.proxy.counter("meshguard_accesslog_dropped"), 1);
}

fn hostile_value() -> impl Strategy<Value = Vec<u8>> {
    // Bytes a header value may carry through Envoy (no CR, LF, NUL), biased
    // towards what breaks JSON lines: quotes, backslashes, controls, DEL,
    // U+2028/2029, and invalid UTF-8.
    let piece = prop_oneof![
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\\u0000".to_vec()),
        Just("\u{2028}".as_bytes().to_vec()),
        Just("\u{2029}".as_bytes().to_vec()),
        Just(vec![0x7f]),
        Just(vec![0xff]),
        Just(vec![0xe2, 0x80]),
        Just("é☃😀".as_bytes().to_vec()),
        (1u8..0x20)
            .prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n')
            .prop_map(|b| vec![b]),
        proptest::collection::vec(
            any::<u8>().prop_filter("no CR/LF/NUL", |b| ![0, b'\r', b'\n'].contains(b)),
            0..8
        ),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Hostile header values: every record is one line of valid JSON that
    /// carries each value exactly (invalid UTF-8 as U+FFFD, and flagged).
    #[test]
    fn hostile_values_give_one_valid_line_carrying_the_input(
        ua in hostile_value(),
        tenant in hostile_value(),
        path in hostile_value(),
        rid in hostile_value(),
    ) {
        let path = [b"/".as_slice(), &path].concat();
        let mut proxy = FakeProxy::new();
        proxy.request = vec![
            (":path".into(), path.clone()),
            ("user-agent".into(), ua.clone()),
            ("x-tenant".into(), tenant.clone()),
            ("x-request-id".into(), rid.clone()),
        ];
        let mut d = Driver::<(AccessLog,)>::with_proxy(
            br#"{"headers": {"request": ["x-tenant"]}}"#, proxy).unwrap();
        let (mut s, _) = d.request_as_is(true);
        d.response(&mut s, &[(":status", "200")]);
        let ((), logs) = capture_logs(|| d.log(&mut s));
        let lines: Vec<&String> = logs.iter().map(|(_, m)| m).filter(|m| m.starts_with('{')).collect();
        prop_assert_eq!(lines.len(), 1);
        let line = lines[0];
        prop_assert!(!line.contains('\n') && !line.contains('\r'));
        let separators = ['\u{2028}', '\u{2029}'];
        let raw_separator = line.contains(separators);
        prop_assert!(!raw_separator);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| TestCaseError::fail(format!("{e}: {line}")))?;
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (ua_s, tenant_s, path_s, rid_s) = (lossy(&ua), lossy(&tenant), lossy(&path), lossy(&rid));
        prop_assert_eq!(v["user_agent"].as_str(), Some(ua_s.as_str()));
        prop_assert_eq!(v["request_headers"]["x-tenant"].as_str(), Some(tenant_s.as_str()));
        prop_assert_eq!(v["path"].as_str(), Some(path_s.as_str()));
        prop_assert_eq!(v["request_id"].as_str(), Some(rid_s.as_str()));
        let mut flagged: Vec<String> = v["invalid_utf8"].as_array().map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect()).unwrap_or_default();
        flagged.sort();
        let mut want = Vec::new();
        for (name, b) in [("path", &path), ("request_headers.x-tenant", &tenant), ("request_id", &rid), ("user_agent", &ua)] {
            if std::str::from_utf8(b).is_err() {
                want.push(name.to_string());
            }
        }
        want.sort();
        prop_assert_eq!(flagged, want);
    }
}
