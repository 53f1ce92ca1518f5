"""Backtest statistics against hand computations and against simulated right and wrong models."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from offchain.validation.stats import (
    acerbi_szekely_z2,
    christoffersen_independence,
    kupiec_pof,
    traffic_light,
    zones,
)


def test_kupiec_matches_the_formula_and_rejects_the_issue_counts() -> None:
    n, p = 2_906, 0.01
    for x in (17, 8, 2, 15):
        phat = x / n
        lr = -2 * ((n - x) * math.log(1 - p) + x * math.log(p) - (n - x) * math.log(1 - phat) - x * math.log(phat))
        got_lr, got_p = kupiec_pof(x, n, p)
        assert got_lr == pytest.approx(lr, rel=1e-12)
        assert got_p == pytest.approx(math.erfc(math.sqrt(lr / 2)), rel=1e-9)  # chi2(1) survival
        assert got_p < 0.05  # the issue: the expanding window is rejected (too few exceptions)
    assert kupiec_pof(29, n, p)[1] > 0.9
    assert kupiec_pof(0, 250, p)[0] == pytest.approx(-2 * 250 * math.log(0.99))


def test_basel_traffic_light_boundaries() -> None:
    assert [traffic_light(x) for x in (0, 4, 5, 9, 10, 30)] == ["green", "green", "yellow", "yellow", "red", "red"]


def test_zones_roll_over_250_days() -> None:
    hits = np.zeros(300, dtype=bool)
    hits[[10, 20, 30, 40, 50]] = True  # five in the first 250 days: yellow until day 10 leaves the window
    z = zones(hits)
    assert len(z) == 51 and z[0] == "yellow" and z[10] == "yellow" and z[11] == "green"


def _transitions(hits: list[int]) -> tuple[int, int, int, int]:
    n = [[0, 0], [0, 0]]
    for a, b in itertools.pairwise(hits):
        n[a][b] += 1
    return n[0][0], n[0][1], n[1][0], n[1][1]


def test_christoffersen_matches_the_formula_and_sees_clusters() -> None:
    hits = [0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    n00, n01, n10, n11 = _transitions(hits)
    pi, pi0, pi1 = (n01 + n11) / (n00 + n01 + n10 + n11), n01 / (n00 + n01), n11 / (n10 + n11)
    lr = -2 * (
        (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
        - n00 * math.log(1 - pi0) - n01 * math.log(pi0) - n10 * math.log(1 - pi1) - n11 * math.log(pi1)
    )  # fmt: skip
    assert christoffersen_independence(np.array(hits, dtype=bool))[0] == pytest.approx(lr, rel=1e-12)
    spread = np.zeros(1000, dtype=bool)
    spread[::100] = True
    clustered = np.zeros(1000, dtype=bool)
    clustered[500:510] = True
    assert christoffersen_independence(spread)[1] > 0.5
    assert christoffersen_independence(clustered)[1] < 1e-6


def _es_case(scale: float, seed: int) -> tuple[float, float]:
    """Model: each day 1,000 equally likely standard-normal scenario losses; reality drawn from them × scale."""
    rng = np.random.default_rng(seed)
    days, n, alpha = 1_500, 1_000, 0.025
    model = rng.standard_normal((days, n))
    ordered = -np.sort(-model, axis=1)
    k = int(n * alpha)
    var = ordered[:, k]
    es = ordered[:, :k].mean(axis=1)
    tail = [row[row > v] for row, v in zip(ordered, var, strict=True)]
    loss = scale * model[np.arange(days), rng.integers(0, n, days)]
    test = acerbi_szekely_z2(loss, es, var, tail, np.full(days, n), alpha, np.random.default_rng(seed + 1), 1_000)
    return test.z2, test.p_value


def test_es_test_accepts_a_right_model_and_rejects_an_understated_tail() -> None:
    z_right, p_right = _es_case(1.0, seed=5)
    z_wrong, p_wrong = _es_case(1.5, seed=5)
    assert abs(z_right) < 0.3 and p_right > 0.05
    assert z_wrong > 0.5 and p_wrong < 0.01
