//! docker-compose.yaml is valid for Compose (checked by `docker-compose config`,
//! no engine needed) and renders the same Envoy config, which real Envoy
//! accepts in `--mode validate` with the real wasm module.

use std::process::Command;

use meshguard_e2e::*;

fn compose_file() -> String {
    std::fs::read_to_string(repo_root().join("docker-compose.yaml")).expect("docker-compose.yaml")
}

#[test]
fn compose_config_is_valid() {
    let out = Command::new("docker-compose")
        .current_dir(repo_root())
        .args(["-f", "docker-compose.yaml", "config", "--quiet"])
        .output()
        .expect("docker-compose not found: install the Debian package `docker-compose` (make test does it in .ci/run)");
    assert!(
        out.status.success(),
        "docker-compose config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_pins_envoy_and_binds_loopback() {
    let text = compose_file();
    let image = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: envoyproxy/envoy:"))
        .expect("envoy image");
    assert!(
        image.starts_with("v1.40."),
        "Envoy image must be pinned to 1.40.x, got {image}"
    );
    for port in ["\"127.0.0.1:10000:10000\"", "\"127.0.0.1:9901:9901\""] {
        assert!(
            text.contains(port),
            "port {port} must be published on loopback only"
        );
    }
}

/// Compose runs deploy/local/envoy.yaml, the renderer's compose output (a
/// unit test in istio/ keeps the file current); real Envoy validates it
/// with the real module.
#[test]
fn compose_runs_the_rendered_config_and_envoy_accepts_it() {
    let text = compose_file();
    assert!(
        text.contains("\"/meshguard/deploy/local/envoy.yaml\""),
        "compose must run the rendered deploy/local/envoy.yaml"
    );
    assert!(text.contains("./deploy/local/envoy.yaml:/meshguard/deploy/local/envoy.yaml:ro"));
    let rendered = meshguard::envoy::compose(&default_filters_file()).unwrap();
    let checked_in = std::fs::read_to_string(repo_root().join("deploy/local/envoy.yaml")).unwrap();
    assert_eq!(rendered, checked_in, "run `make deploy/local/envoy.yaml`");

    // The container's paths, mapped to this checkout's.
    let dir = scratch_dir("compose");
    let local = dir.join("envoy.yaml");
    let dist = repo_root().join("dist");
    std::fs::write(
        &local,
        checked_in.replace("/meshguard/dist", &dist.to_string_lossy()),
    )
    .unwrap();
    wasm_module("ab-routing");
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&local)
        .output()
        .expect("run envoy");
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && log.contains("OK"),
        "envoy rejected the compose config:\n{log}"
    );
    assert!(
        log.contains("ab-routing: configured 2 experiment(s)"),
        "{log}"
    );
}
