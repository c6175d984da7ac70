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

/// The most a plugin reads from stdin. Real configs with a `prevResult` are a few kilobytes; the
/// cap keeps a runaway writer from making us allocate without bound.
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
    crate::trace::mark("main");
    let outcome = dispatch(&plugin, |k| std::env::var(k).ok(), std::io::stdin().lock());
    let mut out = std::io::stdout().lock();
    // If stdout is gone there is nobody left to tell; the exit status still says it.
    let _ = out.write_all(&outcome.stdout).and_then(|_| out.flush());
    crate::trace::mark("exit");
    std::process::exit(outcome.exit_code)
}

/// One invocation, with the environment and stdin given explicitly (for tests and [`run`]).
pub fn dispatch<P: Plugin>(plugin: &P, get_env: impl Fn(&str) -> Option<String>, stdin: impl Read) -> Outcome {
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
        // libcni's skel prints this for a human who ran the binary by hand.
        eprintln!("CNI {} plugin {}", plugin.name(), env!("CARGO_PKG_VERSION"));
        eprintln!("CNI protocol versions supported: {}", version::SUPPORTED.join(", "));
    }
    Outcome { stdout: pretty(&failure.to_json(&cni_version)), exit_code: 1 }
}

fn serve<P: Plugin>(
    plugin: &P,
    get_env: &dyn Fn(&str) -> Option<String>,
    stdin: impl Read,
    cni_version: &mut String,
) -> Result<Vec<u8>, Error> {
    let env = Env::load(get_env)?;
    if env.command == Command::Version {
        // stdin is ignored, as in libcni: VERSION must answer whatever the config says.
        let info = VersionInfo { cni_version: version::CURRENT, supported_versions: version::SUPPORTED };
        let mut out = serde_json::to_vec(&info).map_err(|e| Error::new(Code::Internal, e.to_string()))?;
        out.push(b'\n');
        return Ok(out);
    }

    let stdin = read_capped(stdin)?;
    let config = NetConf::parse(&stdin)?;
    *cni_version = config.cni_version.clone();
    check_version(env.command, &config.cni_version)?;
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

fn read_capped(stdin: impl Read) -> Result<Vec<u8>, Error> {
    let mut data = Vec::new();
    stdin
        .take(MAX_STDIN as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::new(Code::Io, format!("error reading from stdin: {e}")))?;
    if data.len() > MAX_STDIN {
        return Err(Error::decode(format!("network config on stdin exceeds {MAX_STDIN} bytes")));
    }
    Ok(data)
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
