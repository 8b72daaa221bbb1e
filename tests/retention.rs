//! Segment roll and retention seen from outside: Kafka's file layout on disk, whole segments
//! deleted by size and by time, and the log start offset that clients see moving forward.

mod common;

use std::time::{Duration, Instant};

use common::{create_topic, producer, TestBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("partition dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

fn low_watermark(bootstrap: &str, topic: &str) -> (i64, i64) {
    let c: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    c.fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_and_retention_by_size_and_time() {
    let broker = TestBroker::start(&[("log.retention.check.interval.ms", "100")]).await;
    create_topic(
        &broker.bootstrap,
        "sized",
        1,
        &[("segment.bytes", "20000"), ("retention.bytes", "60000")],
    )
    .await;
    create_topic(
        &broker.bootstrap,
        "timed",
        1,
        &[("segment.bytes", "20000"), ("retention.ms", "1500")],
    )
    .await;
    let p = producer(&broker.bootstrap, &[("linger.ms", "0")]);
    let value = vec![b'x'; 1000];
    for topic in ["sized", "timed"] {
        for _ in 0..200 {
            p.send(
                FutureRecord::<(), [u8]>::to(topic).payload(&value[..]),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
        }
    }
    let sized_dir = broker.dir.path().join("sized-0");
    // Kafka's layout: 20-digit base offsets, one .index and .timeindex per .log.
    let first = segment_files(&sized_dir);
    assert!(first.iter().all(|n| n.len() == 24), "{first:?}");
    assert!(sized_dir.join(first[0].replace(".log", ".index")).exists());
    assert!(sized_dir
        .join(first[0].replace(".log", ".timeindex"))
        .exists());

    // Kafka flushes a segment when it rolls: the recovery point reaches the newest segment.
    let log = broker
        .broker()
        .replicas
        .leader_partition("timed", 0)
        .expect("partition")
        .log()
        .clone();
    let newest_base = *log.segment_base_offsets().last().expect("segments");
    assert!(newest_base > 0, "no roll happened");
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.recovery_point() < newest_base {
        assert!(
            Instant::now() < deadline,
            "roll did not flush: recovery point {}",
            log.recovery_point()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let bootstrap = broker.bootstrap.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (sized_low, sized_high) = low_watermark(&bootstrap, "sized");
        let (timed_low, timed_high) = low_watermark(&bootstrap, "timed");
        let sized_bytes: u64 = std::fs::read_dir(&sized_dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        let done = sized_low > 0 && sized_bytes <= 60_000 + 20_000 && timed_low > 0;
        if done {
            assert_eq!(sized_high, 200);
            assert_eq!(timed_high, 200);
            // Retention deletes whole segments: the new start is a segment's base offset.
            let files = segment_files(&sized_dir);
            assert_eq!(files[0], format!("{sized_low:020}.log"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not run: sized low {sized_low} ({sized_bytes} bytes), timed low {timed_low}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
