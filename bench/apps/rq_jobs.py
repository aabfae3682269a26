"""The functions RQ workers run (RQ imports jobs by dotted path; it has no acks)."""

from __future__ import annotations

from bench import workload


def noop(seq: int) -> None:
    workload.run_task("noop", seq)


def cpu(seq: int) -> None:
    workload.run_task("cpu", seq)
