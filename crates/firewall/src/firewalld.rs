//! firewalld as the firewall plugin's backend: a container's addresses become sources of a zone
//! (`trusted` by default), over D-Bus, as the reference does. Runtime (non-permanent) sources
//! only: they vanish when firewalld restarts, as the reference's do.

use crate::dbus::{Connection, Reply};
use anyhow::Context;

const NAME: &str = "org.fedoraproject.FirewallD1";
const PATH: &str = "/org/fedoraproject/FirewallD1";
const ZONE: &str = "org.fedoraproject.FirewallD1.zone";
/// firewalld's answer when the source is already bound to a zone (the reference ignores it).
const ZONE_ALREADY_SET: &str = "ZONE_ALREADY_SET";
/// firewalld's answer when the source is bound to no zone.
const UNKNOWN_SOURCE: &str = "UNKNOWN_SOURCE";

/// A connection to firewalld over the system bus.
pub struct Firewalld {
    conn: Connection,
}

impl Firewalld {
    pub fn connect() -> anyhow::Result<Firewalld> {
        Ok(Firewalld { conn: Connection::system()? })
    }

    /// Whether firewalld owns its name on the system bus (how the reference chooses the backend
    /// when none is configured). No bus means no firewalld.
    pub fn is_running() -> bool {
        Connection::system().is_ok_and(|mut c| {
            c.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetNameOwner", &[NAME])
                .is_ok_and(|r| r.is_ok())
        })
    }

    /// Fails unless firewalld answers (STATUS).
    pub fn ping(&mut self) -> anyhow::Result<()> {
        self.conn
            .call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetNameOwner", &[NAME])?
            .map_err(|e| anyhow::anyhow!("firewalld is not on the system bus: {e}"))
            .map(|_| ())
    }

    fn zone_call(
        &mut self,
        method: &str,
        zone: &str,
        source: &str,
    ) -> anyhow::Result<Result<Reply, crate::dbus::DbusError>> {
        self.conn
            .call(NAME, PATH, ZONE, method, &[zone, source])
            .with_context(|| format!("calling firewalld's {method}"))
    }

    /// Binds `source` (an address with its /32 or /128) to `zone`; already bound is success.
    pub fn add_source(&mut self, zone: &str, source: &str) -> anyhow::Result<()> {
        match self.zone_call("addSource", zone, source)? {
            Ok(_) => Ok(()),
            Err(e) if e.message.contains(ZONE_ALREADY_SET) => Ok(()),
            Err(e) => anyhow::bail!("failed to add the address {source} to {zone} zone: {e}"),
        }
    }

    /// Unbinds `source` from `zone`; a source bound to no zone is already gone.
    pub fn remove_source(&mut self, zone: &str, source: &str) -> anyhow::Result<()> {
        match self.zone_call("removeSource", zone, source)? {
            Ok(_) => Ok(()),
            Err(e) if e.message.starts_with(UNKNOWN_SOURCE) => Ok(()),
            Err(e) => anyhow::bail!("failed to remove the address {source} from {zone} zone: {e}"),
        }
    }

    /// Whether `source` is bound to `zone`.
    pub fn query_source(&mut self, zone: &str, source: &str) -> anyhow::Result<bool> {
        match self.zone_call("querySource", zone, source)? {
            Ok(Reply::Bool(b)) => Ok(b),
            Ok(other) => anyhow::bail!("firewalld's querySource answered {other:?}"),
            Err(e) => anyhow::bail!("failed to find the address {source} in {zone} zone: {e}"),
        }
    }
}
