"""Workload traces for the simulator: arrival times plus a service time per task.

Every trace is generated from a seeded numpy Generator, so a (name, seed) pair is
one exact workload that all scalers replay. Each trace ends with a quiet tail so
every scaler gets the chance to scale in — and to be charged for not doing so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

QUIET_TAIL_SECONDS = 900.0


@dataclass(frozen=True)
class Trace:
    """One workload: sorted arrival times (s) and each task's service time (s).

    `bursts` marks the times load jumps (a burst or a spike starts), where
    burst-to-capacity is measured; empty when the trace has none.
    """

    name: str
    description: str
    duration: float
    arrivals: FloatArray
    service_times: FloatArray
    bursts: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.arrivals) != len(self.service_times):
            raise ValueError("arrivals and service_times differ in length")


def _poisson(rng: np.random.Generator, rate: Callable[[FloatArray], FloatArray],
             peak: float, start: float, end: float) -> FloatArray:
    """Non-homogeneous Poisson arrivals on [start, end) by thinning at `peak`."""
    count = rng.poisson(peak * (end - start))
    times = np.sort(rng.uniform(start, end, count))
    keep = rng.uniform(0.0, peak, count) < rate(times)
    return times[keep]


def _flat(rate: float) -> Callable[[FloatArray], FloatArray]:
    def constant(t: FloatArray) -> FloatArray:
        return np.full_like(t, rate)
    return constant


def _lognormal(rng: np.random.Generator, mean: float, sigma: float, n: int) -> FloatArray:
    """Lognormal service times with the given mean (sigma sets the tail)."""
    mu = np.log(mean) - sigma**2 / 2
    return rng.lognormal(mu, sigma, n)


def burst(seed: int) -> Trace:
    """Batch jobs: a few hundred tasks dumped at once every ~15 min, idle in between."""
    rng = np.random.default_rng([seed, 1])
    active = 5400.0
    parts = [_poisson(rng, _flat(0.02), 0.02, 0.0, active)]
    for start in np.arange(120.0, active - 300.0, 900.0) + rng.uniform(0, 120, 6):
        size = int(rng.integers(200, 600))
        parts.append(np.sort(start + rng.uniform(0.0, 5.0, size)))
    arrivals = np.sort(np.concatenate(parts))
    return Trace("burst", "batches of 200-600 tasks every ~15 min, idle between",
                 active + QUIET_TAIL_SECONDS, arrivals,
                 _lognormal(rng, 2.0, 0.6, len(arrivals)))


def diurnal(seed: int) -> Trace:
    """A compressed day: Poisson rate swinging 0.2 -> 12 tasks/s -> 0.2 over 90 min."""
    rng = np.random.default_rng([seed, 2])
    active, low, high = 5400.0, 0.2, 12.0

    def rate(t: FloatArray) -> FloatArray:
        return low + (high - low) * (1 - np.cos(2 * np.pi * t / active)) / 2

    arrivals = _poisson(rng, rate, high, 0.0, active)
    return Trace("diurnal", "Poisson rate 0.2 -> 12 -> 0.2 tasks/s over 90 min",
                 active + QUIET_TAIL_SECONDS, arrivals,
                 _lognormal(rng, 2.0, 0.6, len(arrivals)))


def spikes(seed: int) -> Trace:
    """Steady trickle (1 task/s) with random 30-90 s spikes of 20-40 tasks/s."""
    rng = np.random.default_rng([seed, 3])
    active = 5400.0
    parts = [_poisson(rng, np.ones_like, 1.0, 0.0, active)]
    start = float(rng.exponential(300.0))
    while start < active - 120.0:
        length, peak = float(rng.uniform(30, 90)), float(rng.uniform(20, 40))
        parts.append(_poisson(rng, _flat(peak), peak, start, start + length))
        start += length + float(rng.exponential(420.0)) + 60.0
    arrivals = np.sort(np.concatenate(parts))
    return Trace("spikes", "1 task/s baseline with random 30-90 s spikes of 20-40 tasks/s",
                 active + QUIET_TAIL_SECONDS, arrivals,
                 _lognormal(rng, 2.0, 0.6, len(arrivals)))


def long_tail(seed: int) -> Trace:
    """On/off load of long, heavy-tailed tasks (mean 30 s, some run many minutes)."""
    rng = np.random.default_rng([seed, 4])
    active, on, off = 5400.0, 1200.0, 600.0

    def rate(t: FloatArray) -> FloatArray:
        return np.where((t % (on + off)) < on, 0.5, 0.0)

    arrivals = _poisson(rng, rate, 0.5, 0.0, active)
    return Trace("long_tail", "20 min on (0.5 tasks/s) / 10 min off; lognormal mean 30 s, "
                 "sigma 1.2", active + QUIET_TAIL_SECONDS, arrivals,
                 _lognormal(rng, 30.0, 1.2, len(arrivals)))


TRACES: dict[str, Callable[[int], Trace]] = {
    "burst": burst, "diurnal": diurnal, "spikes": spikes, "long_tail": long_tail,
}


def make_trace(name: str, seed: int) -> Trace:
    """Build the named trace; unknown names raise with the list of known ones."""
    try:
        factory = TRACES[name]
    except KeyError:
        raise ValueError(f"unknown trace {name!r}; known: {', '.join(TRACES)}") from None
    return factory(seed)
