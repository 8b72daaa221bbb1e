//! OffsetDelete (key 47), v0: deletes a group's committed offsets for some partitions.
//!
//! Partitions of topics that do not exist get `UNKNOWN_TOPIC_OR_PARTITION`; the coordinator
//! refuses partitions an active member is subscribed to (`GROUP_SUBSCRIBED_TO_TOPIC`) and
//! groups that do not exist. The tombstones are persisted before the answer, in phase two.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    OffsetDeleteRequest, OffsetDeleteResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::errors::group_code;
use super::{Reply, RequestContext};
use crate::group::{GroupError, Response};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

/// OffsetDelete.
pub fn handle(ctx: RequestContext, req: OffsetDeleteRequest) -> Reply {
    let image = ctx.broker.controller.image();
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
            } else {
                order.push((name.clone(), p.partition_index, None));
                partitions.push((name.clone(), p.partition_index));
            }
        }
    }
    let group_id = req.group_id.to_string();
    let receiver = ctx.broker.groups.submit(move |coordinator, now, token| {
        coordinator.offset_delete(now, token, &group_id, partitions)
    });
    Reply::Deferred(Box::pin(async move {
        let (group_error, results) = match receiver.await {
            Ok(Response::OffsetDelete(response)) => (
                response.error,
                response
                    .partitions
                    .into_iter()
                    .map(|r| ((r.topic, r.partition), group_code(r.error)))
                    .collect(),
            ),
            _ => (
                Some(GroupError::NotCoordinator),
                std::collections::HashMap::new(),
            ),
        };
        if group_error.is_some() {
            return Some(ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default().with_error_code(group_code(group_error)),
            ));
        }
        let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
        for (topic, partition, refused) in order {
            let code = refused.unwrap_or_else(|| {
                results
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or(ResponseError::UnknownServerError.code())
            });
            let entry = OffsetDeleteResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(code);
            match topics.last_mut() {
                Some(last) if last.name.as_str() == topic => last.partitions.push(entry),
                _ => topics.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        Some(ResponseKind::OffsetDelete(
            OffsetDeleteResponse::default().with_topics(topics),
        ))
    }))
}
