//! The classic-protocol group coordinator as an I/O-free state machine (Kafka's
//! `GroupCoordinator` / `GroupMetadataManager`), driven by the API handlers and a timer task.
//!
//! How the caller drives it:
//! - Every call takes `now_ms`; nothing here reads a clock. [`GroupCoordinator::tick`] runs the
//!   timers that are due and [`GroupCoordinator::next_deadline`] says when to call it next.
//! - Requests that may wait (JoinGroup, SyncGroup) or that write (OffsetCommit, DeleteGroups,
//!   OffsetDelete) take a [`RequestToken`]; their response comes back in an [`Output`], from
//!   this call or a later one (a JoinGroup is released when the join phase ends, by a call for
//!   another member or by `tick`). LeaveGroup answers in the `Output` of its own call.
//!   Heartbeat, OffsetFetch, ListGroups and DescribeGroups answer directly.
//! - An `Output` may hold [`Append`]s. The caller appends each to its `__consumer_offsets`
//!   partition, in order, then calls [`GroupCoordinator::complete`] with the append's token and
//!   the outcome. Responses that depend on an append (commits, the SyncGroup that makes a group
//!   Stable, a static member's rejoin, deletes) are released only then: no client is told
//!   something is durable before it is. State that Kafka changes before its write (member
//!   removal, deletes, expiry) changes here before the append too, as in Kafka.
//! - On becoming leader of a `__consumer_offsets` partition: `begin_loading`, `replay` every
//!   record of the partition in log order, `finish_loading`. On losing it: `unload`.
//!
//! Invariants:
//! - A group lives in the partition `partition_for(group_id)`, and is only served while that
//!   partition is loaded (otherwise `NOT_COORDINATOR` / `COORDINATOR_LOAD_IN_PROGRESS`).
//! - Every pending JoinGroup, SyncGroup and write is answered exactly once: when it completes,
//!   when it is superseded (a duplicate JoinGroup/SyncGroup of the same member gets
//!   `REBALANCE_IN_PROGRESS`, where Kafka leaves it unanswered), when its member is removed
//!   (`UNKNOWN_MEMBER_ID`) or fenced (`FENCED_INSTANCE_ID`), or when the partition unloads
//!   (`NOT_COORDINATOR`). A token therefore never hangs a connection.
//! - Appends are issued with increasing tokens and the caller appends them in that order, so
//!   the log order equals the issue order; a commit completion applies only if its partition
//!   was not deleted or expired after it was issued and nothing newer was applied, which makes
//!   the in-memory offsets equal what replaying the log gives.
//! - Dead groups are removed at once, so no group in the map is Dead.
//!
//! Deliberate differences from Kafka (each where Kafka's behaviour is unspecified or would
//! leave a request hanging):
//! - A superseded JoinGroup/SyncGroup, and the SyncGroup of a member removed while waiting,
//!   are answered (see above) instead of being dropped.
//! - Ties in the protocol vote go to the protocol voted for first in join order, and
//!   leadership passes to the next member in join order (Kafka: hash-map order).
//! - A static member rejoining a Stable group also triggers a rebalance when its consumer
//!   subscription (topic set) changed, not only when the selected protocol would change, so a
//!   restarted instance with a new subscription is not left unassigned. Owned partitions,
//!   generation and user data may differ freely (they always do after a restart).
//! - The retention check does not delete an empty group while a member id handed out with
//!   `MEMBER_ID_REQUIRED` is outstanding (its rejoin would otherwise fail).
//! - Like Kafka's classic coordinator, a group that never wrote a record (created by a join
//!   that failed, or by `MEMBER_ID_REQUIRED` alone) is not persisted and is gone after a
//!   failover; it holds nothing.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use uuid::Uuid;

use crate::group::config::GroupConfig;
use crate::group::error::{AppendError, GroupError, ReplayError};
use crate::group::partition_for;
use crate::group::records::{CoordinatorRecord, OffsetCommitKey, OffsetCommitValue, Record};
use crate::group::state::{
    parse_subscription_topics, CommittedOffset, Group, GroupState, JoinPhase, Member, MemberInit,
    TopicPartition, CONSUMER_PROTOCOL_TYPE,
};
use crate::group::timers::{TimerKey, Timers};
use crate::group::types::{
    Append, AppendToken, DeleteGroupsResponse, DescribedGroup, DescribedMember, FetchedOffset,
    HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    LeaveMemberResult, ListGroupsResponse, ListedGroup, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteResponse, Output, PartitionResult, Protocol, RequestToken, Response,
    SyncGroupRequest, SyncGroupResponse,
};

/// The most timers one `tick` runs; the rest wait for the next call (`next_deadline` is then
/// already due), so one call never runs unbounded.
const MAX_TIMERS_PER_TICK: usize = 100_000;

/// Whether a `__consumer_offsets` partition's groups are being replayed or served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionStatus {
    Loading,
    Active,
}

/// Where member ids' UUIDs come from: random in production, a seeded sequence for
/// reproducible simulations.
#[derive(Debug)]
enum MemberIdSource {
    Random,
    Seeded { state: u64 },
}

impl MemberIdSource {
    fn next(&mut self) -> Uuid {
        match self {
            MemberIdSource::Random => Uuid::new_v4(),
            MemberIdSource::Seeded { state } => {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&splitmix64(state).to_be_bytes());
                bytes[8..].copy_from_slice(&splitmix64(state).to_be_bytes());
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What waits on an append.
#[derive(Debug)]
enum PendingAppend {
    /// Nothing (empty-group metadata, expiry tombstones): a failure is only logged, as in
    /// Kafka; the next write or the retention check repeats it.
    Unobserved { partition: i32 },
    /// The leader's assignment: the group becomes Stable and every SyncGroup is answered.
    SyncAssignment {
        partition: i32,
        group_id: String,
        incarnation: u64,
        generation_id: i32,
        assignment: HashMap<String, Bytes>,
    },
    /// A static member's new member id in a Stable group: its JoinGroup is answered, or the
    /// replacement is undone.
    StaticReplace(Box<StaticReplace>),
    /// An offset commit.
    OffsetCommit {
        partition: i32,
        request: RequestToken,
        group_id: String,
        incarnation: u64,
        results: Vec<PartitionResult>,
        /// Index into `results`, partition, value.
        written: Vec<(usize, TopicPartition, CommittedOffset)>,
    },
    /// A transactional offset commit: kept pending for the transaction's marker once written.
    TxnOffsetCommit {
        partition: i32,
        request: RequestToken,
        group_id: String,
        incarnation: u64,
        producer_id: i64,
        results: Vec<PartitionResult>,
        /// Index into `results`, partition, value.
        written: Vec<(usize, TopicPartition, CommittedOffset)>,
    },
    /// One partition's share of a DeleteGroups.
    DeleteGroups {
        partition: i32,
        op: u64,
        indices: Vec<usize>,
    },
    /// An OffsetDelete.
    OffsetDelete {
        partition: i32,
        request: RequestToken,
        response: OffsetDeleteResponse,
        indices: Vec<usize>,
    },
}

impl PendingAppend {
    fn partition(&self) -> i32 {
        match self {
            PendingAppend::Unobserved { partition }
            | PendingAppend::SyncAssignment { partition, .. }
            | PendingAppend::OffsetCommit { partition, .. }
            | PendingAppend::TxnOffsetCommit { partition, .. }
            | PendingAppend::DeleteGroups { partition, .. }
            | PendingAppend::OffsetDelete { partition, .. } => *partition,
            PendingAppend::StaticReplace(replace) => replace.partition,
        }
    }
}

/// The undo information of a static member replacement.
#[derive(Debug)]
struct StaticReplace {
    partition: i32,
    group_id: String,
    incarnation: u64,
    generation_id: i32,
    group_instance_id: String,
    old_member_id: String,
    new_member_id: String,
    old_protocols: Vec<Protocol>,
    old_rebalance_timeout_ms: i32,
    old_session_timeout_ms: i32,
    /// The leader before the replacement (pre-v9 clients are told this one, so a restarted
    /// static leader does not run a pointless assignment).
    leader_before: Option<String>,
    supports_skip_assignment: bool,
}

/// A DeleteGroups waiting for its appends (one per `__consumer_offsets` partition).
#[derive(Debug)]
struct PendingDelete {
    request: RequestToken,
    response: DeleteGroupsResponse,
    remaining: usize,
}

/// The classic group coordinator for the `__consumer_offsets` partitions this broker leads.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: HashMap<String, Group>,
    partitions: HashMap<i32, PartitionStatus>,
    timers: Timers,
    pending_appends: HashMap<AppendToken, PendingAppend>,
    pending_deletes: HashMap<u64, PendingDelete>,
    /// Source of append tokens, group incarnations and delete op ids; only increases.
    next_seq: u64,
    retention_scheduled: bool,
    ids: MemberIdSource,
}

/// The parts of the coordinator a step mutates besides the group it works on.
struct Ctx<'a> {
    config: &'a GroupConfig,
    timers: &'a mut Timers,
    pending_appends: &'a mut HashMap<AppendToken, PendingAppend>,
    next_seq: &'a mut u64,
    ids: &'a mut MemberIdSource,
    out: &'a mut Output,
    now_ms: i64,
}

/// Borrows the coordinator's fields (all but `groups` and `partitions`) as a [`Ctx`].
macro_rules! ctx {
    ($self:ident, $out:expr, $now:expr) => {
        Ctx {
            config: &$self.config,
            timers: &mut $self.timers,
            pending_appends: &mut $self.pending_appends,
            next_seq: &mut $self.next_seq,
            ids: &mut $self.ids,
            out: $out,
            now_ms: $now,
        }
    };
}

impl Ctx<'_> {
    fn respond(&mut self, request: RequestToken, response: Response) {
        self.out.responses.push((request, response));
    }

    fn respond_join(&mut self, request: RequestToken, response: JoinGroupResponse) {
        self.respond(request, Response::JoinGroup(response));
    }

    fn respond_sync(&mut self, request: RequestToken, response: SyncGroupResponse) {
        self.respond(request, Response::SyncGroup(response));
    }

    fn reserve_token(&mut self) -> AppendToken {
        *self.next_seq += 1;
        AppendToken(*self.next_seq)
    }

    fn append_with(
        &mut self,
        token: AppendToken,
        partition: i32,
        records: Vec<Record>,
        pending: PendingAppend,
    ) {
        self.out.appends.push(Append {
            partition,
            records,
            timestamp_ms: self.now_ms,
            token,
            producer: None,
            verification: None,
        });
        self.pending_appends.insert(token, pending);
    }

    fn append(&mut self, partition: i32, records: Vec<Record>, pending: PendingAppend) {
        let token = self.reserve_token();
        self.append_with(token, partition, records, pending);
    }

    fn schedule_heartbeat(&mut self, group_id: &str, member_id: &str, timeout_ms: i64) {
        self.timers.schedule(
            TimerKey::Heartbeat {
                group_id: group_id.to_string(),
                member_id: member_id.to_string(),
            },
            self.now_ms.saturating_add(timeout_ms.max(0)),
        );
    }

    fn cancel_heartbeat(&mut self, group_id: &str, member_id: &str) {
        self.timers.cancel(&TimerKey::Heartbeat {
            group_id: group_id.to_string(),
            member_id: member_id.to_string(),
        });
    }

    fn schedule_join(&mut self, group_id: &str, delay_ms: i64) {
        self.timers.schedule(
            TimerKey::Join {
                group_id: group_id.to_string(),
            },
            self.now_ms.saturating_add(delay_ms.max(0)),
        );
    }

    fn cancel_join(&mut self, group_id: &str) {
        self.timers.cancel(&TimerKey::Join {
            group_id: group_id.to_string(),
        });
    }

    fn schedule_sync(&mut self, group_id: &str, delay_ms: i64) {
        self.timers.schedule(
            TimerKey::Sync {
                group_id: group_id.to_string(),
            },
            self.now_ms.saturating_add(delay_ms.max(0)),
        );
    }

    fn cancel_sync(&mut self, group_id: &str) {
        self.timers.cancel(&TimerKey::Sync {
            group_id: group_id.to_string(),
        });
    }

    /// Restarts a member's session from now.
    fn refresh_session(&mut self, group: &Group, member_id: &str) {
        if let Some(member) = group.member(member_id) {
            let timeout = i64::from(member.session_timeout_ms);
            self.schedule_heartbeat(&group.group_id, member_id, timeout);
        }
    }
}

impl GroupCoordinator {
    /// A coordinator that leads no `__consumer_offsets` partition yet; member ids get random
    /// UUIDs.
    pub fn new(config: GroupConfig) -> Self {
        Self::with_member_ids(config, MemberIdSource::Random)
    }

    /// Like [`GroupCoordinator::new`], with member-id UUIDs from a seeded sequence, so a
    /// simulation replays exactly.
    pub fn with_seed(config: GroupConfig, seed: u64) -> Self {
        Self::with_member_ids(config, MemberIdSource::Seeded { state: seed })
    }

    fn with_member_ids(config: GroupConfig, ids: MemberIdSource) -> Self {
        GroupCoordinator {
            config,
            groups: HashMap::new(),
            partitions: HashMap::new(),
            timers: Timers::default(),
            pending_appends: HashMap::new(),
            pending_deletes: HashMap::new(),
            next_seq: 0,
            retention_scheduled: false,
            ids,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The `__consumer_offsets` partition of `group_id` (FindCoordinator's answer is its
    /// leader).
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.config.offsets_topic_num_partitions)
    }

    /// The group's state, if this coordinator serves it.
    pub fn group_state(&self, group_id: &str) -> Option<GroupState> {
        self.groups
            .get(group_id)
            .filter(|g| self.partitions.get(&g.partition) == Some(&PartitionStatus::Active))
            .map(Group::state)
    }

    /// The earliest time `tick` has work to do.
    pub fn next_deadline(&self) -> Option<i64> {
        self.timers.next_deadline()
    }

    /// Which partition a group request goes to, or why it cannot be served here.
    fn check_group(&self, group_id: &str, allow_empty: bool) -> Result<i32, GroupError> {
        // Kafka accepts an empty group id only where it predates the check (offsets,
        // describe, delete); an id longer than a Kafka string could not be persisted.
        if (group_id.is_empty() && !allow_empty) || group_id.len() > i16::MAX as usize {
            return Err(GroupError::InvalidGroupId);
        }
        let partition = self.partition_for(group_id);
        match self.partitions.get(&partition) {
            Some(PartitionStatus::Active) => Ok(partition),
            Some(PartitionStatus::Loading) => Err(GroupError::CoordinatorLoadInProgress),
            None => Err(GroupError::NotCoordinator),
        }
    }

    fn new_group(&mut self, group_id: &str, partition: i32, now_ms: i64) {
        self.next_seq += 1;
        let group = Group::new(group_id.to_string(), partition, self.next_seq, now_ms);
        self.groups.insert(group_id.to_string(), group);
    }

    // ----- JoinGroup -----------------------------------------------------------------------

    /// JoinGroup. The response (with `request`) comes when the member's join completes:
    /// at once for errors, `MEMBER_ID_REQUIRED` and rejoins that need no rebalance; otherwise
    /// when the join phase ends.
    pub fn join_group(
        &mut self,
        now_ms: i64,
        request: RequestToken,
        mut req: JoinGroupRequest,
    ) -> Output {
        let mut out = Output::default();
        let fail = |out: &mut Output, member_id: &str, error| {
            out.responses.push((
                request,
                Response::JoinGroup(JoinGroupResponse::error(member_id, error)),
            ));
        };
        let partition = match self.check_group(&req.group_id, false) {
            Ok(partition) => partition,
            Err(error) => {
                fail(&mut out, &req.member_id, error);
                return out;
            }
        };
        if req.session_timeout_ms < self.config.group_min_session_timeout_ms
            || req.session_timeout_ms > self.config.group_max_session_timeout_ms
        {
            fail(&mut out, &req.member_id, GroupError::InvalidSessionTimeout);
            return out;
        }
        if !self.groups.contains_key(&req.group_id) {
            if !req.member_id.is_empty() {
                fail(&mut out, &req.member_id, GroupError::UnknownMemberId);
                return out;
            }
            self.new_group(&req.group_id, partition, now_ms);
        }
        // JoinGroup v0 has no rebalance timeout: Kafka uses the session timeout.
        if req.rebalance_timeout_ms < 0 {
            req.rebalance_timeout_ms = req.session_timeout_ms;
        }
        req.protocols = crate::group::state::dedup_protocols(std::mem::take(&mut req.protocols));
        let mut ctx = ctx!(self, &mut out, now_ms);
        match self.groups.get_mut(&req.group_id) {
            Some(group) => join(group, &mut ctx, request, &req),
            None => ctx.respond_join(
                request,
                JoinGroupResponse::error(&req.member_id, GroupError::CoordinatorNotAvailable),
            ),
        }
        out
    }

    // ----- SyncGroup -----------------------------------------------------------------------

    /// SyncGroup. A follower waits for the leader's assignment; the leader's assignment is
    /// persisted first, and every waiting member is answered when that append completes.
    pub fn sync_group(
        &mut self,
        now_ms: i64,
        request: RequestToken,
        req: SyncGroupRequest,
    ) -> Output {
        let mut out = Output::default();
        if let Err(error) = self.check_group(&req.group_id, false) {
            out.responses.push((
                request,
                Response::SyncGroup(SyncGroupResponse::error(error)),
            ));
            return out;
        }
        let mut ctx = ctx!(self, &mut out, now_ms);
        match self.groups.get_mut(&req.group_id) {
            Some(group) => sync(group, &mut ctx, request, req),
            None => ctx.respond_sync(
                request,
                SyncGroupResponse::error(GroupError::UnknownMemberId),
            ),
        }
        out
    }

    // ----- Heartbeat -----------------------------------------------------------------------

    /// Heartbeat: restarts the member's session. `REBALANCE_IN_PROGRESS` tells it to rejoin.
    pub fn heartbeat(&mut self, now_ms: i64, req: &HeartbeatRequest) -> Result<(), GroupError> {
        self.check_group(&req.group_id, false)?;
        let mut out = Output::default();
        let mut ctx = ctx!(self, &mut out, now_ms);
        let group = self
            .groups
            .get_mut(&req.group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        group.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        match group.state() {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                ctx.refresh_session(group, &req.member_id);
                Err(GroupError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                ctx.refresh_session(group, &req.member_id);
                Ok(())
            }
        }
    }

    // ----- LeaveGroup ----------------------------------------------------------------------

    /// LeaveGroup (one member before v3, a batch from v3, static members by instance id).
    /// The response is in the returned `Output`, with any JoinGroup responses the departure
    /// released.
    pub fn leave_group(
        &mut self,
        now_ms: i64,
        request: RequestToken,
        req: LeaveGroupRequest,
    ) -> Output {
        let mut out = Output::default();
        let group_error = match self.check_group(&req.group_id, false) {
            Err(error) => Some(error),
            Ok(_) if !self.groups.contains_key(&req.group_id) => Some(GroupError::UnknownMemberId),
            Ok(_) => None,
        };
        if let Some(error) = group_error {
            out.responses.push((
                request,
                Response::LeaveGroup(LeaveGroupResponse {
                    error: Some(error),
                    members: Vec::new(),
                }),
            ));
            return out;
        }
        let mut ctx = ctx!(self, &mut out, now_ms);
        let mut members = Vec::with_capacity(req.members.len());
        if let Some(group) = self.groups.get_mut(&req.group_id) {
            for leaving in req.members {
                let error = leave_one(
                    group,
                    &mut ctx,
                    &leaving.member_id,
                    leaving.group_instance_id.as_deref(),
                );
                members.push(LeaveMemberResult {
                    member_id: leaving.member_id,
                    group_instance_id: leaving.group_instance_id,
                    error,
                });
            }
        }
        ctx.respond(
            request,
            Response::LeaveGroup(LeaveGroupResponse {
                error: None,
                members,
            }),
        );
        out
    }

    // ----- Offsets -------------------------------------------------------------------------

    /// OffsetCommit. Valid offsets are written; the response comes when the append completes
    /// (at once if nothing is written).
    pub fn offset_commit(
        &mut self,
        now_ms: i64,
        request: RequestToken,
        req: OffsetCommitRequest,
    ) -> Output {
        let mut out = Output::default();
        let all = |error: Option<GroupError>| req.answer_all(error);
        let partition = match self.check_group(&req.group_id, true) {
            Ok(partition) => partition,
            Err(error) => {
                out.responses
                    .push((request, Response::OffsetCommit(all(Some(error)))));
                return out;
            }
        };
        if !self.groups.contains_key(&req.group_id) {
            if req.generation_id < 0 {
                // A standalone consumer (or the admin client): the group exists only for its
                // offsets.
                self.new_group(&req.group_id, partition, now_ms);
            } else {
                out.responses.push((
                    request,
                    Response::OffsetCommit(all(Some(GroupError::IllegalGeneration))),
                ));
                return out;
            }
        }
        let mut ctx = ctx!(self, &mut out, now_ms);
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            // Unreachable: the group was found or created above.
            let error = Some(GroupError::CoordinatorNotAvailable);
            ctx.respond(request, Response::OffsetCommit(all(error)));
            return out;
        };
        if let Err(error) = validate_offset_commit(group, &req) {
            ctx.respond(request, Response::OffsetCommit(all(Some(error))));
            return out;
        }
        if matches!(
            group.state(),
            GroupState::Stable | GroupState::PreparingRebalance
        ) && group.has_member(&req.member_id)
        {
            ctx.refresh_session(group, &req.member_id);
        }
        let token = ctx.reserve_token();
        let expire_timestamp_ms = req
            .retention_time_ms
            .map(|retention| now_ms.saturating_add(retention));
        let (results, written, records) = commit_records(
            &group.group_id,
            req.partitions,
            ctx.config.offset_metadata_max_bytes,
            now_ms,
            expire_timestamp_ms,
            token.0,
        );
        for (_, tp, _) in &written {
            group
                .pending_commits
                .entry(tp.clone())
                .or_default()
                .push(token.0);
        }
        if written.is_empty() {
            ctx.respond(
                request,
                Response::OffsetCommit(OffsetCommitResponse {
                    partitions: results,
                }),
            );
            return out;
        }
        let pending = PendingAppend::OffsetCommit {
            partition,
            request,
            group_id: group.group_id.clone(),
            incarnation: group.incarnation,
            results,
            written,
        };
        ctx.append_with(token, partition, records, pending);
        out
    }

    /// TxnOffsetCommit: a transactional producer commits offsets in its transaction. They are
    /// written as a transactional batch of the producer (a stale epoch is
    /// INVALID_PRODUCER_EPOCH, from the partition's producer state) and become the group's
    /// offsets only when the transaction's COMMIT marker reaches this partition
    /// ([`GroupCoordinator::complete_txn`]). The group is created if it does not exist; a
    /// member id or generation, when given (KIP-447), is checked as for OffsetCommit.
    /// `verification` is the handler's KIP-890 guard, handed to the append as it is.
    pub fn txn_offset_commit(
        &mut self,
        now_ms: i64,
        request: RequestToken,
        producer: (i64, i16),
        verification: Option<u64>,
        req: OffsetCommitRequest,
    ) -> Output {
        let mut out = Output::default();
        let all = |error: Option<GroupError>| req.answer_all(error);
        let partition = match self.check_group(&req.group_id, true) {
            Ok(partition) => partition,
            Err(error) => {
                out.responses
                    .push((request, Response::TxnOffsetCommit(all(Some(error)))));
                return out;
            }
        };
        if !self.groups.contains_key(&req.group_id) {
            self.new_group(&req.group_id, partition, now_ms);
        }
        let mut ctx = ctx!(self, &mut out, now_ms);
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            let error = Some(GroupError::CoordinatorNotAvailable);
            ctx.respond(request, Response::TxnOffsetCommit(all(error)));
            return out;
        };
        let checked =
            req.generation_id >= 0 || !req.member_id.is_empty() || req.group_instance_id.is_some();
        if checked {
            if let Err(error) = validate_offset_commit(group, &req) {
                tracing::debug!(
                    group = %req.group_id,
                    member = %req.member_id,
                    generation = req.generation_id,
                    instance = ?req.group_instance_id,
                    group_generation = group.generation_id,
                    %error,
                    "transactional offset commit refused"
                );
                ctx.respond(request, Response::TxnOffsetCommit(all(Some(error))));
                return out;
            }
        }
        let (results, written, records) = commit_records(
            &group.group_id,
            req.partitions,
            ctx.config.offset_metadata_max_bytes,
            now_ms,
            None,
            0,
        );
        if written.is_empty() {
            ctx.respond(
                request,
                Response::TxnOffsetCommit(OffsetCommitResponse {
                    partitions: results,
                }),
            );
            return out;
        }
        let token = ctx.reserve_token();
        let pending = PendingAppend::TxnOffsetCommit {
            partition,
            request,
            group_id: group.group_id.clone(),
            incarnation: group.incarnation,
            producer_id: producer.0,
            results,
            written,
        };
        ctx.append_with(token, partition, records, pending);
        if let Some(append) = ctx.out.appends.last_mut() {
            append.producer = Some(producer);
            append.verification = verification;
        }
        out
    }

    /// A transaction's marker reached `__consumer_offsets` partition `partition`: a COMMIT
    /// makes the producer's pending offsets the groups' offsets, an ABORT drops them.
    pub fn complete_txn(&mut self, partition: i32, producer_id: i64, commit: bool) {
        for group in self
            .groups
            .values_mut()
            .filter(|g| g.partition == partition)
        {
            let Some(pending) = group.pending_txn_offsets.remove(&producer_id) else {
                continue;
            };
            if commit {
                self.next_seq += 1;
                let seq = self.next_seq;
                for (tp, mut committed) in pending {
                    committed.applied_seq = seq;
                    group.offsets.insert(tp, committed);
                }
            }
        }
    }

    /// OffsetFetch for one group: the given partitions (-1 / "" where nothing is committed),
    /// or every committed partition when `partitions` is `None`. Only confirmed commits are
    /// visible.
    pub fn offset_fetch(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<FetchedOffset>, GroupError> {
        self.offset_fetch_stable(group_id, partitions, false)
    }

    /// [`GroupCoordinator::offset_fetch`]; with `require_stable`, a partition with a
    /// transactional commit waiting for its marker carries UNSTABLE_OFFSET_COMMIT.
    pub fn offset_fetch_stable(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
        require_stable: bool,
    ) -> Result<Vec<FetchedOffset>, GroupError> {
        self.check_group(group_id, true)?;
        let group = self.groups.get(group_id);
        let unstable = |topic: &str, partition: i32| {
            require_stable
                && group.is_some_and(|g| {
                    let tp = (topic.to_string(), partition);
                    g.pending_txn_offsets.values().any(|p| p.contains_key(&tp))
                })
        };
        let fetched =
            |topic: &str, partition: i32, committed: Option<&CommittedOffset>| FetchedOffset {
                topic: topic.to_string(),
                partition,
                offset: committed.map_or(-1, |c| c.offset),
                leader_epoch: committed.map_or(-1, |c| c.leader_epoch),
                metadata: committed.map(|c| c.metadata.clone()).unwrap_or_default(),
                error: unstable(topic, partition).then_some(GroupError::UnstableOffsetCommit),
            };
        Ok(match partitions {
            Some(partitions) => partitions
                .iter()
                .map(|(topic, partition)| {
                    let committed = group.and_then(|g| g.offsets.get(&(topic.clone(), *partition)));
                    fetched(topic, *partition, committed)
                })
                .collect(),
            None => group
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((topic, partition), c)| fetched(topic, *partition, Some(c)))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// OffsetDelete: removes the group's offsets for partitions no active member subscribes
    /// to. The response comes when the tombstones are appended.
    pub fn offset_delete(
        &mut self,
        now_ms: i64,
        request: RequestToken,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Output {
        let mut out = Output::default();
        let group_error = match self.check_group(group_id, true) {
            Err(error) => Some(error),
            Ok(_) => match self.groups.get(group_id) {
                None => Some(GroupError::GroupIdNotFound),
                Some(group) => match group.state() {
                    GroupState::Dead => Some(GroupError::GroupIdNotFound),
                    GroupState::Empty => None,
                    GroupState::PreparingRebalance
                    | GroupState::CompletingRebalance
                    | GroupState::Stable => {
                        if group.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) {
                            None
                        } else {
                            Some(GroupError::NonEmptyGroup)
                        }
                    }
                },
            },
        };
        if let Some(error) = group_error {
            out.responses.push((
                request,
                Response::OffsetDelete(OffsetDeleteResponse {
                    error: Some(error),
                    partitions: Vec::new(),
                }),
            ));
            return out;
        }
        let mut ctx = ctx!(self, &mut out, now_ms);
        let Some(group) = self.groups.get_mut(group_id) else {
            // Unreachable: the group was found above.
            let response = OffsetDeleteResponse {
                error: Some(GroupError::CoordinatorNotAvailable),
                partitions: Vec::new(),
            };
            ctx.respond(request, Response::OffsetDelete(response));
            return out;
        };
        let check_subscription = group.state() != GroupState::Empty;
        let mut response = OffsetDeleteResponse {
            error: None,
            partitions: Vec::with_capacity(partitions.len()),
        };
        let mut records = Vec::new();
        let mut indices = Vec::new();
        for (index, (topic, partition)) in partitions.into_iter().enumerate() {
            if check_subscription && group.is_subscribed_to_topic(&topic) {
                response.partitions.push(PartitionResult {
                    topic,
                    partition,
                    error: Some(GroupError::GroupSubscribedToTopic),
                });
                continue;
            }
            let tp = (topic, partition);
            // A commit still in flight for this partition must not land after the delete.
            let had_pending = group.pending_commits.remove(&tp).is_some();
            if group.offsets.remove(&tp).is_some() || had_pending {
                records.push(offset_record(&group.group_id, &tp.0, tp.1, None));
                indices.push(index);
            }
            response.partitions.push(PartitionResult {
                topic: tp.0,
                partition: tp.1,
                error: None,
            });
        }
        if records.is_empty() {
            ctx.respond(request, Response::OffsetDelete(response));
        } else {
            let partition = group.partition;
            ctx.append(
                partition,
                records,
                PendingAppend::OffsetDelete {
                    partition,
                    request,
                    response,
                    indices,
                },
            );
        }
        out
    }

    // ----- Admin ---------------------------------------------------------------------------

    /// ListGroups, filtered by state names (case-insensitive; empty = all). Lists the groups
    /// of loaded partitions; `COORDINATOR_LOAD_IN_PROGRESS` while any partition loads.
    pub fn list_groups(&self, states_filter: &[String]) -> ListGroupsResponse {
        let loading = self
            .partitions
            .values()
            .any(|status| *status == PartitionStatus::Loading);
        let mut groups: Vec<ListedGroup> = self
            .groups
            .values()
            .filter(|g| self.partitions.get(&g.partition) == Some(&PartitionStatus::Active))
            .filter(|g| {
                states_filter.is_empty()
                    || states_filter.iter().any(|f| g.state().matches_filter(f))
            })
            .map(|g| ListedGroup {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state(),
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        ListGroupsResponse {
            error: loading.then_some(GroupError::CoordinatorLoadInProgress),
            groups,
        }
    }

    /// DescribeGroups for one group. A group that does not exist is described as Dead with no
    /// error, as Kafka does. Metadata and assignments are shown for Stable groups only.
    pub fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let mut described = DescribedGroup {
            error: None,
            group_id: group_id.to_string(),
            state: GroupState::Dead,
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        };
        if let Err(error) = self.check_group(group_id, true) {
            described.error = Some(error);
            return described;
        }
        let Some(group) = self.groups.get(group_id) else {
            return described;
        };
        let stable_protocol = match group.state() {
            GroupState::Stable => group.protocol_name.clone(),
            _ => None,
        };
        described.state = group.state();
        described.protocol_type = group.protocol_type.clone().unwrap_or_default();
        described.protocol_data = stable_protocol.clone().unwrap_or_default();
        described.members = group
            .members()
            .map(|m| {
                let (metadata, assignment) = match &stable_protocol {
                    Some(protocol) => (
                        m.metadata(protocol).cloned().unwrap_or_default(),
                        m.assignment.clone(),
                    ),
                    None => (Bytes::new(), Bytes::new()),
                };
                DescribedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata,
                    assignment,
                }
            })
            .collect();
        described
    }

    /// DeleteGroups: deletes empty groups and their offsets (`NON_EMPTY_GROUP` for others).
    /// The response comes when every tombstone is appended.
    pub fn delete_groups(
        &mut self,
        now_ms: i64,
        request: RequestToken,
        group_ids: Vec<String>,
    ) -> Output {
        let mut out = Output::default();
        let mut response = DeleteGroupsResponse {
            results: Vec::with_capacity(group_ids.len()),
        };
        let mut by_partition: BTreeMap<i32, (Vec<Record>, Vec<usize>)> = BTreeMap::new();
        for (index, group_id) in group_ids.into_iter().enumerate() {
            let error = match self.check_group(&group_id, true) {
                Err(error) => Some(error),
                Ok(_) => match self.groups.get(&group_id).map(Group::state) {
                    None | Some(GroupState::Dead) => Some(GroupError::GroupIdNotFound),
                    Some(GroupState::Empty) => None,
                    Some(_) => Some(GroupError::NonEmptyGroup),
                },
            };
            if error.is_none() {
                if let Some(group) = self.remove_group(&group_id) {
                    let (records, indices) = by_partition.entry(group.partition).or_default();
                    records.extend(group_tombstones(&group));
                    indices.push(index);
                }
            }
            response.results.push((group_id, error));
        }
        if by_partition.is_empty() {
            out.responses
                .push((request, Response::DeleteGroups(response)));
            return out;
        }
        self.next_seq += 1;
        let op = self.next_seq;
        self.pending_deletes.insert(
            op,
            PendingDelete {
                request,
                response,
                remaining: by_partition.len(),
            },
        );
        let mut ctx = ctx!(self, &mut out, now_ms);
        for (partition, (records, indices)) in by_partition {
            ctx.append(
                partition,
                records,
                PendingAppend::DeleteGroups {
                    partition,
                    op,
                    indices,
                },
            );
        }
        out
    }

    /// Removes a group and its timers.
    fn remove_group(&mut self, group_id: &str) -> Option<Group> {
        let group = self.groups.remove(group_id)?;
        cancel_group_timers(&mut self.timers, &group);
        Some(group)
    }

    // ----- Time ----------------------------------------------------------------------------

    /// Runs every timer due at `now_ms`: session expiries, join phase ends, sync deadlines
    /// and the offsets retention check.
    pub fn tick(&mut self, now_ms: i64) -> Output {
        let mut out = Output::default();
        for _ in 0..MAX_TIMERS_PER_TICK {
            let Some(key) = self.timers.pop_due(now_ms) else {
                break;
            };
            match key {
                TimerKey::Retention => {
                    self.retention_scheduled = false;
                    self.expire_offsets(now_ms, &mut out);
                    self.schedule_retention(now_ms);
                }
                TimerKey::Heartbeat {
                    group_id,
                    member_id,
                } => {
                    let mut ctx = ctx!(self, &mut out, now_ms);
                    if let Some(group) = self.groups.get_mut(&group_id) {
                        on_session_expired(group, &mut ctx, &member_id);
                    }
                }
                TimerKey::Join { group_id } => {
                    let mut ctx = ctx!(self, &mut out, now_ms);
                    if let Some(group) = self.groups.get_mut(&group_id) {
                        on_join_deadline(group, &mut ctx);
                    }
                }
                TimerKey::Sync { group_id } => {
                    let mut ctx = ctx!(self, &mut out, now_ms);
                    if let Some(group) = self.groups.get_mut(&group_id) {
                        on_sync_deadline(group, &mut ctx);
                    }
                }
            }
        }
        out
    }

    fn schedule_retention(&mut self, now_ms: i64) {
        if !self.retention_scheduled {
            let interval = self.config.offsets_retention_check_interval_ms.max(1);
            self.timers
                .schedule(TimerKey::Retention, now_ms.saturating_add(interval));
            self.retention_scheduled = true;
        }
    }

    /// A topic was deleted: every served group's committed offsets for it are removed with
    /// tombstones, and an empty group left without offsets is deleted, as Kafka's
    /// `onPartitionsDeleted` does, so that a topic re-created under the same name does not
    /// resume from stale offsets.
    pub fn on_topic_deleted(&mut self, now_ms: i64, topic: &str) -> Output {
        let mut out = Output::default();
        self.cleanup_group_metadata(now_ms, &mut out, |group| {
            group
                .offsets
                .keys()
                .filter(|(t, _)| t == topic)
                .cloned()
                .collect()
        });
        out
    }

    /// Kafka's `cleanupGroupMetadata` on the retention timer: expired offsets get tombstones,
    /// and an empty group left without offsets is deleted.
    fn expire_offsets(&mut self, now_ms: i64, out: &mut Output) {
        let retention_ms = self.config.offsets_retention_ms();
        self.cleanup_group_metadata(now_ms, out, |group| {
            group.expired_offsets(now_ms, retention_ms)
        });
    }

    /// Kafka's `cleanupGroupMetadata`: for every served group, removes the offsets `select`
    /// names (with tombstones) and deletes an empty group left without offsets, in one append
    /// per group.
    fn cleanup_group_metadata(
        &mut self,
        now_ms: i64,
        out: &mut Output,
        select: impl Fn(&Group) -> Vec<TopicPartition>,
    ) {
        let mut ids: Vec<String> = self
            .groups
            .values()
            .filter(|g| self.partitions.get(&g.partition) == Some(&PartitionStatus::Active))
            .map(|g| g.group_id.clone())
            .collect();
        ids.sort();
        for group_id in ids {
            let Some(group) = self.groups.get_mut(&group_id) else {
                continue;
            };
            let mut records = Vec::new();
            for tp in select(group) {
                group.offsets.remove(&tp);
                records.push(offset_record(&group_id, &tp.0, tp.1, None));
            }
            let delete_group = group.state() == GroupState::Empty
                && !group.has_offsets()
                && group.pending_join_members.is_empty();
            let partition = group.partition;
            if delete_group {
                records.push(group_metadata_record(&group_id, None));
                self.remove_group(&group_id);
            }
            if !records.is_empty() {
                let mut ctx = ctx!(self, &mut *out, now_ms);
                ctx.append(partition, records, PendingAppend::Unobserved { partition });
            }
        }
    }

    // ----- Appends -------------------------------------------------------------------------

    /// The caller finished the append `token`: applies it (or undoes what depended on it)
    /// and releases the responses that waited for it. Unknown tokens are ignored.
    pub fn complete(
        &mut self,
        now_ms: i64,
        token: AppendToken,
        result: Result<(), AppendError>,
    ) -> Output {
        let mut out = Output::default();
        let Some(pending) = self.pending_appends.remove(&token) else {
            return out;
        };
        match pending {
            PendingAppend::Unobserved { partition } => {
                if let Err(error) = result {
                    tracing::warn!(partition, %error, "group coordinator append failed");
                }
            }
            PendingAppend::SyncAssignment {
                group_id,
                incarnation,
                generation_id,
                assignment,
                ..
            } => {
                let mut ctx = ctx!(self, &mut out, now_ms);
                let group = self
                    .groups
                    .get_mut(&group_id)
                    .filter(|g| g.incarnation == incarnation);
                // A member may have joined (or left) while the append ran: then the group has
                // moved on and this assignment is moot.
                if let Some(group) = group.filter(|g| {
                    g.state() == GroupState::CompletingRebalance && g.generation_id == generation_id
                }) {
                    match result {
                        Ok(()) => {
                            set_and_propagate_assignment(group, &mut ctx, &assignment);
                            group.transition_to(GroupState::Stable, now_ms);
                        }
                        Err(error) => {
                            reset_and_propagate_assignment_error(
                                group,
                                &mut ctx,
                                error.for_group_metadata(),
                            );
                            maybe_prepare_rebalance_or_complete_join(group, &mut ctx);
                        }
                    }
                }
            }
            PendingAppend::StaticReplace(replace) => {
                let mut ctx = ctx!(self, &mut out, now_ms);
                if let Some(group) = self
                    .groups
                    .get_mut(&replace.group_id)
                    .filter(|g| g.incarnation == replace.incarnation)
                {
                    complete_static_replace(group, &mut ctx, *replace, result);
                }
            }
            PendingAppend::OffsetCommit {
                request,
                group_id,
                incarnation,
                mut results,
                written,
                ..
            } => {
                let group = self
                    .groups
                    .get_mut(&group_id)
                    .filter(|g| g.incarnation == incarnation);
                if let Some(group) = group {
                    // Drop this append from the in-flight lists; only partitions it was still
                    // in flight for (not deleted or expired since) are applied.
                    let mut still_pending: Vec<&TopicPartition> = Vec::new();
                    for (_, tp, _) in &written {
                        if let Some(seqs) = group.pending_commits.get_mut(tp) {
                            let before = seqs.len();
                            seqs.retain(|seq| *seq != token.0);
                            if seqs.len() != before {
                                still_pending.push(tp);
                            }
                            if seqs.is_empty() {
                                group.pending_commits.remove(tp);
                            }
                        }
                    }
                    if result.is_ok() {
                        // In request order, so a partition named twice ends as the log does.
                        for (_, tp, committed) in &written {
                            let newer = group
                                .offsets
                                .get(tp)
                                .is_none_or(|current| current.applied_seq <= committed.applied_seq);
                            if newer && still_pending.contains(&tp) {
                                group.offsets.insert(tp.clone(), committed.clone());
                            }
                        }
                    }
                }
                if let Err(error) = result {
                    for (index, _, _) in &written {
                        if let Some(r) = results.get_mut(*index) {
                            r.error = Some(error.for_offset_commit());
                        }
                    }
                }
                out.responses.push((
                    request,
                    Response::OffsetCommit(OffsetCommitResponse {
                        partitions: results,
                    }),
                ));
            }
            PendingAppend::TxnOffsetCommit {
                request,
                group_id,
                incarnation,
                producer_id,
                mut results,
                written,
                ..
            } => {
                match result {
                    Ok(()) => {
                        if let Some(group) = self
                            .groups
                            .get_mut(&group_id)
                            .filter(|g| g.incarnation == incarnation)
                        {
                            let pending = group.pending_txn_offsets.entry(producer_id).or_default();
                            for (_, tp, committed) in written {
                                pending.insert(tp, committed);
                            }
                        }
                    }
                    Err(error) => {
                        for (index, _, _) in &written {
                            if let Some(r) = results.get_mut(*index) {
                                r.error = Some(error.for_txn_offset_commit());
                            }
                        }
                    }
                }
                out.responses.push((
                    request,
                    Response::TxnOffsetCommit(OffsetCommitResponse {
                        partitions: results,
                    }),
                ));
            }
            PendingAppend::DeleteGroups { op, indices, .. } => {
                if let Some(delete) = self.pending_deletes.get_mut(&op) {
                    if let Err(error) = result {
                        for index in indices {
                            if let Some((_, e)) = delete.response.results.get_mut(index) {
                                *e = Some(error.for_group_metadata());
                            }
                        }
                    }
                    delete.remaining = delete.remaining.saturating_sub(1);
                    if delete.remaining == 0 {
                        if let Some(delete) = self.pending_deletes.remove(&op) {
                            out.responses
                                .push((delete.request, Response::DeleteGroups(delete.response)));
                        }
                    }
                }
            }
            PendingAppend::OffsetDelete {
                request,
                mut response,
                indices,
                ..
            } => {
                if let Err(error) = result {
                    for index in indices {
                        if let Some(p) = response.partitions.get_mut(index) {
                            p.error = Some(error.for_group_metadata());
                        }
                    }
                }
                out.responses
                    .push((request, Response::OffsetDelete(response)));
            }
        }
        out
    }

    // ----- Loading -------------------------------------------------------------------------

    /// Starts loading a `__consumer_offsets` partition this broker now leads; its groups answer
    /// `COORDINATOR_LOAD_IN_PROGRESS` until `finish_loading`. If it was loaded already it is
    /// unloaded first (the returned `Output` answers what was waiting).
    pub fn begin_loading(&mut self, partition: i32) -> Output {
        let out = if self.partitions.contains_key(&partition) {
            self.unload(partition)
        } else {
            Output::default()
        };
        self.partitions.insert(partition, PartitionStatus::Loading);
        out
    }

    /// Replays one record of a loading partition, in log order: a value sets the key, a
    /// tombstone deletes it.
    pub fn replay(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), ReplayError> {
        if self.partitions.get(&partition) != Some(&PartitionStatus::Loading) {
            return Err(ReplayError::NotLoading(partition));
        }
        let record = CoordinatorRecord::decode(key, value)?;
        let expected = self.partition_for(record.group_id());
        if expected != partition {
            return Err(ReplayError::WrongPartition {
                group: record.group_id().to_string(),
                expected,
                actual: partition,
            });
        }
        match record {
            CoordinatorRecord::OffsetCommit { key, value } => match value {
                Some(value) => {
                    if !self.groups.contains_key(&key.group) {
                        self.new_group(&key.group, partition, -1);
                        if let Some(group) = self.groups.get_mut(&key.group) {
                            group.state_timestamp_ms = None;
                        }
                    }
                    if let Some(group) = self.groups.get_mut(&key.group) {
                        group.offsets.insert(
                            (key.topic, key.partition),
                            CommittedOffset {
                                offset: value.offset,
                                leader_epoch: value.leader_epoch,
                                metadata: value.metadata,
                                commit_timestamp_ms: value.commit_timestamp_ms,
                                expire_timestamp_ms: value.expire_timestamp_ms,
                                applied_seq: 0,
                            },
                        );
                    }
                }
                None => {
                    if let Some(group) = self.groups.get_mut(&key.group) {
                        group.offsets.remove(&(key.topic, key.partition));
                    }
                }
            },
            CoordinatorRecord::GroupMetadata { group, value } => match value {
                Some(value) => {
                    if !self.groups.contains_key(&group) {
                        self.new_group(&group, partition, -1);
                    }
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.load_metadata(value);
                    }
                }
                None => {
                    let keep_offsets = self.groups.get(&group).is_some_and(Group::has_offsets);
                    if keep_offsets {
                        if let Some(g) = self.groups.get_mut(&group) {
                            g.reset_to_blank();
                        }
                    } else {
                        self.groups.remove(&group);
                    }
                }
            },
        }
        Ok(())
    }

    /// Replays a transactional offset commit record of a loading partition (written by
    /// TxnOffsetCommit for `producer_id`): pending until the transaction's marker, which the
    /// replay passes to [`GroupCoordinator::complete_txn`].
    pub fn replay_txn(
        &mut self,
        partition: i32,
        producer_id: i64,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), ReplayError> {
        if self.partitions.get(&partition) != Some(&PartitionStatus::Loading) {
            return Err(ReplayError::NotLoading(partition));
        }
        if let CoordinatorRecord::OffsetCommit {
            key,
            value: Some(value),
        } = CoordinatorRecord::decode(key, value)?
        {
            if !self.groups.contains_key(&key.group) {
                self.new_group(&key.group, partition, -1);
                if let Some(group) = self.groups.get_mut(&key.group) {
                    group.state_timestamp_ms = None;
                }
            }
            if let Some(group) = self.groups.get_mut(&key.group) {
                group
                    .pending_txn_offsets
                    .entry(producer_id)
                    .or_default()
                    .insert(
                        (key.topic, key.partition),
                        CommittedOffset {
                            offset: value.offset,
                            leader_epoch: value.leader_epoch,
                            metadata: value.metadata,
                            commit_timestamp_ms: value.commit_timestamp_ms,
                            expire_timestamp_ms: value.expire_timestamp_ms,
                            applied_seq: 0,
                        },
                    );
            }
        }
        Ok(())
    }

    /// Ends loading: the partition's groups are served, every member's session starts now,
    /// and a group larger than `group.max.size` rebalances (the setting may have shrunk).
    pub fn finish_loading(&mut self, partition: i32, now_ms: i64) -> Output {
        let mut out = Output::default();
        self.partitions.insert(partition, PartitionStatus::Active);
        self.schedule_retention(now_ms);
        let ids: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.partition == partition)
            .map(|g| g.group_id.clone())
            .collect();
        let mut ctx = ctx!(self, &mut out, now_ms);
        for group_id in ids {
            let Some(group) = self.groups.get_mut(&group_id) else {
                continue;
            };
            for member_id in group.member_ids() {
                ctx.refresh_session(group, &member_id);
            }
            if group.num_members() > ctx.config.group_max_size {
                tracing::info!(group = %group_id, "loaded group is over group.max.size; rebalancing");
                prepare_rebalance(group, &mut ctx);
            }
        }
        out
    }

    /// Stops serving a partition (leadership moved): its groups are dropped, and everything
    /// that waited on them is answered `NOT_COORDINATOR`.
    pub fn unload(&mut self, partition: i32) -> Output {
        let mut out = Output::default();
        self.partitions.remove(&partition);
        let ids: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.partition == partition)
            .map(|g| g.group_id.clone())
            .collect();
        for group_id in ids {
            let Some(group) = self.remove_group(&group_id) else {
                continue;
            };
            for member in group.members() {
                if let Some(token) = member.awaiting_join() {
                    out.responses.push((
                        token,
                        Response::JoinGroup(JoinGroupResponse::error(
                            &member.member_id,
                            GroupError::NotCoordinator,
                        )),
                    ));
                }
                if let Some(token) = member.awaiting_sync {
                    out.responses.push((
                        token,
                        Response::SyncGroup(SyncGroupResponse::error(GroupError::NotCoordinator)),
                    ));
                }
            }
        }
        let mut tokens: Vec<AppendToken> = self
            .pending_appends
            .iter()
            .filter(|(_, p)| p.partition() == partition)
            .map(|(token, _)| *token)
            .collect();
        tokens.sort();
        for token in tokens {
            out.extend(self.complete(0, token, Err(AppendError::NotLeader)));
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.timers.check_invariants();
        for (id, group) in &self.groups {
            assert_eq!(id, &group.group_id);
            assert_eq!(group.partition, self.partition_for(id));
            assert!(self.partitions.contains_key(&group.partition));
            assert_ne!(group.state(), GroupState::Dead);
            group.check_invariants();
            if self.partitions.get(&group.partition) == Some(&PartitionStatus::Active) {
                for member in group.members() {
                    let key = TimerKey::Heartbeat {
                        group_id: id.clone(),
                        member_id: member.member_id.clone(),
                    };
                    assert!(
                        self.timers.deadline(&key).is_some() || member.has_satisfied_heartbeat(),
                        "member {} of {id} has no session timer",
                        member.member_id
                    );
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }
}

// ----- Steps on one group ------------------------------------------------------------------

fn cancel_group_timers(timers: &mut Timers, group: &Group) {
    let group_id = group.group_id.clone();
    timers.cancel(&TimerKey::Join {
        group_id: group_id.clone(),
    });
    timers.cancel(&TimerKey::Sync {
        group_id: group_id.clone(),
    });
    for member_id in group
        .member_ids()
        .into_iter()
        .chain(group.pending_join_members.iter().cloned())
    {
        timers.cancel(&TimerKey::Heartbeat {
            group_id: group_id.clone(),
            member_id,
        });
    }
}

fn offset_record(
    group_id: &str,
    topic: &str,
    partition: i32,
    committed: Option<&CommittedOffset>,
) -> Record {
    CoordinatorRecord::OffsetCommit {
        key: OffsetCommitKey {
            group: group_id.to_string(),
            topic: topic.to_string(),
            partition,
        },
        value: committed.map(|c| OffsetCommitValue {
            offset: c.offset,
            leader_epoch: c.leader_epoch,
            metadata: c.metadata.clone(),
            commit_timestamp_ms: c.commit_timestamp_ms,
            expire_timestamp_ms: c.expire_timestamp_ms,
        }),
    }
    .encode()
}

fn group_metadata_record(
    group_id: &str,
    value: Option<crate::group::records::GroupMetadataValue>,
) -> Record {
    CoordinatorRecord::GroupMetadata {
        group: group_id.to_string(),
        value,
    }
    .encode()
}

/// Tombstones for every offset of a deleted group, then for the group.
fn group_tombstones(group: &Group) -> Vec<Record> {
    let mut records: Vec<Record> = group
        .offsets
        .keys()
        .chain(
            group
                .pending_commits
                .keys()
                .filter(|tp| !group.offsets.contains_key(*tp)),
        )
        .map(|(topic, partition)| offset_record(&group.group_id, topic, *partition, None))
        .collect();
    records.push(group_metadata_record(&group.group_id, None));
    records
}

/// The JoinGroup response for a member of the current generation.
fn current_join_response(group: &Group, member_id: &str, with_members: bool) -> JoinGroupResponse {
    JoinGroupResponse {
        error: None,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader_id().unwrap_or_default().to_string(),
        skip_assignment: false,
        member_id: member_id.to_string(),
        members: if with_members {
            group.current_member_metadata()
        } else {
            Vec::new()
        },
    }
}

/// Kafka's `acceptJoiningMember`: the size limit counts members waiting in JoinGroup during a
/// rebalance (the group may be over the limit if it shrank), and members otherwise.
fn accept_joining_member(group: &Group, member_id: &str, max_size: usize) -> bool {
    match group.state() {
        GroupState::Empty | GroupState::Dead => true,
        GroupState::PreparingRebalance => {
            group
                .member(member_id)
                .is_some_and(|m| m.awaiting_join().is_some())
                || group.num_awaiting_join() < max_size
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            group.has_member(member_id) || group.num_members() < max_size
        }
    }
}

fn join(group: &mut Group, ctx: &mut Ctx<'_>, request: RequestToken, req: &JoinGroupRequest) {
    if !accept_joining_member(group, &req.member_id, ctx.config.group_max_size) {
        if group.pending_join_members.remove(&req.member_id) {
            ctx.cancel_heartbeat(&group.group_id, &req.member_id);
        }
        if group.has_member(&req.member_id) {
            remove_member_and_update_group(group, ctx, &req.member_id);
        } else {
            maybe_complete_join_phase(group, ctx);
        }
        ctx.respond_join(
            request,
            JoinGroupResponse::error("", GroupError::GroupMaxSizeReached),
        );
    } else if req.member_id.is_empty() {
        join_new_member(group, ctx, request, req);
    } else {
        join_existing_member(group, ctx, request, req);
    }
}

fn join_new_member(
    group: &mut Group,
    ctx: &mut Ctx<'_>,
    request: RequestToken,
    req: &JoinGroupRequest,
) {
    if !group.supports_protocols(&req.protocol_type, &req.protocols) {
        ctx.respond_join(
            request,
            JoinGroupResponse::error("", GroupError::InconsistentGroupProtocol),
        );
        return;
    }
    let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
    let new_member_id = format!("{prefix}-{}", ctx.ids.next());
    if let Some(instance_id) = &req.group_instance_id {
        match group.static_member_id(instance_id).map(str::to_string) {
            Some(old_member_id) => {
                update_static_member(group, ctx, request, req, &old_member_id, &new_member_id)
            }
            None => add_member_and_rebalance(group, ctx, request, req, new_member_id),
        }
    } else if req.api_version >= 4 {
        // The member must come back with this id; until then it holds up the join phase (for
        // at most its session timeout).
        group.pending_join_members.insert(new_member_id.clone());
        ctx.schedule_heartbeat(
            &group.group_id,
            &new_member_id,
            i64::from(req.session_timeout_ms),
        );
        ctx.respond_join(
            request,
            JoinGroupResponse::error(&new_member_id, GroupError::MemberIdRequired),
        );
    } else {
        add_member_and_rebalance(group, ctx, request, req, new_member_id);
    }
}

fn join_existing_member(
    group: &mut Group,
    ctx: &mut Ctx<'_>,
    request: RequestToken,
    req: &JoinGroupRequest,
) {
    let member_id = req.member_id.as_str();
    if !group.supports_protocols(&req.protocol_type, &req.protocols) {
        ctx.respond_join(
            request,
            JoinGroupResponse::error(member_id, GroupError::InconsistentGroupProtocol),
        );
        return;
    }
    if group.pending_join_members.contains(member_id) && req.group_instance_id.is_none() {
        add_member_and_rebalance(group, ctx, request, req, member_id.to_string());
        return;
    }
    if let Err(error) = group.validate_member(member_id, req.group_instance_id.as_deref()) {
        ctx.respond_join(request, JoinGroupResponse::error(member_id, error));
        return;
    }
    let matches = group
        .member(member_id)
        .is_some_and(|m| m.matches(&req.protocols));
    match group.state() {
        GroupState::PreparingRebalance => update_member_and_rebalance(group, ctx, request, req),
        GroupState::CompletingRebalance if matches => {
            // A retry of a join whose response was lost: answer with the current generation.
            let response = current_join_response(group, member_id, group.is_leader(member_id));
            ctx.respond_join(request, response);
            ctx.refresh_session(group, member_id);
        }
        GroupState::Stable if matches && !group.is_leader(member_id) => {
            let response = current_join_response(group, member_id, false);
            ctx.respond_join(request, response);
            ctx.refresh_session(group, member_id);
        }
        // Changed metadata, or the leader asking for a rebalance (it saw topic metadata
        // change, which member metadata does not show).
        GroupState::CompletingRebalance | GroupState::Stable => {
            update_member_and_rebalance(group, ctx, request, req)
        }
        GroupState::Empty | GroupState::Dead => ctx.respond_join(
            request,
            JoinGroupResponse::error(member_id, GroupError::UnknownMemberId),
        ),
    }
}

fn add_member_and_rebalance(
    group: &mut Group,
    ctx: &mut Ctx<'_>,
    request: RequestToken,
    req: &JoinGroupRequest,
    member_id: String,
) {
    let mut member = Member::new(
        MemberInit {
            member_id: member_id.clone(),
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols.clone(),
        },
        Bytes::new(),
    );
    member.is_new = true;
    if group.state() == GroupState::PreparingRebalance
        && group.previous_state() == GroupState::Empty
    {
        group.new_member_added = true;
    }
    group.add_member(member, Some(request));
    // A new member cannot heartbeat (it has no id yet) and its JoinGroup may have been
    // abandoned by a client that timed out: drop it if the join phase outlasts this.
    ctx.schedule_heartbeat(
        &group.group_id,
        &member_id,
        ctx.config.new_member_join_timeout_ms,
    );
    maybe_prepare_rebalance_or_complete_join(group, ctx);
}

fn update_member_and_rebalance(
    group: &mut Group,
    ctx: &mut Ctx<'_>,
    request: RequestToken,
    req: &JoinGroupRequest,
) {
    let superseded = group.update_member(
        &req.member_id,
        req.protocols.clone(),
        req.rebalance_timeout_ms,
        req.session_timeout_ms,
        Some(request),
    );
    if let Some(old) = superseded.filter(|old| *old != request) {
        ctx.respond_join(
            old,
            JoinGroupResponse::error(&req.member_id, GroupError::RebalanceInProgress),
        );
    }
    maybe_prepare_rebalance_or_complete_join(group, ctx);
}

/// Whether a consumer's subscribed topics differ between two protocol lists, for the selected
/// protocol. Other protocol types, and unparseable metadata, count as unchanged (Kafka checks
/// only the selected protocol).
fn subscription_changed(group: &Group, old: &[Protocol], new: &[Protocol]) -> bool {
    if group.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
        return false;
    }
    let Some(protocol) = group.protocol_name.as_deref() else {
        return false;
    };
    let topics = |protocols: &[Protocol]| {
        protocols
            .iter()
            .find(|p| p.name == protocol)
            .and_then(|p| parse_subscription_topics(&p.metadata))
            .map(|mut topics| {
                topics.sort();
                topics.dedup();
                topics
            })
    };
    match (topics(old), topics(new)) {
        (Some(old), Some(new)) => old != new,
        _ => false,
    }
}

/// KIP-345: a known static member (group.instance.id) rejoins with an unknown member id (it
/// restarted). It takes over the old member's place and assignment under a new member id; the
/// old id is fenced. In a Stable group whose selected protocol and subscription do not change,
/// there is no rebalance: the new id is persisted and the member told the current generation.
fn update_static_member(
    group: &mut Group,
    ctx: &mut Ctx<'_>,
    request: RequestToken,
    req: &JoinGroupRequest,
    old_member_id: &str,
    new_member_id: &str,
) {
    // This let and the two below hold by construction (only static joins come here, and the
    // member was just renamed); the fallbacks still answer so no token is left hanging.
    let Some(instance_id) = req.group_instance_id.clone() else {
        ctx.respond_join(
            request,
            JoinGroupResponse::error("", GroupError::UnknownMemberId),
        );
        return;
    };
    let leader_before = group.leader_id().map(str::to_string);
    let Some((fenced_join, fenced_sync)) =
        group.replace_static_member(&instance_id, old_member_id, new_member_id)
    else {
        ctx.respond_join(
            request,
            JoinGroupResponse::error("", GroupError::UnknownMemberId),
        );
        return;
    };
    if let Some(token) = fenced_join {
        ctx.respond_join(
            token,
            JoinGroupResponse::error(old_member_id, GroupError::FencedInstanceId),
        );
    }
    if let Some(token) = fenced_sync {
        ctx.respond_sync(
            token,
            SyncGroupResponse::error(GroupError::FencedInstanceId),
        );
    }
    ctx.cancel_heartbeat(&group.group_id, old_member_id);
    let Some((old_protocols, old_rebalance_timeout_ms, old_session_timeout_ms)) =
        group.member(new_member_id).map(|m| {
            (
                m.protocols().to_vec(),
                m.rebalance_timeout_ms,
                m.session_timeout_ms,
            )
        })
    else {
        ctx.respond_join(
            request,
            JoinGroupResponse::error("", GroupError::UnknownMemberId),
        );
        return;
    };
    group.update_member(
        new_member_id,
        req.protocols.clone(),
        req.rebalance_timeout_ms,
        req.session_timeout_ms,
        Some(request),
    );
    ctx.refresh_session(group, new_member_id);
    match group.state() {
        GroupState::Stable => {
            let unchanged = group.select_protocol() == group.protocol_name
                && !subscription_changed(group, &old_protocols, &req.protocols);
            if unchanged {
                let value = group.to_metadata_value(None);
                let partition = group.partition;
                ctx.append(
                    partition,
                    vec![group_metadata_record(&group.group_id, Some(value))],
                    PendingAppend::StaticReplace(Box::new(StaticReplace {
                        partition,
                        group_id: group.group_id.clone(),
                        incarnation: group.incarnation,
                        generation_id: group.generation_id,
                        group_instance_id: instance_id,
                        old_member_id: old_member_id.to_string(),
                        new_member_id: new_member_id.to_string(),
                        old_protocols,
                        old_rebalance_timeout_ms,
                        old_session_timeout_ms,
                        leader_before,
                        supports_skip_assignment: req.api_version >= 9,
                    })),
                );
            } else {
                prepare_rebalance(group, ctx);
            }
        }
        // The leader may already be assigning with the old member id: rebalance so the new
        // id gets an assignment.
        GroupState::CompletingRebalance => prepare_rebalance(group, ctx),
        GroupState::PreparingRebalance => maybe_complete_join_phase(group, ctx),
        // A static member exists only in a group with members.
        GroupState::Empty | GroupState::Dead => {}
    }
}

fn complete_static_replace(
    group: &mut Group,
    ctx: &mut Ctx<'_>,
    replace: StaticReplace,
    result: Result<(), AppendError>,
) {
    let new_id = replace.new_member_id.as_str();
    match result {
        Ok(()) => {
            // If a rebalance began meanwhile, the member's JoinGroup is answered by it instead.
            if group.state() != GroupState::Stable {
                return;
            }
            let Some(token) = group.take_awaiting_join(new_id) else {
                return;
            };
            let response = if replace.supports_skip_assignment {
                // v9+: a static leader is told it leads, with the members, but skips the
                // assignment (the group is Stable and assignors are not idempotent).
                let is_leader = group.is_leader(new_id);
                let mut response = current_join_response(group, new_id, is_leader);
                response.skip_assignment = is_leader;
                response
            } else {
                let mut response = current_join_response(group, new_id, false);
                response.leader = replace.leader_before.clone().unwrap_or_default();
                response
            };
            ctx.respond_join(token, response);
            ctx.refresh_session(group, new_id);
        }
        Err(error) => {
            let still_replaced = group.state() == GroupState::Stable
                && group.generation_id == replace.generation_id
                && group.static_member_id(&replace.group_instance_id) == Some(new_id);
            if !still_replaced {
                return;
            }
            // The new member id was not persisted: undo, so the old id stays valid.
            let token = group.update_member(
                new_id,
                replace.old_protocols.clone(),
                replace.old_rebalance_timeout_ms,
                replace.old_session_timeout_ms,
                None,
            );
            group.replace_static_member(&replace.group_instance_id, new_id, &replace.old_member_id);
            ctx.cancel_heartbeat(&group.group_id, new_id);
            ctx.refresh_session(group, &replace.old_member_id);
            if let Some(token) = token {
                let mut response = JoinGroupResponse::error("", error.for_group_metadata());
                response.generation_id = group.generation_id;
                response.protocol_type = group.protocol_type.clone();
                response.protocol_name = group.protocol_name.clone();
                response.leader = replace.leader_before.unwrap_or_default();
                ctx.respond_join(token, response);
            }
        }
    }
}

fn maybe_prepare_rebalance_or_complete_join(group: &mut Group, ctx: &mut Ctx<'_>) {
    if group.can_rebalance() {
        prepare_rebalance(group, ctx);
    } else {
        maybe_complete_join_phase(group, ctx);
    }
}

fn maybe_prepare_rebalance(group: &mut Group, ctx: &mut Ctx<'_>) {
    if group.can_rebalance() {
        prepare_rebalance(group, ctx);
    }
}

/// Starts a join phase. From Empty it is Kafka's initial delayed join
/// (`group.initial.rebalance.delay.ms`, extended by new members up to the rebalance timeout,
/// never ended early); otherwise it ends when every member rejoined or the rebalance timeout
/// (the largest of the members') passes.
fn prepare_rebalance(group: &mut Group, ctx: &mut Ctx<'_>) {
    if group.state() == GroupState::CompletingRebalance {
        reset_and_propagate_assignment_error(group, ctx, GroupError::RebalanceInProgress);
    }
    ctx.cancel_sync(&group.group_id);
    group.sync_generation = None;
    let initial = group.state() == GroupState::Empty;
    if initial {
        let delay_ms = i64::from(ctx.config.group_initial_rebalance_delay_ms.max(0));
        let remaining_ms = (group.rebalance_timeout_ms() - delay_ms).max(0);
        group.join_phase = Some(JoinPhase::InitialDelay {
            delay_ms,
            remaining_ms,
        });
        group.new_member_added = false;
        ctx.schedule_join(&group.group_id, delay_ms);
    } else {
        group.join_phase = Some(JoinPhase::Rebalance);
        ctx.schedule_join(&group.group_id, group.rebalance_timeout_ms());
    }
    group.transition_to(GroupState::PreparingRebalance, ctx.now_ms);
    tracing::debug!(group = %group.group_id, generation = group.generation_id, "preparing rebalance");
    if !initial {
        maybe_complete_join_phase(group, ctx);
    }
}

fn maybe_complete_join_phase(group: &mut Group, ctx: &mut Ctx<'_>) {
    if group.state() == GroupState::PreparingRebalance
        && group.has_all_members_joined()
        && group.previous_state() != GroupState::Empty
    {
        complete_join(group, ctx);
    }
}

/// Ends the join phase: dynamic members that did not rejoin are removed (static ones keep
/// their place until their session expires), the next generation starts, and every waiting
/// JoinGroup is answered (the leader's with all members' metadata).
fn complete_join(group: &mut Group, ctx: &mut Ctx<'_>) {
    ctx.cancel_join(&group.group_id);
    group.join_phase = None;
    group.new_member_added = false;
    for (member_id, is_static) in group.not_yet_rejoined_members() {
        if !is_static {
            detach_member(group, ctx, &member_id);
        }
    }
    if !group.maybe_elect_new_joined_leader() && group.num_members() > 0 {
        // Only static members remain and none rejoined: wait another rebalance timeout, by
        // when their sessions may have expired.
        tracing::warn!(group = %group.group_id, "no member rejoined; extending the join phase");
        group.join_phase = Some(JoinPhase::Rebalance);
        ctx.schedule_join(&group.group_id, group.rebalance_timeout_ms());
        return;
    }
    group.init_next_generation(ctx.now_ms);
    if group.state() == GroupState::Empty {
        let value = group.to_metadata_value(None);
        let partition = group.partition;
        ctx.append(
            partition,
            vec![group_metadata_record(&group.group_id, Some(value))],
            PendingAppend::Unobserved { partition },
        );
        return;
    }
    tracing::debug!(
        group = %group.group_id,
        generation = group.generation_id,
        members = group.num_members(),
        "join phase complete"
    );
    for member_id in group.member_ids() {
        if let Some(token) = group.take_awaiting_join(&member_id) {
            let response = current_join_response(group, &member_id, group.is_leader(&member_id));
            ctx.respond_join(token, response);
        }
        ctx.refresh_session(group, &member_id);
        if let Some(member) = group.member_mut(&member_id) {
            member.is_new = false;
        }
        group.add_pending_sync_member(&member_id);
    }
    group.sync_generation = Some(group.generation_id);
    ctx.schedule_sync(&group.group_id, group.rebalance_timeout_ms());
}

/// Removes a member, answering its pending JoinGroup and SyncGroup with `UNKNOWN_MEMBER_ID`
/// (so a live client rejoins), without starting a rebalance.
fn detach_member(group: &mut Group, ctx: &mut Ctx<'_>, member_id: &str) {
    if let Some(member) = group.remove_member(member_id) {
        if let Some(token) = member.awaiting_join() {
            ctx.respond_join(
                token,
                JoinGroupResponse::error("", GroupError::UnknownMemberId),
            );
        }
        if let Some(token) = member.awaiting_sync {
            ctx.respond_sync(token, SyncGroupResponse::error(GroupError::UnknownMemberId));
        }
    }
    ctx.cancel_heartbeat(&group.group_id, member_id);
}

/// Removes a member that left or expired and moves the group on: a rebalance from Stable or
/// CompletingRebalance, a possible end of the join phase from PreparingRebalance.
fn remove_member_and_update_group(group: &mut Group, ctx: &mut Ctx<'_>, member_id: &str) {
    detach_member(group, ctx, member_id);
    match group.state() {
        GroupState::Empty | GroupState::Dead => {}
        GroupState::Stable | GroupState::CompletingRebalance => maybe_prepare_rebalance(group, ctx),
        GroupState::PreparingRebalance => maybe_complete_join_phase(group, ctx),
    }
}

fn reset_and_propagate_assignment_error(group: &mut Group, ctx: &mut Ctx<'_>, error: GroupError) {
    for member_id in group.member_ids() {
        let token = group.member_mut(&member_id).and_then(|member| {
            member.assignment = Bytes::new();
            member.awaiting_sync.take()
        });
        if let Some(token) = token {
            ctx.respond_sync(token, SyncGroupResponse::error(error));
            ctx.refresh_session(group, &member_id);
        }
    }
}

fn set_and_propagate_assignment(
    group: &mut Group,
    ctx: &mut Ctx<'_>,
    assignment: &HashMap<String, Bytes>,
) {
    let protocol_type = group.protocol_type.clone();
    let protocol_name = group.protocol_name.clone();
    for member_id in group.member_ids() {
        let assigned = assignment.get(&member_id).cloned().unwrap_or_default();
        let token = group.member_mut(&member_id).and_then(|member| {
            member.assignment = assigned.clone();
            member.awaiting_sync.take()
        });
        if let Some(token) = token {
            ctx.respond_sync(
                token,
                SyncGroupResponse {
                    error: None,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: assigned,
                },
            );
            ctx.refresh_session(group, &member_id);
        }
    }
}

fn sync(group: &mut Group, ctx: &mut Ctx<'_>, request: RequestToken, req: SyncGroupRequest) {
    let member_id = req.member_id.as_str();
    let inconsistent = |requested: &Option<String>, actual: &Option<String>| matches!((requested, actual), (Some(r), Some(a)) if r != a);
    let error = if group.state() == GroupState::Empty {
        Some(GroupError::UnknownMemberId)
    } else if let Err(error) = group.validate_member(member_id, req.group_instance_id.as_deref()) {
        Some(error)
    } else if req.generation_id != group.generation_id {
        Some(GroupError::IllegalGeneration)
    } else if inconsistent(&req.protocol_type, &group.protocol_type)
        || inconsistent(&req.protocol_name, &group.protocol_name)
    {
        Some(GroupError::InconsistentGroupProtocol)
    } else {
        None
    };
    if let Some(error) = error {
        ctx.respond_sync(request, SyncGroupResponse::error(error));
        return;
    }
    match group.state() {
        GroupState::Empty | GroupState::Dead => ctx.respond_sync(
            request,
            SyncGroupResponse::error(GroupError::UnknownMemberId),
        ),
        GroupState::PreparingRebalance => ctx.respond_sync(
            request,
            SyncGroupResponse::error(GroupError::RebalanceInProgress),
        ),
        GroupState::CompletingRebalance => {
            let superseded = group
                .member_mut(member_id)
                .and_then(|m| m.awaiting_sync.replace(request));
            if let Some(old) = superseded.filter(|old| *old != request) {
                ctx.respond_sync(
                    old,
                    SyncGroupResponse::error(GroupError::RebalanceInProgress),
                );
            }
            if group.remove_pending_sync_member(member_id) {
                ctx.cancel_sync(&group.group_id);
            }
            ctx.refresh_session(group, member_id);
            if group.is_leader(member_id) {
                // Members the leader left out get an empty assignment.
                let mut assignment: HashMap<String, Bytes> = HashMap::new();
                for (id, bytes) in req.assignments {
                    if group.has_member(&id) {
                        assignment.insert(id, bytes);
                    }
                }
                for id in group.member_ids() {
                    assignment.entry(id).or_default();
                }
                let value = group.to_metadata_value(Some(&assignment));
                let partition = group.partition;
                ctx.append(
                    partition,
                    vec![group_metadata_record(&group.group_id, Some(value))],
                    PendingAppend::SyncAssignment {
                        partition,
                        group_id: group.group_id.clone(),
                        incarnation: group.incarnation,
                        generation_id: group.generation_id,
                        assignment,
                    },
                );
            }
        }
        GroupState::Stable => {
            if group.remove_pending_sync_member(member_id) {
                ctx.cancel_sync(&group.group_id);
            }
            let assignment = group
                .member(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default();
            ctx.respond_sync(
                request,
                SyncGroupResponse {
                    error: None,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment,
                },
            );
            ctx.refresh_session(group, member_id);
        }
    }
}

fn leave_one(
    group: &mut Group,
    ctx: &mut Ctx<'_>,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> Option<GroupError> {
    if member_id.is_empty() {
        // Administrative removal of a static member by instance id alone.
        let current = group_instance_id
            .and_then(|instance_id| group.static_member_id(instance_id))
            .map(str::to_string);
        return match current {
            Some(current) => {
                remove_member_and_update_group(group, ctx, &current);
                None
            }
            None => Some(GroupError::UnknownMemberId),
        };
    }
    if group.pending_join_members.remove(member_id) {
        ctx.cancel_heartbeat(&group.group_id, member_id);
        maybe_complete_join_phase(group, ctx);
        return None;
    }
    match group.validate_member(member_id, group_instance_id) {
        Ok(()) => {
            remove_member_and_update_group(group, ctx, member_id);
            None
        }
        Err(error) => Some(error),
    }
}

/// Kafka's `validateOffsetCommit` for classic groups.
/// What an offset commit's partitions become: per partition a result (metadata longer than
/// `metadata_max_bytes` is OFFSET_METADATA_TOO_LARGE), and for the others the offset to
/// record (with its index in the results) and its `__consumer_offsets` record.
type CommitRecords = (
    Vec<PartitionResult>,
    Vec<(usize, TopicPartition, CommittedOffset)>,
    Vec<Record>,
);

fn commit_records(
    group_id: &str,
    partitions: Vec<super::types::OffsetCommitPartition>,
    metadata_max_bytes: usize,
    now_ms: i64,
    expire_timestamp_ms: Option<i64>,
    applied_seq: u64,
) -> CommitRecords {
    let mut results = Vec::with_capacity(partitions.len());
    let mut written = Vec::new();
    let mut records = Vec::new();
    for (index, p) in partitions.into_iter().enumerate() {
        let metadata = p.metadata.unwrap_or_default();
        if metadata.len() > metadata_max_bytes {
            results.push(PartitionResult {
                topic: p.topic,
                partition: p.partition,
                error: Some(GroupError::OffsetMetadataTooLarge),
            });
            continue;
        }
        let committed = CommittedOffset {
            offset: p.offset,
            leader_epoch: p.leader_epoch,
            metadata,
            commit_timestamp_ms: now_ms,
            expire_timestamp_ms,
            applied_seq,
        };
        records.push(offset_record(
            group_id,
            &p.topic,
            p.partition,
            Some(&committed),
        ));
        written.push((index, (p.topic.clone(), p.partition), committed));
        results.push(PartitionResult {
            topic: p.topic,
            partition: p.partition,
            error: None,
        });
    }
    (results, written, records)
}

fn validate_offset_commit(group: &Group, req: &OffsetCommitRequest) -> Result<(), GroupError> {
    if req.generation_id < 0 && group.state() == GroupState::Empty {
        // A standalone consumer or the admin client: allowed while nobody uses the group.
        return Ok(());
    }
    if req.generation_id >= 0 || !req.member_id.is_empty() || req.group_instance_id.is_some() {
        group.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
    } else if group.state() != GroupState::Empty {
        // No member id and no generation: only for groups nobody is a member of.
        return Err(GroupError::UnknownMemberId);
    }
    if group.state() == GroupState::CompletingRebalance {
        // A member of the new generation that has not synced yet: let it finish first.
        return Err(GroupError::RebalanceInProgress);
    }
    Ok(())
}

fn on_session_expired(group: &mut Group, ctx: &mut Ctx<'_>, member_id: &str) {
    if group.pending_join_members.remove(member_id) {
        // The member never came back with the id MEMBER_ID_REQUIRED gave it.
        maybe_complete_join_phase(group, ctx);
        return;
    }
    let expired = group
        .member(member_id)
        .is_some_and(|m| !m.has_satisfied_heartbeat());
    if expired {
        tracing::info!(group = %group.group_id, member = member_id, "member session expired");
        remove_member_and_update_group(group, ctx, member_id);
    }
}

fn on_join_deadline(group: &mut Group, ctx: &mut Ctx<'_>) {
    if group.state() != GroupState::PreparingRebalance {
        return;
    }
    match group.join_phase {
        Some(JoinPhase::InitialDelay {
            delay_ms,
            remaining_ms,
        }) if group.new_member_added && remaining_ms != 0 => {
            // Members are still arriving: wait once more, within the rebalance timeout.
            group.new_member_added = false;
            let configured = i64::from(ctx.config.group_initial_rebalance_delay_ms.max(0));
            let next_delay_ms = configured.min(remaining_ms);
            let next_remaining_ms = (remaining_ms - delay_ms).max(0);
            group.join_phase = Some(JoinPhase::InitialDelay {
                delay_ms: next_delay_ms,
                remaining_ms: next_remaining_ms,
            });
            ctx.schedule_join(&group.group_id, next_delay_ms);
        }
        _ => complete_join(group, ctx),
    }
}

/// The rebalance timeout passed and some members never sent SyncGroup: they are removed and
/// the group rebalances without them.
fn on_sync_deadline(group: &mut Group, ctx: &mut Ctx<'_>) {
    let relevant = matches!(
        group.state(),
        GroupState::CompletingRebalance | GroupState::Stable
    ) && group.sync_generation == Some(group.generation_id);
    if !relevant {
        return;
    }
    let pending = group.pending_sync_members();
    if pending.is_empty() {
        return;
    }
    tracing::info!(group = %group.group_id, ?pending, "members did not sync in time");
    for member_id in pending {
        detach_member(group, ctx, &member_id);
    }
    prepare_rebalance(group, ctx);
}
