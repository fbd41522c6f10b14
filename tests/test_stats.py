"""stats.proportion_ci: the exact interval of a rate, against closed forms and a brute-force sum."""

import math

import pytest

from plastic_jax.stats import proportion_ci


def test_no_failure_in_n_has_the_closed_form_upper_bound():
    # k = 0: P(X = 0) = (1 − p)^n = (1 − level)/2 at the upper bound
    for n in (5, 20, 40):
        rate, lo, hi = proportion_ci(0, n, 0.98)
        assert (rate, lo) == (0.0, 0.0)
        assert hi == pytest.approx(1 - 0.01 ** (1 / n), rel=1e-9)
    rate, lo, hi = proportion_ci(20, 20, 0.98)
    assert (rate, hi) == (1.0, 1.0) and lo == pytest.approx(0.01 ** (1 / 20), rel=1e-9)


def test_the_bounds_solve_the_binomial_tail_equations():
    k, n, level = 7, 20, 0.98

    def tail_ge(p):  # P(X >= k)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    def tail_le(p):  # P(X <= k)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, k + 1))

    rate, lo, hi = proportion_ci(k, n, level)
    assert rate == 0.35 and lo < rate < hi
    assert tail_ge(lo) == pytest.approx(0.01, rel=1e-6)
    assert tail_le(hi) == pytest.approx(0.01, rel=1e-6)


@pytest.mark.parametrize("k,n", [(-1, 5), (6, 5), (0, 0)])
def test_impossible_counts_are_refused(k, n):
    with pytest.raises(ValueError):
        proportion_ci(k, n)
