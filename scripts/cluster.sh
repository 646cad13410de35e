#!/usr/bin/env bash
# A three-node RabbitMQ cluster for tests, beside the machine's default node, which it never
# touches. Built on extra-node.sh: nodes serena-c1, serena-c2, serena-c3 @localhost, AMQP on
# 127.0.0.1:5701..5703, distribution ports 25701..25703, folders under $SERENA_NODES_DIR.
#
#   cluster.sh start    starts the three nodes and joins c2 and c3 to c1 (stops any earlier ones)
#   cluster.sh stop     stops and removes all three (idempotent)
#   cluster.sh status   prints the cluster status as c1 sees it; exit 1 when a node is down
#   cluster.sh hosts    prints the AMQP host list: 127.0.0.1:5701,127.0.0.1:5702,127.0.0.1:5703
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
node=$here/extra-node.sh
NAMES=(serena-c1 serena-c2 serena-c3)
PORTS=(5701 5702 5703)

stop() {
  for name in "${NAMES[@]}"; do "$node" stop "$name" & done
  wait
}

start() {
  stop
  local pids=() i
  for i in 0 1 2; do
    "$node" start "${NAMES[$i]}" --amqp-port "${PORTS[$i]}" &
    pids+=($!)
  done
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if [ $failed = 1 ]; then stop; echo "cluster: a node did not start" >&2; exit 1; fi
  for i in 1 2; do
    "$node" ctl "${NAMES[$i]}" -q stop_app
    "$node" ctl "${NAMES[$i]}" -q join_cluster "${NAMES[0]}@localhost"
    "$node" ctl "${NAMES[$i]}" -q start_app
  done
  for name in "${NAMES[@]}"; do "$node" ctl "$name" -q await_startup --timeout 60; done
  local running
  running=$("$node" ctl "${NAMES[0]}" -q cluster_status --formatter json \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
  if [ "$running" != 3 ]; then stop; echo "cluster: $running of 3 nodes running after join" >&2; exit 1; fi
  echo "cluster: 3 nodes running on 127.0.0.1:5701,5702,5703"
}

status() {
  local ok=0 name
  for name in "${NAMES[@]}"; do "$node" status "$name" || { echo "cluster: $name is down"; ok=1; }; done
  "$node" ctl "${NAMES[0]}" -q cluster_status 2>/dev/null || true
  return $ok
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  hosts) echo "127.0.0.1:5701,127.0.0.1:5702,127.0.0.1:5703" ;;
  *) echo "usage: $0 start|stop|status|hosts" >&2; exit 2 ;;
esac
