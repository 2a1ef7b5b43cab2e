//! The WASI preview1 calls Rust proxy-wasm modules make: clocks and
//! random under test control, stdout/stderr captured, no environment.

use wasmtime::Linker;

use super::memory::{read, write, C, R};
use super::restrict::host_fn;
use super::{VmData, WASI_MODULE};

pub(super) const NAMES: &[&str] = &[
    "clock_time_get",
    "random_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "fd_write",
    "proc_exit",
    "sched_yield",
];

const EBADF: i32 = 8;
const EFAULT: i32 = 21;

fn errno_or_ok(written: bool) -> R {
    Ok(if written { 0 } else { EFAULT })
}

pub(super) fn define(l: &mut Linker<VmData>) -> wasmtime::Result<()> {
    host_fn!(l.func_wrap(
        WASI_MODULE,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _precision: i64, ret: i32| -> R {
            match c.data().host.clock_time(id) {
                Ok(ns) => errno_or_ok(write(&mut c, ret, &ns.to_le_bytes())),
                Err(errno) => Ok(errno),
            }
        },
    ))?;
    host_fn!(l.func_wrap(
        WASI_MODULE,
        "random_get",
        |mut c: C<'_>, buf: i32, len: i32| -> R {
            let len = len as u32 as usize;
            // Refuse before generating: a bogus length must not make the
            // host allocate gigabytes.
            let size = c.data().memory.map_or(0, |m| m.data_size(&c));
            if (buf as u32 as usize).saturating_add(len) > size {
                return Ok(EFAULT);
            }
            let mut bytes = Vec::with_capacity(len);
            while bytes.len() < len {
                bytes.extend_from_slice(&c.data_mut().host.next_random().to_le_bytes());
            }
            bytes.truncate(len);
            errno_or_ok(write(&mut c, buf, &bytes))
        },
    ))?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        host_fn!(l.func_wrap(
            WASI_MODULE,
            name,
            |mut c: C<'_>, count: i32, size: i32| -> R {
                let zero = 0u32.to_le_bytes();
                errno_or_ok(write(&mut c, count, &zero) && write(&mut c, size, &zero))
            },
        ))?;
    }
    for name in ["environ_get", "args_get"] {
        host_fn!(
            l.func_wrap(WASI_MODULE, name, |_c: C<'_>, _a: i32, _b: i32| -> R {
                Ok(0)
            })
        )?;
    }
    host_fn!(l.func_wrap(
        WASI_MODULE,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| -> R {
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            let mut out = Vec::new();
            for i in 0..iovs_len.max(0) {
                let Some(iov) = read(&c, iovs.wrapping_add(i.wrapping_mul(8)), 8) else {
                    return Ok(EFAULT);
                };
                let word = |at: usize| {
                    let b = iov.get(at..at + 4).unwrap_or(&[0; 4]);
                    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
                };
                let Some(bytes) = read(&c, word(0), word(4)) else {
                    return Ok(EFAULT);
                };
                out.extend_from_slice(&bytes);
            }
            let n = out.len() as u32;
            let host = &mut c.data_mut().host;
            let sink = if fd == 1 {
                &mut host.stdout
            } else {
                &mut host.stderr
            };
            sink.extend_from_slice(&out);
            errno_or_ok(write(&mut c, nwritten, &n.to_le_bytes()))
        },
    ))?;
    host_fn!(l.func_wrap(
        WASI_MODULE,
        "proc_exit",
        |_c: C<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the guest called proc_exit({code})"
            )))
        },
    ))?;
    host_fn!(l.func_wrap(WASI_MODULE, "sched_yield", |_c: C<'_>| -> R { Ok(0) }))?;
    Ok(())
}
