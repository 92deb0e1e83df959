//! Partitions of a business date by transaction id, so that matching holds one
//! partition of the ledger in memory at a time, whatever the size of the day.
//!
//! Both sides are split by a hash of the transaction id into the same number of
//! partitions (a partitioned hash join, as a database does when a join does not fit its
//! memory). Every row that can meet a ledger entry lands in that entry's partition: the
//! file rows and presentments of an id, and the links of the adjustments whose original
//! is that id. Each partition is then matched on its own by [`ledger::reconcile::Matcher`]
//! and the reports are merged; see `Matcher::add_adjustment_link`.
//!
//! A partition's records are kept in memory when the day fits one partition, and
//! spilled to files in the staging directory otherwise. Records are a small binary
//! form (about 30 bytes plus the id), written and read in order, so duplicates keep
//! their first occurrence.

use anyhow::Context;
use ledger::Currency;
use ledger::reconcile::{EntryKind, FileTransaction, LedgerEntry, Presentment};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Partition of `id` among `parts`: FNV-1a, then a full avalanche so that ids differing
/// in their last digits spread evenly.
pub fn part_of(id: &[u8], parts: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % parts.max(1) as u64) as usize
}

/// How many partitions a day needs so that one holds at most about `per_part` ledger
/// entries (the file side is counted too, from its size, in case the ledger is small
/// and the file is not: its unknown ids are held while matching).
pub fn parts_for(ledger_entries: u64, file_bytes: u64, per_part: u64) -> usize {
    let per_part = per_part.max(1);
    // A transactions row is rarely shorter than this.
    let file_rows = file_bytes / 64;
    let n = ledger_entries.max(file_rows);
    usize::try_from(n.div_ceil(per_part))
        .unwrap_or(usize::MAX)
        .max(1)
}

const ENTRY: u8 = 0;
const LINK: u8 = 1;
const TRANSACTION: u8 = 2;
const PRESENTMENT: u8 = 3;

/// `Rec::flag` of a ledger entry or a link: bit 0 effective (entries only), bit 1 a refund.
fn entry_flag(effective: bool, refund: bool) -> u8 {
    u8::from(effective) | (u8::from(refund) << 1)
}

/// One record; `n` is the booking time of a ledger entry or the line of a file row.
struct Rec<'a> {
    tag: u8,
    kind: EntryKind,
    /// A file row: approved (1) or not. A ledger entry or a link: [`entry_flag`].
    flag: u8,
    currency: Currency,
    amount: i64,
    n: i64,
    id: &'a str,
}

const HEADER: usize = 1 + 1 + 1 + 2 + 8 + 8 + 4;

enum Sink {
    Memory(Vec<u8>),
    File(BufWriter<File>),
}

/// The records of one side of the day, by partition.
pub struct Spill {
    sinks: Vec<Sink>,
    paths: Vec<Option<PathBuf>>,
    /// Ledger entries per partition (to size each partition's tables).
    pub entries: Vec<u64>,
    currencies: Vec<Currency>,
    buf: Vec<u8>,
}

/// Where each of a day's files starts in the line numbers the matcher sees. A day may have
/// several files of a kind (`presentments_{date}_1.csv`, `_2.csv`): each one's lines are
/// counted on from the last line of the one before, so that a line names one row of the
/// day (the matcher pairs a presentment with its break by line). The first file of a kind
/// starts at 0: a day of one file per kind keeps the files' own line numbers.
#[derive(Debug, Clone, Default)]
pub struct LineBases {
    /// Kind (`"transactions"`, `"presentments"`), file name, base; in reading order.
    files: Vec<(&'static str, String, u64)>,
}

impl LineBases {
    /// Notes that `name`, of `kind`, is read next from `base`.
    pub fn start(&mut self, kind: &'static str, name: &str, base: u64) {
        self.files.push((kind, name.to_owned(), base));
    }

    /// The file a matcher line of `kind` stands in, as a report names it (the kind, when the
    /// day has one file of it; else the file's name), and the line within that file.
    pub fn locate(&self, kind: &str, line: u64) -> (String, u64) {
        let of_kind: Vec<_> = self.files.iter().filter(|(k, ..)| *k == kind).collect();
        let Some(first) = of_kind.first() else {
            return (kind.to_owned(), line);
        };
        let (_, name, base) = (of_kind.iter().rev())
            .find(|(_, _, base)| *base < line)
            .unwrap_or(first);
        let label = if of_kind.len() > 1 {
            name.clone()
        } else {
            kind.to_owned()
        };
        (label, line - base)
    }
}

/// The directory of a run's spilled partitions (its own, even when runs of several
/// databases share a staging directory), removed when dropped.
pub struct SpillDir(tempfile::TempDir);

impl SpillDir {
    pub fn create(parent: &Path) -> anyhow::Result<SpillDir> {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(".partitions-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
        Ok(SpillDir(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Spill {
    /// `parts` partitions, in memory when `dir` is `None`, else as files `dir/{side}-{i}`.
    pub fn new(parts: usize, dir: Option<&Path>, side: &str) -> anyhow::Result<Spill> {
        let mut sinks = Vec::with_capacity(parts);
        let mut paths = Vec::with_capacity(parts);
        for i in 0..parts {
            match dir {
                None => {
                    sinks.push(Sink::Memory(Vec::new()));
                    paths.push(None);
                }
                Some(d) => {
                    let p = d.join(format!("{side}-{i}"));
                    let f = File::create(&p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                    sinks.push(Sink::File(BufWriter::with_capacity(32 * 1024, f)));
                    paths.push(Some(p));
                }
            }
        }
        Ok(Spill {
            sinks,
            paths,
            entries: vec![0; parts],
            currencies: Vec::new(),
            buf: Vec::with_capacity(256),
        })
    }

    pub fn parts(&self) -> usize {
        self.sinks.len()
    }

    fn currency_index(&mut self, c: Currency) -> anyhow::Result<u16> {
        let i = match self.currencies.iter().position(|x| *x == c) {
            Some(i) => i,
            None => {
                self.currencies.push(c);
                self.currencies.len() - 1
            }
        };
        u16::try_from(i).context("more currencies in a day than a partition record holds")
    }

    fn put(&mut self, part: usize, r: Rec<'_>) -> anyhow::Result<()> {
        let cur = self.currency_index(r.currency)?;
        let id = r.id.as_bytes();
        let len = u32::try_from(id.len()).context("transaction id too long")?;
        self.buf.clear();
        self.buf.push(r.tag);
        self.buf.push(match r.kind {
            EntryKind::Authorization => 0,
            EntryKind::Adjustment => 1,
        });
        self.buf.push(r.flag);
        self.buf.extend_from_slice(&cur.to_le_bytes());
        self.buf.extend_from_slice(&r.amount.to_le_bytes());
        self.buf.extend_from_slice(&r.n.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(id);
        match &mut self.sinks[part] {
            Sink::Memory(v) => v.extend_from_slice(&self.buf),
            Sink::File(w) => w
                .write_all(&self.buf)
                .context("cannot write a partition to the staging directory")?,
        }
        Ok(())
    }

    /// A ledger entry, in its id's partition; an effective adjustment's link goes to
    /// the partition of the authorization it adjusts.
    pub fn ledger(&mut self, e: &LedgerEntry) -> anyhow::Result<()> {
        let parts = self.parts();
        let part = part_of(e.transaction_id.as_bytes(), parts);
        self.entries[part] += 1;
        self.put(
            part,
            Rec {
                tag: ENTRY,
                kind: e.kind,
                flag: entry_flag(e.effective, e.refund),
                currency: e.currency,
                amount: e.amount_minor,
                n: e.booked_at_ms,
                id: &e.transaction_id,
            },
        )?;
        if e.kind == EntryKind::Adjustment
            && e.effective
            && let Some(orig) = e.original_transaction_id.as_deref()
        {
            self.put(
                part_of(orig.as_bytes(), parts),
                Rec {
                    tag: LINK,
                    kind: EntryKind::Adjustment,
                    flag: entry_flag(false, e.refund),
                    currency: e.currency,
                    amount: e.amount_minor,
                    n: 0,
                    id: orig,
                },
            )?;
        }
        Ok(())
    }

    /// Spills one row; its line is counted from `base` (see [`LineBases`]).
    pub fn transaction(&mut self, t: &FileTransaction, base: u64) -> anyhow::Result<()> {
        let part = part_of(t.transaction_id.as_bytes(), self.parts());
        self.put(
            part,
            Rec {
                tag: TRANSACTION,
                kind: t.kind,
                flag: u8::from(t.approved),
                currency: t.currency,
                amount: t.amount_minor,
                n: i64::try_from(t.line.saturating_add(base)).unwrap_or(i64::MAX),
                id: &t.transaction_id,
            },
        )
    }

    /// Spills one row; its line is counted from `base` (see [`LineBases`]).
    pub fn presentment(&mut self, p: &Presentment, base: u64) -> anyhow::Result<()> {
        let part = part_of(p.transaction_id.as_bytes(), self.parts());
        self.put(
            part,
            Rec {
                tag: PRESENTMENT,
                kind: EntryKind::Authorization,
                flag: 0,
                currency: p.currency,
                amount: p.amount_minor,
                n: i64::try_from(p.line.saturating_add(base)).unwrap_or(i64::MAX),
                id: &p.transaction_id,
            },
        )
    }

    /// Ends writing: the partitions, ready to be read one by one.
    pub fn finish(self) -> anyhow::Result<Written> {
        let mut parts = Vec::with_capacity(self.sinks.len());
        for (sink, path) in self.sinks.into_iter().zip(self.paths) {
            parts.push(match sink {
                Sink::Memory(v) => Part::Memory(v),
                Sink::File(mut w) => {
                    w.flush()
                        .context("cannot write a partition to the staging directory")?;
                    drop(w);
                    Part::File(path.unwrap_or_default())
                }
            });
        }
        Ok(Written {
            parts,
            entries: self.entries,
            currencies: self.currencies,
        })
    }
}

enum Part {
    Memory(Vec<u8>),
    File(PathBuf),
}

/// One side of the day, written.
pub struct Written {
    parts: Vec<Part>,
    pub entries: Vec<u64>,
    currencies: Vec<Currency>,
}

/// A record read back.
pub enum Record {
    Entry(LedgerEntry),
    Link {
        original: String,
        currency: Currency,
        amount_minor: i64,
        refund: bool,
    },
    Transaction(FileTransaction),
    Presentment(Presentment),
}

impl Written {
    /// Takes partition `i` out (its memory is freed once read), to be read with
    /// [`PartReader`].
    pub fn take(&mut self, i: usize) -> anyhow::Result<PartReader> {
        let part = std::mem::replace(&mut self.parts[i], Part::Memory(Vec::new()));
        let input: Box<dyn Read + Send> = match part {
            Part::Memory(v) => Box::new(std::io::Cursor::new(v)),
            Part::File(p) => {
                let f = File::open(&p).with_context(|| format!("cannot open {}", p.display()))?;
                // Read once: the file is not needed afterwards.
                let _ = std::fs::remove_file(&p);
                Box::new(BufReader::with_capacity(64 * 1024, f))
            }
        };
        Ok(PartReader {
            input,
            currencies: self.currencies.clone(),
            id: Vec::with_capacity(64),
        })
    }

    pub fn parts(&self) -> usize {
        self.parts.len()
    }
}

pub struct PartReader {
    input: Box<dyn Read + Send>,
    currencies: Vec<Currency>,
    id: Vec<u8>,
}

impl PartReader {
    /// The next record, `None` at the end.
    pub fn next_record(&mut self) -> anyhow::Result<Option<Record>> {
        let mut h = [0u8; HEADER];
        // A clean end is an end before a header; a partial header is damage.
        let mut got = 0;
        while got < HEADER {
            let n = self
                .input
                .read(&mut h[got..])
                .context("cannot read a partition")?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                anyhow::bail!("a partition file ends inside a record");
            }
            got += n;
        }
        let le8 = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            i64::from_le_bytes(a)
        };
        let tag = h[0];
        let kind = if h[1] == 1 {
            EntryKind::Adjustment
        } else {
            EntryKind::Authorization
        };
        let flag = h[2];
        let cur = usize::from(u16::from_le_bytes([h[3], h[4]]));
        let currency = *self
            .currencies
            .get(cur)
            .context("a partition names an unknown currency")?;
        let amount = le8(&h[5..13]);
        let n = le8(&h[13..21]);
        let len = u32::from_le_bytes([h[21], h[22], h[23], h[24]]) as usize;
        self.id.resize(len, 0);
        self.input
            .read_exact(&mut self.id)
            .context("a partition file ends inside a record")?;
        let id = std::str::from_utf8(&self.id)
            .context("a partition holds an id that is not UTF-8")?
            .to_owned();
        let line = u64::try_from(n).unwrap_or(0);
        Ok(Some(match tag {
            ENTRY => Record::Entry(LedgerEntry {
                transaction_id: id.into_boxed_str(),
                kind,
                effective: flag & entry_flag(true, false) != 0,
                currency,
                amount_minor: amount,
                // Linked through the partition of the original (a Link record).
                original_transaction_id: None,
                booked_at_ms: n,
                refund: flag & entry_flag(false, true) != 0,
            }),
            LINK => Record::Link {
                original: id,
                currency,
                amount_minor: amount,
                refund: flag & entry_flag(false, true) != 0,
            },
            TRANSACTION => Record::Transaction(FileTransaction {
                line,
                transaction_id: id,
                kind,
                approved: flag != 0,
                currency,
                amount_minor: amount,
                original_transaction_id: None,
            }),
            PRESENTMENT => Record::Presentment(Presentment {
                line,
                transaction_id: id,
                currency,
                amount_minor: amount,
            }),
            other => anyhow::bail!("a partition holds a record of unknown type {other}"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_located_in_its_file() {
        let mut b = LineBases::default();
        b.start("transactions", "transactions_20240301.csv", 0);
        b.start("presentments", "presentments_20240301_1.csv", 0);
        b.start("presentments", "presentments_20240301_2.csv", 7);
        let at = |kind, line| b.locate(kind, line);
        // One file of its kind: named by the kind, its own lines.
        assert_eq!(at("transactions", 9), ("transactions".into(), 9));
        assert_eq!(
            at("presentments", 7),
            ("presentments_20240301_1.csv".into(), 7)
        );
        assert_eq!(
            at("presentments", 9),
            ("presentments_20240301_2.csv".into(), 2)
        );
        assert_eq!(at("other", 3), ("other".into(), 3));
    }

    #[test]
    fn ids_spread_over_the_partitions() {
        let parts = 8;
        let mut counts = vec![0u32; parts];
        for i in 0..80_000 {
            counts[part_of(format!("ctx-{i}").as_bytes(), parts)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{c}");
        }
        assert_eq!(part_of(b"anything", 1), 0);
    }

    #[test]
    fn partitions_needed() {
        assert_eq!(parts_for(0, 0, 400_000), 1);
        assert_eq!(parts_for(400_000, 0, 400_000), 1);
        assert_eq!(parts_for(400_001, 0, 400_000), 2);
        assert_eq!(parts_for(10_000_000, 0, 400_000), 25);
        assert_eq!(parts_for(10, 64 * 800_000, 400_000), 2);
    }
}
