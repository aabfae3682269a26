#!/usr/bin/env bash
# Build the fault-injection tools the tests drive, from the Go module proxy, into
# $QSCALE_CACHE/bin (cached by version, like hack/tools.sh):
#   toxiproxy-server  network faults between a process and its broker / API server
#                     (latency, resets, timeouts, a half-open connection); the tests
#                     start their own instance on loopback (tests/toxiproxy.py).
#   kube-score        static checks of the chart's renders (hack/chart-lint.py), from
#                     its Go module
#   kube-router       its network policy controller enforces NetworkPolicy for the e2e
#                     suite beside the bridge CNI (hack/netpol-enforcer.sh), from its
#                     Go module; with Debian's ipset package, which it drives
#   checkov           the same, from PyPI, in its own virtualenv: its pins (e.g.
#                     python-dateutil < 3, packaging 23) would downgrade what the
#                     controller and tests use in .venv. The version is pyproject's
#                     `chartlint` extra.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOXIPROXY_VERSION="${TOXIPROXY_VERSION:-v2.5.0}"
KUBE_SCORE_VERSION="${KUBE_SCORE_VERSION:-v1.20.0}"
# Keep in step with hack/netpol-enforcer.sh (KUBE_ROUTER_VERSION, IPSET_DEBS).
KUBE_ROUTER_VERSION="${KUBE_ROUTER_VERSION:-v2.1.0}"
IPSET_DEB_VERSION="7.17-1"

out="$BIN_DIR/toxiproxy-server-$TOXIPROXY_VERSION"
if [ ! -x "$out" ]; then
  command -v "$GO" >/dev/null || die "Go is needed to build toxiproxy ($GO not found)"
  run_logged "tool-toxiproxy-$TOXIPROXY_VERSION" go_build_mod toxiproxy \
    github.com/Shopify/toxiproxy/v2 "$TOXIPROXY_VERSION" "$out" \
    github.com/Shopify/toxiproxy/v2/cmd/server
fi
ln -sfn "toxiproxy-server-$TOXIPROXY_VERSION" "$BIN_DIR/toxiproxy-server"

out="$BIN_DIR/kube-score-$KUBE_SCORE_VERSION"
if [ ! -x "$out" ]; then
  command -v "$GO" >/dev/null || die "Go is needed to build kube-score ($GO not found)"
  EXTRA_LDFLAGS="-X main.version=$KUBE_SCORE_VERSION" run_logged "tool-kube-score-$KUBE_SCORE_VERSION" \
    go_build_mod kube-score github.com/zegl/kube-score "$KUBE_SCORE_VERSION" "$out" \
    github.com/zegl/kube-score/cmd/kube-score
fi
ln -sfn "kube-score-$KUBE_SCORE_VERSION" "$BIN_DIR/kube-score"

out="$BIN_DIR/kube-router-$KUBE_ROUTER_VERSION"
if [ ! -x "$out" ]; then
  command -v "$GO" >/dev/null || die "Go is needed to build kube-router ($GO not found)"
  run_logged "tool-kube-router-$KUBE_ROUTER_VERSION" go_build_mod kube-router \
    github.com/cloudnativelabs/kube-router/v2 "$KUBE_ROUTER_VERSION" "$out" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
fi
debs="$QSCALE_CACHE/debs"
if [ ! -f "$debs/ipset_${IPSET_DEB_VERSION}_amd64.deb" ] || [ ! -f "$debs/libipset13_${IPSET_DEB_VERSION}_amd64.deb" ]; then
  mkdir -p "$debs"
  # Into the kind nodes, not this machine: only downloaded (apt-get download, as _apt
  # cannot write into a root-only cache directory it runs unsandboxed; say so quietly).
  run_logged "deb-ipset-$IPSET_DEB_VERSION" bash -c \
    "cd '$debs' && apt-get download -q 'ipset=$IPSET_DEB_VERSION' 'libipset13=$IPSET_DEB_VERSION' 2>&1 | grep -v unsandboxed || true; test -f 'ipset_${IPSET_DEB_VERSION}_amd64.deb' && test -f 'libipset13_${IPSET_DEB_VERSION}_amd64.deb'"
fi

CHECKOV_VERSION="$(sed -n 's/.*"checkov==\([0-9.]*\)".*/\1/p' "$HACK_DIR/../pyproject.toml")"
[ -n "$CHECKOV_VERSION" ] || die "no checkov==X pin in pyproject.toml's chartlint extra"
venv="$QSCALE_CACHE/venvs/checkov-$CHECKOV_VERSION"
if [ ! -x "$venv/bin/checkov" ]; then
  rm -rf "$venv"
  run_logged "tool-checkov-$CHECKOV_VERSION" bash -c \
    "python3 -m venv '$venv' && '$venv/bin/pip' install -q -U pip && '$venv/bin/pip' install -q 'checkov==$CHECKOV_VERSION'"
fi
ln -sfn "$venv/bin/checkov" "$BIN_DIR/checkov"
log "test tools: $(readlink "$BIN_DIR/toxiproxy-server") $(readlink "$BIN_DIR/kube-score") kube-router-$KUBE_ROUTER_VERSION ipset-$IPSET_DEB_VERSION checkov-$CHECKOV_VERSION"
