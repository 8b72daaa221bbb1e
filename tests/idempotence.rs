//! The idempotent producer against real brokers: InitProducerId, retries answered with their
//! original offsets, sequence gaps and stale epochs refused at every Produce version, the state
//! surviving restarts (from a snapshot and rebuilt from the log) and a leader change, and
//! rdkafka's idempotent producer end to end.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{self, Cluster};
use common::{idempotent_record_batch, produce_raw_at, raw_request, TestBroker};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceResponse, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

const OK: i16 = 0;

fn init_producer_id(
    port: u16,
    version: i16,
    transactional_id: Option<&str>,
) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(
            transactional_id.map(|id| TransactionalId(StrBytes::from_string(id.to_string()))),
        )
        .with_transaction_timeout_ms(60_000);
    raw_request(port, ApiKey::InitProducerId, version, &request)
}

/// (error code, base offset) of the one partition of a produce response.
fn outcome(response: &ProduceResponse) -> (i16, i64) {
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn log_end(broker: &TestBroker, topic: &str) -> i64 {
    broker
        .broker()
        .replicas
        .leader_partition(topic, 0)
        .expect("leader")
        .log()
        .log_end_offset()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_gaps_and_stale_epochs_get_kafkas_answers_at_every_produce_version() {
    let broker = TestBroker::start(&[]).await;
    let port = broker.port();
    let topic = "idempotent-raw";
    common::create_topic(&broker.bootstrap, topic, 1, &[]).await;

    // Every InitProducerId version hands out a new id at epoch 0 (a transactional id is the
    // transaction coordinator's, tests/transactions.rs); an empty transactional id is refused.
    let mut ids = Vec::new();
    for version in 0..=5 {
        let r = init_producer_id(port, version, None);
        assert_eq!((r.error_code, r.producer_epoch), (OK, 0), "v{version}");
        ids.push(r.producer_id.0);
        let r = init_producer_id(port, version, Some(""));
        assert_eq!(
            r.error_code,
            ResponseError::InvalidRequest.code(),
            "v{version}"
        );
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "producer ids repeat: {ids:?}");

    for version in 3..=12 {
        let pid = init_producer_id(port, 4, None).producer_id.0;
        let send = |epoch: i16, sequence: i32, values: &[&str]| {
            outcome(&produce_raw_at(
                port,
                topic,
                vec![(0, idempotent_record_batch(pid, epoch, sequence, values))],
                -1,
                version,
            ))
        };
        let (code, first) = send(0, 0, &["a", "b", "c"]);
        assert_eq!(code, OK, "v{version}");
        let (code, second) = send(0, 3, &["d"]);
        assert_eq!((code, second), (OK, first + 3), "v{version}");
        let end = log_end(&broker, topic);
        // Retries of either batch: their original offsets, nothing written.
        assert_eq!(send(0, 0, &["a", "b", "c"]), (OK, first), "v{version}");
        assert_eq!(send(0, 3, &["d"]), (OK, second), "v{version}");
        assert_eq!(
            log_end(&broker, topic),
            end,
            "v{version}: a retry was written"
        );
        // A gap, a batch overlapping a kept one, a new epoch not starting at 0.
        let out_of_order = ResponseError::OutOfOrderSequenceNumber.code();
        assert_eq!(send(0, 5, &["f"]).0, out_of_order, "v{version}");
        assert_eq!(send(0, 2, &["c", "d"]).0, out_of_order, "v{version}");
        assert_eq!(send(1, 4, &["e"]).0, out_of_order, "v{version}");
        // The producer bumps its epoch (as the Java client does itself): the old one is fenced.
        assert_eq!(send(1, 0, &["e"]).0, OK, "v{version}");
        assert_eq!(
            send(0, 4, &["e"]).0,
            ResponseError::InvalidProducerEpoch.code(),
            "v{version}"
        );
        // A negative sequence with a producer id is an invalid record (Kafka's LogValidator).
        assert_eq!(
            send(1, -5, &["x"]).0,
            ResponseError::InvalidRecord.code(),
            "v{version}"
        );
        assert_eq!(log_end(&broker, topic), end + 1, "v{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_survives_restarts_from_its_snapshot_and_from_the_log_alone() {
    // Small segments: the state's snapshots are written at rolls as well as at a clean stop.
    let mut broker = TestBroker::start(&[("log.segment.bytes", "500")]).await;
    let topic = "idempotent-restart";
    common::create_topic(&broker.bootstrap, topic, 1, &[]).await;
    let pid = init_producer_id(broker.port(), 4, None).producer_id.0;
    let mut last = (0, 0);
    for sequence in (0..60).step_by(3) {
        let values = ["v1", "v2", "v3"];
        let (code, offset) = outcome(&produce_raw_at(
            broker.port(),
            topic,
            vec![(0, idempotent_record_batch(pid, 0, sequence, &values))],
            -1,
            9,
        ));
        assert_eq!(code, OK);
        last = (sequence, offset);
    }
    let retry = |broker: &TestBroker| {
        outcome(&produce_raw_at(
            broker.port(),
            topic,
            vec![(
                0,
                idempotent_record_batch(pid, 0, last.0, &["v1", "v2", "v3"]),
            )],
            -1,
            9,
        ))
    };
    let dir = broker.dir.path().join(format!("{topic}-0"));
    let snapshots = || {
        std::fs::read_dir(&dir)
            .expect("partition dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
            .collect::<Vec<_>>()
    };
    assert!(
        snapshots().len() > 1,
        "rolls write snapshots: {:?}",
        snapshots()
    );

    // Clean restart: the state comes from the snapshot written at the stop.
    broker.restart().await;
    let end = log_end(&broker, topic);
    assert_eq!(retry(&broker), (OK, last.1));
    assert_eq!(log_end(&broker, topic), end);

    // Every snapshot deleted: the state is rebuilt from the log's batches.
    let running = broker.running.take().expect("running");
    running.shutdown().await.expect("clean stop");
    for path in snapshots() {
        std::fs::remove_file(path).expect("remove snapshot");
    }
    broker.running = Some(common_start(&broker).await);
    assert_eq!(retry(&broker), (OK, last.1));
    assert_eq!(log_end(&broker, topic), end);
    // And the sequence continues where it was.
    let (code, offset) = outcome(&produce_raw_at(
        broker.port(),
        topic,
        vec![(0, idempotent_record_batch(pid, 0, last.0 + 3, &["next"]))],
        -1,
        9,
    ));
    assert_eq!((code, offset), (OK, end));
}

/// Starts `broker` again on its port and data dir (after a stop done by the test).
async fn common_start(broker: &TestBroker) -> gregor::broker::RunningBroker {
    let mut config = gregor::config::BrokerConfig::new(
        broker.bootstrap.parse().expect("addr"),
        broker.dir.path().to_path_buf(),
    );
    config.set("log.segment.bytes", "500").expect("setting");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match gregor::broker::start(config.clone()).await {
            Ok(running) => return running,
            Err(e) if Instant::now() < deadline => {
                eprintln!("broker start retry: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("broker start: {e}"),
        }
    }
}

/// The leader of `topic`-0 in broker `via`'s metadata.
fn leader_of(cluster: &Cluster, via: usize, topic: &str) -> i32 {
    cluster
        .running(via)
        .broker
        .controller
        .image()
        .partition(topic, 0)
        .expect("partition")
        .leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_deduplicates_a_retry_first_sent_to_the_old_one() {
    let mut cluster = Cluster::start(3).await;
    let topic = "idempotent-failover";
    cluster::create_with(
        &cluster.bootstrap(0),
        topic,
        1,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await
    .expect("topic created");
    cluster::wait_in_sync(&cluster, topic, 1, 3).await;
    let leader = leader_of(&cluster, 0, topic);
    let leader_index = usize::try_from(leader - 1).expect("node id");
    let ports = cluster.ports.clone();
    let port = |i: usize| ports[i];
    let pid = init_producer_id(port(leader_index), 4, None).producer_id.0;
    let batch = idempotent_record_batch(pid, 0, 0, &["once", "only"]);
    let (code, offset) = outcome(&produce_raw_at(
        port(leader_index),
        topic,
        vec![(0, batch.clone())],
        -1,
        9,
    ));
    assert_eq!(code, OK);
    // acks=all: every ISR member holds the batch and, with it, the producer's state.
    cluster.down(leader_index).await;
    let survivor = (0..3).find(|&i| i != leader_index).expect("survivor");
    cluster::wait_partition(&cluster, survivor, topic, 0, "a new leader", |p| {
        p.leader >= 0 && p.leader != leader
    })
    .await;
    let new_leader = leader_of(&cluster, survivor, topic);
    let new_index = usize::try_from(new_leader - 1).expect("node id");
    // The producer retries on the new leader (the old one's answer never arrived).
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let answer = outcome(&produce_raw_at(
            port(new_index),
            topic,
            vec![(0, batch.clone())],
            -1,
            9,
        ));
        if answer.0 != ResponseError::NotLeaderOrFollower.code() || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer, (OK, offset), "the retry was not recognised");
    let end = cluster
        .running(new_index)
        .broker
        .replicas
        .leader_partition(topic, 0)
        .expect("leader")
        .log()
        .log_end_offset();
    assert_eq!(end, offset + 2, "the retry was written again");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_idempotent_producer_delivers_each_record_once_in_order() {
    let broker = TestBroker::start(&[]).await;
    let topic = "idempotent-rdkafka";
    common::create_topic(&broker.bootstrap, topic, 3, &[]).await;
    let producer = common::producer(
        &broker.bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "5"),
            ("linger.ms", "2"),
        ],
    );
    let n = 3000;
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let value = format!("{i:05}");
            let producer = producer.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(topic)
                            .partition(i % 3)
                            .key(&value)
                            .payload(&value),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
            }
        })
        .collect();
    let delivered = futures::future::join_all(sends).await;
    assert!(delivered.iter().all(Result::is_ok), "a send failed");
    let consumer = common::assigned_consumer(&broker.bootstrap, topic, 3);
    let mut read: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while read.values().map(Vec::len).sum::<usize>() < n as usize && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let value: i32 = std::str::from_utf8(m.payload().unwrap_or_default())
                .expect("utf8")
                .parse()
                .expect("number");
            read.entry(m.partition()).or_default().push(value);
        }
    }
    consumer.unassign().expect("unassign");
    for (partition, values) in &read {
        let expected: Vec<i32> = (0..n).filter(|i| i % 3 == *partition).collect();
        assert_eq!(
            values, &expected,
            "partition {partition}: not exactly once in order"
        );
    }
    assert_eq!(read.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_producers_expire_and_ids_stay_unique_across_restarts() {
    // The batches carry a 2023 timestamp: a minute's expiry has long passed for them.
    let mut broker = TestBroker::start(&[
        ("producer.id.expiration.ms", "60000"),
        ("producer.id.expiration.check.interval.ms", "200"),
    ])
    .await;
    let topic = "idempotent-expiry";
    common::create_topic(&broker.bootstrap, topic, 1, &[]).await;
    let pid = init_producer_id(broker.port(), 4, None).producer_id.0;
    let send = |port: u16, sequence: i32| {
        outcome(&produce_raw_at(
            port,
            topic,
            vec![(0, idempotent_record_batch(pid, 0, sequence, &["x"]))],
            -1,
            9,
        ))
        .0
    };
    assert_eq!(send(broker.port(), 0), OK);
    // Until the next expiry check the producer is known: a gap is refused...
    // (the check runs every 200 ms; the state is gone within a second)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut gap = send(broker.port(), 7);
    while gap != OK && Instant::now() < deadline {
        assert_eq!(gap, ResponseError::OutOfOrderSequenceNumber.code());
        tokio::time::sleep(Duration::from_millis(100)).await;
        gap = send(broker.port(), 7);
    }
    // ...after it, the producer is unknown and may start anywhere (Kafka since KIP-360).
    assert_eq!(gap, OK, "the idle producer's state never expired");

    // Producer ids come from blocks committed to the metadata log: a restarted broker never
    // hands out one it gave before.
    broker.restart().await;
    let after = init_producer_id(broker.port(), 4, None).producer_id.0;
    assert!(
        after > pid,
        "producer id {after} after a restart, {pid} before"
    );
}
