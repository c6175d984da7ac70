//! Whether an nf_tables table exists, asked with one GET over nfnetlink: no transaction and no
//! program. A DEL asks it before a transaction that could only fail with ENOENT, because an
//! aborted transaction waits out an RCU grace period (about 10 ms) and a node that never made the
//! table (kind's, running ptp without ipMasq) should not pay that on every pod deletion.

use crate::native::msg::{Attrs, NLM_F_ACK, NLM_F_REQUEST, k, message, nft_type};

const NFT_MSG_GETTABLE: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const ENOENT: i32 = 2;

/// The NFPROTO number of an nftables family name.
fn family_number(family: &str) -> Option<u8> {
    Some(match family {
        "inet" => 1,
        "ip" => 2,
        "arp" => 3,
        "netdev" => 5,
        "bridge" => 7,
        "ip6" => 10,
        _ => return None,
    })
}

/// Whether table `name` of `family` (`inet`, `ip`, `ip6`, `bridge`...) exists in the calling
/// thread's network namespace. Errors are the socket's, or an unknown family.
pub fn table(family: &str, name: &str) -> std::io::Result<bool> {
    let number = family_number(family)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("nftables family {family}")))?;
    let sock = crate::native::socket()?;
    let seq = std::process::id().wrapping_shl(12) | 1;
    let mut attrs = Attrs::default();
    attrs.str(k::NFTA_TABLE_NAME, name);
    sock.send(&message(nft_type(NFT_MSG_GETTABLE), NLM_F_REQUEST | NLM_F_ACK, seq, number, 0, attrs.into_bytes()), 0)?;
    // The answer is the table (NEWTABLE) and an acknowledgement, or an error.
    let mut found = false;
    loop {
        let (data, _) = sock.recv_from_full()?;
        let mut off = 0;
        while off + 16 <= data.len() {
            let len = u32::from_ne_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
            let got = u32::from_ne_bytes(data[off + 8..off + 12].try_into().expect("4 bytes"));
            if len < 16 || off + len > data.len() {
                return Err(std::io::Error::other("malformed netlink reply"));
            }
            if got == seq {
                if kind == NLMSG_ERROR && len >= 20 {
                    let errno = -i32::from_ne_bytes(data[off + 16..off + 20].try_into().expect("4 bytes"));
                    return match errno {
                        0 => Ok(found),
                        ENOENT => Ok(false),
                        e => Err(std::io::Error::from_raw_os_error(e)),
                    };
                }
                found = true;
            }
            off += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_table_come_and_go() {
        let ns = testkit::new_netns();
        let ask = |name: &'static str| ns.run(move || table("inet", name)).unwrap().unwrap();
        assert!(!ask("exists_probe"));
        let nft = |args: &str| {
            let ok = testkit::in_netns(std::process::Command::new("nft").args(args.split_whitespace()), &ns)
                .status()
                .unwrap()
                .success();
            assert!(ok, "nft {args}");
        };
        nft("add table inet exists_probe");
        assert!(ask("exists_probe"));
        assert!(!ask("other"));
        nft("delete table inet exists_probe");
        assert!(!ask("exists_probe"));
        assert!(ns.run(|| table("nope", "x")).unwrap().is_err());
    }
}
