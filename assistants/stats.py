"""The statistics of the evaluation gate, in pure Python (no scipy in the bot's process).

Paired tests between a candidate and few-shot on the same held-out chats, all two-sided:
- `binomial_p`: the exact binomial test at 1/2, which is both the exact McNemar test (on the
  discordant pairs of exact match) and the exact sign test (on a judge's wins and losses).
- `wilcoxon_p`: the Wilcoxon signed-rank test. Zero differences are dropped (Wilcoxon's own
  method) and tied magnitudes get their average rank. Up to `EXACT_WILCOXON_MAX` non-zero
  differences the p-value is exact: the distribution of the positive rank sum over all 2^n sign
  patterns of these very ranks (so it is exact with ties too); above that, the normal
  approximation with the tie correction of the variance and a continuity correction of 1/2.
Intervals (95%): `wilson` for proportions, `t_interval` (Student's t) for means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EXACT_WILCOXON_MAX = 50
Z_95 = 1.959963984540054
# Student's t, 97.5th percentile, for 1..30 degrees of freedom (standard tables).
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def binomial_p(successes: int, failures: int) -> float:
    """Two-sided exact binomial p-value of `successes` against `failures` at probability 1/2
    (1.0 when there is neither)."""
    n = successes + failures
    if n == 0:
        return 1.0
    low = min(successes, failures)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (candidate - baseline)."""
    # Rounded so that float noise (0.1 + 0.2 - 0.3) neither makes a zero nor breaks a tie.
    kept = [round(d, 12) for d in differences if abs(d) > 1e-12]
    n = len(kept)
    if n == 0:
        return 1.0
    ranks = _ranks([abs(d) for d in kept])
    positive = sum(r for r, d in zip(ranks, kept, strict=True) if d > 0)
    if n <= EXACT_WILCOXON_MAX:
        # Ranks are whole or halves: doubled, they are integers, and the sums can be counted.
        doubled = [round(2 * r) for r in ranks]
        counts = [0] * (sum(doubled) + 1)
        counts[0] = 1
        for r in doubled:
            for total in range(len(counts) - 1, r - 1, -1):
                counts[total] += counts[total - r]
        w = round(2 * positive)
        below = sum(counts[: w + 1])
        above = sum(counts[w:])
        return min(1.0, 2 * min(below, above) / 2**n)
    mean = n * (n + 1) / 4
    ties: dict[float, int] = {}
    for rank in ranks:
        ties[rank] = ties.get(rank, 0) + 1
    variance = n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in ties.values()) / 48
    if variance <= 0:
        return 1.0
    z = (abs(positive - mean) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ((0, 1) when n is 0)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = Z_95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def t_quantile(df: int) -> float:
    """Student's t 97.5th percentile: the table up to 30 degrees of freedom, above it the
    Cornish-Fisher expansion (within 0.001 of the exact value there)."""
    if df <= 0:
        return math.inf
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """95% Student's t interval of a mean (the mean itself for fewer than two values)."""
    n = len(values)
    centre = mean(values)
    if n < 2:
        return (centre, centre)
    sd = math.sqrt(sum((v - centre) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return (centre - half, centre + half)
