//! Produce and Fetch through rdkafka against a real broker: every codec, keys, headers, null
//! values, read back byte-exact; timestamps; ListOffsets by time; long-poll wake-up.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assigned_consumer, create_topic, producer, TestBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, Timestamp, TopicPartitionList};

type Headers_ = Vec<(String, Option<Vec<u8>>)>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Headers_,
}

fn make_record(i: usize) -> Rec {
    let key = if i % 7 == 0 {
        None
    } else {
        Some(format!("key-{i}").into_bytes())
    };
    let value = if i % 11 == 0 {
        None
    } else {
        // Compressible and incompressible parts, varying length.
        let mut v = format!("value-{i}-").repeat(1 + i % 5).into_bytes();
        v.extend((0..(i % 97)).map(|j| ((i * 31 + j * 17) % 251) as u8));
        Some(v)
    };
    let mut headers = Vec::new();
    if i % 3 == 0 {
        headers.push(("h".to_string(), Some(format!("{i}").into_bytes())));
        // Duplicate header keys must survive (stored batches are never re-encoded).
        headers.push(("h".to_string(), Some(b"again".to_vec())));
        headers.push(("null-header".to_string(), None));
    }
    Rec {
        key,
        value,
        headers,
    }
}

fn owned_headers(h: &Headers_) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    for (k, v) in h {
        out = out.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    out
}

async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    records: &[Rec],
    expected: &mut BTreeMap<(i32, i64), Rec>,
) {
    let mut futures = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let partition = (i as i32) % partitions;
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).partition(partition);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_slice());
        }
        if !r.headers.is_empty() {
            record = record.headers(owned_headers(&r.headers));
        }
        let future = loop {
            match producer.send_result(record) {
                Ok(f) => break f,
                Err((_, rec)) => {
                    record = rec;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        futures.push((r.clone(), future));
    }
    for (r, f) in futures {
        let delivery = f.await.expect("delivery channel").expect("delivered");
        assert!(
            expected
                .insert((delivery.partition, delivery.offset), r)
                .is_none(),
            "offset {} of partition {} acknowledged twice",
            delivery.offset,
            delivery.partition
        );
    }
}

fn consume_exact(
    consumer: &BaseConsumer,
    count: usize,
    timeout: Duration,
) -> BTreeMap<(i32, i64), Rec> {
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while got.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|hd| (hd.key.to_string(), hd.value.map(|v| v.to_vec())))
                            .collect()
                    })
                    .unwrap_or_default();
                got.insert(
                    (m.partition(), m.offset()),
                    Rec {
                        key: m.key().map(|k| k.to_vec()),
                        value: m.payload().map(|v| v.to_vec()),
                        headers,
                    },
                );
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_every_codec_read_back_exact() {
    let broker = TestBroker::start(&[]).await;
    let topic = "codecs";
    let partitions = 8;
    create_topic(&broker.bootstrap, topic, partitions, &[]).await;
    let mut expected = BTreeMap::new();
    let per_codec = 20_000;
    for (n, codec) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
        let p = producer(
            &broker.bootstrap,
            &[("compression.type", codec), ("acks", "1")],
        );
        let records: Vec<Rec> = (n * per_codec..(n + 1) * per_codec)
            .map(make_record)
            .collect();
        produce_all(&p, topic, partitions, &records, &mut expected).await;
    }
    assert_eq!(expected.len(), 100_000);
    // Offsets are dense from 0 in every partition.
    for p in 0..partitions {
        let offsets: Vec<i64> = expected
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
    }
    let consumer = assigned_consumer(&broker.bootstrap, topic, partitions);
    let got = tokio::task::block_in_place(|| {
        consume_exact(&consumer, expected.len(), Duration::from_secs(120))
    });
    assert_eq!(got.len(), expected.len());
    for (k, v) in &expected {
        assert_eq!(got.get(k), Some(v), "record at {k:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_time_and_log_append_time() {
    let broker = TestBroker::start(&[]).await;
    create_topic(&broker.bootstrap, "create-time", 1, &[]).await;
    create_topic(
        &broker.bootstrap,
        "append-time",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let p = producer(&broker.bootstrap, &[]);
    let old = 1_000_000_000_000i64; // 2001
    for topic in ["create-time", "append-time"] {
        p.send(
            FutureRecord::<str, str>::to(topic)
                .payload("x")
                .timestamp(old),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    }
    let before = chrono_now_ms();
    for (topic, want_append_time) in [("create-time", false), ("append-time", true)] {
        let c = assigned_consumer(&broker.bootstrap, topic, 1);
        let got = tokio::task::block_in_place(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                    return m.timestamp();
                }
                assert!(Instant::now() < deadline, "no record");
            }
        });
        match (got, want_append_time) {
            (Timestamp::CreateTime(t), false) => assert_eq!(t, old),
            (Timestamp::LogAppendTime(t), true) => {
                assert!(t > old && t <= before + 60_000, "append time {t}")
            }
            other => panic!("{topic}: unexpected timestamp {other:?}"),
        }
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_timestamp() {
    let broker = TestBroker::start(&[]).await;
    create_topic(&broker.bootstrap, "times", 1, &[]).await;
    let p = producer(&broker.bootstrap, &[("linger.ms", "0")]);
    let base = 1_600_000_000_000i64;
    // One record per send, timestamps base, base+1000, ..., so the lookup must be exact per
    // record, not per batch.
    for i in 0..50i64 {
        p.send(
            FutureRecord::<str, str>::to("times")
                .payload("v")
                .timestamp(base + i * 1000),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    }
    let c = assigned_consumer(&broker.bootstrap, "times", 1);
    let lookup = |ts: i64| -> Offset {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("times", 0, Offset::Offset(ts))
            .expect("tpl");
        let r = c
            .offsets_for_times(tpl, Duration::from_secs(10))
            .expect("offsets_for_times");
        r.elements()[0].offset()
    };
    tokio::task::block_in_place(|| {
        assert_eq!(lookup(base), Offset::Offset(0));
        assert_eq!(lookup(base + 500), Offset::Offset(1));
        assert_eq!(lookup(base + 17_000), Offset::Offset(17));
        assert_eq!(lookup(base + 49_000), Offset::Offset(49));
        assert_eq!(lookup(base + 49_001), Offset::End);
        let (low, high) = c
            .fetch_watermarks("times", 0, Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!((low, high), (0, 50));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_wakes_on_produce() {
    let broker = TestBroker::start(&[]).await;
    create_topic(&broker.bootstrap, "wake", 1, &[]).await;
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        // The broker holds each fetch up to 10 s; only an append can answer it sooner.
        .set("fetch.wait.max.ms", "10000")
        .set("fetch.min.bytes", "1")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("wake", 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    // Let the consumer settle into its first long poll.
    tokio::task::block_in_place(|| assert!(consumer.poll(Duration::from_millis(1500)).is_none()));
    let p = producer(&broker.bootstrap, &[("linger.ms", "0")]);
    let sent = Instant::now();
    p.send(
        FutureRecord::<str, str>::to("wake").payload("now"),
        Duration::from_secs(10),
    )
    .await
    .expect("delivered");
    let got = tokio::task::block_in_place(|| loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => return (m.payload().map(|p| p.to_vec()), sent.elapsed()),
            Some(Err(e)) => panic!("{e}"),
            None => assert!(
                sent.elapsed() < Duration::from_secs(9),
                "long poll did not wake"
            ),
        }
    });
    assert_eq!(got.0.as_deref(), Some(&b"now"[..]));
    assert!(got.1 < Duration::from_secs(3), "woke after {:?}", got.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_parked_long_polls() {
    let mut broker = TestBroker::start(&[]).await;
    create_topic(&broker.bootstrap, "parked", 1, &[]).await;
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20000")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("parked", 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    // Let the consumer park a long poll at the end of the empty partition.
    tokio::task::block_in_place(|| assert!(consumer.poll(Duration::from_millis(1500)).is_none()));
    let started = Instant::now();
    broker
        .running
        .take()
        .expect("running")
        .shutdown()
        .await
        .expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?} with a parked long poll",
        started.elapsed()
    );
}
