//! dnsmasq's `addnhosts` file of one network: a line per container address, in the reference's
//! format (`<ip>\t<name>\t<alias>...`), so that dnsmasq, the reference plugin and an operator's
//! `cat` all read it as before.
//!
//! Each line we write ends with a comment naming the attachment (`# <containerID> <ifname>`):
//! dnsmasq ignores it, the reference's DEL still matches the line by its second field (the name),
//! and our DEL and GC find a container's lines by its identity rather than by a name that another
//! container may reuse. Lines without the comment (the reference wrote them) are matched by name,
//! as the reference does.

use std::net::IpAddr;

/// Who a line belongs to: `(containerID, ifname)`.
pub type Owner = (String, String);

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Entry {
        ip: IpAddr,
        names: Vec<String>,
        owner: Option<Owner>,
    },
    /// Anything we do not understand (blank lines, comments): kept as it is.
    Other(String),
}

impl Line {
    fn parse(text: &str) -> Line {
        let (data, comment) = match text.split_once('#') {
            Some((d, c)) => (d, Some(c)),
            None => (text, None),
        };
        let mut fields = data.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else { return Line::Other(text.to_string()) };
        let names: Vec<String> = fields.map(str::to_string).collect();
        if names.is_empty() {
            return Line::Other(text.to_string());
        }
        let owner = comment.and_then(|c| {
            let mut f = c.split_whitespace();
            match (f.next(), f.next(), f.next()) {
                (Some(id), Some(ifname), None) => Some((id.to_string(), ifname.to_string())),
                _ => None,
            }
        });
        Line::Entry { ip, names, owner }
    }

    fn render(&self) -> String {
        match self {
            Line::Other(text) => text.clone(),
            Line::Entry { ip, names, owner } => {
                let mut line = format!("{ip}\t{}", names.join("\t"));
                if let Some((id, ifname)) = owner {
                    line.push_str(&format!("\t# {id} {ifname}"));
                }
                line
            }
        }
    }

    /// Whether this line is the attachment's: ours by its comment, the reference's by its name.
    pub fn belongs_to(&self, owner: &Owner, name: Option<&str>) -> bool {
        match self {
            Line::Entry { owner: Some(o), .. } => o == owner,
            Line::Entry { owner: None, names, .. } => name.is_some_and(|n| names[0] == n),
            Line::Other(_) => false,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    pub lines: Vec<Line>,
}

impl Hosts {
    pub fn parse(text: &str) -> Hosts {
        Hosts { lines: text.lines().map(Line::parse).collect() }
    }

    pub fn render(&self) -> String {
        self.lines.iter().map(|l| l.render() + "\n").collect()
    }

    /// Whether any container is left: the network's server is needed only while one is.
    pub fn has_entries(&self) -> bool {
        self.lines.iter().any(|l| matches!(l, Line::Entry { .. }))
    }

    /// Removes the lines `keep` refuses; returns whether any went.
    pub fn retain(&mut self, keep: impl Fn(&Line) -> bool) -> bool {
        let before = self.lines.len();
        self.lines.retain(keep);
        self.lines.len() != before
    }

    /// Appends a line per address with the name first, the aliases after, as the reference does.
    /// A name with a dot is listed under the domain too: dnsmasq's `expand-hosts` qualifies only
    /// names without one.
    pub fn add(&mut self, ips: &[IpAddr], name: &str, aliases: &[String], domain: &str, owner: &Owner) {
        let mut names = Vec::new();
        for n in std::iter::once(name).chain(aliases.iter().map(String::as_str)) {
            names.push(n.to_string());
            let suffix = format!(".{domain}");
            if n.contains('.') && !n.to_ascii_lowercase().ends_with(&suffix.to_ascii_lowercase()) {
                names.push(format!("{n}{suffix}"));
            }
        }
        for ip in ips {
            self.lines.push(Line::Entry { ip: *ip, names: names.clone(), owner: Some(owner.clone()) });
        }
    }

    /// The names listed for `ip` in the attachment's lines.
    pub fn names_of(&self, owner: &Owner, name: Option<&str>, ip: IpAddr) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.belongs_to(owner, name))
            .filter_map(|l| match l {
                Line::Entry { ip: i, names, .. } if *i == ip => Some(names.iter().map(String::as_str)),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str) -> Owner {
        (id.to_string(), "eth0".to_string())
    }

    #[test]
    fn writes_the_reference_format_with_the_owner_as_a_comment() {
        let mut h = Hosts::default();
        let ips = ["10.89.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        h.add(&ips, "web", &["db".into(), "api.v1".into()], "dns.podman", &owner("c1"));
        assert_eq!(
            h.render(),
            "10.89.0.2\tweb\tdb\tapi.v1\tapi.v1.dns.podman\t# c1 eth0\n\
             fd00::2\tweb\tdb\tapi.v1\tapi.v1.dns.podman\t# c1 eth0\n"
        );
        assert_eq!(Hosts::parse(&h.render()), h);
    }

    #[test]
    fn reads_the_reference_lines_and_keeps_what_it_does_not_understand() {
        let text = "10.89.0.3\tdb\talias\n# a comment\n\nnot-an-ip name\n10.89.0.4\n";
        let h = Hosts::parse(text);
        assert_eq!(
            h.lines[0],
            Line::Entry { ip: "10.89.0.3".parse().unwrap(), names: vec!["db".into(), "alias".into()], owner: None }
        );
        assert!(h.lines[1..].iter().all(|l| matches!(l, Line::Other(_))));
        assert_eq!(h.render(), text);
    }

    #[test]
    fn lines_belong_by_identity_or_for_the_reference_by_name() {
        let mut h = Hosts::parse("10.89.0.3\tdb\n");
        h.add(&["10.89.0.2".parse().unwrap()], "web", &[], "d", &owner("c1"));
        h.add(&["10.89.0.5".parse().unwrap()], "web", &[], "d", &owner("c2"));
        // c1's DEL takes its own line, not c2's line of the same name.
        let mut c1 = h.clone();
        assert!(c1.retain(|l| !l.belongs_to(&owner("c1"), Some("web"))));
        assert_eq!(c1.render(), "10.89.0.3\tdb\n10.89.0.5\tweb\t# c2 eth0\n");
        // The reference's line goes by its name.
        let mut db = h.clone();
        assert!(db.retain(|l| !l.belongs_to(&owner("cx"), Some("db"))));
        assert!(!db.retain(|l| !l.belongs_to(&owner("cx"), None)));
        assert_eq!(db.lines.len(), 2);
        assert_eq!(h.names_of(&owner("c2"), None, "10.89.0.5".parse().unwrap()), ["web"]);
        assert!(h.names_of(&owner("c2"), None, "10.89.0.2".parse().unwrap()).is_empty());
        let mut empty = Hosts::parse("# nothing\n");
        assert!(!empty.has_entries());
        empty.add(&["10.0.0.1".parse().unwrap()], "a", &[], "d", &owner("c"));
        assert!(empty.has_entries());
    }
}
