//! The request parser: any body either parses or is refused (never a panic), and what we
//! build from a parsed request or notification reads back as the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::wire::{AdjustmentResponse, AuthorizationResponse};
use protocol::{Notification, TransactionRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = TransactionRequest::from_slice(data) {
        let again = serde_json::to_vec(&req).expect("a parsed request serializes");
        let back = TransactionRequest::from_slice(&again).unwrap_or_else(|e| {
            panic!(
                "our serialization of a parsed request does not parse: {}: {}",
                e.message(),
                String::from_utf8_lossy(&again)
            )
        });
        assert_eq!(back, req, "the request changed on a round trip");
        // Whatever parses carries only ids that may be stored and logged unquoted.
        assert!(protocol::wire::is_valid_id(&req.transaction.id));
        for id in [
            req.transaction.original_transaction_id.as_deref(),
            req.card.as_ref().map(|c| c.id.as_str()),
            req.user.as_ref().map(|u| u.id.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            assert!(
                protocol::wire::is_valid_id(id),
                "an id that breaks the rule parsed"
            );
        }
        let _ = req.transaction.kind.direction();
    }
    if let Ok(n) = Notification::from_slice(data) {
        let again = serde_json::to_vec(&n).expect("a parsed notification serializes");
        let back = Notification::from_slice(&again).unwrap_or_else(|e| {
            panic!(
                "our serialization of a parsed notification does not parse: {}: {}",
                e.message(),
                String::from_utf8_lossy(&again)
            )
        });
        assert_eq!(back, n, "the notification changed on a round trip");
        assert!(protocol::wire::is_valid_id(&n.event_id));
        let _ = n.verdict();
    }
    let _ = serde_json::from_slice::<AuthorizationResponse>(data);
    let _ = serde_json::from_slice::<AdjustmentResponse>(data);
});
