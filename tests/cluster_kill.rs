//! Three gregor broker processes (the built binary, `gregor broker --voters ...`) on
//! 127.0.0.1, killed with SIGKILL one after another under a continuous acks=all producer:
//! first the leader of a partition, then the active controller (the metadata quorum's
//! leader), then a follower, each restarted and back in the ISR before the next. A checker
//! then reads every partition and compares it with every acknowledged record: none may be
//! lost or changed, and each partition's order is kept. A second test kills the leader of a
//! partition twice under an idempotent producer: every record then appears exactly once, in
//! send order. The two run one after the other (six broker processes at once would measure
//! the machine, not gregor).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::faults::{self, create_rf3_topic, field, wait_acked, wait_for, wait_registered};
use common::{
    check_acknowledged, check_exactly_once, free_port, keep_producing, keep_producing_idempotent,
    Acked, ProcessBroker,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

const TOPIC: &str = "chaos";
const PARTITIONS: i32 = 3;

/// One test of this file at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct ProcessCluster {
    root: tempfile::TempDir,
    brokers: Vec<ProcessBroker>,
}

impl ProcessCluster {
    fn start() -> ProcessCluster {
        let root = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let voters = (1..=3)
            .map(|id| format!("{id}@127.0.0.1:{}", free_port()))
            .collect::<Vec<_>>()
            .join(",");
        let env = [
            ("RUST_LOG", "info,openraft=warn"),
            ("GREGOR_CONTROLLER_QUORUM_ELECTION_TIMEOUT_MS", "300"),
            ("GREGOR_BROKER_HEARTBEAT_INTERVAL_MS", "200"),
            ("GREGOR_BROKER_SESSION_TIMEOUT_MS", "1500"),
            ("GREGOR_REPLICA_LAG_TIME_MAX_MS", "1000"),
            ("GREGOR_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS", "1"),
            ("GREGOR_CLUSTER_SECRET", "cluster-kill-test-secret-0123"),
        ];
        let mut brokers: Vec<ProcessBroker> = (0..3)
            .map(|i| {
                ProcessBroker::new(
                    &root.path().join(format!("broker-{}", i + 1)),
                    ports[i],
                    i as i32 + 1,
                    &["--voters".to_string(), voters.clone()],
                    &env,
                    Some(root.path().join(format!("broker-{}.log", i + 1))),
                )
            })
            .collect();
        for b in &mut brokers {
            b.launch();
        }
        for b in &brokers {
            common::wait_for_port(b.port);
        }
        ProcessCluster { root, brokers }
    }

    fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn broker(&mut self, node: i32) -> &mut ProcessBroker {
        &mut self.brokers[usize::try_from(node - 1).expect("node id")]
    }

    fn log(&self, node: i32) -> PathBuf {
        self.root.path().join(format!("broker-{node}.log"))
    }

    /// The active controller: the broker whose log last announced leading the quorum, by term.
    fn controller(&self) -> Option<(i32, u64)> {
        (1..=3)
            .filter_map(|node| {
                let text = std::fs::read_to_string(self.log(node)).ok()?;
                text.lines()
                    .filter(|l| l.contains("now leads the metadata quorum"))
                    .filter_map(|l| field(l, "term=")?.parse::<u64>().ok())
                    .max()
                    .map(|term| (node, term))
            })
            .max_by_key(|(_, term)| *term)
    }

    fn panics(&self) -> Vec<String> {
        (1..=3)
            .flat_map(|node| {
                std::fs::read_to_string(self.log(node))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("panicked"))
                    .map(|l| format!("broker {node}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn partitions(bootstrap: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
    faults::partitions(bootstrap, TOPIC)
}

fn wait_full_isr(bootstrap: &str, what: &str) {
    faults::wait_full_isr(bootstrap, TOPIC, PARTITIONS, 3, what);
}

fn kill_and_restart(cluster: &mut ProcessCluster, node: i32, acked: &Acked, what: &str) {
    eprintln!("kill -9 broker {node} ({what})");
    cluster.broker(node).kill9();
    wait_acked(
        acked,
        50,
        &format!("acks=all to resume with {what} {node} dead"),
    );
    cluster.broker(node).spawn();
    wait_full_isr(
        &cluster.bootstrap(),
        &format!("broker {node} back in every ISR"),
    );
    wait_acked(acked, 50, &format!("acks=all with {what} {node} back"));
}

/// Three registered brokers and the test topic (RF=3) with every replica in sync.
async fn start_with_topic() -> (ProcessCluster, String) {
    let cluster = ProcessCluster::start();
    let bootstrap = cluster.bootstrap();
    wait_registered(&bootstrap, 3);
    create_rf3_topic(&bootstrap, TOPIC, PARTITIONS).await;
    wait_full_isr(&bootstrap, "the topic's replicas in sync");
    (cluster, bootstrap)
}

fn assert_dir(path: &Path) {
    assert!(path.is_dir(), "{} missing", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_leader_then_controller_then_follower_loses_no_acknowledged_record() {
    let _serial = SERIAL.lock().await;
    let (mut cluster, bootstrap) = start_with_topic().await;
    for node in 1..=3 {
        assert_dir(&cluster.root.path().join(format!("broker-{node}/{TOPIC}-0")));
    }

    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_producing(
        bootstrap.clone(),
        TOPIC,
        PARTITIONS,
        acked.clone(),
        stop.clone(),
    );
    wait_acked(&acked, 100, "the first acknowledgements");

    // 1. The leader of partition 0.
    let leader = partitions(&bootstrap)[&0].0;
    kill_and_restart(&mut cluster, leader, &acked, "partition leader");

    // 2. The active controller. A metadata change must go through while it is down.
    let (controller, term) = wait_for("an active controller", Duration::from_secs(10), || {
        cluster.controller()
    });
    eprintln!("kill -9 broker {controller} (active controller, term {term})");
    cluster.broker(controller).kill9();
    let (successor, new_term) =
        wait_for("a new active controller", Duration::from_secs(30), || {
            cluster.controller().filter(|(_, t)| *t > term)
        });
    assert_ne!(successor, controller);
    wait_acked(&acked, 50, "acks=all to resume without the controller");
    let survivor = cluster
        .brokers
        .iter()
        .find(|b| b.node_id != controller)
        .map(|b| b.bootstrap())
        .expect("a survivor");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &survivor)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new(
                "made-without-the-old-controller",
                1,
                TopicReplication::Fixed(2),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    eprintln!("broker {successor} took over the quorum in term {new_term}");
    cluster.broker(controller).spawn();
    wait_full_isr(&bootstrap, "the old controller back in every ISR");
    wait_acked(&acked, 50, "acks=all with the old controller back");

    // 3. A follower of partition 0.
    let (leader, isr) = partitions(&bootstrap)[&0].clone();
    let follower = *isr.iter().find(|n| **n != leader).expect("a follower");
    kill_and_restart(&mut cluster, follower, &acked, "follower");

    stop.store(true, Ordering::Relaxed);
    let failures = writer.await.expect("writer");
    let total = acked.lock().expect("lock").len();
    eprintln!("acknowledged {total} records; {failures} sends failed (not acknowledged)");
    check_acknowledged(&bootstrap, TOPIC, PARTITIONS, &acked);
    let panics = cluster.panics();
    assert!(panics.is_empty(), "{panics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leader_twice_under_an_idempotent_producer_leaves_each_record_exactly_once() {
    let _serial = SERIAL.lock().await;
    let (mut cluster, bootstrap) = start_with_topic().await;

    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_producing_idempotent(
        bootstrap.clone(),
        TOPIC,
        PARTITIONS,
        acked.clone(),
        stop.clone(),
    );
    wait_acked(&acked, 300, "the first acknowledgements");
    for round in 1..=2 {
        let leader = partitions(&bootstrap)[&0].0;
        kill_and_restart(
            &mut cluster,
            leader,
            &acked,
            &format!("partition leader (kill {round})"),
        );
    }
    wait_acked(&acked, 300, "acknowledgements after the kills");
    stop.store(true, Ordering::Relaxed);
    let failures = writer.await.expect("writer");
    let found = check_exactly_once(&bootstrap, TOPIC, PARTITIONS, &acked);
    eprintln!("{failures} sends failed (not acknowledged); {found:?}");
    let panics = cluster.panics();
    assert!(panics.is_empty(), "{panics:?}");
}
