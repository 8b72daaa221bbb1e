//! The container image and the faults only containers can show (issue 13), against the local
//! image `gregor:dev` (`bash docker/build.sh`; tests/run_all.sh builds it and runs this file
//! with `--ignored`, as a suite of its own).
//!
//! - The image: small, non-root, healthy through its own `gregor health`, stops cleanly on
//!   SIGTERM, and `docker/compose.yaml` brings up a cluster a client can use.
//! - Faults, each under the shared workload of `common::faults` (an idempotent producer at
//!   acks=all and a consumer group committing) on three containers (`common::containers`):
//!   the partition leader killed (SIGKILL) and restarted; the active controller killed; a
//!   broker frozen longer than the session and replica lag timeouts; the leader cut from both
//!   peers but not from clients; one broker's disk full; the whole cluster killed and
//!   restarted; a rolling restart. Each asserts nothing acknowledged was lost, duplicated or
//!   reordered and no committed offset went backwards (the cut one cuts the group's
//!   coordinator), the rolling restart that producers never stalled as long as a session
//!   timeout, and each keeps its row of the fault table
//!   (`target/tmp/fault-table`, printed by the test command; docs/RELIABILITY.md keeps the
//!   latest).
//!
//! Two tests at a time at most (`--test-threads=2`): six brokers on two cores is what the
//! fault timeouts below are set for.

mod common;

use std::time::{Duration, Instant};

use common::containers::ClusterOptions;
use common::containers::{
    container_logs, docker, image, require_image, run_id, try_docker, DockerCluster,
};
use common::faults::{self, create_rf3_topic, wait_for, wait_full_isr, FaultRow, Workload};

const PARTITIONS: i32 = 3;

/// Starts a cluster, creates `topic` (RF=3, min.insync.replicas=2) and the workload, and
/// waits for the first acknowledgements.
async fn start(options: ClusterOptions, topic: &'static str) -> (DockerCluster, Workload) {
    let cluster = DockerCluster::start(options).await;
    let bootstrap = cluster.bootstrap();
    create_rf3_topic(&bootstrap, topic, PARTITIONS).await;
    wait_full_isr(
        &bootstrap,
        topic,
        PARTITIONS,
        3,
        "the topic's replicas in sync",
    );
    let workload = Workload::start(&bootstrap, topic, PARTITIONS, &format!("{topic}-group"));
    workload.wait_acked(300, "the first acknowledgements");
    (cluster, workload)
}

/// The leader of partition 0 of `topic`.
fn leader(cluster: &DockerCluster, topic: &str) -> i32 {
    wait_for("a leader of partition 0", Duration::from_secs(30), || {
        faults::partitions(&cluster.bootstrap(), topic)
            .get(&0)
            .map(|(leader, _)| *leader)
            .filter(|l| *l > 0)
    })
}

/// Waits until the brokers other than `victim` name another leader of `partition`.
fn wait_new_leader(
    cluster: &DockerCluster,
    topic: &str,
    partition: i32,
    victim: i32,
    timeout: Duration,
) {
    let others = cluster.bootstrap_without(victim);
    wait_for("a new leader of the partition", timeout, || {
        faults::partitions(&others, topic)
            .get(&partition)
            .filter(|(leader, _)| *leader > 0 && *leader != victim)
            .map(|_| ())
    });
}

/// After a fault: every replica back in sync and acks=all flowing, then the workload's check;
/// the row is kept for the table and asserted (nothing lost, duplicated or reordered, no
/// committed offset backwards), and no broker panicked.
async fn recover_and_check(
    cluster: &DockerCluster,
    workload: Workload,
    topic: &str,
    fault: &str,
    fault_at: Instant,
    file: &str,
) -> FaultRow {
    wait_full_isr(
        &cluster.bootstrap(),
        topic,
        PARTITIONS,
        3,
        &format!("{fault}: every replica back in sync"),
    );
    workload.wait_acked_within(
        300,
        &format!("{fault}: acks=all after recovery"),
        Duration::from_secs(180),
    );
    let row = workload.finish(fault, fault_at).await;
    assert_no_panics(cluster);
    row.record_and_check(file);
    row
}

fn assert_no_panics(cluster: &DockerCluster) {
    let panics = cluster.panics();
    assert!(panics.is_empty(), "brokers panicked: {panics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the gregor:dev image (bash docker/build.sh); tests/run_all.sh runs it"]
async fn the_image_is_small_non_root_healthy_and_stops_cleanly_on_sigterm() {
    require_image();
    let (name, tag) = image();
    let image = format!("{name}:{tag}");
    let size: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", &image])
        .parse()
        .expect("size");
    assert!(size < 20_000_000, "image is {size} bytes");
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Config.User}}", &image]),
        "65532:65532"
    );
    let run = run_id();
    let container = format!("gregor-{run}-single");
    common::containers::spawn_reaper(&run, &[], &[]);
    let port = common::free_port();
    docker(&[
        "run",
        "-d",
        "--name",
        &container,
        "--label",
        &format!("{}={run}", common::containers::RUN_LABEL),
        "-p",
        &format!("127.0.0.1:{port}:9092"),
        "-e",
        &format!("GREGOR_ADVERTISED=127.0.0.1:{port}"),
        &image,
    ]);
    let cleanup = Cleanup(container.clone());
    // The image's own health check turns healthy.
    wait_for("the health check to pass", Duration::from_secs(40), || {
        (docker(&["inspect", "-f", "{{.State.Health.Status}}", &container]) == "healthy")
            .then_some(())
    });
    // A client uses the advertised, mapped port.
    let bootstrap = format!("127.0.0.1:{port}");
    let sent = common::cluster::produce(&bootstrap, "image-check", 10).await;
    let got = common::cluster::consume_all(&bootstrap, "image-check", 1, sent.len());
    assert_eq!(common::cluster::sorted_values(&got).len(), sent.len());
    // SIGTERM: a clean stop, in well under Docker's 10 s grace period.
    let stopping = Instant::now();
    docker(&["stop", &container]);
    let took = stopping.elapsed();
    let exit = docker(&["inspect", "-f", "{{.State.ExitCode}}", &container]);
    let logs = container_logs(&container);
    assert_eq!(exit, "0", "exit code after SIGTERM; logs:\n{logs}");
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    assert!(
        logs.contains("signal received: shutting down"),
        "no clean shutdown in the log:\n{logs}"
    );
    // Started again on the same data: what was written is there.
    docker(&["start", &container]);
    let got = common::cluster::consume_all(&bootstrap, "image-check", 1, sent.len());
    assert_eq!(common::cluster::sorted_values(&got).len(), sent.len());
    drop(cleanup);
}

/// Removes a container on drop.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = try_docker(&["rm", "-f", "-v", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the gregor:dev image (bash docker/build.sh); tests/run_all.sh runs it"]
async fn the_partition_leader_killed_and_restarted() {
    let topic = "fault-leader-kill";
    let (cluster, workload) = start(Default::default(), topic).await;
    let victim = leader(&cluster, topic);
    let fault_at = Instant::now();
    cluster.kill(victim);
    workload.wait_acked(300, "acks=all to resume with the leader dead");
    cluster.restart(victim).await;
    recover_and_check(
        &cluster,
        workload,
        topic,
        "leader killed (SIGKILL) and restarted",
        fault_at,
        "1-leader-kill",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the gregor:dev image (bash docker/build.sh); tests/run_all.sh runs it"]
async fn the_active_controller_killed_and_restarted() {
    let topic = "fault-controller-kill";
    let (cluster, workload) = start(Default::default(), topic).await;
    let victim = wait_for("an active controller", Duration::from_secs(20), || {
        cluster.controller()
    });
    let fault_at = Instant::now();
    cluster.kill(victim);
    workload.wait_acked(300, "acks=all to resume with the controller dead");
    wait_for("a new active controller", Duration::from_secs(30), || {
        cluster.controller().filter(|c| *c != victim)
    });
    cluster.restart(victim).await;
    recover_and_check(
        &cluster,
        workload,
        topic,
        "active controller killed (SIGKILL) and restarted",
        fault_at,
        "2-controller-kill",
    )
    .await;
}

/// The value of the write only a cut-off leader takes.
const STALE_WRITE: &str = "stale-leader-write";

/// Longer than the broker session (2 s), the replica lag (2 s) and the consumer group
/// session (6 s) timeouts.
const PAUSE: Duration = Duration::from_secs(9);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the gregor:dev image (bash docker/build.sh); tests/run_all.sh runs it"]
async fn the_leader_frozen_longer_than_every_timeout_then_thawed() {
    let topic = "fault-pause";
    let (cluster, workload) = start(Default::default(), topic).await;
    let victim = leader(&cluster, topic);
    let fault_at = Instant::now();
    cluster.pause(victim).await;
    wait_new_leader(&cluster, topic, 0, victim, Duration::from_secs(20));
    workload.wait_acked(300, "acks=all to resume with the leader frozen");
    let frozen = fault_at.elapsed();
    if frozen < PAUSE {
        tokio::time::sleep(PAUSE - frozen).await;
    }
    cluster.unpause(victim).await;
    // Thawed, it learns it lost leadership, truncates to the new leader and rejoins.
    recover_and_check(
        &cluster,
        workload,
        topic,
        "leader frozen (docker pause) 9 s, then thawed",
        fault_at,
        "3-pause",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the gregor:dev image (bash docker/build.sh); tests/run_all.sh runs it"]
async fn the_leader_cut_from_its_peers_but_not_from_clients() {
    let topic = "fault-partition";
    let (cluster, workload) = start(Default::default(), topic).await;
    // The broker cut is the consumer group's coordinator, and the partition followed is one it
    // leads: the group has to move to a new coordinator and go on committing past the cut.
    let coordinator = coordinator_of(&cluster, &format!("{topic}-group"));
    let partition = wait_for(
        "the coordinator to lead a partition",
        Duration::from_secs(30),
        || {
            faults::partitions(&cluster.bootstrap(), topic)
                .into_iter()
                .find(|(_, (leader, _))| *leader == coordinator)
                .map(|(p, _)| p)
        },
    );
    let victim = coordinator;
    eprintln!("cutting broker {victim}: the group's coordinator, leader of partition {partition}");
    let fault_at = Instant::now();
    cluster.cut_from_peers(victim);
    // Before the cut leader can notice (its session has 2 s to run), it takes an acks=1
    // write the majority never sees: rejoining, it must cut it away.
    let port = cluster.ports[(victim - 1) as usize];
    let stale = common::record_batch(&[(None, STALE_WRITE.as_bytes())], false, false);
    let answer = tokio::task::spawn_blocking(move || {
        common::produce_raw(port, "fault-partition", vec![(partition, stale)], 1)
    })
    .await
    .expect("stale write");
    assert_eq!(
        answer.responses[0].partition_responses[0].error_code, 0,
        "the cut leader takes an acks=1 write before its session runs out"
    );
    // The majority elects a new leader; the old one cannot gather acks=all acknowledgements.
    wait_new_leader(&cluster, topic, partition, victim, Duration::from_secs(30));
    // The cut lasts as long as the pause does: past every timeout.
    let cut_for = fault_at.elapsed();
    if cut_for < PAUSE {
        tokio::time::sleep(PAUSE - cut_for).await;
    }
    cluster.heal(victim);
    // Sends in flight to the old leader when it was cut are answered only once it is back
    // or the producer gives them up (message.timeout.ms): see docs/RELIABILITY.md.
    recover_and_check(
        &cluster,
        workload,
        topic,
        "leader cut from both peers, clients still reach it; healed",
        fault_at,
        "4-partition",
    )
    .await;
    // The old leader truncated what only it had: the acks=1 write is nowhere.
    assert!(
        cluster.logs(victim).lines().any(|l| {
            l.contains("truncating a diverging follower log")
                && l.contains("fault-partition")
                && l.contains(&format!("partition={partition}"))
        }),
        "broker {victim} did not truncate partition {partition} on rejoining"
    );
    let ends = faults::high_watermarks(&cluster.bootstrap(), topic, PARTITIONS);
    let read = common::cluster::consume_all(
        &cluster.bootstrap(),
        topic,
        PARTITIONS,
        ends.values().sum::<i64>() as usize,
    );
    assert_eq!(
        read.get(&partition).map_or(0, Vec::len) as i64,
        ends[&partition]
    );
    assert!(
        !read.values().flatten().any(|v| v == STALE_WRITE),
        "the write only the cut leader had is still readable"
    );
}

/// The broker coordinating `group` (FindCoordinator), once there is one.
fn coordinator_of(cluster: &DockerCluster, group: &str) -> i32 {
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    use kafka_protocol::protocol::StrBytes;
    let port = cluster.ports[0];
    let group = group.to_string();
    wait_for("the group's coordinator", Duration::from_secs(30), || {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.clone()))
            .with_key_type(0);
        let response: FindCoordinatorResponse =
            common::raw_request(port, ApiKey::FindCoordinator, 3, &request);
        (response.error_code == 0 && response.node_id.0 > 0).then_some(response.node_id.0)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the gregor:dev image (bash docker/build.sh); tests/run_all.sh runs it"]
async fn one_brokers_disk_full_then_freed() {
    let topic = "fault-disk-full";
    // The metadata log shares the full disk (the default layout): if the broker writes to it
    // first, its quorum voter stops and the broker stops with it, as Kafka's does when its
    // metadata log directory fails; else its partition logs go offline first.
    let options = ClusterOptions {
        tmpfs_data: (1..=3).map(|n| (n, "96m".to_string())).collect(),
        ..Default::default()
    };
    let (cluster, workload) = start(options, topic).await;
    let partition = 0;
    let victim = leader(&cluster, topic);
    let filler = cluster.data[(victim - 1) as usize].join("filler");
    let fault_at = Instant::now();
    eprintln!("fill broker {victim}'s disk");
    fill(&filler);
    wait_new_leader(&cluster, topic, partition, victim, Duration::from_secs(60));
    workload.wait_acked(300, "acks=all to resume on the other brokers");
    let logs = cluster.logs(victim);
    let stopped = logs.contains("the metadata quorum stopped");
    assert!(
        logs.contains("log taken offline") || stopped,
        "broker {victim} neither took a log offline nor stopped"
    );
    eprintln!(
        "broker {victim}: {}",
        if stopped {
            "its metadata log failed: it stopped"
        } else {
            "its logs went offline"
        }
    );
    std::fs::remove_file(&filler).expect("free the disk");
    // As in Kafka, a log directory taken offline comes back with a restart.
    eprintln!("restart broker {victim} with its disk freed");
    cluster.stop(victim);
    cluster.restart(victim).await;
    recover_and_check(
        &cluster,
        workload,
        topic,
        "one broker's disk full (tmpfs), freed, restarted",
        fault_at,
        "5-disk-full",
    )
    .await;
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the gregor:dev image (bash docker/build.sh); tests/run_all.sh runs it"]
async fn the_whole_cluster_killed_at_once_and_restarted() {
    let topic = "fault-whole-cluster";
    let (cluster, workload) = start(Default::default(), topic).await;
    let fault_at = Instant::now();
    for n in 1..=3 {
        cluster.kill(n);
    }
    // Together: a broker serves clients once the quorum has formed again.
    cluster.restart_all().await;
    faults::wait_registered(&cluster.bootstrap(), 3);
    recover_and_check(
        &cluster,
        workload,
        topic,
        "whole cluster killed (SIGKILL) at once and restarted",
        fault_at,
        "6-whole-cluster",
    )
    .await;
}

/// The consumer group's session timeout: a rolling restart should not stall producers longer.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the gregor:dev image (bash docker/build.sh); tests/run_all.sh runs it"]
async fn a_rolling_restart() {
    let topic = "fault-rolling";
    let (cluster, workload) = start(Default::default(), topic).await;
    let fault_at = Instant::now();
    for n in 1..=3 {
        cluster.stop(n);
        cluster.restart(n).await;
        wait_full_isr(
            &cluster.bootstrap(),
            topic,
            PARTITIONS,
            3,
            &format!("broker {n} back in every ISR"),
        );
        workload.wait_acked(100, &format!("acks=all after broker {n}'s restart"));
    }
    let row = recover_and_check(
        &cluster,
        workload,
        topic,
        "rolling restart (SIGTERM, start; each broker in turn)",
        fault_at,
        "7-rolling-restart",
    )
    .await;
    // Each broker hands its leadership over before it stops (controlled shutdown), so
    // producers move on at once rather than after the broker session timeout.
    assert!(
        row.stall < SESSION_TIMEOUT,
        "producers stalled {:?} during the rolling restart: as long as a session timeout",
        row.stall
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the gregor:dev image (bash docker/build.sh); tests/run_all.sh runs it"]
async fn the_compose_file_brings_up_a_cluster_clients_can_use() {
    require_image();
    let compose = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/compose.yaml");
    let project = format!("gregor-{}", run_id());
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("docker-compose")
            .args(["-p", &project, "-f", compose])
            .args(args)
            .env("GREGOR_PORT_1", ports[0].to_string())
            .env("GREGOR_PORT_2", ports[1].to_string())
            .env("GREGOR_PORT_3", ports[2].to_string())
            .output()
            .expect("run docker-compose");
        assert!(
            out.status.success(),
            "docker-compose {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    common::containers::spawn_reaper_script(&format!(
        "docker-compose -p {project} -f {compose} down -v"
    ));
    /// `docker-compose down -v` on drop, whatever happened.
    struct Down(String, &'static str);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker-compose")
                .args(["-p", &self.0, "-f", self.1, "down", "-v"])
                .output();
        }
    }
    let _down = Down(project.clone(), compose);
    run(&["up", "-d"]);
    let bootstrap = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    faults::wait_registered(&bootstrap, 3);
    create_rf3_topic(&bootstrap, "compose-check", 3).await;
    let sent = common::cluster::produce(&bootstrap, "compose-check", 300).await;
    let got = common::cluster::consume_all(&bootstrap, "compose-check", 3, sent.len());
    assert_eq!(common::cluster::sorted_values(&got), {
        let mut sent = sent.clone();
        sent.sort();
        sent
    });
    // Every broker advertises the host port mapped to it.
    let (_, isr) = faults::partitions(&bootstrap, "compose-check")
        .remove(&0)
        .expect("partition 0");
    assert_eq!(isr.len(), 3);
}
