//! OffsetCommit (key 8), v2–v9: a consumer commits offsets for a group.
//!
//! Partitions of topics that do not exist get `UNKNOWN_TOPIC_OR_PARTITION` (as in Kafka) and
//! never reach the coordinator; the rest are validated by the coordinator (generation and
//! member, or a standalone commit with generation -1 and no member id), appended to
//! `__consumer_offsets`, and acknowledged once the append is committed, in phase two. v2–v4
//! carry `retention_time_ms` (-1 for the broker default); v6+ a leader epoch per partition;
//! v7+ `group.instance.id`.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::errors::group_code;
use super::{Reply, RequestContext};
use crate::group::{self, GroupError, OffsetCommitPartition, Response};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 9 };

/// OffsetCommit.
pub fn handle(ctx: RequestContext, req: OffsetCommitRequest) -> Reply {
    let version = ctx.version;
    let image = ctx.broker.controller.image();
    // Every partition in request order, with its error if it is refused before the
    // coordinator sees it.
    let mut order: Vec<(String, i32, Option<i16>)> = Vec::new();
    let mut partitions = Vec::new();
    for topic in req.topics {
        let name = topic.name.to_string();
        for p in topic.partitions {
            if image.partition(&name, p.partition_index).is_none() {
                order.push((
                    name.clone(),
                    p.partition_index,
                    Some(ResponseError::UnknownTopicOrPartition.code()),
                ));
                continue;
            }
            order.push((name.clone(), p.partition_index, None));
            partitions.push(OffsetCommitPartition {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.map(|s| s.to_string()),
            });
        }
    }
    let request = group::OffsetCommitRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        retention_time_ms: (version <= 4 && req.retention_time_ms != -1)
            .then_some(req.retention_time_ms),
        partitions,
    };
    let receiver =
        if request.partitions.is_empty() {
            None
        } else {
            Some(ctx.broker.groups.submit(move |coordinator, now, token| {
                coordinator.offset_commit(now, token, request)
            }))
        };
    Reply::Deferred(Box::pin(async move {
        let mut results = std::collections::HashMap::new();
        let mut fallback = None;
        if let Some(receiver) = receiver {
            match receiver.await {
                Ok(Response::OffsetCommit(response)) => {
                    for r in response.partitions {
                        results.insert((r.topic, r.partition), group_code(r.error));
                    }
                }
                _ => fallback = Some(GroupError::NotCoordinator),
            }
        }
        let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
        for (topic, partition, refused) in order {
            let code = refused.unwrap_or_else(|| match fallback {
                Some(error) => group_code(Some(error)),
                None => results
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or(ResponseError::UnknownServerError.code()),
            });
            let entry = OffsetCommitResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(code);
            match topics.last_mut() {
                Some(last) if last.name.as_str() == topic => last.partitions.push(entry),
                _ => topics.push(
                    OffsetCommitResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        Some(ResponseKind::OffsetCommit(
            OffsetCommitResponse::default().with_topics(topics),
        ))
    }))
}
