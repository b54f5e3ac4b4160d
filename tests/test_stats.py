"""The gate's statistics against values known by hand (pure Python, no scipy here)."""

from __future__ import annotations

import math
import random

import pytest

from assistants.stats import (
    EXACT_WILCOXON_MAX,
    binomial_p,
    t_interval,
    t_quantile,
    wilcoxon_p,
    wilson,
)


def test_exact_mcnemar_on_11_against_1_discordant_pairs():
    # 2 * (C(12,0) + C(12,1)) / 2^12 = 26 / 4096
    assert binomial_p(11, 1) == pytest.approx(0.0063, abs=5e-5)
    assert binomial_p(11, 1) == 26 / 4096
    assert binomial_p(1, 11) == binomial_p(11, 1)


def test_the_sign_test_at_its_edges():
    assert binomial_p(0, 0) == 1.0  # nothing decisive: no evidence
    assert binomial_p(3, 3) == 1.0
    assert binomial_p(6, 0) == 2 / 64  # six wins out of six: still above 0.025
    assert binomial_p(7, 0) == 2 / 128  # seven: below it


def test_wilcoxon_exact_on_hand_counted_cases():
    # All five positive: W+ = 15 is the top of 32 sign patterns, two-sided 2/32.
    assert wilcoxon_p([1, 2, 3, 4, 5]) == 0.0625
    # W- = 1 (rank 1 negative): patterns with W- <= 1 are 2 of 64, two-sided 4/64.
    assert wilcoxon_p([-1, 2, 3, 4, 5, 6]) == 0.0625
    # A zero is dropped; the three tied magnitudes share rank 2 (ranks 2, 2, 2, 4, 5): W- = 2,
    # and the sign patterns with W- <= 2 are the empty one and each single 2: 4 of 32.
    assert wilcoxon_p([1, 1, -1, 2, 0, 3]) == 8 / 32
    assert wilcoxon_p([0, 0, 0]) == 1.0
    assert wilcoxon_p([0.1 + 0.2 - 0.3]) == 1.0  # float noise is no difference


def test_wilcoxon_normal_approximation_above_the_exact_range(monkeypatch):
    n = EXACT_WILCOXON_MAX + 10
    differences = list(range(1, n + 1))  # all positive, no ties
    mean = n * (n + 1) / 4
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    z = (n * (n + 1) / 2 - mean - 0.5) / sd
    assert wilcoxon_p(differences) == pytest.approx(math.erfc(z / math.sqrt(2)))
    # At the switch-over the two agree: the same 50 differences, exact and approximate.
    r = random.Random(0)
    sample = [round(r.gauss(0.4, 1), 1) for _ in range(EXACT_WILCOXON_MAX)]  # with ties
    exact = wilcoxon_p(sample)
    monkeypatch.setattr("assistants.stats.EXACT_WILCOXON_MAX", 0)
    assert 0.001 < exact < 0.5 and wilcoxon_p(sample) == pytest.approx(exact, abs=0.01)


def test_wilson_and_t_intervals():
    low, high = wilson(3, 10)
    assert low == pytest.approx(0.1078, abs=1e-4) and high == pytest.approx(0.6032, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = t_interval([1, 2, 3, 4])  # mean 2.5, sd 1.291, t(3) 3.182
    assert low == pytest.approx(0.446, abs=1e-3) and high == pytest.approx(4.554, abs=1e-3)
    assert t_interval([2.0]) == (2.0, 2.0)
    assert t_quantile(30) == 2.042 and t_quantile(60) == pytest.approx(2.000, abs=1e-3)
