//! docs/openapi.json is the document the code generates.

#[test]
fn committed_openapi_document_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = authorizer::openapi::json();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the length".to_owned(), |i| format!("line {}", i + 1));
        panic!(
            "docs/openapi.json differs from the generated document (first at {line}); regenerate it with\n\n    cargo run -p authorizer -- openapi > docs/openapi.json\n"
        );
    }
}

#[test]
fn the_document_is_openapi_3_1_and_names_every_error_status() {
    let doc: serde_json::Value = serde_json::from_str(&authorizer::openapi::json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let auth = &doc["paths"]["/transactions/authorizations"]["post"];
    for status in ["200", "400", "401", "403", "408", "409", "413", "425"] {
        assert!(
            auth["responses"][status].is_object(),
            "authorization {status}"
        );
    }
    assert!(
        auth["responses"]["503"].is_null(),
        "authorizations answer SYSTEM_ERROR, not 503"
    );
    let adj = &doc["paths"]["/transactions/adjustments/credit"]["post"];
    assert!(adj["responses"]["503"].is_object());
    assert!(adj["responses"]["200"]["headers"]["x-signature"].is_object());
    assert!(
        adj["responses"]["401"]["headers"].is_null(),
        "refusals are not signed"
    );
    let schemas = &doc["components"]["schemas"];
    for s in [
        "TransactionRequest",
        "Notification",
        "WireAmount",
        "TransactionType",
        "ErrorBody",
        "Account",
        "TransactionHistory",
    ] {
        assert!(schemas[s].is_object(), "schema {s}");
    }
    // Amounts: a number or a plain decimal string, never an enum-closed or float-only field.
    assert_eq!(schemas["WireAmount"]["oneOf"].as_array().unwrap().len(), 2);
    // Open enums accept any string.
    assert!(schemas["TransactionType"]["enum"].is_null());
    // An account or card is registered only under an id the processor can send; reads
    // also reach ids registered under the wider rule before.
    let pattern = |path: &str, method: &str, name: &str| {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let p = params.iter().find(|p| p["name"] == name).unwrap();
        p["schema"]["pattern"].as_str().unwrap().to_owned()
    };
    let account = "/v1/accounts/{user_id}/{currency}";
    assert_eq!(pattern(account, "put", "user_id"), "^[!-~]+$");
    assert_eq!(pattern("/v1/cards/{card_id}", "put", "card_id"), "^[!-~]+$");
    assert_ne!(pattern(account, "get", "user_id"), "^[!-~]+$");
}

/// The admin and operations routes are registered from `admin::ROUTES`' table and documented
/// from their handlers' attributes: the two must name the same (method, path) pairs.
#[test]
fn every_registered_admin_route_is_documented_with_its_method() {
    use authorizer::routes::admin::ROUTES;
    let doc: serde_json::Value = serde_json::from_str(&authorizer::openapi::json()).unwrap();
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(
            op.is_object(),
            "{method} {path} is registered but not documented"
        );
        let security = match op["tags"][0].as_str() {
            Some("admin") => serde_json::json!([{"adminToken": []}]),
            Some("operations") => serde_json::Value::Null,
            other => panic!("{method} {path}: tag {other:?}"),
        };
        assert_eq!(op["security"], security, "{method} {path}");
    }
    // And the other way: no such operation is documented that is not registered.
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["tags"][0] == "admin" || op["tags"][0] == "operations" {
                documented.push((method.as_str(), path.as_str()));
            }
        }
    }
    documented.sort();
    let mut registered = ROUTES.to_vec();
    registered.sort();
    assert_eq!(documented, registered);
    assert_eq!(registered.len(), 33 + 4, "admin and operations routes");
}

#[test]
fn every_schema_reference_resolves() {
    fn walk<'a>(v: &'a serde_json::Value, refs: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                    refs.push(r);
                }
                m.values().for_each(|v| walk(v, refs));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let doc: serde_json::Value = serde_json::from_str(&authorizer::openapi::json()).unwrap();
    let mut refs = Vec::new();
    walk(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}: not a schema reference"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
}
