//! Podman 4's chain, as `podman network create` writes it (cniVersion 0.4.0: bridge with
//! host-local, portmap, firewall with `"backend": ""`, a bare tuning), driven through `cnitool`;
//! then `firewall` and `tuning` each on their own; and the processes one chain ADD and DEL start.
//! No system bus is reachable (`DBUS_SYSTEM_BUS_ADDRESS` names no socket), so both
//! implementations' firewall takes iptables, as on a host without firewalld.

use crate::chain::{netns_add, netns_del};
use crate::stats::Samples;
use anyhow::Context;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    label: &'static str,
    dir: PathBuf,
    cnitool: PathBuf,
    conf_dir: PathBuf,
    network: String,
    work: PathBuf,
    index: u32,
}

impl Podman {
    fn netns(&self, n: usize) -> String {
        format!("pm-{}-c{n}", self.label)
    }

    fn plugins(&self) -> Value {
        json!([
            {"type": "bridge", "bridge": format!("cni-podb{}", self.index), "isGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": self.work.join(format!("ipam-podman-{}", self.label)).display().to_string(),
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "ranges": [[{"subnet": format!("10.{}.0.0/16", 130 + self.index)}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall", "backend": ""},
            {"type": "tuning", "dataDir": self.work.join(format!("tuning-{}", self.label)).display().to_string()}
        ])
    }

    fn cnitool(&self, verb: &str, n: usize) -> Command {
        let mut cmd = Command::new(&self.cnitool);
        let caps = format!(
            r#"{{"portMappings":[{{"hostPort":{},"containerPort":80,"protocol":"tcp"}}]}}"#,
            30_000 + self.index * 1000 + n as u32
        );
        cmd.args([verb, &self.network, &format!("/run/netns/{}", self.netns(n))])
            .env("CNI_PATH", &self.dir)
            .env("NETCONFPATH", &self.conf_dir)
            .env("CAP_ARGS", caps)
            .env("DBUS_SYSTEM_BUS_ADDRESS", NO_BUS)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn verb(&self, verb: &str, n: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let out = self.cnitool(verb, n).output().context("starting cnitool")?;
        let took = started.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "{} podman chain {verb} {}: {}{}",
            self.label,
            self.netns(n),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    }

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

    /// Processes started by one `cnitool VERB` (cnitool itself not counted), and of them the
    /// iptables / nft ones.
    fn processes(&self, strace: &Path, verb: &str, n: usize) -> anyhow::Result<(usize, usize)> {
        let log = std::env::temp_dir().join(format!("cni-bench-podman-{}-{verb}", std::process::id()));
        let cnitool = self.cnitool(verb, n);
        let status = Command::new(strace)
            .args(["-f", "-qq", "-e", "trace=execve", "-o"])
            .arg(&log)
            .arg(cnitool.get_program())
            .args(cnitool.get_args())
            .envs(cnitool.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "cnitool {verb} under strace failed");
        let text = std::fs::read_to_string(&log)?;
        let _ = std::fs::remove_file(&log);
        let execs: Vec<&str> = text.lines().filter(|l| l.contains("execve(") && l.ends_with("= 0")).collect();
        let firewall = execs.iter().filter(|l| crate::plugins::is_firewall_exec(l)).count();
        Ok((execs.len().saturating_sub(1), firewall))
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
    let conf_dir = work.join(format!("net.d-podman-{label}"));
    std::fs::create_dir_all(&conf_dir)?;
    let p = Podman {
        label,
        dir: dir.to_path_buf(),
        cnitool: cnitool.to_path_buf(),
        conf_dir,
        network: format!("podman{index}"),
        work: work.to_path_buf(),
        index,
    };
    let conflist = json!({"cniVersion": "0.4.0", "name": p.network, "plugins": p.plugins()});
    std::fs::write(p.conf_dir.join(format!("{}.conflist", p.network)), conflist.to_string())?;
    let count = rounds.max(1) + 1;
    for n in 0..count {
        netns_add(&p.netns(n))?;
    }
    let outcome = (|| {
        let mut r = PodmanResults::default();
        // Warm-up: the bridge, the tables and the chains.
        p.verb("add", 0)?;
        p.verb("del", 0)?;
        for n in 0..rounds {
            r.chain_add.push(p.verb("add", n)?);
        }
        for n in 0..rounds {
            r.chain_del.push(p.verb("del", n)?);
        }
        let strace = ["/usr/bin/strace", "/bin/strace"].into_iter().map(PathBuf::from).find(|s| s.is_file());
        if let Some(strace) = strace {
            let (add, add_fw) = p.processes(&strace, "add", rounds)?;
            let (del, del_fw) = p.processes(&strace, "del", rounds)?;
            r.processes = Some([add, add_fw, del, del_fw]);
        }

        // firewall and tuning alone, on an attachment that bridge made (not timed).
        let netns = format!("/run/netns/{}", p.netns(0));
        let plugins = p.plugins();
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
    })();
    for n in 0..count {
        netns_del(&p.netns(n));
    }
    outcome
}

/// Whether `dir` has every plugin of Podman's chain.
pub fn available(dir: &Path) -> bool {
    ["bridge", "host-local", "portmap", "firewall", "tuning"].iter().all(|p| dir.join(p).is_file())
}
