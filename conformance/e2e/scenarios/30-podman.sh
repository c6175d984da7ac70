# Podman with its CNI network backend, on our plugin directory alone (cni_plugin_dirs =
# /opt/cni/bin, PLUGIN_DIR; no /usr/lib/cni): `podman network create` writes a conflist naming
# bridge, portmap, firewall, tuning and (DNS on, the default) dnsname; `podman run -p
# 127.0.0.1:PORT:80` publishes a busybox httpd; a second container reaches it; then stop, rm and
# `network rm`; then two containers reach each other by name and alias. The sandbox host's FORWARD
# policy is DROP and no firewalld runs, so Podman's `"backend": ""` means iptables and our
# firewall's CNI-FORWARD rules are what let the containers' traffic through (31-podman-firewalld.sh:
# the same with firewalld). The checks from outside show that the bridge and the published port
# are ours (nft tables inet cni_bridge and inet cni_portmap; the reference portmap 1.1.1 would
# have used iptables' nat table).

setup_podman
forward_drop
if world_serve; then pass "podman: an outside namespace serves a page (198.51.100.2:8080)"; else fail "podman: an outside namespace serves a page (198.51.100.2:8080)"; fi
check "podman: its network backend is CNI, its storage in the sandbox" \
  test "$(podman info --format '{{.Host.NetworkBackend}} {{.Store.GraphRoot}}')" = "cni $P/storage"

net=e2e-podman
port=18081
check "podman: network create" podman network create --subnet 10.89.5.0/24 $net
conf=$P/net.d/$net.conflist
# DNS is on by default, and with dnsname in the plugin directory podman adds it to the chain.
check "podman: its conflist names bridge, portmap, firewall, tuning and dnsname" \
  json_assert "$(cat "$conf" 2>/dev/null)" '[p["type"] for p in r["plugins"]] == ["bridge", "portmap", "firewall", "tuning", "dnsname"]'
bridge=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["plugins"][0]["bridge"])' "$conf" 2>/dev/null)

out=$(podman run -d --name web --network $net -p 127.0.0.1:$port:80 --cgroup-parent "$CGROUP_PARENT/podman" "$IMAGE" \
  sh -c 'echo hello from podman > /tmp/index.html; exec httpd -f -p 80 -h /tmp' 2>&1)
if [[ $? == 0 ]]; then pass "podman: run -d -p 127.0.0.1:$port:80"; else fail "podman: run -d -p 127.0.0.1:$port:80" "$out"; fi
cid=$(podman inspect --format '{{.Id}}' web 2>/dev/null)
ip=$(podman inspect --format "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" web 2>/dev/null)
tag=$(attachment_tag $net "$cid")
echo "# container ${cid:0:12} has ${ip:-no address} on bridge ${bridge:-?}"
check "podman: the container's address is from host-local in the network's range" matches "$ip" '^10\.89\.5\.[0-9]+$'
check "podman: host-local recorded it for the container" same "$ip" "$(allocated_ip $net "$cid")"
check "podman: the sandbox host fetches the page on 127.0.0.1:$port" wait_for 10 page_is "http://127.0.0.1:$port/" "hello from podman"
check "podman: ... and from the container's address" page_is "http://$ip/" "hello from podman"
check_fails "podman: the port is published on 127.0.0.1 only (an outside namespace gets nothing)" \
  fetch "http://198.51.100.1:$port/" world
out=$(podman_fetch $net "http://$ip/" "http://198.51.100.2:8080/")
if same "$out" $'hello from podman\nhello from the world'; then
  pass "podman: a second container on the network reaches the first, and the outside namespace (forwarded, masqueraded)"
else
  fail "podman: a second container on the network reaches the first, and the outside namespace (forwarded, masqueraded)" "$out"
fi
check_fails "podman: the outside namespace cannot open a connection to the container (FORWARD drops it)" \
  fetch "http://$ip/" world
# What let it through: our firewall's per-address accept in CNI-FORWARD, which counted packets.
accepted() { iptables -nvxL CNI-FORWARD | awk -v ip="$1" '$3 == "ACCEPT" && $8 == ip && $1 > 0 { f = 1 } END { exit !f }'; }
check "podman: our firewall's CNI-FORWARD accept for $ip counted the container's packets" accepted "$ip"
check "podman: our portmap published it (nft table inet cni_portmap, 127.0.0.1 . tcp . $port)" \
  nft_has "inet cni_portmap" "127.0.0.1 . tcp . $port comment \"$tag"
check "podman: ... with a DNAT to $ip:80" nft_has "inet cni_portmap" "dnat ip to $ip:80"
check "podman: no iptables nat rule of the reference portmap" bash -c '[[ $(iptables-save -t nat) != *CNI-* ]]'
check "podman: our bridge masquerades for it (nft table inet cni_bridge)" nft_has "inet cni_bridge" "$tag"
check "podman: the container's veth is on our bridge $bridge" matches "$(ip -o link show master "$bridge" type veth)" .
check "podman: our firewall ran after our bridge and portmap (the reference's rules: CNI-FORWARD accepts $ip)" \
  matches "$(iptables-save -t filter)" "-A CNI-FORWARD -s $ip/32 -j ACCEPT"
check "podman: ... FORWARD jumps to CNI-FORWARD, CNI-FORWARD to the admin chain CNI-ADMIN first" \
  bash -c '[[ $(iptables-save -t filter) == *"-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"* ]] && iptables -S CNI-FORWARD 1 | grep -q -- "-j CNI-ADMIN"'
check "podman: ... and no firewalld (no system bus here)" bash -c '! nft list table inet firewalld 2>/dev/null'

check "podman: a network without the firewall plugin (control)" podman_net_without_firewall e2e-nofw 10.89.8.0/24
check_fails "podman: ... its container cannot reach the outside namespace" podman_fetch e2e-nofw "http://198.51.100.2:8080/"
check "podman: ... network rm" podman network rm e2e-nofw
check "podman: stop" podman stop -t 0 web
check "podman: no veth is left" no_veth
check "podman: host-local released the address" no_allocation $net
check "podman: no firewall entry of ours for the container is left" nft_clean_of "$tag"
check "podman: ... nor any naming its address" nft_clean_of "$ip"
check "podman: our firewall removed its rules (no rule names $ip, the throwaway containers' neither)" \
  bash -c "[[ \$(iptables-save) != *'10.89.5.'* ]]"
check_fails "podman: 127.0.0.1:$port is closed" fetch "http://127.0.0.1:$port/"
check "podman: rm" podman rm web
check "podman: network rm" podman network rm $net
check "podman: ... removes the conflist and the bridge" bash -c "[[ ! -e $conf ]] && ! ip link show '$bridge' 2>/dev/null"
check "podman: no container is left" test -z "$(podman ps -aq)"
world_stop

# Names, as a Docker user has them on a user-defined network: `podman network create` with DNS on
# (the default) chains our dnsname; two containers reach each other's web server by name, by
# --network-alias and under dns.podman, through the network's dnsmasq (the name resolved by the
# containers' own libc from the resolv.conf podman wrote from our result).
dns_net=e2e-dns
dns_dir=/run/containers/cni/dnsname/$dns_net
check "podman (dns): network create" podman network create --subnet 10.89.7.0/24 $dns_net
check "podman (dns): its conflist ends with dnsname as podman writes it" json_assert \
  "$(cat "$P/net.d/$dns_net.conflist" 2>/dev/null)" \
  'r["plugins"][-1] == {"type": "dnsname", "domainName": "dns.podman", "capabilities": {"aliases": True}}'
# dns_run NAME ALIAS: a container serving "hello from NAME" on :8080.
dns_run() {
  local out
  out=$(podman run -d --name "$1" --network $dns_net --network-alias "$2" --cgroup-parent "$CGROUP_PARENT/podman" \
    "$IMAGE" sh -c "echo hello from $1 > /tmp/index.html; exec httpd -f -p 8080 -h /tmp" 2>&1)
  if [[ $? == 0 ]]; then pass "podman (dns): run -d --name $1 --network-alias $2"; else fail "podman (dns): run $1" "$out"; fi
}
dns_run web www
dns_run client cli
# from CONTAINER URL TEXT: the container fetches URL (wget in it, names resolved by its libc).
from() { [[ $(podman exec "$1" timeout 5 wget -q -O - "$2" 2>/dev/null) == "$3" ]]; }
check "podman (dns): client fetches http://web:8080/" wait_for 10 from client http://web:8080/ "hello from web"
check "podman (dns): ... http://www:8080/ (the alias)" from client http://www:8080/ "hello from web"
check "podman (dns): ... http://web.dns.podman:8080/" from client http://web.dns.podman:8080/ "hello from web"
check "podman (dns): web fetches http://client:8080/" from web http://client:8080/ "hello from client"
check "podman (dns): ... http://cli:8080/ (the alias)" from web http://cli:8080/ "hello from client"
resolv=$(podman exec client cat /etc/resolv.conf 2>&1)
check "podman (dns): the container's resolv.conf names the gateway and dns.podman" \
  bash -c "grep -q '^nameserver 10\.89\.7\.1$' <<< '$resolv' && grep -q '^search .*dns\.podman' <<< '$resolv'"
dns_pids() { # the live dnsmasq processes of the network
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null | grep -q -- "--conf-file=$dns_dir/dnsmasq.conf" && echo "${p#/proc/}"
  done
}
check "podman (dns): one dnsmasq for the network, the one in its pid file" \
  test "$(dns_pids | xargs)" = "$(cat $dns_dir/pidfile 2>/dev/null)"
web_id=$(podman inspect --format '{{.Id}}' web 2>/dev/null)
check "podman (dns): our dnsname wrote the names (its lines carry the attachment)" \
  matches "$(cat $dns_dir/addnhosts 2>/dev/null)" "^10\.89\.7\.[0-9]+	web	(.*	)?www	(.*	)?# $web_id eth0\$"
check "podman (dns): stop web" podman stop -t 0 web
# nxdomain_from CONTAINER NAME: the container's lookup of NAME gets NXDOMAIN from the server.
nxdomain_from() { [[ $(podman exec "$1" nslookup "$2" 2>&1) == *NXDOMAIN* ]]; }
check "podman (dns): ... web.dns.podman is NXDOMAIN for client" wait_for 10 nxdomain_from client web.dns.podman
check "podman (dns): ... and www.dns.podman" nxdomain_from client www.dns.podman
check "podman (dns): ... the server stays for client" test -n "$(dns_pids)"
check "podman (dns): stop client, the network's last container" podman stop -t 0 client
server_gone() { [[ -z $(dns_pids) && ! -e $dns_dir ]]; }
check "podman (dns): ... stops dnsmasq and removes $dns_dir" wait_for 10 server_gone
check "podman (dns): rm" podman rm web client
check "podman (dns): network rm" podman network rm $dns_net

# A macvlan network (`podman network create -d macvlan`: macvlan with host-local) on a parent
# link of the sandbox host, through our macvlan: the container gets its address on a macvlan of
# the parent, and reaches a neighbour station on the parent's segment.
ip link add e2e-parent type veth peer name e2e-peer
ip netns add e2e-station
ip link set e2e-peer netns e2e-station
ip link set e2e-parent up
ip -n e2e-station addr add 10.89.6.200/24 dev e2e-peer && ip -n e2e-station link set e2e-peer up
check "podman: network create -d macvlan" podman network create -d macvlan -o parent=e2e-parent --subnet 10.89.6.0/24 e2e-macvlan
check "podman: run -d on it" podman run -d --name mv --network e2e-macvlan --cgroup-parent "$CGROUP_PARENT/podman" "$IMAGE" sleep 60
mv_ns=$(podman inspect --format '{{.NetworkSettings.SandboxKey}}' mv 2>/dev/null)
check "podman: ... its eth0 is a macvlan of the parent in bridge mode, with an address of the subnet" bash -c \
  "nsenter --net=$mv_ns ip -d link show eth0 | grep -q 'macvlan mode bridge' && nsenter --net=$mv_ns ip -o addr show eth0 | grep -q 'inet 10\.89\.6\.'"
check "podman: ... it reaches a station on the parent's segment" podman exec mv ping -c1 -W2 10.89.6.200
check "podman: rm -f" podman rm -f mv
check "podman: ... and leaves no container, macvlan or allocation" \
  bash -c '[[ -z $(podman ps -aq) && -z $(ip -o link show type macvlan) ]] && no_allocation e2e-macvlan'
check "podman: network rm e2e-macvlan" podman network rm e2e-macvlan

# A network whose plugin the directory lacks (a type no plugin directory has). Podman checks every
# network's plugins when it loads the configs (libcni's ValidateNetworkList), so it ignores that
# network and a run on it fails, saying which plugin is missing and where it looked.
check "podman: network create -d macvlan e2e-missing" podman network create -d macvlan -o parent=e2e-parent --subnet 10.89.7.0/24 e2e-missing
sed -i 's/"type": *"macvlan"/"type": "e2e-absent"/' "$P/net.d/e2e-missing.conflist"
check "podman: ... is not listed once its plugin is missing" bash -c "[[ \$(podman network ls --format '{{.Name}}') != *e2e-missing* ]]"
out=$(podman run --rm --name lost --network e2e-missing --cgroup-parent "$CGROUP_PARENT/podman" "$IMAGE" true 2>&1)
status=$?
if [[ $status != 0 ]] && matches "$out" 'failed to find plugin \\?"e2e-absent\\?" in path \[/opt/cni/bin\]'; then
  pass "podman: a run on it fails: its plugin is not in the plugin directory"
else
  fail "podman: a run on it fails: its plugin is not in the plugin directory (status $status)" "$out"
fi
echo "# $(grep -o 'failed to find plugin.*' <<< "$out" | head -1)"
podman rm -f lost > /dev/null 2>&1
check "podman: ... and leaves no container, macvlan or allocation" \
  bash -c '[[ -z $(podman ps -aq) && -z $(ip -o link show type macvlan) ]] && no_allocation e2e-missing'
rm -f "$P/net.d/e2e-missing.conflist"
ip netns delete e2e-station
ip link del e2e-parent 2>/dev/null
true
