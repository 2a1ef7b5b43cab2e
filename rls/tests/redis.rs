//! The `meshguard-rls` binary as Envoy would use it: two instances over one
//! Debian `redis-server` share a limit; Redis going away is UNAVAILABLE; SIGTERM
//! exits 0; a bad limits file or an unreachable Redis exits 1.
//!
//! Needs `redis-server` on PATH (Debian: `apt-get install redis-server`); each test
//! starts its own on a free port and kills that child at the end.

// Test code: the workspace denies these outside tests, and helpers here are not `#[test]`s.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_meshguard-rls");

/// A child process killed (by its own handle) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port for a Redis this test starts, below the kernel's ephemeral
/// range (`ip_local_port_range`, 32768+ by default) so no outgoing
/// connection can take it before Redis binds it (a released `bind(0)` port
/// can be); a counter hands each out once.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    assert!(
        ephemeral_start >= 12000,
        "the ephemeral port range starts at {ephemeral_start}: no room below it for Redis"
    );
    let span = ephemeral_start - 10000;
    let start = (std::process::id() % u32::from(span)) as u16;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free port for Redis");
        let port = 10000 + (start + n) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn start_redis() -> (Proc, u16) {
    let port = free_port();
    (start_redis_on(port), port)
}

fn start_redis_on(port: u16) -> Proc {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting redis-server ({e}); install it: apt-get install redis-server")
        });
    let redis = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server not up on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    redis
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshguard-rls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_limits(name: &str, yaml: &str) -> PathBuf {
    let path = temp_dir(name).join("limits.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Starts meshguard-rls on a free port and waits for its "listening on" line.
fn start_rls(limits: &PathBuf, redis_port: u16) -> (Proc, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--limits"])
        .arg(limits)
        .args(["--redis", &format!("redis://127.0.0.1:{redis_port}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("meshguard-rls printed nothing in 30 s");
    let addr = line
        .strip_prefix("meshguard-rls listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (proc, addr)
}

fn request(user: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: "api".to_string(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![
                Entry {
                    key: "path".to_string(),
                    value: "/v1/x".to_string(),
                },
                Entry {
                    key: "user".to_string(),
                    value: user.to_string(),
                },
            ],
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

async fn client(addr: SocketAddr) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn header<'a>(
    resp: &'a envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse,
    key: &str,
) -> &'a str {
    resp.response_headers_to_add
        .iter()
        .find(|h| h.key == key)
        .map(|h| h.value.as_str())
        .unwrap_or_else(|| panic!("no {key} in {resp:?}"))
}

/// SIGTERM by pid (the process this test started) and the exit status.
fn terminate(proc: &mut Proc) -> ExitStatus {
    let pid = proc.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "meshguard-rls still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LIMITS: &str = r#"
- namespace: api
  max_value: 10
  seconds: 60
  conditions: ["descriptors[0].path == '/v1/x'"]
  variables: ["descriptors[0].user"]
# With an `id`, limitador keys the counter in its binary encoding (the code
# third_party/limitador's patch compiles in for Redis).
- namespace: by-id
  id: by-id-limit
  max_value: 3
  seconds: 60
  variables: ["descriptors[0].user"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_limit_through_redis() {
    let (mut redis, redis_port) = start_redis();
    let limits = write_limits("shared", LIMITS);
    let (mut rls_a, addr_a) = start_rls(&limits, redis_port);
    let (mut rls_b, addr_b) = start_rls(&limits, redis_port);
    let mut clients = [client(addr_a).await, client(addr_b).await];

    // 15 calls for one user, alternating between the instances.
    let mut codes = Vec::new();
    for i in 0..15 {
        let resp = clients[i % 2]
            .should_rate_limit(request("alice"))
            .await
            .unwrap()
            .into_inner();
        let code = Code::try_from(resp.overall_code).unwrap();
        assert_eq!(header(&resp, "X-RateLimit-Limit"), "10, 10;w=60");
        let remaining: u64 = header(&resp, "X-RateLimit-Remaining").parse().unwrap();
        assert_eq!(remaining, 9u64.saturating_sub(i as u64), "call {i}");
        let reset: u64 = header(&resp, "X-RateLimit-Reset").parse().unwrap();
        assert!(reset <= 60, "{reset}");
        codes.push(code);
    }
    let ok = codes.iter().filter(|c| **c == Code::Ok).count();
    let over = codes.iter().filter(|c| **c == Code::OverLimit).count();
    assert_eq!((ok, over), (10, 5), "{codes:?}");
    assert!(codes[..10].iter().all(|c| *c == Code::Ok), "{codes:?}");

    // Another user has a counter of its own, on either instance.
    for c in clients.iter_mut() {
        let resp = c
            .should_rate_limit(request("bob"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.overall_code, i32::from(Code::Ok));
    }

    // A limit with an id: shared the same way.
    let mut by_id = Vec::new();
    for i in 0..5 {
        let mut req = request("carol");
        req.domain = "by-id".to_string();
        let resp = clients[i % 2]
            .should_rate_limit(req)
            .await
            .unwrap()
            .into_inner();
        by_id.push(Code::try_from(resp.overall_code).unwrap());
    }
    assert_eq!(
        by_id,
        [
            Code::Ok,
            Code::Ok,
            Code::Ok,
            Code::OverLimit,
            Code::OverLimit
        ]
    );

    // Redis gone: UNAVAILABLE at once, every time, so Envoy's failure_mode_deny decides.
    let _ = redis.0.kill();
    let _ = redis.0.wait();
    for _ in 0..2 {
        for c in clients.iter_mut() {
            let started = Instant::now();
            let status = tokio::time::timeout(
                Duration::from_secs(10),
                c.should_rate_limit(request("alice")),
            )
            .await
            .expect("no answer within 10 s with Redis down")
            .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
    }

    // Redis back (empty: no persistence): counting again from zero, on both.
    let _redis = start_redis_on(redis_port);
    for (i, c) in clients.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let resp = loop {
            match c.should_rate_limit(request("alice")).await {
                Ok(resp) => break resp.into_inner(),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    assert!(
                        Instant::now() < deadline,
                        "still {status:?} 10 s after Redis is back"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(resp.overall_code, i32::from(Code::Ok));
        assert_eq!(header(&resp, "X-RateLimit-Remaining"), ["9", "8"][i]);
    }

    drop(clients);
    assert_eq!(terminate(&mut rls_a).code(), Some(0));
    assert_eq!(terminate(&mut rls_b).code(), Some(0));
}

fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), stderr)
}

#[test]
fn bad_limits_file_exits_1_naming_the_entry() {
    let limits = write_limits(
        "bad",
        "- {namespace: api, max_value: 1, seconds: 60}\n- {namespace: api, max_value: 1, seconds: 60, conditions: [\"path == '/x'\"]}\n",
    );
    let limits = limits.to_str().unwrap();
    let (status, stderr) = run_to_exit(&["--limits", limits, "--memory"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "meshguard-rls: {limits}: limit #1: conditions[0] `path == '/x'`: names `path`"
        )),
        "{stderr}"
    );
}

#[test]
fn unreachable_redis_exits_1() {
    let limits = write_limits("noredis", LIMITS);
    let port = free_port();
    let (status, stderr) = run_to_exit(&[
        "--limits",
        limits.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--redis",
        &format!("redis://127.0.0.1:{port}"),
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("connecting to Redis"), "{stderr}");
}
