//! The channel key pair: the signed headers of a request (through the workspace's signed
//! client, `processor-client`) and the verification of a signed answer, fresh and echoed
//! (spec §2.2: exactly the processor's scheme, with a channel key pair).

use processor_client::Signed;
use protocol::ApiSecret;
use protocol::signature;

/// How far an answer's `X-Timestamp` may be from our clock.
pub const ANSWER_SKEW_SECS: u64 = 300;

/// A channel key pair (`[[channels.keys]]` of the authorizer).
#[derive(Clone, Debug)]
pub struct ChannelKey {
    pub api_key: String,
    pub secret: ApiSecret,
}

impl ChannelKey {
    pub fn new(api_key: &str, secret_base64: &str) -> anyhow::Result<ChannelKey> {
        let secret = ApiSecret::from_base64(secret_base64)
            .map_err(|e| anyhow::anyhow!("channel_api_secret: {e}"))?;
        Ok(ChannelKey {
            api_key: api_key.to_owned(),
            secret,
        })
    }

    /// The signed headers of `body` sent to `endpoint` at unix time `timestamp`, for the
    /// workspace's signed client (`processor_client::Client::signed_request`).
    pub fn signed<'a>(
        &'a self,
        endpoint: &'a str,
        body: &[u8],
        idempotency_key: Option<&'a str>,
        timestamp: i64,
    ) -> Signed<'a> {
        Signed {
            api_key: &self.api_key,
            endpoint,
            signature: Some(processor_client::sign(
                &self.secret,
                timestamp,
                endpoint,
                body,
            )),
            idempotency_key,
        }
    }

    /// Whether an answer is ours: `X-Endpoint` echoes what we signed, `X-Signature` verifies
    /// over its exact bytes, and `X-Timestamp` is fresh.
    pub fn verify_answer(
        &self,
        endpoint: &str,
        body: &[u8],
        ts: Option<&str>,
        ep: Option<&str>,
        sig: Option<&str>,
        now: i64,
    ) -> Result<(), &'static str> {
        let (Some(ts), Some(ep), Some(sig)) = (ts, ep, sig) else {
            return Err("unsigned");
        };
        if ep != endpoint {
            return Err("endpoint_not_echoed");
        }
        signature::verify(&self.secret, ts, ep, body, sig).map_err(|e| e.reason())?;
        signature::check_timestamp(ts, now, ANSWER_SKEW_SECS).map_err(|e| e.reason())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Spec §2.7 vectors: the demo key pair of the protocol page used as a channel key pair.
    use super::*;

    const SECRET: &str = "uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=";
    const RESERVATION: &str = r#"{"reservation_id":"mp-3f2a9c1e","user_id":"usr-1","card_id":"crd-1","amount":"125.50","currency":"DKK","merchant":{"id":"bio-1001","name":"Cinema Aarhus","mcc":"7832"},"partial_capture_possible":true,"reference":"order-77"}"#;

    fn key() -> ChannelKey {
        ChannelKey::new("demo", SECRET).unwrap()
    }

    #[test]
    fn reservation_vector() {
        assert_eq!(RESERVATION.len(), 223);
        let k = key();
        let h = k.signed(
            "/channels/v1/reservations",
            RESERVATION.as_bytes(),
            Some("k1"),
            1_700_000_100,
        );
        assert_eq!(
            h.signature,
            Some((
                "1700000100".to_owned(),
                "hmac-sha256 4/nepXVxR3b88LaB0ESzriF/wG5guv8oBZq2EpbC1FU=".to_owned()
            ))
        );
        assert_eq!(h.endpoint, "/channels/v1/reservations");
        assert_eq!(h.idempotency_key, Some("k1"));
        assert_eq!(h.api_key, "demo");
    }

    #[test]
    fn capture_vector() {
        let k = key();
        let h = k.signed(
            "/channels/v1/reservations/mp-3f2a9c1e/capture",
            br#"{"amount":"100.00"}"#,
            Some("k2"),
            1_700_000_200,
        );
        assert_eq!(
            h.signature.map(|(_, sig)| sig).as_deref(),
            Some("hmac-sha256 AnSceKgmqaZJtRcekwQZt5e/l09sEIxipRoQOhe79nI=")
        );
    }

    #[test]
    fn the_simulators_own_capture_body_is_the_vectors_body() {
        let call = crate::model::Call::Capture {
            payment_id: "mp-3f2a9c1e".into(),
            amount_minor: 10_000,
        };
        assert_eq!(call.body(), br#"{"amount":"100.00"}"#);
        assert_eq!(call.path(), "/channels/v1/reservations/mp-3f2a9c1e/capture");
    }

    #[test]
    fn answers_verify_only_when_signed_by_the_pair_fresh_and_echoed() {
        let k = key();
        let body = br#"{"status":"APPROVED"}"#;
        let ep = "/channels/v1/reservations";
        let now = 1_700_000_100;
        let sig = signature::sign(&k.secret, "1700000100", ep, body);
        assert_eq!(
            k.verify_answer(ep, body, Some("1700000100"), Some(ep), Some(&sig), now),
            Ok(())
        );
        // Another body, endpoint, a stale answer, a missing header.
        assert!(
            k.verify_answer(ep, b"{}", Some("1700000100"), Some(ep), Some(&sig), now)
                .is_err()
        );
        assert_eq!(
            k.verify_answer("/x", body, Some("1700000100"), Some(ep), Some(&sig), now),
            Err("endpoint_not_echoed")
        );
        assert_eq!(
            k.verify_answer(
                ep,
                body,
                Some("1700000100"),
                Some(ep),
                Some(&sig),
                now + 301
            ),
            Err("stale_timestamp")
        );
        assert_eq!(
            k.verify_answer(ep, body, None, Some(ep), Some(&sig), now),
            Err("unsigned")
        );
        let other = ChannelKey::new("x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        assert_eq!(
            other.verify_answer(ep, body, Some("1700000100"), Some(ep), Some(&sig), now),
            Err("mismatch")
        );
    }
}
