//! The chain a runtime runs for a Docker-style bridge network with one published port
//! (bridge + host-local + portmap), driven through the real `cnitool`, for one plugin set.
//!
//! Containers are `ip netns` namespaces made before timing starts; `cnitool` names each
//! attachment after its netns path, so every container is a distinct attachment.

use crate::stats::Samples;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One plugin set under test, with its own network, bridge, subnet and host ports so the two sets
/// never share state in one run.
pub struct Chain {
    pub label: &'static str,
    pub plugin_dir: PathBuf,
    pub cnitool: PathBuf,
    pub conf_dir: PathBuf,
    network: String,
    port_base: u32,
}

/// The timings of one set.
#[derive(Default)]
pub struct ChainResults {
    pub seq_add: Samples,
    pub seq_del: Samples,
    pub concurrent_add: Duration,
    pub concurrent_del: Duration,
    /// (population, ADD samples, DEL samples)
    pub growth: Vec<(usize, Samples, Samples)>,
}

pub fn netns_add(name: &str) -> anyhow::Result<()> {
    let status = Command::new("ip").args(["netns", "add", name]).status().context("running ip netns add")?;
    anyhow::ensure!(status.success(), "ip netns add {name} failed");
    Ok(())
}

pub fn netns_del(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

impl Chain {
    pub fn new(
        label: &'static str,
        index: u32,
        plugin_dir: &Path,
        cnitool: &Path,
        work: &Path,
    ) -> anyhow::Result<Chain> {
        let conf_dir = work.join(format!("net.d-{label}"));
        std::fs::create_dir_all(&conf_dir)?;
        let network = format!("bench{index}");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0", "name": network,
            "plugins": [
                {"type": "bridge", "bridge": format!("cni-bench{index}"), "isGateway": true, "ipMasq": true,
                 "ipam": {"type": "host-local", "dataDir": work.join(format!("ipam-{label}")).display().to_string(),
                          "ranges": [[{"subnet": format!("10.{}.0.0/16", 90 + index)}]]}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(conf_dir.join(format!("{network}.conflist")), conflist.to_string())?;
        Ok(Chain {
            label,
            plugin_dir: plugin_dir.to_path_buf(),
            cnitool: cnitool.to_path_buf(),
            conf_dir,
            network,
            port_base: 10_000 + index * 10_000,
        })
    }

    pub fn network(&self) -> String {
        self.network.clone()
    }

    fn netns(&self, n: usize) -> String {
        format!("{}-c{n}", self.label)
    }

    fn command(&self, verb: &str, n: usize) -> Command {
        let mut cmd = Command::new(&self.cnitool);
        let caps = format!(
            r#"{{"portMappings":[{{"hostPort":{},"containerPort":80,"protocol":"tcp"}}]}}"#,
            self.port_base + n as u32
        );
        cmd.args([verb, &self.network, &format!("/run/netns/{}", self.netns(n))])
            .env("CNI_PATH", &self.plugin_dir)
            .env("NETCONFPATH", &self.conf_dir)
            .env("CAP_ARGS", caps)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn finish(child: Child, what: &str) -> anyhow::Result<()> {
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// One timed `cnitool VERB` for container `n`.
    pub fn verb(&self, verb: &str, n: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let child = self.command(verb, n).spawn().context("starting cnitool")?;
        Chain::finish(child, &format!("{} cnitool {verb} {}", self.label, self.netns(n)))?;
        Ok(started.elapsed())
    }

    /// `cnitool VERB` for all of `ns` at once; the wall time until the last one is done.
    fn all_at_once(&self, verb: &str, ns: std::ops::Range<usize>) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let children: Vec<(usize, Child)> =
            ns.map(|n| self.command(verb, n).spawn().map(|c| (n, c))).collect::<Result<_, _>>()?;
        for (n, child) in children {
            Chain::finish(child, &format!("{} concurrent {verb} {}", self.label, self.netns(n)))?;
        }
        Ok(started.elapsed())
    }

    /// Runs every measurement: `rounds` sequential ADDs then DELs; 20 concurrent ADDs and DELs;
    /// then ten ADD/DEL pairs at each population in `populations`.
    pub fn run(&self, rounds: usize, populations: &[usize]) -> anyhow::Result<ChainResults> {
        const EXTRA: usize = 10;
        let largest = populations.iter().copied().max().unwrap_or(0);
        let total = rounds.max(20).max(largest) + EXTRA;
        for n in 0..total {
            netns_add(&self.netns(n))?;
        }
        let outcome = self.measure(rounds, populations, largest);
        for n in 0..total {
            netns_del(&self.netns(n));
        }
        outcome
    }

    fn measure(&self, rounds: usize, populations: &[usize], largest: usize) -> anyhow::Result<ChainResults> {
        let mut r = ChainResults::default();
        // Warm-up: the first ADD creates the bridge and the firewall tables.
        self.verb("add", 0)?;
        self.verb("del", 0)?;

        for n in 0..rounds {
            r.seq_add.push(self.verb("add", n)?);
        }
        for n in 0..rounds {
            r.seq_del.push(self.verb("del", n)?);
        }

        r.concurrent_add = self.all_at_once("add", 0..20)?;
        r.concurrent_del = self.all_at_once("del", 0..20)?;

        // Growth: fill up to each population, then time ten extra containers coming and going.
        let mut present = 0;
        for &population in populations {
            while present < population {
                self.verb("add", present)?;
                present += 1;
            }
            let (mut adds, mut dels) = (Samples::default(), Samples::default());
            for n in largest..largest + 10 {
                adds.push(self.verb("add", n)?);
                dels.push(self.verb("del", n)?);
            }
            r.growth.push((population, adds, dels));
        }
        for n in 0..present {
            self.verb("del", n)?;
        }
        Ok(r)
    }
}
