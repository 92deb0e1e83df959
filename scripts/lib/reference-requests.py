#!/usr/bin/env python3
"""Writes the signed authorizations that wrk sends to the processor's reference server.

    reference-requests.py OUT COUNT

One request a line, tab-separated: timestamp, signature, body. Each body is the protocol's
documented authorization (the one the benches use) with its own transaction id and user, and
is signed the way the reference verifies it: HMAC-SHA256 with the sample's api secret over
timestamp + endpoint + body, base64, behind "hmac-sha256 ". wrk cannot compute an HMAC, so the
signatures are made here before the clock starts, as the processor makes them on its side.
"""
import base64, hashlib, hmac, json, pathlib, sys, time

ENDPOINT = "/transactions/authorizations"
# The api secret of the sample's own key table (main.js, apiSecrets).
SECRET = base64.b64decode("uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=")
VECTOR = pathlib.Path(__file__).resolve().parents[2] / "crates/protocol/tests/vectors/request-body.json"

out, count = sys.argv[1], int(sys.argv[2])
vector = json.loads(VECTOR.read_text())
ts = str(int(time.time()))
with open(out, "w", encoding="utf-8") as f:
    for i in range(count):
        vector["transaction"]["id"] = f"ctx-ref-{i}"
        vector["user"]["id"] = f"usr-perf-{i}"
        body = json.dumps(vector, separators=(",", ":"))
        assert "\t" not in body and "\n" not in body
        mac = hmac.new(SECRET, (ts + ENDPOINT + body).encode(), hashlib.sha256).digest()
        f.write(f"{ts}\thmac-sha256 {base64.b64encode(mac).decode()}\t{body}\n")
