//! Kernel tests: the built `host-device` binary (with the built `host-local` as IPAM), run as a
//! runtime runs it, in a sandbox "host" namespace. The "host device" is one end of a veth pair
//! whose other end sits in a "peer" namespace standing for the rest of the network segment (this
//! kernel has no dummy links), or a macvlan on such a veth. Traffic goes only between namespaces
//! the test made.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use testkit::{Invocation, Netns, Output, TempDir, addresses, ip, is_up, link, new_netns, ping};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_host-device"))
}

/// A sandbox host holding `hd0`, a veth whose peer (`eth0` in `peer`, 192.0.2.2 and 2001:db8::2)
/// is the segment the device leads to.
struct Host {
    ns: Netns,
    peer: Netns,
    ipam: TempDir,
    hd0_peer: String,
}

impl Host {
    fn new() -> Host {
        let mut host = Host {
            ns: new_netns(),
            peer: new_netns(),
            ipam: TempDir::new("host-device-ipam"),
            hd0_peer: String::new(),
        };
        ip(&host.ns, "link set lo up");
        host.hd0_peer = host.veth("hd0");
        host
    }

    /// Another veth from the host to the peer namespace: `name` in the host, up, no address.
    /// Returns the peer end's name.
    fn veth(&self, name: &str) -> String {
        static PEERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let peer_name = format!("p{}-{name}", PEERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut rtnl = netkit::Rtnl::open_in(&self.ns).unwrap();
        rtnl.create_veth(&netkit::VethPair {
            name,
            peer_name: &peer_name,
            peer_ns: Some(std::os::fd::AsFd::as_fd(&*self.peer)),
            ..Default::default()
        })
        .unwrap();
        ip(&self.ns, &format!("link set {name} up"));
        if name == "hd0" {
            testkit::set_sysctl(&self.peer, &format!("net/ipv6/conf/{peer_name}/accept_dad"), "0");
            ip(&self.peer, &format!("addr add 192.0.2.2/24 dev {peer_name}"));
            ip(&self.peer, &format!("addr add 2001:db8::2/64 dev {peer_name}"));
        }
        ip(&self.peer, &format!("link set {peer_name} up"));
        peer_name
    }

    fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "hostnet", "type": "host-device", "device": "hd0",
            "ipam": {"type": "host-local", "dataDir": self.ipam.path().display().to_string(),
                     "ranges": [[{"subnet": "192.0.2.0/24", "rangeStart": "192.0.2.10"}],
                                [{"subnet": "2001:db8::/64", "rangeStart": "2001:db8::10"}]]}
        });
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                conf.as_object_mut().unwrap().remove(k);
            } else {
                conf[k] = v.clone();
            }
        }
        conf
    }

    fn invocation(&self, command: &str, netns: &str, conf: &Value) -> Invocation {
        Invocation::new(command, "ctr-1", netns, "net1", &conf.to_string())
    }

    fn run(&self, command: &str, c: &Netns, conf: &Value) -> Output {
        self.invocation(command, c.path(), conf).run(&bin(), &self.ns)
    }

    fn allocated(&self) -> usize {
        std::fs::read_dir(self.ipam.path().join("hostnet"))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok())
                })
                .count()
            })
            .unwrap_or(0)
    }

    /// Waits until the peer end of `hd0` is operationally up. When the device comes up in the
    /// container, the kernel turns on the peer's carrier at once but activates its queue only
    /// when the link-state watcher runs, up to a second later; until then the peer drops what it
    /// sends.
    fn wait_segment_up(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while link(&self.peer, &self.hd0_peer).is_none_or(|l| l["operstate"] != "UP") {
            assert!(std::time::Instant::now() < deadline, "{} never came up", self.hd0_peer);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn mac(&self, name: &str) -> Value {
        link(&self.ns, name).unwrap_or_else(|| panic!("{name} not in the host"))["address"].clone()
    }
}

/// A container namespace whose new interfaces skip IPv6 DAD (so the first pings are answered).
fn container() -> Netns {
    let c = new_netns();
    testkit::set_sysctl(&c, "net/ipv6/conf/default/accept_dad", "0");
    c
}

fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

/// The device is back in the host as it should be after DEL: its name, its MAC, down, no alias.
fn assert_returned(h: &Host, name: &str, mac: &Value) {
    let l = link(&h.ns, name).unwrap_or_else(|| panic!("{name} is not back in the host"));
    assert_eq!(l["address"], *mac, "MAC changed");
    assert!(l.get("ifalias").is_none(), "alias left behind: {l}");
    assert!(!is_up(&l), "DEL leaves the device down, as the reference");
}

#[test]
fn the_device_moves_in_renamed_carries_traffic_and_comes_back_with_its_name_and_mac() {
    let h = Host::new();
    let c = container();
    let conf = h.conf(json!({}));
    let mac = h.mac("hd0");

    let result = h.run("ADD", &c, &conf).ok();
    assert_eq!(
        result["interfaces"],
        json!([{"name": "net1", "mac": mac, "sandbox": c.path()}]),
        "the reference's shape: one interface, in the sandbox"
    );
    assert_eq!(
        result["ips"],
        json!([
            {"address": "192.0.2.10/24", "gateway": "192.0.2.1", "interface": 0},
            {"address": "2001:db8::10/64", "gateway": "2001:db8::1", "interface": 0}
        ])
    );

    // In the container under CNI_IFNAME, up, remembering its host name; gone from the host.
    assert!(link(&h.ns, "hd0").is_none());
    let inside = link(&c, "net1").expect("net1 in the container");
    assert!(is_up(&inside));
    assert_eq!(inside["address"], mac);
    assert_eq!(inside["ifalias"], "hd0");
    let addrs = addresses(&c, "net1");
    assert!(addrs.contains(&"192.0.2.10/24".into()) && addrs.contains(&"2001:db8::10/64".into()), "{addrs:?}");
    // It still leads to its segment.
    h.wait_segment_up();
    assert!(ping(&c, "192.0.2.2"));
    assert!(ping(&c, "2001:db8::2"));

    let conf_prev = with_prev(&conf, &result);
    h.run("CHECK", &c, &conf_prev).ok();

    h.run("DEL", &c, &conf_prev).ok();
    assert!(link(&c, "net1").is_none());
    assert_returned(&h, "hd0", &mac);
    assert_eq!(h.allocated(), 0, "addresses released");
    // A second DEL finds nothing to do and succeeds (the reference's fails).
    h.run("DEL", &c, &conf_prev).ok();
    assert_returned(&h, "hd0", &mac);

    // And it can be taken again.
    let again = h.run("ADD", &c, &conf).ok();
    assert_eq!(link(&c, "net1").unwrap()["ifalias"], "hd0");
    assert_eq!(h.allocated(), 2);
    h.run("DEL", &c, &with_prev(&conf, &again)).ok();
}

#[test]
fn a_device_is_found_by_hardware_address() {
    let h = Host::new();
    let c = container();
    let mac = h.mac("hd0");
    let conf = h.conf(json!({"device": null, "hwaddr": mac.as_str().unwrap().to_uppercase()}));
    let result = h.run("ADD", &c, &conf).ok();
    assert_eq!(result["interfaces"][0]["mac"], mac);
    assert_eq!(link(&c, "net1").unwrap()["ifalias"], "hd0", "the alias is the name it had");
    h.run("DEL", &c, &with_prev(&conf, &result)).ok();
    assert_returned(&h, "hd0", &mac);
}

#[test]
fn a_device_is_found_by_kernel_path_in_the_hosts_sysfs() {
    // With a sysfs of the sandbox host, /sys/devices/virtual/net lists hd0 and lo; hd0 sorts first.
    let h = Host::new();
    let c = container();
    let mac = h.mac("hd0");
    let conf = h.conf(json!({"device": null, "kernelpath": "/sys/devices/virtual"}));
    let run = |cmd: &str, conf: &Value| h.invocation(cmd, c.path(), conf).private_sysfs(&[]).run(&bin(), &h.ns);
    let result = run("ADD", &conf).ok();
    assert_eq!(result["interfaces"][0]["mac"], mac);
    assert!(link(&h.ns, "hd0").is_none());
    run("DEL", &with_prev(&conf, &result)).ok();
    assert_returned(&h, "hd0", &mac);
}

/// A fake `/sys/bus` with PCI functions whose `net/` lists a sandbox interface (one a virtio NIC,
/// one bound to vfio-pci) and an auxiliary-bus subfunction.
fn fake_bus(iface: &str) -> TempDir {
    let dir = TempDir::new("sysbus");
    let mk = |p: &str| std::fs::create_dir_all(dir.path().join(p)).unwrap();
    mk(&format!("pci/devices/0000:00:09.0/net/{iface}"));
    mk(&format!("pci/devices/0000:00:0a.0/virtio3/net/{iface}"));
    mk("pci/devices/0000:00:0b.0");
    mk("pci/drivers/vfio-pci");
    mk(&format!("auxiliary/devices/mlx5_core.sf.2/net/{iface}"));
    std::os::unix::fs::symlink("../../drivers/vfio-pci", dir.path().join("pci/devices/0000:00:0b.0/driver")).unwrap();
    dir
}

#[test]
fn a_device_is_found_by_pci_address_virtio_function_and_runtime_device_id() {
    let h = Host::new();
    let c = container();
    let mac = h.mac("hd0");
    let bus = fake_bus("hd0");
    let cases = [
        (json!({"pciBusID": "0000:00:09.0"}), "0000:00:09.0"),
        (json!({"pciBusID": "0000:00:0a.0"}), "0000:00:0a.0"),
        (json!({"pciBusID": "0000:00:0b.0", "runtimeConfig": {"deviceID": "0000:00:09.0"}}), "0000:00:09.0"),
        (json!({"runtimeConfig": {"deviceID": "mlx5_core.sf.2"}}), ""),
    ];
    for (selector, pci_id) in cases {
        let mut conf = h.conf(json!({"device": null, "cniVersion": "1.1.0"}));
        for (k, v) in selector.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let run = |cmd: &str, conf: &Value| {
            h.invocation(cmd, c.path(), conf).private_sysfs(&[(bus.path(), "bus")]).run(&bin(), &h.ns)
        };
        let result = run("ADD", &conf).ok();
        assert_eq!(result["interfaces"][0]["mac"], mac, "{selector}");
        assert_eq!(result["interfaces"][0].get("pciID").and_then(Value::as_str).unwrap_or(""), pci_id, "{selector}");
        assert!(link(&c, "net1").is_some(), "{selector}");
        run("CHECK", &with_prev(&conf, &result)).ok();
        run("DEL", &with_prev(&conf, &result)).ok();
        assert_returned(&h, "hd0", &mac);
    }
    // A deviceID on no bus is refused rather than replaced by another device.
    let conf =
        h.conf(json!({"device": null, "pciBusID": "0000:00:09.0", "runtimeConfig": {"deviceID": "0000:07:00.0"}}));
    let out = h.invocation("ADD", c.path(), &conf).private_sysfs(&[(bus.path(), "bus")]).run(&bin(), &h.ns);
    assert_eq!(out.err_code(), 7);
    assert!(out.json()["msg"].as_str().unwrap().contains("DeviceID 0000:07:00.0 not found"));
    assert!(link(&h.ns, "hd0").is_some());
}

#[test]
fn a_dpdk_bound_device_is_reported_with_its_addresses_and_not_moved() {
    let h = Host::new();
    let c = container();
    let bus = fake_bus("hd0");
    let conf = h.conf(json!({"device": null, "cniVersion": "1.1.0", "pciBusID": "0000:00:0b.0"}));
    let run = |cmd: &str, conf: &Value| {
        h.invocation(cmd, c.path(), conf).private_sysfs(&[(bus.path(), "bus")]).run(&bin(), &h.ns)
    };
    let result = run("ADD", &conf).ok();
    assert_eq!(result["interfaces"], json!([{"name": "net1", "sandbox": c.path(), "pciID": "0000:00:0b.0"}]));
    assert_eq!(result["ips"][0]["address"], "192.0.2.10/24");
    assert!(link(&c, "net1").is_none(), "nothing moved");
    assert!(link(&h.ns, "hd0").is_some());
    run("CHECK", &with_prev(&conf, &result)).ok();
    run("DEL", &with_prev(&conf, &result)).ok();
    assert_eq!(h.allocated(), 0);
}

#[test]
fn a_macvlan_given_to_a_container_reaches_the_segment() {
    let h = Host::new();
    ip(&h.ns, "link add mv0 link hd0 type macvlan mode bridge");
    let c = container();
    let mac = h.mac("mv0");
    let conf = h.conf(json!({"device": "mv0"}));
    let result = h.run("ADD", &c, &conf).ok();
    assert_eq!(link(&c, "net1").unwrap()["address"], mac);
    h.wait_segment_up();
    assert!(ping(&c, "192.0.2.2"));
    h.run("DEL", &c, &with_prev(&conf, &result)).ok();
    assert_returned(&h, "mv0", &mac);
}

#[test]
fn a_failed_add_leaves_the_device_in_the_host_as_it_was() {
    let h = Host::new();
    let c = container();
    let mac = h.mac("hd0");

    // IPAM fails after the device is in the container: it comes back named, aliased and up as before.
    let exhausted = h.conf(json!({"ipam": {"type": "host-local", "dataDir": h.ipam.path().display().to_string(),
        "ranges": [[{"subnet": "192.0.2.0/24", "rangeStart": "192.0.2.10", "rangeEnd": "192.0.2.10"}]]}}));
    let other = new_netns();
    let _ = h.veth("hd1");
    let taken = Invocation::new("ADD", "ctr-0", other.path(), "net1", &h.conf(json!({"device": "hd1"})).to_string());
    let _ = taken.run(&bin(), &h.ns); // takes 192.0.2.10 (its ranges are wider; the address is the same)
    let out = h.run("ADD", &c, &exhausted);
    assert_eq!(out.err_code(), 101, "{}", out.stdout);
    let l = link(&h.ns, "hd0").expect("hd0 back in the host");
    assert!(is_up(&l), "it was up before ADD");
    assert_eq!(l["address"], mac);
    assert!(l.get("ifalias").is_none());
    assert!(link(&c, "net1").is_none());

    // An IPAM plugin that does not exist: the same.
    let out = h.run("ADD", &c, &h.conf(json!({"ipam": {"type": "no-such-ipam"}})));
    assert!(!out.success());
    assert!(link(&h.ns, "hd0").is_some_and(|l| is_up(&l)));

    // The container already has the name: refused before the device moves (which would cost it
    // its host addresses), and a DEL that follows leaves the container's own net1 alone.
    ip(&h.ns, "addr add 198.51.100.1/24 dev hd0");
    ip(&c, "link add net1 type veth peer name x1");
    let out = h.run("ADD", &c, &h.conf(json!({})));
    assert!(out.json()["msg"].as_str().unwrap().contains("already exists in the container"), "{}", out.stdout);
    assert!(addresses(&h.ns, "hd0").contains(&"198.51.100.1/24".to_string()), "never moved");
    h.run("DEL", &c, &h.conf(json!({}))).ok();
    assert!(link(&c, "net1").is_some_and(|l| l.get("ifalias").is_none()), "the container's own net1 is untouched");
    assert_eq!(h.allocated(), 2, "only ctr-0's addresses");
}

/// Every step of ADD's move can fail: the device is then back in the host with its name, its own
/// alias, its MAC and its up state, and the address is released.
#[test]
fn a_failure_at_any_step_of_add_is_undone() {
    let h = Host::new();
    let mac = h.mac("hd0");
    let alias = "uplink to rack 7";
    let mut rtnl = netkit::Rtnl::open_in(&h.ns).unwrap();
    let hd0 = rtnl.link_by_name("hd0").unwrap().unwrap();
    rtnl.set_alias(hd0.index, alias).unwrap();
    for point in ["in-transit", "renamed", "aliased", "in-container", "up", "ipam-added", "configured"] {
        let c = container();
        let out = h
            .invocation("ADD", c.path(), &h.conf(json!({})))
            .var("CNI_RS_FAULT", Some(&format!("host-device:{point}=fail")))
            .run(&bin(), &h.ns);
        assert!(out.json()["msg"].as_str().unwrap().contains("injected failure"), "{point}: {}", out.stdout);
        let l = link(&h.ns, "hd0").unwrap_or_else(|| panic!("{point}: hd0 not back in the host"));
        assert_eq!((l["address"].clone(), l["ifalias"].clone()), (mac.clone(), json!(alias)), "{point}");
        assert!(is_up(&l), "{point}: it was up before ADD");
        assert!(link(&c, "net1").is_none(), "{point}");
        assert_eq!(h.allocated(), 0, "{point}: address released");
    }
    // And a clean ADD afterwards works.
    let c = container();
    let r = h.run("ADD", &c, &h.conf(json!({}))).ok();
    h.run("DEL", &c, &with_prev(&h.conf(json!({})), &r)).ok();
}

/// A DEL that fails half way puts the device back into the container as it was, so a retried DEL
/// can finish the job.
#[test]
fn a_failure_at_any_step_of_del_is_undone_and_a_retry_finishes() {
    let h = Host::new();
    let mac = h.mac("hd0");
    let conf = h.conf(json!({}));
    for point in ["out-in-transit", "out-renamed", "out-unaliased"] {
        let c = container();
        let prev = with_prev(&conf, &h.run("ADD", &c, &conf).ok());
        let out = h
            .invocation("DEL", c.path(), &prev)
            .var("CNI_RS_FAULT", Some(&format!("host-device:{point}=fail")))
            .run(&bin(), &h.ns);
        assert!(!out.success(), "{point}");
        let inside = link(&c, "net1").unwrap_or_else(|| panic!("{point}: net1 not back in the container"));
        assert_eq!((inside["ifalias"].clone(), inside["address"].clone()), (json!("hd0"), mac.clone()), "{point}");
        assert!(is_up(&inside), "{point}");
        assert!(link(&h.ns, "hd0").is_none(), "{point}");
        h.run("DEL", &c, &prev).ok();
        assert_returned(&h, "hd0", &mac);
        assert_eq!(h.allocated(), 0, "{point}");
    }
}

#[test]
fn other_links_in_the_temporary_namespace_are_not_mistaken_for_the_device() {
    // On kernels with tunnel modules loaded, every new namespace has fallback devices (tunl0,
    // sit0...). The device must be found by name there, in both directions and in rollbacks.
    let h = Host::new();
    let mac = h.mac("hd0");
    let conf = h.conf(json!({}));
    let c = container();
    let decoys = Some("host-device:transit-decoys=on");
    let r = h.invocation("ADD", c.path(), &conf).var("CNI_RS_FAULT", decoys).run(&bin(), &h.ns).ok();
    assert_eq!(link(&c, "net1").unwrap()["address"], mac);
    h.invocation("DEL", c.path(), &with_prev(&conf, &r)).var("CNI_RS_FAULT", decoys).run(&bin(), &h.ns).ok();
    assert_returned(&h, "hd0", &mac);
    let out = h
        .invocation("ADD", c.path(), &conf)
        .var("CNI_RS_FAULT", Some("host-device:transit-decoys=on,host-device:aliased=fail"))
        .run(&bin(), &h.ns);
    assert!(!out.success());
    assert!(
        link(&h.ns, "hd0").is_some_and(|l| l["address"] == mac && !is_up(&l)),
        "back as it was: down after the DEL"
    );
    assert!(link(&h.ns, "decoy0").is_none(), "decoys stay in the temporary namespace");
}

#[test]
fn an_old_version_result_without_addresses_is_refused_and_undone() {
    // A 0.2.0 result needs an IP address; without IPAM there is none, so the ADD fails, and the
    // device it moved goes back.
    let h = Host::new();
    let c = container();
    let out = h.run("ADD", &c, &h.conf(json!({"cniVersion": "0.2.0", "ipam": null})));
    assert!(!out.success());
    assert!(link(&h.ns, "hd0").is_some(), "{}", out.stdout);
    assert!(link(&c, "net1").is_none());
}

#[test]
fn missing_devices_and_bad_configs_are_errors_that_change_nothing() {
    let h = Host::new();
    let c = container();
    let out = h.run("ADD", &c, &h.conf(json!({"device": "nope0"})));
    assert_eq!(out.err_code(), 999);
    assert!(out.json()["msg"].as_str().unwrap().contains("failed to find host device \"nope0\""), "{}", out.stdout);
    let out = h.run("ADD", &c, &h.conf(json!({"device": null})));
    assert_eq!(out.err_code(), 7);
    let out = h.run("ADD", &c, &h.conf(json!({"device": null, "kernelpath": "/etc"})));
    assert_eq!(out.err_code(), 7);
    let out = h.run("ADD", &c, &h.conf(json!({"device": "lo"})));
    assert!(out.json()["msg"].as_str().unwrap().contains("cannot leave its network namespace"), "{}", out.stdout);
    assert!(link(&h.ns, "hd0").is_some() && link(&h.ns, "lo").is_some());
    assert!(link(&c, "net1").is_none());
    assert_eq!(h.allocated(), 0);
}

#[test]
fn del_releases_the_address_when_the_netns_is_gone_or_not_given() {
    let h = Host::new();
    let conf = h.conf(json!({}));

    // A virtual device dies with its namespace; DEL then only has the address to release.
    let c = container();
    let result = h.run("ADD", &c, &conf).ok();
    let path = c.path().to_string();
    c.remove();
    assert_eq!(h.allocated(), 2);
    h.invocation("DEL", &path, &with_prev(&conf, &result)).run(&bin(), &h.ns).ok();
    assert_eq!(h.allocated(), 0);
    h.invocation("DEL", &path, &with_prev(&conf, &result)).run(&bin(), &h.ns).ok();

    // Without CNI_NETNS at all (the reference skips IPAM then, and leaks). The device cannot be
    // reached, so it stays where it is.
    let _ = h.veth("hd0");
    let c = container();
    let result = h.run("ADD", &c, &conf).ok();
    h.invocation("DEL", "", &with_prev(&conf, &result)).var("CNI_NETNS", None).run(&bin(), &h.ns).ok();
    assert_eq!(h.allocated(), 0);
    assert!(link(&c, "net1").is_some());

    // A CNI_NETNS that is not a namespace: DEL says so (code 8) and still releases the address.
    let dir = TempDir::new("not-a-netns");
    let bogus = dir.path().join("netns");
    std::fs::write(&bogus, "").unwrap();
    let c2 = container();
    let _ = h.veth("hd2");
    let conf2 = h.conf(json!({"device": "hd2"}));
    let result = h.run("ADD", &c2, &conf2).ok();
    assert_eq!(h.allocated(), 2);
    let out = h.invocation("DEL", bogus.to_str().unwrap(), &with_prev(&conf2, &result)).run(&bin(), &h.ns);
    assert_eq!(out.err_code(), 8);
    assert_eq!(h.allocated(), 0, "released anyway");
}

#[test]
fn a_device_returned_by_the_kernel_gets_its_name_back() {
    // When a namespace dies without DEL, the kernel returns a physical device to the root
    // namespace under its container name, still carrying the alias. Here that state is built by hand.
    let h = Host::new();
    let mac = h.mac("hd0");
    ip(&h.ns, "link set hd0 down");
    ip(&h.ns, "link set hd0 name net1");
    ip(&h.ns, "link set net1 alias hd0");
    let conf = h.conf(json!({}));

    // DEL for the dead container renames it back.
    h.invocation("DEL", "/proc/self/task/0/ns/net-gone", &conf).run(&bin(), &h.ns).ok();
    assert_returned(&h, "hd0", &mac);

    // So does GC.
    ip(&h.ns, "link set hd0 name net1");
    ip(&h.ns, "link set net1 alias hd0");
    let gc = json!({"cniVersion": "1.1.0", "name": "hostnet", "type": "host-device", "device": "hd0",
                    "cni.dev/valid-attachments": []});
    Invocation::new("GC", "", "", "", &gc.to_string()).run(&bin(), &h.ns).ok();
    assert_returned(&h, "hd0", &mac);

    // And ADD finds it by the alias, and DEL returns it as hd0.
    ip(&h.ns, "link set hd0 name eth7");
    ip(&h.ns, "link set eth7 alias hd0");
    let c = container();
    let result = h.run("ADD", &c, &conf).ok();
    assert_eq!(link(&c, "net1").unwrap()["ifalias"], "hd0");
    h.run("DEL", &c, &with_prev(&conf, &result)).ok();
    assert_returned(&h, "hd0", &mac);
}

#[test]
fn del_refuses_to_clobber_a_host_link_that_took_the_name() {
    let h = Host::new();
    let c = container();
    let conf = h.conf(json!({}));
    let result = h.run("ADD", &c, &conf).ok();
    let _ = h.veth("hd0"); // someone made a new hd0 meanwhile
    let out = h.run("DEL", &c, &with_prev(&conf, &result));
    assert!(out.json()["msg"].as_str().unwrap().contains("a link named hd0 already exists"), "{}", out.stdout);
    let inside = link(&c, "net1").expect("still in the container, for a retry");
    assert!(is_up(&inside) && inside["ifalias"] == "hd0");
    ip(&h.ns, "link del hd0");
    h.run("DEL", &c, &with_prev(&conf, &result)).ok();
    assert!(link(&h.ns, "hd0").is_some());
}

#[test]
fn two_containers_racing_for_one_device_one_wins() {
    let h = Host::new();
    let conf = h.conf(json!({}));
    let containers: Vec<Netns> = (0..4).map(|_| container()).collect();
    let children: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Invocation::new("ADD", &format!("ctr-{i}"), c.path(), "net1", &conf.to_string()).spawn(&bin(), Some(&h.ns))
        })
        .collect();
    let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let winners = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1, "{outputs:?}");
    assert_eq!(containers.iter().filter(|c| link(c, "net1").is_some()).count(), 1);
    assert!(link(&h.ns, "hd0").is_none());
    assert_eq!(h.allocated(), 2, "losers released what they took");
}

#[test]
fn check_notices_a_missing_address_or_alias() {
    let h = Host::new();
    let c = container();
    let conf = h.conf(json!({}));
    let result = h.run("ADD", &c, &conf).ok();
    let prev = with_prev(&conf, &result);
    h.run("CHECK", &c, &prev).ok();
    ip(&c, "addr del 192.0.2.10/24 dev net1");
    let out = h.run("CHECK", &c, &prev);
    assert!(out.json()["msg"].as_str().unwrap().contains("192.0.2.10/24"), "{}", out.stdout);
    ip(&c, "addr add 192.0.2.10/24 dev net1");
    // `ip` cannot clear an alias; netlink with an empty one does.
    let mut inside = netkit::Rtnl::open_in(&c).unwrap();
    let net1 = inside.link_by_name("net1").unwrap().unwrap();
    inside.set_alias(net1.index, "").unwrap();
    let out = h.run("CHECK", &c, &prev);
    assert!(out.json()["msg"].as_str().unwrap().contains("alias"), "{}", out.stdout);
    // Without its alias DEL cannot know the name; it says so and keeps the device.
    let out = h.run("DEL", &c, &prev);
    assert!(out.json()["msg"].as_str().unwrap().contains("alias is not set"), "{}", out.stdout);
}

#[test]
fn status_reports_a_device_that_is_not_there() {
    let h = Host::new();
    let c = container();
    let conf = h.conf(json!({"cniVersion": "1.1.0"}));
    let status = |conf: &Value| Invocation::new("STATUS", "", "", "", &conf.to_string()).run(&bin(), &h.ns);
    status(&conf).ok();
    let out = status(&h.conf(json!({"cniVersion": "1.1.0", "device": "nope0"})));
    assert_eq!(out.err_code(), 50);
    // A device in a container that no runtime pinned under /run/netns cannot be told from a
    // missing one (the conformance scenario shows a pinned one counts as present).
    let result = h.run("ADD", &c, &conf).ok();
    assert_eq!(status(&conf).err_code(), 50);
    h.run("DEL", &c, &with_prev(&conf, &result)).ok();
    status(&conf).ok();
    // A bus device that is not on the machine.
    let bus = fake_bus("hd0");
    let pci = |id: &str| h.conf(json!({"cniVersion": "1.1.0", "device": null, "pciBusID": id}));
    let run = |conf: &Value| {
        Invocation::new("STATUS", "", "", "", &conf.to_string())
            .private_sysfs(&[(bus.path(), "bus")])
            .run(&bin(), &h.ns)
    };
    run(&pci("0000:00:09.0")).ok();
    assert_eq!(run(&pci("0000:00:1f.0")).err_code(), 50);
}

#[test]
fn results_in_every_version_and_without_ipam() {
    let h = Host::new();
    for version in ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let c = container();
        let conf = h.conf(json!({"cniVersion": version}));
        let r = h.run("ADD", &c, &conf).ok();
        assert_eq!(r["cniVersion"], version);
        if version == "0.2.0" {
            assert_eq!(r["ip4"]["ip"], "192.0.2.10/24", "{r}");
        } else {
            assert_eq!(r["interfaces"][0]["name"], "net1", "{r}");
            assert_eq!(r["ips"][0]["interface"], 0, "{r}");
        }
        h.run("DEL", &c, &with_prev(&conf, &r)).ok();
    }
    // No IPAM: the interface is moved and reported, nothing else.
    let c = container();
    let conf = h.conf(json!({"ipam": null, "dns": {"nameservers": ["192.0.2.53"]}}));
    let r = h.run("ADD", &c, &conf).ok();
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert!(r.get("ips").is_none(), "{r}");
    assert_eq!(r["dns"]["nameservers"], json!(["192.0.2.53"]));
    assert!(addresses(&c, "net1").iter().all(|a| a.starts_with("fe80:")));
    h.run("CHECK", &c, &with_prev(&conf, &r)).ok();
    h.run("DEL", &c, &with_prev(&conf, &r)).ok();
}

#[test]
fn a_previous_result_is_passed_on_with_the_device_appended() {
    let h = Host::new();
    let c = container();
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": c.path()}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}]});
    let conf = with_prev(&h.conf(json!({})), &prev);
    let r = h.run("ADD", &c, &conf).ok();
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(r["interfaces"][1]["name"], "net1");
    assert_eq!(r["ips"][0], json!({"address": "127.0.0.1/8", "interface": 0}));
    assert_eq!(r["ips"][1], json!({"address": "192.0.2.10/24", "gateway": "192.0.2.1", "interface": 1}));
    h.run("CHECK", &c, &with_prev(&conf, &r)).ok();
    h.run("DEL", &c, &with_prev(&conf, &r)).ok();
    assert!(Path::new(&h.ipam.path().join("hostnet")).exists());
    assert_eq!(h.allocated(), 0);
}

#[test]
fn gc_is_passed_on_to_ipam() {
    let h = Host::new();
    let c = container();
    let conf = h.conf(json!({"cniVersion": "1.1.0"}));
    h.run("ADD", &c, &conf).ok();
    assert_eq!(h.allocated(), 2);
    let gc = |valid: Value| {
        let mut conf = conf.clone();
        conf["cni.dev/valid-attachments"] = valid;
        Invocation::new("GC", "", "", "", &conf.to_string()).run(&bin(), &h.ns).ok();
    };
    gc(json!([{"containerID": "ctr-1", "ifname": "net1"}]));
    assert_eq!(h.allocated(), 2, "a valid attachment keeps its addresses");
    gc(json!([]));
    assert_eq!(h.allocated(), 0, "host-local released the stale ones");
}
