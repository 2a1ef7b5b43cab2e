//! Metric imports (stats are process-wide by name, ids per VM).

use wasmtime::Linker;

use super::memory::{arg, read_str, return_u32, return_u64, st, status, C, R};
use super::restrict::host_fn;
use super::VmData;

pub(super) const NAMES: &[&str] = &[
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

pub(super) fn define(l: &mut Linker<VmData>) -> wasmtime::Result<()> {
    host_fn!(l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, t: i32, np: i32, nl: i32, ret: i32| -> R {
            let name = arg!(read_str(&c, np, nl));
            match c.data_mut().host.define_metric(t, &name) {
                Ok(id) => return_u32(&mut c, ret, id),
                Err(s) => st(s),
            }
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> R {
            match c.data().host.get_metric(id as u32) {
                Ok(v) => return_u64(&mut c, ret, v),
                Err(s) => st(s),
            }
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> R {
            status(c.data().host.record_metric(id as u32, value))
        },
    ))?;
    host_fn!(l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, offset: i64| -> R {
            status(c.data().host.increment_metric(id as u32, offset))
        },
    ))?;
    Ok(())
}
