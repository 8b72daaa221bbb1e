//! LeaveGroup (key 13), v0–v5: members leave a group, which rebalances without them.
//!
//! v0–v2 name one member by id and get one error; v3+ batch members (by member id and/or
//! `group.instance.id`, KIP-345) and get a result per member besides the group-level error.
//! Leaving persists the group's new state, so the answer comes in phase two.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse, ResponseKind};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::errors::group_code;
use super::{Reply, RequestContext};
use crate::group::{self, GroupError, LeavingMember, Response};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// LeaveGroup.
pub fn handle(ctx: RequestContext, req: LeaveGroupRequest) -> Reply {
    let version = ctx.version;
    let members = if version >= 3 {
        req.members
            .into_iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|s| s.to_string()),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let request = group::LeaveGroupRequest {
        group_id: req.group_id.to_string(),
        members,
    };
    let receiver = ctx
        .broker
        .groups
        .submit(move |coordinator, now, token| coordinator.leave_group(now, token, request));
    Reply::Deferred(Box::pin(async move {
        let response = match receiver.await {
            Ok(Response::LeaveGroup(response)) => response,
            _ => group::LeaveGroupResponse {
                error: Some(GroupError::NotCoordinator),
                members: Vec::new(),
            },
        };
        Some(ResponseKind::LeaveGroup(encode(version, response)))
    }))
}

fn encode(version: i16, r: group::LeaveGroupResponse) -> LeaveGroupResponse {
    if version < 3 {
        // One member: its error, unless the whole group failed.
        let error = r.error.or_else(|| r.members.first().and_then(|m| m.error));
        return LeaveGroupResponse::default().with_error_code(group_code(error));
    }
    LeaveGroupResponse::default()
        .with_error_code(group_code(r.error))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    MemberResponse::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                        .with_error_code(group_code(m.error))
                })
                .collect(),
        )
}
