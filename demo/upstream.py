#!/usr/bin/env python3
"""Demo upstream for meshguard: answers every request with the request it
received as JSON (method, path, headers in arrival order, body size), so you
can see exactly what the filters did. Standard library only; binds to
127.0.0.1 unless told otherwise.

    python3 demo/upstream.py --port 8081
"""
import argparse
import json
import re
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of new connections from
    # Envoy (16 clients on 2 workers) then overflows it while this process
    # waits for a CPU, the dropped SYNs are retried after 1 s, and Envoy's
    # 1 s connect timeout answers 503.
    request_queue_size = 128

MAX_BODY = 1 << 20


def render(payload):
    """Indented JSON, one header pair per line (easy to read after curl)."""
    text = json.dumps(payload, indent=2)
    return re.sub(r'\[\n\s+("(?:[^"\\]|\\.)*"),\n\s+("(?:[^"\\]|\\.)*")\n\s+\]', r"[\1, \2]", text)


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshguard-demo-upstream"
    # Headers and body go out in two writes; without this, Nagle plus the
    # peer's delayed ACK adds ~40 ms to every response.
    disable_nagle_algorithm = True

    def _echo(self):
        length = self.headers.get("content-length")
        body_size = 0
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                self.send_error(400, "bad content-length")
                return
            if n < 0 or n > MAX_BODY:
                self.send_error(413, "body too large")
                return
            body_size = len(self.rfile.read(n))
        payload = {
            "method": self.command,
            "path": self.path,
            # Keep order and duplicates: a list of [name, value] pairs.
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
            "body_bytes": body_size,
        }
        out = (render(payload) + "\n").encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _echo

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.verbose:
            sys.stderr.write("upstream: " + (fmt % args) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    server = Server((a.host, a.port), EchoHandler)
    server.daemon_threads = True
    server.verbose = a.verbose
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"demo upstream listening on http://{a.host}:{a.port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
