//! Topic administration through rdkafka's admin client: CreateTopics (configs, validate-only,
//! errors), DescribeConfigs (topic and broker, values and sources), DeleteTopics (data removed
//! from disk), and Metadata auto-creation.

mod common;

use std::time::Duration;

use common::TestBroker;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_delete() {
    let broker = TestBroker::start(&[("log.retention.ms", "3600000")]).await;
    let admin = admin(&broker.bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));

    // Create with configs; a second create of the same name fails; a bad name fails;
    // validate-only creates nothing.
    let t = NewTopic::new("orders", 3, TopicReplication::Fixed(1)).set("retention.ms", "60000");
    let bad = NewTopic::new("bad name!", 1, TopicReplication::Fixed(1));
    let too_many_replicas = NewTopic::new("rf3", 1, TopicReplication::Fixed(3));
    let results = admin
        .create_topics(&[t, bad, too_many_replicas], &opts)
        .await
        .expect("create");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert_eq!(
        results[1].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidTopic
    );
    assert_eq!(
        results[2].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidReplicationFactor
    );
    let again = NewTopic::new("orders", 3, TopicReplication::Fixed(1));
    let results = admin.create_topics(&[again], &opts).await.expect("create");
    assert_eq!(
        results[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::TopicAlreadyExists
    );
    let dry = NewTopic::new("dry-run", 1, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(&[dry], &AdminOptions::new().validate_only(true))
        .await
        .expect("validate");
    assert!(results[0].is_ok());
    assert!(broker
        .broker()
        .controller
        .image()
        .topic("dry-run")
        .is_none());

    // Describe the topic and the broker.
    let described = admin
        .describe_configs(
            &[
                ResourceSpecifier::Topic("orders"),
                ResourceSpecifier::Broker(1),
            ],
            &opts,
        )
        .await
        .expect("describe");
    let topic = described[0].as_ref().expect("topic configs");
    let retention = topic.get("retention.ms").expect("retention.ms");
    assert_eq!(retention.value.as_deref(), Some("60000"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    let segment = topic.get("segment.bytes").expect("segment.bytes");
    assert_eq!(segment.value.as_deref(), Some("1073741824"));
    assert_eq!(segment.source, ConfigSource::Default);
    assert!(topic.get("no.such.config").is_none());
    let broker_configs = described[1].as_ref().expect("broker configs");
    let retention = broker_configs
        .get("log.retention.ms")
        .expect("log.retention.ms");
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert_eq!(retention.source, ConfigSource::StaticBroker);

    // Write something, then delete: the data dir goes away.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::<str, str>::to("orders")
                .payload("x")
                .partition(2),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    let dir = broker.dir.path().join("orders-2");
    assert!(dir.join("00000000000000000000.log").exists());
    let results = admin
        .delete_topics(&["orders", "never-existed"], &opts)
        .await
        .expect("delete");
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().unwrap_err().1,
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
    assert!(!dir.exists(), "partition data must be removed from disk");
    assert!(broker.broker().controller.image().topic("orders").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_produce_to_an_auto_created_topic_succeeds() {
    let broker = TestBroker::start(&[("num.partitions", "5")]).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("message.timeout.ms", "5000")
        .create()
        .expect("producer");
    let d = producer
        .send(
            FutureRecord::<str, str>::to("fresh")
                .payload("first")
                .key("k"),
            Duration::from_secs(5),
        )
        .await
        .expect("first produce to a new topic must be acknowledged");
    assert_eq!(d.offset, 0);
    let topic = broker
        .broker()
        .controller
        .image()
        .topic("fresh")
        .cloned()
        .expect("auto-created");
    assert_eq!(topic.partitions.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_creation_can_be_disabled() {
    let broker = TestBroker::start(&[("auto.create.topics.enable", "false")]).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("message.timeout.ms", "2000")
        .create()
        .expect("producer");
    let r = producer
        .send(
            FutureRecord::<str, str>::to("absent").payload("x"),
            Duration::from_secs(3),
        )
        .await;
    assert!(
        r.is_err(),
        "produce to a missing topic must fail when auto-creation is off"
    );
    assert!(broker.broker().controller.image().topic("absent").is_none());
}
