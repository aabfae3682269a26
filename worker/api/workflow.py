"""Signatures and workflows: chain (pipeline), group (scatter-gather), chord (map-reduce).

Everything travels in the envelope, so no coordinator process is needed: a chain
carries its remaining steps in `link`; chord members carry a ChordRef, and the
member that completes the set (atomic count in the result store) sends the callback.

A chord member that ends in the dead-letter queue fails the chord: the callback
does not run and the chord's result is FAILURE with a ChordError naming the member.
Requeueing that member with `dlq requeue` reopens the chord (worker.results.reopen):
if it succeeds now, the chord completes after all.

Delivery is at-least-once: a chord's callback is sent by the member that completed
it; only a rerun of that member (its ack was lost) may send it again, while the
callback has left no record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from worker import envelope as wire
from worker.api.client import Client, get_client
from worker.api.handles import AsyncResult, GroupResult
from worker.envelope import ChordRef, Envelope
from worker.results import ResultsDisabled


@dataclass(frozen=True)
class TaskSignature:
    """A task call to send later: `f.s(*args, **kwargs)` (or `f.si(...)`: immutable)."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    immutable: bool = False

    def wire(self, task_id: str | None = None) -> wire.Signature:
        return wire.Signature(task=self.task, args=list(self.args), kwargs=dict(self.kwargs),
                              queue=self.queue, priority=self.priority,
                              immutable=self.immutable, task_id=task_id)

    def envelope(self, *, task_id: str | None = None, **options: Any) -> Envelope:
        return Envelope.create(self.task, self.args, self.kwargs,
                               queue=self.queue or "default", task_id=task_id,
                               priority=self.priority, **options)

    def set(self, **changes: Any) -> TaskSignature:
        """A copy with other options (queue=..., priority=...)."""
        return replace(self, **changes)

    def apply_async(self, *, client: Client | None = None, countdown: float = 0.0,
                    task_id: str | None = None) -> AsyncResult:
        return (client or get_client()).send(self.envelope(task_id=task_id),
                                             countdown=countdown)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send with extra args appended and kwargs merged."""
        merged = replace(self, args=(*self.args, *args), kwargs={**self.kwargs, **kwargs})
        return merged.apply_async()

    def __or__(self, other: TaskSignature | chain) -> chain:
        return chain(self, other)


class chain:  # noqa: N801 - Celery's spelling
    """Run signatures one after another; each result is prepended to the next args."""

    def __init__(self, *steps: TaskSignature | chain) -> None:
        flat: list[TaskSignature] = []
        for step in steps:
            if isinstance(step, chain):
                flat.extend(step.steps)
            elif isinstance(step, TaskSignature):
                flat.append(step)
            else:
                raise TypeError(f"chain steps must be task signatures, not {step!r}")
        if not flat:
            raise ValueError("chain needs at least one signature")
        self.steps: list[TaskSignature] = flat

    def __or__(self, other: TaskSignature | chain) -> chain:
        return chain(self, other)

    def first_envelope(self, **options: Any) -> tuple[Envelope, str]:
        """The first step's envelope (carrying the rest as `link`) and the last step's id."""
        ids = [Envelope.new_id() for _ in self.steps]
        links = tuple(step.wire(task_id) for step, task_id in
                      zip(self.steps[1:], ids[1:], strict=True))
        return self.steps[0].envelope(task_id=ids[0], link=links, **options), ids[-1]

    def apply_async(self, *, client: Client | None = None, countdown: float = 0.0) -> AsyncResult:
        """Send the first step; returns the handle of the last step's result."""
        first, last_id = self.first_envelope()
        client = client or get_client()
        client.send(first, countdown=countdown)
        return client.async_result(last_id)

    def delay(self) -> AsyncResult:
        return self.apply_async()


Member = TaskSignature | chain


def _member_envelope(member: Member, **options: Any) -> tuple[Envelope, str]:
    """A group member's first envelope and the id whose result is the member's result."""
    if isinstance(member, chain):
        return member.first_envelope(**options)
    env = member.envelope(**options)
    return env, env.id


class group:  # noqa: N801 - Celery's spelling
    """Run signatures (or chains) in parallel; `.get()` on the result lists them in order."""

    def __init__(self, *members: Member | Iterable[Member]) -> None:
        flat: list[Member] = []
        for member in members:
            if isinstance(member, TaskSignature | chain):
                flat.append(member)
            else:
                flat.extend(member)
        for member in flat:
            if not isinstance(member, TaskSignature | chain):
                raise TypeError(f"group members must be signatures or chains, not {member!r}")
        self.members = flat

    def apply_async(self, *, client: Client | None = None) -> GroupResult:
        client = client or get_client()
        planned = [_member_envelope(m) for m in self.members]
        client.send_many([env for env, _ in planned])
        return GroupResult(Envelope.new_id(), [client.async_result(last) for _, last in planned])

    def delay(self) -> GroupResult:
        return self.apply_async()


class chord:  # noqa: N801 - Celery's spelling
    """Run a group, then `callback` with the list of member results (in order)."""

    def __init__(self, header: group | Iterable[Member],
                 callback: TaskSignature | None = None) -> None:
        self.header = header if isinstance(header, group) else group(header)
        self.callback = callback

    def __call__(self, callback: TaskSignature) -> AsyncResult:
        """Celery style: `chord(header)(callback)` sends at once."""
        return chord(self.header, callback).apply_async()

    def apply_async(self, *, client: Client | None = None) -> AsyncResult:
        """Send the members; returns the handle of the callback's result."""
        if self.callback is None:
            raise TypeError("chord needs a callback: chord(header, callback)")
        client = client or get_client()
        if client.results is None:
            raise ResultsDisabled("chords")
        chord_id = Envelope.new_id()
        callback = self.callback.wire(task_id=chord_id)
        members = self.header.members
        if not members:
            args = list(callback.args) if callback.immutable else [[], *callback.args]
            client.send(replace(self.callback, args=tuple(args)).envelope(task_id=chord_id))
            return client.async_result(chord_id)
        client.send_many([
            _member_envelope(member, chord=ChordRef(id=chord_id, size=len(members),
                                                    index=index, callback=callback))[0]
            for index, member in enumerate(members)])
        return client.async_result(chord_id)

    def delay(self) -> AsyncResult:
        return self.apply_async()
