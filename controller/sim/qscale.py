"""qscale in the simulator: the real `controller.policy.desired_replicas` on a 1 s tick.

Nothing here re-implements policy logic; it only translates the model's
ClusterView into an Observation (including pods still starting and the measured
start-up time, which a controller reads from pod creation -> Ready), carries
History between ticks, and declares the actuator's behaviour: idle pods are
removed first (pod-deletion-cost), and a busy pod is only ever drained — it keeps
its tasks until they finish.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from controller.policy import History, Observation, PolicyConfig, desired_replicas
from controller.sim.model import ClusterView, Order, Removal

# The policy's defaults (latency mode) on the pool shape the comparison uses;
# scale to zero like KEDA's default min of 0.
QSCALE_DEFAULT = PolicyConfig(min_replicas=0, max_replicas=50)


@dataclass
class QscaleScaler:
    """Adapter from the model to the pure policy."""

    policy: PolicyConfig = QSCALE_DEFAULT
    concurrency: int = 4
    name: str = "qscale"
    interval: float = 1.0
    removal: Removal = "idle-first"
    grace_seconds: float = math.inf  # drain: a busy pod is never killed
    history: History = field(default_factory=History)
    reasons: Counter[str] = field(default_factory=Counter)

    def decide(self, view: ClusterView) -> Order:
        obs = Observation(
            ok=True, ready=view.ready, in_flight=view.in_flight,
            arrival_rate=view.arrival_rate, completion_rate=view.completion_rate,
            service_time_seconds=view.service_time, busy_pods=view.busy_pods,
            starting_pods=view.starting_pods, pod_startup_seconds=view.pod_startup_seconds)
        decision = desired_replicas(obs, view.replicas, self.concurrency, self.policy,
                                    self.history, view.now)
        self.history = decision.history
        self.reasons[decision.reason] += 1
        return Order(decision.desired, decision.drain_pods)
