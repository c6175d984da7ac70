//! CNI spec versions: which ones we speak, and how they compare.

use std::cmp::Ordering;

/// The newest spec version; what VERSION reports as its own.
pub const CURRENT: &str = "1.1.0";

/// Every version a plugin of this suite accepts in `cniVersion`, oldest first.
pub const SUPPORTED: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A config without `cniVersion` is a 0.1.0 config (libcni `pkg/types/create`).
pub const IMPLICIT: &str = "0.1.0";

/// Whether `version` is one of [`SUPPORTED`], spelled exactly (as libcni's skel requires).
pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

/// Parses `major.minor.patch` (each a decimal number). `None` for anything else.
pub fn parse(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.');
    let mut next = || parts.next()?.parse::<u32>().ok();
    let triple = (next()?, next()?, next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(triple)
}

/// Compares two versions; unparseable versions sort before every valid one.
pub fn compare(a: &str, b: &str) -> Ordering {
    parse(a).cmp(&parse(b))
}

/// `a >= b`, the gate the spec puts on CHECK (0.4.0), STATUS and GC (1.1.0).
pub fn at_least(a: &str, b: &str) -> bool {
    compare(a, b) != Ordering::Less
}

/// The result shape a version uses on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 0.1.0 and 0.2.0: `ip4` / `ip6` objects.
    V02,
    /// 0.3.0, 0.3.1 and 0.4.0: `interfaces` and `ips` with a `version` field.
    V04,
    /// 1.0.0 and 1.1.0.
    V1,
}

pub fn shape(version: &str) -> Option<Shape> {
    match version {
        "0.1.0" | "0.2.0" => Some(Shape::V02),
        "0.3.0" | "0.3.1" | "0.4.0" => Some(Shape::V04),
        "1.0.0" | "1.1.0" => Some(Shape::V1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(parse("0.4.0"), Some((0, 4, 0)));
        assert_eq!(parse("1.10.2"), Some((1, 10, 2)));
        assert_eq!(parse("1.0"), None);
        assert_eq!(parse("1.0.0.0"), None);
        assert_eq!(parse("v1.0.0"), None);
        assert!(at_least("1.1.0", "0.4.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(at_least("0.10.0", "0.4.0"));
        assert!(!at_least("garbage", "0.1.0"));
    }

    #[test]
    fn supported_list_is_exact() {
        for v in SUPPORTED {
            assert!(is_supported(v));
            assert!(shape(v).is_some());
        }
        assert!(!is_supported("1.1"));
        assert!(!is_supported("2.0.0"));
        assert!(!is_supported(""));
    }
}
