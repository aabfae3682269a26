"""What the cluster did, recorded from the cluster itself while a trace replays.

* Pods of every pool (a watch): first seen (creation), scheduled, container running,
  Ready, deletion requested, gone. Times are the host's clock when the watch delivered
  the change (sub-second; the API's own timestamps have 1 s resolution), and the kind
  node shares that clock.
* Deployments (a watch): every change of spec.replicas, i.e. every scale decision that
  reached the API, whoever made it (qscale's controller or KEDA's HPA).
* Queue depth (a 1 s sampler): ready and in flight per queue, from the broker.

Each watch re-lists after a broken stream, so a gap never loses a pod: one that vanished
meanwhile is marked gone at the re-list.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from worker.brokers import open_broker


def _api_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


@dataclass
class PodRecord:
    name: str
    pool: str
    created: float                 # first seen by the watch (or the API's stamp if older)
    created_api: float | None = None
    scheduled: float | None = None
    running: float | None = None   # container state running
    ready: float | None = None
    terminating: float | None = None
    gone: float | None = None

    def observe(self, pod: dict[str, Any], now: float) -> None:
        status = pod.get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if self.scheduled is None and conds.get("PodScheduled") == "True":
            self.scheduled = now
        states = [c.get("state") or {} for c in status.get("containerStatuses") or []]
        if self.running is None and states and all("running" in s for s in states):
            self.running = now
        if self.ready is None and conds.get("Ready") == "True":
            self.ready = now
        if self.terminating is None and pod["metadata"].get("deletionTimestamp"):
            self.terminating = now


class _Watch(threading.Thread):
    """List + watch one kind in one namespace, calling `seen(obj, now)` / `gone(name, now)`."""

    def __init__(self, api: Any, kind: str, ns: str, selector: str,
                 seen: Callable[[dict[str, Any], float], None],
                 gone: Callable[[str, float], None]) -> None:
        super().__init__(daemon=True, name=f"watch-{kind}")
        from kubernetes import client, watch
        if kind == "pods":
            self._list = client.CoreV1Api(api).list_namespaced_pod
        else:
            self._list = client.AppsV1Api(api).list_namespaced_deployment
        self._watch_cls = watch.Watch
        self._api = api
        self.ns, self.selector, self.seen, self.gone = ns, selector, seen, gone
        self.stopped = threading.Event()
        self.listed = threading.Event()
        self._watch: Any = None
        self.known: set[str] = set()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self._round()
            except Exception:  # a broken stream: re-list and go on
                if self.stopped.wait(1.0):
                    return

    def _round(self) -> None:
        listed = self._list(self.ns, label_selector=self.selector, _preload_content=False)
        doc = json.loads(listed.data)
        now = time.time()
        names = set()
        for item in doc["items"]:
            names.add(item["metadata"]["name"])
            self.seen(item, now)
        for name in self.known - names:
            self.gone(name, now)
        self.known = names
        self.listed.set()
        self._watch = self._watch_cls()
        for event in self._watch.stream(self._list, self.ns, label_selector=self.selector,
                                        resource_version=doc["metadata"]["resourceVersion"],
                                        timeout_seconds=300):
            now = time.time()
            obj = event["raw_object"]
            name = obj.get("metadata", {}).get("name")
            if event["type"] == "ERROR" or not name:
                return
            if event["type"] == "DELETED":
                self.known.discard(name)
                self.gone(name, now)
            else:
                self.known.add(name)
                self.seen(obj, now)
            if self.stopped.is_set():
                return

    def stop(self) -> None:
        self.stopped.set()
        if self._watch is not None:
            self._watch.stop()


@dataclass
class ClusterRecorder:
    """Pods and Deployments of the worker pools in one namespace."""

    api: Any
    ns: str
    pods: dict[str, PodRecord] = field(default_factory=dict)
    replicas: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[_Watch] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [
            _Watch(self.api, "pods", self.ns, "qscale.io/pool", self._pod_seen, self._pod_gone),
            _Watch(self.api, "deployments", self.ns, "app.kubernetes.io/component=worker",
                   self._deploy_seen, lambda name, now: None)]
        for t in self._threads:
            t.start()
        for t in self._threads:
            if not t.listed.wait(60):
                raise RuntimeError(f"{t.name} did not list within 60 s")

    def stop(self) -> None:
        for t in self._threads:
            t.stop()

    def _pod_seen(self, pod: dict[str, Any], now: float) -> None:
        meta = pod["metadata"]
        with self._lock:
            rec = self.pods.get(meta["name"])
            if rec is None:
                api = _api_time(meta.get("creationTimestamp"))
                # Older than the watch (listed at start): the API's stamp is the truth.
                created = api if api is not None and api < now - 2.0 else now
                rec = self.pods[meta["name"]] = PodRecord(
                    meta["name"], (meta.get("labels") or {}).get("qscale.io/pool", "?"),
                    created, api)
            rec.observe(pod, now)

    def _pod_gone(self, name: str, now: float) -> None:
        with self._lock:
            rec = self.pods.get(name)
            if rec is not None and rec.gone is None:
                rec.gone = now

    def _deploy_seen(self, deploy: dict[str, Any], now: float) -> None:
        pool = (deploy["metadata"].get("labels") or {}).get("qscale.io/pool")
        if pool is None:
            return
        want = int((deploy.get("spec") or {}).get("replicas") or 0)
        with self._lock:
            series = self.replicas.setdefault(pool, [])
            if not series or series[-1][1] != want:
                series.append((now, want))

    def live_pods(self, pool: str) -> int:
        with self._lock:
            return sum(1 for p in self.pods.values() if p.pool == pool and p.gone is None)


class DepthSampler(threading.Thread):
    """Every `period` s: (t, ready, in_flight) per queue, from the broker's own counts."""

    def __init__(self, broker_url: str, management_url: str, queues: list[str],
                 period: float = 1.0) -> None:
        super().__init__(daemon=True, name="depth")
        self.broker_url, self.management_url = broker_url, management_url
        self.queues, self.period = queues, period
        self.samples: dict[str, list[tuple[float, int, int]]] = {q: [] for q in queues}
        self.stopped = threading.Event()

    def run(self) -> None:
        if self.management_url:
            read = self._rabbitmq
        else:
            broker = open_broker(self.broker_url)
            def read(queue: str) -> tuple[int, int]:
                stats = broker.stats(queue)
                return stats.ready, stats.in_flight or 0
        while not self.stopped.wait(self.period):
            for q in self.queues:
                with contextlib.suppress(Exception):
                    ready, flying = read(q)
                    self.samples[q].append((time.time(), ready, flying))

    def _rabbitmq(self, queue: str) -> tuple[int, int]:
        parts = urlsplit(self.management_url)
        req = urllib.request.Request(
            f"{parts.scheme}://{parts.hostname}:{parts.port}/api/queues/%2F/{quote(queue)}")
        creds = f"{parts.username}:{parts.password}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(creds).decode())
        with urllib.request.urlopen(req, timeout=2) as resp:
            doc = json.loads(resp.read())
        return int(doc.get("messages_ready", 0)), int(doc.get("messages_unacknowledged", 0))

    def stop(self) -> None:
        self.stopped.set()
