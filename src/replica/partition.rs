//! One partition hosted by this broker.
//!
//! Invariants: `high_watermark <= log_end_offset`; the high watermark only moves forward while
//! this broker leads; a produce acknowledged under `flush.messages` is on disk before its
//! response is written.
//!
//! Group commit ([`GroupCommit`](super::group_commit::GroupCommit)): an append that needs
//! durability waits until the log is on disk past its last offset; one fsync covers every batch
//! appended while the previous one ran. Truncations bring the durable mark down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use super::group_commit::{FlushError, GroupCommit};
use super::ReplicaError;
use crate::log::producer_state::{CompletedTxn, Marker, TxnVerification};
use crate::log::{AppendInfo, AppendOrigin, FileSlice, PartitionLog};

/// What a fetch of one partition returns.
#[derive(Debug, Clone)]
pub struct FetchedData {
    /// Whole stored batches, as a range of a segment file (sent with `sendfile`, or read with
    /// [`FileSlice::read`]).
    pub records: FileSlice,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Last stable offset: below the high watermark while a transaction is open.
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// For a read_committed read: the aborted transactions overlapping what it may return.
    pub aborted: Vec<crate::log::txn_index::AbortedTxn>,
}

/// The leader's answer to a follower's fetch of one partition.
#[derive(Debug, Clone)]
pub enum FollowerFetch {
    /// The follower's log diverges from this one (KIP-320): this log's history of the largest
    /// epoch up to the follower's last fetched epoch ends at `end_offset` (`(-1, -1)`: this log
    /// knows no such epoch). No records: the follower truncates first.
    Diverging {
        /// Epoch.
        epoch: i32,
        /// Where that epoch ends in this log.
        end_offset: i64,
        /// This log's high watermark.
        high_watermark: i64,
        /// This log's start offset.
        log_start_offset: i64,
    },
    /// Batches from the fetch offset up to the log end.
    Records(FetchedData),
}

/// What a follower got from its leader for one partition (the follower's side of
/// [`FollowerFetch`]).
#[derive(Debug, Clone)]
pub enum FetchedFromLeader {
    /// Truncate where the leader's history of `epoch` ends (`end_offset`).
    Diverging {
        /// Epoch.
        epoch: i32,
        /// The leader's end of that epoch.
        end_offset: i64,
    },
    /// Append these batches and take the leader's high watermark.
    Records {
        /// Whole batches as the leader stored them.
        records: Bytes,
        /// The leader's high watermark.
        high_watermark: i64,
    },
    /// The leader refused the fetch offset (OFFSET_OUT_OF_RANGE): below its log start (its
    /// retention passed this copy), or beyond its log end.
    OutOfRange {
        /// The leader's log start offset.
        log_start_offset: i64,
        /// The leader's high watermark.
        high_watermark: i64,
    },
}

/// What applying a fetch answer did ([`Partition::apply_from_leader`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerApply {
    /// The answer belonged to a leadership that is over: dropped.
    Stale,
    /// Applied. `flush_to`: `flush.messages` was reached, so the caller makes the offsets
    /// below it durable ([`Partition::flush_to`]) before it fetches again, as the next fetch
    /// tells the leader this copy holds them (as Kafka, where a follower's append flushes).
    Applied {
        /// Offset to flush to, if any.
        flush_to: Option<i64>,
    },
}

/// Who holds copies of the partition, as the metadata says, and (on the leader) how far each
/// follower has fetched.
#[derive(Debug, Default)]
struct Replication {
    replicas: Vec<i32>,
    isr: Vec<i32>,
    min_insync: usize,
    /// The metadata's partition epoch, sent with ISR changes so stale ones are refused.
    partition_epoch: i32,
    /// When this broker last became the leader (followers get that long to show up).
    leading_since_ms: i64,
    /// Followers as their fetches report them (leader only).
    followers: HashMap<i32, FollowerState>,
    /// ISR changes this leader asked for that the metadata has not answered yet.
    pending: Option<PendingIsr>,
}

/// The ISR changes a leader proposed on one partition epoch, not yet answered by the metadata
/// (KIP-497's pending state). Until the metadata moves past `based_on`, any of them may commit,
/// so the high watermark counts every member any of them names, as well as the committed ISR:
/// the maximal ISR. A replica that joins the ISR then holds everything acknowledged from the
/// moment the leader asked for it, so electing it right after the change commits loses nothing,
/// however late the leader hears of the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingIsr {
    /// The partition epoch the proposals were based on.
    based_on: i32,
    /// Every member any of them names.
    members: Vec<i32>,
    /// One of them went unanswered (it may still commit): a later refusal says nothing about
    /// it, so only a new partition epoch clears these members.
    uncertain: bool,
}

/// What the leader knows of one follower (Kafka's replica state).
#[derive(Debug, Default, Clone, Copy)]
struct FollowerState {
    /// Its log end offset: the offset of its last fetch.
    log_end: i64,
    /// The last time its copy reached the leader's log end as it was then.
    last_caught_up_ms: i64,
    /// The leader's log end at its previous fetch, and when that was.
    last_fetch_leader_log_end: i64,
    last_fetch_ms: i64,
}

/// An ISR change a leader wants the controller to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    /// The new ISR.
    pub isr: Vec<i32>,
    /// The partition epoch it is based on.
    pub partition_epoch: i32,
}

/// Why an ISR change a leader asked for was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsrNotMade {
    /// No answer (no quorum in time, a lost reply): it may still commit.
    Unanswered,
    /// Refused: the partition had moved past the epoch it was based on.
    StaleEpoch,
    /// Refused on that epoch (an ineligible member, an invalid ISR): it will never commit.
    Refused,
}

/// The metadata's view of a partition, as [`Partition::set_assignment`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Assignment<'a> {
    /// Leader node id (-1: none).
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Partition epoch.
    pub partition_epoch: i32,
    /// Replicas, preferred leader first.
    pub replicas: &'a [i32],
    /// In-sync replicas.
    pub isr: &'a [i32],
    /// `min.insync.replicas`.
    pub min_insync: usize,
}

/// A partition of a topic, hosted here.
#[derive(Debug)]
pub struct Partition {
    topic: String,
    topic_id: Uuid,
    index: i32,
    node_id: i32,
    log: Arc<PartitionLog>,
    leader: AtomicI32,
    leader_epoch: AtomicI32,
    /// Role changes ([`Partition::set_assignment`]) take it for writing; appends that depend
    /// on the role (as leader, or from a fetch answer as follower) for reading. So a batch is
    /// never stamped with an epoch this broker does not lead, and a fetch answer from a
    /// leadership that is over is never applied (Kafka's `leaderIsrUpdateLock`).
    role: RwLock<()>,
    replication: Mutex<Replication>,
    /// The log end offset, published on every append (wakes followers' long polls).
    log_end: watch::Sender<i64>,
    high_watermark: watch::Sender<i64>,
    group_commit: GroupCommit,
    last_time_flush_ms: AtomicI64,
    /// Where a replicated partition's high watermark starts when the broker starts: the
    /// checkpointed one (capped to the log), else the log start.
    initial_high_watermark: AtomicI64,
    /// While the broker is cut off from the controller quorum, the `replica.lag.time.max.ms`
    /// after which silent ISR followers mean this copy was deposed (see
    /// [`Partition::deposed`]); -1 while in contact.
    cut_off_lag_ms: AtomicI64,
}

impl Partition {
    /// Wraps an opened log hosted by node `node_id`, led by node `leader` at `leader_epoch`.
    /// Until [`Partition::set_assignment`] says otherwise, this broker is the only replica.
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        node_id: i32,
        log: Arc<PartitionLog>,
        leader: i32,
        leader_epoch: i32,
    ) -> Partition {
        let log_end_offset = log.log_end_offset();
        let log_start_offset = log.log_start_offset();
        let (high_watermark, _) = watch::channel(log_end_offset);
        let (log_end, _) = watch::channel(log_end_offset);
        let group_commit = GroupCommit::new(log.recovery_point());
        Partition {
            topic,
            topic_id,
            index,
            node_id,
            log,
            leader: AtomicI32::new(leader),
            leader_epoch: AtomicI32::new(leader_epoch),
            role: RwLock::new(()),
            replication: Mutex::new(Replication {
                replicas: vec![node_id],
                isr: vec![node_id],
                min_insync: 1,
                partition_epoch: 0,
                // Set by the first assignment.
                leading_since_ms: i64::MIN,
                followers: HashMap::new(),
                pending: None,
            }),
            log_end,
            high_watermark,
            group_commit,
            last_time_flush_ms: AtomicI64::new(crate::replica::manager::now_ms()),
            initial_high_watermark: AtomicI64::new(log_start_offset),
            cut_off_lag_ms: AtomicI64::new(-1),
        }
    }

    /// `Some(replica.lag.time.max.ms)` while this copy's broker is cut off from the
    /// controller quorum, `None` once in contact; wakes acks=all requests waiting on the
    /// followers so they look at [`Partition::deposed`] again.
    pub fn set_cut_off(&self, lag_max_ms: Option<i64>) {
        self.cut_off_lag_ms
            .store(lag_max_ms.unwrap_or(-1), Ordering::Release);
        self.high_watermark.send_modify(|_| {});
    }

    /// Whether this leader copy has been replaced without being able to learn it: its broker
    /// is cut off from the controller quorum and its ISR followers have not caught up for
    /// `replica.lag.time.max.ms` (they follow a new leader now, or cannot reach this one
    /// either). Kafka's leader would shrink the ISR here, which needs the controller; instead
    /// it acknowledges nothing more and sends clients elsewhere (NOT_LEADER_OR_FOLLOWER). A
    /// cut-off leader whose followers still fetch (only the controller is unreachable) keeps
    /// leading, and one whose ISR is itself alone cannot have been replaced.
    pub fn deposed(&self, now_ms: i64) -> bool {
        let lag_max_ms = self.cut_off_lag_ms.load(Ordering::Acquire);
        if lag_max_ms < 0 {
            return false;
        }
        let Ok(r) = self.replication.lock() else {
            return false;
        };
        r.isr.iter().filter(|m| **m != self.node_id).any(|member| {
            let caught_up = r.followers.get(member).map_or(r.leading_since_ms, |f| {
                f.last_caught_up_ms.max(r.leading_since_ms)
            });
            now_ms.saturating_sub(caught_up) > lag_max_ms
        })
    }

    /// The high watermark checkpointed before this broker (re)started: where a replicated
    /// partition's starts (capped to the log) when its first assignment arrives.
    pub fn restore_high_watermark(&self, checkpointed: i64) {
        self.initial_high_watermark
            .store(checkpointed, Ordering::Release);
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
        let _role = self.role.write().unwrap_or_else(|e| e.into_inner());
        self.leader_epoch.store(epoch, Ordering::Release);
        self.high_watermark.send_modify(|_| {});
    }

    /// Checks a request's `current_leader_epoch` against this broker's (KIP-320):
    /// FENCED_LEADER_EPOCH when the request's is older, UNKNOWN_LEADER_EPOCH when newer.
    pub fn check_leader_epoch(&self, requested: i32) -> Result<(), ReplicaError> {
        let epoch = self.leader_epoch();
        if requested < epoch {
            Err(ReplicaError::FencedLeaderEpoch { requested, epoch })
        } else if requested > epoch {
            Err(ReplicaError::UnknownLeaderEpoch { requested, epoch })
        } else {
            Ok(())
        }
    }

    fn not_leader(&self) -> ReplicaError {
        ReplicaError::NotLeader {
            topic: self.topic.clone(),
            partition: self.index,
        }
    }

    /// The node id of the partition's leader as of the last applied metadata (-1: none).
    pub fn leader(&self) -> i32 {
        self.leader.load(Ordering::Acquire)
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

    /// Appends a produce request's records as leader, stamped with the current leader epoch
    /// (NOT_LEADER_OR_FOLLOWER if this broker no longer leads). When the returned info says
    /// `flush_needed`, the caller must [`Partition::flush_to`] `last_offset + 1` before it
    /// acknowledges (that wait is phase two of a produce, so it does not hold up the
    /// connection); acks=all waits with [`Partition::wait_replicated`].
    pub fn append_as_leader(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
    ) -> Result<AppendInfo, ReplicaError> {
        self.append_verified(records, now_ms, TxnVerification::Off)
    }

    /// [`Partition::append_as_leader`] of a client's batch whose transaction, if it opens one,
    /// was verified with its coordinator as `verification` says (KIP-890).
    pub fn append_verified(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
        verification: TxnVerification,
    ) -> Result<AppendInfo, ReplicaError> {
        self.append_from(records, now_ms, AppendOrigin::Client(verification))
    }

    /// Leader append of a coordinator's batch written for a producer (no sequences; see
    /// [`crate::log::AppendOrigin::Coordinator`]), verified as `verification` says.
    pub fn append_as_coordinator(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
        verification: TxnVerification,
    ) -> Result<AppendInfo, ReplicaError> {
        self.append_from(records, now_ms, AppendOrigin::Coordinator(verification))
    }

    fn append_from(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo, ReplicaError> {
        self.leader_append(|log, epoch| {
            log.append_from(records, now_ms, epoch, origin)
                .map(|info| (info, ()))
        })
        .map(|(info, ())| info)
    }

    /// Leader append of a transaction marker (WriteTxnMarkers): see
    /// [`crate::log::PartitionLog::append_marker`].
    pub fn append_marker_as_leader(
        self: &Arc<Self>,
        marker: &Marker,
        now_ms: i64,
    ) -> Result<(AppendInfo, Option<CompletedTxn>), ReplicaError> {
        self.leader_append(|log, epoch| log.append_marker(marker, now_ms, epoch))
    }

    /// Runs one append on the log as the leader (at its leader epoch, with leadership held
    /// still), then publishes the new log end, moves the high watermark and flushes a rolled
    /// segment in the background. `append` returns the append and anything else to hand back.
    fn leader_append<T>(
        self: &Arc<Self>,
        append: impl FnOnce(&PartitionLog, i32) -> Result<(AppendInfo, T), crate::log::LogError>,
    ) -> Result<(AppendInfo, T), ReplicaError> {
        let role = self.role.read().unwrap_or_else(|e| e.into_inner());
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let (info, extra) = match append(&self.log, self.leader_epoch()) {
            Ok(done) => done,
            Err(error) => {
                drop(role);
                self.maybe_offline();
                return Err(error.into());
            }
        };
        drop(role);
        if info.duplicate {
            // Nothing was written.
            return Ok((info, extra));
        }
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
        self.log_end.send_replace(info.last_offset + 1);
        self.maybe_advance_high_watermark();
        Ok((info, extra))
    }

    /// Applies the metadata's view of the partition: its leader and epoch, replicas, ISR and
    /// `min.insync.replicas`. A new leadership starts with no follower positions.
    pub fn set_assignment(&self, assignment: Assignment<'_>, now_ms: i64) {
        let role = self.role.write().unwrap_or_else(|e| e.into_inner());
        let was_leading = self.is_leader();
        self.leader.store(assignment.leader, Ordering::Release);
        self.leader_epoch
            .store(assignment.leader_epoch, Ordering::Release);
        if let Ok(mut r) = self.replication.lock() {
            r.replicas = assignment.replicas.to_vec();
            r.isr = assignment.isr.to_vec();
            r.min_insync = assignment.min_insync.max(1);
            r.partition_epoch = assignment.partition_epoch;
            if r.pending
                .as_ref()
                .is_some_and(|p| p.based_on != assignment.partition_epoch)
            {
                // The metadata moved on: whatever was pending committed (and this ISR shows it)
                // or can no longer commit (it was based on an older partition epoch).
                r.pending = None;
            }
            if r.leading_since_ms == i64::MIN && assignment.replicas.len() > 1 {
                // First assignment of a replicated partition (a start): the high watermark is
                // the checkpointed one (Kafka's replication-offset-checkpoint), capped to this
                // log; without a checkpoint, the log start, so nothing is visible to consumers
                // that the ISR may not have. (A single copy's log end is its high watermark.)
                let start = self
                    .initial_high_watermark
                    .load(Ordering::Acquire)
                    .clamp(self.log.log_start_offset(), self.log.log_end_offset());
                self.high_watermark.send_replace(start);
            }
            if !was_leading || assignment.leader != self.node_id || r.leading_since_ms == i64::MIN {
                r.followers.clear();
                r.leading_since_ms = now_ms;
                r.pending = None;
            }
            r.followers.retain(|f, _| assignment.replicas.contains(f));
        }
        drop(role);
        self.maybe_advance_high_watermark();
        // Wake acks=all waits: a change of leader or epoch fails them.
        self.high_watermark.send_modify(|_| {});
    }

    /// The ISR change this leader should ask for now, if any: followers in the ISR that have
    /// not caught up for `lag_max_ms` leave it (Kafka's `replica.lag.time.max.ms`); replicas
    /// outside it whose copy reached the high watermark join it. The leader itself stays. The
    /// caller asks the controller for it: from now until the metadata answers, the members it
    /// names count for the high watermark (the maximal ISR, see [`PendingIsr`]).
    pub fn isr_change(
        &self,
        now_ms: i64,
        lag_max_ms: i64,
        eligible: impl Fn(i32) -> bool,
    ) -> Option<IsrChange> {
        if !self.is_leader() {
            return None;
        }
        let high_watermark = self.high_watermark();
        let r = self.replication.lock().ok()?;
        let mut isr: Vec<i32> = r
            .isr
            .iter()
            .copied()
            .filter(|member| {
                if *member == self.node_id {
                    return true;
                }
                let caught_up = r.followers.get(member).map_or(r.leading_since_ms, |f| {
                    f.last_caught_up_ms.max(r.leading_since_ms)
                });
                now_ms.saturating_sub(caught_up) <= lag_max_ms
            })
            .collect();
        if !isr.contains(&self.node_id) {
            isr.insert(0, self.node_id);
        }
        for replica in &r.replicas {
            // Only on the strength of a recent fetch: a stopped follower's last position may
            // still be at the (stuck) high watermark.
            let caught_up = r.followers.get(replica).is_some_and(|f| {
                f.log_end >= high_watermark
                    && now_ms.saturating_sub(f.last_caught_up_ms) <= lag_max_ms
            });
            // As Kafka (KIP-841): a fenced broker or one in controlled shutdown may not join.
            if !isr.contains(replica) && caught_up && eligible(*replica) {
                isr.push(*replica);
            }
        }
        let mut before = r.isr.clone();
        let mut after = isr.clone();
        before.sort_unstable();
        after.sort_unstable();
        if before == after {
            return None;
        }
        let based_on = r.partition_epoch;
        drop(r);
        let Ok(mut r) = self.replication.lock() else {
            return None;
        };
        // From now until the metadata answers, the high watermark waits for these members too.
        match &mut r.pending {
            Some(pending) if pending.based_on == based_on => {
                for member in &isr {
                    if !pending.members.contains(member) {
                        pending.members.push(*member);
                    }
                }
            }
            _ => {
                r.pending = Some(PendingIsr {
                    based_on,
                    members: isr.clone(),
                    uncertain: false,
                })
            }
        }
        Some(IsrChange {
            isr,
            partition_epoch: based_on,
        })
    }

    /// The ISR change based on `based_on` was not made (see [`IsrNotMade`]).
    ///
    /// A refusal on the epoch itself (an ineligible member, KIP-841) while no earlier change
    /// on that epoch is unanswered ends the pending state, as Kafka resets to the committed
    /// state after an AlterPartition error: the partition was still at that epoch when the
    /// refusal applied, so none of this leader's changes on it committed before, and none can
    /// after; its members stop holding the high watermark (one refused for shutting down
    /// stops fetching soon). A stale-epoch refusal clears nothing: the epoch may have moved
    /// on by this leader's own earlier change, which the next metadata will show.
    pub fn isr_change_not_made(&self, based_on: i32, why: IsrNotMade) {
        let Ok(mut r) = self.replication.lock() else {
            return;
        };
        let Some(pending) = r.pending.as_mut().filter(|p| p.based_on == based_on) else {
            return;
        };
        match why {
            IsrNotMade::Unanswered => pending.uncertain = true,
            IsrNotMade::StaleEpoch => {}
            IsrNotMade::Refused if pending.uncertain => {}
            IsrNotMade::Refused => r.pending = None,
        }
        drop(r);
        self.maybe_advance_high_watermark();
    }

    /// Whether this copy's log went offline after a storage error (a failed write, fsync,
    /// roll or truncation): it takes no writes, moves no high watermark, acknowledges nothing
    /// more; the broker reports it and the controller moves leadership to a healthy ISR member.
    pub fn is_offline(&self) -> bool {
        self.log.is_offline()
    }

    /// After a failed log operation: if the log went offline, waiters for acknowledgements
    /// are woken so they fail now instead of at their timeout.
    fn maybe_offline(&self) {
        if self.log.is_offline() {
            self.high_watermark.send_modify(|_| {});
        }
    }

    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.leader() == self.node_id
    }

    /// The in-sync replicas as the metadata last said.
    pub fn isr(&self) -> Vec<i32> {
        self.replication
            .lock()
            .map(|r| r.isr.clone())
            .unwrap_or_default()
    }

    /// Whether an acks=all produce may append: the ISR has at least `min.insync.replicas`
    /// members. Returns the ISR size and the minimum when it has not.
    pub fn check_min_isr(&self) -> Result<(), (usize, usize)> {
        match self.replication.lock() {
            Ok(r) if r.isr.len() >= r.min_insync => Ok(()),
            Ok(r) => Err((r.isr.len(), r.min_insync)),
            Err(_) => Err((0, 1)),
        }
    }

    /// Whether records this broker appended as leader at `leader_epoch`, ending before `end`,
    /// are committed: `Some(Ok)` once the high watermark reaches `end`; `Some(Err)`
    /// (NOT_LEADER_OR_FOLLOWER) once this broker stops leading or the epoch moves on, because
    /// from then on the records may be truncated and the high watermark (now the new leader's)
    /// says nothing about them, as Kafka completes such a produce; `None` while neither.
    pub fn replication_outcome(
        &self,
        end: i64,
        leader_epoch: i32,
    ) -> Option<Result<(), ReplicaError>> {
        if !self.is_leader()
            || self.leader_epoch() != leader_epoch
            || self.deposed(crate::replica::manager::now_ms())
        {
            return Some(Err(self.not_leader()));
        }
        if self.is_offline() {
            // This copy may have lost what it held: no acknowledgement on its strength.
            return Some(Err(ReplicaError::Flush(format!(
                "the log of {}-{} is offline after a storage error",
                self.topic, self.index
            ))));
        }
        (self.high_watermark() >= end).then_some(Ok(()))
    }

    /// Waits for [`Partition::replication_outcome`] (the caller bounds the wait).
    pub async fn wait_replicated(&self, end: i64, leader_epoch: i32) -> Result<(), ReplicaError> {
        let mut changes = self.high_watermark.subscribe();
        loop {
            // Mark the current value seen before looking: a change after the look wakes us.
            changes.borrow_and_update();
            if let Some(outcome) = self.replication_outcome(end, leader_epoch) {
                return outcome;
            }
            if changes.changed().await.is_err() {
                return Err(self.not_leader());
            }
        }
    }

    /// The log end offset; a receiver that changes on every append.
    pub fn subscribe_log_end(&self) -> watch::Receiver<i64> {
        self.log_end.subscribe()
    }

    /// A follower fetched from `offset`: everything below it is in its log. Moves the high
    /// watermark when that completes the ISR's copies.
    pub fn record_follower_fetch(&self, follower: i32, offset: i64, now_ms: i64) {
        let leader_log_end = self.log.log_end_offset();
        if let Ok(mut r) = self.replication.lock() {
            if r.replicas.contains(&follower) {
                let state = r.followers.entry(follower).or_default();
                // Kafka's rule: caught up now if it has everything; caught up as of its previous
                // fetch if it has everything the leader had then.
                if offset >= leader_log_end {
                    state.last_caught_up_ms = now_ms;
                } else if offset >= state.last_fetch_leader_log_end && state.last_fetch_ms > 0 {
                    state.last_caught_up_ms = state.last_caught_up_ms.max(state.last_fetch_ms);
                }
                state.log_end = offset;
                state.last_fetch_leader_log_end = leader_log_end;
                state.last_fetch_ms = now_ms;
            }
        }
        self.maybe_advance_high_watermark();
    }

    /// On the leader: the high watermark becomes the smallest log end offset in the maximal
    /// ISR (the committed ISR and every member of a pending change; its own included), never
    /// moving back. Followers take the leader's (see
    /// [`Partition::append_as_follower`]).
    fn maybe_advance_high_watermark(&self) {
        if !self.is_leader() || self.is_offline() {
            return;
        }
        let own = self.log.log_end_offset();
        let Ok(r) = self.replication.lock() else {
            return;
        };
        let mut lowest = own;
        let pending = r.pending.iter().flat_map(|p| p.members.iter());
        for member in r.isr.iter().chain(pending) {
            if *member == self.node_id {
                continue;
            }
            // A member whose position is not known yet holds the watermark where it is.
            let known = r.followers.get(member).map_or(i64::MIN, |f| f.log_end);
            lowest = lowest.min(known);
        }
        drop(r);
        self.high_watermark.send_if_modified(|hw| {
            if lowest > *hw {
                *hw = lowest;
                true
            } else {
                false
            }
        });
    }

    /// On the leader: answers follower `follower`'s fetch from `fetch_offset` (its log end).
    /// With the epoch of its last fetched batch (Fetch v12+), first checks that its log agrees
    /// with this one up to `fetch_offset` (KIP-320) and answers [`FollowerFetch::Diverging`]
    /// if not; otherwise records its position (which may move the high watermark and the ISR)
    /// and reads up to the log end.
    pub fn serve_follower_fetch(
        &self,
        follower: i32,
        fetch_offset: i64,
        last_fetched_epoch: Option<i32>,
        max_bytes: usize,
        now_ms: i64,
    ) -> Result<FollowerFetch, ReplicaError> {
        let log_start_offset = self.log.log_start_offset();
        if fetch_offset < log_start_offset {
            // Retention moved past the follower: it starts over from this log's start.
            return Err(self.out_of_range(fetch_offset));
        }
        if let Some(last_epoch) = last_fetched_epoch.filter(|e| *e >= 0) {
            let diverging = match self.log.end_offset_for_epoch(last_epoch) {
                Some((epoch, end)) if epoch == last_epoch && end >= fetch_offset => None,
                Some((epoch, end)) => Some((epoch, end)),
                None => Some((-1, -1)),
            };
            if let Some((epoch, end_offset)) = diverging {
                return Ok(FollowerFetch::Diverging {
                    epoch,
                    end_offset,
                    high_watermark: self.high_watermark(),
                    log_start_offset: self.log.log_start_offset(),
                });
            }
        }
        if fetch_offset > self.log.log_end_offset() {
            // A copy cannot hold what this log does not: never recorded, or the high watermark
            // would count records no replica has.
            return Err(self.out_of_range(fetch_offset));
        }
        self.record_follower_fetch(follower, fetch_offset, now_ms);
        self.read_for_follower(fetch_offset, max_bytes)
            .map(FollowerFetch::Records)
    }

    fn out_of_range(&self, offset: i64) -> ReplicaError {
        ReplicaError::Log(crate::log::LogError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log.log_start_offset(),
            log_end_offset: self.log.log_end_offset(),
        })
    }

    /// On a follower: applies what `leader` answered to a fetch sent while this broker knew the
    /// partition at `leader_epoch`. An answer from a leadership that is over (another leader or
    /// epoch since, or this broker leads now) is dropped.
    pub fn apply_from_leader(
        &self,
        leader: i32,
        leader_epoch: i32,
        fetched: FetchedFromLeader,
    ) -> Result<FollowerApply, ReplicaError> {
        let _role = self.role.read().unwrap_or_else(|e| e.into_inner());
        if self.leader() != leader || self.leader_epoch() != leader_epoch || self.is_leader() {
            return Ok(FollowerApply::Stale);
        }
        if self.is_offline() {
            return Ok(FollowerApply::Stale);
        }
        let flush_to = match fetched {
            FetchedFromLeader::Diverging { epoch, end_offset } => {
                self.truncate_diverging(epoch, end_offset)?;
                None
            }
            FetchedFromLeader::Records {
                records,
                high_watermark,
            } => self.append_as_follower(records, high_watermark)?,
            FetchedFromLeader::OutOfRange {
                log_start_offset,
                high_watermark,
            } => {
                self.recover_out_of_range(log_start_offset, high_watermark)?;
                None
            }
        };
        Ok(FollowerApply::Applied { flush_to })
    }

    /// The leader refused this copy's fetch offset (its log end) as out of range, as Kafka's
    /// follower handles it: below the leader's log start, this log restarts empty at that start
    /// (retention deleted what it would fetch next; everything below is gone at the leader
    /// too); otherwise it is beyond the leader's log end, and it is cut to the leader's high
    /// watermark (everything acknowledged is below it).
    fn recover_out_of_range(
        &self,
        leader_log_start: i64,
        leader_high_watermark: i64,
    ) -> Result<(), ReplicaError> {
        let log_end = self.log.log_end_offset();
        if log_end < leader_log_start {
            tracing::info!(topic = %self.topic, partition = self.index, log_end, leader_log_start, "follower fell behind the leader's log start: starting over there");
            self.truncated(self.log.truncate_fully_and_start_at(leader_log_start))?;
            // Nothing below the new start exists here; everything at it is yet to come.
            self.high_watermark.send_replace(leader_log_start);
        } else if leader_high_watermark >= 0 && leader_high_watermark < log_end {
            tracing::info!(topic = %self.topic, partition = self.index, log_end, leader_high_watermark, "follower is past the leader's log end: truncating to its high watermark");
            self.truncate_log_to(leader_high_watermark)?;
        }
        Ok(())
    }

    /// Appends batches fetched from the leader (offsets as the leader assigned them) and takes
    /// the leader's high watermark, capped at what this log holds. Returns the offset to
    /// flush to when `flush.messages` was reached.
    fn append_as_follower(
        &self,
        records: Bytes,
        leader_high_watermark: i64,
    ) -> Result<Option<i64>, ReplicaError> {
        let mut flush_to = None;
        if !records.is_empty() {
            let info = self.log.append_replicated(records)?;
            self.log_end.send_replace(info.last_offset + 1);
            flush_to = info.flush_needed.then_some(info.last_offset + 1);
        }
        let cap = self.log.log_end_offset().min(leader_high_watermark);
        self.high_watermark.send_if_modified(|hw| {
            if cap > *hw {
                *hw = cap;
                true
            } else {
                false
            }
        });
        Ok(flush_to)
    }

    /// The leader says this copy's history of `epoch` diverges from its own, which ends at
    /// `leader_end` (KIP-320): cut the log where the two agree (the smaller of the leader's end
    /// and this log's end of the largest epoch up to `epoch`), so the next fetch continues the
    /// leader's history. `(-1, -1)`: the leader knows no epoch this old; fall back to the high
    /// watermark.
    fn truncate_diverging(&self, epoch: i32, leader_end: i64) -> Result<(), ReplicaError> {
        let log_end = self.log.log_end_offset();
        let to = if epoch < 0 || leader_end < 0 {
            self.high_watermark().min(log_end)
        } else {
            match self.log.end_offset_for_epoch(epoch) {
                Some((_, local_end)) => local_end.min(leader_end),
                None => leader_end.min(log_end),
            }
        };
        if to < log_end {
            tracing::info!(topic = %self.topic, partition = self.index, from = log_end, to, epoch, "truncating a diverging follower log");
        }
        // Also at the log end: an epoch this log began without writing anything goes.
        self.truncate_log_to(to)?;
        Ok(())
    }

    /// Reads for a follower: whole batches from `offset` up to the log end (not the high
    /// watermark: the follower's copy is what moves it).
    pub fn read_for_follower(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<FetchedData, ReplicaError> {
        let high_watermark = self.high_watermark();
        let log_end = self.log.log_end_offset();
        let records = self.log.read_slice(offset, max_bytes, log_end, true)?;
        Ok(FetchedData {
            records,
            high_watermark,
            last_stable_offset: self.log.last_stable_offset(high_watermark),
            log_start_offset: self.log.log_start_offset(),
            aborted: Vec::new(),
        })
    }

    /// Waits until every offset below `offset` is on disk (group commit: see
    /// [`GroupCommit`]). Fails if the log was truncated below `offset` meanwhile or an fsync
    /// failed; cancel-safe.
    pub async fn flush_to(&self, offset: i64) -> Result<(), ReplicaError> {
        let flushed = self.group_commit.flush_to(&self.log, offset).await;
        self.maybe_offline();
        match flushed {
            Ok(()) => Ok(()),
            // Only a follower truncates: this broker stopped leading while the producer waited,
            // and the batch is gone (NOT_LEADER_OR_FOLLOWER: the producer retries on the new
            // leader).
            Err(FlushError::Truncated { .. }) => Err(self.not_leader()),
            Err(e) => Err(ReplicaError::Flush(e.to_string())),
        }
    }

    /// fsyncs the log now, on the calling (blocking) thread, and records how far it is durable
    /// (`flush.ms`).
    pub fn flush_now(&self) -> Result<i64, ReplicaError> {
        self.group_commit
            .flush_now(|| self.log.flush().map_err(|e| e.to_string()))
            .map_err(|e| ReplicaError::Flush(e.to_string()))
    }

    /// Truncates the log to `offset` (whole batches: the new end may be lower) and brings the
    /// durable mark down with it.
    fn truncate_log_to(&self, offset: i64) -> Result<(), ReplicaError> {
        self.truncated(self.log.truncate_to(offset))
    }

    /// After a truncation of the log (`result`): the durable mark, the published log end and
    /// the high watermark come down to the new log end, even if the truncation failed part of
    /// the way.
    fn truncated(&self, result: Result<(), crate::log::LogError>) -> Result<(), ReplicaError> {
        let end = self.log.log_end_offset();
        self.group_commit.note_truncation(end);
        self.log_end.send_replace(end);
        self.high_watermark.send_if_modified(|hw| {
            if *hw > end {
                *hw = end;
                true
            } else {
                false
            }
        });
        Ok(result?)
    }

    /// Reads for a consumer: whole batches from `offset`, never past the high watermark, and
    /// under `read_committed` never past the last stable offset, with the aborted transactions
    /// the consumer must drop (those overlapping `offset..last stable offset`: a superset of
    /// what the returned batches need, which clients ignore the rest of).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        read_committed: bool,
    ) -> Result<FetchedData, ReplicaError> {
        let high_watermark = self.high_watermark();
        let last_stable_offset = self.log.last_stable_offset(high_watermark);
        let upper = if read_committed {
            last_stable_offset
        } else {
            high_watermark
        };
        let records = self
            .log
            .read_slice(offset, max_bytes, upper, min_one_batch)?;
        let aborted = if read_committed && !records.is_empty() {
            self.log.aborted_transactions(offset, last_stable_offset)
        } else {
            Vec::new()
        };
        Ok(FetchedData {
            records,
            high_watermark,
            last_stable_offset,
            log_start_offset: self.log.log_start_offset(),
            aborted,
        })
    }

    /// The last stable offset now.
    pub fn last_stable_offset(&self) -> i64 {
        self.log.last_stable_offset(self.high_watermark())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::log::batch::testing::batch;
    use crate::log::LogConfig;

    /// Broker 1 leads at leader epoch 0 with replicas 1, 2 and 3, as of `partition_epoch`.
    fn lead_on_1(p: &Partition, partition_epoch: i32, isr: &[i32], min_insync: usize, now_ms: i64) {
        p.set_assignment(
            Assignment {
                leader: 1,
                leader_epoch: 0,
                partition_epoch,
                replicas: &[1, 2, 3],
                isr,
                min_insync,
            },
            now_ms,
        );
    }

    fn partition(dir: &std::path::Path, node_id: i32, leader: i32) -> Partition {
        let log = PartitionLog::open(dir.to_path_buf(), LogConfig::default(), 0).expect("open");
        Partition::new(
            "t".into(),
            Uuid::nil(),
            0,
            node_id,
            Arc::new(log),
            leader,
            0,
        )
    }

    /// The old leader wrote two records of epoch 0 that never reached the new leader, which
    /// has written in epoch 2 since: the leader's answer to "epoch 0 up to offset 12" is that
    /// epoch 0 ended at 10, and the follower cuts its log there.
    #[test]
    fn a_diverging_follower_truncates_to_where_the_leader_history_agrees() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = partition(dirs.0.path(), 1, 1);
        for _ in 0..5 {
            leader.log().append(batch(0, 2, 1), 1, 0).unwrap();
        }
        leader.log().append(batch(0, 5, 1), 1, 2).unwrap();
        let old = partition(dirs.1.path(), 2, 1);
        for _ in 0..6 {
            old.log().append(batch(0, 2, 1), 1, 0).unwrap();
        }
        assert_eq!(old.log().log_end_offset(), 12);
        let (epoch, end) = leader.log().end_offset_for_epoch(0).unwrap();
        assert_eq!((epoch, end), (0, 10), "epoch 0 ended where epoch 2 began");
        old.truncate_diverging(epoch, end).unwrap();
        assert_eq!(old.log().log_end_offset(), 10);
        assert_eq!(old.log().latest_epoch(), Some(0));
        // Now its history agrees: epoch 0 ends at its log end, where it fetches from.
        assert_eq!(leader.log().end_offset_for_epoch(0), Some((0, 10)));
        let fetched = leader.read_for_follower(10, 1 << 20).unwrap();
        old.append_as_follower(fetched.records.read().unwrap(), fetched.high_watermark)
            .unwrap();
        assert_eq!(old.log().log_end_offset(), 15);
        assert_eq!(old.log().latest_epoch(), Some(2));
    }

    /// Under `flush.messages`, a follower's append says to flush before it fetches again, so
    /// an acks=all acknowledgement implies every ISR copy is on disk (as in Kafka).
    #[tokio::test]
    async fn followers_flush_per_flush_messages_before_fetching_again() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = Arc::new(partition(dirs.0.path(), 1, 1));
        leader.append_as_leader(batch(0, 3, 1), 1).unwrap();
        for (flush_messages, expected) in [(u64::MAX, None), (1, Some(3))] {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                flush_messages,
                ..LogConfig::default()
            };
            let log = PartitionLog::open(dir.path().to_path_buf(), config, 0).expect("open");
            let follower = Partition::new("t".into(), Uuid::nil(), 0, 2, Arc::new(log), 1, 0);
            let fetched = leader.read_for_follower(0, 1 << 20).unwrap();
            let applied = follower
                .apply_from_leader(
                    1,
                    0,
                    FetchedFromLeader::Records {
                        records: fetched.records.read().unwrap(),
                        high_watermark: 3,
                    },
                )
                .unwrap();
            assert_eq!(applied, FollowerApply::Applied { flush_to: expected });
            if let Some(offset) = expected {
                follower.flush_to(offset).await.unwrap();
                assert_eq!(follower.log().recovery_point(), 3);
            }
        }
        // An answer from another leader or epoch is dropped.
        let fetched = leader.read_for_follower(0, 1 << 20).unwrap();
        let follower = partition(dirs.1.path(), 2, 1);
        let stale = FetchedFromLeader::Records {
            records: fetched.records.read().unwrap(),
            high_watermark: 3,
        };
        assert_eq!(
            follower.apply_from_leader(3, 0, stale.clone()).unwrap(),
            FollowerApply::Stale
        );
        assert_eq!(
            follower.apply_from_leader(1, 1, stale).unwrap(),
            FollowerApply::Stale
        );
        assert_eq!(follower.log().log_end_offset(), 0);
    }

    /// Group commit through the partition (issue 11, item 6): a waiter dropped mid-flush
    /// leaves nothing stuck; a truncation brings the durable mark down, so records written
    /// again are really fsynced; a waiter whose target was truncated away fails.
    #[tokio::test]
    async fn group_commit_is_exact_after_truncation_and_cancel_safe() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), 2, 1);
        for _ in 0..5 {
            p.log().append(batch(0, 2, 1), 1, 0).unwrap();
        }
        {
            let mut dropped = Box::pin(p.flush_to(6));
            assert!(futures::poll!(&mut dropped).is_pending());
        }
        let flushed = tokio::time::timeout(Duration::from_secs(10), p.flush_to(10)).await;
        assert!(
            matches!(flushed, Ok(Ok(()))),
            "a flush after a dropped waiter: {flushed:?}"
        );
        assert_eq!(p.log().recovery_point(), 10);

        // The leader says the log diverges from offset 4: cut, then written again.
        p.truncate_diverging(0, 4).unwrap();
        assert_eq!(p.log().log_end_offset(), 4);
        for _ in 0..3 {
            p.log().append(batch(0, 2, 2), 1, 1).unwrap();
        }
        p.flush_to(10).await.unwrap();
        assert_eq!(
            p.log().recovery_point(),
            10,
            "offsets 4..10 were written again and must be fsynced again"
        );

        // A waiter for offset 12, whose fsync completes before the log is cut to 8.
        p.log().append(batch(0, 2, 3), 1, 1).unwrap();
        let mut waiter = Box::pin(p.flush_to(12));
        assert!(futures::poll!(&mut waiter).is_pending());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while p.log().recovery_point() < 12 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        p.truncate_diverging(1, 8).unwrap();
        assert!(
            waiter.await.is_err(),
            "offsets 8..12 were truncated away: the wait must not report them durable"
        );
    }

    /// A follower's fetch offset above the leader's log end is refused and never recorded, so
    /// the high watermark never counts records that follower does not have (issue 11, item 2).
    #[test]
    fn a_follower_fetch_above_the_log_end_is_refused_and_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(partition(dir.path(), 1, 1));
        lead_on_1(&p, 0, &[1, 2, 3], 2, 0);
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        let claimed = p.serve_follower_fetch(2, 100, None, 1 << 20, 10);
        assert!(
            matches!(
                claimed,
                Err(ReplicaError::Log(
                    crate::log::LogError::OffsetOutOfRange { .. }
                ))
            ),
            "{claimed:?}"
        );
        p.serve_follower_fetch(3, 4, None, 1 << 20, 10).unwrap();
        assert_eq!(
            p.high_watermark(),
            0,
            "follower 2 has not shown it holds anything"
        );
        p.serve_follower_fetch(2, 4, None, 1 << 20, 10).unwrap();
        assert_eq!(p.high_watermark(), 4);
    }

    /// KIP-497's maximal ISR (issue 11, item 4): from the moment the leader asks for a replica
    /// to join, the high watermark waits for it too, so the joiner holds everything
    /// acknowledged once the change commits, whenever the leader hears of the commit.
    #[test]
    fn a_pending_isr_expansion_counts_for_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(partition(dir.path(), 1, 1));
        let assign = |isr: &[i32], partition_epoch: i32| lead_on_1(&p, partition_epoch, isr, 1, 0);
        assign(&[1, 2], 0);
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        p.record_follower_fetch(2, 4, 10);
        p.record_follower_fetch(3, 4, 10);
        assert_eq!(p.high_watermark(), 4);
        let change = p
            .isr_change(20, 30_000, |_| true)
            .expect("3 caught up: an expansion");
        assert_eq!((change.isr, change.partition_epoch), (vec![1, 2, 3], 0));
        // The change is in flight (or committed, unheard of): 2 fetches on, 3 does not.
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        p.record_follower_fetch(2, 8, 30);
        assert_eq!(p.high_watermark(), 4, "3 is in the maximal ISR");
        p.record_follower_fetch(3, 8, 40);
        assert_eq!(p.high_watermark(), 8);
        // The metadata answers: from then on the committed ISR rules.
        assign(&[1, 2, 3], 1);
        p.append_as_leader(batch(0, 2, 1), 1).unwrap();
        p.record_follower_fetch(2, 10, 50);
        p.record_follower_fetch(3, 10, 50);
        assert_eq!(p.high_watermark(), 10);
    }

    /// A stopping follower caught up, the leader asks to take it back, the controller refuses
    /// (KIP-841) and the follower stops: the refusal releases the high watermark, unless an
    /// earlier change on that epoch went unanswered (it may still commit); a stale-epoch
    /// refusal releases nothing.
    #[test]
    fn a_refused_isr_expansion_stops_holding_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(partition(dir.path(), 1, 1));
        lead_on_1(&p, 0, &[1, 2], 1, 0);
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        p.record_follower_fetch(2, 4, 10);
        p.record_follower_fetch(3, 4, 10);
        // Ineligible in this leader's view: not asked for at all.
        assert_eq!(p.isr_change(20, 30_000, |r| r != 3), None);
        let change = p.isr_change(20, 30_000, |_| true).expect("an expansion");
        // Follower 3 stops; 2 goes on.
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        p.record_follower_fetch(2, 8, 30);
        assert_eq!(p.high_watermark(), 4, "3 is pending");
        p.isr_change_not_made(change.partition_epoch, IsrNotMade::StaleEpoch);
        assert_eq!(p.high_watermark(), 4, "a stale refusal releases nothing");
        p.isr_change_not_made(change.partition_epoch, IsrNotMade::Unanswered);
        p.isr_change_not_made(change.partition_epoch, IsrNotMade::Refused);
        assert_eq!(
            p.high_watermark(),
            4,
            "an unanswered change may still commit"
        );
        // A new epoch (the metadata moved on) clears it; then a fresh change refused on its
        // own epoch releases the watermark at once.
        lead_on_1(&p, 1, &[1, 2], 1, 40);
        assert_eq!(p.high_watermark(), 8);
        p.record_follower_fetch(3, 8, 50);
        let change = p.isr_change(60, 30_000, |_| true).expect("an expansion");
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        p.record_follower_fetch(2, 12, 70);
        assert_eq!(p.high_watermark(), 8, "3 is pending again");
        p.isr_change_not_made(change.partition_epoch, IsrNotMade::Refused);
        assert_eq!(p.high_watermark(), 12);
    }

    #[test]
    fn the_high_watermark_is_the_smallest_log_end_in_the_isr() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(partition(dir.path(), 1, 1));
        lead_on_1(&p, 0, &[1, 2, 3], 2, 0);
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        assert_eq!(p.high_watermark(), 0, "no follower has fetched yet");
        p.record_follower_fetch(2, 4, 10);
        assert_eq!(p.high_watermark(), 0, "follower 3 has not");
        p.record_follower_fetch(3, 2, 10);
        assert_eq!(p.high_watermark(), 2);
        p.record_follower_fetch(3, 4, 20);
        assert_eq!(p.high_watermark(), 4);
        // Follower 3 stops fetching: after the lag limit the leader asks to drop it; follower 2
        // keeps up and stays.
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        p.record_follower_fetch(2, 8, 39_000);
        assert_eq!(p.isr_change(1_000, 30_000, |_| true), None);
        let change = p.isr_change(40_000, 30_000, |_| true).expect("a shrink");
        assert_eq!(change.isr, vec![1, 2]);
        lead_on_1(&p, 1, &[1, 2], 2, 40_000);
        assert_eq!(p.high_watermark(), 8, "the ISR without 3 has everything");
        // Back and caught up: it rejoins.
        p.record_follower_fetch(3, 8, 40_100);
        assert_eq!(
            p.isr_change(40_200, 30_000, |_| true).map(|c| c.isr),
            Some(vec![1, 2, 3])
        );
    }

    /// Cut off from the controller quorum, a leader whose ISR followers keep fetching keeps
    /// leading (only the controller is away); once they have been silent past the lag limit
    /// it is deposed: waiting acks=all requests are refused and nothing more is taken. Contact
    /// again undoes it; a leader alone in its ISR is never deposed.
    #[test]
    fn a_cut_off_leader_is_deposed_once_its_followers_fall_silent() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(partition(dir.path(), 1, 1));
        let assign = |isr: &'static [i32], at: i64| lead_on_1(&p, 0, isr, 2, at);
        assign(&[1, 2, 3], 0);
        let t0 = crate::replica::manager::now_ms();
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        p.record_follower_fetch(2, 4, t0);
        p.record_follower_fetch(3, 4, t0);
        p.append_as_leader(batch(0, 4, 1), 1).unwrap();
        assert!(!p.deposed(t0 + 100_000), "in contact: never deposed");
        p.set_cut_off(Some(60_000));
        assert!(!p.deposed(t0 + 1_500), "followers fetched 1.5 s ago");
        assert!(p.replication_outcome(8, 0).is_none(), "still waiting");
        assert!(
            p.deposed(t0 + 60_500),
            "followers silent past the lag limit"
        );
        // Followers last heard of long ago: a waiting acks=all is refused now.
        p.record_follower_fetch(2, 8, t0 - 120_000);
        p.record_follower_fetch(3, 8, t0 - 120_000);
        assert!(matches!(
            p.replication_outcome(16, 0),
            Some(Err(ReplicaError::NotLeader { .. }))
        ));
        p.set_cut_off(None);
        assert!(!p.deposed(t0 + 100_000), "contact again");
        // Alone in its ISR, no one else can have been made leader.
        assign(&[1], t0);
        p.set_cut_off(Some(2_000));
        assert!(!p.deposed(t0 + 100_000));
    }
}
