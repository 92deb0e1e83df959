//! The action paths we serve under `instore.base_path` (section 0).

use crate::error::{ErrorCode, InstoreError};

/// The HTTP methods InStore uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// The digital wallet actions (section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalletAction {
    Initialize,
    Pay,
    AvailableRefund,
    CancelPayment,
    LogCancel,
    Refund,
}

impl WalletAction {
    pub const ALL: [WalletAction; 6] = [
        WalletAction::Initialize,
        WalletAction::Pay,
        WalletAction::AvailableRefund,
        WalletAction::CancelPayment,
        WalletAction::LogCancel,
        WalletAction::Refund,
    ];

    /// The seed's action path.
    pub fn path(self) -> &'static str {
        match self {
            WalletAction::Initialize => "initialize_wallet",
            WalletAction::Pay => "pay_wallet",
            WalletAction::AvailableRefund => "available_wallet_refund",
            WalletAction::CancelPayment => "cancel_wallet_payment",
            WalletAction::LogCancel => "log_cancel_wallet",
            WalletAction::Refund => "refund_wallet_payment",
        }
    }
}

/// A served action with its route parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST storedvaluecard` (callback action `Create`).
    StoredValueCreate,
    /// `POST storedvaluecard/:number` (callback action `Lookup`).
    StoredValueLookup {
        number: String,
    },
    /// `POST storedvaluecard_process` (`Load`, `Redeem`, `Cancel`).
    StoredValueProcess,
    /// `GET storedvaluelog/:number`.
    StoredValueLog {
        number: String,
    },
    /// `POST payonaccount/process`.
    PoaProcess,
    /// `POST payonaccountlog`.
    PoaLog,
    /// `GET payonaccountlog/` or `GET payonaccountlog/:account_number`.
    PoaLogQuery {
        account_number: Option<String>,
    },
    Wallet(WalletAction),
}

/// The credit-card actions: the acquirer's, answered 404 by the issuer (section 5).
const CREDIT_CARD_ACTIONS: [&str; 8] = [
    "initialize_credit_processor",
    "connect_card_reader",
    "payment_transaction",
    "credit_available_refund",
    "capture_payment",
    "collect_credit_payment",
    "create_credit_refund",
    "cancel_credit_payment",
];

impl Route {
    /// Resolves a path relative to the base path (no leading '/', no query). Unknown paths,
    /// the credit-card actions and a method the action does not take are all 404.
    pub fn parse(method: Method, path: &str) -> Result<Route, InstoreError> {
        let not_found = || InstoreError::new(ErrorCode::NotFound, "no such InStore action");
        let path = path.strip_prefix('/').unwrap_or(path);
        let (head, param) = match path.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (path, None),
        };
        if CREDIT_CARD_ACTIONS.contains(&head) {
            return Err(not_found());
        }
        // A route parameter is one non-empty segment; card and account numbers carry no '/'.
        let segment = |p: Option<&str>| match p {
            Some(p) if !p.is_empty() && !p.contains('/') => Some(p.to_owned()),
            _ => None,
        };
        let route = match (method, head, param) {
            (Method::Post, "storedvaluecard", None) => Route::StoredValueCreate,
            (Method::Post, "storedvaluecard", p) => Route::StoredValueLookup {
                number: segment(p).ok_or_else(not_found)?,
            },
            (Method::Post, "storedvaluecard_process", None) => Route::StoredValueProcess,
            (Method::Get, "storedvaluelog", p) => Route::StoredValueLog {
                number: segment(p).ok_or_else(not_found)?,
            },
            (Method::Post, "payonaccount", Some("process")) => Route::PoaProcess,
            (Method::Post, "payonaccountlog", None) => Route::PoaLog,
            (Method::Get, "payonaccountlog", Some("")) => Route::PoaLogQuery {
                account_number: None,
            },
            (Method::Get, "payonaccountlog", p) => Route::PoaLogQuery {
                account_number: Some(segment(p).ok_or_else(not_found)?),
            },
            (Method::Post, name, None) => Route::Wallet(
                WalletAction::ALL
                    .into_iter()
                    .find(|a| a.path() == name)
                    .ok_or_else(not_found)?,
            ),
            _ => return Err(not_found()),
        };
        Ok(route)
    }

    /// The concrete action path, as `payload_url` must end with it.
    pub fn action_path(&self) -> String {
        match self {
            Route::StoredValueLookup { number } => format!("storedvaluecard/{number}"),
            Route::StoredValueLog { number } => format!("storedvaluelog/{number}"),
            Route::PoaLogQuery {
                account_number: Some(n),
            } => format!("payonaccountlog/{n}"),
            other => other.template().to_owned(),
        }
    }

    /// The route template, the only form of the path that logs and metrics may record
    /// (a concrete path can hold a card number).
    pub fn template(&self) -> &'static str {
        match self {
            Route::StoredValueCreate => "storedvaluecard",
            Route::StoredValueLookup { .. } => "storedvaluecard/{number}",
            Route::StoredValueProcess => "storedvaluecard_process",
            Route::StoredValueLog { .. } => "storedvaluelog/{number}",
            Route::PoaProcess => "payonaccount/process",
            Route::PoaLog => "payonaccountlog",
            Route::PoaLogQuery {
                account_number: None,
            } => "payonaccountlog/",
            Route::PoaLogQuery { .. } => "payonaccountlog/{account_number}",
            Route::Wallet(a) => a.path(),
        }
    }

    /// The stored-value POST actions have no synchronous result to fall back on.
    pub fn requires_envelope(&self) -> bool {
        matches!(
            self,
            Route::StoredValueCreate | Route::StoredValueLookup { .. } | Route::StoredValueProcess
        )
    }

    /// Top-level members of our answers to this route that no request to it has, for a
    /// request whose `action` is `action`: a payload holding one is an answer of ours sent
    /// back (`result`, `code`; an approved pay-on-account answer has neither, only its
    /// `status`, which only a `Credit` must not carry: an echoed record on an `Update` is
    /// tolerated, and moves nothing).
    pub fn answer_members(&self, action: Option<&str>) -> &'static [&'static str] {
        match (self, action) {
            (Route::PoaProcess, Some("Credit")) => &["result", "code", "status"],
            _ => &["result", "code"],
        }
    }

    /// The route parameter and the payload or query field it must equal.
    pub fn bound_parameter(&self) -> Option<(&'static str, &str)> {
        match self {
            Route::StoredValueLookup { number } | Route::StoredValueLog { number } => {
                Some(("number", number))
            }
            Route::PoaLogQuery {
                account_number: Some(n),
            } => Some(("account_number", n)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_served_actions() {
        let post = |p| Route::parse(Method::Post, p);
        let get = |p| Route::parse(Method::Get, p);
        assert_eq!(post("storedvaluecard"), Ok(Route::StoredValueCreate));
        assert_eq!(
            post("/storedvaluecard/6280001234567895"),
            Ok(Route::StoredValueLookup {
                number: "6280001234567895".into()
            })
        );
        assert_eq!(
            post("storedvaluecard_process"),
            Ok(Route::StoredValueProcess)
        );
        assert_eq!(
            get("storedvaluelog/628").map(|r| r.action_path()),
            Ok("storedvaluelog/628".into())
        );
        assert_eq!(post("payonaccount/process"), Ok(Route::PoaProcess));
        assert_eq!(post("payonaccountlog"), Ok(Route::PoaLog));
        assert_eq!(
            get("payonaccountlog/"),
            Ok(Route::PoaLogQuery {
                account_number: None
            })
        );
        assert_eq!(
            get("payonaccountlog/2342342342").unwrap().template(),
            "payonaccountlog/{account_number}"
        );
        for a in WalletAction::ALL {
            assert_eq!(post(a.path()), Ok(Route::Wallet(a)));
        }
    }

    #[test]
    fn everything_else_is_404() {
        for (m, p) in [
            (Method::Post, "initialize_credit_processor"),
            (Method::Get, "payment_transaction/abc"),
            (Method::Get, "credit_available_refund/abc"),
            (Method::Post, "capture_payment"),
            (Method::Get, "storedvaluecard"),
            (Method::Post, "storedvaluelog/1"),
            (Method::Get, "storedvaluelog/"),
            (Method::Post, "storedvaluecard/"),
            (Method::Post, "storedvaluecard/1/2"),
            (Method::Post, "payonaccount"),
            (Method::Get, "pay_wallet"),
            (Method::Post, "nothing"),
        ] {
            assert_eq!(
                Route::parse(m, p).unwrap_err().code,
                ErrorCode::NotFound,
                "{p}"
            );
        }
    }
}
