//! What the numbers were measured on, printed above the table.

use std::path::Path;
use std::process::Command;

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub fn describe(reference: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0))
        })
        .map(|kib| format!("{:.0} GiB", kib / 1048576.0))
        .unwrap_or_else(|| "unknown".into());
    let reference_version = first_line("dpkg-query", &["-W", "-f=${Version}", "containernetworking-plugins"]);
    format!(
        "Measured {} on {cpu}, {cores} cores, {memory}; kernel {}; {}; reference plugins {} ({reference_version}).\n",
        first_line("date", &["-u", "+%Y-%m-%d"]),
        first_line("uname", &["-r"]),
        first_line("nft", &["--version"]),
        reference.display(),
    )
}
