"""The rendered WorkerPool parses to exactly the policy the controller would default to."""

from __future__ import annotations

from controller.policy import PolicyConfig
from controller.pool import policy_from_spec, pool_from_workerpool
from tests.chart.conftest import Render, by_kind


def test_default_render_is_the_policy_default(render: Render) -> None:
    pool = by_kind(render(), "WorkerPool")[0]
    assert policy_from_spec(pool["spec"]) == PolicyConfig()
    assert pool_from_workerpool(pool).policy.mode == "latency"


def test_new_policy_fields_pass_through_per_pool(render: Render) -> None:
    docs = render("--set", "autoscaling.podStartupSeconds=45",
                  "--set", "pools[0].name=default", "--set", "pools[0].queues[0]=default",
                  "--set", "pools[0].autoscaling.flapBackoffMax=0")
    spec = by_kind(docs, "WorkerPool")[0]["spec"]
    policy = policy_from_spec(spec)
    assert (policy.pod_startup_seconds, policy.flap_backoff_max) == (45.0, 0)
