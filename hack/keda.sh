#!/usr/bin/env bash
# KEDA from its Go module, the way hack/k8s-build.sh builds Kubernetes: no registry.
#
#   hack/keda.sh manifests   the release's tree (module zip) and keda.yaml rendered from it
#   hack/keda.sh build       + the operator and the metrics API server (go build in the tree)
#   hack/keda.sh images      + images qscale/keda and qscale/keda-metrics-apiserver
#   hack/keda.sh install     + load the images into kind cluster $QSCALE_CLUSTER_NAME, apply
#                              keda.yaml, wait until the external metrics API answers
#   hack/keda.sh check       wait until the external metrics API answers; if it does not,
#                              print why (APIService condition, pods, events, logs)
#   hack/keda.sh uninstall   delete what install applied
#
# Everything is cached by version under $QSCALE_CACHE/keda/$KEDA_VERSION: src/ (a copy of
# the module's tree; KEDA's go.mod has replace directives, so `go install pkg@version`
# refuses it), bin/, keda.yaml. The build uses the Go toolchain KEDA's go.mod asks for
# (GOTOOLCHAIN=go1.27.4 for v2.21.x, served by the module proxy).
#
# keda.yaml is KEDA's own `config/minimal` kustomization (CRDs, RBAC, operator, metrics
# API server, APIService; no admission webhooks, which scaling does not need) with the
# images set to ours, the version label set like `make release` does, and the operator
# told not to patch a webhook configuration that is not installed. Certificates are made
# by the operator's own rotation (--enable-cert-rotation, on in KEDA's manifests): it
# writes Secret kedaorg-certs and the APIService's caBundle.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KEDA_VERSION="${KEDA_VERSION:-v2.21.1}"
KEDA_MODULE=github.com/kedacore/keda/v2
KEDA_DIR="$QSCALE_CACHE/keda/$KEDA_VERSION"
SRC="$KEDA_DIR/src"
KEDA_BIN="$KEDA_DIR/bin"
MANIFEST="$KEDA_DIR/keda.yaml"
TAG="${KEDA_VERSION#v}"
OPERATOR_IMAGE="qscale/keda:$TAG"
ADAPTER_IMAGE="qscale/keda-metrics-apiserver:$TAG"
KUBECTL=("$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE")

# The module's tree: the zip the proxy serves, unpacked by hand (`go mod download`
# refuses to unpack a module whose go line is newer than the local toolchain).
fetch() {
  [ -f "$SRC/go.mod" ] && return 0
  local info zip
  info="$(GOTOOLCHAIN=local "$GO" mod download -json "$KEDA_MODULE@$KEDA_VERSION" 2>/dev/null || true)"
  zip="$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Zip": "\(.*\)",$/\1/p')"
  [ -s "$zip" ] || { echo "no module zip for $KEDA_MODULE@$KEDA_VERSION: $info"; return 1; }
  rm -rf "$SRC.tmp"; mkdir -p "$SRC.tmp"
  python3 - "$zip" "$SRC.tmp" "$KEDA_MODULE@$KEDA_VERSION/" <<'PY'
import sys, zipfile
from pathlib import Path
archive, dest, prefix = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
with zipfile.ZipFile(archive) as zf:
    for item in zf.infolist():
        if item.is_dir():
            continue
        if not item.filename.startswith(prefix):
            raise SystemExit(f"unexpected entry {item.filename}")
        target = dest / item.filename[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(item))
PY
  rm -rf "$SRC"; mv "$SRC.tmp" "$SRC"
  echo "$KEDA_MODULE@$KEDA_VERSION unpacked to $SRC"
}

toolchain() {  # the toolchain the module asks for: its toolchain line, else its go line
  local tc; tc="$(sed -n 's/^toolchain //p' "$SRC/go.mod")"
  [ -n "$tc" ] || tc="go$(sed -n 's/^go //p' "$SRC/go.mod")"
  echo "$tc"
}

build() {
  local tc commit ld
  tc="$(toolchain)"
  commit="$(sed -n 's/.*"Hash":"\([0-9a-f]*\)".*/\1/p' "$GOMODCACHE/cache/download/$KEDA_MODULE/@v/$KEDA_VERSION.info" 2>/dev/null || true)"
  ld="-X=$KEDA_MODULE/version.Version=$TAG -X=$KEDA_MODULE/version.GitCommit=${commit:-$KEDA_VERSION}"
  mkdir -p "$KEDA_BIN.tmp"
  # one `go build` for both commands shares the compilation of their dependencies
  (cd "$SRC" && GOTOOLCHAIN="$tc" CGO_ENABLED=0 nice -n 10 "$GO" build -trimpath \
      -ldflags "-s -w $ld" -o "$KEDA_BIN.tmp/" ./cmd/operator ./cmd/adapter)
  mkdir -p "$KEDA_BIN"
  mv -f "$KEDA_BIN.tmp/operator" "$KEDA_BIN/keda"
  mv -f "$KEDA_BIN.tmp/adapter" "$KEDA_BIN/keda-adapter"
  rmdir "$KEDA_BIN.tmp"
}

# KEDA's Dockerfiles copy each binary onto distroless/static as uid 65532; ours use the
# local Debian base (hack/images/debian.sh) the same way.
image() {  # tag binary entrypoint-args...
  local tag="$1" bin="$2"; shift 2
  local ctx="$QSCALE_CACHE/build/images/keda-$bin"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -f "$KEDA_BIN/$bin" "$ctx/$bin"
  local entry="\"/$bin\""; for a in "$@"; do entry+=", \"$a\""; done
  cat > "$ctx/Dockerfile" <<DF
FROM qscale/debian:$DEBIAN_SUITE
COPY $bin /$bin
USER 65532:65532
ENTRYPOINT [$entry]
DF
  docker build ${QSCALE_BUILD_NETWORK:+--network "$QSCALE_BUILD_NETWORK"} -t "$tag" "$ctx"
  rm -rf "$ctx"
}

images() {
  have_image "qscale/debian:$DEBIAN_SUITE" || bash "$HACK_DIR/images/debian.sh"
  have_image "$OPERATOR_IMAGE" || run_logged "keda-$KEDA_VERSION-image-operator" \
    image "$OPERATOR_IMAGE" keda --zap-log-level=info --zap-encoder=console
  have_image "$ADAPTER_IMAGE" || run_logged "keda-$KEDA_VERSION-image-adapter" \
    image "$ADAPTER_IMAGE" keda-adapter --secure-port=6443 --zap-log-level=info --zap-encoder=console
}

manifests() {
  local overlay="$KEDA_DIR/overlay"
  rm -rf "$overlay"; mkdir -p "$overlay"
  cp -a "$SRC/config/." "$overlay/config/"
  sed -i "s@version:[ ].*@version: $TAG@g" "$overlay/config/minimal/kustomize-config/metadataLabelTransformer.yaml"
  cat > "$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- config/minimal
images:
- name: ghcr.io/kedacore/keda
  newName: ${OPERATOR_IMAGE%:*}
  newTag: "$TAG"
- name: ghcr.io/kedacore/keda-metrics-apiserver
  newName: ${ADAPTER_IMAGE%:*}
  newTag: "$TAG"
patches:
- target: {kind: Deployment, name: keda-operator}
  patch: |-
    - op: replace
      path: /spec/template/spec/containers/0/imagePullPolicy
      value: IfNotPresent
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --enable-webhook-patching=false
- target: {kind: Deployment, name: keda-metrics-apiserver}
  patch: |-
    - op: replace
      path: /spec/template/spec/containers/0/imagePullPolicy
      value: IfNotPresent
YAML
  "$BIN_DIR/kubectl" kustomize "$overlay" > "$MANIFEST.tmp"
  mv -f "$MANIFEST.tmp" "$MANIFEST"
  rm -rf "$overlay"
  echo "rendered $MANIFEST ($(grep -c '^kind:' "$MANIFEST") objects)"
}

install() {
  local kind="$BIN_DIR/kind"
  "$kind" get clusters 2>/dev/null | grep -qxF "$CLUSTER_NAME" || die "kind cluster $CLUSTER_NAME does not exist"
  "$kind" load docker-image --name "$CLUSTER_NAME" "$OPERATOR_IMAGE" "$ADAPTER_IMAGE" >&2
  "${KUBECTL[@]}" apply --server-side --force-conflicts -f "$MANIFEST" >&2
  "${KUBECTL[@]}" -n keda rollout status deploy/keda-operator --timeout=300s >&2
  "${KUBECTL[@]}" -n keda rollout status deploy/keda-metrics-apiserver --timeout=300s >&2
  check
  log "KEDA $KEDA_VERSION installed in cluster $CLUSTER_NAME"
}

# The aggregator marks the APIService Available once its discovery check gets a 2xx from
# the metrics server through the Service (TLS unverified, its front-proxy client cert);
# the caBundle the operator writes matters to the proxied requests after that. When the
# check never passes, say why instead of kubectl's "timed out waiting for the condition":
# the condition's message on the last line, the pods, events and both logs before it.
APISERVICE=apiservice/v1beta1.external.metrics.k8s.io
available_message() {
  "${KUBECTL[@]}" get "$APISERVICE" \
    -o jsonpath='{range .status.conditions[?(@.type=="Available")]}{.status} {.reason}: {.message}{end}' \
    2>&1 || true
}
keda_state() {
  echo "--- $APISERVICE: $(available_message)"
  "${KUBECTL[@]}" -n keda get pods,endpointslices,secrets -o wide 2>&1 || true
  echo "--- events"
  "${KUBECTL[@]}" -n keda get events --sort-by=.lastTimestamp 2>&1 | tail -n 25 || true
  local d
  for d in keda-operator keda-metrics-apiserver; do
    echo "--- $d log (previous container, if any, then current; last 30 lines each)"
    "${KUBECTL[@]}" -n keda logs "deploy/$d" --previous --tail=30 2>/dev/null || true
    "${KUBECTL[@]}" -n keda logs "deploy/$d" --tail=30 2>&1 || true
  done
}
check() {
  if ! "${KUBECTL[@]}" wait --for=condition=Available "$APISERVICE" --timeout="${KEDA_WAIT_S:-300}s" >&2; then
    keda_state >&2
    die "$APISERVICE not Available after ${KEDA_WAIT_S:-300} s: $(available_message)"
  fi
  for _ in $(seq 60); do
    "${KUBECTL[@]}" get --raw /apis/external.metrics.k8s.io/v1beta1 >/dev/null 2>&1 && break
    sleep 2
  done
  "${KUBECTL[@]}" get --raw /apis/external.metrics.k8s.io/v1beta1 >/dev/null || die "external metrics API does not answer"
}

uninstall() {
  "${KUBECTL[@]}" delete --ignore-not-found --wait=true -f "$MANIFEST" >&2
}

need_tree() { [ -f "$SRC/go.mod" ] || run_logged "keda-$KEDA_VERSION-fetch" fetch; }
need_manifest() { need_tree; [ -s "$MANIFEST" ] || run_logged "keda-$KEDA_VERSION-manifests" manifests; }
need_bin() {
  need_tree
  if [ ! -x "$KEDA_BIN/keda" ] || [ ! -x "$KEDA_BIN/keda-adapter" ]; then
    run_logged "keda-$KEDA_VERSION-build" build
  fi
  "$KEDA_BIN/keda" --help >/dev/null 2>&1 || die "built keda does not run"
}

case "${1:-install}" in
  manifests) need_manifest; echo "$MANIFEST" ;;
  build) need_bin; log "KEDA $KEDA_VERSION: $KEDA_BIN/keda $KEDA_BIN/keda-adapter" ;;
  images) need_bin; images; need_manifest ;;
  install) need_bin; images; need_manifest; install ;;
  check) check; log "external metrics API of cluster $CLUSTER_NAME answers" ;;
  uninstall) need_manifest; uninstall ;;
  *) die "unknown command $1; use manifests|build|images|install|check|uninstall" ;;
esac
