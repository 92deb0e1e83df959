//! `point-sim receive`: a demo integrator webhook. It answers the challenge
//! (`GET ?challengeCode=`) with HMAC-SHA256(integrator token, code) in hex, and prints every
//! notification POSTed to it, with whether its `x-signature` verifies (±300 s): its `v2`
//! (over the body too, as the authorizer's event webhooks sign) when it has one, else `v1`.

use crate::webhook::{encrypted_challenge, now_ms};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use std::net::SocketAddr;

/// Whether `header` signs `id`, `request_id` (and `body`, when it carries a `v2`) with
/// `token`, within ±300 s.
pub fn verify(token: &str, header: &str, (id, request_id): (&str, &str), body: &[u8]) -> bool {
    if header.split(',').any(|p| p.trim().starts_with("v2=")) {
        let ids = (id, request_id);
        protocol::webhook::verify_x_signature_with_body(token, header, ids, body, now_ms(), 300_000)
    } else {
        protocol::webhook::verify_x_signature(token, header, id, request_id, now_ms(), 300_000)
    }
}

async fn get(req: HttpRequest, token: web::Data<String>) -> HttpResponse {
    let code =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("challengeCode").cloned())
            .unwrap_or_default();
    println!("challenge {code}: answered");
    HttpResponse::Ok().json(json!({ "encrypted_challenge": encrypted_challenge(&token, &code) }))
}

async fn post(req: HttpRequest, body: web::Bytes, token: web::Data<String>) -> HttpResponse {
    let h = |n: &str| processor_client::header_text(req.headers(), n).to_owned();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ids = (v["id"].as_str().unwrap_or(""), h("x-request-id"));
    let ok = verify(&token, &h("x-signature"), (ids.0, &ids.1), &body);
    println!(
        "webhook {} (x-signature {}): {}",
        v["state"].as_str().unwrap_or("?"),
        if ok { "verified" } else { "INVALID" },
        String::from_utf8_lossy(&body)
    );
    if ok {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::Unauthorized().finish()
    }
}

pub async fn serve(addr: SocketAddr, token: String) -> anyhow::Result<()> {
    let token = web::Data::new(token);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(token.clone())
            .route("/webhook", web::get().to(get))
            .route("/webhook", web::post().to(post))
    })
    .workers(1)
    .bind(addr)?;
    println!("webhook receiver on http://{}/webhook", server.addrs()[0]);
    server.run().await?;
    Ok(())
}
