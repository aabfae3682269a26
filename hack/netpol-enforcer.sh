#!/usr/bin/env bash
# NetworkPolicy enforcement for the qscale kind cluster (`make test` turns it on for the
# whole suite; a user's `make cluster` can too):
#   hack/netpol-enforcer.sh up      start it on every node (no-op where it runs), wait
#                                   for its first full sync
#   hack/netpol-enforcer.sh down    stop it and remove every rule and set it made
#   hack/netpol-enforcer.sh status  exit 0 when it runs on every node
#
# The cluster's bridge CNI ignores NetworkPolicy. kube-router's network policy
# controller enforces it beside any CNI with iptables and ipset, run on each node with
# only its firewall on. kube-network-policies (what kindnet embeds) would be lighter, but
# it queues packets through nftables' `queue` expression, which this VM's kernel lacks
# (CONFIG_NFT_QUEUE is not set). The static binary comes from kube-router's Go module and
# `ipset` from Debian's packages (hack/test-tools.sh, cached by version); both are copied
# into each kind node and the controller runs there as a process, next to kube-proxy. A
# node container that restarts loses it: `up` starts it again. kube-router v2.1.0 is the
# one version the module proxy serves here; it runs only in this throwaway test cluster.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Keep in step with hack/test-tools.sh.
KUBE_ROUTER_VERSION="${KUBE_ROUTER_VERSION:-v2.1.0}"
IPSET_DEBS=(libipset13_7.17-1_amd64.deb ipset_7.17-1_amd64.deb)
DIR=/opt/qscale-netpol
BINARY="$DIR/kube-router"
NODE_LOG="$DIR/kube-router.log"
SYNCED="sync iptables took"   # the end of a full sync (logged at -v=1)

# Undo everything the policy controller adds to the filter table, then its ipsets (the
# node had no ipset before we installed it, so every set is kube-router's). kube-router's
# own `--cleanup-config` panics on a node without IPVS and leaves the filter rules.
read -r -d '' CLEANUP <<'EOF' || true
pkill -f '^/opt/qscale-netpol/kube-router' || true
for _ in $(seq 100); do
  pgrep -f '^/opt/qscale-netpol/kube-router' >/dev/null || break; sleep 0.1
done
iptables-save -t filter | grep -E '^-A (INPUT|FORWARD|OUTPUT) .*-j KUBE-(ROUTER|NWPLCY|POD-FW)' \
  | sed 's/^-A /-D /' | while read -r rule; do eval "iptables $rule"; done
chains=$(iptables-save -t filter | sed -n 's/^:\(KUBE-\(ROUTER\|NWPLCY\|POD-FW\)[^ ]*\) .*/\1/p')
for c in $chains; do iptables -F "$c"; done
for c in $chains; do iptables -X "$c"; done
if command -v ipset >/dev/null; then ipset flush; ipset destroy; fi
left=$(iptables-save -t filter | grep -cE 'KUBE-(ROUTER|NWPLCY|POD-FW)' || true)
echo "left=$left"
EOF

nodes() {
  local out
  out="$(docker ps --format '{{.Names}}' --filter "label=io.x-k8s.kind.cluster=$CLUSTER_NAME")" \
    || die "cannot list the nodes of cluster $CLUSTER_NAME (is dockerd answering?)"
  [ -n "$out" ] || die "cluster $CLUSTER_NAME has no running nodes (make cluster)"
  sort <<<"$out"
}

running_on() { docker exec "$1" pgrep -f "^$BINARY" >/dev/null 2>&1; }

cmd_status() {
  local node ok=0 list
  list="$(nodes)" || exit 1
  for node in $list; do
    if running_on "$node"; then log "enforcer runs on $node"; else log "enforcer NOT running on $node"; ok=1; fi
  done
  exit "$ok"
}

start_on() { # node admin-kubeconfig
  local node="$1" admin="$2" binary="$BIN_DIR/kube-router-$KUBE_ROUTER_VERSION" deb
  local cleaned
  cleaned="$(docker exec "$node" sh -c "$CLEANUP")" || die "$node: cleanup failed: $cleaned"
  docker exec "$node" mkdir -p "$DIR"
  docker cp -q "$binary" "$node:$BINARY" >/dev/null
  # Worker nodes have only the kubelet's own credentials, which cannot list policies.
  docker cp -q "$admin" "$node:$DIR/admin.conf" >/dev/null
  for deb in "${IPSET_DEBS[@]}"; do docker cp -q "$QSCALE_CACHE/debs/$deb" "$node:$DIR/$deb" >/dev/null; done
  docker exec "$node" sh -c "cd $DIR && dpkg -i ${IPSET_DEBS[*]} >/dev/null" \
    || die "$node: installing ipset failed"
  docker exec "$node" sh -c "nohup $BINARY --run-firewall=true --run-router=false \
    --run-service-proxy=false --enable-cni=false --metrics-port=0 \
    --kubeconfig=$DIR/admin.conf --hostname-override=$node \
    --iptables-sync-period=30s -v=1 >$NODE_LOG 2>&1 &"
}

cmd_up() {
  local binary="$BIN_DIR/kube-router-$KUBE_ROUTER_VERSION" deb node started=() t0=$SECONDS
  [ -x "$binary" ] || die "$binary is missing: make test-tools (hack/test-tools.sh) builds it"
  for deb in "${IPSET_DEBS[@]}"; do
    [ -f "$QSCALE_CACHE/debs/$deb" ] || die "$QSCALE_CACHE/debs/$deb is missing: make test-tools downloads it"
  done
  local list admin
  list="$(nodes)" || exit 1
  admin="$(mktemp)"
  ADMIN_TMP="$admin"
  trap 'rm -f "$ADMIN_TMP"' EXIT
  docker cp -q "$CLUSTER_NAME-control-plane:/etc/kubernetes/admin.conf" "$admin" \
    || die "cannot read the admin kubeconfig of $CLUSTER_NAME-control-plane"
  for node in $list; do
    running_on "$node" && continue
    start_on "$node" "$admin"
    started+=("$node")
  done
  for node in "${started[@]}"; do
    until docker exec "$node" grep -q "$SYNCED" "$NODE_LOG" 2>/dev/null; do
      running_on "$node" || die "kube-router died on $node: $(docker exec "$node" tail -n 20 "$NODE_LOG" 2>&1)"
      [ $((SECONDS - t0)) -lt 180 ] || die "kube-router on $node never synced: $(docker exec "$node" tail -n 20 "$NODE_LOG" 2>&1)"
      sleep 1
    done
  done
  log "NetworkPolicy enforced on cluster $CLUSTER_NAME (kube-router $KUBE_ROUTER_VERSION firewall; started on: ${started[*]:-none, already running})"
}

cmd_down() {
  local node out list
  list="$(nodes)" || exit 1
  for node in $list; do
    out="$(docker exec "$node" sh -c "$CLEANUP")" || die "$node: cleanup failed: $out"
    grep -q "left=0" <<<"$out" || die "$node: kube-router's rules are still there: $out"
  done
  log "NetworkPolicy no longer enforced on cluster $CLUSTER_NAME"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 up|down|status" ;;
esac
