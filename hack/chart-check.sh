#!/usr/bin/env bash
# Check the Helm chart offline: helm lint --strict on every ci/*-values.yaml, then
# kubeconform (strict) of every render against Kubernetes $K8S_VERSION schemas made
# from the API server's own OpenAPI document (hack/kubeconform-schemas.py), cached
# in $QSCALE_CACHE/kubeconform-schemas/<version>.
#
#   hack/chart-check.sh            (make chart-check also runs tests/chart)
#
# Schema source, first that works: $OPENAPI_V2 (a file), the kind cluster
# (`kubectl get --raw /openapi/v2`), the same version's swagger.json in the Go
# module cache. monitoring.coreos.com kinds (PodMonitor, ServiceMonitor,
# PrometheusRule) are skipped in the render that enables them: their CRDs are
# not installed here, so no schema exists offline; tests/chart covers their shape.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="${CHART:-$REPO_ROOT/helm/qscale}"
QSCALE_CACHE="${QSCALE_CACHE:-/var/cache/qscale}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
[ -f "$REPO_ROOT/hack/env.sh" ] && source "$REPO_ROOT/hack/env.sh"
PY="${PY:-$REPO_ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
die() { echo "chart-check: $*" >&2; exit 1; }

HELM="${HELM:-$(command -v helm || true)}"
[ -n "$HELM" ] || die "helm not found (make tools; source hack/env.sh)"
KUBECONFORM="${KUBECONFORM:-$(command -v kubeconform || true)}"
[ -n "$KUBECONFORM" ] || die "kubeconform not found (make tools; source hack/env.sh)"

# 1. lint
for values in "$CHART"/ci/*-values.yaml; do
  out="$("$HELM" lint --strict "$CHART" -f "$values" 2>&1)" \
    || { echo "$out" >&2; die "helm lint --strict failed with ci/$(basename "$values")"; }
  echo "chart-check: helm lint --strict ok with ci/$(basename "$values")"
done

# 2. schemas, one directory per Kubernetes version and CRD content: checkouts with
# different CRDs share the cache without regenerating each other's (or deleting a
# directory another run is reading); a new directory appears whole (mv).
crd="$CHART/files/crds/workerpool.yaml"
[ -f "$crd" ] || die "missing $crd"
SCHEMAS="$QSCALE_CACHE/kubeconform-schemas/$K8S_VERSION-crd-$(sha256sum "$crd" | cut -c1-12)"
if [ ! -f "$SCHEMAS/deployment-apps-v1.json" ]; then
  tmp="$(mktemp)"; trap 'rm -f "$tmp"' EXIT
  if [ -n "${OPENAPI_V2:-}" ]; then
    cp "$OPENAPI_V2" "$tmp"; src="$OPENAPI_V2"
  elif command -v kubectl >/dev/null && kubectl get --raw /openapi/v2 >"$tmp" 2>/dev/null; then
    src="the API server ($(kubectl version -o json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])' 2>/dev/null || echo '?'))"
  else
    swagger="$(ls "$QSCALE_CACHE"/go/mod/k8s.io/kubernetes@"$K8S_VERSION"/api/openapi-spec/swagger.json 2>/dev/null | head -n1 || true)"
    [ -n "$swagger" ] || die "no OpenAPI source: start the cluster (make cluster) or set OPENAPI_V2=<file>"
    cp "$swagger" "$tmp"; src="$swagger"
  fi
  mkdir -p "$(dirname "$SCHEMAS")"
  partial="$(mktemp -d "$SCHEMAS.partial.XXXXXX")"
  "$PY" "$REPO_ROOT/hack/kubeconform-schemas.py" --openapi "$tmp" --crd "$crd" --out "$partial" \
    || { rm -rf "$partial"; die "schema generation failed"; }
  mv -T "$partial" "$SCHEMAS" 2>/dev/null || rm -rf "$partial"   # another run won the race
  echo "chart-check: schemas for $K8S_VERSION from $src"
fi

# 3. kubeconform every render: defaults, each ci file, and with the operator CRDs present
kc() {  # label, extra kubeconform args..., then render args after --
  local label="$1"; shift
  local kargs=()
  while [ "$1" != "--" ]; do kargs+=("$1"); shift; done; shift
  "$HELM" template qscale "$CHART" --namespace qscale "$@" \
    | "$KUBECONFORM" -strict -summary -kubernetes-version "${K8S_VERSION#v}" \
        -schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
        ${kargs[@]+"${kargs[@]}"} \
    || die "kubeconform failed for $label"
}
kc defaults --
for values in "$CHART"/ci/*-values.yaml; do
  kc "ci/$(basename "$values")" -- -f "$values"
done
kc "monitoring.coreos.com/v1 present" -skip PodMonitor,ServiceMonitor,PrometheusRule -- --api-versions monitoring.coreos.com/v1
# The generated plain manifests, too.
for overlay in "$REPO_ROOT"/k8s/overlays/*/; do
  find "$REPO_ROOT/k8s/base" "$overlay" -name '*.yaml' ! -name kustomization.yaml -print0 \
    | xargs -0 "$KUBECONFORM" -strict -summary -kubernetes-version "${K8S_VERSION#v}" \
        -schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    || die "kubeconform failed for $overlay"
done
# 4. promtool on the rendered Prometheus config and alert rules (needs the image).
if docker image inspect qscale-prometheus:dev >/dev/null 2>&1; then
  promdir="$(mktemp -d)"
  "$HELM" template qscale "$CHART" --namespace qscale -s templates/prometheus.yaml --set broker.type=rabbitmq \
    | "$PY" -c '
import sys, yaml
for doc in yaml.safe_load_all(sys.stdin):
    if doc and doc["kind"] == "ConfigMap":
        for key, text in doc["data"].items():
            open(sys.argv[1] + "/" + key, "w").write(text.replace("/etc/prometheus/", "/cfg/"))
' "$promdir"
  chmod -R a+rX "$promdir"
  docker run --rm --network none -v "$promdir:/cfg:ro" --entrypoint promtool qscale-prometheus:dev \
    check config /cfg/prometheus.yml || { rm -rf "$promdir"; die "promtool rejects the Prometheus config"; }
  rm -rf "$promdir"
else
  echo "chart-check: NOTE promtool not run: image qscale-prometheus:dev missing (hack/build-image.sh qscale-prometheus)"
fi
echo "chart-check: ok"
