"""Backoff schedule and give-up time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from ums.store.retry import RetryPolicy

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_doubling_capped_without_jitter() -> None:
    p = RetryPolicy(jitter=0.0)
    rng = random.Random(0)
    assert [p.delay(n, rng) for n in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert p.delay(10_000, rng) == 3600  # no overflow for huge attempt counts


def test_jitter_stays_in_band_and_is_reproducible() -> None:
    p = RetryPolicy(jitter=0.1)
    a = [p.delay(n, random.Random(42)) for n in range(1, 12)]
    b = [p.delay(n, random.Random(42)) for n in range(1, 12)]
    assert a == b
    for n, d in enumerate(a, start=1):
        base = min(3600, 60 * 2 ** (n - 1))
        assert 0.9 * base <= d <= 1.1 * base


def test_next_attempt_and_give_up() -> None:
    p = RetryPolicy(jitter=0.0, give_up_after=timedelta(days=3))
    assert p.next_attempt(T0, 2, random.Random(0)) == T0 + timedelta(minutes=2)
    assert not p.gives_up(T0, T0 + timedelta(days=2, hours=23))
    assert p.gives_up(T0, T0 + timedelta(days=3))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first": 0},
        {"first": 10, "cap": 5},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"give_up_after": timedelta(0)},
    ],
)
def test_bad_policies(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().delay(0, random.Random(0))
