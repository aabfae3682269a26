"""A producer rides out a broker it cannot reach for a moment, with either broker.

A new pod on a cluster that enforces NetworkPolicy may be refused until the plugin has
added its address to the broker's allowed sources (kube-router took over 2 s under load:
`helm test` and the README's producer Job failed on their first publish); a broker
restarting refuses connections too. Publishing retries while the broker cannot be
reached, for QSCALE_PUBLISH_RETRY_SECONDS, then raises.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.toxiproxy import Toxiproxy
from worker.api.client import Client
from worker.brokers import open_broker
from worker.envelope import Envelope
from worker.errors import BrokerUnavailable

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2
                                     else host))


def test_a_publish_waits_for_a_broker_that_refuses_for_a_moment(
        broker_url: str, queue_name: str) -> None:
    upstream = urlsplit(broker_url).netloc.rsplit("@", 1)[-1]
    with Toxiproxy.start() as toxi:
        proxy = toxi.proxy(f"producer-{queue_name}", upstream)
        proxy.disable()  # connections refused, as by a policy not yet programmed
        opening = threading.Timer(1.5, proxy.enable)
        opening.start()
        began = time.monotonic()
        try:
            with Client(_through(broker_url, proxy.port), result_url="") as client:
                handles = client.send_many([Envelope.create("rt.noop", queue=queue_name)
                                            for _ in range(3)])
        finally:
            opening.cancel()
            opening.join()
        waited = time.monotonic() - began
    assert len(handles) == 3 and 1.0 <= waited < 8.0, waited
    with open_broker(broker_url) as b:
        deadline = time.monotonic() + 15
        while b.stats(queue_name).ready != 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert b.stats(queue_name).ready == 3


def test_without_retries_an_unreachable_broker_raises_at_once(
        broker_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSCALE_PUBLISH_RETRY_SECONDS", "0")
    began = time.monotonic()
    with pytest.raises(BrokerUnavailable), Client(_through(broker_url, 1)) as client:
        client.send(Envelope.create("rt.noop", queue=queue_name))
    assert time.monotonic() - began < 5.0
