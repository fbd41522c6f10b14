"""Reading a run back: the one reader of run directories (config.json, metrics.jsonl,
summary.json) and of the curves drawn from them. ``plastic_jax.rundir`` writes runs and
re-exports these readers under their old names; ``plots``, ``evaluate``, ``replay``, the paper's
reports and the scripts read through here.

    run = load_run("runs/bio-fa")        # a Run: path, config, records, summary, curves per seed
    runs = load_runs("runs/pool-sweep")  # a sweep: one Run per (λ, Adam rate) combination

**Defensive.** A problem is a ``RunDirError`` (a ``ConfigError``: one line, exit code 2) naming
the file. A torn last line of metrics.jsonl (a run killed mid-write) is dropped everywhere,
silently; a bad line before it is an error. A FIFO, device or socket where a run file belongs is
refused before it is opened (reading it would block).

**NaN.** Records are strict JSON and write a non-finite number as ``null``; the reader accepts both
``null`` and the ``NaN``/``Infinity`` that runs written before wrote, and gives NaN for ``null``.

**Old runs.** A config.json written before a setting existed reads with the value the run had
(``PREDATED``); a record written before records named their λ and rate belongs to the run's first
ones (``member_index``); a config.json whose ``extra`` holds the class split (``class_split``) or
none reads the same. Reading needs NumPy only (no device, no checkpoint library).
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from plastic_jax import pathways
from plastic_jax.config import (
    EPISODES_MAX,
    LEGACY,
    SEED_MAX,
    SETTINGS,
    ConfigError,
    TrainConfig,
    check_settings,
    flag_of,
)
from plastic_jax.pathways import PLASTIC_B_TERMS

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "summary.json"
#: settings a run's config.json may lack: those added after old runs were written, with the value
#: those runs had (``config.LEGACY``), and --meta-clip, added without declaring one (runs before
#: it did not clip: 0)
PREDATED: dict[str, Any] = {"meta_clip": 0.0, **LEGACY}
#: number fields of a record (null: not finite) and lists of numbers
NUMBER_FIELDS, NUMBER_LISTS = ("meta_loss", "query_loss", "accuracy"), ("alignment", "orthonormality")
#: the terms of ``plastic`` feedback's Θ^B in Θ's order (``feedback.PLASTIC_B_TERMS``; declared in
#: the JAX-free ``plastic_jax.pathways``, so that reading a run needs no JAX)
B_TERMS = PLASTIC_B_TERMS
#: a key of a record's Θ table (``inner.Rule.theta_labels``): "F<term id>", or "F<term id>@<layer>"
#: (1-based) with --per-layer-theta; then the feedback mode's meta-parameters as each registered
#: pathway declares them (``pathways.Pathway.label_pattern``): "B:<term>" (group 3, Θ^B of
#: ``plastic``), "gate@<layer>" (group 4, φ_ℓ of ``routing``'s gate of e_ℓ, 0-based), then those of
#: pathways registered later. Follows ``pathways.register`` (``pathways.theta_key()``).
THETA_KEY = pathways.THETA_KEY
#: sort key of a Θ label: the coefficients by term id, then layer (a shared Θ has layer 0); after
#: them each pathway's labels in the registry's order (Θ^B in ``B_TERMS``' order, then the gates
#: by layer); anything else last
theta_key_order = pathways.theta_key_order
#: telemetry of a record (``train.TELEMETRY`` and ``train.FLAGS``, spelled out here so that reading
#: a run needs no JAX): numbers, then flags
TELEMETRY = ("grad_norm", "grad_norm_median", "update_norm", "adam_nu_max", "step_scale")
TELEMETRY_FLAGS = ("clipped", "spike", "rolled_back")
#: the episode sensitivity of an analysis record (``metrics.episode_analysis``; absent from older runs):
#: the amplification (mean and max over the meta-batch), then the flag
SENSITIVITY = ("amplification", "amplification_max")
SENSITIVITY_FLAGS = ("chaotic",)


class RunDirError(ConfigError):
    """A run directory that cannot be used as asked; the message is one line naming the file."""


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


# --------------------------------------------------------------------------- config.json, summary.json, metrics.jsonl


def _refuse_special(path: str) -> None:
    """``RunDirError`` when ``path`` is a FIFO, a device or a socket (reading it would block or never
    end: a planted ``mkfifo``, a link to /dev/zero); a directory is left to ``open`` to refuse."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise RunDirError(f"cannot read {path}: not a regular file (a FIFO, device or socket); a run's files are "
                          "plain files")


def read_json(path: str) -> Any:
    """The JSON value in ``path``; ``RunDirError`` naming the file when it cannot be read or parsed."""
    _refuse_special(path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RunDirError(f"{path} is not valid JSON ({_first_line(e)}); the file is damaged") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_record(rec: dict[str, Any]) -> str | None:
    """Normalise a parsed record in place (``null`` numbers become NaN); what is wrong with it."""
    ep = rec.get("episode")
    if not isinstance(ep, int) or isinstance(ep, bool) or not 0 <= ep <= EPISODES_MAX:
        return f"'episode' must be a non-negative integer (at most {EPISODES_MAX}), got {ep!r}"
    seed = rec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or abs(seed) > SEED_MAX:  # runs before 32-bit seeds: < 0
        return f"'seed' must be an integer of at most 32 bits, got {seed!r}"
    for k in NUMBER_FIELDS:
        if k in rec:
            if rec[k] is None:
                rec[k] = math.nan
            elif not _is_number(rec[k]):
                return f"{k!r} must be a number or null, got {rec[k]!r}"
    if "theta" in rec:
        th = rec["theta"]
        if not isinstance(th, dict) or not all(isinstance(k, str) and THETA_KEY.fullmatch(k) for k in th):
            return (f"'theta' must be a table like {{\"F0\": 0.1}} (or \"F0@1\" per layer, \"B:kp\", "
                    f"\"gate@0\" of the feedback), got {th!r}")[:200]
        for k, v in th.items():
            if v is None:
                th[k] = math.nan
            elif not _is_number(v):
                return f"'theta' {k} must be a number or null, got {v!r}"
    for k in NUMBER_LISTS:
        if k in rec:
            v = rec[k]
            if not isinstance(v, list) or not all(x is None or _is_number(x) for x in v):
                return f"{k!r} must be a list of numbers, got {v!r}"[:200]
            rec[k] = [math.nan if x is None else x for x in v]
    return None


def read_config_dict(run_dir: str) -> dict[str, Any]:
    """The raw settings of the run in ``run_dir`` (its config.json as a dict)."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(path):
        raise RunDirError(f"{run_dir!r} holds no run (no {CONFIG})")
    d = read_json(path)
    if not isinstance(d, dict):
        raise RunDirError(f"{path} must hold a table of settings, got {type(d).__name__}")
    return {str(k).replace("-", "_"): v for k, v in d.items()}


def read_config(run_dir: str) -> TrainConfig:
    """The ``TrainConfig`` of the run in ``run_dir``; settings its config.json predates take the
    values the run had (``config.LEGACY``, ``PREDATED``). Any other setting it lacks is a
    ``RunDirError`` naming the file and the key: today's default would silently change the run."""

    d = read_config_dict(run_dir)
    path = os.path.join(run_dir, CONFIG)
    try:
        cfg = TrainConfig.from_json({**PREDATED, **d})
        check_settings(cfg)
    except (ConfigError, TypeError) as e:
        raise RunDirError(f"{path}: {_first_line(e)}") from None
    missing = [k for k in SETTINGS if k not in d and k not in PREDATED]
    if missing:
        raise RunDirError(f"{path} lacks the setting {missing[0]!r} ({flag_of(missing[0])})"
                          + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                          + "; a run's config.json names every setting: restore it (the file was edited or damaged)")
    return cfg


def read_summary(run_dir: str) -> dict[str, Any] | None:
    """The run's summary.json (None when there is none yet)."""
    path = os.path.join(run_dir, SUMMARY)
    if not os.path.exists(path):
        return None
    d = read_json(path)
    if not isinstance(d, dict):
        raise RunDirError(f"{path} must hold a table, got {type(d).__name__}")
    return d


def read_records(run_dir: str) -> list[dict[str, Any]]:
    """Every record of the run's metrics.jsonl, in file order ([] when there is no file).

    The one reader of metrics.jsonl. A torn last line (a run killed mid-write) is dropped; a line
    before it that is not a JSON object with an integer ``episode`` is a ``RunDirError``, and so is
    any record whose fields have the wrong type (``_check_record``). ``null`` numbers read as NaN.
    """
    path = os.path.join(run_dir, METRICS)
    if not os.path.exists(path):
        return []
    _refuse_special(path)
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            if i == last:
                break  # torn by a kill mid-write
            raise RunDirError(f"{path} line {i + 1} is not JSON; the file is damaged") from None
        if not isinstance(rec, dict) or "episode" not in rec:
            if i == last:
                break
            raise RunDirError(f"{path} line {i + 1} is not a record (no integer 'episode')")
        why = _check_record(rec)
        if why:
            raise RunDirError(f"{path} line {i + 1} is not a valid record: {why}")
        records.append(rec)
    return records


def latest_records(records: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """``(episode, seed) -> record``, the last record of an (episode, seed) winning (so a run that
    was resumed after a crash reads as one), sorted by episode and seed."""
    latest = {(r["episode"], r.get("seed", 0)): r for r in records}
    return dict(sorted(latest.items()))


def member_of(rec: dict[str, Any]) -> tuple[Any, Any, int]:
    """The member a record belongs to: ``(l1, meta_lr, seed)`` (None for the λ and rate of a run
    written before records named them; such runs have one member per seed)."""
    return rec.get("l1"), rec.get("meta_lr"), rec.get("seed", 0)


def complete_episodes(records: list[dict[str, Any]], n_members: int) -> list[dict[str, Any]]:
    """The records of the leading episodes 0, 1, ... that all ``n_members`` members (seeds, or
    (λ, rate, seed) of a sweep) reached; a record repeated for the same member counts once."""
    seen: dict[int, set] = {}
    for r in records:
        seen.setdefault(r["episode"], set()).add(member_of(r))
    done = 0
    while len(seen.get(done, ())) == n_members:
        done += 1
    return [r for r in records if r["episode"] < done]


def split_sweep(records: list[dict[str, Any]]) -> dict[tuple[Any, Any], list[dict[str, Any]]]:
    """The records of each (λ, rate) combination of a run, in file order (one entry for a run
    that sweeps nothing)."""
    out: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault((r.get("l1"), r.get("meta_lr")), []).append(r)
    return out


def member_index(cfg: TrainConfig, rec: dict[str, Any]) -> int | None:
    """The index of a record's member on the run's vmapped axis (``TrainConfig.members``), or None
    when it is none of them. A record without ``l1``/``meta_lr`` (written before records named
    them) belongs to the run's first λ and rate."""
    lam = rec.get("l1", cfg.l1_values[0])
    lr = rec.get("meta_lr", cfg.meta_lr_values[0])
    try:
        i, j = cfg.l1_values.index(lam), cfg.meta_lr_values.index(lr)
    except ValueError:
        return None
    s = rec.get("seed", 0) - cfg.seed
    return (i * len(cfg.meta_lr_values) + j) * cfg.seeds + s if 0 <= s < cfg.seeds else None


# --------------------------------------------------------------------------- a run, read


@dataclass(frozen=True, eq=False)
class Run:
    """A run directory read back (read-only): its settings, records, summary and curves, seeds on
    the first axis. A sweep's directory is one ``Run`` per (λ, Adam rate) combination (``load_runs``).

    path: the run directory; label: how figures name it (``run_label``, ``plots.label_runs``);
    config: config.json as a dict (``read_config_dict``; {} without one), a sweep member's with its
    own ``l1`` and ``meta_lr``; seeds: the seeds, in order;
    episodes: (E,) the episodes every seed reached; accuracy, meta_loss: (S, E); theta: Θ label ->
    (S, E) as recorded (a routing gate's raw φ_ℓ, not sigmoid(φ_ℓ));
    analysis_episodes: (A,); alignment, orthonormality: (S, A, L) (A = 0 when never logged);
    telemetry: name -> (S, E) for every name of ``TELEMETRY`` and ``TELEMETRY_FLAGS`` when any
    record has telemetry (a flag is 1.0 or 0.0; a value a record lacks, or null, is NaN), empty for
    a run written before records carried it; also ``SENSITIVITY`` and ``SENSITIVITY_FLAGS`` when
    any record has an amplification (NaN except at the analysis points);
    member: the combination of a sweep, `` λ=<l1> lr=<meta_lr>`` (appended to the label), else "";
    records: the run's (a sweep member's) records of metrics.jsonl in file order (``read_records``);
    summary: summary.json (``read_summary``; None before the run has finished or stopped).

    Equality is identity (the curves are arrays); a changed copy is ``dataclasses.replace(run, ...)``.
    """

    path: str
    label: str
    config: dict
    seeds: list[int]
    episodes: np.ndarray
    accuracy: np.ndarray
    meta_loss: np.ndarray
    theta: dict[str, np.ndarray] = field(default_factory=dict)
    analysis_episodes: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    alignment: np.ndarray | None = None
    orthonormality: np.ndarray | None = None
    telemetry: dict[str, np.ndarray] = field(default_factory=dict)
    member: str = ""
    records: tuple[dict[str, Any], ...] = ()
    summary: dict[str, Any] | None = None

    @property
    def train_config(self) -> TrainConfig:
        """The directory's ``TrainConfig`` (``read_config``: every member of a sweep; a
        ``RunDirError`` when its config.json lacks a setting or holds a bad one)."""
        return read_config(self.path)

    @property
    def finished(self) -> bool:
        """Whether the run ended (summary.json written) without being stopped or interrupted."""
        return self.summary is not None and "stopped" not in self.summary

    def seed_records(self) -> dict[int, list[dict[str, Any]]]:
        """seed -> that seed's records in episode order (the last record of an episode wins)."""
        out: dict[int, list[dict[str, Any]]] = {}
        for (_, seed), r in latest_records(list(self.records)).items():
            out.setdefault(seed, []).append(r)
        return out


def run_label(config: dict) -> str:
    """``rule+feedback``: the per-layer rules, the term ids or the named rule, then the feedback,
    `` per-layer Θ`` for a run with one Θ row per layer (``per_layer_theta``) and its L1 strength
    (whatever the values' types: a label never fails). ``plots.label_runs`` adds what tells
    overlaid runs apart beyond that (the F5–F8 reading, the preset)."""
    if config.get("layer_rules"):
        rule = f"[{config['layer_rules']}]"
    elif config.get("terms"):
        rule = f"F{{{config['terms']}}}"
    else:
        rule = str(config.get("rule", "?"))
    label = f"{rule}+{config.get('feedback', '?')}"
    if config.get("per_layer_theta") is True:
        label += " per-layer Θ"
    l1 = config.get("l1")
    if l1:
        label += f" (L1 {l1:g})" if isinstance(l1, (int, float)) and not isinstance(l1, bool) else f" (L1 {l1})"
    return label


def _grid_of(path: str, recs: dict, episodes, seeds, field_name: str, get) -> np.ndarray:
    """(seeds, episodes) of ``get(record)``; a missing or malformed field is a ``RunDirError``
    naming the file and the record."""
    out = np.full((len(seeds), len(episodes)), np.nan)
    for i, s in enumerate(seeds):
        for j, e in enumerate(episodes):
            try:
                v = get(recs[(e, s)])
            except (KeyError, TypeError):
                raise RunDirError(f"{os.path.join(path, METRICS)}: the record of episode {e}, seed {s} "
                                  f"has no {field_name}") from None
            out[i, j] = np.nan if v is None else v
    return out


def _telemetry_grid(path: str, recs: dict, episodes, seeds, name: str, flag: bool) -> np.ndarray:
    """(seeds, episodes) of the telemetry ``name``: a number (a flag: true 1.0, false 0.0); NaN
    where a record lacks it or has null; any other value is a ``RunDirError`` naming the record."""
    out = np.full((len(seeds), len(episodes)), np.nan)
    for i, s in enumerate(seeds):
        for j, e in enumerate(episodes):
            v = recs[(e, s)].get(name)
            if v is None:
                continue
            ok = isinstance(v, bool) if flag else isinstance(v, (int, float)) and not isinstance(v, bool)
            if not ok:
                raise RunDirError(f"{os.path.join(path, METRICS)}: the record of episode {e}, seed {s} "
                                  f"has {name!r} = {v!r:.40}, not a {'true/false flag' if flag else 'number'}")
            out[i, j] = float(v)
    return out


def _fmt(v) -> str:
    """A swept value in a label: ``1``, ``0.001``, ``1e-05`` (anything else as it is)."""
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _build_run(path: str, config: dict, label: str, records: list[dict], summary: dict | None,
               member: str = "") -> Run:
    """A ``Run`` of ``records`` (one run, or one combination of a sweep): the last record of an
    (episode, seed) wins, so a resumed run reads as one."""
    recs = latest_records(records)
    if not recs:
        raise ConfigError(f"{os.path.join(path, METRICS)!r} is empty")
    episodes = np.array(sorted({e for e, _ in recs}))
    seeds = sorted({s for _, s in recs})
    # keep the episodes every seed has reached
    episodes = np.array([e for e in episodes if all((e, s) in recs for s in seeds)])

    def grid(name, fn):
        return _grid_of(path, recs, episodes, seeds, name, fn)

    curves: dict[str, Any] = {"accuracy": grid("'accuracy'", lambda r: r["accuracy"]),
                              "meta_loss": grid("'meta_loss'", lambda r: r["meta_loss"])}
    # every label any record has (the reader checked them: THETA_KEY); a record without one: NaN there
    terms = sorted({t for r in recs.values() for t in r.get("theta", {})}, key=theta_key_order)
    if not terms:
        raise RunDirError(f"{os.path.join(path, METRICS)} holds no Θ ('theta') in any record")
    curves["theta"] = {t: grid(f"'theta' {t}", lambda r, t=t: r["theta"].get(t)) for t in terms}
    an = [e for e in episodes if all("alignment" in recs[(e, s)] for s in seeds)]
    curves["analysis_episodes"] = np.array(an, int)
    if an:
        for name in ("alignment", "orthonormality"):
            rows = [[recs[(e, s)].get(name) for e in an] for s in seeds]
            widths = {len(v) if isinstance(v, list) else -1 for row in rows for v in row}
            if len(widths) != 1 or -1 in widths:
                raise RunDirError(f"{os.path.join(path, METRICS)}: '{name}' must list one value per "
                                  f"layer in every analysis record, got lengths {sorted(widths)}")
            curves[name] = np.array(rows, float)
    telemetry: dict[str, np.ndarray] = {}
    if any(k in r for r in recs.values() for k in TELEMETRY + TELEMETRY_FLAGS):
        telemetry = {k: _telemetry_grid(path, recs, episodes, seeds, k, k in TELEMETRY_FLAGS)
                     for k in TELEMETRY + TELEMETRY_FLAGS}
    if any(k in r for r in recs.values() for k in SENSITIVITY):
        telemetry.update({k: _telemetry_grid(path, recs, episodes, seeds, k, k in SENSITIVITY_FLAGS)
                          for k in SENSITIVITY + SENSITIVITY_FLAGS})
    return Run(path=path, label=label + member, config=config, seeds=seeds, episodes=episodes, telemetry=telemetry,
               member=member, records=tuple(records), summary=summary, **curves)


def load_runs(path: str) -> list[Run]:
    """The runs of a run directory: one ``Run``, or for a sweep one per (λ, Adam rate)
    combination (``split_sweep``, in the order the run wrote them), each with the combination's
    ``l1`` and ``meta_lr`` in its config and `` λ=<l1> lr=<meta_lr>`` after its label. No
    metrics.jsonl, or no record in it, is a ``ConfigError``."""
    if not os.path.isfile(os.path.join(path, METRICS)):
        raise ConfigError(f"{path!r} holds no run (no metrics.jsonl)")
    config = read_config_dict(path) if os.path.exists(os.path.join(path, CONFIG)) else {}
    records = read_records(path)
    summary = read_summary(path)

    def first(v):
        return v[0] if isinstance(v, list) and v else v

    # a record written before records named their member (a resumed older run) is no combination of
    # its own: a run is a sweep when the records that name theirs name several, and then an unnamed
    # one is the run's first λ and rate (as member_index)
    named = [r for r in records if "l1" in r and "meta_lr" in r]
    dflt = {"l1": first(config.get("l1")), "meta_lr": first(config.get("meta_lr"))}
    groups = split_sweep(named)
    if len(groups) > 1 and len(named) < len(records):
        groups = split_sweep([r if "l1" in r and "meta_lr" in r else {**dflt, **r} for r in records])
    if len(groups) <= 1:
        return [_build_run(path, config, run_label(config), records, summary)]
    base = run_label({**config, "l1": None})  # each member names its own λ
    return [_build_run(path, {**config, "l1": lam, "meta_lr": lr}, base, recs, summary,
                       member=f" λ={_fmt(lam)} lr={_fmt(lr)}") for (lam, lr), recs in groups.items()]


def load_run(path: str) -> Run:
    """Read ``config.json``, ``metrics.jsonl`` and ``summary.json`` of a run that is not a sweep
    (the last record of an (episode, seed) wins, so a resumed run reads as one). A sweep is a
    ``ConfigError``: ``load_runs`` reads its combinations."""
    runs = load_runs(path)
    if len(runs) != 1:
        raise ConfigError(f"{path!r} is a sweep of {len(runs)} (l1, meta_lr) combinations, not one run; "
                          f"read it with load_runs")
    return runs[0]


def relabel(run: Run, label: str) -> Run:
    """``run`` (a copy) labelled ``label``, a sweep member's λ and rate after it."""
    return replace(run, label=label + run.member)
