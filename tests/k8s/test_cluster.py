"""The kind cluster built offline by hack/cluster.sh really works.

Node Ready, pod-to-Service traffic by DNS name with an image built here, images
loaded with `kind load docker-image`, and PVCs from the default StorageClass.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid

import pytest

from tests.plugins.kind import KubeCluster

pytestmark = pytest.mark.k8s

BASE_IMAGE = "qscale/debian:bookworm"

PY_HTTP_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update && apt-get install -y python3 && rm -rf /var/lib/apt/lists/*
"""


def _docker_build(tag: str, dockerfile: str) -> None:
    """Build an image from a Dockerfile given as text (no build context)."""
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    proc = subprocess.run(
        ["docker", "build", "-t", tag, "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"docker build {tag} failed:\n{proc.stdout[-2000:]}\n{proc.stderr}"


def _have_image(tag: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", tag], capture_output=True, check=False
        ).returncode
        == 0
    )


def _wait_phase(
    cluster: KubeCluster, ns: str, pod: str, phases: set[str], timeout: float = 180
) -> str:
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        proc = cluster.kubectl(
            "-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.phase}", check=False
        )
        phase = proc.stdout.strip()
        if phase in phases:
            return phase
        time.sleep(2)
    describe = cluster.kubectl("-n", ns, "describe", "pod", pod, check=False).stdout
    raise AssertionError(f"pod {ns}/{pod} stuck in phase {phase!r}:\n{describe[-3000:]}")


@pytest.fixture(scope="module")
def python_image(kube_cluster: KubeCluster) -> str:
    """A python3 image FROM qscale/debian:bookworm, loaded into the cluster."""
    tag = "qscale-test/python:" + hashlib.sha256(PY_HTTP_DOCKERFILE.encode()).hexdigest()[:12]
    if not _have_image(tag):
        _docker_build(tag, PY_HTTP_DOCKERFILE)
    kube_cluster.load_image(tag)
    return tag


def test_node_ready(kube_cluster: KubeCluster) -> None:
    nodes = kube_cluster.kubectl_json("get", "nodes")["items"]
    assert nodes, "cluster has no nodes"
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", f"{node['metadata']['name']}: {ready}"
        assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.3")


def test_pod_reaches_service_by_dns_name(
    kube_cluster: KubeCluster, python_image: str, namespace: str
) -> None:
    token = uuid.uuid4().hex
    server = f"""
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  containers:
    - name: web
      image: {python_image}
      imagePullPolicy: IfNotPresent
      command: [python3, -c]
      args:
        - |
          import http.server
          class H(http.server.BaseHTTPRequestHandler):
              def do_GET(self):
                  body = b"{token}"
                  self.send_response(200)
                  self.send_header("Content-Length", str(len(body)))
                  self.end_headers()
                  self.wfile.write(body)
          http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
      readinessProbe:
        tcpSocket: {{port: 8080}}
        periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
    - port: 80
      targetPort: 8080
"""
    kube_cluster.apply(server, namespace)
    ready = kube_cluster.kubectl(
        "-n", namespace, "wait", "--for=condition=Ready", "pod/web", "--timeout=180s",
        timeout=200, check=False,
    )
    if ready.returncode != 0:
        logs = kube_cluster.kubectl("-n", namespace, "logs", "web", check=False)
        describe = kube_cluster.kubectl("-n", namespace, "describe", "pod", "web", check=False)
        pytest.fail(
            f"server pod not Ready: {ready.stderr}\nlogs:\n{logs.stdout}{logs.stderr}\n"
            f"{describe.stdout[-2500:]}"
        )
    client = f"""
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  restartPolicy: Never
  containers:
    - name: client
      image: {python_image}
      imagePullPolicy: IfNotPresent
      command: [python3, -c]
      args:
        - |
          import socket, time, urllib.request
          for attempt in range(30):
              try:
                  print("resolved", socket.gethostbyname("web"))
                  fqdn = "http://web.{namespace}.svc.cluster.local/"
                  print("body", urllib.request.urlopen(fqdn, timeout=5).read().decode())
                  break
              except OSError as exc:
                  print("retry", exc)
                  time.sleep(1)
          else:
              raise SystemExit("service never answered")
"""
    kube_cluster.apply(client, namespace)
    phase = _wait_phase(kube_cluster, namespace, "client", {"Succeeded", "Failed"})
    logs = kube_cluster.kubectl("-n", namespace, "logs", "client").stdout
    assert phase == "Succeeded", logs
    svc_ip = kube_cluster.kubectl(
        "-n", namespace, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout.strip()
    assert f"resolved {svc_ip}" in logs, logs
    assert f"body {token}" in logs, logs


def test_kind_load_fresh_image(kube_cluster: KubeCluster, namespace: str) -> None:
    token = uuid.uuid4().hex
    tag = f"qscale-test/fresh:{token[:12]}"
    _docker_build(tag, f'FROM {BASE_IMAGE}\nRUN echo "{token}" > /token\nCMD ["cat", "/token"]\n')
    try:
        kube_cluster.load_image(tag)
        kube_cluster.kubectl(
            "-n", namespace, "run", "fresh", f"--image={tag}", "--image-pull-policy=Never",
            "--restart=Never",
        )
        phase = _wait_phase(kube_cluster, namespace, "fresh", {"Succeeded", "Failed"})
        logs = kube_cluster.kubectl("-n", namespace, "logs", "fresh").stdout
        assert phase == "Succeeded", logs
        assert logs.strip() == token
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def test_pvc_binds_and_pod_writes(kube_cluster: KubeCluster, namespace: str) -> None:
    manifest = f"""
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: writer
spec:
  restartPolicy: Never
  containers:
    - name: writer
      image: {BASE_IMAGE}
      imagePullPolicy: IfNotPresent
      command: [sh, -c, "echo persisted > /data/f && sync && cat /data/f"]
      volumeMounts:
        - {{name: data, mountPath: /data}}
  volumes:
    - name: data
      persistentVolumeClaim: {{claimName: data}}
"""
    kube_cluster.apply(manifest, namespace)
    phase = _wait_phase(kube_cluster, namespace, "writer", {"Succeeded", "Failed"}, timeout=240)
    logs = kube_cluster.kubectl("-n", namespace, "logs", "writer").stdout
    assert phase == "Succeeded", logs
    assert logs.strip() == "persisted"
    pvc = kube_cluster.kubectl_json("-n", namespace, "get", "pvc", "data")
    assert pvc["status"]["phase"] == "Bound", pvc["status"]
    assert pvc["spec"]["storageClassName"] == "standard"
