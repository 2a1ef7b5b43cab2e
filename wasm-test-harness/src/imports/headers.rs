//! Header-map imports: which map may be used when is decided by
//! `Host::map` / `StreamState::map`.

use wasmtime::Linker;

use super::memory::{arg, copy_out, read, read_str, return_u32, st, status, C, R};
use super::restrict::host_fn;
use super::VmData;
use crate::abi::{decode_pairs, Status};
use crate::headers::Headers;

pub(super) const NAMES: &[&str] = &[
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_header_map_size",
];

pub(super) fn define(l: &mut Linker<VmData>) -> wasmtime::Result<()> {
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, t: i32, ret_ptr: i32, ret_size: i32| -> R {
            // An unavailable map reads as empty (Envoy headerMapToPairs(nullptr)).
            let bytes = match c.data_mut().host.map(t, false) {
                Ok(m) => m.encode(),
                Err(_) => Headers::new().encode(),
            };
            copy_out(&mut c, &bytes, ret_ptr, ret_size)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, t: i32, ptr: i32, len: i32| -> R {
            let raw = arg!(read(&c, ptr, len));
            let Some(pairs) = decode_pairs(&raw) else {
                return st(Status::SerializationFailure);
            };
            let new = Headers::from_bytes(&pairs);
            status(c.data_mut().host.map(t, true).map(|m| *m = new))
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, t: i32, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            let value = match c.data_mut().host.map(t, false) {
                Ok(m) => m.get_bytes(&key).map(<[u8]>::to_vec),
                Err(s) => return st(s),
            };
            match value {
                Some(v) => copy_out(&mut c, &v, ret_ptr, ret_size),
                None => st(Status::NotFound),
            }
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C<'_>, t: i32, ret: i32| -> R {
            // Envoy answers byteSize(): total bytes of keys and values.
            let size = match c.data_mut().host.map(t, false) {
                Ok(m) => m
                    .raw_pairs()
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>(),
                Err(s) => return st(s),
            };
            return_u32(&mut c, ret, size as u32)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            let value = arg!(read(&c, vp, vl));
            status(c.data_mut().host.mutate_map(t, |m| m.replace(&key, &value)))
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            let value = arg!(read(&c, vp, vl));
            status(c.data_mut().host.mutate_map(t, |m| m.add(&key, &value)))
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, t: i32, kp: i32, kl: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            status(c.data_mut().host.mutate_map(t, |m| m.remove(&key)))
        },
    ))?;
    Ok(())
}
