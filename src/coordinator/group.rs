//! [`GroupService`]: the group coordinator's runtime, a [`Runtime`] driving
//! [`GroupCoordinator`] over the `__consumer_offsets` partitions this broker leads.
//!
//! What is particular to groups is here ([`Groups`]): appends are batches of offset commits and
//! group metadata, a transactional offset commit is written as its producer's transactional
//! batch (behind the KIP-890 verification guard its handler took), the wait for an append is
//! bounded by `offsets.commit.timeout.ms`, and a replay sees transactional commits (pending
//! until their marker) and markers beside plain records. Requests, appends, timers and
//! loading are [`Runtime`]'s.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::runtime::{Driver, Effects, Machine, Runtime};
use super::{encode_records, BatchProducer, CommitError, ReplayItem};

use crate::config::BrokerConfig;
use crate::group::{Append, AppendError, AppendToken, GroupCoordinator, Output, Response};
use crate::log::producer_state::{SequenceError, TxnVerification};
use crate::log::{AppendInfo, LogError};
use crate::replica::manager::now_ms;
use crate::replica::{Partition, ReplicaError, ReplicaManager};

pub use crate::cluster::metadata::OFFSETS_TOPIC;

/// The group coordinator's runtime. Cheap to clone.
pub type GroupService = Runtime<Groups>;

/// What the group coordinator's I/O does its own way (see the module doc).
#[derive(Debug)]
pub struct Groups {
    config: Arc<BrokerConfig>,
}

impl GroupService {
    /// A service that serves no partition yet.
    pub fn new(config: Arc<BrokerConfig>, replicas: Arc<ReplicaManager>) -> GroupService {
        let coordinator = GroupCoordinator::new(config.group_config());
        Runtime::create(Groups { config }, replicas, coordinator)
    }

    /// The `__consumer_offsets` partition of a group.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        crate::group::partition_for(
            group_id,
            self.driver().config.offsets_topic_num_partitions(),
        )
    }

    /// A transaction's marker was written on `__consumer_offsets` partition `partition` here:
    /// the producer's pending transactional offsets there are committed or dropped.
    pub fn complete_txn(&self, partition: i32, producer_id: i64, commit: bool) {
        self.run_if_hosted(partition, |coordinator, _| {
            coordinator.complete_txn(partition, producer_id, commit);
            Output::default()
        });
    }
}

impl Machine for GroupCoordinator {
    type Response = Response;
    type Output = Output;
    type Append = Append;
    type AppendToken = AppendToken;
    type AppendError = AppendError;
    type Job = std::convert::Infallible;

    fn effects(output: Output) -> Effects<Self> {
        Effects {
            responses: output.responses,
            appends: output.appends,
            jobs: Vec::new(),
        }
    }

    fn append_target(append: &Append) -> (i32, AppendToken) {
        (append.partition, append.token)
    }

    fn next_deadline(&self) -> Option<i64> {
        GroupCoordinator::next_deadline(self)
    }

    fn tick(&mut self, now_ms: i64) -> Output {
        GroupCoordinator::tick(self, now_ms)
    }

    fn begin_loading(&mut self, partition: i32, _leader_epoch: i32) -> Output {
        GroupCoordinator::begin_loading(self, partition)
    }

    fn finish_loading(&mut self, partition: i32, now_ms: i64) -> Output {
        GroupCoordinator::finish_loading(self, partition, now_ms)
    }

    fn unload(&mut self, partition: i32) -> Output {
        GroupCoordinator::unload(self, partition)
    }

    fn complete(
        &mut self,
        now_ms: i64,
        token: AppendToken,
        result: Result<(), AppendError>,
    ) -> Output {
        GroupCoordinator::complete(self, now_ms, token, result)
    }

    fn replay(&mut self, partition: i32, item: ReplayItem) -> Result<(), String> {
        let replayed = match item {
            ReplayItem::Record {
                key,
                value,
                producer_id: None,
            } => GroupCoordinator::replay(self, partition, &key, value.as_deref()),
            // A transactional offset commit: pending until its marker.
            ReplayItem::Record {
                key,
                value,
                producer_id: Some(producer_id),
            } => self.replay_txn(partition, producer_id, &key, value.as_deref()),
            ReplayItem::Marker {
                producer_id,
                commit,
            } => {
                self.complete_txn(partition, producer_id, commit);
                Ok(())
            }
        };
        replayed.map_err(|error| error.to_string())
    }
}

impl Driver for Groups {
    type Machine = GroupCoordinator;
    const TOPIC: &'static str = OFFSETS_TOPIC;

    fn append(
        &self,
        partition: &Arc<Partition>,
        append: &Append,
    ) -> Result<AppendInfo, AppendError> {
        let batch = encode_batch(append)?;
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
        appended.map_err(|error| append_error(&error))
    }

    fn committed_now(&self, partition: &Partition, info: &AppendInfo) -> bool {
        !info.flush_needed && partition.high_watermark() > info.last_offset
    }

    fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.config.offsets_commit_timeout_ms())
    }

    fn committed(
        &self,
        _partition: &Partition,
        waited: Result<(), CommitError>,
    ) -> Result<(), AppendError> {
        waited.map_err(|error| match error {
            CommitError::Storage => AppendError::Storage,
            CommitError::NotLeader => AppendError::NotLeader,
            CommitError::Timeout => AppendError::Timeout,
        })
    }

    fn not_leader() -> AppendError {
        AppendError::NotLeader
    }

    fn failed() -> AppendError {
        AppendError::Storage
    }

    fn start_job(_runtime: &GroupService, job: std::convert::Infallible) {
        match job {}
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
