# Sourced by conformance/e2e/run.sh outside the sandbox: what of the machine the run could have
# changed, read (never changed) before and after, and the checks that nothing differs.

# The machine's network, firewall, mounts and the runtimes' default directories, as text.
host_snapshot() {
  echo "## network namespaces"; ip netns list
  echo "## links"; ip -br link
  echo "## addresses"; ip -br addr
  echo "## routes"; ip route show table all; ip -6 route show table all
  echo "## nftables"; nft list ruleset
  echo "## iptables"; iptables-save 2>/dev/null | grep -v '^#'; ip6tables-save 2>/dev/null | grep -v '^#'
  echo "## mounts"; awk '{print $5, $9}' /proc/self/mountinfo | sort
  echo "## directories"
  local d
  for d in /run /run/mount /var/lib /var/lib/cni /var/tmp /etc/cni /etc/cni/net.d /etc/containerd /etc/containers /opt /opt/cni; do
    [[ -d $d ]] && echo "$d: $(ls -A "$d" | tr '\n' ' ')"
  done
  # Another run's work directory is a leftover once that run has ended (two runs at once, as
  # on a developer's machine, each saw the other's as one).
  local owner
  for d in /tmp/cni-e2e.*; do
    [[ -e $d && $d != "$E2E_WORK" ]] || continue
    owner=$(cat "$d/owner" 2>/dev/null)
    [[ -n $owner && -d /proc/$owner ]] && continue
    echo "left over: $d"
  done
}

# Processes in a pid namespace other than run.sh's: every process of the sandbox is.
foreign_processes() {
  local ours p ns
  ours=$(readlink /proc/self/ns/pid)
  for p in /proc/[0-9]*; do
    ns=$(readlink "$p/ns/pid" 2>/dev/null) || continue
    [[ $ns != "$ours" ]] && echo "${p#/proc/} $ns $( (tr '\0' ' ' < "$p/cmdline") 2>/dev/null | cut -c1-80)"
  done
}

host_pass() { echo "ok - $1"; echo ok >> "$RESULTS"; }
host_fail() { echo "not ok - $1"; [[ -n ${2:-} ]] && sed 's/^/    # /' <<< "$2"; echo fail >> "$RESULTS"; }

host_checks() {
  local left diff cg
  # The kernel ends the sandbox's processes with its pid namespace; give them a moment to go.
  for _ in $(seq 50); do
    left=$(comm -13 <(sort "$E2E_WORK/processes-before") <(foreign_processes | sort))
    [[ -z $left ]] && break
    sleep 0.1
  done
  if [[ -z $left ]]; then host_pass "host: no process of the sandbox is left"; else host_fail "host: no process of the sandbox is left" "$left"; fi

  # runc creates the containers' cgroups in the machine's hierarchies, under the cgroup parent
  # the scenarios name after this run (cni-e2e.XXXXXX): remove what is left of it, leaves first.
  cg=$(basename "$E2E_WORK")
  find /sys/fs/cgroup -depth -type d -path "*/$cg*" -exec rmdir {} + 2>/dev/null
  left=$(comm -13 "$E2E_WORK/cgroups-before" <(host_cgroups))
  if [[ -z $left ]]; then host_pass "host: no cgroup of the sandbox is left"; else host_fail "host: no cgroup of the sandbox is left" "$left"; fi

  for _ in $(seq 30); do
    diff=$(diff "$E2E_WORK/before" <(host_snapshot)) && break
    sleep 0.1
  done
  if [[ -z $diff ]]; then
    host_pass "host: the machine's namespaces, links, addresses, routes, firewall, mounts and runtime directories are as before"
  else
    host_fail "host: the machine's namespaces, links, addresses, routes, firewall, mounts and runtime directories are as before" "$diff"
  fi
}

# Top-level cgroups of every hierarchy, where a runtime's default parents would appear ("default",
# "k8s.io", "libpod_parent", "machine.slice"), and anything named after this run.
host_cgroups() {
  if [[ -e /sys/fs/cgroup/cgroup.controllers ]]; then
    find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d
  else
    find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d
  fi 2>/dev/null | sort
  find /sys/fs/cgroup -type d -path "*/$(basename "$E2E_WORK")*" 2>/dev/null | sort
}
