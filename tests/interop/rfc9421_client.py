#!/usr/bin/env python3
"""Interoperability check for authn's `hmac` rules: requests signed by an
independent RFC 9421 implementation (PyPI `http-message-signatures`, pyauth,
with `requests`), sent through Envoy; then the same requests altered in each
covered component after signing. Prints one JSON object per request:
{"name", "status", "user"} (user: the x-user-id the upstream saw, if any).

    .venv/bin/python tests/interop/rfc9421_client.py --port P --key-id K --secret-b64 S
"""
import argparse
import base64
import hashlib
import json

import requests
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms


def content_digest(body):
    """RFC 9530 Content-Digest, sha-256 (a structured-field dictionary)."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


class Keys(HTTPSignatureKeyResolver):
    def __init__(self, keys):
        self.keys = keys

    def resolve_public_key(self, key_id):
        return self.keys[key_id]

    def resolve_private_key(self, key_id):
        return self.keys[key_id]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key-id", required=True)
    p.add_argument("--secret-b64", required=True)
    a = p.parse_args()
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=Keys({a.key_id: base64.b64decode(a.secret_b64)}),
    )
    base = f"http://127.0.0.1:{a.port}"
    session = requests.Session()

    def signed(method, path, body=None, extra=None):
        req = requests.Request(method, base + path, data=body, headers=extra or {}).prepare()
        covered = ["@method", "@authority", "@path", "@query"]
        if extra:
            covered.extend(k.lower() for k in extra)
        # With the body, the library adds Content-Digest (sha-256) and covers it.
        signer.sign(req, key_id=a.key_id, covered_component_ids=covered,
                    body=req.body if body is not None else None)
        if body is not None:
            assert "content-digest" in req.headers["Signature-Input"], req.headers["Signature-Input"]
        return req

    def send(name, req):
        r = session.send(req, timeout=10)
        user = None
        try:
            # The demo upstream echoes the headers it got as [name, value] pairs.
            users = [v for k, v in r.json().get("headers", []) if k == "x-user-id"]
            user = users[0] if len(users) == 1 else (users or None)
        except (ValueError, AttributeError):
            pass
        out = {"name": name, "status": r.status_code, "user": user}
        if r.status_code != 200:
            out["body"] = r.text[:200]
        print(json.dumps(out), flush=True)

    body = b'{"order": 7, "note": "interop"}'
    send("valid GET", signed("GET", "/signed/orders?id=7"))
    send("valid POST with body", signed("POST", "/signed/orders?id=7", body))
    send("valid with a covered header", signed("POST", "/signed/orders", body, {"X-Partner-Ref": "r-1"}))

    r = signed("POST", "/signed/orders?id=7", body)
    r.method = "PUT"
    send("method altered", r)
    r = signed("POST", "/signed/orders?id=7", body)
    r.headers["Host"] = "evil.example.com"
    send("authority altered", r)
    r = signed("POST", "/signed/orders?id=7", body)
    r.url = base + "/signed/refunds?id=7"
    send("path altered", r)
    r = signed("POST", "/signed/orders?id=7", body)
    r.url = base + "/signed/orders?id=8"
    send("query altered", r)
    r = signed("POST", "/signed/orders?id=7", body)
    r.body = b'{"order": 7, "note": "intErop"}'  # same length: Content-Length stays true
    send("body altered", r)
    r = signed("POST", "/signed/orders?id=7", body)
    r.headers["Content-Digest"] = content_digest(b"other")
    send("content-digest altered", r)
    r = signed("POST", "/signed/orders", body, {"X-Partner-Ref": "r-1"})
    r.headers["X-Partner-Ref"] = "r-2"
    send("covered header altered", r)
    r = signed("GET", "/signed/orders?id=7")
    sig = r.headers["Signature"]
    r.headers["Signature"] = sig[:-3] + ("A" if sig[-3] != "A" else "B") + sig[-2:]
    send("signature altered", r)


if __name__ == "__main__":
    main()
