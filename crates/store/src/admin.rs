//! What the issuer's own systems do: open accounts, fund them, register cards, read
//! history.

use crate::processor::Step;
use crate::processor::{
    Asked, Holder, LockedAccount, MovementMeta, account_columns, book, find_idempotent, in_own_tx,
    insert_idempotent, lock_user_account, locked_account_from_row,
};
use crate::{Store, StoreError, StoredResponse, Tx, run_pool};
use ledger::funding::{FundedAccount, FundingRefusal, plan_funding};
use ledger::verdicts::{Repeat, repeat_of};
use ledger::{CardStatus, Currency, MccSet, SystemAccount};
use sqlx::Row;

const SCOPE_ADMIN: &str = "admin";

/// Rules of a cardholder account, in minor units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountSettings {
    pub overdraft_limit: i64,
    pub per_transaction_limit: Option<i64>,
    pub daily_limit: Option<i64>,
    pub blocked_mccs: MccSet,
}

/// A cardholder account as the admin API shows it.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub user_id: String,
    pub currency: Currency,
    /// The posted balance (what the postings sum to).
    pub balance: i64,
    /// The sum of the account's RESERVED holds; `available = balance - held`.
    pub held: i64,
    pub version: i64,
    pub settings: AccountSettings,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One posting on a cardholder account, with what caused it.
#[derive(Debug, Clone)]
pub struct PostingView {
    pub id: i64,
    pub movement_id: i64,
    pub movement_kind: String,
    pub transaction_id: Option<String>,
    pub reference: Option<String>,
    pub amount: i64,
    pub balance_after: Option<i64>,
    pub account_version: Option<i64>,
    pub created_at_ms: i64,
}

/// A card we hold a record for.
#[derive(Debug, Clone)]
pub struct CardView {
    pub card_id: String,
    pub user_id: String,
    pub status: CardStatus,
    pub blocked_mccs: MccSet,
    pub updated_at_ms: i64,
}

/// A deposit or withdrawal asked for by the issuer.
#[derive(Debug, Clone, Copy)]
pub struct FundingCall<'a> {
    pub user_id: &'a str,
    pub currency: Currency,
    /// Positive minor units.
    pub amount: i64,
    pub withdrawal: bool,
    pub reference: Option<&'a str>,
    pub idempotency_key: &'a str,
    pub request_hash: [u8; 32],
    pub endpoint: &'a str,
    pub now_ms: i64,
}

/// What a funding call came to.
#[derive(Debug)]
pub enum FundingOutcome {
    Done {
        response: StoredResponse,
    },
    Replay(StoredResponse),
    KeyConflict,
    AccountNotFound,
    /// A withdrawal never overdraws.
    InsufficientFunds,
    /// The balance after a deposit would be beyond what the ledger can hold.
    BalanceOutOfRange,
}

/// A processor transaction record, for history.
#[derive(Debug, Clone)]
pub struct TransactionRecordView {
    pub kind: String,
    pub transaction_id: String,
    /// What the request asked for (route, direction, type, user, card, currency, amount).
    pub asked: Asked,
    pub amount_minor: Option<i64>,
    pub status: Option<String>,
    pub status_detail: Option<String>,
    pub flags: String,
    pub original_transaction_id: Option<String>,
    pub movement_id: Option<i64>,
    pub request_body: Option<Vec<u8>>,
    pub response_body: Option<Vec<u8>>,
    pub verdict: Option<String>,
    pub verdict_detail: Option<String>,
    pub verdict_movement_id: Option<i64>,
    /// JSON: the checks the decision ran, in order, with their inputs.
    pub explanation: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NotificationView {
    pub idempotency_key: String,
    pub event_id: String,
    pub verdict: Option<String>,
    pub status_detail: Option<String>,
    pub effect: String,
    pub flags: String,
    pub movement_id: Option<i64>,
    pub received_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct MovementView {
    pub id: i64,
    pub kind: String,
    pub currency: String,
    pub transaction_id: Option<String>,
    pub created_at_ms: i64,
    /// (account kind, user id, signed amount)
    pub postings: Vec<(String, Option<String>, i64)>,
}

/// Everything we know about one processor transaction id.
#[derive(Debug, Clone, Default)]
pub struct TransactionHistory {
    /// The authorization and/or adjustment with this id.
    pub records: Vec<TransactionRecordView>,
    /// Adjustments whose `original_transaction_id` is this id.
    pub linked_adjustments: Vec<TransactionRecordView>,
    pub notifications: Vec<NotificationView>,
    pub movements: Vec<MovementView>,
}

fn view_of(a: LockedAccount, user_id: String, created: i64, updated: i64) -> AccountView {
    AccountView {
        user_id,
        currency: a.currency,
        balance: a.balance,
        held: a.held,
        version: a.version,
        settings: AccountSettings {
            overdraft_limit: a.overdraft_limit,
            per_transaction_limit: a.per_transaction_limit,
            daily_limit: a.daily_limit,
            blocked_mccs: a.blocked_mccs,
        },
        created_at_ms: created,
        updated_at_ms: updated,
    }
}

macro_rules! record_from_row {
    ($r:expr) => {{
        let r = &$r;
        TransactionRecordView {
            kind: r.try_get("kind")?,
            transaction_id: r.try_get("transaction_id")?,
            asked: Asked::read(|column| r.try_get(column))?,
            amount_minor: r.try_get("amount_minor")?,
            status: r.try_get("status")?,
            status_detail: r.try_get("status_detail")?,
            flags: r.try_get("flags")?,
            original_transaction_id: r.try_get("original_transaction_id")?,
            movement_id: r.try_get("movement_id")?,
            request_body: r.try_get("request_body")?,
            response_body: r.try_get("response_body")?,
            verdict: r.try_get("verdict")?,
            verdict_detail: r.try_get("verdict_detail")?,
            verdict_movement_id: r.try_get("verdict_movement_id")?,
            explanation: r.try_get("explanation")?,
            created_at_ms: r.try_get("created_at_ms")?,
            updated_at_ms: r.try_get("updated_at_ms")?,
        }
    }};
}

const RECORD_COLUMNS: &str = "SELECT kind, transaction_id, endpoint, direction, tx_type, user_id, \
    card_id, currency, amount_text, amount_minor, status, status_detail, flags, \
    original_transaction_id, movement_id, request_body, response_body, verdict, verdict_detail, \
    verdict_movement_id, explanation, created_at_ms, updated_at_ms FROM processor_transactions";

impl Store {
    /// Opens the account (idempotent). With `settings`, also sets its rules.
    /// Returns the account and whether it was created now.
    pub async fn open_account(
        &self,
        user_id: &str,
        currency: Currency,
        settings: Option<&AccountSettings>,
        now_ms: i64,
    ) -> Result<(AccountView, bool), StoreError> {
        let d = AccountSettings::default();
        let s = settings.unwrap_or(&d);
        let created = run_pool!(&self.db, p => {
            sqlx::query(
                "INSERT INTO accounts (kind, user_id, currency, overdraft_limit_minor, \
                 per_transaction_limit_minor, daily_limit_minor, blocked_mccs, created_at_ms, updated_at_ms) \
                 VALUES ('USER', $1, $2, $3, $4, $5, $6, $7, $7) \
                 ON CONFLICT (user_id, currency) WHERE kind = 'USER' DO NOTHING",
            )
            .bind(user_id)
            .bind(currency.code())
            .bind(s.overdraft_limit)
            .bind(s.per_transaction_limit)
            .bind(s.daily_limit)
            .bind(s.blocked_mccs.to_stored())
            .bind(now_ms)
            .execute(p)
            .await?
            .rows_affected()
        }) == 1;
        if !created && let Some(s) = settings {
            run_pool!(&self.db, p => {
                sqlx::query(
                    "UPDATE accounts SET overdraft_limit_minor = $1, per_transaction_limit_minor = $2, \
                     daily_limit_minor = $3, blocked_mccs = $4, updated_at_ms = $5 \
                     WHERE kind = 'USER' AND user_id = $6 AND currency = $7",
                )
                .bind(s.overdraft_limit)
                .bind(s.per_transaction_limit)
                .bind(s.daily_limit)
                .bind(s.blocked_mccs.to_stored())
                .bind(now_ms)
                .bind(user_id)
                .bind(currency.code())
                .execute(p)
                .await?
                .rows_affected()
            });
        }
        let view = self
            .account(user_id, currency)
            .await?
            .ok_or_else(|| StoreError::Invalid("account vanished after opening".into()))?;
        Ok((view, created))
    }

    /// The cardholder account for (user, currency).
    pub async fn account(
        &self,
        user_id: &str,
        currency: Currency,
    ) -> Result<Option<AccountView>, StoreError> {
        let sql = concat!(
            account_columns!(),
            " WHERE kind = 'USER' AND user_id = $1 AND currency = $2"
        );
        let row = run_pool!(&self.db, p => {
            match sqlx::query(sql).bind(user_id).bind(currency.code()).fetch_optional(p).await? {
                Some(r) => {
                    let created: i64 = r.try_get("created_at_ms")?;
                    let updated: i64 = r.try_get("updated_at_ms")?;
                    Some((locked_account_from_row!(r), created, updated))
                }
                None => None,
            }
        });
        Ok(row.map(|(a, c, u)| view_of(a, user_id.to_owned(), c, u)))
    }

    /// A deposit into or a withdrawal from a cardholder account, exactly once per key.
    pub async fn fund<R>(
        &self,
        f: &FundingCall<'_>,
        render: R,
    ) -> Result<FundingOutcome, StoreError>
    where
        R: Fn(i64, i64) -> StoredResponse,
    {
        let funding = self
            .system_account(SystemAccount::Funding, f.currency)
            .await?;
        in_own_tx!(self, tx => self.fund_on(tx, f, funding, &render).await).await
    }

    /// A deposit or withdrawal on `tx`, which the caller commits; `funding` is the
    /// currency's funding account.
    pub(crate) async fn fund_on<R>(
        &self,
        tx: &mut Tx,
        f: &FundingCall<'_>,
        funding: i64,
        render: &R,
    ) -> Result<FundingOutcome, Step>
    where
        R: Fn(i64, i64) -> StoredResponse,
    {
        if let Some(done) = funded_before(tx, f).await? {
            return Ok(done);
        }
        let Some(account) = lock_user_account(tx, f.user_id, f.currency).await? else {
            return Ok(FundingOutcome::AccountNotFound);
        };
        // A duplicate that another instance committed while this one waited for the lock is
        // seen now: else a withdrawal would be refused for the money its twin took.
        if let Some(done) = funded_before(tx, f).await? {
            return Ok(done);
        }
        let funded = FundedAccount {
            balance: account.balance,
            held: account.held,
        };
        let plan = match plan_funding(f.withdrawal, f.amount, funded) {
            Ok(plan) => plan,
            Err(FundingRefusal::InsufficientFunds) => return Ok(FundingOutcome::InsufficientFunds),
            Err(FundingRefusal::BalanceOutOfRange) => return Ok(FundingOutcome::BalanceOutOfRange),
        };
        let meta = MovementMeta {
            kind: plan.kind,
            processor_kind: None,
            transaction_id: None,
            reference: f.reference,
        };
        let (movement_id, _) = book(
            tx,
            Holder::Account(&account),
            funding,
            plan.postings,
            f.currency,
            &meta,
            f.now_ms,
            None,
        )
        .await?;
        let (event_type, event) = if f.withdrawal {
            ("account.withdrawn", "evt-withdrawal")
        } else {
            ("account.funded", "evt-deposit")
        };
        self.emit(
            tx,
            event_type,
            &format!("{event}-{movement_id}"),
            f.now_ms,
            || {
                let exp = f.currency.exponent();
                serde_json::json!({
                    "movement_id": movement_id,
                    "user_id": f.user_id,
                    "currency": f.currency.code(),
                    "amount": ledger::format_minor(f.amount, exp),
                    "posted": ledger::format_minor(plan.balance_after, exp),
                    "reference": f.reference,
                })
            },
        )
        .await?;
        let response = render(movement_id, plan.available_after);
        // A concurrent duplicate that committed first fails this insert (a unique key):
        // ours rolls back, and the next try replays theirs.
        insert_idempotent(
            tx,
            SCOPE_ADMIN,
            f.idempotency_key,
            &f.request_hash,
            f.endpoint,
            &response,
            f.now_ms,
        )
        .await?;
        Ok(FundingOutcome::Done { response })
    }

    /// The id of the cardholder account (user, currency), when there is one.
    pub(crate) async fn user_account_id(
        &self,
        user_id: &str,
        currency: Currency,
    ) -> Result<Option<i64>, StoreError> {
        Ok(run_pool!(&self.db, p => {
            sqlx::query_scalar(USER_ACCOUNT_ID)
                .bind(user_id)
                .bind(currency.code())
                .fetch_optional(p)
                .await?
        }))
    }

    /// Postings of a cardholder account, newest first, before posting id `before`.
    /// `None` when the account does not exist.
    pub async fn postings(
        &self,
        user_id: &str,
        currency: Currency,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Option<Vec<PostingView>>, StoreError> {
        let Some(id) = self.user_account_id(user_id, currency).await? else {
            return Ok(None);
        };
        let rows: Vec<PostingView> = run_pool!(&self.db, p => {
            let rows = sqlx::query(
                "SELECT p.id, p.movement_id, m.kind, m.transaction_id, m.reference, p.amount_minor, \
                 p.balance_after_minor, p.account_version, p.created_at_ms \
                 FROM postings p JOIN movements m ON m.id = p.movement_id \
                 WHERE p.account_id = $1 AND p.id < $2 ORDER BY p.id DESC LIMIT $3",
            )
            .bind(id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(PostingView {
                        id: r.try_get(0)?,
                        movement_id: r.try_get(1)?,
                        movement_kind: r.try_get(2)?,
                        transaction_id: r.try_get(3)?,
                        reference: r.try_get(4)?,
                        amount: r.try_get(5)?,
                        balance_after: r.try_get(6)?,
                        account_version: r.try_get(7)?,
                        created_at_ms: r.try_get(8)?,
                    })
                })
                .collect::<Result<_, _>>()?
        });
        Ok(Some(rows))
    }

    /// Registers or updates a card.
    pub async fn put_card(
        &self,
        card_id: &str,
        user_id: &str,
        status: CardStatus,
        blocked_mccs: &MccSet,
        now_ms: i64,
    ) -> Result<(CardView, bool), StoreError> {
        let existed: Option<i32> = run_pool!(&self.db, p => {
            sqlx::query_scalar("SELECT 1 FROM cards WHERE card_id = $1").bind(card_id).fetch_optional(p).await?
        });
        run_pool!(&self.db, p => {
            sqlx::query(
                "INSERT INTO cards (card_id, user_id, status, blocked_mccs, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (card_id) DO UPDATE SET \
                 user_id = excluded.user_id, status = excluded.status, \
                 blocked_mccs = excluded.blocked_mccs, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(card_id)
            .bind(user_id)
            .bind(status.as_str())
            .bind(blocked_mccs.to_stored())
            .bind(now_ms)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok((
            CardView {
                card_id: card_id.to_owned(),
                user_id: user_id.to_owned(),
                status,
                blocked_mccs: blocked_mccs.clone(),
                updated_at_ms: now_ms,
            },
            existed.is_none(),
        ))
    }

    /// Everything received, decided and booked for a processor transaction id.
    pub async fn transaction_history(
        &self,
        transaction_id: &str,
    ) -> Result<Option<TransactionHistory>, StoreError> {
        let by_id = format!("{RECORD_COLUMNS} WHERE transaction_id = $1 ORDER BY created_at_ms");
        let linked =
            format!("{RECORD_COLUMNS} WHERE original_transaction_id = $1 ORDER BY created_at_ms");
        let mut h = TransactionHistory::default();
        run_pool!(&self.db, p => {
            for r in sqlx::query(&by_id).bind(transaction_id).fetch_all(p).await? {
                h.records.push(record_from_row!(r));
            }
            for r in sqlx::query(&linked).bind(transaction_id).fetch_all(p).await? {
                h.linked_adjustments.push(record_from_row!(r));
            }
            for r in sqlx::query(
                "SELECT idempotency_key, event_id, verdict, status_detail, effect, flags, movement_id, \
                 received_at_ms FROM notifications WHERE transaction_id = $1 ORDER BY received_at_ms",
            )
            .bind(transaction_id)
            .fetch_all(p)
            .await?
            {
                h.notifications.push(NotificationView {
                    idempotency_key: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    verdict: r.try_get(2)?,
                    status_detail: r.try_get(3)?,
                    effect: r.try_get(4)?,
                    flags: r.try_get(5)?,
                    movement_id: r.try_get(6)?,
                    received_at_ms: r.try_get(7)?,
                });
            }
        });
        if h.records.is_empty() && h.linked_adjustments.is_empty() && h.notifications.is_empty() {
            return Ok(None);
        }
        let mut ids: Vec<&str> = vec![transaction_id];
        ids.extend(
            h.linked_adjustments
                .iter()
                .map(|r| r.transaction_id.as_str()),
        );
        let mut movements = Vec::new();
        for id in ids {
            run_pool!(&self.db, p => {
                let rows = sqlx::query(
                    "SELECT m.id, m.kind, m.currency, m.transaction_id, m.created_at_ms, a.kind, a.user_id, \
                     p.amount_minor FROM movements m JOIN postings p ON p.movement_id = m.id \
                     JOIN accounts a ON a.id = p.account_id WHERE m.transaction_id = $1 ORDER BY m.id, p.id",
                )
                .bind(id)
                .fetch_all(p)
                .await?;
                for r in rows {
                    let mid: i64 = r.try_get(0)?;
                    if movements.last().is_none_or(|m: &MovementView| m.id != mid) {
                        movements.push(MovementView {
                            id: mid,
                            kind: r.try_get(1)?,
                            currency: r.try_get(2)?,
                            transaction_id: r.try_get(3)?,
                            created_at_ms: r.try_get(4)?,
                            postings: Vec::new(),
                        });
                    }
                    if let Some(m) = movements.last_mut() {
                        m.postings.push((r.try_get(5)?, r.try_get(6)?, r.try_get(7)?));
                    }
                }
            });
        }
        h.movements = movements;
        Ok(Some(h))
    }
}

/// The id of the cardholder account (user, currency).
const USER_ACCOUNT_ID: &str =
    "SELECT id FROM accounts WHERE kind = 'USER' AND user_id = $1 AND currency = $2";

/// The id of the cardholder account (user, currency) as `tx` reads it, when there is one.
pub(crate) async fn user_account_in(
    tx: &mut Tx,
    user_id: &str,
    currency: Currency,
) -> Result<Option<i64>, sqlx::Error> {
    Ok(crate::run!(tx, c => {
        sqlx::query_scalar(USER_ACCOUNT_ID)
            .bind(user_id)
            .bind(currency.code())
            .fetch_optional(c)
            .await?
    }))
}

/// The answer recorded under the funding call's idempotency key, if any.
async fn funded_before(tx: &mut Tx, f: &FundingCall<'_>) -> Result<Option<FundingOutcome>, Step> {
    let Some(rec) = find_idempotent(tx, SCOPE_ADMIN, f.idempotency_key).await? else {
        return Ok(None);
    };
    Ok(Some(match repeat_of(&rec.request_hash, &f.request_hash) {
        Repeat::Replay => FundingOutcome::Replay(rec.response),
        Repeat::KeyConflict => FundingOutcome::KeyConflict,
    }))
}
