//! The sparse time index of one segment (`<base offset>.timeindex`), in Kafka's format.
//!
//! # Format
//! A sequence of 12-byte entries, big-endian, no header:
//! ```text
//! timestamp        i64   largest record timestamp in the segment so far
//! relative offset  i32   (offset - segment base offset) of a batch holding that timestamp
//! ```
//! An entry `(T, O)` says: T is the largest timestamp of every record up to the batch holding
//! O, and that batch is the first to reach T. So every record before that batch has a timestamp
//! below T, and the first record with a timestamp `>= target` is at or after the batch of the
//! greatest entry with `T <= target`.
//!
//! # Invariants
//! - Timestamps and offsets strictly ascend (an entry is only added when the segment's max
//!   timestamp grows, which only a later batch can do). Asserted when appending; checked when
//!   loading (a bad file is discarded for a rebuild).
//! - Timestamps are never negative (`-1` is Kafka's "no timestamp" and is never indexed).
//! - The in-memory `entries` mirror the file; append-only, never preallocated.
//! - At most `entries_max` (`segment.index.bytes / 12`) entries are added on the append path; the
//!   one entry written when the segment becomes inactive may exceed it, as in Kafka.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::BATCH_HEADER_BYTES;

/// Size of one entry.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

/// One entry, with the offset made absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Largest timestamp so far.
    pub timestamp_ms: i64,
    /// An offset in the first batch that reached it.
    pub offset: i64,
}

/// The `.timeindex` file of one segment and its entries in memory.
#[derive(Debug)]
pub struct TimeIndex {
    path: PathBuf,
    file: Arc<File>,
    base_offset: i64,
    entries: Vec<TimestampOffset>,
    entries_max: usize,
}

/// Opens for reads and appends, creating if missing (emptying is done with `set_len`, as
/// append mode excludes truncate-on-open).
fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

impl TimeIndex {
    /// Creates an empty index at `path` (an existing file there is emptied).
    pub fn create(path: PathBuf, base_offset: i64, index_bytes_max: u32) -> io::Result<TimeIndex> {
        let file = open_file(&path)?;
        file.set_len(0)?;
        Ok(TimeIndex {
            path,
            file: Arc::new(file),
            base_offset,
            entries: Vec::new(),
            entries_max: index_bytes_max as usize / TIME_INDEX_ENTRY_BYTES,
        })
    }

    /// Opens (creating if missing) and loads the index. When the file is missing or fails a
    /// check, returns the problem and an empty index (file emptied) for the caller to rebuild.
    pub fn open(
        path: PathBuf,
        base_offset: i64,
        index_bytes_max: u32,
        log_size_bytes: u64,
    ) -> io::Result<(TimeIndex, Option<String>)> {
        let existed = path.exists();
        let file = open_file(&path)?;
        let mut index = TimeIndex {
            path,
            file: Arc::new(file),
            base_offset,
            entries: Vec::new(),
            entries_max: index_bytes_max as usize / TIME_INDEX_ENTRY_BYTES,
        };
        let problem = if existed {
            match index.load(log_size_bytes) {
                Ok(entries) => {
                    index.entries = entries;
                    None
                }
                Err(problem) => Some(problem),
            }
        } else {
            Some("missing".to_string())
        };
        if problem.is_some() {
            index.reset()?;
        }
        Ok((index, problem))
    }

    fn load(&self, log_size_bytes: u64) -> Result<Vec<TimestampOffset>, String> {
        let file_bytes = self
            .file
            .metadata()
            .map_err(|error| error.to_string())?
            .len();
        if file_bytes % TIME_INDEX_ENTRY_BYTES as u64 != 0 {
            return Err(format!("size {file_bytes} is not a multiple of 12"));
        }
        let count = file_bytes / TIME_INDEX_ENTRY_BYTES as u64;
        if count > log_size_bytes / BATCH_HEADER_BYTES as u64 {
            return Err(format!(
                "{count} entries cannot index a {log_size_bytes}-byte log"
            ));
        }
        let mut raw = vec![0u8; file_bytes as usize];
        self.file
            .read_exact_at(&mut raw, 0)
            .map_err(|error| error.to_string())?;
        let mut entries = Vec::with_capacity(count as usize);
        let mut previous: Option<TimestampOffset> = None;
        for chunk in raw.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let mut timestamp = [0u8; 8];
            timestamp.copy_from_slice(&chunk[..8]);
            let timestamp_ms = i64::from_be_bytes(timestamp);
            let relative = i32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if relative < 0 || timestamp_ms < 0 {
                return Err(format!("negative entry ({timestamp_ms}, {relative})"));
            }
            let Some(offset) = self.base_offset.checked_add(i64::from(relative)) else {
                return Err(format!("relative offset {relative} overflows"));
            };
            let entry = TimestampOffset {
                timestamp_ms,
                offset,
            };
            if let Some(previous) = previous {
                if entry.timestamp_ms <= previous.timestamp_ms || entry.offset <= previous.offset {
                    return Err(format!(
                        "entries do not ascend: {previous:?} then {entry:?}"
                    ));
                }
            }
            previous = Some(entry);
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file handle, for an fsync without holding any lock.
    pub fn file_handle(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Maximum number of entries on the append path (`segment.index.bytes / 12`).
    pub fn entries_max(&self) -> usize {
        self.entries_max
    }

    /// Whether no more entries may be added on the append path (the segment must roll).
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.entries_max
    }

    /// The last entry.
    pub fn last_entry(&self) -> Option<TimestampOffset> {
        self.entries.last().copied()
    }

    /// All entries.
    pub fn entries(&self) -> &[TimestampOffset] {
        &self.entries
    }

    /// Whether an entry with this timestamp would be added (Kafka's `maybeAppend` rule: only
    /// when the timestamp grows, never for "no timestamp").
    pub fn accepts(&self, timestamp_ms: i64) -> bool {
        timestamp_ms >= 0
            && self
                .entries
                .last()
                .is_none_or(|last| timestamp_ms > last.timestamp_ms)
    }

    /// The greatest entry whose timestamp is `<=` `target_ms` (binary search).
    pub fn lookup(&self, target_ms: i64) -> Option<TimestampOffset> {
        let after = self
            .entries
            .partition_point(|entry| entry.timestamp_ms <= target_ms);
        after.checked_sub(1).map(|index| self.entries[index])
    }

    fn assert_ascending(&self, new_entries: &[TimestampOffset]) {
        let mut previous = self.entries.last().copied();
        for entry in new_entries {
            assert!(entry.timestamp_ms >= 0);
            assert!(entry.offset >= self.base_offset);
            assert!(entry.offset - self.base_offset <= i64::from(i32::MAX));
            if let Some(previous) = previous {
                assert!(
                    entry.timestamp_ms > previous.timestamp_ms && entry.offset > previous.offset,
                    "time index entries must ascend: {previous:?} then {entry:?}"
                );
            }
            previous = Some(*entry);
        }
    }

    /// Phase one of an append: writes `new_entries` to the file (not yet visible to lookups).
    /// On error the file is cut back to the entries in memory.
    pub fn write_entries(&self, new_entries: &[TimestampOffset]) -> io::Result<()> {
        if new_entries.is_empty() {
            return Ok(());
        }
        self.assert_ascending(new_entries);
        let mut raw = Vec::with_capacity(new_entries.len() * TIME_INDEX_ENTRY_BYTES);
        for entry in new_entries {
            raw.extend_from_slice(&entry.timestamp_ms.to_be_bytes());
            raw.extend_from_slice(&((entry.offset - self.base_offset) as i32).to_be_bytes());
        }
        let result = (&*self.file).write_all(&raw);
        if result.is_err() {
            // Best effort: the caller takes the log offline on this error anyway.
            let _ = self
                .file
                .set_len((self.entries.len() * TIME_INDEX_ENTRY_BYTES) as u64);
        }
        result
    }

    /// Phase two of an append: makes entries written by [`TimeIndex::write_entries`] visible.
    pub fn push_entries(&mut self, new_entries: &[TimestampOffset]) {
        self.assert_ascending(new_entries);
        self.entries.extend_from_slice(new_entries);
    }

    /// Appends one entry (both phases).
    pub fn append(&mut self, timestamp_ms: i64, offset: i64) -> io::Result<()> {
        let entry = [TimestampOffset {
            timestamp_ms,
            offset,
        }];
        self.write_entries(&entry)?;
        self.push_entries(&entry);
        Ok(())
    }

    /// Removes every entry whose offset is `>=` `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        let keep = self.entries.partition_point(|entry| entry.offset < offset);
        self.entries.truncate(keep);
        self.file.set_len((keep * TIME_INDEX_ENTRY_BYTES) as u64)
    }

    /// Removes every entry.
    pub fn reset(&mut self) -> io::Result<()> {
        self.entries.clear();
        self.file.set_len(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000050.timeindex");
        {
            let mut index = TimeIndex::create(path.clone(), 50, 120).expect("create");
            assert_eq!(index.entries_max(), 10);
            assert!(index.accepts(0));
            assert!(!index.accepts(-1));
            index.append(1000, 52).expect("append");
            index.append(2000, 60).expect("append");
            index.append(3000, 75).expect("append");
            assert!(!index.accepts(3000));
            assert!(index.accepts(3001));
            assert_eq!(index.lookup(999), None);
            assert_eq!(index.lookup(1000).map(|e| e.offset), Some(52));
            assert_eq!(index.lookup(2999).map(|e| e.offset), Some(60));
            assert_eq!(index.lookup(i64::MAX).map(|e| e.offset), Some(75));
            index.truncate_to(75).expect("truncate");
        }
        let (index, problem) = TimeIndex::open(path.clone(), 50, 120, 10_000).expect("open");
        assert_eq!(problem, None);
        assert_eq!(index.len(), 2);
        assert_eq!(
            index.last_entry(),
            Some(TimestampOffset {
                timestamp_ms: 2000,
                offset: 60
            })
        );
        // A non-ascending file is discarded.
        let mut raw = Vec::new();
        for (timestamp, relative) in [(5i64, 1i32), (5, 2)] {
            raw.extend_from_slice(&timestamp.to_be_bytes());
            raw.extend_from_slice(&relative.to_be_bytes());
        }
        std::fs::write(&path, &raw).expect("write");
        let (index, problem) = TimeIndex::open(path, 50, 120, 10_000).expect("open");
        assert!(problem.is_some());
        assert!(index.is_empty());
    }

    #[test]
    #[should_panic(expected = "ascend")]
    fn appending_a_smaller_timestamp_asserts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.timeindex");
        let mut index = TimeIndex::create(path, 0, 120).expect("create");
        index.append(10, 1).expect("append");
        let _ = index.append(9, 2);
    }
}
