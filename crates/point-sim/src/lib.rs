//! `point-sim`: an in-person terminal and acquirer simulator on loopback.
//!
//! It serves a subset of Mercado Pago Point's Integration API (payment intents on devices,
//! refund intents, events, integrator token and webhook registration with the HMAC
//! challenge), drives its devices through control routes under `/sim`, and turns every
//! presented card into **signed processor traffic** to our authorizer, exactly as a card
//! network would: authorizations, advices (notifications) that settle late or failed answers,
//! reversals and refunds as credit adjustments. Outcomes come back through intent states and
//! signed webhooks, to a URL only after it passed the challenge. It also serves the virtual
//! card reader of the InStore credit-card extension. The specification is
//! `point-integration.md` §1–2 and `instore-extensions.md` §5.
//!
//! It is a development and test tool: never a dependency of `authorizer`, and it refuses a
//! non-loopback listen address.
//!
//! * [`config`]: configuration, sites, devices, the processor key pair.
//! * [`machine`]: the intent states and transitions, pure.
//! * [`traffic`]: the processor bodies built from a presented card (pure; §4's vector).
//! * [`signed`]: signing and sending them, verifying our answers' signatures.
//! * [`sim`]: the in-memory model, the API's rules, the timers and the engine.
//! * [`webhook`]: the challenge, signed notifications, ordered retried delivery.
//! * [`api`]: the HTTP routes. [`reader`]: the virtual card reader (its own decisions are
//!   in its docs). [`receiver`]: a demo integrator webhook (`point-sim receive`).
//! * [`csv`]: the transactions file in the reconciler's default layout.
//! * [`load`]: the command line and the load mode (`point-sim load`): N devices taking
//!   intents through the simulator's public API at a rate with a mix of outcomes, cardholders
//!   funded through the authorizer's admin API, every balance compared with the ledger at the
//!   end (exit 1 on a mismatch). It registers no webhook: its notifications are counted as
//!   `dropped_unvalidated`.
//!
//! # Decisions where the specification is silent
//!
//! * A refund intent occupies its device like a payment intent: creating either on a device
//!   that holds an `OPEN` … `PROCESSED` intent gets 409 `device_busy`.
//! * `POST /sim/devices/{id}/present` with nothing to present to gets 404 `no_intent`; while
//!   a card is being processed, 409 `device_busy`. `card_id` and `user_id` are required;
//!   `product_type` defaults to `PREPAID`, `provider` to `MASTERCARD`, `last_four` to
//!   `0000`, `entry_mode` to `CHIP`, `pin` to false.
//! * Fault hook: a presentation may carry `answer_delay_ms`; the authorization goes out at
//!   once, and its answer is held that long before the terminal sees it (a slow authorizer
//!   or network). Past `authorization_timeout_ms` that is the timeout row of §2.5.
//! * An answer that is neither 200 nor 5xx (a 4xx: our authorizer refused the request
//!   itself) ends like a rejection: advice `REJECTED` / `INVALID_TRANSACTION`, `FINISHED`
//!   with `payment.state` `rejected`. A 200 whose `status` is neither APPROVED nor REJECTED
//!   is treated the same way.
//! * 1100 rejected by us, and any rejection: the advice echoes our `status_detail`. 1300:
//!   the `INTERNAL_ERROR` advice is sent whether we approved or rejected.
//! * Advices, reversals and refunds are retried until a 2xx (100 ms doubling to 5 s), except
//!   that a final 4xx (not 408/425/429) stops them (`followups_refused`). A present call
//!   waits for them at most `followup_wait_ms` (10 s) and then answers; they continue in the
//!   background. The intent's outcome is the network's and does not wait on them, except
//!   a refund whose adjustment is refused for good, which ends `ERROR`, and the 1100
//!   reversal refused for good, which leaves the payment `approved` (the money stayed
//!   taken). An adjustment's line of `transactions_csv` is written when the authorizer has
//!   settled it: `APPROVED` when taken, `REJECTED` when refused for good.
//! * `GET /v1/payments/{id}` answers `in_process` while the intent runs; `status_detail` is
//!   our `status_detail` or the advice's (`INVALID_PIN`, `CLIENT_TIMEOUT`, …), `REVERSED`
//!   for 1100 (`APPROVED` when its reversal was refused for good) and `REFUNDED` after a refund. `transaction_amount` is a JSON number (major
//!   units) as Mercado Pago writes it; the exact integer is repeated as `amount`.
//! * Notifications: `OPEN` is never notified (creation is the integrator's own call).
//!   `payment` appears once a payment id exists (from `PROCESSING`), with `state` `""`
//!   until known. Refund intents are notified too, in the same shape with
//!   `"intent_type":"refund"` added, `payment.state` `refunded` when `FINISHED`.
//! * A notification is bound to the URL validated when it was queued: after a `PATCH`,
//!   queued notifications for the previous URL are dropped (counted in
//!   `dropped_unvalidated`), never sent to the new URL before its own challenge.
//! * Events (`GET /payment-intents/events`): every state a payment intent entered, with
//!   `created_on` in UTC ISO 8601; `startDate`/`endDate` are UTC dates, inclusive.
//! * `date_created` of a payment is device-local ISO 8601 with its offset, like Mercado
//!   Pago's. `created_at` of notifications is UTC (§2.6).
//! * The transactions CSV: one row per authorization (status `APPROVED` only when the
//!   terminal saw our approval in time and it was not voided by 1300's error) and per
//!   credit adjustment (`APPROVED`: the network made it effective); advices are not
//!   transactions and are not written. `date` is `local_date_time`.

pub mod api;
pub mod config;
pub mod csv;
pub mod load;
pub mod machine;
pub mod reader;
pub mod receiver;
pub mod signed;
pub mod sim;
pub mod stats;
pub mod traffic;
pub mod webhook;

use actix_web::{App, HttpServer, web};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use sim::Sim;

/// A running simulator.
pub struct Running {
    pub addr: SocketAddr,
    pub sim: Arc<Sim>,
    handle: actix_web::dev::ServerHandle,
    sweeper: actix_rt::task::JoinHandle<()>,
}

impl Running {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.sweeper.abort();
        self.handle.stop(true).await;
    }
}

/// Starts the simulator inside the current actix system: binds (loopback only), serves, and
/// runs the abandonment sweeper every second.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let addr = cfg.validate()?;
    let signer = sim::signer_for(&cfg)?;
    let sim = Arc::new(Sim::new(cfg, signer)?);
    let listener = std::net::TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let data = web::Data::from(sim.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(signed::client())
            .configure(api::routes)
            .default_service(web::to(|| async {
                api::error(sim::ApiError::new(404, "not_found", "no such route"))
            }))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let s = sim.clone();
    let sweeper = actix_rt::spawn(async move {
        let mut tick = actix_rt::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            s.sweep();
        }
    });
    Ok(Running {
        addr,
        sim,
        handle,
        sweeper,
    })
}
