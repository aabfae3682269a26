"""Replay a trace into every scaler's queue at once, on the trace's own clock.

Each arrival is published to all queues in the same moment (the queue order rotates,
so no scaler is always first); arrivals that fall due together (a burst) go out as
one `publish_many` per queue. The publish time recorded for a task is when its publish
call returned, i.e. when the broker had it: queue wait runs from there to the start of
the execution that completed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.sim.traces import Trace
from worker.brokers import open_broker
from worker.envelope import Envelope

TASK = "bench.sleep"


@dataclass
class Published:
    """Per queue: task id -> (trace index, publish time)."""

    t0: float = 0.0
    tasks: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)
    late: float = 0.0   # the largest lag behind the trace's clock (s)


def replay(trace: Trace, broker_url: str, queues: Sequence[str], run: str,
           speed: float = 1.0) -> Published:
    """Publish the whole trace; blocks for its active period (scaled by 1/speed)."""
    out = Published(tasks={q: {} for q in queues})
    order = list(queues)
    with open_broker(broker_url) as broker:
        out.t0 = time.time()
        i, n = 0, len(trace.arrivals)
        while i < n:
            due = out.t0 + float(trace.arrivals[i]) / speed
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            now = time.time()
            out.late = max(out.late, now - due)
            j = i
            while j < n and out.t0 + float(trace.arrivals[j]) / speed <= now:
                j += 1
            for q in order:
                envs = [Envelope.create(TASK, [round(float(trace.service_times[k]), 3), run],
                                        queue=q) for k in range(i, j)]
                if len(envs) == 1:
                    broker.publish(q, envs[0].encode())
                else:
                    broker.publish_many(q, [e.encode() for e in envs])
                sent = time.time()
                for k, env in zip(range(i, j), envs, strict=True):
                    out.tasks[q][env.id] = (k, sent)
            order = order[1:] + order[:1]
            i = j
    return out
