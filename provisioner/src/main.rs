//! `provisioner`: the hub binary. Parses the command line and assembles; all
//! behaviour lives in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use provisioner::app::App;
use provisioner::config::Config;
use provisioner::dhcp::leases::LeaseState;
use provisioner::store::{EmbeddedStore, Loaded, Store, StoreError, load_read_only};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "provisioner", version, about = "Bare-metal provisioning hub")]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `provisioner::dhcp=debug`.
    #[arg(long, global = true, default_value = "info", env = "PROVISIONER_LOG")]
    log: String,
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        #[arg(long, short, default_value = "/etc/provisioner/provisioner.toml")]
        config: PathBuf,
    },
    /// Validate a config file and print what it resolves to.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/provisioner/provisioner.toml")]
        config: PathBuf,
    },
    /// DHCP leases.
    Leases {
        #[command(subcommand)]
        command: LeasesCommand,
    },
}

#[derive(Subcommand)]
enum LeasesCommand {
    /// List leases (works while the hub runs).
    List {
        #[arg(long, short, default_value = "/etc/provisioner/provisioner.toml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context("parsing --log")?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format)?;
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => {
            let config = Config::load(&config)?;
            println!("{config:#?}");
            Ok(())
        }
        Command::Leases {
            command: LeasesCommand::List { config, json },
        } => list_leases(&config, json),
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = App::build(&config)?;
        let cancel = CancellationToken::new();
        let signals = cancel.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let run = app.run(cancel.clone());
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => return r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
            _ = term.recv() => tracing::info!("terminated; stopping"),
        }
        signals.cancel();
        run.await.map_err(anyhow::Error::from)
    })
}

/// Reads the store beside a running hub; with no hub running, a store left by a
/// crash needs recovery, which only a writer may do, so open it as one.
fn load_leases(state_dir: &std::path::Path) -> Result<Loaded, StoreError> {
    match load_read_only(state_dir) {
        Ok(loaded) => Ok(loaded),
        Err(read_only) => match EmbeddedStore::open(state_dir) {
            Ok(store) => store.load(),
            Err(StoreError::Locked { .. }) => Err(read_only),
            Err(e) => Err(e),
        },
    }
}

fn list_leases(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let mut leases = load_leases(&config.state_dir)
        .with_context(|| format!("reading leases in {:?}", config.state_dir))?
        .leases;
    leases.sort_by_key(|l| l.addr);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    if json {
        let rows: Vec<serde_json::Value> = leases
            .iter()
            .map(|l| {
                serde_json::json!({
                    "address": l.addr.to_string(),
                    "mac": l.mac().map(|m| m.to_string()),
                    "client": l.key.to_string(),
                    "hostname": l.hostname,
                    "state": l.state,
                    "starts": l.starts,
                    "expires": l.expires,
                    "expired": l.expires <= now,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<18} {:<10} {:>9}  {:<24} CLIENT",
        "ADDRESS", "MAC", "STATE", "EXPIRES", "HOSTNAME"
    );
    for l in &leases {
        let state = match l.state {
            LeaseState::Bound if l.expires <= now => "expired",
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
            LeaseState::Offered => "offered",
        };
        let left = l.expires.saturating_sub(now);
        println!(
            "{:<16} {:<18} {:<10} {:>8}s  {:<24} {}",
            l.addr.to_string(),
            l.mac().map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            state,
            left,
            l.hostname.as_deref().unwrap_or("-"),
            l.key
        );
    }
    Ok(())
}
