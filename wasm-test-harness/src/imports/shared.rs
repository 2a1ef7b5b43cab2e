//! Shared data and shared queue imports (process-wide state).

use wasmtime::Linker;

use super::memory::{arg, copy_out, read, read_str, return_bytes, return_u32, st, status, C, R};
use super::restrict::host_fn;
use super::VmData;
use crate::abi::Status;
use crate::state::process::lock;

pub(super) const NAMES: &[&str] = &[
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
];

pub(super) fn define(l: &mut Linker<VmData>) -> wasmtime::Result<()> {
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32, cas_ptr: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            let Some((value, cas)) = c.data().host.get_shared_data(&key) else {
                return st(Status::NotFound);
            };
            match return_u32(&mut c, cas_ptr, cas)? {
                0 => copy_out(&mut c, &value, ret_ptr, ret_size),
                failed => Ok(failed),
            }
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            let value = arg!(read(&c, vp, vl));
            status(c.data().host.set_shared_data(&key, value, cas as u32))
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, np: i32, nl: i32, ret: i32| -> R {
            let name = arg!(read_str(&c, np, nl));
            let token = c.data().host.register_queue(&name);
            return_u32(&mut c, ret, token)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> R {
            let vm_id = arg!(read_str(&c, vp, vl));
            let name = arg!(read_str(&c, np, nl));
            match c.data().host.resolve_queue(&vm_id, &name) {
                Some(t) => return_u32(&mut c, ret, t),
                None => st(Status::NotFound),
            }
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, token: i32, ret_ptr: i32, ret_size: i32| -> R {
            let item = lock(&c.data().host.process).queues.dequeue(token as u32);
            return_bytes(&mut c, item, ret_ptr, ret_size)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C<'_>, token: i32, vp: i32, vl: i32| -> R {
            let item = arg!(read(&c, vp, vl));
            let r = lock(&c.data().host.process)
                .queues
                .enqueue(token as u32, item);
            status(r)
        },
    ))?;
    Ok(())
}
