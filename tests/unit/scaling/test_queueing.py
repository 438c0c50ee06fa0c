"""Erlang C sizing against known values and its own inverse."""

from __future__ import annotations

import itertools

import pytest

from modelpool.scaling.queueing import (
    erlang_c,
    max_rate_for_replicas,
    replicas_for_target,
    share_waiting_longer,
)


def test_erlang_c_known_values() -> None:
    # M/M/1: P(wait) = rho; M/M/2 with a=1: C = 1/3 (textbook value).
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.0) == 1.0
    assert erlang_c(3, 0.0) == 0.0


def test_more_replicas_never_wait_longer() -> None:
    shares = [share_waiting_longer(n, 30.0, 10.0, 1, 0.2) for n in range(1, 10)]
    assert shares[:3] == [1.0, 1.0, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(shares))


def test_replicas_for_target_meets_target_minimally() -> None:
    n = replicas_for_target(42.0, 10.0, 1, 0.5, 0.99, 50)
    assert share_waiting_longer(n, 42.0, 10.0, 1, 0.5) <= 0.01
    assert share_waiting_longer(n - 1, 42.0, 10.0, 1, 0.5) > 0.01


def test_replicas_for_target_capped_and_zero() -> None:
    assert replicas_for_target(1000.0, 10.0, 1, 0.5, 0.99, 7) == 7
    assert replicas_for_target(0.0, 10.0, 1, 0.5, 0.99, 7) == 0


def test_max_rate_is_inverse_of_sizing() -> None:
    for replicas in (1, 3, 8):
        rate = max_rate_for_replicas(replicas, 10.0, 2, 0.3, 0.99)
        assert 0 < rate < replicas * 10.0
        assert replicas_for_target(rate * 0.999, 10.0, 2, 0.3, 0.99, 100) <= replicas
        assert replicas_for_target(rate * 1.01, 10.0, 2, 0.3, 0.99, 100) > replicas
