"""KEDA + HPA emulation: a Redis list scaler driving a HorizontalPodAutoscaler.

Two control loops, as in a cluster:

* KEDA's operator polls the scaler every `polling_interval`. It alone moves the
  Deployment between 0 and 1: to `max(min_replica_count, 1)` when the list length
  exceeds `activation_list_length`, and to 0 after `cooldown_period` without an
  active poll. The Redis list scaler measures LLEN only — tasks already popped by
  a worker (in flight) are invisible to it.
* The HPA syncs every `hpa_sync_period` on the external metric with an
  AverageValue target of `list_length` per pod: desired = ceil(metric / target),
  skipped within the tolerance band; scale-up limited per period by the larger of
  +100% and +4 pods; scale-down to the max recommendation of the stabilization
  window. The HPA does nothing while the Deployment is at 0 replicas.

Scale-in is done by a ReplicaSet, which does not know which pods are busy: the
model removes pods that are not ready yet, then random ready pods; a busy victim
gets `termination_grace_seconds` to finish (a worker that finishes its current
task on SIGTERM), then its tasks are killed and requeued.

Every default below is the KEDA/Kubernetes default it mirrors, except where
noted as set equal to qscale's value for a like-for-like comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from controller.sim.model import ClusterView, Order, Removal


@dataclass(frozen=True)
class KedaConfig:
    """ScaledObject + HPA + Pod parameters; see the module docstring."""

    polling_interval: float = 30.0          # ScaledObject pollingInterval, KEDA default 30 s
    cooldown_period: float = 300.0          # ScaledObject cooldownPeriod, KEDA default 300 s
    # Redis scaler listLength (AverageValue per pod). KEDA's default is 5; we set it
    # to qscale's target per pod (target_per_slot 1.0 x concurrency 4) for parity.
    list_length: float = 4.0
    activation_list_length: int = 0         # Redis scaler activationListLength default 0
    min_replica_count: int = 0              # ScaledObject minReplicaCount default 0
    # maxReplicaCount: KEDA default 100; set to qscale's max for parity.
    max_replica_count: int = 50
    hpa_sync_period: float = 15.0           # --horizontal-pod-autoscaler-sync-period 15 s
    hpa_tolerance: float = 0.1              # --horizontal-pod-autoscaler-tolerance 0.1
    scale_up_percent: float = 100.0         # HPA default scaleUp policy: 100% per 15 s
    scale_up_pods: int = 4                  # HPA default scaleUp policy: 4 pods per 15 s
    scale_up_stabilization: float = 0.0     # HPA default scaleUp stabilizationWindowSeconds 0
    scale_down_stabilization: float = 300.0  # HPA default scaleDown stabilization 300 s
    scale_down_percent: float = 100.0       # HPA default scaleDown policy: 100% per 15 s
    termination_grace_seconds: float = 30.0  # Pod terminationGracePeriodSeconds default 30 s
    # The RabbitMQ scaler over HTTP counts ready + unacknowledged (in flight); the Redis
    # list scaler and RabbitMQ over AMQP count ready messages only.
    counts_in_flight: bool = False


KEDA_DEFAULT = KedaConfig()
# The tuning a careful operator would apply: poll faster, shorter windows.
KEDA_TUNED = KedaConfig(polling_interval=5.0, cooldown_period=60.0,
                        scale_down_stabilization=30.0)


@dataclass
class KedaScaler:
    """Stateful emulation of the two loops, ticked every gcd(poll, sync) seconds."""

    config: KedaConfig = KEDA_DEFAULT
    name: str = "keda-default"
    removal: Removal = "arbitrary"
    last_active: float = 0.0
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    scale_up_events: list[tuple[float, int]] = field(default_factory=list)

    @property
    def interval(self) -> float:
        return float(math.gcd(int(self.config.polling_interval),
                              int(self.config.hpa_sync_period)))

    @property
    def grace_seconds(self) -> float:
        return self.config.termination_grace_seconds

    def decide(self, view: ClusterView) -> Order:
        return Order(self._replicas(view))

    def _replicas(self, view: ClusterView) -> int:
        cfg, now, replicas = self.config, view.now, view.replicas
        metric = view.ready + (view.in_flight if cfg.counts_in_flight else 0)
        if _due(now, cfg.polling_interval):
            active = metric > cfg.activation_list_length  # LLEN only, unless in flight counts
            if active:
                self.last_active = now
            if replicas == 0 and active:
                return max(cfg.min_replica_count, 1)
            if (not active and replicas > 0 and cfg.min_replica_count == 0
                    and now - self.last_active >= cfg.cooldown_period):
                return 0
        if replicas > 0 and _due(now, cfg.hpa_sync_period):
            return self._hpa(metric, replicas, now)
        return replicas

    def _hpa(self, metric: int, current: int, now: float) -> int:
        """One HPA sync: compute, stabilize, rate-limit, clamp."""
        cfg = self.config
        usage_ratio = metric / (cfg.list_length * current)
        if abs(1.0 - usage_ratio) <= cfg.hpa_tolerance:
            recommendation = current
        else:
            recommendation = math.ceil(metric / cfg.list_length)
        self.recommendations = [
            (t, r) for t, r in self.recommendations
            if now - t < max(cfg.scale_down_stabilization, cfg.scale_up_stabilization)]
        self.recommendations.append((now, recommendation))
        up = min(r for t, r in self.recommendations if now - t <= cfg.scale_up_stabilization)
        down = max(r for t, r in self.recommendations if now - t < cfg.scale_down_stabilization
                   or t == now)
        stabilized = min(max(current, up), down)
        hpa_min = max(cfg.min_replica_count, 1)
        if stabilized > current:
            # Limits count scale-ups already made in the last period (HPA behavior).
            period = cfg.hpa_sync_period
            self.scale_up_events = [(t, n) for t, n in self.scale_up_events if now - t < period]
            base = current - sum(n for _, n in self.scale_up_events)
            limit = max(math.ceil(base * (1 + cfg.scale_up_percent / 100)),
                        base + cfg.scale_up_pods)
            desired = min(stabilized, limit, cfg.max_replica_count)
            if desired > current:
                self.scale_up_events.append((now, desired - current))
        else:
            floor = math.floor(current * (1 - cfg.scale_down_percent / 100))
            desired = max(stabilized, floor)
        return min(max(desired, hpa_min), cfg.max_replica_count)


def _due(now: float, period: float) -> bool:
    """True on ticks that fall on this loop's period (ticks are whole seconds)."""
    return round(now) % round(period) == 0
