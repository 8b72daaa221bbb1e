//! OffsetFetch (key 9), v1–v9: a group's committed offsets.
//!
//! v1–v7 ask for one group (`topics` null from v2 means every committed partition); v8+ ask for
//! several groups at once, each answered separately. A partition with nothing committed answers
//! offset -1 and empty metadata. Group-level errors (`NOT_COORDINATOR`,
//! `COORDINATOR_LOAD_IN_PROGRESS`, ...) are top-level from v2 and per partition in v1, as in
//! Kafka. With `require_stable` (v7+; librdkafka sets it for read_committed consumers) a
//! partition whose transactional offset commit waits for its transaction's marker answers
//! UNSTABLE_OFFSET_COMMIT (retriable) instead of the offset committed before it.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::errors::group_code;
use super::RequestContext;
use crate::group::{FetchedOffset, GroupError};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 9 };

/// OffsetFetch.
pub fn handle(ctx: &RequestContext, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let version = ctx.version;
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|topics| {
                    topics
                        .into_iter()
                        .flat_map(|t| {
                            let name = t.name.to_string();
                            t.partition_indexes
                                .into_iter()
                                .map(move |p| (name.clone(), p))
                        })
                        .collect::<Vec<_>>()
                });
                let result = fetch(
                    ctx,
                    g.group_id.as_str(),
                    wanted.as_deref(),
                    req.require_stable,
                );
                let (error, offsets) = split(result);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(group_code(error))
                    .with_topics(
                        by_topic(offsets)
                            .into_iter()
                            .map(|(topic, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(StrBytes::from_string(topic)))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|o| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(o.partition)
                                                    .with_committed_offset(o.offset)
                                                    .with_committed_leader_epoch(o.leader_epoch)
                                                    .with_metadata(Some(StrBytes::from_string(
                                                        o.metadata,
                                                    )))
                                                    .with_error_code(group_code(o.error))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }

    let wanted: Option<Vec<(String, i32)>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.to_string();
                t.partition_indexes
                    .into_iter()
                    .map(move |p| (name.clone(), p))
            })
            .collect()
    });
    let result = fetch(
        ctx,
        req.group_id.as_str(),
        wanted.as_deref(),
        version >= 7 && req.require_stable,
    );
    let (error, mut offsets) = split(result);
    let mut partition_error = 0;
    if let Some(error) = error {
        if version >= 2 {
            return OffsetFetchResponse::default().with_error_code(group_code(Some(error)));
        }
        // v1 has no top-level error: every requested partition carries it.
        partition_error = group_code(Some(error));
        offsets = wanted
            .unwrap_or_default()
            .into_iter()
            .map(|(topic, partition)| FetchedOffset {
                topic,
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error: None,
            })
            .collect();
    }
    let topics = by_topic(offsets)
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|o| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(o.partition)
                                .with_committed_offset(o.offset)
                                .with_committed_leader_epoch(o.leader_epoch)
                                .with_metadata(Some(StrBytes::from_string(o.metadata)))
                                .with_error_code(if partition_error != 0 {
                                    partition_error
                                } else {
                                    group_code(o.error)
                                })
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(0)
}

fn fetch(
    ctx: &RequestContext,
    group_id: &str,
    wanted: Option<&[(String, i32)]>,
    require_stable: bool,
) -> Result<Vec<FetchedOffset>, GroupError> {
    let mut offsets = ctx.broker.groups.with(|coordinator, _now| {
        coordinator.offset_fetch_stable(group_id, wanted, require_stable)
    })?;
    if wanted.is_none() {
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    }
    Ok(offsets)
}

fn split(
    result: Result<Vec<FetchedOffset>, GroupError>,
) -> (Option<GroupError>, Vec<FetchedOffset>) {
    match result {
        Ok(offsets) => (None, offsets),
        Err(error) => (Some(error), Vec::new()),
    }
}

/// Offsets grouped by topic: topics in first-appearance order, partitions in the order given
/// (sorted when the coordinator listed every committed partition).
fn by_topic(offsets: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut topics: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for offset in offsets {
        match index.get(&offset.topic) {
            Some(&i) => {
                if let Some((_, partitions)) = topics.get_mut(i) {
                    partitions.push(offset);
                }
            }
            None => {
                index.insert(offset.topic.clone(), topics.len());
                topics.push((offset.topic.clone(), vec![offset]));
            }
        }
    }
    topics
}
