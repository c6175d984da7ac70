//! Multus' secondary networks, each attachment run directly (no cnitool), ADD then DEL, one
//! container at a time: `macvlan` with `static` IPAM (the pod's address from the runtime,
//! `runtimeConfig.ips`) and `ipvlan` with `host-local`. The master is one end of a veth made for
//! the run in the sandbox's namespace.
//!
//! This machine's kernel has no ipvlan, so that one runs on the second kernel (scripts/vm.sh,
//! Debian's kernel under qemu): the host's bench starts `scripts/bench.sh --guest ipvlan` in the
//! guest, which measures ours and the reference there and prints the samples as lines this side
//! reads back ([`in_guest`]). Under TCG emulation every instruction is emulated: its times are
//! only comparable with each other, ours against the reference within one row.

use crate::chain::{netns_add, netns_del};
use crate::stats::Samples;
use anyhow::Context;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// ADD and DEL latency of one kind of attachment.
#[derive(Default)]
pub struct Costs {
    pub add: Samples,
    pub del: Samples,
}

/// One kind of secondary attachment: its plugin, its IPAM and its config for one round.
pub struct Attachment {
    pub plugin: &'static str,
    pub ipam: &'static str,
    /// The network name's and the namespaces' prefix.
    short: &'static str,
    conf: fn(name: &str, master: &str, round: usize) -> Value,
}

pub const MACVLAN_STATIC: Attachment = Attachment {
    plugin: "macvlan",
    ipam: "static",
    short: "mv",
    conf: |name, master, round| {
        json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": master,
            "ipam": {"type": "static", "routes": [{"dst": "0.0.0.0/0", "gw": "10.130.0.1"}]},
            "runtimeConfig": {"ips": [format!("10.130.{}.{}/16", round / 250, round % 250 + 2)]}})
    },
};

/// host-local keeps its store under /var/lib/cni/networks/<name>: a tmpfs of the sandbox.
pub const IPVLAN_HOST_LOCAL: Attachment = Attachment {
    plugin: "ipvlan",
    ipam: "host-local",
    short: "iv",
    conf: |name, master, _| {
        json!({"cniVersion": "1.0.0", "name": name, "type": "ipvlan", "master": master, "mode": "l2",
            "ipam": {"type": "host-local", "subnet": "10.131.0.0/16",
                "routes": [{"dst": "0.0.0.0/0"}], "gateway": "10.131.0.1"}})
    },
};

impl Attachment {
    /// Whether `dir` has both plugins.
    pub fn available(&self, dir: &Path) -> bool {
        [self.plugin, self.ipam].iter().all(|p| dir.join(p).is_file())
    }

    pub fn measure(&self, dir: &Path, label: &str, master: &str, rounds: usize) -> anyhow::Result<Costs> {
        let name = format!("{}-{label}", self.short);
        let cni_path = dir.display().to_string();
        let plugin = dir.join(self.plugin);
        let mut costs = Costs::default();
        for round in 0..rounds.max(1) {
            let ns = format!("{name}-{round}");
            netns_add(&ns)?;
            let netns = format!("/run/netns/{ns}");
            let cid = format!("bench-{name}-{round}");
            let env = |verb: &'static str| {
                [
                    ("CNI_COMMAND", verb),
                    ("CNI_CONTAINERID", cid.as_str()),
                    ("CNI_NETNS", netns.as_str()),
                    ("CNI_IFNAME", "net1"),
                    ("CNI_PATH", cni_path.as_str()),
                ]
            };
            let conf = (self.conf)(&name, master, round);
            let outcome = (|| -> anyhow::Result<()> {
                let add = crate::exec::run_plugin(&plugin, &env("ADD"), &conf.to_string())?;
                costs.add.push(add.took);
                let mut with_prev = conf.clone();
                with_prev["prevResult"] = serde_json::from_str(&add.stdout)?;
                let del = crate::exec::run_plugin(&plugin, &env("DEL"), &with_prev.to_string())?;
                costs.del.push(del.took);
                Ok(())
            })();
            netns_del(&ns);
            outcome?;
        }
        Ok(costs)
    }
}

/// Makes the uplink the attachments hang off: a veth pair, both ends up, in the calling namespace
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

/// What the guest prints before each set of samples, so the host picks them out of the guest's
/// console output: `bench-guest <label> <add|del> <nanoseconds>...`.
const GUEST_LINE: &str = "bench-guest";

/// The guest's side (`cni-bench --guest ipvlan`, inside the guest's own sandbox): ipvlan with
/// host-local, ours and, when `reference` has them, the reference's; samples on stdout.
pub fn guest(ours: &Path, reference: &Path, rounds: usize) -> anyhow::Result<()> {
    let a = IPVLAN_HOST_LOCAL;
    make_uplink("ivbench0")?;
    let mut sets = vec![("ours", ours)];
    if a.available(reference) {
        sets.push(("ref", reference));
    }
    for (label, dir) in sets {
        eprintln!("bench (guest): {} and {}, {label}", a.plugin, a.ipam);
        let costs = a.measure(dir, label, "ivbench0", rounds)?;
        for (verb, samples) in [("add", &costs.add), ("del", &costs.del)] {
            let nanos: Vec<String> = samples.values().iter().map(|d| d.as_nanos().to_string()).collect();
            println!("{GUEST_LINE} {label} {verb} {}", nanos.join(" "));
        }
    }
    Ok(())
}

/// The host's side: runs [`guest`] on the second kernel through scripts/vm.sh (from the top of
/// the repository, where scripts/bench.sh runs the bench) and reads its samples back: ours, and
/// the reference's when the guest measured them.
pub fn in_guest(ours: &Path, reference: &Path, rounds: usize) -> anyhow::Result<(Costs, Option<Costs>)> {
    let rounds = rounds.to_string();
    let output = Command::new("scripts/vm.sh")
        // The guest's scripts/bench.sh makes its own sandbox: it must not believe it is in one.
        .env_remove("CNI_SANDBOX")
        .args(["--timeout", "600", "--", "scripts/bench.sh", "--guest", "ipvlan", "--rounds", &rounds])
        .arg("--ours")
        .arg(ours)
        .arg("--reference")
        .arg(reference)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/vm.sh")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "the guest's bench failed ({}): {stdout}", output.status);
    let (mut ours, mut theirs) = (Costs::default(), None::<Costs>);
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some(GUEST_LINE) {
            eprintln!("{line}"); // the guest's own messages
            continue;
        }
        let costs = match words.next() {
            Some("ours") => &mut ours,
            Some("ref") => theirs.get_or_insert_with(Costs::default),
            other => anyhow::bail!("guest line for {other:?}: {line}"),
        };
        let samples = match words.next() {
            Some("add") => &mut costs.add,
            Some("del") => &mut costs.del,
            other => anyhow::bail!("guest line for {other:?}: {line}"),
        };
        for n in words {
            samples.push(Duration::from_nanos(n.parse().with_context(|| format!("guest line {line}"))?));
        }
    }
    anyhow::ensure!(!ours.add.values().is_empty(), "the guest printed no samples: {stdout}");
    Ok((ours, theirs))
}
