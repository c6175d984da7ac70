# static IPAM through cnitool (as the only plugin of a list, so its result is what cnitool prints),
# side by side with the reference static: config addresses, CNI_ARGS IP=/GATEWAY=,
# runtimeConfig.ips (capability ips), each version a list can be in, and the reference's errors.

st_list() { # NAME VERSION [IPAM-KEYS]
  conflist "$1" "{\"cniVersion\":\"$2\",\"name\":\"$1\",\"plugins\":[{\"type\":\"static\",\"capabilities\":{\"ips\":true},
    \"ipam\":{\"type\":\"static\",
      \"addresses\":[{\"address\":\"10.80.0.5/24\",\"gateway\":\"10.80.0.1\"},{\"address\":\"fd80::5/64\"}],
      \"routes\":[{\"dst\":\"0.0.0.0/0\"},{\"dst\":\"192.168.0.0/16\",\"gw\":\"10.80.0.254\"}],
      \"dns\":{\"nameservers\":[\"10.80.0.53\"],\"search\":[\"example.com\"]} ${3:-}}}]}"
}

ip netns add s1
st_list st 1.0.0
r=$(cni add st s1)
check "static: ADD prints the configured addresses, routes and dns" json_assert "$r" \
  "r['ips'] == [{'address': '10.80.0.5/24', 'gateway': '10.80.0.1'}, {'address': 'fd80::5/64'}] and r['routes'][1] == {'dst': '192.168.0.0/16', 'gw': '10.80.0.254'} and r['dns']['search'] == ['example.com']"
check "static: CHECK passes against its own result" cni check st s1
check "static: DEL succeeds (nothing to release)" cni del st s1
r=$(CNI_ARGS='IgnoreUnknown=1;IP=10.80.0.9/24;GATEWAY=10.80.0.254' cni add st s1)
check "static: CNI_ARGS IP= appends, GATEWAY= applies to those addresses" json_assert "$r" \
  "r['ips'][0]['gateway'] == '10.80.0.1' and r['ips'][2] == {'address': '10.80.0.9/24', 'gateway': '10.80.0.254'}"
r=$(CAP_ARGS='{"ips":["10.81.0.7/16"]}' cni add st s1)
check "static: runtimeConfig.ips replaces the addresses" json_assert "$r" "r['ips'] == [{'address': '10.81.0.7/16'}]"

splug() { # PLUGIN-DIR CONF
  CNI_COMMAND=ADD CNI_CONTAINERID=st-1 CNI_NETNS=/run/netns/s1 CNI_IFNAME=eth0 CNI_PATH=$1 "$1/static" <<< "$2"
}
badcidr='{"cniVersion":"1.0.0","name":"b","type":"static","ipam":{"type":"static","addresses":[{"address":"10.80.0.5"}]}}'
out=$(splug "$PLUGIN_DIR" "$badcidr" || true)
check "static: an address without a prefix is refused" json_assert "$out" \
  "r['msg'] == \"the 'address' field is expected to be in CIDR notation, got: '10.80.0.5'\""

if has_reference static; then
  for v in 0.3.0 0.3.1 0.4.0 1.0.0; do
    st_list "ref$v" "$v"
    ours=$(CNI_ARGS='IgnoreUnknown=1;IP=10.80.0.9/24;GATEWAY=10.80.0.254' cni add "ref$v" s1)
    theirs=$(CNI_ARGS='IgnoreUnknown=1;IP=10.80.0.9/24;GATEWAY=10.80.0.254' cni --reference add "ref$v" s1)
    check "static: the same result as the reference at $v (CNI_ARGS)" same_json "$ours" "$theirs"
    ours=$(CAP_ARGS='{"ips":["10.81.0.7/16","fd81::7/64"]}' cni add "ref$v" s1)
    theirs=$(CAP_ARGS='{"ips":["10.81.0.7/16","fd81::7/64"]}' cni --reference add "ref$v" s1)
    check "static: the same result as the reference at $v (runtimeConfig.ips)" same_json "$ours" "$theirs"
  done
  out=$(splug "$REFERENCE_DIR" "$badcidr" || true)
  ours=$(splug "$PLUGIN_DIR" "$badcidr" || true)
  check "static: the reference's message for a bad address" \
    python3 -c 'import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); assert a["msg"]==b["msg"], (a,b)' "$ours" "$out"
fi
true
