//! Installing Talos onto the disk the hub chose, without Talos's installer:
//!
//! 1. stream the Talos disk image (`metal-amd64.raw`, or `.raw.zst`) from the
//!    hub's HTTP server onto the disk, hashing the bytes as served;
//! 2. build the STATE filesystem (xfs, label `STATE`, `config.yaml` at its
//!    root) in a temporary file with `mkfs.xfs -p` (no mount needed);
//! 3. add the STATE partition after the image's last one, move the backup GPT
//!    to the disk's end, write STATE, then the backup table, then the primary;
//! 4. read the table and STATE back and compare.
//!
//! Talos counts a disk with META as installed (it skips its installer), and
//! reads its machine config from STATE's `config.yaml` first.
//!
//! Blocking; the agent runs it on a blocking thread and relays `Progress`.

pub mod gpt;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use gpt::{Gpt, LINUX_FS, SECTOR};

/// GPT name of the partition Talos reads its config from.
pub const STATE: &str = "STATE";
const CHUNK: usize = 1 << 20;
/// Partition alignment (1 MiB).
const ALIGN: u64 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("no disk matches the plan ({0})")]
    NoDisk(String),
    #[error("disk {device}: {why}")]
    Disk { device: String, why: String },
    #[error("downloading {url}: {why}")]
    Download { url: String, why: String },
    #[error(
        "the image's sha256 {got} (size {size}) is not the hub's {want}; the disk's partition table was wiped"
    )]
    ImageHash {
        got: String,
        want: String,
        size: u64,
    },
    #[error("the image is not a GPT disk image: {0}")]
    Table(#[from] gpt::GptError),
    #[error("building STATE: {0}")]
    State(String),
    #[error("read back: {0}")]
    Verify(String),
    #[error("I/O on {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> InstallError {
    move |source| InstallError::Io { what, source }
}

/// What the hub asked for (from `proto::v1::InstallPlan`).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub disk: String,
    pub serial: String,
    pub wwid: String,
    pub size_bytes: u64,
    /// `http://ip:port/path` of the image.
    pub image_url: String,
    pub image_sha256: String,
    pub image_size: u64,
    pub zstd: bool,
    pub state_size: u64,
}

/// Progress for the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Image { percent: u32 },
    Config,
}

/// What was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub device: PathBuf,
    pub config_sha256: String,
    pub image_bytes: u64,
    pub state: gpt::Partition,
}

/// The device to write: the inventory's disk with the plan's serial (else
/// WWID, else name), and the planned size. The plan's name alone is not
/// trusted when a serial or WWID exists: kernel names move between boots.
pub fn resolve(
    plan: &Plan,
    inventory: &serde_json::Value,
    dev_dir: &Path,
) -> Result<PathBuf, InstallError> {
    let disks = inventory["disks"].as_array().cloned().unwrap_or_default();
    let field = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or("").trim().to_owned();
    let found = disks.iter().find(|d| {
        if !plan.serial.is_empty() {
            field(d, "serial") == plan.serial
        } else if !plan.wwid.is_empty() {
            field(d, "wwid") == plan.wwid
        } else {
            field(d, "name") == plan.disk
        }
    });
    let describe = || {
        format!(
            "name {}, serial {:?}, wwid {:?}",
            plan.disk, plan.serial, plan.wwid
        )
    };
    let d = found.ok_or_else(|| InstallError::NoDisk(describe()))?;
    let size = d["size_bytes"].as_u64().unwrap_or(0);
    if plan.size_bytes != 0 && size != plan.size_bytes {
        return Err(InstallError::NoDisk(format!(
            "{}: the disk is {size} bytes, the plan says {}",
            describe(),
            plan.size_bytes
        )));
    }
    let name = field(d, "name");
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(InstallError::NoDisk(describe()));
    }
    Ok(dev_dir.join(name))
}

/// A blocking HTTP/1.1 GET that insists on `200` and a Content-Length.
/// Returns the length and the body.
pub fn http_get(url: &str, timeout: Duration) -> Result<(u64, impl Read), InstallError> {
    let err = |why: String| InstallError::Download {
        url: url.to_owned(),
        why,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err("not an http:// URL".into()))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority
        .parse()
        .or_else(|_| format!("{authority}:80").parse())
        .map_err(|_| err("the host must be an IP address".into()))?;
    let path = if path.is_empty() { "/" } else { path };
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| err(e.to_string()))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| err(e.to_string()))?;
    // One write: `write!` on the bare stream would send the request in pieces.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    let mut r = BufReader::with_capacity(CHUNK, tcp);
    let mut status = String::new();
    let mut length = None;
    let mut header_bytes = 0usize;
    loop {
        let mut line = String::new();
        let n = (&mut r)
            .take(8192)
            .read_line(&mut line)
            .map_err(|e| err(e.to_string()))?;
        header_bytes += n;
        if n == 0 || header_bytes > 32 * 1024 {
            return Err(err("truncated or oversized response head".into()));
        }
        let line = line.trim_end();
        if status.is_empty() {
            status = line.to_owned();
            continue;
        }
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                length = v.trim().parse::<u64>().ok();
            } else if k == "transfer-encoding" {
                return Err(err(format!("unsupported transfer-encoding {}", v.trim())));
            }
        }
    }
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return Err(err(status));
    }
    let length = length.ok_or_else(|| err("no Content-Length".into()))?;
    Ok((length, r.take(length)))
}

/// Counts and hashes what passes through; the count is shared so that
/// progress can follow the served bytes through a decompressor.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// A random (version 4) GUID in on-disk layout.
fn random_guid() -> [u8; 16] {
    let mut g = [0u8; 16];
    // Unique, not secret: a failing RNG is vanishingly unlikely and would
    // only make the partition GUID predictable.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut g);
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

/// Opens the target: exclusively for a block device (fails while mounted).
fn open_disk(device: &Path) -> Result<(File, u64), InstallError> {
    let disk_err = |why: String| InstallError::Disk {
        device: device.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(device).map_err(|e| disk_err(e.to_string()))?;
    let block = meta.file_type().is_block_device();
    if !block && !meta.is_file() {
        return Err(disk_err("neither a block device nor a file".into()));
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if block {
        opts.custom_flags(nix::libc::O_EXCL);
    }
    let mut f = opts
        .open(device)
        .map_err(|e| disk_err(format!("open: {e} (in use or mounted?)")))?;
    if block {
        let mut ssz: nix::libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one int through the pointer we own.
        let r =
            unsafe { nix::libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), BLKSSZGET, &mut ssz) };
        if r == 0 && ssz as u64 != SECTOR {
            return Err(disk_err(format!(
                "{ssz}-byte logical sectors; Talos disk images are 512-byte"
            )));
        }
    }
    let size = f
        .seek(SeekFrom::End(0))
        .map_err(|e| disk_err(e.to_string()))?;
    Ok((f, size))
}

const BLKSSZGET: nix::libc::c_ulong = 0x1268;
const BLKRRPART: nix::libc::c_ulong = 0x125f;

fn write_at(f: &mut File, at: u64, bytes: &[u8]) -> Result<(), InstallError> {
    f.seek(SeekFrom::Start(at)).map_err(io("disk seek"))?;
    f.write_all(bytes).map_err(io("disk write"))
}

fn read_at(f: &mut File, at: u64, len: usize) -> Result<Vec<u8>, InstallError> {
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(at)).map_err(io("disk seek"))?;
    f.read_exact(&mut buf).map_err(io("disk read"))?;
    Ok(buf)
}

/// Builds the STATE filesystem image (`size` bytes) holding `config` as
/// `config.yaml` (mode 0600), in `dir`, with `mkfs.xfs -p`.
pub fn state_image(dir: &Path, config: &[u8], size: u64) -> Result<PathBuf, InstallError> {
    let st = |why: String| InstallError::State(why);
    let cfg = dir.join("config.yaml");
    let proto = dir.join("state.proto");
    let img = dir.join("state.img");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&cfg)
        .map_err(|e| st(e.to_string()))?;
    f.write_all(config).map_err(|e| st(e.to_string()))?;
    let cfg_path = cfg
        .to_str()
        .filter(|p| !p.contains(char::is_whitespace))
        .ok_or_else(|| st("temporary path has spaces".into()))?;
    // mkfs.xfs protofile: boot image, block/inode counts, root dir, one file.
    std::fs::write(
        &proto,
        format!("/dev/null\n0 0\nd--755 0 0\nconfig.yaml ---600 0 0 {cfg_path}\n$\n"),
    )
    .map_err(|e| st(e.to_string()))?;
    File::create(&img)
        .and_then(|f| f.set_len(size))
        .map_err(|e| st(e.to_string()))?;
    let out = Command::new("mkfs.xfs")
        .args([
            "-q",
            "-f",
            "-n",
            "ftype=1",
            "-L",
            STATE,
            "--unsupported",
            "-p",
        ])
        .arg(&proto)
        .arg(&img)
        .output()
        .map_err(|e| st(format!("running mkfs.xfs: {e} (the image needs xfsprogs)")))?;
    if !out.status.success() {
        return Err(st(format!(
            "mkfs.xfs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(img)
}

/// Installs onto `device`. `progress` hears about the image (by percent of
/// bytes served) and the config step.
pub fn install(
    plan: &Plan,
    config: &[u8],
    device: &Path,
    work: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, InstallError> {
    let (mut disk, disk_bytes) = open_disk(device)?;
    let dev = device.display().to_string();
    let disk_err = |why: String| InstallError::Disk {
        device: dev.clone(),
        why,
    };
    let sectors = disk_bytes / SECTOR;
    let reserve = plan.state_size + 2 * ALIGN * SECTOR + 34 * SECTOR;
    if disk_bytes < reserve + 64 * SECTOR {
        return Err(disk_err(format!("{disk_bytes} bytes is too small")));
    }
    // Build STATE first: if mkfs.xfs is missing, nothing is overwritten.
    let state_img = state_image(work, config, plan.state_size)?;

    // 1. The image.
    let (served, body) = http_get(&plan.image_url, Duration::from_secs(60))?;
    if served != plan.image_size {
        return Err(InstallError::Download {
            url: plan.image_url.clone(),
            why: format!("{served} bytes served, the plan says {}", plan.image_size),
        });
    }
    let served_count = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let mut hashing = Hashing {
        inner: body,
        hash: Sha256::new(),
        count: served_count.clone(),
    };
    let mut source: Box<dyn Read + '_> = if plan.zstd {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(&mut hashing)
                .map_err(|e| disk_err(format!("zstd: {e}")))?,
        )
    } else {
        Box::new(&mut hashing)
    };
    disk.seek(SeekFrom::Start(0)).map_err(io("disk seek"))?;
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    let mut last_pct = 0;
    loop {
        let n = source.read(&mut buf).map_err(|e| InstallError::Download {
            url: plan.image_url.clone(),
            why: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written + reserve > disk_bytes {
            return Err(disk_err(format!(
                "the image does not fit with a {} MiB STATE",
                plan.state_size >> 20
            )));
        }
        disk.write_all(&buf[..n]).map_err(io("disk write"))?;
        let pct = ((served_count.get() * 100) / plan.image_size.max(1)) as u32;
        if pct >= last_pct + 10 {
            last_pct = pct;
            progress(Progress::Image {
                percent: pct.min(99),
            });
        }
    }
    drop(source);
    let got = proto::hex::encode(&hashing.hash.finalize_reset());
    if !got.eq_ignore_ascii_case(&plan.image_sha256) || served_count.get() != plan.image_size {
        // Do not leave a half-trusted table behind.
        let _ = write_at(&mut disk, 0, &vec![0u8; 34 * SECTOR as usize]);
        let _ = disk.sync_all();
        return Err(InstallError::ImageHash {
            got,
            want: plan.image_sha256.clone(),
            size: served_count.get(),
        });
    }
    progress(Progress::Image { percent: 100 });
    if !written.is_multiple_of(SECTOR) {
        return Err(disk_err(format!(
            "the image is {written} bytes, not whole sectors"
        )));
    }

    // 2. The table: the image's, moved to the disk's end, plus STATE.
    progress(Progress::Config);
    let head = read_at(&mut disk, 0, 34 * SECTOR as usize)?;
    let mut table = Gpt::parse(&head)?;
    let image_sectors = written / SECTOR;
    table.fit_disk(sectors);
    let unique = random_guid();
    let state = table.add(
        STATE,
        LINUX_FS,
        unique,
        plan.state_size.div_ceil(SECTOR),
        ALIGN,
    )?;
    // The image's own backup table is now garbage in the middle of the disk.
    if image_sectors >= 33 && (image_sectors - 33) * SECTOR + 33 * SECTOR <= state.offset() {
        write_at(
            &mut disk,
            (image_sectors - 33) * SECTOR,
            &vec![0u8; 33 * SECTOR as usize],
        )?;
    }
    // 3. STATE, then the tables (backup first, primary last).
    let mut img = File::open(&state_img).map_err(io("STATE image"))?;
    let mut state_hash = Sha256::new();
    disk.seek(SeekFrom::Start(state.offset()))
        .map_err(io("disk seek"))?;
    loop {
        let n = img.read(&mut buf).map_err(io("STATE image"))?;
        if n == 0 {
            break;
        }
        state_hash.update(&buf[..n]);
        disk.write_all(&buf[..n]).map_err(io("disk write"))?;
    }
    let state_len = img.metadata().map_err(io("STATE image"))?.len();
    for (at, bytes) in table.writes(&head[..SECTOR as usize]) {
        write_at(&mut disk, at, &bytes)?;
    }
    disk.sync_all().map_err(io("disk sync"))?;

    // 4. Read back.
    let head = read_at(&mut disk, 0, 34 * SECTOR as usize)?;
    let back = Gpt::parse(&head).map_err(|e| InstallError::Verify(e.to_string()))?;
    if back != table {
        return Err(InstallError::Verify("the partition table differs".into()));
    }
    let mut reread = Sha256::new();
    disk.seek(SeekFrom::Start(state.offset()))
        .map_err(io("disk seek"))?;
    let mut left = state_len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        disk.read_exact(&mut buf[..n]).map_err(io("disk read"))?;
        reread.update(&buf[..n]);
        left -= n as u64;
    }
    if reread.finalize() != state_hash.finalize() {
        return Err(InstallError::Verify(
            "STATE differs from what was written".into(),
        ));
    }
    // Let the kernel see the new table (best effort: it may be busy).
    // SAFETY: BLKRRPART takes no argument.
    let _ = unsafe { nix::libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&disk), BLKRRPART, 0) };
    let _ = std::fs::remove_file(&state_img);
    Ok(Installed {
        device: device.to_owned(),
        config_sha256: proto::hex::encode(&Sha256::digest(config)),
        image_bytes: written,
        state,
    })
}
