//! Wire forms of the ADD result, one per shape, and their mapping to the model.
//!
//! Field presence follows Go's `omitempty` in libcni so our output matches the reference's key for
//! key: empty lists are left out, 1.x leaves out an empty `dns`, 0.4.0 and 0.2.0 always print it.
//! On input, `null` is accepted wherever Go accepts it (a nil slice or string).

use super::{CniResult, Dns, Interface, IpConfig, Route, parse_cidr};
use crate::error::{Code, Error};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::IpAddr;

/// Go decodes `null` into the zero value; serde would reject it for a `Vec` or `String`.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

mod cidr {
    use super::*;
    pub fn serialize<S: Serializer>(n: &IpNetwork, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNetwork, D::Error> {
        let s = String::deserialize(d)?;
        parse_cidr(&s).map_err(serde::de::Error::custom)
    }
}

/// An optional IP where `""` and `null` both mean "none", as for Go's `net.IP`.
mod opt_ip {
    use super::*;
    pub fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("invalid IP address: {s}"))),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
pub(super) struct WireRoute {
    #[serde(with = "cidr")]
    dst: IpNetwork,
    #[serde(with = "opt_ip", default, skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "nullable")]
    mtu: u32,
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "nullable")]
    advmss: u32,
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "nullable")]
    priority: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<u8>,
}

impl From<&Route> for WireRoute {
    fn from(r: &Route) -> Self {
        WireRoute {
            dst: r.dst,
            gw: r.gw,
            mtu: r.mtu,
            advmss: r.advmss,
            priority: r.priority,
            table: r.table,
            scope: r.scope,
        }
    }
}

impl From<WireRoute> for Route {
    fn from(r: WireRoute) -> Self {
        Route {
            dst: r.dst,
            gw: r.gw,
            mtu: r.mtu,
            advmss: r.advmss,
            priority: r.priority,
            table: r.table,
            scope: r.scope,
        }
    }
}

// ---- 1.0.0 / 1.1.0 ----

#[derive(Serialize, Deserialize)]
pub(super) struct V1 {
    #[serde(rename = "cniVersion", default, deserialize_with = "nullable")]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    interfaces: Vec<InterfaceV1>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    ips: Vec<IpV1>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    routes: Vec<WireRoute>,
    #[serde(default, skip_serializing_if = "Dns::is_empty", deserialize_with = "nullable")]
    dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct InterfaceV1 {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty", deserialize_with = "nullable")]
    mac: String,
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "nullable")]
    mtu: u32,
    #[serde(default, skip_serializing_if = "String::is_empty", deserialize_with = "nullable")]
    sandbox: String,
    #[serde(rename = "socketPath", default, skip_serializing_if = "String::is_empty", deserialize_with = "nullable")]
    socket_path: String,
    #[serde(rename = "pciID", default, skip_serializing_if = "String::is_empty", deserialize_with = "nullable")]
    pci_id: String,
}

#[derive(Serialize, Deserialize)]
struct IpV1 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    #[serde(with = "cidr")]
    address: IpNetwork,
    #[serde(with = "opt_ip", default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

impl V1 {
    pub(super) fn from_model(r: &CniResult, cni_version: &str) -> V1 {
        V1 {
            cni_version: cni_version.to_string(),
            interfaces: r
                .interfaces
                .iter()
                .map(|i| InterfaceV1 {
                    name: i.name.clone(),
                    mac: i.mac.clone(),
                    mtu: i.mtu,
                    sandbox: i.sandbox.clone(),
                    socket_path: i.socket_path.clone(),
                    pci_id: i.pci_id.clone(),
                })
                .collect(),
            ips: r
                .ips
                .iter()
                .map(|ip| IpV1 { interface: ip.interface, address: ip.address, gateway: ip.gateway })
                .collect(),
            routes: r.routes.iter().map(WireRoute::from).collect(),
            dns: r.dns.clone(),
        }
    }

    pub(super) fn into_model(self) -> CniResult {
        CniResult {
            interfaces: self
                .interfaces
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    mac: i.mac,
                    mtu: i.mtu,
                    sandbox: i.sandbox,
                    socket_path: i.socket_path,
                    pci_id: i.pci_id,
                })
                .collect(),
            ips: self
                .ips
                .into_iter()
                .map(|ip| IpConfig { address: ip.address, gateway: ip.gateway, interface: ip.interface })
                .collect(),
            routes: self.routes.into_iter().map(Route::from).collect(),
            dns: self.dns,
        }
    }
}

// ---- 0.3.0 / 0.3.1 / 0.4.0 ----

#[derive(Serialize, Deserialize)]
pub(super) struct V04 {
    #[serde(rename = "cniVersion", default, deserialize_with = "nullable")]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    interfaces: Vec<InterfaceV04>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    ips: Vec<IpV04>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    routes: Vec<WireRoute>,
    #[serde(default, deserialize_with = "nullable")]
    dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct InterfaceV04 {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty", deserialize_with = "nullable")]
    mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty", deserialize_with = "nullable")]
    sandbox: String,
}

#[derive(Serialize, Deserialize)]
struct IpV04 {
    #[serde(default, deserialize_with = "nullable")]
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    #[serde(with = "cidr")]
    address: IpNetwork,
    #[serde(with = "opt_ip", default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

impl V04 {
    pub(super) fn from_model(r: &CniResult, cni_version: &str) -> V04 {
        V04 {
            cni_version: cni_version.to_string(),
            interfaces: r
                .interfaces
                .iter()
                .map(|i| InterfaceV04 { name: i.name.clone(), mac: i.mac.clone(), sandbox: i.sandbox.clone() })
                .collect(),
            ips: r
                .ips
                .iter()
                .map(|ip| IpV04 {
                    version: if ip.address.is_ipv4() { "4" } else { "6" }.to_string(),
                    interface: ip.interface,
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: r.routes.iter().map(WireRoute::from).collect(),
            dns: r.dns.clone(),
        }
    }

    pub(super) fn into_model(self) -> CniResult {
        CniResult {
            interfaces: self
                .interfaces
                .into_iter()
                .map(|i| Interface { name: i.name, mac: i.mac, sandbox: i.sandbox, ..Interface::default() })
                .collect(),
            ips: self
                .ips
                .into_iter()
                .map(|ip| IpConfig { address: ip.address, gateway: ip.gateway, interface: ip.interface })
                .collect(),
            routes: self.routes.into_iter().map(Route::from).collect(),
            dns: self.dns,
        }
    }
}

// ---- 0.1.0 / 0.2.0 ----

#[derive(Serialize, Deserialize)]
pub(super) struct V02 {
    #[serde(rename = "cniVersion", default, deserialize_with = "nullable")]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip4: Option<IpV02>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6: Option<IpV02>,
    #[serde(default, deserialize_with = "nullable")]
    dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct IpV02 {
    #[serde(with = "cidr")]
    ip: IpNetwork,
    #[serde(with = "opt_ip", default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    routes: Vec<WireRoute>,
}

impl V02 {
    /// Keeps the first address of each family and the routes of the families that have one, as
    /// libcni's `convertTo02x`; fails when there is no address at all.
    pub(super) fn from_model(r: &CniResult, cni_version: &str) -> Result<V02, Error> {
        let first = |v4: bool| {
            r.ips.iter().find(|ip| ip.address.is_ipv4() == v4).map(|ip| IpV02 {
                ip: ip.address,
                gateway: ip.gateway,
                routes: r
                    .routes
                    .iter()
                    .filter(|rt| rt.dst.is_ipv4() == v4)
                    .map(|rt| WireRoute::from(&Route::new(rt.dst, rt.gw)))
                    .collect(),
            })
        };
        let (ip4, ip6) = (first(true), first(false));
        if ip4.is_none() && ip6.is_none() {
            return Err(Error::new(
                Code::IncompatibleVersion,
                format!("cannot convert result to {cni_version}: no valid IP addresses"),
            ));
        }
        Ok(V02 { cni_version: cni_version.to_string(), ip4, ip6, dns: r.dns.clone() })
    }

    pub(super) fn into_model(self) -> CniResult {
        let mut result = CniResult { dns: self.dns, ..CniResult::default() };
        for ip in [self.ip4, self.ip6].into_iter().flatten() {
            result.ips.push(IpConfig { address: ip.ip, gateway: ip.gateway, interface: None });
            result.routes.extend(ip.routes.into_iter().map(Route::from));
        }
        result
    }
}

/// Routes appear in plugin configs too (host-local's `routes`), in the same form as in results.
impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Route, D::Error> {
        WireRoute::deserialize(d).map(Route::from)
    }
}
