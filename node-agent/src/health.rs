//! Health reports: what the agent measures (uptime, load, memory, disk usage,
//! temperatures, NIC links) and the bounded buffer that holds reports until
//! the hub acknowledges them.
//!
//! Exactly-once delivery: every report gets the next sequence number of this
//! agent run (`boot_id`); the hub stores only sequence numbers above the ones
//! it holds and acknowledges the highest; the agent drops a report only once
//! acknowledged. A retry after a lost answer is therefore harmless. When the
//! hub is away longer than the buffer lasts, the oldest reports are dropped and
//! the hub counts the gap as lost.

use std::collections::VecDeque;
use std::path::Path;

use proto::v1::{DiskUsage, HealthReport, NicLink, Temperature};

/// Reports kept while the hub is unreachable (an hour at a 10 s interval... x6).
pub const BUFFER_MAX: usize = 2048;
/// Reports sent in one RPC.
pub const BATCH_MAX: usize = 256;

#[derive(Debug)]
pub struct HealthBuffer {
    next_seq: u64,
    pending: VecDeque<HealthReport>,
    capacity: usize,
    dropped: u64,
}

impl HealthBuffer {
    pub fn new(capacity: usize) -> HealthBuffer {
        HealthBuffer {
            next_seq: 1,
            pending: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Numbers and queues a report; the oldest goes when full.
    pub fn push(&mut self, mut report: HealthReport) -> u64 {
        report.seq = self.next_seq;
        self.next_seq += 1;
        if self.pending.len() == self.capacity {
            self.pending.pop_front();
            self.dropped += 1;
        }
        self.pending.push_back(report);
        self.next_seq - 1
    }

    /// The oldest unacknowledged reports, up to `max`.
    pub fn batch(&self, max: usize) -> Vec<HealthReport> {
        self.pending.iter().take(max).cloned().collect()
    }

    /// Forgets every report up to and including `seq`.
    pub fn ack(&mut self, seq: u64) {
        while self.pending.front().is_some_and(|r| r.seq <= seq) {
            self.pending.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

fn first_f64(text: &str, n: usize) -> Vec<f64> {
    text.split_ascii_whitespace()
        .take(n)
        .map(|w| w.parse::<f64>().unwrap_or(0.0))
        .collect()
}

/// `/proc/meminfo` -> (MemTotal, MemAvailable) in bytes.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb.saturating_mul(1024))
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// Mount points of real filesystems in `/proc/mounts` (not proc, sysfs, cgroup...).
pub fn parse_mounts(text: &str) -> Vec<String> {
    const VIRTUAL: &[&str] = &[
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "tracefs",
        "pstore",
        "bpf",
        "mqueue",
        "hugetlbfs",
        "configfs",
        "fusectl",
        "efivarfs",
        "autofs",
        "binfmt_misc",
        "nsfs",
        "rpc_pipefs",
        "squashfs",
        "overlay",
    ];
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let (_dev, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            (!VIRTUAL.contains(&fstype)
                && !mount.starts_with("/proc")
                && !mount.starts_with("/sys"))
            .then(|| mount.replace("\\040", " "))
        })
        .collect();
    out.sort();
    out.dedup();
    out.truncate(32);
    out
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap_or_default()
}

/// Measures this machine now (`root` is "/" except in tests).
pub fn measure(root: &Path, at_unix_ms: i64, agent_version: &str) -> HealthReport {
    let uptime = first_f64(&read(root, "/proc/uptime"), 1);
    let load = first_f64(&read(root, "/proc/loadavg"), 3);
    let (mem_total, mem_available) = parse_meminfo(&read(root, "/proc/meminfo"));
    let disks = parse_mounts(&read(root, "/proc/mounts"))
        .into_iter()
        .filter_map(|mount| {
            let st = nix::sys::statvfs::statvfs(root.join(mount.trim_start_matches('/')).as_path())
                .ok()?;
            let frag = st.fragment_size() as u64;
            let total = (st.blocks() as u64).saturating_mul(frag);
            let free = (st.blocks_free() as u64).saturating_mul(frag);
            (total > 0).then(|| DiskUsage {
                mount,
                total_bytes: total,
                used_bytes: total.saturating_sub(free),
            })
        })
        .collect();
    let mut temperatures = Vec::new();
    if let Ok(zones) = std::fs::read_dir(root.join("sys/class/thermal")) {
        for z in zones.flatten().take(64) {
            let name = z.file_name().to_string_lossy().into_owned();
            if !name.starts_with("thermal_zone") {
                continue;
            }
            let t = std::fs::read_to_string(z.path().join("temp")).ok();
            if let Some(milli) = t.and_then(|t| t.trim().parse::<f64>().ok()) {
                let kind = std::fs::read_to_string(z.path().join("type")).unwrap_or_default();
                temperatures.push(Temperature {
                    sensor: format!("{name}:{}", kind.trim()),
                    celsius: milli / 1000.0,
                });
            }
        }
    }
    let mut nics = Vec::new();
    if let Ok(ifaces) = std::fs::read_dir(root.join("sys/class/net")) {
        for i in ifaces.flatten().take(64) {
            let name = i.file_name().to_string_lossy().into_owned();
            if name == "lo" {
                continue;
            }
            let oper = std::fs::read_to_string(i.path().join("operstate")).unwrap_or_default();
            let speed = std::fs::read_to_string(i.path().join("speed"))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(0);
            nics.push(NicLink {
                name,
                up: oper.trim() == "up",
                speed_mbps: speed,
            });
        }
    }
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    HealthReport {
        seq: 0,
        at_unix_ms,
        uptime_secs: uptime.first().copied().unwrap_or(0.0),
        load1: load.first().copied().unwrap_or(0.0),
        load5: load.get(1).copied().unwrap_or(0.0),
        load15: load.get(2).copied().unwrap_or(0.0),
        mem_total_bytes: mem_total,
        mem_available_bytes: mem_available,
        disks,
        temperatures,
        nics,
        agent_version: agent_version.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_numbers_acks_and_drops_oldest() {
        let mut b = HealthBuffer::new(3);
        for _ in 0..5 {
            b.push(HealthReport::default());
        }
        assert_eq!(b.dropped(), 2);
        let seqs: Vec<u64> = b.batch(10).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(b.batch(2).len(), 2);
        b.ack(4);
        assert_eq!(
            b.batch(10).iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![5]
        );
        b.ack(100);
        assert!(b.is_empty());
        assert_eq!(
            b.push(HealthReport::default()),
            6,
            "numbers keep rising after acks"
        );
    }

    #[test]
    fn parsers() {
        let (t, a) = parse_meminfo(
            "MemTotal:       16303340 kB\nMemFree: 1 kB\nMemAvailable:   12000000 kB\n",
        );
        assert_eq!((t, a), (16303340 * 1024, 12000000 * 1024));
        assert_eq!(parse_meminfo("garbage"), (0, 0));
        let mounts = "proc /proc proc rw 0 0\n/dev/vda1 / ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\nsysfs /sys sysfs rw 0 0\n/dev/vdb /mnt/my\\040disk xfs rw 0 0\n";
        assert_eq!(parse_mounts(mounts), vec!["/", "/mnt/my disk", "/run"]);
    }

    #[test]
    fn measure_this_machine() {
        let r = measure(Path::new("/"), 1, "t");
        assert!(r.uptime_secs > 0.0 && r.mem_total_bytes > 0, "{r:?}");
        assert!(r.disks.iter().any(|d| d.mount == "/"), "{:?}", r.disks);
    }
}
