"""The worker checker: generated work and faults against real brokers and real workers,
then the history is checked (tests/checker/check.py).

CI runs a fixed seed per broker plus one random seed (printed, with the command to
replay it). `make soak` runs the long version and records its results.

    QSCALE_CHECK_SEED=1234 QSCALE_CHECK_BROKER=amqp pytest -s tests/checker   # replay
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path

import pytest

from tests.checker.check import check
from tests.checker.plan import draw_plan
from tests.checker.runner import run
from tests.checker.world import World

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "checker"
SCALE = {  # ops published over `window` seconds, with `faults` faults among them
    "ci": {"ops": 60, "window": 20.0, "faults": 6, "settle": 150.0},
    "soak": {"ops": int(os.environ.get("QSCALE_SOAK_OPS", "900")),
             "window": float(os.environ.get("QSCALE_SOAK_SECONDS", "360")),
             "faults": int(os.environ.get("QSCALE_SOAK_FAULTS", "70")),
             "settle": float(os.environ.get("QSCALE_SOAK_SETTLE", "600"))},
}


def _cases() -> list[tuple[str, int]]:
    if os.environ.get("QSCALE_CHECK_SEED"):
        return [(os.environ.get("QSCALE_CHECK_BROKER", "redis"),
                 int(os.environ["QSCALE_CHECK_SEED"]))]
    if os.environ.get("QSCALE_CHECK_SCALE") == "soak":
        seed = random.SystemRandom().randrange(1, 10**6)
        return [("redis", seed), ("amqp", seed + 1)]
    chance = random.SystemRandom()
    return [("redis", 11), ("amqp", 12),
            (chance.choice(["redis", "amqp"]), chance.randrange(100, 10**6))]


@pytest.mark.parametrize(("broker", "seed"), _cases())
def test_no_task_lost_stranded_or_corrupted_under_faults(broker: str, seed: int) -> None:
    scale = dict(SCALE[os.environ.get("QSCALE_CHECK_SCALE", "ci")])
    settle = scale.pop("settle")
    plan = draw_plan(seed, **scale)
    world = World.create(broker, f"chk-{uuid.uuid4().hex[:8]}")
    try:
        ledger, outcome = run(world, plan, settle_timeout=settle)
        report = check(world, ledger, outcome)
        summary = {"broker": broker, "seed": seed, **report.counts,
                   "faults_applied": world.faults, "broker_restarts_s": world.broker_restarts,
                   "violations": report.violations}
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{broker}-{seed}.json").write_text(json.dumps(summary, indent=2))
        if report.violations:  # the history is what a violation points at: keep it
            shutil.copyfile(world.history, ARTIFACTS / f"{broker}-{seed}-history.jsonl")
        print(f"\nchecker {broker} seed={seed}: " + " ".join(
            f"{k}={v}" for k, v in report.counts.items()))
        replay = (f"QSCALE_CHECK_SEED={seed} QSCALE_CHECK_BROKER={broker} "
                  f"pytest -s tests/checker")
        assert not report.violations, (
            f"{len(report.violations)} violations (replay: {replay}):\n"
            + "\n".join(report.violations[:30]))
    finally:
        world.close()
