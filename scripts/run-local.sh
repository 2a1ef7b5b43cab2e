#!/usr/bin/env bash
# `make run`: demo upstream + Envoy with the meshguard filters, on 127.0.0.1.
# and the demo auth service authn's ext-auth rule calls (/legacy). Ctrl-C
# stops them all. Ports can be changed with LISTEN_PORT, ADMIN_PORT,
# UPSTREAM_PORT and AUTH_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

LISTEN_PORT=${LISTEN_PORT:-10000}
ADMIN_PORT=${ADMIN_PORT:-9901}
UPSTREAM_PORT=${UPSTREAM_PORT:-8081}
AUTH_PORT=${AUTH_PORT:-8082}
RLS_PORT=${RLS_PORT:-8083}
REDIS_PORT=${REDIS_PORT:-6399}
ENVOY=${ENVOY_BIN:-.venv/bin/envoy}
RUN_DIR=${RUN_DIR:-target/run}
mkdir -p "$RUN_DIR"

[ -x "$ENVOY" ] || { echo "Envoy not found at $ENVOY: run 'make venv'" >&2; exit 1; }
# Bind the way Envoy and the upstream do (SO_REUSEADDR): connections of a
# run stopped a moment ago linger in TIME-WAIT for ~60 s and must not count
# as "in use"; only a live listener does.
for port in "$LISTEN_PORT" "$ADMIN_PORT" "$UPSTREAM_PORT" "$AUTH_PORT" "$RLS_PORT" "$REDIS_PORT"; do
  if python3 -c "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $port))" 2>/dev/null; then :; else
    echo "port $port on 127.0.0.1 is in use; set LISTEN_PORT/ADMIN_PORT/UPSTREAM_PORT/AUTH_PORT/RLS_PORT/REDIS_PORT" >&2; exit 1
  fi
done

# The filters and their configs come from deploy/local/filters.yaml; the
# renderer checks each config with the filter's own code first, and that
# every module is in dist/ (else: run 'make build').
MESHGUARD=${MESHGUARD_BIN:-${CARGO_TARGET_DIR:-target}/debug/meshguard}
[ -x "$MESHGUARD" ] || { echo "meshguard CLI not found at $MESHGUARD: run 'make cli'" >&2; exit 1; }
"$MESHGUARD" envoy-config --listen "127.0.0.1:$LISTEN_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
  --upstream "127.0.0.1:$UPSTREAM_PORT" --cluster "demo_auth=127.0.0.1:$AUTH_PORT" \
  --cluster "rls=127.0.0.1:$RLS_PORT" \
  --wasm-dir "$PWD/dist" -o "$RUN_DIR/envoy.yaml"

pids=()
stop() {
  local rc=${1:-0}
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped Envoy, the demo upstream, the demo auth service and the rate-limit service"
  exit "$rc"
}
# Ctrl-C / SIGTERM: a clean stop (exit 0). Any other exit keeps its code,
# so a failed start-up fails `make run`.
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

# Children get their own session: Ctrl-C reaches only this script, which then
# stops them in order (and a stray signal cannot kill one behind our back).
setsid python3 demo/upstream.py --host 127.0.0.1 --port "$UPSTREAM_PORT" &
pids+=($!)
setsid python3 demo/auth.py --host 127.0.0.1 --port "$AUTH_PORT" &
pids+=($!)
# ratelimit's global rule asks meshguard-rls; its counters live in Redis
# (Debian's redis-server, started here on its own port) or, without one, in
# the service's memory.
RLS=${RLS_BIN:-${CARGO_TARGET_DIR:-target}/debug/meshguard-rls}
[ -x "$RLS" ] || { echo "meshguard-rls not found at $RLS: run 'make rls'" >&2; exit 1; }
if command -v redis-server >/dev/null; then
  setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
  pids+=($!)
  rls_store=(--redis "redis://127.0.0.1:$REDIS_PORT")
  rls_note="counters in Redis on 127.0.0.1:$REDIS_PORT"
else
  rls_store=(--memory)
  rls_note="counters in memory: 'apt-get install redis-server' to keep them in Redis"
fi
setsid "$RLS" --listen "127.0.0.1:$RLS_PORT" --limits deploy/local/limits.yaml "${rls_store[@]}" &
pids+=($!)
# Envoy's output goes through a filter that turns the accesslog filter's
# lines (`[time][thread][info][wasm] [src] wasm log <ids>: {json}`) into
# the bare JSON record, the rule README "accesslog" gives log shippers;
# every other line passes unchanged. `$!` stays Envoy's PID.
strip_wasm_prefix() {
  sed -u -E 's/^\[[^]]*\]\[[^]]*\]\[[^]]*\]\[wasm\] (\[[^]]*\] )?wasm log[^:]*: (\{.*\})$/\2/'
}
setsid "$ENVOY" -c "$RUN_DIR/envoy.yaml" --concurrency 2 --disable-hot-restart \
  --log-level warn --component-log-level wasm:info > >(strip_wasm_prefix) 2>&1 &
pids+=($!)

# Readiness with python3 (already required), not curl: the script must not
# depend on a tool that is only used in the examples below.
envoy_ready() {
  python3 -c "import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$ADMIN_PORT/ready', timeout=1).status == 200 else 1)
except Exception:
    sys.exit(1)"
}
for _ in $(seq 1 150); do
  if envoy_ready; then break; fi
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a process exited during start-up; see the output above" >&2; exit 1; }
  done
  sleep 0.2
done
envoy_ready || { echo "Envoy did not become ready within 30 s (admin: http://127.0.0.1:$ADMIN_PORT/ready); see the output above" >&2; exit 1; }
# The rate-limit service too: until it listens, global rules fail open.
rls_ready() {
  python3 -c "import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(('127.0.0.1', $RLS_PORT)) == 0 else 1)"
}
for _ in $(seq 1 50); do rls_ready && break; sleep 0.2; done
rls_ready || { echo "meshguard-rls did not listen on 127.0.0.1:$RLS_PORT within 10 s; see the output above" >&2; exit 1; }

curl_note=""
command -v curl >/dev/null || curl_note="  (curl is not installed: 'apt-get install curl' to try these)
"

cat <<MSG

meshguard is running: Envoy on http://127.0.0.1:$LISTEN_PORT -> demo upstream on 127.0.0.1:$UPSTREAM_PORT
(demo auth service for /legacy on 127.0.0.1:$AUTH_PORT; rate-limit service for /global on
127.0.0.1:$RLS_PORT, $rls_note)
(Envoy admin: http://127.0.0.1:$ADMIN_PORT, config: $RUN_DIR/envoy.yaml)

Try:
$curl_note  # authn: the API needs a token (401 without one); a demo token for bob
  # (demo keys, local only) puts x-user-id: bob in front of the upstream
  curl -si http://127.0.0.1:$LISTEN_PORT/api/items | head -1
  TOKEN=\$($MESHGUARD token --sub bob)
  curl -s -H "authorization: Bearer \$TOKEN" http://127.0.0.1:$LISTEN_PORT/api/items
  # a client-forged identity header never reaches the upstream
  curl -s -H 'x-user-id: admin' http://127.0.0.1:$LISTEN_PORT/public/x
  # authn ext-auth: /legacy asks the demo auth service (401 without credentials;
  # 'Bearer carol' or the cookie 'session=carol' -> x-user-id: carol)
  curl -si http://127.0.0.1:$LISTEN_PORT/legacy/orders | head -1
  curl -s -H 'authorization: Bearer carol' http://127.0.0.1:$LISTEN_PORT/legacy/orders
  # authn HMAC: /signed needs an RFC 9421 signature (demo key, local only)
  curl -si -X POST -d '{"qty": 1}' http://127.0.0.1:$LISTEN_PORT/signed/orders | head -1
  mapfile -t SIG < <($MESHGUARD sign POST http://127.0.0.1:$LISTEN_PORT/signed/orders --body '{"qty": 1}' \\
    --key-id partner-demo --secret-file deploy/local/demo-keys/partner-demo.key)
  curl -s -X POST -d '{"qty": 1}' "\${SIG[@]/#/-H}" http://127.0.0.1:$LISTEN_PORT/signed/orders
  # a signed-in user always gets the same variant (see x-ab-variant and x-demo-route)
  curl -s -H "authorization: Bearer \$TOKEN" http://127.0.0.1:$LISTEN_PORT/checkout/cart
  # an anonymous visitor gets a variant and a mg_visitor cookie that keeps it
  curl -si http://127.0.0.1:$LISTEN_PORT/checkout | grep -i -e set-cookie -e x-ab-variant
  # a client-forged variant header is overwritten
  curl -s -H "authorization: Bearer \$TOKEN" -H 'x-ab-variant: control' http://127.0.0.1:$LISTEN_PORT/checkout
  # QA override (the demo secret is 'letmein')
  curl -s -H "authorization: Bearer \$TOKEN" -H 'x-ab-force: control' -H 'x-ab-force-secret: letmein' http://127.0.0.1:$LISTEN_PORT/checkout
  # the search experiment only runs for shop.example.com and *.example.org hosts
  curl -s -H 'host: shop.example.com' -H "authorization: Bearer \$TOKEN" http://127.0.0.1:$LISTEN_PORT/search
  # ratelimit: /limited allows 5 requests a minute per user (anonymous: per IP), then 429
  for i in \$(seq 7); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:$LISTEN_PORT/limited; done; echo
  # ratelimit global mode: /global asks the rate-limit service (10 a minute per IP, shared
  # by every Envoy using it)
  for i in \$(seq 12); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:$LISTEN_PORT/global; done; echo
  # metrics
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep meshguard_

Every request prints its access record (schema meshguard.access.v1) below, one
JSON object per line (pipe 'make run' through 'jq -R "fromjson? // ."' to pretty-print).

Press Ctrl-C to stop.
MSG

# Exit (and clean up) as soon as either process ends.
wait -n "${pids[@]}" || true
echo "a process exited unexpectedly; shutting down" >&2
exit 1
