//! SyncGroup (key 14), v0–v5: after a join phase, the leader sends the assignment and every
//! member receives its own.
//!
//! A follower's response waits for the leader's SyncGroup, and the leader's assignment is
//! persisted to `__consumer_offsets` before anyone is answered; so, like JoinGroup, phase one
//! registers the request and phase two waits for its answer.

use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::errors::group_code;
use super::{Reply, RequestContext};
use crate::group::{self, GroupError, Response};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// SyncGroup: phase one registers the request, phase two waits for the assignment.
pub fn handle(ctx: RequestContext, req: SyncGroupRequest) -> Reply {
    let request = group::SyncGroupRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        protocol_type: req.protocol_type.map(|s| s.to_string()),
        protocol_name: req.protocol_name.map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let receiver = ctx
        .broker
        .groups
        .submit(move |coordinator, now, token| coordinator.sync_group(now, token, request));
    Reply::Deferred(Box::pin(async move {
        let response = match receiver.await {
            Ok(Response::SyncGroup(response)) => response,
            _ => group::SyncGroupResponse::error(GroupError::NotCoordinator),
        };
        Some(ResponseKind::SyncGroup(
            SyncGroupResponse::default()
                .with_error_code(group_code(response.error))
                .with_protocol_type(response.protocol_type.map(StrBytes::from_string))
                .with_protocol_name(response.protocol_name.map(StrBytes::from_string))
                .with_assignment(response.assignment),
        ))
    }))
}
