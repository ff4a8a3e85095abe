//! `storm`: load and fault tools run against a live hub from a network
//! namespace (not part of the hub binary; used by tests/system and bench/).
//!
//!   storm dhcp-load    DHCP clients with fresh MACs; every ACK logged
//!   storm enroll-load  agents enrolling with an auto-approve token; every certificate logged
//!   storm verify-certs every logged certificate must still work (mTLS health report)
//!   storm boot         N machines network-boot at once: DHCP, TFTP, DHCP as iPXE, HTTP script, kernel

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod boot;
mod dhcp;
mod load;

#[derive(Debug, Parser)]
#[command(name = "storm", about = "Simulated machines against a running hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// DHCP clients (DISCOVER/REQUEST with fresh MACs, some INIT-REBOOTs), logging each answer.
    DhcpLoad {
        #[arg(long)]
        iface: String,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// New exchanges started per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Every Nth start is an INIT-REBOOT of an earlier client (0: never).
        #[arg(long, default_value_t = 4)]
        reboot_every: u64,
        /// Stop after starting this many exchanges (default: run for --seconds).
        #[arg(long)]
        count: Option<u64>,
        /// First two bytes of every MAC, e.g. 02:cc.
        #[arg(long, default_value = "02:cc")]
        mac_prefix: String,
        #[arg(long)]
        log: PathBuf,
    },
    /// Agents enrolling with an auto-approve join token, logging each certificate.
    EnrollLoad {
        /// The enrollment service, e.g. 10.77.0.1:9443.
        #[arg(long)]
        grpc: SocketAddr,
        /// The hub's HTTP port (for /ca.pem), e.g. 10.77.0.1:8080.
        #[arg(long)]
        http: SocketAddr,
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Pause of each worker after a certificate (milliseconds).
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
        /// Stop after this many agents have enrolled (default: run for --seconds).
        #[arg(long)]
        count: Option<u64>,
        /// A real agent's inventory JSON; each agent sends it with its own UUID,
        /// serial and MAC (default: a minimal inventory).
        #[arg(long)]
        inventory: Option<PathBuf>,
        #[arg(long)]
        log: PathBuf,
    },
    /// A boot storm: N simulated machines network-boot at once; prints a JSON summary.
    Boot {
        #[arg(long)]
        iface: String,
        #[arg(long, default_value_t = 100)]
        n: usize,
        #[arg(long, value_parser = ["bios", "uefi"], default_value = "bios")]
        firmware: String,
        /// Bind every machine's sockets to its leased address (the namespace must
        /// route the pool locally: ip route add local POOL dev lo).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        bind_leased: bool,
        /// A machine that has not its kernel after this long has failed.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Spread the power-on over this long (0: all at once).
        #[arg(long, default_value_t = 0)]
        spread_ms: u64,
        #[arg(long, default_value = "02:b0")]
        mac_prefix: String,
        /// A DHCP avalanche: each machine stops once bound (plain DHCP client).
        #[arg(long)]
        until_bound: bool,
    },
    /// Checks every certificate in an enroll-load log against the hub.
    VerifyCerts {
        #[arg(long)]
        grpc: SocketAddr,
        #[arg(long)]
        http: SocketAddr,
        #[arg(long)]
        log: PathBuf,
    },
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether SIGTERM or SIGINT asked the load to wind down: no new work starts,
/// what is in flight finishes, the summary is printed.
pub fn stopping() -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}

async fn watch_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Random bytes from the OS.
pub fn random<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    // The OS RNG does not fail on Linux once booted; zeros would only weaken uniqueness.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

fn parse_prefix(s: &str) -> anyhow::Result<[u8; 2]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()?;
    <[u8; 2]>::try_from(parts).map_err(|_| anyhow::anyhow!("a MAC prefix is two bytes, like 02:cc"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tokio::spawn(watch_signals());
    let summary = match Cli::parse().command {
        Command::DhcpLoad {
            iface,
            seconds,
            rate,
            concurrency,
            reboot_every,
            count,
            mac_prefix,
            log,
        } => {
            let log = load::EventLog::create(&log)?;
            let prefix = parse_prefix(&mac_prefix)?;
            load::dhcp_load(
                &iface,
                load::Until { seconds, count },
                rate,
                concurrency,
                reboot_every,
                prefix,
                log,
            )
            .await?
        }
        Command::EnrollLoad {
            grpc,
            http,
            token,
            seconds,
            concurrency,
            pause_ms,
            count,
            inventory,
            log,
        } => {
            let log = load::EventLog::create(&log)?;
            let pause = std::time::Duration::from_millis(pause_ms);
            let template = match inventory {
                Some(p) => Some(serde_json::from_str(&std::fs::read_to_string(&p)?)?),
                None => None,
            };
            let target = load::Target { grpc, http, token };
            let until = load::Until { seconds, count };
            load::enroll_load(target, until, concurrency, pause, template, log).await?
        }
        Command::Boot {
            iface,
            n,
            firmware,
            bind_leased,
            timeout_secs,
            spread_ms,
            mac_prefix,
            until_bound,
        } => {
            let opts = boot::Options {
                n,
                firmware: if firmware == "uefi" {
                    boot::Firmware::Uefi
                } else {
                    boot::Firmware::Bios
                },
                bind_leased,
                timeout: std::time::Duration::from_secs(timeout_secs),
                spread: std::time::Duration::from_millis(spread_ms),
                mac_prefix: parse_prefix(&mac_prefix)?,
                until_bound,
            };
            boot::storm(&iface, opts).await?
        }
        Command::VerifyCerts { grpc, http, log } => {
            let out = load::verify_certs(grpc, http, &log).await?;
            let failed = out["failed"].as_array().map_or(0, Vec::len);
            println!("{out}");
            if failed > 0 {
                anyhow::bail!("{failed} certificates were refused");
            }
            return Ok(());
        }
    };
    println!("{summary}");
    Ok(())
}
