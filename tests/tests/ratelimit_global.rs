//! ratelimit's global mode in real Envoy: two Envoys (two workers each)
//! with `dist/ratelimit.wasm`, one meshguard-rls, one Debian redis-server.
//! Together they admit exactly the service's limit; the 429 carries the
//! service's headers and a Retry-After; with the service gone the filter
//! fails as configured, never hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use meshguard_e2e::*;

const LIMITS: &str = r#"
- namespace: shop
  max_value: 10
  seconds: 300
  conditions: ["descriptors[0].rule == 'api-user'"]
  variables: ["descriptors[0].x_user_id"]
"#;

fn plugin_config(on_error: &str) -> String {
    serde_json::json!({
        "rules": [
            {"name": "api-user", "match": {"paths": [{"prefix": "/api"}]}, "key": ["header"], "global": true}
        ],
        "global": {"cluster": "rls", "domain": "shop", "timeout_ms": 500, "on_error": on_error},
        "response_headers": {"on_allowed": true}
    })
    .to_string()
}

fn rls_bin() -> std::path::PathBuf {
    let bin = cargo_target_dir().join("debug/meshguard-rls");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p meshguard-rls` (make e2e does)",
        bin.display()
    );
    bin
}

fn redis(dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    let proc = Proc::spawn("redis", cmd, dir.join("redis.log"));
    wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .unwrap_or_else(|| panic!("redis-server not up (apt-get install redis-server)"));
    (proc, port)
}

fn rls(dir: &std::path::Path, redis_port: u16) -> (Proc, u16) {
    let limits = dir.join("limits.yaml");
    std::fs::write(&limits, LIMITS).unwrap();
    let port = free_port();
    let mut cmd = Command::new(rls_bin());
    cmd.arg("--limits")
        .arg(&limits)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--redis", &format!("redis://127.0.0.1:{redis_port}")]);
    let mut proc = Proc::spawn("rls", cmd, dir.join("rls.log"));
    wait_until(Duration::from_secs(20), || {
        if let Some(status) = proc.exited() {
            panic!("meshguard-rls exited ({status}):\n{}", proc.log_tail());
        }
        proc.log_text().contains("listening on")
    })
    .unwrap_or_else(|| panic!("meshguard-rls not ready:\n{}", proc.log_tail()));
    (proc, port)
}

/// The module config with the `rls` cluster speaking HTTP/2 (gRPC).
fn envoy(dir: &std::path::Path, name: &str, upstream: u16, rls: u16, on_error: &str) -> Envoy {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    let mut config: serde_json::Value = serde_json::from_str(&module_envoy_config(
        &ports,
        upstream,
        &wasm_module("ratelimit"),
        "ratelimit",
        &plugin_config(on_error),
        &[("rls", rls)],
    ))
    .unwrap();
    for c in config["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
    {
        if c["name"] == "rls" {
            c["typed_extension_protocol_options"] = serde_json::json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            });
        }
    }
    Envoy::start(&sub, &config.to_string(), ports, 2)
}

#[test]
fn two_envoys_share_one_limit_through_the_service() {
    envoy_bin();
    let dir = scratch_dir("ratelimit-global");
    let upstream = Upstream::start(&dir);
    let (_redis, redis_port) = redis(&dir);
    let (mut rls_proc, rls_port) = rls(&dir, redis_port);
    let a = envoy(&dir, "a", upstream.port, rls_port, "allow");
    let b = envoy(&dir, "b", upstream.port, rls_port, "deny");

    // 16 clients at once, alternating Envoys, 40 requests for bob: the
    // service's limit is 10 per 5 minutes, shared.
    let (a_port, b_port) = (a.ports.listen, b.ports.listen);
    let handles: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for i in (t..40).step_by(16) {
                    let port = if i % 2 == 0 { a_port } else { b_port };
                    let r = get(port, "/api/items", &[("x-user-id", "bob")]).unwrap();
                    statuses.push(r.status);
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok, 10, "admitted across both Envoys: {statuses:?}");
    assert_eq!(ok + limited, statuses.len(), "{statuses:?}");

    // The 429: the service's X-RateLimit-* and a Retry-After; alice has her
    // own 10; no x-user-id: the rule is skipped.
    let r = a.get("/api/items", &[("x-user-id", "bob")]);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(
        r.body_text().contains("\"rule\":\"api-user\""),
        "{}",
        r.body_text()
    );
    let r = b.get("/api/items", &[("x-user-id", "alice")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("9"));
    assert_eq!(a.get("/api/items", &[]).status, 200);
    assert_eq!(a.get("/other", &[("x-user-id", "bob")]).status, 200);

    // The service gone: Envoy a fails open, Envoy b closed; neither hangs.
    unsafe { libc::kill(rls_proc.pid() as i32, libc::SIGTERM) };
    rls_proc.wait_exit(Duration::from_secs(10));
    let t = Instant::now();
    assert_eq!(a.get("/api/items", &[("x-user-id", "carol")]).status, 200);
    assert_eq!(b.get("/api/items", &[("x-user-id", "carol")]).status, 503);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(upstream);
}
