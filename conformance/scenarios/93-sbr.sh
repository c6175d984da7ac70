# sbr through cnitool: a container on two ptp networks, `front` (eth0, the default route) and
# `side` (net1, chained with sbr). The node checks sources strictly (rp_filter=1), so a reply from
# net1's address that leaves by eth0, as the main table sends it, is dropped; with sbr it leaves by
# net1. Side by side with the reference sbr (same ptp and host-local in front of it).

side_list() { # NAME DATADIR [SBR-KEYS]
  conflist "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"ptp\",\"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$2\",\"ranges\":[[{\"subnet\":\"10.62.0.0/24\"}],[{\"subnet\":\"fd00:62::/64\"}]]}},
    {\"type\":\"sbr\" ${3:-}}]}"
}
conflist front "{\"cniVersion\":\"1.0.0\",\"name\":\"front\",\"plugins\":[
  {\"type\":\"ptp\",\"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-front\",
   \"ranges\":[[{\"subnet\":\"10.61.0.0/24\"}]],\"routes\":[{\"dst\":\"0.0.0.0/0\"}]}}]}"
side_list side "$SANDBOX_WORK/ipam-side"
# cnitool names the interface by CNI_IFNAME.
net1() { CNI_IFNAME=net1 cni "$@"; }

# A client address on the node, outside both subnets.
ip addr add 192.0.2.9/32 dev lo
sysctl -qw net.ipv4.conf.all.rp_filter=1
ping_from_client() { ping -c1 -W1 -I 192.0.2.9 "$1"; }

ip netns add s1
ip netns exec s1 sysctl -qw net.ipv4.conf.all.rp_filter=0
cni add front s1 >/dev/null
before=$(ip -n s1 route show table all; ip -n s1 rule show)
r=$(net1 add side s1 2>&1) || true
check "sbr: ADD through cnitool (ptp + sbr, 1.0.0) passes ptp's result on" json_assert "$r" \
  "r['ips'][0]['address'] == '10.62.0.2/24' and r['interfaces'][1]['name'] == 'net1'"
check "sbr: a rule from net1's IPv4 address to table 100" bash -c "ip -n s1 rule show | grep -q 'from 10.62.0.2 lookup 100'"
check "sbr: ... and from its IPv6 address to table 101" bash -c "ip -n s1 -6 rule show | grep -q 'from fd00:62::2 lookup 101'"
check "sbr: table 100 routes by net1's gateway" bash -c "ip -n s1 route show table 100 | grep -q 'default via 10.62.0.1 dev net1'"
check "sbr: net1's routes left the main table" bash -c "! ip -n s1 route show table main | grep -q net1"
check "sbr: eth0 keeps the main default route" bash -c "ip -n s1 route show | grep -q 'default via 10.61.0.1 dev eth0'"
check "sbr: replies from net1's address leave by net1" ping_from_client 10.62.0.2
check "sbr: ... and eth0's by eth0" ping_from_client 10.61.0.2
check "sbr: CHECK passes" net1 check side s1
ip -n s1 rule del from 10.62.0.2 lookup 100
check_fails "sbr: CHECK fails once a rule is gone" net1 check side s1
ip -n s1 rule add from 10.62.0.2 lookup 100
check "sbr: DEL succeeds" net1 del side s1
check "sbr: ... the rules are gone" bash -c "! ip -n s1 rule show | grep -q 10.62.0.2 && ! ip -n s1 -6 rule show | grep -q fd00:62::2"
check "sbr: ... and the tables" bash -c "test -z \"\$(ip -n s1 route show table 100)\" && test -z \"\$(ip -n s1 -6 route show table 101)\""
check "sbr: ... the container is as before" bash -c "diff <(echo \"\$1\") <(ip -n s1 route show table all; ip -n s1 rule show)" _ "$before"
check "sbr: a second DEL succeeds" net1 del side s1

# DEL after the netns is gone: success, and no file where the netns was (the reference's lock
# creates one with O_CREAT and then fails).
net1 add side s1 >/dev/null
ip netns delete s1
check "sbr: DEL after the netns is gone succeeds" net1 del side s1
check "sbr: ... and creates no file at its path" test ! -e /run/netns/s1
cni del front s1 >/dev/null 2>&1

# `table`: rules only, into the operator's table.
side_list fixed "$SANDBOX_WORK/ipam-fixed" ',"table":4242'
ip netns add t1
net1 add fixed t1 >/dev/null
check "sbr: with table, a rule to that table" bash -c "ip -n t1 rule show | grep -q 'from 10.62.0.2 lookup 4242'"
check "sbr: ... and no route moved" bash -c "ip -n t1 route show table main | grep -q 'dev net1' && test -z \"\$(ip -n t1 route show table 4242)\""
check "sbr: ... DEL succeeds" net1 del fixed t1
check "sbr: ... and removes the rules" bash -c "! ip -n t1 rule show | grep -q 4242 && ! ip -n t1 -6 rule show | grep -q 4242"
ip netns delete t1

if has_reference sbr && has_reference ptp && has_reference host-local; then
  # Our ptp and host-local in front of either sbr: only sbr differs.
  mixed=$SANDBOX_WORK/mixed-sbr; mkdir -p "$mixed"
  for p in ptp host-local; do ln -sf "$PLUGIN_DIR/$p" "$mixed/$p"; done
  ln -sf "$REFERENCE_DIR/sbr" "$mixed/sbr"
  state() { ip -n "$1" rule show; ip -n "$1" -6 rule show; ip -n "$1" route show table all | grep -v '^local fe80::' | sed 's/ proto [a-z]*//; s/ metric [0-9]*//' | sort; }
  side_list ref "$SANDBOX_WORK/ipam-ref"
  side_list ours "$SANDBOX_WORK/ipam-ours"
  ip netns add r1; ip netns add o1
  # (The reference sbr logs every step on stderr.)
  theirs=$(CNI_IFNAME=net1 CNI_PATH=$mixed "$CNITOOL" add ref /run/netns/r1 2>/dev/null)
  ref_state=$(state r1)
  CNI_IFNAME=net1 CNI_PATH=$mixed "$CNITOOL" del ref /run/netns/r1 >/dev/null 2>&1
  ip netns delete r1
  ours=$(CNI_IFNAME=net1 CNI_PATH=$PLUGIN_DIR "$CNITOOL" add ours /run/netns/o1)
  check "sbr: same result as the reference" same_json "$ours" "$theirs" mac name sandbox
  check "sbr: same rules and tables in the container as the reference" bash -c "$(declare -f state); diff <(echo \"\$1\") <(state o1)" _ "$ref_state"
  # The reference's ADD, our DEL (a node switched over).
  CNI_IFNAME=net1 CNI_PATH=$PLUGIN_DIR "$CNITOOL" del ours /run/netns/o1 >/dev/null
  ip netns add x1
  CNI_IFNAME=net1 CNI_PATH=$mixed "$CNITOOL" add ref /run/netns/x1 >/dev/null 2>&1
  check "sbr: our DEL removes what the reference's ADD made" bash -c \
    "CNI_IFNAME=net1 CNI_PATH=$PLUGIN_DIR $CNITOOL del ref /run/netns/x1 && ! ip -n x1 rule show | grep -q 10.62.0.2 && test -z \"\$(ip -n x1 route show table 100)\""
  ip netns delete x1
fi
true
