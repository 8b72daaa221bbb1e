//! The leader epoch cache of one partition: which leader epoch began at which offset, Kafka's
//! `leader-epoch-checkpoint` file.
//!
//! Replication needs it twice (KIP-101, KIP-279, KIP-320): a leader answers "where does epoch
//! E end in your log?" (OffsetForLeaderEpoch, and Fetch's diverging-epoch field) from it, and a
//! follower that comes back truncates its log to the first offset where its history differs
//! from the leader's. Entries are `(epoch, start_offset)` with both strictly increasing; the
//! end offset of epoch E is the start offset of the next epoch, or the log end offset for the
//! latest one.
//!
//! File format (Kafka's, so Kafka tools read it): a line with the version `0`, a line with the
//! entry count, then one `epoch start_offset` line per entry. It is rewritten whole, through a
//! temporary file, an fsync and a rename, whenever it changes; a missing or unreadable file
//! reads as empty (the cache is rebuilt from the batches' leader epochs when the log is
//! recovered).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The checkpoint file's name inside a partition directory.
pub const FILE_NAME: &str = "leader-epoch-checkpoint";

/// One epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// The first offset of the epoch.
    pub start_offset: i64,
}

/// Why the checkpoint file could not be read (it is then ignored and rebuilt).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("leader epoch checkpoint i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not in Kafka's format.
    #[error("malformed leader epoch checkpoint: {0}")]
    Malformed(String),
}

/// The cache (see the module doc). Not synchronised: the partition log owns it under its lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// An empty cache.
    pub fn new() -> LeaderEpochCache {
        LeaderEpochCache::default()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The latest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` wrote at `start_offset`. An epoch newer than the latest starts a new
    /// entry; the latest epoch again, or an older one (a replicated batch of an epoch already
    /// known), changes nothing. Returns whether the cache changed (the caller then persists it).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(last) if epoch <= last.epoch => false,
            Some(last) if start_offset <= last.start_offset => {
                // A newer epoch starting where (or before) an older one started: the older
                // wrote nothing that survived. Drop what the new epoch overrides, as Kafka
                // does.
                self.entries.retain(|e| e.start_offset < start_offset);
                self.entries.push(EpochEntry {
                    epoch,
                    start_offset,
                });
                true
            }
            _ => {
                self.entries.push(EpochEntry {
                    epoch,
                    start_offset,
                });
                true
            }
        }
    }

    /// Kafka's `endOffsetFor`: for a requested epoch, the largest epoch `<=` it that the cache
    /// knows and the offset where that epoch ended (the start of the next epoch, or
    /// `log_end_offset` for the latest). When the requested epoch is older than every entry,
    /// the requested epoch itself and the start of the first known epoch (everything from there
    /// on belongs to later epochs, so a log that has the requested epoch diverges there at the
    /// latest). `None` only for an empty cache.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let Some(index) = self.entries.iter().rposition(|e| e.epoch <= epoch) else {
            return self
                .entries
                .first()
                .map(|first| (epoch, first.start_offset));
        };
        let found = self.entries[index];
        let end = self
            .entries
            .get(index + 1)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// The log was truncated to end at `end_offset` (exclusive): entries starting at or after it
    /// go.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        before != self.entries.len()
    }

    /// The log now starts at `start_offset`: entries wholly before it go, and the epoch that
    /// spans it now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let Some(keep_from) = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset)
        else {
            return false;
        };
        let mut changed = keep_from > 0;
        self.entries.drain(..keep_from);
        if let Some(first) = self.entries.first_mut() {
            if first.start_offset < start_offset {
                first.start_offset = start_offset;
                changed = true;
            }
        }
        changed
    }

    /// Reads `dir/leader-epoch-checkpoint`; a missing file is an empty cache.
    pub fn load(dir: &Path) -> Result<LeaderEpochCache, CheckpointError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LeaderEpochCache::new())
            }
            Err(e) => return Err(e.into()),
        };
        parse(&text)
    }

    /// Writes `dir/leader-epoch-checkpoint` atomically (temporary file, fsync, rename, fsync of
    /// the directory).
    pub fn store(&self, dir: &Path) -> Result<(), CheckpointError> {
        let path = dir.join(FILE_NAME);
        let tmp: PathBuf = dir.join(format!("{FILE_NAME}.tmp"));
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

fn parse(text: &str) -> Result<LeaderEpochCache, CheckpointError> {
    let malformed = |why: &str| CheckpointError::Malformed(why.to_string());
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("0") {
        return Err(malformed("unknown version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| malformed("bad entry count"))?;
    let mut cache = LeaderEpochCache::new();
    for _ in 0..count {
        let line = lines
            .next()
            .ok_or_else(|| malformed("fewer entries than counted"))?;
        let mut fields = line.split_whitespace();
        let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed("an entry is not 'epoch offset'"));
        };
        let epoch: i32 = epoch.parse().map_err(|_| malformed("bad epoch"))?;
        let start_offset: i64 = offset.parse().map_err(|_| malformed("bad offset"))?;
        if let Some(last) = cache.entries.last() {
            if epoch <= last.epoch || start_offset < last.start_offset {
                return Err(malformed("entries out of order"));
            }
        }
        cache.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    Ok(cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for (epoch, offset) in entries {
            assert!(c.assign(*epoch, *offset));
        }
        c
    }

    #[test]
    fn assign_keeps_one_entry_per_newer_epoch() {
        let mut c = LeaderEpochCache::new();
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 10), "same epoch again");
        assert!(c.assign(2, 15));
        assert!(!c.assign(1, 20), "an older epoch changes nothing");
        assert!(
            !c.assign(-1, 30),
            "no epoch (pre-v2 batches) changes nothing"
        );
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 0,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 15
                }
            ]
        );
        // A newer epoch starting below the latest entry overrides what it overlaps.
        assert!(c.assign(3, 12));
        assert_eq!(
            c.entries().iter().map(|e| e.epoch).collect::<Vec<_>>(),
            vec![0, 3]
        );
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let c = cache(&[(1, 0), (3, 100), (4, 250)]);
        assert_eq!(c.end_offset_for(1, 300), Some((1, 100)));
        assert_eq!(
            c.end_offset_for(2, 300),
            Some((1, 100)),
            "largest epoch <= 2"
        );
        assert_eq!(c.end_offset_for(3, 300), Some((3, 250)));
        assert_eq!(
            c.end_offset_for(4, 300),
            Some((4, 300)),
            "latest ends at the log end"
        );
        assert_eq!(c.end_offset_for(9, 300), Some((4, 300)));
        assert_eq!(
            c.end_offset_for(0, 300),
            Some((0, 0)),
            "older than everything known: it ends where the first known epoch starts"
        );
        let later = cache(&[(7, 40)]);
        assert_eq!(later.end_offset_for(6, 45), Some((6, 40)));
        assert_eq!(LeaderEpochCache::new().end_offset_for(6, 45), None);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 0), (3, 100), (4, 250)]);
        assert!(c.truncate_from_end(250));
        assert_eq!(c.latest_epoch(), Some(3));
        assert!(!c.truncate_from_end(300));
        assert!(c.truncate_from_start(120));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 3,
                start_offset: 120
            }]
        );
        assert!(!c.truncate_from_start(50));
    }

    #[test]
    fn the_checkpoint_file_round_trips_in_kafkas_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            LeaderEpochCache::load(dir.path()).unwrap(),
            LeaderEpochCache::new()
        );
        let c = cache(&[(0, 0), (5, 42)]);
        c.store(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "0\n2\n0 0\n5 42\n"
        );
        assert_eq!(LeaderEpochCache::load(dir.path()).unwrap(), c);
        for bad in [
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0\n",
            "0\n2\n5 0\n4 1\n",
            "0\nx\n",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            assert!(
                matches!(
                    LeaderEpochCache::load(dir.path()),
                    Err(CheckpointError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }
}
