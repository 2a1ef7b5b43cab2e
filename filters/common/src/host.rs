//! The proxy-wasm host calls meshguard makes (ABI 0.2.1), declared here
//! rather than through the Rust SDK: every call hands its status back
//! (the SDK's wrappers trap the VM on statuses Envoy does return), buffers
//! are read in place, and the module carries only what it uses. wasm32
//! only; the exports (`proxy_on_*`) are in `meshguard_shell`.

/// The proxy-wasm ABI 0.2.1 enums (values from the spec and the Rust SDK's
/// `types.rs`): meshguard talks to the host without the SDK.
/// wasm-test-harness keeps its own copy on purpose (an independent host
/// implementation; a shared number would be wrong on both sides at once)
/// and checks it against the SDK's (`abi::tests`); these are checked by
/// every module run in real Envoy (`tests/tests/*.rs`).
#[repr(u32)]
#[derive(Copy, Clone, Eq, PartialEq, Debug)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    /// A code this ABI version does not define.
    Unknown = u32::MAX,
}

impl Status {
    /// The host's return value as a status (never an invalid enum value).
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::BadArgument,
            3 => Status::SerializationFailure,
            4 => Status::ParseFailure,
            7 => Status::Empty,
            8 => Status::CasMismatch,
            10 => Status::InternalFailure,
            _ => Status::Unknown,
        }
    }
}

#[repr(u32)]
#[derive(Copy, Clone, Eq, PartialEq, Debug)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

#[repr(u32)]
#[derive(Copy, Clone, Eq, PartialEq, Debug)]
pub enum StreamType {
    HttpRequest = 0,
    HttpResponse = 1,
}

#[repr(u32)]
#[derive(Copy, Clone, Eq, PartialEq, Debug)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    HttpCallResponseBody = 4,
    GrpcReceiveBuffer = 5,
    VmConfiguration = 6,
    PluginConfiguration = 7,
}

#[repr(u32)]
#[derive(Copy, Clone, Eq, PartialEq, Debug)]
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpRequestTrailers = 1,
    HttpResponseHeaders = 2,
    HttpResponseTrailers = 3,
    HttpCallResponseHeaders = 6,
    HttpCallResponseTrailers = 7,
}

#[repr(u32)]
#[derive(Copy, Clone, Eq, PartialEq, Debug)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

extern "C" {
    // Same import and signature as the SDK's own declaration.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// A header map in Envoy's pairs encoding, as one buffer, to be read in
/// place with `headers::PairsView`. The SDK's accessors copy every key and
/// value into its own allocation (and its String accessor panics on
/// non-UTF-8 values); this costs one allocation for the whole map.
pub fn header_map_pairs(map_type: MapType) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer it allocated through the module's
    // `proxy_on_memory_allocate` (`meshguard_shell`'s, Vec-based) and its
    // length; ownership passes to us, exactly as in the SDK's get_map_bytes.
    unsafe {
        match Status::from_raw(proxy_get_header_map_pairs(map_type, &mut data, &mut size)) {
            Status::Ok if data.is_null() || size == 0 => Ok(Vec::new()),
            Status::Ok => Ok(Vec::from_raw_parts(data, size, size)),
            status => Err(status),
        }
    }
}

extern "C" {
    // Same imports and signatures as the SDK's declarations. The SDK's
    // wrappers panic (trapping the VM) on any status but Ok; these return it.
    fn proxy_add_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

fn status(raw: u32) -> Result<(), Status> {
    match Status::from_raw(raw) {
        Status::Ok => Ok(()),
        other => Err(other),
    }
}

/// Appends a header value (any bytes).
pub fn add_header(map_type: MapType, name: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices; the host copies them.
    status(unsafe {
        proxy_add_header_map_value(
            map_type,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Drops every value of `name`, then adds `value` (Envoy's replace).
pub fn replace_header(map_type: MapType, name: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: as above.
    status(unsafe {
        proxy_replace_header_map_value(
            map_type,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Drops every value of `name`.
pub fn remove_header(map_type: MapType, name: &[u8]) -> Result<(), Status> {
    // SAFETY: as above.
    status(unsafe { proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()) })
}

/// Sends a local reply; `headers` in the pairs encoding. With
/// `grpc_status` -1, Envoy derives `grpc-status` for gRPC requests from the
/// HTTP status. `details` shows up as the response code details.
pub fn send_local_response(
    code: u32,
    details: &str,
    headers: &[u8],
    body: &[u8],
    grpc_status: i32,
) -> Result<(), Status> {
    // SAFETY: as above.
    status(unsafe {
        proxy_send_local_response(
            code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status,
        )
    })
}

extern "C" {
    // The SDK's wrappers of these panic on statuses Envoy does return
    // (NotFound from the root context, BadArgument for read-only filter
    // state, ...), which traps the VM; these hand the status back.
    fn proxy_define_metric(
        metric_type: MetricType,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: StreamType) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
}

/// Takes ownership of a buffer the host allocated through the module's
/// allocator (`meshguard_shell`'s Vec-based `proxy_on_memory_allocate`).
///
/// # Safety
/// `data`/`size` must come from a host call that just returned Ok.
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        Vec::new()
    } else {
        // SAFETY: per the contract above, exactly as the SDK does.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: live slice; the host writes one u32.
    status(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) }).map(|()| id)
}

pub fn increment_metric(id: u32, delta: i64) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_increment_metric(id, delta) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_record_metric(id, value) })
}

/// Up to `max` bytes of a buffer from `start`; `Ok(empty)` if there is none.
pub fn buffer(kind: BufferType, start: usize, max: usize) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer it allocated and its length.
    match Status::from_raw(unsafe {
        proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size)
    }) {
        // SAFETY: Ok: the buffer is ours.
        Status::Ok => Ok(unsafe { owned(data, size) }),
        Status::NotFound => Ok(Vec::new()),
        other => Err(other),
    }
}

fn property_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A property (`["source", "address"]`); `Ok(None)` if it is not set.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let p = property_path(path);
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as above.
    match Status::from_raw(unsafe { proxy_get_property(p.as_ptr(), p.len(), &mut data, &mut size) })
    {
        // SAFETY: Ok: the buffer is ours.
        Status::Ok => Ok(Some(unsafe { owned(data, size) })),
        Status::NotFound => Ok(None),
        other => Err(other),
    }
}

pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let p = property_path(path);
    // SAFETY: live slices; the host copies them.
    status(unsafe { proxy_set_property(p.as_ptr(), p.len(), value.as_ptr(), value.len()) })
}

/// Value and CAS of a shared-data key; `Ok(None)` if absent.
pub fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: as above.
    match Status::from_raw(unsafe {
        proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
    }) {
        // SAFETY: Ok: the buffer is ours.
        Status::Ok => Ok(Some((unsafe { owned(data, size) }, cas))),
        Status::NotFound => Ok(None),
        other => Err(other),
    }
}

/// Writes a shared-data key if its CAS is still `cas` (0: unconditionally).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: live slices; the host copies them.
    status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Resumes the request a filter paused.
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_continue_stream(StreamType::HttpRequest) })
}

pub fn now_nanos() -> Result<u64, Status> {
    let mut t = 0u64;
    // SAFETY: the host writes one u64.
    status(unsafe { proxy_get_current_time_nanoseconds(&mut t) }).map(|()| t)
}

extern "C" {
    fn proxy_log(level: LogLevel, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_grpc_call(
        upstream_data: *const u8,
        upstream_size: usize,
        service_data: *const u8,
        service_size: usize,
        method_data: *const u8,
        method_size: usize,
        metadata_data: *const u8,
        metadata_size: usize,
        message_data: *const u8,
        message_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> u32;
}

/// A line in the proxy's log.
pub fn log(level: LogLevel, message: &str) -> Result<(), Status> {
    // SAFETY: a live slice; the host copies it.
    status(unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

/// The proxy's log level for this module (Envoy's `wasm` logger).
pub fn log_level() -> Result<LogLevel, Status> {
    let mut raw = 0u32;
    // SAFETY: the host writes one u32.
    status(unsafe { proxy_get_log_level(&mut raw) })?;
    Ok(match raw {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    })
}

/// Calls the root context's `proxy_on_tick` every `ms` milliseconds.
pub fn set_tick_period_ms(ms: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// Makes `context_id` the one later host calls act on.
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// An HTTP call to `cluster`; `headers` in the pairs encoding (with
/// `:method`, `:path`, `:authority`). Its answer arrives in
/// `proxy_on_http_call_response` with the returned token.
pub fn http_call(
    cluster: &str,
    headers: &[u8],
    body: Option<&[u8]>,
    timeout_ms: u32,
) -> Result<u32, Status> {
    // No trailers: an empty map.
    let trailers = [0u8; 4];
    let mut token = 0u32;
    let (body_ptr, body_len) = body.map_or((std::ptr::null(), 0), |b| (b.as_ptr(), b.len()));
    // SAFETY: live slices; the host copies them and writes one u32.
    status(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body_ptr,
            body_len,
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })
    .map(|()| token)
}

/// A unary gRPC call; `metadata` in the pairs encoding. Its answer arrives
/// in `proxy_on_grpc_receive` (a message) or `proxy_on_grpc_close` (an
/// error status).
pub fn grpc_call(
    cluster: &str,
    service: &str,
    method: &str,
    metadata: &[u8],
    message: &[u8],
    timeout_ms: u32,
) -> Result<u32, Status> {
    let mut token = 0u32;
    // SAFETY: live slices; the host copies them and writes one u32.
    status(unsafe {
        proxy_grpc_call(
            cluster.as_ptr(),
            cluster.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            message.as_ptr(),
            message.len(),
            timeout_ms,
            &mut token,
        )
    })
    .map(|()| token)
}
