//! How much work a request asks for: the number of entries in its lists (topics, partitions,
//! groups, members, keys, nested lists counted in full), checked against `request.entries.max`
//! before any handler runs.
//!
//! A request's bytes are capped by `socket.request.max.bytes`, but an entry costs a handler
//! far more than its bytes: 100 MiB of one-byte group ids is fifty million lookups and an
//! answer tens of times the request's size. A request with more entries than the limit closes
//! its connection, as an oversized frame does (Kafka has no error code for it), with a log
//! line naming the count; the default leaves room for what real clients send (a consumer of
//! every partition of a large cluster).

use kafka_protocol::messages::RequestKind;

/// The number of list entries in `body` (0 for requests without lists).
pub fn entries(body: &RequestKind) -> usize {
    fn each<T>(items: &[T], inner: impl Fn(&T) -> usize) -> usize {
        items.iter().map(|item| 1 + inner(item)).sum()
    }
    match body {
        RequestKind::Produce(r) => each(&r.topic_data, |t| t.partition_data.len()),
        RequestKind::Fetch(r) => {
            each(&r.topics, |t| t.partitions.len())
                + each(&r.forgotten_topics_data, |t| t.partitions.len())
        }
        RequestKind::ListOffsets(r) => each(&r.topics, |t| t.partitions.len()),
        RequestKind::Metadata(r) => r.topics.as_ref().map_or(0, Vec::len),
        RequestKind::OffsetCommit(r) => each(&r.topics, |t| t.partitions.len()),
        RequestKind::OffsetFetch(r) => {
            r.topics
                .as_ref()
                .map_or(0, |topics| each(topics, |t| t.partition_indexes.len()))
                + each(&r.groups, |g| {
                    g.topics
                        .as_ref()
                        .map_or(0, |topics| each(topics, |t| t.partition_indexes.len()))
                })
        }
        RequestKind::FindCoordinator(r) => r.coordinator_keys.len(),
        RequestKind::JoinGroup(r) => r.protocols.len(),
        RequestKind::LeaveGroup(r) => r.members.len(),
        RequestKind::SyncGroup(r) => r.assignments.len(),
        RequestKind::DescribeGroups(r) => r.groups.len(),
        RequestKind::ListGroups(r) => r.states_filter.len() + r.types_filter.len(),
        RequestKind::CreateTopics(r) => each(&r.topics, |t| {
            t.configs.len() + each(&t.assignments, |a| a.broker_ids.len())
        }),
        RequestKind::DeleteTopics(r) => r.topics.len() + r.topic_names.len(),
        RequestKind::DescribeConfigs(r) => each(&r.resources, |res| {
            res.configuration_keys.as_ref().map_or(0, Vec::len)
        }),
        RequestKind::DeleteGroups(r) => r.groups_names.len(),
        RequestKind::OffsetDelete(r) => each(&r.topics, |t| t.partitions.len()),
        RequestKind::OffsetForLeaderEpoch(r) => each(&r.topics, |t| t.partitions.len()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::{DescribeGroupsRequest, GroupId, OffsetFetchRequest};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    #[test]
    fn nested_lists_count_in_full() {
        let groups = DescribeGroupsRequest::default().with_groups(vec![
            GroupId(
                StrBytes::from_static_str("g")
            );
            7
        ]);
        assert_eq!(entries(&RequestKind::DescribeGroups(groups)), 7);
        let topics = OffsetFetchRequestTopics::default().with_partition_indexes(vec![0, 1, 2]);
        let group = OffsetFetchRequestGroup::default().with_topics(Some(vec![topics; 2]));
        let fetch = OffsetFetchRequest::default().with_groups(vec![group; 3]);
        // 3 groups, each 2 topics of 3 partitions: 3 × (1 + 2 × (1 + 3)).
        assert_eq!(entries(&RequestKind::OffsetFetch(fetch)), 27);
    }
}
