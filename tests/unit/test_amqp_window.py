"""The automatic prefetch window: grows at once, shrinks only after the need stayed lower."""

from __future__ import annotations

from worker.brokers._amqp_window import PrefetchWindow


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_grows_at_once_and_never_asks_for_an_unlimited_window() -> None:
    window = PrefetchWindow(clock=Clock())
    assert window.next_size(0, 0) == 1   # basic.qos 0 = unlimited: never
    assert window.next_size(1, 8) == 8
    assert window.next_size(8, 64) == 64


def test_shrinks_to_the_peak_need_only_after_it_stayed_lower_long_enough() -> None:
    clock = Clock()
    window = PrefetchWindow(shrink_after=10.0, clock=clock)
    assert window.next_size(8, 2) == 8
    clock.now = 5.0
    assert window.next_size(8, 4) == 8
    clock.now = 9.9
    assert window.next_size(8, 1) == 8
    clock.now = 10.0
    assert window.next_size(8, 1) == 4   # the most needed while waiting


def test_a_need_back_at_the_window_restarts_the_wait() -> None:
    clock = Clock()
    window = PrefetchWindow(shrink_after=10.0, clock=clock)
    assert window.next_size(8, 2) == 8
    clock.now = 8.0
    assert window.next_size(8, 8) == 8
    clock.now = 12.0
    assert window.next_size(8, 2) == 8   # lower again since 12 s only
    clock.now = 22.0
    assert window.next_size(8, 2) == 2


def test_a_fixed_prefetch_is_the_window_whatever_the_need() -> None:
    window = PrefetchWindow(fixed=3, clock=Clock())
    assert [window.next_size(0, n) for n in (0, 1, 50)] == [3, 3, 3]
