"""Per-run numbers of the reports, from a ``plastic_jax.runs.Run``: windows over the last
episodes, final Θ, surviving terms, Adam step sizes, peak accuracy, CI comparisons.

NumPy only; every function takes a ``Run`` (seeds on the first axis) and returns arrays or numbers.
"""

from __future__ import annotations

import warnings

import numpy as np

from plastic_jax.plots import nan_moving_average
from plastic_jax.runs import Run
from plastic_jax.stats import bootstrap_ci

#: a term "survives" when |θ_r| at the last episode exceeds this many Adam steps (× the run's meta
#: learning rate: a term the L1 penalty holds at 0 oscillates within about one step of it). Until
#: the λ sweep at Adam 1e-4 this was a fixed 5e-3 (5 steps of 1e-3), which is 50 steps at 1e-4.
SURVIVE_STEPS = 5


def last_window(run: Run, n: int = 100) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-seed means over the last ``n`` episodes: accuracy (S,), alignment (S, L) or None.

    An episode whose adapted network overflowed has a NaN (null) accuracy in runs written since
    records say so: it is left out of its seed's mean (as scripts/seeds20_status.py); a seed with
    no finite accuracy in the window stays NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        acc = np.nanmean(run.accuracy[:, -min(n, run.accuracy.shape[1]):], axis=1)
    align = None
    if run.alignment is not None:
        keep = run.analysis_episodes >= run.episodes[-1] - n + 1
        align = run.alignment[:, keep].mean(axis=1)
    return acc, align


def window_means(run: Run, n: int = 100) -> dict[str, np.ndarray | None]:
    """Per-seed means over the last ``n`` episodes (the last ``n`` logged, for a run in progress):
    accuracy (S,), median query loss (S,), alignment and orthonormality (S, L) or None."""
    acc, _ = last_window(run, n)
    with warnings.catch_warnings():  # a seed with no finite loss in the window: NaN, said elsewhere
        warnings.simplefilter("ignore", RuntimeWarning)
        loss = np.nanmedian(np.where(np.isfinite(run.meta_loss[:, -n:]), run.meta_loss[:, -n:], np.nan), axis=1)
    align = orth = None
    if run.alignment is not None:
        keep = run.analysis_episodes >= run.episodes[-1] - n + 1
        with warnings.catch_warnings():  # a seed with no finite point stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            align = np.nanmean(np.where(np.isfinite(run.alignment[:, keep]), run.alignment[:, keep], np.nan), axis=1)
            orth = np.nanmean(np.where(np.isfinite(run.orthonormality[:, keep]), run.orthonormality[:, keep], np.nan),
                              axis=1)
    return {"acc": acc, "loss": loss, "align": align, "orth": orth}


def final_theta(run: Run) -> dict[str, np.ndarray]:
    """Θ of every seed at the last logged episode: term -> (S,)."""
    return {t: v[:, -1] for t, v in run.theta.items()}


def survive_threshold(run: Run) -> float:
    """|θ_r| a surviving term exceeds: ``SURVIVE_STEPS`` × the run's meta learning rate."""
    return SURVIVE_STEPS * float(run.config.get("meta_lr", 1e-3))


def survivors(run: Run, learned: list[int] | None = None) -> tuple[list[str], dict[str, int]]:
    """Terms with |θ_r| > ``survive_threshold(run)`` at the last episode in more than half of the
    seeds ``learned`` (default: all seeds); and per term, in how many of those seeds it does."""
    th = final_theta(run)
    idx = [run.seeds.index(s) for s in (learned if learned else run.seeds)]
    thr = survive_threshold(run)
    count = {t: int((np.abs(v[idx]) > thr).sum()) for t, v in th.items()}
    return [t for t, c in count.items() if 2 * c > len(idx)], count


def adam_steps(run: Run, n: int = 50) -> dict[str, float]:
    """Median over seeds of the mean |Δθ_r| per episode over the first ``n`` episodes, per term."""
    out = {}
    for t, v in run.theta.items():
        d = np.abs(np.diff(v[:, : n + 1], axis=1))
        out[t] = float(np.median(np.nanmean(d, axis=1))) if d.size else float("nan")
    return out


def peak_accuracy(run: Run, window: int = 20) -> str:
    """The highest seed-mean accuracy, as a trailing ``window``-episode moving average, and where."""
    m = np.nanmean(nan_moving_average(run.accuracy, window, axis=1), axis=0)
    i = int(np.nanargmax(m))
    return f"{100 * m[i]:.1f}% ({int(run.episodes[i])})"


def ci_separated(a: np.ndarray, b: np.ndarray) -> int:
    """+1 when a's 98% bootstrap CI lies above b's, -1 below, 0 when they overlap."""
    _, lo_a, hi_a = bootstrap_ci(a, level=0.98, n_resamples=500)
    _, lo_b, hi_b = bootstrap_ci(b, level=0.98, n_resamples=500)
    return 1 if lo_a > hi_b else -1 if hi_a < lo_b else 0


def settle_episode(th: np.ndarray, frac: float = 0.1) -> int | None:
    """The first episode from which the seed-mean curve ``th`` stays within ``frac`` of its final
    value (the mean of its last 50 episodes); None when it never does."""
    m = np.nanmean(th, axis=0)
    final = np.nanmean(m[-50:])
    ok = np.abs(m - final) <= frac * abs(final)
    bad = np.flatnonzero(~ok)
    if not len(bad):
        return 0
    return int(bad[-1] + 1) if bad[-1] + 1 < len(m) else None


def hidden(al: np.ndarray | None) -> np.ndarray | None:
    """The hidden layers' columns (every layer but the output's, whose α is 0 by construction)."""
    return None if al is None else al[:, :-1]
