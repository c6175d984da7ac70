//! The bandwidth plugin's configuration: the four limits, at the top level or in
//! `runtimeConfig.bandwidth` (the `bandwidth` capability, which kubelet fills from the
//! `kubernetes.io/{ingress,egress}-bandwidth` annotations), and the subnets that shaping applies to
//! or spares. Validated, with the reference's messages, before anything changes.

use cni::{Error, Request};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer};

/// One set of limits: rates in bits per second, bursts in bits; 0 means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
    /// Traffic to (ingress) or from (egress) these subnets is not shaped.
    pub unshaped_subnets: Vec<IpNetwork>,
    /// Only traffic to or from these subnets is shaped.
    pub shaped_subnets: Vec<IpNetwork>,
}

impl Limits {
    pub fn is_zero(&self) -> bool {
        self.ingress_rate == 0 && self.ingress_burst == 0 && self.egress_rate == 0 && self.egress_burst == 0
    }

    pub fn shapes_ingress(&self) -> bool {
        self.ingress_rate > 0 && self.ingress_burst > 0
    }

    pub fn shapes_egress(&self) -> bool {
        self.egress_rate > 0 && self.egress_burst > 0
    }
}

/// A key that is present (even as `null`) is `Some`: Go allocates the embedded entry as soon as
/// one of its keys appears, and the top-level entry then hides `runtimeConfig.bandwidth`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

#[derive(Deserialize, Default)]
struct RawEntry {
    #[serde(rename = "ingressRate", default, deserialize_with = "present")]
    ingress_rate: Option<Option<u64>>,
    #[serde(rename = "ingressBurst", default, deserialize_with = "present")]
    ingress_burst: Option<Option<u64>>,
    #[serde(rename = "egressRate", default, deserialize_with = "present")]
    egress_rate: Option<Option<u64>>,
    #[serde(rename = "egressBurst", default, deserialize_with = "present")]
    egress_burst: Option<Option<u64>>,
    #[serde(rename = "unshapedSubnets", default)]
    unshaped_subnets: Option<Vec<String>>,
    #[serde(rename = "shapedSubnets", default)]
    shaped_subnets: Option<Vec<String>>,
}

impl RawEntry {
    fn is_present(&self) -> bool {
        self.ingress_rate.is_some()
            || self.ingress_burst.is_some()
            || self.egress_rate.is_some()
            || self.egress_burst.is_some()
            || self.unshaped_subnets.is_some()
            || self.shaped_subnets.is_some()
    }
}

#[derive(Deserialize, Default)]
struct RawRuntime {
    #[serde(default)]
    bandwidth: Option<RawEntry>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntime>,
}

fn validate_rate_and_burst(rate: u64, burst: u64) -> Result<(), Error> {
    if burst == 0 && rate != 0 {
        return Err(Error::config("if rate is set, burst must also be set"));
    }
    if rate == 0 && burst != 0 {
        return Err(Error::config("if burst is set, rate must also be set"));
    }
    if burst / 8 >= u64::from(u32::MAX) {
        return Err(Error::config("burst cannot be more than 4GB"));
    }
    // tbf counts bytes: a rate under one byte per second would divide by zero.
    if rate != 0 && rate < 8 {
        return Err(Error::config(format!("rate {rate} is below the smallest rate tbf can keep (8 bits per second)")));
    }
    Ok(())
}

/// The subnets, as the reference (v1.5.0, which had them) checks them.
fn parse_subnets(unshaped: &[String], shaped: &[String]) -> Result<(Vec<IpNetwork>, Vec<IpNetwork>), Error> {
    if !unshaped.is_empty() && !shaped.is_empty() {
        return Err(Error::config(
            "unshapedSubnets and shapedSubnets cannot be both specified, one of them should be discarded",
        ));
    }
    let parse = |list: &[String]| -> Result<Vec<IpNetwork>, Error> {
        list.iter()
            .map(|s| {
                let net: IpNetwork = s.parse().ok().filter(|_| s.contains('/')).ok_or_else(|| {
                    Error::config(format!("bad subnet {s:?} provided, details invalid CIDR address: {s}"))
                })?;
                // Go's ParseCIDR gives the network, host bits cleared.
                Ok(IpNetwork::new(net.network(), net.prefix()).expect("same prefix"))
            })
            .collect()
    };
    Ok((parse(unshaped)?, parse(shaped)?))
}

impl Limits {
    /// The limits that apply: the top-level entry when the config has one, else the runtime's.
    /// `None` when neither is there.
    pub fn parse(req: &Request) -> Result<Option<Limits>, Error> {
        let top: RawEntry = req.config.decode()?;
        let raw: Raw = req.config.decode()?;
        let entry = if top.is_present() {
            top
        } else {
            match raw.runtime_config.and_then(|r| r.bandwidth) {
                Some(entry) => entry,
                None => return Ok(None),
            }
        };
        let value = |v: Option<Option<u64>>| v.flatten().unwrap_or(0);
        let (unshaped_subnets, shaped_subnets) = parse_subnets(
            entry.unshaped_subnets.as_deref().unwrap_or_default(),
            entry.shaped_subnets.as_deref().unwrap_or_default(),
        )?;
        let limits = Limits {
            ingress_rate: value(entry.ingress_rate),
            ingress_burst: value(entry.ingress_burst),
            egress_rate: value(entry.egress_rate),
            egress_burst: value(entry.egress_burst),
            unshaped_subnets,
            shaped_subnets,
        };
        validate_rate_and_burst(limits.ingress_rate, limits.ingress_burst)?;
        validate_rate_and_burst(limits.egress_rate, limits.egress_burst)?;
        Ok(Some(limits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::{Value, json};

    fn parse(extra: Value) -> Result<Option<Limits>, Error> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "bandwidth"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        Limits::parse(&testkit::request(Command::Add, &conf, ""))
    }

    #[test]
    fn top_level_hides_the_runtime_entry() {
        assert_eq!(parse(json!({})).unwrap(), None);
        let rt = json!({"bandwidth": {"ingressRate": 1000, "ingressBurst": 2000}});
        let l = parse(json!({"runtimeConfig": rt})).unwrap().unwrap();
        assert_eq!((l.ingress_rate, l.ingress_burst, l.egress_rate), (1000, 2000, 0));
        assert!(l.shapes_ingress() && !l.shapes_egress());
        // One top-level key, even null, and the runtime's entry is ignored, as in the reference.
        let l = parse(json!({"egressRate": 8000, "egressBurst": 16000, "runtimeConfig": rt})).unwrap().unwrap();
        assert_eq!((l.ingress_rate, l.egress_rate, l.egress_burst), (0, 8000, 16000));
        let l = parse(json!({"ingressRate": null, "runtimeConfig": rt})).unwrap().unwrap();
        assert!(l.is_zero());
        // Go's key matching.
        assert_eq!(parse(json!({"ingressrate": 8, "INGRESSBURST": 9})).unwrap().unwrap().ingress_burst, 9);
    }

    #[test]
    fn subnets() {
        let l =
            parse(json!({"egressRate": 8000, "egressBurst": 16000, "unshapedSubnets": ["10.0.0.5/8", "fd00::/64"]}))
                .unwrap()
                .unwrap();
        assert_eq!(l.unshaped_subnets, vec!["10.0.0.0/8".parse().unwrap(), "fd00::/64".parse().unwrap()]);
        let rt = json!({"bandwidth": {"ingressRate": 8000, "ingressBurst": 9000, "shapedSubnets": ["192.0.2.0/24"]}});
        assert_eq!(parse(json!({"runtimeConfig": rt})).unwrap().unwrap().shaped_subnets.len(), 1);
    }

    #[test]
    fn the_reference_messages() {
        for (extra, want) in [
            (json!({"ingressRate": 100}), "if rate is set, burst must also be set"),
            (json!({"egressBurst": 100}), "if burst is set, rate must also be set"),
            (json!({"egressRate": 100, "egressBurst": 34359738368u64}), "burst cannot be more than 4GB"),
            (json!({"runtimeConfig": {"bandwidth": {"ingressRate": 1}}}), "if rate is set"),
            (json!({"ingressRate": 4, "ingressBurst": 8}), "below the smallest rate"),
            (json!({"unshapedSubnets": ["10.0.0.0/8"], "shapedSubnets": ["10.1.0.0/16"]}), "cannot be both specified"),
            (json!({"shapedSubnets": ["10.0.0.1"]}), "bad subnet \"10.0.0.1\" provided"),
            (json!({"unshapedSubnets": ["nonsense"]}), "bad subnet"),
        ] {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{extra}");
            assert!(e.msg.contains(want), "{extra}: {}", e.msg);
        }
        for bad in [json!({"ingressRate": -1}), json!({"ingressRate": 1.5}), json!({"egressBurst": "8"})] {
            assert_eq!(parse(bad.clone()).unwrap_err().code, Code::Decode, "{bad}");
        }
    }
}
