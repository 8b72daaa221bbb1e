//! Heartbeat (key 12), v0–v4: a group member says it is alive and learns whether the group is
//! rebalancing (`REBALANCE_IN_PROGRESS` tells it to rejoin).

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::protocol::VersionRange;

use super::errors::group_code;
use super::RequestContext;
use crate::group;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

/// Heartbeat.
pub fn handle(ctx: &RequestContext, req: HeartbeatRequest) -> HeartbeatResponse {
    let request = group::HeartbeatRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
    };
    let result = ctx
        .broker
        .groups
        .with(|coordinator, now| coordinator.heartbeat(now, &request));
    HeartbeatResponse::default().with_error_code(group_code(result.err()))
}
