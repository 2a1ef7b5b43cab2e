//! A VM: one instance of a module, as one Envoy worker runs it, with its
//! root context and HTTP stream contexts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{Instance, Memory, Store, TypedFunc, WasmParams, WasmResults};

use crate::abi::{Action, LogLevel};
use crate::error::Error;
use crate::harness::{lock, Harness, Module, Shared, EPOCH_TICKS_PER_SEC};
use crate::headers::Headers;
use crate::http::Http;

/// One log call from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
    /// Effective context when the guest logged.
    pub context_id: u32,
}

/// A `send_local_response` the guest made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// `None` when the guest passed -1 (not a gRPC reply).
    pub grpc_status: Option<i32>,
}

/// A pending `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    /// Context that made the call (its `on_http_call_response` runs).
    pub context_id: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub timeout: Duration,
    pub(crate) deadline_ns: u64,
}

/// How the test answers an HTTP callout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

impl HttpCallResponse {
    pub fn new(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Self {
        let mut h = Headers::from_pairs(&[(":status", status.to_string())]);
        for (k, v) in headers {
            h.add(k, v.as_bytes());
        }
        Self {
            headers: h,
            body: body.to_vec(),
            trailers: Headers::new(),
        }
    }
}

/// A pending unary `dispatch_grpc_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    pub token: u32,
    pub context_id: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: Headers,
    pub message: Vec<u8>,
    pub timeout: Duration,
    pub(crate) deadline_ns: u64,
}

/// A gRPC stream opened by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcStream {
    pub token: u32,
    pub context_id: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: Headers,
    /// Messages the guest sent, in order.
    pub sent: Vec<Vec<u8>>,
    /// The guest half-closed (end_stream) or closed/cancelled the stream.
    pub local_closed: bool,
}

/// Data a callout-response callback can read back (headers, body/message,
/// trailers/trailing metadata).
#[derive(Default)]
pub(crate) struct CalloutData {
    pub headers: Option<Headers>,
    pub body: Vec<u8>,
    pub trailers: Option<Headers>,
}

/// Which maps and buffers Envoy exposes to the filter right now.
#[derive(Default, Clone, Copy)]
pub(crate) struct Live {
    pub request_headers: bool,
    pub request_trailers: bool,
    pub request_body: bool,
    pub response_headers: bool,
    pub response_trailers: bool,
    pub response_body: bool,
    /// `on_log`: every map readable, none writable.
    pub in_log: bool,
}

#[derive(Default)]
pub(crate) struct StreamState {
    pub live: Live,
    /// The filter returned Pause and has not resumed yet.
    pub request_paused: bool,
    pub response_paused: bool,
    /// Body bytes that arrived while headers were paused (Envoy buffers them
    /// and delivers them after the filter resumes).
    pub request_body_pending: Vec<u8>,
    pub response_body_pending: Vec<u8>,
    /// Values the guest stored with `set_property` (Envoy filter state).
    pub filter_state: HashMap<Vec<u8>, Vec<u8>>,
    /// A local reply was recorded during the current callback.
    pub local_reply_pending: bool,
    /// Times the request headers were modified (each clears Envoy's route cache).
    pub request_header_mutations: u32,
    /// Response headers reached the filter (from upstream or a local reply).
    pub response_started: bool,
    pub request_headers: Option<Headers>,
    pub request_trailers: Option<Headers>,
    pub response_headers: Option<Headers>,
    pub response_trailers: Option<Headers>,
    /// Body bytes the filter currently sees (buffered while it pauses).
    pub request_body: Vec<u8>,
    pub request_body_forwarded: Vec<u8>,
    pub response_body: Vec<u8>,
    pub response_body_forwarded: Vec<u8>,
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub local_response: Option<LocalResponse>,
    pub local_responses: u32,
    pub request_resumed: u32,
    pub response_resumed: u32,
    pub closed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    None,
    VmStart,
    Configure,
}

/// Per-VM host state behind every import.
pub(crate) struct HostState {
    pub shared: Arc<Mutex<Shared>>,
    pub vm_number: u64,
    pub vm_id: String,
    pub root_id: String,
    pub plugin_name: String,
    pub vm_configuration: Vec<u8>,
    pub plugin_configuration: Vec<u8>,
    pub phase: Phase,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    pub root_context: u32,
    pub effective: u32,
    pub streams: BTreeMap<u32, StreamState>,
    pub logs: Vec<LogRecord>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub log_level: LogLevel,
    /// Metric id → name; ids are index + 1.
    pub metric_ids: Vec<String>,
    pub tick_period_ms: u32,
    pub next_tick_ns: Option<u64>,
    pub next_token: u32,
    pub http_calls: BTreeMap<u32, HttpCall>,
    pub grpc_calls: BTreeMap<u32, GrpcCall>,
    pub grpc_streams: BTreeMap<u32, GrpcStream>,
    pub callout: Option<CalloutData>,
    pub grpc_status: Option<(u32, Vec<u8>)>,
    pub rng: u64,
    pub vm_properties: HashMap<Vec<u8>, Vec<u8>>,
    pub done_calls: u32,
    /// Streams with a local reply to send once the current VM call returns.
    pub local_replies: Vec<u32>,
}

impl HostState {
    pub fn headers_modified(&mut self, map_type: i32) {
        if map_type == crate::abi::map_type::REQUEST_HEADERS {
            if let Some(s) = self.stream() {
                s.request_header_mutations += 1;
            }
        }
    }

    pub fn stream(&mut self) -> Option<&mut StreamState> {
        let id = self.effective;
        self.streams.get_mut(&id)
    }

    pub fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic per (harness seed, VM number).
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn new_token(&mut self) -> u32 {
        self.next_token += 1;
        self.next_token
    }
}

/// (context, token, headers, body size, trailers)
type I32x5 = (i32, i32, i32, i32, i32);

/// The module's exported callbacks. Missing ones are skipped, as in Envoy.
#[derive(Clone)]
struct Exports {
    on_context_create: Option<TypedFunc<(i32, i32), ()>>,
    on_vm_start: Option<TypedFunc<(i32, i32), i32>>,
    on_configure: Option<TypedFunc<(i32, i32), i32>>,
    on_tick: Option<TypedFunc<i32, ()>>,
    on_queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    on_request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    on_response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    on_log: Option<TypedFunc<i32, ()>>,
    on_done: Option<TypedFunc<i32, i32>>,
    on_delete: Option<TypedFunc<i32, ()>>,
    on_http_call_response: Option<TypedFunc<I32x5, ()>>,
    on_grpc_receive_initial_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    on_grpc_receive: Option<TypedFunc<(i32, i32, i32), ()>>,
    on_grpc_receive_trailing_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    on_grpc_close: Option<TypedFunc<(i32, i32, i32), ()>>,
}

/// Configures a VM before it starts.
pub struct VmBuilder<'h> {
    harness: &'h Harness,
    module: Module,
    vm_id: String,
    root_id: String,
    plugin_name: String,
    vm_configuration: Vec<u8>,
    properties: Vec<(Vec<u8>, Vec<u8>)>,
    log_level: LogLevel,
}

impl<'h> VmBuilder<'h> {
    pub(crate) fn new(harness: &'h Harness, module: Module) -> Self {
        Self {
            harness,
            module,
            vm_id: String::new(),
            root_id: String::new(),
            plugin_name: "plugin".into(),
            vm_configuration: Vec::new(),
            properties: Vec::new(),
            log_level: LogLevel::Trace,
        }
    }

    /// VMs with the same vm_id share shared data (as in Envoy).
    pub fn vm_id(mut self, id: &str) -> Self {
        self.vm_id = id.to_string();
        self
    }

    /// The plugin's root_id (Istio: `pluginName`).
    pub fn root_id(mut self, id: &str) -> Self {
        self.root_id = id.to_string();
        self
    }

    pub fn plugin_name(mut self, name: &str) -> Self {
        self.plugin_name = name.to_string();
        self
    }

    /// Bytes the guest reads in `on_vm_start`.
    pub fn vm_configuration(mut self, bytes: &[u8]) -> Self {
        self.vm_configuration = bytes.to_vec();
        self
    }

    /// A VM-wide property (e.g. `node.id`), for every context.
    pub fn property(mut self, path: &[&str], value: Vec<u8>) -> Self {
        self.properties.push((crate::property::path(path), value));
        self
    }

    /// What `proxy_get_log_level` answers (all logs are captured anyway).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// Instantiates the module and runs `_initialize`, creates the root
    /// context and calls `on_vm_start`, as Envoy does at load.
    pub fn start(self) -> Result<Vm, Error> {
        Vm::start(self)
    }
}

/// A running VM. Not `Sync`: one test thread drives it, like one worker.
pub struct Vm {
    store: Store<HostState>,
    exports: Exports,
    harness: Harness,
    root_context: u32,
    next_context: u32,
    failed: Option<String>,
    fuel: bool,
    fuel_start: u64,
    call_timeout_ticks: u64,
    in_after_call: bool,
}

const FUEL_BUDGET: u64 = u64::MAX / 4;

impl Vm {
    fn start(b: VmBuilder<'_>) -> Result<Vm, Error> {
        let engine = b.harness.engine()?;
        let (vm_number, seed, timeout) = {
            let mut s = lock(&b.harness.shared);
            s.next_vm += 1;
            (s.next_vm, s.seed, s.call_timeout)
        };
        let state = HostState {
            shared: b.harness.shared.clone(),
            vm_number,
            vm_id: b.vm_id,
            root_id: b.root_id,
            plugin_name: b.plugin_name,
            vm_configuration: b.vm_configuration,
            plugin_configuration: Vec::new(),
            phase: Phase::None,
            memory: None,
            alloc: None,
            root_context: 1,
            effective: 1,
            streams: BTreeMap::new(),
            logs: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            log_level: b.log_level,
            metric_ids: Vec::new(),
            tick_period_ms: 0,
            next_tick_ns: None,
            next_token: 0,
            http_calls: BTreeMap::new(),
            grpc_calls: BTreeMap::new(),
            grpc_streams: BTreeMap::new(),
            callout: None,
            grpc_status: None,
            rng: seed ^ vm_number.wrapping_mul(0xd6e8_feb8_6659_fd93),
            vm_properties: b.properties.into_iter().collect(),
            done_calls: 0,
            local_replies: Vec::new(),
        };
        let mut store = Store::new(engine, state);
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

        macro_rules! export {
            ($name:literal) => {
                instance.get_typed_func(&mut store, $name).ok()
            };
        }
        let exports = Exports {
            on_context_create: export!("proxy_on_context_create"),
            on_vm_start: export!("proxy_on_vm_start"),
            on_configure: export!("proxy_on_configure"),
            on_tick: export!("proxy_on_tick"),
            on_queue_ready: export!("proxy_on_queue_ready"),
            on_request_headers: export!("proxy_on_request_headers"),
            on_request_body: export!("proxy_on_request_body"),
            on_request_trailers: export!("proxy_on_request_trailers"),
            on_response_headers: export!("proxy_on_response_headers"),
            on_response_body: export!("proxy_on_response_body"),
            on_response_trailers: export!("proxy_on_response_trailers"),
            on_log: export!("proxy_on_log"),
            on_done: export!("proxy_on_done"),
            on_delete: export!("proxy_on_delete"),
            on_http_call_response: export!("proxy_on_http_call_response"),
            on_grpc_receive_initial_metadata: export!("proxy_on_grpc_receive_initial_metadata"),
            on_grpc_receive: export!("proxy_on_grpc_receive"),
            on_grpc_receive_trailing_metadata: export!("proxy_on_grpc_receive_trailing_metadata"),
            on_grpc_close: export!("proxy_on_grpc_close"),
        };
        let fuel_start = if b.module.fuel {
            store.get_fuel().unwrap_or(0)
        } else {
            0
        };
        let mut vm = Vm {
            store,
            exports,
            harness: b.harness.clone(),
            root_context: 1,
            next_context: 2,
            failed: None,
            fuel: b.module.fuel,
            fuel_start,
            call_timeout_ticks: (timeout.as_millis() as u64 * EPOCH_TICKS_PER_SEC / 1000).max(1),
            in_after_call: false,
        };

        // WASI reactor initialisation, then the root context.
        for init in ["_initialize", "_start"] {
            if let Ok(f) = instance.get_typed_func::<(), ()>(&mut vm.store, init) {
                vm.invoke(init, 0, Some(f), ())?;
                break;
            }
        }
        let root = vm.root_context as i32;
        let create = vm.exports.on_context_create.clone();
        vm.invoke("proxy_on_context_create", 1, create, (root, 0))?;
        let size = vm.store.data().vm_configuration.len() as i32;
        vm.store.data_mut().phase = Phase::VmStart;
        let start = vm.exports.on_vm_start.clone();
        let ok = vm.invoke("proxy_on_vm_start", 1, start, (root, size));
        vm.store.data_mut().phase = Phase::None;
        if ok?.unwrap_or(1) == 0 {
            return Err(Error::Refused(format!(
                "on_vm_start returned false; logs:\n{}",
                vm.log_text()
            )));
        }
        Ok(vm)
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
        self.store.data_mut().effective = context;
        self.store.set_epoch_deadline(self.call_timeout_ticks);
        match f.call(&mut self.store, params) {
            Ok(r) => {
                if !self.in_after_call && !self.store.data().local_replies.is_empty() {
                    self.in_after_call = true;
                    let after = self.run_local_replies();
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

    /// Envoy sends a local reply after the VM call that requested it
    /// returns. Before the response started it goes through the filter
    /// chain (`on_response_headers`, `on_response_body`); afterwards it
    /// replaces the response directly.
    fn run_local_replies(&mut self) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.store.data_mut().local_replies);
        for id in pending {
            let Some(s) = self.store.data_mut().streams.get_mut(&id) else {
                continue;
            };
            s.local_reply_pending = false;
            s.live.request_headers = false;
            s.live.request_body = false;
            s.request_paused = false;
            let Some(reply) = s.local_response.clone() else {
                continue;
            };
            let grpc_request = s
                .request_headers
                .as_ref()
                .and_then(|h| h.get("content-type"))
                .is_some_and(|ct| ct.starts_with("application/grpc"));
            let (headers, body) = local_reply_message(&reply, grpc_request);
            let through_filter = !s.response_started;
            s.response_started = true;
            s.response_headers = Some(headers.clone());
            s.response_body_forwarded.clear();
            if !through_filter {
                s.response_body_forwarded = body;
                continue;
            }
            s.live.response_headers = true;
            let n = headers.len() as i32;
            let eos = i32::from(body.is_empty());
            self.call_stream_headers(StreamCallback::ResponseHeaders, id, n, eos)?;
            if let Some(s) = self.store.data_mut().streams.get_mut(&id) {
                s.live.response_headers = false;
                s.response_body = body.clone();
                s.live.response_body = !body.is_empty();
            }
            if !body.is_empty() {
                self.call_stream_headers(StreamCallback::ResponseBody, id, body.len() as i32, 1)?;
            }
            if let Some(s) = self.store.data_mut().streams.get_mut(&id) {
                s.live.response_body = false;
                let b = std::mem::take(&mut s.response_body);
                s.response_body_forwarded = b;
            }
        }
        Ok(())
    }

    fn describe_trap(&self, err: &wasmtime::Error) -> String {
        let mut msg = if matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            format!("interrupted: the guest did not return within the call timeout ({err})")
        } else {
            format!("{err:#}")
        };
        // The SDK's panic hook logs the panic message at critical level
        // right before it aborts: surface it.
        if let Some(last) = self
            .store
            .data()
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
        self.store.data_mut().plugin_configuration = bytes;
        self.store.data_mut().phase = Phase::Configure;
        let root = self.root_context;
        let f = self.exports.on_configure.clone();
        let r = self.invoke("proxy_on_configure", root, f, (root as i32, size));
        self.store.data_mut().phase = Phase::None;
        Ok(r?.unwrap_or(1) != 0)
    }

    /// Creates an HTTP stream context (`proxy_on_context_create`).
    pub fn new_http(&mut self) -> Result<Http<'_>, Error> {
        let id = self.next_context;
        self.next_context += 1;
        self.store
            .data_mut()
            .streams
            .insert(id, StreamState::default());
        let f = self.exports.on_context_create.clone();
        let root = self.root_context as i32;
        self.invoke("proxy_on_context_create", id, f, (id as i32, root))?;
        Ok(Http::new(self, id))
    }

    /// Handle to an existing stream.
    pub fn http(&mut self, id: u32) -> Result<Http<'_>, Error> {
        if !self.store.data().streams.contains_key(&id) {
            return Err(Error::Harness(format!("no HTTP stream {id}")));
        }
        Ok(Http::new(self, id))
    }

    pub(crate) fn stream_state(&self, id: u32) -> Option<&StreamState> {
        self.store.data().streams.get(&id)
    }

    pub(crate) fn stream_state_mut(&mut self, id: u32) -> Option<&mut StreamState> {
        self.store.data_mut().streams.get_mut(&id)
    }

    pub(crate) fn call_stream_headers(
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
        self.store.data_mut().streams.remove(&id);
        r
    }

    /// Fires `on_tick` once on the root context.
    pub fn tick(&mut self) -> Result<(), Error> {
        let root = self.root_context;
        let f = self.exports.on_tick.clone();
        self.invoke("proxy_on_tick", root, f, root as i32)
            .map(|_| ())
    }

    /// Tick period the guest asked for (None if never set or 0).
    pub fn tick_period(&self) -> Option<Duration> {
        match self.store.data().tick_period_ms {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        }
    }

    /// Moves the shared clock forward by `d`, firing this VM's ticks at
    /// each period boundary and timing out callouts whose deadline passes,
    /// in time order; then delivers queue notifications.
    pub fn advance_clock(&mut self, d: Duration) -> Result<(), Error> {
        let target = {
            let s = lock(&self.harness.shared);
            s.now_unix_ns.saturating_add(d.as_nanos() as u64)
        };
        loop {
            let next = self.next_timer_ns();
            match next {
                Some(t) if t <= target => {
                    {
                        let mut s = lock(&self.harness.shared);
                        s.now_unix_ns = s.now_unix_ns.max(t);
                    }
                    self.fire_due_timers()?;
                }
                _ => break,
            }
        }
        {
            let mut s = lock(&self.harness.shared);
            s.now_unix_ns = s.now_unix_ns.max(target);
        }
        self.poll()
    }

    /// Delivers what Envoy's event loop would deliver to this VM now: ticks
    /// and callout timeouts that are due, and `on_queue_ready` for items
    /// enqueued to queues this VM registered.
    pub fn poll(&mut self) -> Result<(), Error> {
        self.fire_due_timers()?;
        let mine: Vec<(u32, u32)> = {
            let mut s = lock(&self.harness.shared);
            let vm = self.store.data().vm_number;
            let (mine, rest): (Vec<_>, Vec<_>) =
                s.queue_ready.drain(..).partition(|(n, _, _)| *n == vm);
            s.queue_ready = rest;
            mine.into_iter().map(|(_, ctx, q)| (ctx, q)).collect()
        };
        for (ctx, queue) in mine {
            let f = self.exports.on_queue_ready.clone();
            self.invoke("proxy_on_queue_ready", ctx, f, (ctx as i32, queue as i32))?;
        }
        Ok(())
    }

    fn now_ns(&self) -> u64 {
        lock(&self.harness.shared).now_unix_ns
    }

    fn next_timer_ns(&self) -> Option<u64> {
        let st = self.store.data();
        let calls = st.http_calls.values().map(|c| c.deadline_ns);
        let grpc = st.grpc_calls.values().map(|c| c.deadline_ns);
        st.next_tick_ns.into_iter().chain(calls).chain(grpc).min()
    }

    fn fire_due_timers(&mut self) -> Result<(), Error> {
        let now = self.now_ns();
        let expired_http: Vec<u32> = self
            .store
            .data()
            .http_calls
            .values()
            .filter(|c| c.deadline_ns <= now)
            .map(|c| c.token)
            .collect();
        for token in expired_http {
            self.time_out_http_call(token)?;
        }
        let expired_grpc: Vec<u32> = self
            .store
            .data()
            .grpc_calls
            .values()
            .filter(|c| c.deadline_ns <= now)
            .map(|c| c.token)
            .collect();
        for token in expired_grpc {
            self.fail_grpc_call(token, 4, "gRPC call timed out")?;
        }
        if let Some(t) = self.store.data().next_tick_ns {
            if t <= now {
                let period = u64::from(self.store.data().tick_period_ms) * 1_000_000;
                // Envoy re-arms the timer after the callback, from "now".
                self.store.data_mut().next_tick_ns = Some(now + period);
                self.tick()?;
            }
        }
        Ok(())
    }

    /// Pending HTTP callouts, oldest first.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.store.data().http_calls.values().cloned().collect()
    }

    fn take_http_call(&mut self, token: u32) -> Result<HttpCall, Error> {
        self.store
            .data_mut()
            .http_calls
            .remove(&token)
            .ok_or_else(|| Error::Harness(format!("no pending HTTP call with token {token}")))
    }

    fn take_grpc_call(&mut self, token: u32) -> Result<GrpcCall, Error> {
        self.store
            .data_mut()
            .grpc_calls
            .remove(&token)
            .ok_or_else(|| Error::Harness(format!("no pending gRPC call with token {token}")))
    }

    fn check_grpc_stream(&self, token: u32) -> Result<(), Error> {
        if self.store.data().grpc_streams.contains_key(&token) {
            Ok(())
        } else {
            Err(Error::Harness(format!("no gRPC stream with token {token}")))
        }
    }

    /// Envoy delivers every callout result on the root context (the SDK
    /// switches to the calling context itself). `callout` is what the
    /// callback can read back, `status` what `proxy_get_status` answers.
    fn deliver<P: WasmParams>(
        &mut self,
        name: &str,
        f: Option<TypedFunc<P, ()>>,
        callout: Option<CalloutData>,
        status: Option<(u32, Vec<u8>)>,
        params: P,
    ) -> Result<(), Error> {
        let h = self.store.data_mut();
        h.callout = callout;
        h.grpc_status = status;
        let r = self.invoke(name, self.root_context, f, params).map(|_| ());
        let h = self.store.data_mut();
        h.callout = None;
        h.grpc_status = None;
        r
    }

    /// Answers a callout: runs `on_http_call_response` in the calling context.
    pub fn respond_http_call(
        &mut self,
        token: u32,
        response: HttpCallResponse,
    ) -> Result<(), Error> {
        self.take_http_call(token)?;
        let root = self.root_context as i32;
        let params = (
            root,
            token as i32,
            response.headers.len() as i32,
            response.body.len() as i32,
            response.trailers.len() as i32,
        );
        let data = CalloutData {
            headers: Some(response.headers),
            body: response.body,
            trailers: Some(response.trailers),
        };
        let f = self.exports.on_http_call_response.clone();
        self.deliver("proxy_on_http_call_response", f, Some(data), None, params)
    }

    /// A failed callout (reset, no healthy upstream): Envoy calls
    /// `on_http_call_response` with no headers, body or trailers and
    /// reports BrokenConnection "reset" through `proxy_get_status`.
    pub fn fail_http_call(&mut self, token: u32) -> Result<(), Error> {
        self.take_http_call(token)?;
        let root = self.root_context as i32;
        let f = self.exports.on_http_call_response.clone();
        self.deliver(
            "proxy_on_http_call_response",
            f,
            Some(CalloutData::default()),
            Some((11, b"reset".to_vec())),
            (root, token as i32, 0, 0, 0),
        )
    }

    /// A callout whose timeout passed: Envoy's async client answers with a
    /// local `504` (`upstream request timeout`).
    pub fn time_out_http_call(&mut self, token: u32) -> Result<(), Error> {
        let body = b"upstream request timeout".to_vec();
        let headers = Headers::from_pairs(&[
            (":status", "504".to_string()),
            ("content-length", body.len().to_string()),
            ("content-type", "text/plain".to_string()),
        ]);
        self.respond_http_call(
            token,
            HttpCallResponse {
                headers,
                body,
                trailers: Headers::new(),
            },
        )
    }

    /// Pending unary gRPC calls.
    pub fn grpc_calls(&self) -> Vec<GrpcCall> {
        self.store.data().grpc_calls.values().cloned().collect()
    }

    /// Successful unary reply: Envoy calls only `on_grpc_receive` (the SDK
    /// reports status 0 to `on_grpc_call_response`).
    pub fn respond_grpc_call(&mut self, token: u32, message: &[u8]) -> Result<(), Error> {
        self.take_grpc_call(token)?;
        self.grpc_receive(token, message)
    }

    fn grpc_receive(&mut self, token: u32, message: &[u8]) -> Result<(), Error> {
        let data = CalloutData {
            headers: None,
            body: message.to_vec(),
            trailers: None,
        };
        let params = (self.root_context as i32, token as i32, message.len() as i32);
        let f = self.exports.on_grpc_receive.clone();
        self.deliver("proxy_on_grpc_receive", f, Some(data), None, params)
    }

    /// Failed unary call: `on_grpc_close` with `status` (and the message
    /// available through `proxy_get_status`).
    pub fn fail_grpc_call(&mut self, token: u32, status: u32, message: &str) -> Result<(), Error> {
        self.take_grpc_call(token)?;
        self.close_grpc(token, status, message)
    }

    fn close_grpc(&mut self, token: u32, status: u32, message: &str) -> Result<(), Error> {
        let params = (self.root_context as i32, token as i32, status as i32);
        let f = self.exports.on_grpc_close.clone();
        let status = Some((status, message.as_bytes().to_vec()));
        self.deliver("proxy_on_grpc_close", f, None, status, params)
    }

    /// gRPC streams the guest opened.
    pub fn grpc_streams(&self) -> Vec<GrpcStream> {
        self.store.data().grpc_streams.values().cloned().collect()
    }

    /// Delivers one message on a gRPC stream (`on_grpc_receive`).
    pub fn grpc_stream_message(&mut self, token: u32, message: &[u8]) -> Result<(), Error> {
        self.check_grpc_stream(token)?;
        self.grpc_receive(token, message)
    }

    /// Initial metadata on a gRPC stream (`on_grpc_receive_initial_metadata`).
    pub fn grpc_stream_initial_metadata(
        &mut self,
        token: u32,
        metadata: Headers,
    ) -> Result<(), Error> {
        self.grpc_stream_metadata(token, metadata, true)
    }

    fn grpc_stream_metadata(
        &mut self,
        token: u32,
        metadata: Headers,
        initial: bool,
    ) -> Result<(), Error> {
        self.check_grpc_stream(token)?;
        let params = (
            self.root_context as i32,
            token as i32,
            metadata.len() as i32,
        );
        let data = CalloutData {
            headers: initial.then(|| metadata.clone()),
            body: Vec::new(),
            trailers: (!initial).then_some(metadata),
        };
        let (name, f) = if initial {
            (
                "proxy_on_grpc_receive_initial_metadata",
                self.exports.on_grpc_receive_initial_metadata.clone(),
            )
        } else {
            (
                "proxy_on_grpc_receive_trailing_metadata",
                self.exports.on_grpc_receive_trailing_metadata.clone(),
            )
        };
        self.deliver(name, f, Some(data), None, params)
    }

    /// Remote end of a gRPC stream: trailing metadata (if any), then
    /// `on_grpc_close` with `status` and `message` (via `proxy_get_status`).
    pub fn grpc_stream_close(
        &mut self,
        token: u32,
        trailing_metadata: Headers,
        status: u32,
        message: &str,
    ) -> Result<(), Error> {
        self.check_grpc_stream(token)?;
        if !trailing_metadata.is_empty() {
            self.grpc_stream_metadata(token, trailing_metadata, false)?;
        }
        self.store.data_mut().grpc_streams.remove(&token);
        self.close_grpc(token, status, message)
    }

    /// Everything the guest logged, in order.
    pub fn logs(&self) -> &[LogRecord] {
        &self.store.data().logs
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
        String::from_utf8_lossy(&self.store.data().stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.store.data().stderr).into_owned()
    }

    /// Why the VM failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Sets a VM-wide property (e.g. `node.id`), visible from every context.
    pub fn set_property(&mut self, path: &[&str], value: Vec<u8>) {
        self.store
            .data_mut()
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

    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    pub fn vm_id(&self) -> &str {
        &self.store.data().vm_id
    }

    pub fn root_context_id(&self) -> u32 {
        self.root_context
    }

    /// Times the guest called `proxy_done`.
    pub fn done_calls(&self) -> u32 {
        self.store.data().done_calls
    }
}

/// The response Envoy builds for a local reply (`sendLocalReply`): status,
/// the filter's headers, and `content-length`/`content-type` for a body; a
/// gRPC request gets a trailers-only gRPC response instead.
fn local_reply_message(reply: &LocalResponse, grpc_request: bool) -> (Headers, Vec<u8>) {
    let mut h = Headers::new();
    if grpc_request {
        h.add(":status", b"200");
        h.add("content-type", b"application/grpc");
        let code = reply.grpc_status.unwrap_or(2);
        h.add("grpc-status", code.to_string().as_bytes());
        let msg = if reply.body.is_empty() {
            reply.details.as_bytes()
        } else {
            reply.body.as_slice()
        };
        if !msg.is_empty() {
            h.add("grpc-message", msg);
        }
        for (k, v) in reply.headers.raw_pairs() {
            h.add(k, v);
        }
        return (h, Vec::new());
    }
    h.add(":status", reply.status.to_string().as_bytes());
    for (k, v) in reply.headers.raw_pairs() {
        h.add(k, v);
    }
    if !reply.body.is_empty() {
        h.replace("content-length", reply.body.len().to_string().as_bytes());
        if !h.contains("content-type") {
            h.add("content-type", b"text/plain");
        }
    }
    (h, reply.body.clone())
}

#[derive(Clone, Copy)]
pub(crate) enum StreamCallback {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
}
