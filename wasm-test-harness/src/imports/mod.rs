//! The proxy-wasm ABI 0.2.1 imports the Rust SDK 0.2.x uses, plus the WASI
//! preview1 calls such modules make. Like proxy-wasm-cpp-host's
//! `exports.cc`, each import does one thing: read its arguments from guest
//! memory, call one method of the host state (`crate::state`), write the
//! result back. Semantics (status codes, phase rules) live in the state
//! layer and follow Envoy (source/extensions/common/wasm/context.cc).

mod buffers;
mod callouts;
mod headers;
mod memory;
mod metrics;
mod misc;
mod restrict;
mod shared;
mod wasi;

use wasmtime::{Engine, Linker, Memory, TypedFunc};

use crate::state::host::Host;
pub(crate) use restrict::Window;

/// What a wasmtime store holds for one VM: the host state, the guest's
/// memory and allocator once instantiated, and the window (if any) in
/// which Envoy restricts host calls.
pub(crate) struct VmData {
    pub host: Host,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    pub restricted: Option<Window>,
    /// Every crossing of the VM boundary so far (`Vm::crossings`).
    pub crossings: std::cell::RefCell<crate::Crossings>,
}

pub(crate) const WASI_MODULE: &str = "wasi_snapshot_preview1";

const ENV_GROUPS: &[&[&str]] = &[
    buffers::NAMES,
    callouts::NAMES,
    headers::NAMES,
    metrics::NAMES,
    misc::NAMES,
    shared::NAMES,
];

pub(crate) fn is_provided(module: &str, name: &str) -> bool {
    match module {
        "env" => ENV_GROUPS.iter().any(|g| g.contains(&name)),
        WASI_MODULE => wasi::NAMES.contains(&name),
        _ => false,
    }
}

pub(crate) fn linker(
    engine: &Engine,
    module: &wasmtime::Module,
) -> Result<Linker<VmData>, crate::Error> {
    let mut l: Linker<VmData> = Linker::new(engine);
    let defined = buffers::define(&mut l)
        .and_then(|_| callouts::define(&mut l))
        .and_then(|_| headers::define(&mut l))
        .and_then(|_| metrics::define(&mut l))
        .and_then(|_| misc::define(&mut l))
        .and_then(|_| shared::define(&mut l))
        .and_then(|_| wasi::define(&mut l));
    defined.map_err(|e| crate::Error::Setup(format!("defining host functions: {e:#}")))?;
    // Imports the harness lacks become functions that trap naming the
    // import, so a module still loads and the test sees exactly what it used.
    for import in module.imports() {
        if is_provided(import.module(), import.name()) {
            continue;
        }
        let wasmtime::ExternType::Func(ty) = import.ty() else {
            return Err(crate::Error::Setup(format!(
                "module imports non-function `{}.{}`; only function imports are supported",
                import.module(),
                import.name()
            )));
        };
        let (module_name, name) = (import.module().to_string(), import.name().to_string());
        l.func_new(
            import.module(),
            import.name(),
            ty,
            move |c: wasmtime::Caller<'_, VmData>, _args, _results| {
                // Envoy checks the restriction before anything else.
                restrict::check(&c, &module_name, &name)?;
                Err(wasmtime::Error::msg(format!(
                    "the guest called import `{module_name}.{name}`, which wasm-test-harness does not implement"
                )))
            },
        )
        .map_err(|e| crate::Error::Setup(format!("stubbing import: {e:#}")))?;
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_provided_once() {
        let mut all: Vec<&str> = ENV_GROUPS.iter().flat_map(|g| g.iter().copied()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "an import is listed in two groups");
        assert!(is_provided("env", "proxy_log"));
        assert!(is_provided(WASI_MODULE, "fd_write"));
        assert!(!is_provided("env", "proxy_nope"));
        assert!(!is_provided("other", "proxy_log"));
    }
}
