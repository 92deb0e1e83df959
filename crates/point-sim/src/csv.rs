//! The processor's transactions file, in the reconciler's default layout
//! (`config/reconciler.toml`, `[mapping.transactions]`): every authorization and adjustment
//! the simulator sent, as the processor recorded it.

use crate::traffic::TxBody;
use std::io::Write;

/// The header line of the default layout.
pub const HEADER: &str = "transaction_id,kind,type,status,direction,local_amount,local_currency,original_transaction_id,card_id,user_id,date\n";

/// One row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub transaction_id: String,
    /// `AUTHORIZATION` or `ADJUSTMENT`.
    pub kind: &'static str,
    pub tx_type: String,
    /// The processor's final word: an authorization is `APPROVED` only when the terminal
    /// saw our approval in time and nothing made the processor reject it afterwards.
    pub approved: bool,
    pub amount: String,
    pub currency: String,
    pub original_transaction_id: String,
    pub card_id: String,
    pub user_id: String,
    pub date: String,
}

impl Row {
    pub fn of(body: &TxBody, kind: &'static str, approved: bool) -> Row {
        Row {
            transaction_id: body.transaction.id.clone(),
            kind,
            tx_type: body.transaction.kind.clone(),
            approved,
            amount: body.amount.local.total.clone(),
            currency: body.amount.local.currency.clone(),
            original_transaction_id: body
                .transaction
                .original_transaction_id
                .clone()
                .unwrap_or_default(),
            card_id: body.card.id.clone(),
            user_id: body.user.id.clone(),
            date: body.transaction.local_date_time.clone(),
        }
    }

    /// Purchases and reversals of refunds take money (DEBIT); credit adjustments give it.
    pub fn direction(&self) -> &'static str {
        if self.kind == "AUTHORIZATION" {
            "DEBIT"
        } else {
            "CREDIT"
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            self.transaction_id,
            self.kind,
            self.tx_type,
            if self.approved {
                "APPROVED"
            } else {
                "REJECTED"
            },
            self.direction(),
            self.amount,
            self.currency,
            self.original_transaction_id,
            self.card_id,
            self.user_id,
            self.date
        )
    }
}

/// Opens the file for appending; writes the header when it is empty.
pub fn open(path: &str) -> anyhow::Result<std::fs::File> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("transactions_csv {path}: {e}"))?;
    if f.metadata()?.len() == 0 {
        f.write_all(HEADER.as_bytes())?;
    }
    Ok(f)
}
