"""Schemathesis hooks for the authorizer: sign processor requests exactly as the card
processor does and channel requests with a channel key pair, send the admin token on admin
routes, and steer part of the generated data towards an account that exists (and towards
reservations made earlier in the run) so that decisions, holds and bookings are exercised too.

InStore requests are signed as InStore signs them: an envelope whose payload's
JSON.stringify is signed with the tenant's verification key (section 1.3 of the InStore
page), a GET signed over the JSON.stringify of its query parameters; part of them are steered
to a stored-value number linked to the known account. The wallet actions are signed the same
way, bare (the body's JSON.stringify) or enveloped; part of their payments use barcodes the
admin route issued earlier in the run for the known account.

Configured by scripts/schemathesis through environment variables:
AUTHZ_API_KEY, AUTHZ_API_SECRET (base64), AUTHZ_ADMIN_TOKEN, AUTHZ_KNOWN_USER,
AUTHZ_CHANNEL_KEY, AUTHZ_CHANNEL_SECRET (base64), AUTHZ_INSTORE_TENANT, AUTHZ_INSTORE_KEY,
AUTHZ_INSTORE_CALLBACK (an allowed callback URL prefix), AUTHZ_INSTORE_NUMBER, AUTHZ_BASE.
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
CHANNELS = "/channels/"
CHANNEL_KEY = os.environ["AUTHZ_CHANNEL_KEY"]
CHANNEL_SECRET = base64.b64decode(os.environ["AUTHZ_CHANNEL_SECRET"])
INSTORE = "/instore/"
INSTORE_TENANT = os.environ.get("AUTHZ_INSTORE_TENANT", "")
INSTORE_KEY = os.environ.get("AUTHZ_INSTORE_KEY", "").encode()
INSTORE_CALLBACK = os.environ.get("AUTHZ_INSTORE_CALLBACK", "")
INSTORE_NUMBER = os.environ.get("AUTHZ_INSTORE_NUMBER", "")
# The pay-on-account account the steered requests open and charge.
INSTORE_POA_ACCOUNT = "st-poa-account"
BASE = os.environ.get("AUTHZ_BASE", "http://127.0.0.1")
# Reservation ids sent in this run: captures, cancels, refunds and reads go to them mostly.
RESERVATIONS = []
# Wallet barcodes issued in this run, and the wallet transaction ids answered.
BARCODES = []
WALLET_TRANSACTIONS = []
WALLET = ("/instore/initialize_wallet", "/instore/pay_wallet", "/instore/available_wallet_refund",
          "/instore/cancel_wallet_payment", "/instore/log_cancel_wallet", "/instore/refund_wallet_payment")

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
    elif path.startswith(CHANNELS):
        if path == "/channels/v1/reservations" and isinstance(body, dict):
            body["user_id"] = KNOWN_USER + "-channel"
            body["currency"] = KNOWN_CURRENCY
            body["amount"] = random.choice(AMOUNTS)
            body["reservation_id"] = "st-" + uuid.uuid4().hex
            # Generated cards, merchants and windows are unknown or out of range: mostly
            # none, so that holds are made, captured, cancelled and refunded.
            for field in ("card_id", "merchant", "expires_in_secs"):
                if random.random() < 0.8:
                    body.pop(field, None)
            RESERVATIONS.append(body["reservation_id"])
    elif path == "/v1/wallet/barcodes" and isinstance(body, dict):
        body["user_id"] = KNOWN_USER
        body["currency"] = KNOWN_CURRENCY
        body.pop("card_id", None)
        if random.random() < 0.7:
            body.pop("expires_in_secs", None)
    elif path.startswith("/v1/accounts/"):
        params = case.path_parameters
        if isinstance(params, dict) and "user_id" in params:
            params["user_id"] = KNOWN_USER
            params["currency"] = KNOWN_CURRENCY


def sign(headers, api_key, secret, endpoint, body):
    """The processor's scheme: HMAC-SHA256 over timestamp ++ endpoint ++ raw body."""
    ts = str(int(time.time()))
    mac = hmac.new(secret, ts.encode() + endpoint.encode() + body, hashlib.sha256).digest()
    for name in list(headers):
        if name.lower() in ("x-api-key", "x-timestamp", "x-endpoint", "x-signature"):
            del headers[name]
    headers["x-api-key"] = api_key
    headers["x-timestamp"] = ts
    headers["x-endpoint"] = endpoint
    headers["x-signature"] = "hmac-sha256 " + base64.b64encode(mac).decode()


def js(value) -> bytes:
    """ECMAScript JSON.stringify of a parsed value: compact, members in order, non-ASCII
    literal, control characters escaped with lower-case hex (what the server reproduces)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def instore_payload(path, request_id):
    """A well-formed payload for the stored-value action at `path`, on the linked number."""
    amount = {"amount": random.choice([1, 100, 1220, 0, 10**9]), "precision": random.choice([2, 2, 0, 4]),
              "currency": random.choice([KNOWN_CURRENCY, KNOWN_CURRENCY, "USD", "JPY"])}
    base = {"requestId": request_id, "locationId": "st-store", "workstationId": "st-pos"}
    if path == "/instore/storedvaluecard":
        return {**base, "type": random.choice(["GiftCard", "ReturnCard", "Promotional"]),
                "status": random.choice(["Active", "Inactive"]), "balance": amount}
    if path == "/instore/storedvaluecard/{number}":
        return {**base, "number": INSTORE_NUMBER, "cartKey": "st-cart"}
    action = random.choice(["Load", "Redeem", "Redeem", "Cancel"])
    if action == "Cancel":
        return {**base, "action": action, "number": INSTORE_NUMBER,
                "external_transaction_id": "svt-" + uuid.uuid4().hex[:20],
                "external_payment_id": "svp-" + uuid.uuid4().hex[:20]}
    return {**base, "action": action, "number": INSTORE_NUMBER, "amount": amount,
            "session_id": "st-session", "reference": "st-" + uuid.uuid4().hex[:8]}


def wallet_payload(path):
    """A well-formed body for the wallet action at `path`, on a barcode or transaction id of
    this run mostly."""
    barcode = random.choice(BARCODES) if BARCODES and random.random() < 0.8 else \
        "".join(random.choice("0123456789") for _ in range(24))
    tx = random.choice(WALLET_TRANSACTIONS) if WALLET_TRANSACTIONS and random.random() < 0.8 else \
        "wtx-" + uuid.uuid4().hex[:20]
    total = random.choice([1, 100, 1220, 0, 10**9])
    if path == "/instore/initialize_wallet":
        return {"location_id": "st-store"}
    if path == "/instore/pay_wallet":
        return {"barcode": barcode, "currency": random.choice([KNOWN_CURRENCY, KNOWN_CURRENCY, "USD"]),
                "total": total, "pos_local_time": "2024-01-24 12:37:54", "tip": random.choice([0, 1, total]),
                "note": "st"}
    if path == "/instore/log_cancel_wallet":
        return {"barcode": barcode, "total": str(total), "tip": 0, "currency": KNOWN_CURRENCY,
                "reference": "st-" + uuid.uuid4().hex[:8], "response_code": "", "transaction_id": tx,
                "pos_local_time": "t", "error_message": "timeout"}
    if path == "/instore/cancel_wallet_payment":
        return random.choice([{}, {"transaction_id": tx}, {"barcode": barcode}])
    return {"transaction_id": tx, "pos_local_time": "t", "note": "st"}


def poa_payload(path):
    """A well-formed pay-on-account body (bare, or an envelope's payload) for `path`."""
    amount = {"amount": str(random.choice([1, 100, 1220, 0, 10**9])), "precision": random.choice(["2", "2", "0"]),
              "currency": random.choice([KNOWN_CURRENCY, KNOWN_CURRENCY, "USD"])}
    if path == "/instore/payonaccountlog":
        return {"action": random.choice(["Credit", "Inquiry"]), "account_number": INSTORE_POA_ACCOUNT,
                "authorized_user_id": "st-user", "amount": amount, "session_id": "st-session",
                "order_id": "st-" + uuid.uuid4().hex[:8], "status": random.choice(["approved", "declined"])}
    action = random.choice(["Create", "Credit", "Credit", "Inquiry", "Update"])
    body = {"action": action, "account_number": INSTORE_POA_ACCOUNT, "authorized_user_ids": ["st-user"]}
    if action in ("Create", "Update"):
        body["company_name"] = "st-company"
    if action == "Create":
        body["credit_limit"] = {**amount, "amount": "100000", "precision": "2"}
    if action == "Credit":
        body["balance"] = amount
    return body


def instore_signature(message: bytes) -> str:
    mac = hmac.new(INSTORE_KEY, message, hashlib.sha256).digest()
    # Every spelling the verifier admits.
    return random.choice([mac.hex(), mac.hex().upper(), "sha256=" + mac.hex(),
                          base64.b64encode(mac).decode(), base64.urlsafe_b64encode(mac).decode().rstrip("=")])


def instore(case, headers, kwargs):
    """Signs an InStore request as InStore does; steers most of them to well-formed
    payloads on the linked number, and signs the rest as generated."""
    path = case.operation.path
    params = case.path_parameters
    if isinstance(params, dict) and "number" in params and random.random() < 0.8:
        params["number"] = INSTORE_NUMBER
    if isinstance(params, dict) and "account_number" in params and random.random() < 0.8:
        params["account_number"] = INSTORE_POA_ACCOUNT
    concrete = path
    if isinstance(params, dict) and isinstance(params.get("number"), str):
        concrete = path.replace("{number}", params["number"])
    poa = "payonaccount" in path
    for name in list(headers):
        if name.lower() in ("x-signature", "x-api-key"):
            del headers[name]
    headers["x-correlation-id"] = "st-" + uuid.uuid4().hex[:12]
    if case.operation.method.upper() == "GET":
        query = case.query if isinstance(case.query, dict) else {}
        if random.random() < 0.7:
            if not poa:
                query = {"requestId": "st-" + uuid.uuid4().hex, "locationId": "st-store",
                         "limit": str(random.choice([1, 10, 100, 500]))}
            elif "{account_number}" in path:
                query = {}
            else:
                query = {"account_number": INSTORE_POA_ACCOUNT}
        if all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in query.values()):
            query = {k: str(v) for k, v in query.items()}
            case.query = query
            if "params" in kwargs:
                kwargs["params"] = query
            signed = dict(query)
            # The path form signs the query with the route's account_number appended.
            if "{account_number}" in path and isinstance(params, dict):
                signed["account_number"] = str(params.get("account_number", ""))
            try:
                headers["x-signature"] = instore_signature(js(signed))
            except (TypeError, ValueError, UnicodeEncodeError):
                pass
        return
    body = case.body
    if path in WALLET:
        # Bare most of the time: the signature covers the body's JSON.stringify.
        if random.random() < 0.7 or not isinstance(body, dict):
            body = wallet_payload(path)
            if random.random() < 0.3:
                request_id = "st-" + uuid.uuid4().hex
                body = {"payload_url": BASE + concrete, "payload": {**body, "requestId": request_id},
                        "tenant_id": INSTORE_TENANT, "requestId": request_id,
                        "callbackUrl": INSTORE_CALLBACK + request_id}
            case.body = body
        signed = body.get("payload") if "callbackUrl" in body else body
        try:
            headers["x-signature"] = instore_signature(js(signed))
        except (TypeError, ValueError, UnicodeEncodeError):
            pass
        headers.setdefault("content-type", "application/json")
        kwargs["data"] = raw_body(case)
        return
    if poa and (random.random() < 0.7 or not isinstance(body, dict)):
        # Bare half the time (signed over its JSON.stringify), enveloped otherwise.
        payload = poa_payload(path)
        if random.random() < 0.5:
            case.body = payload
            headers["x-signature"] = instore_signature(js(payload))
            headers.setdefault("content-type", "application/json")
            kwargs["data"] = raw_body(case)
            return
        request_id = "st-" + uuid.uuid4().hex
        body = {"payload_url": BASE + concrete, "payload": {**payload, "requestId": request_id},
                "tenant_id": INSTORE_TENANT, "requestId": request_id,
                "callbackUrl": INSTORE_CALLBACK + request_id}
        case.body = body
    elif random.random() < 0.7 or not isinstance(body, dict):
        request_id = "st-" + uuid.uuid4().hex
        body = {"payload_url": BASE + concrete, "payload": instore_payload(path, request_id),
                "tenant_id": INSTORE_TENANT, "requestId": request_id,
                "callbackUrl": INSTORE_CALLBACK + request_id}
        if path == "/instore/storedvaluecard/{number}" and isinstance(params, dict):
            body["payload"]["number"] = params.get("number", INSTORE_NUMBER)
        case.body = body
    elif random.random() < 0.8:
        body["tenant_id"] = INSTORE_TENANT
    payload = body.get("payload")
    try:
        signature = instore_signature(js(payload))
    except (TypeError, ValueError, UnicodeEncodeError):
        signature = None
    if signature is not None:
        headers["x-signature"] = signature
        if "verification_signature" in body:
            body["verification_signature"] = signature
    headers.setdefault("content-type", "application/json")
    kwargs["data"] = raw_body(case)


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    steer(case, path)
    headers = dict(case.headers or {})
    if path.startswith(CHANNELS):
        # The signed endpoint is the concrete path: ids of a safe alphabet keep it exactly
        # the bytes sent (no percent-encoding to disagree on).
        params = case.path_parameters
        if isinstance(params, dict) and "reservation_id" in params:
            if RESERVATIONS and random.random() < 0.8:
                params["reservation_id"] = random.choice(RESERVATIONS)
            else:
                params["reservation_id"] = "st-" + uuid.uuid4().hex
            endpoint = path.replace("{reservation_id}", params["reservation_id"])
        else:
            endpoint = path
        body = raw_body(case) if case.operation.method.upper() == "POST" else b""
        sign(headers, CHANNEL_KEY, CHANNEL_SECRET, endpoint, body)
        if case.operation.method.upper() == "POST":
            key = headers.get("x-idempotency-key")
            if not isinstance(key, str) or random.random() < 0.8:
                headers["x-idempotency-key"] = "st-" + uuid.uuid4().hex
            headers.setdefault("content-type", "application/json")
            kwargs["data"] = body
    elif path.startswith(PROCESSOR):
        body = raw_body(case)
        sign(headers, API_KEY, SECRET, path, body)
        key = headers.get("x-idempotency-key")
        # A fresh key most of the time; the generated one otherwise (exercises replays and 409).
        if not isinstance(key, str) or random.random() < 0.8:
            headers["x-idempotency-key"] = "st-" + uuid.uuid4().hex
        headers.setdefault("content-type", "application/json")
        kwargs["data"] = body
    elif path.startswith(INSTORE):
        instore(case, headers, kwargs)
    elif path.startswith("/v1/"):
        for name in list(headers):
            if name.lower() == "authorization":
                del headers[name]
        headers["Authorization"] = "Bearer " + ADMIN_TOKEN
    case.headers = headers


@schemathesis.hook
def after_call(context, case, response):
    """Remember the barcodes issued and the wallet payments approved: later requests use them."""
    path = case.operation.path
    if path not in ("/v1/wallet/barcodes", "/instore/pay_wallet") or response.status_code not in (200, 201):
        return
    try:
        answer = response.json()
    except ValueError:
        return
    if not isinstance(answer, dict):
        return
    if isinstance(answer.get("barcode"), str):
        BARCODES.append(answer["barcode"])
    if isinstance(answer.get("transaction_id"), str):
        WALLET_TRANSACTIONS.append(answer["transaction_id"])
