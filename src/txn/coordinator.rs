//! [`TxnCoordinator`]: Kafka's transaction coordinator as a state machine that does no I/O.
//!
//! It serves the transactional ids whose `__transaction_state` partition this broker leads.
//! Each id has its last written [`TxnMetadata`] and at most one write in flight (`pending`): a
//! step that changes an id returns an [`Append`] of the new state and answers its request only
//! when the runtime reports the append committed ([`TxnCoordinator::complete`]); a request for
//! an id with a write in flight gets CONCURRENT_TRANSACTIONS, as in Kafka.
//!
//! # The life of a transaction
//! 1. InitProducerId: a new id gets a producer id (allocated by the caller, see
//!    [`TxnCoordinator::needs_producer_id`]) at epoch 0; a known one gets its epoch bumped
//!    (a new producer id when the epoch would overflow), which fences the previous producer.
//!    If a transaction is open, it is aborted first at the bumped epoch and the request gets
//!    CONCURRENT_TRANSACTIONS (the client retries until the abort completes).
//! 2. AddPartitionsToTxn / AddOffsetsToTxn: the partitions join; the state becomes Ongoing and
//!    the transaction's clock starts.
//! 3. EndTxn: PrepareCommit or PrepareAbort is written and a [`MarkerJob`] asks the runtime
//!    to have every partition's leader write the marker. When it reports them written
//!    ([`TxnCoordinator::markers_written`]), CompleteCommit or CompleteAbort is written and the
//!    client is answered (or after [`END_TXN_WAIT_MS`], whichever comes first: Kafka answers
//!    right after the Prepare write, which makes the next transaction wait for a retry).
//! 4. A transaction open longer than its timeout is aborted by [`TxnCoordinator::tick`] at a
//!    bumped epoch (the producer's next request is fenced); an id idle in a final state for
//!    `transactional.id.expiration.ms` is removed with a tombstone.
//!
//! # Failover
//! A new leader of a `__transaction_state` partition replays it ([`TxnCoordinator::replay`]),
//! and [`TxnCoordinator::finish_loading`] re-issues the markers of every transaction caught
//! in PrepareCommit or PrepareAbort. Markers carry the coordinator epoch (the partition's
//! leader epoch), so a deposed coordinator's markers are refused by the data partitions.
//! Unloading a partition answers its waiting requests NOT_COORDINATOR.
//!
//! Invariant: every request token passed in is answered exactly once, at once or by a later
//! step's [`Output`].

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::records::{decode_key, decode_value, encode_key, encode_value, TxnRecordError};
use super::state::{TxnMetadata, TxnState};

/// Tags a request whose response may come in a later step's output.
pub type RequestToken = u64;
/// Tags an append so its outcome can be reported back.
pub type AppendToken = u64;

/// What the coordinator answers a request with: the producer id and epoch (InitProducerId;
/// the others only look at success), or the error.
pub type Response = Result<(i64, i16), TxnError>;

/// The coordinator's errors, one per Kafka error code (the API layer maps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// NOT_COORDINATOR: this broker does not lead the id's partition.
    #[error("not the transaction coordinator")]
    NotCoordinator,
    /// COORDINATOR_LOAD_IN_PROGRESS: the id's partition is being replayed.
    #[error("the transaction coordinator is loading")]
    CoordinatorLoadInProgress,
    /// COORDINATOR_NOT_AVAILABLE: a write failed; retry.
    #[error("the transaction coordinator is not available")]
    CoordinatorNotAvailable,
    /// INVALID_PRODUCER_ID_MAPPING: the id is unknown or has another producer id.
    #[error("the producer id does not match the transactional id")]
    InvalidProducerIdMapping,
    /// PRODUCER_FENCED: a newer producer with the same transactional id exists.
    #[error("the producer was fenced by a newer one with the same transactional id")]
    ProducerFenced,
    /// CONCURRENT_TRANSACTIONS: a previous transaction is still completing; retry.
    #[error("a previous transaction is still completing")]
    ConcurrentTransactions,
    /// INVALID_TXN_STATE: the request does not fit the transaction's state.
    #[error("the request does not fit the transaction's state")]
    InvalidTxnState,
    /// INVALID_TRANSACTION_TIMEOUT: above `transaction.max.timeout.ms` or not positive.
    #[error("invalid transaction timeout")]
    InvalidTransactionTimeout,
}

/// Why an append failed, as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// This broker no longer leads the partition.
    NotLeader,
    /// Anything else (storage, timeout waiting for the ISR): the write may be retried.
    Failed,
}

/// The coordinator's settings (Kafka's names).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`.
    pub num_partitions: i32,
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_check_interval_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub expire_check_interval_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> TxnConfig {
        TxnConfig {
            num_partitions: 50,
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
            abort_check_interval_ms: 10_000,
            expire_check_interval_ms: 3_600_000,
        }
    }
}

/// A write of one `__transaction_state` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The partition.
    pub partition: i32,
    /// The record key (the transactional id).
    pub key: Bytes,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// The record timestamp.
    pub timestamp_ms: i64,
    /// Passed back to [`TxnCoordinator::complete`].
    pub token: AppendToken,
}

/// Markers to write: every partition of a decided transaction gets the marker from its
/// leader. The runtime reports back with [`TxnCoordinator::markers_written`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    /// The transactional id.
    pub transactional_id: String,
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch (the marker's).
    pub producer_epoch: i16,
    /// COMMIT or ABORT.
    pub commit: bool,
    /// The coordinator's epoch (its partition's leader epoch).
    pub coordinator_epoch: i32,
    /// The partitions.
    pub partitions: Vec<(String, i32)>,
}

/// Everything a step produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Responses, each for the request the caller tagged with the token.
    pub responses: Vec<(RequestToken, Response)>,
    /// Appends to perform; each ends with a call to `complete`.
    pub appends: Vec<Append>,
    /// Markers to write; each ends with a call to `markers_written`.
    pub markers: Vec<MarkerJob>,
}

impl Output {
    fn respond(mut self, token: RequestToken, response: Response) -> Output {
        self.responses.push((token, response));
        self
    }

    fn answer(token: RequestToken, response: Response) -> Output {
        Output::default().respond(token, response)
    }
}

/// What follows a pending write once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Answer the request with the new producer id and epoch.
    Respond(RequestToken),
    /// Answer the request, then write the markers (EndTxn).
    RespondAndMark(RequestToken),
    /// Write the markers (a timeout or fence abort).
    Mark,
    /// Nothing (the transaction is complete).
    Nothing,
    /// Forget the id (its tombstone is written).
    Remove,
}

#[derive(Debug, Clone)]
struct Pending {
    token: AppendToken,
    next: TxnMetadata,
    then: Then,
}

#[derive(Debug, Clone)]
struct Entry {
    meta: TxnMetadata,
    pending: Option<Pending>,
    /// An EndTxn answered once its transaction is complete, or at this deadline (ms) if the
    /// markers take longer: see [`END_TXN_WAIT_MS`].
    end_waiter: Option<(RequestToken, i64)>,
}

/// How long an EndTxn waits for its markers before it is answered anyway. Kafka answers as soon
/// as PrepareCommit/PrepareAbort is written, and the producer's next AddPartitionsToTxn then
/// meets CONCURRENT_TRANSACTIONS until the markers are written, which clients retry after their
/// backoff (librdkafka: `retry.backoff.ms`, 100 ms): one transaction per 100 ms from a
/// producer, however small (measured: 971 records/s in transactions of 100). Answering once the
/// transaction is complete lets the next one start at once; the decision is durable when the
/// Prepare record is, so answering at the deadline instead (a partition without a leader) is
/// Kafka's answer, just later.
pub const END_TXN_WAIT_MS: i64 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Loading,
    Active,
}

/// The transaction coordinator. See the module documentation.
#[derive(Debug)]
pub struct TxnCoordinator {
    config: TxnConfig,
    /// Hosted `__transaction_state` partitions: status and coordinator epoch.
    partitions: HashMap<i32, (Status, i32)>,
    txns: HashMap<String, Entry>,
    /// Appends in flight: token -> transactional id.
    in_flight: HashMap<AppendToken, String>,
    next_token: AppendToken,
    next_abort_check_ms: i64,
    next_expire_check_ms: i64,
}

/// The epoch after `epoch`, or `None` when it would overflow (a new producer id is needed).
/// Kafka keeps `i16::MAX` out of use.
fn bumped(epoch: i16) -> Option<i16> {
    (epoch < i16::MAX - 1).then_some(epoch + 1)
}

impl TxnCoordinator {
    /// A coordinator that hosts no partition yet.
    pub fn new(config: TxnConfig) -> TxnCoordinator {
        TxnCoordinator {
            config,
            partitions: HashMap::new(),
            txns: HashMap::new(),
            in_flight: HashMap::new(),
            next_token: 0,
            next_abort_check_ms: i64::MAX,
            next_expire_check_ms: i64::MAX,
        }
    }

    /// The `__transaction_state` partition of a transactional id (Kafka's mapping).
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        crate::group::partition_for(transactional_id, self.config.num_partitions)
    }

    /// Whether this coordinator serves the id now (NOT_COORDINATOR, or
    /// COORDINATOR_LOAD_IN_PROGRESS while its partition loads).
    pub fn serving(&self, transactional_id: &str) -> Result<(), TxnError> {
        self.check_serving(transactional_id).map(|_| ())
    }

    /// Whether this coordinator serves the id now.
    fn check_serving(&self, transactional_id: &str) -> Result<(i32, i32), TxnError> {
        let partition = self.partition_for(transactional_id);
        match self.partitions.get(&partition) {
            Some((Status::Active, epoch)) => Ok((partition, *epoch)),
            Some((Status::Loading, _)) => Err(TxnError::CoordinatorLoadInProgress),
            None => Err(TxnError::NotCoordinator),
        }
    }

    /// An id's metadata (DescribeTransactions; tests).
    pub fn metadata(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id).map(|e| &e.meta)
    }

    /// Every served id's metadata (ListTransactions).
    pub fn all_metadata(&self) -> impl Iterator<Item = &TxnMetadata> + '_ {
        self.txns
            .values()
            .filter(|e| {
                self.partitions.get(&e.meta.partition).map(|(s, _)| *s) == Some(Status::Active)
            })
            .map(|e| &e.meta)
    }

    /// Whether an InitProducerId for this id needs a fresh producer id (a new id, or an epoch
    /// about to overflow): the caller allocates one and passes it in.
    pub fn needs_producer_id(&self, transactional_id: &str) -> bool {
        self.txns
            .get(transactional_id)
            .is_none_or(|e| bumped(e.meta.producer_epoch).is_none())
    }

    fn write(&mut self, now_ms: i64, next: TxnMetadata, then: Then) -> Output {
        self.next_token = self.next_token.wrapping_add(1);
        let token = self.next_token;
        let append = Append {
            partition: next.partition,
            key: encode_key(&next.transactional_id),
            value: (then != Then::Remove).then(|| encode_value(&next.to_value())),
            timestamp_ms: now_ms,
            token,
        };
        self.in_flight.insert(token, next.transactional_id.clone());
        let id = next.transactional_id.clone();
        let pending = Pending { token, next, then };
        match self.txns.get_mut(&id) {
            Some(entry) => entry.pending = Some(pending),
            None => {
                // A new id: nothing is written for it yet.
                let mut meta = pending.next.clone();
                meta.state = TxnState::Empty;
                meta.producer_epoch = -1;
                self.txns.insert(
                    id,
                    Entry {
                        meta,
                        pending: Some(pending),
                        end_waiter: None,
                    },
                );
            }
        }
        Output {
            appends: vec![append],
            ..Output::default()
        }
    }

    /// InitProducerId with a transactional id. `expected` is the producer id and epoch a
    /// client that already had one sends (KIP-360, v3+); `fresh_producer_id` is required when
    /// [`TxnCoordinator::needs_producer_id`] says so.
    pub fn init_producer_id(
        &mut self,
        now_ms: i64,
        token: RequestToken,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
    ) -> Output {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Output::answer(token, Err(TxnError::InvalidTransactionTimeout));
        }
        let (partition, _) = match self.check_serving(transactional_id) {
            Ok(serving) => serving,
            Err(error) => return Output::answer(token, Err(error)),
        };
        let Some(entry) = self.txns.get(transactional_id) else {
            let Some(producer_id) = fresh_producer_id else {
                return Output::answer(token, Err(TxnError::CoordinatorNotAvailable));
            };
            let next = TxnMetadata {
                transactional_id: transactional_id.to_string(),
                partition,
                producer_id,
                producer_epoch: 0,
                last_producer_epoch: -1,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: now_ms,
            };
            return self.write(now_ms, next, Then::Respond(token));
        };
        if entry.pending.is_some() {
            return Output::answer(token, Err(TxnError::ConcurrentTransactions));
        }
        let meta = entry.meta.clone();
        if let Some((producer_id, epoch)) = expected {
            let current = producer_id == meta.producer_id && epoch == meta.producer_epoch;
            let retried = producer_id == meta.producer_id
                && epoch == meta.last_producer_epoch
                && meta.state == TxnState::Empty;
            if retried {
                // A retry of the bump that already happened: the same answer again.
                return Output::answer(token, Ok((meta.producer_id, meta.producer_epoch)));
            }
            if !current {
                return Output::answer(token, Err(TxnError::ProducerFenced));
            }
        }
        match meta.state {
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::PrepareEpochFence
            | TxnState::Dead => Output::answer(token, Err(TxnError::ConcurrentTransactions)),
            TxnState::Ongoing => {
                // Fence the old producer: abort its transaction at a bumped epoch; the client
                // retries until the abort is complete.
                let output = self.fence_and_abort(now_ms, &meta);
                output.respond(token, Err(TxnError::ConcurrentTransactions))
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let mut next = meta.clone();
                match bumped(meta.producer_epoch) {
                    Some(epoch) => {
                        next.last_producer_epoch = meta.producer_epoch;
                        next.producer_epoch = epoch;
                    }
                    None => {
                        let Some(producer_id) = fresh_producer_id else {
                            return Output::answer(token, Err(TxnError::CoordinatorNotAvailable));
                        };
                        next.producer_id = producer_id;
                        next.producer_epoch = 0;
                        next.last_producer_epoch = -1;
                    }
                }
                next.timeout_ms = timeout_ms;
                next.state = TxnState::Empty;
                next.partitions.clear();
                next.start_ms = -1;
                next.last_update_ms = now_ms;
                self.write(now_ms, next, Then::Respond(token))
            }
        }
    }

    /// Bumps the epoch of an id with an open transaction and writes PrepareAbort (Kafka's
    /// `prepareFenceProducerEpoch` then the coordinator-initiated abort).
    fn fence_and_abort(&mut self, now_ms: i64, meta: &TxnMetadata) -> Output {
        let mut next = meta.clone();
        if let Some(epoch) = bumped(meta.producer_epoch) {
            next.last_producer_epoch = meta.producer_epoch;
            next.producer_epoch = epoch;
        }
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms;
        self.write(now_ms, next, Then::Mark)
    }

    /// Checks a request from the producer that owns an id: its producer id and epoch, and that
    /// no write is in flight.
    fn owned(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<TxnMetadata, TxnError> {
        self.check_serving(transactional_id)?;
        let entry = self
            .txns
            .get(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        let meta = &entry.meta;
        if meta.producer_id != producer_id || meta.state == TxnState::Dead {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if epoch != meta.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        if entry.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(meta.clone())
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, which adds the group's `__consumer_offsets`
    /// partition): one answer for all the partitions.
    pub fn add_partitions(
        &mut self,
        now_ms: i64,
        token: RequestToken,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Output {
        let meta = match self.owned(transactional_id, producer_id, epoch) {
            Ok(meta) => meta,
            Err(error) => return Output::answer(token, Err(error)),
        };
        if meta.state.is_preparing() || meta.state == TxnState::PrepareEpochFence {
            return Output::answer(token, Err(TxnError::ConcurrentTransactions));
        }
        if !meta.state.may_become(TxnState::Ongoing) {
            return Output::answer(token, Err(TxnError::InvalidTxnState));
        }
        if meta.state == TxnState::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p))
        {
            return Output::answer(token, Ok((meta.producer_id, meta.producer_epoch)));
        }
        let mut next = meta.clone();
        if meta.state != TxnState::Ongoing {
            next.start_ms = now_ms;
            next.partitions.clear();
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms;
        self.write(now_ms, next, Then::Respond(token))
    }

    /// KIP-890 verification (AddPartitionsToTxn v4+ with `verify_only`, from a partition
    /// leader about to write a transactional producer's first batch): whether each partition
    /// is in the producer's open transaction. The id must be this coordinator's, with this
    /// producer id (INVALID_PRODUCER_ID_MAPPING) and epoch (PRODUCER_FENCED); a transaction
    /// being completed is CONCURRENT_TRANSACTIONS. A write in flight is not waited for: the
    /// partitions a client writes to were added by a write it saw complete.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<bool>, TxnError> {
        self.check_serving(transactional_id)?;
        let meta = &self
            .txns
            .get(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?
            .meta;
        if meta.producer_id != producer_id || meta.state == TxnState::Dead {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if meta.producer_epoch != epoch {
            return Err(TxnError::ProducerFenced);
        }
        if meta.state.is_preparing() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let ongoing = meta.state == TxnState::Ongoing;
        Ok(partitions
            .iter()
            .map(|partition| ongoing && meta.partitions.contains(partition))
            .collect())
    }

    /// EndTxn: commit or abort the open transaction.
    pub fn end_txn(
        &mut self,
        now_ms: i64,
        token: RequestToken,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Output {
        let meta = match self.owned(transactional_id, producer_id, epoch) {
            Ok(meta) => meta,
            Err(error) => return Output::answer(token, Err(error)),
        };
        let done = Ok((meta.producer_id, meta.producer_epoch));
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = meta.clone();
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                next.last_update_ms = now_ms;
                self.write(now_ms, next, Then::RespondAndMark(token))
            }
            // A retry of an EndTxn that was done.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Output::answer(token, done)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Output::answer(token, Err(TxnError::ConcurrentTransactions))
            }
            (TxnState::PrepareEpochFence, _) => {
                Output::answer(token, Err(TxnError::ProducerFenced))
            }
            _ => Output::answer(token, Err(TxnError::InvalidTxnState)),
        }
    }

    /// The runtime's report that an append is committed (or failed).
    pub fn complete(
        &mut self,
        now_ms: i64,
        token: AppendToken,
        result: Result<(), AppendError>,
    ) -> Output {
        let Some(id) = self.in_flight.remove(&token) else {
            return Output::default();
        };
        let Some(entry) = self.txns.get_mut(&id) else {
            return Output::default();
        };
        let Some(pending) = entry.pending.take().filter(|p| p.token == token) else {
            return Output::default();
        };
        let never_written = entry.meta.producer_epoch < 0;
        match result {
            Ok(()) => {
                let next = pending.next;
                let answer = Ok((next.producer_id, next.producer_epoch));
                let job = self.marker_job(&next);
                let mut output = Output::default();
                match pending.then {
                    Then::Respond(request) => output.responses.push((request, answer)),
                    Then::RespondAndMark(request) => {
                        if job.is_some() {
                            // Answered when complete (or at the deadline): see END_TXN_WAIT_MS.
                            if let Some(entry) = self.txns.get_mut(&id) {
                                entry.end_waiter = Some((request, now_ms + END_TXN_WAIT_MS));
                            }
                        } else {
                            output.responses.push((request, answer));
                        }
                        output.markers.extend(job);
                    }
                    Then::Mark => output.markers.extend(job),
                    Then::Nothing => {
                        let waiter = self.txns.get_mut(&id).and_then(|e| e.end_waiter.take());
                        if let Some((request, _)) = waiter {
                            output.responses.push((request, answer));
                        }
                    }
                    Then::Remove => {
                        self.txns.remove(&id);
                        return output;
                    }
                }
                if let Some(entry) = self.txns.get_mut(&id) {
                    entry.meta = next;
                }
                output
            }
            Err(error) => {
                let code = match error {
                    AppendError::NotLeader => TxnError::NotCoordinator,
                    AppendError::Failed => TxnError::CoordinatorNotAvailable,
                };
                if never_written {
                    // A new id whose first write failed: forget it.
                    self.txns.remove(&id);
                }
                match pending.then {
                    Then::Respond(request) | Then::RespondAndMark(request) => {
                        Output::answer(request, Err(code))
                    }
                    // A completion or abort the coordinator started itself: written again
                    // while it still leads (the next tick retries aborts and expirations).
                    Then::Nothing if error == AppendError::Failed => {
                        self.write(now_ms, pending.next, Then::Nothing)
                    }
                    Then::Mark | Then::Nothing | Then::Remove => Output::default(),
                }
            }
        }
    }

    /// The marker job for a transaction being decided, if this coordinator serves it.
    fn marker_job(&self, meta: &TxnMetadata) -> Option<MarkerJob> {
        if !meta.state.is_preparing() {
            return None;
        }
        let (_, coordinator_epoch) = self.partitions.get(&meta.partition)?;
        Some(MarkerJob {
            transactional_id: meta.transactional_id.clone(),
            producer_id: meta.producer_id,
            producer_epoch: meta.producer_epoch,
            commit: meta.state == TxnState::PrepareCommit,
            coordinator_epoch: *coordinator_epoch,
            partitions: meta.partitions.iter().cloned().collect(),
        })
    }

    /// The runtime's report that every marker of a job is written: the transaction completes.
    /// A report for a transaction that moved on (another epoch, already complete) is ignored.
    pub fn markers_written(
        &mut self,
        now_ms: i64,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Output {
        let Some(entry) = self.txns.get(transactional_id) else {
            return Output::default();
        };
        let meta = &entry.meta;
        if entry.pending.is_some()
            || !meta.state.is_preparing()
            || meta.producer_id != producer_id
            || meta.producer_epoch != epoch
            || self.check_serving(transactional_id).is_err()
        {
            return Output::default();
        }
        let mut next = meta.clone();
        next.state = if meta.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        next.partitions.clear();
        next.last_update_ms = now_ms;
        self.write(now_ms, next, Then::Nothing)
    }

    /// Starts hosting a partition: its ids answer COORDINATOR_LOAD_IN_PROGRESS until
    /// [`TxnCoordinator::finish_loading`]. `coordinator_epoch` is the partition's leader epoch.
    pub fn begin_loading(&mut self, partition: i32, coordinator_epoch: i32) -> Output {
        let output = self.unload(partition);
        self.partitions
            .insert(partition, (Status::Loading, coordinator_epoch));
        output
    }

    /// Replays one record of a loading partition (a tombstone removes the id).
    pub fn replay(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), TxnRecordError> {
        let id = decode_key(key)?;
        match value {
            None => {
                self.txns.remove(&id);
            }
            Some(value) => {
                let meta = TxnMetadata::from_value(&id, partition, decode_value(value)?);
                self.txns.insert(
                    id,
                    Entry {
                        meta,
                        pending: None,
                        end_waiter: None,
                    },
                );
            }
        }
        Ok(())
    }

    /// Finishes loading a partition: its ids are served, and transactions caught between
    /// their decision and completion get their markers again.
    pub fn finish_loading(&mut self, partition: i32, now_ms: i64) -> Output {
        let Some(status) = self.partitions.get_mut(&partition) else {
            return Output::default();
        };
        status.0 = Status::Active;
        self.next_abort_check_ms = self.next_abort_check_ms.min(now_ms);
        self.next_expire_check_ms = self
            .next_expire_check_ms
            .min(now_ms.saturating_add(self.config.expire_check_interval_ms));
        let mut output = Output::default();
        let deciding: Vec<TxnMetadata> = self
            .txns
            .values()
            .filter(|e| e.meta.partition == partition && e.meta.state.is_preparing())
            .map(|e| e.meta.clone())
            .collect();
        for meta in deciding {
            output.markers.extend(self.marker_job(&meta));
        }
        output
    }

    /// Stops hosting a partition: its ids are forgotten and their waiting requests answered
    /// NOT_COORDINATOR.
    pub fn unload(&mut self, partition: i32) -> Output {
        self.partitions.remove(&partition);
        let mut output = Output::default();
        let ids: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, e)| e.meta.partition == partition)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(entry) = self.txns.remove(&id) {
                if let Some((request, _)) = entry.end_waiter {
                    // The decision is durable; the client asks the new coordinator again.
                    output
                        .responses
                        .push((request, Err(TxnError::NotCoordinator)));
                }
                if let Some(pending) = entry.pending {
                    self.in_flight.remove(&pending.token);
                    if let Then::Respond(request) | Then::RespondAndMark(request) = pending.then {
                        output
                            .responses
                            .push((request, Err(TxnError::NotCoordinator)));
                    }
                }
            }
        }
        output
    }

    /// The earliest time [`TxnCoordinator::tick`] has work to do.
    pub fn next_deadline(&self) -> Option<i64> {
        let waiting = self
            .txns
            .values()
            .filter_map(|e| e.end_waiter.map(|(_, at)| at))
            .min();
        let checks = self
            .partitions
            .values()
            .any(|(status, _)| *status == Status::Active)
            .then(|| self.next_abort_check_ms.min(self.next_expire_check_ms));
        [waiting, checks].into_iter().flatten().min()
    }

    /// The metadata of served ids with no write in flight that `keep` selects.
    fn served_where(&self, keep: impl Fn(&TxnMetadata) -> bool) -> Vec<TxnMetadata> {
        self.txns
            .values()
            .filter(|e| {
                e.pending.is_none()
                    && self.partitions.get(&e.meta.partition).map(|(s, _)| *s)
                        == Some(Status::Active)
                    && keep(&e.meta)
            })
            .map(|e| e.meta.clone())
            .collect()
    }

    /// Aborts transactions open past their timeout (at a bumped epoch, fencing the producer)
    /// and removes ids idle past `transactional.id.expiration.ms`.
    pub fn tick(&mut self, now_ms: i64) -> Output {
        let mut output = Output::default();
        for entry in self.txns.values_mut() {
            if entry.end_waiter.is_some_and(|(_, at)| now_ms >= at) {
                if let Some((request, _)) = entry.end_waiter.take() {
                    let meta = &entry.meta;
                    output
                        .responses
                        .push((request, Ok((meta.producer_id, meta.producer_epoch))));
                }
            }
        }
        if now_ms >= self.next_abort_check_ms {
            self.next_abort_check_ms = now_ms + self.config.abort_check_interval_ms;
            let timed_out = self.served_where(|meta| {
                meta.state == TxnState::Ongoing
                    && now_ms >= meta.start_ms + i64::from(meta.timeout_ms)
            });
            for meta in timed_out {
                tracing::info!(
                    transactional_id = %meta.transactional_id,
                    producer_id = meta.producer_id,
                    timeout_ms = meta.timeout_ms,
                    "aborting a transaction open past its timeout"
                );
                let step = self.fence_and_abort(now_ms, &meta);
                output.appends.extend(step.appends);
            }
        }
        if now_ms >= self.next_expire_check_ms {
            self.next_expire_check_ms = now_ms + self.config.expire_check_interval_ms;
            let expiration_ms = self.config.id_expiration_ms;
            let expired = self.served_where(|meta| {
                meta.state.may_become(TxnState::Dead)
                    && now_ms >= meta.last_update_ms + expiration_ms
            });
            for meta in expired {
                let mut next = meta;
                next.state = TxnState::Dead;
                next.last_update_ms = now_ms;
                let step = self.write(now_ms, next, Then::Remove);
                output.appends.extend(step.appends);
            }
        }
        output
    }
}
