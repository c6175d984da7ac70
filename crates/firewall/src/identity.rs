//! The identity of an attachment (network, container ID, ifname), and the names and comments
//! derived from it, so that DEL and GC find exactly what ADD installed without being told the
//! addresses again.

use sha2::{Digest, Sha512};

/// `len` hex characters of sha512(`text`), as the reference's `MustFormatHashWithPrefix`.
pub fn hash_hex(text: &str, len: usize) -> String {
    let digest = Sha512::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len.min(hex.len())].to_string()
}

/// One attachment of a container to a network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// nftables limits comments to 128 bytes.
const COMMENT_MAX: usize = 128;

impl Identity {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Identity {
        Identity { network: network.into(), container_id: container_id.into(), ifname: ifname.into() }
    }

    /// 16 hex characters naming the network, as in the reference's nftables comments.
    pub fn network_hash(&self) -> String {
        network_hash(&self.network)
    }

    /// 16 hex characters naming the attachment within its network (from `ifname:containerID`, as
    /// the reference computes it).
    pub fn instance_hash(&self) -> String {
        hash_hex(&format!("{}:{}", self.ifname, self.container_id), 16)
    }

    /// The name of this attachment's chain of one kind: `<kind>-<network hash>-<instance hash>`.
    pub fn chain(&self, kind: &str) -> String {
        format!("{kind}-{}-{}", self.network_hash(), self.instance_hash())
    }

    /// A human-readable comment that starts with the identity's hashes.
    pub fn comment(&self) -> String {
        let clean = |s: &str| s.replace('"', "");
        let mut comment = format!(
            "{}-{}, net: {}, if: {}, id: {}",
            self.network_hash(),
            self.instance_hash(),
            clean(&self.network),
            clean(&self.ifname),
            clean(&self.container_id)
        );
        if comment.len() > COMMENT_MAX {
            let mut cut = COMMENT_MAX;
            while !comment.is_char_boundary(cut) {
                cut -= 1;
            }
            comment.truncate(cut);
        }
        comment
    }
}

/// 16 hex characters naming a network.
pub fn network_hash(network: &str) -> String {
    hash_hex(network, 16)
}

/// The reference's iptables chain name for (network, container ID): `CNI-` and 24 hex characters
/// of sha512(network + containerID) (`utils.FormatChainName`).
pub fn iptables_chain(prefix: &str, network: &str, container_id: &str) -> String {
    let head = format!("CNI-{prefix}");
    format!("{head}{}", hash_hex(&format!("{network}{container_id}"), 28 - head.len()))
}

/// The reference's iptables comment: `name: "<network>" id: "<containerID>"` (Go's %q quoting).
pub fn iptables_comment(network: &str, container_id: &str) -> String {
    format!("name: {network:?} id: {container_id:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_reference() {
        // Pinned values of the reference's formula (sha512 hex, truncated to 28 characters in all),
        // computed independently with Python's hashlib.
        assert_eq!(iptables_chain("", "test", "abcd"), "CNI-92adfceda637913f01f1299d");
        assert_eq!(iptables_chain("DN-", "test", "abcd"), "CNI-DN-92adfceda637913f01f12");
        assert_eq!(Identity::new("n", "c1", "eth0").instance_hash(), "f4d01f2ef4b92245");
        assert_eq!(hash_hex("", 16), "cf83e1357eefb8bd");
        assert_eq!(iptables_comment("net1", "c1"), r#"name: "net1" id: "c1""#);
    }

    #[test]
    fn identities_are_distinct_per_network_container_and_ifname() {
        let a = Identity::new("n1", "c1", "eth0");
        let b = Identity::new("n2", "c1", "eth0");
        let c = Identity::new("n1", "c1", "net1");
        assert_ne!(a.chain("masq"), b.chain("masq"));
        assert_ne!(a.chain("masq"), c.chain("masq"));
        assert_eq!(a.chain("masq"), Identity::new("n1", "c1", "eth0").chain("masq"));
        assert!(a.chain("masq").starts_with(&format!("masq-{}-", network_hash("n1"))));
    }

    #[test]
    fn comments_are_bounded_and_quote_free() {
        let long = Identity::new("n\"et", &"c".repeat(200), "eth0");
        let comment = long.comment();
        assert!(comment.len() <= COMMENT_MAX);
        assert!(!comment.contains('"'));
        assert!(comment.starts_with(&long.network_hash()));
    }
}
