//! Every ABI area, exercised through the probe fixture filter and asserted.

mod common;

use std::time::Duration;

use common::{probe, req};
use wasm_test_harness::{
    property, Action, Error, Harness, Headers, HttpCallResponse, LogLevel, MetricValue,
};

#[test]
fn lifecycle_vm_start_and_configure() {
    let h = Harness::new();
    let m = probe(&h);
    let mut vm = h
        .vm(&m)
        .vm_configuration(b"vm-config-bytes")
        .start()
        .unwrap();
    assert_eq!(
        vm.logs_at(LogLevel::Info),
        vec!["vm start: vm-config-bytes"]
    );
    assert!(vm.configure(b"queue=q").unwrap());
    assert!(vm
        .logs_at(LogLevel::Info)
        .contains(&"configure: queue=q".to_string()));
    // Refusal is reported, not hidden.
    let mut refused = h.vm(&m).start().unwrap();
    assert!(!refused.configure(b"fail=true").unwrap());
    assert_eq!(
        refused.logs_at(LogLevel::Error),
        vec!["configure: refusing as asked"]
    );
    assert!(matches!(
        h.configured_vm(&m, b"fail=true"),
        Err(Error::Refused(_))
    ));
}

#[test]
fn header_maps_follow_envoy_semantics() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    let mut headers = req(
        "headers",
        &[
            ("x-dup", "a"),
            ("x-dup", "b"),
            ("x-remove-me", "1"),
            ("x-multi", "first"),
            ("x-multi", "second"),
        ],
    );
    headers.push(("X-Upper".into(), "v".into()));
    assert_eq!(
        http.request_headers(headers, true).unwrap(),
        Action::Continue
    );
    let m = http.request_headers_map();
    // replace: all old values go, the new one is appended (Envoy setCopy).
    assert_eq!(m.get_all("x-dup"), vec!["replaced"]);
    assert_eq!(
        m.get_all("x-added"),
        vec!["1", "2"],
        "keys lowercased on add"
    );
    assert!(!m.contains("x-remove-me"));
    assert_eq!(m.get("x-first-multi").as_deref(), Some("first"));
    assert_eq!(m.get("x-missing").as_deref(), Some("None"));
    assert_eq!(m.get("x-upper").as_deref(), Some("v"));
    assert!(http.request_header_mutations() >= 5);

    let mut http = vm.new_http().unwrap();
    http.request_headers(req("replace-all", &[("x-gone", "1")]), true)
        .unwrap();
    let m = http.request_headers_map();
    assert_eq!(
        m.pairs(),
        vec![
            (":path".to_string(), "/rewritten".to_string()),
            (":method".to_string(), "GET".to_string()),
            (":scheme".to_string(), "http".to_string()),
            (":authority".to_string(), "probe".to_string()),
            ("x-only".to_string(), "yes".to_string()),
        ]
    );
}

#[test]
fn maps_outside_their_phase_trap_like_envoy() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    let err = http
        .request_headers(req("wrong-phase", &[]), true)
        .unwrap_err();
    assert!(matches!(err, Error::Trap { .. }), "{err}");
}

#[test]
fn shared_data_cas_semantics() {
    let h = Harness::new();
    let mut vm = h.vm(&probe(&h)).vm_id("shared").start().unwrap();
    assert!(vm.configure(b"").unwrap());
    let get = |vm: &mut wasm_test_harness::Vm, key: &str| {
        let mut http = vm.new_http().unwrap();
        http.request_headers(req("shared-get", &[("x-probe-key", key)]), true)
            .unwrap();
        http.request_header("x-probe-shared").unwrap()
    };
    assert_eq!(get(&mut vm, "cas-key"), "missing");
    let set = |vm: &mut wasm_test_harness::Vm, value: &str, cas: u32| {
        let mut http = vm.new_http().unwrap();
        http.request_headers(
            req(
                "shared-cas",
                &[("x-probe-value", value), ("x-probe-cas", &cas.to_string())],
            ),
            true,
        )
        .unwrap();
        http.request_header("x-probe-result").unwrap()
    };
    // cas on a missing key inserts (cpp-host SharedData::set).
    assert_eq!(set(&mut vm, "one", 999), "Ok(())");
    let (value, cas) = h.shared_data("shared", "cas-key").unwrap();
    assert_eq!(value, b"one");
    assert_eq!(get(&mut vm, "cas-key"), format!("6f6e65@{cas}"));
    assert_eq!(set(&mut vm, "two", cas + 1), "Err(CasMismatch)");
    assert_eq!(set(&mut vm, "two", cas), "Ok(())");
    assert_eq!(
        set(&mut vm, "three", cas),
        "Err(CasMismatch)",
        "old cas is stale"
    );
    assert_eq!(set(&mut vm, "three", 0), "Ok(())", "cas 0 is unconditional");
    assert_eq!(h.shared_data("shared", "cas-key").unwrap().0, b"three");
    // Keyed by vm_id: another vm_id does not see it.
    assert_eq!(h.shared_data("other", "cas-key"), None);
}

/// Two VMs (two Envoy workers) on two threads increment one shared counter
/// with CAS: no update is lost.
#[test]
fn shared_data_cas_is_exact_across_two_vms_on_two_threads() {
    let h = Harness::new();
    let m = probe(&h);
    const PER_VM: u64 = 400;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let mut vm = h.vm(&m).vm_id("workers").start().unwrap();
            assert!(vm.configure(b"").unwrap());
            std::thread::spawn(move || {
                for _ in 0..PER_VM {
                    let mut http = vm.new_http().unwrap();
                    http.round_trip(req("shared-incr", &[])).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (value, _) = h.shared_data("workers", "counter").unwrap();
    assert_eq!(u64::from_le_bytes(value.try_into().unwrap()), 2 * PER_VM);
    assert_eq!(
        h.counter("probe_requests"),
        2 * PER_VM,
        "metrics are process-wide"
    );
}

#[test]
fn shared_queues_register_enqueue_notify() {
    let h = Harness::new();
    let m = probe(&h);
    let mut owner = h.vm(&m).vm_id("q").start().unwrap();
    assert!(owner.configure(b"queue=jobs").unwrap());
    let mut producer = h.vm(&m).vm_id("q").start().unwrap();
    assert!(producer.configure(b"").unwrap());
    for value in ["a", "b"] {
        let mut http = producer.new_http().unwrap();
        http.request_headers(
            req(
                "enqueue",
                &[
                    ("x-probe-vm", "q"),
                    ("x-probe-queue", "jobs"),
                    ("x-probe-value", value),
                ],
            ),
            true,
        )
        .unwrap();
        assert_eq!(
            http.request_header("x-probe-result").as_deref(),
            Some("Ok(())")
        );
    }
    // Notifications are posted to the owner's event loop, not run inline.
    assert_eq!(
        h.queue_items("q", "jobs"),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    producer.poll().unwrap();
    assert!(owner
        .logs_at(LogLevel::Info)
        .iter()
        .all(|l| !l.starts_with("queue")));
    owner.poll().unwrap();
    let got: Vec<String> = owner
        .logs_at(LogLevel::Info)
        .into_iter()
        .filter(|l| l.starts_with("queue"))
        .collect();
    assert_eq!(got, vec!["queue 1: a", "queue 1: b"]);
    assert!(h.queue_items("q", "jobs").is_empty());
    // From the test side, too.
    h.enqueue("q", "jobs", b"c").unwrap();
    owner.poll().unwrap();
    assert!(owner
        .logs_at(LogLevel::Info)
        .contains(&"queue 1: c".to_string()));
    // Unknown queue: resolve fails.
    let mut http = producer.new_http().unwrap();
    http.request_headers(
        req("enqueue", &[("x-probe-vm", "q"), ("x-probe-queue", "nope")]),
        true,
    )
    .unwrap();
    assert_eq!(
        http.request_header("x-probe-result").as_deref(),
        Some("unresolved")
    );
    assert!(h.enqueue("q", "nope", b"x").is_err());
}

#[test]
fn ticks_fire_at_each_period_with_the_test_clock() {
    let h = Harness::new();
    let mut vm = h.vm(&probe(&h)).vm_id("t").start().unwrap();
    assert!(vm.configure(b"tick_ms=100").unwrap());
    assert_eq!(vm.tick_period(), Some(Duration::from_millis(100)));
    vm.advance_clock(Duration::from_millis(99)).unwrap();
    assert_eq!(h.counter("probe_ticks"), 0);
    vm.advance_clock(Duration::from_millis(251)).unwrap();
    assert_eq!(h.counter("probe_ticks"), 3);
    let (last, _) = h.shared_data("t", "last_tick_ns").unwrap();
    let last = u64::from_le_bytes(last.try_into().unwrap());
    assert_eq!(
        last,
        wasm_test_harness::DEFAULT_START_UNIX_NS + 300_000_000,
        "the tick saw the clock at its deadline"
    );
    // Harness-wide clock + poll: a late timer fires once and re-arms.
    h.advance_clock(Duration::from_secs(1));
    vm.poll().unwrap();
    assert_eq!(h.counter("probe_ticks"), 4);
    vm.tick().unwrap();
    assert_eq!(h.counter("probe_ticks"), 5);
}

#[test]
fn http_callout_answered_by_the_test() {
    let h = Harness::new();
    h.declare_cluster("auth");
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    let action = http
        .request_headers(req("http-call", &[("x-probe-cluster", "auth")]), true)
        .unwrap();
    assert_eq!(action, Action::Pause);
    let id = http.id();
    let calls = vm.http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster, "auth");
    assert_eq!(call.context_id, id);
    assert_eq!(call.headers.get(":path").as_deref(), Some("/check"));
    assert_eq!(call.headers.get("x-id"), Some(id.to_string()));
    assert_eq!(call.body, b"payload");
    assert_eq!(call.trailers.get("x-trailer").as_deref(), Some("t"));
    assert_eq!(call.timeout, Duration::from_millis(250));
    vm.respond_http_call(
        call.token,
        HttpCallResponse::new(200, &[("x-a", "1")], b"ok"),
    )
    .unwrap();
    // Runs in the stream's context: the paused request headers changed.
    let http = vm.http(id).unwrap();
    assert_eq!(
        http.request_header("x-probe-callout"),
        Some(format!("token={} status=200 headers=2 body=ok", call.token))
    );
    assert_eq!(http.request_resumed(), 1);
    assert!(vm.http_calls().is_empty());
    assert!(
        vm.respond_http_call(call.token, HttpCallResponse::default())
            .is_err(),
        "token is spent"
    );
}

#[test]
fn http_callout_to_undeclared_cluster_is_bad_argument() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    let action = http
        .request_headers(req("http-call", &[("x-probe-cluster", "nowhere")]), true)
        .unwrap();
    assert_eq!(action, Action::Continue);
    assert_eq!(
        http.request_header("x-probe-result").as_deref(),
        Some("BadArgument")
    );
}

#[test]
fn http_callout_times_out_with_the_clock_and_failures_have_no_headers() {
    let h = Harness::new();
    h.declare_cluster("auth");
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let id = {
        let mut http = vm.new_http().unwrap();
        http.request_headers(req("http-call", &[("x-probe-cluster", "auth")]), true)
            .unwrap();
        http.id()
    };
    vm.advance_clock(Duration::from_millis(249)).unwrap();
    assert_eq!(vm.http_calls().len(), 1);
    vm.advance_clock(Duration::from_millis(1)).unwrap();
    assert!(vm.http_calls().is_empty());
    let v = vm
        .http(id)
        .unwrap()
        .request_header("x-probe-callout")
        .unwrap();
    assert!(
        v.contains("status=504") && v.contains("body=upstream request timeout"),
        "{v}"
    );

    let id = {
        let mut http = vm.new_http().unwrap();
        http.request_headers(req("http-call", &[("x-probe-cluster", "auth")]), true)
            .unwrap();
        http.id()
    };
    let token = vm.http_calls()[0].token;
    vm.fail_http_call(token).unwrap();
    let v = vm
        .http(id)
        .unwrap()
        .request_header("x-probe-callout")
        .unwrap();
    assert!(v.contains("status=none headers=0 body="), "{v}");
}

#[test]
fn local_reply_from_a_callout_goes_through_the_response_path() {
    let h = Harness::new();
    h.declare_cluster("auth");
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let id = {
        let mut http = vm.new_http().unwrap();
        http.request_headers(req("http-call", &[("x-probe-cluster", "auth")]), true)
            .unwrap();
        http.id()
    };
    let token = vm.http_calls()[0].token;
    vm.respond_http_call(token, HttpCallResponse::new(403, &[], b""))
        .unwrap();
    let mut http = vm.http(id).unwrap();
    let reply = http.local_response().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.headers.get("x-probe-callout").as_deref(),
        Some("denied")
    );
    let resp = http.response_headers_map();
    assert_eq!(resp.get(":status").as_deref(), Some("403"));
    assert_eq!(
        resp.get("x-probe-response").as_deref(),
        Some("seen"),
        "on_response_headers ran for the local reply"
    );
    assert_eq!(http.response_body_forwarded(), b"denied by callout\n");
    assert_eq!(http.request_resumed(), 0);
    http.finish().unwrap();
    assert!(vm
        .logs_at(LogLevel::Info)
        .contains(&format!("on_log context={id} code=Some(403)")));
}

#[test]
fn local_reply_in_request_headers() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    http.request_headers(req("local-reply", &[]), true).unwrap();
    let reply = http.local_response().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"denied\n");
    assert_eq!(reply.grpc_status, None);
    assert_eq!(http.local_response_count(), 1);
    let resp = http.response_headers_map();
    assert_eq!(resp.get("content-length").as_deref(), Some("7"));
    assert_eq!(resp.get("content-type").as_deref(), Some("text/plain"));
    assert_eq!(resp.get("x-probe").as_deref(), Some("denied"));
    assert_eq!(resp.get("x-probe-response").as_deref(), Some("seen"));

    // gRPC request: trailers-only gRPC answer.
    let mut http = vm.new_http().unwrap();
    http.request_headers(
        req("grpc-local-reply", &[("content-type", "application/grpc")]),
        true,
    )
    .unwrap();
    assert_eq!(http.local_response().unwrap().grpc_status, Some(7));
    let resp = http.response_headers_map();
    assert_eq!(resp.get(":status").as_deref(), Some("200"));
    assert_eq!(resp.get("grpc-status").as_deref(), Some("7"));
    assert_eq!(resp.get("grpc-message").as_deref(), Some("nope"));
}

/// `send_http_response` to a gRPC request: Envoy answers trailers-only
/// with grpc-status derived from the HTTP status and the body as
/// percent-encoded grpc-message, the filter's headers right after
/// `:status`. Checked against Envoy in tests/tests/envoy_vs_harness.rs.
#[test]
fn http_local_reply_to_grpc_request_is_trailers_only_like_envoy() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    for (status, grpc_status) in [("403", "7"), ("401", "16"), ("429", "14"), ("500", "2")] {
        let mut http = vm.new_http().unwrap();
        let extra = [
            ("content-type", "application/grpc"),
            ("x-probe-status", status),
        ];
        http.request_headers(req("local-reply", &extra), true)
            .unwrap();
        assert_eq!(
            http.response_headers_map().pairs(),
            vec![
                (":status".to_string(), "200".to_string()),
                ("x-probe".to_string(), "denied".to_string()),
                ("content-type".to_string(), "application/grpc".to_string()),
                ("grpc-status".to_string(), grpc_status.to_string()),
                ("grpc-message".to_string(), "denied%0A".to_string()),
                ("x-probe-response".to_string(), "seen".to_string()),
            ],
            "HTTP {status}"
        );
        assert!(http.response_body_forwarded().is_empty());
    }
}

/// gRPC-Web is not gRPC for Envoy's local replies: plain HTTP status and body.
#[test]
fn local_reply_to_grpc_web_is_plain_http() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    let extra = [("content-type", "application/grpc-web")];
    http.request_headers(req("local-reply", &extra), true)
        .unwrap();
    let resp = http.response_headers_map();
    assert_eq!(resp.get(":status").as_deref(), Some("403"));
    assert!(!resp.contains("grpc-status"));
    assert_eq!(http.response_body_forwarded(), b"denied\n");
}

/// A local reply to HEAD: headers (with the body's content-length), no body.
#[test]
fn local_reply_to_head_has_no_body() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    let mut headers = req("local-reply", &[]);
    headers[0].1 = "HEAD".to_string();
    http.request_headers(headers, true).unwrap();
    let resp = http.response_headers_map();
    assert_eq!(resp.get(":status").as_deref(), Some("403"));
    assert_eq!(resp.get("content-length").as_deref(), Some("7"));
    assert_eq!(resp.get("x-probe-response").as_deref(), Some("seen"));
    assert!(http.response_body_forwarded().is_empty());
    assert_eq!(http.local_response().unwrap().body, b"denied\n");
}

#[test]
fn grpc_callout_success_failure_and_unknown_cluster() {
    let h = Harness::new();
    h.declare_cluster("authz");
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let id = {
        let mut http = vm.new_http().unwrap();
        assert_eq!(
            http.request_headers(req("grpc-call", &[("x-probe-cluster", "authz")]), true)
                .unwrap(),
            Action::Pause
        );
        http.id()
    };
    let calls = vm.grpc_calls();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(
        (c.cluster.as_str(), c.service.as_str(), c.method.as_str()),
        ("authz", "probe.v1.Check", "Allow")
    );
    assert_eq!(c.initial_metadata.get("x-md").as_deref(), Some("m"));
    assert_eq!(c.message, b"request-message");
    assert_eq!(c.timeout, Duration::from_millis(500));
    vm.respond_grpc_call(c.token, b"allowed").unwrap();
    let v = vm.http(id).unwrap().request_header("x-probe-grpc").unwrap();
    assert_eq!(
        v,
        format!("token={} status=0 get_status=0: message=allowed", c.token)
    );

    let id = {
        let mut http = vm.new_http().unwrap();
        http.request_headers(req("grpc-call", &[("x-probe-cluster", "authz")]), true)
            .unwrap();
        http.id()
    };
    let token = vm.grpc_calls()[0].token;
    vm.fail_grpc_call(token, 7, "denied").unwrap();
    let v = vm.http(id).unwrap().request_header("x-probe-grpc").unwrap();
    assert!(
        v.starts_with(&format!("token={token} status=7 get_status=7:denied")),
        "{v}"
    );

    let mut http = vm.new_http().unwrap();
    http.request_headers(req("grpc-call", &[("x-probe-cluster", "unknown")]), true)
        .unwrap();
    assert_eq!(
        http.request_header("x-probe-result").as_deref(),
        Some("ParseFailure")
    );
}

#[test]
fn grpc_call_times_out_with_deadline_exceeded() {
    let h = Harness::new();
    h.declare_cluster("authz");
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let id = {
        let mut http = vm.new_http().unwrap();
        http.request_headers(req("grpc-call", &[("x-probe-cluster", "authz")]), true)
            .unwrap();
        http.id()
    };
    vm.advance_clock(Duration::from_millis(500)).unwrap();
    let v = vm.http(id).unwrap().request_header("x-probe-grpc").unwrap();
    assert!(v.contains("status=4"), "{v}");
}

#[test]
fn metrics_define_increment_record_get() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    for _ in 0..3 {
        vm.new_http().unwrap().round_trip(req("none", &[])).unwrap();
    }
    let mut http = vm.new_http().unwrap();
    http.request_headers(req("metrics", &[]), true).unwrap();
    assert_eq!(http.request_header("x-probe-counter").as_deref(), Some("4"));
    assert_eq!(h.metric("probe_requests"), Some(MetricValue::Counter(4)));
    assert_eq!(h.metric("probe_gauge"), Some(MetricValue::Gauge(40)));
    assert_eq!(
        h.metric("probe_latency"),
        Some(MetricValue::Histogram(vec![7, 9]))
    );
    assert_eq!(h.metric("never_defined"), None);
    assert!(h.metric_names().contains(&"probe_ticks".to_string()));
}

#[test]
fn properties_with_envoy_encodings() {
    let h = Harness::new();
    let mut vm = h.vm(&probe(&h)).plugin_name("my-plugin").start().unwrap();
    assert!(vm.configure(b"").unwrap());
    let mut get = |path: &str, set: Option<(&[&str], Vec<u8>)>| {
        let mut http = vm.new_http().unwrap();
        if let Some((p, v)) = set {
            http.set_property(p, v).unwrap();
        }
        http.request_headers(req("property", &[("x-probe-path", path)]), true)
            .unwrap();
        let got = http.request_header("x-probe-property").unwrap();
        let readback = http.request_header("x-probe-set-property").unwrap();
        let state = http.filter_state(&["probe", "seen"]);
        (got, readback, state)
    };
    let (v, readback, state) = get(
        "source.address",
        Some((&["source", "address"], property::string("10.1.2.3:5000"))),
    );
    assert_eq!(v, "31302e312e322e333a35303030");
    // set_property stores filter state; Envoy reads it back only through a
    // single top-level segment, so this multi-segment read finds nothing.
    assert_eq!(readback, "");
    assert_eq!(state.as_deref(), Some(b"yes".as_slice()));
    let (v, ..) = get(
        "source.port",
        Some((&["source", "port"], property::int(5000))),
    );
    assert_eq!(v, "8813000000000000", "8-byte little-endian");
    let (v, ..) = get(
        "request.time",
        Some((&["request", "time"], property::timestamp(h.now()))),
    );
    assert_eq!(
        v,
        hex(&(wasm_test_harness::DEFAULT_START_UNIX_NS as i64).to_le_bytes())
    );
    let (v, ..) = get("request.path", None);
    assert_eq!(v, hex(b"/probe?x=1"), "derived from :path");
    let (v, ..) = get("request.url_path", None);
    assert_eq!(v, hex(b"/probe"));
    let (v, ..) = get("request.headers.x-probe", None);
    assert_eq!(v, hex(b"property"));
    let (v, ..) = get("plugin_name", None);
    assert_eq!(v, hex(b"my-plugin"));
    let (v, ..) = get("connection.mtls", None);
    assert_eq!(v, "missing");
    let map = property::map(&[("a", "1")]);
    assert_eq!(
        wasm_test_harness::decode_pairs(&map).unwrap(),
        vec![(b"a".to_vec(), b"1".to_vec())]
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn wasi_clock_and_seeded_random() {
    let run = |seed: u64, advance: Duration| {
        let h = Harness::builder().seed(seed).build();
        let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
        h.advance_clock(advance);
        let mut http = vm.new_http().unwrap();
        http.request_headers(req("clock-random", &[]), true)
            .unwrap();
        let now = h
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            .to_string();
        assert_eq!(
            http.request_header("x-probe-host-ns"),
            Some(now.clone()),
            "proxy_get_current_time_nanoseconds"
        );
        assert_eq!(
            http.request_header("x-probe-wasi-ns"),
            Some(now),
            "WASI clock_time_get(REALTIME)"
        );
        http.request_header("x-probe-random").unwrap()
    };
    let a = run(1, Duration::from_secs(5));
    assert_eq!(a.len(), 16);
    assert_eq!(a, run(1, Duration::from_secs(9)), "same seed, same bytes");
    assert_ne!(a, run(2, Duration::ZERO), "different seed, different bytes");
}

#[test]
fn logs_by_level_and_stdio() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    http.request_headers(req("log", &[]), true).unwrap();
    let id = http.id();
    for (level, text) in [
        (LogLevel::Trace, "probe trace"),
        (LogLevel::Debug, "probe debug"),
        (LogLevel::Warn, "probe warn"),
        (LogLevel::Error, "probe error"),
        (LogLevel::Critical, "probe critical"),
    ] {
        assert_eq!(vm.logs_at(level), vec![text]);
    }
    assert!(vm
        .logs()
        .iter()
        .any(|l| l.message == "probe info" && l.context_id == id));
    assert_eq!(vm.stdout(), "probe stdout\n");
    assert_eq!(vm.stderr(), "probe stderr\n");
}

#[test]
fn guest_panic_is_an_error_and_fails_the_vm() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let err = vm
        .new_http()
        .unwrap()
        .request_headers(req("panic", &[]), true)
        .unwrap_err();
    match &err {
        Error::Trap { callback, message } => {
            assert_eq!(callback, "proxy_on_request_headers");
            assert!(message.contains("probe panic on request"), "{message}");
        }
        other => panic!("expected a trap, got {other}"),
    }
    assert!(vm.failure().unwrap().contains("probe panic"));
    // Like Envoy's fail-closed VM: nothing runs any more.
    assert!(matches!(vm.new_http().err(), Some(Error::VmFailed(_))));
    // Other VMs and harnesses are unaffected.
    let mut other = h.configured_vm(&probe(&h), b"").unwrap();
    assert_eq!(
        other
            .new_http()
            .unwrap()
            .round_trip(req("none", &[]))
            .unwrap(),
        Action::Continue
    );
}

#[test]
fn endless_guest_loop_is_interrupted() {
    let h = Harness::builder()
        .call_timeout(Duration::from_millis(200))
        .build();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let started = std::time::Instant::now();
    let err = vm
        .new_http()
        .unwrap()
        .request_headers(req("loop", &[]), true)
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&err, Error::Trap { message, .. } if message.contains("interrupted")),
        "{err}"
    );
}

#[test]
fn missing_import_is_named_when_called() {
    let wat = r#"(module
        (import "env" "proxy_does_not_exist" (func $nope (param i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "malloc") (param i32) (result i32) i32.const 1024)
        (func (export "proxy_on_context_create") (param i32 i32))
        (func (export "proxy_on_configure") (param i32 i32) (result i32)
            (call $nope (i32.const 1))))"#;
    let h = Harness::new();
    let m = h
        .module_from_bytes(wat.as_bytes(), "missing-import.wat")
        .unwrap();
    assert_eq!(m.unknown_imports(), vec!["env.proxy_does_not_exist"]);
    let mut vm = h.vm(&m).start().unwrap();
    let err = vm.configure(b"").unwrap_err();
    assert!(
        err.to_string().contains("`env.proxy_does_not_exist`"),
        "{err}"
    );
}

#[test]
fn not_a_proxy_wasm_module_is_a_setup_error() {
    let h = Harness::new();
    let m = h
        .module_from_bytes(b"(module (memory (export \"memory\") 1))", "plain.wat")
        .unwrap();
    let err = h.vm(&m).start().err().unwrap();
    assert!(err.to_string().contains("proxy_abi_version_0_2_1"), "{err}");
    assert!(h.module("/no/such/file.wasm").is_err());
}

#[test]
fn request_body_buffering_and_rewrite() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    assert_eq!(
        http.request_headers(req("body", &[]), false).unwrap(),
        Action::Continue
    );
    assert_eq!(http.request_body(b"hello ", false).unwrap(), Action::Pause);
    assert_eq!(http.request_body_buffered(), b"hello ");
    assert!(http.request_body_forwarded().is_empty());
    assert_eq!(http.request_body(b"world", true).unwrap(), Action::Continue);
    assert_eq!(http.request_body_forwarded(), b"HELLO WORLD");
    assert!(
        vm.logs_at(LogLevel::Info)
            .contains(&"body size 11".to_string()),
        "whole body at end of stream"
    );
}

#[test]
fn body_waits_while_headers_are_paused() {
    let h = Harness::new();
    h.declare_cluster("auth");
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    assert_eq!(
        http.request_headers(req("http-call", &[("x-probe-cluster", "auth")]), false)
            .unwrap(),
        Action::Pause
    );
    assert_eq!(http.request_body(b"early", false).unwrap(), Action::Pause);
    let id = http.id();
    let token = vm.http_calls()[0].token;
    vm.respond_http_call(token, HttpCallResponse::new(200, &[], b""))
        .unwrap();
    let mut http = vm.http(id).unwrap();
    assert_eq!(http.request_body(b"-late", true).unwrap(), Action::Continue);
    assert_eq!(http.request_body_forwarded(), b"early-late");
}

/// Envoy delivers a body that arrived while the filter was paused (here:
/// waiting for its callout) to `on_request_body` as soon as the filter
/// continues, and forwards it; no further data has to arrive first.
/// Checked against Envoy in tests/tests/envoy_vs_harness.rs.
#[test]
fn body_parked_while_paused_is_delivered_on_continue() {
    let h = Harness::new();
    h.declare_cluster("auth");
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    let headers = req("http-call-body", &[("x-probe-cluster", "auth")]);
    assert_eq!(http.request_headers(headers, false).unwrap(), Action::Pause);
    assert_eq!(http.request_body(b"hello", true).unwrap(), Action::Pause);
    assert!(http.request_body_forwarded().is_empty());
    let id = http.id();
    let token = vm.http_calls()[0].token;
    vm.respond_http_call(token, HttpCallResponse::new(200, &[], b""))
        .unwrap();
    let http = vm.http(id).unwrap();
    assert_eq!(http.request_body_forwarded(), b"HELLO");
    assert!(http.request_body_buffered().is_empty());
    assert!(vm
        .logs_at(LogLevel::Info)
        .contains(&"parked body size 5".to_string()));

    // Parked data without end of stream is delivered too; later data
    // follows normally.
    let mut http = vm.new_http().unwrap();
    let headers = req("http-call", &[("x-probe-cluster", "auth")]);
    http.request_headers(headers, false).unwrap();
    http.request_body(b"early", false).unwrap();
    let id = http.id();
    let token = vm.http_calls()[0].token;
    vm.respond_http_call(token, HttpCallResponse::new(200, &[], b""))
        .unwrap();
    let mut http = vm.http(id).unwrap();
    assert_eq!(http.request_body_forwarded(), b"early");
    assert_eq!(http.request_body(b"-late", true).unwrap(), Action::Continue);
    assert_eq!(http.request_body_forwarded(), b"early-late");
}

#[test]
fn trailers_close_and_foreign_functions() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    http.request_headers(req("none", &[]), false).unwrap();
    http.request_trailers([("x-trailer", "tv")]).unwrap();
    assert_eq!(
        http.request_trailers_map().get("x-trailer-seen").as_deref(),
        Some("1:tv")
    );

    let mut http = vm.new_http().unwrap();
    http.request_headers(req("close", &[]), true).unwrap();
    assert!(http.closed());

    let mut http = vm.new_http().unwrap();
    http.request_headers(req("foreign", &[]), true).unwrap();
    assert_eq!(
        http.request_header("x-probe-result").as_deref(),
        Some("Err(NotFound)")
    );
}

#[test]
fn response_path_and_finish_order() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    http.request_headers(req("none", &[]), true).unwrap();
    http.response_headers(Headers::from_pairs(&[(":status", "201")]), true)
        .unwrap();
    assert_eq!(
        http.response_header("x-probe-response").as_deref(),
        Some("seen")
    );
    let id = http.id();
    http.finish().unwrap();
    assert!(vm
        .logs_at(LogLevel::Info)
        .contains(&format!("on_log context={id} code=Some(201)")));
}

#[test]
fn harnesses_are_independent() {
    let a = Harness::new();
    let b = Harness::new();
    a.set_shared_data("vm", "k", b"v");
    assert!(b.shared_data("vm", "k").is_none());
    a.declare_cluster("c");
    let mut vm = b.configured_vm(&probe(&b), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    http.request_headers(req("http-call", &[("x-probe-cluster", "c")]), true)
        .unwrap();
    assert_eq!(
        http.request_header("x-probe-result").as_deref(),
        Some("BadArgument")
    );
}

#[test]
fn response_body_prepend_with_set_buffer_bytes() {
    let h = Harness::new();
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let mut http = vm.new_http().unwrap();
    http.request_headers(req("response-body", &[]), true)
        .unwrap();
    http.response_headers([(":status", "200")], false).unwrap();
    assert_eq!(
        http.response_body(b"hello ", false).unwrap(),
        Action::Continue
    );
    assert_eq!(
        http.response_body(b"world", true).unwrap(),
        Action::Continue
    );
    // set_buffer_bytes(start 0, size 0) prepends to the current chunk.
    assert_eq!(http.response_body_forwarded(), b"hello prefix:world");
}

#[test]
fn grpc_stream_open_send_receive_close() {
    let h = Harness::new();
    h.declare_cluster("events");
    let mut vm = h.configured_vm(&probe(&h), b"").unwrap();
    let id = {
        let mut http = vm.new_http().unwrap();
        let action = http
            .request_headers(req("grpc-stream", &[("x-probe-cluster", "events")]), true)
            .unwrap();
        assert_eq!(action, Action::Pause);
        http.id()
    };
    let streams = vm.grpc_streams();
    assert_eq!(streams.len(), 1);
    let s = &streams[0];
    assert_eq!(
        (s.service.as_str(), s.method.as_str(), s.context_id),
        ("probe.v1.Watch", "Events", id)
    );
    assert_eq!(s.initial_metadata.get("x-md").as_deref(), Some("s"));
    assert_eq!(s.sent, vec![b"subscribe".to_vec()]);
    assert!(!s.local_closed);
    let t = s.token;
    vm.grpc_stream_initial_metadata(t, Headers::from([("x-i", "1")]))
        .unwrap();
    vm.grpc_stream_message(t, b"event-1").unwrap();
    vm.grpc_stream_message(t, b"event-2").unwrap();
    vm.grpc_stream_close(t, Headers::from([("x-t", "done")]), 0, "")
        .unwrap();
    let logs: Vec<String> = vm
        .logs_at(LogLevel::Info)
        .into_iter()
        .filter(|l| l.starts_with("stream"))
        .collect();
    assert_eq!(
        logs,
        vec![
            format!("stream {t} initial 1 x-i=1"),
            format!("stream {t} message event-1"),
            format!("stream {t} message event-2"),
            format!("stream {t} trailing 1 x-t=done"),
            format!("stream {t} closed 0 get_status=0:"),
        ]
    );
    assert_eq!(vm.http(id).unwrap().request_resumed(), 1);
    assert!(vm.grpc_streams().is_empty());
    assert!(vm.grpc_stream_message(t, b"late").is_err(), "closed stream");

    // Unknown cluster: ParseFailure, as for unary calls.
    let mut http = vm.new_http().unwrap();
    http.request_headers(req("grpc-stream", &[("x-probe-cluster", "nope")]), true)
        .unwrap();
    assert_eq!(
        http.request_header("x-probe-result").as_deref(),
        Some("ParseFailure")
    );
}
