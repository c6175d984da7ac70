//! kind's and k3s's plugins that the bridge chain does not cover: `ptp` (with host-local, as kind
//! runs it: no masquerade, IPv4) and `bandwidth` chained after it (ingress and egress limits, as
//! k3s passes a pod's annotations), each run directly, ADD then DEL, one container at a time.

use crate::chain::{netns_add, netns_del};
use crate::stats::Samples;
use serde_json::{Value, json};
use std::path::Path;

/// ADD and DEL latency of ptp and of bandwidth.
#[derive(Default)]
pub struct Costs {
    pub ptp_add: Samples,
    pub ptp_del: Samples,
    pub bandwidth_add: Samples,
    pub bandwidth_del: Samples,
}

/// Whether `dir` has both plugins (an older reference release may lack one).
pub fn available(dir: &Path) -> bool {
    ["ptp", "bandwidth", "host-local"].iter().all(|p| dir.join(p).is_file())
}

pub fn measure(dir: &Path, label: &str, index: u32, work: &Path, rounds: usize) -> anyhow::Result<Costs> {
    let ptp = json!({"cniVersion": "1.0.0", "name": format!("kind-{label}"), "type": "ptp", "ipMasq": false, "mtu": 1400,
        "ipam": {"type": "host-local", "dataDir": work.join(format!("ipam-kind-{label}")).display().to_string(),
                 "ranges": [[{"subnet": format!("10.{}.0.0/16", 120 + index)}]], "routes": [{"dst": "0.0.0.0/0"}]}});
    let bandwidth = json!({"cniVersion": "1.0.0", "name": format!("kind-{label}"), "type": "bandwidth",
        "runtimeConfig": {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 800_000,
                                        "egressRate": 8_000_000, "egressBurst": 800_000}}});
    let with_prev = |conf: &Value, prev: &Value| {
        let mut c = conf.clone();
        c["prevResult"] = prev.clone();
        c.to_string()
    };
    let cni_path = dir.display().to_string();
    let mut costs = Costs::default();
    for round in 0..rounds.max(1) {
        let ns = format!("kb-{label}-{round}");
        netns_add(&ns)?;
        let netns = format!("/run/netns/{ns}");
        let cid = format!("bench-kind-{round}");
        let env = |verb: &'static str| {
            [
                ("CNI_COMMAND", verb),
                ("CNI_CONTAINERID", cid.as_str()),
                ("CNI_NETNS", netns.as_str()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", cni_path.as_str()),
            ]
        };
        let outcome = (|| -> anyhow::Result<()> {
            let add = crate::exec::run_plugin(&dir.join("ptp"), &env("ADD"), &ptp.to_string())?;
            costs.ptp_add.push(add.took);
            let prev: Value = serde_json::from_str(&add.stdout)?;
            let bw_add = crate::exec::run_plugin(&dir.join("bandwidth"), &env("ADD"), &with_prev(&bandwidth, &prev))?;
            costs.bandwidth_add.push(bw_add.took);
            let shaped: Value = serde_json::from_str(&bw_add.stdout)?;
            let bw_del = crate::exec::run_plugin(&dir.join("bandwidth"), &env("DEL"), &with_prev(&bandwidth, &shaped))?;
            costs.bandwidth_del.push(bw_del.took);
            let del = crate::exec::run_plugin(&dir.join("ptp"), &env("DEL"), &with_prev(&ptp, &prev))?;
            costs.ptp_del.push(del.took);
            Ok(())
        })();
        netns_del(&ns);
        outcome?;
    }
    Ok(costs)
}
