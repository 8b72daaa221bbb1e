//! DeleteTopics (key 20), versions 1–6: delete topics and their data.
//!
//! Topics are named in `topic_names` before v6 and in `topics` from v6, each entry by name or by
//! topic id. Every entry is answered, in request order, following Kafka's KRaft broker:
//! - an unknown name: UNKNOWN_TOPIC_OR_PARTITION; an unknown id: UNKNOWN_TOPIC_ID;
//! - v6 entries with neither or both of name and id: INVALID_REQUEST;
//! - a name or id given more than once: INVALID_REQUEST once for it, and it is not deleted;
//!   so is a name that resolves to an id also given in the request;
//! - an internal topic (`__consumer_offsets`...): INVALID_REQUEST, from the controller;
//! - `delete.topic.enable=false` refuses the whole request: INVALID_REQUEST before v3,
//!   TOPIC_DELETION_DISABLED from v3.
//!
//! A deleted topic's partitions are closed and their directories removed before the response
//! goes out (`Broker::delete_topic`). `error_message` exists from v5 and the topic id in the
//! result from v6; neither is set at a version without it. `timeout_ms` is not needed: deletion
//! finishes before the response is built.

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::errors::controller_error_code;
use super::RequestContext;
use crate::cluster::ControllerError;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 6 };

/// What one request entry asks to delete.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Name(String),
    Id(Uuid),
}

/// The answer for one entry, before it is shaped for the request's version.
#[derive(Debug, Clone)]
struct Outcome {
    name: Option<String>,
    id: Uuid,
    code: i16,
    message: Option<String>,
}

impl Outcome {
    fn error(name: Option<String>, id: Uuid, error: ResponseError, message: String) -> Outcome {
        Outcome {
            name,
            id,
            code: error.code(),
            message: Some(message),
        }
    }
}

/// Answers DeleteTopics.
pub async fn handle(ctx: &RequestContext, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let version = ctx.version;
    let entries: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.as_str().to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.as_str().to_string()), Uuid::nil()))
            .collect()
    };

    let outcomes = if ctx.broker.config.delete_topic_enable() {
        delete_all(ctx, entries).await
    } else {
        let (error, message) = if version < 3 {
            (ResponseError::InvalidRequest, "Topic deletion is disabled.")
        } else {
            (
                ResponseError::TopicDeletionDisabled,
                "Topic deletion is disabled (delete.topic.enable=false).",
            )
        };
        entries
            .into_iter()
            .map(|(name, id)| Outcome::error(name, id, error, message.to_string()))
            .collect()
    };

    DeleteTopicsResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(outcomes.into_iter().map(|o| result(o, version)).collect())
}

/// Validates, resolves and deletes every entry; one outcome per entry, except that a
/// duplicated name or id is answered once.
async fn delete_all(ctx: &RequestContext, entries: Vec<(Option<String>, Uuid)>) -> Vec<Outcome> {
    // Shape of each entry.
    let targets: Vec<Result<Target, Outcome>> = entries
        .into_iter()
        .map(|(name, id)| match (name, id.is_nil()) {
            (Some(name), true) => Ok(Target::Name(name)),
            (None, false) => Ok(Target::Id(id)),
            (None, true) => Err(Outcome::error(
                None,
                id,
                ResponseError::InvalidRequest,
                "Neither topic name nor id were specified.".to_string(),
            )),
            (Some(name), false) => Err(Outcome::error(
                Some(name),
                id,
                ResponseError::InvalidRequest,
                "You may not specify both topic name and topic id.".to_string(),
            )),
        })
        .collect();

    // Resolve names and ids against one image, so every entry sees the same topics.
    let image = ctx.broker.controller.image();
    let mut occurrences: HashMap<&Target, usize> = HashMap::new();
    for target in targets.iter().flatten() {
        *occurrences.entry(target).or_insert(0) += 1;
    }
    let mut resolved_ids: HashMap<Uuid, usize> = HashMap::new();
    let mut resolved: Vec<Result<(Target, String, Uuid), Outcome>> = Vec::new();
    let mut answered_duplicates: HashSet<&Target> = HashSet::new();
    for target in &targets {
        let target = match target {
            Ok(target) => target,
            Err(outcome) => {
                resolved.push(Err(outcome.clone()));
                continue;
            }
        };
        if occurrences.get(target).copied().unwrap_or(0) > 1 {
            if answered_duplicates.insert(target) {
                resolved.push(Err(match target {
                    Target::Name(name) => Outcome::error(
                        Some(name.clone()),
                        Uuid::nil(),
                        ResponseError::InvalidRequest,
                        "Duplicate topic name.".to_string(),
                    ),
                    Target::Id(id) => Outcome::error(
                        None,
                        *id,
                        ResponseError::InvalidRequest,
                        "Duplicate topic id.".to_string(),
                    ),
                }));
            }
            continue;
        }
        let found = match target {
            Target::Name(name) => image.topic(name).ok_or_else(|| {
                Outcome::error(
                    Some(name.clone()),
                    Uuid::nil(),
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic '{name}'"),
                )
            }),
            Target::Id(id) => image.topic_by_id(id).ok_or_else(|| {
                Outcome::error(
                    None,
                    *id,
                    ResponseError::UnknownTopicId,
                    format!("unknown topic id {id}"),
                )
            }),
        };
        match found {
            Ok(topic) => {
                *resolved_ids.entry(topic.id).or_insert(0) += 1;
                resolved.push(Ok((target.clone(), topic.name.clone(), topic.id)));
            }
            Err(outcome) => resolved.push(Err(outcome)),
        }
    }

    let mut outcomes = Vec::with_capacity(resolved.len());
    for entry in resolved {
        outcomes.push(match entry {
            Err(outcome) => outcome,
            Ok((_, name, id)) if resolved_ids.get(&id).copied().unwrap_or(0) > 1 => {
                // The same topic by name and by id: refuse both rather than guess.
                Outcome::error(
                    Some(name),
                    id,
                    ResponseError::InvalidRequest,
                    "The provided topic name maps to an ID that was already supplied.".to_string(),
                )
            }
            Ok((target, name, id)) => delete_one(ctx, &target, name, id).await,
        });
    }
    outcomes
}

/// Deletes one resolved topic.
async fn delete_one(ctx: &RequestContext, target: &Target, name: String, id: Uuid) -> Outcome {
    match ctx.broker.delete_topic(&name).await {
        Ok(topic) => Outcome {
            name: Some(topic.name),
            id: topic.id,
            code: 0,
            message: None,
        },
        // Deleted by someone else since the lookup.
        Err(ControllerError::UnknownTopic(_)) => match target {
            Target::Name(_) => Outcome::error(
                Some(name.clone()),
                Uuid::nil(),
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic '{name}'"),
            ),
            Target::Id(_) => Outcome::error(
                None,
                id,
                ResponseError::UnknownTopicId,
                format!("unknown topic id {id}"),
            ),
        },
        Err(e) => Outcome {
            name: Some(name),
            id,
            code: controller_error_code(&e),
            message: Some(e.to_string()),
        },
    }
}

/// Shapes an outcome for the request's version.
fn result(outcome: Outcome, version: i16) -> DeletableTopicResult {
    let name = outcome.name.map(|n| TopicName(StrBytes::from_string(n)));
    let mut result = DeletableTopicResult::default()
        .with_error_code(outcome.code)
        .with_error_message(None);
    if version >= 6 {
        result.name = name;
        result.topic_id = outcome.id;
    } else {
        // Before v6 every entry is a name, and the name is not nullable.
        result.name = Some(name.unwrap_or_default());
    }
    if version >= 5 {
        result.error_message = outcome.message.map(StrBytes::from_string);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::broker_with;
    use crate::api::RequestContext;
    use crate::broker::Broker;
    use bytes::BytesMut;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Encodable;
    use std::sync::Arc;

    fn ctx(broker: &Arc<Broker>, version: i16) -> RequestContext {
        crate::api::test_support::ctx(broker, ApiKey::DeleteTopics, version)
    }

    async fn create(broker: &Broker, name: &str) -> Uuid {
        crate::api::test_support::create_topic(broker, name, 2, &[]).await
    }

    fn name(n: &str) -> TopicName {
        TopicName(StrBytes::from_string(n.to_string()))
    }

    fn by_names(names: &[&str]) -> DeleteTopicsRequest {
        DeleteTopicsRequest::default().with_topic_names(names.iter().map(|n| name(n)).collect())
    }

    fn state(n: Option<&str>, id: Uuid) -> DeleteTopicState {
        DeleteTopicState::default()
            .with_name(n.map(name))
            .with_topic_id(id)
    }

    fn name_of(result: &DeletableTopicResult) -> Option<&str> {
        result.name.as_ref().map(|n| n.as_str())
    }

    fn encodes(response: &DeleteTopicsResponse, version: i16) {
        let mut buf = BytesMut::new();
        response
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("v{version} does not encode: {e}"));
    }

    #[tokio::test]
    async fn deletes_by_name_at_every_version_and_removes_data() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        for v in 1..=5 {
            let topic = format!("t{v}");
            create(&b, &topic).await;
            assert!(dir.path().join(format!("{topic}-0")).exists());
            let resp = handle(&ctx(&b, v), by_names(&[&topic, "missing"])).await;
            assert_eq!(resp.responses.len(), 2);
            let ok = &resp.responses[0];
            assert_eq!(name_of(ok), Some(topic.as_str()));
            assert_eq!(ok.error_code, 0);
            assert_eq!(ok.error_message, None);
            assert!(ok.topic_id.is_nil());
            let missing = &resp.responses[1];
            assert_eq!(
                missing.error_code,
                ResponseError::UnknownTopicOrPartition.code()
            );
            assert_eq!(missing.error_message.is_some(), v >= 5);
            assert!(b.controller.image().topic(&topic).is_none());
            assert!(b.replicas.leader_partition(&topic, 0).is_err());
            assert!(!dir.path().join(format!("{topic}-0")).exists());
            encodes(&resp, v);
        }
    }

    #[tokio::test]
    async fn v6_by_name_and_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        let a = create(&b, "a").await;
        let by_id = create(&b, "b").await;
        let unknown = Uuid::new_v4();
        let req = DeleteTopicsRequest::default().with_topics(vec![
            state(Some("a"), Uuid::nil()),
            state(None, by_id),
            state(None, unknown),
            state(Some("nope"), Uuid::nil()),
            state(None, Uuid::nil()),
            state(Some("a"), a),
        ]);
        let resp = handle(&ctx(&b, 6), req).await;
        let got: Vec<(Option<&str>, Uuid, i16)> = resp
            .responses
            .iter()
            .map(|r| (name_of(r), r.topic_id, r.error_code))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("a"), a, 0),
                (Some("b"), by_id, 0),
                (None, unknown, ResponseError::UnknownTopicId.code()),
                (
                    Some("nope"),
                    Uuid::nil(),
                    ResponseError::UnknownTopicOrPartition.code()
                ),
                (None, Uuid::nil(), ResponseError::InvalidRequest.code()),
                (Some("a"), a, ResponseError::InvalidRequest.code()),
            ]
        );
        assert!(b.controller.image().topics.is_empty());
        encodes(&resp, 6);
    }

    #[tokio::test]
    async fn duplicates_are_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        create(&b, "twice").await;
        let both = create(&b, "both").await;
        create(&b, "once").await;
        let resp = handle(&ctx(&b, 5), by_names(&["twice", "once", "twice"])).await;
        let got: Vec<(Option<&str>, i16)> = resp
            .responses
            .iter()
            .map(|r| (name_of(r), r.error_code))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("twice"), ResponseError::InvalidRequest.code()),
                (Some("once"), 0),
            ]
        );
        assert!(b.controller.image().topic("twice").is_some());
        // One topic by name and by id.
        let req = DeleteTopicsRequest::default()
            .with_topics(vec![state(Some("both"), Uuid::nil()), state(None, both)]);
        let resp = handle(&ctx(&b, 6), req).await;
        assert!(resp
            .responses
            .iter()
            .all(|r| r.error_code == ResponseError::InvalidRequest.code()));
        assert!(b.controller.image().topic("both").is_some());
        encodes(&resp, 6);
    }

    #[tokio::test]
    async fn deletion_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[("delete.topic.enable", "false")]).await;
        create(&b, "kept").await;
        for v in 1..=6 {
            let req = if v >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![state(Some("kept"), Uuid::nil())])
            } else {
                by_names(&["kept"])
            };
            let resp = handle(&ctx(&b, v), req).await;
            let expected = if v < 3 {
                ResponseError::InvalidRequest
            } else {
                ResponseError::TopicDeletionDisabled
            };
            assert_eq!(resp.responses[0].error_code, expected.code());
            encodes(&resp, v);
        }
        assert!(b.controller.image().topic("kept").is_some());
    }
}
