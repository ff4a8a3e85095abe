//! Processors: model and counts from /proc/cpuinfo, with the sysfs topology
//! files where cpuinfo has no ids (non-x86 kernels print no "physical id"),
//! and the SMBIOS type 4 sockets for what the kernel cannot know (empty sockets).
//!
//! Counts are of online CPUs: an offline CPU or one disabled in firmware is
//! not counted, because the kernel cannot place it in a package.

use std::collections::BTreeSet;

use super::model::Cpu;
use super::smbios::Smbios;
use super::source::{Source, read_text, read_u64};

pub const CPUINFO: &str = "/proc/cpuinfo";
pub const CPU_SYSFS: &str = "/sys/devices/system/cpu";

/// One logical CPU's block of /proc/cpuinfo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuinfoEntry {
    pub processor: Option<u32>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub physical_id: Option<u32>,
    pub core_id: Option<u32>,
}

/// Parses /proc/cpuinfo into one entry per "processor" block. Lines without a
/// colon and unknown keys are skipped; a "processor" line starts a new block
/// even without the blank line before it.
pub fn parse_cpuinfo(text: &str) -> Vec<CpuinfoEntry> {
    let mut out: Vec<CpuinfoEntry> = Vec::new();
    let mut cur: Option<CpuinfoEntry> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            out.extend(cur.take());
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "processor" {
            out.extend(cur.take());
            cur = Some(CpuinfoEntry {
                processor: value.parse().ok(),
                ..CpuinfoEntry::default()
            });
            continue;
        }
        let Some(entry) = cur.as_mut() else { continue };
        let text = || (!value.is_empty()).then(|| value.to_string());
        match key {
            "vendor_id" => entry.vendor = text(),
            "model name" => entry.model = text(),
            "physical id" => entry.physical_id = value.parse().ok(),
            "core id" => entry.core_id = value.parse().ok(),
            _ => {}
        }
    }
    out.extend(cur);
    out
}

pub fn collect(src: &dyn Source, smb: &Smbios) -> Cpu {
    let mut cpus = read_text(src, CPUINFO)
        .map(|t| parse_cpuinfo(&t))
        .unwrap_or_default();
    if cpus.is_empty() {
        cpus = sysfs_cpus(src);
    }
    for cpu in &mut cpus {
        let Some(n) = cpu.processor else { continue };
        let topo = format!("{CPU_SYSFS}/cpu{n}/topology");
        if cpu.physical_id.is_none() {
            cpu.physical_id = read_u32(src, &format!("{topo}/physical_package_id"));
        }
        if cpu.core_id.is_none() {
            cpu.core_id = read_u32(src, &format!("{topo}/core_id"));
        }
    }
    let packages: Option<BTreeSet<u32>> = cpus.iter().map(|c| c.physical_id).collect();
    let cores: Option<BTreeSet<(u32, u32)>> = cpus
        .iter()
        .map(|c| Some((c.physical_id?, c.core_id?)))
        .collect();
    let first_populated = smb.processors.iter().find(|p| p.populated);
    Cpu {
        vendor: cpus
            .iter()
            .find_map(|c| c.vendor.clone())
            .or_else(|| first_populated.and_then(|p| p.manufacturer.clone())),
        model: cpus
            .iter()
            .find_map(|c| c.model.clone())
            .or_else(|| first_populated.and_then(|p| p.version.clone())),
        sockets: nonzero_len(packages.as_ref().map(BTreeSet::len)),
        cores: nonzero_len(cores.as_ref().map(BTreeSet::len)),
        threads: nonzero_len(Some(cpus.len())),
        packages: smb.processors.clone(),
    }
}

/// CPUs from sysfs when /proc/cpuinfo is unreadable: every cpuN directory
/// with a topology (offline CPUs have none).
fn sysfs_cpus(src: &dyn Source) -> Vec<CpuinfoEntry> {
    let mut ns: Vec<u32> = src
        .list(CPU_SYSFS)
        .iter()
        .filter_map(|name| name.strip_prefix("cpu")?.parse().ok())
        .filter(|n| src.exists(&format!("{CPU_SYSFS}/cpu{n}/topology")))
        .collect();
    ns.sort_unstable();
    ns.into_iter()
        .map(|n| CpuinfoEntry {
            processor: Some(n),
            ..CpuinfoEntry::default()
        })
        .collect()
}

fn read_u32(src: &dyn Source, path: &str) -> Option<u32> {
    read_u64(src, path).and_then(|v| u32::try_from(v).ok())
}

fn nonzero_len(n: Option<usize>) -> Option<u32> {
    n.filter(|&n| n > 0).and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;

    const TWO_SOCKETS_HT: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6430\nphysical id\t: 0\ncore id\t\t: 0\n\n\
processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6430\nphysical id\t: 0\ncore id\t\t: 0\n\n\
processor\t: 2\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6430\nphysical id\t: 1\ncore id\t\t: 0\n\n\
processor\t: 3\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6430\nphysical id\t: 1\ncore id\t\t: 0\n\n";

    const ARM: &str = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n\n\
processor\t: 1\nBogoMIPS\t: 50.00\n\nSerial\t\t: 0000\n";

    #[test]
    fn counts_from_cpuinfo_and_topology() {
        struct Case {
            name: &'static str,
            files: Vec<(&'static str, &'static [u8])>,
            want: (Option<u32>, Option<u32>, Option<u32>, Option<&'static str>),
        }
        let cases = [
            Case {
                name: "two sockets, hyperthreads",
                files: vec![(CPUINFO, TWO_SOCKETS_HT.as_bytes())],
                want: (
                    Some(2),
                    Some(2),
                    Some(4),
                    Some("Intel(R) Xeon(R) Gold 6430"),
                ),
            },
            Case {
                name: "arm without ids, no topology",
                files: vec![(CPUINFO, ARM.as_bytes())],
                want: (None, None, Some(2), None),
            },
            Case {
                name: "arm with topology",
                files: vec![
                    (CPUINFO, ARM.as_bytes()),
                    (
                        "/sys/devices/system/cpu/cpu0/topology/physical_package_id",
                        b"0\n",
                    ),
                    ("/sys/devices/system/cpu/cpu0/topology/core_id", b"0\n"),
                    (
                        "/sys/devices/system/cpu/cpu1/topology/physical_package_id",
                        b"0\n",
                    ),
                    ("/sys/devices/system/cpu/cpu1/topology/core_id", b"1\n"),
                ],
                want: (Some(1), Some(2), Some(2), None),
            },
            Case {
                name: "no cpuinfo, sysfs only",
                files: vec![
                    (
                        "/sys/devices/system/cpu/cpu0/topology/physical_package_id",
                        b"0\n",
                    ),
                    ("/sys/devices/system/cpu/cpu0/topology/core_id", b"0\n"),
                    (
                        "/sys/devices/system/cpu/cpu1/topology/physical_package_id",
                        b"0\n",
                    ),
                    ("/sys/devices/system/cpu/cpu1/topology/core_id", b"0\n"),
                    ("/sys/devices/system/cpu/possible", b"0-1\n"),
                ],
                want: (Some(1), Some(1), Some(2), None),
            },
            Case {
                name: "nothing",
                files: vec![],
                want: (None, None, None, None),
            },
            Case {
                name: "garbage",
                files: vec![(CPUINFO, b"\xff\xfe:::\nprocessor: x\nphysical id: -1\n")],
                want: (None, None, Some(1), None),
            },
        ];
        for case in cases {
            let fx = Fixture::from_files(&case.files);
            let cpu = collect(&fx, &Smbios::default());
            assert_eq!(
                (cpu.sockets, cpu.cores, cpu.threads, cpu.model.as_deref()),
                case.want,
                "case {}",
                case.name
            );
        }
    }

    #[test]
    fn parse_handles_missing_blank_lines() {
        let got = parse_cpuinfo("processor: 0\nphysical id: 3\nprocessor: 1\ncore id: 5\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got.first().and_then(|c| c.physical_id), Some(3));
        assert_eq!(got.get(1).and_then(|c| c.core_id), Some(5));
    }
}
