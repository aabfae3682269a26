"""The shared list + watch loop (controller/watch.py): when it re-lists and how long it waits.

A scripted subclass stands in for the API server (the real one: tests/k8s); the
stream goes through the kubernetes client's own `Watch`, so an ERROR event is
turned into an ApiException exactly as in production.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.watch import ListWatcher


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded (the back-off delays)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        return self.is_set()


class FakeResponse:
    """What a `watch=True` list call returns: JSON event lines."""

    status = 200

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.lines = [json.dumps(e).encode() + b"\n" for e in events]

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        yield from self.lines

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def _obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


class Scripted(ListWatcher):
    """Each round takes the next step: a list outcome and the watch's events."""

    def __init__(self, rounds: list[tuple[str | Exception, list[dict[str, Any]]]]) -> None:
        super().__init__("test", "watch-test")
        self._stop = RecordingStop()
        self.rounds = list(rounds)
        self.seen: list[tuple[str, str]] = []
        self.watched_from: list[str | None] = []
        self._events: list[dict[str, Any]] = []

    @property
    def waits(self) -> list[float]:
        assert isinstance(self._stop, RecordingStop)
        return self._stop.waits

    def _list(self) -> str | None:
        if not self.rounds:
            self._stop.set()
            return None
        outcome, self._events = self.rounds.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        self.seen.append(("LIST", outcome))
        return outcome

    def _watch_call(self) -> tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any]]:
        def list_things(**kwargs: Any) -> FakeResponse:
            self.watched_from.append(kwargs.get("resource_version"))
            assert kwargs["watch"] is True and kwargs["timeout_seconds"] == 300
            return FakeResponse([] if self._stop.is_set() else self._events)
        return list_things, (), {}

    def _on_event(self, kind: str, obj: Any) -> None:
        self.seen.append((kind, obj["metadata"]["name"]))


def test_relists_at_once_on_410_and_backs_off_on_other_failures() -> None:
    gone = {"type": "ERROR", "object": {"code": 410, "reason": "Expired",
                                        "message": "too old resource version"}}
    w = Scripted([
        (ApiException(status=500, reason="Internal"), []),     # wait 0.5
        (ApiException(status=403, reason="Forbidden"), []),    # wait 1.0
        (ConnectionError("refused"), []),                     # wait 2.0
        ("10", [{"type": "ADDED", "object": _obj("a", "11")}]),  # clean round: reset
        ("20", [{"type": "MODIFIED", "object": _obj("a", "21")}, gone]),  # 410: no wait
        ("30", [{"type": "DELETED", "object": _obj("a", "31")}]),
        (ApiException(status=503, reason="Unavailable"), []),  # after a reset: 0.5 again
    ])
    w._run()
    assert w.waits == [0.5, 1.0, 2.0, 0.5], w.waits
    assert w.seen == [("LIST", "10"), ("ADDED", "a"), ("LIST", "20"), ("MODIFIED", "a"),
                      ("LIST", "30"), ("DELETED", "a")]
    assert w.watched_from[:3] == ["10", "20", "30"]  # each watch resumes from its list


def test_back_off_is_capped_at_30s() -> None:
    w = Scripted([(ApiException(status=500, reason="x"), [])] * 9)
    w._run()
    assert w.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_stop_ends_the_thread_while_it_backs_off() -> None:
    w = Scripted([(ApiException(status=500, reason="x"), [])] * 100)
    w._stop = threading.Event()               # real waits: stop() must cut one short
    w.start()
    threading.Event().wait(0.2)
    w.stop()
    w._thread.join(5)
    assert not w._thread.is_alive()
    assert len(w.rounds) >= 97                # it waited between attempts, not spun


def test_a_410_loop_backs_off() -> None:
    """An API server that answers every watch with 410 Gone (issue #10, item 8): the
    first re-list is immediate, the next ones back off instead of spinning."""
    gone = {"type": "ERROR", "object": {"code": 410, "reason": "Expired",
                                        "message": "too old resource version"}}
    w = Scripted([(str(v), [gone]) for v in range(1, 8)])
    w._run()
    assert w.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0], w.waits


def test_a_stuck_watcher_reports_stalled() -> None:
    from controller.watch import STALL_SECONDS
    w = Scripted([])
    assert not w.stalled()
    assert w.stalled(now=w.last_alive + STALL_SECONDS + 1)
