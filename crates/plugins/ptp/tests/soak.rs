//! A short soak of k8s-on-ptp: parallel workers run the chain ptp (host-local, masquerade) +
//! bandwidth through ADD and DEL cycles, SIGKILLing a plugin at a random moment in some of them
//! (as a runtime's timeout does) and sometimes removing the netns before DEL. Each worker then
//! behaves as a runtime: a failed ADD is followed by DEL without a result, a killed DEL is
//! retried. At the end, after GC, nothing of any container may be left: no veth, no ifb, no host
//! route, no address file, no masquerade.
//!
//! Needs the bandwidth and host-local binaries built next to ptp (`cargo build --workspace`, as
//! `make test` does).

use serde_json::{Value, json};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::{Invocation, Netns, TempDir, ip, ip_json, new_netns, nft_ruleset};

const NETWORK: &str = "soak";
const WORKERS: usize = 4;
const CYCLES: usize = 12;

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

struct Soak {
    host: Netns,
    ipam: TempDir,
    /// Plugin runs that died by our SIGKILL.
    killed: AtomicUsize,
}

impl Soak {
    fn ptp_conf(&self, prev: Option<&Value>) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "ptp", "ipMasq": true, "mtu": 1400,
            "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                     "ranges": [[{"subnet": "10.46.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}});
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn bw_conf(prev: Option<&Value>) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "bandwidth",
            "runtimeConfig": {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000,
                                            "egressRate": 8_000_000, "egressBurst": 80_000}}});
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    /// Runs one plugin, SIGKILLed after `kill` if it has not finished by then. `Some(result)` when
    /// it succeeded (`Null` for a verb without output).
    fn run(
        &self,
        plugin: &str,
        verb: &str,
        cid: &str,
        netns: &str,
        conf: &Value,
        kill: Option<Duration>,
    ) -> Option<Value> {
        let path = testkit::plugin(plugin);
        let mut child = Invocation::new(verb, cid, netns, "eth0", &conf.to_string()).spawn(&path, Some(&self.host));
        if let Some(delay) = kill {
            let deadline = Instant::now() + delay;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            let _ = child.kill();
        }
        let out = child.wait_with_output().ok()?;
        if out.status.signal().is_some() {
            self.killed.fetch_add(1, Ordering::Relaxed);
        }
        if !out.status.success() {
            return None;
        }
        Some(if out.stdout.is_empty() { Value::Null } else { serde_json::from_slice(&out.stdout).ok()? })
    }

    fn cycle(&self, rng: &mut Rng, cid: &str) {
        let ctr = new_netns();
        let netns = ctr.path().to_string();
        let kill = |rng: &mut Rng| rng.percent(35).then(|| Duration::from_micros(rng.next() % 40_000));
        let added = self
            .run("ptp", "ADD", cid, &netns, &self.ptp_conf(None), kill(rng))
            .and_then(|prev| self.run("bandwidth", "ADD", cid, &netns, &Soak::bw_conf(Some(&prev)), kill(rng)));
        if rng.percent(25) {
            ctr.remove();
        }
        // DEL in reverse, retried until it succeeds (bounded), as a runtime does.
        for (plugin, conf) in [("bandwidth", Soak::bw_conf(added.as_ref())), ("ptp", self.ptp_conf(added.as_ref()))] {
            let mut first = kill(rng);
            let done = (0..5).any(|_| self.run(plugin, "DEL", cid, &netns, &conf, first.take()).is_some());
            assert!(done, "{plugin} DEL of {cid} never succeeded");
        }
    }

    fn gc(&self) {
        for (plugin, mut conf) in [("bandwidth", Soak::bw_conf(None)), ("ptp", self.ptp_conf(None))] {
            conf["cni.dev/valid-attachments"] = json!([]);
            let out = Invocation::new("GC", "", "", "", &conf.to_string())
                .var("CNI_CONTAINERID", None)
                .var("CNI_NETNS", None)
                .var("CNI_IFNAME", None)
                .run(&testkit::plugin(plugin), &self.host);
            assert!(out.success(), "{plugin} GC: {}", out.stdout);
        }
    }

    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for kind in ["veth", "ifb"] {
            for l in ip_json(&self.host, &format!("link show type {kind}")).as_array().unwrap() {
                left.push(format!("{kind} {}", l["ifname"]));
            }
        }
        left.extend(testkit::host_local_leftovers(&self.ipam.path().join(NETWORK)));
        let routes = ip(&self.host, "route show");
        if routes.contains("10.46.0.") {
            left.push(format!("routes: {routes}"));
        }
        let rules = nft_ruleset(&self.host);
        if rules.contains("10.46.0.") || rules.contains("chain masq-") {
            left.push(format!("nftables: {rules}"));
        }
        left
    }
}

#[test]
fn parallel_cycles_with_random_kills_leave_nothing() {
    let soak = Soak { host: new_netns(), ipam: TempDir::new("ptp-soak-ipam"), killed: AtomicUsize::new(0) };
    ip(&soak.host, "link set lo up");
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("soak seed {seed}");
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let soak = &soak;
            s.spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(w as u64 + 1) | 1);
                for c in 0..CYCLES {
                    soak.cycle(&mut rng, &format!("soak-{w}-{c}"));
                }
            });
        }
    });
    soak.gc();
    assert_eq!(soak.leftovers(), Vec::<String>::new(), "seed {seed}");
    // Enough plugins died mid-way for the count above to mean something.
    let killed = soak.killed.load(Ordering::Relaxed);
    eprintln!("soak: {} cycles, {killed} plugin runs killed", WORKERS * CYCLES);
    assert!(killed >= 5, "only {killed} kills landed (seed {seed})");
}
