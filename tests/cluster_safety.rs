//! Cluster faults that used to lose acknowledged data or show consumers the wrong end
//! (issue 11), on three brokers in this process (`common::cluster`): the high watermark is
//! checkpointed, a follower that fell behind the leader's log start recovers, and a broker
//! that comes back with different data is fenced before it leads again.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

/// Index in `cluster.brokers` of node `id`.
fn index_of(id: i32) -> usize {
    usize::try_from(id - 1).expect("node id")
}

/// The high watermark is checkpointed (item 8): the three brokers stop cleanly, the partition
/// leader and one follower start again, and the committed end is visible at once (before, the
/// leader's high watermark read the log start until the ISR reported in and shrank).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_shows_the_committed_end_at_once() {
    let mut cluster = Cluster::start(3).await;
    create(&cluster.bootstrap(0), "hw", 1, 3)
        .await
        .expect("created");
    produce(&cluster.bootstrap(0), "hw", 1000).await;
    wait_in_sync(&cluster, "hw", 1, 3).await;
    let leader = metadata(&cluster.bootstrap(0), "hw").0[&0];
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let third = (1..=3)
        .find(|id| *id != leader && *id != follower)
        .expect("a third broker");
    // Each clean stop hands over and leaves the ISR (controlled shutdown), so the one that
    // stays down stops first and the leader last: the two restarted hold the ISR.
    for id in [third, follower, leader] {
        cluster.down(index_of(id)).await;
    }
    cluster.up(&[index_of(leader), index_of(follower)]).await;
    for id in [leader, follower] {
        let copies = copies(&cluster, "hw");
        assert_eq!(
            copies.get(&(id, 0)),
            Some(&(1000, 1000)),
            "broker {id} right after its restart: {copies:?}"
        );
    }
    // Clients see it: ListOffsets LATEST, and a consumer starting at the end gets only what is
    // produced after.
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap(index_of(leader)))
        .set("group.id", "unused-no-commits")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (low, high) = consumer
        .fetch_watermarks("hw", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((low, high), (0, 1000));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("hw", 0, Offset::End)
        .expect("assign");
    consumer.assign(&tpl).expect("assign");
    // Let the consumer resolve its position before the new record arrives.
    let _ = consumer.poll(Duration::from_millis(500));
    let producer = common::producer(&cluster.bootstrap(index_of(leader)), &[("acks", "all")]);
    producer
        .send(
            FutureRecord::<str, str>::to("hw").payload("after"),
            Duration::from_secs(30),
        )
        .await
        .expect("produced after the restart");
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        assert!(Instant::now() < deadline, "the consumer got nothing");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            break (m.offset(), m.payload().map(|p| p.to_vec()));
        }
    };
    assert_eq!(first, (1000, Some(b"after".to_vec())));
    cluster.shutdown().await;
}

/// A follower that fell behind the leader's log start recovers (item 7): stopped while the
/// leader rolls segments and retention deletes past its log end, it is told
/// OFFSET_OUT_OF_RANGE on its return, starts its log over at the leader's log start, catches
/// up and rejoins the ISR (before, it asked for the same offset forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_catches_up_and_rejoins() {
    let mut cluster = Cluster::start_with(3, &[("log.retention.check.interval.ms", "100")]).await;
    create_with(
        &cluster.bootstrap(0),
        "behind",
        1,
        3,
        &[("segment.bytes", "1024"), ("retention.bytes", "2048")],
    )
    .await
    .expect("created");
    produce(&cluster.bootstrap(0), "behind", 20).await;
    wait_in_sync(&cluster, "behind", 1, 3).await;
    let leader = metadata(&cluster.bootstrap(0), "behind").0[&0];
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let stopped_at = copies(&cluster, "behind")[&(follower, 0)].0;
    cluster.down(index_of(follower)).await;

    // Several rolls and deletions at the leader while the follower is away.
    produce(&cluster.bootstrap(index_of(leader)), "behind", 300).await;
    let leader_log = |cluster: &Cluster| {
        let running = cluster.running(index_of(leader));
        let p = running
            .broker
            .replicas
            .leader_partition("behind", 0)
            .expect("leader");
        (p.log().log_start_offset(), p.log().log_end_offset())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader_log(&cluster).0 <= stopped_at {
        assert!(
            Instant::now() < deadline,
            "retention never passed {stopped_at}: {:?}",
            leader_log(&cluster)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.up(&[index_of(follower)]).await;
    wait_partition(
        &cluster,
        index_of(leader),
        "behind",
        0,
        "the follower rejoins the ISR",
        |p| p.isr.contains(&follower),
    )
    .await;
    let (start, end) = leader_log(&cluster);
    let copy = copies(&cluster, "behind")[&(follower, 0)];
    assert_eq!(copy.0, end, "the follower's log end");
    let hosted = |id: i32| {
        cluster
            .running(index_of(id))
            .broker
            .replicas
            .all_partitions()
            .into_iter()
            .find(|p| p.topic() == "behind")
            .expect("hosted")
    };
    let follower_start = hosted(follower).log().log_start_offset();
    assert!(
        follower_start > stopped_at && follower_start <= end,
        "the follower restarted its log at the leader's start ({start}), not {follower_start}"
    );
    // What it holds is, byte for byte, what the leader holds.
    let from = follower_start.max(start);
    let read = |id: i32| {
        hosted(id)
            .log()
            .read(from, usize::MAX >> 1, i64::MAX, true)
            .expect("read")
    };
    assert_eq!(read(follower), read(leader));
    cluster.shutdown().await;
}

/// A broker that comes back different is fenced before it leads again (item 9): the leader of
/// a partition under an acks=all producer stops, its partition data is deleted (as a disk
/// replacement or an emptied data dir would), and it starts again well within the session
/// timeout. Before, it came back as the leader at the same leader epoch with an empty log, the
/// followers truncated their copies to match, and consumers read none of the acknowledged
/// records; now its registration fences its previous incarnation first, leadership moves to an
/// ISR member that has everything, and the wiped broker catches up as a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_back_with_an_empty_data_dir_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut cluster = Cluster::start_with(3, &[("broker.session.timeout.ms", "20000")]).await;
    create_with(
        &cluster.bootstrap(0),
        "wiped",
        1,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await
    .expect("created");
    let acked = common::Acked::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = common::keep_producing(
        cluster.all_bootstrap(),
        "wiped",
        1,
        acked.clone(),
        stop.clone(),
    );
    let acked_count = |acked: &common::Acked| acked.lock().expect("lock").len();
    let wait_acked = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked_count(&acked) < n {
                assert!(
                    Instant::now() < deadline,
                    "only {} acknowledged",
                    acked_count(&acked)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_acked(300).await;
    let leader = metadata(&cluster.bootstrap(0), "wiped").0[&0];
    let before = acked_count(&acked);
    cluster.down(index_of(leader)).await;
    // Everything but the metadata quorum's own files goes (a voter that forgot its Raft vote
    // is another matter: see the closing note of issue 11).
    let dir = cluster.root.path().join(format!("broker-{leader}"));
    for entry in std::fs::read_dir(&dir).expect("data dir") {
        let entry = entry.expect("entry");
        if entry.file_name() == "metadata-quorum" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    let restarted = Instant::now();
    cluster.up(&[index_of(leader)]).await;
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "the restart took longer than the session timeout allows for this test"
    );
    // The producer carries on, and the wiped broker catches up and rejoins the ISR.
    wait_acked(before + 300).await;
    let other = (1..=3).find(|id| *id != leader).expect("another broker");
    wait_partition(
        &cluster,
        index_of(other),
        "wiped",
        0,
        "the wiped broker rejoins the ISR",
        |p| p.isr.contains(&leader),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let failures = producing.await.expect("producer task");
    eprintln!(
        "{} acknowledged, {failures} sends failed (not acknowledged)",
        acked_count(&acked)
    );
    tokio::task::block_in_place(|| {
        common::check_acknowledged(&cluster.bootstrap(index_of(other)), "wiped", 1, &acked)
    });
    cluster.shutdown().await;
}
