//! WriteTxnMarkers (key 27), v1: a transaction coordinator has the leaders of a transaction's
//! partitions write its COMMIT or ABORT marker.
//!
//! - Only the cluster's brokers may call it (Kafka requires CLUSTER_ACTION): any other
//!   connection gets CLUSTER_AUTHORIZATION_FAILED for every partition.
//! - Per partition: the leader appends one control batch at its log end
//!   ([`crate::replica::Partition::append_marker_as_leader`]), which closes the producer's
//!   open transaction there (an aborted one enters the aborted-transaction index) and lets the
//!   last stable offset move once the high watermark passes the marker. A marker at an older
//!   producer epoch is INVALID_PRODUCER_EPOCH; one from an older coordinator epoch,
//!   TRANSACTION_COORDINATOR_FENCED; a broker not leading the partition answers
//!   NOT_LEADER_OR_FOLLOWER and an unknown one UNKNOWN_TOPIC_OR_PARTITION (the coordinator
//!   retries on the new leader).
//! - The answer waits until every written marker is replicated to the ISR (acks=all, as Kafka
//!   writes markers), at most `request.timeout.ms` (then REQUEST_TIMED_OUT); a partition
//!   whose ISR fell below `min.insync.replicas` meanwhile gets NOT_ENOUGH_REPLICAS_AFTER_APPEND.
//!   A marker is written again when the coordinator retries: a second marker for a transaction
//!   already closed changes nothing but the log.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ResponseKind, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

use super::errors::replica_error_code;
use super::{Reply, RequestContext};
use crate::log::producer_state::Marker;
use crate::replica::manager::now_ms;
use crate::replica::Partition;
use crate::server::Principal;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

/// A marker written and waiting for the ISR: where its error code goes.
struct Written {
    partition: Arc<Partition>,
    end: i64,
    leader_epoch: i32,
    marker: usize,
    topic: usize,
    index: usize,
}

/// Phase one writes every marker; phase two waits for them to be replicated.
pub fn handle(ctx: RequestContext, req: WriteTxnMarkersRequest) -> Reply {
    let authorized = ctx.principal == Principal::Broker;
    if !authorized {
        tracing::warn!(peer = %ctx.peer, "WriteTxnMarkers from a client; refused");
    }
    let now = now_ms();
    let mut written = Vec::new();
    let mut markers = Vec::with_capacity(req.markers.len());
    for (m, request) in req.markers.iter().enumerate() {
        let marker = Marker {
            producer_id: request.producer_id.0,
            epoch: request.producer_epoch,
            coordinator_epoch: request.coordinator_epoch,
            commit: request.transaction_result,
        };
        let mut topics = Vec::with_capacity(request.topics.len());
        for (t, topic) in request.topics.iter().enumerate() {
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for (i, &index) in topic.partition_indexes.iter().enumerate() {
                let code = if authorized {
                    write_one(&ctx, topic.name.as_str(), index, &marker, now).map_or_else(
                        |code| code,
                        |(partition, end, leader_epoch)| {
                            written.push(Written {
                                partition,
                                end,
                                leader_epoch,
                                marker: m,
                                topic: t,
                                index: i,
                            });
                            0
                        },
                    )
                } else {
                    ResponseError::ClusterAuthorizationFailed.code()
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(request.producer_id)
                .with_topics(topics),
        );
    }
    let mut response = WriteTxnMarkersResponse::default().with_markers(markers);
    if written.is_empty() {
        return Reply::Ready(ResponseKind::WriteTxnMarkers(response));
    }
    let timeout = Duration::from_millis(ctx.broker.config.request_timeout_ms());
    Reply::Deferred(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        for w in written {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waited =
                tokio::time::timeout(left, w.partition.wait_replicated(w.end, w.leader_epoch))
                    .await;
            let code = match waited {
                Ok(Ok(())) if w.partition.check_min_isr().is_err() => {
                    ResponseError::NotEnoughReplicasAfterAppend.code()
                }
                Ok(Ok(())) => 0,
                Ok(Err(e)) => replica_error_code(&e),
                Err(_) => ResponseError::RequestTimedOut.code(),
            };
            if let Some(result) = response
                .markers
                .get_mut(w.marker)
                .and_then(|m| m.topics.get_mut(w.topic))
                .and_then(|t| t.partitions.get_mut(w.index))
            {
                result.error_code = code;
            }
        }
        Some(ResponseKind::WriteTxnMarkers(response))
    }))
}

/// Writes one marker; returns the partition, the offset the ISR must reach and the leader
/// epoch it was written at, or the error code.
fn write_one(
    ctx: &RequestContext,
    topic: &str,
    index: i32,
    marker: &Marker,
    now: i64,
) -> Result<(Arc<Partition>, i64, i32), i16> {
    match crate::coordinator::write_marker(
        &ctx.broker.replicas,
        &ctx.broker.groups,
        topic,
        index,
        marker,
        now,
    ) {
        Ok((partition, info)) => Ok((partition, info.last_offset + 1, info.leader_epoch)),
        Err(e) => {
            tracing::debug!(topic, partition = index, error = %e, "transaction marker refused");
            Err(replica_error_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, BrokerId, FetchRequest, ListOffsetsRequest, ProducerId, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::api::test_support::{broker_with, create_topic, ctx};
    use crate::log::batch::testing::producer_batch;

    fn markers(
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: Vec<i32>,
    ) -> WriteTxnMarkersRequest {
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_transaction_result(commit)
            .with_coordinator_epoch(0)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_indexes(partitions)])])
    }

    async fn write(ctx: RequestContext, req: WriteTxnMarkersRequest) -> Vec<i16> {
        let response = match handle(ctx, req) {
            Reply::Ready(ResponseKind::WriteTxnMarkers(r)) => r,
            Reply::Deferred(pending) => match pending.await {
                Some(ResponseKind::WriteTxnMarkers(r)) => r,
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("unexpected {other:?}"),
        };
        response.markers[0].topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect()
    }

    /// (high watermark, last stable offset, aborted (producer, first offset), bytes).
    fn fetch(ctx: RequestContext, isolation_level: i8) -> (i64, i64, Vec<(i64, i64)>, usize) {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_bytes(1 << 20)
            .with_isolation_level(isolation_level)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let Reply::ReadyFiles(ResponseKind::Fetch(response), _) =
            crate::api::fetch::handle(ctx, req)
        else {
            panic!("expected a ready fetch");
        };
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let aborted = p
            .aborted_transactions
            .as_ref()
            .map(|list| {
                list.iter()
                    .map(|a| (a.producer_id.0, a.first_offset))
                    .collect()
            })
            .unwrap_or_default();
        (
            p.high_watermark,
            p.last_stable_offset,
            aborted,
            p.records.as_ref().map_or(0, |r| r.len()),
        )
    }

    fn latest(ctx: RequestContext, isolation_level: i8) -> i64 {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation_level)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        crate::api::list_offsets::handle(&ctx, req).topics[0].partitions[0].offset
    }

    #[tokio::test]
    async fn markers_close_transactions_and_read_committed_stops_at_the_last_stable_offset() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        create_topic(&b, "t", 1, &[]).await;
        let partition = b.replicas.leader_partition("t", 0).unwrap();
        let as_broker = || {
            let mut c = ctx(&b, ApiKey::WriteTxnMarkers, 1);
            c.principal = Principal::Broker;
            c
        };
        // Producer 10 writes 0..2 and 4..5, producer 11 writes 2..4; both open.
        partition
            .append_as_leader(producer_batch(10, 0, 0, 2, 1, true), 1)
            .unwrap();
        partition
            .append_as_leader(producer_batch(11, 0, 0, 2, 1, true), 1)
            .unwrap();
        partition
            .append_as_leader(producer_batch(10, 0, 2, 1, 1, true), 1)
            .unwrap();
        assert_eq!(fetch(ctx(&b, ApiKey::Fetch, 12), 1), (5, 0, vec![], 0));
        assert_eq!(fetch(ctx(&b, ApiKey::Fetch, 12), 0).0, 5);
        assert_eq!(latest(ctx(&b, ApiKey::ListOffsets, 7), 1), 0);
        assert_eq!(latest(ctx(&b, ApiKey::ListOffsets, 7), 0), 5);

        // A client may not write markers.
        assert_eq!(
            write(
                ctx(&b, ApiKey::WriteTxnMarkers, 1),
                markers(10, 0, false, vec![0])
            )
            .await,
            vec![ResponseError::ClusterAuthorizationFailed.code()]
        );
        // Producer 10 aborts (marker at 5): producer 11 still holds the LSO at 2.
        assert_eq!(
            write(as_broker(), markers(10, 0, false, vec![0, 7])).await,
            vec![0, ResponseError::UnknownTopicOrPartition.code()]
        );
        let (hw, lso, aborted, bytes) = fetch(ctx(&b, ApiKey::Fetch, 12), 1);
        assert_eq!((hw, lso, aborted), (6, 2, vec![(10, 0)]));
        assert!(
            bytes > 0,
            "the aborted batch below the LSO is returned, with the list"
        );
        // Producer 11 commits (marker at 6): everything is stable.
        assert_eq!(
            write(as_broker(), markers(11, 0, true, vec![0])).await,
            vec![0]
        );
        let (hw, lso, aborted, _) = fetch(ctx(&b, ApiKey::Fetch, 12), 1);
        assert_eq!((hw, lso, aborted), (7, 7, vec![(10, 0)]));
        assert_eq!(latest(ctx(&b, ApiKey::ListOffsets, 7), 1), 7);
        // read_uncommitted gets no list.
        assert_eq!(fetch(ctx(&b, ApiKey::Fetch, 12), 0).2, vec![]);
        // A marker from an older producer epoch than the partition has seen is refused.
        partition
            .append_as_leader(producer_batch(10, 1, 0, 1, 1, true), 1)
            .unwrap();
        assert_eq!(
            write(as_broker(), markers(10, 0, true, vec![0])).await,
            vec![ResponseError::InvalidProducerEpoch.code()]
        );
    }
}
