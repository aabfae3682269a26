"""The fault suite's invariants, checked over a recorded History.

1. No busy pod deleted: no pod was marked for deletion while a task ran on it that
   started before the mark and had not finished by then (drainDeadlineSeconds is far
   beyond the run, so no exception applies). "busy pods killed" counts such pods.
2. Replicas stayed within [min, max] of each pool.
3. No scale-down on an unknown read: no patch lowering replicas that the controller
   itself logged with an unknown input, and no drop of a pool's replicas inside a fault
   window that made its inputs unknown (after SLACK seconds for calls in flight).
4. Only the lease holder patched: each patch of a release's controller came from the
   identity holding that release's Lease at the time (TRANSITION_SLACK at hand-overs).
5. Never fight: no patch of a pool while an HPA targeted its Deployment (after
   HPA_SLACK for the controller to list it).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field

from tests.k8s.chaos.history import History, Patch

SLACK = 5.0             # a read that began before the fault may still act this long after
TRANSITION_SLACK = 1.0  # log time vs watch time around a Lease hand-over
HPA_SLACK = 15.0        # HPAs are listed every 10 s, plus a tick


@dataclass
class Report:
    busy_pods_killed: list[str] = field(default_factory=list)
    out_of_bounds: list[str] = field(default_factory=list)
    unknown_scale_downs: list[str] = field(default_factory=list)
    non_leader_patches: list[str] = field(default_factory=list)
    fights: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def violations(self) -> list[str]:
        return (self.busy_pods_killed + self.out_of_bounds + self.unknown_scale_downs
                + self.non_leader_patches + self.fights)

    def summary(self) -> str:
        lines = [f"busy pods killed: {len(self.busy_pods_killed)}",
                 f"replicas out of [min, max]: {len(self.out_of_bounds)}",
                 f"scale-downs on an unknown read: {len(self.unknown_scale_downs)}",
                 f"patches by a non-leader: {len(self.non_leader_patches)}",
                 f"patches fighting an HPA: {len(self.fights)}",
                 "counted: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))]
        return "\n".join(lines + [f"  VIOLATION {v}" for v in self.violations])


def check(history: History, *, bounds: dict[str, tuple[int, int]],
          release_of: dict[str, str]) -> Report:
    """`bounds`: Deployment -> (min, max); `release_of`: controller identity -> Lease."""
    report = Report()
    _busy_pods(history, report)
    _bounds(history, bounds, report)
    _unknown(history, report)
    _leaders(history, release_of, report)
    for start, end, pool in history.hpa_windows:
        report.fights += [f"{p.identity} patched {p.pool} {p.current}->{p.desired} at "
                          f"{p.t:.2f} while an HPA scaled it" for p in history.patches
                          if p.pool == pool and start + HPA_SLACK <= p.t <= end]
    report.counts.update(
        deletions=len(history.deletions), tasks=len(history.tasks),
        unfinished=sum(1 for t in history.tasks if t.finish is None),
        patches=len(history.patches), windows=len(history.windows),
        scale_downs=sum(1 for p in history.patches if p.desired < p.current))
    return report


def _busy_pods(history: History, report: Report) -> None:
    for pod, (marked, deployment) in sorted(history.deletions.items()):
        running = [t for t in history.tasks if t.pod == pod and t.start < marked
                   and (t.finish is None or t.finish > marked)]
        if running:
            ids = ", ".join(f"{t.id}#{t.attempt}" for t in running)
            report.busy_pods_killed.append(f"{deployment}/{pod} marked for deletion at "
                                           f"{marked:.2f} while running {ids}")


def _bounds(history: History, bounds: dict[str, tuple[int, int]], report: Report) -> None:
    for deployment, (low, high) in bounds.items():
        for when, replicas in history.replicas.get(deployment, []):
            if not low <= replicas <= high:
                report.out_of_bounds.append(f"{deployment} at {replicas} replicas ({when:.2f})")


def _unknown(history: History, report: Report) -> None:
    for patch in history.patches:
        if patch.desired < patch.current and (patch.unknown or patch.reason.startswith("hold")):
            report.unknown_scale_downs.append(
                f"{patch.identity} {patch.pool} {patch.current}->{patch.desired} with "
                f"unknown={patch.unknown} reason={patch.reason}")
    for window in history.windows:
        for deployment in window.pools:
            seen = history.replicas.get(deployment, [])
            for (_, before), (when, after) in itertools.pairwise(seen):
                if after < before and window.start + SLACK <= when <= window.end:
                    report.unknown_scale_downs.append(
                        f"{deployment} {before}->{after} at {when:.2f} during {window.fault} "
                        f"[{window.start:.2f}, {window.end:.2f}]")


def _leaders(history: History, release_of: dict[str, str], report: Report) -> None:
    for patch in history.patches:
        lease = release_of.get(patch.identity)
        if lease is None:
            continue
        if not _held(history.holders.get(lease, []), patch):
            report.non_leader_patches.append(
                f"{patch.identity} patched {patch.pool} {patch.current}->{patch.desired} at "
                f"{patch.t:.2f} without holding lease {lease}")


def _held(holders: list[tuple[float, str]], patch: Patch) -> bool:
    """Whether `patch.identity` held the Lease at the patch (or within the slack)."""
    times = [t for t, _ in holders]
    for when in (patch.t, patch.t - TRANSITION_SLACK, patch.t + TRANSITION_SLACK):
        index = bisect.bisect_right(times, when) - 1
        if index >= 0 and holders[index][1] == patch.identity:
            return True
    return False
