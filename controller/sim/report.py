"""Turn simulation results into the RESULTS.md table and one PNG timeline per trace.

The table states, per trace, whether qscale met the goal against each KEDA setup
(equal or better p95 wait, at least 3x fewer pod-seconds than KEDA's defaults and
40% fewer than tuned KEDA, zero interrupted tasks) — a miss is printed as a miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from controller.sim.model import SimResult

KEDA_DEFAULT_NAME, KEDA_TUNED_NAME = "keda-default", "keda-tuned"
# (baseline, required pod-second ratio baseline/qscale)
GOALS = ((KEDA_DEFAULT_NAME, 3.0), (KEDA_TUNED_NAME, 1 / 0.6))
_COLOURS = {KEDA_DEFAULT_NAME: "tab:red", KEDA_TUNED_NAME: "tab:orange",
            "qscale-queue": "tab:blue", "qscale-latency": "tab:green"}


def _row(r: SimResult, base: dict[str, SimResult]) -> str:
    ratios = [f"{base[b].pod_seconds / r.pod_seconds:.2f}x" if b in base else "-"
              for b, _ in GOALS]
    return (f"| {r.scaler} | {r.pod_seconds:,.0f} | {ratios[0]} | {ratios[1]} "
            f"| {r.wait_percentile(50):.1f} | {r.wait_percentile(95):.1f} "
            f"| {r.interrupted} | {r.max_replicas} | {r.scale_events} / {r.reversals} "
            f"| {r.completed}/{r.arrived} |")


def goal_verdicts(results: Sequence[SimResult]) -> list[str]:
    """One line per (qscale variant, KEDA baseline): met, or what was missed."""
    base = {r.scaler: r for r in results if r.scaler.startswith("keda")}
    lines = []
    for r in results:
        if r.scaler.startswith("keda"):
            continue
        for name, ratio in GOALS:
            if name not in base:
                continue
            b = base[name]
            misses = []
            if r.wait_percentile(95) > b.wait_percentile(95):
                misses.append(f"p95 wait {r.wait_percentile(95):.1f} s > "
                              f"{b.wait_percentile(95):.1f} s")
            got = b.pod_seconds / r.pod_seconds
            if got < ratio:
                misses.append(f"pod-seconds only {got:.2f}x fewer (goal {ratio:.2f}x)")
            if r.interrupted:
                misses.append(f"{r.interrupted} tasks interrupted")
            verdict = "MET" if not misses else "MISSED: " + "; ".join(misses)
            lines.append(f"- {r.scaler} vs {name}: {verdict}")
    return lines


def frontier_table(frontier: Sequence[SimResult]) -> list[str]:
    """qscale policy settings swept: the pod-seconds each p95 wait costs."""
    rows = ["| qscale setting | pod-seconds | p50 wait s | p95 wait s | interrupted |",
            "|---|---:|---:|---:|---:|"]
    rows += [f"| {r.scaler} | {r.pod_seconds:,.0f} | {r.wait_percentile(50):.1f} "
             f"| {r.wait_percentile(95):.1f} | {r.interrupted} |" for r in frontier]
    return rows


def iso_wait_verdicts(results: Sequence[SimResult], frontier: Sequence[SimResult]) -> list[str]:
    """Compare at equal p95: the cheapest swept qscale setting that waits no longer."""
    lines = []
    base = {r.scaler: r for r in results}
    for name, ratio in GOALS:
        if name not in base:
            continue
        b = base[name]
        fits = [r for r in frontier
                if r.wait_percentile(95) <= b.wait_percentile(95) and not r.interrupted]
        if not fits:
            lines.append(f"- at p95 <= {name}'s {b.wait_percentile(95):.1f} s: "
                         "no swept qscale setting qualifies")
            continue
        best = min(fits, key=lambda r: r.pod_seconds)
        got = b.pod_seconds / best.pod_seconds
        verdict = "MET" if got >= ratio else f"MISSED (goal {ratio:.2f}x)"
        lines.append(f"- at p95 <= {name}'s {b.wait_percentile(95):.1f} s: {best.scaler} "
                     f"(p95 {best.wait_percentile(95):.1f} s) uses {got:.2f}x fewer "
                     f"pod-seconds: {verdict}")
    return lines


def markdown_table(trace: str, description: str, results: Sequence[SimResult],
                   floor: float) -> str:
    base = {r.scaler: r for r in results}
    head = [
        f"### {trace}", "", f"{description}. Work floor (service time / slots per pod): "
        f"{floor:,.0f} pod-seconds.", "",
        "| scaler | pod-seconds | KEDA-default / this | KEDA-tuned / this | p50 wait s "
        "| p95 wait s | interrupted | max replicas | scale events / reversals "
        "| completed/arrived |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    body = [_row(r, base) for r in results]
    return "\n".join([*head, *body, "", "Goal check with the default settings:", "",
                      *goal_verdicts(results), ""])


def plot_trace(trace: str, results: Sequence[SimResult], out: Path) -> Path:
    """Queue depth and replicas over time for every scaler on one trace."""
    fig, (ax_q, ax_r) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for r in results:
        t = r.timeline["t"] / 60.0
        colour = _COLOURS.get(r.scaler)
        ax_q.plot(t, r.timeline["ready"], lw=0.8, label=r.scaler, color=colour)
        ax_r.plot(t, r.timeline["pods"], lw=0.8, label=r.scaler, color=colour)
    ax_q.set_ylabel("ready tasks")
    ax_q.set_yscale("symlog", linthresh=10)
    ax_r.set_ylabel("pods (incl. starting/draining)")
    ax_r.set_xlabel("minutes")
    ax_q.set_title(f"{trace}: queue depth and pods per scaler")
    ax_q.legend(fontsize=8, loc="upper right")
    for ax in (ax_q, ax_r):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / f"{trace}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
