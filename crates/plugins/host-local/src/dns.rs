//! `resolvConf`: a resolv.conf file read into the result's `dns`, as the reference reads it.

use anyhow::Context;
use cni::{Code, Dns, ResultExt};
use std::path::Path;

pub fn parse_resolv_conf(path: &Path) -> anyhow::Result<Dns> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading ipam.resolvConf {}", path.display()))
        .code(Code::Io)?;
    Ok(parse(&text))
}

fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [key, first, rest @ ..] = fields.as_slice() else {
            continue;
        };
        match *key {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = first.to_string(),
            "search" => dns.search.extend(std::iter::once(first).chain(rest).map(|s| s.to_string())),
            "options" => dns.options.extend(std::iter::once(first).chain(rest).map(|s| s.to_string())),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_reference_reads() {
        let dns = parse(
            "# comment\n; also comment\nnameserver 10.0.0.53\nnameserver fd00::53\n\ndomain example.com\n\
             search a.example.com b.example.com\noptions ndots:2 edns0\nsortlist 10.0.0.0\nnameserver\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.53", "fd00::53"]);
        assert_eq!(dns.domain, "example.com");
        assert_eq!(dns.search, ["a.example.com", "b.example.com"]);
        assert_eq!(dns.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let e = parse_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert_eq!(cni::Error::from_anyhow(&e).code, Code::Io);
    }
}
