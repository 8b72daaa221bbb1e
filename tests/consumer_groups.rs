//! Consumer groups against a real broker with rdkafka (librdkafka 2.12): partitions shared and
//! handed over on leave, on a crash (session timeout) and to a restarted static member; the
//! cooperative-sticky protocol; committed offsets (with metadata) surviving a kill -9 of the
//! broker.
//!
//! Every consumer here is a `BaseConsumer` whose context records its rebalances; tests drive
//! all members from one thread, polling each in turn, and wait for conditions with deadlines.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{create_topic, free_port, producer, ProcessBroker, TestBroker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Settings that keep group tests fast: no initial rebalance delay (Kafka's default 3 s only
/// waits for more members).
const FAST_GROUPS: &[(&str, &str)] = &[("group.initial.rebalance.delay.ms", "0")];

/// Records every rebalance a member goes through.
#[derive(Default)]
struct Recorder {
    assigns: Mutex<Vec<BTreeSet<(String, i32)>>>,
    revokes: Mutex<Vec<BTreeSet<(String, i32)>>>,
}

fn partitions_of(list: &TopicPartitionList) -> BTreeSet<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for Recorder {}

impl ConsumerContext for Recorder {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => self.assigns.lock().expect("lock").push(partitions_of(list)),
            Rebalance::Revoke(list) => self.revokes.lock().expect("lock").push(partitions_of(list)),
            Rebalance::Error(e) => eprintln!("rebalance error: {e}"),
        }
    }
}

type Member = BaseConsumer<Recorder>;

fn member(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> Member {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
        .create_with_context(Recorder::default())
        .expect("consumer")
}

fn assignment(m: &Member) -> BTreeSet<i32> {
    m.assignment()
        .map(|l| l.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every member until `done` holds (checked between rounds), collecting the records each
/// receives as (partition, offset) -> key. Panics at the deadline.
fn poll_until(
    members: &[&Member],
    received: &mut [BTreeMap<(i32, i64), String>],
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&[&Member], &[BTreeMap<(i32, i64), String>]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, m) in members.iter().enumerate() {
            while let Some(result) = m.poll(Duration::from_millis(20)) {
                let msg = result.unwrap_or_else(|e| panic!("member {i}: {e}"));
                let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).to_string();
                received[i].insert((msg.partition(), msg.offset()), key);
            }
        }
        if done(members, received) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Whether the members' assignments are disjoint and cover `0..partitions`, each non-empty.
fn balanced(members: &[&Member], partitions: i32) -> bool {
    let mut all = BTreeSet::new();
    for m in members {
        let mine = assignment(m);
        if mine.is_empty() {
            return false;
        }
        for p in mine {
            if !all.insert(p) {
                return false;
            }
        }
    }
    all == (0..partitions).collect()
}

async fn produce_keys(bootstrap: &str, topic: &str, keys: std::ops::Range<u32>) {
    let producer = producer(bootstrap, &[("acks", "all")]);
    let sends: Vec<_> = keys
        .map(|i| {
            let key = format!("k{i:06}");
            let producer = producer.clone();
            let topic = topic.to_string();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload("v"),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivered");
            }
        })
        .collect();
    futures::future::join_all(sends).await;
}

fn keys_of(received: &[BTreeMap<(i32, i64), String>]) -> Vec<String> {
    let mut keys: Vec<String> = received.iter().flat_map(|r| r.values().cloned()).collect();
    keys.sort();
    keys
}

fn expected_keys(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("k{i:06}")).collect()
}

/// Three members share a 12-partition topic: a balanced, disjoint assignment, and every record
/// produced afterwards arrives exactly once across them. Then one leaves (LeaveGroup on close):
/// the other two take over all partitions and receive everything produced after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_partitions_and_a_leaver_hands_over() {
    let broker = TestBroker::start(FAST_GROUPS).await;
    let topic = "groups-three";
    create_topic(&broker.bootstrap, topic, 12, &[]).await;
    let bootstrap = broker.bootstrap.clone();
    let members: Vec<Member> = (0..3).map(|_| member(&bootstrap, "three", &[])).collect();
    for m in &members {
        m.subscribe(&[topic]).expect("subscribe");
    }
    let refs: Vec<&Member> = members.iter().collect();
    let mut received = vec![BTreeMap::new(); 3];
    poll_until(
        &refs,
        &mut received,
        Duration::from_secs(30),
        "a balanced group",
        |m, _| balanced(m, 12),
    );
    let shares: Vec<usize> = members.iter().map(|m| assignment(m).len()).collect();
    assert_eq!(shares, vec![4, 4, 4], "range assignor over 12 partitions");

    produce_keys(&bootstrap, topic, 0..3000).await;
    poll_until(
        &refs,
        &mut received,
        Duration::from_secs(30),
        "3000 records",
        |_, r| r.iter().map(BTreeMap::len).sum::<usize>() >= 3000,
    );
    assert_eq!(
        keys_of(&received),
        expected_keys(0..3000),
        "each record exactly once"
    );
    assert!(
        received.iter().all(|r| !r.is_empty()),
        "every member got a share"
    );

    // Member 2 leaves; the others take over its partitions.
    let mut members = members;
    let leaver = members.pop().expect("three members");
    let left_behind = assignment(&leaver);
    leaver.unsubscribe();
    drop(leaver);
    let refs: Vec<&Member> = members.iter().collect();
    let mut after = vec![BTreeMap::new(); 2];
    poll_until(
        &refs,
        &mut after,
        Duration::from_secs(30),
        "the handover",
        |m, _| balanced(m, 12),
    );
    let taken_over: BTreeSet<i32> = members.iter().flat_map(assignment).collect();
    assert!(left_behind.is_subset(&taken_over));
    produce_keys(&bootstrap, topic, 3000..3600).await;
    poll_until(
        &refs,
        &mut after,
        Duration::from_secs(30),
        "600 more records",
        |_, r| {
            keys_of(r)
                .iter()
                .filter(|k| k.as_str() >= "k003000")
                .count()
                >= 600
        },
    );
    let new_keys: Vec<String> = keys_of(&after)
        .into_iter()
        .filter(|k| k.as_str() >= "k003000")
        .collect();
    assert_eq!(new_keys, expected_keys(3000..3600));
}

/// Runs as a child process in `a_crashed_members_partitions_move_after_the_session_timeout`:
/// joins the group and polls until killed.
#[test]
#[ignore = "run by a_crashed_members_partitions_move_after_the_session_timeout"]
fn crash_victim() {
    let (Ok(bootstrap), Ok(group), Ok(topic)) = (
        std::env::var("VICTIM_BOOTSTRAP"),
        std::env::var("VICTIM_GROUP"),
        std::env::var("VICTIM_TOPIC"),
    ) else {
        return;
    };
    let m = member(&bootstrap, &group, &[]);
    m.subscribe(&[&topic]).expect("subscribe");
    loop {
        let _ = m.poll(Duration::from_millis(100));
        if !assignment(&m).is_empty() {
            println!("VICTIM_ASSIGNED");
        }
    }
}

fn spawn_victim(bootstrap: &str, group: &str, topic: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_victim", "--ignored", "--nocapture"])
        .env("VICTIM_BOOTSTRAP", bootstrap)
        .env("VICTIM_GROUP", group)
        .env("VICTIM_TOPIC", topic)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn victim")
}

/// A member in another process is killed with SIGKILL (no LeaveGroup): after its session
/// timeout (6 s) the coordinator removes it and the survivor owns every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_members_partitions_move_after_the_session_timeout() {
    let broker = TestBroker::start(FAST_GROUPS).await;
    let topic = "groups-crash";
    create_topic(&broker.bootstrap, topic, 6, &[]).await;
    let survivor = member(&broker.bootstrap, "crash", &[]);
    survivor.subscribe(&[topic]).expect("subscribe");
    let mut victim = spawn_victim(&broker.bootstrap, "crash", topic);
    let refs = [&survivor];
    let mut received = vec![BTreeMap::new()];
    poll_until(
        &refs,
        &mut received,
        Duration::from_secs(30),
        "a split with the victim",
        |m, _| {
            let mine = assignment(m[0]);
            !mine.is_empty() && mine.len() < 6
        },
    );
    let killed_at = Instant::now();
    victim.kill().expect("kill victim");
    let _ = victim.wait();
    poll_until(
        &refs,
        &mut received,
        Duration::from_secs(30),
        "the takeover",
        |m, _| assignment(m[0]).len() == 6,
    );
    let waited = killed_at.elapsed();
    // Not before the session timeout (the coordinator cannot know earlier), and not much after.
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(20),
        "takeover after {waited:?}"
    );
}

/// Offsets committed with metadata survive a kill -9 of the broker; the group resumes exactly
/// after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_kill_and_the_group_resumes_from_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut broker = ProcessBroker::start(
        dir.path(),
        port,
        &[("GREGOR_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")],
    );
    let bootstrap = broker.bootstrap();
    let topic = "groups-resume";
    create_topic(&bootstrap, topic, 2, &[]).await;
    produce_keys(&bootstrap, topic, 0..200).await;

    let manual = [("enable.auto.commit", "false")];
    let first = member(&bootstrap, "resume", &manual);
    first.subscribe(&[topic]).expect("subscribe");
    let refs = [&first];
    let mut received = vec![BTreeMap::new()];
    poll_until(
        &refs,
        &mut received,
        Duration::from_secs(30),
        "all 200 records",
        |_, r| r[0].len() >= 200,
    );
    // Commit a point in the middle of each partition, with metadata.
    let mut commit = TopicPartitionList::new();
    let mut resume_at = BTreeMap::new();
    for p in 0..2 {
        let last = received[0]
            .keys()
            .filter(|(partition, _)| *partition == p)
            .map(|(_, offset)| *offset)
            .max()
            .expect("records in every partition");
        let at = last / 2;
        resume_at.insert(p, at);
        commit
            .add_partition_offset(topic, p, Offset::Offset(at))
            .expect("tpl");
    }
    let with_metadata = {
        let mut list = TopicPartitionList::new();
        for e in commit.elements() {
            let mut tp = list.add_partition(e.topic(), e.partition());
            tp.set_offset(e.offset()).expect("offset");
            tp.set_metadata(format!("checkpoint-{}", e.partition()));
        }
        list
    };
    first
        .commit(&with_metadata, CommitMode::Sync)
        .expect("commit");
    drop(first);

    broker.kill9();
    broker.spawn();

    let second = member(&bootstrap, "resume", &manual);
    let committed = second
        .committed_offsets(
            {
                let mut list = TopicPartitionList::new();
                list.add_partition(topic, 0);
                list.add_partition(topic, 1);
                list
            },
            Duration::from_secs(20),
        )
        .expect("committed offsets after the kill");
    for e in committed.elements() {
        assert_eq!(e.offset(), Offset::Offset(resume_at[&e.partition()]));
        assert_eq!(e.metadata(), format!("checkpoint-{}", e.partition()));
    }
    second.subscribe(&[topic]).expect("subscribe");
    let refs = [&second];
    let mut again = vec![BTreeMap::new()];
    let expected: usize = (0..2)
        .map(|p| {
            received[0]
                .keys()
                .filter(|(partition, offset)| *partition == p && *offset >= resume_at[&p])
                .count()
        })
        .sum();
    poll_until(
        &refs,
        &mut again,
        Duration::from_secs(30),
        "the rest",
        |_, r| r[0].len() >= expected,
    );
    // Exactly the records from the committed offsets on: none before, none missing.
    for p in 0..2 {
        let first_seen = again[0]
            .keys()
            .filter(|(partition, _)| *partition == p)
            .map(|(_, offset)| *offset)
            .min();
        assert_eq!(first_seen, Some(resume_at[&p]), "partition {p}");
    }
    assert_eq!(again[0].len(), expected);
}

/// A static member (group.instance.id) that restarts within its session timeout gets its
/// partitions back without a rebalance: the other member sees no new assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarts_without_a_rebalance() {
    let broker = TestBroker::start(FAST_GROUPS).await;
    let topic = "groups-static";
    create_topic(&broker.bootstrap, topic, 4, &[]).await;
    let bootstrap = broker.bootstrap.clone();
    let statics = |id: &str| {
        member(
            &bootstrap,
            "static",
            &[("group.instance.id", id), ("session.timeout.ms", "20000")],
        )
    };
    let a = statics("instance-a");
    let b = statics("instance-b");
    a.subscribe(&[topic]).expect("subscribe");
    b.subscribe(&[topic]).expect("subscribe");
    let mut received = vec![BTreeMap::new(); 2];
    poll_until(
        &[&a, &b],
        &mut received,
        Duration::from_secs(30),
        "a balanced static group",
        |m, _| balanced(m, 4),
    );
    let a_had = assignment(&a);
    let b_assigns = b.context().assigns.lock().expect("lock").len();
    // librdkafka does not send LeaveGroup when a static member closes.
    drop(a);
    let a = statics("instance-a");
    a.subscribe(&[topic]).expect("subscribe");
    poll_until(
        &[&a, &b],
        &mut received,
        Duration::from_secs(30),
        "the static rejoin",
        |m, _| !assignment(m[0]).is_empty(),
    );
    assert_eq!(assignment(&a), a_had, "the same partitions come back");
    // Give a rebalance, had there been one, time to reach b.
    poll_until(&[&a, &b], &mut received, Duration::from_secs(5), "quiet", {
        let start = Instant::now();
        move |_, _| start.elapsed() > Duration::from_secs(3)
    });
    assert_eq!(
        b.context().assigns.lock().expect("lock").len(),
        b_assigns,
        "the other member saw no rebalance"
    );
    assert!(balanced(&[&a, &b], 4));
}

/// cooperative-sticky: members join one by one and one leaves; each rebalance is incremental
/// (the first member only ever loses partitions, never all at once), and records produced
/// after each step arrive exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_rebalances_are_incremental() {
    let broker = TestBroker::start(FAST_GROUPS).await;
    let topic = "groups-coop";
    create_topic(&broker.bootstrap, topic, 6, &[]).await;
    let bootstrap = broker.bootstrap.clone();
    let coop = || {
        member(
            &bootstrap,
            "coop",
            &[("partition.assignment.strategy", "cooperative-sticky")],
        )
    };
    let first = coop();
    first.subscribe(&[topic]).expect("subscribe");
    let mut received = vec![BTreeMap::new(); 3];
    poll_until(
        &[&first],
        &mut received,
        Duration::from_secs(30),
        "the first member",
        |m, _| balanced(m, 6),
    );
    assert!(matches!(
        first.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    ));

    let second = coop();
    second.subscribe(&[topic]).expect("subscribe");
    poll_until(
        &[&first, &second],
        &mut received,
        Duration::from_secs(30),
        "two members",
        |m, _| balanced(m, 2 * 3),
    );
    let third = coop();
    third.subscribe(&[topic]).expect("subscribe");
    let all = [&first, &second, &third];
    poll_until(
        &all,
        &mut received,
        Duration::from_secs(30),
        "three members",
        |m, _| balanced(m, 6),
    );
    assert_eq!(all.map(|m| assignment(m).len()), [2, 2, 2]);
    // Incremental: the first member's revocations never took everything it had at once.
    let revokes = first.context().revokes.lock().expect("lock").clone();
    assert!(!revokes.is_empty(), "the first member gave partitions away");
    assert!(
        revokes.iter().all(|r| r.len() < 6),
        "revocations were partial: {revokes:?}"
    );

    produce_keys(&bootstrap, topic, 0..900).await;
    poll_until(
        &all,
        &mut received,
        Duration::from_secs(30),
        "900 records",
        |_, r| r.iter().map(BTreeMap::len).sum::<usize>() >= 900,
    );
    assert_eq!(keys_of(&received), expected_keys(0..900));

    // The third leaves; its partitions go to the others, who keep theirs.
    let kept: Vec<BTreeSet<i32>> = [&first, &second].map(assignment).to_vec();
    third.unsubscribe();
    drop(third);
    poll_until(
        &[&first, &second],
        &mut received,
        Duration::from_secs(30),
        "two again",
        |m, _| balanced(m, 6),
    );
    assert!(kept[0].is_subset(&assignment(&first)), "sticky");
    assert!(kept[1].is_subset(&assignment(&second)), "sticky");
}

/// `__consumer_offsets` is created on first use with the default 50 partitions and shows up in
/// Metadata as an internal topic; DescribeGroups (through the admin view of librdkafka's
/// group list) shows the members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsets_topic_is_internal_with_fifty_partitions() {
    let broker = TestBroker::start(FAST_GROUPS).await;
    let topic = "groups-internal";
    create_topic(&broker.bootstrap, topic, 1, &[]).await;
    let m = member(&broker.bootstrap, "internal", &[]);
    m.subscribe(&[topic]).expect("subscribe");
    let mut received = vec![BTreeMap::new()];
    poll_until(
        &[&m],
        &mut received,
        Duration::from_secs(30),
        "an assignment",
        |m, _| balanced(m, 1),
    );
    let metadata = m
        .fetch_metadata(Some("__consumer_offsets"), Duration::from_secs(10))
        .expect("metadata");
    let offsets = &metadata.topics()[0];
    assert_eq!(offsets.partitions().len(), 50);
    assert!(offsets.error().is_none());
    let groups = m
        .fetch_group_list(Some("internal"), Duration::from_secs(10))
        .expect("group list");
    let group = &groups.groups()[0];
    assert_eq!(group.state(), "Stable");
    assert_eq!(group.protocol_type(), "consumer");
    assert_eq!(group.members().len(), 1);
}
