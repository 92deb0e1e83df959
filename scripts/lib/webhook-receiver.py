#!/usr/bin/env python3
"""A webhook subscriber for scripts/perf: answers the URL challenge of docs/webhooks.md
with the HMAC of the subscription's secret (read from SECRET_FILE at each challenge, since
the secret exists only once the subscription is created) and acknowledges every delivery
with 200, keeping the connection open (HTTP/1.1). Counts the deliveries and the distinct
event ids, written to COUNT_FILE when it stops (SIGTERM).

    webhook-receiver.py PORT SECRET_FILE COUNT_FILE
"""

import hashlib
import hmac
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

port, secret_file, count_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
deliveries = 0
events = set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        if body:
            self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        code = parse_qs(urlparse(self.path).query).get("challengeCode", [""])[0]
        with open(secret_file) as f:
            secret = f.read().strip()
        mac = hmac.new(secret.encode(), code.encode(), hashlib.sha256).hexdigest()
        self.answer(200, json.dumps({"encrypted_challenge": mac}).encode())

    def do_POST(self):
        global deliveries
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with lock:
            deliveries += 1
            events.add(self.headers.get("x-event-id", ""))
        self.answer(200)


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)


def stop(*_):
    with open(count_file, "w") as f:
        json.dump({"deliveries": deliveries, "events": len(events)}, f)
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, stop)
server.serve_forever()
