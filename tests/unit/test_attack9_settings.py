"""Adversarial review of issue #9: settings that validate and then never work.

"Every setting that parses works; otherwise exit 2 with one line naming the
variable." These parse, then the worker reconnects for ever and never consumes
(RabbitMQ): found by running `python -m worker run` with them.
"""

from __future__ import annotations

import os

import pytest

from worker.errors import ConfigError
from worker.settings import load_settings

AMQP = "amqp://qscale:qscale@127.0.0.1:5672//"


@pytest.mark.parametrize(("env", "variable"), [
    # consumer tag "qscale.<pod>-<pid>.<hex8>" is an AMQP shortstr (<= 255 bytes):
    # every claim fails with "struct.error: ubyte format requires 0 <= number <= 255".
    ({"QSCALE_BROKER_URL": AMQP, "QSCALE_POD_NAME": "p" * 240}, "QSCALE_POD_NAME"),
    # RabbitMQ reserves amq.*: ACCESS_REFUSED on every declare, /readyz 503 for ever.
    ({"QSCALE_BROKER_URL": AMQP, "QSCALE_QUEUES": "amq.tasks"}, "QSCALE_QUEUES"),
])
def test_settings_a_worker_can_never_consume_with_are_refused(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str) -> None:
    for name in list(os.environ):
        if name.startswith("QSCALE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"{variable}: "), caught.value
