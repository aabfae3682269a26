"""Leader election on a coordination.k8s.io/v1 Lease: one controller replica acts.

The holder renews every `renew_seconds`; a standby takes over once it has seen
the lease unchanged for `duration_seconds` (judged by its own clock, so skew
between nodes does not matter), or at once when the holder released it. A leader
that cannot renew before `renew_deadline` steps down immediately, and a leader
told it lost the lease (another holder) stops at once. Release on shutdown
empties the holder so a standby need not wait out the lease.

The Lease itself is part of the install (the chart and k8s/ ship it), so the
controller only reads and replaces that one named Lease: its Role grants get and
update on it by `resourceNames`, and no create (which RBAC cannot restrict by name).
A missing Lease is logged as an error and nobody leads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.kubeapi import KubeApi, micro_time

log = logging.getLogger(__name__)


class LeaderElector:
    """Acquires and renews one Lease in a background thread; `is_leader()` says who acts."""

    def __init__(self, api: KubeApi, *, name: str, namespace: str,
                 identity: str, duration_seconds: float = 15.0, renew_seconds: float = 5.0,
                 on_change: Callable[[bool], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.api, self.name, self.namespace = api, name, namespace
        self.identity = identity
        self.duration = duration_seconds
        self.renew = renew_seconds
        # Step down if renewals keep failing for this long, well before others may take over.
        self.renew_deadline = max(renew_seconds, duration_seconds * 2 / 3)
        self._on_change = on_change
        self._clock = monotonic
        self._leader = threading.Event()
        self._stop = threading.Event()
        self._last_renew = 0.0
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True, name="leader-election")
        self.last_round = monotonic()  # when the election loop last ran (for /healthz)

    def is_leader(self) -> bool:
        if self._leader.is_set() and self._clock() - self._last_renew > self.renew_deadline:
            self._set_leader(False, "renew deadline passed")
        return self._leader.is_set()

    def start(self) -> LeaderElector:
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; release the lease if held so a standby takes over at once."""
        self._stop.set()
        # Do not wait out a slow renewal: a write still in flight either lands before the
        # release reads the lease, or fails on the resourceVersion the release changed.
        self._thread.join(timeout=1)
        was_leader = self._leader.is_set()
        self._set_leader(False, "shutting down")
        if release and was_leader:
            self.release()

    def _set_leader(self, leader: bool, why: str) -> None:
        if leader == self._leader.is_set():
            return
        if leader:
            self._leader.set()
        else:
            self._leader.clear()
        log.info("leader=%s identity=%s lease=%s/%s reason=%r", leader, self.identity,
                 self.namespace, self.name, why)
        if self._on_change is not None:
            self._on_change(leader)

    def stalled(self) -> bool:
        """The election thread has not run a round for three renew periods (+ timeouts)."""
        return self._clock() - self.last_round > 3 * self.renew + 30

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_round = self._clock()
            try:
                self.try_acquire_or_renew()
            except Exception as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            self.is_leader()  # applies the renew deadline
            wait = self.renew if self._leader.is_set() else min(self.renew, 1.0)
            self._stop.wait(wait)

    def try_acquire_or_renew(self) -> bool:
        """One round of the election; returns whether this replica now holds the lease."""
        now = micro_time()
        try:
            lease = self.api.read_lease(self.namespace, self.name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            log.error("lease %s/%s does not exist: create it (the chart and k8s/ ship it); "
                      "no replica leads until it does", self.namespace, self.name)
            self._set_leader(False, "lease missing")
            return False
        spec: dict[str, Any] = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime")))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        held_by_me = holder == self.identity
        expired = self._clock() - self._observed_at > float(
            spec.get("leaseDurationSeconds") or self.duration)
        if holder and not held_by_me and not expired:
            self._set_leader(False, f"held by {holder}")
            return False
        if self._stop.is_set():  # shutting down: never (re)acquire
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if held_by_me else 1)
        acquired = spec.get("acquireTime") if held_by_me and spec.get("acquireTime") else now
        lease["spec"] = self._spec(now, acquired=str(acquired), transitions=transitions)
        try:
            self.api.replace_lease(self.namespace, self.name, lease)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote first: they lead
                self._set_leader(False, "lost update race")
                return False
            raise
        self._won()
        return True

    def _spec(self, now: str, *, acquired: str, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.duration)),
                "acquireTime": acquired, "renewTime": now, "leaseTransitions": transitions}

    def _won(self) -> None:
        self._last_renew = self._clock()
        self._set_leader(True, "acquired lease")

    def release(self) -> None:
        """Empty the holder if it is still us (best effort)."""
        try:
            lease = self.api.read_lease(self.namespace, self.name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.pop("holderIdentity", None)
            spec["leaseDurationSeconds"] = 1
            spec["renewTime"] = micro_time()
            lease["spec"] = spec
            self.api.replace_lease(self.namespace, self.name, lease)
            log.info("released lease %s/%s", self.namespace, self.name)
        except Exception as exc:
            log.warning("releasing lease %s/%s failed: %s", self.namespace, self.name, exc)
