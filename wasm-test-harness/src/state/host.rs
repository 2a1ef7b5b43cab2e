//! One VM's host: its identity and configuration, its contexts and
//! streams, what it logged, its metric ids, ticks and callouts — and one
//! method per import that needs more than one piece of state. The
//! `imports` layer calls these after decoding guest memory; tests call
//! them directly.

use std::collections::{BTreeMap, HashMap};

use super::callouts::{CalloutData, Callouts, GrpcTarget};
use super::local_reply::LocalResponse;
use super::metrics::MetricIds;
use super::process::{lock, SharedProcess};
use super::properties::{self, Scope};
use super::queues::QueueOwner;
use super::stream::StreamState;
use super::HostError;
use crate::abi::{buffer_type, decode_pairs, map_type, stream_type, LogLevel, MetricType, Status};
use crate::headers::Headers;

/// One log call from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
    /// Effective context when the guest logged.
    pub context_id: u32,
}

/// Which root callback runs (configuration buffers exist only then).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    None,
    VmStart,
    Configure,
}

pub(crate) struct Host {
    pub process: SharedProcess,
    pub vm_number: u64,
    pub vm_id: String,
    pub root_id: String,
    pub plugin_name: String,
    pub vm_configuration: Vec<u8>,
    pub plugin_configuration: Vec<u8>,
    pub phase: Phase,
    pub root_context: u32,
    /// The context host calls act on (`proxy_set_effective_context`).
    pub effective: u32,
    pub streams: BTreeMap<u32, StreamState>,
    pub logs: Vec<LogRecord>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub log_level: LogLevel,
    pub metric_ids: MetricIds,
    pub tick_period_ms: u32,
    pub next_tick_ns: Option<u64>,
    pub callouts: Callouts,
    /// What the callout callback now running can read back.
    pub callout: Option<CalloutData>,
    /// What `proxy_get_status` answers now.
    pub grpc_status: Option<(u32, Vec<u8>)>,
    rng: u64,
    pub vm_properties: HashMap<Vec<u8>, Vec<u8>>,
    pub done_calls: u32,
    /// Streams with a local reply to send once the current VM call returns.
    pub local_replies: Vec<u32>,
    /// (stream, request?) resumed with parked body data to deliver once
    /// the current VM call returns.
    pub resumed_bodies: Vec<(u32, bool)>,
}

/// Who this VM is.
pub(crate) struct Identity {
    pub vm_id: String,
    pub root_id: String,
    pub plugin_name: String,
    pub vm_configuration: Vec<u8>,
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub log_level: LogLevel,
}

impl Host {
    pub fn new(process: SharedProcess, vm_number: u64, seed: u64, id: Identity) -> Self {
        Self {
            process,
            vm_number,
            vm_id: id.vm_id,
            root_id: id.root_id,
            plugin_name: id.plugin_name,
            vm_configuration: id.vm_configuration,
            plugin_configuration: Vec::new(),
            phase: Phase::None,
            root_context: 1,
            effective: 1,
            streams: BTreeMap::new(),
            logs: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            log_level: id.log_level,
            metric_ids: MetricIds::default(),
            tick_period_ms: 0,
            next_tick_ns: None,
            callouts: Callouts::default(),
            callout: None,
            grpc_status: None,
            rng: seed ^ vm_number.wrapping_mul(0xd6e8_feb8_6659_fd93),
            vm_properties: id.properties,
            done_calls: 0,
            local_replies: Vec::new(),
            resumed_bodies: Vec::new(),
        }
    }

    /// The effective context's stream (None on the root context).
    pub fn stream(&mut self) -> Option<&mut StreamState> {
        let id = self.effective;
        self.streams.get_mut(&id)
    }

    pub fn now_ns(&self) -> u64 {
        lock(&self.process).now_unix_ns
    }

    fn cluster_known(&self, cluster: &str) -> (bool, u64) {
        let p = lock(&self.process);
        (p.clusters.contains(cluster), p.now_unix_ns)
    }

    pub fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic per (harness seed, VM number).
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    // ---- logging, time, contexts ------------------------------------------

    pub fn log(&mut self, level: i32, message: String) -> Result<(), Status> {
        let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
        let context_id = self.effective;
        self.logs.push(LogRecord {
            level,
            message,
            context_id,
        });
        Ok(())
    }

    /// The timer belongs to the root context whichever context sets it.
    pub fn set_tick_period(&mut self, ms: u32) {
        let now = self.now_ns();
        self.tick_period_ms = ms;
        self.next_tick_ns = (ms != 0).then(|| now + u64::from(ms) * 1_000_000);
    }

    pub fn set_effective_context(&mut self, id: u32) -> Result<(), Status> {
        if id == self.root_context || self.streams.contains_key(&id) {
            self.effective = id;
            Ok(())
        } else {
            Err(Status::BadArgument)
        }
    }

    /// WASI `clock_time_get`: realtime is the harness clock; monotonic and
    /// CPU clocks count from the harness start. Err is a WASI errno.
    pub fn clock_time(&self, id: i32) -> Result<u64, i32> {
        let p = lock(&self.process);
        match id {
            0 => Ok(p.now_unix_ns),
            1..=3 => Ok(p.now_unix_ns.saturating_sub(p.start_unix_ns)),
            _ => Err(28), // EINVAL
        }
    }

    // ---- buffers and header maps ---------------------------------------------

    /// `proxy_get_buffer_bytes`: `[start, start+max)` of the buffer.
    pub fn buffer(&mut self, t: i32, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
        let phase = self.phase;
        let buf: &[u8] = match t {
            buffer_type::HTTP_REQUEST_BODY | buffer_type::HTTP_RESPONSE_BODY => {
                let s = self.stream().ok_or(Status::NotFound)?;
                s.body(t == buffer_type::HTTP_REQUEST_BODY)
            }
            buffer_type::HTTP_CALL_RESPONSE_BODY | buffer_type::GRPC_RECEIVE_BUFFER => {
                &self.callout.as_ref().ok_or(Status::NotFound)?.body
            }
            buffer_type::VM_CONFIGURATION if phase == Phase::VmStart => &self.vm_configuration,
            buffer_type::PLUGIN_CONFIGURATION if phase == Phase::Configure => {
                &self.plugin_configuration
            }
            0..=8 => return Err(Status::NotFound.into()),
            _ => return Err(Status::BadArgument.into()),
        };
        let end = start.checked_add(max).ok_or(Status::BadArgument)?;
        if start > buf.len() {
            // Envoy computes `size - start` unchecked here and then fails
            // on a huge allocation: make it the same kind of failure.
            return Err(HostError::Trap(format!(
                "proxy_get_buffer_bytes: start {start} is beyond the buffer size {}",
                buf.len()
            )));
        }
        Ok(buf
            .get(start..end.min(buf.len()))
            .unwrap_or_default()
            .to_vec())
    }

    pub fn set_buffer(
        &mut self,
        t: i32,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), Status> {
        match t {
            buffer_type::HTTP_REQUEST_BODY | buffer_type::HTTP_RESPONSE_BODY => self
                .stream()
                .ok_or(Status::NotFound)?
                .set_body(t, start, size, data),
            _ => Err(Status::BadArgument),
        }
    }

    /// The header map `t`, if the filter may use it now: a stream map
    /// (phase rules in [`StreamState::map`]) or a callout's.
    pub fn map(&mut self, t: i32, write: bool) -> Result<&mut Headers, Status> {
        let headers = match t {
            map_type::GRPC_INITIAL_METADATA | map_type::HTTP_CALL_RESPONSE_HEADERS => true,
            map_type::GRPC_TRAILING_METADATA | map_type::HTTP_CALL_RESPONSE_TRAILERS => false,
            _ => return self.stream().ok_or(Status::BadArgument)?.map(t, write),
        };
        let data = self.callout.as_mut().ok_or(Status::BadArgument)?;
        let map = if headers {
            &mut data.headers
        } else {
            &mut data.trailers
        };
        map.as_mut().ok_or(Status::BadArgument)
    }

    /// A header-map change, counted as a request-header mutation (Envoy
    /// clears the route cache).
    pub fn mutate_map(&mut self, t: i32, f: impl FnOnce(&mut Headers)) -> Result<(), Status> {
        f(self.map(t, true)?);
        if let Some(s) = self.stream() {
            s.note_mutation(t);
        }
        Ok(())
    }

    // ---- properties ----------------------------------------------------------

    pub fn get_property(&self, path: &[u8]) -> Option<Vec<u8>> {
        let scope = Scope {
            stream: self.streams.get(&self.effective),
            vm_properties: &self.vm_properties,
            plugin_name: &self.plugin_name,
            root_id: &self.root_id,
            vm_id: &self.vm_id,
        };
        properties::lookup(&scope, path)
    }

    /// Envoy stores it as filter state `wasm.<path>`; needs a stream.
    pub fn set_property(&mut self, path: Vec<u8>, value: Vec<u8>) -> Result<(), Status> {
        let s = self.stream().ok_or(Status::NotFound)?;
        s.filter_state.insert(path, value);
        Ok(())
    }

    // ---- shared data and queues (process-wide) -------------------------------

    pub fn get_shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.process).shared_data.get(&self.vm_id, key)
    }

    pub fn set_shared_data(&self, key: &str, value: Vec<u8>, cas: u32) -> Result<(), Status> {
        lock(&self.process)
            .shared_data
            .set(&self.vm_id, key, value, cas)
    }

    pub fn register_queue(&self, name: &str) -> u32 {
        let owner = QueueOwner {
            vm: self.vm_number,
            context: self.root_context,
        };
        lock(&self.process)
            .queues
            .register(&self.vm_id, name, owner)
    }

    /// An empty vm_id means this VM's own.
    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        let vm_id = if vm_id.is_empty() { &self.vm_id } else { vm_id };
        lock(&self.process).queues.resolve(vm_id, name)
    }

    // ---- stream control, local replies ------------------------------------------

    pub fn continue_stream(&mut self, t: i32) -> Result<(), Status> {
        let id = self.effective;
        let s = self.stream().ok_or(Status::BadArgument)?;
        if s.continue_stream(t)? {
            let request = t == stream_type::HTTP_REQUEST;
            self.resumed_bodies.push((id, request));
        }
        Ok(())
    }

    /// Recorded now, sent once the VM call returns (Envoy's after-VM-call
    /// action). From a root context Envoy has no stream to answer: a no-op.
    pub fn send_local_response(
        &mut self,
        status: u32,
        details: &str,
        body: Vec<u8>,
        headers: &[u8],
        grpc_status: i32,
    ) -> Result<(), Status> {
        let pairs = decode_pairs(headers).ok_or(Status::SerializationFailure)?;
        let id = self.effective;
        let Some(s) = self.stream() else {
            return Ok(());
        };
        let reply = LocalResponse {
            status,
            // Envoy replaces spaces in response code details.
            details: details.replace(' ', "_"),
            headers: Headers::from_bytes(&pairs),
            body,
            grpc_status: (0..=16).contains(&grpc_status).then_some(grpc_status),
        };
        if s.record_local_response(reply) {
            self.local_replies.push(id);
        }
        Ok(())
    }

    // ---- callouts --------------------------------------------------------------

    pub fn http_call(
        &mut self,
        cluster: String,
        headers: &[u8],
        body: Vec<u8>,
        trailers: &[u8],
        timeout_ms: i32,
    ) -> Result<u32, Status> {
        let (known, now) = self.cluster_known(&cluster);
        let ctx = self.effective;
        self.callouts.dispatch_http(
            ctx, cluster, known, headers, body, trailers, timeout_ms, now,
        )
    }

    pub fn grpc_call(
        &mut self,
        target: GrpcTarget,
        message: Vec<u8>,
        timeout_ms: i32,
    ) -> Result<u32, Status> {
        let (known, now) = self.cluster_known(&target.cluster);
        let ctx = self.effective;
        self.callouts
            .dispatch_grpc(ctx, target, known, message, timeout_ms, now)
    }

    pub fn grpc_stream(&mut self, target: GrpcTarget) -> Result<u32, Status> {
        let (known, _) = self.cluster_known(&target.cluster);
        let ctx = self.effective;
        self.callouts.open_stream(ctx, target, known)
    }

    // ---- metrics -----------------------------------------------------------------

    pub fn define_metric(&mut self, kind: i32, name: &str) -> Result<u32, Status> {
        let kind = MetricType::from_raw(kind).ok_or(Status::BadArgument)?;
        lock(&self.process).metrics.define(name, kind)?;
        Ok(self.metric_ids.id_for(name))
    }

    pub fn get_metric(&self, id: u32) -> Result<u64, Status> {
        lock(&self.process).metrics.get(self.metric_ids.name(id)?)
    }

    pub fn record_metric(&self, id: u32, value: i64) -> Result<(), Status> {
        lock(&self.process)
            .metrics
            .record(self.metric_ids.name(id)?, value)
    }

    pub fn increment_metric(&self, id: u32, offset: i64) -> Result<(), Status> {
        lock(&self.process)
            .metrics
            .increment(self.metric_ids.name(id)?, offset)
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
