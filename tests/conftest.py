"""Shared fixtures: the real brokers the tests run against.

A missing broker fails the test run loudly; nothing here ever skips. Start the
brokers with `hack/services.sh` (the README's test command does it for you).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

pytest_plugins = ["tests.plugins.kind"]

REDIS_URL = os.environ.get("QSCALE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("QSCALE_TEST_AMQP_URL", "amqp://qscale:qscale@127.0.0.1:5672//")
RABBITMQ_API = os.environ.get("QSCALE_TEST_RABBITMQ_API", "http://qscale:qscale@127.0.0.1:15672")


def _require_tcp(url: str, what: str) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    assert port is not None, f"{what} URL {url!r} has no port"
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"{what} is not reachable at {host}:{port} ({exc}); "
                    "start it with `bash hack/services.sh`", pytrace=False)


@pytest.fixture(scope="session")
def redis_url() -> str:
    _require_tcp(REDIS_URL, "Redis")
    return REDIS_URL


@pytest.fixture(scope="session")
def amqp_url() -> str:
    _require_tcp(AMQP_URL, "RabbitMQ")
    return AMQP_URL


@pytest.fixture(scope="session")
def rabbitmq_api() -> str:
    _require_tcp(RABBITMQ_API, "RabbitMQ management API")
    return RABBITMQ_API


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once per real broker."""
    name = "redis_url" if request.param == "redis" else "amqp_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue name no other test uses, so tests never see each other's messages."""
    yield f"t-{uuid.uuid4().hex[:12]}"
