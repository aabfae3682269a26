"""Fixtures shared by the producer-API integration tests (real brokers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker.api.client import Client
from worker.brokers import Broker, open_broker


@pytest.fixture
def client(broker_url: str, redis_url: str) -> Iterator[Client]:
    """A producer on the broker under test, with results in the real Redis."""
    with Client(broker_url, result_url=redis_url) as producer:
        yield producer


@pytest.fixture
def worker_broker(broker_url: str) -> Iterator[Broker]:
    """A worker-side connection to the same broker, to claim what the client sent."""
    with open_broker(broker_url) as broker:
        yield broker
