#!/bin/sh
# The official rabbitmq image's entrypoint contract (docker-library/rabbitmq
# docker-entrypoint.sh, 3.9 and later): it configures nothing itself (RabbitMQ reads
# RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS/RABBITMQ_NODENAME and
# /etc/rabbitmq/conf.d/*.conf on its own) and refuses the environment variables it
# dropped in 3.9, then runs the command. This image runs as uid 999 already, so the
# upstream step-down from root has nothing to do.
set -eu
for old in RABBITMQ_DEFAULT_PASS_FILE RABBITMQ_DEFAULT_USER_FILE RABBITMQ_MANAGEMENT_SSL_CACERTFILE \
    RABBITMQ_MANAGEMENT_SSL_CERTFILE RABBITMQ_MANAGEMENT_SSL_DEPTH RABBITMQ_MANAGEMENT_SSL_FAIL_IF_NO_PEER_CERT \
    RABBITMQ_MANAGEMENT_SSL_KEYFILE RABBITMQ_MANAGEMENT_SSL_VERIFY RABBITMQ_SSL_CACERTFILE RABBITMQ_SSL_CERTFILE \
    RABBITMQ_SSL_DEPTH RABBITMQ_SSL_FAIL_IF_NO_PEER_CERT RABBITMQ_SSL_KEYFILE RABBITMQ_SSL_VERIFY \
    RABBITMQ_VM_MEMORY_HIGH_WATERMARK; do
  if [ -n "$(printenv "$old" || true)" ]; then
    echo "error: $old is set but deprecated; use a file in /etc/rabbitmq/conf.d" >&2
    exit 1
  fi
done
exec "$@"
