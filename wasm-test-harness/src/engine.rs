//! wasmtime engines and compiled modules, shared by the whole test binary:
//! one engine per fuel setting (each with a ticker thread so a guest stuck
//! in a loop is interrupted), each module file compiled once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::error::Error;

/// Epoch ticks per second of the background ticker that bounds guest calls.
pub(crate) const EPOCH_TICKS_PER_SEC: u64 = 100;

/// A compiled module, shareable between harnesses and VMs.
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: wasmtime::Module,
    pub(crate) fuel: bool,
    pub(crate) name: String,
}

impl Module {
    /// The module's imports that the harness does not provide (calling one
    /// traps with an error naming it).
    pub fn unknown_imports(&self) -> Vec<String> {
        self.inner
            .imports()
            .filter(|i| !crate::imports::is_provided(i.module(), i.name()))
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

pub(crate) fn engine(fuel: bool) -> Result<&'static wasmtime::Engine, Error> {
    static PLAIN: OnceLock<Result<wasmtime::Engine, String>> = OnceLock::new();
    static FUEL: OnceLock<Result<wasmtime::Engine, String>> = OnceLock::new();
    let cell = if fuel { &FUEL } else { &PLAIN };
    cell.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(20));
        let engine = wasmtime::Engine::new(&config).map_err(|e| e.to_string())?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("wasm-test-harness-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(1000 / EPOCH_TICKS_PER_SEC));
                ticker.increment_epoch();
            })
            .map_err(|e| e.to_string())?;
        Ok(engine)
    })
    .as_ref()
    .map_err(|e| Error::Setup(format!("cannot create wasmtime engine: {e}")))
}

/// Compiles `bytes` (binary or WAT text).
pub(crate) fn compile(bytes: &[u8], name: &str, fuel: bool) -> Result<Module, Error> {
    let inner = wasmtime::Module::new(engine(fuel)?, bytes)
        .map_err(|e| Error::Setup(format!("cannot compile {name}: {e:#}")))?;
    Ok(Module {
        inner,
        fuel,
        name: name.to_string(),
    })
}

/// Loads and compiles a `.wasm` file, once per (path, fuel) per test binary.
pub(crate) fn load(path: &Path, fuel: bool) -> Result<Module, Error> {
    static CACHE: OnceLock<Mutex<HashMap<(PathBuf, bool), Module>>> = OnceLock::new();
    let canonical = path
        .canonicalize()
        .map_err(|e| Error::Setup(format!("cannot open wasm module {}: {e}", path.display())))?;
    let key = (canonical.clone(), fuel);
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if let Some(m) = cache.get(&key) {
        return Ok(m.clone());
    }
    let bytes = std::fs::read(&canonical)
        .map_err(|e| Error::Setup(format!("cannot read {}: {e}", canonical.display())))?;
    let module = compile(&bytes, &canonical.display().to_string(), fuel)?;
    cache.insert(key, module.clone());
    Ok(module)
}
