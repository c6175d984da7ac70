# firewall through cnitool, in the chains Podman 4 (0.4.0, "backend": "") and nerdctl (1.0.0,
# ingressPolicy same-bridge) write, on a host whose FORWARD policy drops; side by side with the
# reference (Debian's 1.1.1), and each implementation deleting what the other added.

# No system bus in the sandbox: "backend": "" must mean iptables for both implementations, and
# nothing may reach a firewalld outside it.
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$SANDBOX_WORK/no-bus
iptables -P FORWARD DROP
ip6tables -P FORWARD DROP

ip netns add world
ip link add uplink type veth peer name eth0 netns world
ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up
ip -n world addr add 198.51.100.2/24 dev eth0 && ip -n world link set eth0 up && ip -n world link set lo up
sysctl -qw net.ipv4.ip_forward=1

podman_list() {
  conflist "$1" "{\"cniVersion\":\"0.4.0\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"bridge\",\"bridge\":\"$2\",\"isGateway\":true,\"ipMasq\":true,\"hairpinMode\":true,
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-$1\",\"routes\":[{\"dst\":\"0.0.0.0/0\"}],
               \"ranges\":[[{\"subnet\":\"$3\"}]]}},
    {\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}},
    {\"type\":\"firewall\",\"backend\":\"\"}]}"
}
# A bridge and subnet of its own: 60-tuning.sh leaves cni-podman0 with 10.88.0.1/16 in the sandbox.
podman_list podman cni-podfw0 10.87.0.0/24
conflist nerd "{\"cniVersion\":\"1.0.0\",\"name\":\"nerd\",\"plugins\":[
  {\"type\":\"bridge\",\"bridge\":\"nerdctl0\",\"isGateway\":true,\"ipMasq\":true,\"hairpinMode\":true,
   \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-nerd\",\"routes\":[{\"dst\":\"0.0.0.0/0\"}],
             \"ranges\":[[{\"subnet\":\"10.4.0.0/24\"}]]}},
  {\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}},
  {\"type\":\"firewall\",\"ingressPolicy\":\"same-bridge\"}]}"

reaches_world() { ip netns exec "$1" ping -c1 -W1 -n 198.51.100.2 >/dev/null; }
addr_of() { ip -n "$1" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; }
# The firewall's per-address rules, with the address replaced by X: what both must write alike.
rules_of() { iptables-save -t filter | grep -F -- "$1/32" | sed "s#$1#X#g" | sort; }

ip netns add p1
out=$(cni add podman p1)
check "firewall: Podman's chain (0.4.0, backend \"\") ADDs through cnitool" test $? -eq 0
check "firewall: ... the container reaches the world through a dropping FORWARD" reaches_world p1
check "firewall: ... with the reference's chains and per-address rules" bash -c \
  "iptables-save -t filter | grep -q -- '-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD' &&
   iptables-save -t filter | grep -q -- '-A CNI-FORWARD -s $(addr_of p1)/32 -j ACCEPT'"
check "firewall: CHECK passes" cni check podman p1

if has_reference firewall && has_reference bridge && has_reference host-local && has_reference portmap; then
  ip netns add r1
  ref=$(cni --reference add podman r1)
  check "firewall: the reference ADDs the same chain" test $? -eq 0
  # Host veth names are random in both.
  check "firewall: ... and the results have the same shape" same_json "${out//veth????????/vethX}" "${ref//veth????????/vethX}" address gateway mac sandbox dns
  check "firewall: ... and the same per-address rules" \
    test "$(rules_of "$(addr_of p1)")" = "$(rules_of "$(addr_of r1)")"

  # A CNI_PATH with our plugins but the reference's firewall, and the other way round, so each
  # implementation's firewall deletes what the other's added (the rest of the chain is ours).
  mkdir -p "$SANDBOX_WORK/mix-ref" "$SANDBOX_WORK/mix-ours"
  for p in "$PLUGIN_DIR"/*; do [[ -x $p && -f $p ]] && ln -sf "$p" "$SANDBOX_WORK/mix-ref/"; done
  ln -sf "$REFERENCE_DIR/firewall" "$SANDBOX_WORK/mix-ref/firewall"
  for p in "$REFERENCE_DIR"/*; do ln -sf "$p" "$SANDBOX_WORK/mix-ours/"; done
  ln -sf "$PLUGIN_DIR/firewall" "$SANDBOX_WORK/mix-ours/firewall"

  p1addr=$(addr_of p1)
  check "firewall: the reference's DEL of our ADD" env CNI_PATH="$SANDBOX_WORK/mix-ref" "$CNITOOL" del podman /run/netns/p1
  check "firewall: ... leaves no rule for the address" bash -c "! iptables-save -t filter | grep -q -- '$p1addr/32'"
  r1addr=$(addr_of r1)
  check "firewall: our DEL of the reference's ADD" env CNI_PATH="$SANDBOX_WORK/mix-ours" "$CNITOOL" del podman /run/netns/r1
  check "firewall: ... leaves no rule for the address" bash -c "! iptables-save -t filter | grep -q -- '$r1addr/32'"
  check_fails "firewall: ... and the container no longer reaches the world" reaches_world r1

  # nerdctl's list (same-bridge) through the reference, then ours: one set of isolation rules.
  ip netns add n1 && ip netns add n2
  cni --reference add nerd n1 >/dev/null
  check "firewall: nerdctl's chain (same-bridge) ADDs after the reference's" cni add nerd n2
  check "firewall: ... one jump to the isolation chains" test "$(iptables-save -t filter | grep -c -- '-j CNI-ISOLATION-STAGE-1$')" -eq 1
  check "firewall: ... one isolation rule for the bridge" test "$(iptables-save -t filter | grep -c -- '-i nerdctl0 ! -o nerdctl0')" -eq 1
  check "firewall: ... both reach the world" bash -c "$(declare -f reaches_world); reaches_world n1 && reaches_world n2"
else
  cni del podman p1 >/dev/null
  ip netns add n2
  check "firewall: nerdctl's chain (same-bridge) ADDs" cni add nerd n2
fi

# Two isolated networks cannot reach each other; the world still reaches both (published ports).
podman_list other cni-podman1 10.89.0.0/24
sed -i 's/"backend":""/"backend":"","ingressPolicy":"same-bridge"/' "$NETCONFPATH/other.conflist"
ip netns add o1
cni add other o1 >/dev/null
check "firewall: a same-bridge network's container reaches the world" reaches_world o1
check_fails "firewall: ... but not a container on another same-bridge network" \
  ip netns exec o1 ping -c1 -W1 -n "$(addr_of n2)"

# DEL without prevResult (libcni's cache lost): the record finds the rules.
n2addr=$(addr_of n2)
rm -rf /var/lib/cni/results
check "firewall: DEL after libcni lost its cache" cni del nerd n2
check "firewall: ... leaves no rule for the address" bash -c "! iptables-save -t filter | grep -q -- '$n2addr/32'"
check "firewall: ... and the admin chain is still there" bash -c "iptables-save -t filter | grep -q '^:CNI-ADMIN'"

# nftables backend: our own table, nothing in iptables for the address.
podman_list nft cni-podman2 10.90.0.0/24
sed -i 's/"backend":""/"backend":"nftables"/' "$NETCONFPATH/nft.conflist"
ip netns add t1
check "firewall: nftables backend ADD" cni add nft t1
t1addr=$(addr_of t1)
check "firewall: ... the address is in table inet cni_firewall" bash -c "nft list map inet cni_firewall addr_v4 | grep -q '$t1addr'"
check "firewall: ... and not in iptables" bash -c "! iptables-save -t filter | grep -q -- '$t1addr/32'"
check "firewall: nftables CHECK" cni check nft t1
check "firewall: nftables DEL" cni del nft t1
check "firewall: ... the address is gone from the table" bash -c "! nft list map inet cni_firewall addr_v4 | grep -q '$t1addr'"

# firewalld, the real daemon, on a private bus in this sandbox (its own dbus-daemon; firewalld in a
# mount namespace of its own with a tmpfs on /run and an empty config directory): Podman's
# "backend": "" now means firewalld, for both implementations. Both are stopped by PID.
if command -v firewalld >/dev/null && command -v dbus-daemon >/dev/null; then
  bus=$SANDBOX_WORK/fwd
  mkdir -p "$bus/etc"
  printf '%s\n' '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"' \
    ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">' \
    "<busconfig><type>system</type><listen>unix:path=$bus/socket</listen><auth>EXTERNAL</auth>" \
    '<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy>' \
    '</busconfig>' > "$bus/bus.conf"
  dbus-daemon --config-file="$bus/bus.conf" --nofork --nopidfile 2>/dev/null &
  buspid=$!
  export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$bus/socket
  unshare --mount --propagation private sh -c \
    "mount -t tmpfs cni-firewalld /run && exec firewalld --nofork --nopid --system-config $bus/etc --log-target console" \
    >/dev/null 2>&1 &
  fwpid=$!
  trap 'kill $fwpid $buspid 2>/dev/null' EXIT
  fwd() { dbus-send --system --print-reply --dest="$1" "${@:2}" 2>/dev/null; }
  trusted() { fwd org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1 org.fedoraproject.FirewallD1.zone.getSources string:trusted; }
  # Until firewalld owns its name (a couple of seconds; at most 60).
  for _ in $(seq 300); do
    fwd org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetNameOwner string:org.fedoraproject.FirewallD1 >/dev/null && break
    sleep 0.2
  done
  ip netns add f1
  cni add podman f1 >/dev/null
  f1addr=$(addr_of f1)
  check "firewall: with firewalld on the bus, backend \"\" binds the address to zone trusted" \
    bash -c "$(declare -f fwd trusted); trusted | grep -q '\"$f1addr/32\"'"
  check "firewall: ... and writes no per-address iptables rule" bash -c "! iptables-save -t filter | grep -q -- '$f1addr/32'"
  check "firewall: ... CHECK asks firewalld" cni check podman f1
  if [[ -d $SANDBOX_WORK/mix-ref ]]; then
    check "firewall: the reference's DEL of our firewalld ADD" env CNI_PATH="$SANDBOX_WORK/mix-ref" "$CNITOOL" del podman /run/netns/f1
    check "firewall: ... removed the source" bash -c "$(declare -f fwd trusted); ! trusted | grep -q '\"$f1addr/32\"'"
    ip netns add f2
    cni --reference add podman f2 >/dev/null
    f2addr=$(addr_of f2)
    check "firewall: the reference binds its container too" bash -c "$(declare -f fwd trusted); trusted | grep -q '\"$f2addr/32\"'"
    check "firewall: our DEL of the reference's firewalld ADD" env CNI_PATH="$SANDBOX_WORK/mix-ours" "$CNITOOL" del podman /run/netns/f2
    check "firewall: ... removed the source" bash -c "$(declare -f fwd trusted); ! trusted | grep -q '\"$f2addr/32\"'"
  else
    check "firewall: firewalld DEL" cni del podman f1
    check "firewall: ... removed the source" bash -c "$(declare -f fwd trusted); ! trusted | grep -q '\"$f1addr/32\"'"
  fi
  kill $fwpid $buspid 2>/dev/null
  wait $fwpid $buspid 2>/dev/null
else
  echo "# firewall: firewalld or dbus-daemon is not installed (scripts/deps.sh): firewalld checks skipped"
fi
# The scenarios after this one share the sandbox host: its FORWARD policy as it was, and no
# table of firewalld's (stopped by a signal, it leaves them, its forward chain rejecting).
iptables -P FORWARD ACCEPT
ip6tables -P FORWARD ACCEPT
for t in "inet firewalld" "ip firewalld" "ip6 firewalld"; do nft delete table $t 2>/dev/null; done
# The uplink now, not when the kernel gets round to the deleted world namespace (cleanup_netns):
# the next scenario may make an uplink of its own.
ip link del uplink 2>/dev/null
true
