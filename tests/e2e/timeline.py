"""A scaling timeline sampled every second while a test runs, saved as PNG + JSON.

Each sample is one `kubectl get deployment/<workers> workerpool/<pool>` call:
ready depth and in-flight as the controller last saw them (WorkerPool status),
the replicas it asked for (Deployment spec) and the pods Ready. The picture goes
to $QSCALE_ARTIFACTS (default ./artifacts) and its path is printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.e2e.release import Release
from tests.plugins.kind import REPO_ROOT

SAMPLE_INTERVAL = 1.0


def artifacts_dir() -> Path:
    path = Path(os.environ.get("QSCALE_ARTIFACTS") or REPO_ROOT / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Sample:
    t: float              # seconds since the timeline started
    wall: float           # time.time() of the sample (to match task event stamps)
    ready: int | None
    in_flight: int | None
    desired: int | None   # Deployment spec.replicas (what the controller set)
    ready_pods: int
    pods: int             # Deployment status.replicas
    reason: str


class Timeline:
    """Context manager: samples in a thread; on exit writes the artifacts."""

    def __init__(self, release: Release, name: str) -> None:
        self.release = release
        self.name = f"e2e-{name}-{release.broker}"
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._started = 0.0
        self.png: Path | None = None

    def __enter__(self) -> Timeline:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.save()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            with contextlib.suppress(Exception):  # a missed sample must not end the timeline
                self.samples.append(self._sample())
            self._stop.wait(max(0.0, SAMPLE_INTERVAL - (time.monotonic() - began)))

    def _sample(self) -> Sample:
        rel = self.release
        doc = rel.get_json(f"deployment/{rel.worker_deployment}", f"workerpool/{rel.workerpool}")
        by_kind = {item["kind"]: item for item in doc["items"]}
        deploy, pool = by_kind["Deployment"], by_kind["WorkerPool"]
        status: dict[str, Any] = pool.get("status") or {}
        return Sample(
            t=round(time.monotonic() - self._started, 2), wall=time.time(),
            ready=status.get("readyDepth"), in_flight=status.get("inFlight"),
            desired=deploy["spec"].get("replicas"),
            ready_pods=deploy.get("status", {}).get("readyReplicas", 0) or 0,
            pods=deploy.get("status", {}).get("replicas", 0) or 0,
            reason=str(status.get("lastDecisionReason", "")),
        )

    # -- questions tests ask --

    def peak_desired(self) -> int:
        return max((s.desired or 0 for s in self.samples), default=0)

    def first_time(self, predicate: Any) -> float | None:
        return next((s.t for s in self.samples if predicate(s)), None)

    def scale_downs(self) -> list[tuple[float, int, int]]:
        """(wall time, from, to) of every drop of the Deployment's desired replicas."""
        drops = []
        for before, after in zip(self.samples, self.samples[1:], strict=False):
            if before.desired and after.desired is not None and after.desired < before.desired:
                drops.append((after.wall, before.desired, after.desired))
        return drops

    # -- artifacts --

    def save(self) -> None:
        out = artifacts_dir()
        (out / f"{self.name}.json").write_text(json.dumps([asdict(s) for s in self.samples]))
        if not self.samples:
            return
        import matplotlib  # only needed when saving

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [s.t for s in self.samples]
        fig, depth_axis = plt.subplots(figsize=(10, 4.5))
        gap = float("nan")  # the controller could not read the broker: no value, no line
        depth_axis.plot(t, [gap if s.ready is None else s.ready for s in self.samples],
                        label="ready depth", color="tab:blue")
        depth_axis.plot(t, [gap if s.in_flight is None else s.in_flight for s in self.samples],
                        label="in flight", color="tab:orange")
        depth_axis.set_xlabel("seconds")
        depth_axis.set_ylabel("tasks")
        replica_axis = depth_axis.twinx()
        replica_axis.step(t, [s.desired or 0 for s in self.samples], where="post",
                          label="replicas (desired)", color="tab:green")
        replica_axis.step(t, [s.ready_pods for s in self.samples], where="post",
                          label="pods Ready", color="tab:red", linestyle="--")
        replica_axis.set_ylabel("replicas")
        replica_axis.set_ylim(bottom=0)
        lines = depth_axis.get_legend_handles_labels()
        more = replica_axis.get_legend_handles_labels()
        depth_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper center",
                          bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
        depth_axis.set_title(f"qscale {self.name} (sampled every {SAMPLE_INTERVAL:.0f} s)")
        fig.tight_layout()
        self.png = out / f"{self.name}.png"
        fig.savefig(self.png, dpi=100)
        plt.close(fig)
        print(f"\nscaling timeline: {self.png}")
