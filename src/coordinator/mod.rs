//! The coordinators' runtimes: the I/O side of state machines that live elsewhere.
//!
//! - [`runtime`]: [`runtime::Runtime`] runs a coordinator's state machine (which does no I/O)
//!   against the real world: the clock, a timer task, the internal topic's partitions this
//!   broker leads (appends, the wait for them to be committed, replay on becoming leader), and
//!   the requests waiting for a response. Written once for both coordinators.
//! - [`group`]: [`GroupService`], the runtime of [`crate::group::GroupCoordinator`] over
//!   `__consumer_offsets`, and what groups do their own way.
//! - [`txn`]: [`TxnService`], the runtime of [`crate::txn::TxnCoordinator`] over
//!   `__transaction_state`, which also has the transactions' markers written ([`markers`]).
//! - [`markers`]: the transaction marker channel: each decided transaction's COMMIT or ABORT
//!   written by every partition's leader (this broker directly, the others with
//!   WriteTxnMarkers over the internal listener), retried until done.
//!
//! What both runtimes share is here: encoding a batch of key/value records, waiting for an
//! append to be committed, and reading a partition back for replay.

pub mod group;
pub mod markers;
pub mod runtime;
pub mod txn;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as WireTimestampType,
};
use tokio::sync::{watch, Notify};

use crate::log::batch::{batches, decode_records, marker_record};
use crate::log::producer_state::Marker;
use crate::log::{AppendInfo, LogError};
use crate::replica::manager::now_ms;
use crate::replica::{Partition, ReplicaError, ReplicaManager};

pub use group::{GroupService, OFFSETS_TOPIC};
pub use txn::TxnService;

/// Bytes read from the log per replay chunk (a coordinator's lock is taken once per chunk).
const REPLAY_CHUNK_BYTES: usize = 1 << 20;

/// A coordinator's timer: one task sleeps until the state machine's next deadline and ticks
/// it; a step that moves the deadline earlier wakes it ([`Timer::rearm`]).
#[derive(Debug, Default)]
pub struct Timer {
    /// The deadline the task sleeps until.
    armed: Mutex<Option<i64>>,
    wake: Notify,
}

impl Timer {
    /// Wakes the task if `deadline` is earlier than the one it sleeps to.
    pub fn rearm(&self, deadline: Option<i64>) {
        let Some(deadline) = deadline else {
            return;
        };
        let mut armed = self
            .armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if armed.is_none_or(|armed| deadline < armed) {
            *armed = Some(deadline);
            self.wake.notify_one();
        }
    }

    /// The loop: sleeps until `deadline()` (an hour when there is none) or a wake-up, then
    /// calls `tick`, until `shutdown` turns true.
    pub async fn run(
        &self,
        mut shutdown: watch::Receiver<bool>,
        deadline: impl Fn() -> Option<i64>,
        tick: impl Fn(),
    ) {
        loop {
            let next = deadline();
            *self
                .armed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
            let sleep = match next {
                Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
            tick();
        }
    }
}

/// Writes a transaction marker on a partition this broker leads (WriteTxnMarkers, or the
/// marker channel for its own partitions); on a `__consumer_offsets` partition the group
/// coordinator then commits or drops the producer's pending transactional offsets. Returns the
/// partition and the append, whose replication the caller waits for.
pub fn write_marker(
    replicas: &ReplicaManager,
    groups: &GroupService,
    topic: &str,
    index: i32,
    marker: &Marker,
    now_ms: i64,
) -> Result<(Arc<Partition>, AppendInfo), ReplicaError> {
    let partition = replicas.leader_partition(topic, index)?;
    let (info, closed) = partition.append_marker_as_leader(marker, now_ms)?;
    if topic == OFFSETS_TOPIC {
        groups.complete_txn(index, marker.producer_id, marker.commit);
    }
    tracing::debug!(
        topic,
        partition = index,
        producer_id = marker.producer_id,
        commit = marker.commit,
        offset = info.base_offset,
        closed = closed.is_some(),
        "transaction marker written"
    );
    Ok((partition, info))
}

/// A producer's identity on a batch the broker writes for it (transactional offset commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProducer {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
}

/// One uncompressed batch of `records` (key, value) at `timestamp_ms`; with `producer`, a
/// transactional batch of that producer (no sequence: the coordinator, not the producer, is
/// its writer). Fails only for a batch too large to encode.
pub fn encode_records(
    records: &[(Bytes, Option<Bytes>)],
    timestamp_ms: i64,
    producer: Option<BatchProducer>,
) -> Result<Bytes, LogError> {
    let records: Vec<WireRecord> = records
        .iter()
        .enumerate()
        .map(|(index, (key, value))| WireRecord {
            transactional: producer.is_some(),
            control: false,
            partition_leader_epoch: -1,
            producer_id: producer.map_or(-1, |p| p.producer_id),
            producer_epoch: producer.map_or(-1, |p| p.producer_epoch),
            timestamp_type: WireTimestampType::Creation,
            offset: index as i64,
            sequence: -1,
            timestamp: timestamp_ms,
            delete_horizon: false,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|error| LogError::corrupt(format!("cannot encode a coordinator batch: {error}")))?;
    Ok(buf.freeze())
}

/// Why a coordinator's append was not committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitError {
    /// The fsync `flush.messages` asked for failed.
    Storage,
    /// Leadership moved before the ISR had it.
    NotLeader,
    /// The ISR did not have it in time.
    Timeout,
}

/// Waits until an append is committed: on disk if `flush.messages` asked for it, and below the
/// high watermark.
pub async fn wait_committed(
    partition: &Arc<Partition>,
    info: AppendInfo,
) -> Result<(), CommitError> {
    let end = info.last_offset + 1;
    if info.flush_needed {
        partition
            .flush_to(end)
            .await
            .map_err(|_| CommitError::Storage)?;
    }
    partition
        .wait_replicated(end, info.leader_epoch)
        .await
        .map_err(|_| CommitError::NotLeader)
}

/// What a coordinator's replay sees of its partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayItem {
    /// A record; `producer_id` is set for a transactional batch's records.
    Record {
        /// The key.
        key: Bytes,
        /// The value (`None`: a tombstone).
        value: Option<Bytes>,
        /// The producer of a transactional batch.
        producer_id: Option<i64>,
    },
    /// A transaction marker.
    Marker {
        /// The producer whose transaction it ends.
        producer_id: i64,
        /// COMMIT or ABORT.
        commit: bool,
    },
}

/// Reads a partition from its log start to its log end, in chunks of about 1 MiB, and hands
/// each chunk's items to `apply` (which returns false to stop: the partition is no longer
/// served). Returns how many items were read. Runs on the calling (blocking) thread. A batch
/// that does not decode is skipped with an error logged: only the broker writes these topics,
/// so it holds nothing a coordinator could use, and skipping it keeps every other key of the
/// partition available.
pub fn read_log(
    partition: &Partition,
    mut apply: impl FnMut(Vec<ReplayItem>) -> bool,
) -> Result<u64, LogError> {
    let log = partition.log().clone();
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut read = 0u64;
    let decompressed_max_bytes = log.decompressed_max_bytes();
    while offset < end {
        let bytes = match log.read(offset, REPLAY_CHUNK_BYTES, end, true) {
            Ok(bytes) => bytes,
            // Retention or compaction moved the start past us: go on from the new start.
            Err(LogError::OffsetOutOfRange {
                log_start_offset, ..
            }) if log_start_offset > offset => {
                offset = log_start_offset;
                continue;
            }
            Err(error) => return Err(error),
        };
        if bytes.is_empty() {
            break;
        }
        let mut chunk = Vec::new();
        for batch in batches(bytes, usize::MAX) {
            let batch = batch?;
            let header = batch.header();
            offset = offset.max(header.next_offset());
            let producer_id = header.producer_id();
            if header.is_control() {
                match marker_record(&batch, decompressed_max_bytes) {
                    Ok(Some(marker)) => chunk.push(ReplayItem::Marker {
                        producer_id,
                        commit: marker.commit,
                    }),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(topic = partition.topic(), partition = partition.index(), offset = header.base_offset(), %error, "skipping an undecodable marker");
                    }
                }
                continue;
            }
            let transactional = header.is_transactional().then_some(producer_id);
            match decode_records(&batch, decompressed_max_bytes) {
                Ok(records) => {
                    for record in records {
                        if let Some(key) = record.key {
                            chunk.push(ReplayItem::Record {
                                key,
                                value: record.value,
                                producer_id: transactional,
                            });
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(topic = partition.topic(), partition = partition.index(), offset = header.base_offset(), %error, "skipping an undecodable batch");
                }
            }
        }
        read += chunk.len() as u64;
        if !apply(chunk) {
            break;
        }
    }
    Ok(read)
}
