//! Keys that several plugins creating the container's link read the same way: the `mac` a
//! runtime asks for (macvlan, tap) and the `mtu` of a link made on a master (ipvlan, vlan).
//! Checked before anything changes; what needs the kernel (the master's own MTU) is checked where
//! the master is found (`netkit::sublink::find_master`).

use crate::args::CniArgs;
use crate::error::Error;

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), as Go's `net.ParseMAC` does for 6-byte addresses.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

/// The MAC the container's interface is to have: the config's `mac`, overridden by `CNI_ARGS`
/// `MAC` (from `args`), overridden by `runtimeConfig.mac` (the reference's order; an empty value
/// overrides nothing). `None` when none is given. Code 7 for text that is no MAC, or a multicast
/// one (the kernel refuses it as a link's address, too late to say which key was wrong).
pub fn requested_mac(
    config_mac: String,
    args: &CniArgs,
    runtime_mac: Option<String>,
) -> Result<Option<[u8; 6]>, Error> {
    let mut mac = config_mac;
    if let Some(m) = args.get("MAC").filter(|m| !m.is_empty()) {
        mac = m.to_string();
    }
    if let Some(m) = runtime_mac.filter(|m| !m.is_empty()) {
        mac = m;
    }
    if mac.is_empty() {
        return Ok(None);
    }
    let bytes = parse_mac(&mac)
        .ok_or_else(|| Error::config(format!("invalid args {mac} for MAC addr: address {mac}: invalid MAC address")))?;
    if bytes[0] & 1 == 1 {
        return Err(Error::config(format!(
            "invalid args {mac} for MAC addr: a multicast address cannot be an interface's address"
        )));
    }
    Ok(Some(bytes))
}

/// The config's `mtu` for a link made on a master: 0 (or absent) is the master's, else 1 to
/// 65535. That it is at most the master's MTU is checked once the master is found.
pub fn mtu_on_master(mtu: i64) -> Result<Option<u32>, Error> {
    match mtu {
        0 => Ok(None),
        m @ 1..=65535 => Ok(Some(m as u32)),
        m => Err(Error::config(format!("invalid MTU {m}, must be [0, master MTU]"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn macs_parse() {
        assert_eq!(parse_mac("0A:58:0a:01:00:05"), Some([0x0a, 0x58, 0x0a, 0x01, 0x00, 0x05]));
        assert_eq!(parse_mac("0a-58-0a-01-00-05"), Some([0x0a, 0x58, 0x0a, 0x01, 0x00, 0x05]));
        for bad in ["", "0a:58:0a:01:00", "0a:58:0a:01:00:05:06", "0a:58:0a:01:00:5", "zz:58:0a:01:00:05"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn mac_precedence_config_then_args_then_runtime() {
        let mac = |config: &str, args: &str, runtime: Option<&str>| {
            let args = CniArgs::parse(args).unwrap();
            requested_mac(config.into(), &args, runtime.map(String::from)).unwrap().map(|m| m[5])
        };
        assert_eq!(mac("", "", None), None);
        assert_eq!(mac("0a:00:00:00:00:01", "", None), Some(1));
        assert_eq!(mac("0a:00:00:00:00:01", "MAC=0a:00:00:00:00:02", None), Some(2));
        assert_eq!(mac("0a:00:00:00:00:01", "MAC=0a:00:00:00:00:02", Some("0a:00:00:00:00:03")), Some(3));
        assert_eq!(mac("0a:00:00:00:00:01", "MAC=", Some("")), Some(1), "empty values override nothing");
    }

    #[test]
    fn bad_macs_are_config_errors() {
        for (text, want) in [
            ("zz", "invalid args zz for MAC addr: address zz: invalid MAC address"),
            ("01:00:5e:00:00:01", "invalid args 01:00:5e:00:00:01 for MAC addr: a multicast address"),
        ] {
            let e = requested_mac(text.into(), &CniArgs::default(), None).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{text}");
            assert!(e.msg.starts_with(want), "{text}: {}", e.msg);
        }
    }

    #[test]
    fn mtu_on_a_master() {
        assert_eq!(mtu_on_master(0).unwrap(), None);
        assert_eq!(mtu_on_master(1).unwrap(), Some(1));
        assert_eq!(mtu_on_master(65535).unwrap(), Some(65535));
        for bad in [-1, 65536] {
            let e = mtu_on_master(bad).unwrap_err();
            assert_eq!((e.code, e.msg), (Code::InvalidConfig, format!("invalid MTU {bad}, must be [0, master MTU]")));
        }
    }
}
