//! The host-device configuration: which host interface to take, named one of five ways.

use cni::{Error, Request};
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};

/// How the configuration names the host interface. When several keys are set, the first in this
/// order wins, as in the reference: `device`, `hwaddr`, `kernelpath`, `pciBusID`, and the
/// runtime's `deviceID` (which, naming a PCI device, replaces `pciBusID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `device`: the interface's name in the host namespace.
    Name(String),
    /// `hwaddr`: its hardware address (6 bytes for Ethernet, 20 for InfiniBand...).
    HwAddr(Vec<u8>),
    /// `kernelpath`: a device directory under `/sys/devices/`; its `net/` holds the interface.
    KernelPath(PathBuf),
    /// `pciBusID`, or a PCI `runtimeConfig.deviceID`: a device on `/sys/bus/pci/devices`.
    Pci(String),
    /// An auxiliary-bus `runtimeConfig.deviceID` (`/sys/bus/auxiliary/devices`).
    Auxiliary(String),
}

/// The selectors as configured. Which one applies is decided by [`crate::sysfs::Sysfs::selector`],
/// since a `runtimeConfig.deviceID` can only be told apart (PCI or auxiliary bus) by looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDeviceConf {
    pub device: Option<String>,
    pub hwaddr: Option<Vec<u8>>,
    pub kernel_path: Option<PathBuf>,
    pub pci_bus_id: Option<String>,
    pub device_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    hwaddr: Option<String>,
    #[serde(default)]
    kernelpath: Option<String>,
    #[serde(rename = "pciBusID", default)]
    pci_bus_id: Option<String>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntimeConfig>,
}

#[derive(Deserialize, Default)]
struct RawRuntimeConfig {
    #[serde(rename = "deviceID", default)]
    device_id: Option<String>,
}

/// Parses a hardware address as Go's `net.ParseMAC` does: 6, 8 or 20 bytes of two hex digits
/// separated by `:` or `-`, or groups of four hex digits separated by `.`.
pub fn parse_hwaddr(text: &str) -> Option<Vec<u8>> {
    let bytes: Option<Vec<u8>> = if text.contains('.') {
        let groups: Vec<&str> = text.split('.').collect();
        if groups.iter().any(|g| g.len() != 4 || !g.is_ascii()) {
            return None;
        }
        groups
            .iter()
            .flat_map(|g| [&g[..2], &g[2..]])
            .map(|h| u8::from_str_radix(h, 16).ok().filter(|_| h.bytes().all(|b| b.is_ascii_hexdigit())))
            .collect()
    } else {
        let sep = if text.contains('-') { '-' } else { ':' };
        text.split(sep)
            .map(|h| {
                (h.len() == 2 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u8::from_str_radix(h, 16).ok())?
            })
            .collect()
    };
    bytes.filter(|b| matches!(b.len(), 6 | 8 | 20))
}

/// A bus ID (`0000:03:00.1`, `mlx5_core.sf.4`) becomes one path component under a sysfs bus
/// directory, so it must not be able to climb out of it.
fn check_bus_id(id: &str, key: &str) -> Result<(), Error> {
    if id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err(Error::config(format!("{key}: {id:?} is not a device ID")));
    }
    Ok(())
}

/// `kernelpath` must name a directory under `/sys/devices/` without climbing out of it.
fn check_kernel_path(path: &str) -> Result<PathBuf, Error> {
    let p = Path::new(path);
    let inside = p.is_absolute()
        && p.starts_with("/sys/devices")
        && path.starts_with("/sys/devices/")
        && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !inside {
        return Err(Error::config(format!(
            "kernel device path {path:?} must be absolute and begin with /sys/devices/"
        )));
    }
    Ok(p.to_path_buf())
}

impl HostDeviceConf {
    /// The configuration for ADD, CHECK, STATUS and GC: every selector value must be valid, and at
    /// least one must be given.
    pub fn parse(req: &Request) -> Result<HostDeviceConf, Error> {
        let conf = HostDeviceConf::read(req, true)?;
        if conf.device.is_none()
            && conf.hwaddr.is_none()
            && conf.kernel_path.is_none()
            && conf.pci_bus_id.is_none()
            && conf.device_id.is_none()
        {
            return Err(Error::config(r#"specify either "device", "hwaddr", "kernelpath" or "pciBusID""#));
        }
        Ok(conf)
    }

    /// The configuration for DEL, which must release what ADD took even when the selectors are
    /// wrong (DEL follows a failed ADD too): invalid selector values are left out, not errors.
    pub fn parse_for_teardown(req: &Request) -> Result<HostDeviceConf, Error> {
        HostDeviceConf::read(req, false)
    }

    fn read(req: &Request, strict: bool) -> Result<HostDeviceConf, Error> {
        let raw: Raw = req.config.decode()?;
        // A bad value is an error when strict, and left out otherwise.
        fn keep<T>(value: Option<Result<T, Error>>, strict: bool) -> Result<Option<T>, Error> {
            match value {
                Some(Err(e)) if strict => Err(e),
                Some(Err(_)) | None => Ok(None),
                Some(Ok(v)) => Ok(Some(v)),
            }
        }
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let device = nonempty(raw.device).map(|name| {
            cni::env::validate_ifname(&name).map(|()| name).map_err(|e| Error::config(format!("device: {}", e.msg)))
        });
        let hwaddr = nonempty(raw.hwaddr).map(|text| {
            parse_hwaddr(&text).ok_or_else(|| Error::config(format!("failed to parse MAC address {text:?}")))
        });
        let kernel_path = nonempty(raw.kernelpath).map(|p| check_kernel_path(&p));
        let pci_bus_id = nonempty(raw.pci_bus_id).map(|id| check_bus_id(&id, "pciBusID").map(|()| id));
        let device_id = nonempty(raw.runtime_config.and_then(|r| r.device_id))
            .map(|id| check_bus_id(&id, "runtimeConfig.deviceID").map(|()| id));
        Ok(HostDeviceConf {
            device: keep(device, strict)?,
            hwaddr: keep(hwaddr, strict)?,
            kernel_path: keep(kernel_path, strict)?,
            pci_bus_id: keep(pci_bus_id, strict)?,
            device_id: keep(device_id, strict)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Code, Command};
    use serde_json::{Value, json};

    fn parse(extra: Value) -> Result<HostDeviceConf, Error> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "host-device"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        HostDeviceConf::parse(&testkit::request(Command::Add, &conf, ""))
    }

    #[test]
    fn every_selector_is_read() {
        let c = parse(json!({
            "device": "ens4", "hwaddr": "0A:00:00:00:00:01", "kernelpath": "/sys/devices/pci0000:00/0000:00:04.0",
            "pciBusID": "0000:00:04.0", "runtimeConfig": {"deviceID": "0000:00:05.0"}
        }))
        .unwrap();
        assert_eq!(c.device.as_deref(), Some("ens4"));
        assert_eq!(c.hwaddr, Some(vec![0x0a, 0, 0, 0, 0, 1]));
        assert_eq!(c.kernel_path, Some(PathBuf::from("/sys/devices/pci0000:00/0000:00:04.0")));
        assert_eq!(c.pci_bus_id.as_deref(), Some("0000:00:04.0"));
        assert_eq!(c.device_id.as_deref(), Some("0000:00:05.0"));
    }

    #[test]
    fn hardware_addresses_parse_as_go_does() {
        assert_eq!(parse_hwaddr("0a-00-00-00-00-ff"), Some(vec![0x0a, 0, 0, 0, 0, 0xff]));
        assert_eq!(parse_hwaddr("0a00.0000.00ff"), Some(vec![0x0a, 0, 0, 0, 0, 0xff]));
        assert_eq!(parse_hwaddr("00:00:00:00:fe:80:00:00").map(|b| b.len()), Some(8));
        let infiniband = "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01";
        assert_eq!(parse_hwaddr(infiniband).map(|b| b.len()), Some(20));
        for bad in
            ["", "0a:00:00:00:00", "0a:00:00:00:00:0g", "0a:0:00:00:00:00", "0a:00:00:00:00:00:00", "+a:00:00:00:00:00"]
        {
            assert_eq!(parse_hwaddr(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_selectors_are_config_errors() {
        let cases = [
            (json!({}), "specify either"),
            (json!({"device": ""}), "specify either"),
            (json!({"device": "a/b"}), "device: "),
            (json!({"device": "0123456789abcdefg"}), "device: "),
            (json!({"hwaddr": "nope"}), "failed to parse MAC"),
            (json!({"kernelpath": "sys/devices/x"}), "must be absolute"),
            (json!({"kernelpath": "/sys/class/net/eth0"}), "must be absolute"),
            (json!({"kernelpath": "/sys/devices"}), "must be absolute"),
            (json!({"kernelpath": "/sys/devices/../../etc"}), "must be absolute"),
            (json!({"kernelpath": "/sys/devicesX/pci"}), "must be absolute"),
            (json!({"pciBusID": "../../../etc"}), "pciBusID"),
            (json!({"pciBusID": ".."}), "pciBusID"),
            (json!({"runtimeConfig": {"deviceID": "a/b"}}), "runtimeConfig.deviceID"),
        ];
        for (extra, want) in cases {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{extra}");
            assert!(e.msg.contains(want), "{extra}: {} should contain {want}", e.msg);
        }
        assert_eq!(parse(json!({"device": 3})).unwrap_err().code, Code::Decode);
    }

    #[test]
    fn teardown_leaves_bad_selectors_out() {
        let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "host-device",
                          "device": "ens4", "hwaddr": "nope", "kernelpath": "/etc"});
        let mut req = testkit::request(Command::Del, &conf, "");
        req.env.netns = String::new();
        let c = HostDeviceConf::parse_for_teardown(&req).unwrap();
        assert_eq!((c.device.as_deref(), c.hwaddr, c.kernel_path), (Some("ens4"), None, None));
        assert!(HostDeviceConf::parse(&req).is_err());
    }
}
