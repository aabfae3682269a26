"""The wire format: one JSON envelope per message. Nothing else parses raw bodies.

Messages are JSON objects (never pickle). Everything a worker needs to run,
retry, resume or continue a task travels in the envelope, so any worker can
pick up any message.

The format is closed under round trip: `decode(body)` either raises BadMessage or
returns an envelope that `encode()` accepts and that decodes to the same value.
Both directions run the same checks (`_envelope_from`), so a producer cannot send
what a worker would refuse, and a worker cannot re-send (retry, chain step)
something that would break the next one. Bounded on purpose:

* nesting of arguments and results at most MAX_DEPTH levels (a body of 5,000 `[`
  raised RecursionError in the parser, and again wherever it was parsed next);
* integers within 64 bits, floats finite (NaN/Infinity parse in Python's json but
  cannot be encoded again; 1e400 parses as infinity);
* names (task, queue, ids, checkpoint keys) non-empty, at most MAX_NAME_BYTES of
  UTF-8 without control characters: every broker can hold them, suffixes included
  (`<queue>.dead`, `qscale.delay.<queue>.<ms>` within AMQP's 255 bytes);
* priority an integer 0-9 (never a bool), as both brokers accept.

A BadMessage from decode carries what could be salvaged (task id, task name and
the ids of chain steps or a chord callback that depend on it), so a dead letter
still records FAILURE for whoever waits.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from worker.errors import BadMessage

WIRE_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 32                 # nesting of lists/objects inside args, kwargs, results
MAX_NAME_BYTES = 200           # task, queue, id, checkpoint key (UTF-8 bytes)
MAX_INT = 2**63 - 1            # integers travel as signed 64-bit values
MAX_ATTEMPT = 1_000_000
MAX_LINKS = 10_000             # chain steps carried by one message
MAX_CHORD_SIZE = 1_000_000
MAX_TIMESTAMP = 1e11           # epoch seconds (year 5138): enqueued_at, deadline
MAX_DELAY = 366 * 86_400.0     # seconds: the longest countdown or retry delay
# The longest delay a broker is asked for in one go (RabbitMQ's TTL queues hold about
# 24.8 days). A longer one carries `not_before` and is delayed again when it comes early.
MAX_HOP_DELAY = 24 * 86_400.0
# A retry rewrites attempt and enqueued_at, so its body may be a few dozen bytes longer
# than the delivery it replaces. Workers accept this much over QSCALE_MAX_MESSAGE_BYTES
# (producers may not use it), so a message that fit always fits again when retried.
SIZE_HEADROOM = 256

JsonDict = dict[str, Any]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Our encoder writes these first; an undecodable body of ours still names its task.
_HEAD = re.compile(rb'^\s*\{\s*"v"\s*:\s*1\s*,\s*"id"\s*:\s*"([^"\\\x00-\x1f]{1,200})"\s*,'
                   rb'\s*"task"\s*:\s*"([^"\\\x00-\x1f]{1,200})"')


def check_name(value: Any, what: str) -> str:
    """A task, queue or id name every broker and key layout can hold; else BadMessage."""
    if not isinstance(value, str) or not value:
        raise BadMessage(f"{what} must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise BadMessage(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    if _CONTROL.search(value):
        raise BadMessage(f"{what} contains control characters")
    return value


def check_priority(value: Any, what: str = "priority") -> int | None:
    """None or an integer 0-9 (a bool is not a priority); else BadMessage."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise BadMessage(f"{what} must be an integer 0-9, got {value!r}")
    return value


def check_json_value(value: Any, what: str) -> None:
    """Bounded JSON: depth <= MAX_DEPTH, 64-bit integers, finite floats, string keys."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str | bool) or item is None:
            continue
        if isinstance(item, int):
            if not -MAX_INT - 1 <= item <= MAX_INT:
                raise BadMessage(f"{what}: integer outside 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise BadMessage(f"{what}: non-finite number {item!r}")
        elif isinstance(item, list | tuple | dict):
            if depth >= MAX_DEPTH:
                raise BadMessage(f"{what}: nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                if not all(isinstance(k, str) for k in item):
                    raise BadMessage(f"{what}: object keys must be strings")
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        else:
            raise BadMessage(f"{what}: {type(item).__name__} is not JSON")


def _number(raw: Mapping[str, Any], key: str, *, low: float, high: float,
            integer: bool = False, what: str = "") -> Any:
    value: Any = raw.get(key)
    if value is None:
        return None
    label = what or f"field {key!r}"
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or (integer and not isinstance(value, int)):
        raise BadMessage(f"{label} must be {'an integer' if integer else 'a number'}")
    if not (isinstance(value, int) or math.isfinite(value)) or not low <= value <= high:
        raise BadMessage(f"{label} must be within [{low:g}, {high:g}], got {value!r}")
    return value if integer else float(value)


@dataclass(frozen=True)
class Signature:
    """A task call that has not been sent yet (a chain step or a chord callback)."""

    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: JsonDict = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    # `immutable` (f.si): a chain does not prepend the previous result to args.
    # `task_id`: chosen when the workflow is sent, so its result can be awaited.
    immutable: bool = False
    task_id: str | None = None

    def to_json(self) -> JsonDict:
        out = asdict(self)
        if not self.immutable:
            del out["immutable"]
        if self.task_id is None:
            del out["task_id"]
        return out

    @classmethod
    def from_json(cls, raw: Any, what: str = "signature") -> Signature:
        if not isinstance(raw, dict):
            raise BadMessage(f"{what} must be a JSON object")
        args, kwargs = raw.get("args", []), raw.get("kwargs", {})
        if not isinstance(args, list):
            raise BadMessage(f"{what}.args must be a list")
        if not isinstance(kwargs, dict):
            raise BadMessage(f"{what}.kwargs must be an object")
        check_json_value(args, f"{what}.args")
        check_json_value(kwargs, f"{what}.kwargs")
        queue, task_id = raw.get("queue"), raw.get("task_id")
        immutable = raw.get("immutable", False)
        if not isinstance(immutable, bool):
            raise BadMessage(f"{what}.immutable must be a boolean")
        return cls(task=check_name(raw.get("task"), f"{what}.task"), args=args, kwargs=kwargs,
                   queue=None if queue is None else check_name(queue, f"{what}.queue"),
                   priority=check_priority(raw.get("priority"), f"{what}.priority"),
                   immutable=immutable,
                   task_id=None if task_id is None else check_name(task_id, f"{what}.task_id"))


@dataclass(frozen=True)
class ChordRef:
    """Membership of a chord: when all `size` members finish, `callback` runs."""

    id: str
    size: int
    index: int
    callback: Signature

    @property
    def result_id(self) -> str:
        """Where the callback's result (the chord's result) is stored."""
        return self.callback.task_id or self.id

    def to_json(self) -> JsonDict:
        return {"id": self.id, "size": self.size, "index": self.index,
                "callback": self.callback.to_json()}

    @classmethod
    def from_json(cls, raw: Any) -> ChordRef:
        if not isinstance(raw, dict):
            raise BadMessage("chord must be a JSON object")
        size = _number(raw, "size", low=1, high=MAX_CHORD_SIZE, integer=True,
                       what="chord.size")
        index = _number(raw, "index", low=0, high=MAX_CHORD_SIZE - 1, integer=True,
                        what="chord.index")
        if size is None or index is None or index >= size:
            raise BadMessage("chord needs integer size >= 1 and index < size")
        return cls(id=check_name(raw.get("id"), "chord.id"), size=size, index=index,
                   callback=Signature.from_json(raw.get("callback"), "chord.callback"))


@dataclass(frozen=True)
class Envelope:
    """One task message.

    `attempt` counts executions started so far for this id, starting at 1 for the
    first run. `link` is the rest of a chain: on success, the first signature is sent
    with this task's result prepended to its args and the remaining links attached.
    """

    id: str
    task: str
    args: list[Any]
    kwargs: JsonDict
    queue: str
    attempt: int = 1
    enqueued_at: float = 0.0
    first_enqueued_at: float = 0.0
    deadline: float | None = None
    checkpoint_key: str | None = None
    priority: int | None = None
    ignore_result: bool = False
    link: tuple[Signature, ...] = ()
    chord: ChordRef | None = None
    parent_id: str | None = None
    not_before: float | None = None  # epoch s: a delay longer than one hop ends then

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    @classmethod
    def create(cls, task: str, args: list[Any] | tuple[Any, ...] = (),
               kwargs: JsonDict | None = None, *, queue: str = "default",
               task_id: str | None = None, now: float | None = None,
               **options: Any) -> Envelope:
        stamp = time.time() if now is None else now
        return cls(id=task_id or cls.new_id(), task=task, args=list(args),
                   kwargs=dict(kwargs or {}), queue=queue, enqueued_at=stamp,
                   first_enqueued_at=stamp, **options)

    def next_attempt(self, now: float | None = None) -> Envelope:
        """The envelope to send for a retry of this task."""
        return replace(self, attempt=self.attempt + 1,
                       enqueued_at=time.time() if now is None else now, not_before=None)

    def delayed(self, delay: float, now: float | None = None) -> tuple[Envelope, float]:
        """This envelope to send after `delay` s, and the delay to ask the broker for: a
        delay over MAX_HOP_DELAY is cut to it, the envelope carrying when it may run."""
        if delay <= MAX_HOP_DELAY:
            return self, delay
        start = time.time() if now is None else now
        return replace(self, not_before=start + delay), MAX_HOP_DELAY

    @property
    def chain_dependents(self) -> tuple[tuple[str, str], ...]:
        """(result id, task) of the chain's later steps that cannot run if this one does
        not (steps sent by chain() all have ids; the chord is `chord`)."""
        return tuple((s.task_id, s.task) for s in self.link if s.task_id is not None)

    def to_json(self) -> JsonDict:
        out: JsonDict = {
            "v": WIRE_VERSION, "id": self.id, "task": self.task, "args": self.args,
            "kwargs": self.kwargs, "queue": self.queue, "attempt": self.attempt,
            "enqueued_at": self.enqueued_at, "first_enqueued_at": self.first_enqueued_at,
        }
        optional: JsonDict = {
            "deadline": self.deadline, "checkpoint_key": self.checkpoint_key,
            "priority": self.priority, "parent_id": self.parent_id,
            "not_before": self.not_before,
            "link": [s.to_json() for s in self.link] or None,
            "chord": self.chord.to_json() if self.chord else None,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        if self.ignore_result:
            out["ignore_result"] = True
        return out

    def encode(self) -> bytes:
        """Compact JSON bytes that `decode` accepts; BadMessage for anything it would
        refuse (non-JSON or unbounded arguments, a priority or queue no broker takes)."""
        doc = self.to_json()
        _envelope_from(doc)  # the same checks as decode: the round trip stays closed
        try:
            return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise BadMessage(f"arguments are not JSON-serializable: {exc}") from None


def _load(body: bytes | str) -> Any:
    """Parse JSON (NaN and Infinity parse here, so the checks can name the field)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise BadMessage(f"malformed JSON: nested deeper than the parser allows "
                         f"(at most {MAX_DEPTH} levels are accepted)") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessage(f"malformed JSON: {exc}") from None


def _envelope_from(raw: Any) -> Envelope:
    """Validate a parsed document and build its Envelope (every check lives here)."""
    if not isinstance(raw, dict):
        raise BadMessage("message must be a JSON object")
    version = raw.get("v", WIRE_VERSION)
    if isinstance(version, bool) or version != WIRE_VERSION:
        raise BadMessage(f"unsupported envelope version {version!r}")
    for key in ("id", "task"):
        if key not in raw:
            raise BadMessage(f"missing field {key!r}")
    ident, task = check_name(raw["id"], "field 'id'"), check_name(raw["task"], "field 'task'")
    args, kwargs = raw.get("args", []), raw.get("kwargs", {})
    if not isinstance(args, list):
        raise BadMessage("field 'args' must be a list")
    if not isinstance(kwargs, dict):
        raise BadMessage("field 'kwargs' must be an object")
    check_json_value(args, "args")
    check_json_value(kwargs, "kwargs")
    attempt = _number(raw, "attempt", low=1, high=MAX_ATTEMPT, integer=True)
    enqueued_at = _number(raw, "enqueued_at", low=0, high=MAX_TIMESTAMP) or 0.0
    first = _number(raw, "first_enqueued_at", low=0, high=MAX_TIMESTAMP)
    deadline = _number(raw, "deadline", low=0, high=MAX_TIMESTAMP)
    not_before = _number(raw, "not_before", low=0, high=MAX_TIMESTAMP)
    ignore_result = raw.get("ignore_result", False)
    if not isinstance(ignore_result, bool):
        raise BadMessage("field 'ignore_result' must be a boolean")
    links = raw.get("link")
    links = [] if links is None else links
    if not isinstance(links, list) or len(links) > MAX_LINKS:
        raise BadMessage(f"field 'link' must be a list of at most {MAX_LINKS} steps")
    queue, checkpoint_key, parent_id = (raw.get(k) for k in ("queue", "checkpoint_key",
                                                               "parent_id"))
    chord = raw.get("chord")
    return Envelope(
        id=ident, task=task, args=args, kwargs=kwargs,
        queue="default" if queue is None else check_name(queue, "field 'queue'"),
        attempt=1 if attempt is None else attempt, enqueued_at=enqueued_at,
        first_enqueued_at=enqueued_at if first is None else first,
        deadline=deadline,
        checkpoint_key=None if checkpoint_key is None
        else check_name(checkpoint_key, "field 'checkpoint_key'"),
        priority=check_priority(raw.get("priority"), "field 'priority'"),
        ignore_result=ignore_result,
        link=tuple(Signature.from_json(s, f"link[{i}]") for i, s in enumerate(links)),
        chord=None if chord is None else ChordRef.from_json(chord),
        parent_id=None if parent_id is None else check_name(parent_id, "field 'parent_id'"),
        not_before=not_before,
    )


def decode(body: bytes | str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Envelope:
    """Parse and validate one message body. Total: anything wrong raises BadMessage
    with a reason (and whatever ids could be salvaged), nothing else escapes."""
    size = len(body)
    if size > max_bytes:
        oversized = BadMessage(f"payload of {size} bytes exceeds the {max_bytes}-byte limit")
        _salvage_head(oversized, body)
        raise oversized
    raw: Any = None
    try:
        raw = _load(body)
        return _envelope_from(raw)
    except BadMessage as bad:
        if isinstance(raw, dict):
            _salvage(bad, raw)
        else:
            _salvage_head(bad, body)
        raise
    except Exception as exc:  # a bug in a check must not escape either
        unexpected = BadMessage(f"undecodable: {type(exc).__name__}: {exc}")
        _salvage_head(unexpected, body)
        raise unexpected from None


def _salvage_head(bad: BadMessage, body: bytes | str) -> None:
    head = body[:512].encode("utf-8", "replace") if isinstance(body, str) else body[:512]
    match = _HEAD.match(head)
    if match:
        bad.task_id = _name_or_none(match.group(1).decode("utf-8", "replace"))
        bad.task = _name_or_none(match.group(2).decode("utf-8", "replace"))


def _salvage(bad: BadMessage, raw: Mapping[str, Any]) -> None:
    """Ids from a document that failed validation, each checked on its own."""
    bad.task_id, bad.task = _name_or_none(raw.get("id")), _name_or_none(raw.get("task"))
    dependents: list[tuple[str, str]] = []
    links = raw.get("link")
    for step in links[:MAX_LINKS] if isinstance(links, list) else ():
        if isinstance(step, dict) and (sid := _name_or_none(step.get("task_id"))):
            dependents.append((sid, _name_or_none(step.get("task")) or "?"))
    bad.dependents = tuple(dependents)
    chord = raw.get("chord")
    if chord is not None:
        try:
            bad.chord = ChordRef.from_json(chord)
        except BadMessage:  # the chord itself is what is wrong: nothing to fail there
            bad.chord = None


def _name_or_none(value: Any) -> str | None:
    try:
        return check_name(value, "name")
    except BadMessage:
        return None
