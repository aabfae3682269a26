"""The invariants a checker run must hold, over its history (in the spirit of Elle:
the checks read what happened, never how).

Violations fail the run; duplicates are at-least-once delivery doing its job and
are only counted. Every check names the task ids it is about, so a failure points
at the history lines to read.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.checker.plan import MAX_RETRIES
from tests.checker.runner import FAILURE_EXPECTED, SUCCESS_EXPECTED, Ledger, Outcome
from tests.checker.world import World
from worker.results import FAILURE, SUCCESS

RSS_GROWTH_KIB = 25 * 1024   # a supervisor may grow this much over a run, no more


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    def fail(self, text: str) -> None:
        self.violations.append(text)


def _by_id(events: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]],
                                                   dict[str, list[dict[str, Any]]]]:
    starts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    finishes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        (starts if event["ev"] == "start" else finishes)[event["id"]].append(event)
    return starts, finishes


def _dead_ids(dead: list[tuple[bytes, str]]) -> dict[str, list[str]]:
    """task id -> reasons of its dead letters (bodies that are not envelopes are skipped)."""
    out: dict[str, list[str]] = defaultdict(list)
    for body, reason in dead:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("id"), str):
            out[doc["id"]].append(reason)
    return out


def check(world: World, ledger: Ledger, outcome: Outcome) -> Report:
    report = Report()
    starts, finishes = _by_id(outcome.events)
    dead = _dead_ids(outcome.dead)
    runs = {tid: {e["run"] for e in evs} for tid, evs in finishes.items()}

    if not outcome.settled:
        report.fail(f"did not settle within the timeout; broker counts {outcome.stats}\n"
                    f"{outcome.diagnosis}")
    # Nothing left claimed, ready or delayed.
    for name in ("ready", "in_flight", "delayed"):
        if outcome.stats.get(name) != 0:
            report.fail(f"broker still holds {name}={outcome.stats.get(name)}")

    duplicates = unfinished = 0
    for tid, expected in ledger.expected.items():
        record = outcome.results.get(tid)
        status = record.get("status") if record else None
        if status not in (SUCCESS, FAILURE):
            report.fail(f"{tid}: no final result (status {status}), expected {expected}")
            continue
        failed_runs = len(starts.get(tid, ())) - len(finishes.get(tid, ()))
        unfinished += max(failed_runs, 0)
        # Runs that failed, crashed, hung or were killed each cost a retry: a task that
        # should succeed may end FAILURE only after more of them than it has retries.
        if expected == SUCCESS_EXPECTED and status != SUCCESS and failed_runs <= MAX_RETRIES:
            report.fail(f"{tid}: expected SUCCESS, got {status} after {failed_runs} failed "
                        f"runs: {record}")
        if expected == FAILURE_EXPECTED and status != FAILURE:
            report.fail(f"{tid}: expected FAILURE, got {status}")
        if status == SUCCESS:
            if not finishes.get(tid):
                report.fail(f"{tid}: SUCCESS but no execution finished")
            elif assert_dict(record).get("result", {}).get("run") not in runs.get(tid, set()):
                report.fail(f"{tid}: the result names run "
                            f"{assert_dict(record).get('result')} that never finished")
            duplicates += max(0, len(finishes.get(tid, ())) - ledger.runs_expected(tid))
        if status == FAILURE and tid in starts and not dead.get(tid) \
                and assert_dict(record).get("error", {}).get("type") not in (
                    "ChainError", "ChordError"):
            report.fail(f"{tid}: FAILURE after running, but no dead letter with a reason")
        for reason in dead.get(tid, ()):
            if not reason:
                report.fail(f"{tid}: dead-lettered without a reason")

    _check_chains(report, ledger, outcome, starts, finishes, runs)
    _check_chords(report, ledger, outcome, finishes, runs)
    _check_hostile(report, ledger, outcome)
    _check_processes(report, world)

    executed = sum(len(v) for v in finishes.values())
    report.counts = {
        "task_ids": len(ledger.expected), "messages_published": ledger.messages,
        "duplicates_injected": ledger.duplicates_sent, "executions": executed,
        "duplicate_executions_from_faults": duplicates,
        "duplicates_per_10k": round(10_000 * duplicates / max(1, len(ledger.expected)), 1),
        "runs_unfinished": unfinished, "dead_letters": len(outcome.dead),
        "hostile_bodies": len(ledger.hostile), "faults": len(world.faults),
        "settled_after_s": round(outcome.settled_after, 1)}
    return report


def assert_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first(events: list[dict[str, Any]]) -> float:
    return min(e["t"] for e in events)


def _check_chains(report: Report, ledger: Ledger, outcome: Outcome,
                  starts: dict[str, list[dict[str, Any]]],
                  finishes: dict[str, list[dict[str, Any]]], runs: dict[str, set[str]]) -> None:
    """Steps ran in order, each given a result of an execution of the step before."""
    for steps in ledger.chains:
        for before, after in itertools.pairwise(steps):
            if not starts.get(after):
                continue
            if not finishes.get(before):
                report.fail(f"chain step {after} started, but step {before} never finished")
                continue
            if _first(starts[after]) < _first(finishes[before]):
                report.fail(f"chain step {after} started before step {before} finished")
            for event in finishes.get(after, ()):
                if not set(event["in"]) <= runs[before]:
                    report.fail(f"chain step {after} got input {event['in']} that no run of "
                                f"{before} produced")


def _check_chords(report: Report, ledger: Ledger, outcome: Outcome,
                  finishes: dict[str, list[dict[str, Any]]], runs: dict[str, set[str]]) -> None:
    """A chord's callback is sent once: again only by a member's rerun that finished
    once the set was complete. Runs of one send (a redelivery, or a
    re-publish after a lost confirm) are at-least-once doing its job and only counted
    with the duplicates. Each run is given a result of an execution of every member,
    in order."""
    for members, callback in ledger.chords:
        done = finishes.get(callback, [])
        record = outcome.results.get(callback) or {}
        if record.get("status") == SUCCESS and not done:
            report.fail(f"chord {callback}: SUCCESS without a callback run")
        # Only a member's rerun that finished once the set was complete can send again
        # (an earlier one only rewrites its slot); producer copies of members are such
        # reruns too, so they are not counted twice.
        firsts = [min(e["t"] for e in finishes[m]) for m in members if finishes.get(m)]
        complete_at = max(firsts) if len(firsts) == len(members) else float("inf")
        member_reruns = sum(1 for m in members for e in sorted(
            finishes.get(m, ()), key=lambda e: e["t"])[1:] if e["t"] >= complete_at)
        sends = len({event["sent"] for event in done})
        if sends > 1 + ledger.copies.get(callback, 0) + member_reruns:
            report.fail(f"chord {callback}: callback sent {sends} times ({len(done)} runs), "
                        f"members reran only {member_reruns} times once it could fire")
        for event in done:
            given = event["in"]
            if len(given) != len(members) or any(
                    run not in runs.get(m, set()) for run, m in zip(given, members, strict=False)):
                report.fail(f"chord {callback}: callback got {given}, not one result of each "
                            f"member {members}")


def _check_hostile(report: Report, ledger: Ledger, outcome: Outcome) -> None:
    """Every hostile body (each copy of it) sits in the dead-letter queue with a reason."""
    remaining = [body for body, _ in outcome.dead]
    for body in ledger.hostile:
        if body in remaining:
            remaining.remove(body)
        else:
            report.fail(f"hostile body {body[:60]!r}... is not in the dead-letter queue")


def _check_processes(report: Report, world: World) -> None:
    """No worker ended unless the checker ended it; the live ones answer; memory bounded."""
    for end in world.exits:
        if end.cause == "unexpected":
            report.fail(f"worker {end.pid} ended by itself with {end.code}:\n{end.log_tail}")
    for worker in world.workers:
        if worker.get("/healthz")[0] != 200:
            report.fail(f"worker {worker.pid} is not healthy at the end")
        if "supervisor loop failed" in worker.log():
            report.fail(f"worker {worker.pid}: {worker.log()[-2000:]}")
    for pid, samples in world.rss.items():
        if len(samples) >= 2 and samples[-1] - samples[0] > RSS_GROWTH_KIB:
            report.fail(f"worker {pid} supervisor RSS grew {samples[-1] - samples[0]} KiB")
