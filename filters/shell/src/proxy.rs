//! The pipeline's seams ([`Host`], [`Callouts`], [`Proxy`],
//! [`MetricsRegistry`]) implemented with proxy-wasm host calls. No
//! decisions here. Calls whose SDK wrapper would panic on a status Envoy
//! can return go through `meshguard_common::host`, which hands the status
//! back instead of trapping the VM.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshguard_common::headers::encode_pairs;
use meshguard_common::host::{self as raw, BufferType, MapType, MetricType, Status};
use meshguard_stage::message::{valid_name, valid_value};
use meshguard_stage::pipeline::{MapKind, Proxy};
use meshguard_stage::{
    CalloutError, Callouts, GrpcCallout, Host, HostEdit, HttpCallout, LocalReply, MetricId,
    MetricsRegistry, SharedWrite, Token,
};

/// Stateless: every call goes to the host for the current context.
pub struct HostProxy;

/// A clamped timeout in the ABI's u32 milliseconds.
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn map_type(map: MapKind) -> MapType {
    match map {
        MapKind::Request => MapType::HttpRequestHeaders,
        MapKind::Response => MapType::HttpResponseHeaders,
    }
}

impl MetricsRegistry for HostProxy {
    fn counter(&mut self, name: &str) -> MetricId {
        define(MetricType::Counter, name)
    }
    fn gauge(&mut self, name: &str) -> MetricId {
        define(MetricType::Gauge, name)
    }
}

fn define(kind: MetricType, name: &str) -> MetricId {
    match raw::define_metric(kind, name) {
        Ok(id) => MetricId(id),
        Err(status) => {
            log::warn!("meshguard: cannot define metric {name}: {status:?}");
            MetricId::NONE
        }
    }
}

impl Host for HostProxy {
    fn now(&self) -> SystemTime {
        raw::now_nanos()
            .map(|n| UNIX_EPOCH + Duration::from_nanos(n))
            .unwrap_or(UNIX_EPOCH)
    }

    fn now_ns(&self) -> u64 {
        raw::now_nanos().unwrap_or(0)
    }

    fn random(&mut self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }

    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        raw::shared_data(key).ok().flatten()
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> SharedWrite {
        match raw::set_shared_data(key, value, cas) {
            Ok(()) => SharedWrite::Written,
            Err(Status::CasMismatch) => SharedWrite::CasMismatch,
            Err(_) => SharedWrite::Failed,
        }
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        raw::property(path).ok().flatten()
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool {
        raw::set_property(path, value).is_ok()
    }
}

impl Callouts for HostProxy {
    fn http_call(&mut self, call: &HttpCallout<'_>) -> Result<Token, CalloutError> {
        // The ABI takes milliseconds as u32; keep within 1 ms ..= u32::MAX ms.
        let timeout = call.timeout.clamp(
            Duration::from_millis(1),
            Duration::from_millis(u64::from(u32::MAX)),
        );
        let headers = encode_pairs(&call.headers);
        raw::http_call(call.cluster, &headers, call.body, millis(timeout))
            .inspect(|token| crate::wasm::register_callout(*token))
            .map_err(|status| match status {
                Status::BadArgument => CalloutError::UnknownCluster,
                _ => CalloutError::Refused,
            })
    }

    fn grpc_call(&mut self, call: &GrpcCallout<'_>) -> Result<Token, CalloutError> {
        Self::grpc(call)
    }
}

impl HostProxy {
    fn grpc(call: &GrpcCallout<'_>) -> Result<Token, CalloutError> {
        let timeout = call.timeout.clamp(
            Duration::from_millis(1),
            Duration::from_millis(u64::from(u32::MAX)),
        );
        // Envoy takes a plain cluster name (or a serialized GrpcService);
        // an unknown cluster is a ParseFailure.
        let metadata = encode_pairs(&call.metadata);
        raw::grpc_call(
            call.cluster,
            call.service,
            call.method,
            &metadata,
            call.message,
            millis(timeout),
        )
        .inspect(|token| crate::wasm::register_callout(*token))
        .map_err(|status| match status {
            Status::ParseFailure | Status::BadArgument => CalloutError::UnknownCluster,
            _ => CalloutError::Refused,
        })
    }
}

impl Proxy for HostProxy {
    fn grpc_response(&mut self, size: usize) -> Vec<u8> {
        raw::buffer(BufferType::GrpcReceiveBuffer, 0, size).unwrap_or_default()
    }

    fn headers(&mut self, map: MapKind) -> Option<Vec<u8>> {
        match raw::header_map_pairs(map_type(map)) {
            Ok(buf) => Some(buf),
            Err(status) => {
                // Expected for e.g. response headers of a reset stream in
                // on_log: callers decide whether it matters.
                log::debug!("meshguard: cannot read {map:?} headers: {status:?}");
                None
            }
        }
    }

    fn edit(&mut self, map: MapKind, edit: &HostEdit<'_>) {
        let mt = map_type(map);
        let result = match edit {
            HostEdit::Replace(name, value) => {
                raw::replace_header(mt, name.as_bytes(), value.as_bytes())
            }
            HostEdit::Add(name, value) => raw::add_header(mt, name.as_bytes(), value.as_bytes()),
            HostEdit::Remove(name) => raw::remove_header(mt, name.as_bytes()),
        };
        if let Err(status) = result {
            log::error!("meshguard: header edit {edit:?} on {map:?} failed: {status:?}");
        }
    }

    fn request_body(&mut self, size: usize, max: usize) -> Vec<u8> {
        raw::buffer(BufferType::HttpRequestBody, 0, size.min(max)).unwrap_or_default()
    }

    fn callout_response(&mut self, _num_headers: usize, body_size: usize) -> (Vec<u8>, Vec<u8>) {
        let headers = raw::header_map_pairs(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let body = if body_size == 0 {
            Vec::new()
        } else {
            raw::buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
        };
        (headers, body)
    }

    fn send_reply(&mut self, reply: &LocalReply) {
        let valid: Vec<(&[u8], &[u8])> = reply
            .headers
            .iter()
            .filter(|(k, v)| valid_name(k.as_bytes()) && valid_value(v.as_bytes()))
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let pairs = encode_pairs(&valid);
        let grpc = reply
            .grpc_status
            .and_then(|g| i32::try_from(g).ok())
            .unwrap_or(-1);
        if let Err(status) = raw::send_local_response(
            u32::from(reply.status),
            reply.details,
            &pairs,
            reply.body.as_bytes(),
            grpc,
        ) {
            log::error!(
                "meshguard: cannot send local reply {}: {status:?}",
                reply.status
            );
        }
    }

    fn resume_request(&mut self) {
        if let Err(status) = raw::resume_request() {
            log::error!("meshguard: cannot resume request: {status:?}");
        }
    }

    fn bump(&mut self, id: MetricId, delta: i64) {
        if id != MetricId::NONE {
            let _ = raw::increment_metric(id.0, delta);
        }
    }
}
