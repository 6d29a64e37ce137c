"""Statistics of the powered benchmark: paired tests of two models and rank agreement of a search.

* :func:`mcnemar_exact`: the exact (binomial) McNemar test of two models scored on the same scans;
* :func:`rank_correlations`: Kendall's τ-b and Spearman's ρ between what a search prefers and what
  is true, with percentile-bootstrap intervals over the architectures;
* :func:`precision_at_top`: the share of the search's top fraction that is in the true top fraction;
* :func:`percentile_in_pool`: where one model's score falls within a pool's scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["McNemar", "mcnemar_exact", "RankCorrelation", "rank_correlations", "precision_at_top",
           "percentile_in_pool"]


@dataclass(frozen=True)
class McNemar:
    """Scans on which exactly one of two models is right, and the exact two-sided p-value.

    Attributes:
        only_first: scans the first model gets right and the second wrong.
        only_second: scans the second model gets right and the first wrong.
        p_value: ``P(|B - n/2| >= |b - n/2|)`` for ``B ~ Binomial(n, 1/2)``, ``n = b + c`` (1 when ``n = 0``).
    """

    only_first: int
    only_second: int
    p_value: float


def mcnemar_exact(first_correct: Sequence[bool], second_correct: Sequence[bool]) -> McNemar:
    """Exact McNemar test of two models on the same scans (``*_correct[N]``: whether each was right)."""
    from scipy.stats import binomtest

    first, second = np.asarray(first_correct, dtype=bool), np.asarray(second_correct, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"the two models were scored on different scans: {first.shape} vs {second.shape}")
    b, c = int(np.sum(first & ~second)), int(np.sum(~first & second))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return McNemar(b, c, p_value)


@dataclass(frozen=True)
class RankCorrelation:
    """Kendall's τ-b and Spearman's ρ with 95% percentile-bootstrap intervals (resampled items)."""

    n: int
    kendall_tau: float
    kendall_lo: float
    kendall_hi: float
    spearman_rho: float
    spearman_lo: float
    spearman_hi: float


def _tau_rho(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant ranking correlates with nothing
        return float("nan"), float("nan")
    return float(kendalltau(x, y).statistic), float(spearmanr(x, y).statistic)


def rank_correlations(predicted: Sequence[float], true: Sequence[float], *, bootstrap: int = 1000,
                      seed: int = 0) -> RankCorrelation:
    """τ and ρ of ``predicted[N]`` (the search's scores) against ``true[N]`` (stand-alone accuracies).

    The intervals resample the N items with replacement (``bootstrap`` times, seeded); resamples whose
    ranking is constant are left out.
    """
    x, y = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"need two equal-length 1-D score lists of at least 3 items, got {x.shape} and {y.shape}")
    tau, rho = _tau_rho(x, y)
    rng = np.random.default_rng(seed)
    samples = np.array([_tau_rho(x[i], y[i]) for i in (rng.integers(len(x), size=len(x)) for _ in range(bootstrap))])
    samples = samples[~np.isnan(samples).any(axis=1)]
    if len(samples) == 0:
        lo = hi = (float("nan"), float("nan"))
    else:
        lo, hi = np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)
    return RankCorrelation(len(x), tau, float(lo[0]), float(hi[0]), rho, float(lo[1]), float(hi[1]))


def precision_at_top(predicted: Sequence[float], true: Sequence[float], fraction: float = 0.25) -> float:
    """Of the ``ceil(fraction * N)`` items the search ranks highest, the share among the true top as many.

    Ties in ``true`` at the cut count as top (an item as good as the last true-top one is a hit).
    """
    x, y = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    k = max(1, int(np.ceil(fraction * len(x))))
    chosen = np.argsort(-x, kind="stable")[:k]
    threshold = np.sort(y)[::-1][k - 1]
    return float(np.mean(y[chosen] >= threshold))


def percentile_in_pool(score: float, pool: Sequence[float]) -> float:
    """Percentage of the pool below ``score``, ties counted half (0: below all, 100: above all)."""
    values = np.asarray(pool, dtype=float)
    if len(values) == 0:
        raise ValueError("the pool is empty")
    return float(100 * (np.sum(values < score) + 0.5 * np.sum(values == score)) / len(values))
