"""List + watch in a daemon thread, the part every watcher of the controller shares.

Each round lists (the subclass applies the full state), then watches from the
list's resourceVersion until the server ends the stream (every RESYNC_SECONDS:
a periodic re-list). A 410 Gone, or an ERROR event, means the version is too
old: re-list at once. Any other failure re-lists after a back-off doubling from
0.5 s to 30 s, reset by a clean round, so a down API server is not hammered.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, Self

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

RESYNC_SECONDS = 300
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 30.0


class ListWatcher(ABC):
    """Base of the controller's watchers; subclasses say what to list and how to apply it."""

    def __init__(self, what: str, thread_name: str) -> None:
        self.what = what  # for log lines: "deployment ns/name", "workerpool"
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=thread_name)

    # -- what subclasses provide --

    @abstractmethod
    def _list(self) -> str | None:
        """List, apply the full state; returns the list's resourceVersion."""

    @abstractmethod
    def _watch_call(self) -> tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any]]:
        """The list function to stream, with its positional and keyword arguments."""

    @abstractmethod
    def _on_event(self, kind: str, obj: Any) -> None:
        """Apply one ADDED / MODIFIED / DELETED event."""

    # -- the shared machinery --

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        delay = FIRST_DELAY_SECONDS
        while not self._stop.is_set():
            try:
                version = self._list()
                func, args, kwargs = self._watch_call()
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                        func, *args, **kwargs, resource_version=version,
                        timeout_seconds=RESYNC_SECONDS, _request_timeout=RESYNC_SECONDS + 30):
                    if self._stop.is_set():
                        return
                    kind = event["type"]
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._on_event(kind, event["object"])
                    elif kind == "ERROR":  # e.g. 410 Gone: re-list
                        break
                delay = FIRST_DELAY_SECONDS
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("%s watch failed: %s %s", self.what, exc.status, exc.reason)
                    self._stop.wait(delay)
                    delay = min(delay * 2, MAX_DELAY_SECONDS)
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("%s watch broke: %s", self.what, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_DELAY_SECONDS)
