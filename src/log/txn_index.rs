//! The aborted-transaction index of a log (Kafka's `TransactionIndex`): for each aborted
//! transaction, its producer and offset range, so a read_committed fetch can tell the consumer
//! which records to drop.
//!
//! # Files
//! One `<20-digit base offset>.txnindex` per segment that holds abort markers, next to the
//! segment's other files, in Kafka's format: entries of 34 bytes, big-endian,
//! ```text
//! i16 version (0) | i64 producer id | i64 first offset | i64 last offset (the marker's)
//! | i64 last stable offset
//! ```
//! An entry lives in the segment that holds its marker (`last_offset`), so entries are in
//! marker order within and across files.
//!
//! # Invariants
//! - The index is a function of the log: the producer state's replay (open, truncation) derives
//!   every entry at or above its starting offset again, after [`TxnIndex::truncate_from`] has
//!   dropped them; below it the files are the record. A torn last entry is cut at load.
//! - Entries are kept in memory (aborted transactions are rare and small); files are only
//!   appended, or rewritten whole under a temporary name when a truncation or a compaction
//!   changes one. Appends are not fsynced one by one: [`TxnIndex::sync`] runs before the
//!   producer snapshot that would make the replay skip them (at a roll).
//! - A file whose segment is gone (a crash between a compaction's swap and its index rewrite)
//!   gives its entries to the segment that now covers its base offset.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::segment::{self, remove_if_present};
use super::LogError;

/// Suffix of aborted-transaction index files.
pub const TXN_INDEX_FILE_SUFFIX: &str = ".txnindex";
/// Bytes of one entry.
pub const ABORTED_TXN_BYTES: usize = 2 + 8 + 8 + 8 + 8;
/// Suffix of a file being rewritten.
const TEMPORARY_SUFFIX: &str = ".txnindex.tmp";

/// One aborted transaction on a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// Producer id.
    pub producer_id: i64,
    /// Offset of the transaction's first batch on the partition.
    pub first_offset: i64,
    /// Offset of its ABORT marker.
    pub last_offset: i64,
    /// The partition's first unstable offset once it was aborted (a search may stop at an
    /// entry whose value passes its upper bound).
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.first_offset.to_be_bytes());
        out.extend_from_slice(&self.last_offset.to_be_bytes());
        out.extend_from_slice(&self.last_stable_offset.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<AbortedTxn> {
        let field = |at: usize| -> Option<i64> {
            Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        Some(AbortedTxn {
            producer_id: field(2)?,
            first_offset: field(10)?,
            last_offset: field(18)?,
            last_stable_offset: field(26)?,
        })
    }
}

/// A segment's entries and whether its file has unsynced appends.
#[derive(Debug, Default)]
struct SegmentEntries {
    entries: Vec<AbortedTxn>,
    dirty: bool,
}

/// The aborted transactions of one log, by segment base offset. See the module documentation.
#[derive(Debug)]
pub struct TxnIndex {
    dir: PathBuf,
    segments: BTreeMap<i64, SegmentEntries>,
}

impl TxnIndex {
    /// An index with no entries for a log in `dir` (whose files are not read).
    pub fn empty(dir: &Path) -> TxnIndex {
        TxnIndex {
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
        }
    }

    /// Loads every `.txnindex` file in `dir` for a log whose segments start at `bases`
    /// (sorted): a file's entries go to the segment covering its base (or are dropped below
    /// the first segment); a torn tail is cut; files that changed are rewritten.
    pub fn load(dir: &Path, bases: &[i64]) -> Result<TxnIndex, LogError> {
        let mut index = TxnIndex::empty(dir);
        let mut files = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(base) = segment::parse_base_offset(&name, TXN_INDEX_FILE_SUFFIX) {
                files.push((base, entry.path()));
            } else if name.ends_with(TEMPORARY_SUFFIX) {
                remove_if_present(&entry.path())?;
            }
        }
        files.sort_unstable_by_key(|(base, _)| *base);
        let mut rewrite = Vec::new();
        for (base, path) in files {
            let bytes = fs::read(&path)?;
            let whole = bytes.len() / ABORTED_TXN_BYTES * ABORTED_TXN_BYTES;
            let entries: Vec<AbortedTxn> = bytes[..whole]
                .chunks_exact(ABORTED_TXN_BYTES)
                .filter_map(AbortedTxn::decode)
                .collect();
            let owner = bases.iter().rev().find(|b| **b <= base).copied();
            match owner {
                Some(owner) => {
                    if owner != base {
                        remove_if_present(&path)?;
                    }
                    if owner != base || whole != bytes.len() {
                        rewrite.push(owner);
                    }
                    index
                        .segments
                        .entry(owner)
                        .or_default()
                        .entries
                        .extend(entries);
                }
                None => remove_if_present(&path)?,
            }
        }
        for base in rewrite {
            index.rewrite(base)?;
        }
        Ok(index)
    }

    fn path(&self, base: i64) -> PathBuf {
        segment::file_path(&self.dir, base, "", TXN_INDEX_FILE_SUFFIX)
    }

    /// Records an aborted transaction whose marker is in the segment starting at
    /// `segment_base`.
    ///
    /// The entry is in memory (what reads use) even if the file write fails: the marker is
    /// already in the log, and the replay at the next open derives the entry again.
    pub fn append(&mut self, segment_base: i64, aborted: AbortedTxn) -> Result<(), LogError> {
        let entries = self.segments.entry(segment_base).or_default();
        entries.entries.push(aborted);
        entries.dirty = true;
        let mut bytes = Vec::with_capacity(ABORTED_TXN_BYTES);
        aborted.encode(&mut bytes);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(segment_base))?;
        file.write_all(&bytes)?;
        Ok(())
    }

    /// Fsyncs the files with unsynced appends.
    pub fn sync(&mut self) -> Result<(), LogError> {
        for (&base, entries) in &mut self.segments {
            if entries.dirty {
                let path = segment::file_path(&self.dir, base, "", TXN_INDEX_FILE_SUFFIX);
                if let Ok(file) = fs::File::open(&path) {
                    file.sync_all()?;
                }
                entries.dirty = false;
            }
        }
        Ok(())
    }

    /// Drops every entry whose marker is at or above `offset` (a truncation, or before the
    /// producer state's replay from `offset` derives them again).
    pub fn truncate_from(&mut self, offset: i64) -> Result<(), LogError> {
        let changed: Vec<i64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.entries.iter().any(|e| e.last_offset >= offset))
            .map(|(&base, _)| base)
            .collect();
        for base in changed {
            if let Some(entries) = self.segments.get_mut(&base) {
                entries.entries.retain(|e| e.last_offset < offset);
            }
            self.rewrite(base)?;
        }
        Ok(())
    }

    /// Forgets a deleted segment's entries and removes its file.
    pub fn remove_segment(&mut self, base: i64) -> Result<(), LogError> {
        self.segments.remove(&base);
        remove_if_present(&self.path(base))
    }

    /// Replaces the entries of the segments at `from` with `entries` under the segment at
    /// `into` (the log cleaner replaced them with one segment at `into`, which holds the
    /// markers of `entries`).
    pub fn replace(
        &mut self,
        from: &[i64],
        into: i64,
        mut entries: Vec<AbortedTxn>,
    ) -> Result<(), LogError> {
        for base in from {
            self.segments.remove(base);
        }
        entries.sort_by_key(|e| e.last_offset);
        self.segments.insert(
            into,
            SegmentEntries {
                entries,
                dirty: false,
            },
        );
        // The new file is written before the old ones go, so a crash in between leaves
        // entries that `load` folds into the owner (a superset, never a loss).
        self.rewrite(into)?;
        for &base in from {
            if base != into {
                remove_if_present(&self.path(base))?;
            }
        }
        Ok(())
    }

    /// Every entry, in marker order (tests and the cleaner).
    pub fn all(&self) -> Vec<AbortedTxn> {
        self.segments
            .values()
            .flat_map(|s| s.entries.iter().copied())
            .collect()
    }

    /// The aborted transactions that overlap the offsets `fetch_offset..upper_bound` (Kafka's
    /// `collectAbortedTxns`): marker at or above `fetch_offset`, first offset below
    /// `upper_bound`.
    pub fn collect(&self, fetch_offset: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        let mut found = Vec::new();
        let from = self
            .segments
            .range(..=fetch_offset)
            .next_back()
            .map_or(i64::MIN, |(&base, _)| base);
        for entries in self.segments.range(from..).map(|(_, s)| s) {
            for entry in &entries.entries {
                if entry.last_offset >= fetch_offset && entry.first_offset < upper_bound {
                    found.push(*entry);
                }
                // No transaction still open when this one aborted started below its last
                // stable offset, and none begun later starts below it either.
                if entry.last_stable_offset >= upper_bound {
                    return found;
                }
            }
        }
        found
    }

    /// Writes a segment's entries whole (temporary file, rename), or removes its file when it
    /// has none.
    fn rewrite(&mut self, base: i64) -> Result<(), LogError> {
        let path = self.path(base);
        let Some(entries) = self.segments.get_mut(&base) else {
            return remove_if_present(&path);
        };
        if entries.entries.is_empty() {
            self.segments.remove(&base);
            return remove_if_present(&path);
        }
        let mut bytes = Vec::with_capacity(entries.entries.len() * ABORTED_TXN_BYTES);
        for entry in &entries.entries {
            entry.encode(&mut bytes);
        }
        let temporary = segment::file_path(&self.dir, base, "", TEMPORARY_SUFFIX);
        {
            let mut file = fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        fs::rename(&temporary, &path)?;
        entries.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aborted(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn entries_survive_a_reload_in_kafkas_format_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxnIndex::empty(dir.path());
        index.append(0, aborted(7, 3, 9, 10)).unwrap();
        index.append(100, aborted(8, 95, 120, 121)).unwrap();
        index.sync().unwrap();
        let file = dir.path().join("00000000000000000000.txnindex");
        let bytes = fs::read(&file).unwrap();
        assert_eq!(bytes.len(), ABORTED_TXN_BYTES);
        assert_eq!(&bytes[..2], &[0, 0], "version 0");
        assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
        // A torn append: half an entry at the end.
        let mut torn = bytes.clone();
        torn.extend_from_slice(&bytes[..20]);
        fs::write(&file, &torn).unwrap();
        let loaded = TxnIndex::load(dir.path(), &[0, 100]).unwrap();
        assert_eq!(
            loaded.all(),
            vec![aborted(7, 3, 9, 10), aborted(8, 95, 120, 121)]
        );
        assert_eq!(fs::read(&file).unwrap().len(), ABORTED_TXN_BYTES);
    }

    #[test]
    fn collect_finds_overlapping_aborts_and_stops_at_the_upper_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxnIndex::empty(dir.path());
        index.append(0, aborted(1, 0, 5, 6)).unwrap();
        // Two interleaved: 2 opened at 7 while 3 (opened at 8) was still open.
        index.append(0, aborted(3, 8, 12, 7)).unwrap();
        index.append(10, aborted(2, 7, 14, 15)).unwrap();
        index.append(20, aborted(4, 30, 40, 41)).unwrap();
        let ids = |v: Vec<AbortedTxn>| v.iter().map(|a| a.producer_id).collect::<Vec<_>>();
        assert_eq!(ids(index.collect(0, 100)), vec![1, 3, 2, 4]);
        assert_eq!(ids(index.collect(6, 9)), vec![3, 2]);
        assert_eq!(ids(index.collect(13, 30)), vec![2]);
        assert_eq!(ids(index.collect(41, 100)), Vec::<i64>::new());
    }

    #[test]
    fn truncation_replacement_and_orphan_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxnIndex::empty(dir.path());
        index.append(0, aborted(1, 0, 5, 6)).unwrap();
        index.append(10, aborted(2, 10, 15, 16)).unwrap();
        index.append(20, aborted(3, 20, 25, 26)).unwrap();
        index.truncate_from(15).unwrap();
        assert_eq!(index.all(), vec![aborted(1, 0, 5, 6)]);
        assert!(!dir.path().join("00000000000000000010.txnindex").exists());
        index.append(10, aborted(2, 10, 15, 16)).unwrap();
        // A compaction keeps only the aborts whose data it kept.
        index
            .replace(&[0, 10], 0, vec![aborted(2, 10, 15, 16)])
            .unwrap();
        assert!(!dir.path().join("00000000000000000010.txnindex").exists());
        assert_eq!(
            TxnIndex::load(dir.path(), &[0]).unwrap().all(),
            vec![aborted(2, 10, 15, 16)]
        );
        // A file whose segment is gone is folded into the segment that covers it; one below
        // the first segment is dropped.
        let mut orphan = TxnIndex::empty(dir.path());
        orphan.append(30, aborted(9, 31, 33, 34)).unwrap();
        let loaded = TxnIndex::load(dir.path(), &[5, 25]).unwrap();
        assert_eq!(loaded.all(), vec![aborted(9, 31, 33, 34)]);
        assert!(dir.path().join("00000000000000000025.txnindex").exists());
        assert!(!dir.path().join("00000000000000000000.txnindex").exists());
    }
}
