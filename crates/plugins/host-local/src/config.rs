//! host-local's configuration: the `ipam` object, the runtime's `ipRanges` and `ips`, and
//! requested addresses from `CNI_ARGS` and `args`, merged and validated as the reference does.

use crate::range::{Range, RangeSet, RangeSpec};
use cni::{Code, Error, Request};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The most ranges a config may name, over all range sets (`runtimeConfig.ipRanges`, the legacy
/// range and `ipam.ranges`). Real configs name one or two per family; validation compares every
/// pair and allocation walks the ranges, so 100,000 of them (2.5 MB of JSON) would take minutes.
pub const MAX_RANGES: usize = 1024;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub network: String,
    pub data_dir: PathBuf,
    /// Runtime `ipRanges` first, then the legacy top-level range, then `ranges`: the order (and so
    /// the index of each set in `last_reserved_ip.<index>`) of the reference.
    pub sets: Vec<RangeSet>,
    pub routes: Vec<cni::Route>,
    pub resolv_conf: Option<PathBuf>,
    /// Addresses asked for by `CNI_ARGS IP=`, `args.cni.ips` and `runtimeConfig.ips`.
    pub requested: Vec<IpAddr>,
}

#[derive(Deserialize, Default)]
struct RawNet {
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntime>,
    #[serde(default)]
    args: Option<RawArgs>,
}

#[derive(Deserialize, Default)]
struct RawIpam {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    ranges: Option<Vec<Vec<RawRange>>>,
    #[serde(default)]
    routes: Option<Vec<cni::Route>>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(rename = "resolvConf", default)]
    resolv_conf: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawRange {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

impl RawRange {
    fn spec(&self) -> RangeSpec<'_> {
        RangeSpec {
            subnet: self.subnet.as_deref(),
            range_start: self.range_start.as_deref(),
            range_end: self.range_end.as_deref(),
            gateway: self.gateway.as_deref(),
        }
    }
}

#[derive(Deserialize, Default)]
struct RawRuntime {
    #[serde(rename = "ipRanges", default)]
    ip_ranges: Option<Vec<Vec<RawRange>>>,
    #[serde(default)]
    ips: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawCniArgs>,
}

#[derive(Deserialize, Default)]
struct RawCniArgs {
    #[serde(default)]
    ips: Option<Vec<String>>,
}

/// Parses a requested address; `10.1.0.5` and `10.1.0.5/24` both ask for 10.1.0.5.
fn requested_ip(text: &str, field: &str) -> Result<IpAddr, Error> {
    let ip = text.split_once('/').map_or(text, |(ip, _)| ip);
    ip.parse().map_err(|_| Error::config(format!("{field}: invalid IP address {text:?}")))
}

fn parse_sets(raw: &[Vec<RawRange>], field: &str) -> Result<Vec<RangeSet>, Error> {
    raw.iter()
        .enumerate()
        .map(|(i, set)| {
            let ranges = set
                .iter()
                .enumerate()
                .map(|(j, r)| Range::parse(&r.spec(), &format!("{field}[{i}][{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            RangeSet::new(ranges, &format!("{field}[{i}]"))
        })
        .collect()
}

impl IpamConfig {
    /// Reads everything DEL needs: where the store is. Ranges are not looked at, so a DEL works
    /// even when the ranges in the config have become invalid.
    pub fn store_location(req: &Request) -> Result<(String, PathBuf), Error> {
        let raw: RawNet = req.config.decode()?;
        let ipam = raw.ipam.ok_or_else(|| Error::config("IPAM config missing 'ipam' key"))?;
        Ok((req.config.name.clone(), data_dir(ipam.data_dir.as_deref())?))
    }

    pub fn parse(req: &Request) -> Result<IpamConfig, Error> {
        let raw: RawNet = req.config.decode()?;
        let ipam = raw.ipam.ok_or_else(|| Error::config("IPAM config missing 'ipam' key"))?;
        let runtime = raw.runtime_config.unwrap_or_default();
        let count = |sets: &Option<Vec<Vec<RawRange>>>| sets.iter().flatten().map(Vec::len).sum::<usize>();
        let legacy_range = usize::from(ipam.subnet.as_deref().is_some_and(|s| !s.is_empty()));
        let ranges = count(&runtime.ip_ranges) + count(&ipam.ranges) + legacy_range;
        if ranges > MAX_RANGES {
            return Err(Error::config(format!(
                "ipam: {ranges} ranges in all (ipam.ranges, ipam.subnet and runtimeConfig.ipRanges); at most {MAX_RANGES} are allowed"
            )));
        }

        let mut sets = parse_sets(runtime.ip_ranges.as_deref().unwrap_or_default(), "runtimeConfig.ipRanges")?;
        if ipam.subnet.as_deref().is_some_and(|s| !s.is_empty()) {
            let legacy = RangeSpec {
                subnet: ipam.subnet.as_deref(),
                range_start: ipam.range_start.as_deref(),
                range_end: ipam.range_end.as_deref(),
                gateway: ipam.gateway.as_deref(),
            };
            sets.push(RangeSet::new(vec![Range::parse(&legacy, "ipam")?], "ipam")?);
        }
        sets.extend(parse_sets(ipam.ranges.as_deref().unwrap_or_default(), "ipam.ranges")?);
        if sets.is_empty() {
            return Err(Error::config("no IP ranges specified: set ipam.ranges or ipam.subnet"));
        }
        for (i, a) in sets.iter().enumerate() {
            for (j, b) in sets.iter().enumerate().skip(i + 1) {
                if a.overlaps(b) {
                    return Err(Error::config(format!("range set {i} overlaps with range set {j}")));
                }
            }
        }
        let v4 = sets.iter().filter(|s| s.is_ipv4()).count();
        if (v4 > 1 || sets.len() - v4 > 1) && !cni::version::at_least(&req.config.cni_version, "0.3.0") {
            return Err(Error::new(
                Code::IncompatibleVersion,
                format!("CNI version {} does not support more than 1 address per family", req.config.cni_version),
            ));
        }

        let mut requested = Vec::new();
        if let Some(ips) = req.args.get("IP").filter(|v| !v.is_empty()) {
            for ip in ips.split(',') {
                requested.push(requested_ip(ip.trim(), "CNI_ARGS IP")?);
            }
        }
        for ip in raw.args.and_then(|a| a.cni).and_then(|c| c.ips).unwrap_or_default() {
            requested.push(requested_ip(&ip, "args.cni.ips")?);
        }
        for ip in runtime.ips.unwrap_or_default() {
            requested.push(requested_ip(&ip, "runtimeConfig.ips")?);
        }

        let resolv_conf = ipam.resolv_conf.filter(|p| !p.is_empty()).map(PathBuf::from);
        Ok(IpamConfig {
            network: req.config.name.clone(),
            data_dir: data_dir(ipam.data_dir.as_deref())?,
            sets,
            routes: ipam.routes.unwrap_or_default(),
            resolv_conf,
            requested,
        })
    }
}

/// `dataDir`, which must be absolute: a relative one would depend on the runtime's working
/// directory and silently split the store. Nor may it climb with `..` (the reference accepts any
/// path): `/var/lib/cni/../../etc` names a directory other than the one it appears to, and
/// nothing legitimate needs that. `dataDir` itself is the administrator's choice and may be or
/// contain a symlink; the store under it is checked by [`crate::store::Store::open`].
fn data_dir(configured: Option<&str>) -> Result<PathBuf, Error> {
    let Some(dir) = configured.filter(|d| !d.is_empty()) else { return Ok(PathBuf::from(DEFAULT_DATA_DIR)) };
    if !dir.starts_with('/') {
        return Err(Error::config(format!("ipam.dataDir: {dir:?} is not an absolute path")));
    }
    if dir.split('/').any(|part| part == "..") {
        return Err(Error::config(format!("ipam.dataDir: {dir:?} contains \"..\"")));
    }
    if dir.contains('\0') {
        return Err(Error::config(format!("ipam.dataDir: {dir:?} contains a NUL byte")));
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::Command;
    use serde_json::{Value, json};

    fn req(conf: Value, cni_args: &str) -> Request {
        testkit::request(Command::Add, &conf, cni_args)
    }

    fn parse(conf: Value) -> Result<IpamConfig, Error> {
        IpamConfig::parse(&req(conf, ""))
    }

    #[test]
    fn sets_are_ordered_runtime_legacy_ranges() {
        let c = parse(json!({
            "cniVersion": "1.0.0", "name": "n", "type": "bridge",
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]},
            "ipam": {
                "type": "host-local", "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10",
                "ranges": [[{"subnet": "10.2.0.0/24"}, {"subnet": "10.3.0.0/24"}], [{"subnet": "fd00::/64"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.1"}],
                "dataDir": "/run/ipam", "resolvConf": "/etc/resolv.conf"
            }
        }))
        .unwrap();
        let firsts: Vec<String> = c.sets.iter().map(|s| s.0[0].subnet.to_string()).collect();
        assert_eq!(firsts, ["10.9.0.0/24", "10.1.0.0/24", "10.2.0.0/24", "fd00::/64"]);
        assert_eq!(c.sets[1].0[0].start.to_string(), "10.1.0.10");
        assert_eq!(c.sets[2].0.len(), 2);
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/run/ipam"));
        assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/resolv.conf")));
    }

    #[test]
    fn requested_addresses_come_from_all_three_places() {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "n", "type": "host-local",
            "args": {"cni": {"ips": ["10.1.0.7/24"]}},
            "runtimeConfig": {"ips": ["fd00::7"]},
            "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]}
        });
        let c = IpamConfig::parse(&req(conf, "IgnoreUnknown=1;IP=10.1.0.5,fd00::5")).unwrap();
        let got: Vec<String> = c.requested.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.1.0.5", "fd00::5", "10.1.0.7", "fd00::7"]);
    }

    #[test]
    fn bad_configs_are_rejected_with_the_field_named() {
        let cases = [
            (json!({"name": "n", "type": "x"}), "missing 'ipam'"),
            (json!({"name": "n", "type": "x", "ipam": {}}), "no IP ranges"),
            (json!({"name": "n", "type": "x", "ipam": {"ranges": [[]]}}), "ipam.ranges[0]: empty range set"),
            (
                json!({"name": "n", "type": "x", "ipam": {"ranges": [[{"subnet": "10.1.0.0/16"}], [{"subnet": "10.1.2.0/24"}]]}}),
                "range set 0 overlaps with range set 1",
            ),
            (
                json!({"name": "n", "type": "x", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]]}}),
                "ipam.ranges[0]: subnets",
            ),
            (
                json!({"name": "n", "type": "x", "ipam": {"subnet": "10.1.0.1/24"}}),
                "ipam.subnet: 10.1.0.1/24 has host bits",
            ),
            (
                json!({"name": "n", "type": "x", "ipam": {"subnet": "10.1.0.0/24", "dataDir": "var/lib"}}),
                "ipam.dataDir: \"var/lib\" is not an absolute path",
            ),
            (
                json!({"name": "n", "type": "x", "ipam": {"subnet": "10.1.0.0/24", "dataDir": "/var/lib/../../etc"}}),
                "ipam.dataDir: \"/var/lib/../../etc\" contains \"..\"",
            ),
            (
                json!({"name": "n", "type": "x", "ipam": {"subnet": "10.1.0.0/24", "dataDir": "/var/lib/x\u{0}y"}}),
                "contains a NUL byte",
            ),
            (
                json!({"name": "n", "type": "x", "ipam": {"ranges": vec![vec![json!({"subnet": "10.1.0.0/24"})]; MAX_RANGES + 1]}}),
                "ranges in all",
            ),
            (
                json!({"name": "n", "type": "x", "runtimeConfig": {"ips": ["10.1.0.300"]}, "ipam": {"subnet": "10.1.0.0/24"}}),
                "runtimeConfig.ips: invalid IP address",
            ),
            (
                json!({"name": "n", "type": "x", "runtimeConfig": {"ipRanges": [[{"subnet": "nope"}]]}, "ipam": {}}),
                "runtimeConfig.ipRanges[0][0].subnet: invalid CIDR",
            ),
        ];
        for (conf, want) in cases {
            let e = parse(conf).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{}", e.msg);
            assert!(e.msg.contains(want), "{} should contain {want}", e.msg);
        }
    }

    #[test]
    fn wrong_types_are_decode_errors_naming_the_path() {
        let e = parse(json!({"name": "n", "type": "x", "ipam": {"ranges": [{"subnet": "10.0.0.0/8"}]}})).unwrap_err();
        assert_eq!(e.code, Code::Decode);
        assert!(e.msg.starts_with("ipam.ranges[0]: invalid type"), "{}", e.msg);
    }

    #[test]
    fn old_versions_allow_one_address_per_family() {
        let two_v4 = json!({"cniVersion": "0.2.0", "name": "n", "type": "x",
            "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}});
        assert_eq!(parse(two_v4).unwrap_err().code, Code::IncompatibleVersion);
        let dual = json!({"cniVersion": "0.2.0", "name": "n", "type": "x",
            "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]}});
        assert!(parse(dual).is_ok());
    }

    #[test]
    fn keys_match_like_go() {
        let c = parse(json!({"name": "n", "type": "x",
            "IPAM": {"Ranges": [[{"Subnet": "10.1.0.0/24", "RangeStart": "10.1.0.100"}]], "DataDir": "/x"}}))
        .unwrap();
        assert_eq!(c.sets[0].0[0].start.to_string(), "10.1.0.100");
        assert_eq!(c.data_dir, PathBuf::from("/x"));
    }
}
