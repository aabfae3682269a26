"""docs/operations.md names everything an operator can meet: every decision reason the
controller writes, every condition type and reason, every event, every metric of the
worker and the controller, every alert of the chart. Read from the code, so a new one
without a line in the manual fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from controller.metrics import ControllerMetrics
from controller.reporting import UNKNOWN_REASONS

ROOT = Path(__file__).resolve().parents[2]
MANUAL = (ROOT / "docs" / "operations.md").read_text()
REASON = re.compile(r"^(hold|scale-up|scale-down|scale-to-zero|clamp|floor|fallback|error|"
                    r"refused|paused):[a-z-]*$")


def _controller_trees() -> list[ast.AST]:
    paths = [p for p in sorted((ROOT / "controller").glob("*.py"))]
    return [ast.parse(p.read_text()) for p in paths]


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def _missing(names: set[str]) -> list[str]:
    return sorted(name for name in names if f"`{name}" not in MANUAL)


def test_every_decision_reason_is_explained() -> None:
    reasons = {s for tree in _controller_trees() for s in _strings(tree) if REASON.match(s)}
    assert len(reasons) > 20, reasons  # the scan itself works
    assert not _missing(reasons)


def test_every_condition_and_event_is_explained() -> None:
    names: set[str] = set(UNKNOWN_REASONS.values())
    for tree in _controller_trees():
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            method = call.func.attr if isinstance(call.func, ast.Attribute) else ""
            if method == "condition":  # condition(type, ok, reason, message)
                picked = [call.args[0], *call.args[2:3]]
            elif method in ("event", "emit"):
                picked = call.args
            else:
                continue
            names |= {s for arg in picked for s in _strings(arg)
                      if re.fullmatch(r"[A-Z][A-Za-z]+", s)}
    names -= {"Normal", "Warning"}
    assert {"ScaledUp", "ScaleDownHeld", "InputsKnown", "TargetFound"} <= names, names
    assert not _missing(names)


def test_every_metric_is_listed() -> None:
    controller = {metric.name for metric in ControllerMetrics().registry.collect()}
    worker = set(re.findall(r'"(qscale_[a-z_]+)"',
                            (ROOT / "worker" / "runtime" / "metrics.py").read_text()))
    assert len(controller) > 15 and len(worker) > 8, (controller, worker)
    assert not _missing(controller | worker)


def test_every_alert_is_listed() -> None:
    alerts = set(re.findall(r"alert: (\w+)", (ROOT / "helm" / "qscale" / "templates" /
                                               "_alerts.tpl").read_text()))
    assert len(alerts) >= 5, alerts
    assert not _missing(alerts)



def test_the_manuals_pause_dead_letter_classes_and_result_call_are_the_codes() -> None:
    """The annotation the manual pauses with is the one the controller reads, the
    dead-letter classes it lists are exactly the metric's, and its Python call exists."""
    from controller.pool import PAUSED_ANNOTATION
    from worker.api.client import Client
    from worker.runtime import metrics

    used = set(re.findall(r"annotate wp \S+ (qscale\.io/[a-z-]+)[=-]", MANUAL))
    assert used == {PAUSED_ANNOTATION}, used
    # Every label reason_class can return (exported at 0 from the start).
    classes = set(metrics.DEAD_LETTER_REASONS)
    assert metrics.reason_class("no marker at all") in classes
    listed = MANUAL.split("counts them by class:", 1)[1].split(".", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", listed)) == classes
    assert "get_client().async_result(task_id)" in MANUAL
    assert callable(getattr(Client, "async_result", None))
