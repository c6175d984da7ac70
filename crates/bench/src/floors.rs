//! The floors a chain ADD or DEL cannot beat: the runtime's own cost (`cnitool` running the
//! loopback plugin alone) plus the kernel's cost to create or delete one veth pair between two
//! namespaces, timed with `ip`.

use crate::chain::{netns_add, netns_del};
use crate::stats::Samples;
use anyhow::Context;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Floors {
    pub cnitool_add: Samples,
    pub cnitool_del: Samples,
    pub veth_add: Samples,
    pub veth_del: Samples,
}

impl Floors {
    pub fn add(&self) -> Duration {
        self.cnitool_add.median() + self.veth_add.median()
    }

    pub fn del(&self) -> Duration {
        self.cnitool_del.median() + self.veth_del.median()
    }
}

fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(started.elapsed())
}

pub fn measure(plugin_dir: &Path, cnitool: &Path, work: &Path, rounds: usize) -> anyhow::Result<Floors> {
    let conf_dir = work.join("net.d-floor");
    std::fs::create_dir_all(&conf_dir)?;
    std::fs::write(
        conf_dir.join("floor.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "floor", "plugins": [{"type": "loopback"}]}"#,
    )?;
    netns_add("floor-c")?;
    let outcome = (|| {
        let mut f = Floors::default();
        let cni = |verb: &str| {
            timed(
                Command::new(cnitool)
                    .args([verb, "floor", "/run/netns/floor-c"])
                    .env("CNI_PATH", plugin_dir)
                    .env("NETCONFPATH", &conf_dir),
            )
        };
        cni("add")?;
        cni("del")?;
        for _ in 0..rounds {
            f.cnitool_add.push(cni("add")?);
            f.cnitool_del.push(cni("del")?);
        }
        for _ in 0..rounds {
            f.veth_add.push(timed(
                Command::new("ip")
                    .args(["link", "add", "floor0", "type", "veth", "peer", "name", "eth0", "netns", "floor-c"]),
            )?);
            f.veth_del.push(timed(Command::new("ip").args(["link", "del", "floor0"]))?);
        }
        Ok(f)
    })();
    netns_del("floor-c");
    outcome
}
