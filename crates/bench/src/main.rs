//! `cni-bench`: measures these plugins side by side with the Go reference plugins in one run and
//! prints one table (Markdown), also written to `bench-results/latest.md`. It creates bridges,
//! namespaces and firewall rules, so it runs only inside the sandbox of `scripts/bench.sh`
//! (`make bench`).
//!
//!   cni-bench [--rounds N] [--population N] [--ours DIR] [--reference DIR] [--cnitool PATH]
//!             [--only SECTION,...]
//!
//! Sections, in the order they run: chain (bridge + host-local + portmap, with the targets), dns,
//! plugins (each alone, memory, sizes, firewall processes), podman, kubernetes (kind's and k3s's
//! chains), ptp-bandwidth (each alone), macvlan (with static), ipvlan (with host-local, on the
//! second kernel under qemu: scripts/vm.sh; at most [`GUEST_ROUNDS`] rounds), host-local,
//! floors. `--only` runs a subset (a full run takes about twelve minutes on two cores).
//!
//! `cni-bench --guest ipvlan [--rounds N] [--ours DIR] [--reference DIR]` is the ipvlan section's
//! side inside the guest (see secondary.rs); the host's bench starts it.

mod chain;
mod dns;
mod exec;
mod floors;
mod host_local;
mod machine;
mod plugins;
mod podman;
mod ptp_bandwidth;
mod secondary;
mod stats;
mod table;

use anyhow::Context;
use chain::{Chain, ChainResults};
use stats::Samples;
use std::path::{Path, PathBuf};
use std::time::Duration;
use table::Table;

struct Options {
    ours: PathBuf,
    reference: PathBuf,
    cnitool: PathBuf,
    rounds: usize,
    population: usize,
    only: Option<Vec<String>>,
    /// `--guest SECTION`: this run is that section's side inside the qemu guest.
    guest: Option<String>,
}

const SECTIONS: [&str; 10] =
    ["chain", "dns", "plugins", "podman", "kubernetes", "ptp-bandwidth", "macvlan", "ipvlan", "host-local", "floors"];

/// The ipvlan section's rounds at most: under TCG emulation a plugin run takes tens of times as
/// long as on the host, and the section is meant to take a few minutes with the guest's boot.
const GUEST_ROUNDS: usize = 25;

impl Options {
    fn wants(&self, section: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|s| s == section))
    }
}

fn options() -> anyhow::Result<Options> {
    let mut opts = Options {
        ours: PathBuf::from("target/release"),
        reference: PathBuf::from("/usr/lib/cni"),
        cnitool: PathBuf::from("target/tools/cnitool"),
        rounds: 50,
        population: 500,
        only: None,
        guest: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--ours" => opts.ours = value()?.into(),
            "--reference" => opts.reference = value()?.into(),
            "--cnitool" => opts.cnitool = value()?.into(),
            "--rounds" => opts.rounds = value()?.parse().context("--rounds")?,
            "--population" => opts.population = value()?.parse().context("--population")?,
            "--only" => {
                let only: Vec<String> = value()?.split(',').map(str::to_string).collect();
                if let Some(unknown) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    anyhow::bail!("--only: no section {unknown} (sections: {})", SECTIONS.join(", "));
                }
                opts.only = Some(only);
            }
            "--guest" => {
                let section = value()?;
                anyhow::ensure!(section == "ipvlan", "--guest: only the ipvlan section runs in the guest");
                opts.guest = Some(section);
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    opts.ours = std::fs::canonicalize(&opts.ours).with_context(|| format!("{}", opts.ours.display()))?;
    if opts.guest.is_none() {
        opts.cnitool = std::fs::canonicalize(&opts.cnitool).context("cnitool (make cnitool)")?;
    }
    Ok(opts)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::env::var_os("CNI_SANDBOX").is_some(),
        "cni-bench creates bridges and firewall rules: run it through scripts/bench.sh (make bench)"
    );
    let opts = options()?;
    if opts.guest.is_some() {
        return secondary::guest(&opts.ours, &opts.reference, opts.rounds);
    }
    let work = PathBuf::from(std::env::var("SANDBOX_WORK").context("SANDBOX_WORK")?);
    let has_reference = plugins::PLUGINS.iter().all(|p| opts.reference.join(p).is_file());
    let reference_dir = has_reference.then_some(&opts.reference);
    let populations = [10, opts.population];
    let mut table = Table::default();

    // The chain through cnitool.
    let mut chains = None;
    if opts.wants("chain") {
        eprintln!("bench: chain, ours");
        let ours = Chain::new("ours", 0, &opts.ours, &opts.cnitool, &work)?;
        let our_results = ours.run(opts.rounds, &populations)?;
        let (reference, ref_results) = match reference_dir {
            Some(dir) => {
                eprintln!("bench: chain, reference");
                let chain = Chain::new("ref", 1, dir, &opts.cnitool, &work)?;
                let results = chain.run(opts.rounds, &populations)?;
                (Some(chain), Some(results))
            }
            None => (None, None),
        };
        let r = ref_results.as_ref();
        let chain_name = "bridge+host-local+portmap via cnitool";
        table.latency(&format!("{chain_name}: ADD"), &our_results.seq_add, r.map(|r| &r.seq_add));
        table.latency(&format!("{chain_name}: DEL"), &our_results.seq_del, r.map(|r| &r.seq_del));
        table.row("20 concurrent ADDs, wall", our_results.concurrent_add, r.map(|r| r.concurrent_add));
        table.row("20 concurrent DELs, wall", our_results.concurrent_del, r.map(|r| r.concurrent_del));
        for (i, (population, adds, dels)) in our_results.growth.iter().enumerate() {
            let theirs = r.map(|r| &r.growth[i]);
            table.row(&format!("ADD median with {population} containers"), adds.median(), theirs.map(|t| t.1.median()));
            table.row(&format!("DEL median with {population} containers"), dels.median(), theirs.map(|t| t.2.median()));
        }
        chains = Some((ours, our_results, reference, ref_results));
    }

    // A Podman network with DNS: bridge + host-local + dnsname, ours against the reference's
    // bridge and host-local with Debian's dnsname (golang-github-containernetworking-plugin-dnsname).
    if opts.wants("dns") && dns::available(&opts.ours) {
        eprintln!("bench: dns chain, ours");
        let ours = dns::DnsChain::new("ours", 0, &opts.ours, &opts.cnitool, &work)?.run(opts.rounds)?;
        let theirs = match reference_dir.filter(|d| dns::available(d)) {
            Some(dir) => {
                eprintln!("bench: dns chain, reference");
                Some(dns::DnsChain::new("ref", 1, dir, &opts.cnitool, &work)?.run(opts.rounds)?)
            }
            None => None,
        };
        let t = theirs.as_ref();
        let name = "bridge+host-local+dnsname via cnitool";
        table.latency(&format!("{name}: ADD, server running"), &ours.add, t.map(|t| &t.add));
        table.latency(&format!("{name}: DEL, others remain"), &ours.del, t.map(|t| &t.del));
        table.row(
            &format!("{name}: first ADD (starts dnsmasq), median"),
            ours.first_add.median(),
            t.map(|t| t.first_add.median()),
        );
        table.row(
            &format!("{name}: last DEL (stops dnsmasq), median"),
            ours.last_del.median(),
            t.map(|t| t.last_del.median()),
        );
        let n = dns::CONCURRENT;
        table.row(&format!("{name}: {n} concurrent ADDs, wall"), ours.concurrent_add, t.map(|t| t.concurrent_add));
        table.row(&format!("{name}: {n} concurrent DELs, wall"), ours.concurrent_del, t.map(|t| t.concurrent_del));
    } else if opts.wants("dns") {
        eprintln!("bench: no dnsname or no dnsmasq (apt-get install dnsmasq-base): the dns chain is skipped");
    }

    // Each plugin alone.
    if opts.wants("plugins") {
        eprintln!("bench: plugins one by one");
        let our_costs = plugins::measure(&opts.ours, "ours", 0, &work, opts.rounds)?;
        let ref_costs = reference_dir.map(|d| plugins::measure(d, "ref", 1, &work, opts.rounds)).transpose()?;
        for (i, name) in plugins::PLUGINS.iter().enumerate() {
            let theirs = ref_costs.as_ref().map(|c| &c[i]);
            let what = if *name == "bridge" { "bridge (with host-local)".to_string() } else { name.to_string() };
            table.row(&format!("{what} ADD alone, median"), our_costs[i].add.median(), theirs.map(|t| t.add.median()));
            table.row(&format!("{what} DEL alone, median"), our_costs[i].del.median(), theirs.map(|t| t.del.median()));
        }
        for (i, name) in plugins::PLUGINS.iter().enumerate() {
            let theirs = ref_costs.as_ref().map(|c| c[i].peak_rss_kib as f64);
            table.value(&format!("{name} peak memory (RSS)"), our_costs[i].peak_rss_kib as f64, theirs, |k| {
                format!("{:.1} MiB", k / 1024.0)
            });
        }
        for name in plugins::PLUGINS.iter().chain(["host-device"].iter()) {
            let ours = plugins::size(&opts.ours, name).unwrap_or(0.0);
            let theirs = reference_dir.and_then(|d| plugins::size(d, name));
            table.value(&format!("{name} binary size"), ours, theirs, |b| format!("{:.2} MiB", b / 1048576.0));
        }
    }
    if let Some((ours, _, reference, _)) = &chains {
        let our_execs = plugins::firewall_processes(ours, 9_000)?;
        let ref_execs = reference.as_ref().map(|c| plugins::firewall_processes(c, 9_000)).transpose()?.flatten();
        if let Some((add, del)) = our_execs {
            let count = |v: f64| format!("{v:.0}");
            table.value("nft/iptables processes per chain ADD", add as f64, ref_execs.map(|e| e.0 as f64), count);
            table.value("nft/iptables processes per chain DEL", del as f64, ref_execs.map(|e| e.1 as f64), count);
        }
    }

    // Podman 4's chain, and its firewall and tuning alone.
    if opts.wants("podman") {
        eprintln!("bench: podman's chain");
        let ours_pm = podman::measure(&opts.ours, &opts.cnitool, "ours", 0, &work, opts.rounds)?;
        let ref_pm = Some(&opts.reference)
            .filter(|d| podman::available(d))
            .map(|d| podman::measure(d, &opts.cnitool, "ref", 1, &work, opts.rounds))
            .transpose()?;
        let rp = ref_pm.as_ref();
        let podman_chain = "Podman's bridge+portmap+firewall+tuning (0.4.0) via cnitool";
        table.latency(&format!("{podman_chain}: ADD"), &ours_pm.chain_add, rp.map(|r| &r.chain_add));
        table.latency(&format!("{podman_chain}: DEL"), &ours_pm.chain_del, rp.map(|r| &r.chain_del));
        table.latency(
            "firewall ADD alone (backend \"\", iptables)",
            &ours_pm.firewall_add,
            rp.map(|r| &r.firewall_add),
        );
        table.latency("firewall DEL alone", &ours_pm.firewall_del, rp.map(|r| &r.firewall_del));
        table.latency("tuning ADD alone (Podman's, no keys)", &ours_pm.tuning_add, rp.map(|r| &r.tuning_add));
        table.latency("tuning DEL alone", &ours_pm.tuning_del, rp.map(|r| &r.tuning_del));
        if let Some(ours) = ours_pm.processes {
            let theirs = rp.and_then(|r| r.processes);
            let count = |v: f64| format!("{v:.0}");
            for (i, what) in [
                "processes per Podman chain ADD",
                "... of them iptables/nft",
                "processes per Podman chain DEL",
                "... of them iptables/nft",
            ]
            .iter()
            .enumerate()
            {
                table.value(what, ours[i] as f64, theirs.map(|t| t[i] as f64), count);
            }
        }
    }

    // kind's and k3s's chains through cnitool.
    if opts.wants("kubernetes") {
        let reference = Some(&opts.reference).filter(|d| ptp_bandwidth::available(d));
        type Measure = fn(&Path, &Path, &'static str, u32, &Path, usize) -> anyhow::Result<ptp_bandwidth::ChainCosts>;
        let chains: [(&str, &str, Measure); 2] = [
            ("kind", "kind's ptp+host-local+portmap (0.3.1) via cnitool", ptp_bandwidth::kind),
            ("k3s", "k3s's bridge+host-local+portmap+bandwidth via cnitool", ptp_bandwidth::k3s),
        ];
        for (short, name, measure) in chains {
            eprintln!("bench: {short} chain");
            let ours = measure(&opts.ours, &opts.cnitool, "ours", 0, &work, opts.rounds)?;
            let theirs = reference.map(|d| measure(d, &opts.cnitool, "ref", 1, &work, opts.rounds)).transpose()?;
            let t = theirs.as_ref();
            table.latency(&format!("{name}: ADD"), &ours.add, t.map(|t| &t.add));
            table.latency(&format!("{name}: DEL"), &ours.del, t.map(|t| &t.del));
            let count = |v: f64| format!("{v:.0}");
            let verbs = [
                ("ADD", ours.add_processes, t.and_then(|t| t.add_processes)),
                ("DEL", ours.del_processes, t.and_then(|t| t.del_processes)),
            ];
            for (verb, ours, theirs) in verbs {
                let Some(ours) = ours else { continue };
                table.value(
                    &format!("processes per {short} chain {verb}"),
                    ours.all as f64,
                    theirs.map(|t| t.all as f64),
                    count,
                );
                table.value(
                    "... of them not plugins (nft, iptables, tc...)",
                    ours.not_plugins as f64,
                    theirs.map(|t| t.not_plugins as f64),
                    count,
                );
            }
        }
    }

    // kind's ptp and k3s's bandwidth, each on its own.
    if opts.wants("ptp-bandwidth") {
        eprintln!("bench: ptp and bandwidth");
        let ours_kb = ptp_bandwidth::measure(&opts.ours, "ours", 0, &work, opts.rounds)?;
        let ref_kb = Some(&opts.reference)
            .filter(|d| ptp_bandwidth::available(d))
            .map(|d| ptp_bandwidth::measure(d, "ref", 1, &work, opts.rounds))
            .transpose()?;
        let rk = ref_kb.as_ref();
        table.latency("ptp (with host-local) ADD alone", &ours_kb.ptp_add, rk.map(|r| &r.ptp_add));
        table.latency("ptp (with host-local) DEL alone", &ours_kb.ptp_del, rk.map(|r| &r.ptp_del));
        table.latency("bandwidth ADD alone (ingress + egress)", &ours_kb.bandwidth_add, rk.map(|r| &r.bandwidth_add));
        table.latency("bandwidth DEL alone", &ours_kb.bandwidth_del, rk.map(|r| &r.bandwidth_del));
    }

    // Multus' secondary networks: macvlan with static, on an uplink made for the run.
    if opts.wants("macvlan") {
        eprintln!("bench: macvlan and static");
        let a = secondary::MACVLAN_STATIC;
        secondary::make_uplink("mvbench0")?;
        let ours = a.measure(&opts.ours, "ours", "mvbench0", opts.rounds)?;
        let theirs = Some(&opts.reference)
            .filter(|d| a.available(d))
            .map(|d| a.measure(d, "ref", "mvbench0", opts.rounds))
            .transpose()?;
        let t = theirs.as_ref();
        table.latency("macvlan (with static) ADD alone", &ours.add, t.map(|t| &t.add));
        table.latency("macvlan (with static) DEL alone", &ours.del, t.map(|t| &t.del));
    }

    // ipvlan with host-local: this kernel has no ipvlan, so on the second kernel under qemu.
    if opts.wants("ipvlan") && secondary::IPVLAN_HOST_LOCAL.available(&opts.ours) {
        eprintln!("bench: ipvlan and host-local, in the qemu guest (scripts/vm.sh)");
        let (ours, theirs) = secondary::in_guest(&opts.ours, &opts.reference, opts.rounds.min(GUEST_ROUNDS))?;
        let t = theirs.as_ref();
        let name = "ipvlan (with host-local) alone, under qemu TCG emulation (compare within the row)";
        table.latency(&format!("{name}: ADD"), &ours.add, t.map(|t| &t.add));
        table.latency(&format!("{name}: DEL"), &ours.del, t.map(|t| &t.del));
    } else if opts.wants("ipvlan") {
        eprintln!("bench: no ipvlan or host-local in {}: the ipvlan section is skipped", opts.ours.display());
    }

    // host-local's store with few and many allocations.
    if opts.wants("host-local") {
        eprintln!("bench: host-local store");
        let hl_ref = reference_dir.map(|d| d.join("host-local"));
        host_local::run(&opts.ours.join("host-local"), hl_ref.as_ref(), opts.rounds, &mut table)?;
    }

    // Floors, and the targets.
    if opts.wants("floors") {
        eprintln!("bench: floors");
        let floors = floors::measure(&opts.ours, &opts.cnitool, &work, opts.rounds)?;
        table.row("floor: cnitool + loopback ADD, median", floors.cnitool_add.median(), None);
        table.row("floor: cnitool + loopback DEL, median", floors.cnitool_del.median(), None);
        table.row("floor: ip veth pair create, median", floors.veth_add.median(), None);
        table.row("floor: ip veth pair delete, median", floors.veth_del.median(), None);
        // What DEL pays to look for the reference plugins' state of an attachment when there is
        // none (the common case once a node has switched): netlink probes only, no program.
        let mut sweep = Samples::default();
        for i in 0..opts.rounds.max(1) * 10 {
            let id = firewall::Identity::new("bench-sweep", &format!("sweep-{i}"), "eth0");
            let started = std::time::Instant::now();
            firewall::reference::bridge_del(None, &id)?;
            firewall::reference::portmap_del(None, &id)?;
            sweep.push(started.elapsed());
        }
        table.row("DEL, no reference state: bridge + portmap probes, median", sweep.median(), None);
        if let Some((_, ours, _, theirs)) = &chains {
            targets(&mut table, ours, theirs.as_ref(), floors.add(), floors.del());
        }
    }

    let rendered = format!("{}\n{}", machine::describe(&opts.reference), table.render());
    println!("{rendered}");
    std::fs::create_dir_all("bench-results")?;
    std::fs::write("bench-results/latest.md", &rendered)?;
    Ok(())
}

fn targets(
    t: &mut Table,
    ours: &ChainResults,
    reference: Option<&ChainResults>,
    add_floor: Duration,
    del_floor: Duration,
) {
    let median = |s: &Samples| secs(s.median());
    if let Some(r) = reference {
        t.target("sequential ADD / reference", median(&ours.seq_add) / median(&r.seq_add), 0.2);
        t.target("sequential DEL / reference", median(&ours.seq_del) / median(&r.seq_del), 0.2);
        t.target("20 concurrent ADDs / reference", secs(ours.concurrent_add) / secs(r.concurrent_add), 0.2);
    }
    t.target("sequential ADD / ADD floor", median(&ours.seq_add) / secs(add_floor), 1.5);
    t.target("sequential DEL / DEL floor", median(&ours.seq_del) / secs(del_floor), 1.5);
    if let [(_, first_add, first_del), .., (population, last_add, last_del)] = ours.growth.as_slice() {
        t.target(&format!("ADD with {population} / with 10"), median(last_add) / median(first_add), 1.2);
        t.target(&format!("DEL with {population} / with 10"), median(last_del) / median(first_del), 1.2);
    }
}
