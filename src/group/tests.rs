//! Scenario tests of the coordinator with a manual clock: a harness plays the API handlers
//! (requests with tokens), the timer task (`tick` at every deadline, in order) and the log
//! (appends recorded, then completed), and checks the invariants after every step.

use std::collections::HashMap;

use bytes::Bytes;

use super::*;
use crate::testing::SplitMix;

const GROUP: &str = "g";
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const DELAY_MS: i64 = 3_000;

/// A `ConsumerProtocolSubscription` v0: topics, null user data.
fn subscription(topics: &[&str]) -> Bytes {
    let mut buf = Vec::new();
    buf.extend_from_slice(&0i16.to_be_bytes());
    buf.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for topic in topics {
        buf.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        buf.extend_from_slice(topic.as_bytes());
    }
    buf.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(buf)
}

fn protocols(names: &[&str], topics: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|name| Protocol {
            name: name.to_string(),
            metadata: subscription(topics),
        })
        .collect()
}

/// A JoinGroup v3 (no MEMBER_ID_REQUIRED) from a consumer subscribed to `t1` with `range`.
fn join_req(group: &str, member_id: &str, client_id: &str) -> JoinGroupRequest {
    JoinGroupRequest {
        api_version: 3,
        group_id: group.to_string(),
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: client_id.to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_string(),
        protocols: protocols(&["range"], &["t1"]),
    }
}

fn static_join_req(group: &str, member_id: &str, instance: &str, version: i16) -> JoinGroupRequest {
    JoinGroupRequest {
        api_version: version,
        group_instance_id: Some(instance.to_string()),
        ..join_req(group, member_id, &format!("client-{instance}"))
    }
}

fn sync_req(member_id: &str, generation_id: i32, assignments: &[(&str, &str)]) -> SyncGroupRequest {
    SyncGroupRequest {
        group_id: GROUP.to_string(),
        generation_id,
        member_id: member_id.to_string(),
        group_instance_id: None,
        protocol_type: Some("consumer".to_string()),
        protocol_name: Some("range".to_string()),
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a.as_bytes())))
            .collect(),
    }
}

fn commit_req(
    group: &str,
    member_id: &str,
    generation_id: i32,
    offsets: &[(&str, i32, i64)],
) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: group.to_string(),
        generation_id,
        member_id: member_id.to_string(),
        group_instance_id: None,
        retention_time_ms: None,
        partitions: offsets
            .iter()
            .map(|(topic, partition, offset)| OffsetCommitPartition {
                topic: topic.to_string(),
                partition: *partition,
                offset: *offset,
                leader_epoch: -1,
                metadata: None,
            })
            .collect(),
    }
}

fn errors(results: &[PartitionResult]) -> Vec<Option<GroupError>> {
    results.iter().map(|r| r.error).collect()
}

struct Harness {
    c: GroupCoordinator,
    now: i64,
    next_token: RequestToken,
    responses: HashMap<RequestToken, Response>,
    /// Every record whose append succeeded, in log order, with its partition.
    log: Vec<(i32, Record)>,
    /// Hold appends until `release` instead of completing them at once.
    manual_appends: bool,
    held: Vec<Append>,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(GroupConfig::default())
    }

    fn with_config(config: GroupConfig) -> Self {
        let partitions = config.offsets_topic_num_partitions;
        let mut c = GroupCoordinator::with_seed(config, 7);
        for partition in 0..partitions {
            assert!(c.begin_loading(partition).is_empty());
            assert!(c.finish_loading(partition, 0).is_empty());
        }
        Harness {
            c,
            now: 0,
            next_token: 0,
            responses: HashMap::new(),
            log: Vec::new(),
            manual_appends: false,
            held: Vec::new(),
        }
    }

    fn token(&mut self) -> RequestToken {
        self.next_token += 1;
        self.next_token
    }

    fn absorb(&mut self, out: Output) {
        for (token, response) in out.responses {
            let previous = self.responses.insert(token, response);
            assert!(previous.is_none(), "request {token} answered twice");
        }
        for append in out.appends {
            assert!(!append.records.is_empty());
            assert_eq!(append.timestamp_ms, self.now);
            if self.manual_appends {
                self.held.push(append);
            } else {
                self.apply(append, Ok(()));
            }
        }
        self.c.check_invariants();
    }

    fn apply(&mut self, append: Append, result: Result<(), AppendError>) {
        if result.is_ok() {
            for record in &append.records {
                self.log.push((append.partition, record.clone()));
            }
        }
        let out = self.c.complete(self.now, append.token, result);
        self.absorb(out);
    }

    /// Completes every held append with `result`, in order.
    fn release(&mut self, result: Result<(), AppendError>) {
        for append in std::mem::take(&mut self.held) {
            self.apply(append, result);
        }
    }

    /// Moves the clock to `t`, running every timer at its own deadline, as a driver that
    /// sleeps until `next_deadline` would.
    fn advance_to(&mut self, t: i64) {
        assert!(t >= self.now, "time runs forward");
        while let Some(deadline) = self.c.next_deadline().filter(|d| *d <= t) {
            self.now = self.now.max(deadline);
            let out = self.c.tick(self.now);
            self.absorb(out);
        }
        self.now = t;
    }

    fn advance(&mut self, ms: i64) {
        self.advance_to(self.now + ms);
    }

    /// Runs the timers, deadline by deadline, until `token` is answered.
    fn advance_until_answered(&mut self, token: RequestToken) {
        for _ in 0..100 {
            if self.answered(token) {
                return;
            }
            match self.c.next_deadline() {
                Some(deadline) => self.advance_to(deadline.max(self.now)),
                None => break,
            }
        }
        assert!(self.answered(token), "request {token} never answered");
    }

    fn join(&mut self, req: JoinGroupRequest) -> RequestToken {
        let token = self.token();
        let out = self.c.join_group(self.now, token, req);
        self.absorb(out);
        token
    }

    fn sync(&mut self, req: SyncGroupRequest) -> RequestToken {
        let token = self.token();
        let out = self.c.sync_group(self.now, token, req);
        self.absorb(out);
        token
    }

    fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> Result<(), GroupError> {
        self.heartbeat_in(GROUP, member_id, generation_id, None)
    }

    fn heartbeat_in(
        &mut self,
        group: &str,
        member_id: &str,
        generation_id: i32,
        instance: Option<&str>,
    ) -> Result<(), GroupError> {
        let result = self.c.heartbeat(
            self.now,
            &HeartbeatRequest {
                group_id: group.to_string(),
                generation_id,
                member_id: member_id.to_string(),
                group_instance_id: instance.map(str::to_string),
            },
        );
        self.c.check_invariants();
        result
    }

    fn leave(&mut self, group: &str, members: Vec<LeavingMember>) -> LeaveGroupResponse {
        let token = self.token();
        let out = self.c.leave_group(
            self.now,
            token,
            LeaveGroupRequest {
                group_id: group.to_string(),
                members,
            },
        );
        self.absorb(out);
        match self.responses.remove(&token) {
            Some(Response::LeaveGroup(response)) => response,
            other => panic!("expected a LeaveGroup response, got {other:?}"),
        }
    }

    fn commit(&mut self, req: OffsetCommitRequest) -> RequestToken {
        let token = self.token();
        let out = self.c.offset_commit(self.now, token, req);
        self.absorb(out);
        token
    }

    fn delete_groups(&mut self, groups: &[&str]) -> RequestToken {
        let token = self.token();
        let out = self.c.delete_groups(
            self.now,
            token,
            groups.iter().map(|g| g.to_string()).collect(),
        );
        self.absorb(out);
        token
    }

    fn offset_delete(&mut self, group: &str, partitions: &[(&str, i32)]) -> RequestToken {
        let token = self.token();
        let out = self.c.offset_delete(
            self.now,
            token,
            group,
            partitions
                .iter()
                .map(|(t, p)| (t.to_string(), *p))
                .collect(),
        );
        self.absorb(out);
        token
    }

    fn answered(&self, token: RequestToken) -> bool {
        self.responses.contains_key(&token)
    }

    fn join_response(&mut self, token: RequestToken) -> JoinGroupResponse {
        match self.responses.remove(&token) {
            Some(Response::JoinGroup(response)) => response,
            other => panic!("expected a JoinGroup response for {token}, got {other:?}"),
        }
    }

    fn sync_response(&mut self, token: RequestToken) -> SyncGroupResponse {
        match self.responses.remove(&token) {
            Some(Response::SyncGroup(response)) => response,
            other => panic!("expected a SyncGroup response for {token}, got {other:?}"),
        }
    }

    fn commit_response(&mut self, token: RequestToken) -> OffsetCommitResponse {
        match self.responses.remove(&token) {
            Some(Response::OffsetCommit(response)) => response,
            other => panic!("expected an OffsetCommit response for {token}, got {other:?}"),
        }
    }

    fn delete_response(&mut self, token: RequestToken) -> DeleteGroupsResponse {
        match self.responses.remove(&token) {
            Some(Response::DeleteGroups(response)) => response,
            other => panic!("expected a DeleteGroups response for {token}, got {other:?}"),
        }
    }

    fn offset_delete_response(&mut self, token: RequestToken) -> OffsetDeleteResponse {
        match self.responses.remove(&token) {
            Some(Response::OffsetDelete(response)) => response,
            other => panic!("expected an OffsetDelete response for {token}, got {other:?}"),
        }
    }

    fn state(&self, group: &str) -> Option<GroupState> {
        self.c.group_state(group)
    }

    fn generation(&self, group: &str) -> i32 {
        self.c.group(group).map_or(-1, |g| g.generation_id)
    }

    fn fetch(&self, group: &str, topic: &str, partition: i32) -> FetchedOffset {
        let fetched = self
            .c
            .offset_fetch(group, Some(&[(topic.to_string(), partition)]))
            .unwrap_or_default();
        assert_eq!(fetched.len(), 1);
        fetched[0].clone()
    }

    /// Forms a Stable group of dynamic members (joined at once, through the initial delay),
    /// each assigned `asg-<client>`. Returns the member ids in join order; the first leads.
    fn stable_group(&mut self, group: &str, clients: &[&str]) -> Vec<String> {
        let tokens: Vec<RequestToken> = clients
            .iter()
            .map(|client| self.join(join_req(group, "", client)))
            .collect();
        // One delay, extended once if more than one member joined during it.
        self.advance_until_answered(tokens[0]);
        let responses: Vec<JoinGroupResponse> =
            tokens.iter().map(|t| self.join_response(*t)).collect();
        let ids: Vec<String> = responses.iter().map(|r| r.member_id.clone()).collect();
        let generation = responses[0].generation_id;
        let assignments: Vec<(String, String)> = ids
            .iter()
            .zip(clients)
            .map(|(id, client)| (id.clone(), format!("asg-{client}")))
            .collect();
        let mut sync_tokens = Vec::new();
        for id in ids.iter().skip(1) {
            let mut req = sync_req(id, generation, &[]);
            req.group_id = group.to_string();
            sync_tokens.push(self.sync(req));
        }
        let pairs: Vec<(&str, &str)> = assignments
            .iter()
            .map(|(m, a)| (m.as_str(), a.as_str()))
            .collect();
        let mut req = sync_req(&ids[0], generation, &pairs);
        req.group_id = group.to_string();
        sync_tokens.push(self.sync(req));
        for token in sync_tokens {
            assert_eq!(self.sync_response(token).error, None);
        }
        assert_eq!(self.state(group), Some(GroupState::Stable));
        ids
    }
}

// ----- Coordinator partition mapping -------------------------------------------------------

#[test]
fn java_string_hash_matches_java() {
    assert_eq!(java_string_hash(""), 0);
    assert_eq!(java_string_hash("a"), 97);
    assert_eq!(java_string_hash("ab"), 97 * 31 + 98);
    assert_eq!(java_string_hash("test-group"), 627_841_412);
    assert_eq!(java_string_hash("my-group"), -1_906_497_762);
    // Hashed over UTF-16 code units: U+1F600 is the surrogate pair D83D DE00.
    assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
    // The classic string whose hashCode is Integer.MIN_VALUE.
    assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
}

#[test]
fn partition_for_matches_kafka() {
    assert_eq!(partition_for("", 50), 0);
    assert_eq!(partition_for("a", 50), 47);
    assert_eq!(partition_for("ab", 50), 5);
    assert_eq!(partition_for("test-group", 50), 12);
    // Negative hash: Math.abs(-1906497762) % 50 = 12 (masking the sign bit would give 36).
    assert_eq!(partition_for("my-group", 50), 12);
    // Utils.abs(Integer.MIN_VALUE) is 0.
    assert_eq!(partition_for("polygenelubricants", 50), 0);
    assert_eq!(partition_for("😀", 50), 49);
    assert_eq!(partition_for("anything", 1), 0);
}

// ----- JoinGroup ---------------------------------------------------------------------------

#[test]
fn single_member_join_waits_the_initial_delay() {
    let mut h = Harness::new();
    let token = h.join(join_req(GROUP, "", "client-a"));
    assert_eq!(h.state(GROUP), Some(GroupState::PreparingRebalance));
    h.advance_to(DELAY_MS - 1);
    assert!(!h.answered(token), "the initial delay must not end early");
    h.advance_to(DELAY_MS);
    let response = h.join_response(token);
    assert_eq!(response.error, None);
    assert_eq!(response.generation_id, 1);
    assert!(response.member_id.starts_with("client-a-"));
    assert_eq!(response.leader, response.member_id);
    assert_eq!(response.protocol_name.as_deref(), Some("range"));
    assert_eq!(response.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(response.members.len(), 1);
    assert_eq!(response.members[0].metadata, subscription(&["t1"]));
    assert_eq!(h.state(GROUP), Some(GroupState::CompletingRebalance));

    let sync = h.sync(sync_req(
        &response.member_id,
        1,
        &[(&response.member_id, "mine")],
    ));
    let sync = h.sync_response(sync);
    assert_eq!(sync.error, None);
    assert_eq!(&sync.assignment[..], b"mine");
    assert_eq!(sync.protocol_name.as_deref(), Some("range"));
    assert_eq!(h.state(GROUP), Some(GroupState::Stable));
}

#[test]
fn three_members_join_and_new_joins_extend_the_initial_delay() {
    let mut h = Harness::new();
    let a = h.join(join_req(GROUP, "", "a"));
    h.advance_to(1_000);
    let b = h.join(join_req(GROUP, "", "b"));
    h.advance_to(2_500);
    let c = h.join(join_req(GROUP, "", "c"));
    // New members arrived during the first delay, so it is extended by another delay.
    h.advance_to(5_999);
    assert!(!h.answered(a) && !h.answered(b) && !h.answered(c));
    h.advance_to(6_000);
    let (a, b, c) = (h.join_response(a), h.join_response(b), h.join_response(c));
    for response in [&a, &b, &c] {
        assert_eq!(response.error, None);
        assert_eq!(response.generation_id, 1);
        assert_eq!(
            response.leader, a.member_id,
            "the first member to join leads"
        );
    }
    let listed: Vec<&str> = a.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(listed, [&a.member_id, &b.member_id, &c.member_id]);
    assert!(b.members.is_empty() && c.members.is_empty());
}

#[test]
fn initial_delay_extensions_stop_at_the_rebalance_timeout() {
    let mut h = Harness::new();
    let short = |client: &str| JoinGroupRequest {
        rebalance_timeout_ms: 5_000,
        ..join_req(GROUP, "", client)
    };
    let a = h.join(short("a"));
    h.advance_to(1_000);
    let b = h.join(short("b"));
    // At 3000 the delay is extended by what is left of the rebalance timeout (2000).
    h.advance_to(4_000);
    let c = h.join(short("c"));
    h.advance_to(4_999);
    assert!(!h.answered(a));
    h.advance_to(5_000);
    for token in [a, b, c] {
        assert_eq!(h.join_response(token).generation_id, 1);
    }
}

#[test]
fn member_id_required_then_rejoin_with_the_given_id() {
    let mut h = Harness::new();
    let first = h.join(JoinGroupRequest {
        api_version: 4,
        ..join_req(GROUP, "", "client-a")
    });
    let first = h.join_response(first);
    assert_eq!(first.error, Some(GroupError::MemberIdRequired));
    assert!(first.member_id.starts_with("client-a-"));
    assert_eq!(first.generation_id, -1);
    assert_eq!(h.state(GROUP), Some(GroupState::Empty));

    // An id the coordinator never handed out is refused.
    let bogus = h.join(JoinGroupRequest {
        api_version: 4,
        ..join_req(GROUP, "client-a-not-issued", "client-a")
    });
    assert_eq!(
        h.join_response(bogus).error,
        Some(GroupError::UnknownMemberId)
    );

    h.advance_to(100);
    let second = h.join(JoinGroupRequest {
        api_version: 4,
        ..join_req(GROUP, &first.member_id, "client-a")
    });
    h.advance_to(100 + DELAY_MS);
    let second = h.join_response(second);
    assert_eq!(second.error, None);
    assert_eq!(second.member_id, first.member_id);
    assert_eq!(second.generation_id, 1);
}

#[test]
fn a_pending_member_holds_the_join_phase_until_its_session_expires() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a"]);
    h.advance_to(5_000);
    // B is told to rejoin with an id, and never does.
    let b = h.join(JoinGroupRequest {
        api_version: 4,
        ..join_req(GROUP, "", "b")
    });
    assert_eq!(h.join_response(b).error, Some(GroupError::MemberIdRequired));
    // The leader rejoins, which starts a rebalance; it waits for the pending member.
    let a = h.join(join_req(GROUP, &ids[0], "a"));
    assert_eq!(h.state(GROUP), Some(GroupState::PreparingRebalance));
    h.advance_to(5_000 + i64::from(SESSION_MS) - 1);
    assert!(!h.answered(a));
    h.advance_to(5_000 + i64::from(SESSION_MS));
    let a = h.join_response(a);
    assert_eq!(a.generation_id, 2);
    assert_eq!(a.members.len(), 1);
}

#[test]
fn protocol_is_chosen_by_vote_among_protocols_all_members_support() {
    // roundrobin is not supported by c: every member votes for range.
    let mut h = Harness::new();
    let join_with = |h: &mut Harness, group: &str, client: &str, names: &[&str]| {
        h.join(JoinGroupRequest {
            protocols: protocols(names, &["t1"]),
            ..join_req(group, "", client)
        })
    };
    let tokens = [
        join_with(&mut h, "g1", "a", &["roundrobin", "range"]),
        join_with(&mut h, "g1", "b", &["range", "roundrobin"]),
        join_with(&mut h, "g1", "c", &["range"]),
        // All support both; two prefer roundrobin.
        join_with(&mut h, "g2", "a", &["roundrobin", "range"]),
        join_with(&mut h, "g2", "b", &["roundrobin", "range"]),
        join_with(&mut h, "g2", "c", &["range", "roundrobin"]),
        // A tie goes to the protocol voted for first, in join order.
        join_with(&mut h, "g3", "a", &["roundrobin", "range"]),
        join_with(&mut h, "g3", "b", &["range", "roundrobin"]),
    ];
    for token in tokens {
        h.advance_until_answered(token);
    }
    let chosen: Vec<String> = tokens
        .iter()
        .map(|t| h.join_response(*t).protocol_name.unwrap_or_default())
        .collect();
    assert_eq!(
        chosen,
        [
            "range",
            "range",
            "range",
            "roundrobin",
            "roundrobin",
            "roundrobin",
            "roundrobin",
            "roundrobin"
        ]
    );

    // A member sharing no protocol with the group, or of another protocol type, is refused.
    let sticky = join_with(&mut h, "g1", "d", &["sticky"]);
    assert_eq!(
        h.join_response(sticky).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let connect = h.join(JoinGroupRequest {
        protocol_type: "connect".to_string(),
        ..join_req("g1", "", "d")
    });
    assert_eq!(
        h.join_response(connect).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    // A first member with no protocols at all is refused too.
    let none = h.join(JoinGroupRequest {
        protocols: Vec::new(),
        ..join_req("g4", "", "d")
    });
    assert_eq!(
        h.join_response(none).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
}

#[test]
fn leadership_passes_to_the_next_member_in_join_order() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b", "c"]);
    h.advance(1_000);
    let left = h.leave(
        GROUP,
        vec![LeavingMember {
            member_id: ids[0].clone(),
            group_instance_id: None,
        }],
    );
    assert_eq!(left.members[0].error, None);
    let b = h.join(join_req(GROUP, &ids[1], "b"));
    let c = h.join(join_req(GROUP, &ids[2], "c"));
    let (b, c) = (h.join_response(b), h.join_response(c));
    assert_eq!(b.generation_id, 2);
    assert_eq!(b.leader, ids[1]);
    assert_eq!(c.leader, ids[1]);
    assert_eq!(b.members.len(), 2);
    assert!(c.members.is_empty());
}

#[test]
fn invalid_session_timeouts_and_group_ids_are_refused() {
    let mut h = Harness::new();
    for timeout in [5_999, 1_800_001] {
        let token = h.join(JoinGroupRequest {
            session_timeout_ms: timeout,
            ..join_req(GROUP, "", "a")
        });
        assert_eq!(
            h.join_response(token).error,
            Some(GroupError::InvalidSessionTimeout)
        );
    }
    let token = h.join(join_req("", "", "a"));
    assert_eq!(
        h.join_response(token).error,
        Some(GroupError::InvalidGroupId)
    );
    assert_eq!(h.state(GROUP), None);
}

#[test]
fn group_max_size_is_enforced() {
    let mut h = Harness::with_config(GroupConfig {
        group_max_size: 2,
        ..GroupConfig::default()
    });
    let a = h.join(join_req(GROUP, "", "a"));
    let b = h.join(join_req(GROUP, "", "b"));
    let c = h.join(join_req(GROUP, "", "c"));
    let refused = h.join_response(c);
    assert_eq!(refused.error, Some(GroupError::GroupMaxSizeReached));
    assert_eq!(refused.member_id, "");
    h.advance_until_answered(a);
    let (a, b) = (h.join_response(a), h.join_response(b));
    assert_eq!(a.members.len(), 2);
    // Full in CompletingRebalance and Stable as well; members themselves may rejoin.
    let d = h.join(join_req(GROUP, "", "d"));
    assert_eq!(
        h.join_response(d).error,
        Some(GroupError::GroupMaxSizeReached)
    );
    let again = h.join(join_req(GROUP, &b.member_id, "b"));
    let again = h.join_response(again);
    assert_eq!(again.error, None);
    assert_eq!(again.generation_id, 1);
}

#[test]
fn a_duplicate_join_supersedes_the_first() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b"]);
    let first = h.join(join_req(GROUP, &ids[0], "a"));
    let second = h.join(join_req(GROUP, &ids[0], "a"));
    assert_eq!(
        h.join_response(first).error,
        Some(GroupError::RebalanceInProgress)
    );
    assert!(!h.answered(second));
    let b = h.join(join_req(GROUP, &ids[1], "b"));
    assert_eq!(h.join_response(second).generation_id, 2);
    assert_eq!(h.join_response(b).generation_id, 2);
}

// ----- SyncGroup ---------------------------------------------------------------------------

#[test]
fn followers_that_sync_first_wait_for_the_leaders_persisted_assignment() {
    let mut h = Harness::new();
    let a = h.join(join_req(GROUP, "", "a"));
    let b = h.join(join_req(GROUP, "", "b"));
    let c = h.join(join_req(GROUP, "", "c"));
    h.advance_until_answered(a);
    let ids: Vec<String> = [a, b, c]
        .iter()
        .map(|t| h.join_response(*t).member_id)
        .collect();
    h.manual_appends = true;
    let b_sync = h.sync(sync_req(&ids[1], 1, &[]));
    let c_sync = h.sync(sync_req(&ids[2], 1, &[]));
    assert!(!h.answered(b_sync) && !h.answered(c_sync));
    // The leader leaves c out of its assignment: c gets an empty one.
    let a_sync = h.sync(sync_req(&ids[0], 1, &[(&ids[0], "p0"), (&ids[1], "p1")]));
    assert_eq!(h.held.len(), 1, "the assignment is written first");
    assert!(!h.answered(a_sync) && !h.answered(b_sync));
    assert_eq!(h.state(GROUP), Some(GroupState::CompletingRebalance));
    h.release(Ok(()));
    assert_eq!(&h.sync_response(a_sync).assignment[..], b"p0");
    assert_eq!(&h.sync_response(b_sync).assignment[..], b"p1");
    let c_response = h.sync_response(c_sync);
    assert_eq!(c_response.error, None);
    assert!(c_response.assignment.is_empty());
    assert_eq!(h.state(GROUP), Some(GroupState::Stable));

    // The record is Kafka's GroupMetadataValue with the assignment.
    let (_, record) = h.log.last().cloned().unwrap_or_else(|| panic!("no record"));
    let decoded = CoordinatorRecord::decode(&record.key, record.value.as_deref());
    let Ok(CoordinatorRecord::GroupMetadata {
        group,
        value: Some(value),
    }) = decoded
    else {
        panic!("not group metadata: {decoded:?}");
    };
    assert_eq!(group, GROUP);
    assert_eq!(value.generation, 1);
    assert_eq!(value.protocol.as_deref(), Some("range"));
    assert_eq!(value.leader.as_deref(), Some(ids[0].as_str()));
    let assigned: Vec<&[u8]> = value.members.iter().map(|m| &m.assignment[..]).collect();
    assert_eq!(assigned, [&b"p0"[..], b"p1", b""]);

    // A follower syncing once the group is Stable gets its assignment at once.
    let late = h.sync(sync_req(&ids[1], 1, &[]));
    assert_eq!(&h.sync_response(late).assignment[..], b"p1");
}

#[test]
fn a_failed_assignment_write_fails_the_syncs_and_rebalances() {
    let mut h = Harness::new();
    let a = h.join(join_req(GROUP, "", "a"));
    let b = h.join(join_req(GROUP, "", "b"));
    h.advance_until_answered(a);
    let (a, b) = (h.join_response(a).member_id, h.join_response(b).member_id);
    h.manual_appends = true;
    let b_sync = h.sync(sync_req(&b, 1, &[]));
    let a_sync = h.sync(sync_req(&a, 1, &[(&a, "x"), (&b, "y")]));
    h.release(Err(AppendError::NotLeader));
    assert_eq!(
        h.sync_response(a_sync).error,
        Some(GroupError::NotCoordinator)
    );
    assert_eq!(
        h.sync_response(b_sync).error,
        Some(GroupError::NotCoordinator)
    );
    assert_eq!(h.state(GROUP), Some(GroupState::PreparingRebalance));
}

#[test]
fn sync_errors() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b"]);
    let stale = h.sync(sync_req(&ids[1], 0, &[]));
    assert_eq!(
        h.sync_response(stale).error,
        Some(GroupError::IllegalGeneration)
    );
    let unknown = h.sync(sync_req("nobody", 1, &[]));
    assert_eq!(
        h.sync_response(unknown).error,
        Some(GroupError::UnknownMemberId)
    );
    let mut wrong = sync_req(&ids[1], 1, &[]);
    wrong.protocol_name = Some("roundrobin".to_string());
    let wrong = h.sync(wrong);
    assert_eq!(
        h.sync_response(wrong).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    // During a rebalance.
    let _rejoin = h.join(join_req(GROUP, &ids[0], "a"));
    let during = h.sync(sync_req(&ids[1], 1, &[]));
    assert_eq!(
        h.sync_response(during).error,
        Some(GroupError::RebalanceInProgress)
    );
}

#[test]
fn members_that_never_sync_are_removed_after_the_rebalance_timeout() {
    let mut h = Harness::new();
    let a = h.join(join_req(GROUP, "", "a"));
    let b = h.join(join_req(GROUP, "", "b"));
    h.advance_until_answered(a);
    let (a, b) = (h.join_response(a).member_id, h.join_response(b).member_id);
    let a_sync = h.sync(sync_req(&a, 1, &[(&a, "x"), (&b, "y")]));
    assert_eq!(h.sync_response(a_sync).error, None);
    // b heartbeats but never syncs.
    let deadline = h.now + i64::from(REBALANCE_MS);
    while h.now + 3_000 < deadline {
        h.advance(3_000);
        assert_eq!(h.heartbeat(&a, 1), Ok(()));
        assert_eq!(h.heartbeat(&b, 1), Ok(()));
    }
    h.advance_to(deadline);
    assert_eq!(h.state(GROUP), Some(GroupState::PreparingRebalance));
    assert_eq!(h.heartbeat(&b, 1), Err(GroupError::UnknownMemberId));
    assert_eq!(h.heartbeat(&a, 1), Err(GroupError::RebalanceInProgress));
}

// ----- Heartbeat, expiry, rebalance timeout -------------------------------------------------

#[test]
fn heartbeat_answers_rebalance_in_progress_during_a_rebalance() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b"]);
    assert_eq!(h.heartbeat(&ids[0], 1), Ok(()));
    assert_eq!(h.heartbeat(&ids[0], 0), Err(GroupError::IllegalGeneration));
    assert_eq!(h.heartbeat("nobody", 1), Err(GroupError::UnknownMemberId));
    assert_eq!(
        h.heartbeat_in("no-such-group", "m", 1, None),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        h.heartbeat_in("", "m", 1, None),
        Err(GroupError::InvalidGroupId)
    );
    // b changes its subscription: a rebalance starts.
    let b = h.join(JoinGroupRequest {
        protocols: protocols(&["range"], &["t1", "t2"]),
        ..join_req(GROUP, &ids[1], "b")
    });
    assert_eq!(
        h.heartbeat(&ids[0], 1),
        Err(GroupError::RebalanceInProgress)
    );
    let a = h.join(join_req(GROUP, &ids[0], "a"));
    // Everyone rejoined: the join phase ends at once.
    assert_eq!(h.join_response(a).generation_id, 2);
    assert_eq!(h.join_response(b).generation_id, 2);
    assert_eq!(h.heartbeat(&ids[0], 2), Ok(()));
}

#[test]
fn session_expiry_removes_the_member_and_rebalances() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b"]);
    // Sessions restarted when the assignment was handed out, now.
    let t0 = h.now;
    let b_deadline = t0 + i64::from(SESSION_MS);
    for t in [t0 + 3_000, t0 + 6_000, t0 + 9_000] {
        h.advance_to(t);
        assert_eq!(h.heartbeat(&ids[0], 1), Ok(()));
    }
    h.advance_to(b_deadline - 1);
    assert_eq!(h.state(GROUP), Some(GroupState::Stable));
    h.advance_to(b_deadline);
    assert_eq!(h.state(GROUP), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.heartbeat(&ids[0], 1),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(h.heartbeat(&ids[1], 1), Err(GroupError::UnknownMemberId));
    let a = h.join(join_req(GROUP, &ids[0], "a"));
    let a = h.join_response(a);
    assert_eq!(a.generation_id, 2);
    assert_eq!(a.members.len(), 1);
}

#[test]
fn the_rebalance_timeout_removes_members_that_do_not_rejoin() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b"]);
    h.advance(2_000);
    let a = h.join(join_req(GROUP, &ids[0], "a"));
    let end = h.now + i64::from(REBALANCE_MS);
    // b keeps its session alive but ignores the request to rejoin.
    while h.now + 3_000 < end {
        h.advance(3_000);
        assert_eq!(
            h.heartbeat(&ids[1], 1),
            Err(GroupError::RebalanceInProgress)
        );
    }
    h.advance_to(end - 1);
    assert!(!h.answered(a));
    h.advance_to(end);
    let a = h.join_response(a);
    assert_eq!(a.generation_id, 2);
    let members: Vec<&str> = a.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(members, [ids[0].as_str()]);
    assert_eq!(h.heartbeat(&ids[1], 1), Err(GroupError::UnknownMemberId));
}

#[test]
fn a_new_member_is_dropped_if_its_join_outlasts_the_new_member_timeout() {
    let mut h = Harness::with_config(GroupConfig {
        new_member_join_timeout_ms: 5_000,
        ..GroupConfig::default()
    });
    let ids = h.stable_group(GROUP, &["a"]);
    h.advance_to(5_000);
    // c joins; a ignores the rebalance for now (its session is still running).
    let c = h.join(join_req(GROUP, "", "c"));
    h.advance_to(9_999);
    assert!(!h.answered(c));
    h.advance_to(10_000);
    let c = h.join_response(c);
    assert_eq!(c.error, Some(GroupError::UnknownMemberId));
    assert_eq!(h.c.group(GROUP).map(|g| g.num_members()), Some(1));
    assert_eq!(
        h.heartbeat(&ids[0], 1),
        Err(GroupError::RebalanceInProgress)
    );
}

// ----- LeaveGroup --------------------------------------------------------------------------

#[test]
fn leave_triggers_a_rebalance() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b", "c"]);
    let left = h.leave(
        GROUP,
        vec![LeavingMember {
            member_id: ids[1].clone(),
            group_instance_id: None,
        }],
    );
    assert_eq!(left.error, None);
    assert_eq!(left.members.len(), 1);
    assert_eq!(left.members[0].error, None);
    assert_eq!(h.state(GROUP), Some(GroupState::PreparingRebalance));
    let a = h.join(join_req(GROUP, &ids[0], "a"));
    assert!(!h.answered(a));
    let c = h.join(join_req(GROUP, &ids[2], "c"));
    let (a, c) = (h.join_response(a), h.join_response(c));
    assert_eq!(a.generation_id, 2);
    assert_eq!(c.generation_id, 2);
    assert_eq!(a.members.len(), 2);
}

#[test]
fn batched_leave_with_static_members_and_per_member_results() {
    let mut h = Harness::new();
    let s = h.join(static_join_req(GROUP, "", "inst-s", 5));
    let d = h.join(join_req(GROUP, "", "d"));
    h.advance_until_answered(s);
    let (s, d) = (h.join_response(s).member_id, h.join_response(d).member_id);
    assert!(
        s.starts_with("inst-s-"),
        "static member ids start with the instance id"
    );
    let syncs = [
        h.sync(sync_req(&d, 1, &[])),
        h.sync(sync_req(&s, 1, &[(&s, "x"), (&d, "y")])),
    ];
    for token in syncs {
        assert_eq!(h.sync_response(token).error, None);
    }
    let left = h.leave(
        GROUP,
        vec![
            LeavingMember {
                member_id: d.clone(),
                group_instance_id: None,
            },
            // A static member removed by instance id alone (the admin client's way).
            LeavingMember {
                member_id: String::new(),
                group_instance_id: Some("inst-s".to_string()),
            },
            LeavingMember {
                member_id: "nobody".to_string(),
                group_instance_id: None,
            },
            LeavingMember {
                member_id: String::new(),
                group_instance_id: Some("inst-unknown".to_string()),
            },
        ],
    );
    let results: Vec<Option<GroupError>> = left.members.iter().map(|m| m.error).collect();
    assert_eq!(
        results,
        [
            None,
            None,
            Some(GroupError::UnknownMemberId),
            Some(GroupError::UnknownMemberId)
        ]
    );
    assert_eq!(left.members[1].group_instance_id.as_deref(), Some("inst-s"));
    // Everyone left: the group is Empty at the next generation, and says so in the log.
    assert_eq!(h.state(GROUP), Some(GroupState::Empty));
    assert_eq!(h.generation(GROUP), 2);
    let (_, record) = h.log.last().cloned().unwrap_or_else(|| panic!("no record"));
    let decoded = CoordinatorRecord::decode(&record.key, record.value.as_deref());
    let Ok(CoordinatorRecord::GroupMetadata {
        value: Some(value), ..
    }) = decoded
    else {
        panic!("not group metadata: {decoded:?}");
    };
    assert_eq!(value.generation, 2);
    assert!(value.members.is_empty());
    assert_eq!(value.protocol, None);
    assert_eq!(value.protocol_type, "consumer");

    let unknown_group = h.leave(
        "no-such-group",
        vec![LeavingMember {
            member_id: "m".to_string(),
            group_instance_id: None,
        }],
    );
    assert_eq!(unknown_group.error, Some(GroupError::UnknownMemberId));
}

#[test]
fn leaving_while_waiting_in_join_answers_the_join() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b"]);
    let a = h.join(join_req(GROUP, &ids[0], "a"));
    h.leave(
        GROUP,
        vec![LeavingMember {
            member_id: ids[0].clone(),
            group_instance_id: None,
        }],
    );
    let a = h.join_response(a);
    assert_eq!(a.error, Some(GroupError::UnknownMemberId));
    assert_eq!(a.member_id, "");
}

// ----- Static membership (KIP-345) ---------------------------------------------------------

/// A Stable group with a static leader `inst-s` and a dynamic follower; returns their ids.
fn static_group(h: &mut Harness) -> (String, String) {
    let s = h.join(static_join_req(GROUP, "", "inst-s", 5));
    let d = h.join(join_req(GROUP, "", "d"));
    h.advance_until_answered(s);
    let (s, d) = (h.join_response(s), h.join_response(d));
    assert_eq!(s.leader, s.member_id);
    let (s, d) = (s.member_id, d.member_id);
    let syncs = [
        h.sync(sync_req(&d, 1, &[])),
        h.sync(sync_req(&s, 1, &[(&s, "as"), (&d, "ad")])),
    ];
    for token in syncs {
        assert_eq!(h.sync_response(token).error, None);
    }
    (s, d)
}

#[test]
fn a_restarted_static_member_gets_its_assignment_back_without_a_rebalance() {
    let mut h = Harness::new();
    let (old, d) = static_group(&mut h);
    h.advance(2_000);
    h.manual_appends = true;
    let restart = h.join(static_join_req(GROUP, "", "inst-s", 5));
    // The new member id is persisted before the member is told.
    assert_eq!(h.held.len(), 1);
    assert!(!h.answered(restart));
    h.release(Ok(()));
    h.manual_appends = false;
    let restart = h.join_response(restart);
    assert_eq!(restart.error, None);
    assert_ne!(restart.member_id, old);
    assert!(restart.member_id.starts_with("inst-s-"));
    assert_eq!(restart.generation_id, 1, "no new generation");
    // Before v9 the old leader id is returned so the member does not run an assignment.
    assert_eq!(restart.leader, old);
    assert!(restart.members.is_empty());
    assert!(!restart.skip_assignment);
    assert_eq!(h.state(GROUP), Some(GroupState::Stable));
    assert_eq!(h.generation(GROUP), 1);

    let sync = h.sync(SyncGroupRequest {
        group_instance_id: Some("inst-s".to_string()),
        ..sync_req(&restart.member_id, 1, &[])
    });
    assert_eq!(&h.sync_response(sync).assignment[..], b"as");
    // The other member never notices.
    assert_eq!(h.heartbeat(&d, 1), Ok(()));
    // The old instance is fenced.
    assert_eq!(
        h.heartbeat_in(GROUP, &old, 1, Some("inst-s")),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(h.heartbeat(&old, 1), Err(GroupError::UnknownMemberId));
    let commit = h.commit(OffsetCommitRequest {
        group_instance_id: Some("inst-s".to_string()),
        ..commit_req(GROUP, &old, 1, &[("t1", 0, 5)])
    });
    assert_eq!(
        errors(&h.commit_response(commit).partitions),
        [Some(GroupError::FencedInstanceId)]
    );
    let old_join = h.join(static_join_req(GROUP, &old, "inst-s", 5));
    assert_eq!(
        h.join_response(old_join).error,
        Some(GroupError::FencedInstanceId)
    );
}

#[test]
fn a_restarted_static_leader_on_v9_is_told_to_skip_the_assignment() {
    let mut h = Harness::new();
    let (_old, _d) = static_group(&mut h);
    let restart = h.join(static_join_req(GROUP, "", "inst-s", 9));
    let restart = h.join_response(restart);
    assert_eq!(restart.error, None);
    assert_eq!(restart.leader, restart.member_id);
    assert!(restart.skip_assignment);
    assert_eq!(restart.members.len(), 2);
    assert_eq!(h.state(GROUP), Some(GroupState::Stable));
}

#[test]
fn a_static_restart_with_a_new_subscription_rebalances() {
    let mut h = Harness::new();
    static_group(&mut h);
    let restart = h.join(JoinGroupRequest {
        protocols: protocols(&["range"], &["t1", "t9"]),
        ..static_join_req(GROUP, "", "inst-s", 5)
    });
    assert!(!h.answered(restart));
    assert_eq!(h.state(GROUP), Some(GroupState::PreparingRebalance));
}

#[test]
fn a_failed_static_replacement_is_undone() {
    let mut h = Harness::new();
    let (old, _d) = static_group(&mut h);
    h.manual_appends = true;
    let restart = h.join(static_join_req(GROUP, "", "inst-s", 5));
    h.release(Err(AppendError::NotEnoughReplicas));
    let restart = h.join_response(restart);
    assert_eq!(restart.error, Some(GroupError::CoordinatorNotAvailable));
    assert_eq!(restart.member_id, "");
    // The old member id is still the instance's.
    assert_eq!(h.heartbeat_in(GROUP, &old, 1, Some("inst-s")), Ok(()));
}

#[test]
fn a_duplicate_static_instance_fences_the_waiting_one() {
    let mut h = Harness::new();
    let s = h.join(static_join_req(GROUP, "", "inst-s", 5));
    let d = h.join(join_req(GROUP, "", "d"));
    let e = h.join(join_req(GROUP, "", "e"));
    h.advance_until_answered(s);
    let (s, d, e) = (
        h.join_response(s).member_id,
        h.join_response(d).member_id,
        h.join_response(e).member_id,
    );
    // A rebalance (d changes its subscription) in which the static member has rejoined and
    // e has not yet.
    let d_join = h.join(JoinGroupRequest {
        protocols: protocols(&["range"], &["t1", "t2"]),
        ..join_req(GROUP, &d, "d")
    });
    let s_join = h.join(static_join_req(GROUP, &s, "inst-s", 5));
    assert_eq!(h.state(GROUP), Some(GroupState::PreparingRebalance));
    // A second process with the same group.instance.id takes the place.
    let duplicate = h.join(static_join_req(GROUP, "", "inst-s", 5));
    let fenced = h.join_response(s_join);
    assert_eq!(fenced.error, Some(GroupError::FencedInstanceId));
    assert_eq!(fenced.member_id, s);
    assert!(!h.answered(duplicate));
    let e_join = h.join(join_req(GROUP, &e, "e"));
    let duplicate = h.join_response(duplicate);
    assert_eq!(duplicate.error, None);
    assert_ne!(duplicate.member_id, s);
    assert_eq!(duplicate.generation_id, 2);
    assert_eq!(
        duplicate.leader, duplicate.member_id,
        "leadership moves with the instance"
    );
    assert_eq!(h.join_response(d_join).generation_id, 2);
    assert_eq!(h.join_response(e_join).generation_id, 2);
    // The fenced process cannot come back under its old id.
    assert_eq!(
        h.heartbeat_in(GROUP, &s, 2, Some("inst-s")),
        Err(GroupError::FencedInstanceId)
    );
}

// ----- Offsets -----------------------------------------------------------------------------

#[test]
fn committed_offsets_round_trip_with_metadata_and_leader_epoch() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a"]);
    h.manual_appends = true;
    let mut req = commit_req(
        GROUP,
        &ids[0],
        1,
        &[("t1", 0, 10), ("t1", 1, 20), ("t1", 2, 30)],
    );
    req.partitions[0].leader_epoch = 3;
    req.partitions[0].metadata = Some("checkpoint-7".to_string());
    req.partitions[2].metadata = Some("x".repeat(4_097));
    let commit = h.commit(req);
    // Not visible, nor answered, until the append completes.
    assert!(!h.answered(commit));
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, -1);
    h.release(Ok(()));
    assert_eq!(
        errors(&h.commit_response(commit).partitions),
        [None, None, Some(GroupError::OffsetMetadataTooLarge)]
    );
    let fetched = h.fetch(GROUP, "t1", 0);
    assert_eq!(
        (
            fetched.offset,
            fetched.leader_epoch,
            fetched.metadata.as_str()
        ),
        (10, 3, "checkpoint-7")
    );
    let fetched = h.fetch(GROUP, "t1", 1);
    assert_eq!(
        (
            fetched.offset,
            fetched.leader_epoch,
            fetched.metadata.as_str()
        ),
        (20, -1, "")
    );
    assert_eq!(h.fetch(GROUP, "t1", 2).offset, -1);
    let all = h.c.offset_fetch(GROUP, None).unwrap_or_default();
    let listed: Vec<(i32, i64)> = all.iter().map(|o| (o.partition, o.offset)).collect();
    assert_eq!(listed, [(0, 10), (1, 20)]);
    // A failed append answers with the mapped error and changes nothing.
    let failed = h.commit(commit_req(GROUP, &ids[0], 1, &[("t1", 0, 11)]));
    h.release(Err(AppendError::RecordTooLarge));
    assert_eq!(
        errors(&h.commit_response(failed).partitions),
        [Some(GroupError::InvalidCommitOffsetSize)]
    );
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, 10);
    // A partition named twice in one commit ends with the later value, as the log does.
    let twice = h.commit(commit_req(GROUP, &ids[0], 1, &[("t1", 5, 1), ("t1", 5, 2)]));
    h.release(Ok(()));
    assert_eq!(errors(&h.commit_response(twice).partitions), [None, None]);
    assert_eq!(h.fetch(GROUP, "t1", 5).offset, 2);
}

#[test]
fn commits_from_stale_generations_and_unknown_members_are_refused() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b"]);
    let cases = [
        (
            commit_req(GROUP, &ids[0], 0, &[("t1", 0, 1)]),
            GroupError::IllegalGeneration,
        ),
        (
            commit_req(GROUP, "nobody", 1, &[("t1", 0, 1)]),
            GroupError::UnknownMemberId,
        ),
        // A standalone commit to a group with members.
        (
            commit_req(GROUP, "", -1, &[("t1", 0, 1)]),
            GroupError::UnknownMemberId,
        ),
        // A generation for a group that does not exist.
        (
            commit_req("no-such-group", "m", 5, &[("t1", 0, 1)]),
            GroupError::IllegalGeneration,
        ),
    ];
    for (req, expected) in cases {
        let token = h.commit(req);
        assert_eq!(
            errors(&h.commit_response(token).partitions),
            [Some(expected)]
        );
    }
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, -1);
    // During a rebalance the current generation may still commit...
    let _rejoin = h.join(join_req(GROUP, &ids[0], "a"));
    let during = h.commit(commit_req(GROUP, &ids[1], 1, &[("t1", 0, 7)]));
    assert_eq!(errors(&h.commit_response(during).partitions), [None]);
    // ...but not once the new generation is waiting for its assignment.
    let b = h.join(join_req(GROUP, &ids[1], "b"));
    assert_eq!(h.join_response(b).generation_id, 2);
    let completing = h.commit(commit_req(GROUP, &ids[1], 2, &[("t1", 0, 8)]));
    assert_eq!(
        errors(&h.commit_response(completing).partitions),
        [Some(GroupError::RebalanceInProgress)]
    );
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, 7);
}

#[test]
fn standalone_consumers_commit_to_groups_nobody_joined() {
    let mut h = Harness::new();
    let first = h.commit(commit_req("solo", "", -1, &[("t1", 0, 42)]));
    assert_eq!(errors(&h.commit_response(first).partitions), [None]);
    assert_eq!(h.state("solo"), Some(GroupState::Empty));
    assert_eq!(h.fetch("solo", "t1", 0).offset, 42);
    let second = h.commit(commit_req("solo", "", -1, &[("t1", 0, 43)]));
    assert_eq!(errors(&h.commit_response(second).partitions), [None]);
    assert_eq!(h.fetch("solo", "t1", 0).offset, 43);
    // Kafka accepts commits for the empty group id.
    let empty = h.commit(commit_req("", "", -1, &[("t1", 0, 1)]));
    assert_eq!(errors(&h.commit_response(empty).partitions), [None]);
    // Fetching a group that does not exist answers -1, without error.
    assert_eq!(h.fetch("nobody", "t1", 0).offset, -1);
    assert_eq!(h.c.offset_fetch("nobody", None), Ok(Vec::new()));
    let listed = h.c.list_groups(&[]);
    let solo = listed.groups.iter().find(|g| g.group_id == "solo");
    assert_eq!(solo.map(|g| g.protocol_type.as_str()), Some(""));
}

fn retention_config() -> GroupConfig {
    GroupConfig {
        offsets_retention_minutes: 1,
        offsets_retention_check_interval_ms: 10_000,
        ..GroupConfig::default()
    }
}

/// Heartbeats `member` every 3 seconds until `until`.
fn keep_alive(h: &mut Harness, member: &str, generation: i32, until: i64) {
    while h.now + 3_000 <= until {
        h.advance(3_000);
        assert_eq!(h.heartbeat(member, generation), Ok(()));
    }
    h.advance_to(until);
}

#[test]
fn offsets_of_an_empty_group_expire_counted_from_when_it_became_empty() {
    let mut h = Harness::with_config(retention_config());
    let ids = h.stable_group(GROUP, &["a"]);
    h.advance_to(4_000);
    let commit = h.commit(commit_req(GROUP, &ids[0], 1, &[("t1", 0, 5)]));
    assert_eq!(errors(&h.commit_response(commit).partitions), [None]);
    keep_alive(&mut h, &ids[0], 1, 50_000);
    h.leave(
        GROUP,
        vec![LeavingMember {
            member_id: ids[0].clone(),
            group_instance_id: None,
        }],
    );
    assert_eq!(h.state(GROUP), Some(GroupState::Empty));
    // 66 s after the commit but only 20 s after the group emptied: kept.
    h.advance_to(70_000);
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, 5);
    h.advance_to(109_999);
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, 5);
    h.advance_to(110_000);
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, -1);
    // No offsets left: the empty group is deleted, with tombstones in the log.
    assert_eq!(h.state(GROUP), None);
    let tail: Vec<Option<Bytes>> = h
        .log
        .iter()
        .rev()
        .take(2)
        .map(|(_, r)| r.value.clone())
        .collect();
    assert_eq!(tail, [None, None]);
}

#[test]
fn standalone_offsets_expire_from_their_commit() {
    let mut h = Harness::with_config(retention_config());
    h.advance_to(5_000);
    let commit = h.commit(commit_req("solo", "", -1, &[("t1", 0, 1)]));
    assert_eq!(errors(&h.commit_response(commit).partitions), [None]);
    // An explicit retention (OffsetCommit v2-v4) overrides the broker's.
    let explicit = h.commit(OffsetCommitRequest {
        retention_time_ms: Some(20_000),
        ..commit_req("solo2", "", -1, &[("t1", 0, 1)])
    });
    assert_eq!(errors(&h.commit_response(explicit).partitions), [None]);
    h.advance_to(30_000);
    assert_eq!(h.fetch("solo2", "t1", 0).offset, -1);
    assert_eq!(h.state("solo2"), None);
    h.advance_to(60_000);
    assert_eq!(h.fetch("solo", "t1", 0).offset, 1);
    h.advance_to(70_000);
    assert_eq!(h.fetch("solo", "t1", 0).offset, -1);
    assert_eq!(h.state("solo"), None);
}

#[test]
fn a_stable_group_keeps_offsets_of_subscribed_topics_only() {
    let mut h = Harness::with_config(retention_config());
    let ids = h.stable_group(GROUP, &["a"]);
    h.advance_to(4_000);
    let commit = h.commit(commit_req(GROUP, &ids[0], 1, &[("t1", 0, 5), ("t9", 0, 6)]));
    assert_eq!(errors(&h.commit_response(commit).partitions), [None, None]);
    keep_alive(&mut h, &ids[0], 1, 70_000);
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, 5);
    assert_eq!(h.fetch(GROUP, "t9", 0).offset, -1);
    assert_eq!(h.state(GROUP), Some(GroupState::Stable));
}

// ----- DeleteGroups, OffsetDelete ----------------------------------------------------------

#[test]
fn delete_groups_deletes_only_empty_groups() {
    let mut h = Harness::new();
    h.stable_group(GROUP, &["a"]);
    let commit = h.commit(commit_req("solo", "", -1, &[("t1", 0, 1), ("t2", 0, 2)]));
    h.commit_response(commit);
    let delete = h.delete_groups(&["solo", GROUP, "nobody"]);
    let results: Vec<Option<GroupError>> = h
        .delete_response(delete)
        .results
        .iter()
        .map(|(_, e)| *e)
        .collect();
    assert_eq!(
        results,
        [
            None,
            Some(GroupError::NonEmptyGroup),
            Some(GroupError::GroupIdNotFound)
        ]
    );
    assert_eq!(h.state("solo"), None);
    assert_eq!(h.fetch("solo", "t1", 0).offset, -1);
    // Two offset tombstones and a group tombstone.
    let tail: Vec<Option<Bytes>> = h
        .log
        .iter()
        .rev()
        .take(3)
        .map(|(_, r)| r.value.clone())
        .collect();
    assert_eq!(tail, [None, None, None]);
}

#[test]
fn delete_groups_answers_after_every_partition_appended() {
    let mut h = Harness::new();
    // Two groups in different __consumer_offsets partitions.
    let (x, y) = ("a", "ab");
    assert_ne!(partition_for(x, 50), partition_for(y, 50));
    for group in [x, y] {
        let commit = h.commit(commit_req(group, "", -1, &[("t1", 0, 1)]));
        h.commit_response(commit);
    }
    h.manual_appends = true;
    let delete = h.delete_groups(&[x, y]);
    assert_eq!(h.held.len(), 2);
    let x_partition = partition_for(x, 50);
    let (x_append, y_append): (Vec<Append>, Vec<Append>) = std::mem::take(&mut h.held)
        .into_iter()
        .partition(|a| a.partition == x_partition);
    for append in x_append {
        h.apply(append, Ok(()));
    }
    assert!(!h.answered(delete));
    for append in y_append {
        h.apply(append, Err(AppendError::NotLeader));
    }
    let results: Vec<Option<GroupError>> = h
        .delete_response(delete)
        .results
        .iter()
        .map(|(_, e)| *e)
        .collect();
    assert_eq!(results, [None, Some(GroupError::NotCoordinator)]);
}

#[test]
fn offset_delete_refuses_subscribed_topics_of_active_consumer_groups() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a"]);
    let commit = h.commit(commit_req(GROUP, &ids[0], 1, &[("t1", 0, 1), ("t2", 0, 2)]));
    h.commit_response(commit);
    let delete = h.offset_delete(GROUP, &[("t1", 0), ("t2", 0), ("t3", 0)]);
    let response = h.offset_delete_response(delete);
    assert_eq!(response.error, None);
    assert_eq!(
        errors(&response.partitions),
        [Some(GroupError::GroupSubscribedToTopic), None, None]
    );
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, 1);
    assert_eq!(h.fetch(GROUP, "t2", 0).offset, -1);

    // An empty group: anything goes.
    let commit = h.commit(commit_req("solo", "", -1, &[("t1", 0, 1)]));
    h.commit_response(commit);
    let delete = h.offset_delete("solo", &[("t1", 0)]);
    assert_eq!(errors(&h.offset_delete_response(delete).partitions), [None]);
    assert_eq!(h.fetch("solo", "t1", 0).offset, -1);

    // An active group of another protocol type, and a group that does not exist.
    let _connect = h.join(JoinGroupRequest {
        protocol_type: "connect".to_string(),
        ..join_req("workers", "", "w")
    });
    let delete = h.offset_delete("workers", &[("t1", 0)]);
    assert_eq!(
        h.offset_delete_response(delete).error,
        Some(GroupError::NonEmptyGroup)
    );
    let delete = h.offset_delete("nobody", &[("t1", 0)]);
    assert_eq!(
        h.offset_delete_response(delete).error,
        Some(GroupError::GroupIdNotFound)
    );
}

#[test]
fn offset_delete_wins_over_a_commit_still_in_flight() {
    let mut h = Harness::new();
    let commit = h.commit(commit_req("solo", "", -1, &[("t1", 0, 1)]));
    h.commit_response(commit);
    h.manual_appends = true;
    let late = h.commit(commit_req("solo", "", -1, &[("t1", 0, 2)]));
    let delete = h.offset_delete("solo", &[("t1", 0)]);
    // The log holds the commit, then the tombstone: the partition ends deleted.
    h.release(Ok(()));
    assert_eq!(errors(&h.commit_response(late).partitions), [None]);
    assert_eq!(errors(&h.offset_delete_response(delete).partitions), [None]);
    assert_eq!(h.fetch("solo", "t1", 0).offset, -1);
}

// ----- ListGroups, DescribeGroups ----------------------------------------------------------

#[test]
fn list_and_describe_groups() {
    let mut h = Harness::new();
    let ids = h.stable_group("g1", &["a", "b"]);
    let commit = h.commit(commit_req("g2", "", -1, &[("t1", 0, 1)]));
    h.commit_response(commit);
    let _joining = h.join(join_req("g3", "", "c"));

    let all = h.c.list_groups(&[]);
    assert_eq!(all.error, None);
    let listed: Vec<(&str, GroupState)> = all
        .groups
        .iter()
        .map(|g| (g.group_id.as_str(), g.state))
        .collect();
    assert_eq!(
        listed,
        [
            ("g1", GroupState::Stable),
            ("g2", GroupState::Empty),
            ("g3", GroupState::PreparingRebalance)
        ]
    );
    let stable = h.c.list_groups(&["stable".to_string()]);
    assert_eq!(stable.groups.len(), 1);
    assert_eq!(stable.groups[0].protocol_type, "consumer");
    let some =
        h.c.list_groups(&["Empty".to_string(), "PreparingRebalance".to_string()]);
    let names: Vec<&str> = some.groups.iter().map(|g| g.group_id.as_str()).collect();
    assert_eq!(names, ["g2", "g3"]);

    let g1 = h.c.describe_group("g1");
    assert_eq!(g1.error, None);
    assert_eq!(g1.state.name(), "Stable");
    assert_eq!(g1.protocol_type, "consumer");
    assert_eq!(g1.protocol_data, "range");
    let members: Vec<(&str, &str, &str, &[u8])> = g1
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.as_str(),
                m.client_id.as_str(),
                m.client_host.as_str(),
                &m.assignment[..],
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            (ids[0].as_str(), "a", "/127.0.0.1", &b"asg-a"[..]),
            (ids[1].as_str(), "b", "/127.0.0.1", &b"asg-b"[..]),
        ]
    );
    assert_eq!(g1.members[0].metadata, subscription(&["t1"]));

    let g3 = h.c.describe_group("g3");
    assert_eq!(g3.state.name(), "PreparingRebalance");
    assert_eq!(g3.protocol_data, "");
    assert!(g3.members[0].metadata.is_empty() && g3.members[0].assignment.is_empty());

    let missing = h.c.describe_group("nobody");
    assert_eq!((missing.error, missing.state.name()), (None, "Dead"));
}

// ----- Coordinator ownership ---------------------------------------------------------------

#[test]
fn groups_of_partitions_not_led_or_still_loading_are_refused() {
    let mut c = GroupCoordinator::with_seed(GroupConfig::default(), 1);
    let partition = c.partition_for(GROUP);
    let out = c.join_group(0, 1, join_req(GROUP, "", "a"));
    assert_eq!(
        out.responses,
        [(
            1,
            Response::JoinGroup(JoinGroupResponse::error("", GroupError::NotCoordinator))
        )]
    );
    assert!(c.begin_loading(partition).is_empty());
    let out = c.join_group(0, 2, join_req(GROUP, "", "a"));
    assert_eq!(
        out.responses,
        [(
            2,
            Response::JoinGroup(JoinGroupResponse::error(
                "",
                GroupError::CoordinatorLoadInProgress
            ))
        )]
    );
    assert_eq!(
        c.offset_fetch(GROUP, None),
        Err(GroupError::CoordinatorLoadInProgress)
    );
    assert_eq!(
        c.list_groups(&[]).error,
        Some(GroupError::CoordinatorLoadInProgress)
    );
    assert_eq!(
        c.describe_group(GROUP).error,
        Some(GroupError::CoordinatorLoadInProgress)
    );
    assert!(c.finish_loading(partition, 0).is_empty());
    assert_eq!(c.list_groups(&[]).error, None);
}

#[test]
fn unloading_answers_everything_that_waited() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b"]);
    let rejoin = h.join(join_req(GROUP, &ids[0], "a"));
    h.manual_appends = true;
    let commit = h.commit(commit_req("solo", "", -1, &[("t1", 0, 1)]));
    let partition = h.c.partition_for(GROUP);
    let solo_partition = h.c.partition_for("solo");
    let mut out = h.c.unload(partition);
    if solo_partition != partition {
        out.extend(h.c.unload(solo_partition));
    }
    h.absorb(out);
    assert_eq!(
        h.join_response(rejoin).error,
        Some(GroupError::NotCoordinator)
    );
    assert_eq!(
        errors(&h.commit_response(commit).partitions),
        [Some(GroupError::NotCoordinator)]
    );
    assert_eq!(h.state(GROUP), None);
    assert_eq!(h.heartbeat(&ids[1], 1), Err(GroupError::NotCoordinator));
    // The held append completing later is ignored.
    h.release(Ok(()));
    assert!(h.responses.is_empty());
}

// ----- Replay ------------------------------------------------------------------------------

/// Loads every partition of a fresh coordinator from `log`.
fn replayed(log: &[(i32, Record)], config: GroupConfig, now_ms: i64) -> GroupCoordinator {
    let mut c = GroupCoordinator::with_seed(config.clone(), 99);
    for partition in 0..config.offsets_topic_num_partitions {
        assert!(c.begin_loading(partition).is_empty());
    }
    for (partition, record) in log {
        let replay = c.replay(*partition, &record.key, record.value.as_deref());
        assert_eq!(replay, Ok(()));
    }
    for partition in 0..config.offsets_topic_num_partitions {
        assert!(c.finish_loading(partition, now_ms).is_empty());
    }
    c.check_invariants();
    c
}

#[test]
fn replaying_the_records_rebuilds_groups_and_offsets() {
    let mut h = Harness::new();
    // g1: two dynamic members with commits.
    let g1 = h.stable_group("g1", &["a", "b"]);
    let mut req = commit_req("g1", &g1[0], 1, &[("t1", 0, 10), ("t1", 1, 11)]);
    req.partitions[0].leader_epoch = 4;
    req.partitions[0].metadata = Some("meta".to_string());
    let commit = h.commit(req);
    h.commit_response(commit);
    // g: a static member that restarted (its new id was persisted).
    let (_old, _d) = static_group(&mut h);
    let restart = h.join(static_join_req(GROUP, "", "inst-s", 5));
    let new_static = h.join_response(restart).member_id;
    // solo: standalone offsets, one of them deleted.
    let commit = h.commit(commit_req("solo", "", -1, &[("t1", 0, 1), ("t2", 0, 2)]));
    h.commit_response(commit);
    let delete = h.offset_delete("solo", &[("t2", 0)]);
    h.offset_delete_response(delete);
    // gone: deleted.
    let commit = h.commit(commit_req("gone", "", -1, &[("t1", 0, 1)]));
    h.commit_response(commit);
    let delete = h.delete_groups(&["gone"]);
    h.delete_response(delete);
    // emptied: everyone left after committing.
    let emptied = h.stable_group("emptied", &["e"]);
    let commit = h.commit(commit_req("emptied", &emptied[0], 1, &[("t1", 0, 99)]));
    h.commit_response(commit);
    h.leave(
        "emptied",
        vec![LeavingMember {
            member_id: emptied[0].clone(),
            group_instance_id: None,
        }],
    );

    let c = replayed(&h.log, GroupConfig::default(), h.now);
    assert_eq!(c.list_groups(&[]), h.c.list_groups(&[]));
    for group in ["g1", GROUP, "solo", "emptied", "gone"] {
        assert_eq!(
            c.describe_group(group),
            h.c.describe_group(group),
            "{group}"
        );
        assert_eq!(
            c.offset_fetch(group, None),
            h.c.offset_fetch(group, None),
            "{group}"
        );
        let (original, loaded) = (h.c.group(group), c.group(group));
        assert_eq!(
            original.map(|g| (g.generation_id, g.leader_id().map(str::to_string))),
            loaded.map(|g| (g.generation_id, g.leader_id().map(str::to_string))),
            "{group}"
        );
    }
    assert_eq!(c.describe_group(GROUP).members[0].member_id, new_static);
    assert_eq!(c.group_state("gone"), None);
    assert_eq!(
        c.group("emptied").and_then(|g| g.state_timestamp_ms),
        h.c.group("emptied").and_then(|g| g.state_timestamp_ms)
    );
    let fetched = c
        .offset_fetch("g1", Some(&[("t1".to_string(), 0)]))
        .unwrap_or_default();
    assert_eq!(
        (
            fetched[0].offset,
            fetched[0].leader_epoch,
            fetched[0].metadata.as_str()
        ),
        (10, 4, "meta")
    );
}

#[test]
fn members_of_a_replayed_group_heartbeat_on_and_expire_if_they_do_not() {
    let mut h = Harness::new();
    let ids = h.stable_group(GROUP, &["a", "b"]);
    let mut loaded = Harness::new();
    loaded.c = replayed(&h.log, GroupConfig::default(), 100_000);
    loaded.now = 100_000;
    assert_eq!(loaded.state(GROUP), Some(GroupState::Stable));
    for t in [103_000, 106_000, 109_000] {
        loaded.advance_to(t);
        assert_eq!(loaded.heartbeat(&ids[0], 1), Ok(()));
    }
    loaded.advance_to(100_000 + i64::from(SESSION_MS));
    assert_eq!(
        loaded.heartbeat(&ids[1], 1),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        loaded.heartbeat(&ids[0], 1),
        Err(GroupError::RebalanceInProgress)
    );
}

#[test]
fn replay_refuses_records_that_do_not_belong() {
    let mut c = GroupCoordinator::new(GroupConfig::default());
    let record = CoordinatorRecord::GroupMetadata {
        group: "a".to_string(),
        value: None,
    }
    .encode();
    assert_eq!(
        c.replay(47, &record.key, None),
        Err(ReplayError::NotLoading(47))
    );
    c.begin_loading(3);
    assert_eq!(
        c.replay(3, &record.key, None),
        Err(ReplayError::WrongPartition {
            group: "a".to_string(),
            expected: 47,
            actual: 3
        })
    );
    assert!(matches!(
        c.replay(3, &[0, 9], None),
        Err(ReplayError::Record(RecordError::UnknownKeyVersion(9)))
    ));
}

// ----- Determinism -------------------------------------------------------------------------

#[test]
fn seeded_coordinators_hand_out_the_same_member_ids() {
    let run = || {
        let mut h = Harness::new();
        h.stable_group(GROUP, &["a", "b"])
    };
    assert_eq!(run(), run());
}

// ----- Randomized simulation ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum ClientState {
    Idle,
    Joining(RequestToken),
    Syncing(RequestToken),
    Stable,
    Crashed,
}

#[derive(Debug)]
struct SimClient {
    group: &'static str,
    client_id: String,
    instance: Option<String>,
    api_version: i16,
    member_id: String,
    generation: i32,
    state: ClientState,
    topics: Vec<&'static str>,
    /// Every member id this client was given (a static member's assignment survives restarts).
    past_ids: Vec<String>,
}

impl SimClient {
    fn join_req(&self) -> JoinGroupRequest {
        JoinGroupRequest {
            api_version: self.api_version,
            group_instance_id: self.instance.clone(),
            protocols: protocols(&["range", "roundrobin"], &self.topics),
            ..join_req(self.group, &self.member_id, &self.client_id)
        }
    }

    fn forget_membership(&mut self) {
        self.member_id.clear();
        self.generation = -1;
    }
}

/// Whether an append may be failed without making the log and memory disagree: commits,
/// assignments and static replacements are undone on failure; tombstones and empty-group
/// records are not (as in Kafka, a failed one is retried by the next write or expiry).
fn may_fail(append: &Append) -> bool {
    append.records.iter().all(|record| {
        match CoordinatorRecord::decode(&record.key, record.value.as_deref()) {
            Ok(CoordinatorRecord::OffsetCommit { value: Some(_), .. }) => true,
            Ok(CoordinatorRecord::GroupMetadata {
                value: Some(value), ..
            }) => !value.members.is_empty(),
            _ => false,
        }
    })
}

fn simulate(seed: u64, steps: usize) {
    let mut rng = SplitMix(seed);
    let mut h = Harness::new();
    h.manual_appends = true;
    let groups: [&'static str; 2] = ["sim-a", "sim-b"];
    let mut clients: Vec<SimClient> = (0..8)
        .map(|i| SimClient {
            group: groups[i % 2],
            client_id: format!("c{i}"),
            instance: (i % 3 == 0).then(|| format!("inst-{i}")),
            api_version: [3, 4, 5, 9][i % 4],
            member_id: String::new(),
            generation: -1,
            state: ClientState::Idle,
            topics: if i % 4 == 1 {
                vec!["t1", "t2"]
            } else {
                vec!["t1"]
            },
            past_ids: Vec::new(),
        })
        .collect();
    let mut outstanding: Vec<RequestToken> = Vec::new();
    // Odd seeds: clients slow against the 10 s session (expiries, fencing, pending members);
    // even seeds: clients that keep up (stable groups, static restarts without rebalances).
    let max_step_ms = if seed % 2 == 0 { 400 } else { 2_500 };

    for _ in 0..steps {
        let i = rng.below(clients.len() as u64) as usize;
        match clients[i].state.clone() {
            ClientState::Crashed => {
                if rng.chance(10) {
                    // A restart: a static member keeps its instance id, nothing else.
                    clients[i].forget_membership();
                    clients[i].state = ClientState::Idle;
                }
            }
            ClientState::Idle => {
                let token = h.join(clients[i].join_req());
                outstanding.push(token);
                clients[i].state = ClientState::Joining(token);
            }
            ClientState::Joining(token) => {
                if let Some(Response::JoinGroup(r)) = h.responses.get(&token).cloned() {
                    match r.error {
                        None => {
                            assert!(r.generation_id >= clients[i].generation);
                            clients[i].member_id = r.member_id.clone();
                            clients[i].past_ids.push(r.member_id.clone());
                            clients[i].generation = r.generation_id;
                            let assignments: Vec<(String, Bytes)> = if r.skip_assignment {
                                Vec::new()
                            } else {
                                r.members
                                    .iter()
                                    .map(|m| {
                                        (m.member_id.clone(), Bytes::from(m.member_id.clone()))
                                    })
                                    .collect()
                            };
                            let sync = h.sync(SyncGroupRequest {
                                group_id: clients[i].group.to_string(),
                                group_instance_id: clients[i].instance.clone(),
                                protocol_name: r.protocol_name.clone(),
                                assignments,
                                ..sync_req(&r.member_id, r.generation_id, &[])
                            });
                            outstanding.push(sync);
                            clients[i].state = ClientState::Syncing(sync);
                        }
                        Some(GroupError::MemberIdRequired) => {
                            clients[i].member_id = r.member_id.clone();
                            clients[i].state = ClientState::Idle;
                        }
                        Some(GroupError::RebalanceInProgress) => {
                            clients[i].state = ClientState::Idle;
                        }
                        Some(_) => {
                            clients[i].forget_membership();
                            clients[i].state = ClientState::Idle;
                        }
                    }
                }
            }
            ClientState::Syncing(token) => {
                if let Some(Response::SyncGroup(r)) = h.responses.get(&token).cloned() {
                    clients[i].state = match r.error {
                        None => {
                            // The leader assigned each member its own id; a restarted static
                            // member keeps the assignment of its previous id.
                            let own = clients[i].member_id.as_bytes();
                            let previous = clients[i].instance.is_some()
                                && clients[i]
                                    .past_ids
                                    .iter()
                                    .any(|id| r.assignment == id.as_bytes());
                            assert!(r.assignment.is_empty() || r.assignment == own || previous);
                            ClientState::Stable
                        }
                        Some(GroupError::RebalanceInProgress) => ClientState::Idle,
                        Some(_) => {
                            clients[i].forget_membership();
                            ClientState::Idle
                        }
                    };
                }
            }
            ClientState::Stable => {
                let c = &clients[i];
                match rng.below(10) {
                    0..=5 => {
                        let result = h.heartbeat_in(
                            c.group,
                            &c.member_id,
                            c.generation,
                            c.instance.as_deref(),
                        );
                        match result {
                            Ok(()) => {}
                            Err(GroupError::RebalanceInProgress) => {
                                clients[i].state = ClientState::Idle
                            }
                            Err(_) => {
                                clients[i].forget_membership();
                                clients[i].state = ClientState::Idle;
                            }
                        }
                    }
                    6 => {
                        let mut req = commit_req(
                            c.group,
                            &c.member_id,
                            c.generation,
                            &[("t1", rng.below(3) as i32, rng.below(1_000) as i64)],
                        );
                        req.group_instance_id = c.instance.clone();
                        outstanding.push(h.commit(req));
                    }
                    7 => {
                        // Dynamic members leave on close; static members just stop.
                        if c.instance.is_none() {
                            let member_id = c.member_id.clone();
                            let group = c.group;
                            h.leave(
                                group,
                                vec![LeavingMember {
                                    member_id,
                                    group_instance_id: None,
                                }],
                            );
                            clients[i].forget_membership();
                        }
                        clients[i].state = ClientState::Crashed;
                    }
                    8 => clients[i].state = ClientState::Crashed,
                    _ => {
                        // Rejoin (a metadata refresh, for the leader a forced rebalance).
                        let token = h.join(clients[i].join_req());
                        outstanding.push(token);
                        clients[i].state = ClientState::Joining(token);
                    }
                }
            }
        }
        // Standalone commits, admin operations.
        match rng.below(40) {
            0 => outstanding.push(h.commit(commit_req(
                "sim-solo",
                "",
                -1,
                &[("t1", rng.below(2) as i32, rng.below(100) as i64)],
            ))),
            1 => outstanding.push(h.offset_delete("sim-solo", &[("t1", rng.below(2) as i32)])),
            2 => {
                let group = groups[rng.below(2) as usize];
                outstanding.push(h.delete_groups(&[group, "sim-solo"]));
            }
            3 => outstanding.push(h.offset_delete(groups[rng.below(2) as usize], &[("t9", 0)])),
            _ => {}
        }
        // The log: appends complete in order, some later than others, a few fail.
        if !h.held.is_empty() && rng.chance(60) {
            let count = 1 + rng.below(h.held.len() as u64) as usize;
            for append in h.held.drain(..count).collect::<Vec<_>>() {
                let result = if may_fail(&append) && rng.chance(10) {
                    Err([AppendError::NotEnoughReplicas, AppendError::Timeout]
                        [rng.below(2) as usize])
                } else {
                    Ok(())
                };
                h.apply(append, result);
            }
        }
        h.advance(rng.below(max_step_ms) as i64);
    }

    // Quiesce: every client stops, the log catches up, time passes.
    h.release(Ok(()));
    h.manual_appends = false;
    h.advance(3_600_000);
    for token in &outstanding {
        assert!(
            h.answered(*token),
            "seed {seed}: request {token} never answered"
        );
    }
    for group in groups {
        assert!(
            matches!(h.state(group), None | Some(GroupState::Empty)),
            "seed {seed}: {group} is {:?} with nobody left",
            h.state(group)
        );
    }

    // The log rebuilds the same groups and offsets (groups that only ever lived in memory,
    // with no generation and no offsets, are not persisted; Kafka's classic coordinator does
    // not persist them either).
    let c = replayed(&h.log, GroupConfig::default(), h.now);
    for group in groups.iter().copied().chain(["sim-solo"]) {
        let ephemeral =
            h.c.group(group)
                .is_some_and(|g| g.generation_id == 0 && g.offsets.is_empty());
        if ephemeral {
            assert_eq!(c.group_state(group), None, "seed {seed}: {group}");
            continue;
        }
        assert_eq!(
            c.describe_group(group),
            h.c.describe_group(group),
            "seed {seed}: {group}"
        );
        assert_eq!(
            c.offset_fetch(group, None),
            h.c.offset_fetch(group, None),
            "seed {seed}: {group}"
        );
        assert_eq!(
            c.group(group).map(|g| g.generation_id),
            h.c.group(group).map(|g| g.generation_id),
            "seed {seed}: {group}"
        );
    }
}

#[test]
fn randomized_simulation_keeps_invariants_answers_everything_and_replays() {
    for seed in 0..40 {
        simulate(seed, 600);
    }
}

#[test]
fn deleting_a_topic_removes_its_offsets_and_empty_groups_left_without_any() {
    let mut h = Harness::new();
    let ids = h.stable_group("live", &["a"]);
    let commit = h.commit(commit_req(
        "live",
        &ids[0],
        1,
        &[("gone", 0, 5), ("kept", 0, 6)],
    ));
    h.commit_response(commit);
    let standalone = h.commit(commit_req("standalone", "", -1, &[("gone", 1, 7)]));
    h.commit_response(standalone);
    let out = h.c.on_topic_deleted(h.now, "gone");
    h.absorb(out);
    assert_eq!(h.fetch("live", "gone", 0).offset, -1);
    assert_eq!(h.fetch("live", "kept", 0).offset, 6);
    assert_eq!(h.c.group_state("live"), Some(GroupState::Stable));
    // The standalone group had nothing else: it is gone, and a replay agrees.
    assert_eq!(h.c.group_state("standalone"), None);
    let replayed = replayed(&h.log, GroupConfig::default(), h.now);
    assert_eq!(
        replayed
            .offset_fetch("live", Some(&[("gone".to_string(), 0)]))
            .unwrap()[0]
            .offset,
        -1
    );
    assert_eq!(replayed.group_state("standalone"), None);
    // Deleting a topic nobody committed for writes nothing.
    assert!(h.c.on_topic_deleted(h.now, "never").is_empty());
}

#[test]
fn transactional_offset_commits_wait_for_their_marker() {
    let mut h = Harness::new();
    let members = h.stable_group(GROUP, &["a"]);
    let generation = h.generation(GROUP);
    let plain = h.commit(commit_req(GROUP, &members[0], generation, &[("t1", 0, 5)]));
    h.commit_response(plain);
    let partition = h.c.partition_for(GROUP);
    let txn_commit = |h: &mut Harness, producer: (i64, i16), member: &str, offset: i64| {
        let token = h.token();
        let before = h.log.len();
        let out = h.c.txn_offset_commit(
            h.now,
            token,
            producer,
            Some(9),
            commit_req(GROUP, member, generation, &[("t1", 0, offset)]),
        );
        // Written as the producer's transactional batch, with the handler's guard.
        assert!(out
            .appends
            .iter()
            .all(|a| a.producer == Some(producer) && a.verification == Some(9)));
        h.absorb(out);
        let response = match h.responses.remove(&token) {
            Some(Response::TxnOffsetCommit(response)) => response,
            other => panic!("expected a TxnOffsetCommit response, got {other:?}"),
        };
        (errors(&response.partitions), h.log[before..].to_vec())
    };
    let (result, written) = txn_commit(&mut h, (7, 0), &members[0], 9);
    assert_eq!(result, vec![None]);
    // Pending: the group still shows 5; a stable read is refused.
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, 5);
    let stable = |h: &Harness| {
        h.c.offset_fetch_stable(GROUP, Some(&[("t1".to_string(), 0)]), true)
            .unwrap_or_default()[0]
            .clone()
    };
    assert_eq!(stable(&h).error, Some(GroupError::UnstableOffsetCommit));
    // COMMIT makes it the group's offset.
    h.c.complete_txn(partition, 7, true);
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, 9);
    assert_eq!(stable(&h).error, None);
    // ABORT drops it.
    let (result, _) = txn_commit(&mut h, (7, 1), &members[0], 12);
    assert_eq!(result, vec![None]);
    h.c.complete_txn(partition, 7, false);
    assert_eq!(h.fetch(GROUP, "t1", 0).offset, 9);
    assert_eq!(stable(&h).error, None);
    // A member the group does not know is refused (KIP-447).
    let (result, _) = txn_commit(&mut h, (8, 0), "stranger", 20);
    assert_eq!(result, vec![Some(GroupError::UnknownMemberId)]);

    // A new coordinator replays the transactional record as pending and the marker after it.
    let mut c = GroupCoordinator::with_seed(GroupConfig::default(), 5);
    assert!(c.begin_loading(partition).is_empty());
    for (p, record) in &h.log {
        if written.iter().any(|(_, w)| w == record) {
            c.replay_txn(*p, 7, &record.key, record.value.as_deref())
                .expect("replay_txn");
        } else {
            c.replay(*p, &record.key, record.value.as_deref())
                .expect("replay");
        }
    }
    assert!(c.finish_loading(partition, h.now).is_empty());
    let fetched = |c: &GroupCoordinator| {
        c.offset_fetch_stable(GROUP, Some(&[("t1".to_string(), 0)]), true)
            .unwrap_or_default()[0]
            .clone()
    };
    assert_eq!(fetched(&c).error, Some(GroupError::UnstableOffsetCommit));
    c.complete_txn(partition, 7, true);
    assert_eq!((fetched(&c).offset, fetched(&c).error), (9, None));
}
