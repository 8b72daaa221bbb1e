//! The open-file limit (issue 11, item 11): a broker raises its soft limit to the hard one at
//! start and registers how many partitions it leaves room for; a topic that would need more
//! is refused with POLICY_VIOLATION instead of being accepted into the metadata and then
//! starving the broker of descriptors (before: hosting failed and the listener failed every
//! accept with "Too many open files"); the partitions it hosts keep working.

mod common;

use std::time::Duration;

use common::{free_port, ProcessBroker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_beyond_the_open_file_limit_are_refused_and_the_rest_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut broker = ProcessBroker::new(dir.path(), port, 1, &[], &[], None);
    broker.wrapper = ["prlimit", "--nofile=1024:2048", "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    broker.spawn();
    let pid = broker.child.as_ref().expect("running").id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    assert!(
        open_files.split_whitespace().nth(3) == Some("2048"),
        "the soft limit was not raised to the hard one: {open_files}"
    );

    // Room for (2048 - 1024 kept for connections - 256) / 3 = 256 partitions.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let too_many = NewTopic::new("too-many", 1000, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(&[too_many], &options)
        .await
        .expect("create");
    match &results[0] {
        Err((_, RDKafkaErrorCode::PolicyViolation)) => {}
        other => panic!("1,000 partitions under a 2,048-file limit: {other:?}"),
    }
    let fits = NewTopic::new("fits", 100, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(&[fits], &options)
        .await
        .expect("create");
    assert!(results[0].is_ok(), "{results:?}");

    // What it hosts works, and new connections are accepted.
    let producer = common::producer(&broker.bootstrap(), &[("acks", "all")]);
    for i in 0..100 {
        producer
            .send(
                rdkafka::producer::FutureRecord::<str, str>::to("fits")
                    .partition(i)
                    .payload("x"),
                Duration::from_secs(30),
            )
            .await
            .expect("produced");
    }
    tokio::task::block_in_place(|| {
        let connections: Vec<std::net::TcpStream> = (0..64)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        let response: kafka_protocol::messages::MetadataResponse = common::raw_request(
            port,
            kafka_protocol::messages::ApiKey::Metadata,
            9,
            &kafka_protocol::messages::MetadataRequest::default().with_topics(None),
        );
        assert!(response
            .topics
            .iter()
            .any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "fits")));
        assert!(!response
            .topics
            .iter()
            .any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "too-many")));
        drop(connections);
    });
}
