//! Host side of every proxy-wasm ABI 0.2.1 import the Rust SDK 0.2.x uses,
//! plus the WASI preview1 calls such modules make. Semantics follow Envoy
//! (source/extensions/common/wasm/context.cc) and proxy-wasm-cpp-host
//! (src/exports.cc, src/shared_data.cc, src/shared_queue.cc): the same
//! status codes, the same availability of maps and buffers per phase.

use wasmtime::{Caller, Engine, Linker, Memory};

use crate::abi::{buffer_type, decode_pairs, map_type, stream_type, LogLevel, MetricType, Status};
use crate::harness::{lock, Metric, Queue, Shared};
use crate::headers::Headers;
use crate::vm::{GrpcCall, GrpcStream, HostState, HttpCall, LocalResponse, LogRecord, Phase};

type C<'a> = Caller<'a, HostState>;
type R = wasmtime::Result<i32>;

const ENV: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_header_map_size",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

const WASI: &[&str] = &[
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

const WASI_MODULE: &str = "wasi_snapshot_preview1";

pub(crate) fn is_provided(module: &str, name: &str) -> bool {
    (module == "env" && ENV.contains(&name)) || (module == WASI_MODULE && WASI.contains(&name))
}

fn ok() -> R {
    Ok(Status::Ok as i32)
}

fn st(s: Status) -> R {
    Ok(s as i32)
}

fn memory(c: &C<'_>) -> wasmtime::Result<Memory> {
    c.data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("guest memory not available yet"))
}

/// Guest bytes `[ptr, ptr+len)`, or None when out of bounds.
fn read(c: &C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = c.data().memory?;
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    mem.data(c).get(start..end).map(<[u8]>::to_vec)
}

fn read_str(c: &C<'_>, ptr: i32, len: i32) -> Option<String> {
    read(c, ptr, len).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn write(c: &mut C<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Ok(mem) = memory(c) else { return false };
    mem.write(c, ptr as u32 as usize, bytes).is_ok()
}

fn write_u32(c: &mut C<'_>, ptr: i32, v: u32) -> bool {
    write(c, ptr, &v.to_le_bytes())
}

fn write_u64(c: &mut C<'_>, ptr: i32, v: u64) -> bool {
    write(c, ptr, &v.to_le_bytes())
}

/// Stores a returned word for the guest: Ok, or InvalidMemoryAccess when
/// the guest's pointer is out of bounds.
fn return_u32(c: &mut C<'_>, ptr: i32, v: u32) -> R {
    if write_u32(c, ptr, v) {
        ok()
    } else {
        st(Status::InvalidMemoryAccess)
    }
}

fn return_u64(c: &mut C<'_>, ptr: i32, v: u64) -> R {
    if write_u64(c, ptr, v) {
        ok()
    } else {
        st(Status::InvalidMemoryAccess)
    }
}

/// Hands `data` to the guest: allocates with `proxy_on_memory_allocate`,
/// copies, and stores pointer and size. Empty data yields (0, 0), which the
/// SDK reads as `None` (cpp-host `copyToPointerSize`).
fn copy_out(c: &mut C<'_>, data: &[u8], ptr_ptr: i32, size_ptr: i32) -> R {
    let mut ptr = 0u32;
    if !data.is_empty() {
        let alloc = c
            .data()
            .alloc
            .clone()
            .ok_or_else(|| wasmtime::Error::msg("guest allocator not available"))?;
        ptr = alloc.call(&mut *c, data.len() as i32)? as u32;
        if ptr == 0 || !write(c, ptr as i32, data) {
            return st(Status::InvalidMemoryAccess);
        }
    }
    if !write_u32(c, ptr_ptr, ptr) || !write_u32(c, size_ptr, data.len() as u32) {
        return st(Status::InvalidMemoryAccess);
    }
    ok()
}

macro_rules! arg {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return st(Status::InvalidMemoryAccess),
        }
    };
}

/// Which header map a map call addresses, and whether it may be used now.
enum MapRef {
    Stream(i32),
    Callout(bool),
}

fn map_ref(t: i32) -> Option<MapRef> {
    match t {
        map_type::REQUEST_HEADERS
        | map_type::REQUEST_TRAILERS
        | map_type::RESPONSE_HEADERS
        | map_type::RESPONSE_TRAILERS => Some(MapRef::Stream(t)),
        map_type::GRPC_INITIAL_METADATA | map_type::HTTP_CALL_RESPONSE_HEADERS => {
            Some(MapRef::Callout(true))
        }
        map_type::GRPC_TRAILING_METADATA | map_type::HTTP_CALL_RESPONSE_TRAILERS => {
            Some(MapRef::Callout(false))
        }
        _ => None,
    }
}

/// A header-map mutation: applied if the map is writable now, and counted
/// as a request-header change (Envoy clears the route cache).
fn mutate_map(c: &mut C<'_>, t: i32, f: impl FnOnce(&mut Headers)) -> R {
    match with_map(c.data_mut(), t, true, f) {
        Ok(()) => {
            c.data_mut().headers_modified(t);
            ok()
        }
        Err(s) => st(s),
    }
}

/// The map, if available in the current phase. `write` asks for mutation.
/// Envoy only exposes request headers while `on_request_headers` runs or
/// while the filter keeps the request paused (and likewise for responses);
/// in `on_log` every map can be read but not changed.
fn with_map<T>(
    h: &mut HostState,
    t: i32,
    write: bool,
    f: impl FnOnce(&mut Headers) -> T,
) -> Result<T, Status> {
    match map_ref(t).ok_or(Status::BadArgument)? {
        MapRef::Callout(headers) => {
            let data = h.callout.as_mut().ok_or(Status::BadArgument)?;
            let map = if headers {
                &mut data.headers
            } else {
                &mut data.trailers
            };
            map.as_mut().map(f).ok_or(Status::BadArgument)
        }
        MapRef::Stream(t) => {
            let s = h.stream().ok_or(Status::BadArgument)?;
            let (live, map) = match t {
                map_type::REQUEST_HEADERS => (s.live.request_headers, &mut s.request_headers),
                map_type::REQUEST_TRAILERS => (s.live.request_trailers, &mut s.request_trailers),
                map_type::RESPONSE_HEADERS => (s.live.response_headers, &mut s.response_headers),
                _ => (s.live.response_trailers, &mut s.response_trailers),
            };
            if s.live.in_log {
                if write {
                    return Err(Status::BadArgument);
                }
                return map.as_mut().map(f).ok_or(Status::NotFound);
            }
            if !live {
                return Err(Status::BadArgument);
            }
            Ok(f(map.get_or_insert_with(Headers::new)))
        }
    }
}

pub(crate) fn linker(
    engine: &Engine,
    module: &wasmtime::Module,
) -> Result<Linker<HostState>, crate::Error> {
    let mut l: Linker<HostState> = Linker::new(engine);
    define(&mut l).map_err(|e| crate::Error::Setup(format!("defining host functions: {e:#}")))?;
    // Imports the harness lacks become functions that trap naming the
    // import, so a module still loads and the test sees exactly what it used.
    for import in module.imports() {
        if is_provided(import.module(), import.name()) {
            continue;
        }
        if let wasmtime::ExternType::Func(ty) = import.ty() {
            let what = format!("{}.{}", import.module(), import.name());
            l.func_new(
                import.module(),
                import.name(),
                ty,
                move |_c, _args, _results| {
                    Err(wasmtime::Error::msg(format!(
                    "the guest called import `{what}`, which wasm-test-harness does not implement"
                )))
                },
            )
            .map_err(|e| crate::Error::Setup(format!("stubbing import: {e:#}")))?;
        } else {
            return Err(crate::Error::Setup(format!(
                "module imports non-function `{}.{}`; only function imports are supported",
                import.module(),
                import.name()
            )));
        }
    }
    Ok(l)
}

fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    // ---- logging, time, ticks --------------------------------------------
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, ptr: i32, len: i32| -> R {
            let Some(level) = LogLevel::from_raw(level) else {
                return st(Status::BadArgument);
            };
            let message = arg!(read_str(&c, ptr, len));
            let context_id = c.data().effective;
            c.data_mut().logs.push(LogRecord {
                level,
                message,
                context_id,
            });
            ok()
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> R {
            let level = c.data().log_level as u32;
            return_u32(&mut c, ret, level)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> R {
            let now = lock(&c.data().shared).now_unix_ns;
            return_u64(&mut c, ret, now)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> R {
            let now = lock(&c.data().shared).now_unix_ns;
            let h = c.data_mut();
            // The timer belongs to the root context whichever context sets it.
            h.tick_period_ms = period as u32;
            h.next_tick_ns = match period as u32 {
                0 => None,
                ms => Some(now + u64::from(ms) * 1_000_000),
            };
            ok()
        },
    )?;

    // ---- buffers -----------------------------------------------------------
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, t: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> R {
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            let buf: Vec<u8> = {
                let h = c.data_mut();
                match t {
                    buffer_type::HTTP_REQUEST_BODY | buffer_type::HTTP_RESPONSE_BODY => {
                        let req = t == buffer_type::HTTP_REQUEST_BODY;
                        match h.stream() {
                            Some(s) => {
                                let b = if req {
                                    &s.request_body
                                } else {
                                    &s.response_body
                                };
                                b.clone()
                            }
                            None => return st(Status::NotFound),
                        }
                    }
                    buffer_type::HTTP_CALL_RESPONSE_BODY | buffer_type::GRPC_RECEIVE_BUFFER => {
                        match &h.callout {
                            Some(d) => d.body.clone(),
                            None => return st(Status::NotFound),
                        }
                    }
                    buffer_type::VM_CONFIGURATION if h.phase == Phase::VmStart => {
                        h.vm_configuration.clone()
                    }
                    buffer_type::PLUGIN_CONFIGURATION if h.phase == Phase::Configure => {
                        h.plugin_configuration.clone()
                    }
                    0..=8 => return st(Status::NotFound),
                    _ => return st(Status::BadArgument),
                }
            };
            if start.checked_add(max).is_none() {
                return st(Status::BadArgument);
            }
            if start > buf.len() {
                // Envoy computes `size - start` unchecked here and then fails
                // on a huge allocation: make it the same kind of failure.
                return Err(wasmtime::Error::msg(format!(
                    "proxy_get_buffer_bytes: start {start} is beyond the buffer size {}",
                    buf.len()
                )));
            }
            let end = (start + max).min(buf.len());
            let slice = buf.get(start..end).unwrap_or_default().to_vec();
            copy_out(&mut c, &slice, ret_ptr, ret_size)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, t: i32, start: i32, size: i32, ptr: i32, len: i32| -> R {
            let data = arg!(read(&c, ptr, len));
            let (start, size) = (start as u32 as usize, size as u32 as usize);
            let h = c.data_mut();
            let buf = match t {
                buffer_type::HTTP_REQUEST_BODY | buffer_type::HTTP_RESPONSE_BODY => {
                    let req = t == buffer_type::HTTP_REQUEST_BODY;
                    match h.stream() {
                        Some(s) if req && s.live.request_body => &mut s.request_body,
                        Some(s) if !req && s.live.response_body => &mut s.response_body,
                        _ => return st(Status::NotFound),
                    }
                }
                0..=8 => return st(Status::BadArgument),
                _ => return st(Status::BadArgument),
            };
            // Envoy Buffer::copyFrom: start 0 drains `size` then prepends;
            // start at/after the end appends; anything else is refused.
            if start == 0 {
                let drain = size.min(buf.len());
                buf.drain(..drain);
                buf.splice(0..0, data);
            } else if start >= buf.len() {
                buf.extend_from_slice(&data);
            } else {
                return st(Status::BadArgument);
            }
            ok()
        },
    )?;

    // ---- header maps ---------------------------------------------------------
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, t: i32, ret_ptr: i32, ret_size: i32| -> R {
            // An unavailable map reads as empty (Envoy headerMapToPairs(nullptr)).
            let bytes = with_map(c.data_mut(), t, false, |m| m.encode())
                .unwrap_or_else(|_| Headers::new().encode());
            copy_out(&mut c, &bytes, ret_ptr, ret_size)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, t: i32, ptr: i32, len: i32| -> R {
            let raw = arg!(read(&c, ptr, len));
            let Some(pairs) = decode_pairs(&raw) else {
                return st(Status::SerializationFailure);
            };
            let new = Headers::from_bytes(&pairs);
            match with_map(c.data_mut(), t, true, |m| *m = new) {
                Ok(()) => ok(),
                Err(s) => st(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, t: i32, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            match with_map(c.data_mut(), t, false, |m| {
                m.get_bytes(&key).map(<[u8]>::to_vec)
            }) {
                Ok(Some(v)) => copy_out(&mut c, &v, ret_ptr, ret_size),
                Ok(None) => st(Status::NotFound),
                Err(s) => st(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C<'_>, t: i32, ret: i32| -> R {
            // Envoy answers byteSize(): total bytes of keys and values.
            let size = with_map(c.data_mut(), t, false, |m| {
                m.raw_pairs()
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
            });
            match size {
                Ok(n) => return_u32(&mut c, ret, n as u32),
                Err(s) => st(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            let value = arg!(read(&c, vp, vl));
            mutate_map(&mut c, t, |m| m.replace(&key, &value))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            let value = arg!(read(&c, vp, vl));
            mutate_map(&mut c, t, |m| m.add(&key, &value))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, t: i32, kp: i32, kl: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            mutate_map(&mut c, t, |m| m.remove(&key))
        },
    )?;

    // ---- properties ----------------------------------------------------------
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, pl: i32, ret_ptr: i32, ret_size: i32| -> R {
            let mut path = arg!(read(&c, pp, pl));
            if path.last() == Some(&0) {
                path.pop();
            }
            match crate::properties::lookup(c.data_mut(), &path) {
                Some(v) => copy_out(&mut c, &v, ret_ptr, ret_size),
                None => st(Status::NotFound),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> R {
            let mut path = arg!(read(&c, pp, pl));
            if path.last() == Some(&0) {
                path.pop();
            }
            let value = arg!(read(&c, vp, vl));
            // Envoy stores it as filter state `wasm.<path>`; needs a stream.
            match c.data_mut().stream() {
                Some(s) => {
                    s.filter_state.insert(path, value);
                    ok()
                }
                None => st(Status::NotFound),
            }
        },
    )?;

    // ---- shared data -----------------------------------------------------------
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32, cas_ptr: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            let found = {
                let h = c.data();
                let s = lock(&h.shared);
                s.shared_data
                    .get(&h.vm_id)
                    .and_then(|m| m.get(&key))
                    .cloned()
            };
            let Some((value, cas)) = found else {
                return st(Status::NotFound);
            };
            if !write_u32(&mut c, cas_ptr, cas) {
                return st(Status::InvalidMemoryAccess);
            }
            copy_out(&mut c, &value, ret_ptr, ret_size)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> R {
            let key = arg!(read_str(&c, kp, kl));
            let value = arg!(read(&c, vp, vl));
            let h = c.data();
            let mut s = lock(&h.shared);
            let next = s.next_cas();
            let map = s.shared_data.entry(h.vm_id.clone()).or_default();
            match map.get_mut(&key) {
                Some(entry) => {
                    if cas != 0 && cas as u32 != entry.1 {
                        return st(Status::CasMismatch);
                    }
                    *entry = (value, next);
                }
                None => {
                    map.insert(key, (value, next));
                }
            }
            ok()
        },
    )?;

    // ---- shared queues ---------------------------------------------------------
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, np: i32, nl: i32, ret: i32| -> R {
            let name = arg!(read_str(&c, np, nl));
            let token = {
                let h = c.data();
                let mut s = lock(&h.shared);
                let existing = s
                    .queues
                    .iter()
                    .find(|(_, q)| q.vm_id == h.vm_id && q.name == name)
                    .map(|(t, _)| *t);
                match existing {
                    Some(t) => {
                        // Re-registration moves notifications to this VM.
                        if let Some(q) = s.queues.get_mut(&t) {
                            q.owner_vm = h.vm_number;
                            q.owner_context = h.root_context;
                        }
                        t
                    }
                    None => {
                        let t = s.next_queue;
                        s.next_queue += 1;
                        s.queues.insert(
                            t,
                            Queue {
                                vm_id: h.vm_id.clone(),
                                name,
                                items: Default::default(),
                                owner_vm: h.vm_number,
                                owner_context: h.root_context,
                            },
                        );
                        t
                    }
                }
            };
            return_u32(&mut c, ret, token)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> R {
            let vm_id = arg!(read_str(&c, vp, vl));
            let name = arg!(read_str(&c, np, nl));
            let found = {
                let h = c.data();
                let vm_id = if vm_id.is_empty() {
                    h.vm_id.clone()
                } else {
                    vm_id
                };
                let s = lock(&h.shared);
                s.queues
                    .iter()
                    .find(|(_, q)| q.vm_id == vm_id && q.name == name)
                    .map(|(t, _)| *t)
            };
            match found {
                Some(t) => return_u32(&mut c, ret, t),
                None => st(Status::NotFound),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, token: i32, ret_ptr: i32, ret_size: i32| -> R {
            let item = {
                let mut s = lock(&c.data().shared);
                match s.queues.get_mut(&(token as u32)) {
                    None => return st(Status::NotFound),
                    Some(q) => match q.items.pop_front() {
                        None => return st(Status::Empty),
                        Some(item) => item,
                    },
                }
            };
            copy_out(&mut c, &item, ret_ptr, ret_size)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C<'_>, token: i32, vp: i32, vl: i32| -> R {
            let item = arg!(read(&c, vp, vl));
            let mut s = lock(&c.data().shared);
            if enqueue_locked(&mut s, token as u32, item) {
                ok()
            } else {
                st(Status::NotFound)
            }
        },
    )?;

    // ---- stream control, local replies ----------------------------------------------
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, t: i32| -> R {
            let Some(s) = c.data_mut().stream() else {
                return st(Status::BadArgument);
            };
            match t {
                stream_type::HTTP_REQUEST => {
                    s.request_resumed += 1;
                    s.live.request_headers = false;
                    s.live.request_trailers = false;
                    s.request_paused = false;
                    ok()
                }
                stream_type::HTTP_RESPONSE => {
                    s.response_resumed += 1;
                    s.live.response_headers = false;
                    s.live.response_trailers = false;
                    s.response_paused = false;
                    ok()
                }
                // No network filter callbacks in an HTTP context.
                stream_type::DOWNSTREAM => st(Status::BadArgument),
                stream_type::UPSTREAM => st(Status::Unimplemented),
                _ => st(Status::BadArgument),
            }
        },
    )?;
    l.func_wrap("env", "proxy_close_stream", |mut c: C<'_>, t: i32| -> R {
        let Some(s) = c.data_mut().stream() else {
            return st(Status::BadArgument);
        };
        match t {
            stream_type::HTTP_REQUEST | stream_type::HTTP_RESPONSE => {
                s.closed = true;
                ok()
            }
            // Connection-level close needs network filter callbacks, which
            // an HTTP context does not have (the SDK's close_downstream()
            // therefore panics in Envoy).
            _ => st(Status::BadArgument),
        }
    })?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         status: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         grpc: i32|
         -> R {
            let details = arg!(read_str(&c, dp, dl)).replace(' ', "_");
            let body = arg!(read(&c, bp, bl));
            let raw = arg!(read(&c, hp, hl));
            let Some(pairs) = decode_pairs(&raw) else {
                return st(Status::SerializationFailure);
            };
            // From a root context Envoy has no stream to answer: a no-op.
            let id = c.data().effective;
            if let Some(s) = c.data_mut().stream() {
                s.local_responses += 1;
                if s.local_response.is_none() {
                    s.local_response = Some(LocalResponse {
                        status: status as u32,
                        details,
                        headers: Headers::from_bytes(&pairs),
                        body,
                        grpc_status: (0..=16).contains(&grpc).then_some(grpc),
                    });
                    s.local_reply_pending = true;
                    c.data_mut().local_replies.push(id);
                }
            }
            ok()
        },
    )?;

    // ---- callouts --------------------------------------------------------------
    l.func_wrap(
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
            let (known, now) = {
                let s = lock(&c.data().shared);
                (s.clusters.contains(&cluster), s.now_unix_ns)
            };
            if !known {
                return st(Status::BadArgument);
            }
            let (Some(headers), Some(trailers)) = (decode_pairs(&headers), decode_pairs(&trailers))
            else {
                return st(Status::SerializationFailure);
            };
            let headers = Headers::from_bytes(&headers);
            if [":method", ":path", ":authority"]
                .iter()
                .any(|h| !headers.contains(h))
                || timeout < 0
            {
                return st(Status::BadArgument);
            }
            let h = c.data_mut();
            let token = h.new_token();
            let timeout_ms = u64::from(timeout as u32);
            h.http_calls.insert(
                token,
                HttpCall {
                    token,
                    context_id: h.effective,
                    cluster,
                    headers,
                    body,
                    trailers: Headers::from_bytes(&trailers),
                    timeout: std::time::Duration::from_millis(timeout_ms),
                    deadline_ns: if timeout_ms == 0 {
                        u64::MAX
                    } else {
                        now + timeout_ms * 1_000_000
                    },
                },
            );
            return_u32(&mut c, ret, token)
        },
    )?;
    l.func_wrap(
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
            let cluster = arg!(read_str(&c, up, ul));
            let service = arg!(read_str(&c, sp, sl));
            let method = arg!(read_str(&c, mp, ml));
            let metadata = arg!(read(&c, mdp, mdl));
            let message = arg!(read(&c, msgp, msgl));
            let (known, now) = {
                let s = lock(&c.data().shared);
                (s.clusters.contains(&cluster), s.now_unix_ns)
            };
            if !known {
                // Envoy answers ParseFailure here (its TODO says BadArgument).
                return st(Status::ParseFailure);
            }
            let Some(metadata) = decode_pairs(&metadata) else {
                return st(Status::SerializationFailure);
            };
            let h = c.data_mut();
            let token = h.new_token();
            let timeout_ms = u64::from(timeout as u32);
            h.grpc_calls.insert(
                token,
                GrpcCall {
                    token,
                    context_id: h.effective,
                    cluster,
                    service,
                    method,
                    initial_metadata: Headers::from_bytes(&metadata),
                    message,
                    timeout: std::time::Duration::from_millis(timeout_ms),
                    deadline_ns: if timeout_ms == 0 {
                        u64::MAX
                    } else {
                        now + timeout_ms * 1_000_000
                    },
                },
            );
            return_u32(&mut c, ret, token)
        },
    )?;
    l.func_wrap(
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
            let cluster = arg!(read_str(&c, up, ul));
            let service = arg!(read_str(&c, sp, sl));
            let method = arg!(read_str(&c, mp, ml));
            let metadata = arg!(read(&c, mdp, mdl));
            if !lock(&c.data().shared).clusters.contains(&cluster) {
                return st(Status::ParseFailure);
            }
            let Some(metadata) = decode_pairs(&metadata) else {
                return st(Status::SerializationFailure);
            };
            let h = c.data_mut();
            let token = h.new_token();
            h.grpc_streams.insert(
                token,
                GrpcStream {
                    token,
                    context_id: h.effective,
                    cluster,
                    service,
                    method,
                    initial_metadata: Headers::from_bytes(&metadata),
                    sent: Vec::new(),
                    local_closed: false,
                },
            );
            return_u32(&mut c, ret, token)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: C<'_>, token: i32, mp: i32, ml: i32, end: i32| -> R {
            let msg = arg!(read(&c, mp, ml));
            match c.data_mut().grpc_streams.get_mut(&(token as u32)) {
                Some(s) => {
                    s.sent.push(msg);
                    if end != 0 {
                        s.local_closed = true;
                    }
                    ok()
                }
                None => st(Status::NotFound),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut c: C<'_>, token: i32| -> R {
            let h = c.data_mut();
            let token = token as u32;
            if h.grpc_calls.remove(&token).is_some() || h.grpc_streams.remove(&token).is_some() {
                ok()
            } else {
                st(Status::NotFound)
            }
        },
    )?;
    l.func_wrap("env", "proxy_grpc_close", |mut c: C<'_>, token: i32| -> R {
        let h = c.data_mut();
        let token = token as u32;
        if let Some(s) = h.grpc_streams.get_mut(&token) {
            s.local_closed = true;
            ok()
        } else if h.grpc_calls.remove(&token).is_some() {
            ok()
        } else {
            st(Status::NotFound)
        }
    })?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C<'_>, code_ptr: i32, msg_ptr: i32, msg_size: i32| -> R {
            let (code, msg) = c.data().grpc_status.clone().unwrap_or((0, Vec::new()));
            if !write_u32(&mut c, code_ptr, code) {
                return st(Status::InvalidMemoryAccess);
            }
            copy_out(&mut c, &msg, msg_ptr, msg_size)
        },
    )?;

    // ---- contexts, foreign functions ---------------------------------------------
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, id: i32| -> R {
            let id = id as u32;
            let h = c.data_mut();
            if id == h.root_context || h.streams.contains_key(&id) {
                h.effective = id;
                ok()
            } else {
                st(Status::BadArgument)
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_c: C<'_>, _np: i32, _nl: i32, _ap: i32, _al: i32, _rp: i32, _rs: i32| -> R {
            st(Status::NotFound)
        },
    )?;
    l.func_wrap("env", "proxy_done", |mut c: C<'_>| -> R {
        c.data_mut().done_calls += 1;
        ok()
    })?;

    // ---- metrics ---------------------------------------------------------------
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, t: i32, np: i32, nl: i32, ret: i32| -> R {
            let Some(kind) = MetricType::from_raw(t) else {
                return st(Status::BadArgument);
            };
            let name = arg!(read_str(&c, np, nl));
            let id = {
                let h = c.data_mut();
                {
                    let mut s = lock(&h.shared);
                    let m = s.metrics.entry(name.clone()).or_default();
                    if m.kind.is_some_and(|k| k != kind) {
                        return st(Status::BadArgument);
                    }
                    m.kind = Some(kind);
                }
                match h.metric_ids.iter().position(|n| *n == name) {
                    Some(i) => i as u32 + 1,
                    None => {
                        h.metric_ids.push(name);
                        h.metric_ids.len() as u32
                    }
                }
            };
            return_u32(&mut c, ret, id)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> R {
            let value = match metric_op(c.data(), id, |m| match m.kind {
                Some(MetricType::Counter) => Ok(m.counter),
                Some(MetricType::Gauge) => Ok(m.gauge as u64),
                _ => Err(Status::BadArgument),
            }) {
                Ok(v) => v,
                Err(s) => return st(s),
            };
            return_u64(&mut c, ret, value)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> R {
            let r = metric_op(c.data(), id, |m| {
                match m.kind {
                    Some(MetricType::Counter) => m.counter = m.counter.wrapping_add(value as u64),
                    Some(MetricType::Gauge) => m.gauge = value,
                    Some(MetricType::Histogram) => m.histogram.push(value as u64),
                    None => return Err(Status::NotFound),
                }
                Ok(())
            });
            match r {
                Ok(()) => ok(),
                Err(s) => st(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, offset: i64| -> R {
            let r = metric_op(c.data(), id, |m| match m.kind {
                Some(MetricType::Counter) if offset > 0 => {
                    m.counter = m.counter.wrapping_add(offset as u64);
                    Ok(())
                }
                Some(MetricType::Gauge) => {
                    m.gauge = m.gauge.wrapping_add(offset);
                    Ok(())
                }
                _ => Err(Status::BadArgument),
            });
            match r {
                Ok(()) => ok(),
                Err(s) => st(s),
            }
        },
    )?;

    // ---- WASI preview1 -------------------------------------------------------------
    l.func_wrap(
        WASI_MODULE,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _precision: i64, ret: i32| -> R {
            let (now, start) = {
                let s = lock(&c.data().shared);
                (s.now_unix_ns, s.start_unix_ns)
            };
            let value = match id {
                0 => now,
                // Monotonic and CPU clocks: time since the harness started.
                1..=3 => now.saturating_sub(start),
                _ => return Ok(28), // EINVAL
            };
            if !write_u64(&mut c, ret, value) {
                return Ok(21); // EFAULT
            }
            Ok(0)
        },
    )?;
    l.func_wrap(
        WASI_MODULE,
        "random_get",
        |mut c: C<'_>, buf: i32, len: i32| -> R {
            let mut bytes = Vec::with_capacity(len as u32 as usize);
            while bytes.len() < len as u32 as usize {
                bytes.extend_from_slice(&c.data_mut().next_random().to_le_bytes());
            }
            bytes.truncate(len as u32 as usize);
            if !write(&mut c, buf, &bytes) {
                return Ok(21);
            }
            Ok(0)
        },
    )?;
    for (name, _) in [("environ_sizes_get", ()), ("args_sizes_get", ())] {
        l.func_wrap(
            WASI_MODULE,
            name,
            |mut c: C<'_>, count: i32, size: i32| -> R {
                if !write_u32(&mut c, count, 0) || !write_u32(&mut c, size, 0) {
                    return Ok(21);
                }
                Ok(0)
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        l.func_wrap(WASI_MODULE, name, |_c: C<'_>, _a: i32, _b: i32| -> R {
            Ok(0)
        })?;
    }
    l.func_wrap(
        WASI_MODULE,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| -> R {
            if fd != 1 && fd != 2 {
                return Ok(8); // EBADF
            }
            let mut out = Vec::new();
            for i in 0..iovs_len.max(0) {
                let Some(iov) = read(&c, iovs + i * 8, 8) else {
                    return Ok(21);
                };
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Some(bytes) = read(&c, ptr, len) else {
                    return Ok(21);
                };
                out.extend_from_slice(&bytes);
            }
            let n = out.len() as u32;
            if fd == 1 {
                c.data_mut().stdout.extend_from_slice(&out);
            } else {
                c.data_mut().stderr.extend_from_slice(&out);
            }
            if !write_u32(&mut c, nwritten, n) {
                return Ok(21);
            }
            Ok(0)
        },
    )?;
    l.func_wrap(
        WASI_MODULE,
        "proc_exit",
        |_c: C<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the guest called proc_exit({code})"
            )))
        },
    )?;
    l.func_wrap(WASI_MODULE, "sched_yield", |_c: C<'_>| -> R { Ok(0) })?;
    Ok(())
}

fn metric_op<T>(
    h: &HostState,
    id: i32,
    f: impl FnOnce(&mut Metric) -> Result<T, Status>,
) -> Result<T, Status> {
    let name = h
        .metric_ids
        .get((id as u32 as usize).wrapping_sub(1))
        .ok_or(Status::NotFound)?;
    let mut s = lock(&h.shared);
    let m = s.metrics.get_mut(name).ok_or(Status::NotFound)?;
    f(m)
}

/// Enqueue and schedule `on_queue_ready` for the registrant. False if the
/// queue does not exist.
pub(crate) fn enqueue_locked(s: &mut Shared, token: u32, item: Vec<u8>) -> bool {
    let Some(q) = s.queues.get_mut(&token) else {
        return false;
    };
    q.items.push_back(item);
    let note = (q.owner_vm, q.owner_context, token);
    s.queue_ready.push(note);
    true
}
