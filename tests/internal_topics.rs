//! Internal topics are the broker's (issue 11, item 1): a client cannot create, auto-create,
//! delete or write `__cluster_metadata`, `__consumer_offsets` or `__transaction_state` (nor a
//! name colliding with one), and the metadata quorum's files live where no partition directory
//! can be, so the two-command wipe (`kcat -P -t __cluster_metadata`, then DeleteTopics) that
//! emptied the cluster's metadata is refused at both steps.

mod common;

use std::time::Duration;

use common::{raw_request, TestBroker};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin")
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

/// Metadata v9 for `names` (auto-creation allowed): (name, error code, is_internal).
fn metadata(port: u16, names: &[&str]) -> Vec<(String, i16, bool)> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
                })
                .collect(),
        ));
    let response: MetadataResponse = raw_request(port, ApiKey::Metadata, 9, &request);
    response
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                t.error_code,
                t.is_internal,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_create_delete_or_write_internal_topics() {
    let mut broker = TestBroker::start(&[]).await;
    common::create_topic(&broker.bootstrap, "keep", 2, &[]).await;

    // Step one of the wipe: a produce to __cluster_metadata. It is not auto-created as an
    // ordinary topic, so the send fails instead of creating `<data-dir>/__cluster_metadata-0`.
    let producer = common::producer(&broker.bootstrap, &[("message.timeout.ms", "5000")]);
    let sent = producer
        .send(
            FutureRecord::<str, str>::to("__cluster_metadata").payload("x"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        sent.is_err(),
        "a produce to __cluster_metadata was acknowledged: {sent:?}"
    );
    assert!(
        !broker.dir.path().join("__cluster_metadata-0").exists(),
        "a partition directory was made for __cluster_metadata"
    );

    // Step two: DeleteTopics of it (and of the other internal names) changes nothing.
    let admin = admin(&broker.bootstrap);
    // Make __consumer_offsets exist the way a client does: Metadata (or FindCoordinator).
    let port = broker.port();
    let answers = metadata(port, &["__consumer_offsets", "__cluster_metadata"]);
    assert_eq!(answers[0], ("__consumer_offsets".to_string(), 0, true));
    assert_eq!(
        (answers[1].1, answers[1].2),
        (
            kafka_protocol::ResponseError::InvalidTopicException.code(),
            false
        ),
        "{answers:?}"
    );
    let deleted = admin
        .delete_topics(
            &[
                "__cluster_metadata",
                "__consumer_offsets",
                "__transaction_state",
            ],
            &opts(),
        )
        .await
        .expect("delete_topics");
    for result in &deleted {
        assert!(
            result.is_err(),
            "an internal topic was deleted: {deleted:?}"
        );
    }
    assert_eq!(
        deleted[1].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidRequest,
        "{deleted:?}"
    );

    // Nor can a client create one, or a name that collides with one.
    let topics: Vec<NewTopic> = [
        "__cluster_metadata",
        "__consumer_offsets",
        "__transaction_state",
        "__consumer.offsets",
    ]
    .iter()
    .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
    .collect();
    let created = admin.create_topics(&topics, &opts()).await.expect("create");
    let codes: Vec<RDKafkaErrorCode> = created
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|_| RDKafkaErrorCode::NoError)
                .unwrap_or_else(|e| e.1)
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            RDKafkaErrorCode::InvalidRequest,
            RDKafkaErrorCode::InvalidRequest,
            RDKafkaErrorCode::InvalidRequest,
            RDKafkaErrorCode::InvalidTopic,
        ]
    );

    // Nor write the one the broker created.
    let sent = producer
        .send(
            FutureRecord::<str, str>::to("__consumer_offsets")
                .partition(0)
                .payload("x"),
            Duration::from_secs(10),
        )
        .await;
    match sent {
        Err((KafkaError::MessageProduction(code), _)) => {
            assert_eq!(code, RDKafkaErrorCode::InvalidTopic)
        }
        other => panic!("a produce to __consumer_offsets: {other:?}"),
    }

    // The metadata log is where no topic can reach it, and everything survives a restart.
    assert!(broker
        .dir
        .path()
        .join("metadata-quorum")
        .join("raft.log")
        .exists());
    broker.restart().await;
    let after = metadata(broker.port(), &["keep", "__consumer_offsets"]);
    assert_eq!(after[0], ("keep".to_string(), 0, false));
    assert_eq!(after[1], ("__consumer_offsets".to_string(), 0, true));
}

/// A data dir written by a broker that kept the metadata log in `__cluster_metadata-0` starts
/// with its topics: the log is moved to its new place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_log_in_the_old_place_is_moved() {
    let mut broker = TestBroker::start(&[]).await;
    common::create_topic(&broker.bootstrap, "kept", 3, &[]).await;
    let running = broker.running.take().expect("running");
    let port = running.local_addr.port();
    running.shutdown().await.expect("clean shutdown");
    let dir = broker.dir.path();
    std::fs::rename(
        dir.join("metadata-quorum"),
        dir.join("__cluster_metadata-0"),
    )
    .expect("rename");

    // Start again on the same dir and port.
    let mut config = gregor::config::BrokerConfig::new(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        dir.to_path_buf(),
    );
    config.set("num.partitions", "1").expect("setting");
    let running = gregor::broker::start(config).await.expect("start");
    assert!(dir.join("metadata-quorum").join("raft.log").exists());
    assert!(!dir.join("__cluster_metadata-0").exists());
    let image = running.broker.controller.image();
    assert_eq!(image.topic("kept").map(|t| t.partitions.len()), Some(3));
    running.shutdown().await.expect("clean shutdown");
}
