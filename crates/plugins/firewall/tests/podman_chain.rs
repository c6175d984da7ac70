//! Kill injection through Podman 4's whole chain: `bridge` (host-local under it), `portmap`,
//! `firewall` (`"backend": ""`, no system bus here, so iptables) and a bare `tuning`, at
//! cniVersion 0.4.0, as `podman network create` writes it. Each step of ADD is SIGKILLed in turn,
//! as a runtime's timeout would; the runtime then calls DEL through the chain in reverse without a
//! result (the ADD failed) and later GC. After them the host must hold nothing of the container:
//! no veth, no address file, no nftables entry, no iptables rule naming its address, no firewall
//! record, no tuning file; and the next ADD of the same container must work.
//!
//! The steps are the plugins' trace marks and fault points; debug builds kill themselves at the
//! one named in `CNI_RS_FAULT`. Needs every plugin built (`cargo build --workspace`).

use serde_json::{Value, json};
use std::process::Command;
use testkit::{Invocation, Netns, Output, TempDir, in_netns, ip, ip_json, new_netns, nft_ruleset};

const NETWORK: &str = "podman";
const CONTAINER: &str = "ctr-podman-chain";

struct Host {
    ns: Netns,
    ipam: TempDir,
    firewall: TempDir,
    tuning: TempDir,
}

impl Host {
    fn new() -> Host {
        let h = Host {
            ns: new_netns(),
            ipam: TempDir::new("podman-chain-ipam"),
            firewall: TempDir::new("podman-chain-firewall"),
            tuning: TempDir::new("podman-chain-tuning"),
        };
        ip(&h.ns, "link set lo up");
        // A host whose forward path drops, as where the firewall plugin matters.
        iptables(&h.ns, &["-P", "FORWARD", "DROP"]);
        h
    }

    /// Podman 4's conflist (libpod/network/cni), with each plugin's state in this test's directories.
    fn plugins(&self) -> Vec<Value> {
        vec![
            json!({"type": "bridge", "bridge": "cni-podman9", "isGateway": true, "ipMasq": true, "hairpinMode": true,
                   "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                            "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.45.0.0/24", "gateway": "10.45.0.1"}]]}}),
            json!({"type": "portmap", "capabilities": {"portMappings": true},
                   "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}),
            json!({"type": "firewall", "backend": "", "dataDir": self.firewall.path().display().to_string()}),
            json!({"type": "tuning", "dataDir": self.tuning.path().display().to_string()}),
        ]
    }

    fn conf(plugin: &Value, prev: Option<&Value>) -> Value {
        let mut c = plugin.clone();
        c["cniVersion"] = json!("0.4.0");
        c["name"] = json!(NETWORK);
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn run(&self, verb: &str, c: &Netns, conf: &Value, fault: Option<&str>) -> Output {
        let plugin = conf["type"].as_str().unwrap();
        Invocation::new(verb, CONTAINER, c.path(), "eth0", &conf.to_string())
            .var("CNI_RS_FAULT", fault)
            // No system bus: "backend": "" means iptables, whatever runs on the machine.
            .var("DBUS_SYSTEM_BUS_ADDRESS", Some("unix:path=/nonexistent/podman-chain-bus"))
            .run(&testkit::plugin(plugin), &self.ns)
    }

    /// ADD through the chain, stopping at the first failure as libcni does.
    fn add(&self, c: &Netns, fault: Option<&str>) -> Result<Value, String> {
        let mut prev: Option<Value> = None;
        for p in self.plugins() {
            let out = self.run("ADD", c, &Host::conf(&p, prev.as_ref()), fault);
            if !out.success() {
                return Err(format!("{}: {} {}", p["type"], out.exit_code, out.stdout));
            }
            prev = Some(out.json());
        }
        Ok(prev.unwrap())
    }

    /// DEL through the chain in reverse; `prev` is the ADD's result if it succeeded.
    fn del(&self, c: &Netns, prev: Option<&Value>) {
        for p in self.plugins().iter().rev() {
            let out = self.run("DEL", c, &Host::conf(p, prev), None);
            assert!(out.success(), "DEL {}: {}", p["type"], out.stdout);
        }
    }

    /// GC (cniVersion 1.1.0, as libcni sends it) with no valid attachment left.
    fn gc(&self) {
        for p in self.plugins() {
            let mut conf = Host::conf(&p, None);
            conf["cniVersion"] = json!("1.1.0");
            conf["cni.dev/valid-attachments"] = json!([]);
            Invocation::new("GC", "", "", "", &conf.to_string())
                .var("CNI_CONTAINERID", None)
                .var("CNI_NETNS", None)
                .var("CNI_IFNAME", None)
                .var("DBUS_SYSTEM_BUS_ADDRESS", Some("unix:path=/nonexistent/podman-chain-bus"))
                .run(&testkit::plugin(p["type"].as_str().unwrap()), &self.ns)
                .ok();
        }
    }

    /// What of the container is left in the host, or an empty list.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for l in ip_json(&self.ns, "link show type veth").as_array().unwrap() {
            left.push(format!("veth {}", l["ifname"]));
        }
        left.extend(testkit::host_local_leftovers(&self.ipam.path().join(NETWORK)));
        let rules = nft_ruleset(&self.ns);
        for marker in ["chain masq-", "chain pm-", "chain pms-", "10.45.0."] {
            if rules.contains(marker) {
                left.push(format!("nftables {marker:?}"));
            }
        }
        let filter = iptables(&self.ns, &["-S"]);
        left.extend(filter.lines().filter(|l| l.contains("10.45.0.")).map(|l| format!("iptables {l}")));
        for dir in
            [self.firewall.path().to_path_buf(), self.firewall.path().join("addr"), self.tuning.path().to_path_buf()]
        {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    // The firewall's lock file stays, as host-local's: it is no attachment's.
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name != "lock" && !name.starts_with('.') && e.path().is_file() {
                        left.push(format!("file {}", e.path().display()));
                    }
                }
            }
        }
        left
    }
}

fn iptables(ns: &Netns, args: &[&str]) -> String {
    let out = in_netns(Command::new("iptables").args(args), ns).output().expect("iptables");
    assert!(out.status.success(), "iptables {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const STEPS: &[&str] = &[
    "bridge:main",
    "bridge:bridge ready",
    "bridge:veth created",
    "bridge:port set",
    "bridge:delegate host-local start",
    "host-local:main",
    "host-local:locked",
    "host-local:allocated",
    "host-local:committed",
    "host-local:exit",
    "bridge:delegate host-local done",
    "bridge:container configured",
    "bridge:gateway set",
    "bridge:firewall installed",
    "bridge:port up",
    "bridge:exit",
    "portmap:main",
    "portmap:nftables published",
    "portmap:exit",
    "firewall:main",
    "firewall:added-IPv4",
    "firewall:exit",
    // Podman's bare tuning changes nothing: it passes prevResult through.
    "tuning:main",
    "tuning:exit",
];

#[test]
fn a_kill_at_any_step_of_podmans_chain_is_cleaned_up_by_del_and_gc() {
    let h = Host::new();
    let c = new_netns();
    // A clean run first, so the bridge, the tables and the chains exist as on a busy host.
    let r = h.add(&c, None).expect("a clean ADD");
    assert!(iptables(&h.ns, &["-S", "CNI-FORWARD"]).contains("-s 10.45.0.2/32 -j ACCEPT"), "firewall ran");
    h.del(&c, Some(&r));
    assert_eq!(h.leftovers(), Vec::<String>::new());

    let mut left_by_kills = 0;
    for step in STEPS {
        let fault = format!("{step}=kill");
        let err = h.add(&c, Some(&fault)).expect_err(step);
        if !h.leftovers().is_empty() {
            left_by_kills += 1;
        }
        // The killed plugin exits by a signal; bridge reports a killed host-local as its own error.
        let by_signal = err.contains(" -1 ");
        assert!(by_signal || (step.starts_with("host-local") && err.contains("SIGKILL")), "{step}: {err}");
        // The runtime saw a failed ADD: DEL without a result, then GC.
        h.del(&c, None);
        assert_eq!(h.leftovers(), Vec::<String>::new(), "after DEL, killed at {step}");
        h.gc();
        assert_eq!(h.leftovers(), Vec::<String>::new(), "after GC, killed at {step}");
        // The container can be started again, and goes cleanly.
        let r = h.add(&c, None).unwrap_or_else(|e| panic!("ADD after a kill at {step}: {e}"));
        assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.45.0."), "{step}: {r}");
        h.del(&c, Some(&r));
        assert_eq!(h.leftovers(), Vec::<String>::new(), "after the second DEL, killed at {step}");
    }
    // The kills left work behind for DEL (from the veth on), so the checks above mean something.
    assert!(left_by_kills >= 18, "only {left_by_kills} kills left anything behind");
}
