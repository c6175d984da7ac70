//! Temporary link names: a plugin that creates a link under a name of its own and renames it
//! once it is in place (so no other name can clash on the way) uses these, and its DEL finds
//! what an ADD killed before the rename left behind by the same pattern.

/// `prefix` and 8 random hex digits: `mv1a2b3c4d`. Keep the prefix at most 7 bytes (link names
/// have at most 15).
pub fn temporary_name(prefix: &str) -> String {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let n = unsafe { nix::libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (nanos.subsec_nanos() ^ std::process::id()).to_ne_bytes();
    }
    format!("{prefix}{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Whether `name` is a [`temporary_name`] with `prefix`.
pub fn is_temporary_name(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| rest.len() == 8 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// DEL's half for a plugin whose interface is a link in the container (bridge and ptp's veth,
/// macvlan, ipvlan, vlan, tap, dummy): deletes the link named `ifname` in the namespace at
/// `netns`, and every link of `kind` under a temporary name with `prefix` (what an ADD killed
/// before its rename left). A link already gone is success. Returns once the links are gone,
/// without waiting for the kernel to free them, and whether the namespace was there (without it,
/// bridge and ptp look for the host end instead).
pub fn delete_container_link(netns: &str, ifname: &str, kind: &str, prefix: Option<&str>) -> anyhow::Result<bool> {
    use anyhow::Context;
    let Some(ns) = crate::NetNs::open_if_exists(netns)? else { return Ok(false) };
    ns.run(|| -> anyhow::Result<bool> {
        let mut rtnl = crate::Rtnl::open()?;
        let mut doomed: Vec<crate::Link> = rtnl.link_by_name(ifname)?.into_iter().collect();
        if let Some(prefix) = prefix {
            doomed.extend(rtnl.links()?.into_iter().filter(|l| l.is_kind(kind) && is_temporary_name(prefix, &l.name)));
        }
        // Detached: DEL returns once each link is gone from the namespace, without sitting
        // through the kernel's rcu_barrier() that frees it (about 20 ms per link; see
        // Rtnl::delete_link_detached). IPAM releases after this, when the address is off the link.
        for link in doomed {
            match rtnl.delete_link_detached(link.index) {
                // Gone under us: with its master, or the namespace being dismantled.
                Err(e) if e.is(nix::libc::ENODEV) => {}
                other => other.with_context(|| format!("deleting {}", link.name))?,
            }
        }
        Ok(true)
    })?
}

/// ADD's undo for the link of `kind` it created in `ns` (the same five plugins): deletes the link
/// at `index` if it is still one of `kind` (an index can be taken by another link once ours is
/// gone). Already gone is done.
pub fn delete_created_link(ns: &crate::NetNs, index: u32, kind: &str) -> anyhow::Result<()> {
    let mut rtnl = crate::Rtnl::open_in(ns)?;
    if rtnl.link_by_index(index)?.is_some_and(|l| l.is_kind(kind)) {
        match rtnl.delete_link(index) {
            Err(e) if e.is(nix::libc::ENODEV) => {}
            other => other?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_their_pattern() {
        let name = temporary_name("mv");
        assert_eq!(name.len(), 10);
        assert!(is_temporary_name("mv", &name));
        assert_ne!(temporary_name("mv"), name);
        for other in ["mv", "mv0123456", "mv0123456789", "mvxyz01234", "eth0", "tap01234567"] {
            assert!(!is_temporary_name("mv", other), "{other}");
        }
        assert!(is_temporary_name("tap", "tap0123abcd"));
    }
}
