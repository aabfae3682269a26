"""The scalers a benchmark run compares, and the Kubernetes objects each one needs.

Every scaler gets its own pool (Deployment) and queue of the same shape, in one Helm
release per broker. A KEDA scaler is a ScaledObject on its pool's Deployment: the Redis
list scaler on the list qscale's Redis broker pushes to (`qscale:q:<queue>:ready`), or the
RabbitMQ scaler on the queue; the HPA KEDA creates is run by the cluster's own
kube-controller-manager. A qscale scaler is the pool's WorkerPool, reconciled by the
release's controller.

What KEDA's Redis list length misses, by construction: tasks already claimed (running or
held by a worker: `qscale:q:<queue>:inflight:<owner>`), retries and countdowns waiting in
`...:delayed`, messages given back to `...:redelivered`, and priority lists `...:ready:<n>`.
On RabbitMQ the AMQP protocol counts ready messages only; the HTTP protocol (management
API, sampled every 5 s) counts ready + unacknowledged, which is why `keda-tuned` uses it.

Presets (`--scaler NAME` picks one; `NAME=keda:key=value,...` or `NAME=qscale:...` defines
one, so a sweep can run several variants side by side):

    keda-default    KEDA's and the HPA's defaults: pollingInterval 30 s, cooldownPeriod
                    300 s, HPA scale-down stabilization 300 s, scale-up 100 % or 4 pods per
                    15 s; listLength / value = the pool's concurrency (KEDA's default listLength
                    is 5; one task per worker process is the target qscale aims at too)
    keda-tuned      the best KEDA setting found (see bench/keda/README.md): pollingInterval
                    1 s, cooldownPeriod 30 s, HPA scale-down window 30 s, scale-up unlimited,
                    RabbitMQ over HTTP (counts in-flight)
    qscale-default  the WorkerPool's defaults (latency mode, target wait 30 s)
    qscale-best     the best qscale setting found (see bench/keda/README.md)

Both minimum 0 and the same maximum: the pool shape, not a scaler setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KEDA_KEYS = {"poll": int, "cooldown": int, "down_window": int, "up": str, "protocol": str,
             "length": int}
QSCALE_KEYS = {"mode": str, "target_wait": float, "down_window": float, "batch": float,
               "cooldown": float, "target_per_slot": float}
# qscale option -> WorkerPool field (chart `autoscaling` key)
QSCALE_FIELDS = {"mode": "mode", "target_wait": "targetWaitSeconds",
                 "down_window": "scaleDownWindowSeconds", "batch": "batchSeconds",
                 "cooldown": "cooldownSeconds", "target_per_slot": "targetPerSlot"}


@dataclass(frozen=True)
class Scaler:
    """One side of the comparison: a name (also its pool and queue), a kind, options."""

    name: str
    kind: str                      # "keda" or "qscale"
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.kind}({opts or 'defaults'})"


PRESETS: dict[str, Scaler] = {
    "keda-default": Scaler("keda-default", "keda"),
    "keda-tuned": Scaler("keda-tuned", "keda", {"poll": 1, "cooldown": 30, "down_window": 30,
                                                "up": "unlimited", "protocol": "http"}),
    "qscale-default": Scaler("qscale-default", "qscale"),
    "qscale-best": Scaler("qscale-best", "qscale", {"target_wait": 120.0, "down_window": 5.0,
                                                    "batch": 25.0}),
}
DEFAULT_SCALERS = ("keda-default", "keda-tuned", "qscale-default", "qscale-best")


def parse_scaler(text: str) -> Scaler:
    """A preset name, or NAME=KIND[:key=value,...] (see the module docstring)."""
    if "=" not in text.split(":", 1)[0]:
        if text not in PRESETS:
            raise ValueError(f"unknown scaler {text!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[text]
    name, _, rest = text.partition("=")
    kind, _, opts = rest.partition(":")
    if not name or not name.replace("-", "").isalnum() or name != name.lower() or len(name) > 20:
        raise ValueError(f"scaler name {name!r}: lowercase letters, digits and - (<= 20)")
    keys = {"keda": KEDA_KEYS, "qscale": QSCALE_KEYS}.get(kind)
    if keys is None:
        raise ValueError(f"scaler {name}: kind must be keda or qscale, got {kind!r}")
    options: dict[str, Any] = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        if key not in keys:
            raise ValueError(f"scaler {name}: unknown option {key!r} ({', '.join(keys)})")
        try:
            options[key] = keys[key](value)
        except ValueError:
            raise ValueError(f"scaler {name}: {key}={value!r} is not a {keys[key].__name__}")\
                from None
    if options.get("up", "default") not in ("default", "unlimited"):
        raise ValueError(f"scaler {name}: up must be default or unlimited")
    if options.get("protocol", "auto") not in ("auto", "amqp", "http"):
        raise ValueError(f"scaler {name}: protocol must be auto, amqp or http")
    return Scaler(name, kind, options)


# -- qscale: chart values of the pool ------------------------------------------------

def qscale_autoscaling(scaler: Scaler) -> dict[str, Any]:
    """The pool's `autoscaling` overrides in the chart (WorkerPool fields)."""
    return {QSCALE_FIELDS[k]: v for k, v in scaler.options.items()}


# -- KEDA: ScaledObject and TriggerAuthentication --------------------------------------

def _behavior(opts: dict[str, Any]) -> dict[str, Any] | None:
    behavior: dict[str, Any] = {}
    if "down_window" in opts:
        behavior["scaleDown"] = {"stabilizationWindowSeconds": opts["down_window"]}
    if opts.get("up") == "unlimited":
        # Any number of pods at each HPA sync: straight to the need, like qscale.
        behavior["scaleUp"] = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                               "policies": [{"type": "Percent", "value": 10000,
                                             "periodSeconds": 1}]}
    return behavior or None


def trigger_auth(broker: str, secret: str) -> dict[str, Any]:
    """Broker credentials from the chart's own Secret (KEDA reads Secrets, never inline)."""
    if broker == "redis":
        params = [{"parameter": "password", "name": secret, "key": "password"}]
    else:
        params = [{"parameter": "host", "name": secret, "key": "url"}]  # amqp://user:pw@...
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": f"bench-{broker}"}, "spec": {"secretTargetRef": params}}


def scaled_object(scaler: Scaler, *, broker: str, deployment: str, broker_host: str,
                  concurrency: int, max_replicas: int) -> dict[str, Any]:
    """The ScaledObject of a KEDA scaler; options left out keep KEDA's defaults."""
    opts = scaler.options
    length = str(opts.get("length", concurrency))
    auth = {"name": f"bench-{broker}"}
    if broker == "redis":
        trigger: dict[str, Any] = {"type": "redis", "authenticationRef": auth, "metadata": {
            "address": f"{broker_host}:6379", "listName": f"qscale:q:{scaler.name}:ready",
            "listLength": length, "databaseIndex": "0"}}
    else:
        meta = {"queueName": scaler.name, "mode": "QueueLength", "value": length}
        if opts.get("protocol", "auto") == "http":
            # The management API (same credentials); host from the trigger, vhost "/".
            meta.update({"protocol": "http", "host": f"http://{broker_host}:15672",
                         "vhostName": "/"})
            auth = {"name": f"bench-{broker}-http"}
        trigger = {"type": "rabbitmq", "authenticationRef": auth, "metadata": meta}
    spec: dict[str, Any] = {"scaleTargetRef": {"name": deployment}, "minReplicaCount": 0,
                            "maxReplicaCount": max_replicas, "triggers": [trigger]}
    if "poll" in opts:
        spec["pollingInterval"] = opts["poll"]
    if "cooldown" in opts:
        spec["cooldownPeriod"] = opts["cooldown"]
    behavior = _behavior(opts)
    if behavior:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": scaler.name, "labels": {"qscale.io/bench": "keda"}},
            "spec": spec}


def rabbitmq_http_auth(secret: str) -> dict[str, Any]:
    """The management API needs the user and password but not the AMQP URL as host."""
    params = [{"parameter": "username", "name": secret, "key": "username"},
              {"parameter": "password", "name": secret, "key": "password"}]
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": "bench-rabbitmq-http"}, "spec": {"secretTargetRef": params}}
