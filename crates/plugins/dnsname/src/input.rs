//! The reference's one firewall rule: when it writes a network's `dnsmasq.conf` it inserts
//! `-A INPUT -i <bridge> -p udp -m udp --dport 53 -j ACCEPT` at the top of iptables' filter INPUT
//! chain, so that on a host whose INPUT policy drops (firewalld, a hardened node) the containers
//! still reach their network's dnsmasq. We insert the same rule, in the same form, at the same
//! moment (a network's first ADD, or one that changes its bridge): a node switching plugins sees
//! one rule, not two. Unlike the reference, which leaves it behind forever, the network's last
//! DEL removes it with the server (the next first ADD, ours or the reference's, puts it back).
//!
//! This is the plugin's only firewall change and runs programs (`iptables-save`,
//! `iptables-restore`), as the reference's go-iptables does; only on those two occasions, which
//! start or stop dnsmasq anyway, never on the ADD or DEL of a network that keeps running. IPv4
//! only, as the reference: ip6tables is left alone. Without iptables installed there is no
//! iptables INPUT chain to open, and nothing is done.

use firewall::iptables::Iptables;

fn rule(bridge: &str) -> String {
    format!("-i {bridge} -p udp -m udp --dport 53 -j ACCEPT")
}

fn tools() -> Option<Iptables> {
    Iptables::locate(false).ok()
}

fn present(tools: &Iptables, bridge: &str) -> anyhow::Result<bool> {
    let line = format!("-A INPUT {}", rule(bridge));
    Ok(tools.save_table("filter")?.lines().any(|l| l.trim_end() == line))
}

/// Inserts the rule unless it is there; returns whether this call inserted it.
pub fn open(bridge: &str) -> anyhow::Result<bool> {
    let Some(tools) = tools() else { return Ok(false) };
    if present(&tools, bridge)? {
        return Ok(false);
    }
    tools.restore(&format!("*filter\n-I INPUT 1 {}\nCOMMIT\n", rule(bridge)))?;
    Ok(true)
}

/// Removes the rule (every copy: the reference may have inserted it more than once), if there.
pub fn close(bridge: &str) -> anyhow::Result<()> {
    let Some(tools) = tools() else { return Ok(()) };
    let line = format!("-A INPUT {}", rule(bridge));
    let copies = tools.save_table("filter")?.lines().filter(|l| l.trim_end() == line).count();
    if copies > 0 {
        let deletes = format!("-D INPUT {}\n", rule(bridge)).repeat(copies);
        tools.restore(&format!("*filter\n{deletes}COMMIT\n"))?;
    }
    Ok(())
}
