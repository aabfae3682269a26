"""How a pool should be sized: `PolicyConfig`, its bounds and its automatic defaults.

Every numeric setting has a bound, and the WorkerPool CRD, the chart's schema and
the controller's environment settings state the same ones (tests/unit compares
them), so nothing a user can write makes `desired_replicas` overflow: the policy is
total over this whole domain.

`scale_down_window_seconds` and `cooldown_seconds` are None unless the user sets
them: "automatic" (15 s and 60 s, and in latency mode shortened to the pod start-up
time once a burst is over, the fast default). A number the user writes is honoured
as given, never shortened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Mode = Literal["queue", "latency"]
OnError = Literal["hold", "fallback"]

AUTO_WINDOW_SECONDS = 15.0    # scale-down window when unset
AUTO_COOLDOWN_SECONDS = 60.0  # idle time before 1 -> 0 when unset
MAX_REPLICAS_BOUND = 10_000
SECONDS_BOUND = 86_400.0      # one day: any window, cooldown, wait or start-up time
FLAP_BACKOFF_BOUND = 16

# (low, high, low is exclusive) per numeric field; None values are "unset".
BOUNDS: dict[str, tuple[float, float, bool]] = {
    "min_replicas": (0, MAX_REPLICAS_BOUND, False),
    "max_replicas": (1, MAX_REPLICAS_BOUND, False),
    "target_per_slot": (0.0, 1e6, True),
    "target_wait_seconds": (0.0, SECONDS_BOUND, True),
    "activation_threshold": (0, 10**9, False),
    "tolerance": (0.0, 0.99, False),
    "max_step_up": (1, MAX_REPLICAS_BOUND, False),
    "scale_down_window_seconds": (0.0, SECONDS_BOUND, False),
    "scale_down_step": (1, MAX_REPLICAS_BOUND, False),
    "flap_backoff_max": (0, FLAP_BACKOFF_BOUND, False),
    "cooldown_seconds": (0.0, SECONDS_BOUND, False),
    "fallback_replicas": (1, MAX_REPLICAS_BOUND, False),
    "fallback_failure_threshold": (1, 1000, False),
    "pod_startup_seconds": (0.0, SECONDS_BOUND, False),
    "batch_seconds": (0.0, SECONDS_BOUND, False),
}


@dataclass(frozen=True)
class PolicyConfig:
    """How a worker pool should be sized; validated on construction."""

    mode: Mode = "latency"                    # falls back to queue without rates
    min_replicas: int = 1                     # 0 allowed (scale to zero)
    max_replicas: int = 10
    target_per_slot: float = 1.0              # queue mode: (ready + in_flight) per slot
    # Latency mode: queue wait to stay under; well above pod start-up, or every
    # task the running pods cannot start in time needs a slot of its own.
    target_wait_seconds: float = 30.0
    activation_threshold: int = 0             # 0 -> 1 only when ready + in_flight > this
    tolerance: float = 0.1                    # ignore changes within ±10% of current
    max_step_up: int | None = None            # None = jump straight to the need
    # Scale down to the window's highest recommendation. None = automatic: 15 s, and
    # in latency mode one pod start-up time once a burst is over. A number is honoured.
    scale_down_window_seconds: float | None = None
    scale_down_step: int | None = None        # max replicas removed per decision
    # Anti-flap: a small scale-up soon after a scale-down lengthens the
    # window for small steps, up to base * 2**this (0 disables).
    flap_backoff_max: int = 4
    # Idle this long before 1 -> 0. None = automatic: 60 s, and in latency mode one
    # start-up time when a cold start still meets the target. A number is honoured.
    cooldown_seconds: float | None = None
    on_error: OnError = "hold"
    fallback_replicas: int | None = None
    # Consecutive failed reads before `fallback` applies (KEDA's failureThreshold).
    fallback_failure_threshold: int = 3
    # Pod creation -> consuming, used when the Observation carries no measured value.
    pod_startup_seconds: float = 10.0
    # Latency mode with min_replicas 0: a trickle (steady need <= BATCH_MAX_NEED pods)
    # may wait this long at zero replicas before a pod starts, and the last pod is
    # released (drained) as soon as nothing is queued. 0 disables batching.
    batch_seconds: float = 0.0

    def __post_init__(self) -> None:
        problems = config_problems(self)
        if problems:
            raise ValueError("invalid PolicyConfig: " + "; ".join(problems))

    @property
    def window_seconds(self) -> float:
        """The base scale-down window in force (the automatic one when unset)."""
        value = self.scale_down_window_seconds
        return AUTO_WINDOW_SECONDS if value is None else value

    @property
    def cooldown(self) -> float:
        """The idle cooldown before 1 -> 0 (the automatic one when unset)."""
        return AUTO_COOLDOWN_SECONDS if self.cooldown_seconds is None else self.cooldown_seconds


def _out_of_bounds(name: str, value: object) -> str | None:
    low, high, exclusive = BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"{name} must be a finite number, got {value}"
    if (value <= low if exclusive else value < low) or value > high:
        side = ">" if exclusive else ">="
        return f"{name} must be {side} {low:g} and <= {high:g}, got {value!r}"
    return None


def config_problems(cfg: PolicyConfig) -> list[str]:
    """Every reason `cfg` is unusable (empty when it is fine)."""
    problems = [problem for name in BOUNDS
                if (value := getattr(cfg, name)) is not None
                and (problem := _out_of_bounds(name, value)) is not None]
    if cfg.mode not in ("queue", "latency"):
        problems.append(f"mode must be 'queue' or 'latency', got {cfg.mode!r}")
    if cfg.on_error not in ("hold", "fallback"):
        problems.append(f"on_error must be 'hold' or 'fallback', got {cfg.on_error!r}")
    if cfg.max_replicas < max(cfg.min_replicas, 1):
        problems.append(f"max_replicas must be >= max(min_replicas, 1), got "
                        f"{cfg.max_replicas!r}")
    if cfg.on_error == "fallback" and (cfg.fallback_replicas is None
                                       or cfg.fallback_replicas < 1):
        problems.append("on_error='fallback' needs fallback_replicas >= 1 "
                        "(an error must never scale to zero)")
    return problems
