//! The pipeline's seams ([`Host`], [`Proxy`], [`MetricsRegistry`])
//! implemented with proxy-wasm host calls. No decisions here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};

use meshguard_common::host as raw;
use meshguard_stage::pipeline::{MapKind, Proxy};
use meshguard_stage::{
    CalloutError, Host, HostEdit, HttpCallout, LocalReply, MetricId, MetricsRegistry, SharedWrite,
    Token,
};

/// Stateless: every call goes to the host for the current context.
pub struct SdkProxy;

fn map_type(map: MapKind) -> MapType {
    match map {
        MapKind::Request => MapType::HttpRequestHeaders,
        MapKind::Response => MapType::HttpResponseHeaders,
    }
}

impl MetricsRegistry for SdkProxy {
    fn counter(&mut self, name: &str) -> MetricId {
        define(MetricType::Counter, name)
    }
    fn gauge(&mut self, name: &str) -> MetricId {
        define(MetricType::Gauge, name)
    }
}

fn define(kind: MetricType, name: &str) -> MetricId {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => MetricId(id),
        Err(status) => {
            log::warn!("meshguard: cannot define metric {name}: {status:?}");
            MetricId::NONE
        }
    }
}

impl Host for SdkProxy {
    fn now(&self) -> SystemTime {
        hostcalls::get_current_time().unwrap_or(UNIX_EPOCH)
    }

    fn random(&mut self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }

    fn http_call(&mut self, call: &HttpCallout<'_>) -> Result<Token, CalloutError> {
        let timeout = call.timeout.max(Duration::from_millis(1));
        hostcalls::dispatch_http_call(
            call.cluster,
            call.headers.clone(),
            call.body,
            vec![],
            timeout,
        )
        .map_err(|status| match status {
            Status::BadArgument => CalloutError::UnknownCluster,
            _ => CalloutError::Refused,
        })
    }

    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Some((value, cas.unwrap_or(0))),
            _ => None,
        }
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> SharedWrite {
        let cas = (cas != 0).then_some(cas);
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => SharedWrite::Written,
            Err(Status::CasMismatch) => SharedWrite::CasMismatch,
            Err(_) => SharedWrite::Failed,
        }
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool {
        hostcalls::set_property(path.to_vec(), Some(value)).is_ok()
    }
}

impl Proxy for SdkProxy {
    fn headers(&mut self, map: MapKind) -> Option<Vec<u8>> {
        match raw::header_map_pairs(map_type(map)) {
            Ok(buf) => Some(buf),
            Err(status) => {
                log::error!("meshguard: cannot read {map:?} headers: {status:?}");
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
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size.min(max))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn callout_response(&mut self, _num_headers: usize, body_size: usize) -> (Vec<u8>, Vec<u8>) {
        let headers = raw::header_map_pairs(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let body = if body_size == 0 {
            Vec::new()
        } else {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        (headers, body)
    }

    fn send_reply(&mut self, reply: &LocalReply) {
        let pairs = raw::encode_pairs(
            reply
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        );
        if let Err(status) = raw::send_local_response(u32::from(reply.status), &pairs, &reply.body)
        {
            log::error!(
                "meshguard: cannot send local reply {}: {status:?}",
                reply.status
            );
        }
    }

    fn resume_request(&mut self) {
        if let Err(status) = hostcalls::resume_http_request() {
            log::error!("meshguard: cannot resume request: {status:?}");
        }
    }

    fn bump(&mut self, id: MetricId, delta: i64) {
        let _ = hostcalls::increment_metric(id.0, delta);
    }
}
