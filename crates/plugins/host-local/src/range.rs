//! Address ranges and range sets: validation, membership, and the round-robin walk.
//!
//! A range is part of one subnet (`rangeStart`..=`rangeEnd`, both inclusive) with a gateway that is
//! never handed out. A range set is one pool of ranges of one family; each set yields one address.

use cni::Error;
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// An address as a number, so ranges can be walked with plain arithmetic (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address `n` in the family of `like`.
pub fn from_u128(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet, with the network address (no host bits).
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// What a config says about one range, before validation.
#[derive(Debug, Clone, Default)]
pub struct RangeSpec<'a> {
    pub subnet: Option<&'a str>,
    pub range_start: Option<&'a str>,
    pub range_end: Option<&'a str>,
    pub gateway: Option<&'a str>,
}

impl Range {
    /// Validates a range; `field` names it in errors (`ipam.ranges[0][1]`). Defaults follow the
    /// reference: gateway and start at network+1, end at the last address (IPv4: broadcast-1).
    pub fn parse(spec: &RangeSpec, field: &str) -> Result<Range, Error> {
        let bad = |key: &str, why: String| Error::config(format!("{field}.{key}: {why}"));
        let subnet_text = spec.subnet.filter(|s| !s.is_empty()).ok_or_else(|| bad("subnet", "is missing".into()))?;
        let subnet =
            cni::result::parse_cidr(subnet_text).map_err(|_| bad("subnet", format!("invalid CIDR {subnet_text:?}")))?;
        let max_prefix = if subnet.is_ipv4() { 30 } else { 126 };
        if subnet.prefix() > max_prefix {
            return Err(bad("subnet", format!("network {subnet} is too small to allocate from")));
        }
        if subnet.ip() != subnet.network() {
            return Err(bad(
                "subnet",
                format!(
                    "{subnet} has host bits set; for a prefix of {} the network address is {}",
                    subnet.prefix(),
                    subnet.network()
                ),
            ));
        }
        let subnet = IpNetwork::new(subnet.network(), subnet.prefix()).expect("prefix was valid");
        let network = to_u128(subnet.network());
        let first = from_u128(network + 1, subnet.network());

        let address = |key: &str, text: Option<&str>| -> Result<Option<IpAddr>, Error> {
            let Some(text) = text.filter(|t| !t.is_empty()) else {
                return Ok(None);
            };
            let ip: IpAddr = text.parse().map_err(|_| bad(key, format!("invalid IP address {text:?}")))?;
            if !subnet.contains(ip) {
                return Err(bad(key, format!("{ip} is not in network {subnet}")));
            }
            Ok(Some(ip))
        };
        let gateway = address("gateway", spec.gateway)?.unwrap_or(first);
        let start = address("rangeStart", spec.range_start)?.unwrap_or(first);
        let end = match address("rangeEnd", spec.range_end)? {
            Some(end) => end,
            None => {
                let last = to_u128(subnet.broadcast());
                from_u128(if subnet.is_ipv4() { last - 1 } else { last }, first)
            }
        };
        if to_u128(start) > to_u128(end) {
            return Err(bad("rangeStart", format!("{start} is after rangeEnd {end}")));
        }
        Ok(Range { subnet, start, end, gateway })
    }

    pub fn is_ipv4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// Whether `ip` is inside `start..=end`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// Whether `ip` may be handed out: in the range, and not the gateway, the network address or
    /// (IPv4) the broadcast address, even where an explicit range includes them.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        self.contains(ip)
            && ip != self.gateway
            && ip != self.subnet.network()
            && !(self.is_ipv4() && ip == self.subnet.broadcast())
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }

    /// The number of addresses in `start..=end`; one short for the one range of 2^128 addresses
    /// (`::/0` from `::`), a number no `u128` holds.
    fn len(&self) -> u128 {
        (to_u128(self.end) - to_u128(self.start)).saturating_add(1)
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One pool of ranges of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    /// Validates a set: not empty, one family, no overlaps.
    pub fn new(ranges: Vec<Range>, field: &str) -> Result<RangeSet, Error> {
        let Some(first) = ranges.first() else {
            return Err(Error::config(format!("{field}: empty range set")));
        };
        if ranges.iter().any(|r| r.is_ipv4() != first.is_ipv4()) {
            return Err(Error::config(format!("{field}: mixed address families in one range set")));
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.overlaps(b) {
                    return Err(Error::config(format!("{field}: subnets {a} and {b} overlap")));
                }
            }
        }
        Ok(RangeSet(ranges))
    }

    pub fn is_ipv4(&self) -> bool {
        self.0[0].is_ipv4()
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    /// Every allocatable address once, round-robin: starting just after `last` (the last address
    /// handed out from this set) when it is in the set, else at the first range's start; wrapping
    /// across the ranges and back to `last` itself. A crash-looping container therefore does not
    /// get the same address straight back.
    ///
    /// IPv6 ranges may add up to 2^128 addresses; the count then stops one short, leaving the
    /// set's very last address out of the walk.
    pub fn walk(&self, last: Option<IpAddr>) -> impl Iterator<Item = (IpAddr, &Range)> + '_ {
        let total: u128 = self.0.iter().map(Range::len).fold(0, u128::saturating_add);
        let begin = last.and_then(|ip| self.position(ip)).map_or(0, |p| p.saturating_add(1) % total);
        (0..total).map(move |k| self.at((begin + k) % total)).filter(|(ip, r)| r.is_allocatable(*ip))
    }

    /// The linear position of `ip` across the set's ranges.
    fn position(&self, ip: IpAddr) -> Option<u128> {
        let mut before = 0;
        for r in &self.0 {
            if r.contains(ip) {
                return Some(before + (to_u128(ip) - to_u128(r.start)));
            }
            before = before.saturating_add(r.len());
        }
        None
    }

    fn at(&self, mut pos: u128) -> (IpAddr, &Range) {
        for r in &self.0 {
            if pos < r.len() {
                return (from_u128(to_u128(r.start) + pos, r.start), r);
            }
            pos -= r.len();
        }
        unreachable!("position within the set's total length")
    }
}

impl std::fmt::Display for RangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Range::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str, start: Option<&str>, end: Option<&str>, gw: Option<&str>) -> Result<Range, Error> {
        Range::parse(
            &RangeSpec { subnet: Some(subnet), range_start: start, range_end: end, gateway: gw },
            "ipam.ranges[0][0]",
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_follow_the_reference() {
        let r = range("10.1.2.0/24", None, None, None).unwrap();
        assert_eq!((r.start, r.end, r.gateway), (ip("10.1.2.1"), ip("10.1.2.254"), ip("10.1.2.1")));
        let r = range("fd00:1::/120", None, None, None).unwrap();
        assert_eq!((r.start, r.end, r.gateway), (ip("fd00:1::1"), ip("fd00:1::ff"), ip("fd00:1::1")));
    }

    #[test]
    fn invalid_ranges_name_the_field() {
        let cases = [
            (range("10.1.2.0/31", None, None, None), "subnet: network 10.1.2.0/31 is too small"),
            (range("fd00::/127", None, None, None), "subnet: network fd00::/127 is too small"),
            (range("10.1.2.5/24", None, None, None), "subnet: 10.1.2.5/24 has host bits set"),
            (range("10.1.2.0", None, None, None), "subnet: invalid CIDR"),
            (range("10.1.2.0/24", Some("10.1.3.1"), None, None), "rangeStart: 10.1.3.1 is not in network"),
            (range("10.1.2.0/24", None, Some("10.9.9.9"), None), "rangeEnd: 10.9.9.9 is not in network"),
            (range("10.1.2.0/24", None, None, Some("10.1.3.1")), "gateway: 10.1.3.1 is not in network"),
            (range("10.1.2.0/24", None, None, Some("fd00::1")), "gateway: fd00::1 is not in network"),
            (range("10.1.2.0/24", Some("10.1.2.50"), Some("10.1.2.40"), None), "rangeStart: 10.1.2.50 is after"),
            (range("10.1.2.0/24", Some("nope"), None, None), "rangeStart: invalid IP address"),
        ];
        for (result, want) in cases {
            let e = result.unwrap_err();
            assert_eq!(e.code, cni::Code::InvalidConfig);
            assert!(e.msg.starts_with("ipam.ranges[0][0]."), "{}", e.msg);
            assert!(e.msg.contains(want), "{} should contain {want}", e.msg);
        }
        let e = Range::parse(&RangeSpec::default(), "ipam").unwrap_err();
        assert_eq!(e.msg, "ipam.subnet: is missing");
    }

    #[test]
    fn sets_reject_overlap_and_mixed_families() {
        let a = range("10.1.0.0/24", None, None, None).unwrap();
        let b = range("10.1.0.0/25", None, None, None).unwrap();
        let c = range("fd00::/64", None, None, None).unwrap();
        let d = range("10.2.0.0/24", None, None, None).unwrap();
        assert!(RangeSet::new(vec![a.clone(), b], "s").unwrap_err().msg.contains("overlap"));
        assert!(RangeSet::new(vec![a.clone(), c], "s").unwrap_err().msg.contains("mixed"));
        assert!(RangeSet::new(vec![], "s").is_err());
        let set = RangeSet::new(vec![a, d], "s").unwrap();
        assert!(set.contains(ip("10.2.0.9")) && !set.contains(ip("10.3.0.9")));
    }

    #[test]
    fn walk_skips_gateway_network_and_broadcast() {
        let r = range("10.1.2.0/29", Some("10.1.2.0"), Some("10.1.2.7"), Some("10.1.2.3")).unwrap();
        let set = RangeSet::new(vec![r], "s").unwrap();
        let all: Vec<IpAddr> = set.walk(None).map(|(ip, _)| ip).collect();
        let want: Vec<IpAddr> = ["10.1.2.1", "10.1.2.2", "10.1.2.4", "10.1.2.5", "10.1.2.6"].map(ip).to_vec();
        assert_eq!(all, want);
    }

    #[test]
    fn walk_is_round_robin_across_ranges() {
        let a = range("10.1.0.0/29", None, None, None).unwrap(); // .2 .. .6 (gateway .1)
        let b = range("10.2.0.0/30", None, None, None).unwrap(); // .2 (gateway .1)
        let set = RangeSet::new(vec![a, b], "s").unwrap();
        let from =
            |last: Option<&str>| -> Vec<String> { set.walk(last.map(ip)).map(|(ip, _)| ip.to_string()).collect() };
        assert_eq!(from(None), ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.2.0.2"]);
        assert_eq!(from(Some("10.1.0.5")), ["10.1.0.6", "10.2.0.2", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"]);
        assert_eq!(from(Some("10.2.0.2")), ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.2.0.2"]);
        // A last address outside the set (the config changed) starts from the beginning.
        assert_eq!(from(Some("192.168.0.1"))[0], "10.1.0.2");
    }

    #[test]
    fn walk_reports_the_range_of_each_address() {
        let a = range("10.1.0.0/30", None, None, Some("10.1.0.2")).unwrap();
        let b = range("10.2.0.0/30", None, None, None).unwrap();
        let set = RangeSet::new(vec![a, b], "s").unwrap();
        let got: Vec<(String, String)> =
            set.walk(None).map(|(ip, r)| (ip.to_string(), r.gateway.to_string())).collect();
        assert_eq!(got, [("10.1.0.1".into(), "10.1.0.2".into()), ("10.2.0.2".into(), "10.2.0.1".into())]);
    }
}
