"""Start-up imports: a process pays only for what it uses (issue #13, burst-to-capacity).

Importing any part of the worker package runs worker/__init__.py first. It re-exported
the task API eagerly, so the controller (worker.errors, worker.brokers), a producer and
every worker paid for the result store's redis-py (it imports redis.asyncio) and the
settings' pydantic, used or not. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("redis", "pydantic", "pydantic_settings", "kubernetes", "worker.api", "worker.results")


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=REPO, check=True, timeout=120).stdout
    return set(json.loads(out.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))


@pytest.mark.parametrize("code", [
    "import worker",
    "import worker.errors, worker.envelope",
    "from worker.brokers import open_broker",
])
def test_the_package_and_its_core_import_nothing_heavy(code: str) -> None:
    assert heavy(imported_after(code)) == []


def test_the_controller_does_not_import_the_task_api_or_redis() -> None:
    modules = imported_after("import controller.app")
    assert not [m for m in modules if m.startswith(("worker.api", "redis"))]


def test_the_task_api_is_still_there() -> None:
    import worker
    from worker import Client, chain, task
    assert task.__module__ == "worker.api.task" and chain is worker.chain
    assert Client.__module__ == "worker.api.client"
    assert set(worker.__all__) <= set(dir(worker))
    for name in worker.__all__:
        assert getattr(worker, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        worker.nope  # noqa: B018
    namespace: dict[str, object] = {}
    exec("from worker import *", namespace)
    assert set(worker.__all__) <= set(namespace)
