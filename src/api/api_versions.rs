//! ApiVersions (key 18): which APIs and versions this broker handles.
//!
//! The list is [`crate::api::SUPPORTED`], the same table the decoder uses. A request at a
//! version this broker does not handle never reaches here: the codec answers it with a v0
//! response carrying UNSUPPORTED_VERSION and these ranges ([`unsupported_version_response`]),
//! which is Kafka's downgrade rule. Clients' software name and version (v3+) are only logged.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

use super::{RequestContext, SUPPORTED};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

/// Answers ApiVersions.
pub fn handle(ctx: &RequestContext, req: ApiVersionsRequest) -> ApiVersionsResponse {
    if ctx.version >= 3 {
        tracing::debug!(
            peer = %ctx.peer,
            software = %req.client_software_name.as_str(),
            software_version = %req.client_software_version.as_str(),
            "client identified itself"
        );
    }
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The v0 response to an ApiVersions request at a version this broker does not handle.
pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}
