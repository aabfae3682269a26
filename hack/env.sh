# shellcheck shell=bash
# Source me: puts the qscale-built kubectl/helm/kind/kubeconform first on PATH
# (ahead of /usr/bin/kubectl) and points KUBECONFIG at the qscale cluster.
# Prints nothing. Override with QSCALE_CACHE / QSCALE_CLUSTER_NAME / QSCALE_KUBECONFIG.
QSCALE_CACHE="${QSCALE_CACHE:-/var/cache/qscale}"
export QSCALE_CACHE
case ":$PATH:" in
  *":$QSCALE_CACHE/bin:"*) ;;
  *) PATH="$QSCALE_CACHE/bin:$PATH" ;;
esac
export PATH
KUBECONFIG="${QSCALE_KUBECONFIG:-$QSCALE_CACHE/kubeconfig-${QSCALE_CLUSTER_NAME:-qscale}}"
export KUBECONFIG
