//! `meshguard push` / `meshguard pull` against a real registry (Debian's
//! `docker-registry`, CNCF distribution 2.8, on 127.0.0.1), checked by
//! independent clients (skopeo, buildah) and by real Envoy loading the
//! module straight from the registry.
//!
//! Every registry is started by the test on a free loopback port with its
//! storage in the test's scratch dir, and killed by PID when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use meshguard::oci::{self, image, Client, Credentials, Options, Reference};
use meshguard_e2e::*;

// ---------------------------------------------------------------- helpers

/// A tool the tests need; fails (never skips) with the install command.
fn tool(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: install it with `apt-get install -y {package}` (.ci/run does)"
            )
        })
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        newest = newest.max(t);
    }
    newest
}

/// The CLI binary (`make cli`), refused when older than its sources.
fn cli() -> PathBuf {
    let bin = meshguard_bin();
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: run `make cli`", bin.display()));
    assert!(
        built >= newest_mtime(&repo_root().join("istio/src")),
        "{} is older than istio/src: run `make cli`",
        bin.display()
    );
    bin
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn meshguard_with(args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(cli());
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run meshguard");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("meshguard output");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn meshguard(args: &[&str]) -> Out {
    meshguard_with(args, &[], None)
}

fn ok(out: Out) -> String {
    assert!(out.ok, "meshguard failed:\n{}{}", out.stdout, out.stderr);
    out.stdout
}

fn refused(out: Out, want: &str) -> String {
    assert!(!out.ok, "meshguard should have refused:\n{}", out.stdout);
    assert!(
        out.stderr.contains(want),
        "expected `{want}` in:\n{}",
        out.stderr
    );
    out.stderr
}

/// `manifest digest: sha256:…` from push/pull output.
fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no `{name}` in:\n{out}"))
}

/// A CNCF distribution registry on 127.0.0.1, storage in `dir`.
struct Registry {
    port: u16,
    storage: PathBuf,
    proc: Proc,
}

impl Registry {
    fn start(dir: &Path, users: Option<&Credentials>) -> Self {
        let bin = tool("docker-registry", "docker-registry");
        let port = free_port();
        let storage = dir.join("registry-data");
        let auth = match users {
            Some(c) => {
                let htpasswd = tool("htpasswd", "apache2-utils");
                let out = Command::new(htpasswd)
                    .args(["-Bbn", &c.username, &c.password])
                    .output()
                    .expect("htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.join("htpasswd");
                std::fs::write(&file, &out.stdout).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: meshguard-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{auth}",
            storage.display()
        );
        let cfg = dir.join("registry.yml");
        std::fs::write(&cfg, config).expect("write registry.yml");
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&cfg);
        let mut proc = Proc::spawn("docker-registry", cmd, dir.join("registry.log"));
        wait_until(Duration::from_secs(20), || {
            if let Some(status) = proc.exited() {
                panic!("registry exited ({status}):\n{}", proc.log_tail());
            }
            get(port, "/v2/", &[]).is_ok()
        })
        .unwrap_or_else(|| panic!("registry not serving:\n{}", proc.log_tail()));
        Self {
            port,
            storage,
            proc,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, repo_tag: &str) -> String {
        format!("oci://{}/{repo_tag}", self.host())
    }

    fn docker(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host())
    }

    fn client(&self) -> Client {
        Client::new(
            &self.host(),
            Options {
                plain_http: true,
                ..Options::default()
            },
        )
    }

    /// The file the registry serves a blob from.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn skopeo(dir: &Path, args: &[&str]) -> String {
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("write policy.json");
    let out = Command::new(tool("skopeo", "skopeo"))
        .arg("--policy")
        .arg(&policy)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn module_path() -> String {
    wasm_module("ab-routing").to_string_lossy().into_owned()
}

/// Pushes crafted blobs and a manifest naming them (images meshguard
/// itself would never build).
fn push_crafted(reg: &Registry, repo: &str, layers: &[(&str, Vec<u8>)]) -> String {
    let mut c = reg.client();
    let config = b"{}".to_vec();
    c.push_blob(repo, &oci::digest_of(&config), &config)
        .expect("push config");
    let mut descs = Vec::new();
    for (media_type, bytes) in layers {
        c.push_blob(repo, &oci::digest_of(bytes), bytes)
            .expect("push layer");
        descs.push(serde_json::json!({"mediaType": media_type, "digest": oci::digest_of(bytes), "size": bytes.len()}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::MEDIA_OCI_MANIFEST,
        "config": {"mediaType": image::MEDIA_OCI_CONFIG, "digest": oci::digest_of(&config), "size": config.len()},
        "layers": descs,
    });
    let bytes = serde_json::to_vec(&manifest).expect("manifest");
    c.push_manifest(repo, "1", image::MEDIA_OCI_MANIFEST, &bytes)
        .expect("push manifest");
    reg.url(&format!("{repo}:1"))
}

// ------------------------------------------------------------------ tests

#[test]
fn push_is_reproducible_and_skopeo_sees_istio_media_types() {
    let dir = scratch_dir("oci-push");
    let reg = Registry::start(&dir, None);
    let module = module_path();
    let lock = dir.join("images.lock.json");
    let lock_s = lock.to_string_lossy().into_owned();

    let t = Instant::now();
    let first = ok(meshguard(&[
        "push",
        &module,
        &reg.url("mg/ab-routing:v1"),
        "--plain-http",
        "--lock",
        &lock_s,
    ]));
    let push_time = t.elapsed();
    let again = ok(meshguard(&[
        "push",
        &module,
        &reg.url("mg/again:v2"),
        "--plain-http",
    ]));
    let digest = field(&first, "manifest digest:");
    assert_eq!(
        digest,
        field(&again, "manifest digest:"),
        "same module, same digest"
    );
    let module_sha = field(&first, "module sha256:");
    assert_eq!(
        module_sha,
        oci::sha256_hex(&std::fs::read(&module).expect("module"))
    );
    eprintln!("push (compat, fresh registry): {push_time:?}; digest {digest}");

    // skopeo, an independent client, reads what Istio will read.
    let raw = json(&skopeo(
        &dir,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &reg.docker("mg/ab-routing:v1"),
        ],
    ));
    assert_eq!(raw["mediaType"], image::MEDIA_OCI_MANIFEST);
    assert_eq!(raw["config"]["mediaType"], image::MEDIA_OCI_CONFIG);
    assert_eq!(raw["annotations"]["module.wasm.image/variant"], "compat");
    let layers = raw["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], image::MEDIA_OCI_LAYER_GZIP);
    let inspect = json(&skopeo(
        &dir,
        &[
            "inspect",
            "--tls-verify=false",
            &reg.docker("mg/ab-routing:v1"),
        ],
    ));
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Os"], "wasip1");
    assert_eq!(inspect["Architecture"], "wasm");
    let config = json(&skopeo(
        &dir,
        &[
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            &reg.docker("mg/ab-routing:v1"),
        ],
    ));
    assert_eq!(config["rootfs"]["type"], "layers");

    let oci_out = ok(meshguard(&[
        "push",
        &module,
        &reg.url("mg/ab-routing:v1-oci"),
        "--format",
        "oci",
        "--plain-http",
    ]));
    let raw = json(&skopeo(
        &dir,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &reg.docker("mg/ab-routing:v1-oci"),
        ],
    ));
    assert_eq!(raw["mediaType"], image::MEDIA_OCI_MANIFEST);
    assert_eq!(raw["config"]["mediaType"], image::MEDIA_WASM_CONFIG);
    let types: Vec<&str> = raw["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["mediaType"].as_str())
        .collect();
    assert_eq!(types, [image::MEDIA_WASM_CONFIG, image::MEDIA_WASM_LAYER]);
    assert_eq!(
        raw["layers"][1]["digest"],
        format!("sha256:{module_sha}"),
        "the oci layer is the raw module"
    );
    assert_ne!(field(&oci_out, "manifest digest:"), digest);

    // The lock file the renderer will pin from.
    let lock = json(&std::fs::read_to_string(&lock).expect("lock file"));
    assert_eq!(lock["ab-routing"]["reference"], reg.url("mg/ab-routing:v1"));
    assert_eq!(lock["ab-routing"]["manifest_digest"], digest.as_str());
    assert_eq!(lock["ab-routing"]["module_sha256"], module_sha.as_str());
}

#[test]
fn skopeo_copies_pull_back_byte_identical() {
    let dir = scratch_dir("oci-copy");
    let reg = Registry::start(&dir, None);
    let module = module_path();
    let bytes = std::fs::read(&module).expect("module");
    for format in ["compat", "oci"] {
        let src = format!("mg/src:{format}");
        let pushed = ok(meshguard(&[
            "push",
            &module,
            &reg.url(&src),
            "--format",
            format,
            "--plain-http",
        ]));
        let dst = format!("mg/copied:{format}");
        skopeo(
            &dir,
            &[
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &reg.docker(&src),
                &reg.docker(&dst),
            ],
        );
        let out_file = dir.join(format!("{format}.wasm"));
        let digest = field(&pushed, "manifest digest:");
        let t = Instant::now();
        let pulled = ok(meshguard(&[
            "pull",
            &reg.url(&dst),
            "-o",
            &out_file.to_string_lossy(),
            "--sha256",
            digest.trim_start_matches("sha256:"),
            "--plain-http",
        ]));
        eprintln!("pull ({format}) after skopeo copy: {:?}", t.elapsed());
        assert_eq!(field(&pulled, "manifest digest:"), digest, "{format}");
        assert!(
            std::fs::read(&out_file).expect("pulled") == bytes,
            "{format}: pulled module differs from dist/ab-routing.wasm"
        );
    }
}

#[test]
fn buildah_images_are_pulled_like_istio_agent_does() {
    let dir = scratch_dir("oci-buildah");
    let reg = Registry::start(&dir, None);
    let buildah = tool("buildah", "buildah");
    let bytes = std::fs::read(module_path()).expect("module");
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("plugin.wasm"), &bytes).expect("plugin.wasm");
    // Storage in the scratch dir (vfs: no overlay mounts needed), as root.
    let store = dir.join("buildah");
    let run = |args: &[&str]| -> String {
        let out = Command::new(&buildah)
            .arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run buildah");
        assert!(
            out.status.success(),
            "buildah {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // FROM scratch + COPY plugin.wasm ./ (the compat spec's Dockerfile).
    let name = format!("mg-{}", std::process::id());
    run(&["from", "--name", &name, "scratch"]);
    run(&[
        "copy",
        &name,
        &ctx.join("plugin.wasm").to_string_lossy(),
        "/",
    ]);
    run(&["commit", &name, "localhost/mg-buildah:1"]);
    for (format, layout) in [
        ("v2s2", "docker image (compat)"),
        ("oci", "OCI image (compat)"),
    ] {
        let dest = reg.docker(&format!("buildah/ab:{format}"));
        run(&[
            "push",
            "--tls-verify=false",
            "--format",
            format,
            "localhost/mg-buildah:1",
            &dest,
        ]);
        let out_file = dir.join(format!("{format}.wasm"));
        let pulled = ok(meshguard(&[
            "pull",
            &reg.url(&format!("buildah/ab:{format}")),
            "-o",
            &out_file.to_string_lossy(),
            "--plain-http",
        ]));
        assert!(pulled.contains(layout), "{format}: {pulled}");
        assert!(
            std::fs::read(&out_file).expect("pulled") == bytes,
            "{format}: module differs"
        );
    }
    run(&["rm", &name]);
}

#[test]
fn pull_refuses_what_istio_agent_refuses() {
    let dir = scratch_dir("oci-refuse");
    let reg = Registry::start(&dir, None);
    let module = module_path();
    let bytes = std::fs::read(&module).expect("module");
    let out = dir.join("out.wasm");
    let out_s = out.to_string_lossy().into_owned();
    let pull = |url: &str, extra: &[&str]| {
        let mut args = vec!["pull", url, "-o", &out_s, "--plain-http"];
        args.extend_from_slice(extra);
        meshguard(&args)
    };
    let pushed = ok(meshguard(&[
        "push",
        &module,
        &reg.url("mg/good:1"),
        "--plain-http",
    ]));
    let module_sha = field(&pushed, "module sha256:");

    // A WasmPlugin sha256 that is not the manifest digest (here: the
    // module's own hash, the classic mistake).
    refused(
        pull(&reg.url("mg/good:1"), &["--sha256", &module_sha]),
        "which does not match",
    );
    // A digest-pinned reference that names another manifest.
    refused(
        pull(
            &format!("{}@sha256:{}", reg.url("mg/good:1"), module_sha),
            &[],
        ),
        "not found",
    );

    // Wrong layer media type.
    let url = push_crafted(
        &reg,
        "mg/octet",
        &[("application/octet-stream", bytes.clone())],
    );
    refused(
        pull(&url, &[]),
        "the last layer has media type application/octet-stream",
    );

    // zstd: skopeo recompresses meshguard's image (tar+zstd, as podman/
    // buildah can push); istio-agent reads gzip only.
    skopeo(
        &dir,
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "oci",
            "--dest-compress-format",
            "zstd",
            &reg.docker("mg/good:1"),
            &reg.docker("mg/zstd:1"),
        ],
    );
    refused(
        pull(&reg.url("mg/zstd:1"), &[]),
        "zstd layers are not supported",
    );

    // Not Wasm: plugin.wasm holds text.
    let not_wasm = image::build(b"hello, not a module", image::Format::Compat, &[]).expect("build");
    let url = push_crafted(
        &reg,
        "mg/text",
        &[(
            image::MEDIA_OCI_LAYER_GZIP,
            not_wasm.layers[0].bytes.clone(),
        )],
    );
    refused(pull(&url, &[]), "not a Wasm module");

    // Over the size limit.
    refused(
        pull(&reg.url("mg/good:1"), &["--max-size", "1000"]),
        "over the size limit of 1000 bytes",
    );

    // Tampered storage: the registry serves other bytes for the layer.
    let pulled_manifest = json(&skopeo(
        &dir,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &reg.docker("mg/good:1"),
        ],
    ));
    let layer = pulled_manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest")
        .to_string();
    let file = reg.blob_file(&layer);
    let mut data = std::fs::read(&file).expect("blob data");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&file, &data).expect("tamper");
    refused(pull(&reg.url("mg/good:1"), &[]), "tampered or corrupted");

    // Plain HTTP only when asked for.
    refused(
        meshguard(&["pull", &reg.url("mg/good:1"), "-o", &out_s]),
        "needs --plain-http",
    );

    // Registry down.
    let down = format!("oci://127.0.0.1:{}/mg/good:1", free_port());
    refused(pull(&down, &[]), "cannot reach registry");
    assert!(!out.exists(), "a refused pull must not write the output");
}

#[test]
fn auth_required_is_explained_and_docker_config_or_flags_satisfy_it() {
    let dir = scratch_dir("oci-auth");
    let creds = Credentials {
        username: "ci".into(),
        password: "s3cret-pw".into(),
    };
    let reg = Registry::start(&dir, Some(&creds));
    let module = module_path();
    let url = reg.url("mg/private:1");
    let empty = dir.join("no-docker-config");
    std::fs::create_dir_all(&empty).expect("dir");

    let err = refused(
        meshguard_with(
            &["push", &module, &url, "--plain-http"],
            &[("DOCKER_CONFIG", &empty)],
            None,
        ),
        "requires authentication and no credentials were given",
    );
    assert!(err.contains("--password-stdin"), "{err}");

    let wrong = dir.join("wrong");
    let bad = Credentials {
        username: "ci".into(),
        password: "nope".into(),
    };
    oci::auth::write_config(&wrong, &reg.host(), &bad).expect("config");
    refused(
        meshguard_with(
            &["push", &module, &url, "--plain-http"],
            &[("DOCKER_CONFIG", &wrong)],
            None,
        ),
        "authentication failed",
    );

    let good = dir.join("good");
    oci::auth::write_config(&good, &reg.host(), &creds).expect("config");
    let pushed = ok(meshguard_with(
        &["push", &module, &url, "--plain-http"],
        &[("DOCKER_CONFIG", &good)],
        None,
    ));
    let out = dir.join("out.wasm");
    ok(meshguard_with(
        &[
            "pull",
            &url,
            "-o",
            &out.to_string_lossy(),
            "--plain-http",
            "--username",
            "ci",
            "--password-stdin",
        ],
        &[("DOCKER_CONFIG", &empty)],
        Some("s3cret-pw\n"),
    ));
    assert_eq!(
        oci::sha256_hex(&std::fs::read(&out).expect("pulled")),
        field(&pushed, "module sha256:")
    );
    refused(
        meshguard_with(
            &["pull", &url, "-o", &out.to_string_lossy(), "--plain-http"],
            &[("DOCKER_CONFIG", &empty)],
            None,
        ),
        "requires authentication",
    );
}

#[test]
fn envoy_runs_the_filter_it_fetched_from_the_registry() {
    envoy_bin();
    let dir = scratch_dir("oci-envoy");
    let reg = Registry::start(&dir, None);
    let module = wasm_module("ab-routing");
    let bytes = std::fs::read(&module).expect("module");
    let reference = Reference::parse(&reg.url("mg/ab-routing:envoy")).expect("reference");
    let mut client = reg.client();
    let pushed = oci::push(&bytes, &reference, image::Format::Oci, &[], &mut client).expect("push");
    // Envoy fetches the raw module layer itself and checks its sha256.
    let remote = RemoteCode {
        uri: client.blob_url(&reference.repository, &pushed.module_layer_digest),
        cluster: "oci_registry".into(),
        sha256: pushed.module_layer_digest.clone(),
    };
    let upstream = Upstream::start(&dir);
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    // ab-routing alone: every module Envoy runs must come from the registry.
    let filters: Vec<WasmFilter> = local_filters()
        .into_iter()
        .filter(|f| f.name == "ab-routing")
        .collect();
    let mut config = Local {
        listen: Addr::new("127.0.0.1", ports.listen),
        admin: Addr::new("127.0.0.1", ports.admin),
        upstream: Addr::new("127.0.0.1", upstream.port),
        filters: filters.clone(),
        grpc_clusters: Vec::new(),
        clusters: vec![("oci_registry".into(), Addr::new("127.0.0.1", reg.port))],
    }
    .to_value();
    let http_filters = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]
        ["filters"][0]["typed_config"]["http_filters"];
    http_filters[0] = filters[0].remote_block(&remote);
    let text = config.to_string();
    assert!(
        !text.contains("\"filename\""),
        "the module must come from the registry, not a file"
    );
    let envoy = Envoy::start(&dir, &text, ports, 1);
    let r = envoy.get("/checkout/cart", &[("x-user-id", "bob")]);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        r.upstream_header("x-ab-variant").as_deref(),
        Some("treatment")
    );
    assert_eq!(
        r.upstream_header("x-demo-route").as_deref(),
        Some("treatment")
    );
    let log = reg.proc.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("GET") && l.contains(&pushed.module_layer_digest)),
        "the registry served no GET for the module blob:\n{}",
        reg.proc.log_tail()
    );
    drop(envoy);

    // Envoy really checks the sha256: given the manifest digest (what a
    // WasmPlugin takes, not what Envoy's own fetch takes) the fail-closed
    // filter does not load and traffic stops.
    let wrong = RemoteCode {
        sha256: pushed.manifest_digest.clone(),
        ..remote
    };
    let ports = EnvoyPorts {
        listen: free_port(),
        admin: free_port(),
    };
    config["admin"]["address"]["socket_address"]["port_value"] = ports.admin.into();
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] =
        ports.listen.into();
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0] = filters[0].remote_block(&wrong);
    let wrong_dir = dir.join("wrong-sha");
    std::fs::create_dir_all(&wrong_dir).expect("dir");
    let envoy = Envoy::start(&wrong_dir, &config.to_string(), ports, 1);
    let r = envoy.get("/checkout/cart", &[("x-user-id", "bob")]);
    assert_eq!(r.status, 503, "{}", r.body_text());
    assert!(
        envoy.proc.log_text().contains("failed to load"),
        "{}",
        envoy.proc.log_tail()
    );
}

#[test]
fn registry_rejections_are_explained_and_indexes_resolve_like_istio() {
    let dir = scratch_dir("oci-index");
    let reg = Registry::start(&dir, None);
    let mut client = reg.client();

    // A media type the registry does not accept: its own error, named.
    let err = client
        .push_manifest(
            "mg/junk",
            "1",
            "application/x-junk",
            b"{\"schemaVersion\":2}",
        )
        .unwrap_err();
    assert!(err.contains("rejected it (400): MANIFEST_INVALID"), "{err}");

    // An index (what buildx with attestations pushes): istio-agent takes
    // its linux/amd64 image, and the WasmPlugin sha256 is that image's
    // manifest digest.
    let bytes = std::fs::read(module_path()).expect("module");
    let img = image::build(&bytes, image::Format::Compat, &[]).expect("build");
    let child = Reference::parse(&reg.url("mg/multi:child")).expect("reference");
    let pushed = oci::push(&bytes, &child, image::Format::Compat, &[], &mut client).expect("push");
    assert_eq!(pushed.manifest_digest, img.digest());
    let index = |arch: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": image::MEDIA_OCI_INDEX,
            "manifests": [{
                "mediaType": image::MEDIA_OCI_MANIFEST,
                "digest": img.digest(),
                "size": img.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            }],
        }))
        .expect("index")
    };
    client
        .push_manifest("mg/multi", "amd64", image::MEDIA_OCI_INDEX, &index("amd64"))
        .expect("push index");
    client
        .push_manifest("mg/multi", "arm64", image::MEDIA_OCI_INDEX, &index("arm64"))
        .expect("push index");
    let out = dir.join("out.wasm");
    let out_s = out.to_string_lossy().into_owned();
    let pulled = ok(meshguard(&[
        "pull",
        &reg.url("mg/multi:amd64"),
        "-o",
        &out_s,
        "--sha256",
        img.digest().trim_start_matches("sha256:"),
        "--plain-http",
    ]));
    assert_eq!(field(&pulled, "manifest digest:"), img.digest());
    assert!(std::fs::read(&out).expect("pulled") == bytes);
    refused(
        meshguard(&[
            "pull",
            &reg.url("mg/multi:arm64"),
            "-o",
            &out_s,
            "--plain-http",
        ]),
        "without a linux/amd64 image",
    );
}
