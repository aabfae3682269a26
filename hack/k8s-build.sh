#!/usr/bin/env bash
# Build Kubernetes $K8S_VERSION binaries from the k8s.io/kubernetes module via a
# wrapper module that pins every staging module (k8s.io/api, ...) to v0.X.Y.
# Output: $QSCALE_CACHE/k8s/$K8S_VERSION/bin/<binary>; skipped when present.
# Usage: k8s-build.sh [binary...]   (default: all seven)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
want=("$@"); [ ${#want[@]} -gt 0 ] || want=("${ALL[@]}")
OUT="$K8S_DIR/bin"
WRAP="$K8S_DIR/src/wrapper"
mkdir -p "$OUT" "$WRAP"

missing=()
for b in "${want[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then log "k8s $K8S_VERSION: ${want[*]} already built"; exit 0; fi

staging_ver="v0.${K8S_VERSION#v1.}"            # v1.34.4 -> v0.34.4
major_minor="${K8S_VERSION#v}"; major="${major_minor%%.*}"; minor="${major_minor#*.}"; minor="${minor%%.*}"

prepare() {
  # 1. fetch the kubernetes module and find its staging modules
  local info dir
  info="$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION")"
  dir="$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$dir" ] || { echo "no module dir for k8s.io/kubernetes@$K8S_VERSION"; return 1; }
  local staging; staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$dir/go.mod")"
  [ -n "$staging" ] || { echo "no staging replaces found in $dir/go.mod"; return 1; }

  # 2. kube-apiserver needs generated OpenAPI definitions; module zips of some
  #    releases lack them: then build from a local copy after running openapi-gen.
  local kdir="$dir"
  if [ ! -s "$dir/pkg/generated/openapi/zz_generated.openapi.go" ] || [ "${QSCALE_FORCE_OPENAPI_GEN:-0}" = 1 ]; then
    kdir="$K8S_DIR/src/kubernetes"
    if [ ! -s "$kdir/pkg/generated/openapi/zz_generated.openapi.go" ]; then
      rm -rf "$kdir"; mkdir -p "$kdir"; cp -a "$dir/." "$kdir/"; chmod -R u+w "$kdir"
      rm -f "$kdir/pkg/generated/openapi/zz_generated.openapi.go" "$kdir/go.work" "$kdir/go.work.sum"
      NEED_OPENAPI=1
    fi
  fi

  # 3. the wrapper module
  {
    echo "module qscale.local/k8s-build"
    echo
    echo "go $(sed -n 's/^go //p' "$dir/go.mod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    [ "$kdir" != "$dir" ] && echo "	k8s.io/kubernetes => $kdir"
    for m in $staging; do echo "	$m => $m $staging_ver"; done
    echo ")"
  } > "$WRAP/go.mod"
  cat > "$WRAP/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  rm -f "$WRAP/go.sum"
  (cd "$WRAP" && GOFLAGS="$GOFLAGS -mod=mod" "$GO" mod tidy -e -compat="$(sed -n 's/^go //p' "$dir/go.mod")" ) || \
    (cd "$WRAP" && GOFLAGS="$GOFLAGS -mod=mod" "$GO" mod download)

  if [ "${NEED_OPENAPI:-0}" = 1 ]; then
    gen_openapi "$kdir" "$dir"
  fi
}

gen_openapi() {
  local kdir="$1" orig="$2"
  local ov; ov="$(cd "$WRAP" && "$GO" list -m -f '{{.Version}}' k8s.io/kube-openapi)"
  echo "generating OpenAPI definitions with openapi-gen from k8s.io/kube-openapi@$ov"
  # the golang.org/x/tools that kube-openapi pins predates Go 1.26 (tokeninternal
  # no longer compiles); a newer x/tools keeps the same go/packages API
  [ -x "$BIN_DIR/openapi-gen-$ov" ] || GO_EXTRA_GET="golang.org/x/tools@${OPENAPI_GEN_XTOOLS:-v0.38.0}" \
    go_build_mod openapi-gen k8s.io/kube-openapi "$ov" "$BIN_DIR/openapi-gen-$ov" k8s.io/kube-openapi/cmd/openapi-gen
  # every package tagged +k8s:openapi-gen in kubernetes and its staging modules
  local pkgs=() f d
  while IFS= read -r d; do pkgs+=("k8s.io/kubernetes/${d#"$kdir"/}"); done < <(
    { grep -rl --include='*.go' '+k8s:openapi-gen=' "$kdir/pkg" "$kdir/cmd" 2>/dev/null || true; } | { grep -v '/testdata/' || true; } | xargs -r -n1 dirname | sort -u)
  for m in $(cd "$WRAP" && "$GO" list -m -f '{{.Path}}' all | grep '^k8s.io/' ); do
    local mdir; mdir="$(cd "$WRAP" && "$GO" list -m -f '{{.Dir}}' "$m" 2>/dev/null)" || continue
    [ -n "$mdir" ] && [ "$m" != k8s.io/kubernetes ] || continue
    case "$m" in k8s.io/api|k8s.io/apimachinery|k8s.io/client-go|k8s.io/kubectl|k8s.io/apiextensions-apiserver|k8s.io/kube-aggregator|k8s.io/metrics|k8s.io/apiserver|k8s.io/kube-proxy|k8s.io/kube-scheduler|k8s.io/kube-controller-manager|k8s.io/kubelet|k8s.io/controller-manager|k8s.io/cloud-provider|k8s.io/component-base) ;; *) continue;; esac
    while IFS= read -r d; do pkgs+=("$m/${d#"$mdir"/}"); done < <(
      { grep -rl --include='*.go' '+k8s:openapi-gen=' "$mdir" 2>/dev/null || true; } | { grep -v '/testdata/' || true; } | xargs -r -n1 dirname | sort -u | { grep -v "^$mdir\$" || true; })
  done
  echo "openapi-gen: ${#pkgs[@]} packages"
  local hdr; hdr="$(mktemp)"; printf '/*\nGenerated for qscale.\n*/\n\n' > "$hdr"
  (cd "$WRAP" && nice -n 10 "$BIN_DIR/openapi-gen-$ov" \
      --output-file zz_generated.openapi.go \
      --output-dir "$kdir/pkg/generated/openapi" \
      --output-pkg k8s.io/kubernetes/pkg/generated/openapi \
      --go-header-file "$hdr" \
      --report-filename /dev/null \
      "${pkgs[@]}")
  rm -f "$hdr"
  [ -s "$kdir/pkg/generated/openapi/zz_generated.openapi.go" ]
}

build() {
  local info; info="$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.info"
  local date; date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null)"; date="${date:-1970-01-01T00:00:00Z}"
  local commit; commit="$(sed -n 's/.*"Hash":"\([0-9a-f]*\)".*/\1/p' "$info" 2>/dev/null)"
  local ld=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
    [ -n "$commit" ] && ld+=" -X $p.gitCommit=$commit"
  done
  cd "$WRAP"
  local pkgs=()
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  # one `go build` for several packages shares compilation of common deps
  mkdir -p "$OUT.tmp"
  CGO_ENABLED=0 GOFLAGS="$GOFLAGS -mod=mod" nice -n 10 "$GO" build -trimpath \
    -tags 'selinux,notest,grpcnotrace' -ldflags "-s -w $ld" -o "$OUT.tmp/" "${pkgs[@]}"
  for b in "${missing[@]}"; do mv -f "$OUT.tmp/$b" "$OUT/$b"; done
  rmdir "$OUT.tmp" 2>/dev/null || true
}

run_logged "k8s-$K8S_VERSION-prepare" prepare
run_logged "k8s-$K8S_VERSION-build" build
for b in "${missing[@]}"; do
  "$OUT/$b" --version >/dev/null 2>&1 || "$OUT/$b" version --client >/dev/null 2>&1 || "$OUT/$b" version >/dev/null 2>&1 ||
    die "built $b does not run"
done
log "k8s $K8S_VERSION: built ${missing[*]} -> $OUT"
