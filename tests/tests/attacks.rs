//! Hostile input: what an attacker (or a broken client) can send, and proof that each
//! attempt gets a clear refusal and changes nothing in the ledger. Complements
//! `bad_input.rs` (malformed bodies, bad signatures, odd but valid requests).

use crate::support::{assert_amounts_malformed, assert_booked_flagged};
use e2e::*;
use protocol::signature;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn host_port(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads one answer: until the server closes, or the head and a JSON body have arrived.
async fn read_answer(r: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(usize::MAX);
            if body.len() >= length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes `request` on a fresh connection while reading the answer (the server may answer
/// and close before the request is fully written), for at most 10 s.
async fn raw(app: &TestApp, request: &[u8]) -> String {
    let s = TcpStream::connect(host_port(app)).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let writer = async move {
        let _ = w.write_all(request).await;
        w
    };
    let (answer, _w) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(10), read_answer(&mut r))
                .await
                .unwrap_or_default()
        },
        writer
    );
    answer
}

fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A signed processor request as raw HTTP/1.1 bytes, with extra header lines.
fn signed_raw(app: &TestApp, path: &str, body: &[u8], key: &str, extra: &str) -> Vec<u8> {
    app.signed_raw(path, body, key, extra)
}

fn replace(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).expect("own body is UTF-8");
    assert!(text.contains(from), "{from} not in the body");
    text.replacen(from, to, 1).into_bytes()
}

async fn oversized_bodies(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let limit = 64 * 1024;
    // Chunked, no Content-Length: refused once the stream passes the limit.
    let chunk = vec![b'a'; 8 * 1024];
    let mut req = b"POST /transactions/authorizations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..(limit / chunk.len() + 2) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = raw(&app, &req).await;
    assert_eq!(status_of(&r), 413, "{r}");
    assert!(r.contains("body_too_large"), "{r}");
    // A declared length far beyond the limit is refused before anything is read.
    let r = raw(
        &app,
        b"POST /transactions/adjustments/credit HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    assert_eq!(status_of(&r), 413, "{r}");
    // The admin API has the same limit.
    let big = format!(r#"{{"amount":"1.00","reference":"{}"}}"#, "x".repeat(limit));
    let r = raw(
        &app,
        format!(
            "POST /v1/accounts/u1/ARS/deposits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nIdempotency-Key: big\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 413, "{r}");
    assert_eq!(app.ledger().await, before);
}

async fn deeply_nested_json(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    // 20,000 levels in a field we do not even read (the parser skips such fields without
    // its depth limit): refused before parsing, never stored.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let in_unknown = replace(
        &tx.body(),
        "\"extra_data\":",
        &format!("\"deep\":{deep},\"extra_data\":"),
    );
    let deep_object = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
    let in_known = replace(
        &tx.body(),
        "\"installments\":null",
        &format!("\"installments\":{deep_object}"),
    );
    for body in [&in_unknown, &in_known] {
        for path in [AUTH, ADJ_CREDIT, NOTIFY] {
            let r = app.processor(path, body, &uid("k")).await;
            assert_eq!(r.status, 400, "{path}");
            app.assert_signed(&r, path);
            assert_eq!(r.json()["error"]["code"], "malformed_request");
        }
    }
    let admin_body = format!(r#"{{"amount":"1.00","reference":{deep}}}"#);
    let r = raw(
        &app,
        format!(
            "POST /v1/accounts/u1/ARS/deposits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nIdempotency-Key: deep\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{admin_body}",
            admin_body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
    assert_eq!(app.ledger().await, before);
    // Moderate nesting in a field we keep is accepted, stored, and shown back.
    let fine = format!("{}1{}", "[".repeat(20), "]".repeat(20));
    let body = replace(
        &tx.body(),
        "\"installments\":null",
        &format!("\"installments\":{fine}"),
    );
    let r = app.processor(AUTH, &body, &uid("k")).await;
    assert_eq!(r.json()["status"], "APPROVED");
    let h = app
        .admin("GET", &format!("/v1/transactions/{}", tx.id), None, None)
        .await;
    assert_eq!(h.status, 200);
    assert!(h.json()["records"][0]["request"]["installments"].is_array());
    assert_eq!(app.available("u1", "ARS").await, "90.00");
}

async fn duplicate_keys(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let body = tx.body();
    // Which of two values counts must never be a parser's choice: a duplicated key in any
    // object we read is refused, whatever the values.
    let cases = [
        (
            "amount total twice",
            replace(&body, "\"total\":10.00,", "\"total\":10.00,\"total\":0.01,"),
        ),
        (
            "currency twice",
            replace(
                &body,
                "\"currency\":\"ARS\"",
                "\"currency\":\"ARS\",\"currency\":\"USD\"",
            ),
        ),
        (
            "user id twice",
            replace(
                &body,
                "\"user\":{\"id\":\"u1\"}",
                "\"user\":{\"id\":\"u1\",\"id\":\"u2\"}",
            ),
        ),
        (
            "transaction type twice",
            replace(
                &body,
                "\"type\":\"PURCHASE\"",
                "\"type\":\"REFUND\",\"type\":\"PURCHASE\"",
            ),
        ),
        (
            "local twice",
            replace(
                &body,
                "\"amount\":{",
                "\"amount\":{\"local\":{\"total\":1,\"currency\":\"ARS\"},",
            ),
        ),
        (
            "top-level amount twice",
            replace(
                &body,
                "\"user\":{",
                "\"amount\":{\"local\":{\"total\":\"0.01\",\"currency\":\"ARS\"}},\"user\":{",
            ),
        ),
    ];
    for (name, b) in &cases {
        for path in [AUTH, AUTH_DEBIT, ADJ_DEBIT, ADJ_CREDIT] {
            if *name == "user id twice" && [ADJ_DEBIT, ADJ_CREDIT].contains(&path) {
                continue; // below: an adjustment cannot be refused
            }
            let r = app.processor(path, b, &uid("k")).await;
            assert_eq!(r.status, 400, "{name} on {path}");
            app.assert_signed(&r, path);
            let e = r.json();
            assert_eq!(e["error"]["code"], "malformed_request", "{name}");
            assert!(
                e["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("duplicate field"),
                "{name}: {e}"
            );
        }
    }
    // Nor is an adjustment's user with two ids read either way: an adjustment cannot be
    // refused, so it is booked on suspense for review, and no cardholder's money moves.
    let adjustment = Tx::new(&uid("ctx"), "REFUND", "u1", "10.00", "ARS");
    let b = replace(
        &adjustment.body(),
        "\"user\":{\"id\":\"u1\"}",
        "\"user\":{\"id\":\"u1\",\"id\":\"u2\"}",
    );
    let r = app.processor(ADJ_CREDIT, &b, &uid("k")).await;
    assert_booked_flagged(&app, &r, ADJ_CREDIT, &["UNREAD_FIELDS", "SUSPENSE"]);
    // A notification with a duplicated key is never read one way or the other: it is kept
    // for review and changes no money.
    let key = uid("adv");
    let advice = replace(
        &tx.approved_advice(&key),
        "\"event_id\":\"approved-authorization-advice\"",
        "\"event_id\":\"authorization-advice\",\"event_id\":\"approved-authorization-advice\"",
    );
    let r = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["effect"], "REVIEW");
    // The admin API refuses duplicates too.
    let dup = r#"{"amount":"1.00","amount":"900.00"}"#;
    let r = raw(
        &app,
        format!(
            "POST /v1/accounts/u1/ARS/deposits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nIdempotency-Key: dup\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{dup}",
            dup.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(r.contains("duplicate field"), "{r}");
    let after = app.ledger().await;
    assert_eq!(
        (
            after.movements,
            after.processor_transactions,
            &after.available
        ),
        (
            before.movements + 1,
            before.processor_transactions + 1,
            &before.available
        ),
        "only the adjustment on suspense"
    );
    assert_eq!(
        after.notifications,
        before.notifications + 1,
        "kept for review"
    );
}

async fn invalid_text(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let body = tx.body();
    // Lone surrogates and bad escapes inside strings, read or ignored.
    for (name, b) in [
        (
            "lone surrogate in user id",
            replace(
                &body,
                "\"user\":{\"id\":\"u1\"}",
                "\"user\":{\"id\":\"u\\ud800\"}",
            ),
        ),
        (
            "bad escape in an ignored field",
            replace(
                &body,
                "\"pin_presence\":\"ONLINE\"",
                "\"pin_presence\":\"\\x41\"",
            ),
        ),
        (
            "raw control character",
            replace(&body, "\"Computer Software\"", "\"Computer\u{1}Software\""),
        ),
    ] {
        let r = app.processor(AUTH, &b, &uid("k")).await;
        assert_eq!(r.status, 400, "{name}");
        assert_eq!(r.json()["error"]["code"], "malformed_request", "{name}");
    }
    // U+0000 in any string: no Postgres text column can hold it, so it used to be answered
    // "not stored, send again" (503) forever on adjustments and notifications. Refused on
    // every route and both backends alike.
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "1.00", "ARS").original(&tx.id);
    let nul_cases = [
        (
            AUTH,
            replace(
                &body,
                "\"user\":{\"id\":\"u1\"}",
                "\"user\":{\"id\":\"u1\\u0000\"}",
            ),
        ),
        (
            ADJ_CREDIT,
            replace(
                &refund.body(),
                "\"original_transaction_id\":\"",
                "\"original_transaction_id\":\"\\u0000",
            ),
        ),
        (
            ADJ_DEBIT,
            replace(&refund.body(), "\"ONLINE\"", "\"ON\\u0000LINE\""),
        ),
        (
            ADJ_CREDIT,
            replace(
                &refund.body(),
                "\"extra_data\":{",
                "\"extra_data\":{\"note\":\"\\u0000\",",
            ),
        ),
        (
            NOTIFY,
            replace(
                &tx.advice(
                    "authorization-advice",
                    "REJECTED",
                    "CLIENT_TIMEOUT",
                    "adv-nul",
                ),
                "adv-nul",
                "adv\\u0000",
            ),
        ),
        (
            NOTIFY,
            format!(
                r#"{{"event_id":"odd\u0000","event_detail":[],"idempotency_key":"{}"}}"#,
                uid("n")
            )
            .into_bytes(),
        ),
    ];
    for (path, b) in &nul_cases {
        let r = app.processor(path, b, &uid("k")).await;
        assert_eq!(r.status, 400, "{path}: {}", String::from_utf8_lossy(b));
        app.assert_signed(&r, path);
        assert!(r.error_message().contains("U+0000"));
    }
    // An escaped backslash followed by the letters u0000 is ordinary text.
    let text_only = replace(&refund.body(), "\"ONLINE\"", "\"ON\\\\u0000LINE\"");
    assert_eq!(
        app.processor(ADJ_CREDIT, &text_only, &uid("k"))
            .await
            .status,
        200
    );
    let r = app
        .admin(
            "POST",
            "/v1/accounts/u1/ARS/deposits",
            Some(serde_json::json!({"amount": "1.00", "reference": "a\u{0}b"})),
            Some(&uid("dep")),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_reference");
    // Bytes that are not UTF-8 in headers: the key is treated as absent (400, signed), the
    // signature headers as missing (401).
    let mut req = signed_raw(&app, AUTH, &body, "placeholder-key", "");
    let pos = req
        .windows(15)
        .position(|w| w == b"placeholder-key")
        .unwrap();
    req.splice(pos..pos + 15, [b'k', 0xff, 0xfe, b'k']);
    let r = raw(&app, &req).await;
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(r.contains("missing_idempotency_key"), "{r}");
    let mut req = signed_raw(&app, AUTH, &body, &uid("k"), "");
    let pos = req.windows(12).position(|w| w == b"hmac-sha256 ").unwrap();
    req[pos + 12] = 0xff;
    let r = raw(&app, &req).await;
    assert_eq!(status_of(&r), 401, "{r}");
    // Not UTF-8 in an admin token or a path parameter.
    let r = raw(
        &app,
        b"GET /v1/accounts/u1/ARS HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 401, "{r}");
    // The router decodes bytes that are not UTF-8 into U+FFFD, which would make `u%FF` and
    // `u%FE` the same account: refused.
    for (method, path, code) in [
        ("PUT", "/v1/accounts/u%FF/ARS", "invalid_user_id"),
        ("GET", "/v1/accounts/u%FE%FF/ARS", "invalid_user_id"),
        (
            "GET",
            "/v1/accounts/u%EF%BF%BD/ARS/postings",
            "invalid_user_id",
        ),
        (
            "GET",
            "/v1/transactions/ctx%C3%28",
            "invalid_transaction_id",
        ),
    ] {
        let r = app.admin(method, path, None, None).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.json()["error"]["code"], code, "{path}");
    }
    let r = app
        .admin(
            "PUT",
            "/v1/cards/crd%FF",
            Some(serde_json::json!({"user_id": "u1", "status": "ACTIVE"})),
            None,
        )
        .await;
    assert_eq!(r.json()["error"]["code"], "invalid_card_id");
    let r = app
        .admin("GET", "/v1/accounts/u1/ARS/postings?limit=%FF", None, None)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_query");
    let after = app.ledger().await;
    assert_eq!(
        after.movements,
        before.movements + 1,
        "only the ordinary refund"
    );
    assert_eq!(after.available, "101.00");
}

async fn hostile_amounts(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    // Not JSON numbers, or strings that are not plain decimals: refused before any decision.
    let malformed = [
        "NaN",
        "Infinity",
        "-Infinity",
        "\"NaN\"",
        "\"Infinity\"",
        "\"1e2\"",
        "\"+1.00\"",
        "\" 1.00\"",
        "\"0x10\"",
        "\"1_000\"",
        "01.00",
        "1.",
        ".5",
        "--1",
        "null",
        "[10.00]",
        "{\"value\":10.00}",
    ];
    assert_amounts_malformed(&app, &malformed, "1.00", &[AUTH, ADJ_CREDIT]).await;
    // Well-formed but not money we can hold or take (huge, negative, too precise): declined,
    // nothing booked.
    for amount in [
        "-10.00",
        "\"-0.01\"",
        "-1.00",
        "1e-3",
        "0.001",
        "1E400",
        "1e400",
        "\"100000000000000000000000000000000000000000\"",
        "99999999999999999999999999999999999999",
        "123456789012345678901234567890",
        "9223372036854775807",
        "\"92233720368547758.08\"",
        // i64::MIN minor units: a debit records the negated amount asked.
        "-92233720368547758.08",
        "\"-92233720368547758.08\"",
        "0.0000000000000000000000000001",
    ] {
        let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", amount, "ARS");
        let r = app.send(AUTH, &t).await;
        assert_eq!(r.status, 200, "{amount}");
        assert_eq!(r.json()["status"], "REJECTED", "{amount}");
        assert_eq!(r.json()["status_detail"], "INVALID_AMOUNT", "{amount}");
    }
    // Negative zero moves nothing, whatever the decision.
    let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", "-0.00", "ARS");
    assert_eq!(app.send(AUTH, &t).await.status, 200);
    let after = app.ledger().await;
    assert_eq!(
        (after.movements, after.postings, &after.available),
        (before.movements, before.postings, &before.available),
        "declines recorded, nothing moved"
    );
    // Exponent notation is a JSON number like any other and is read exactly:
    // 1.05e1 is 10.50, not 10.499999...
    let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.05e1", "ARS");
    let r = app.send(AUTH, &t).await;
    assert_eq!(r.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "89.50");
    let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", "250E-2", "ARS");
    assert_eq!(app.send(AUTH, &t).await.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "87.00");
}

async fn header_floods(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let body = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS").body();
    // Hundreds of headers (actix-web reads at most 96, and a head of at most 128 KiB).
    let many: String = (0..300).map(|i| format!("X-Flood-{i}: {i}\r\n")).collect();
    let r = raw(&app, &signed_raw(&app, AUTH, &body, &uid("k"), &many)).await;
    assert_eq!(status_of(&r), 431, "many headers: {r}");
    // One huge header.
    let huge = format!("X-Huge: {}\r\n", "a".repeat(256 * 1024));
    let r = raw(&app, &signed_raw(&app, AUTH, &body, &uid("k"), &huge)).await;
    assert_eq!(status_of(&r), 431, "huge header");
    // A huge head split over many small headers.
    let wide: String = (0..80)
        .map(|i| format!("X-Wide-{i}: {}\r\n", "b".repeat(2000)))
        .collect();
    let r = raw(&app, &signed_raw(&app, AUTH, &body, &uid("k"), &wide)).await;
    assert_eq!(status_of(&r), 431, "wide head");
    assert_eq!(app.ledger().await, before);
    // The server is unharmed and a request with a few extra headers is served.
    let extra: String = (0..20).map(|i| format!("X-Extra-{i}: {i}\r\n")).collect();
    let r = raw(&app, &signed_raw(&app, AUTH, &body, &uid("k"), &extra)).await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(app.available("u1", "ARS").await, "99.00");
}

/// What a slow client got.
struct Dribbled {
    /// What the server sent before closing (or the first answer).
    answer: String,
    /// Time from connecting to the answer or the close.
    took: Duration,
    /// Whether the server answered or closed before the client had sent everything.
    cut_off: bool,
    /// Whether the server closed the connection after answering (within 3 s).
    closed: bool,
}

/// Sends `start`, then `drip` one byte every `every`, while a reader waits for the server's
/// answer or its closing the connection.
async fn dribble(app: &TestApp, start: &[u8], drip: &[u8], every: Duration) -> Dribbled {
    let s = TcpStream::connect(host_port(app)).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let started = Instant::now();
    let reader = async {
        let answer = read_answer(&mut r).await;
        (answer, started.elapsed())
    };
    let writer = async {
        let _ = w.write_all(start).await;
        for b in drip {
            tokio::time::sleep(every).await;
            if w.write_all(&[*b]).await.is_err() {
                break;
            }
        }
    };
    let ((answer, took), cut_off) = {
        tokio::pin!(reader, writer);
        tokio::select! {
            got = &mut reader => (got, true),
            () = &mut writer => {
                let got = tokio::time::timeout(Duration::from_secs(5), reader)
                    .await
                    .unwrap_or_default();
                (got, false)
            }
        }
    };
    let mut rest = [0u8; 64];
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(3), r.read(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    Dribbled {
        answer,
        took,
        cut_off,
        closed,
    }
}

async fn slow_clients_are_cut_off(backend: Backend) {
    // The head timeout well above the body timeout: on a loaded machine the server's first
    // look at a connection can come late, and a head timeout close to the body timeout then
    // answers the slow body with the server's own bare 408 instead of ours.
    let app = TestApp::spawn_with(backend, |s| {
        s.server.request_read_ms_max = 2_000;
        s.server.body_read_ms_max = 700;
    })
    .await;
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let every = Duration::from_millis(100);
    // 1. The request head, one byte every 100 ms: 80 bytes would take 8 s.
    let head =
        b"POST /transactions/authorizations HTTP/1.1\r\nHost: x\r\nX-Api-Key: slow-slow-slow\r\n";
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS");
    let normal = async {
        // Meanwhile, a normal client is served at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        let r = app.send(AUTH, &tx).await;
        (r, t0.elapsed())
    };
    let (slow, (served, served_in)) = tokio::join!(dribble(&app, b"", head, every), normal);
    assert!(slow.cut_off, "cut off before the head was complete");
    assert!(
        slow.took < Duration::from_secs(5),
        "cut off after {:?}",
        slow.took
    );
    assert!(
        slow.answer.is_empty() || status_of(&slow.answer) == 408,
        "{}",
        slow.answer
    );
    assert!(slow.closed, "connection closed");
    assert_eq!(served.json()["status"], "APPROVED");
    assert!(served_in < Duration::from_secs(5), "{served_in:?}");
    // 2. A connection that sends nothing at all.
    let idle = dribble(&app, b"", b"", every).await;
    assert!(
        idle.took < Duration::from_secs(5),
        "idle connection kept {:?}",
        idle.took
    );
    assert!(idle.closed);
    // 3. A complete head, then the body one byte every 100 ms: 408 from the body timeout.
    let body = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS").body();
    let raw_req = signed_raw(&app, AUTH, &body, &uid("k"), "");
    let split = raw_req.len() - body.len() + 10;
    let slow = dribble(&app, &raw_req[..split], &raw_req[split..split + 60], every).await;
    assert_eq!(status_of(&slow.answer), 408, "{}", slow.answer);
    assert!(slow.answer.contains("body_timeout"), "{}", slow.answer);
    assert!(slow.cut_off, "answered before the body was complete");
    assert!(slow.closed, "connection closed after the 408");
    // The same for the admin API.
    let admin_body = br#"{"amount":"50.00","reference":"slowly"}"#;
    let admin = format!(
        "POST /v1/accounts/u1/ARS/deposits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nIdempotency-Key: slow\r\nContent-Length: {}\r\n\r\n",
        admin_body.len()
    );
    let slow = dribble(&app, admin.as_bytes(), admin_body, every).await;
    assert_eq!(status_of(&slow.answer), 408, "{}", slow.answer);
    assert!(slow.cut_off && slow.closed);
    let after = app.ledger().await;
    assert_eq!(
        after.processor_transactions,
        before.processor_transactions + 1,
        "only the normal client's"
    );
    assert_eq!(after.available, "99.00");
}

on_each_backend!(
    postgres_slow_clients_are_cut_off,
    sqlite_slow_clients_are_cut_off,
    slow_clients_are_cut_off
);

const ROUTES: [&str; 6] = [AUTH, AUTH_DEBIT, AUTH_CREDIT, ADJ_DEBIT, ADJ_CREDIT, NOTIFY];

async fn signature_for_another_endpoint(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let key = uid("adv");
    let now = crate_now();
    // A genuine signature for one route, replayed on each other route: every pair refused.
    for signed_for in ROUTES {
        let body = if signed_for == NOTIFY {
            tx.approved_advice(&key)
        } else {
            tx.body()
        };
        for sent_to in ROUTES.iter().filter(|r| **r != signed_for) {
            let r = app
                .processor_signed(
                    sent_to,
                    &body,
                    &uid("k"),
                    now,
                    signed_for,
                    API_KEY,
                    &app.secret,
                )
                .await;
            assert_eq!(r.status, 401, "signed for {signed_for}, sent to {sent_to}");
            assert!(r.header("x-signature").is_none());
        }
        // Also with the X-Endpoint header rewritten to the route called: the MAC no longer fits.
        let ts = now.to_string();
        let sig = signature::sign(&app.secret, &ts, signed_for, &body);
        for sent_to in ROUTES.iter().filter(|r| **r != signed_for) {
            let r = app
                .client
                .post(format!("{}{sent_to}", app.base))
                .insert_header(("x-api-key", API_KEY))
                .insert_header(("x-timestamp", ts.as_str()))
                .insert_header(("x-endpoint", *sent_to))
                .insert_header(("x-signature", sig.as_str()))
                .insert_header(("x-idempotency-key", uid("k")))
                .send_body(body.clone())
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401, "{signed_for} -> {sent_to}");
        }
    }
    // A fresh timestamp put on an old signature is refused too.
    let body = tx.body();
    let sig = signature::sign(&app.secret, &(now - 3).to_string(), AUTH, &body);
    let r = app
        .client
        .post(format!("{}{AUTH}", app.base))
        .insert_header(("x-api-key", API_KEY))
        .insert_header(("x-timestamp", now.to_string()))
        .insert_header(("x-endpoint", AUTH))
        .insert_header(("x-signature", sig))
        .insert_header(("x-idempotency-key", uid("k")))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let failures = |reason| {
        app.metrics
            .counter("authorizer_signature_failures_total", &[("reason", reason)])
    };
    assert_eq!(failures("endpoint_mismatch"), 30);
    assert_eq!(failures("mismatch"), 31);
    assert_eq!(app.ledger().await, before);
}

async fn replays_within_the_window_book_once(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "3.00", "ARS").original(&tx.id);
    let nk = uid("adv");
    let advice = tx.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &nk);
    // Captured requests, byte for byte (same signature, timestamp and key), sent again and again.
    for (path, body, key, balance) in [
        (AUTH, tx.body(), uid("k"), "90.00"),
        (ADJ_CREDIT, refund.body(), uid("k"), "93.00"),
        (NOTIFY, advice, nk.clone(), "103.00"),
    ] {
        let captured = signed_raw(&app, path, &body, &key, "");
        let first = raw(&app, &captured).await;
        assert_eq!(status_of(&first), 200, "{first}");
        let first_body = first.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        let snapshot = app.ledger().await;
        assert_eq!(snapshot.available, balance, "{path}");
        for _ in 0..5 {
            let again = raw(&app, &captured).await;
            assert_eq!(status_of(&again), 200, "{again}");
            assert_eq!(
                again.split("\r\n\r\n").nth(1).unwrap_or(""),
                first_body,
                "identical answer"
            );
        }
        assert_eq!(
            app.ledger().await,
            snapshot,
            "{path}: replays changed nothing"
        );
        // The idempotency key is not covered by the signature: the same captured request
        // under a new key is still the same transaction, answered as before.
        let new_key = String::from_utf8_lossy(&captured).replacen(&key, &uid("other"), 1);
        let again = raw(&app, new_key.as_bytes()).await;
        assert_eq!(status_of(&again), 200, "{again}");
        assert_eq!(
            again.split("\r\n\r\n").nth(1).unwrap_or(""),
            first_body,
            "{path}"
        );
        assert_eq!(
            app.ledger().await,
            snapshot,
            "{path}: a new key changed nothing"
        );
    }
}

async fn replays_after_the_window_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.processor.authorization_skew_secs = 1;
        s.processor.adjustment_skew_secs = 1;
    })
    .await;
    app.funded("u1", "ARS", "100.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "3.00", "ARS");
    let captured = [
        signed_raw(&app, AUTH, &tx.body(), &uid("k"), ""),
        signed_raw(&app, ADJ_CREDIT, &refund.body(), &uid("k"), ""),
    ];
    for c in &captured {
        let r = raw(&app, c).await;
        assert_eq!(status_of(&r), 200, "{r}");
    }
    let snapshot = app.ledger().await;
    assert_eq!(snapshot.available, "93.00");
    // Past the window, the same bytes are stale: 401, whatever the key and body.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for c in &captured {
        let r = raw(&app, c).await;
        assert_eq!(status_of(&r), 401, "{r}");
    }
    assert_eq!(
        app.metrics.counter(
            "authorizer_signature_failures_total",
            &[("reason", "stale_timestamp")]
        ),
        2
    );
    assert_eq!(app.ledger().await, snapshot);
}

on_each_backend!(
    postgres_replays_after_the_window_are_refused,
    sqlite_replays_after_the_window_are_refused,
    replays_after_the_window_are_refused
);

// About what bad input can and cannot do, not about speed: the servers get the room of a
// crowd (`crowd_settings`), so a slow machine never turns an answer into a deadline's decline.
both_backends!(
    settings = crowd_settings;
    oversized_bodies,
    deeply_nested_json,
    duplicate_keys,
    invalid_text,
    hostile_amounts,
    header_floods,
    signature_for_another_endpoint,
    replays_within_the_window_book_once,
);
