//! [`TxnService`]: the transaction coordinator's runtime, a [`Runtime`] driving
//! [`TxnCoordinator`] over the `__transaction_state` partitions this broker leads.
//!
//! What is particular to transactions is here ([`Txns`]): an append is one record (a
//! transactional id's metadata, or its tombstone) and counts as committed only with
//! `min.insync.replicas` in sync, its wait is bounded by `request.timeout.ms`, the coordinator
//! epoch a partition is loaded at is its leader epoch, and a step may ask for a transaction's
//! markers ([`MarkerJob`]). Each job runs in its own task on the [`MarkerWriter`]; when every
//! partition has its marker the coordinator is told, which writes the completion. A job stops
//! when the coordinator stops serving the transaction (it moved to another broker, which
//! re-issues the markers after its replay). Requests, appends, timers and loading are
//! [`Runtime`]'s.

use std::sync::Arc;
use std::time::Duration;

use super::markers::MarkerWriter;
use super::runtime::{Driver, Effects, Machine, RequestToken, Runtime};
use super::{encode_records, CommitError, ReplayItem};
use crate::config::BrokerConfig;
use crate::log::AppendInfo;
use crate::replica::manager::now_ms;
use crate::replica::{Partition, ReplicaManager};
use crate::txn::{
    Append, AppendError, AppendToken, MarkerJob, Output, Response, TxnCoordinator, TxnError,
    TRANSACTION_STATE_TOPIC,
};

/// The transaction coordinator's runtime. Cheap to clone.
pub type TxnService = Runtime<Txns>;

/// What the transaction coordinator's I/O does its own way (see the module doc).
#[derive(Debug)]
pub struct Txns {
    config: Arc<BrokerConfig>,
    markers: MarkerWriter,
}

impl TxnService {
    /// A service that serves no partition yet.
    pub fn new(
        config: Arc<BrokerConfig>,
        replicas: Arc<ReplicaManager>,
        markers: MarkerWriter,
    ) -> TxnService {
        let coordinator = TxnCoordinator::new(config.txn_config());
        Runtime::create(Txns { config, markers }, replicas, coordinator)
    }

    /// Runs `step` and waits for its answer; a service that stopped first is NOT_COORDINATOR.
    pub async fn call(
        &self,
        step: impl FnOnce(&mut TxnCoordinator, i64, RequestToken) -> Output,
    ) -> Response {
        self.submit(step)
            .await
            .unwrap_or(Err(TxnError::NotCoordinator))
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        self.read(|coordinator| coordinator.partition_for(transactional_id))
    }
}

impl Machine for TxnCoordinator {
    type Response = Response;
    type Output = Output;
    type Append = Append;
    type AppendToken = AppendToken;
    type AppendError = AppendError;
    type Job = MarkerJob;

    fn effects(output: Output) -> Effects<Self> {
        Effects {
            responses: output.responses,
            appends: output.appends,
            jobs: output.markers,
        }
    }

    fn append_target(append: &Append) -> (i32, AppendToken) {
        (append.partition, append.token)
    }

    fn next_deadline(&self) -> Option<i64> {
        TxnCoordinator::next_deadline(self)
    }

    fn tick(&mut self, now_ms: i64) -> Output {
        TxnCoordinator::tick(self, now_ms)
    }

    fn begin_loading(&mut self, partition: i32, leader_epoch: i32) -> Output {
        TxnCoordinator::begin_loading(self, partition, leader_epoch)
    }

    fn finish_loading(&mut self, partition: i32, now_ms: i64) -> Output {
        TxnCoordinator::finish_loading(self, partition, now_ms)
    }

    fn unload(&mut self, partition: i32) -> Output {
        TxnCoordinator::unload(self, partition)
    }

    fn complete(
        &mut self,
        now_ms: i64,
        token: AppendToken,
        result: Result<(), AppendError>,
    ) -> Output {
        TxnCoordinator::complete(self, now_ms, token, result)
    }

    fn replay(&mut self, partition: i32, item: ReplayItem) -> Result<(), String> {
        match item {
            ReplayItem::Record { key, value, .. } => {
                TxnCoordinator::replay(self, partition, &key, value.as_deref())
                    .map_err(|error| error.to_string())
            }
            // Only the coordinator writes this topic, never in transactions.
            ReplayItem::Marker { .. } => Ok(()),
        }
    }
}

impl Driver for Txns {
    type Machine = TxnCoordinator;
    const TOPIC: &'static str = TRANSACTION_STATE_TOPIC;

    fn append(
        &self,
        partition: &Arc<Partition>,
        append: &Append,
    ) -> Result<AppendInfo, AppendError> {
        let batch = encode_records(
            &[(append.key.clone(), append.value.clone())],
            append.timestamp_ms,
            None,
        )
        .map_err(|_| AppendError::Failed)?;
        partition
            .append_as_leader(batch, now_ms())
            .map_err(|error| {
                tracing::debug!(%error, "__transaction_state append failed");
                AppendError::Failed
            })
    }

    fn committed_now(&self, partition: &Partition, info: &AppendInfo) -> bool {
        !info.flush_needed
            && partition.high_watermark() > info.last_offset
            && partition.check_min_isr().is_ok()
    }

    fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms())
    }

    fn committed(
        &self,
        partition: &Partition,
        waited: Result<(), CommitError>,
    ) -> Result<(), AppendError> {
        match waited {
            Ok(()) if partition.check_min_isr().is_ok() => Ok(()),
            Err(CommitError::NotLeader) => Err(AppendError::NotLeader),
            _ => Err(AppendError::Failed),
        }
    }

    fn not_leader() -> AppendError {
        AppendError::NotLeader
    }

    fn failed() -> AppendError {
        AppendError::Failed
    }

    /// Runs a marker job in its own task; tells the coordinator when every marker is written.
    fn start_job(runtime: &TxnService, job: MarkerJob) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let runtime = runtime.clone();
        handle.spawn(async move {
            let wanted = || {
                runtime
                    .read_serving(|coordinator| {
                        coordinator
                            .metadata(&job.transactional_id)
                            .is_some_and(|m| {
                                m.state.is_preparing()
                                    && m.producer_id == job.producer_id
                                    && m.producer_epoch == job.producer_epoch
                            })
                    })
                    .unwrap_or(false)
            };
            if !runtime.driver().markers.write_all(&job, wanted).await {
                return;
            }
            runtime.run(|coordinator, now| {
                coordinator.markers_written(
                    now,
                    &job.transactional_id,
                    job.producer_id,
                    job.producer_epoch,
                )
            });
        });
    }
}
