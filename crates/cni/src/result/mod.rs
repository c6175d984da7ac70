//! The result of ADD, in one version-independent model, and its wire forms.
//!
//! Plugins build and read [`CniResult`]; [`CniResult::to_json`] prints it in the version the config
//! asked for and [`CniResult::from_json`] reads a `prevResult` or a delegate's output in any version,
//! following libcni's converters (`pkg/types/100`, `040`, `020`).

mod wire;

use crate::error::Error;
use crate::version::{self, Shape};
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::net::IpAddr;

/// An ADD result (the 1.1.0 model; every older version converts to and from it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// An interface the plugin created or configured. `sandbox` is the netns path for interfaces in
/// the container and empty for host-side ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// 0 when not reported.
    pub mtu: u32,
    pub sandbox: String,
    pub socket_path: String,
    pub pci_id: String,
}

/// An address, with host bits (`10.1.0.5/24`), and the index of its interface in `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub interface: Option<usize>,
}

/// A route. Zero `mtu`, `advmss` and `priority` mean "not set", as in the spec's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub mtu: u32,
    pub advmss: u32,
    pub priority: u32,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route { dst, gw, mtu: 0, advmss: 0, priority: 0, table: None, scope: None }
    }
}

/// DNS settings for the container's resolver.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

impl CniResult {
    /// The result as JSON in `cni_version`. Fails only for 0.1.0/0.2.0 when there is no address to
    /// report, as libcni's converter does.
    pub fn to_json(&self, cni_version: &str) -> Result<Value, Error> {
        let shape = version::shape(cni_version).ok_or_else(|| {
            Error::new(crate::Code::IncompatibleVersion, format!("unknown result version {cni_version:?}"))
        })?;
        let value = match shape {
            Shape::V1 => serde_json::to_value(wire::V1::from_model(self, cni_version)),
            Shape::V04 => serde_json::to_value(wire::V04::from_model(self, cni_version)),
            Shape::V02 => serde_json::to_value(wire::V02::from_model(self, cni_version)?),
        };
        value.map_err(|e| Error::new(crate::Code::Internal, format!("encoding result: {e}")))
    }

    /// Reads a result in any supported version. A result without `cniVersion` is taken to be in
    /// `default_version` (libcni's `fixupResultVersion`).
    pub fn from_json(value: &Value, default_version: &str) -> Result<CniResult, Error> {
        if !value.is_object() {
            return Err(Error::decode("result is not a JSON object"));
        }
        let declared = value.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        let cni_version = if declared.is_empty() { default_version } else { declared };
        let shape = version::shape(cni_version)
            .ok_or_else(|| Error::decode(format!("result has unsupported cniVersion {cni_version:?}")))?;
        Ok(match shape {
            Shape::V1 => crate::json::from_value::<wire::V1>(value)?.into_model(),
            Shape::V04 => crate::json::from_value::<wire::V04>(value)?.into_model(),
            Shape::V02 => crate::json::from_value::<wire::V02>(value)?.into_model(),
        })
    }
}

/// Parses `a.b.c.d/n` or `x::y/n` keeping host bits, as Go's `types.ParseCIDR`. Unlike
/// `IpNetwork::from_str`, a missing prefix is an error rather than a silent /32.
pub fn parse_cidr(s: &str) -> Result<IpNetwork, Error> {
    let (ip, prefix) = s.split_once('/').ok_or_else(|| Error::decode(format!("invalid CIDR address: {s}")))?;
    let ip: IpAddr = ip.parse().map_err(|_| Error::decode(format!("invalid CIDR address: {s}")))?;
    let prefix: u8 = match prefix.parse() {
        Ok(p) if !prefix.starts_with('+') => p,
        _ => return Err(Error::decode(format!("invalid CIDR address: {s}"))),
    };
    IpNetwork::new(ip, prefix).map_err(|_| Error::decode(format!("invalid CIDR address: {s}")))
}

#[cfg(test)]
mod tests;
