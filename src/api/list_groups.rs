//! ListGroups (key 16), v0–v5: the groups this broker coordinates.
//!
//! v4+ filter by state (case-insensitive, Kafka's state names); v5+ filter by group type,
//! where every gregor group is `classic`. While a `__consumer_offsets` partition loads, the
//! answer carries `COORDINATOR_LOAD_IN_PROGRESS` with the groups known so far, as Kafka's does.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::errors::group_code;
use super::RequestContext;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// The type of every group gregor runs (the classic protocol).
const CLASSIC: &str = "classic";

/// ListGroups.
pub fn handle(ctx: &RequestContext, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = if ctx.version >= 4 {
        req.states_filter.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    };
    let classic_wanted = ctx.version < 5
        || req.types_filter.is_empty()
        || req
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case(CLASSIC));
    let listed = ctx
        .broker
        .groups
        .with(|coordinator, _now| coordinator.list_groups(&states));
    let groups = if classic_wanted {
        listed
            .groups
            .into_iter()
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                    .with_protocol_type(StrBytes::from_string(g.protocol_type))
                    .with_group_state(StrBytes::from_static_str(g.state.name()))
                    .with_group_type(StrBytes::from_static_str(CLASSIC))
            })
            .collect()
    } else {
        Vec::new()
    };
    ListGroupsResponse::default()
        .with_error_code(group_code(listed.error))
        .with_groups(groups)
}
