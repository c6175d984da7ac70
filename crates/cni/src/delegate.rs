//! Delegation (SPEC.md section 4): run another plugin, usually IPAM, found in `CNI_PATH`, with our
//! environment and our stdin, and read its result or its error.
//!
//! The delegate's error code reaches the runtime unchanged; its stderr is passed through to ours.

use crate::env::Command;
use crate::error::{Code, Error};
use crate::result::CniResult;
use crate::rollback::Rollback;
use crate::skel::Request;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// Rejects a plugin `type` that is not a plain file name, before anything runs: `../x` or
/// `/usr/bin/x` would let a config execute any program on the host.
pub fn validate_plugin_type(plugin_type: &str) -> Result<(), Error> {
    if plugin_type.is_empty()
        || plugin_type == "."
        || plugin_type == ".."
        || plugin_type.contains('/')
        || plugin_type.contains('\0')
    {
        return Err(Error::config(format!(
            "invalid plugin type {plugin_type:?}: it must be a plain file name found in CNI_PATH"
        )));
    }
    Ok(())
}

/// The first executable file named `plugin_type` in `cni_path`.
pub fn find_plugin(plugin_type: &str, cni_path: &[PathBuf]) -> Result<PathBuf, Error> {
    validate_plugin_type(plugin_type)?;
    if cni_path.is_empty() {
        return Err(Error::env(format!("CNI_PATH is empty: cannot find plugin {plugin_type:?}")));
    }
    cni_path.iter().map(|dir| dir.join(plugin_type)).find(|p| p.metadata().is_ok_and(|m| m.is_file())).ok_or_else(
        || {
            let dirs: Vec<String> = cni_path.iter().map(|d| d.display().to_string()).collect();
            Error::config(format!("failed to find plugin {plugin_type:?} in path [{}]", dirs.join(" ")))
        },
    )
}

/// DEL's two halves for a plugin whose container interface carries the IPAM addresses: the
/// interface's removal (`remove_interface`) and the IPAM release, in the order the IPAM plugin
/// needs. dhcp sends its RELEASE to the server from that interface, so it releases first (as the
/// reference's macvlan, ipvlan and ptp do for every IPAM). Any other IPAM releases after the
/// interface is gone, so its address is never handed to a new container while the old interface
/// still holds it (a ptp host route or a neighbour's ARP entry would point at the wrong one).
/// Both halves are tried; what fails goes to `failures`.
pub fn del_interface_and_ipam(
    req: &Request,
    failures: &mut crate::Failures,
    remove_interface: impl FnOnce() -> anyhow::Result<()>,
) {
    let release = |failures: &mut crate::Failures| {
        if req.config.ipam_type.is_some() {
            failures.check("releasing the IPAM allocation", ipam(req, Command::Del).map(|_| ()));
        }
    };
    let over_interface = req.config.ipam_type.as_deref() == Some("dhcp");
    if over_interface {
        release(failures);
    }
    failures.check("removing the interface", remove_interface());
    if !over_interface {
        release(failures);
    }
}

/// DEL of a plugin whose whole attachment is one container interface and its IPAM allocation
/// (macvlan, ipvlan, vlan, tap, dummy): [`del_interface_and_ipam`], every failure reported.
pub fn del_interface_with_ipam(
    req: &Request,
    remove_interface: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut failures = crate::Failures::new();
    del_interface_and_ipam(req, &mut failures, remove_interface);
    failures.finish()
}

/// ADD's IPAM step for a plugin whose addresses come from IPAM when the config names it: runs
/// the IPAM plugin's ADD, registers its DEL with `undo` (so a later failure releases the
/// allocation) and requires at least one address. Without `ipam`, an empty result: the
/// attachment is L2 only.
pub fn ipam_add<'a>(req: &'a Request, undo: &mut Rollback<'a>) -> anyhow::Result<CniResult> {
    if req.config.ipam_type.is_none() {
        return Ok(CniResult::default());
    }
    let allocated = ipam(req, Command::Add)?;
    undo.push("the IPAM allocation", move || ipam(req, Command::Del).map(|_| ()));
    let result = allocated.context("IPAM returned no result")?;
    anyhow::ensure!(!result.ips.is_empty(), "IPAM plugin returned missing IP config");
    Ok(result)
}

/// CHECK, STATUS and GC passed on to the IPAM plugin, when the config names one (the spec has
/// each of them reach IPAM).
pub fn ipam_if_configured(req: &Request, command: Command) -> anyhow::Result<()> {
    if req.config.ipam_type.is_some() {
        ipam(req, command)?;
    }
    Ok(())
}

/// Runs the configured IPAM plugin for `command` with the request's stdin. Only ADD returns a
/// result. Fails with code 7 when the config has no IPAM type.
pub fn ipam(req: &Request, command: Command) -> anyhow::Result<Option<CniResult>> {
    let plugin_type = req
        .config
        .ipam_type
        .as_deref()
        .ok_or_else(|| Error::config("ipam.type is missing: no IPAM plugin configured"))?;
    exec(req, plugin_type, command, &req.stdin)
}

/// Runs `plugin_type` for `command` with `stdin`, in our environment but for `CNI_COMMAND`.
/// When the file found is this suite's own plugin of this version and this process carries its
/// code ([`crate::skel::run_with`]), the code runs here instead: same environment, stdin, output
/// and exit status, without the exec (see [`crate::suite`]).
pub fn exec(req: &Request, plugin_type: &str, command: Command, stdin: &[u8]) -> anyhow::Result<Option<CniResult>> {
    let path = find_plugin(plugin_type, &req.env.cni_path)?;
    crate::trace::mark(&format!("delegate {plugin_type} start"));
    let output = match crate::skel::builtin(plugin_type).filter(|_| crate::suite::is_ours(&path)) {
        Some(plugin) => in_process(plugin, command, stdin),
        None => run(&path, command, stdin)
            .with_context(|| format!("running {} plugin {plugin_type:?}", command.as_str()))?,
    };
    crate::trace::mark(&format!("delegate {plugin_type} done"));

    if !output.success {
        let err = Error::from_json(&output.stdout).unwrap_or_else(|| {
            let text = if output.stdout.is_empty() { &output.stderr } else { &output.stdout };
            Error::new(Code::Internal, format!("{} ({})", String::from_utf8_lossy(text).trim(), output.status))
        });
        return Err(anyhow::Error::new(err))
            .with_context(|| format!("{} plugin {plugin_type:?} failed", command.as_str()));
    }
    if command != Command::Add {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::decode(format!("plugin {plugin_type:?} printed a result that is not JSON: {e}")))?;
    let result = CniResult::from_json(&value, &req.config.cni_version)
        .with_context(|| format!("reading the result of plugin {plugin_type:?}"))?;
    Ok(Some(result))
}

/// What a delegate printed and how it ended.
struct Ran {
    stdout: Vec<u8>,
    /// An executed delegate's (already passed on to ours); empty for a built-in, whose log lines
    /// went straight to our stderr.
    stderr: Vec<u8>,
    success: bool,
    status: String,
}

/// A built-in delegate, dispatched as its own binary would be (its stdout is the same bytes, its
/// log lines go straight to our stderr, and its trace marks and fault points carry its name; a
/// panic in it becomes its error JSON, code 999, as in its own process).
fn in_process(plugin: &'static (dyn crate::Plugin + Sync), command: Command, stdin: &[u8]) -> Ran {
    let outcome = crate::trace::acting_as(plugin.name(), || {
        crate::trace::mark("main");
        let env = |key: &str| match key {
            "CNI_COMMAND" => Some(command.as_str().to_string()),
            _ => std::env::var(key).ok(),
        };
        let outcome = crate::skel::dispatch(plugin, env, stdin);
        crate::trace::mark("exit");
        outcome
    });
    Ran {
        success: outcome.exit_code == 0,
        status: format!("exit status: {}", outcome.exit_code),
        stdout: outcome.stdout,
        stderr: Vec::new(),
    }
}

fn run(path: &Path, command: Command, stdin: &[u8]) -> anyhow::Result<Ran> {
    let mut child = spawn(path, command)?;
    let mut pipe = child.stdin.take().context("delegate stdin is not piped")?;
    // A writer thread, so a delegate that prints before it reads cannot deadlock us.
    let output = std::thread::scope(|s| {
        let writer = s.spawn(move || pipe.write_all(stdin));
        let output = child.wait_with_output().context("waiting for the plugin");
        // A delegate may exit without reading all of stdin (EPIPE); its exit status says how it went.
        let _ = writer.join();
        output
    })?;
    // The delegate's log lines belong in the runtime's log, as if we had written them.
    let _ = std::io::stderr().write_all(&output.stderr);
    Ok(Ran {
        success: output.status.success(),
        status: output.status.to_string(),
        stdout: output.stdout,
        stderr: output.stderr,
    })
}

/// Spawns the plugin, retrying briefly on ETXTBSY: a binary being replaced by a package upgrade
/// (libcni does the same).
fn spawn(path: &Path, command: Command) -> anyhow::Result<Child> {
    let mut attempts = 0;
    loop {
        let spawned = std::process::Command::new(path)
            .env("CNI_COMMAND", command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempts < 5 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other.with_context(|| format!("executing {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_types_must_be_plain_names() {
        for bad in ["", ".", "..", "../x", "/usr/bin/id", "a/b", "x\0y"] {
            assert_eq!(validate_plugin_type(bad).unwrap_err().code, Code::InvalidConfig, "{bad:?}");
        }
        validate_plugin_type("host-local").unwrap();
        validate_plugin_type("..x").unwrap();
    }

    #[test]
    fn finds_the_first_match_and_reports_misses() {
        let dir = std::env::temp_dir().join(format!("cni-find-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(b.join("dironly")).unwrap();
        std::fs::write(b.join("ipam"), b"").unwrap();
        std::fs::write(a.join("ipam"), b"").unwrap();
        let path = vec![a.clone(), b.clone()];
        assert_eq!(find_plugin("ipam", &path).unwrap(), a.join("ipam"));
        assert_eq!(find_plugin("dironly", &path).unwrap_err().code, Code::InvalidConfig);
        assert_eq!(find_plugin("ipam", &[]).unwrap_err().code, Code::InvalidEnv);
        assert_eq!(find_plugin("../b/ipam", &path).unwrap_err().code, Code::InvalidConfig);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
