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
from datetime import UTC, datetime

from kubernetes import client

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

    def __init__(self, core: client.CoreV1Api, host: str = "") -> None:
        self.core = core
        self.host = host
        self._recent: dict[tuple[str, str, str, str], tuple[str, int, float]] = {}

    def emit(self, obj: Involved, event_type: str, reason: str, message: str) -> None:
        """Record one event; `event_type` is Normal or Warning."""
        key = (obj.namespace, obj.name, reason, message)
        now = datetime.now(UTC)
        if len(self._recent) > 1000:
            horizon = time.monotonic() - _REPEAT_WINDOW
            self._recent = {k: v for k, v in self._recent.items() if v[2] > horizon}
        recent = self._recent.get(key)
        try:
            if recent and time.monotonic() - recent[2] < _REPEAT_WINDOW:
                name, count, _ = recent
                self.core.patch_namespaced_event(
                    name, obj.namespace, {"count": count + 1, "lastTimestamp": now.isoformat()},
                    _request_timeout=5)
                self._recent[key] = (name, count + 1, time.monotonic())
                return
            name = f"{obj.name}.{uuid.uuid4().hex[:12]}"
            body = client.CoreV1Event(
                metadata=client.V1ObjectMeta(name=name, namespace=obj.namespace),
                involved_object=client.V1ObjectReference(
                    kind=obj.kind, namespace=obj.namespace, name=obj.name,
                    uid=obj.uid or None, api_version=obj.api_version),
                reason=reason, message=message[:1024], type=event_type, count=1,
                first_timestamp=now, last_timestamp=now,
                source=client.V1EventSource(component=COMPONENT, host=self.host or None),
                reporting_component=COMPONENT, reporting_instance=self.host or COMPONENT)
            self.core.create_namespaced_event(obj.namespace, body, _request_timeout=5)
            self._recent[key] = (name, 1, time.monotonic())
        except Exception as exc:
            self._recent.pop(key, None)
            log.warning("event %s/%s %s not recorded: %s", obj.namespace, obj.name, reason, exc)
