//! Bad input gets a clear error and changes nothing.

use e2e::*;
use protocol::ApiSecret;
use serde_json::json;

/// Nothing was recorded about any processor transaction.
async fn nothing_stored(app: &TestApp) {
    let r = app.assert_audit_clean().await;
    assert_eq!(
        (r.processor_transactions, r.notifications),
        (0, 0),
        "nothing stored"
    );
}

async fn malformed_bodies(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let good = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS").body();
    // The good body with one text replaced.
    let edited = |from: &str, to: &str| {
        String::from_utf8(good.clone())
            .unwrap()
            .replacen(from, to, 1)
            .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"hello".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("amount true", edited("\"total\":10.00", "\"total\":true")),
        (
            "currency 12",
            edited("\"currency\":\"ARS\"", "\"currency\":12"),
        ),
        (
            "amount with comma",
            edited("\"total\":10.00", "\"total\":\"10,00\""),
        ),
        ("no transaction id", edited("\"id\":\"ctx", "\"idx\":\"ctx")),
        (
            "invalid utf-8",
            [&good[..20], &[0xff, 0xfe][..], &good[20..]].concat(),
        ),
        ("array", b"[1,2,3]".to_vec()),
    ];
    for (name, body) in cases {
        for path in [AUTH, ADJ_CREDIT] {
            let r = app.processor(path, &body, &uid("k")).await;
            assert_eq!(r.status, 400, "{name} on {path}");
            app.assert_signed(&r, path);
            assert_eq!(r.json()["error"]["code"], "malformed_request", "{name}");
        }
    }
    let r = app.processor(NOTIFY, b"{not json", &uid("k")).await;
    assert_eq!(r.status, 400);
    assert!(
        app.metrics.counter(
            "authorizer_bad_requests_total",
            &[("reason", "malformed_request")]
        ) >= 18
    );
    nothing_stored(&app).await;
    assert_eq!(app.available("u1", "ARS").await, "100.00");
}

async fn oversized_body(app: TestApp) {
    let big = vec![b' '; 64 * 1024 + 1];
    let r = app.processor(AUTH, &big, &uid("k")).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "body_too_large");
    // Exactly at the limit is read (and refused only for not being a request).
    let at = vec![b' '; 64 * 1024];
    assert_eq!(app.processor(AUTH, &at, &uid("k")).await.status, 400);
    nothing_stored(&app).await;
}

async fn bad_signatures(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let body = tx.body();
    let now = crate_now();
    let other = ApiSecret::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    let s = &app.secret;
    let cases: Vec<(&str, Resp)> = vec![
        (
            "wrong secret",
            app.processor_signed(AUTH, &body, &uid("k"), now, AUTH, API_KEY, &other)
                .await,
        ),
        (
            "unknown key",
            app.processor_signed(AUTH, &body, &uid("k"), now, AUTH, "nobody", s)
                .await,
        ),
        (
            "stale",
            app.processor_signed(AUTH, &body, &uid("k"), now - 70, AUTH, API_KEY, s)
                .await,
        ),
        (
            "future",
            app.processor_signed(AUTH, &body, &uid("k"), now + 70, AUTH, API_KEY, s)
                .await,
        ),
        (
            "other endpoint",
            app.processor_signed(AUTH, &body, &uid("k"), now, ADJ_CREDIT, API_KEY, s)
                .await,
        ),
    ];
    for (name, r) in cases {
        assert_eq!(r.status, 401, "{name}");
        assert_eq!(
            r.json()["error"]["code"],
            "unauthorized",
            "{name}: nothing says which check failed"
        );
        assert!(r.header("x-signature").is_none());
    }
    // Tampered body: signed over one body, another sent.
    let ts = now.to_string();
    let sig = protocol::signature::sign(s, &ts, AUTH, &body);
    let mut tampered = body.clone();
    let pos = tampered.iter().position(|b| *b == b'9').unwrap_or(10);
    tampered[pos] = b'8';
    for (name, sig_value) in [
        ("tampered", sig.clone()),
        ("no prefix", sig.replacen("hmac-sha256 ", "", 1)),
        ("missing", String::new()),
    ] {
        let mut req = app
            .client
            .post(format!("{}{AUTH}", app.base))
            .insert_header(("x-api-key", API_KEY))
            .insert_header(("x-timestamp", ts.as_str()))
            .insert_header(("x-endpoint", AUTH))
            .insert_header(("x-idempotency-key", uid("k")));
        if !sig_value.is_empty() {
            req = req.insert_header(("x-signature", sig_value));
        }
        let res = req
            .send_body(if name == "tampered" {
                tampered.clone()
            } else {
                body.clone()
            })
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401, "{name}");
    }
    // Adjustments have their own, wider window.
    let adj = Tx::new(&uid("ctx"), "REFUND", "u1", "1.00", "ARS").body();
    let r = app
        .processor_signed(
            ADJ_CREDIT,
            &adj,
            &uid("k"),
            now - 200,
            ADJ_CREDIT,
            API_KEY,
            s,
        )
        .await;
    assert_eq!(r.status, 200, "inside the 300 s adjustment window");
    let r = app
        .processor_signed(
            ADJ_CREDIT,
            &adj,
            &uid("k"),
            now - 310,
            ADJ_CREDIT,
            API_KEY,
            s,
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(
        app.metrics
            .counter("authorizer_signature_failures_total", &[])
            >= 9
    );
    assert_eq!(app.available("u1", "ARS").await, "101.00");
    // A gateway prefix on the signed endpoint is tolerated and echoed back.
    let gw = "/gateway/transactions/authorizations";
    let r = app
        .processor_signed(AUTH, &body, &uid("k"), now, gw, API_KEY, s)
        .await;
    assert_eq!(r.status, 200);
    app.assert_signed(&r, gw);
}

async fn odd_but_valid_requests(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    // Unknown enum values are kept, not refused.
    let t = Tx::new(&uid("ctx"), "NEW_PURCHASE_KIND", "u1", "1.00", "ARS");
    let body = String::from_utf8(t.body())
        .unwrap()
        .replace("\"POS\"", "\"HOLOGRAM\"")
        .replace("{\"id\":\"111", "{\"future_field\":{\"x\":1},\"id\":\"111");
    let r = app
        .processor(AUTH_DEBIT, body.as_bytes(), &uid("k"))
        .await
        .json();
    assert_eq!(r["status"], "APPROVED", "route gives the direction");
    let h = app.admin_get(&format!("/v1/transactions/{}", t.id)).await;
    assert_eq!(h["records"][0]["type"], "NEW_PURCHASE_KIND");
    assert_eq!(
        h["records"][0]["request"]["transaction"]["point_type"],
        "HOLOGRAM"
    );
    assert_eq!(
        h["records"][0]["request"]["merchant"]["future_field"]["x"],
        1
    );
    // On the bare route an unknown type says nothing about direction.
    let t2 = Tx::new(&uid("ctx"), "NEW_PURCHASE_KIND", "u1", "1.00", "ARS");
    assert_eq!(app.send(AUTH, &t2).await.json()["status_detail"], "OTHER");
    // Huge and negative amounts in an authorization: `attacks::hostile_amounts`.
    let huge_adj = Tx::new(&uid("ctx"), "REFUND", "u1", "1e400", "ARS");
    let r = app.send(ADJ_CREDIT, &huge_adj).await.json();
    assert_eq!(r["status_detail"], "INVALID_AMOUNT");
    // Zero approves without a movement.
    let zero = Tx::new(&uid("ctx"), "PURCHASE", "u1", "0", "ARS");
    assert_eq!(app.send(AUTH, &zero).await.json()["status"], "APPROVED");
    // No idempotency key: refused, signed.
    let t3 = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS");
    let r = app.processor(AUTH, &t3.body(), "").await;
    assert_eq!(r.status, 400);
    app.assert_signed(&r, AUTH);
    assert_eq!(app.available("u1", "ARS").await, "99.00");
    // A notification we cannot read as one is still kept for review, never refused forever.
    let key = uid("adv");
    let odd = format!(
        r#"{{"event_id":"authorization-advice","event_detail":{{"transaction":{{"no_id":true}}}},"idempotency_key":"{key}"}}"#
    );
    let r = app.processor(NOTIFY, odd.as_bytes(), &key).await;
    assert_eq!(
        (r.status, r.json()["effect"].clone()),
        (200, serde_json::json!("REVIEW"))
    );
    let other = format!(
        r#"{{"event_id":"card-shipped","event_detail":{{}},"idempotency_key":"{}"}}"#,
        uid("n")
    );
    assert_eq!(
        app.processor(NOTIFY, other.as_bytes(), &uid("k"))
            .await
            .json()["effect"],
        "NOOP"
    );
}

/// An account or a card registered under an id the processor could never send (a space,
/// a letter outside ASCII) would be one no authorization reaches: refused, nothing registered.
async fn ids_the_processor_cannot_send_are_not_registered(app: TestApp) {
    let card = |user: &str| json!({"user_id": user, "status": "ACTIVE"});
    let cases = [
        (
            "/v1/accounts/jos%C3%A9/ARS",
            None,
            "invalid_user_id",
            "user id",
        ),
        ("/v1/accounts/u%201/ARS", None, "invalid_user_id", "user id"),
        (
            "/v1/cards/crd%201",
            Some(card("u1")),
            "invalid_card_id",
            "card id",
        ),
        (
            "/v1/cards/crd-%C3%A9",
            Some(card("u1")),
            "invalid_card_id",
            "card id",
        ),
        (
            "/v1/cards/crd-1",
            Some(card("u 1")),
            "invalid_user_id",
            "user id",
        ),
    ];
    for (path, body, code, what) in cases {
        let r = app.admin("PUT", path, body, None).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let error = &r.json()["error"];
        assert_eq!(error["code"], code, "{path}");
        let message = format!(
            "{what} must be 1 to 255 visible ASCII characters (letters, digits, punctuation; \
             no spaces), as the processor sends it"
        );
        assert_eq!(error["message"], message.as_str(), "{path}");
    }
    // Nothing was registered: reads, which stay wider, find nothing.
    for path in ["/v1/accounts/jos%C3%A9/ARS", "/v1/accounts/u%201/ARS"] {
        assert_eq!(
            app.admin("GET", path, None, None).await.status,
            404,
            "{path}"
        );
    }
    for path in ["/v1/cards/crd%201/controls", "/v1/cards/crd-1/controls"] {
        assert_eq!(
            app.admin("GET", path, None, None).await.status,
            404,
            "{path}"
        );
    }
    // The processor's own ids are registered, punctuation and all.
    let r = app
        .admin("PUT", "/v1/accounts/u-1%2Bx@y/ARS", None, None)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = app
        .admin("PUT", "/v1/cards/crd-1", Some(card("u-1+x@y")), None)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    nothing_stored(&app).await;
}

both_backends!(
    malformed_bodies,
    oversized_body,
    bad_signatures,
    odd_but_valid_requests,
    ids_the_processor_cannot_send_are_not_registered,
);
