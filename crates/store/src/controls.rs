//! The spending controls documents of accounts and cards, as the admin API sets and reads
//! them. The documents are validated and put in canonical form by `ledger::controls`
//! before they get here; the plan reads them with the rows of the snapshot.

use crate::authorize::counter_from_row;
use crate::batch::BatchItem;
use crate::rules::CardLookup;
use crate::{Store, StoreError, Tx, run, run_pool};
use ledger::controls::{
    Controls, Counter, CounterKey, LimitUsage, Owner, TimeZone, decode_counters, legacy_usage,
    usage,
};
use ledger::plan::{
    CounterWrite, Counting, GiveBack, Snapshot, give_back_on_row, owner_kind, release_counted,
    windows_of,
};
use ledger::{Currency, RequestKind};
use std::collections::HashMap;

/// A stored controls document: its canonical JSON (`{}` when none is set) and its version,
/// bumped by every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredControls {
    pub document: String,
    pub version: i64,
}

fn stored((document, version): (String, i64)) -> StoredControls {
    StoredControls {
        document: if document.is_empty() {
            "{}".to_owned()
        } else {
            document
        },
        version,
    }
}

impl Store {
    /// The controls of the account (`None`: no such account).
    pub async fn account_controls(
        &self,
        user_id: &str,
        currency: Currency,
    ) -> Result<Option<StoredControls>, StoreError> {
        let row: Option<(String, i64)> = run_pool!(&self.db, p => {
            sqlx::query_as(
                "SELECT controls, controls_version FROM accounts \
                 WHERE kind = 'USER' AND user_id = $1 AND currency = $2",
            )
            .bind(user_id)
            .bind(currency.code())
            .fetch_optional(p)
            .await?
        });
        Ok(row.map(stored))
    }

    /// Replaces the account's controls with `canonical` (`''`: none) and reads where their
    /// limits stand at `now_ms`, in one transaction: the change is committed only with the
    /// usage it answers with. `None`: no such account, nothing changed.
    pub async fn set_account_controls(
        &self,
        user_id: &str,
        currency: Currency,
        canonical: &str,
        now_ms: i64,
    ) -> Result<Option<(StoredControls, Vec<LimitUsage>)>, StoreError> {
        let mut tx = self.begin().await?;
        let row: Option<(String, i64)> = run!(&mut tx, c => {
            sqlx::query_as(
                "UPDATE accounts SET controls = $3, controls_version = controls_version + 1, \
                 updated_at_ms = $4 WHERE kind = 'USER' AND user_id = $1 AND currency = $2 \
                 RETURNING controls, controls_version",
            )
            .bind(user_id)
            .bind(currency.code())
            .bind(canonical)
            .bind(now_ms)
            .fetch_optional(c)
            .await?
        });
        let Some(stored) = row.map(stored) else {
            return Ok(None);
        };
        let usage = self
            .account_usage_in(&mut tx, user_id, currency, &stored.document, now_ms)
            .await?;
        tx.commit().await?;
        Ok(Some((stored, usage)))
    }

    /// The controls of the card (`None`: no such card).
    pub async fn card_controls(&self, card_id: &str) -> Result<Option<StoredControls>, StoreError> {
        let row: Option<(String, i64)> = run_pool!(&self.db, p => {
            sqlx::query_as("SELECT controls, controls_version FROM cards WHERE card_id = $1")
                .bind(card_id)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(stored))
    }

    /// Replaces the card's controls with `canonical` (`''`: none) and reads where their
    /// limits stand at `now_ms`, in one transaction (see
    /// [`Store::set_account_controls`]). `None`: no such card, nothing changed.
    pub async fn set_card_controls(
        &self,
        card_id: &str,
        canonical: &str,
        now_ms: i64,
    ) -> Result<Option<(StoredControls, Vec<LimitUsage>)>, StoreError> {
        let mut tx = self.begin().await?;
        let row: Option<(String, i64)> = run!(&mut tx, c => {
            sqlx::query_as(
                "UPDATE cards SET controls = $2, controls_version = controls_version + 1, \
                 updated_at_ms = $3 WHERE card_id = $1 RETURNING controls, controls_version",
            )
            .bind(card_id)
            .bind(canonical)
            .bind(now_ms)
            .fetch_optional(c)
            .await?
        });
        let Some(stored) = row.map(stored) else {
            return Ok(None);
        };
        let usage = self
            .card_usage_in(&mut tx, card_id, &stored.document, now_ms)
            .await?;
        tx.commit().await?;
        Ok(Some((stored, usage)))
    }
}

impl Store {
    /// Where each limit of the account's controls `document` (as stored) and of its own
    /// legacy limits stands at `now_ms` (empty when there is no such account).
    pub async fn account_limit_usage(
        &self,
        user_id: &str,
        currency: Currency,
        document: &str,
        now_ms: i64,
    ) -> Result<Vec<LimitUsage>, StoreError> {
        let mut tx = self.begin_read().await?;
        self.account_usage_in(&mut tx, user_id, currency, document, now_ms)
            .await
    }

    /// [`Store::account_limit_usage`] on `tx`.
    async fn account_usage_in(
        &self,
        tx: &mut Tx,
        user_id: &str,
        currency: Currency,
        document: &str,
        now_ms: i64,
    ) -> Result<Vec<LimitUsage>, StoreError> {
        type Row = (String, Option<i64>, Option<i64>, i64, i64);
        let row: Option<Row> = run!(tx, c => {
            sqlx::query_as(
                "SELECT counters, per_transaction_limit_minor, daily_limit_minor, \
                 daily_spent_day, daily_spent_minor FROM accounts \
                 WHERE kind = 'USER' AND user_id = $1 AND currency = $2",
            )
            .bind(user_id)
            .bind(currency.code())
            .fetch_optional(c)
            .await?
        });
        let Some((counters, per_transaction, daily, spent_day, spent)) = row else {
            return Ok(Vec::new());
        };
        // The row may still keep a window that is over: it counts nothing now.
        let current = windows_of([now_ms], &self.controls_time_zone);
        let counters: HashMap<CounterKey, Counter> = decode_counters(&counters)
            .filter(|(k, _)| current.contains(&k.window))
            .collect();
        // As a decision reads it: a counter already of the next day (a request of that day
        // came first, in the last moments of this one) counts against this day's limit too.
        let spent_today = if spent_day >= crate::day_of(now_ms) {
            spent
        } else {
            0
        };
        let mut usage = legacy_usage(per_transaction, daily, spent_today, currency, now_ms);
        usage.extend(self.usage_of(document, Some(currency), &counters, now_ms));
        Ok(usage)
    }

    /// Where each limit of the card's controls `document` (as stored) stands at `now_ms`.
    pub async fn card_limit_usage(
        &self,
        card_id: &str,
        document: &str,
        now_ms: i64,
    ) -> Result<Vec<LimitUsage>, StoreError> {
        let mut tx = self.begin_read().await?;
        self.card_usage_in(&mut tx, card_id, document, now_ms).await
    }

    /// [`Store::card_limit_usage`] on `tx`.
    async fn card_usage_in(
        &self,
        tx: &mut Tx,
        card_id: &str,
        document: &str,
        now_ms: i64,
    ) -> Result<Vec<LimitUsage>, StoreError> {
        let (sql, windows) = card_counters_read(now_ms, &self.controls_time_zone);
        let rows: Vec<CounterRow> = run!(tx, c => {
            let mut q = sqlx::query_as(&sql).bind(owner_kind(Owner::Card)).bind(card_id);
            for w in &windows {
                q = q.bind(w.as_str());
            }
            q.fetch_all(c).await?
        });
        Ok(self.usage_of(document, None, &counters_of(rows), now_ms))
    }

    /// Where each limit of the stored `document` stands at `now_ms` against `counters`.
    fn usage_of(
        &self,
        document: &str,
        currency: Option<Currency>,
        counters: &HashMap<CounterKey, Counter>,
        now_ms: i64,
    ) -> Vec<LimitUsage> {
        // `{}` reads as no control; so does a document that does not read (none stored).
        let controls = Controls::from_json(document, currency).unwrap_or_default();
        let counter = |k: &CounterKey| counters.get(k).copied().unwrap_or_default();
        usage(&controls, counter, now_ms, &self.controls_time_zone)
    }
}

/// Which stored authorizations a backtest replays.
#[derive(Debug, Clone, Copy)]
pub enum BacktestScope<'a> {
    /// The account of a user in a currency.
    Account {
        user_id: &'a str,
        currency: Currency,
    },
    /// One card.
    Card(&'a str),
    /// Every account (in `currency` when given).
    All { currency: Option<Currency> },
}

/// An authorization decided here, as stored: what a backtest replays.
#[derive(Debug, Clone)]
pub struct StoredAuthorization {
    pub transaction_id: String,
    /// `DEBIT`, `CREDIT`, or `NULL` (a balance inquiry, or no direction).
    pub direction: Option<String>,
    pub tx_type: Option<String>,
    pub user_id: Option<String>,
    pub card_id: Option<String>,
    pub currency: Option<String>,
    /// The processor's body as received.
    pub request_body: Vec<u8>,
    /// The checks the plan ran, as kept with the record.
    pub explanation: String,
    pub created_at_ms: i64,
}

impl Store {
    /// The authorizations decided here (those with an explanation) in `[from_ms, to_ms)`,
    /// in the order they were decided.
    pub async fn authorizations_between(
        &self,
        scope: BacktestScope<'_>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredAuthorization>, StoreError> {
        let (user, currency, card) = match scope {
            BacktestScope::Account { user_id, currency } => {
                (Some(user_id), Some(currency.code().to_owned()), None)
            }
            BacktestScope::Card(card_id) => (None, None, Some(card_id)),
            BacktestScope::All { currency } => (None, currency.map(|c| c.code().to_owned()), None),
        };
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Vec<u8>,
            String,
            i64,
        );
        let rows: Vec<Row> = run_pool!(&self.db, p => {
            sqlx::query_as(
                "SELECT transaction_id, direction, tx_type, user_id, card_id, currency, \
                 request_body, explanation, created_at_ms FROM processor_transactions \
                 WHERE kind = 'AUTHORIZATION' AND explanation IS NOT NULL \
                 AND request_body IS NOT NULL AND created_at_ms >= $1 AND created_at_ms < $2 \
                 AND ($3 IS NULL OR user_id = $3) AND ($4 IS NULL OR currency = $4) \
                 AND ($5 IS NULL OR card_id = $5) \
                 ORDER BY created_at_ms, transaction_id",
            )
            .bind(from_ms)
            .bind(to_ms)
            .bind(user)
            .bind(currency)
            .bind(card)
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| StoredAuthorization {
                transaction_id: r.0,
                direction: r.1,
                tx_type: r.2,
                user_id: r.3,
                card_id: r.4,
                currency: r.5,
                request_body: r.6,
                explanation: r.7,
                created_at_ms: r.8,
            })
            .collect())
    }
}

/// Gives back the room authorization `transaction_id` took in its control counters (a
/// reversal, a rejected verdict, a refund), in the transaction that books the message, and
/// keeps on its record what was given back so that nothing is given twice. A counter that
/// is gone has nothing to give back. With `booked_to` (a credit's account: user and
/// currency), only an authorization of that account gets room back: a credit booked
/// elsewhere that names another account's purchase gives nothing.
pub(crate) async fn release_controls(
    tx: &mut Tx,
    transaction_id: &str,
    give: GiveBack,
    booked_to: Option<(&str, Currency)>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let sql = match tx {
        Tx::Pg(_) => {
            "SELECT controls_counted, user_id, currency, amount_minor, verdict, verdict_movement_id \
             FROM processor_transactions \
             WHERE kind = 'AUTHORIZATION' AND transaction_id = $1 FOR UPDATE"
        }
        Tx::Lite(_) => {
            "SELECT controls_counted, user_id, currency, amount_minor, verdict, verdict_movement_id \
             FROM processor_transactions WHERE kind = 'AUTHORIZATION' AND transaction_id = $1"
        }
    };
    type Counted = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let stored: Option<Counted> = run!(tx, c => {
        sqlx::query_as(sql).bind(transaction_id).fetch_optional(c).await?
    });
    let Some((counted, user, currency, mut authorized, verdict, verdict_movement)) = stored else {
        return Ok(());
    };
    // Money the processor made effective on its own (a forced booking of a debit we
    // declined) took the amount it booked, not the one we were asked.
    if let (Some("APPROVED"), Some(movement)) = (verdict.as_deref(), verdict_movement) {
        let forced: Option<i64> = run!(tx, c => {
            sqlx::query_scalar(
                "SELECT p.amount_minor FROM postings p JOIN accounts a ON a.id = p.account_id \
                 WHERE p.movement_id = $1 AND a.kind = 'USER'",
            )
            .bind(movement)
            .fetch_optional(c)
            .await?
        });
        authorized = forced.or(authorized);
    }
    if let Some((u, c)) = booked_to
        && (user.as_deref() != Some(u) || currency.as_deref() != Some(c.code()))
    {
        return Ok(());
    }
    let Some(counted) = counted else {
        return Ok(());
    };
    let Some(text) = give_back_counted(tx, &counted, give, authorized, now_ms).await? else {
        return Ok(());
    };
    run!(tx, c => {
        sqlx::query(
            "UPDATE processor_transactions SET controls_counted = $2 \
             WHERE kind = 'AUTHORIZATION' AND transaction_id = $1",
        )
        .bind(transaction_id)
        .bind(&text)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// Gives back, in `tx`, what an approval's `counted` text says it took ([`release_counted`]):
/// on the account's row and the card's counter rows. Returns the text to keep in its place
/// (`None`: it cannot be read, and nothing is given).
pub(crate) async fn give_back_counted(
    tx: &mut Tx,
    counted: &str,
    give: GiveBack,
    authorized: Option<i64>,
    now_ms: i64,
) -> Result<Option<String>, sqlx::Error> {
    let Some((writes, text)) = release_counted(counted, give, authorized) else {
        return Ok(None);
    };
    let update = match tx {
        Tx::Pg(_) => {
            "UPDATE control_counters SET amount_minor = GREATEST(0, amount_minor + $5), \
             count = GREATEST(0, count + $6), updated_at_ms = $7 \
             WHERE owner_kind = $1 AND owner_id = $2 AND window_key = $3 AND categories = $4"
        }
        Tx::Lite(_) => {
            "UPDATE control_counters SET amount_minor = MAX(0, amount_minor + $5), \
             count = MAX(0, count + $6), updated_at_ms = $7 \
             WHERE owner_kind = $1 AND owner_id = $2 AND window_key = $3 AND categories = $4"
        }
    };
    for (w, (window, categories)) in in_lock_order(&writes) {
        if w.owner == Owner::Account {
            give_back_on_account(tx, w).await?;
            continue;
        }
        run!(tx, c => {
            sqlx::query(update)
                .bind(owner_kind(w.owner))
                .bind(w.owner_id.as_str())
                .bind(window.as_str())
                .bind(categories.as_str())
                .bind(w.amount)
                .bind(w.count)
                .bind(now_ms)
                .execute(c)
                .await?
                .rows_affected()
        });
    }
    Ok(Some(text))
}

/// Writes what an approved debit counted: the account row's counters (its lock is held)
/// and the card's counter rows.
pub(crate) async fn write_counting(
    tx: &mut Tx,
    account_id: i64,
    counting: &Counting,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if let Some(text) = &counting.account {
        run!(tx, c => {
            sqlx::query("UPDATE accounts SET counters = $1 WHERE id = $2")
                .bind(text)
                .bind(account_id)
                .execute(c)
                .await?
                .rows_affected()
        });
    }
    add_counters(tx, &counting.card, now_ms).await
}

/// The cards of `items` whose controls may count, each once and in lock order: the cards of
/// debits not answered before (`s.keys`: a resend replays its answer and decides nothing)
/// whose record, known beforehand or read into `s`, carries controls.
pub(crate) fn controlled_cards<'i>(items: &[BatchItem<'i>], s: &Snapshot) -> Vec<&'i str> {
    let mut ids: Vec<&str> = items
        .iter()
        .filter(|i| i.kind == Some(RequestKind::Debit))
        .filter(|i| !s.keys.contains_key(i.call.idempotency_key))
        .filter_map(|i| {
            let id = i.tx.card_id?;
            let controlled = match i.card {
                CardLookup::Known(r) => r.controls.is_some(),
                CardLookup::Absent => false,
                CardLookup::InTransaction => s.cards.get(id).is_some_and(|r| r.controls.is_some()),
            };
            controlled.then_some(id)
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Locks the rows of `cards` (sorted) until the transaction ends, before their counters are
/// read. A card's counters are rows of their own that no account lock covers: without it,
/// two debits of one card on two of its holder's accounts (on two instances of a fleet)
/// would both read the counters before either counted, and both pass a limit only one of
/// them fits in. Every writer that decides on a card's counters takes it after its account
/// locks and reads the counters in a later statement, so they hold what the writer before it
/// committed. `NO KEY UPDATE`: rows that refer to the card may still be written meanwhile.
pub(crate) async fn lock_cards(
    c: &mut sqlx::PgConnection,
    cards: &[&str],
) -> Result<(), sqlx::Error> {
    if !cards.is_empty() {
        sqlx::query(
            "SELECT 1 FROM cards WHERE card_id = ANY($1) ORDER BY card_id FOR NO KEY UPDATE",
        )
        .bind(cards)
        .fetch_all(c)
        .await?;
    }
    Ok(())
}

/// [`lock_cards`] on `tx`. The embedded store's transaction holds the database's one write
/// lock already.
pub(crate) async fn lock_cards_in(tx: &mut Tx, cards: &[&str]) -> Result<(), sqlx::Error> {
    match tx {
        Tx::Pg(t) => lock_cards(t, cards).await,
        Tx::Lite(_) => Ok(()),
    }
}

/// The counters of `cards` in `windows`, read again into `s` after [`lock_cards`]: what the
/// batch's read found of them may be older than the lock.
pub(crate) async fn read_card_counters(
    c: &mut sqlx::PgConnection,
    s: &mut Snapshot,
    cards: &[&str],
    windows: &[String],
) -> Result<(), sqlx::Error> {
    if cards.is_empty() || windows.is_empty() {
        return Ok(());
    }
    for id in cards {
        s.counters.remove(&(Owner::Card, (*id).to_owned()));
    }
    let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT owner_id, window_key, categories, amount_minor, count FROM control_counters \
         WHERE owner_kind = $1 AND owner_id = ANY($2) AND window_key = ANY($3)",
    )
    .bind(owner_kind(Owner::Card))
    .bind(cards)
    .bind(windows)
    .fetch_all(c)
    .await?;
    for (id, window, categories, amount, count) in rows {
        let kind = owner_kind(Owner::Card).to_owned();
        counter_from_row(s, kind, id, window, categories, Counter { amount, count });
    }
    Ok(())
}

/// The card's control counters in the windows of `now_ms` (in `tz`), read after the card's
/// row is locked ([`lock_cards`]): for a debit that decides on them.
pub(crate) async fn card_counters(
    tx: &mut Tx,
    card_id: &str,
    now_ms: i64,
    tz: &TimeZone,
) -> Result<HashMap<CounterKey, Counter>, sqlx::Error> {
    lock_cards_in(tx, &[card_id]).await?;
    let (sql, windows) = card_counters_read(now_ms, tz);
    let rows: Vec<CounterRow> = run!(tx, c => {
        let mut q = sqlx::query_as(&sql).bind(owner_kind(Owner::Card)).bind(card_id);
        for w in &windows {
            q = q.bind(w.as_str());
        }
        q.fetch_all(c).await?
    });
    Ok(counters_of(rows))
}

/// A stored counter row: window key, categories, amount and count.
type CounterRow = (String, String, i64, i64);

/// The statement reading one card's counter rows (`$1` the owner kind, `$2` the card id) in
/// the windows holding `now_ms` in `tz`, one statement on either store, and those windows
/// to bind from `$3` on.
fn card_counters_read(now_ms: i64, tz: &TimeZone) -> (String, Vec<String>) {
    let windows: Vec<String> = windows_of([now_ms], tz)
        .iter()
        .map(ToString::to_string)
        .collect();
    let sql = format!(
        "SELECT window_key, categories, amount_minor, count FROM control_counters \
         WHERE owner_kind = $1 AND owner_id = $2 AND window_key IN {}",
        crate::authorize::placeholders(1, windows.len(), 3)
    );
    (sql, windows)
}

/// The counters of `rows`, by key (a row whose key does not read is left out).
fn counters_of(rows: Vec<CounterRow>) -> HashMap<CounterKey, Counter> {
    rows.into_iter()
        .filter_map(|(window, categories, amount, count)| {
            let key = CounterKey::from_columns(&window, &categories)?;
            Some((key, Counter { amount, count }))
        })
        .collect()
}

/// `writes` with their stored columns, in the order every writer changes counter rows
/// (owner, window, categories): two transactions never wait on each other's rows.
fn in_lock_order(writes: &[CounterWrite]) -> Vec<(&CounterWrite, (String, String))> {
    let mut rows: Vec<_> = writes.iter().map(|w| (w, w.columns())).collect();
    rows.sort_unstable_by(|(a, ac), (b, bc)| {
        (owner_kind(a.owner), &a.owner_id, ac).cmp(&(owner_kind(b.owner), &b.owner_id, bc))
    });
    rows
}

/// Adds `writes` to their counter rows in `tx`, in one statement (a row is made when
/// missing; no counter goes below zero).
pub(crate) async fn add_counters(
    tx: &mut Tx,
    writes: &[CounterWrite],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if writes.is_empty() {
        return Ok(());
    }
    let greatest = match tx {
        Tx::Pg(_) => "GREATEST",
        Tx::Lite(_) => "MAX",
    };
    let sql = format!(
        "INSERT INTO control_counters AS c (owner_kind, owner_id, window_key, categories, \
         amount_minor, count, updated_at_ms) VALUES {} \
         ON CONFLICT (owner_kind, owner_id, window_key, categories) DO UPDATE \
         SET amount_minor = {greatest}(0, c.amount_minor + excluded.amount_minor), \
         count = {greatest}(0, c.count + excluded.count), updated_at_ms = excluded.updated_at_ms",
        crate::authorize::placeholders(writes.len(), 7, 1)
    );
    let columns = in_lock_order(writes);
    run!(tx, c => {
        let mut q = sqlx::query(&sql);
        for (w, (window, categories)) in &columns {
            q = q
                .bind(owner_kind(w.owner))
                .bind(w.owner_id.as_str())
                .bind(window.as_str())
                .bind(categories.as_str())
                .bind(w.amount.max(0))
                .bind(w.count.max(0))
                .bind(now_ms);
        }
        q.execute(c).await?.rows_affected()
    });
    Ok(())
}

/// Gives `w` back on its account's row (`w.owner_id` is `user/currency`), whose lock the
/// transaction takes (on SQLite it holds the one write lock already).
async fn give_back_on_account(tx: &mut Tx, w: &CounterWrite) -> Result<(), sqlx::Error> {
    let Some((user, currency)) = w.owner_id.rsplit_once('/') else {
        return Ok(());
    };
    let sql = match tx {
        Tx::Pg(_) => {
            "SELECT id, counters FROM accounts WHERE kind = 'USER' AND user_id = $1 \
             AND currency = $2 FOR UPDATE"
        }
        Tx::Lite(_) => {
            "SELECT id, counters FROM accounts WHERE kind = 'USER' AND user_id = $1 \
             AND currency = $2"
        }
    };
    let row: Option<(i64, String)> = run!(tx, c => {
        sqlx::query_as(sql).bind(user).bind(currency).fetch_optional(c).await?
    });
    let Some((id, stored)) = row else {
        return Ok(());
    };
    let text = give_back_on_row(&stored, w);
    if text != stored {
        run!(tx, c => {
            sqlx::query("UPDATE accounts SET counters = $1 WHERE id = $2")
                .bind(&text)
                .bind(id)
                .execute(c)
                .await?
                .rows_affected()
        });
    }
    Ok(())
}
