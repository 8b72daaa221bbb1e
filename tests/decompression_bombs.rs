//! Decompression is bounded everywhere (issue 11, item 3): compressed batches whose records
//! expand far beyond `64 × max.message.bytes` (zstd: 96 KiB that expand to 2 GiB; gzip:
//! 512 KiB to 512 MiB; lz4: 420 KiB to 100 MiB; snappy: a block claiming 4 GiB) are refused on
//! produce with INVALID_RECORD, and the read paths that meet one already in a log (ListOffsets
//! by timestamp and max timestamp, the log cleaner, the group coordinator's replay) fail that
//! one operation while the broker answers on, its memory bounded.

mod common;

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{free_port, raw_request, ProcessBroker, TestBroker};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

const GZIP: i16 = 1;
const SNAPPY: i16 = 2;
const LZ4: i16 = 3;
const ZSTD: i16 = 4;

/// One v2 batch at `base_offset` whose record section is `payload` as compressed with `codec`,
/// claiming `count` records (a bomb's records never get decoded: its size gives it away).
fn batch(base_offset: i64, codec: i16, payload: &[u8], count: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i64(base_offset);
    b.put_i32(0); // length, below
    b.put_i32(0); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, below
    b.put_i16(codec);
    b.put_i32(count - 1); // last offset delta
    b.put_i64(1_000); // base timestamp
    b.put_i64(4_000_000_000_000); // max timestamp: every max-timestamp lookup meets it
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(count);
    b.put_slice(payload);
    let length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// Every bomb: (name, codec, compressed record section).
fn bombs() -> Vec<(&'static str, i16, Vec<u8>)> {
    let zeros = vec![0u8; 16 << 20];
    // zstd and gzip decoders read concatenated frames (members): one frame of 16 MiB of zeros,
    // repeated.
    let zstd_frame = zstd::bulk::compress(&zeros, 3).expect("zstd");
    let zstd = zstd_frame.repeat(128);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&zeros).expect("gzip");
    let gzip = gz.finish().expect("gzip").repeat(32);
    let mut lz4 = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
    for _ in 0..100 {
        lz4.write_all(&zeros[..1 << 20]).expect("lz4");
    }
    let (lz4, finished) = lz4.finish();
    finished.expect("lz4");
    // xerial framing, one block whose snappy header claims 4 GiB.
    let mut snappy = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    let block = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00, 0x00];
    snappy.extend_from_slice(&(block.len() as u32).to_be_bytes());
    snappy.extend_from_slice(&block);
    for (name, bomb) in [("zstd", &zstd), ("gzip", &gzip), ("lz4", &lz4)] {
        assert!(
            bomb.len() < 1_000_000,
            "the {name} bomb ({} bytes) must fit max.message.bytes",
            bomb.len()
        );
    }
    vec![
        ("gzip", GZIP, gzip),
        ("snappy", SNAPPY, snappy),
        ("lz4", LZ4, lz4),
        ("zstd", ZSTD, zstd),
    ]
}

fn produce(port: u16, topic: &str, records: Bytes) -> (i16, String) {
    let response = common::produce_raw(port, topic, vec![(0, records)], 1);
    let p = &response.responses[0].partition_responses[0];
    (
        p.error_code,
        p.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

/// The error code of a ListOffsets of `topic`-0 at `timestamp` (-3: MAX_TIMESTAMP).
fn list_offsets(port: u16, topic: &str, timestamp: i64) -> i16 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = raw_request(port, ApiKey::ListOffsets, 7, &request);
    response.topics[0].partitions[0].error_code
}

fn answers_metadata(port: u16) {
    let response: MetadataResponse =
        raw_request(port, ApiKey::Metadata, 9, &MetadataRequest::default());
    assert_eq!(response.brokers.len(), 1);
}

/// Peak resident memory of process `pid` (VmHWM), in MiB.
fn peak_rss_mib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_are_refused_and_read_paths_survive_them() {
    let bombs = bombs();

    // Produce: a broker process refuses every bomb, on an ordinary and a compacted topic.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let broker = ProcessBroker::start(dir.path(), port, &[]);
    common::create_topic(&broker.bootstrap(), "bombs", 1, &[]).await;
    common::create_topic(
        &broker.bootstrap(),
        "bombs-compact",
        1,
        &[("cleanup.policy", "compact")],
    )
    .await;
    tokio::task::block_in_place(|| {
        for topic in ["bombs", "bombs-compact"] {
            for (name, codec, payload) in &bombs {
                let (code, message) = produce(port, topic, batch(0, *codec, payload, 1));
                assert_eq!(
                    code,
                    ResponseError::InvalidRecord.code(),
                    "{name} bomb to {topic}: {message}"
                );
                answers_metadata(port);
            }
        }
    });
    let pid = broker.child.as_ref().expect("running").id().to_string();
    let peak = peak_rss_mib(&pid);
    eprintln!("broker process peak RSS after the bombs: {peak} MiB");
    assert!(peak < 256, "the broker's peak RSS reached {peak} MiB");
    drop(broker);

    // Read paths: bombs already in logs (stored before the bound existed, or by a follower,
    // which checks batches by CRC only) fail the operation that meets them, nothing else.
    let mut broker = TestBroker::start(&[
        ("offsets.topic.num.partitions", "1"),
        ("log.cleaner.backoff.ms", "3600000"),
    ])
    .await;
    common::create_topic(&broker.bootstrap, "stored", 1, &[]).await;
    common::create_topic(
        &broker.bootstrap,
        "stored-compact",
        1,
        &[("cleanup.policy", "compact")],
    )
    .await;
    let (_, _, zstd) = &bombs[3];
    let inject = |broker: &TestBroker, topic: &str| {
        let partition = broker
            .broker()
            .replicas
            .leader_partition(topic, 0)
            .expect("leader");
        let log = partition.log();
        log.append_replicated(batch(log.log_end_offset(), ZSTD, zstd, 1))
            .expect("a follower takes it by CRC");
        log.roll().expect("roll");
        // A keyed record after it, so the bomb's segment is below the high watermark.
        let keyed = common::record_batch(&[(Some(b"k".as_slice()), b"v".as_slice())], false, false);
        partition.append_as_leader(keyed, 1_000).expect("append");
    };
    inject(&broker, "stored");
    inject(&broker, "stored-compact");
    let port = broker.port();
    tokio::task::block_in_place(|| {
        for timestamp in [0, -3] {
            let code = list_offsets(port, "stored", timestamp);
            assert_ne!(code, 0, "ListOffsets at {timestamp} over a bomb");
            answers_metadata(port);
        }
    });
    let run = tokio::task::block_in_place(|| {
        broker
            .broker()
            .replicas
            .run_log_cleaner(gregor::replica::manager::now_ms() + 3_600_000)
    });
    assert_eq!(run.partitions_failed, 1, "{run:?}");

    // A bomb in __consumer_offsets: the replay skips it and the groups of that partition work.
    broker
        .broker()
        .ensure_offsets_topic()
        .await
        .expect("__consumer_offsets");
    let offsets_partition = broker
        .broker()
        .replicas
        .leader_partition("__consumer_offsets", 0)
        .expect("__consumer_offsets is led here");
    let log = offsets_partition.log();
    log.append_replicated(batch(log.log_end_offset(), ZSTD, zstd, 1))
        .expect("injected");
    broker.restart().await;
    let group: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "after-the-bomb")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("stored", 0, rdkafka::Offset::Offset(1))
        .expect("tpl");
    tokio::task::block_in_place(|| {
        use rdkafka::consumer::{CommitMode, Consumer};
        // The partition loads right after the restart (COORDINATOR_LOAD_IN_PROGRESS until it
        // has replayed); a replay stuck on the bomb would never finish.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match group.commit(&tpl, CommitMode::Sync) {
                Ok(()) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("commit not taken yet: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("a commit to the group coordinator after the bomb: {e}"),
            }
        }
        let committed = group
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .expect("committed");
        assert_eq!(
            committed.find_partition("stored", 0).map(|p| p.offset()),
            Some(rdkafka::Offset::Offset(1))
        );
    });
    let peak = peak_rss_mib("self");
    eprintln!("test process peak RSS: {peak} MiB");
    assert!(peak < 768, "the test process's peak RSS reached {peak} MiB");
}
