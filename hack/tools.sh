#!/usr/bin/env bash
# Build the CLI tools from the Go module proxy into $QSCALE_CACHE/bin, one
# versioned file each (kind-v0.31.0, helm-v3.19.0, ...) plus an unversioned
# symlink that hack/env.sh puts first on PATH. kubectl comes from the
# Kubernetes build (hack/k8s-build.sh kubectl) on the offline path; on the stock-kind
# path (QSCALE_KIND_NODE_IMAGE) it is the official binary for the node's version
# (checksum verified), else built from the k8s.io/kubectl Go module: never the
# Kubernetes sources.
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

# The node's Kubernetes version from its image reference (kindest/node:v1.34.3@sha256:...).
node_version() {
  local ref="${QSCALE_KIND_NODE_IMAGE%@*}"
  case "${ref##*:}" in
    v[0-9]*.[0-9]*.[0-9]*) echo "${ref##*:}" ;;
    *) echo "$K8S_VERSION" ;;
  esac
}

stock_kubectl() {
  local ver os arch out url sum
  ver="$(node_version)"
  out="$BIN_DIR/kubectl-$ver"
  if [ ! -x "$out" ]; then
    os="$(uname -s | tr '[:upper:]' '[:lower:]')"
    arch="$(uname -m)"; case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
    url="${QSCALE_KUBECTL_BASE_URL:-https://dl.k8s.io/release}/$ver/bin/$os/$arch/kubectl"
    if curl -fsSL --retry 2 --connect-timeout 15 -m 300 -o "$out.download" "$url" 2>"$LOG_DIR/kubectl-download.log" &&
       sum="$(curl -fsSL --connect-timeout 15 -m 60 "$url.sha256" 2>>"$LOG_DIR/kubectl-download.log")" &&
       [ "$({ sha256sum "$out.download" 2>/dev/null || shasum -a 256 "$out.download"; } | cut -d' ' -f1)" = "${sum%% *}" ]; then
      chmod +x "$out.download"; mv -f "$out.download" "$out"
      log "kubectl $ver: downloaded $url (sha256 checked)"
    else
      rm -f "$out.download"
      log "kubectl $ver: cannot download $url ($(tail -n1 "$LOG_DIR/kubectl-download.log" 2>/dev/null || echo 'checksum mismatch')); building it from the k8s.io/kubectl Go module instead"
      local wd="$QSCALE_CACHE/src/kubectl-$ver" staging="v0.${ver#v1.}"
      mkdir -p "$wd"; cp -f "$HACK_DIR/kubectl/main.go" "$wd/main.go"
      [ -f "$wd/go.mod" ] || (cd "$wd" && "$GO" mod init qscale.local/build/kubectl >/dev/null 2>&1)
      run_logged "tool-kubectl-$ver" bash -c "cd '$wd' && GOFLAGS='$GOFLAGS -mod=mod' '$GO' get k8s.io/kubectl@$staging k8s.io/client-go@$staging k8s.io/component-base@$staging && GOFLAGS='$GOFLAGS -mod=mod' '$GO' mod tidy && CGO_ENABLED=0 GOFLAGS='$GOFLAGS -mod=mod' nice -n 10 '$GO' build -trimpath -ldflags '-s -w -X k8s.io/client-go/pkg/version.gitVersion=$ver -X k8s.io/component-base/version.gitVersion=$ver' -o '$out' ."
    fi
  fi
  ln -sfn "kubectl-$ver" "$BIN_DIR/kubectl"
}

if [ -n "${QSCALE_KIND_NODE_IMAGE:-}" ]; then
  stock_kubectl
else
  # QSCALE_TOOLS_SKIP_KUBECTL=1: the caller builds all of Kubernetes itself
  if [ "${QSCALE_TOOLS_SKIP_KUBECTL:-0}" != 1 ]; then
    bash "$HACK_DIR/k8s-build.sh" kubectl
  fi
  if [ -x "$K8S_DIR/bin/kubectl" ]; then ln -sfn "$K8S_DIR/bin/kubectl" "$BIN_DIR/kubectl"; fi
fi

log "tools: $(for t in kind helm kubeconform kubectl; do printf '%s ' "$(readlink "$BIN_DIR/$t" || echo "($t pending)")"; done)"
