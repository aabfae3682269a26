"""List + watch in a daemon thread, the part every watcher of the controller shares.

Each round lists (the subclass applies the full state), then watches from the
list's resourceVersion until the server ends the stream (every RESYNC_SECONDS:
a periodic re-list). A 410 Gone (an ERROR event) means the version is too old:
the first re-lists at once, a second in a row backs off like any other failure
(doubling from 0.5 s to 30 s, reset by a clean round), so neither a down API
server nor a 410 loop is hammered. `last_alive` is when the thread last did
something (a round began, an event arrived); /healthz fails when it is older
than STALL_SECONDS, the longest a healthy round can go quiet.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, Self

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

RESYNC_SECONDS = 300
REQUEST_SLACK_SECONDS = 30  # the watch request's timeout beyond RESYNC_SECONDS
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 30.0
# A live watcher does something at least this often (a quiet stream ends by
# RESYNC_SECONDS + slack, then waits at most MAX_DELAY_SECONDS); beyond: stalled.
STALL_SECONDS = RESYNC_SECONDS + REQUEST_SLACK_SECONDS + MAX_DELAY_SECONDS + 30


class ListWatcher(ABC):
    """Base of the controller's watchers; subclasses say what to list and how to apply it."""

    def __init__(self, what: str, thread_name: str) -> None:
        self.what = what  # for log lines: "deployment ns/name", "workerpool"
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=thread_name)
        self.last_alive = time.monotonic()

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

    def stalled(self, now: float | None = None) -> bool:
        """The thread died or has done nothing for longer than a healthy round allows."""
        now = time.monotonic() if now is None else now
        return (self._thread.ident is not None and not self._thread.is_alive()
                and not self._stop.is_set()) or now - self.last_alive > STALL_SECONDS

    def _run(self) -> None:
        delay = FIRST_DELAY_SECONDS
        gone = 0  # 410s in a row: the first re-lists at once, more back off
        while not self._stop.is_set():
            self.last_alive = time.monotonic()
            try:
                self._round()
                delay, gone = FIRST_DELAY_SECONDS, 0
                continue
            except ApiException as exc:
                if exc.status == 410:
                    gone += 1
                    if gone == 1:
                        continue
                    log.warning("%s watch: %d re-lists in a row ended in 410 Gone, "
                                "backing off %.1fs", self.what, gone, delay)
                else:
                    log.warning("%s watch failed: %s %s", self.what, exc.status, exc.reason)
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("%s watch broke: %s", self.what, exc)
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)

    def _round(self) -> None:
        """List, then watch from the list's version until the stream ends."""
        version = self._list()
        func, args, kwargs = self._watch_call()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        for event in self._watch.stream(  # type: ignore[no-untyped-call]
                func, *args, **kwargs, resource_version=version,
                timeout_seconds=RESYNC_SECONDS,
                _request_timeout=RESYNC_SECONDS + REQUEST_SLACK_SECONDS):
            self.last_alive = time.monotonic()
            if self._stop.is_set():
                return
            kind = event["type"]
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._on_event(kind, event["object"])
            elif kind == "ERROR":  # the client raises 410s itself; anything else: re-list
                raise ApiException(status=int((event.get("object") or {}).get("code") or 500)
                                   if isinstance(event.get("object"), dict) else 500,
                                   reason="watch ERROR event")
