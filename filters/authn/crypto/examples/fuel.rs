//! Runs `examples/bench.rs` built for wasm32-wasip1 under wasmtime (the harness's
//! version) with fuel on, and prints guest instructions and wall time per iteration
//! between each `bench.begin` / `bench.end` pair. WASI imports are stubs: the guest only
//! needs stdout, randomness (jsonwebtoken's PSS signing in the setup) and exit.
//!
//! `cargo run -p meshguard-authn-crypto --example fuel -- path/to/bench.wasm`

// Benchmark tool, not filter code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_family = "wasm")]
fn main() {}

#[cfg(not(target_family = "wasm"))]
fn main() -> wasmtime::Result<()> {
    host::run()
}

#[cfg(not(target_family = "wasm"))]
mod host {
    use std::time::Instant;
    use wasmtime::{Caller, Config, Engine, Extern, Linker, Module, Store, Val};

    #[derive(Default)]
    struct St {
        start: Option<(u64, Instant)>,
        seed: u64,
        /// Label → (instructions per iteration, fastest µs per iteration), in order.
        results: Vec<(String, u64, f64)>,
    }

    const FUEL: u64 = u64::MAX / 2;

    fn mem<'a>(c: &'a mut Caller<'_, St>) -> (&'a mut [u8], &'a mut St) {
        let Some(Extern::Memory(m)) = c.get_export("memory") else {
            panic!("no memory export")
        };
        m.data_and_store_mut(c)
    }

    fn u32_at(m: &[u8], p: usize) -> usize {
        u32::from_le_bytes(m[p..p + 4].try_into().unwrap()) as usize
    }

    pub fn run() -> wasmtime::Result<()> {
        let path = std::env::args().nth(1).expect("usage: fuel <bench.wasm>");
        let mut cfg = Config::new();
        cfg.consume_fuel(true);
        let engine = Engine::new(&cfg)?;
        let module = Module::from_file(&engine, &path)?;
        let mut linker: Linker<St> = Linker::new(&engine);
        linker.func_wrap("bench", "begin", |mut c: Caller<'_, St>| {
            let fuel = c.get_fuel().unwrap();
            c.data_mut().start = Some((fuel, Instant::now()));
        })?;
        linker.func_wrap(
            "bench",
            "end",
            |mut c: Caller<'_, St>, p: u32, l: u32, iters: u32| {
                let (fuel, t) = (c.get_fuel().unwrap(), Instant::now());
                let (m, st) = mem(&mut c);
                let label = String::from_utf8_lossy(&m[p as usize..(p + l) as usize]).to_string();
                let (f0, t0) = st.start.take().unwrap();
                let per = (f0 - fuel) / u64::from(iters);
                let us = (t - t0).as_secs_f64() * 1e6 / f64::from(iters);
                match st.results.iter_mut().find(|r| r.0 == label) {
                    Some(r) => r.2 = r.2.min(us),
                    None => st.results.push((label, per, us)),
                }
            },
        )?;
        let wasi = "wasi_snapshot_preview1";
        linker.func_wrap(
            wasi,
            "fd_write",
            |mut c: Caller<'_, St>, _fd: i32, iov: i32, n: i32, out: i32| -> i32 {
                let (m, _) = mem(&mut c);
                let mut total = 0;
                for i in 0..n as usize {
                    let base = iov as usize + 8 * i;
                    let (p, l) = (u32_at(m, base), u32_at(m, base + 4));
                    print!("{}", String::from_utf8_lossy(&m[p..p + l]));
                    total += l;
                }
                m[out as usize..out as usize + 4].copy_from_slice(&(total as u32).to_le_bytes());
                0
            },
        )?;
        linker.func_wrap(
            wasi,
            "random_get",
            |mut c: Caller<'_, St>, p: i32, l: i32| -> i32 {
                let (m, st) = mem(&mut c);
                for b in &mut m[p as usize..(p + l) as usize] {
                    st.seed = st
                        .seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    *b = (st.seed >> 33) as u8;
                }
                0
            },
        )?;
        linker.func_wrap(wasi, "proc_exit", |code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!("exit {code}")))
        })?;
        for (name, _) in [("environ_sizes_get", ()), ("args_sizes_get", ())] {
            linker.func_wrap(wasi, name, |mut c: Caller<'_, St>, a: i32, b: i32| -> i32 {
                let (m, _) = mem(&mut c);
                m[a as usize..a as usize + 4].fill(0);
                m[b as usize..b as usize + 4].fill(0);
                0
            })?;
        }
        // Anything else the module imports from WASI: succeed and do nothing.
        for imp in module.imports() {
            let defined = [
                "fd_write",
                "random_get",
                "proc_exit",
                "environ_sizes_get",
                "args_sizes_get",
            ];
            if imp.module() == wasi && !defined.contains(&imp.name()) {
                let ty = imp.ty().func().cloned().unwrap();
                linker.func_new(wasi, imp.name(), ty, |_, _, res: &mut [Val]| {
                    for r in res {
                        *r = Val::I32(0);
                    }
                    Ok(())
                })?;
            }
        }
        let mut store = Store::new(&engine, St::default());
        store.set_fuel(FUEL)?;
        let instance = linker.instantiate(&mut store, &module)?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        match start.call(&mut store, ()) {
            Ok(()) => {}
            Err(e) if e.to_string() == "exit 0" => {}
            Err(e) => return Err(e),
        }
        println!("{:<28} {:>12} {:>10}", "", "instr/iter", "µs/iter");
        for (label, per, us) in &store.data().results {
            println!("{label:<28} {per:>12} {us:>10.1}");
        }
        Ok(())
    }
}
