//! Wire-level tests of the group APIs: decoded requests in, responses out (encoded at every
//! advertised version), against a real broker on a temporary dir. The coordinator's own rules
//! are tested in `src/group/tests.rs`; these check the mapping between the two.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::test_support::{broker_with, create_topic, ctx};
use super::{handle, Reply, SUPPORTED};
use crate::broker::Broker;
use crate::coordinator::OFFSETS_TOPIC;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

/// Runs a request through dispatch (both phases) and checks that the response encodes at the
/// request's version.
async fn call(broker: &Arc<Broker>, key: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
    let response = match handle(ctx(broker, key, version), body).await {
        Reply::Ready(r) => r,
        Reply::Deferred(pending) => pending.await.expect("a response"),
        other => panic!("unexpected reply {other:?}"),
    };
    let mut buf = BytesMut::new();
    response
        .encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{key:?} v{version} response does not encode: {e}"));
    response
}

async fn broker(dir: &std::path::Path) -> Arc<Broker> {
    let broker = broker_with(
        dir,
        &[
            ("group.initial.rebalance.delay.ms", "0"),
            ("offsets.topic.num.partitions", "5"),
        ],
    )
    .await;
    create_topic(&broker, "t", 2, &[]).await;
    tokio::spawn(broker.groups.clone().run_timers(broker.shutdown_signal()));
    broker
}

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (_, range) = SUPPORTED.iter().find(|(k, _)| *k == key).unwrap();
    range.min..=range.max
}

async fn find(
    broker: &Arc<Broker>,
    version: i16,
    key_type: i8,
    keys: &[&str],
) -> FindCoordinatorResponse {
    let req = FindCoordinatorRequest::default()
        .with_key(s(keys[0]))
        .with_key_type(key_type)
        .with_coordinator_keys(keys.iter().map(|k| s(k)).collect());
    match call(
        broker,
        ApiKey::FindCoordinator,
        version,
        RequestKind::FindCoordinator(req),
    )
    .await
    {
        ResponseKind::FindCoordinator(r) => r,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn find_coordinator_creates_the_internal_topic_and_answers_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    assert!(broker.controller.image().topic(OFFSETS_TOPIC).is_none());
    for version in versions(ApiKey::FindCoordinator) {
        let r = find(&broker, version, 0, &["g1", "g2"]).await;
        if version >= 4 {
            assert_eq!(r.coordinators.len(), 2);
            for c in &r.coordinators {
                assert_eq!(
                    (c.error_code, c.node_id.0, c.port),
                    (0, 1, 9092),
                    "v{version}"
                );
            }
            assert_eq!(r.coordinators[1].key.as_str(), "g2");
        } else {
            assert_eq!(
                (r.error_code, r.node_id.0, r.port),
                (0, 1, 9092),
                "v{version}"
            );
            assert_eq!(r.host.as_str(), "127.0.0.1");
        }
    }
    let image = broker.controller.image();
    let topic = image.topic(OFFSETS_TOPIC).unwrap();
    assert!(topic.internal);
    assert_eq!(topic.partitions.len(), 5);

    // A transactional id's coordinator leads its __transaction_state partition (created on
    // first use, internal); an empty one and an unknown key type are bad requests.
    let r = find(&broker, 4, 1, &["tx"]).await;
    assert_eq!(
        (r.coordinators[0].error_code, r.coordinators[0].node_id.0),
        (0, 1)
    );
    let txn_topic = broker.controller.image();
    let txn_topic = txn_topic
        .topic(crate::txn::TRANSACTION_STATE_TOPIC)
        .expect("__transaction_state created");
    assert!(txn_topic.internal);
    assert_eq!(txn_topic.partitions.len(), 50);
    let r = find(&broker, 4, 9, &["x"]).await;
    assert_eq!(
        r.coordinators[0].error_code,
        ResponseError::InvalidRequest.code()
    );
    let r = find(&broker, 2, 1, &[""]).await;
    assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
    assert_eq!(r.node_id.0, -1);

    // Nor delete it.
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s(OFFSETS_TOPIC))]);
    match call(
        &broker,
        ApiKey::DeleteTopics,
        5,
        RequestKind::DeleteTopics(delete),
    )
    .await
    {
        ResponseKind::DeleteTopics(r) => {
            assert_eq!(
                r.responses[0].error_code,
                ResponseError::InvalidRequest.code()
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(broker.controller.image().topic(OFFSETS_TOPIC).is_some());

    // Clients may not write the internal topic.
    let produce = ProduceRequest::default().with_acks(1).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(TopicName(s(OFFSETS_TOPIC)))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from_static(b"x")))]),
    ]);
    match call(&broker, ApiKey::Produce, 9, RequestKind::Produce(produce)).await {
        ResponseKind::Produce(r) => assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            ResponseError::InvalidTopicException.code()
        ),
        other => panic!("{other:?}"),
    }
}

async fn join(broker: &Arc<Broker>, version: i16, group: &str, member: &str) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(bytes::Bytes::from_static(b"meta"))]);
    match call(
        broker,
        ApiKey::JoinGroup,
        version,
        RequestKind::JoinGroup(req),
    )
    .await
    {
        ResponseKind::JoinGroup(r) => r,
        other => panic!("{other:?}"),
    }
}

/// Joins `group` as its only member at `version`; returns (member id, generation).
async fn join_alone(broker: &Arc<Broker>, version: i16, group: &str) -> (String, i32) {
    let mut r = join(broker, version, group, "").await;
    if version >= 4 {
        assert_eq!(
            r.error_code,
            ResponseError::MemberIdRequired.code(),
            "v{version}"
        );
        assert!(!r.member_id.is_empty());
        let member = r.member_id.to_string();
        r = join(broker, version, group, &member).await;
    }
    assert_eq!(r.error_code, 0, "v{version}");
    assert_eq!(r.leader, r.member_id, "v{version}");
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.protocol_name.as_ref().map(|p| p.as_str()), Some("range"));
    (r.member_id.to_string(), r.generation_id)
}

async fn sync(
    broker: &Arc<Broker>,
    version: i16,
    group: &str,
    member: &str,
    generation: i32,
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(member))
            .with_assignment(bytes::Bytes::from_static(b"assignment"))]);
    match call(
        broker,
        ApiKey::SyncGroup,
        version,
        RequestKind::SyncGroup(req),
    )
    .await
    {
        ResponseKind::SyncGroup(r) => r,
        other => panic!("{other:?}"),
    }
}

async fn heartbeat(
    broker: &Arc<Broker>,
    version: i16,
    group: &str,
    member: &str,
    generation: i32,
) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member));
    match call(
        broker,
        ApiKey::Heartbeat,
        version,
        RequestKind::Heartbeat(req),
    )
    .await
    {
        ResponseKind::Heartbeat(r) => r.error_code,
        other => panic!("{other:?}"),
    }
}

async fn leave(
    broker: &Arc<Broker>,
    version: i16,
    group: &str,
    member: &str,
) -> LeaveGroupResponse {
    let req = LeaveGroupRequest::default()
        .with_group_id(gid(group))
        .with_member_id(if version < 3 { s(member) } else { s("") })
        .with_members(if version >= 3 {
            vec![leave_group_request::MemberIdentity::default().with_member_id(s(member))]
        } else {
            Vec::new()
        });
    match call(
        broker,
        ApiKey::LeaveGroup,
        version,
        RequestKind::LeaveGroup(req),
    )
    .await
    {
        ResponseKind::LeaveGroup(r) => r,
        other => panic!("{other:?}"),
    }
}

/// Every version of JoinGroup, SyncGroup, Heartbeat and LeaveGroup runs a one-member group
/// through a whole generation.
#[tokio::test]
async fn membership_apis_at_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    find(&broker, 3, 0, &["warmup"]).await;
    broker.groups.load_pending().await;
    for version in versions(ApiKey::JoinGroup) {
        let group = format!("members-v{version}");
        let (member, generation) = join_alone(&broker, version, &group).await;
        let sync_version = version.min(5);
        let r = sync(&broker, sync_version, &group, &member, generation).await;
        assert_eq!(r.error_code, 0, "sync v{sync_version}");
        assert_eq!(&r.assignment[..], b"assignment");
        let hb_version = version.min(4);
        assert_eq!(
            heartbeat(&broker, hb_version, &group, &member, generation).await,
            0
        );
        assert_eq!(
            heartbeat(&broker, hb_version, &group, &member, generation + 7).await,
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            heartbeat(&broker, hb_version, &group, "stranger", generation).await,
            ResponseError::UnknownMemberId.code()
        );
        let leave_version = version.min(5);
        let r = leave(&broker, leave_version, &group, &member).await;
        assert_eq!(r.error_code, 0, "leave v{leave_version}");
        if leave_version >= 3 {
            assert_eq!(r.members.len(), 1);
            assert_eq!(r.members[0].error_code, 0);
        }
        // The member is gone: a second leave is refused.
        let r = leave(&broker, leave_version, &group, &member).await;
        let code = if leave_version >= 3 {
            r.members[0].error_code
        } else {
            r.error_code
        };
        assert_eq!(
            code,
            ResponseError::UnknownMemberId.code(),
            "v{leave_version}"
        );
    }
}

fn commit_request(
    group: &str,
    generation: i32,
    member: &str,
    offsets: &[(&str, i32, i64)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (topic, partition, offset) in offsets {
        let p = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(*offset)
            .with_committed_leader_epoch(3)
            .with_committed_metadata(Some(s("meta")));
        match topics.last_mut() {
            Some(t) if t.name.as_str() == *topic => t.partitions.push(p),
            _ => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_retention_time_ms(-1)
        .with_topics(topics)
}

async fn commit(
    broker: &Arc<Broker>,
    version: i16,
    req: OffsetCommitRequest,
) -> Vec<(String, i32, i16)> {
    match call(
        broker,
        ApiKey::OffsetCommit,
        version,
        RequestKind::OffsetCommit(req),
    )
    .await
    {
        ResponseKind::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.to_string(), p.partition_index, p.error_code))
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// (topic, partition, offset, leader epoch, metadata) of a v1–v7 OffsetFetch.
async fn fetch_old(
    broker: &Arc<Broker>,
    version: i16,
    group: &str,
    topics: Option<&[(&str, i32)]>,
) -> (i16, Vec<(String, i32, i64, i32, String, i16)>) {
    let req = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|(t, p)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partition_indexes(vec![*p])
                })
                .collect()
        }));
    match call(
        broker,
        ApiKey::OffsetFetch,
        version,
        RequestKind::OffsetFetch(req),
    )
    .await
    {
        ResponseKind::OffsetFetch(r) => (
            r.error_code,
            r.topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        (
                            t.name.to_string(),
                            p.partition_index,
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.metadata
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                            p.error_code,
                        )
                    })
                })
                .collect(),
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn offsets_commit_fetch_delete_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = broker(dir.path()).await;
        find(&broker, 3, 0, &["warmup"]).await;
        broker.groups.load_pending().await;
        for version in versions(ApiKey::OffsetCommit) {
            let group = format!("standalone-v{version}");
            let results = commit(
                &broker,
                version,
                commit_request(
                    &group,
                    -1,
                    "",
                    &[
                        ("t", 0, 10 + i64::from(version)),
                        ("t", 1, 5),
                        ("nope", 0, 1),
                    ],
                ),
            )
            .await;
            assert_eq!(
                results,
                vec![
                    ("t".to_string(), 0, 0),
                    ("t".to_string(), 1, 0),
                    (
                        "nope".to_string(),
                        0,
                        ResponseError::UnknownTopicOrPartition.code()
                    ),
                ],
                "v{version}"
            );
        }
        // Every OffsetFetch version reads them back.
        for version in versions(ApiKey::OffsetFetch).filter(|v| *v < 8) {
            let (error, offsets) = fetch_old(
                &broker,
                version,
                "standalone-v7",
                Some(&[("t", 0), ("t", 1)]),
            )
            .await;
            assert_eq!(error, 0);
            // (Before v5 the epoch is not on the wire; the encoder drops it.)
            let epoch = 3;
            assert_eq!(
                offsets,
                vec![
                    ("t".to_string(), 0, 17, epoch, "meta".to_string(), 0),
                    ("t".to_string(), 1, 5, epoch, "meta".to_string(), 0),
                ],
                "v{version}"
            );
            if version >= 2 {
                let (_, all) = fetch_old(&broker, version, "standalone-v7", None).await;
                assert_eq!(all.len(), 2, "all committed partitions, v{version}");
            }
        }
        // v8+: several groups in one request, including one with nothing committed.
        for version in versions(ApiKey::OffsetFetch).filter(|v| *v >= 8) {
            let req = OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid("standalone-v2"))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0])])),
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid("never-committed"))
                    .with_topics(None),
            ]);
            match call(
                &broker,
                ApiKey::OffsetFetch,
                version,
                RequestKind::OffsetFetch(req),
            )
            .await
            {
                ResponseKind::OffsetFetch(r) => {
                    assert_eq!(r.groups.len(), 2);
                    assert_eq!(r.groups[0].error_code, 0);
                    assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 12);
                    assert!(r.groups[1].topics.is_empty());
                }
                other => panic!("{other:?}"),
            }
        }
        // OffsetDelete of one partition of an empty group.
        let req = OffsetDeleteRequest::default()
            .with_group_id(gid("standalone-v3"))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(1),
                    ]),
            ]);
        match call(
            &broker,
            ApiKey::OffsetDelete,
            0,
            RequestKind::OffsetDelete(req),
        )
        .await
        {
            ResponseKind::OffsetDelete(r) => {
                assert_eq!(r.error_code, 0);
                assert_eq!(r.topics[0].partitions[0].error_code, 0);
            }
            other => panic!("{other:?}"),
        }
        // DeleteGroups: an existing empty group, then one that does not exist.
        for version in versions(ApiKey::DeleteGroups) {
            let group = format!("standalone-v{}", 4 + version);
            let req =
                DeleteGroupsRequest::default().with_groups_names(vec![gid(&group), gid("ghost")]);
            match call(
                &broker,
                ApiKey::DeleteGroups,
                version,
                RequestKind::DeleteGroups(req),
            )
            .await
            {
                ResponseKind::DeleteGroups(r) => {
                    let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
                    assert_eq!(
                        codes,
                        vec![0, ResponseError::GroupIdNotFound.code()],
                        "v{version}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        broker.replicas.shutdown().unwrap();
    }
    // Reopen on the same dir: the commits, the offset delete and the group deletes replay.
    let broker = broker_with(dir.path(), &[("offsets.topic.num.partitions", "5")]).await;
    broker.groups.load_pending().await;
    let (_, offsets) = fetch_old(&broker, 7, "standalone-v7", Some(&[("t", 0)])).await;
    assert_eq!(offsets[0].2, 17);
    let (_, offsets) = fetch_old(&broker, 7, "standalone-v3", None).await;
    assert_eq!(
        offsets.iter().map(|o| (o.1, o.2)).collect::<Vec<_>>(),
        vec![(0, 13)]
    );
    for deleted in ["standalone-v4", "standalone-v5", "standalone-v6"] {
        let (_, offsets) = fetch_old(&broker, 7, deleted, None).await;
        assert!(offsets.is_empty(), "{deleted} was deleted");
    }
}

#[tokio::test]
async fn list_and_describe_groups() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    find(&broker, 3, 0, &["warmup"]).await;
    broker.groups.load_pending().await;
    let (member, generation) = join_alone(&broker, 9, "stable-group").await;
    assert_eq!(
        sync(&broker, 5, "stable-group", &member, generation)
            .await
            .error_code,
        0
    );

    for version in versions(ApiKey::ListGroups) {
        let mut req = ListGroupsRequest::default();
        if version >= 4 {
            req.states_filter = vec![s("stable")];
        }
        let r = match call(
            &broker,
            ApiKey::ListGroups,
            version,
            RequestKind::ListGroups(req),
        )
        .await
        {
            ResponseKind::ListGroups(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(r.error_code, 0);
        assert_eq!(r.groups.len(), 1, "v{version}");
        assert_eq!(r.groups[0].group_id.as_str(), "stable-group");
        assert_eq!(r.groups[0].protocol_type.as_str(), "consumer");
        if version >= 4 {
            assert_eq!(r.groups[0].group_state.as_str(), "Stable");
        }
    }
    let by_type = |types: Vec<StrBytes>| ListGroupsRequest::default().with_types_filter(types);
    for (types, expected) in [
        (vec![s("consumer")], 0),
        (vec![s("Classic")], 1),
        (vec![], 1),
    ] {
        match call(
            &broker,
            ApiKey::ListGroups,
            5,
            RequestKind::ListGroups(by_type(types)),
        )
        .await
        {
            ResponseKind::ListGroups(r) => assert_eq!(r.groups.len(), expected),
            other => panic!("{other:?}"),
        }
    }

    for version in versions(ApiKey::DescribeGroups) {
        let req = DescribeGroupsRequest::default()
            .with_groups(vec![gid("stable-group"), gid("ghost")])
            .with_include_authorized_operations(true);
        let r = match call(
            &broker,
            ApiKey::DescribeGroups,
            version,
            RequestKind::DescribeGroups(req),
        )
        .await
        {
            ResponseKind::DescribeGroups(r) => r,
            other => panic!("{other:?}"),
        };
        let g = &r.groups[0];
        assert_eq!(g.error_code, 0);
        assert_eq!(g.group_state.as_str(), "Stable");
        assert_eq!(g.protocol_data.as_str(), "range");
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.members[0].member_id.as_str(), member);
        assert_eq!(&g.members[0].member_assignment[..], b"assignment");
        assert_eq!(g.members[0].client_host.as_str(), "/127.0.0.1");
        if version >= 3 {
            assert_eq!(g.authorized_operations, (1 << 3) | (1 << 6) | (1 << 8));
        }
        let ghost = &r.groups[1];
        assert_eq!(ghost.group_state.as_str(), "Dead");
        let expected = if version >= 6 {
            ResponseError::GroupIdNotFound.code()
        } else {
            0
        };
        assert_eq!(ghost.error_code, expected, "v{version}");
    }
}

/// A follower's SyncGroup waits for the leader's; a second member's join completes the
/// rebalance for both.
#[tokio::test]
async fn a_follower_waits_for_the_leaders_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    find(&broker, 3, 0, &["warmup"]).await;
    broker.groups.load_pending().await;
    let (first, _) = join_alone(&broker, 5, "pair").await;
    // The second member's join puts the group into a rebalance that waits for the first to
    // rejoin (its heartbeat says so).
    let b2 = broker.clone();
    let second = tokio::spawn(async move { join(&b2, 3, "pair", "").await });
    let mut rejoin_needed = false;
    for _ in 0..100 {
        if heartbeat(&broker, 4, "pair", &first, 1).await
            == ResponseError::RebalanceInProgress.code()
        {
            rejoin_needed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(rejoin_needed, "the first member is told to rejoin");
    let first_join = join(&broker, 5, "pair", &first).await;
    let second_join = second.await.unwrap();
    assert_eq!((first_join.error_code, second_join.error_code), (0, 0));
    assert_eq!(first_join.generation_id, 2);
    assert_eq!(first_join.members.len(), 2, "the leader sees both members");
    assert!(second_join.members.is_empty());
    let follower = second_join.member_id.to_string();
    let b2 = broker.clone();
    let follower_sync = tokio::spawn(async move {
        let req = SyncGroupRequest::default()
            .with_group_id(gid("pair"))
            .with_generation_id(2)
            .with_member_id(s(&follower));
        match call(&b2, ApiKey::SyncGroup, 3, RequestKind::SyncGroup(req)).await {
            ResponseKind::SyncGroup(r) => r,
            other => panic!("{other:?}"),
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        !follower_sync.is_finished(),
        "the follower waits for the leader"
    );
    let req = SyncGroupRequest::default()
        .with_group_id(gid("pair"))
        .with_generation_id(2)
        .with_member_id(s(&first))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&first))
                .with_assignment(bytes::Bytes::from_static(b"one")),
            SyncGroupRequestAssignment::default()
                .with_member_id(second_join.member_id.clone())
                .with_assignment(bytes::Bytes::from_static(b"two")),
        ]);
    match call(&broker, ApiKey::SyncGroup, 5, RequestKind::SyncGroup(req)).await {
        ResponseKind::SyncGroup(r) => assert_eq!(&r.assignment[..], b"one"),
        other => panic!("{other:?}"),
    }
    let follower = follower_sync.await.unwrap();
    assert_eq!(follower.error_code, 0);
    assert_eq!(&follower.assignment[..], b"two");
}

/// `__consumer_offsets` is compacted: after many commits of the same partitions and a cleaner
/// run, the log is a fraction of its size, and a reopened broker replays the latest offsets.
#[tokio::test]
async fn the_offsets_topic_is_compacted_and_replays_the_latest_commits() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("group.initial.rebalance.delay.ms", "0"),
        ("offsets.topic.num.partitions", "1"),
        ("offsets.topic.segment.bytes", "4096"),
        ("log.cleaner.min.cleanable.ratio", "0.1"),
    ];
    let before;
    {
        let broker = broker_with(dir.path(), &settings).await;
        create_topic(&broker, "t", 2, &[]).await;
        find(&broker, 3, 0, &["warmup"]).await;
        broker.groups.load_pending().await;
        let topic = broker
            .controller
            .image()
            .topic(OFFSETS_TOPIC)
            .cloned()
            .unwrap();
        assert_eq!(
            topic.configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        for i in 0..400i64 {
            let results = commit(
                &broker,
                9,
                commit_request("compacted", -1, "", &[("t", 0, i), ("t", 1, 1000 + i)]),
            )
            .await;
            assert!(results.iter().all(|(_, _, code)| *code == 0));
        }
        let log = broker
            .replicas
            .leader_partition(OFFSETS_TOPIC, 0)
            .unwrap()
            .log()
            .clone();
        before = log.size_bytes();
        assert!(log.segment_count() > 5, "the commits rolled segments");
        let run = broker
            .replicas
            .run_log_cleaner(crate::replica::manager::now_ms());
        assert!(run.partitions_cleaned >= 1, "{run:?}");
        let after = log.size_bytes();
        assert!(
            after * 4 < before,
            "compaction shrank {before} bytes to {after}"
        );
        broker.replicas.shutdown().unwrap();
    }
    let broker = broker_with(dir.path(), &settings).await;
    broker.groups.load_pending().await;
    let (_, offsets) = fetch_old(&broker, 7, "compacted", None).await;
    let latest: Vec<(i32, i64)> = offsets.iter().map(|o| (o.1, o.2)).collect();
    assert_eq!(latest, vec![(0, 399), (1, 1399)]);
}
