#!/usr/bin/env python3
"""meshguard benchmarks: what a filter costs Envoy, measured so that a second
machine (or a busy one) gets the same answer.

    make bench                       # all variants
    make bench FILTER=ab-routing     # the baselines plus one filter's variants
    python3 bench/bench.py [--rounds 12] [--duration 2] [--filter NAME] [--update] [--check]

Method (see BENCHMARKS.md):
- Envoy (1 worker) serves a direct_response, so the proxy is the whole cost.
  It runs pinned to CPU 0 (`taskset -c 0`), wrk to CPU 1, where there are
  two or more cores.
- The headline figure is Envoy's own CPU time per request: utime + stime of
  the Envoy process from /proc/<pid>/stat over one wrk run, divided by the
  exact number of requests Envoy counted in that run (its
  `downstream_rq_total` counter, read before and after), minus the same
  figure for "no filter" from the same round. Unlike req/s it does not
  depend on how much CPU time other work leaves to Envoy; but other work
  on the machine still makes each request cost more (cold caches), and on a
  shared machine that varies from one second to the next.
- So the CPU figures come from side-by-side runs: every variant's Envoy at
  the same time, all on Envoy's core, each loaded by its own wrk, so the
  machine's load in that moment hits every variant alike. It scales them
  alike too, so the per-round CPU ratio to no filter is what stays put;
  added CPU is reported as (ratio - 1) x the run's median no-filter CPU. req/s, latency and the throughput ratio come from
  runs of one variant at a time (Envoy alone on its core), interleaved
  round by round (A B C A B C ...).
- Every variant's Envoy starts once; every figure is the median over rounds
  with its spread (min-max); ratios and added CPU are taken per round. A
  difference smaller than its spread is marked "within noise".
- How much of Envoy's core other processes took (from /proc/stat) is
  reported with the results.
- Then the harness figures: wall time per request cycle in
  wasm-test-harness, and guest instructions per request (wasmtime fuel) for
  every filter path, against the budget in bench/fuel-budget.json.

Writes target/bench/results.md and results.json; --update also rewrites the
marked sections of BENCHMARKS.md and bench/results.json (the documented run);
--check compares this run with bench/results.json: does every ratio and
added-CPU median land inside the documented spread?

Everything binds to 127.0.0.1; servers start detached and stop by PID; the
run stops by itself.
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
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv/bin/envoy"))
OUT_DIR = os.path.join(ROOT, "target/bench")
DOCUMENTED = os.path.join(ROOT, "bench/results.json")

# The plugin config the benchmark runs: one experiment keyed by a header
# (the same as AB_BENCH_CONFIG in tests/src/fuel.rs).
AB_CONFIG = {
    "experiments": [
        {
            "name": "checkout",
            "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}],
            "sticky_key": [{"header": "x-user-id"}, "visitor_cookie"],
        }
    ]
}

# Every request: a user id and a forged variant header, so a filter doing
# ab-routing's job strips and sets a header on every request.
REQUEST_HEADERS = ["x-user-id: user-42", "x-ab-variant: forged"]
REQUEST_PATH = "/checkout"

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


# accesslog: the demo's record (tags, query redaction, header allow-list),
# every request logged as a line. At `warn`, because the bench runs Envoy at
# --log-level warn (as Istio sidecars do); the same config is
# AL_BENCH_CONFIG in tests/src/fuel.rs apart from the level and
# `facts_from_filter_state` (the fuel path reads all three facts: 14
# property reads per record against 11 here).
AL_CONFIG = {
    "tags": {"environment": "test", "cluster": "local", "namespace": "demo", "workload": "envoy"},
    "query": {"mode": "redact", "redact_params": ["token", "password"]},
    "headers": {"request": ["x-tenant", "authorization", "x-user-id"],
                "response": ["content-type", "set-cookie"]},
    "sampling": {"success_rate": 1.0, "exclude_paths": ["/healthz", "/internal/*"]},
    "log_line": {"level": "warn"},
    # No other meshguard module runs in the bench, so none of the facts
    # they publish is looked up (the row "3 filter-state reads" does).
    "facts_from_filter_state": [],
}

# Envoy's own JSON access log with the same fields (typed json_format), to
# a file: the baseline the accesslog filter is measured against.
NATIVE_JSON_FORMAT = {
    "schema": "meshguard.access.v1",
    "timestamp": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "environment": "test", "cluster": "local", "namespace": "demo", "workload": "envoy",
    "request_id": "%REQ(X-REQUEST-ID)%", "trace_id": "%REQ(TRACEPARENT)%",
    "method": "%REQ(:METHOD)%", "authority": "%REQ(:AUTHORITY)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%", "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%", "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "upstream_host": "%UPSTREAM_HOST%", "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "downstream_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "user_agent": "%REQ(USER-AGENT)%", "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "request_headers": {"x-tenant": "%REQ(X-TENANT)%", "x-user-id": "%REQ(X-USER-ID)%"},
    "response_headers": {"content-type": "%RESP(CONTENT-TYPE)%"},
}


# Envoy logs (and the native access log) are emptied between runs past this.
LOG_KEEP = 16 << 20


def handoff_check(envoy):
    """Records the handoff experiment's batches received against requests
    served: every record must arrive (the fixture counts in hundreds)."""
    time.sleep(0.5)  # a queue drained on the consumer's next event-loop turn
    text = envoy.admin_get("/stats?filter=handoff_records_received")
    m = re.search(r"handoff_records_received: (\d+)", text)
    received = int(m.group(1)) if m else 0
    served = envoy.requests_served()
    if received < served - 100 * 2 or received > served:
        raise SystemExit(f"handoff experiment: {received} records received of {served} served")
    return f"{received} records received of {served} requests served (counted per hundred)"


def native_json_access_log():
    os.makedirs(OUT_DIR, exist_ok=True)
    return [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": os.path.join(OUT_DIR, "native-access.log"),
            "log_format": {"json_format": NATIVE_JSON_FORMAT},
        },
    }]


MESHGUARD = os.environ.get("MESHGUARD_BIN", os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "debug/meshguard"))


def wasm_filter(name, path, config):
    """The Envoy HTTP filter entry that loads one wasm module (V8), from the
    one renderer every other config uses (`meshguard wasm-filter`, which
    also checks a shipped filter's config with the filter's own code)."""
    if not os.path.exists(MESHGUARD):
        raise SystemExit(f"{MESHGUARD} missing: run `make cli`")
    out = subprocess.run([MESHGUARD, "wasm-filter", name, path, "-"], input=json.dumps(config),
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"meshguard wasm-filter {name} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def native_header_mutation():
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


def lua_filter():
    return [{
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA_AB},
        },
    }]


# authn: the demo provider with the demo keys inline (the same as
# AUTHN_BENCH_CONFIG in tests/src/fuel.rs) and the tokens of
# bench/authn-tokens.json; the native jwt_authn variants get the same keys,
# issuer, audience and claim-to-header.
with open(os.path.join(ROOT, "deploy/local/demo-keys/jwks.json")) as _f:
    DEMO_JWKS = json.load(_f)
with open(os.path.join(ROOT, "bench/authn-tokens.json")) as _f:
    AUTHN_TOKENS = json.load(_f)
DEMO_ISSUER = "https://demo.meshguard.local"


def authn_config(cache=True, state=False):
    cfg = {
        "providers": [{"name": "demo", "issuer": DEMO_ISSUER, "audiences": ["shop"],
                       "algorithms": ["RS256", "ES256"], "jwks": {"inline": DEMO_JWKS}}],
        "rules": [{"match": {"path": {"prefix": "/public"}}, "requires": "public"},
                  {"requires": {"any": ["demo"]}}],
    }
    if not cache:
        cfg["cache"] = {"max_entries": 0}
    if state:
        # Beyond jwt_authn's job (header out, token stripped): the identity
        # also to filter state, for an accesslog in another module.
        cfg["identity_filter_state"] = True
    return cfg


def bearer(which):
    return [f"authorization: Bearer {AUTHN_TOKENS[which]}"]


def native_jwt_authn(cache):
    provider = {
        "issuer": DEMO_ISSUER, "audiences": ["shop"],
        "local_jwks": {"inline_string": json.dumps(DEMO_JWKS)},
        "claim_to_headers": [{"header_name": "x-user-id", "claim_name": "sub"}],
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    return lambda: [{
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"demo": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}],
        },
    }]


def rl_config(per_second, max_keys=None, worker_batch=None):
    """One rule, keyed on the identity header, `per_second` with that burst;
    `worker_batch` opts into worker batches (README: weaker short-window
    guarantee)."""
    cfg = {"rules": [{"name": "bench", "key": ["header"],
                      "limit": {"requests": per_second, "per": "second", "burst": per_second}}]}
    if max_keys:
        cfg["max_keys"] = max_keys
    if worker_batch:
        cfg["worker_batch"] = worker_batch
    return cfg


def rl_config_unmatched():
    """rl_config's rule limited to a path the bench never requests."""
    cfg = rl_config(1_000_000)
    cfg["rules"][0]["match"] = {"paths": [{"exact": "/never-requested"}]}
    return cfg


def native_local_ratelimit(per_second):
    """Envoy's local_ratelimit with the same bucket (one key in the bench)."""
    return [{
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "rl",
            "token_bucket": {"max_tokens": per_second, "tokens_per_fill": per_second, "fill_interval": "1s"},
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        },
    }]


# authn-ext (issue 9): authn's external-auth mode against the designs it
# replaces, and its HMAC request signatures. Every calling variant calls the
# same auth service: a separate Envoy (1 worker, pinned with wrk, see
# AuthService below) whose direct_response answers 200 with the identity
# headers, so the figures are the proxy's cost, not the service's.
AUTH_IDENTITY = {"x-user-id": "user-42", "x-tenant": "acme"}
# What every ext-auth request carries: the credential the service checks and
# the decision cache is keyed by.
EXT_HEADERS = ["authorization: Bearer user-42"]
AUTH_SERVICE_PORT = None  # set when AuthService starts


def auth_cluster():
    if AUTH_SERVICE_PORT is None:
        raise SystemExit("the auth service is not running")
    return {"name": "auth", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "auth", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": AUTH_SERVICE_PORT}}}}]}]}}


def authn_ext_config(allow_seconds):
    """The ext_auth provider the fuel table measures too
    (AUTHN_EXT_CACHE_CONFIG / AUTHN_EXT_CALL_CONFIG in tests/src/fuel.rs)."""
    return {
        "providers": [],
        "ext_auth": [{"name": "legacy", "cluster": "auth", "path_prefix": "/check", "timeout_ms": 300,
                      "request_headers": ["authorization", "cookie"],
                      "response_headers": ["x-user-id", "x-tenant"],
                      "cache": {"allow_seconds": allow_seconds}}],
        "rules": [{"requires": {"ext_auth": "legacy"}}],
    }


# The Lua design authn's ext-auth mode replaces: the script of
# istio/examples/lua-auth/envoyfilter.yaml (a call to the auth service on
# every request, identity headers copied on 2xx, the service's answer sent
# back otherwise), with the bench's cluster and authority and a 300 ms
# timeout (the example's is 5000 ms; the other variants use 300 ms).
LUA_EXT_AUTH = r"""
local AUTH_CLUSTER = "auth"

function envoy_on_request(request_handle)
  local h = request_handle:headers()
  local path = h:get(":path")
  if string.sub(path, 1, 7) == "/health" then
    return
  end
  local headers, body = request_handle:httpCall(
    AUTH_CLUSTER,
    {
      [":method"] = h:get(":method"),
      [":path"] = "/check" .. path,
      [":authority"] = "auth",
      ["authorization"] = h:get("authorization"),
      ["cookie"] = h:get("cookie"),
    },
    "",
    300)
  local status = tonumber(headers[":status"]) or 503
  if status >= 200 and status < 300 then
    for _, name in ipairs({"x-user-id", "x-tenant"}) do
      local value = headers[name]
      if value then
        h:replace(name, value)
      end
    end
    return
  end
  request_handle:respond(
    {[":status"] = tostring(status),
     ["content-type"] = headers["content-type"] or "text/plain"},
    body)
end
"""


def lua_ext_auth():
    return [{
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA_EXT_AUTH},
        },
    }]


def native_ext_authz():
    """Envoy's ext_authz with an HTTP service (/work/shared/PROTOCOLS.md §C):
    the same cluster, path prefix, timeout and headers. The request headers
    sent are the filter's `allowed_headers` (authorization_request's own
    field is deprecated in Envoy 1.40; same meaning for an HTTP service)."""
    return [{
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "allowed_headers": {"patterns": [{"exact": "authorization"}, {"exact": "cookie"}]},
            "http_service": {
                "server_uri": {"uri": "http://auth", "cluster": "auth", "timeout": "0.3s"},
                "path_prefix": "/check",
                "authorization_response": {"allowed_upstream_headers": {
                    "patterns": [{"exact": "x-user-id"}, {"exact": "x-tenant"}]}},
            },
        },
    }]


# HMAC: one key (AUTHN_HMAC_CONFIG in tests/src/fuel.rs has the same); the
# bench's POST, signed with `meshguard sign` for the Host, path and body wrk
# sends (bench/wrk-signed-post.lua).
HMAC_SECRET = "bWVzaGd1YXJkIGJlbmNoIHBhcnRuZXItYSBzZWNyZXQsIDMyKyBieXRlcw=="  # base64, bench only
HMAC_BODY = '{"order":7,"qty":1}'
HMAC_HOST = "shop.example.com"
HMAC_PATH = "/orders?id=7"


def body_buffer():
    """Envoy's buffer filter, in front of the router in the POST variants.
    A direct_response answers at the request headers: with a body still to
    come, Envoy's HTTP/1 codec then closes the connection (`connection:
    close`), so without this every POST was a new connection (measured: one
    per request, ~70 µs per request with no filter at all, against ~21 for
    the GET). With the body read first, the connection is kept alive."""
    return [{
        "name": "envoy.filters.http.buffer",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                         "max_request_bytes": 65536},
    }]


def authn_hmac_config():
    return {
        "providers": [],
        "hmac": [{"name": "partners", "keys": [{"id": "partner-a", "secret": HMAC_SECRET}],
                  "max_body_bytes": 1024}],
        "rules": [{"requires": {"hmac": "partners"}}],
    }


def hmac_signature():
    """Content-Digest, Signature-Input and Signature for the bench's POST,
    created now (`meshguard sign`; the filter accepts ±300 s, and the bench
    re-signs at the start of every round)."""
    if not os.path.exists(MESHGUARD):
        raise SystemExit(f"{MESHGUARD} missing: run `make cli`")
    out = subprocess.run([MESHGUARD, "sign", "POST", f"http://{HMAC_HOST}{HMAC_PATH}", "--key-id", "partner-a",
                          "--secret-env", "MESHGUARD_BENCH_HMAC_SECRET", "--body", HMAC_BODY],
                         env={**os.environ, "MESHGUARD_BENCH_HMAC_SECRET": HMAC_SECRET},
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"meshguard sign failed:\n{out.stderr}")
    lines = [l for l in out.stdout.splitlines() if l.strip()]
    if len(lines) != 3:
        raise SystemExit(f"meshguard sign: expected three header lines, got:\n{out.stdout}")
    return lines


# What the signed-POST variants send: wrk's script posts HMAC_BODY with a
# fixed Host, and the signature headers, made again every round.
SIGNED_POST = {"headers": [f"Host: {HMAC_HOST}"], "sign": hmac_signature, "path": HMAC_PATH,
               "script": "bench/wrk-signed-post.lua", "wrk_env": {"MESHGUARD_BENCH_BODY": HMAC_BODY}}


def floor_variant(name, group, mode, **extra):
    """A floor (bench/fixtures/floor) in mode `mode`: only the host calls
    its job cannot avoid."""
    module = "target/fixtures/floor-experiment.wasm"
    return {"name": name, "group": group, "needs": {module: "make build-fixtures"},
            "filters": lambda: [wasm_filter("floor", repo_path(module), mode)], **extra}


def repo_path(rel):
    return os.path.join(ROOT, rel)


# One line per variant. `group` is what `--filter` / `make bench FILTER=...`
# selects; "baseline" variants always run. The first one is the "no filter"
# baseline every ratio and added-CPU figure is taken against. `needs` lists
# files the variant loads and the command that builds them.
VARIANTS = [
    {"name": "no filter", "group": "baseline", "filters": lambda: []},
    {"name": "native header_mutation", "group": "baseline", "filters": native_header_mutation},
    {"name": "lua (same job)", "group": "baseline", "filters": lua_filter},
    {"name": "wasm no-op (Rust SDK)", "group": "baseline",
     "needs": {"target/fixtures/noop-filter.wasm": "make build-fixtures"},
     "filters": lambda: [wasm_filter("noop", repo_path("target/fixtures/noop-filter.wasm"), {})]},
    {"name": "meshguard ab-routing (wasm)", "group": "ab-routing",
     "needs": {"dist/ab-routing.wasm": "make build"},
     "filters": lambda: [wasm_filter("ab-routing", repo_path("dist/ab-routing.wasm"), AB_CONFIG)]},
    # authn: one RS256 token on every request (warm: the cache answers;
    # native jwt_authn verifies every request unless jwt_cache_config),
    # "cold": the cache off, so every request verifies a signature; "junk":
    # an unknown kid and a random signature (401s).
    {"name": "native jwt_authn (default)", "group": "authn", "headers": bearer("rs256"),
     "filters": native_jwt_authn(cache=False)},
    {"name": "native jwt_authn (jwt_cache_config)", "group": "authn", "headers": bearer("rs256"),
     "filters": native_jwt_authn(cache=True)},
    {"name": "meshguard authn warm cache (wasm)", "group": "authn", "headers": bearer("rs256"),
     "needs": {"dist/authn.wasm": "make build"},
     "filters": lambda: [wasm_filter("authn", repo_path("dist/authn.wasm"), authn_config())]},
    {"name": "meshguard authn warm, identity to filter state (wasm)", "group": "authn", "headers": bearer("rs256"),
     "needs": {"dist/authn.wasm": "make build"},
     "filters": lambda: [wasm_filter("authn", repo_path("dist/authn.wasm"), authn_config(state=True))]},
    {"name": "meshguard authn cold RS256 (wasm)", "group": "authn", "headers": bearer("rs256"),
     "needs": {"dist/authn.wasm": "make build"},
     "filters": lambda: [wasm_filter("authn", repo_path("dist/authn.wasm"), authn_config(cache=False))]},
    {"name": "meshguard authn cold ES256 (wasm)", "group": "authn", "headers": bearer("es256"),
     "needs": {"dist/authn.wasm": "make build"},
     "filters": lambda: [wasm_filter("authn", repo_path("dist/authn.wasm"), authn_config(cache=False))]},
    {"name": "native jwt_authn junk tokens", "group": "authn", "headers": bearer("junk"),
     "non_2xx": True, "filters": native_jwt_authn(cache=True)},
    {"name": "meshguard authn junk tokens (wasm)", "group": "authn", "headers": bearer("junk"),
     "non_2xx": True, "needs": {"dist/authn.wasm": "make build"},
     "filters": lambda: [wasm_filter("authn", repo_path("dist/authn.wasm"), authn_config())]},
    # ratelimit against Envoy's native local_ratelimit with the same limit
    # on the bench's one key (x-user-id: user-42): a high limit nothing
    # reaches, and a low one (1/s) that answers almost every request 429.
    {"name": "native local_ratelimit (high limit)", "group": "ratelimit",
     "filters": lambda: native_local_ratelimit(1_000_000)},
    {"name": "meshguard ratelimit high limit (wasm)", "group": "ratelimit",
     "needs": {"dist/ratelimit.wasm": "make build"},
     "filters": lambda: [wasm_filter("ratelimit", repo_path("dist/ratelimit.wasm"), rl_config(1_000_000))]},
    # The same with opt-in worker batches of 32 (the BENCHMARKS.md run at
    # 39c182a measured this config as its default).
    # The same module at opt-level 3 throughout, without wasm-opt (286 KB,
    # over the 200 KB budget; `make experiments`): what size costs in speed.
    {"name": "meshguard ratelimit high limit, opt-level 3 build (wasm)", "group": "ratelimit",
     "needs": {"target/experiments/ratelimit-o3.wasm": "make experiments"},
     "filters": lambda: [wasm_filter("ratelimit", repo_path("target/experiments/ratelimit-o3.wasm"),
                                     rl_config(1_000_000))]},
    {"name": "meshguard ratelimit high limit, worker_batch 32 (wasm)", "group": "ratelimit",
     "needs": {"dist/ratelimit.wasm": "make build"},
     "filters": lambda: [wasm_filter("ratelimit", repo_path("dist/ratelimit.wasm"),
                                     rl_config(1_000_000, worker_batch=32))]},
    # 10 000 identities in turn (bench/wrk-10k-users.lua), each its own
    # bucket, nothing limited: what many live keys cost (shared-data size,
    # slot spread) against the one-key variant above. Native local_ratelimit
    # has no per-key buckets to compare with.
    {"name": "meshguard ratelimit 10 000 keys (wasm)", "group": "ratelimit",
     "script": "bench/wrk-10k-users.lua", "needs": {"dist/ratelimit.wasm": "make build"},
     "filters": lambda: [wasm_filter("ratelimit", repo_path("dist/ratelimit.wasm"),
                                     rl_config(1_000_000, max_keys=20_000))]},
    {"name": "native local_ratelimit (low limit)", "group": "ratelimit", "non_2xx": "mixed",
     "filters": lambda: native_local_ratelimit(1)},
    {"name": "meshguard ratelimit low limit (wasm)", "group": "ratelimit", "non_2xx": "mixed",
     "needs": {"dist/ratelimit.wasm": "make build"},
     "filters": lambda: [wasm_filter("ratelimit", repo_path("dist/ratelimit.wasm"), rl_config(1))]},
    # authn-ext (issue 9): every request carries one credential; the auth
    # service (a direct_response Envoy) allows it. Lua and native ext_authz
    # call on every request; authn's warm cache calls once per 30 s (the
    # allow TTL), its every-call variant on every request.
    {"name": "lua + httpCall (the design authn replaces)", "group": "authn-ext", "headers": EXT_HEADERS,
     "auth_service": True, "clusters": lambda: [auth_cluster()], "filters": lua_ext_auth},
    {"name": "native ext_authz (HTTP service)", "group": "authn-ext", "headers": EXT_HEADERS,
     "auth_service": True, "clusters": lambda: [auth_cluster()], "filters": native_ext_authz},
    {"name": "meshguard authn ext-auth warm cache (wasm)", "group": "authn-ext", "headers": EXT_HEADERS,
     "auth_service": True, "clusters": lambda: [auth_cluster()], "needs": {"dist/authn.wasm": "make build"},
     "filters": lambda: [wasm_filter("authn", repo_path("dist/authn.wasm"), authn_ext_config(30))]},
    {"name": "meshguard authn ext-auth every call (wasm)", "group": "authn-ext", "headers": EXT_HEADERS,
     "auth_service": True, "clusters": lambda: [auth_cluster()], "needs": {"dist/authn.wasm": "make build"},
     "filters": lambda: [wasm_filter("authn", repo_path("dist/authn.wasm"), authn_ext_config(0))]},
    # A POST with a 19-byte JSON body (bench/wrk-signed-post.lua), signed
    # over @method @authority @path @query content-digest; wrk sends a fixed
    # Host (the signed @authority). The same signature on every request (no
    # nonce configured), re-signed every round. Both POST variants have the
    # buffer filter before the router (body_buffer()); the first is that
    # alone, the reference the HMAC variant's own cost is read against.
    {"name": "no filter, signed POST (buffer filter only)", "group": "authn-ext",
     **SIGNED_POST, "filters": body_buffer},
    {"name": "meshguard authn HMAC small body (wasm)", "group": "authn-ext",
     **SIGNED_POST, "needs": {"dist/authn.wasm": "make build"},
     "filters": lambda: [wasm_filter("authn", repo_path("dist/authn.wasm"), authn_hmac_config())] + body_buffer()},
    {"name": "native JSON access log (file)", "group": "accesslog",
     "filters": lambda: [], "access_log": native_json_access_log},
    {"name": "meshguard accesslog (wasm, log line)", "group": "accesslog",
     "needs": {"dist/accesslog.wasm": "make build"},
     "filters": lambda: [wasm_filter("accesslog", repo_path("dist/accesslog.wasm"), AL_CONFIG)]},
    # The same work minus Envoy writing the line: the record is built, the
    # line is at `info`, below the bench's --log-level warn, so the SDK
    # drops it before formatting. The difference to the variant above is
    # the cost of Envoy's log write.
    {"name": "meshguard accesslog (wasm, line below log level)", "group": "accesslog",
     "needs": {"dist/accesslog.wasm": "make build"},
     "filters": lambda: [wasm_filter("accesslog", repo_path("dist/accesslog.wasm"),
                                     {**AL_CONFIG, "log_line": {"level": "info"}})]},
    # Getting records to the shipper, in isolation (bench/fixtures/handoff):
    # each worker batches its own (what the accesslog does), or every record
    # is handed over a proxy-wasm shared queue to the one worker that would
    # ship (the alternative the issue asks to measure). Same 1 KiB record.
    # Two workers, so the queue's consumer is another thread for half the
    # records (both variants alike; compare them with each other).
    {"name": "handoff experiment: per-worker batch (wasm)", "group": "accesslog", "workers": 2,
     "needs": {"target/fixtures/handoff-experiment.wasm": "make build-fixtures"},
     "filters": lambda: [wasm_filter("handoff", repo_path("target/fixtures/handoff-experiment.wasm"),
                                     {"mode": "local"})],
     "check": lambda envoy: handoff_check(envoy)},
    {"name": "handoff experiment: shared queue (wasm)", "group": "accesslog", "workers": 2,
     "needs": {"target/fixtures/handoff-experiment.wasm": "make build-fixtures"},
     "filters": lambda: [wasm_filter("handoff", repo_path("target/fixtures/handoff-experiment.wasm"),
                                     {"mode": "queue"})],
     "check": lambda envoy: handoff_check(envoy)},
    # The default config: the three facts other meshguard modules publish
    # are looked up in filter state for every record (none is there here).
    {"name": "meshguard accesslog (wasm, log line, 3 filter-state reads)", "group": "accesslog",
     "needs": {"dist/accesslog.wasm": "make build"},
     "filters": lambda: [wasm_filter("accesslog", repo_path("dist/accesslog.wasm"),
                                     {k: v for k, v in AL_CONFIG.items() if k != "facts_from_filter_state"})]},
    # Floors (bench/fixtures/floor): the host calls each job cannot avoid,
    # made by an SDK filter that does nothing else, with the no-op's VM calls
    # per stream. Read each beside the meshguard filter and the target of its
    # issue: if the floor already misses a target, no wasm filter in this
    # Envoy meets it.
    floor_variant("floor: header map only (wasm)", "ratelimit", "headers"),
    # The meshguard shell and stage with no bucket touched: the one rule
    # matches a path the bench never asks for.
    {"name": "meshguard ratelimit, rule never matches (wasm)", "group": "ratelimit",
     "needs": {"dist/ratelimit.wasm": "make build"},
     "filters": lambda: [wasm_filter("ratelimit", repo_path("dist/ratelimit.wasm"), rl_config_unmatched())]},
    floor_variant("floor: exact bucket, one header lookup (wasm)", "ratelimit", "bucket"),
    floor_variant("floor: exact bucket, header map (wasm)", "ratelimit", "bucket-pairs"),
    floor_variant("floor: auth callout (wasm)", "authn-ext", "callout", headers=EXT_HEADERS,
                  auth_service=True, clusters=lambda: [auth_cluster()]),
    floor_variant("floor: log line, nothing read (wasm)", "accesslog", "log"),
    floor_variant("floor: a record's reads, no line (wasm)", "accesslog", "read"),
    floor_variant("floor: log line after a record's reads (wasm)", "accesslog", "log-read"),
]
BASELINE = VARIANTS[0]["name"]
NOOP = "wasm no-op (Rust SDK)"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def envoy_config(variant, port, admin):
    clusters = variant.get("clusters", [])
    if callable(clusters):
        clusters = clusters()
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    if variant.get("response_headers"):
        # The auth service's answer (AuthService).
        route["response_headers_to_add"] = [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in variant["response_headers"].items()]
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
                        "routes": [route],
                    }]},
                    "http_filters": variant["filters"]() + [router],
                    "access_log": variant.get("access_log", lambda: [])(),
                },
            }]}],
        }], "clusters": clusters},
    }


def pinning():
    """(envoy prefix, wrk prefix, Envoy's core): separate cores where there
    are two."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", "0"], ["taskset", "-c", "1"], 0
    return [], [], None


CLK_TCK = os.sysconf("SC_CLK_TCK")

# Above this share of Envoy's core going to other processes, the table
# warns that its CPU figures are inflated by the sharing.
BUSY_CORE = 0.10


class Envoy:
    def __init__(self, variant, workdir, prefix):
        self.port, self.admin = free_port(), free_port()
        name = variant["name"]
        self.base_headers = variant.get("headers", REQUEST_HEADERS)
        # Headers made fresh at the start of every round (a signature's
        # `created`): see refresh().
        self.sign = variant.get("sign")
        self.refresh()
        self.path = variant.get("path", REQUEST_PATH)
        # A wrk Lua script that writes each request itself (varying keys),
        # and what it reads from the environment.
        self.script = variant.get("script")
        self.wrk_env = variant.get("wrk_env")
        self.non_2xx = variant.get("non_2xx", False)
        self.cfg = os.path.join(workdir, re.sub(r"\W+", "_", name) + ".json")
        with open(self.cfg, "w") as f:
            json.dump(envoy_config(variant, self.port, self.admin), f)
        # Append mode, so trim_logs() can empty the file under a running Envoy.
        open(self.cfg + ".log", "w").close()
        self.log = open(self.cfg + ".log", "a")
        # Detached (own session); stopped by PID in stop(). The venv's envoy
        # script execs the binary, so this PID is Envoy's.
        self.proc = subprocess.Popen(
            prefix + [ENVOY, "-c", self.cfg, "--concurrency", str(variant.get("workers", 1)),
                      "--disable-hot-restart",
                      "--log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"envoy ({name}) exited; see {self.cfg}.log")
            try:
                if self.admin_get("/ready").startswith("LIVE"):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"envoy ({name}) not ready; see {self.cfg}.log")

    def refresh(self):
        """The request headers for the next runs (re-signed if signed)."""
        self.headers = self.base_headers + (self.sign() if self.sign else [])

    def admin_get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=2) as r:
            return r.read().decode()

    def requests_served(self):
        """Requests this Envoy has taken in (exact, from its own counter)."""
        text = self.admin_get("/stats?filter=^http%5C.bench%5C.downstream_rq_total$")
        m = re.search(r"http\.bench\.downstream_rq_total: (\d+)", text)
        if not m:
            raise SystemExit(f"no downstream_rq_total in Envoy stats: {text!r}")
        return int(m.group(1))

    def cpu_ticks(self):
        """utime + stime of the Envoy process (all its threads), in clock ticks."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)

    def trim_logs(self):
        """Empties this Envoy's log and the native access log once past
        LOG_KEEP bytes: with the record written as a line (or to the native
        file) every request adds ~1 KiB, gigabytes over a bench. Called
        between runs, outside the CPU windows."""
        for path in (self.cfg + ".log", os.path.join(OUT_DIR, "native-access.log")):
            try:
                if os.path.getsize(path) > LOG_KEEP:
                    os.truncate(path, 0)
            except OSError:
                pass

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class AuthService(Envoy):
    """The auth service the authn-ext variants call (cluster `auth`): an
    Envoy, 1 worker, whose direct_response answers every check 200 with
    x-user-id and x-tenant, in microseconds, so what a variant costs is the
    proxy's side of the call, not the service. Pinned to the load
    generator's core (it is part of the load, like wrk), which keeps Envoy's
    core for the proxies measured; 127.0.0.1 only, stopped by PID."""

    def __init__(self, workdir, prefix):
        global AUTH_SERVICE_PORT
        super().__init__({"name": "auth service", "filters": lambda: [], "response_headers": AUTH_IDENTITY},
                         workdir, prefix)
        AUTH_SERVICE_PORT = self.port
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/check/checkout", timeout=2) as r:
            got = {k: r.headers.get(k) for k in AUTH_IDENTITY}
        if got != AUTH_IDENTITY:
            self.stop()
            raise SystemExit(f"the auth service answered {got}, expected {AUTH_IDENTITY}")


def auth_calls(envoy):
    """Calls this Envoy made to the auth service (its `auth` cluster)."""
    text = envoy.admin_get("/stats?filter=^cluster%5C.auth%5C.upstream_rq_total$")
    m = re.search(r"cluster\.auth\.upstream_rq_total: (\d+)", text)
    return int(m.group(1)) if m else 0


UNIT = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_latency(text, pct):
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * UNIT[m.group(2)] if m else float("nan")


def wrk(prefix, envoy, conns, duration):
    """One wrk run against `envoy` with its variant's request headers. A
    variant that answers locally (`non_2xx`: junk tokens, 401) must see only
    non-2xx answers; every other variant none."""
    cmd = prefix + ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency"]
    for h in envoy.headers:
        cmd += ["-H", h]
    if envoy.script:
        cmd += ["-s", repo_path(envoy.script)]
    cmd.append(f"http://127.0.0.1:{envoy.port}{envoy.path}")
    env = {**os.environ, **envoy.wrk_env} if envoy.wrk_env else None
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, env=env).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors", out)
    if envoy.non_2xx == "mixed":
        # A low rate limit: a few answers pass, the rest are 429s.
        errors = errors or not non2xx
    elif envoy.non_2xx:
        # Every answer must be the local reply, none the upstream's.
        errors = errors or not non2xx or (total and int(non2xx.group(1)) != int(total.group(1)))
    else:
        errors = errors or non2xx
    if not rps or not total or errors:
        raise SystemExit(f"wrk failed or saw errors:\n{out}")
    return {"rps": float(rps.group(1)), "p50": parse_latency(out, 50), "p99": parse_latency(out, 99),
            "wrk_requests": int(total.group(1))}


def core_ticks(cpu):
    """(busy, total) clock ticks of one CPU from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]  # idle + iowait
                total = sum(v[:8])  # guest time is already in user
                return total - idle, total
    return 0, 0


def measure(envoy, wrk_prefix, conns, duration, core):
    """One timed wrk run with Envoy's CPU time and request count around it.
    The admin reads sit outside the CPU window."""
    rq0 = envoy.requests_served()
    c0 = core_ticks(core) if core is not None else (0, 0)
    t0 = envoy.cpu_ticks()
    r = wrk(wrk_prefix, envoy, conns, duration)
    t1 = envoy.cpu_ticks()
    c1 = core_ticks(core) if core is not None else (0, 0)
    rq1 = envoy.requests_served()
    envoy.trim_logs()
    r["requests"] = rq1 - rq0
    r["cpu_us"] = (t1 - t0) * 1e6 / CLK_TCK / r["requests"]
    # Share of Envoy's core that went to other processes in this run.
    total = c1[1] - c0[1]
    r["core_others"] = max(0.0, (c1[0] - c0[0]) - (t1 - t0)) / total if total else float("nan")
    return r


def measure_side_by_side(envoys, wrk_prefix, conns, duration, core):
    """Every variant at the same time: each Envoy gets its own wrk (all on
    the load generator's core) and all Envoys share their core, so whatever
    else the machine does in that moment hits every variant alike. Returns
    ({name: {"cpu_us", "requests"}}, share of the core other processes took)."""
    names = list(envoys)
    rq0 = {n: envoys[n].requests_served() for n in names}
    c0 = core_ticks(core) if core is not None else (0, 0)
    t0 = {n: envoys[n].cpu_ticks() for n in names}
    failures = []

    def load(n):
        try:
            wrk(wrk_prefix, envoys[n], conns, duration)
        except BaseException as e:  # re-raised below, in the main thread
            failures.append(e)

    threads = [threading.Thread(target=load, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = {n: envoys[n].cpu_ticks() for n in names}
    c1 = core_ticks(core) if core is not None else (0, 0)
    rq1 = {n: envoys[n].requests_served() for n in names}
    for n in names:
        envoys[n].trim_logs()
    if failures:
        raise failures[0]
    out = {}
    for n in names:
        requests = rq1[n] - rq0[n]
        out[n] = {"requests": requests, "cpu_us": (t1[n] - t0[n]) * 1e6 / CLK_TCK / requests}
    total = c1[1] - c0[1]
    envoy_ticks = sum(t1[n] - t0[n] for n in names)
    others = max(0.0, (c1[0] - c0[0]) - envoy_ticks) / total if total else float("nan")
    return out, others


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def step(msg):
    print(f"== {msg}", flush=True)


def cargo(args, capture):
    """cargo with its progress on our stderr; stdout captured if asked."""
    cmd = [os.environ.get("CARGO", "cargo")] + args
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE if capture else None, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {out.returncode})")
    return out.stdout


HARNESS_BENCHES = ["bench", "-p", "wasm-test-harness", "--bench", "request_cycle",
                   "-p", "meshguard-e2e", "--bench", "fuel"]


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(variants, conns, raw, side):
    """Per (variant, conns): median/min/max of every figure. req/s, latency
    and their ratio come from the one-at-a-time runs (`raw`), CPU per
    request from the side-by-side runs (`side`); ratio and added CPU are
    taken per round against "no filter" from the same round."""
    out = {}
    for c in conns:
        base, side_base = raw[(BASELINE, c)], side[(BASELINE, c)]
        for v in variants:
            runs, side_runs = raw[(v, c)], side[(v, c)]
            s = {k: spread([r[k] for r in runs]) for k in ("rps", "p50", "p99")}
            s["ratio"] = spread([r["rps"] / b["rps"] for r, b in zip(runs, base)])
            s["cpu_us"] = spread([r["cpu_us"] for r in side_runs])
            # The machine's load scales every variant's CPU per request
            # alike within a side-by-side run (×0.8–1.4 from one run to the
            # next on a busy machine), so the per-round ratio is what stays
            # put. Added CPU is that ratio at the run's median no-filter
            # level: the same-round difference, rescaled so that one busy
            # round does not widen the spread.
            level = statistics.median(b["cpu_us"] for b in side_base)
            cpu_ratios = [r["cpu_us"] / b["cpu_us"] for r, b in zip(side_runs, side_base)]
            s["cpu_ratio"] = spread(cpu_ratios)
            s["added_cpu_us"] = spread([(x - 1) * level for x in cpu_ratios])
            s["added_cpu_us_unscaled"] = spread([r["cpu_us"] - b["cpu_us"] for r, b in zip(side_runs, side_base)])
            # The same figures from the one-at-a-time runs, for comparison.
            s["cpu_us_alone"] = spread([r["cpu_us"] for r in runs])
            s["added_cpu_us_alone"] = spread([r["cpu_us"] - b["cpu_us"] for r, b in zip(runs, base)])
            s["requests_per_run"] = spread([r["requests"] for r in runs])
            # Latency a filter adds: the same round's difference to no filter.
            for k in ("p50", "p99"):
                s[f"{k}_added"] = spread([r[k] - b[k] for r, b in zip(runs, base)])
            notes = []
            if v != BASELINE:
                # A figure whose spread is wider than the difference it claims.
                if s["ratio"]["max"] - s["ratio"]["min"] > abs(1 - s["ratio"]["median"]):
                    notes.append("req/s ratio")
                if s["added_cpu_us"]["max"] - s["added_cpu_us"]["min"] > abs(s["added_cpu_us"]["median"]):
                    notes.append("CPU")
            s["within_noise"] = notes
            out[f"{v}|{c}"] = s
    return out


def fmt(s, digits=0):
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])} ({f.format(s['min'])}–{f.format(s['max'])})"


def table(meta, variants, conns, summary):
    pin = ("Envoy pinned to CPU 0, wrk to CPU 1" if meta["pinned"]
           else "not pinned (fewer than 2 cores or no taskset)")
    others, others_side = meta.get("core_others"), meta.get("core_others_side")
    busy = (f"Other processes took {others['median']:.0%} of Envoy's core during the one-at-a-time runs "
            f"(median; {others['min']:.0%}–{others['max']:.0%}) and {others_side['median']:.0%} during "
            f"the side-by-side runs." if others and others_side else "")
    if others and others["median"] > BUSY_CORE:
        busy += (" **Envoy shared its core with other work: req/s, ratios and latency move with that "
                 "load; trust only differences outside their spread.**")
    lines = [
        f"Command: `make bench` (`{meta['command']}`) at {meta['commit']}, {meta['date']}.",
        f"Machine: {meta['cpu']}, {meta['cores']} cores; load average (1/5/15 min) "
        f"{meta['load_before']} before, {meta['load_after']} after. {busy}",
        f"Envoy {meta['envoy']} (V8), 1 worker, direct_response; wrk 1 thread, {meta['duration']} s per run; "
        f"{pin}. {meta['rounds']} rounds; each cell is the median over rounds with the spread (min–max). "
        "CPU columns: all variants side by side, each with its own wrk; added CPU = (CPU ratio − 1) × "
        "the run's median no-filter CPU. req/s, its ratio and latency: one variant at a time, interleaved.",
        "",
        "| filter | conns | Envoy CPU µs/req | CPU ratio to no filter | added CPU µs/req | req/s | req/s ratio to no filter | p50 µs | p99 µs | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in conns:
        for v in variants:
            s = summary[f"{v}|{c}"]
            if v == BASELINE:
                cpu_ratio, added, ratio, note = "1.00", "–", "1.00", "baseline"
            else:
                cpu_ratio, added, ratio = fmt(s["cpu_ratio"], 2), fmt(s["added_cpu_us"], 1), fmt(s["ratio"], 2)
                note = ("within noise: " + ", ".join(s["within_noise"])) if s["within_noise"] else ""
            lines.append(f"| {v} | {c} | {fmt(s['cpu_us'], 1)} | {cpu_ratio} | {added} | {fmt(s['rps'])} | "
                         f"{ratio} | {fmt(s['p50'])} | {fmt(s['p99'])} | {note} |")
    return "\n".join(lines) + "\n"


# Comparisons taken per round from the side-by-side runs (so the machine's
# load moves both sides alike): ("ratio", a, b) is a's added CPU over no
# filter divided by b's; ("diff", a, b) is a's CPU per request minus b's;
# ("beyond_noop", a, b) is a's CPU beyond the wasm no-op's (a floor's host
# calls without the SDK's per-stream callbacks) divided by b's added CPU.
PAIRED = [
    ("ratio", "meshguard accesslog (wasm, log line)", "native JSON access log (file)"),
    ("ratio", "meshguard accesslog (wasm, line below log level)", "native JSON access log (file)"),
    ("ratio", "meshguard accesslog (wasm, log line, 3 filter-state reads)", "native JSON access log (file)"),
    ("diff", "meshguard accesslog (wasm, log line)", "meshguard accesslog (wasm, line below log level)"),
    ("diff", "meshguard accesslog (wasm, log line, 3 filter-state reads)", "meshguard accesslog (wasm, log line)"),
    ("diff", "handoff experiment: shared queue (wasm)", "handoff experiment: per-worker batch (wasm)"),
    ("ratio", "floor: log line, nothing read (wasm)", "native JSON access log (file)"),
    ("ratio", "floor: log line after a record's reads (wasm)", "native JSON access log (file)"),
    ("ratio", "floor: a record's reads, no line (wasm)", "native JSON access log (file)"),
    ("beyond_noop", "floor: log line, nothing read (wasm)", "native JSON access log (file)"),
    ("beyond_noop", "floor: a record's reads, no line (wasm)", "native JSON access log (file)"),
    ("beyond_noop", "floor: log line after a record's reads (wasm)", "native JSON access log (file)"),
    ("diff", "meshguard accesslog (wasm, line below log level)", "floor: a record's reads, no line (wasm)"),
    ("diff", "meshguard accesslog (wasm, log line)", "floor: log line after a record's reads (wasm)"),
    ("ratio", "meshguard ratelimit high limit (wasm)", "wasm no-op (Rust SDK)"),
    ("ratio", "meshguard ratelimit high limit, worker_batch 32 (wasm)", "wasm no-op (Rust SDK)"),
    ("ratio", "meshguard ratelimit high limit, opt-level 3 build (wasm)", "wasm no-op (Rust SDK)"),
    ("diff", "meshguard ratelimit high limit (wasm)", "meshguard ratelimit high limit, opt-level 3 build (wasm)"),
    ("ratio", "floor: exact bucket, one header lookup (wasm)", "wasm no-op (Rust SDK)"),
    ("ratio", "floor: exact bucket, header map (wasm)", "wasm no-op (Rust SDK)"),
    ("diff", "meshguard ratelimit high limit (wasm)", "floor: exact bucket, header map (wasm)"),
    ("diff", "meshguard ratelimit, rule never matches (wasm)", "floor: header map only (wasm)"),
    ("diff", "meshguard ratelimit high limit (wasm)", "meshguard ratelimit, rule never matches (wasm)"),
    ("diff", "floor: exact bucket, header map (wasm)", "floor: header map only (wasm)"),
    ("ratio", "meshguard authn ext-auth every call (wasm)", "native ext_authz (HTTP service)"),
    ("ratio", "lua + httpCall (the design authn replaces)", "native ext_authz (HTTP service)"),
    ("ratio", "floor: auth callout (wasm)", "native ext_authz (HTTP service)"),
    ("beyond_noop", "floor: auth callout (wasm)", "native ext_authz (HTTP service)"),
    ("diff", "meshguard authn ext-auth every call (wasm)", "floor: auth callout (wasm)"),
]


def paired_table(variants, conns, side):
    lines = ["Per-round comparisons (side-by-side runs; median of the rounds (min–max)): "
             "ratio = the first's added CPU over no filter ÷ the second's; "
             "difference = the first's CPU µs/req − the second's; "
             "(a − no-op) ÷ b = a's CPU beyond the wasm no-op's ÷ b's added CPU.", "",
             "| comparison | conns | value | rounds |", "|---|---:|---:|---|"]
    any_row = False
    for kind, a, b in PAIRED:
        if a not in variants or b not in variants:
            continue
        if kind == "beyond_noop" and NOOP not in variants:
            continue
        for c in conns:
            xa = [r["cpu_us"] for r in side[(a, c)]]
            xb = [r["cpu_us"] for r in side[(b, c)]]
            base = [r["cpu_us"] for r in side[(BASELINE, c)]]
            if kind == "ratio":
                vals = [(p - n) / (q - n) for p, q, n in zip(xa, xb, base) if q - n > 0.5]
                label, digits = f"{a} ÷ {b} (added CPU)", 2
            elif kind == "beyond_noop":
                noop = [r["cpu_us"] for r in side[(NOOP, c)]]
                vals = [(p - o) / (q - n) for p, o, q, n in zip(xa, noop, xb, base) if q - n > 0.5]
                label, digits = f"({a} − {NOOP}) ÷ {b} (added CPU)", 2
            else:
                vals = [p - q for p, q in zip(xa, xb)]
                label, digits = f"{a} − {b} (µs/req)", 1
            if not vals:
                continue
            any_row = True
            lines.append(f"| {label} | {c} | {fmt(spread(vals), digits)} | "
                         + ", ".join(f"{v:.{digits}f}" for v in vals) + " |")
    return "\n".join(lines) + "\n" if any_row else ""


def latency_table(variants, conns, summary):
    """Latency each variant adds over no filter (one-at-a-time runs; the
    difference taken per round, median with the spread)."""
    lines = ["Latency added over no filter (one variant at a time; per round, the variant's "
             "percentile minus no filter's in the same round; median (min–max)):", "",
             "| filter | conns | p50 added µs | p99 added µs |", "|---|---:|---:|---:|"]
    for c in conns:
        for v in variants:
            if v == BASELINE:
                continue
            s = summary[f"{v}|{c}"]
            lines.append(f"| {v} | {c} | {fmt(s['p50_added'])} | {fmt(s['p99_added'])} |")
    return "\n".join(lines) + "\n"


def check(summary, documented):
    """Does every ratio / added-CPU median of this run land inside the
    documented run's spread? Returns (lines, misses)."""
    lines, misses = [], 0
    for key, s in summary.items():
        doc = documented["summary"].get(key)
        v, c = key.split("|")
        if doc is None or v == BASELINE:
            continue
        for fig, digits in (("cpu_ratio", 2), ("added_cpu_us", 1), ("ratio", 2)):
            if fig not in doc:
                continue
            m, lo, hi = s[fig]["median"], doc[fig]["min"], doc[fig]["max"]
            inside = lo <= m <= hi
            misses += not inside
            label = {"cpu_ratio": "CPU ratio", "added_cpu_us": "added CPU µs", "ratio": "req/s ratio"}[fig]
            lines.append(f"| {v} | {c} | {label} | {m:.{digits}f} | "
                         f"{fmt(doc[fig], digits)} | {'inside' if inside else 'OUTSIDE'} |")
    head = ["| filter | conns | figure | this run (median) | documented median (spread) | |",
            "|---|---:|---|---:|---:|---|"]
    return head + lines, misses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=2, help="seconds per wrk run (default 2)")
    ap.add_argument("--rounds", type=int, default=12, help="rounds, variants interleaved (default 12)")
    ap.add_argument("--connections", default="1,16", help="wrk connection counts (default 1,16)")
    ap.add_argument("--filter", default="", help="run the baselines plus this group's variants only "
                    f"(groups: {', '.join(sorted({v['group'] for v in VARIANTS} - {'baseline'}))})")
    ap.add_argument("--no-harness", action="store_true", help="skip the wasm-test-harness figures")
    ap.add_argument("--update", action="store_true",
                    help="rewrite the results sections of BENCHMARKS.md and bench/results.json")
    ap.add_argument("--check", action="store_true",
                    help="compare with the documented run (bench/results.json)")
    args = ap.parse_args()

    groups = {v["group"] for v in VARIANTS}
    if args.filter and args.filter not in groups - {"baseline"}:
        raise SystemExit(f"unknown filter {args.filter!r}; known: {', '.join(sorted(groups - {'baseline'}))}")
    selected = [v for v in VARIANTS if v["group"] == "baseline" or not args.filter or v["group"] == args.filter]
    if args.update and args.filter:
        raise SystemExit("--update rewrites the full table: run it without --filter")
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    if not os.path.exists(ENVOY):
        raise SystemExit(f"Envoy not found at {ENVOY}: run `make venv`")
    for v in selected:
        for f, how in v.get("needs", {}).items():
            if not os.path.exists(repo_path(f)):
                raise SystemExit(f"{f} missing: run `{how}`")
    documented = None
    if args.check:
        try:
            with open(DOCUMENTED) as f:
                documented = json.load(f)
        except OSError as e:
            raise SystemExit(f"--check needs the documented run: {e}")
    os.makedirs(OUT_DIR, exist_ok=True)

    # Build the harness benchmarks before the Envoy runs: the build would
    # otherwise compete with Envoy for the CPU, and it is the slow part.
    if not args.no_harness:
        step("building the harness benchmarks (release wasmtime: several minutes on 2 cores "
             "the first time, seconds after that)")
        cargo(HARNESS_BENCHES + ["--no-run"], capture=False)

    names = [v["name"] for v in selected]
    conns = [int(c) for c in args.connections.split(",")]
    envoy_prefix, wrk_prefix, core = pinning()
    envoy_version = subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"/(\d+\.\d+\.\d+)/", envoy_version)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown commit"
    meta = {
        "command": f"bench/bench.py --rounds {args.rounds} --duration {args.duration}"
                   + (f" --filter {args.filter}" if args.filter else ""),
        "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(), "cores": os.cpu_count(), "envoy": m.group(1) if m else envoy_version.strip(),
        "duration": args.duration, "rounds": args.rounds, "pinned": bool(envoy_prefix),
        "load_before": loadavg(),
    }
    total_s = len(selected) * 2 + args.rounds * len(conns) * args.duration * (len(selected) + 1)
    step(f"Envoy: {len(selected)} variants × {args.rounds} rounds × {len(conns)} connection counts, "
         f"{args.duration} s runs one at a time and side by side (~{total_s // 60 + 1} min); "
         f"load average {meta['load_before']}")
    raw = {(v, c): [] for v in names for c in conns}
    side = {(v, c): [] for v in names for c in conns}
    side_others = []
    envoys = {}
    auth = None
    calls = {}
    checks = []
    try:
        if any(v.get("auth_service") for v in selected):
            step("auth service (cluster auth): an Envoy direct_response answering 200 with "
                 "x-user-id and x-tenant, 1 worker, pinned with wrk")
            auth = AuthService(OUT_DIR, wrk_prefix)
        for v in selected:
            envoys[v["name"]] = Envoy(v, OUT_DIR, envoy_prefix)
            wrk(wrk_prefix, envoys[v["name"]], 16, 1)  # warm-up: VM start, JIT, connections
        # Connection counts outermost within a round: the runs a ratio or a
        # difference pairs are then at most one pass over the variants apart.
        for rnd in range(1, args.rounds + 1):
            for e in envoys.values():
                e.refresh()  # a signed variant signs again (created = now)
            for c in conns:
                for name in names:
                    r = measure(envoys[name], wrk_prefix, c, args.duration, core)
                    raw[(name, c)].append(r)
                    print(f"round {rnd}/{args.rounds} {name:30s} c={c:<3d} {r['cpu_us']:6.1f} µs CPU/req "
                          f"{r['rps']:9.0f} req/s  p50 {r['p50']:6.0f} µs  p99 {r['p99']:6.0f} µs  "
                          f"({r['requests']} requests; others on Envoy's core {r['core_others']:.0%})",
                          flush=True)
                # The same connection count with every variant at once: the
                # CPU figures, whose differences the machine's load then
                # cannot tilt.
                res, oth = measure_side_by_side(envoys, wrk_prefix, c, args.duration, core)
                side_others.append(oth)
                for name in names:
                    side[(name, c)].append(res[name])
                print(f"round {rnd}/{args.rounds} side by side c={c:<3d} µs CPU/req: "
                      + ", ".join(f"{n} {res[n]['cpu_us']:.1f}" for n in names)
                      + f" (others on Envoy's core {oth:.0%})", flush=True)
        # Variants that say how to check they did their job (the handoff
        # experiment: records arrived), checked before Envoy stops.
        for v in selected:
            if v.get("check"):
                checks.append(f"{v['name']}: {v['check'](envoys[v['name']])}")
        # How many requests each calling variant took to the auth service.
        calls = {v["name"]: (auth_calls(envoys[v["name"]]), envoys[v["name"]].requests_served())
                 for v in selected if v.get("auth_service")}
    finally:
        for e in envoys.values():
            e.stop()
        if auth:
            auth.stop()
    meta["load_after"] = loadavg()
    if calls:
        meta["auth_calls"] = {n: {"calls": c, "requests": r} for n, (c, r) in calls.items()}
    others = [r["core_others"] for runs in raw.values() for r in runs]
    meta["core_others"] = spread(others) if core is not None else None
    meta["core_others_side"] = spread(side_others) if core is not None else None

    summary = summarize(names, conns, raw, side)
    envoy_table = table(meta, names, conns, summary)
    print()
    print(envoy_table)
    extra = latency_table(names, conns, summary)
    paired = paired_table(names, conns, side)
    if paired:
        extra += "\n" + paired
    if checks:
        extra += "\nChecks: " + "; ".join(checks) + ".\n"
    if calls:
        extra += ("\nCalls to the auth service over the whole run (the proxy's `cluster.auth.upstream_rq_total`): "
                  + "; ".join(f"{n}: {c} of {r} requests" for n, (c, r) in calls.items()) + ".\n")
    print(extra)

    shipping = None
    if args.filter in ("", "accesslog") and os.path.exists(repo_path("dist/accesslog.wasm")):
        step("accesslog shipping: records per second and loss under a bounded overload")
        shipping = shipping_bench(envoy_prefix, wrk_prefix)
        print(shipping)

    harness = fuel = None
    if not args.no_harness:
        step("wasm-test-harness: wall time per request cycle (release build)")
        harness = harness_bench()
        print(harness)
        step("wasm-test-harness: guest instructions per request (fuel) against bench/fuel-budget.json")
        fuel = fuel_bench(args.filter)
        print(fuel)

    result = {"meta": meta, "summary": summary,
              "raw": {f"{v}|{c}": runs for (v, c), runs in raw.items()},
              "side_by_side": {f"{v}|{c}": runs for (v, c), runs in side.items()}}
    with open(os.path.join(OUT_DIR, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(OUT_DIR, "results.md"), "w") as f:
        f.write(envoy_table + "\n" + extra + "\n" + (shipping or "") + "\n" + (harness or "") + "\n" + (fuel or ""))
    print(f"wrote {os.path.relpath(OUT_DIR, ROOT)}/results.md and results.json")

    if documented is not None:
        step(f"check against the documented run ({documented['meta']['commit']}, {documented['meta']['date']})")
        lines, misses = check(summary, documented)
        print("\n".join(lines))
        print(f"\n{misses} of {len(lines) - 2} figures outside the documented spread")
    if args.update:
        update_section("make bench", envoy_table)
        if harness:
            update_section("harness bench", harness)
        if fuel:
            update_section("fuel", fuel)
        with open(DOCUMENTED, "w") as f:
            json.dump({"meta": meta, "summary": summary}, f, indent=1)
            f.write("\n")
        print("updated BENCHMARKS.md and bench/results.json")


# accesslog shipping: records per second delivered to a collector, and
# what happens to records under a bounded overload (every record must be
# either delivered or counted in meshguard_accesslog_dropped).
SHIP_SCENARIOS = [
    # (name, wrk connections, seconds, ship overrides)
    ("moderate load: 1 connection, default buffer", 1, 5, {}),
    ("overload: 16 connections, 256 KiB buffer, 1 batch in flight", 16, 5,
     {"buffer_max_bytes": 262144, "batch_max_bytes": 65536, "max_in_flight": 1}),
]


def collector_cluster(port):
    return {"name": "collector", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "collector", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def http_json(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def accesslog_stats(envoy):
    text = envoy.admin_get("/stats?filter=meshguard_accesslog_")
    return {k: int(v) for k, v in re.findall(r"meshguard_accesslog_(\w+): (\d+)", text)}


def shipping_bench(envoy_prefix, wrk_prefix):
    """Envoy (1 worker) with the accesslog shipping OTLP to demo/collector.py
    (a counting receiver, Python): for each scenario, requests served,
    records the collector received, records the filter counted as dropped,
    and the rest (must be 0)."""
    port = free_port()
    log = open(os.path.join(OUT_DIR, "collector.log"), "w")
    col = subprocess.Popen([sys.executable, repo_path("demo/collector.py"), "--port", str(port)],
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           start_new_session=True)
    rows = []
    try:
        deadline = time.time() + 15
        while True:
            try:
                http_json(f"http://127.0.0.1:{port}/stats")
                break
            except OSError:
                if time.time() > deadline or col.poll() is not None:
                    raise SystemExit("demo/collector.py did not start; see target/bench/collector.log")
                time.sleep(0.1)
        for name, conns, secs, ship in SHIP_SCENARIOS:
            cfg = dict(AL_CONFIG)
            cfg["log_line"] = {"enabled": False}
            cfg["ship"] = {"cluster": "collector", "format": "otlp", "flush_interval_ms": 200, **ship}
            variant = {"name": "accesslog shipping " + name,
                       "filters": lambda cfg=cfg: [wasm_filter("accesslog", repo_path("dist/accesslog.wasm"), cfg)],
                       "clusters": [collector_cluster(port)]}
            envoy = Envoy(variant, OUT_DIR, envoy_prefix)
            try:
                before = http_json(f"http://127.0.0.1:{port}/stats")["records"]
                served0 = envoy.requests_served()
                t0 = time.time()
                r = wrk(wrk_prefix, envoy, conns, secs)
                served = envoy.requests_served() - served0
                # Drain: wait until every record is delivered or counted as
                # dropped (bounded: 60 s).
                drain_deadline = time.time() + 60
                while True:
                    got = http_json(f"http://127.0.0.1:{port}/stats")["records"] - before
                    st = accesslog_stats(envoy)
                    dropped = st.get("dropped", 0)
                    if got + dropped >= served or time.time() > drain_deadline:
                        break
                    time.sleep(0.2)
                elapsed = time.time() - t0
                rows.append({"scenario": name, "served": served, "rps": r["rps"], "received": got,
                             "dropped": dropped, "unaccounted": served - got - dropped,
                             "shipped_counter": st.get("shipped", 0),
                             "records_per_s": got / elapsed, "drain_s": elapsed - secs})
                print(f"shipping: {name}: {served} served, {got} received, {dropped} dropped, "
                      f"{served - got - dropped} unaccounted, {got / elapsed:.0f} records/s", flush=True)
            finally:
                envoy.stop()
    finally:
        if col.poll() is None:
            col.send_signal(signal.SIGTERM)
            try:
                col.wait(10)
            except subprocess.TimeoutExpired:
                col.kill()
        log.close()
    out = [f"Command: `make bench FILTER=accesslog` (`bench/bench.py --filter accesslog`), "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Envoy 1 worker, wrk 1 thread, "
           "OTLP/HTTP JSON to demo/collector.py on 127.0.0.1 (Python, parses every record), "
           "flush every 200 ms, log line off. records/s: received ÷ (load + drain time).",
           "",
           "| scenario | requests served | req/s | records received | dropped (counted) | unaccounted | records/s delivered | drain after load (s) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in rows:
        out.append(f"| {x['scenario']} | {x['served']} | {x['rps']:.0f} | {x['received']} | {x['dropped']} | "
                   f"{x['unaccounted']} | {x['records_per_s']:.0f} | {x['drain_s']:.1f} |")
    return "\n".join(out) + "\n"


def harness_bench():
    """One request cycle in wasm-test-harness (release build): wall clock."""
    cmd = ["bench", "-q", "-p", "wasm-test-harness", "--bench", "request_cycle"]
    out = cargo(cmd, capture=True)
    rows = "\n".join(l for l in out.splitlines() if l.startswith("|"))
    return (f"Command: `make bench` (`cargo {' '.join(cmd)}`), {time.strftime('%Y-%m-%d')}; "
            "50 000 cycles after 5 000 warm-up, fuel averaged over 100 cycles.\n\n" + rows + "\n")


# Bench groups whose fuel paths sit under another filter's name.
FUEL_PREFIX = {"authn-ext": "authn"}


def fuel_bench(filt):
    """Guest instructions per request for every path (tests/src/fuel.rs)."""
    filt = FUEL_PREFIX.get(filt, filt)
    cmd = ["bench", "-q", "-p", "meshguard-e2e", "--bench", "fuel"] + (["--", filt] if filt else [])
    out = cargo(cmd, capture=True)
    rows = "\n".join(l for l in out.splitlines() if l.startswith("|"))
    return (f"Command: `make bench` (`cargo {' '.join(cmd)}`), {time.strftime('%Y-%m-%d')}; "
            "one warm-up request, then the average over 100.\n\n" + rows + "\n")


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
