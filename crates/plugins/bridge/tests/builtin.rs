//! bridge runs host-local in its own process when the `host-local` that `CNI_PATH` finds is this
//! suite's, of this version (cni::suite), and executes it otherwise: a wrapper script, another
//! version of ours, the reference's. Seen from outside: the processes started (strace), and the
//! allocation in host-local's store either way.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use testkit::{Invocation, Netns, TempDir, ip, new_netns};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bridge"))
}

struct Host {
    ns: Netns,
    ipam: TempDir,
}

impl Host {
    fn new() -> Host {
        let h = Host { ns: new_netns(), ipam: TempDir::new("bridge-builtin") };
        ip(&h.ns, "link set lo up");
        h
    }

    fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "builtin", "type": "bridge", "bridge": "br-bi", "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                     "ranges": [[{"subnet": "10.13.0.0/24"}]]}
        })
    }

    /// Runs bridge under `strace -f` with `cni_path`; returns its stdout, exit code and the
    /// programs it executed (bridge itself first).
    fn run(&self, command: &str, c: &Netns, cni_path: &str, conf: &Value) -> (String, i32, Vec<String>) {
        let log = self.ipam.path().join(format!("strace-{command}"));
        let mut wrapper: Vec<&std::ffi::OsStr> =
            ["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o"]
                .iter()
                .map(|s| s.as_ref())
                .collect();
        wrapper.push(log.as_os_str());
        let out = Invocation::new(command, "cid-builtin", c.path(), "eth0", &conf.to_string())
            .var("CNI_PATH", Some(cni_path))
            .spawn_under(&wrapper, &bin(), Some(&self.ns))
            .wait_with_output()
            .expect("waiting for strace");
        let trace = std::fs::read_to_string(&log).expect("strace log");
        let programs = trace
            .lines()
            .filter(|l| l.contains("execve(") && (l.ends_with("= 0") || l.contains("<unfinished")))
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .collect();
        (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap_or(-1), programs)
    }

    fn allocations(&self) -> usize {
        let dir = self.ipam.path().join("builtin");
        std::fs::read_dir(&dir)
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("10.13.0.")).count())
            .unwrap_or(0)
    }

    /// ADD then DEL with `cni_path`; returns the programs each started besides bridge.
    fn add_del(&self, cni_path: &Path) -> (Vec<String>, Vec<String>) {
        let c = new_netns();
        let path = cni_path.display().to_string();
        let (stdout, code, add) = self.run("ADD", &c, &path, &self.conf());
        assert_eq!(code, 0, "ADD failed: {stdout}");
        let result: Value = serde_json::from_str(&stdout).unwrap();
        assert!(result["ips"][0]["address"].as_str().unwrap().starts_with("10.13.0."), "{result}");
        assert_eq!(self.allocations(), 1, "host-local's store after ADD");
        let mut conf = self.conf();
        conf["prevResult"] = result;
        let (stdout, code, del) = self.run("DEL", &c, &path, &conf);
        assert_eq!(code, 0, "DEL failed: {stdout}");
        assert_eq!(self.allocations(), 0, "host-local's store after DEL");
        let others = |p: Vec<String>| p.into_iter().skip(1).collect::<Vec<_>>();
        (others(add), others(del))
    }
}

fn dir_with(tag: &str, host_local: impl FnOnce(&Path)) -> TempDir {
    let dir = TempDir::new(tag);
    host_local(&dir.path().join("host-local"));
    dir
}

fn our_host_local() -> PathBuf {
    testkit::plugin("host-local")
}

#[test]
fn our_host_local_runs_inside_bridge_without_an_exec() {
    testkit::require_root();
    let h = Host::new();
    let dir = dir_with("builtin-copy", |p| {
        std::fs::copy(our_host_local(), p).unwrap();
    });
    let (add, del) = h.add_del(dir.path());
    assert_eq!(add, Vec::<String>::new(), "ADD executed");
    assert_eq!(del, Vec::<String>::new(), "DEL executed");
}

#[test]
fn any_other_host_local_is_executed() {
    testkit::require_root();
    let h = Host::new();
    // A wrapper script in front of ours.
    let script = dir_with("builtin-script", |p| {
        std::fs::write(p, format!("#!/bin/sh\nexec {} \"$@\"\n", our_host_local().display())).unwrap();
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    });
    let (add, del) = h.add_del(script.path());
    let wrapper = script.path().join("host-local").display().to_string();
    assert!(add.contains(&wrapper), "ADD did not execute the wrapper: {add:?}");
    assert!(del.contains(&wrapper), "DEL did not execute the wrapper: {del:?}");

    // Ours, but another version: the suite's mark differs.
    let other = dir_with("builtin-other", |p| {
        let mut bytes = std::fs::read(our_host_local()).unwrap();
        let mark = b"cni-rs plugin suite v";
        let at = bytes.windows(mark.len()).position(|w| w == mark).expect("the suite's mark");
        bytes[at + mark.len()] = b'0';
        std::fs::write(p, bytes).unwrap();
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    });
    let (add, _) = h.add_del(other.path());
    assert_eq!(add, vec![other.path().join("host-local").display().to_string()], "another version was not executed");
}
