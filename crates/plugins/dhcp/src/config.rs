//! The plugin's keys, under `ipam` as the reference reads them: `daemonSocketPath`, `provide`
//! (`[{option, value, fromArg}]`), `request` (`[{option, skipDefault}]`) and `priority` (the
//! metric of the routes in the result).
//!
//! Both sides read them: the plugin to find the daemon and to refuse a bad config before asking it
//! (code 7), the daemon because it never trusts what arrives on its socket.

use crate::packet::opt;
use cni::Error;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Where the reference's daemon listens, and ours by default.
pub const DEFAULT_SOCKET_PATH: &str = "/run/cni/dhcp.sock";

/// The options the reference asks for unless `skipDefault` is set: router and subnet mask.
const DEFAULT_REQUEST: [u8; 2] = [opt::ROUTER, opt::SUBNET_MASK];

#[derive(Deserialize, Default)]
struct Keys {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ipam: Option<Ipam>,
}

#[derive(Deserialize, Default)]
struct Ipam {
    #[serde(rename = "daemonSocketPath", default)]
    daemon_socket_path: String,
    #[serde(default)]
    provide: Option<Vec<Provide>>,
    #[serde(default)]
    request: Option<Vec<RequestOpt>>,
    #[serde(default)]
    priority: i64,
}

#[derive(Deserialize, Default)]
struct Provide {
    #[serde(default)]
    option: String,
    #[serde(default)]
    value: String,
    #[serde(rename = "fromArg", default)]
    from_arg: String,
}

#[derive(Deserialize, Default)]
struct RequestOpt {
    #[serde(rename = "skipDefault", default)]
    skip_default: bool,
    #[serde(default)]
    option: String,
}

/// The validated keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub network: String,
    pub socket_path: String,
    /// Options the client sends in DISCOVER and REQUEST, by code (the last one given wins, as the
    /// reference's `Options.Update`), including the parameter request list (55).
    pub options: BTreeMap<u8, Vec<u8>>,
    /// Route metric; 0 leaves it unset.
    pub priority: u32,
}

/// An option by the names the reference knows (dhcp-options(5) spelling) or by number.
pub fn parse_option_name(name: &str) -> Result<u8, Error> {
    let code = match name {
        "dhcp-client-identifier" => opt::CLIENT_ID,
        "subnet-mask" => opt::SUBNET_MASK,
        "routers" => opt::ROUTER,
        "host-name" => opt::HOST_NAME,
        "user-class" => opt::USER_CLASS,
        "vendor-class-identifier" => opt::VENDOR_CLASS,
        _ => name.parse::<u8>().map_err(|e| Error::config(format!("Can not parse option {name:?}: {e}")))?,
    };
    Ok(code)
}

/// `CNI_ARGS` as the reference splits it for `fromArg`: `;`-separated `key=value`, the first `=`
/// separating, later keys winning. Pairs without `=` are skipped.
fn raw_args(cni_args: &str) -> BTreeMap<&str, &str> {
    cni_args.split(';').filter_map(|p| p.split_once('=')).collect()
}

impl Config {
    /// Reads the whole network config (IPAM plugins get their caller's) and `CNI_ARGS`.
    pub fn parse(conf: &Value, cni_args: &str) -> Result<Config, Error> {
        let keys: Keys = cni::json::from_value(conf)?;
        let ipam = keys.ipam.unwrap_or_default();
        let socket_path = match ipam.daemon_socket_path.as_str() {
            "" => DEFAULT_SOCKET_PATH.to_string(),
            p => p.to_string(),
        };
        let priority = u32::try_from(ipam.priority)
            .map_err(|_| Error::config(format!("ipam.priority must be between 0 and {}", u32::MAX)))?;

        let args = raw_args(cni_args);
        let mut options = BTreeMap::new();
        for p in ipam.provide.unwrap_or_default() {
            let code = parse_option_name(&p.option)?;
            let mut values = Vec::new();
            if !p.value.is_empty() {
                values.push(p.value.as_str());
            }
            if let Some(v) = args.get(p.from_arg.as_str()) {
                values.push(v);
            }
            for v in values {
                if v.len() > 255 {
                    return Err(Error::config(format!("value too long for option {:?}: {v:?}", p.option)));
                }
                options.insert(code, v.as_bytes().to_vec());
            }
        }

        let mut requested: Vec<u8> = Vec::new();
        let mut skip_default = false;
        for r in ipam.request.unwrap_or_default() {
            skip_default |= r.skip_default;
            if r.option.is_empty() {
                continue;
            }
            let code = parse_option_name(&r.option)?;
            if !requested.contains(&code) {
                requested.push(code);
            }
        }
        if !skip_default {
            for code in DEFAULT_REQUEST {
                if !requested.contains(&code) {
                    requested.push(code);
                }
            }
        }
        if !requested.is_empty() {
            options.insert(opt::PARAMETER_REQUEST_LIST, requested);
        }
        Ok(Config { network: keys.name, socket_path, options, priority })
    }
}

/// The client identifier (option 61) of one attachment, built as the reference builds it:
/// `<containerID>/<network>/<ifname>` cut to 254 bytes, after a type byte of 0. The lease's
/// identity at the server, so a server-side reservation written for the reference matches ours.
pub fn client_id(container_id: &str, network: &str, ifname: &str) -> String {
    let mut id = format!("{container_id}/{network}/{ifname}");
    if id.len() > 254 {
        let mut cut = 254;
        // Byte-truncation as Go does; names here are ASCII (libcni's characters), but a cut inside
        // a character must not panic.
        while !id.is_char_boundary(cut) {
            cut -= 1;
        }
        id.truncate(cut);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_the_reference() {
        let c = Config::parse(&json!({"name": "n", "ipam": {"type": "dhcp"}}), "").unwrap();
        assert_eq!(c.socket_path, DEFAULT_SOCKET_PATH);
        assert_eq!(c.options.get(&opt::PARAMETER_REQUEST_LIST), Some(&vec![opt::ROUTER, opt::SUBNET_MASK]));
        assert_eq!(c.priority, 0);
    }

    #[test]
    fn provide_and_request() {
        let conf = json!({"name": "n", "ipam": {"type": "dhcp", "daemonSocketPath": "/tmp/x.sock", "priority": 7,
            "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}, {"option": "60", "value": "vc"}],
            "request": [{"skipDefault": true}, {"option": "121"}]}});
        let c = Config::parse(&conf, "IgnoreUnknown=1;K8S_POD_NAME=web-0").unwrap();
        assert_eq!(c.socket_path, "/tmp/x.sock");
        assert_eq!(c.priority, 7);
        assert_eq!(c.options.get(&opt::HOST_NAME), Some(&b"web-0".to_vec()));
        assert_eq!(c.options.get(&opt::VENDOR_CLASS), Some(&b"vc".to_vec()));
        assert_eq!(c.options.get(&opt::PARAMETER_REQUEST_LIST), Some(&vec![121]));
    }

    #[test]
    fn bad_options_are_config_errors() {
        for ipam in [
            json!({"provide": [{"option": "no-such-option", "value": "x"}]}),
            json!({"request": [{"option": "256"}]}),
            json!({"provide": [{"option": "12", "value": "x".repeat(256)}]}),
            json!({"priority": -1}),
        ] {
            let e = Config::parse(&json!({"name": "n", "ipam": ipam}), "").unwrap_err();
            assert_eq!(e.code, cni::Code::InvalidConfig, "{ipam}: {e:?}");
        }
        let e = Config::parse(&json!({"name": "n", "ipam": {"provide": "x"}}), "").unwrap_err();
        assert_eq!(e.code, cni::Code::Decode);
    }

    #[test]
    fn client_id_is_cut_to_254_bytes() {
        assert_eq!(client_id("c", "net", "eth0"), "c/net/eth0");
        assert_eq!(client_id(&"a".repeat(300), "net", "eth0").len(), 254);
    }
}
