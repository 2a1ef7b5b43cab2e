//! The example policy's rendered manifests are checked in under
//! istio/rendered/ (what a user can `kubectl apply -f`); they must be what
//! the CLI renders now. Also the CLI's exit codes and `-o DIR`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn meshguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run meshguard")
}

const POLICY: &str = "istio/examples/shop.yaml";

/// (checked-in file, render arguments after the policy)
const GOLDEN: &[(&str, &[&str])] = &[
    ("istio/rendered/test.yaml", &["--env", "test"]),
    ("istio/rendered/pre-release.yaml", &["--env", "pre-release"]),
    ("istio/rendered/production.yaml", &["--env", "production"]),
    (
        "istio/rendered/envoyfilter/production-local.yaml",
        &["--env", "production", "--envoyfilter", "local"],
    ),
    (
        "istio/rendered/envoyfilter/production-ecds.yaml",
        &["--env", "production", "--envoyfilter", "ecds"],
    ),
];

#[test]
fn checked_in_manifests_are_what_render_gives() {
    let mut stale = Vec::new();
    for (file, args) in GOLDEN {
        let mut all = vec!["render", POLICY];
        all.extend_from_slice(args);
        let out = meshguard(&all);
        assert!(
            out.status.success(),
            "meshguard {}: {}",
            all.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let checked_in = std::fs::read(repo().join(file)).unwrap_or_default();
        if checked_in != out.stdout {
            stale.push(*file);
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {}; run `make rendered` and review the diff",
        stale.join(", ")
    );
}

#[test]
fn the_example_policy_validates() {
    let out = meshguard(&["validate", POLICY]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "istio/examples/shop.yaml: ok (4 checked: the base policy and environments pre-release, production, test)\n"
    );
}

#[test]
fn output_dir_gets_one_file_per_resource() {
    let dir = std::env::temp_dir().join(format!("mg-render-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = meshguard(&[
        "render",
        POLICY,
        "--env",
        "production",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 11, "{names:?}");
    assert!(names.contains(&"wasmplugin.shop.ab-routing.yaml".to_string()));
    assert!(names.contains(&"destinationrule.payments.payments.yaml".to_string()));
    // Each file is one document of the stream, with the same header.
    let stream = std::fs::read_to_string(repo().join("istio/rendered/production.yaml")).unwrap();
    let wp = std::fs::read_to_string(dir.join("wasmplugin.shop.ab-routing.yaml")).unwrap();
    let (header, body) = wp.split_once('\n').unwrap();
    assert!(stream.starts_with(header));
    assert!(stream.contains(&format!("---\n{body}")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exit_codes() {
    // 2: usage.
    assert_eq!(meshguard(&["render"]).status.code(), Some(2));
    assert_eq!(
        meshguard(&["render", POLICY, "--bogus"]).status.code(),
        Some(2)
    );
    // 1: invalid input, with the file and line on stderr.
    let bad = std::env::temp_dir().join(format!("mg-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &bad,
        "mesh: {namespace: shop, registry: r/x}\nservices:\n  a: {role: base, timeout: 1us}\n",
    )
    .unwrap();
    for cmd in ["validate", "render"] {
        let out = meshguard(&[cmd, bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}:3: services.a.timeout: `1us`", bad.display())),
            "{cmd}: {err}"
        );
        assert!(out.stdout.is_empty(), "{cmd}: nothing on stdout");
    }
    std::fs::remove_file(&bad).unwrap();
    let out = meshguard(&["render", "/nonexistent/policy.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/policy.yaml: cannot read"));
    let out = meshguard(&["render", POLICY, "--env", "staging"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no environment `staging`; the policy defines: pre-release, production, test"));
    // 0, and --help documents the exit codes.
    let out = meshguard(&["render", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("exit codes: 0 success"));
}
