#!/usr/bin/env bash
# Build every image kubeadm (and our node) needs, under the exact names that
# `kubeadm config images list` prints, plus the storage provisioner.
# Writes the list of image refs to $K8S_DIR/images.txt.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

KUBEADM="$K8S_DIR/bin/kubeadm"
[ -x "$KUBEADM" ] || die "kubeadm not built yet (run hack/k8s-build.sh)"
BASE="qscale/debian:$DEBIAN_SUITE"
KUBE_BASE="qscale/kube-base:$DEBIAN_SUITE"
have_image "$BASE" || bash "$HACK_DIR/images/debian.sh"

mapfile -t LIST < <("$KUBEADM" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
[ ${#LIST[@]} -ge 7 ] || die "kubeadm config images list returned ${#LIST[@]} images"
img_for() { printf '%s\n' "${LIST[@]}" | grep -E "/$1:" | head -n1; }
tag_of() { echo "${1##*:}"; }

# Go binaries for etcd / CoreDNS / local-path-provisioner (skipped when cached)
bash "$HACK_DIR/images/go-binaries.sh" "$(tag_of "$(img_for etcd)")" "$(tag_of "$(img_for coredns)")"

CTX_ROOT="$QSCALE_CACHE/build/images"
mkdir -p "$CTX_ROOT"

# docker_build TAG CONTEXT_DIR DOCKERFILE_TEXT
docker_build() {
  local tag="$1" ctx="$2" df="$3"
  printf '%s\n' "$df" > "$ctx/Dockerfile"
  run_logged "image-$(echo "$tag" | tr '/:' '__')" docker build ${QSCALE_BUILD_NETWORK:+--network "$QSCALE_BUILD_NETWORK"} -t "$tag" "$ctx"
  rm -rf "$ctx"   # binaries are cached elsewhere; the context copy is dead weight
}

# 1. shared base for Kubernetes components: Debian + iptables & friends
if ! have_image "$KUBE_BASE"; then
  ctx="$CTX_ROOT/kube-base"; mkdir -p "$ctx"
  docker_build "$KUBE_BASE" "$ctx" "FROM $BASE
RUN apt-get update && apt-get install -y iptables ipset conntrack kmod ebtables ca-certificates \\
 && rm -rf /var/lib/apt/lists/*"
fi

# 2. control-plane components and kube-proxy from our binaries
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  ref="$(img_for "$c")"
  have_image "$ref" && continue
  ctx="$CTX_ROOT/$c"; mkdir -p "$ctx"; cp -f "$K8S_DIR/bin/$c" "$ctx/$c"
  docker_build "$ref" "$ctx" "FROM $KUBE_BASE
COPY $c /usr/local/bin/$c
ENTRYPOINT [\"/usr/local/bin/$c\"]"
done

# 3. pause, a tiny C program from the kubernetes source tree
PAUSE_REF="$(img_for pause)"
if ! have_image "$PAUSE_REF"; then
  kdir="$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  ctx="$CTX_ROOT/pause"; mkdir -p "$ctx"
  command -v gcc >/dev/null && [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || run_logged apt-gcc bash -c 'apt-get update -q && apt-get install -y -q gcc libc6-dev'
  run_logged pause-gcc gcc -Os -Wall -Werror -static -DVERSION="$(tag_of "$PAUSE_REF")-qscale" \
    -o "$ctx/pause" "$kdir/build/pause/linux/pause.c"
  strip "$ctx/pause"
  docker_build "$PAUSE_REF" "$ctx" "FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT [\"/pause\"]"
fi

# 4. etcd from its Go module, at the version kubeadm asks for (3.6.5-0 -> v3.6.5)
ETCD_REF="$(img_for etcd)"
if ! have_image "$ETCD_REF"; then
  ev="v$(tag_of "$ETCD_REF")"; ev="${ev%-*}"
  ctx="$CTX_ROOT/etcd"; mkdir -p "$ctx"
  cp -f "$BIN_DIR/etcd-$ev" "$ctx/etcd"; cp -f "$BIN_DIR/etcdctl-$ev" "$ctx/etcdctl"
  docker_build "$ETCD_REF" "$ctx" "FROM $KUBE_BASE
COPY etcd etcdctl /usr/local/bin/
ENTRYPOINT [\"/usr/local/bin/etcd\"]"
fi

# 5. CoreDNS from its Go module
DNS_REF="$(img_for coredns)"
if ! have_image "$DNS_REF"; then
  cv="$(tag_of "$DNS_REF")"
  ctx="$CTX_ROOT/coredns"; mkdir -p "$ctx"
  cp -f "$BIN_DIR/coredns-$cv" "$ctx/coredns"
  docker_build "$DNS_REF" "$ctx" "FROM $KUBE_BASE
COPY coredns /coredns
EXPOSE 53 53/udp
ENTRYPOINT [\"/coredns\"]"
fi

# 6. local-path-provisioner for the default StorageClass (PVCs)
LPP_REF="qscale/local-path-provisioner:$LOCAL_PATH_VERSION"
if ! have_image "$LPP_REF"; then
  ctx="$CTX_ROOT/local-path"; mkdir -p "$ctx"
  cp -f "$BIN_DIR/local-path-provisioner-$LOCAL_PATH_VERSION" "$ctx/local-path-provisioner"
  docker_build "$LPP_REF" "$ctx" "FROM $BASE
COPY local-path-provisioner /usr/bin/local-path-provisioner
ENTRYPOINT [\"/usr/bin/local-path-provisioner\"]"
fi

{ printf '%s\n' "${LIST[@]}"; echo "$LPP_REF"; echo "$BASE"; } > "$K8S_DIR/images.txt"
for r in $(cat "$K8S_DIR/images.txt"); do have_image "$r" || die "image $r missing after build"; done
log "images ready: $(tr '\n' ' ' < "$K8S_DIR/images.txt")"
