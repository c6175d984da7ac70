//! Multus' most common secondary network: `macvlan` with `static` IPAM (the pod's address from
//! the runtime, `runtimeConfig.ips`), each run directly, ADD then DEL, one container at a time.
//! The master is one end of a veth made for the run in the sandbox's namespace.

use crate::chain::{netns_add, netns_del};
use crate::stats::Samples;
use anyhow::Context;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// ADD and DEL latency of macvlan with static.
#[derive(Default)]
pub struct Costs {
    pub add: Samples,
    pub del: Samples,
}

/// Whether `dir` has both plugins.
pub fn available(dir: &Path) -> bool {
    ["macvlan", "static"].iter().all(|p| dir.join(p).is_file())
}

/// Makes the uplink the macvlans hang off: a veth pair, both ends up, in the calling namespace
/// (the bench's sandbox). Gone with the sandbox.
pub fn make_uplink(name: &str) -> anyhow::Result<()> {
    let peer = format!("{name}p");
    for args in [
        vec!["link", "add", name, "type", "veth", "peer", "name", peer.as_str()],
        vec!["link", "set", name, "up"],
        vec!["link", "set", peer.as_str(), "up"],
    ] {
        let status = Command::new("ip").args(&args).status().context("running ip")?;
        anyhow::ensure!(status.success(), "ip {} failed", args.join(" "));
    }
    Ok(())
}

pub fn measure(dir: &Path, label: &str, master: &str, rounds: usize) -> anyhow::Result<Costs> {
    let conf = |round: usize| {
        json!({"cniVersion": "1.0.0", "name": format!("mv-{label}"), "type": "macvlan", "master": master,
            "ipam": {"type": "static", "routes": [{"dst": "0.0.0.0/0", "gw": "10.130.0.1"}]},
            "runtimeConfig": {"ips": [format!("10.130.{}.{}/16", round / 250, round % 250 + 2)]}})
    };
    let cni_path = dir.display().to_string();
    let mut costs = Costs::default();
    for round in 0..rounds.max(1) {
        let ns = format!("mv-{label}-{round}");
        netns_add(&ns)?;
        let netns = format!("/run/netns/{ns}");
        let cid = format!("bench-mv-{round}");
        let env = |verb: &'static str| {
            [
                ("CNI_COMMAND", verb),
                ("CNI_CONTAINERID", cid.as_str()),
                ("CNI_NETNS", netns.as_str()),
                ("CNI_IFNAME", "net1"),
                ("CNI_PATH", cni_path.as_str()),
            ]
        };
        let outcome = (|| -> anyhow::Result<()> {
            let add = crate::exec::run_plugin(&dir.join("macvlan"), &env("ADD"), &conf(round).to_string())?;
            costs.add.push(add.took);
            let prev: Value = serde_json::from_str(&add.stdout)?;
            let mut with_prev = conf(round);
            with_prev["prevResult"] = prev;
            let del = crate::exec::run_plugin(&dir.join("macvlan"), &env("DEL"), &with_prev.to_string())?;
            costs.del.push(del.took);
            Ok(())
        })();
        netns_del(&ns);
        outcome?;
    }
    Ok(costs)
}
