//! The InStore callback outbox through the admin API (instore-extensions.md sections 1.6 and
//! 6.3), on both stores: `GET /v1/instore/callbacks` by state with paging, and
//! `POST /v1/instore/callbacks/{id}/redeliver`. A receiver that refuses every attempt until
//! the callbacks are DEAD (a short give-up age), then accepts: a redelivered callback
//! arrives once more with the same bytes and signature, and no money moves again.

use e2e::instore::{CallbackReceiver, TENANT, redeem, sign};
use e2e::*;
use serde_json::{Value, json};
use std::time::Duration;

const NUMBER: &str = "6280001234567895";

/// A give-up age of 2 s: a refused callback is DEAD after two or three attempts.
fn short_give_up(s: &mut authorizer::Settings) {
    s.webhooks.give_up_secs = 2;
}

/// One page of the listing; asserts 200.
async fn page(app: &TestApp, query: &str) -> (Vec<Value>, Value) {
    let r = app
        .admin("GET", &format!("/v1/instore/callbacks{query}"), None, None)
        .await;
    let text = r.text();
    assert_eq!(r.status, 200, "{text}");
    assert!(
        !text.contains(NUMBER),
        "the listing never shows a card number: {text}"
    );
    let v = r.json();
    (
        v["callbacks"].as_array().expect("callbacks").clone(),
        v["next_cursor"].clone(),
    )
}

/// The 422 of a bad query: its error code.
async fn refused(app: &TestApp, query: &str) -> String {
    let r = app
        .admin("GET", &format!("/v1/instore/callbacks?{query}"), None, None)
        .await;
    assert_eq!(r.status, 422, "{query}: {}", r.text());
    r.json()["error"]["code"].as_str().expect("code").to_owned()
}

async fn dead_to_delivered_by_redelivery(app: TestApp, rx: CallbackReceiver) {
    app.stored_value_card("u-cb", "USD", "100.00", NUMBER).await;
    // Down: every attempt is refused.
    rx.fail_first(usize::MAX);
    let ids = ["req-cb-1", "req-cb-2", "req-cb-3"];
    for (i, id) in ids.iter().enumerate() {
        app.instore_acknowledged(
            "storedvaluecard_process",
            &redeem(NUMBER, id, 100 + i64::try_from(i).unwrap()),
            &rx.url(&format!("/cb/{id}")),
        )
        .await;
    }
    assert_eq!(app.available("u-cb", "USD").await, "96.97");

    // Every callback ends DEAD after its attempts; none was delivered.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (dead, _) = page(&app, "?state=DEAD").await;
        if dead.len() == ids.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "dead: {dead:?}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page(&app, "?state=PENDING").await.0.is_empty());
    assert!(page(&app, "?state=delivered").await.0.is_empty());

    // Paging, newest first: 2, then 1 and no further cursor.
    let (first, cursor) = page(&app, "?state=DEAD&limit=2").await;
    assert_eq!(first.len(), 2);
    let cursor = cursor.as_i64().expect("a next page");
    let (second, last) = page(&app, &format!("?state=dead&limit=2&cursor={cursor}")).await;
    assert_eq!(second.len(), 1);
    assert_eq!(last, Value::Null);
    let listed: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|c| c["requestId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["req-cb-3", "req-cb-2", "req-cb-1"]);
    let one = &second[0];
    assert_eq!(one["tenant_id"], TENANT);
    assert_eq!(
        (&one["action"], &one["result"], &one["code"], &one["error"]),
        (
            &json!("Redeem"),
            &json!("Success"),
            &json!("00"),
            &Value::Null
        )
    );
    assert_eq!(one["url"], json!(rx.url("/cb/req-cb-1")));
    assert_eq!(one["state"], "DEAD");
    assert!(one["attempts"].as_i64().unwrap() >= 1, "{one}");
    assert_eq!(one["last_error"], "answered 500");
    assert!(one.get("body").is_none(), "no body: it carries the number");
    let refused_posts = rx.posts("/cb/req-cb-1");
    assert!(refused_posts.iter().all(|p| p.status == 500));
    let body = app.instore_callbacks().await["req-cb-1"].clone();
    assert_eq!(one["body_bytes"], body.len());
    // Nor does the outbox's own listing: there a callback's body is its size and hash.
    let r = app.admin("GET", "/v1/outbox", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(NUMBER), "{}", r.text());
    let rows = r.json()["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone();
    assert_eq!(rows.len(), ids.len());
    let row = rows.iter().find(|d| d["id"] == one["id"]).expect("its row");
    assert_eq!(
        (&row["body"]["body_bytes"], &row["body"]["body_sha256"]),
        (&one["body_bytes"], &one["body_sha256"]),
        "{row}"
    );

    // Bad queries: 422 naming the field; an unknown id: 404.
    assert_eq!(refused(&app, "state=LOST").await, "invalid_state");
    assert_eq!(refused(&app, "limit=0").await, "invalid_limit");
    assert_eq!(refused(&app, "limit=1001").await, "invalid_limit");
    assert_eq!(refused(&app, "limit=ten").await, "invalid_limit");
    assert_eq!(refused(&app, "cursor=abc").await, "invalid_cursor");
    assert_eq!(refused(&app, "cursor=-1").await, "invalid_cursor");
    let r = app
        .admin_post("/v1/instore/callbacks/999999/redeliver")
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Up again: the redelivered callback arrives once more, byte-identical and signed.
    rx.fail_first(0);
    let id = one["id"].as_i64().unwrap();
    let r = app
        .admin_post(&format!("/v1/instore/callbacks/{id}/redeliver"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["state"], "PENDING");
    assert_eq!(r.json()["attempts"], 0);
    let n = refused_posts.len();
    let posts = rx
        .wait_for("/cb/req-cb-1", n + 1, Duration::from_secs(10))
        .await;
    assert_eq!(posts.len(), n + 1, "delivered once more");
    let delivered = &posts[n];
    assert_eq!(delivered.status, 200);
    assert_eq!(delivered.body, body, "the outbox's bytes");
    assert_eq!(delivered.body, posts[0].body, "byte-identical");
    assert_eq!(delivered.signature, posts[0].signature);
    assert_eq!(delivered.signature, sign(&delivered.body));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (done, _) = page(&app, "?state=DELIVERED").await;
        if done.len() == 1 {
            assert_eq!(done[0]["requestId"], "req-cb-1");
            assert!(done[0]["delivered_at_ms"].is_i64());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "delivered: {done:?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(page(&app, "?state=DEAD").await.0.len(), 2);
    // Nothing else went out, and no money moved again.
    assert!(rx.posts("/cb/req-cb-2").iter().all(|p| p.status == 500));
    assert_eq!(app.available("u-cb", "USD").await, "96.97");
    assert_eq!(app.movements("u-cb", "USD", "SV_REDEEM").await, 3);
}

e2e::instore_scenarios!(settings = short_give_up; dead_to_delivered_by_redelivery);
