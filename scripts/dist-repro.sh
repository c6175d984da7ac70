#!/usr/bin/env bash
# Reproducibility check of make dist (make dist-repro): builds the tarballs of HEAD here (dist/)
# and again from a fresh clone of HEAD at another path with an empty target directory, and
# compares them byte for byte (and the binaries in them, to say which differ if any).
#
#   scripts/dist-repro.sh [--arch amd64|arm64]...      (default: both; a few minutes per arch)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
args=("$@")
[[ -z $(git status --porcelain --untracked-files=no) ]] \
  || { echo "dist-repro: commit first (the clone builds HEAD)" >&2; exit 1; }
plugins=$(sed -n 's/^PLUGINS[[:space:]]*:\{0,1\}=[[:space:]]*//p' Makefile | head -1)
# shellcheck disable=SC2086
scripts/dist.sh "${args[@]}" $plugins
clone=$(mktemp -d /tmp/cni-plugins-rs-repro.XXXXXX)
trap 'rm -rf "$clone"' EXIT
git clone -q --no-hardlinks "$top" "$clone/src"
# shellcheck disable=SC2086
(cd "$clone/src" && scripts/dist.sh "${args[@]}" $plugins)
status=0
for t in "$clone"/src/dist/*.tgz; do
  name=$(basename "$t")
  a=$(sha256sum < "dist/$name" | cut -d' ' -f1) b=$(sha256sum < "$t" | cut -d' ' -f1)
  if [[ $a == "$b" ]]; then
    echo "dist-repro: $name identical: $a"
  else
    echo "dist-repro: $name DIFFERS: $a here, $b in the clone"
    mkdir -p "$clone/x/a" "$clone/x/b"
    tar -C "$clone/x/a" -xzf "dist/$name"
    tar -C "$clone/x/b" -xzf "$t"
    (cd "$clone/x" && diff -rq a b) || true
    status=1
  fi
done
exit $status
