//! Guest memory access for the imports: bounds-checked reads and writes
//! (a bad guest pointer is InvalidMemoryAccess, never a host panic) and
//! handing data to the guest through its allocator.

use wasmtime::{Caller, Memory};

use super::{VmData, Window};
use crate::abi::Status;

pub(super) type C<'a> = Caller<'a, VmData>;
pub(super) type R = wasmtime::Result<i32>;

/// Returns InvalidMemoryAccess from the import when a read fails.
macro_rules! arg {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return $crate::imports::memory::st($crate::abi::Status::InvalidMemoryAccess),
        }
    };
}
pub(super) use arg;

pub(super) fn ok() -> R {
    Ok(Status::Ok as i32)
}

pub(super) fn st(s: Status) -> R {
    Ok(s as i32)
}

/// A unit host result as the guest's status word.
pub(super) fn status(r: Result<(), Status>) -> R {
    st(r.err().unwrap_or(Status::Ok))
}

fn memory(c: &C<'_>) -> wasmtime::Result<Memory> {
    c.data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("guest memory not available yet"))
}

/// Guest bytes `[ptr, ptr+len)`, or None when out of bounds.
pub(super) fn read(c: &C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = c.data().memory?;
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    mem.data(c).get(start..end).map(<[u8]>::to_vec)
}

pub(super) fn read_str(c: &C<'_>, ptr: i32, len: i32) -> Option<String> {
    read(c, ptr, len).map(|b| String::from_utf8_lossy(&b).into_owned())
}

pub(super) fn write(c: &mut C<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Ok(mem) = memory(c) else { return false };
    mem.write(c, ptr as u32 as usize, bytes).is_ok()
}

/// Stores a returned word for the guest: Ok, or InvalidMemoryAccess when
/// the guest's pointer is out of bounds.
pub(super) fn return_u32(c: &mut C<'_>, ptr: i32, v: u32) -> R {
    match write(c, ptr, &v.to_le_bytes()) {
        true => ok(),
        false => st(Status::InvalidMemoryAccess),
    }
}

pub(super) fn return_u64(c: &mut C<'_>, ptr: i32, v: u64) -> R {
    match write(c, ptr, &v.to_le_bytes()) {
        true => ok(),
        false => st(Status::InvalidMemoryAccess),
    }
}

/// Hands `data` to the guest: allocates with `proxy_on_memory_allocate`,
/// copies, and stores pointer and size. Empty data yields (0, 0), which the
/// SDK reads as `None` (cpp-host `copyToPointerSize`).
pub(super) fn copy_out(c: &mut C<'_>, data: &[u8], ptr_ptr: i32, size_ptr: i32) -> R {
    let mut ptr = 0u32;
    if !data.is_empty() {
        let alloc = c
            .data()
            .alloc
            .clone()
            .ok_or_else(|| wasmtime::Error::msg("guest allocator not available"))?;
        // Envoy restricts what the allocator may call (cpp-host allocMemory).
        let outer = c.data_mut().restricted.replace(Window::Alloc);
        c.data_mut().crossings.get_mut().allocations += 1;
        crate::crossings::trace(format_args!("alloc-in"), || c.get_fuel().unwrap_or(0));
        let allocated = alloc.call(&mut *c, data.len() as i32);
        crate::crossings::trace(format_args!("alloc-out"), || c.get_fuel().unwrap_or(0));
        c.data_mut().restricted = outer;
        ptr = allocated? as u32;
        if ptr == 0 || !write(c, ptr as i32, data) {
            return st(Status::InvalidMemoryAccess);
        }
    }
    let size = (data.len() as u32).to_le_bytes();
    if !write(c, ptr_ptr, &ptr.to_le_bytes()) || !write(c, size_ptr, &size) {
        return st(Status::InvalidMemoryAccess);
    }
    ok()
}

/// `copy_out` for a host result that may be a status instead.
pub(super) fn return_bytes(
    c: &mut C<'_>,
    r: Result<Vec<u8>, Status>,
    ptr_ptr: i32,
    size_ptr: i32,
) -> R {
    match r {
        Ok(data) => copy_out(c, &data, ptr_ptr, size_ptr),
        Err(s) => st(s),
    }
}
