//! The floors a chain ADD or DEL cannot beat: the runtime's own cost (`cnitool` running the
//! loopback plugin alone) plus the kernel's cost to create or delete one veth pair between two
//! namespaces, timed with `ip`.

use crate::chain::Runner;
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
    let conflist = serde_json::json!({"cniVersion": "1.0.0", "name": "floor", "plugins": [{"type": "loopback"}]});
    let run = Runner::new("ours", "floor", "floor-c", plugin_dir, cnitool, work, &conflist)?;
    run.with_containers(0..1, || {
        let mut f = Floors::default();
        run.verb("add", 0)?;
        run.verb("del", 0)?;
        for _ in 0..rounds {
            f.cnitool_add.push(run.verb("add", 0)?);
            f.cnitool_del.push(run.verb("del", 0)?);
        }
        for _ in 0..rounds {
            f.veth_add.push(timed(
                Command::new("ip")
                    .args(["link", "add", "floor0", "type", "veth", "peer", "name", "eth0", "netns", "floor-c0"]),
            )?);
            f.veth_del.push(timed(Command::new("ip").args(["link", "del", "floor0"]))?);
        }
        Ok(f)
    })
}
