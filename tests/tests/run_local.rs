//! `make run`'s script really starts the stack on 127.0.0.1, serves the
//! documented curl examples (authn's three modes among them), and stops
//! every process on Ctrl-C (SIGINT).

use std::process::Command;
use std::time::Duration;

use meshguard_e2e::*;

#[test]
fn run_local_serves_and_stops_cleanly_on_ctrl_c() {
    envoy_bin();
    wasm_module("ab-routing");
    let dir = scratch_dir("run-local");
    let (listen, admin, upstream, auth) = (free_port(), free_port(), free_port(), free_port());
    let (rls, redis) = (free_port(), free_port());
    let mut cmd = Command::new(repo_root().join("scripts/run-local.sh"));
    cmd.env("LISTEN_PORT", listen.to_string())
        .env("ADMIN_PORT", admin.to_string())
        .env("UPSTREAM_PORT", upstream.to_string())
        .env("AUTH_PORT", auth.to_string())
        .env("RLS_PORT", rls.to_string())
        .env("REDIS_PORT", redis.to_string())
        // Not make run's own target/run/envoy.yaml.
        .env("RUN_DIR", dir.join("run"));
    let mut script = Proc::spawn("run-local", cmd, dir.join("run-local.log"));

    wait_until(Duration::from_secs(60), || {
        if let Some(status) = script.exited() {
            panic!(
                "run-local.sh exited early ({status}):\n{}",
                script.log_tail()
            );
        }
        script.log_text().contains("Press Ctrl-C to stop.")
    })
    .unwrap_or_else(|| panic!("run-local.sh not ready:\n{}", script.log_tail()));
    assert!(script
        .log_text()
        .contains(&format!("http://127.0.0.1:{listen}/checkout/cart")));

    // authn then ab-routing: the verified subject is the sticky key.
    let out = Command::new(meshguard_bin())
        .args(["token", "--sub", "bob"])
        .output()
        .expect("meshguard token");
    assert!(out.status.success());
    let bearer = format!("Bearer {}", String::from_utf8_lossy(&out.stdout).trim());
    let r = get(listen, "/checkout/cart", &[("authorization", &bearer)])
        .expect("request through make run");
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("bob"));
    let r = get(listen, "/api/items", &[]).expect("request through make run");
    assert_eq!(r.status, 401, "the API needs a token");
    let r = get(listen, "/checkout/cart", &[("authorization", &bearer)])
        .expect("request through make run");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-ab-variant").as_deref(),
        Some("treatment")
    );
    assert_eq!(
        r.upstream_header("x-demo-route").as_deref(),
        Some("treatment")
    );

    // authn's ext-auth mode on /legacy: the demo auth service decides.
    let r = get(listen, "/legacy/orders", &[]).expect("request through make run");
    assert_eq!(r.status, 401, "{}", r.body_text());
    let r = get(
        listen,
        "/legacy/orders",
        &[("authorization", "Bearer carol")],
    )
    .expect("request through make run");
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("carol"));
    // authn's HMAC mode on /signed, signed as the README shows with the demo
    // key (`meshguard sign`).
    let body = br#"{"qty": 1}"#;
    let r = request(listen, "POST", "/signed/orders", &[], body).expect("unsigned");
    assert_eq!(r.status, 401);
    let out = Command::new(meshguard_bin())
        .args([
            "sign",
            "POST",
            &format!("http://127.0.0.1:{listen}/signed/orders"),
        ])
        .args(["--body", r#"{"qty": 1}"#, "--key-id", "partner-demo"])
        .arg("--secret-file")
        .arg(repo_root().join("deploy/local/demo-keys/partner-demo.key"))
        .output()
        .expect("meshguard sign");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let signed: Vec<(&str, &str)> = lines.lines().filter_map(|l| l.split_once(": ")).collect();
    assert_eq!(signed.len(), 3, "{lines}");
    let host = format!("127.0.0.1:{listen}");
    let mut headers = signed.clone();
    headers.push(("host", &host));
    let r = request(listen, "POST", "/signed/orders", &headers, body).expect("signed");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        r.upstream_header("x-user-id").as_deref(),
        Some("partner-demo")
    );

    // ratelimit's global rule on /global: meshguard-rls (with Redis, which
    // CI installs) admits 10 a minute per client IP, then 429.
    let statuses: Vec<u16> = (0..12)
        .map(|_| {
            get(listen, "/global", &[])
                .expect("request through make run")
                .status
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}\n{}",
        script.log_tail()
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        script.log_text().contains("counters in Redis"),
        "{}",
        script.log_tail()
    );

    // The accesslog record of that request, as clean JSON on its own line
    // (the script strips Envoy's `wasm log …: ` prefix), with the identity
    // authn verified: another module, so it came through filter state
    // (`identity_filter_state: true` in deploy/local/filters.yaml).
    let record = wait_until(Duration::from_secs(10), || {
        script.log_text().lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                v["schema"] == "meshguard.access.v1"
                    && v["path"] == "/checkout/cart"
                    && v["variants"]["checkout"] == "treatment"
                    && v["identity"]["subject"] == "bob"
            })
        })
    });
    assert!(record.is_some(), "no clean record:\n{}", script.log_tail());

    // Ctrl-C: the script stops Envoy and the upstream, then exits 0.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(script.pid() as i32, libc::SIGINT) };
    let status = script
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("run-local.sh ignored Ctrl-C:\n{}", script.log_tail()));
    assert!(status.success(), "exit {status}:\n{}", script.log_tail());
    assert!(script.log_text().contains(
        "stopped Envoy, the demo upstream, the demo auth service and the rate-limit service"
    ));
    for port in [listen, admin, upstream, auth, rls, redis] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still served after Ctrl-C"
        );
    }
}
