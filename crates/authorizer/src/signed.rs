//! What every signed caller's routes share (the processor's and the two-phase channels'):
//! the signature check on the raw bytes against the caller's own key ring, signed answers,
//! and the in-flight gate that replays, waits for or refuses (425) a duplicate. Not a route
//! module: route modules use it and never each other.

use crate::app::AppState;
use crate::config::EndpointCheck;
use crate::fleet::{FleetClaim, Ticket};
use crate::inflight::{self, Claim, Finished, Waited};
use crate::routes::{error_body, read_body};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use protocol::signature::{self, headers};
use protocol::{ApiSecret, KeyRing};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{StoreError, StoredResponse};

/// One of a signed caller's routes: the processor's, or the two-phase channels'.
pub(crate) trait SignedRoute: Copy + PartialEq + 'static {
    /// Who signed, as serving the request needs it.
    type Signer;
    /// Every route with its path template (as routed, and the metrics label).
    const ROUTES: &'static [(&'static str, Self)];
    /// What the log line of a refused signature says.
    const REFUSED: &'static str;

    /// The signature check on the raw bytes against the caller's key ring: the verified
    /// request and its signer, or why not (every failure looks the same from outside).
    fn verify(self, r: Incoming<'_>) -> Result<(Verified, Self::Signer), &'static str>;

    /// The answer to a verified request.
    async fn serve(self, r: Incoming<'_>, signer: Self::Signer) -> Answer;
}

/// A signed request as read, before and after its signature is checked.
#[derive(Clone, Copy)]
pub(crate) struct Incoming<'a> {
    pub req: &'a HttpRequest,
    /// The raw bytes the signature covers.
    pub body: &'a [u8],
    pub state: &'a AppState,
    /// When it came in: the deadlines and the duration metric count from here.
    pub started: Instant,
}

/// The path template of `route` in its table (`"unknown"` when it is not there): the path
/// served, also the metrics label.
pub fn path_in<R: PartialEq>(routes: &[(&'static str, R)], route: &R) -> &'static str {
    routes
        .iter()
        .find(|(_, r)| r == route)
        .map(|(p, _)| *p)
        .unwrap_or("unknown")
}

/// Entry point of every signed route: the body read within the limits, the signature
/// checked, the request served, and the answer counted, timed and signed.
pub(crate) async fn handle<R: SignedRoute>(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    route: R,
) -> HttpResponse {
    let started = Instant::now();
    let path = path_in(R::ROUTES, &route);
    let body = match body_or_refusal(&req, payload, &state).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let incoming = Incoming {
        req: &req,
        body: &body,
        state: &state,
        started,
    };
    let (verified, signer) = match route.verify(incoming) {
        Ok(v) => v,
        Err(reason) => return signature_refused(&state, path, reason, R::REFUSED),
    };
    let answer = route.serve(incoming, signer).await;
    verified.answer(&state, path, &answer, started)
}

/// A store failure's kind: the metrics label.
pub fn store_error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Timeout(_) => "timeout",
        StoreError::Invalid(_) => "invalid",
        StoreError::Uncertain(_) => "uncertain",
    }
}

/// The 503 of a request the store could not serve, which `resender` (the processor, a
/// channel) sends again: counted and logged. When the outcome is not known (a commit still
/// under way, or its answer lost with the connection) it may be stored: the same key
/// replays it if so.
pub fn store_unavailable(
    state: &AppState,
    route: &'static str,
    e: &StoreError,
    resender: &'static str,
) -> Answer {
    state.metrics.inc(
        "authorizer_store_failures_total",
        &[("route", route), ("kind", store_error_kind(e))],
    );
    tracing::error!(route, resender, error = %e, "store failed; answering 503 so it is sent again");
    let message = if matches!(e, StoreError::Uncertain(_)) {
        "Outcome not known yet; send again with the same key"
    } else {
        "Not stored; send again later"
    };
    Answer::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        message,
        "UNAVAILABLE",
    )
}

/// An answer before signing.
pub struct Answer {
    pub status: StatusCode,
    pub body: Arc<Vec<u8>>,
    /// Metrics label: the decision or what happened instead.
    pub outcome: &'static str,
}

impl Answer {
    pub fn new(status: u16, body: Vec<u8>, outcome: &'static str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: Arc::new(body),
            outcome,
        }
    }

    pub fn error(status: StatusCode, code: &str, message: &str, outcome: &'static str) -> Answer {
        Answer {
            status,
            body: Arc::new(error_body(code, message)),
            outcome,
        }
    }
}

/// A request whose signature checked out: its answer is signed with the same key.
pub struct Verified {
    secret: ApiSecret,
    endpoint: String,
}

impl Verified {
    /// Counts and times `answer` (on `route`, started at `started`) and signs it.
    pub fn answer(
        &self,
        state: &AppState,
        route: &'static str,
        answer: &Answer,
        started: Instant,
    ) -> HttpResponse {
        state.metrics.inc(
            "authorizer_requests_total",
            &[("route", route), ("outcome", answer.outcome)],
        );
        state.metrics.observe(
            "authorizer_request_duration_seconds",
            &[("route", route), ("decision", answer.outcome)],
            started.elapsed(),
        );
        self.respond(answer)
    }

    pub fn respond(&self, answer: &Answer) -> HttpResponse {
        let ts = crate::unix_now().to_string();
        let sig = signature::sign(&self.secret, &ts, &self.endpoint, &answer.body);
        HttpResponse::build(answer.status)
            .insert_header((headers::ENDPOINT, self.endpoint.as_str()))
            .insert_header((headers::TIMESTAMP, ts))
            .insert_header((headers::SIGNATURE, sig))
            .content_type("application/json")
            .body(answer.body.to_vec())
    }
}

/// A header's value as text, if present and readable.
pub fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Checks a signed request on its raw bytes against `ring`: the processor's scheme
/// (`X-Api-Key`, `X-Timestamp`, `X-Endpoint`, `X-Signature` over timestamp ++ endpoint ++
/// body, constant-time compare), the timestamp within `skew_secs`, and the signed endpoint
/// naming `path` as `check` says. Every failure looks the same from outside; the reason is
/// for metrics. Returns the verified caller and its api key.
pub fn verify_signature<'r>(
    req: &'r HttpRequest,
    body: &[u8],
    ring: &KeyRing,
    skew_secs: u64,
    path: &str,
    check: EndpointCheck,
) -> Result<(Verified, &'r str), &'static str> {
    // A header sent twice is refused rather than resolved: a proxy that reads the other
    // copy would disagree about what was signed, by whom, or under which key.
    let signed = [
        headers::API_KEY,
        headers::TIMESTAMP,
        headers::ENDPOINT,
        headers::SIGNATURE,
        headers::IDEMPOTENCY_KEY,
    ];
    if signed
        .iter()
        .any(|h| req.headers().get_all(*h).nth(1).is_some())
    {
        return Err("duplicate_header");
    }
    let key = header(req, headers::API_KEY).ok_or("missing_api_key")?;
    let secret = ring.get(key).ok_or("unknown_api_key")?;
    let ts = header(req, headers::TIMESTAMP).ok_or("missing_timestamp")?;
    let endpoint = header(req, headers::ENDPOINT).ok_or("missing_endpoint")?;
    let sig = header(req, headers::SIGNATURE).ok_or("missing_signature")?;
    signature::verify(secret, ts, endpoint, body, sig).map_err(|e| e.reason())?;
    signature::check_timestamp(ts, crate::unix_now(), skew_secs).map_err(|e| e.reason())?;
    let signed_path = endpoint.split('?').next().unwrap_or("");
    let endpoint_ok = match check {
        EndpointCheck::Exact => signed_path == path,
        EndpointCheck::Suffix => signed_path.ends_with(path),
        EndpointCheck::Off => true,
    };
    if !endpoint_ok {
        return Err("endpoint_mismatch");
    }
    Ok((
        Verified {
            secret: secret.clone(),
            endpoint: endpoint.to_owned(),
        },
        key,
    ))
}

/// What the in-flight registries said about this key: this process's first, then the
/// fleet's in Redis. The database decides in the end either way.
pub enum Gate {
    Proceed(Claims),
    Answered(Answer),
}

/// What the request that processes a key holds: the in-process guard (waiting
/// duplicates here get its answer) and the fleet-wide marker, when Redis has one.
#[derive(Default)]
pub struct Claims {
    local: Option<inflight::Guard>,
    fleet: Option<Ticket>,
}

fn too_early(state: &AppState, route: &'static str) -> Answer {
    state
        .metrics
        .inc("authorizer_in_flight_rejections_total", &[("route", route)]);
    Answer::error(
        StatusCode::from_u16(425).unwrap_or(StatusCode::CONFLICT),
        "in_flight",
        "The same request is still being processed; retry shortly",
        "TOO_EARLY",
    )
}

/// Consults the in-flight registries for `full` (a key with its route's prefix): proceed
/// (holding the claims), or the answer for a duplicate. `route` labels the metrics.
pub async fn gate(state: &AppState, route: &'static str, full: &str, hash: &[u8; 32]) -> Gate {
    match state.inflight.claim(full) {
        Claim::Owner(g) => match state.fleet.claim(full).await {
            FleetClaim::Owner(t) => Gate::Proceed(Claims {
                local: Some(g),
                fleet: Some(t),
            }),
            // Redis not configured or not answering: the database alone keeps it once.
            FleetClaim::Unavailable => Gate::Proceed(Claims {
                local: Some(g),
                fleet: None,
            }),
            FleetClaim::Answer(f) => {
                // Committed earlier, maybe on another instance: share it here too.
                g.finish(f.clone());
                Gate::Answered(replay_or_conflict(state, route, f, hash))
            }
            FleetClaim::Busy => {
                drop(g);
                Gate::Answered(too_early(state, route))
            }
        },
        Claim::Finished(f) => Gate::Answered(replay_or_conflict(state, route, f, hash)),
        Claim::Duplicate(slot) => {
            let bound = Duration::from_millis(state.settings.processor.in_flight_wait_ms_max);
            match inflight::wait(slot, bound).await {
                Waited::Answer(f) => Gate::Answered(replay_or_conflict(state, route, f, hash)),
                Waited::Abandoned => Gate::Proceed(Claims::default()),
                Waited::TimedOut => Gate::Answered(too_early(state, route)),
            }
        }
    }
}

/// A duplicate of a finished request: the identical answer, or 409 for another body.
fn replay_or_conflict(
    state: &AppState,
    route: &'static str,
    f: Finished,
    hash: &[u8; 32],
) -> Answer {
    if &f.request_hash != hash {
        return conflict(state);
    }
    state
        .metrics
        .inc("authorizer_replays_total", &[("route", route)]);
    Answer {
        status: StatusCode::from_u16(f.status).unwrap_or(StatusCode::OK),
        body: f.body,
        outcome: "REPLAY",
    }
}

/// 409 for an idempotency key reused with another body.
pub fn conflict(state: &AppState) -> Answer {
    state
        .metrics
        .inc("authorizer_idempotency_conflicts_total", &[]);
    Answer::error(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        "This x-idempotency-key was used with a different body",
        "CONFLICT",
    )
}

impl Claims {
    /// Shares a committed answer with duplicates waiting here and, through Redis, with the
    /// fleet; returns its body.
    pub async fn finish(self, hash: [u8; 32], response: StoredResponse) -> Arc<Vec<u8>> {
        let body = Arc::new(response.body);
        let finished = Finished {
            request_hash: hash,
            status: response.status,
            body: body.clone(),
        };
        if let Some(t) = self.fleet {
            t.finish(&finished).await;
        }
        if let Some(g) = self.local {
            g.finish(finished);
        }
        body
    }
}

/// SHA-256 of a raw body: the same key with another body is a conflict.
pub fn request_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// A refused signature on `route`, counted and logged as `what`: a 401 that says nothing
/// of which check failed.
pub fn signature_refused(
    state: &AppState,
    route: &'static str,
    reason: &'static str,
    what: &'static str,
) -> HttpResponse {
    state
        .metrics
        .inc("authorizer_signature_failures_total", &[("reason", reason)]);
    tracing::warn!(route, reason, "{what}");
    HttpResponse::Unauthorized()
        .content_type("application/json")
        .body(error_body("unauthorized", "Signature not accepted"))
}

/// The raw body of a signed caller's request (size- and time-limited), or the refusal to
/// answer: counted in `authorizer_bad_requests_total`, in the house error envelope.
pub async fn body_or_refusal(
    req: &HttpRequest,
    payload: actix_web::web::Payload,
    state: &AppState,
) -> Result<Vec<u8>, HttpResponse> {
    read_body(req, payload, state.settings.server.body_bytes_max)
        .await
        .map_err(|(status, reason)| {
            state
                .metrics
                .inc("authorizer_bad_requests_total", &[("reason", reason)]);
            HttpResponse::build(status)
                .content_type("application/json")
                .body(error_body(reason, "Request body refused"))
        })
}
