//! Native test support: a fake proxy that runs the real [`Pipeline`]
//! (`crate::pipeline`) code, a log capture for the `log` facade, and one
//! case-table runner shared by every runtime (native, wasm-test-harness,
//! real Envoy).
//!
//! Test code: failures are panics with a message.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshguard_common::config::ConfigError;
use meshguard_common::headers::encode_pairs;

use crate::chain::Chain;
use crate::host::{
    CalloutError, Callouts, GrpcCallout, Host, HttpCallout, MetricId, MetricsRegistry, SharedWrite,
    Token,
};
use crate::message::HostEdit;
use crate::pipeline::{Flow, MapKind, Proxy, Root, Scratch, Stream};
use crate::stage::LocalReply;

/// A callout the fake proxy recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    pub token: Token,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// A gRPC callout the fake proxy recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedGrpcCall {
    pub token: Token,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub message: Vec<u8>,
    pub timeout: Duration,
}

/// An answer to give a callout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Connection failure or timeout: the proxy reports no headers.
    Failed,
}

/// Header-map and host state of one fake proxy (one worker).
#[derive(Debug, Default)]
pub struct FakeProxy {
    pub request: Vec<(String, Vec<u8>)>,
    pub response: Vec<(String, Vec<u8>)>,
    pub request_body: Vec<u8>,
    /// When false, reading request headers fails (as if the host refused).
    pub unreadable_request: bool,
    pub replies: Vec<LocalReply>,
    pub resumed: u32,
    /// Request header maps read so far (each a host call and a guest
    /// allocation in Envoy).
    pub request_header_reads: u32,
    pub calls: Vec<RecordedCall>,
    pub clusters: Vec<String>,
    pub shared: HashMap<String, (Vec<u8>, u32)>,
    /// Shared-data reads so far (what a flood costs in host calls).
    pub shared_reads: std::cell::Cell<u64>,
    /// Every property path read, in order (what a filter pays host calls for).
    pub property_reads: RefCell<Vec<String>>,
    pub properties: BTreeMap<Vec<String>, Vec<u8>>,
    metric_names: Vec<String>,
    pub metric_values: Vec<i64>,
    /// Host edit calls made, e.g. `request replace x-a=1`.
    pub host_edits: Vec<String>,
    pub now: Option<SystemTime>,
    random_state: u64,
    next_token: Token,
    current_answer: Option<Answer>,
    /// gRPC calls made so far.
    pub grpc_calls: Vec<RecordedGrpcCall>,
    current_grpc_answer: Vec<u8>,
}

impl FakeProxy {
    pub fn new() -> Self {
        Self {
            next_token: 1,
            ..Self::default()
        }
    }

    pub fn with_clusters(mut self, clusters: &[&str]) -> Self {
        self.clusters = clusters.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Value of a counter by name.
    pub fn counter(&self, name: &str) -> i64 {
        self.metric_names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.metric_values.get(i).copied())
            .unwrap_or(0)
    }

    pub fn metric_names(&self) -> &[String] {
        &self.metric_names
    }

    pub fn request_header(&self, name: &str) -> Option<String> {
        self.request
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn request_header_all(&self, name: &str) -> Vec<String> {
        self.request
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    pub fn response_header_all(&self, name: &str) -> Vec<String> {
        self.response
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    fn map(&mut self, map: MapKind) -> &mut Vec<(String, Vec<u8>)> {
        match map {
            MapKind::Request => &mut self.request,
            MapKind::Response => &mut self.response,
        }
    }
}

impl MetricsRegistry for FakeProxy {
    fn counter(&mut self, name: &str) -> MetricId {
        if let Some(i) = self.metric_names.iter().position(|n| n == name) {
            return MetricId(i as u32);
        }
        self.metric_names.push(name.to_string());
        self.metric_values.push(0);
        MetricId(self.metric_names.len() as u32 - 1)
    }
    fn gauge(&mut self, name: &str) -> MetricId {
        MetricsRegistry::counter(self, name)
    }
}

impl Host for FakeProxy {
    fn now(&self) -> SystemTime {
        self.now
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }
    fn random(&mut self, buf: &mut [u8]) -> bool {
        for b in buf.iter_mut() {
            // splitmix64: deterministic per proxy.
            self.random_state = self.random_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.random_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *b = (z ^ (z >> 31)) as u8;
        }
        true
    }
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared_reads.set(self.shared_reads.get() + 1);
        self.shared.get(key).cloned()
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> SharedWrite {
        // As Envoy: the CAS is checked against an existing key only; a
        // missing key is created whatever the CAS.
        let current = match self.shared.get(key) {
            Some((_, c)) if cas != 0 && cas != *c => return SharedWrite::CasMismatch,
            Some((_, c)) => *c,
            None => 0,
        };
        self.shared
            .insert(key.to_string(), (value.to_vec(), current + 1));
        SharedWrite::Written
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.property_reads.borrow_mut().push(path.join("."));
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.properties.get(&key).cloned()
    }
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool {
        self.properties
            .insert(path.iter().map(|s| s.to_string()).collect(), value.to_vec());
        true
    }
}

impl Callouts for FakeProxy {
    fn grpc_call(&mut self, call: &GrpcCallout<'_>) -> Result<Token, CalloutError> {
        if !self.clusters.iter().any(|c| c == call.cluster) {
            return Err(CalloutError::UnknownCluster);
        }
        let token = self.next_token;
        self.next_token += 1;
        self.grpc_calls.push(RecordedGrpcCall {
            token,
            cluster: call.cluster.to_string(),
            service: call.service.to_string(),
            method: call.method.to_string(),
            message: call.message.to_vec(),
            timeout: call.timeout,
        });
        Ok(token)
    }

    fn http_call(&mut self, call: &HttpCallout<'_>) -> Result<Token, CalloutError> {
        if !self.clusters.iter().any(|c| c == call.cluster) {
            return Err(CalloutError::UnknownCluster);
        }
        let token = self.next_token;
        self.next_token += 1;
        self.calls.push(RecordedCall {
            token,
            cluster: call.cluster.to_string(),
            headers: call
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: call.body.map(<[u8]>::to_vec),
            timeout: call.timeout,
        });
        Ok(token)
    }
}

impl Proxy for FakeProxy {
    fn headers(&mut self, map: MapKind) -> Option<Vec<u8>> {
        if map == MapKind::Request {
            self.request_header_reads += 1;
        }
        if map == MapKind::Request && self.unreadable_request {
            return None;
        }
        Some(encode_pairs(self.map(map)))
    }
    fn edit(&mut self, map: MapKind, edit: &HostEdit<'_>) {
        let side = if map == MapKind::Request {
            "request"
        } else {
            "response"
        };
        let lossy = |t: &crate::Text| String::from_utf8_lossy(t.as_bytes()).into_owned();
        let line = match edit {
            HostEdit::Replace(n, v) => {
                let name = lossy(n).to_ascii_lowercase();
                let m = self.map(map);
                m.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
                m.push((name.clone(), v.as_bytes().to_vec()));
                format!("{side} replace {name}={}", lossy(v))
            }
            HostEdit::Add(n, v) => {
                let name = lossy(n).to_ascii_lowercase();
                self.map(map).push((name.clone(), v.as_bytes().to_vec()));
                format!("{side} add {name}={}", lossy(v))
            }
            HostEdit::Remove(n) => {
                let name = lossy(n).to_ascii_lowercase();
                self.map(map)
                    .retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
                format!("{side} remove {name}")
            }
        };
        self.host_edits.push(line);
    }
    fn request_body(&mut self, size: usize, max: usize) -> Vec<u8> {
        self.request_body
            .iter()
            .take(size.min(max))
            .copied()
            .collect()
    }
    fn grpc_response(&mut self, size: usize) -> Vec<u8> {
        let mut m = std::mem::take(&mut self.current_grpc_answer);
        m.truncate(size);
        m
    }
    fn callout_response(&mut self, _num_headers: usize, _body_size: usize) -> (Vec<u8>, Vec<u8>) {
        match self.current_answer.take() {
            Some(Answer::Response {
                status,
                headers,
                body,
            }) => {
                let mut pairs = vec![(":status".to_string(), status.to_string().into_bytes())];
                pairs.extend(headers.into_iter().map(|(k, v)| (k, v.into_bytes())));
                (encode_pairs(&pairs), body)
            }
            _ => (Vec::new(), Vec::new()),
        }
    }
    fn send_reply(&mut self, reply: &LocalReply) {
        self.replies.push(reply.clone());
    }
    fn resume_request(&mut self) {
        self.resumed += 1;
    }
    fn bump(&mut self, id: MetricId, delta: i64) {
        if let Some(v) = self.metric_values.get_mut(id.0 as usize) {
            *v += delta;
        }
    }
}

/// A chain on a fake proxy: configure once, then drive streams.
pub struct Driver<C: Chain> {
    pub chain: C,
    pub proxy: FakeProxy,
    pub root: Root,
    scratch: Scratch,
}

/// One stream in flight on a [`Driver`].
pub struct TestStream<C: Chain> {
    pub stream: Stream<C>,
    /// The headers are held (the filter paused them): as in Envoy, body
    /// data waits and is delivered once the request is resumed.
    headers_held: bool,
    /// Body data that arrived while the headers were held.
    parked: Option<(usize, bool)>,
    /// The body callback paused: Envoy buffers further data.
    body_held: bool,
}

impl<C: Chain> Driver<C> {
    pub fn new(config: &[u8]) -> Result<Self, ConfigError> {
        Self::with_proxy(config, FakeProxy::new())
    }

    pub fn with_proxy(config: &[u8], mut proxy: FakeProxy) -> Result<Self, ConfigError> {
        let chain = C::build(config, &mut proxy)?;
        let root = Root::new(&chain);
        let scratch = Scratch::for_chain(&chain, &mut proxy);
        Ok(Self {
            chain,
            proxy,
            root,
            scratch,
        })
    }

    /// Starts a stream with these request headers (lowercased names).
    pub fn request(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> (TestStream<C>, Flow) {
        self.proxy.request = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        self.proxy.response.clear();
        self.proxy.request_body.clear();
        let mut s = TestStream {
            stream: Stream::default(),
            headers_held: false,
            parked: None,
            body_held: false,
        };
        let flow = s.stream.on_request_headers(
            &self.chain,
            &mut self.proxy,
            &mut self.scratch,
            end_of_stream,
        );
        s.headers_held = flow == Flow::Pause;
        (s, flow)
    }

    /// Like [`Driver::request`], with the request headers already in
    /// `self.proxy.request` (any bytes, e.g. hostile values).
    pub fn request_as_is(&mut self, end_of_stream: bool) -> (TestStream<C>, Flow) {
        self.proxy.response.clear();
        self.proxy.request_body.clear();
        let mut s = TestStream {
            stream: Stream::default(),
            headers_held: false,
            parked: None,
            body_held: false,
        };
        let flow = s.stream.on_request_headers(
            &self.chain,
            &mut self.proxy,
            &mut self.scratch,
            end_of_stream,
        );
        s.headers_held = flow == Flow::Pause;
        (s, flow)
    }

    /// Delivers body data the way Envoy does: held back while the headers
    /// are paused (delivered on resume), buffered while the body callback
    /// pauses (the next call sees everything so far).
    pub fn body(&mut self, s: &mut TestStream<C>, chunk: &[u8], end_of_stream: bool) -> Flow {
        self.proxy.request_body.extend_from_slice(chunk);
        let size = self.proxy.request_body.len();
        if s.headers_held {
            s.parked = Some((size, end_of_stream));
            return Flow::Pause;
        }
        self.deliver_body(s, size, end_of_stream)
    }

    fn deliver_body(&mut self, s: &mut TestStream<C>, size: usize, end_of_stream: bool) -> Flow {
        let flow = s.stream.on_request_body(
            &self.chain,
            &mut self.proxy,
            &mut self.scratch,
            size,
            end_of_stream,
        );
        s.body_held = flow == Flow::Pause;
        flow
    }

    /// Request trailers (end of the request).
    pub fn trailers(&mut self, s: &mut TestStream<C>) -> Flow {
        s.stream
            .on_request_trailers(&self.chain, &mut self.proxy, &mut self.scratch)
    }

    /// Answers the stream's pending callout.
    pub fn answer(&mut self, s: &mut TestStream<C>, answer: Answer) {
        let token = s
            .stream
            .waiting_on()
            .expect("the stream is not waiting on a callout");
        let (n, len) = match &answer {
            Answer::Response { headers, body, .. } => (headers.len() + 1, body.len()),
            Answer::Failed => (0, 0),
        };
        self.proxy.current_answer = Some(answer);
        let resumed = self.proxy.resumed;
        s.stream.on_callout(
            &self.chain,
            &mut self.proxy,
            &mut self.scratch,
            token,
            n,
            len,
        );
        if self.proxy.resumed > resumed {
            // Envoy continues the request: held body data is delivered now.
            s.headers_held = false;
            s.body_held = false;
            if let Some((size, eos)) = s.parked.take() {
                self.deliver_body(s, size, eos);
            }
        }
    }

    /// Answers the stream's pending gRPC callout: `status` 0 with
    /// `message`, or a gRPC error status (4 for a timeout, as Envoy).
    pub fn answer_grpc(&mut self, s: &mut TestStream<C>, status: u32, message: &[u8]) {
        let token = s
            .stream
            .waiting_on()
            .expect("the stream is not waiting on a callout");
        self.proxy.current_grpc_answer = message.to_vec();
        let resumed = self.proxy.resumed;
        s.stream.on_grpc_callout(
            &self.chain,
            &mut self.proxy,
            &mut self.scratch,
            token,
            status,
            message.len(),
        );
        if self.proxy.resumed > resumed {
            s.headers_held = false;
            s.body_held = false;
            if let Some((size, eos)) = s.parked.take() {
                self.deliver_body(s, size, eos);
            }
        }
    }

    pub fn response(&mut self, s: &mut TestStream<C>, headers: &[(&str, &str)]) -> Flow {
        self.proxy.response = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        s.stream
            .on_response_headers(&self.chain, &mut self.proxy, &mut self.scratch)
    }

    pub fn log(&mut self, s: &mut TestStream<C>) {
        s.stream
            .on_log(&self.chain, &mut self.proxy, &mut self.scratch);
    }

    /// Answers a callout made from the root context (a tick or an earlier
    /// root callout); false if the root did not make it.
    pub fn answer_root(&mut self, token: Token, answer: Answer) -> bool {
        let (n, len) = match &answer {
            Answer::Response { headers, body, .. } => (headers.len() + 1, body.len()),
            Answer::Failed => (0, 0),
        };
        self.proxy.current_answer = Some(answer);
        self.root
            .on_callout(&self.chain, &mut self.proxy, token, n, len)
    }

    pub fn tick(&mut self) {
        self.root.on_tick(&self.chain, &mut self.proxy);
    }
}

thread_local! {
    static CAPTURED: RefCell<Option<Vec<(log::Level, String)>>> = const { RefCell::new(None) };
}

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        CAPTURED.with(|c| {
            if let Some(list) = c.borrow_mut().as_mut() {
                list.push((record.level(), record.args().to_string()));
            }
        });
    }
    fn flush(&self) {}
}

static LOGGER: CaptureLogger = CaptureLogger;

/// Runs `f` and returns what it logged through the `log` facade, on this
/// thread (tests run in parallel; each sees only its own records).
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, Vec<(log::Level, String)>) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let out = f();
    let logs = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (out, logs)
}

/// A case in a table run by several runtimes.
pub trait NamedCase {
    fn name(&self) -> &str;
}

/// One way of running a case table: natively, in wasm-test-harness, in Envoy.
pub trait Runtime<C: NamedCase> {
    /// Shown in failures: `native`, `harness`, `envoy`.
    fn runtime_name(&self) -> &str;
    /// Runs one case; each returned string is one problem.
    fn run_case(&mut self, case: &C) -> Vec<String>;
}

/// Runs every case and fails once, listing every failing case by name.
pub fn run_table<C: NamedCase, R: Runtime<C>>(runtime: &mut R, cases: &[C]) {
    let mut failures = Vec::new();
    for case in cases {
        for problem in runtime.run_case(case) {
            failures.push(format!(
                "[{}] {}: {problem}",
                runtime.runtime_name(),
                case.name()
            ));
        }
    }
    assert!(cases.iter().next().is_some(), "empty case table");
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
