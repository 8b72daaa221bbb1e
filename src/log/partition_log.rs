//! The log of one partition: its ordered segments in `<data-dir>/<topic>-<partition>/`, offsets,
//! roll, retention, truncation, recovery and flush (Kafka's `LogSegments` + `LocalLog` + the
//! offset bookkeeping of `UnifiedLog`). Knows nothing of replication or the wire.
//!
//! # Files
//! One directory per partition holding segments named by base offset (see [`super::segment`]).
//! The last segment is the *active* one, the only one appended to.
//!
//! # Invariants
//! - There is always at least one segment. Segments are ordered by base offset and their
//!   offsets do not overlap; offsets are dense (each batch starts right after the previous one).
//! - `log_start_offset <= log_end_offset`, `recovery_point <= log_end_offset`, all published
//!   with atomics. `log_end_offset` is stored only after the bytes it covers are written and
//!   published in the segment, so a reader that saw an offset below it can read that offset.
//! - Appends, rolls, truncation, retention, close and the cleaner's segment swaps are serialized
//!   by `append_lock`. Readers take no lock held across I/O: they clone the `Arc` of a segment
//!   from the map (a brief read lock) and `pread` from it. A segment deleted or replaced
//!   meanwhile stays readable through its open file; a reader moving on to the next segment
//!   starts its lookup again if the cleaner swapped segments in between (`segments_generation`).
//! - Compaction (`cleanup.policy=compact`, [`super::cleaner`]) never changes an offset: it
//!   leaves gaps inside and between segments. It only touches non-active segments below the
//!   caller's upper bound, one compaction at a time (`cleaner_lock`), and swaps each cleaned
//!   segment in crash-safely; `open` finishes or undoes a swap a crash interrupted.
//! - `flush` takes the segment handles under the append lock, fsyncs after releasing it, then
//!   advances the recovery point (unless a truncation intervened).
//! - After an I/O error on the write path the log goes offline: later writes fail with
//!   [`LogError::Io`] (Kafka takes the log directory offline); reads keep working.
//! - The producer state ([`super::producer_state`]) always describes the log up to its end:
//!   checked and applied under the append lock by leader appends, applied by replicated ones,
//!   rebuilt after a truncation and at open from the newest `<offset>.snapshot` at or below the
//!   log end plus the batch headers after it. A snapshot is written at every roll (at the new
//!   segment's base) and at a clean close (at the log end); snapshots above the log end are
//!   deleted, and below the log start only the newest one is kept (it still holds producers
//!   whose batches retention deleted, as Kafka keeps them since KIP-360).
//! - Transactions: the producer state also tracks open transactions (the last stable offset)
//!   and the markers that close them; an aborted one's entry goes to the aborted-transaction
//!   index ([`super::txn_index`]) of the segment holding its marker, under the append lock.
//!   The replay that rebuilds the producer state rebuilds the index entries above its
//!   starting point too, so the index is always in step with the log.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tracing::{debug, error, warn};

use super::batch::{self, NO_TIMESTAMP};
use super::cleaner::{self, Cleanable, CompactionSettings, CompactionStats};
use super::file_slice::FileSlice;
use super::leader_epoch::LeaderEpochCache;
use super::producer_state::{
    CompletedTxn, Marker, ProducerBatch, ProducerStateManager, SequenceError, TxnVerification,
    Verdict, SNAPSHOT_FILE_SUFFIX,
};
use super::segment::{
    self, lock, read_lock, remove_if_present, sync_dir, write_lock, AppendBatch, Segment,
    INDEX_FILE_SUFFIX, LOG_FILE_SUFFIX, SEGMENT_BYTES_MAX, TIME_INDEX_FILE_SUFFIX,
};
use super::txn_index::{AbortedTxn, TxnIndex};
use super::LogError;

pub use super::batch::TimestampType;

/// `cleanup.policy`: what happens to old records. Kafka's list of `delete` and `compact`; with
/// both, old segments are compacted and also deleted past retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// `delete`: whole segments go past `retention.ms` / `retention.bytes`.
    pub delete: bool,
    /// `compact`: the log cleaner keeps only the latest record of each key.
    pub compact: bool,
}

impl CleanupPolicy {
    /// `delete`, Kafka's default.
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };
    /// `compact`.
    pub const COMPACT: CleanupPolicy = CleanupPolicy {
        delete: false,
        compact: true,
    };

    /// Parses Kafka's comma-separated list (`delete`, `compact`, `compact,delete`, spaces
    /// allowed); `None` for an empty list or an unknown policy.
    pub fn parse(list: &str) -> Option<CleanupPolicy> {
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for item in list.split(',') {
            match item.trim() {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => return None,
            }
        }
        Some(policy)
    }
}

/// Per-topic log settings, under Kafka's names with units last.
/// `Default::default()` is Apache Kafka's defaults.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this.
    pub segment_ms: i64,
    /// `retention.bytes`: delete old segments while the log is larger (-1: unlimited).
    pub retention_bytes: i64,
    /// `retention.ms`: delete segments whose newest record is older (-1: unlimited).
    pub retention_ms: i64,
    /// `index.interval.bytes`: bytes between offset index entries.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: maximum size of each index; roll when full.
    pub segment_index_bytes: u32,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: u32,
    /// `message.timestamp.type`.
    pub message_timestamp_type: TimestampType,
    /// `flush.messages`: report `flush_needed` after this many messages since the last flush.
    pub flush_messages: u64,
    /// `flush.ms`: for the caller's flush scheduler (the log does not keep a clock).
    pub flush_ms: i64,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long the cleaner keeps a tombstone once it has set the
    /// tombstone's batch's delete horizon.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments with a record newer than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned whatever the dirty
    /// ratio (and the active segment of a compacted log rolls at least this often).
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean only when the dirty share of the log is above this.
    pub min_cleanable_dirty_ratio: f64,
    /// `producer.state.max.producers`: idempotent producers whose state the partition keeps.
    pub producer_state_max_producers: usize,
}

impl LogConfig {
    /// Kafka's `maxSegmentMs`: for a compacted log the active segment also rolls at
    /// `max.compaction.lag.ms`, so no record waits longer than that to become cleanable.
    pub fn roll_after_ms(&self) -> i64 {
        if self.cleanup_policy.compact && self.max_compaction_lag_ms > 0 {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 1_073_741_824,
            segment_ms: 604_800_000,
            retention_bytes: -1,
            retention_ms: 604_800_000,
            index_interval_bytes: 4096,
            segment_index_bytes: 10_485_760,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            flush_messages: i64::MAX as u64,
            flush_ms: i64::MAX,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            producer_state_max_producers: 10_000,
        }
    }
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// `-1` unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
    /// Largest record timestamp appended (`now_ms` with LogAppendTime).
    pub max_timestamp_ms: i64,
    /// Records appended.
    pub record_count: u32,
    /// Bytes appended.
    pub size_bytes: usize,
    /// The log start offset after the append.
    pub log_start_offset: i64,
    /// The leader epoch stamped on the (last) batch appended.
    pub leader_epoch: i32,
    /// `flush.messages` reached since the last flush (the caller then calls `flush`).
    pub flush_needed: bool,
    /// This append rolled a new segment: the caller flushes the old one (Kafka flushes on roll,
    /// in the background, so a roll never waits for an fsync).
    pub rolled: bool,
    /// The batch was a retry of one the log already holds (same producer, epoch and
    /// sequences): nothing was written; the offsets are the original batch's, and
    /// `log_append_time_ms` its stored timestamp (as Kafka answers duplicates).
    pub duplicate: bool,
}

/// Who writes a leader append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A client's Produce: every producer rule applies, and a batch opening a transaction
    /// needs what the verification asks for.
    Client(TxnVerification),
    /// A coordinator writing for a producer (no sequences): only the epoch is checked, and
    /// the verification as for a client.
    Coordinator(TxnVerification),
}

/// State only the append path touches (under `append_lock`).
#[derive(Debug)]
struct AppendState {
    /// Set by `close`/delete: later writes fail.
    closed: bool,
    /// Set after a write-path I/O error: later writes fail.
    offline: bool,
}

/// The log of one partition. See the module documentation.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: RwLock<LogConfig>,
    /// Base offset → segment; the last one is active.
    segments: RwLock<BTreeMap<i64, Arc<Segment>>>,
    append_lock: Mutex<AppendState>,
    /// Mirrors `AppendState::offline` for readers that must not take the append lock.
    offline: AtomicBool,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    recovery_point: AtomicI64,
    /// Messages appended since open, and how many of them were covered by a flush.
    messages_appended: AtomicU64,
    messages_flushed: AtomicU64,
    /// Bumped by every truncation, so a flush racing one does not advance the recovery point.
    truncation_count: AtomicU64,
    /// A segment file was created or deleted since the directory was last fsynced.
    dir_sync_needed: AtomicBool,
    /// Bumped (under the `segments` write lock) whenever the cleaner swaps cleaned segments in:
    /// a reader walking from segment to segment restarts its lookup when it changes.
    segments_generation: AtomicU64,
    /// The cleaner's first dirty offset (Kafka's `cleaner-offset-checkpoint` entry); -1 until
    /// the log is first cleaned or a checkpoint is restored.
    first_dirty_offset: AtomicI64,
    /// Held for the whole of a compaction (one cleaner at a time per log).
    cleaner_lock: Mutex<()>,
    /// Set by close and delete: a running compaction stops at the next batch.
    cleaner_abort: AtomicBool,
    /// Which leader epoch began where (`leader-epoch-checkpoint`), kept by every append and
    /// truncation.
    epochs: Mutex<LeaderEpochCache>,
    /// Idempotent producers' state; changed only under `append_lock` (expiry aside).
    producers: Mutex<ProducerStateManager>,
    /// Aborted transactions by segment; changed only under `append_lock`.
    txn_index: Mutex<TxnIndex>,
    /// Mirrors `ProducerStateManager::has_unstable` (set under the `producers` lock after
    /// every change to it), so reads of a partition without transactions, the common case,
    /// take the high watermark as the last stable offset without that lock.
    unstable: AtomicBool,
}

impl PartitionLog {
    /// Opens (creating if missing) the partition directory `dir` and recovers every segment
    /// that may hold offsets `>= recovery_point`: every batch is CRC-checked, a torn or corrupt
    /// tail is cut (and the segments after it deleted), missing or bad indexes are rebuilt.
    /// `recovery_point = i64::MAX` means "all flushed" (clean shutdown): nothing is scanned
    /// beyond what index sanity checks need.
    pub fn open(
        dir: PathBuf,
        config: LogConfig,
        recovery_point: i64,
    ) -> Result<PartitionLog, LogError> {
        let dir_existed = dir.is_dir();
        fs::create_dir_all(&dir)?;
        if !dir_existed {
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        cleaner::finish_interrupted_swaps(&dir, &config)?;
        let mut log_bases = Vec::new();
        let mut index_bases = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(base) = segment::parse_base_offset(&name, LOG_FILE_SUFFIX) {
                log_bases.push(base);
            } else if let Some(base) = segment::parse_base_offset(&name, INDEX_FILE_SUFFIX)
                .or_else(|| segment::parse_base_offset(&name, TIME_INDEX_FILE_SUFFIX))
            {
                index_bases.push((base, entry.path()));
            }
        }
        log_bases.sort_unstable();
        // Indexes without a log (a crash while creating or deleting a segment) are garbage.
        for (base, path) in index_bases {
            if log_bases.binary_search(&base).is_err() {
                debug!(path = %path.display(), "removing orphan index file");
                fs::remove_file(&path)?;
            }
        }

        let mut segments: BTreeMap<i64, Arc<Segment>> = BTreeMap::new();
        let mut previous_next_offset: Option<i64> = None;
        let mut cut_from: Option<usize> = None;
        for (index, &base) in log_bases.iter().enumerate() {
            if let Some(previous) = previous_next_offset {
                if base < previous {
                    warn!(
                        dir = %dir.display(),
                        base,
                        previous_next_offset = previous,
                        "segment overlaps the previous one; deleting it and every later segment"
                    );
                    cut_from = Some(index);
                    break;
                }
                if base > previous && !config.cleanup_policy.compact {
                    // (In a compacted log the cleaner leaves such gaps.)
                    warn!(
                        dir = %dir.display(),
                        base,
                        previous_next_offset = previous,
                        "gap between segments: offsets in between are missing"
                    );
                }
            }
            // A segment may hold offsets >= recovery_point if the next one starts above it (or
            // it is the last one); one that starts at or above it certainly does.
            let next_base = log_bases.get(index + 1).copied();
            let recover =
                base >= recovery_point || next_base.is_some_and(|next| next > recovery_point);
            let mut opened = Segment::open(
                &dir,
                base,
                config.segment_index_bytes,
                config.index_interval_bytes,
                recover,
            )?;
            if !opened.recovered && opened.segment.next_offset() > recovery_point {
                // The last segment: only now do we know it extends past the recovery point.
                drop(opened);
                opened = Segment::open(
                    &dir,
                    base,
                    config.segment_index_bytes,
                    config.index_interval_bytes,
                    true,
                )?;
            }
            let truncated = opened.truncated_bytes > 0;
            previous_next_offset = Some(opened.segment.next_offset());
            segments.insert(base, Arc::new(opened.segment));
            if truncated {
                cut_from = Some(index + 1);
                break;
            }
        }
        if let Some(from) = cut_from {
            for &base in &log_bases[from..] {
                warn!(dir = %dir.display(), base, "deleting segment after a recovery truncation");
                for suffix in [LOG_FILE_SUFFIX, INDEX_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX] {
                    remove_if_present(&dir.join(format!("{}{suffix}", segment::file_stem(base))))?;
                }
            }
        }
        let created = segments.is_empty();
        if created {
            let segment = Segment::create(&dir, 0, config.segment_index_bytes)?;
            segments.insert(0, Arc::new(segment));
        }
        let (log_start_offset, log_end_offset) =
            match (segments.first_key_value(), segments.last_key_value()) {
                (Some((&first, _)), Some((_, last))) => (first, last.next_offset()),
                _ => (0, 0),
            };
        let recovery_point = recovery_point.clamp(0, log_end_offset);
        debug!(
            dir = %dir.display(),
            segments = segments.len(),
            log_start_offset,
            log_end_offset,
            recovery_point,
            "opened partition log"
        );
        let producers_max = config.producer_state_max_producers;
        let bases: Vec<i64> = segments.keys().copied().collect();
        let txn_index = TxnIndex::load(&dir, &bases)?;
        let log = PartitionLog {
            dir,
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            append_lock: Mutex::new(AppendState {
                closed: false,
                offline: false,
            }),
            offline: AtomicBool::new(false),
            log_start_offset: AtomicI64::new(log_start_offset),
            log_end_offset: AtomicI64::new(log_end_offset),
            recovery_point: AtomicI64::new(recovery_point),
            messages_appended: AtomicU64::new(0),
            messages_flushed: AtomicU64::new(0),
            truncation_count: AtomicU64::new(0),
            dir_sync_needed: AtomicBool::new(true),
            segments_generation: AtomicU64::new(0),
            first_dirty_offset: AtomicI64::new(-1),
            cleaner_lock: Mutex::new(()),
            cleaner_abort: AtomicBool::new(false),
            epochs: Mutex::new(LeaderEpochCache::new()),
            producers: Mutex::new(ProducerStateManager::new(producers_max)),
            txn_index: Mutex::new(txn_index),
            unstable: AtomicBool::new(false),
        };
        if created || cut_from.is_some() {
            sync_dir(&log.dir)?;
        }
        log.load_epochs()?;
        log.load_producer_state()?;
        Ok(log)
    }

    /// The snapshot files in the directory: (offset, path), in offset order.
    fn producer_snapshots(&self) -> Result<Vec<(i64, PathBuf)>, LogError> {
        let mut snapshots = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(offset) = segment::parse_base_offset(&name, SNAPSHOT_FILE_SUFFIX) {
                snapshots.push((offset, entry.path()));
            } else if name.ends_with(SNAPSHOT_TEMPORARY_SUFFIX) {
                // A snapshot write a crash interrupted.
                remove_if_present(&entry.path())?;
            }
        }
        snapshots.sort_unstable_by_key(|(offset, _)| *offset);
        Ok(snapshots)
    }

    /// Rebuilds the producer state for the log as it is (open, truncation): deletes snapshots
    /// above the log end, loads the newest readable one at or below it, and replays the batch
    /// headers from there (or from the log start) to the log end. Under the append lock, or
    /// before the log is shared.
    fn load_producer_state(&self) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        let producers_max = self.config().producer_state_max_producers;
        let mut loaded: Option<(i64, ProducerStateManager)> = None;
        for (offset, path) in self.producer_snapshots()?.into_iter().rev() {
            if offset > log_end {
                remove_if_present(&path)?;
                continue;
            }
            if loaded.is_some() {
                continue;
            }
            match fs::read(&path)
                .ok()
                .and_then(|bytes| ProducerStateManager::decode_snapshot(&bytes, producers_max))
            {
                Some(state) => loaded = Some((offset, state)),
                None => {
                    warn!(path = %path.display(), "unreadable producer snapshot; ignoring it");
                    remove_if_present(&path)?;
                }
            }
        }
        let (from, mut state) =
            loaded.unwrap_or_else(|| (i64::MIN, ProducerStateManager::new(producers_max)));
        let from = from.max(self.log_start_offset());
        let mut replayed = 0u64;
        let mut txn_index = lock(&self.txn_index);
        // The entries the replay derives again.
        txn_index.truncate_from(from)?;
        if from < log_end {
            let decompressed_max_bytes = self.decompressed_max_bytes();
            for segment in self.segments_snapshot() {
                if segment.next_offset() <= from {
                    continue;
                }
                let mut failed: Option<LogError> = None;
                segment.scan_batch_locations_from(from, |location| {
                    if failed.is_some() {
                        return;
                    }
                    if let Some(batch) = ProducerBatch::from_location(location) {
                        state.apply(&batch);
                        replayed += 1;
                    } else if location.is_control && location.producer_id >= 0 {
                        // A marker is read whole: its record says commit or abort.
                        let applied = segment.read_batch(location).and_then(|batch| {
                            apply_marker_batch(
                                &mut state,
                                &mut txn_index,
                                segment.base_offset(),
                                &batch,
                                decompressed_max_bytes,
                            )
                        });
                        match applied {
                            Ok(_) => replayed += 1,
                            Err(error) => failed = Some(error),
                        }
                    }
                })?;
                if let Some(error) = failed {
                    return Err(error);
                }
            }
        }
        debug!(
            dir = %self.dir.display(),
            from,
            log_end,
            replayed,
            producers = state.len(),
            "loaded producer state"
        );
        let mut producers = lock(&self.producers);
        *producers = state;
        self.unstable
            .store(producers.has_unstable(), Ordering::Release);
        Ok(())
    }

    /// Writes the producer state as `<log end>.snapshot` (at a roll or a clean close; under the
    /// append lock). Written to a temporary name and renamed, not fsynced: a damaged or missing
    /// snapshot only costs a longer replay.
    fn write_producer_snapshot(&self) -> Result<(), LogError> {
        let offset = self.log_end_offset();
        let bytes = lock(&self.producers).encode_snapshot();
        let path = self.dir.join(format!(
            "{}{SNAPSHOT_FILE_SUFFIX}",
            segment::file_stem(offset)
        ));
        let temporary = self.dir.join(format!(
            "{}{SNAPSHOT_TEMPORARY_SUFFIX}",
            segment::file_stem(offset)
        ));
        fs::write(&temporary, &bytes)?;
        fs::rename(&temporary, &path)?;
        Ok(())
    }

    /// Deletes the snapshots below the newest one at or below the log start (after retention
    /// or DeleteRecords moved the start).
    fn prune_producer_snapshots(&self) -> Result<(), LogError> {
        let log_start = self.log_start_offset();
        let snapshots = self.producer_snapshots()?;
        let keep_from = snapshots
            .iter()
            .rev()
            .find(|(offset, _)| *offset <= log_start)
            .map_or(i64::MIN, |(offset, _)| *offset);
        for (offset, path) in snapshots {
            if offset < keep_from {
                remove_if_present(&path)?;
            }
        }
        Ok(())
    }

    /// How many idempotent producers the partition keeps state for.
    pub fn producer_count(&self) -> usize {
        lock(&self.producers).len()
    }

    /// The producer state's view of one producer: (epoch, last batch's first and last offset).
    pub fn producer_last_batch(&self, producer_id: i64) -> Option<(i16, i64, i64)> {
        let producers = lock(&self.producers);
        let entry = producers.entry(producer_id)?;
        let last = entry.batches().last()?;
        Some((entry.epoch, last.first_offset, last.last_offset))
    }

    /// Forgets producers idle for `expiration_ms` (`producer.id.expiration.ms`); returns how
    /// many.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        lock(&self.producers).expire(now_ms, expiration_ms)
    }

    /// Loads the leader epoch checkpoint, drops what a recovery cut off, and rebuilds it from
    /// the batches' leader epochs when it is missing or unreadable for a non-empty log.
    fn load_epochs(&self) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        let mut cache = LeaderEpochCache::load(&self.dir).unwrap_or_default();
        let mut changed = cache.truncate_from_end(log_end);
        if cache.entries().is_empty() && log_end > self.log_start_offset() {
            let max_bytes = self.config().max_message_bytes.max(1 << 20) as usize;
            let mut offset = self.log_start_offset();
            while offset < log_end {
                let chunk = self.read(offset, 1 << 20, log_end, true)?;
                if chunk.is_empty() {
                    break;
                }
                for batch in batch::validate_all_stored(chunk, max_bytes)? {
                    let header = batch.header();
                    cache.assign(header.partition_leader_epoch(), header.base_offset());
                    offset = header.next_offset();
                }
            }
            changed = true;
            debug!(dir = %self.dir.display(), entries = cache.entries().len(), "rebuilt the leader epoch cache");
        }
        if changed {
            cache
                .store(&self.dir)
                .map_err(|e| LogError::Io(io::Error::other(e.to_string())))?;
        }
        *lock(&self.epochs) = cache;
        Ok(())
    }

    /// Records that `epoch` wrote from `start_offset` and persists the cache if that is new.
    fn note_epoch(&self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        let mut cache = lock(&self.epochs);
        if cache.assign(epoch, start_offset) {
            cache
                .store(&self.dir)
                .map_err(|e| LogError::Io(io::Error::other(e.to_string())))?;
        }
        Ok(())
    }

    /// The latest leader epoch that wrote to this log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        lock(&self.epochs).latest_epoch()
    }

    /// Kafka's `endOffsetForEpoch`: the largest epoch `<= epoch` this log knows and the offset
    /// where it ended (the log end for the latest). `None` when `epoch` is older than all.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        lock(&self.epochs).end_offset_for(epoch, self.log_end_offset())
    }

    /// How far one batch's records may decompress under this log's `max.message.bytes`
    /// ([`compression::decompressed_max_bytes`](super::compression::decompressed_max_bytes)).
    pub fn decompressed_max_bytes(&self) -> usize {
        super::compression::decompressed_max_bytes(self.config().max_message_bytes as usize)
    }

    /// Whether a write, fsync, roll or truncation failed: the log takes no more writes and
    /// nothing may be acknowledged on its strength.
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings in force (a copy).
    pub fn config(&self) -> LogConfig {
        read_lock(&self.config).clone()
    }

    /// Replaces the settings (a topic config change); `segment.index.bytes` applies to
    /// segments created from now on.
    pub fn set_config(&self, config: LogConfig) {
        lock(&self.producers).set_producers_max(config.producer_state_max_producers);
        *write_lock(&self.config) = config;
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Every offset below this is fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    /// Total size of the segment files.
    pub fn size_bytes(&self) -> u64 {
        read_lock(&self.segments)
            .values()
            .map(|segment| segment.size_bytes())
            .sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        read_lock(&self.segments).len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        read_lock(&self.segments).keys().copied().collect()
    }

    pub(super) fn segments_snapshot(&self) -> Vec<Arc<Segment>> {
        read_lock(&self.segments).values().cloned().collect()
    }

    fn active_segment(&self) -> Result<Arc<Segment>, LogError> {
        read_lock(&self.segments)
            .last_key_value()
            .map(|(_, segment)| Arc::clone(segment))
            .ok_or_else(|| LogError::Io(io::Error::other("partition log has no segment")))
    }

    fn check_writable(&self, state: &AppendState) -> Result<(), LogError> {
        if state.offline {
            return Err(LogError::Io(io::Error::other(format!(
                "log {} is offline after an I/O error",
                self.dir.display()
            ))));
        }
        if state.closed {
            return Err(LogError::Io(io::Error::other(format!(
                "log {} is closed",
                self.dir.display()
            ))));
        }
        Ok(())
    }

    /// Leader append: validates every batch in `records` before writing anything, gives them
    /// dense offsets from the log end (rewriting base offset and partition leader epoch, which
    /// keeps the CRC valid), applies LogAppendTime if configured (copy + new CRC), rolls first
    /// if needed, and writes. See the design contract in `docs/design/log-api.md`.
    pub fn append(
        &self,
        records: Bytes,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        self.append_from(
            records,
            now_ms,
            leader_epoch,
            AppendOrigin::Client(TxnVerification::Off),
        )
    }

    /// [`PartitionLog::append`] for a given writer: a coordinator's transactional batches
    /// (TxnOffsetCommit) carry no sequence, so only their producer epoch is checked.
    pub fn append_from(
        &self,
        records: Bytes,
        now_ms: i64,
        leader_epoch: i32,
        origin: AppendOrigin,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let batches = batch::validate_all(records, config.max_message_bytes as usize)?;
        let decompressed_max_bytes =
            super::compression::decompressed_max_bytes(config.max_message_bytes as usize);
        for batch in &batches {
            // Compressed records are stored as sent, but how far they expand is counted: a
            // bomb is refused here (see `compression`).
            batch::check_decompressed_size(batch, decompressed_max_bytes)?;
        }
        if config.cleanup_policy.compact {
            // Only compacted logs pay for looking at the records.
            self.refuse_keyless_records(&batches)?;
        }
        let log_append_time = config.message_timestamp_type == TimestampType::LogAppendTime;
        // Everything that needs no offset happens before the lock: the LogAppendTime copy and
        // CRC; under the lock only the 16-byte heads are written.
        let mut writes: Vec<AppendBatch> = batches
            .iter()
            .map(|batch| {
                if log_append_time {
                    AppendBatch::with_log_append_time(batch, now_ms)
                } else {
                    AppendBatch::unchanged(batch)
                }
            })
            .collect();
        let mut state = lock(&self.append_lock);
        self.check_writable(&state)?;
        // Plain producers' batches (the common case) never touch the producer state.
        let idempotent = batches.iter().any(|b| b.header().producer_id() >= 0);
        let duplicate = match (idempotent, origin) {
            (false, _) => None,
            (true, AppendOrigin::Client(verification)) => {
                self.check_producers(&batches, verification)?
            }
            (true, AppendOrigin::Coordinator(verification)) => {
                let producers = lock(&self.producers);
                for batch in &batches {
                    if let Some(incoming) = ProducerBatch::from_header(&batch.header()) {
                        producers.check_coordinator_batch(&incoming)?;
                        producers.check_verified(&incoming, verification)?;
                    }
                }
                None
            }
        };
        if let Some(duplicate) = duplicate {
            let meta = duplicate.batch;
            let recovery_point = self.recovery_point();
            let unflushed = u64::try_from(self.log_end_offset() - recovery_point).unwrap_or(0);
            return Ok(AppendInfo {
                base_offset: meta.first_offset,
                last_offset: meta.last_offset,
                log_append_time_ms: meta.timestamp_ms,
                max_timestamp_ms: meta.timestamp_ms,
                record_count: 0,
                size_bytes: 0,
                log_start_offset: self.log_start_offset(),
                leader_epoch,
                flush_needed: recovery_point <= meta.last_offset
                    && unflushed >= config.flush_messages,
                rolled: false,
                duplicate: true,
            });
        }
        let mut next_offset = self.log_end_offset();
        for write in &mut writes {
            let last_offset_delta = write.last_offset() - write.base_offset();
            let base_offset = next_offset;
            next_offset = base_offset
                .checked_add(last_offset_delta + 1)
                .ok_or_else(|| LogError::corrupt("offset overflow"))?;
            write.assign_offsets(base_offset, leader_epoch);
        }
        self.note_epoch(leader_epoch, self.log_end_offset())?;
        let mut info = self.append_locked(&mut state, &config, &writes, now_ms)?;
        if idempotent {
            let mut producers = lock(&self.producers);
            for (batch, write) in batches.iter().zip(&writes) {
                if let Some(applied) = ProducerBatch::from_header(&batch.header()) {
                    producers.apply(&applied.at(
                        write.base_offset(),
                        write.last_offset(),
                        write.max_timestamp_ms(),
                    ));
                }
            }
            self.unstable
                .store(producers.has_unstable(), Ordering::Release);
        }
        if log_append_time {
            info.log_append_time_ms = now_ms;
        }
        info.leader_epoch = leader_epoch;
        Ok(info)
    }

    /// Leader append of a transaction marker (WriteTxnMarkers): checks it against the producer
    /// state (a marker of an older producer epoch or coordinator epoch is refused), writes a
    /// control batch at the log end, and closes the producer's open transaction here, recording
    /// it in the aborted-transaction index if it was aborted. Returns the append and the
    /// transaction it closed (`None` if the producer had none open on the partition).
    pub fn append_marker(
        &self,
        marker: &Marker,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<(AppendInfo, Option<CompletedTxn>), LogError> {
        let config = self.config();
        let bytes = batch::encode_marker_batch(
            marker.producer_id,
            marker.epoch,
            batch::MarkerRecord {
                commit: marker.commit,
                coordinator_epoch: marker.coordinator_epoch,
            },
            now_ms,
        )?;
        let stored = batch::Batch::new_stored(bytes, usize::MAX)?;
        let mut write = AppendBatch::unchanged(&stored);
        let mut state = lock(&self.append_lock);
        self.check_writable(&state)?;
        lock(&self.producers).check_marker(marker)?;
        let offset = self.log_end_offset();
        write.assign_offsets(offset, leader_epoch);
        self.note_epoch(leader_epoch, offset)?;
        let mut info = self.append_locked(&mut state, &config, &[write], now_ms)?;
        let mut producers = lock(&self.producers);
        let completed = producers.apply_marker(marker, offset, now_ms);
        self.unstable
            .store(producers.has_unstable(), Ordering::Release);
        if completed.is_some_and(|done| done.aborted) {
            let segment_base = self.active_segment()?.base_offset();
            index_abort(&mut lock(&self.txn_index), segment_base, completed)?;
        }
        info.leader_epoch = leader_epoch;
        Ok((info, completed))
    }

    /// The last stable offset for `high_watermark` (see [`ProducerStateManager::last_stable_offset`]).
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        if !self.unstable.load(Ordering::Acquire) {
            return high_watermark;
        }
        let mut producers = lock(&self.producers);
        let last_stable_offset = producers.last_stable_offset(high_watermark);
        self.unstable
            .store(producers.has_unstable(), Ordering::Release);
        last_stable_offset
    }

    /// Takes a verification guard before the leader asks a transaction's coordinator whether
    /// this partition is in it (see [`ProducerStateManager::begin_verification`]).
    pub fn begin_txn_verification(&self, producer_id: i64, epoch: i16) -> Option<u64> {
        lock(&self.producers).begin_verification(producer_id, epoch)
    }

    /// Every producer the partition keeps state for (DescribeProducers).
    pub fn active_producers(&self) -> Vec<super::producer_state::ActiveProducer> {
        lock(&self.producers).active()
    }

    /// How many transactions are open on the partition.
    pub fn ongoing_transactions(&self) -> usize {
        lock(&self.producers).ongoing_transactions()
    }

    /// The aborted transactions overlapping `fetch_offset..upper_bound` (a read_committed
    /// fetch's list).
    pub fn aborted_transactions(&self, fetch_offset: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        lock(&self.txn_index).collect(fetch_offset, upper_bound)
    }

    /// Every aborted transaction the index holds (tests).
    pub fn all_aborted_transactions(&self) -> Vec<AbortedTxn> {
        lock(&self.txn_index).all()
    }

    /// The leader's producer checks (see [`super::producer_state`]) of a client's batches:
    /// `Some` when the (only) batch is a retry of one the log holds. Under the append lock.
    fn check_producers(
        &self,
        batches: &[batch::Batch],
        verification: TxnVerification,
    ) -> Result<Option<ProducerBatch>, LogError> {
        let producers = lock(&self.producers);
        for batch in batches {
            let Some(incoming) = ProducerBatch::from_header(&batch.header()) else {
                continue;
            };
            match producers.check(&incoming)? {
                Verdict::Append => producers.check_verified(&incoming, verification)?,
                Verdict::Duplicate(original) if batches.len() == 1 => {
                    return Ok(Some(ProducerBatch {
                        batch: original,
                        ..incoming
                    }));
                }
                // Clients send one batch per partition; a duplicate among several is
                // refused whole rather than half written.
                Verdict::Duplicate(original) => {
                    return Err(SequenceError::OutOfOrder {
                        producer_id: incoming.producer_id,
                        epoch: incoming.epoch,
                        first_sequence: incoming.batch.first_sequence,
                        last_sequence: original.last_sequence,
                    }
                    .into())
                }
            }
        }
        Ok(None)
    }

    /// A compacted log refuses records without a key (Kafka's "Compacted topic cannot accept
    /// message without key"): the cleaner could never tell which of them is the latest.
    fn refuse_keyless_records(&self, batches: &[batch::Batch]) -> Result<(), LogError> {
        for batch in batches {
            let keyless = batch::keyless_record_indexes(batch, self.decompressed_max_bytes())?;
            if !keyless.is_empty() {
                let partition = self
                    .dir
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(LogError::InvalidRecord {
                    message: format!(
                        "Compacted topic cannot accept message without key in topic partition \
                         {partition}."
                    ),
                    record_indexes: keyless,
                });
            }
        }
        Ok(())
    }

    /// Follower append: the batches already carry their offsets; the first must start at the
    /// log end and each must start right after the previous one. Same validation, no rewrite.
    pub fn append_replicated(&self, records: Bytes) -> Result<AppendInfo, LogError> {
        let config = self.config();
        // What the leader stored: cleaned batches (sparse or empty) included.
        let batches = batch::validate_all_replicated(records, config.max_message_bytes as usize)?;
        let mut state = lock(&self.append_lock);
        self.check_writable(&state)?;
        let mut expected = self.log_end_offset();
        let mut writes = Vec::with_capacity(batches.len());
        for batch in &batches {
            let header = batch.header();
            if header.base_offset() != expected {
                return Err(LogError::NonMonotonicOffset {
                    expected_at_least: expected,
                    got: header.base_offset(),
                });
            }
            expected = header.next_offset();
            writes.push(AppendBatch::unchanged(batch));
        }
        let mut last_epoch = -1;
        for batch in &batches {
            let header = batch.header();
            last_epoch = header.partition_leader_epoch();
            self.note_epoch(last_epoch, header.base_offset())?;
        }
        // Replicated batches keep their own timestamps; the clock only ages the segment.
        let now_ms = writes
            .iter()
            .map(AppendBatch::max_timestamp_ms)
            .max()
            .unwrap_or(NO_TIMESTAMP);
        let mut info = self.append_locked(&mut state, &config, &writes, now_ms.max(0))?;
        if batches.iter().any(|b| b.header().producer_id() >= 0) {
            let mut producers = lock(&self.producers);
            let mut txn_index = lock(&self.txn_index);
            let segment_base = self.active_segment()?.base_offset();
            let max_bytes = self.decompressed_max_bytes();
            for batch in &batches {
                let header = batch.header();
                if let Some(applied) = ProducerBatch::from_header(&header) {
                    producers.apply(&applied);
                } else if header.is_control() && header.producer_id() >= 0 {
                    // The batches are written: a marker that does not parse is logged and
                    // left, as the log cannot refuse what it already holds.
                    if let Err(error) = apply_marker_batch(
                        &mut producers,
                        &mut txn_index,
                        segment_base,
                        batch,
                        max_bytes,
                    ) {
                        warn!(dir = %self.dir.display(), offset = header.base_offset(), %error, "replicated transaction marker not applied");
                    }
                }
            }
            self.unstable
                .store(producers.has_unstable(), Ordering::Release);
        }
        info.leader_epoch = last_epoch;
        Ok(info)
    }

    fn append_locked(
        &self,
        state: &mut AppendState,
        config: &LogConfig,
        writes: &[AppendBatch],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let (Some(first), Some(last)) = (writes.first(), writes.last()) else {
            return Err(LogError::corrupt("no record batch"));
        };
        let size_bytes: usize = writes.iter().map(AppendBatch::size_bytes).sum();
        // As Kafka (RecordBatchTooLargeException): an append must fit in one segment.
        let segment_bytes = config.segment_bytes.min(SEGMENT_BYTES_MAX);
        if size_bytes as u64 > segment_bytes {
            return Err(LogError::BatchTooLarge {
                size: size_bytes,
                max: segment_bytes as usize,
            });
        }
        // Offsets in a segment are stored relative to its base in 4 bytes, so one append may
        // not span more (compressed batches can claim any record count without decompression).
        if last.last_offset() - first.base_offset() > i64::from(i32::MAX) {
            return Err(LogError::corrupt(format!(
                "append spans offsets {} to {}, more than one segment can address",
                first.base_offset(),
                last.last_offset()
            )));
        }
        let mut active = self.active_segment()?;
        let mut rolled = false;
        if let Some(reason) = should_roll(
            &active,
            config,
            size_bytes as u64,
            last.last_offset(),
            now_ms,
        ) {
            active = self.roll_locked(state, config, reason)?;
            rolled = true;
        }
        if let Err(error) = active.append(writes, config.index_interval_bytes, now_ms) {
            state.offline = true;
            self.offline.store(true, Ordering::Release);
            error!(dir = %self.dir.display(), %error, "append failed; log taken offline");
            return Err(error);
        }
        let record_count: u64 = writes.iter().map(|w| u64::from(w.record_count())).sum();
        assert!(last.last_offset() >= self.log_end_offset());
        self.log_end_offset
            .store(last.last_offset() + 1, Ordering::Release);
        let appended = self
            .messages_appended
            .fetch_add(record_count, Ordering::AcqRel)
            + record_count;
        let unflushed = appended.saturating_sub(self.messages_flushed.load(Ordering::Acquire));
        Ok(AppendInfo {
            base_offset: first.base_offset(),
            last_offset: last.last_offset(),
            log_append_time_ms: -1,
            max_timestamp_ms: writes
                .iter()
                .map(AppendBatch::max_timestamp_ms)
                .max()
                .unwrap_or(NO_TIMESTAMP),
            record_count: u32::try_from(record_count).unwrap_or(u32::MAX),
            size_bytes,
            log_start_offset: self.log_start_offset(),
            flush_needed: unflushed >= config.flush_messages,
            rolled,
            leader_epoch: -1,
            duplicate: false,
        })
    }

    /// Starts a new active segment at the log end (under the append lock). The old one gets its
    /// final time index entry.
    fn roll_locked(
        &self,
        state: &mut AppendState,
        config: &LogConfig,
        reason: &str,
    ) -> Result<Arc<Segment>, LogError> {
        let active = self.active_segment()?;
        let base_offset = self.log_end_offset();
        assert!(base_offset > active.base_offset() || active.is_empty());
        let created = active
            .on_become_inactive()
            .and_then(|()| Segment::create(&self.dir, base_offset, config.segment_index_bytes));
        let segment = match created {
            Ok(segment) => Arc::new(segment),
            Err(error) => {
                state.offline = true;
                self.offline.store(true, Ordering::Release);
                error!(dir = %self.dir.display(), %error, "roll failed; log taken offline");
                return Err(error);
            }
        };
        write_lock(&self.segments).insert(base_offset, Arc::clone(&segment));
        self.dir_sync_needed.store(true, Ordering::Release);
        // The snapshot makes a restart's replay skip the old segment's markers: their index
        // entries must be on disk first.
        if let Err(error) = lock(&self.txn_index).sync() {
            state.offline = true;
            self.offline.store(true, Ordering::Release);
            error!(dir = %self.dir.display(), %error, "syncing the transaction index failed; log taken offline");
            return Err(error);
        }
        if let Err(error) = self.write_producer_snapshot() {
            // The log is intact; a restart replays from an older snapshot.
            warn!(dir = %self.dir.display(), %error, "writing the producer snapshot failed");
        }
        debug!(dir = %self.dir.display(), base_offset, reason, "rolled new segment");
        Ok(segment)
    }

    /// Rolls the active segment now if it is not empty (Kafka's `roll()`); returns whether it
    /// rolled.
    pub fn roll(&self) -> Result<bool, LogError> {
        let config = self.config();
        let mut state = lock(&self.append_lock);
        self.check_writable(&state)?;
        if self.active_segment()?.is_empty() {
            return Ok(false);
        }
        self.roll_locked(&mut state, &config, "requested")?;
        Ok(true)
    }

    /// Rolls the active segment if it is older than `segment_ms` (called periodically).
    pub fn maybe_roll(&self, now_ms: i64) -> Result<bool, LogError> {
        let config = self.config();
        let mut state = lock(&self.append_lock);
        self.check_writable(&state)?;
        let active = self.active_segment()?;
        if active.is_empty() || !is_too_old(&active, &config, now_ms) {
            return Ok(false);
        }
        self.roll_locked(&mut state, &config, "segment.ms")?;
        Ok(true)
    }

    /// Reads whole stored batches starting with the one holding `offset`, up to `max_bytes`
    /// (the first batch whole regardless if `min_one_batch`), none whose last offset is `>=`
    /// `max_offset_exclusive`. `offset == log_end_offset` gives an empty result; outside
    /// `[log_start_offset, log_end_offset]` is [`LogError::OffsetOutOfRange`]. Never waits for
    /// an append or a flush.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
        min_one_batch: bool,
    ) -> Result<Bytes, LogError> {
        let slice = self.read_slice(offset, max_bytes, max_offset_exclusive, min_one_batch)?;
        Ok(slice.read_batches()?)
    }

    /// [`read`](Self::read) as a range of one segment file, for sending with `sendfile`
    /// (nothing but batch headers is read here).
    pub fn read_slice(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
        min_one_batch: bool,
    ) -> Result<FileSlice, LogError> {
        let log_end_offset = self.log_end_offset();
        let log_start_offset = self.log_start_offset();
        let out_of_range = LogError::OffsetOutOfRange {
            offset,
            log_start_offset,
            log_end_offset,
        };
        if offset < log_start_offset || offset > log_end_offset {
            return Err(out_of_range);
        }
        if offset == log_end_offset || offset >= max_offset_exclusive {
            return Ok(FileSlice::empty());
        }
        'lookup: loop {
            let (generation, floor) = {
                let map = read_lock(&self.segments);
                (
                    self.segments_generation.load(Ordering::Acquire),
                    map.range(..=offset)
                        .next_back()
                        .map(|(_, segment)| Arc::clone(segment)),
                )
            };
            // Below the first segment: retention raced with this read.
            let Some(mut segment) = floor else {
                return Err(out_of_range);
            };
            loop {
                if let Some(slice) =
                    segment.read_slice(offset, max_bytes, max_offset_exclusive, min_one_batch)?
                {
                    return Ok(slice);
                }
                let next = {
                    let map = read_lock(&self.segments);
                    if self.segments_generation.load(Ordering::Acquire) != generation {
                        // The cleaner replaced segments meanwhile: the next offsets may now
                        // live in a merged segment with a lower base. Look up again.
                        continue 'lookup;
                    }
                    map.range(segment.base_offset() + 1..)
                        .next()
                        .map(|(_, segment)| Arc::clone(segment))
                };
                match next {
                    Some(next) => segment = next,
                    None => return Ok(FileSlice::empty()),
                }
            }
        }
    }

    /// ListOffsets by timestamp: (offset, timestamp) of the first record at or after the log
    /// start offset whose timestamp is `>= timestamp_ms`; `None` if there is none. The first
    /// segment whose max timestamp reaches the target holds it (Kafka's rule); inside it the
    /// time index narrows the scan and candidate batches are decoded.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        let log_start_offset = self.log_start_offset();
        let bound = self.decompressed_max_bytes();
        for segment in self.segments_snapshot() {
            if segment.next_offset() <= log_start_offset {
                continue;
            }
            let Some((segment_max_ms, _)) = segment.max_timestamp() else {
                continue;
            };
            if segment_max_ms < timestamp_ms {
                continue;
            }
            if let Some(found) =
                segment.find_offset_by_timestamp(timestamp_ms, log_start_offset, bound)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: (timestamp, offset) of the record with the largest timestamp
    /// (the first one on ties); `None` for an empty log (or one without timestamps).
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let mut best: Option<(i64, Arc<Segment>)> = None;
        for segment in self.segments_snapshot() {
            if let Some((timestamp_ms, _)) = segment.max_timestamp() {
                if best
                    .as_ref()
                    .is_none_or(|(best_ms, _)| timestamp_ms > *best_ms)
                {
                    best = Some((timestamp_ms, segment));
                }
            }
        }
        match best {
            Some((_, segment)) => segment.max_timestamp_record(self.decompressed_max_bytes()),
            None => Ok(None),
        }
    }

    /// fsyncs the log data and indexes up to the current log end and returns it as the new
    /// recovery point. The append lock is held only to take the segment handles, so appends
    /// continue during the fsync (callers build group commit on this).
    pub fn flush(&self) -> Result<i64, LogError> {
        let (segments, flush_offset, messages, truncation_count) = {
            let _state = lock(&self.append_lock);
            let recovery_point = self.recovery_point();
            let segments: Vec<Arc<Segment>> = {
                let map = read_lock(&self.segments);
                // The segment holding the recovery point and every later one.
                let first = map
                    .range(..=recovery_point)
                    .next_back()
                    .map_or(i64::MIN, |(&base, _)| base);
                map.range(first..)
                    .map(|(_, segment)| Arc::clone(segment))
                    .collect()
            };
            (
                segments,
                self.log_end_offset(),
                self.messages_appended.load(Ordering::Acquire),
                self.truncation_count.load(Ordering::Acquire),
            )
        };
        let synced = segments
            .iter()
            .try_for_each(|segment| segment.sync())
            .and_then(|()| {
                if self.dir_sync_needed.swap(false, Ordering::AcqRel) {
                    if let Err(error) = sync_dir(&self.dir) {
                        self.dir_sync_needed.store(true, Ordering::Release);
                        return Err(error.into());
                    }
                }
                Ok(())
            });
        if let Err(error) = synced {
            // After a failed fsync the kernel may have dropped the pages it could not write
            // (and a later fsync can then succeed without them): nothing may be acknowledged
            // on the strength of this file any more.
            lock(&self.append_lock).offline = true;
            self.offline.store(true, Ordering::Release);
            error!(dir = %self.dir.display(), %error, "fsync failed; log taken offline");
            return Err(error);
        }
        let _state = lock(&self.append_lock);
        if self.truncation_count.load(Ordering::Acquire) == truncation_count {
            assert!(flush_offset <= self.log_end_offset());
            self.recovery_point
                .fetch_max(flush_offset, Ordering::AcqRel);
            self.messages_flushed.fetch_max(messages, Ordering::AcqRel);
        }
        Ok(self.recovery_point())
    }

    /// Deletes whole segments, oldest first, that are past `retention_ms` (by their largest
    /// record timestamp), beyond `retention_bytes`, or wholly below the log start offset. The
    /// active segment is never deleted (it rolls on `segment.ms` and goes later), nor, by time
    /// or size, a segment holding offsets at or above `high_watermark` (as Kafka: records not
    /// yet committed may still be needed by a follower, and a consumer must never see its
    /// log start pass the committed end). Advances the log start offset; returns the number of
    /// segments deleted.
    pub fn enforce_retention(&self, now_ms: i64, high_watermark: i64) -> Result<usize, LogError> {
        let config = self.config();
        let _state = lock(&self.append_lock);
        let segments = self.segments_snapshot();
        let committed = segments
            .iter()
            .take_while(|segment| segment.next_offset() <= high_watermark)
            .count();
        let deletable_max = segments.len().saturating_sub(1).min(committed);
        let mut count = self.count_below_log_start(&segments);
        // Time and size retention belong to the `delete` policy; a compact-only log only loses
        // what is below its start offset (Kafka's `deleteOldSegments`).
        if config.cleanup_policy.delete && config.retention_ms >= 0 {
            let mut expired = 0;
            while expired < deletable_max
                && now_ms.saturating_sub(segments[expired].largest_timestamp_ms()?)
                    > config.retention_ms
            {
                expired += 1;
            }
            count = count.max(expired);
        }
        if config.cleanup_policy.delete && config.retention_bytes >= 0 {
            let total: u64 = segments.iter().map(|segment| segment.size_bytes()).sum();
            let mut excess = total as i64 - config.retention_bytes;
            let mut over = 0;
            while over < deletable_max && excess - segments[over].size_bytes() as i64 >= 0 {
                excess -= segments[over].size_bytes() as i64;
                over += 1;
            }
            count = count.max(over);
        }
        if count == 0 {
            return Ok(0);
        }
        self.delete_oldest_locked(&segments[..count], "retention")?;
        Ok(count)
    }

    /// How many of the oldest (non-active) segments hold only offsets below the log start.
    fn count_below_log_start(&self, segments: &[Arc<Segment>]) -> usize {
        let log_start_offset = self.log_start_offset();
        let mut count = 0;
        while count + 1 < segments.len() && segments[count + 1].base_offset() <= log_start_offset {
            count += 1;
        }
        count
    }

    /// Removes `victims` (the oldest segments, never the active one) and advances the log
    /// start offset to the new first segment. Under the append lock.
    fn delete_oldest_locked(&self, victims: &[Arc<Segment>], reason: &str) -> Result<(), LogError> {
        let new_first = {
            let map = read_lock(&self.segments);
            assert!(victims.len() < map.len());
            map.keys().nth(victims.len()).copied()
        };
        if let Some(new_first) = new_first {
            // Publish the new start first, so readers asking for deleted offsets get
            // OffsetOutOfRange rather than data from a later segment.
            self.log_start_offset.fetch_max(new_first, Ordering::AcqRel);
        }
        {
            let mut map = write_lock(&self.segments);
            for victim in victims {
                map.remove(&victim.base_offset());
            }
        }
        for victim in victims {
            victim.delete_files()?;
            lock(&self.txn_index).remove_segment(victim.base_offset())?;
            debug!(
                dir = %self.dir.display(),
                base_offset = victim.base_offset(),
                next_offset = victim.next_offset(),
                reason,
                "deleted segment"
            );
        }
        self.dir_sync_needed.store(true, Ordering::Release);
        self.prune_producer_snapshots()?;
        Ok(())
    }

    /// Drops every batch at and above `offset` (a batch holding `offset` goes whole, so the
    /// new log end may be below `offset`). Below the log start, the log restarts empty at
    /// `offset` (Kafka's `truncateFullyAndStartAt`).
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        self.truncate(offset, false)
    }

    /// Drops every segment and restarts the log empty at `offset`, whatever it held (Kafka's
    /// `truncateFullyAndStartAt`): a follower whose log ends below its leader's log start
    /// starts over from there. The leader epoch cache is cleared with the data it described.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        self.truncate(offset, true)
    }

    fn truncate(&self, offset: i64, fully: bool) -> Result<(), LogError> {
        let config = self.config();
        let mut state = lock(&self.append_lock);
        self.check_writable(&state)?;
        let log_end_offset = self.log_end_offset();
        if offset >= log_end_offset && !fully {
            // Nothing to cut, but an epoch may begin at the log end without a batch (a leader
            // noted its epoch and then wrote nothing): it goes, or a follower would keep
            // telling its leader it has that epoch (Kafka truncates the epoch cache here too).
            let mut cache = lock(&self.epochs);
            if cache.truncate_from_end(log_end_offset) {
                cache
                    .store(&self.dir)
                    .map_err(|e| LogError::Io(io::Error::other(e.to_string())))?;
            }
            return Ok(());
        }
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset,
            });
        }
        self.truncation_count.fetch_add(1, Ordering::AcqRel);
        let fully = fully || offset < self.log_start_offset();
        let result = if fully {
            self.truncate_fully_locked(&config, offset)
        } else {
            self.truncate_locked(offset)
        };
        if let Err(error) = result {
            state.offline = true;
            self.offline.store(true, Ordering::Release);
            error!(dir = %self.dir.display(), %error, "truncation failed; log taken offline");
            return Err(error);
        }
        // What the cleaner had cleaned above the new end is gone (Kafka's
        // `maybeTruncateCheckpoint`); -1 (never cleaned) stays.
        self.first_dirty_offset
            .fetch_min(self.log_end_offset(), Ordering::AcqRel);
        {
            let mut cache = lock(&self.epochs);
            let changed = if fully {
                // Every epoch it knew began at an offset that is gone.
                let had_entries = cache.latest_epoch().is_some();
                *cache = LeaderEpochCache::new();
                had_entries
            } else {
                cache.truncate_from_end(self.log_end_offset())
            };
            if changed {
                cache
                    .store(&self.dir)
                    .map_err(|e| LogError::Io(io::Error::other(e.to_string())))?;
            }
        }
        if fully {
            self.first_dirty_offset.store(-1, Ordering::Release);
            // Snapshots described a log that is gone.
            for (_, path) in self.producer_snapshots()? {
                remove_if_present(&path)?;
            }
        }
        self.load_producer_state()?;
        sync_dir(&self.dir)?;
        debug!(
            dir = %self.dir.display(),
            offset,
            log_end_offset = self.log_end_offset(),
            "truncated log"
        );
        Ok(())
    }

    fn truncate_locked(&self, offset: i64) -> Result<(), LogError> {
        let (victims, floor) = {
            let mut map = write_lock(&self.segments);
            let victims: Vec<i64> = map.range(offset + 1..).map(|(&base, _)| base).collect();
            let victims: Vec<Arc<Segment>> =
                victims.iter().filter_map(|base| map.remove(base)).collect();
            let floor = map
                .range(..=offset)
                .next_back()
                .map(|(_, segment)| Arc::clone(segment));
            (victims, floor)
        };
        let Some(floor) = floor else {
            return Err(LogError::Io(io::Error::other(
                "no segment holds the offset",
            )));
        };
        let new_log_end_offset = floor.truncate_to(offset)?;
        self.log_end_offset
            .store(new_log_end_offset, Ordering::Release);
        self.log_start_offset
            .fetch_min(new_log_end_offset, Ordering::AcqRel);
        self.recovery_point
            .fetch_min(new_log_end_offset, Ordering::AcqRel);
        for victim in victims {
            victim.delete_files()?;
        }
        Ok(())
    }

    fn truncate_fully_locked(&self, config: &LogConfig, offset: i64) -> Result<(), LogError> {
        let victims: Vec<Arc<Segment>> = std::mem::take(&mut *write_lock(&self.segments))
            .into_values()
            .collect();
        self.log_start_offset.store(offset, Ordering::Release);
        self.log_end_offset.store(offset, Ordering::Release);
        self.recovery_point.store(offset, Ordering::Release);
        for victim in &victims {
            victim.delete_files()?;
        }
        lock(&self.txn_index).truncate_from(i64::MIN)?;
        let segment = Segment::create(&self.dir, offset, config.segment_index_bytes)?;
        write_lock(&self.segments).insert(offset, Arc::new(segment));
        Ok(())
    }

    /// Advances the log start offset (DeleteRecords) and deletes the segments wholly below it.
    /// Beyond the log end is [`LogError::OffsetOutOfRange`]; at or below the current start it
    /// does nothing.
    pub fn advance_log_start_offset(&self, offset: i64) -> Result<(), LogError> {
        let state = lock(&self.append_lock);
        self.check_writable(&state)?;
        let log_start_offset = self.log_start_offset();
        let log_end_offset = self.log_end_offset();
        if offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }
        if offset <= log_start_offset {
            return Ok(());
        }
        self.log_start_offset.store(offset, Ordering::Release);
        let segments = self.segments_snapshot();
        let count = self.count_below_log_start(&segments);
        if count > 0 {
            self.delete_oldest_locked(&segments[..count], "log start offset")?;
        }
        debug!(dir = %self.dir.display(), offset, "advanced log start offset");
        Ok(())
    }

    /// Flush and close (clean shutdown): the active segment records its final time index
    /// entry, everything is fsynced, and later writes fail.
    pub fn close(&self) -> Result<(), LogError> {
        self.cleaner_abort.store(true, Ordering::Release);
        {
            let mut state = lock(&self.append_lock);
            if state.closed {
                return Ok(());
            }
            if state.offline {
                // Not a clean close: a write or fsync failed, so what is on disk may lack what
                // was acknowledged before. The next start recovers this log (CRC scan).
                state.closed = true;
                return Err(LogError::Io(io::Error::other(format!(
                    "log {} was offline after a storage error",
                    self.dir.display()
                ))));
            }
            self.active_segment()?.on_become_inactive()?;
            if let Err(error) = self.write_producer_snapshot() {
                warn!(dir = %self.dir.display(), %error, "writing the producer snapshot failed");
            }
            state.closed = true;
        }
        self.flush()?;
        debug!(dir = %self.dir.display(), "closed partition log");
        Ok(())
    }

    /// Removes the partition directory from disk (DeleteTopics). Readers still holding
    /// segments keep reading from the open files; writes fail from now on.
    pub fn delete_from_disk(&self) -> Result<(), LogError> {
        // Stop a running compaction and wait for it, so it writes no file into the directory
        // being removed.
        self.cleaner_abort.store(true, Ordering::Release);
        let _cleaning = lock(&self.cleaner_lock);
        let mut state = lock(&self.append_lock);
        state.closed = true;
        write_lock(&self.segments).clear();
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error.into()),
        }
        if let Some(parent) = self.dir.parent() {
            sync_dir(parent)?;
        }
        debug!(dir = %self.dir.display(), "deleted partition log");
        Ok(())
    }

    /// Removes the partition directory from disk (DeleteTopics).
    pub fn delete(self) -> Result<(), LogError> {
        self.delete_from_disk()
    }

    /// Compacts the log (Kafka's log cleaner, `cleanup.policy=compact`; see [`super::cleaner`]):
    /// keeps only the latest record of each key, and tombstones until their delete horizon,
    /// in the non-active segments below `settings.upper_bound_offset` (the high watermark).
    /// Offsets never change. Skips (without touching the log) a log that is not compacted or
    /// not dirty enough (`min.cleanable.dirty.ratio`, unless `max.compaction.lag.ms` forces it).
    /// Appends and reads continue meanwhile; cleaned segments are swapped in crash-safely.
    pub fn compact(
        &self,
        now_ms: i64,
        settings: &CompactionSettings,
    ) -> Result<CompactionStats, LogError> {
        let _cleaning = lock(&self.cleaner_lock);
        cleaner::compact(self, now_ms, settings)
    }

    /// How dirty the log is for the cleaner (Kafka's `LogToClean`), `None` unless its policy
    /// includes `compact`. Only reads segment metadata (and one header per dirty segment when
    /// `max.compaction.lag.ms` is set).
    pub fn cleanable(
        &self,
        now_ms: i64,
        upper_bound_offset: i64,
    ) -> Result<Option<Cleanable>, LogError> {
        let config = self.config();
        if !config.cleanup_policy.compact {
            return Ok(None);
        }
        let segments = self.segments_snapshot();
        cleaner::cleanable(self, &segments, &config, now_ms, upper_bound_offset).map(Some)
    }

    /// The cleaner's first dirty offset, if the log was ever cleaned (or a checkpoint was
    /// restored): what `cleaner-offset-checkpoint` records.
    pub fn cleaner_checkpoint(&self) -> Option<i64> {
        let offset = self.first_dirty_offset.load(Ordering::Acquire);
        (offset >= 0).then_some(offset)
    }

    /// Restores the first dirty offset from `cleaner-offset-checkpoint` (at open).
    pub fn restore_cleaner_checkpoint(&self, offset: i64) {
        self.first_dirty_offset.store(offset, Ordering::Release);
    }

    pub(super) fn set_first_dirty_offset(&self, offset: i64) {
        self.first_dirty_offset.store(offset, Ordering::Release);
    }

    /// Truncations so far (the cleaner aborts if this changes under it).
    pub(super) fn truncation_count(&self) -> u64 {
        self.truncation_count.load(Ordering::Acquire)
    }

    /// Whether a compaction that started when the truncation count was `truncations` must stop
    /// (the log was closed, deleted or truncated since).
    pub(super) fn cleaning_must_stop(&self, truncations: u64) -> bool {
        self.cleaner_abort.load(Ordering::Acquire) || self.truncation_count() != truncations
    }

    /// Swaps `cleaned` (complete and fsynced, files suffixed `.cleaned`) in for `old` (adjacent
    /// non-active segments, `cleaned` has the first one's base offset), crash-safely as Kafka's
    /// `replaceSegments` does: `.cleaned` → `.swap` (and an fsync of the directory), old files →
    /// `.deleted`, `.swap` → final names, fsync of the directory, then the segment map changes
    /// in one step and the
    /// `.deleted` files are removed (readers holding old segments keep reading their open
    /// files). A crash anywhere in between is finished or undone by [`PartitionLog::open`].
    /// `aborted` becomes the cleaned segment's aborted-transaction index (the old segments'
    /// entries go). Returns `false` (and removes `cleaned`) when the log changed meanwhile:
    /// closed, truncated, or one of `old` no longer in it (retention).
    pub(super) fn replace_segments(
        &self,
        cleaned: Segment,
        old: &[Arc<Segment>],
        truncations: u64,
        aborted: Vec<AbortedTxn>,
    ) -> Result<bool, LogError> {
        let mut state = lock(&self.append_lock);
        let unchanged =
            !state.closed && !state.offline && !self.cleaning_must_stop(truncations) && {
                let map = read_lock(&self.segments);
                let active_base = map.last_key_value().map(|(&base, _)| base);
                old.iter().all(|segment| {
                    Some(segment.base_offset()) != active_base
                        && map
                            .get(&segment.base_offset())
                            .is_some_and(|current| Arc::ptr_eq(current, segment))
                })
            };
        if !unchanged || old.first().map(|first| first.base_offset()) != Some(cleaned.base_offset())
        {
            drop(state);
            cleaned.delete_files()?;
            return Ok(false);
        }
        let renamed = (|| -> Result<(), LogError> {
            cleaned
                .change_file_suffixes(segment::CLEANED_FILE_SUFFIX, segment::SWAP_FILE_SUFFIX)?;
            // The complete `.swap` is durable before any old file is renamed away: however a
            // crash reorders the renames after this, open finds either the old segments or
            // the swap. (Kafka fsyncs only at the end.)
            sync_dir(&self.dir)?;
            for segment in old {
                segment.change_file_suffixes("", segment::DELETED_FILE_SUFFIX)?;
            }
            cleaned.change_file_suffixes(segment::SWAP_FILE_SUFFIX, "")?;
            sync_dir(&self.dir)?;
            Ok(())
        })();
        if let Err(error) = renamed {
            state.offline = true;
            self.offline.store(true, Ordering::Release);
            error!(dir = %self.dir.display(), %error, "cleaner swap failed; log taken offline");
            return Err(error);
        }
        {
            let mut map = write_lock(&self.segments);
            for segment in old {
                map.remove(&segment.base_offset());
            }
            let into = cleaned.base_offset();
            map.insert(into, Arc::new(cleaned));
            self.segments_generation.fetch_add(1, Ordering::AcqRel);
            drop(map);
            let bases: Vec<i64> = old.iter().map(|segment| segment.base_offset()).collect();
            lock(&self.txn_index).replace(&bases, into, aborted)?;
        }
        drop(state);
        self.dir_sync_needed.store(true, Ordering::Release);
        for segment in old {
            segment.delete_files()?;
        }
        Ok(true)
    }
}

/// Applies a stored marker batch at its offset to `state`; an aborted transaction goes to
/// `index` under the segment at `segment_base`. Batches that are not transaction markers
/// change nothing.
fn apply_marker_batch(
    state: &mut ProducerStateManager,
    index: &mut TxnIndex,
    segment_base: i64,
    batch: &batch::Batch,
    max_bytes: usize,
) -> Result<Option<CompletedTxn>, LogError> {
    let header = batch.header();
    let Some(record) = batch::marker_record(batch, max_bytes)? else {
        return Ok(None);
    };
    let marker = Marker {
        producer_id: header.producer_id(),
        epoch: header.producer_epoch(),
        coordinator_epoch: record.coordinator_epoch,
        commit: record.commit,
    };
    let completed = state.apply_marker(&marker, header.base_offset(), header.max_timestamp_ms());
    index_abort(index, segment_base, completed)?;
    Ok(completed)
}

/// Records a transaction a marker closed in the aborted-transaction index, if it was aborted.
fn index_abort(
    index: &mut TxnIndex,
    segment_base: i64,
    completed: Option<CompletedTxn>,
) -> Result<(), LogError> {
    match completed.filter(|done| done.aborted) {
        Some(done) => index.append(
            segment_base,
            AbortedTxn {
                producer_id: done.producer_id,
                first_offset: done.first_offset,
                last_offset: done.last_offset,
                last_stable_offset: done.last_stable_offset,
            },
        ),
        None => Ok(()),
    }
}

fn is_too_old(active: &Segment, config: &LogConfig, now_ms: i64) -> bool {
    active
        .rolling_base_ms()
        .is_some_and(|base_ms| now_ms.saturating_sub(base_ms) > config.roll_after_ms())
}

/// Why the active segment must roll before taking `append_bytes` more bytes ending at
/// `last_offset`, if it must. An empty segment never rolls.
fn should_roll(
    active: &Segment,
    config: &LogConfig,
    append_bytes: u64,
    last_offset: i64,
    now_ms: i64,
) -> Option<&'static str> {
    if active.is_empty() {
        return None;
    }
    let segment_bytes = config.segment_bytes.min(SEGMENT_BYTES_MAX);
    if active.size_bytes().saturating_add(append_bytes) > segment_bytes {
        return Some("segment.bytes");
    }
    if is_too_old(active, config, now_ms) {
        return Some("segment.ms");
    }
    if active.is_index_full() {
        return Some("index full");
    }
    if last_offset - active.base_offset() > i64::from(i32::MAX) {
        return Some("relative offset overflow");
    }
    None
}

/// Suffix of a producer snapshot being written (renamed to `.snapshot` when complete).
const SNAPSHOT_TEMPORARY_SUFFIX: &str = ".snapshot.tmp";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::testing::{batch, batch_with, idempotent_batch, producer_batch};
    use crate::log::batch::{batches, validate, BatchHeader};
    use bytes::BytesMut;
    use kafka_protocol::records::Compression;
    use proptest::prelude::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    const MAX: usize = 1 << 20;

    fn small_config() -> LogConfig {
        LogConfig {
            segment_bytes: 600,
            index_interval_bytes: 200,
            ..LogConfig::default()
        }
    }

    /// The stored headers of `bytes` as (base offset, last offset).
    fn offsets(bytes: &Bytes) -> Vec<(i64, i64)> {
        batches(bytes.clone(), usize::MAX)
            .map(|batch| {
                let batch = batch.expect("stored batches are valid");
                (batch.header().base_offset(), batch.header().last_offset())
            })
            .collect()
    }

    /// Everything from the log start to the log end, segment by segment.
    fn read_all(log: &PartitionLog) -> Vec<u8> {
        let mut all = Vec::new();
        let mut offset = log.log_start_offset();
        loop {
            let bytes = log.read(offset, MAX, i64::MAX, true).expect("read");
            let Some(&(_, last)) = offsets(&bytes).last() else {
                return all;
            };
            all.extend_from_slice(&bytes);
            offset = last + 1;
        }
    }

    fn open(dir: &Path, config: LogConfig, recovery_point: i64) -> PartitionLog {
        PartitionLog::open(dir.to_path_buf(), config, recovery_point).expect("open")
    }

    fn snapshot_offsets(log: &PartitionLog) -> Vec<i64> {
        log.producer_snapshots()
            .expect("list")
            .into_iter()
            .map(|(offset, _)| offset)
            .collect()
    }

    fn is_sequence_error(result: &Result<AppendInfo, LogError>, code: &str) -> bool {
        matches!(result, Err(LogError::Sequence(e)) if format!("{e:?}").starts_with(code))
    }

    #[test]
    fn idempotent_retries_are_acknowledged_with_the_original_offsets_and_gaps_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), LogConfig::default(), 0);
        log.append(batch(0, 2, 50), 1000, 0).expect("plain");
        let first = log
            .append(idempotent_batch(7, 0, 0, 3, 100), 1000, 0)
            .expect("append");
        let second = log
            .append(idempotent_batch(7, 0, 3, 2, 200), 1000, 0)
            .expect("append");
        assert_eq!((first.base_offset, second.base_offset), (2, 5));
        let size = log.size_bytes();
        // Both kept batches are recognised when retried; nothing is written.
        for (retry, original) in [
            (idempotent_batch(7, 0, 0, 3, 100), first),
            (idempotent_batch(7, 0, 3, 2, 200), second),
        ] {
            let again = log.append(retry, 2000, 1).expect("duplicate");
            assert!(again.duplicate);
            assert_eq!(
                (again.base_offset, again.last_offset),
                (original.base_offset, original.last_offset)
            );
            assert_eq!(again.log_append_time_ms, original.max_timestamp_ms);
            assert_eq!(again.leader_epoch, 1);
        }
        assert_eq!((log.log_end_offset(), log.size_bytes()), (7, size));
        // A gap, a stale epoch and a new epoch not starting at 0 are refused.
        assert!(is_sequence_error(
            &log.append(idempotent_batch(7, 0, 6, 1, 300), 1000, 0),
            "OutOfOrder"
        ));
        log.append(idempotent_batch(7, 1, 0, 1, 300), 1000, 0)
            .expect("new epoch");
        assert!(is_sequence_error(
            &log.append(idempotent_batch(7, 0, 5, 1, 300), 1000, 0),
            "StaleEpoch"
        ));
        assert!(is_sequence_error(
            &log.append(idempotent_batch(7, 2, 3, 1, 300), 1000, 0),
            "OutOfOrder"
        ));
        assert_eq!(log.log_end_offset(), 8);
        // A producer the partition never saw may start anywhere (KIP-360).
        log.append(idempotent_batch(8, 0, 40, 1, 300), 1000, 0)
            .expect("unknown producer");
    }

    fn marker(producer_id: i64, commit: bool) -> Marker {
        Marker {
            producer_id,
            epoch: 0,
            coordinator_epoch: 0,
            commit,
        }
    }

    /// (producer id, first offset, marker offset) of every aborted transaction the index holds.
    fn aborted_ranges(log: &PartitionLog) -> Vec<(i64, i64, i64)> {
        log.all_aborted_transactions()
            .iter()
            .map(|a| (a.producer_id, a.first_offset, a.last_offset))
            .collect()
    }

    #[test]
    fn transactions_markers_and_the_aborted_index_across_rolls_reopens_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        let log = open(dir.path(), config.clone(), 0);
        // Producer 1 aborts a transaction spanning a roll; producer 2 commits one inside it;
        // producer 3 stays open.
        let mut sequences = [0i32; 4];
        let mut write = |log: &PartitionLog, producer: i64| {
            let at = sequences[producer as usize];
            sequences[producer as usize] += 2;
            log.append(producer_batch(producer, 0, at, 2, 100, true), 1000, 0)
                .expect("append")
                .base_offset
        };
        let first_1 = write(&log, 1);
        let first_2 = write(&log, 2);
        write(&log, 1);
        let (info, done) = log
            .append_marker(&marker(2, true), 1000, 0)
            .expect("commit");
        let commit_2 = info.base_offset;
        assert_eq!(
            done.map(|d| (d.first_offset, d.aborted)),
            Some((first_2, false))
        );
        for _ in 0..10 {
            write(&log, 1);
        }
        let first_3 = write(&log, 3);
        let (info, _) = log
            .append_marker(&marker(1, false), 1000, 0)
            .expect("abort");
        let abort_1 = info.base_offset;
        assert!(log.segment_count() > 2, "the test needs rolls");
        assert_eq!(aborted_ranges(&log), vec![(1, first_1, abort_1)]);
        let end = log.log_end_offset();
        assert_eq!(log.last_stable_offset(abort_1), first_1.min(first_3));
        assert_eq!(log.last_stable_offset(end), first_3);
        // A read_committed fetch from anywhere in the aborted range finds it.
        assert_eq!(log.aborted_transactions(first_1, first_3).len(), 1);
        assert_eq!(log.aborted_transactions(abort_1 + 1, end).len(), 0);
        // Only the abort's segment has a .txnindex file, in Kafka's 34-byte entries.
        let files: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".txnindex"))
            .collect();
        assert_eq!(files.len(), 1);
        let check = |log: &PartitionLog, why: &str| {
            assert_eq!(aborted_ranges(log), vec![(1, first_1, abort_1)], "{why}");
            assert_eq!(log.ongoing_transactions(), 1, "{why}");
            assert_eq!(log.last_stable_offset(end), first_3, "{why}");
        };
        log.close().expect("close");
        check(&open(dir.path(), config.clone(), i64::MAX), "clean reopen");
        // A crash that lost every snapshot and the index files: rebuilt from the log.
        for entry in fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            if path
                .extension()
                .is_some_and(|e| e == "snapshot" || e == "txnindex")
            {
                fs::remove_file(path).expect("remove");
            }
        }
        let log = open(dir.path(), config.clone(), 0);
        check(&log, "rebuilt from the log");
        // Producer 3 may not write outside its transaction.
        assert!(matches!(
            log.append(idempotent_batch(3, 0, 2, 1, 100), 1000, 0),
            Err(LogError::Sequence(SequenceError::InvalidTxnState { .. }))
        ));
        // Truncating below the abort marker reopens producer 1's transaction and drops the
        // index entry (a follower whose leader never replicated the marker).
        log.truncate_to(abort_1).expect("truncate");
        assert!(aborted_ranges(&log).is_empty());
        assert_eq!(log.ongoing_transactions(), 2);
        assert_eq!(log.last_stable_offset(i64::MAX), first_1);
        // A replicated abort marker (as a follower appends it) closes it again.
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let follower = open(follower_dir.path(), config.clone(), 0);
        while follower.log_end_offset() < log.log_end_offset() {
            let bytes = log
                .read(follower.log_end_offset(), 500, i64::MAX, true)
                .expect("read");
            follower.append_replicated(bytes).expect("replicate");
        }
        assert_eq!(follower.ongoing_transactions(), 2);
        let (info, _) = log
            .append_marker(&marker(1, false), 1000, 0)
            .expect("abort again");
        let tail = log
            .read(info.base_offset, usize::MAX, i64::MAX, true)
            .expect("read");
        follower.append_replicated(tail).expect("replicate marker");
        assert_eq!(follower.ongoing_transactions(), 1);
        assert_eq!(
            aborted_ranges(&follower),
            vec![(1, first_1, info.base_offset)]
        );
        assert!(commit_2 < first_3);
    }

    #[test]
    fn producer_state_is_rebuilt_from_snapshots_or_the_log_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        let mut originals = Vec::new();
        {
            let log = open(dir.path(), config.clone(), 0);
            for round in 0..6 {
                for producer in 0..3i64 {
                    let info = log
                        .append(idempotent_batch(producer, 0, round * 2, 2, 100), 1000, 0)
                        .expect("append");
                    originals.push((producer, round * 2, info.base_offset));
                }
            }
            assert!(log.segment_count() > 2, "the test needs rolls");
            // A snapshot at every roll, at the new segment's base.
            let bases = log.segment_base_offsets();
            assert_eq!(snapshot_offsets(&log), bases[1..].to_vec());
            log.close().expect("close");
            // And one at the log end on a clean close.
            assert_eq!(snapshot_offsets(&log).last(), Some(&log.log_end_offset()));
        }
        let retry_last = |log: &PartitionLog| {
            for &(producer, sequence, offset) in &originals[originals.len() - 3..] {
                let info = log
                    .append(idempotent_batch(producer, 0, sequence, 2, 100), 1000, 0)
                    .expect("retry");
                assert!(info.duplicate, "producer {producer} retry not recognised");
                assert_eq!(info.base_offset, offset);
            }
        };
        // Clean restart: from the close's snapshot.
        retry_last(&open(dir.path(), config.clone(), i64::MAX));
        // Every snapshot deleted, unclean restart: rebuilt from the batches.
        for entry in fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "snapshot") {
                fs::remove_file(path).expect("remove");
            }
        }
        let log = open(dir.path(), config.clone(), 0);
        assert_eq!(log.producer_count(), 3);
        retry_last(&log);
        // A write a crash interrupted leaves a temporary file: removed at open.
        let leftover = dir.path().join("00000000000000000001.snapshot.tmp");
        fs::write(&leftover, b"half").expect("leftover");
        drop(log);
        let log = open(dir.path(), config.clone(), 0);
        assert!(!leftover.exists());
        // A damaged snapshot is ignored (an older one or the log takes over).
        log.roll().expect("roll");
        log.close().expect("close");
        let newest = log.producer_snapshots().expect("list").pop().expect("one");
        fs::write(&newest.1, b"garbage").expect("damage");
        retry_last(&open(dir.path(), config, 0));
    }

    #[test]
    fn truncation_and_replication_keep_the_producer_state_in_step_with_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        let a = log
            .append(idempotent_batch(3, 0, 0, 3, 100), 1000, 0)
            .expect("a");
        let b = log
            .append(idempotent_batch(3, 0, 3, 3, 100), 1000, 0)
            .expect("b");
        // A follower appending what the leader stored deduplicates the leader's retries.
        let follower = open(follower_dir.path(), small_config(), 0);
        follower
            .append_replicated(log.read(0, MAX, i64::MAX, false).expect("read"))
            .expect("replicate");
        let again = follower
            .append(idempotent_batch(3, 0, 3, 3, 100), 1000, 1)
            .expect("retry on the new leader");
        assert!(again.duplicate);
        assert_eq!(again.base_offset, b.base_offset);
        // Truncating b away: its retry is new again, a's is still a duplicate.
        log.truncate_to(b.base_offset).expect("truncate");
        assert!(
            log.append(idempotent_batch(3, 0, 0, 3, 100), 1000, 0)
                .expect("a")
                .duplicate
        );
        let rewritten = log
            .append(idempotent_batch(3, 0, 3, 3, 100), 1000, 0)
            .expect("b");
        assert!(!rewritten.duplicate);
        assert_eq!(rewritten.base_offset, a.last_offset + 1);
        // Truncating everything forgets the producer.
        log.truncate_fully_and_start_at(100)
            .expect("truncate fully");
        assert_eq!(log.producer_count(), 0);
        assert!(snapshot_offsets(&log).is_empty());
    }

    #[test]
    fn append_assigns_dense_offsets_and_rewrites_headers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), LogConfig::default(), 0);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
        let info = log.append(batch(0, 3, 100), 1000, 7).expect("append");
        assert_eq!((info.base_offset, info.last_offset), (0, 2));
        assert_eq!(info.record_count, 3);
        assert_eq!(info.log_append_time_ms, -1);
        assert_eq!(info.max_timestamp_ms, 100);
        // Two batches in one request, both claiming base offset 0.
        let mut two = BytesMut::new();
        two.extend_from_slice(&batch(0, 2, 200));
        two.extend_from_slice(&batch(0, 4, 300));
        let info = log.append(two.freeze(), 1000, 8).expect("append");
        assert_eq!((info.base_offset, info.last_offset), (3, 8));
        assert_eq!(
            info.size_bytes,
            log.size_bytes() as usize - batch(0, 3, 100).len()
        );
        assert_eq!(log.log_end_offset(), 9);
        let stored = log.read(0, MAX, i64::MAX, false).expect("read");
        assert_eq!(offsets(&stored), vec![(0, 2), (3, 4), (5, 8)]);
        let epochs: Vec<i32> = batches(stored, usize::MAX)
            .map(|batch| batch.expect("valid").header().partition_leader_epoch())
            .collect();
        assert_eq!(epochs, vec![7, 8, 8]);
    }

    #[test]
    fn bad_batches_leave_the_log_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            max_message_bytes: 500,
            ..LogConfig::default()
        };
        let log = open(dir.path(), config, 0);
        let good = batch(0, 1, 1);
        let mut corrupt = BytesMut::from(&batch(0, 2, 1)[..]);
        let last = corrupt.len() - 3;
        corrupt[last] ^= 0x55;
        let mut request = BytesMut::new();
        request.extend_from_slice(&good);
        request.extend_from_slice(&corrupt);
        assert!(matches!(
            log.append(request.freeze(), 1, 0),
            Err(LogError::CorruptBatch(_))
        ));
        let big = batch_with(0, &[1], 600, Compression::None);
        assert!(matches!(
            log.append(big, 1, 0),
            Err(LogError::BatchTooLarge { max: 500, .. })
        ));
        let mut legacy = BytesMut::from(&good[..]);
        legacy[16] = 1;
        assert!(matches!(
            log.append(legacy.freeze(), 1, 0),
            Err(LogError::UnsupportedMagic(1))
        ));
        assert!(matches!(
            log.append(Bytes::new(), 1, 0),
            Err(LogError::CorruptBatch(_))
        ));
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
    }

    #[test]
    fn log_append_time_sets_timestamps_and_a_valid_crc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            message_timestamp_type: TimestampType::LogAppendTime,
            ..LogConfig::default()
        };
        let log = open(dir.path(), config, 0);
        let info = log
            .append(batch_with(0, &[5, 6, 7], 10, Compression::Gzip), 42_000, 1)
            .expect("append");
        assert_eq!(info.log_append_time_ms, 42_000);
        assert_eq!(info.max_timestamp_ms, 42_000);
        log.append(batch(0, 2, 8), 43_000, 1).expect("append");
        let stored = log.read(0, MAX, i64::MAX, false).expect("read");
        let all: Vec<_> = batches(stored, usize::MAX)
            .map(|batch| batch.expect("CRC still valid"))
            .collect();
        assert_eq!(all.len(), 2);
        for (batch, now) in all.iter().zip([42_000, 43_000]) {
            let header = batch.header();
            assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
            assert_eq!(header.max_timestamp_ms(), now);
            assert!(validate(batch.bytes(), MAX).is_ok());
        }
        assert_eq!(
            log.offset_for_timestamp(42_500).expect("lookup"),
            Some((3, 43_000))
        );
        assert_eq!(
            log.offset_for_timestamp(1).expect("lookup"),
            Some((0, 42_000))
        );
        assert_eq!(log.max_timestamp().expect("max"), Some((43_000, 3)));
    }

    #[test]
    fn an_append_spanning_too_many_offsets_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), LogConfig::default(), 0);
        // A compressed batch may claim any record count (it is not decompressed on append).
        let claim = |bytes: Bytes| {
            let mut bytes = BytesMut::from(&bytes[..]);
            let count = i32::MAX - 10;
            bytes[23..27].copy_from_slice(&(count - 1).to_be_bytes());
            bytes[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = crate::log::batch::compute_crc(&bytes);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            bytes.freeze()
        };
        let huge = claim(batch_with(0, &[1], 10, Compression::Lz4));
        let mut request = BytesMut::new();
        request.extend_from_slice(&huge);
        request.extend_from_slice(&huge);
        assert!(matches!(
            log.append(request.freeze(), 1, 0),
            Err(LogError::CorruptBatch(_))
        ));
        assert_eq!(log.log_end_offset(), 0);
        // One such batch fits (Kafka would find the count wrong only by decompressing).
        log.append(huge.clone(), 1, 0).expect("append");
        log.append(huge, 1, 0)
            .expect("rolls to a new segment first");
        assert_eq!(log.segment_count(), 2);
    }

    #[test]
    fn append_replicated_requires_continuity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), LogConfig::default(), 0);
        log.append_replicated(batch(0, 2, 1)).expect("append");
        assert!(matches!(
            log.append_replicated(batch(5, 1, 1)),
            Err(LogError::NonMonotonicOffset {
                expected_at_least: 2,
                got: 5
            })
        ));
        assert!(matches!(
            log.append_replicated(batch(1, 1, 1)),
            Err(LogError::NonMonotonicOffset { .. })
        ));
        let info = log.append_replicated(batch(2, 3, 1)).expect("append");
        assert_eq!((info.base_offset, info.last_offset), (2, 4));
        assert_eq!(log.log_end_offset(), 5);
    }

    #[test]
    fn rolls_by_bytes_and_reads_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        let mut expected = Vec::new();
        for i in 0..40 {
            log.append(batch(0, 2, i), 10, 0).expect("append");
            let mut stored = BytesMut::from(&batch(0, 2, i)[..]);
            crate::log::batch::set_base_offset(&mut stored, i * 2);
            expected.extend_from_slice(&stored);
        }
        assert!(log.segment_count() > 3, "{}", log.segment_count());
        for segment in read_lock(&log.segments).values() {
            assert!(segment.size_bytes() <= 600);
        }
        assert_eq!(read_all(&log), expected);
        // Every offset reads from the batch holding it, across segment boundaries.
        for offset in 0..80 {
            let bytes = log.read(offset, 100, i64::MAX, true).expect("read");
            let first = offsets(&bytes)[0];
            assert_eq!(first, (offset / 2 * 2, offset / 2 * 2 + 1));
        }
        // An append must fit in one segment (Kafka's RecordBatchTooLargeException).
        let mut request = BytesMut::new();
        for _ in 0..8 {
            request.extend_from_slice(&batch(0, 2, 1));
        }
        assert!(matches!(
            log.append(request.freeze(), 10, 0),
            Err(LogError::BatchTooLarge { max: 600, .. })
        ));
        assert_eq!(log.log_end_offset(), 80);
        // File names are the zero-padded base offsets.
        for base in log.segment_base_offsets() {
            assert!(dir.path().join(format!("{base:020}.log")).exists());
            assert!(dir.path().join(format!("{base:020}.index")).exists());
            assert!(dir.path().join(format!("{base:020}.timeindex")).exists());
        }
    }

    #[test]
    fn rolls_by_time_on_append_and_in_maybe_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_ms: 100,
            ..LogConfig::default()
        };
        let log = open(dir.path(), config, 0);
        assert!(
            !log.maybe_roll(1_000_000).expect("roll"),
            "empty never rolls"
        );
        log.append(batch(0, 1, 1), 1000, 0).expect("append");
        log.append(batch(0, 1, 1), 1100, 0).expect("append");
        assert_eq!(log.segment_count(), 1);
        log.append(batch(0, 1, 1), 1101, 0).expect("append");
        assert_eq!(log.segment_base_offsets(), vec![0, 2]);
        assert!(!log.maybe_roll(1150).expect("roll"));
        assert!(log.maybe_roll(1202).expect("roll"));
        assert_eq!(log.segment_base_offsets(), vec![0, 2, 3]);
        assert!(!log.maybe_roll(5000).expect("roll"), "new segment is empty");
    }

    #[test]
    fn rolls_when_the_index_is_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            index_interval_bytes: 0,
            // Two offset entries, one time entry.
            segment_index_bytes: 16,
            ..LogConfig::default()
        };
        let log = open(dir.path(), config, 0);
        for i in 0..12 {
            log.append(batch(0, 1, i), 1, 0).expect("append");
        }
        assert!(log.segment_count() >= 4, "{:?}", log.segment_base_offsets());
        for segment in read_lock(&log.segments).values() {
            assert!(segment.offset_index_entries().len() <= 2);
        }
        assert_eq!(read_all(&log).len(), 12 * batch(0, 1, 0).len());
    }

    #[test]
    fn retention_by_time_deletes_old_segments_and_advances_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            retention_ms: 1000,
            ..small_config()
        };
        let log = open(dir.path(), config, 0);
        // Record timestamps grow by 100 per batch.
        for i in 0..30 {
            log.append(batch(0, 2, i * 100), 1, 0).expect("append");
        }
        let before = log.segment_base_offsets();
        assert!(before.len() > 3);
        // Nothing is older than 1000 ms at time 3000 except segments whose newest record <2000.
        let deleted = log.enforce_retention(3000, i64::MAX).expect("retention");
        assert!(deleted > 0);
        let after = log.segment_base_offsets();
        assert_eq!(after.len(), before.len() - deleted);
        assert_eq!(log.log_start_offset(), after[0]);
        for segment in read_lock(&log.segments).values().take(after.len() - 1) {
            assert!(3000 - segment.largest_timestamp_ms().expect("ts") <= 1000);
        }
        assert!(matches!(
            log.read(0, MAX, i64::MAX, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(!log
            .read(log.log_start_offset(), MAX, i64::MAX, true)
            .expect("read")
            .is_empty());
        // Far in the future: all but the (non-empty) active segment go.
        log.enforce_retention(1_000_000, i64::MAX)
            .expect("retention");
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_end_offset(), 60);
        assert!(!log
            .read(log.log_start_offset(), MAX, i64::MAX, true)
            .expect("read")
            .is_empty());
        // Files are gone.
        assert!(!dir.path().join(format!("{:020}.log", 0)).exists());
    }

    #[test]
    fn retention_by_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        for i in 0..60 {
            log.append(batch(0, 1, i), 1, 0).expect("append");
        }
        let total = log.size_bytes();
        let limit = total / 2;
        log.set_config(LogConfig {
            retention_bytes: limit as i64,
            retention_ms: -1,
            ..small_config()
        });
        let deleted = log.enforce_retention(1, i64::MAX).expect("retention");
        assert!(deleted > 0);
        let size = log.size_bytes();
        assert!(size <= limit + 600, "{size}");
        // Deleting one more segment would have gone below the limit.
        let first = read_lock(&log.segments)
            .values()
            .next()
            .map_or(0, |segment| segment.size_bytes());
        assert!(size - first < limit);
        assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
        assert_eq!(log.enforce_retention(1, i64::MAX).expect("again"), 0);
    }

    /// Time and size retention never delete a segment holding offsets at or above the high
    /// watermark (issue 11, item 7): those may not be committed yet.
    #[test]
    fn retention_stops_at_the_high_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        for i in 0..60 {
            log.append(batch(0, 1, i), 1, 0).expect("append");
        }
        log.set_config(LogConfig {
            retention_bytes: 0,
            retention_ms: 0,
            ..small_config()
        });
        let bases = log.segment_base_offsets();
        assert!(bases.len() > 4);
        // The high watermark is inside the third segment: only the first two may go.
        let high_watermark = bases[2] + 1;
        assert_eq!(
            log.enforce_retention(1_000_000, high_watermark)
                .expect("retention"),
            2
        );
        assert_eq!(log.log_start_offset(), bases[2]);
        assert_eq!(
            log.enforce_retention(1_000_000, high_watermark)
                .expect("again"),
            0
        );
        // Once committed, the rest but the active segment goes.
        log.enforce_retention(1_000_000, log.log_end_offset())
            .expect("retention");
        assert_eq!(log.segment_count(), 1);
    }

    /// A follower whose log ends below its leader's log start restarts its log there: every
    /// segment goes, the epochs with them, and appends continue from the new start.
    #[test]
    fn truncate_fully_and_start_at_restarts_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        for _ in 0..10 {
            log.append(batch(0, 2, 1), 1, 3).expect("append");
        }
        assert_eq!(log.latest_epoch(), Some(3));
        log.truncate_fully_and_start_at(500).expect("truncate");
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.latest_epoch()
            ),
            (500, 500, None)
        );
        assert_eq!(log.segment_base_offsets(), vec![500]);
        log.append_replicated(batch(500, 2, 1))
            .expect("append at the new start");
        assert_eq!(log.log_end_offset(), 502);
        drop(log);
        let log = open(dir.path(), small_config(), 0);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 502));
    }

    /// A failed write or fsync takes the log offline (issue 11, item 5): no further write, and
    /// no clean close (what is on disk may lack what was written before the failure).
    #[test]
    fn a_failed_write_or_fsync_takes_the_log_offline() {
        use crate::log::faults::{self, Fault};
        for fault in [Fault::Write, Fault::Fsync] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), small_config(), 0);
            log.append(batch(0, 2, 1), 1, 0).expect("append");
            faults::inject(dir.path(), fault);
            let failed = match fault {
                Fault::Write => log.append(batch(0, 2, 1), 1, 0).map(|_| ()),
                Fault::Fsync => log.flush().map(|_| ()),
            };
            faults::clear(dir.path());
            assert!(
                matches!(failed, Err(LogError::Io(_))),
                "{fault:?}: {failed:?}"
            );
            assert!(log.is_offline(), "{fault:?}");
            assert!(log.append(batch(0, 1, 1), 1, 0).is_err(), "{fault:?}");
            assert_eq!(
                log.recovery_point(),
                0,
                "{fault:?}: nothing counts as flushed"
            );
            assert!(log.close().is_err(), "{fault:?}: not a clean close");
        }
    }

    #[test]
    fn read_semantics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), LogConfig::default(), 0);
        for _ in 0..5 {
            log.append(batch(0, 4, 1), 1, 0).expect("append");
        }
        let batch_bytes = batch(0, 4, 1).len();
        // Inside a batch: the whole batch from its base offset.
        let bytes = log.read(6, MAX, i64::MAX, false).expect("read");
        assert_eq!(offsets(&bytes), vec![(4, 7), (8, 11), (12, 15), (16, 19)]);
        // max_bytes cuts at whole batches; min_one_batch returns one oversized batch.
        let bytes = log
            .read(0, batch_bytes * 2 + 1, i64::MAX, false)
            .expect("read");
        assert_eq!(offsets(&bytes), vec![(0, 3), (4, 7)]);
        assert!(log.read(0, 10, i64::MAX, false).expect("read").is_empty());
        assert_eq!(
            offsets(&log.read(0, 10, i64::MAX, true).expect("read")),
            vec![(0, 3)]
        );
        // The high watermark excludes batches reaching it.
        assert_eq!(
            offsets(&log.read(0, MAX, 8, false).expect("read")),
            vec![(0, 3), (4, 7)]
        );
        assert_eq!(
            offsets(&log.read(0, MAX, 7, false).expect("read")),
            vec![(0, 3)]
        );
        assert!(log.read(5, MAX, 7, true).expect("read").is_empty());
        // At the end: empty; out of range: errors.
        assert!(log.read(20, MAX, i64::MAX, true).expect("read").is_empty());
        assert!(matches!(
            log.read(21, MAX, i64::MAX, true),
            Err(LogError::OffsetOutOfRange {
                offset: 21,
                log_start_offset: 0,
                log_end_offset: 20
            })
        ));
        log.advance_log_start_offset(5).expect("advance");
        assert!(matches!(
            log.read(4, MAX, i64::MAX, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // The start inside a batch still returns that whole batch.
        assert_eq!(
            offsets(&log.read(5, 1, i64::MAX, true).expect("read")),
            vec![(4, 7)]
        );
        assert!(matches!(
            log.advance_log_start_offset(21),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn offset_for_timestamp_across_segments_and_codecs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        assert_eq!(log.offset_for_timestamp(0).expect("lookup"), None);
        assert_eq!(log.max_timestamp().expect("max"), None);
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        // Batch i: 4 records at 1000*i + [40, 10, 30, 20] (not in order inside the batch).
        for i in 0..20i64 {
            let t = 1000 * i;
            let codec = codecs[i as usize % codecs.len()];
            log.append(
                batch_with(0, &[t + 40, t + 10, t + 30, t + 20], 100, codec),
                1,
                0,
            )
            .expect("append");
        }
        assert!(log.segment_count() > 2);
        for i in 0..20i64 {
            let t = 1000 * i;
            let base = 4 * i;
            assert_eq!(
                log.offset_for_timestamp(t).expect("lookup"),
                Some((base, t + 40))
            );
            assert_eq!(
                log.offset_for_timestamp(t + 35).expect("lookup"),
                Some((base, t + 40))
            );
            assert_eq!(
                log.offset_for_timestamp(t + 40).expect("lookup"),
                Some((base, t + 40))
            );
            let next = if i == 19 {
                None
            } else {
                Some((base + 4, t + 1040))
            };
            assert_eq!(log.offset_for_timestamp(t + 41).expect("lookup"), next);
        }
        assert_eq!(log.max_timestamp().expect("max"), Some((19_040, 76)));
        // Below the log start offset nothing is returned.
        log.advance_log_start_offset(41).expect("advance");
        assert_eq!(
            log.offset_for_timestamp(0).expect("lookup"),
            Some((41, 10_010))
        );
    }

    #[test]
    fn max_timestamp_prefers_the_first_record_on_ties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        log.append(batch_with(0, &[5, 9, 9], 10, Compression::Lz4), 1, 0)
            .expect("append");
        log.append(batch_with(0, &[9, 1], 10, Compression::None), 1, 0)
            .expect("append");
        assert_eq!(log.max_timestamp().expect("max"), Some((9, 1)));
    }

    #[test]
    fn flush_advances_the_recovery_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            flush_messages: 5,
            ..small_config()
        };
        let log = open(dir.path(), config, 0);
        assert_eq!(log.recovery_point(), 0);
        let info = log.append(batch(0, 3, 1), 1, 0).expect("append");
        assert!(!info.flush_needed);
        let info = log.append(batch(0, 3, 1), 1, 0).expect("append");
        assert!(info.flush_needed);
        assert_eq!(log.flush().expect("flush"), 6);
        assert_eq!(log.recovery_point(), 6);
        let info = log.append(batch(0, 1, 1), 1, 0).expect("append");
        assert!(!info.flush_needed);
        log.truncate_to(2).expect("truncate");
        assert_eq!(
            log.recovery_point(),
            0,
            "truncation drops the recovery point to the cut"
        );
    }

    #[test]
    fn recovery_cuts_torn_and_corrupt_tails_and_rebuilds_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (expected, last_base, last_size) = {
            let log = open(dir.path(), small_config(), 0);
            for i in 0..40 {
                log.append(batch(0, 2, i), 1, 0).expect("append");
            }
            log.flush().expect("flush");
            let last_base = *log.segment_base_offsets().last().expect("segment");
            (read_all(&log), last_base, batch(0, 2, 39).len())
        };
        let active_path = dir.path().join(format!("{last_base:020}.log"));
        // 1. Indexes deleted: rebuilt, contents unchanged (clean open).
        for base in [0, last_base] {
            std::fs::remove_file(dir.path().join(format!("{base:020}.index"))).expect("rm");
            std::fs::remove_file(dir.path().join(format!("{base:020}.timeindex"))).expect("rm");
        }
        {
            let log = open(dir.path(), small_config(), i64::MAX);
            assert_eq!(read_all(&log), expected);
            assert_eq!(log.log_end_offset(), 80);
            assert!(dir.path().join(format!("{:020}.index", 0)).exists());
            log.close().expect("close");
        }
        // 2. Torn tail: the last batch half written.
        let length = std::fs::metadata(&active_path).expect("meta").len();
        OpenOptions::new()
            .write(true)
            .open(&active_path)
            .expect("open")
            .set_len(length - 10)
            .expect("tear");
        {
            let log = open(dir.path(), small_config(), 0);
            assert_eq!(log.log_end_offset(), 78);
            assert_eq!(read_all(&log), expected[..expected.len() - last_size]);
            // Appends continue at the cut.
            let info = log.append(batch(0, 2, 39), 1, 0).expect("append");
            assert_eq!(info.base_offset, 78);
            assert_eq!(read_all(&log), expected);
        }
        // 3. Garbage in the middle of the last batch (unclean open from a recovery point in
        //    an earlier segment).
        let length = std::fs::metadata(&active_path).expect("meta").len();
        let file = OpenOptions::new()
            .write(true)
            .open(&active_path)
            .expect("open");
        file.write_all_at(&[0xde, 0xad, 0xbe, 0xef], length - (last_size as u64) / 2)
            .expect("corrupt");
        drop(file);
        let log = open(dir.path(), small_config(), 10);
        assert_eq!(log.log_end_offset(), 78);
        assert_eq!(read_all(&log), expected[..expected.len() - last_size]);
        assert_eq!(log.recovery_point(), 10);
    }

    #[test]
    fn recovery_deletes_segments_after_a_corrupt_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bases = {
            let log = open(dir.path(), small_config(), 0);
            for i in 0..40 {
                log.append(batch(0, 2, i), 1, 0).expect("append");
            }
            log.segment_base_offsets()
        };
        assert!(bases.len() >= 3);
        // Corrupt the first batch of the second segment.
        let path = dir.path().join(format!("{:020}.log", bases[1]));
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.write_all_at(b"\xff\xff", 70).expect("corrupt");
        drop(file);
        let log = open(dir.path(), small_config(), 0);
        assert_eq!(log.segment_base_offsets(), vec![0, bases[1]]);
        assert_eq!(log.log_end_offset(), bases[1]);
        assert!(!dir.path().join(format!("{:020}.log", bases[2])).exists());
        // Appends go on from there.
        assert_eq!(
            log.append(batch(0, 1, 1), 1, 0)
                .expect("append")
                .base_offset,
            bases[1]
        );
    }

    #[test]
    fn the_leader_epoch_cache_follows_appends_truncations_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        for _ in 0..5 {
            log.append(batch(0, 2, 1), 1, 0).expect("append");
        }
        for _ in 0..5 {
            log.append(batch(0, 2, 1), 1, 3).expect("append");
        }
        assert_eq!(log.latest_epoch(), Some(3));
        assert_eq!(log.end_offset_for_epoch(0), Some((0, 10)));
        assert_eq!(log.end_offset_for_epoch(2), Some((0, 10)));
        assert_eq!(log.end_offset_for_epoch(3), Some((3, 20)));
        log.truncate_to(8).expect("truncate");
        assert_eq!(log.latest_epoch(), Some(0));
        assert_eq!(log.end_offset_for_epoch(5), Some((0, 8)));
        log.append(batch(0, 2, 1), 1, 4).expect("append");
        drop(log);
        let log = open(dir.path(), small_config(), 0);
        assert_eq!(log.end_offset_for_epoch(0), Some((0, 8)));
        assert_eq!(log.end_offset_for_epoch(4), Some((4, 10)));
        drop(log);
        // Without its checkpoint the cache is rebuilt from the batches.
        std::fs::remove_file(dir.path().join("leader-epoch-checkpoint")).expect("remove");
        let log = open(dir.path(), small_config(), 0);
        assert_eq!(log.end_offset_for_epoch(0), Some((0, 8)));
        assert_eq!(log.latest_epoch(), Some(4));
    }

    #[test]
    fn truncate_to_mid_batch_and_below_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        for i in 0..40 {
            log.append(batch(0, 2, i), 1, 0).expect("append");
        }
        let segments_before = log.segment_count();
        log.truncate_to(81).expect("no-op past the end");
        assert_eq!(log.log_end_offset(), 80);
        log.truncate_to(31).expect("truncate");
        assert_eq!(log.log_end_offset(), 30);
        assert!(log.segment_count() < segments_before);
        let all = read_all(&log);
        assert_eq!(offsets(&Bytes::from(all)).last(), Some(&(28, 29)));
        assert_eq!(
            log.append(batch(0, 1, 1), 1, 0)
                .expect("append")
                .base_offset,
            30
        );
        // Below the log start: the log restarts empty there.
        log.advance_log_start_offset(20).expect("advance");
        log.truncate_to(10).expect("truncate");
        assert_eq!(log.log_start_offset(), 10);
        assert_eq!(log.log_end_offset(), 10);
        assert_eq!(log.segment_base_offsets(), vec![10]);
        assert_eq!(
            log.append(batch(0, 1, 1), 1, 0)
                .expect("append")
                .base_offset,
            10
        );
        drop(log);
        let log = open(dir.path(), small_config(), 0);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 11));
    }

    #[test]
    fn closed_and_deleted_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t-0");
        let log = open(&path, LogConfig::default(), 0);
        log.append(batch(0, 1, 1), 1, 0).expect("append");
        log.close().expect("close");
        log.close().expect("close twice");
        assert!(matches!(
            log.append(batch(0, 1, 1), 1, 0),
            Err(LogError::Io(_))
        ));
        assert_eq!(
            log.read(0, MAX, i64::MAX, true)
                .expect("reads still work")
                .len(),
            batch(0, 1, 1).len()
        );
        log.delete().expect("delete");
        assert!(!path.exists());
    }

    #[test]
    fn concurrent_reads_see_only_whole_published_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), small_config(), 0);
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..400 {
                    log.append(batch(0, 1 + (i % 3) as usize, i), 1, 0)
                        .expect("append");
                    if i % 50 == 0 {
                        log.flush().expect("flush");
                    }
                }
                done.store(true, Ordering::Release);
            });
            scope.spawn(|| {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) || reads < 100 {
                    let end = log.log_end_offset();
                    if end == 0 {
                        continue;
                    }
                    let offset = (reads as i64 * 7919) % end;
                    let bytes = log.read(offset, 4000, i64::MAX, true).expect("read");
                    let mut first = true;
                    for batch in batches(bytes, usize::MAX) {
                        let batch = batch.expect("whole, valid batches only");
                        if first {
                            assert!(batch.header().base_offset() <= offset);
                            assert!(batch.header().last_offset() >= offset);
                            first = false;
                        }
                    }
                    assert!(
                        !first,
                        "offset {offset} below the end {end} returned nothing"
                    );
                    reads += 1;
                }
            });
        });
    }

    /// One step of the random-operations test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Batches of (record count, value bytes).
        Append(Vec<(usize, usize)>),
        Read {
            offset_pick: u32,
            max_bytes: usize,
            limit_pick: u32,
            min_one_batch: bool,
        },
        Roll,
        Flush,
        Truncate(u32),
        Reopen {
            clean: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec((1usize..5, 0usize..150), 1..4).prop_map(Op::Append),
            3 => (any::<u32>(), 0usize..3000, any::<u32>(), any::<bool>()).prop_map(
                |(offset_pick, max_bytes, limit_pick, min_one_batch)| Op::Read {
                    offset_pick,
                    max_bytes,
                    limit_pick,
                    min_one_batch,
                }
            ),
            1 => Just(Op::Roll),
            1 => Just(Op::Flush),
            1 => any::<u32>().prop_map(Op::Truncate),
            1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        ]
    }

    /// The model: every stored batch, in order, as the log should hold it.
    #[derive(Default)]
    struct Model {
        batches: Vec<Bytes>,
    }

    impl Model {
        fn end(&self) -> i64 {
            self.batches
                .last()
                .and_then(|b| BatchHeader::parse(b).ok())
                .map_or(0, |h| h.last_offset() + 1)
        }

        fn header(batch: &Bytes) -> (i64, i64) {
            let header = BatchHeader::parse(batch).expect("header");
            (header.base_offset(), header.last_offset())
        }

        fn expected_read(
            &self,
            offset: i64,
            max_bytes: usize,
            limit: i64,
            min_one_batch: bool,
            segment_bases: &[i64],
        ) -> Vec<u8> {
            let Some(start) = self
                .batches
                .iter()
                .position(|b| Model::header(b).1 >= offset)
            else {
                return Vec::new();
            };
            let first_base = Model::header(&self.batches[start]).0;
            let segment_end = segment_bases
                .iter()
                .copied()
                .find(|&base| base > first_base)
                .unwrap_or(i64::MAX);
            let mut out = Vec::new();
            for (index, batch) in self.batches[start..].iter().enumerate() {
                let (base, last) = Model::header(batch);
                if base >= segment_end || last >= limit {
                    break;
                }
                let fits = out.len() + batch.len() <= max_bytes || (index == 0 && min_one_batch);
                if !fits {
                    break;
                }
                out.extend_from_slice(batch);
            }
            out
        }
    }

    fn run_ops(ops: Vec<Op>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 2500,
            index_interval_bytes: 150,
            segment_index_bytes: 96,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone(), 0);
        let mut model = Model::default();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append(specs) => {
                    let mut request = BytesMut::new();
                    let mut expected = Vec::new();
                    let mut next = model.end();
                    for (index, (count, value_bytes)) in specs.iter().enumerate() {
                        let codec = if (step + index) % 5 == 0 {
                            Compression::Lz4
                        } else {
                            Compression::None
                        };
                        let timestamps: Vec<i64> =
                            (0..*count).map(|r| (step * 10 + r) as i64).collect();
                        let original = batch_with(0, &timestamps, *value_bytes, codec);
                        request.extend_from_slice(&original);
                        let mut stored = BytesMut::from(&original[..]);
                        crate::log::batch::set_base_offset(&mut stored, next);
                        crate::log::batch::set_partition_leader_epoch(&mut stored, 3);
                        next += *count as i64;
                        expected.push(stored.freeze());
                    }
                    let info = log.append(request.freeze(), 1, 3).expect("append");
                    assert_eq!(info.base_offset, model.end());
                    model.batches.extend(expected);
                    assert_eq!(info.last_offset + 1, model.end());
                }
                Op::Read {
                    offset_pick,
                    max_bytes,
                    limit_pick,
                    min_one_batch,
                } => {
                    let end = model.end();
                    let offset = i64::from(offset_pick) % (end + 1);
                    let limit = if limit_pick % 3 == 0 {
                        i64::MAX
                    } else {
                        i64::from(limit_pick) % (end + 2)
                    };
                    let got = log
                        .read(offset, max_bytes, limit, min_one_batch)
                        .expect("read");
                    let want = if offset >= limit {
                        Vec::new()
                    } else {
                        model.expected_read(
                            offset,
                            max_bytes,
                            limit,
                            min_one_batch,
                            &log.segment_base_offsets(),
                        )
                    };
                    assert_eq!(&got[..], &want[..], "read({offset}, {max_bytes}, {limit})");
                }
                Op::Roll => {
                    let active_base = log.segment_base_offsets().last().copied();
                    let rolled = log.roll().expect("roll");
                    assert_eq!(rolled, active_base < Some(model.end()));
                }
                Op::Flush => {
                    assert_eq!(log.flush().expect("flush"), model.end());
                }
                Op::Truncate(pick) => {
                    let end = model.end();
                    let offset = i64::from(pick) % (end + 1);
                    log.truncate_to(offset).expect("truncate");
                    if let Some(cut) = model
                        .batches
                        .iter()
                        .position(|b| Model::header(b).1 >= offset)
                    {
                        model.batches.truncate(cut);
                    }
                }
                Op::Reopen { clean } => {
                    let recovery_point = if clean {
                        log.close().expect("close");
                        i64::MAX
                    } else {
                        log.recovery_point()
                    };
                    drop(log);
                    log = open(dir.path(), config.clone(), recovery_point);
                }
            }
            assert_eq!(log.log_end_offset(), model.end(), "after step {step}");
            assert!(log.recovery_point() <= log.log_end_offset());
            let all: Vec<u8> = model
                .batches
                .iter()
                .flat_map(|b| b.iter().copied())
                .collect();
            assert_eq!(read_all(&log), all, "contents after step {step}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn random_operations_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
            run_ops(ops);
        }
    }
}
