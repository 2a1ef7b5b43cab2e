//! HTTP and gRPC callout imports.

use wasmtime::Linker;

use super::memory::{arg, copy_out, read, read_str, return_u32, st, status, C, R};
use super::restrict::host_fn;
use super::VmData;
use crate::abi::Status;
use crate::state::callouts::GrpcTarget;

pub(super) const NAMES: &[&str] = &[
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
];

/// Cluster, service, method and metadata of a gRPC call or stream.
fn grpc_target(
    c: &C<'_>,
    (up, ul): (i32, i32),
    (sp, sl): (i32, i32),
    (mp, ml): (i32, i32),
    (mdp, mdl): (i32, i32),
) -> Option<GrpcTarget> {
    Some(GrpcTarget {
        cluster: read_str(c, up, ul)?,
        service: read_str(c, sp, sl)?,
        method: read_str(c, mp, ml)?,
        metadata: read(c, mdp, mdl)?,
    })
}

fn return_token(c: &mut C<'_>, r: Result<u32, Status>, ret: i32) -> R {
    match r {
        Ok(token) => return_u32(c, ret, token),
        Err(s) => st(s),
    }
}

pub(super) fn define(l: &mut Linker<VmData>) -> wasmtime::Result<()> {
    host_fn!(l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout: i32,
         ret: i32|
         -> R {
            let cluster = arg!(read_str(&c, up, ul));
            let headers = arg!(read(&c, hp, hl));
            let body = arg!(read(&c, bp, bl));
            let trailers = arg!(read(&c, tp, tl));
            let r = c
                .data_mut()
                .host
                .http_call(cluster, &headers, body, &trailers, timeout);
            return_token(&mut c, r, ret)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: C<'_>,
         up: i32,
         ul: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         mdp: i32,
         mdl: i32,
         msgp: i32,
         msgl: i32,
         timeout: i32,
         ret: i32|
         -> R {
            let target = arg!(grpc_target(&c, (up, ul), (sp, sl), (mp, ml), (mdp, mdl)));
            let message = arg!(read(&c, msgp, msgl));
            let r = c.data_mut().host.grpc_call(target, message, timeout);
            return_token(&mut c, r, ret)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: C<'_>,
         up: i32,
         ul: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         mdp: i32,
         mdl: i32,
         ret: i32|
         -> R {
            let target = arg!(grpc_target(&c, (up, ul), (sp, sl), (mp, ml), (mdp, mdl)));
            let r = c.data_mut().host.grpc_stream(target);
            return_token(&mut c, r, ret)
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: C<'_>, token: i32, mp: i32, ml: i32, end: i32| -> R {
            let msg = arg!(read(&c, mp, ml));
            status(c.data_mut().host.callouts.send(token as u32, msg, end != 0))
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut c: C<'_>, token: i32| -> R { status(c.data_mut().host.callouts.cancel(token as u32)) },
    ))?;
    host_fn!(
        l.func_wrap("env", "proxy_grpc_close", |mut c: C<'_>, token: i32| -> R {
            status(c.data_mut().host.callouts.close(token as u32))
        })
    )?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C<'_>, code_ptr: i32, msg_ptr: i32, msg_size: i32| -> R {
            let (code, msg) = c.data().host.grpc_status.clone().unwrap_or_default();
            match return_u32(&mut c, code_ptr, code)? {
                0 => copy_out(&mut c, &msg, msg_ptr, msg_size),
                failed => Ok(failed),
            }
        },
    ))?;
    Ok(())
}
