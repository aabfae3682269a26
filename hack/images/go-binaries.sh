#!/usr/bin/env bash
# Build the Go binaries behind the non-Kubernetes images into $QSCALE_CACHE/bin:
#   go-binaries.sh ETCD_IMAGE_TAG COREDNS_IMAGE_TAG   (e.g. 3.6.5-0 v1.12.1)
# or with --from-source: read both from kubeadm's constants in the kubernetes
# module (lets these builds run while Kubernetes itself is still compiling;
# hack/images/build.sh calls this again with `kubeadm config images list`'s tags).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

if [ "${1:-}" = --from-source ]; then
  kdir="$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  consts="$kdir/cmd/kubeadm/app/constants/constants.go"
  etcd_tag="$(sed -n 's/^[[:space:]]*DefaultEtcdVersion = "\(.*\)"/\1/p' "$consts")"
  dns_tag="$(sed -n 's/^[[:space:]]*CoreDNSVersion = "\(.*\)"/\1/p' "$consts")"
else
  etcd_tag="${1:?etcd image tag}"; dns_tag="${2:?coredns image tag}"
fi
[ -n "$etcd_tag" ] && [ -n "$dns_tag" ] || die "cannot determine etcd/coredns versions"

ev="v${etcd_tag%-*}"     # 3.6.5-0 -> v3.6.5
[ -x "$BIN_DIR/etcd-$ev" ] || run_logged "go-etcd-$ev" \
  go_build_mod etcd go.etcd.io/etcd/server/v3 "$ev" "$BIN_DIR/etcd-$ev" go.etcd.io/etcd/server/v3
[ -x "$BIN_DIR/etcdctl-$ev" ] || run_logged "go-etcdctl-$ev" \
  go_build_mod etcdctl go.etcd.io/etcd/etcdctl/v3 "$ev" "$BIN_DIR/etcdctl-$ev" go.etcd.io/etcd/etcdctl/v3
[ -x "$BIN_DIR/coredns-$dns_tag" ] || run_logged "go-coredns-$dns_tag" \
  go_build_mod coredns github.com/coredns/coredns "$dns_tag" "$BIN_DIR/coredns-$dns_tag" github.com/coredns/coredns
[ -x "$BIN_DIR/local-path-provisioner-$LOCAL_PATH_VERSION" ] || run_logged "go-local-path-$LOCAL_PATH_VERSION" \
  go_build_mod local-path-provisioner github.com/rancher/local-path-provisioner "$LOCAL_PATH_VERSION" \
    "$BIN_DIR/local-path-provisioner-$LOCAL_PATH_VERSION" github.com/rancher/local-path-provisioner
