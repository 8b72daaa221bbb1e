//! Transactions with librdkafka's transactional producer (rdkafka) against a real broker:
//! commits are seen by read_committed consumers, aborts are not, a second producer with the
//! same transactional id fences the first, and a transaction left open is aborted by its
//! timeout so read_committed consumers move on. Budget: about 20 s.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestBroker;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

type TxnProducer = ThreadedProducer<DefaultProducerContext>;

const TIMEOUT: Duration = Duration::from_secs(10);

fn txn_producer(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> TxnProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "5");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    common::rdkafka_debug(&mut config);
    let producer: TxnProducer = config.create().expect("producer");
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    producer
}

fn send(producer: &TxnProducer, topic: &str, partition: i32, value: &str) {
    producer
        .send(
            BaseRecord::to(topic)
                .partition(partition)
                .key(value)
                .payload(value),
        )
        .map_err(|(e, _)| e)
        .expect("enqueue");
}

/// Every value a consumer at `isolation` reads from `partitions` partitions until it has read
/// `until` values or 3 s pass without a new one, by partition in offset order.
fn read(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    until: usize,
) -> BTreeMap<i32, Vec<String>> {
    let consumer = common::assigned_consumer_with(
        bootstrap,
        topic,
        partitions,
        &[("isolation.level", isolation)],
    );
    let mut got: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3)
        && got.values().map(Vec::len).sum::<usize>() < until
    {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            got.entry(message.partition()).or_default().push(value);
            last = Instant::now();
        }
    }
    got
}

fn values(got: &BTreeMap<i32, Vec<String>>) -> Vec<String> {
    let mut all: Vec<String> = got.values().flatten().cloned().collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_are_seen_aborted_ones_are_not() {
    let broker = TestBroker::start(&[]).await;
    let bootstrap = broker.bootstrap.clone();
    common::create_topic(&bootstrap, "txn", 2, &[]).await;
    tokio::task::block_in_place(|| {
        let producer = txn_producer(&bootstrap, "txn-basic", &[]);
        let mut expected = Vec::new();
        for round in 0..6 {
            producer.begin_transaction().expect("begin");
            for i in 0..10 {
                let value = format!("r{round}-{i:02}");
                send(&producer, "txn", i % 2, &value);
                if round % 2 == 0 {
                    expected.push(value);
                }
            }
            if round % 2 == 0 {
                producer.commit_transaction(TIMEOUT).expect("commit");
            } else {
                // Written first: abort_transaction drops what librdkafka has not sent yet.
                producer.flush(TIMEOUT).expect("flush");
                producer.abort_transaction(TIMEOUT).expect("abort");
            }
        }
        expected.sort();
        let committed = read(&bootstrap, "txn", 2, "read_committed", expected.len());
        assert_eq!(
            values(&committed),
            expected,
            "read_committed sees the commits only"
        );
        // Offsets in order within each partition.
        for (partition, got) in &committed {
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(&sorted, got, "partition {partition} out of order");
        }
        let everything = read(&bootstrap, "txn", 2, "read_uncommitted", 60);
        assert_eq!(
            values(&everything).len(),
            60,
            "read_uncommitted sees every record: {everything:?}"
        );
    });
    // The markers and the aborted-transaction index are on the partitions.
    let partition = broker
        .broker()
        .replicas
        .leader_partition("txn", 0)
        .expect("leader");
    assert_eq!(partition.log().ongoing_transactions(), 0);
    assert_eq!(partition.log().all_aborted_transactions().len(), 3);
    assert_eq!(partition.last_stable_offset(), partition.high_watermark());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_id_fences_the_first() {
    let broker = TestBroker::start(&[]).await;
    let bootstrap = broker.bootstrap.clone();
    common::create_topic(&bootstrap, "fenced", 1, &[]).await;
    tokio::task::block_in_place(|| {
        let zombie = txn_producer(&bootstrap, "txn-fence", &[]);
        zombie.begin_transaction().expect("begin");
        send(&zombie, "fenced", 0, "zombie-1");
        zombie.flush(TIMEOUT).expect("flush");
        // The new instance's init_transactions aborts the zombie's open transaction.
        let fresh = txn_producer(&bootstrap, "txn-fence", &[]);
        send(&zombie, "fenced", 0, "zombie-2");
        let failed = zombie.commit_transaction(TIMEOUT);
        match failed {
            Err(KafkaError::Transaction(error)) => {
                assert!(error.is_fatal(), "fencing is fatal: {error}");
            }
            other => panic!("the zombie's commit should be fenced: {other:?}"),
        }
        fresh.begin_transaction().expect("begin");
        send(&fresh, "fenced", 0, "fresh");
        fresh.commit_transaction(TIMEOUT).expect("commit");
        let got = read(&bootstrap, "fenced", 1, "read_committed", 1);
        assert_eq!(values(&got), vec!["fresh".to_string()]);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_is_aborted_by_its_timeout() {
    let broker = TestBroker::start(&[(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "200",
    )])
    .await;
    let bootstrap = broker.bootstrap.clone();
    common::create_topic(&bootstrap, "hung", 1, &[]).await;
    tokio::task::block_in_place(|| {
        let hung = txn_producer(
            &bootstrap,
            "txn-hung",
            &[("transaction.timeout.ms", "1500")],
        );
        hung.begin_transaction().expect("begin");
        send(&hung, "hung", 0, "hung");
        hung.flush(TIMEOUT).expect("flush");
        let other = txn_producer(&bootstrap, "txn-other", &[]);
        other.begin_transaction().expect("begin");
        send(&other, "hung", 0, "after");
        other.commit_transaction(TIMEOUT).expect("commit");
        // The open transaction holds the last stable offset: nothing is visible yet.
        let partition = broker
            .broker()
            .replicas
            .leader_partition("hung", 0)
            .expect("leader");
        assert_eq!(partition.last_stable_offset(), 0);
        let started = Instant::now();
        while partition.last_stable_offset() < partition.high_watermark() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the timed-out transaction was not aborted"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let got = read(&bootstrap, "hung", 1, "read_committed", 1);
        assert_eq!(values(&got), vec!["after".to_string()]);
        // The hung producer was fenced by the abort's epoch bump.
        assert!(hung.commit_transaction(TIMEOUT).is_err());
    });
}
