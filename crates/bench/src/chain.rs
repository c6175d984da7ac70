//! Driving a chain through the real `cnitool`, for one plugin set: [`Runner`] (one network, its
//! conflist, its containers, timed verbs, processes counted with strace), used by every chain of
//! the bench; and [`Chain`], the chain a runtime runs for a Docker-style bridge network with one
//! published port (bridge + host-local + portmap).
//!
//! Containers are `ip netns` namespaces made before timing starts; `cnitool` names each
//! attachment after its netns path, so every container is a distinct attachment.

use crate::stats::Samples;
use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn netns_add(name: &str) -> anyhow::Result<()> {
    let status = Command::new("ip").args(["netns", "add", name]).status().context("running ip netns add")?;
    anyhow::ensure!(status.success(), "ip netns add {name} failed");
    Ok(())
}

pub fn netns_del(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// The environment one container's runs get on top of the runner's (`CAP_ARGS`, `CNI_ARGS`).
type PerContainer = Box<dyn Fn(usize) -> Vec<(&'static str, String)>>;

/// One network of one plugin set, driven through `cnitool`: container `n` is the namespace
/// `<prefix><n>`.
pub struct Runner {
    pub label: &'static str,
    pub plugin_dir: PathBuf,
    pub cnitool: PathBuf,
    pub conf_dir: PathBuf,
    pub network: String,
    prefix: String,
    env: Vec<(&'static str, String)>,
    per_container: PerContainer,
}

/// The processes one `cnitool` verb started (cnitool itself not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Processes {
    pub all: usize,
    /// Of them `nft`, `iptables*`, `ip6tables*`.
    pub firewall: usize,
    /// Of them anything but a plugin of the set (firewall programs, `tc`, `ip`, dnsmasq...).
    pub not_plugins: usize,
}

impl Processes {
    /// Counts the successful execve calls of an `strace -f -e trace=execve` log; the first one
    /// is cnitool's own. A call another process interrupted is split in two lines (`execve(...
    /// <unfinished ...>`, then `<... execve resumed>) = 0`), matched by process ID.
    pub fn count(log: &str, plugin_dir: &Path) -> Processes {
        let mut pending = std::collections::HashMap::new();
        let mut programs = Vec::new();
        for line in log.lines() {
            let pid = line.split_whitespace().next().unwrap_or_default();
            let program = line.split('"').nth(1).filter(|_| line.contains("execve("));
            if let Some(program) = program.filter(|_| line.ends_with("<unfinished ...>")) {
                pending.insert(pid, program);
            } else if line.ends_with("= 0") {
                let resumed = line.contains("<... execve resumed>");
                programs.extend(if resumed { pending.remove(pid) } else { program });
            }
        }
        let programs = programs.into_iter().skip(1).map(Path::new);
        let mut p = Processes::default();
        for program in programs {
            p.all += 1;
            p.firewall += usize::from(crate::plugins::is_firewall_program(program));
            p.not_plugins += usize::from(program.parent() != Some(plugin_dir));
        }
        p
    }
}

fn strace() -> Option<PathBuf> {
    ["/usr/bin/strace", "/bin/strace"].into_iter().map(PathBuf::from).find(|p| p.is_file())
}

impl Runner {
    /// Writes `conflist` (named by its `name`) into `<work>/net.d-<conf>`.
    pub fn new(
        label: &'static str,
        conf: &str,
        prefix: &str,
        plugin_dir: &Path,
        cnitool: &Path,
        work: &Path,
        conflist: &Value,
    ) -> anyhow::Result<Runner> {
        let conf_dir = work.join(format!("net.d-{conf}"));
        std::fs::create_dir_all(&conf_dir)?;
        let network = conflist["name"].as_str().context("the conflist's name")?.to_string();
        std::fs::write(conf_dir.join(format!("{network}.conflist")), conflist.to_string())?;
        Ok(Runner {
            label,
            plugin_dir: plugin_dir.to_path_buf(),
            cnitool: cnitool.to_path_buf(),
            conf_dir,
            network,
            prefix: prefix.to_string(),
            env: Vec::new(),
            per_container: Box::new(|_| Vec::new()),
        })
    }

    /// An environment variable for every run.
    pub fn env(mut self, key: &'static str, value: impl Into<String>) -> Runner {
        self.env.push((key, value.into()));
        self
    }

    /// Environment variables of container `n`'s runs.
    pub fn per_container(mut self, f: impl Fn(usize) -> Vec<(&'static str, String)> + 'static) -> Runner {
        self.per_container = Box::new(f);
        self
    }

    pub fn netns(&self, n: usize) -> String {
        format!("{}{n}", self.prefix)
    }

    pub fn command(&self, verb: &str, n: usize) -> Command {
        let mut cmd = Command::new(&self.cnitool);
        cmd.args([verb, &self.network, &format!("/run/netns/{}", self.netns(n))])
            .env("CNI_PATH", &self.plugin_dir)
            .env("NETCONFPATH", &self.conf_dir)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs((self.per_container)(n))
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
        Runner::finish(child, &format!("{} {} cnitool {verb} {}", self.label, self.network, self.netns(n)))?;
        Ok(started.elapsed())
    }

    /// `cnitool VERB` for all of `ns` at once; the wall time until the last one is done.
    pub fn all_at_once(&self, verb: &str, ns: std::ops::Range<usize>) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let children: Vec<(usize, Child)> =
            ns.map(|n| self.command(verb, n).spawn().map(|c| (n, c))).collect::<Result<_, _>>()?;
        for (n, child) in children {
            Runner::finish(child, &format!("{} {} concurrent {verb} {}", self.label, self.network, self.netns(n)))?;
        }
        Ok(started.elapsed())
    }

    /// `rounds` ADDs one after another, then their DELs in the same order.
    pub fn sequential(&self, rounds: usize) -> anyhow::Result<(Samples, Samples)> {
        let (mut adds, mut dels) = (Samples::default(), Samples::default());
        for n in 0..rounds {
            adds.push(self.verb("add", n)?);
        }
        for n in 0..rounds {
            dels.push(self.verb("del", n)?);
        }
        Ok((adds, dels))
    }

    /// The processes one `cnitool VERB` for container `n` starts, or `None` without strace.
    pub fn processes(&self, verb: &str, n: usize) -> anyhow::Result<Option<Processes>> {
        let Some(strace) = strace() else { return Ok(None) };
        let log = std::env::temp_dir().join(format!("cni-bench-{}-{}-{verb}", self.network, std::process::id()));
        let cnitool = self.command(verb, n);
        let status = Command::new(strace)
            .args(["-f", "-qq", "-e", "trace=execve", "-o"])
            .arg(&log)
            .arg(cnitool.get_program())
            .args(cnitool.get_args())
            .envs(cnitool.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "{} cnitool {verb} under strace failed", self.network);
        let text = std::fs::read_to_string(&log)?;
        let _ = std::fs::remove_file(&log);
        Ok(Some(Processes::count(&text, &self.plugin_dir)))
    }

    /// Runs `f` with the namespaces of containers `ns` made, and removes them afterwards whether
    /// `f` failed or not.
    pub fn with_containers<T>(
        &self,
        ns: std::ops::Range<usize>,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut made = Vec::new();
        let outcome = ns.clone().try_for_each(|n| netns_add(&self.netns(n)).map(|()| made.push(n))).and_then(|()| f());
        for n in made {
            netns_del(&self.netns(n));
        }
        outcome
    }
}

/// The bridge chain of one plugin set, with its own network, bridge, subnet and host ports so
/// the two sets never share state in one run.
pub struct Chain {
    pub runner: Runner,
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

/// One published TCP port, as a runtime passes it (`CAP_ARGS` for cnitool).
pub fn port_mapping(host_port: u32) -> String {
    format!(r#"{{"portMappings":[{{"hostPort":{host_port},"containerPort":80,"protocol":"tcp"}}]}}"#)
}

impl Chain {
    pub fn new(
        label: &'static str,
        index: u32,
        plugin_dir: &Path,
        cnitool: &Path,
        work: &Path,
    ) -> anyhow::Result<Chain> {
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0", "name": format!("bench{index}"),
            "plugins": [
                {"type": "bridge", "bridge": format!("cni-bench{index}"), "isGateway": true, "ipMasq": true,
                 "ipam": {"type": "host-local", "dataDir": work.join(format!("ipam-{label}")).display().to_string(),
                          "ranges": [[{"subnet": format!("10.{}.0.0/16", 90 + index)}]]}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        let port_base = 10_000 + index * 10_000;
        let runner = Runner::new(label, label, &format!("{label}-c"), plugin_dir, cnitool, work, &conflist)?
            .per_container(move |n| vec![("CAP_ARGS", port_mapping(port_base + n as u32))]);
        Ok(Chain { runner })
    }

    /// Runs every measurement: `rounds` sequential ADDs then DELs; 20 concurrent ADDs and DELs;
    /// then ten ADD/DEL pairs at each population in `populations`.
    pub fn run(&self, rounds: usize, populations: &[usize]) -> anyhow::Result<ChainResults> {
        const EXTRA: usize = 10;
        let largest = populations.iter().copied().max().unwrap_or(0);
        let total = rounds.max(20).max(largest) + EXTRA;
        self.runner.with_containers(0..total, || self.measure(rounds, populations, largest))
    }

    fn measure(&self, rounds: usize, populations: &[usize], largest: usize) -> anyhow::Result<ChainResults> {
        let run = &self.runner;
        let mut r = ChainResults::default();
        // Warm-up: the first ADD creates the bridge and the firewall tables.
        run.verb("add", 0)?;
        run.verb("del", 0)?;
        (r.seq_add, r.seq_del) = run.sequential(rounds)?;

        r.concurrent_add = run.all_at_once("add", 0..20)?;
        r.concurrent_del = run.all_at_once("del", 0..20)?;

        // Growth: fill up to each population, then time ten extra containers coming and going.
        let mut present = 0;
        for &population in populations {
            while present < population {
                run.verb("add", present)?;
                present += 1;
            }
            let (mut adds, mut dels) = (Samples::default(), Samples::default());
            for n in largest..largest + 10 {
                adds.push(run.verb("add", n)?);
                dels.push(run.verb("del", n)?);
            }
            r.growth.push((population, adds, dels));
        }
        for n in 0..present {
            run.verb("del", n)?;
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_counted_apart_from_cnitool_and_the_set_plugins() {
        let log = r#"10 execve("/x/cnitool", ["cnitool", "add"], 0x0 /* 9 vars */) = 0
11 execve("/opt/ours/bridge", ["bridge"], 0x0) = 0
12 execve("/opt/ours/host-local", ["host-local"], 0x0) = 0
13 execve("/usr/sbin/iptables-restore", ["x"], 0x0) = 0
14 execve("/usr/local/bin/tc", ["tc"], 0x0) = -1 ENOENT (No such file or directory)
14 execve("/usr/sbin/tc", ["tc"], 0x0) = 0
15 execve("/opt/ours/portmap", ["portmap"], 0x0 /* 45 vars */ <unfinished ...>
16 execve("/usr/sbin/nft", ["nft"], 0x0 /* 45 vars */ <unfinished ...>
16 <... execve resumed>) = -1 ENOENT (No such file or directory)
15 <... execve resumed>) = 0
"#;
        let p = Processes::count(log, Path::new("/opt/ours"));
        assert_eq!(p, Processes { all: 5, firewall: 1, not_plugins: 2 });
    }
}
