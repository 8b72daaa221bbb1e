//! A cluster of gregor brokers in the test process (ephemeral ports, temporary dirs, one
//! controller quorum), and the helpers the cluster tests share: create topics, produce and
//! consume with rdkafka, inspect the copies of a partition on every broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gregor::broker::{self, RunningBroker};
use gregor::config::BrokerConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

use super::{assigned_consumer, free_port, producer};

/// The `cluster.secret` of every test cluster.
pub const CLUSTER_SECRET: &str = "cluster-test-secret-0123456789";

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub ports: Vec<u16>,
    /// Every broker's internal listener; the first three are the quorum's voters, any more
    /// are observers.
    pub internal: Vec<String>,
    pub voters: String,
    pub brokers: Vec<Option<RunningBroker>>,
    /// More settings for every broker (Kafka names), applied after the defaults here.
    pub settings: Vec<(String, String)>,
}

impl Cluster {
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// Starts `n` brokers with `settings` on top of the test defaults.
    pub async fn start_with(n: usize, settings: &[(&str, &str)]) -> Cluster {
        // Ports are probed free and then bound; another test can take one in between, so a
        // start that loses that race is retried on new ports.
        for _attempt in 0..5 {
            let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
            let internal: Vec<String> = (0..n)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect();
            let voters = internal
                .iter()
                .take(3)
                .enumerate()
                .map(|(i, addr)| format!("{}@{addr}", i + 1))
                .collect::<Vec<_>>()
                .join(",");
            let mut cluster = Cluster {
                root: tempfile::tempdir().expect("tempdir"),
                ports,
                internal,
                voters,
                brokers: (0..n).map(|_| None).collect(),
                settings: settings
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            let all: Vec<usize> = (0..n).collect();
            match cluster.try_up(&all).await {
                Ok(()) => return cluster,
                Err(e) => {
                    eprintln!("cluster start failed ({e}); retrying on other ports");
                    cluster.shutdown().await;
                }
            }
        }
        panic!("could not start a cluster");
    }

    pub fn config(&self, i: usize) -> BrokerConfig {
        let listen = format!("127.0.0.1:{}", self.ports[i])
            .parse()
            .expect("addr");
        let mut config =
            BrokerConfig::new(listen, self.root.path().join(format!("broker-{}", i + 1)));
        for (k, v) in [
            ("node.id", (i + 1).to_string()),
            ("controller.quorum.voters", self.voters.clone()),
            ("cluster.secret", CLUSTER_SECRET.to_string()),
            ("controller.quorum.election.timeout.ms", "300".to_string()),
            ("group.initial.rebalance.delay.ms", "0".to_string()),
            ("offsets.topic.num.partitions", "6".to_string()),
            ("replica.lag.time.max.ms", "1000".to_string()),
            ("broker.heartbeat.interval.ms", "200".to_string()),
            ("broker.session.timeout.ms", "1500".to_string()),
            ("leader.imbalance.check.interval.seconds", "1".to_string()),
            ("internal.listener", self.internal[i].clone()),
        ] {
            config.set(k, &v).expect("setting");
        }
        for (k, v) in &self.settings {
            config.set(k, v).expect("setting");
        }
        config
    }

    /// Starts the given brokers together (each waits for a quorum to register).
    pub async fn try_up(&mut self, which: &[usize]) -> Result<(), String> {
        let starting: Vec<_> = which
            .iter()
            .map(|i| broker::start(self.config(*i)))
            .collect();
        let mut failure = None;
        for (i, result) in which.iter().zip(futures::future::join_all(starting).await) {
            match result {
                Ok(running) => self.brokers[*i] = Some(running),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    pub async fn up(&mut self, which: &[usize]) {
        self.try_up(which).await.expect("brokers start");
    }

    pub async fn down(&mut self, i: usize) {
        if let Some(b) = self.brokers[i].take() {
            b.shutdown().await.expect("clean shutdown");
        }
    }

    /// Stops broker `i`, which may not stop cleanly (a log went offline after a storage
    /// error, so the next start recovers it).
    pub async fn down_after_fault(&mut self, i: usize) {
        if let Some(b) = self.brokers[i].take() {
            if let Err(e) = b.shutdown().await {
                eprintln!(
                    "broker {} stopped uncleanly, as expected after a fault: {e}",
                    i + 1
                );
            }
        }
    }

    pub fn bootstrap(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    pub fn all_bootstrap(&self) -> String {
        (0..self.ports.len())
            .map(|i| self.bootstrap(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn running(&self, i: usize) -> &RunningBroker {
        self.brokers[i].as_ref().expect("running")
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.brokers.len() {
            self.down(i).await;
        }
    }
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin")
}

pub async fn create(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    rf: i32,
) -> Result<(), RDKafkaErrorCode> {
    create_with(bootstrap, topic, partitions, rf, &[]).await
}

pub async fn create_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    rf: i32,
    configs: &[(&str, &str)],
) -> Result<(), RDKafkaErrorCode> {
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
    for (k, v) in configs {
        new_topic = new_topic.set(k, v);
    }
    let results = admin(bootstrap)
        .create_topics(&[new_topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((_, code))) => Err(code),
        None => panic!("no result"),
    }
}

/// Leader of each partition of `topic`, and the broker ids, as one broker reports them.
pub fn metadata(bootstrap: &str, topic: &str) -> (BTreeMap<i32, i32>, BTreeSet<i32>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let brokers = md.brokers().iter().map(|b| b.id()).collect();
    let leaders = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
        .collect();
    (leaders, brokers)
}

pub async fn produce(bootstrap: &str, topic: &str, n: usize) -> Vec<String> {
    let p = producer(bootstrap, &[("acks", "all")]);
    let mut sent = Vec::new();
    for i in 0..n {
        let value = format!("v{i:05}");
        p.send(
            FutureRecord::to(topic).key(&value).payload(&value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
        sent.push(value);
    }
    sent
}

pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> BTreeMap<i32, Vec<String>> {
    let consumer = assigned_consumer(bootstrap, topic, partitions);
    let mut got: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.values().map(Vec::len).sum::<usize>() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).expect("utf8");
            got.entry(m.partition()).or_default().push(value);
        }
    }
    got
}

/// Every consumed value, sorted (to compare with what was sent, in any partition order).
pub fn sorted_values(got: &BTreeMap<i32, Vec<String>>) -> Vec<String> {
    let mut all: Vec<String> = got.values().flatten().cloned().collect();
    all.sort();
    all
}

/// Log end offset and high watermark of every hosted partition of `topic`, by broker (1-based).
pub fn copies(cluster: &Cluster, topic: &str) -> BTreeMap<(i32, i32), (i64, i64)> {
    let mut out = BTreeMap::new();
    for i in 0..cluster.brokers.len() {
        let Some(running) = cluster.brokers[i].as_ref() else {
            continue;
        };
        for p in running.broker.replicas.all_partitions() {
            if p.topic() == topic {
                out.insert(
                    (i as i32 + 1, p.index()),
                    (p.log().log_end_offset(), p.high_watermark()),
                );
            }
        }
    }
    out
}

/// Waits until every live copy of each partition has the same log end and high watermark.
pub async fn wait_in_sync(cluster: &Cluster, topic: &str, partitions: i32, copies_each: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = copies(cluster, topic);
        let synced = (0..partitions).all(|p| {
            let of_p: Vec<(i64, i64)> = all
                .iter()
                .filter(|((_, i), _)| *i == p)
                .map(|(_, v)| *v)
                .collect();
            of_p.len() == copies_each
                && of_p
                    .iter()
                    .all(|(leo, hw)| (leo, hw) == (&of_p[0].0, &of_p[0].0))
        });
        if synced {
            return;
        }
        assert!(Instant::now() < deadline, "copies never converged: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls broker `via`'s image until partition `p` of `topic` satisfies `ok`.
pub async fn wait_partition(
    cluster: &Cluster,
    via: usize,
    topic: &str,
    p: i32,
    what: &str,
    ok: impl Fn(&gregor::cluster::PartitionInfo) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let image = cluster.running(via).broker.controller.image();
        let info = image.partition(topic, p).expect("partition").clone();
        if ok(&info) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {topic}-{p} is {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
