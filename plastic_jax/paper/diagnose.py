"""What went wrong in a seed that did not learn, from the run's own records.

Over the last ``n`` (100) episodes of a seed (its records in episode order):

- **diverged**: the query loss is non-finite in at least half of them, or its last
  ``DIVERGED_SKIPS`` meta-updates or more were skipped in a row (a run the guard stopped). Its
  meta-updates were skipped (Θ stays at its last finite value) and the adapted network keeps
  overflowing.
- **collapsed** (to a uniform output): the median finite query loss is within ``COLLAPSE_TOL``·ln C
  of ln C (C output units: the loss of a network that predicts 1/C for every class) and the final
  θ0 is at most its initial value. This is no minimum the meta-loss settles in: it follows a
  meta-gradient spike — Adam's momentum carries θ0 below zero, the first layer goes silent, and
  the inflated second moment keeps every later step tiny — so the seed stays there. The diagnosis
  names the episode since which the seed's 10-episode mean query loss has stayed that close to
  ln C and, where the records carry telemetry (``spike``, ``rolled_back``, ``grad_norm``: runs
  written since the guard recorded them), the episode of the last spike before the collapse.
- otherwise a seed with skipped updates gets "N skipped updates (episodes ...), recovered".

Seeds with none of these are left out. Each diagnosis quotes θ3, θ0 and the query loss.
``diagnose_seed`` works on a plain list of records (no run directory), the rest on a ``Run``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plastic_jax.paper.measures import last_window
from plastic_jax.plots import nan_moving_average
from plastic_jax.runs import Run

#: output units (classes) of the datasets the reports know without loading them
N_CLASSES = {"digits": 10, "emnist": 47, "glyphs": 47}
#: input units of the datasets the reports know
N_INPUTS = {"digits": 64, "emnist": 784, "glyphs": 784}
#: a seed whose median query loss lies within this fraction of ln C is taken to predict a uniform
#: output (5%: ln 10 ± 0.12 on digits, ln 47 ± 0.19 on glyphs and EMNIST; a seed that learned sits far
#: below, e.g. 1.8 on digits and 0.8-1.9 on glyphs)
COLLAPSE_TOL = 0.05
#: a seed whose last updates were skipped this many times in a row (non-finite) is taken to diverge
DIVERGED_SKIPS = 10
#: the trailing window (episodes) of the query loss that dates a collapse
COLLAPSE_WINDOW = 10
#: the kinds of a seed's outcome (``seed_outcomes``)
KINDS = ("learned", "collapsed", "diverged")


@dataclass(frozen=True)
class SeedDiagnosis:
    """One seed's diagnosis: ``kind`` (``diverged``, ``collapsed`` or ``recovered``) and its text."""

    kind: str
    text: str


def n_classes(config: dict) -> int | None:
    """C, the number of output units of a run of ``config`` (None when the dataset cannot be read)."""
    name = config.get("dataset", "digits")
    if name in N_CLASSES:
        return N_CLASSES[name]
    try:
        from plastic_jax.data import load_dataset

        return load_dataset(name, config.get("data_dir"), split=config.get("split")).n_classes
    except Exception:  # noqa: BLE001 - a report falls back to saying less
        return None


def seed_records(run: Run) -> dict[int, list[dict]]:
    """The metrics.jsonl records of each seed of ``run``, in episode order (the last record of an
    episode wins); for a member of a sweep (``runs.load_runs``), that member's records only
    (``runs.Run.seed_records``)."""
    return run.seed_records()


def ranges(episodes: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    parts: list[list[int]] = []
    for e in episodes:
        if parts and e == parts[-1][1] + 1:
            parts[-1][1] = e
        else:
            parts.append([e, e])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in parts)


def _query_loss(rs: list[dict]) -> np.ndarray:
    return np.array([r.get("query_loss", r.get("meta_loss", np.nan)) for r in rs], float)


def collapse_since(rs: list[dict], target: float, tol: float, window: int = COLLAPSE_WINDOW) -> int | None:
    """The first episode from which the trailing ``window``-episode mean query loss of the records
    ``rs`` stays within ``tol`` of ``target`` to the end (None: it does not end there)."""
    ma = nan_moving_average(_query_loss(rs), window)
    off = np.flatnonzero(~(np.abs(ma - target) <= tol))
    start = int(off[-1]) + 1 if len(off) else 0
    return rs[start]["episode"] - window + 1 if start < len(rs) else None


def has_telemetry(rs: list[dict]) -> bool:
    """Whether the records carry the guard's telemetry (runs written before it do not)."""
    return any("spike" in r for r in rs)


def last_spike(rs: list[dict], until: int) -> dict | None:
    """The record of the last meta-gradient spike at or before episode ``until`` (None: none)."""
    spikes = [r for r in rs if r.get("spike") and r["episode"] <= until]
    return spikes[-1] if spikes else None


def diagnose_seed(rs: list[dict], n_classes: int | None, theta0: float = 1e-3, n: int = 100) -> SeedDiagnosis | None:
    """The diagnosis of one seed from its records ``rs`` (episode order) over its last ``n``
    episodes; None for a seed that learned without a skipped update. ``n_classes``: C (None:
    no collapse can be told); ``theta0``: θ0 at the start."""
    last = rs[-min(n, len(rs)):]
    ql = _query_loss(last)
    fin = ql[np.isfinite(ql)]
    skips = [r["episode"] for r in rs if r.get("skipped")]
    th = rs[-1].get("theta", {})
    thetas = ", ".join(f"θ{k[1:]} = {th[k]:+.2g}" for k in ("F3", "F0") if k in th)
    trailing = int(rs[-1].get("consecutive_skips", 0))
    if fin.size <= len(ql) / 2 or trailing >= DIVERGED_SKIPS:
        return SeedDiagnosis("diverged", (
            f"diverged ({len(skips)} skipped updates, the first at episode {skips[0] if skips else '?'}"
            + (f", the last {trailing} in a row" if trailing >= DIVERGED_SKIPS else "")
            + f"; query loss non-finite in {len(ql) - fin.size} of its last {len(ql)} episodes; "
            f"Θ kept at its last finite value: {thetas})"))
    med = float(np.median(fin))
    th0 = th.get("F0")
    if n_classes is not None and abs(med - np.log(n_classes)) <= COLLAPSE_TOL * np.log(n_classes) \
            and (th0 is None or th0 <= theta0):
        C = n_classes
        extra = f"; {len(skips)} skipped updates" if skips else ""
        since = collapse_since(rs, np.log(C), COLLAPSE_TOL * np.log(C))
        facts = (f"{thetas}; median query loss {med:.3f} ≈ ln {C} = {np.log(C):.3f}"
                 + (f", since episode {since}" if since is not None else "") + extra)
        if not has_telemetry(rs):
            return SeedDiagnosis("collapsed", f"collapsed (uniform output; {facts})")
        # the collapse is dated by the end of the first window that stays near ln C
        until = since + COLLAPSE_WINDOW - 1 if since is not None else rs[-1]["episode"]
        spike = last_spike(rs, until)
        if spike is None:
            return SeedDiagnosis("collapsed", f"collapsed (uniform output; no meta-gradient spike recorded "
                                              f"before it; {facts})")
        undone = " (rolled back)" if spike.get("rolled_back") else ""
        return SeedDiagnosis("collapsed", f"collapsed (uniform output) after a meta-gradient spike at episode "
                                          f"{spike['episode']}{undone} ({facts})")
    if skips:
        return SeedDiagnosis("recovered", f"{len(skips)} skipped updates (episodes {ranges(skips)}), recovered")
    return None


def seed_diagnoses(run: Run, n: int = 100, records: dict[int, list[dict]] | None = None) -> dict[int, str]:
    """What went wrong in each seed of ``run`` that did not learn (``diagnose_seed``): seed ->
    text. ``records``: the seeds' records (default: read from the run directory)."""
    return {s: d.text for s, d in _diagnoses(run, n, records).items()}


def _diagnoses(run: Run, n: int, records: dict[int, list[dict]] | None) -> dict[int, SeedDiagnosis]:
    C = n_classes(run.config)
    theta0 = float(run.config.get("theta0", 1e-3))
    recs = seed_records(run) if records is None else records
    out = {}
    for seed, rs in recs.items():
        d = diagnose_seed(rs, C, theta0, n)
        if d is not None:
            out[seed] = d
    return out


def seed_outcomes(run: Run, n: int = 100, records: dict[int, list[dict]] | None = None) -> dict[int, tuple[str, str]]:
    """Every seed's outcome: ``(kind, text)``, kind ``learned``, ``diverged`` or ``collapsed``,
    text its last-``n`` accuracy and its diagnosis (``seed_diagnoses``)."""
    diag = _diagnoses(run, n, records)
    acc, _ = last_window(run, n)
    out = {}
    for i, s in enumerate(run.seeds):
        d = diag.get(s)
        kind = d.kind if d is not None and d.kind in KINDS else "learned"
        text = f"{100 * acc[i]:.1f}%" + (f"; {d.text}" if d is not None else "")
        out[s] = (kind, text)
    return out


def skipped(run: Run, records: dict[int, list[dict]] | None = None) -> str:
    """How many (episode, seed) meta-updates were skipped as non-finite, and in how many seeds."""
    recs = seed_records(run) if records is None else records
    per_seed = {s: sum(bool(r.get("skipped")) for r in rs) for s, rs in recs.items()}
    n = sum(per_seed.values())
    seeds = sum(1 for v in per_seed.values() if v)
    return f"{n} of {run.accuracy.size}" + (f" ({seeds} seed(s))" if n else "")
