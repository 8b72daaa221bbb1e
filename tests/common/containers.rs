//! Three gregor containers from the local image (`gregor:dev`, built by `docker/build.sh`)
//! started with testcontainers, for fault tests that a single process cannot show: a broker
//! frozen (`docker pause`), cut from its peers while clients still reach it, killed with
//! SIGKILL, or out of disk.
//!
//! Each [`DockerCluster`] has two networks of its own, named after a unique run id:
//! - `clients`: a bridge with inter-container traffic disabled. The containers start on it,
//!   so it carries their published ports; the test process reaches broker `n` at
//!   `127.0.0.1:<port n>`, which is what the broker advertises.
//! - `peers`: an internal bridge that carries the brokers' internal listeners (the metadata
//!   quorum and replica fetches), where broker `n` is known as `peer-<n>`. Disconnecting a
//!   broker from it cuts it from its peers and from nothing else.
//!
//! Each broker's data directory is a host directory bind-mounted at `/data` (a size-limited
//! tmpfs for the full-disk test), so it survives kills and restarts.
//!
//! Teardown: containers carry the label `gregor.test.run=<run id>`; dropping the cluster
//! removes them and the networks, and a reaper process started with the cluster does the same
//! if the test process dies first (a failed assertion that aborts, Ctrl-C, SIGKILL).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testcontainers::core::{ContainerPort, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::faults::field;
use super::TmpfsMount;

/// The image the suite runs (`GREGOR_IMAGE` overrides, as for `docker/build.sh`).
pub fn image() -> (String, String) {
    let image = std::env::var("GREGOR_IMAGE").unwrap_or_else(|_| "gregor:dev".to_string());
    match image.split_once(':') {
        Some((name, tag)) => (name.to_string(), tag.to_string()),
        None => (image, "latest".to_string()),
    }
}

/// The broker's uid and gid in the image.
pub const BROKER_UID: u32 = 65532;
/// The client port inside every container.
pub const CLIENT_PORT: u16 = 9092;
/// The internal listener's port inside every container.
pub const INTERNAL_PORT: u16 = 19092;
/// Lines of each broker's log printed when a test fails.
const LOG_TAIL_ON_FAILURE: usize = 60;
/// The label every container of a run carries.
pub const RUN_LABEL: &str = "gregor.test.run";

/// Runs `docker args...`; its stdout, or panics with its stderr.
pub fn docker(args: &[&str]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")))
}

/// Runs `docker args...`: its stdout, or its stderr as the error.
pub fn try_docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A container's output so far, stdout and stderr (where gregor logs).
pub fn container_logs(name: &str) -> String {
    Command::new("docker")
        .args(["logs", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default()
}

/// Panics with how to build the image unless it exists.
pub fn require_image() {
    let (name, tag) = image();
    if try_docker(&["image", "inspect", &format!("{name}:{tag}")]).is_err() {
        panic!("image {name}:{tag} is missing: build it with `bash docker/build.sh` (tests/run_all.sh does)");
    }
}

/// A unique id for one cluster's names: pid, time and a counter.
pub fn run_id() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{n}-{:x}", std::process::id(), nanos & 0xffff)
}

/// Starts a process, outside this one's process group, that waits for this process to exit
/// and then removes everything labelled with `run` and the `networks` (nothing is left when
/// the cluster was dropped normally).
pub fn spawn_reaper(run: &str, networks: &[String], mounts: &[PathBuf]) {
    let mut script = format!(
        "ids=$(docker ps -aq --filter label={RUN_LABEL}={run}); \
         [ -n \"$ids\" ] && docker rm -f -v $ids; "
    );
    for network in networks {
        script.push_str(&format!("docker network rm {network}; "));
    }
    for mount in mounts {
        script.push_str(&format!("umount -l {}; ", mount.display()));
    }
    spawn_reaper_script(&script);
}

/// Starts a process, outside this one's process group, that runs the shell `script` once
/// this process has exited.
pub fn spawn_reaper_script(script: &str) {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {script}",
        pid = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

/// A free TCP port on the host (bound and released; docker publishes it next).
fn free_host_port() -> u16 {
    super::free_port()
}

/// Options of a [`DockerCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Brokers whose data directory is a size-limited tmpfs (node id, size such as "48m").
    pub tmpfs_data: Vec<(i32, String)>,
    /// Broker settings for every broker, as GREGOR_* variables.
    pub env: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        let env = [
            ("RUST_LOG", "info,openraft=warn"),
            ("GREGOR_CONTROLLER_QUORUM_ELECTION_TIMEOUT_MS", "500"),
            ("GREGOR_BROKER_HEARTBEAT_INTERVAL_MS", "250"),
            ("GREGOR_BROKER_SESSION_TIMEOUT_MS", "2000"),
            ("GREGOR_REPLICA_LAG_TIME_MAX_MS", "2000"),
            ("GREGOR_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS", "2"),
            ("GREGOR_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
            ("GREGOR_CLUSTER_SECRET", "container-fault-test-secret-0123"),
        ];
        ClusterOptions {
            tmpfs_data: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// Three gregor containers on networks of their own (see the module doc).
pub struct DockerCluster {
    pub run: String,
    pub clients_net: String,
    pub peers_net: String,
    /// Host port of broker n's client listener at index n - 1.
    pub ports: Vec<u16>,
    containers: Vec<Option<ContainerAsync<GenericImage>>>,
    /// Host directories mounted at /data, index n - 1.
    pub data: Vec<PathBuf>,
    tmpfs: Vec<TmpfsMount>,
    _root: tempfile::TempDir,
}

impl DockerCluster {
    /// Starts three brokers and waits until each serves and Metadata lists all three.
    pub async fn start(options: ClusterOptions) -> DockerCluster {
        require_image();
        let run = run_id();
        let clients_net = format!("gregor-{run}-clients");
        let peers_net = format!("gregor-{run}-peers");
        let root = tempfile::tempdir().expect("tempdir");
        let data: Vec<PathBuf> = (1..=3)
            .map(|n| root.path().join(format!("broker-{n}")))
            .collect();
        let mut tmpfs = Vec::new();
        for (n, dir) in (1..=3).zip(&data) {
            if let Some((_, size)) = options.tmpfs_data.iter().find(|(id, _)| *id == n) {
                tmpfs.push(TmpfsMount::new(dir, size));
            } else {
                std::fs::create_dir_all(dir).expect("data dir");
            }
            chown(dir, BROKER_UID);
        }
        spawn_reaper(
            &run,
            &[clients_net.clone(), peers_net.clone()],
            &tmpfs.iter().map(|t| t.path.clone()).collect::<Vec<_>>(),
        );
        docker(&[
            "network",
            "create",
            "--label",
            &format!("{RUN_LABEL}={run}"),
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            &clients_net,
        ]);
        docker(&[
            "network",
            "create",
            "--internal",
            "--label",
            &format!("{RUN_LABEL}={run}"),
            &peers_net,
        ]);
        let ports: Vec<u16> = (0..3).map(|_| free_host_port()).collect();
        let mut cluster = DockerCluster {
            run,
            clients_net,
            peers_net,
            ports,
            containers: Vec::new(),
            data,
            tmpfs,
            _root: root,
        };
        for n in 1..=3 {
            let container = cluster.create(n, &options).await;
            cluster.containers.push(Some(container));
            docker(&[
                "network",
                "connect",
                "--alias",
                &format!("peer-{n}"),
                &cluster.peers_net,
                &cluster.name(n),
            ]);
        }
        for n in 1..=3 {
            cluster.wait_serving(n, Duration::from_secs(60)).await;
        }
        super::faults::wait_registered(&cluster.bootstrap(), 3);
        cluster
    }

    async fn create(&self, n: i32, options: &ClusterOptions) -> ContainerAsync<GenericImage> {
        let (name, tag) = image();
        let voters = (1..=3)
            .map(|id| format!("{id}@peer-{id}:{INTERNAL_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        let port = self.ports[(n - 1) as usize];
        let mut request = GenericImage::new(name, tag)
            .with_network(self.clients_net.clone())
            .with_container_name(self.name(n))
            .with_label(RUN_LABEL, self.run.clone())
            .with_mapped_port(port, ContainerPort::Tcp(CLIENT_PORT))
            .with_mount(Mount::bind_mount(
                self.data[(n - 1) as usize].display().to_string(),
                "/data",
            ))
            .with_env_var("GREGOR_NODE_ID", n.to_string())
            .with_env_var("GREGOR_ADVERTISED", format!("127.0.0.1:{port}"))
            .with_env_var("GREGOR_CONTROLLER_QUORUM_VOTERS", voters)
            .with_env_var(
                "GREGOR_INTERNAL_LISTENER",
                format!("0.0.0.0:{INTERNAL_PORT}"),
            )
            .with_startup_timeout(Duration::from_secs(60));
        for (k, v) in &options.env {
            request = request.with_env_var(k.clone(), v.clone());
        }
        request.start().await.expect("start container")
    }

    /// Broker `n`'s container name.
    pub fn name(&self, n: i32) -> String {
        format!("gregor-{}-{n}", self.run)
    }

    /// Every broker's client address.
    pub fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until broker `n` answers ApiVersions on its published port.
    pub async fn wait_serving(&self, n: i32, timeout: Duration) {
        let addr = format!("127.0.0.1:{}", self.ports[(n - 1) as usize]);
        let deadline = Instant::now() + timeout;
        loop {
            match gregor::probe::probe(&addr, Duration::from_secs(2)).await {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("broker {n} not serving at {addr}: {e}\n{}", self.logs(n))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn container(&self, n: i32) -> &ContainerAsync<GenericImage> {
        self.containers[(n - 1) as usize]
            .as_ref()
            .expect("container")
    }

    /// SIGKILL to broker `n`'s process (the container stops; its data stays).
    pub fn kill(&self, n: i32) {
        eprintln!("docker kill broker {n}");
        docker(&["kill", "--signal", "KILL", &self.name(n)]);
    }

    /// Every broker's client address but broker `n`'s.
    pub fn bootstrap_without(&self, n: i32) -> String {
        (1..=3)
            .filter(|m| *m != n)
            .map(|m| format!("127.0.0.1:{}", self.ports[(m - 1) as usize]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGTERM to broker `n` (`docker stop`, 30 s grace): a clean stop.
    pub fn stop(&self, n: i32) {
        eprintln!("docker stop broker {n}");
        docker(&["stop", "--time", "30", &self.name(n)]);
    }

    /// Starts broker `n`'s stopped container again and waits until it serves.
    pub async fn restart(&self, n: i32) {
        eprintln!("docker start broker {n}");
        self.container(n).start().await.expect("start");
        self.wait_serving(n, Duration::from_secs(60)).await;
    }

    /// Starts every broker's stopped container, then waits until all serve.
    pub async fn restart_all(&self) {
        for n in 1..=3 {
            eprintln!("docker start broker {n}");
            self.container(n).start().await.expect("start");
        }
        for n in 1..=3 {
            self.wait_serving(n, Duration::from_secs(60)).await;
        }
    }

    /// Freezes every process of broker `n` (SIGSTOP through the cgroup freezer).
    pub async fn pause(&self, n: i32) {
        eprintln!("docker pause broker {n}");
        self.container(n).pause().await.expect("pause");
    }

    pub async fn unpause(&self, n: i32) {
        eprintln!("docker unpause broker {n}");
        self.container(n).unpause().await.expect("unpause");
    }

    /// Cuts broker `n` from both peers; clients still reach it.
    pub fn cut_from_peers(&self, n: i32) {
        eprintln!("cut broker {n} from its peers");
        docker(&["network", "disconnect", &self.peers_net, &self.name(n)]);
    }

    /// Joins broker `n` to its peers again.
    pub fn heal(&self, n: i32) {
        eprintln!("heal broker {n}");
        docker(&[
            "network",
            "connect",
            "--alias",
            &format!("peer-{n}"),
            &self.peers_net,
            &self.name(n),
        ]);
    }

    /// Broker `n`'s log so far.
    pub fn logs(&self, n: i32) -> String {
        container_logs(&self.name(n))
    }

    /// The active controller: the broker whose log last announced leading the metadata quorum,
    /// by term.
    pub fn controller(&self) -> Option<i32> {
        (1..=3)
            .filter_map(|n| {
                self.logs(n)
                    .lines()
                    .filter(|l| l.contains("now leads the metadata quorum"))
                    .filter_map(|l| field(l, "term=")?.parse::<u64>().ok())
                    .max()
                    .map(|term| (n, term))
            })
            .max_by_key(|(_, term)| *term)
            .map(|(n, _)| n)
    }

    /// Log lines of every broker that mention a panic.
    pub fn panics(&self) -> Vec<String> {
        (1..=3)
            .flat_map(|n| {
                self.logs(n)
                    .lines()
                    .filter(|l| l.contains("panicked"))
                    .map(|l| format!("broker {n}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The host directory of broker `n`'s tmpfs data (see [`ClusterOptions::tmpfs_data`]).
    pub fn tmpfs(&self, n: i32) -> &TmpfsMount {
        self.tmpfs
            .iter()
            .find(|t| t.path == self.data[(n - 1) as usize])
            .expect("broker has a tmpfs data dir")
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in 1..=3 {
                let logs = self.logs(n);
                // openraft's retry warnings drown everything else while a peer is away.
                let lines: Vec<&str> = logs.lines().filter(|l| !l.contains("openraft")).collect();
                eprintln!("--- broker {n}: warnings and errors ---");
                let mut shown = std::collections::BTreeSet::new();
                for line in &lines {
                    // Each kind of warning once (by its text after the level).
                    let kind = line.split(": ").nth(1).unwrap_or(line);
                    if (line.contains(" WARN ") || line.contains(" ERROR "))
                        && shown.insert(kind.chars().take(60).collect::<String>())
                    {
                        eprintln!("{line}");
                    }
                }
                eprintln!("--- broker {n}, last lines of its log (openraft's left out) ---");
                for line in &lines[lines.len().saturating_sub(LOG_TAIL_ON_FAILURE)..] {
                    eprintln!("{line}");
                }
            }
        }
        let ids = try_docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("{RUN_LABEL}={}", self.run),
        ])
        .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = try_docker(&args);
        }
        // testcontainers would remove them again on drop; they are gone already.
        self.containers.clear();
        let _ = try_docker(&["network", "rm", &self.clients_net, &self.peers_net]);
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown data dir");
}
