//! The InStore pay-on-account extension (instore-extensions.md sections 3 and 6.1): SQL
//! only. A POA request is an InStore request of the one writer: [`crate::instore`] hands
//! its call's [`PoaCall`] here to prefetch and lock the account (and the charge or log
//! record it names) into the snapshot, and writes what the pure planner decided through
//! [`Store::write_poa`] in the same transaction. A POA account is a cardholder account whose
//! overdraft limit is the credit limit; a `Credit` is a `POA_CHARGE` movement of it against
//! INSTORE_CLEARING, reversed at most once by the issuer (`POA_REVERSAL`).

use crate::instore::{InstoreCall, sv_account};
use crate::processor::{Holder, LockedAccount, MovementMeta, Step, book, lock_account_by_id};
use crate::{Store, StoreError, Tx, run, run_pool};
use ledger::Currency;
use ledger::instore::{SvKind, plan_stored_value};
use sqlx::Row;

/// Movement kind of a POA `Credit`: the sale charged to the account.
pub const KIND_POA_CHARGE: &str = "POA_CHARGE";
/// Movement kind of the issuer's reversal of one charge.
pub const KIND_POA_REVERSAL: &str = "POA_REVERSAL";

/// How far back a logged `Credit` looks for its charge.
pub const LOG_MATCH_WINDOW_MS: i64 = 24 * 3_600_000;

/// What a POA request names, for the writer to prefetch and lock.
#[derive(Debug, Clone, Default)]
pub struct PoaCall {
    pub account_number: String,
    /// Idempotent on (tenant, request id): an enveloped request, or a bare `Credit` keyed by
    /// its `x-correlation-id`. Bare `Create`, `Inquiry`, `Update`, logs and the admin API's
    /// changes are idempotent by what they are.
    pub keyed: bool,
    /// The charge an admin reversal names.
    pub charge_movement_id: Option<i64>,
    /// A `payonaccountlog` record's key: (session_id, order_id, action), absent as ''.
    pub log_key: Option<(String, String, String)>,
    /// A logged approved `Credit`'s (currency, minor units), to find its charge.
    pub log_charge_probe: Option<(Currency, i64)>,
}

/// A POA account with its ledger account, locked for the rest of the transaction.
#[derive(Debug, Clone)]
pub struct PoaRow {
    pub user_id: String,
    pub currency: Currency,
    pub company_name: Option<String>,
    pub authorized_user_ids: Vec<String>,
    pub blocked: bool,
    pub limit_lowered: bool,
    pub account: LockedAccount,
}

/// A charge an admin reversal names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoaChargeRow {
    pub movement_id: i64,
    pub tenant_id: String,
    pub account_number: String,
    pub amount_minor: i64,
    pub reversed: bool,
}

/// A stored `payonaccountlog` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoaLogRow {
    pub request_hash: String,
    /// The record as echoed, without `requestId`.
    pub record: String,
    pub received_at_ms: i64,
}

/// What a POA decision may read.
#[derive(Debug, Clone, Default)]
pub struct PoaSnapshot {
    pub account: Option<PoaRow>,
    pub charge: Option<PoaChargeRow>,
    pub log: Option<PoaLogRow>,
    /// An unreversed charge of the logged account and amount within the last 24 h.
    pub log_has_charge: bool,
}

/// What a POA decision writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoaWrite {
    /// `Create`: the ledger account (overdraft = credit limit) and its POA record.
    Open {
        user_id: String,
        currency: Currency,
        credit_limit: i64,
        company_name: Option<String>,
        authorized_user_ids: Vec<String>,
    },
    /// `Credit`: debit the account against INSTORE_CLEARING.
    Charge {
        amount: i64,
        /// posted − held after, as the decision told it: the write refuses to commit when
        /// the ledger's plan disagrees.
        available_after: i64,
        performing_user: Option<String>,
    },
    /// `Update`: `Some` replaces.
    Update {
        company_name: Option<String>,
        authorized_user_ids: Option<Vec<String>>,
    },
    /// The admin API: a new credit limit, block or unblock.
    Settings {
        credit_limit: Option<i64>,
        blocked: Option<bool>,
    },
    /// The admin API: reverse one charge.
    Reverse {
        charge_movement_id: i64,
        amount: i64,
    },
    /// `payonaccountlog`: store the record.
    Log {
        request_hash: String,
        record: String,
        flags: String,
    },
    /// The request conflicts with what is stored: nothing is written (409).
    Conflict,
}

const ACCOUNT_SQL: &str = "SELECT p.user_id, p.currency, p.company_name, p.authorized_user_ids, \
     p.blocked, p.limit_lowered_at_ms, a.id FROM poa_accounts p \
     JOIN accounts a ON a.kind = 'USER' AND a.user_id = p.user_id AND a.currency = p.currency \
     WHERE p.tenant_id = $1 AND p.account_number = $2";

/// A POA account's row with its ledger account's id, as `ACCOUNT_SQL` reads it.
type PoaHead = (
    String,
    String,
    Option<String>,
    String,
    bool,
    Option<i64>,
    i64,
);

async fn poa_head(
    tx: &mut Tx,
    tenant_id: &str,
    number: &str,
) -> Result<Option<PoaHead>, sqlx::Error> {
    Ok(run!(tx, c => {
        sqlx::query_as(ACCOUNT_SQL)
            .bind(tenant_id)
            .bind(number)
            .fetch_optional(c)
            .await?
    }))
}

/// Reads the POA account of (tenant, number) and locks its ledger account.
async fn account_row(
    tx: &mut Tx,
    tenant_id: &str,
    number: &str,
) -> Result<Option<PoaRow>, sqlx::Error> {
    let Some(first) = poa_head(tx, tenant_id, number).await? else {
        return Ok(None);
    };
    let account = lock_account_by_id(tx, first.6).await?;
    // On Postgres, read the row again under the lock: a block, an unblock or a change of
    // its users that another instance committed while this one waited is what the request
    // is decided on (the admin and the tills change it under the same lock). Its ledger
    // account never changes.
    let head = if matches!(tx, Tx::Pg(_)) {
        poa_head(tx, tenant_id, number).await?.unwrap_or(first)
    } else {
        first
    };
    let (user_id, code, company_name, ids, blocked, lowered, _) = head;
    let currency = Currency::parse_any(&code).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let authorized_user_ids =
        serde_json::from_str(&ids).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some(PoaRow {
        user_id,
        currency,
        company_name,
        authorized_user_ids,
        blocked,
        limit_lowered: lowered.is_some(),
        account,
    }))
}

/// Reads and locks what a POA call names.
pub(crate) async fn prefetch(
    tx: &mut Tx,
    call: &InstoreCall,
    poa: &PoaCall,
) -> Result<PoaSnapshot, Step> {
    let tenant = call.tenant_id.as_str();
    let mut snap = PoaSnapshot {
        account: account_row(tx, tenant, &poa.account_number).await?,
        ..PoaSnapshot::default()
    };
    if let Some(id) = poa.charge_movement_id {
        let row: Option<(String, String, i64, Option<i64>)> = run!(tx, c => {
            sqlx::query_as(
                "SELECT c.tenant_id, c.account_number, c.amount_minor, r.movement_id \
                 FROM poa_charges c LEFT JOIN poa_reversals r ON r.charge_movement_id = c.movement_id \
                 WHERE c.movement_id = $1",
            )
            .bind(id)
            .fetch_optional(c)
            .await?
        });
        snap.charge = row.map(
            |(tenant_id, account_number, amount_minor, reversal)| PoaChargeRow {
                movement_id: id,
                tenant_id,
                account_number,
                amount_minor,
                reversed: reversal.is_some(),
            },
        );
    }
    if let Some((session, order, action)) = &poa.log_key {
        let row: Option<(String, String, i64)> = run!(tx, c => {
            sqlx::query_as(
                "SELECT request_hash, record, received_at_ms FROM poa_logs WHERE tenant_id = $1 \
                 AND account_number = $2 AND session_id = $3 AND order_id = $4 AND action = $5",
            )
            .bind(tenant)
            .bind(&poa.account_number)
            .bind(session)
            .bind(order)
            .bind(action)
            .fetch_optional(c)
            .await?
        });
        snap.log = row.map(|(request_hash, record, received_at_ms)| PoaLogRow {
            request_hash,
            record,
            received_at_ms,
        });
    }
    if let Some((currency, amount)) = poa.log_charge_probe {
        let n: i64 = run!(tx, c => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM poa_charges c WHERE c.tenant_id = $1 AND c.account_number = $2 \
                 AND c.currency = $3 AND c.amount_minor = $4 AND c.created_at_ms >= $5 \
                 AND NOT EXISTS (SELECT 1 FROM poa_reversals r WHERE r.charge_movement_id = c.movement_id)",
            )
            .bind(tenant)
            .bind(&poa.account_number)
            .bind(currency.code())
            .bind(amount)
            .bind(call.now_ms - LOG_MATCH_WINDOW_MS)
            .fetch_one(c)
            .await?
        });
        snap.log_has_charge = n > 0;
    }
    Ok(snap)
}

/// A POA account as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoaView {
    pub user_id: String,
    pub currency: Currency,
    pub company_name: Option<String>,
    pub authorized_user_ids: Vec<String>,
    pub blocked: bool,
    pub credit_limit: i64,
    /// The negated posted balance.
    pub owed: i64,
}

impl Store {
    /// Writes a POA decision in the writer's transaction.
    pub(crate) async fn write_poa(
        &self,
        tx: &mut Tx,
        call: &InstoreCall,
        poa: &PoaCall,
        snap: &PoaSnapshot,
        w: &PoaWrite,
    ) -> Result<(), Step> {
        let now = call.now_ms;
        let tenant = call.tenant_id.as_str();
        let number = poa.account_number.as_str();
        let account = || {
            snap.account
                .as_ref()
                .ok_or_else(|| Step::Fail(StoreError::Invalid("no POA account to write".into())))
        };
        match w {
            PoaWrite::Conflict => {}
            PoaWrite::Open {
                user_id,
                currency,
                credit_limit,
                company_name,
                authorized_user_ids,
            } => {
                let ids = serde_json::to_string(authorized_user_ids)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                run!(tx, c => {
                    sqlx::query(
                        "INSERT INTO accounts (kind, user_id, currency, overdraft_limit_minor, \
                         created_at_ms, updated_at_ms) VALUES ('USER', $1, $2, $3, $4, $4)",
                    )
                    .bind(user_id)
                    .bind(currency.code())
                    .bind(*credit_limit)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                    sqlx::query(
                        "INSERT INTO poa_accounts (tenant_id, account_number, user_id, currency, \
                         company_name, authorized_user_ids, blocked, created_at_ms, updated_at_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $7)",
                    )
                    .bind(tenant)
                    .bind(number)
                    .bind(user_id)
                    .bind(currency.code())
                    .bind(company_name.as_deref())
                    .bind(&ids)
                    .bind(now)
                    .execute(&mut *c)
                    .await?
                    .rows_affected()
                });
            }
            PoaWrite::Charge {
                amount,
                available_after,
                performing_user,
            } => {
                let a = account()?;
                let movement_id = self
                    .book_poa(tx, a, SvKind::Redeem, -amount, Some(*available_after), now)
                    .await?;
                let key = call.request_id.as_str();
                run!(tx, c => {
                    sqlx::query(
                        "INSERT INTO poa_charges (movement_id, tenant_id, account_number, currency, \
                         amount_minor, request_key, performing_user, correlation_id, created_at_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(movement_id)
                    .bind(tenant)
                    .bind(number)
                    .bind(a.currency.code())
                    .bind(*amount)
                    .bind(key)
                    .bind(performing_user.as_deref())
                    .bind(call.correlation_id.as_deref())
                    .bind(now)
                    .execute(c)
                    .await?
                    .rows_affected()
                });
            }
            PoaWrite::Reverse {
                charge_movement_id,
                amount,
            } => {
                let a = account()?;
                let movement_id = self
                    .book_poa(tx, a, SvKind::Cancel, *amount, None, now)
                    .await?;
                run!(tx, c => {
                    sqlx::query(
                        "INSERT INTO poa_reversals (charge_movement_id, movement_id, created_at_ms) \
                         VALUES ($1, $2, $3)",
                    )
                    .bind(*charge_movement_id)
                    .bind(movement_id)
                    .bind(now)
                    .execute(c)
                    .await?
                    .rows_affected()
                });
            }
            PoaWrite::Update {
                company_name,
                authorized_user_ids,
            } => {
                let ids = authorized_user_ids
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                run!(tx, c => {
                    sqlx::query(
                        "UPDATE poa_accounts SET company_name = COALESCE($1, company_name), \
                         authorized_user_ids = COALESCE($2, authorized_user_ids), updated_at_ms = $3 \
                         WHERE tenant_id = $4 AND account_number = $5",
                    )
                    .bind(company_name.as_deref())
                    .bind(ids.as_deref())
                    .bind(now)
                    .bind(tenant)
                    .bind(number)
                    .execute(c)
                    .await?
                    .rows_affected()
                });
            }
            PoaWrite::Settings {
                credit_limit,
                blocked,
            } => {
                let a = account()?;
                // Below what is owed: the audit warns instead of reporting a violation (what
                // is owed already stays owed). A limit at or above it again clears the mark.
                let owed = a.account.balance.saturating_neg();
                let lowered =
                    credit_limit.is_some_and(|l| l < a.account.overdraft_limit && l < owed);
                let cleared = credit_limit.is_some_and(|l| l >= owed);
                run!(tx, c => {
                    sqlx::query(
                        "UPDATE accounts SET overdraft_limit_minor = COALESCE($1, overdraft_limit_minor), \
                         updated_at_ms = $2 WHERE id = $3",
                    )
                    .bind(*credit_limit)
                    .bind(now)
                    .bind(a.account.id)
                    .execute(&mut *c)
                    .await?;
                    sqlx::query(
                        "UPDATE poa_accounts SET blocked = COALESCE($1, blocked), \
                         limit_lowered_at_ms = CASE WHEN $2 THEN $3 WHEN $6 THEN NULL \
                         ELSE limit_lowered_at_ms END, \
                         updated_at_ms = $3 WHERE tenant_id = $4 AND account_number = $5",
                    )
                    .bind(*blocked)
                    .bind(lowered)
                    .bind(now)
                    .bind(tenant)
                    .bind(number)
                    .bind(cleared)
                    .execute(c)
                    .await?
                    .rows_affected()
                });
            }
            PoaWrite::Log {
                request_hash,
                record,
                flags,
            } => {
                let (session, order, action) = poa.log_key.clone().unwrap_or_default();
                run!(tx, c => {
                    sqlx::query(
                        "INSERT INTO poa_logs (tenant_id, account_number, session_id, order_id, \
                         action, request_hash, record, flags, received_at_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(tenant)
                    .bind(number)
                    .bind(&session)
                    .bind(&order)
                    .bind(&action)
                    .bind(request_hash)
                    .bind(record)
                    .bind(flags)
                    .bind(now)
                    .execute(c)
                    .await?
                    .rows_affected()
                });
            }
        }
        Ok(())
    }

    /// Books `delta` on the POA account against INSTORE_CLEARING: a charge (within the
    /// credit limit) or a reversal. Returns the movement id.
    async fn book_poa(
        &self,
        tx: &mut Tx,
        a: &PoaRow,
        kind: SvKind,
        delta: i64,
        available_after: Option<i64>,
        now_ms: i64,
    ) -> Result<i64, Step> {
        let clearing = self.clearing_in(tx, a.currency).await?;
        let bookings = plan_stored_value(kind, &[(sv_account(&a.account), delta)])
            .map_err(|e| StoreError::Invalid(format!("POA movement refused: {e:?}")))?;
        let b = bookings[0];
        if available_after.is_some_and(|x| x != b.available_after) {
            return Err(StoreError::Invalid(
                "the decision's balance differs from the ledger's plan".into(),
            )
            .into());
        }
        let meta = MovementMeta {
            kind: if kind == SvKind::Redeem {
                KIND_POA_CHARGE
            } else {
                KIND_POA_REVERSAL
            },
            processor_kind: None,
            transaction_id: None,
            reference: None,
        };
        let (movement_id, _) = book(
            tx,
            Holder::Account(&a.account),
            clearing,
            b.postings,
            a.currency,
            &meta,
            now_ms,
            None,
        )
        .await?;
        Ok(movement_id)
    }

    /// The POA account of (tenant, number), for the admin API.
    pub async fn poa_account(
        &self,
        tenant_id: &str,
        number: &str,
    ) -> Result<Option<PoaView>, StoreError> {
        let mut tx = self.begin().await?;
        let row = account_row(&mut tx, tenant_id, number).await?;
        tx.commit().await?;
        Ok(row.map(|r| PoaView {
            credit_limit: r.account.overdraft_limit,
            owed: r.account.balance.saturating_neg(),
            user_id: r.user_id,
            currency: r.currency,
            company_name: r.company_name,
            authorized_user_ids: r.authorized_user_ids,
            blocked: r.blocked,
        }))
    }

    /// The `payonaccountlog` records of (tenant, number), newest first: (record, received at).
    pub async fn poa_logs(
        &self,
        tenant_id: &str,
        number: &str,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(run_pool!(&self.db, p => {
            sqlx::query(
                "SELECT record, received_at_ms FROM poa_logs WHERE tenant_id = $1 \
                 AND account_number = $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(tenant_id)
            .bind(number)
            .bind(limit)
            .fetch_all(p)
            .await?
            .into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?
        }))
    }
}
