//! Hostile input to the built `host-local` binary: names that climb out of `dataDir`, paths as
//! `dataDir`, symlinks, hard links and FIFOs planted in the store, file modes, and inputs too big
//! to handle. Each refusal must be the spec's error JSON with a meaningful code, and leave nothing
//! behind: nothing is created outside `dataDir` and nothing is written through a planted link.
//!
//! Everything happens under a temporary directory: `root/data` is `dataDir`, `root/outside` holds
//! the files a planted link points to, and is compared byte for byte before and after.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::{Invocation, Output, TempDir};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_host-local"))
}

/// A sandbox: `root/data` is `dataDir`, `root/outside` a directory a planted link points into.
struct Sandbox {
    root: TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = TempDir::new("hl-security");
        std::fs::create_dir(root.path().join("outside")).unwrap();
        std::fs::write(root.path().join("outside/victim"), "precious\n").unwrap();
        Sandbox { root }
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn store(&self) -> PathBuf {
        self.data().join("net1")
    }

    fn outside(&self) -> PathBuf {
        self.root.path().join("outside")
    }

    fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "net1", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": self.data().display().to_string(),
                     "ranges": [[{"subnet": "10.1.0.0/24"}]]}
        })
    }

    fn run_with(&self, command: &str, cid: &str, ifname: &str, conf: &Value) -> Output {
        Invocation::new(command, cid, "/var/run/netns/unused", ifname, &conf.to_string()).run_here(&bin())
    }

    fn run(&self, command: &str, cid: &str) -> Output {
        self.run_with(command, cid, "eth0", &self.conf())
    }

    /// The store with its first allocation made and released, so it exists with all its files.
    fn with_store(self) -> Sandbox {
        self.run("ADD", "first").ok();
        self.run("DEL", "first").ok();
        self
    }

    /// Address files in the store.
    fn allocated(&self) -> Vec<String> {
        let mut ips: Vec<String> = std::fs::read_dir(self.store())
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        ips.sort();
        ips
    }
}

/// Every path under `dir` with its type, mode and content (files) or target (links), to compare a
/// tree before and after an invocation.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let what = if meta.file_type().is_symlink() {
            format!("link -> {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            out.extend(snapshot(&path));
            format!("dir {:o}", meta.mode())
        } else if meta.is_file() {
            format!("file {:o} {:?}", meta.mode(), std::fs::read(&path).unwrap())
        } else {
            format!("other {:o}", meta.mode())
        };
        out.insert(path, what);
    }
    out
}

/// Asserts the error JSON of the spec with `code`, and that its message mentions `want`.
fn assert_refused(out: &Output, code: u64, want: &str) {
    assert_eq!(out.err_code(), code, "{}", out.stdout);
    let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(want), "message {msg:?} should mention {want:?}");
    assert!(out.json()["cniVersion"].as_str().is_some_and(|v| !v.is_empty()), "{}", out.stdout);
}

#[test]
fn network_names_that_climb_out_of_data_dir_are_refused() {
    let sb = Sandbox::new();
    let long = "n".repeat(cni::config::MAX_NETWORK_NAME + 1);
    for name in ["../escape", "a/b", "..", ".", "/abs", "a\nb", "a\0b", "-x", long.as_str()] {
        let mut conf = sb.conf();
        conf["name"] = json!(name);
        let out = sb.run_with("ADD", "c1", "eth0", &conf);
        assert_refused(&out, 7, "network name");
        let out = sb.run_with("DEL", "c1", "eth0", &conf);
        assert_eq!(out.err_code(), 7, "DEL with network name {name:?}");
    }
    let mut conf = sb.conf();
    conf.as_object_mut().unwrap().remove("name");
    assert_refused(&sb.run_with("ADD", "c1", "eth0", &conf), 7, "missing network name");
    assert!(!sb.data().exists(), "a refused ADD created {}", sb.data().display());
    assert_eq!(snapshot(sb.root.path()).len(), 2, "{:#?}", snapshot(sb.root.path()));

    // The longest name allowed works.
    let mut conf = sb.conf();
    conf["name"] = json!("n".repeat(cni::config::MAX_NETWORK_NAME));
    sb.run_with("ADD", "c1", "eth0", &conf).ok();
    sb.run_with("DEL", "c1", "eth0", &conf).ok();
}

#[test]
fn container_ids_and_ifnames_that_climb_are_refused() {
    let sb = Sandbox::new();
    let long_id = "c".repeat(cni::env::MAX_CONTAINER_ID + 1);
    for id in ["../../x", "a/b", "..", ".hidden", "a\nb", "a b", "-x", "a:b", long_id.as_str()] {
        for verb in ["ADD", "DEL", "CHECK"] {
            let out = sb.run_with(verb, id, "eth0", &sb.conf());
            assert_refused(&out, 4, "containerID");
        }
    }
    for ifname in ["../x", "a/b", "..", ".", "eth0\n", "eth 0", "eth:0", "eth%d", "0123456789abcdef"] {
        for verb in ["ADD", "DEL", "CHECK"] {
            let out = sb.run_with(verb, "c1", ifname, &sb.conf());
            assert_refused(&out, 4, "interface name");
        }
    }
    assert!(!sb.data().exists(), "a refused invocation created {}", sb.data().display());

    // The longest ID allowed works from ADD to DEL and leaves nothing.
    let id = "c".repeat(cni::env::MAX_CONTAINER_ID);
    sb.run_with("ADD", &id, "0123456789abcde", &sb.conf()).ok();
    assert_eq!(sb.allocated(), ["10.1.0.2"]);
    sb.run_with("DEL", &id, "0123456789abcde", &sb.conf()).ok();
    assert!(sb.allocated().is_empty());
}

#[test]
fn data_dir_must_be_absolute_and_must_not_climb() {
    let sb = Sandbox::new();
    let climbing = format!("{}/../escaped", sb.data().display());
    let nul = format!("{}/x\0y", sb.data().display());
    for (dir, want) in [
        ("relative/dir", "is not an absolute path"),
        ("./data", "is not an absolute path"),
        (climbing.as_str(), "contains \"..\""),
        (nul.as_str(), "NUL"),
    ] {
        let mut conf = sb.conf();
        conf["ipam"]["dataDir"] = json!(dir);
        for verb in ["ADD", "DEL"] {
            assert_refused(&sb.run_with(verb, "c1", "eth0", &conf), 7, want);
        }
    }
    assert!(!sb.root.path().join("escaped").exists());
    assert!(!Path::new("relative").exists() && !Path::new("data").exists());
    assert_eq!(snapshot(sb.root.path()).len(), 2, "{:#?}", snapshot(sb.root.path()));
}

#[test]
fn ipam_types_that_are_paths_are_refused() {
    let sb = Sandbox::new();
    for t in ["/bin/sh", "../x", "x/y", "..", "."] {
        let mut conf = sb.conf();
        conf["ipam"]["type"] = json!(t);
        assert_refused(&sb.run_with("ADD", "c1", "eth0", &conf), 7, "ipam.type");
    }
    assert!(!sb.data().exists());
}

#[test]
fn a_symlinked_network_directory_is_refused() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.data()).unwrap();
    std::os::unix::fs::symlink(sb.outside(), sb.store()).unwrap();
    let before = snapshot(&sb.outside());
    assert_refused(&sb.run("ADD", "c1"), 5, "is a symlink");
    assert_refused(&sb.run("DEL", "c1"), 5, "is a symlink");
    let mut gc = sb.conf();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_refused(&sb.run_with("GC", "", "", &gc), 5, "is a symlink");
    assert_eq!(snapshot(&sb.outside()), before, "something was written through the symlinked store");

    // A dangling one is not followed either: nothing is created where it points.
    std::fs::remove_file(sb.store()).unwrap();
    std::os::unix::fs::symlink(sb.outside().join("made"), sb.store()).unwrap();
    assert_ne!(sb.run("ADD", "c1").exit_code, 0);
    assert!(!sb.outside().join("made").exists());
}

#[test]
fn a_symlinked_address_file_keeps_its_address_but_is_never_used() {
    let sb = Sandbox::new().with_store();
    std::fs::write(sb.outside().join("victim"), "first\r\neth0").unwrap();
    std::os::unix::fs::symlink(sb.outside().join("victim"), sb.store().join("10.1.0.3")).unwrap();
    let before = snapshot(&sb.outside());
    // The next address is .3 (round robin after .2); the link makes it taken.
    let result = sb.run("ADD", "c1").ok();
    assert_eq!(result["ips"][0]["address"], "10.1.0.4/24");
    // DEL of the container the victim file names does not remove it through the link.
    sb.run("DEL", "first").ok();
    sb.run("DEL", "c1").ok();
    assert_eq!(snapshot(&sb.outside()), before);
    // GC releases the link (it names nobody we can read) but not what it points to.
    let mut gc = sb.conf();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    sb.run_with("GC", "", "", &gc).ok();
    assert!(std::fs::symlink_metadata(sb.store().join("10.1.0.3")).is_err());
    assert_eq!(snapshot(&sb.outside()), before);
}

#[test]
fn links_and_fifos_planted_as_last_reserved_are_replaced_never_followed() {
    let sb = Sandbox::new().with_store();
    let last = sb.store().join("last_reserved_ip.0");
    type Plant<'a> = &'a dyn Fn(&Path);
    let plant: [(&str, Plant); 4] = [
        ("symlink", &|p| std::os::unix::fs::symlink(sb.outside().join("victim"), p).unwrap()),
        ("dangling symlink", &|p| std::os::unix::fs::symlink(sb.outside().join("created"), p).unwrap()),
        ("hard link", &|p| std::fs::hard_link(sb.outside().join("victim"), p).unwrap()),
        // A FIFO would block a reader, holding the store's lock, or a writer, forever.
        ("fifo", &|p| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()),
    ];
    for (what, plant) in plant {
        std::fs::remove_file(&last).unwrap();
        plant(&last);
        let before = snapshot(&sb.outside());
        let started = Instant::now();
        let result = sb.run("ADD", "c1").ok();
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: took {:?}", started.elapsed());
        assert_eq!(snapshot(&sb.outside()), before, "{what}: written through");
        let meta = std::fs::symlink_metadata(&last).unwrap();
        assert!(meta.is_file() && meta.nlink() == 1 && meta.mode() & 0o777 == 0o600, "{what}: {meta:?}");
        let ip = result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
        assert_eq!(std::fs::read_to_string(&last).unwrap(), ip, "{what}");
        sb.run("DEL", "c1").ok();
        assert!(sb.allocated().is_empty(), "{what}: {:?}", sb.allocated());
    }
    assert!(!sb.outside().join("created").exists());
}

#[test]
fn a_symlinked_lock_is_refused_before_anything_changes() {
    let sb = Sandbox::new().with_store();
    std::fs::remove_file(sb.store().join("lock")).unwrap();
    std::os::unix::fs::symlink(sb.outside().join("victim"), sb.store().join("lock")).unwrap();
    let before = snapshot(&sb.outside());
    let store_before = snapshot(&sb.store());
    assert_refused(&sb.run("ADD", "c1"), 5, "lock is a symlink: refusing");
    assert_refused(&sb.run("DEL", "c1"), 5, "lock is a symlink");
    assert_eq!(snapshot(&sb.outside()), before);
    assert_eq!(snapshot(&sb.store()), store_before, "a refused ADD changed the store");
}

#[test]
fn links_planted_in_the_index_are_replaced_never_followed() {
    let sb = Sandbox::new().with_store();
    let index = sb.store().join(".attachments");

    // The index directory itself, pointing at a directory with a :state that looks current.
    let fake = sb.outside().join("fake-index");
    std::fs::create_dir(&fake).unwrap();
    std::fs::copy(index.join(":state"), fake.join(":state")).unwrap();
    std::fs::remove_dir_all(&index).unwrap();
    std::os::unix::fs::symlink(&fake, &index).unwrap();
    let before = snapshot(&sb.outside());
    sb.run("ADD", "c1").ok();
    assert_eq!(snapshot(&sb.outside()), before, "the index was written through a symlink");
    let meta = std::fs::symlink_metadata(&index).unwrap();
    assert!(meta.is_dir() && meta.mode() & 0o777 == 0o700, "{meta:?}");
    assert_eq!(std::fs::read_to_string(index.join("c1:eth0")).unwrap(), "10.1.0.3\n");

    // Entries of attachments about to be added, with the index otherwise current: written over.
    std::os::unix::fs::symlink(sb.outside().join("victim"), index.join("c2:eth0")).unwrap();
    std::fs::hard_link(sb.outside().join("victim"), index.join("c1:eth1")).unwrap();
    let before = snapshot(&sb.outside());
    sb.run("ADD", "c2").ok();
    sb.run_with("ADD", "c1", "eth1", &sb.conf()).ok();
    // :state, which makes the next open rebuild the index.
    std::fs::remove_file(index.join(":state")).unwrap();
    std::os::unix::fs::symlink(sb.outside().join("victim"), index.join(":state")).unwrap();
    sb.run("ADD", "c3").ok();
    assert_eq!(snapshot(&sb.outside()), before, "the index was written through a link");
    for name in [":state", "c2:eth0", "c1:eth1", "c3:eth0"] {
        let meta = std::fs::symlink_metadata(index.join(name)).unwrap();
        assert!(meta.is_file() && meta.nlink() == 1, "{name}: {meta:?}");
    }
    for (cid, ifname) in [("c1", "eth0"), ("c2", "eth0"), ("c1", "eth1"), ("c3", "eth0")] {
        sb.run_with("DEL", cid, ifname, &sb.conf()).ok();
    }
    assert!(sb.allocated().is_empty(), "{:?}", sb.allocated());
}

#[test]
fn stores_others_can_write_to_are_refused() {
    let sb = Sandbox::new().with_store();
    let before = snapshot(&sb.store());
    for (mode, want) in [(0o777, "writable by others"), (0o775, "writable by others")] {
        std::fs::set_permissions(sb.store(), std::fs::Permissions::from_mode(mode)).unwrap();
        assert_refused(&sb.run("ADD", "c1"), 5, want);
    }
    std::fs::set_permissions(sb.store(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(sb.store(), Some(65534), None).unwrap();
    assert_refused(&sb.run("ADD", "c1"), 5, "owned by uid 65534");
    std::os::unix::fs::chown(sb.store(), Some(0), None).unwrap();
    assert_eq!(snapshot(&sb.store()), before);

    // dataDir writable by everyone: only with the sticky bit (as /tmp), else our directory could
    // be swapped for a symlink between our check and our use.
    std::fs::set_permissions(sb.data(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_refused(&sb.run("ADD", "c1"), 5, "writable by everyone without the sticky bit");
    std::fs::set_permissions(sb.data(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    sb.run("ADD", "c1").ok();
}

#[test]
fn state_files_are_never_more_open_than_the_references() {
    let sb = Sandbox::new();
    // Under the most permissive umask, what the store creates is still private: address files
    // 0600 (as the reference's), the lock 0600 (the reference's is 0750), directories 0755 (as
    // the reference's), the index 0700.
    let wrapper = sb.root.path().join("umask0-host-local");
    std::fs::write(&wrapper, format!("#!/bin/sh\numask 000\nexec {} \"$@\"\n", bin().display())).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = sb.conf().to_string();
    Invocation::new("ADD", "c1", "/x", "eth0", &conf).run_here(&wrapper).ok();
    let modes: BTreeMap<String, u32> = snapshot(&sb.data())
        .keys()
        .map(|p| {
            let name = p.strip_prefix(sb.data()).unwrap().display().to_string();
            (name, std::fs::symlink_metadata(p).unwrap().mode() & 0o7777)
        })
        .collect();
    let want: BTreeMap<String, u32> = [
        ("net1", 0o755),
        ("net1/.attachments", 0o700),
        ("net1/.attachments/:state", 0o600),
        ("net1/.attachments/c1:eth0", 0o600),
        ("net1/10.1.0.2", 0o600),
        ("net1/last_reserved_ip.0", 0o600),
        ("net1/lock", 0o600),
    ]
    .into_iter()
    .map(|(n, m)| (n.to_string(), m))
    .collect();
    assert_eq!(modes, want);
    let data_mode = std::fs::metadata(sb.data()).unwrap().mode() & 0o777;
    assert_eq!(data_mode & 0o022, 0, "dataDir created writable by others: {data_mode:o}");
}

#[test]
fn oversized_stdin_is_refused_without_reading_it_all() {
    let sb = Sandbox::new();
    let conf = sb.conf().to_string();
    // Exactly at the cap (the config padded with spaces) is read and works.
    let at_cap = format!("{conf}{}", " ".repeat(cni::skel::MAX_STDIN - conf.len()));
    Invocation::new("ADD", "c1", "/x", "eth0", &at_cap).run_here(&bin()).ok();
    let over = format!("{conf}{}", " ".repeat(cni::skel::MAX_STDIN + 1 - conf.len()));
    let out = Invocation::new("ADD", "c2", "/x", "eth0", &over).run_here(&bin());
    assert_refused(&out, 6, "exceeds");
    // Far over: a runaway writer is cut off, not buffered.
    let huge = " ".repeat(64 << 20);
    let started = Instant::now();
    let out = Invocation::new("ADD", "c3", "/x", "eth0", &huge).run_here(&bin());
    assert_eq!(out.err_code(), 6);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(sb.allocated(), ["10.1.0.2"]);
}

#[test]
fn a_hundred_thousand_ranges_are_refused_at_once() {
    let sb = Sandbox::new();
    let ranges: Vec<Value> =
        (0..100_000u32).map(|i| json!({"subnet": format!("10.{}.{}.0/30", (i >> 8) & 255, i & 255)})).collect();
    for layout in [json!([ranges]), Value::Array(ranges.iter().map(|r| json!([r])).collect())] {
        let mut conf = sb.conf();
        conf["ipam"]["ranges"] = layout;
        let started = Instant::now();
        assert_refused(&sb.run_with("ADD", "c1", "eth0", &conf), 7, "at most 1024");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }
    let mut conf = sb.conf();
    conf["runtimeConfig"] = json!({"ipRanges": [ranges[..1025].to_vec()]});
    assert_refused(&sb.run_with("ADD", "c1", "eth0", &conf), 7, "at most 1024");
    assert!(!sb.data().exists());

    // The most allowed, all in one set, are validated and allocated from in bounded time.
    let mut conf = sb.conf();
    conf["ipam"]["ranges"] = json!([ranges[..host_local::config::MAX_RANGES].to_vec()]);
    let started = Instant::now();
    sb.run_with("ADD", "c1", "eth0", &conf).ok();
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn gc_with_eighty_thousand_valid_attachments_takes_bounded_time() {
    let sb = Sandbox::new();
    let mut conf = sb.conf();
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.1.0.0/22"}]]);
    for i in 0..200 {
        sb.run_with("ADD", &format!("c{i}"), "eth0", &conf).ok();
    }
    // 80,000 entries are 3.3 MB, as many as fit under the 4 MiB stdin cap with the rest.
    let mut valid: Vec<Value> =
        (0..80_000).map(|i| json!({"containerID": format!("x{i}"), "ifname": "eth0"})).collect();
    valid.extend((0..100).map(|i| json!({"containerID": format!("c{i}"), "ifname": "eth0"})));
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = Value::Array(valid);
    let started = Instant::now();
    sb.run_with("GC", "", "", &conf).ok();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(sb.allocated().len(), 100);
}

/// A store file that cannot be written stops the ADD, and the address already reserved for it is
/// released: nothing is left for a container that never got an address.
#[test]
fn an_add_that_cannot_write_its_state_leaves_no_reservation() {
    let sb = Sandbox::new().with_store();
    // A non-empty directory where last_reserved_ip.0 goes: no write or rename can replace it.
    let last = sb.store().join("last_reserved_ip.0");
    std::fs::remove_file(&last).unwrap();
    std::fs::create_dir_all(last.join("blocker")).unwrap();
    let out = sb.run("ADD", "c1");
    assert!(out.err_code() != 0, "{}", out.stdout);
    assert!(sb.allocated().is_empty(), "reserved and left: {:?}", sb.allocated());
    // The same for the index written after every reservation succeeded.
    std::fs::remove_dir_all(&last).unwrap();
    // Someone changed the directory: the next open rebuilds the index, so let a DEL do that first.
    sb.run("DEL", "nobody");
    let index = sb.store().join(".attachments/c1:eth0");
    std::fs::create_dir_all(index.join("blocker")).unwrap();
    let out = sb.run("ADD", "c1");
    assert!(out.err_code() != 0, "{}", out.stdout);
    assert!(sb.allocated().is_empty(), "reserved and left: {:?}", sb.allocated());
}
