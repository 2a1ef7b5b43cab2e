//! The proxy-wasm callbacks, dispatched to the chain's pipeline. The
//! exported `proxy_on_*` functions are defined by [`crate::module!`] in the
//! filter's cdylib and call [`Shell`] for its concrete chain; there is no
//! SDK dispatcher in between (no trait objects, no hash of every context
//! id per callback, and only the callbacks meshguard handles are exported:
//! Envoy skips a callback a module does not export, e.g. response bodies).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use meshguard_common::host::{self as raw, BufferType, LogLevel};
use meshguard_stage::pipeline::{Flow, Proxy, Root, Scratch, Stream};
use meshguard_stage::{Chain, LocalReply};

use crate::proxy::HostProxy;

/// Proxy-wasm `Action` values.
const CONTINUE: u32 = 0;
const PAUSE: u32 = 1;

fn action(flow: Flow) -> u32 {
    match flow {
        Flow::Continue => CONTINUE,
        Flow::Pause => PAUSE,
    }
}

/// Context ids are small integers the host hands out: a multiplicative
/// hash spreads them, no SipHash per callback.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

thread_local! {
    /// The context whose callback is running: the one a callout made now
    /// belongs to.
    static ACTIVE: Cell<u32> = const { Cell::new(0) };
    /// Whether the module exports `proxy_on_log` (see `module!(no_log; …)`).
    static LOG_EXPORTED: Cell<bool> = const { Cell::new(true) };
    /// Whether the module exports the request and response callbacks
    /// (not when built with `module!(log_only; …)`).
    static REQUEST_EXPORTED: Cell<bool> = const { Cell::new(true) };
    /// Callouts in flight: token → the context that made them. Envoy
    /// registers every HTTP and gRPC call on the root context and answers
    /// it there (`http_call` uses the effective context's root), so the
    /// answer is routed back by token, as the Rust SDK does.
    /// A list: calls in flight are few (one per request waiting on one).
    static CALLOUTS: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
}

/// Records that callout `token` belongs to the running context.
pub(crate) fn register_callout(token: u32) {
    let ctx = ACTIVE.with(Cell::get);
    CALLOUTS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.push((token, ctx));
        }
    });
}

fn take_callout(token: u32) -> Option<u32> {
    CALLOUTS.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let at = c.iter().position(|(t, _)| *t == token)?;
        Some(c.swap_remove(at).1)
    })
}

fn forget_callouts_of(ctx: u32) {
    CALLOUTS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if !c.is_empty() {
                c.retain(|(_, owner)| *owner != ctx);
            }
        }
    });
}

fn set_active(id: u32) {
    ACTIVE.with(|a| a.set(id));
}

/// The built chain and the working space its streams share (one VM is
/// single-threaded and a hook never runs inside another).
struct Shared<C: Chain> {
    chain: C,
    scratch: RefCell<Scratch>,
}

impl<C: Chain> Shared<C> {
    /// Runs `f` with the shared working space. Envoy defers its own
    /// follow-up work (local replies, continuing a stream) until the VM call
    /// returns, so hooks never nest; if a host ever did re-enter, the inner
    /// call gets a fresh scratch instead of a panic.
    fn with_scratch<T>(&self, f: impl FnOnce(&C, &mut Scratch) -> T) -> T {
        match self.scratch.try_borrow_mut() {
            Ok(mut sc) => f(&self.chain, &mut sc),
            Err(_) => f(
                &self.chain,
                &mut Scratch::for_chain(&self.chain, &mut meshguard_stage::NoMetrics),
            ),
        }
    }
}

/// A plugin's root context: its configured chain (none until
/// `on_configure` succeeds) and the timer and root callouts.
struct ShellRoot<C: Chain> {
    chain: Option<Rc<Shared<C>>>,
    root: Option<Root>,
}

/// One HTTP stream.
struct ShellStream<C: Chain> {
    chain: Option<Rc<Shared<C>>>,
    stream: Stream<C>,
}

/// Every context of the VM. Roots are few (one per plugin sharing the VM);
/// streams come and go with requests.
pub struct Shell<C: Chain> {
    roots: Vec<(u32, ShellRoot<C>)>,
    streams: IdMap<ShellStream<C>>,
}

impl<C: Chain> Default for Shell<C> {
    fn default() -> Self {
        Self {
            roots: Vec::new(),
            streams: IdMap::default(),
        }
    }
}

fn chain_names<C: Chain>() -> String {
    C::names()
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join("+")
}

/// `log` records go to the proxy's log; a disabled level costs one
/// comparison and no formatting. Envoy can change the level at runtime,
/// so it is re-read on configure and on every tick.
struct ProxyLogger;

static LOGGER: ProxyLogger = ProxyLogger;

impl log::Log for ProxyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        let _ = raw::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the logger at `Info`. No host calls here: Envoy refuses them
/// during `_initialize` ("restricted_callback") and fails the VM. The
/// level is read from the proxy in `on_configure`.
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// [`install`] for a module built without `proxy_on_log`: a chain whose
/// stages log then refuses its config instead of never logging.
pub fn install_no_log() {
    LOG_EXPORTED.with(|l| l.set(false));
    install();
}

/// [`install`] for a module built without the request and response
/// callbacks: a chain with a stage that works before the log phase then
/// refuses its config instead of never running.
pub fn install_log_only() {
    REQUEST_EXPORTED.with(|r| r.set(false));
    install();
}

fn sync_log_level() {
    let filter = match raw::log_level() {
        Ok(LogLevel::Trace) => log::LevelFilter::Trace,
        Ok(LogLevel::Debug) => log::LevelFilter::Debug,
        Ok(LogLevel::Info) | Err(_) => log::LevelFilter::Info,
        Ok(LogLevel::Warn) => log::LevelFilter::Warn,
        Ok(LogLevel::Error) => log::LevelFilter::Error,
        Ok(LogLevel::Critical) => log::LevelFilter::Off,
    };
    log::set_max_level(filter);
}

impl<C: Chain> Shell<C> {
    fn root(&mut self, id: u32) -> Option<&mut ShellRoot<C>> {
        self.roots
            .iter_mut()
            .find(|(r, _)| *r == id)
            .map(|(_, r)| r)
    }

    pub fn on_context_create(&mut self, id: u32, root_id: u32) {
        if root_id == 0 {
            self.roots.retain(|(r, _)| *r != id);
            self.roots.push((
                id,
                ShellRoot {
                    chain: None,
                    root: None,
                },
            ));
            return;
        }
        // A stream of an unknown or unconfigured root gets no chain and
        // fails closed in its request hook.
        let chain = self.root(root_id).and_then(|r| r.chain.clone());
        self.streams.insert(
            id,
            ShellStream {
                chain,
                stream: Stream::default(),
            },
        );
    }

    pub fn on_configure(&mut self, id: u32, size: usize) -> bool {
        set_active(id);
        sync_log_level();
        let Some(r) = self.root(id) else {
            return false;
        };
        let bytes = raw::buffer(BufferType::PluginConfiguration, 0, size).unwrap_or_default();
        match C::build(&bytes, &mut HostProxy) {
            Ok(chain) => {
                let scratch = Scratch::for_chain(&chain, &mut HostProxy);
                if scratch.any_log() && !LOG_EXPORTED.with(Cell::get) {
                    log::error!(
                        "{}: a stage needs the log hook, but this module is built without proxy_on_log (module!(no_log; …))",
                        chain_names::<C>()
                    );
                    return false;
                }
                if !scratch.all_log_only() && !REQUEST_EXPORTED.with(Cell::get) {
                    log::error!(
                        "{}: a stage works on requests or responses, but this module is built for the log phase only (module!(log_only; …))",
                        chain_names::<C>()
                    );
                    return false;
                }
                if let Some(period) = Root::tick_period(&chain) {
                    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
                    let _ = raw::set_tick_period_ms(ms);
                }
                r.root = Some(Root::new(&chain));
                let scratch = RefCell::new(scratch);
                r.chain = Some(Rc::new(Shared { chain, scratch }));
                log::debug!("{}: configured", chain_names::<C>());
                true
            }
            Err(err) => {
                // Envoy refuses the filter; the message names the JSON path.
                log::error!("{}: {err}", chain_names::<C>());
                false
            }
        }
    }

    pub fn on_tick(&mut self, id: u32) {
        set_active(id);
        sync_log_level();
        if let Some(ShellRoot {
            chain: Some(shared),
            root: Some(root),
        }) = self.root(id)
        {
            root.on_tick(&shared.chain, &mut HostProxy);
        }
    }

    pub fn on_request_headers(&mut self, id: u32, end_of_stream: bool) -> u32 {
        set_active(id);
        let Some(s) = self.streams.get_mut(&id) else {
            return CONTINUE;
        };
        let Some(sh) = &s.chain else {
            // Envoy never runs an unconfigured filter; if it ever did, fail
            // closed rather than forward client-forged meshguard headers.
            HostProxy.send_reply(&LocalReply::new(
                503,
                b"meshguard: filter not configured\n".to_vec(),
            ));
            return PAUSE;
        };
        let stream = &mut s.stream;
        action(sh.with_scratch(|chain, sc| {
            stream.on_request_headers(chain, &mut HostProxy, sc, end_of_stream)
        }))
    }

    /// Runs a stream hook on stream `id`: `if_unknown` for a context this
    /// VM never created, `if_unconfigured` when its root has no chain.
    fn stream_hook(
        &mut self,
        id: u32,
        if_unknown: u32,
        if_unconfigured: u32,
        hook: impl FnOnce(&mut Stream<C>, &C, &mut Scratch) -> Flow,
    ) -> u32 {
        set_active(id);
        let Some(s) = self.streams.get_mut(&id) else {
            return if_unknown;
        };
        let Some(sh) = &s.chain else {
            return if_unconfigured;
        };
        let stream = &mut s.stream;
        action(sh.with_scratch(|chain, sc| hook(stream, chain, sc)))
    }

    pub fn on_request_body(&mut self, id: u32, size: usize, end_of_stream: bool) -> u32 {
        self.stream_hook(id, CONTINUE, PAUSE, |st, chain, sc| {
            st.on_request_body(chain, &mut HostProxy, sc, size, end_of_stream)
        })
    }

    pub fn on_request_trailers(&mut self, id: u32) -> u32 {
        self.stream_hook(id, CONTINUE, PAUSE, |st, chain, sc| {
            st.on_request_trailers(chain, &mut HostProxy, sc)
        })
    }

    pub fn on_response_headers(&mut self, id: u32) -> u32 {
        self.stream_hook(id, CONTINUE, CONTINUE, |st, chain, sc| {
            st.on_response_headers(chain, &mut HostProxy, sc)
        })
    }

    /// A stream's log hook; or, on a root context, Envoy's
    /// `envoy.access_loggers.wasm` logger (there is no stream context):
    /// the finished stream's headers and properties are readable, so the
    /// chain's log hooks run as for a stream that had no request hooks (no
    /// in-memory facts; stages read the contract's filter state).
    pub fn on_log(&mut self, id: u32) {
        set_active(id);
        if let Some(s) = self.streams.get_mut(&id) {
            if let Some(sh) = &s.chain {
                let stream = &mut s.stream;
                sh.with_scratch(|chain, sc| stream.on_log(chain, &mut HostProxy, sc));
            }
            return;
        }
        if let Some(ShellRoot {
            chain: Some(sh), ..
        }) = self.root(id)
        {
            let mut stream = Stream::<C>::default();
            sh.with_scratch(|chain, sc| stream.on_log(chain, &mut HostProxy, sc));
        }
    }

    pub fn on_delete(&mut self, id: u32) {
        if self.streams.remove(&id).is_none() {
            self.roots.retain(|(r, _)| *r != id);
        }
        // An answer still on its way finds no one and is dropped.
        forget_callouts_of(id);
    }

    /// The stream a callout answer belongs to, made the active and
    /// effective context (host calls — headers, local replies, resuming —
    /// act on it) and run through `f`; `None` (and nothing run) when it is
    /// not a stream, which may be a root's callout.
    fn callout_stream(
        &mut self,
        id: u32,
        f: impl FnOnce(&mut Stream<C>, &C, &mut Scratch),
    ) -> Option<()> {
        set_active(id);
        let s = self.streams.get_mut(&id)?;
        let _ = raw::set_effective_context(id);
        if let Some(sh) = &s.chain {
            let stream = &mut s.stream;
            sh.with_scratch(|chain, sc| f(stream, chain, sc));
        }
        Some(())
    }

    /// An HTTP callout's answer, delivered on the root context: routed to
    /// the context that made the call.
    pub fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize) {
        let Some(id) = take_callout(token) else {
            return; // its stream is gone
        };
        let routed = self.callout_stream(id, |stream, chain, sc| {
            stream.on_callout(chain, &mut HostProxy, sc, token, headers, body)
        });
        if routed.is_some() {
            return;
        }
        if let Some(ShellRoot {
            chain: Some(shared),
            root: Some(root),
        }) = self.root(id)
        {
            let _ = raw::set_effective_context(id);
            root.on_callout(&shared.chain, &mut HostProxy, token, headers, body);
        }
    }

    /// A unary gRPC call's answer: `status` 0 with a message of `size`
    /// bytes (`proxy_on_grpc_receive`) or a gRPC error (`proxy_on_grpc_close`).
    pub fn on_grpc_response(&mut self, token: u32, status: u32, size: usize) {
        let Some(id) = take_callout(token) else {
            return;
        };
        self.callout_stream(id, |stream, chain, sc| {
            stream.on_grpc_callout(chain, &mut HostProxy, sc, token, status, size)
        });
    }
}

/// Memory the host asks for to hand the module a buffer: a boxed slice of
/// exactly `size` bytes (capacity = length), so `meshguard_common::host`
/// takes it back with `Vec::from_raw_parts(ptr, size, size)`.
pub fn allocate(size: usize) -> *mut u8 {
    let mut v: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: MaybeUninit needs no initialization; the host writes the
    // bytes before the module reads them.
    unsafe { v.set_len(size) };
    Box::into_raw(v.into_boxed_slice()).cast::<u8>()
}
