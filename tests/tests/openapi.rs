//! The served OpenAPI document is the generated one, and every operation it documents is
//! routed by the server.

use e2e::*;

#[actix_rt::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let served = app.get("/openapi.json").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.body, authorizer::openapi::json().into_bytes());
    let doc = served.json();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{user_id}", "u-none")
            .replace("{currency}", "ARS")
            .replace("{card_id}", "crd-none")
            .replace("{transaction_id}", "ctx-none")
            .replace("{date}", "2024-01-01")
            .replace("{reservation_id}", "res-none")
            .replace("{id}", "999999")
            .replace("{number}", "6280001234567895")
            .replace("{tenant_id}", "t-none")
            .replace("{account_number}", "acct-none");
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let method = method.to_uppercase();
            let r = match op["tags"][0].as_str() {
                Some("admin") => app.admin(&method, &concrete, None, None).await,
                Some("processor") => app.processor(&concrete, b"{}", &uid("k")).await,
                Some("channels") => {
                    let key = uid("k");
                    let key = (method == "POST").then_some(key.as_str());
                    app.channel(&method, &concrete, b"{}", key).await
                }
                Some("instore") => {
                    let path = concrete.trim_start_matches("/instore/");
                    if method == "POST" {
                        app.instore_post(path, b"{}", None).await
                    } else {
                        app.instore_get(path, "requestId=r&locationId=l", "00")
                            .await
                    }
                }
                _ => app.get(&concrete).await,
            };
            let documented = op["responses"][r.status.to_string()].is_object();
            assert!(
                documented,
                "{method} {path}: {} is not documented",
                r.status
            );
            if r.status == 404 {
                assert_ne!(
                    r.json()["error"]["message"],
                    "No such route",
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }
    assert_eq!(
        operations,
        6 + 5 + 14 + 33 + 4,
        "processor, channel, InStore (stored value, pay on account and wallet), admin and operations routes"
    );
}
