"""The actuator: the only code that changes workloads through the Kubernetes API.

It scales a Deployment through its `scale` subresource (patched only on change),
keeps the Deployment's current state from a watch (restarted when it expires),
and before any scale-down marks pods with `controller.kubernetes.io/pod-deletion-cost`
so the ReplicaSet removes idle workers first. Nothing here is remembered across
restarts that the cluster does not also hold: state is re-read on start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.kubeapi import KubeApi
from controller.podreader import label_selector
from controller.podstate import DELETION_COST
from controller.watch import ListWatcher

log = logging.getLogger(__name__)


class ActuationError(Exception):
    """A Kubernetes call failed; the loop backs off and holds its decisions."""


class TargetMissingError(ActuationError):
    """The Deployment to scale does not exist."""


@dataclass(frozen=True)
class DeploymentView:
    """What the controller knows about its target Deployment."""

    exists: bool
    spec_replicas: int = 0
    status_replicas: int = 0
    ready_replicas: int = 0
    # The full label selector (matchLabels and matchExpressions) as a query string;
    # None when the Deployment has none we can use (its pods are then unknown).
    selector: str | None = None
    resource_version: str = ""
    name: str = ""


def _view(dep: Mapping[str, Any]) -> DeploymentView:
    """A Deployment as the API returns it (JSON, controller.kubeapi) -> what we need."""
    meta, spec = dep.get("metadata") or {}, dep.get("spec") or {}
    status = dep.get("status") or {}
    replicas = spec.get("replicas")
    return DeploymentView(
        exists=True,
        spec_replicas=int(replicas if replicas is not None else 1),
        status_replicas=int(status.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        selector=label_selector(spec.get("selector")),
        resource_version=str(meta.get("resourceVersion") or ""),
        name=str(meta.get("name") or ""),
    )


class DeploymentWatcher(ListWatcher):
    """Keeps a current DeploymentView of one Deployment from list + watch.

    The watch resumes from the last resourceVersion; when that is too old (410
    Gone) or the stream breaks, it re-lists, so the view converges after restarts.
    """

    def __init__(self, kube: KubeApi, namespace: str, name: str) -> None:
        super().__init__(f"deployment {namespace}/{name}", f"watch-deploy-{namespace}/{name}")
        self.kube, self.namespace, self.name = kube, namespace, name
        self._selector = f"metadata.name={name}"
        self._view: DeploymentView | None = None
        self._lock = threading.Lock()
        self._synced = threading.Event()

    def view(self, wait: float = 0.0) -> DeploymentView | None:
        """The latest view; None until the first list succeeded (waits up to `wait` s)."""
        if wait:
            self._synced.wait(wait)
        with self._lock:
            return self._view

    def set(self, view: DeploymentView) -> None:
        with self._lock:
            self._view = view
        self._synced.set()

    def _list_func(self, **kwargs: Any) -> Any:
        # No docstring on purpose: Watch reads the model type from it; none = plain dicts.
        return self.kube.list_deployments(self.namespace, field_selector=self._selector,
                                          **kwargs)

    def _list(self) -> str | None:
        listed = self._list_func()
        items = listed.get("items") or []
        self.set(_view(items[0]) if items else DeploymentView(exists=False))
        return (listed.get("metadata") or {}).get("resourceVersion")

    def _watch_call(self) -> tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any]]:
        return self._list_func, (), {}

    def _on_event(self, kind: str, obj: Any) -> None:
        self.set(DeploymentView(exists=False) if kind == "DELETED" else _view(obj))


class Actuator:
    """Scales one Deployment and steers which of its pods go first."""

    def __init__(self, kube: KubeApi, namespace: str, deployment: str) -> None:
        self.kube = kube
        self.namespace, self.deployment = namespace, deployment
        self.watcher = DeploymentWatcher(kube, namespace, deployment)

    def start(self) -> Actuator:
        self.watcher.start()
        return self

    def stop(self) -> None:
        self.watcher.stop()

    def current(self) -> DeploymentView:
        """The Deployment as the watch last saw it; read directly if the watch has not synced."""
        view = self.watcher.view(wait=2.0)
        if view is not None:
            return view
        try:
            dep = self.kube.read_deployment(self.namespace, self.deployment)
        except ApiException as exc:
            if exc.status == 404:
                return DeploymentView(exists=False)
            raise ActuationError(f"reading deployment: {exc.status} {exc.reason}") from exc
        except Exception as exc:
            raise ActuationError(f"reading deployment: {exc}") from exc
        return _view(dep)

    def scale(self, replicas: int) -> bool:
        """Set spec.replicas through the scale subresource; False when it already was."""
        view = self.current()
        if not view.exists:
            raise TargetMissingError(f"deployment {self.namespace}/{self.deployment} not found")
        if view.spec_replicas == replicas:
            return False
        try:
            self.kube.patch_deployment_scale(self.namespace, self.deployment, replicas)
        except ApiException as exc:
            if exc.status == 404:
                raise TargetMissingError(
                    f"deployment {self.namespace}/{self.deployment} not found") from exc
            raise ActuationError(f"patching scale: {exc.status} {exc.reason}") from exc
        except Exception as exc:
            raise ActuationError(f"patching scale: {exc}") from exc
        # Reflect our write at once; the watch confirms it moments later.
        self.watcher.set(replace(view, spec_replicas=replicas))
        return True

    def mark_deletion_costs(self, costs: Mapping[str, int],
                            current: Mapping[str, int | None]) -> int:
        """Annotate pods with their deletion cost where `current` (from the pod list) differs.

        Returns how many pods were patched. Comparing against the cluster's values, not a
        cache, keeps a restarted controller idempotent.
        """
        patched = 0
        for pod, cost in costs.items():
            if current.get(pod) == cost:
                continue
            patch = {"metadata": {"annotations": {DELETION_COST: str(cost)}}}
            try:
                self.kube.patch_pod(self.namespace, pod, patch)
            except ApiException as exc:
                if exc.status == 404:  # the pod went away meanwhile: nothing to steer
                    continue
                raise ActuationError(f"annotating pod {pod}: {exc.status} {exc.reason}") from exc
            except Exception as exc:
                raise ActuationError(f"annotating pod {pod}: {exc}") from exc
            patched += 1
        return patched
