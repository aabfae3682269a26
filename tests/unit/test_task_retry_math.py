"""Backoff math and the retry decision (pure)."""

from __future__ import annotations

import pytest

from worker.api.registry import NonRetryable, TaskSpec, backoff_delay
from worker.errors import ConfigError


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 50.0),
                                                  (40, 50.0)])
def test_full_jitter_stays_within_the_capped_exponential(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, 2.0, 50.0, rng=lambda: 1.0) == ceiling
    assert backoff_delay(attempt, 2.0, 50.0, rng=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, 2.0, 50.0, rng=lambda: 0.5) == ceiling / 2


def test_real_jitter_spreads_over_the_window() -> None:
    delays = [backoff_delay(4, 1.0, 300.0) for _ in range(2000)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 1.0 and max(delays) > 7.0  # spread, not lockstep


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_delay(5000, 1.0, 300.0, rng=lambda: 1.0) == 300.0


def _noop() -> None:
    return None


def test_retry_for_limits_which_exceptions_retry() -> None:
    spec = TaskSpec("t", _noop, retry_for=(ConnectionError, TimeoutError))
    assert spec.is_retryable(ConnectionResetError())
    assert spec.is_retryable(TimeoutError())
    assert not spec.is_retryable(ValueError())


def test_permanent_errors_never_retry_even_if_listed() -> None:
    spec = TaskSpec("t", _noop, retry_for=(Exception,))
    assert spec.is_retryable(RuntimeError())
    assert not spec.is_retryable(NonRetryable("no"))
    assert not spec.is_retryable(ConfigError("QSCALE_X: bad"))


def test_max_retries_defaults_to_the_setting() -> None:
    assert TaskSpec("t", _noop).retries_allowed(3) == 3
    assert TaskSpec("t", _noop, max_retries=0).retries_allowed(3) == 0
