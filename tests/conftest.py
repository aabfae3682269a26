"""Shared fixtures: the real brokers the tests run against.

A missing broker fails the test run loudly; nothing here ever skips. Start the
brokers with `hack/services.sh` (the README's test command does it for you).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import uuid
from urllib.parse import quote, urlsplit

import pytest
import redis

from tests.rabbitmq_api import api_get, api_request

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


_TEST_QUEUES: set[str] = set()


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test uses, so tests never see each other's messages."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    _TEST_QUEUES.add(name)
    return name


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Removes the queues and keys the session's queue names left behind (with their
    `.dead`, delay and derived queues), so a long-lived test broker does not collect
    hundreds of durable queues that a killed node must then recover on start-up."""
    if _TEST_QUEUES:
        _drop_test_queues(_TEST_QUEUES)


_TEST_NAME = re.compile(r"t-[0-9a-f]{12}")


def _owned(name: str, names: set[str]) -> bool:
    match = _TEST_NAME.search(name)
    return match is not None and match.group(0) in names


def _drop_test_queues(names: set[str]) -> None:
    """Best effort: a broker that is down has already failed the tests that needed it."""
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        keys = [key for key in client.scan_iter(match="*t-*", count=1000)
                if _owned(key.decode(errors="replace"), names)]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    with contextlib.suppress(OSError, ValueError, AssertionError):
        for row in api_get(RABBITMQ_API, "/api/queues/%2F?columns=name"):
            queue = str(row["name"])
            if _owned(queue, names):
                with contextlib.suppress(OSError):
                    api_request(RABBITMQ_API, f"/api/queues/%2F/{quote(queue, safe='')}",
                                method="DELETE", ok_missing=True)
