//! The `CNI_*` environment: which verb, which container, which namespace and interface.
//!
//! Validation follows the spec per verb and libcni's rules for container IDs and interface names, so
//! a runtime sees the same codes from us as from the reference plugins.

use crate::error::{Code, Error};
use std::fmt;
use std::path::PathBuf;

/// The verb in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Whether the spec requires `CNI_CONTAINERID` and `CNI_IFNAME` for this verb.
    fn needs_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// Whether the spec requires `CNI_NETNS` for this verb (DEL runs without one).
    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// `CNI_CONTAINERID`; empty for verbs that do not name an attachment.
    pub container_id: String,
    /// `CNI_NETNS`; may be empty for DEL, GC and STATUS.
    pub netns: String,
    /// `CNI_IFNAME`; empty for verbs that do not name an attachment.
    pub ifname: String,
    /// `CNI_ARGS` as given; parsed by [`crate::args::CniArgs`].
    pub args: String,
    /// `CNI_PATH`, split on `:`.
    pub cni_path: Vec<PathBuf>,
}

impl Env {
    /// Reads and validates the environment through `get` (usually `std::env::var`).
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<Env, Error> {
        let var = |name: &str| get(name).unwrap_or_default();
        let raw_command = var("CNI_COMMAND");
        if raw_command.is_empty() {
            return Err(Error::env("required env variables [CNI_COMMAND] missing"));
        }
        let command =
            Command::parse(&raw_command).ok_or_else(|| Error::env(format!("unknown CNI_COMMAND: {raw_command}")))?;

        let env = Env {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            cni_path: var("CNI_PATH").split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect(),
        };

        let mut missing = Vec::new();
        if command.needs_attachment() && env.container_id.is_empty() {
            missing.push("CNI_CONTAINERID");
        }
        if command.needs_netns() && env.netns.is_empty() {
            missing.push("CNI_NETNS");
        }
        if command.needs_attachment() && env.ifname.is_empty() {
            missing.push("CNI_IFNAME");
        }
        if !missing.is_empty() {
            return Err(Error::env(format!("required env variables [{}] missing", missing.join(","))));
        }
        if command.needs_attachment() {
            validate_container_id(&env.container_id)?;
            validate_ifname(&env.ifname)?;
        }
        Ok(env)
    }
}

/// The longest `CNI_CONTAINERID` accepted. libcni sets no limit; runtimes use 64 hex characters
/// (containerd, CRI-O, Podman) or fewer. The bound keeps every name derived from an ID within the
/// limits it meets: host-local's index file `<containerID>:<ifname>` (255 bytes), and the
/// reference's iptables comments `name: "<network>" id: "<containerID>"` (255 bytes, with a network
/// name of at most [`crate::config::MAX_NETWORK_NAME`]), which would otherwise be cut short.
pub const MAX_CONTAINER_ID: usize = 128;

/// libcni's rule for container IDs and network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Validates `CNI_CONTAINERID` (code 3 when empty, as libcni; code 4 when malformed).
pub fn validate_container_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::new(Code::UnknownContainer, "missing containerID"));
    }
    if !is_valid_name(id) {
        return Err(Error::env("invalid characters in containerID").with_details(id));
    }
    if id.len() > MAX_CONTAINER_ID {
        return Err(Error::env(format!(
            "containerID is {} bytes long; at most {MAX_CONTAINER_ID} are allowed",
            id.len()
        )));
    }
    Ok(())
}

/// The kernel's and libcni's rules for an interface name: 1 to 15 bytes, not `.` or `..`, and no
/// `/`, `:` or whitespace (net/core/dev.c `dev_valid_name`). Also no `%`, which libcni allows but
/// the kernel reads as a template (`eth%d` creates `eth0`, `eth1`...): no link ever has such a
/// name, so a plugin could create one and never find it again.
pub fn validate_ifname(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::env("interface name is empty"));
    }
    if name.len() > 15 {
        return Err(Error::env(format!("interface name {name:?} is too long"))
            .with_details("interface name should be less than 16 characters"));
    }
    if name == "." || name == ".." {
        return Err(Error::env("interface name is . or .."));
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0') {
        return Err(Error::env(format!("interface name {name:?} contains / or : or whitespace characters")));
    }
    if name.contains('%') {
        return Err(Error::env(format!(
            "interface name {name:?} contains %, which the kernel reads as a name template"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Env, Error> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::load(|k| map.get(k).cloned())
    }

    #[test]
    fn add_needs_container_netns_and_ifname() {
        let e = load(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
        assert_eq!(e.msg, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing");
        let env = load(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ])
        .unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.cni_path, vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
    }

    #[test]
    fn del_runs_without_netns_and_gc_without_attachment() {
        let env = load(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")]).unwrap();
        assert_eq!(env.netns, "");
        assert!(load(&[("CNI_COMMAND", "GC")]).is_ok());
        assert!(load(&[("CNI_COMMAND", "STATUS")]).is_ok());
        assert!(load(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }

    #[test]
    fn missing_and_unknown_commands_are_code_4() {
        let e = load(&[]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (Code::InvalidEnv, "required env variables [CNI_COMMAND] missing"));
        let e = load(&[("CNI_COMMAND", "add")]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (Code::InvalidEnv, "unknown CNI_COMMAND: add"));
    }

    #[test]
    fn ifname_rules() {
        for bad in ["", ".", "..", "a/b", "eth:0", "eth 0", "eth\t0", "0123456789abcdef", "eth%d", "a\nb", "a\0b"] {
            assert_eq!(validate_ifname(bad).unwrap_err().code, Code::InvalidEnv, "{bad:?}");
        }
        for good in ["eth0", "0123456789abcde", "net1.100", "a-b_c"] {
            validate_ifname(good).unwrap();
        }
    }

    #[test]
    fn container_id_rules() {
        assert_eq!(validate_container_id("").unwrap_err().code, Code::UnknownContainer);
        for bad in ["-abc", "a/b", "../x", "a b", "ä"] {
            assert_eq!(validate_container_id(bad).unwrap_err().code, Code::InvalidEnv, "{bad:?}");
        }
        validate_container_id("cnitool-0123abc.x_y-z").unwrap();
        validate_container_id(&"a".repeat(MAX_CONTAINER_ID)).unwrap();
        assert_eq!(validate_container_id(&"a".repeat(MAX_CONTAINER_ID + 1)).unwrap_err().code, Code::InvalidEnv);
    }

    #[test]
    fn bad_ifname_in_env_is_rejected() {
        let e = load(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "../../etc")]).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
    }
}
