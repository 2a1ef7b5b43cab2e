//! proxy-wasm ABI 0.2.1 constants and the pairs encoding used for header
//! maps (`u32 n`, n × (`u32 key_len`, `u32 value_len`), then `key\0value\0`…).

/// Host call results, as the guest sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// What a stream callback returned (FilterHeadersStatus / FilterDataStatus
/// values of ABI 0.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// `Pause` in the Rust SDK (StopIteration / StopIterationAndBuffer).
    Pause,
    ContinueAndEndStream,
    StopAllIterationAndBuffer,
    StopAllIterationAndWatermark,
    /// Any other value; Envoy would treat it as an error.
    Other(i32),
}

impl Action {
    pub(crate) fn from_raw(v: i32) -> Self {
        match v {
            0 => Action::Continue,
            1 => Action::Pause,
            2 => Action::ContinueAndEndStream,
            3 => Action::StopAllIterationAndBuffer,
            4 => Action::StopAllIterationAndWatermark,
            other => Action::Other(other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub(crate) fn from_raw(v: i32) -> Option<Self> {
        Some(match v {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub(crate) fn from_raw(v: i32) -> Option<Self> {
        match v {
            0 => Some(MetricType::Counter),
            1 => Some(MetricType::Gauge),
            2 => Some(MetricType::Histogram),
            _ => None,
        }
    }
}

pub(crate) mod map_type {
    pub const REQUEST_HEADERS: i32 = 0;
    pub const REQUEST_TRAILERS: i32 = 1;
    pub const RESPONSE_HEADERS: i32 = 2;
    pub const RESPONSE_TRAILERS: i32 = 3;
    pub const GRPC_INITIAL_METADATA: i32 = 4;
    pub const GRPC_TRAILING_METADATA: i32 = 5;
    pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
}

pub(crate) mod buffer_type {
    pub const HTTP_REQUEST_BODY: i32 = 0;
    pub const HTTP_RESPONSE_BODY: i32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub const GRPC_RECEIVE_BUFFER: i32 = 5;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
}

pub(crate) mod stream_type {
    pub const HTTP_REQUEST: i32 = 0;
    pub const HTTP_RESPONSE: i32 = 1;
    pub const DOWNSTREAM: i32 = 2;
    pub const UPSTREAM: i32 = 3;
}

/// Serializes header pairs the way Envoy hands them to the guest.
pub fn encode_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut size = 4 + pairs.len() * 8;
    for (k, v) in pairs {
        size += k.as_ref().len() + v.as_ref().len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Parses the pairs encoding sent by a guest; `None` if malformed.
pub fn decode_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = word(0)?;
    let mut data = 4usize.checked_add(n.checked_mul(8)?)?;
    let mut out = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        let klen = word(4 + i * 8)?;
        let vlen = word(8 + i * 8)?;
        let key = bytes.get(data..data.checked_add(klen)?)?.to_vec();
        data += klen + 1;
        let value = bytes.get(data..data.checked_add(vlen)?)?.to_vec();
        data += vlen + 1;
        out.push((key, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {

    /// The guest side (`meshguard_common::host`) keeps its own copy of
    /// these numbers on purpose: the harness is a second, independent
    /// implementation of the host, and a number shared by both would be
    /// wrong on both sides at once with every test passing. Instead each
    /// copy is checked against a third source, the Rust SDK's `types`
    /// (the values the SDK's modules, like the no-op fixture, send).
    #[test]
    fn constants_match_the_rust_sdk() {
        use proxy_wasm::types as sdk;
        for (ours, sdk) in [
            (Status::Ok, sdk::Status::Ok),
            (Status::NotFound, sdk::Status::NotFound),
            (Status::BadArgument, sdk::Status::BadArgument),
            (
                Status::SerializationFailure,
                sdk::Status::SerializationFailure,
            ),
            (Status::ParseFailure, sdk::Status::ParseFailure),
            (Status::Empty, sdk::Status::Empty),
            (Status::CasMismatch, sdk::Status::CasMismatch),
            (Status::InternalFailure, sdk::Status::InternalFailure),
        ] {
            assert_eq!(ours as i32, sdk as i32, "{ours:?}");
        }
        for (ours, sdk) in [
            (LogLevel::Trace, sdk::LogLevel::Trace),
            (LogLevel::Debug, sdk::LogLevel::Debug),
            (LogLevel::Info, sdk::LogLevel::Info),
            (LogLevel::Warn, sdk::LogLevel::Warn),
            (LogLevel::Error, sdk::LogLevel::Error),
            (LogLevel::Critical, sdk::LogLevel::Critical),
        ] {
            assert_eq!(LogLevel::from_raw(sdk as i32), Some(ours));
        }
        for (ours, sdk) in [
            (MetricType::Counter, sdk::MetricType::Counter),
            (MetricType::Gauge, sdk::MetricType::Gauge),
            (MetricType::Histogram, sdk::MetricType::Histogram),
        ] {
            assert_eq!(MetricType::from_raw(sdk as i32), Some(ours));
        }
        assert_eq!(
            Action::from_raw(sdk::Action::Continue as i32),
            Action::Continue
        );
        assert_eq!(Action::from_raw(sdk::Action::Pause as i32), Action::Pause);
        for (ours, sdk) in [
            (map_type::REQUEST_HEADERS, sdk::MapType::HttpRequestHeaders),
            (
                map_type::REQUEST_TRAILERS,
                sdk::MapType::HttpRequestTrailers,
            ),
            (
                map_type::RESPONSE_HEADERS,
                sdk::MapType::HttpResponseHeaders,
            ),
            (
                map_type::RESPONSE_TRAILERS,
                sdk::MapType::HttpResponseTrailers,
            ),
            (
                map_type::GRPC_INITIAL_METADATA,
                sdk::MapType::GrpcReceiveInitialMetadata,
            ),
            (
                map_type::GRPC_TRAILING_METADATA,
                sdk::MapType::GrpcReceiveTrailingMetadata,
            ),
            (
                map_type::HTTP_CALL_RESPONSE_HEADERS,
                sdk::MapType::HttpCallResponseHeaders,
            ),
            (
                map_type::HTTP_CALL_RESPONSE_TRAILERS,
                sdk::MapType::HttpCallResponseTrailers,
            ),
        ] {
            assert_eq!(ours, sdk as i32, "{sdk:?}");
        }
        for (ours, sdk) in [
            (
                buffer_type::HTTP_REQUEST_BODY,
                sdk::BufferType::HttpRequestBody,
            ),
            (
                buffer_type::HTTP_RESPONSE_BODY,
                sdk::BufferType::HttpResponseBody,
            ),
            (
                buffer_type::HTTP_CALL_RESPONSE_BODY,
                sdk::BufferType::HttpCallResponseBody,
            ),
            (
                buffer_type::GRPC_RECEIVE_BUFFER,
                sdk::BufferType::GrpcReceiveBuffer,
            ),
            (
                buffer_type::VM_CONFIGURATION,
                sdk::BufferType::VmConfiguration,
            ),
            (
                buffer_type::PLUGIN_CONFIGURATION,
                sdk::BufferType::PluginConfiguration,
            ),
        ] {
            assert_eq!(ours, sdk as i32, "{sdk:?}");
        }
        for (ours, sdk) in [
            (stream_type::HTTP_REQUEST, sdk::StreamType::HttpRequest),
            (stream_type::HTTP_RESPONSE, sdk::StreamType::HttpResponse),
            (stream_type::DOWNSTREAM, sdk::StreamType::Downstream),
            (stream_type::UPSTREAM, sdk::StreamType::Upstream),
        ] {
            assert_eq!(ours, sdk as i32, "{sdk:?}");
        }
    }
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let pairs = vec![
            (b":path".to_vec(), b"/".to_vec()),
            (b"x".to_vec(), b"".to_vec()),
        ];
        let enc = encode_pairs(&pairs);
        assert_eq!(decode_pairs(&enc).unwrap(), pairs);
        assert_eq!(decode_pairs(&[]).unwrap(), vec![]);
        assert!(decode_pairs(&enc[..enc.len() - 3]).is_none());
        assert!(decode_pairs(&[255, 255, 255, 255]).is_none());
    }
}
