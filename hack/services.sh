#!/usr/bin/env bash
# Install (Debian packages) and start the test brokers on loopback, idempotently.
#   Redis    127.0.0.1:6379 (no persistence needed for tests)
#   RabbitMQ 127.0.0.1:5672, management API 127.0.0.1:15672, user qscale/qscale
# Exits non-zero with a one-line reason if a service does not come up.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
LOG_DIR=${QSCALE_CACHE:-/var/cache/qscale}/logs
mkdir -p "$LOG_DIR"

die() { echo "services: $*" >&2; exit 1; }

need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v rabbitmq-server >/dev/null || need_pkgs+=(rabbitmq-server)
if ((${#need_pkgs[@]})); then
  echo "services: installing ${need_pkgs[*]}"
  apt-get update -qq >"$LOG_DIR/apt-update.log" 2>&1 || die "apt-get update failed (see $LOG_DIR/apt-update.log)"
  # Debian's postinst tries to start the daemons through init; that is harmless when it fails.
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >"$LOG_DIR/apt-services.log" 2>&1 \
    || die "apt-get install ${need_pkgs[*]} failed (see $LOG_DIR/apt-services.log)"
fi

wait_for_quiet() {  # seconds, command...: succeeds once the command does
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  return 1
}

wait_for() {  # name, seconds, command...
  local name=$1 secs=$2; shift 2
  wait_for_quiet "$secs" "$@" || die "$name did not come up within ${secs}s"
}

if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no \
    --logfile "$LOG_DIR/redis.log" --dir /tmp
  wait_for redis 20 sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi
echo "services: redis up on 127.0.0.1:6379"

# The test node keeps its data in its own throwaway directory, wiped on every start: the
# tests need no state across broker restarts, and a node killed with hundreds of durable
# test queues on disk spends minutes recovering them on a cold page cache (CI saw >90 s).
RABBIT_DATA=/var/lib/rabbitmq/qscale-test-node
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_MNESIA_BASE=$RABBIT_DATA

stop_stale_test_node() {  # a rabbit@localhost node that runs but does not answer
  local pid
  for pid in $(pgrep -u rabbitmq beam.smp || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx 'RABBITMQ_NODENAME=rabbit@localhost'; then
      echo "services: stopping unresponsive rabbit@localhost (pid $pid)"
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}

if ! rabbitmq-diagnostics -q -n rabbit@localhost check_port_connectivity >/dev/null 2>&1; then
  stop_stale_test_node
  rm -rf "$RABBIT_DATA"
  install -d -o rabbitmq -g rabbitmq "$RABBIT_DATA"
  # The management plugin serves queue in-flight (unacked) counts to the controller.
  rabbitmq-plugins --offline enable rabbitmq_management >/dev/null
  cat >/etc/rabbitmq/rabbitmq.conf <<'CONF'
listeners.tcp.default = 127.0.0.1:5672
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
loopback_users = none
CONF
  (HOME=/var/lib/rabbitmq nohup rabbitmq-server >"$LOG_DIR/rabbitmq.log" 2>&1 &)
  if ! wait_for_quiet 180 rabbitmq-diagnostics -q -n rabbit@localhost check_port_connectivity; then
    tail -n 15 "$LOG_DIR/rabbitmq.log" /var/log/rabbitmq/rabbit@localhost.log >&2 || true
    die "rabbitmq did not come up within 180s (logs above: $LOG_DIR/rabbitmq.log)"
  fi
fi
rabbitmqctl -q -n rabbit@localhost add_user qscale qscale >/dev/null 2>&1 || true
rabbitmqctl -q -n rabbit@localhost set_user_tags qscale administrator >/dev/null
rabbitmqctl -q -n rabbit@localhost set_permissions -p / qscale '.*' '.*' '.*' >/dev/null
wait_for rabbitmq-management 60 sh -c 'curl -sf -u qscale:qscale http://127.0.0.1:15672/api/overview'
echo "services: rabbitmq up on 127.0.0.1:5672 (management 127.0.0.1:15672)"
