//! Test-only wasm modules (`harness-probe`, `noop-filter`,
//! `handoff-experiment`, `meshguard-chain-fixture`, the two refusal
//! modules), built on
//! demand so that a plain `cargo test` works on a fresh checkout: when a
//! module in `target/fixtures/` (where `make build-fixtures` puts them) is
//! missing or older than its sources, the first test that needs it runs
//! `cargo build --target wasm32-wasip1 --profile wasm -p <fixture>` and
//! copies the result there. A file lock serialises test binaries that
//! start at once; a `OnceLock` makes it once per binary.
//!
//! Shared by wasm-test-harness/tests, tests/tests and tests/fixtures/chain
//! (via `#[path]`): it depends on nothing but std.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// (package, source directories relative to the repo root, `:`-separated)
const FIXTURES: &[(&str, &str)] = &[
    ("harness-probe", "wasm-test-harness/fixtures/probe"),
    ("noop-filter", "wasm-test-harness/fixtures/noop"),
    // The bench's record-handoff experiment (bench/fixtures/handoff).
    ("handoff-experiment", "bench/fixtures/handoff"),
    // The chain links the stage crates, the shell and ab-routing.
    ("meshguard-chain-fixture", "tests/fixtures/chain:filters"),
    // A stage in a module built without the callbacks it needs: refused.
    ("meshguard-no-log-fixture", "tests/fixtures/no-log:filters"),
    (
        "meshguard-log-only-fixture",
        "tests/fixtures/log-only:filters",
    ),
    // The shipped ab-routing module, as `make build` builds it (the same
    // package and profile), for the filter's own harness tests.
    ("meshguard-ab-routing-wasm", "filters"),
    ("meshguard-authn-wasm", "filters"),
    ("meshguard-accesslog-wasm", "filters"),
    ("meshguard-ratelimit-wasm", "filters"),
];

/// The cargo profile a fixture builds with (the Makefile's `PROFILE_<f>`):
/// tests run the module exactly as shipped.
fn profile(package: &str) -> &'static str {
    match package {
        "meshguard-authn-wasm" => "wasm-small",
        "meshguard-accesslog-wasm" => "wasm-z",
        "meshguard-ratelimit-wasm" => "wasm-rl",
        _ => "wasm",
    }
}

/// The workspace root: the nearest directory above the crate with Cargo.lock.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|d| d.join("Cargo.lock").exists())
        .unwrap_or(manifest)
        .to_path_buf()
}

fn out_dir() -> PathBuf {
    repo_root().join("target/fixtures")
}

/// Path of fixture `name` (a package in `FIXTURES`), built if missing or stale.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build_stale) {
        panic!("building the test fixtures failed: {e}");
    }
    out_dir().join(format!("{name}.wasm"))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = mtime(dir);
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            mtime(&path)
        };
        best = best.max(t);
    }
    best
}

/// The Makefile's `WASM_OPT_<filter>` pass (binaryen's wasm-opt from
/// tools/binaryen), so tests run the module as shipped. Without the tool
/// (`make build` installs it) the module is used as linked: wasm-opt keeps
/// semantics, only size and speed differ.
fn post_link(package: &str, module: &Path) -> Result<(), String> {
    const FEATURES: &[&str] = &[
        "--enable-bulk-memory",
        "--enable-bulk-memory-opt",
        "--enable-sign-ext",
        "--enable-mutable-globals",
        "--enable-nontrapping-float-to-int",
        "--enable-multivalue",
        "--enable-reference-types",
    ];
    let flags: &[&str] = match package {
        "meshguard-authn-wasm" => &["-O3"],
        "meshguard-ratelimit-wasm" | "meshguard-accesslog-wasm" => &["-Oz"],
        _ => return Ok(()),
    };
    let tool = repo_root().join("tools/binaryen/node_modules/.bin/wasm-opt");
    if !tool.exists() {
        eprintln!(
            "{}: not installed (`make build` installs it); testing {package} as linked",
            tool.display()
        );
        return Ok(());
    }
    let status = Command::new(&tool)
        .args(flags)
        .args(FEATURES)
        .arg(module)
        .arg("-o")
        .arg(module)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if !status.success() {
        return Err(format!("wasm-opt on {package} failed ({status})"));
    }
    Ok(())
}

fn fresh(package: &str, src: &str) -> bool {
    let built = mtime(&out_dir().join(format!("{package}.wasm")));
    let sources = src
        .split(':')
        .map(|dir| newest(&repo_root().join(dir)))
        .max()
        .flatten()
        .max(mtime(&repo_root().join("Cargo.lock")));
    matches!((built, sources), (Some(b), Some(s)) if b >= s)
}

fn stale() -> Vec<&'static str> {
    FIXTURES
        .iter()
        .filter(|(package, src)| !fresh(package, src))
        .map(|(package, _)| *package)
        .collect()
}

fn build_stale() -> Result<(), String> {
    if stale().is_empty() {
        return Ok(());
    }
    let out = out_dir();
    fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let lock_path = out.join(".build.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // Another test binary may be building right now: wait, then look again.
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let packages = stale();
    if packages.is_empty() {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut profiles: Vec<&str> = packages.iter().map(|p| profile(p)).collect();
    profiles.sort_unstable();
    profiles.dedup();
    for prof in profiles {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(repo_root()).args([
            "build",
            "--target",
            "wasm32-wasip1",
            "--profile",
            prof,
        ]);
        for p in packages.iter().filter(|p| profile(p) == prof) {
            cmd.args(["-p", p]);
        }
        eprintln!("building test fixtures {packages:?} (as `make build-fixtures` does)");
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`cargo build --target wasm32-wasip1 --profile {prof}` failed ({status}); \
                 is the target installed (`rustup target add wasm32-wasip1`)? \
                 `make build-fixtures` does the same"
            ));
        }
    }
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    };
    for p in packages {
        let built = target_dir
            .join("wasm32-wasip1")
            .join(profile(p))
            .join(format!("{}.wasm", p.replace('-', "_")));
        // Copy then rename: a reader never sees half a module.
        let tmp = out.join(format!(".{p}.wasm.tmp"));
        let dest = out.join(format!("{p}.wasm"));
        fs::copy(&built, &tmp).map_err(|e| format!("copy {}: {e}", built.display()))?;
        post_link(p, &tmp)?;
        fs::rename(&tmp, &dest).map_err(|e| format!("rename to {}: {e}", dest.display()))?;
    }
    Ok(())
}
