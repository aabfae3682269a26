"""The checker's chord rule: a callback's second run is a violation unless a member ran
twice or a fault came after the callback could first be sent. CI (a1e62b4, RabbitMQ seed
832852) failed a run where the broker was SIGKILLed around a chord's completion: a lost
confirm or ack is at-least-once doing its job, not a double send."""

from __future__ import annotations

from typing import Any

from tests.checker.check import Report, _check_chords
from tests.checker.runner import Ledger, Outcome


def _ev(tid: str, t: float, run: str, given: list[str] | None = None) -> dict[str, Any]:
    return {"id": tid, "t": t, "run": run, "in": given or []}


def _chord_violations(callback_starts: list[float], faults: list[float]) -> list[str]:
    ledger = Ledger(chords=[(["m1", "m2"], "cb")])
    finishes = {"m1": [_ev("m1", 1.0, "a")], "m2": [_ev("m2", 2.0, "b")],
                "cb": [_ev("cb", t + 0.1, f"c{i}", ["a", "b"])
                       for i, t in enumerate(callback_starts)]}
    starts = {"cb": [_ev("cb", t, f"c{i}") for i, t in enumerate(callback_starts)]}
    runs = {tid: {e["run"] for e in evs} for tid, evs in finishes.items()}
    outcome = Outcome(results={"cb": None}, events=[], dead=[], stats={},
                      settled_after=0.0, settled=True)
    report = Report()
    _check_chords(report, ledger, outcome, starts, finishes, runs, faults)
    return report.violations


def test_one_callback_run_is_fine() -> None:
    assert _chord_violations([3.0], faults=[]) == []


def test_a_second_send_without_a_fault_is_a_violation() -> None:
    assert _chord_violations([3.0, 3.2], faults=[]) != []


def test_a_fault_before_the_chord_completed_explains_nothing() -> None:
    assert _chord_violations([3.0, 3.2], faults=[0.5, 1.5]) != []


def test_a_fault_after_the_first_send_explains_a_rerun() -> None:
    # broker killed after the set completed: confirm or ack lost, the callback came again
    assert _chord_violations([9.0, 20.0], faults=[2.5]) == []
    assert _chord_violations([3.0, 20.0], faults=[10.0]) == []


def test_one_fault_does_not_explain_a_run_before_it() -> None:
    assert _chord_violations([3.0, 4.0, 20.0], faults=[10.0]) != []
