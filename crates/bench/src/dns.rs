//! The chain of a Podman network with DNS on (bridge + host-local + dnsname), driven through the
//! real `cnitool` for one plugin set: ours, or the reference's with Debian's dnsname.
//!
//! dnsname's cost depends on whether the network's dnsmasq runs: an ADD on an empty network
//! starts it (the plugin's one exec), one on a network with containers rewrites a file and sends
//! SIGHUP; the last DEL stops it. The two are measured apart. Each set keeps its dnsname files
//! under its own `XDG_RUNTIME_DIR` in the sandbox's work directory (both plugins honour it), so
//! nothing is written to the machine's /run; a server left by a failed run is killed by PID.

use crate::chain::{netns_add, netns_del};
use crate::stats::Samples;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Concurrent ADDs on one network (one of them starts the server).
pub const CONCURRENT: usize = 20;

pub struct DnsChain {
    label: &'static str,
    plugin_dir: PathBuf,
    cnitool: PathBuf,
    conf_dir: PathBuf,
    run_dir: PathBuf,
    network: String,
}

#[derive(Default)]
pub struct DnsResults {
    /// ADD on an empty network: starts dnsmasq.
    pub first_add: Samples,
    /// DEL of the network's last container: stops dnsmasq.
    pub last_del: Samples,
    /// ADD and DEL with another container on the network (the server runs).
    pub add: Samples,
    pub del: Samples,
    pub concurrent_add: Duration,
    pub concurrent_del: Duration,
}

/// Whether `dir` has dnsname, and dnsmasq is installed for it to run.
pub fn available(dir: &Path) -> bool {
    let dnsmasq = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq", "/usr/bin/dnsmasq"].iter().any(|p| Path::new(p).is_file());
    dnsmasq && dir.join("dnsname").is_file()
}

impl DnsChain {
    pub fn new(
        label: &'static str,
        index: u32,
        plugin_dir: &Path,
        cnitool: &Path,
        work: &Path,
    ) -> anyhow::Result<DnsChain> {
        let conf_dir = work.join(format!("net.d-dns-{label}"));
        std::fs::create_dir_all(&conf_dir)?;
        let network = format!("benchdns{index}");
        // What `podman network create` writes, less portmap, firewall and tuning.
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0", "name": network,
            "plugins": [
                {"type": "bridge", "bridge": format!("cni-bdns{index}"), "isGateway": true, "ipMasq": true,
                 "ipam": {"type": "host-local", "dataDir": work.join(format!("ipam-dns-{label}")).display().to_string(),
                          "ranges": [[{"subnet": format!("10.{}.0.0/16", 94 + index)}]]}},
                {"type": "dnsname", "domainName": "dns.podman", "capabilities": {"aliases": true}}
            ]
        });
        std::fs::write(conf_dir.join(format!("{network}.conflist")), conflist.to_string())?;
        Ok(DnsChain {
            label,
            plugin_dir: plugin_dir.to_path_buf(),
            cnitool: cnitool.to_path_buf(),
            conf_dir,
            run_dir: work.join(format!("xdg-dns-{label}")),
            network,
        })
    }

    fn netns(&self, n: usize) -> String {
        format!("{}-d{n}", self.label)
    }

    /// `cnitool VERB` for container `n` as Podman runs the chain: the name in CNI_ARGS, an alias
    /// as the capability.
    fn command(&self, verb: &str, n: usize) -> Command {
        let mut cmd = Command::new(&self.cnitool);
        cmd.args([verb, &self.network, &format!("/run/netns/{}", self.netns(n))])
            .env("CNI_PATH", &self.plugin_dir)
            .env("NETCONFPATH", &self.conf_dir)
            .env("XDG_RUNTIME_DIR", &self.run_dir)
            .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAME=c{n}"))
            .env("CAP_ARGS", format!(r#"{{"aliases":{{"{}":["alias{n}"]}}}}"#, self.network))
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

    fn verb(&self, verb: &str, n: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let child = self.command(verb, n).spawn().context("starting cnitool")?;
        DnsChain::finish(child, &format!("{} dns cnitool {verb} {}", self.label, self.netns(n)))?;
        Ok(started.elapsed())
    }

    fn all_at_once(&self, verb: &str, ns: std::ops::Range<usize>) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let children: Vec<(usize, Child)> =
            ns.map(|n| self.command(verb, n).spawn().map(|c| (n, c))).collect::<Result<_, _>>()?;
        for (n, child) in children {
            DnsChain::finish(child, &format!("{} dns concurrent {verb} {}", self.label, self.netns(n)))?;
        }
        Ok(started.elapsed())
    }

    /// `rounds` ADD/DEL pairs on an empty network (start and stop the server), then `rounds`
    /// ADDs and DELs beside a container that keeps the server up, then CONCURRENT at once.
    pub fn run(&self, rounds: usize) -> anyhow::Result<DnsResults> {
        let total = rounds.max(CONCURRENT) + 1;
        for n in 0..total {
            netns_add(&self.netns(n))?;
        }
        let outcome = self.measure(rounds, total);
        self.kill_servers();
        for n in 0..total {
            netns_del(&self.netns(n));
        }
        outcome
    }

    fn measure(&self, rounds: usize, total: usize) -> anyhow::Result<DnsResults> {
        let mut r = DnsResults::default();
        // Warm-up: the first ADD creates the bridge.
        self.verb("add", 0)?;
        self.verb("del", 0)?;
        for _ in 0..rounds {
            r.first_add.push(self.verb("add", 0)?);
            r.last_del.push(self.verb("del", 0)?);
        }
        self.verb("add", 0)?;
        for n in 1..=rounds {
            r.add.push(self.verb("add", n)?);
        }
        for n in 1..=rounds {
            r.del.push(self.verb("del", n)?);
        }
        self.verb("del", 0)?;
        // On an empty network: one of them starts the server, the others wait for the lock.
        let last = CONCURRENT.min(total);
        r.concurrent_add = self.all_at_once("add", 0..last)?;
        r.concurrent_del = self.all_at_once("del", 0..last)?;
        Ok(r)
    }

    /// Kills, by the PID in its pid file, a dnsmasq a failed run left (it is checked to be
    /// dnsmasq with this set's config first).
    fn kill_servers(&self) {
        let dir = self.run_dir.join("containers/cni/dnsname").join(&self.network);
        let Ok(text) = std::fs::read_to_string(dir.join("pidfile")) else { return };
        let Ok(pid) = text.trim().parse::<i32>() else { return };
        let conf_arg = format!("--conf-file={}", dir.join("dnsmasq.conf").display());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|a| a == conf_arg.as_bytes()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
