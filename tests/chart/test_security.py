"""Secure defaults: every pod and container of every render runs locked down."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.conftest import CI_VALUES, Render, by_kind, pod_specs

RENDERS = [pytest.param((), id="defaults"),
           *[pytest.param((path,), id=path.stem) for path in CI_VALUES]]


@pytest.mark.parametrize("values", RENDERS)
def test_every_pod_and_container_is_locked_down(render: Render, values: tuple[Path, ...]) -> None:
    specs = pod_specs(render(values=values))
    assert specs, "nothing rendered"
    for name, spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod_sc["runAsUser"] != 0, name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where
            # A read-only root needs a writable /tmp.
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, where


def test_qscale_pods_run_as_uid_10001(render: Render) -> None:
    for name, spec in pod_specs(render()):
        image = spec["containers"][0]["image"]
        if image.startswith("qscale:"):
            assert spec["securityContext"]["runAsUser"] == 10001, name


def test_only_the_controller_mounts_an_api_token(render: Render) -> None:
    for name, spec in pod_specs(render()):
        wants_token = name.endswith("-controller")
        assert spec.get("automountServiceAccountToken", True) is wants_token, name


def test_component_overrides_merge_over_global_defaults(render: Render) -> None:
    docs = render("--set", "worker.containerSecurityContext.runAsUser=20000")
    worker = next(d for d in by_kind(docs, "Deployment") if "-worker-" in d["metadata"]["name"])
    sc = worker["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert sc["runAsUser"] == 20000
    assert sc["readOnlyRootFilesystem"] is True
