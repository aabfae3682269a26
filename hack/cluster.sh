#!/usr/bin/env bash
# qscale kind cluster entry point (used by `make cluster*`, CI and tests).
#   hack/cluster.sh up            build whatever is missing, create the cluster, wait
#   hack/cluster.sh down          delete the cluster
#   hack/cluster.sh load IMAGE..  load local docker images into the cluster
#   hack/cluster.sh tools         build only kind/helm/kubeconform/kubectl
#   hack/cluster.sh path          print which node image `up` would use, and why
# Offline by default: every image is built here. QSCALE_KIND_NODE_IMAGE=ref
# (e.g. kindest/node:v1.34.3@sha256:... where a registry is reachable) skips the
# builds (no Kubernetes build: kubectl is downloaded or built from its Go module).
# QSCALE_KIND_AUTO=1 (make demo) chooses: the stock kindest/node when Docker can
# pull it (or the cluster already runs it), else the offline build; it says which.
# QSCALE_KIND_WORKERS=N adds N worker nodes (same image) to a new cluster; the control
# plane then keeps kind's NoSchedule taint, so every pod runs on a worker node.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KIND="$BIN_DIR/kind"
KUBECTL="$BIN_DIR/kubectl"
KUBECTL_Q=("$KUBECTL" --kubeconfig "$KUBECONFIG_FILE")

# The kindest/node that kind v0.31.0 publishes for Kubernetes 1.34 (its release notes).
STOCK_NODE_IMAGE="${QSCALE_STOCK_NODE_IMAGE:-kindest/node:v1.34.3@sha256:08497ee19eace7b4b5348db5c6a1591d7752b164530a36f855cb0f2bdcbadd48}"

# Whether the cluster exists. A listing that fails (dockerd slow under load answers
# `docker ps` with an error now and then) is unknown, not "absent": retried, then fatal.
# Treating it as absent made `load` die "does not exist" mid-CI on a live cluster.
cluster_exists() {
  [ -x "$KIND" ] || return 1
  local out try
  for try in 1 2 3 4 5 6; do
    if out="$("$KIND" get clusters 2>&1)"; then
      grep -qxF "$CLUSTER_NAME" <<<"$out"
      return
    fi
    [ "$try" -lt 6 ] && sleep $((try * ${QSCALE_RETRY_UNIT_S:-2}))
  done
  die "cannot list kind clusters (is dockerd answering?): $(tail -n1 <<<"$out")"
}
node_container() { echo "$CLUSTER_NAME-control-plane"; }
WORKERS="${QSCALE_KIND_WORKERS:-0}"
[[ "$WORKERS" =~ ^[0-9]$ ]] || die "QSCALE_KIND_WORKERS must be a number of worker nodes, 0-9 (got '$WORKERS')"
# Node containers of the cluster (`-a`: running or not); a listing that fails is fatal, not 0.
node_count() {
  local out
  out="$(docker ps "$@" --format '{{.Names}}' --filter "label=io.x-k8s.kind.cluster=$CLUSTER_NAME")" \
    || die "cannot list the nodes of cluster $CLUSTER_NAME (is dockerd answering?)"
  grep -c . <<<"$out" || true
}

api_ok() { timeout 20 "${KUBECTL_Q[@]}" get --raw /readyz >/dev/null 2>&1; }

wait_ready() {
  log "waiting for node Ready"
  "${KUBECTL_Q[@]}" wait --for=condition=Ready node --all --timeout=300s >&2 \
    || die "node not Ready after 300s ($("${KUBECTL_Q[@]}" get nodes --no-headers 2>&1 | head -n3 | tr '\n' ' '))"
  log "waiting for CoreDNS"
  "${KUBECTL_Q[@]}" -n kube-system rollout status deploy/coredns --timeout=300s >&2 \
    || die "CoreDNS not available after 300s"
  # DNS must actually answer: resolve the API service name from a pod
  local pod="qscale-dnscheck-$RANDOM"
  "${KUBECTL_Q[@]}" run "$pod" --restart=Never --image="qscale/debian:$DEBIAN_SUITE" \
     --image-pull-policy=IfNotPresent --command -- getent hosts kubernetes.default.svc.cluster.local >/dev/null
  local phase=""
  for _ in $(seq 90); do
    phase="$("${KUBECTL_Q[@]}" get pod "$pod" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    case "$phase" in Succeeded|Failed) break;; esac
    sleep 2
  done
  local out; out="$("${KUBECTL_Q[@]}" logs "$pod" 2>&1 || true)"
  "${KUBECTL_Q[@]}" delete pod "$pod" --wait=false >/dev/null 2>&1 || true
  [ "$phase" = Succeeded ] || die "CoreDNS does not answer from a pod (phase=$phase: $out)"
  log "DNS ok: $out"
}

# Offline path. The Kubernetes build (the longest step) runs in the background
# while the tools, the Debian rootfs and the other Go binaries are built.
build_node_image() {
  local k8s_log="$LOG_DIR/k8s-build-$K8S_VERSION-outer.log" k8s_pid k8s_rc=0
  bash "$HACK_DIR/k8s-build.sh" >"$k8s_log" 2>&1 </dev/null &
  k8s_pid=$!
  QSCALE_TOOLS_SKIP_KUBECTL=1 bash "$HACK_DIR/tools.sh" >&2
  bash "$HACK_DIR/images/debian.sh" >&2
  bash "$HACK_DIR/images/go-binaries.sh" --from-source >&2
  wait "$k8s_pid" || k8s_rc=$?
  if [ "$k8s_rc" -ne 0 ]; then
    tail -n 45 "$k8s_log" >&2
    die "Kubernetes $K8S_VERSION build failed (log: $k8s_log)"
  fi
  cat "$k8s_log" >&2
  bash "$HACK_DIR/tools.sh" >&2          # links kubectl now that it exists
  bash "$HACK_DIR/images/build.sh" >&2
  bash "$HACK_DIR/kind-node/build.sh"
}

# choose_path: sets NODE_PATH (stock|offline), NODE_IMAGE (stock only) and NODE_WHY.
choose_path() {
  NODE_IMAGE=""
  if [ -n "${QSCALE_KIND_NODE_IMAGE:-}" ]; then
    NODE_PATH=stock NODE_IMAGE="$QSCALE_KIND_NODE_IMAGE" NODE_WHY="QSCALE_KIND_NODE_IMAGE is set"
    return
  fi
  if [ "${QSCALE_KIND_AUTO:-0}" != 1 ]; then
    NODE_PATH=offline NODE_WHY="the default of make cluster (QSCALE_KIND_NODE_IMAGE unset)"
    return
  fi
  local running
  running="$(docker inspect -f '{{.Config.Image}}' "$(node_container)" 2>/dev/null || true)"
  if cluster_exists && [ -n "$running" ]; then
    case "$running" in
      qscale/kind-node:*) NODE_PATH=offline NODE_WHY="cluster $CLUSTER_NAME already runs the offline node image $running" ;;
      *) NODE_PATH=stock NODE_IMAGE="$running" NODE_WHY="cluster $CLUSTER_NAME already runs $running" ;;
    esac
    return
  fi
  if have_image "$STOCK_NODE_IMAGE"; then
    NODE_PATH=stock NODE_IMAGE="$STOCK_NODE_IMAGE" NODE_WHY="Docker already has $STOCK_NODE_IMAGE"
    return
  fi
  local err
  if err="$(docker pull "$STOCK_NODE_IMAGE" 2>&1 >/dev/null)"; then
    NODE_PATH=stock NODE_IMAGE="$STOCK_NODE_IMAGE" NODE_WHY="Docker pulled $STOCK_NODE_IMAGE"
  else
    NODE_PATH=offline
    NODE_WHY="Docker cannot pull $STOCK_NODE_IMAGE ($(printf '%s\n' "$err" | grep -v '^\s*$' | tail -n1)): Kubernetes and the node image are built here (the first time takes long)"
  fi
}

cmd_path() {
  choose_path
  printf '%s\t%s\t%s\n' "$NODE_PATH" "${NODE_IMAGE:--}" "$NODE_WHY"
}

cmd_tools() {
  bash "$HACK_DIR/docker.sh"
  bash "$HACK_DIR/tools.sh"
}

cmd_up() {
  local t0=$SECONDS image
  bash "$HACK_DIR/docker.sh"
  choose_path
  log "cluster $CLUSTER_NAME: $NODE_PATH path${NODE_IMAGE:+ ($NODE_IMAGE)}: $NODE_WHY"
  if [ "$NODE_PATH" = stock ]; then
    export QSCALE_KIND_NODE_IMAGE="$NODE_IMAGE"
    bash "$HACK_DIR/tools.sh"
    image="$NODE_IMAGE"
  else
    image="$(build_node_image | tail -n1)"
  fi
  [ -n "$image" ] || die "no node image"
  if cluster_exists; then
    local nodes running; nodes="$(node_count -a)"; running="$(node_count)"
    # A node container that stopped (dockerd or the machine went away) is
    # recreated rather than restarted: a fresh node from the cached image takes
    # about two minutes and is deterministic.
    if [ "$running" != "$nodes" ]; then
      log "cluster $CLUSTER_NAME: $((nodes - running)) of $nodes node containers not running: recreating"
      "$KIND" delete cluster --name "$CLUSTER_NAME" >&2 || true
    elif [ "$nodes" != "$((1 + WORKERS))" ]; then
      log "cluster $CLUSTER_NAME has $nodes nodes, QSCALE_KIND_WORKERS=$WORKERS asks for $((1 + WORKERS)): recreating"
      "$KIND" delete cluster --name "$CLUSTER_NAME" >&2 || true
    elif [ "$(docker inspect -f '{{.Config.Image}}' "$(node_container)" 2>/dev/null)" != "$image" ]; then
      log "cluster $CLUSTER_NAME: node image changed to $image: recreating"
      "$KIND" delete cluster --name "$CLUSTER_NAME" >&2 || true
    else
      "$KIND" export kubeconfig --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG_FILE" >/dev/null 2>&1 || true
      if api_ok; then
        log "cluster $CLUSTER_NAME already up"
      else
        log "cluster $CLUSTER_NAME exists but its API does not answer: recreating"
        "$KIND" delete cluster --name "$CLUSTER_NAME" >&2 || true
      fi
    fi
  fi
  if ! cluster_exists; then
    local cfg="$QSCALE_CACHE/kind-config-$CLUSTER_NAME.yaml"
    cat > "$cfg" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
YAML
    for _ in $(seq "$WORKERS"); do echo "  - role: worker" >> "$cfg"; done
    run_logged "kind-create-$CLUSTER_NAME" "$KIND" create cluster --name "$CLUSTER_NAME" --image "$image" \
      --kubeconfig "$KUBECONFIG_FILE" --config "$cfg" --wait 0s
  fi
  if [ -n "${QSCALE_KIND_NODE_IMAGE:-}" ]; then
    # a stock node image lacks our base image (used by the DNS probe, tests, charts)
    bash "$HACK_DIR/images/debian.sh" >&2
    "$KIND" load docker-image --name "$CLUSTER_NAME" "qscale/debian:$DEBIAN_SUITE" >&2
  fi
  # Several nodes on the offline image: its one-node bridge becomes a routed pod network
  # (idempotent, and again after a node container restarted, which loses its routes).
  # A stock kindest/node runs kindnet, which does this itself.
  if [ "$WORKERS" != 0 ] && [ "$NODE_PATH" = offline ]; then
    bash "$HACK_DIR/multinode-network.sh" >&2
  fi
  wait_ready
  log "cluster $CLUSTER_NAME ready in $((SECONDS - t0))s; KUBECONFIG=$KUBECONFIG_FILE (source hack/env.sh)"
}

cmd_down() {
  if cluster_exists; then
    "$KIND" delete cluster --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG_FILE" >&2
  else
    log "cluster $CLUSTER_NAME not present"
  fi
  rm -f "$KUBECONFIG_FILE" "$QSCALE_CACHE/kind-config-$CLUSTER_NAME.yaml"
}

cmd_load() {
  [ $# -gt 0 ] || die "usage: cluster.sh load IMAGE [IMAGE...]"
  cluster_exists || die "cluster $CLUSTER_NAME does not exist (make cluster)"
  for img in "$@"; do
    have_image "$img" || die "docker image $img not found locally"
    "$KIND" load docker-image --name "$CLUSTER_NAME" "$img" >&2 || die "kind load docker-image $img failed"
  done
}

case "${1:-up}" in
  up) cmd_up ;;
  down) cmd_down ;;
  load) shift; cmd_load "$@" ;;
  tools) cmd_tools ;;
  path) cmd_path ;;
  *) die "unknown command ${1}; use up|down|load|tools|path" ;;
esac
