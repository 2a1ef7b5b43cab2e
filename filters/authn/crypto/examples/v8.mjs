// Runs examples/bench.rs (built for wasm32-wasip1) in node's V8, the engine Envoy
// embeds, and prints the fastest µs per iteration for each bench.begin/bench.end pair.
//   node filters/authn/crypto/examples/v8.mjs path/to/bench.wasm
import fs from "node:fs";
const module = new WebAssembly.Module(fs.readFileSync(process.argv[2]));
let mem, t0, seed = 1;
const results = new Map();
const u8 = () => new Uint8Array(mem.buffer);
const dv = () => new DataView(mem.buffer);
const wasi = {
  fd_write(fd, iov, n, out) {
    let total = 0;
    for (let i = 0; i < n; i++) {
      const p = dv().getUint32(iov + 8 * i, true), l = dv().getUint32(iov + 8 * i + 4, true);
      process.stdout.write(Buffer.from(u8().subarray(p, p + l)));
      total += l;
    }
    dv().setUint32(out, total, true);
    return 0;
  },
  random_get(p, l) {
    const m = u8();
    for (let i = 0; i < l; i++) { seed = (seed * 1103515245 + 12345) >>> 0; m[p + i] = seed >>> 24; }
    return 0;
  },
  proc_exit(code) { throw new Error(`exit ${code}`); },
  environ_sizes_get(a, b) { dv().setUint32(a, 0, true); dv().setUint32(b, 0, true); return 0; },
  args_sizes_get(a, b) { dv().setUint32(a, 0, true); dv().setUint32(b, 0, true); return 0; },
};
const imports = { wasi_snapshot_preview1: {}, bench: {
  begin() { t0 = process.hrtime.bigint(); },
  end(p, l, iters) {
    const us = Number(process.hrtime.bigint() - t0) / 1000 / iters;
    const label = Buffer.from(u8().subarray(p, p + l)).toString();
    results.set(label, Math.min(results.get(label) ?? Infinity, us));
  },
} };
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === "wasi_snapshot_preview1") {
    imports.wasi_snapshot_preview1[imp.name] = wasi[imp.name] ?? (() => 0);
  }
}
const instance = new WebAssembly.Instance(module, imports);
mem = instance.exports.memory;
try { instance.exports._start(); } catch (e) { if (e.message !== "exit 0") throw e; }
for (const [label, us] of results) console.log(`${label.padEnd(28)} ${us.toFixed(1).padStart(10)} µs`);
