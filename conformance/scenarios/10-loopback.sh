# Docker's --network=none: a network of the loopback plugin alone.

for v in 0.3.1 0.4.0 1.0.0; do
  conflist "none-$v" "{\"cniVersion\":\"$v\",\"name\":\"none-$v\",\"plugins\":[{\"type\":\"loopback\"}]}"
  ip netns add "c-$v"
  out=$(cni add "none-$v" "c-$v" 2>&1)
  check "loopback $v: ADD succeeds" test $? -eq 0 -a -n "$out"
  check "loopback $v: ADD reports lo with 127.0.0.1/8" json_assert "$out" \
    "r['cniVersion'] == '$v' and r['interfaces'][0]['name'] == 'lo' and r['ips'][0]['address'] == '127.0.0.1/8'"
  check "loopback $v: lo is up in the container" link_up "c-$v" lo
  if [[ $v != 0.3.1 ]]; then
    check "loopback $v: CHECK passes" cni check "none-$v" "c-$v"
    ip -n "c-$v" link set lo down
    check_fails "loopback $v: CHECK fails when lo is down" cni check "none-$v" "c-$v"
    ip -n "c-$v" link set lo up
  fi
  check "loopback $v: DEL succeeds" cni del "none-$v" "c-$v"
  check "loopback $v: lo is down after DEL" link_down "c-$v" lo
  check "loopback $v: a second DEL succeeds" cni del "none-$v" "c-$v"
  ip netns delete "c-$v"
  check "loopback $v: DEL after the netns is gone succeeds" cni del "none-$v" "c-$v"
done

if has_reference loopback; then
  conflist none-diff '{"cniVersion":"1.0.0","name":"none-diff","plugins":[{"type":"loopback"}]}'
  ip netns add ours; ip netns add theirs
  ours=$(cni add none-diff ours); theirs=$(cni --reference add none-diff theirs)
  check "loopback: same result as the reference plugin" same_json "$ours" "$theirs" sandbox
fi
