//! [`GroupService`]: the group coordinator's runtime.
//!
//! [`GroupCoordinator`] decides; this module does what it asks:
//!
//! - **Requests.** A handler calls [`GroupService::call`] with a step of the coordinator. The
//!   step runs under one lock; a response that is not ready (a JoinGroup waiting for the join
//!   phase, a SyncGroup waiting for the leader, a commit waiting for its append) is delivered
//!   later through a oneshot channel keyed by the request's token, so a waiting request never
//!   holds up anything else. Steps that answer at once (Heartbeat, OffsetFetch, ListGroups,
//!   DescribeGroups) use [`GroupService::with`].
//! - **Appends.** The records a step returns are appended to the `__consumer_offsets` partition
//!   while the lock is held, so appends reach the log in the coordinator's order. The wait for
//!   them to be committed (the fsync that `flush.messages` asks for; with replication, the high
//!   watermark passing them) runs in its own task, bounded by `offsets.commit.timeout.ms`; then
//!   the coordinator is told ([`GroupCoordinator::complete`]) and releases what waited.
//! - **Timers.** One task sleeps until [`GroupCoordinator::next_deadline`] and ticks; a step that
//!   moves the deadline earlier wakes it.
//! - **Loading.** Becoming the leader of a `__consumer_offsets` partition begins loading it (its
//!   groups answer `COORDINATOR_LOAD_IN_PROGRESS`), and a blocking task replays its records from
//!   the log start to the log end, in chunks, then finishes loading.
//!
//! Invariant: every request registered by `call` is answered exactly once, with the response
//! the coordinator released or, if the service stops first, with `None` (the handler answers
//! `NOT_COORDINATOR`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use super::{
    encode_records, read_log, wait_committed, BatchProducer, CommitError, ReplayItem, Timer,
};

use crate::config::BrokerConfig;
use crate::group::{Append, AppendError, GroupCoordinator, Output, RequestToken, Response};
use crate::log::producer_state::{SequenceError, TxnVerification};
use crate::log::LogError;
use crate::replica::manager::now_ms;
use crate::replica::{ReplicaError, ReplicaManager};

pub use crate::cluster::metadata::OFFSETS_TOPIC;

/// The group coordinator's runtime (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct GroupService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GroupService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupService").finish_non_exhaustive()
    }
}

struct Inner {
    config: Arc<BrokerConfig>,
    replicas: Arc<ReplicaManager>,
    state: Mutex<State>,
    /// Woken when the coordinator's next deadline may have moved earlier.
    timer: Timer,
}

struct State {
    coordinator: GroupCoordinator,
    /// Requests waiting for a response, by token.
    waiters: HashMap<RequestToken, oneshot::Sender<Response>>,
    next_token: RequestToken,
    /// `__consumer_offsets` partitions this coordinator has begun loading (or serves).
    hosted: HashSet<i32>,
    /// Partitions begun by `host_led_partitions` and not yet handed to a loader.
    to_load: Vec<i32>,
    /// Set by `shutdown`: no new requests are taken.
    stopped: bool,
}

impl GroupService {
    /// A service that serves no partition yet.
    pub fn new(config: Arc<BrokerConfig>, replicas: Arc<ReplicaManager>) -> GroupService {
        let coordinator = GroupCoordinator::new(config.group_config());
        GroupService {
            inner: Arc::new(Inner {
                config,
                replicas,
                state: Mutex::new(State {
                    coordinator,
                    waiters: HashMap::new(),
                    next_token: 0,
                    hosted: HashSet::new(),
                    to_load: Vec::new(),
                    stopped: false,
                }),
                timer: Timer::default(),
            }),
        }
    }

    /// Runs `step` now, with a fresh request token, and returns where the response the
    /// coordinator releases for it will arrive (at once, or after a rebalance or an append).
    /// Running the step before returning keeps a connection's group requests in arrival order.
    /// The receiver fails if the service stops first.
    pub fn submit(
        &self,
        step: impl FnOnce(&mut GroupCoordinator, i64, RequestToken) -> Output,
    ) -> oneshot::Receiver<Response> {
        let (sender, receiver) = oneshot::channel();
        let mut state = self.inner.lock();
        if state.stopped {
            return receiver;
        }
        state.next_token = state.next_token.wrapping_add(1);
        let token = state.next_token;
        state.waiters.insert(token, sender);
        let output = step(&mut state.coordinator, now_ms(), token);
        self.inner.dispatch(&mut state, output);
        receiver
    }

    /// Runs a step that answers at once (it may still move timers).
    pub fn with<R>(&self, step: impl FnOnce(&mut GroupCoordinator, i64) -> R) -> R {
        let mut state = self.inner.lock();
        let result = step(&mut state.coordinator, now_ms());
        self.inner.rearm(&mut state);
        result
    }

    /// Runs a step that answers no request (its appends are performed, its releases sent).
    pub fn run(&self, step: impl FnOnce(&mut GroupCoordinator, i64) -> Output) {
        let mut state = self.inner.lock();
        let output = step(&mut state.coordinator, now_ms());
        self.inner.dispatch(&mut state, output);
    }

    /// The `__consumer_offsets` partition of a group.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        crate::group::partition_for(group_id, self.inner.config.offsets_topic_num_partitions())
    }

    /// Begins loading every `__consumer_offsets` partition this broker leads and does not host
    /// yet, and queues them for [`GroupService::load_pending`]; until it has replayed them, their
    /// groups answer `COORDINATOR_LOAD_IN_PROGRESS`. Unloads the partitions it no longer leads.
    pub fn host_led_partitions(&self) {
        let led: Vec<i32> = self
            .inner
            .replicas
            .all_partitions()
            .iter()
            .filter(|p| p.topic() == OFFSETS_TOPIC && p.leader() == self.inner.replicas.node_id())
            .map(|p| p.index())
            .collect();
        let mut state = self.inner.lock();
        if state.stopped {
            return;
        }
        // Partitions whose leadership moved away: their groups go (pending joins and syncs get
        // NOT_COORDINATOR, clients look the coordinator up again).
        let lost: Vec<i32> = state
            .hosted
            .iter()
            .copied()
            .filter(|p| !led.contains(p))
            .collect();
        for partition in lost {
            state.hosted.remove(&partition);
            state.to_load.retain(|p| *p != partition);
            tracing::info!(
                partition,
                "no longer leading this __consumer_offsets partition: unloading its groups"
            );
            let output = state.coordinator.unload(partition);
            self.inner.dispatch(&mut state, output);
        }
        for partition in led {
            if state.hosted.insert(partition) {
                let output = state.coordinator.begin_loading(partition);
                self.inner.dispatch(&mut state, output);
                state.to_load.push(partition);
            }
        }
    }

    /// Replays a partition begun by [`GroupService::host_led_partitions`] and starts serving
    /// its groups. Runs the log reads on the blocking pool.
    async fn load(&self, partition: i32) {
        let inner = Arc::clone(&self.inner);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || inner.replay_partition(partition)).await;
        let records = match result {
            Ok(Ok(records)) => records,
            Ok(Err(error)) => {
                tracing::error!(partition, %error, "cannot load __consumer_offsets partition");
                return;
            }
            Err(error) => {
                tracing::error!(partition, %error, "__consumer_offsets load task failed");
                return;
            }
        };
        let mut state = self.inner.lock();
        if state.stopped || !state.hosted.contains(&partition) {
            return;
        }
        let output = state.coordinator.finish_loading(partition, now_ms());
        self.inner.dispatch(&mut state, output);
        tracing::debug!(
            partition,
            records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded __consumer_offsets partition"
        );
    }

    /// A transaction's marker was written on `__consumer_offsets` partition `partition` here:
    /// the producer's pending transactional offsets there are committed or dropped.
    pub fn complete_txn(&self, partition: i32, producer_id: i64, commit: bool) {
        let mut state = self.inner.lock();
        if state.hosted.contains(&partition) {
            state
                .coordinator
                .complete_txn(partition, producer_id, commit);
        }
    }

    /// Hosts and loads every led partition not hosted yet (start-up, topic creation).
    pub async fn host_and_load(&self) {
        self.host_led_partitions();
        self.load_pending().await;
    }

    /// Loads every partition queued by [`GroupService::host_led_partitions`].
    pub async fn load_pending(&self) {
        let mut partitions = std::mem::take(&mut self.inner.lock().to_load);
        if partitions.is_empty() {
            return;
        }
        partitions.sort_unstable();
        let count = partitions.len();
        let started = std::time::Instant::now();
        for partition in partitions {
            self.load(partition).await;
        }
        tracing::info!(
            partitions = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "group coordinator loaded"
        );
    }

    /// The timer loop: ticks the coordinator at its deadlines until `shutdown` turns true.
    pub async fn run_timers(self, shutdown: watch::Receiver<bool>) {
        let inner = &self.inner;
        inner
            .timer
            .run(
                shutdown,
                || inner.lock().coordinator.next_deadline(),
                || {
                    let mut state = inner.lock();
                    let output = state.coordinator.tick(now_ms());
                    inner.dispatch(&mut state, output);
                },
            )
            .await;
    }

    /// Stops serving: every hosted partition is unloaded (what waited is answered
    /// `NOT_COORDINATOR`) and new requests get `None`.
    pub fn shutdown(&self) {
        let mut state = self.inner.lock();
        state.stopped = true;
        let hosted: Vec<i32> = state.hosted.drain().collect();
        for partition in hosted {
            let output = state.coordinator.unload(partition);
            self.inner.dispatch(&mut state, output);
        }
        state.waiters.clear();
    }
}

impl Inner {
    /// The state; a poisoned lock (a panic elsewhere while holding it) is taken over, since the
    /// coordinator's own invariants do not depend on the panicking step having finished.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers responses and performs appends, including those released by appends that
    /// complete at once.
    fn dispatch(self: &Arc<Self>, state: &mut State, output: Output) {
        let mut queue = VecDeque::from([output]);
        while let Some(output) = queue.pop_front() {
            for (token, response) in output.responses {
                if let Some(waiter) = state.waiters.remove(&token) {
                    // The requester may have gone (connection closed): nothing to do then.
                    let _ = waiter.send(response);
                }
            }
            for append in output.appends {
                if let Some(done) = self.start_append(append) {
                    let (token, result) = done;
                    queue.push_back(state.coordinator.complete(now_ms(), token, result));
                }
            }
        }
        self.rearm(state);
    }

    /// Wakes the timer task if the next deadline moved earlier than the one it sleeps to.
    fn rearm(&self, state: &mut State) {
        self.timer.rearm(state.coordinator.next_deadline());
    }

    /// Appends one batch; returns its outcome if it is known now, or spawns the wait for it to
    /// be committed (which completes it later).
    fn start_append(
        self: &Arc<Self>,
        append: Append,
    ) -> Option<(crate::group::AppendToken, Result<(), AppendError>)> {
        let token = append.token;
        let partition = match self
            .replicas
            .leader_partition(OFFSETS_TOPIC, append.partition)
        {
            Ok(partition) => partition,
            Err(_) => return Some((token, Err(AppendError::NotLeader))),
        };
        let batch = match encode_batch(&append) {
            Ok(batch) => batch,
            Err(error) => return Some((token, Err(error))),
        };
        let appended = if append.producer.is_some() {
            let verification = if self.config.transaction_partition_verification() {
                TxnVerification::Guard(append.verification)
            } else {
                TxnVerification::Off
            };
            partition.append_as_coordinator(batch, now_ms(), verification)
        } else {
            partition.append_as_leader(batch, now_ms())
        };
        let info = match appended {
            Ok(info) => info,
            Err(error) => return Some((token, Err(append_error(&error)))),
        };
        if !info.flush_needed && partition.high_watermark() > info.last_offset {
            return Some((token, Ok(())));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Some((token, Err(AppendError::Storage)));
        };
        let inner = Arc::clone(self);
        let timeout = Duration::from_millis(self.config.offsets_commit_timeout_ms());
        runtime.spawn(async move {
            let result = tokio::time::timeout(timeout, wait_committed(&partition, info))
                .await
                .unwrap_or(Err(CommitError::Timeout))
                .map_err(|error| match error {
                    CommitError::Storage => AppendError::Storage,
                    CommitError::NotLeader => AppendError::NotLeader,
                    CommitError::Timeout => AppendError::Timeout,
                });
            let mut state = inner.lock();
            let output = state.coordinator.complete(now_ms(), token, result);
            inner.dispatch(&mut state, output);
        });
        None
    }

    /// Reads a loading partition from its log start to its log end and replays every record;
    /// returns how many records were replayed.
    fn replay_partition(self: &Arc<Self>, partition: i32) -> Result<u64, LogError> {
        let Ok(hosted) = self.replicas.leader_partition(OFFSETS_TOPIC, partition) else {
            return Ok(0);
        };
        let mut replayed = 0u64;
        read_log(&hosted, |items| {
            let mut state = self.lock();
            if state.stopped || !state.hosted.contains(&partition) {
                return false;
            }
            for item in items {
                replayed += 1;
                let replay = match item {
                    ReplayItem::Record {
                        key,
                        value,
                        producer_id: None,
                    } => state.coordinator.replay(partition, &key, value.as_deref()),
                    // A transactional offset commit: pending until its marker.
                    ReplayItem::Record {
                        key,
                        value,
                        producer_id: Some(producer_id),
                    } => {
                        state
                            .coordinator
                            .replay_txn(partition, producer_id, &key, value.as_deref())
                    }
                    ReplayItem::Marker {
                        producer_id,
                        commit,
                    } => {
                        state
                            .coordinator
                            .complete_txn(partition, producer_id, commit);
                        Ok(())
                    }
                };
                if let Err(error) = replay {
                    tracing::warn!(partition, %error, "skipping a __consumer_offsets record");
                }
            }
            true
        })?;
        Ok(replayed)
    }
}

/// What an append failure means to the coordinator.
fn append_error(error: &ReplicaError) -> AppendError {
    match error {
        ReplicaError::UnknownTopicOrPartition { .. }
        | ReplicaError::NotLeader { .. }
        | ReplicaError::FencedLeaderEpoch { .. }
        | ReplicaError::UnknownLeaderEpoch { .. } => AppendError::NotLeader,
        ReplicaError::Log(LogError::BatchTooLarge { .. }) => AppendError::RecordTooLarge,
        ReplicaError::Log(LogError::Sequence(SequenceError::StaleEpoch { .. })) => {
            AppendError::StaleProducerEpoch
        }
        ReplicaError::Log(LogError::Sequence(SequenceError::NotVerified { .. })) => {
            AppendError::NotVerified
        }
        ReplicaError::Log(_) | ReplicaError::Flush(_) => AppendError::Storage,
    }
}

/// One uncompressed record batch holding the append's records.
fn encode_batch(append: &Append) -> Result<Bytes, AppendError> {
    let records: Vec<(Bytes, Option<Bytes>)> = append
        .records
        .iter()
        .map(|record| (record.key.clone(), record.value.clone()))
        .collect();
    let producer = append
        .producer
        .map(|(producer_id, producer_epoch)| BatchProducer {
            producer_id,
            producer_epoch,
        });
    encode_records(&records, append.timestamp_ms, producer).map_err(|_| AppendError::RecordTooLarge)
}
