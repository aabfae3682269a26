"""The qscale tasks under test, loaded by the worker through QSCALE_IMPORTS."""

from __future__ import annotations

from bench import workload
from worker import task


@task(name="bench.noop", ignore_result=True)
def noop(seq: int) -> None:
    workload.run_task("noop", seq)


@task(name="bench.cpu", ignore_result=True)
def cpu(seq: int) -> None:
    workload.run_task("cpu", seq)
