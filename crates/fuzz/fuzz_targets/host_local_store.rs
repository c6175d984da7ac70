//! host-local's on-disk state as anyone may have left it: fuzzed files (address files, index
//! entries, `:state`, `last_reserved_ip.<n>`, stray names) in a store directory, then
//! `Store::open` and a sequence of the operations the verbs run.
//!
//! Must hold: no panic; when only regular files were planted (whatever their names and bytes),
//! the store opens; after a GC (which rebuilds the index) every address file that names an owner
//! is found through the index, and a GC with no valid attachment leaves no owned address.

#![no_main]

use host_local::range::{Range, RangeSet, RangeSpec};
use host_local::store::{Owner, Store};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

const NETWORK: &str = "net";
const IPS: [&str; 16] = [
    "10.1.0.0",
    "10.1.0.1",
    "10.1.0.2",
    "10.1.0.3",
    "10.1.0.4",
    "10.1.0.5",
    "10.1.0.6",
    "10.1.0.7",
    "fd00::",
    "fd00::1",
    "fd00::2",
    "fd00::3",
    "10.2.0.2",
    "::ffff:10.1.0.2",
    "0.0.0.0",
    "::",
];
const CONTAINERS: [&str; 4] = ["c1", "c2", "c3", "-bad"];
const IFNAMES: [&str; 4] = ["eth0", "net1", ":legacy", "a/b"];

/// One data directory per fuzzing process, on tmpfs where there is one.
static DATA_DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("cni-fuzz-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the fuzz data dir");
    dir
});

/// The range sets `has_free_address` walks: small enough to walk whole.
static SETS: LazyLock<Vec<RangeSet>> = LazyLock::new(|| {
    let set = |subnet: &str| {
        let spec = RangeSpec { subnet: Some(subnet), ..Default::default() };
        RangeSet::new(vec![Range::parse(&spec, "fuzz").expect("a valid range")], "fuzz").expect("a valid set")
    };
    vec![set("10.1.0.0/29"), set("fd00::/126")]
});

#[derive(Arbitrary, Debug)]
struct Input {
    sets: u8,
    files: Vec<Planted>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Planted {
    name: Name,
    content: Content,
    kind: Kind,
}

#[derive(Arbitrary, Debug)]
enum Name {
    Ip(u8),
    /// An address spelled another way Go and Rust both read (`FD00::1`, `fd00:0:0:0:0:0:0:1`).
    IpSpelled(u8, bool),
    IpText(String),
    Index(String),
    IndexOf(Who),
    State,
    LastReserved(u8),
    LastReservedText(String),
    Lock,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Content {
    Bytes(Vec<u8>),
    Owner(Who),
    LegacyOwner(u8),
    Ips(Vec<u8>),
    Ip(u8),
    /// A `:state` recording exactly what the planted `last_reserved_ip.<n>` files say, so the
    /// index is trusted as found.
    CleanState,
    CleanStateWith(String),
    /// A `:state` marked clean with any entries.
    StateEntries(Vec<(u64, u8)>),
}

#[derive(Arbitrary, Debug, PartialEq)]
enum Kind {
    File,
    Dir,
    Symlink(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Who {
    container: u8,
    ifname: u8,
}

impl Who {
    /// Any owner a file may name, including ones no runtime can ask for.
    fn content(self) -> String {
        format!("{}\r\n{}", pick(&CONTAINERS, self.container), pick(&IFNAMES, self.ifname))
    }

    /// An owner the verbs can be asked about (`CNI_CONTAINERID` and `CNI_IFNAME` are validated).
    fn owner(self) -> Owner {
        Owner::new(pick(&CONTAINERS[..3], self.container), pick(&IFNAMES[..2], self.ifname))
    }

    fn attachment(self) -> cni::Attachment {
        let owner = self.owner();
        cni::Attachment { container_id: owner.container_id, ifname: owner.ifname.unwrap_or_default() }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    AddressesOf(Who),
    OwnerOf(u8),
    Reserve(u8, Who),
    Record(Who, Vec<u8>),
    Release(Who),
    ReleaseIp(u8, Who),
    LastReserved(u8),
    SetLastReserved(u8, u8),
    HasFreeAddress(u8),
    Scan,
    Gc(Vec<Who>),
    CommitAndReopen,
}

fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[usize::from(i) % pool.len()]
}

fn ip(i: u8) -> IpAddr {
    pick(&IPS, i).parse().expect("a valid address in the pool")
}

/// A name the file system takes as one entry of the directory, or `None`.
fn entry_name(name: &str) -> Option<&str> {
    (!name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')).then_some(name)
}

fn plant(dir: &Path, files: &[Planted], sets: usize) -> bool {
    let mut only_regular_files = true;
    for file in files {
        let name = match &file.name {
            Name::Ip(i) => pick(&IPS, *i).to_string(),
            Name::IpSpelled(i, upper) => match ip(*i) {
                IpAddr::V6(v6) if !upper => v6.segments().map(|s| format!("{s:x}")).join(":"),
                other => other.to_string().to_uppercase(),
            },
            Name::IpText(s) | Name::Other(s) => s.clone(),
            Name::Index(s) => format!(".attachments/{s}"),
            Name::IndexOf(who) => {
                format!(".attachments/{}:{}", pick(&CONTAINERS, who.container), pick(&IFNAMES, who.ifname))
            }
            Name::State => ".attachments/:state".to_string(),
            Name::LastReserved(n) => format!("last_reserved_ip.{}", n % 4),
            Name::LastReservedText(s) => format!("last_reserved_ip.{s}"),
            Name::Lock => "lock".to_string(),
        };
        let Some((parent, leaf)) = (match name.strip_prefix(".attachments/") {
            Some(leaf) => entry_name(leaf).map(|leaf| (dir.join(".attachments"), leaf)),
            None => entry_name(&name).map(|leaf| (dir.to_path_buf(), leaf)),
        }) else {
            continue;
        };
        let content: Vec<u8> = match &file.content {
            Content::Bytes(b) => b.clone(),
            Content::Owner(who) => who.content().into(),
            Content::LegacyOwner(c) => pick(&CONTAINERS, *c).into(),
            Content::Ips(list) => list.iter().map(|i| format!("{}\n", ip(*i))).collect::<String>().into(),
            Content::Ip(i) => pick(&IPS, *i).into(),
            Content::CleanState | Content::CleanStateWith(_) => {
                let mut state = "host-local-index v2 clean\n".to_string();
                for n in 0..sets {
                    let last = std::fs::read_to_string(dir.join(format!("last_reserved_ip.{n}"))).ok();
                    let last =
                        last.and_then(|t| t.trim().parse::<IpAddr>().ok()).map_or("-".to_string(), |ip| ip.to_string());
                    state.push_str(&format!("{n} {last}\n"));
                }
                if let Content::CleanStateWith(extra) = &file.content {
                    state.push_str(extra);
                }
                state.into()
            }
            Content::StateEntries(entries) => {
                let lines: String = entries.iter().map(|(n, i)| format!("{n} {}\n", pick(&IPS, *i))).collect();
                format!("host-local-index v2 clean\n{lines}").into()
            }
        };
        if std::fs::create_dir_all(&parent).is_err() {
            only_regular_files = false;
            continue;
        }
        let path = parent.join(leaf);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(&path);
        let planted = match &file.kind {
            Kind::File => std::fs::write(&path, &content),
            Kind::Dir => std::fs::create_dir(&path),
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &path),
        };
        // A directory or a symlink where the store writes a file can make it fail (with an
        // error), and so can a file where its index directory should be. Files must not.
        if planted.is_err() || file.kind != Kind::File || name == ".attachments" {
            only_regular_files = false;
        }
    }
    only_regular_files
}

fn run(input: &Input) {
    let data_dir = &*DATA_DIR;
    let dir = data_dir.join(NETWORK);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the store dir");
    let sets = usize::from(input.sets % 4);
    let only_regular_files = plant(&dir, &input.files, sets);

    let mut store = match Store::open(data_dir, NETWORK, sets) {
        Ok(store) => store,
        Err(e) => {
            assert!(!only_regular_files, "regular files kept the store from opening: {e:#}");
            return;
        }
    };
    for op in &input.ops {
        match op {
            Op::AddressesOf(who) => {
                let owner = who.owner();
                for ip in store.addresses_of(&owner) {
                    assert_eq!(store.owner_of(ip).as_ref(), Some(&owner));
                }
            }
            Op::OwnerOf(i) => {
                let _ = store.owner_of(ip(*i));
            }
            Op::Reserve(i, who) => {
                if let Ok(true) = store.reserve(ip(*i), &who.owner()) {
                    assert_eq!(store.owner_of(ip(*i)), Some(who.owner()));
                }
            }
            Op::Record(who, list) => {
                let ips: Vec<IpAddr> = list.iter().map(|i| ip(*i)).collect();
                let _ = store.record(&who.owner(), &ips);
            }
            Op::Release(who) => {
                let a = who.attachment();
                if store.release(&a.container_id, &a.ifname).is_ok() {
                    assert!(store.addresses_of(&who.owner()).is_empty());
                }
            }
            Op::ReleaseIp(i, who) => {
                let _ = store.release_ip(ip(*i), &who.owner());
            }
            Op::LastReserved(n) => {
                let _ = store.last_reserved(usize::from(*n % 4));
            }
            Op::SetLastReserved(n, i) => {
                let _ = store.set_last_reserved(usize::from(*n % 4), ip(*i));
            }
            Op::HasFreeAddress(n) => {
                let index = usize::from(*n % 4);
                let _ = store.has_free_address(index, &SETS[index % SETS.len()]);
            }
            Op::Scan => {
                let _ = store.scan();
            }
            Op::Gc(valid) => {
                let valid: Vec<cni::Attachment> = valid.iter().map(|w| w.attachment()).collect();
                if store.gc(&valid).is_err() {
                    continue;
                }
                let Ok(left) = store.scan() else { continue };
                for (ip, owner) in left {
                    let owner = owner.expect("GC releases files that name nobody");
                    assert!(owner.is_in(&valid), "GC kept {ip} of {owner:?}");
                    assert!(store.addresses_of(&owner).contains(&ip), "the rebuilt index misses {ip} of {owner:?}");
                }
            }
            Op::CommitAndReopen => {
                let _ = store.begin();
                let _ = store.commit();
                store = match Store::open(data_dir, NETWORK, sets) {
                    Ok(store) => store,
                    Err(_) => return,
                };
            }
        }
    }
    let _ = store.commit();
}

fuzz_target!(|input: Input| {
    run(&input);
});
