# shellcheck shell=bash
# Shared helpers for the qscale cluster tooling (sourced, never executed).
# Everything built lands under $QSCALE_CACHE, keyed by version.
set -euo pipefail

QSCALE_CACHE="${QSCALE_CACHE:-/var/cache/qscale}"
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"

# Pinned versions. kubeadm's own `config images list` decides image tags.
KIND_VERSION="${KIND_VERSION:-v0.31.0}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.7.0}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"
LOCAL_PATH_VERSION="${LOCAL_PATH_VERSION:-v0.0.30}"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CLUSTER_NAME="${QSCALE_CLUSTER_NAME:-qscale}"
KUBECONFIG_FILE="${QSCALE_KUBECONFIG:-$QSCALE_CACHE/kubeconfig-$CLUSTER_NAME}"

BIN_DIR="$QSCALE_CACHE/bin"
LOG_DIR="$QSCALE_CACHE/logs"
K8S_DIR="$QSCALE_CACHE/k8s/$K8S_VERSION"
mkdir -p "$BIN_DIR" "$LOG_DIR" "$K8S_DIR"

export GOMODCACHE="${GOMODCACHE:-$QSCALE_CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$QSCALE_CACHE/go/build}"
export GOFLAGS="${GOFLAGS:--modcacherw}"
export GOTOOLCHAIN=local
export DEBIAN_FRONTEND=noninteractive
export DOCKER_BUILDKIT=0
export PATH="$BIN_DIR:/usr/local/go/bin:$PATH"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

log()  { printf '[qscale %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die()  { printf 'qscale: FAILED: %s\n' "$*" >&2; exit 1; }
# any other failing command still ends with a one-line reason
set -o errtrace
trap '__rc=$?; printf "qscale: FAILED: %s line %s: %s (exit %s)\n" "$(basename "${BASH_SOURCE[0]:-$0}")" "$LINENO" "$BASH_COMMAND" "$__rc" >&2' ERR

# run_logged NAME CMD... : run a long step with output to $LOG_DIR/NAME.log;
# on failure print the log tail and exit non-zero with a one-line reason.
run_logged() {
  local name="$1"; shift
  local logf="$LOG_DIR/$name.log"
  local start=$SECONDS
  log "$name: started (log: $logf)"
  # Run as a background job and wait: a function called in an `if`/`!`
  # context would run with `set -e` silently disabled.
  local rc=0
  "$@" >"$logf" 2>&1 </dev/null &
  wait $! || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "----- last 40 lines of $logf -----" >&2
    tail -n 40 "$logf" >&2 || true
    echo "-----" >&2
    die "step '$name' failed (exit $rc) after $((SECONDS - start))s (full log: $logf)"
  fi
  log "$name: done in $((SECONDS - start))s"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# go_build_mod NAME MODULE VERSION OUT PKG... : build PKG(s) from MODULE@VERSION
# through a throwaway wrapper module (so the module's own replace directives do
# not block `go install`), nice'd, static, trimmed. GO_EXTRA_GET: more
# module@version pins for the wrapper (e.g. a dependency too old for this Go).
go_build_mod() {
  local name="$1" mod="$2" ver="$3" out="$4"; shift 4
  local wd="$QSCALE_CACHE/src/$name-$ver"
  mkdir -p "$wd" "$(dirname "$out")"
  if [ ! -f "$wd/go.mod" ]; then
    (cd "$wd" && "$GO" mod init "qscale.local/build/$name" >/dev/null 2>&1)
  fi
  (
    cd "$wd" &&
      GOFLAGS="$GOFLAGS -mod=mod" "$GO" get "$mod@$ver" ${GO_EXTRA_GET:-} &&
      CGO_ENABLED="${CGO_ENABLED:-0}" GOFLAGS="$GOFLAGS -mod=mod" nice -n 10 \
        "$GO" build -trimpath -ldflags "-s -w ${EXTRA_LDFLAGS:-}" -o "$out" "$@"
  )
}
