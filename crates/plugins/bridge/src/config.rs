//! The bridge plugin's configuration: every key of the reference, validated before anything
//! changes, plus the opt-in `isolation`.

use cni::{Error, Request};
use serde::Deserialize;

pub const DEFAULT_BRIDGE: &str = "cni0";

/// How masquerade rules are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasqBackend {
    Nftables,
    Iptables,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConf {
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub masq_backend: MasqBackend,
    pub mtu: Option<u32>,
    pub hairpin_mode: bool,
    pub promisc_mode: bool,
    /// Access VLAN of the container's port (0: none).
    pub vlan: u16,
    /// Trunk VLANs of the container's port, sorted, without duplicates.
    pub vlan_trunk: Vec<u16>,
    pub preserve_default_vlan: bool,
    pub mac_spoof_check: bool,
    pub enable_dad: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// Drop traffic between this network and other isolated networks (Docker's network isolation).
    pub isolation: bool,
    /// The container interface's MAC, from CNI_ARGS `MAC`, `args.cni.mac` or `runtimeConfig.mac`.
    pub mac: Option<[u8; 6]>,
}

impl BridgeConf {
    /// Whether the port needs VLAN filtering on the bridge.
    pub fn uses_vlans(&self) -> bool {
        self.vlan != 0 || !self.vlan_trunk.is_empty()
    }
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(rename = "isGateway", default)]
    is_gateway: bool,
    #[serde(rename = "isDefaultGateway", default)]
    is_default_gateway: bool,
    #[serde(rename = "forceAddress", default)]
    force_address: bool,
    #[serde(rename = "ipMasq", default)]
    ip_masq: bool,
    #[serde(rename = "ipMasqBackend", default)]
    ip_masq_backend: Option<String>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(rename = "hairpinMode", default)]
    hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(rename = "vlanTrunk", default)]
    vlan_trunk: Option<Vec<RawTrunk>>,
    #[serde(rename = "preserveDefaultVlan", default)]
    preserve_default_vlan: bool,
    #[serde(default)]
    macspoofchk: bool,
    #[serde(default)]
    enabledad: bool,
    #[serde(rename = "disableContainerInterface", default)]
    disable_container_interface: bool,
    #[serde(rename = "portIsolation", default)]
    port_isolation: bool,
    #[serde(default)]
    isolation: bool,
    #[serde(default)]
    args: Option<RawArgs>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawMac>,
}

#[derive(Deserialize, Default)]
struct RawTrunk {
    #[serde(rename = "minID", default)]
    min_id: Option<i64>,
    #[serde(rename = "maxID", default)]
    max_id: Option<i64>,
    #[serde(default)]
    id: Option<i64>,
}

#[derive(Deserialize, Default)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawMac>,
}

#[derive(Deserialize, Default)]
struct RawMac {
    #[serde(default)]
    mac: Option<String>,
}

fn trunk_vid(value: i64, key: &str) -> Result<u16, Error> {
    match u16::try_from(value) {
        Ok(v) if (1..=4094).contains(&v) => Ok(v),
        _ => Err(Error::config(format!("vlanTrunk: incorrect trunk {key} parameter {value} (must be 1..4094)"))),
    }
}

/// The trunk VLANs, as the reference's `collectVlanTrunk` reads them. Each VLAN is marked once
/// however many entries name it, so 100,000 entries of `1..4094` cost 100,000 steps, not 400
/// million.
fn collect_trunk(trunk: &[RawTrunk]) -> Result<Vec<u16>, Error> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for item in trunk {
        match (item.min_id, item.max_id) {
            (Some(min), Some(max)) => {
                let (min, max) = (trunk_vid(min, "minID")?, trunk_vid(max, "maxID")?);
                if max < min {
                    return Err(Error::config("vlanTrunk: minID is greater than maxID in trunk parameter"));
                }
                ranges.push((min, max));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "vlanTrunk: minID and maxID should be configured simultaneously, minID is missing",
                ));
            }
            (Some(_), None) => {
                return Err(Error::config(
                    "vlanTrunk: minID and maxID should be configured simultaneously, maxID is missing",
                ));
            }
            (None, None) => {}
        }
        if let Some(id) = item.id {
            let id = trunk_vid(id, "id")?;
            ranges.push((id, id));
        }
    }
    ranges.sort_unstable();
    let mut vids = Vec::new();
    for (min, max) in ranges {
        let from = vids.last().map_or(min, |last: &u16| min.max(last + 1));
        vids.extend(from..=max);
    }
    Ok(vids)
}

fn parse_mac(text: &str, source: &str) -> Result<[u8; 6], Error> {
    let mac =
        netkit::parse_mac(text).ok_or_else(|| Error::config(format!("{source}: invalid MAC address {text:?}")))?;
    if mac[0] & 1 == 1 {
        return Err(Error::config(format!("{source}: {text} is a multicast MAC address")));
    }
    Ok(mac)
}

impl BridgeConf {
    pub fn parse(req: &Request) -> Result<BridgeConf, Error> {
        let raw: Raw = req.config.decode()?;
        let bridge = raw.bridge.filter(|b| !b.is_empty()).unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        cni::env::validate_ifname(&bridge).map_err(|e| Error::config(format!("bridge: {}", e.msg)))?;
        // The name reaches nftables as a string (isolation), where a leading `@` or `$` would make it
        // a set reference or a variable, `*` a wildcard and `\` an escape: a different match.
        if bridge.starts_with(['@', '$']) || bridge.contains(['*', '\\', '"']) {
            return Err(Error::config(format!(
                "bridge: {bridge:?} may not start with @ or $ or contain *, \\ or \" (nftables would not read it as a name)"
            )));
        }
        let vlan = raw.vlan.unwrap_or(0);
        let vlan = u16::try_from(vlan)
            .ok()
            .filter(|v| *v <= 4094)
            .ok_or_else(|| Error::config(format!("invalid VLAN ID {vlan} (must be between 0 and 4094)")))?;
        let mtu = match raw.mtu.unwrap_or(0) {
            0 => None,
            m @ 68..=65535 => Some(m as u32),
            m => return Err(Error::config(format!("mtu: {m} is out of range (68..65535)"))),
        };
        let masq_backend = match raw.ip_masq_backend.as_deref() {
            None | Some("nftables") => MasqBackend::Nftables,
            Some("iptables") => MasqBackend::Iptables,
            Some(other) => {
                return Err(Error::config(format!("ipMasqBackend: unknown backend {other:?} (iptables or nftables)")));
            }
        };
        if raw.hairpin_mode && raw.promisc_mode {
            return Err(Error::config("cannot set hairpin mode and promiscuous mode at the same time"));
        }
        if raw.disable_container_interface && req.config.ipam_type.is_some() {
            return Err(Error::config("cannot use IPAM when disableContainerInterface flag is set"));
        }
        // Later sources win, as in the reference: CNI_ARGS, then args, then the capability.
        let mut mac = None;
        if let Some(m) = req.args.get("MAC").filter(|m| !m.is_empty()) {
            mac = Some(parse_mac(m, "CNI_ARGS MAC")?);
        }
        if let Some(m) = raw.args.and_then(|a| a.cni).and_then(|c| c.mac).filter(|m| !m.is_empty()) {
            mac = Some(parse_mac(&m, "args.cni.mac")?);
        }
        if let Some(m) = raw.runtime_config.and_then(|r| r.mac).filter(|m| !m.is_empty()) {
            mac = Some(parse_mac(&m, "runtimeConfig.mac")?);
        }
        Ok(BridgeConf {
            bridge,
            is_gateway: raw.is_gateway || raw.is_default_gateway,
            is_default_gateway: raw.is_default_gateway,
            force_address: raw.force_address,
            ip_masq: raw.ip_masq,
            masq_backend,
            mtu,
            hairpin_mode: raw.hairpin_mode,
            promisc_mode: raw.promisc_mode,
            vlan,
            vlan_trunk: collect_trunk(raw.vlan_trunk.as_deref().unwrap_or_default())?,
            preserve_default_vlan: raw.preserve_default_vlan,
            mac_spoof_check: raw.macspoofchk,
            enable_dad: raw.enabledad,
            disable_container_interface: raw.disable_container_interface,
            port_isolation: raw.port_isolation,
            isolation: raw.isolation,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::{Value, json};

    fn parse_with(conf: Value, cni_args: &str) -> Result<BridgeConf, Error> {
        BridgeConf::parse(&testkit::request(Command::Add, &conf, cni_args))
    }

    fn parse(extra: Value) -> Result<BridgeConf, Error> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        parse_with(conf, "")
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = parse(json!({})).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && !c.hairpin_mode && !c.isolation);
        assert_eq!((c.vlan, c.mtu, c.masq_backend, c.mac), (0, None, MasqBackend::Nftables, None));
        assert!(parse(json!({"isDefaultGateway": true})).unwrap().is_gateway);
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(json!({
            "bridge": "br-x", "isGateway": true, "forceAddress": true, "ipMasq": true, "ipMasqBackend": "iptables",
            "mtu": 1400, "hairpinMode": true, "vlan": 100, "vlanTrunk": [{"id": 5}, {"minID": 10, "maxID": 12}, {"id": 11}],
            "preserveDefaultVlan": true, "macspoofchk": true, "enabledad": true, "portIsolation": true, "isolation": true
        }))
        .unwrap();
        assert_eq!(c.bridge, "br-x");
        assert!(c.is_gateway && c.force_address && c.ip_masq && c.hairpin_mode);
        assert_eq!(c.masq_backend, MasqBackend::Iptables);
        assert_eq!((c.mtu, c.vlan), (Some(1400), 100));
        assert_eq!(c.vlan_trunk, vec![5, 10, 11, 12]);
        assert!(c.preserve_default_vlan && c.mac_spoof_check && c.enable_dad && c.port_isolation && c.isolation);
        assert!(c.uses_vlans());
    }

    #[test]
    fn mac_sources_later_wins() {
        let base = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"});
        let c = parse_with(base.clone(), "IgnoreUnknown=1;MAC=0a:00:00:00:00:01").unwrap();
        assert_eq!(c.mac, Some([0x0a, 0, 0, 0, 0, 1]));
        let mut with_args = base.clone();
        with_args["args"] = json!({"cni": {"mac": "0a:00:00:00:00:02"}});
        let c = parse_with(with_args.clone(), "MAC=0a:00:00:00:00:01").unwrap();
        assert_eq!(c.mac, Some([0x0a, 0, 0, 0, 0, 2]));
        with_args["runtimeConfig"] = json!({"mac": "0a:00:00:00:00:03"});
        assert_eq!(parse_with(with_args, "").unwrap().mac, Some([0x0a, 0, 0, 0, 0, 3]));
    }

    #[test]
    fn bad_values_are_config_errors_naming_the_key() {
        let cases = [
            (json!({"vlan": 4095}), "invalid VLAN ID 4095"),
            (json!({"vlan": -1}), "invalid VLAN ID -1"),
            (json!({"vlanTrunk": [{"id": 0}]}), "incorrect trunk id"),
            (json!({"vlanTrunk": [{"minID": 10}]}), "maxID is missing"),
            (json!({"vlanTrunk": [{"maxID": 10}]}), "minID is missing"),
            (json!({"vlanTrunk": [{"minID": 20, "maxID": 10}]}), "minID is greater than maxID"),
            (json!({"vlanTrunk": [{"minID": 1, "maxID": 5000}]}), "incorrect trunk maxID"),
            (json!({"mtu": 10}), "mtu: 10 is out of range"),
            (json!({"ipMasqBackend": "pf"}), "unknown backend"),
            (json!({"hairpinMode": true, "promiscMode": true}), "hairpin mode and promiscuous mode"),
            (json!({"disableContainerInterface": true, "ipam": {"type": "host-local"}}), "cannot use IPAM"),
            (json!({"bridge": "a/b"}), "bridge: "),
            (json!({"bridge": "0123456789abcdef"}), "bridge: "),
            (json!({"bridge": "br%d"}), "bridge: "),
            (json!({"bridge": "@isolated"}), "bridge: "),
            (json!({"bridge": "$x"}), "bridge: "),
            (json!({"bridge": "br*"}), "bridge: "),
            (json!({"bridge": "br\"x"}), "bridge: "),
            (json!({"bridge": "br\\x"}), "bridge: "),
            (json!({"runtimeConfig": {"mac": "zz:00:00:00:00:01"}}), "runtimeConfig.mac: invalid MAC"),
            (json!({"args": {"cni": {"mac": "01:00:5e:00:00:01"}}}), "multicast"),
        ];
        for (extra, want) in cases {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{extra}");
            assert!(e.msg.contains(want), "{extra}: {} should contain {want}", e.msg);
        }
        let e = parse(json!({"ipMasq": "yes"})).unwrap_err();
        assert_eq!(e.code, Code::Decode);
    }
}
