//! `cni-soak`: many ADD/DEL cycles on two bridge networks that share one subnet, with a published
//! port per container that several containers contend for, from parallel workers, with plugins SIGKILLed at random moments (as a runtime's timeout kills
//! them), then a count of everything left behind. It creates bridges, namespaces and firewall
//! rules, so it runs only inside the sandbox of `scripts/soak.sh` (`make soak`).
//!
//!   cni-soak [--cycles N] [--workers N] [--plugins DIR] [--kill-percent N] [--kill-within-ms N]
//!            [--lose-address]
//!
//! A kill lands at a random moment within `--kill-within-ms` (8) of the plugin's start; a wider
//! window reaches the slow plugins' later steps (the firewall plugin's iptables-restore on a
//! loaded machine).
//!
//! With `SOAK_DEBUG` set, a failed CHECK prints the portmap table as it is at that moment.
//!
//! `--lose-address` is the soak's own test: one running container's address file is removed
//! behind the plugins' back (as a buggy IPAM would lose it), and the run must fail saying so.
//!
//! Each worker plays a runtime: it runs its network's chain itself, bridge (with host-local) +
//! portmap on the first network, Podman 4's bridge + portmap + firewall + tuning on the second,
//! passing `prevResult` along and to DEL in reverse order, keeps up to three containers running
//! at a time, and after a failed or killed ADD calls DEL without a result, as runtimes do. A
//! killed DEL is retried. Every few seconds both networks are garbage-collected with the running
//! containers as the valid ones, and those must keep their addresses, and pass CHECK: each still
//! holds its published port (first in line or behind another holder), its masquerade and on the
//! second network its firewall accept, whatever the other network's containers with the same
//! address and the other holders of its port did. At the end every container is deleted, GC runs
//! with nothing valid, and the host must hold no veth, address file, index entry, nftables entry,
//! iptables rule, firewall record or tuning file of any container.

use anyhow::Context;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// The two networks, each on its own bridge, both on 10.66.0.0/16 (as Podman's and containerd's
/// default networks share 10.88.0.0/16): the same address is often live on both at once.
const NETWORKS: [(&str, &str); 2] = [("soak", "cni-soak"), ("soak2", "cni-soak2")];

/// Each network's chain: a bridge network with published ports (containerd's), and Podman 4's
/// (`firewall` with `"backend": ""`, which is iptables here: the sandbox has no system bus; a bare
/// `tuning`).
const CHAINS: [&[&str]; 2] = [&["bridge", "portmap"], &["bridge", "portmap", "firewall", "tuning"]];

/// Host ports the containers publish: few, so that several containers hold each at once.
const PORTS: u16 = 8;

struct Options {
    cycles: usize,
    workers: usize,
    plugins: PathBuf,
    kill_percent: u64,
    kill_within_ms: u64,
    lose_address: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        cycles: 2000,
        workers: 8,
        plugins: PathBuf::from("target/release"),
        kill_percent: 10,
        kill_within_ms: 8,
        lose_address: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--cycles" => o.cycles = value()?.parse()?,
            "--workers" => o.workers = value()?.parse()?,
            "--plugins" => o.plugins = value()?.into(),
            "--kill-percent" => o.kill_percent = value()?.parse()?,
            "--kill-within-ms" => o.kill_within_ms = value()?.parse::<u64>()?.max(1),
            "--lose-address" => o.lose_address = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    o.plugins = std::fs::canonicalize(&o.plugins)?;
    Ok(o)
}

/// A small xorshift generator: the soak needs cheap randomness, not a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

enum Outcome {
    Ok(Value),
    Failed(String),
    Killed,
}

#[derive(Default)]
struct Counts {
    cycles: AtomicUsize,
    adds: AtomicUsize,
    add_kills: AtomicUsize,
    dels: AtomicUsize,
    del_kills: AtomicUsize,
    del_retries: AtomicUsize,
    gcs: AtomicUsize,
    unexpected: Mutex<Vec<String>>,
}

impl Counts {
    fn unexpected(&self, what: String) {
        eprintln!("soak: unexpected: {what}");
        self.unexpected.lock().unwrap().push(what);
    }
}

struct Soak {
    plugins: PathBuf,
    data_dir: PathBuf,
    kill_percent: u64,
    kill_within_ms: u64,
    lose_address: bool,
    counts: Counts,
    /// (network, address) -> the running container there.
    live: Mutex<HashMap<(String, String), Running>>,
    /// Cycles hold it for reading; GC takes it for writing, so no ADD is half done during a GC.
    world: RwLock<()>,
    /// With `SOAK_LOG=<file>`: every plugin run, one line each (when, container, verb, plugin,
    /// address, kill delay, outcome), to follow one attachment's story when something is left.
    log: Option<Mutex<std::fs::File>>,
    started: Instant,
}

/// A container that runs now: its ID, netns path, published port and chain result.
#[derive(Clone)]
struct Running {
    cid: String,
    netns: String,
    port: u16,
    result: Value,
}

impl Soak {
    fn bridge_conf(&self, net: usize) -> Value {
        let (name, bridge) = NETWORKS[net];
        json!({"cniVersion": "1.1.0", "name": name, "type": "bridge", "bridge": bridge,
               "isGateway": true, "ipMasq": true, "hairpinMode": true,
               "ipam": {"type": "host-local", "dataDir": self.data_dir.display().to_string(),
                        "ranges": [[{"subnet": "10.66.0.0/16"}]]}})
    }

    /// The config of `plugin` in network `net`'s chain, with `prev` as its `prevResult`.
    fn conf(&self, net: usize, plugin: &str, port: u16, prev: Option<&Value>) -> Value {
        let name = NETWORKS[net].0;
        let mut c = match plugin {
            "bridge" => self.bridge_conf(net),
            "portmap" => json!({"cniVersion": "1.1.0", "name": name, "type": "portmap",
                               "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}}),
            "firewall" => json!({"cniVersion": "1.1.0", "name": name, "type": "firewall", "backend": "",
                                "dataDir": self.data_dir.join("firewall").display().to_string()}),
            "tuning" => json!({"cniVersion": "1.1.0", "name": name, "type": "tuning",
                              "dataDir": self.data_dir.join("tuning").display().to_string()}),
            other => unreachable!("no plugin {other} in a chain"),
        };
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    /// Which plugin of a chain of `len` a kill goes to: the first (bridge, the slow one) in
    /// `first_percent` of the cases, else one of the others.
    fn victim(rng: &mut Rng, len: usize, first_percent: u64) -> usize {
        if rng.percent(first_percent) { 0 } else { 1 + (rng.next() % (len as u64 - 1)) as usize }
    }

    /// Runs one plugin; with `kill_after`, SIGKILLs it then if it is still running.
    fn exec(
        &self,
        plugin: &str,
        verb: &str,
        cid: &str,
        netns: &str,
        conf: &Value,
        kill_after: Option<Duration>,
    ) -> Outcome {
        let started = Instant::now();
        let mut child = match Command::new(self.plugins.join(plugin))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.plugins)
            // No system bus: nothing reaches a bus outside the sandbox, and `"backend": ""` is iptables.
            .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", self.data_dir.join("no-bus").display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(format!("spawn {plugin}: {e}")),
        };
        let _ = child.stdin.take().map(|mut s| s.write_all(conf.to_string().as_bytes()));
        if let Some(delay) = kill_after {
            std::thread::sleep(delay);
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
        }
        let mut out = String::new();
        let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
        let outcome = match child.wait() {
            Ok(s) if s.success() => Outcome::Ok(serde_json::from_str(&out).unwrap_or(Value::Null)),
            Ok(s) if s.code().is_none() => Outcome::Killed,
            Ok(_) => Outcome::Failed(format!("{plugin} {verb} {cid}: {out}")),
            Err(e) => Outcome::Failed(format!("{plugin} {verb} {cid}: {e}")),
        };
        if let Some(log) = &self.log {
            let addr = match &outcome {
                Outcome::Ok(result) if !address(result).is_empty() => address(result),
                _ => address(&conf["prevResult"]),
            };
            let what = match &outcome {
                Outcome::Ok(_) => "ok".to_string(),
                Outcome::Killed => "KILLED".to_string(),
                Outcome::Failed(why) => format!("FAILED {why}"),
            };
            let line = format!(
                "{:10.3} {} {} {} {} {} kill={:?} {}\n",
                started.duration_since(self.started).as_secs_f64() * 1000.0,
                self.started.elapsed().as_secs_f64() * 1000.0,
                if cid.is_empty() { conf["name"].as_str().unwrap_or("") } else { cid },
                verb,
                plugin,
                if addr.is_empty() { "-" } else { &addr },
                kill_after.map(|d| d.as_micros()),
                what,
            );
            let _ = log.lock().unwrap().write_all(line.as_bytes());
        }
        outcome
    }

    fn kill_delay(&self, rng: &mut Rng) -> Option<Duration> {
        rng.percent(self.kill_percent).then(|| Duration::from_micros(rng.next() % (self.kill_within_ms * 1000)))
    }

    /// ADD through the chain; `None` when it failed or was killed (then DEL has been done).
    fn add(&self, rng: &mut Rng, net: usize, cid: &str, netns: &str, port: u16) -> Option<Value> {
        self.counts.adds.fetch_add(1, Ordering::Relaxed);
        let chain = CHAINS[net];
        let kill = self.kill_delay(rng);
        let victim = Soak::victim(rng, chain.len(), 60);
        let mut prev: Option<Value> = None;
        let mut outcome = Outcome::Failed("empty chain".into());
        for (i, plugin) in chain.iter().enumerate() {
            let conf = self.conf(net, plugin, port, prev.as_ref());
            outcome = self.exec(plugin, "ADD", cid, netns, &conf, kill.filter(|_| i == victim));
            match &outcome {
                Outcome::Ok(result) => prev = Some(result.clone()),
                _ => break,
            }
        }
        match outcome {
            Outcome::Ok(result) => return Some(result),
            Outcome::Killed => {
                self.counts.add_kills.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(why) => self.counts.unexpected(format!("ADD failed without a kill: {why}")),
        }
        // What a runtime does after a failed ADD.
        self.del(rng, net, cid, netns, port, None, false);
        None
    }

    /// DEL through the chain in reverse, retried until it succeeds (at most five times).
    #[allow(clippy::too_many_arguments)]
    fn del(&self, rng: &mut Rng, net: usize, cid: &str, netns: &str, port: u16, prev: Option<&Value>, may_kill: bool) {
        self.counts.dels.fetch_add(1, Ordering::Relaxed);
        let chain = CHAINS[net];
        for attempt in 0..5 {
            let kill = if may_kill && attempt == 0 { self.kill_delay(rng) } else { None };
            let victim = Soak::victim(rng, chain.len(), 60);
            let mut outcome = Outcome::Failed("empty chain".into());
            for (i, plugin) in chain.iter().enumerate().rev() {
                let conf = self.conf(net, plugin, port, prev);
                outcome = self.exec(plugin, "DEL", cid, netns, &conf, kill.filter(|_| i == victim));
                if !matches!(outcome, Outcome::Ok(_)) {
                    break;
                }
            }
            match outcome {
                Outcome::Ok(_) => return,
                Outcome::Killed => {
                    self.counts.del_kills.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed(why) => self.counts.unexpected(format!("DEL failed without a kill: {why}")),
            }
            self.counts.del_retries.fetch_add(1, Ordering::Relaxed);
        }
        self.counts.unexpected(format!("DEL of {cid} did not succeed in five attempts"));
    }

    fn gc(&self) {
        let _world = self.world.write().unwrap();
        let live = self.live.lock().unwrap().clone();
        for (net, (name, _)) in NETWORKS.iter().enumerate() {
            let valid: Vec<Value> = live
                .iter()
                .filter(|((n, _), _)| n == name)
                .map(|(_, r)| json!({"containerID": r.cid, "ifname": "eth0"}))
                .collect();
            for plugin in CHAINS[net].iter().rev() {
                let mut conf = self.conf(net, plugin, 1, None);
                conf["cni.dev/valid-attachments"] = json!(valid);
                if let Outcome::Failed(why) = self.exec(plugin, "GC", "", "", &conf, None) {
                    self.counts.unexpected(format!("GC failed: {why}"));
                }
            }
        }
        self.counts.gcs.fetch_add(1, Ordering::Relaxed);
        // Every running container keeps its address, its published port and its masquerade.
        // `live` cannot change before these checks: workers change it only while holding `world`,
        // which GC holds for writing.
        for (net, ip, cid) in lost_addresses(&self.data_dir, &live) {
            self.counts.unexpected(format!("GC released {ip} of running container {cid} on {net}"));
        }
        for ((name, _), r) in &live {
            let net = NETWORKS.iter().position(|(n, _)| n == name).expect("one of ours");
            for plugin in CHAINS[net] {
                let conf = self.conf(net, plugin, r.port, Some(&r.result));
                if let Outcome::Failed(why) = self.exec(plugin, "CHECK", &r.cid, &r.netns, &conf, None) {
                    if std::env::var_os("SOAK_DEBUG").is_some() {
                        let t =
                            Command::new("nft").args(["-a", "list", "table", "inet", "cni_portmap"]).output().unwrap();
                        eprintln!("{}", String::from_utf8_lossy(&t.stdout));
                    }
                    self.counts.unexpected(format!("CHECK of running container failed: {why}"));
                }
            }
        }
    }

    fn worker(&self, w: usize, cycles: usize) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1).wrapping_mul(0x1000_0000_01b3));
        let netns_names: Vec<String> = (0..3).map(|i| format!("soak-{w}-{i}")).collect();
        for n in &netns_names {
            netns(&["add", n]);
        }
        // Even workers on one network, odd ones on the other.
        let net = w % NETWORKS.len();
        let key = |result: &Value| (NETWORKS[net].0.to_string(), address(result));
        let mut running: VecDeque<Running> = VecDeque::new();
        for i in 0..cycles {
            let _world = self.world.read().unwrap();
            if running.len() == netns_names.len() {
                let r = running.pop_front().expect("one is running");
                self.live.lock().unwrap().remove(&key(&r.result));
                self.del(&mut rng, net, &r.cid, &r.netns, r.port, Some(&r.result), true);
            }
            let busy: Vec<&String> = running.iter().map(|r| &r.netns).collect();
            let netns = netns_names
                .iter()
                .map(|n| format!("/run/netns/{n}"))
                .find(|p| !busy.contains(&p))
                .expect("a free netns");
            let cid = format!("soak-{w}-{i}");
            let port = 20_000 + (rng.next() % u64::from(PORTS)) as u16;
            if let Some(result) = self.add(&mut rng, net, &cid, &netns, port) {
                let r = Running { cid: cid.clone(), netns, port, result };
                if let Some(other) = self.live.lock().unwrap().insert(key(&r.result), r.clone()) {
                    self.counts.unexpected(format!("{:?} given to {cid} while {} holds it", key(&r.result), other.cid));
                }
                if self.lose_address && w == 0 && running.is_empty() {
                    // The self-test: the address vanishes as if IPAM lost it; the next GC must notice.
                    let _ = std::fs::remove_file(self.data_dir.join(NETWORKS[net].0).join(address(&r.result)));
                    drop(_world);
                    self.gc();
                }
                running.push_back(r);
            }
            self.counts.cycles.fetch_add(1, Ordering::Relaxed);
        }
        // The last containers go under `world` too: a GC between taking its list of running
        // containers and checking their addresses would otherwise see these DELs as its own loss.
        for r in running {
            let _world = self.world.read().unwrap();
            self.live.lock().unwrap().remove(&key(&r.result));
            self.del(&mut rng, net, &r.cid, &r.netns, r.port, Some(&r.result), false);
        }
        for n in &netns_names {
            netns(&["del", n]);
        }
    }
}

fn netns(args: &[&str]) {
    let status = Command::new("ip").arg("netns").args(args).status();
    assert!(status.is_ok_and(|s| s.success()), "ip netns {args:?} failed");
}

/// The running containers whose address file is gone from their network's store under
/// `data_dir`, as (network, address, container).
fn lost_addresses(data_dir: &Path, live: &HashMap<(String, String), Running>) -> Vec<(String, String, String)> {
    let mut lost: Vec<(String, String, String)> = live
        .iter()
        .filter(|((net, ip), _)| !data_dir.join(net).join(ip).exists())
        .map(|((net, ip), r)| (net.clone(), ip.clone(), r.cid.clone()))
        .collect();
    lost.sort();
    lost
}

fn address(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap_or("").split('/').next().unwrap_or("").to_string()
}

/// Everything of any container still on the host.
fn leftovers(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut left = Vec::new();
    let links: Value =
        serde_json::from_slice(&Command::new("ip").args(["-j", "link", "show", "type", "veth"]).output()?.stdout)
            .unwrap_or(json!([]));
    for l in links.as_array().into_iter().flatten() {
        left.push(format!("veth {}", l["ifname"]));
    }
    for (net, _) in NETWORKS {
        left.extend(testkit::host_local_leftovers(&data_dir.join(net)));
    }
    let ruleset =
        String::from_utf8_lossy(&Command::new("nft").args(["-j", "list", "ruleset"]).output()?.stdout).into_owned();
    let ruleset: Value = serde_json::from_str(&ruleset).unwrap_or(Value::Null);
    for object in ruleset["nftables"].as_array().into_iter().flatten() {
        if let Some(chain) = object.get("chain")
            && let Some(name) = chain["name"].as_str()
            && ["masq-", "pm-", "pms-", "spoof-", "key-"].iter().any(|p| name.starts_with(p))
        {
            left.push(format!("nft chain {name}"));
        }
        if let Some(map) = object.get("map").or_else(|| object.get("set"))
            && let Some(elements) = map["elem"].as_array()
            && map["name"] != "isolated_bridges"
            && map["name"] != "isolation"
        {
            left.push(format!("{} elements in nft {}", elements.len(), map["name"]));
        }
    }
    let iptables =
        String::from_utf8_lossy(&Command::new("iptables-save").args(["-t", "nat"]).output()?.stdout).into_owned();
    let cni_chains = iptables.lines().filter(|l| l.starts_with(":CNI-")).count();
    if cni_chains > 0 {
        left.push(format!("{cni_chains} iptables CNI- chains"));
    }
    // The firewall plugin's per-address accepts (its chains CNI-FORWARD and CNI-ADMIN stay, as the
    // reference's: the admin chain is the operator's), its records and address claims, and
    // tuning's saved originals.
    let filter =
        String::from_utf8_lossy(&Command::new("iptables-save").args(["-t", "filter"]).output()?.stdout).into_owned();
    left.extend(
        filter.lines().filter(|l| l.starts_with("-A") && l.contains("10.66.")).map(|l| format!("iptables {l}")),
    );
    for dir in ["firewall", "firewall/addr", "tuning"] {
        for entry in std::fs::read_dir(data_dir.join(dir)).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "lock" && entry.path().is_file() {
                left.push(format!("{dir} file {name}"));
            }
        }
    }
    Ok(left)
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::env::var_os("CNI_SANDBOX").is_some(),
        "cni-soak creates bridges and firewall rules: run it through scripts/soak.sh (make soak)"
    );
    let o = options()?;
    let work = PathBuf::from(std::env::var("SANDBOX_WORK").context("SANDBOX_WORK")?);
    let soak = Soak {
        plugins: o.plugins.clone(),
        data_dir: work.join("soak-ipam"),
        kill_percent: o.kill_percent,
        kill_within_ms: o.kill_within_ms,
        lose_address: o.lose_address,
        counts: Counts::default(),
        live: Mutex::new(HashMap::new()),
        world: RwLock::new(()),
        log: match std::env::var_os("SOAK_LOG") {
            Some(path) => Some(Mutex::new(std::fs::File::create(&path).context("creating SOAK_LOG")?)),
            None => None,
        },
        started: Instant::now(),
    };
    let started = Instant::now();
    let per_worker = o.cycles.div_ceil(o.workers);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..o.workers {
            let soak = &soak;
            let done = &done;
            s.spawn(move || {
                soak.worker(w, per_worker);
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        // A GC over the running containers every few seconds while the workers run.
        s.spawn(|| {
            let mut last = Instant::now();
            while done.load(Ordering::Relaxed) < o.workers {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= Duration::from_secs(3) && done.load(Ordering::Relaxed) < o.workers {
                    soak.gc();
                    last = Instant::now();
                }
            }
        });
    });
    soak.gc(); // nothing is running now: everything of the network may go
    let left = leftovers(&soak.data_dir)?;
    let c = &soak.counts;
    let unexpected = c.unexpected.lock().unwrap().clone();
    println!(
        "soak: {} cycles by {} workers in {:.1}s: {} ADDs ({} killed), {} DELs ({} killed, {} retries), {} GCs",
        c.cycles.load(Ordering::Relaxed),
        o.workers,
        started.elapsed().as_secs_f64(),
        c.adds.load(Ordering::Relaxed),
        c.add_kills.load(Ordering::Relaxed),
        c.dels.load(Ordering::Relaxed),
        c.del_kills.load(Ordering::Relaxed),
        c.del_retries.load(Ordering::Relaxed),
        c.gcs.load(Ordering::Relaxed),
    );
    println!("soak: {} unexpected failures, {} leftovers", unexpected.len(), left.len());
    for l in &left {
        println!("  left: {l}");
    }
    if o.lose_address {
        // The self-test passes when the soak caught the loss it staged (GC's check, and CHECK of
        // that container: its IPAM finds no address) and nothing else. Every GC that runs while
        // the container lives reports it again: how many do depends on timing.
        let caught = unexpected.iter().filter(|u| u.starts_with("GC released")).count();
        let only_it = unexpected.iter().all(|u| u.contains("soak-0-0"));
        anyhow::ensure!(caught >= 1 && only_it, "the soak did not catch the lost address it staged");
        println!("soak: self-test: the staged loss of an address was reported");
        return Ok(());
    }
    anyhow::ensure!(unexpected.is_empty() && left.is_empty(), "the soak found problems (above)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_containers_missing_address_is_reported() {
        let dir = std::env::temp_dir().join(format!("soak-lost-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("soak")).unwrap();
        std::fs::write(dir.join("soak").join("10.66.0.2"), "a\r\neth0").unwrap();
        let running = |cid: &str| Running { cid: cid.into(), netns: String::new(), port: 1, result: Value::Null };
        let key = |net: &str, ip: &str| (net.to_string(), ip.to_string());
        // The same address on the other network is a container of its own, with its own store.
        let live: HashMap<(String, String), Running> = [
            (key("soak", "10.66.0.2"), running("a")),
            (key("soak", "10.66.0.3"), running("b")),
            (key("soak2", "10.66.0.2"), running("c")),
        ]
        .into();
        let lost = lost_addresses(&dir, &live);
        let lost: Vec<(&str, &str, &str)> = lost.iter().map(|(n, i, c)| (n.as_str(), i.as_str(), c.as_str())).collect();
        assert_eq!(lost, [("soak", "10.66.0.3", "b"), ("soak2", "10.66.0.2", "c")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
