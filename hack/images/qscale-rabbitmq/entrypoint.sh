#!/bin/sh
# Write rabbitmq.conf from the environment, then exec the server in the
# foreground (logs to stdout). Debian's /usr/sbin wrapper is bypassed because it
# sends the logs to /var/log.
#   RABBITMQ_USER / RABBITMQ_PASSWORD  the account created on first boot (required)
#   RABBITMQ_MEMORY_HIGH_WATERMARK     fraction of the memory limit (default 0.6)
#   RABBITMQ_TOTAL_MEMORY              bytes available, e.g. the container's limit
#   RABBITMQ_CONSUMER_TIMEOUT_MS       consumer_timeout: above the longest task (default 24 h)
set -eu
: "${RABBITMQ_USER:?RABBITMQ_USER is required}"
: "${RABBITMQ_PASSWORD:?RABBITMQ_PASSWORD is required}"
conf_dir="$(dirname "$RABBITMQ_CONFIG_FILE")"
mkdir -p "$conf_dir" "$RABBITMQ_MNESIA_BASE" "${RABBITMQ_LOG_BASE:-/tmp/rabbitmq/log}"
umask 077
{
  echo "listeners.tcp.default = 5672"
  echo "management.tcp.port = 15672"
  echo "loopback_users = none"
  echo "default_user = $RABBITMQ_USER"
  echo "default_pass = $RABBITMQ_PASSWORD"
  echo "log.console = true"
  echo "log.console.level = info"
  echo "log.file = false"
  echo "vm_memory_high_watermark.relative = ${RABBITMQ_MEMORY_HIGH_WATERMARK:-0.6}"
  echo "consumer_timeout = ${RABBITMQ_CONSUMER_TIMEOUT_MS:-86400000}"
  if [ -n "${RABBITMQ_TOTAL_MEMORY:-}" ]; then
    echo "total_memory_available_override_value = $RABBITMQ_TOTAL_MEMORY"
  fi
} > "$RABBITMQ_CONFIG_FILE"
exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
