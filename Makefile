# cni-plugins-rs. After cloning, two commands matter:
#   make demo   set up what is needed and show a container getting its network, in a sandbox
#   make test   unit, kernel and conformance tests (as root: they create network namespaces)

CARGO   ?= cargo
PLUGINS := loopback host-local bridge portmap host-device firewall tuning ptp bandwidth dnsname static macvlan tap dummy dhcp sbr vlan ipvlan vrf
DESTDIR ?=
BINDIR  ?= /opt/cni/bin
UNITDIR ?= /lib/systemd/system
CNITOOL := target/tools/cnitool

.PHONY: all build release deps cnitool demo test test-vm test-vm-full unit conformance e2e soak soak-short fuzz bench profile lint install clean dist dist-repro deb test-dist test-arm64 test-deb

all: release

build:
	$(CARGO) build --workspace --locked

# Plugins are linked statically (glibc's static-pie): they start in about 0.3 ms less per exec,
# which a runtime pays for every plugin of every ADD and DEL, and they run on any Linux whatever
# its glibc. `cargo rustc` applies the flag to the plugin binaries only, not to proc-macros.
# The firewall plugin's package is firewall-plugin (the library crate is `firewall`).
release:
	$(CARGO) build --release --locked -p bench
	for p in $(PLUGINS); do $(CARGO) rustc --release --locked -p $$(test $$p = firewall && echo firewall-plugin || echo $$p) --bin $$p -- -C target-feature=+crt-static || exit 1; done

deps:
	scripts/deps.sh

$(CNITOOL):
	scripts/build-cnitool.sh $(CNITOOL)

cnitool: deps $(CNITOOL)

demo: cnitool release
	scripts/demo.sh

test: cnitool unit conformance e2e soak-short test-vm

# The short VM lane on a second kernel, Debian's 6.1 LTS under qemu (scripts/vm.sh fetches and
# caches it under target/vm/): the tests that need what this kernel lacks (bridge VLANs), netlink
# and native nf_tables tests, and the bridge and portmap conformance scenarios.
test-vm: cnitool build
	scripts/test-vm.sh

# Every kernel test and conformance scenario in the guest (scripts/test-vm.sh --full): about 25
# minutes under emulation, so it is a pre-release check and not part of make test.
test-vm-full: cnitool build
	scripts/test-vm.sh --full

# Unit tests and kernel tests (the latter run the built binaries in throwaway namespaces).
unit:
	$(CARGO) test --workspace --locked

conformance: build
	conformance/run.sh

# End-to-end: containerd (ctr, and CRI as the kubelet drives it) and podman run the built plugins,
# in a sandbox (as root; about 2.5 minutes: podman notices a container's exit only after 20 s there).
e2e: build
	conformance/e2e/run.sh

# Thousands of ADD/DEL cycles from 8 workers with random SIGKILLs, then a count of leftovers
# (must be zero). soak-short is the 400-cycle run of make test, on the debug build, after the
# soak's self-test (an address lost behind the plugins' back must make it fail).
soak: release
	scripts/soak.sh

soak-short: build
	SOAK_PROFILE=debug scripts/soak.sh --cycles 16 --workers 2 --kill-percent 0 --lose-address --plugins target/debug
	SOAK_PROFILE=debug scripts/soak.sh --cycles 400 --plugins target/debug

# Coverage-guided fuzzing of the parsers (config, conflist, results, CNI_ARGS, the dispatcher,
# host-local's config and store files): FUZZ_SECONDS (default 60) per target; installs cargo-fuzz.
fuzz:
	scripts/fuzz.sh

# Where a chain ADD and DEL spend their time (trace marks of the release build).
profile: cnitool release
	scripts/profile.sh

# Ours against the Go reference plugins (/usr/lib/cni), one table: bench-results/latest.md.
bench: deps cnitool release
	scripts/bench.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

install: release
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(addprefix target/release/,$(PLUGINS)) $(DESTDIR)$(BINDIR)/
	install -d $(DESTDIR)$(UNITDIR)
	install -m 0644 crates/plugins/dhcp/systemd/cni-dhcp.service crates/plugins/dhcp/systemd/cni-dhcp.socket $(DESTDIR)$(UNITDIR)/

# Release artifacts (not part of make test). dist/cni-plugins-rs-linux-{amd64,arm64}-v<version>.tgz
# with .sha256 and .sha512: static binaries of $(PLUGINS), reproducible (scripts/dist.sh says how).
dist:
	scripts/dist.sh $(PLUGINS)

# The tarballs of HEAD built again from a fresh clone at another path: byte for byte the same?
dist-repro:
	scripts/dist-repro.sh

# dist/cni-plugins-rs_<version>_{amd64,arm64}.deb, by dpkg-deb from the dist binaries (scripts/deb.sh).
deb: dist
	scripts/deb.sh $(PLUGINS)

# The amd64 tarball unpacked into an empty directory passes the conformance scenarios (here).
test-dist: cnitool
	scripts/test-dist.sh amd64

# The arm64 tarball's conformance run on Debian's arm64 kernel under qemu-system-aarch64 (TCG).
test-arm64:
	scripts/test-dist.sh arm64

# The .deb installed, used from /usr/lib/cni and /opt/cni/bin, and removed, in the amd64 qemu
# guest (its root is an overlay: the machine's dpkg database and /usr/lib/cni are not touched).
test-deb:
	scripts/test-deb.sh

clean:
	$(CARGO) clean
