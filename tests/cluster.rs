//! Three gregor brokers in this process on 127.0.0.1 (ephemeral ports, temporary dirs), one
//! controller quorum between them, driven with rdkafka: every broker serves the same metadata,
//! topics created through any broker are spread over all three, clients produce and consume
//! through whichever broker leads each partition, a consumer group spans the cluster, the
//! cluster restarts from its data, and metadata changes survive the loss of the controller.
//!
//! Replicated topics (RF=3, min.insync.replicas=2): acks=all waits for the ISR, a follower
//! that stops leaves the ISR and rejoins, a partition leader that stops hands over inside the
//! ISR and gets its partitions back, and acknowledged records survive all of it. These brokers
//! stop cleanly; `cluster_kill.rs` kills broker processes with SIGKILL.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::{check_acknowledged, keep_producing, producer, Acked};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_share_metadata_and_serve_the_partitions_they_lead() {
    let cluster = Cluster::start(3).await;
    // Every broker tells the same story: three brokers, one controller.
    let controllers: BTreeSet<i32> = (0..3)
        .map(|i| cluster.running(i).broker.controller.image().controller_id)
        .collect();
    assert_eq!(controllers.len(), 1, "brokers disagree on the controller");
    // Created through broker 2 (a follower or the controller: either works).
    create(&cluster.bootstrap(1), "spread", 6, 1)
        .await
        .expect("created");
    for i in 0..3 {
        let (leaders, brokers) = metadata(&cluster.bootstrap(i), "spread");
        assert_eq!(brokers, BTreeSet::from([1, 2, 3]));
        assert_eq!(leaders.len(), 6);
        assert_eq!(
            leaders.values().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([1, 2, 3]),
            "partitions are spread over every broker"
        );
    }
    assert_eq!(
        create(&cluster.bootstrap(2), "too-many", 1, 4).await,
        Err(RDKafkaErrorCode::InvalidReplicationFactor)
    );
    assert_eq!(
        create(&cluster.bootstrap(0), "spread", 1, 1).await,
        Err(RDKafkaErrorCode::TopicAlreadyExists)
    );

    // Clients bootstrapped from one broker find each partition's leader.
    let sent = produce(&cluster.bootstrap(0), "spread", 600).await;
    let got = consume_all(&cluster.bootstrap(2), "spread", 6, 600);
    let all = sorted_values(&got);
    assert_eq!(all, sent, "every record exactly once");
    for records in got.values() {
        let mut sorted = records.clone();
        sorted.sort();
        assert_eq!(&sorted, records, "order kept within each partition");
    }

    // A broker that does not lead a partition refuses to serve it as leader.
    let (leaders, _) = metadata(&cluster.bootstrap(0), "spread");
    for (partition, leader) in &leaders {
        for i in 0..3 {
            let result = cluster
                .running(i)
                .broker
                .replicas
                .leader_partition("spread", *partition);
            assert_eq!(
                result.is_ok(),
                *leader == i as i32 + 1,
                "partition {partition} on broker {}",
                i + 1
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_spans_the_cluster_and_its_offsets_come_back() {
    let cluster = Cluster::start(3).await;
    create(&cluster.bootstrap(0), "grouped", 6, 1)
        .await
        .expect("created");
    let sent = produce(&cluster.all_bootstrap(), "grouped", 300).await;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap(1))
        .set("group.id", "spanning")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    consumer.subscribe(&["grouped"]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while got.len() < sent.len() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            got.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).expect("utf8"));
        }
    }
    assert_eq!(got.len(), sent.len(), "the group member read everything");
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition("grouped", p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            other => panic!("partition {} has no commit: {other:?}", e.partition()),
        })
        .sum();
    assert_eq!(total, 300, "committed offsets cover every record");
    drop(consumer);
    // The coordinator is the leader of the group's __consumer_offsets partition: one broker.
    let coordinators: Vec<usize> = (0..3)
        .filter(|i| {
            let broker = &cluster.running(*i).broker;
            let partition = broker.groups.partition_for("spanning");
            broker.replicas.is_leader("__consumer_offsets", partition)
        })
        .collect();
    assert_eq!(
        coordinators.len(),
        1,
        "exactly one coordinator: {coordinators:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_restarts_from_its_data() {
    let mut cluster = Cluster::start(3).await;
    create(&cluster.bootstrap(0), "kept", 3, 1)
        .await
        .expect("created");
    let sent = produce(&cluster.bootstrap(0), "kept", 90).await;
    let (before, _) = metadata(&cluster.bootstrap(0), "kept");
    let id_before = cluster
        .running(0)
        .broker
        .controller
        .image()
        .topic("kept")
        .expect("topic")
        .id;
    for i in 0..3 {
        cluster.down(i).await;
    }
    cluster.up(&[0, 1, 2]).await;
    let (after, brokers) = metadata(&cluster.bootstrap(2), "kept");
    assert_eq!(brokers, BTreeSet::from([1, 2, 3]));
    assert_eq!(before, after, "same leaders after the restart");
    let id_after = cluster
        .running(2)
        .broker
        .controller
        .image()
        .topic("kept")
        .expect("topic")
        .id;
    assert_eq!(id_before, id_after);
    let got = consume_all(&cluster.bootstrap(1), "kept", 3, 90);
    let all = sorted_values(&got);
    assert_eq!(all, sent);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_changes_carry_on_when_the_controller_stops() {
    let mut cluster = Cluster::start(3).await;
    create(&cluster.bootstrap(0), "before", 1, 1)
        .await
        .expect("created");
    let old = cluster.running(0).broker.controller.image().controller_id;
    let old_index = usize::try_from(old - 1).expect("node id");
    cluster.down(old_index).await;
    let survivor = (0..3).find(|i| *i != old_index).expect("survivor");
    // The two left elect a new controller and take changes again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut created = Err(RDKafkaErrorCode::NotController);
    while Instant::now() < deadline {
        created = create(&cluster.bootstrap(survivor), "after", 1, 1).await;
        if created.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    created.expect("a topic created after the controller stopped");
    let image = cluster.running(survivor).broker.controller.image();
    assert_ne!(image.controller_id, old, "a new controller");
    assert!(image.topic("before").is_some() && image.topic("after").is_some());
    // The old controller comes back and catches up.
    cluster.up(&[old_index]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster
        .running(old_index)
        .broker
        .controller
        .image()
        .topic("after")
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the returning broker did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await;
}

/// A fourth broker, not a voter, observes the metadata quorum (a Raft learner): it registers,
/// creates topics (forwarded to the active controller), hosts and leads replicas of them, and
/// after a restart catches up and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_beyond_the_voters_observes_the_quorum_and_hosts_replicas() {
    let mut cluster = Cluster::start(4).await;
    create(&cluster.bootstrap(3), "wide", 8, 3)
        .await
        .expect("created through the observer");
    for i in 0..4 {
        let (leaders, brokers) = metadata(&cluster.bootstrap(i), "wide");
        assert_eq!(brokers, BTreeSet::from([1, 2, 3, 4]));
        assert_eq!(
            leaders.values().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([1, 2, 3, 4]),
            "partitions are led by every broker, the observer included"
        );
    }
    let sent = produce(&cluster.all_bootstrap(), "wide", 400).await;
    wait_in_sync(&cluster, "wide", 8, 3).await;
    cluster.down(3).await;
    cluster.up(&[3]).await;
    wait_in_sync(&cluster, "wide", 8, 3).await;
    let got = consume_all(&cluster.bootstrap(3), "wide", 8, 400);
    let all = sorted_values(&got);
    assert_eq!(all, sent, "every record exactly once");
    let leader = cluster.running(3).broker.controller.quorum().leader();
    assert!(
        matches!(leader, Some(1..=3)),
        "the quorum leader is a voter: {leader:?}"
    );
    cluster.shutdown().await;
}

/// CreateTopics with a manual replica assignment: each partition is placed exactly as asked,
/// its first replica leading; an assignment naming an unknown broker is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_replica_assignments_are_placed_as_asked() {
    let cluster = Cluster::start(3).await;
    let bootstrap = cluster.bootstrap(1);
    let create = |name: &'static str, wanted: &'static [&'static [i32]]| {
        let bootstrap = bootstrap.clone();
        async move {
            let topic = NewTopic::new(
                name,
                wanted.len() as i32,
                TopicReplication::Variable(wanted),
            );
            let results = admin(&bootstrap)
                .create_topics(&[topic], &AdminOptions::new())
                .await
                .expect("create_topics");
            results
                .into_iter()
                .next()
                .expect("a result")
                .map(|_| ())
                .map_err(|(_, code)| code)
        }
    };
    // Kafka requires one replica count per topic, and registered brokers.
    assert_eq!(
        create("placed", &[&[3, 1, 2], &[2, 3, 1], &[1, 2], &[3, 2]]).await,
        Err(RDKafkaErrorCode::InvalidReplicaAssignment)
    );
    assert_eq!(
        create("misplaced", &[&[1, 9]]).await,
        Err(RDKafkaErrorCode::InvalidReplicaAssignment)
    );
    let wanted: &[&[i32]] = &[&[3, 1, 2], &[2, 3, 1], &[1, 2, 3], &[3, 2, 1]];
    assert_eq!(create("placed", wanted).await, Ok(()));
    let image = cluster.running(0).broker.controller.image();
    let got: Vec<(Vec<i32>, i32)> = image.topics["placed"]
        .partitions
        .iter()
        .map(|p| (p.replicas.clone(), p.leader))
        .collect();
    let expected: Vec<(Vec<i32>, i32)> = wanted.iter().map(|r| (r.to_vec(), r[0])).collect();
    assert_eq!(got, expected);
    drop(image);
    let sent = produce(&cluster.bootstrap(0), "placed", 100).await;
    let got = consume_all(&cluster.bootstrap(2), "placed", 4, 100);
    assert_eq!(sorted_values(&got), sent);
    cluster.shutdown().await;
}

/// `unclean.leader.election.enable`: when every ISR member of a partition is down, a topic that
/// allows it gets a live replica from outside the ISR as leader; one that does not (the
/// default) waits for an ISR member. Four brokers, so two voters stay up throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_leader_election_only_where_the_topic_allows_it() {
    let mut cluster = Cluster::start(4).await;
    for (topic, unclean) in [("risky", "true"), ("safe", "false")] {
        create_with(
            &cluster.bootstrap(0),
            topic,
            4,
            2,
            &[("unclean.leader.election.enable", unclean)],
        )
        .await
        .expect("created");
    }
    // A partition of each topic whose two replicas are brokers 3 and 4 (not voters 1 and 2).
    let image = cluster.running(0).broker.controller.image();
    let on_3_and_4 = |topic: &str| -> i32 {
        image.topics[topic]
            .partitions
            .iter()
            .find(|p| {
                let mut r = p.replicas.clone();
                r.sort_unstable();
                r == [3, 4]
            })
            .map(|p| p.index)
            .expect("a partition on brokers 3 and 4")
    };
    let (risky, safe) = (on_3_and_4("risky"), on_3_and_4("safe"));
    let first_replica = image.topics["risky"].partitions[risky as usize].replicas[0];
    drop(image);
    // Lose the replica listed first, then the other: the ISR ends as the last one alone, then
    // nobody leads.
    let (first, second) = (first_replica, 7 - first_replica);
    cluster
        .down(usize::try_from(first - 1).expect("index"))
        .await;
    for (topic, p) in [("risky", risky), ("safe", safe)] {
        wait_partition(&cluster, 0, topic, p, "ISR without the first", |i| {
            i.isr == [second]
        })
        .await;
    }
    cluster
        .down(usize::try_from(second - 1).expect("index"))
        .await;
    for (topic, p) in [("risky", risky), ("safe", safe)] {
        wait_partition(&cluster, 0, topic, p, "leaderless", |i| i.leader == -1).await;
    }
    // The first comes back: outside the ISR, it may lead only where unclean election is on.
    cluster
        .up(&[usize::try_from(first - 1).expect("index")])
        .await;
    wait_partition(&cluster, 0, "risky", risky, "unclean election", |i| {
        i.leader == first && i.isr == [first]
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let image = cluster.running(0).broker.controller.image();
    let p = image.partition("safe", safe).expect("partition");
    assert_eq!(p.leader, -1, "no unclean election by default: {p:?}");
    drop(image);
    // The last ISR member returns: the safe topic's partition is led again.
    cluster
        .up(&[usize::try_from(second - 1).expect("index")])
        .await;
    wait_partition(&cluster, 0, "safe", safe, "clean election", |i| {
        i.leader == second
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_replicate_and_acks_all_waits_for_the_isr() {
    let mut cluster = Cluster::start(3).await;
    create_with(
        &cluster.bootstrap(0),
        "replicated",
        3,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await
    .expect("created");
    let sent = produce(&cluster.all_bootstrap(), "replicated", 300).await;
    // acks=all answered only once the ISR had each batch: every copy is complete already or
    // becomes so (a follower's high watermark trails the leader's by one fetch).
    wait_in_sync(&cluster, "replicated", 3, 3).await;
    let total: i64 = (0..3)
        .map(|p| copies(&cluster, "replicated")[&(1, p)].0)
        .sum();
    assert_eq!(total, 300);
    let got = consume_all(&cluster.bootstrap(1), "replicated", 3, 300);
    let all = sorted_values(&got);
    assert_eq!(all, sent);

    // A follower stops: it leaves the ISR of the partitions led elsewhere after
    // replica.lag.time.max.ms, and acks=all writes to them go on with the two left (>=
    // min.insync.replicas); back, it catches up and rejoins the ISR.
    let (leaders, _) = metadata(&cluster.bootstrap(0), "replicated");
    let stopped = 3;
    cluster
        .down(usize::try_from(stopped - 1).expect("index"))
        .await;
    let p = producer(&cluster.bootstrap(0), &[("acks", "all")]);
    let mut more = 0;
    for (partition, leader) in &leaders {
        if *leader == stopped {
            continue;
        }
        for i in 0..50 {
            let value = format!("late{i:03}");
            p.send(
                FutureRecord::to("replicated")
                    .partition(*partition)
                    .key(&value)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered while a follower is down");
            more += 1;
        }
    }
    assert_eq!(more, 100);
    let image = cluster.running(0).broker.controller.image();
    for (partition, leader) in &leaders {
        if *leader != stopped {
            let isr = &image
                .partition("replicated", *partition)
                .expect("partition")
                .isr;
            assert!(
                !isr.contains(&stopped),
                "partition {partition}: ISR {isr:?} kept the stopped broker"
            );
        }
    }
    cluster
        .up(&[usize::try_from(stopped - 1).expect("index")])
        .await;
    wait_in_sync(&cluster, "replicated", 3, 3).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let image = cluster.running(0).broker.controller.image();
        let topic = image.topic("replicated").expect("topic");
        if topic.partitions.iter().all(|p| p.isr.len() == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the returning follower did not rejoin the ISR: {:?}",
            topic.partitions
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total: i64 = (0..3)
        .map(|p| copies(&cluster, "replicated")[&(stopped, p)].0)
        .sum();
    assert_eq!(total, 400, "the returning follower caught up");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_is_refused_below_min_insync_replicas() {
    let cluster = Cluster::start(3).await;
    create_with(
        &cluster.bootstrap(0),
        "thin",
        1,
        1,
        &[("min.insync.replicas", "2")],
    )
    .await
    .expect("created");
    let strict = producer(
        &cluster.bootstrap(0),
        &[("acks", "all"), ("message.timeout.ms", "2000")],
    );
    let refused = strict
        .send(
            FutureRecord::to("thin").key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await;
    match refused {
        Err((rdkafka::error::KafkaError::MessageProduction(code), _)) => assert!(
            matches!(
                code,
                RDKafkaErrorCode::NotEnoughReplicas | RDKafkaErrorCode::MessageTimedOut
            ),
            "{code:?}"
        ),
        other => {
            panic!("acks=all accepted with an ISR of 1 under min.insync.replicas=2: {other:?}")
        }
    }
    // acks=1 does not ask for the ISR.
    let relaxed = producer(&cluster.bootstrap(0), &[("acks", "1")]);
    relaxed
        .send(
            FutureRecord::to("thin").key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("acks=1 delivered");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_partition_leader_moves_leadership_and_back_and_loses_no_acknowledged_record() {
    let mut cluster = Cluster::start(3).await;
    create_with(
        &cluster.bootstrap(0),
        "durable",
        3,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await
    .expect("created");
    let acked: Acked = Default::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = keep_producing(
        cluster.all_bootstrap(),
        "durable",
        3,
        acked.clone(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The leader of partition 0 goes away (a clean stop: it hands partition 0 to another ISR
    // member first; `cluster_kill.rs` kills leaders instead); the producer carries on.
    let (leaders, _) = metadata(&cluster.bootstrap(0), "durable");
    let victim = leaders[&0];
    let victim_index = usize::try_from(victim - 1).expect("index");
    let before = acked.lock().expect("lock").len();
    cluster.down(victim_index).await;
    let survivor = (0..3).find(|i| *i != victim_index).expect("survivor");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let image = cluster.running(survivor).broker.controller.image();
        let p0 = image.partition("durable", 0).expect("partition").clone();
        if p0.leader != victim && p0.leader >= 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader for partition 0: {p0:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < before + 60 {
        assert!(
            Instant::now() < deadline,
            "producing did not resume after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // It comes back as a follower, cuts whatever it had that the new leader does not, catches
    // up, rejoins the ISR, and gets partition 0 back as its preferred leader; the producer
    // carries on through that move too.
    cluster.up(&[victim_index]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let image = cluster.running(survivor).broker.controller.image();
        let p0 = image.partition("durable", 0).expect("partition").clone();
        if p0.leader == victim {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partition 0 never went back to its preferred leader: {p0:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved_back = acked.lock().expect("lock").len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < moved_back + 60 {
        assert!(
            Instant::now() < deadline,
            "producing did not resume after the leader moved back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failures = writer.await.expect("writer");
    eprintln!(
        "acknowledged {} records, {failures} sends failed",
        acked.lock().expect("lock").len()
    );
    wait_in_sync(&cluster, "durable", 3, 3).await;
    check_acknowledged(&cluster.bootstrap(survivor), "durable", 3, &acked);
    cluster.shutdown().await;
}

/// Kafka's controlled shutdown (`controlled.shutdown.enable`, on by default): a broker stopped
/// cleanly hands its partitions' leadership to other ISR members and leaves their ISRs before
/// its listener closes. The others name new leaders the moment it is down (not a session
/// timeout later), acks=all producers barely pause, and on its restart it rejoins the ISRs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_hands_leadership_over_before_the_broker_goes() {
    let mut cluster = Cluster::start(3).await;
    let topic = "handover";
    create_with(
        &cluster.bootstrap(0),
        topic,
        3,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await
    .expect("created");
    wait_in_sync(&cluster, topic, 3, 3).await;
    let acked: Acked = Default::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = keep_producing(
        cluster.all_bootstrap(),
        topic,
        3,
        acked.clone(),
        stop.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 30 {
        assert!(Instant::now() < deadline, "nothing acknowledged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let image = cluster.running(1).broker.controller.image();
    let led: Vec<i32> = (0..3)
        .filter(|p| image.partition(topic, *p).is_some_and(|i| i.leader == 1))
        .collect();
    assert!(!led.is_empty(), "broker 1 leads none of {topic}: {image:?}");

    let stopped_at = Instant::now();
    cluster.down(0).await;
    let took = stopped_at.elapsed();
    // Already handed over when it is gone: the survivors' metadata shows it (give their copy
    // of the metadata log a moment to apply the commit, far less than the 1.5 s session).
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let image = cluster.running(1).broker.controller.image();
        let handed_over = (0..3).all(|p| {
            image
                .partition(topic, p)
                .is_some_and(|i| i.leader > 1 && !i.isr.contains(&1))
        });
        let registration = &image.registrations[&1];
        if handed_over && registration.shutting_down && registration.fenced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker 1 stopped in {took:?} without handing over: {:?} {:?}",
            registration,
            (0..3)
                .map(|p| image.partition(topic, p).cloned())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = acked.lock().expect("lock").len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < before + 60 {
        assert!(Instant::now() < deadline, "producing did not go on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stall = acked.lock().expect("lock").longest_stall_after(stopped_at);
    eprintln!("broker 1 stopped in {took:?}; producers paused at most {stall:?}");
    // Without the handover the producer would wait for the session timeout (1.5 s) and the
    // fencing after it.
    assert!(
        stall < Duration::from_millis(1500),
        "acks=all producers paused {stall:?} over a clean stop"
    );

    // Back: it registers again, catches up and rejoins every ISR.
    cluster.up(&[0]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let image = cluster.running(1).broker.controller.image();
        if (0..3).all(|p| {
            image
                .partition(topic, p)
                .is_some_and(|i| i.isr.contains(&1))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker 1 never rejoined the ISRs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failures = writer.await.expect("writer");
    assert_eq!(failures, 0, "sends failed over a clean stop");
    wait_in_sync(&cluster, topic, 3, 3).await;
    check_acknowledged(&cluster.bootstrap(1), topic, 3, &acked);
    cluster.shutdown().await;
}

fn group_member(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

fn poll_until(consumer: &BaseConsumer, got: &mut Vec<String>, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while got.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            got.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).expect("utf8"));
        }
    }
}

fn committed_total(consumer: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(15))
        .expect("committed")
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_keeps_its_offsets_across_a_coordinator_failover() {
    let mut cluster = Cluster::start(3).await;
    create_with(&cluster.bootstrap(0), "work", 3, 3, &[])
        .await
        .expect("created");
    produce(&cluster.all_bootstrap(), "work", 90).await;
    let member = group_member(&cluster.all_bootstrap(), "failover-group");
    member.subscribe(&["work"]).expect("subscribe");
    let mut got = Vec::new();
    poll_until(&member, &mut got, 90, Duration::from_secs(40));
    assert_eq!(got.len(), 90);
    member
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    assert_eq!(committed_total(&member, "work", 3), 90);

    // The coordinator (leader of the group's __consumer_offsets partition) stops.
    let partition = cluster
        .running(0)
        .broker
        .groups
        .partition_for("failover-group");
    let coordinator = (0..3)
        .find(|i| {
            cluster
                .running(*i)
                .broker
                .replicas
                .is_leader("__consumer_offsets", partition)
        })
        .expect("a coordinator");
    cluster.down(coordinator).await;
    let survivor = (0..3).find(|i| *i != coordinator).expect("survivor");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let image = cluster.running(survivor).broker.controller.image();
        let leader = image
            .partition("__consumer_offsets", partition)
            .expect("partition")
            .leader;
        if leader >= 0 && leader != coordinator as i32 + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the offsets partition found no new leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new coordinator rebuilt the group from its replica of __consumer_offsets.
    let bootstrap = cluster.bootstrap(survivor);
    let observer = group_member(&bootstrap, "failover-group");
    assert_eq!(
        committed_total(&observer, "work", 3),
        90,
        "the commit made before the failover"
    );
    drop(observer);
    // The member carries on with the new coordinator: more records, another commit.
    produce(&bootstrap, "work", 60).await;
    poll_until(&member, &mut got, 150, Duration::from_secs(60));
    assert_eq!(got.len(), 150, "the member kept consuming");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match member.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "commit never succeeded after the failover: {e}"
                );
                member.poll(Duration::from_millis(200));
            }
        }
    }
    drop(member);
    // A new member of the group starts from the offsets committed before and after.
    let next = group_member(&bootstrap, "failover-group");
    assert_eq!(
        committed_total(&next, "work", 3),
        150,
        "committed offsets survived the failover"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_answers_name_the_current_leader() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    let cluster = Cluster::start(3).await;
    create(&cluster.bootstrap(0), "hinted", 1, 3)
        .await
        .expect("created");
    let image = cluster.running(0).broker.controller.image();
    let topic = image.topic("hinted").expect("topic").clone();
    let placement = topic.partitions[0].clone();
    let other = (0..3)
        .find(|i| *i as i32 + 1 != placement.leader)
        .expect("a non-leader");
    let port = cluster.ports[other];
    let leader_port = cluster.ports[usize::try_from(placement.leader - 1).expect("index")];

    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("hinted")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from_static(
                    b"not even a batch",
                )))])]);
    let response: ProduceResponse = tokio::task::spawn_blocking(move || {
        common::raw_request(port, ApiKey::Produce, 12, &produce)
    })
    .await
    .expect("produce");
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(
        (p.current_leader.leader_id.0, p.current_leader.leader_epoch),
        (placement.leader, placement.leader_epoch)
    );
    assert_eq!(response.node_endpoints.len(), 1);
    assert_eq!(response.node_endpoints[0].node_id.0, placement.leader);
    assert_eq!(response.node_endpoints[0].port, i32::from(leader_port));

    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic.id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse =
        tokio::task::spawn_blocking(move || common::raw_request(port, ApiKey::Fetch, 16, &fetch))
            .await
            .expect("fetch");
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(p.current_leader.leader_id.0, placement.leader);
    assert_eq!(response.node_endpoints.len(), 1);
    assert_eq!(response.node_endpoints[0].port, i32::from(leader_port));
    cluster.shutdown().await;
}
