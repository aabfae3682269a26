"""The side-by-side table, the goal verdicts and one timeline PNG per (trace, broker).

Ratios are KEDA's pod-seconds over qscale's (> 1: qscale is cheaper). Goals: at equal or
better p95 wait and zero interrupted tasks, >= 3x fewer pod-seconds than KEDA's defaults
and >= 1.67x fewer than tuned KEDA. A goal below the work floor (the pure service time
divided by the processes per pod, what a perfect scaler pays) cannot be met by any
scaler; the verdict says so with the floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GOALS = (("keda-default", 3.0), ("keda-tuned", 1 / 0.6))
_COLOURS = ("tab:red", "tab:orange", "tab:blue", "tab:green", "tab:purple", "tab:brown",
            "tab:pink", "tab:gray")


def _f(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else fmt.format(value)


def _bursts(values: Sequence[float | None]) -> str:
    return " / ".join(_f(v) for v in values) if values else "-"


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One trace on one broker: a row per scaler."""
    base = {r["scaler"]: r for r in rows}
    head = ("| scaler | pod-s | KEDA default / it | KEDA tuned / it | wait p50 / p95 / p99 s "
            "| burst -> task on new pod s | interrupted / redelivered | scale events / "
            "reversals | max pods | finished |")
    out = [head, "|" + "---|" * 10]
    for r in rows:
        ratios = [_f(base[b]["pod_seconds"] / r["pod_seconds"], "{:.2f}x")
                  if b in base and r["pod_seconds"] > 0 else "-" for b, _ in GOALS]
        out.append(
            f"| {r['scaler']} | {r['pod_seconds']:,.0f} | {ratios[0]} | {ratios[1]} "
            f"| {_f(r['wait_p50'])} / {_f(r['wait_p95'])} / {_f(r['wait_p99'])} "
            f"| {_bursts(r['burst_to_new_pod'])} | {r['interrupted']} / {r['redelivered']} "
            f"| {r['scale_events']} / {r['reversals']} | {r['max_pods']} "
            f"| {r['finished']}/{r['published']} |")
    return out


def verdicts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each qscale scaler against each KEDA baseline: met, or what was missed and why."""
    base = {r["scaler"]: r for r in rows}
    lines = []
    for r in rows:
        if not r["scaler"].startswith("qscale"):
            continue
        for name, goal in GOALS:
            if name not in base:
                continue
            b = base[name]
            misses = []
            if r["wait_p95"] > b["wait_p95"]:
                misses.append(f"p95 {r['wait_p95']:.1f} s > {b['wait_p95']:.1f} s")
            got = b["pod_seconds"] / r["pod_seconds"] if r["pod_seconds"] else math.inf
            if got < goal:
                needed = b["pod_seconds"] / goal
                why = (f"; {goal:.2f}x = {needed:,.0f} pod-s is below the work floor "
                       f"{r['work_floor']:,.0f}: unreachable" if needed < r["work_floor"]
                       else f" (goal {goal:.2f}x = {needed:,.0f} pod-s; floor "
                            f"{r['work_floor']:,.0f})")
                misses.append(f"pod-seconds {got:.2f}x fewer{why}")
            if r["interrupted"]:
                misses.append(f"{r['interrupted']} interrupted")
            verdict = "met" if not misses else "missed: " + "; ".join(misses)
            lines.append(f"- {r['scaler']} vs {name}: {got:.2f}x, {verdict}")
    return lines


def plot(rows: Sequence[dict[str, Any]], title: str, path: Path) -> None:
    """Depth and pods over time, one panel per scaler, shared axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.0 * len(rows) + 0.8),
                             sharex=True, squeeze=False)
    peak_depth = max((max(r["timeline"]["ready"] or [0]) + max(r["timeline"]["in_flight"]
                      or [0]) for r in rows), default=1) or 1
    peak_pods = max((max(r["timeline"]["pods"] or [0]) for r in rows), default=1) or 1
    for ax, r, colour in zip(axes[:, 0], rows, _COLOURS, strict=False):
        tl = r["timeline"]
        ready_plus = [a + b for a, b in zip(tl["ready"], tl["in_flight"], strict=True)]
        ax.fill_between(tl["t"], ready_plus, step="post", color="0.85",
                        label="ready + in flight")
        ax.plot(tl["t"], tl["ready"], color="0.4", lw=0.8, label="ready")
        ax.set_ylim(0, peak_depth * 1.05)
        ax.set_ylabel("tasks")
        ax2 = ax.twinx()
        ax2.step(tl["pods_t"], tl["pods"], where="post", color=colour, lw=1.6, label="pods")
        if tl["replicas_t"]:
            ax2.step(tl["replicas_t"] + [tl["pods_t"][-1] if tl["pods_t"] else 0],
                     tl["replicas"] + tl["replicas"][-1:], where="post", color=colour,
                     lw=0.9, ls="--", label="spec replicas")
        ax2.set_ylim(0, peak_pods * 1.15)
        ax2.set_ylabel("pods")
        ax.set_title(f"{r['scaler']}: {r['pod_seconds']:,.0f} pod-s, p95 wait "
                     f"{_f(r['wait_p95'])} s, interrupted {r['interrupted']}", fontsize=9,
                     loc="left")
        if ax is axes[0, 0]:
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right", ncols=4)
    axes[-1, 0].set_xlabel("seconds since the trace started")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(doc: dict[str, Any], out: Path) -> str:
    """The whole report of one results document (tables, verdicts, plots)."""
    lines = [f"# Real KEDA vs qscale on kind ({doc['date']})", "",
             f"Command: `{doc['command']}`. qscale {doc['git']}, KEDA {doc['keda']}, "
             f"Kubernetes {doc['kubernetes']}; pool: {doc['pool']}. Host load average "
             f"during the run (1 min): {doc['load']['min']:.1f}-{doc['load']['max']:.1f}, "
             f"median {doc['load']['median']:.1f} (2 cores, shared).", "",
             "Scalers: " + "; ".join(f"`{k}` = {v}" for k, v in doc["scalers"].items()), ""]
    by_key: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in doc["results"]:
        by_key.setdefault((r["trace"], r["broker"], r.get("round", 0)), []).append(r)
    for (trace, broker, rnd), rows in by_key.items():
        suffix = f", round {rnd + 1}" if doc.get("rounds", 1) > 1 else ""
        png = f"{trace}-{broker}{'-r' + str(rnd + 1) if rnd else ''}.png"
        lines += [f"## {trace} on {broker}{suffix}", "",
                  f"{doc['traces'].get(trace, '')}. Work floor "
                  f"{rows[0]['work_floor']:,.0f} pod-s; {rows[0]['published']} tasks.", "",
                  *table(rows), "", *verdicts(rows), "", f"![{trace} {broker}]({png})", ""]
        plot(rows, f"{trace} on {broker}{suffix}", out / png)
    text = "\n".join(lines)
    (out / "RESULTS.md").write_text(text)
    return text
