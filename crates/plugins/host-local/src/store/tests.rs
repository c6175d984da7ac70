use super::*;
use crate::range::{Range, RangeSpec};
use std::os::unix::fs::PermissionsExt;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "host-local-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(subnet: &str) -> RangeSet {
    let r = Range::parse(&RangeSpec { subnet: Some(subnet), ..Default::default() }, "t").unwrap();
    RangeSet::new(vec![r], "t").unwrap()
}

fn owner(id: &str, ifname: &str) -> Owner {
    Owner::new(id, ifname)
}

#[test]
fn files_are_in_the_reference_format() {
    let tmp = TempDir::new();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    store.begin().unwrap();
    assert!(store.reserve(ip("10.1.0.2"), &owner("c1", "eth0")).unwrap());
    assert!(!store.reserve(ip("10.1.0.2"), &owner("c2", "eth0")).unwrap(), "taken twice");
    store.set_last_reserved(0, ip("10.1.0.2")).unwrap();
    store.commit().unwrap();
    let dir = tmp.0.join("net");
    assert_eq!(fs::read_to_string(dir.join("10.1.0.2")).unwrap(), "c1\r\neth0");
    assert_eq!(fs::metadata(dir.join("10.1.0.2")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(), "10.1.0.2");
    assert!(dir.join("lock").is_file());
    assert!(!dir.join(INDEX).join(DIRTY).exists());
    let names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.starts_with(":tmp")), "{names:?}");
}

#[test]
fn release_by_attachment_and_legacy_fallback() {
    let tmp = TempDir::new();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    store.begin().unwrap();
    store.reserve(ip("10.1.0.2"), &owner("c1", "eth0")).unwrap();
    store.reserve(ip("fd00::2"), &owner("c1", "eth0")).unwrap();
    store.record(&owner("c1", "eth0"), &[ip("10.1.0.2"), ip("fd00::2")]).unwrap();
    store.reserve(ip("10.1.0.3"), &owner("c1", "net1")).unwrap();
    store.record(&owner("c1", "net1"), &[ip("10.1.0.3")]).unwrap();
    let mut got = store.release("c1", "eth0").unwrap();
    got.sort();
    assert_eq!(got, vec![ip("10.1.0.2"), ip("fd00::2")]);
    assert_eq!(store.addresses_of(&owner("c1", "net1")), vec![ip("10.1.0.3")]);
    assert!(store.release("c1", "eth0").unwrap().is_empty(), "second release finds nothing");
    store.commit().unwrap();

    // A file from an old version names the container alone.
    fs::write(tmp.0.join("net").join("10.1.0.9"), "old-ctr").unwrap();
    fs::write(tmp.0.join("net").join("last_reserved_ip.0"), "10.1.0.9").unwrap();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    store.begin().unwrap();
    assert_eq!(store.release("old-ctr", "eth0").unwrap(), vec![ip("10.1.0.9")]);
    store.commit().unwrap();
    assert!(!tmp.0.join("net").join("10.1.0.9").exists());
}

#[test]
fn allocations_by_another_binary_are_indexed_on_next_open() {
    let tmp = TempDir::new();
    Store::open(&tmp.0, "net", 1).unwrap().commit().unwrap();
    // What the reference does on ADD: create the file, write the owner, rewrite last_reserved_ip.
    let dir = tmp.0.join("net");
    fs::write(dir.join("10.1.0.7"), "ref-ctr\r\neth0").unwrap();
    fs::write(dir.join("last_reserved_ip.0"), "10.1.0.7").unwrap();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    assert_eq!(store.addresses_of(&owner("ref-ctr", "eth0")), vec![ip("10.1.0.7")]);
}

#[test]
fn a_crash_mid_change_is_repaired_on_next_open() {
    let tmp = TempDir::new();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    store.begin().unwrap();
    // Killed between creating the <ip> file and indexing it, before commit.
    store.reserve(ip("10.1.0.2"), &owner("c1", "eth0")).unwrap();
    drop(store);
    let dir = tmp.0.join("net");
    assert!(fs::read_to_string(dir.join(INDEX).join(STATE)).unwrap().starts_with(DIRTY));
    // ...and a writer that creates before it writes died in between: an empty file.
    fs::write(dir.join("10.1.0.3"), "").unwrap();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    assert_eq!(store.addresses_of(&owner("c1", "eth0")), vec![ip("10.1.0.2")]);
    assert!(!dir.join("10.1.0.3").exists(), "empty leftover should be removed");
    assert!(!dir.join(INDEX).join(DIRTY).exists());
}

#[test]
fn stale_index_entries_do_not_count() {
    let tmp = TempDir::new();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    store.begin().unwrap();
    store.reserve(ip("10.1.0.2"), &owner("c1", "eth0")).unwrap();
    store.record(&owner("c1", "eth0"), &[ip("10.1.0.2")]).unwrap();
    store.commit().unwrap();
    // Someone else removed the address and gave it to another container.
    let dir = tmp.0.join("net");
    fs::write(dir.join("10.1.0.2"), "c2\r\neth0").unwrap();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    assert!(store.addresses_of(&owner("c1", "eth0")).is_empty());
    store.begin().unwrap();
    assert!(store.release("c1", "eth0").unwrap().is_empty());
    store.commit().unwrap();
    assert_eq!(fs::read_to_string(dir.join("10.1.0.2")).unwrap(), "c2\r\neth0", "c2's address was released");
}

#[test]
fn gc_keeps_valid_attachments_only() {
    let tmp = TempDir::new();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    store.begin().unwrap();
    store.reserve(ip("10.1.0.2"), &owner("keep", "eth0")).unwrap();
    store.reserve(ip("10.1.0.3"), &owner("keep", "net1")).unwrap();
    store.reserve(ip("10.1.0.4"), &owner("gone", "eth0")).unwrap();
    store.commit().unwrap();
    let dir = tmp.0.join("net");
    fs::write(dir.join("10.1.0.5"), "keep").unwrap(); // legacy file of a valid container
    fs::write(dir.join("10.1.0.6"), "not a valid id!").unwrap();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    store.begin().unwrap();
    let valid = [Attachment { container_id: "keep".into(), ifname: "eth0".into() }];
    let mut released = store.gc(&valid).unwrap();
    released.sort();
    assert_eq!(released, vec![ip("10.1.0.3"), ip("10.1.0.4"), ip("10.1.0.6")]);
    store.commit().unwrap();
    assert!(dir.join("10.1.0.2").exists() && dir.join("10.1.0.5").exists());
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    assert!(store.addresses_of(&owner("gone", "eth0")).is_empty());
    assert_eq!(store.addresses_of(&owner("keep", "eth0")), vec![ip("10.1.0.2")]);
}

#[test]
fn free_addresses_are_found_from_the_cursor() {
    let tmp = TempDir::new();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    let tiny = set("10.9.0.0/30"); // one usable address: .2
    assert!(store.has_free_address(0, &tiny));
    store.begin().unwrap();
    store.reserve(ip("10.9.0.2"), &owner("c", "eth0")).unwrap();
    store.commit().unwrap();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    assert!(!store.has_free_address(0, &tiny));
}

#[test]
fn names_that_escape_data_dir_are_refused() {
    let tmp = TempDir::new();
    for bad in ["..", ".", "a/b", ""] {
        let e = Store::open(&tmp.0, bad, 1).err().expect("should fail");
        assert_eq!(cni::Error::from_anyhow(&e).code, Code::InvalidConfig, "{bad:?}");
    }
}

#[test]
fn symlinked_network_dirs_and_files_are_not_followed() {
    let tmp = TempDir::new();
    let elsewhere = tmp.0.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, tmp.0.join("net")).unwrap();
    assert!(Store::open(&tmp.0, "net", 1).is_err());

    let store = Store::open(&tmp.0, "other", 1).unwrap();
    let secret = tmp.0.join("secret");
    fs::write(&secret, "c1\r\neth0").unwrap();
    std::os::unix::fs::symlink(&secret, tmp.0.join("other").join("10.1.0.2")).unwrap();
    assert_eq!(store.owner_of(ip("10.1.0.2")), None, "a symlinked <ip> file must not be read");
}

#[test]
fn the_lock_excludes_a_second_opener() {
    let tmp = TempDir::new();
    let first = Store::open(&tmp.0, "net", 1).unwrap();
    let path = tmp.0.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let second = std::thread::spawn(move || {
        let store = Store::open(&path, "net", 1).unwrap();
        tx.send(()).unwrap();
        store.commit().unwrap();
    });
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "second open did not wait for the lock");
    first.commit().unwrap();
    rx.recv_timeout(Duration::from_secs(5)).expect("second open after release");
    second.join().unwrap();
}

#[test]
fn a_torn_state_file_means_rebuild() {
    let tmp = TempDir::new();
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    store.begin().unwrap();
    store.reserve(ip("10.1.0.2"), &owner("c1", "eth0")).unwrap();
    store.commit().unwrap(); // committed, but never indexed
    let state = tmp.0.join("net").join(INDEX).join(STATE);
    fs::write(&state, "").unwrap(); // killed between truncate and write
    let store = Store::open(&tmp.0, "net", 1).unwrap();
    assert_eq!(store.addresses_of(&owner("c1", "eth0")), vec![ip("10.1.0.2")]);
}

#[test]
fn owners_parse_like_the_reference_compares() {
    assert_eq!(Owner::parse("c1\r\neth0\n"), Some(owner("c1", "eth0")));
    assert_eq!(Owner::parse("  c1  "), Some(Owner { container_id: "c1".into(), ifname: None }));
    assert_eq!(Owner::parse(""), None);
    // Trimmed first, as the reference compares: this names a container "eth0".
    assert_eq!(Owner::parse("\r\neth0"), Some(Owner { container_id: "eth0".into(), ifname: None }));
    assert_eq!(Owner::parse("c1\r\n"), Some(Owner { container_id: "c1".into(), ifname: None }));
    assert_eq!(Owner::parse("bad id\r\neth0"), None);
}
