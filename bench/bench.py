#!/usr/bin/env python3
"""meshguard benchmarks: wrk against Envoy (1 worker) serving a
direct_response, with and without filters, measured in the same run.

    make bench                      # or: python3 bench/bench.py [--duration 5] [--rounds 3]

Every configuration is started fresh in every round (rounds interleave
configurations, so drift on the machine hits all of them alike). Results:
median over rounds of req/s, p50 and p99, and the ratio to "no filter" from
the same run. With 16 connections the single worker is CPU-bound, so
1/rps - 1/rps(no filter) is the CPU cost the filter adds per request.

Writes target/bench/results.md and, with --update, the marked section of
BENCHMARKS.md. Everything binds to 127.0.0.1 and stops by itself.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv/bin/envoy"))
OUT_DIR = os.path.join(ROOT, "target/bench")

# The plugin config the benchmark runs: one experiment keyed by a header.
AB_CONFIG = {
    "experiments": [
        {
            "name": "checkout",
            "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}],
            "sticky_key": [{"header": "x-user-id"}, "visitor_cookie"],
        }
    ]
}

# Lua doing the same job as closely as Lua can: strip the client's variant
# header, hash the user id, set the variant.
LUA_AB = r"""
function envoy_on_request(handle)
  local h = handle:headers()
  h:remove("x-ab-variant")
  local key = h:get("x-user-id")
  if key == nil then return end
  local hash = 0
  local s = "checkout:" .. key
  for i = 1, #s do
    hash = (hash * 31 + s:byte(i)) % 4294967296
  end
  if hash % 10000 < 5000 then h:add("x-ab-variant", "control") else h:add("x-ab-variant", "treatment") end
end
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wasm_filter(name, root_id, path, config):
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": root_id,
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": root_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": path}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": json.dumps(config),
                },
            },
        },
    }


def filters_for(kind):
    if kind == "no filter":
        return []
    if kind == "native header_mutation":
        return [{
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": [
                    {"remove": "x-ab-variant"},
                    {"append": {"header": {"key": "x-ab-variant", "value": "control"},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}},
                ]},
            },
        }]
    if kind == "lua (same job)":
        return [{
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": LUA_AB},
            },
        }]
    if kind == "wasm no-op (Rust SDK)":
        return [wasm_filter("noop", "noop", os.path.join(ROOT, "target/fixtures/noop-filter.wasm"), {})]
    if kind == "meshguard ab-routing (wasm)":
        return [wasm_filter("meshguard.ab_routing", "ab_routing",
                            os.path.join(ROOT, "dist/ab-routing.wasm"), AB_CONFIG)]
    raise ValueError(kind)


def envoy_config(kind, port, admin):
    router = {"name": "envoy.filters.http.router",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "name": "bench",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "bench",
                    "route_config": {"virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"},
                                    "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}],
                    }]},
                    "http_filters": filters_for(kind) + [router],
                },
            }]}],
        }]},
    }


class Envoy:
    def __init__(self, kind, workdir):
        self.port, self.admin = free_port(), free_port()
        self.cfg = os.path.join(workdir, re.sub(r"\W+", "_", kind) + ".json")
        with open(self.cfg, "w") as f:
            json.dump(envoy_config(kind, self.port, self.admin), f)
        self.log = open(self.cfg + ".log", "w")
        self.proc = subprocess.Popen(
            [ENVOY, "-c", self.cfg, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"envoy ({kind}) exited; see {self.cfg}.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"envoy ({kind}) not ready; see {self.cfg}.log")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


UNIT = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_latency(text, pct):
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * UNIT[m.group(2)] if m else float("nan")


def wrk(port, conns, duration):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
           "-H", "x-user-id: user-42", "-H", "x-ab-variant: forged",
           f"http://127.0.0.1:{port}/checkout"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rps or errors:
        raise SystemExit(f"wrk failed or saw errors:\n{out}")
    return {"rps": float(rps.group(1)), "p50": parse_latency(out, 50), "p99": parse_latency(out, 99)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", default="1,16")
    ap.add_argument("--update", action="store_true", help="rewrite the results section in BENCHMARKS.md")
    args = ap.parse_args()
    for tool in ("wrk",):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install -y wrk")
    if not os.path.exists(ENVOY):
        raise SystemExit(f"Envoy not found at {ENVOY}: run `make venv`")
    for f in ("dist/ab-routing.wasm", "target/fixtures/noop-filter.wasm"):
        if not os.path.exists(os.path.join(ROOT, f)):
            raise SystemExit(f"{f} missing: run `make build build-fixtures`")

    kinds = ["no filter", "native header_mutation", "lua (same job)", "wasm no-op (Rust SDK)",
             "meshguard ab-routing (wasm)"]
    conns = [int(c) for c in args.connections.split(",")]
    os.makedirs(OUT_DIR, exist_ok=True)
    results = {(k, c): [] for k in kinds for c in conns}
    for rnd in range(1, args.rounds + 1):
        for kind in kinds:
            envoy = Envoy(kind, OUT_DIR)
            try:
                wrk(envoy.port, 16, 1)  # warm-up: VM start, connection setup
                for c in conns:
                    r = wrk(envoy.port, c, args.duration)
                    results[(kind, c)].append(r)
                    print(f"round {rnd} {kind:30s} c={c:<3d} {r['rps']:10.0f} req/s  "
                          f"p50 {r['p50']:7.0f} us  p99 {r['p99']:7.0f} us", flush=True)
            finally:
                envoy.stop()

    med = {key: {m: statistics.median(r[m] for r in runs) for m in ("rps", "p50", "p99")}
           for key, runs in results.items()}
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    envoy_version = subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout.split("version:")[-1].strip()
    lines = [
        f"Command: `make bench` (`python3 bench/bench.py --duration {args.duration} --rounds {args.rounds}`), "
        f"{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores; Envoy {envoy_version.split('/')[1] if '/' in envoy_version else envoy_version}, "
        f"1 worker, direct_response; wrk 1 thread; median of {args.rounds} rounds.",
        "",
        "| filter | conns | req/s | ratio to no filter | p50 µs | p99 µs | added CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in conns:
        base = med[("no filter", c)]
        for k in kinds:
            m = med[(k, c)]
            added = (1e6 / m["rps"] - 1e6 / base["rps"]) if c >= 16 else None
            lines.append(
                f"| {k} | {c} | {m['rps']:.0f} | {m['rps'] / base['rps']:.2f} | {m['p50']:.0f} | {m['p99']:.0f} | "
                + (f"{added:.1f}" if added is not None else "–") + " |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(OUT_DIR, "results.md"), "w") as f:
        f.write(table)
    print()
    print(table)
    harness = harness_bench()
    print(harness)
    if args.update:
        update_section("make bench", table)
        update_section("harness bench", harness)
        print("updated BENCHMARKS.md")


def harness_bench():
    """One request cycle of ab-routing in wasm-test-harness (release build):
    wall-clock and guest instructions (fuel)."""
    cmd = ["cargo", "bench", "-q", "-p", "wasm-test-harness", "--bench", "request_cycle"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"harness bench failed:\n{out.stderr}")
    table = "\n".join(l for l in out.stdout.splitlines() if l.startswith("|"))
    return (f"Command: `make bench` (`{' '.join(cmd)}`), {time.strftime('%Y-%m-%d')}; "
            "50 000 cycles after 5 000 warm-up, fuel averaged over 100 cycles.\n\n" + table + "\n")


def update_section(name, body):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read()
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin not in text or end not in text:
        raise SystemExit(f"BENCHMARKS.md lacks the {name} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + body + end + tail)


if __name__ == "__main__":
    main()
