//! `mobilepay-sim`: a simulator of the MobilePay PoS wrapper (spec
//! `docs/mobilepay-pos.md`, sections 1 and 2.5-2.7) that drives real reservation traffic
//! into the authorizer's signed channel API. A development and test tool: it listens on
//! loopback only, keeps everything in memory, and is never linked into `authorizer`.
//!
//! * [`config`]: the TOML configuration of §2.5 (merchants, stores, terminals, timers).
//! * [`amount`]: DKK/EUR amounts in exact minor units.
//! * [`model`]: payments (11 statuses), refunds, PoS, check-ins, idempotency keys and
//!   timers as pure functions of the state and the clock: every transition of §1.5, the
//!   rules S1-S8 and V1-V15, the conflicts C1-C6.
//! * [`signing`]: signed channel requests and verified answers (the `protocol` crate's HMAC).
//! * [`channel`]: calls to the authorizer with the reliability rules (timeouts, retries under
//!   one idempotency key, background delivery, breaks).
//! * [`server`]: the `/api/pos/...` wrapper routes, the `/sim/...` customer routes, timers.
//! * [`load`]: the command line (`serve`, `load`).
//! * [`script`]: the scripted load mode and its money check against the ledger.
//!
//! # Decisions
//!
//! * Errors without a v10 code (unknown terminal, PoS or payment; a missing field; a
//!   currency that is not the terminal's) use the HTTP status as the code: `"404: payment not
//!   found"`, `"400: orderId is missing or invalid"`. S7 and S8 use the rule's name.
//! * `currencyCode` must be the terminal's currency (each terminal has one).
//! * A payment's reservation clock starts when the simulator *sends* the reserve, so the
//!   simulator's `ExpiredAndCancelled` never comes after the authorizer's expiry: a capture
//!   the simulator accepts reaches a hold that is still live (barring redelivery delays,
//!   which are then breaks).
//! * A retried `prepare` without a key (same PoS and `orderId`, still `Prepared`/`Paired`)
//!   returns the same `paymentId`, as `start` does. A repeated `ready` with the same amount
//!   answers 200. `ready` with another `orderId` or `terminalId` than the payment's is 400.
//! * A refund create without a key is deduplicated by (`paymentId`, `refundOrderId`): the
//!   same amount and currency returns the same `refundId`; another amount gets 409 1306. A
//!   retried refund capture on a captured refund answers 200 (naturally idempotent).
//! * A check-in with no waiting payment is kept on the PoS and taken by the next `start` or
//!   `prepare` (giving `IssuedToUser` / `Paired`); it is released when its payment leaves the
//!   waiting states. A second customer checking in at a PoS whose payment already has one
//!   gets 409.
//! * `manage/delete` of a PoS with a waiting payment is refused with 1301 (S5: cancel first).
//! * The approval's reserve is made while the customer waits (the app shows a spinner). A
//!   client cancel during that call wins: an approval that comes back then is cancelled at
//!   the authorizer. A 4xx answer to a reserve is a break (the simulator sent something the
//!   authorizer refused) and the payment is `CancelledByMobilePay` with no cancel sent.
//! * Cancels of a `Reserved` payment are delivered in the background like captures; a 404
//!   (nothing reserved) or 409 `EXPIRED` (our expiry got there first, the hold is released
//!   either way) ends the delivery without a break; other refusals are breaks.
//! * A refund is sent to the authorizer only after its payment's capture has been answered
//!   (captures are delivered in the background, so a refund created at once would otherwise
//!   overtake its capture and be refused `NOT_CAPTURED`).
//! * A reserve answered `REJECTED`/`SYSTEM_ERROR` (no decision, nothing stored) is asked
//!   again under the same key within the retry budget; if it still has no decision, it is
//!   treated as no answer (`CancelledByMobilePay`, and a cancel that the authorizer answers
//!   404 when nothing was held).
//! * Idempotency keys of calls to the authorizer are derived from the simulator's own ids:
//!   `mp-res-<paymentId>`, `mp-cap-<paymentId>`, `mp-can-<paymentId>`, `mp-ref-<refundId>`.
//! * Everything is in memory: a stopped simulator forgets its payments and any delivery still
//!   pending (the authorizer's expiry releases what it held).
//! * Every answer from the authorizer must carry a valid signature by the channel pair, echo
//!   the signed endpoint and be within 300 s; an answer that does not is treated as no answer
//!   (retried under the same key).
//! * Responses are always JSON whatever the `Accept` header says.
//! * `GET /sim/stats` (counts, deliveries pending, reserve latency) and `GET /sim/breaks`
//!   need no token: the simulator is loopback only and they reveal no credential.

pub mod amount;
pub mod channel;
pub mod config;
pub mod load;
pub mod model;
pub mod script;
pub mod server;
pub mod signing;
pub mod state;

pub use config::Config;
pub use server::Sim;
