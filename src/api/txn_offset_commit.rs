//! TxnOffsetCommit (key 28), v0–v5: a transactional producer commits a consumer group's
//! offsets inside its transaction (`send_offsets_to_transaction`, after AddOffsetsToTxn).
//!
//! Sent to the group's coordinator. The offsets are written to the group's
//! `__consumer_offsets` partition as a transactional batch of the producer and stay pending
//! until the transaction's marker reaches that partition: COMMIT makes them the group's
//! committed offsets, ABORT drops them ([`crate::group::GroupCoordinator::txn_offset_commit`]).
//! Until then OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT for them. A stale
//! producer epoch is INVALID_PRODUCER_EPOCH (PRODUCER_FENCED does not exist for this API
//! before v3, and Kafka answers INVALID_PRODUCER_EPOCH here). From v3 the member id, generation
//! and group instance id are checked as for OffsetCommit (KIP-447) when given. Unknown
//! partitions are UNKNOWN_TOPIC_OR_PARTITION.
//!
//! Before the producer's first offsets of a transaction go to the group's partition, the
//! transaction coordinator is asked whether that partition (added by AddOffsetsToTxn) is in the
//! transaction (KIP-890, as for Produce): a commit arriving after its transaction ended gets
//! INVALID_TXN_STATE instead of leaving offsets pending that no marker would ever settle.

use super::offset_commit::{by_topic, known_partitions};
use super::txn_verification::{self, Question, Verifier};
use super::{Reply, RequestContext};
use crate::coordinator::OFFSETS_TOPIC;
use crate::group::{self, GroupError, OffsetCommitPartition, Response};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ResponseKind, TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// TxnOffsetCommit.
pub async fn handle(ctx: RequestContext, req: TxnOffsetCommitRequest) -> Reply {
    let version = ctx.version;
    let image = ctx.broker.controller.image();
    let asked = req.topics.into_iter().flat_map(|topic| {
        let name = topic.name.to_string();
        topic
            .partitions
            .into_iter()
            .map(move |p| OffsetCommitPartition {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 2 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.map(|s| s.to_string()),
            })
    });
    let (order, partitions) = known_partitions(&image, asked);
    let (generation_id, member_id, group_instance_id) = if version >= 3 {
        (
            req.generation_id,
            req.member_id.to_string(),
            req.group_instance_id.map(|s| s.to_string()),
        )
    } else {
        (-1, String::new(), None)
    };
    let request = group::OffsetCommitRequest {
        group_id: req.group_id.to_string(),
        generation_id,
        member_id,
        group_instance_id,
        retention_time_ms: None,
        partitions,
    };
    let producer = (req.producer_id.0, req.producer_epoch);
    let verified = if !request.partitions.is_empty()
        && ctx.broker.config.transaction_partition_verification()
    {
        verify(
            &ctx,
            req.transactional_id.as_str(),
            producer,
            &request.group_id,
        )
        .await
    } else {
        Ok(None)
    };
    let receiver = match verified {
        Ok(guard) => Ok((!request.partitions.is_empty()).then(|| {
            ctx.broker.groups.submit(move |coordinator, now, token| {
                coordinator.txn_offset_commit(now, token, producer, guard, request)
            })
        })),
        Err(error) => Err(error),
    };
    Reply::Deferred(Box::pin(async move {
        let results = match receiver {
            Ok(Some(receiver)) => match receiver.await {
                Ok(Response::TxnOffsetCommit(response)) => Ok(response),
                _ => Err(GroupError::NotCoordinator),
            },
            Ok(None) => Ok(group::OffsetCommitResponse {
                partitions: Vec::new(),
            }),
            Err(error) => Err(error),
        };
        let topics = by_topic(order, results)
            .into_iter()
            .map(|(topic, partitions)| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, code)| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        Some(ResponseKind::TxnOffsetCommit(
            TxnOffsetCommitResponse::default().with_topics(topics),
        ))
    }))
}

/// KIP-890 for the group's `__consumer_offsets` partition, as Produce does for data partitions
/// (see [`super::txn_verification`]): the guard to write with (`None`: the producer's
/// transaction is open on the partition already, or this broker does not lead it and the
/// coordinator step answers NOT_COORDINATOR), or why not. Kafka's conversions for offset
/// commits: the transaction coordinator's transient errors are COORDINATOR_NOT_AVAILABLE.
async fn verify(
    ctx: &RequestContext,
    transactional_id: &str,
    (producer_id, epoch): (i64, i16),
    group_id: &str,
) -> Result<Option<u64>, GroupError> {
    let index = ctx.broker.groups.partition_for(group_id);
    let Ok(partition) = ctx.broker.replicas.leader_partition(OFFSETS_TOPIC, index) else {
        return Ok(None);
    };
    let Some(guard) = partition.log().begin_txn_verification(producer_id, epoch) else {
        return Ok(None);
    };
    let image = ctx.broker.controller.image();
    let verifier = Verifier {
        txns: &ctx.broker.txns,
        peers: &ctx.broker.peers,
        image: &image,
        me: ctx.broker.replicas.node_id(),
        timeout: std::time::Duration::from_millis(ctx.broker.config.request_timeout_ms()),
    };
    let question = Question {
        transactional_id,
        producer_id,
        epoch,
        partitions: vec![(OFFSETS_TOPIC.to_string(), index)],
    };
    let code = txn_verification::verify(&verifier, &question)
        .await
        .first()
        .copied()
        .unwrap_or(ResponseError::CoordinatorNotAvailable.code());
    match code {
        0 => Ok(Some(guard)),
        code if code == ResponseError::InvalidTxnState.code() => Err(GroupError::InvalidTxnState),
        code if code == ResponseError::InvalidProducerIdMapping.code() => {
            Err(GroupError::InvalidProducerIdMapping)
        }
        code if code == ResponseError::ProducerFenced.code() => {
            Err(GroupError::InvalidProducerEpoch)
        }
        _ => Err(GroupError::CoordinatorNotAvailable),
    }
}
