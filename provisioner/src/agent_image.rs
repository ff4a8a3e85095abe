//! The node agent as a second initramfs. The discovery initramfs is pinned by
//! hash in the manifest, but the agent changes with every build of the hub, so
//! the hub packs it at start: the `node-agent` binary next to its own (or the
//! one `[boot] node_agent` names) goes into a newc cpio archive served as
//! `/boot/node-agent.cpio`, which the discovery script loads after the
//! discovery initramfs (the kernel unpacks both). The bytes served are the
//! bytes hashed at start, like every other asset.
//!
//! The discovery image has no C library, so a dynamically linked agent is
//! refused here rather than failing on the machine.

use std::path::{Path, PathBuf};

/// HTTP path of the agent archive.
pub const AGENT_INITRD: &str = "/boot/node-agent.cpio";
/// Where the agent lands inside the discovery image.
pub const AGENT_PATH_IN_IMAGE: &str = "bin/node-agent";
/// Larger binaries are refused (the image is held in memory and sent to every machine).
const MAX_AGENT: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AgentImageError {
    #[error("reading the node agent {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path:?} is not an x86_64 ELF executable")]
    NotElf { path: PathBuf },
    #[error(
        "{path:?} is dynamically linked; the discovery image needs a static build (scripts/build-agent.sh)"
    )]
    Dynamic { path: PathBuf },
    #[error("{path:?} is larger than {MAX_AGENT} bytes")]
    TooLarge { path: PathBuf },
}

/// Whether an ELF64 little-endian x86_64 image has a PT_INTERP program header
/// (asks for a dynamic loader). `None` when it is not such an ELF file.
pub fn elf_interp(elf: &[u8]) -> Option<bool> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // ELFCLASS64, ELFDATA2LSB, EM_X86_64 (62).
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return None;
    }
    if u16_at(18)? != 62 {
        return None;
    }
    let phoff = usize::try_from(u64_at(32)?).ok()?;
    let phentsize = usize::from(u16_at(54)?);
    let phnum = usize::from(u16_at(56)?);
    if phentsize < 4 {
        return None;
    }
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        // PT_INTERP = 3.
        if u32_at(off)? == 3 {
            return Some(true);
        }
    }
    Some(false)
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn newc_entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime: fixed, so the archive is reproducible
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// A newc ("070701") cpio archive holding `bin/` and the agent at
/// `bin/node-agent`, mode 0755, owned by root, mtime 0.
pub fn newc_archive(agent: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(agent.len() + 512);
    newc_entry(&mut out, 1, 0o040755, "bin", &[]);
    newc_entry(&mut out, 2, 0o100755, AGENT_PATH_IN_IMAGE, agent);
    newc_entry(&mut out, 0, 0, "TRAILER!!!", &[]);
    // The kernel reads initramfs in 512-byte blocks; pad like cpio(1) does.
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
    out
}

/// Reads and checks the agent binary at `path`, returning its archive.
pub fn build(path: &Path) -> Result<Vec<u8>, AgentImageError> {
    let meta = std::fs::metadata(path).map_err(|source| AgentImageError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_AGENT {
        return Err(AgentImageError::TooLarge {
            path: path.to_owned(),
        });
    }
    let elf = std::fs::read(path).map_err(|source| AgentImageError::Read {
        path: path.to_owned(),
        source,
    })?;
    match elf_interp(&elf) {
        None => Err(AgentImageError::NotElf {
            path: path.to_owned(),
        }),
        Some(true) => Err(AgentImageError::Dynamic {
            path: path.to_owned(),
        }),
        Some(false) => Ok(newc_archive(&elf)),
    }
}

/// The agent binary to use: the configured one, else `node-agent` beside this
/// executable.
pub fn default_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("node-agent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_layout() {
        let a = newc_archive(b"hello");
        assert_eq!(a.len() % 512, 0);
        assert!(a.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("bin/node-agent\0"));
        assert!(text.contains("TRAILER!!!\0"));
        // The file's header: mode 0100755 and size 5.
        let at = text.find("bin/node-agent").expect("entry") - 110;
        assert_eq!(&text[at + 14..at + 22], "000081ED");
        assert_eq!(&text[at + 54..at + 62], "00000005");
        let data = text.find("hello").expect("data");
        assert_eq!(data % 4, 0, "data is 4-aligned");
    }

    #[test]
    fn elf_checks() {
        // This test binary is dynamically linked (the default for the gnu target).
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        assert_eq!(elf_interp(&me), Some(true));
        let cases: &[(&str, &[u8])] = &[
            ("empty", b""),
            ("text", b"#!/bin/sh\n"),
            ("truncated header", b"\x7fELF\x02\x01\x01\x00"),
        ];
        for (name, bytes) in cases {
            assert_eq!(elf_interp(bytes), None, "case {name}");
        }
        // A minimal static ELF: no program headers at all.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 62;
        elf[54] = 56;
        assert_eq!(elf_interp(&elf), Some(false));
        // Hostile program header counts never read out of bounds.
        elf[56] = 0xff;
        elf[57] = 0xff;
        elf[32] = 0xf0;
        assert_eq!(elf_interp(&elf), None);
    }
}
