//! ratelimit in real Envoy (V8, two workers): under 16 concurrent
//! keep-alive connections on one key for a bounded run, the number of admitted requests never
//! exceeds burst + rate × elapsed (zero over-admission: both workers spend
//! one bucket in shared data with compare-and-swap), and limiting happens;
//! the 429 carries Retry-After and the rate-limit headers; `make run`'s
//! chain limits the demo path and the accesslog record carries the
//! decision.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshguard_e2e::*;
use serde_json::{json, Value};

const BURST: u64 = 20;
const RATE: u64 = 50; // per second
const CLIENTS: usize = 16;
const RUN: Duration = Duration::from_secs(4);

/// One client connection kept alive for many requests: the load is 16
/// real concurrent connections, not a connection per request.
struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    fn connect(port: u16) -> std::io::Result<Self> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            reader: BufReader::new(s),
        })
    }

    /// GET `path`; the status, or an error (then reconnect).
    fn get(&mut self, path: &str, user: &str) -> std::io::Result<u16> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nx-user-id: {user}\r\n\r\n");
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}

fn envoy_with(dir: &std::path::Path, upstream: u16, config: Value, workers: u32) -> Envoy {
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let filter = WasmFilter::module("ratelimit", &wasm_module("ratelimit"), config);
    let config = local_envoy_config(&ports, upstream, vec![filter]);
    Envoy::start(dir, &config, ports, workers)
}

/// Two workers, 16 clients, one key, 4 s: admitted <= burst + rate × elapsed.
/// Every request reads and writes the shared bucket (a burst of 20 makes
/// the worker batch 1).
#[test]
fn two_workers_never_over_admit_under_concurrent_load() {
    accuracy_run("ratelimit-accuracy", BURST, None, 1);
}

/// The same with each worker taking 32 tokens at a time from the shared
/// bucket (opt-in `worker_batch`): over the whole run still within
/// burst + rate × elapsed, and at most the tokens the two workers hold at
/// the end short of it. (Over a short window a worker may spend held
/// tokens the bucket has refilled behind: up to 31 per worker, documented.)
#[test]
fn two_workers_with_token_batches_stay_within_the_run_bound() {
    accuracy_run("ratelimit-accuracy-batched", 2000, Some(32), 32);
}

fn accuracy_run(name: &str, burst: u64, worker_batch: Option<u32>, batch: u64) {
    envoy_bin();
    let dir = scratch_dir(name);
    let upstream = Upstream::start(&dir);
    let mut config = json!({
        "rules": [{"name": "hot", "key": ["header"],
                   "limit": {"requests": RATE, "per": "second", "burst": burst}}]
    });
    if let Some(b) = worker_batch {
        config["worker_batch"] = json!(b);
    }
    let envoy = envoy_with(&dir, upstream.port, config, 2);
    let port = envoy.ports.listen;

    let admitted = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    // The bucket is created by the first request, after `start`; the last
    // answer arrives before `end`: [start, end] covers everything the
    // bucket could have refilled.
    let start = Instant::now();
    let deadline = start + RUN;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (admitted, limited, other) = (
                Arc::clone(&admitted),
                Arc::clone(&limited),
                Arc::clone(&other),
            );
            std::thread::spawn(move || {
                let mut conn = KeepAlive::connect(port).expect("connect");
                while Instant::now() < deadline {
                    match conn.get("/hot", "hot-user") {
                        Ok(200) => admitted.fetch_add(1, Ordering::Relaxed),
                        Ok(429) => limited.fetch_add(1, Ordering::Relaxed),
                        _ => {
                            conn = KeepAlive::connect(port).expect("reconnect");
                            other.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed();
    let admitted = admitted.load(Ordering::Relaxed);
    let limited = limited.load(Ordering::Relaxed);
    let allowed = burst + (RATE as f64 * elapsed.as_secs_f64()).floor() as u64;
    println!(
        "Envoy --concurrency 2, {CLIENTS} clients, {:.2}s: admitted {admitted}, allowed {allowed} \
         (burst {burst} + {RATE}/s, worker batch {batch}), limited {limited}, other {}",
        elapsed.as_secs_f64(),
        other.load(Ordering::Relaxed)
    );
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "{}",
        envoy.proc.log_tail()
    );
    assert!(
        admitted <= allowed,
        "over-admission: {admitted} admitted, at most {allowed} allowed"
    );
    assert!(
        limited > admitted,
        "the load must exceed the limit: {limited} limited"
    );
    // Not starved either: the bucket's whole refill over the run (minus
    // the time before the first and after the last request, and the
    // tokens each worker may still hold unspent) was used.
    let floor = burst + RATE * (RUN.as_secs() - 1) - 2 * (batch - 1);
    assert!(
        admitted >= floor,
        "only {admitted} admitted, want >= {floor}"
    );

    // The batched counters of both workers reach Envoy's stats on their
    // next tick.
    let stats = |name: &str| envoy.counter(&format!("wasmcustom.meshguard_ratelimit_{name}"));
    let counted = wait_until(Duration::from_secs(5), || {
        stats("allowed.hot") == admitted && stats("limited.hot") == limited
    });
    assert!(
        counted.is_some(),
        "stats allowed {} limited {}, want {admitted} {limited}",
        stats("allowed.hot"),
        stats("limited.hot")
    );
    assert_eq!(stats("buckets"), 1, "one key, one live bucket");
    assert_eq!(stats("errors"), 0);
    drop(upstream);
}

/// What a client sees: headers on every answer (here `on_allowed`), the
/// 429 with Retry-After and a JSON body, another key unaffected, refill.
#[test]
fn limited_answer_carries_retry_after_and_rate_headers() {
    envoy_bin();
    let dir = scratch_dir("ratelimit-headers");
    let upstream = Upstream::start(&dir);
    let config = json!({
        "rules": [{"name": "login", "match": {"paths": [{"exact": "/login"}]},
                   "key": ["client_ip"], "limit": {"requests": 2, "per": "second"}},
                  {"name": "once", "match": {"paths": [{"exact": "/once"}]},
                   "key": ["client_ip"], "limit": {"requests": 1, "per": "minute"}}],
        "response_headers": {"on_allowed": true}
    });
    let envoy = envoy_with(&dir, upstream.port, config, 2);
    let first = envoy.get("/login", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2, 2;w=1"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(first.header("ratelimit-policy"), Some("\"login\";q=2;w=1"));
    let second = envoy.get("/login", &[]);
    assert_eq!(second.status, 200);
    let r = envoy.get("/login", &[]);
    assert_eq!(r.status, 429, "{}", r.body_text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("ratelimit"), Some("\"login\";r=0;t=1"));
    let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["rule"], "login");
    // Other spellings of a path are that path (the upstream reads `;`
    // parameters and escapes away; Envoy leaves them): they spend and meet
    // its bucket.
    assert_eq!(envoy.get("/once", &[]).status, 200);
    for spelling in ["/once;jsessionid=1", "/%6fnce", "/x/..;/once", "//once"] {
        let r = envoy.get(spelling, &[]);
        assert_eq!(r.status, 429, "{spelling}: {}", r.body_text());
    }
    // Other paths are not limited; after a second the client may go again.
    assert_eq!(envoy.get("/other", &[]).status, 200);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(envoy.get("/login", &[]).status, 200);
    drop(upstream);
}

/// `make run`'s chain (deploy/local/filters.yaml): the demo rule limits
/// `/limited` per client, and the accesslog record carries the decision
/// ratelimit wrote to filter state.
#[test]
fn local_chain_limits_the_demo_path_and_logs_the_decision() {
    envoy_bin();
    wasm_module("ratelimit");
    let dir = scratch_dir("ratelimit-chain");
    let upstream = Upstream::start(&dir);
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let config = local_envoy_config(&ports, upstream.port, local_filters());
    let envoy = Envoy::start(&dir, &config, ports, 2);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = envoy.get("/limited", &[("x-tenant", &format!("rl-{i}"))]);
        statuses.push(r.status);
    }
    // Anonymous: the demo-ip rule, 5 a minute for this client.
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // Other paths are untouched by the demo rule.
    for _ in 0..10 {
        assert_eq!(envoy.get("/checkout", &[]).status, 200);
    }
    let records = wait_until(Duration::from_secs(10), || {
        envoy.proc.log_text().contains("\"rate_limit\":\"limited\"")
            && envoy.proc.log_text().contains("\"rate_limit\":\"allowed\"")
    });
    assert!(records.is_some(), "{}", envoy.proc.log_tail());
    drop(upstream);
}
