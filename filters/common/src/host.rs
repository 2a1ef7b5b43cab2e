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
