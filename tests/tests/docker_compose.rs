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

/// The folded `sed ... > /tmp/envoy.yaml && exec envoy ...` command, run
/// here against the repo's template, yields a config Envoy validates.
#[test]
fn compose_renders_a_config_envoy_accepts() {
    let text = compose_file();
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim() != "- >-")
        .skip(1)
        .take_while(|l| l.trim() != "volumes:")
        .map(str::trim)
        .collect();
    let command = block.join(" ");
    let (render, run) = command.split_once(" && ").expect("render && exec envoy");
    assert!(run.starts_with("exec envoy -c /tmp/envoy.yaml"), "{run}");
    let dir = scratch_dir("compose");
    let rendered = dir.join("envoy.yaml");
    let dist = repo_root().join("dist");
    let render = render
        .replace(
            "/meshguard/deploy/local/envoy.yaml",
            &repo_root()
                .join("deploy/local/envoy.yaml")
                .to_string_lossy(),
        )
        .replace("/meshguard/dist", &dist.to_string_lossy())
        .replace("/tmp/envoy.yaml", &rendered.to_string_lossy());
    let status = Command::new("sh")
        .args(["-c", &render])
        .status()
        .expect("sh");
    assert!(status.success(), "render failed: {render}");
    let config = std::fs::read_to_string(&rendered).unwrap();
    assert!(
        !config.contains("{{"),
        "placeholder left after compose rendering"
    );

    wasm_module("ab-routing");
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&rendered)
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
