//! `node-agent`: parses the command line and assembles; behaviour lives in
//! the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use node_agent::agent::{Agent, AgentConfig, AgentError};
use node_agent::{cmdline, discover, inventory};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "node-agent", version, about = "Provisioning hub node agent")]
struct Cli {
    #[arg(long, global = true, default_value = "info", env = "NODE_AGENT_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print this machine's hardware inventory.
    Inventory {
        #[arg(long)]
        json: bool,
        /// Read sysfs/procfs under this root instead of "/".
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Enroll with the hub and report health until stopped.
    Run {
        /// Kernel command line to read the hub from.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
        /// Overrides provisioner.url.
        #[arg(long)]
        url: Option<String>,
        /// Overrides provisioner.grpc (ip:port).
        #[arg(long)]
        grpc: Option<std::net::SocketAddr>,
        /// Overrides provisioner.ca (sha256:<hex>).
        #[arg(long)]
        ca: Option<String>,
        /// Overrides provisioner.token.
        #[arg(long)]
        token: Option<String>,
        /// Health interval in seconds (default: what the hub asks for).
        #[arg(long)]
        interval: Option<u64>,
        /// Send this inventory (JSON, as `inventory --json` prints) instead of
        /// collecting one: for simulations and for machines whose firmware
        /// identifies nothing. Install disks are resolved from it too.
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Report install assignments but do not carry them out.
        #[arg(long)]
        no_install: bool,
        /// Stay up after installing instead of rebooting (the hub installing
        /// its own machine; tests).
        #[arg(long)]
        no_reboot: bool,
        /// Exit once the node is installed.
        #[arg(long)]
        exit_when_installed: bool,
        /// Where the STATE filesystem is built.
        #[arg(long, default_value = "/tmp")]
        work_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("--log")?)
        .with_writer(std::io::stderr)
        // Plain text: the agent's log usually lands on a serial console or in a file.
        .with_ansi(false)
        .init();
    match cli.command {
        Command::Inventory { json, root } => {
            let inv = inventory::collect(&inventory::RootSource::new(root));
            if json {
                println!("{}", inventory::to_json(&inv)?);
            } else {
                print!("{}", inventory::render_text(&inv));
            }
            Ok(())
        }
        Command::Run {
            cmdline: path,
            url,
            grpc,
            ca,
            token,
            interval,
            inventory: inventory_file,
            no_install,
            no_reboot,
            exit_when_installed,
            work_dir,
        } => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let args = cmdline::parse(&text);
            let mut ca_sha256 = match ca {
                Some(pin) => {
                    Some(cmdline::parse_pin(&pin).context("--ca must be sha256:<64 hex>")?)
                }
                None => args.ca_sha256,
            };
            let token = token.or(args.token).ok_or(AgentError::NoToken)?;
            let (url, grpc) = match (url.or(args.url), grpc.or(args.grpc)) {
                (Some(url), Some(grpc)) => (url, grpc),
                // Not on the command line: look for the hub by mDNS until it answers.
                _ => loop {
                    tracing::info!("no hub address on the command line; browsing mDNS");
                    let pin = ca_sha256.as_deref();
                    if let Some(found) = discover::browse(pin, Duration::from_secs(10)) {
                        ca_sha256 = Some(found.ca_sha256);
                        break (found.url, found.grpc);
                    }
                },
            };
            let inventory_json = match inventory_file {
                Some(path) => {
                    std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?
                }
                None => inventory::to_json(&inventory::collect(&inventory::RootSource::new("/")))?,
            };
            let config = AgentConfig {
                url,
                grpc,
                ca_sha256,
                token,
                interval: interval.map(Duration::from_secs),
                root: PathBuf::from("/"),
                inventory_json,
                buffer: node_agent::health::BUFFER_MAX,
                install: !no_install,
                reboot: !no_reboot,
                work_dir,
                dev_dir: PathBuf::from("/dev"),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let cancel = CancellationToken::new();
                let (agent, mut status) = Agent::new(config);
                let run = agent.run(cancel.clone());
                tokio::pin!(run);
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                let installed = async {
                    if !exit_when_installed {
                        return std::future::pending().await;
                    }
                    let _ = status.wait_for(|s| s.phase == "installed").await;
                };
                tokio::select! {
                    r = &mut run => return r.map_err(anyhow::Error::from),
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    () = installed => tracing::info!("installed: exiting"),
                }
                cancel.cancel();
                match run.await {
                    Ok(()) | Err(AgentError::Cancelled) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            })
        }
    }
}
