//! Traffic control over route netlink: the qdiscs, filters and `ifb` devices that rate limiting
//! needs (the bandwidth plugin's shapes, as `tc` would make them, without running `tc`).
//!
//! ```text
//! host veth   root 1:  tbf (rate, buffer, limit)        traffic towards the container
//!             ingress ffff:  u32 match-all prio 1  ──mirred egress redirect──┐
//! ifb         root 1:  tbf                              traffic from the container
//! ```
//!
//! `tbf` has no typed support in netlink-packet-route, so its options are encoded here from the
//! kernel's `struct tc_tbf_qopt`. Rates are bytes per second and buffers are in the kernel's
//! scheduler ticks, as `tc` and the reference plugin send them; [`Tbf::from_bits`] turns a CNI
//! rate and burst (bits) into those units with the reference's own arithmetic, so CHECK compares
//! equal numbers with either implementation's qdiscs.

use crate::netlink::NlError;
use crate::rtnl::Rtnl;
use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL, Nla};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
pub use netlink_packet_route::tc::TcHandle;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute, TcFilterU32Option,
    TcHeader, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

/// `1:`, the handle of the root tbf (the reference's `MakeHandle(1, 0)`).
pub const ROOT_HANDLE: TcHandle = TcHandle { major: 1, minor: 0 };
/// `ffff:`, the ingress qdisc's handle.
pub const INGRESS_HANDLE: TcHandle = TcHandle { major: 0xffff, minor: 0 };
/// The latency the reference gives every tbf (25 ms), which with the rate sets its limit.
pub const LATENCY_MS: f64 = 25.0;

const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const ETH_P_ALL: u16 = 0x0003;

/// A token bucket in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    /// The bucket, in scheduler ticks at `rate`.
    pub buffer: u32,
    /// Bytes that may wait in the queue.
    pub limit: u32,
}

/// Microseconds per scheduler tick, from `/proc/net/psched` as `tc` (and the reference, through
/// its netlink library) read it: 15.625 on kernels since 2.6.31 with high-resolution timers.
pub fn tick_in_usec() -> f64 {
    let text = std::fs::read_to_string("/proc/net/psched").unwrap_or_default();
    let words: Vec<u32> = text.split_whitespace().filter_map(|w| u32::from_str_radix(w, 16).ok()).collect();
    match words[..] {
        [t2us, us2t, clock_res, ..] if us2t != 0 => {
            let clock_factor = f64::from(clock_res) / TIME_UNITS_PER_SEC;
            f64::from(t2us) / f64::from(us2t) * clock_factor
        }
        _ => 15.625,
    }
}

impl Tbf {
    /// The reference's `createTBF`: rate and burst in bits, 25 ms of latency. The conversions
    /// truncate exactly where Go's do, so the numbers match the reference's qdiscs to the unit.
    pub fn from_bits(rate_bits: u64, burst_bits: u64) -> Tbf {
        Tbf::from_bits_with_tick(rate_bits, burst_bits, tick_in_usec())
    }

    pub fn from_bits_with_tick(rate_bits: u64, burst_bits: u64, tick: f64) -> Tbf {
        let rate = rate_bits / 8;
        let burst = (burst_bits / 8) as u32;
        let time = (f64::from(burst) * TIME_UNITS_PER_SEC / rate as f64) as u32;
        let buffer = (f64::from(time) * tick) as u32;
        let latency = TIME_UNITS_PER_SEC * (LATENCY_MS / 1000.0);
        let limit = ((rate as f64 * latency / TIME_UNITS_PER_SEC) as u32).wrapping_add(burst);
        Tbf { rate, buffer, limit }
    }

    /// `struct tc_tbf_qopt`: rate and peak rate (`struct tc_ratespec`, 12 bytes each), limit,
    /// buffer, mtu. A rate of 4 GB/s or more goes in TCA_TBF_RATE64, the 32-bit field saturated.
    fn options(&self) -> Vec<TcOption> {
        let mut qopt = [0u8; 36];
        let rate32 = u32::try_from(self.rate).unwrap_or(u32::MAX);
        qopt[8..12].copy_from_slice(&rate32.to_ne_bytes());
        qopt[24..28].copy_from_slice(&self.limit.to_ne_bytes());
        qopt[28..32].copy_from_slice(&self.buffer.to_ne_bytes());
        let mut options = vec![TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, qopt.to_vec()))];
        if self.rate > u64::from(u32::MAX) {
            options.push(TcOption::Other(DefaultNla::new(TCA_TBF_RATE64, self.rate.to_ne_bytes().to_vec())));
        }
        options
    }

    /// Reads a tbf back from the nested TCA_OPTIONS payload of a dump.
    fn parse(nested: &[u8]) -> Option<Tbf> {
        let mut tbf = None;
        let mut rate64 = None;
        for (kind, value) in nested_attributes(nested) {
            match kind {
                TCA_TBF_PARMS if value.len() >= 36 => {
                    let word = |at: usize| u32::from_ne_bytes(value[at..at + 4].try_into().expect("4 bytes"));
                    tbf = Some(Tbf { rate: u64::from(word(8)), limit: word(24), buffer: word(28) });
                }
                TCA_TBF_RATE64 if value.len() >= 8 => {
                    rate64 = Some(u64::from_ne_bytes(value[..8].try_into().expect("8 bytes")));
                }
                _ => {}
            }
        }
        tbf.map(|t| Tbf { rate: rate64.unwrap_or(t.rate), ..t })
    }
}

/// The attributes of a nested netlink attribute payload, as (type, value).
fn nested_attributes(mut rest: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((kind, &rest[4..len]));
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
    }
    out
}

fn nla_value(nla: &impl Nla) -> Vec<u8> {
    let mut value = vec![0u8; nla.value_len()];
    nla.emit_value(&mut value);
    value
}

/// A qdisc as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub index: u32,
    pub kind: String,
    pub handle: TcHandle,
    pub parent: TcHandle,
    /// Its parameters, when it is a tbf.
    pub tbf: Option<Tbf>,
}

impl Qdisc {
    fn from_message(msg: TcMessage) -> Qdisc {
        let mut qdisc = Qdisc {
            index: u32::try_from(msg.header.index).unwrap_or(0),
            kind: String::new(),
            handle: msg.header.handle,
            parent: msg.header.parent,
            tbf: None,
        };
        let mut options = Vec::new();
        for attr in msg.attributes {
            match attr {
                TcAttribute::Kind(k) => qdisc.kind = k,
                TcAttribute::Options(opts) => options = opts,
                _ => {}
            }
        }
        if qdisc.kind == "tbf" {
            // An unknown kind's options arrive as one opaque attribute holding the nested list.
            qdisc.tbf = options.iter().find_map(|o| match o {
                TcOption::Other(nla) => Tbf::parse(&nla_value(nla)),
                _ => None,
            });
        }
        qdisc
    }

    /// The root qdisc of its link.
    pub fn is_root(&self) -> bool {
        self.parent == TcHandle::ROOT
    }

    pub fn is_ingress(&self) -> bool {
        self.parent == TcHandle::INGRESS
    }
}

/// A filter as read back: where its mirred actions redirect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub kind: String,
    pub priority: u16,
    /// Interface indexes its mirred actions send packets to.
    pub redirects_to: Vec<u32>,
}

fn tc_message(index: u32, parent: TcHandle, handle: TcHandle, info: u32) -> TcMessage {
    let header =
        TcHeader { index: i32::try_from(index).unwrap_or(i32::MAX), handle, parent, info, ..TcHeader::default() };
    TcMessage::from_parts(header, Vec::new())
}

impl Rtnl {
    /// Creates an `ifb` device called `name` with `mtu`, up (fails with EEXIST if the name is
    /// taken).
    pub fn create_ifb(&mut self, name: &str, mtu: u32) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        // Brought up by the creation itself (as `ip link add ... up`): one request fewer.
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if mtu != 0 {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
        self.sock.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Adds a tbf as the root qdisc (handle `1:`) of link `index` (EEXIST if it has one of ours,
    /// and the kernel refuses to replace another root qdisc without NLM_F_REPLACE).
    pub fn add_root_tbf(&mut self, index: u32, tbf: &Tbf) -> Result<(), NlError> {
        let mut msg = tc_message(index, TcHandle::ROOT, ROOT_HANDLE, 0);
        msg.attributes.push(TcAttribute::Kind("tbf".to_string()));
        msg.attributes.push(TcAttribute::Options(tbf.options()));
        self.sock.execute(RouteNetlinkMessage::NewQueueDiscipline(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Adds the ingress qdisc (`ffff:`) to link `index`.
    pub fn add_ingress_qdisc(&mut self, index: u32) -> Result<(), NlError> {
        let mut msg = tc_message(index, TcHandle::INGRESS, INGRESS_HANDLE, 0);
        msg.attributes.push(TcAttribute::Kind("ingress".to_string()));
        self.sock.execute(RouteNetlinkMessage::NewQueueDiscipline(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// On the ingress qdisc of link `index`, a u32 filter (priority 1, every protocol) matching
    /// every packet, with a mirred action that redirects it to the egress of link `target`: the
    /// reference's `CreateEgressQdisc` filter, class id `1:1` included.
    pub fn add_redirect_filter(&mut self, index: u32, target: u32) -> Result<(), NlError> {
        let info = (1u32 << 16) | u32::from(ETH_P_ALL.to_be());
        let mut msg = tc_message(index, INGRESS_HANDLE, TcHandle::UNSPEC, info);
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.nkeys = 1;
        selector.keys = vec![TcU32Key::default()];
        let mut mirror = TcMirror::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = target;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".to_string()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(mirror))]),
        ];
        msg.attributes.push(TcAttribute::Kind("u32".to_string()));
        msg.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::ClassId(TcHandle { major: 1, minor: 1 })),
            TcOption::U32(TcFilterU32Option::Selector(selector)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]));
        self.sock.execute(RouteNetlinkMessage::NewTrafficFilter(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// The qdiscs of link `index` (the kernel's default ones included).
    pub fn qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>, NlError> {
        let replies = self.sock.dump(|| {
            RouteNetlinkMessage::GetQueueDiscipline(tc_message(index, TcHandle::UNSPEC, TcHandle::UNSPEC, 0))
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) => Some(Qdisc::from_message(q)),
                _ => None,
            })
            .filter(|q| q.index == index)
            .collect())
    }

    /// Deletes the qdisc at `parent` of link `index` (with its filters and classes).
    pub fn del_qdisc(&mut self, index: u32, parent: TcHandle) -> Result<(), NlError> {
        self.sock.execute(RouteNetlinkMessage::DelQueueDiscipline(tc_message(index, parent, TcHandle::UNSPEC, 0)), 0)
    }

    /// The filters attached to qdisc `parent` of link `index`.
    pub fn filters(&mut self, index: u32, parent: TcHandle) -> Result<Vec<Filter>, NlError> {
        let replies =
            self.sock.dump(|| RouteNetlinkMessage::GetTrafficFilter(tc_message(index, parent, TcHandle::UNSPEC, 0)))?;
        let mut out: Vec<Filter> = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewTrafficFilter(msg) = reply else { continue };
            if msg.header.index != i32::try_from(index).unwrap_or(-1) {
                continue;
            }
            let priority = (msg.header.info >> 16) as u16;
            let mut filter = Filter { kind: String::new(), priority, redirects_to: Vec::new() };
            for attr in msg.attributes {
                match attr {
                    TcAttribute::Kind(k) => filter.kind = k,
                    TcAttribute::Options(opts) => {
                        for opt in opts {
                            let TcOption::U32(TcFilterU32Option::Action(actions)) = opt else { continue };
                            for action in actions {
                                for a in action.attributes {
                                    let TcActionAttribute::Options(options) = a else { continue };
                                    for o in options {
                                        if let TcActionOption::Mirror(TcActionMirrorOption::Parms(m)) = o {
                                            filter.redirects_to.push(m.ifindex);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            // A u32 filter dumps its root hash table as an entry of its own (no options): one
            // filter per priority is what a caller means.
            match out.iter_mut().find(|f| f.priority == filter.priority && f.kind == filter.kind) {
                Some(existing) => existing.redirects_to.extend(filter.redirects_to),
                None => out.push(filter),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_numbers_match_the_reference() {
        // 8 Mbit/s with a burst of 800 kbit, at the usual tick of 15.625 us.
        let t = Tbf::from_bits_with_tick(8_000_000, 800_000, 15.625);
        assert_eq!(t.rate, 1_000_000);
        // 100000 bytes at 1 MB/s is 100000 us, 1562500 ticks.
        assert_eq!(t.buffer, 1_562_500);
        // 25 ms at 1 MB/s is 25000 bytes, plus the burst.
        assert_eq!(t.limit, 125_000);
    }

    #[test]
    fn tbf_options_round_trip() {
        for rate in [1_000_000u64, 5_000_000_000] {
            let t = Tbf { rate, buffer: 1234, limit: 5678 };
            let mut nested = Vec::new();
            for o in t.options() {
                let value = nla_value(&o);
                let len = 4 + value.len();
                nested.extend_from_slice(&(len as u16).to_ne_bytes());
                nested.extend_from_slice(&o.kind().to_ne_bytes());
                nested.extend_from_slice(&value);
                nested.resize((nested.len() + 3) & !3, 0);
            }
            assert_eq!(Tbf::parse(&nested), Some(t));
        }
    }

    #[test]
    fn subnet_keys_match_the_right_words() {
        let keys = |net: &str, at| -> Vec<(u32, u32, i32)> {
            subnet_keys(net.parse().unwrap(), at).into_iter().map(|k| (k.mask, k.val, k.off)).collect()
        };
        // IPv4: the source address is at offset 12 of the header, the destination at 16.
        assert_eq!(keys("10.99.3.7/16", Match::Source), vec![(0xffff_0000, 0x0a63_0000, 12)]);
        assert_eq!(keys("192.0.2.0/24", Match::Destination), vec![(0xffff_ff00, 0xc000_0200, 16)]);
        // IPv6: source at 8, destination at 24; words beyond the prefix are left out.
        assert_eq!(
            keys("fd98:1:2:3::/64", Match::Destination),
            vec![(0xffff_ffff, 0xfd98_0001, 24), (0xffff_ffff, 0x0002_0003, 28)]
        );
        assert_eq!(keys("fd98::/20", Match::Source), vec![(0xffff_f000, 0xfd98_0000, 8)]);
        // /0: one key that matches everything.
        assert_eq!(keys("0.0.0.0/0", Match::Source), vec![(0, 0, 0)]);
    }

    #[test]
    fn psched_gives_a_tick() {
        let tick = tick_in_usec();
        assert!(tick > 0.0 && tick < 1000.0, "{tick}");
    }
}

/// Which address of a packet a subnet filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Source,
    Destination,
}

/// How one direction is limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Everything through one token bucket.
    Tbf(Tbf),
    /// An htb root (`1:`) with a shaped class (`1:48`, the bucket's rate and buffer) and an
    /// unshaped one (`1:1`, 100 Gbit/s), and u32 filters sending `subnets` to the unshaped class
    /// (`exclude`) or to the shaped one; the rest goes to the other class.
    Htb { tbf: Tbf, subnets: Vec<ipnetwork::IpNetwork>, exclude: bool },
}

/// The shaped and unshaped classes' minor numbers, as the reference's v1.5.0.
pub const SHAPED_CLASS: TcHandle = TcHandle { major: 1, minor: 48 };
pub const UNSHAPED_CLASS: TcHandle = TcHandle { major: 1, minor: 1 };
/// 100 Gbit/s in bytes: "unlimited" for the unshaped class.
const UNCAPPED_RATE: u64 = 12_500_000_000;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// `struct tc_htb_opt` (rate, ceil, buffer, cbuffer, quantum, level, prio) and the 64-bit rates
/// when the 32-bit fields cannot hold them.
fn htb_class_options(rate: u64, buffer: u32) -> Vec<TcOption> {
    let mut opt = [0u8; 44];
    let rate32 = u32::try_from(rate).unwrap_or(u32::MAX);
    opt[8..12].copy_from_slice(&rate32.to_ne_bytes());
    opt[20..24].copy_from_slice(&rate32.to_ne_bytes());
    opt[24..28].copy_from_slice(&buffer.to_ne_bytes());
    opt[28..32].copy_from_slice(&buffer.to_ne_bytes());
    let mut options = vec![TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, opt.to_vec()))];
    if rate > u64::from(u32::MAX) {
        options.push(TcOption::Other(DefaultNla::new(TCA_HTB_RATE64, rate.to_ne_bytes().to_vec())));
        options.push(TcOption::Other(DefaultNla::new(TCA_HTB_CEIL64, rate.to_ne_bytes().to_vec())));
    }
    options
}

/// The u32 keys matching `net` at the source or destination address of an IPv4 or IPv6 header:
/// one 32-bit word per key, words the prefix does not reach left out (none at all for `/0`,
/// which then matches every packet of the family).
fn subnet_keys(net: ipnetwork::IpNetwork, at: Match) -> Vec<TcU32Key> {
    let (bytes, mask, offset): (Vec<u8>, Vec<u8>, i32) = match net {
        ipnetwork::IpNetwork::V4(n) => {
            (n.network().octets().to_vec(), n.mask().octets().to_vec(), if at == Match::Source { 12 } else { 16 })
        }
        ipnetwork::IpNetwork::V6(n) => {
            (n.network().octets().to_vec(), n.mask().octets().to_vec(), if at == Match::Source { 8 } else { 24 })
        }
    };
    let mut keys = Vec::new();
    for (i, (word, mask)) in bytes.chunks(4).zip(mask.chunks(4)).enumerate() {
        let mask = u32::from_be_bytes(mask.try_into().expect("4 bytes"));
        if mask == 0 {
            continue;
        }
        let mut key = TcU32Key::default();
        key.mask = mask;
        key.val = u32::from_be_bytes(word.try_into().expect("4 bytes")) & mask;
        key.off = offset + 4 * i as i32;
        keys.push(key);
    }
    if keys.is_empty() {
        keys.push(TcU32Key::default());
    }
    keys
}

impl Rtnl {
    /// Installs `shape` as the root qdisc of link `index`; htb subnet filters look at the `at`
    /// address of each packet. All or nothing: an htb whose classes or filters fail is removed.
    pub fn add_shape(&mut self, index: u32, shape: &Shape, at: Match) -> Result<(), NlError> {
        let (tbf, subnets, exclude) = match shape {
            Shape::Tbf(tbf) => return self.add_root_tbf(index, tbf),
            Shape::Htb { tbf, subnets, exclude } => (tbf, subnets, *exclude),
        };
        // Packets no filter claims go to the other class.
        self.add_htb(index, if exclude { SHAPED_CLASS } else { UNSHAPED_CLASS })?;
        let filled = self.fill_htb(index, tbf, subnets, exclude, at);
        if filled.is_err() {
            let _ = self.del_qdisc(index, TcHandle::ROOT);
        }
        filled
    }

    /// The htb root qdisc `1:` alone, sending unclassified packets to `default_class`.
    fn add_htb(&mut self, index: u32, default_class: TcHandle) -> Result<(), NlError> {
        // struct tc_htb_glob: version 3, rate2quantum 10, the default class, debug, direct_pkts.
        let mut glob = [0u8; 20];
        glob[0..4].copy_from_slice(&3u32.to_ne_bytes());
        glob[4..8].copy_from_slice(&10u32.to_ne_bytes());
        glob[8..12].copy_from_slice(&u32::from(default_class.minor).to_ne_bytes());
        let mut msg = tc_message(index, TcHandle::ROOT, ROOT_HANDLE, 0);
        msg.attributes.push(TcAttribute::Kind("htb".to_string()));
        msg.attributes.push(TcAttribute::Options(vec![TcOption::Other(DefaultNla::new(TCA_HTB_INIT, glob.to_vec()))]));
        self.sock.execute(RouteNetlinkMessage::NewQueueDiscipline(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// The htb's two classes and its subnet filters.
    fn fill_htb(
        &mut self,
        index: u32,
        tbf: &Tbf,
        subnets: &[ipnetwork::IpNetwork],
        exclude: bool,
        at: Match,
    ) -> Result<(), NlError> {
        let filtered_class = if exclude { UNSHAPED_CLASS } else { SHAPED_CLASS };
        // One millisecond of the uncapped rate as its bucket: it never waits on it.
        let uncapped_buffer = (1000.0 * tick_in_usec()) as u32;
        for (class, rate, buffer) in
            [(SHAPED_CLASS, tbf.rate, tbf.buffer), (UNSHAPED_CLASS, UNCAPPED_RATE, uncapped_buffer)]
        {
            let mut msg = tc_message(index, ROOT_HANDLE, class, 0);
            msg.attributes.push(TcAttribute::Kind("htb".to_string()));
            msg.attributes.push(TcAttribute::Options(htb_class_options(rate, buffer)));
            self.sock.execute(RouteNetlinkMessage::NewTrafficClass(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        }
        for net in subnets {
            // u32 filters of different protocols cannot share a priority.
            let (protocol, priority) = if net.is_ipv4() { (ETH_P_IP, 16u32) } else { (ETH_P_IPV6, 15) };
            let keys = subnet_keys(*net, at);
            let mut selector = TcU32Selector::default();
            selector.flags = TcU32SelectorFlags::Terminal;
            selector.nkeys = keys.len() as u8;
            selector.keys = keys;
            let info = (priority << 16) | u32::from(protocol.to_be());
            let mut msg = tc_message(index, ROOT_HANDLE, TcHandle::UNSPEC, info);
            msg.attributes.push(TcAttribute::Kind("u32".to_string()));
            msg.attributes.push(TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::ClassId(filtered_class)),
                TcOption::U32(TcFilterU32Option::Selector(selector)),
            ]));
            self.sock.execute(RouteNetlinkMessage::NewTrafficFilter(msg), NLM_F_CREATE)?;
        }
        Ok(())
    }

    /// The rate (bytes per second) of htb class `class` of link `index`, if it exists.
    pub fn htb_class_rate(&mut self, index: u32, class: TcHandle) -> Result<Option<u64>, NlError> {
        let replies = self
            .sock
            .dump(|| RouteNetlinkMessage::GetTrafficClass(tc_message(index, TcHandle::UNSPEC, TcHandle::UNSPEC, 0)))?;
        for reply in replies {
            let RouteNetlinkMessage::NewTrafficClass(msg) = reply else { continue };
            if msg.header.index != i32::try_from(index).unwrap_or(-1) || msg.header.handle != class {
                continue;
            }
            let mut rate = None;
            for attr in msg.attributes {
                let TcAttribute::Options(opts) = attr else { continue };
                for opt in opts {
                    let TcOption::Other(nla) = opt else { continue };
                    for (kind, value) in nested_attributes(&nla_value(&nla)) {
                        match kind {
                            TCA_HTB_PARMS if value.len() >= 12 && rate.is_none() => {
                                rate = Some(u64::from(u32::from_ne_bytes(value[8..12].try_into().expect("4 bytes"))));
                            }
                            TCA_HTB_RATE64 if value.len() >= 8 => {
                                rate = Some(u64::from_ne_bytes(value[..8].try_into().expect("8 bytes")));
                            }
                            _ => {}
                        }
                    }
                }
            }
            return Ok(rate);
        }
        Ok(None)
    }

    /// Whether link `index` is shaped as `want` (CHECK). A tbf's buffer is compared as the kernel
    /// keeps it: in nanoseconds capped to 32 bits, so a burst of more than about 4.3 s at the rate
    /// reads back smaller than it was asked (the reference's CHECK fails there).
    pub fn check_shape(&mut self, index: u32, want: &Shape) -> anyhow::Result<()> {
        let qdiscs = self.qdiscs(index)?;
        let root = qdiscs
            .iter()
            .find(|q| q.is_root() && q.handle == ROOT_HANDLE)
            .ok_or_else(|| anyhow::anyhow!("Failed to find qdisc"))?;
        match want {
            Shape::Tbf(tbf) => {
                anyhow::ensure!(root.kind == "tbf", "the root qdisc is {}, not tbf", root.kind);
                let got = root.tbf.ok_or_else(|| anyhow::anyhow!("the tbf qdisc has no parameters"))?;
                let buffer = ((u64::from(tbf.buffer) << 6).min(u64::from(u32::MAX)) >> 6) as u32;
                anyhow::ensure!(got.rate == tbf.rate, "Rate doesn't match");
                anyhow::ensure!(got.limit == tbf.limit, "Limit doesn't match");
                anyhow::ensure!(got.buffer == buffer, "Buffer doesn't match");
            }
            Shape::Htb { tbf, .. } => {
                anyhow::ensure!(root.kind == "htb", "the root qdisc is {}, not htb", root.kind);
                let rate = self.htb_class_rate(index, SHAPED_CLASS)?;
                anyhow::ensure!(rate == Some(tbf.rate), "Rate doesn't match");
            }
        }
        Ok(())
    }
}
