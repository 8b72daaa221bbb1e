//! Tests of the log cleaner: unit tests against real partition logs in temporary directories,
//! crash leftovers, every codec, and a random-operations model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as WireTimestampType,
};
use proptest::prelude::*;

use super::*;
use crate::log::batch::{stored_batches, BatchHeader, BATCH_HEADER_BYTES};
use crate::log::{CleanupPolicy, LogConfig, PartitionLog};

const MAX: usize = 1 << 20;

type Entry<'a> = (Option<&'a str>, Option<&'a str>);

/// One batch of keyed records (offsets from 0; the log assigns the real ones).
fn batch_of(
    entries: &[Entry<'_>],
    timestamp_ms: i64,
    compression: Compression,
    producer_id: i64,
) -> Bytes {
    encode_entries(entries, timestamp_ms, compression, producer_id, false, 0)
}

/// `entries` as one batch of `producer_id` (epoch 0 if it has one) from `base_sequence`.
fn encode_entries(
    entries: &[Entry<'_>],
    timestamp_ms: i64,
    compression: Compression,
    producer_id: i64,
    transactional: bool,
    base_sequence: i32,
) -> Bytes {
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(index, (key, value))| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            timestamp_type: WireTimestampType::Creation,
            offset: index as i64,
            sequence: base_sequence + index as i32,
            timestamp: timestamp_ms + index as i64,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf.freeze()
}

fn keyed(entries: &[Entry<'_>], timestamp_ms: i64) -> Bytes {
    batch_of(entries, timestamp_ms, Compression::None, -1)
}

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 100,
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1000,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir.to_path_buf(), config, 0).expect("open")
}

/// Every stored batch, read through the log from its start.
fn stored(log: &PartitionLog) -> Vec<Batch> {
    let mut all = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let bytes = log.read(offset, MAX, i64::MAX, true).expect("read");
        let batches: Vec<Batch> = stored_batches(bytes, usize::MAX)
            .map(|batch| batch.expect("stored batches are valid"))
            .collect();
        let Some(last) = batches.last() else {
            return all;
        };
        offset = last.header().last_offset() + 1;
        all.extend(batches);
    }
}

/// (offset, key, value, timestamp) of every record in the log.
type Row = (i64, Option<String>, Option<String>, i64);

fn rows(log: &PartitionLog) -> Vec<Row> {
    let text = |bytes: &Option<Bytes>| {
        bytes
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    stored(log)
        .iter()
        .flat_map(|batch| batch::decode_records(batch, usize::MAX).expect("decode"))
        .map(|record| {
            (
                record.offset,
                text(&record.key),
                text(&record.value),
                record.timestamp,
            )
        })
        .collect()
}

fn compact_all(log: &PartitionLog, now_ms: i64) -> CompactionStats {
    log.compact(now_ms, &CompactionSettings::below(log.log_end_offset()))
        .expect("compact")
}

/// Appends single-record batches `key = value-<round>` for `keys` over `rounds` rounds.
fn fill(log: &PartitionLog, keys: usize, rounds: usize, timestamp_ms: i64) {
    for round in 0..rounds {
        for key in 0..keys {
            let (k, v) = (format!("k{key}"), format!("v{round}"));
            log.append(
                keyed(&[(Some(&k), Some(&v))], timestamp_ms),
                timestamp_ms,
                0,
            )
            .expect("append");
        }
    }
}

#[test]
fn keeps_the_latest_value_of_each_key_at_its_original_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compact_config());
    fill(&log, 5, 20, 1000);
    log.roll().expect("roll");
    let end = log.log_end_offset();
    let segments_before = log.segment_count();
    let before = log.size_bytes();
    let stats = compact_all(&log, 2000);
    assert_eq!(stats.outcome, CompactionOutcome::Cleaned);
    assert_eq!(stats.records_read, 100);
    assert_eq!(stats.records_removed(), 95);
    assert_eq!(stats.end_offset, end);
    assert_eq!(log.log_end_offset(), end, "offsets never change");
    assert!(log.size_bytes() < before);
    // Full segments stay one for one; the next compaction merges the now small ones.
    assert_eq!(log.segment_count(), segments_before);
    assert_eq!(stats.segments_before, stats.segments_after);
    let want: Vec<Row> = (0..5)
        .map(|key| {
            (
                95 + key,
                Some(format!("k{key}")),
                Some("v19".to_string()),
                1000,
            )
        })
        .collect();
    assert_eq!(rows(&log), want);
    // Fetching from a removed offset returns the next batch that is still there.
    let bytes = log.read(3, MAX, i64::MAX, true).expect("read");
    let first = stored_batches(bytes, usize::MAX)
        .next()
        .expect("a batch")
        .expect("valid");
    assert_eq!(first.header().base_offset(), 95);
    // A second compaction right away has nothing to do.
    assert_eq!(
        compact_all(&log, 2000).outcome,
        CompactionOutcome::NothingToClean
    );
    // Appends go on after the compacted segments.
    let info = log
        .append(keyed(&[(Some("k0"), Some("later"))], 3000), 3000, 0)
        .expect("append");
    assert_eq!(info.base_offset, end);
    log.roll().expect("roll");
    let stats = compact_all(&log, 4000);
    assert_eq!(stats.segments_after, 1, "small segments merge into one");
    assert_eq!(log.segment_count(), 2);
    assert_eq!(
        log.segment_base_offsets()[0],
        0,
        "the merged segment keeps the first base"
    );
    let offsets: Vec<i64> = rows(&log).iter().map(|row| row.0).collect();
    assert_eq!(offsets, vec![96, 97, 98, 99, end]);
}

#[test]
fn the_active_segment_and_offsets_at_the_upper_bound_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compact_config());
    fill(&log, 2, 5, 1000);
    // Everything in the active segment: nothing to clean.
    assert_eq!(
        compact_all(&log, 2000).outcome,
        CompactionOutcome::NothingToClean
    );
    log.roll().expect("roll");
    let first_segment_end = log.log_end_offset();
    fill(&log, 2, 5, 1000);
    log.roll().expect("roll");
    let second_segment_base = first_segment_end;
    // An upper bound inside the second segment: only the first is cleaned.
    let stats = log
        .compact(2000, &CompactionSettings::below(second_segment_base + 3))
        .expect("compact");
    assert_eq!(stats.outcome, CompactionOutcome::Cleaned);
    assert_eq!(stats.first_uncleanable_offset, second_segment_base);
    let offsets: Vec<i64> = rows(&log).iter().map(|row| row.0).collect();
    // The first segment keeps k0=v4 (8) and k1=v4 (9); the second is untouched.
    assert_eq!(offsets, vec![8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
}

#[test]
fn tombstones_stay_until_their_delete_horizon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compact_config());
    log.append(
        keyed(&[(Some("a"), Some("1")), (Some("b"), Some("1"))], 100),
        100,
        0,
    )
    .expect("append");
    log.append(keyed(&[(Some("a"), None)], 200), 200, 0)
        .expect("append");
    log.roll().expect("roll");
    let stats = compact_all(&log, 10_000);
    assert_eq!(stats.delete_horizons_set, 1);
    assert_eq!(
        rows(&log),
        vec![
            (1, Some("b".into()), Some("1".into()), 101),
            (2, Some("a".into()), None, 200)
        ]
    );
    let tombstone_batch = stored(&log)
        .into_iter()
        .find(|batch| batch.header().base_offset() == 2)
        .expect("tombstone batch");
    assert_eq!(tombstone_batch.header().delete_horizon_ms(), Some(11_000));
    assert_eq!(tombstone_batch.header().max_timestamp_ms(), 200);

    // Dirty data again, before the horizon: the tombstone stays.
    log.append(keyed(&[(Some("c"), Some("1"))], 300), 300, 0)
        .expect("append");
    log.roll().expect("roll");
    let stats = compact_all(&log, 10_999);
    assert_eq!(stats.outcome, CompactionOutcome::Cleaned);
    assert_eq!(stats.delete_horizons_set, 0, "the horizon is set once");
    assert!(rows(&log).iter().any(|row| row.0 == 2 && row.2.is_none()));

    // After the horizon it goes.
    log.append(keyed(&[(Some("d"), Some("1"))], 400), 400, 0)
        .expect("append");
    log.roll().expect("roll");
    let stats = compact_all(&log, 11_000);
    assert_eq!(stats.tombstones_removed, 1);
    let keys: Vec<Option<String>> = rows(&log).into_iter().map(|row| row.1).collect();
    assert_eq!(
        keys,
        vec![Some("b".into()), Some("c".into()), Some("d".into())]
    );
}

#[test]
fn partially_kept_batches_are_rewritten_with_their_codec() {
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), compact_config());
        let first = batch_of(
            &[
                (Some("a"), Some("1")),
                (Some("b"), Some("1")),
                (Some("c"), Some("1")),
                (Some("a"), Some("2")),
            ],
            5000,
            compression,
            -1,
        );
        log.append(first, 1, 4).expect("append");
        log.append(
            batch_of(&[(Some("b"), Some("2"))], 7000, compression, -1),
            1,
            4,
        )
        .expect("append");
        log.roll().expect("roll");
        let stats = compact_all(&log, 9000);
        assert_eq!(stats.batches_rewritten, 1, "{compression:?}");
        assert_eq!(
            rows(&log),
            vec![
                (2, Some("c".into()), Some("1".into()), 5002),
                (3, Some("a".into()), Some("2".into()), 5003),
                (4, Some("b".into()), Some("2".into()), 7000),
            ],
            "{compression:?}"
        );
        let batches = stored(&log);
        let header = batches[0].header();
        assert_eq!(header.base_offset(), 0, "the base offset stays");
        assert_eq!(header.last_offset(), 3, "so does the last offset");
        assert_eq!(header.records_count(), 2);
        assert_eq!(header.compression().expect("codec"), compression);
        assert_eq!(header.partition_leader_epoch(), 4);
        assert_eq!(header.base_timestamp_ms(), 5002, "the first kept record's");
        assert_eq!(header.max_timestamp_ms(), 5003);
        assert_eq!(header.delete_horizon_ms(), None);
        // kafka-protocol's own decoder (an independent CRC check) reads it too.
        let mut bytes = batches[0].bytes().clone();
        let decoded =
            kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).expect("decodes");
        assert_eq!(decoded.records.len(), 2);
        // The untouched batch is byte for byte what was stored.
        assert_eq!(batches[1].header().records_count(), 1);
    }
}

#[test]
fn compressed_tombstones_get_a_horizon_and_keep_their_timestamps() {
    for compression in [
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Snappy,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), compact_config());
        log.append(
            batch_of(
                &[(Some("x"), Some("1")), (Some("y"), None)],
                500,
                compression,
                -1,
            ),
            1,
            0,
        )
        .expect("append");
        log.roll().expect("roll");
        let stats = compact_all(&log, 2000);
        assert_eq!(stats.delete_horizons_set, 1, "{compression:?}");
        assert_eq!(stats.records_removed(), 0);
        let batches = stored(&log);
        assert_eq!(batches[0].header().delete_horizon_ms(), Some(3000));
        assert_eq!(batches[0].header().base_timestamp_ms(), 3000);
        assert_eq!(
            batches[0].header().compression().expect("codec"),
            compression
        );
        assert_eq!(
            rows(&log),
            vec![
                (0, Some("x".into()), Some("1".into()), 500),
                (1, Some("y".into()), None, 501)
            ]
        );
    }
}

#[test]
fn log_append_time_batches_keep_their_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        message_timestamp_type: crate::log::TimestampType::LogAppendTime,
        ..compact_config()
    };
    let log = open(dir.path(), config);
    log.append(
        keyed(&[(Some("a"), Some("1")), (Some("b"), Some("1"))], 1),
        4242,
        0,
    )
    .expect("append");
    log.append(keyed(&[(Some("a"), Some("2"))], 1), 4343, 0)
        .expect("append");
    log.roll().expect("roll");
    compact_all(&log, 5000);
    let batches = stored(&log);
    assert_eq!(batches.len(), 2);
    let header = batches[0].header();
    assert_eq!(header.timestamp_type(), batch::TimestampType::LogAppendTime);
    assert_eq!(header.max_timestamp_ms(), 4242);
    assert_eq!(
        batch::record_timestamps(&batches[0], usize::MAX).expect("timestamps"),
        vec![(1, 4242)]
    );
}

#[test]
fn the_last_batch_of_a_producer_and_of_the_round_stay_as_empty_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compact_config());
    // Offset 0: producer 7's only batch; offsets 1-2: plain; 3: supersedes them all.
    log.append(
        batch_of(&[(Some("a"), Some("1"))], 100, Compression::Gzip, 7),
        1,
        0,
    )
    .expect("append");
    log.append(
        keyed(&[(Some("a"), Some("2")), (Some("b"), Some("1"))], 100),
        1,
        0,
    )
    .expect("append");
    log.append(
        keyed(&[(Some("a"), Some("3")), (Some("b"), Some("2"))], 100),
        1,
        0,
    )
    .expect("append");
    log.append(
        keyed(&[(Some("a"), Some("4")), (Some("b"), Some("3"))], 100),
        1,
        0,
    )
    .expect("append");
    log.append(keyed(&[(Some("b"), Some("4"))], 100), 1, 0)
        .expect("append");
    log.roll().expect("roll");
    // The newest value of a and b is in the active segment; upper bound at its start.
    log.append(
        keyed(&[(Some("a"), Some("5")), (Some("b"), Some("5"))], 100),
        1,
        0,
    )
    .expect("append");
    log.roll().expect("roll");
    let stats = compact_all(&log, 1000);
    assert_eq!(stats.batches_emptied, 1, "producer 7's last batch");
    let batches = stored(&log);
    let shapes: Vec<(i64, i64, i32)> = batches
        .iter()
        .map(|b| {
            let h = b.header();
            (h.base_offset(), h.last_offset(), h.records_count())
        })
        .collect();
    assert_eq!(shapes, vec![(0, 0, 0), (8, 9, 2)]);
    let empty = batches[0].header();
    assert_eq!(empty.producer_id(), 7);
    assert_eq!(empty.compression().expect("codec"), Compression::None);
    assert_eq!(batches[0].size_bytes(), BATCH_HEADER_BYTES);
    assert_eq!(empty.base_timestamp_ms(), NO_TIMESTAMP);

    // The batch ending at the round's upper bound stays even when emptied (here its only
    // record has no key: a log that was `delete` before).
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default());
    log.append(keyed(&[(Some("a"), Some("1"))], 100), 1, 0)
        .expect("append");
    log.append(keyed(&[(None, Some("x")), (None, Some("y"))], 100), 1, 0)
        .expect("append");
    log.roll().expect("roll");
    log.set_config(compact_config());
    let stats = compact_all(&log, 1000);
    assert_eq!(stats.batches_emptied, 1);
    assert_eq!(stats.keyless_removed, 2);
    let shapes: Vec<(i64, i64, i32)> = stored(&log)
        .iter()
        .map(|b| {
            let h = b.header();
            (h.base_offset(), h.last_offset(), h.records_count())
        })
        .collect();
    assert_eq!(shapes, vec![(0, 0, 1), (1, 2, 0)]);
}

#[test]
fn keyless_records_are_refused_and_dropped_when_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A delete-policy log takes them.
    let log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 1000,
            ..LogConfig::default()
        },
    );
    log.append(keyed(&[(None, Some("x")), (Some("a"), Some("1"))], 1), 1, 0)
        .expect("append");
    log.append(keyed(&[(Some("a"), Some("2"))], 1), 1, 0)
        .expect("append");
    // Switched to compact, it refuses them, for every codec.
    log.set_config(compact_config());
    for compression in [Compression::None, Compression::Zstd] {
        let refused = log.append(
            batch_of(
                &[(Some("a"), Some("3")), (None, Some("y")), (None, None)],
                1,
                compression,
                -1,
            ),
            1,
            0,
        );
        match refused {
            Err(LogError::InvalidRecord {
                message,
                record_indexes,
            }) => {
                assert_eq!(record_indexes, vec![1, 2]);
                assert!(message.contains("Compacted topic cannot accept message without key"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(log.log_end_offset(), 3);
    // What was already there goes at the next compaction, as Kafka's cleaner drops it.
    log.roll().expect("roll");
    let stats = compact_all(&log, 10);
    assert_eq!(stats.keyless_removed, 1);
    assert_eq!(rows(&log), vec![(2, Some("a".into()), Some("2".into()), 1)]);
}

#[test]
fn dirty_ratio_and_compaction_lags_decide_what_is_cleaned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        min_cleanable_dirty_ratio: 0.5,
        ..compact_config()
    };
    let log = open(dir.path(), config.clone());
    fill(&log, 20, 1, 1000);
    log.roll().expect("roll");
    assert_eq!(compact_all(&log, 2000).outcome, CompactionOutcome::Cleaned);
    // A little dirt on a large clean head: below the ratio.
    fill(&log, 1, 1, 1000);
    log.roll().expect("roll");
    let stats = compact_all(&log, 2000);
    assert_eq!(stats.outcome, CompactionOutcome::NotDirtyEnough);
    assert!(stats.dirty_ratio > 0.0 && stats.dirty_ratio < 0.5);
    // max.compaction.lag.ms forces it once the dirty segment's first batch is old enough.
    log.set_config(LogConfig {
        max_compaction_lag_ms: 5000,
        ..config.clone()
    });
    assert_eq!(
        compact_all(&log, 5999).outcome,
        CompactionOutcome::NotDirtyEnough
    );
    assert_eq!(compact_all(&log, 6001).outcome, CompactionOutcome::Cleaned);

    // min.compaction.lag.ms: a segment with a record newer than the lag is not cleaned.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            min_compaction_lag_ms: 1000,
            ..compact_config()
        },
    );
    fill(&log, 2, 2, 1000);
    log.roll().expect("roll");
    fill(&log, 2, 2, 5000);
    log.roll().expect("roll");
    let stats = compact_all(&log, 5500);
    assert_eq!(stats.outcome, CompactionOutcome::Cleaned);
    assert_eq!(stats.first_uncleanable_offset, 4);
    assert_eq!(rows(&log).len(), 6);
    assert_eq!(
        compact_all(&log, 5500).outcome,
        CompactionOutcome::NothingToClean
    );
    let stats = compact_all(&log, 6001);
    assert_eq!(stats.outcome, CompactionOutcome::Cleaned);
    assert_eq!(rows(&log).len(), 2);

    // A compacted log's active segment also rolls at max.compaction.lag.ms.
    let roll_config = LogConfig {
        max_compaction_lag_ms: 100,
        ..compact_config()
    };
    assert_eq!(roll_config.roll_after_ms(), 100);
}

#[test]
fn a_full_offset_map_cleans_the_prefix_that_fits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compact_config());
    fill(&log, 30, 2, 1000);
    log.roll().expect("roll");
    let end = log.log_end_offset();
    // Room for 9 keys (10 slots at 0.9 load).
    let settings = CompactionSettings {
        upper_bound_offset: end,
        dedupe_buffer_bytes: 10 * OFFSET_MAP_ENTRY_BYTES,
    };
    let first = log.compact(1, &settings).expect("compact");
    assert_eq!(first.outcome, CompactionOutcome::Cleaned);
    assert!(first.map_full);
    assert_eq!(first.map_entries, 9);
    assert_eq!(first.end_offset, 9);
    let mut runs = 1;
    loop {
        let stats = log.compact(1, &settings).expect("compact");
        if stats.outcome != CompactionOutcome::Cleaned {
            assert_eq!(stats.outcome, CompactionOutcome::NothingToClean);
            break;
        }
        runs += 1;
        assert!(runs < 20);
    }
    assert!(runs >= 4);
    let want: Vec<i64> = (30..60).collect();
    let got: Vec<i64> = rows(&log).iter().map(|row| row.0).collect();
    assert_eq!(got, want);
}

#[test]
fn retention_deletes_segments_only_with_the_delete_policy() {
    for (policy, deleted) in [
        (CleanupPolicy::COMPACT, false),
        (
            CleanupPolicy {
                delete: true,
                compact: true,
            },
            true,
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(
            dir.path(),
            LogConfig {
                cleanup_policy: policy,
                retention_ms: 1000,
                ..compact_config()
            },
        );
        fill(&log, 3, 3, 100);
        log.roll().expect("roll");
        let removed = log.enforce_retention(100_000, i64::MAX).expect("retention");
        assert_eq!(removed > 0, deleted, "{policy:?}");
    }
}

#[test]
fn segment_groups_respect_size_and_index_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 100_000,
            ..compact_config()
        },
    );
    for _ in 0..6 {
        fill(&log, 1, 3, 1);
        log.roll().expect("roll");
    }
    let segments = log.segments_snapshot();
    let non_active = &segments[..segments.len() - 1];
    let size = non_active[0].size_bytes();
    let sizes =
        |groups: &[Vec<Arc<Segment>>]| -> Vec<usize> { groups.iter().map(Vec::len).collect() };
    assert_eq!(
        sizes(&group_segments_by_size(non_active, size * 2, 1 << 20, 18)),
        vec![2, 2, 2]
    );
    assert_eq!(
        sizes(&group_segments_by_size(non_active, size * 6, 1 << 20, 18)),
        vec![6]
    );
    assert_eq!(
        sizes(&group_segments_by_size(
            non_active,
            size * 3 - 1,
            1 << 20,
            18
        )),
        vec![2, 2, 2]
    );
    // The index limit counts too (each has at least one entry at a 100-byte interval).
    let index_bytes = non_active[0].offset_index_bytes();
    assert!(index_bytes > 0);
    assert_eq!(
        sizes(&group_segments_by_size(
            non_active,
            u64::MAX,
            index_bytes,
            18
        )),
        vec![1, 1, 1, 1, 1, 1]
    );
}

/// A copy of `from`'s files into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn open_finishes_or_discards_an_interrupted_swap() {
    let root = tempfile::tempdir().expect("tempdir");
    let live = root.path().join("t-0");
    let before = root.path().join("before");
    let log = open(&live, compact_config());
    fill(&log, 4, 6, 1000);
    log.roll().expect("roll");
    let original = rows(&log);
    log.close().expect("close");
    drop(log);
    copy_dir(&live, &before);
    let log = open(&live, compact_config());
    assert_eq!(compact_all(&log, 2000).outcome, CompactionOutcome::Cleaned);
    let compacted = rows(&log);
    let cleaned_bases = log.segment_base_offsets();
    log.close().expect("close");
    drop(log);
    let stale: Vec<String> = names(&before)
        .into_iter()
        .filter(|name| name.ends_with(".log"))
        .collect();
    assert!(stale.len() > cleaned_bases.len() - 1);

    // A crash after `.cleaned` became `.swap`, before the old segments went: the swap is
    // complete, so open finishes it.
    let crashed = root.path().join("after-rename");
    copy_dir(&before, &crashed);
    for &base in &cleaned_bases[..cleaned_bases.len() - 1] {
        for kind in SEGMENT_FILE_SUFFIXES {
            std::fs::copy(
                segment::file_path(&live, base, kind, ""),
                segment::file_path(&crashed, base, kind, SWAP_FILE_SUFFIX),
            )
            .expect("copy");
        }
    }
    // ... and a stray `.deleted` file.
    std::fs::write(crashed.join("00000000000000000001.log.deleted"), b"x").expect("write");
    let log = open(&crashed, compact_config());
    assert_eq!(rows(&log), compacted);
    assert_eq!(log.segment_base_offsets(), cleaned_bases);
    drop(log);
    assert!(names(&crashed)
        .iter()
        .all(|name| !name.ends_with(".swap") && !name.ends_with(".deleted")));

    // A crash while renaming `.cleaned` to `.swap` (the `.log` renamed, its indexes not): the
    // swap is incomplete, so open discards it and keeps the old segments.
    let half = root.path().join("half-renamed");
    copy_dir(&before, &half);
    let base = cleaned_bases[0];
    std::fs::copy(
        segment::file_path(&live, base, LOG_FILE_SUFFIX, ""),
        segment::file_path(&half, base, LOG_FILE_SUFFIX, SWAP_FILE_SUFFIX),
    )
    .expect("copy");
    for kind in &SEGMENT_FILE_SUFFIXES[1..] {
        std::fs::copy(
            segment::file_path(&live, base, kind, ""),
            segment::file_path(&half, base, kind, CLEANED_FILE_SUFFIX),
        )
        .expect("copy");
    }
    let log = open(&half, compact_config());
    assert_eq!(rows(&log), original);
    drop(log);
    assert!(names(&half)
        .iter()
        .all(|name| !name.ends_with(".swap") && !name.ends_with(".cleaned")));

    // A crash while writing `.cleaned` files: they go, the log is as before.
    let writing = root.path().join("writing");
    copy_dir(&before, &writing);
    std::fs::write(writing.join("00000000000000000000.log.cleaned"), b"partial").expect("write");
    std::fs::write(writing.join("00000000000000000000.index.cleaned"), b"").expect("write");
    let log = open(&writing, compact_config());
    assert_eq!(rows(&log), original);
    // ... and the next compaction still works (it replaces any leftover of its own).
    assert_eq!(compact_all(&log, 2000).outcome, CompactionOutcome::Cleaned);
    assert_eq!(rows(&log), compacted);
}

#[test]
fn a_swap_leaves_no_temporary_files_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compact_config());
    fill(&log, 3, 10, 1000);
    log.roll().expect("roll");
    compact_all(&log, 2000);
    let compacted = rows(&log);
    assert!(names(dir.path()).iter().all(|name| name.ends_with(".log")
        || name.ends_with(".index")
        || name.ends_with(".timeindex")
        || name.ends_with(".snapshot")
        || name == "leader-epoch-checkpoint"));
    let recovery_point = log.recovery_point();
    drop(log);
    // Unclean reopen (recovers from the recovery point) and clean reopen.
    for point in [recovery_point, 0, i64::MAX] {
        let log =
            PartitionLog::open(dir.path().to_path_buf(), compact_config(), point).expect("open");
        assert_eq!(rows(&log), compacted);
    }
}

#[test]
fn readers_and_writers_run_during_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 400,
            ..compact_config()
        },
    );
    fill(&log, 4, 10, 1000);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..30 {
                fill(&log, 4, 2, 1000 + round);
                compact_all(&log, 5000);
            }
            done.store(true, Ordering::Release);
        });
        scope.spawn(|| {
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) || reads < 100 {
                let end = log.log_end_offset();
                let offset = (reads as i64 * 7919) % end.max(1);
                let bytes = log.read(offset, 2000, i64::MAX, true).expect("read");
                let mut last = -1;
                for batch in stored_batches(bytes, usize::MAX) {
                    let batch = batch.expect("whole, valid batches only");
                    let header = batch.header();
                    assert!(header.base_offset() > last, "offsets ascend");
                    if last == -1 {
                        assert!(header.last_offset() >= offset);
                    }
                    last = header.last_offset();
                    batch::decode_records(&batch, usize::MAX).expect("records decode");
                }
                reads += 1;
            }
        });
    });
    // Whatever raced, every key reads back its latest value.
    compact_all(&log, 5000);
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for row in rows(&log) {
        latest.insert(row.1.expect("key"), row.2.expect("value"));
    }
    assert_eq!(latest.len(), 4);
    assert!(latest.values().all(|value| value == "v1"));
}

#[test]
fn compact_is_a_no_op_for_delete_logs_and_stops_after_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default());
    fill(&log, 2, 2, 1);
    log.roll().expect("roll");
    assert_eq!(
        compact_all(&log, 10).outcome,
        CompactionOutcome::NotCompacted
    );
    assert_eq!(log.cleanable(10, i64::MAX).expect("cleanable"), None);
    log.set_config(compact_config());
    log.close().expect("close");
    assert_eq!(compact_all(&log, 10).outcome, CompactionOutcome::Aborted);
    assert_eq!(rows(&log).len(), 4);
}

#[test]
fn the_cleaner_checkpoint_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manager = crate::log::LogManager::open(dir.path().to_path_buf()).expect("open");
    let log = manager.open_log("t", 0, compact_config()).expect("log");
    fill(&log, 2, 3, 1);
    log.roll().expect("roll");
    assert_eq!(log.cleaner_checkpoint(), None);
    compact_all(&log, 10);
    let first_dirty = log.cleaner_checkpoint().expect("checkpoint");
    assert_eq!(first_dirty, 6);
    manager.shutdown().expect("shutdown");
    drop(log);
    drop(manager);
    let manager = crate::log::LogManager::open(dir.path().to_path_buf()).expect("open");
    let log = manager.open_log("t", 0, compact_config()).expect("log");
    assert_eq!(log.cleaner_checkpoint(), Some(first_dirty));
    assert_eq!(
        compact_all(&log, 10).outcome,
        CompactionOutcome::NothingToClean
    );
}

/// One step of the random-operations model.
#[derive(Debug, Clone)]
enum Op {
    /// One batch: (key index, value or tombstone) records, compressed or not.
    Append(Vec<(u8, bool)>, bool),
    Roll,
    /// Compacts after the clock moves on by this many ms.
    Compact(u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((0u8..6, prop::bool::weighted(0.8)), 1..4), any::<bool>())
            .prop_map(|(records, compressed)| Op::Append(records, compressed)),
        2 => Just(Op::Roll),
        3 => (0u16..1500).prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// The model: every record appended, in order, as (offset, key, value, timestamp).
#[derive(Default)]
struct Model {
    appended: Vec<(i64, u8, Option<String>, i64)>,
    /// Clock times of the compactions so far.
    compactions: Vec<i64>,
}

impl Model {
    fn latest(&self) -> HashMap<u8, (i64, Option<String>)> {
        let mut latest = HashMap::new();
        for (offset, key, value, _) in &self.appended {
            latest.insert(*key, (*offset, value.clone()));
        }
        latest
    }
}

fn run_model(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 500,
        index_interval_bytes: 100,
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config.clone());
    let mut model = Model::default();
    let mut now_ms = 10_000i64;
    // Tombstones seen so far with the horizon their batch carried.
    let mut horizons: HashMap<i64, i64> = HashMap::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append(records, compressed) => {
                let texts: Vec<(String, Option<String>)> = records
                    .iter()
                    .enumerate()
                    .map(|(i, (key, has_value))| {
                        (
                            format!("key{key}"),
                            has_value.then(|| format!("s{step}r{i}")),
                        )
                    })
                    .collect();
                let entries: Vec<Entry<'_>> = texts
                    .iter()
                    .map(|(k, v)| (Some(k.as_str()), v.as_deref()))
                    .collect();
                let codec = if compressed {
                    Compression::Lz4
                } else {
                    Compression::None
                };
                let info = log
                    .append(batch_of(&entries, now_ms, codec, -1), now_ms, 0)
                    .expect("append");
                for (i, (key, has_value)) in records.iter().enumerate() {
                    model.appended.push((
                        info.base_offset + i as i64,
                        *key,
                        has_value.then(|| format!("s{step}r{i}")),
                        now_ms + i as i64,
                    ));
                }
            }
            Op::Roll => {
                log.roll().expect("roll");
            }
            Op::Compact(advance) => {
                now_ms += i64::from(advance);
                let stats = compact_all(&log, now_ms);
                if stats.outcome == CompactionOutcome::Cleaned {
                    model.compactions.push(now_ms);
                }
            }
            Op::Reopen => {
                log.close().expect("close");
                drop(log);
                log = open(dir.path(), config.clone());
            }
        }
        check(&log, &model, &mut horizons, now_ms, step);
    }
    // Finally: make everything cleanable twice, more than the retention apart; every
    // tombstone outside the active segment must then be gone.
    for _ in 0..2 {
        log.append(keyed(&[(Some("filler"), Some("x"))], now_ms), now_ms, 0)
            .expect("append");
        log.roll().expect("roll");
        now_ms += 1001;
        let stats = compact_all(&log, now_ms);
        assert_eq!(stats.outcome, CompactionOutcome::Cleaned);
        assert!(!stats.map_full);
    }
    let active_base = *log.segment_base_offsets().last().expect("active");
    for row in rows(&log) {
        if row.0 < active_base {
            assert!(
                row.2.is_some(),
                "tombstone at {} outlived its horizon",
                row.0
            );
        }
    }
}

/// Invariants after every step.
fn check(
    log: &PartitionLog,
    model: &Model,
    horizons: &mut HashMap<i64, i64>,
    now_ms: i64,
    step: usize,
) {
    let end = model.appended.last().map_or(0, |last| last.0 + 1);
    assert_eq!(log.log_end_offset(), end, "step {step}");
    let appended: HashMap<i64, &(i64, u8, Option<String>, i64)> =
        model.appended.iter().map(|row| (row.0, row)).collect();
    let mut previous = -1;
    let mut present = HashMap::new();
    for batch in stored(log) {
        let header = batch.header();
        assert!(
            header.base_offset() > previous,
            "batches ascend, step {step}"
        );
        for record in batch::decode_records(&batch, usize::MAX).expect("decode") {
            assert!(record.offset > previous, "offsets ascend, step {step}");
            previous = record.offset;
            let original = appended
                .get(&record.offset)
                .unwrap_or_else(|| panic!("offset {} was never appended", record.offset));
            let key = record
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            let value = record
                .value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            assert_eq!(key, Some(format!("key{}", original.1)), "step {step}");
            assert_eq!(
                value, original.2,
                "record {} changed, step {step}",
                record.offset
            );
            assert_eq!(
                record.timestamp, original.3,
                "timestamp of {}, step {step}",
                record.offset
            );
            if value.is_none() {
                if let Some(horizon) = header.delete_horizon_ms() {
                    // Set once, by a compaction, delete.retention.ms ahead.
                    let first = *horizons.entry(record.offset).or_insert(horizon);
                    assert_eq!(first, horizon, "a horizon never moves, step {step}");
                    assert!(
                        model.compactions.iter().any(|&t| t + 1000 == horizon),
                        "horizon {horizon} not set by a compaction, step {step}"
                    );
                }
            }
            present.insert(record.offset, ());
        }
        previous = previous.max(header.last_offset());
    }
    // Every key's latest record is there while it has a value; a latest tombstone only goes
    // once its horizon has passed.
    for (key, (offset, value)) in model.latest() {
        if value.is_some() {
            assert!(
                present.contains_key(&offset),
                "key{key}'s latest value at {offset} lost, step {step}"
            );
        } else if !present.contains_key(&offset) {
            let horizon = horizons.get(&offset).unwrap_or_else(|| {
                panic!("tombstone {offset} went without a horizon, step {step}")
            });
            assert!(
                now_ms >= *horizon,
                "tombstone {offset} went before {horizon}, step {step}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_keep_the_latest_values(ops in prop::collection::vec(op(), 1..60)) {
        run_model(ops);
    }
}

#[test]
fn the_offset_map_is_bounded_and_exact() {
    // 10 slots of 24 bytes: 9 entries at most (90%).
    let mut small = OffsetMap::new(10 * OFFSET_MAP_ENTRY_BYTES);
    for i in 0..9 {
        assert!(small.put(format!("k{i}").as_bytes(), i));
    }
    assert!(
        !small.put(b"k0", 100),
        "full, even for a known key (as Kafka)"
    );
    assert!(!small.put(b"new", 100));
    assert_eq!(small.len(), 9);
    assert_eq!(small.digests.len(), 10, "never more slots than the budget");
    assert_eq!(small.get(b"k3"), 3);
    assert_eq!(small.get(b"missing"), -1);
    assert_eq!(small.latest_offset, 8);
    // Tiny budgets still make progress.
    let mut tiny = OffsetMap::new(1);
    assert!(tiny.put(b"a", 1));
    assert!(!tiny.put(b"b", 2));
    // Growth keeps every entry; updates replace offsets.
    let mut big = OffsetMap::new(DEDUPE_BUFFER_BYTES_DEFAULT);
    assert!(big.digests.is_empty(), "allocated as needed");
    for i in 0..20_000i64 {
        assert!(big.put(format!("key-{}", i % 5000).as_bytes(), i));
    }
    assert_eq!(big.len(), 5000);
    assert!(big.digests.len() < 20_000);
    for i in 0..5000i64 {
        assert_eq!(big.get(format!("key-{i}").as_bytes()), 15_000 + i);
    }
}

#[test]
fn header_of_an_encoded_tombstone_batch() {
    // The delete horizon bit is read from the attributes.
    let bytes = keyed(&[(Some("a"), None)], 5);
    let header = BatchHeader::parse(&bytes).expect("header");
    assert_eq!(header.delete_horizon_ms(), None);
}

/// One transactional batch of `producer_id` (epoch 0) from `base_sequence`.
fn txn_batch(entries: &[Entry<'_>], producer_id: i64, base_sequence: i32) -> Bytes {
    encode_entries(
        entries,
        100,
        Compression::None,
        producer_id,
        true,
        base_sequence,
    )
}

fn end_txn(log: &PartitionLog, producer_id: i64, commit: bool) -> i64 {
    let marker = crate::log::producer_state::Marker {
        producer_id,
        epoch: 0,
        coordinator_epoch: 0,
        commit,
    };
    log.append_marker(&marker, 100, 0)
        .expect("marker")
        .0
        .base_offset
}

/// Base offsets of the control batches, and (offset, key, value) of the data records.
fn control_offsets(log: &PartitionLog) -> Vec<i64> {
    stored(log)
        .iter()
        .filter(|b| b.header().is_control())
        .map(|b| b.header().base_offset())
        .collect()
}

fn data_rows(log: &PartitionLog) -> Vec<(i64, String, String)> {
    stored(log)
        .iter()
        .filter(|b| !b.header().is_control())
        .flat_map(|batch| batch::decode_records(batch, usize::MAX).expect("decode"))
        .map(|record| {
            let text = |b: Option<Bytes>| String::from_utf8_lossy(&b.unwrap_or_default()).into();
            (record.offset, text(record.key), text(record.value))
        })
        .collect()
}

/// Compacts below the log's last stable offset, as the replica manager does.
fn compact_stable(log: &PartitionLog, now_ms: i64) -> CompactionStats {
    let upper = log.last_stable_offset(log.log_end_offset());
    log.compact(now_ms, &CompactionSettings::below(upper))
        .expect("compact")
}

#[test]
fn transactions_aborted_data_goes_open_ones_stay_and_markers_go_after_their_horizon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compact_config());
    let append = |bytes: Bytes| log.append(bytes, 100, 0).expect("append").base_offset;
    // Round 1: producer 1 aborts a=1 b=1, producer 2 commits a=2, producer 1 commits e=1,
    // producer 3 leaves a=3 open in a segment of its own.
    assert_eq!(
        append(txn_batch(
            &[(Some("a"), Some("1")), (Some("b"), Some("1"))],
            1,
            0
        )),
        0
    );
    assert_eq!(end_txn(&log, 1, false), 2);
    assert_eq!(append(txn_batch(&[(Some("a"), Some("2"))], 2, 0)), 3);
    assert_eq!(end_txn(&log, 2, true), 4);
    assert_eq!(append(keyed(&[(Some("c"), Some("1"))], 100)), 5);
    assert_eq!(append(txn_batch(&[(Some("e"), Some("1"))], 1, 2)), 6);
    assert_eq!(end_txn(&log, 1, true), 7);
    log.roll().expect("roll");
    assert_eq!(append(txn_batch(&[(Some("a"), Some("3"))], 3, 0)), 8);
    log.roll().expect("roll");
    assert_eq!(log.last_stable_offset(log.log_end_offset()), 8);

    let stats = compact_stable(&log, 1000);
    assert_eq!(stats.outcome, CompactionOutcome::Cleaned);
    assert_eq!(
        stats.first_uncleanable_offset, 8,
        "the open transaction bounds it"
    );
    assert_eq!(stats.aborted_records_removed, 2);
    // a=2 stays: the open a=3 may still abort, so it supersedes nothing yet.
    let expect = |rows: &[(i64, &str, &str)]| -> Vec<(i64, String, String)> {
        rows.iter()
            .map(|(o, k, v)| (*o, k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        data_rows(&log),
        expect(&[(3, "a", "2"), (5, "c", "1"), (6, "e", "1"), (8, "a", "3")])
    );
    assert_eq!(control_offsets(&log), vec![2, 4, 7]);
    let aborted: Vec<(i64, i64, i64)> = log
        .all_aborted_transactions()
        .iter()
        .map(|a| (a.producer_id, a.first_offset, a.last_offset))
        .collect();
    assert_eq!(
        aborted,
        vec![(1, 0, 2)],
        "the abort's marker stays, so does its entry"
    );
    assert_eq!(stats.delete_horizons_set, 0);

    // Round 2: producer 3 commits; producer 2 commits f=1. a=2 goes (a=3 is committed now).
    // The abort marker has no data left: it gets a horizon and its index entry goes. The
    // commit at 4 stays one more round: this pass still read its (now removed) batch.
    assert_eq!(end_txn(&log, 3, true), 9);
    assert_eq!(append(txn_batch(&[(Some("f"), Some("1"))], 2, 1)), 10);
    assert_eq!(end_txn(&log, 2, true), 11);
    log.roll().expect("roll");
    assert_eq!(append(keyed(&[(Some("z"), Some("1"))], 100)), 12);
    log.roll().expect("roll");
    let stats = compact_stable(&log, 1000);
    assert_eq!(stats.outcome, CompactionOutcome::Cleaned);
    assert_eq!(
        data_rows(&log),
        expect(&[
            (5, "c", "1"),
            (6, "e", "1"),
            (8, "a", "3"),
            (10, "f", "1"),
            (12, "z", "1")
        ])
    );
    assert_eq!(control_offsets(&log), vec![2, 4, 7, 9, 11]);
    assert_eq!(stats.delete_horizons_set, 1);
    assert_eq!(stats.markers_removed, 0);
    assert!(log.all_aborted_transactions().is_empty());
    let horizon = |offset: i64| {
        stored(&log)
            .iter()
            .find(|b| b.header().base_offset() == offset)
            .and_then(|b| b.header().delete_horizon_ms())
    };
    assert_eq!(horizon(2), Some(2000));
    assert_eq!(horizon(4), None);

    // Round 3, past the horizon: the abort marker goes; the commit at 4 gets its horizon.
    assert_eq!(append(keyed(&[(Some("c"), Some("2"))], 100)), 13);
    log.roll().expect("roll");
    let stats = compact_stable(&log, 3000);
    assert_eq!(stats.markers_removed, 1);
    assert_eq!(stats.delete_horizons_set, 1);
    assert_eq!(control_offsets(&log), vec![4, 7, 9, 11]);
    assert_eq!(horizon(4), Some(4000));

    // Nothing is left open: reopened, and replayed from the log's start without snapshots.
    let end = log.log_end_offset();
    log.close().expect("close");
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(path).expect("remove snapshot");
        }
    }
    let log = open(dir.path(), compact_config());
    assert_eq!(log.last_stable_offset(end), end);
    assert!(log.all_aborted_transactions().is_empty());
}
