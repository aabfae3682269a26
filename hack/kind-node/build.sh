#!/usr/bin/env bash
# Build the kind base image (Debian rootfs + systemd, Debian's containerd,
# runc and CNI plugins, kind's node files taken from the kind module source)
# and then the node image the way kind's own builder does (binaries into
# /usr/bin, /kind/version, /kind/manifests, images imported into containerd's
# k8s.io namespace, docker commit). Prints the node image ref on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

BASE_REF="qscale/kind-base:$KIND_VERSION-$DEBIAN_SUITE"
# The tag carries a hash of this recipe, so a change here rebuilds the node image
# (and `cluster.sh up` recreates a cluster running an older one).
NODE_RECIPE="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-8)"
NODE_REF="qscale/kind-node:$K8S_VERSION-$KIND_VERSION-$NODE_RECIPE"
KUBEADM="$K8S_DIR/bin/kubeadm"

kind_src() {
  "$GO" mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

pause_ref() { "$KUBEADM" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | grep '/pause:'; }

build_base() {
  local src ctx; src="$(kind_src)"
  [ -d "$src/images/base/files" ] || { echo "kind source has no images/base/files: $src"; return 1; }
  ctx="$QSCALE_CACHE/build/kind-base-$KIND_VERSION"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -r "$src/images/base/files" "$ctx/files"; chmod -R u+w "$ctx/files"
  # kind's files target containerd 2.x built into /usr/local/bin; Debian's
  # containerd 1.6 reads the same v2 config format. Adjust it for this VM:
  #  - restrict_oom_score_adj: the node cannot raise oom_score_adj freely
  #  - sandbox image = the pause image kubeadm expects (we build it)
  #  - runc behind qscale-runc, which drops capabilities the node lacks
  #  - no fuse-overlayfs proxy plugin (not installed)
  sed -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
      -e "s#sandbox_image = \".*\"#sandbox_image = \"$(pause_ref)\"#" \
      -e '/^\[proxy_plugins/,/^$/d' -e '/fuse-overlayfs is used/d' \
      -e 's#^\(    SystemdCgroup = true\)#\1\n    BinaryName = "/usr/local/bin/qscale-runc"#' \
      "$src/images/base/files/etc/containerd/config.toml" > "$ctx/files/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$ctx/files/etc/containerd/config.toml"
  grep -q 'BinaryName' "$ctx/files/etc/containerd/config.toml"
  rm -f "$ctx/files/etc/systemd/system/containerd-fuse-overlayfs.service"
  cp "$BIN_DIR/qscale-runc" "$ctx/qscale-runc"
  # single-node CNI: a static bridge network inside kind's default pod subnet
  cat > "$ctx/10-qscale-bridge.conflist" <<'JSON'
{
  "cniVersion": "0.4.0",
  "name": "qscale-bridge",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.244.0.0/24", "gateway": "10.244.0.1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "/var/lib/cni/networks"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM qscale/debian:$DEBIAN_SUITE
RUN apt-get update \\
 && apt-get install -y systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod \\
      libseccomp2 pigz bash ca-certificates curl jq procps socat \\
      containerd runc containernetworking-plugins \\
 && rm -rf /var/lib/apt/lists/* \\
 && find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete \\
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
          /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
          /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \\
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \\
 && ln -sf "\$(command -v systemd || echo /lib/systemd/systemd)" /sbin/init
COPY files/ /
COPY qscale-runc /usr/local/bin/qscale-runc
COPY 10-qscale-bridge.conflist /etc/cni/net.d/10-qscale-bridge.conflist
RUN find /kind /etc/containerd /etc/default /etc/sysctl.d /etc/systemd/system /etc/crictl.yaml -type f -exec chmod 0644 {} + \\
 && chmod 0755 /usr/local/bin/* /kind/bin /kind/bin/* \\
 && for b in containerd ctr containerd-shim-runc-v2; do ln -sf /usr/bin/\$b /usr/local/bin/\$b; done \\
 && mkdir -p /opt/cni && rm -rf /opt/cni/bin && ln -s /usr/lib/cni /opt/cni/bin \\
 && ctr oci spec \\
    | jq '.hooks.createContainer[.hooks.createContainer|length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \\
    | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json \\
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \\
 && systemctl mask systemd-binfmt.service \\
 && mkdir -p /etc/kubernetes/manifests \\
 && containerd --version && runc --version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
DOCKERFILE
  docker build ${QSCALE_BUILD_NETWORK:+--network "$QSCALE_BUILD_NETWORK"} -t "$BASE_REF" "$ctx"
}

write_manifests() { # dir
  local d="$1" lpp="qscale/local-path-provisioner:$LOCAL_PATH_VERSION"
  cat > "$d/default-cni.yaml" <<'YAML'
# qscale single-node networking: the node image ships a static bridge CNI
# config (/etc/cni/net.d/10-qscale-bridge.conflist), so there is no CNI
# daemon to deploy. This ConfigMap only records that fact for humans.
apiVersion: v1
kind: ConfigMap
metadata:
  name: qscale-cni
  namespace: kube-system
data:
  cni: "static bridge (cni0), pod subnet 10.244.0.0/24, see /etc/cni/net.d on the node"
YAML
  cat > "$d/default-storage.yaml" <<YAML
# Default StorageClass "standard": local-path-provisioner built from source.
apiVersion: v1
kind: Namespace
metadata:
  name: local-path-storage
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: local-path-provisioner
  namespace: local-path-storage
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: qscale-local-path-provisioner
rules:
  - apiGroups: [""]
    resources: [nodes, persistentvolumeclaims, configmaps, pods/log]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, delete, patch, update]
  - apiGroups: [""]
    resources: [persistentvolumes]
    verbs: [get, list, watch, create, patch, update, delete]
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch]
  - apiGroups: [storage.k8s.io]
    resources: [storageclasses]
    verbs: [get, list, watch]
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, list, watch, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: qscale-local-path-provisioner
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: qscale-local-path-provisioner
subjects:
  - kind: ServiceAccount
    name: local-path-provisioner
    namespace: local-path-storage
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-path-config
  namespace: local-path-storage
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/var/local-path-provisioner"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      priorityClassName: system-node-critical
      tolerations:
        - key: node.kubernetes.io/disk-pressure
          operator: Exists
          effect: NoSchedule
      containers:
        - name: helper-pod
          image: qscale/debian:$DEBIAN_SUITE
          imagePullPolicy: IfNotPresent
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: local-path-provisioner
  namespace: local-path-storage
spec:
  replicas: 1
  selector:
    matchLabels: {app: local-path-provisioner}
  template:
    metadata:
      labels: {app: local-path-provisioner}
    spec:
      serviceAccountName: local-path-provisioner
      priorityClassName: system-node-critical
      tolerations:
        - key: node-role.kubernetes.io/control-plane
          operator: Exists
          effect: NoSchedule
      containers:
        - name: local-path-provisioner
          image: $lpp
          imagePullPolicy: IfNotPresent
          command: [local-path-provisioner, --debug, start, --helper-image, "qscale/debian:$DEBIAN_SUITE", --config, /etc/config/config.json, --service-account-name, local-path-provisioner]
          env:
            - name: POD_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
            - name: CONFIG_MOUNT_PATH
              value: /etc/config/
          volumeMounts:
            - {name: config-volume, mountPath: /etc/config/}
      volumes:
        - name: config-volume
          configMap: {name: local-path-config}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
YAML
}

build_node() {
  local images; images="$(cat "$K8S_DIR/images.txt")"
  local cid="qscale-node-build-$$"
  docker rm -f "$cid" >/dev/null 2>&1 || true
  # EXIT, not RETURN: set -e leaves through exit and must not orphan the container
  trap 'docker rm -f -v '"$cid"' >/dev/null 2>&1 || true' EXIT
  docker run -d --privileged --name "$cid" --entrypoint=sleep "$BASE_REF" infinity
  for b in kubeadm kubelet kubectl; do docker cp "$K8S_DIR/bin/$b" "$cid:/usr/bin/$b"; done
  docker exec "$cid" chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl
  local m; m="$(mktemp -d)"
  printf '%s' "$K8S_VERSION" > "$m/version"
  write_manifests "$m"
  docker exec "$cid" mkdir -p /kind/manifests
  docker cp "$m/version" "$cid:/kind/version"
  docker cp "$m/default-cni.yaml" "$cid:/kind/manifests/default-cni.yaml"
  docker cp "$m/default-storage.yaml" "$cid:/kind/manifests/default-storage.yaml"
  rm -rf "$m"
  # import the images into containerd's k8s.io namespace, as kind does
  docker exec "$cid" bash -c 'nohup containerd >/var/log/containerd-build.log 2>&1 &
    for i in $(seq 60); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.5; done
    cat /var/log/containerd-build.log; exit 1'
  # shellcheck disable=SC2086
  docker save $images | docker exec -i "$cid" ctr --namespace=k8s.io images import \
    --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests -
  local have; have="$(docker exec "$cid" ctr --namespace=k8s.io images list -q)"
  echo "$have"
  for r in $images; do
    grep -qxF "$(normalize "$r")" <<<"$have" || { echo "image $r not in node containerd"; return 1; }
  done
  docker exec "$cid" bash -c 'pkill containerd; for i in $(seq 40); do pgrep containerd >/dev/null || exit 0; sleep 0.25; done; exit 0'
  docker exec "$cid" rm -f /var/log/containerd-build.log
  docker commit \
    --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change 'CMD []' \
    "$cid" "$NODE_REF"
}

# docker.io/library/x:y style names as containerd stores them
normalize() {
  local r="$1"
  case "$r" in
    */*/*|*.*/*|localhost/*) ;;                 # has a registry host
    */*) r="docker.io/$r" ;;
    *) r="docker.io/library/$r" ;;
  esac
  echo "$r"
}

[ -x "$KUBEADM" ] || die "kubeadm not built (hack/k8s-build.sh)"
if ! have_image "$BASE_REF"; then run_logged "kind-base-$KIND_VERSION" build_base; fi
if ! have_image "$NODE_REF" || [ "${QSCALE_REBUILD_NODE:-0}" = 1 ]; then
  [ -f "$K8S_DIR/images.txt" ] || die "component images not built (hack/images/build.sh)"
  run_logged "kind-node-$K8S_VERSION" build_node
fi
echo "$NODE_REF"
