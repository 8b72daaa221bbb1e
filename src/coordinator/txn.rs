//! [`TxnService`]: the transaction coordinator's runtime.
//!
//! [`TxnCoordinator`] decides; this module does what it asks, as [`super::GroupService`] does
//! for groups:
//!
//! - **Requests.** A handler calls [`TxnService::submit`] with a step; the step runs under one
//!   lock and its response arrives through a oneshot channel, at once or once the write it
//!   depends on is committed.
//! - **Appends.** The `__transaction_state` records a step returns are appended while the lock
//!   is held (so they reach the log in the coordinator's order); the wait for the ISR runs in
//!   its own task, bounded by `request.timeout.ms`, then the coordinator is told.
//! - **Markers.** Each [`MarkerJob`] runs in its own task on the [`MarkerWriter`]; when every
//!   partition has its marker the coordinator is told, which writes the completion. A job
//!   stops when the coordinator stops serving the transaction (it moved to another broker,
//!   which re-issues the markers after its replay).
//! - **Timers.** One task sleeps until [`TxnCoordinator::next_deadline`] and ticks.
//! - **Loading.** Becoming the leader of a `__transaction_state` partition replays it (its ids
//!   answer COORDINATOR_LOAD_IN_PROGRESS meanwhile); the coordinator epoch is the partition's
//!   leader epoch.
//!
//! Invariant: every request registered by `submit` is answered exactly once, with the response
//! the coordinator released or, if the service stops first, by dropping the sender (the
//! handler answers NOT_COORDINATOR).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::markers::MarkerWriter;
use super::{encode_records, read_log, wait_committed, ReplayItem, Timer};
use crate::config::BrokerConfig;
use crate::log::LogError;
use crate::replica::manager::now_ms;
use crate::replica::ReplicaManager;
use crate::txn::{
    Append, AppendError, MarkerJob, Output, RequestToken, Response, TxnCoordinator,
    TRANSACTION_STATE_TOPIC,
};

/// The transaction coordinator's runtime (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct TxnService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TxnService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnService").finish_non_exhaustive()
    }
}

struct Inner {
    config: Arc<BrokerConfig>,
    replicas: Arc<ReplicaManager>,
    markers: MarkerWriter,
    state: Mutex<State>,
    timer: Timer,
}

struct State {
    coordinator: TxnCoordinator,
    waiters: HashMap<RequestToken, oneshot::Sender<Response>>,
    next_token: RequestToken,
    /// Hosted partitions and the leader epoch they were loaded at.
    hosted: HashMap<i32, i32>,
    /// Partitions begun and not yet handed to a loader.
    to_load: Vec<i32>,
    stopped: bool,
}

impl TxnService {
    /// A service that serves no partition yet.
    pub fn new(
        config: Arc<BrokerConfig>,
        replicas: Arc<ReplicaManager>,
        markers: MarkerWriter,
    ) -> TxnService {
        let coordinator = TxnCoordinator::new(config.txn_config());
        TxnService {
            inner: Arc::new(Inner {
                config,
                replicas,
                markers,
                state: Mutex::new(State {
                    coordinator,
                    waiters: HashMap::new(),
                    next_token: 0,
                    hosted: HashMap::new(),
                    to_load: Vec::new(),
                    stopped: false,
                }),
                timer: Timer::default(),
            }),
        }
    }

    /// Runs `step` now with a fresh request token; the response arrives on the receiver (which
    /// fails if the service stops first).
    pub fn submit(
        &self,
        step: impl FnOnce(&mut TxnCoordinator, i64, RequestToken) -> Output,
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

    /// Runs `step` and waits for its answer; a service that stopped first is NOT_COORDINATOR.
    pub async fn call(
        &self,
        step: impl FnOnce(&mut TxnCoordinator, i64, RequestToken) -> Output,
    ) -> Response {
        self.submit(step)
            .await
            .unwrap_or(Err(crate::txn::TxnError::NotCoordinator))
    }

    /// Reads the coordinator.
    pub fn with<R>(&self, read: impl FnOnce(&TxnCoordinator) -> R) -> R {
        read(&self.inner.lock().coordinator)
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        self.inner
            .lock()
            .coordinator
            .partition_for(transactional_id)
    }

    /// Begins loading every `__transaction_state` partition this broker leads and does not
    /// host at its current leader epoch; unloads the ones it no longer leads.
    pub fn host_led_partitions(&self) {
        let me = self.inner.replicas.node_id();
        let led: HashMap<i32, i32> = self
            .inner
            .replicas
            .all_partitions()
            .iter()
            .filter(|p| p.topic() == TRANSACTION_STATE_TOPIC && p.leader() == me)
            .map(|p| (p.index(), p.leader_epoch()))
            .collect();
        let mut state = self.inner.lock();
        if state.stopped {
            return;
        }
        let lost: Vec<i32> = state
            .hosted
            .iter()
            .filter(|(p, epoch)| led.get(p) != Some(epoch))
            .map(|(p, _)| *p)
            .collect();
        for partition in lost {
            state.hosted.remove(&partition);
            state.to_load.retain(|p| *p != partition);
            tracing::info!(partition, "no longer leading this __transaction_state partition at the epoch it was loaded at: unloading it");
            let output = state.coordinator.unload(partition);
            self.inner.dispatch(&mut state, output);
        }
        for (partition, epoch) in led {
            if state.hosted.insert(partition, epoch).is_none() {
                let output = state.coordinator.begin_loading(partition, epoch);
                self.inner.dispatch(&mut state, output);
                state.to_load.push(partition);
            }
        }
    }

    /// Hosts and loads every led partition not hosted yet.
    pub async fn host_and_load(&self) {
        self.host_led_partitions();
        let mut partitions = std::mem::take(&mut self.inner.lock().to_load);
        partitions.sort_unstable();
        for partition in partitions {
            self.load(partition).await;
        }
    }

    /// Replays a partition on the blocking pool and starts serving its ids.
    async fn load(&self, partition: i32) {
        let inner = Arc::clone(&self.inner);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || inner.replay_partition(partition)).await;
        let records = match result {
            Ok(Ok(records)) => records,
            Ok(Err(error)) => {
                tracing::error!(partition, %error, "cannot load __transaction_state partition");
                return;
            }
            Err(error) => {
                tracing::error!(partition, %error, "__transaction_state load task failed");
                return;
            }
        };
        let mut state = self.inner.lock();
        if state.stopped || !state.hosted.contains_key(&partition) {
            return;
        }
        let output = state.coordinator.finish_loading(partition, now_ms());
        self.inner.dispatch(&mut state, output);
        tracing::info!(
            partition,
            records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded __transaction_state partition"
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

    /// Stops serving: hosted partitions are unloaded and new requests get no answer.
    pub fn shutdown(&self) {
        let mut state = self.inner.lock();
        state.stopped = true;
        let hosted: Vec<i32> = state.hosted.drain().map(|(p, _)| p).collect();
        for partition in hosted {
            let output = state.coordinator.unload(partition);
            self.inner.dispatch(&mut state, output);
        }
        state.waiters.clear();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers responses, performs appends (including those released by appends that
    /// complete at once) and starts marker jobs.
    fn dispatch(self: &Arc<Self>, state: &mut State, output: Output) {
        let mut queue = VecDeque::from([output]);
        while let Some(output) = queue.pop_front() {
            for (token, response) in output.responses {
                if let Some(waiter) = state.waiters.remove(&token) {
                    let _ = waiter.send(response);
                }
            }
            for append in output.appends {
                if let Some((token, result)) = self.start_append(append) {
                    queue.push_back(state.coordinator.complete(now_ms(), token, result));
                }
            }
            for job in output.markers {
                self.start_markers(job);
            }
        }
        self.timer.rearm(state.coordinator.next_deadline());
    }

    /// Appends one record; returns its outcome if known now, or spawns the wait for it.
    fn start_append(
        self: &Arc<Self>,
        append: Append,
    ) -> Option<(crate::txn::AppendToken, Result<(), AppendError>)> {
        let token = append.token;
        let Ok(partition) = self
            .replicas
            .leader_partition(TRANSACTION_STATE_TOPIC, append.partition)
        else {
            return Some((token, Err(AppendError::NotLeader)));
        };
        let Ok(batch) = encode_records(&[(append.key, append.value)], append.timestamp_ms, None)
        else {
            return Some((token, Err(AppendError::Failed)));
        };
        let info = match partition.append_as_leader(batch, now_ms()) {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "__transaction_state append failed");
                return Some((token, Err(AppendError::Failed)));
            }
        };
        // Committed already (no fsync asked for, the ISR is this broker alone): no task.
        if !info.flush_needed
            && partition.high_watermark() > info.last_offset
            && partition.check_min_isr().is_ok()
        {
            return Some((token, Ok(())));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Some((token, Err(AppendError::Failed)));
        };
        let inner = Arc::clone(self);
        let timeout = Duration::from_millis(self.config.request_timeout_ms());
        runtime.spawn(async move {
            let result = match tokio::time::timeout(timeout, wait_committed(&partition, info)).await
            {
                Ok(Ok(())) if partition.check_min_isr().is_ok() => Ok(()),
                Ok(Err(super::CommitError::NotLeader)) => Err(AppendError::NotLeader),
                _ => Err(AppendError::Failed),
            };
            let mut state = inner.lock();
            let output = state.coordinator.complete(now_ms(), token, result);
            inner.dispatch(&mut state, output);
        });
        None
    }

    /// Runs a marker job in its own task; tells the coordinator when every marker is written.
    fn start_markers(self: &Arc<Self>, job: MarkerJob) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::clone(self);
        runtime.spawn(async move {
            let wanted = || {
                let state = inner.lock();
                !state.stopped
                    && state
                        .coordinator
                        .metadata(&job.transactional_id)
                        .is_some_and(|m| {
                            m.state.is_preparing()
                                && m.producer_id == job.producer_id
                                && m.producer_epoch == job.producer_epoch
                        })
            };
            if !inner.markers.write_all(&job, wanted).await {
                return;
            }
            let mut state = inner.lock();
            let output = state.coordinator.markers_written(
                now_ms(),
                &job.transactional_id,
                job.producer_id,
                job.producer_epoch,
            );
            inner.dispatch(&mut state, output);
        });
    }

    /// Reads a loading partition and replays every record; returns how many.
    fn replay_partition(self: &Arc<Self>, partition: i32) -> Result<u64, LogError> {
        let Ok(hosted) = self
            .replicas
            .leader_partition(TRANSACTION_STATE_TOPIC, partition)
        else {
            return Ok(0);
        };
        read_log(&hosted, |items| {
            let mut state = self.lock();
            if state.stopped || !state.hosted.contains_key(&partition) {
                return false;
            }
            for item in items {
                if let ReplayItem::Record { key, value, .. } = item {
                    if let Err(error) = state.coordinator.replay(partition, &key, value.as_deref())
                    {
                        tracing::warn!(partition, %error, "skipping a __transaction_state record");
                    }
                }
            }
            true
        })
    }
}
