//! `dhcp`: IPAM by DHCP. One binary, two roles, as the reference's:
//! - `dhcp daemon [flags]` (daemon.rs) holds each attachment's lease, acquired and renewed from
//!   inside the container's network namespace;
//! - `dhcp` run by a runtime (or a plugin delegating IPAM) asks the daemon over its unix socket
//!   (`ipam.daemonSocketPath`, default `/run/cni/dhcp.sock`): ADD allocates, CHECK checks, DEL
//!   releases, STATUS says whether the daemon answers, GC releases the network's leases of
//!   attachments the runtime no longer lists (the reference has no GC).
//!
//! The plugin validates the config before calling (code 7 for a bad option name, as the reference
//! reports only after dialing). Differences from the reference: CHECK does not acquire a lease
//! when there is none (it fails), leases survive a daemon restart, the result carries the DNS
//! servers and domain the server gave, and a daemon that cannot be reached is code 11 (try again
//! later). The socket protocol is this suite's own (protocol.rs).

mod client;
mod config;
mod daemon;
mod packet;
mod protocol;

use anyhow::Context;
use cni::{CniResult, Code, Error, Plugin, Request};
use config::Config;
use protocol::{Call, Method};
use std::time::Duration;

/// How long the plugin waits for the daemon's answer. The daemon gives up on a silent server
/// after `-resendtimeout` (208 s by default); this only bounds a daemon that hangs.
const CALL_WAIT: Duration = Duration::from_secs(300);

struct Dhcp;

/// One call to the daemon for this invocation.
fn call(req: &Request, method: Method) -> anyhow::Result<serde_json::Value> {
    let conf = Config::parse(&req.config.raw, &req.env.args)?;
    // The daemon may run in another working directory.
    let netns = match req.env.netns.as_str() {
        "" => String::new(),
        n => std::path::absolute(n)
            .with_context(|| format!("failed to make {n:?} an absolute path"))?
            .display()
            .to_string(),
    };
    let c = Call {
        method,
        container_id: req.env.container_id.clone(),
        netns,
        ifname: req.env.ifname.clone(),
        args: req.env.args.clone(),
        config: req.config.raw.clone(),
    };
    Ok(protocol::call(&conf.socket_path, &c, CALL_WAIT)?)
}

fn lease_result(value: &serde_json::Value) -> anyhow::Result<CniResult> {
    CniResult::from_json(value, cni::version::CURRENT).context("reading the DHCP daemon's result")
}

impl Plugin for Dhcp {
    fn name(&self) -> &'static str {
        "dhcp"
    }

    fn add(&self, req: &Request) -> anyhow::Result<CniResult> {
        let mut rollback = cni::Rollback::new("dhcp");
        let value = call(req, Method::Allocate)?;
        rollback.push("the DHCP lease", || call(req, Method::Release).map(|_| ()));
        cni::fault::point("dhcp:allocated")?;
        let result = lease_result(&value)?;
        rollback.commit();
        Ok(result)
    }

    fn del(&self, req: &Request) -> anyhow::Result<()> {
        call(req, Method::Release).map(|_| ())
    }

    fn check(&self, req: &Request) -> anyhow::Result<()> {
        let lease = lease_result(&call(req, Method::Check)?)?;
        if let Some(prev) = &req.config.prev_result {
            for ip in &lease.ips {
                if !prev.ips.iter().any(|p| p.address.ip() == ip.address.ip()) {
                    anyhow::bail!("the DHCP lease's address {} is not in prevResult", ip.address);
                }
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> anyhow::Result<()> {
        call(req, Method::Gc).map(|_| ())
    }

    fn status(&self, req: &Request) -> anyhow::Result<()> {
        // A daemon that cannot be reached means no address can be had: code 50. A bad config
        // keeps its own code.
        call(req, Method::Status).map(|_| ()).map_err(|e| {
            let e = Error::from_anyhow(&e);
            match e.code {
                Code::TryAgainLater | Code::Io => anyhow::Error::new(Error::new(Code::NotAvailable, e.msg)),
                _ => anyhow::Error::new(e),
            }
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("daemon") {
        std::process::exit(daemon::main(&args[2..]));
    }
    cni::skel::run(Dhcp)
}
