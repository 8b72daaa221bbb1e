//! Log compaction (`cleanup.policy=compact`): Apache Kafka's log cleaner for one partition log.
//!
//! A record with key K at offset O is obsolete once a record with key K exists at a later
//! offset. The cleaner removes obsolete records from the non-active segments, keeps the latest
//! record of every key at its original offset, and keeps a tombstone (null value) until its
//! batch's *delete horizon* has passed. Offsets never change; a compacted log simply has gaps.
//!
//! # One compaction ([`PartitionLog::compact`], under the log's cleaner lock)
//! 1. **What is dirty.** The log splits at the *first dirty offset* (where the previous
//!    compaction stopped, persisted in `cleaner-offset-checkpoint`; the log start at first) into
//!    a clean head and a dirty tail. The dirty tail is cleanable up to the *first uncleanable
//!    offset*: the base of the segment holding the smallest of the caller's upper bound (the
//!    last stable offset, so no open transaction is ever cleaned), the active segment's base,
//!    and the base of the first dirty segment with a record newer than `min.compaction.lag.ms`.
//!    Nothing is done unless the dirty ratio (cleanable bytes / clean + cleanable bytes) is
//!    above `min.cleanable.dirty.ratio`, or a dirty segment's first batch is older than
//!    `max.compaction.lag.ms` (Kafka's `LogCleanerManager`).
//! 2. **The offset map.** Key → latest offset over the cleanable range, keys stored as a
//!    128-bit digest (24 bytes an entry, as Kafka's `SkimpyOffsetMap`) with at most
//!    `log.cleaner.dedupe.buffer.size / 24 * 0.9` entries. When the range holds more keys, the
//!    map covers the prefix that fits and this compaction cleans only up to there; the next one
//!    goes on from there. The digests use randomly keyed SipHash, so no producer can aim a
//!    collision at another key.
//! 3. **Recopy.** Every segment below the end of the mapped range (clean head included, as in
//!    Kafka) is recopied in groups: adjacent segments whose total `.log` stays within
//!    `segment.bytes` and whose indexes stay within `segment.index.bytes` become one segment
//!    with the first one's base offset (Kafka's `groupSegmentsBySize`). A record is kept iff its
//!    offset is past the mapped range, or it has a key and is the latest for it and (it has a
//!    value, or its batch has no delete horizon yet, or the horizon is still in the future).
//!    Records without a key are dropped, as Kafka's cleaner does (a compacted log refuses them
//!    at produce time, so only a log that was once `delete` has any).
//! 4. **Batches** (Kafka's `MemoryRecords.filterTo`): a batch whose records all stay is copied
//!    byte for byte; one that loses records is rewritten with the same base offset,
//!    `lastOffsetDelta`, producer id, epoch, base sequence, partition leader epoch, attributes
//!    and compression codec, the kept records at their original offset deltas, a new record
//!    count, base timestamp (the first kept record's), max timestamp and CRC. A kept tombstone in
//!    a batch without a delete horizon gets one: `baseTimestamp` becomes `now +
//!    delete.retention.ms` and attribute bit 6 is set (KIP-534), record timestamps being
//!    re-expressed against it so every absolute timestamp stays the same. A batch that loses all
//!    its records goes, except (Kafka's `RETAIN_EMPTY`) the last data batch of a producer id
//!    (sequence numbers) and the batch ending right before the first uncleanable offset (the
//!    segment's last offset); those stay as an empty 61-byte header with their offsets.
//! 5. **Swap** ([`PartitionLog::replace_segments`]): a group's cleaned segment is written as
//!    `<base>.log.cleaned` (+ `.index.cleaned`, `.timeindex.cleaned`, indexes built as on
//!    append), fsynced, then swapped in: `.cleaned` → `.swap` and a directory fsync, the old
//!    segments' files → `.deleted`, `.swap` → final names, a directory fsync, one update of the
//!    segment map, removal of the `.deleted` files. Readers holding old segments keep reading
//!    their open files; a reader walking segments restarts its lookup after a swap.
//!
//! # Crash recovery ([`finish_interrupted_swaps`], from `PartitionLog::open`; Kafka's
//! `LogLoader`)
//! `.deleted` files are removed; `.cleaned` files are removed, and so is any `.swap` file whose
//! base is at or above the lowest `.cleaned` base (that swap never completed); every other
//! `.log.swap` is complete: the segment files it replaces (bases from its base up to its next
//! offset) are removed and the `.swap` files take their final names.
//!
//! # Transactions ([`transactions`])
//! Below the last stable offset every transaction has ended. Aborted data stays out of the
//! offset map and is removed whole (its producer's last batch may stay as an empty header);
//! committed data is cleaned like any other. A marker stays while a batch of its transaction
//! does, then gets a delete horizon like a tombstone's and goes once that has passed. The
//! cleaned segment's `.txnindex` keeps the aborts whose data it still holds.
//!
//! # Not done (yet)
//! - Producer state: without producer-id expiry, the last batch of every producer id found in the
//!   log is kept (possibly empty) for as long as it is that producer's last.
//! - The cleaner is not throttled (`log.cleaner.io.max.bytes.per.second`); the caller bounds the
//!   work per run.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use super::batch::{
    self, Batch, BatchFields, RawRecord, TimestampType, COMPRESSION_MASK, DELETE_HORIZON_MASK,
    NO_TIMESTAMP,
};
use super::partition_log::{LogConfig, PartitionLog};
use super::segment::{
    self, AppendBatch, Segment, CLEANED_FILE_SUFFIX, DELETED_FILE_SUFFIX, LOG_FILE_SUFFIX,
    SEGMENT_BYTES_MAX, SEGMENT_FILE_SUFFIXES, SWAP_FILE_SUFFIX,
};
use super::LogError;
use transactions::TxnTracker;

mod transactions;

/// Kafka's `log.cleaner.dedupe.buffer.size` default.
pub const DEDUPE_BUFFER_BYTES_DEFAULT: u64 = 134_217_728;
/// Bytes one offset map entry stands for: a 16-byte key digest and an 8-byte offset (Kafka's
/// `SkimpyOffsetMap` with MD5).
pub const OFFSET_MAP_ENTRY_BYTES: u64 = 24;
/// Kafka's `log.cleaner.io.buffer.load.factor`: the share of the map's slots that may be used.
const OFFSET_MAP_LOAD_FACTOR: f64 = 0.9;
/// Retained batches are written to the cleaned segment in runs of about this many bytes.
const WRITE_CHUNK_BYTES: usize = 512 * 1024;

/// What the caller decides for one compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionSettings {
    /// Nothing at or above this offset is cleaned: the last stable offset (at most the high
    /// watermark). The segment holding it is not cleaned either.
    pub upper_bound_offset: i64,
    /// `log.cleaner.dedupe.buffer.size`: memory for the offset map, at
    /// [`OFFSET_MAP_ENTRY_BYTES`] an entry.
    pub dedupe_buffer_bytes: u64,
}

impl CompactionSettings {
    /// Settings with Kafka's default dedupe buffer, cleaning below `upper_bound_offset`.
    pub fn below(upper_bound_offset: i64) -> CompactionSettings {
        CompactionSettings {
            upper_bound_offset,
            dedupe_buffer_bytes: DEDUPE_BUFFER_BYTES_DEFAULT,
        }
    }
}

/// How a compaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionOutcome {
    /// Segments were recopied and swapped in.
    Cleaned,
    /// The log's `cleanup.policy` does not include `compact`.
    NotCompacted,
    /// No cleanable bytes (an empty log, or nothing below the bounds).
    NothingToClean,
    /// The dirty ratio is not above `min.cleanable.dirty.ratio` and no segment is past
    /// `max.compaction.lag.ms`.
    NotDirtyEnough,
    /// The log was closed, deleted or truncated, or lost a segment to retention, meanwhile;
    /// groups already swapped in stay, the first dirty offset does not move.
    Aborted,
}

/// What one compaction did (bytes and records, for logs and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionStats {
    /// How it ended.
    pub outcome: CompactionOutcome,
    /// Where the dirty part of the log started.
    pub first_dirty_offset: i64,
    /// The cleanable range ended before this offset.
    pub first_uncleanable_offset: i64,
    /// The first offset not cleaned: the next compaction's first dirty offset.
    pub end_offset: i64,
    /// Cleanable bytes / (clean + cleanable bytes) before cleaning.
    pub dirty_ratio: f64,
    /// Keys in the offset map.
    pub map_entries: usize,
    /// The dirty range had more keys than the map holds: only a prefix was cleaned.
    pub map_full: bool,
    /// Segments recopied.
    pub segments_before: usize,
    /// Segments they became.
    pub segments_after: usize,
    /// Bytes of the segments recopied.
    pub bytes_before: u64,
    /// Bytes of the segments they became.
    pub bytes_after: u64,
    /// Records looked at while recopying.
    pub records_read: u64,
    /// Records kept.
    pub records_retained: u64,
    /// Tombstones dropped (obsolete, or past their delete horizon).
    pub tombstones_removed: u64,
    /// Records without a key dropped.
    pub keyless_removed: u64,
    /// Batches rewritten (records dropped, or a delete horizon set).
    pub batches_rewritten: u64,
    /// Batches kept as an empty header.
    pub batches_emptied: u64,
    /// Batches dropped whole.
    pub batches_removed: u64,
    /// Batches that got a delete horizon (with tombstones, or markers whose transaction has
    /// no batch left).
    pub delete_horizons_set: u64,
    /// Records of aborted transactions dropped.
    pub aborted_records_removed: u64,
    /// Transaction markers dropped (their transaction's data gone, their horizon passed).
    pub markers_removed: u64,
}

impl CompactionStats {
    fn new(outcome: CompactionOutcome) -> CompactionStats {
        CompactionStats {
            outcome,
            first_dirty_offset: -1,
            first_uncleanable_offset: -1,
            end_offset: -1,
            dirty_ratio: 0.0,
            map_entries: 0,
            map_full: false,
            segments_before: 0,
            segments_after: 0,
            bytes_before: 0,
            bytes_after: 0,
            records_read: 0,
            records_retained: 0,
            tombstones_removed: 0,
            keyless_removed: 0,
            batches_rewritten: 0,
            batches_emptied: 0,
            batches_removed: 0,
            delete_horizons_set: 0,
            aborted_records_removed: 0,
            markers_removed: 0,
        }
    }

    /// Records dropped.
    pub fn records_removed(&self) -> u64 {
        self.records_read.saturating_sub(self.records_retained)
    }
}

/// How dirty a log is, as the cleaner sees it (Kafka's `LogToClean`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    /// Where the dirty part starts.
    pub first_dirty_offset: i64,
    /// Base of the first segment that may not be cleaned now.
    pub first_uncleanable_offset: i64,
    /// Bytes of the segments below the first dirty offset.
    pub clean_bytes: u64,
    /// Bytes of the dirty segments below the first uncleanable offset.
    pub cleanable_bytes: u64,
    /// `cleanable / (clean + cleanable)`, 0 for an empty log.
    pub dirty_ratio: f64,
    /// How long past `max.compaction.lag.ms` the oldest dirty segment is (0: not overdue).
    pub compaction_overdue_ms: i64,
}

impl Cleanable {
    /// Kafka's rule: overdue with something to clean, or dirtier than the ratio.
    pub fn should_clean(&self, min_cleanable_dirty_ratio: f64) -> bool {
        self.cleanable_bytes > 0
            && (self.compaction_overdue_ms > 0 || self.dirty_ratio > min_cleanable_dirty_ratio)
    }
}

/// Key digest → latest offset in one preallocated-as-needed open-addressing table, bounded like
/// Kafka's `SkimpyOffsetMap`: at most `dedupe_buffer_bytes / 24` slots of a 16-byte digest and
/// an 8-byte offset (the table grows by doubling up to that), at most 90% of them used.
#[derive(Debug)]
struct OffsetMap {
    /// 0 marks an empty slot (a key whose digest is 0 is stored as 1).
    digests: Vec<u128>,
    offsets: Vec<i64>,
    /// The most slots the table may grow to.
    slots_max: usize,
    entries: usize,
    entries_max: usize,
    /// The last offset the map covers (Kafka's `latestOffset`); -1 when empty.
    latest_offset: i64,
    high: RandomState,
    low: RandomState,
}

impl OffsetMap {
    /// Slots a table starts with (or all of them if fewer are allowed).
    const SLOTS_INITIAL: usize = 1024;

    fn new(dedupe_buffer_bytes: u64) -> OffsetMap {
        let slots_max =
            usize::try_from(dedupe_buffer_bytes / OFFSET_MAP_ENTRY_BYTES).unwrap_or(usize::MAX);
        // At least two slots, and always one empty, so probing ends.
        let slots_max = slots_max.max(2);
        let entries_max =
            ((slots_max as f64 * OFFSET_MAP_LOAD_FACTOR) as usize).clamp(1, slots_max - 1);
        OffsetMap {
            digests: Vec::new(),
            offsets: Vec::new(),
            slots_max,
            entries: 0,
            entries_max,
            latest_offset: -1,
            high: RandomState::new(),
            low: RandomState::new(),
        }
    }

    fn len(&self) -> usize {
        self.entries
    }

    fn digest(&self, key: &[u8]) -> u128 {
        let high = self.high.hash_one(key);
        let low = self.low.hash_one(key);
        ((u128::from(high) << 64) | u128::from(low)).max(1)
    }

    /// The slot holding `digest`, or the empty slot where it would go. The table is never
    /// full, so this ends.
    fn slot(&self, digest: u128) -> usize {
        let slots = self.digests.len();
        let mut index = (digest as u64 % slots as u64) as usize;
        while self.digests[index] != 0 && self.digests[index] != digest {
            index = (index + 1) % slots;
        }
        index
    }

    /// Doubles the table (up to `slots_max`) when the next entry would pass 90% load.
    fn maybe_grow(&mut self) {
        let slots = self.digests.len();
        if slots > 0 && (self.entries + 1) * 10 <= slots * 9 {
            return;
        }
        let grown = (slots * 2).max(Self::SLOTS_INITIAL).min(self.slots_max);
        if grown <= slots {
            return;
        }
        let digests = std::mem::replace(&mut self.digests, vec![0; grown]);
        let offsets = std::mem::replace(&mut self.offsets, vec![0; grown]);
        for (digest, offset) in digests.into_iter().zip(offsets) {
            if digest != 0 {
                let index = self.slot(digest);
                self.digests[index] = digest;
                self.offsets[index] = offset;
            }
        }
    }

    /// Records `key` at `offset`; `false` (and nothing recorded) once the map is full, as in
    /// Kafka even for a key already in it.
    fn put(&mut self, key: &[u8], offset: i64) -> bool {
        if self.entries >= self.entries_max {
            return false;
        }
        self.maybe_grow();
        let digest = self.digest(key);
        let index = self.slot(digest);
        if self.digests[index] == 0 {
            self.digests[index] = digest;
            self.entries += 1;
        }
        self.offsets[index] = offset;
        self.latest_offset = self.latest_offset.max(offset);
        true
    }

    /// The latest offset of `key`, -1 if it is not in the map.
    fn get(&self, key: &[u8]) -> i64 {
        if self.digests.is_empty() {
            return -1;
        }
        let index = self.slot(self.digest(key));
        if self.digests[index] == 0 {
            -1
        } else {
            self.offsets[index]
        }
    }

    fn update_latest_offset(&mut self, offset: i64) {
        self.latest_offset = self.latest_offset.max(offset);
    }
}

/// Index of the segment holding `offset` (the last with base `<=` it).
fn floor_index(segments: &[Arc<Segment>], offset: i64) -> Option<usize> {
    segments
        .iter()
        .rposition(|segment| segment.base_offset() <= offset)
}

/// Kafka's `logSegments(from, to)`: the segments with a base in `[floor(from), to)`.
fn segments_in_range(segments: &[Arc<Segment>], from: i64, to: i64) -> &[Arc<Segment>] {
    if from >= to {
        return &[];
    }
    let start = floor_index(segments, from).unwrap_or(0);
    let end = segments
        .iter()
        .position(|segment| segment.base_offset() >= to)
        .unwrap_or(segments.len());
    if start >= end {
        return &[];
    }
    &segments[start..end]
}

/// How dirty `log` is (see [`Cleanable`]); `segments` is a snapshot of its segment map.
pub(super) fn cleanable(
    log: &PartitionLog,
    segments: &[Arc<Segment>],
    config: &LogConfig,
    now_ms: i64,
    upper_bound_offset: i64,
) -> Result<Cleanable, LogError> {
    let log_start_offset = log.log_start_offset();
    let log_end_offset = log.log_end_offset();
    let first_dirty_offset = match log.cleaner_checkpoint() {
        Some(offset) if offset >= log_start_offset && offset <= log_end_offset => offset,
        _ => log_start_offset,
    };
    let Some((active, non_active)) = segments.split_last() else {
        return Ok(Cleanable {
            first_dirty_offset,
            first_uncleanable_offset: first_dirty_offset,
            clean_bytes: 0,
            cleanable_bytes: 0,
            dirty_ratio: 0.0,
            compaction_overdue_ms: 0,
        });
    };
    // Kafka's `nonActiveLogSegmentsFrom(firstDirtyOffset)`.
    let dirty_non_active = match floor_index(segments, first_dirty_offset) {
        Some(index) if index < non_active.len() => &non_active[index..],
        Some(_) => &non_active[non_active.len()..],
        None => non_active,
    };
    // The smallest of: the upper bound, the active segment, the first segment within the
    // minimum compaction lag.
    let mut uncleanable = upper_bound_offset.min(active.base_offset());
    let min_lag_ms = config.min_compaction_lag_ms.max(0);
    if min_lag_ms > 0 {
        for segment in dirty_non_active {
            if segment.largest_timestamp_ms()? > now_ms.saturating_sub(min_lag_ms) {
                uncleanable = uncleanable.min(segment.base_offset());
                break;
            }
        }
    }
    let uncleanable = uncleanable.max(first_dirty_offset);
    // Kafka's `calculateCleanableBytes`: only whole segments are cleaned, so the segment
    // holding the uncleanable offset is not.
    let first_uncleanable_offset = match floor_index(segments, uncleanable) {
        Some(index) if index < non_active.len() => non_active[index].base_offset(),
        _ => active.base_offset(),
    };
    let size_of = |range: &[Arc<Segment>]| -> u64 { range.iter().map(|s| s.size_bytes()).sum() };
    let clean_bytes = size_of(segments_in_range(segments, i64::MIN, first_dirty_offset));
    let cleanable_bytes = size_of(segments_in_range(
        segments,
        first_dirty_offset.min(first_uncleanable_offset),
        first_uncleanable_offset,
    ));
    let total = clean_bytes + cleanable_bytes;
    let dirty_ratio = if total == 0 {
        0.0
    } else {
        cleanable_bytes as f64 / total as f64
    };
    // Kafka's `maxCompactionDelay`: the first batch timestamps of the dirty segments.
    let mut compaction_overdue_ms = 0;
    let max_lag_ms = config.max_compaction_lag_ms.max(0);
    if max_lag_ms < i64::MAX {
        let clean_until_ms = now_ms.saturating_sub(max_lag_ms);
        let mut earliest_ms = i64::MAX;
        for segment in dirty_non_active {
            if let Some(timestamp_ms) = segment.first_batch_max_timestamp_ms()? {
                if timestamp_ms > 0 {
                    earliest_ms = earliest_ms.min(timestamp_ms);
                }
            }
        }
        if earliest_ms < clean_until_ms {
            compaction_overdue_ms = clean_until_ms - earliest_ms;
        }
    }
    Ok(Cleanable {
        first_dirty_offset,
        first_uncleanable_offset,
        clean_bytes,
        cleanable_bytes,
        dirty_ratio,
        compaction_overdue_ms,
    })
}

/// Whether a step ran to its end or the log changed under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Done,
    Aborted,
}

/// What every batch of one compaction is judged by.
struct Round<'a> {
    now_ms: i64,
    delete_retention_ms: i64,
    /// Kafka's `upperBoundOffsetOfCleaningRound` (the first uncleanable offset).
    upper_bound_offset: i64,
    /// Producer id → last offset of its last data batch in the log.
    producers: &'a HashMap<i64, i64>,
    map: &'a OffsetMap,
    truncations: u64,
    index_interval_bytes: u32,
    /// How far a batch's records may decompress (`max.message.bytes` based).
    decompressed_max_bytes: usize,
}

/// One compaction of `log` (see the module doc). The caller holds the log's cleaner lock.
pub(super) fn compact(
    log: &PartitionLog,
    now_ms: i64,
    settings: &CompactionSettings,
) -> Result<CompactionStats, LogError> {
    let started = Instant::now();
    let config = log.config();
    if !config.cleanup_policy.compact {
        return Ok(CompactionStats::new(CompactionOutcome::NotCompacted));
    }
    let truncations = log.truncation_count();
    if log.cleaning_must_stop(truncations) {
        return Ok(CompactionStats::new(CompactionOutcome::Aborted));
    }
    let segments = log.segments_snapshot();
    let range = cleanable(log, &segments, &config, now_ms, settings.upper_bound_offset)?;
    let mut stats = CompactionStats::new(CompactionOutcome::Cleaned);
    stats.first_dirty_offset = range.first_dirty_offset;
    stats.first_uncleanable_offset = range.first_uncleanable_offset;
    stats.end_offset = range.first_dirty_offset;
    stats.dirty_ratio = range.dirty_ratio;
    if range.cleanable_bytes == 0 {
        stats.outcome = CompactionOutcome::NothingToClean;
        return Ok(stats);
    }
    if !range.should_clean(config.min_cleanable_dirty_ratio) {
        stats.outcome = CompactionOutcome::NotDirtyEnough;
        return Ok(stats);
    }

    let mut map = OffsetMap::new(settings.dedupe_buffer_bytes);
    if build_offset_map(log, &segments, &range, &mut map, &mut stats, truncations)?
        == Progress::Aborted
    {
        stats.outcome = CompactionOutcome::Aborted;
        return Ok(stats);
    }
    stats.map_entries = map.len();
    let end_offset = (map.latest_offset + 1).max(range.first_dirty_offset);
    stats.end_offset = end_offset;
    if end_offset <= range.first_dirty_offset {
        stats.outcome = CompactionOutcome::NothingToClean;
        return Ok(stats);
    }

    let producers = last_batch_of_producers(&segments)?;
    // Every segment below the end of the mapped range; never the active one (the end is at
    // most the first uncleanable offset, at most the active segment's base).
    let to_clean: Vec<Arc<Segment>> = match segments.split_last() {
        Some((_, non_active)) => non_active
            .iter()
            .filter(|segment| segment.base_offset() < end_offset)
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let groups = group_segments_by_size(
        &to_clean,
        config.segment_bytes.min(SEGMENT_BYTES_MAX),
        u64::from(config.segment_index_bytes),
        range.first_uncleanable_offset,
    );
    let round = Round {
        now_ms,
        delete_retention_ms: config.delete_retention_ms.max(0),
        upper_bound_offset: range.first_uncleanable_offset,
        producers: &producers,
        map: &map,
        truncations,
        index_interval_bytes: config.index_interval_bytes,
        decompressed_max_bytes: super::compression::decompressed_max_bytes(
            config.max_message_bytes as usize,
        ),
    };
    // One walk over every group, in offset order: a transaction may span groups.
    let walk_start = to_clean
        .first()
        .map_or(end_offset, |first| first.base_offset());
    let mut transactions =
        TxnTracker::new(log.aborted_transactions(walk_start, range.first_uncleanable_offset));
    for group in &groups {
        if clean_group(log, &config, group, &round, &mut transactions, &mut stats)?
            == Progress::Aborted
        {
            stats.outcome = CompactionOutcome::Aborted;
            debug!(dir = %log.dir().display(), ?stats, "compaction aborted: the log changed");
            return Ok(stats);
        }
    }
    log.set_first_dirty_offset(end_offset);
    debug!(
        dir = %log.dir().display(),
        first_dirty_offset = stats.first_dirty_offset,
        end_offset,
        dirty_ratio = stats.dirty_ratio,
        map_entries = stats.map_entries,
        map_full = stats.map_full,
        segments_before = stats.segments_before,
        segments_after = stats.segments_after,
        bytes_before = stats.bytes_before,
        bytes_after = stats.bytes_after,
        records_read = stats.records_read,
        records_removed = stats.records_removed(),
        tombstones_removed = stats.tombstones_removed,
        keyless_removed = stats.keyless_removed,
        delete_horizons_set = stats.delete_horizons_set,
        aborted_records_removed = stats.aborted_records_removed,
        markers_removed = stats.markers_removed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compacted log"
    );
    Ok(stats)
}

/// Fills `map` with key → latest offset over the cleanable range (Kafka's `buildOffsetMap`),
/// stopping when the map is full; `map.latest_offset` then says how far it got.
fn build_offset_map(
    log: &PartitionLog,
    segments: &[Arc<Segment>],
    range: &Cleanable,
    map: &mut OffsetMap,
    stats: &mut CompactionStats,
    truncations: u64,
) -> Result<Progress, LogError> {
    let decompressed_max_bytes =
        super::compression::decompressed_max_bytes(log.config().max_message_bytes as usize);
    let start = range.first_dirty_offset;
    let dirty = segments_in_range(segments, start, range.first_uncleanable_offset);
    let mut transactions =
        TxnTracker::new(log.aborted_transactions(start, range.first_uncleanable_offset));
    for (index, segment) in dirty.iter().enumerate() {
        let next_start = dirty
            .get(index + 1)
            .map_or(range.first_uncleanable_offset, |next| next.base_offset());
        let position = if segment.base_offset() < start {
            match segment.find_batch(start)? {
                Some(location) => location.position,
                None => segment.size_bytes(),
            }
        } else {
            0
        };
        for item in segment.batches_from(position) {
            if log.cleaning_must_stop(truncations) {
                return Ok(Progress::Aborted);
            }
            let (_, batch) = item?;
            let header = batch.header();
            // Markers and aborted data stay out of the map.
            let skip = if header.is_control() {
                let marker = batch::marker_record(&batch, decompressed_max_bytes)?;
                transactions.on_control_batch(&header, marker, header.records_count() == 0);
                true
            } else {
                transactions.on_data_batch(&header)
            };
            if !skip {
                let base_offset = header.base_offset();
                let mut full = false;
                batch::for_each_record(&batch, decompressed_max_bytes, |record| {
                    let offset = base_offset + i64::from(record.offset_delta);
                    if full || offset < start {
                        return;
                    }
                    if let Some(key) = record.key {
                        if !map.put(key, offset) {
                            full = true;
                        }
                    }
                })?;
                if full {
                    stats.map_full = true;
                    debug!(
                        dir = %log.dir().display(),
                        segment = segment.base_offset(),
                        latest_offset = map.latest_offset,
                        "offset map full: cleaning a prefix of the dirty range"
                    );
                    return Ok(Progress::Done);
                }
            }
            if header.last_offset() >= start {
                map.update_latest_offset(header.last_offset());
            }
        }
        // Offsets missing at the end of a segment (an earlier compaction) are covered too.
        map.update_latest_offset(next_start - 1);
    }
    Ok(Progress::Done)
}

/// Producer id → last offset of its last data batch anywhere in the log (from batch headers).
fn last_batch_of_producers(segments: &[Arc<Segment>]) -> Result<HashMap<i64, i64>, LogError> {
    let mut producers = HashMap::new();
    for segment in segments {
        segment.scan_batch_locations(|location| {
            if location.producer_id >= 0 && !location.is_control {
                producers.insert(location.producer_id, location.last_offset);
            }
        })?;
    }
    Ok(producers)
}

/// Kafka's `groupSegmentsBySize`: runs of adjacent segments whose `.log` sizes sum to at most
/// `size_max`, whose offset and time indexes each sum to at most `index_bytes_max`, and whose
/// offsets stay within `i32::MAX` of the group's base (estimated from the next segment's base,
/// or `first_uncleanable_offset` for the last one).
fn group_segments_by_size(
    segments: &[Arc<Segment>],
    size_max: u64,
    index_bytes_max: u64,
    first_uncleanable_offset: i64,
) -> Vec<Vec<Arc<Segment>>> {
    let mut groups = Vec::new();
    let mut index = 0;
    while index < segments.len() {
        let first = &segments[index];
        let mut group = vec![Arc::clone(first)];
        let mut log_bytes = first.size_bytes();
        let mut offset_index_bytes = first.offset_index_bytes();
        let mut time_index_bytes = first.time_index_bytes();
        index += 1;
        while let Some(candidate) = segments.get(index) {
            let last_offset_estimate = segments
                .get(index + 1)
                .map_or(first_uncleanable_offset, |next| next.base_offset())
                - 1;
            let fits = log_bytes + candidate.size_bytes() <= size_max
                && offset_index_bytes + candidate.offset_index_bytes() <= index_bytes_max
                && time_index_bytes + candidate.time_index_bytes() <= index_bytes_max
                && (candidate.size_bytes() == 0
                    || last_offset_estimate - first.base_offset() <= i64::from(i32::MAX));
            if !fits {
                break;
            }
            log_bytes += candidate.size_bytes();
            offset_index_bytes += candidate.offset_index_bytes();
            time_index_bytes += candidate.time_index_bytes();
            group.push(Arc::clone(candidate));
            index += 1;
        }
        groups.push(group);
    }
    groups
}

/// Removes a leftover `.cleaned` or `.swap` segment of `base_offset` (an earlier compaction
/// that stopped half-way).
fn remove_leftovers(dir: &Path, base_offset: i64) -> Result<(), LogError> {
    for suffix in [CLEANED_FILE_SUFFIX, SWAP_FILE_SUFFIX] {
        for kind in SEGMENT_FILE_SUFFIXES {
            segment::remove_if_present(&segment::file_path(dir, base_offset, kind, suffix))?;
        }
    }
    Ok(())
}

/// Recopies `group` into one cleaned segment and swaps it in.
fn clean_group(
    log: &PartitionLog,
    config: &LogConfig,
    group: &[Arc<Segment>],
    round: &Round<'_>,
    transactions: &mut TxnTracker,
    stats: &mut CompactionStats,
) -> Result<Progress, LogError> {
    let Some(first) = group.first() else {
        return Ok(Progress::Done);
    };
    let base_offset = first.base_offset();
    remove_leftovers(log.dir(), base_offset)?;
    let cleaned = Segment::create_with_suffix(
        log.dir(),
        base_offset,
        config.segment_index_bytes,
        CLEANED_FILE_SUFFIX,
    )?;
    let mut group_stats = CompactionStats::new(CompactionOutcome::Cleaned);
    match fill_cleaned(log, &cleaned, group, round, transactions, &mut group_stats) {
        Ok(Progress::Done) => {}
        Ok(Progress::Aborted) => {
            cleaned.delete_files()?;
            return Ok(Progress::Aborted);
        }
        Err(error) => {
            if let Err(cleanup_error) = cleaned.delete_files() {
                warn!(
                    dir = %log.dir().display(),
                    error = %cleanup_error,
                    "cannot remove a cleaned segment"
                );
            }
            return Err(error);
        }
    }
    let bytes_before: u64 = group.iter().map(|segment| segment.size_bytes()).sum();
    let bytes_after = cleaned.size_bytes();
    let aborted = transactions.take_indexed();
    if !log.replace_segments(cleaned, group, round.truncations, aborted)? {
        return Ok(Progress::Aborted);
    }
    debug!(
        dir = %log.dir().display(),
        base_offset,
        segments = group.len(),
        bytes_before,
        bytes_after,
        records_read = group_stats.records_read,
        records_removed = group_stats.records_removed(),
        "swapped in cleaned segment"
    );
    stats.segments_before += group.len();
    stats.segments_after += 1;
    stats.bytes_before += bytes_before;
    stats.bytes_after += bytes_after;
    stats.records_read += group_stats.records_read;
    stats.records_retained += group_stats.records_retained;
    stats.tombstones_removed += group_stats.tombstones_removed;
    stats.keyless_removed += group_stats.keyless_removed;
    stats.batches_rewritten += group_stats.batches_rewritten;
    stats.batches_emptied += group_stats.batches_emptied;
    stats.batches_removed += group_stats.batches_removed;
    stats.delete_horizons_set += group_stats.delete_horizons_set;
    stats.aborted_records_removed += group_stats.aborted_records_removed;
    stats.markers_removed += group_stats.markers_removed;
    Ok(Progress::Done)
}

/// Writes what `group` keeps into `cleaned`, with its indexes, and fsyncs it.
fn fill_cleaned(
    log: &PartitionLog,
    cleaned: &Segment,
    group: &[Arc<Segment>],
    round: &Round<'_>,
    transactions: &mut TxnTracker,
    stats: &mut CompactionStats,
) -> Result<Progress, LogError> {
    let base_offset = cleaned.base_offset();
    let mut pending: Vec<AppendBatch> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut written_bytes = 0u64;
    for source in group {
        for item in source.batches_from(0) {
            if log.cleaning_must_stop(round.truncations) {
                return Ok(Progress::Aborted);
            }
            let (_, batch) = item?;
            let Some(kept) = filter_batch(batch, round, transactions, stats)? else {
                continue;
            };
            let header = kept.header();
            if header.last_offset() - base_offset > i64::from(i32::MAX) {
                return Err(LogError::corrupt(format!(
                    "cleaned segment {base_offset} cannot address offset {}",
                    header.last_offset()
                )));
            }
            written_bytes += kept.size_bytes() as u64;
            if written_bytes > SEGMENT_BYTES_MAX {
                return Err(LogError::corrupt(format!(
                    "cleaned segment {base_offset} would exceed {SEGMENT_BYTES_MAX} bytes"
                )));
            }
            pending_bytes += kept.size_bytes();
            pending.push(AppendBatch::unchanged(&kept));
            if pending_bytes >= WRITE_CHUNK_BYTES {
                cleaned.append(&pending, round.index_interval_bytes, round.now_ms)?;
                pending.clear();
                pending_bytes = 0;
            }
        }
    }
    cleaned.append(&pending, round.index_interval_bytes, round.now_ms)?;
    cleaned.on_become_inactive()?;
    if let Some(last) = group.last() {
        cleaned.set_modified_ms(last.modified_ms()?)?;
    }
    cleaned.sync()?;
    Ok(Progress::Done)
}

/// What happens to a batch none of whose records stay (Kafka's `BatchRetention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmptyBatch {
    Delete,
    KeepHeader,
}

/// The batch as the cleaned segment keeps it, if at all (see the module doc, step 4, and
/// [`transactions`]).
fn filter_batch(
    batch: Batch,
    round: &Round<'_>,
    transactions: &mut TxnTracker,
    stats: &mut CompactionStats,
) -> Result<Option<Batch>, LogError> {
    let header = batch.header();
    let count = u64::try_from(header.records_count()).unwrap_or(0);
    stats.records_read += count;
    let horizon_ms = header.delete_horizon_ms();
    let is_control = header.is_control();
    // Kafka's `checkBatchRetention`: a marker may go once nothing of its transaction is left
    // and its horizon has passed; an aborted transaction's data goes at once.
    let (marker_may_go, discard) = if is_control {
        let marker = batch::marker_record(&batch, round.decompressed_max_bytes)?;
        let may_go = transactions.on_control_batch(&header, marker, count == 0);
        (
            may_go,
            may_go && horizon_ms.is_some_and(|horizon| horizon <= round.now_ms),
        )
    } else {
        let aborted = transactions.on_data_batch(&header);
        (false, aborted)
    };
    let producer_last = header.producer_id() >= 0
        && round.producers.get(&header.producer_id()) == Some(&header.last_offset());
    let when_empty = if producer_last || header.next_offset() == round.upper_bound_offset {
        EmptyBatch::KeepHeader
    } else {
        EmptyBatch::Delete
    };
    if discard {
        if is_control {
            stats.markers_removed += 1;
        } else {
            stats.aborted_records_removed += count;
        }
        return emptied(&batch, when_empty, stats);
    }
    let retain_tombstones = horizon_ms.is_none_or(|horizon| round.now_ms < horizon);
    let base_offset = header.base_offset();
    let records = batch::decompressed_records(&batch, round.decompressed_max_bytes)?;
    let mut kept: Vec<RawRecord<'_>> = Vec::new();
    let mut removed = 0u64;
    let mut kept_tombstone = false;
    batch::walk_raw_records(
        &records,
        header.records_count(),
        batch::OffsetDeltas::Ascending {
            last_offset_delta: header.last_offset_delta(),
        },
        |record| {
            let offset = base_offset + i64::from(record.offset_delta);
            let keep = if is_control || offset > round.map.latest_offset {
                true
            } else if let Some(key) = record.key {
                offset >= round.map.get(key) && (record.value.is_some() || retain_tombstones)
            } else {
                stats.keyless_removed += 1;
                false
            };
            if keep {
                kept_tombstone |= !is_control && record.value.is_none();
                kept.push(record);
            } else {
                removed += 1;
                if record.key.is_some() && record.value.is_none() {
                    stats.tombstones_removed += 1;
                }
            }
        },
    )?;
    stats.records_retained += kept.len() as u64;
    if kept.is_empty() {
        return emptied(&batch, when_empty, stats);
    }
    let set_horizon = (kept_tombstone || marker_may_go) && horizon_ms.is_none();
    if removed == 0 && !set_horizon {
        return Ok(Some(batch));
    }
    let new_horizon_ms = if set_horizon {
        stats.delete_horizons_set += 1;
        Some(round.now_ms.saturating_add(round.delete_retention_ms))
    } else {
        horizon_ms
    };
    stats.batches_rewritten += 1;
    rewrite(&batch, &kept, new_horizon_ms).map(Some)
}

/// What is left of a batch that keeps none of its records.
fn emptied(
    batch: &Batch,
    when_empty: EmptyBatch,
    stats: &mut CompactionStats,
) -> Result<Option<Batch>, LogError> {
    match when_empty {
        EmptyBatch::Delete => {
            stats.batches_removed += 1;
            Ok(None)
        }
        EmptyBatch::KeepHeader => {
            stats.batches_emptied += 1;
            empty_header(batch).map(Some)
        }
    }
}

/// `batch` with only the `kept` records (at their original offset deltas) and the given delete
/// horizon; everything else as Kafka's `buildRetainedRecordsInto` keeps it.
fn rewrite(
    batch: &Batch,
    kept: &[RawRecord<'_>],
    delete_horizon_ms: Option<i64>,
) -> Result<Batch, LogError> {
    let header = batch.header();
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    // A record's timestamp as readers see it (LogAppendTime: the batch's max timestamp).
    let timestamp_of = |record: &RawRecord<'_>| -> Result<i64, LogError> {
        if log_append_time {
            return Ok(header.max_timestamp_ms());
        }
        header
            .base_timestamp_ms()
            .checked_add(record.timestamp_delta_ms)
            .ok_or_else(|| LogError::corrupt("record timestamp overflows"))
    };
    let mut timestamps = Vec::with_capacity(kept.len());
    for record in kept {
        timestamps.push(timestamp_of(record)?);
    }
    let first_timestamp_ms = timestamps.first().copied().unwrap_or(NO_TIMESTAMP);
    let base_timestamp_ms = delete_horizon_ms.unwrap_or(first_timestamp_ms);
    let max_timestamp_ms = if log_append_time {
        header.max_timestamp_ms()
    } else {
        timestamps.iter().copied().max().unwrap_or(NO_TIMESTAMP)
    };
    let mut records = Vec::with_capacity(kept.iter().map(|r| r.body.len() + 12).sum());
    for (record, timestamp_ms) in kept.iter().zip(&timestamps) {
        let delta_ms = timestamp_ms
            .checked_sub(base_timestamp_ms)
            .ok_or_else(|| LogError::corrupt("record timestamp delta overflows"))?;
        let attributes = record.body.first().copied().unwrap_or(0);
        batch::put_record(&mut records, attributes, delta_ms, record.tail);
    }
    let mut attributes = header.attributes() & !DELETE_HORIZON_MASK;
    if delete_horizon_ms.is_some() {
        attributes |= DELETE_HORIZON_MASK;
    }
    let fields = BatchFields {
        base_offset: header.base_offset(),
        partition_leader_epoch: header.partition_leader_epoch(),
        attributes,
        last_offset_delta: header.last_offset_delta(),
        base_timestamp_ms,
        max_timestamp_ms,
        producer_id: header.producer_id(),
        producer_epoch: header.producer_epoch(),
        base_sequence: header.base_sequence(),
    };
    let count = i32::try_from(kept.len()).map_err(|_| LogError::corrupt("too many records"))?;
    let bytes = batch::encode_batch(&fields, &records, count)?;
    Batch::new_stored(bytes, usize::MAX)
}

/// The header-only batch Kafka keeps for a batch whose records all went
/// (`DefaultRecordBatch.writeEmptyHeader`): same offsets, producer fields, partition leader
/// epoch, timestamp type, transactional and control bits and max timestamp; no compression,
/// base timestamp -1, no record.
fn empty_header(batch: &Batch) -> Result<Batch, LogError> {
    let header = batch.header();
    let fields = BatchFields {
        base_offset: header.base_offset(),
        partition_leader_epoch: header.partition_leader_epoch(),
        attributes: header.attributes() & !COMPRESSION_MASK & !DELETE_HORIZON_MASK,
        last_offset_delta: header.last_offset_delta(),
        base_timestamp_ms: NO_TIMESTAMP,
        max_timestamp_ms: header.max_timestamp_ms(),
        producer_id: header.producer_id(),
        producer_epoch: header.producer_epoch(),
        base_sequence: header.base_sequence(),
    };
    let bytes = batch::encode_batch(&fields, &[], 0)?;
    Batch::new_stored(bytes, usize::MAX)
}

/// `<20-digit base><kind><suffix>` → (base, kind), for the three segment file kinds.
fn parse_segment_file(name: &str, suffix: &str) -> Option<(i64, &'static str)> {
    let stem = name.strip_suffix(suffix)?;
    SEGMENT_FILE_SUFFIXES
        .iter()
        .find_map(|&kind| segment::parse_base_offset(stem, kind).map(|base| (base, kind)))
}

/// Finishes or undoes what a crash interrupted, before `dir`'s segments are loaded (Kafka's
/// `LogLoader`; see the module doc).
pub(super) fn finish_interrupted_swaps(dir: &Path, config: &LogConfig) -> Result<(), LogError> {
    let mut cleaned = Vec::new();
    let mut swaps = Vec::new();
    let mut changed = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if parse_segment_file(&name, DELETED_FILE_SUFFIX).is_some() {
            debug!(path = %entry.path().display(), "removing replaced segment file");
            fs::remove_file(entry.path())?;
            changed = true;
        } else if let Some((base, _)) = parse_segment_file(&name, CLEANED_FILE_SUFFIX) {
            cleaned.push((base, entry.path()));
        } else if let Some((base, kind)) = parse_segment_file(&name, SWAP_FILE_SUFFIX) {
            swaps.push((base, kind, entry.path()));
        }
    }
    let cleaned_base_min = cleaned.iter().map(|(base, _)| *base).min();
    let (incomplete, complete): (Vec<_>, Vec<_>) = swaps
        .into_iter()
        .partition(|(base, _, _)| cleaned_base_min.is_some_and(|min| *base >= min));
    for (_, _, path) in incomplete.iter() {
        warn!(path = %path.display(), "removing a swap file of an interrupted cleaner swap");
        fs::remove_file(path)?;
        changed = true;
    }
    for (_, path) in &cleaned {
        debug!(path = %path.display(), "removing a leftover cleaned segment file");
        fs::remove_file(path)?;
        changed = true;
    }
    // The offsets the complete swaps cover: the segments there were replaced.
    let mut replaced: Option<(i64, i64)> = None;
    for (base, kind, _) in &complete {
        if *kind != LOG_FILE_SUFFIX {
            continue;
        }
        let opened = Segment::open_with_suffix(
            dir,
            *base,
            config.segment_index_bytes,
            config.index_interval_bytes,
            true,
            SWAP_FILE_SUFFIX,
        )?;
        let end = opened.segment.next_offset().max(*base + 1);
        replaced = Some(match replaced {
            Some((low, high)) => (low.min(*base), high.max(end)),
            None => (*base, end),
        });
    }
    if let Some((low, high)) = replaced {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some((base, _)) = parse_segment_file(&name, "") {
                if base >= low && base < high {
                    warn!(
                        path = %entry.path().display(),
                        "removing a segment file replaced by an interrupted cleaner swap"
                    );
                    fs::remove_file(entry.path())?;
                }
            }
        }
    }
    for (base, kind, path) in &complete {
        warn!(path = %path.display(), "completing an interrupted cleaner swap");
        fs::rename(path, segment::file_path(dir, *base, kind, ""))?;
        changed = true;
    }
    if changed {
        segment::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
