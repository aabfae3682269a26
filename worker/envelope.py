"""The wire format: one JSON envelope per message. Nothing else parses raw bodies.

Messages are JSON objects (never pickle). Everything a worker needs to run,
retry, resume or continue a task travels in the envelope, so any worker can
pick up any message.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from worker.errors import BadMessage

WIRE_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB

JsonDict = dict[str, Any]


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
    def from_json(cls, raw: Any) -> Signature:
        if not isinstance(raw, dict):
            raise BadMessage("signature must be a JSON object")
        task = raw.get("task")
        if not isinstance(task, str) or not task:
            raise BadMessage("signature.task must be a non-empty string")
        args = raw.get("args", [])
        kwargs = raw.get("kwargs", {})
        if not isinstance(args, list):
            raise BadMessage("signature.args must be a list")
        if not isinstance(kwargs, dict):
            raise BadMessage("signature.kwargs must be an object")
        queue = raw.get("queue")
        priority = raw.get("priority")
        if queue is not None and not isinstance(queue, str):
            raise BadMessage("signature.queue must be a string")
        if priority is not None and not isinstance(priority, int):
            raise BadMessage("signature.priority must be an integer")
        immutable = raw.get("immutable", False)
        task_id = raw.get("task_id")
        if not isinstance(immutable, bool):
            raise BadMessage("signature.immutable must be a boolean")
        if task_id is not None and (not isinstance(task_id, str) or not task_id):
            raise BadMessage("signature.task_id must be a non-empty string")
        return cls(task=task, args=args, kwargs=kwargs, queue=queue, priority=priority,
                   immutable=immutable, task_id=task_id)


@dataclass(frozen=True)
class ChordRef:
    """Membership of a chord: when all `size` members finish, `callback` runs."""

    id: str
    size: int
    index: int
    callback: Signature

    def to_json(self) -> JsonDict:
        return {"id": self.id, "size": self.size, "index": self.index,
                "callback": self.callback.to_json()}

    @classmethod
    def from_json(cls, raw: Any) -> ChordRef:
        if not isinstance(raw, dict):
            raise BadMessage("chord must be a JSON object")
        cid, size, index = raw.get("id"), raw.get("size"), raw.get("index")
        if not isinstance(cid, str) or not isinstance(size, int) or not isinstance(index, int):
            raise BadMessage("chord needs string id, integer size and index")
        if size < 1 or not 0 <= index < size:
            raise BadMessage("chord index out of range")
        return cls(id=cid, size=size, index=index,
                   callback=Signature.from_json(raw.get("callback")))


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
                       enqueued_at=time.time() if now is None else now)

    def to_json(self) -> JsonDict:
        out: JsonDict = {
            "v": WIRE_VERSION, "id": self.id, "task": self.task, "args": self.args,
            "kwargs": self.kwargs, "queue": self.queue, "attempt": self.attempt,
            "enqueued_at": self.enqueued_at, "first_enqueued_at": self.first_enqueued_at,
        }
        optional: JsonDict = {
            "deadline": self.deadline, "checkpoint_key": self.checkpoint_key,
            "priority": self.priority, "parent_id": self.parent_id,
            "link": [s.to_json() for s in self.link] or None,
            "chord": self.chord.to_json() if self.chord else None,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        if self.ignore_result:
            out["ignore_result"] = True
        return out

    def encode(self) -> bytes:
        """Serialize to compact JSON bytes; raises BadMessage for non-JSON arguments."""
        try:
            return json.dumps(self.to_json(), separators=(",", ":"),
                              allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise BadMessage(f"arguments are not JSON-serializable: {exc}") from exc


def _expect(raw: JsonDict, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in raw:
        raise BadMessage(f"missing field {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadMessage(f"field {key!r} must be {what}")
    return value


def _optional(raw: JsonDict, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = raw.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise BadMessage(f"field {key!r} must be {what}")
    return value


def decode(body: bytes | str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Envelope:
    """Parse and validate one message body. Every problem raises BadMessage with a reason."""
    size = len(body)
    if size > max_bytes:
        raise BadMessage(f"payload of {size} bytes exceeds the {max_bytes}-byte limit")
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessage(f"malformed JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BadMessage("message must be a JSON object")
    version = raw.get("v", WIRE_VERSION)
    if version != WIRE_VERSION:
        raise BadMessage(f"unsupported envelope version {version!r}")
    ident = _expect(raw, "id", str, "a string")
    task = _expect(raw, "task", str, "a string")
    if not ident or not task:
        raise BadMessage("fields 'id' and 'task' must be non-empty")
    args = _expect(raw, "args", list, "a list") if "args" in raw else []
    kwargs = _expect(raw, "kwargs", dict, "an object") if "kwargs" in raw else {}
    attempt = _optional(raw, "attempt", int, "an integer")
    attempt = 1 if attempt is None else attempt
    if attempt < 1:
        raise BadMessage("field 'attempt' must be >= 1")
    enqueued_at = float(_optional(raw, "enqueued_at", (int, float), "a number") or 0.0)
    first = _optional(raw, "first_enqueued_at", (int, float), "a number")
    deadline = _optional(raw, "deadline", (int, float), "a number")
    links = raw.get("link")
    links = [] if links is None else links
    if not isinstance(links, list):
        raise BadMessage("field 'link' must be a list")
    chord = raw.get("chord")
    return Envelope(
        id=ident, task=task, args=args, kwargs=kwargs,
        queue=_optional(raw, "queue", str, "a string") or "default",
        attempt=attempt, enqueued_at=enqueued_at,
        first_enqueued_at=float(first) if first is not None else enqueued_at,
        deadline=float(deadline) if deadline is not None else None,
        checkpoint_key=_optional(raw, "checkpoint_key", str, "a string"),
        priority=_optional(raw, "priority", int, "an integer"),
        ignore_result=bool(raw.get("ignore_result", False)),
        link=tuple(Signature.from_json(s) for s in links),
        chord=ChordRef.from_json(chord) if chord is not None else None,
        parent_id=_optional(raw, "parent_id", str, "a string"),
    )
