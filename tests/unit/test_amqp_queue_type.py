"""QSCALE_AMQP_QUEUE_TYPE: settings validation, declaration arguments, dead-letter reasons.

Pure logic only; tests/integration/test_amqp_quorum.py checks all of it on RabbitMQ.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest

from worker.brokers._amqp_layout import (
    dead_letter_of,
    max_redeliveries_from_env,
    mismatch_variable,
    queue_arguments,
    queue_type_from_env,
)
from worker.errors import ConfigError
from worker.settings import load_settings

AMQP = "amqp://qscale:qscale@127.0.0.1:5672//"


def _message(body: bytes, headers: dict[str, Any]) -> Any:
    return SimpleNamespace(body=body, properties={"application_headers": headers})


def test_classic_is_the_default_and_keeps_the_old_arguments() -> None:
    assert load_settings(broker_url=AMQP).amqp_queue_type == "classic"
    assert queue_arguments("q", 0) is None
    assert queue_arguments("q", 5) == {"x-max-priority": 5}


def test_quorum_arguments_carry_the_delivery_limit_and_the_dead_letter_route() -> None:
    """RabbitMQ's limit is one more than ours: the worker sees the message once past the
    cap and settles it dead itself (recording FAILURE); RabbitMQ's is the backstop."""
    assert queue_arguments("jobs", 0, "quorum", 5) == {
        "x-queue-type": "quorum", "x-delivery-limit": 6,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "jobs.dead",
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    assert "x-delivery-limit" not in (queue_arguments("jobs", 0, "quorum", 0) or {})


def test_a_bad_queue_type_is_one_line_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSCALE_AMQP_QUEUE_TYPE", "stream")
    with pytest.raises(ConfigError) as info:
        load_settings(broker_url=AMQP)
    assert str(info.value).startswith("QSCALE_AMQP_QUEUE_TYPE: ")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^QSCALE_AMQP_QUEUE_TYPE: must be classic or quorum"):
        queue_type_from_env()
    monkeypatch.setenv("QSCALE_AMQP_QUEUE_TYPE", " Quorum ")
    assert load_settings(broker_url=AMQP).amqp_queue_type == "quorum"
    assert queue_type_from_env() == "quorum"


def test_quorum_with_priorities_is_refused_on_rabbitmq_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSCALE_AMQP_QUEUE_TYPE", "quorum")
    monkeypatch.setenv("QSCALE_MAX_PRIORITY", "3")
    with pytest.raises(ConfigError, match=r"^QSCALE_AMQP_QUEUE_TYPE: quorum queues have no "):
        load_settings(broker_url=AMQP)
    assert load_settings(broker_url="redis://127.0.0.1:6379/0").max_priority == 3
    with pytest.raises(ConfigError, match=r"^QSCALE_AMQP_QUEUE_TYPE: quorum"):
        queue_arguments("q", 3, "quorum", 5)


def test_clients_without_settings_read_the_same_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert max_redeliveries_from_env() == 5
    monkeypatch.setenv("QSCALE_MAX_REDELIVERIES", "0")
    assert max_redeliveries_from_env() == 0
    monkeypatch.setenv("QSCALE_MAX_REDELIVERIES", "-1")
    with pytest.raises(ConfigError, match=r"^QSCALE_MAX_REDELIVERIES: must be an integer >= 0"):
        max_redeliveries_from_env()


def test_a_refused_redeclaration_names_the_setting_behind_the_argument() -> None:
    def refused(argument: str) -> str:
        return (f"PRECONDITION_FAILED - inequivalent arg '{argument}' for queue 'q' in "
                "vhost '/': received none but current is the value 'quorum'")
    assert mismatch_variable(refused("x-queue-type")) == "QSCALE_AMQP_QUEUE_TYPE"
    assert mismatch_variable(refused("x-max-priority")) == "QSCALE_MAX_PRIORITY"
    assert mismatch_variable(refused("x-delivery-limit")) == "QSCALE_MAX_REDELIVERIES"
    assert "QSCALE_AMQP_QUEUE_TYPE" in mismatch_variable("something else")


def test_dead_letters_from_the_delivery_limit_say_why() -> None:
    death = {"count": 1, "reason": b"delivery_limit", "queue": b"jobs",
             "time": dt.datetime(2026, 1, 2, 3, 4, 5), "exchange": b"",
             "routing-keys": [b"jobs"]}
    dead = dead_letter_of("jobs", _message(b"{}", {"x-death": [death]}), delivery_limit=5)
    assert dead.reason == ("delivery limit: delivered 6 times "
                           "(worker died or disconnected each time)")
    assert "'delivery_limit'" in dead.detail
    assert dead.failed_at == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    unknown = dead_letter_of("jobs", _message(b"{}", {"x-death": [death]}))
    assert unknown.reason.startswith("delivery limit: delivered too often")
    expired = dead_letter_of("jobs", _message(b"{}", {"x-death": [{**death, "reason": "expired"}]}))
    assert expired.reason == "rabbitmq: expired"


def test_qscale_dead_letters_keep_their_own_reason() -> None:
    dead = dead_letter_of("jobs", _message(b"x", {
        "x-qscale-reason": b"bad_message", "x-qscale-detail": "not JSON",
        "x-qscale-failed-at": 12.5}), delivery_limit=5)
    assert (dead.reason, dead.detail, dead.failed_at) == ("bad_message", "not JSON", 12.5)
    plain = dead_letter_of("jobs", _message(b"x", {}))
    assert (plain.reason, plain.detail, plain.failed_at) == ("", "", 0.0)
