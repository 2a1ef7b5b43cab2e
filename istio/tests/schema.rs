//! Every rendered document passes Istio's own CRD schemas: the npm package
//! @kubernetes-models/istio (installed by `make schema-deps` into
//! istio/schema-check/node_modules), after an independent YAML parser (npm
//! `yaml`) has read meshguard's output. The check also refuses fields the
//! schemas do not know (the API server would prune them silently).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn node(args: &[&str]) -> (bool, String) {
    let dir = repo().join("istio/schema-check");
    assert!(
        dir.join("node_modules/@kubernetes-models/istio").is_dir(),
        "istio/schema-check/node_modules is missing: run `make schema-deps` (needs Node.js and npm; .ci/run installs them)"
    );
    let out = Command::new("node")
        .arg(dir.join("check.mjs"))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run node ({e}): install Node.js (apt-get install nodejs npm)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_schema_check_refuses_broken_documents() {
    let (ok, out) = node(&["--self-test"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("refused").count(), 6, "{out}");
}

#[test]
fn every_rendered_document_passes_istios_schemas() {
    let dir = std::env::temp_dir().join(format!("mg-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let renders: &[(&str, &[&str])] = &[
        ("istio/examples/shop.yaml", &[]),
        ("istio/examples/shop.yaml", &["--env", "test"]),
        ("istio/examples/shop.yaml", &["--env", "pre-release"]),
        ("istio/examples/shop.yaml", &["--env", "production"]),
        (
            "istio/examples/shop.yaml",
            &["--env", "production", "--envoyfilter", "local"],
        ),
        (
            "istio/examples/shop.yaml",
            &["--env", "production", "--envoyfilter", "ecds"],
        ),
        ("istio/tests/fixtures/wide.yaml", &[]),
        (
            "istio/tests/fixtures/wide.yaml",
            &["--env", "envoyfilter", "--envoyfilter", "local"],
        ),
        (
            "istio/tests/fixtures/wide.yaml",
            &["--env", "envoyfilter", "--envoyfilter", "ecds"],
        ),
    ];
    let mut files = Vec::new();
    let mut expected_docs = 0;
    for (i, (policy, args)) in renders.iter().enumerate() {
        let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
            .arg("render")
            .arg(policy)
            .args(*args)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "render {policy} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        expected_docs += String::from_utf8_lossy(&out.stdout)
            .matches("\n---\n")
            .count();
        let f = dir.join(format!("render-{i}.yaml"));
        std::fs::write(&f, &out.stdout).unwrap();
        files.push(f.to_string_lossy().into_owned());
    }
    // The checked-in manifests too (a user applies those).
    for f in ["test", "pre-release", "production"] {
        let path = repo().join(format!("istio/rendered/{f}.yaml"));
        expected_docs += std::fs::read_to_string(&path)
            .unwrap()
            .matches("\n---\n")
            .count();
        files.push(path.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let (ok, out) = node(&args);
    assert!(ok, "{out}");
    // Every document was checked (none lost by the YAML parser).
    let checked: usize = out
        .lines()
        .last()
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        checked, expected_docs,
        "documents checked vs rendered:\n{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
