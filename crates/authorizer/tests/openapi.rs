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
}
