//! Writes the seed corpus for `decode_request`: the default request of every API at every
//! version its request type encodes, and a few requests with nested arrays filled in, each as
//! one frame (header and body, no 4-byte size). Usage: `seed_corpus <dir>`.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Message, StrBytes, VersionRange};

/// Every API's default request and the versions its request type encodes.
fn default_body(api_key: ApiKey) -> (RequestKind, VersionRange) {
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

fn text(value: &'static str) -> StrBytes {
    StrBytes::from_static_str(value)
}

fn filled_bodies() -> Vec<(ApiKey, RequestKind)> {
    let topic = MetadataRequestTopic::default().with_name(Some(TopicName(text("orders"))));
    let produce = TopicProduceData::default()
        .with_name(TopicName(text("orders")))
        .with_partition_data(vec![PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(Bytes::from_static(b"records")))]);
    let create = CreatableTopic::default()
        .with_name(TopicName(text("new")))
        .with_assignments(vec![
            CreatableReplicaAssignment::default().with_broker_ids(vec![BrokerId(1), BrokerId(2)])
        ])
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(text("cleanup.policy"))
            .with_value(Some(text("compact")))]);
    vec![
        (
            ApiKey::Metadata,
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![topic]))),
        ),
        (
            ApiKey::Produce,
            RequestKind::Produce(ProduceRequest::default().with_topic_data(vec![produce])),
        ),
        (
            ApiKey::CreateTopics,
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![create])),
        ),
    ]
}

fn frame(api_key: ApiKey, version: i16, body: &RequestKind) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(text("seed")))
        .encode(&mut buf, api_key.request_header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "corpus/decode_request".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let mut bodies: Vec<(ApiKey, RequestKind, VersionRange)> = ApiKey::iter()
        .map(|api_key| {
            let (body, range) = default_body(api_key);
            (api_key, body, range)
        })
        .collect();
    bodies.extend(
        filled_bodies()
            .into_iter()
            .map(|(api_key, body)| (api_key, body, api_key.valid_versions())),
    );
    let mut written = 0;
    for (index, (api_key, body, range)) in bodies.iter().enumerate() {
        for version in range.min..=range.max {
            if let Some(bytes) = frame(*api_key, version, body) {
                std::fs::write(dir.join(format!("{api_key:?}-v{version}-{index}")), bytes)?;
                written += 1;
            }
        }
    }
    println!("wrote {written} seeds to {}", dir.display());
    Ok(())
}
