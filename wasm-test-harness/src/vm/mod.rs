//! A VM: one instance of a module, as one Envoy worker runs it, with its
//! root context and HTTP stream contexts. It calls the guest's callbacks,
//! fails like Envoy's fail-closed VM on a trap, and runs what Envoy runs
//! after a VM call returns (local replies, body parked while paused).

mod after_call;
mod callouts;
mod exports;
mod timers;

use std::collections::HashMap;

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::abi::{Action, LogLevel};
use crate::engine::{Module, EPOCH_TICKS_PER_SEC};
use crate::error::Error;
use crate::imports::{VmData, Window};
use crate::state::host::{Host, Identity, LogRecord, Phase};
use crate::state::process::{lock, SharedProcess};
use crate::state::stream::StreamState;
use exports::Exports;

/// Configures a VM before it starts.
pub struct VmBuilder<'h> {
    process: &'h SharedProcess,
    module: Module,
    id: Identity,
}

impl<'h> VmBuilder<'h> {
    pub(crate) fn new(process: &'h SharedProcess, module: Module) -> Self {
        Self {
            process,
            module,
            id: Identity {
                vm_id: String::new(),
                root_id: String::new(),
                plugin_name: "plugin".into(),
                vm_configuration: Vec::new(),
                properties: HashMap::new(),
                log_level: LogLevel::Trace,
            },
        }
    }

    /// VMs with the same vm_id share shared data (as in Envoy).
    pub fn vm_id(mut self, id: &str) -> Self {
        self.id.vm_id = id.to_string();
        self
    }

    /// The plugin's root_id (Istio: `pluginName`).
    pub fn root_id(mut self, id: &str) -> Self {
        self.id.root_id = id.to_string();
        self
    }

    pub fn plugin_name(mut self, name: &str) -> Self {
        self.id.plugin_name = name.to_string();
        self
    }

    /// Bytes the guest reads in `on_vm_start`.
    pub fn vm_configuration(mut self, bytes: &[u8]) -> Self {
        self.id.vm_configuration = bytes.to_vec();
        self
    }

    /// A VM-wide property (e.g. `node.id`), for every context.
    pub fn property(mut self, path: &[&str], value: Vec<u8>) -> Self {
        self.id
            .properties
            .insert(crate::property::path(path), value);
        self
    }

    /// What `proxy_get_log_level` answers (all logs are captured anyway).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.id.log_level = level;
        self
    }

    /// Instantiates the module and runs `_initialize` (host calls
    /// restricted as in Envoy), creates the root context and calls
    /// `on_vm_start`, as Envoy does at load.
    pub fn start(self) -> Result<Vm, Error> {
        Vm::start(self)
    }
}

/// A running VM. Not `Sync`: one test thread drives it, like one worker.
pub struct Vm {
    store: Store<VmData>,
    exports: Exports,
    process: SharedProcess,
    root_context: u32,
    next_context: u32,
    failed: Option<String>,
    fuel: bool,
    fuel_start: u64,
    call_timeout_ticks: u64,
    in_after_call: bool,
}

const FUEL_BUDGET: u64 = u64::MAX / 4;

#[derive(Clone, Copy)]
pub(crate) enum StreamCallback {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
}

impl Vm {
    fn start(b: VmBuilder<'_>) -> Result<Vm, Error> {
        let engine = crate::engine::engine(b.module.fuel)?;
        let (vm_number, seed, timeout) = {
            let mut p = lock(b.process);
            p.next_vm += 1;
            (p.next_vm, p.seed, p.call_timeout)
        };
        let host = Host::new(b.process.clone(), vm_number, seed, b.id);
        let data = VmData {
            host,
            memory: None,
            alloc: None,
            restricted: None,
            crossings: Default::default(),
        };
        let mut store = Store::new(engine, data);
        store.epoch_deadline_trap();
        if b.module.fuel {
            store
                .set_fuel(FUEL_BUDGET)
                .map_err(|e| Error::Setup(format!("fuel: {e}")))?;
        }
        let module = &b.module.inner;
        let abi_ok = module.exports().any(|e| {
            e.name() == "proxy_abi_version_0_2_1" || e.name() == "proxy_abi_version_0_2_0"
        });
        if !abi_ok {
            return Err(Error::Setup(format!(
                "{} does not export proxy_abi_version_0_2_1 (or 0_2_0): not a proxy-wasm 0.2 module",
                b.module.name
            )));
        }
        let linker = crate::imports::linker(engine, module)?;
        let instance: Instance = linker
            .instantiate(&mut store, module)
            .map_err(|e| Error::Setup(format!("cannot instantiate {}: {e:#}", b.module.name)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| Error::Setup("module exports no memory".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .map_err(|_| {
                Error::Setup("module exports neither proxy_on_memory_allocate nor malloc".into())
            })?;
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = Some(alloc);
        let exports = Exports::find(&instance, &mut store);
        let fuel_start = if b.module.fuel {
            store.get_fuel().unwrap_or(0)
        } else {
            0
        };
        let mut vm = Vm {
            store,
            exports,
            process: b.process.clone(),
            root_context: 1,
            next_context: 2,
            failed: None,
            fuel: b.module.fuel,
            fuel_start,
            call_timeout_ticks: (timeout.as_millis() as u64 * EPOCH_TICKS_PER_SEC / 1000).max(1),
            in_after_call: false,
        };

        // WASI initialisation, with host calls restricted as Envoy does,
        // then the root context.
        vm.store.data_mut().restricted = Some(Window::Start);
        let initialized = vm.initialize(&instance);
        vm.store.data_mut().restricted = None;
        initialized?;
        let root = vm.root_context as i32;
        let create = vm.exports.on_context_create.clone();
        vm.invoke("proxy_on_context_create", 1, create, (root, 0))?;
        let size = vm.host().vm_configuration.len() as i32;
        vm.host_mut().phase = Phase::VmStart;
        let start = vm.exports.on_vm_start.clone();
        let ok = vm.invoke("proxy_on_vm_start", 1, start, (root, size));
        vm.host_mut().phase = Phase::None;
        if ok?.unwrap_or(1) == 0 {
            return Err(Error::Refused(format!(
                "on_vm_start returned false; logs:\n{}",
                vm.log_text()
            )));
        }
        Ok(vm)
    }

    /// cpp-host `WasmBase::startVm`: a WASI reactor's `_initialize`, then
    /// its `main(0, 0)` or `__main_void` if exported; else a WASI
    /// command's `_start`.
    fn initialize(&mut self, instance: &Instance) -> Result<(), Error> {
        let s = &mut self.store;
        let Ok(init) = instance.get_typed_func::<(), ()>(&mut *s, "_initialize") else {
            let start = instance.get_typed_func::<(), ()>(&mut *s, "_start").ok();
            return self.invoke("_start", 0, start, ()).map(|_| ());
        };
        let main = instance
            .get_typed_func::<(i32, i32), i32>(&mut *s, "main")
            .ok();
        let main_void = instance
            .get_typed_func::<(), i32>(&mut *s, "__main_void")
            .ok();
        self.invoke("_initialize", 0, Some(init), ())?;
        if main.is_some() {
            self.invoke("main", 0, main, (0, 0))?;
        } else {
            self.invoke("__main_void", 0, main_void, ())?;
        }
        Ok(())
    }

    pub(crate) fn host(&self) -> &Host {
        &self.store.data().host
    }

    pub(crate) fn host_mut(&mut self) -> &mut Host {
        &mut self.store.data_mut().host
    }

    pub(crate) fn process(&self) -> &SharedProcess {
        &self.process
    }

    pub(crate) fn fuel_enabled(&self) -> bool {
        self.fuel
    }

    /// Calls a guest export with `context` as the effective context. A trap
    /// marks the VM failed. Returns `None` when the export is missing.
    pub(crate) fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        what: &str,
        context: u32,
        f: Option<TypedFunc<P, R>>,
        params: P,
    ) -> Result<Option<R>, Error> {
        if let Some(reason) = &self.failed {
            return Err(Error::VmFailed(reason.clone()));
        }
        let Some(f) = f else { return Ok(None) };
        self.store.data_mut().crossings.get_mut().callbacks += 1;
        self.host_mut().effective = context;
        self.store.set_epoch_deadline(self.call_timeout_ticks);
        crate::crossings::trace(format_args!(">{what}"), || {
            self.store.get_fuel().unwrap_or(0)
        });
        let res = f.call(&mut self.store, params);
        crate::crossings::trace(format_args!("<{what}"), || {
            self.store.get_fuel().unwrap_or(0)
        });
        match res {
            Ok(r) => {
                if !self.in_after_call {
                    self.in_after_call = true;
                    let after = self.after_call();
                    self.in_after_call = false;
                    after?;
                }
                Ok(Some(r))
            }
            Err(err) => {
                let message = self.describe_trap(&err);
                self.failed = Some(format!("{what}: {message}"));
                Err(Error::Trap {
                    callback: what.to_string(),
                    message,
                })
            }
        }
    }

    fn describe_trap(&self, err: &wasmtime::Error) -> String {
        let mut msg = if matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            format!("interrupted: the guest did not return within the call timeout ({err})")
        } else if let Some(trace) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
            // What failed first, then where (Envoy's order).
            format!("{}\n{trace}", err.root_cause())
        } else {
            format!("{err:#}")
        };
        // The SDK's panic hook logs the panic message at critical level
        // right before it aborts: surface it.
        if let Some(last) = self
            .host()
            .logs
            .iter()
            .rev()
            .find(|l| l.level == LogLevel::Critical)
        {
            msg = format!("{msg}\nlast critical log: {}", last.message);
        }
        msg
    }

    /// Runs `on_configure` with `plugin_configuration`; returns its verdict.
    pub fn configure(&mut self, plugin_configuration: impl AsRef<[u8]>) -> Result<bool, Error> {
        let bytes = plugin_configuration.as_ref().to_vec();
        let size = bytes.len() as i32;
        self.host_mut().plugin_configuration = bytes;
        self.host_mut().phase = Phase::Configure;
        let root = self.root_context;
        let f = self.exports.on_configure.clone();
        let r = self.invoke("proxy_on_configure", root, f, (root as i32, size));
        self.host_mut().phase = Phase::None;
        Ok(r?.unwrap_or(1) != 0)
    }

    /// Creates a stream context (`proxy_on_context_create`); its id.
    pub(crate) fn create_stream(&mut self) -> Result<u32, Error> {
        let id = self.next_context;
        self.next_context += 1;
        self.host_mut().streams.insert(id, StreamState::default());
        let f = self.exports.on_context_create.clone();
        let root = self.root_context as i32;
        self.invoke("proxy_on_context_create", id, f, (id as i32, root))?;
        Ok(id)
    }

    pub(crate) fn stream_state(&self, id: u32) -> Option<&StreamState> {
        self.host().streams.get(&id)
    }

    pub(crate) fn stream_state_mut(&mut self, id: u32) -> Option<&mut StreamState> {
        self.host_mut().streams.get_mut(&id)
    }

    pub(crate) fn call_stream(
        &mut self,
        which: StreamCallback,
        id: u32,
        a: i32,
        b: i32,
    ) -> Result<Action, Error> {
        let (name, f) = match which {
            StreamCallback::RequestHeaders => (
                "proxy_on_request_headers",
                self.exports.on_request_headers.clone(),
            ),
            StreamCallback::RequestBody => (
                "proxy_on_request_body",
                self.exports.on_request_body.clone(),
            ),
            StreamCallback::ResponseHeaders => (
                "proxy_on_response_headers",
                self.exports.on_response_headers.clone(),
            ),
            StreamCallback::ResponseBody => (
                "proxy_on_response_body",
                self.exports.on_response_body.clone(),
            ),
        };
        Ok(self
            .invoke(name, id, f, (id as i32, a, b))?
            .map(Action::from_raw)
            .unwrap_or(Action::Continue))
    }

    pub(crate) fn call_trailers(
        &mut self,
        request: bool,
        id: u32,
        n: i32,
    ) -> Result<Action, Error> {
        let (name, f) = if request {
            (
                "proxy_on_request_trailers",
                self.exports.on_request_trailers.clone(),
            )
        } else {
            (
                "proxy_on_response_trailers",
                self.exports.on_response_trailers.clone(),
            )
        };
        Ok(self
            .invoke(name, id, f, (id as i32, n))?
            .map(Action::from_raw)
            .unwrap_or(Action::Continue))
    }

    pub(crate) fn call_log(&mut self, id: u32) -> Result<(), Error> {
        let f = self.exports.on_log.clone();
        self.invoke("proxy_on_log", id, f, id as i32).map(|_| ())
    }

    pub(crate) fn call_done(&mut self, id: u32) -> Result<bool, Error> {
        let f = self.exports.on_done.clone();
        Ok(self.invoke("proxy_on_done", id, f, id as i32)?.unwrap_or(1) != 0)
    }

    /// `on_delete`, then the stream's state is dropped (as Envoy frees the
    /// context): long runs do not accumulate memory.
    pub(crate) fn call_delete(&mut self, id: u32) -> Result<(), Error> {
        let f = self.exports.on_delete.clone();
        let r = self.invoke("proxy_on_delete", id, f, id as i32).map(|_| ());
        self.host_mut().streams.remove(&id);
        r
    }

    /// Everything the guest logged, in order.
    pub fn logs(&self) -> &[LogRecord] {
        &self.host().logs
    }

    /// Messages logged at exactly `level`.
    pub fn logs_at(&self, level: LogLevel) -> Vec<String> {
        self.logs()
            .iter()
            .filter(|l| l.level == level)
            .map(|l| l.message.clone())
            .collect()
    }

    /// All logs as text, one `[level] message` per line.
    pub fn log_text(&self) -> String {
        self.logs()
            .iter()
            .map(|l| format!("[{:?}] {}", l.level, l.message))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What the guest wrote to WASI stdout / stderr.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.host().stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.host().stderr).into_owned()
    }

    /// Why the VM failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Sets a VM-wide property (e.g. `node.id`), visible from every context.
    pub fn set_property(&mut self, path: &[&str], value: Vec<u8>) {
        self.host_mut()
            .vm_properties
            .insert(crate::property::path(path), value);
    }

    /// Guest instructions executed so far (wasmtime fuel; needs
    /// `Harness::builder().fuel(true)`, else 0).
    pub fn fuel_consumed(&self) -> u64 {
        if !self.fuel {
            return 0;
        }
        self.fuel_start
            .saturating_sub(self.store.get_fuel().unwrap_or(self.fuel_start))
    }

    /// Crossings of the VM boundary so far: callbacks into the guest, host
    /// calls out of it, guest allocations for host data
    /// ([`crate::Crossings`]; subtract two with `since`).
    pub fn crossings(&self) -> crate::Crossings {
        self.store.data().crossings.borrow().clone()
    }

    pub fn vm_id(&self) -> &str {
        &self.host().vm_id
    }

    pub fn root_context_id(&self) -> u32 {
        self.root_context
    }

    /// Times the guest called `proxy_done`.
    pub fn done_calls(&self) -> u32 {
        self.host().done_calls
    }
}
