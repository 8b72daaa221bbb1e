//! The `gregor` command: `gregor broker` runs one broker, `gregor dev` a local cluster,
//! `gregor health` asks a broker whether it serves (the container image's health check).
//!
//! Settings come from, in increasing precedence: defaults, `--config FILE` (TOML, Kafka key
//! names), `GREGOR_<KEY>` environment variables (`GREGOR_LOG_SEGMENT_BYTES`), then flags.
//! Logging goes through `tracing`; `RUST_LOG` (e.g. `RUST_LOG=gregor=debug`) sets the level,
//! `info` by default. SIGINT and SIGTERM stop the broker cleanly (flush, checkpoint, marker).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gregor::broker::{self, RunningBroker};
use gregor::config::BrokerConfig;

#[derive(Debug, Parser)]
#[command(
    name = "gregor",
    version,
    about = "A Kafka wire-protocol-compatible message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one broker.
    Broker(BrokerArgs),
    /// Run a local cluster on 127.0.0.1 for development (one process, one data dir).
    Dev(DevArgs),
    /// Print a fresh random cluster.secret (64 hex digits) for the brokers of a new cluster.
    Secret,
    /// Ask a broker for ApiVersions: exit 0 when it answers, 1 when not (a container health
    /// check: the image has no shell).
    Health(HealthArgs),
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// host:port to ask; default: the port of GREGOR_LISTEN (or 9092) on 127.0.0.1.
    address: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
struct BrokerArgs {
    /// This broker's node id (node.id).
    #[arg(long, env = "GREGOR_NODE_ID")]
    node_id: Option<i32>,
    /// Address to listen on for clients.
    #[arg(long, default_value = "0.0.0.0:9092", env = "GREGOR_LISTEN")]
    listen: SocketAddr,
    /// host:port given to clients in Metadata (default: the listen address).
    #[arg(long, env = "GREGOR_ADVERTISED")]
    advertised: Option<String>,
    /// Data directory.
    #[arg(long, default_value = "./gregor-data", env = "GREGOR_DATA_DIR")]
    data_dir: PathBuf,
    /// TOML config file with Kafka-named settings (e.g. `log.segment.bytes = 1048576`).
    #[arg(long, env = "GREGOR_CONFIG")]
    config: Option<PathBuf>,
    /// The controller quorum, `id@host:port,...` of every voter's internal listener
    /// (controller.quorum.voters); the same on every broker of the cluster.
    #[arg(long)]
    voters: Option<String>,
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Number of brokers (the first three are the controller quorum's voters).
    #[arg(long, default_value_t = 1)]
    brokers: u16,
    /// Internal (quorum) port of the first broker when there are several; default: the
    /// client port + 10000.
    #[arg(long)]
    internal_port: Option<u16>,
    /// Directory holding every broker's data (broker-<id>/ below it).
    #[arg(long, default_value = "./gregor-dev-data")]
    data_dir: PathBuf,
    /// Port of the first broker; the others follow.
    #[arg(long, default_value_t = 9092)]
    port: u16,
    /// TOML config file applied to every broker.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // openraft narrates every election and log load at info; keep it to warnings.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gregor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Broker(args) => run_broker(args).await,
            Command::Dev(args) => run_dev(args).await,
            Command::Secret => gregor::server::peer_auth::generate_secret()
                .map(|secret| println!("{secret}"))
                .map_err(|e| e.to_string()),
            Command::Health(args) => health(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gregor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(
    listen: SocketAddr,
    data_dir: PathBuf,
    file: Option<&PathBuf>,
) -> Result<BrokerConfig, String> {
    let mut config = BrokerConfig::new(listen, data_dir);
    if let Some(file) = file {
        config.apply_file(file).map_err(|e| e.to_string())?;
    }
    config.apply_env().map_err(|e| e.to_string())?;
    Ok(config)
}

async fn run_broker(args: BrokerArgs) -> Result<(), String> {
    let mut config = load_config(args.listen, args.data_dir, args.config.as_ref())?;
    if let Some(node_id) = args.node_id {
        config
            .set("node.id", &node_id.to_string())
            .map_err(|e| e.to_string())?;
    }
    if let Some(voters) = &args.voters {
        config
            .set("controller.quorum.voters", voters)
            .map_err(|e| e.to_string())?;
    }
    if let Some(advertised) = args.advertised {
        let (host, port) = advertised
            .rsplit_once(':')
            .ok_or_else(|| format!("--advertised '{advertised}' is not host:port"))?;
        config.advertised_host = host.to_string();
        config.advertised_port = port
            .parse()
            .map_err(|e| format!("--advertised port '{port}': {e}"))?;
    } else if config.listen.ip().is_unspecified() {
        config.advertised_host = "localhost".to_string();
        tracing::warn!(
            listen = %config.listen,
            "listening on every address but advertising localhost:{} to clients; set \
             --advertised or GREGOR_ADVERTISED to the host:port clients reach (a container's \
             mapped port, for instance)",
            config.advertised_port
        );
    }
    let running = broker::start(config).await.map_err(|e| e.to_string())?;
    let failed = tokio::select! {
        _ = wait_for_signal() => None,
        failure = running.failed() => Some(failure),
    };
    let stopped = running.shutdown().await.map_err(|e| e.to_string());
    match failed {
        Some(failure) => Err(format!("stopped: the metadata log failed: {failure}")),
        None => stopped,
    }
}

/// Voters of a dev cluster; brokers after them are observers of the metadata quorum.
const DEV_VOTERS: u16 = 3;

async fn run_dev(args: DevArgs) -> Result<(), String> {
    if args.brokers == 0 {
        return Err("--brokers must be at least 1".to_string());
    }
    let port_of = |base: u16, i: u16| {
        base.checked_add(i)
            .ok_or_else(|| format!("port {base} + {i} is out of range"))
    };
    // Several brokers form a controller quorum over internal listeners on 127.0.0.1: the
    // first three are its voters, any more are observers.
    let mut voters = String::new();
    let mut internal_base = 0;
    if args.brokers > 1 {
        internal_base = match args.internal_port {
            Some(p) => p,
            None => args
                .port
                .checked_add(10000)
                .ok_or("--port + 10000 is out of range: give --internal-port")?,
        };
        let entries: Result<Vec<String>, String> = (0..args.brokers.min(DEV_VOTERS))
            .map(|i| {
                Ok(format!(
                    "{}@127.0.0.1:{}",
                    i + 1,
                    port_of(internal_base, i)?
                ))
            })
            .collect();
        voters = entries?.join(",");
    }
    // The brokers of a dev cluster share a secret made for this run (unless the config file
    // or GREGOR_CLUSTER_SECRET gives one): their internal listeners accept only each other.
    let secret = gregor::server::peer_auth::generate_secret().map_err(|e| e.to_string())?;
    let mut starting = Vec::new();
    for i in 0..args.brokers {
        let node_id = i32::from(i) + 1;
        let listen = SocketAddr::from(([127, 0, 0, 1], port_of(args.port, i)?));
        let dir = args.data_dir.join(format!("broker-{node_id}"));
        let mut config = load_config(listen, dir, args.config.as_ref())?;
        config.brokers_in_process = u32::from(args.brokers);
        config
            .set("node.id", &node_id.to_string())
            .map_err(|e| e.to_string())?;
        if !voters.is_empty() {
            config
                .set("controller.quorum.voters", &voters)
                .map_err(|e| e.to_string())?;
            if config.cluster_secret().is_none() {
                config
                    .set("cluster.secret", &secret)
                    .map_err(|e| e.to_string())?;
            }
            if i >= DEV_VOTERS {
                let internal = format!("127.0.0.1:{}", port_of(internal_base, i)?);
                config
                    .set("internal.listener", &internal)
                    .map_err(|e| e.to_string())?;
            }
        }
        starting.push(broker::start(config));
    }
    // Together: each waits for a quorum of the others to register. The first that fails to
    // start (a port taken) fails the whole command at once, instead of leaving the others
    // waiting for a quorum that cannot form.
    let running: Vec<RunningBroker> = futures::future::try_join_all(starting)
        .await
        .map_err(|e| e.to_string())?;
    let bootstrap: Vec<String> = running.iter().map(|b| b.bootstrap()).collect();
    println!(
        "gregor dev cluster is up: bootstrap.servers={}",
        bootstrap.join(",")
    );
    println!("try: kcat -b {} -L    (Ctrl-C stops it)", bootstrap[0]);
    wait_for_signal().await;
    for b in running {
        b.shutdown().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn health(args: HealthArgs) -> Result<(), String> {
    let address = args.address.unwrap_or_else(|| {
        gregor::probe::local_address(
            &std::env::var("GREGOR_LISTEN").unwrap_or_else(|_| "0.0.0.0:9092".to_string()),
        )
    });
    let healthy = gregor::probe::probe(&address, std::time::Duration::from_millis(args.timeout_ms))
        .await
        .map_err(|e| format!("unhealthy: {e}"))?;
    println!("{address}: serving ({} APIs)", healthy.apis);
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("signal received: shutting down");
}
