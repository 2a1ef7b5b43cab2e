//! Encoders for property values, matching what Envoy returns from
//! `get_property` (see Envoy's `serializeValue`): strings and bytes raw,
//! integers 8-byte little-endian, bools one byte, timestamps and durations
//! as i64 nanoseconds, maps and lists in the proxy-wasm pairs encoding.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn string(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

pub fn bytes(b: &[u8]) -> Vec<u8> {
    b.to_vec()
}

pub fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn uint(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn double(v: f64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn boolean(v: bool) -> Vec<u8> {
    vec![u8::from(v)]
}

/// Unix time in nanoseconds, i64 little-endian.
pub fn timestamp(t: SystemTime) -> Vec<u8> {
    let ns = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    };
    ns.to_le_bytes().to_vec()
}

/// Nanoseconds, i64 little-endian.
pub fn duration(d: Duration) -> Vec<u8> {
    (d.as_nanos() as i64).to_le_bytes().to_vec()
}

/// A string map (e.g. `request.headers`), pairs-encoded.
pub fn map<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    crate::abi::encode_pairs(pairs)
}

/// Joins path segments the way the SDK sends them (`\0`-separated).
pub fn path(segments: &[&str]) -> Vec<u8> {
    segments.join("\0").into_bytes()
}
