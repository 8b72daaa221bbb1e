//! One partition hosted by this broker.
//!
//! Invariants: `high_watermark <= log_end_offset`; the high watermark only moves forward while
//! this broker leads; a produce acknowledged under `flush.messages` is on disk before its
//! response is written.
//!
//! Group commit: an append that needs durability waits until the log's recovery point passes
//! its last offset. If no fsync is running it starts one; otherwise it waits for the running one
//! and, if that did not cover it, starts the next. So one fsync covers every batch appended
//! while the previous fsync ran, and producers never queue one fsync each.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use super::ReplicaError;
use crate::log::{AppendInfo, PartitionLog};

/// What a fetch of one partition returns.
#[derive(Debug, Clone)]
pub struct FetchedData {
    /// Whole stored batches, straight from the segment files.
    pub records: Bytes,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Last stable offset (equal to the high watermark until transactions land).
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlushState {
    /// Every offset below this is on disk.
    durable_offset: i64,
    /// Incremented when an fsync finishes, successfully or not.
    generation: u64,
}

/// A partition of a topic, hosted here.
#[derive(Debug)]
pub struct Partition {
    topic: String,
    topic_id: Uuid,
    index: i32,
    log: Arc<PartitionLog>,
    leader: AtomicI32,
    leader_epoch: AtomicI32,
    high_watermark: watch::Sender<i64>,
    flush_state: watch::Sender<FlushState>,
    flush_running: AtomicBool,
    last_time_flush_ms: AtomicI64,
}

impl Partition {
    /// Wraps an opened log, led by node `leader` at `leader_epoch`.
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        log: Arc<PartitionLog>,
        leader: i32,
        leader_epoch: i32,
    ) -> Partition {
        let log_end_offset = log.log_end_offset();
        let (high_watermark, _) = watch::channel(log_end_offset);
        let (flush_state, _) = watch::channel(FlushState {
            durable_offset: log.recovery_point(),
            generation: 0,
        });
        Partition {
            topic,
            topic_id,
            index,
            log,
            leader: AtomicI32::new(leader),
            leader_epoch: AtomicI32::new(leader_epoch),
            high_watermark,
            flush_state,
            flush_running: AtomicBool::new(false),
            last_time_flush_ms: AtomicI64::new(crate::replica::manager::now_ms()),
        }
    }

    /// Topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// Topic id.
    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }
    /// Partition index.
    pub fn index(&self) -> i32 {
        self.index
    }
    /// The log.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }
    /// Current leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }
    /// Sets the leader epoch (a metadata change).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

    /// The node id of the partition's leader as of the last applied metadata (-1: none).
    pub fn leader(&self) -> i32 {
        self.leader.load(Ordering::Acquire)
    }

    /// Records a leader change from the metadata.
    pub fn set_leader(&self, leader: i32) {
        self.leader.store(leader, Ordering::Release);
    }
    /// When `flush.ms` last flushed this partition.
    pub fn last_time_flush_ms(&self) -> i64 {
        self.last_time_flush_ms.load(Ordering::Acquire)
    }
    /// Records a `flush.ms` flush.
    pub fn set_last_time_flush_ms(&self, now_ms: i64) {
        self.last_time_flush_ms.store(now_ms, Ordering::Release);
    }
    /// High watermark: consumers see records below it.
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }
    /// A receiver that changes whenever the high watermark moves (long-poll fetches).
    pub fn subscribe_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Appends a produce request's records as leader. When the returned info says
    /// `flush_needed`, the caller must [`Partition::flush_to`] `last_offset + 1` before it
    /// acknowledges (that wait is phase two of a produce, so it does not hold up the
    /// connection).
    pub fn append_as_leader(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
    ) -> Result<AppendInfo, ReplicaError> {
        let info = self.log.append(records, now_ms, self.leader_epoch())?;
        let runtime = tokio::runtime::Handle::try_current();
        if let (true, false, Ok(runtime)) = (info.rolled, info.flush_needed, runtime) {
            // Flush on roll, in the background: the previous segment is complete.
            let partition = Arc::clone(self);
            runtime.spawn(async move {
                if let Err(e) = partition.flush_to(info.base_offset).await {
                    tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "flush on roll failed");
                }
            });
        }
        // Single replica: the leader's log end is the high watermark. The cluster issue moves
        // this to the ISR's minimum.
        self.high_watermark.send_if_modified(|hw| {
            let next = info.last_offset + 1;
            if next > *hw {
                *hw = next;
                true
            } else {
                false
            }
        });
        Ok(info)
    }

    /// Waits until every offset below `offset` is on disk (group commit, see the module doc).
    pub async fn flush_to(&self, offset: i64) -> Result<(), ReplicaError> {
        let mut state = self.flush_state.subscribe();
        loop {
            let seen = *state.borrow_and_update();
            if seen.durable_offset >= offset {
                return Ok(());
            }
            if !self.flush_running.swap(true, Ordering::AcqRel) {
                let log = self.log.clone();
                let result = tokio::task::spawn_blocking(move || log.flush()).await;
                self.flush_running.store(false, Ordering::Release);
                let outcome = match result {
                    Ok(Ok(point)) => Ok(point),
                    Ok(Err(e)) => Err(ReplicaError::Flush(e.to_string())),
                    Err(e) => Err(ReplicaError::Flush(e.to_string())),
                };
                self.flush_state.send_modify(|s| {
                    if let Ok(point) = outcome.as_ref() {
                        s.durable_offset = s.durable_offset.max(*point);
                    }
                    s.generation += 1;
                });
                match outcome {
                    Ok(point) if point >= offset => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
            // Someone else's fsync is running: wait for it to finish, then look again.
            if state.changed().await.is_err() {
                return Err(ReplicaError::Flush("partition closed".to_string()));
            }
        }
    }

    /// Reads for a consumer: whole batches from `offset`, never past the high watermark.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<FetchedData, ReplicaError> {
        let high_watermark = self.high_watermark();
        let records = self
            .log
            .read(offset, max_bytes, high_watermark, min_one_batch)?;
        Ok(FetchedData {
            records,
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset: self.log.log_start_offset(),
        })
    }
}
