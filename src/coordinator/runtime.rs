//! [`Runtime`]: a coordinator's state machine run against the real world, written once for the
//! group coordinator ([`super::group`]) and the transaction coordinator ([`super::txn`]).
//!
//! The state machine ([`Machine`]) decides and does no I/O; its [`Driver`] says the few things
//! that differ between coordinators (how an append is written and what its outcome means, how a
//! record read back replays, what else a step may ask for). The runtime does the rest:
//!
//! - **Requests.** A handler calls [`Runtime::submit`] (or [`Runtime::call`]) with a step of
//!   the machine. The step runs under one lock; a response that is not ready (a JoinGroup
//!   waiting for the join phase, a commit or an EndTxn waiting for its append) is delivered
//!   later through a oneshot channel keyed by the request's token, so a waiting request never
//!   holds up anything else. Steps that answer at once use [`Runtime::with`] or
//!   [`Runtime::read`].
//! - **Appends.** The records a step returns are appended to the internal topic's partition
//!   while the lock is held, so appends reach the log in the machine's order. An append the ISR
//!   already holds completes at once; otherwise the wait for it to be committed (the fsync that
//!   `flush.messages` asks for; with replication, the high watermark passing it) runs in its
//!   own task, bounded by the driver's timeout, and then the machine is told
//!   ([`Machine::complete`]) and releases what waited.
//! - **Jobs.** Anything else a step asks for (the transaction coordinator's markers) goes to
//!   [`Driver::start_job`].
//! - **Timers.** One task sleeps until [`Machine::next_deadline`] and ticks; a step that moves
//!   the deadline earlier wakes it.
//! - **Loading.** Leading a partition of the internal topic at a leader epoch not loaded yet
//!   begins loading it (its keys answer COORDINATOR_LOAD_IN_PROGRESS meanwhile), and a blocking
//!   task replays its records from the log start to the log end, in chunks, then finishes
//!   loading. A partition led elsewhere, or led again at a newer epoch (another leader may have
//!   written in between), is unloaded first.
//!
//! Invariant: every request registered by `submit` is answered exactly once, with the response
//! the machine released or, if the runtime stops first, by dropping the sender (the handler
//! answers NOT_COORDINATOR).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::{read_log, wait_committed, CommitError, ReplayItem, Timer};
use crate::log::{AppendInfo, LogError};
use crate::replica::manager::now_ms;
use crate::replica::{Partition, ReplicaManager};

/// A request's token: how the machine says which request a response is for.
pub type RequestToken = u64;

/// What one step of a machine asks the runtime to do.
pub struct Effects<M: Machine> {
    /// Responses, each for the request the caller tagged with the token.
    pub responses: Vec<(RequestToken, M::Response)>,
    /// Appends to perform, in order; each ends with a call to [`Machine::complete`].
    pub appends: Vec<M::Append>,
    /// Other work for the driver.
    pub jobs: Vec<M::Job>,
}

/// A coordinator's I/O-free state machine, as the runtime drives it (time is passed in).
pub trait Machine: Send + 'static {
    /// What a request is answered with.
    type Response: Send + 'static;
    /// What a step returns.
    type Output;
    /// An append the machine asks for.
    type Append;
    /// Identifies an append when its outcome is reported.
    type AppendToken: Copy + Send + 'static;
    /// Why an append failed.
    type AppendError: Send + 'static;
    /// Other work a step asks for.
    type Job;

    /// A step's output as effects.
    fn effects(output: Self::Output) -> Effects<Self>
    where
        Self: Sized;
    /// The partition an append goes to, and its token.
    fn append_target(append: &Self::Append) -> (i32, Self::AppendToken);
    /// When [`Machine::tick`] next has something to do.
    fn next_deadline(&self) -> Option<i64>;
    /// Acts on every deadline at or before `now_ms`.
    fn tick(&mut self, now_ms: i64) -> Self::Output;
    /// Starts hosting `partition`, loaded at `leader_epoch`: its keys wait for the load.
    fn begin_loading(&mut self, partition: i32, leader_epoch: i32) -> Self::Output;
    /// The partition's records are all replayed: its keys are served.
    fn finish_loading(&mut self, partition: i32, now_ms: i64) -> Self::Output;
    /// Stops hosting `partition`; what waited on it is answered NOT_COORDINATOR.
    fn unload(&mut self, partition: i32) -> Self::Output;
    /// The outcome of an append.
    fn complete(
        &mut self,
        now_ms: i64,
        token: Self::AppendToken,
        result: Result<(), Self::AppendError>,
    ) -> Self::Output;
    /// Replays one item read back from a loading partition.
    fn replay(&mut self, partition: i32, item: ReplayItem) -> Result<(), String>;
}

/// What differs between coordinators' I/O.
pub trait Driver: Send + Sync + Sized + 'static {
    /// The state machine.
    type Machine: Machine;
    /// The internal topic whose partitions the coordinator hosts.
    const TOPIC: &'static str;

    /// Writes `append` to `partition`, which this broker leads.
    fn append(
        &self,
        partition: &Arc<Partition>,
        append: &<Self::Machine as Machine>::Append,
    ) -> Result<AppendInfo, <Self::Machine as Machine>::AppendError>;
    /// Whether an append is committed as soon as it is written (no fsync asked for and the
    /// high watermark past it), so no task need wait for it.
    fn committed_now(&self, partition: &Partition, info: &AppendInfo) -> bool;
    /// How long an append may wait to be committed.
    fn commit_timeout(&self) -> Duration;
    /// What the wait for an append's commit (or its timeout) means to the machine.
    fn committed(
        &self,
        partition: &Partition,
        waited: Result<(), CommitError>,
    ) -> Result<(), <Self::Machine as Machine>::AppendError>;
    /// The error for an append to a partition this broker does not lead.
    fn not_leader() -> <Self::Machine as Machine>::AppendError;
    /// The error for an append that cannot be waited for (no async runtime).
    fn failed() -> <Self::Machine as Machine>::AppendError;
    /// Starts other work a step asked for.
    fn start_job(runtime: &Runtime<Self>, job: <Self::Machine as Machine>::Job);
}

/// A coordinator's runtime (see the module doc). Cheap to clone.
pub struct Runtime<D: Driver> {
    inner: Arc<Inner<D>>,
}

impl<D: Driver> Clone for Runtime<D> {
    fn clone(&self) -> Self {
        Runtime {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D: Driver> std::fmt::Debug for Runtime<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("topic", &D::TOPIC)
            .finish_non_exhaustive()
    }
}

struct Inner<D: Driver> {
    driver: D,
    replicas: Arc<ReplicaManager>,
    state: Mutex<State<D::Machine>>,
    /// Woken when the machine's next deadline may have moved earlier.
    timer: Timer,
}

struct State<M: Machine> {
    machine: M,
    /// Requests waiting for a response, by token.
    waiters: HashMap<RequestToken, oneshot::Sender<M::Response>>,
    next_token: RequestToken,
    /// Partitions begun loading (or served), with the leader epoch they were loaded at.
    hosted: HashMap<i32, i32>,
    /// Partitions begun by `host_led_partitions` and not yet handed to a loader.
    to_load: Vec<i32>,
    /// Set by `shutdown`: no new requests are taken.
    stopped: bool,
}

impl<D: Driver> Runtime<D> {
    /// A runtime for `machine` that hosts no partition yet.
    pub fn create(driver: D, replicas: Arc<ReplicaManager>, machine: D::Machine) -> Runtime<D> {
        Runtime {
            inner: Arc::new(Inner {
                driver,
                replicas,
                state: Mutex::new(State {
                    machine,
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

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.inner.driver
    }

    /// Runs `step` now, with a fresh request token, and returns where the response the machine
    /// releases for it will arrive (at once, or later). Running the step before returning keeps
    /// a connection's requests in arrival order. The receiver fails if the runtime stops first.
    pub fn submit(
        &self,
        step: impl FnOnce(&mut D::Machine, i64, RequestToken) -> <D::Machine as Machine>::Output,
    ) -> oneshot::Receiver<<D::Machine as Machine>::Response> {
        let (sender, receiver) = oneshot::channel();
        let mut state = self.inner.lock();
        if state.stopped {
            return receiver;
        }
        state.next_token = state.next_token.wrapping_add(1);
        let token = state.next_token;
        state.waiters.insert(token, sender);
        let output = step(&mut state.machine, now_ms(), token);
        self.inner.dispatch(&mut state, output);
        receiver
    }

    /// Runs a step that answers at once (it may still move timers).
    pub fn with<R>(&self, step: impl FnOnce(&mut D::Machine, i64) -> R) -> R {
        let mut state = self.inner.lock();
        let result = step(&mut state.machine, now_ms());
        self.inner.rearm(&state);
        result
    }

    /// Reads the machine.
    pub fn read<R>(&self, read: impl FnOnce(&D::Machine) -> R) -> R {
        read(&self.inner.lock().machine)
    }

    /// Reads the machine unless the runtime has stopped.
    pub fn read_serving<R>(&self, read: impl FnOnce(&D::Machine) -> R) -> Option<R> {
        let state = self.inner.lock();
        (!state.stopped).then(|| read(&state.machine))
    }

    /// Runs a step that answers no request (its effects are carried out).
    pub fn run(&self, step: impl FnOnce(&mut D::Machine, i64) -> <D::Machine as Machine>::Output) {
        let mut state = self.inner.lock();
        let output = step(&mut state.machine, now_ms());
        self.inner.dispatch(&mut state, output);
    }

    /// Runs `step` if `partition` is hosted (its effects are carried out).
    pub fn run_if_hosted(
        &self,
        partition: i32,
        step: impl FnOnce(&mut D::Machine, i64) -> <D::Machine as Machine>::Output,
    ) {
        let mut state = self.inner.lock();
        if state.hosted.contains_key(&partition) {
            let output = step(&mut state.machine, now_ms());
            self.inner.dispatch(&mut state, output);
        }
    }

    /// Begins loading every partition of the internal topic this broker leads and does not
    /// host at its current leader epoch, and queues them for [`Runtime::load_pending`]; until
    /// they are replayed, their keys answer COORDINATOR_LOAD_IN_PROGRESS. Unloads the ones it
    /// no longer leads at the epoch they were loaded at.
    pub fn host_led_partitions(&self) {
        let me = self.inner.replicas.node_id();
        let led: HashMap<i32, i32> = self
            .inner
            .replicas
            .all_partitions()
            .iter()
            .filter(|p| p.topic() == D::TOPIC && p.leader() == me)
            .map(|p| (p.index(), p.leader_epoch()))
            .collect();
        let mut state = self.inner.lock();
        if state.stopped {
            return;
        }
        let mut lost: Vec<i32> = state
            .hosted
            .iter()
            .filter(|(p, epoch)| led.get(p) != Some(epoch))
            .map(|(p, _)| *p)
            .collect();
        lost.sort_unstable();
        for partition in lost {
            state.hosted.remove(&partition);
            state.to_load.retain(|p| *p != partition);
            tracing::info!(
                topic = D::TOPIC,
                partition,
                "no longer leading this partition at the epoch it was loaded at: unloading it"
            );
            let output = state.machine.unload(partition);
            self.inner.dispatch(&mut state, output);
        }
        let mut led: Vec<(i32, i32)> = led.into_iter().collect();
        led.sort_unstable();
        for (partition, epoch) in led {
            if state.hosted.insert(partition, epoch).is_none() {
                let output = state.machine.begin_loading(partition, epoch);
                self.inner.dispatch(&mut state, output);
                state.to_load.push(partition);
            }
        }
    }

    /// Hosts and loads every led partition not hosted yet (start-up, topic creation).
    pub async fn host_and_load(&self) {
        self.host_led_partitions();
        self.load_pending().await;
    }

    /// Loads every partition queued by [`Runtime::host_led_partitions`].
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
            topic = D::TOPIC,
            partitions = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "coordinator partitions loaded"
        );
    }

    /// Replays a partition begun by [`Runtime::host_led_partitions`] on the blocking pool and
    /// starts serving its keys.
    async fn load(&self, partition: i32) {
        let inner = Arc::clone(&self.inner);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || inner.replay_partition(partition)).await;
        let records = match result {
            Ok(Ok(records)) => records,
            Ok(Err(error)) => {
                tracing::error!(topic = D::TOPIC, partition, %error, "cannot load a coordinator partition");
                return;
            }
            Err(error) => {
                tracing::error!(topic = D::TOPIC, partition, %error, "a coordinator partition's load task failed");
                return;
            }
        };
        let mut state = self.inner.lock();
        if state.stopped || !state.hosted.contains_key(&partition) {
            return;
        }
        let output = state.machine.finish_loading(partition, now_ms());
        self.inner.dispatch(&mut state, output);
        tracing::debug!(
            topic = D::TOPIC,
            partition,
            records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded a coordinator partition"
        );
    }

    /// The timer loop: ticks the machine at its deadlines until `shutdown` turns true.
    pub async fn run_timers(self, shutdown: watch::Receiver<bool>) {
        let inner = &self.inner;
        inner
            .timer
            .run(
                shutdown,
                || inner.lock().machine.next_deadline(),
                || {
                    let mut state = inner.lock();
                    let output = state.machine.tick(now_ms());
                    inner.dispatch(&mut state, output);
                },
            )
            .await;
    }

    /// Stops serving: every hosted partition is unloaded (what waited is answered
    /// NOT_COORDINATOR) and new requests get no answer.
    pub fn shutdown(&self) {
        let mut state = self.inner.lock();
        state.stopped = true;
        let mut hosted: Vec<i32> = state.hosted.drain().map(|(p, _)| p).collect();
        hosted.sort_unstable();
        for partition in hosted {
            let output = state.machine.unload(partition);
            self.inner.dispatch(&mut state, output);
        }
        state.waiters.clear();
    }
}

impl<D: Driver> Inner<D> {
    /// The state; a poisoned lock (a panic elsewhere while holding it) is taken over, since the
    /// machine's own invariants do not depend on the panicking step having finished.
    fn lock(&self) -> MutexGuard<'_, State<D::Machine>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers responses, performs appends (including those released by appends that
    /// complete at once) and starts jobs.
    fn dispatch(
        self: &Arc<Self>,
        state: &mut State<D::Machine>,
        output: <D::Machine as Machine>::Output,
    ) {
        let mut queue = VecDeque::from([output]);
        while let Some(output) = queue.pop_front() {
            let effects = D::Machine::effects(output);
            for (token, response) in effects.responses {
                if let Some(waiter) = state.waiters.remove(&token) {
                    // The requester may have gone (connection closed): nothing to do then.
                    let _ = waiter.send(response);
                }
            }
            for append in effects.appends {
                if let Some((token, result)) = self.start_append(append) {
                    queue.push_back(state.machine.complete(now_ms(), token, result));
                }
            }
            if !effects.jobs.is_empty() {
                let runtime = Runtime {
                    inner: Arc::clone(self),
                };
                for job in effects.jobs {
                    D::start_job(&runtime, job);
                }
            }
        }
        self.rearm(state);
    }

    /// Wakes the timer task if the next deadline moved earlier than the one it sleeps to.
    fn rearm(&self, state: &State<D::Machine>) {
        self.timer.rearm(state.machine.next_deadline());
    }

    /// Appends; returns the outcome if it is known now, or spawns the wait for the append to be
    /// committed (which completes it later).
    #[allow(clippy::type_complexity)]
    fn start_append(
        self: &Arc<Self>,
        append: <D::Machine as Machine>::Append,
    ) -> Option<(
        <D::Machine as Machine>::AppendToken,
        Result<(), <D::Machine as Machine>::AppendError>,
    )> {
        let (index, token) = D::Machine::append_target(&append);
        let Ok(partition) = self.replicas.leader_partition(D::TOPIC, index) else {
            return Some((token, Err(D::not_leader())));
        };
        let info = match self.driver.append(&partition, &append) {
            Ok(info) => info,
            Err(error) => return Some((token, Err(error))),
        };
        if self.driver.committed_now(&partition, &info) {
            return Some((token, Ok(())));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Some((token, Err(D::failed())));
        };
        let inner = Arc::clone(self);
        let timeout = self.driver.commit_timeout();
        runtime.spawn(async move {
            let waited = tokio::time::timeout(timeout, wait_committed(&partition, info))
                .await
                .unwrap_or(Err(CommitError::Timeout));
            let result = inner.driver.committed(&partition, waited);
            let mut state = inner.lock();
            let output = state.machine.complete(now_ms(), token, result);
            inner.dispatch(&mut state, output);
        });
        None
    }

    /// Reads a loading partition from its log start to its log end and replays every item;
    /// returns how many were read.
    fn replay_partition(self: &Arc<Self>, partition: i32) -> Result<u64, LogError> {
        let Ok(hosted) = self.replicas.leader_partition(D::TOPIC, partition) else {
            return Ok(0);
        };
        read_log(&hosted, |items| {
            let mut state = self.lock();
            if state.stopped || !state.hosted.contains_key(&partition) {
                return false;
            }
            for item in items {
                if let Err(error) = state.machine.replay(partition, item) {
                    tracing::warn!(topic = D::TOPIC, partition, %error, "skipping a record");
                }
            }
            true
        })
    }
}
