//! `point-sim receive`: a demo integrator webhook. It answers the challenge
//! (`GET ?challengeCode=`) with HMAC-SHA256(integrator token, code) in hex, and prints every
//! notification POSTed to it, with whether its `x-signature` verifies (±300 s).

use crate::webhook::{encrypted_challenge, now_ms};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use std::net::SocketAddr;

/// Whether `header` (`ts=…,v1=…`) signs `id` and `request_id` with `token`, within ±300 s.
pub fn verify(token: &str, header: &str, id: &str, request_id: &str) -> bool {
    protocol::webhook::verify_x_signature(token, header, id, request_id, now_ms(), 300_000)
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
    let ok = verify(
        &token,
        &h("x-signature"),
        v["id"].as_str().unwrap_or(""),
        &h("x-request-id"),
    );
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
