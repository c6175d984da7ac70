//! The tap plugin's keys: `multiQueue`, `mtu`, `mac` (with `CNI_ARGS MAC` and
//! `runtimeConfig.mac`), `owner`, `group`, `selinuxContext`, `bridge` (and the shared `ipam` and
//! `dns`), validated before anything changes.

use cni::{Error, Request};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConf {
    pub multi_queue: bool,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub selinux_context: Option<String>,
    /// An existing bridge in the container's namespace to make the tap a port of.
    pub bridge: Option<String>,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(rename = "multiQueue", default)]
    multi_queue: bool,
    #[serde(default)]
    mtu: i64,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    owner: Option<u32>,
    #[serde(default)]
    group: Option<u32>,
    #[serde(rename = "selinuxContext", default)]
    selinux_context: String,
    #[serde(default)]
    bridge: String,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntime>,
}

#[derive(Deserialize, Default)]
struct RawRuntime {
    #[serde(default)]
    mac: String,
}

impl TapConf {
    pub fn parse(req: &Request) -> Result<TapConf, Error> {
        let raw: Raw = req.config.decode()?;
        let mtu = match raw.mtu {
            0 => None,
            m @ 68..=65535 => Some(m as u32),
            m => return Err(Error::config(format!("invalid MTU {m}: it must be 0 (the default) or 68 to 65535"))),
        };
        req.args.check_known(&["MAC"])?;
        let mac = cni::linkconf::requested_mac(raw.mac, &req.args, raw.runtime_config.map(|r| r.mac))?;
        Ok(TapConf {
            multi_queue: raw.multi_queue,
            mtu,
            mac,
            owner: raw.owner,
            group: raw.group,
            selinux_context: Some(raw.selinux_context).filter(|s| !s.is_empty()),
            bridge: Some(raw.bridge).filter(|b| !b.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::{Value, json};

    fn parse(extra: Value, args: &str) -> Result<TapConf, Error> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "tap"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        TapConf::parse(&testkit::request(Command::Add, &conf, args))
    }

    #[test]
    fn keys_and_defaults() {
        let c = parse(json!({}), "").unwrap();
        assert_eq!(
            c,
            TapConf {
                multi_queue: false,
                mtu: None,
                mac: None,
                owner: None,
                group: None,
                selinux_context: None,
                bridge: None
            }
        );
        let c = parse(
            json!({"multiQueue": true, "mtu": 9000, "mac": "0a:00:00:00:00:01", "owner": 1000, "group": 0,
                   "selinuxcontext": "system_u:system_r:container_t:s0", "bridge": "br0"}),
            "",
        )
        .unwrap();
        assert!(c.multi_queue);
        assert_eq!((c.mtu, c.owner, c.group), (Some(9000), Some(1000), Some(0)));
        assert_eq!(c.selinux_context.as_deref(), Some("system_u:system_r:container_t:s0"));
        assert_eq!(c.bridge.as_deref(), Some("br0"));
        let c = parse(
            json!({"mac": "0a:00:00:00:00:01", "runtimeConfig": {"mac": "0a:00:00:00:00:03"}}),
            "MAC=0a:00:00:00:00:02",
        );
        assert_eq!(c.unwrap().mac.unwrap()[5], 3);
        assert_eq!(parse(json!({"mac": "0a:00:00:00:00:01"}), "MAC=0a:00:00:00:00:02").unwrap().mac.unwrap()[5], 2);
    }

    #[test]
    fn bad_values_are_refused() {
        for (extra, code) in [
            (json!({"mtu": 20}), Code::InvalidConfig),
            (json!({"mac": "x"}), Code::InvalidConfig),
            (json!({"owner": -1}), Code::Decode),
            (json!({"multiQueue": "yes"}), Code::Decode),
        ] {
            assert_eq!(parse(extra.clone(), "").unwrap_err().code, code, "{extra}");
        }
        assert_eq!(parse(json!({}), "FOO=1").unwrap_err().code, Code::InvalidEnv);
    }
}
