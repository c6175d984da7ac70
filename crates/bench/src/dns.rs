//! The chain of a Podman network with DNS on (bridge + host-local + dnsname), driven through the
//! real `cnitool` for one plugin set: ours, or the reference's with Debian's dnsname.
//!
//! dnsname's cost depends on whether the network's dnsmasq runs: an ADD on an empty network
//! starts it (the plugin's one exec), one on a network with containers rewrites a file and sends
//! SIGHUP; the last DEL stops it. The two are measured apart. Each set keeps its dnsname files
//! under its own `XDG_RUNTIME_DIR` in the sandbox's work directory (both plugins honour it), so
//! nothing is written to the machine's /run; a server left by a failed run is killed by PID.

use crate::chain::Runner;
use crate::stats::Samples;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Concurrent ADDs on one network (one of them starts the server).
pub const CONCURRENT: usize = 20;

pub struct DnsChain {
    runner: Runner,
    run_dir: PathBuf,
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
        let run_dir = work.join(format!("xdg-dns-{label}"));
        // As Podman runs the chain: the name in CNI_ARGS, an alias as the capability.
        let runner =
            Runner::new(label, &format!("dns-{label}"), &format!("{label}-d"), plugin_dir, cnitool, work, &conflist)?
                .env("XDG_RUNTIME_DIR", run_dir.display().to_string())
                .per_container(move |n| {
                    vec![
                        ("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAME=c{n}")),
                        ("CAP_ARGS", format!(r#"{{"aliases":{{"{network}":["alias{n}"]}}}}"#)),
                    ]
                });
        Ok(DnsChain { runner, run_dir })
    }

    /// `rounds` ADD/DEL pairs on an empty network (start and stop the server), then `rounds`
    /// ADDs and DELs beside a container that keeps the server up, then CONCURRENT at once.
    pub fn run(&self, rounds: usize) -> anyhow::Result<DnsResults> {
        let total = rounds.max(CONCURRENT) + 1;
        self.runner.with_containers(0..total, || {
            let outcome = self.measure(rounds, total);
            self.kill_servers();
            outcome
        })
    }

    fn measure(&self, rounds: usize, total: usize) -> anyhow::Result<DnsResults> {
        let run = &self.runner;
        let mut r = DnsResults::default();
        // Warm-up: the first ADD creates the bridge.
        run.verb("add", 0)?;
        run.verb("del", 0)?;
        for _ in 0..rounds {
            r.first_add.push(run.verb("add", 0)?);
            r.last_del.push(run.verb("del", 0)?);
        }
        run.verb("add", 0)?;
        for n in 1..=rounds {
            r.add.push(run.verb("add", n)?);
        }
        for n in 1..=rounds {
            r.del.push(run.verb("del", n)?);
        }
        run.verb("del", 0)?;
        // On an empty network: one of them starts the server, the others wait for the lock.
        let last = CONCURRENT.min(total);
        r.concurrent_add = run.all_at_once("add", 0..last)?;
        r.concurrent_del = run.all_at_once("del", 0..last)?;
        Ok(r)
    }

    /// Kills, by the PID in its pid file, a dnsmasq a failed run left (it is checked to be
    /// dnsmasq with this set's config first).
    fn kill_servers(&self) {
        let dir = self.run_dir.join("containers/cni/dnsname").join(&self.runner.network);
        let Ok(text) = std::fs::read_to_string(dir.join("pidfile")) else { return };
        let Ok(pid) = text.trim().parse::<i32>() else { return };
        let conf_arg = format!("--conf-file={}", dir.join("dnsmasq.conf").display());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|a| a == conf_arg.as_bytes()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
