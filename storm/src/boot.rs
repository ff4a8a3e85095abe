//! The boot storm: N machines power on at once and each walks the real network
//! boot sequence, the way PXE firmware and then iPXE do it:
//!
//! 1. DHCP as PXE firmware (options 60/93/94/97) → an address and a boot file;
//! 2. TFTP of that file from `siaddr` (RRQ with blksize 1468 and tsize, window 1,
//!    like PXE ROMs; ACK per block);
//! 3. DHCP again as iPXE (user class "iPXE") → the script URL;
//! 4. HTTP GET of the script; a `chain` to a relative URL is expanded with the
//!    machine's variables (`${net0/mac:hexhyp}`, `${uuid}`, ...) and fetched;
//! 5. HTTP GET of every `kernel` and `initrd` the script names, on one
//!    keep-alive connection, each body read to its Content-Length.
//!
//! Every socket of a machine is bound to the address its lease gave it (the
//! namespace routes the pool to `lo`, "AnyIP"), so the server sees N distinct
//! clients, as on a real segment. Times are from the common power-on instant:
//! time-to-script (step 4 done) and time-to-kernel (step 5 done).
//!
//! Retries follow the firmware: DHCP at 4, 8, 16, 32 s (PXE spec); a TFTP RRQ at
//! 1, 2, 4, 8, 16 s; a lost block re-ACKed every second, 5 times; HTTP has no
//! retry (iPXE fails the `chain`), but the whole machine gives up at `--timeout`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::dhcp::{Clients, Kind};
use crate::load::mac_str;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub n: usize,
    pub firmware: Firmware,
    /// Bind each machine's sockets to its leased address.
    pub bind_leased: bool,
    pub timeout: Duration,
    /// Machines power on spread evenly over this long (0: all at once).
    pub spread: Duration,
    pub mac_prefix: [u8; 2],
    /// A DHCP avalanche instead of a boot: each machine stops once it holds a
    /// lease (one DORA as a plain client), and the summary reports time to bound.
    pub until_bound: bool,
}

/// Where a machine failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    PxeDhcp,
    Tftp,
    IpxeDhcp,
    Script,
    Kernel,
    Timeout,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::PxeDhcp => "dhcp_pxe",
            Stage::Tftp => "tftp",
            Stage::IpxeDhcp => "dhcp_ipxe",
            Stage::Script => "http_script",
            Stage::Kernel => "http_kernel",
            Stage::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Times {
    script: Duration,
    kernel: Duration,
    tftp_bytes: u64,
    http_bytes: u64,
}

type Failure = (Stage, String);

fn fail<E: std::fmt::Display>(stage: Stage) -> impl Fn(E) -> Failure {
    move |e| (stage, e.to_string())
}

pub async fn storm(iface: &str, opts: Options) -> anyhow::Result<serde_json::Value> {
    let xid_seed = u32::from_be_bytes(crate::random::<4>());
    // The PXE retransmission schedule (PXE 2.1 §2.2.1): 4, 8, 16, 32 s.
    let clients = Clients::bind(iface, xid_seed, &PXE_DHCP_WAITS)?;
    let opts = Arc::new(opts);
    let power_on = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.n {
        let (clients, opts) = (clients.clone(), opts.clone());
        tasks.spawn(async move {
            if !opts.spread.is_zero() {
                let at = opts.spread.mul_f64(i as f64 / opts.n as f64);
                tokio::time::sleep_until((power_on + at).into()).await;
            }
            let machine = machine(&clients, &opts, i as u32, power_on);
            match tokio::time::timeout(opts.timeout, machine).await {
                Ok(r) => r,
                Err(_) => Err((
                    Stage::Timeout,
                    format!("no kernel after {:?}", opts.timeout),
                )),
            }
        });
    }
    let mut script = Vec::new();
    let mut kernel = Vec::new();
    let (mut tftp_bytes, mut http_bytes) = (0u64, 0u64);
    let mut failures: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut examples: Vec<String> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(t)) => {
                script.push(t.script);
                kernel.push(t.kernel);
                tftp_bytes += t.tftp_bytes;
                http_bytes += t.http_bytes;
            }
            Ok(Err((stage, why))) => {
                *failures.entry(stage.name()).or_default() += 1;
                if examples.len() < 5 {
                    examples.push(format!("{}: {why}", stage.name()));
                }
            }
            Err(e) => {
                *failures.entry("panic").or_default() += 1;
                examples.push(e.to_string());
            }
        }
    }
    let wall = power_on.elapsed();
    script.sort();
    kernel.sort();
    let ms = |v: &[Duration], p: f64| -> serde_json::Value {
        if v.is_empty() {
            return serde_json::Value::Null;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        (v[i.min(v.len() - 1)].as_secs_f64() * 1000.0)
            .round()
            .into()
    };
    let percentiles = |v: &[Duration]| serde_json::json!({"p50": ms(v, 0.5), "p90": ms(v, 0.9), "p99": ms(v, 0.99), "max": ms(v, 1.0)});
    let mut out = serde_json::json!({
        "machines": opts.n,
        "failed": opts.n - kernel.len(),
        "failures": failures,
        "failure_examples": examples,
        "wall_ms": wall.as_millis() as u64,
    });
    if opts.until_bound {
        // The last lease is the avalanche's time to all bound (when none failed).
        out["bound"] = kernel.len().into();
        out["time_to_bound_ms"] = percentiles(&kernel);
    } else {
        out["booted"] = kernel.len().into();
        out["time_to_script_ms"] = percentiles(&script);
        out["time_to_kernel_ms"] = percentiles(&kernel);
        out["tftp_bytes"] = tftp_bytes.into();
        out["http_bytes"] = http_bytes.into();
    }
    Ok(out)
}

const PXE_DHCP_WAITS: [Duration; 4] = [
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

/// DHCP as firmware does it: a NAK starts over with a DISCOVER (RFC 2131 §3.1,
/// step 5), up to eight times. dnsmasq NAKs a REQUEST for an address it offered
/// twice in a storm; the machine's next DISCOVER gets another.
async fn dora(
    clients: &Clients,
    mac: [u8; 6],
    kind: Kind,
    stage: Stage,
) -> Result<crate::dhcp::Lease, Failure> {
    let mut naks = 0;
    loop {
        match clients.dora(mac, kind).await {
            Err(crate::dhcp::Failure::Nak) if naks < 8 => naks += 1,
            r => return r.map_err(|e| (stage, format!("{e:?}"))),
        }
    }
}

async fn machine(
    clients: &Clients,
    opts: &Options,
    i: u32,
    power_on: Instant,
) -> Result<Times, Failure> {
    let mac = [
        opts.mac_prefix[0],
        opts.mac_prefix[1],
        (i >> 24) as u8,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ];
    let arch = match opts.firmware {
        Firmware::Bios => 0,
        Firmware::Uefi => 7,
    };
    if opts.until_bound {
        dora(clients, mac, Kind::Plain, Stage::PxeDhcp).await?;
        let bound = power_on.elapsed();
        return Ok(Times {
            script: bound,
            kernel: bound,
            tftp_bytes: 0,
            http_bytes: 0,
        });
    }
    let lease = dora(clients, mac, Kind::Pxe { arch }, Stage::PxeDhcp).await?;
    let local = if opts.bind_leased {
        lease.addr
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let file = lease
        .file
        .clone()
        .ok_or((Stage::PxeDhcp, "no boot file".to_string()))?;
    let tftp_server = if lease.next_server.is_unspecified() {
        lease.server
    } else {
        lease.next_server
    };
    let tftp_bytes = tftp_get(tftp_server, local, &file)
        .await
        .map_err(fail(Stage::Tftp))?;
    // iPXE starts over with DHCP and gets the script URL this time.
    let ipxe = dora(clients, mac, Kind::Ipxe { arch }, Stage::IpxeDhcp).await?;
    let url = ipxe
        .file
        .ok_or((Stage::IpxeDhcp, "no script URL".to_string()))?;
    let (server, path) =
        split_url(&url).ok_or((Stage::IpxeDhcp, format!("not an http URL: {url}")))?;
    let mut conn = Http::connect(server, local)
        .await
        .map_err(fail(Stage::Script))?;
    let (entry, mut http_bytes) = conn
        .get_text(server, &path)
        .await
        .map_err(fail(Stage::Script))?;
    let vars = Vars {
        mac,
        i,
        firmware: opts.firmware,
    };
    let chain = entry
        .lines()
        .find_map(|l| l.strip_prefix("chain "))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .ok_or((Stage::Script, "no chain in the entry script".to_string()))?;
    let chained = vars.expand(chain);
    let chained = if chained.starts_with('/') {
        chained
    } else {
        format!("{}{chained}", &path[..path.rfind('/').map_or(0, |p| p + 1)])
    };
    let (script, n) = conn
        .get_text(server, &chained)
        .await
        .map_err(fail(Stage::Script))?;
    http_bytes += n;
    let to_script = power_on.elapsed();
    let mut images = 0;
    for line in script.lines() {
        let mut words = line.split_whitespace();
        if !matches!(words.next(), Some("kernel" | "initrd")) {
            continue;
        }
        let url = words.next().unwrap_or("");
        let (host, path) = split_url(url).ok_or((Stage::Kernel, format!("bad URL {url}")))?;
        if host != server {
            conn = Http::connect(host, local)
                .await
                .map_err(fail(Stage::Kernel))?;
        }
        http_bytes += conn
            .get_discard(host, &path)
            .await
            .map_err(fail(Stage::Kernel))?;
        images += 1;
    }
    if images == 0 {
        return Err((Stage::Script, format!("no kernel in the script:\n{script}")));
    }
    Ok(Times {
        script: to_script,
        kernel: power_on.elapsed(),
        tftp_bytes,
        http_bytes,
    })
}

/// What iPXE would substitute into the entry script's `chain` URL.
struct Vars {
    mac: [u8; 6],
    i: u32,
    firmware: Firmware,
}

impl Vars {
    fn expand(&self, s: &str) -> String {
        let (buildarch, platform) = match self.firmware {
            Firmware::Bios => ("i386", "pcbios"),
            Firmware::Uefi => ("x86_64", "efi"),
        };
        s.replace("${net0/mac:hexhyp}", &mac_str(&self.mac).replace(':', "-"))
            .replace("${net0/mac}", &mac_str(&self.mac))
            .replace(
                "${uuid}",
                &format!("5707e000-0000-4000-8000-{:012x}", self.i),
            )
            .replace("${serial:uristring}", &format!("STORM{}", self.i))
            .replace("${buildarch}", buildarch)
            .replace("${platform}", platform)
    }
}

/// `http://a.b.c.d[:port]/path` → (address, path).
fn split_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (hostport, 80),
    };
    let ip: Ipv4Addr = host.parse().ok()?;
    let path = if path.is_empty() { "/" } else { path };
    Some((SocketAddr::from((ip, port)), path.to_string()))
}

/// TFTP read of `file`: returns its size. RFC 1350 with blksize (2348) and
/// tsize (2349), window 1.
async fn tftp_get(server: Ipv4Addr, local: Ipv4Addr, file: &str) -> anyhow::Result<u64> {
    const BLKSIZE: usize = 1468;
    let sock = UdpSocket::bind(SocketAddrV4::new(local, 0)).await?;
    let mut rrq = vec![0, 1];
    for part in [file, "octet", "blksize", "1468", "tsize", "0"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    let to = SocketAddr::from((server, 69));
    let mut buf = vec![0u8; 65536];
    let mut tid: Option<SocketAddr> = None;
    let mut blksize = 512;
    let mut expected: u16 = 1;
    let mut total: u64 = 0;
    let mut last_ack: Option<Vec<u8>> = None;
    let mut misses = 0;
    let rrq_waits = [1u64, 2, 4, 8, 16];
    loop {
        let wait = match (&tid, misses) {
            (None, m) if m < rrq_waits.len() => {
                sock.send_to(&rrq, to).await?;
                Duration::from_secs(rrq_waits[m])
            }
            (None, _) => anyhow::bail!("no answer to the RRQ for {file}"),
            (Some(_), m) if m > 5 => {
                anyhow::bail!("transfer of {file} stalled at block {expected}")
            }
            (Some(_), _) => Duration::from_secs(1),
        };
        let got = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await;
        let (n, from) = match got {
            Ok(r) => r?,
            Err(_) => {
                misses += 1;
                if let (Some(t), Some(ack)) = (tid, &last_ack) {
                    sock.send_to(ack, t).await?;
                }
                continue;
            }
        };
        if from.ip() != std::net::IpAddr::V4(server) || tid.is_some_and(|t| t != from) {
            continue;
        }
        let pkt = &buf[..n];
        let op = u16::from_be_bytes([
            pkt.first().copied().unwrap_or(0),
            pkt.get(1).copied().unwrap_or(0),
        ]);
        match op {
            6 if tid.is_none() => {
                // OACK: take blksize, ACK block 0.
                let fields: Vec<&[u8]> = pkt[2..].split(|&b| b == 0).collect();
                for pair in fields.chunks(2) {
                    if let [k, v] = pair
                        && k.eq_ignore_ascii_case(b"blksize")
                    {
                        blksize = std::str::from_utf8(v)
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(512);
                    }
                }
                if blksize > BLKSIZE {
                    anyhow::bail!("server granted blksize {blksize} over the {BLKSIZE} asked");
                }
                tid = Some(from);
                let ack = vec![0, 4, 0, 0];
                sock.send_to(&ack, from).await?;
                last_ack = Some(ack);
                misses = 0;
            }
            3 if n >= 4 => {
                let block = u16::from_be_bytes([pkt[2], pkt[3]]);
                tid.get_or_insert(from);
                if block == expected {
                    let data = n - 4;
                    total += data as u64;
                    let ack = vec![0, 4, pkt[2], pkt[3]];
                    sock.send_to(&ack, from).await?;
                    last_ack = Some(ack);
                    expected = expected.wrapping_add(1);
                    misses = 0;
                    if data < blksize {
                        return Ok(total);
                    }
                } else if let Some(ack) = &last_ack {
                    // A duplicate: re-ACK what we have (the server must not double up).
                    sock.send_to(ack, from).await?;
                }
            }
            5 => {
                let msg = String::from_utf8_lossy(pkt.get(4..).unwrap_or(&[]));
                anyhow::bail!("TFTP error for {file}: {}", msg.trim_end_matches('\0'));
            }
            _ => {}
        }
    }
}

/// One HTTP/1.1 keep-alive connection, as iPXE keeps one per server.
pub struct Http {
    stream: BufReader<TcpStream>,
}

impl Http {
    pub async fn connect(server: SocketAddr, local: Ipv4Addr) -> anyhow::Result<Http> {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::from((local, 0)))?;
        let stream = sock.connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream: BufReader::with_capacity(256 * 1024, stream),
        })
    }

    /// Sends a GET and reads the head; returns the body length.
    async fn head(&mut self, host: SocketAddr, path: &str) -> anyhow::Result<u64> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: iPXE/1.21.1 (storm)\r\nConnection: keep-alive\r\n\r\n"
        );
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad status line {line:?}"))?;
        let mut length = None;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                anyhow::bail!("connection closed in the head of {path}");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse::<u64>().ok();
            }
        }
        if status != 200 {
            anyhow::bail!("GET {path}: status {status}");
        }
        length.ok_or_else(|| anyhow::anyhow!("GET {path}: no Content-Length"))
    }

    pub async fn get_text(
        &mut self,
        host: SocketAddr,
        path: &str,
    ) -> anyhow::Result<(String, u64)> {
        let len = self.head(host, path).await?;
        anyhow::ensure!(len <= 1 << 20, "a script of {len} bytes");
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body).await?;
        Ok((String::from_utf8_lossy(&body).into_owned(), len))
    }

    async fn get_discard(&mut self, host: SocketAddr, path: &str) -> anyhow::Result<u64> {
        let len = self.head(host, path).await?;
        let mut left = len;
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = self.stream.read(&mut buf[..want]).await?;
            anyhow::ensure!(
                n > 0,
                "GET {path}: closed with {left} of {len} bytes missing"
            );
            left -= n as u64;
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_ipxe_variables() {
        assert_eq!(
            split_url("http://10.0.0.1:8080/boot.ipxe"),
            Some((
                "10.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!()),
                "/boot.ipxe".into()
            ))
        );
        assert_eq!(split_url("http://10.0.0.1").map(|u| u.1), Some("/".into()));
        assert_eq!(split_url("tftp://10.0.0.1/x"), None);
        let v = Vars {
            mac: [2, 0, 0, 0, 1, 2],
            i: 3,
            firmware: Firmware::Uefi,
        };
        assert_eq!(
            v.expand("/ipxe?mac=${net0/mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}&buildarch=${buildarch}&platform=${platform}"),
            "/ipxe?mac=02-00-00-00-01-02&uuid=5707e000-0000-4000-8000-000000000003&serial=STORM3&buildarch=x86_64&platform=efi"
        );
    }
}
