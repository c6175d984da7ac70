#!/usr/bin/env python3
"""Builds a tiny OCI image (an oci-archive tarball) from Debian's busybox-static: one layer with
/bin/busybox, a symlink per applet at the path busybox itself names (`busybox --list-full`), a
minimal /etc and empty mount points. `ctr images import` and `podman load` both take it; no
registry is involved.

    mkimage.py OUTPUT.tar [NAME]        (NAME default: localhost/cni-e2e/busybox:latest)

The default command is `sleep infinity`, so the image also serves as the CRI pod sandbox
("pause") image. The archive is byte-for-byte reproducible for a given busybox binary.
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

BUSYBOX = os.environ.get("BUSYBOX", "/bin/busybox")
MTIME = 0  # reproducible: every entry and the gzip header carry the epoch


def entry(name, kind, mode, data=b"", target=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if kind == tarfile.SYMTYPE:
        info.linkname = target
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def layer_tar():
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    applets = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev", "run", "var", "var/www"}
    files = {
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
        "var/www/index.html": b"hello from busybox\n",
    }
    members = [entry(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755) for d in sorted(dirs)]
    members.append(entry("bin/busybox", tarfile.REGTYPE, 0o755, busybox))
    members += [entry(p, tarfile.REGTYPE, 0o644, data) for p, data in sorted(files.items())]
    for path in sorted(set(applets)):
        if path == "bin/busybox":
            continue
        depth = path.count("/")
        members.append(entry(path, tarfile.SYMTYPE, 0o777, target="../" * depth + "bin/busybox"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return raw.getvalue()


def blob(out, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    add_file(out, "blobs/sha256/" + digest.split(":")[1], data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def add_file(out, name, data):
    info, f = entry(name, tarfile.REGTYPE, 0o644, data)
    out.addfile(info, f)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    output = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "localhost/cni-e2e/busybox:latest"
    layer = layer_tar()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=MTIME) as z:
        z.write(layer)
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "infinity"], "WorkingDir": "/",
                   "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "conformance/e2e/mkimage.py"}],
    }
    with tarfile.open(output, "w", format=tarfile.GNU_FORMAT) as out:
        for d in ("blobs", "blobs/sha256"):
            out.addfile(entry(d, tarfile.DIRTYPE, 0o755)[0])
        add_file(out, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": blob(out, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json"),
            "layers": [blob(out, gz.getvalue(), "application/vnd.oci.image.layer.v1.tar+gzip")],
        }
        desc = blob(out, json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
        # containerd names the image from io.containerd.image.name, podman from the OCI ref name.
        desc["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]}
        add_file(out, "index.json", json.dumps(index, sort_keys=True).encode())


if __name__ == "__main__":
    main()
