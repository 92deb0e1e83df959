"""Schemathesis hooks for the authorizer: sign processor requests exactly as the card
processor does, send the admin token on admin routes, and steer part of the generated data
towards an account that exists so that decisions and bookings are exercised too.

Configured by scripts/schemathesis through environment variables:
AUTHZ_API_KEY, AUTHZ_API_SECRET (base64), AUTHZ_ADMIN_TOKEN, AUTHZ_KNOWN_USER.
"""

import base64
import hashlib
import hmac
import json
import os
import random
import time
import uuid

import schemathesis

API_KEY = os.environ["AUTHZ_API_KEY"]
SECRET = base64.b64decode(os.environ["AUTHZ_API_SECRET"])
ADMIN_TOKEN = os.environ["AUTHZ_ADMIN_TOKEN"]
KNOWN_USER = os.environ.get("AUTHZ_KNOWN_USER", "st-user")
KNOWN_CURRENCY = "ARS"
PROCESSOR = "/transactions/"

# Amounts that reach every branch of a decision: approvals, declines, sub-minor precision,
# exponent notation, negative, and too large.
AMOUNTS = [1, 0, "0.01", "10.50", 10.5, "999999999.99", "0.001", 1.5e1, "-1.00", "12345678901234567890"]


def raw_body(case) -> bytes:
    """The exact bytes to send: what `requests` would send for the generated body."""
    body = case.body
    if type(body).__name__ == "NotSet":
        return b""
    if isinstance(body, bytes):
        return body
    if body is None:
        return b"null"
    try:
        return json.dumps(body, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        return str(body).encode("utf-8")


def steer(case, path):
    """Point part of the generated requests at the account that exists, with amounts that
    reach every branch of a decision (generated data alone almost never names it)."""
    if random.random() >= 0.6:
        return
    body = case.body
    if path.startswith(("/transactions/authorizations", "/transactions/adjustments")):
        if isinstance(body, dict) and isinstance(body.get("amount"), dict):
            body["user"] = {"id": KNOWN_USER}
            body["amount"]["local"] = {"total": random.choice(AMOUNTS), "currency": KNOWN_CURRENCY}
            tx = body.get("transaction")
            if isinstance(tx, dict):
                # Generated ids repeat ("0", "AAA"): one booking per id, the rest are duplicates.
                tx["id"] = "st-" + uuid.uuid4().hex
                if random.random() < 0.7:
                    tx["type"] = random.choice(["PURCHASE", "WITHDRAWAL", "REFUND", "BALANCE_INQUIRY"])
    elif path.startswith("/v1/accounts/"):
        params = case.path_parameters
        if isinstance(params, dict) and "user_id" in params:
            params["user_id"] = KNOWN_USER
            params["currency"] = KNOWN_CURRENCY


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    steer(case, path)
    headers = dict(case.headers or {})
    if path.startswith(PROCESSOR):
        body = raw_body(case)
        ts = str(int(time.time()))
        mac = hmac.new(SECRET, ts.encode() + path.encode() + body, hashlib.sha256).digest()
        for name in list(headers):
            if name.lower() in ("x-api-key", "x-timestamp", "x-endpoint", "x-signature"):
                del headers[name]
        headers["x-api-key"] = API_KEY
        headers["x-timestamp"] = ts
        headers["x-endpoint"] = path
        headers["x-signature"] = "hmac-sha256 " + base64.b64encode(mac).decode()
        key = headers.get("x-idempotency-key")
        # A fresh key most of the time; the generated one otherwise (exercises replays and 409).
        if not isinstance(key, str) or random.random() < 0.8:
            headers["x-idempotency-key"] = "st-" + uuid.uuid4().hex
        headers.setdefault("content-type", "application/json")
        kwargs["data"] = body
    elif path.startswith("/v1/"):
        for name in list(headers):
            if name.lower() == "authorization":
                del headers[name]
        headers["Authorization"] = "Bearer " + ADMIN_TOKEN
    case.headers = headers
