//! SMBIOS tests over handcrafted tables: one case per encoding rule of
//! DSP0134 we rely on, truncations at every byte, and random bytes.

use super::*;

/// One structure: header (type, length, handle) + formatted body + strings.
fn structure(kind: u8, handle: u16, body: &[u8], strings: &[&str]) -> Vec<u8> {
    let mut out = vec![kind, u8::try_from(4 + body.len()).unwrap()];
    out.extend_from_slice(&handle.to_le_bytes());
    out.extend_from_slice(body);
    for s in strings {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    if strings.is_empty() {
        out.push(0);
    }
    out.push(0);
    out
}

fn table(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = parts.concat();
    out.extend(structure(TYPE_END, 0xFFFF, &[], &[]));
    out
}

fn entry_point_3(major: u8, minor: u8, docrev: u8, len: u32) -> Vec<u8> {
    let mut ep = b"_SM3_".to_vec();
    ep.extend([0, 0x18, major, minor, docrev, 1, 0]);
    ep.extend(len.to_le_bytes());
    ep.extend(0x000F_0000u64.to_le_bytes());
    ep
}

fn entry_point_2(major: u8, minor: u8, len: u16) -> Vec<u8> {
    let mut ep = b"_SM_".to_vec();
    ep.extend([0, 0x1F, major, minor]);
    ep.extend([0u8; 8]); // max structure size, revision, formatted area
    ep.extend(b"_DMI_");
    ep.push(0); // intermediate checksum
    ep.extend(len.to_le_bytes());
    ep.extend(0x000F_0000u32.to_le_bytes());
    ep.extend(9u16.to_le_bytes());
    ep.push((major << 4) | minor);
    ep
}

/// A type 1 body: strings 1-4 for vendor/product/version/serial, the UUID,
/// wake-up type, then SKU (5) and family (6).
fn system_body(uuid: [u8; 16]) -> Vec<u8> {
    let mut b = vec![1, 2, 3, 4];
    b.extend(uuid);
    b.extend([6, 5, 6]);
    b
}

const UUID_BYTES: [u8; 16] = [
    0x44, 0x45, 0x4c, 0x4c, 0x42, 0x00, 0x10, 0x35, 0x80, 0x52, 0xb4, 0xc0, 0x4f, 0x4e, 0x4a, 0x32,
];

#[test]
fn entry_points() {
    let cases: &[(&str, Vec<u8>, Result<(u8, u8, u32, &str), SmbiosError>)] = &[
        (
            "3.0",
            entry_point_3(3, 0, 0, 0x1234),
            Ok((3, 0, 0x1234, "3.0.0")),
        ),
        ("3.5.1", entry_point_3(3, 5, 1, 10), Ok((3, 5, 10, "3.5.1"))),
        ("2.8", entry_point_2(2, 8, 0x0456), Ok((2, 8, 0x456, "2.8"))),
        (
            "legacy dmi",
            {
                let mut e = b"_DMI_".to_vec();
                e.extend([0, 0x20, 0x01, 0, 0, 0, 0, 0x05, 0, 0x21]);
                e
            },
            Ok((2, 1, 0x0120, "2.1")),
        ),
        (
            "3.0 truncated",
            entry_point_3(3, 0, 0, 1)[..20].to_vec(),
            Err(SmbiosError::EntryPointTruncated { len: 20, need: 24 }),
        ),
        (
            "2.x truncated",
            b"_SM_\0\x1f\x02\x08".to_vec(),
            Err(SmbiosError::EntryPointTruncated { len: 8, need: 31 }),
        ),
        (
            "garbage",
            b"hello world, this is not smbios".to_vec(),
            Err(SmbiosError::UnknownAnchor),
        ),
        ("empty", vec![], Err(SmbiosError::UnknownAnchor)),
    ];
    for (name, bytes, want) in cases {
        let got =
            parse_entry_point(bytes).map(|e| (e.major, e.minor, e.table_len, e.version_string()));
        let want = want.clone().map(|(a, b, c, d)| (a, b, c, d.to_string()));
        assert_eq!(got, want, "case {name}");
    }
}

#[test]
fn walk_stops_safely() {
    let good = table(&[structure(
        0,
        0,
        &[1, 2, 0, 0, 3],
        &["Vendor", "1.0", "01/01/2024"],
    )]);
    let cases: &[(&str, Vec<u8>, usize, Option<SmbiosError>)] = &[
        ("well formed", good.clone(), 2, None),
        (
            "no strings",
            table(&[structure(32, 1, &[0; 7], &[])]),
            2,
            None,
        ),
        ("missing end", good[..good.len() - 6].to_vec(), 1, None),
        (
            "trailing garbage after end",
            [good.clone(), vec![0xde, 0xad, 0xbe, 0xef, 1, 2]].concat(),
            2,
            None,
        ),
        (
            "short length",
            vec![1, 3, 0, 0, 0, 0],
            0,
            Some(SmbiosError::ShortStructure {
                offset: 0,
                length: 3,
            }),
        ),
        (
            "formatted past end",
            vec![1, 0x1b, 0, 0, 1, 2],
            0,
            Some(SmbiosError::StructureTruncated { offset: 0 }),
        ),
        (
            "unterminated strings",
            vec![0, 4, 0, 0, b'a', 0, b'b'],
            0,
            Some(SmbiosError::UnterminatedStrings { offset: 0 }),
        ),
        (
            "strings end at table end",
            vec![0, 4, 0, 0, b'a', 0],
            0,
            Some(SmbiosError::UnterminatedStrings { offset: 0 }),
        ),
        (
            "zero padding",
            [good[..good.len() - 6].to_vec(), vec![0; 16]].concat(),
            1,
            Some(SmbiosError::ShortStructure {
                offset: good.len() - 6,
                length: 0,
            }),
        ),
        ("three bytes", vec![1, 2, 3], 0, None),
        ("empty", vec![], 0, None),
    ];
    for (name, bytes, count, stopped) in cases {
        let w = walk(bytes);
        assert_eq!(w.structures.len(), *count, "case {name}: structures");
        assert_eq!(&w.stopped, stopped, "case {name}: stopped");
    }
}

#[test]
fn strings_by_number() {
    let bytes = structure(
        2,
        7,
        &[1, 3, 0, 9],
        &["Board Co", "To Be Filled By O.E.M.", "  v2 \0"],
    );
    let w = walk(&bytes);
    let s = w.structures.first().unwrap();
    assert_eq!(s.handle, 7);
    let cases: &[(&str, usize, Option<&str>)] = &[
        ("first", 4, Some("Board Co")),
        ("third, trimmed", 5, Some("v2")),
        ("zero means none", 6, None),
        ("past the set", 7, None),
        ("past the structure", 8, None),
    ];
    for (name, offset, want) in cases {
        assert_eq!(s.string(*offset).as_deref(), *want, "case {name}");
    }
    let placeholder = structure(2, 7, &[1, 2], &["Board Co", "To Be Filled By O.E.M."]);
    assert_eq!(
        decode(None, &placeholder).baseboard.unwrap().product,
        None,
        "placeholder string"
    );
}

#[test]
fn placeholders() {
    let cases: &[(&str, Option<&str>)] = &[
        ("PowerEdge R760", Some("PowerEdge R760")),
        ("  HPE ", Some("HPE")),
        ("Not Specified", None),
        ("to be filled by o.e.m.", None),
        ("Default string", None),
        ("", None),
        ("\0\0", None),
        ("None of the above", Some("None of the above")),
    ];
    for (raw, want) in cases {
        assert_eq!(firmware_string(raw).as_deref(), *want, "case {raw:?}");
    }
}

#[test]
fn system_uuid_byte_order() {
    let cases: &[(&str, Option<Vec<u8>>, [u8; 16], Option<&str>)] = &[
        (
            "3.0 is little endian",
            Some(entry_point_3(3, 0, 0, 0)),
            UUID_BYTES,
            Some("4c4c4544-0042-3510-8052-b4c04f4e4a32"),
        ),
        (
            "2.6 is little endian",
            Some(entry_point_2(2, 6, 0)),
            UUID_BYTES,
            Some("4c4c4544-0042-3510-8052-b4c04f4e4a32"),
        ),
        (
            "2.5 is network order",
            Some(entry_point_2(2, 5, 0)),
            UUID_BYTES,
            Some("44454c4c-4200-1035-8052-b4c04f4e4a32"),
        ),
        (
            "no entry point: 2.6+ rule",
            None,
            UUID_BYTES,
            Some("4c4c4544-0042-3510-8052-b4c04f4e4a32"),
        ),
        (
            "garbage entry point: 2.6+ rule",
            Some(b"junk".to_vec()),
            UUID_BYTES,
            Some("4c4c4544-0042-3510-8052-b4c04f4e4a32"),
        ),
        ("all zero: not set", None, [0; 16], None),
        ("all ff: not present", None, [0xFF; 16], None),
    ];
    for (name, ep, uuid, want) in cases {
        let t = table(&[structure(
            1,
            1,
            &system_body(*uuid),
            &[
                "Dell Inc.",
                "PowerEdge R760",
                "1.0",
                "ABC1234",
                "SKU=0A6B",
                "PowerEdge",
            ],
        )]);
        let smb = decode(ep.as_deref(), &t);
        let sys = smb.system.unwrap();
        assert_eq!(sys.uuid.as_deref(), *want, "case {name}");
        assert_eq!(sys.vendor.as_deref(), Some("Dell Inc."), "case {name}");
        assert_eq!(sys.serial.as_deref(), Some("ABC1234"), "case {name}");
        assert_eq!(sys.sku.as_deref(), Some("SKU=0A6B"), "case {name}");
        assert_eq!(sys.family.as_deref(), Some("PowerEdge"), "case {name}");
    }
    // A 2.0 structure (8 bytes of formatted area) has no UUID, SKU or family.
    let short = table(&[structure(1, 1, &[1, 2, 0, 0], &["QEMU", "Standard PC"])]);
    let sys = decode(None, &short).system.unwrap();
    assert_eq!(
        (sys.product.as_deref(), sys.uuid, sys.sku),
        (Some("Standard PC"), None, None)
    );
}

/// A type 17 body up to offset 0x5C (SMBIOS 3.3+): size word at 0Ch,
/// extended size at 1Ch, speeds at 15h/20h and 54h/58h.
fn memory_body(size: u16, ext: u32, kind: u8, speed: u16, ext_speed: u32) -> Vec<u8> {
    let mut f = [0u8; 0x5C];
    f[0x0C..0x0E].copy_from_slice(&size.to_le_bytes());
    f[0x0E] = 0x09; // DIMM
    f[0x10] = 1; // locator
    f[0x11] = 2; // bank locator
    f[0x12] = kind;
    f[0x15..0x17].copy_from_slice(&speed.to_le_bytes());
    f[0x17] = 3; // manufacturer
    f[0x18] = 4; // serial
    f[0x1A] = 5; // part number
    f[0x1C..0x20].copy_from_slice(&ext.to_le_bytes());
    f[0x20..0x22].copy_from_slice(&speed.to_le_bytes());
    f[0x54..0x58].copy_from_slice(&ext_speed.to_le_bytes());
    f[0x58..0x5C].copy_from_slice(&ext_speed.to_le_bytes());
    f[4..].to_vec() // the builder adds the 4-byte header
}

#[test]
fn memory_device_sizes_and_speeds() {
    const MIB: u64 = 1 << 20;
    let cases: &[(
        &str,
        u16,
        u32,
        u8,
        u16,
        u32,
        Option<Option<u64>>,
        Option<&str>,
        Option<u32>,
    )] = &[
        ("empty slot", 0, 0, 0x1A, 0, 0, None, None, None),
        (
            "unknown size",
            0xFFFF,
            0,
            0x1A,
            2933,
            0,
            Some(None),
            Some("DDR4"),
            Some(2933),
        ),
        (
            "16 GiB in MiB",
            16384,
            0,
            0x1A,
            3200,
            0,
            Some(Some(16384 * MIB)),
            Some("DDR4"),
            Some(3200),
        ),
        (
            "512 KiB",
            0x8000 | 512,
            0,
            0x07,
            0,
            0,
            Some(Some(512 * 1024)),
            Some("RAM"),
            None,
        ),
        (
            "extended 64 GiB",
            0x7FFF,
            65536,
            0x22,
            4800,
            0,
            Some(Some(65536 * MIB)),
            Some("DDR5"),
            Some(4800),
        ),
        (
            "extended reserved bit",
            0x7FFF,
            0x8000_0000 | 32768,
            0x22,
            4800,
            0,
            Some(Some(32768 * MIB)),
            Some("DDR5"),
            Some(4800),
        ),
        (
            "extended zero",
            0x7FFF,
            0,
            0x22,
            4800,
            0,
            Some(None),
            Some("DDR5"),
            Some(4800),
        ),
        (
            "extended speed",
            0x7FFF,
            131072,
            0x22,
            0xFFFF,
            8800,
            Some(Some(131072 * MIB)),
            Some("DDR5"),
            Some(8800),
        ),
        (
            "unknown type code",
            16384,
            0,
            0x02,
            0,
            0,
            Some(Some(16384 * MIB)),
            None,
            None,
        ),
        (
            "reserved type code",
            16384,
            0,
            0x16,
            0,
            0,
            Some(Some(16384 * MIB)),
            None,
            None,
        ),
        (
            "type past the table",
            16384,
            0,
            0xEE,
            0,
            0,
            Some(Some(16384 * MIB)),
            None,
            None,
        ),
    ];
    for &(name, size, ext, kind, speed, ext_speed, want_size, want_kind, want_speed) in cases {
        let body = memory_body(size, ext, kind, speed, ext_speed);
        let t = table(&[structure(
            17,
            0x1100,
            &body,
            &[
                "DIMM A1",
                "P0 CHANNEL A",
                "Samsung",
                "0x1234ABCD",
                "M393A2K43DB3-CWE",
            ],
        )]);
        let slot = decode(None, &t).memory_slots.into_iter().next().unwrap();
        assert_eq!(
            slot.as_ref().map(|d| d.size_bytes),
            want_size,
            "case {name}: size"
        );
        let Some(d) = slot else { continue };
        assert_eq!(d.kind.as_deref(), want_kind, "case {name}: type");
        assert_eq!(d.speed_mts, want_speed, "case {name}: speed");
        assert_eq!(
            d.configured_speed_mts, want_speed,
            "case {name}: configured speed"
        );
        assert_eq!(d.locator.as_deref(), Some("DIMM A1"), "case {name}");
        assert_eq!(d.form_factor.as_deref(), Some("DIMM"), "case {name}");
        assert_eq!(
            d.part_number.as_deref(),
            Some("M393A2K43DB3-CWE"),
            "case {name}"
        );
        assert_eq!(d.serial.as_deref(), Some("0x1234ABCD"), "case {name}");
    }
    // An SMBIOS 2.1 type 17 (15h bytes) stops before speed and manufacturer.
    let body = memory_body(8192, 0, 0x12, 400, 0);
    let t = table(&[structure(17, 1, &body[..0x15 - 4], &["DIMM0"])]);
    let d = decode(None, &t)
        .memory_slots
        .into_iter()
        .next()
        .flatten()
        .unwrap();
    assert_eq!(
        (d.size_bytes, d.kind.as_deref(), d.speed_mts, d.manufacturer),
        (Some(8192 * MIB), Some("DDR"), None, None)
    );
}

#[test]
fn processors() {
    let body = |status: u8, cores: u8, threads: u8, cores2: u16, threads2: u16| {
        let mut f = [0u8; 0x30];
        f[0x04] = 1; // socket designation
        f[0x05] = 3; // central processor
        f[0x07] = 2; // manufacturer
        f[0x10] = 3; // version
        f[0x14..0x16].copy_from_slice(&4000u16.to_le_bytes());
        f[0x18] = status;
        f[0x23] = cores;
        f[0x25] = threads;
        f[0x2A..0x2C].copy_from_slice(&cores2.to_le_bytes());
        f[0x2E..0x30].copy_from_slice(&threads2.to_le_bytes());
        f[4..].to_vec()
    };
    let cases: &[(&str, Vec<u8>, bool, Option<u32>, Option<u32>)] = &[
        (
            "populated 32c/64t",
            body(0x41, 32, 64, 32, 64),
            true,
            Some(32),
            Some(64),
        ),
        ("empty socket", body(0x00, 0, 0, 0, 0), false, None, None),
        (
            "3.0 counts above 255",
            body(0x41, 0xFF, 0xFF, 288, 576),
            true,
            Some(288),
            Some(576),
        ),
        (
            "0xff without 3.0 field",
            body(0x41, 0xFF, 0xFF, 0, 0),
            true,
            None,
            None,
        ),
        (
            "2.0 structure",
            body(0x41, 8, 16, 0, 0)[..0x1A - 4].to_vec(),
            true,
            None,
            None,
        ),
    ];
    for (name, b, populated, cores, threads) in cases {
        let t = table(&[structure(
            4,
            0x400,
            b,
            &["CPU1", "Intel(R) Corporation", "Intel(R) Xeon(R) Gold 6430"],
        )]);
        let p = decode(None, &t).processors.into_iter().next().unwrap();
        assert_eq!(
            (p.populated, p.cores, p.threads),
            (*populated, *cores, *threads),
            "case {name}"
        );
        assert_eq!(p.socket.as_deref(), Some("CPU1"), "case {name}");
        assert_eq!(p.max_speed_mhz, Some(4000), "case {name}");
    }
}

#[test]
fn chassis_types() {
    let cases: &[(&str, u8, Option<u8>, Option<&str>)] = &[
        ("rack mount", 0x17, Some(23), Some("Rack Mount Chassis")),
        (
            "lock bit ignored",
            0x80 | 0x17,
            Some(23),
            Some("Rack Mount Chassis"),
        ),
        ("other", 0x01, Some(1), Some("Other")),
        ("unknown has no name", 0x02, Some(2), None),
        ("zero", 0x00, None, None),
        ("past the table", 0x7E, Some(0x7E), None),
    ];
    for (name, code, want_code, want_name) in cases {
        let t = table(&[structure(
            3,
            0x300,
            &[1, *code, 0, 2, 0],
            &["Dell Inc.", "ABC1234"],
        )]);
        let c = decode(None, &t).chassis.unwrap();
        assert_eq!(
            (c.type_code, c.type_name.as_deref()),
            (*want_code, *want_name),
            "case {name}"
        );
        assert_eq!(
            (c.vendor.as_deref(), c.serial.as_deref()),
            (Some("Dell Inc."), Some("ABC1234")),
            "case {name}"
        );
    }
}

#[test]
fn ipmi_devices() {
    let body = |kind: u8, rev: u8, base: u64, modifier: Option<u8>| {
        let mut b = vec![kind, rev, 0x20, 0xFF];
        b.extend(base.to_le_bytes());
        if let Some(m) = modifier {
            b.extend([m, 0]);
        }
        b
    };
    let cases: &[(
        &str,
        Vec<u8>,
        Option<&str>,
        Option<&str>,
        Option<&str>,
        Option<&str>,
    )] = &[
        (
            "kcs io 0xca2",
            body(1, 0x20, 0xCA3, None),
            Some("kcs"),
            Some("2.0"),
            Some("0xca2"),
            Some("io"),
        ),
        (
            "kcs io, lsb from modifier",
            body(1, 0x20, 0xCA3, Some(0x10)),
            Some("kcs"),
            Some("2.0"),
            Some("0xca3"),
            Some("io"),
        ),
        (
            "bt memory",
            body(3, 0x15, 0xFED4_0000, Some(0)),
            Some("bt"),
            Some("1.5"),
            Some("0xfed40000"),
            Some("memory"),
        ),
        (
            "ssif",
            body(4, 0x20, 0x10, None),
            Some("ssif"),
            Some("2.0"),
            Some("0x10"),
            None,
        ),
        (
            "unknown interface",
            body(0, 0, 0, None),
            None,
            None,
            None,
            Some("memory"),
        ),
        (
            "truncated",
            vec![1, 0x20],
            Some("kcs"),
            Some("2.0"),
            None,
            None,
        ),
    ];
    for (name, b, interface, rev, base, space) in cases {
        let t = table(&[structure(38, 0x2600, b, &[])]);
        let d = decode(None, &t).ipmi.into_iter().next().unwrap();
        assert_eq!(
            (
                d.interface.as_deref(),
                d.spec_version.as_deref(),
                d.base_address.as_deref(),
                d.address_space.as_deref()
            ),
            (*interface, *rev, *base, *space),
            "case {name}"
        );
    }
}

/// A type 42 body: network host interface with `device` data, then records.
fn host_interface_body(device: &[u8], records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut b = vec![0x40, u8::try_from(device.len()).unwrap()];
    b.extend_from_slice(device);
    b.push(u8::try_from(records.len()).unwrap());
    for (protocol, data) in records {
        b.push(*protocol);
        b.push(u8::try_from(data.len()).unwrap());
        b.extend_from_slice(data);
    }
    b
}

/// DSP0270 table 8 with an IPv4 service address.
fn redfish_over_ip(addr: [u8; 4], port: u16, vlan: u32, hostname: &str) -> Vec<u8> {
    let mut d = vec![0u8; 91];
    d[16] = 1; // host IP assignment: static
    d[17] = 1; // host address format: IPv4
    d[18..22].copy_from_slice(&[169, 254, 0, 2]);
    d[50] = 1; // service discovery: static
    d[51] = 1; // service address format: IPv4
    d[52..56].copy_from_slice(&addr);
    d[84..86].copy_from_slice(&port.to_le_bytes());
    d[86..90].copy_from_slice(&vlan.to_le_bytes());
    d[90] = u8::try_from(hostname.len()).unwrap();
    d.extend_from_slice(hostname.as_bytes());
    d
}

#[test]
fn redfish_host_interfaces() {
    let usb = [0x02, 0x6b, 0x1d, 0x01, 0x01];
    let v6 = {
        let mut d = redfish_over_ip([0; 4], 443, 0, "");
        d[51] = 2;
        d[52..68].copy_from_slice(&"fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        d
    };
    type Want = Vec<(
        Option<&'static str>,
        Option<&'static str>,
        Option<u16>,
        Option<u32>,
        Option<&'static str>,
    )>;
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "usb, v4, port, vlan, hostname",
            host_interface_body(
                &usb,
                &[(
                    0x04,
                    redfish_over_ip([169, 254, 0, 17], 443, 5, "bmc.local"),
                )],
            ),
            vec![(
                Some("usb"),
                Some("169.254.0.17"),
                Some(443),
                Some(5),
                Some("bmc.local"),
            )],
        ),
        (
            "v6",
            host_interface_body(&[0x03, 0, 0, 0, 0, 0, 0, 0, 0], &[(0x04, v6)]),
            vec![(Some("pci"), Some("fe80::1"), Some(443), None, None)],
        ),
        (
            "no redfish record",
            host_interface_body(&usb, &[(0x02, vec![1, 2, 3])]),
            vec![(Some("usb"), None, None, None, None)],
        ),
        (
            "two records, ipmi first",
            host_interface_body(
                &usb,
                &[
                    (0x02, vec![1]),
                    (0x04, redfish_over_ip([10, 0, 0, 1], 8443, 0, "")),
                ],
            ),
            vec![(Some("usb"), Some("10.0.0.1"), Some(8443), None, None)],
        ),
        (
            "record longer than the structure",
            {
                let mut b = host_interface_body(
                    &usb,
                    &[(0x04, redfish_over_ip([10, 0, 0, 1], 443, 0, ""))],
                );
                b.truncate(b.len() - 10);
                b
            },
            vec![(Some("usb"), None, None, None, None)],
        ),
        (
            "no device data",
            host_interface_body(&[], &[]),
            vec![(None, None, None, None, None)],
        ),
        (
            "interface type only",
            vec![0x40],
            vec![(None, None, None, None, None)],
        ),
    ];
    for (name, body, want) in cases {
        let t = table(&[structure(42, 0x2A00, &body, &[])]);
        let smb = decode(None, &t);
        let got: Vec<_> = smb
            .redfish
            .iter()
            .map(|r| {
                (
                    r.device_type.as_deref(),
                    r.service_address.as_deref(),
                    r.service_port,
                    r.service_vlan,
                    r.service_hostname.as_deref(),
                )
            })
            .collect();
        assert_eq!(got, want, "case {name}");
    }
}

#[test]
fn tpm_devices() {
    let cases: &[(&str, Vec<u8>, Option<&str>, Option<&str>)] = &[
        (
            "infineon 2.0",
            [b"IFX\0".to_vec(), vec![2, 0], vec![0; 8], vec![1]].concat(),
            Some("IFX"),
            Some("2.0"),
        ),
        (
            "1.2",
            [b"STM ".to_vec(), vec![1, 2]].concat(),
            Some("STM"),
            Some("1.2"),
        ),
        (
            "binary vendor",
            [vec![1, 2, 3, 4], vec![2, 0]].concat(),
            None,
            Some("2.0"),
        ),
        ("truncated", b"IF".to_vec(), None, None),
    ];
    for (name, body, vendor, version) in cases {
        let t = table(&[structure(43, 0x2B00, body, &["TPM 2.0"])]);
        let got = decode(None, &t).tpm.into_iter().next().unwrap();
        assert_eq!(
            (got.vendor.as_deref(), got.spec_version.as_deref()),
            (*vendor, *version),
            "case {name}"
        );
    }
}

/// A table with one of every decoded type, for the truncation and fuzz tests.
fn full_table() -> Vec<u8> {
    table(&[
        structure(0, 0, &[1, 2, 0, 0, 3, 0], &["Vendor", "1.0", "01/01/2024"]),
        structure(
            1,
            1,
            &system_body(UUID_BYTES),
            &[
                "Dell Inc.",
                "PowerEdge R760",
                "1.0",
                "ABC1234",
                "SKU",
                "Fam",
            ],
        ),
        structure(2, 2, &[1, 2, 0, 0, 0], &["Dell Inc.", "0A6B"]),
        structure(3, 3, &[1, 0x17, 0, 0, 0], &["Dell Inc."]),
        structure(
            17,
            0x11,
            &memory_body(0x7FFF, 65536, 0x22, 4800, 0),
            &["A1", "B", "M", "S", "P"],
        ),
        structure(
            38,
            0x26,
            &[1, 0x20, 0x20, 0xFF, 0xA3, 0x0C, 0, 0, 0, 0, 0, 0],
            &[],
        ),
        structure(
            42,
            0x2A,
            &host_interface_body(
                &[2, 1, 2, 3, 4],
                &[(4, redfish_over_ip([169, 254, 0, 1], 443, 0, "bmc"))],
            ),
            &[],
        ),
        structure(43, 0x2B, &[b'I', b'F', b'X', 0, 2, 0], &["TPM"]),
    ])
}

#[test]
fn every_truncation_decodes_a_prefix() {
    let full = full_table();
    let complete = decode(Some(&entry_point_3(3, 0, 0, 0)), &full);
    assert!(complete.stopped.is_none());
    assert_eq!(
        complete
            .redfish
            .first()
            .and_then(|r| r.service_address.as_deref()),
        Some("169.254.0.1")
    );
    for cut in 0..full.len() {
        let smb = decode(None, &full[..cut]);
        // Structures are all-or-nothing: a cut one is dropped, never half-read.
        if let Some(sys) = smb.system {
            assert_eq!(sys.serial.as_deref(), Some("ABC1234"), "cut at {cut}");
        }
    }
}

/// xorshift64*: deterministic, so a failure reproduces from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_never_panic() {
    let full = full_table();
    let types = [0u8, 1, 2, 3, 4, 17, 38, 42, 43, 127];
    for seed in 1..=3000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Pure noise.
        let len = rng.below(600);
        let noise = rng.bytes(len);
        let ep_len = rng.below(40);
        let ep = rng.bytes(ep_len);
        let _ = decode(Some(&ep), &noise);
        let _ = parse_entry_point(&noise);
        // Noise shaped like structures of the decoded types, so decoders see it.
        let mut shaped = Vec::new();
        for _ in 0..rng.below(6) {
            let kind = types[rng.below(types.len())];
            let body_len = rng.below(120);
            let body = rng.bytes(body_len);
            let mut s = vec![kind, u8::try_from((body.len() + 4).min(255)).unwrap(), 0, 0];
            s.extend(body);
            let strings_len = rng.below(8);
            s.extend(rng.bytes(strings_len));
            s.extend([0, 0]);
            shaped.extend(s);
        }
        let _ = decode(None, &shaped);
        // A valid table with a few bytes flipped.
        let mut mutated = full.clone();
        for _ in 0..=rng.below(8) {
            let i = rng.below(mutated.len());
            mutated[i] = rng.next() as u8;
        }
        let _ = decode(Some(&entry_point_2(2, 3, 0)), &mutated);
    }
}
