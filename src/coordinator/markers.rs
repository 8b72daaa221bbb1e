//! The transaction marker channel (Kafka's `TransactionMarkerChannelManager`): has every
//! partition of a decided transaction write its COMMIT or ABORT marker.
//!
//! [`MarkerWriter::write_all`] runs one [`MarkerJob`] to its end: each round groups the
//! partitions still missing their marker by their leader in the current metadata, writes the
//! ones this broker leads directly (and waits for their ISR), and sends one WriteTxnMarkers to
//! each other leader over its internal listener (a [`Principal::Broker`] connection, the only
//! kind allowed to write markers). What the leader confirms is done; a partition whose topic
//! is gone is done too (Kafka drops it); a marker the partition refuses as stale
//! (INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED: a newer coordinator or producer
//! epoch exists) ends the job unfinished; everything else (no leader, not the leader, a
//! timeout, a broken connection) is retried after [`RETRY_BACKOFF`] while the coordinator
//! still wants it. Connections to other brokers come from the broker's [`PeerPool`].
//!
//! [`Principal::Broker`]: crate::server::Principal::Broker

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::watch;

use crate::cluster::MetadataImage;
use crate::log::producer_state::{Marker, SequenceError};
use crate::log::LogError;
use crate::replica::manager::now_ms;
use crate::replica::{ReplicaError, ReplicaManager};
use crate::server::peer_client::{PeerPool, PeerRequest};
use crate::txn::MarkerJob;

use super::GroupService;

/// The pause before a round retries the partitions left.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// What became of one partition's marker in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Written and replicated (or the partition is gone).
    Done,
    /// Refused as stale: the job cannot finish.
    Fatal,
    /// Try again next round.
    Retry,
}

/// Writes transaction markers. Cheap to clone.
#[derive(Clone)]
pub struct MarkerWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MarkerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarkerWriter").finish_non_exhaustive()
    }
}

struct Inner {
    replicas: Arc<ReplicaManager>,
    groups: GroupService,
    images: watch::Receiver<Arc<MetadataImage>>,
    peers: Arc<PeerPool>,
    /// `request.timeout.ms`: one round's bound.
    timeout: Duration,
}

impl MarkerWriter {
    /// A writer for this broker.
    pub fn new(
        replicas: Arc<ReplicaManager>,
        groups: GroupService,
        images: watch::Receiver<Arc<MetadataImage>>,
        peers: Arc<PeerPool>,
        timeout: Duration,
    ) -> MarkerWriter {
        MarkerWriter {
            inner: Arc::new(Inner {
                replicas,
                groups,
                images,
                peers,
                timeout,
            }),
        }
    }

    /// Writes every marker of `job`, round after round, while `wanted()` holds; returns
    /// whether every partition has its marker.
    pub async fn write_all(&self, job: &MarkerJob, wanted: impl Fn() -> bool) -> bool {
        let marker = Marker {
            producer_id: job.producer_id,
            epoch: job.producer_epoch,
            coordinator_epoch: job.coordinator_epoch,
            commit: job.commit,
        };
        let mut left: Vec<(String, i32)> = job.partitions.clone();
        let mut rounds = 0u32;
        while !left.is_empty() {
            if !wanted() {
                return false;
            }
            if rounds > 0 {
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
            rounds += 1;
            let image = self.inner.images.borrow().clone();
            let me = self.inner.replicas.node_id();
            let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            let mut next = Vec::new();
            for (topic, index) in left {
                match image.partition(&topic, index) {
                    Some(info) if info.leader >= 0 => {
                        by_leader
                            .entry(info.leader)
                            .or_default()
                            .push((topic, index));
                    }
                    Some(_) => next.push((topic, index)),
                    // The topic (or partition) is gone: nothing to mark.
                    None => {}
                }
            }
            let mut rounds_out = Vec::new();
            for (leader, partitions) in by_leader {
                let outcomes = if leader == me {
                    self.write_local(&marker, &partitions).await
                } else {
                    self.write_remote(&image, leader, &marker, &partitions)
                        .await
                };
                rounds_out.extend(partitions.into_iter().zip(outcomes));
            }
            for ((topic, index), outcome) in rounds_out {
                match outcome {
                    Outcome::Done => {}
                    Outcome::Retry => next.push((topic, index)),
                    Outcome::Fatal => {
                        tracing::warn!(
                            transactional_id = %job.transactional_id,
                            topic,
                            partition = index,
                            "transaction marker refused as stale; a newer coordinator or \
                             producer epoch owns the transaction"
                        );
                        return false;
                    }
                }
            }
            if !next.is_empty() && rounds % 50 == 0 {
                tracing::warn!(transactional_id = %job.transactional_id, partitions = next.len(), rounds, "transaction markers still not written");
            }
            left = next;
        }
        tracing::debug!(transactional_id = %job.transactional_id, commit = job.commit, rounds, "transaction markers written");
        true
    }

    /// Writes markers on partitions this broker leads and waits for their ISR.
    async fn write_local(&self, marker: &Marker, partitions: &[(String, i32)]) -> Vec<Outcome> {
        let now = now_ms();
        let mut waits = Vec::with_capacity(partitions.len());
        for (topic, index) in partitions {
            let written = super::write_marker(
                &self.inner.replicas,
                &self.inner.groups,
                topic,
                *index,
                marker,
                now,
            );
            waits.push(written);
        }
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let mut outcomes = Vec::with_capacity(waits.len());
        for written in waits {
            let outcome = match written {
                Ok((partition, info)) => {
                    let waited = tokio::time::timeout_at(
                        deadline,
                        partition.wait_replicated(info.last_offset + 1, info.leader_epoch),
                    )
                    .await;
                    match waited {
                        Ok(Ok(())) if partition.check_min_isr().is_ok() => Outcome::Done,
                        _ => Outcome::Retry,
                    }
                }
                Err(ReplicaError::Log(LogError::Sequence(
                    SequenceError::StaleEpoch { .. } | SequenceError::CoordinatorFenced { .. },
                ))) => Outcome::Fatal,
                Err(error) => {
                    tracing::debug!(%error, "local transaction marker not written; retrying");
                    Outcome::Retry
                }
            };
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Sends one WriteTxnMarkers to `leader` for `partitions`.
    async fn write_remote(
        &self,
        image: &MetadataImage,
        leader: i32,
        marker: &Marker,
        partitions: &[(String, i32)],
    ) -> Vec<Outcome> {
        let retry_all = vec![Outcome::Retry; partitions.len()];
        let Some(addr) = image
            .registrations
            .get(&leader)
            .map(|r| r.internal_addr.clone())
        else {
            return retry_all;
        };
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, index) in partitions {
            topics.entry(topic.as_str()).or_default().push(*index);
        }
        let request =
            WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(marker.producer_id))
                .with_producer_epoch(marker.epoch)
                .with_transaction_result(marker.commit)
                .with_coordinator_epoch(marker.coordinator_epoch)
                .with_topics(
                    topics
                        .iter()
                        .map(|(topic, indexes)| {
                            WritableTxnMarkerTopic::default()
                                .with_name(TopicName(StrBytes::from_string((*topic).to_string())))
                                .with_partition_indexes(indexes.clone())
                        })
                        .collect(),
                )]);
        // The leader answers within its own `request.timeout.ms`; a little more here.
        let bound = self.inner.timeout + Duration::from_secs(5);
        let sent = self
            .inner
            .peers
            .send::<_, WriteTxnMarkersResponse>(
                leader,
                &addr,
                PeerRequest {
                    api_key: ApiKey::WriteTxnMarkers,
                    version: 1,
                    client_id: "gregor-txn-markers",
                },
                &request,
                bound,
            )
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(leader, %error, "WriteTxnMarkers failed; retrying");
                return retry_all;
            }
        };
        let mut codes: HashMap<(&str, i32), i16> = HashMap::new();
        for result in &response.markers {
            for topic in &result.topics {
                for p in &topic.partitions {
                    codes.insert((topic.name.as_str(), p.partition_index), p.error_code);
                }
            }
        }
        partitions
            .iter()
            .map(|(topic, index)| {
                let code = codes.get(&(topic.as_str(), *index)).copied();
                match code {
                    Some(0) => Outcome::Done,
                    Some(code)
                        if code == ResponseError::InvalidProducerEpoch.code()
                            || code == ResponseError::TransactionCoordinatorFenced.code() =>
                    {
                        Outcome::Fatal
                    }
                    _ => Outcome::Retry,
                }
            })
            .collect()
    }
}
