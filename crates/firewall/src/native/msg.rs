//! nfnetlink messages and their attributes, byte by byte.

/// Constants from <linux/netfilter/nf_tables.h> and <linux/netfilter/nfnetlink.h>.
pub mod k {
    pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
    pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
    pub const NFNL_MSG_BATCH_END: u16 = 17;

    pub const NFT_MSG_NEWTABLE: u16 = 0;
    pub const NFT_MSG_GETTABLE: u16 = 1;
    pub const NFT_MSG_NEWCHAIN: u16 = 3;
    pub const NFT_MSG_GETCHAIN: u16 = 4;
    pub const NFT_MSG_DELCHAIN: u16 = 5;
    pub const NFT_MSG_NEWRULE: u16 = 6;
    pub const NFT_MSG_GETRULE: u16 = 7;
    pub const NFT_MSG_DELRULE: u16 = 8;
    pub const NFT_MSG_NEWSET: u16 = 9;
    pub const NFT_MSG_GETSET: u16 = 10;
    pub const NFT_MSG_NEWSETELEM: u16 = 12;
    pub const NFT_MSG_GETSETELEM: u16 = 13;
    pub const NFT_MSG_DELSETELEM: u16 = 14;
    pub const NFT_MSG_GETGEN: u16 = 16;

    pub const NFTA_GEN_ID: u16 = 1;

    pub const NFTA_TABLE_NAME: u16 = 1;
    pub const NFTA_TABLE_FLAGS: u16 = 2;
    pub const NFTA_TABLE_HANDLE: u16 = 4;
    pub const NFTA_CHAIN_TABLE: u16 = 1;
    pub const NFTA_CHAIN_HANDLE: u16 = 2;
    pub const NFTA_CHAIN_NAME: u16 = 3;
    pub const NFTA_CHAIN_HOOK: u16 = 4;
    pub const NFTA_CHAIN_POLICY: u16 = 5;
    pub const NFTA_CHAIN_TYPE: u16 = 7;
    pub const NFTA_HOOK_HOOKNUM: u16 = 1;
    pub const NFTA_HOOK_PRIORITY: u16 = 2;
    pub const NFTA_HOOK_DEV: u16 = 3;
    pub const NFTA_RULE_TABLE: u16 = 1;
    pub const NFTA_RULE_CHAIN: u16 = 2;
    pub const NFTA_RULE_HANDLE: u16 = 3;
    pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
    pub const NFTA_RULE_USERDATA: u16 = 7;

    pub const NFTA_SET_TABLE: u16 = 1;
    pub const NFTA_SET_NAME: u16 = 2;
    pub const NFTA_SET_FLAGS: u16 = 3;
    pub const NFTA_SET_KEY_TYPE: u16 = 4;
    pub const NFTA_SET_KEY_LEN: u16 = 5;
    pub const NFTA_SET_DATA_TYPE: u16 = 6;
    pub const NFTA_SET_DATA_LEN: u16 = 7;
    pub const NFTA_SET_DESC: u16 = 9;
    pub const NFTA_SET_ID: u16 = 10;
    pub const NFTA_SET_USERDATA: u16 = 13;
    pub const NFTA_SET_HANDLE: u16 = 16;
    pub const NFTA_SET_DESC_CONCAT: u16 = 2;
    pub const NFTA_SET_FIELD_LEN: u16 = 1;
    pub const NFT_SET_CONSTANT: u32 = 0x2;
    pub const NFT_SET_INTERVAL: u32 = 0x4;
    pub const NFT_SET_MAP: u32 = 0x8;
    pub const NFT_SET_TIMEOUT: u32 = 0x10;
    pub const NFT_SET_CONCAT: u32 = 0x80;
    /// The data type of verdict maps (NFT_DATA_VERDICT).
    pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
    pub const NFTA_LIST_ELEM: u16 = 1;
    pub const NFTA_EXPR_NAME: u16 = 1;
    pub const NFTA_EXPR_DATA: u16 = 2;

    pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
    pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
    pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const NFTA_SET_ELEM_KEY: u16 = 1;
    pub const NFTA_SET_ELEM_DATA: u16 = 2;
    pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
    pub const NFTA_SET_ELEM_USERDATA: u16 = 6;
    pub const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
    pub const NFTA_SET_ELEM_KEY_END: u16 = 10;

    pub const NFTA_DATA_VALUE: u16 = 1;
    pub const NFTA_DATA_VERDICT: u16 = 2;
    pub const NFTA_VERDICT_CODE: u16 = 1;
    pub const NFTA_VERDICT_CHAIN: u16 = 2;

    pub const NF_DROP: i32 = 0;
    pub const NF_ACCEPT: i32 = 1;
    pub const NFT_JUMP: i32 = -3;
    pub const NFT_GOTO: i32 = -4;
    pub const NFT_RETURN: i32 = -5;

    pub const NFTA_CT_DREG: u16 = 1;
    pub const NFTA_CT_KEY: u16 = 2;
    pub const NFT_CT_STATUS: u32 = 2;

    pub const NFTA_FIB_DREG: u16 = 1;
    pub const NFTA_FIB_RESULT: u16 = 2;
    pub const NFTA_FIB_FLAGS: u16 = 3;
    pub const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
    pub const NFTA_FIB_F_SADDR: u32 = 1;
    pub const NFTA_FIB_F_DADDR: u32 = 2;
    pub const NFTA_FIB_F_IIF: u32 = 8;
    pub const NFTA_FIB_F_OIF: u32 = 16;

    pub const NFTA_META_DREG: u16 = 1;
    pub const NFTA_META_KEY: u16 = 2;
    pub const NFT_META_MARK: u32 = 3;
    pub const NFT_META_IIFNAME: u32 = 6;
    pub const NFT_META_OIFNAME: u32 = 7;
    pub const NFT_META_NFPROTO: u32 = 15;
    pub const NFT_META_L4PROTO: u32 = 16;

    pub const NFTA_CMP_SREG: u16 = 1;
    pub const NFTA_CMP_OP: u16 = 2;
    pub const NFTA_CMP_DATA: u16 = 3;
    pub const NFT_CMP_EQ: u32 = 0;
    pub const NFT_CMP_NEQ: u32 = 1;
    pub const NFT_CMP_LT: u32 = 2;
    pub const NFT_CMP_LTE: u32 = 3;
    pub const NFT_CMP_GT: u32 = 4;
    pub const NFT_CMP_GTE: u32 = 5;

    pub const NFTA_PAYLOAD_DREG: u16 = 1;
    pub const NFTA_PAYLOAD_BASE: u16 = 2;
    pub const NFTA_PAYLOAD_OFFSET: u16 = 3;
    pub const NFTA_PAYLOAD_LEN: u16 = 4;
    pub const NFT_PAYLOAD_LL_HEADER: u32 = 0;
    pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
    pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

    pub const NFTA_BITWISE_SREG: u16 = 1;
    pub const NFTA_BITWISE_DREG: u16 = 2;
    pub const NFTA_BITWISE_LEN: u16 = 3;
    pub const NFTA_BITWISE_MASK: u16 = 4;
    pub const NFTA_BITWISE_XOR: u16 = 5;

    pub const NFTA_IMMEDIATE_DREG: u16 = 1;
    pub const NFTA_IMMEDIATE_DATA: u16 = 2;

    pub const NFTA_LOOKUP_SET: u16 = 1;
    pub const NFTA_LOOKUP_SREG: u16 = 2;
    pub const NFTA_LOOKUP_DREG: u16 = 3;
    pub const NFTA_LOOKUP_FLAGS: u16 = 5;
    pub const NFT_LOOKUP_F_INV: u32 = 1;

    pub const NFTA_NAT_TYPE: u16 = 1;
    pub const NFTA_NAT_FAMILY: u16 = 2;
    pub const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
    pub const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
    pub const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
    pub const NFTA_NAT_FLAGS: u16 = 7;
    pub const NFT_NAT_SNAT: u32 = 0;
    pub const NFT_NAT_DNAT: u32 = 1;
    pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;

    pub const NFTA_COUNTER_BYTES: u16 = 1;
    pub const NFTA_COUNTER_PACKETS: u16 = 2;

    pub const NFT_REG_VERDICT: u32 = 0;
    pub const NFT_REG_1: u32 = 1;
    pub const NFT_REG_2: u32 = 2;
    pub const NFT_REG32_00: u32 = 8;

    pub const NFPROTO_INET: u8 = 1;
    pub const NFPROTO_IPV4: u8 = 2;
    pub const NFPROTO_ARP: u8 = 3;
    pub const NFPROTO_NETDEV: u8 = 5;
    pub const NFPROTO_BRIDGE: u8 = 7;
    pub const NFPROTO_IPV6: u8 = 10;

    /// libnftnl's user-data TLV type for a rule's or an element's comment.
    pub const UDATA_COMMENT: u8 = 0;
}

const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_APPEND: u16 = 0x800;
/// On a delete: fail (EBUSY) rather than delete what the object holds.
pub const NLM_F_NONREC: u16 = 0x100;
pub const NLM_F_CREATE: u16 = 0x400;

/// An attribute stream: values are appended, nests are opened and closed around them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Attrs {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Attrs {
    pub fn bytes(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// A NUL-terminated string, as libnftnl sends names.
    pub fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.bytes(kind, &data)
    }

    pub fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    pub fn be64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    pub fn begin(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end() without begin()");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// `kind` nesting one NFTA_DATA_VALUE.
    pub fn value(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        self.begin(kind).bytes(k::NFTA_DATA_VALUE, data).end()
    }

    /// `kind` nesting one NFTA_DATA_VERDICT.
    pub fn verdict(&mut self, kind: u16, code: i32, chain: Option<&str>) -> &mut Self {
        self.begin(kind).begin(k::NFTA_DATA_VERDICT).be32(k::NFTA_VERDICT_CODE, code as u32);
        if let Some(c) = chain {
            self.str(k::NFTA_VERDICT_CHAIN, c);
        }
        self.end().end()
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        assert!(self.open.is_empty(), "unclosed nest");
        self.buf
    }
}

/// One netlink message: header, nfgenmsg and attributes.
pub fn message(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: Vec<u8>) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(&attrs);
    out
}

/// The attributes in `buf`, as (type without the nested/byte-order flags, payload); a truncated
/// attribute ends the walk (the kernel never sends one).
pub fn parse(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let data = &buf[off + 4..off + len];
        off += (len + 3) & !3;
        Some((kind, data))
    })
}

/// The first attribute of type `kind` in `buf`.
pub fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    parse(buf).find(|(k, _)| *k == kind).map(|(_, d)| d)
}

/// A NUL-terminated string attribute.
pub fn get_str(buf: &[u8], kind: u16) -> Option<String> {
    let d = find(buf, kind)?;
    let d = d.split(|b| *b == 0).next().unwrap_or(d);
    Some(String::from_utf8_lossy(d).into_owned())
}

pub fn get_be32(buf: &[u8], kind: u16) -> Option<u32> {
    find(buf, kind).and_then(|d| Some(u32::from_be_bytes(d.get(..4)?.try_into().ok()?)))
}

pub fn get_be64(buf: &[u8], kind: u16) -> Option<u64> {
    find(buf, kind).and_then(|d| Some(u64::from_be_bytes(d.get(..8)?.try_into().ok()?)))
}

/// The comment in libnftnl user data (a TLV list), if there is one.
pub fn udata_comment(udata: &[u8], comment_type: u8) -> Option<String> {
    let mut off = 0;
    while off + 2 <= udata.len() {
        let (kind, len) = (udata[off], udata[off + 1] as usize);
        let value = udata.get(off + 2..off + 2 + len)?;
        if kind == comment_type {
            let text = value.split(|b| *b == 0).next().unwrap_or(value);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        off += 2 + len;
    }
    None
}

/// An nf_tables message type.
pub fn nft_type(msg: u16) -> u16 {
    (k::NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// A comment as libnftnl stores it in user data: one TLV, the text NUL-terminated.
pub fn comment_udata(comment: &str) -> Option<Vec<u8>> {
    let len = comment.len() + 1;
    if len > 255 {
        return None;
    }
    let mut out = vec![k::UDATA_COMMENT, len as u8];
    out.extend_from_slice(comment.as_bytes());
    out.push(0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_measured() {
        let mut a = Attrs::default();
        a.str(1, "ab").begin(2).be32(3, 7).end();
        let b = a.into_bytes();
        // "ab\0" is 7 bytes with its header, padded to 8; the nest is 4 + 8 bytes.
        assert_eq!(&b[..8], &[7, 0, 1, 0, b'a', b'b', 0, 0]);
        assert_eq!(u16::from_ne_bytes([b[8], b[9]]), 12);
        assert_eq!(u16::from_ne_bytes([b[10], b[11]]), 2 | 0x8000);
        assert_eq!(&b[16..20], &[0, 0, 0, 7]);
    }

    #[test]
    fn messages_carry_their_length_and_family() {
        let m = message(nft_type(k::NFT_MSG_NEWTABLE), NLM_F_REQUEST, 9, k::NFPROTO_INET, 0, vec![1, 2, 3, 4]);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), 24);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 10 << 8);
        assert_eq!(m[16], 1);
        assert_eq!(comment_udata("x"), Some(vec![0, 2, b'x', 0]));
    }
}
