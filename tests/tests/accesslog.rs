//! accesslog in real Envoy (V8): the records `make run` prints (with
//! ab-routing's variant crossing modules through filter state), the parser
//! rule the README documents applied to Envoy's real log, shipping to a
//! counting collector (demo/collector.py) with no loss under load, the
//! collector going away and coming back, and the module as an
//! `envoy.access_loggers.wasm` logger.

#[path = "../../filters/accesslog/tests/cases/mod.rs"]
mod cases;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshguard_e2e::*;
use serde_json::{json, Value};

const WASM_COUNTER: &str = "wasmcustom.meshguard_accesslog_";

/// The records in Envoy's log: the JSON after `wasm log …: ` on lines of
/// the `wasm` logger (the rule the README gives shippers).
fn records_in(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.contains("][wasm] "))
        .filter_map(|l| {
            let at = l.find("wasm log")?;
            let rest = l.get(at..)?;
            let json = rest.get(rest.find(": {")? + 2..)?;
            serde_json::from_str::<Value>(json).ok()
        })
        .filter(|v| v["schema"] == "meshguard.access.v1")
        .collect()
}

fn wait_records(envoy: &Envoy, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        last = records_in(&envoy.proc.log_text());
        want(&last)
    });
    assert!(ok.is_some(), "records never matched; have {last:#?}");
    last
}

fn tenant(v: &Value) -> Option<&str> {
    v["request_headers"]["x-tenant"].as_str()
}

#[test]
fn demo_config_is_the_case_table_config() {
    let local = local_plugin_config("accesslog");
    let table: Value = serde_json::from_str(cases::CONFIG).unwrap();
    assert_eq!(local, table);
}

/// `make run`'s chain: ab-routing then accesslog, separate modules. The
/// record carries the variant ab-routing assigned (filter state), every
/// request gives exactly one record, health checks none, and an upstream
/// that is down shows Envoy's `UF` flag.
#[test]
fn local_chain_records_carry_the_variant_and_envoys_outcome() {
    wasm_module("accesslog");
    let mut stack = Stack::start("al-chain");
    let r = stack.envoy.get(
        "/checkout/cart?token=s3cret&page=2",
        &[
            ("x-user-id", "bob"),
            ("x-tenant", "t-first"),
            ("authorization", "Bearer abc"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    );
    assert_eq!(r.status, 200);
    let variant = r.upstream_header("x-ab-variant").expect("variant assigned");
    let recs = wait_records(&stack.envoy, |r| {
        r.iter().any(|v| tenant(v) == Some("t-first"))
    });
    let rec = recs.iter().find(|v| tenant(v) == Some("t-first")).unwrap();
    assert_eq!(rec["variants"]["checkout"], json!(variant), "{rec:#}");
    assert_eq!(rec["path"], "/checkout/cart?token=REDACTED&page=2");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["method"], "GET");
    assert_eq!(rec["response_flags"], Value::Null);
    assert_eq!(rec["response_code_details"], "via_upstream");
    assert_eq!(rec["upstream_cluster"], "demo_upstream", "{rec:#}");
    assert_eq!(
        rec["upstream_host"],
        json!(format!("127.0.0.1:{}", stack.upstream.port))
    );
    assert_eq!(rec["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(rec["request_headers"]["authorization"], "[REDACTED]");
    assert_eq!(rec["protocol"], "HTTP/1.1");
    assert!(rec["duration_ms"].as_f64().is_some(), "{rec:#}");
    assert!(rec["bytes_sent"].as_u64().unwrap() > 0, "{rec:#}");
    assert!(rec["downstream_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let ts = rec["timestamp"].as_str().unwrap();
    assert!(ts.len() == 24 && ts.ends_with('Z'), "{ts}");
    assert!(rec["request_id"].as_str().is_some_and(|s| !s.is_empty()));

    // Exactly one record per request; health checks none.
    for i in 0..20 {
        let r = stack.envoy.get("/x", &[("x-tenant", &format!("t-{i}"))]);
        assert_eq!(r.status, 200);
    }
    assert_eq!(stack.envoy.get("/healthz", &[]).status, 200);
    let recs = wait_records(&stack.envoy, |r| {
        r.iter()
            .filter(|v| tenant(v).is_some_and(|t| t.starts_with("t-") && t != "t-first"))
            .count()
            >= 20
    });
    let tenants: Vec<&str> = recs.iter().filter_map(tenant).collect();
    for i in 0..20 {
        let t = format!("t-{i}");
        assert_eq!(tenants.iter().filter(|x| **x == t).count(), 1, "{t}");
    }
    assert!(!recs.iter().any(|v| v["path"] == "/healthz"));
    // Per-record counters reach Envoy's stats on the filter's 1 s timer.
    let excluded = format!("{WASM_COUNTER}excluded");
    wait_until(Duration::from_secs(5), || {
        stack.envoy.counter(&excluded) >= 1
    });
    assert_eq!(stack.envoy.counter(&excluded), 1);

    // The documented shipper rule (regex of the README, Fluent Bit /
    // OpenTelemetry filelog flavour) finds every record in Envoy's log.
    let log_path = stack.dir.join("envoy.log");
    let extracted = parser_rule_payloads(&log_path);
    assert_eq!(extracted.len(), recs.len(), "parser rule vs records");

    // Upstream down: 503 with Envoy's connection-failure flag.
    let pid = stack.upstream.proc.pid() as i32;
    // SAFETY: a plain kill(2) of the upstream this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    stack
        .upstream
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("upstream stopped");
    let r = stack.envoy.get("/down", &[("x-tenant", "t-down")]);
    assert_eq!(r.status, 503);
    let recs = wait_records(&stack.envoy, |r| {
        r.iter().any(|v| tenant(v) == Some("t-down"))
    });
    let rec = recs.iter().find(|v| tenant(v) == Some("t-down")).unwrap();
    assert_eq!(rec["status"], 503);
    let flags = rec["response_flags"].as_str().unwrap_or_default();
    assert!(flags.split(',').any(|f| f == "UF"), "{rec:#}");
}

/// The README's regex, run by Python's `re` (the syntax OpenTelemetry's
/// filelog `regex_parser` uses) over Envoy's log; payloads that are records.
fn parser_rule_payloads(log: &Path) -> Vec<Value> {
    let script = r#"
import json, re, sys
rule = re.compile(r'^\[(?P<time>[^\]]+)\]\[(?P<thread>[^\]]+)\]\[(?P<level>[^\]]+)\]\[wasm\] (?:\[(?P<src>[^\]]+)\] )?wasm log(?P<plugin>[^:]*): (?P<payload>\{.*\})$')
for line in open(sys.argv[1], encoding='utf-8', errors='replace'):
    m = rule.match(line.rstrip('\n'))
    if m:
        p = json.loads(m.group('payload'))
        if p.get('schema') == 'meshguard.access.v1':
            print(json.dumps(p))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(log)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A collector process on a given port (restartable on the same port).
fn collector(dir: &Path, port: u16, name: &str) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("demo/collector.py")).args([
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]);
    let mut p = Proc::spawn(name, cmd, dir.join(format!("{name}.log")));
    wait_until(Duration::from_secs(15), || {
        assert!(p.exited().is_none(), "collector exited:\n{}", p.log_tail());
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .expect("collector listening");
    p
}

fn collector_stats(port: u16) -> Value {
    match get(port, "/stats", &[]) {
        Ok(r) => serde_json::from_str(&r.body_text()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

fn collector_records(port: u16) -> Vec<Value> {
    get(port, "/records", &[])
        .map(|r| {
            r.body_text()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// Envoy running `make run`'s chain with accesslog's config replaced, and a
/// `collector` cluster.
fn shipping_envoy(
    dir: &Path,
    upstream: u16,
    collector_port: u16,
    accesslog: Value,
    workers: u32,
) -> Envoy {
    let mut filters = local_filters();
    for f in filters.iter_mut().filter(|f| f.name == "accesslog") {
        f.config = accesslog.clone();
    }
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let config = Local {
        listen: Addr::new("127.0.0.1", ports.listen),
        admin: Addr::new("127.0.0.1", ports.admin),
        upstream: Addr::new("127.0.0.1", upstream),
        filters,
        grpc_clusters: Vec::new(),
        clusters: vec![("collector".into(), Addr::new("127.0.0.1", collector_port))],
    }
    .to_yaml("accesslog e2e")
    .unwrap();
    Envoy::start(dir, &config, ports, workers)
}

/// `n` requests from `threads` clients, each tagged `x-tenant: <prefix><i>`;
/// every one must answer 200. Returns the slowest answer.
fn load(port: u16, n: usize, threads: usize, prefix: &str) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let next = Arc::clone(&next);
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return slowest;
                    }
                    let t = format!("{prefix}{i}");
                    let start = Instant::now();
                    let r = get(port, "/load", &[("x-tenant", &t)]).expect("request");
                    assert_eq!(r.status, 200, "{t}");
                    slowest = slowest.max(start.elapsed());
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap_or_default()
}

fn ship_config(format: &str, extra: Value) -> Value {
    let mut c = json!({
        "tags": {"environment": "e2e", "cluster": "local", "namespace": "demo", "workload": "envoy"},
        "headers": {"request": ["x-tenant"]},
        "log_line": {"enabled": false},
        "ship": {"cluster": "collector", "format": format, "flush_interval_ms": 100, "batch_max_records": 100}
    });
    if let (Some(ship), Some(extra)) = (c["ship"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            ship.insert(k.clone(), v.clone());
        }
    }
    c
}

fn assert_exactly(records: &[Value], prefix: &str, n: usize) {
    let got: Vec<&str> = records
        .iter()
        .filter_map(tenant)
        .filter(|t| t.starts_with(prefix))
        .collect();
    let unique: BTreeSet<&str> = got.iter().copied().collect();
    assert_eq!(
        got.len(),
        n,
        "records with {prefix}*: {} (unique {})",
        got.len(),
        unique.len()
    );
    let want: BTreeSet<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let unique: BTreeSet<String> = unique.into_iter().map(String::from).collect();
    assert_eq!(unique, want);
}

/// N requests under moderate load (8 clients, 2 workers) → exactly N
/// records at the collector, over OTLP/HTTP JSON, then over `_bulk`.
#[test]
fn shipping_loses_nothing_under_moderate_load() {
    wasm_module("accesslog");
    for (format, n) in [("otlp", 2000), ("bulk", 500)] {
        let dir = scratch_dir(&format!("al-ship-{format}"));
        let upstream = Upstream::start(&dir);
        let cport = free_port();
        let _collector = collector(&dir, cport, "collector");
        let envoy = shipping_envoy(
            &dir,
            upstream.port,
            cport,
            ship_config(format, json!({})),
            2,
        );
        load(envoy.ports.listen, n, 8, "L");
        let done = wait_until(Duration::from_secs(20), || {
            collector_stats(cport)["records"].as_u64() == Some(n as u64)
        });
        assert!(
            done.is_some(),
            "{format}: collector has {}",
            collector_stats(cport)
        );
        // Nothing more arrives later (no duplicates from retries).
        std::thread::sleep(Duration::from_millis(500));
        let stats = collector_stats(cport);
        assert_eq!(stats["records"], json!(n), "{format}");
        assert_eq!(stats["bad"], json!(0), "{format}");
        let recs = collector_records(cport);
        assert_exactly(&recs, "L", n);
        assert!(recs
            .iter()
            .all(|r| r["environment"] == "e2e" && r["status"] == 200));
        assert_eq!(envoy.counter(&format!("{WASM_COUNTER}shipped")), n as u64);
        assert_eq!(envoy.counter(&format!("{WASM_COUNTER}dropped")), 0);
        // Per-record counters follow on the filter's timer.
        let records = format!("{WASM_COUNTER}records");
        wait_until(Duration::from_secs(5), || {
            envoy.counter(&records) >= n as u64
        });
        assert_eq!(envoy.counter(&records), n as u64);
    }
}

/// Collector down: requests unaffected (all 200, none slow), the buffer
/// stays bounded and drops are counted; when it comes back, records flow
/// again.
#[test]
fn collector_down_never_hurts_requests_and_recovers() {
    wasm_module("accesslog");
    let dir = scratch_dir("al-down");
    let upstream = Upstream::start(&dir);
    let cport = free_port();
    let first = collector(&dir, cport, "collector-1");
    let buffer = 64 * 1024;
    let extra = json!({"buffer_max_bytes": buffer, "batch_max_bytes": 16384, "timeout_ms": 500,
                       "max_retries": 2, "retry_backoff_ms": 100, "retry_backoff_max_ms": 400});
    let envoy = shipping_envoy(&dir, upstream.port, cport, ship_config("otlp", extra), 2);
    load(envoy.ports.listen, 50, 4, "A");
    wait_until(Duration::from_secs(10), || {
        collector_stats(cport)["records"].as_u64() == Some(50)
    })
    .expect("records before the outage");
    drop(first);

    let slowest = load(envoy.ports.listen, 1500, 8, "D");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );
    let dropped = envoy.counter(&format!("{WASM_COUNTER}dropped"));
    assert!(dropped > 0, "no drops counted");
    assert!(envoy.counter(&format!("{WASM_COUNTER}ship_failures")) > 0);
    let held = envoy.counter(&format!("{WASM_COUNTER}buffer_bytes"));
    assert!(
        held <= 2 * buffer as u64,
        "held {held} bytes over 2 workers"
    );

    let _second = collector(&dir, cport, "collector-2");
    // Let retries of old batches finish or give up, then new records flow.
    std::thread::sleep(Duration::from_secs(2));
    load(envoy.ports.listen, 30, 2, "B");
    let back = wait_until(Duration::from_secs(10), || {
        collector_records(cport)
            .iter()
            .filter(|r| tenant(r).is_some_and(|t| t.starts_with('B')))
            .count()
            == 30
    });
    assert!(back.is_some(), "after recovery: {}", collector_stats(cport));
    assert_exactly(&collector_records(cport), "B", 30);
}

/// The same module as an `envoy.access_loggers.wasm` logger (no HTTP
/// filter): one record per request, with ab-routing's variant read from
/// filter state.
#[test]
fn as_an_access_logger() {
    wasm_module("accesslog");
    let dir = scratch_dir("al-logger");
    let upstream = Upstream::start(&dir);
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let mut filters = local_filters();
    let accesslog = filters
        .iter()
        .position(|f| f.name == "accesslog")
        .map(|i| filters.remove(i))
        .expect("accesslog in filters.yaml");
    let mut config = Local {
        listen: Addr::new("127.0.0.1", ports.listen),
        admin: Addr::new("127.0.0.1", ports.admin),
        upstream: Addr::new("127.0.0.1", upstream.port),
        filters,
        grpc_clusters: Vec::new(),
        clusters: Vec::new(),
    }
    .to_value();
    let block = accesslog.block();
    let plugin = block["typed_config"]["config"].clone();
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    hcm["access_log"] = json!([{
        "name": "envoy.access_loggers.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.wasm.v3.WasmAccessLog",
            "config": plugin,
        }
    }]);
    let envoy = Envoy::start(&dir, &config.to_string(), ports, 2);
    for i in 0..10 {
        let r = envoy.get(
            "/checkout",
            &[
                ("x-user-id", &format!("u{i}")),
                ("x-tenant", &format!("g-{i}")),
            ],
        );
        assert_eq!(r.status, 200);
        let variant = r.upstream_header("x-ab-variant").unwrap();
        let t = format!("g-{i}");
        let recs = wait_records(&envoy, |r| r.iter().any(|v| tenant(v) == Some(t.as_str())));
        let matching: Vec<&Value> = recs
            .iter()
            .filter(|v| tenant(v) == Some(t.as_str()))
            .collect();
        assert_eq!(matching.len(), 1);
        assert_eq!(matching[0]["variants"]["checkout"], json!(variant));
        assert_eq!(matching[0]["status"], 200);
        assert_eq!(matching[0]["upstream_cluster"], "demo_upstream");
    }
}

/// rotel's agent (PyPI `rotel`, installed by `make venv`): a real OTLP
/// receiver. Fails with the command that installs it.
fn rotel_agent() -> std::path::PathBuf {
    let lib = repo_root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("site-packages/rotel/rotel-agent"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| panic!("rotel not found under {}: run `make venv`", lib.display()))
}

/// The OTLP/HTTP JSON batches are accepted by a real OTLP receiver (rotel),
/// which decodes every logRecord: body, severity, attributes, trace ids.
#[test]
fn a_real_otlp_receiver_accepts_the_batches() {
    wasm_module("accesslog");
    let dir = scratch_dir("al-rotel");
    let upstream = Upstream::start(&dir);
    let (http, grpc) = (free_port(), free_port());
    let mut cmd = Command::new(rotel_agent());
    cmd.args(["start", "--exporter", "blackhole"])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--debug-log", "logs", "--debug-log-verbosity", "detailed"]);
    let mut rotel = Proc::spawn("rotel", cmd, dir.join("rotel.log"));
    wait_until(Duration::from_secs(15), || {
        assert!(
            rotel.exited().is_none(),
            "rotel exited:\n{}",
            rotel.log_tail()
        );
        std::net::TcpStream::connect(("127.0.0.1", http)).is_ok()
    })
    .expect("rotel listening");
    let envoy = shipping_envoy(&dir, upstream.port, http, ship_config("otlp", json!({})), 2);
    let n = 100;
    for i in 0..n {
        let t = format!("R{i}");
        let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e{i:04}-00f067aa0ba902b7-01");
        let r = envoy.get("/rotel", &[("x-tenant", &t), ("traceparent", &tp)]);
        assert_eq!(r.status, 200);
    }
    // rotel prints each decoded record: `Body: Str(<record>)`.
    let bodies = || -> Vec<Value> {
        rotel
            .log_text()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Body: Str(")?.strip_suffix(')'))
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect()
    };
    let ok = wait_until(Duration::from_secs(15), || bodies().len() >= n);
    assert!(
        ok.is_some(),
        "rotel decoded {} records:\n{}",
        bodies().len(),
        rotel.log_tail()
    );
    let recs = bodies();
    assert_exactly(&recs, "R", n);
    let log = rotel.log_text();
    assert!(
        log.contains("service.name: Str(envoy)"),
        "{}",
        rotel.log_tail()
    );
    assert!(log.contains("SEVERITY_NUMBER_INFO(9)"));
    assert!(log.contains("http.response.status_code: Int(200)"));
    assert!(log.contains("Trace ID       : 4bf92f3577b34da6a3ce929d0e0e0042"));
    assert_eq!(envoy.counter(&format!("{WASM_COUNTER}shipped")), n as u64);
    assert_eq!(envoy.counter(&format!("{WASM_COUNTER}dropped")), 0);
}
