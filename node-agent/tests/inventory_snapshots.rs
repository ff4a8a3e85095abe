//! Inventory over every captured fixture: JSON and text snapshots, fixture
//! round trips, identity helpers, hostile contents, and the live machine.
//!
//! Snapshots live next to the fixtures as `<name>.expected.json` and
//! `<name>.expected.txt`. A difference fails the test; run with
//! `UPDATE_SNAPSHOTS=1` to rewrite them, then review the diff.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use node_agent::inventory::fixture::Entry;
use node_agent::inventory::{self, Fixture, Recorder, RootSource, smbios};

/// Fixture directory. When this file moves into node-agent, point it at the new place.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/inventory");

/// Every fixture: `<name>.txt` that is not itself a snapshot.
fn fixtures() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let stem = name.strip_suffix(".txt")?;
            (!stem.contains(".expected")).then(|| (stem.to_string(), p.clone()))
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 4,
        "expected the host, QEMU and hand-written fixtures in {FIXTURES}"
    );
    out
}

fn load(path: &Path) -> Fixture {
    Fixture::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `got` with the snapshot file, or rewrites it under UPDATE_SNAPSHOTS=1.
/// Returns a description of the mismatch instead of failing, so one run reports all.
fn check_snapshot(path: &Path, got: &str) -> Option<String> {
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        fs::write(path, got).unwrap();
        return None;
    }
    let Ok(want) = fs::read_to_string(path) else {
        return Some(format!(
            "{}: missing (run with UPDATE_SNAPSHOTS=1)",
            path.display()
        ));
    };
    if want == got {
        return None;
    }
    let line = want
        .lines()
        .zip(got.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
    Some(format!(
        "{}: differs at line {}:\n  want: {:?}\n  got:  {:?}",
        path.display(),
        line + 1,
        want.lines().nth(line).unwrap_or("<end>"),
        got.lines().nth(line).unwrap_or("<end>")
    ))
}

#[test]
fn snapshots_match() {
    let mut failures = Vec::new();
    let mut expected_files = BTreeSet::new();
    for (name, path) in fixtures() {
        let inv = inventory::collect(&load(&path));
        let json = inventory::to_json(&inv).unwrap();
        let json_path = Path::new(FIXTURES).join(format!("{name}.expected.json"));
        let text_path = Path::new(FIXTURES).join(format!("{name}.expected.txt"));
        failures.extend(check_snapshot(&json_path, &json));
        failures.extend(check_snapshot(&text_path, &inventory::render_text(&inv)));
        assert_eq!(
            inventory::from_json(&json).unwrap(),
            inv,
            "{name}: JSON round trip"
        );
        expected_files.insert(json_path);
        expected_files.insert(text_path);
    }
    // A snapshot whose fixture is gone would otherwise rot unnoticed.
    for entry in fs::read_dir(FIXTURES).unwrap() {
        let p = entry.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        if n.contains(".expected.") && !expected_files.contains(&p) {
            failures.push(format!("{n}: snapshot without a fixture"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixtures_round_trip_and_replay() {
    for (name, path) in fixtures() {
        let fx = load(&path);
        let reparsed = Fixture::parse(&fx.render()).unwrap();
        assert_eq!(reparsed, fx, "{name}: render/parse round trip");
        // What the recorder saw while collecting is enough to collect again.
        let rec = Recorder::new(&fx);
        let first = inventory::collect(&rec);
        let replay = Fixture::parse(&rec.into_fixture(vec![]).render()).unwrap();
        assert_eq!(
            inventory::collect(&replay),
            first,
            "{name}: recorder replay"
        );
    }
}

#[test]
fn captured_smbios_tables_walk_to_the_end() {
    for (name, path) in fixtures() {
        let fx = load(&path);
        let Some(Entry::File(table)) = fx.entries.get("/sys/firmware/dmi/tables/DMI") else {
            continue;
        };
        let ep = match fx
            .entries
            .get("/sys/firmware/dmi/tables/smbios_entry_point")
        {
            Some(Entry::File(b)) => Some(b.as_slice()),
            _ => None,
        };
        let smb = smbios::decode(ep, table);
        assert_eq!(smb.stopped, None, "{name}: walk stopped early");
        assert!(smb.entry_point.is_some(), "{name}: entry point");
        let walk = smbios::walk(table);
        assert_eq!(
            walk.structures.last().map(|s| s.kind),
            Some(127),
            "{name}: ends with type 127"
        );
    }
}

#[test]
fn identities() {
    type Want = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        &'static [&'static str],
    );
    let cases: &[Want] = &[
        ("host-firecracker", None, None, &["02:fc:00:00:00:01"]),
        (
            "qemu-q35-ovmf",
            Some("8f1c6f0e-3b2a-4c5d-9e8f-0a1b2c3d4e5f"),
            Some("Q35-SERIAL-0001"),
            &["52:54:00:12:34:01", "52:54:00:12:34:02"],
        ),
        (
            "qemu-q35-ovmf-secureboot",
            Some("8f1c6f0e-3b2a-4c5d-9e8f-0a1b2c3d4e5f"),
            Some("Q35-SERIAL-0001"),
            &["52:54:00:12:34:01", "52:54:00:12:34:02"],
        ),
        // QEMU without -uuid writes an all-zero UUID ("not set") and an empty serial.
        ("qemu-pc-seabios", None, None, &["52:54:00:12:35:01"]),
        ("dell-r760-handwritten", None, None, &[]),
        ("hpe-dl380-gen11-handwritten", None, None, &[]),
    ];
    for (name, uuid, serial, macs) in cases {
        let inv = inventory::collect(&load(&Path::new(FIXTURES).join(format!("{name}.txt"))));
        let id = inv.identity();
        assert_eq!(id.uuid.as_deref(), *uuid, "{name}: uuid");
        assert_eq!(id.serial.as_deref(), *serial, "{name}: serial");
        assert_eq!(
            id.macs,
            macs.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "{name}: macs"
        );
    }
}

/// xorshift64*: deterministic, so a failing seed reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn hostile_contents_never_panic() {
    for (name, path) in fixtures() {
        let original = load(&path);
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ name.len() as u64);
            let mut fx = original.clone();
            for entry in fx.entries.values_mut() {
                match entry {
                    Entry::File(bytes) => match rng.below(4) {
                        // Truncate, flip bytes, replace with noise, or leave alone.
                        0 => bytes.truncate(rng.below(bytes.len() + 1)),
                        1 => {
                            for _ in 0..=rng.below(4) {
                                if !bytes.is_empty() {
                                    let i = rng.below(bytes.len());
                                    bytes[i] = rng.next() as u8;
                                }
                            }
                        }
                        2 => *bytes = (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
                        _ => {}
                    },
                    Entry::Link(target) if rng.below(4) == 0 => {
                        *target = ["", "/", "..", "../../x:y.z", "0000:00:00.0"][rng.below(5)]
                            .to_string();
                    }
                    _ => {}
                }
            }
            let inv = inventory::collect(&fx);
            let _ = inventory::render_text(&inv);
            let _ = inventory::to_json(&inv).unwrap();
            let _ = inv.identity();
        }
    }
}

#[test]
fn live_machine_collects_without_panic() {
    let inv = inventory::collect(&RootSource::new("/"));
    let text = inventory::render_text(&inv);
    assert!(text.contains("System:"), "{text}");
    let json = inventory::to_json(&inv).unwrap();
    assert_eq!(inventory::from_json(&json).unwrap(), inv);
    // A root that does not exist is just an empty machine.
    let none = inventory::collect(&RootSource::new("/nonexistent-inventory-root"));
    assert_eq!(none, inventory::empty());
}
