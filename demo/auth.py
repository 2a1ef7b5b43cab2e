#!/usr/bin/env python3
"""Demo auth service: what authn's external-auth mode (and the Lua
EnvoyFilter it replaces, istio/examples/lua-auth/) calls. Standard library
only; binds to 127.0.0.1 unless told otherwise.

    python3 demo/auth.py --port 8082

Any method, any path. The user comes from `authorization: Bearer <user>`,
else from the cookie `session=<user>`:
  <user>      -> 200, `x-user-id: <user>`, `x-tenant: acme`
  slow        -> waits --slow-seconds, then 200
  boom        -> 500
  anonymous   -> 200 without identity headers
  blocked     -> 403 (JSON body)
  no user     -> 401, `www-authenticate: Bearer realm="demo"` (JSON body)
Denials also carry `x-internal-debug`, which must never reach a client.
GET /__stats answers {"calls": N}: checks answered so far (not counted).
"""
import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of new connections from
    # Envoy (16 clients on 2 workers) then overflows it while this process
    # waits for a CPU, the dropped SYNs are retried after 1 s, and Envoy's
    # 1 s connect timeout answers 503.
    request_queue_size = 128


class AuthHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshguard-demo-auth"
    disable_nagle_algorithm = True

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)
        if self.path == "/__stats":
            with self.server.lock:
                calls = self.server.calls
            self._send(200, {"calls": calls}, {})
            return
        with self.server.lock:
            self.server.calls += 1
        auth = self.headers.get("authorization", "")
        user = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""
        if not user:
            for part in self.headers.get("cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == "session":
                    user = value
        if user == "slow":
            time.sleep(self.server.slow_seconds)
        leak = {"x-internal-debug": "leak"}
        if user == "boom":
            self._send(500, {"error": "internal"}, {})
        elif user == "anonymous":
            self._send(200, {"user": None}, {})
        elif user == "blocked":
            self._send(403, {"error": "forbidden"}, leak)
        elif user:
            self._send(200, {"user": user}, {"x-user-id": user, "x-tenant": "acme"})
        else:
            self._send(401, {"error": "unauthenticated"}, {"www-authenticate": 'Bearer realm="demo"', **leak})

    def _send(self, status, payload, headers):
        out = (json.dumps(payload) + "\n").encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, fmt, *args):
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8082)
    p.add_argument("--slow-seconds", type=float, default=2.0)
    a = p.parse_args()
    server = Server((a.host, a.port), AuthHandler)
    server.daemon_threads = True
    server.slow_seconds = a.slow_seconds
    server.calls = 0
    server.lock = threading.Lock()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"demo auth listening on http://{a.host}:{a.port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
