//! What an acknowledged write survives: a clean restart, and a kill -9 in the middle of a
//! produce stream (the process dies; the page cache, and so the kernel's copy of every write,
//! survives). Power loss is covered by `flush.messages=1`, whose acknowledgement waits for the
//! fsync; the kill test runs under both settings.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assigned_consumer, free_port, producer, ProcessBroker, TestBroker};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    at_least: usize,
) -> BTreeMap<(i32, i64), Vec<u8>> {
    let consumer = assigned_consumer(bootstrap, topic, partitions);
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut idle_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                got.insert(
                    (m.partition(), m.offset()),
                    m.payload().unwrap_or_default().to_vec(),
                );
                idle_since = Instant::now();
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None if got.len() >= at_least && idle_since.elapsed() > Duration::from_secs(2) => break,
            None => {}
        }
    }
    // Every partition's high watermark must have been reached.
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        let n = got.keys().filter(|(q, _)| *q == p).count() as i64;
        assert_eq!(
            n, high,
            "partition {p}: read {n} records, high watermark {high}"
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_keeps_topics_and_records() {
    let mut broker = TestBroker::start(&[("num.partitions", "3")]).await;
    let p = producer(&broker.bootstrap, &[]);
    let mut acked = BTreeMap::new();
    for i in 0..3000 {
        let v = format!("v{i}");
        let d = p
            .send(
                FutureRecord::<str, str>::to("restart")
                    .payload(&v)
                    .partition(i % 3),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
        acked.insert((d.partition, d.offset), v.into_bytes());
    }
    drop(p);
    let id_before = broker
        .broker()
        .controller
        .image()
        .topic("restart")
        .expect("topic")
        .id;
    broker.restart().await;
    let id_after = broker
        .broker()
        .controller
        .image()
        .topic("restart")
        .expect("topic")
        .id;
    assert_eq!(id_before, id_after);
    let bootstrap = broker.bootstrap.clone();
    let got = tokio::task::block_in_place(|| read_all(&bootstrap, "restart", 3, acked.len()));
    assert_eq!(got, acked);
    // And it keeps appending at the right offsets.
    let p = producer(&broker.bootstrap, &[]);
    let d = p
        .send(
            FutureRecord::<str, str>::to("restart")
                .payload("after")
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    assert_eq!(d.offset, 1000);
}

/// Produces continuously, kills the broker with SIGKILL mid-stream, restarts it, and checks
/// that every acknowledged record is there at its acknowledged offset.
fn kill9_during_produce(extra_env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut broker = ProcessBroker::start(dir.path(), port, extra_env);
    let bootstrap = broker.bootstrap();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let acked = runtime.block_on(async {
        let p = producer(
            &bootstrap,
            &[
                ("acks", "all"),
                ("message.timeout.ms", "5000"),
                ("linger.ms", "1"),
                ("retries", "0"),
            ],
        );
        let mut futures = Vec::new();
        let started = Instant::now();
        let mut killed = false;
        let mut i = 0u64;
        // Keep producing across the kill so it lands mid-stream.
        while started.elapsed() < Duration::from_secs(4) {
            let v = format!("record-{i}");
            let rec = FutureRecord::<str, str>::to("crash")
                .payload(&v)
                .partition((i % 4) as i32);
            if let Ok(f) = p.send_result(rec) {
                futures.push((v, f));
            }
            i += 1;
            if i % 200 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !killed && started.elapsed() > Duration::from_millis(2000) {
                broker.kill9();
                killed = true;
            }
        }
        assert!(killed);
        let mut acked = BTreeMap::new();
        let mut failed = 0;
        for (v, f) in futures {
            match f.await {
                Ok(Ok(d)) => {
                    acked.insert((d.partition, d.offset), v.into_bytes());
                }
                _ => failed += 1,
            }
        }
        eprintln!(
            "acknowledged {} records, {failed} not acknowledged",
            acked.len()
        );
        acked
    });
    assert!(
        acked.len() > 1000,
        "too few acknowledged records ({}) for a meaningful test",
        acked.len()
    );
    broker.spawn();
    let got = read_all(&bootstrap, "crash", 4, acked.len());
    for (k, v) in &acked {
        assert_eq!(
            got.get(k),
            Some(v),
            "acknowledged record at {k:?} lost or changed"
        );
    }
}

#[test]
fn kill9_during_produce_loses_no_acknowledged_record() {
    kill9_during_produce(&[("GREGOR_NUM_PARTITIONS", "4")]);
}

#[test]
fn kill9_during_produce_with_fsync_per_message() {
    kill9_during_produce(&[
        ("GREGOR_NUM_PARTITIONS", "4"),
        ("GREGOR_LOG_FLUSH_INTERVAL_MESSAGES", "1"),
    ]);
}
