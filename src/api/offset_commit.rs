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
use crate::cluster::MetadataImage;
use crate::group::{self, GroupError, OffsetCommitPartition, Response};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 9 };

/// OffsetCommit.
pub fn handle(ctx: RequestContext, req: OffsetCommitRequest) -> Reply {
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
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.map(|s| s.to_string()),
            })
    });
    let (order, partitions) = known_partitions(&image, asked);
    let request = group::OffsetCommitRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        retention_time_ms: (version <= 4 && req.retention_time_ms != -1)
            .then_some(req.retention_time_ms),
        partitions,
    };
    let receiver = (!request.partitions.is_empty()).then(|| {
        ctx.broker
            .groups
            .submit(move |coordinator, now, token| coordinator.offset_commit(now, token, request))
    });
    Reply::Deferred(Box::pin(async move {
        let results = match receiver {
            Some(receiver) => match receiver.await {
                Ok(Response::OffsetCommit(response)) => Ok(response),
                _ => Err(GroupError::NotCoordinator),
            },
            None => Ok(group::OffsetCommitResponse {
                partitions: Vec::new(),
            }),
        };
        let topics = by_topic(order, results)
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetCommitResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, code)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        Some(ResponseKind::OffsetCommit(
            OffsetCommitResponse::default().with_topics(topics),
        ))
    }))
}

/// A partition a commit named: topic, index, and its refusal if it never reaches the
/// coordinator.
pub(super) type Asked = (String, i32, Option<i16>);

/// A commit's partitions in request order, each with UNKNOWN_TOPIC_OR_PARTITION if the
/// partition does not exist, and the ones that do, for the coordinator (OffsetCommit and
/// TxnOffsetCommit).
pub(super) fn known_partitions(
    image: &MetadataImage,
    asked: impl Iterator<Item = OffsetCommitPartition>,
) -> (Vec<Asked>, Vec<OffsetCommitPartition>) {
    let mut order = Vec::new();
    let mut known = Vec::new();
    for p in asked {
        if image.partition(&p.topic, p.partition).is_none() {
            order.push((
                p.topic,
                p.partition,
                Some(ResponseError::UnknownTopicOrPartition.code()),
            ));
            continue;
        }
        order.push((p.topic.clone(), p.partition, None));
        known.push(p);
    }
    (order, known)
}

/// Every partition's code in request order, grouped by consecutive topic: its refusal, or
/// the coordinator's answer for it (`results`), or that of the coordinator's failure.
pub(super) fn by_topic(
    order: Vec<Asked>,
    results: Result<group::OffsetCommitResponse, GroupError>,
) -> Vec<(String, Vec<(i32, i16)>)> {
    let mut codes = std::collections::HashMap::new();
    let failed = match results {
        Ok(response) => {
            for r in response.partitions {
                codes.insert((r.topic, r.partition), group_code(r.error));
            }
            None
        }
        Err(error) => Some(error),
    };
    let mut topics: Vec<(String, Vec<(i32, i16)>)> = Vec::new();
    for (topic, partition, refused) in order {
        let code = refused.unwrap_or_else(|| match failed {
            Some(error) => group_code(Some(error)),
            None => codes
                .get(&(topic.clone(), partition))
                .copied()
                .unwrap_or(ResponseError::UnknownServerError.code()),
        });
        match topics.last_mut() {
            Some((last, partitions)) if *last == topic => partitions.push((partition, code)),
            _ => topics.push((topic, vec![(partition, code)])),
        }
    }
    topics
}
