//! Request bodies shared by the hostile-frame tests (`tests/hostile_frames.rs`) and the fuzz
//! seed corpus (`fuzz/seeds/seed_corpus.rs`, which includes this file by path): the default
//! request of every API, and requests with nested arrays, strings and tags filled in.

#![allow(dead_code)]

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};

/// The default request body of every API and the versions its request type encodes (narrower
/// than `ApiKey::valid_versions` for OffsetCommit, OffsetFetch and InitProducerId, whose newest
/// version exists only for the response). The match is exhaustive: a new API in a future
/// `kafka-protocol` fails to compile here until it is listed.
pub fn default_body(api_key: ApiKey) -> (RequestKind, VersionRange) {
    macro_rules! bodies {
        ($($key:ident => $request:ident),* $(,)?) => {
            match api_key {
                $(ApiKey::$key => (
                    RequestKind::$key($request::default()),
                    <$request as Message>::VERSIONS,
                ),)*
            }
        };
    }
    bodies! {
        Produce => ProduceRequest, Fetch => FetchRequest, ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest, OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest, FindCoordinator => FindCoordinatorRequest,
        JoinGroup => JoinGroupRequest, Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest, SyncGroup => SyncGroupRequest,
        DescribeGroups => DescribeGroupsRequest, ListGroups => ListGroupsRequest,
        SaslHandshake => SaslHandshakeRequest, ApiVersions => ApiVersionsRequest,
        CreateTopics => CreateTopicsRequest, DeleteTopics => DeleteTopicsRequest,
        DeleteRecords => DeleteRecordsRequest, InitProducerId => InitProducerIdRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        AddPartitionsToTxn => AddPartitionsToTxnRequest,
        AddOffsetsToTxn => AddOffsetsToTxnRequest, EndTxn => EndTxnRequest,
        WriteTxnMarkers => WriteTxnMarkersRequest, TxnOffsetCommit => TxnOffsetCommitRequest,
        DescribeAcls => DescribeAclsRequest, CreateAcls => CreateAclsRequest,
        DeleteAcls => DeleteAclsRequest, DescribeConfigs => DescribeConfigsRequest,
        AlterConfigs => AlterConfigsRequest, AlterReplicaLogDirs => AlterReplicaLogDirsRequest,
        DescribeLogDirs => DescribeLogDirsRequest, SaslAuthenticate => SaslAuthenticateRequest,
        CreatePartitions => CreatePartitionsRequest,
        CreateDelegationToken => CreateDelegationTokenRequest,
        RenewDelegationToken => RenewDelegationTokenRequest,
        ExpireDelegationToken => ExpireDelegationTokenRequest,
        DescribeDelegationToken => DescribeDelegationTokenRequest,
        DeleteGroups => DeleteGroupsRequest, ElectLeaders => ElectLeadersRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
        ListPartitionReassignments => ListPartitionReassignmentsRequest,
        OffsetDelete => OffsetDeleteRequest, DescribeClientQuotas => DescribeClientQuotasRequest,
        AlterClientQuotas => AlterClientQuotasRequest,
        DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
        AlterUserScramCredentials => AlterUserScramCredentialsRequest, Vote => VoteRequest,
        BeginQuorumEpoch => BeginQuorumEpochRequest, EndQuorumEpoch => EndQuorumEpochRequest,
        DescribeQuorum => DescribeQuorumRequest, AlterPartition => AlterPartitionRequest,
        UpdateFeatures => UpdateFeaturesRequest, Envelope => EnvelopeRequest,
        FetchSnapshot => FetchSnapshotRequest, DescribeCluster => DescribeClusterRequest,
        DescribeProducers => DescribeProducersRequest,
        BrokerRegistration => BrokerRegistrationRequest,
        BrokerHeartbeat => BrokerHeartbeatRequest, UnregisterBroker => UnregisterBrokerRequest,
        DescribeTransactions => DescribeTransactionsRequest,
        ListTransactions => ListTransactionsRequest,
        AllocateProducerIds => AllocateProducerIdsRequest,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
        ControllerRegistration => ControllerRegistrationRequest,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsRequest,
        PushTelemetry => PushTelemetryRequest, AssignReplicasToDirs => AssignReplicasToDirsRequest,
        ListConfigResources => ListConfigResourcesRequest,
        DescribeTopicPartitions => DescribeTopicPartitionsRequest,
        ShareGroupHeartbeat => ShareGroupHeartbeatRequest,
        ShareGroupDescribe => ShareGroupDescribeRequest, ShareFetch => ShareFetchRequest,
        ShareAcknowledge => ShareAcknowledgeRequest, AddRaftVoter => AddRaftVoterRequest,
        RemoveRaftVoter => RemoveRaftVoterRequest, UpdateRaftVoter => UpdateRaftVoterRequest,
        InitializeShareGroupState => InitializeShareGroupStateRequest,
        ReadShareGroupState => ReadShareGroupStateRequest,
        WriteShareGroupState => WriteShareGroupStateRequest,
        DeleteShareGroupState => DeleteShareGroupStateRequest,
        ReadShareGroupStateSummary => ReadShareGroupStateSummaryRequest,
        DescribeShareGroupOffsets => DescribeShareGroupOffsetsRequest,
        AlterShareGroupOffsets => AlterShareGroupOffsetsRequest,
        DeleteShareGroupOffsets => DeleteShareGroupOffsetsRequest,
    }
}

pub fn text(value: &'static str) -> StrBytes {
    StrBytes::from_static_str(value)
}

pub fn tags() -> std::collections::BTreeMap<i32, Bytes> {
    [(90, Bytes::from_static(b"tag"))].into_iter().collect()
}

/// Requests with nested arrays, strings, bytes and tagged fields filled in: they exercise the
/// inner counts that default bodies leave empty. Each comes in a by-name and a by-id flavour
/// and with and without unknown tags; a flavour that a version cannot encode is skipped there.
pub fn filled_bodies() -> Vec<RequestKind> {
    let topic_id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef);
    let mut bodies = Vec::new();
    for (by_id, tagged) in [(false, false), (true, false), (false, true), (true, true)] {
        let unknown = if tagged { tags() } else { Default::default() };
        let name = |value: &'static str| {
            if by_id {
                Default::default()
            } else {
                TopicName(text(value))
            }
        };
        let id = if by_id { topic_id } else { uuid::Uuid::nil() };

        let metadata_topics = vec![
            MetadataRequestTopic::default()
                .with_topic_id(id)
                .with_name((!by_id).then(|| TopicName(text("orders"))))
                .with_unknown_tagged_fields(unknown.clone()),
            MetadataRequestTopic::default().with_name((!by_id).then(|| TopicName(text("x")))),
        ];
        bodies.push(RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(metadata_topics))
                .with_unknown_tagged_fields(unknown.clone()),
        ));

        let partitions = (0..3)
            .map(|index| {
                PartitionProduceData::default()
                    .with_index(index)
                    .with_records(Some(Bytes::from_static(b"not really a record batch")))
                    .with_unknown_tagged_fields(unknown.clone())
            })
            .collect();
        bodies.push(RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name("orders"))
                    .with_topic_id(id)
                    .with_partition_data(partitions)]),
        ));

        let fetch_partitions = (0..2)
            .map(|partition| {
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(42)
                    .with_partition_max_bytes(1 << 20)
            })
            .collect();
        bodies.push(RequestKind::Fetch(
            FetchRequest::default()
                .with_max_wait_ms(500)
                .with_max_bytes(1 << 24)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(name("orders"))
                    .with_topic_id(id)
                    .with_partitions(fetch_partitions)
                    .with_unknown_tagged_fields(unknown.clone())])
                .with_forgotten_topics_data(vec![ForgottenTopic::default()
                    .with_topic(name("old"))
                    .with_topic_id(id)
                    .with_partitions(vec![1, 2, 3])]),
        ));

        bodies.push(RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(text("new")))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![BrokerId(1), BrokerId(2)])])
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(text("cleanup.policy"))
                        .with_value(Some(text("compact")))])
                    .with_unknown_tagged_fields(unknown.clone())]),
        ));

        bodies.push(RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(text("group")))
                .with_member_id(text("member"))
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(name("orders"))
                    .with_topic_id(id)
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(10)
                        .with_committed_metadata(Some(text("meta")))])]),
        ));

        bodies.push(RequestKind::OffsetFetch(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(text("group")))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(text("orders")))
                    .with_partition_indexes(vec![0, 1])])),
        ));
        bodies.push(RequestKind::OffsetFetch(
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(text("group")))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(name("orders"))
                    .with_topic_id(id)
                    .with_partition_indexes(vec![0, 1])]))]),
        ));

        bodies.push(RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(text("group")))
                .with_protocol_type(text("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(text("range"))
                    .with_metadata(Bytes::from_static(&[0, 1, 2, 3]))])
                .with_unknown_tagged_fields(unknown),
        ));
    }
    bodies
}

pub fn api_key_of(body: &RequestKind) -> ApiKey {
    match body {
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::OffsetCommit(_) => ApiKey::OffsetCommit,
        RequestKind::OffsetFetch(_) => ApiKey::OffsetFetch,
        RequestKind::JoinGroup(_) => ApiKey::JoinGroup,
        other => panic!("add {other:?} to api_key_of"),
    }
}
