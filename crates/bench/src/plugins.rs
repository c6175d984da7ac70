//! Each plugin of the chain on its own, run directly with the stdin `cnitool` would give it: its
//! ADD and DEL latency, the peak memory of its process, and how many `nft` / `iptables` processes
//! a chain ADD and DEL start.

use crate::chain::{netns_add, netns_del};
use crate::stats::Samples;
use anyhow::Context;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

pub const PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];

/// One plugin's numbers.
#[derive(Default)]
pub struct PluginCost {
    pub add: Samples,
    pub del: Samples,
    /// The largest resident set of the plugin's own process (not its children), in KiB.
    pub peak_rss_kib: i64,
}

/// Runs `plugin` once: its stdout, wall time and peak RSS (KiB).
fn run(plugin: &Path, env: &[(&str, &str)], stdin: &str) -> anyhow::Result<(String, Duration, i64)> {
    let r = crate::exec::run_plugin(plugin, env, stdin)?;
    Ok((r.stdout, r.took, r.peak_rss_kib))
}

struct Attachment<'a> {
    dir: &'a Path,
    netns: String,
    ipam: Value,
    bridge: String,
}

impl Attachment<'_> {
    fn env<'e>(&'e self, verb: &'e str) -> [(&'e str, &'e str); 5] {
        [
            ("CNI_COMMAND", verb),
            ("CNI_CONTAINERID", "bench-plugin"),
            ("CNI_NETNS", &self.netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", self.dir.to_str().unwrap_or("/")),
        ]
    }

    fn bridge_conf(&self, prev: Option<&Value>) -> String {
        let mut c = json!({"cniVersion": "1.0.0", "name": "pp", "type": "bridge", "bridge": self.bridge,
                           "isGateway": true, "ipMasq": true, "ipam": self.ipam});
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c.to_string()
    }

    fn portmap_conf(&self, prev: &Value) -> String {
        json!({"cniVersion": "1.0.0", "name": "pp", "type": "portmap",
               "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
               "prevResult": prev})
        .to_string()
    }
}

/// Per-plugin ADD/DEL latency and peak memory for one plugin set, `rounds` times each.
pub fn measure(dir: &Path, label: &str, index: u32, work: &Path, rounds: usize) -> anyhow::Result<Vec<PluginCost>> {
    let netns = format!("pp-{label}");
    netns_add(&netns)?;
    let a = Attachment {
        dir,
        netns: format!("/run/netns/{netns}"),
        ipam: json!({"type": "host-local", "dataDir": work.join(format!("ipam-pp-{label}")).display().to_string(),
                     "ranges": [[{"subnet": format!("10.{}.0.0/16", 80 + index)}]]}),
        bridge: format!("cni-pp{index}"),
    };
    let outcome = (|| {
        let mut costs: Vec<PluginCost> = PLUGINS.iter().map(|_| PluginCost::default()).collect();
        let mut record = |i: usize, add: bool, took: Duration, rss: i64| {
            let c = &mut costs[i];
            if add {
                c.add.push(took)
            } else {
                c.del.push(took)
            }
            c.peak_rss_kib = c.peak_rss_kib.max(rss);
        };
        let plugin = |name: &str| dir.join(name);
        for round in 0..=rounds {
            let keep = round > 0; // the first round warms up (bridge and tables created)
            let (out, t, rss) = run(&plugin("bridge"), &a.env("ADD"), &a.bridge_conf(None))?;
            let prev: Value = serde_json::from_str(&out).context("bridge result")?;
            if keep {
                record(0, true, t, rss);
            }
            let (_, t, rss) = run(&plugin("portmap"), &a.env("ADD"), &a.portmap_conf(&prev))?;
            if keep {
                record(2, true, t, rss);
            }
            let (_, t, rss) = run(&plugin("portmap"), &a.env("DEL"), &a.portmap_conf(&prev))?;
            if keep {
                record(2, false, t, rss);
            }
            let (_, t, rss) = run(&plugin("bridge"), &a.env("DEL"), &a.bridge_conf(Some(&prev)))?;
            if keep {
                record(0, false, t, rss);
            }
            let ipam_conf = json!({"cniVersion": "1.0.0", "name": "pp", "type": "bridge", "ipam": a.ipam}).to_string();
            let (_, t, rss) = run(&plugin("host-local"), &a.env("ADD"), &ipam_conf)?;
            if keep {
                record(1, true, t, rss);
            }
            let (_, t, rss) = run(&plugin("host-local"), &a.env("DEL"), &ipam_conf)?;
            if keep {
                record(1, false, t, rss);
            }
            let lo_conf = r#"{"cniVersion": "1.0.0", "name": "pp", "type": "loopback"}"#;
            let (_, t, rss) = run(&plugin("loopback"), &a.env("ADD"), lo_conf)?;
            if keep {
                record(3, true, t, rss);
            }
            let (_, t, rss) = run(&plugin("loopback"), &a.env("DEL"), lo_conf)?;
            if keep {
                record(3, false, t, rss);
            }
        }
        Ok(costs)
    })();
    netns_del(&netns);
    outcome
}

/// The `nft`, `iptables*` and `ip6tables*` processes one chain ADD and one DEL start (counted
/// with strace), or `None` without strace.
pub fn firewall_processes(chain: &crate::chain::Chain, n: usize) -> anyhow::Result<Option<(usize, usize)>> {
    let run = &chain.runner;
    run.with_containers(n..n + 1, || {
        let add = run.processes("add", n)?;
        let del = run.processes("del", n)?;
        Ok(add.zip(del).map(|(a, d)| (a.firewall, d.firewall)))
    })
}

/// Whether `program` is `nft`, `iptables*` or `ip6tables*`.
pub fn is_firewall_program(program: &Path) -> bool {
    let name = program.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name == "nft" || name.starts_with("iptables") || name.starts_with("ip6tables")
}

/// Binary size in bytes, if the file exists.
pub fn size(dir: &Path, name: &str) -> Option<f64> {
    std::fs::metadata(dir.join(name)).ok().map(|m| m.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall_programs_are_recognised_by_name() {
        assert!(is_firewall_program(Path::new("/usr/sbin/nft")));
        assert!(is_firewall_program(Path::new("/usr/sbin/iptables-restore")));
        assert!(is_firewall_program(Path::new("/usr/sbin/ip6tables")));
        assert!(!is_firewall_program(Path::new("/opt/cni/bin/portmap")));
    }
}
