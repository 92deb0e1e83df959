//! The verifier of section 1.3: one function for every POST route and one for every GET
//! route. Each returns the tenant whose key verified and the parsed value the MAC covers,
//! or the refusal to answer with.

use crate::error::{ErrorCode, InstoreError};
use crate::json::{self, Node, Value, js};
use crate::route::Route;
use crate::signature::{Mac, ct_eq, decode_signature, mac_matches};
use crate::tenant::{Tenant, Tenants};

/// Default of `instore.body_bytes_max`.
pub const BODY_BYTES_MAX_DEFAULT: usize = 65_536;

/// Upper bound on the MACs one request may cost us, whatever it sends.
pub const MACS_MAX: usize = 4;

/// The request headers the verifier reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a> {
    pub x_signature: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
}

/// Which candidate message matched: the label of
/// `instore_signature_matches_total{form=..}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchedForm {
    Raw,
    Js,
    JsStripped,
    JsNoTenant,
    QueryJson,
    QueryRaw,
}

impl MatchedForm {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchedForm::Raw => "raw",
            MatchedForm::Js => "js",
            MatchedForm::JsStripped => "js_stripped",
            MatchedForm::JsNoTenant => "js_no_tenant",
            MatchedForm::QueryJson => "query_json",
            MatchedForm::QueryRaw => "query_raw",
        }
    }
}

/// Why authentication failed: the label of `instore_signature_failures_total{reason}`.
/// Never told to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    SignatureMissing,
    SignatureMalformed,
    SignaturesDisagree,
    UnknownTenant,
    MacMismatch,
    ApiKey,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::SignatureMissing => "signature_missing",
            AuthFailure::SignatureMalformed => "signature_malformed",
            AuthFailure::SignaturesDisagree => "signatures_disagree",
            AuthFailure::UnknownTenant => "unknown_tenant",
            AuthFailure::MacMismatch => "mac_mismatch",
            AuthFailure::ApiKey => "api_key",
        }
    }
}

/// A refused request: the error to answer with and, for a 401, the reason to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub error: InstoreError,
    pub auth_failure: Option<AuthFailure>,
}

impl From<InstoreError> for Rejection {
    fn from(error: InstoreError) -> Rejection {
        Rejection {
            error,
            auth_failure: None,
        }
    }
}

impl From<AuthFailure> for Rejection {
    fn from(reason: AuthFailure) -> Rejection {
        Rejection {
            error: InstoreError::unauthorized(),
            auth_failure: Some(reason),
        }
    }
}

/// The request shapes of section 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Envelope,
    Bare,
}

/// An envelope when the top level has an object `payload` and a string `callbackUrl`.
pub fn detect_shape(root: &Value) -> Shape {
    let payload_is_object = matches!(
        root.get("payload"),
        Some(Node {
            value: Value::Object(_),
            ..
        })
    );
    let callback_is_string = matches!(
        root.get("callbackUrl"),
        Some(Node {
            value: Value::String(_),
            ..
        })
    );
    if payload_is_object && callback_is_string {
        Shape::Envelope
    } else {
        Shape::Bare
    }
}

/// The envelope's members outside `payload`. None of them is signed; the verifier binds
/// them as section 1.3 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub payload_url: String,
    pub verification_signature: Option<String>,
    pub tenant_id: Option<String>,
    pub request_id: String,
    pub callback_url: String,
    pub status_url: Option<String>,
}

fn optional_string(root: &Value, name: &str) -> Result<Option<String>, InstoreError> {
    match root.get(name).map(|n| &n.value) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(InstoreError::invalid(name, "must be a string")),
    }
}

fn required_string(root: &Value, name: &str) -> Result<String, InstoreError> {
    optional_string(root, name)?.ok_or_else(|| InstoreError::missing(name))
}

impl Envelope {
    fn read(root: &Value) -> Result<Envelope, InstoreError> {
        let request_id = required_string(root, "requestId")?;
        let read = || -> Result<Envelope, InstoreError> {
            Ok(Envelope {
                payload_url: required_string(root, "payload_url")?,
                verification_signature: optional_string(root, "verification_signature")?,
                tenant_id: optional_string(root, "tenant_id")?,
                request_id: request_id.clone(),
                callback_url: required_string(root, "callbackUrl")?,
                status_url: optional_string(root, "statusUrl")?,
            })
        };
        read().map_err(|e| e.with_request_id(Some(&request_id)))
    }
}

/// A verified POST.
#[derive(Debug, Clone)]
pub struct VerifiedPost<'t> {
    /// The tenant whose key verified: the one we act as.
    pub tenant: &'t Tenant,
    pub shape: Shape,
    /// The envelope's unsigned members, bound already.
    pub envelope: Option<Envelope>,
    /// The signed value: the envelope's `payload`, or the whole bare body.
    pub payload: Node,
    pub matched: MatchedForm,
}

impl VerifiedPost<'_> {
    /// The signed `payload.requestId`, when the payload carries one. Only a signed id may
    /// key idempotency: the envelope's copy could be changed in transit.
    pub fn signed_request_id(&self) -> Option<&str> {
        self.payload
            .value
            .get("requestId")
            .and_then(|n| n.value.as_str())
    }
}

/// The idempotency key of a request that moves money without a seed request id (POA
/// `Credit`, section 1.5): the envelope's `requestId` when enveloped (bound to
/// `payload.requestId` whenever the payload carries one), else the `x-correlation-id`
/// header. Without either the request is refused: refusing is better than risking a double
/// charge.
pub fn money_idempotency_key(
    verified: &VerifiedPost<'_>,
    correlation_id: Option<&str>,
) -> Result<String, InstoreError> {
    match (&verified.envelope, correlation_id) {
        (Some(e), _) => Ok(e.request_id.clone()),
        (None, Some(c)) if !c.trim().is_empty() => Ok(c.to_owned()),
        (None, _) => Err(InstoreError::new(
            ErrorCode::IdempotencyKeyRequired,
            "a bare Credit needs an x-correlation-id header to be retried safely",
        )),
    }
}

/// Verifies a POST body for `route` (section 1.3 steps 1 to 8, then the binding rules).
///
/// Order: size (413), syntactic parse and shape (400), signature value, tenant, MAC and
/// `X-API-Key` (401, one body for all), then the envelope bindings (400). The parse comes
/// first because the signature may sit inside the body, and because no candidate can be
/// built from a body with two meanings.
pub fn verify_post<'t>(
    tenants: &'t Tenants,
    route: &Route,
    headers: Headers<'_>,
    body: &[u8],
    body_bytes_max: usize,
) -> Result<VerifiedPost<'t>, Rejection> {
    if body.len() > body_bytes_max {
        return Err(InstoreError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body exceeds {body_bytes_max} bytes"),
        )
        .into());
    }
    let root =
        json::parse(body).map_err(|e| InstoreError::new(ErrorCode::Malformed, e.to_string()))?;
    if !matches!(root.value, Value::Object(_)) {
        return Err(InstoreError::invalid("the body", "must be a JSON object").into());
    }
    let shape = detect_shape(&root.value);
    let envelope = match shape {
        Shape::Envelope => Some(Envelope::read(&root.value)?),
        Shape::Bare if route.requires_envelope() => {
            return Err(InstoreError::new(
                ErrorCode::EnvelopeRequired,
                format!("{} takes the asynchronous envelope", route.template()),
            )
            .into());
        }
        Shape::Bare => None,
    };
    let request_id = envelope.as_ref().map(|e| e.request_id.as_str());
    let reject = |e: InstoreError| Rejection::from(e.with_request_id(request_id));

    // Step 2: every signature the request carries must decode to the same MAC.
    let mut sources: Vec<&str> = headers.x_signature.into_iter().collect();
    match &envelope {
        Some(e) => sources.extend(e.verification_signature.as_deref()),
        None => {
            for name in ["X-Signature", "x-signature", "verification_signature"] {
                match root.value.get(name).map(|n| &n.value) {
                    None => {}
                    Some(Value::String(s)) => sources.push(s),
                    Some(_) => return Err(AuthFailure::SignatureMalformed.into()),
                }
            }
        }
    }
    let signature = agreed_signature(&sources)?;

    // Step 4: the tenant names which key to try.
    let named = match &envelope {
        Some(e) => e.tenant_id.clone(),
        None => {
            optional_string(&root.value, "tenant_id").map_err(|_| AuthFailure::UnknownTenant)?
        }
    };
    let tenant = select_tenant(tenants, named.as_deref().or(headers.tenant_id))?;

    // Steps 5 and 6.
    let (payload, candidates) = match &envelope {
        Some(_) => {
            let payload = root
                .value
                .get("payload")
                .cloned()
                .expect("an envelope has a payload");
            let candidates = vec![
                (MatchedForm::Raw, body[payload.span.clone()].to_vec()),
                (MatchedForm::Js, js(&payload.value).into_bytes()),
            ];
            (payload, candidates)
        }
        None => {
            let candidates = bare_candidates(body, &root);
            (root, candidates)
        }
    };
    let matched = first_match(tenant.verification_key(), &candidates, &signature)
        .ok_or(AuthFailure::MacMismatch)?;

    // Step 7.
    check_api_key(tenant, headers.x_api_key)?;

    // Our answers and callbacks are signed with the key requests are verified with, and the
    // signature does not name the action: one of them sent back as a request (a payment's
    // answer names its payment, a pay-on-account charge's answer reads as the charge again)
    // would verify.
    let action = match payload.value.get("action").map(|n| &n.value) {
        Some(Value::String(a)) => Some(a.as_str()),
        _ => None,
    };
    for &member in route.answer_members(action) {
        if payload.value.get(member).is_some() {
            return Err(reject(InstoreError::invalid(
                member,
                "is a member of our answers, never of a request",
            )));
        }
    }

    // The bindings of the unsigned envelope members.
    if let Some(e) = &envelope {
        match payload.value.get("requestId").map(|n| &n.value) {
            Some(Value::String(signed)) if *signed == e.request_id => {}
            Some(Value::String(_)) => {
                return Err(reject(InstoreError::new(
                    ErrorCode::RequestIdMismatch,
                    "requestId differs from payload.requestId",
                )));
            }
            Some(_) => {
                return Err(reject(InstoreError::invalid(
                    "payload.requestId",
                    "must be a string",
                )));
            }
            None if route.requires_envelope() => {
                return Err(reject(InstoreError::missing("payload.requestId")));
            }
            None => {}
        }
        if !tenant.callback_allowed(&e.callback_url) {
            return Err(reject(InstoreError::new(
                ErrorCode::CallbackUrlNotAllowed,
                "callbackUrl is outside the tenant's allow-list",
            )));
        }
        // The route parameter is checked before payload_url: a request sent to the wrong
        // number is a number mismatch, whatever URL it claims.
        check_bound_parameter(route, &payload.value).map_err(reject)?;
        let path = route.action_path();
        let url_path = e.payload_url.split(['?', '#']).next().unwrap_or("");
        if !(url_path.ends_with(&format!("/{path}"))) {
            return Err(reject(InstoreError::new(
                ErrorCode::PayloadUrlMismatch,
                format!("payload_url does not end with /{}", route.template()),
            )));
        }
    }

    Ok(VerifiedPost {
        tenant,
        shape,
        envelope,
        payload,
        matched,
    })
}

fn agreed_signature(sources: &[&str]) -> Result<Mac, AuthFailure> {
    let mut agreed: Option<Mac> = None;
    for s in sources {
        let mac = decode_signature(s).ok_or(AuthFailure::SignatureMalformed)?;
        match agreed {
            Some(a) if !ct_eq(&a, &mac) => return Err(AuthFailure::SignaturesDisagree),
            _ => agreed = Some(mac),
        }
    }
    agreed.ok_or(AuthFailure::SignatureMissing)
}

fn select_tenant<'t>(tenants: &'t Tenants, named: Option<&str>) -> Result<&'t Tenant, AuthFailure> {
    match named {
        Some(id) => tenants.get(id),
        None => tenants.only(),
    }
    .ok_or(AuthFailure::UnknownTenant)
}

fn check_api_key(tenant: &Tenant, presented: Option<&str>) -> Result<(), AuthFailure> {
    match (tenant.api_key(), presented) {
        (None, _) => Ok(()),
        (Some(expected), Some(p)) if ct_eq(expected.as_bytes(), p.as_bytes()) => Ok(()),
        (Some(_), _) => Err(AuthFailure::ApiKey),
    }
}

/// Tries each candidate in order, skipping one identical to a candidate already tried, so
/// a sender that signs compact JSON costs one MAC.
fn first_match(
    key: &[u8],
    candidates: &[(MatchedForm, Vec<u8>)],
    signature: &Mac,
) -> Option<MatchedForm> {
    let mut tried: Vec<&[u8]> = Vec::with_capacity(MACS_MAX);
    for (form, message) in candidates {
        if tried.contains(&message.as_slice()) {
            continue;
        }
        if tried.len() == MACS_MAX {
            break;
        }
        tried.push(message);
        if mac_matches(key, message, signature) {
            return Some(*form);
        }
    }
    None
}

/// Candidates (a) to (d) of a bare body.
fn bare_candidates(body: &[u8], root: &Node) -> Vec<(MatchedForm, Vec<u8>)> {
    let mut out = vec![
        (MatchedForm::Raw, body[root.span.clone()].to_vec()),
        (MatchedForm::Js, js(&root.value).into_bytes()),
    ];
    let members = root.value.as_object().unwrap_or(&[]);
    let is_signature =
        |n: &str| matches!(n, "X-Signature" | "x-signature" | "verification_signature");
    let without = |drop: &dyn Fn(&str) -> bool| {
        js(&Value::Object(
            members.iter().filter(|(n, _)| !drop(n)).cloned().collect(),
        ))
        .into_bytes()
    };
    if members.iter().any(|(n, _)| is_signature(n)) {
        out.push((MatchedForm::JsStripped, without(&is_signature)));
    }
    if members.iter().any(|(n, _)| n == "tenant_id") {
        out.push((
            MatchedForm::JsNoTenant,
            without(&|n: &str| is_signature(n) || n == "tenant_id"),
        ));
    }
    out
}

fn check_bound_parameter(route: &Route, payload: &Value) -> Result<(), InstoreError> {
    let Some((field, param)) = route.bound_parameter() else {
        return Ok(());
    };
    match payload.get(field).map(|n| &n.value) {
        Some(Value::String(v)) if v == param => Ok(()),
        Some(Value::String(_)) => Err(InstoreError::new(
            ErrorCode::NumberMismatch,
            format!("the route's {field} differs from the signed {field}"),
        )),
        Some(_) => Err(InstoreError::invalid(field, "must be a string")),
        None => Err(InstoreError::missing(field)),
    }
}

/// A verified GET.
#[derive(Debug, Clone)]
pub struct VerifiedGet<'t> {
    pub tenant: &'t Tenant,
    /// The query parameters, percent-decoded, in received order, names unique.
    pub params: Vec<(String, String)>,
    pub matched: MatchedForm,
}

impl VerifiedGet<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Verifies a GET (section 1.3, "GET actions"). `query` is the raw query string without
/// the `?`. A candidate that would be empty or `{}` is never tried: a MAC over a constant
/// would be valid for every request forever.
pub fn verify_get<'t>(
    tenants: &'t Tenants,
    route: &Route,
    headers: Headers<'_>,
    query: &str,
) -> Result<VerifiedGet<'t>, Rejection> {
    let params = parse_query(query)?;
    let request_id = params
        .iter()
        .find(|(n, _)| n == "requestId")
        .map(|(_, v)| v.as_str());
    let signature = agreed_signature(&headers.x_signature.into_iter().collect::<Vec<_>>())?;
    let named = params
        .iter()
        .find(|(n, _)| n == "tenant_id")
        .map(|(_, v)| v.as_str());
    let tenant = select_tenant(tenants, named.or(headers.tenant_id))?;

    let object = |extra: Option<(&str, &str)>| {
        let mut members: Vec<(String, Node)> = params
            .iter()
            .map(|(n, v)| (n.clone(), Node::new(Value::String(v.clone()))))
            .collect();
        if let Some((n, v)) = extra {
            members.push((n.to_owned(), Node::new(Value::String(v.to_owned()))));
        }
        js(&Value::Object(members)).into_bytes()
    };
    // The path's number, named by neither the query nor a `requestId` that binds its first
    // path (the stored-value log records its ids; the pay-on-account log keeps none): only
    // the form that signs it (b) is taken, or one signature would read every number's log
    // (a replay to another path).
    let binds_request_id = matches!(route, Route::StoredValueLog { .. }) && request_id.is_some();
    let unbound = route
        .bound_parameter()
        .filter(|(field, _)| !binds_request_id && !params.iter().any(|(n, _)| n == field));
    let mut candidates = Vec::new();
    if !params.is_empty() && unbound.is_none() {
        candidates.push((MatchedForm::QueryJson, object(None)));
    }
    if let Some((field, value)) = route.bound_parameter()
        && !params.iter().any(|(n, _)| n == field)
    {
        candidates.push((MatchedForm::QueryJson, object(Some((field, value)))));
    }
    if !query.is_empty() && unbound.is_none() {
        candidates.push((MatchedForm::QueryRaw, query.as_bytes().to_vec()));
    }
    let matched = first_match(tenant.verification_key(), &candidates, &signature)
        .ok_or(AuthFailure::MacMismatch)?;
    check_api_key(tenant, headers.x_api_key)?;

    if let Some((field, value)) = route.bound_parameter()
        && let Some((_, v)) = params.iter().find(|(n, _)| n == field)
        && v != value
    {
        return Err(InstoreError::new(
            ErrorCode::NumberMismatch,
            format!("the route's {field} differs from the query's {field}"),
        )
        .with_request_id(request_id)
        .into());
    }
    Ok(VerifiedGet {
        tenant,
        params,
        matched,
    })
}

/// Splits and decodes a query string as `URLSearchParams` does ('+' is a space, `%XX` a
/// byte, the result UTF-8). A repeated name is refused: which copy was meant is ambiguous.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, InstoreError> {
    let malformed =
        |why: &str| InstoreError::new(ErrorCode::Malformed, format!("query string: {why}"));
    let mut out: Vec<(String, String)> = Vec::new();
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        let name = percent_decode(name).ok_or_else(|| malformed("bad percent-encoding"))?;
        let value = percent_decode(value).ok_or_else(|| malformed("bad percent-encoding"))?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(malformed(&format!("parameter {name} is repeated")));
        }
        out.push((name, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(text: &str) -> Shape {
        detect_shape(&json::parse(text.as_bytes()).unwrap().value)
    }

    #[test]
    fn shapes() {
        assert_eq!(
            shape(r#"{"payload":{},"callbackUrl":"https://x/"}"#),
            Shape::Envelope
        );
        assert_eq!(shape(r#"{"payload":{},"callbackUrl":null}"#), Shape::Bare);
        assert_eq!(
            shape(r#"{"payload":"{}","callbackUrl":"https://x/"}"#),
            Shape::Bare
        );
        assert_eq!(shape(r#"{"payload":{}}"#), Shape::Bare);
        assert_eq!(shape(r#"{"action":"Credit"}"#), Shape::Bare);
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("a=1&b=x+y%2By&&c&d=%C3%A1").unwrap(),
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "x y+y".to_owned()),
                ("c".to_owned(), String::new()),
                ("d".to_owned(), "á".to_owned()),
            ]
        );
        for bad in ["a=%", "a=%4", "a=%zz", "a=%+1", "a=%ff", "a=1&a=1"] {
            assert_eq!(
                parse_query(bad).unwrap_err().code,
                ErrorCode::Malformed,
                "{bad}"
            );
        }
        assert!(parse_query("").unwrap().is_empty());
    }

    #[test]
    fn identical_candidates_cost_one_mac() {
        let key = b"0123456789abcdef";
        let sig = crate::signature::hmac_sha256(key, b"other");
        let same = vec![
            (MatchedForm::Raw, b"m".to_vec()),
            (MatchedForm::Js, b"m".to_vec()),
            (MatchedForm::JsStripped, b"other".to_vec()),
        ];
        // The duplicate is skipped, so the third candidate is the second MAC and matches.
        assert_eq!(first_match(key, &same, &sig), Some(MatchedForm::JsStripped));
        let five: Vec<(MatchedForm, Vec<u8>)> = (0..4)
            .map(|i| (MatchedForm::Js, vec![i]))
            .chain([(MatchedForm::QueryRaw, b"other".to_vec())])
            .collect();
        // A fifth distinct candidate is never computed.
        assert_eq!(first_match(key, &five, &sig), None);
    }
}
