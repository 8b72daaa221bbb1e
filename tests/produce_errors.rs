//! Produce error paths over a real connection: a corrupt batch gets CORRUPT_MESSAGE for its
//! partition while the others in the same request succeed and nothing bad is stored; too
//! large a batch gets MESSAGE_TOO_LARGE; two batches in one partition get INVALID_RECORD;
//! unknown topics and bad acks get their codes; a compacted topic refuses records without a key
//! with INVALID_RECORD and `record_errors` naming them; control and transactional batches are
//! INVALID_RECORD (only the broker writes markers; there is no transaction coordinator yet).

mod common;

use bytes::Bytes;
use common::{create_topic, TestBroker};
use kafka_protocol::messages::ProduceResponse;

fn batch(values: &[&[u8]]) -> Bytes {
    batch_of(values, false, false)
}

/// A batch of `values` (no keys), marked as control records and/or transactional.
fn batch_of(values: &[&[u8]], control: bool, transactional: bool) -> Bytes {
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, *v)).collect();
    common::record_batch(&records, control, transactional)
}

fn produce(port: u16, topic: &str, partitions: Vec<(i32, Bytes)>, acks: i16) -> ProduceResponse {
    common::produce_raw(port, topic, partitions, acks)
}

fn codes(r: &ProduceResponse) -> Vec<(i32, i16, i64)> {
    r.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code, p.base_offset))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_partition_errors() {
    let broker = TestBroker::start(&[]).await;
    create_topic(
        &broker.bootstrap,
        "errs",
        4,
        &[("max.message.bytes", "2000")],
    )
    .await;
    let port = broker.port();
    tokio::task::block_in_place(|| {
        let good = batch(&[b"a", b"b", b"c"]);
        let mut corrupt = good.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff; // inside the CRC-covered records
        let big = batch(&[&[7u8; 3000]]);
        let mut two = good.to_vec();
        two.extend_from_slice(&good);
        let r = produce(
            port,
            "errs",
            vec![
                (0, good.clone()),
                (1, Bytes::from(corrupt)),
                (2, big),
                (3, Bytes::from(two)),
            ],
            1,
        );
        assert_eq!(
            codes(&r),
            vec![(0, 0, 0), (1, 2, -1), (2, 10, -1), (3, 87, -1)],
            "expected NONE, CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, INVALID_RECORD"
        );
        // Nothing was stored for the refused partitions: the next good batch gets offset 0.
        let r = produce(port, "errs", vec![(1, good.clone()), (0, good.clone())], -1);
        assert_eq!(codes(&r), vec![(1, 0, 0), (0, 0, 3)]);
        // Unknown topic and partition; bad acks.
        let r = produce(port, "no-such-topic", vec![(0, good.clone())], 1);
        assert_eq!(codes(&r), vec![(0, 3, -1)]);
        let r = produce(port, "errs", vec![(99, good.clone())], 1);
        assert_eq!(codes(&r), vec![(99, 3, -1)]);
        let r = produce(port, "errs", vec![(0, good.clone())], 2);
        assert_eq!(codes(&r), vec![(0, 21, -1)]);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_refuses_records_without_key_with_record_errors() {
    let broker = TestBroker::start(&[]).await;
    create_topic(
        &broker.bootstrap,
        "keys-only",
        1,
        &[("cleanup.policy", "compact")],
    )
    .await;
    let port = broker.port();
    tokio::task::block_in_place(|| {
        let r = produce(port, "keys-only", vec![(0, batch(&[b"a", b"b"]))], 1);
        assert_eq!(codes(&r), vec![(0, 87, -1)], "INVALID_RECORD");
        let partition = &r.responses[0].partition_responses[0];
        let message = partition.error_message.as_deref().unwrap_or_default();
        assert!(
            message.contains("Compacted topic cannot accept message without key"),
            "{message}"
        );
        let indexes: Vec<i32> = partition
            .record_errors
            .iter()
            .map(|e| e.batch_index)
            .collect();
        assert_eq!(indexes, vec![0, 1]);
    });
}

/// A client cannot write transaction markers (control batches), nor transactional batches
/// without a transactional id in the request: both are refused with INVALID_RECORD and nothing
/// is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_transactional_batches_are_refused() {
    let broker = TestBroker::start(&[]).await;
    create_topic(&broker.bootstrap, "markers", 2, &[]).await;
    let port = broker.port();
    tokio::task::block_in_place(|| {
        let control = batch_of(&[b"\x00\x00\x00\x00"], true, false);
        let transactional = batch_of(&[b"a", b"b"], false, true);
        let r = produce(port, "markers", vec![(0, control), (1, transactional)], 1);
        assert_eq!(codes(&r), vec![(0, 87, -1), (1, 87, -1)], "INVALID_RECORD");
        let message = r.responses[0].partition_responses[0]
            .error_message
            .as_deref()
            .unwrap_or_default();
        assert!(message.contains("control records"), "{message}");
        // Nothing was stored: the next ordinary batches start at offset 0.
        let good = batch(&[b"a"]);
        let r = produce(port, "markers", vec![(0, good.clone()), (1, good)], 1);
        assert_eq!(codes(&r), vec![(0, 0, 0), (1, 0, 0)]);
    });
}
