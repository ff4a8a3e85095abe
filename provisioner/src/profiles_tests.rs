//! Matching and disk choice, as tables.

use super::*;

fn facts(vendor: &str, product: &str, disks: &[(&str, u64, &str, &str, &str)]) -> Facts {
    Facts {
        system: SystemFacts {
            vendor: Some(vendor.to_owned()),
            product: Some(product.to_owned()),
        },
        disks: disks
            .iter()
            .map(|&(name, size, model, transport, serial)| DiskFacts {
                name: name.to_owned(),
                size_bytes: Some(size),
                model: (!model.is_empty()).then(|| model.to_owned()),
                serial: (!serial.is_empty()).then(|| serial.to_owned()),
                transport: Some(transport.to_owned()),
                ..DiskFacts::default()
            })
            .collect(),
        firmware: FirmwareFacts::default(),
    }
}

const GB: u64 = 1_000_000_000;

#[test]
fn every_shipped_profile_parses_and_every_file_is_shipped() {
    let profiles = Profiles::shipped().unwrap();
    assert_eq!(profiles.all.len(), 5);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".toml"))
        .collect();
    files.sort();
    let mut shipped: Vec<String> = SHIPPED.iter().map(|(f, _)| (*f).to_owned()).collect();
    shipped.sort();
    assert_eq!(files, shipped, "every hw-profiles/*.toml is embedded");
    for p in &profiles.all {
        p.patches().unwrap();
    }
}

#[test]
fn the_most_specific_profile_wins() {
    let profiles = Profiles::shipped().unwrap();
    let cases = [
        ("Dell Inc.", "PowerEdge R760", "dell-poweredge-r760"),
        ("Dell Inc.", "PowerEdge R660", "dell-poweredge-r660"),
        ("HPE", "ProLiant DL360 Gen11", "hpe-proliant-dl360-gen11"),
        ("QEMU", "Standard PC (Q35 + ICH9, 2009)", "qemu"),
        ("QEMU", "Standard PC (i440FX + PIIX, 1996)", "qemu"),
        ("Dell Inc.", "PowerEdge R750", "generic-x86_64"),
        ("HPE", "ProLiant DL380 Gen11", "generic-x86_64"),
        ("Supermicro", "SYS-1029P", "generic-x86_64"),
        ("dell inc.", "PowerEdge R760", "generic-x86_64"),
    ];
    for (vendor, product, want) in cases {
        let got = profiles.matching(&facts(vendor, product, &[])).unwrap();
        assert_eq!(got.name, want, "{vendor} / {product}");
    }
    // No SMBIOS at all (a Firecracker VM): generic.
    assert_eq!(
        profiles.matching(&Facts::default()).unwrap().name,
        "generic-x86_64"
    );
}

fn local(name: &str, vendor: &str, product: &str) -> Profile {
    let mut p = Profiles::shipped()
        .unwrap()
        .by_name("generic-x86_64")
        .unwrap()
        .clone();
    p.name = name.to_owned();
    p.selector = Selector {
        sys_vendor: Some(vendor.to_owned()),
        product_name: Some(product.to_owned()),
    };
    p
}

#[test]
fn a_tie_is_an_error_naming_both_profiles() {
    let mut profiles = Profiles::shipped().unwrap();
    profiles
        .all
        .push(local("my-r760", "Dell Inc.", "PowerEdge R760"));
    let err = profiles
        .matching(&facts("Dell Inc.", "PowerEdge R760", &[]))
        .unwrap_err();
    assert_eq!(
        err,
        ProfileError::Tie("dell-poweredge-r760".into(), "my-r760".into())
    );
    assert!(err.to_string().contains("dell-poweredge-r760") && err.to_string().contains("my-r760"));
    // A glob is less specific than the exact name: no tie.
    let mut profiles = Profiles::shipped().unwrap();
    profiles
        .all
        .push(local("all-r7", "Dell Inc.", "PowerEdge R7*"));
    assert_eq!(
        profiles
            .matching(&facts("Dell Inc.", "PowerEdge R760", &[]))
            .unwrap()
            .name,
        "dell-poweredge-r760"
    );
    assert_eq!(
        profiles
            .matching(&facts("Dell Inc.", "PowerEdge R750", &[]))
            .unwrap()
            .name,
        "all-r7"
    );
}

#[test]
fn vendor_boot_devices_are_chosen_and_pinned_by_serial() {
    let profiles = Profiles::shipped().unwrap();
    let r760 = facts(
        "Dell Inc.",
        "PowerEdge R760",
        &[
            (
                "nvme0n1",
                960 * GB,
                "Dell BOSS-N1",
                "nvme",
                "CN0WW56VFCP0049K01Y0",
            ),
            ("nvme1n1", 3840 * GB, "Dell Ent NVMe CM6", "nvme", "S1"),
            ("sda", 1920 * GB, "PERC H965i", "sas", "S2"),
        ],
    );
    let p = profiles.matching(&r760).unwrap();
    let choice = p.choose_disk(&r760).unwrap();
    assert_eq!(choice.device, "/dev/nvme0n1");
    assert_eq!(
        choice.selector.serial.as_deref(),
        Some("CN0WW56VFCP0049K01Y0")
    );
    let dl360 = facts(
        "HPE",
        "ProLiant DL360 Gen11",
        &[(
            "nvme0n1",
            480 * GB,
            "HPE NS204i-u Gen11 Boot Controller",
            "nvme",
            "PYWWA0A6KMN2UA",
        )],
    );
    let choice = profiles
        .matching(&dl360)
        .unwrap()
        .choose_disk(&dl360)
        .unwrap();
    assert_eq!(choice.device, "/dev/nvme0n1");
}

#[test]
fn zero_or_several_candidate_disks_refuse_the_install() {
    let profiles = Profiles::shipped().unwrap();
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, u64, &'a str, &'a str, &'a str)],
        usize,
    );
    let cases: &[Case] = &[
        // BOSS in non-RAID mode: two drives of their own model, no "Dell BOSS-N1".
        (
            "Dell Inc.",
            "PowerEdge R760",
            &[
                ("nvme0n1", 480 * GB, "MTFDKBA480TFR", "nvme", "a"),
                ("nvme1n1", 480 * GB, "MTFDKBA480TFR", "nvme", "b"),
            ],
            0,
        ),
        // Old-generation BOSS (SATA "DELLBOSS VD"): not certified.
        (
            "Dell Inc.",
            "PowerEdge R760",
            &[("sda", 480 * GB, "DELLBOSS VD", "sata", "c")],
            0,
        ),
        // A generic box with two disks: the operator must choose.
        (
            "Acme",
            "Box",
            &[
                ("sda", 500 * GB, "X", "sata", "d"),
                ("sdb", 500 * GB, "Y", "sata", "e"),
            ],
            2,
        ),
        // QEMU with a virtio disk too small for Talos.
        (
            "QEMU",
            "Standard PC (Q35 + ICH9, 2009)",
            &[("vda", 512 << 20, "", "virtio", "")],
            0,
        ),
    ];
    for (vendor, product, disks, count) in cases {
        let f = facts(vendor, product, disks);
        let err = profiles.matching(&f).unwrap().choose_disk(&f).unwrap_err();
        assert!(
            matches!(err, ProfileError::Disk { count: c, .. } if c == *count),
            "{vendor} {product}: {err}"
        );
    }
}

#[test]
fn a_disk_without_serial_is_pinned_by_wwid_then_name() {
    let profiles = Profiles::shipped().unwrap();
    let mut f = facts(
        "QEMU",
        "Standard PC (Q35 + ICH9, 2009)",
        &[("vda", 8 << 30, "", "virtio", "")],
    );
    let c = profiles.matching(&f).unwrap().choose_disk(&f).unwrap();
    assert_eq!(c.selector.name.as_deref(), Some("/dev/vda"));
    f.disks[0].wwid = Some("eui.1234".into());
    let c = profiles.matching(&f).unwrap().choose_disk(&f).unwrap();
    assert_eq!(c.selector.wwid.as_deref(), Some("eui.1234"));
}

#[test]
fn inventory_json_from_the_agent_feeds_matching() {
    let json: serde_json::Value = serde_json::from_str(include_str!(
        "../../node-agent/tests/fixtures/inventory/dell-r760-handwritten.expected.json"
    ))
    .unwrap();
    let f = Facts::from_inventory(&json);
    let profiles = Profiles::shipped().unwrap();
    let p = profiles.matching(&f).unwrap();
    assert_eq!(p.name, "dell-poweredge-r760");
    // The hand-written capture has no size: the 2TB bound cannot be checked.
    assert!(p.choose_disk(&f).is_err());
}

#[test]
fn broken_profiles_are_refused_with_the_reason() {
    let good = SHIPPED[1].1;
    let cases = [
        (
            good.replace("transport = [\"nvme\"]", "transport = [\"floppy\"]"),
            "transport",
        ),
        (
            good.replace("max_size = \"2TB\"", "max_size = \"big\""),
            "size",
        ),
        (
            good.replace("kind = \"idrac9\"", "kind = \"drac5\""),
            "bmc kind",
        ),
        (
            good.replace(
                "machine:\n  nodeLabels:\n",
                "- op: add\n  path: /machine/nodeLabels\n  value:\n",
            ),
            "JSON6902",
        ),
        (good.replace("[nics]", "[nics]\nextra = 1"), "unknown field"),
        (
            good.replace("name = \"dell-poweredge-r760\"", "name = \"Dell R760\""),
            "name",
        ),
    ];
    for (text, want) in cases {
        let err = Profile::parse("x.toml", &text).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn local_profiles_replace_shipped_ones_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = SHIPPED[4]
        .1
        .replace("min_size = \"1GiB\"", "min_size = \"2GiB\"");
    std::fs::write(dir.path().join("qemu.toml"), text).unwrap();
    let profiles = Profiles::load(Some(dir.path())).unwrap();
    assert_eq!(profiles.all.len(), 5);
    assert_eq!(
        profiles
            .by_name("qemu")
            .unwrap()
            .boot_disk
            .min_size
            .as_deref(),
        Some("2GiB")
    );
    std::fs::write(dir.path().join("bad.toml"), "name = 1").unwrap();
    assert!(Profiles::load(Some(dir.path())).is_err());
}

#[test]
fn globs_and_sizes() {
    assert!(glob("Dell BOSS-N1*", "Dell BOSS-N1"));
    assert!(glob("HPE NS204i*", "HPE NS204i-u Gen11 Boot Controller"));
    assert!(glob("Standard PC*", "Standard PC (Q35 + ICH9, 2009)"));
    assert!(glob("a?c", "abc") && !glob("a?c", "abbc") && glob("*", ""));
    assert!(!glob("Dell BOSS-N1*", "DELLBOSS VD"));
    assert_eq!(parse_size("2TB"), Some(2_000_000_000_000));
    assert_eq!(parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse_size("99999999999999TB"), None);
    assert_eq!(parse_size("x"), None);
}
