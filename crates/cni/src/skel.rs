//! The verb dispatcher: the only code that reads the environment and stdin, and the only code that
//! writes stdout and picks the exit status.
//!
//! A plugin implements [`Plugin`] and calls [`run`] from `main`. Checks happen in the order libcni's
//! `skel` makes them, so runtimes see the same codes: environment (4, or 3 for an empty container
//! ID), config syntax (6), name and type (7), version support (1), per-verb version gates (1),
//! prevResult (6), then `CNI_ARGS` (4). A panic becomes code 999 instead of reaching the runtime as
//! garbage.

use crate::args::CniArgs;
use crate::config::NetConf;
use crate::env::{Command, Env};
use crate::error::{Code, Error};
use crate::result::CniResult;
use crate::version;
use serde::Serialize;
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The most ADD, CHECK and STATUS read from stdin. Real configs with a `prevResult` are a few
/// kilobytes; the cap keeps a runaway writer from making us allocate without bound. DEL and GC
/// read whatever they are given: a DEL refused for its size would leak the attachment, and a GC's
/// list of valid attachments grows with the node.
pub const MAX_STDIN: usize = 4 << 20;

/// Everything one invocation was given, validated.
#[derive(Debug, Clone)]
pub struct Request {
    pub env: Env,
    pub args: CniArgs,
    pub config: NetConf,
    /// stdin exactly as received, for delegation.
    pub stdin: Vec<u8>,
}

impl Request {
    /// CHECK's lookup of the attachment's container interface in `prev`: the entry named
    /// `CNI_IFNAME` whose sandbox is `CNI_NETNS`, with its index, as the reference's CHECKs find it.
    pub fn container_interface<'a>(&self, prev: &'a CniResult) -> anyhow::Result<(usize, &'a crate::Interface)> {
        prev.interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == self.env.ifname && i.sandbox == self.env.netns)
            .ok_or_else(|| anyhow::anyhow!("sandbox in prevResult doesn't match configured netns: {}", self.env.netns))
    }

    /// ADD's result for a plugin whose attachment is the one interface `CNI_IFNAME` in
    /// `CNI_NETNS`: `addresses` (IPAM's, or a previous plugin's) with that interface as the
    /// only one, every address on it.
    pub fn container_result(&self, addresses: CniResult, mac: String) -> CniResult {
        let mut result = addresses;
        result.interfaces = vec![crate::Interface {
            name: self.env.ifname.clone(),
            mac,
            sandbox: self.env.netns.clone(),
            ..crate::Interface::default()
        }];
        for ip in &mut result.ips {
            ip.interface = Some(0);
        }
        result
    }

    pub fn command(&self) -> Command {
        self.env.command
    }
}

/// The verbs of a plugin. ADD returns the result in the model; the dispatcher prints it in the
/// config's version. STATUS and GC succeed by default, as an unset handler in libcni's skel does.
pub trait Plugin {
    /// The plugin's name, as in its `type`.
    fn name(&self) -> &'static str;
    fn add(&self, req: &Request) -> anyhow::Result<CniResult>;
    fn del(&self, req: &Request) -> anyhow::Result<()>;
    fn check(&self, req: &Request) -> anyhow::Result<()>;
    fn status(&self, _req: &Request) -> anyhow::Result<()> {
        Ok(())
    }
    fn gc(&self, _req: &Request) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What an invocation prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub exit_code: i32,
}

/// Runs one invocation against the process environment and stdin, prints and exits.
pub fn run<P: Plugin>(plugin: P) -> ! {
    crate::suite::keep();
    crate::trace::mark("main");
    let outcome = dispatch(&plugin, |k| std::env::var(k).ok(), std::io::stdin().lock());
    let mut out = std::io::stdout().lock();
    // If stdout is gone there is nobody left to tell; the exit status still says it.
    let _ = out.write_all(&outcome.stdout).and_then(|_| out.flush());
    crate::trace::mark("exit");
    std::process::exit(outcome.exit_code)
}

/// [`run`] for a plugin that delegates to other plugins of this suite: `builtins` are run in this
/// process instead of being executed when the file `CNI_PATH` finds for their type is ours, of
/// this version ([`crate::suite`], [`crate::delegate`]).
pub fn run_with<P: Plugin>(plugin: P, builtins: &'static [&'static (dyn Plugin + Sync)]) -> ! {
    let _ = BUILTINS.set(builtins);
    run(plugin)
}

static BUILTINS: std::sync::OnceLock<&'static [&'static (dyn Plugin + Sync)]> = std::sync::OnceLock::new();

/// The built-in plugin of type `name`, if this process was started with one ([`run_with`]).
pub(crate) fn builtin(name: &str) -> Option<&'static (dyn Plugin + Sync)> {
    BUILTINS.get()?.iter().copied().find(|p| p.name() == name)
}

/// One invocation, with the environment and stdin given explicitly (for tests, [`run`] and
/// built-in delegates).
pub fn dispatch<P: Plugin + ?Sized>(plugin: &P, get_env: impl Fn(&str) -> Option<String>, stdin: impl Read) -> Outcome {
    let mut cni_version = version::CURRENT.to_string();
    let result = catch_unwind(AssertUnwindSafe(|| serve(plugin, &get_env, stdin, &mut cni_version)));
    let failure = match result {
        Ok(Ok(stdout)) => {
            return Outcome { stdout, exit_code: 0 };
        }
        Ok(Err(e)) => e,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Error::new(Code::Internal, format!("internal error: plugin panicked: {what}"))
        }
    };
    if failure.code == Code::InvalidEnv && get_env("CNI_COMMAND").unwrap_or_default().is_empty() {
        // Run by hand (or by nerdctl, which parses the version): libcni's skel says who it is on
        // stderr, prints nothing on stdout and succeeds.
        eprintln!("{}", about(plugin.name()));
        eprintln!("CNI protocol versions supported: {}", version::SUPPORTED.join(", "));
        return Outcome { stdout: Vec::new(), exit_code: 0 };
    }
    Outcome { stdout: pretty(&failure.to_json(&cni_version)), exit_code: 1 }
}

fn serve<P: Plugin + ?Sized>(
    plugin: &P,
    get_env: &dyn Fn(&str) -> Option<String>,
    stdin: impl Read,
    cni_version: &mut String,
) -> Result<Vec<u8>, Error> {
    let env = Env::load(get_env)?;
    if env.command == Command::Version {
        // VERSION answers whatever the config says, but reads it: a caller that writes the config
        // into a pipe would otherwise get EPIPE (or SIGPIPE) whenever we exit first.
        drain(stdin);
        let info = VersionInfo { cni_version: version::CURRENT, supported_versions: version::SUPPORTED };
        let mut out = serde_json::to_vec(&info).map_err(|e| Error::new(Code::Internal, e.to_string()))?;
        out.push(b'\n');
        return Ok(out);
    }

    let best_effort = matches!(env.command, Command::Del | Command::Gc);
    let stdin = replace_invalid_utf8(read_stdin(stdin, if best_effort { None } else { Some(MAX_STDIN) })?);
    let config = NetConf::parse(&stdin)?;
    *cni_version = config.cni_version.clone();
    check_version(env.command, &config.cni_version)?;
    if let Some(e) = &config.prev_result_error {
        if !best_effort {
            return Err(e.clone());
        }
        eprintln!("{}: ignoring prevResult, cleaning up by the attachment's identity: {}", plugin.name(), e.msg);
    }
    let args = CniArgs::parse(&env.args)?;
    let req = Request { env, args, config, stdin };

    let run_verb = |r: anyhow::Result<()>| r.map(|()| Vec::new()).map_err(|e| Error::from_anyhow(&e));
    match req.command() {
        Command::Add => {
            let result = plugin.add(&req).map_err(|e| Error::from_anyhow(&e))?;
            match result.to_json(&req.config.cni_version) {
                Ok(json) => Ok(pretty(&json)),
                Err(e) => {
                    // The ADD happened but its result cannot be said in the config's version (a
                    // 0.2.0 result needs an address): a failed ADD must leave nothing behind.
                    if let Err(undo) = plugin.del(&req) {
                        eprintln!("{}: undoing an ADD whose result could not be printed: {undo:#}", plugin.name());
                    }
                    Err(e)
                }
            }
        }
        Command::Del => run_verb(plugin.del(&req)),
        Command::Check => run_verb(plugin.check(&req)),
        Command::Status => run_verb(plugin.status(&req)),
        Command::Gc => run_verb(plugin.gc(&req)),
        Command::Version => unreachable!("answered above"),
    }
}

/// Code 1 for a version we do not speak, or one too old for the verb (CHECK needs 0.4.0, STATUS
/// and GC need 1.1.0).
fn check_version(command: Command, cni_version: &str) -> Result<(), Error> {
    if !version::is_supported(cni_version) {
        return Err(Error::new(Code::IncompatibleVersion, "incompatible CNI versions")
            .with_details(format!("config is {cni_version:?}, plugin supports [{}]", version::SUPPORTED.join(" "))));
    }
    let minimum = match command {
        Command::Check => "0.4.0",
        Command::Status | Command::Gc => "1.1.0",
        _ => return Ok(()),
    };
    if !version::at_least(cni_version, minimum) {
        return Err(Error::new(
            Code::IncompatibleVersion,
            format!("config version does not allow {command} (needs {minimum}, config is {cni_version})"),
        ));
    }
    Ok(())
}

/// `CNI <name> plugin v<version>`, as the reference's about line; the version is the workspace's.
pub fn about(name: &str) -> String {
    format!("CNI {name} plugin v{}", env!("CARGO_PKG_VERSION"))
}

fn read_stdin(stdin: impl Read, cap: Option<usize>) -> Result<Vec<u8>, Error> {
    let mut data = Vec::new();
    let limit = cap.map_or(u64::MAX, |c| c as u64 + 1);
    stdin
        .take(limit)
        .read_to_end(&mut data)
        .map_err(|e| Error::new(Code::Io, format!("error reading from stdin: {e}")))?;
    if let Some(cap) = cap
        && data.len() > cap
    {
        return Err(Error::decode(format!("network config on stdin exceeds {cap} bytes")));
    }
    Ok(data)
}

/// Reads and discards stdin up to [`MAX_STDIN`] bytes. A terminal is left alone (someone typed
/// the command by hand and would wait for an end of file that never comes).
fn drain(stdin: impl Read) {
    if nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        return;
    }
    let _ = std::io::copy(&mut stdin.take(MAX_STDIN as u64), &mut std::io::sink());
}

/// Go's decoder replaces each byte of invalid UTF-8 inside a string with U+FFFD; configs that
/// work with the reference must work here. Outside strings such bytes stay a syntax error, as
/// the replacement character is not JSON either.
fn replace_invalid_utf8(data: Vec<u8>) -> Vec<u8> {
    if std::str::from_utf8(&data).is_ok() {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut rest = &data[..];
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.extend_from_slice(valid.as_bytes());
                return out;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.extend_from_slice(valid);
                let bad = e.error_len().unwrap_or(after.len());
                for _ in 0..bad {
                    out.extend_from_slice("\u{FFFD}".as_bytes());
                }
                rest = &after[bad..];
            }
        }
    }
}

#[derive(Serialize)]
struct VersionInfo {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(rename = "supportedVersions")]
    supported_versions: &'static [&'static str],
}

/// JSON indented by four spaces, as the reference plugins print it.
fn pretty(value: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    match value.serialize(&mut ser) {
        Ok(()) => out,
        Err(_) => br#"{"code": 999, "msg": "failed to encode output"}"#.to_vec(),
    }
}

#[cfg(test)]
mod tests;
