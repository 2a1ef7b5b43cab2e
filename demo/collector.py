#!/usr/bin/env python3
"""A counting log collector for the accesslog filter's tests (and a look at
what it ships). Standard library only; binds to 127.0.0.1 unless told
otherwise.

    python3 demo/collector.py --port 4318

  POST /v1/logs   OTLP/HTTP JSON logs: every logRecord's body.stringValue
                  must be a meshguard.access.v1 record (JSON); answers 200 {}
                  or, for a malformed request, 400.
  POST /_bulk     Elasticsearch bulk NDJSON (action line + source line, the
                  last line ending in \\n); answers like Elasticsearch:
                  {"took":0,"errors":false,"items":[{"create":{"status":201}}...]}
  GET  /records   every record received so far, one JSON object per line
  GET  /stats     {"requests": n, "records": n, "bad": n}
  POST /status?code=503   answer every later POST with this status (0: normal)
"""
import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of new connections from
    # Envoy (16 clients on 2 workers) then overflows it while this process
    # waits for a CPU, the dropped SYNs are retried after 1 s, and Envoy's
    # 1 s connect timeout answers 503.
    request_queue_size = 128


LOCK = threading.Lock()
RECORDS = []
STATS = {"requests": 0, "records": 0, "bad": 0}
FORCED = {"code": 0}


def otlp_records(body):
    doc = json.loads(body)
    out = []
    for rl in doc["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for rec in sl["logRecords"]:
                int(rec["timeUnixNano"])  # 64-bit ints travel as strings
                out.append(json.loads(rec["body"]["stringValue"]))
    return out


def bulk_records(body):
    text = body.decode("utf-8")
    if not text.endswith("\n"):
        raise ValueError("bulk body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) % 2:
        raise ValueError("odd number of bulk lines")
    out = []
    for action, source in zip(lines[0::2], lines[1::2]):
        if "create" not in json.loads(action):
            raise ValueError("expected create actions")
        out.append(json.loads(source))
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshguard-demo-collector"
    disable_nagle_algorithm = True

    def _send(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlparse(self.path).path
        with LOCK:
            if path == "/records":
                body = "".join(json.dumps(r) + "\n" for r in RECORDS)
                return self._send(200, body, "application/x-ndjson")
            if path == "/stats":
                return self._send(200, json.dumps(STATS))
        self._send(404, "{}")

    def do_POST(self):
        url = urlparse(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if url.path == "/status":
            FORCED["code"] = int(parse_qs(url.query).get("code", ["0"])[0])
            return self._send(200, "{}")
        with LOCK:
            STATS["requests"] += 1
        if FORCED["code"]:
            return self._send(FORCED["code"], "{}")
        try:
            if url.path == "/v1/logs":
                records = otlp_records(body)
            elif url.path == "/_bulk":
                records = bulk_records(body)
            else:
                return self._send(404, "{}")
            for r in records:
                if r.get("schema") != "meshguard.access.v1":
                    raise ValueError("not a meshguard.access.v1 record")
        except (ValueError, KeyError, TypeError) as e:
            with LOCK:
                STATS["bad"] += 1
            return self._send(400, json.dumps({"error": str(e)}))
        with LOCK:
            RECORDS.extend(records)
            STATS["records"] += len(records)
        if url.path == "/_bulk":
            items = [{"create": {"status": 201}} for _ in records]
            return self._send(200, json.dumps({"took": 0, "errors": False, "items": items}))
        self._send(200, "{}")

    def log_message(self, fmt, *args):
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4318)
    a = p.parse_args()
    server = Server((a.host, a.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"collector on http://{a.host}:{a.port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
