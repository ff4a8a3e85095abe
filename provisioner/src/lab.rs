//! `provisioner lab`: see a machine network-boot through the hub on this computer,
//! without touching its network.
//!
//! The process moves itself into a fresh network namespace (`unshare`) before any
//! thread exists, so the hub's threads and the QEMU child live there too. Inside: a
//! bridge with the hub's address and a tap for the VM. The hub runs in-process (the
//! same `App` as `serve`), QEMU network-boots a VM through it, the VM's serial
//! console is watched for the discovery image's markers, and the VM's boot
//! timeline is printed. When the process exits the namespace, bridge and tap are
//! gone with it: nothing to clean up by hand.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::{Config, MacAddr};
use crate::timeline::Timeline;

/// The discovery image prints these on the serial console (boot-assets/discovery/init).
pub const DISCOVERY_OK: &str = "PROVISIONER-DISCOVERY-OK";
pub const FETCH_OK: &str = "PROVISIONER-FETCH-OK";
const FAIL_MARKERS: [&str; 2] = ["PROVISIONER-DISCOVERY-FAIL", "PROVISIONER-FETCH-FAIL"];

const HUB_ADDR: &str = "10.99.0.1";
const VM_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x99, 0x00, 0x01]);
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabFirmware {
    /// SeaBIOS with QEMU's iPXE option ROM.
    Bios,
    /// OVMF's own PXE: TFTP of ipxe.efi, then HTTP.
    Uefi,
}

#[derive(Debug, Clone)]
pub struct LabOptions {
    pub assets: PathBuf,
    pub firmware: LabFirmware,
    pub timeout: Duration,
    /// The static node agent: when given, the VM enrolls, the lab approves it
    /// as an operator would, and waits for its first health report.
    pub agent: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (it creates a network namespace and a tap device)")]
    NotRoot,
    #[error("{0} not found: install it (apt-get install {1})")]
    Missing(String, &'static str),
    #[error("creating the lab's network namespace")]
    Unshare(#[source] nix::Error),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("starting {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the lab's hub config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error(
        "the discovery image is not in {0:?}: run boot-assets/fetch.sh and boot-assets/build-discovery.sh into it"
    )]
    NoDiscovery(PathBuf),
    #[error("the VM did not finish booting within {0:?} (see its console above)")]
    Timeout(Duration),
    #[error("the VM reported a failure: {0}")]
    VmFailed(String),
    #[error("the VM's agent did not {0} within {1:?}")]
    Agent(&'static str, Duration),
    #[error("lab I/O")]
    Io(#[from] std::io::Error),
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn { what: "ip", source })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Runs the lab to the end. Must be called before any other thread is started:
/// it moves the whole process into a new network namespace.
pub fn run(opts: LabOptions) -> Result<(), LabError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    for (cmd, pkg) in [
        ("ip", "iproute2"),
        ("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu ovmf"),
    ] {
        if !which(cmd) {
            return Err(LabError::Missing(cmd.into(), pkg));
        }
    }
    if opts.firmware == LabFirmware::Uefi && !Path::new(OVMF_CODE).exists() {
        return Err(LabError::Missing(OVMF_CODE.into(), "ovmf"));
    }
    for f in ["discovery-vmlinuz", "discovery-initramfs.gz"] {
        if !opts.assets.join(f).is_file() {
            return Err(LabError::NoDiscovery(opts.assets.clone()));
        }
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(LabError::Unshare)?;
    ip(&["link", "set", "lo", "up"])?;
    ip(&["link", "add", "br0", "type", "bridge"])?;
    ip(&["addr", "add", &format!("{HUB_ADDR}/24"), "dev", "br0"])?;
    ip(&["link", "set", "br0", "up"])?;
    ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"])?;
    ip(&["link", "set", "tap0", "master", "br0"])?;
    ip(&["link", "set", "tap0", "up"])?;

    let work = tempdir()?;
    let config = Config::parse(&format!(
        r#"
state_dir = "{state}"
[dhcp]
mode = "full"
interfaces = ["br0"]
lease_key = "mac"
[[dhcp.subnet]]
network = "10.99.0.0/24"
pools = [{{ start = "10.99.0.100", end = "10.99.0.200" }}]
routers = ["{HUB_ADDR}"]
[boot]
assets_dir = "{assets}"
{agent}
[tftp]
listen = "{HUB_ADDR}:69"
[http]
listen = "{HUB_ADDR}:8080"
[enroll]
poll_secs = 2
"#,
        state = work.join("state").display(),
        assets = opts.assets.display(),
        agent = opts
            .agent
            .as_ref()
            .map(|a| format!("node_agent = \"{}\"", a.display()))
            .unwrap_or_default(),
    ))?;
    println!(
        "lab: hub at {HUB_ADDR} on an isolated bridge (DHCP full, TFTP, HTTP); booting a {:?} VM",
        opts.firmware
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cancel = CancellationToken::new();
    let app = runtime.block_on(async { App::build(&config) })?;
    let timeline = app.timeline();
    let authority = app.authority();
    let hub = runtime.spawn(app.run(cancel.clone()));

    let serial = work.join("serial.log");
    std::fs::write(&serial, b"")?;
    let mut vm = start_vm(&opts, &work, &serial)?;
    let mut result = watch(&serial, opts.timeout, &mut vm);
    if result.is_ok()
        && opts.agent.is_some()
        && let Some(authority) = &authority
    {
        result = enrollment(authority, &serial, opts.timeout);
    }
    let _ = vm.kill();
    let _ = vm.wait();
    if result.is_err() {
        for (what, file) in [("console", &serial), ("qemu", &work.join("qemu.log"))] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            println!("--- {what} (last lines)");
            for l in tail.into_iter().rev() {
                println!("{l}");
            }
        }
    }
    print_timeline(&timeline);
    cancel.cancel();
    let _ = runtime.block_on(hub);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("provisioner-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn start_vm(opts: &LabOptions, work: &Path, serial: &Path) -> Result<Child, LabError> {
    let mut args: Vec<String> = [
        "-accel",
        "tcg",
        "-m",
        "256",
        "-smp",
        "1",
        "-display",
        "none",
        "-vga",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("-serial".into());
    args.push(format!("file:{}", serial.display()));
    match opts.firmware {
        LabFirmware::Bios => {
            args.extend([
                "-boot".into(),
                "n".into(),
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={VM_MAC}"),
            ]);
        }
        LabFirmware::Uefi => {
            let vars = work.join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars)?;
            args.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={VM_MAC},romfile=,bootindex=1"),
                "-fw_cfg".into(),
                "name=opt/org.tianocore/IPv6PXESupport,string=n".into(),
            ]);
        }
    }
    let log = std::fs::File::create(work.join("qemu.log"))?;
    Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|source| LabError::Spawn {
            what: "qemu-system-x86_64",
            source,
        })
}

/// Echoes the VM's console marker lines until the discovery image has fetched from
/// the hub, a failure marker appears, or time runs out.
fn watch(serial: &Path, timeout: Duration, vm: &mut Child) -> Result<(), LabError> {
    let started = Instant::now();
    let mut consumed = 0usize;
    loop {
        let bytes = std::fs::read(serial)?;
        // Only complete lines; a partial last line is read again next time.
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if end > consumed {
            let fresh = String::from_utf8_lossy(&bytes[consumed..end]).into_owned();
            consumed = end;
            for line in fresh.lines() {
                if line.contains("PROVISIONER-") || line.contains("iPXE") {
                    println!(
                        "vm [{:>5.1} s] {}",
                        started.elapsed().as_secs_f64(),
                        line.trim()
                    );
                }
                if let Some(bad) = FAIL_MARKERS.iter().find(|m| line.contains(*m)) {
                    return Err(LabError::VmFailed((*bad).to_string()));
                }
                if line.contains(FETCH_OK) {
                    println!(
                        "lab: the VM booted the discovery image through the hub in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
            }
        }
        if started.elapsed() > timeout {
            return Err(LabError::Timeout(timeout));
        }
        if let Ok(Some(status)) = vm.try_wait() {
            return Err(LabError::VmFailed(format!("QEMU exited ({status})")));
        }
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Plays the operator: waits for the VM's agent to enroll, approves it, and
/// waits for its first health report, echoing the agent's console lines.
fn enrollment(
    authority: &Arc<crate::enroll::Authority>,
    serial: &Path,
    timeout: Duration,
) -> Result<(), LabError> {
    let started = Instant::now();
    let mut approved = false;
    let mut printed = 0;
    loop {
        let text = std::fs::read_to_string(serial).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("node_agent")).collect();
        for l in lines.iter().skip(printed) {
            // The console shell's prompt may share the line: start at the module.
            let from = l.find("node_agent").unwrap_or(0);
            println!("vm agent: {}", l[from..].trim());
        }
        printed = lines.len();
        let node = authority
            .nodes()
            .into_iter()
            .find(|n| n.claim.macs.contains(&VM_MAC));
        match node {
            Some(n) if !approved && n.state == crate::enroll::registry::NodeState::Pending => {
                let inv = n.inventory.value();
                println!(
                    "lab: node {} enrolled, pending: {} {}, {} disk(s), {} NIC(s); approving it as an operator would (provisioner nodes approve {})",
                    n.id,
                    inv["system"]["vendor"].as_str().unwrap_or("?"),
                    inv["system"]["product"].as_str().unwrap_or(""),
                    inv["disks"].as_array().map_or(0, Vec::len),
                    inv["nics"].as_array().map_or(0, Vec::len),
                    n.id
                );
                authority
                    .approve(&n.id, None)
                    .map_err(|e| LabError::VmFailed(e.to_string()))?;
                approved = true;
            }
            Some(n) if n.health_reports > 0 => {
                println!(
                    "lab: node {} is approved and reporting health ({} report(s))",
                    n.id, n.health_reports
                );
                return Ok(());
            }
            _ => {}
        }
        if started.elapsed() > timeout {
            let what = if approved { "report health" } else { "enroll" };
            return Err(LabError::Agent(what, timeout));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn print_timeline(timeline: &Arc<Timeline>) {
    let events = timeline.events(VM_MAC);
    println!("boot timeline of {VM_MAC}:");
    let first = events.first().map(|e| e.at_ms).unwrap_or(0);
    for e in events {
        println!(
            "  +{:>6.2} s  {:<4?}  {}",
            (e.at_ms - first) as f64 / 1000.0,
            e.source,
            e.what
        );
    }
}
