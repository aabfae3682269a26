"""Turns a benchmark summary into a console table, a JSON file and a bar chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FRAMEWORK_ORDER = ("qscale", "celery", "dramatiq", "rq")
COLORS = {"qscale": "#2b6cb0", "celery": "#a0aec0", "dramatiq": "#718096", "rq": "#cbd5e0"}
# The goals from the worker issue: qscale's no-op throughput over each peer's.
NOOP_GOALS = {"celery": 3.0, "dramatiq": 1.5}
EFFICIENCY_GOAL = 0.9


def _fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def goal_lines(summary: dict[str, Any]) -> list[str]:
    """One PASS/MISS line per goal, from the medians."""
    lines = []
    for cell, ratios in sorted(summary["ratios"].items()):
        if not cell.endswith("/noop"):
            continue
        for peer, goal in NOOP_GOALS.items():
            ratio = ratios.get(peer)
            verdict = "n/a" if ratio is None else "PASS" if ratio >= goal else "MISS"
            lines.append(f"{cell}: qscale/{peer} = {_fmt(ratio, '.2f')}x "
                         f"(goal >= {goal}x) {verdict}")
    for label, eff in sorted(summary["efficiency"].items()):
        steady = eff.get("steady")
        if label.startswith("bare/"):
            lines.append(f"cpu efficiency of a bare multiprocessing pool (the machine's ceiling "
                         f"during the run): steady {_fmt(steady, '.0%')}, "
                         f"wall {_fmt(eff.get('wall'), '.0%')}")
            continue
        verdict = "n/a" if steady is None else "PASS" if steady >= EFFICIENCY_GOAL else "MISS"
        lines.append(f"cpu efficiency {label}: steady {_fmt(steady, '.0%')}, "
                     f"wall {_fmt(eff.get('wall'), '.0%')} (goal >= {EFFICIENCY_GOAL:.0%}) "
                     f"{verdict}; relative to the bare pool: steady "
                     f"{_fmt(eff.get('steady_vs_bare'), '.0%')}, wall "
                     f"{_fmt(eff.get('wall_vs_bare'), '.0%')}; CPU per task "
                     f"{_fmt(eff.get('cpu_per_task_vs_bare'), '.2f')}x the bare pool's")
    return lines


def table_text(summary: dict[str, Any], processes: int) -> str:
    """Markdown table: median tasks/s per framework and qscale's ratio to each peer."""
    header = ["broker", "workload", *(f"{fw} tasks/s" for fw in FRAMEWORK_ORDER),
              *(f"qscale/{fw}" for fw in FRAMEWORK_ORDER[1:])]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in sorted(summary["table"]):
        broker, workload = cell.split("/")
        by_fw = summary["table"][cell]
        values = []
        for fw in FRAMEWORK_ORDER:
            stats = by_fw.get(fw)
            text = _fmt(stats["tps"], ",.0f") if stats else "-"
            if stats and fw == "dramatiq" and workload == "noop":
                text += f" (t={stats['threads']})"
            values.append(text)
        ratios = summary["ratios"].get(cell, {})
        values += [_fmt(ratios.get(fw), ".2f") + ("x" if ratios.get(fw) else "")
                   for fw in FRAMEWORK_ORDER[1:]]
        rows.append("| " + " | ".join([broker, workload, *values]) + " |")
    rows += ["", "Worker CPU per task (µs, whole process group; lower is better) and start-up "
             "(s from launch to first completion):", "",
             "| broker | workload | " + " | ".join(FRAMEWORK_ORDER) + " |",
             "|" + "---|" * (2 + len(FRAMEWORK_ORDER))]
    for cell in sorted(summary["table"]):
        by_fw = summary["table"][cell]
        values = []
        for fw in FRAMEWORK_ORDER:
            stats = by_fw.get(fw)
            values.append(f"{_fmt(stats['cpu_us_per_task'], ',.0f')} µs / "
                          f"{_fmt(stats['first_completion_s'], '.1f')} s" if stats else "-")
        rows.append("| " + " | ".join([*cell.split("/"), *values]) + " |")
    return "\n".join(rows) + f"\n\nAll workers with {processes} processes; medians of each case."


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def plot(summary: dict[str, Any], path: Path, processes: int) -> None:
    """Grouped bars: one panel per workload, one group per broker, one bar per framework."""
    workloads = sorted({cell.split("/")[1] for cell in summary["table"]}, reverse=True)
    fig = Figure(figsize=(4.2 * len(workloads), 3.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(workloads), squeeze=False)
    for ax, workload in zip(axes[0], workloads, strict=True):
        brokers = sorted({c.split("/")[0] for c in summary["table"]
                          if c.endswith("/" + workload)}, reverse=True)
        width = 0.8 / len(FRAMEWORK_ORDER)
        for index, fw in enumerate(FRAMEWORK_ORDER):
            heights = [(summary["table"][f"{b}/{workload}"].get(fw) or {}).get("tps") or 0.0
                       for b in brokers]
            xs = [i + (index - (len(FRAMEWORK_ORDER) - 1) / 2) * width
                  for i in range(len(brokers))]
            ax.bar(xs, heights, width, label=fw, color=COLORS[fw])
        ax.set_xticks(range(len(brokers)), brokers)
        ax.set_title(f"{'no-op' if workload == 'noop' else 'CPU-bound (~10 ms CPU)'} tasks, "
                     f"{processes} processes", fontsize=9)
        ax.set_ylabel("tasks/s (median)", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
