#!/usr/bin/env bash
# `make demo`: qscale on a local kind cluster, from nothing to a live autoscaling burst.
#
#   make demo                  # Redis broker
#   BROKER=rabbitmq make demo  # RabbitMQ broker (plus a small results Redis)
#
# 1. creates or reuses the kind cluster: the stock kindest/node when Docker can pull it
#    (no Kubernetes build), else the offline build (`make cluster`, cached); it prints
#    which path it took and why (QSCALE_KIND_NODE_IMAGE=ref forces a node image)
# 2. builds the images and loads them into the cluster (`hack/build-image.sh --load all`)
# 3. installs or upgrades the chart as release "demo" in namespace qscale-demo-<broker>
# 4. submits a burst of DEMO_TASKS (3000) qscale.demo.sleep tasks of DEMO_TASK_SECONDS (0.5)
# 5. shows, every second, queue depth, in-flight, replicas, throughput and the
#    controller's last decision until the workers are back at the minimum
# 6. prints where to look next and leaves the release installed.
# Rerunning reuses everything. Without a terminal it prints one plain line per second.
# Other knobs: DEMO_NAMESPACE, DEMO_TIMEOUT (seconds of watching, default 900).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

BROKER="${BROKER:-redis}"
RELEASE="demo"
NAMESPACE="${DEMO_NAMESPACE:-qscale-demo-$BROKER}"
TASKS="${DEMO_TASKS:-3000}"
TASK_SECONDS="${DEMO_TASK_SECONDS:-0.5}"
TIMEOUT="${DEMO_TIMEOUT:-900}"
MIN_REPLICAS=1
MAX_REPLICAS=6

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: FAILED: %s\n' "$*" >&2; exit 1; }

case "$BROKER" in
  redis|rabbitmq) ;;
  *) die "BROKER must be redis or rabbitmq, got '$BROKER'" ;;
esac
[[ "$TASKS" =~ ^[1-9][0-9]*$ ]] || die "DEMO_TASKS must be a positive integer, got '$TASKS'"
[[ "$TASK_SECONDS" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "DEMO_TASK_SECONDS must be a number, got '$TASK_SECONDS'"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "DEMO_TIMEOUT must be a positive integer, got '$TIMEOUT'"

export QSCALE_KIND_AUTO=1
bash hack/docker.sh || die "Docker cannot run kind here (see above)"
IFS=$'\t' read -r node_path node_image node_why < <(bash hack/cluster.sh path) \
  || die "cannot choose the kind node image"
export QSCALE_KIND_AUTO=0   # chosen once, here
if [ "$node_path" = stock ]; then
  say "1/5 kind cluster: stock path, node image $node_image, because $node_why (no Kubernetes build)"
  export QSCALE_KIND_NODE_IMAGE="$node_image"
else
  say "1/5 kind cluster: offline path (Kubernetes and the node image built here, cached), because $node_why"
fi
bash hack/cluster.sh up || die "make cluster failed (logs: \${QSCALE_CACHE:-/var/cache/qscale}/logs)"
# shellcheck disable=SC1091
source hack/env.sh

say "2/5 images (hack/build-image.sh all, Docker-cached; loaded into kind unless already there)"
bash hack/build-image.sh all || die "image build failed"
VERSION="$(awk '/^appVersion:/ {gsub(/"/, "", $2); print $2}' helm/qscale/Chart.yaml)"
NODE="${QSCALE_CLUSTER_NAME:-qscale}-control-plane"
# True when the node's containerd already holds this exact image (same config digest
# as Docker's image id): `kind load` cannot tell here (no crictl) and reloads every time.
on_node() {
  local id digest config
  id="$(docker image inspect -f '{{.Id}}' "$1")" || return 1
  digest="$(docker exec "$NODE" ctr -n k8s.io images ls "name==docker.io/library/$1" \
            | awk 'NR == 2 {print $3}')"
  [ -n "$digest" ] || return 1
  config="$(docker exec "$NODE" ctr -n k8s.io content get "$digest" \
            | python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])')" || return 1
  [ "$config" = "$id" ]
}
for image in qscale qscale-redis qscale-rabbitmq qscale-prometheus; do
  if on_node "$image:$VERSION"; then
    say "   $image:$VERSION already in the cluster"
  else
    bash hack/cluster.sh load "$image:$VERSION" || die "loading $image:$VERSION into kind failed"
  fi
done
image_id="$(docker image inspect -f '{{.Id}}' "qscale:$VERSION")" || die "qscale:$VERSION is missing"

say "3/5 helm upgrade --install $RELEASE (broker $BROKER) in namespace $NAMESPACE"
values="$(mktemp)"
trap 'rm -f "$values"' EXIT
# Small requests so everything fits one 2-CPU node; a short scale-down window so the
# demo ends soon after the burst. The image id annotation rolls pods after a rebuild.
cat >"$values" <<EOF
broker:
  type: $BROKER
worker:
  concurrency: 4
  resources:
    requests: {cpu: 50m, memory: 64Mi}
    limits: {memory: 384Mi}
  podAnnotations:
    qscale.io/image-id: "${image_id#sha256:}"
autoscaling:
  minReplicas: $MIN_REPLICAS
  maxReplicas: $MAX_REPLICAS
  scaleDownWindowSeconds: 20
  pollIntervalSeconds: 1
controller:
  resources:
    requests: {cpu: 20m, memory: 64Mi}
    limits: {memory: 256Mi}
  podAnnotations:
    qscale.io/image-id: "${image_id#sha256:}"
redis:
  persistence: {size: 256Mi}
  resources:
    requests: {cpu: 20m, memory: 64Mi}
    limits: {memory: 256Mi}
rabbitmq:
  persistence: {size: 512Mi}
  resources:
    requests: {cpu: 50m, memory: 256Mi}
    limits: {memory: 512Mi}
monitoring:
  prometheus:
    resources:
      requests: {cpu: 20m, memory: 96Mi}
      limits: {memory: 512Mi}
EOF
# --take-ownership: a demo cluster from chart 0.1.x has the WorkerPool CRD without Helm
# ownership (its crds/); this chart manages and upgrades it, which Helm refuses to
# adopt silently (helm/qscale/README.md, Uninstall).
helm upgrade --install "$RELEASE" helm/qscale -n "$NAMESPACE" --create-namespace \
  --take-ownership -f "$values" --wait --timeout 10m >/dev/null || die "helm upgrade --install failed"

FULLNAME="$RELEASE-qscale"
WORKERS="$FULLNAME-worker-default"
POOL="$FULLNAME-default"
kubectl -n "$NAMESPACE" rollout status "deploy/$WORKERS" --timeout=300s >/dev/null \
  || die "worker Deployment $WORKERS did not become available"

say "4/5 submitting $TASKS x qscale.demo.sleep($TASK_SECONDS) from a worker pod"
summary="$(kubectl -n "$NAMESPACE" exec "deploy/$WORKERS" -- python -m worker enqueue \
  qscale.demo.sleep --args "[$TASK_SECONDS]" --count "$TASKS" 2>/dev/null)" \
  || die "enqueue failed (try: kubectl -n $NAMESPACE exec deploy/$WORKERS -- python -m worker status)"
say "$summary"

say "5/5 watching (every 1 s) until the workers are back at $MIN_REPLICAS replica"
watch_status=0
python3 - "$NAMESPACE" "$WORKERS" "$POOL" "$MIN_REPLICAS" "$TIMEOUT" "$TASKS" <<'PY' || watch_status=$?
import json, subprocess, sys, time
from collections import deque

namespace, deploy, pool, min_replicas, timeout, tasks = sys.argv[1:7]
min_replicas, timeout, tasks = int(min_replicas), float(timeout), int(tasks)
tty = sys.stdout.isatty()
history = deque(maxlen=6)          # (time, remaining) for a 5 s throughput
started = time.monotonic()
peak, seen_work, drained_at, last_error = 0, False, None, ""

def read():
    out = subprocess.run(["kubectl", "-n", namespace, "get", f"deployment/{deploy}",
                          f"workerpool/{pool}", "-o", "json"], capture_output=True,
                         text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "kubectl failed")
    items = {i["kind"]: i for i in json.loads(out.stdout)["items"]}
    return items["Deployment"], items["WorkerPool"].get("status") or {}

while True:
    now = time.monotonic()
    elapsed = now - started
    if elapsed > timeout:
        print(f"demo: the pool did not settle within {timeout:.0f}s", file=sys.stderr)
        sys.exit(1)
    try:
        dep, st = read()
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        last_error = str(exc)
        time.sleep(1)
        continue
    ready, inflight = st.get("readyDepth") or 0, st.get("inFlight") or 0
    desired = dep["spec"].get("replicas") or 0
    current = dep.get("status", {}).get("replicas") or 0
    up = dep.get("status", {}).get("readyReplicas") or 0
    remaining = ready + inflight
    history.append((now, remaining))
    t0, r0 = history[0]
    throughput = max(0.0, (r0 - remaining) / (now - t0)) if now > t0 else 0.0
    peak = max(peak, desired)
    seen_work = seen_work or remaining > 0 or desired > min_replicas
    if seen_work and remaining == 0 and drained_at is None:
        drained_at = elapsed
    reason = st.get("lastDecisionReason", "") or "-"
    decision = st.get("lastDecision", "") or "-"
    if tty:
        sys.stdout.write("\033[H\033[2J")
        print(f"qscale demo: {tasks} tasks -> {namespace}/{pool}   t={elapsed:5.0f}s\n")
        print(f"  queue depth (ready)   {ready:>8}")
        print(f"  in flight             {inflight:>8}")
        print(f"  replicas cur/desired  {current:>4}/{desired:<4} (Ready {up}, peak {peak})")
        print(f"  throughput            {throughput:>8.1f} tasks/s")
        print(f"  last decision         {decision}: {reason}")
        if last_error:
            print(f"\n  (last read error: {last_error})")
        print("\n  Ctrl-C stops watching; the release stays installed.")
    else:
        print(f"t={elapsed:4.0f}s depth={ready} in_flight={inflight} replicas={current}/{desired} "
              f"ready={up} throughput={throughput:.1f}/s decision={decision} reason=\"{reason}\"",
              flush=True)
    if seen_work and remaining == 0 and desired <= min_replicas and current <= min_replicas:
        print(f"demo: burst done: drained after {drained_at:.0f}s, peak {peak} replicas, "
              f"back to {min_replicas} after {elapsed:.0f}s")
        sys.exit(0)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
PY
((watch_status == 0)) || die "watching the burst failed"

cat <<EOF

Look around (the release stays installed; run \`source hack/env.sh\` first):
  kubectl -n $NAMESPACE get workerpools                 # depth, in-flight, replicas, last reason
  kubectl -n $NAMESPACE describe workerpool $POOL  # ScaledUp / ScaledDown events
  kubectl -n $NAMESPACE exec deploy/$WORKERS -- python -m worker status
  kubectl -n $NAMESPACE port-forward svc/$FULLNAME-prometheus 9090
      then open http://127.0.0.1:9090 and query qscale_controller_queue_ready,
      qscale_controller_current_replicas, sum(rate(qscale_tasks_total[1m]))
  BROKER=$BROKER make demo      # again: reuses the cluster, images and release
  helm -n $NAMESPACE uninstall $RELEASE   # remove (PVCs stay: kubectl -n $NAMESPACE delete pvc --all)
EOF
