//! host-local: ADD and DEL latency with few and with many existing allocations, ours against the
//! reference. The store is filled with files in the reference's format before timing starts, and
//! one untimed ADD/DEL lets each implementation settle (ours builds its index once).

use crate::exec::run_plugin;
use crate::stats::Samples;
use crate::table::Table;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

const POPULATIONS: [usize; 2] = [10, 10_000];

fn populate(store: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(store)?;
    let base = u32::from(Ipv4Addr::new(10, 200, 0, 2));
    for i in 0..n as u32 {
        let ip = Ipv4Addr::from(base + i);
        std::fs::write(store.join(ip.to_string()), format!("existing-{i}\r\neth0"))?;
    }
    std::fs::write(store.join("last_reserved_ip.0"), Ipv4Addr::from(base + n as u32 - 1).to_string())?;
    Ok(())
}

fn measure(plugin: &Path, population: usize, rounds: usize) -> anyhow::Result<(Samples, Samples)> {
    let dir = std::env::temp_dir().join(format!("cni-bench-hl-{}-{population}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    populate(&dir.join("bench"), population)?;
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "bench", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": dir.display().to_string(), "ranges": [[{"subnet": "10.200.0.0/16"}]]}
    })
    .to_string();
    let (mut adds, mut dels) = (Samples::default(), Samples::default());
    for round in 0..=rounds {
        let cid = format!("bench-{round}");
        let env = |cmd| {
            [
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", cid.as_str()),
                ("CNI_NETNS", "/n"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/"),
            ]
        };
        let add = run_plugin(plugin, &env("ADD"), &conf)?.took;
        let del = run_plugin(plugin, &env("DEL"), &conf)?.took;
        if round > 0 {
            adds.push(add);
            dels.push(del);
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok((adds, dels))
}

pub fn run(ours: &Path, reference: Option<&PathBuf>, rounds: usize, table: &mut Table) -> anyhow::Result<()> {
    for population in POPULATIONS {
        let (our_add, our_del) = measure(ours, population, rounds)?;
        let (ref_add, ref_del) = match reference {
            Some(r) => {
                let (a, d) = measure(r, population, rounds)?;
                (Some(a), Some(d))
            }
            None => (None, None),
        };
        table.latency(&format!("host-local ADD, {population} allocated"), &our_add, ref_add.as_ref());
        table.latency(&format!("host-local DEL, {population} allocated"), &our_del, ref_del.as_ref());
    }
    Ok(())
}
