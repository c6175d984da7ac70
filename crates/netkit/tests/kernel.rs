//! Kernel tests for netkit, each in throwaway namespaces; results are checked with `ip`.

use cni::Code;
use ipnetwork::IpNetwork;
use netkit::{NetNs, RouteSpec, Rtnl, VethPair, errno_of, sysctl};
use netlink_packet_route::link::InfoBridgePort;
use std::os::fd::AsFd;
use testkit::{addresses, ip, ip_json, link, new_netns};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

#[test]
fn run_enters_the_namespace_and_never_moves_the_caller() {
    let ns = new_netns();
    let before = NetNs::current().unwrap();
    let inside = ns.run(|| NetNs::current().unwrap()).unwrap();
    assert!(inside.same_as(&ns));
    assert!(!inside.same_as(&before));
    assert!(NetNs::current().unwrap().same_as(&before));
    // A panic inside stays inside: the caller is still where it was.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ns.run(|| panic!("boom"))));
    assert!(panicked.is_err());
    assert!(NetNs::current().unwrap().same_as(&before));
}

#[test]
fn open_rejects_what_is_not_a_container_namespace() {
    testkit::require_root();
    let file = std::env::temp_dir().join(format!("netkit-not-ns-{}", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(NetNs::open(&file).unwrap_err().code, Code::InvalidNetNs);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(NetNs::open("/proc/self/ns/mnt").unwrap_err().code, Code::InvalidNetNs);
    assert_eq!(NetNs::open("/proc/thread-self/ns/net").unwrap_err().code, Code::InvalidNetNs);
    assert_eq!(NetNs::open("/nonexistent/netns").unwrap_err().code, Code::UnknownContainer);
    assert!(NetNs::open_if_exists("/nonexistent/netns").unwrap().is_none());
    assert!(NetNs::open_if_exists("").unwrap().is_none());
    let ns = new_netns();
    assert!(NetNs::open(ns.path()).unwrap().same_as(&ns));
}

#[test]
fn veth_peer_is_created_directly_in_the_other_namespace() {
    let (host, container) = (new_netns(), new_netns());
    let mut rtnl = Rtnl::open_in(&host).unwrap();
    let mac = [0x0a, 0x58, 0x0a, 0x01, 0x00, 0x05];
    rtnl.create_veth(&VethPair {
        name: "veth-h",
        peer_name: "eth0",
        peer_ns: Some(container.as_fd()),
        mtu: Some(1400),
        peer_mac: Some(mac),
    })
    .unwrap();
    let host_end = rtnl.link_by_name("veth-h").unwrap().unwrap();
    assert!(host_end.is_kind("veth"));
    assert_eq!(host_end.mtu, 1400);
    assert!(host_end.link_netnsid.is_some(), "peer should be in another namespace");

    let mut inside = Rtnl::open_in(&container).unwrap();
    let peer = inside.link_by_name("eth0").unwrap().unwrap();
    assert_eq!(peer.mac_string(), "0a:58:0a:01:00:05");
    assert_eq!(host_end.peer_index, Some(peer.index));
    assert!(link(&host, "eth0").is_none());
    assert_eq!(link(&container, "eth0").unwrap()["mtu"], 1400);

    // The same name again is EEXIST, which callers map to "interface already exists".
    let again = rtnl.create_veth(&VethPair {
        name: "veth-x",
        peer_name: "eth0",
        peer_ns: Some(container.as_fd()),
        ..Default::default()
    });
    assert!(again.unwrap_err().is(nix::libc::EEXIST));

    rtnl.delete_link(host_end.index).unwrap();
    assert!(link(&container, "eth0").is_none(), "deleting one end removes the pair");
    assert!(rtnl.link_by_name("veth-h").unwrap().is_none());
}

#[test]
fn a_detached_deletion_returns_with_the_pair_and_its_routes_gone() {
    let (host, container) = (new_netns(), new_netns());
    let mut rtnl = Rtnl::open_in(&host).unwrap();
    let pair = |name| VethPair { name, peer_name: "eth0", peer_ns: Some(container.as_fd()), ..Default::default() };
    rtnl.create_veth(&pair("veth-d")).unwrap();
    ip(&host, "link set veth-d up");
    ip(&host, "route add 10.9.0.2/32 dev veth-d");
    // From a thread in the container's namespace, as a plugin's DEL does it.
    container
        .run(|| {
            let mut inside = Rtnl::open().unwrap();
            let eth0 = inside.link_by_name("eth0").unwrap().unwrap();
            inside.delete_link_detached(eth0.index).unwrap();
            // Gone already: success.
            inside.delete_link_detached(eth0.index).unwrap();
        })
        .unwrap();
    assert!(link(&container, "eth0").is_none());
    assert!(link(&host, "veth-d").is_none(), "the peer went with it");
    assert!(!ip(&host, "route show").contains("10.9.0.2"), "{}", ip(&host, "route show"));
    // A handle of another namespace than the calling thread's: the plain deletion, same result.
    rtnl.create_veth(&pair("veth-e")).unwrap();
    let index = rtnl.link_by_name("veth-e").unwrap().unwrap().index;
    rtnl.delete_link_detached(index).unwrap();
    assert!(link(&host, "veth-e").is_none());
    assert!(link(&container, "eth0").is_none());
}

#[test]
fn bridge_ports_get_master_hairpin_and_isolation() {
    let ns = new_netns();
    let mut rtnl = Rtnl::open_in(&ns).unwrap();
    rtnl.create_bridge("br-test", Some(1450), false).unwrap();
    assert!(rtnl.create_bridge("br-test", None, false).unwrap_err().is(nix::libc::EEXIST));
    let br = rtnl.link_by_name("br-test").unwrap().unwrap();
    assert!(br.is_kind("bridge"));
    assert_eq!(br.mtu, 1450);
    rtnl.create_veth(&VethPair { name: "p1", peer_name: "p1-peer", ..Default::default() }).unwrap();
    let port = rtnl.link_by_name("p1").unwrap().unwrap();
    rtnl.set_master(port.index, br.index).unwrap();
    rtnl.set_bridge_port(port.index, vec![InfoBridgePort::HairpinMode(true), InfoBridgePort::Isolated(true)]).unwrap();
    rtnl.set_up(br.index).unwrap();
    rtnl.set_promisc(br.index, true).unwrap();
    let port = rtnl.link_by_index(port.index).unwrap().unwrap();
    assert_eq!(port.master, Some(br.index));
    assert_eq!((port.hairpin, port.isolated), (Some(true), Some(true)));
    let br = rtnl.link_by_index(br.index).unwrap().unwrap();
    assert!(br.up && br.promisc);
    let shown = ip_json(&ns, "-d link show p1");
    assert_eq!(shown[0]["master"], "br-test");
    assert_eq!(shown[0]["linkinfo"]["info_slave_data"]["hairpin"], true);
    assert_eq!(shown[0]["linkinfo"]["info_slave_data"]["isolated"], true);
}

#[test]
fn addresses_are_added_listed_and_removed() {
    let ns = new_netns();
    let mut rtnl = Rtnl::open_in(&ns).unwrap();
    rtnl.create_veth(&VethPair { name: "a", peer_name: "b", ..Default::default() }).unwrap();
    let a = rtnl.link_by_name("a").unwrap().unwrap();
    rtnl.add_address(a.index, net("10.9.0.5/24"), false).unwrap();
    rtnl.add_address(a.index, net("fd00:9::5/64"), true).unwrap();
    let dup = rtnl.add_address(a.index, net("10.9.0.5/24"), false).unwrap_err();
    assert!(dup.is(nix::libc::EEXIST));
    let shown = addresses(&ns, "a");
    assert!(shown.contains(&"10.9.0.5/24".to_string()), "{shown:?}");
    assert!(shown.contains(&"fd00:9::5/64".to_string()), "{shown:?}");
    let brd = ip_json(&ns, "addr show dev a");
    assert_eq!(brd[0]["addr_info"][0]["broadcast"], "10.9.0.255");

    let listed = rtnl.addresses(Some(a.index), Some(netkit::Family::V4)).unwrap();
    assert_eq!(listed.iter().map(|x| x.net).collect::<Vec<_>>(), vec![net("10.9.0.5/24")]);
    let v6 = rtnl.addresses(Some(a.index), Some(netkit::Family::V6)).unwrap();
    let global = v6.iter().find(|x| x.net == net("fd00:9::5/64")).unwrap();
    assert!(global.is_global() && !global.is_tentative());

    rtnl.del_address(a.index, net("10.9.0.5/24")).unwrap();
    assert!(!addresses(&ns, "a").contains(&"10.9.0.5/24".to_string()));
}

#[test]
fn routes_carry_gateway_metric_table_mtu_and_advmss() {
    let ns = new_netns();
    let mut rtnl = Rtnl::open_in(&ns).unwrap();
    rtnl.create_veth(&VethPair { name: "r0", peer_name: "r1", ..Default::default() }).unwrap();
    let r0 = rtnl.link_by_name("r0").unwrap().unwrap();
    rtnl.set_up(r0.index).unwrap();
    rtnl.add_address(r0.index, net("10.7.0.2/24"), false).unwrap();

    let mut route = RouteSpec::new(net("192.168.50.0/24"), Some("10.7.0.1".parse().unwrap()), Some(r0.index));
    route.priority = Some(77);
    route.mtu = Some(1300);
    route.advmss = Some(1260);
    rtnl.add_route(&route).unwrap();
    assert!(rtnl.add_route(&route).unwrap_err().is(nix::libc::EEXIST));
    let shown = ip(&ns, "route show 192.168.50.0/24");
    for want in ["via 10.7.0.1", "dev r0", "metric 77", "mtu 1300", "advmss 1260"] {
        assert!(shown.contains(want), "{want} missing in {shown}");
    }
    let mut in_table = RouteSpec::new(net("0.0.0.0/0"), Some("10.7.0.1".parse().unwrap()), Some(r0.index));
    in_table.table = Some(1000);
    rtnl.add_route(&in_table).unwrap();
    assert!(ip(&ns, "route show table 1000").contains("default via 10.7.0.1"));

    let listed = rtnl.routes(netkit::Family::V4).unwrap();
    let found = listed.iter().find(|r| r.dst == net("192.168.50.0/24")).unwrap();
    assert_eq!((found.gw, found.priority, found.mtu, found.advmss), (route.gw, Some(77), Some(1300), Some(1260)));
    assert!(listed.iter().any(|r| r.table == Some(1000) && r.dst.prefix() == 0));

    rtnl.del_route(&route).unwrap();
    assert!(ip(&ns, "route show 192.168.50.0/24").trim().is_empty());
    let gone = rtnl.del_route(&route).unwrap_err();
    assert!(gone.is(nix::libc::ESRCH), "{gone}");
}

#[test]
fn links_move_between_namespaces_and_can_be_renamed() {
    let (a, b) = (new_netns(), new_netns());
    let mut in_a = Rtnl::open_in(&a).unwrap();
    in_a.create_veth(&VethPair { name: "m0", peer_name: "m1", ..Default::default() }).unwrap();
    let m0 = in_a.link_by_name("m0").unwrap().unwrap();
    in_a.set_alias(m0.index, "was-m0").unwrap();
    in_a.move_to_netns(m0.index, b.as_fd()).unwrap();
    assert!(in_a.link_by_name("m0").unwrap().is_none());
    let mut in_b = Rtnl::open_in(&b).unwrap();
    let moved = in_b.link_by_name("m0").unwrap().unwrap();
    assert_eq!(moved.alias.as_deref(), Some("was-m0"));
    in_b.rename(moved.index, "net9").unwrap();
    assert!(link(&b, "net9").is_some());
}

#[test]
fn sysctls_are_per_namespace() {
    let ns = new_netns();
    let before = sysctl::read("net/ipv4/ip_forward").unwrap();
    ns.run(|| sysctl::write("net/ipv4/ip_forward", "1")).unwrap().unwrap();
    assert_eq!(ns.run(|| sysctl::read("net/ipv4/ip_forward")).unwrap().unwrap(), "1");
    assert_eq!(sysctl::read("net/ipv4/ip_forward").unwrap(), before, "the test's own namespace changed");
}

#[test]
fn errno_survives_context() {
    let ns = new_netns();
    let mut rtnl = Rtnl::open_in(&ns).unwrap();
    let err = rtnl.delete_link(9999).map_err(anyhow::Error::from);
    let err = anyhow::Context::context(err, "deleting link 9999").unwrap_err();
    assert_eq!(errno_of(&err), Some(nix::libc::ENODEV));
}
