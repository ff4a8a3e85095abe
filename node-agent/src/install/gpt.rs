//! GUID partition tables (UEFI spec §5.3), pure: parse the primary table a
//! disk image carries, add a partition, move the backup table to the end of
//! a larger disk (what `sgdisk -e` does), and encode every sector that
//! changes. 512-byte logical sectors only.
//!
//! A disk image's table describes the image: its backup header sits at the
//! image's last sector and its last usable LBA stops there. Written to a
//! bigger disk, both must move to the disk's end, or firmware and Talos see
//! a damaged table.

pub const SECTOR: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_SIZE: usize = 92;
const ENTRY_SIZE: usize = 128;
/// Sectors of a partition entry array of 128 entries.
const ENTRY_SECTORS: u64 = 32;

/// Linux filesystem data, the type Talos gives its STATE partition.
pub const LINUX_FS: [u8; 16] = guid_bytes(
    0x0FC6_3DAF,
    0x8483,
    0x4772,
    [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
);

/// A GUID in its on-disk (mixed-endian) layout.
pub const fn guid_bytes(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    #[error("no GPT header at LBA 1 (not a GPT disk image)")]
    NoHeader,
    #[error("GPT header: {0}")]
    Header(&'static str),
    #[error("GPT header CRC mismatch")]
    HeaderCrc,
    #[error("GPT partition entries CRC mismatch")]
    EntriesCrc,
    #[error("a partition named {0} already exists")]
    Exists(String),
    #[error("no free partition entry")]
    Full,
    #[error(
        "the disk is too small: the new partition would end at LBA {end}, the last usable is {last}"
    )]
    TooSmall { end: u64, last: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl Partition {
    pub fn is_used(&self) -> bool {
        self.type_guid != [0; 16]
    }

    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    pub fn len(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }

    pub fn is_empty(&self) -> bool {
        self.last_lba < self.first_lba
    }
}

/// A parsed table: the fields we keep, and every entry slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: [u8; 16],
    pub first_usable: u64,
    pub last_usable: u64,
    /// The backup header's LBA (the disk's or the image's last sector).
    pub alternate_lba: u64,
    pub entries: Vec<Partition>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn decode_name(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

impl Gpt {
    /// Parses the protective MBR + primary header + entries: the first
    /// `34 * 512` bytes of a disk (LBA 0 to 33).
    pub fn parse(head: &[u8]) -> Result<Gpt, GptError> {
        let need = ((2 + ENTRY_SECTORS) * SECTOR) as usize;
        if head.len() < need {
            return Err(GptError::NoHeader);
        }
        let h = &head[SECTOR as usize..2 * SECTOR as usize];
        if &h[..8] != SIGNATURE {
            return Err(GptError::NoHeader);
        }
        let size = u32_at(h, 12) as usize;
        if size != HEADER_SIZE {
            return Err(GptError::Header("header size is not 92"));
        }
        let mut check = h[..HEADER_SIZE].to_vec();
        check[16..20].fill(0);
        if crc32fast::hash(&check) != u32_at(h, 16) {
            return Err(GptError::HeaderCrc);
        }
        if u64_at(h, 24) != 1 {
            return Err(GptError::Header("primary header not at LBA 1"));
        }
        let entries_lba = u64_at(h, 72);
        let count = u32_at(h, 80) as usize;
        let entry_size = u32_at(h, 84) as usize;
        if entries_lba != 2 || entry_size != ENTRY_SIZE || count == 0 || count > 128 {
            return Err(GptError::Header(
                "entries must be 1 to 128 of 128 bytes at LBA 2",
            ));
        }
        let start = 2 * SECTOR as usize;
        let raw = &head[start..start + count * ENTRY_SIZE];
        if crc32fast::hash(raw) != u32_at(h, 88) {
            return Err(GptError::EntriesCrc);
        }
        let mut disk_guid = [0u8; 16];
        disk_guid.copy_from_slice(&h[56..72]);
        let entries = raw
            .chunks_exact(ENTRY_SIZE)
            .map(|e| {
                let mut type_guid = [0u8; 16];
                let mut unique_guid = [0u8; 16];
                type_guid.copy_from_slice(&e[..16]);
                unique_guid.copy_from_slice(&e[16..32]);
                Partition {
                    type_guid,
                    unique_guid,
                    first_lba: u64_at(e, 32),
                    last_lba: u64_at(e, 40),
                    attributes: u64_at(e, 48),
                    name: decode_name(&e[56..128]),
                }
            })
            .collect();
        let gpt = Gpt {
            disk_guid,
            first_usable: u64_at(h, 40),
            last_usable: u64_at(h, 48),
            alternate_lba: u64_at(h, 32),
            entries,
        };
        if gpt.first_usable < 2 + ENTRY_SECTORS || gpt.last_usable < gpt.first_usable {
            return Err(GptError::Header("usable range"));
        }
        Ok(gpt)
    }

    pub fn find(&self, name: &str) -> Option<&Partition> {
        self.entries.iter().find(|p| p.is_used() && p.name == name)
    }

    /// Moves the table's end to the end of a disk of `sectors` sectors.
    pub fn fit_disk(&mut self, sectors: u64) {
        self.alternate_lba = sectors - 1;
        self.last_usable = sectors - 2 - ENTRY_SECTORS;
    }

    /// Adds a partition of `size` sectors after the last one, its start
    /// aligned to `align` sectors. Returns it.
    pub fn add(
        &mut self,
        name: &str,
        type_guid: [u8; 16],
        unique_guid: [u8; 16],
        size: u64,
        align: u64,
    ) -> Result<Partition, GptError> {
        if self.find(name).is_some() {
            return Err(GptError::Exists(name.to_owned()));
        }
        let after = self
            .entries
            .iter()
            .filter(|p| p.is_used())
            .map(|p| p.last_lba + 1)
            .max()
            .unwrap_or(self.first_usable)
            .max(self.first_usable);
        let first = after.div_ceil(align) * align;
        let last = first + size - 1;
        if last > self.last_usable {
            return Err(GptError::TooSmall {
                end: last,
                last: self.last_usable,
            });
        }
        let slot = self
            .entries
            .iter_mut()
            .find(|p| !p.is_used())
            .ok_or(GptError::Full)?;
        *slot = Partition {
            type_guid,
            unique_guid,
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: name.to_owned(),
        };
        Ok(slot.clone())
    }

    fn entries_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; ENTRY_SECTORS as usize * SECTOR as usize];
        for (e, p) in out.chunks_exact_mut(ENTRY_SIZE).zip(&self.entries) {
            e[..16].copy_from_slice(&p.type_guid);
            e[16..32].copy_from_slice(&p.unique_guid);
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (i, u) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        out
    }

    fn header(&self, my_lba: u64, other_lba: u64, entries_lba: u64, entries: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&other_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        let count = self.entries.len() as u32;
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        let used = &entries[..self.entries.len() * ENTRY_SIZE];
        h[88..92].copy_from_slice(&crc32fast::hash(used).to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Every write that puts this table on disk, `(byte offset, bytes)`, in
    /// a safe order: the backup (entries, header) first, the primary last.
    /// `mbr` is the current LBA 0: its protective partition is resized, its
    /// boot code kept.
    pub fn writes(&self, mbr: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let entries = self.entries_bytes();
        let backup_entries = self.alternate_lba.saturating_sub(ENTRY_SECTORS);
        let backup = self.header(self.alternate_lba, 1, backup_entries, &entries);
        let primary = self.header(1, self.alternate_lba, 2, &entries);
        let mut out = vec![
            (backup_entries * SECTOR, entries.clone()),
            (self.alternate_lba * SECTOR, backup),
            (2 * SECTOR, entries),
            (SECTOR, primary),
        ];
        if let Some(mbr) = protective_mbr(mbr, self.alternate_lba + 1) {
            out.push((0, mbr));
        }
        out
    }
}

/// LBA 0 with its protective (0xEE) partition covering a disk of `sectors`,
/// boot code untouched; `None` when it has no such partition.
pub fn protective_mbr(mbr: &[u8], sectors: u64) -> Option<Vec<u8>> {
    if mbr.len() < SECTOR as usize || mbr[510] != 0x55 || mbr[511] != 0xAA {
        return None;
    }
    let mut out = mbr[..SECTOR as usize].to_vec();
    let size = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    let mut found = false;
    for i in 0..4 {
        let e = 446 + 16 * i;
        if out[e + 4] == 0xEE {
            out[e + 12..e + 16].copy_from_slice(&size.to_le_bytes());
            found = true;
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small image table like Talos's: four partitions, 128 slots.
    fn image(sectors: u64) -> (Vec<u8>, Gpt) {
        let mut parts = vec![
            Partition {
                type_guid: [0; 16],
                unique_guid: [0; 16],
                first_lba: 0,
                last_lba: 0,
                attributes: 0,
                name: String::new(),
            };
            128
        ];
        for (i, (name, first, last)) in [
            ("EFI", 2048u64, 4095u64),
            ("BIOS", 4096, 6143),
            ("BOOT", 6144, 10239),
            ("META", 10240, 12287),
        ]
        .into_iter()
        .enumerate()
        {
            parts[i] = Partition {
                type_guid: LINUX_FS,
                unique_guid: [i as u8 + 1; 16],
                first_lba: first,
                last_lba: last,
                attributes: 0,
                name: name.into(),
            };
        }
        let gpt = Gpt {
            disk_guid: [7; 16],
            first_usable: 34,
            last_usable: sectors - 34,
            alternate_lba: sectors - 1,
            entries: parts,
        };
        let mut mbr = vec![0u8; 512];
        mbr[..4].copy_from_slice(b"BOOT");
        mbr[446 + 4] = 0xEE;
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        let mut disk = vec![0u8; (sectors * SECTOR) as usize];
        for (at, bytes) in gpt.writes(&mbr) {
            disk[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        (disk, gpt)
    }

    #[test]
    fn guid_layout_is_mixed_endian() {
        assert_eq!(
            LINUX_FS,
            [
                0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
                0x7D, 0xE4
            ]
        );
    }

    #[test]
    fn round_trip_add_and_move_to_a_bigger_disk() {
        let (img, gpt) = image(16384);
        let parsed = Gpt::parse(&img[..34 * 512]).unwrap();
        assert_eq!(parsed, gpt);
        assert_eq!(parsed.find("META").unwrap().last_lba, 12287);

        // The image on a 4x bigger disk, plus STATE.
        let sectors = 65536;
        let mut disk = img.clone();
        disk.resize((sectors * SECTOR) as usize, 0);
        let mut g = parsed.clone();
        g.fit_disk(sectors);
        let state = g.add("STATE", LINUX_FS, [9; 16], 20480, 2048).unwrap();
        assert_eq!(state.first_lba, 12288, "aligned after META");
        assert_eq!(state.last_lba, 12288 + 20480 - 1);
        for (at, bytes) in g.writes(&disk[..512]) {
            disk[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        let again = Gpt::parse(&disk[..34 * 512]).unwrap();
        assert_eq!(again, g);
        assert_eq!(again.alternate_lba, sectors - 1);
        assert_eq!(again.last_usable, sectors - 34);
        // The backup header at the last sector points back at LBA 1, and
        // its entries are the same bytes.
        let last = &disk[((sectors - 1) * SECTOR) as usize..];
        assert_eq!(&last[..8], SIGNATURE);
        assert_eq!(u64_at(last, 24), sectors - 1);
        assert_eq!(u64_at(last, 32), 1);
        assert_eq!(u64_at(last, 72), sectors - 33);
        let be = ((sectors - 33) * SECTOR) as usize;
        assert_eq!(disk[be..be + 16384], disk[1024..1024 + 16384]);
        // The protective MBR now covers the disk; its boot code stayed.
        assert_eq!(&disk[..4], b"BOOT");
        assert_eq!(u32_at(&disk, 446 + 12), (sectors - 1) as u32);
        // Adding it twice is refused; so is a partition past the end.
        assert_eq!(
            g.add("STATE", LINUX_FS, [1; 16], 8, 8),
            Err(GptError::Exists("STATE".into()))
        );
        assert!(matches!(
            g.add("HUGE", LINUX_FS, [1; 16], sectors, 2048),
            Err(GptError::TooSmall { .. })
        ));
    }

    #[test]
    fn damaged_tables_are_refused() {
        let (img, _) = image(16384);
        let head = &img[..34 * 512];
        assert_eq!(Gpt::parse(&head[..1000]), Err(GptError::NoHeader));
        let mut bad = head.to_vec();
        bad[512 + 40] ^= 1;
        assert_eq!(Gpt::parse(&bad), Err(GptError::HeaderCrc));
        let mut bad = head.to_vec();
        bad[1024 + 60] ^= 1;
        assert_eq!(Gpt::parse(&bad), Err(GptError::EntriesCrc));
        assert_eq!(Gpt::parse(&vec![0u8; 34 * 512]), Err(GptError::NoHeader));
        // Random bytes never panic.
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..500 {
            let mut b = head.to_vec();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % b.len();
                b[at] = (x >> 32) as u8;
            }
            let _ = Gpt::parse(&b);
        }
    }
}
