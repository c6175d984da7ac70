//! kind's and k3s's default chains through `cnitool`: kind's `ptp + host-local + portmap`
//! (cniVersion 0.3.1, as kindnetd writes it: no masquerade, mtu 1400, IPv4) and k3s's
//! `bridge + host-local + portmap + bandwidth` (as flannel's delegate writes it, the pod's
//! bandwidth annotations as the `bandwidth` capability), one published port each; and the two
//! plugins the bridge chain does not cover, `ptp` (with host-local) and `bandwidth` chained after
//! it, each run directly, ADD then DEL, one container at a time.

use crate::chain::{Processes, Runner, netns_add, netns_del, port_mapping};
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
    ["ptp", "bandwidth", "host-local", "bridge", "portmap"].iter().all(|p| dir.join(p).is_file())
}

/// One chain's sequential ADD and DEL latency, and the processes one ADD and one DEL start.
#[derive(Default)]
pub struct ChainCosts {
    pub add: Samples,
    pub del: Samples,
    pub add_processes: Option<Processes>,
    pub del_processes: Option<Processes>,
}

/// The rate of both directions of k3s's chain, in bits per second (burst in bits), as the
/// kubelet passes `kubernetes.io/ingress-bandwidth: 8M` through containerd's CRI.
const K3S_BANDWIDTH: &str =
    r#""bandwidth":{"ingressRate":8000000,"ingressBurst":800000,"egressRate":8000000,"egressBurst":800000}"#;

/// kind's chain for the plugins in `dir`.
pub fn kind(
    dir: &Path,
    cnitool: &Path,
    label: &'static str,
    index: u32,
    work: &Path,
    rounds: usize,
) -> anyhow::Result<ChainCosts> {
    let conflist = json!({"cniVersion": "0.3.1", "name": format!("kind{index}"), "plugins": [
        {"type": "ptp", "ipMasq": false, "mtu": 1400,
         "ipam": {"type": "host-local", "dataDir": work.join(format!("ipam-kindchain-{label}")).display().to_string(),
                  "ranges": [[{"subnet": format!("10.{}.0.0/16", 140 + index)}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    let port_base = 40_000 + index * 1000;
    let runner =
        Runner::new(label, &format!("kind-{label}"), &format!("kind-{label}-c"), dir, cnitool, work, &conflist)?
            .per_container(move |n| vec![("CAP_ARGS", port_mapping(port_base + n as u32))]);
    sequential(&runner, rounds)
}

/// k3s's chain for the plugins in `dir`.
pub fn k3s(
    dir: &Path,
    cnitool: &Path,
    label: &'static str,
    index: u32,
    work: &Path,
    rounds: usize,
) -> anyhow::Result<ChainCosts> {
    let conflist = json!({"cniVersion": "1.0.0", "name": format!("k3s{index}"), "plugins": [
        {"type": "bridge", "bridge": format!("cni-k3s{index}"), "isGateway": true, "isDefaultGateway": true,
         "hairpinMode": true, "forceAddress": true, "ipMasq": false, "mtu": 1450,
         "ipam": {"type": "host-local", "dataDir": work.join(format!("ipam-k3s-{label}")).display().to_string(),
                  "ranges": [[{"subnet": format!("10.{}.0.0/16", 150 + index)}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        {"type": "bandwidth", "capabilities": {"bandwidth": true}}]});
    let port_base = 50_000 + index * 1000;
    let runner = Runner::new(label, &format!("k3s-{label}"), &format!("k3s-{label}-c"), dir, cnitool, work, &conflist)?
        .per_container(move |n| {
            let port = port_base + n as u32;
            let caps = format!(
                r#"{{"portMappings":[{{"hostPort":{port},"containerPort":80,"protocol":"tcp"}}],{K3S_BANDWIDTH}}}"#
            );
            vec![("CAP_ARGS", caps)]
        });
    sequential(&runner, rounds)
}

/// A warm-up pair, `rounds` ADDs then their DELs, then one ADD and DEL under strace.
fn sequential(runner: &Runner, rounds: usize) -> anyhow::Result<ChainCosts> {
    runner.with_containers(0..rounds + 1, || {
        let mut c = ChainCosts::default();
        runner.verb("add", 0)?;
        runner.verb("del", 0)?;
        (c.add, c.del) = runner.sequential(rounds)?;
        c.add_processes = runner.processes("add", rounds)?;
        c.del_processes = runner.processes("del", rounds)?;
        Ok(c)
    })
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
