#!/usr/bin/env bash
# Build the CLI tools from the Go module proxy into $QSCALE_CACHE/bin, one
# versioned file each (kind-v0.31.0, helm-v3.19.0, ...) plus an unversioned
# symlink that hack/env.sh puts first on PATH. kubectl comes from the
# Kubernetes build (hack/k8s-build.sh kubectl).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

tool() { # name module version out pkg
  local name="$1" mod="$2" ver="$3" pkg="$4"
  local out="$BIN_DIR/$name-$ver"
  if [ ! -x "$out" ]; then
    EXTRA_LDFLAGS="${EXTRA_LDFLAGS:-}" run_logged "tool-$name-$ver" go_build_mod "$name" "$mod" "$ver" "$out" "$pkg"
  fi
  ln -sfn "$name-$ver" "$BIN_DIR/$name"
}

tool kind sigs.k8s.io/kind "$KIND_VERSION" sigs.k8s.io/kind
EXTRA_LDFLAGS="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  tool helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
tool kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform

# QSCALE_TOOLS_SKIP_KUBECTL=1: the caller builds all of Kubernetes itself
if [ "${QSCALE_TOOLS_SKIP_KUBECTL:-0}" != 1 ]; then
  bash "$HACK_DIR/k8s-build.sh" kubectl
fi
[ -x "$K8S_DIR/bin/kubectl" ] && ln -sfn "$K8S_DIR/bin/kubectl" "$BIN_DIR/kubectl"

log "tools: $(for t in kind helm kubeconform kubectl; do printf '%s ' "$(readlink "$BIN_DIR/$t" || echo "($t pending)")"; done)"
