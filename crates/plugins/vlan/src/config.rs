//! The vlan plugin's keys: `master`, `vlanId`, `mtu`, `linkInContainer` (and the shared `ipam`
//! and `dns`). What can be checked without the kernel is checked here, before anything changes;
//! the MTU's upper bound is the master's, checked when ADD has found it.

use cni::{Error, Request};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanConf {
    pub master: String,
    pub vlan_id: u16,
    /// `None`: the master's MTU (the kernel's default for a VLAN).
    pub mtu: Option<u32>,
    /// The master is in the container's namespace, not the host's.
    pub link_in_container: bool,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    master: String,
    #[serde(rename = "vlanId", default)]
    vlan_id: i64,
    #[serde(default)]
    mtu: i64,
    #[serde(rename = "linkInContainer", default)]
    link_in_container: bool,
}

impl VlanConf {
    /// ADD and CHECK: every key as the reference requires it.
    pub fn parse(req: &Request) -> Result<VlanConf, Error> {
        let raw: Raw = req.config.decode()?;
        if raw.master.is_empty() {
            return Err(Error::config(
                "\"master\" field is required. It specifies the host interface name to create the VLAN for",
            ));
        }
        // 4095 is reserved by 802.1Q (the reference's message says "4095 inclusive"; it means 4094).
        let vlan_id = match raw.vlan_id {
            id @ 0..=4094 => id as u16,
            id => return Err(Error::config(format!("invalid VLAN ID {id} (must be between 0 and 4094 inclusive)"))),
        };
        let mtu = cni::linkconf::mtu_on_master(raw.mtu)?;
        Ok(VlanConf { master: raw.master, vlan_id, mtu, link_in_container: raw.link_in_container })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::{Value, json};

    fn parse(extra: Value) -> Result<VlanConf, Error> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "vlan", "master": "eth0", "vlanId": 100});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        VlanConf::parse(&testkit::request(Command::Add, &conf, ""))
    }

    #[test]
    fn keys_and_defaults() {
        let c = parse(json!({})).unwrap();
        assert_eq!(c, VlanConf { master: "eth0".into(), vlan_id: 100, mtu: None, link_in_container: false });
        let c = parse(json!({"vlanid": 0, "MTU": 1400, "linkInContainer": true})).unwrap();
        assert_eq!(c, VlanConf { master: "eth0".into(), vlan_id: 0, mtu: Some(1400), link_in_container: true });
        assert_eq!(parse(json!({"vlanId": 4094})).unwrap().vlan_id, 4094);
    }

    #[test]
    fn bad_values_are_config_errors() {
        for (extra, want) in [
            (json!({"vlanId": 4095}), "invalid VLAN ID 4095"),
            (json!({"vlanId": -1}), "invalid VLAN ID -1"),
            (json!({"master": ""}), "\"master\" field is required"),
            (json!({"mtu": -1}), "invalid MTU -1"),
        ] {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{extra}");
            assert!(e.msg.contains(want), "{extra}: {}", e.msg);
        }
        assert_eq!(parse(json!({"vlanId": "100"})).unwrap_err().code, Code::Decode);
    }
}
