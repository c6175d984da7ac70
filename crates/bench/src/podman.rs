//! Podman 4's chain, as `podman network create` writes it (cniVersion 0.4.0: bridge with
//! host-local, portmap, firewall with `"backend": ""`, a bare tuning), driven through `cnitool`;
//! then `firewall` and `tuning` each on their own; and the processes one chain ADD and DEL start.
//! No system bus is reachable (`DBUS_SYSTEM_BUS_ADDRESS` names no socket), so both
//! implementations' firewall takes iptables, as on a host without firewalld.

use crate::chain::{Runner, port_mapping};
use crate::stats::Samples;
use anyhow::Context;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NO_BUS: &str = "unix:path=/nonexistent/cni-bench-bus";

/// One plugin set's numbers.
#[derive(Default)]
pub struct PodmanResults {
    pub chain_add: Samples,
    pub chain_del: Samples,
    pub firewall_add: Samples,
    pub firewall_del: Samples,
    pub tuning_add: Samples,
    pub tuning_del: Samples,
    /// Processes one chain ADD / DEL starts (plugins, their delegates, iptables and nft), and of
    /// them the iptables / nft ones; `None` without strace.
    pub processes: Option<[usize; 4]>,
}

struct Podman {
    dir: PathBuf,
    network: String,
}

/// The chain's plugins, as `podman network create` writes them.
fn plugins(label: &str, index: u32, work: &Path) -> Value {
    json!([
        {"type": "bridge", "bridge": format!("cni-podb{index}"), "isGateway": true, "ipMasq": true,
         "hairpinMode": true,
         "ipam": {"type": "host-local", "dataDir": work.join(format!("ipam-podman-{label}")).display().to_string(),
                  "routes": [{"dst": "0.0.0.0/0"}],
                  "ranges": [[{"subnet": format!("10.{}.0.0/16", 130 + index)}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "firewall", "backend": ""},
        {"type": "tuning", "dataDir": work.join(format!("tuning-{label}")).display().to_string()}
    ])
}

impl Podman {
    /// One plugin alone, run as libcni would run it in the chain (its entry of the conflist).
    fn alone(&self, plugin: &Value, verb: &str, netns: &str, prev: &Value) -> anyhow::Result<Duration> {
        let mut conf = plugin.clone();
        conf["cniVersion"] = json!("0.4.0");
        conf["name"] = json!(self.network);
        conf["prevResult"] = prev.clone();
        let env = [
            ("CNI_COMMAND", verb),
            ("CNI_CONTAINERID", "bench-podman"),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", self.dir.to_str().unwrap_or("/")),
            ("DBUS_SYSTEM_BUS_ADDRESS", NO_BUS),
        ];
        let name = plugin["type"].as_str().unwrap_or_default();
        Ok(crate::exec::run_plugin(&self.dir.join(name), &env, &conf.to_string())?.took)
    }
}

/// Podman's chain, then firewall and tuning alone, `rounds` times each, for the plugins in `dir`.
pub fn measure(
    dir: &Path,
    cnitool: &Path,
    label: &'static str,
    index: u32,
    work: &Path,
    rounds: usize,
) -> anyhow::Result<PodmanResults> {
    let network = format!("podman{index}");
    let conflist = json!({"cniVersion": "0.4.0", "name": network, "plugins": plugins(label, index, work)});
    let port_base = 30_000 + index * 1000;
    let runner =
        Runner::new(label, &format!("podman-{label}"), &format!("pm-{label}-c"), dir, cnitool, work, &conflist)?
            .env("DBUS_SYSTEM_BUS_ADDRESS", NO_BUS)
            .per_container(move |n| vec![("CAP_ARGS", port_mapping(port_base + n as u32))]);
    let p = Podman { dir: dir.to_path_buf(), network };
    runner.with_containers(0..rounds.max(1) + 1, || {
        let mut r = PodmanResults::default();
        // Warm-up: the bridge, the tables and the chains.
        runner.verb("add", 0)?;
        runner.verb("del", 0)?;
        (r.chain_add, r.chain_del) = runner.sequential(rounds)?;
        if let (Some(add), Some(del)) = (runner.processes("add", rounds)?, runner.processes("del", rounds)?) {
            r.processes = Some([add.all, add.firewall, del.all, del.firewall]);
        }

        // firewall and tuning alone, on an attachment that bridge made (not timed).
        let netns = format!("/run/netns/{}", runner.netns(0));
        let plugins = plugins(label, index, work);
        let bridge = &plugins[0];
        let mut bridge_conf = bridge.clone();
        bridge_conf["cniVersion"] = json!("0.4.0");
        bridge_conf["name"] = json!(p.network);
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "bench-podman"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", dir.to_str().unwrap_or("/")),
        ];
        let prev: Value =
            serde_json::from_str(&crate::exec::run_plugin(&dir.join("bridge"), &env, &bridge_conf.to_string())?.stdout)
                .context("bridge result")?;
        for round in 0..=rounds {
            let keep = round > 0;
            let (fa, fd) = (p.alone(&plugins[2], "ADD", &netns, &prev)?, p.alone(&plugins[2], "DEL", &netns, &prev)?);
            let (ta, td) = (p.alone(&plugins[3], "ADD", &netns, &prev)?, p.alone(&plugins[3], "DEL", &netns, &prev)?);
            if keep {
                r.firewall_add.push(fa);
                r.firewall_del.push(fd);
                r.tuning_add.push(ta);
                r.tuning_del.push(td);
            }
        }
        let mut env = env;
        env[0].1 = "DEL";
        bridge_conf["prevResult"] = prev;
        crate::exec::run_plugin(&dir.join("bridge"), &env, &bridge_conf.to_string())?;
        Ok(r)
    })
}

/// Whether `dir` has every plugin of Podman's chain.
pub fn available(dir: &Path) -> bool {
    ["bridge", "host-local", "portmap", "firewall", "tuning"].iter().all(|p| dir.join(p).is_file())
}
