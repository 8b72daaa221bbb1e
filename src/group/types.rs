//! What the coordinator takes and gives back: requests (already decoded by the API layer,
//! version differences resolved), responses, and the [`Output`] of a step.
//!
//! A response carries `error: Option<GroupError>` next to its data where Kafka's response does
//! (a JoinGroup that fails with `MEMBER_ID_REQUIRED` still carries the member id).

use bytes::Bytes;

use crate::group::error::GroupError;
use crate::group::records::Record;

/// The caller's handle on a request whose response may come later (JoinGroup waiting for the
/// join phase, SyncGroup waiting for the leader, a commit waiting for its append). The
/// coordinator hands it back with the response; the caller picks the values (for example a
/// connection id and correlation id packed together) and keeps them unique while in flight.
pub type RequestToken = u64;

/// The coordinator's handle on an append it asked for; the caller passes it to
/// [`crate::group::GroupCoordinator::complete`] once the append succeeded or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppendToken(pub(crate) u64);

/// Records to append to one `__consumer_offsets` partition, as one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The `__consumer_offsets` partition.
    pub partition: i32,
    /// The records, in order.
    pub records: Vec<Record>,
    /// The timestamp to give the records.
    pub timestamp_ms: i64,
    /// Passed back to `complete` when the append is done.
    pub token: AppendToken,
    /// For a transactional offset commit: the producer id and epoch the batch is written
    /// with (a transactional batch, which the transaction's marker commits or aborts).
    pub producer: Option<(i64, i16)>,
    /// For a transactional offset commit: the verification guard the handler took on the
    /// partition before asking the transaction coordinator (KIP-890; opaque here, checked by
    /// the log), `None` if it took none.
    pub verification: Option<u64>,
}

/// Everything a step of the coordinator produced: responses ready to send (for this request
/// and for others it released) and appends to perform.
#[derive(Debug, Default)]
pub struct Output {
    /// Responses, each for the request the caller tagged with the token.
    pub responses: Vec<(RequestToken, Response)>,
    /// Appends to perform, in order; each ends with a call to `complete`.
    pub appends: Vec<Append>,
}

impl Output {
    /// Whether the step produced nothing.
    pub fn is_empty(&self) -> bool {
        self.responses.is_empty() && self.appends.is_empty()
    }

    /// Moves everything from `other` to the end of `self`.
    pub fn extend(&mut self, other: Output) {
        self.responses.extend(other.responses);
        self.appends.extend(other.appends);
    }
}

/// A response released by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// For a JoinGroup.
    JoinGroup(JoinGroupResponse),
    /// For a SyncGroup.
    SyncGroup(SyncGroupResponse),
    /// For a LeaveGroup.
    LeaveGroup(LeaveGroupResponse),
    /// For an OffsetCommit.
    OffsetCommit(OffsetCommitResponse),
    /// For a TxnOffsetCommit (the same per-partition results).
    TxnOffsetCommit(OffsetCommitResponse),
    /// For a DeleteGroups.
    DeleteGroups(DeleteGroupsResponse),
    /// For an OffsetDelete.
    OffsetDelete(OffsetDeleteResponse),
}

/// One protocol a joining member supports (an assignor, for consumers) with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// The protocol name (`range`, `roundrobin`, `cooperative-sticky`, ...).
    pub name: String,
    /// The member's metadata for it (a `ConsumerProtocolSubscription` for consumers).
    pub metadata: Bytes,
}

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupRequest {
    /// The request's API version: v4+ asks for `MEMBER_ID_REQUIRED` on a first join, v9+ lets
    /// a static leader skip the assignment.
    pub api_version: i16,
    /// The group id.
    pub group_id: String,
    /// The member id, empty on a first join.
    pub member_id: String,
    /// The static member's group.instance.id (v5+).
    pub group_instance_id: Option<String>,
    /// The request header's client id.
    pub client_id: String,
    /// The client's address as Kafka shows it (`/127.0.0.1`).
    pub client_host: String,
    /// The session timeout.
    pub session_timeout_ms: i32,
    /// The rebalance timeout (v1+); negative means "use the session timeout", as v0 does.
    pub rebalance_timeout_ms: i32,
    /// The protocol type (`consumer` for consumers).
    pub protocol_type: String,
    /// The supported protocols, most preferred first.
    pub protocols: Vec<Protocol>,
}

/// A member as the leader's JoinGroup response lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupMember {
    /// The member id.
    pub member_id: String,
    /// The static member's group.instance.id.
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Bytes,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// The error, if any.
    pub error: Option<GroupError>,
    /// The generation, -1 on error.
    pub generation_id: i32,
    /// The group's protocol type (v7+).
    pub protocol_type: Option<String>,
    /// The selected protocol.
    pub protocol_name: Option<String>,
    /// The leader's member id, empty on error.
    pub leader: String,
    /// Whether the leader should skip the assignment (v9+, static leader rejoining a Stable
    /// group).
    pub skip_assignment: bool,
    /// The member's id (the new id with `MEMBER_ID_REQUIRED`).
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinGroupMember>,
}

impl JoinGroupResponse {
    /// An error response.
    pub fn error(member_id: &str, error: GroupError) -> Self {
        JoinGroupResponse {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupRequest {
    /// The group id.
    pub group_id: String,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The member id.
    pub member_id: String,
    /// The static member's group.instance.id (v3+).
    pub group_instance_id: Option<String>,
    /// The protocol type the member expects (v5+).
    pub protocol_type: Option<String>,
    /// The protocol name the member expects (v5+).
    pub protocol_name: Option<String>,
    /// The leader's assignment, by member id (empty for followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupResponse {
    /// The error, if any.
    pub error: Option<GroupError>,
    /// The group's protocol type (v5+).
    pub protocol_type: Option<String>,
    /// The group's protocol name (v5+).
    pub protocol_name: Option<String>,
    /// The member's assignment.
    pub assignment: Bytes,
}

impl SyncGroupResponse {
    /// An error response.
    pub fn error(error: GroupError) -> Self {
        SyncGroupResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A Heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// The group id.
    pub group_id: String,
    /// The member's generation.
    pub generation_id: i32,
    /// The member id.
    pub member_id: String,
    /// The static member's group.instance.id (v3+).
    pub group_instance_id: Option<String>,
}

/// One member leaving (LeaveGroup v3+ batches them; earlier versions have one, by member id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    /// The member id; empty to remove a static member by instance id alone.
    pub member_id: String,
    /// The static member's group.instance.id.
    pub group_instance_id: Option<String>,
}

/// A LeaveGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    /// The group id.
    pub group_id: String,
    /// The members leaving.
    pub members: Vec<LeavingMember>,
}

/// The result for one leaving member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMemberResult {
    /// The member id from the request.
    pub member_id: String,
    /// The group.instance.id from the request.
    pub group_instance_id: Option<String>,
    /// The error, if any.
    pub error: Option<GroupError>,
}

/// A LeaveGroup response. For v0–v2 the API layer answers with the one member's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupResponse {
    /// A group-level error, if any (then `members` is empty).
    pub error: Option<GroupError>,
    /// Per-member results, in request order.
    pub members: Vec<LeaveMemberResult>,
}

/// One partition's offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitPartition {
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The leader epoch of the last consumed record (v6+), or -1.
    pub leader_epoch: i32,
    /// The metadata string (null becomes "").
    pub metadata: Option<String>,
}

/// An OffsetCommit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    /// The group id (may be empty: Kafka accepts it for commits).
    pub group_id: String,
    /// The member's generation, -1 for a standalone consumer.
    pub generation_id: i32,
    /// The member id, empty for a standalone consumer.
    pub member_id: String,
    /// The static member's group.instance.id (v7+).
    pub group_instance_id: Option<String>,
    /// `retention_time_ms` of v2–v4 when not -1: an explicit expiry for these offsets.
    pub retention_time_ms: Option<i64>,
    /// The offsets.
    pub partitions: Vec<OffsetCommitPartition>,
}

impl OffsetCommitRequest {
    /// The same answer for every partition.
    pub fn answer_all(&self, error: Option<GroupError>) -> OffsetCommitResponse {
        OffsetCommitResponse {
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionResult {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    error,
                })
                .collect(),
        }
    }
}

/// The result for one committed partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionResult {
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// The error, if any.
    pub error: Option<GroupError>,
}

/// An OffsetCommit response: per partition, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    /// The per-partition results.
    pub partitions: Vec<PartitionResult>,
}

/// One partition of an OffsetFetch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// The committed offset, -1 if none.
    pub offset: i64,
    /// The committed leader epoch, -1 if none.
    pub leader_epoch: i32,
    /// The committed metadata, "" if none.
    pub metadata: String,
    /// UNSTABLE_OFFSET_COMMIT when the caller asked for stable offsets and a transaction's
    /// commit for the partition is pending.
    pub error: Option<GroupError>,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group id.
    pub group_id: String,
    /// The protocol type, "" for none.
    pub protocol_type: String,
    /// The state.
    pub state: crate::group::GroupState,
}

/// A ListGroups answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListGroupsResponse {
    /// `COORDINATOR_LOAD_IN_PROGRESS` while any partition loads (the groups are still listed).
    pub error: Option<GroupError>,
    /// The groups, sorted by id.
    pub groups: Vec<ListedGroup>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    /// The member id.
    pub member_id: String,
    /// The static member's group.instance.id.
    pub group_instance_id: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client host.
    pub client_host: String,
    /// The member's metadata for the selected protocol (Stable groups only, else empty).
    pub metadata: Bytes,
    /// The member's assignment (Stable groups only, else empty).
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    /// The error, if any.
    pub error: Option<GroupError>,
    /// The group id.
    pub group_id: String,
    /// The state (`Dead` for a group that does not exist, as Kafka answers).
    pub state: crate::group::GroupState,
    /// The protocol type, "" for none.
    pub protocol_type: String,
    /// The selected protocol (Stable groups only, else "").
    pub protocol_data: String,
    /// The members, in join order.
    pub members: Vec<DescribedMember>,
}

/// A DeleteGroups response: per group, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupsResponse {
    /// Each group id with its error, if any.
    pub results: Vec<(String, Option<GroupError>)>,
}

/// An OffsetDelete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeleteResponse {
    /// A group-level error, if any (then `partitions` is empty).
    pub error: Option<GroupError>,
    /// Per-partition results, in request order.
    pub partitions: Vec<PartitionResult>,
}
