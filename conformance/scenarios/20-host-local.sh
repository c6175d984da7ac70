# host-local through cnitool: dual-stack allocation, requested addresses, release, CHECK. IPAM
# plugins can be the main plugin of a list; host-local then reads its own "ipam" object.

ipam_list() { # NAME DATADIR [CAPABILITIES]
  conflist "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"$1\",\"plugins\":[{\"type\":\"host-local\",
    \"capabilities\":{\"ips\":true},
    \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$2\",
      \"ranges\":[[{\"subnet\":\"10.10.0.0/24\",\"gateway\":\"10.10.0.1\"}],[{\"subnet\":\"fd10::/64\"}]],
      \"routes\":[{\"dst\":\"0.0.0.0/0\"}]}}]}"
}

data=$SANDBOX_WORK/ipam
ipam_list ipam "$data"
ip netns add h1; ip netns add h2; ip netns add h3

out=$(cni add ipam h1)
check "host-local: dual-stack ADD" json_assert "$out" \
  "[i['address'] for i in r['ips']] == ['10.10.0.2/24', 'fd10::2/64'] and r['ips'][0]['gateway'] == '10.10.0.1' and r['routes'] == [{'dst': '0.0.0.0/0'}]"
check "host-local: the store holds the reference's files" \
  bash -c "[[ \$(cat '$data/ipam/10.10.0.2') == \$'cnitool-'*\$'\r\neth0' ]] && [[ \$(cat '$data/ipam/last_reserved_ip.0') == 10.10.0.2 ]]"
check "host-local: CHECK finds the allocation" cni check ipam h1

out=$(CAP_ARGS='{"ips":["10.10.0.77","fd10::77"]}' cni add ipam h2)
check "host-local: requested addresses through the ips capability" json_assert "$out" \
  "[i['address'] for i in r['ips']] == ['10.10.0.77/24', 'fd10::77/64']"
out=$(CAP_ARGS='{"ips":["10.10.0.77"]}' cni add ipam h3 2>&1)
check "host-local: a taken requested address is refused" test $? -ne 0
check "host-local: ... saying why" grep -q 'requested IP address 10.10.0.77 is not available' <<< "$out"
check "host-local: ... and the failed ADD took nothing" test ! -e "$data/ipam/fd10::3"

check "host-local: DEL releases" cni del ipam h1
check "host-local: ... both addresses" test ! -e "$data/ipam/10.10.0.2" -a ! -e "$data/ipam/fd10::2"
check "host-local: a second DEL succeeds" cni del ipam h1
check_fails "host-local: CHECK after DEL fails" cni check ipam h1
out=$(cni add ipam h1)
check "host-local: round robin continues after the last address" json_assert "$out" \
  "r['ips'][0]['address'] == '10.10.0.78/24'"

if has_reference host-local; then
  ipam_list ipam-ours "$SANDBOX_WORK/d-ours"; ipam_list ipam-ref "$SANDBOX_WORK/d-ref"
  ip netns add x1
  ours=$(cni add ipam-ours x1); theirs=$(cni --reference add ipam-ref x1)
  check "host-local: same result as the reference" same_json "$ours" "$theirs"
  check "host-local: the reference releases what we allocated" cni --reference del ipam-ours x1
  check "host-local: ... leaving no address file" \
    bash -c "! ls '$SANDBOX_WORK/d-ours/ipam-ours' | grep -q '^10\.\|^fd10'"
  check "host-local: we release what the reference allocated" cni del ipam-ref x1
  check "host-local: ... leaving no address file" \
    bash -c "! ls '$SANDBOX_WORK/d-ref/ipam-ref' | grep -q '^10\.\|^fd10'"
fi
true
