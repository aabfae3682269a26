#!/usr/bin/env python3
"""Write helm/qscale/values.schema.json: every object closed (additionalProperties: false).

Edit the property tables below together with values.yaml; `--check` (run by
tests/chart) fails when the committed schema differs from what this writes.
Kubernetes objects passed through verbatim (affinity, securityContext overrides,
env lists) stay open: the API server validates those.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parents[1] / "helm" / "qscale" / "values.schema.json"


def obj(
    props: dict[str, Any], required: tuple[str, ...] | list[str] = (), **kw: Any
) -> dict[str, Any]:
    d = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        d["required"] = list(required)
    d.update(kw)
    return d


def S(**kw: Any) -> dict[str, Any]:  # noqa: N802 - short names keep the tables readable
    return {"type": "string", **kw}


def Int(**kw: Any) -> dict[str, Any]:  # noqa: N802
    return {"type": "integer", **kw}


def N(**kw: Any) -> dict[str, Any]:  # noqa: N802
    return {"type": "number", **kw}


B = {"type": "boolean"}
free_map = {"type": "object"}  # Kubernetes objects passed through (affinity, ...)
str_map = {"type": "object", "additionalProperties": {"type": "string"}}
any_list = {"type": "array"}
# NetworkPolicyPeer objects: one of these keys at least; their insides the API server checks.
peer_list = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {k: {"type": "object"} for k in ("podSelector", "namespaceSelector", "ipBlock")},
    },
}


def nullable_int(**kw: Any) -> dict[str, Any]:
    return {"type": ["integer", "null"], **kw}


def nullable_num(**kw: Any) -> dict[str, Any]:
    return {"type": ["number", "null"], **kw}


quantity = {"type": ["string", "integer"]}

image = obj(
    {
        "registry": S(),
        "repository": S(minLength=1),
        "tag": S(),
        "digest": S(pattern="^(|sha256:[a-f0-9]{64})$"),
        "pullPolicy": S(enum=["Always", "IfNotPresent", "Never"]),
    }
)
# Any resource name (cpu, memory, ephemeral-storage, nvidia.com/gpu, hugepages-2Mi, ...):
# the API server knows which exist on the cluster.
resource_map = {"type": "object", "additionalProperties": quantity}
resources = obj({"requests": resource_map, "limits": resource_map, "claims": any_list})
pod_sc = {
    "type": "object",
    "description": "A Kubernetes PodSecurityContext (merged over the global default).",
}
ctr_sc = {
    "type": "object",
    "description": "A Kubernetes SecurityContext (merged over the global default).",
}
persistence = obj(
    {
        "enabled": B,
        "storageClass": S(),
        "accessModes": {"type": "array", "items": S(), "minItems": 1},
        "size": S(minLength=1),
    }
)
placement = {"nodeSelector": str_map, "tolerations": any_list, "affinity": free_map}
name_re = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
queue_list = {"type": "array", "items": S(minLength=1), "minItems": 1}


def probe() -> dict[str, Any]:
    return obj(
        {
            "periodSeconds": Int(minimum=1),
            "timeoutSeconds": Int(minimum=1),
            "failureThreshold": Int(minimum=1),
        }
    )


worker_props = {
    "concurrency": Int(minimum=1, maximum=1024),
    "replicas": Int(minimum=0),
    "imports": {"type": "array", "items": S(minLength=1)},
    "demoTasks": B,
    "prefetch": Int(minimum=0, maximum=10000),
    "drainSeconds": N(minimum=0),
    "terminationGraceMarginSeconds": Int(
        minimum=5, description="At least 5 s: SIGTERM delivery and process exit take time."
    ),
    "leaseSeconds": N(exclusiveMinimum=0.5, maximum=3600),
    "maxTasksPerChild": Int(minimum=0),
    "maxRssMb": Int(minimum=0),
    "softTimeLimit": N(minimum=0),
    "hardTimeLimit": N(minimum=0),
    "maxRetries": Int(minimum=0),
    "resultTtl": Int(minimum=1),
    "logLevel": S(enum=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
    "extraEnv": any_list,
    "extraEnvFrom": any_list,
    "extraVolumes": any_list,
    "extraVolumeMounts": any_list,
    "initContainers": any_list,
    "extraContainers": any_list,
    "serviceAccount": obj(
        {
            "create": B,
            "name": S(pattern="^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", maxLength=253),
            "annotations": str_map,
            "automountServiceAccountToken": B,
        }
    ),
    "resources": resources,
    "tmpSizeLimit": S(minLength=1),
    "livenessProbe": probe(),
    "readinessProbe": probe(),
    "startupProbe": probe(),
    "pdb": obj({"enabled": B, "maxUnavailable": {"type": ["integer", "string"]}}),
    "topologySpreadConstraints": any_list,
    "podAnnotations": str_map,
    "podLabels": str_map,
    "podSecurityContext": pod_sc,
    "containerSecurityContext": ctr_sc,
    "priorityClassName": S(),
    **placement,
}
autoscaling_props = {  # bounds: the CRD's (tests/unit/test_controller_defaults.py)
    "enabled": B,
    "mode": S(enum=["queue", "latency"]),
    "minReplicas": Int(minimum=0, maximum=10000),
    "maxReplicas": Int(minimum=1, maximum=10000),
    "targetPerSlot": N(minimum=0.01, maximum=1000000),
    "targetWaitSeconds": N(minimum=0.1, maximum=86400),
    "activationThreshold": Int(minimum=0, maximum=1000000000),
    "tolerance": N(minimum=0, maximum=0.99),
    "maxStepUp": nullable_int(minimum=1, maximum=10000),
    "scaleDownWindowSeconds": nullable_num(minimum=0, maximum=3600),
    "scaleDownStep": nullable_int(minimum=1, maximum=10000),
    "flapBackoffMax": Int(minimum=0, maximum=16),
    "podStartupSeconds": N(minimum=0, maximum=3600),
    "batchSeconds": N(minimum=0, maximum=3600),
    "cooldownSeconds": nullable_num(minimum=0, maximum=86400),
    "pollIntervalSeconds": N(minimum=0.1, maximum=300),
    "onError": S(enum=["hold", "fallback"]),
    "fallbackReplicas": nullable_int(minimum=1, maximum=10000),
    "fallbackFailureThreshold": Int(minimum=1, maximum=1000),
    "drainDeadlineSeconds": N(minimum=0, maximum=86400),
}
pool_override_keys = [
    "concurrency",
    "replicas",
    "imports",
    "demoTasks",
    "prefetch",
    "drainSeconds",
    "terminationGraceMarginSeconds",
    "leaseSeconds",
    "maxTasksPerChild",
    "maxRssMb",
    "softTimeLimit",
    "hardTimeLimit",
    "maxRetries",
    "resultTtl",
    "logLevel",
    "extraEnv",
    "extraEnvFrom",
    "extraVolumes",
    "extraVolumeMounts",
    "initContainers",
    "extraContainers",
    "serviceAccount",
    "resources",
    "pdb",
    "topologySpreadConstraints",
    "podAnnotations",
    "podLabels",
    "nodeSelector",
    "tolerations",
    "affinity",
    "priorityClassName",
]
pool_auto = dict(autoscaling_props)
pool = obj(
    {
        "name": S(pattern=name_re, maxLength=30),
        "queues": queue_list,
        **{k: worker_props[k] for k in pool_override_keys},
        # Overrides single keys of the top-level image (repository is then optional).
        "image": obj({k: v for k, v in image["properties"].items()}),
        "autoscaling": obj(pool_auto),
    },
    required=["name", "queues"],
)

schema = obj(
    {
        # Open: an umbrella chart's other globals pass through.
        "global": {
            "type": "object",
            "description": "Helm's global values; qscale reads imageRegistry.",
            "properties": {"imageRegistry": S()},
        },
        "nameOverride": S(),
        "fullnameOverride": S(),
        "commonLabels": str_map,
        "image": image,
        "imagePullSecrets": any_list,
        "podSecurityContext": pod_sc,
        "containerSecurityContext": ctr_sc,
        "broker": obj(
            {
                "type": S(enum=["redis", "rabbitmq", "external"]),
                "external": obj(
                    {"existingSecret": S(), "urlKey": S(minLength=1), "resultUrlKey": S()}
                ),
                "queues": obj(
                    {
                        "amqpQueueType": S(enum=["classic", "quorum"]),
                        "maxRedeliveries": Int(minimum=0),
                        "maxPriority": Int(minimum=0, maximum=9),
                    }
                ),
            },
            required=["type"],
        ),
        "results": obj({"enabled": B}),
        "redis": obj(
            {
                "image": image,
                "auth": obj(
                    {
                        "existingSecret": S(),
                        "passwordKey": S(minLength=1),
                        "urlKey": S(minLength=1),
                        "password": S(pattern="^[A-Za-z0-9]*$"),
                    }
                ),
                "database": Int(minimum=0, maximum=15),
                "appendfsync": S(enum=["always", "everysec", "no"]),
                "maxmemory": S(),
                "persistence": persistence,
                "service": obj({"port": Int(minimum=1, maximum=65535)}),
                "resources": resources,
                "podSecurityContext": pod_sc,
                "containerSecurityContext": ctr_sc,
                **placement,
            }
        ),
        "rabbitmq": obj(
            {
                "image": image,
                "auth": obj(
                    {
                        "username": S(pattern="^[A-Za-z0-9_.-]+$"),
                        "existingSecret": S(),
                        "passwordKey": S(minLength=1),
                        "urlKey": S(minLength=1),
                        "password": S(pattern="^[A-Za-z0-9]*$"),
                        "erlangCookieKey": S(),
                        "erlangCookie": S(pattern="^[A-Za-z0-9]*$"),
                    }
                ),
                "extraConfiguration": S(),
                "memoryHighWatermark": N(exclusiveMinimum=0, maximum=1),
                "consumerTimeoutMs": Int(minimum=60_000),
                "persistence": persistence,
                "service": obj({"port": Int(minimum=1, maximum=65535)}),
                "resources": resources,
                "podSecurityContext": pod_sc,
                "containerSecurityContext": ctr_sc,
                **placement,
            }
        ),
        "worker": obj(worker_props),
        "pools": {"type": "array", "items": pool, "minItems": 1},
        "autoscaling": obj({
            **autoscaling_props,
            # Chart-wide only (one token for the controller and every pool).
            "cordon": obj({
                "enabled": B,
                "existingSecret": S(),
                "tokenKey": S(minLength=1),
                "token": S(pattern="^[A-Za-z0-9]*$"),
            }),
        }),
        "crds": obj({"install": B}),
        "controller": obj(
            {
                "enabled": B,
                "name": S(pattern="^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", maxLength=63),
                "replicas": Int(minimum=1, maximum=2),
                "leaderElection": obj(
                    {
                        "enabled": B,
                        "leaseDurationSeconds": N(minimum=1, maximum=600),
                        "renewSeconds": N(exclusiveMinimum=0, maximum=300),
                    }
                ),
                "logLevel": S(enum=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
                "logFormat": S(enum=["kv", "json"]),
                "extraEnv": any_list,
                "admissionPolicy": obj({"enabled": B}),
                "serviceAccount": obj({"create": B, "name": S(), "annotations": str_map}),
                "service": obj({"port": Int(minimum=1, maximum=65535)}),
                "resources": resources,
                "podAnnotations": str_map,
                "podLabels": str_map,
                "podSecurityContext": pod_sc,
                "containerSecurityContext": ctr_sc,
                "priorityClassName": S(),
                **placement,
            }
        ),
        "monitoring": obj(
            {
                "scrapeAnnotations": B,
                "prometheus": obj(
                    {
                        "enabled": B,
                        "image": image,
                        "discovery": S(enum=["dns", "kubernetes"]),
                        "scrapeInterval": S(pattern="^[0-9]+(ms|s|m|h)$"),
                        "retention": S(pattern="^[0-9]+(ms|s|m|h|d|w|y)$"),
                        "storageSizeLimit": S(minLength=1),
                        "service": obj({"port": Int(minimum=1, maximum=65535)}),
                        "resources": resources,
                        "podSecurityContext": pod_sc,
                        "containerSecurityContext": ctr_sc,
                        **placement,
                    }
                ),
                "serviceMonitor": obj(
                    {"enabled": B, "interval": S(pattern="^[0-9]+(ms|s|m|h)$"), "labels": str_map}
                ),
                "prometheusRule": obj(
                    {
                        "enabled": B,
                        "labels": str_map,
                        "queueWaitSeconds": N(exclusiveMinimum=0),
                        "queueDepth": Int(minimum=0),
                        "for": S(pattern="^[0-9]+(ms|s|m|h)$"),
                    }
                ),
                "grafanaDashboard": obj({"enabled": B, "labels": str_map, "annotations": str_map}),
            }
        ),
        "networkPolicy": obj(
            {
                "enabled": B,
                "brokerFrom": peer_list,
                "metricsFrom": peer_list,
            }
        ),
        "tests": obj({"timeoutSeconds": Int(minimum=1, maximum=3600)}),
    }
)
schema["$schema"] = "http://json-schema.org/draft-07/schema#"
schema["title"] = "qscale chart values"
schema["description"] = "Every object rejects unknown keys, so a typo in values fails the install."
# broker.type=external needs its secret
schema["allOf"] = [
    {
        "if": {"properties": {"broker": {"properties": {"type": {"const": "external"}}}}},
        "then": {
            "properties": {
                "broker": {
                    "properties": {"external": {"properties": {"existingSecret": {"minLength": 1}}}}
                }
            }
        },
    }
]
order = ["$schema", "title", "description"]
out = {k: schema[k] for k in order}
out.update({k: v for k, v in schema.items() if k not in order})
text = json.dumps(out, indent=2) + "\n"
if "--check" in sys.argv[1:]:
    if TARGET.read_text() != text:
        sys.exit(f"{TARGET} is stale: run hack/chart-schema.py")
else:
    TARGET.write_text(text)
