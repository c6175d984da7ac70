//! Inputs the fuzz targets (crates/fuzz, `make fuzz`) found to break the store or the config, kept
//! as tests. Each names the target that found it.

use host_local::store::{Owner, Store};
use std::net::IpAddr;
use std::path::Path;
use testkit::TempDir;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn plant(data_dir: &Path, name: &str, content: &str) {
    let path = data_dir.join("net").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// host_local_store: an address file naming an interface that cannot exist (`a/b` made the index
/// entry's path point into a missing directory; `:legacy` collided with the entry of the
/// container's old-style files) kept the store from opening, so every verb of that network failed
/// until someone removed the file by hand.
#[test]
fn an_address_file_naming_an_impossible_interface_names_nobody() {
    for ifname in ["a/b", ":legacy", "eth0\0x", "0123456789abcdef", "eth 0"] {
        let content = format!("c1\r\n{ifname}");
        assert_eq!(Owner::parse(&content), None, "{ifname:?}");

        let tmp = TempDir::new("fuzz-store");
        plant(tmp.path(), "10.1.0.2", &content);
        plant(tmp.path(), "10.1.0.3", "c1\r\neth0");
        plant(tmp.path(), "10.1.0.4", "c1");
        let store = Store::open(tmp.path(), "net", 1).unwrap_or_else(|e| panic!("{ifname:?}: {e:#}"));
        assert_eq!(store.addresses_of(&Owner::new("c1", "eth0")), [ip("10.1.0.3")], "{ifname:?}");
        let legacy = Owner { container_id: "c1".into(), ifname: None };
        assert_eq!(store.addresses_of(&legacy), [ip("10.1.0.4")], "{ifname:?}");
        // GC releases what names nobody.
        let valid = [cni::Attachment { container_id: "c1".into(), ifname: "eth0".into() }];
        assert_eq!(store.gc(&valid).unwrap(), [ip("10.1.0.2")], "{ifname:?}");
        store.commit().unwrap();
    }
}

/// host_local_store: a `:state` marked clean that records a huge range set index (18446744069415632895)
/// made every open track that many sets: a capacity overflow panic, and for smaller huge indices
/// a read of every `last_reserved_ip.<n>` up to it and a `:state` rewritten with as many lines.
#[test]
fn a_state_file_recording_a_huge_set_index_is_rebuilt() {
    for index in ["18446744069415632895", "18446744073709551615", "100000"] {
        let tmp = TempDir::new("fuzz-store");
        plant(tmp.path(), "10.1.0.2", "c1\r\neth0");
        plant(tmp.path(), ".attachments/:state", &format!("host-local-index v2 clean\n0 -\n{index} 10.1.0.2\n"));
        let store = Store::open(tmp.path(), "net", 1).unwrap_or_else(|e| panic!("{index}: {e:#}"));
        // The state did not describe this store, so the index was rebuilt from the address files.
        assert_eq!(store.addresses_of(&Owner::new("c1", "eth0")), [ip("10.1.0.2")], "{index}");
        store.commit().unwrap();
        let state = std::fs::read_to_string(tmp.path().join("net/.attachments/:state")).unwrap();
        assert!(state.starts_with("host-local-index v2 clean\n0 -\ndir "), "{index}: {state}");
        assert_eq!(state.lines().count(), 3, "{index}: {state}");
    }
}

/// host_local_store: an address file under another spelling of an address (`FD00::5`,
/// `fd00:0:0:0:0:0:0:5`) was scanned as that address, so GC, releasing it, removed the file of the
/// address as it is spelled (`fd00::5`): another container's allocation. Only the spelling both
/// implementations write names an address.
#[test]
fn gc_ignores_address_files_under_another_spelling() {
    for spelling in ["FD00::5", "fd00:0:0:0:0:0:0:5", "fd00:0::5"] {
        let tmp = TempDir::new("fuzz-store");
        plant(tmp.path(), "fd00::5", "c1\r\neth0");
        plant(tmp.path(), spelling, "c2\r\neth0");
        let store = Store::open(tmp.path(), "net", 1).unwrap();
        assert_eq!(store.scan().unwrap(), [(ip("fd00::5"), Some(Owner::new("c1", "eth0")))], "{spelling}");
        let valid = [cni::Attachment { container_id: "c1".into(), ifname: "eth0".into() }];
        assert_eq!(store.gc(&valid).unwrap(), Vec::<IpAddr>::new(), "{spelling}");
        assert_eq!(store.owner_of(ip("fd00::5")), Some(Owner::new("c1", "eth0")), "{spelling}: c1 lost its address");
        store.commit().unwrap();
    }
}

/// host_local_config: a range of 2^128 addresses (`::/0` from `rangeStart` `::`), or IPv6 ranges
/// adding up to that many, overflowed the count of addresses in the set: a panic in a debug build;
/// in a release build a count of 0, so no address was ever offered ("no IP addresses available")
/// and a walk from a last reserved address divided by zero. The walk now counts one address short
/// of 2^128, which no allocation can tell.
#[test]
fn ranges_of_two_to_the_128_addresses_are_walked() {
    use host_local::range::{Range, RangeSet, RangeSpec};
    let range = |subnet: &str, start: &str| {
        Range::parse(&RangeSpec { subnet: Some(subnet), range_start: Some(start), ..Default::default() }, "r").unwrap()
    };
    let walk = |set: &RangeSet, last: Option<&str>| -> Vec<IpAddr> {
        set.walk(last.map(ip)).take(2).map(|(ip, _)| ip).collect()
    };

    let everything = RangeSet::new(vec![range("::/0", "::")], "s").unwrap();
    assert_eq!(walk(&everything, None), [ip("::2"), ip("::3")], "::1 is the gateway");
    assert_eq!(walk(&everything, Some("::5")), [ip("::6"), ip("::7")]);
    assert!(everything.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));

    let halves = RangeSet::new(vec![range("::/1", "::"), range("8000::/1", "8000::")], "s").unwrap();
    assert_eq!(walk(&halves, Some("7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), [ip("8000::2"), ip("8000::3")]);
    assert_eq!(walk(&halves, Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"))[0], ip("::2"));
}
