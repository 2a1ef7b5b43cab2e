-- wrk script for the authn-ext bench's HMAC variant: every request is a
-- POST with the same small JSON body. bench/bench.py passes the body in
-- MESHGUARD_BENCH_BODY (HMAC_BODY there, the body it signs with
-- `meshguard sign`) and the Host, Content-Digest, Signature-Input and
-- Signature headers with -H; wrk adds Content-Length.
wrk.method = "POST"
wrk.body = os.getenv("MESHGUARD_BENCH_BODY") or error("MESHGUARD_BENCH_BODY is not set")
wrk.headers["Content-Type"] = "application/json"
