//! JoinGroup (key 11), v0–v9: a member joins (or rejoins) a classic group.
//!
//! The response waits for the group's join phase to end (every known member rejoined, or the
//! rebalance timeout passed), so the handler registers the request with the coordinator in
//! phase one (keeping the connection's group requests in order) and answers in phase two,
//! without holding up the connection's other requests. v4+ first joins get
//! `MEMBER_ID_REQUIRED` with a member id to rejoin with; v5+ carries `group.instance.id`
//! (static membership); v0 has no rebalance timeout (the session timeout stands in).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, ResponseKind};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::errors::group_code;
use super::{Reply, RequestContext};
use crate::group::{self, GroupError, Response};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 9 };

/// JoinGroup: phase one registers the join, phase two waits for its answer.
pub fn handle(ctx: RequestContext, req: JoinGroupRequest) -> Reply {
    let version = ctx.version;
    let request = group::JoinGroupRequest {
        api_version: version,
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id: ctx
            .header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            -1
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| group::Protocol {
                name: p.name.to_string(),
                metadata: p.metadata,
            })
            .collect(),
    };
    if let Some(reason) = req.reason.as_ref().filter(|r| !r.is_empty()) {
        tracing::debug!(group = %request.group_id, member = %request.member_id, %reason, "join group");
    }
    let member_id = request.member_id.clone();
    let receiver = ctx
        .broker
        .groups
        .submit(move |coordinator, now, token| coordinator.join_group(now, token, request));
    Reply::Deferred(Box::pin(async move {
        let response = match receiver.await {
            Ok(Response::JoinGroup(response)) => response,
            _ => group::JoinGroupResponse::error(&member_id, GroupError::NotCoordinator),
        };
        Some(ResponseKind::JoinGroup(encode(version, response)))
    }))
}

fn encode(version: i16, r: group::JoinGroupResponse) -> JoinGroupResponse {
    let string = |s: String| StrBytes::from_string(s);
    // Before v7 the protocol name is not nullable.
    let protocol_name = match r.protocol_name {
        Some(name) => Some(string(name)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(group_code(r.error))
        .with_generation_id(r.generation_id)
        .with_protocol_type(r.protocol_type.map(string))
        .with_protocol_name(protocol_name)
        .with_leader(string(r.leader))
        .with_skip_assignment(r.skip_assignment)
        .with_member_id(string(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(string(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(string))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}
