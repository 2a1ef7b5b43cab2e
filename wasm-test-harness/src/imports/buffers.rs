//! Buffer imports (bodies, callout bodies, configurations).

use wasmtime::Linker;

use super::memory::{arg, copy_out, read, st, status, C, R};
use super::restrict::host_fn;
use super::VmData;
use crate::state::HostError;

pub(super) const NAMES: &[&str] = &["proxy_get_buffer_bytes", "proxy_set_buffer_bytes"];

pub(super) fn define(l: &mut Linker<VmData>) -> wasmtime::Result<()> {
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, t: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> R {
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            match c.data_mut().host.buffer(t, start, max) {
                Ok(bytes) => copy_out(&mut c, &bytes, ret_ptr, ret_size),
                Err(HostError::Status(s)) => st(s),
                Err(HostError::Trap(m)) => Err(wasmtime::Error::msg(m)),
            }
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, t: i32, start: i32, size: i32, ptr: i32, len: i32| -> R {
            let data = arg!(read(&c, ptr, len));
            let (start, size) = (start as u32 as usize, size as u32 as usize);
            status(c.data_mut().host.set_buffer(t, start, size, &data))
        },
    ))?;
    Ok(())
}
