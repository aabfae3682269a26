"""The scaling policy: metrics in, desired replica count out — pure.

`desired_replicas` is a pure function (no I/O, no clock reads) so every branch can
be tested with plain values and replayed in the simulator (`controller.sim`). The
caller owns the clock and carries `History` from one tick to the next.

Why it differs from KEDA + HPA, each on purpose:

* Demand counts tasks *in flight* as well as ready ones (KEDA's Redis list
  scaler sees only the list length, so a pool busy with claimed work looks idle).
* Scale-up jumps straight to the need in one decision (HPA adds at most x2 or +4
  pods per 15 s); `max_step_up` can cap it when a cluster cannot absorb bursts.
* Scale-down waits for a short stabilization window (15 s base, not 300 s) and
  never goes below the busy pods: the actuator removes idle pods first, and
  `Decision.drain_pods` says how many busy pods to stop feeding so they can
  leave once idle — a worker holding a task is never killed.
* Anti-flap: a small step up soon after a scale-down lengthens the window for
  *small* steps (up to 2**flap_backoff_max times) until a scale-down sticks.
* A failed metric read holds the current size, never scales to zero, and
  restarts the idle clock (unknown load is not idleness); `fallback` applies only
  after `fallback_failure_threshold` failed reads in a row, and moves through the
  same window and step limits as any other decision.
* Unknown is not zero: an input a scale-down rests on that could not be read (the
  pod list, in-flight, a pod's /state; `Observation.unknown`) holds scale-downs,
  while scale-ups stay allowed.
* Total: every input the CRD and /state can carry decides (needs are clamped
  before rounding, config values are bounded in controller.policyconfig).
* Latency mode (the default) knows a new pod consumes only after its start-up
  time d and picks the *fewest* pods that start the backlog within the target
  wait. The same d prices idle capacity: after a burst (queue empty for d, need
  halved) an idle pod is kept at most d before scale-in or scale-to-zero —
  longer costs more pod-seconds than a restart, which still meets the target
  when d <= target.
* Opt-in batching (`batch_seconds`): a trickle too small to keep a pod busy
  waits at zero replicas for a bounded time and runs in batches, the last pod
  drained (never killed) once its queue is empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from controller.policyconfig import Mode, OnError, PolicyConfig
from controller.stabilization import (
    decayed_flap_level,
    flap_escalation,
    in_window,
    step_toward,
)

__all__ = ["BATCH_MAX_NEED", "Decision", "History", "Mode", "Observation", "OnError",
           "PolicyConfig", "desired_replicas"]

Details = Mapping[str, float | int | str]

# Batching applies while the steady load needs at most this many pods: above it a
# pod is busy enough that stopping and restarting it saves little.
BATCH_MAX_NEED = 0.75


@dataclass(frozen=True)
class Observation:
    """One reading of the pool's queues and pods; `ok=False` means the read failed."""

    ok: bool
    ready: int | None = None                  # ready depth (sum over the pool's queues)
    in_flight: int | None = None              # claimed/unacked, not finished
    arrival_rate: float | None = None         # tasks/s entering the queues
    completion_rate: float | None = None      # tasks/s finished
    service_time_seconds: float | None = None  # mean service time per task
    busy_pods: int = 0                        # pods running >= 1 task (lost ones apart)
    starting_pods: int = 0                    # pods created but not consuming yet
    # Pods on a node that stopped reporting (marked NotReady by the node controller):
    # replicas that supply nothing until their node is back or they are evicted.
    lost_pods: int = 0
    pod_startup_seconds: float | None = None  # measured creation -> Ready (None: config's)
    draining_deadline_passed: bool = False    # busy pods may be removed
    error: str | None = None                  # why the read failed (for the reason/details)
    # Inputs a scale-down rests on that could not be read ("pods", "in-flight",
    # "pod-state", ...): unknown is not zero, so any of them holds scale-downs.
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True)
class History:
    """State carried between ticks by the caller; each Decision returns the next one."""

    recommendations: tuple[tuple[float, int], ...] = ()  # (time, recommendation) in window
    last_active_at: float | None = None       # last time ready + in_flight > 0 was seen
    last_scale_at: float | None = None
    flap_level: int = 0                       # scale-down window is base * 2**flap_level
    flap_level_at: float | None = None        # when flap_level last changed
    last_scale_down_at: float | None = None   # last scale-down to >= 1 replica
    last_queued_at: float | None = None       # last time ready > 0 was seen
    queued_since: float | None = None         # start of the current ready > 0 spell
    batch_releasing: bool = False             # batching let the last pod go (until gone)
    failed_reads: int = 0                     # consecutive failed metric reads


@dataclass(frozen=True)
class Decision:
    """What to set the pool to, why, and the numbers behind it."""

    desired: int
    reason: str
    history: History
    raw_desired: int                          # before stabilization, limits and floors
    details: Details = field(default_factory=dict)
    # Busy pods the actuator should ask to stop claiming work: the busy-pod floor
    # held `desired` above what the load needs, and those pods can only go once idle.
    drain_pods: int = 0


def desired_replicas(
        obs: Observation, current: int, concurrency: int, config: PolicyConfig,
        history: History, now: float) -> Decision:
    """Decide the replica count for one tick. Pure: same inputs, same Decision.

    Pods lost with their node are replicas that work for nobody: the decision is made
    for the pods that can work (min, max and every other rule apply to them) and the
    lost ones are kept on top, so they are replaced at once instead of after the
    eviction timeout (5 min by default). They leave when their node comes back (then
    they count again) or when scale-in or eviction removes them (the ReplicaSet
    deletes not-Ready pods first)."""
    # At most maxReplicas on top: a control plane that loses every node must not double
    # the pool without bound.
    lost = min(max(obs.lost_pods, 0), max(current, 0), config.max_replicas)
    if lost == 0:
        return _decide(obs, current, concurrency, config, history, now)
    working = replace(obs, lost_pods=0)
    decision = _decide(working, current - lost, concurrency, config, history, now)
    return replace(decision, desired=decision.desired + lost,
                   raw_desired=decision.raw_desired + lost,
                   details={**decision.details, "lost_pods": lost})


def _decide(
        obs: Observation, current: int, concurrency: int, config: PolicyConfig,
        history: History, now: float) -> Decision:
    """The decision for `current` pods that can all work.

    Order: demand (mode) -> 0->1 activation -> tolerance band -> up at once / down
    to the window maximum -> idle cooldown before zero -> min/max clamp -> busy-pod
    floor -> hold on unknown inputs. The last step that changed the number names the
    reason. Total: any finite inputs decide, none raises."""
    if current < 0:
        raise ValueError(f"current must be >= 0, got {current}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not obs.ok or obs.ready is None:
        return _on_metrics_error(obs, current, config, history, now)

    ready = max(obs.ready, 0)
    in_flight = max(obs.in_flight or 0, 0)
    work = ready + in_flight
    need, mode_used = _need(obs, ready, in_flight, current, concurrency, config)
    # Clamp before rounding: a tiny targetPerSlot or a huge service time gives inf. The
    # cap is far above max (x1000) so the tolerance band never mistakes it for steady.
    need = _bounded(need, 1000.0 * (max(config.max_replicas, current) + 1))
    raw = math.ceil(need - 1e-9) if need > 0 else 0
    if work > 0:
        raw = max(raw, 1)
    startup = _startup_seconds(obs, config)
    details: dict[str, float | int | str] = {
        "ready": ready, "in_flight": in_flight, "work": work, "need": round(need, 3),
        "mode": mode_used, "current": current, "concurrency": concurrency,
        "busy_pods": obs.busy_pods, "startup_seconds": startup}
    in_flight_unknown = "in-flight" in obs.unknown  # unknown load is not idleness
    last_active = _last_active(history, work or int(in_flight_unknown), current, now)
    reason_cause = mode_used

    # 0 -> 1 activation: a replica appears only when the work passes the threshold.
    if current == 0 and work <= config.activation_threshold:
        raw = 0
        reason_cause = "below-activation"

    # Tolerance: a small relative change is noise, keep the current size.
    proposal = raw
    if current > 0 and raw > 0 and abs(need / current - 1.0) <= config.tolerance:
        proposal = current
        if raw != current:
            details["within_tolerance"] = 1

    level, level_at = decayed_flap_level(history, config, now)
    window = config.window_seconds * (1 << level)
    details["window_seconds"] = window
    recs = (*in_window(history.recommendations, now, window), (now, proposal))
    details["cause"] = reason_cause
    # Latency mode, queue empty for a start-up time, at most half the pods needed and
    # no recent flap: a burst is over. Hold its idle pods for one start-up time.
    # Only an automatic window is shortened; a window the user set is honoured.
    queued_at = now if ready > 0 else history.last_queued_at
    base_window = config.window_seconds
    if (config.scale_down_window_seconds is None and mode_used == "latency"
            and 2 * proposal <= current and level == 0
            and (queued_at is None or now - queued_at >= startup)):
        base_window = min(base_window, startup)
    desired, reason = step_toward(proposal, current, recs, config, details,
                                  base_cutoff=now - base_window)

    # Scale to zero only after a full cooldown with nothing ready or in flight.
    if desired == 0 and current > 0 and config.min_replicas == 0:
        idle_for = math.inf if last_active is None else now - last_active
        details["idle_seconds"] = round(idle_for, 3) if math.isfinite(idle_for) else -1
        # Automatic cooldown in latency mode: a cold start may still meet the target.
        cooldown = config.cooldown
        if (config.cooldown_seconds is None and mode_used == "latency"
                and startup <= config.target_wait_seconds):
            cooldown = min(cooldown, startup)
        details["cooldown_seconds"] = cooldown
        if work == 0 and not in_flight_unknown and idle_for >= cooldown:
            reason = "scale-to-zero:cooldown"
        else:
            desired = 1
            reason = "hold:cooldown" if current == 1 else "scale-down:keep-one-for-cooldown"

    spell_start = history.queued_since if history.queued_since is not None else now
    queued_since = spell_start if ready > 0 else None
    desired, reason, releasing = _batch(desired, reason, obs, ready, current, concurrency,
                                         config, mode_used, queued_since, history, now, details)
    desired, reason = _clamp(desired, reason, config)
    wanted = desired
    desired, reason = _busy_floor(desired, reason, current, obs)
    if obs.unknown:  # unknown is not zero: no scale-down and no draining on it
        details["unknown"] = ",".join(obs.unknown)
        if desired < current:
            desired, reason, releasing = current, f"hold:unknown-{obs.unknown[0]}", False
        wanted = desired
    level, level_at = flap_escalation(history, config, current, desired, now, level, level_at)
    details["flap_level"] = level
    next_history = History(
        recommendations=recs, last_active_at=last_active,
        last_scale_at=now if desired != current else history.last_scale_at,
        flap_level=level, flap_level_at=level_at,
        last_scale_down_at=now if 1 <= desired < current else history.last_scale_down_at,
        last_queued_at=queued_at, queued_since=queued_since, batch_releasing=releasing,
        failed_reads=0)
    details["proposal"] = proposal
    return Decision(desired, reason, next_history, raw, details, drain_pods=desired - wanted)


def _need(obs: Observation, ready: int, in_flight: int, current: int, concurrency: int,
          config: PolicyConfig) -> tuple[float, str]:
    """Fractional replicas the work calls for, and which formula produced it."""
    service = obs.service_time_seconds
    if config.mode == "latency":
        rate = obs.arrival_rate
        if (rate is not None and service is not None and math.isfinite(rate)
                and math.isfinite(service) and service > 0):
            return _latency_need(obs, ready, in_flight, current, concurrency, config,
                                 max(rate, 0.0), service), "latency"
        # Rates or service time unknown (nothing finished yet) or not finite.
        mode = "queue-fallback"
    else:
        mode = "queue"
    return (ready + in_flight) / (config.target_per_slot * concurrency), mode


def _latency_need(obs: Observation, ready: int, in_flight: int, current: int,
                  concurrency: int, config: PolicyConfig, rate: float,
                  service: float) -> float:
    """The fewest pods that keep up with arrivals and start the backlog within the target.

    Little's law sizes the stream; with nothing queued the busy slots bound it (a
    trailing rate still counting a served burst must not hold pods). A consuming
    pod's slot starts `wait / service` backlog tasks in time; a new or starting
    one only `(max(wait - d, 0) + service) / service` (one at d, then one per
    service time), so a target at or below d costs a slot per unreached task.
    """
    wait, steady = config.target_wait_seconds, rate * service / concurrency
    if ready == 0:
        steady = min(steady, in_flight / concurrency)
    drain = ready * service / (concurrency * wait)
    starting = min(max(obs.starting_pods, 0), current)
    spare = max(current - starting - steady, 0.0)
    if drain <= spare:
        return steady + drain
    beyond_running = ready - spare * concurrency * wait / service
    per_new_pod = concurrency * (max(wait - _startup_seconds(obs, config), 0.0)
                                 + service) / service
    return steady + spare + beyond_running / per_new_pod


def _startup_seconds(obs: Observation, config: PolicyConfig) -> float:
    """The measured pod start-up time when it is usable, else the configured one."""
    measured = obs.pod_startup_seconds
    usable = measured is not None and math.isfinite(measured) and measured >= 0
    return measured if usable and measured is not None else config.pod_startup_seconds


def _last_active(history: History, work: int, current: int, now: float) -> float | None:
    """Work seen now refreshes the idle clock; a running pool with no memory starts it."""
    if work > 0:
        return now
    if history.last_active_at is None and current > 0:
        return now  # e.g. a controller restart: do not scale to zero at once
    return history.last_active_at


def _batch(desired: int, reason: str, obs: Observation, ready: int, current: int,
           concurrency: int, config: PolicyConfig, mode_used: str,
           queued_since: float | None, history: History, now: float,
           details: dict[str, float | int | str]) -> tuple[int, str, bool]:
    """Batching a trickle (opt-in, `batch_seconds`): one pod mostly idle costs more
    than starting it now and then for a batch.

    At zero replicas, queued work waits until its oldest task has waited
    `batch_seconds`; with a pod up, the pod is let go once the queue is empty, and
    stays let go (drained: it finishes its running tasks, claims nothing new) until
    it is gone, so new arrivals queue for the next batch. The busy-pod floor still
    applies: a pod holding a task is never removed, only drained. Returns the
    desired count, its reason and the next History.batch_releasing."""
    rate, service = obs.arrival_rate, obs.service_time_seconds
    trickle = (config.batch_seconds > 0 and config.min_replicas == 0
               and mode_used == "latency" and rate is not None and service is not None
               and rate * service / concurrency <= BATCH_MAX_NEED
               and obs.starting_pods == 0 and desired <= 1)
    if not trickle:
        return desired, reason, False
    if current == 0:
        waited = 0.0 if queued_since is None else now - queued_since
        details["batch_waited_seconds"] = round(waited, 3)
        if desired == 1 and waited < config.batch_seconds:
            return 0, "hold:batching", False
        return desired, reason, False
    if ready == 0 or history.batch_releasing:
        return 0, "scale-to-zero:batching", True
    return desired, reason, False


def _clamp(desired: int, reason: str, config: PolicyConfig) -> tuple[int, str]:
    if desired > config.max_replicas:
        return config.max_replicas, "clamp:max"
    if desired < config.min_replicas:
        return config.min_replicas, "clamp:min"
    return desired, reason


def _busy_floor(desired: int, reason: str, current: int, obs: Observation) -> tuple[int, str]:
    """Never below the pods holding tasks (unless their drain deadline passed); capped
    at `current`, so the floor can only stop a scale-down, never cause a scale-up."""
    floor = min(max(obs.busy_pods, 0), current)
    if not obs.draining_deadline_passed and desired < floor:
        return floor, "floor:busy-pods"
    return desired, reason


def _bounded(value: float, cap: float) -> float:
    """`value` in [0, cap]; NaN (from inf - inf or 0 * inf) counts as the cap."""
    if math.isnan(value):
        return cap
    return min(max(value, 0.0), cap)


def _on_metrics_error(obs: Observation, current: int, config: PolicyConfig,
                      history: History, now: float) -> Decision:
    """A failed read holds; after `fallback_failure_threshold` failures in a row,
    `onError: fallback` proposes `fallback_replicas`, which moves through the same
    window and step limits as any proposal. It never scales to zero on missing data."""
    failures = history.failed_reads + 1
    details: dict[str, float | int | str] = {
        "current": current, "failed_reads": failures,
        "error": obs.error or ("ready depth missing" if obs.ok else "read failed")}
    level = min(history.flap_level, config.flap_backoff_max)
    recs = in_window(history.recommendations, now, config.window_seconds * (1 << level))
    if (config.on_error == "fallback" and config.fallback_replicas is not None
            and failures >= config.fallback_failure_threshold):
        proposal = min(max(config.fallback_replicas, config.min_replicas, 1),
                       config.max_replicas)
        recs = (*recs, (now, proposal))
        details.update(cause="fallback", fallback=proposal)
        desired, _ = step_toward(proposal, current, recs, config, details,
                                 base_cutoff=now - config.window_seconds)
        reason = ("fallback:stabilizing" if desired == current != proposal
                  else "fallback:metrics-error")
    else:
        desired, reason = current, "hold:metrics-error"
        recs = (*recs, (now, desired))
    floor = min(max(obs.busy_pods, 0), current)
    if desired < floor and not obs.draining_deadline_passed:
        desired, reason = floor, "floor:busy-pods"
    if obs.unknown and desired < current:
        details["unknown"] = ",".join(obs.unknown)
        desired, reason = current, f"hold:unknown-{obs.unknown[0]}"
    # Unknown load counts as activity, so the idle cooldown restarts after the outage.
    next_history = replace(
        history, recommendations=recs, failed_reads=failures,
        last_active_at=now if current > 0 else history.last_active_at,
        last_scale_at=now if desired != current else history.last_scale_at,
        last_scale_down_at=now if 1 <= desired < current else history.last_scale_down_at)
    return Decision(desired, reason, next_history, desired, details)
