"""The @task decorator, signatures, argument binding and remote errors (pure)."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import pytest

from worker import Client, TaskContext, task
from worker.api import registry
from worker.api.handles import RemoteError, remote_error, remote_error_class
from worker.api.task import Task
from worker.errors import BadMessage, ConfigError
from worker.runtime.executor import Executor
from worker.runtime.outcome import Settle
from worker.settings import load_settings


@task
def plain(x: int, y: int = 2) -> int:
    return x * y


@task(name="unit.options", queue="fast", max_retries=7, retry_for=(OSError,),
      soft_time_limit=1.5, hard_time_limit=9.0, ignore_result=True)
def with_options(*values: int) -> int:
    return sum(values)


@task(name="unit.bound", bind=True)
def bound(ctx: TaskContext, start: int) -> dict[str, Any]:
    seen = ctx.last_checkpoint
    ctx.checkpoint({"at": start})
    return {"seen": seen, "now": ctx.last_checkpoint, "attempt": ctx.attempt}


def test_default_name_is_module_and_qualname() -> None:
    assert plain.name == f"{__name__}.plain"
    assert registry.lookup(plain.name) is plain.spec
    assert isinstance(plain, Task) and plain.__doc__ is None
    assert plain.fn.__name__ == "plain" and plain.__wrapped__ is plain.fn  # type: ignore[attr-defined]


def test_options_are_exposed_through_the_registry() -> None:
    spec = registry.lookup("unit.options")
    assert spec is not None
    assert (spec.queue, spec.max_retries, spec.retry_for, spec.ignore_result) == (
        "fast", 7, (OSError,), True)
    assert registry.hard_time_limit("unit.options", 60) == 9.0
    assert registry.soft_time_limit("unit.options", 0) == 1.5
    assert registry.hard_time_limit(plain.name, 60) == 60
    assert registry.hard_time_limit(plain.name, 0) is None


def test_direct_calls_run_locally() -> None:
    assert plain(3) == 6 and with_options(1, 2, 3) == 6
    assert bound(4) == {"seen": None, "now": {"at": 4}, "attempt": 1}


def test_registering_another_function_under_a_taken_name_fails() -> None:
    def impostor() -> None:
        return None

    with pytest.raises(ConfigError, match="already registered"):
        task(name="unit.options")(impostor)


def test_envelope_carries_queue_options_and_deadline() -> None:
    env = with_options.envelope([1, 2], priority=3, task_id="fixed")
    assert (env.task, env.queue, env.args, env.priority, env.id, env.ignore_result) == (
        "unit.options", "fast", [1, 2], 3, "fixed", True)
    assert plain.envelope([1], queue="other").queue == "other"
    expires = plain.envelope([1], expires=30)
    assert expires.deadline == pytest.approx(expires.enqueued_at + 30)
    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert plain.envelope([1], deadline=when).deadline == when.timestamp()


def test_signatures() -> None:
    sig = plain.s(5, y=3)
    assert (sig.task, sig.args, sig.kwargs, sig.queue, sig.immutable) == (
        plain.name, (5,), {"y": 3}, "default", False)
    assert with_options.si(1).immutable and with_options.si(1).queue == "fast"
    wire = sig.set(queue="q").wire(task_id="id1")
    assert (wire.queue, wire.task_id, wire.args) == ("q", "id1", [5])


@pytest.mark.parametrize(("args", "kwargs", "reason"), [
    ([], {}, "missing a required argument: 'x'"),
    ([1, 2, 3], {}, "too many positional arguments"),
    ([1], {"z": 1}, "got an unexpected keyword argument 'z'"),
    ([1], {"x": 1}, "multiple values for argument 'x'"),
])
def test_arguments_that_do_not_bind_are_dead_lettered(
        args: list[Any], kwargs: dict[str, Any], reason: str) -> None:
    # an AMQP broker without a result URL: results disabled, so no I/O happens here
    executor = Executor(load_settings(broker_url="amqp://u:p@127.0.0.1:1//", result_url=""))
    outcome = executor.execute(plain.envelope(args, kwargs).encode())
    assert (outcome.settle, outcome.status) == (Settle.DEAD, "bad_message")
    assert outcome.reason == f"bad arguments: {reason}"


def test_bound_tasks_do_not_count_the_context_as_an_argument() -> None:
    executor = Executor(load_settings(broker_url="amqp://u:p@127.0.0.1:1//", result_url=""))
    outcome = executor.execute(bound.envelope([], {}).encode())
    assert outcome.reason == "bad arguments: missing a required argument: 'start'"


def test_remote_builtin_errors_are_catchable_as_the_builtin() -> None:
    error = remote_error({"type": "ZeroDivisionError", "message": "division by zero",
                          "traceback": "Traceback ...\n  File x\nZeroDivisionError"})
    assert isinstance(error, ZeroDivisionError) and isinstance(error, RemoteError)
    assert str(error).startswith("ZeroDivisionError: division by zero\n\nRemote traceback:")
    assert remote_error_class("ZeroDivisionError") is type(error)  # cached per type


@pytest.mark.parametrize("type_name", ["os.system", "subprocess.Popen", "pickle.loads",
                                       "UnicodeDecodeError", "KeyboardInterrupt", "no such!"])
def test_remote_types_are_never_imported_or_trusted(type_name: str) -> None:
    modules_before = set(sys.modules)
    error = remote_error({"type": type_name, "message": "m", "traceback": ""})
    assert isinstance(error, RemoteError) and error.remote_type == type_name
    assert not isinstance(error, KeyboardInterrupt)
    assert set(sys.modules) == modules_before


def test_non_json_arguments_fail_at_the_producer_before_any_io() -> None:
    offline = Client("redis://127.0.0.1:1/0")  # never connected: encoding fails first
    with pytest.raises(BadMessage, match="object is not JSON"):
        plain.apply_async((object(),), client=offline)


def test_import_task_modules_reports_one_line_naming_the_module() -> None:
    with pytest.raises(ConfigError) as caught:
        registry.import_task_modules(["json", "no_such_module_for_qscale"])
    text = str(caught.value)
    assert text.startswith("QSCALE_IMPORTS: cannot import 'no_such_module_for_qscale': "
                           "ModuleNotFoundError")
    assert "\n" not in text
