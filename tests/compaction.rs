//! Log compaction seen from a Kafka client (rdkafka): a `cleanup.policy=compact` topic with
//! small segments and many updates per key, cleaned by the broker's log cleaner, reads back
//! only the latest value of each key at its original offset; tombstones stay until
//! `delete.retention.ms` has passed; a record without a key is refused with INVALID_RECORD.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assigned_consumer, create_topic, producer, roll_and_clean, TestBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use gregor::replica::manager::now_ms;

/// (offset, key, value) of every record from the start to the high watermark.
fn consume_all(bootstrap: &str, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let watermarks: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let (_, high) = watermarks
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let consumer = assigned_consumer(bootstrap, topic, 1);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.last().is_none_or(|(offset, _, _)| *offset < high - 1) {
        assert!(Instant::now() < deadline, "consumed only {out:?} of {high}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("message");
        let key = String::from_utf8_lossy(message.key().expect("every record has a key"));
        let value = message
            .payload()
            .map(|v| String::from_utf8_lossy(v).into_owned());
        out.push((message.offset(), key.into_owned(), value));
    }
    out
}

async fn send(p: &FutureProducer, topic: &str, key: &str, value: Option<&str>) -> i64 {
    let mut record = FutureRecord::<str, str>::to(topic).key(key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    p.send(record, Duration::from_secs(10))
        .await
        .expect("delivered")
        .offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_keeps_the_latest_value_of_each_key() {
    let broker = TestBroker::start(&[]).await;
    let topic = "compacted";
    create_topic(
        &broker.bootstrap,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "4096"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "1000"),
        ],
    )
    .await;
    // Many updates per key, in batches of every kind: single records, lz4 and zstd batches.
    let plain = producer(&broker.bootstrap, &[("linger.ms", "0")]);
    let lz4 = producer(
        &broker.bootstrap,
        &[("linger.ms", "20"), ("compression.type", "lz4")],
    );
    let zstd = producer(
        &broker.bootstrap,
        &[("linger.ms", "20"), ("compression.type", "zstd")],
    );
    let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for round in 0..40 {
        let p = match round % 3 {
            0 => &plain,
            1 => &lz4,
            _ => &zstd,
        };
        let sends: Vec<_> = (0..8)
            .map(|key| {
                let key = format!("key-{key}");
                let value = format!("value-{round}-{}", "x".repeat(40));
                async move {
                    let offset = send(p, topic, &key, Some(&value)).await;
                    (key, offset, value)
                }
            })
            .collect();
        for (key, offset, value) in futures::future::join_all(sends).await {
            latest.insert(key, (offset, Some(value)));
        }
    }
    // One key deleted.
    let tombstone_offset = send(&plain, topic, "key-7", None).await;
    latest.insert("key-7".to_string(), (tombstone_offset, None));
    let total = tombstone_offset + 1;
    let log = broker
        .broker()
        .replicas
        .leader_partition(topic, 0)
        .expect("partition")
        .log()
        .clone();
    assert!(log.segment_count() > 3, "small segments: several rolls");
    let size_before = log.size_bytes();

    let run = roll_and_clean(&broker, topic).await;
    assert_eq!(run.partitions_cleaned, 1, "{run:?}");
    assert!(run.records_removed >= 40 * 8 - 8, "{run:?}");
    assert!(log.size_bytes() < size_before / 4);
    let files = std::fs::read_dir(broker.dir.path().join("compacted-0"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        files.iter().all(|name| !name.contains(".cleaned")
            && !name.contains(".swap")
            && !name.contains(".deleted")),
        "{files:?}"
    );

    // Only the latest value of each key (the tombstone too, for now), at the original offsets.
    let want: Vec<(i64, String, Option<String>)> = {
        let mut rows: Vec<_> = latest
            .iter()
            .map(|(key, (offset, value))| (*offset, key.clone(), value.clone()))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(consume_all(&broker.bootstrap, topic), want);
    let watermarks: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .expect("consumer");
    assert_eq!(
        watermarks
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .expect("watermarks"),
        (0, total)
    );

    // Nothing dirty: the next run leaves the topic alone.
    let b = broker.broker().clone();
    let idle = tokio::task::spawn_blocking(move || b.replicas.run_log_cleaner(now_ms()))
        .await
        .expect("cleaner task");
    assert_eq!(idle.partitions_cleaned, 0);

    // Past delete.retention.ms (counted from the first cleaning), the tombstone goes too.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let last = send(&plain, topic, "key-0", Some("final")).await;
    let run = roll_and_clean(&broker, topic).await;
    assert_eq!(run.partitions_cleaned, 1, "{run:?}");
    let got = consume_all(&broker.bootstrap, topic);
    assert!(got.iter().all(|(_, key, _)| key != "key-7"), "{got:?}");
    assert_eq!(got.len(), 7);
    assert_eq!(
        got.last(),
        Some(&(last, "key-0".to_string(), Some("final".to_string())))
    );

    // The cleaned log survives a restart as it is.
    let mut broker = broker;
    broker.restart().await;
    assert_eq!(consume_all(&broker.bootstrap, topic), got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_key_is_refused_by_a_compacted_topic() {
    let broker = TestBroker::start(&[]).await;
    create_topic(
        &broker.bootstrap,
        "keyed-only",
        1,
        &[("cleanup.policy", "compact,delete")],
    )
    .await;
    create_topic(&broker.bootstrap, "anything", 1, &[]).await;
    for compression in ["none", "gzip", "snappy"] {
        let p = producer(
            &broker.bootstrap,
            &[
                ("linger.ms", "0"),
                ("compression.type", compression),
                ("message.send.max.retries", "0"),
            ],
        );
        let refused = p
            .send(
                FutureRecord::<(), str>::to("keyed-only").payload("no key"),
                Duration::from_secs(10),
            )
            .await;
        match refused {
            Err((KafkaError::MessageProduction(code), _)) => {
                assert_eq!(code, RDKafkaErrorCode::InvalidRecord, "{compression}")
            }
            other => panic!("{compression}: expected INVALID_RECORD, got {other:?}"),
        }
        // With a key it goes in; a delete-policy topic takes records without one.
        send(&p, "keyed-only", "k", Some("v")).await;
        p.send(
            FutureRecord::<(), str>::to("anything").payload("no key"),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    }
}
