#!/usr/bin/env bash
# Build the fault-injection tools the tests drive, from the Go module proxy, into
# $QSCALE_CACHE/bin (cached by version, like hack/tools.sh):
#   toxiproxy-server  network faults between a process and its broker / API server
#                     (latency, resets, timeouts, a half-open connection); the tests
#                     start their own instance on loopback (tests/toxiproxy.py).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOXIPROXY_VERSION="${TOXIPROXY_VERSION:-v2.5.0}"

out="$BIN_DIR/toxiproxy-server-$TOXIPROXY_VERSION"
if [ ! -x "$out" ]; then
  command -v "$GO" >/dev/null || die "Go is needed to build toxiproxy ($GO not found)"
  run_logged "tool-toxiproxy-$TOXIPROXY_VERSION" go_build_mod toxiproxy \
    github.com/Shopify/toxiproxy/v2 "$TOXIPROXY_VERSION" "$out" \
    github.com/Shopify/toxiproxy/v2/cmd/server
fi
ln -sfn "toxiproxy-server-$TOXIPROXY_VERSION" "$BIN_DIR/toxiproxy-server"
log "test tools: $(readlink "$BIN_DIR/toxiproxy-server")"
