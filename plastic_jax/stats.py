"""Statistics over independent seeds: moving averages, percentile-bootstrap confidence intervals
and exact intervals of a rate (degenerate seeds).

The paper reports means over independent trials with 98% bootstrap confidence bands from 500
resamples (docs/METHOD.md §6). The bootstrap is ``scipy.stats.bootstrap`` (percentile method); NumPy and
SciPy only: these run in the driver and the plots, outside the JAX core.
"""

from __future__ import annotations

import numpy as np


def bootstrap_ci(
    x: np.ndarray,
    *,
    level: float = 0.98,
    n_resamples: int = 500,
    axis: int = 0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of ``x`` along ``axis`` and its percentile-bootstrap confidence interval.

    The ``n`` entries along ``axis`` (the seeds) are resampled with replacement ``n_resamples``
    times; the interval is the ((1 − level)/2, (1 + level)/2) quantiles of the resampled means.
    Every other axis (e.g. episodes) is resampled jointly, so a curve's band keeps each seed's
    curve whole. This is ``scipy.stats.bootstrap(method="percentile")``, which draws one set of
    indices for all the other axes and takes the quantiles with ``np.percentile``.

    Args:
      x: array with the seeds on ``axis``, shape (..., n, ...).
    Returns:
      (mean, lo, hi), each of ``x``'s shape without ``axis``. With n = 1 there is no interval:
      lo and hi are NaN (not a zero-width interval).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.moveaxis(np.asarray(x, np.float64), axis, 0)
    n = x.shape[0]
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    mean = x.mean(axis=0)
    if n == 1:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    from scipy.stats import bootstrap

    with np.errstate(invalid="ignore"):
        res = bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                        axis=0, vectorized=True, rng=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return mean, np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def moving_average(x: np.ndarray, window: int, axis: int = -1) -> np.ndarray:
    """Trailing moving average along ``axis``: entry t is the mean of x[max(0, t−window+1) … t].

    Same length as ``x`` (the first entries average what is there so far).
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    c = np.cumsum(x, axis=-1)
    c = np.concatenate([np.zeros((*x.shape[:-1], 1)), c], axis=-1)
    t = np.arange(1, x.shape[-1] + 1)
    start = np.maximum(t - window, 0)
    out = (c[..., t] - c[..., start]) / (t - start)
    return np.moveaxis(out, -1, axis)


def proportion_ci(k: int, n: int, level: float = 0.98) -> tuple[float, float, float]:
    """A rate k/n (e.g. degenerate seeds of a run) and its exact (Clopper–Pearson) interval at
    ``level``: the beta quantiles ((1 − level)/2 of Beta(k, n − k + 1), (1 + level)/2 of
    Beta(k + 1, n − k)), 0 and 1 at the ends. With 20 seeds and none degenerate the 98%
    interval still reaches 0.206: 20 seeds bound a failure rate, they do not rule it out."""
    from scipy.stats import beta

    if not (isinstance(n, (int, np.integer)) and n > 0 and 0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return k / n, lo, hi
