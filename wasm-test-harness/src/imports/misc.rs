//! Logging, time, properties, contexts and stream control imports.

use wasmtime::Linker;

use super::memory::{arg, copy_out, read, read_str, return_u32, return_u64, st, status, C, R};
use super::restrict::host_fn;
use super::VmData;
use crate::abi::Status;

pub(super) const NAMES: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
];

/// A property path as the SDK sends it (`\0`-joined, maybe `\0`-ended).
fn read_path(c: &C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mut path = read(c, ptr, len)?;
    if path.last() == Some(&0) {
        path.pop();
    }
    Some(path)
}

pub(super) fn define(l: &mut Linker<VmData>) -> wasmtime::Result<()> {
    host_fn!(l.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, ptr: i32, len: i32| -> R {
            let message = arg!(read_str(&c, ptr, len));
            status(c.data_mut().host.log(level, message))
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> R {
            let level = c.data().host.log_level as u32;
            return_u32(&mut c, ret, level)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> R {
            let now = c.data().host.now_ns();
            return_u64(&mut c, ret, now)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> R {
            c.data_mut().host.set_tick_period(period as u32);
            st(Status::Ok)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, pl: i32, ret_ptr: i32, ret_size: i32| -> R {
            let path = arg!(read_path(&c, pp, pl));
            match c.data().host.get_property(&path) {
                Some(v) => copy_out(&mut c, &v, ret_ptr, ret_size),
                None => st(Status::NotFound),
            }
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> R {
            let path = arg!(read_path(&c, pp, pl));
            let value = arg!(read(&c, vp, vl));
            status(c.data_mut().host.set_property(path, value))
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, t: i32| -> R { status(c.data_mut().host.continue_stream(t)) },
    ))?;
    host_fn!(
        l.func_wrap("env", "proxy_close_stream", |mut c: C<'_>, t: i32| -> R {
            match c.data_mut().host.stream() {
                Some(s) => status(s.close_stream(t)),
                None => st(Status::BadArgument),
            }
        })
    )?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         code: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         grpc: i32|
         -> R {
            let details = arg!(read_str(&c, dp, dl));
            let body = arg!(read(&c, bp, bl));
            let headers = arg!(read(&c, hp, hl));
            let host = &mut c.data_mut().host;
            status(host.send_local_response(code as u32, &details, body, &headers, grpc))
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, id: i32| -> R { status(c.data_mut().host.set_effective_context(id as u32)) },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_c: C<'_>, _np: i32, _nl: i32, _ap: i32, _al: i32, _rp: i32, _rs: i32| -> R {
            st(Status::NotFound)
        },
    ))?;
    host_fn!(l.func_wrap("env", "proxy_done", |mut c: C<'_>| -> R {
        c.data_mut().host.done_calls += 1;
        st(Status::Ok)
    }))?;
    Ok(())
}
