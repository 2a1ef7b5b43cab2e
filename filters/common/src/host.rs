//! Host calls the proxy-wasm SDK does not offer in the shape filters need.
//! wasm32 only.

use proxy_wasm::types::{MapType, Status};

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

/// Sends a local reply; `headers` in the pairs encoding. Envoy derives
/// `grpc-status` for gRPC requests from the HTTP status (grpc_status -1).
pub fn send_local_response(code: u32, headers: &[u8], body: &[u8]) -> Result<(), Status> {
    // SAFETY: as above.
    status(unsafe {
        proxy_send_local_response(
            code,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Encodes header pairs in the proxy-wasm pairs encoding.
pub fn encode_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let count = pairs.clone().count();
    let mut out = Vec::with_capacity(4 + count * 8);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}
