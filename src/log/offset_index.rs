//! The sparse offset index of one segment (`<base offset>.index`), in Kafka's format.
//!
//! # Format
//! A sequence of 8-byte entries, big-endian, no header:
//! ```text
//! relative offset  i32   offset - segment base offset
//! position         i32   byte position in the .log file of the batch
//! ```
//! As in Kafka, an entry names a batch by its **last** offset: "the batch starting at
//! `position` ends at `offset`". A lookup for a target offset finds the greatest entry whose
//! offset is `<=` the target; the batch holding the target starts at that position or after it,
//! so the caller scans batch headers forward from there.
//!
//! # Invariants
//! - Offsets and positions strictly ascend; relative offsets and positions are in `0..=i32::MAX`.
//!   Asserted when appending; checked when loading (a bad file is discarded for a rebuild).
//! - The in-memory `entries` mirror the file exactly. The file is append-only and never
//!   preallocated, so there is nothing to trim on roll or close.
//! - At most `entries_max` (`segment.index.bytes / 8`) entries are added; the segment rolls when
//!   the index is full.
//! - One mutator at a time (the segment's writer); lookups may run concurrently with a write
//!   to the file because entries only become visible through `push_entries`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::BATCH_HEADER_BYTES;

/// Size of one entry.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;

/// One entry, with the offset made absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    /// Last offset of the batch at `position`.
    pub offset: i64,
    /// Byte position of that batch in the `.log` file.
    pub position: u32,
}

/// The `.index` file of one segment and its entries in memory.
#[derive(Debug)]
pub struct OffsetIndex {
    path: PathBuf,
    file: Arc<File>,
    base_offset: i64,
    entries: Vec<OffsetPosition>,
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

impl OffsetIndex {
    /// Creates an empty index at `path` (an existing file there is emptied: indexes are
    /// disposable).
    pub fn create(
        path: PathBuf,
        base_offset: i64,
        index_bytes_max: u32,
    ) -> io::Result<OffsetIndex> {
        let file = open_file(&path)?;
        file.set_len(0)?;
        Ok(OffsetIndex {
            path,
            file: Arc::new(file),
            base_offset,
            entries: Vec::new(),
            entries_max: index_bytes_max as usize / OFFSET_INDEX_ENTRY_BYTES,
        })
    }

    /// Opens (creating if missing) and loads the index. When the file is missing or fails a
    /// check, returns the problem and an empty index (file emptied): the caller rebuilds it from
    /// the log. `log_size_bytes` bounds what a valid file can hold, so a garbage file cannot
    /// cause a large allocation.
    pub fn open(
        path: PathBuf,
        base_offset: i64,
        index_bytes_max: u32,
        log_size_bytes: u64,
    ) -> io::Result<(OffsetIndex, Option<String>)> {
        let existed = path.exists();
        let file = open_file(&path)?;
        let mut index = OffsetIndex {
            path,
            file: Arc::new(file),
            base_offset,
            entries: Vec::new(),
            entries_max: index_bytes_max as usize / OFFSET_INDEX_ENTRY_BYTES,
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

    fn load(&self, log_size_bytes: u64) -> Result<Vec<OffsetPosition>, String> {
        let file_bytes = self
            .file
            .metadata()
            .map_err(|error| error.to_string())?
            .len();
        if file_bytes % OFFSET_INDEX_ENTRY_BYTES as u64 != 0 {
            return Err(format!("size {file_bytes} is not a multiple of 8"));
        }
        let count = file_bytes / OFFSET_INDEX_ENTRY_BYTES as u64;
        // Each entry names a distinct batch of at least 61 bytes.
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
        let mut previous: Option<OffsetPosition> = None;
        for chunk in raw.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let relative = i32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = i32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if relative < 0 || position < 0 {
                return Err(format!("negative entry ({relative}, {position})"));
            }
            let Some(offset) = self.base_offset.checked_add(i64::from(relative)) else {
                return Err(format!("relative offset {relative} overflows"));
            };
            let entry = OffsetPosition {
                offset,
                position: position as u32,
            };
            if u64::from(entry.position) >= log_size_bytes {
                return Err(format!(
                    "position {} beyond the {log_size_bytes}-byte log",
                    entry.position
                ));
            }
            if let Some(previous) = previous {
                if entry.offset <= previous.offset || entry.position <= previous.position {
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

    /// Maximum number of entries (`segment.index.bytes / 8`).
    pub fn entries_max(&self) -> usize {
        self.entries_max
    }

    /// Whether no more entries may be added (the segment must roll).
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.entries_max
    }

    /// The last entry.
    pub fn last_entry(&self) -> Option<OffsetPosition> {
        self.entries.last().copied()
    }

    /// All entries.
    pub fn entries(&self) -> &[OffsetPosition] {
        &self.entries
    }

    /// The greatest entry whose offset is `<=` `target_offset` (binary search).
    pub fn lookup(&self, target_offset: i64) -> Option<OffsetPosition> {
        let after = self
            .entries
            .partition_point(|entry| entry.offset <= target_offset);
        after.checked_sub(1).map(|index| self.entries[index])
    }

    fn assert_ascending(&self, new_entries: &[OffsetPosition]) {
        let mut previous = self.entries.last().copied();
        for entry in new_entries {
            assert!(entry.offset >= self.base_offset);
            assert!(entry.offset - self.base_offset <= i64::from(i32::MAX));
            assert!(entry.position <= i32::MAX as u32);
            if let Some(previous) = previous {
                assert!(
                    entry.offset > previous.offset && entry.position > previous.position,
                    "offset index entries must ascend: {previous:?} then {entry:?}"
                );
            }
            previous = Some(*entry);
        }
    }

    /// Phase one of an append: writes `new_entries` to the file (they are not yet visible to
    /// lookups). On error the file is cut back to the entries in memory.
    pub fn write_entries(&self, new_entries: &[OffsetPosition]) -> io::Result<()> {
        if new_entries.is_empty() {
            return Ok(());
        }
        self.assert_ascending(new_entries);
        let mut raw = Vec::with_capacity(new_entries.len() * OFFSET_INDEX_ENTRY_BYTES);
        for entry in new_entries {
            let relative = (entry.offset - self.base_offset) as i32;
            raw.extend_from_slice(&relative.to_be_bytes());
            raw.extend_from_slice(&(entry.position as i32).to_be_bytes());
        }
        let result = (&*self.file).write_all(&raw);
        if result.is_err() {
            // Best effort: the caller takes the log offline on this error anyway.
            let _ = self
                .file
                .set_len((self.entries.len() * OFFSET_INDEX_ENTRY_BYTES) as u64);
        }
        result
    }

    /// Phase two of an append: makes entries already written by
    /// [`OffsetIndex::write_entries`] visible.
    pub fn push_entries(&mut self, new_entries: &[OffsetPosition]) {
        self.assert_ascending(new_entries);
        self.entries.extend_from_slice(new_entries);
    }

    /// Appends one entry (both phases).
    pub fn append(&mut self, offset: i64, position: u32) -> io::Result<()> {
        let entry = [OffsetPosition { offset, position }];
        self.write_entries(&entry)?;
        self.push_entries(&entry);
        Ok(())
    }

    /// Removes every entry whose offset is `>=` `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        let keep = self.entries.partition_point(|entry| entry.offset < offset);
        self.entries.truncate(keep);
        self.file.set_len((keep * OFFSET_INDEX_ENTRY_BYTES) as u64)
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

    fn index_in(dir: &Path) -> OffsetIndex {
        OffsetIndex::create(dir.join("00000000000000000100.index"), 100, 80).expect("create")
    }

    #[test]
    fn lookup_finds_greatest_entry_not_above_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = index_in(dir.path());
        assert_eq!(index.lookup(150), None);
        index.append(104, 0).expect("append");
        index.append(110, 500).expect("append");
        index.append(120, 900).expect("append");
        assert_eq!(index.lookup(99), None);
        assert_eq!(index.lookup(103), None);
        assert_eq!(index.lookup(104).map(|e| e.position), Some(0));
        assert_eq!(index.lookup(109).map(|e| e.position), Some(0));
        assert_eq!(index.lookup(110).map(|e| e.position), Some(500));
        assert_eq!(index.lookup(119).map(|e| e.position), Some(500));
        assert_eq!(index.lookup(1000).map(|e| e.position), Some(900));
    }

    #[test]
    fn reload_round_trips_and_truncate_cuts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.index");
        {
            let mut index = index_in(dir.path());
            for i in 0..5u32 {
                index
                    .append(100 + i64::from(i) * 10, i * 100)
                    .expect("append");
            }
            index.truncate_to(130).expect("truncate");
            assert_eq!(index.len(), 3);
        }
        let (index, problem) = OffsetIndex::open(path, 100, 80, 10_000).expect("open");
        assert_eq!(problem, None);
        assert_eq!(
            index.entries(),
            &[
                OffsetPosition {
                    offset: 100,
                    position: 0
                },
                OffsetPosition {
                    offset: 110,
                    position: 100
                },
                OffsetPosition {
                    offset: 120,
                    position: 200
                },
            ]
        );
    }

    #[test]
    fn full_at_entries_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = index_in(dir.path());
        assert_eq!(index.entries_max(), 10);
        for i in 0..10u32 {
            assert!(!index.is_full());
            index.append(100 + i64::from(i), i * 100).expect("append");
        }
        assert!(index.is_full());
    }

    #[test]
    fn bad_files_are_reported_and_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.index");
        // Missing.
        let (_, problem) = OffsetIndex::open(path.clone(), 0, 80, 10_000).expect("open");
        assert_eq!(problem.as_deref(), Some("missing"));
        // Not a multiple of 8.
        std::fs::write(&path, [0u8; 7]).expect("write");
        let (index, problem) = OffsetIndex::open(path.clone(), 0, 80, 10_000).expect("open");
        assert!(problem.is_some());
        assert!(index.is_empty());
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
        // Descending entries.
        let mut raw = Vec::new();
        for (relative, position) in [(5i32, 100i32), (3, 200)] {
            raw.extend_from_slice(&relative.to_be_bytes());
            raw.extend_from_slice(&position.to_be_bytes());
        }
        std::fs::write(&path, &raw).expect("write");
        let (_, problem) = OffsetIndex::open(path.clone(), 0, 80, 10_000).expect("open");
        assert!(problem.expect("problem").contains("ascend"));
        // Position past the end of the log.
        std::fs::write(&path, &raw[..8]).expect("write");
        let (_, problem) = OffsetIndex::open(path.clone(), 0, 80, 100).expect("open");
        assert!(problem.is_some());
        // More entries than the log could hold.
        std::fs::write(&path, vec![0u8; 8 * 100]).expect("write");
        let (_, problem) = OffsetIndex::open(path, 0, 80, 1000).expect("open");
        assert!(problem.is_some());
    }

    #[test]
    #[should_panic(expected = "ascend")]
    fn appending_out_of_order_asserts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = index_in(dir.path());
        index.append(110, 100).expect("append");
        let _ = index.append(105, 200);
    }
}
