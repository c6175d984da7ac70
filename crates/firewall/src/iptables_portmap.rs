//! portmap's iptables backend, laid out exactly as the reference's (`portmap_iptables.go`), so a DEL
//! by either implementation removes what the other added:
//!
//! ```text
//! PREROUTING, OUTPUT   -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! CNI-HOSTPORT-DNAT    -m comment --comment "dnat name: \"net\" id: \"cid\"" -m multiport -p tcp --destination-ports 8080,9090 [conditions] -j CNI-DN-<hash>
//! CNI-DN-<hash>        -p tcp --dport 8080 [-d hostIP] -s <container subnet> -j CNI-HOSTPORT-SETMARK
//!                      -p tcp --dport 8080 [-d hostIP] -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK        (IPv4)
//!                      -p tcp --dport 8080 [-d hostIP] -j DNAT --to-destination 10.88.0.5:80
//! CNI-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000
//! POSTROUTING          -j CNI-HOSTPORT-MASQ (first);  CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
//! ```
//!
//! Each ADD and DEL reads the nat table once (`iptables-save`) and writes one `iptables-restore
//! --noflush` batch per family, instead of one `iptables` process per rule.

use crate::identity::iptables_chain;
use crate::iptables::{Iptables, has_chain, remove_chains_batch};
use crate::lock::IptablesLock;
use crate::portmap::{Mapping, Protocol};
use cni::Error;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};

pub const TOP_DNAT: &str = "CNI-HOSTPORT-DNAT";
pub const SET_MARK: &str = "CNI-HOSTPORT-SETMARK";
pub const MARK_MASQ: &str = "CNI-HOSTPORT-MASQ";
/// The reference puts at most this many ports in one multiport match.
const MULTIPORT_MAX: usize = 15;

/// One family's port mappings of an attachment.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub mappings: &'a [Mapping],
    /// The container's address of this family, with its prefix.
    pub address: IpNetwork,
    pub snat: bool,
    pub masq_all: bool,
    pub mark_bit: u8,
    pub external_set_mark_chain: Option<&'a str>,
    /// The family's conditions, already split into words (see [`split_conditions`]).
    pub conditions: &'a [String],
}

/// Short options that are not matches: commands (`-A`, `-I`, `-N`...), the table (`-t`), targets
/// (`-j`, `-g`) and the program iptables runs to load modules (`-M`).
const NOT_MATCHES: &str = "ACDIRLSFZNXPEtjgM";
/// Their long forms; getopt also takes any unambiguous prefix (`--jum`).
const NOT_MATCHES_LONG: &[&str] = &[
    "--append",
    "--check",
    "--delete",
    "--insert",
    "--replace",
    "--list",
    "--list-rules",
    "--flush",
    "--zero",
    "--new-chain",
    "--delete-chain",
    "--policy",
    "--rename-chain",
    "--table",
    "--jump",
    "--goto",
    "--modprobe",
];
/// Short options whose argument may follow in the same word (`-s10.0.0.0/8`): the rest of such a
/// word is a value, not more options.
const TAKES_VALUE: &str = "opsdimcwW";

/// The option in `word` that is not a match, if any. A word of short options is read as getopt
/// reads it: `-fA` is `-f -A`, `-sA` is `-s` with the value `A`.
fn not_a_match(word: &str) -> Option<String> {
    if let Some(long) = word.strip_prefix("--") {
        let name = format!("--{}", long.split('=').next().unwrap_or(""));
        return (name.len() > 2 && NOT_MATCHES_LONG.iter().any(|o| o.starts_with(&name))).then_some(name);
    }
    for c in word.strip_prefix('-')?.chars() {
        if NOT_MATCHES.contains(c) {
            return Some(format!("-{c}"));
        }
        if TAKES_VALUE.contains(c) {
            break;
        }
    }
    None
}

/// Splits iptables-style conditions into words for a restore line. Quotes, backslashes and control
/// characters are refused: a word can only ever be one argument of the rule it belongs to. So are
/// options that are not matches (`-j ACCEPT`, `-A OUTPUT`, `-t filter`, `--modprobe=/x`): the
/// conditions narrow the rule they are part of and can do nothing else.
pub fn split_conditions(conditions: &[String], field: &str) -> Result<Vec<String>, Error> {
    if let Some(bad) = conditions.iter().find(|c| c.chars().any(|ch| ch.is_control() || "\"'\\".contains(ch))) {
        return Err(Error::config(format!("{field}: {bad:?} may not contain quotes, backslashes or line breaks")));
    }
    let words: Vec<String> = conditions.iter().flat_map(|c| c.split_whitespace()).map(str::to_string).collect();
    if let Some(option) = words.iter().find_map(|w| not_a_match(w)) {
        return Err(Error::config(format!(
            "{field}: {option} is not a match option (conditions may only narrow which packets are translated)"
        )));
    }
    Ok(words)
}

/// The longest iptables chain name (`XT_EXTENSION_MAXNAMELEN` less the NUL).
const CHAIN_NAME_MAX: usize = 28;

/// Checks a chain name taken from a config (`externalSetMarkChain`), which becomes the target of
/// rules in a restore batch: letters, digits, `_`, `.` and `-`, not first, at most 28 bytes.
/// Anything else (a space, a line break) could add words or whole rules to the batch.
pub fn validate_chain_name(name: &str, field: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= CHAIN_NAME_MAX
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(Error::config(format!(
            "{field}: {name:?} is not a chain name (letters, digits, _ . and -, at most {CHAIN_NAME_MAX})"
        )));
    }
    Ok(())
}

pub fn dnat_chain(network: &str, container_id: &str) -> String {
    iptables_chain("DN-", network, container_id)
}

pub(crate) fn old_snat_chain(network: &str, container_id: &str) -> String {
    iptables_chain("SN-", network, container_id)
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dnat_comment(network: &str, container_id: &str) -> String {
    let comment = format!("dnat name: {network:?} id: {container_id:?}");
    // iptables limits comments to 256 bytes (the reference trims the same way).
    comment.chars().take(255).collect()
}

fn jumps(saved: &str, from: &str, to: &str) -> bool {
    let head = format!("-A {from} ");
    saved.lines().any(|l| l.starts_with(&head) && l.ends_with(&format!("-j {to}")))
}

/// The restore batch that publishes `r`, given the family's saved nat table.
pub fn add_batch(saved: &str, r: &Rules) -> String {
    let mut out = String::from("*nat\n");
    let mark = 1u32 << r.mark_bit;
    let mark = format!("{mark:#x}/{mark:#x}");
    if !has_chain(saved, TOP_DNAT) {
        out.push_str(&format!(":{TOP_DNAT} - [0:0]\n"));
    }
    for parent in ["PREROUTING", "OUTPUT"] {
        if !jumps(saved, parent, TOP_DNAT) {
            out.push_str(&format!("-A {parent} -m addrtype --dst-type LOCAL -j {TOP_DNAT}\n"));
        }
    }
    if r.snat && r.external_set_mark_chain.is_none() {
        if !has_chain(saved, SET_MARK) {
            out.push_str(&format!(":{SET_MARK} - [0:0]\n"));
            out.push_str(&format!(
                "-A {SET_MARK} -m comment --comment {} -j MARK --set-xmark {mark}\n",
                quoted("CNI portfwd masquerade mark")
            ));
        }
        if !has_chain(saved, MARK_MASQ) {
            out.push_str(&format!(":{MARK_MASQ} - [0:0]\n"));
            out.push_str(&format!("-A {MARK_MASQ} -m mark --mark {mark} -j MASQUERADE\n"));
        }
        if !jumps(saved, "POSTROUTING", MARK_MASQ) {
            out.push_str(&format!(
                "-I POSTROUTING 1 -m comment --comment {} -j {MARK_MASQ}\n",
                quoted("CNI portfwd requiring masquerade")
            ));
        }
    }

    // Our chain is declared (which flushes it if it exists) and its entry rules replaced.
    let chain = dnat_chain(r.network, r.container_id);
    out.push_str(&format!(":{chain} - [0:0]\n"));
    let top = format!("-A {TOP_DNAT} ");
    for line in saved.lines().filter(|l| l.starts_with(&top) && l.ends_with(&format!("-j {chain}"))) {
        out.push_str(&format!("-D {}\n", &line[3..]));
    }
    let v4 = r.address.is_ipv4();
    let applicable: Vec<&Mapping> = r.mappings.iter().filter(|m| m.host_ip.is_none_or(|h| h.is_ipv4() == v4)).collect();
    let mut by_proto: BTreeMap<Protocol, Vec<u16>> = BTreeMap::new();
    for m in &applicable {
        let ports = by_proto.entry(m.protocol).or_default();
        if !ports.contains(&m.host_port) {
            ports.push(m.host_port);
        }
    }
    let comment = quoted(&dnat_comment(r.network, r.container_id));
    let conditions = if r.conditions.is_empty() { String::new() } else { format!(" {}", r.conditions.join(" ")) };
    for (proto, ports) in &by_proto {
        for group in ports.chunks(MULTIPORT_MAX) {
            let list: Vec<String> = group.iter().map(u16::to_string).collect();
            out.push_str(&format!(
                "-A {TOP_DNAT} -m comment --comment {comment} -m multiport -p {} --destination-ports {}{conditions} -j {chain}\n",
                proto.as_str(),
                list.join(",")
            ));
        }
    }
    let set_mark = r.external_set_mark_chain.unwrap_or(SET_MARK);
    for m in applicable {
        let mut base = format!("-A {chain} -p {} --dport {}", m.protocol.as_str(), m.host_port);
        if let Some(host) = m.host_ip {
            base.push_str(&format!(" -d {host}"));
        }
        if r.snat {
            let source = match (r.masq_all, v4) {
                (true, true) => "0.0.0.0/0".to_string(),
                (true, false) => "::/0".to_string(),
                (false, _) => r.address.to_string(),
            };
            out.push_str(&format!("{base} -s {source} -j {set_mark}\n"));
            if v4 && !r.masq_all {
                out.push_str(&format!("{base} -s 127.0.0.1 -j {set_mark}\n"));
            }
        }
        let target = if v4 {
            format!("{}:{}", r.address.ip(), m.container_port)
        } else {
            format!("[{}]:{}", r.address.ip(), m.container_port)
        };
        out.push_str(&format!("{base} -j DNAT --to-destination {target}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// Publishes the mappings of one family.
pub fn add(r: &Rules) -> anyhow::Result<()> {
    // From the save to the restore (see crate::lock).
    let _lock = IptablesLock::acquire()?;
    let tools = Iptables::locate(r.address.is_ipv6())?;
    let saved = tools.save_nat()?;
    tools.restore(&add_batch(&saved, r))
}

/// UDP ports a saved DN chain publishes.
fn udp_ports_of(saved: &str, chain: &str) -> Vec<u16> {
    let head = format!("-A {chain} ");
    saved
        .lines()
        .filter(|l| l.starts_with(&head) && l.contains(" -p udp ") && l.contains("-j DNAT"))
        .filter_map(|l| l.split(" --dport ").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Removes a container's mappings in both families ([`del_with`] for each).
pub fn del(network: &str, container_id: &str) -> anyhow::Result<Vec<u16>> {
    let mut udp = Vec::new();
    for ipv6 in [false, true] {
        udp.extend(del_with(&Iptables::locate(ipv6)?, network, container_id)?);
    }
    Ok(udp)
}

/// Removes a container's mappings in one family (the tools'), with the reference's legacy SNAT
/// chain (`CNI-SN-<hash>`, jumped to from `CNI-HOSTPORT-SNAT`); returns the UDP ports that were
/// published. Nothing to remove is success.
pub fn del_with(tools: &Iptables, network: &str, container_id: &str) -> anyhow::Result<Vec<u16>> {
    let dnat = dnat_chain(network, container_id);
    let saved = tools.remove_chains(&BTreeSet::from([dnat.clone(), old_snat_chain(network, container_id)]))?;
    Ok(udp_ports_of(&saved, &dnat))
}

/// Confirms every mapping's DNAT rule is in place for this family (CHECK).
pub fn check(r: &Rules) -> anyhow::Result<()> {
    let saved = Iptables::locate(r.address.is_ipv6())?.save_nat()?;
    let chain = dnat_chain(r.network, r.container_id);
    anyhow::ensure!(has_chain(&saved, &chain), "chain {chain} is missing");
    anyhow::ensure!(jumps(&saved, TOP_DNAT, &chain), "{TOP_DNAT} does not jump to {chain}");
    for m in r.mappings.iter().filter(|m| m.host_ip.is_none_or(|h| h.is_ipv4() == r.address.is_ipv4())) {
        let found = saved.lines().any(|l| {
            l.starts_with(&format!("-A {chain} "))
                && l.contains(&format!("--dport {}", m.host_port))
                && l.contains(&format!(" -p {} ", m.protocol.as_str()))
                && l.contains("-j DNAT")
        });
        anyhow::ensure!(found, "DNAT rule for {}/{} is missing", m.host_port, m.protocol.as_str());
    }
    Ok(())
}

/// Removes the mappings of `network` whose container is not in `valid_containers` (GC); returns
/// their UDP ports. The reference's rules name the container but not the interface.
pub fn gc(network: &str, valid_containers: &BTreeSet<String>) -> anyhow::Result<Vec<u16>> {
    let mut udp = Vec::new();
    for ipv6 in [false, true] {
        udp.extend(gc_with(&Iptables::locate(ipv6)?, network, valid_containers)?);
    }
    Ok(udp)
}

/// [`gc`] in one family, with the given tools.
pub fn gc_with(tools: &Iptables, network: &str, valid_containers: &BTreeSet<String>) -> anyhow::Result<Vec<u16>> {
    let _lock = IptablesLock::acquire()?;
    let marker = format!("dnat name: \\\"{}\\\" id: \\\"", network.replace('"', ""));
    let saved = tools.save_nat()?;
    let mut doomed = BTreeSet::new();
    for line in saved.lines().filter(|l| l.starts_with(&format!("-A {TOP_DNAT} "))) {
        let Some(at) = line.find(&marker) else { continue };
        let id = line[at + marker.len()..].split("\\\"").next().unwrap_or("");
        if let Some(target) = line.rsplit_once(" -j ").map(|(_, t)| t.trim())
            && !valid_containers.contains(id)
        {
            doomed.insert(target.to_string());
        }
    }
    let mut udp = Vec::new();
    for chain in &doomed {
        udp.extend(udp_ports_of(&saved, chain));
    }
    let batch = remove_chains_batch(&saved, &doomed);
    if !batch.is_empty() {
        tools.restore(&batch)?;
    }
    Ok(udp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portmap tests' three mappings: TCP on every address, UDP on an IPv4 and TCP on an IPv6
    /// host address.
    fn mappings() -> Vec<Mapping> {
        crate::portmap::tests::attachment().mappings
    }

    #[test]
    fn fresh_host_batch_has_the_reference_layout() {
        let m = mappings();
        let words = split_conditions(&["-s 198.51.100.0/24".to_string()], "conditionsV4").unwrap();
        let r = Rules {
            network: "net1",
            container_id: "ctr1",
            mappings: &m,
            address: "10.88.0.5/24".parse().unwrap(),
            snat: true,
            masq_all: false,
            mark_bit: 13,
            external_set_mark_chain: None,
            conditions: &words,
        };
        let chain = dnat_chain("net1", "ctr1");
        let batch = add_batch("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", &r);
        let want = format!(
            "*nat\n:CNI-HOSTPORT-DNAT - [0:0]\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
             -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
             :CNI-HOSTPORT-SETMARK - [0:0]\n\
             -A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000\n\
             :CNI-HOSTPORT-MASQ - [0:0]\n\
             -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE\n\
             -I POSTROUTING 1 -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n\
             :{chain} - [0:0]\n\
             -A CNI-HOSTPORT-DNAT -m comment --comment \"dnat name: \\\"net1\\\" id: \\\"ctr1\\\"\" -m multiport -p tcp --destination-ports 8080 -s 198.51.100.0/24 -j {chain}\n\
             -A CNI-HOSTPORT-DNAT -m comment --comment \"dnat name: \\\"net1\\\" id: \\\"ctr1\\\"\" -m multiport -p udp --destination-ports 5353 -s 198.51.100.0/24 -j {chain}\n\
             -A {chain} -p tcp --dport 8080 -s 10.88.0.5/24 -j CNI-HOSTPORT-SETMARK\n\
             -A {chain} -p tcp --dport 8080 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK\n\
             -A {chain} -p tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80\n\
             -A {chain} -p udp --dport 5353 -d 192.0.2.1 -s 10.88.0.5/24 -j CNI-HOSTPORT-SETMARK\n\
             -A {chain} -p udp --dport 5353 -d 192.0.2.1 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK\n\
             -A {chain} -p udp --dport 5353 -d 192.0.2.1 -j DNAT --to-destination 10.88.0.5:53\n\
             COMMIT\n"
        );
        assert_eq!(batch, want);
    }

    #[test]
    fn existing_shared_chains_are_reused_and_our_entries_replaced() {
        let m = mappings();
        let chain = dnat_chain("net1", "ctr1");
        let saved = format!(
            ":CNI-HOSTPORT-DNAT - [0:0]\n:CNI-HOSTPORT-SETMARK - [0:0]\n:CNI-HOSTPORT-MASQ - [0:0]\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
             -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
             -A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n\
             -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"x\" -m multiport --dports 1 -j {chain}\n"
        );
        let r = Rules {
            network: "net1",
            container_id: "ctr1",
            mappings: &m,
            address: "fd88::5/64".parse().unwrap(),
            snat: true,
            masq_all: false,
            mark_bit: 13,
            external_set_mark_chain: None,
            conditions: &[],
        };
        let batch = add_batch(&saved, &r);
        assert!(
            !batch.contains(":CNI-HOSTPORT-DNAT")
                && !batch.contains("-A PREROUTING")
                && !batch.contains("-I POSTROUTING")
        );
        assert!(batch.contains(&format!(
            "-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"x\" -m multiport --dports 1 -j {chain}"
        )));
        assert!(batch.contains("-j DNAT --to-destination [fd88::5]:80"));
        assert!(batch.contains("-j DNAT --to-destination [fd88::5]:443"));
        assert!(!batch.contains("192.0.2.1"), "an IPv4 host address must be skipped for IPv6");
        assert!(!batch.contains("127.0.0.1"), "no localhost rule for IPv6");
    }

    #[test]
    fn conditions_cannot_break_out_of_their_rule() {
        for bad in ["-s 1.2.3.4\"", "-s 1.2.3.4\n-A FOO", "-m comment --comment 'x'", "a\\b"] {
            assert!(split_conditions(&[bad.to_string()], "conditionsV4").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn conditions_are_matches_only() {
        for bad in [
            "-j ACCEPT",
            "-s 10.0.0.0/8 -g OUTPUT",
            "--jump ACCEPT",
            "--ju ACCEPT",
            "--goto=X",
            "-A OUTPUT",
            "-I PREROUTING 1",
            "-N X",
            "-X",
            "-F",
            "-t filter",
            "--table=filter",
            "-P",
            "-fA",
            "-vj ACCEPT",
            "-M /tmp/x",
            "--modprobe=/tmp/x",
            "--delete-chain",
            "--new",
            "! -j ACCEPT",
        ] {
            let e = split_conditions(&[bad.to_string()], "conditionsV4").unwrap_err();
            assert_eq!(e.code, cni::Code::InvalidConfig, "{bad:?}");
            assert!(e.msg.contains("is not a match option"), "{bad:?}: {}", e.msg);
        }
        for good in [
            "-s 10.0.0.0/8",
            "! -d 192.0.2.1",
            "-i eth0",
            "-s10.0.0.0/8",
            "-m iprange --src-range 10.0.0.1-10.0.0.9",
            "-p tcp --dport 80",
            "-m mark --mark 0x1/0x1",
            "-m set --match-set allowed src",
            "--source 1.2.3.4",
            "-m comment --comment x-A",
        ] {
            split_conditions(&[good.to_string()], "conditionsV4").unwrap_or_else(|e| panic!("{good:?}: {}", e.msg));
        }
    }

    #[test]
    fn chain_names_are_single_plain_words() {
        for good in ["KUBE-MARK-MASQ", "CNI-HOSTPORT-SETMARK", "a.b_c"] {
            validate_chain_name(good, "externalSetMarkChain").unwrap();
        }
        for bad in ["", "A B", "X\n-A INPUT -j DROP", "-j", "X;Y", "\"X\"", &"A".repeat(29)] {
            assert!(validate_chain_name(bad, "externalSetMarkChain").is_err(), "{bad:?}");
        }
    }
}
