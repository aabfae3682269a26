#!/usr/bin/env bash
# Build the CLI tools from the Go module proxy into $QSCALE_CACHE/bin, one
# versioned file each (kind-v0.31.0, helm-v3.19.0, ...) plus an unversioned
# symlink that hack/env.sh puts first on PATH. kubectl comes from the
# Kubernetes build (hack/k8s-build.sh kubectl).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

tool() { # name module version pkg [build-name]
  local name="$1" mod="$2" ver="$3" pkg="$4" build="${5:-$3}"
  local out="$BIN_DIR/$name-$build"
  if [ ! -x "$out" ]; then
    EXTRA_LDFLAGS="${EXTRA_LDFLAGS:-}" run_logged "tool-$name-$ver" go_build_mod "$name" "$mod" "$ver" "$out" "$pkg"
  fi
  ln -sfn "$name-$build" "$BIN_DIR/$name"
}

tool kind sigs.k8s.io/kind "$KIND_VERSION" sigs.k8s.io/kind
# Like helm's own Makefile: client-only renders (helm template, helm lint) assume the
# Kubernetes version of helm's client-go (1.34 for helm 3.19), not the 1.20 compiled-in
# fallback, which a chart's kubeVersion (">=1.25.0-0") refuses. The binary's name says
# so (a cached build without these flags is not reused).
helm_k8s_major="$(echo "${K8S_VERSION#v}" | cut -d. -f1)"
helm_k8s_minor="$(echo "${K8S_VERSION#v}" | cut -d. -f2)"
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags="$helm_ldflags -X $pkg.k8sVersionMajor=$helm_k8s_major -X $pkg.k8sVersionMinor=$helm_k8s_minor"
done
EXTRA_LDFLAGS="$helm_ldflags" tool helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "$HELM_VERSION-k8s$helm_k8s_major.$helm_k8s_minor"
tool kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform

# QSCALE_TOOLS_SKIP_KUBECTL=1: the caller builds all of Kubernetes itself
if [ "${QSCALE_TOOLS_SKIP_KUBECTL:-0}" != 1 ]; then
  bash "$HACK_DIR/k8s-build.sh" kubectl
fi
[ -x "$K8S_DIR/bin/kubectl" ] && ln -sfn "$K8S_DIR/bin/kubectl" "$BIN_DIR/kubectl"

log "tools: $(for t in kind helm kubeconform kubectl; do printf '%s ' "$(readlink "$BIN_DIR/$t" || echo "($t pending)")"; done)"
