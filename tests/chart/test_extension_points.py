"""Issue #11 item 7: a mature chart's extension points, each rendered where it belongs.

Every key lives in the closed values.schema.json (hack/chart-schema.py), so a typo still
fails the install; the Kubernetes objects inside (EnvVar, Volume, Container) pass through
for the API server to validate.
"""

from __future__ import annotations

import json
from typing import Any

from tests.chart.conftest import Render, by_kind, named


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"]["qscale.io/pool"]: d["spec"]["template"]
            for d in by_kind(docs, "Deployment")
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"}


def _pools(*pools: dict[str, Any]) -> tuple[str, str]:
    return ("--set-json", f"pools={json.dumps(list(pools))}")


def test_env_env_from_volumes_init_and_sidecar_containers(render: Render) -> None:
    worker = {
        "extraEnv": [{"name": "MYAPP_MODE", "value": "batch"}],
        "extraEnvFrom": [{"secretRef": {"name": "myapp-secrets"}}],
        "extraVolumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
        "extraVolumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        "initContainers": [{"name": "fetch-models", "image": "busybox:1.36",
                            "command": ["true"]}],
        "extraContainers": [{"name": "cloud-sql-proxy", "image": "proxy:2"}],
    }
    pod = _pods(render("--set-json", f"worker={json.dumps(worker)}"))["default"]
    spec = pod["spec"]
    main = spec["containers"][0]
    assert main["name"] == "worker"
    assert {"name": "MYAPP_MODE", "value": "batch"} in main["env"]
    assert main["envFrom"] == [{"secretRef": {"name": "myapp-secrets"}}]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in main["volumeMounts"]
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]  # ours stay
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "models"}} in spec["volumes"]
    assert [c["name"] for c in spec["initContainers"]] == ["fetch-models"]
    assert [c["name"] for c in spec["containers"]] == ["worker", "cloud-sql-proxy"]


def test_pools_override_extension_points_one_by_one(render: Render) -> None:
    pods = _pods(render(
        "--set-json", 'worker.extraEnv=[{"name":"A","value":"default"}]',
        *_pools({"name": "default", "queues": ["default"]},
                {"name": "gpu", "queues": ["gpu"], "extraEnv": [{"name": "A", "value": "gpu"}],
                 "extraContainers": [{"name": "exporter", "image": "dcgm:3"}]})))
    assert {"name": "A", "value": "default"} in pods["default"]["spec"]["containers"][0]["env"]
    assert {"name": "A", "value": "gpu"} in pods["gpu"]["spec"]["containers"][0]["env"]
    assert len(pods["default"]["spec"]["containers"]) == 1
    assert [c["name"] for c in pods["gpu"]["spec"]["containers"]] == ["worker", "exporter"]


def test_resources_beyond_cpu_and_memory_and_per_pool(render: Render) -> None:
    pods = _pods(render(*_pools(
        {"name": "default", "queues": ["default"]},
        {"name": "gpu", "queues": ["gpu"],
         "resources": {"requests": {"cpu": "2", "memory": "8Gi"},
                       "limits": {"memory": "8Gi", "nvidia.com/gpu": 1,
                                  "hugepages-2Mi": "64Mi"}}})))
    gpu = pods["gpu"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1
    assert gpu["limits"]["hugepages-2Mi"] == "64Mi"
    default = pods["default"]["spec"]["containers"][0]["resources"]
    assert default == {"requests": {"cpu": "100m", "memory": "128Mi"},
                       "limits": {"memory": "512Mi"}}


def test_per_pool_image_and_global_registry(render: Render) -> None:
    docs = render("--set", "global.imageRegistry=registry.example.com/team",
                  *_pools({"name": "default", "queues": ["default"]},
                          {"name": "ml", "queues": ["ml"],
                           "image": {"repository": "myapp-ml", "tag": "2.1"}},
                          {"name": "pinned", "queues": ["pinned"],
                           "image": {"registry": "other.example.com",
                                     "digest": "sha256:" + "a" * 64}}))
    pods = _pods(docs)
    image = {pool: pod["spec"]["containers"][0]["image"] for pool, pod in pods.items()}
    assert image == {"default": "registry.example.com/team/qscale:0.2.0",
                     "ml": "registry.example.com/team/myapp-ml:2.1",
                     "pinned": "other.example.com/qscale@sha256:" + "a" * 64}
    # Every image of the release goes through the global registry.
    for doc in by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert container["image"].startswith(("registry.example.com/team/",
                                                  "other.example.com/")), container["image"]


def test_worker_service_account_for_cloud_identity(render: Render) -> None:
    docs = render("--set", "worker.serviceAccount.create=true",
                  "--set", "worker.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn="
                  "arn:aws:iam::123456789012:role/tasks",
                  *_pools({"name": "default", "queues": ["default"]},
                          {"name": "k8s", "queues": ["k8s"],
                           "serviceAccount": {"create": False, "name": "task-runner",
                                              "automountServiceAccountToken": True}}))
    account = named(docs, "ServiceAccount", "qscale-worker")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/tasks"}
    assert account["automountServiceAccountToken"] is False
    pods = _pods(docs)
    assert pods["default"]["spec"]["serviceAccountName"] == "qscale-worker"
    assert pods["default"]["spec"]["automountServiceAccountToken"] is False
    assert pods["k8s"]["spec"]["serviceAccountName"] == "task-runner"   # an existing one
    assert pods["k8s"]["spec"]["automountServiceAccountToken"] is True
    assert [a["metadata"]["name"] for a in by_kind(docs, "ServiceAccount")
            if a["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"] == \
        ["qscale-worker"]


def test_no_worker_service_account_by_default(render: Render) -> None:
    docs = render()
    pod = _pods(docs)["default"]["spec"]
    assert "serviceAccountName" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert not [a for a in by_kind(docs, "ServiceAccount")
                if a["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]


def test_pod_annotations_labels_and_priority_class(render: Render) -> None:
    pod = _pods(render("--set", "worker.podAnnotations.team=ml",
                       "--set-string", "worker.podLabels.cost-center=42",
                       "--set", "worker.priorityClassName=batch-low"))["default"]
    assert pod["metadata"]["annotations"]["team"] == "ml"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["labels"]["cost-center"] == "42"
    assert pod["metadata"]["labels"]["qscale.io/pool"] == "default"
    assert pod["spec"]["priorityClassName"] == "batch-low"
