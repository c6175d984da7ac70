# bridge + host-local + tuning through cnitool: MTU, MAC (from the config and from the runtime's
# `mac` capability), promiscuous mode and sysctls on the container's eth0, traffic across the
# bridge at the new MTU, DEL putting everything back; side by side with the reference tuning.
# Then Podman's default conflist shape: bridge + portmap + firewall + a bare tuning at 0.4.0.

tuning_list() { # NAME BRIDGE SUBNET TUNING-DATADIR [VERSION]
  conflist "$1" "{\"cniVersion\":\"${5:-1.0.0}\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"bridge\",\"bridge\":\"$2\",\"isGateway\":true,
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-$1\",\"ranges\":[[{\"subnet\":\"$3\"}]]}},
    {\"type\":\"tuning\",\"dataDir\":\"$4\",\"mtu\":1400,\"promisc\":true,\"capabilities\":{\"mac\":true},
     \"sysctl\":{\"net.ipv4.conf.IFNAME.arp_ignore\":\"1\",\"net.core.somaxconn\":\"2048\"}}]}"
}

# field JSON PYTHON-EXPRESSION: prints the expression's value with the parsed JSON as `r`.
field() { python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

run_side() { # PLUGIN-DIR NETWORK NS MAC: ADD with the MAC as the runtime's capability argument
  CAP_ARGS="{\"mac\":\"$4\"}" CNI_PATH=$1 "$CNITOOL" add "$2" "/run/netns/$3"
}

tdir=$SANDBOX_WORK/tuning-ours
tuning_list tune br-tune 10.80.0.0/24 "$tdir"
ip netns add t1; ip netns add t2
r1=$(run_side "$PLUGIN_DIR" tune t1 02:42:0a:50:00:02); r2=$(run_side "$PLUGIN_DIR" tune t2 02:42:0a:50:00:03)
check "tuning: ADD through cnitool with the mac capability" test -n "$r1" -a -n "$r2"
check "tuning: the result reports the new MAC on eth0" json_assert "$r1" \
  "[i for i in r['interfaces'] if i['name'] == 'eth0'][0]['mac'] == '02:42:0a:50:00:02' and r['ips'][0]['address'] == '10.80.0.2/24'"
check "tuning: eth0 has the MAC, the MTU and promiscuous mode" bash -c \
  "ip -n t1 -o link show eth0 | grep -q 'mtu 1400' && ip -n t1 -o link show eth0 | grep -q 'link/ether 02:42:0a:50:00:02' && ip -n t1 -o link show eth0 | grep -q PROMISC"
check "tuning: the sysctls are set in the container" bash -c \
  "[[ \$(ip netns exec t1 cat /proc/sys/net/ipv4/conf/eth0/arp_ignore) == 1 && \$(ip netns exec t1 cat /proc/sys/net/core/somaxconn) == 2048 ]]"
check "tuning: ... and not in the host" bash -c "[[ \$(cat /proc/sys/net/core/somaxconn) != 2048 ]]"
check "tuning: containers reach each other across the bridge" ip netns exec t1 ping -c1 -W1 10.80.0.3
check "tuning: a full 1400-byte packet crosses unfragmented" ip netns exec t1 ping -c1 -W1 -M do -s 1372 10.80.0.3
check_fails "tuning: ... a 1401-byte one does not leave eth0" ip netns exec t1 ping -c1 -W1 -M do -s 1373 10.80.0.3
check "tuning: the neighbour entry names the new MAC" bash -c "ip -n t2 neigh show 10.80.0.2 | grep -q 02:42:0a:50:00:02"
check "tuning: the originals are saved as the reference saves them" bash -c "ls $tdir | grep -q '_eth0.json$'"
check "tuning: CHECK passes" env CAP_ARGS='{"mac":"02:42:0a:50:00:02"}' CNI_PATH="$PLUGIN_DIR" "$CNITOOL" check tune /run/netns/t1
ip -n t1 link set eth0 mtu 1500
check_fails "tuning: CHECK fails once the MTU was changed behind its back" \
  env CAP_ARGS='{"mac":"02:42:0a:50:00:02"}' CNI_PATH="$PLUGIN_DIR" "$CNITOOL" check tune /run/netns/t1
veth1=$(field "$r1" "r['interfaces'][1]['name']")
check "tuning: DEL succeeds" cni del tune t1
check "tuning: ... its saved file is gone (t2's stays)" bash -c "[[ \$(ls $tdir | wc -l) == 1 ]]"
check "tuning: ... so are the veth and the address" bash -c "! ip link show $veth1 2>/dev/null && test ! -e $SANDBOX_WORK/ipam-tune/tune/10.80.0.2"
check "tuning: a second DEL succeeds" cni del tune t1
ip netns delete t2
check "tuning: DEL after the netns is gone succeeds" cni del tune t2
check "tuning: ... and leaves no saved file, no address" bash -c "! ls $tdir | grep -q . && test ! -e $SANDBOX_WORK/ipam-tune/tune/10.80.0.3"

# Without a bridge DEL in between: our DEL puts eth0 back as it was before tuning's ADD.
conflist solo "{\"cniVersion\":\"1.0.0\",\"name\":\"solo\",\"plugins\":[
  {\"type\":\"bridge\",\"bridge\":\"br-solo\",\"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-solo\",\"subnet\":\"10.81.0.0/24\"}}]}"
ip netns add s1
cni add solo s1 > /dev/null
before=$(ip -n s1 -o link show eth0 | sed 's/state [A-Z]* //')
tconf() { # VERSION PREV-RESULT
  printf '{"cniVersion":"%s","name":"solo","type":"tuning","dataDir":"%s","mtu":1300,"mac":"02:00:00:00:81:81","allmulti":true,"txQLen":50,"prevResult":%s}' \
    "$1" "$SANDBOX_WORK/tuning-solo" "$2"
}
prev=$(python3 -c 'import json,sys; print(json.dumps({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/s1"}]}))')
tplug() { # PLUGIN-DIR COMMAND CONF
  CNI_COMMAND=$2 CNI_CONTAINERID=solo-1 CNI_NETNS=/run/netns/s1 CNI_IFNAME=eth0 CNI_PATH=$1 "$1/tuning" <<< "$3"
}
check "tuning: ADD alone with mac, mtu, allmulti, txQLen" tplug "$PLUGIN_DIR" ADD "$(tconf 1.0.0 "$prev")"
check "tuning: ... all four applied" bash -c \
  "ip -n s1 -o link show eth0 | grep -q 'ALLMULTI.*mtu 1300.*qlen 50.*02:00:00:00:81:81'"
check "tuning: DEL puts all four back" tplug "$PLUGIN_DIR" DEL "$(tconf 1.0.0 "$prev")"
check "tuning: ... eth0 is as before" bash -c "[[ \"\$(ip -n s1 -o link show eth0 | sed 's/state [A-Z]* //')\" == '$before' ]]"
bad=$(tplug "$PLUGIN_DIR" ADD "$(tconf 1.0.0 "$prev" | sed 's/"mtu":1300/"mtu":100000/')" || true)
check "tuning: an MTU the link cannot take is code 7 naming mtu" json_assert "$bad" "r['code'] == 7 and 'mtu' in r['msg']"
check "tuning: ... and nothing changed" bash -c "[[ \"\$(ip -n s1 -o link show eth0 | sed 's/state [A-Z]* //')\" == '$before' ]]"

if has_reference tuning; then
  # The same chain with the reference tuning: the same result, and each plugin's DEL undoes the
  # other's ADD from the saved file.
  rdir=$SANDBOX_WORK/tuning-ref
  tuning_list tref br-tref 10.82.0.0/24 "$rdir"
  tuning_list tours br-tours 10.82.0.0/24 "$rdir"
  ip netns add rr; ip netns add oo
  # Our bridge and host-local in both, so that only tuning differs.
  mixed=$SANDBOX_WORK/mixed-bin; mkdir -p "$mixed"
  ln -sf "$PLUGIN_DIR/bridge" "$PLUGIN_DIR/host-local" "$mixed/"; ln -sf "$REFERENCE_DIR/tuning" "$mixed/"
  theirs=$(run_side "$mixed" tref rr 02:42:0a:52:00:02)
  ours=$(run_side "$PLUGIN_DIR" tours oo 02:42:0a:52:00:02)
  check "tuning: same result as the reference's (bridge, veth and eth0 entries, addresses)" python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
eth0 = lambda r: {k: v for k, v in r["interfaces"][2].items() if k != "sandbox"}
shape = lambda r: ([sorted(i) for i in r["interfaces"]], eth0(r), r["ips"], r.get("routes"), r["cniVersion"])
assert shape(a) == shape(b), (shape(a), shape(b))' "$ours" "$theirs"
  check "tuning: same link settings as the reference's" bash -c \
    "[[ \"\$(ip -n rr -o link show eth0 | grep -o 'mtu [0-9]*\|PROMISC\|link/ether [0-9a-f:]*')\" == \"\$(ip -n oo -o link show eth0 | grep -o 'mtu [0-9]*\|PROMISC\|link/ether [0-9a-f:]*')\" ]]"
  # Ours adds the per-interface sysctls it wrote (savedSysctl), which the reference ignores.
  check "tuning: the same saved file as the reference's, byte for byte but the MAC and savedSysctl" python3 -c '
import glob, re, sys
files = sorted(glob.glob(sys.argv[1] + "/*_eth0.json"))
assert len(files) == 2, files
norm = lambda t: re.sub(r",\n \"savedSysctl\": \{[^}]*\}", "", re.sub(r"\"mac\": \"[0-9a-f:]{17}\"", "MAC", t))
a, b = (norm(open(f).read()) for f in files)
assert a == b and a.startswith("{\n MAC,") and not a.endswith("\n"), (a, b)' "$rdir"
  cni del tours oo > /dev/null
  CNI_PATH=$mixed "$CNITOOL" del tref /run/netns/rr > /dev/null
  check "tuning: both DELs leave no saved file" bash -c "! ls $rdir | grep -q ."

  # Reference ADD (tuning alone, by hand), our DEL; and ours ADD, reference DEL.
  ip netns add x1
  cni add solo x1 > /dev/null
  xbefore=$(ip -n x1 -o link show eth0 | sed 's/state [A-Z]* //')
  xprev=$(python3 -c 'import json; print(json.dumps({"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x1"}]}))')
  xconf=$(printf '{"cniVersion":"0.4.0","name":"solo","type":"tuning","dataDir":"%s","mtu":1300,"mac":"02:00:00:00:82:82","promisc":true,"allmulti":true,"prevResult":%s}' "$SANDBOX_WORK/tuning-x" "$xprev")
  xplug() { CNI_COMMAND=$2 CNI_CONTAINERID=x-1 CNI_NETNS=/run/netns/x1 CNI_IFNAME=eth0 CNI_PATH=$1 "$1/tuning" <<< "$xconf"; }
  xplug "$REFERENCE_DIR" ADD > /dev/null
  check "tuning: our DEL undoes the reference's ADD" xplug "$PLUGIN_DIR" DEL
  check "tuning: ... eth0 is as before" bash -c "[[ \"\$(ip -n x1 -o link show eth0 | sed 's/state [A-Z]* //')\" == '$xbefore' ]]"
  check "tuning: ... and the reference's file is gone" bash -c "! ls $SANDBOX_WORK/tuning-x | grep -q ."
  xplug "$PLUGIN_DIR" ADD > /dev/null
  check "tuning: the reference's DEL undoes our ADD" xplug "$REFERENCE_DIR" DEL
  check "tuning: ... eth0 is as before" bash -c "[[ \"\$(ip -n x1 -o link show eth0 | sed 's/state [A-Z]* //')\" == '$xbefore' ]]"
  check "tuning: ... and our file is gone" bash -c "! ls $SANDBOX_WORK/tuning-x | grep -q ."
fi

if has_reference firewall; then
  # Podman 4's default network: bridge + portmap + firewall + a bare tuning, at 0.4.0. Ours first
  # in CNI_PATH (firewall included), the reference's after them.
  conflist podman "{\"cniVersion\":\"0.4.0\",\"name\":\"podman\",\"plugins\":[
    {\"type\":\"bridge\",\"bridge\":\"cni-podman0\",\"isGateway\":true,\"ipMasq\":true,\"hairpinMode\":true,
     \"ipam\":{\"type\":\"host-local\",\"routes\":[{\"dst\":\"0.0.0.0/0\"}],\"ranges\":[[{\"subnet\":\"10.88.0.0/16\",\"gateway\":\"10.88.0.1\"}]],
               \"dataDir\":\"$SANDBOX_WORK/ipam-podman\"}},
    {\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}},
    {\"type\":\"firewall\",\"backend\":\"iptables\"},
    {\"type\":\"tuning\"}]}"
  ip netns add p1; ip netns add p2
  pm() { CNI_PATH="$PLUGIN_DIR:$REFERENCE_DIR" "$CNITOOL" "$1" podman "/run/netns/$2"; }
  pr=$(pm add p1); pm add p2 > /dev/null
  check "tuning: Podman's conflist at 0.4.0 passes through the bare tuning" json_assert "$pr" \
    "r['cniVersion'] == '0.4.0' and r['ips'][0]['version'] == '4' and r['ips'][0]['address'] == '10.88.0.2/16' and [i['name'] for i in r['interfaces']][2] == 'eth0'"
  check "tuning: ... containers reach each other" ip netns exec p1 ping -c1 -W1 10.88.0.3
  check "tuning: ... CHECK passes" pm check p1
  check "tuning: ... DEL succeeds" pm del p1
  check "tuning: ... and again" pm del p1
  pm del p2 > /dev/null
fi
true
