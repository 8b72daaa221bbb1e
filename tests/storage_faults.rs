//! A storage fault takes the log offline, not the data (issue 11, item 5): a failed write or
//! fsync (an injected EIO, or a real full filesystem: a size-limited tmpfs under one partition)
//! takes that partition's log offline; the producer is told KAFKA_STORAGE_ERROR and nothing
//! more is acknowledged on that copy; the broker reports it and the controller moves
//! leadership to a healthy ISR member; other partitions keep working; after a restart the log
//! is recovered and everything acknowledged is there.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::*;
use common::{TestBroker, TmpfsMount};
use gregor::log::faults::{self, Fault};
use kafka_protocol::ResponseError;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

/// One batch of `count` records of `size` bytes each, values `tag-<i>` padded.
fn batch(tag: &str, count: usize, size: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let mut value = format!("{tag}-{i}").into_bytes();
            value.resize(size, b'.');
            value
        })
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> =
        values.iter().map(|v| (None, v.as_slice())).collect();
    common::record_batch(&records, false, false)
}

/// Produces `records` to `topic`-0 with `acks`: (error code, base offset).
fn produce(port: u16, topic: &str, records: Bytes, acks: i16) -> (i16, i64) {
    let response = common::produce_raw(port, topic, vec![(0, records)], acks);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Every record of `topic`-0 as a consumer reads it: offset -> value.
fn read_all(bootstrap: &str, topic: &str, at_least: usize) -> BTreeMap<i64, Vec<u8>> {
    let consumer: BaseConsumer = common::assigned_consumer(bootstrap, topic, 1);
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < at_least && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            got.insert(m.offset(), m.payload().unwrap_or_default().to_vec());
        }
    }
    got
}

/// Waits until broker `image_of`'s metadata shows partition 0 of `topic` satisfying `ok`.
async fn wait_image(
    image_of: &gregor::broker::Broker,
    topic: &str,
    what: &str,
    ok: impl Fn(&gregor::cluster::PartitionInfo) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let image = image_of.controller.image();
        let p = image.partition(topic, 0).expect("partition").clone();
        if ok(&p) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One broker: an injected EIO on write, then an injected fsync failure, each on its own
/// partition; then a real full filesystem under a third. Each refuses with KAFKA_STORAGE_ERROR
/// and goes offline (reported: no leader, as the only copy), the other topics keep working,
/// and after a restart (unclean: the offline logs cannot close cleanly) every acknowledged
/// record is back and the partitions take writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_storage_faults_take_one_log_offline_and_lose_nothing_acknowledged() {
    let mut broker = TestBroker::start(&[]).await;
    let dir = broker.dir.path().to_path_buf();
    // The full-disk partition lives on 512 KiB of its own.
    let mount = TmpfsMount::new(&dir.join("full-0"), "512k");
    common::create_topic(&broker.bootstrap, "eio", 1, &[]).await;
    common::create_topic(&broker.bootstrap, "fsync", 1, &[("flush.messages", "1")]).await;
    common::create_topic(&broker.bootstrap, "full", 1, &[]).await;
    common::create_topic(&broker.bootstrap, "fine", 1, &[]).await;
    let port = broker.port();
    let storage_error = ResponseError::KafkaStorageError.code();

    let mut acked: BTreeMap<&str, usize> = BTreeMap::new();
    tokio::task::block_in_place(|| {
        for topic in ["eio", "fsync"] {
            assert_eq!(produce(port, topic, batch(topic, 10, 100), -1), (0, 0));
            acked.insert(topic, 10);
        }
        faults::inject(&dir.join("eio-0"), Fault::Write);
        faults::inject(&dir.join("fsync-0"), Fault::Fsync);
        assert_eq!(
            produce(port, "eio", batch("eio-late", 5, 100), -1).0,
            storage_error
        );
        assert_eq!(
            produce(port, "fsync", batch("fsync-late", 5, 100), 1).0,
            storage_error
        );
        // The disk fills: acknowledged until it does not fit, then KAFKA_STORAGE_ERROR.
        let mut full = 0;
        loop {
            let (code, _) = produce(port, "full", batch("full", 16, 1000), -1);
            if code == 0 {
                full += 16;
                assert!(full < 10_000, "the 512 KiB filesystem never filled");
                continue;
            }
            assert_eq!(code, storage_error, "a full disk");
            break;
        }
        acked.insert("full", full);
        // Later writes to those logs fail at once; other topics are not affected.
        assert_eq!(
            produce(port, "full", batch("tiny", 1, 10), 1).0,
            storage_error
        );
        assert_eq!(produce(port, "fine", batch("fine", 10, 100), -1), (0, 0));
    });
    for topic in ["eio", "fsync", "full"] {
        wait_image(broker.broker(), topic, "the offline log is reported", |p| {
            p.leader == -1
        })
        .await;
    }
    faults::clear(&dir);
    mount.resize("64m");
    broker.restart_after_fault().await;
    for topic in ["eio", "fsync", "full"] {
        wait_image(
            broker.broker(),
            topic,
            "the recovered log leads again",
            |p| p.leader == 1,
        )
        .await;
        let n = acked[topic];
        let got = tokio::task::block_in_place(|| read_all(&broker.bootstrap, topic, n));
        for i in 0..n {
            let value = got.get(&(i as i64));
            assert!(
                value.is_some_and(|v| v.starts_with(format!("{topic}-{}", i % 16).as_bytes())
                    || v.starts_with(format!("{topic}-{i}").as_bytes())),
                "{topic}: acknowledged record {i} is {value:?}"
            );
        }
        // A batch refused with KAFKA_STORAGE_ERROR may still be on disk (the injected fsync
        // failure dropped no page): it was not acknowledged, so either way is right.
        let (code, base) =
            tokio::task::block_in_place(|| produce(port, topic, batch("again", 1, 10), -1));
        assert_eq!(code, 0, "{topic} takes writes again");
        assert!(
            base >= n as i64,
            "{topic}: new records go after the acknowledged ones"
        );
    }
    drop(mount);
}

/// Produces `records` records of 1 KiB to `topic` with acks=all through `bootstrap`, 32 in
/// flight at a time, recording every acknowledgement; returns how many sends failed.
async fn produce_acked(
    bootstrap: &str,
    topic: &str,
    from: usize,
    records: usize,
    acked: &common::Acked,
) -> usize {
    let producer = common::producer(
        bootstrap,
        &[
            ("acks", "all"),
            ("retry.backoff.ms", "100"),
            ("message.timeout.ms", "60000"),
        ],
    );
    let mut failed = 0;
    for chunk_start in (from..from + records).step_by(32) {
        let sends = (chunk_start..(chunk_start + 32).min(from + records)).map(|i| {
            let mut value = format!("{topic}-{i:06}").into_bytes();
            value.resize(1024, b'.');
            let producer = producer.clone();
            let topic = topic.to_string();
            async move {
                let value = String::from_utf8(value).expect("ascii");
                let sent = producer
                    .send(
                        FutureRecord::<str, str>::to(&topic)
                            .partition(0)
                            .payload(&value),
                        Duration::from_secs(60),
                    )
                    .await;
                (value, sent)
            }
        });
        for (value, sent) in futures::future::join_all(sends).await {
            match sent {
                Ok(delivery) => acked
                    .lock()
                    .expect("lock")
                    .insert((delivery.partition, delivery.offset), value),
                Err((e, _)) => {
                    failed += 1;
                    eprintln!("not acknowledged (so not checked): {e}");
                }
            }
        }
    }
    failed
}

/// Three brokers, RF=3: the leader's partition filesystem fills (ENOSPC), and, on another
/// topic, the leader's fsync fails. Each time the leader's log goes offline, it is reported,
/// leadership moves to a healthy ISR member, the producer carries on there, and every
/// acknowledged record is afterwards at its offset; the faulty copy stays out of the ISR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_storage_fault_moves_leadership_and_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start(3).await;
    let full_mount = TmpfsMount::new(&cluster.root.path().join("broker-1").join("full-0"), "256k");
    let admin = admin(&cluster.bootstrap(0));
    let assignment: &[&[i32]] = &[&[1, 2, 3]];
    let synced_assignment: &[&[i32]] = &[&[2, 3, 1]];
    let topics = [
        NewTopic::new("full", 1, TopicReplication::Variable(assignment))
            .set("min.insync.replicas", "2"),
        NewTopic::new("synced", 1, TopicReplication::Variable(synced_assignment))
            .set("min.insync.replicas", "2")
            .set("flush.messages", "1"),
    ];
    for result in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create")
    {
        result.expect("created");
    }
    let bootstrap = cluster.all_bootstrap();
    for (topic, faulty, inject) in [("full", 1, None), ("synced", 2, Some(Fault::Fsync))] {
        let acked = common::Acked::default();
        produce_acked(&bootstrap, topic, 0, 100, &acked).await;
        let watcher = cluster.running(2).broker.clone();
        assert_eq!(
            watcher
                .controller
                .image()
                .partition(topic, 0)
                .map(|p| p.leader),
            Some(faulty)
        );
        if let Some(fault) = inject {
            faults::inject(
                &cluster
                    .root
                    .path()
                    .join(format!("broker-{faulty}"))
                    .join(format!("{topic}-0")),
                fault,
            );
        }
        // Through the fault (the 256 KiB filesystem fills within these) and on the new leader.
        let failed = produce_acked(&bootstrap, topic, 100, 600, &acked).await;
        wait_image(
            &watcher,
            topic,
            "leadership moved off the faulty copy",
            |p| p.leader >= 0 && p.leader != faulty && !p.isr.contains(&faulty),
        )
        .await;
        produce_acked(&bootstrap, topic, 700, 100, &acked).await;
        let count = acked.lock().expect("lock").len();
        eprintln!("{topic}: {count} acknowledged, {failed} sends failed during the fault");
        assert!(
            count >= 200,
            "{topic}: the producer did not carry on ({count} acknowledged)"
        );
        let survivor = (1..=3).find(|b| *b != faulty).expect("another broker");
        tokio::task::block_in_place(|| {
            common::check_acknowledged(&cluster.bootstrap(survivor as usize - 1), topic, 1, &acked)
        });
    }
    faults::clear(cluster.root.path());
    cluster.down_after_fault(0).await;
    cluster.down_after_fault(1).await;
    cluster.down(2).await;
    drop(full_mount);
}
