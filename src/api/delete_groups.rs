//! DeleteGroups (key 42), v0–v2: deletes empty groups and their committed offsets.
//!
//! A group with members answers `NON_EMPTY_GROUP`, an unknown one `GROUP_ID_NOT_FOUND`. The
//! deletion is persisted (tombstones in `__consumer_offsets`) before the answer, in phase two.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId, ResponseKind};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::errors::group_code;
use super::{Reply, RequestContext};
use crate::group::{GroupError, Response};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// DeleteGroups.
pub fn handle(ctx: RequestContext, req: DeleteGroupsRequest) -> Reply {
    let group_ids: Vec<String> = req.groups_names.iter().map(|g| g.to_string()).collect();
    let requested = group_ids.clone();
    let receiver = ctx
        .broker
        .groups
        .submit(move |coordinator, now, token| coordinator.delete_groups(now, token, group_ids));
    Reply::Deferred(Box::pin(async move {
        let results = match receiver.await {
            Ok(Response::DeleteGroups(response)) => response.results,
            _ => requested
                .into_iter()
                .map(|g| (g, Some(GroupError::NotCoordinator)))
                .collect(),
        };
        Some(ResponseKind::DeleteGroups(
            DeleteGroupsResponse::default().with_results(
                results
                    .into_iter()
                    .map(|(group_id, error)| {
                        DeletableGroupResult::default()
                            .with_group_id(GroupId(StrBytes::from_string(group_id)))
                            .with_error_code(group_code(error))
                    })
                    .collect(),
            ),
        ))
    }))
}
