//! One classic group: its state, generation, members and committed offsets, with the
//! bookkeeping that keeps them consistent. No timers, no responses: the coordinator
//! ([`crate::group::coordinator`]) drives the transitions and owns the clock.
//!
//! Invariants (checked by `check_invariants` after every step in the tests):
//! - `awaiting_join_count` is the number of members with a pending JoinGroup.
//! - `supported_protocols[name]` is the number of members listing protocol `name` (each member
//!   lists a name at most once: joins are de-duplicated).
//! - `static_members` maps each static member's group.instance.id to its member id, and
//!   nothing else.
//! - `leader_id` is a member whenever there are members, and `None` when there are none.
//! - `pending_sync_members` ⊆ members; `pending_join_members` ∩ members = ∅.
//! - State `Empty` ⇔ no members (outside `PreparingRebalance`, where members may all have left
//!   while the initial delay runs); `CompletingRebalance` and `Stable` have a protocol name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use bytes::Bytes;
use indexmap::IndexMap;

use crate::group::error::GroupError;
use crate::group::records::{GroupMetadataValue, MemberMetadataValue};
use crate::group::types::{JoinGroupMember, Protocol, RequestToken};

/// The protocol type of Kafka consumers, whose member metadata is a
/// `ConsumerProtocolSubscription`.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A classic group's state, spelled as Kafka spells it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; may still hold committed offsets.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Removed. Groups are dropped from the coordinator when they die, so this is only ever
    /// reported for groups that do not exist (DescribeGroups).
    Dead,
}

impl GroupState {
    /// Kafka's name for the state (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Whether `filter` names this state; ListGroups matches case-insensitively, as Kafka does.
    pub fn matches_filter(self, filter: &str) -> bool {
        self.name().eq_ignore_ascii_case(filter)
    }

    fn valid_previous_states(self) -> &'static [GroupState] {
        use GroupState::*;
        match self {
            Empty => &[PreparingRebalance],
            PreparingRebalance => &[Stable, CompletingRebalance, Empty],
            CompletingRebalance => &[PreparingRebalance],
            Stable => &[CompletingRebalance],
            Dead => &[Stable, PreparingRebalance, CompletingRebalance, Empty, Dead],
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the current join phase ends (the timer `Join` fires into this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinPhase {
    /// Kafka's `InitialDelayedJoin`: the first rebalance of an empty group waits `delay_ms`,
    /// and again (up to `remaining_ms` in all) while new members keep arriving.
    InitialDelay { delay_ms: i64, remaining_ms: i64 },
    /// Kafka's `DelayedJoin`: ends when every member rejoined or the rebalance timeout passed.
    Rebalance,
}

/// One member of a group.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) session_timeout_ms: i32,
    pub(crate) protocol_type: String,
    /// Private: changing it must update the group's protocol counts.
    protocols: Vec<Protocol>,
    pub(crate) assignment: Bytes,
    /// Private: changing it must update the group's awaiting count.
    awaiting_join: Option<RequestToken>,
    pub(crate) awaiting_sync: Option<RequestToken>,
    /// Joined but not yet through a completed join phase: no member id on the client yet, so
    /// it cannot heartbeat and is timed out by the new-member join timeout instead.
    pub(crate) is_new: bool,
}

/// The fields of a member that JoinGroup sets.
#[derive(Debug, Clone)]
pub(crate) struct MemberInit {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) session_timeout_ms: i32,
    pub(crate) protocol_type: String,
    pub(crate) protocols: Vec<Protocol>,
}

impl Member {
    pub(crate) fn new(init: MemberInit, assignment: Bytes) -> Self {
        Member {
            member_id: init.member_id,
            group_instance_id: init.group_instance_id,
            client_id: init.client_id,
            client_host: init.client_host,
            rebalance_timeout_ms: init.rebalance_timeout_ms,
            session_timeout_ms: init.session_timeout_ms,
            protocol_type: init.protocol_type,
            protocols: dedup_protocols(init.protocols),
            assignment,
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
        }
    }

    pub(crate) fn protocols(&self) -> &[Protocol] {
        &self.protocols
    }

    pub(crate) fn awaiting_join(&self) -> Option<RequestToken> {
        self.awaiting_join
    }

    /// The member's metadata for `protocol`.
    pub(crate) fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| &p.metadata)
    }

    /// Whether `protocols` is exactly what the member joined with (names, order, metadata).
    pub(crate) fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == dedup_protocols(protocols.to_vec())
    }

    /// The member's most preferred protocol among `candidates`.
    fn vote<'a>(&'a self, candidates: &HashSet<&str>) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|p| p.name.as_str())
            .find(|name| candidates.contains(name))
    }

    /// Whether a session expiry should be ignored: members waiting in JoinGroup or SyncGroup
    /// are not expected to heartbeat, except new members, which are timed out while waiting.
    pub(crate) fn has_satisfied_heartbeat(&self) -> bool {
        !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some())
    }
}

/// Keeps the first occurrence of each protocol name, so counts stay one per member.
pub(crate) fn dedup_protocols(protocols: Vec<Protocol>) -> Vec<Protocol> {
    let mut seen = HashSet::new();
    protocols
        .into_iter()
        .filter(|p| seen.insert(p.name.clone()))
        .collect()
}

/// A committed offset as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommittedOffset {
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: String,
    pub(crate) commit_timestamp_ms: i64,
    pub(crate) expire_timestamp_ms: Option<i64>,
    /// The append sequence of the commit that wrote it (0 when replayed): a completion only
    /// overwrites an older one.
    pub(crate) applied_seq: u64,
}

/// A topic partition key.
pub(crate) type TopicPartition = (String, i32);

/// One classic group; see the module doc for its invariants.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) group_id: String,
    /// The `__consumer_offsets` partition the group lives in.
    pub(crate) partition: i32,
    /// Distinguishes this incarnation of the group id from a deleted-and-recreated one, so
    /// late completions for the old one are ignored.
    pub(crate) incarnation: u64,
    state: GroupState,
    previous_state: GroupState,
    /// When the group entered its current state (`None` when loaded from a record without it).
    pub(crate) state_timestamp_ms: Option<i64>,
    pub(crate) generation_id: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    leader_id: Option<String>,
    members: IndexMap<String, Member>,
    static_members: HashMap<String, String>,
    /// Member ids handed out with `MEMBER_ID_REQUIRED`, not yet rejoined.
    pub(crate) pending_join_members: HashSet<String>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pending_sync_members: HashSet<String>,
    supported_protocols: HashMap<String, usize>,
    awaiting_join_count: usize,
    /// A new member joined during the initial delay: extend it.
    pub(crate) new_member_added: bool,
    pub(crate) join_phase: Option<JoinPhase>,
    /// The generation the sync deadline was set for.
    pub(crate) sync_generation: Option<i32>,
    /// The topics the consumer members subscribe to (`None` when unknown or not consumers).
    pub(crate) subscribed_topics: Option<HashSet<String>>,
    pub(crate) offsets: BTreeMap<TopicPartition, CommittedOffset>,
    /// Append sequences of commits written but not yet confirmed, per partition. A completion
    /// applies only if its sequence is still here (a delete in between drops it).
    pub(crate) pending_commits: HashMap<TopicPartition, Vec<u64>>,
    /// Transactional offset commits written and waiting for their transaction's marker, by
    /// producer id: a COMMIT makes them the group's offsets, an ABORT drops them.
    pub(crate) pending_txn_offsets: HashMap<i64, BTreeMap<TopicPartition, CommittedOffset>>,
}

impl Group {
    pub(crate) fn new(group_id: String, partition: i32, incarnation: u64, now_ms: i64) -> Self {
        Group {
            group_id,
            partition,
            incarnation,
            state: GroupState::Empty,
            previous_state: GroupState::Empty,
            state_timestamp_ms: Some(now_ms),
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_join_members: HashSet::new(),
            pending_sync_members: HashSet::new(),
            supported_protocols: HashMap::new(),
            awaiting_join_count: 0,
            new_member_added: false,
            join_phase: None,
            sync_generation: None,
            subscribed_topics: None,
            offsets: BTreeMap::new(),
            pending_commits: HashMap::new(),
            pending_txn_offsets: HashMap::new(),
        }
    }

    pub(crate) fn state(&self) -> GroupState {
        self.state
    }

    pub(crate) fn previous_state(&self) -> GroupState {
        self.previous_state
    }

    /// Moves to `state`. An invalid transition is a coordinator bug: it fails the unit tests,
    /// and in the broker it is logged rather than taking the coordinator down.
    pub(crate) fn transition_to(&mut self, state: GroupState, now_ms: i64) {
        let valid = state.valid_previous_states().contains(&self.state);
        #[cfg(test)]
        assert!(valid, "invalid transition {} -> {}", self.state, state);
        if !valid {
            tracing::error!(
                group = %self.group_id,
                from = %self.state,
                to = %state,
                "invalid group state transition"
            );
        }
        self.previous_state = self.state;
        self.state = state;
        self.state_timestamp_ms = Some(now_ms);
    }

    /// Sets the state directly (loading from the log only).
    pub(crate) fn set_loaded_state(&mut self, state: GroupState, state_timestamp_ms: Option<i64>) {
        self.previous_state = self.state;
        self.state = state;
        self.state_timestamp_ms = state_timestamp_ms;
    }

    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub(crate) fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    pub(crate) fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.get(member_id)
    }

    pub(crate) fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.get_mut(member_id)
    }

    pub(crate) fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    pub(crate) fn num_members(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn num_awaiting_join(&self) -> usize {
        self.awaiting_join_count
    }

    pub(crate) fn leader_id(&self) -> Option<&str> {
        self.leader_id.as_deref()
    }

    pub(crate) fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub(crate) fn static_member_id(&self, group_instance_id: &str) -> Option<&str> {
        self.static_members
            .get(group_instance_id)
            .map(String::as_str)
    }

    /// Adds a member (new, or rejoining from `MEMBER_ID_REQUIRED`), optionally waiting in
    /// JoinGroup with `awaiting_join`.
    pub(crate) fn add_member(&mut self, mut member: Member, awaiting_join: Option<RequestToken>) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        self.pending_join_members.remove(&member.member_id);
        if let Some(instance_id) = &member.group_instance_id {
            self.static_members
                .insert(instance_id.clone(), member.member_id.clone());
        }
        for protocol in &member.protocols {
            *self
                .supported_protocols
                .entry(protocol.name.clone())
                .or_insert(0) += 1;
        }
        member.awaiting_join = awaiting_join;
        if awaiting_join.is_some() {
            self.awaiting_join_count += 1;
        }
        self.members.insert(member.member_id.clone(), member);
    }

    /// Removes a member and everything that refers to it; the leader passes to the first
    /// remaining member in join order. Returns it (with any pending JoinGroup/SyncGroup token
    /// still set, for the caller to answer).
    pub(crate) fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.shift_remove(member_id)?;
        for protocol in &member.protocols {
            self.decrement_protocol(&protocol.name);
        }
        if member.awaiting_join.is_some() {
            self.awaiting_join_count -= 1;
        }
        if let Some(instance_id) = &member.group_instance_id {
            if self.static_members.get(instance_id).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance_id);
            }
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        self.pending_sync_members.remove(member_id);
        Some(member)
    }

    fn decrement_protocol(&mut self, name: &str) {
        if let Some(count) = self.supported_protocols.get_mut(name) {
            *count -= 1;
            if *count == 0 {
                self.supported_protocols.remove(name);
            }
        }
    }

    /// Updates a member's protocols and timeouts and sets its pending JoinGroup. Returns the
    /// token of a JoinGroup it replaced (a duplicate join), for the caller to answer.
    pub(crate) fn update_member(
        &mut self,
        member_id: &str,
        protocols: Vec<Protocol>,
        rebalance_timeout_ms: i32,
        session_timeout_ms: i32,
        awaiting_join: Option<RequestToken>,
    ) -> Option<RequestToken> {
        let protocols = dedup_protocols(protocols);
        let old_names: Vec<String> = {
            let member = self.members.get(member_id)?;
            member.protocols.iter().map(|p| p.name.clone()).collect()
        };
        for name in &old_names {
            self.decrement_protocol(name);
        }
        for protocol in &protocols {
            *self
                .supported_protocols
                .entry(protocol.name.clone())
                .or_insert(0) += 1;
        }
        let member = self.members.get_mut(member_id)?;
        member.protocols = protocols;
        member.rebalance_timeout_ms = rebalance_timeout_ms;
        member.session_timeout_ms = session_timeout_ms;
        let previous = member.awaiting_join;
        member.awaiting_join = awaiting_join;
        match (previous.is_some(), awaiting_join.is_some()) {
            (false, true) => self.awaiting_join_count += 1,
            (true, false) => self.awaiting_join_count -= 1,
            _ => {}
        }
        previous
    }

    /// Takes a member's pending JoinGroup token.
    pub(crate) fn take_awaiting_join(&mut self, member_id: &str) -> Option<RequestToken> {
        let member = self.members.get_mut(member_id)?;
        let token = member.awaiting_join.take();
        if token.is_some() {
            self.awaiting_join_count -= 1;
        }
        token
    }

    /// Gives a static member a new member id, keeping everything else (its assignment, its
    /// place in join order, leadership). Returns the old member's pending JoinGroup and
    /// SyncGroup tokens, which the caller fences.
    pub(crate) fn replace_static_member(
        &mut self,
        group_instance_id: &str,
        old_member_id: &str,
        new_member_id: &str,
    ) -> Option<(Option<RequestToken>, Option<RequestToken>)> {
        let index = self.members.get_index_of(old_member_id)?;
        let mut member = self.members.shift_remove(old_member_id)?;
        let fenced_join = member.awaiting_join.take();
        if fenced_join.is_some() {
            self.awaiting_join_count -= 1;
        }
        let fenced_sync = member.awaiting_sync.take();
        member.member_id = new_member_id.to_string();
        self.members
            .shift_insert(index, new_member_id.to_string(), member);
        if self.is_leader(old_member_id) {
            self.leader_id = Some(new_member_id.to_string());
        }
        if self.pending_sync_members.remove(old_member_id) {
            self.pending_sync_members.insert(new_member_id.to_string());
        }
        self.static_members
            .insert(group_instance_id.to_string(), new_member_id.to_string());
        Some((fenced_join, fenced_sync))
    }

    /// Kafka's `validateMember`: a static member's instance id must map to this member id
    /// (else `FENCED_INSTANCE_ID`, or `UNKNOWN_MEMBER_ID` if the instance id is unknown), and
    /// the member id must be a member.
    pub(crate) fn validate_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if let Some(instance_id) = group_instance_id {
            match self.static_members.get(instance_id) {
                None => return Err(GroupError::UnknownMemberId),
                Some(existing) if existing != member_id => {
                    return Err(GroupError::FencedInstanceId)
                }
                Some(_) => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    /// Whether a joining member with this protocol type and these protocols fits the group:
    /// any non-empty type and protocol list for an empty group; otherwise the group's type and
    /// at least one protocol every member supports.
    pub(crate) fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| {
                self.supported_protocols.get(&p.name).copied().unwrap_or(0) == self.members.len()
            })
    }

    /// Kafka's vote: among the protocols every member supports, each member votes for its
    /// most preferred; the most votes wins, ties going to the one voted for first in join order.
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let candidates: HashSet<&str> = self
            .supported_protocols
            .iter()
            .filter(|(_, count)| **count == self.members.len())
            .map(|(name, _)| name.as_str())
            .collect();
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for member in self.members.values() {
            if let Some(choice) = member.vote(&candidates) {
                match votes.iter_mut().find(|(name, _)| *name == choice) {
                    Some((_, count)) => *count += 1,
                    None => votes.push((choice, 1)),
                }
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            if best.is_none_or(|(_, best_count)| count > best_count) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_string())
    }

    /// Every member rejoined and no member id handed out with `MEMBER_ID_REQUIRED` is still
    /// outstanding.
    pub(crate) fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.awaiting_join_count && self.pending_join_members.is_empty()
    }

    /// The largest rebalance timeout of the members.
    pub(crate) fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
            .max(0)
    }

    pub(crate) fn can_rebalance(&self) -> bool {
        GroupState::PreparingRebalance
            .valid_previous_states()
            .contains(&self.state)
    }

    /// If the leader has not rejoined, makes the first rejoined member the leader. False when
    /// no member rejoined.
    pub(crate) fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader_id.as_deref() else {
            return false;
        };
        if self
            .members
            .get(leader)
            .is_some_and(|m| m.awaiting_join.is_some())
        {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(member) => {
                self.leader_id = Some(member.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// Members that have not rejoined during the join phase.
    pub(crate) fn not_yet_rejoined_members(&self) -> Vec<(String, bool)> {
        self.members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| (m.member_id.clone(), m.group_instance_id.is_some()))
            .collect()
    }

    /// Starts the next generation: a protocol is chosen and the group waits for the leader's
    /// assignment, or the group is empty.
    pub(crate) fn init_next_generation(&mut self, now_ms: i64) {
        self.generation_id = self.generation_id.wrapping_add(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition_to(GroupState::Empty, now_ms);
        } else {
            let selected = self.select_protocol().or_else(|| {
                // Unreachable while joins are validated against the common protocols; keep
                // the group usable rather than stuck if it ever happens.
                tracing::error!(group = %self.group_id, "no protocol supported by every member");
                self.members
                    .values()
                    .next()
                    .and_then(|m| m.protocols.first())
                    .map(|p| p.name.clone())
            });
            self.protocol_name = selected;
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition_to(GroupState::CompletingRebalance, now_ms);
        }
        self.pending_sync_members.clear();
    }

    pub(crate) fn add_pending_sync_member(&mut self, member_id: &str) {
        if self.members.contains_key(member_id) {
            self.pending_sync_members.insert(member_id.to_string());
        }
    }

    /// Marks a member as synced; true when it was the last one pending.
    pub(crate) fn remove_pending_sync_member(&mut self, member_id: &str) -> bool {
        self.pending_sync_members.remove(member_id) && self.pending_sync_members.is_empty()
    }

    pub(crate) fn pending_sync_members(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.pending_sync_members.iter().cloned().collect();
        ids.sort();
        ids
    }

    /// The members as the leader's JoinGroup response lists them.
    pub(crate) fn current_member_metadata(&self) -> Vec<JoinGroupMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members
            .values()
            .map(|m| JoinGroupMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// The topics the members subscribe to, for consumer groups whose subscriptions parse;
    /// `Some(∅)` for an empty consumer group.
    pub(crate) fn compute_subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        if self.members.is_empty() {
            return Some(HashSet::new());
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = HashSet::new();
        for member in self.members.values() {
            topics.extend(parse_subscription_topics(member.metadata(protocol)?)?);
        }
        Some(topics)
    }

    /// Whether an active member subscribes to `topic`. When the subscriptions are unknown a
    /// consumer group is assumed subscribed (the safe answer for OffsetDelete), as Kafka does.
    pub(crate) fn is_subscribed_to_topic(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(topics) => topics.contains(topic),
            None => self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE),
        }
    }

    pub(crate) fn has_offsets(&self) -> bool {
        !self.offsets.is_empty()
            || self.pending_commits.values().any(|seqs| !seqs.is_empty())
            || !self.pending_txn_offsets.is_empty()
    }

    /// The offsets that `offsets.retention.minutes` has expired (Kafka 2.1+ rules): for an
    /// empty group with a protocol type, counted from when the group became empty; for a
    /// standalone consumer's group (no protocol type), from each commit; for a Stable consumer
    /// group, from each commit, for topics no member subscribes to. A commit with an explicit
    /// expiry (OffsetCommit v2–v4) expires then instead. Partitions with a commit in flight
    /// never expire.
    pub(crate) fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<TopicPartition> {
        enum Base {
            StateTimestamp(Option<i64>),
            CommitTimestamp,
        }
        let base = match (&self.protocol_type, self.state) {
            (Some(_), GroupState::Empty) => Base::StateTimestamp(self.state_timestamp_ms),
            (Some(protocol_type), GroupState::Stable)
                if protocol_type == CONSUMER_PROTOCOL_TYPE && self.subscribed_topics.is_some() =>
            {
                Base::CommitTimestamp
            }
            (Some(_), _) => return Vec::new(),
            (None, _) => Base::CommitTimestamp,
        };
        self.offsets
            .iter()
            .filter(|(tp, _)| !self.is_subscribed_to_topic(&tp.0))
            .filter(|(tp, _)| self.pending_commits.get(*tp).is_none_or(Vec::is_empty))
            .filter(|(_, committed)| match committed.expire_timestamp_ms {
                Some(expire_ms) => now_ms >= expire_ms,
                None => {
                    let base_ms = match base {
                        Base::StateTimestamp(Some(ts)) => ts,
                        Base::StateTimestamp(None) | Base::CommitTimestamp => {
                            committed.commit_timestamp_ms
                        }
                    };
                    now_ms.saturating_sub(base_ms) >= retention_ms
                }
            })
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The group as a `GroupMetadataValue`, with `assignment` (by member id) or, if `None`,
    /// the members' current assignments.
    pub(crate) fn to_metadata_value(
        &self,
        assignment: Option<&HashMap<String, Bytes>>,
    ) -> GroupMetadataValue {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp_ms: self.state_timestamp_ms.unwrap_or(-1),
            members: self
                .members
                .values()
                .map(|m| MemberMetadataValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(protocol).cloned().unwrap_or_default(),
                    assignment: match assignment {
                        Some(map) => map.get(&m.member_id).cloned().unwrap_or_default(),
                        None => m.assignment.clone(),
                    },
                })
                .collect(),
        }
    }

    /// Replaces the membership with what a `GroupMetadataValue` says (loading), keeping the
    /// offsets. A group with members loads as Stable, without as Empty.
    pub(crate) fn load_metadata(&mut self, value: GroupMetadataValue) {
        self.members.clear();
        self.static_members.clear();
        self.supported_protocols.clear();
        self.awaiting_join_count = 0;
        self.pending_join_members.clear();
        self.pending_sync_members.clear();
        self.join_phase = None;
        self.sync_generation = None;
        self.leader_id = None;
        self.generation_id = value.generation;
        self.protocol_type = Some(value.protocol_type.clone()).filter(|t| !t.is_empty());
        self.protocol_name = value.protocol.clone();
        let protocol_name = value.protocol.clone().unwrap_or_default();
        for m in value.members {
            let member = Member::new(
                MemberInit {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    protocol_type: value.protocol_type.clone(),
                    protocols: vec![Protocol {
                        name: protocol_name.clone(),
                        metadata: m.subscription,
                    }],
                },
                m.assignment,
            );
            self.add_member(member, None);
        }
        // `add_member` makes the first member the leader; the record names the real one.
        if let Some(leader) = value.leader.filter(|l| self.members.contains_key(l)) {
            self.leader_id = Some(leader);
        }
        let state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        let timestamp = Some(value.current_state_timestamp_ms).filter(|ts| *ts >= 0);
        self.set_loaded_state(state, timestamp);
        self.subscribed_topics = self.compute_subscribed_topics();
    }

    /// Resets the membership to that of a new empty group (a group tombstone replayed while
    /// offsets remain), keeping the offsets.
    pub(crate) fn reset_to_blank(&mut self) {
        self.load_metadata(GroupMetadataValue {
            protocol_type: String::new(),
            generation: 0,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: -1,
            members: Vec::new(),
        });
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let awaiting = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_some())
            .count();
        assert_eq!(awaiting, self.awaiting_join_count, "awaiting join count");
        let mut counts: HashMap<String, usize> = HashMap::new();
        for member in self.members.values() {
            for protocol in &member.protocols {
                *counts.entry(protocol.name.clone()).or_insert(0) += 1;
            }
        }
        assert_eq!(counts, self.supported_protocols, "protocol counts");
        let statics: HashMap<String, String> = self
            .members
            .values()
            .filter_map(|m| {
                m.group_instance_id
                    .clone()
                    .map(|i| (i, m.member_id.clone()))
            })
            .collect();
        assert_eq!(statics, self.static_members, "static members");
        match &self.leader_id {
            Some(leader) => assert!(self.members.contains_key(leader), "leader is a member"),
            None => assert!(self.members.is_empty(), "members without a leader"),
        }
        for id in &self.pending_sync_members {
            assert!(self.members.contains_key(id), "pending sync member {id}");
        }
        for id in &self.pending_join_members {
            assert!(!self.members.contains_key(id), "pending join member {id}");
        }
        for (id, member) in &self.members {
            assert_eq!(id, &member.member_id);
        }
        match self.state {
            GroupState::Empty => assert!(self.members.is_empty(), "Empty group with members"),
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(!self.members.is_empty(), "{} without members", self.state);
                assert!(
                    self.protocol_name.is_some(),
                    "{} without protocol",
                    self.state
                );
            }
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
    }
}

/// The topics of a consumer's `ConsumerProtocolSubscription` (an i16 version, then in every
/// version an array of topic strings first). Only that common prefix is read, as Kafka does,
/// so future versions parse too. Parsed by hand with every count checked against the bytes
/// left: this is client-supplied data, and `kafka-protocol`'s decoder pre-allocates from the
/// wire count (see NOTES.md), which a hostile member could use to abort the broker.
pub(crate) fn parse_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut rest = metadata;
    let mut take = |n: usize| -> Option<&[u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    };
    let version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    if count < 0 {
        return None;
    }
    let mut topics = Vec::new();
    for _ in 0..count {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let name = std::str::from_utf8(take(len)?).ok()?;
        topics.push(name.to_string());
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(version: i16, topics: &[&str]) -> Bytes {
        let mut buf = Vec::new();
        buf.extend_from_slice(&version.to_be_bytes());
        buf.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for topic in topics {
            buf.extend_from_slice(&(topic.len() as i16).to_be_bytes());
            buf.extend_from_slice(topic.as_bytes());
        }
        buf.extend_from_slice(&(-1i32).to_be_bytes()); // null user data
        Bytes::from(buf)
    }

    #[test]
    fn subscription_topics_parse_any_version_and_reject_garbage() {
        assert_eq!(
            parse_subscription_topics(&subscription(3, &["a", "bc"])),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(
            parse_subscription_topics(&subscription(0, &[])),
            Some(vec![])
        );
        // A huge count with no bytes behind it.
        let mut hostile = vec![0, 1];
        hostile.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(parse_subscription_topics(&hostile), None);
        assert_eq!(parse_subscription_topics(&[0]), None);
        assert_eq!(
            parse_subscription_topics(&[0, 0, 0, 0, 0, 1, 0, 5, b'a']),
            None
        );
    }

    #[test]
    fn state_names_are_kafkas() {
        let names: Vec<&str> = [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
            GroupState::Dead,
        ]
        .iter()
        .map(|s| s.name())
        .collect();
        assert_eq!(
            names,
            [
                "Empty",
                "PreparingRebalance",
                "CompletingRebalance",
                "Stable",
                "Dead"
            ]
        );
        assert!(GroupState::Stable.matches_filter("stable"));
        assert!(!GroupState::Stable.matches_filter("Empty"));
    }
}
