//! Which executables are this suite's own plugins, of this very version: a plugin that delegates
//! to one of them (bridge to host-local) may run that plugin's code in its own process instead of
//! executing the file, and saves the exec, the dynamic loading and the pipes (about a millisecond
//! per ADD or DEL, a tenth of a chain's ADD).
//!
//! Only a file that is provably ours is replaced: every plugin of the suite carries [`MARK`] (the
//! workspace's version) in an ELF section of its own, and [`is_ours`] reads that section from the
//! file that `CNI_PATH` resolves to. Anything else found there (the reference's binary, a wrapper
//! script, another release of ours) is executed as the spec says. Reading the section costs a few
//! `pread`s of the file's headers, not a read of the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const SECTION: &[u8] = b".cni_rs_suite";
const MARK_LEN: usize = 48;

const fn mark() -> [u8; MARK_LEN] {
    let text = concat!("cni-rs plugin suite v", env!("CARGO_PKG_VERSION")).as_bytes();
    assert!(text.len() < MARK_LEN);
    let mut out = [0u8; MARK_LEN];
    let mut i = 0;
    while i < text.len() {
        out[i] = text[i];
        i += 1;
    }
    out
}

/// The suite's mark, in an allocated section so that `strip` keeps it. [`keep`] references it
/// from every plugin's start, or the linker would drop an unreferenced section.
#[used]
#[unsafe(link_section = ".cni_rs_suite")]
pub static MARK: [u8; MARK_LEN] = mark();

/// Keeps [`MARK`] in the binary (called from [`crate::skel::run`]).
pub fn keep() {
    std::hint::black_box(&MARK);
}

/// Whether `path` is a plugin executable of this suite and version (its `.cni_rs_suite` section
/// holds [`MARK`]). Any error reading it means no.
pub fn is_ours(path: &Path) -> bool {
    File::open(path).ok().and_then(|f| section(&f, SECTION)).is_some_and(|content| content[..] == MARK[..])
}

/// The content of the named section of a 64-bit little-endian ELF file (both of our targets),
/// read through the section header table; sizes are bounded so a hostile file costs nothing.
fn section(file: &File, name: &[u8]) -> Option<Vec<u8>> {
    let read = |offset: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    };
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());

    let header = read(0, 64)?;
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let (table, entry, count, names) =
        (u64_at(&header, 0x28), u16_at(&header, 0x3a) as usize, u16_at(&header, 0x3c) as usize, u16_at(&header, 0x3e));
    if entry < 64 || count == 0 || count > 4096 || names as usize >= count {
        return None;
    }
    let headers = read(table, entry * count)?;
    let shdr = |i: usize| &headers[i * entry..i * entry + 64];
    let strings = shdr(names as usize);
    let (strings_at, strings_len) = (u64_at(strings, 0x18), u64_at(strings, 0x20));
    if strings_len > 1 << 20 {
        return None;
    }
    let strings = read(strings_at, strings_len as usize)?;
    (0..count).map(shdr).find_map(|h| {
        let start = u32_at(h, 0) as usize;
        let found = strings.get(start..)?.split(|b| *b == 0).next()? == name;
        let (offset, size) = (u64_at(h, 0x18), u64_at(h, 0x20));
        if !found || size != MARK_LEN as u64 {
            return None;
        }
        read(offset, MARK_LEN)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_carries_the_mark_and_other_files_do_not() {
        keep();
        let me = std::env::current_exe().unwrap();
        assert!(is_ours(&me), "{} has no suite mark", me.display());
        assert!(!is_ours(Path::new("/bin/sh")));
        assert!(!is_ours(Path::new("/nonexistent")));
        let dir = std::env::temp_dir().join(format!("cni-suite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A script, and a copy of a binary whose mark says another version.
        std::fs::write(dir.join("script"), "#!/bin/sh\n").unwrap();
        assert!(!is_ours(&dir.join("script")));
        let mut other = std::fs::read(&me).unwrap();
        let at = other.windows(MARK_LEN).position(|w| w == MARK).unwrap();
        other[at + MARK_LEN - 2] = b'x';
        std::fs::write(dir.join("other"), &other).unwrap();
        assert!(!is_ours(&dir.join("other")));
        std::fs::write(dir.join("same"), std::fs::read(&me).unwrap()).unwrap();
        assert!(is_ours(&dir.join("same")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
