#!/usr/bin/env python3
"""Writes the signed authorizations that wrk sends to the processor's reference server, and
checks that the server answers them.

    reference-requests.py OUT COUNT          # write COUNT requests to OUT
    reference-requests.py OUT check PORT     # send the first 100 of OUT to 127.0.0.1:PORT

One request a line, tab-separated: timestamp, signature, body. Each body is the protocol's
documented authorization (the one the benches use) with its own transaction id and user, and
is signed the way the reference verifies it: HMAC-SHA256 with the sample's api secret over
timestamp + endpoint + body, base64, behind "hmac-sha256 ". wrk cannot compute an HMAC, so the
signatures are made here before the clock starts, as the processor makes them on its side.
"""
import base64, hashlib, hmac, http.client, json, pathlib, sys, time

ENDPOINT = "/transactions/authorizations"
# The api secret of the sample's own key table (main.js, apiSecrets).
SECRET = base64.b64decode("uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=")
VECTOR = pathlib.Path(__file__).resolve().parents[2] / "crates/protocol/tests/vectors/request-body.json"


def mac(*parts):
    return base64.b64encode(hmac.new(SECRET, "".join(parts).encode(), hashlib.sha256).digest()).decode()


def check(path, port):
    """The reference answers a bad signature by never answering, which wrk would only show as
    a connection gone quiet: so before the load, a sample must come back as a 200 whose
    signature verifies."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with open(path, encoding="utf-8") as f:
        for n, line in zip(range(100), f):
            ts, sig, body = line.rstrip("\n").split("\t")
            conn.request("POST", ENDPOINT, body.encode(), {
                "Content-Type": "application/json", "X-Endpoint": ENDPOINT, "X-Timestamp": ts,
                "X-Signature": sig, "X-Api-Key": "Lp0g+cwb19eEfTn1YIOydEnqPcZOg8YxHctnMe+1cQA="})
            try:
                r = conn.getresponse()
            except TimeoutError:
                sys.exit(f"reference: request {n} got no answer in 5 s (a signature it refused?)")
            answer = r.read().decode()
            expected = "hmac-sha256 " + mac(r.getheader("X-Timestamp", ""), ENDPOINT, answer)
            if r.status != 200 or r.getheader("X-Signature") != expected:
                sys.exit(f"reference: request {n} answered {r.status} {answer!r}, "
                         f"signature {r.getheader('X-Signature')!r}, expected {expected!r}")


if sys.argv[2] == "check":
    check(sys.argv[1], int(sys.argv[3]))
    sys.exit()
out, count = sys.argv[1], int(sys.argv[2])
vector = json.loads(VECTOR.read_text())
ts = str(int(time.time()))
with open(out, "w", encoding="utf-8") as f:
    for i in range(count):
        vector["transaction"]["id"] = f"ctx-ref-{i}"
        vector["user"]["id"] = f"usr-perf-{i}"
        body = json.dumps(vector, separators=(",", ":"))
        assert "\t" not in body and "\n" not in body
        f.write(f"{ts}\thmac-sha256 {mac(ts, ENDPOINT, body)}\t{body}\n")
