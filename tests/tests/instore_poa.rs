//! The InStore pay-on-account extension end to end (instore-extensions.md sections 3, 6.3,
//! 6.4 and test 7 of 6.5) on both stores: bare requests signed as `JSON.stringify` signs
//! them and enveloped ones with their callbacks, the charges on the ledger account the
//! admin API shows, the issuer's limit, block and reversal, the audit's credit-limit
//! invariant, and the log's records.

use e2e::instore::{CallbackReceiver, sign};
use e2e::*;
use serde_json::{Value, json};
use std::time::Duration;

const ACCOUNT: &str = "2342342342";
/// A second tenant, with Create not permitted.
const OTHER_TENANT: &str = "poa-closed-tenant";
const OTHER_KEY: &str = "poa-closed-tenant-key-0001";

/// The section 7 tenant may open accounts up to 5000.00 USD.
fn poa_settings(s: &mut authorizer::Settings) {
    let t = &mut s.instore.tenants[0];
    t.poa_create_enabled = true;
    t.poa_credit_limit_max
        .insert("USD".to_owned(), "5000.00".to_owned());
}

/// As [`poa_settings`], and a second tenant that may not open accounts (bare requests then
/// name their tenant).
fn with_closed_tenant(s: &mut authorizer::Settings) {
    poa_settings(s);
    let mut other = s.instore.tenants[0].clone();
    other.tenant_id = OTHER_TENANT.to_owned();
    other.verification_key = ::instore::SecretString::new(OTHER_KEY.to_owned());
    other.poa_create_enabled = false;
    s.instore.tenants.push(other);
}

/// A POA amount: every member a string.
fn usd(minor: &str) -> Value {
    json!({"amount": minor, "precision": "2", "currency": "USD"})
}

/// A bare `payonaccount/process`, answered 200; its body.
async fn process(app: &TestApp, body: Value, key: Option<&str>) -> Value {
    let r = app.instore_bare("payonaccount/process", &body, key).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// `(status, error, code)` of a POA answer.
fn decision(v: &Value) -> (&str, &str, &str) {
    (
        v["status"].as_str().unwrap_or(""),
        v["error"].as_str().unwrap_or(""),
        v["code"].as_str().unwrap_or(""),
    )
}

fn create(number: &str, limit_minor: &str, ids: Value) -> Value {
    json!({"action": "Create", "account_number": number, "company_name": "My Store",
           "authorized_user_ids": ids, "credit_limit": usd(limit_minor)})
}

fn credit(number: &str, minor: &str, user: &str) -> Value {
    json!({"action": "Credit", "account_number": number, "authorized_user_ids": [user],
           "balance": usd(minor)})
}

/// The ledger account behind a POA account, from the admin API.
async fn poa_admin(app: &TestApp, number: &str, body: Value) -> Resp {
    app.admin_put(
        &format!("/v1/instore/poa/{}/{number}", e2e::instore::TENANT),
        body,
    )
    .await
}

/// Test 7: Create with its permission and limit checks, Credit up to the limit and one
/// minor unit beyond, an unauthorized user, Update's echo tolerance, a bare Credit without
/// a key; the 7.4 vector byte for byte; replays; the admin API's view of the same account.
async fn charges_within_the_credit_limit(app: TestApp, _rx: CallbackReceiver) {
    // Not permitted for the second tenant (signed with its key, named by its header).
    let body = create(ACCOUNT, "50000", json!(["234234"])).to_string();
    let r = app
        .instore_send(
            "payonaccount/process",
            body.as_bytes(),
            Some(&::instore::signature::sign(
                OTHER_KEY.as_bytes(),
                body.as_bytes(),
            )),
            None,
            &[("tenant_id", OTHER_TENANT)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(decision(&r.json()), ("declined", "NOT_PERMITTED", "57"));
    // Above the tenant's ceiling by one minor unit.
    let v = process(&app, create(ACCOUNT, "500001", json!([])), None).await;
    assert_eq!(decision(&v), ("declined", "CREDIT_LIMIT_TOO_HIGH", "61"));
    // An owed amount from nowhere.
    let mut with_balance = create(ACCOUNT, "50000", json!(["234234"]));
    with_balance["balance"] = usd("100");
    let v = process(&app, with_balance, None).await;
    assert_eq!(decision(&v), ("declined", "INVALID_AMOUNT", "13"));

    // Opened at 500.00; the same Create replays byte for byte, other data is refused.
    let opened = r#"{"action":"Create","account_number":"2342342342","company_name":"My Store","authorized_user_ids":["234234"],"balance":{"amount":"0","precision":"2","currency":"USD"},"credit_limit":{"amount":"50000","precision":"2","currency":"USD"},"status":"approved"}"#;
    for _ in 0..2 {
        let body = create(ACCOUNT, "50000", json!(["234234"]));
        let r = app.instore_bare("payonaccount/process", &body, None).await;
        assert_eq!(r.text(), opened);
    }
    let v = process(&app, create(ACCOUNT, "40000", json!(["234234"])), None).await;
    assert_eq!(decision(&v), ("declined", "ACCOUNT_EXISTS", "12"));

    // 200.00 owed, then the 7.4 vector: its exact bytes, signature and answer.
    let v = process(&app, credit(ACCOUNT, "20000", "234234"), Some("corr-poa-0")).await;
    assert_eq!(
        (v["status"].as_str(), v["balance"]["amount"].as_str()),
        (Some("approved"), Some("20000"))
    );
    let vector = br#"{"action":"Credit","account_number":"2342342342","authorized_user_ids":["234234"],"balance":{"amount":"1220","precision":"2","currency":"USD"}}"#;
    let vector_sig = "c7eb0569955079587ca798e90c032df03affe9d06dea8f7d67760442b5daa1e9";
    assert_eq!(sign(vector), vector_sig);
    let answer = r#"{"action":"Credit","account_number":"2342342342","company_name":"My Store","authorized_user_id":"234234","balance":{"amount":"21220","precision":"2","currency":"USD"},"status":"approved"}"#;
    // Then InStore's retry under the same x-correlation-id: the same bytes, one charge.
    for _ in 0..2 {
        let r = app
            .instore_send(
                "payonaccount/process",
                vector,
                Some(vector_sig),
                Some("corr-poa-1"),
                &[("tenant_id", e2e::instore::TENANT)],
            )
            .await;
        assert_eq!((r.status, r.text().as_str()), (200, answer));
        assert_eq!(
            r.header("X-Signature"),
            Some("f6c47b3ab97d91303261465c492ee357a22c6a7683d67004997dc9e4e90ca61e")
        );
    }
    // That answer, with our signature, sent back as a request under a key of its own: an
    // answer is no request (400), and nothing is charged again.
    let r = app
        .instore_send(
            "payonaccount/process",
            answer.as_bytes(),
            Some("f6c47b3ab97d91303261465c492ee357a22c6a7683d67004997dc9e4e90ca61e"),
            Some("corr-poa-reflected"),
            &[("tenant_id", e2e::instore::TENANT)],
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("INVALID_FIELD")),
        "{}",
        r.text()
    );
    // The key with another body: 409, nothing booked.
    let r = app
        .instore_bare(
            "payonaccount/process",
            &credit(ACCOUNT, "1221", "234234"),
            Some("corr-poa-1"),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("IDEMPOTENCY_CONFLICT"))
    );
    // No key at all: refused before anything.
    let r = app
        .instore_bare(
            "payonaccount/process",
            &credit(ACCOUNT, "100", "234234"),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("IDEMPOTENCY_KEY_REQUIRED"))
    );
    let v = process(&app, credit(ACCOUNT, "100", "999999"), Some("corr-poa-2")).await;
    assert_eq!(decision(&v), ("declined", "USER_NOT_AUTHORIZED", "57"));
    let v = process(
        &app,
        json!({"action": "Credit", "account_number": "no-such", "balance": usd("100")}),
        Some("corr-poa-3"),
    )
    .await;
    assert_eq!(decision(&v), ("declined", "ACCOUNT_NOT_FOUND", "14"));

    // 287.80 is left: one minor unit more is declined, exactly that much is approved.
    let v = process(&app, credit(ACCOUNT, "28781", "234234"), Some("corr-poa-4")).await;
    assert_eq!(decision(&v), ("declined", "CREDIT_LIMIT_EXCEEDED", "51"));
    assert_eq!(v["balance"]["amount"], "21220");
    let v = process(&app, credit(ACCOUNT, "28780", "234234"), Some("corr-poa-5")).await;
    assert_eq!(decision(&v).0, "approved");
    assert_eq!(v["balance"]["amount"], "50000");

    // Inquiry, and the admin API's view of the same ledger account.
    let v = process(
        &app,
        json!({"action": "Inquiry", "account_number": ACCOUNT}),
        None,
    )
    .await;
    assert_eq!(
        (
            v["balance"]["amount"].as_str(),
            v["credit_limit"]["amount"].as_str()
        ),
        (Some("50000"), Some("50000"))
    );
    let view = poa_admin(&app, ACCOUNT, json!({})).await;
    assert_eq!(view.status, 200, "{}", view.text());
    let view = view.json();
    assert_eq!(
        (view["owed"].as_str(), view["available"].as_str()),
        (Some("500.00"), Some("0.00"))
    );
    let user = view["user_id"].as_str().unwrap().to_owned();
    assert!(user.starts_with("poa-") && user.len() == 24, "{user}");
    let account = app.account(&user, "USD").await;
    assert_eq!(account["posted"], "-500.00");
    assert_eq!(app.movements(&user, "USD", "POA_CHARGE").await, 3);

    // Update: the whole record echoed is tolerated; another limit or balance is not.
    let mut update = json!({"action": "Update", "account_number": ACCOUNT,
        "company_name": "My Store Ltd", "authorized_user_ids": ["234234", "777"],
        "balance": usd("50000"), "credit_limit": usd("50000")});
    let v = process(&app, update.clone(), None).await;
    assert_eq!(decision(&v).0, "approved", "{v}");
    assert_eq!(v["company_name"], "My Store Ltd");
    // Its status echoed too: tolerated on an Update (only a Credit carrying one is an answer
    // of ours sent back).
    let mut echoed = update.clone();
    echoed["status"] = json!("approved");
    let v = process(&app, echoed, None).await;
    assert_eq!(decision(&v).0, "approved", "{v}");
    update["credit_limit"] = usd("60000");
    let v = process(&app, update.clone(), None).await;
    assert_eq!(decision(&v), ("declined", "FIELD_NOT_UPDATABLE", "12"));
    update["credit_limit"] = usd("50000");
    update["balance"] = usd("0");
    let v = process(&app, update, None).await;
    assert_eq!(decision(&v), ("declined", "FIELD_NOT_UPDATABLE", "12"));
    let v = process(
        &app,
        json!({"action": "Inquiry", "account_number": ACCOUNT}),
        None,
    )
    .await;
    assert_eq!(v["authorized_user_ids"], json!(["234234", "777"]));
}

/// An enveloped Credit: acknowledged, its result (the seed's body plus `requestId`) called
/// back; the same envelope again books nothing and calls back once more.
async fn enveloped_credit_replays(app: TestApp, rx: CallbackReceiver) {
    process(&app, create("acct-env", "10000", json!([])), None).await;
    let url = format!("{}/poa/req-poa-1", rx.base);
    let mut payload = credit("acct-env", "1000", "u-1");
    payload["requestId"] = json!("req-poa-1");
    let first = app
        .instore_envelope("payonaccount/process", &payload, &url)
        .await;
    assert_eq!(
        (first.status, first.text().as_str()),
        (200, r#"{"requestId":"req-poa-1"}"#)
    );
    let posts = rx
        .wait_for("/poa/req-poa-1", 1, Duration::from_secs(10))
        .await;
    assert_eq!(
        String::from_utf8_lossy(&posts[0].body),
        r#"{"requestId":"req-poa-1","action":"Credit","account_number":"acct-env","company_name":"My Store","authorized_user_id":"u-1","balance":{"amount":"1000","precision":"2","currency":"USD"},"status":"approved"}"#
    );
    assert_eq!(posts[0].signature, sign(&posts[0].body));
    let again = app
        .instore_envelope("payonaccount/process", &payload, &url)
        .await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    let posts = rx
        .wait_for("/poa/req-poa-1", 2, Duration::from_secs(10))
        .await;
    assert_eq!(posts[1].body, posts[0].body);
    let view = poa_admin(&app, "acct-env", json!({})).await.json();
    assert_eq!(view["owed"], "10.00");
    let user = view["user_id"].as_str().unwrap().to_owned();
    assert_eq!(app.movements(&user, "USD", "POA_CHARGE").await, 1);
    // The requestId with another amount: 409.
    payload["balance"] = usd("1001");
    let r = app
        .instore_envelope("payonaccount/process", &payload, &url)
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("IDEMPOTENCY_CONFLICT"))
    );
}

/// The issuer's limit, block and reversal (once), the audit's invariant (a lowered limit is
/// a warning, not a violation), and the log: stored, echoed, idempotent, 409 on another
/// body, flagged when no charge matches, listed newest first under both path forms.
async fn admin_audit_and_logs(app: TestApp, _rx: CallbackReceiver) {
    process(&app, create("555", "10000", json!([])), None).await;
    let v = process(&app, credit("555", "6000", "anyone"), Some("k-1")).await;
    assert_eq!(decision(&v).0, "approved");

    // Lowered below what is owed: reported, not an error; nothing more is charged.
    let r = poa_admin(&app, "555", json!({"credit_limit": "50.00"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["owed"].as_str(), r.json()["available"].as_str()),
        (Some("60.00"), Some("-10.00"))
    );
    let report = app.assert_audit_clean().await;
    assert!(
        report.warnings.iter().any(|w| w.invariant.contains("POA")),
        "{:?}",
        report.warnings
    );
    let v = process(&app, credit("555", "1", "anyone"), Some("k-2")).await;
    assert_eq!(decision(&v), ("declined", "CREDIT_LIMIT_EXCEEDED", "51"));
    let r = poa_admin(&app, "555", json!({"credit_limit": "-1.00"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = poa_admin(&app, "nope", json!({"blocked": true})).await;
    assert_eq!(r.status, 404, "{}", r.text());

    // The charge reversed, once.
    let user = r_user(&app, "555").await;
    let postings = app
        .admin_get(&format!("/v1/accounts/{user}/USD/postings?limit=10"))
        .await;
    let charge = items(&postings["postings"])
        .find(|p| p["kind"] == "POA_CHARGE")
        .expect("the charge")["movement_id"]
        .as_i64()
        .unwrap();
    let reversals = format!("/v1/instore/poa/{}/555/reversals", e2e::instore::TENANT);
    // Reversed once: again is 409, a movement that is not this account's charge 404.
    for (movement, status) in [(charge, 201), (charge, 409), (charge + 1000, 404)] {
        let body = json!({"movement_id": movement});
        let r = app.admin("POST", &reversals, Some(body), None).await;
        assert_eq!(r.status, status, "{}", r.text());
        if status == 201 {
            assert_eq!(r.json()["owed"], "0.00");
        }
    }
    assert_eq!(app.movements(&user, "USD", "POA_REVERSAL").await, 1);

    // Blocked, then open again.
    poa_admin(&app, "555", json!({"blocked": true})).await;
    let v = process(&app, credit("555", "1000", "anyone"), Some("k-3")).await;
    assert_eq!(decision(&v), ("declined", "ACCOUNT_BLOCKED", "62"));
    poa_admin(
        &app,
        "555",
        json!({"blocked": false, "credit_limit": "100.00"}),
    )
    .await;
    let v = process(&app, credit("555", "1000", "anyone"), Some("k-4")).await;
    assert_eq!(decision(&v).0, "approved");
    app.assert_audit_clean().await;

    // Lowered, but not below what is owed (10.00): no mark, so what later takes it over (a
    // processor's debit adjustment books whatever the limit) is a violation, not a warning.
    let r = poa_admin(&app, "555", json!({"credit_limit": "80.00"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let forced = uid("poa-adj");
    let debit = Tx::new(&forced, "PURCHASE", &user, "90.00", "USD");
    assert_eq!(app.send(ADJ_DEBIT, &debit).await.status, 200);
    let report = app.store.audit().await.unwrap();
    let over = |v: &store::Violation| v.invariant.contains("POA");
    assert!(report.violations.iter().any(over), "{report:?}");
    let credit_back = Tx::new(&uid("poa-adj"), "REFUND", &user, "90.00", "USD").original(&forced);
    assert_eq!(app.send(ADJ_CREDIT, &credit_back).await.status, 200);
    app.assert_audit_clean().await;

    // Logs: one matches the 10.00 charge, the other the reversed 60.00 one (flagged).
    let log = |order: &str, minor: &str| {
        json!({"action": "Credit", "account_number": "555", "company_name": "My Store",
               "authorized_user_id": "anyone", "amount": usd(minor), "session_id": "s-1",
               "order_id": order, "status": "approved"})
    };
    for (order, minor) in [("o-1", "1000"), ("o-2", "6000")] {
        let r = app
            .instore_bare("payonaccountlog", &log(order, minor), None)
            .await;
        // The echo is the record in the seed's order; compared as JSON.
        assert_eq!(
            (r.status, r.json()),
            (200, log(order, minor)),
            "{}",
            r.text()
        );
    }
    let again = app
        .instore_bare("payonaccountlog", &log("o-2", "6000"), None)
        .await;
    assert_eq!((again.status, again.json()), (200, log("o-2", "6000")));
    let mut other = log("o-2", "6000");
    other["status"] = json!("declined");
    let r = app.instore_bare("payonaccountlog", &other, None).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        app.metrics.counter("instore_poa_unmatched_logs_total", &[]),
        1
    );
    // The account's logs by path and by query, newest first.
    for (path, query, signed) in [
        ("payonaccountlog/555", "", r#"{"account_number":"555"}"#),
        (
            "payonaccountlog/",
            "account_number=555",
            "account_number=555",
        ),
    ] {
        let r = app.instore_get(path, query, &sign(signed.as_bytes())).await;
        assert_eq!(r.status, 200, "{path}?{query}: {}", r.text());
        let logs = r.json()["logs"].as_array().unwrap().clone();
        let orders: Vec<&str> = logs
            .iter()
            .map(|l| l["order_id"].as_str().unwrap())
            .collect();
        assert_eq!(orders, ["o-2", "o-1"]);
        assert!(logs[0]["received_at"].as_str().unwrap().ends_with('Z'));
    }
    // A signature must name the account whose log it reads: one over the query's other
    // parameters alone (as JSON or raw) would read every account's log, replayed to
    // another path.
    let query = "locationId=L1";
    for signed in [r#"{"locationId":"L1"}"#, query] {
        let r = app
            .instore_get("payonaccountlog/555", query, &sign(signed.as_bytes()))
            .await;
        assert_eq!(r.status, 401, "{signed}: {}", r.text());
    }
    // A requestId does not bind this log's path (none is kept): the same holds with one.
    let with_id = "requestId=r-log-1&locationId=L1";
    for signed in [r#"{"requestId":"r-log-1","locationId":"L1"}"#, with_id] {
        let r = app
            .instore_get("payonaccountlog/555", with_id, &sign(signed.as_bytes()))
            .await;
        assert_eq!(r.status, 401, "{signed}: {}", r.text());
    }
    let named = sign(br#"{"locationId":"L1","account_number":"555"}"#);
    let r = app.instore_get("payonaccountlog/555", query, &named).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.instore_get("payonaccountlog/556", query, &named).await;
    assert_eq!(r.status, 401, "{}", r.text());
}

/// The ledger user of a POA account of the section 7 tenant.
async fn r_user(app: &TestApp, number: &str) -> String {
    poa_admin(app, number, json!({})).await.json()["user_id"]
        .as_str()
        .expect("user_id")
        .to_owned()
}

e2e::instore_scenarios!(
    settings = poa_settings;
    enveloped_credit_replays,
    admin_audit_and_logs,
);

mod closed_tenant {
    use super::*;
    e2e::instore_scenarios!(settings = with_closed_tenant; charges_within_the_credit_limit);
}
