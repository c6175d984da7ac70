//! Finding a device's network interface through sysfs, and the device's driver.
//!
//! The root is a parameter so unit tests can lay out a fake tree; the plugin uses `/sys`. A
//! device's `net/` directory lists only the interfaces of the network namespace that mounted
//! sysfs, which for a runtime is the host's.

use crate::config::{HostDeviceConf, Selector};
use anyhow::Context;
use cni::Error;
use std::path::{Path, PathBuf};

/// PCI drivers that hand the device to a userspace (DPDK) process: it has no kernel interface to
/// move, so the plugin only reports it and its IPAM addresses, as the reference does.
pub const USERSPACE_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn system() -> Sysfs {
        Sysfs { root: PathBuf::from("/sys") }
    }

    #[cfg(test)]
    pub fn at(root: &Path) -> Sysfs {
        Sysfs { root: root.to_path_buf() }
    }

    fn pci(&self, id: &str) -> PathBuf {
        self.root.join("bus/pci/devices").join(id)
    }

    fn auxiliary(&self, id: &str) -> PathBuf {
        self.root.join("bus/auxiliary/devices").join(id)
    }

    /// The selector that applies: the first configured of `device`, `hwaddr`, `kernelpath`, then
    /// `runtimeConfig.deviceID` if it names a PCI device (it replaces `pciBusID`), `pciBusID`, and
    /// a `deviceID` on the auxiliary bus. A `deviceID` on neither bus is an error when it would be
    /// used, as in the reference.
    pub fn selector(&self, conf: &HostDeviceConf) -> Result<Selector, Error> {
        if let Some(name) = &conf.device {
            return Ok(Selector::Name(name.clone()));
        }
        if let Some(mac) = &conf.hwaddr {
            return Ok(Selector::HwAddr(mac.clone()));
        }
        if let Some(path) = &conf.kernel_path {
            return Ok(Selector::KernelPath(path.clone()));
        }
        if let Some(id) = &conf.device_id {
            if self.pci(id).exists() {
                return Ok(Selector::Pci(id.clone()));
            }
            if self.auxiliary(id).exists() {
                return Ok(Selector::Auxiliary(id.clone()));
            }
            // The runtime allocated a device we cannot see; another one must not be taken instead.
            return Err(Error::config(format!("runtime config DeviceID {id} not found or unsupported")));
        }
        match &conf.pci_bus_id {
            Some(id) => Ok(Selector::Pci(id.clone())),
            None => unreachable!("HostDeviceConf::parse requires a selector"),
        }
    }

    /// Whether the device a sysfs selector names is on the machine at all (its interface may be in
    /// a container, where this namespace's sysfs does not list it). `None` for `device` and
    /// `hwaddr`.
    pub fn device_exists(&self, selector: &Selector) -> Option<bool> {
        match selector {
            Selector::Name(_) | Selector::HwAddr(_) => None,
            Selector::KernelPath(path) => {
                Some(self.root.join(path.strip_prefix("/sys").expect("checked to be under /sys")).is_dir())
            }
            Selector::Pci(id) => Some(self.pci(id).is_dir()),
            Selector::Auxiliary(id) => Some(self.auxiliary(id).is_dir()),
        }
    }

    /// The PCI address whose driver decides DPDK mode, as the reference picks it: a PCI
    /// `runtimeConfig.deviceID`, else `pciBusID`, whichever selector wins.
    pub fn pci_of_conf(&self, conf: &HostDeviceConf) -> Option<String> {
        match &conf.device_id {
            Some(id) if self.pci(id).exists() => Some(id.clone()),
            Some(id) if self.auxiliary(id).exists() => None,
            _ => conf.pci_bus_id.clone(),
        }
    }

    /// The userspace driver a PCI device is bound to, if it is one of [`USERSPACE_DRIVERS`].
    pub fn userspace_driver(&self, selector: &Selector) -> Option<&'static str> {
        let Selector::Pci(id) = selector else { return None };
        let driver = std::fs::read_link(self.pci(id).join("driver")).ok()?;
        let name = driver.file_name()?.to_str()?;
        USERSPACE_DRIVERS.into_iter().find(|d| *d == name)
    }

    /// The interface name a sysfs selector leads to; `None` for `device` and `hwaddr`, which are
    /// looked up over netlink.
    pub fn interface_name(&self, selector: &Selector) -> anyhow::Result<Option<String>> {
        let net_dir = match selector {
            Selector::Name(_) | Selector::HwAddr(_) => return Ok(None),
            Selector::KernelPath(path) => {
                let relative = path.strip_prefix("/sys").expect("kernelpath is checked to be under /sys/devices");
                self.root.join(relative).join("net")
            }
            Selector::Pci(id) => {
                let device = self.pci(id);
                anyhow::ensure!(device.exists(), "PCI device {id} not found in {}", device.parent().unwrap().display());
                let net = device.join("net");
                if net.symlink_metadata().is_ok() { net } else { first_virtio_net(&device)? }
            }
            Selector::Auxiliary(id) => self.auxiliary(id).join("net"),
        };
        first_entry(&net_dir).map(Some)
    }
}

impl Sysfs {
    /// The PCI address of the device behind a host interface, for the result's `pciID`: the
    /// interface's `device` link leads to a device whose `subsystem` is the PCI bus. A virtio NIC
    /// sits one level below its PCI function.
    pub fn pci_address_of(&self, ifname: &str) -> Option<String> {
        let device = self.root.join("class/net").join(ifname).join("device").canonicalize().ok()?;
        let on = |dir: &Path, bus: &str| {
            std::fs::read_link(dir.join("subsystem")).ok().is_some_and(|s| s.file_name().is_some_and(|n| n == bus))
        };
        // Only a virtio device stands for its PCI function; an auxiliary-bus subfunction does not.
        let pci = if on(&device, "pci") {
            device
        } else if on(&device, "virtio") {
            device.parent().filter(|p| on(p, "pci"))?.to_path_buf()
        } else {
            return None;
        };
        Some(pci.file_name()?.to_str()?.to_string())
    }
}

/// A virtio NIC's interface sits one level down, under `virtioN/net`.
fn first_virtio_net(device: &Path) -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(device)
        .with_context(|| format!("reading {}", device.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        .map(|e| e.path().join("net"))
        .filter(|p| p.is_dir())
        .collect();
    candidates.sort();
    candidates.into_iter().next().with_context(|| format!("no net directory under PCI device {}", device.display()))
}

/// The first interface listed in a `net/` directory, in name order as the reference reads it.
fn first_entry(net_dir: &Path) -> anyhow::Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(net_dir)
        .with_context(|| format!("failed to read directory {}", net_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next().with_context(|| format!("failed to find network device in path {}", net_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A fake sysfs with a NIC bound to a kernel driver, a virtio NIC, a DPDK-bound NIC, a
    /// multi-port device and an auxiliary-bus subfunction.
    fn tree() -> (testkit::TempDir, Sysfs) {
        let dir = testkit::TempDir::new("sysfs");
        let root = dir.path();
        let pci = root.join("bus/pci/devices");
        let mk = |p: PathBuf| fs::create_dir_all(p).unwrap();
        mk(root.join("devices/pci0000:00/0000:00:04.0/net/ens4"));
        mk(root.join("devices/pci0000:00/0000:00:06.0/net/ens6f1"));
        mk(root.join("devices/pci0000:00/0000:00:06.0/net/ens6f0"));
        mk(root.join("devices/pci0000:00/0000:00:05.0/virtio2/net/eth1"));
        mk(root.join("devices/pci0000:00/0000:00:07.0"));
        mk(root.join("devices/pci0000:00/0000:00:08.0/net"));
        mk(root.join("bus/pci/drivers/vfio-pci"));
        mk(root.join("bus/pci/drivers/ixgbe"));
        mk(root.join("bus/auxiliary/devices/mlx5_core.sf.4/net/enp3s0f0s4"));
        mk(pci.clone());
        for id in ["0000:00:04.0", "0000:00:05.0", "0000:00:06.0", "0000:00:07.0", "0000:00:08.0"] {
            symlink(format!("../../../devices/pci0000:00/{id}"), pci.join(id)).unwrap();
        }
        mk(root.join("bus/pci/drivers"));
        mk(root.join("class/net"));
        for id in ["0000:00:04.0", "0000:00:05.0"] {
            symlink("../../../bus/pci", root.join("devices/pci0000:00").join(id).join("subsystem")).unwrap();
        }
        symlink("../../../bus/virtio", root.join("devices/pci0000:00/0000:00:05.0/virtio2/subsystem")).unwrap();
        symlink("../../devices/pci0000:00/0000:00:04.0/net/ens4", root.join("class/net/ens4")).unwrap();
        symlink("../../../0000:00:04.0", root.join("devices/pci0000:00/0000:00:04.0/net/ens4/device")).unwrap();
        symlink("../../devices/pci0000:00/0000:00:05.0/virtio2/net/eth1", root.join("class/net/eth1")).unwrap();
        symlink("../../../virtio2", root.join("devices/pci0000:00/0000:00:05.0/virtio2/net/eth1/device")).unwrap();
        mk(root.join("devices/pci0000:00/0000:00:04.0/mlx5_core.sf.4/net/enp3s0f0s4"));
        symlink("../../../bus/auxiliary", root.join("devices/pci0000:00/0000:00:04.0/mlx5_core.sf.4/subsystem"))
            .unwrap();
        symlink(
            "../../devices/pci0000:00/0000:00:04.0/mlx5_core.sf.4/net/enp3s0f0s4",
            root.join("class/net/enp3s0f0s4"),
        )
        .unwrap();
        symlink(
            "../../../mlx5_core.sf.4",
            root.join("devices/pci0000:00/0000:00:04.0/mlx5_core.sf.4/net/enp3s0f0s4/device"),
        )
        .unwrap();
        mk(root.join("devices/virtual/net/veth0"));
        symlink("../../devices/virtual/net/veth0", root.join("class/net/veth0")).unwrap();
        symlink("../../../../bus/pci/drivers/ixgbe", root.join("devices/pci0000:00/0000:00:04.0/driver")).unwrap();
        symlink("../../../../bus/pci/drivers/vfio-pci", root.join("devices/pci0000:00/0000:00:07.0/driver")).unwrap();
        let sysfs = Sysfs::at(root);
        (dir, sysfs)
    }

    fn name_of(sysfs: &Sysfs, s: Selector) -> String {
        sysfs.interface_name(&s).unwrap().unwrap()
    }

    #[test]
    fn each_bus_leads_to_its_interface() {
        let (_d, sysfs) = tree();
        assert_eq!(name_of(&sysfs, Selector::Pci("0000:00:04.0".into())), "ens4");
        assert_eq!(name_of(&sysfs, Selector::Pci("0000:00:05.0".into())), "eth1", "virtio fallback");
        assert_eq!(name_of(&sysfs, Selector::Pci("0000:00:06.0".into())), "ens6f0", "first port by name");
        assert_eq!(name_of(&sysfs, Selector::KernelPath("/sys/devices/pci0000:00/0000:00:04.0".into())), "ens4");
        assert_eq!(name_of(&sysfs, Selector::Auxiliary("mlx5_core.sf.4".into())), "enp3s0f0s4");
        assert_eq!(sysfs.interface_name(&Selector::Name("x".into())).unwrap(), None);
    }

    #[test]
    fn missing_devices_and_empty_net_directories_say_so() {
        let (_d, sysfs) = tree();
        let err = |s: Selector| format!("{:#}", sysfs.interface_name(&s).unwrap_err());
        assert!(err(Selector::Pci("0000:09:00.0".into())).contains("PCI device 0000:09:00.0 not found"));
        assert!(err(Selector::Pci("0000:00:07.0".into())).contains("no net directory under PCI device"));
        assert!(err(Selector::Pci("0000:00:08.0".into())).contains("failed to find network device"));
        assert!(err(Selector::KernelPath("/sys/devices/nope".into())).contains("failed to read directory"));
    }

    #[test]
    fn interfaces_know_their_pci_address() {
        let (_d, sysfs) = tree();
        assert_eq!(sysfs.pci_address_of("ens4").as_deref(), Some("0000:00:04.0"));
        assert_eq!(sysfs.pci_address_of("eth1").as_deref(), Some("0000:00:05.0"), "virtio");
        assert_eq!(sysfs.pci_address_of("veth0"), None, "virtual");
        assert_eq!(sysfs.pci_address_of("enp3s0f0s4"), None, "a subfunction is not its parent PCI function");
        assert_eq!(sysfs.pci_address_of("nope"), None);
    }

    #[test]
    fn userspace_drivers_are_recognised() {
        let (_d, sysfs) = tree();
        assert_eq!(sysfs.userspace_driver(&Selector::Pci("0000:00:07.0".into())), Some("vfio-pci"));
        assert_eq!(sysfs.userspace_driver(&Selector::Pci("0000:00:04.0".into())), None);
        assert_eq!(sysfs.userspace_driver(&Selector::Pci("0000:00:05.0".into())), None, "no driver link");
        assert_eq!(sysfs.userspace_driver(&Selector::Name("ens4".into())), None);
        assert_eq!(sysfs.device_exists(&Selector::Pci("0000:00:07.0".into())), Some(true));
        assert_eq!(sysfs.device_exists(&Selector::Pci("0000:09:00.0".into())), Some(false));
        assert_eq!(sysfs.device_exists(&Selector::Name("ens4".into())), None);
    }

    #[test]
    fn precedence_follows_the_reference() {
        let (_d, sysfs) = tree();
        let full = HostDeviceConf {
            device: Some("ens4".into()),
            hwaddr: Some(vec![0x0a, 0, 0, 0, 0, 1]),
            kernel_path: Some("/sys/devices/pci0000:00/0000:00:04.0".into()),
            pci_bus_id: Some("0000:00:04.0".into()),
            device_id: Some("0000:00:05.0".into()),
        };
        assert_eq!(sysfs.selector(&full).unwrap(), Selector::Name("ens4".into()));
        let c = HostDeviceConf { device: None, ..full.clone() };
        assert_eq!(sysfs.selector(&c).unwrap(), Selector::HwAddr(vec![0x0a, 0, 0, 0, 0, 1]));
        let c = HostDeviceConf { hwaddr: None, ..c };
        assert!(matches!(sysfs.selector(&c).unwrap(), Selector::KernelPath(_)));
        let c = HostDeviceConf { kernel_path: None, ..c };
        assert_eq!(sysfs.selector(&c).unwrap(), Selector::Pci("0000:00:05.0".into()), "PCI deviceID wins");
        let c = HostDeviceConf { device_id: Some("mlx5_core.sf.4".into()), ..c };
        assert_eq!(sysfs.selector(&c).unwrap(), Selector::Auxiliary("mlx5_core.sf.4".into()));
        let c = HostDeviceConf { device_id: None, ..c };
        assert_eq!(sysfs.selector(&c).unwrap(), Selector::Pci("0000:00:04.0".into()));
        let c = HostDeviceConf { device_id: Some("nope".into()), ..c };
        let e = sysfs.selector(&c).unwrap_err();
        assert!(e.msg.contains("DeviceID nope not found"), "{}", e.msg);
        let c = HostDeviceConf { device: Some("ens4".into()), ..c };
        assert_eq!(sysfs.selector(&c).unwrap(), Selector::Name("ens4".into()), "unused deviceID is not looked up");
    }
}
