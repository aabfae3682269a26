"""Kubernetes Events about WorkerPools (core/v1), so `kubectl describe` tells the story.

Every scale gets an event (ScaledUp/ScaledDown with from -> to and the reason);
errors get Warning events. A repeat of the same reason and message within ten
minutes bumps the existing event's count instead of creating another, like the
kubelet's recorder, so a persistent error does not flood the namespace.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from controller.kubeapi import KubeApi, rfc3339

log = logging.getLogger(__name__)

COMPONENT = "qscale-controller"
_REPEAT_WINDOW = 600.0


@dataclass(frozen=True)
class Involved:
    """The object an event is about."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    api_version: str = "qscale.io/v1alpha1"


class EventRecorder:
    """Creates or bumps core/v1 Events; failures are logged, never raised."""

    def __init__(self, core: KubeApi, host: str = "") -> None:
        self.core = core
        self.host = host
        self._recent: dict[tuple[str, str, str, str], tuple[str, int, float]] = {}

    def emit(self, obj: Involved, event_type: str, reason: str, message: str) -> None:
        """Record one event; `event_type` is Normal or Warning."""
        key = (obj.namespace, obj.name, reason, message)
        now = rfc3339()
        if len(self._recent) > 1000:
            horizon = time.monotonic() - _REPEAT_WINDOW
            self._recent = {k: v for k, v in self._recent.items() if v[2] > horizon}
        recent = self._recent.get(key)
        try:
            if recent and time.monotonic() - recent[2] < _REPEAT_WINDOW:
                name, count, _ = recent
                self.core.patch_event(obj.namespace, name,
                                      {"count": count + 1, "lastTimestamp": now})
                self._recent[key] = (name, count + 1, time.monotonic())
                return
            name = f"{obj.name}.{uuid.uuid4().hex[:12]}"
            involved = {"kind": obj.kind, "namespace": obj.namespace, "name": obj.name,
                        "apiVersion": obj.api_version, **({"uid": obj.uid} if obj.uid else {})}
            source = {"component": COMPONENT, **({"host": self.host} if self.host else {})}
            self.core.create_event(obj.namespace, {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": obj.namespace},
                "involvedObject": involved, "reason": reason, "message": message[:1024],
                "type": event_type, "count": 1, "firstTimestamp": now, "lastTimestamp": now,
                "source": source, "reportingComponent": COMPONENT,
                "reportingInstance": self.host or COMPONENT})
            self._recent[key] = (name, 1, time.monotonic())
        except Exception as exc:
            self._recent.pop(key, None)
            log.warning("event %s/%s %s not recorded: %s", obj.namespace, obj.name, reason, exc)
