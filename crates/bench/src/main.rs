//! `cni-bench`: measures these plugins side by side with the Go reference plugins in one run and
//! prints one table (Markdown), also written to `bench-results/latest.md`.
//!
//!   cni-bench [--rounds N] [--ours DIR] [--reference DIR]

mod exec;
mod host_local;
mod stats;
mod table;

use anyhow::Context;
use std::path::PathBuf;

struct Options {
    ours: PathBuf,
    reference: PathBuf,
    rounds: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut opts =
        Options { ours: PathBuf::from("target/release"), reference: PathBuf::from("/usr/lib/cni"), rounds: 50 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--ours" => opts.ours = value()?.into(),
            "--reference" => opts.reference = value()?.into(),
            "--rounds" => opts.rounds = value()?.parse().context("--rounds")?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(opts)
}

fn main() -> anyhow::Result<()> {
    let opts = options()?;
    let reference = |name: &str| Some(opts.reference.join(name)).filter(|p| p.is_file());
    let mut table = table::Table::default();
    host_local::run(&opts.ours.join("host-local"), reference("host-local").as_ref(), opts.rounds, &mut table)?;

    let rendered = table.render();
    println!("{rendered}");
    std::fs::create_dir_all("bench-results")?;
    std::fs::write("bench-results/latest.md", &rendered)?;
    Ok(())
}
