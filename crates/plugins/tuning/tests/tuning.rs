//! Kernel tests: the built `tuning` binary, run as a runtime runs it from a sandbox "host"
//! namespace, on `eth0` of a throwaway container namespace (a veth whose other end, `veth-h`, is
//! in the host with 198.51.100.1, so traffic can cross it). Values are read from outside with
//! `ip` and `/proc/sys` inside the container. Where the reference plugin is installed
//! (/usr/lib/cni/tuning, Debian's 1.1.1 here), its results and saved files are compared with ours.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use testkit::{Invocation, Netns, Output, TempDir, ip, link, link_namespaces, new_netns, ping};

fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tuning"))
}

fn reference() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/lib/cni/tuning");
    p.is_file().then_some(p)
}

const CID: &str = "ctr-tune";

/// A sandbox host and a container with `eth0` (198.51.100.2/24) linked to the host.
struct Pod {
    host: Netns,
    ctr: Netns,
    data: TempDir,
}

impl Pod {
    fn new() -> Pod {
        let pod = Pod { host: new_netns(), ctr: new_netns(), data: TempDir::new("tuning-data") };
        link_namespaces(&pod.host, "veth-h", "198.51.100.1/24", &pod.ctr, "eth0", "198.51.100.2/24");
        pod
    }

    fn data_dir(&self) -> String {
        self.data.path().display().to_string()
    }

    fn saved_file(&self) -> PathBuf {
        self.data.path().join(format!("{CID}_eth0.json"))
    }

    /// The previous plugin's result, at `version`, reporting eth0 with its current MAC.
    fn prev_result(&self, version: &str) -> Value {
        let mac = self.eth0()["address"].clone();
        if version.starts_with("0.1") || version.starts_with("0.2") {
            return json!({"cniVersion": version, "ip4": {"ip": "198.51.100.2/24", "gateway": "198.51.100.1"},
                          "dns": {}});
        }
        let mut ipc = json!({"address": "198.51.100.2/24", "gateway": "198.51.100.1", "interface": 1});
        if version.starts_with("0.") {
            ipc["version"] = json!("4");
        }
        json!({"cniVersion": version,
               "interfaces": [{"name": "veth-h", "mac": "02:00:00:00:00:aa"},
                              {"name": "eth0", "mac": mac, "sandbox": self.ctr.path()}],
               "ips": [ipc], "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["198.51.100.1"]}})
    }

    /// A config at 1.0.0 with `keys`, the pod's dataDir and a prevResult.
    fn conf(&self, keys: Value) -> Value {
        self.conf_at("1.0.0", keys)
    }

    fn conf_at(&self, version: &str, keys: Value) -> Value {
        let mut conf = json!({"cniVersion": version, "name": "tuned", "type": "tuning", "dataDir": self.data_dir(),
                              "prevResult": self.prev_result(version)});
        for (k, v) in keys.as_object().expect("object") {
            if v.is_null() {
                conf.as_object_mut().unwrap().remove(k);
            } else {
                conf[k] = v.clone();
            }
        }
        conf
    }

    fn run(&self, plugin: &Path, command: &str, conf: &Value) -> Output {
        self.invocation(command, conf).run(plugin, &self.host)
    }

    fn invocation(&self, command: &str, conf: &Value) -> Invocation {
        Invocation::new(command, CID, self.ctr.path(), "eth0", &conf.to_string())
    }

    fn eth0(&self) -> Value {
        link(&self.ctr, "eth0").expect("eth0 in the container")
    }

    fn sysctl(&self, path: &str) -> String {
        self.ctr.run(|| netkit::sysctl::read(path)).unwrap().unwrap()
    }

    /// What tuning can change, seen from outside: the link as `ip -d` shows it and the sysctls.
    fn snapshot(&self) -> (Value, Vec<String>) {
        let mut l = ip_link_details(&self.ctr, "eth0");
        // Counters and operational state move by themselves (carrier comes a moment after the
        // veth is up, later still under emulation in the VM lane).
        for k in ["stats64", "operstate", "linkmode"] {
            l.as_object_mut().unwrap().remove(k);
        }
        l["flags"] = json!(flags(&l).into_iter().filter(|f| f != "NO-CARRIER" && f != "LOWER_UP").collect::<Vec<_>>());
        let sysctls = ["net/ipv4/conf/eth0/arp_filter", "net/ipv4/conf/eth0/rp_filter", "net/core/somaxconn"]
            .iter()
            .map(|p| self.sysctl(p))
            .collect();
        (l, sysctls)
    }
}

fn ip_link_details(ns: &Netns, name: &str) -> Value {
    testkit::ip_json(ns, &format!("-d link show dev {name}"))[0].clone()
}

fn flags(link: &Value) -> Vec<String> {
    link["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
}

/// The JSON the plugin printed for an ADD, with nothing but the interface's MAC changed.
fn with_mac(prev: &Value, mac: &str) -> Value {
    let mut expected = prev.clone();
    if let Some(ifs) = expected.get_mut("interfaces").and_then(Value::as_array_mut) {
        for i in ifs.iter_mut().filter(|i| i["name"] == "eth0") {
            i["mac"] = json!(mac);
        }
    }
    expected
}

#[test]
fn each_key_is_applied_checked_and_restored() {
    let pod = Pod::new();
    let before = pod.snapshot();
    let original_mac = pod.eth0()["address"].as_str().unwrap().to_string();
    assert_eq!(pod.eth0()["mtu"], 1500);
    let conf = pod.conf(json!({
        "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net/ipv4/conf/eth0/rp_filter": "2",
                   "net.core.somaxconn": "1234"},
        "mac": "02:AB:CD:00:00:05", "mtu": 1280, "promisc": true, "allmulti": true, "txQLen": 77,
    }));
    let result = pod.run(&ours(), "ADD", &conf).ok();

    // The previous result passed through, with the new MAC in eth0's entry only.
    let mut expected = with_mac(&conf["prevResult"], "02:ab:cd:00:00:05");
    expected["cniVersion"] = json!("1.0.0");
    assert_eq!(result, expected);

    let l = ip_link_details(&pod.ctr, "eth0");
    assert_eq!(l["address"], "02:ab:cd:00:00:05");
    assert_eq!(l["mtu"], 1280);
    assert_eq!(l["txqlen"], 77);
    assert!(flags(&l).contains(&"PROMISC".to_string()) && flags(&l).contains(&"ALLMULTI".to_string()), "{l}");
    assert_eq!(pod.sysctl("net/ipv4/conf/eth0/arp_filter"), "1");
    assert_eq!(pod.sysctl("net/ipv4/conf/eth0/rp_filter"), "2");
    assert_eq!(pod.sysctl("net/core/somaxconn"), "1234");
    // Traffic crosses the link at the new MTU; a packet above it does not leave unfragmented.
    assert!(ping(&pod.ctr, "198.51.100.1"));
    let df = |size: &str| {
        testkit::in_netns(
            std::process::Command::new("ping").args(["-c1", "-W1", "-M", "do", "-s", size, "198.51.100.1"]),
            &pod.ctr,
        )
        .output()
        .unwrap()
        .status
        .success()
    };
    assert!(df("1252") && !df("1300"));

    // The originals, in the reference's format, plus the per-interface sysctls we wrote.
    let saved: Value = serde_json::from_slice(&std::fs::read(pod.saved_file()).unwrap()).unwrap();
    assert_eq!(
        saved,
        json!({"mac": original_mac, "promisc": false, "mtu": 1500, "allmulti": false, "txQLen": 1000,
               "savedSysctl": {"net/ipv4/conf/eth0/arp_filter": "0", "net/ipv4/conf/eth0/rp_filter": before.1[1]}})
    );

    pod.run(&ours(), "CHECK", &result_conf(&conf, &result)).ok();
    // CHECK sees a change made behind the plugin's back.
    ip(&pod.ctr, "link set eth0 mtu 1300");
    let out = pod.run(&ours(), "CHECK", &result_conf(&conf, &result));
    assert!(!out.success() && out.stdout.contains("MTU"), "{}", out.stdout);
    ip(&pod.ctr, "link set eth0 mtu 1280");

    pod.run(&ours(), "DEL", &conf).ok();
    let after = pod.snapshot();
    assert_eq!(after.0, before.0, "the link is as before ADD");
    // Per-interface sysctls are put back; the namespace-wide one stays (other attachments of the
    // container share it).
    assert_eq!(after.1[..2], before.1[..2]);
    assert_eq!(after.1[2], "1234");
    assert!(!pod.saved_file().exists());
    pod.run(&ours(), "DEL", &conf).ok();
}

/// The config CHECK gets from a runtime: the ADD's result as prevResult.
fn result_conf(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

#[test]
fn check_compares_promisc_both_ways_and_every_sysctl() {
    let pod = Pod::new();
    let conf = pod.conf(json!({"sysctl": {"net.ipv4.tcp_rmem": "4096 131072 6291456"}}));
    let result = pod.run(&ours(), "ADD", &conf).ok();
    // The kernel reads it back with tabs.
    pod.run(&ours(), "CHECK", &result_conf(&conf, &result)).ok();
    ip(&pod.ctr, "link set eth0 promisc on");
    let out = pod.run(&ours(), "CHECK", &result_conf(&conf, &result));
    assert!(!out.success() && out.stdout.contains("promisc"), "{}", out.stdout);
    ip(&pod.ctr, "link set eth0 promisc off");
    testkit::set_sysctl(&pod.ctr, "net/ipv4/tcp_rmem", "4096 131072 1000000");
    let out = pod.run(&ours(), "CHECK", &result_conf(&conf, &result));
    assert!(!out.success() && out.stdout.contains("tcp_rmem"), "{}", out.stdout);
    // Without prevResult CHECK is refused.
    assert_eq!(pod.run(&ours(), "CHECK", &pod.conf(json!({"prevResult": null}))).err_code(), 7);
}

#[test]
fn results_at_every_version_match_the_reference() {
    let pod = Pod::new();
    for version in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let conf = pod.conf_at(version, json!({"mac": "02:00:00:00:11:22", "mtu": 1400}));
        let result = pod.run(&ours(), "ADD", &conf).ok();
        assert_eq!(result, with_mac(&conf["prevResult"], "02:00:00:00:11:22"), "{version}");
        pod.run(&ours(), "DEL", &conf).ok();
        assert_eq!(pod.eth0()["mtu"], 1500, "{version}");
        // Debian's 1.1.1 stops at 1.0.0.
        if let Some(reference) = reference().filter(|_| version != "1.1.0") {
            let theirs = pod.run(&reference, "ADD", &conf).ok();
            assert_eq!(result, theirs, "{version}: ours and the reference's");
            pod.run(&reference, "DEL", &conf).ok();
        }
        // The bare {"type": "tuning"} of Podman and nerdctl echoes prevResult.
        let bare = pod.conf_at(version, json!({"dataDir": null}));
        assert_eq!(pod.run(&ours(), "ADD", &bare).ok(), bare["prevResult"], "{version}");
    }
    assert_eq!(pod.run(&ours(), "ADD", &pod.conf(json!({"prevResult": null}))).err_code(), 7);
}

#[test]
fn bad_values_are_code_7_and_change_nothing() {
    let pod = Pod::new();
    let before = pod.snapshot();
    // A valid change listed first in each, to show that nothing is applied before the bad one
    // is found (or that it is undone when only the kernel can tell).
    let good = json!({"net.ipv4.conf.eth0.arp_filter": "1"});
    let good = || good.clone();
    let cases = [
        (json!({"sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "kernel.panic": "1"}}), "kernel.panic"),
        (json!({"sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "net.ipv4.no_such_thing": "1"}}), "no_such_thing"),
        (
            json!({"sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "net.ipv4.conf.eth0.rp_filter": "banana"}}),
            "rp_filter",
        ),
        (json!({"sysctl": good(), "mac": "01:00:5e:00:00:01"}), "mac"),
        (json!({"sysctl": good(), "mac": "00:00:00:00:00:00"}), "mac"),
        (json!({"sysctl": good(), "mac": "02:00:5e:10:00:00:00:01"}), "mac"),
        (json!({"sysctl": good(), "mac": "banana"}), "mac"),
        (json!({"sysctl": good(), "runtimeConfig": {"mac": "zz"}}), "runtimeConfig.mac"),
        (json!({"sysctl": good(), "mtu": 70000}), "mtu"),
        (json!({"sysctl": good(), "mtu": 10}), "mtu"),
        (json!({"sysctl": good(), "mtu": -1}), "mtu"),
        (json!({"sysctl": good(), "mtu": 1400, "txQLen": -1}), "txQLen"),
        (json!({"sysctl": good(), "mtu": 1400, "args": {"cni": {"mtu": 100000}}}), "mtu"),
    ];
    for (keys, named) in cases {
        let out = pod.run(&ours(), "ADD", &pod.conf(keys.clone()));
        assert_eq!(out.err_code(), 7, "{keys}: {}", out.stdout);
        assert!(out.json()["msg"].as_str().unwrap().contains(named), "{keys}: {}", out.stdout);
        assert_eq!(pod.snapshot(), before, "{keys} changed something");
        assert!(!pod.saved_file().exists(), "{keys} left a saved file");
    }
    // Duplicate keys, which a JSON value cannot even hold.
    let text = pod.conf(json!({})).to_string().replacen(
        "{",
        r#"{"sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "net.ipv4.conf.eth0.arp_filter": "0"},"#,
        1,
    );
    let out = Invocation::new("ADD", CID, pod.ctr.path(), "eth0", &text).run(&ours(), &pod.host);
    assert_eq!(out.err_code(), 7, "{}", out.stdout);
    assert_eq!(pod.snapshot(), before);
}

#[test]
fn a_failure_after_every_change_undoes_them_all() {
    let pod = Pod::new();
    let before = pod.snapshot();
    let conf = pod.conf(json!({
        "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net.core.somaxconn": "999"},
        "mac": "02:00:00:00:33:44", "mtu": 1300, "promisc": true, "allmulti": true, "txQLen": 5,
    }));
    for fault in ["tuning:applied=fail", "tuning:applied=panic"] {
        let out = pod.invocation("ADD", &conf).var("CNI_RS_FAULT", Some(fault)).run(&ours(), &pod.host);
        assert!(!out.success(), "{fault}");
        assert_eq!(pod.snapshot(), before, "{fault}: everything undone, namespace-wide sysctls too");
        assert!(!pod.saved_file().exists(), "{fault}");
    }
}

#[test]
fn repeated_add_keeps_the_first_originals() {
    let pod = Pod::new();
    let before = pod.snapshot();
    let conf = pod.conf(json!({"mtu": 1400, "mac": "02:00:00:00:55:66"}));
    pod.run(&ours(), "ADD", &conf).ok();
    pod.run(&ours(), "ADD", &conf).ok();
    pod.run(&ours(), "DEL", &conf).ok();
    assert_eq!(pod.snapshot(), before);
}

#[test]
fn saved_files_work_both_ways_with_the_reference() {
    let Some(reference) = reference() else {
        eprintln!("skipped: no reference tuning plugin in /usr/lib/cni");
        return;
    };
    // Keys Debian's 1.1.1 knows (txQLen came in 1.4.0).
    let keys = json!({"mac": "02:00:00:00:77:88", "mtu": 1400, "promisc": true, "allmulti": true});
    for (add, del) in [(&reference, &ours()), (&ours(), &reference)] {
        let pod = Pod::new();
        let before = pod.snapshot();
        let conf = pod.conf(keys.clone());
        pod.run(add, "ADD", &conf).ok();
        let l = ip_link_details(&pod.ctr, "eth0");
        assert_eq!((l["mtu"].clone(), l["address"].clone()), (json!(1400), json!("02:00:00:00:77:88")));
        assert!(pod.saved_file().exists(), "{} saved nothing", add.display());
        pod.run(del, "DEL", &conf).ok();
        assert_eq!(pod.snapshot(), before, "ADD by {}, DEL by {}", add.display(), del.display());
        assert!(!pod.saved_file().exists(), "DEL by {} left the file", del.display());
    }
    // The same bytes in the file.
    let pod = Pod::new();
    let conf = pod.conf(keys);
    pod.run(&reference, "ADD", &conf).ok();
    let theirs = std::fs::read(pod.saved_file()).unwrap();
    pod.run(&reference, "DEL", &conf).ok();
    pod.run(&ours(), "ADD", &conf).ok();
    assert_eq!(
        String::from_utf8(std::fs::read(pod.saved_file()).unwrap()).unwrap(),
        String::from_utf8(theirs).unwrap()
    );
    pod.run(&ours(), "DEL", &conf).ok();
}

#[test]
fn del_is_idempotent_without_netns_interface_or_file() {
    let pod = Pod::new();
    let conf = pod.conf(json!({"mtu": 1400}));
    // No file: nothing to do, whatever the namespace.
    pod.run(&ours(), "DEL", &conf).ok();
    pod.invocation("DEL", &conf).var("CNI_NETNS", None).run(&ours(), &pod.host).ok();

    // Interface gone: the file goes too.
    pod.run(&ours(), "ADD", &conf).ok();
    ip(&pod.ctr, "link del eth0");
    pod.run(&ours(), "DEL", &conf).ok();
    assert!(!pod.saved_file().exists());

    // Namespace gone (and DEL without CNI_NETNS): success, and the file goes.
    let pod2 = Pod::new();
    let conf = pod2.conf(json!({"mtu": 1400}));
    pod2.run(&ours(), "ADD", &conf).ok();
    let path = pod2.ctr.path().to_string();
    let Pod { host, ctr, data } = pod2;
    ctr.remove();
    let gone = Invocation::new("DEL", CID, &path, "eth0", &conf.to_string());
    gone.run(&ours(), &host).ok();
    assert!(!data.path().join(format!("{CID}_eth0.json")).exists());
    let unset = Invocation::new("DEL", CID, "", "eth0", &conf.to_string()).var("CNI_NETNS", None);
    unset.run(&ours(), &host).ok();

    // A file that cannot be read is removed, not a reason to fail forever.
    let path = data.path().join(format!("{CID}_eth0.json"));
    std::fs::write(&path, "{not json").unwrap();
    unset.run(&ours(), &host).ok();
    assert!(!path.exists());
    // DEL needs nothing of the config but dataDir; a config ADD would refuse is fine.
    let bad = json!({"cniVersion": "1.0.0", "name": "tuned", "type": "tuning", "dataDir": data.path(), "mtu": "x",
                     "sysctl": {"kernel.panic": "1"}});
    Invocation::new("DEL", CID, "", "eth0", &bad.to_string()).run(&ours(), &host).ok();
}

/// Runs `plugin` as `inv` says with the machine's /run and /etc/cni replaced, in a private mount
/// namespace, by `run` and `etc_cni`: the default dataDir (/run/cni/tuning) and the allowlist
/// (/etc/cni/tuning/allowlist.conf) are then the test's own directories, for us and for the
/// reference alike, and nothing on the machine is touched.
fn run_jailed(inv: &Invocation, plugin: &Path, host: &Netns, run: &Path, etc_cni: &Path) -> Output {
    let script = r#"mount --bind "$JAIL_RUN" /run && mount --bind "$JAIL_ETC_CNI" /etc/cni && exec "$0""#;
    let wrapper: Vec<&std::ffi::OsStr> = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        .into_iter()
        .map(std::ffi::OsStr::new)
        .collect();
    let inv = inv
        .clone()
        .var("JAIL_RUN", Some(&run.display().to_string()))
        .var("JAIL_ETC_CNI", Some(&etc_cni.display().to_string()));
    let out = inv.spawn_under(&wrapper, plugin, Some(host)).wait_with_output().unwrap();
    Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code: out.status.code().unwrap_or(-1),
    }
}

#[test]
fn default_data_dir_and_allowlist_are_the_references() {
    if !Path::new("/etc/cni").is_dir() {
        eprintln!("skipped: no /etc/cni to bind over");
        return;
    }
    let pod = Pod::new();
    let (run, etc) = (TempDir::new("tuning-run"), TempDir::new("tuning-etc"));
    let before = pod.snapshot();
    let conf = pod.conf(json!({"dataDir": null, "mtu": 1400}));
    let jailed = |plugin: &Path, command: &str, conf: &Value| {
        run_jailed(&pod.invocation(command, conf), plugin, &pod.host, run.path(), etc.path())
    };
    jailed(&ours(), "ADD", &conf).ok();
    let file = run.path().join(format!("cni/tuning/{CID}_eth0.json"));
    assert!(file.is_file(), "the saved file is in <run>/cni/tuning");
    if let Some(reference) = reference() {
        // The reference's DEL finds it where it looks by default and puts the MTU back.
        jailed(&reference, "DEL", &conf).ok();
        assert_eq!(pod.eth0()["mtu"], 1500);
        assert!(!file.exists());
        ours_del_after_reference_add(&pod, &reference, &jailed, &conf, &file);
    } else {
        jailed(&ours(), "DEL", &conf).ok();
    }
    assert_eq!(pod.snapshot(), before);

    // With an allowlist, only matching keys (unanchored Go regexes on the key as written).
    std::fs::create_dir_all(etc.path().join("tuning")).unwrap();
    std::fs::write(
        etc.path().join("tuning/allowlist.conf"),
        "^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$\n\n  somaxconn  \n",
    )
    .unwrap();
    let refused = pod.conf(json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net.ipv4.ip_forward": "1"}}));
    let out = jailed(&ours(), "ADD", &refused);
    assert_eq!(out.err_code(), 7);
    assert!(out.stdout.contains("net.ipv4.ip_forward"), "{}", out.stdout);
    assert_eq!(pod.snapshot(), before);
    let allowed = pod.conf(json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net.core.somaxconn": "2048"}}));
    jailed(&ours(), "ADD", &allowed).ok();
    assert_eq!(pod.sysctl("net/ipv4/conf/eth0/arp_filter"), "1");
    jailed(&ours(), "DEL", &allowed).ok();
    assert_eq!(pod.sysctl("net/ipv4/conf/eth0/arp_filter"), before.1[0]);
}

fn ours_del_after_reference_add(
    pod: &Pod,
    reference: &Path,
    jailed: &dyn Fn(&Path, &str, &Value) -> Output,
    conf: &Value,
    file: &Path,
) {
    jailed(reference, "ADD", conf).ok();
    assert!(file.is_file(), "the reference saves in /run/cni/tuning too");
    assert_eq!(pod.eth0()["mtu"], 1400);
    jailed(&ours(), "DEL", conf).ok();
    assert_eq!(pod.eth0()["mtu"], 1500);
    assert!(!file.exists());
}

#[test]
fn cni_args_runtime_config_and_args_cni_override_as_in_the_reference() {
    let pod = Pod::new();
    let before = pod.snapshot();
    let conf = pod.conf(json!({"mac": "02:00:00:00:00:01", "mtu": 1400,
                               "args": {"cni": {"mtu": 1350, "allmulti": true}}}));
    let mut plugins = vec![ours()];
    plugins.extend(reference());
    for plugin in &plugins {
        // CNI_ARGS MAC= wins over the config's mac; args.cni over the top-level keys.
        let inv = pod
            .invocation("ADD", &conf)
            .var("CNI_ARGS", Some("IgnoreUnknown=1;K8S_POD_NAME=web;MAC=02:00:00:00:00:02"));
        let result = inv.run(plugin, &pod.host).ok();
        assert_eq!(result["interfaces"][1]["mac"], "02:00:00:00:00:02", "{}", plugin.display());
        let l = ip_link_details(&pod.ctr, "eth0");
        assert_eq!(
            (l["address"].clone(), l["mtu"].clone()),
            (json!("02:00:00:00:00:02"), json!(1350)),
            "{}",
            plugin.display()
        );
        assert!(flags(&l).contains(&"ALLMULTI".to_string()));
        pod.run(plugin, "DEL", &conf).ok();
        assert_eq!(pod.snapshot(), before, "{}", plugin.display());

        // runtimeConfig.mac (the `mac` capability) wins over CNI_ARGS.
        let mut rc = conf.clone();
        rc["runtimeConfig"] = json!({"mac": "02:00:00:00:00:03"});
        let inv = pod.invocation("ADD", &rc).var("CNI_ARGS", Some("IgnoreUnknown=1;MAC=02:00:00:00:00:02"));
        inv.run(plugin, &pod.host).ok();
        assert_eq!(pod.eth0()["address"], "02:00:00:00:00:03", "{}", plugin.display());
        pod.run(plugin, "DEL", &rc).ok();
        assert_eq!(pod.snapshot(), before, "{}", plugin.display());
    }
    // Unknown CNI_ARGS keys without IgnoreUnknown are refused, as by libcni's LoadArgs.
    let out = pod.invocation("ADD", &conf).var("CNI_ARGS", Some("K8S_POD_NAME=web")).run(&ours(), &pod.host);
    assert_eq!(out.err_code(), 4);
    assert_eq!(pod.snapshot(), before);
}

#[test]
fn del_after_a_kill_at_any_step_puts_everything_back() {
    let conf_keys = json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net.ipv4.conf.eth0.rp_filter": "2"},
                           "mac": "02:00:00:00:99:99", "mtu": 1300, "promisc": true, "allmulti": true, "txQLen": 9});
    for point in ["tuning:sysctls-written", "tuning:applied"] {
        let pod = Pod::new();
        let before = pod.snapshot();
        let conf = pod.conf(conf_keys.clone());
        let out =
            pod.invocation("ADD", &conf).var("CNI_RS_FAULT", Some(&format!("{point}=kill"))).run(&ours(), &pod.host);
        assert_eq!(out.exit_code, -1, "{point}: killed by SIGKILL: {}", out.stdout);
        assert_ne!(pod.snapshot(), before, "{point}: the kill left changes behind");
        assert!(pod.saved_file().exists(), "{point}: the originals were saved before the first change");
        // The runtime's DEL after the failed ADD.
        pod.run(&ours(), "DEL", &conf).ok();
        assert_eq!(pod.snapshot(), before, "{point}");
        assert!(!pod.saved_file().exists(), "{point}");
    }
}

#[test]
fn concurrent_adds_and_dels_share_a_data_dir() {
    let data = TempDir::new("tuning-shared");
    let pods: Vec<Pod> = (0..6).map(|_| Pod::new()).collect();
    let befores: Vec<_> = pods.iter().map(Pod::snapshot).collect();
    let confs: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.conf(json!({"dataDir": data.path(), "mtu": 1300 + i, "mac": format!("02:00:00:00:aa:{i:02x}"),
                          "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}}))
        })
        .collect();
    let invocation = |i: usize, command: &str| {
        Invocation::new(command, &format!("ctr-{i}"), pods[i].ctr.path(), "eth0", &confs[i].to_string())
    };
    let children: Vec<_> = (0..pods.len()).map(|i| invocation(i, "ADD").spawn(&ours(), Some(&pods[i].host))).collect();
    for c in children {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    for (i, pod) in pods.iter().enumerate() {
        assert_eq!(pod.eth0()["mtu"], 1300 + i);
        assert!(data.path().join(format!("ctr-{i}_eth0.json")).is_file());
    }
    let children: Vec<_> = (0..pods.len()).map(|i| invocation(i, "DEL").spawn(&ours(), Some(&pods[i].host))).collect();
    for c in children {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    for (pod, before) in pods.iter().zip(&befores) {
        assert_eq!(&pod.snapshot(), before);
    }
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0, "no saved file and no temporary file left");
}
