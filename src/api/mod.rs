//! The Kafka APIs: one file per API, one version table, one dispatch `match`.
//!
//! [`SUPPORTED`] lists every handled API with its version range; it feeds both the decoder
//! (`protocol::decode_request` refuses what is not in it) and the ApiVersions response, so the
//! broker never advertises a version it does not handle. Each range is the one its handler file
//! declares, checked against `kafka-protocol`'s request *and* response ranges in a test.
//!
//! Handlers run in two phases, as Redpanda's do. Phase one runs while the connection waits,
//! in arrival order (a produce appends to the log here, so two pipelined produces to one
//! partition keep their order). It returns a [`Reply`]: a response ready now, nothing (acks=0),
//! or a future for phase two (waiting for durability, a long-poll fetch) that runs alongside
//! the connection's other requests while responses still go out in request order.
//!
//! Layer errors become Kafka error codes here and nowhere else ([`errors`]).

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod api_versions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_producers;
pub mod describe_transactions;
pub mod end_txn;
pub mod errors;
pub mod fetch;
pub mod find_coordinator;
#[cfg(test)]
mod group_tests;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod request_size;
pub mod sync_group;
#[cfg(test)]
mod test_support;
pub mod txn_offset_commit;
pub mod txn_verification;
pub mod write_txn_markers;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::VersionRange;

use crate::broker::Broker;
use crate::protocol::FileRefs;
use crate::server::Principal;

/// Every handled API and its version range. Order is ApiVersions' response order.
pub const SUPPORTED: &[(ApiKey, VersionRange)] = &[
    (ApiKey::Produce, produce::VERSIONS),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (
        ApiKey::OffsetForLeaderEpoch,
        offset_for_leader_epoch::VERSIONS,
    ),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::OffsetCommit, offset_commit::VERSIONS),
    (ApiKey::OffsetFetch, offset_fetch::VERSIONS),
    (ApiKey::FindCoordinator, find_coordinator::VERSIONS),
    (ApiKey::JoinGroup, join_group::VERSIONS),
    (ApiKey::Heartbeat, heartbeat::VERSIONS),
    (ApiKey::LeaveGroup, leave_group::VERSIONS),
    (ApiKey::SyncGroup, sync_group::VERSIONS),
    (ApiKey::DescribeGroups, describe_groups::VERSIONS),
    (ApiKey::ListGroups, list_groups::VERSIONS),
    (ApiKey::ApiVersions, api_versions::VERSIONS),
    (ApiKey::CreateTopics, create_topics::VERSIONS),
    (ApiKey::DeleteTopics, delete_topics::VERSIONS),
    (ApiKey::InitProducerId, init_producer_id::VERSIONS),
    (ApiKey::DescribeConfigs, describe_configs::VERSIONS),
    (ApiKey::DeleteGroups, delete_groups::VERSIONS),
    (ApiKey::OffsetDelete, offset_delete::VERSIONS),
    (ApiKey::DescribeCluster, describe_cluster::VERSIONS),
    (ApiKey::AddPartitionsToTxn, add_partitions_to_txn::VERSIONS),
    (ApiKey::AddOffsetsToTxn, add_offsets_to_txn::VERSIONS),
    (ApiKey::EndTxn, end_txn::VERSIONS),
    (ApiKey::WriteTxnMarkers, write_txn_markers::VERSIONS),
    (ApiKey::TxnOffsetCommit, txn_offset_commit::VERSIONS),
    (ApiKey::DescribeProducers, describe_producers::VERSIONS),
    (
        ApiKey::DescribeTransactions,
        describe_transactions::VERSIONS,
    ),
    (ApiKey::ListTransactions, list_transactions::VERSIONS),
];

/// The handled version range of an API, if it is handled at all.
pub fn supported_versions(api_key: ApiKey) -> Option<VersionRange> {
    SUPPORTED
        .iter()
        .find(|(key, _)| *key == api_key)
        .map(|(_, range)| *range)
}

/// A future that finishes a request (phase two).
pub type Pending = Pin<Box<dyn Future<Output = Option<ResponseKind>> + Send + 'static>>;

/// A future that finishes a Fetch: the response and the file slices its records stand for.
pub type PendingFiles =
    Pin<Box<dyn Future<Output = Option<(ResponseKind, FileRefs)>> + Send + 'static>>;

/// What phase one of a handler returns.
// The large variant is the common one and is moved once; boxing it would add an allocation
// per response for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// The response, ready now.
    Ready(ResponseKind),
    /// No response at all (a Produce with acks=0).
    NoResponse,
    /// Finish later; the future yields the response (or none).
    Deferred(Pending),
    /// A Fetch response ready now whose record fields stand for file slices.
    ReadyFiles(ResponseKind, FileRefs),
    /// A Fetch finishing later, with file slices.
    DeferredFiles(PendingFiles),
    /// No handler for a request the decoder let through: a bug in the version table. The
    /// connection is closed (answering nothing would leave the client waiting forever).
    Unhandled,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Reply::NoResponse => f.write_str("NoResponse"),
            Reply::Deferred(_) => f.write_str("Deferred(..)"),
            Reply::ReadyFiles(r, _) => f.debug_tuple("ReadyFiles").field(r).finish(),
            Reply::DeferredFiles(_) => f.write_str("DeferredFiles(..)"),
            Reply::Unhandled => f.write_str("Unhandled"),
        }
    }
}

/// Who sent a request and what it is.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The broker's state.
    pub broker: Arc<Broker>,
    /// The request header.
    pub header: RequestHeader,
    /// The API version of this request.
    pub version: i16,
    /// The client's address.
    pub peer: SocketAddr,
    /// Who the connection belongs to.
    pub principal: Principal,
}

/// Dispatches one decoded request to its handler (phase one).
pub async fn handle(ctx: RequestContext, body: RequestKind) -> Reply {
    match body {
        RequestKind::ApiVersions(req) => {
            Reply::Ready(ResponseKind::ApiVersions(api_versions::handle(&ctx, req)))
        }
        RequestKind::Metadata(req) => {
            Reply::Ready(ResponseKind::Metadata(metadata::handle(&ctx, req).await))
        }
        RequestKind::Produce(req) => produce::handle(ctx, req).await,
        RequestKind::Fetch(req) => fetch::handle(ctx, req),
        RequestKind::ListOffsets(req) => {
            Reply::Ready(ResponseKind::ListOffsets(list_offsets::handle(&ctx, req)))
        }
        RequestKind::OffsetForLeaderEpoch(req) => Reply::Ready(ResponseKind::OffsetForLeaderEpoch(
            offset_for_leader_epoch::handle(&ctx, req),
        )),
        RequestKind::CreateTopics(req) => Reply::Ready(ResponseKind::CreateTopics(
            create_topics::handle(&ctx, req).await,
        )),
        RequestKind::DeleteTopics(req) => Reply::Ready(ResponseKind::DeleteTopics(
            delete_topics::handle(&ctx, req).await,
        )),
        RequestKind::DescribeConfigs(req) => Reply::Ready(ResponseKind::DescribeConfigs(
            describe_configs::handle(&ctx, req),
        )),
        RequestKind::FindCoordinator(req) => Reply::Ready(ResponseKind::FindCoordinator(
            find_coordinator::handle(&ctx, req).await,
        )),
        RequestKind::JoinGroup(req) => join_group::handle(ctx, req),
        RequestKind::SyncGroup(req) => sync_group::handle(ctx, req),
        RequestKind::Heartbeat(req) => {
            Reply::Ready(ResponseKind::Heartbeat(heartbeat::handle(&ctx, req)))
        }
        RequestKind::LeaveGroup(req) => leave_group::handle(ctx, req),
        RequestKind::OffsetCommit(req) => offset_commit::handle(ctx, req),
        RequestKind::OffsetFetch(req) => {
            Reply::Ready(ResponseKind::OffsetFetch(offset_fetch::handle(&ctx, req)))
        }
        RequestKind::ListGroups(req) => {
            Reply::Ready(ResponseKind::ListGroups(list_groups::handle(&ctx, req)))
        }
        RequestKind::DescribeGroups(req) => Reply::Ready(ResponseKind::DescribeGroups(
            describe_groups::handle(&ctx, req),
        )),
        RequestKind::DeleteGroups(req) => delete_groups::handle(ctx, req),
        RequestKind::DescribeCluster(req) => Reply::Ready(ResponseKind::DescribeCluster(
            describe_cluster::handle(&ctx, req),
        )),
        RequestKind::OffsetDelete(req) => offset_delete::handle(ctx, req),
        RequestKind::InitProducerId(req) => Reply::Ready(ResponseKind::InitProducerId(
            init_producer_id::handle(&ctx, req).await,
        )),
        RequestKind::WriteTxnMarkers(req) => write_txn_markers::handle(ctx, req),
        RequestKind::TxnOffsetCommit(req) => txn_offset_commit::handle(ctx, req).await,
        RequestKind::DescribeProducers(req) => Reply::Ready(ResponseKind::DescribeProducers(
            describe_producers::handle(&ctx, req),
        )),
        RequestKind::DescribeTransactions(req) => Reply::Ready(ResponseKind::DescribeTransactions(
            describe_transactions::handle(&ctx, req),
        )),
        RequestKind::ListTransactions(req) => Reply::Ready(ResponseKind::ListTransactions(
            list_transactions::handle(&ctx, req),
        )),
        RequestKind::AddPartitionsToTxn(req) => Reply::Ready(ResponseKind::AddPartitionsToTxn(
            add_partitions_to_txn::handle(&ctx, req).await,
        )),
        RequestKind::AddOffsetsToTxn(req) => Reply::Ready(ResponseKind::AddOffsetsToTxn(
            add_offsets_to_txn::handle(&ctx, req).await,
        )),
        RequestKind::EndTxn(req) => {
            Reply::Ready(ResponseKind::EndTxn(end_txn::handle(&ctx, req).await))
        }
        other => {
            // The decoder only lets SUPPORTED APIs through, so this is a table/dispatch
            // mismatch: a bug, reported and answered by closing the connection.
            tracing::error!(request = ?std::mem::discriminant(&other), "no handler for a decoded request");
            Reply::Unhandled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every advertised range lies inside what kafka-protocol can decode *and* encode.
    #[test]
    fn supported_ranges_fit_the_protocol_crate() {
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::Message;
        fn both<Req: Message, Resp: Message>() -> VersionRange {
            VersionRange {
                min: Req::VERSIONS.min.max(Resp::VERSIONS.min),
                max: Req::VERSIONS.max.min(Resp::VERSIONS.max),
            }
        }
        for (key, range) in SUPPORTED {
            let crate_range = match key {
                ApiKey::Produce => both::<ProduceRequest, ProduceResponse>(),
                ApiKey::Fetch => both::<FetchRequest, FetchResponse>(),
                ApiKey::ListOffsets => both::<ListOffsetsRequest, ListOffsetsResponse>(),
                ApiKey::OffsetForLeaderEpoch => {
                    both::<OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse>()
                }
                ApiKey::Metadata => both::<MetadataRequest, MetadataResponse>(),
                ApiKey::ApiVersions => both::<ApiVersionsRequest, ApiVersionsResponse>(),
                ApiKey::CreateTopics => both::<CreateTopicsRequest, CreateTopicsResponse>(),
                ApiKey::DeleteTopics => both::<DeleteTopicsRequest, DeleteTopicsResponse>(),
                ApiKey::DescribeConfigs => {
                    both::<DescribeConfigsRequest, DescribeConfigsResponse>()
                }
                ApiKey::OffsetCommit => both::<OffsetCommitRequest, OffsetCommitResponse>(),
                ApiKey::OffsetFetch => both::<OffsetFetchRequest, OffsetFetchResponse>(),
                ApiKey::FindCoordinator => {
                    both::<FindCoordinatorRequest, FindCoordinatorResponse>()
                }
                ApiKey::JoinGroup => both::<JoinGroupRequest, JoinGroupResponse>(),
                ApiKey::Heartbeat => both::<HeartbeatRequest, HeartbeatResponse>(),
                ApiKey::LeaveGroup => both::<LeaveGroupRequest, LeaveGroupResponse>(),
                ApiKey::SyncGroup => both::<SyncGroupRequest, SyncGroupResponse>(),
                ApiKey::DescribeGroups => both::<DescribeGroupsRequest, DescribeGroupsResponse>(),
                ApiKey::ListGroups => both::<ListGroupsRequest, ListGroupsResponse>(),
                ApiKey::DeleteGroups => both::<DeleteGroupsRequest, DeleteGroupsResponse>(),
                ApiKey::OffsetDelete => both::<OffsetDeleteRequest, OffsetDeleteResponse>(),
                ApiKey::DescribeCluster => {
                    both::<DescribeClusterRequest, DescribeClusterResponse>()
                }
                ApiKey::InitProducerId => both::<InitProducerIdRequest, InitProducerIdResponse>(),
                ApiKey::AddPartitionsToTxn => {
                    both::<AddPartitionsToTxnRequest, AddPartitionsToTxnResponse>()
                }
                ApiKey::AddOffsetsToTxn => {
                    both::<AddOffsetsToTxnRequest, AddOffsetsToTxnResponse>()
                }
                ApiKey::EndTxn => both::<EndTxnRequest, EndTxnResponse>(),
                ApiKey::DescribeTransactions => {
                    both::<DescribeTransactionsRequest, DescribeTransactionsResponse>()
                }
                ApiKey::DescribeProducers => {
                    both::<DescribeProducersRequest, DescribeProducersResponse>()
                }
                ApiKey::ListTransactions => {
                    both::<ListTransactionsRequest, ListTransactionsResponse>()
                }
                ApiKey::TxnOffsetCommit => {
                    both::<TxnOffsetCommitRequest, TxnOffsetCommitResponse>()
                }
                ApiKey::WriteTxnMarkers => {
                    both::<WriteTxnMarkersRequest, WriteTxnMarkersResponse>()
                }
                other => panic!("{other:?} has no range check"),
            };
            assert!(
                range.min >= crate_range.min && range.max <= crate_range.max,
                "{key:?} advertises {range:?} beyond the crate's {crate_range:?}"
            );
        }
    }
}
