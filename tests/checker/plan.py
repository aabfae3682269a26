"""What a checker run publishes and which faults it injects, drawn by hypothesis.

A plan is a list of operations spread over the run (plain tasks, retries,
countdowns, chains, groups, chords, tasks that crash or exceed the hard limit,
hostile bodies from a grammar of JSON and raw bytes, duplicates of earlier
messages republished at the broker) and a schedule of faults. `draw_plan(seed)`
is deterministic for a seed, so a failure is replayed with the seed it prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.internal.conjecture import providers

# The checker's workers allow this many retries; planned failures stay well below
# for tasks that must succeed, so injected kills (which cost a retry) cannot push
# them over, and far above for tasks that must fail.
MAX_RETRIES = 6
ALWAYS = 99

FAULTS = ("kill_child", "kill_worker", "drain_worker", "kill_broker", "latency", "reset",
          "timeout", "half_open")


@dataclass(frozen=True)
class Op:
    """One thing to publish, `at` seconds into the run."""

    at: float
    kind: str                  # task, countdown, chain, group, chord, hostile, duplicate
    specs: tuple[dict[str, Any], ...] = ()
    delay: float = 0.0
    priority: int | None = None
    body: bytes = b""          # hostile
    of: int = 0                # duplicate: index of the op whose messages are copied


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    seconds: float = 2.0       # how long a network fault lasts


@dataclass
class Plan:
    seed: int
    ops: list[Op] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


def _spec(must_fail: bool) -> st.SearchStrategy[dict[str, Any]]:
    """How a run behaves: a few failures, crashes or hangs it survives, or always one."""
    if must_fail:
        return st.sampled_from([{"fail": ALWAYS}, {"crash": ALWAYS}, {"hang": ALWAYS}])
    return st.fixed_dictionaries({}, optional={
        "fail": st.integers(1, 2), "crash": st.just(1), "hang": st.just(1),
        "sleep": st.sampled_from([0.05, 0.2, 0.5])}).filter(
            lambda s: not ("hang" in s and "crash" in s))


_survivor = _spec(False)
_any_spec = st.sampled_from([False] * 7 + [True]).flatmap(_spec)  # one in eight must fail

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12)


@st.composite
def _hostile(draw: st.DrawFn) -> bytes:
    """A body no worker may run: malformed, deeply nested, non-finite, wrong types,
    an unknown task, raw bytes."""
    kind = draw(st.sampled_from(["nested", "raw", "json", "envelope", "nan"]))
    if kind == "nested":
        depth = draw(st.integers(40, 6000))
        return b"[" * depth + b"]" * draw(st.sampled_from([0, depth]))
    if kind == "raw":
        return draw(st.binary(min_size=1, max_size=200))
    if kind == "json":
        return json.dumps(draw(_json), allow_nan=True).encode()
    doc: dict[str, Any] = {"v": 1, "id": f"hostile-{draw(st.integers(0, 10**9))}",
                           "task": draw(st.sampled_from(["chk.nope", "chk.reduce", ""])),
                           "args": draw(st.one_of(_json, st.lists(_json, max_size=2)))}
    if kind == "nan":
        doc["deadline"] = float("nan")
    elif doc["task"] == "chk.reduce":
        doc["args"] = [[], {}, 1, 2]  # wrong arity: a bad-arguments dead letter
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def _op(draw: st.DrawFn, at: float) -> Op:
    kind = draw(st.sampled_from(["task"] * 6 + ["countdown", "chain", "chain", "group",
                                                "chord", "hostile", "duplicate"]))
    priority = draw(st.one_of(st.none(), st.integers(0, 9)))
    if kind in ("task", "countdown"):
        delay = draw(st.sampled_from([0.5, 1.5, 3.0])) if kind == "countdown" else 0.0
        return Op(at, kind, (draw(_any_spec),), delay=delay, priority=priority)
    if kind == "chain":
        return Op(at, kind, tuple(draw(st.lists(_any_spec, min_size=2, max_size=4))))
    if kind in ("group", "chord"):
        members = draw(st.lists(_any_spec, min_size=1, max_size=5))
        callback = [draw(_survivor)] if kind == "chord" else []
        return Op(at, kind, tuple(members + callback))
    if kind == "hostile":
        return Op(at, kind, body=draw(_hostile()))
    return Op(at, kind, of=draw(st.integers(0, 10**6)))


@st.composite
def plans(draw: st.DrawFn, ops: int, window: float, faults: int) -> tuple[list[Op], list[Fault]]:
    times = sorted(draw(st.lists(st.floats(0, window), min_size=ops, max_size=ops)))
    drawn = [draw(_op(at)) for at in times]
    fault_times = sorted(draw(st.lists(st.floats(1.0, window), min_size=faults,
                                       max_size=faults)))
    scheduled = [Fault(at, draw(st.sampled_from(FAULTS)),
                       draw(st.sampled_from([1.0, 2.0, 4.0]))) for at in fault_times]
    return drawn, scheduled


CHUNK_OPS = 60  # hypothesis draws at most this many operations in one example


def draw_plan(seed: int, *, ops: int, window: float, faults: int) -> Plan:
    """The plan for `seed` (hypothesis draws it; the same seed gives the same plan).

    A long plan is drawn as consecutive chunks (one hypothesis example each, seeded
    from `seed` and the chunk's number), each over its own share of the window."""
    chunks = max(1, -(-ops // CHUNK_OPS))
    plan = Plan(seed=seed)
    span = window / chunks
    for n in range(chunks):
        part_ops, part_faults = _draw_chunk(seed * 1000 + n if n else seed,
                                            ops=ops // chunks, window=span,
                                            faults=faults // chunks)
        plan.ops += [replace(op, at=op.at + n * span) for op in part_ops]
        plan.faults += [replace(f, at=f.at + n * span) for f in part_faults]
    return plan


def _draw_chunk(seed: int, *, ops: int, window: float, faults: int
                ) -> tuple[list[Op], list[Fault]]:
    drawn: dict[str, Any] = {}

    # Hypothesis opens with its simplest examples (all plain tasks, every fault the
    # same); the last of several is a typical one.
    @settings(max_examples=8, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        drawn["plan"] = data.draw(plans(ops, window, faults))

    # Hypothesis also draws constants found in the local modules already imported, so
    # the same seed would give another plan in a full run than in a replay; a replay
    # must give the same one.
    saved = providers._get_local_constants
    providers._get_local_constants = providers.Constants
    try:
        hypothesis_seed(seed)(draw)()
    finally:
        providers._get_local_constants = saved
    op_list, fault_list = drawn["plan"]
    return op_list, fault_list
