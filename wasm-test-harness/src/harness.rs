//! The harness: one simulated Envoy process. It owns what Envoy shares
//! between workers (`state::process`) and starts VMs (one per simulated
//! worker).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::{self, Module};
use crate::error::Error;
use crate::state::metrics::MetricValue;
use crate::state::process::{lock, Process, SharedProcess};
use crate::vm::{Vm, VmBuilder};

/// Wall-clock start of every harness: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_UNIX_NS: u64 = 1_767_225_600_000_000_000;

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
        let process = Process::new(self.start, self.seed, self.call_timeout);
        Harness {
            fuel: self.fuel,
            process: Arc::new(Mutex::new(process)),
        }
    }
}

/// A simulated Envoy process. Independent of every other harness: tests can
/// run in parallel.
#[derive(Clone)]
pub struct Harness {
    fuel: bool,
    process: SharedProcess,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
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
        engine::load(path.as_ref(), self.fuel)
    }

    /// Compiles a module from bytes (binary or WAT text); not cached.
    pub fn module_from_bytes(&self, bytes: &[u8], name: &str) -> Result<Module, Error> {
        engine::compile(bytes, name, self.fuel)
    }

    /// Starts configuring a VM for `module` (one simulated worker).
    pub fn vm<'h>(&'h self, module: &Module) -> VmBuilder<'h> {
        VmBuilder::new(&self.process, module.clone())
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

    /// Declares an upstream cluster; callouts to undeclared clusters get
    /// BadArgument, as in Envoy.
    pub fn declare_cluster(&self, name: &str) {
        lock(&self.process).clusters.insert(name.to_string());
    }

    /// Current wall clock seen by every VM.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(lock(&self.process).now_unix_ns)
    }

    /// Moves the shared clock forward without running anything; each VM
    /// fires its due ticks and callout timeouts on its next [`Vm::poll`].
    /// [`Vm::advance_clock`] moves the clock and polls that VM in one step.
    pub fn advance_clock(&self, d: Duration) {
        let mut p = lock(&self.process);
        let to = p.now_unix_ns.saturating_add(d.as_nanos() as u64);
        p.advance_to(to);
    }

    /// Value of a metric by name (metrics are process-wide in Envoy: every
    /// VM that defines the same name shares it).
    pub fn metric(&self, name: &str) -> Option<MetricValue> {
        lock(&self.process).metrics.value(name)
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
        lock(&self.process).metrics.names()
    }

    /// Shared data of `vm_id`: `(value, cas)`.
    pub fn shared_data(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.process).shared_data.get(vm_id, key)
    }

    /// Every shared-data key of `vm_id`, sorted: what a filter keeps there
    /// (proxy-wasm cannot delete keys, so this shows whether it is bounded).
    pub fn shared_data_keys(&self, vm_id: &str) -> Vec<String> {
        lock(&self.process).shared_data.keys(vm_id)
    }

    /// Writes shared data as a host would (unconditionally, new CAS).
    pub fn set_shared_data(&self, vm_id: &str, key: &str, value: &[u8]) {
        // CAS 0 never mismatches.
        let _ = lock(&self.process)
            .shared_data
            .set(vm_id, key, value.to_vec(), 0);
    }

    /// Enqueues to a queue registered by a VM (as another process component
    /// would); the owner's `on_queue_ready` runs on its next [`Vm::poll`].
    pub fn enqueue(&self, vm_id: &str, queue: &str, item: &[u8]) -> Result<(), Error> {
        let mut p = lock(&self.process);
        let token = p
            .queues
            .resolve(vm_id, queue)
            .ok_or_else(|| Error::Harness(format!("no queue {vm_id}/{queue} registered")))?;
        p.queues
            .enqueue(token, item.to_vec())
            .map_err(|s| Error::Harness(format!("enqueue to {vm_id}/{queue}: {s:?}")))
    }

    /// Items currently waiting in a queue.
    pub fn queue_items(&self, vm_id: &str, queue: &str) -> Vec<Vec<u8>> {
        lock(&self.process).queues.items(vm_id, queue)
    }
}

impl Vm {
    /// The harness (simulated process) this VM runs in.
    pub fn harness(&self) -> Harness {
        Harness {
            fuel: self.fuel_enabled(),
            process: self.process().clone(),
        }
    }
}
