#!/usr/bin/env bash
# Release tarballs like the reference's (make dist): every plugin of the Makefile's PLUGINS,
# linked statically, for x86_64 and aarch64 Linux, packed flat (./bridge, ./portmap, ...,
# ./LICENSE, ./README.md) as
#   dist/cni-plugins-rs-linux-<amd64|arm64>-v<version>.tgz  (+ .sha256, .sha512, sha256sum's format)
#
#   scripts/dist.sh [--arch amd64|arm64]... [--out DIR] [--target-dir DIR] PLUGIN...
#   (make dist passes $(PLUGINS); with no PLUGIN the Makefile's PLUGINS line is read)
#
# The version is the workspace's ([workspace.package] version in Cargo.toml), the one the plugins
# print in their about line (cni::skel::about, CARGO_PKG_VERSION); the script checks that the
# amd64 binaries say it.
#
# Reproducible: two builds of one commit give the same bytes, wherever the checkout is.
#  - paths: --remap-path-prefix maps the checkout to /build/cni-plugins-rs, cargo's home to /cargo
#    and rustup's toolchain to /rustc, for every crate (panic messages carry file names);
#  - time: SOURCE_DATE_EPOCH is the commit's time; it is every file's mtime in the tarball;
#  - tar: --sort=name --owner=0 --group=0 --numeric-owner --mode=go-w --format=gnu, and gzip -n
#    (no name or time in the gzip header);
#  - the build itself: Cargo.lock (--locked), one codegen unit with fat LTO (Cargo.toml's release
#    profile), the toolchain of the machine (rustc -V is printed; another rustc gives other bytes).
# The aarch64 binaries are linked by Debian's gcc-aarch64-linux-gnu against its static glibc
# (libc6-dev-arm64-cross); both come from scripts/deps.sh.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

arches=() out=$top/dist target_dir=$top/target/dist plugins=()
while (($#)); do
  case $1 in
    --arch) arches+=("$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    --target-dir) target_dir=$2; shift 2 ;;
    -*) echo "dist: unknown option $1" >&2; exit 2 ;;
    *) plugins+=("$1"); shift ;;
  esac
done
((${#arches[@]})) || arches=(amd64 arm64)
if ((${#plugins[@]} == 0)); then
  read -r -a plugins <<< "$(sed -n 's/^PLUGINS[[:space:]]*:\{0,1\}=[[:space:]]*//p' Makefile | head -1)"
fi
((${#plugins[@]})) || { echo "dist: no plugins (PLUGINS in the Makefile)" >&2; exit 1; }

say() { echo "dist: $*" >&2; }

version=$(cargo metadata --no-deps --locked --format-version 1 \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cni"))')
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | head -1 || true)
[[ -z $dirty ]] || say "warning: the work tree has uncommitted changes; the tarballs are not those of a commit"
say "v$version of ${plugins[*]} ($(rustc -V)), SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"

cargo_home=${CARGO_HOME:-$HOME/.cargo}
sysroot=$(rustc --print sysroot)
remap="--remap-path-prefix=$top=/build/cni-plugins-rs --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$sysroot=/rustc"
# The package of each plugin binary (firewall's is firewall-plugin: the library crate is firewall).
mapfile -t pkgs < <(cargo metadata --no-deps --locked --format-version 1 | python3 -c '
import json, sys
bins = {t["name"]: p["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "bin" in t["kind"]}
for b in sys.argv[1:]:
    if b not in bins: sys.exit("dist: no binary named " + b + " in the workspace")
    print("-p"); print(bins[b])
' "${plugins[@]}")

mkdir -p "$out"
for arch in "${arches[@]}"; do
  case $arch in
    amd64) triple=x86_64-unknown-linux-gnu ;;
    arm64)
      triple=aarch64-unknown-linux-gnu
      command -v aarch64-linux-gnu-gcc > /dev/null \
        || { say "no aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu, see scripts/deps.sh)"; exit 1; }
      rustup target list --installed 2> /dev/null | grep -qx "$triple" || rustup target add "$triple" >&2
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
      ;;
    *) say "unknown arch $arch (amd64, arm64)"; exit 2 ;;
  esac
  say "building $arch ($triple)"
  # --target puts the artifacts under <target-dir>/<triple>/ and keeps RUSTFLAGS off build
  # scripts and proc-macros (which run on this machine): only the plugins get crt-static.
  RUSTFLAGS="-C target-feature=+crt-static $remap" \
    cargo build --release --locked --target "$triple" --target-dir "$target_dir" "${pkgs[@]}" --bins
  bin=$target_dir/$triple/release
  stage=$(mktemp -d)
  chmod 0755 "$stage"
  trap 'rm -rf "$stage"' EXIT
  for p in "${plugins[@]}"; do
    install -m 0755 "$bin/$p" "$stage/$p"
    # Static: no interpreter, so the binary runs on any Linux of its architecture.
    if file "$stage/$p" | grep -q 'interpreter'; then say "$p ($arch) is not statically linked"; exit 1; fi
  done
  install -m 0644 LICENSE README.md "$stage/"
  if [[ $arch == amd64 ]]; then
    for p in "${plugins[@]}"; do
      # Whole output first: a closed pipe (head) would make the plugin's second line fail.
      about=$(env -u CNI_COMMAND "$stage/$p" 2>&1 < /dev/null)
      about=${about%%$'\n'*}
      [[ $about == "CNI $p plugin v$version" ]] || { say "$p says '$about', expected v$version"; exit 1; }
    done
  fi
  touch --no-dereference --date="@$SOURCE_DATE_EPOCH" "$stage" "$stage"/*
  name=cni-plugins-rs-linux-$arch-v$version.tgz
  tar -C "$stage" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --mode=go-w --format=gnu -cf - . | gzip -n -9 > "$out/$name.tmp"
  mv "$out/$name.tmp" "$out/$name"
  (cd "$out" && sha256sum "$name" > "$name.sha256" && sha512sum "$name" > "$name.sha512")
  rm -rf "$stage"
  trap - EXIT
  say "$out/$name: $(cut -d' ' -f1 "$out/$name.sha256")"
done
