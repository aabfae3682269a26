"""The fault suite's history: what happened, recorded from outside the controller.

Watches on the real API server (an admin client, not behind the Toxiproxy) record
every replica count of the pools' Deployments, the moment each pod is marked for
deletion, and every Lease holder; the tasks record their own start and finish with
their pod (tests/k8s/chaos/pod_files.py); the controllers' log lines give every scale
patch they made and why; the scenario adds its fault windows.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from kubernetes import client, watch

from tests.k8s.chaos.pod_files import HISTORY_KEY


@dataclass(frozen=True)
class Patch:
    """One scale patch a controller made (a decision line with acted=true)."""

    t: float
    identity: str
    pool: str
    current: int
    desired: int
    reason: str
    unknown: str


@dataclass(frozen=True)
class TaskRun:
    """One execution of a task on a pod: start, and finish if it finished."""

    id: str
    attempt: int
    pod: str
    start: float
    finish: float | None


@dataclass(frozen=True)
class Window:
    """A fault in force: no scale-down of `pools` may happen inside it."""

    fault: str
    start: float
    end: float
    pools: tuple[str, ...]  # Deployment names whose inputs the fault makes unknown


@dataclass
class History:
    replicas: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    deletions: dict[str, tuple[float, str]] = field(default_factory=dict)  # pod -> (t, dep)
    holders: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # lease ->
    windows: list[Window] = field(default_factory=list)
    hpa_windows: list[tuple[float, float, str]] = field(default_factory=list)  # pool
    patches: list[Patch] = field(default_factory=list)
    tasks: list[TaskRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Recorder:
    """Threads that watch Deployments, pods and Leases until `stop()`."""

    def __init__(self, api: client.ApiClient, ns: str, deployments: list[str],
                 pod_owner: Callable[[dict[str, Any]], str | None], leases: list[str]) -> None:
        self.ns, self.history = ns, History()
        self._watches: list[watch.Watch] = []
        self._apps, self._core = client.AppsV1Api(api), client.CoreV1Api(api)
        self._coord = client.CoordinationV1Api(api)
        self._deployments, self._pod_owner, self._leases = deployments, pod_owner, leases
        self._lock = threading.Lock()
        self._ready = threading.Barrier(4)
        for target in (self._watch_deployments, self._watch_pods, self._watch_leases):
            threading.Thread(target=target, daemon=True).start()
        self._ready.wait(60)

    def _stream(self, func: Callable[..., Any], **kwargs: Any) -> Any:
        listed = func(self.ns, **kwargs)
        w = watch.Watch()
        self._watches.append(w)
        return listed, w.stream(func, self.ns, resource_version=listed.metadata.resource_version,
                                timeout_seconds=3600, **kwargs)

    def _watch_deployments(self) -> None:
        listed, stream = self._stream(self._apps.list_namespaced_deployment)
        for dep in listed.items:
            self._replicas(dep.metadata.name, dep.spec.replicas)
        self._ready.wait()
        with _quiet():
            for event in stream:
                dep = event["object"]
                self._replicas(dep.metadata.name, dep.spec.replicas)

    def _replicas(self, name: str, replicas: int) -> None:
        if name not in self._deployments:
            return
        with self._lock:
            seen = self.history.replicas.setdefault(name, [])
            if not seen or seen[-1][1] != replicas:
                seen.append((time.time(), int(replicas)))

    def _watch_pods(self) -> None:
        _listed, stream = self._stream(self._core.list_namespaced_pod)
        self._ready.wait()
        with _quiet():
            for event in stream:
                pod = event["raw_object"]
                gone = event["type"] == "DELETED" or pod["metadata"].get("deletionTimestamp")
                owner = self._pod_owner(pod)
                name = pod["metadata"]["name"]
                if gone and owner is not None:
                    with self._lock:
                        self.history.deletions.setdefault(name, (time.time(), owner))

    def _watch_leases(self) -> None:
        listed, stream = self._stream(self._coord.list_namespaced_lease)
        for lease in listed.items:
            self._holder(lease)
        self._ready.wait()
        with _quiet():
            for event in stream:
                self._holder(event["object"])

    def _holder(self, lease: Any) -> None:
        name = lease.metadata.name
        if name not in self._leases:
            return
        who = (lease.spec.holder_identity if lease.spec else None) or ""
        with self._lock:
            seen = self.history.holders.setdefault(name, [])
            if not seen or seen[-1][1] != who:
                seen.append((time.time(), who))

    def window(self, fault: str, start: float, pools: tuple[str, ...]) -> None:
        with self._lock:
            self.history.windows.append(Window(fault, start, time.time(), pools))

    def hpa_window(self, start: float, pool: str) -> None:
        with self._lock:
            self.history.hpa_windows.append((start, time.time(), pool))

    def note(self, text: str) -> None:
        with self._lock:
            self.history.notes.append(f"{time.strftime('%H:%M:%S')} {text}")

    def stop(self) -> None:
        for w in self._watches:
            w.stop()


def _quiet() -> contextlib.suppress:
    """A watch stopped by the test ends with an exception: that is the end, not a fault."""
    return contextlib.suppress(Exception)


_DECISION = re.compile(r"^(\S+ \S+) INFO \S+ decision (.*)$")
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


def patches_from_log(text: str, identity: str) -> list[Patch]:
    """The scale patches in one controller's log (decision lines with acted=true)."""
    found = []
    for line in text.splitlines():
        match = _DECISION.match(line)
        if not match:
            continue
        fields = {k: v.strip('"') for k, v in _FIELD.findall(match[2])}
        if fields.get("acted") != "true":
            continue
        when = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        found.append(Patch(when, identity, fields["pool"].split("/")[-1],
                           int(fields["current"]), int(fields["desired"]), fields["reason"],
                           "" if fields.get("unknown") in (None, "-") else fields["unknown"]))
    return found


def decided_pools(text: str) -> set[str]:
    """Every pool a controller logged a decision for."""
    return {fields["pool"].split("/")[-1] for line in text.splitlines()
            if (m := _DECISION.match(line))
            for fields in [dict(_FIELD.findall(m[2]))] if "pool" in fields}


def task_runs(history_url: str) -> list[TaskRun]:
    """Every task execution the tasks recorded (start, and finish when it finished)."""
    client_ = redis.Redis.from_url(history_url, socket_timeout=10)
    runs: dict[tuple[str, int, str], dict[str, float]] = {}
    for raw in client_.lrange(HISTORY_KEY, 0, -1):
        entry = json.loads(raw)
        runs.setdefault((entry["id"], entry["try"], entry["pod"]), {})[entry["e"]] = entry["t"]
    return [TaskRun(task_id, attempt, pod, marks["start"], marks.get("finish"))
            for (task_id, attempt, pod), marks in runs.items() if "start" in marks]
