"""Never fight: which WorkerPools this controller owns, and who else scales a Deployment.

Ownership: a controller named N (QSCALE_CONTROLLER_NAME; the chart uses the release's
fullname) reconciles exactly the WorkerPools labelled `qscale.io/controller=N`; with no
name it takes those without the label. Two releases in one namespace therefore never
write each other's status nor scale each other's pools.

A pool whose target Deployment is already scaled by someone else is refused (it acts
on nothing, says so in a condition, an Event and a metric), like KEDA's admission
check: an autoscaling/v2 HorizontalPodAutoscaler whose scaleTargetRef is that
Deployment, or another WorkerPool (of any controller) on the same Deployment created
earlier (ties: by name), so every controller picks the same single winner. HPAs are
listed per namespace at most every HPA_LIST_SECONDS (RBAC: list only); a list that
fails leaves the HPA set unknown, which holds scale-downs ("scalers").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.pool import PoolSpec

log = logging.getLogger(__name__)

CONTROLLER_LABEL = "qscale.io/controller"
HPA_LIST_SECONDS = 10.0
HPA_STALE_SECONDS = 60.0  # a last good list older than this no longer counts


def owned_by(obj: Mapping[str, Any], name: str) -> bool:
    """Whether the controller called `name` reconciles this WorkerPool object."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return str(labels.get(CONTROLLER_LABEL, "")) == name


@dataclass(frozen=True)
class PoolEntry:
    """What the index keeps of any WorkerPool in a watched namespace."""

    namespace: str
    name: str
    target: str
    created: str  # RFC 3339: compares in time order
    controller: str

    @property
    def rank(self) -> tuple[str, str]:
        return (self.created or "~", self.name)


@dataclass(frozen=True)
class ConflictCheck:
    """`refusal`: why the pool must not act; `unknown`: why scalers could not be read."""

    refusal: str | None = None
    unknown: str | None = None


def _entry(obj: Mapping[str, Any]) -> PoolEntry | None:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    target = (spec.get("targetRef") or {}).get("name")
    if not isinstance(target, str) or not target:
        return None
    labels = meta.get("labels") or {}
    return PoolEntry(str(meta.get("namespace") or ""), str(meta.get("name") or ""), target,
                     str(meta.get("creationTimestamp") or ""),
                     str(labels.get(CONTROLLER_LABEL, "")))


class Conflicts:
    """The WorkerPool index (fed by the manager's watch) and a cached HPA list."""

    def __init__(self, list_hpas: Callable[[str], list[Any]] | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._list_hpas = list_hpas  # namespace -> HPA objects (autoscaling/v2)
        self._clock = clock
        self._pools: dict[tuple[str, str], PoolEntry] = {}
        self._hpas: dict[str, tuple[float, list[tuple[str, str, str]]]] = {}
        self._hpa_errors: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    # -- the WorkerPool index --

    def pool_seen(self, obj: Mapping[str, Any]) -> None:
        entry = _entry(obj)
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        with self._lock:
            if entry is None:
                self._pools.pop(key, None)
            else:
                self._pools[key] = entry

    def pool_gone(self, namespace: str, name: str) -> None:
        with self._lock:
            self._pools.pop((namespace, name), None)

    def resynced(self, items: list[Mapping[str, Any]]) -> None:
        with self._lock:
            self._pools = {}
        for item in items:
            self.pool_seen(item)

    # -- the check --

    def check(self, spec: PoolSpec) -> ConflictCheck:
        """Refuse the pool if an HPA or an earlier WorkerPool scales its Deployment."""
        with self._lock:
            mine = self._pools.get((spec.namespace, spec.name))
            rivals = [e for e in self._pools.values()
                      if e.namespace == spec.namespace and e.target == spec.deployment
                      and e.name != spec.name]
        if mine is not None:
            earlier = [e for e in rivals if e.rank < mine.rank]
            if earlier:
                first = min(earlier, key=lambda e: e.rank)
                owner = f" (controller {first.controller!r})" if first.controller else ""
                return ConflictCheck(refusal=(
                    f"deployment {spec.deployment} is already scaled by WorkerPool "
                    f"{first.name}{owner}; remove one of them"))
        hpas, unknown = self._hpas_of(spec.namespace)
        for name, kind, target in hpas:
            if kind == "Deployment" and target == spec.deployment:
                return ConflictCheck(refusal=(
                    f"deployment {spec.deployment} is already scaled by "
                    f"HorizontalPodAutoscaler {name}; remove one of them"))
        return ConflictCheck(unknown=unknown)

    def _hpas_of(self, namespace: str) -> tuple[list[tuple[str, str, str]], str | None]:
        """(name, kind, target) of the namespace's HPAs, listed at most every
        HPA_LIST_SECONDS; plus why they are unknown (a failed list, nothing recent)."""
        if self._list_hpas is None:
            return [], None
        now = self._clock()
        with self._lock:
            cached = self._hpas.get(namespace)
            error = self._hpa_errors.get(namespace)
            due = (cached is None or now - cached[0] >= HPA_LIST_SECONDS) and (
                error is None or now - error[0] >= HPA_LIST_SECONDS)
        if due:
            try:
                items = self._list_hpas(namespace)
                found = [(str((h.get("metadata") or {}).get("name")),
                          str(((h.get("spec") or {}).get("scaleTargetRef") or {}).get("kind")),
                          str(((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name")))
                         for h in items]
            except Exception as exc:
                why = f"listing HorizontalPodAutoscalers: {_short(exc)}"
                log.warning("namespace=%s %s", namespace, why)
                with self._lock:
                    self._hpa_errors[namespace] = (now, why)
            else:
                with self._lock:
                    self._hpas[namespace] = (now, found)
                    self._hpa_errors.pop(namespace, None)
        with self._lock:
            cached = self._hpas.get(namespace)
            error = self._hpa_errors.get(namespace)
        fresh = cached is not None and now - cached[0] < HPA_STALE_SECONDS
        if error is not None and not fresh:
            return (cached[1] if cached else []), error[1]
        return (cached[1] if cached else []), None


def _short(exc: BaseException) -> str:
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    return f"{status} {reason or ''}".strip() if status is not None else \
        f"{type(exc).__name__}: {exc}"[:200]
