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

const DEFAULT_CONFIG: &str = "/etc/provisioner/provisioner.toml";

/// `-c`: the hub's config, through which the CLI finds its state directory
/// and admin socket.
#[derive(clap::Args)]
struct HubConfig {
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file and print what it resolves to.
    CheckConfig {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
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
        /// The static node agent (scripts/build-agent.sh): the VM then enrolls,
        /// is approved and reports health.
        #[arg(long)]
        agent: Option<PathBuf>,
    },
    /// Machines seen booting, and their boot timelines (asks the running hub).
    Machines {
        #[command(subcommand)]
        command: MachinesCommand,
    },
    /// Enrolled nodes: list, inspect, approve, reject (asks the running hub
    /// over its admin socket).
    Nodes {
        #[command(flatten)]
        hub: HubConfig,
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// Join tokens for node agents (asks the running hub over its admin socket).
    Tokens {
        #[command(flatten)]
        hub: HubConfig,
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// The Talos cluster: export the secrets bundle, issue a talosconfig
    /// (asks the running hub over its admin socket).
    Cluster {
        #[command(flatten)]
        hub: HubConfig,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Install Talos on this machine (the hub's own, the first node) the way
    /// every node installs: the node agent enrolls with the running hub over
    /// loopback (a single-use auto-approve token), takes its install
    /// assignment and config over mTLS, and writes the disk its profile and
    /// inventory choose.
    InstallSelf {
        #[command(flatten)]
        hub: HubConfig,
        /// The node agent binary (default: `[boot] node_agent`, else beside this binary).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Use this inventory instead of collecting one (see node-agent run --inventory).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Reboot once installed.
        #[arg(long)]
        reboot: bool,
    },
    /// Hardware profiles: check them, list them, see which one a machine gets.
    Profiles {
        /// Local profiles beside the shipped ones.
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        command: ProfilesCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Print the secrets bundle (`talosctl gen secrets` format). Keep it safe:
    /// it holds every CA key of the cluster.
    ExportSecrets {
        /// Write it to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Issue an `os:admin` talosconfig for talosctl (one year).
    Talosconfig {
        /// Write it to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Talos API endpoints (default: the control-plane endpoint's host).
        #[arg(long = "endpoint")]
        endpoints: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ProfilesCommand {
    /// Validate every shipped and local profile: it parses, its patches apply
    /// to a rendered config that passes Talos's rules, no two tie.
    Check,
    /// Every profile and what it matches.
    List,
    /// Which profile and install disk a machine gets, from its inventory JSON
    /// (`node-agent inventory --json`).
    Match { inventory: PathBuf },
}

#[derive(Subcommand)]
enum NodesCommand {
    /// Every node: state, health, identity.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One node: inventory, certificates, last health, events.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        /// Also print the last N health reports.
        #[arg(long, default_value = "0")]
        health: usize,
    },
    /// Let a pending node have its certificate.
    Approve {
        id: String,
        /// controlplane or worker.
        #[arg(long)]
        role: Option<String>,
    },
    /// Refuse a node and revoke its certificates.
    Reject { id: String },
    /// The node's Talos machine config as it would be delivered now (it
    /// holds the cluster CA keys: audited, written 0600).
    Config {
        id: String,
        /// Write it to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// A new token; its secret is printed once and never stored.
    Create {
        /// Lifetime: seconds, or with a unit (30m, 12h, 7d).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// How many machines may enroll with it (default: unlimited).
        #[arg(long)]
        uses: Option<u32>,
        /// Machines enrolling with it are approved without an operator.
        #[arg(long)]
        auto_approve: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum MachinesCommand {
    /// Every machine with a timeline, and its last event.
    List {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// One machine's boot timeline: DHCP, TFTP and HTTP events in order.
    Show {
        /// The machine's MAC address.
        mac: String,
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LeasesCommand {
    /// List leases (works while the hub runs).
    List {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
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
        Command::Nodes { hub, command } => nodes(&Config::load(&hub.config)?, command),
        Command::Tokens { hub, command } => tokens(&Config::load(&hub.config)?, command),
        Command::Cluster { hub, command } => cluster(&Config::load(&hub.config)?, command),
        Command::Profiles { dir, command } => profiles(dir.as_deref(), command),
        Command::InstallSelf {
            hub,
            agent,
            inventory,
            reboot,
        } => install_self(&Config::load(&hub.config)?, agent, inventory, reboot),
        // Runs before any thread exists: it moves the process into a new network namespace.
        Command::Lab {
            assets,
            firmware,
            timeout,
            agent,
        } => provisioner::lab::run(provisioner::lab::LabOptions {
            assets,
            firmware,
            timeout: std::time::Duration::from_secs(timeout),
            agent,
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

/// One HTTP/1.1 exchange (`Connection: close`) on `conn`; returns the status
/// and the body. The CLI's only client, for the TCP port and the admin socket.
fn http_exchange(
    mut conn: impl std::io::Read + std::io::Write,
    method: &str,
    host: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use std::io::Read;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    conn.take(64 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// GETs `path` from the running hub's API and returns the body.
fn api_get(config: &Config, path: &str) -> anyhow::Result<String> {
    let mut addr = config.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(5);
    let conn = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the hub at {addr} (is it running?)"))?;
    conn.set_read_timeout(Some(timeout))?;
    let (status, body) = http_exchange(conn, "GET", &addr.to_string(), path, "")?;
    if status != 200 {
        anyhow::bail!("{path}: HTTP {status}: {}", body.trim());
    }
    Ok(body)
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

/// One request to the hub's admin API over its Unix socket; returns the JSON
/// body of a 2xx answer, or the hub's error message.
fn admin(
    config: &Config,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, body) = admin_exchange(config, method, path, &body)?;
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    if !(200..300).contains(&status) {
        let msg = value["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.trim().to_owned());
        anyhow::bail!("{method} {path}: HTTP {status}: {msg}");
    }
    Ok(value)
}

/// `install-self`: the agent against the running hub, over loopback.
fn install_self(
    config: &Config,
    agent: Option<PathBuf>,
    inventory: Option<PathBuf>,
    reboot: bool,
) -> anyhow::Result<()> {
    use sha2::Digest;
    let agent = agent
        .or_else(|| config.node_agent.clone())
        .or_else(provisioner::agent_image::default_path)
        .context("no node agent: pass --agent")?;
    let token = admin(
        config,
        "POST",
        "/api/v1/tokens",
        Some(serde_json::json!({
            "description": "install-self (the hub's own machine)",
            "ttl_secs": 3600,
            "max_uses": 1,
            "auto_approve": true,
        })),
    )?;
    let token = str_or(&token["token"], "").to_owned();
    let pem = admin_text(config, "/ca.pem")?;
    let der = proto::pem::decode(&pem, "CERTIFICATE").context("the hub's CA certificate")?;
    let pin = format!("sha256:{}", proto::hex::encode(&sha2::Sha256::digest(&der)));
    let loopback = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = std::process::Command::new(&agent);
    cmd.args(["run", "--exit-when-installed", "--cmdline", "/dev/null"])
        .args([
            "--url",
            &format!("http://{}", loopback(config.http.listen.port())),
        ])
        .args(["--grpc", &loopback(config.enroll.listen.port()).to_string()])
        .args(["--ca", &pin, "--token", &token]);
    if !reboot {
        cmd.arg("--no-reboot");
    }
    if let Some(inv) = &inventory {
        cmd.arg("--inventory").arg(inv);
    }
    eprintln!(
        "install-self: running {} (enrolls as this machine, then installs)",
        agent.display()
    );
    let status = cmd
        .status()
        .with_context(|| format!("running {}", agent.display()))?;
    anyhow::ensure!(status.success(), "the node agent failed: {status}");
    Ok(())
}

/// A non-JSON GET on the admin socket.
fn admin_text(config: &Config, path: &str) -> anyhow::Result<String> {
    let (status, body) = admin_exchange(config, "GET", path, "")?;
    anyhow::ensure!((200..300).contains(&status), "GET {path}: HTTP {status}");
    Ok(body)
}

/// One request on the admin socket: status and body.
fn admin_exchange(
    config: &Config,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let socket = config.state_dir.join(provisioner::app::ADMIN_SOCKET);
    let conn = std::os::unix::net::UnixStream::connect(&socket)
        .with_context(|| format!("connecting to {socket:?} (is the hub running? are you root?)"))?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    http_exchange(conn, method, "hub", path, body)
}

fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(unix);
    match s {
        0..120 => format!("{s}s ago"),
        120..7200 => format!("{}m ago", s / 60),
        7200..172800 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn str_or<'a>(v: &'a serde_json::Value, dash: &'a str) -> &'a str {
    v.as_str().unwrap_or(dash)
}

fn nodes(config: &Config, command: NodesCommand) -> anyhow::Result<()> {
    match command {
        NodesCommand::List { json } => {
            let v = admin(config, "GET", "/api/v1/nodes", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<14} {:<10} {:<9} {:<12} {:<24} {:<16} {:<18} LAST SEEN",
                "ID", "STATE", "HEALTH", "ROLE", "VENDOR / PRODUCT", "SERIAL", "MAC"
            );
            for n in v.as_array().into_iter().flatten() {
                let model = format!(
                    "{} {}",
                    str_or(&n["vendor"], "?"),
                    str_or(&n["product"], "")
                );
                println!(
                    "{:<14} {:<10} {:<9} {:<12} {:<24} {:<16} {:<18} {}",
                    str_or(&n["id"], "-"),
                    str_or(&n["state"], "-"),
                    str_or(&n["health"], "-"),
                    str_or(&n["role"], "-"),
                    model.trim(),
                    str_or(&n["serial"], "-"),
                    str_or(&n["macs"][0], "-"),
                    ago(n["last_seen"].as_u64().unwrap_or(0)),
                );
            }
        }
        NodesCommand::Show { id, json, health } => {
            let v = admin(config, "GET", &format!("/api/v1/nodes/{id}"), None)?;
            let reports = if health > 0 {
                admin(
                    config,
                    "GET",
                    &format!("/api/v1/nodes/{id}/health?limit={health}"),
                    None,
                )?
            } else {
                serde_json::Value::Null
            };
            if json {
                let mut v = v;
                if health > 0 {
                    v["health_history"] = reports;
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            print_node(&v);
            for r in reports.as_array().into_iter().flatten() {
                let r = &r["report"];
                println!(
                    "  health #{:<5} uptime {:>8.0}s  load {:.2}  mem avail {} MiB",
                    r["seq"],
                    r["uptime_secs"].as_f64().unwrap_or(0.0),
                    r["load"][0].as_f64().unwrap_or(0.0),
                    r["mem_available_bytes"].as_u64().unwrap_or(0) >> 20
                );
            }
        }
        NodesCommand::Approve { id, role } => {
            let body = serde_json::json!({ "role": role });
            let v = admin(
                config,
                "POST",
                &format!("/api/v1/nodes/{id}/approve"),
                Some(body),
            )?;
            println!(
                "{} approved (role: {})",
                str_or(&v["id"], &id),
                str_or(&v["role"], "none")
            );
        }
        NodesCommand::Reject { id } => {
            let v = admin(config, "POST", &format!("/api/v1/nodes/{id}/reject"), None)?;
            println!(
                "{id} rejected; {} certificate(s) revoked",
                v["certificates_revoked"]
            );
        }
        NodesCommand::Config { id, out } => {
            let v = admin(config, "GET", &format!("/api/v1/nodes/{id}/config"), None)?;
            write_secret(out.as_deref(), str_or(&v["yaml"], ""))?;
            eprintln!(
                "{id}: {} config, sha256 {}",
                str_or(&v["role"], "?"),
                str_or(&v["sha256"], "?")
            );
        }
    }
    Ok(())
}

fn print_node(v: &serde_json::Value) {
    let inv = &v["inventory"];
    println!(
        "node {}  state {}  health {}",
        str_or(&v["id"], "-"),
        str_or(&v["state"], "-"),
        str_or(&v["health"], "-")
    );
    println!("  role        {}", str_or(&v["role"], "-"));
    println!(
        "  system      {} {} (serial {}, uuid {})",
        str_or(&inv["system"]["vendor"], "?"),
        str_or(&inv["system"]["product"], "?"),
        str_or(&v["serial"], "-"),
        str_or(&v["uuid"], "-")
    );
    println!("  firmware    {}", str_or(&inv["firmware"]["mode"], "?"));
    println!("  cpu         {}", str_or(&inv["cpu"]["model"], "?"));
    println!(
        "  memory      {} MiB",
        inv["memory"]["total_bytes"].as_u64().unwrap_or(0) >> 20
    );
    for d in inv["disks"].as_array().into_iter().flatten() {
        println!(
            "  disk        {:<8} {:>8} GiB  {} {}",
            str_or(&d["name"], "?"),
            d["size_bytes"].as_u64().unwrap_or(0) >> 30,
            str_or(&d["transport"], ""),
            str_or(&d["model"], "")
        );
    }
    for n in inv["nics"].as_array().into_iter().flatten() {
        println!(
            "  nic         {:<8} {}  {}",
            str_or(&n["name"], "?"),
            str_or(&n["mac"], "?"),
            str_or(&n["driver"], "")
        );
    }
    println!("  peer        {}", str_or(&v["peer"], "-"));
    println!(
        "  last seen   {}",
        ago(v["last_seen"].as_u64().unwrap_or(0))
    );
    println!(
        "  reports     {} (lost {})",
        v["health_reports"], v["health_lost"]
    );
    if let Some(h) = v["last_health"].as_object() {
        println!(
            "  last health uptime {:.0}s, load {:.2}, mem {}/{} MiB available",
            h["uptime_secs"].as_f64().unwrap_or(0.0),
            h["load"][0].as_f64().unwrap_or(0.0),
            h["mem_available_bytes"].as_u64().unwrap_or(0) >> 20,
            h["mem_total_bytes"].as_u64().unwrap_or(0) >> 20
        );
    }
    let i = &v["install"];
    if i.is_object() {
        println!(
            "  install     {} on {} (profile {}), attempt {}, {} failed, {}%",
            str_or(&i["step"], "assigned"),
            str_or(&i["disk"], "?"),
            str_or(&i["profile"], "?"),
            i["attempts"],
            i["failures"],
            i["percent"]
        );
    }
    for c in v["certificates"].as_array().into_iter().flatten() {
        println!(
            "  certificate {} until {}",
            str_or(&c["serial"], "?"),
            c["not_after"]
        );
    }
    for e in v["events"].as_array().into_iter().flatten() {
        println!(
            "  event       {}  {}",
            ago(e["at"].as_u64().unwrap_or(0)),
            str_or(&e["what"], "")
        );
    }
}

/// `90`, `30m`, `12h`, `7d` -> seconds.
fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => anyhow::bail!("bad duration unit in {s:?} (s, m, h, d)"),
    };
    Ok(n * mult)
}

fn tokens(config: &Config, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create {
            ttl,
            uses,
            auto_approve,
            description,
        } => {
            let body = serde_json::json!({
                "description": description,
                "ttl_secs": parse_ttl(&ttl)?,
                "max_uses": uses,
                "auto_approve": auto_approve,
            });
            let v = admin(config, "POST", "/api/v1/tokens", Some(body))?;
            println!("{}", str_or(&v["token"], ""));
            eprintln!(
                "token {} expires {} ({} uses, auto-approve: {}); the secret is not shown again",
                str_or(&v["id"], "?"),
                v["expires"],
                uses.map_or("unlimited".to_owned(), |u| u.to_string()),
                auto_approve
            );
        }
        TokensCommand::List { json } => {
            let v = admin(config, "GET", "/api/v1/tokens", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<8} {:<9} {:>5} {:>5} {:<5} {:<12} DESCRIPTION",
                "ID", "STATUS", "USES", "MAX", "AUTO", "CREATED"
            );
            for t in v.as_array().into_iter().flatten() {
                let status = if t["revoked"] == true {
                    "revoked"
                } else if t["expired"] == true {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<8} {:<9} {:>5} {:>5} {:<5} {:<12} {}",
                    str_or(&t["id"], "?"),
                    status,
                    t["uses"].as_u64().unwrap_or(0),
                    t["max_uses"]
                        .as_u64()
                        .map_or("-".to_owned(), |m| m.to_string()),
                    t["auto_approve"].as_bool().unwrap_or(false),
                    ago(t["created"].as_u64().unwrap_or(0)),
                    str_or(&t["description"], "")
                );
            }
        }
        TokensCommand::Revoke { id } => {
            admin(config, "POST", &format!("/api/v1/tokens/{id}/revoke"), None)?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

/// Writes `text` to `out` (created 0600) or standard output.
fn write_secret(out: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match out {
        None => print!("{text}"),
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {path:?}"))?;
            // `mode` applies only to a new file: tighten an existing one before
            // a single secret byte goes in.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(text.as_bytes())?;
            eprintln!("wrote {path:?} (mode 0600)");
        }
    }
    Ok(())
}

fn cluster(config: &Config, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::ExportSecrets { out } => {
            let v = admin(config, "GET", "/api/v1/cluster/secrets", None)?;
            write_secret(out.as_deref(), str_or(&v["yaml"], ""))
        }
        ClusterCommand::Talosconfig { out, endpoints } => {
            let body = serde_json::json!({ "endpoints": endpoints });
            let v = admin(config, "POST", "/api/v1/cluster/talosconfig", Some(body))?;
            write_secret(out.as_deref(), str_or(&v["yaml"], ""))
        }
    }
}

fn profiles(dir: Option<&std::path::Path>, command: ProfilesCommand) -> anyhow::Result<()> {
    use provisioner::profiles::{Facts, Profiles};
    let profiles = Profiles::load(dir)?;
    match command {
        ProfilesCommand::Check => {
            let problems = provisioner::profiles::check_all(&profiles);
            for p in &profiles.all {
                let mine: Vec<_> = problems.iter().filter(|(n, _)| n == &p.name).collect();
                if mine.is_empty() {
                    println!("ok    {:<28} {}", p.name, p.description);
                }
                for (_, why) in mine {
                    println!("FAIL  {:<28} {why}", p.name);
                }
            }
            if !problems.is_empty() {
                anyhow::bail!(
                    "{} problem(s) in {} profile(s)",
                    problems.len(),
                    profiles.all.len()
                );
            }
            println!("{} profiles checked", profiles.all.len());
        }
        ProfilesCommand::List => {
            for p in &profiles.all {
                println!(
                    "{:<28} vendor={:<12} product={:<24} disk={}",
                    p.name,
                    p.selector.sys_vendor.as_deref().unwrap_or("*"),
                    p.selector.product_name.as_deref().unwrap_or("*"),
                    p.boot_disk.model.as_deref().unwrap_or("-"),
                );
            }
        }
        ProfilesCommand::Match { inventory } => {
            let text = std::fs::read_to_string(&inventory)
                .with_context(|| format!("reading {inventory:?}"))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{inventory:?} is not inventory JSON"))?;
            let facts = Facts::from_inventory(&json);
            let p = profiles.matching(&facts)?;
            println!("profile {}", p.name);
            match p.choose_disk(&facts) {
                Ok(d) => println!("disk    {} (talos selector {:?})", d.device, d.selector),
                Err(e) => println!("disk    none: {e}"),
            }
        }
    }
    Ok(())
}
