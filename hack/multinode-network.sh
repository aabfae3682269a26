#!/usr/bin/env bash
# Pod networking across the nodes of a multi-node qscale kind cluster
# (hack/cluster.sh runs it when QSCALE_KIND_WORKERS > 0; idempotent).
#
# The offline node image ships a static bridge CNI config for one node: every node would
# hand out 10.244.0.0/24 and no node could reach another's pods. kindnetd, what stock kind
# runs, is not built here; what it does is small, so this does the same once per node:
#   - the bridge config takes the node's own spec.podCIDR (allocated by the
#     controller-manager), without the plugin's masquerade, so pod-to-pod traffic keeps
#     its source address (NetworkPolicy peers are pod addresses);
#   - a route to every other node's pod CIDR via that node's address on kind's network;
#   - one masquerade rule for pod traffic leaving the pod network.
# Pods a node started before its config changed got an address from the wrong range:
# while a node is set up it is tainted NoSchedule and those pods are deleted (their
# controllers recreate them).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBECTL=("$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE")
POD_NETWORK="10.244.0.0/16"   # kind's default podSubnet
CONF=/etc/cni/net.d/10-qscale-bridge.conflist
TAINT="qscale.io/network-setup"

node_ip() { docker inspect -f '{{(index .NetworkSettings.Networks "kind").IPAddress}}' "$1"; }

pod_cidr() {
  local node="$1" cidr="" _
  for _ in $(seq 120); do
    cidr="$("${KUBECTL[@]}" get node "$node" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true)"
    [ -n "$cidr" ] && { echo "$cidr"; return; }
    sleep 1
  done
  die "node $node has no spec.podCIDR after 120s"
}

conflist() { # cidr
  local cidr="$1" gateway
  gateway="${cidr%.*/*}.1"
  cat <<JSON
{
  "cniVersion": "0.4.0",
  "name": "qscale-bridge",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$cidr", "gateway": "$gateway" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "/var/lib/cni/networks"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
}

setup_node() { # node cidr
  local node="$1" cidr="$2" want pods p
  want="$(conflist "$cidr")"
  if [ "$(docker exec "$node" cat "$CONF" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  log "pod network: $node takes $cidr"
  "${KUBECTL[@]}" taint node "$node" "$TAINT=:NoSchedule" --overwrite >/dev/null
  # Pods already given an address from the image's range: recreated by their owners
  # (hostNetwork is absent from a pod that does not use it, hence the jq filter).
  pods="$("${KUBECTL[@]}" get pods -A --field-selector "spec.nodeName=$node" -o json \
    | jq -r '.items[] | select(.spec.hostNetwork != true) | "\(.metadata.namespace)/\(.metadata.name)"')" \
    || die "cannot list the pods of node $node"
  for p in $pods; do
    "${KUBECTL[@]}" delete pod -n "${p%%/*}" "${p#*/}" --grace-period=0 --force --wait=true >/dev/null 2>&1 || true
  done
  docker exec "$node" sh -c 'ip link del cni0 2>/dev/null; rm -rf /var/lib/cni/networks/qscale-bridge; true'
  # Last: an interrupted run finds the old config and does all of the above again.
  printf '%s\n' "$want" | docker exec -i "$node" sh -c "cat > $CONF.new && mv $CONF.new $CONF"
}

main() {
  local nodes node other cidr
  nodes="$(docker ps --format '{{.Names}}' --filter "label=io.x-k8s.kind.cluster=$CLUSTER_NAME" | sort)" \
    || die "cannot list the nodes of cluster $CLUSTER_NAME"
  [ -n "$nodes" ] || die "cluster $CLUSTER_NAME has no running nodes"
  declare -A cidrs ips
  for node in $nodes; do
    cidrs[$node]="$(pod_cidr "$node")"
    ips[$node]="$(node_ip "$node")"
    [ -n "${ips[$node]}" ] || die "node $node has no address on kind's network"
  done
  for node in $nodes; do
    setup_node "$node" "${cidrs[$node]}"
    for other in $nodes; do
      [ "$other" = "$node" ] && continue
      docker exec "$node" ip route replace "${cidrs[$other]}" via "${ips[$other]}"
    done
    docker exec "$node" sh -c "iptables -t nat -C POSTROUTING -s $POD_NETWORK ! -d $POD_NETWORK -j MASQUERADE 2>/dev/null \
      || iptables -t nat -A POSTROUTING -s $POD_NETWORK ! -d $POD_NETWORK -j MASQUERADE"
    "${KUBECTL[@]}" taint node "$node" "$TAINT:NoSchedule-" >/dev/null 2>&1 || true
  done
  for node in $nodes; do cidr="${cidrs[$node]}"; log "pod network: $node $cidr via ${ips[$node]}"; done
}

main "$@"
