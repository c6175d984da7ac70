# 30-podman.sh again with firewalld running, as on a Fedora or RHEL host: a real firewalld
# (Debian's) on the sandbox's own system bus (a dbus-daemon listening on /run/dbus, the standard
# socket, in the sandbox's /run), so Podman's `"backend": ""` now means firewalld and our firewall
# makes each container's address a source of the zone `trusted`, over D-Bus. firewalld's forward
# chain rejects whatever no zone accepts, so that is what its sources let through; iptables'
# FORWARD policy stays ACCEPT as on such a host (with firewalld, our firewall, like the reference,
# writes no iptables rule). Podman's plugin directory is ours alone. firewalld and its bus are
# stopped by PID at the end.

if ! command -v firewalld >/dev/null || ! command -v dbus-daemon >/dev/null; then
  echo "# podman-firewalld: firewalld or dbus-daemon is not installed (scripts/deps.sh): skipped"
  return 0
fi
setup_podman
iptables -P FORWARD ACCEPT && ip6tables -P FORWARD ACCEPT

bus=$SB/firewalld
mkdir -p "$bus/etc" /run/dbus
printf '%s\n' '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"' \
  ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">' \
  "<busconfig><type>system</type><listen>unix:path=/run/dbus/system_bus_socket</listen><auth>EXTERNAL</auth>" \
  '<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy>' \
  '</busconfig>' > "$bus/bus.conf"
unset DBUS_SYSTEM_BUS_ADDRESS   # the plugins find the bus where it always is
dbus-daemon --config-file="$bus/bus.conf" --nofork --nopidfile < /dev/null > /dev/null 2>&1 &
buspid=$!
# An empty configuration directory: firewalld's defaults (nftables backend, zone public), and
# nothing of the machine's /etc/firewalld read or written.
firewalld --nofork --nopid --system-config "$bus/etc" --log-target console < /dev/null > "$bus/firewalld.log" 2>&1 &
fwpid=$!
# Stopped by a signal, firewalld leaves its tables (its forward chain rejecting): the scenarios
# after this one share the sandbox host.
fwd_stop() {
  kill $fwpid $buspid 2>/dev/null
  wait $fwpid $buspid 2>/dev/null
  rm -f /run/dbus/system_bus_socket
  local t
  for t in "inet firewalld" "ip firewalld" "ip6 firewalld"; do nft delete table $t 2>/dev/null; done
}
trap fwd_stop EXIT
fwd() { dbus-send --system --print-reply --dest="$1" "${@:2}" 2>/dev/null; }
trusted() { fwd org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1 org.fedoraproject.FirewallD1.zone.getSources string:trusted; }
fwd_up() { fwd org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1 org.fedoraproject.FirewallD1.getDefaultZone >/dev/null && nft list table inet firewalld >/dev/null 2>&1; }
export -f fwd trusted
check "podman-firewalld: firewalld runs on the sandbox's system bus (its table inet firewalld is there)" wait_for 60 fwd_up
if world_serve; then pass "podman-firewalld: an outside namespace serves a page"; else fail "podman-firewalld: an outside namespace serves a page"; fi

net=e2e-firewalld
port=18082
check "podman-firewalld: network create" podman network create --subnet 10.89.7.0/24 $net
conf=$P/net.d/$net.conflist
check "podman-firewalld: its conflist names bridge, portmap, firewall (backend \"\"), tuning and dnsname" \
  json_assert "$(cat "$conf" 2>/dev/null)" '[p["type"] for p in r["plugins"]] == ["bridge", "portmap", "firewall", "tuning", "dnsname"] and r["plugins"][2].get("backend", "") == ""'
out=$(podman run -d --name web --network $net -p 127.0.0.1:$port:80 --cgroup-parent "$CGROUP_PARENT/podman" "$IMAGE" \
  sh -c 'echo hello from podman > /tmp/index.html; exec httpd -f -p 80 -h /tmp' 2>&1)
if [[ $? == 0 ]]; then pass "podman-firewalld: run -d -p 127.0.0.1:$port:80"; else fail "podman-firewalld: run -d -p 127.0.0.1:$port:80" "$out"; fi
ip=$(podman inspect --format "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" web 2>/dev/null)
echo "# container has ${ip:-no address}; zone trusted: $(trusted | grep -o '"[^"]*"' | tr '\n' ' ')"
check "podman-firewalld: the container's address is from the network's range" matches "$ip" '^10\.89\.7\.[0-9]+$'
check "podman-firewalld: our firewall made $ip/32 a source of firewalld's zone trusted" \
  bash -c "trusted | grep -q '\"$ip/32\"'"
check "podman-firewalld: ... and wrote no iptables rule" bash -c "[[ \$(iptables-save) != *'10.89.7.'* && \$(iptables-save) != *CNI-FORWARD* ]]"
check "podman-firewalld: the sandbox host fetches the page on 127.0.0.1:$port" wait_for 10 page_is "http://127.0.0.1:$port/" "hello from podman"
out=$(podman_fetch $net "http://$ip/" "http://198.51.100.2:8080/")
if same "$out" $'hello from podman\nhello from the world'; then
  pass "podman-firewalld: a second container on the network reaches the first, and the outside namespace"
else
  fail "podman-firewalld: a second container on the network reaches the first, and the outside namespace" "$out"
fi
check_fails "podman-firewalld: the outside namespace cannot open a connection to the container (firewalld rejects it)" \
  fetch "http://$ip/" world
check "podman-firewalld: the throwaway containers' sources left the zone with them" \
  bash -c "[[ \$(trusted | grep -c '10\\.89\\.7\\.') == 1 ]]"

check "podman-firewalld: a network without the firewall plugin (control)" podman_net_without_firewall e2e-nofw 10.89.9.0/24
check_fails "podman-firewalld: ... its container cannot reach the outside namespace" podman_fetch e2e-nofw "http://198.51.100.2:8080/"
check "podman-firewalld: ... network rm" podman network rm e2e-nofw
check "podman-firewalld: stop" podman stop -t 0 web
check "podman-firewalld: our firewall removed the source from zone trusted" bash -c "! trusted | grep -q '10\\.89\\.7\\.'"
check "podman-firewalld: no veth is left" no_veth
check "podman-firewalld: host-local released the address" no_allocation $net
check "podman-firewalld: rm" podman rm web
check "podman-firewalld: network rm" podman network rm $net
check "podman-firewalld: no container is left" test -z "$(podman ps -aq)"
check "podman-firewalld: firewalld still runs (nothing of ours upset it)" fwd_up
world_stop
fwd_stop
trap - EXIT
check "podman-firewalld: firewalld stopped, its tables removed" bash -c '! nft list table inet firewalld 2>/dev/null'
true
