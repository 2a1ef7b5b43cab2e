//! Crossings of the VM boundary, counted per VM: what a filter costs Envoy
//! beyond its own instructions. In Envoy's V8 runtime each callback the
//! host makes into the guest, each host call the guest makes, and each
//! guest allocation the host makes to hand data over costs far more than
//! a guest instruction, so the bench reports them per request beside the
//! instruction count (`tests/src/fuel.rs`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// With `MESHGUARD_FUEL_TRACE` set, every crossing prints `TRACE <what>
/// <fuel left>` to stderr: callbacks on entry (`>proxy_on_…`) and exit
/// (`<proxy_on_…`), host calls by import, and the host's allocations in the
/// guest (`alloc-in`, `alloc-out`). Consecutive lines' difference is the
/// guest instructions between two crossings: where a path's cost goes
/// (`MESHGUARD_FUEL_TRACE=1 cargo bench -p meshguard-e2e --bench fuel --
/// ratelimit 2>trace.txt`).
pub(crate) fn trace(what: std::fmt::Arguments<'_>, fuel_left: impl FnOnce() -> u64) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("MESHGUARD_FUEL_TRACE").is_some()) {
        eprintln!("TRACE {what} {}", fuel_left());
    }
}

/// Counts since the VM started; take two and subtract ([`Crossings::since`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Crossings {
    /// Guest exports the host called (`proxy_on_*` callbacks, `_initialize`;
    /// not the allocator). Callbacks the module does not export are not
    /// called, as in Envoy.
    pub callbacks: u64,
    /// Host functions the guest called (`env.proxy_*` and WASI).
    pub host_calls: u64,
    /// `proxy_on_memory_allocate` calls the host made to hand the guest
    /// data (a header map, a property, a shared-data value): a VM entry
    /// within a host call.
    pub allocations: u64,
    /// Host calls by import (`proxy_get_header_map_pairs`, ...), WASI ones
    /// prefixed `wasi:`.
    pub by_import: BTreeMap<&'static str, u64>,
}

impl Crossings {
    pub(crate) fn count_import(&mut self, module: &'static str, name: &'static str) {
        self.host_calls += 1;
        let key = if module == "env" {
            name
        } else {
            wasi_key(name)
        };
        *self.by_import.entry(key).or_insert(0) += 1;
    }

    /// What happened between `earlier` and `self` (both from one VM).
    pub fn since(&self, earlier: &Crossings) -> Crossings {
        let by_import = self
            .by_import
            .iter()
            .filter_map(|(k, &n)| {
                let d = n.saturating_sub(earlier.by_import.get(k).copied().unwrap_or(0));
                (d > 0).then_some((*k, d))
            })
            .collect();
        Crossings {
            callbacks: self.callbacks.saturating_sub(earlier.callbacks),
            host_calls: self.host_calls.saturating_sub(earlier.host_calls),
            allocations: self.allocations.saturating_sub(earlier.allocations),
            by_import,
        }
    }

    /// Every entry into or out of the guest: callbacks, host calls and
    /// allocations.
    pub fn total(&self) -> u64 {
        self.callbacks + self.host_calls + self.allocations
    }
}

/// WASI import names carry their module in the key (`wasi:fd_write`).
fn wasi_key(name: &'static str) -> &'static str {
    match name {
        "fd_write" => "wasi:fd_write",
        "clock_time_get" => "wasi:clock_time_get",
        "random_get" => "wasi:random_get",
        "environ_sizes_get" => "wasi:environ_sizes_get",
        "environ_get" => "wasi:environ_get",
        "args_sizes_get" => "wasi:args_sizes_get",
        "args_get" => "wasi:args_get",
        "proc_exit" => "wasi:proc_exit",
        "sched_yield" => "wasi:sched_yield",
        _ => "wasi:other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_subtracts_per_import_and_drops_unchanged_ones() {
        let mut a = Crossings::default();
        a.count_import("env", "proxy_log");
        a.callbacks = 2;
        let mut b = a.clone();
        b.count_import("env", "proxy_log");
        b.count_import("env", "proxy_get_header_map_pairs");
        b.count_import("wasi_snapshot_preview1", "clock_time_get");
        b.callbacks = 5;
        b.allocations = 1;
        let d = b.since(&a);
        assert_eq!(d.callbacks, 3);
        assert_eq!(d.host_calls, 3);
        assert_eq!(d.allocations, 1);
        assert_eq!(d.total(), 7);
        assert_eq!(d.by_import.get("proxy_log"), Some(&1));
        assert_eq!(d.by_import.get("proxy_get_header_map_pairs"), Some(&1));
        assert_eq!(d.by_import.get("wasi:clock_time_get"), Some(&1));
        assert_eq!(a.since(&a), Crossings::default());
    }
}
