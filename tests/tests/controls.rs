//! Spending controls end to end (docs/controls.md): set through the admin API, decided in
//! the plan on the processor's real signed requests, counted in calendar windows, and
//! explained on the transaction.

use e2e::*;
use serde_json::{Value, json};

/// A purchase of `amount` on `user`'s card `crd-{user}`, with `change` applied to the
/// processor's JSON body (merchant country, point type, ...).
async fn purchase(
    app: &TestApp,
    user: &str,
    amount: &str,
    change: impl FnOnce(&mut Value),
) -> (String, Value) {
    let tx = Tx::new(
        &uid("ctx"),
        "PURCHASE",
        user,
        &format!("\"{amount}\""),
        "ARS",
    );
    let mut body: Value = serde_json::from_slice(&tx.body()).expect("own body is JSON");
    change(&mut body);
    let r = app
        .processor(AUTH_DEBIT, &serde_json::to_vec(&body).unwrap(), &uid("k"))
        .await;
    assert_eq!(r.status, 200);
    app.assert_signed(&r, AUTH_DEBIT);
    (tx.id, r.json())
}

fn mcc(code: &'static str) -> impl FnOnce(&mut Value) {
    move |b| b["merchant"]["mcc"] = json!(code)
}

fn unchanged(_: &mut Value) {}

async fn put_controls(app: &TestApp, path: &str, body: Value) -> Resp {
    app.admin("PUT", path, Some(body), None).await
}

/// Registers `crd-{user}` to `user`, active.
async fn card(app: &TestApp, user: &str) {
    let r = app
        .admin(
            "PUT",
            &format!("/v1/cards/crd-{user}"),
            Some(json!({"user_id": user, "status": "ACTIVE", "blocked_mccs": []})),
            None,
        )
        .await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.json());
}

/// u1 with 1000.00 ARS and its card `crd-u1` under the card controls `body` (accepted).
async fn u1_with_card_controls(app: &TestApp, body: Value) {
    app.funded("u1", "ARS", "1000.00").await;
    card(app, "u1").await;
    let r = put_controls(app, "/v1/cards/crd-u1/controls", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn assert_declined(answer: &Value, detail: &str, message: &str) {
    assert_eq!(answer["status"], "REJECTED", "{answer}");
    assert_eq!(answer["status_detail"], detail, "{answer}");
    assert_eq!(answer["message"], message, "{answer}");
}

/// A purchase of 10.00 changed by `change`, declined with `detail` and `message`.
async fn declined(app: &TestApp, change: impl FnOnce(&mut Value), detail: &str, message: &str) {
    let (_, answer) = purchase(app, "u1", "10.00", change).await;
    assert_declined(&answer, detail, message);
}

const MERCHANT: &str = "INVALID_MERCHANT";

fn assert_approved(answer: &Value) {
    assert_eq!(answer["status"], "APPROVED", "{answer}");
}

/// The explanation kept with the authorization `id`.
async fn explanation(app: &TestApp, id: &str) -> Value {
    let h = app.admin_get(&format!("/v1/transactions/{id}")).await;
    h["records"][0]["explanation"].clone()
}

async fn documents_are_stored_canonical_and_bad_ones_change_nothing(app: TestApp) {
    app.funded("u1", "ARS", "0").await;
    let path = "/v1/accounts/u1/ARS/controls";
    assert_eq!(
        app.admin_get(path).await,
        json!({"version": 0, "controls": {}, "usage": []})
    );
    let r = put_controls(
        &app,
        path,
        json!({
            "blocked_categories": ["gambling", "7273", "7273"],
            "allowed_countries": ["ury", "AR"],
            "spending_limits": [{"amount": "500", "interval": "monthly"}],
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let stored = json!({
        "version": 1,
        "controls": {
            "currency": "ARS",
            "blocked_categories": ["7273", "gambling"],
            "allowed_countries": ["AR", "UY"],
            "spending_limits": [{"amount": "500.00", "interval": "monthly"}],
        }
    });
    // With where each limit stands now: nothing spent yet this month.
    let usage = &r.json()["usage"];
    assert_eq!(usage.as_array().map(Vec::len), Some(1), "{usage}");
    let left = (&usage[0]["spent"], &usage[0]["remaining"]);
    assert_eq!(left, (&json!("0.00"), &json!("500.00")));
    assert_eq!(stored_part(r.json()), stored);
    assert_eq!(stored_part(app.admin_get(path).await), stored);
    for (body, field) in [
        (json!({"blocked_mccs": []}), "blocked_mccs"),
        (
            json!({"blocked_categories": ["5411", "gamble"]}),
            "blocked_categories[1]",
        ),
        (
            json!({"allowed_categories": ["541"]}),
            "allowed_categories[0]",
        ),
        (
            json!({"blocked_categories": ["5814-5811"]}),
            "blocked_categories[0]",
        ),
        (
            json!({"blocked_countries": ["XYZ"]}),
            "blocked_countries[0]",
        ),
        (
            json!({"spending_limits": [{"amount": "5.001", "interval": "daily"}]}),
            "spending_limits[0].amount",
        ),
        (
            json!({"spending_limits": [{"amount": "0", "interval": "daily"}]}),
            "spending_limits[0].amount",
        ),
        (
            json!({"spending_limits": [{"amount": "5", "interval": "hourly"}]}),
            "spending_limits[0].interval",
        ),
        (
            json!({"velocity_limits": [{"count": 0, "interval": "daily"}]}),
            "velocity_limits[0].count",
        ),
        (json!({"currency": "USD"}), "currency"),
    ] {
        let r = put_controls(&app, path, body.clone()).await;
        assert_eq!(r.status, 422, "{body}");
        let e = r.json();
        assert_eq!(e["error"]["code"], "invalid_controls");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}: ")),
            "{body}: {message}"
        );
    }
    assert_eq!(
        stored_part(app.admin_get(path).await),
        stored,
        "a refused document changes nothing"
    );
    // JSON, but not an object.
    let r = app
        .admin("PUT", path, Some(Value::String("{".into())), None)
        .await;
    assert_eq!(
        r.status,
        422,
        "a JSON string is not an object: {:?}",
        r.json()
    );
    // A member named twice: which one would count is not for us to guess.
    let twice = br#"{"blocked_categories":["7273"],"blocked_categories":[]}"#;
    let req = app
        .client
        .put(format!("{}{path}", app.base))
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .insert_header(("content-type", "application/json"));
    let r = app.send_request(req, twice.to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "malformed_request");
    assert!(
        r.error_message()
            .contains("duplicate field `blocked_categories`")
    );
    assert_eq!(stored_part(app.admin_get(path).await), stored);
    // Owners that do not exist.
    let r = put_controls(&app, "/v1/accounts/nobody/ARS/controls", json!({})).await;
    assert_eq!(r.status, 404);
    let r = put_controls(&app, "/v1/cards/crd-nobody/controls", json!({})).await;
    assert_eq!(r.status, 404);
    // A card's spending limits need their currency.
    card(&app, "u1").await;
    let r = put_controls(
        &app,
        "/v1/cards/crd-u1/controls",
        json!({"spending_limits": [{"amount": "5", "interval": "daily"}]}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.error_message().starts_with("currency: "));
    // `{}` removes every control.
    let r = put_controls(&app, path, json!({})).await;
    assert_eq!(r.json(), json!({"version": 2, "controls": {}, "usage": []}));
}

/// A controls answer without its usage (which depends on the instant of the read).
fn stored_part(mut answer: Value) -> Value {
    answer.as_object_mut().map(|o| o.remove("usage"));
    answer
}

async fn blocked_category_declines_in_words_and_is_explained(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let r = put_controls(
        &app,
        "/v1/accounts/u1/ARS/controls",
        json!({"blocked_categories": ["gambling"]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let (id, answer) = purchase(&app, "u1", "10.00", mcc("7995")).await;
    assert_declined(
        &answer,
        "INVALID_MERCHANT",
        "merchant category 7995 (gambling) blocked on the account",
    );
    assert_eq!(
        app.available("u1", "ARS").await,
        "1000.00",
        "a decline books nothing"
    );
    let e = explanation(&app, &id).await;
    assert_eq!(e["status"], "REJECTED");
    assert_eq!(e["account"]["available"], "1000.00");
    assert_eq!(e["controls"]["declined"]["control"], "blocked_categories");
    assert_eq!(e["controls"]["declined"]["owner"], "account");
    let check = &e["controls"]["checks"][0];
    assert_eq!(check["check"], "categories");
    assert_eq!(check["mcc"], "7995");
    assert_eq!(check["matched"], "gambling");
    assert_eq!(check["passed"], false);
    let (id, answer) = purchase(&app, "u1", "10.00", mcc("5045")).await;
    assert_approved(&answer);
    assert_eq!(app.available("u1", "ARS").await, "990.00");
    let e = explanation(&app, &id).await;
    assert_eq!(e["status"], "APPROVED");
    assert_eq!(e["controls"]["declined"], Value::Null);
    assert_eq!(e["controls"]["checks"][0]["passed"], true);
}

async fn country_and_channel_controls_on_the_card(app: TestApp) {
    u1_with_card_controls(
        &app,
        json!({"blocked_countries": ["BR"], "blocked_channels": ["ecommerce", "atm"]}),
    )
    .await;
    let brazil = "merchant country BR (Brazil) blocked on the card";
    declined(
        &app,
        |b| b["merchant"]["country"] = json!("BRA"),
        MERCHANT,
        brazil,
    )
    .await;
    // Without the merchant's country, the transaction's.
    let transaction_country = |b: &mut Value| {
        b["merchant"]["country"] = Value::Null;
        b["transaction"]["country_code"] = json!("BRA");
    };
    declined(&app, transaction_country, MERCHANT, brazil).await;
    let ecommerce = |b: &mut Value| b["transaction"]["point_type"] = json!("ECOMMERCE");
    declined(&app, ecommerce, MERCHANT, "ecommerce blocked on the card").await;
    let withdrawal = |b: &mut Value| b["transaction"]["type"] = json!("WITHDRAWAL");
    declined(&app, withdrawal, MERCHANT, "atm blocked on the card").await;
    let (_, answer) = purchase(&app, "u1", "10.00", unchanged).await;
    assert_approved(&answer);
    assert_eq!(app.available("u1", "ARS").await, "990.00");
    // The card's controls are in force at once after a change (the cache is invalidated).
    let r = put_controls(
        &app,
        "/v1/cards/crd-u1/controls",
        json!({"allowed_countries": ["UY"]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let argentina = "merchant country AR (Argentina) not among the countries allowed on the card";
    declined(&app, unchanged, MERCHANT, argentina).await;
    let (_, answer) = purchase(&app, "u1", "10.00", |b| {
        b["merchant"]["country"] = json!("URY")
    })
    .await;
    assert_approved(&answer);
}

async fn monthly_spending_limit_is_reached_and_explained(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let r = put_controls(
        &app,
        "/v1/accounts/u1/ARS/controls",
        json!({"spending_limits": [
            {"amount": "500.00", "interval": "monthly"},
            {"amount": "400.00", "interval": "per_authorization"},
        ]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let (_, answer) = purchase(&app, "u1", "400.01", unchanged).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "per-authorization spending limit of 400.00 ARS exceeded on the account",
    );
    let (_, answer) = purchase(&app, "u1", "300.00", unchanged).await;
    assert_approved(&answer);
    let (id, answer) = purchase(&app, "u1", "200.01", unchanged).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "monthly spending limit of 500.00 ARS reached on the account",
    );
    let e = explanation(&app, &id).await;
    let monthly = &e["controls"]["checks"][1];
    assert_eq!(monthly["check"], "spending_limit");
    assert_eq!(monthly["interval"], "monthly");
    assert_eq!(monthly["limit"], "500.00");
    assert_eq!(monthly["spent"], "300.00");
    assert_eq!(monthly["amount"], "200.01");
    assert_eq!(monthly["passed"], false);
    assert_eq!(e["account"]["available"], "700.00");
    // What `authorizer explain` prints for a person.
    let h = app.admin_get(&format!("/v1/transactions/{id}")).await;
    let text = authorizer::cli::explanation_text(&h["records"][0]);
    assert!(
        text.contains("REJECTED / INVALID_AMOUNT\n  monthly spending limit of 500.00 ARS reached on the account"),
        "{text}"
    );
    assert!(
        text.contains(
            "account u1/ARS: available 700.00 (balance 700.00, held 0.00, overdraft 0.00)"
        ),
        "{text}"
    );
    assert!(
        text.contains(" 1. pass  account per_authorization spending limit 400.00 ARS: spent 0.00 in no window, this 200.01"),
        "{text}"
    );
    assert!(
        text.contains(
            " 2. FAIL  account monthly spending limit 500.00 ARS: spent 300.00 in monthly:"
        ),
        "{text}"
    );
    // Declines count nothing: exactly the room left still fits.
    let (_, answer) = purchase(&app, "u1", "200.00", unchanged).await;
    assert_approved(&answer);
    let (_, answer) = purchase(&app, "u1", "0.01", unchanged).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "monthly spending limit of 500.00 ARS reached on the account",
    );
    assert_eq!(app.available("u1", "ARS").await, "500.00");
}

async fn velocity_limit_on_the_card_by_category(app: TestApp) {
    u1_with_card_controls(&app, json!({"velocity_limits": [{"count": 2, "interval": "daily", "categories": ["digital_goods"]}]})).await;
    for _ in 0..2 {
        assert_approved(&purchase(&app, "u1", "1.00", mcc("5816")).await.1);
    }
    let (_, answer) = purchase(&app, "u1", "1.00", mcc("5817")).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "daily limit of 2 authorizations for digital_goods reached on the card",
    );
    // Other categories do not count against it.
    assert_approved(&purchase(&app, "u1", "1.00", mcc("5045")).await.1);
    assert_eq!(app.available("u1", "ARS").await, "997.00");
}

async fn controls_and_the_legacy_rules_both_apply(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/u1/ARS",
            Some(json!({"per_transaction_limit": "50.00", "blocked_mccs": ["5045"]})),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let r = put_controls(
        &app,
        "/v1/accounts/u1/ARS/controls",
        json!({"spending_limits": [{"amount": "60.00", "interval": "daily"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let (_, answer) = purchase(&app, "u1", "10.00", mcc("5045")).await;
    assert_declined(&answer, "INVALID_MERCHANT", "Merchant blocked");
    let (_, answer) = purchase(&app, "u1", "50.01", mcc("5411")).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "Amount above per-transaction limit",
    );
    assert_approved(&purchase(&app, "u1", "50.00", mcc("5411")).await.1);
    let (_, answer) = purchase(&app, "u1", "10.01", mcc("5411")).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "daily spending limit of 60.00 ARS reached on the account",
    );
}

async fn reversals_refunds_and_rejections_give_the_room_back(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let r = put_controls(
        &app,
        "/v1/accounts/u1/ARS/controls",
        json!({
            "spending_limits": [{"amount": "500.00", "interval": "monthly"}],
            "velocity_limits": [{"count": 2, "interval": "daily"}],
        }),
    )
    .await;
    assert_eq!(r.status, 200);
    let buy = |amount: &str| {
        Tx::new(
            &uid("ctx"),
            "PURCHASE",
            "u1",
            &format!("\"{amount}\""),
            "ARS",
        )
    };
    let first = buy("300.00");
    assert_approved(&app.send(AUTH_DEBIT, &first).await.json());
    let (_, answer) = purchase(&app, "u1", "250.00", unchanged).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "monthly spending limit of 500.00 ARS reached on the account",
    );
    // A credit booked to another account that names this purchase gives nothing back.
    app.funded("u2", "ARS", "10.00").await;
    let elsewhere = Tx::new(&uid("ctx"), "REFUND", "u2", "50.00", "ARS").original(&first.id);
    assert_eq!(app.send(ADJ_CREDIT, &elsewhere).await.status, 200);
    let (_, answer) = purchase(&app, "u1", "250.00", unchanged).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "monthly spending limit of 500.00 ARS reached on the account",
    );
    // Nor does a credit parked on suspense (a negative amount reaches no account).
    let parked =
        Tx::new(&uid("ctx"), "REVERSAL_PURCHASE", "u1", "-300.00", "ARS").original(&first.id);
    let r = app.send(ADJ_CREDIT, &parked).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("NEGATIVE_AMOUNT"), "{}", r.text());
    let (_, answer) = purchase(&app, "u1", "250.00", unchanged).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "monthly spending limit of 500.00 ARS reached on the account",
    );
    // A refund of part of it gives back that money, not the count.
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "50.00", "ARS").original(&first.id);
    assert_eq!(app.send(ADJ_CREDIT, &refund).await.status, 200);
    let second = buy("250.00");
    assert_approved(&app.send(AUTH_DEBIT, &second).await.json());
    // Two approvals today: the daily count is used up (a card check counts too).
    let (_, answer) = purchase(&app, "u1", "0.00", unchanged).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "daily limit of 2 authorizations reached on the account",
    );
    // The processor rejects the second after all: its money and its count come back.
    let key = uid("adv");
    let advice = second.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &key);
    assert_eq!(
        app.processor(NOTIFY, &advice, &key).await.json()["effect"],
        "REVERSED"
    );
    // A copy of the rejection gives nothing twice.
    let key = uid("adv");
    let again = second.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &key);
    assert_eq!(
        app.processor(NOTIFY, &again, &key).await.json()["effect"],
        "NOOP"
    );
    // A reversal of what is left of the first: 250.00 and its count come back.
    let reversal =
        Tx::new(&uid("ctx"), "REVERSAL_PURCHASE", "u1", "250.00", "ARS").original(&first.id);
    assert_eq!(app.send(ADJ_CREDIT, &reversal).await.status, 200);
    assert_eq!(app.available("u1", "ARS").await, "1000.00");
    // Room for the whole month again, and two authorizations today.
    let (id, answer) = purchase(&app, "u1", "500.00", unchanged).await;
    assert_approved(&answer);
    let e = explanation(&app, &id).await;
    assert_eq!(e["controls"]["checks"][0]["spent"], "0.00");
    assert_eq!(e["controls"]["checks"][1]["counted"], 0);
    let check = buy("0.00");
    assert_approved(&app.send(AUTH_DEBIT, &check).await.json());
    let (_, answer) = purchase(&app, "u1", "0.00", unchanged).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "daily limit of 2 authorizations reached on the account",
    );
    // The processor rejects the card check, which booked nothing: its count comes back.
    let key = uid("adv");
    let advice = check.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &key);
    assert_eq!(
        app.processor(NOTIFY, &advice, &key).await.json()["effect"],
        "NOOP"
    );
    assert_approved(&purchase(&app, "u1", "0.00", unchanged).await.1);
}

/// `authorizer backtest` as an operator runs it, on the scenario's database; returns the
/// exit code, stdout and stderr.
fn backtest(app: &TestApp, document: &Value, args: &[&str]) -> (i32, String, String) {
    backtest_text(app, &document.to_string(), args)
}

/// [`backtest`] of a document's exact text.
fn backtest_text(app: &TestApp, document: &str, args: &[&str]) -> (i32, String, String) {
    let dir = app.data_dir.path();
    let file = dir.join(format!("{}.json", uid("controls")));
    std::fs::write(&file, document).expect("controls file");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authorizer-node"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AUTHORIZER_CONFIG_DIR", dir.join("no-config"))
        .env("AUTHORIZER__DATABASE__DATA_DIR", dir)
        .env("DATABASE_URL", app.database_url.clone().unwrap_or_default())
        .arg("backtest")
        .arg("--controls")
        .arg(&file)
        .args(args)
        .output()
        .expect("authorizer-node runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// With controls that only count authorizations, a reversal gives the count back only when
/// it reverses all that is left of the authorization's own amount, not any reversal at all.
async fn a_partial_reversal_keeps_the_count(app: TestApp) {
    u1_with_card_controls(
        &app,
        json!({"velocity_limits": [{"count": 1, "interval": "daily"}]}),
    )
    .await;
    let first = Tx::new(&uid("ctx"), "PURCHASE", "u1", "100.00", "ARS");
    assert_approved(&app.send(AUTH_DEBIT, &first).await.json());
    let used_up = "daily limit of 1 authorization reached on the card";
    let reverse = |amount: &str| {
        Tx::new(&uid("ctx"), "REVERSAL_PURCHASE", "u1", amount, "ARS").original(&first.id)
    };
    assert_eq!(app.send(ADJ_CREDIT, &reverse("0.01")).await.status, 200);
    let (_, answer) = purchase(&app, "u1", "1.00", unchanged).await;
    assert_declined(&answer, "INVALID_AMOUNT", used_up);
    // The rest of it: all of it is reversed, and the count comes back.
    assert_eq!(app.send(ADJ_CREDIT, &reverse("99.99")).await.status, 200);
    let (_, answer) = purchase(&app, "u1", "1.00", unchanged).await;
    assert_approved(&answer);
}

/// A controls PUT is stored in the transaction that reads the usage it answers with: when
/// that read fails, the caller hears an error and the card's controls stay as they were.
async fn a_controls_change_that_cannot_answer_changes_nothing(app: TestApp) {
    let daily = |count: u32| json!({"velocity_limits": [{"count": count, "interval": "daily"}]});
    u1_with_card_controls(&app, daily(1)).await;
    let path = "/v1/cards/crd-u1/controls";
    let before = app.admin_get(path).await;
    // The counters cannot be read for the length of one PUT.
    let mut db = DirectConn::open(&app).await;
    db.execute("ALTER TABLE control_counters RENAME TO control_counters_away")
        .await;
    let r = put_controls(&app, path, daily(5)).await;
    db.execute("ALTER TABLE control_counters_away RENAME TO control_counters")
        .await;
    assert!(r.status >= 500, "{} {}", r.status, r.text());
    assert_eq!(app.admin_get(path).await, before, "nothing changed");
    // The limit of 1 is still the one in force.
    assert_approved(&purchase(&app, "u1", "1.00", unchanged).await.1);
    let (_, answer) = purchase(&app, "u1", "1.00", unchanged).await;
    assert_declined(
        &answer,
        "INVALID_AMOUNT",
        "daily limit of 1 authorization reached on the card",
    );
}

/// A purchase of `amount` by u1, declined by the limit `message` names; its id.
async fn over_a_limit(app: &TestApp, amount: &str, message: &str) -> String {
    let (id, answer) = purchase(app, "u1", amount, unchanged).await;
    assert_declined(&answer, "INVALID_AMOUNT", message);
    id
}

/// Money the processor makes effective without our approval (stand-in) is spent: it counts
/// in the controls and in the legacy daily counter, and its reversal gives the controls
/// their room back.
async fn forced_bookings_count(app: TestApp) {
    u1_with_card_controls(
        &app,
        json!({"velocity_limits": [{"count": 2, "interval": "daily"}]}),
    )
    .await;
    let monthly = json!({"spending_limits": [{"amount": "500.00", "interval": "monthly"}]});
    let r = put_controls(&app, "/v1/accounts/u1/ARS/controls", monthly).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .admin_put("/v1/accounts/u1/ARS", json!({"daily_limit": "600.00"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let force = |tx: &Tx| {
        let key = uid("adv");
        let advice = tx.approved_advice(&key);
        let app = &app;
        async move { app.processor(NOTIFY, &advice, &key).await.json()["effect"].clone() }
    };
    // One we never saw, and one we declined (over the monthly limit), both made effective:
    // the second for less than it asked (the processor's stand-in booked 400.00).
    let unseen = Tx::new(&uid("ctx"), "PURCHASE", "u1", "100.00", "ARS");
    assert_eq!(force(&unseen).await, "FORCED");
    let over = Tx::new(&uid("ctx"), "PURCHASE", "u1", "450.00", "ARS");
    let month_used = "monthly spending limit of 500.00 ARS reached on the account";
    assert_declined(
        &app.send(AUTH_DEBIT, &over).await.json(),
        "INVALID_AMOUNT",
        month_used,
    );
    let booked = Tx::new(&over.id, "PURCHASE", "u1", "400.00", "ARS");
    assert_eq!(force(&booked).await, "FORCED");
    assert_eq!(app.available("u1", "ARS").await, "500.00");
    // 500.00 spent this month: nothing more fits, as the controls' usage shows.
    let id = over_a_limit(&app, "1.00", month_used).await;
    let e = explanation(&app, &id).await;
    assert_eq!(e["controls"]["checks"][0]["spent"], "500.00", "{e}");
    let usage = app.admin_get("/v1/accounts/u1/ARS/controls").await["usage"].clone();
    // The account's own daily limit first (500.00 of 600.00 spent today), then the document's.
    let left = (
        &usage[0]["legacy"],
        &usage[0]["spent"],
        &usage[0]["remaining"],
    );
    assert_eq!(
        left,
        (&json!(true), &json!("500.00"), &json!("100.00")),
        "{usage}"
    );
    let month = e["controls"]["checks"][0]["window"].clone();
    assert_eq!(usage[1]["window"], month, "{usage}");
    let left = (
        &usage[1]["kind"],
        &usage[1]["spent"],
        &usage[1]["remaining"],
    );
    assert_eq!(left, (&json!("spending"), &json!("500.00"), &json!("0.00")));
    let usage = app.admin_get("/v1/cards/crd-u1/controls").await["usage"][0].clone();
    assert_eq!(
        (&usage["counted"], &usage["remaining"]),
        (&json!(2), &json!(0))
    );
    // The processor reverses all it booked, 400.00: its room and its count come back.
    let reversal =
        Tx::new(&uid("ctx"), "REVERSAL_PURCHASE", "u1", "400.00", "ARS").original(&over.id);
    assert_eq!(app.send(ADJ_CREDIT, &reversal).await.status, 200);
    assert_approved(&purchase(&app, "u1", "1.00", unchanged).await.1);
    // The legacy daily counter got the 400.00 back too (101.00 of 600.00 spent today), and
    // the card has seen two authorizations today.
    let usage = app.admin_get("/v1/accounts/u1/ARS/controls").await["usage"][0].clone();
    assert_eq!(
        (&usage["legacy"], &usage["spent"]),
        (&json!(true), &json!("101.00")),
        "{usage}"
    );
    over_a_limit(&app, "499.01", "Amount above daily limit").await;
    let card_count = "daily limit of 2 authorizations reached on the card";
    over_a_limit(&app, "99.01", card_count).await;
    // A copy of the advice counts nothing twice.
    let key = uid("adv");
    let copy = unseen.approved_advice(&key);
    assert_eq!(
        app.processor(NOTIFY, &copy, &key).await.json()["effect"],
        "NOOP"
    );
    let (id, _) = purchase(&app, "u1", "1.00", unchanged).await;
    let e = explanation(&app, &id).await;
    assert_eq!(e["controls"]["checks"][0]["spent"], "101.00", "{e}");
    // The audit holds every counter to what its records still hold: a counter changed by
    // hand is named, the account's and the card's alike.
    app.assert_audit_clean().await;
    let mut db = DirectConn::open(&app).await;
    let card_rows = "UPDATE control_counters SET count = count + 1 WHERE owner_id = 'crd-u1'";
    db.execute(card_rows).await;
    db.execute("CREATE TEMP TABLE kept AS SELECT id, counters FROM accounts WHERE user_id = 'u1'")
        .await;
    db.execute("UPDATE accounts SET counters = '' WHERE user_id = 'u1'")
        .await;
    let found = app.store.audit().await.expect("audit runs").violations;
    let mut named: Vec<&str> = found
        .iter()
        .map(|v| v.detail.split(" counter ").next().unwrap_or(""))
        .collect();
    named.sort_unstable();
    assert_eq!(named, ["account u1/ARS", "card crd-u1"], "{found:#?}");
    // Put back, for the scenario's own audit.
    db.execute("UPDATE control_counters SET count = count - 1 WHERE owner_id = 'crd-u1'")
        .await;
    db.execute(
        "UPDATE accounts SET counters = (SELECT counters FROM kept WHERE kept.id = accounts.id) \
         WHERE user_id = 'u1'",
    )
    .await;
}

/// Another writer counting on the card (another instance of a fleet, with a debit of the
/// card on another of its holder's accounts) is waited for: a debit of the card decides on
/// what that writer counted, through each door, and does not pass a limit both do not fit.
async fn a_debit_waits_for_another_writer_counting_on_its_card(app: TestApp) {
    use crate::holds::common::{RES, post};
    u1_with_card_controls(
        &app,
        json!({"velocity_limits": [{"count": 1, "interval": "daily"}]}),
    )
    .await;
    app.funded("u1", "DKK", "1000.00").await;
    let usage = app.admin_get("/v1/cards/crd-u1/controls").await["usage"].clone();
    let window = usage[0]["window"]
        .as_str()
        .expect("a daily window")
        .to_owned();
    let count_one = format!(
        "INSERT INTO control_counters (owner_kind, owner_id, window_key, categories, \
         amount_minor, count, updated_at_ms) VALUES ('CARD', 'crd-u1', '{window}', '', 0, 1, 0) \
         ON CONFLICT (owner_kind, owner_id, window_key, categories) \
         DO UPDATE SET count = control_counters.count + 1"
    );
    let reservation = |id: &str| {
        json!({"reservation_id": id, "user_id": "u1", "amount": "10.00", "currency": "DKK",
               "card_id": "crd-u1", "merchant": {"id": "m1", "name": "Shop", "mcc": "5411"}})
    };
    let used_up = "daily limit of 1 authorization reached on the card";
    for door in ["authorization", "reservation"] {
        // The other writer holds the card as a writer deciding on its counters does (the
        // embedded store: its one write lock) and counts one, not yet committed.
        let mut other = DirectConn::open(&app).await;
        match app.backend {
            Backend::Postgres => {
                other.execute("BEGIN").await;
                other
                    .execute("SELECT 1 FROM cards WHERE card_id = 'crd-u1' FOR NO KEY UPDATE")
                    .await;
            }
            Backend::Sqlite => other.execute("BEGIN IMMEDIATE").await,
        }
        other.execute(&count_one).await;
        let debit = async {
            let answer = match door {
                "authorization" => purchase(&app, "u1", "10.00", unchanged).await.1,
                _ => {
                    let r = post(&app, RES, &reservation(&uid("res"))).await;
                    assert_eq!(r.status, 200, "{}", r.text());
                    r.json()
                }
            };
            (answer, std::time::Instant::now())
        };
        let commit = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            other.execute("COMMIT").await;
            std::time::Instant::now()
        };
        let ((answer, answered), committed) = tokio::join!(debit, commit);
        assert!(
            answered > committed,
            "{door}: answered before the other writer committed"
        );
        assert_declined(&answer, "INVALID_AMOUNT", used_up);
        // The other writer's count is taken back (it stands for no record here): the
        // same debit now fits.
        let mut db = DirectConn::open(&app).await;
        db.execute("UPDATE control_counters SET count = count - 1 WHERE owner_id = 'crd-u1'")
            .await;
    }
    assert_approved(&purchase(&app, "u1", "10.00", unchanged).await.1);
    let r = post(&app, RES, &reservation(&uid("res"))).await;
    assert_declined(&r.json(), "INVALID_AMOUNT", used_up);
}

async fn backtest_replays_booked_traffic_against_stricter_and_looser_controls(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    card(&app, "u1").await;
    let mut ids = Vec::new();
    for (amount, code) in [
        ("100.00", "5411"),
        ("200.00", "7995"),
        ("300.00", "5411"),
        ("50.00", "5411"),
        ("900.00", "5411"),
    ] {
        ids.push(purchase(&app, "u1", amount, mcc(code)).await);
    }
    for (_, answer) in &ids[..4] {
        assert_approved(answer);
    }
    assert_declined(&ids[4].1, "INSUFFICIENT_FUNDS", "Insufficient funds");
    let r = put_controls(
        &app,
        "/v1/accounts/u1/ARS/controls",
        json!({"blocked_categories": ["5812"]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let (blocked, answer) = purchase(&app, "u1", "20.00", mcc("5812")).await;
    assert_declined(
        &answer,
        MERCHANT,
        "merchant category 5812 blocked on the account",
    );
    let available = app.available("u1", "ARS").await;
    // Every day the traffic above can have been booked on.
    let period = ["--from", "2020-01-01", "--to", "2099-12-31"];
    let csv = app.data_dir.path().join("changed.csv");
    let csv_arg = csv.to_str().unwrap();

    // Stricter: gambling blocked and 350.00 a month.
    let stricter = json!({
        "blocked_categories": ["gambling"],
        "spending_limits": [{"amount": "350.00", "interval": "monthly"}],
    });
    let mut args = vec!["--account", "u1/ARS", "--csv", csv_arg];
    args.extend(period);
    let (code, out, err) = backtest(&app, &stricter, &args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("6 authorizations replayed, 4 decided differently"),
        "{out}"
    );
    for line in [
        "  approved, now declined: 2, 500.00 ARS\n",
        "    blocked categories on the account: gambling: 1, 200.00 ARS\n",
        "    monthly spending limit of 350.00 ARS reached on the account: 1, 300.00 ARS\n",
        "  declined, now approved: 1, 20.00 ARS\n",
        "    was: blocked categories on the account: 5812: 1, 20.00 ARS\n",
        "  declined for another reason: 1, 900.00 ARS\n",
        "    monthly spending limit of 350.00 ARS reached on the account: 1, 900.00 ARS\n",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    let rows = std::fs::read_to_string(&csv).expect("the CSV is written");
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows[0].starts_with("transaction_id,decided_at,user_id,card_id,currency,amount,"));
    let row = |id: &str| {
        rows.iter()
            .find(|r| r.starts_with(&format!("{id},")))
            .unwrap_or_else(|| panic!("{id} in {rows:?}"))
            .split(',')
            .skip(2)
            .collect::<Vec<_>>()
            .join(",")
    };
    let limit =
        "REJECTED,INVALID_AMOUNT,monthly spending limit of 350.00 ARS reached on the account";
    assert_eq!(
        row(&ids[1].0),
        "u1,crd-u1,ARS,200.00,APPROVED,APPROVED,Approved,REJECTED,INVALID_MERCHANT,merchant category 7995 (gambling) blocked on the account"
    );
    assert_eq!(
        row(&ids[2].0),
        format!("u1,crd-u1,ARS,300.00,APPROVED,APPROVED,Approved,{limit}")
    );
    assert_eq!(
        row(&ids[4].0),
        format!("u1,crd-u1,ARS,900.00,REJECTED,INSUFFICIENT_FUNDS,Insufficient funds,{limit}")
    );
    assert_eq!(
        row(&blocked),
        "u1,crd-u1,ARS,20.00,REJECTED,INVALID_MERCHANT,merchant category 5812 blocked on the account,APPROVED,APPROVED,Approved"
    );

    // Looser: no controls at all; only the purchase the live block refused changes.
    let mut args = vec!["--all"];
    args.extend(period);
    let (code, out, err) = backtest(&app, &json!({}), &args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backtest of every account from"), "{out}");
    assert!(
        out.contains("6 authorizations replayed, 1 decided differently\n  declined, now approved: 1, 20.00 ARS\n"),
        "{out}"
    );

    // On the card: its controls replaced, the account's decision as it was.
    let mut args = vec!["--card", "crd-u1"];
    args.extend(period);
    let (code, out, err) = backtest(&app, &json!({"blocked_categories": ["gambling"]}), &args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("6 authorizations replayed, 1 decided differently\n  approved, now declined: 1, 200.00 ARS\n    blocked categories on the card: gambling: 1, 200.00 ARS\n"),
        "{out}"
    );

    // A period before the traffic replays nothing.
    let (code, out, _) = backtest(
        &app,
        &stricter,
        &[
            "--account",
            "u1/ARS",
            "--from",
            "2000-01-01",
            "--to",
            "2000-01-31",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("0 authorizations replayed, 0 decided differently"),
        "{out}"
    );

    // A document the admin API refuses is refused with the same words; nothing is read.
    let bad = json!({"spending_limits": [{"amount": "0", "interval": "monthly"}]});
    let mut args = vec!["--account", "u1/ARS"];
    args.extend(period);
    let (code, out, err) = backtest(&app, &bad, &args);
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        err.trim(),
        "authorizer: invalid controls: spending_limits[0].amount: must be greater than zero"
    );
    let r = put_controls(&app, "/v1/accounts/u1/ARS/controls", bad).await;
    assert_eq!(r.status, 422);
    assert!(
        r.error_message()
            .starts_with("spending_limits[0].amount: must be greater than zero")
    );
    // A field named twice, as PUT refuses it (the last one used to win).
    let twice = r#"{"blocked_categories": ["gambling"], "blocked_categories": []}"#;
    let (code, _, err) = backtest_text(&app, twice, &args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("duplicate field `blocked_categories`"),
        "{err}"
    );
    // A null currency is an absent one with --all, as PUT takes it.
    let mut args = vec!["--all"];
    args.extend(period);
    let (code, out, err) = backtest(&app, &json!({"currency": null}), &args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("6 authorizations replayed"), "{out}");
    // Nothing was booked by any of it.
    assert_eq!(app.available("u1", "ARS").await, available);
}

/// A channel's reservation is decided as an authorization is (mobilepay-pos.md §2.2): the
/// controls of the account, and of the card when it names one, decline it in their own words;
/// an approval counts in their windows; a cancel, an expiry, the remainder of a partial
/// capture and a refund give that room back.
async fn reservations_apply_the_controls_and_give_back_what_they_release(app: TestApp) {
    use crate::holds::common::{RES, cancel_path, capture_path, get_path, post, refund_path};
    app.funded("u1", "DKK", "1000.00").await;
    card(&app, "u1").await;
    let r = put_controls(
        &app,
        "/v1/cards/crd-u1/controls",
        json!({"currency": "DKK", "blocked_categories": ["gambling"],
               "spending_limits": [{"amount": "100.00", "interval": "monthly"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put_controls(
        &app,
        "/v1/accounts/u1/DKK/controls",
        json!({"blocked_categories": ["5993"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reserve = |id: &str, amount: &str, mcc: &str, card: bool| {
        let mut body = json!({"reservation_id": id, "user_id": "u1", "amount": amount,
                              "currency": "DKK", "merchant": {"id": "m1", "name": "Shop", "mcc": mcc}});
        if card {
            body["card_id"] = json!("crd-u1");
        }
        body
    };
    let answer = |r: Resp| {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    // The card's category block, and the account's without a card.
    let a = answer(post(&app, RES, &reserve("g1", "10.00", "7995", true)).await);
    assert_declined(
        &a,
        MERCHANT,
        "merchant category 7995 (gambling) blocked on the card",
    );
    let a = answer(post(&app, RES, &reserve("t1", "10.00", "5993", false)).await);
    assert_declined(
        &a,
        MERCHANT,
        "merchant category 5993 blocked on the account",
    );
    // The card's monthly limit counts reservations.
    let a = answer(post(&app, RES, &reserve("r1", "60.00", "5411", true)).await);
    assert_approved(&a);
    let over = answer(post(&app, RES, &reserve("r2", "40.01", "5411", true)).await);
    assert_declined(
        &over,
        "INVALID_AMOUNT",
        "monthly spending limit of 100.00 DKK reached on the card",
    );
    assert_eq!(
        app.available("u1", "DKK").await,
        "940.00",
        "declines hold nothing"
    );
    // Why: each reservation keeps its answer and the explanation of its decision.
    let decision = |id: &str| {
        let app = &app;
        let path = format!("/v1/channels/{CHANNEL_NAME}/reservations/{id}");
        async move { app.admin_get(&path).await }
    };
    let d = decision("r2").await;
    assert_eq!(d["answer"], over, "{d}");
    let e = &d["explanation"];
    assert_eq!(
        (&e["status"], &e["status_detail"], &e["message"]),
        (
            &json!("REJECTED"),
            &json!("INVALID_AMOUNT"),
            &over["message"]
        ),
        "{e}"
    );
    assert_eq!(e["account"]["available"], "940.00", "{e}");
    assert_eq!(e["card"]["belongs_to_user"], true, "{e}");
    let want = [json!("card"), json!("100.00"), json!("60.00"), json!(false)];
    assert_eq!(spending_limit_check(e), want, "{e}");
    let e = decision("r1").await["explanation"].clone();
    assert_eq!(
        (&e["status"], &e["message"]),
        (&json!("APPROVED"), &json!("Approved"))
    );
    let e = decision("g1").await["explanation"].clone();
    assert_eq!(
        e["controls"]["declined"]["control"], "blocked_categories",
        "{e}"
    );
    // A resend replays its answer and leaves the explanation of the decision as it was.
    let before = decision("r2").await;
    let again = answer(post(&app, RES, &reserve("r2", "40.01", "5411", true)).await);
    assert_eq!(again, over);
    assert_eq!(decision("r2").await, before);
    // A reservation for an account that does not exist is explained too.
    let mut nobody = reserve("n1", "1.00", "5411", false);
    nobody["user_id"] = json!("u-none");
    let a = answer(post(&app, RES, &nobody).await);
    let e = decision("n1").await["explanation"].clone();
    let seen = (&e["status_detail"], &e["account"]);
    assert_eq!(seen, (&a["status_detail"], &Value::Null), "{e}");
    // An unknown reservation, and ids no reservation can have.
    let path = format!("/v1/channels/{CHANNEL_NAME}/reservations/none");
    let r = app.admin("GET", &path, None, None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    for (path, code) in [
        (
            "/v1/channels/mobilepay-test/reservations/r%0A2",
            "invalid_reservation_id",
        ),
        (
            "/v1/channels/mobile%7Fpay/reservations/r2",
            "invalid_channel",
        ),
    ] {
        let r = app.admin("GET", path, None, None).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], code, "{path}");
    }
    // A cancel gives all of it back.
    assert_eq!(post(&app, &cancel_path("r1"), &json!({})).await.status, 200);
    let a = answer(post(&app, RES, &reserve("r3", "90.00", "5411", true)).await);
    assert_approved(&a);
    // A partial capture gives back the remainder, a refund what it refunds.
    let c = post(&app, &capture_path("r3"), &json!({"amount": "30.00"})).await;
    assert_eq!(c.status, 200, "{}", c.text());
    let a = answer(post(&app, RES, &reserve("r4", "70.00", "5411", true)).await);
    assert_approved(&a);
    let a = answer(post(&app, RES, &reserve("r5", "0.01", "5411", true)).await);
    assert_eq!(a["status_detail"], "INVALID_AMOUNT", "{a}");
    let refund = json!({"refund_id": "rf1", "amount": "20.00"});
    assert_eq!(post(&app, &refund_path("r3"), &refund).await.status, 200);
    let a = answer(post(&app, RES, &reserve("r6", "20.00", "5411", true)).await);
    assert_approved(&a);
    // An expiry gives it back too.
    let a = answer(post(&app, RES, &reserve("r7", "0.01", "5411", true)).await);
    assert_eq!(
        a["status_detail"], "INVALID_AMOUNT",
        "the limit is reached: {a}"
    );
    assert_eq!(post(&app, &cancel_path("r6"), &json!({})).await.status, 200);
    let mut short = reserve("r8", "20.00", "5411", true);
    short["expires_in_secs"] = json!(1);
    assert_approved(&answer(post(&app, RES, &short).await));
    actix_rt::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let g = app.channel("GET", &get_path("r8"), b"", None).await;
    assert_eq!(g.json()["state"], "EXPIRED", "{}", g.text());
    let a = answer(post(&app, RES, &reserve("r9", "20.00", "5411", true)).await);
    assert_approved(&a);
    // 30.00 captured less 20.00 refunded, 70.00 and 20.00 held: 100.00 of room taken.
    let a = answer(post(&app, RES, &reserve("r10", "0.01", "5411", true)).await);
    assert_eq!(a["status_detail"], "INVALID_AMOUNT", "{a}");
    assert_eq!(app.available("u1", "DKK").await, "900.00");
}

/// A reservation's merchant country, for the country controls: the merchant's when the body
/// gives one, else the channel's (`[[channels.keys]] country`, here none), else none, which
/// a country control declines.
async fn a_reservation_without_a_country_fails_country_controls(app: TestApp) {
    let app = blocked_sweden(app).await;
    let a = reserve_in(&app, "n1", None).await;
    assert_declined(
        &a,
        MERCHANT,
        "merchant country missing or unknown where the account restricts countries",
    );
    let a = reserve_in(&app, "n2", Some("DK")).await;
    assert_approved(&a);
    let a = reserve_in(&app, "n3", Some("swe")).await;
    assert_declined(
        &a,
        MERCHANT,
        "merchant country SE (Sweden) blocked on the account",
    );
}

/// With the channel's country configured, a reservation whose merchant names none is in it.
async fn a_reservation_is_in_its_channels_country(app: TestApp) {
    let app = blocked_sweden(app).await;
    assert_approved(&reserve_in(&app, "d1", None).await);
    // A blank country is none: the channel's stands.
    assert_approved(&reserve_in(&app, "d3", Some(" ")).await);
    let a = reserve_in(&app, "d2", Some("SE")).await;
    assert_declined(
        &a,
        MERCHANT,
        "merchant country SE (Sweden) blocked on the account",
    );
}

fn danish_channel(s: &mut authorizer::Settings) {
    s.channels.keys[0].country = Some("DK".into());
}

/// u1 with 100.00 DKK, its account blocking Swedish merchants.
async fn blocked_sweden(app: TestApp) -> TestApp {
    app.funded("u1", "DKK", "100.00").await;
    let path = "/v1/accounts/u1/DKK/controls";
    let r = put_controls(&app, path, json!({"blocked_countries": ["SE"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    app
}

/// A reservation of 1.00 for u1 at a merchant in `country` (none: no country given).
async fn reserve_in(app: &TestApp, id: &str, country: Option<&str>) -> Value {
    let mut body = crate::holds::common::reservation(id, "1.00", "DKK");
    if let Some(c) = country {
        body["merchant"]["country"] = json!(c);
    }
    let r = crate::holds::common::post(app, crate::holds::common::RES, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

mod channel_country {
    use super::*;
    both_backends!(settings = danish_channel; a_reservation_is_in_its_channels_country);
}

both_backends!(
    a_reservation_without_a_country_fails_country_controls,
    documents_are_stored_canonical_and_bad_ones_change_nothing,
    blocked_category_declines_in_words_and_is_explained,
    country_and_channel_controls_on_the_card,
    monthly_spending_limit_is_reached_and_explained,
    velocity_limit_on_the_card_by_category,
    controls_and_the_legacy_rules_both_apply,
    reversals_refunds_and_rejections_give_the_room_back,
    a_partial_reversal_keeps_the_count,
    forced_bookings_count,
    a_debit_waits_for_another_writer_counting_on_its_card,
    backtest_replays_booked_traffic_against_stricter_and_looser_controls,
    reservations_apply_the_controls_and_give_back_what_they_release,
    a_controls_change_that_cannot_answer_changes_nothing,
);
