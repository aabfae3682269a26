"""Every worker setting that parses works; anything else is one line naming the variable.

Values that used to validate and then break every task or never connect: infinite
time limits and back-off bounds, URLs with a port or database that is not a number.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.runtime_harness import REPO
from worker.errors import ConfigError
from worker.settings import load_settings

AMQP = "amqp://qscale:qscale@127.0.0.1:5672//"


@pytest.mark.parametrize(("env", "variable"), [
    ({"QSCALE_SOFT_TIME_LIMIT": "inf"}, "QSCALE_SOFT_TIME_LIMIT"),
    ({"QSCALE_SOFT_TIME_LIMIT": "nan"}, "QSCALE_SOFT_TIME_LIMIT"),
    ({"QSCALE_HARD_TIME_LIMIT": "inf"}, "QSCALE_HARD_TIME_LIMIT"),
    ({"QSCALE_RETRY_BACKOFF_BASE": "inf"}, "QSCALE_RETRY_BACKOFF_BASE"),
    ({"QSCALE_RETRY_BACKOFF_MAX": "inf"}, "QSCALE_RETRY_BACKOFF_MAX"),
    ({"QSCALE_DRAIN_SECONDS": "inf"}, "QSCALE_DRAIN_SECONDS"),
    ({"QSCALE_SOFT_TIME_LIMIT": "1e30"}, "QSCALE_SOFT_TIME_LIMIT"),
    ({"QSCALE_BROKER_URL": "redis://localhost:notaport/0"}, "QSCALE_BROKER_URL"),
    ({"QSCALE_BROKER_URL": "redis://localhost:6379/zero"}, "QSCALE_BROKER_URL"),
    ({"QSCALE_BROKER_URL": "redis://localhost:99999/0"}, "QSCALE_BROKER_URL"),
    ({"QSCALE_BROKER_URL": "amqp://u:p@localhost:port//"}, "QSCALE_BROKER_URL"),
    ({"QSCALE_RESULT_URL": "redis://localhost:x/0"}, "QSCALE_RESULT_URL"),
    ({"QSCALE_RESULT_URL": "redis://localhost/db1"}, "QSCALE_RESULT_URL"),
    ({"QSCALE_MAX_MESSAGE_BYTES": str(2**40)}, "QSCALE_MAX_MESSAGE_BYTES"),
    ({"QSCALE_QUEUES": "a," + "q" * 300}, "QSCALE_QUEUES"),
    ({"QSCALE_RESULT_TTL": str(2**40)}, "QSCALE_RESULT_TTL"),
    # Settings that parsed, then the worker reconnected for ever and never consumed
    # (RabbitMQ), found by running `python -m worker run` with them:
    # consumer tag "qscale.<pod>-<pid>.<hex8>" is an AMQP shortstr (<= 255 bytes):
    # every claim fails with "struct.error: ubyte format requires 0 <= number <= 255".
    ({"QSCALE_BROKER_URL": AMQP, "QSCALE_POD_NAME": "p" * 240}, "QSCALE_POD_NAME"),
    # RabbitMQ reserves amq.*: ACCESS_REFUSED on every declare, /readyz 503 for ever.
    ({"QSCALE_BROKER_URL": AMQP, "QSCALE_QUEUES": "amq.tasks"}, "QSCALE_QUEUES"),
])
def test_settings_that_would_break_later_are_refused_now(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str) -> None:
    for name in list(os.environ):
        if name.startswith("QSCALE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"{variable}: "), caught.value
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("env", "variable"), [
    ({"QSCALE_HTTP_HOST": "no.such.host.invalid"}, "QSCALE_HTTP_HOST"),
    ({"QSCALE_HTTP_HOST": "192.0.2.1"}, "QSCALE_HTTP_HOST"),
])
def test_a_bad_http_host_is_named_as_the_host(env: dict[str, str], variable: str) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("QSCALE_")}
    full.update(env, PYTHONPATH=REPO, QSCALE_HTTP_PORT="0",
                QSCALE_BROKER_URL="redis://127.0.0.1:6379/0")
    done = subprocess.run([sys.executable, "-m", "worker", "run"], env=full, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"qscale-worker: {variable}: "), lines[0]
