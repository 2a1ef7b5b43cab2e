//! proxy-wasm contexts: translate callbacks into pipeline calls.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use meshguard_stage::pipeline::{Flow, Root, Scratch, Stream};
use meshguard_stage::{Chain, LocalReply};

use crate::proxy::SdkProxy;

/// Registers the root context for chain `C`. Called from `_initialize`
/// (see [`crate::module!`]).
pub fn install<C: Chain>() {
    // No host calls here: Envoy refuses them during `_initialize`
    // ("restricted_callback") and fails the VM. The level is read from the
    // proxy in `on_configure`.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(ShellRoot::<C> {
            chain: None,
            root: None,
        })
    });
}

fn chain_names<C: Chain>() -> String {
    C::names()
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join("+")
}

/// The SDK's `log` backend forwards records to the proxy's log (and logs
/// panics as critical). Its filter follows the proxy's level, so a disabled
/// level costs one comparison and no formatting; Envoy can change the level
/// at runtime, so it is re-read on configure and on every tick.
fn sync_log_level() {
    let level = hostcalls::get_log_level().unwrap_or(LogLevel::Info);
    proxy_wasm::set_log_level(level);
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

struct ShellRoot<C: Chain> {
    chain: Option<Rc<Shared<C>>>,
    root: Option<Root>,
}

impl<C: Chain> Context for ShellRoot<C> {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let (Some(shared), Some(root)) = (&self.chain, &mut self.root) {
            root.on_callout(&shared.chain, &mut SdkProxy, token, num_headers, body_size);
        }
    }
}

impl<C: Chain> RootContext for ShellRoot<C> {
    fn on_configure(&mut self, _size: usize) -> bool {
        sync_log_level();
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match C::build(&bytes, &mut SdkProxy) {
            Ok(chain) => {
                if let Some(period) = Root::tick_period(&chain) {
                    let _ = hostcalls::set_tick_period(period);
                }
                self.root = Some(Root::new(&chain));
                let scratch = RefCell::new(Scratch::for_chain(&chain, &mut SdkProxy));
                self.chain = Some(Rc::new(Shared { chain, scratch }));
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

    fn on_tick(&mut self) {
        sync_log_level();
        if let (Some(shared), Some(root)) = (&self.chain, &mut self.root) {
            root.on_tick(&shared.chain, &mut SdkProxy);
        }
    }

    /// As an `envoy.access_loggers.wasm` logger, Envoy calls `proxy_on_log`
    /// on the root context (there is no stream context), with the finished
    /// stream's headers and properties readable: run the chain's log hooks
    /// as for a stream that had no request hooks (no in-memory facts;
    /// stages read the contract's filter state).
    fn on_log(&mut self) {
        if let Some(sh) = &self.chain {
            let mut stream = Stream::<C>::default();
            sh.with_scratch(|chain, sc| stream.on_log(chain, &mut SdkProxy, sc));
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ShellStream::<C> {
            chain: self.chain.clone(),
            stream: Stream::default(),
        }))
    }
}

struct ShellStream<C: Chain> {
    chain: Option<Rc<Shared<C>>>,
    stream: Stream<C>,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl<C: Chain> Context for ShellStream<C> {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(sh) = &self.chain {
            let stream = &mut self.stream;
            sh.with_scratch(|chain, sc| {
                stream.on_callout(chain, &mut SdkProxy, sc, token, num_headers, body_size)
            });
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        if let Some(sh) = &self.chain {
            let stream = &mut self.stream;
            sh.with_scratch(|chain, sc| {
                stream.on_grpc_callout(chain, &mut SdkProxy, sc, token, status_code, response_size)
            });
        }
    }
}

impl<C: Chain> HttpContext for ShellStream<C> {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(sh) = &self.chain else {
            // Envoy never runs an unconfigured filter; if it ever did, fail
            // closed rather than forward client-forged meshguard headers.
            use meshguard_stage::pipeline::Proxy;
            SdkProxy.send_reply(&LocalReply::new(
                503,
                b"meshguard: filter not configured\n".to_vec(),
            ));
            return Action::Pause;
        };
        let stream = &mut self.stream;
        action(sh.with_scratch(|chain, sc| {
            stream.on_request_headers(chain, &mut SdkProxy, sc, end_of_stream)
        }))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(sh) = &self.chain else {
            return Action::Pause;
        };
        let stream = &mut self.stream;
        action(sh.with_scratch(|chain, sc| {
            stream.on_request_body(chain, &mut SdkProxy, sc, body_size, end_of_stream)
        }))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(sh) = &self.chain else {
            return Action::Pause;
        };
        let stream = &mut self.stream;
        action(sh.with_scratch(|chain, sc| stream.on_request_trailers(chain, &mut SdkProxy, sc)))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(sh) = &self.chain else {
            return Action::Continue;
        };
        let stream = &mut self.stream;
        action(sh.with_scratch(|chain, sc| stream.on_response_headers(chain, &mut SdkProxy, sc)))
    }

    fn on_log(&mut self) {
        if let Some(sh) = &self.chain {
            let stream = &mut self.stream;
            sh.with_scratch(|chain, sc| stream.on_log(chain, &mut SdkProxy, sc));
        }
    }
}
