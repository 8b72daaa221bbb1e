//! Transactions with librdkafka's transactional producer (rdkafka) against a real broker:
//! commits are seen by read_committed consumers, aborts are not, a second producer with the
//! same transactional id fences the first, a transaction left open is aborted by its timeout
//! so read_committed consumers move on, and compaction removes aborted data but never an open
//! transaction's. Budget: about 30 s.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestBroker;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

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
    send_keyed(producer, topic, partition, value, value);
}

fn send_keyed(producer: &TxnProducer, topic: &str, partition: i32, key: &str, value: &str) {
    producer
        .send(
            BaseRecord::to(topic)
                .partition(partition)
                .key(key)
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
async fn compaction_removes_aborted_data_and_leaves_open_transactions_alone() {
    let broker = TestBroker::start(&[]).await;
    let bootstrap = broker.bootstrap.clone();
    let topic = "txn-compacted";
    common::create_topic(
        &bootstrap,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    )
    .await;
    let keys = |prefix: &str, range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|i| format!("{prefix}-k{i}")).collect()
    };
    let write = |producer: &TxnProducer, prefix: &str, range: std::ops::Range<usize>| {
        for i in range {
            send_keyed(
                producer,
                topic,
                0,
                &format!("k{i}"),
                &format!("{prefix}-k{i}"),
            );
        }
        producer.flush(TIMEOUT).expect("flush");
    };
    let (a, b) = tokio::task::block_in_place(|| {
        let a = txn_producer(&bootstrap, "txn-compact-a", &[]);
        a.begin_transaction().expect("begin");
        write(&a, "a1", 0..10);
        a.commit_transaction(TIMEOUT).expect("commit");
        (a, txn_producer(&bootstrap, "txn-compact-b", &[]))
    });
    common::roll_and_clean(&broker, topic).await;
    // b leaves k0 open; a then writes every key and aborts.
    tokio::task::block_in_place(|| {
        b.begin_transaction().expect("begin");
        write(&b, "open", 0..1);
        a.begin_transaction().expect("begin");
        write(&a, "aborted", 0..10);
        a.abort_transaction(TIMEOUT).expect("abort");
    });
    common::roll_and_clean(&broker, topic).await;
    let partition = broker
        .broker()
        .replicas
        .leader_partition(topic, 0)
        .expect("leader");
    assert_eq!(partition.log().all_aborted_transactions().len(), 1);
    tokio::task::block_in_place(|| {
        // Everything after b's open write is beyond the cleaner's reach.
        let mut expected = keys("a1", 0..10);
        expected.extend(keys("open", 0..1));
        expected.extend(keys("aborted", 0..10));
        expected.sort();
        let everything = read(&bootstrap, topic, 1, "read_uncommitted", expected.len() + 1);
        assert_eq!(values(&everything), expected);
        let committed = read(&bootstrap, topic, 1, "read_committed", 10);
        assert_eq!(values(&committed), keys("a1", 0..10));
        b.commit_transaction(TIMEOUT).expect("commit");
    });
    // b committed: the aborted records go, b's k0 supersedes a1's.
    let run = common::roll_and_clean(&broker, topic).await;
    assert_eq!(run.partitions_cleaned, 1, "{run:?}");
    assert!(run.records_removed >= 11, "{run:?}");
    let mut expected = keys("a1", 1..10);
    expected.extend(keys("open", 0..1));
    expected.sort();
    tokio::task::block_in_place(|| {
        let everything = read(&bootstrap, topic, 1, "read_uncommitted", expected.len() + 1);
        assert_eq!(values(&everything), expected);
        let committed = read(&bootstrap, topic, 1, "read_committed", expected.len());
        assert_eq!(values(&committed), expected);
    });
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

/// Consume-transform-produce on a three-broker cluster: a read_committed consumer in a group
/// reads `in`, a transactional producer writes each record transformed to `out` and commits
/// the consumer's offsets in the same transaction (`send_offsets_to_transaction`); every third
/// transaction is aborted and its input read again. Midway the broker that coordinates the
/// transactional id is stopped: the coordinator moves (its successor replays
/// `__transaction_state` and finishes what was decided). The transactional id is chosen so
/// that its coordinator is not the group's: librdkafka 2.12 waits forever for a group
/// coordinator that left the metadata (librdkafka issue #5511, which Apache Kafka brokers hit
/// the same way). Downstream, a read_committed reader sees each input transformed exactly
/// once, in input order per partition, and the group's committed offsets are the ends of `in`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_is_exactly_once_across_a_coordinator_move() {
    use common::cluster::{create, produce, Cluster};
    use gregor::coordinator::OFFSETS_TOPIC;
    use gregor::txn::TRANSACTION_STATE_TOPIC;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    const INPUTS: usize = 300;
    const GROUP: &str = "ctp";
    let mut cluster = Cluster::start(3).await;
    let bootstrap = cluster.all_bootstrap();
    create(&bootstrap, "in", 3, 3).await.expect("in");
    create(&bootstrap, "out", 3, 3).await.expect("out");
    let sent = produce(&bootstrap, "in", INPUTS).await;
    // Both internal topics now, to pick a transactional id whose coordinator is not the
    // group's.
    let broker = cluster.running(0).broker.clone();
    broker.ensure_offsets_topic().await.expect("offsets topic");
    let leader_of = leaders_with_transaction_topic(&broker).await;
    let group_coordinator = leader_of(OFFSETS_TOPIC, broker.groups.partition_for(GROUP));
    let txn_id = (0..)
        .map(|i| format!("ctp-tx-{i}"))
        .find(|id| {
            leader_of(TRANSACTION_STATE_TOPIC, broker.txns.partition_for(id)) != group_coordinator
        })
        .expect("a transactional id");
    let stopped = std::sync::Arc::new(std::sync::Mutex::new(None::<usize>));

    let worker = {
        let bootstrap = bootstrap.clone();
        let stopped = stopped.clone();
        let txn_id = txn_id.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", GROUP)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("isolation.level", "read_committed")
                .create()
                .expect("consumer");
            consumer.subscribe(&["in"]).expect("subscribe");
            let producer = txn_producer(&bootstrap, &txn_id, &[]);
            // Where each partition's committed input ends (the rewind point after an abort).
            let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
            let mut transactions = 0usize;
            let mut aborted_by_error = 0usize;
            let started = Instant::now();
            while committed.values().sum::<i64>() < INPUTS as i64 {
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "stuck at {committed:?}"
                );
                let mut batch = Vec::new();
                let poll_until = Instant::now() + Duration::from_millis(300);
                while batch.len() < 25 && Instant::now() < poll_until {
                    if let Some(message) = consumer.poll(Duration::from_millis(50)) {
                        let message = message.expect("consume");
                        let value = String::from_utf8_lossy(message.payload().unwrap_or_default())
                            .into_owned();
                        batch.push((message.partition(), message.offset(), value));
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                transactions += 1;
                let mut next: BTreeMap<i32, i64> = BTreeMap::new();
                for (partition, offset, _) in &batch {
                    next.insert(*partition, offset + 1);
                }
                let outcome = run_transaction(&producer, &consumer, &batch, &next, transactions);
                let done = match outcome {
                    Ok(done) => done,
                    Err(error) => {
                        // An abortable error (the coordinator moved mid-way): as any EOS
                        // application does, abort and read the input again.
                        assert!(error.txn_requires_abort(), "not abortable: {error}");
                        aborted_by_error += 1;
                        producer
                            .abort_transaction(TIMEOUT)
                            .expect("abort after error");
                        false
                    }
                };
                if done {
                    committed.extend(next);
                } else {
                    for partition in next.keys() {
                        let from = committed.get(partition).copied().unwrap_or(0);
                        consumer
                            .seek("in", *partition, Offset::Offset(from), TIMEOUT)
                            .expect("rewind");
                    }
                }
                if transactions == 6 {
                    // Ask the test to stop the coordinator's broker, and go on meanwhile.
                    *stopped.lock().expect("lock") = Some(transactions);
                }
            }
            (transactions, aborted_by_error)
        })
    };

    // Stop the broker that coordinates the transactional id once a few transactions are
    // through.
    let started = Instant::now();
    loop {
        if stopped_requested(&stopped) || worker.is_finished() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no transactions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let coordinator = (0..3)
        .find(|&i| {
            let broker = &cluster.running(i).broker;
            let partition = broker.txns.partition_for(&txn_id);
            broker
                .replicas
                .leader_partition(TRANSACTION_STATE_TOPIC, partition)
                .is_ok()
        })
        .expect("a coordinator");
    cluster.down(coordinator).await;
    let (transactions, aborted_by_error) = worker.await.expect("worker");
    eprintln!("{transactions} transactions, {aborted_by_error} aborted after an error");
    assert!(transactions >= 9, "{transactions} transactions");

    let survivor = (0..3).find(|&i| i != coordinator).expect("survivor");
    let out = tokio::task::block_in_place(|| {
        read(
            &cluster.bootstrap(survivor),
            "out",
            3,
            "read_committed",
            INPUTS,
        )
    });
    let mut expected: Vec<String> = sent.iter().map(|v| format!("T({v})")).collect();
    expected.sort();
    assert_eq!(
        values(&out),
        expected,
        "each input transformed exactly once"
    );
    // Input order per partition: each out partition holds the transformations of its in
    // partition in offset order.
    let input = tokio::task::block_in_place(|| {
        read(
            &cluster.bootstrap(survivor),
            "in",
            3,
            "read_committed",
            INPUTS,
        )
    });
    for (partition, values) in &out {
        let wanted: Vec<String> = input[partition].iter().map(|v| format!("T({v})")).collect();
        assert_eq!(values, &wanted, "partition {partition}");
    }
    // The group's committed offsets are the ends of `in`.
    let committed = tokio::task::block_in_place(|| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap(survivor))
            .set("group.id", GROUP)
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition("in", p);
        }
        consumer.committed_offsets(tpl, TIMEOUT).expect("committed")
    });
    let ends: Vec<(i32, i64)> = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), o),
            other => panic!("no committed offset: {other:?}"),
        })
        .collect();
    for (partition, end) in ends {
        assert_eq!(end, input[&partition].len() as i64, "partition {partition}");
    }
    cluster.shutdown().await;
}

/// Creates `__transaction_state` through `broker` and returns a lookup of partition leaders
/// (node ids) in the metadata as it is then.
async fn leaders_with_transaction_topic(
    broker: &std::sync::Arc<gregor::broker::Broker>,
) -> impl Fn(&str, i32) -> i32 {
    broker
        .ensure_transaction_topic()
        .await
        .expect("transaction topic");
    let image = broker.controller.image();
    move |topic: &str, partition: i32| {
        image
            .partition(topic, partition)
            .map(|p| p.leader)
            .expect("partition")
    }
}

/// Sends a TxnOffsetCommit (v3, offset 1 of `late`-0 for `late-group`) for a transaction of
/// `transactional_id` that has ended, to the group's coordinator; its error code.
async fn late_txn_offset_commit(
    cluster: &common::cluster::Cluster,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
) -> i16 {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, GroupId, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
        TxnOffsetCommitResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    let port = group_coordinator_port(cluster, "late-group").await;
    let request = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        )))
        .with_group_id(GroupId(StrBytes::from_static_str("late-group")))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("late")))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let response: TxnOffsetCommitResponse = tokio::task::block_in_place(|| {
        common::raw_request(port, ApiKey::TxnOffsetCommit, 3, &request)
    });
    response.topics[0].partitions[0].error_code
}

/// The error OffsetFetch v7 with `require_stable` answers for `late`-0 of `group`.
async fn fetch_stable_offset_error(cluster: &common::cluster::Cluster, group: &str) -> i16 {
    let port = group_coordinator_port(cluster, group).await;
    let response = offset_fetch(port, group, true);
    assert_eq!(response.error_code, 0, "{response:?}");
    response.topics[0].partitions[0].error_code
}

/// OffsetFetch v7 of `late`-0 for `group` at the broker on `port`.
fn offset_fetch(
    port: u16,
    group: &str,
    require_stable: bool,
) -> kafka_protocol::messages::OffsetFetchResponse {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{ApiKey, GroupId, OffsetFetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_require_stable(require_stable)
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("late")))
            .with_partition_indexes(vec![0])]));
    tokio::task::block_in_place(|| common::raw_request(port, ApiKey::OffsetFetch, 7, &request))
}

/// The client port of the broker coordinating `group`, once it serves the group (creating
/// `__consumer_offsets` first).
async fn group_coordinator_port(cluster: &common::cluster::Cluster, group: &str) -> u16 {
    use gregor::coordinator::OFFSETS_TOPIC;
    let broker = cluster.running(0).broker.clone();
    broker.ensure_offsets_topic().await.expect("offsets topic");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leader = broker
            .controller
            .image()
            .partition(OFFSETS_TOPIC, broker.groups.partition_for(group))
            .map(|p| p.leader)
            .expect("offsets partition");
        if let Ok(index) = usize::try_from(leader - 1) {
            let port = cluster.ports[index];
            if offset_fetch(port, group, false).error_code == 0 {
                return port;
            }
        }
        assert!(Instant::now() < deadline, "no coordinator serves {group}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One consume-transform-produce transaction: writes the batch transformed, adds the offsets
/// after it, and commits (or, every third transaction, aborts). Ok(true) when committed.
fn run_transaction(
    producer: &TxnProducer,
    consumer: &rdkafka::consumer::BaseConsumer,
    batch: &[(i32, i64, String)],
    next: &BTreeMap<i32, i64>,
    number: usize,
) -> Result<bool, rdkafka::error::RDKafkaError> {
    use rdkafka::consumer::Consumer;
    let as_txn = |error: KafkaError| match error {
        KafkaError::Transaction(error) => error,
        other => panic!("not a transaction error: {other}"),
    };
    producer.begin_transaction().map_err(as_txn)?;
    for (partition, _, value) in batch {
        send(producer, "out", *partition, &format!("T({value})"));
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in next {
        offsets
            .add_partition_offset("in", *partition, Offset::Offset(*offset))
            .expect("offset");
    }
    let metadata = consumer.group_metadata().expect("group metadata");
    producer
        .send_offsets_to_transaction(&offsets, &metadata, TIMEOUT)
        .map_err(as_txn)?;
    if number % 3 == 0 {
        // Written first: abort_transaction drops what librdkafka has not sent yet.
        producer.flush(TIMEOUT).expect("flush");
        producer.abort_transaction(TIMEOUT).map_err(as_txn)?;
        return Ok(false);
    }
    producer.commit_transaction(TIMEOUT).map_err(as_txn)?;
    Ok(true)
}

fn stopped_requested(flag: &std::sync::Mutex<Option<usize>>) -> bool {
    flag.lock().map(|f| f.is_some()).unwrap_or(true)
}

/// A transactional producer's write that arrives after its transaction ended (a request stuck
/// in the network while the client committed): the same producer id, epoch and next sequence,
/// sent straight to a partition leader. With KIP-890 verification (the default) the leader
/// asks the coordinator, learns the partition is in no open transaction and refuses it with
/// INVALID_TXN_STATE, on a leader that is the coordinator's broker and on one that is not
/// (the question then goes over the internal listener); nothing is left open. With the check
/// off, the same write opens a transaction no coordinator knows of and the partition's last
/// stable offset hangs there: the hole the check closes. The same for a late TxnOffsetCommit
/// at the group's coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_arriving_after_its_transaction_ended_is_refused_and_hangs_nothing() {
    use common::cluster::{create, Cluster};
    use gregor::txn::TRANSACTION_STATE_TOPIC;
    use kafka_protocol::messages::{ApiKey, ProduceResponse, TransactionalId};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::ResponseError;

    for verification in [true, false] {
        let settings = [(
            "transaction.partition.verification.enable",
            if verification { "true" } else { "false" },
        )];
        let cluster = Cluster::start_with(3, &settings).await;
        let bootstrap = cluster.all_bootstrap();
        create(&bootstrap, "late", 6, 3).await.expect("topic");
        let broker = cluster.running(0).broker.clone();
        let leader_of = leaders_with_transaction_topic(&broker).await;
        // A transactional id whose coordinator leads one partition of `late` and not another.
        let (txn_id, local, remote) = (0..)
            .map(|i| format!("late-tx-{i}"))
            .find_map(|id| {
                let coordinator =
                    leader_of(TRANSACTION_STATE_TOPIC, broker.txns.partition_for(&id));
                let local = (0..6).find(|p| leader_of("late", *p) == coordinator)?;
                let remote = (0..6).find(|p| leader_of("late", *p) != coordinator)?;
                Some((id, local, remote))
            })
            .expect("a transactional id");
        tokio::task::block_in_place(|| {
            let producer = txn_producer(&bootstrap, &txn_id, &[]);
            producer.begin_transaction().expect("begin");
            send(&producer, "late", local, "committed-local");
            send(&producer, "late", remote, "committed-remote");
            producer.commit_transaction(TIMEOUT).expect("commit");
        });
        let mut seen = None;
        for partition in [local, remote] {
            let leader = leader_of("late", partition);
            let index = usize::try_from(leader - 1).expect("node ids from 1");
            let state = cluster
                .running(index)
                .broker
                .replicas
                .leader_partition("late", partition)
                .expect("leader");
            let producer = state
                .log()
                .active_producers()
                .into_iter()
                .next()
                .expect("the producer's state");
            seen = Some((producer.producer_id, producer.epoch));
            let batch = common::producer_record_batch(
                producer.producer_id,
                producer.epoch,
                producer.last_sequence + 1,
                &["late"],
                true,
            );
            let request = common::produce_request("late", vec![(partition, batch)], -1)
                .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                    txn_id.clone(),
                ))));
            let response: ProduceResponse =
                common::raw_request(cluster.ports[index], ApiKey::Produce, 9, &request);
            let code = response.responses[0].partition_responses[0].error_code;
            if verification {
                assert_eq!(
                    code,
                    ResponseError::InvalidTxnState.code(),
                    "partition {partition} (leader {leader}): {response:?}"
                );
                assert_eq!(state.last_stable_offset(), state.high_watermark());
                assert_eq!(state.log().ongoing_transactions(), 0);
            } else {
                assert_eq!(code, 0, "accepted without the check: {response:?}");
                assert!(
                    state.last_stable_offset() < state.high_watermark(),
                    "the write hangs the partition"
                );
            }
        }
        // The same for offsets: a TxnOffsetCommit arriving after its transaction ended, at
        // the group's coordinator, is refused; without the check it is written and the
        // group's offset stays pending (require_stable: UNSTABLE_OFFSET_COMMIT) for good.
        let (producer_id, epoch) = seen.expect("a producer");
        let code = late_txn_offset_commit(&cluster, &txn_id, producer_id, epoch).await;
        let unstable = fetch_stable_offset_error(&cluster, "late-group").await;
        if verification {
            assert_eq!(code, ResponseError::InvalidTxnState.code());
            assert_eq!(unstable, 0);
        } else {
            assert_eq!(code, 0);
            assert_eq!(unstable, ResponseError::UnstableOffsetCommit.code());
        }
        if verification {
            // The producer goes on: its next transaction is verified and written.
            tokio::task::block_in_place(|| {
                let producer = txn_producer(&bootstrap, &txn_id, &[]);
                producer.begin_transaction().expect("begin");
                send(&producer, "late", local, "next-local");
                send(&producer, "late", remote, "next-remote");
                producer.commit_transaction(TIMEOUT).expect("commit");
                let got = read(&bootstrap, "late", 6, "read_committed", 4);
                assert_eq!(
                    values(&got),
                    [
                        "committed-local",
                        "committed-remote",
                        "next-local",
                        "next-remote"
                    ]
                );
            });
        }
        cluster.shutdown().await;
    }
}
