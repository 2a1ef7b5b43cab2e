//! The harness: one simulated Envoy process. It owns what Envoy shares
//! between workers — shared data, shared queues, stats, the clock, the
//! declared clusters — and starts VMs (one per simulated worker).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::abi::MetricType;
use crate::error::Error;
use crate::vm::{Vm, VmBuilder};

/// Wall-clock start of every harness: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_UNIX_NS: u64 = 1_767_225_600_000_000_000;

/// Epoch ticks per second of the background ticker that bounds guest calls.
pub(crate) const EPOCH_TICKS_PER_SEC: u64 = 100;

/// A compiled module, shareable between harnesses and VMs.
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: wasmtime::Module,
    pub(crate) fuel: bool,
    pub(crate) name: String,
}

impl Module {
    /// The module's imports that the harness does not provide (calling one
    /// traps with an error naming it).
    pub fn unknown_imports(&self) -> Vec<String> {
        self.inner
            .imports()
            .filter(|i| !crate::imports::is_provided(i.module(), i.name()))
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One engine per fuel setting, shared by the whole test binary, each with
/// a ticker thread that advances its epoch (so a guest stuck in a loop is
/// interrupted instead of hanging the test).
fn engine(fuel: bool) -> Result<&'static wasmtime::Engine, Error> {
    static PLAIN: OnceLock<Result<wasmtime::Engine, String>> = OnceLock::new();
    static FUEL: OnceLock<Result<wasmtime::Engine, String>> = OnceLock::new();
    let cell = if fuel { &FUEL } else { &PLAIN };
    cell.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(20));
        let engine = wasmtime::Engine::new(&config).map_err(|e| e.to_string())?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("wasm-test-harness-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(1000 / EPOCH_TICKS_PER_SEC));
                ticker.increment_epoch();
            })
            .map_err(|e| e.to_string())?;
        Ok(engine)
    })
    .as_ref()
    .map_err(|e| Error::Setup(format!("cannot create wasmtime engine: {e}")))
}

/// Compiled modules by (path, fuel): each module is compiled once per test
/// binary, whatever number of harnesses use it.
fn module_cache() -> &'static Mutex<HashMap<(PathBuf, bool), Module>> {
    static CACHE: OnceLock<Mutex<HashMap<(PathBuf, bool), Module>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Counter(u64),
    Gauge(i64),
    /// Every recorded value, in order.
    Histogram(Vec<u64>),
}

#[derive(Debug, Default)]
pub(crate) struct Metric {
    pub kind: Option<MetricType>,
    pub counter: u64,
    pub gauge: i64,
    pub histogram: Vec<u64>,
}

pub(crate) struct Queue {
    pub vm_id: String,
    pub name: String,
    pub items: VecDeque<Vec<u8>>,
    /// VM (by harness-wide VM number) and its root context to notify.
    pub owner_vm: u64,
    pub owner_context: u32,
}

/// State shared by every VM of one harness, like Envoy's process-wide state.
pub(crate) struct Shared {
    pub now_unix_ns: u64,
    pub start_unix_ns: u64,
    pub seed: u64,
    pub next_vm: u64,
    pub call_timeout: Duration,
    /// vm_id → key → (value, cas)
    pub shared_data: HashMap<String, BTreeMap<String, (Vec<u8>, u32)>>,
    pub next_cas: u32,
    pub queues: BTreeMap<u32, Queue>,
    pub next_queue: u32,
    /// (vm number, root context, queue token) notifications not yet delivered.
    pub queue_ready: Vec<(u64, u32, u32)>,
    pub metrics: BTreeMap<String, Metric>,
    pub clusters: BTreeSet<String>,
}

impl Shared {
    pub fn next_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        cas
    }
}

/// Builder for [`Harness`].
pub struct HarnessBuilder {
    seed: u64,
    fuel: bool,
    start: u64,
    call_timeout: Duration,
}

impl HarnessBuilder {
    /// Seed for every VM's WASI `random_get` stream (each VM derives its own).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Meter guest instructions with wasmtime fuel ([`Vm::fuel_consumed`]).
    /// Slower; use for cost figures, not for the latency benchmark.
    pub fn fuel(mut self, on: bool) -> Self {
        self.fuel = on;
        self
    }

    /// Initial wall clock.
    pub fn start_time(mut self, t: SystemTime) -> Self {
        self.start = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self
    }

    /// How long one guest callback may run before it is interrupted and the
    /// VM marked failed (default 10 s).
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.call_timeout = d;
        self
    }

    pub fn build(self) -> Harness {
        Harness {
            fuel: self.fuel,
            shared: Arc::new(Mutex::new(Shared {
                now_unix_ns: self.start,
                start_unix_ns: self.start,
                seed: self.seed,
                next_vm: 0,
                call_timeout: self.call_timeout,
                shared_data: HashMap::new(),
                next_cas: 1,
                queues: BTreeMap::new(),
                next_queue: 1,
                queue_ready: Vec::new(),
                metrics: BTreeMap::new(),
                clusters: BTreeSet::new(),
            })),
        }
    }
}

/// A simulated Envoy process. Independent of every other harness: tests can
/// run in parallel.
#[derive(Clone)]
pub struct Harness {
    pub(crate) fuel: bool,
    pub(crate) shared: Arc<Mutex<Shared>>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panicking test thread must not wedge the others: take the data anyway.
    shared.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Harness {
    pub fn new() -> Self {
        Self::builder().build()
    }

    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            seed: 0,
            fuel: false,
            start: DEFAULT_START_UNIX_NS,
            call_timeout: Duration::from_secs(10),
        }
    }

    /// Loads and compiles a `.wasm` file (cached per test binary).
    pub fn module(&self, path: impl AsRef<Path>) -> Result<Module, Error> {
        let path = path.as_ref();
        let canonical = path.canonicalize().map_err(|e| {
            Error::Setup(format!("cannot open wasm module {}: {e}", path.display()))
        })?;
        let key = (canonical.clone(), self.fuel);
        let mut cache = module_cache()
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(m) = cache.get(&key) {
            return Ok(m.clone());
        }
        let bytes = std::fs::read(&canonical)
            .map_err(|e| Error::Setup(format!("cannot read {}: {e}", canonical.display())))?;
        let module = self.compile(&bytes, &canonical.display().to_string())?;
        cache.insert(key, module.clone());
        Ok(module)
    }

    /// Compiles a module from bytes (binary or WAT text); not cached.
    pub fn module_from_bytes(&self, bytes: &[u8], name: &str) -> Result<Module, Error> {
        self.compile(bytes, name)
    }

    fn compile(&self, bytes: &[u8], name: &str) -> Result<Module, Error> {
        let engine = engine(self.fuel)?;
        let inner = wasmtime::Module::new(engine, bytes)
            .map_err(|e| Error::Setup(format!("cannot compile {name}: {e:#}")))?;
        Ok(Module {
            inner,
            fuel: self.fuel,
            name: name.to_string(),
        })
    }

    /// Starts configuring a VM for `module` (one simulated worker).
    pub fn vm<'h>(&'h self, module: &Module) -> VmBuilder<'h> {
        VmBuilder::new(self, module.clone())
    }

    /// Convenience: start a VM with defaults and configure it with
    /// `plugin_config`; fails if `on_configure` returns false.
    pub fn configured_vm(&self, module: &Module, plugin_config: &[u8]) -> Result<Vm, Error> {
        let mut vm = self.vm(module).start()?;
        if !vm.configure(plugin_config)? {
            return Err(Error::Refused(format!(
                "on_configure returned false; logs:\n{}",
                vm.log_text()
            )));
        }
        Ok(vm)
    }

    pub(crate) fn engine(&self) -> Result<&'static wasmtime::Engine, Error> {
        engine(self.fuel)
    }

    /// Declares an upstream cluster; callouts to undeclared clusters get
    /// BadArgument, as in Envoy.
    pub fn declare_cluster(&self, name: &str) {
        lock(&self.shared).clusters.insert(name.to_string());
    }

    /// Current wall clock seen by every VM.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(lock(&self.shared).now_unix_ns)
    }

    /// Moves the shared clock forward without running anything; each VM
    /// fires its due ticks and callout timeouts on its next [`Vm::poll`].
    /// [`Vm::advance_clock`] moves the clock and polls that VM in one step.
    pub fn advance_clock(&self, d: Duration) {
        let mut s = lock(&self.shared);
        s.now_unix_ns = s.now_unix_ns.saturating_add(d.as_nanos() as u64);
    }

    /// Value of a metric by name (metrics are process-wide in Envoy: every
    /// VM that defines the same name shares it).
    pub fn metric(&self, name: &str) -> Option<MetricValue> {
        let s = lock(&self.shared);
        let m = s.metrics.get(name)?;
        Some(match m.kind? {
            MetricType::Counter => MetricValue::Counter(m.counter),
            MetricType::Gauge => MetricValue::Gauge(m.gauge),
            MetricType::Histogram => MetricValue::Histogram(m.histogram.clone()),
        })
    }

    /// Counter value, 0 if undefined (panics never; a non-counter reads 0).
    pub fn counter(&self, name: &str) -> u64 {
        match self.metric(name) {
            Some(MetricValue::Counter(v)) => v,
            _ => 0,
        }
    }

    /// All metric names defined so far.
    pub fn metric_names(&self) -> Vec<String> {
        lock(&self.shared).metrics.keys().cloned().collect()
    }

    /// Shared data of `vm_id`: `(value, cas)`.
    pub fn shared_data(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.shared)
            .shared_data
            .get(vm_id)
            .and_then(|m| m.get(key))
            .cloned()
    }

    /// Writes shared data as a host would (unconditionally, new CAS).
    pub fn set_shared_data(&self, vm_id: &str, key: &str, value: &[u8]) {
        let mut s = lock(&self.shared);
        let cas = s.next_cas();
        s.shared_data
            .entry(vm_id.to_string())
            .or_default()
            .insert(key.to_string(), (value.to_vec(), cas));
    }

    /// Enqueues to a queue registered by a VM (as another process component
    /// would); the owner's `on_queue_ready` runs on its next [`Vm::poll`].
    pub fn enqueue(&self, vm_id: &str, queue: &str, item: &[u8]) -> Result<(), Error> {
        let mut s = lock(&self.shared);
        let token = s
            .queues
            .iter()
            .find(|(_, q)| q.vm_id == vm_id && q.name == queue)
            .map(|(t, _)| *t)
            .ok_or_else(|| Error::Harness(format!("no queue {vm_id}/{queue} registered")))?;
        crate::imports::enqueue_locked(&mut s, token, item.to_vec());
        Ok(())
    }

    /// Items currently waiting in a queue.
    pub fn queue_items(&self, vm_id: &str, queue: &str) -> Vec<Vec<u8>> {
        lock(&self.shared)
            .queues
            .values()
            .find(|q| q.vm_id == vm_id && q.name == queue)
            .map(|q| q.items.iter().cloned().collect())
            .unwrap_or_default()
    }
}
