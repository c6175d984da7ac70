//! static's configuration: `ipam.addresses`, `ipam.routes`, `ipam.dns`, and the addresses a
//! runtime may give instead (`CNI_ARGS` `IP=`/`GATEWAY=`, `args.cni.ips`, `runtimeConfig.ips`),
//! merged in the reference's order and validated before anything is printed.
//!
//! The order, as the reference: the config's addresses, then `CNI_ARGS IP=` appended to them, then
//! `GATEWAY=` given to each of those `IP=` addresses whose subnet holds it; `args.cni.ips` replaces the list, and
//! `runtimeConfig.ips` (Multus' `ips` annotation) replaces it again.
//!
//! Beyond the reference, a gateway of the other family than its address is refused (the
//! reference prints it, and the interface plugin fails later on a route no kernel accepts).

use cni::{Code, Dns, Error, Request, Route};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use std::net::IpAddr;

/// One address to hand out, with host bits, and its gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConf {
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Deserialize, Default)]
struct RawNet {
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawIps>,
    #[serde(default)]
    args: Option<RawArgs>,
}

#[derive(Deserialize, Default)]
struct RawIpam {
    #[serde(default)]
    addresses: Option<Vec<RawAddress>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Deserialize, Default)]
struct RawAddress {
    #[serde(default)]
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawIps>,
}

#[derive(Deserialize, Default)]
struct RawIps {
    #[serde(default)]
    ips: Option<Vec<String>>,
}

/// `a.b.c.d/n` with host bits kept; `what` is the reference's wording for the field.
fn cidr(text: &str, what: &str) -> Result<IpNetwork, Error> {
    cni::result::parse_cidr(text)
        .map_err(|_| Error::config(format!("the {what} is expected to be in CIDR notation, got: '{text}'")))
}

/// A gateway as Go's `net.IP` decodes it (an unparsable one is a decoding failure there too).
fn gateway(text: &str, field: &str) -> Result<Option<IpAddr>, Error> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| Error::decode(format!("{field}: invalid IP address: {text}")))
}

/// A replacing list (`args.cni.ips`, `runtimeConfig.ips`): addresses without gateways.
fn replacing(ips: &[String]) -> Result<Vec<Address>, Error> {
    ips.iter()
        .map(|ip| {
            cni::result::parse_cidr(ip)
                .map(|address| Address { address, gateway: None })
                .map_err(|_| Error::config(format!("an entry in the 'ips' field is NOT in CIDR notation, got: '{ip}'")))
        })
        .collect()
}

impl StaticConf {
    pub fn parse(req: &Request) -> Result<StaticConf, Error> {
        let raw: RawNet = req.config.decode()?;
        let ipam = raw.ipam.ok_or_else(|| Error::config("IPAM config missing 'ipam' key"))?;
        let mut addresses = Vec::new();
        for (i, a) in ipam.addresses.unwrap_or_default().iter().enumerate() {
            let address = cidr(&a.address, "'address' field")?;
            addresses.push(Address {
                address,
                gateway: gateway(a.gateway.as_deref().unwrap_or(""), &format!("ipam.addresses[{i}].gateway"))?,
            });
        }

        req.args.check_known(&["IP", "GATEWAY"])?;
        let from_config = addresses.len();
        if let Some(ips) = req.args.get("IP").filter(|v| !v.is_empty()) {
            for ip in ips.split(',').map(str::trim) {
                addresses.push(Address { address: cidr(ip, "'ip' field")?, gateway: None });
            }
        }
        if let Some(gws) = req.args.get("GATEWAY").filter(|v| !v.is_empty()) {
            for item in gws.split(',') {
                let gw: IpAddr =
                    item.trim().parse().map_err(|_| Error::config(format!("invalid gateway address: {item}")))?;
                // Only the CNI_ARGS addresses: the reference's config addresses are not parsed
                // yet when it applies GATEWAY=, so they keep their own gateway.
                for a in addresses[from_config..].iter_mut().filter(|a| a.address.contains(gw)) {
                    a.gateway = Some(gw);
                }
            }
        }

        if let Some(ips) = raw.args.and_then(|a| a.cni).and_then(|c| c.ips).filter(|ips| !ips.is_empty()) {
            addresses = replacing(&ips)?;
        }
        if let Some(ips) = raw.runtime_config.and_then(|r| r.ips).filter(|ips| !ips.is_empty()) {
            addresses = replacing(&ips)?;
        }

        let v4 = addresses.iter().filter(|a| a.address.is_ipv4()).count();
        if (v4 > 1 || addresses.len() - v4 > 1) && !cni::version::at_least(&req.config.cni_version, "0.3.0") {
            return Err(Error::new(
                Code::IncompatibleVersion,
                format!("CNI version {} does not support more than 1 address per family", req.config.cni_version),
            ));
        }
        for a in &addresses {
            if let Some(gw) = a.gateway
                && gw.is_ipv4() != a.address.is_ipv4()
            {
                return Err(Error::config(format!("gateway {gw} is not of the same family as address {}", a.address)));
            }
        }
        Ok(StaticConf { addresses, routes: ipam.routes.unwrap_or_default(), dns: ipam.dns.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::Command;
    use serde_json::{Value, json};

    fn parse_with(conf: Value, args: &str) -> Result<StaticConf, Error> {
        StaticConf::parse(&testkit::request(Command::Add, &conf, args))
    }

    fn conf(ipam: Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan", "ipam": ipam})
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_routes_dns_from_the_config() {
        let c = parse_with(
            conf(json!({"type": "static",
                "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}, {"address": "3ffe:ffff:0::01/64"}],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
                "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]}})),
            "",
        )
        .unwrap();
        assert_eq!(
            c.addresses,
            vec![
                Address { address: net("10.10.0.1/24"), gateway: Some("10.10.0.254".parse().unwrap()) },
                Address { address: net("3ffe:ffff::1/64"), gateway: None },
            ]
        );
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].gw, Some("10.10.5.1".parse().unwrap()));
        assert_eq!(c.dns.domain, "example.com");
        // Go's key matching.
        let c = parse_with(conf(json!({"type": "static", "Addresses": [{"Address": "10.1.0.2/16"}]})), "").unwrap();
        assert_eq!(c.addresses[0].address, net("10.1.0.2/16"));
    }

    #[test]
    fn cni_args_append_and_set_gateways() {
        let ipam = json!({"type": "static", "addresses": [{"address": "10.10.0.1/24"}]});
        let c = parse_with(conf(ipam.clone()), "IP=10.10.0.2/24, fd00::5/64;GATEWAY=10.10.0.254,fd00::1").unwrap();
        let want = |a: &str, g: &str| Address { address: net(a), gateway: Some(g.parse().unwrap()) };
        assert_eq!(
            c.addresses,
            vec![
                Address { address: net("10.10.0.1/24"), gateway: None },
                want("10.10.0.2/24", "10.10.0.254"),
                want("fd00::5/64", "fd00::1")
            ]
        );
        // A gateway no subnet holds is ignored, as by the reference.
        let c = parse_with(conf(ipam.clone()), "IP=10.10.0.3/24;GATEWAY=192.168.1.1").unwrap();
        assert_eq!(c.addresses[1].gateway, None);
        // Unknown keys need IgnoreUnknown; key names are exact.
        assert_eq!(parse_with(conf(ipam.clone()), "ip=10.10.0.2/24").unwrap_err().code, Code::InvalidEnv);
        assert_eq!(parse_with(conf(ipam.clone()), "IgnoreUnknown=1;K8S_POD_NAME=x").unwrap().addresses.len(), 1);
    }

    #[test]
    fn args_and_runtime_config_replace() {
        let mut c =
            conf(json!({"type": "static", "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}]}));
        c["args"] = json!({"cni": {"ips": ["10.20.0.5/24"]}});
        let got = parse_with(c.clone(), "IP=10.10.0.9/24").unwrap();
        assert_eq!(got.addresses, vec![Address { address: net("10.20.0.5/24"), gateway: None }]);
        c["runtimeConfig"] = json!({"ips": ["10.30.0.5/24", "fd30::5/64"]});
        let got = parse_with(c, "").unwrap();
        assert_eq!(
            got.addresses.iter().map(|a| a.address).collect::<Vec<_>>(),
            [net("10.30.0.5/24"), net("fd30::5/64")]
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_reference_message() {
        let bad = |ipam: Value, args: &str| parse_with(conf(ipam), args).unwrap_err();
        let e = bad(json!({"type": "static", "addresses": [{"address": "10.10.0.1"}]}), "");
        assert_eq!(
            (e.code, e.msg.as_str()),
            (Code::InvalidConfig, "the 'address' field is expected to be in CIDR notation, got: '10.10.0.1'")
        );
        let e = bad(json!({"type": "static"}), "IP=10.1.2.3");
        assert_eq!(e.msg, "the 'ip' field is expected to be in CIDR notation, got: '10.1.2.3'");
        let e = bad(json!({"type": "static"}), "IP=10.1.2.3/24;GATEWAY=nope");
        assert_eq!(e.msg, "invalid gateway address: nope");
        let e = bad(json!({"type": "static", "addresses": [{"address": "10.1.2.3/24", "gateway": "x"}]}), "");
        assert_eq!(e.code, Code::Decode);
        let e = bad(json!({"type": "static", "addresses": [{"address": "10.1.2.3/24", "gateway": "fd00::1"}]}), "");
        assert!(e.msg.contains("not of the same family"), "{}", e.msg);
        let mut c = conf(json!({"type": "static"}));
        c["runtimeConfig"] = json!({"ips": ["10.1.2.3"]});
        assert_eq!(
            parse_with(c, "").unwrap_err().msg,
            "an entry in the 'ips' field is NOT in CIDR notation, got: '10.1.2.3'"
        );
        let e = parse_with(json!({"cniVersion": "1.0.0", "name": "n", "type": "static"}), "").unwrap_err();
        assert_eq!(e.msg, "IPAM config missing 'ipam' key");
        // Two addresses of a family need 0.3.0.
        let mut c =
            conf(json!({"type": "static", "addresses": [{"address": "10.1.0.2/24"}, {"address": "10.2.0.2/24"}]}));
        c["cniVersion"] = json!("0.2.0");
        assert_eq!(parse_with(c.clone(), "").unwrap_err().code, Code::IncompatibleVersion);
        c["cniVersion"] = json!("0.3.0");
        assert_eq!(parse_with(c, "").unwrap().addresses.len(), 2);
    }
}
