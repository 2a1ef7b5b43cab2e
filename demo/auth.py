#!/usr/bin/env python3
"""Demo auth service for meshguard's callout tests (and, later, the authn
filter's external-auth mode). Standard library only; binds to 127.0.0.1
unless told otherwise.

    python3 demo/auth.py --port 8082

Any GET/POST:
  authorization: Bearer <user>   -> 200, `x-user-id: <user>`
  authorization: Bearer slow     -> waits --slow-seconds, then 200
  authorization: Bearer boom     -> 500
  authorization: Bearer anonymous -> 200 without x-user-id
  anything else                  -> 401, `www-authenticate: Bearer`, JSON body
"""
import argparse
import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AuthHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshguard-demo-auth"
    disable_nagle_algorithm = True

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)
        auth = self.headers.get("authorization", "")
        user = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""
        if user == "slow":
            time.sleep(self.server.slow_seconds)
        if user == "boom":
            self._send(500, {"error": "internal"}, {})
        elif user == "anonymous":
            self._send(200, {"user": None}, {})
        elif user:
            self._send(200, {"user": user}, {"x-user-id": user})
        else:
            self._send(401, {"error": "unauthenticated"}, {"www-authenticate": 'Bearer realm="demo"'})

    def _send(self, status, payload, headers):
        out = (json.dumps(payload) + "\n").encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer

    def log_message(self, fmt, *args):
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8082)
    p.add_argument("--slow-seconds", type=float, default=2.0)
    a = p.parse_args()
    server = ThreadingHTTPServer((a.host, a.port), AuthHandler)
    server.daemon_threads = True
    server.slow_seconds = a.slow_seconds
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
