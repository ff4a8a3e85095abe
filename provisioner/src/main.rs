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
    /// See it work: boot a QEMU VM through a hub in an isolated network namespace,
    /// print its console markers and boot timeline, and clean up.
    Lab {
        /// Directory with the boot assets (boot-assets/fetch.sh and build-discovery.sh).
        #[arg(long, default_value = "/var/lib/provisioner/assets")]
        assets: PathBuf,
        #[arg(long, value_enum, default_value = "bios")]
        firmware: provisioner::lab::LabFirmware,
        /// Give up after this many seconds.
        #[arg(long, default_value = "240")]
        timeout: u64,
    },
    /// Machines seen booting, and their boot timelines (asks the running hub).
    Machines {
        #[command(subcommand)]
        command: MachinesCommand,
    },
}

#[derive(Subcommand)]
enum MachinesCommand {
    /// Every machine with a timeline, and its last event.
    List {
        #[arg(long, short, default_value = "/etc/provisioner/provisioner.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// One machine's boot timeline: DHCP, TFTP and HTTP events in order.
    Show {
        /// The machine's MAC address.
        mac: String,
        #[arg(long, short, default_value = "/etc/provisioner/provisioner.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
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
        Command::Machines { command } => machines(command),
        // Runs before any thread exists: it moves the process into a new network namespace.
        Command::Lab {
            assets,
            firmware,
            timeout,
        } => provisioner::lab::run(provisioner::lab::LabOptions {
            assets,
            firmware,
            timeout: std::time::Duration::from_secs(timeout),
        })
        .map_err(anyhow::Error::from),
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

/// GETs `path` from the running hub's API and returns the body.
fn api_get(config: &Config, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut addr = config.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(5);
    let mut conn = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the hub at {addr} (is it running?)"))?;
    conn.set_read_timeout(Some(timeout))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.take(64 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        anyhow::bail!("{path}: HTTP {status}: {}", body.trim());
    }
    Ok(body.to_string())
}

fn machines(command: MachinesCommand) -> anyhow::Result<()> {
    let ms = |v: &serde_json::Value| {
        let at = v["at_ms"].as_u64().unwrap_or(0);
        format!("{}.{:03}", at / 1000, at % 1000)
    };
    match command {
        MachinesCommand::List { config, json } => {
            let body = api_get(&Config::load(&config)?, "/api/v1/machines")?;
            if json {
                println!("{body}");
                return Ok(());
            }
            let rows: Vec<serde_json::Value> = serde_json::from_str(&body)?;
            println!(
                "{:<18} {:<16} {:>6}  LAST EVENT",
                "MAC", "ADDRESS", "EVENTS"
            );
            for r in rows {
                println!(
                    "{:<18} {:<16} {:>6}  {} {}",
                    r["mac"].as_str().unwrap_or("-"),
                    r["address"].as_str().unwrap_or("-"),
                    r["events"],
                    r["last"]["source"].as_str().unwrap_or(""),
                    r["last"]["what"].as_str().unwrap_or("")
                );
            }
        }
        MachinesCommand::Show { mac, config, json } => {
            let mac: provisioner::config::MacAddr = mac.parse().map_err(anyhow::Error::msg)?;
            let body = api_get(
                &Config::load(&config)?,
                &format!("/api/v1/machines/{mac}/timeline"),
            )?;
            if json {
                println!("{body}");
                return Ok(());
            }
            let v: serde_json::Value = serde_json::from_str(&body)?;
            println!("boot timeline of {mac}");
            for e in v["events"].as_array().into_iter().flatten() {
                println!(
                    "  {}  {:<4}  {}",
                    ms(e),
                    e["source"].as_str().unwrap_or(""),
                    e["what"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}
