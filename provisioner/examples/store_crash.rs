//! Measures how long the embedded store takes to open after a crash.
//!
//! `store_crash fill DIR N`: commits N leases (batches of 500, fsync each), prints
//! `filled`, then keeps rewriting leases until killed (so the kill lands mid-commit).
//! `store_crash open DIR`: opens the store, loads every lease, prints the time taken.
//! `bench/store-reopen.sh` drives it with `kill -9`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Instant;

use provisioner::dhcp::decide::Change;
use provisioner::dhcp::leases::{ClientKey, Lease, LeaseState};
use provisioner::store::{EmbeddedStore, Store};

fn lease(i: u32, expires: u64) -> Lease {
    let b = i.to_be_bytes();
    Lease {
        addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i),
        key: ClientKey::hw(1, &[2, 0, b[0], b[1], b[2], b[3]]),
        htype: 1,
        chaddr: vec![2, 0, b[0], b[1], b[2], b[3]],
        hostname: Some(format!("node-{i}")),
        state: LeaseState::Bound,
        starts: 1_700_000_000,
        expires,
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("fill") => {
            let dir = Path::new(&args[2]);
            let n: u32 = args[3].parse()?;
            let mut store = EmbeddedStore::open(dir)?;
            for start in (0..n).step_by(500) {
                let batch: Vec<Change> = (start..(start + 500).min(n))
                    .map(|i| Change::PutLease(lease(i, 1_800_000_000)))
                    .collect();
                store.commit(&batch)?;
            }
            println!("filled");
            let mut round = 0u64;
            loop {
                round += 1;
                let batch: Vec<Change> = (0..200)
                    .map(|j| {
                        Change::PutLease(lease(
                            ((round * 200 + j) % u64::from(n)) as u32,
                            1_800_000_000 + round,
                        ))
                    })
                    .collect();
                store.commit(&batch)?;
            }
        }
        Some("open") => {
            let dir = Path::new(&args[2]);
            let t = Instant::now();
            let store = EmbeddedStore::open(dir)?;
            let opened = t.elapsed();
            let loaded = store.load()?;
            let total = t.elapsed();
            println!(
                "open_ms={:.1} open_and_load_ms={:.1} leases={} skipped={}",
                opened.as_secs_f64() * 1e3,
                total.as_secs_f64() * 1e3,
                loaded.leases.len(),
                loaded.skipped
            );
            Ok(())
        }
        _ => anyhow::bail!("usage: store_crash fill DIR N | store_crash open DIR"),
    }
}
