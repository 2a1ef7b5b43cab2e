//! Host calls the proxy-wasm SDK does not offer in the shape filters need.
//! wasm32 only.

use proxy_wasm::types::{BufferType, MapType, MetricType, Status, StreamType};

extern "C" {
    // Same import and signature as the SDK's own declaration.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// A header map in Envoy's pairs encoding, as one buffer, to be read in
/// place with `headers::PairsView`. The SDK's accessors copy every key and
/// value into its own allocation (and its String accessor panics on
/// non-UTF-8 values); this costs one allocation for the whole map.
pub fn header_map_pairs(map_type: MapType) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer it allocated through the module's
    // `proxy_on_memory_allocate` (the SDK's Vec-based allocator) and its
    // length; ownership passes to us, exactly as in the SDK's get_map_bytes.
    unsafe {
        match proxy_get_header_map_pairs(map_type, &mut data, &mut size) {
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
    ) -> Status;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
}

fn status(s: Status) -> Result<(), Status> {
    match s {
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
    ) -> Status;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> Status;
    fn proxy_record_metric(metric_id: u32, value: u64) -> Status;
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> Status;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> Status;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> Status;
    fn proxy_continue_stream(stream_type: StreamType) -> Status;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> Status;
}

/// Takes ownership of a buffer the host allocated through the module's
/// allocator (the SDK's Vec-based `proxy_on_memory_allocate`).
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
    match unsafe { proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) } {
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
    match unsafe { proxy_get_property(p.as_ptr(), p.len(), &mut data, &mut size) } {
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
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) }
    {
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
