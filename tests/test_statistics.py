"""The pool benchmark's statistics on inputs whose answers are known by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nni_covid3d.statistics import mcnemar_exact, percentile_in_pool, precision_at_top, rank_correlations


def test_mcnemar_exact_is_the_two_sided_binomial_tail_of_the_discordant_scans():
    # 10 scans only the first model gets right, 2 only the second, 5 both, 3 neither.
    first = [True] * 10 + [False] * 2 + [True] * 5 + [False] * 3
    second = [False] * 10 + [True] * 2 + [True] * 5 + [False] * 3
    result = mcnemar_exact(first, second)
    assert (result.only_first, result.only_second) == (10, 2)
    # P(B <= 2) + P(B >= 10) for B ~ Binomial(12, 1/2), by hand.
    tail = sum(math.comb(12, k) for k in (0, 1, 2, 10, 11, 12)) / 2 ** 12
    assert result.p_value == pytest.approx(tail)
    assert mcnemar_exact([True, False], [True, False]).p_value == 1.0  # no discordant scan
    with pytest.raises(ValueError, match="different scans"):
        mcnemar_exact([True], [True, False])


def test_kendall_and_spearman_on_known_rankings():
    # One swapped adjacent pair among 5 items: 9 concordant, 1 discordant pairs -> tau = 0.8; rho = 1 - 6*2/120.
    result = rank_correlations([1, 2, 3, 5, 4], [10, 20, 30, 40, 50], bootstrap=200)
    assert result.kendall_tau == pytest.approx(0.8) and result.spearman_rho == pytest.approx(0.9)
    assert result.kendall_lo <= result.kendall_tau <= result.kendall_hi <= 1.0
    reversed_ = rank_correlations([5, 4, 3, 2, 1], [1, 2, 3, 4, 5], bootstrap=50)
    assert reversed_.kendall_tau == pytest.approx(-1.0) and reversed_.spearman_rho == pytest.approx(-1.0)
    assert math.isnan(rank_correlations([1, 1, 1], [1, 2, 3], bootstrap=10).kendall_tau)  # constant: undefined
    # The same seed gives the same interval.
    assert rank_correlations(np.arange(30) % 7, np.arange(30), seed=3) == rank_correlations(np.arange(30) % 7,
                                                                                         np.arange(30), seed=3)


def test_precision_at_top_and_percentile():
    truth = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    assert precision_at_top([8, 7, 1, 1, 1, 1, 1, 1], truth, 0.25) == 1.0  # picks the true top two
    assert precision_at_top([8, 1, 1, 1, 1, 1, 1, 7], truth, 0.25) == 0.5
    assert percentile_in_pool(0.95, truth) == 100.0 and percentile_in_pool(0.1, truth) == 0.0
    assert percentile_in_pool(0.7, truth) == pytest.approx(100 * (5 + 0.5) / 8)  # ties count half
