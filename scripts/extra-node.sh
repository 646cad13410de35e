#!/usr/bin/env bash
# Extra RabbitMQ nodes beside the machine's default one, for tests that need a differently
# configured broker (TLS, a cluster). The default node (rabbit@localhost, port 5672) is never
# touched: every extra node has its own node name, AMQP/TLS/distribution ports, config file,
# plugin list and data/log folders under $SERENA_NODES_DIR (default /tmp/serena-nodes), owned by
# the `rabbitmq` user, which the server runs as. Must run as root (or as rabbitmq).
#
#   extra-node.sh start NAME --amqp-port P [--tls-port P --certs DIR] [--plugins a,b]
#                 [--dist-port P] [--conf-line 'key = value']...
#       Starts node NAME@localhost and waits until it accepts AMQP connections. With
#       --tls-port, DIR must hold ca.pem, server.pem and server.key: the TLS listener asks for
#       a client certificate and verifies it against ca.pem when one is sent (verify_peer,
#       fail_if_no_peer_cert = false), and EXTERNAL login takes the user name from the
#       certificate's common name. Starting a node that is already running is an error.
#   extra-node.sh stop NAME     Stops the node (if running) and removes its folder. Idempotent.
#   extra-node.sh halt NAME     Stops the node's VM but keeps its folder (data, config).
#   extra-node.sh restart NAME  Starts a halted node again from its folder and waits for it.
#   extra-node.sh status NAME   Exit 0 when the node runs, 1 otherwise.
#   extra-node.sh ctl NAME ARGS...        rabbitmqctl against the node.
#   extra-node.sh diagnostics NAME ARGS.. rabbitmq-diagnostics against the node.
#   extra-node.sh dir NAME      Prints the node's folder.
set -euo pipefail

BASE=${SERENA_NODES_DIR:-/tmp/serena-nodes}
SBIN=/usr/lib/rabbitmq/bin

die() { echo "extra-node: $*" >&2; exit 2; }
node_of() { echo "$1@localhost"; }

# Runs a command as the rabbitmq user with HOME where the Erlang cookie is, so every node and
# every rabbitmqctl shares the default node's cookie (clustering needs one cookie).
as_rabbitmq() {
  if [ "$(id -u)" = "$(id -u rabbitmq)" ]; then
    env HOME=/var/lib/rabbitmq "$@"
  else
    runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq "$@"
  fi
}

ctl() {
  local name=$1; shift
  as_rabbitmq "$SBIN/rabbitmqctl" -n "$(node_of "$name")" "$@"
}

diagnostics() {
  local name=$1; shift
  as_rabbitmq "$SBIN/rabbitmq-diagnostics" -n "$(node_of "$name")" "$@"
}

running() {
  ctl "$1" -q status >/dev/null 2>&1
}

wait_port() {
  local port=$1 deadline=$((SECONDS + $2))
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

start() {
  local name=$1; shift
  local amqp_port="" tls_port="" certs="" plugins="" dist_port=""
  local -a conf_lines=()
  while [ $# -gt 0 ]; do
    case $1 in
      --amqp-port) amqp_port=$2; shift 2 ;;
      --tls-port) tls_port=$2; shift 2 ;;
      --certs) certs=$2; shift 2 ;;
      --plugins) plugins=$2; shift 2 ;;
      --dist-port) dist_port=$2; shift 2 ;;
      --conf-line) conf_lines+=("$2"); shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  [ -n "$amqp_port" ] || die "start needs --amqp-port"
  [ "$amqp_port" != 5672 ] || die "port 5672 belongs to the default node"
  [ -z "$tls_port" ] || [ -n "$certs" ] || die "--tls-port needs --certs DIR"
  dist_port=${dist_port:-$((amqp_port + 20000))}
  if running "$name"; then die "node $(node_of "$name") is already running"; fi

  local dir=$BASE/$name
  rm -rf "$dir"
  mkdir -p "$dir/mnesia" "$dir/log"
  chmod 755 "$BASE" 2>/dev/null || true

  {
    echo "listeners.tcp.local = 127.0.0.1:$amqp_port"
    echo "loopback_users.guest = true"
    if [ -n "$tls_port" ]; then
      # Copies owned by rabbitmq, so the server can read the key whatever the caller's umask.
      mkdir -p "$dir/certs"
      cp "$certs/ca.pem" "$certs/server.pem" "$certs/server.key" "$dir/certs/"
      echo "listeners.ssl.local = 127.0.0.1:$tls_port"
      echo "ssl_options.cacertfile = $dir/certs/ca.pem"
      echo "ssl_options.certfile = $dir/certs/server.pem"
      echo "ssl_options.keyfile = $dir/certs/server.key"
      echo "ssl_options.verify = verify_peer"
      echo "ssl_options.fail_if_no_peer_cert = false"
      echo "ssl_cert_login_from = common_name"
      echo "auth_mechanisms.1 = PLAIN"
      echo "auth_mechanisms.2 = AMQPLAIN"
      echo "auth_mechanisms.3 = EXTERNAL"
    fi
    for line in "${conf_lines[@]}"; do echo "$line"; done
  } > "$dir/rabbitmq.conf"
  if [ -n "$plugins" ]; then
    echo "[${plugins}]." > "$dir/enabled_plugins"
  else
    echo "[]." > "$dir/enabled_plugins"
  fi
  chown -R rabbitmq:rabbitmq "$dir"

  printf 'amqp_port=%s\ntls_port=%s\ndist_port=%s\n' "$amqp_port" "$tls_port" "$dist_port" > "$dir/node.env"
  chown rabbitmq:rabbitmq "$dir/node.env"
  launch "$name"
  echo "extra-node: $(node_of "$name") up on 127.0.0.1:$amqp_port${tls_port:+ (TLS $tls_port)}"
}

# Starts the VM of a node whose folder start() prepared (again, after halt) and waits for it.
launch() {
  local name=$1 dir=$BASE/$1 amqp_port tls_port dist_port
  [ -f "$dir/node.env" ] || die "node $name has no folder; use start"
  # shellcheck disable=SC1091
  . "$dir/node.env"
  if running "$name"; then die "node $(node_of "$name") is already running"; fi
  as_rabbitmq \
    RABBITMQ_NODENAME="$(node_of "$name")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$amqp_port" \
    RABBITMQ_DIST_PORT="$dist_port" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/node.pid" \
    RABBITMQ_QUORUM_DIR="$dir/mnesia/quorum" \
    RABBITMQ_STREAM_DIR="$dir/mnesia/stream" \
    "$SBIN/rabbitmq-server" -detached > "$dir/log/startup.out" 2>&1 \
    || { cat "$dir/log/startup.out" >&2; die "rabbitmq-server failed to start $name"; }

  # await_startup fails at once while the new VM has not registered with epmd yet: retry.
  local deadline=$((SECONDS + 90)) up=""
  while [ $SECONDS -lt $deadline ]; do
    if ctl "$name" -q await_startup --timeout 30 >/dev/null 2>&1; then up=1; break; fi
    sleep 0.5
  done
  if [ -z "$up" ] || ! wait_port "$amqp_port" 30; then
    echo "extra-node: $name did not start; its logs:" >&2
    tail -n 40 "$dir"/log/*.log "$dir/log/startup.out" >&2 2>/dev/null || true
    halt "$name" >/dev/null 2>&1 || true
    exit 1
  fi
  if [ -n "$tls_port" ] && ! wait_port "$tls_port" 30; then
    halt "$name" >/dev/null 2>&1 || true
    die "$name: TLS listener on $tls_port did not open"
  fi
}

# Stops the node's VM (if running), keeping its folder, so `restart` brings it back with its data.
halt() {
  local name=$1 dir=$BASE/$1
  if running "$name"; then
    ctl "$name" -q stop >/dev/null 2>&1 || true
  fi
  # If the node would not stop through rabbitmqctl, end its VM by its pid file.
  if [ -f "$dir/node.pid" ]; then
    local pid; pid=$(cat "$dir/node.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
}

stop() {
  local name=$1 dir=$BASE/$1
  halt "$name"
  rm -rf "$dir"
}

cmd=${1:-}; [ $# -ge 2 ] || die "usage: $0 start|stop|halt|restart|status|ctl|diagnostics|dir NAME [...]"
name=$2; shift 2
[[ $name =~ ^[A-Za-z0-9_-]+$ ]] || die "node name must be letters, digits, - or _"
[ "$name" != rabbit ] || die "rabbit is the default node's name"
case $cmd in
  start) start "$name" "$@" ;;
  stop) stop "$name" ;;
  halt) halt "$name" ;;
  restart) launch "$name" ;;
  status) running "$name" ;;
  ctl) ctl "$name" "$@" ;;
  diagnostics) diagnostics "$name" "$@" ;;
  dir) echo "$BASE/$name" ;;
  *) die "unknown command $cmd" ;;
esac
