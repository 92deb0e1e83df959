//! Section 7's signature vectors through the verifier, byte for byte, and the refusals
//! around them.

use instore::signature::{sha256_hex, sign};
use instore::{
    AuthFailure, ErrorCode, Headers, MatchedForm, Method, Route, Shape, TenantConfig, Tenants,
    verify_get, verify_post,
};

const KEY: &str = "instore-demo-verification-key-01";
const TENANT: &str = "b312-c121-3f45-ab34";
const MAX: usize = 65_536;

const PAYLOAD_71: &str = include_str!("vectors/7.1-payload.json");
const BODY_71: &str = include_str!("vectors/7.1-body.json");
const SIGNED_72: &str = include_str!("vectors/7.2-signed-payload.json");
const BODY_72: &str = include_str!("vectors/7.2-body.json");
const PAYLOAD_73: &str = include_str!("vectors/7.3-payload.json");

const MAC_71: &str = "9671dfb99c81025be5f2797c2fb0fa207bb84e469063f964cbc5f2a160bfa90d";
const MAC_72: &str = "f3cdd1fc319172e5691f726c20c9ac50de75f2067c70e1f6516c9b6b705d561e";

/// A tenant as configuration spells it (the defaults of every key left out).
fn tenant_config(id: &str, key: &str) -> TenantConfig {
    serde_json::from_value(serde_json::json!({
        "tenant_id": id,
        "verification_key": key,
        "callback_url_prefixes": ["https://instore.example/"],
        "merchant_id": "634100700040000",
        "terminal_id": "00000011",
    }))
    .expect("a tenant's configuration")
}

fn tenants() -> Tenants {
    Tenants::new(vec![tenant_config(TENANT, KEY)]).unwrap()
}

fn two_tenants() -> Tenants {
    Tenants::new(vec![
        tenant_config(TENANT, KEY),
        tenant_config("other-tenant", "another-tenant-key-0123456789"),
    ])
    .unwrap()
}

fn sig(s: &str) -> Headers<'_> {
    Headers {
        x_signature: Some(s),
        ..Headers::default()
    }
}

fn process() -> Route {
    Route::parse(Method::Post, "storedvaluecard_process").unwrap()
}

fn lookup(number: &str) -> Route {
    Route::parse(Method::Post, &format!("storedvaluecard/{number}")).unwrap()
}

#[test]
fn the_vectors_are_byte_exact() {
    assert_eq!(PAYLOAD_71.len(), 240);
    assert_eq!(
        sha256_hex(PAYLOAD_71.as_bytes()),
        "9cd67fb100e158fbcfa9e752f04dae0091bd8e220db0be06362ade04ea30aabd"
    );
    assert_eq!(BODY_71.len(), 596);
    assert_eq!(
        sha256_hex(BODY_71.as_bytes()),
        "e78ee57d2d7b2c21aae83e143f2afede53f89545df145071a7f82f123e3f72b5"
    );
    assert_eq!(SIGNED_72.len(), 105);
    assert_eq!(BODY_72.len(), 530);
    assert_eq!(
        sha256_hex(BODY_72.as_bytes()),
        "25674a9daafb83808d8d6029d0cbe1a111f8bf72a7e9af777882aa0d8acb8d21"
    );
    assert_eq!(
        sha256_hex(PAYLOAD_73.as_bytes()),
        "8e7ba5799489534a99eb6733be1d538e9ffc1bdc1d1daf5fa4f18ce7af15522b"
    );
    let key = KEY.as_bytes();
    assert_eq!(sign(key, PAYLOAD_71.as_bytes()), MAC_71);
    assert_eq!(sign(key, SIGNED_72.as_bytes()), MAC_72);
    assert_eq!(
        sign(key, PAYLOAD_73.as_bytes()),
        "f75112fc3f5214816f0566b82986613687b005cef0f474ba37d792752f2baba0"
    );
    assert_eq!(
        sign(
            key,
            PAYLOAD_73
                .replace("req-9a8b0003", "req-9a8b0004")
                .as_bytes()
        ),
        "6c06c95a5685f60e6a31abca1a26974e5b4a465db861cb4edd782f2348c45681"
    );
}

#[test]
fn redeem_envelope_verifies_in_every_spelling() {
    let tenants = tenants();
    for spelling in [
        MAC_71.to_owned(),
        MAC_71.to_uppercase(),
        "lnHfuZyBAlvl8nl8L7D6IHu4TkaQY/lky8XyoWC/qQ0=".to_owned(),
        "lnHfuZyBAlvl8nl8L7D6IHu4TkaQY_lky8XyoWC_qQ0".to_owned(),
    ] {
        let v = verify_post(
            &tenants,
            &process(),
            sig(&spelling),
            BODY_71.as_bytes(),
            MAX,
        )
        .unwrap_or_else(|r| panic!("{spelling}: {r:?}"));
        assert_eq!(v.shape, Shape::Envelope);
        assert_eq!(v.matched, MatchedForm::Raw);
        assert_eq!(v.tenant.tenant_id, TENANT);
        assert_eq!(v.signed_request_id(), Some("req-9a8b0001"));
        assert_eq!(
            instore::money_idempotency_key(&v, None).as_deref(),
            Ok("req-9a8b0001")
        );
        let e = v.envelope.unwrap();
        assert_eq!(
            e.callback_url,
            "https://instore.example/callback/req-9a8b0001"
        );
        assert_eq!(
            e.status_url.as_deref(),
            Some("https://instore.example/status/req-9a8b0001")
        );
        // Candidate (a) is the raw span: byte-identical to the signed payload.
        assert_eq!(&BODY_71[v.payload.span.clone()], PAYLOAD_71);
    }
    // The body's own verification_signature alone is enough.
    let v = verify_post(
        &tenants,
        &process(),
        Headers::default(),
        BODY_71.as_bytes(),
        MAX,
    )
    .unwrap();
    assert_eq!(v.matched, MatchedForm::Raw);
}

fn refused(
    body: &str,
    route: &Route,
    headers: Headers<'_>,
    tenants: &Tenants,
) -> (ErrorCode, Option<AuthFailure>) {
    let r = verify_post(tenants, route, headers, body.as_bytes(), MAX).unwrap_err();
    (r.error.code, r.auth_failure)
}

/// The same requestId with another amount is a conflict (409) for the store: the request
/// hash over `JS(payload)` differs, while a pretty-printed copy of the same payload does not.
#[test]
fn request_hash_tells_replays_from_conflicts() {
    use instore::payload::request_hash;
    let tenants = tenants();
    let first = verify_post(&tenants, &process(), sig(MAC_71), BODY_71.as_bytes(), MAX).unwrap();
    assert_eq!(
        request_hash(&first.payload.value, b"k"),
        sha256_hex(PAYLOAD_71.as_bytes())
    );
    let changed = PAYLOAD_71.replace("\"amount\":1220", "\"amount\":1221");
    let mac = sign(KEY.as_bytes(), changed.as_bytes());
    let body = BODY_71.replace(PAYLOAD_71, &changed).replace(MAC_71, &mac);
    let second = verify_post(&tenants, &process(), sig(&mac), body.as_bytes(), MAX).unwrap();
    assert_eq!(second.signed_request_id(), Some("req-9a8b0001"));
    assert_ne!(
        request_hash(&first.payload.value, b"k"),
        request_hash(&second.payload.value, b"k")
    );
}

#[test]
fn flipped_bytes_are_refused() {
    let tenants = tenants();
    // A byte of the payload.
    let body = BODY_71.replace("\"amount\":1220", "\"amount\":1221");
    assert_eq!(
        refused(&body, &process(), sig(MAC_71), &tenants),
        (ErrorCode::Unauthorized, Some(AuthFailure::MacMismatch))
    );
    // A byte of the signature (in the header and the body alike, so they agree).
    let flipped = MAC_71.replace("9671", "9672");
    let body = BODY_71.replace(MAC_71, &flipped);
    assert_eq!(
        refused(&body, &process(), sig(&flipped), &tenants),
        (ErrorCode::Unauthorized, Some(AuthFailure::MacMismatch))
    );
    // A byte of the key.
    let other_key = Tenants::new(vec![tenant_config(
        TENANT,
        "instore-demo-verification-key-02",
    )])
    .unwrap();
    assert_eq!(
        refused(BODY_71, &process(), sig(MAC_71), &other_key),
        (ErrorCode::Unauthorized, Some(AuthFailure::MacMismatch))
    );
    // The header and the body disagree.
    assert_eq!(
        refused(BODY_71, &process(), sig(&flipped), &tenants),
        (
            ErrorCode::Unauthorized,
            Some(AuthFailure::SignaturesDisagree)
        )
    );
    // The seed's example value is not a MAC.
    assert_eq!(
        refused(BODY_71, &process(), sig("asdibasdy7128e71"), &tenants),
        (
            ErrorCode::Unauthorized,
            Some(AuthFailure::SignatureMalformed)
        )
    );
    // An unknown tenant.
    let body = BODY_71.replace(TENANT, "nobody");
    assert_eq!(
        refused(&body, &process(), sig(MAC_71), &two_tenants()),
        (ErrorCode::Unauthorized, Some(AuthFailure::UnknownTenant))
    );
    // Every 401 has one body.
    let r = verify_post(&tenants, &process(), sig(&flipped), BODY_71.as_bytes(), MAX).unwrap_err();
    assert_eq!(r.error.body(), instore::InstoreError::unauthorized().body());
}

#[test]
fn pretty_printed_lookup_matches_the_js_candidate() {
    let tenants = tenants();
    let route = lookup("6280001234567895");
    let v = verify_post(&tenants, &route, sig(MAC_72), BODY_72.as_bytes(), MAX).unwrap();
    assert_eq!(v.matched, MatchedForm::Js);
    assert_eq!(instore::js(&v.payload.value), SIGNED_72);
    // Candidate (a) is the indented span, 136 bytes, with the MAC the page gives.
    let raw = &BODY_72[v.payload.span.clone()];
    assert_eq!(raw.len(), 136);
    assert_eq!(
        sign(KEY.as_bytes(), raw.as_bytes()),
        "c81807f014720a298c4b4ac18a4b163493e1da49c7cf62a2945730faab189865"
    );
}

#[test]
fn envelope_bindings() {
    let tenants = tenants();
    let card = lookup("6280001234567895");
    let refuse = |body: &str, route: &Route| refused(body, route, sig(MAC_72), &tenants).0;
    assert_eq!(
        refuse(BODY_72, &lookup("6280007654321010")),
        ErrorCode::NumberMismatch
    );
    let evil = BODY_72.replace(
        "https://instore.example/callback/req-9a8b0002",
        "https://evil.example/x",
    );
    assert_eq!(refuse(&evil, &card), ErrorCode::CallbackUrlNotAllowed);
    // Another URL inside the allow-list is accepted: InStore may issue one per attempt.
    let fresh = BODY_72.replace("callback/req-9a8b0002", "callback/req-9a8b0002-retry");
    let v = verify_post(&tenants, &card, sig(MAC_72), fresh.as_bytes(), MAX).unwrap();
    assert_eq!(
        v.envelope.unwrap().callback_url,
        "https://instore.example/callback/req-9a8b0002-retry"
    );
    let dup = BODY_72.replace(
        "\"cartKey\": \"3819232132\"",
        "\"cartKey\": \"3819232132\",\n    \"number\": \"6280001234567895\"",
    );
    assert_eq!(refuse(&dup, &card), ErrorCode::Malformed);
    let other_id = BODY_72.replace(
        "\"requestId\": \"req-9a8b0002\",\n  \"callbackUrl\"",
        "\"requestId\": \"req-9a8b0099\",\n  \"callbackUrl\"",
    );
    assert_ne!(other_id, BODY_72);
    let r = verify_post(&tenants, &card, sig(MAC_72), other_id.as_bytes(), MAX).unwrap_err();
    assert_eq!(r.error.code, ErrorCode::RequestIdMismatch);
    assert_eq!(r.error.request_id.as_deref(), Some("req-9a8b0099"));
    let other_url = BODY_72.replace(
        "/instore/storedvaluecard/6280001234567895",
        "/instore/storedvaluecard_process",
    );
    assert_eq!(refuse(&other_url, &card), ErrorCode::PayloadUrlMismatch);
    // A bare body on a stored-value action.
    assert_eq!(
        refused(SIGNED_72, &card, sig(MAC_72), &tenants).0,
        ErrorCode::EnvelopeRequired
    );
    // Too large: nothing is parsed.
    let r = verify_post(&tenants, &process(), sig(MAC_71), BODY_71.as_bytes(), 595).unwrap_err();
    assert_eq!(r.error.code, ErrorCode::PayloadTooLarge);
    assert_eq!(r.error.http_status(), 413);
}

#[test]
fn api_key_is_checked_after_the_mac() {
    let mut c = tenant_config(TENANT, KEY);
    c.api_key = Some(instore::SecretString::new("webhook-key"));
    let tenants = Tenants::new(vec![c]).unwrap();
    let with = |k: Option<&'static str>| Headers {
        x_signature: Some(MAC_71),
        x_api_key: k,
        tenant_id: None,
    };
    assert!(
        verify_post(
            &tenants,
            &process(),
            with(Some("webhook-key")),
            BODY_71.as_bytes(),
            MAX
        )
        .is_ok()
    );
    for k in [None, Some("webhook-kez"), Some("webhook-key ")] {
        assert_eq!(
            refused(BODY_71, &process(), with(k), &tenants),
            (ErrorCode::Unauthorized, Some(AuthFailure::ApiKey))
        );
    }
}

#[test]
fn get_candidates() {
    let tenants = tenants();
    let route = Route::parse(Method::Get, "storedvaluelog/6280001234567895").unwrap();
    let query = "requestId=req-9a8b0005&locationId=LondonStore&workstationId=POS-03";
    let v = verify_get(
        &tenants,
        &route,
        sig("55b4731f1f203fad83625e0bce0be4fac90dd6dc75225af5348a93743045e13e"),
        query,
    )
    .unwrap();
    assert_eq!(v.matched, MatchedForm::QueryJson);
    assert_eq!(v.param("locationId"), Some("LondonStore"));
    let v = verify_get(
        &tenants,
        &route,
        sig("f2837f23ebf096b31ea7e59d61ea28be8293f0a18ba68a5a526ffcb9c6612a81"),
        query,
    )
    .unwrap();
    assert_eq!(v.matched, MatchedForm::QueryRaw);
    // (b): the route parameter appended.
    let with_number = r#"{"requestId":"req-9a8b0005","locationId":"LondonStore","workstationId":"POS-03","number":"6280001234567895"}"#;
    let mac = sign(KEY.as_bytes(), with_number.as_bytes());
    assert_eq!(
        verify_get(&tenants, &route, sig(&mac), query)
            .unwrap()
            .matched,
        MatchedForm::QueryJson
    );
    // Percent-decoded values in (a).
    let encoded = "requestId=req%2D1&locationId=M%C3%A1laga+01";
    let mac = sign(
        KEY.as_bytes(),
        r#"{"requestId":"req-1","locationId":"Málaga 01"}"#.as_bytes(),
    );
    assert!(verify_get(&tenants, &route, sig(&mac), encoded).is_ok());
    // The same signature does not serve another card's log.
    let other = Route::parse(Method::Get, "storedvaluelog/6280007654321010").unwrap();
    let mac = sign(KEY.as_bytes(), with_number.as_bytes());
    assert_eq!(
        verify_get(&tenants, &other, sig(&mac), query)
            .unwrap_err()
            .auth_failure,
        Some(AuthFailure::MacMismatch)
    );
    // Never a MAC over `{}` or the empty string.
    let poa = Route::parse(Method::Get, "payonaccountlog/").unwrap();
    for constant in ["{}", ""] {
        let mac = sign(KEY.as_bytes(), constant.as_bytes());
        assert_eq!(
            verify_get(&tenants, &poa, sig(&mac), "")
                .unwrap_err()
                .auth_failure,
            Some(AuthFailure::MacMismatch)
        );
    }
    // A repeated parameter.
    let r = verify_get(&tenants, &route, sig(MAC_71), "a=1&a=2").unwrap_err();
    assert_eq!(r.error.code, ErrorCode::Malformed);
    // A query number that differs from the route.
    let q = "requestId=r&locationId=l&number=6280007654321010";
    let mac = sign(KEY.as_bytes(), q.as_bytes());
    assert_eq!(
        verify_get(&tenants, &route, sig(&mac), q)
            .unwrap_err()
            .error
            .code,
        ErrorCode::NumberMismatch
    );
}

#[test]
fn bare_bodies() {
    let tenants = tenants();
    let poa = Route::parse(Method::Post, "payonaccount/process").unwrap();
    let credit = r#"{"action":"Credit","account_number":"2342342342","authorized_user_ids":["234234"],"balance":{"amount":"1220","precision":"2","currency":"USD"}}"#;
    let v = verify_post(
        &tenants,
        &poa,
        sig("c7eb0569955079587ca798e90c032df03affe9d06dea8f7d67760442b5daa1e9"),
        credit.as_bytes(),
        MAX,
    )
    .unwrap();
    assert_eq!((v.shape, v.matched), (Shape::Bare, MatchedForm::Raw));
    assert!(v.envelope.is_none());
    assert_eq!(
        instore::money_idempotency_key(&v, Some("corr-poa-1")).as_deref(),
        Ok("corr-poa-1")
    );
    assert_eq!(
        instore::money_idempotency_key(&v, None).unwrap_err().code,
        ErrorCode::IdempotencyKeyRequired
    );

    let pay = Route::parse(Method::Post, "pay_wallet").unwrap();
    let body = r#"{"barcode":"123456789012345678901000","currency":"USD","total":16960,"pos_local_time":"2024-01-24 12:37:54","tip":300,"note":"payment"}"#;
    let mac = "1018f768f168d70e93c858774e872eb01fba5f2862d0d80cd02cda724464255f";
    assert_eq!(
        verify_post(&tenants, &pay, sig(mac), body.as_bytes(), MAX)
            .unwrap()
            .matched,
        MatchedForm::Raw
    );
    // Pretty-printed after signing: candidate (b).
    let pretty = body.replace(",\"", ",\n  \"").replace("{", "{\n  ");
    assert_eq!(
        verify_post(&tenants, &pay, sig(mac), pretty.as_bytes(), MAX)
            .unwrap()
            .matched,
        MatchedForm::Js
    );

    // The seed's cancel_wallet_payment carries X-Signature and tenant_id in the body; the
    // sender signed the rest.
    let cancel = Route::parse(Method::Post, "cancel_wallet_payment").unwrap();
    let both = two_tenants();
    let signed = r#"{"transaction_id":"wtx-1"}"#;
    let mac = sign(KEY.as_bytes(), signed.as_bytes());
    let body =
        format!(r#"{{"X-Signature":"{mac}","tenant_id":"{TENANT}","transaction_id":"wtx-1"}}"#);
    let v = verify_post(&both, &cancel, Headers::default(), body.as_bytes(), MAX).unwrap();
    assert_eq!(v.matched, MatchedForm::JsNoTenant);
    assert_eq!(v.tenant.tenant_id, TENANT);
    let signed = format!(r#"{{"tenant_id":"{TENANT}","transaction_id":"wtx-1"}}"#);
    let mac = sign(KEY.as_bytes(), signed.as_bytes());
    let body =
        format!(r#"{{"X-Signature":"{mac}","tenant_id":"{TENANT}","transaction_id":"wtx-1"}}"#);
    let v = verify_post(&both, &cancel, Headers::default(), body.as_bytes(), MAX).unwrap();
    assert_eq!(v.matched, MatchedForm::JsStripped);

    // Tenant selection for a bare body: the header, else the only tenant.
    let init = Route::parse(Method::Post, "initialize_wallet").unwrap();
    let body = r#"{"location_id":"001"}"#;
    let mac = sign(KEY.as_bytes(), body.as_bytes());
    assert!(verify_post(&tenants, &init, sig(&mac), body.as_bytes(), MAX).is_ok());
    assert_eq!(
        refused(body, &init, sig(&mac), &two_tenants()).1,
        Some(AuthFailure::UnknownTenant)
    );
    let named = Headers {
        x_signature: Some(&mac),
        x_api_key: None,
        tenant_id: Some(TENANT),
    };
    assert!(verify_post(&two_tenants(), &init, named, body.as_bytes(), MAX).is_ok());
    // No signature anywhere.
    assert_eq!(
        refused(body, &init, Headers::default(), &tenants).1,
        Some(AuthFailure::SignatureMissing)
    );
    // Not an object, a float, a lone surrogate: 400 before any MAC.
    assert_eq!(
        refused("[1]", &init, sig(&mac), &tenants).0,
        ErrorCode::InvalidField
    );
    assert_eq!(
        refused(r#"{"total":1.5}"#, &init, sig(&mac), &tenants).0,
        ErrorCode::Malformed
    );
    assert_eq!(
        refused(r#"{"n":"\ud800"}"#, &init, sig(&mac), &tenants).0,
        ErrorCode::Malformed
    );
}
