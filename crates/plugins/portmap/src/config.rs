//! portmap's configuration: the runtime's `portMappings` and the reference's keys, validated
//! before anything changes.

use cni::{Error, Request};
use firewall::conditions;
use firewall::iptables_portmap::{split_conditions, validate_chain_name};
use firewall::portmap::{Mapping, Protocol};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;

/// The most port mappings one attachment may publish. Runtimes expand a published range into one
/// mapping per port (Podman's `-p 10000-20000:10000-20000/udp` is 10,001), so the bound is well
/// above that; it keeps an ADD within seconds (the firewall's work grows faster than linearly with
/// the mappings of one attachment) where 65,535 mappings would take minutes.
pub const MAX_PORT_MAPPINGS: usize = 16384;
/// The most words (and set items: `{a,b}` is two) `conditionsV4` or `conditionsV6` may hold.
pub const MAX_CONDITION_WORDS: usize = 4096;
/// Conditions are part of every mapping's rule: their words times the mappings is bounded too,
/// so the firewall transaction stays in the megabytes.
pub const MAX_CONDITION_COPIES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    Iptables,
}

#[derive(Debug, Clone)]
pub struct PortmapConf {
    pub backend: Backend,
    pub snat: bool,
    pub masq_all: bool,
    pub mark_masq_bit: u8,
    pub external_set_mark_chain: Option<String>,
    /// nftables: parsed match statements; iptables: words.
    pub conditions_v4: Conditions,
    pub conditions_v6: Conditions,
    pub mappings: Vec<Mapping>,
}

#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub nft: Vec<Value>,
    pub iptables: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(rename = "masqAll", default)]
    masq_all: bool,
    #[serde(rename = "markMasqBit", default)]
    mark_masq_bit: Option<i64>,
    #[serde(rename = "externalSetMarkChain", default)]
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsV4", default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6", default)]
    conditions_v6: Option<Vec<String>>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntime>,
}

#[derive(Deserialize, Default)]
struct RawRuntime {
    #[serde(rename = "portMappings", default)]
    port_mappings: Option<Vec<RawMapping>>,
}

/// Field names are matched as Go does (`hostPort`, `HostPort`, `hostport`), and numbers are read
/// wide so that an out-of-range port is a clear error rather than a decode failure.
#[derive(Deserialize, Default)]
struct RawMapping {
    #[serde(rename = "hostPort", default)]
    host_port: Option<i64>,
    #[serde(rename = "containerPort", default)]
    container_port: Option<i64>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(rename = "hostIP", default)]
    host_ip: Option<String>,
}

fn port(value: Option<i64>, what: &str, i: usize) -> Result<u16, Error> {
    match value {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Some(p) => Err(Error::config(format!("portMappings[{i}].{what}: {p} is not a port number (1..65535)"))),
        None => Err(Error::config(format!("portMappings[{i}].{what} is missing"))),
    }
}

fn mapping(raw: &RawMapping, i: usize) -> Result<Mapping, Error> {
    let protocol = match raw.protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some("sctp") => Protocol::Sctp,
        Some(other) => {
            return Err(Error::config(format!(
                "portMappings[{i}].protocol: unknown protocol {other:?} (tcp, udp or sctp)"
            )));
        }
    };
    let host_ip = match raw.host_ip.as_deref().unwrap_or("") {
        "" => None,
        text => {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| Error::config(format!("portMappings[{i}].hostIP: invalid IP address {text:?}")))?;
            // `::ffff:10.71.0.1` is how some tools spell an IPv4 address; packets to it arrive as
            // IPv4, so it is published as IPv4 (as the reference does, Go's To4()).
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            (!ip.is_unspecified()).then_some(ip)
        }
    };
    Ok(Mapping {
        host_port: port(raw.host_port, "hostPort", i)?,
        container_port: port(raw.container_port, "containerPort", i)?,
        protocol,
        host_ip,
    })
}

impl PortmapConf {
    pub fn parse(req: &Request) -> Result<PortmapConf, Error> {
        let raw: Raw = req.config.decode()?;
        let mut mappings: Vec<Mapping> = Vec::new();
        let raw_mappings = raw.runtime_config.and_then(|r| r.port_mappings).unwrap_or_default();
        if raw_mappings.len() > MAX_PORT_MAPPINGS {
            return Err(Error::config(format!(
                "portMappings: {} mappings; at most {MAX_PORT_MAPPINGS} are allowed",
                raw_mappings.len()
            )));
        }
        let mut published = HashSet::new();
        for (i, m) in raw_mappings.iter().enumerate() {
            let m = mapping(m, i)?;
            if !published.insert((m.host_port, m.protocol, m.host_ip)) {
                return Err(Error::config(format!(
                    "portMappings[{i}]: host port {}/{} is published twice",
                    m.host_port,
                    m.protocol.as_str()
                )));
            }
            mappings.push(m);
        }

        let cond_v4 = raw.conditions_v4.unwrap_or_default();
        let cond_v6 = raw.conditions_v6.unwrap_or_default();
        for (name, c) in [("conditionsV4", &cond_v4), ("conditionsV6", &cond_v6)] {
            let separator = |ch: char| ch.is_whitespace() || matches!(ch, ',' | '{' | '}');
            let words = c.iter().map(|w| w.split(separator).filter(|p| !p.is_empty()).count()).sum::<usize>();
            if words > MAX_CONDITION_WORDS {
                return Err(Error::config(format!("{name}: {words} words; at most {MAX_CONDITION_WORDS} are allowed")));
            }
            if words.saturating_mul(mappings.len()) > MAX_CONDITION_COPIES {
                return Err(Error::config(format!(
                    "{name}: {words} words, repeated in the rule of each of {} port mappings, exceed {MAX_CONDITION_COPIES}",
                    mappings.len()
                )));
            }
        }
        let mut iptables_only = Vec::new();
        let mut nftables_only = Vec::new();
        if raw.external_set_mark_chain.is_some() {
            iptables_only.push("externalSetMarkChain");
        }
        for (name, c) in [("conditionsV4", &cond_v4), ("conditionsV6", &cond_v6)] {
            if c.first().is_none_or(|w| w.is_empty()) {
                continue;
            }
            if conditions::is_iptables_style(c) { iptables_only.push(name) } else { nftables_only.push(name) }
        }
        // Without an explicit backend, options written for one backend choose it (the reference
        // defaults to iptables; nftables is the default here, so configs written for iptables
        // must still work).
        let backend = match raw.backend.as_deref() {
            Some("nftables") => Backend::Nftables,
            Some("iptables") => Backend::Iptables,
            Some(other) => {
                return Err(Error::config(format!("backend: unrecognized backend {other:?} (iptables or nftables)")));
            }
            None if !iptables_only.is_empty() => Backend::Iptables,
            None => Backend::Nftables,
        };
        let wrong = if backend == Backend::Iptables { &nftables_only } else { &iptables_only };
        if !wrong.is_empty() {
            let (this, other) =
                if backend == Backend::Iptables { ("iptables", "nftables") } else { ("nftables", "iptables") };
            return Err(Error::config(format!(
                "{this} backend was requested but configuration contains {other}-specific options {wrong:?}"
            )));
        }
        if let Some(chain) = &raw.external_set_mark_chain {
            validate_chain_name(chain, "externalSetMarkChain")?;
        }
        if raw.mark_masq_bit.is_some() && raw.external_set_mark_chain.is_some() {
            return Err(Error::config("cannot specify externalSetMarkChain and markMasqBit"));
        }
        let mark_masq_bit = match raw.mark_masq_bit.unwrap_or(13) {
            b @ 0..=31 => b as u8,
            b => return Err(Error::config(format!("markMasqBit must be between 0 and 31 (got {b})"))),
        };
        let read = |c: &[String], field: &str| -> Result<Conditions, Error> {
            Ok(match backend {
                Backend::Nftables => Conditions { nft: conditions::parse(c, field)?, iptables: Vec::new() },
                Backend::Iptables => Conditions { nft: Vec::new(), iptables: split_conditions(c, field)? },
            })
        };
        Ok(PortmapConf {
            backend,
            snat: raw.snat.unwrap_or(true),
            masq_all: raw.masq_all,
            mark_masq_bit,
            external_set_mark_chain: raw.external_set_mark_chain,
            conditions_v4: read(&cond_v4, "conditionsV4")?,
            conditions_v6: read(&cond_v6, "conditionsV6")?,
            mappings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::json;

    fn parse(extra: Value) -> Result<PortmapConf, Error> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "portmap"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        PortmapConf::parse(&testkit::request(Command::Add, &conf, ""))
    }

    fn maps(m: Value) -> Value {
        json!({"runtimeConfig": {"portMappings": m}})
    }

    #[test]
    fn mappings_in_any_capitalisation() {
        let c = parse(maps(json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
            {"HostPort": 53, "ContainerPort": 53, "Protocol": "UDP"},
            {"hostport": 9000, "containerport": 9000, "hostIP": "0.0.0.0"},
            {"hostPort": 9001, "containerPort": 9001, "protocol": "sctp", "hostIP": "::"}
        ])))
        .unwrap();
        assert_eq!(c.mappings.len(), 4);
        assert_eq!(c.mappings[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        let mapped = json!([{"hostPort": 80, "containerPort": 80, "hostIP": "::ffff:10.71.0.1"}]);
        let m = parse(maps(mapped)).unwrap();
        assert_eq!(m.mappings[0].host_ip, Some("10.71.0.1".parse().unwrap()));
        assert_eq!(c.mappings[1].protocol, Protocol::Udp);
        assert_eq!((c.mappings[2].protocol, c.mappings[2].host_ip), (Protocol::Tcp, None));
        assert_eq!(c.mappings[3].host_ip, None);
        assert!(c.snat && !c.masq_all);
        assert_eq!((c.backend, c.mark_masq_bit), (Backend::Nftables, 13));
    }

    #[test]
    fn bad_mappings_are_refused_with_the_field_named() {
        for (m, want) in [
            (json!([{"hostPort": 0, "containerPort": 80}]), "portMappings[0].hostPort: 0 is not a port"),
            (json!([{"hostPort": 70000, "containerPort": 80}]), "portMappings[0].hostPort: 70000"),
            (json!([{"hostPort": 80, "containerPort": -1}]), "portMappings[0].containerPort: -1"),
            (json!([{"hostPort": 80}]), "containerPort is missing"),
            (json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]), "unknown protocol \"icmp\""),
            (json!([{"hostPort": 80, "containerPort": 80, "hostIP": "1.2.3"}]), "hostIP: invalid IP address"),
            (json!([{"hostPort": 80, "containerPort": 80}, {"hostPort": 80, "containerPort": 81}]), "published twice"),
        ] {
            let e = parse(maps(m.clone())).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{m}");
            assert!(e.msg.contains(want), "{m}: {} should contain {want}", e.msg);
        }
        assert_eq!(parse(maps(json!([{"hostPort": "80", "containerPort": 80}]))).unwrap_err().code, Code::Decode);
    }

    #[test]
    fn backend_follows_the_options_given() {
        assert_eq!(parse(json!({})).unwrap().backend, Backend::Nftables);
        let c = parse(json!({"conditionsV4": ["-s", "10.0.0.0/8"]})).unwrap();
        assert_eq!(c.backend, Backend::Iptables);
        assert_eq!(c.conditions_v4.iptables, ["-s", "10.0.0.0/8"]);
        assert_eq!(parse(json!({"externalSetMarkChain": "KUBE-MARK-MASQ"})).unwrap().backend, Backend::Iptables);
        let c = parse(json!({"conditionsV6": ["ip6", "saddr", "fd00::/8"]})).unwrap();
        assert_eq!((c.backend, c.conditions_v6.nft.len()), (Backend::Nftables, 1));
        for (conf, want) in [
            (json!({"backend": "nftables", "externalSetMarkChain": "X"}), "iptables-specific options"),
            (json!({"backend": "iptables", "conditionsV4": ["ip", "saddr", "1.2.3.4"]}), "nftables-specific options"),
            (json!({"backend": "pf"}), "unrecognized backend"),
            (json!({"markMasqBit": 32}), "between 0 and 31"),
            (json!({"markMasqBit": 5, "externalSetMarkChain": "X"}), "cannot specify"),
            (json!({"conditionsV4": ["ip", "saddr"]}), "conditionsV4: unsupported"),
            (json!({"externalSetMarkChain": "X\n-A INPUT -j DROP"}), "is not a chain name"),
            (json!({"conditionsV4": ["-s", "10.0.0.0/8", "-j", "ACCEPT"]}), "is not a match option"),
            (json!({"conditionsV4": vec!["iifname"; MAX_CONDITION_WORDS + 1]}), "at most 4096"),
        ] {
            let e = parse(conf.clone()).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{conf}");
            assert!(e.msg.contains(want), "{conf}: {}", e.msg);
        }
    }
}
