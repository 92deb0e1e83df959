//! What to send next: request bodies built with the protocol crate's wire types, and the
//! recent past that refunds, adjustments, advices and duplicates refer to.

use crate::book::Op;
use crate::cli::Config;
use crate::mix::Kind;
use crate::money::{format_minor, unit};
use crate::rng::{AccountSampler, Rng};
use bytes::Bytes;
use protocol::wire::{
    AmountDetail, Amounts, CardRef, EntryMode, Merchant, MoneyField, Origin, PointType,
    ProductType, Provider, Source, TransactionInfo, TransactionRequest, TransactionType, UserRef,
};
use protocol::{Notification, WireAmount};
use std::collections::VecDeque;
use std::sync::Mutex;

pub const AUTHORIZE: &str = "/transactions/authorizations";
pub const AUTHORIZE_DEBIT: &str = "/transactions/authorizations/debit";
pub const ADJUST_DEBIT: &str = "/transactions/adjustments/debit";
pub const ADJUST_CREDIT: &str = "/transactions/adjustments/credit";
pub const NOTIFY: &str = "/transactions/v1/notifications";

/// How many earlier requests of each sort are remembered (the newest win).
const MEMORY: usize = 4096;

/// An authorization answered earlier.
#[derive(Debug, Clone)]
pub struct Earlier {
    pub account: u32,
    pub transaction_id: String,
    pub amount: i64,
    pub withdrawal: bool,
    pub approved: bool,
}

/// A request answered earlier with HTTP 200, kept to be sent again.
#[derive(Debug, Clone)]
pub struct Replayable {
    pub account: u32,
    pub path: &'static str,
    pub key: String,
    pub body: Bytes,
    pub answer: Bytes,
}

/// The recent past, shared by all workers.
#[derive(Debug, Default)]
pub struct Past {
    /// Approved purchases: what refunds and clearing differences correct.
    purchases: VecDeque<Earlier>,
    /// Authorizations with no advice yet (each gets at most one: a second verdict is not news).
    advisable: VecDeque<Earlier>,
    replayable: VecDeque<Replayable>,
}

fn remember<T>(q: &mut VecDeque<T>, item: T) {
    if q.len() == MEMORY {
        q.pop_front();
    }
    q.push_back(item);
}

impl Past {
    pub fn answered(&mut self, e: Earlier) {
        if e.approved && !e.withdrawal {
            remember(&mut self.purchases, e.clone());
        }
        remember(&mut self.advisable, e);
    }

    pub fn replayable(&mut self, r: Replayable) {
        remember(&mut self.replayable, r);
    }

    fn purchase(&self, rng: &mut Rng) -> Option<Earlier> {
        let n = self.purchases.len();
        (n > 0).then(|| self.purchases[rng.below(n as u64) as usize].clone())
    }

    fn take_advisable(&mut self, rng: &mut Rng) -> Option<Earlier> {
        let n = self.advisable.len();
        (n > 0).then(|| {
            let i = rng.below(n as u64) as usize;
            self.advisable.swap_remove_back(i).expect("index in range")
        })
    }

    fn replay(&self, rng: &mut Rng) -> Option<Replayable> {
        let n = self.replayable.len();
        (n > 0).then(|| self.replayable[rng.below(n as u64) as usize].clone())
    }
}

/// One request ready to go.
#[derive(Debug, Clone)]
pub struct Planned {
    /// What is actually sent (a kind that needs an earlier request falls back to a purchase
    /// until there is one).
    pub kind: Kind,
    pub account: u32,
    pub path: &'static str,
    pub key: String,
    pub body: Bytes,
    /// What the answer may do to the balance; `None` for a duplicate (moves nothing again).
    pub op: Option<Op>,
    /// For a duplicate: the body of the first answer, which must come back identical.
    pub expected: Option<Bytes>,
    /// For an authorization: what to remember once it is answered.
    pub earlier: Option<Earlier>,
}

/// Builds requests for one run.
pub struct Traffic {
    pub prefix: String,
    pub currency: String,
    pub exponent: u8,
    pub sampler: AccountSampler,
    pub mix: crate::mix::Mix,
}

impl Traffic {
    pub fn new(cfg: &Config) -> Traffic {
        Traffic {
            prefix: cfg.user_prefix.clone(),
            currency: cfg.currency.clone(),
            exponent: cfg.exponent,
            sampler: AccountSampler::new(cfg.accounts, cfg.skew),
            mix: cfg.mix.clone(),
        }
    }

    pub fn user(&self, account: u32) -> String {
        format!("{}-{account}", self.prefix)
    }

    /// Plans request number `seq` (unique in the run: it names the transaction and the key).
    pub fn plan(&self, rng: &mut Rng, seq: u64, past: &Mutex<Past>) -> Planned {
        let kind = self.mix.pick(rng);
        let tx_id = format!("ctx-{}-{seq}", self.prefix);
        let key = format!("{}-{seq}", self.prefix);
        let u = unit(self.exponent);
        let fallback =
            |rng: &mut Rng| self.authorization(Kind::Purchase, rng, tx_id.clone(), key.clone(), u);
        match kind {
            Kind::Purchase | Kind::Withdrawal | Kind::Balance => {
                self.authorization(kind, rng, tx_id, key, u)
            }
            Kind::Refund | Kind::Adjustment => {
                let original = past.lock().expect("past").purchase(rng);
                let Some(o) = original else {
                    return fallback(rng);
                };
                let (path, tx_type, amount, credit) = match (kind, rng.chance(50)) {
                    (Kind::Refund, _) => (
                        ADJUST_CREDIT,
                        TransactionType::Refund,
                        rng.range(1, o.amount),
                        true,
                    ),
                    // Closing above the authorized amount: the difference is debited.
                    (_, true) => (
                        ADJUST_DEBIT,
                        TransactionType::Purchase,
                        rng.range(1, (o.amount / 10).max(1)),
                        false,
                    ),
                    // Closing below it: part of the purchase comes back.
                    (_, false) => (
                        ADJUST_CREDIT,
                        TransactionType::ReversalPurchase,
                        rng.range(1, o.amount),
                        true,
                    ),
                };
                let req = self.request(
                    &tx_id,
                    tx_type,
                    o.account,
                    amount,
                    Some(o.transaction_id),
                    PointType::Pos,
                );
                Planned {
                    kind,
                    account: o.account,
                    path,
                    key,
                    body: to_bytes(&req),
                    op: Some(Op::Adjust { amount, credit }),
                    expected: None,
                    earlier: None,
                }
            }
            Kind::Notification => {
                let target = past.lock().expect("past").take_advisable(rng);
                let Some(o) = target else {
                    return fallback(rng);
                };
                let approve = rng.chance(50);
                let (tx_type, point) = if o.withdrawal {
                    (TransactionType::Withdrawal, PointType::Atm)
                } else {
                    (TransactionType::Purchase, PointType::Pos)
                };
                let req =
                    self.request(&o.transaction_id, tx_type, o.account, o.amount, None, point);
                let n = Notification::advice(req, approve, "REJECTED_FRAUD", key.clone());
                Planned {
                    kind,
                    account: o.account,
                    path: NOTIFY,
                    key,
                    body: to_bytes(&n),
                    op: Some(Op::Advice {
                        amount: o.amount,
                        approve,
                        original_approved: o.approved,
                    }),
                    expected: None,
                    earlier: None,
                }
            }
            Kind::Duplicate => {
                let earlier = past.lock().expect("past").replay(rng);
                let Some(r) = earlier else {
                    return fallback(rng);
                };
                Planned {
                    kind,
                    account: r.account,
                    path: r.path,
                    key: r.key,
                    body: r.body,
                    op: None,
                    expected: Some(r.answer),
                    earlier: None,
                }
            }
        }
    }

    fn authorization(
        &self,
        kind: Kind,
        rng: &mut Rng,
        tx_id: String,
        key: String,
        u: i64,
    ) -> Planned {
        let account = self.sampler.sample(rng);
        let (path, tx_type, amount, point) = match kind {
            Kind::Withdrawal => (
                AUTHORIZE,
                TransactionType::Withdrawal,
                rng.range(1, 20) * 100 * u,
                PointType::Atm,
            ),
            Kind::Balance => (
                AUTHORIZE,
                TransactionType::BalanceInquiry,
                0,
                PointType::Pos,
            ),
            // Between 1.00 and 500.00, to the minor unit.
            _ => (
                AUTHORIZE_DEBIT,
                TransactionType::Purchase,
                rng.range(u, 500 * u),
                PointType::Pos,
            ),
        };
        let req = self.request(&tx_id, tx_type, account, amount, None, point);
        let (op, earlier) = match kind {
            Kind::Balance => (Op::Balance, None),
            _ => (
                Op::Debit { amount },
                Some(Earlier {
                    account,
                    transaction_id: tx_id,
                    amount,
                    withdrawal: kind == Kind::Withdrawal,
                    approved: false,
                }),
            ),
        };
        Planned {
            kind,
            account,
            path,
            key,
            body: to_bytes(&req),
            op: Some(op),
            expected: None,
            earlier,
        }
    }

    /// A request body shaped like the processor's (protocol section 5).
    pub fn request(
        &self,
        tx_id: &str,
        tx_type: TransactionType,
        account: u32,
        amount: i64,
        original: Option<String>,
        point: PointType,
    ) -> TransactionRequest {
        let user = self.user(account);
        let total = MoneyField {
            total: WireAmount::parse(&format_minor(amount, self.exponent))
                .expect("a formatted amount parses"),
            currency: self.currency.clone(),
        };
        TransactionRequest {
            transaction: TransactionInfo {
                id: tx_id.to_owned(),
                kind: tx_type,
                point_type: Some(point),
                entry_mode: Some(EntryMode::Contactless),
                origin: Some(Origin::Domestic),
                source: Some(Source::Online),
                country_code: Some("ARG".into()),
                local_date_time: Some("2024-01-01T10:00:00".into()),
                original_transaction_id: original,
            },
            merchant: Some(Merchant {
                id: Some("111111111111111".into()),
                mcc: Some("5045".into()),
                name: Some("Load test merchant".into()),
                terminal_id: Some("T1".into()),
                country: Some("ARG".into()),
                city: Some("CABA".into()),
                address: None,
            }),
            card: Some(CardRef {
                id: format!("crd-{user}"),
                product_type: Some(ProductType::Prepaid),
                provider: Some(Provider::Mastercard),
                last_four: Some("6708".into()),
            }),
            user: Some(UserRef { id: user }),
            amount: Amounts {
                local: total.clone(),
                transaction: Some(total.clone()),
                settlement: None,
                details: Some(vec![AmountDetail {
                    kind: Some("BASE".into()),
                    currency: Some(self.currency.clone()),
                    amount: Some(total.total),
                    name: Some("BASE".into()),
                }]),
            },
        }
    }
}

fn to_bytes<T: serde::Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("wire types serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Skew;

    fn traffic(mix: &str) -> Traffic {
        Traffic {
            prefix: "lg-t".into(),
            currency: "ARS".into(),
            exponent: 2,
            sampler: AccountSampler::new(10, Skew::Uniform),
            mix: mix.parse().unwrap(),
        }
    }

    #[test]
    fn purchases_are_wire_requests_with_exact_amounts() {
        let t = traffic("purchase=1");
        let past = Mutex::new(Past::default());
        let p = t.plan(&mut Rng::new(1), 7, &past);
        assert_eq!((p.kind, p.path), (Kind::Purchase, AUTHORIZE_DEBIT));
        let req = TransactionRequest::from_slice(&p.body).unwrap();
        assert_eq!(req.transaction.id, "ctx-lg-t-7");
        assert_eq!(p.key, "lg-t-7");
        assert_eq!(req.user.unwrap().id, format!("lg-t-{}", p.account));
        let Some(Op::Debit { amount }) = p.op else {
            panic!("{:?}", p.op)
        };
        assert!((100..=50_000).contains(&amount));
        assert_eq!(req.amount.local.total.text(), format_minor(amount, 2));
        // Amounts go out as JSON strings: nothing can reformat them on the way.
        assert!(
            std::str::from_utf8(&p.body)
                .unwrap()
                .contains(&format!("\"total\":\"{}\"", format_minor(amount, 2)))
        );
    }

    #[test]
    fn dependent_kinds_use_the_past_and_fall_back_without_one() {
        let t = traffic("refund=1,notification=1,duplicate=1");
        let past = Mutex::new(Past::default());
        let mut rng = Rng::new(3);
        let p = t.plan(&mut rng, 1, &past);
        assert_eq!(p.kind, Kind::Purchase, "nothing to refer to yet");
        past.lock().unwrap().answered(Earlier {
            account: 4,
            transaction_id: "ctx-x".into(),
            amount: 1000,
            withdrawal: false,
            approved: true,
        });
        past.lock().unwrap().replayable(Replayable {
            account: 4,
            path: AUTHORIZE_DEBIT,
            key: "k".into(),
            body: Bytes::from_static(b"{}"),
            answer: Bytes::from_static(b"{\"a\":1}"),
        });
        let mut seen = std::collections::HashSet::new();
        for seq in 2..60 {
            let p = t.plan(&mut rng, seq, &past);
            seen.insert(p.kind);
            match p.kind {
                Kind::Refund => {
                    let req = TransactionRequest::from_slice(&p.body).unwrap();
                    assert_eq!(
                        req.transaction.original_transaction_id.as_deref(),
                        Some("ctx-x")
                    );
                    assert_eq!(p.account, 4);
                    assert!(
                        matches!(p.op, Some(Op::Adjust { credit: true, amount }) if amount <= 1000)
                    );
                }
                Kind::Notification => {
                    let n = Notification::from_slice(&p.body).unwrap();
                    assert_eq!(n.event_detail.transaction.unwrap().id, "ctx-x");
                    assert_eq!(n.idempotency_key.as_deref(), Some(p.key.as_str()));
                }
                Kind::Duplicate => {
                    assert_eq!((p.key.as_str(), p.op), ("k", None));
                    assert_eq!(p.expected.as_deref(), Some(&b"{\"a\":1}"[..]));
                }
                Kind::Purchase => {}
                k => panic!("unexpected {k}"),
            }
        }
        assert!(seen.contains(&Kind::Refund) && seen.contains(&Kind::Duplicate));
        assert!(seen.contains(&Kind::Notification));
        // The one authorization got one advice; later notifications fell back to purchases.
        assert!(
            past.lock()
                .unwrap()
                .advisable
                .iter()
                .all(|e| e.transaction_id != "ctx-x")
        );
    }
}
