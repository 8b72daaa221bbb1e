//! DescribeGroups (key 15), v0–v6: state, protocol and members of groups.
//!
//! A group that does not exist is `Dead` with no error before v6 and `GROUP_ID_NOT_FOUND` from
//! v6 (KIP-1043). Member metadata and assignments are shown for Stable groups only, as Kafka
//! does. v3+ may ask for the authorized operations: without an authorizer every group
//! operation is allowed (READ, DELETE, DESCRIBE).

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::errors::group_code;
use super::RequestContext;
use crate::group::GroupState;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 6 };

/// Kafka's AclOperation bits for a group: READ (3), DELETE (6), DESCRIBE (8).
const GROUP_AUTHORIZED_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);
/// "Not requested" in `authorized_operations`.
const OPERATIONS_OMITTED: i32 = i32::MIN;

/// DescribeGroups.
pub fn handle(ctx: &RequestContext, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let operations = if ctx.version >= 3 && req.include_authorized_operations {
        GROUP_AUTHORIZED_OPERATIONS
    } else {
        OPERATIONS_OMITTED
    };
    let groups = req
        .groups
        .into_iter()
        .map(|group_id| {
            let d = ctx
                .broker
                .groups
                .with(|coordinator, _now| coordinator.describe_group(group_id.as_str()));
            let missing = d.error.is_none() && d.state == GroupState::Dead && d.members.is_empty();
            let (code, message) = if missing && ctx.version >= 6 {
                (
                    ResponseError::GroupIdNotFound.code(),
                    Some(StrBytes::from_string(format!(
                        "Group {} not found.",
                        group_id.as_str()
                    ))),
                )
            } else {
                (group_code(d.error), None)
            };
            DescribedGroup::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_group_id(group_id)
                .with_group_state(StrBytes::from_static_str(d.state.name()))
                .with_protocol_type(StrBytes::from_string(d.protocol_type))
                .with_protocol_data(StrBytes::from_string(d.protocol_data))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(StrBytes::from_string(m.member_id))
                                .with_group_instance_id(
                                    m.group_instance_id.map(StrBytes::from_string),
                                )
                                .with_client_id(StrBytes::from_string(m.client_id))
                                .with_client_host(StrBytes::from_string(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
                .with_authorized_operations(operations)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
