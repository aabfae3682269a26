"""WorkerPool plumbing: list + watch the custom resources, and write their status.

The watcher hands raw objects to a callback (the manager turns them into pools);
a 410 Gone or a broken stream re-lists, so nothing is missed across expiries.
The status writer patches the status subresource only when something a reader
cares about changed, and at most once per `min_interval` per pool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.kubeapi import KubeApi
from controller.watch import ListWatcher

log = logging.getLogger(__name__)

PoolEvent = Callable[[str, Mapping[str, Any]], None]  # (ADDED|MODIFIED|DELETED|SYNC, object)


class WorkerPoolWatcher(ListWatcher):
    """Streams WorkerPool changes (one namespace, or all when `namespace` is empty)."""

    def __init__(self, api: KubeApi, namespace: str, on_event: PoolEvent) -> None:
        super().__init__("workerpool", "watch-workerpools")
        self.api, self.namespace, self.on_event = api, namespace, on_event
        self.synced = threading.Event()

    def _list_func(self, **kwargs: Any) -> Any:
        # No docstring on purpose: Watch reads the model type from it; none = plain dicts.
        return self.api.list_workerpools(self.namespace, **kwargs)

    def _list(self) -> str | None:
        listed = self._list_func()
        for item in listed.get("items", []):
            self.on_event("SYNC", item)
        self.on_event("RESYNCED", {"items": listed.get("items", [])})
        self.synced.set()
        return str(listed["metadata"]["resourceVersion"])

    def _watch_call(self) -> tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any]]:
        return self._list_func, (), {}

    def _on_event(self, kind: str, obj: Any) -> None:
        self.on_event(kind, obj)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusWriter:
    """Writes one WorkerPool's status subresource, only on change and rate-limited."""

    def __init__(self, api: KubeApi, namespace: str, name: str,
                 min_interval: float = 1.0) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.min_interval = min_interval
        self._written: dict[str, Any] | None = None
        self._conditions: dict[str, dict[str, str]] = {}
        self._last_write = 0.0

    def condition(self, kind: str, ok: bool, reason: str, message: str = "") -> None:
        """Set a condition; its lastTransitionTime moves only when the status flips."""
        status = "True" if ok else "False"
        previous = self._conditions.get(kind)
        since = previous["lastTransitionTime"] if previous and previous["status"] == status \
            else _now()
        self._conditions[kind] = {"type": kind, "status": status, "reason": reason,
                                  "message": message[:512], "lastTransitionTime": since}

    def write(self, fields: Mapping[str, Any], *, force: bool = False) -> bool:
        """Patch status with `fields` + conditions if changed; returns whether it patched."""
        status = dict(fields)
        status["conditions"] = [self._conditions[k] for k in sorted(self._conditions)]
        if status == self._written:
            return False
        if not force and time.monotonic() - self._last_write < self.min_interval:
            return False
        try:
            self.api.patch_workerpool_status(self.namespace, self.name, {"status": status})
        except ApiException as exc:
            if exc.status == 404:  # the pool was deleted meanwhile
                return False
            log.warning("status of %s/%s not written: %s %s", self.namespace, self.name,
                        exc.status, exc.reason)
            return False
        except Exception as exc:
            log.warning("status of %s/%s not written: %s", self.namespace, self.name, exc)
            return False
        self._written = status
        self._last_write = time.monotonic()
        return True
