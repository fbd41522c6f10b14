"""The meta-training driver: it jits and vmaps the pure core and runs the loop; every file goes
through ``plastic_jax.rundir``.

``meta_train(cfg)`` runs ``cfg.episodes`` meta-training episodes for ``cfg.seeds`` independent
seeds in one compiled program (vmap over seeds, sharded over the local devices), writes
``config.json``, ``metrics.jsonl``, checkpoints and ``summary.json`` to ``cfg.out`` and returns
the summary.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from plastic_jax import rundir
from plastic_jax.config import ConfigError, TrainConfig
from plastic_jax.episode import EpisodeSpec
from plastic_jax.experiment import build, check_training_memory  # build: also this module's API (train.build)
from plastic_jax.inner import Rule, initial_theta
from plastic_jax.meta import Guard, MetaState, meta_init, meta_step
from plastic_jax.stats import bootstrap_ci


class TrainingStopped(RuntimeError):
    """Meta-training stopped early by the divergence guard; the message is one line."""


class TrainingInterrupted(KeyboardInterrupt):
    """Meta-training stopped by SIGINT (Ctrl-C) or SIGTERM after the current episode: its records,
    a checkpoint of it (unless ``--checkpoint-every 0``) and summary.json (``"stopped":
    "interrupted at episode N"``) are written. ``str(e)``: the one line that says how to resume;
    ``exit_code``: 128 + the signal (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        return str(self.args[0])


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, int]]:
    """While open, SIGINT and SIGTERM only set ``caught["signum"]`` (the loop stops cleanly after
    the current episode); a second signal raises ``KeyboardInterrupt`` at once. Outside the main
    thread (where handlers cannot be set) nothing changes."""
    caught: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, frame: Any) -> None:
        if caught:
            raise KeyboardInterrupt
        caught["signum"] = signum

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def theta_dict(theta: np.ndarray, terms: tuple[int, ...] | tuple[str, ...]) -> dict[str, float]:
    """Θ as ``{"F0": θ_0, ...}`` over the active terms; ``terms`` may be the labels themselves
    (``Rule.theta_labels``: ``{"F0@1": …, "F2@1": …, "F0@2": …}`` with per-layer coefficients)."""
    return {(r if isinstance(r, str) else f"F{r}"): float(v) for r, v in zip(terms, np.asarray(theta))}


def meta_optimizer(cfg: TrainConfig, meta_lr: float | jax.Array | None = None) -> optax.GradientTransformation:
    """Adam (its rate a hyperparameter in the optimizer state, ``optax.inject_hyperparams``, so a
    sweep's members each carry their own) with ``meta_lr`` (default: the run's first), after
    clipping the meta-gradient's global norm when ``--meta-clip`` > 0."""
    lr = cfg.meta_lr_values[0] if meta_lr is None else meta_lr
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    return optax.chain(optax.clip_by_global_norm(cfg.meta_clip), adam) if cfg.meta_clip else adam


def meta_guard(cfg: TrainConfig) -> Guard:
    """The ``meta.Guard`` of the run's --clip-factor, --spike-factor and --guard."""
    rollback = cfg.guard == "rollback"
    return Guard(clip_factor=float(cfg.clip_factor), spike_factor=float(cfg.spike_factor), reject_spikes=rollback,
                 rollback=rollback)


def member_hyperparameters(cfg: TrainConfig) -> dict[str, np.ndarray]:
    """``{"l1": (N,), "meta_lr": (N,)}`` over the run's members (``TrainConfig.members``)."""
    members = cfg.members()
    return {"l1": np.array([m[0] for m in members], np.float32),
            "meta_lr": np.array([m[1] for m in members], np.float32)}


def make_step(cfg: TrainConfig, rule: Rule, spec: EpisodeSpec) -> tuple[optax.GradientTransformation, Any]:
    """The jitted meta-step over all members: (state[N], keys[N], ci, l1[N]) -> (state[N], metrics[N]).
    The estimator is the registry's (``estimators.bind``: with its options from ``cfg``, e.g. es's σ, P)."""
    from plastic_jax.estimators import bind

    optimizer = meta_optimizer(cfg)
    step = functools.partial(meta_step, rule=rule, spec=spec, optimizer=optimizer,
                             estimator=bind(cfg.estimator, cfg), guard=meta_guard(cfg))
    return optimizer, jax.jit(jax.vmap(lambda st, k, ci, l1: step(st, k, ci, l1=l1), in_axes=(0, 0, None, 0)))


def make_analysis(rule: Rule, spec: EpisodeSpec) -> Any:
    """Jitted ``metrics.episode_analysis`` over all seeds: (theta[S], keys[S], ci) -> dict of [S, L]
    (alignment, orthonormality) and [S] (accuracy, amplification, amplification_max, chaotic)."""
    from plastic_jax.metrics import episode_analysis

    fn = functools.partial(episode_analysis, rule=rule, spec=spec)
    return jax.jit(jax.vmap(lambda th, k, ci: fn(th, key=k, ci=ci), in_axes=(0, 0, None)))


def analysis_due(cfg: TrainConfig, ep: int) -> bool:
    """Whether episode ``ep`` gets the analysis metrics: every ``analysis_every``-th and the last."""
    return cfg.analysis_every > 0 and (ep % cfg.analysis_every == 0 or ep == cfg.episodes - 1)


def checkpoint_due(cfg: TrainConfig, done: int, stopped: str | None) -> bool:
    """Whether to checkpoint after ``done`` episodes: on schedule, at the end, when stopped."""
    return bool(stopped) or done == cfg.episodes or bool(cfg.checkpoint_every and done % cfg.checkpoint_every == 0)


def init_state(cfg: TrainConfig, rule: Rule) -> MetaState:
    """The meta-state of every member before episode 0 (member axis first; each member's Adam
    carries its own rate, so the members' optimizers are built here)."""
    theta = initial_theta(rule, jnp.float32, cfg.theta0)
    guard = meta_guard(cfg)
    lrs = jnp.asarray(member_hyperparameters(cfg)["meta_lr"])
    return jax.vmap(lambda lr: meta_init(theta, meta_optimizer(cfg, lr), guard))(lrs)


class LegacyMetaState(NamedTuple):
    """``meta.MetaState`` as checkpoints before the guard's state hold it."""

    theta: Any
    opt_state: Any
    skips: Any


def legacy_state(cfg: TrainConfig, state: MetaState) -> tuple[LegacyMetaState, Any]:
    """How to resume a checkpoint written before the guard's state and the injected rate (v0.1:
    ``MetaState(theta, adam or (clip, adam), skips)``): ``(old_target, convert)``, where
    ``convert`` puts the old Adam state into today's structure and starts the guard's state."""
    from plastic_jax.meta import guard_init

    def inner(opt: Any) -> Any:  # today's opt_state -> the old one (Adam without the injected rate)
        return (opt[0], opt[1].inner_state) if cfg.meta_clip else opt.inner_state

    old_target = LegacyMetaState(state.theta, inner(state.opt_state), state.skips)

    def convert(old: LegacyMetaState) -> MetaState:
        adam = old.opt_state[1] if cfg.meta_clip else old.opt_state
        injected = state.opt_state[1] if cfg.meta_clip else state.opt_state
        count = adam[0].count
        injected = injected._replace(count=count.astype(injected.count.dtype), inner_state=adam)
        opt = (old.opt_state[0], injected) if cfg.meta_clip else injected
        guard = jax.vmap(lambda th, o: guard_init(th, o, meta_guard(cfg)))(old.theta, opt)
        return MetaState(old.theta, opt, old.skips, guard)

    return old_target, convert


def seed_keys(cfg: TrainConfig) -> jax.Array:
    """One base key per member, that of its seed: seed s is the single-seed run ``cfg.seed + s``,
    whatever its λ and rate (``PRNGKey`` of each, in one vectorised call; seeds are 32-bit,
    ``config.SEED_MAX``)."""
    seeds = np.array([m[2] for m in cfg.members()], dtype=np.uint64)
    return jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds.astype(np.uint32)))


def episode_keys(base: jax.Array, episode: int) -> jax.Array:
    """The key of episode ``episode`` for every seed: a pure function of (seed, episode)."""
    return jax.vmap(lambda k: jax.random.fold_in(k, episode))(base)


#: telemetry of every record (``meta.meta_step``'s metrics): numbers, then flags
TELEMETRY = ("grad_norm", "grad_norm_median", "update_norm", "adam_nu_max", "step_scale")
FLAGS = ("clipped", "spike", "rolled_back")


def episode_records(cfg: TrainConfig, ep: int, m: dict, theta: np.ndarray, skips: np.ndarray,
                    an: dict | None, terms: tuple[int, ...]) -> list[dict[str, Any]]:
    """The metrics.jsonl records of episode ``ep``, one per member (host arrays with a member
    axis): the member (``l1``, ``meta_lr``, ``seed``), the episode's losses and accuracy, the
    telemetry of the meta-gradient and the guard, Θ after the update; at an analysis point
    (``an``) the alignment, orthonormality, amplification (mean and max over the meta-batch) and
    chaotic flag of the step's episode with the pre-update Θ."""
    records = []
    for s, (lam, lr, seed) in enumerate(cfg.members()):
        rec = {"episode": ep, "seed": seed, "l1": lam, "meta_lr": lr, "meta_loss": float(m["meta_loss"][s]),
               "query_loss": float(m["query_loss"][s]), "accuracy": float(m["accuracy"][s]),
               "skipped": bool(m["skipped"][s]), "consecutive_skips": int(skips[s])}
        rec.update({k: float(m[k][s]) for k in TELEMETRY if k in m})
        rec.update({k: bool(m[k][s]) for k in FLAGS if k in m})
        rec["theta"] = theta_dict(theta[s], terms)
        if an is not None:
            rec["alignment"] = [float(v) for v in an["alignment"][s]]
            rec["orthonormality"] = [float(v) for v in an["orthonormality"][s]]
            if "amplification" in an:  # metrics.episode_analysis with sensitivity (along all ones / √R)
                rec["amplification"] = float(an["amplification"][s])
                rec["amplification_max"] = float(an["amplification_max"][s])
                rec["chaotic"] = bool(an["chaotic"][s])
        records.append(rec)
    return records


def member_name(cfg: TrainConfig, i: int) -> str:
    """``seed 3``, or ``l1 1, meta_lr 0.001, seed 3`` for a member of a sweep."""
    lam, lr, seed = cfg.members()[i]
    return f"l1 {lam:g}, meta_lr {lr:g}, seed {seed}" if cfg.is_sweep else f"seed {seed}"


def guard(cfg: TrainConfig, ep: int, skips: np.ndarray) -> str | None:
    """The last resort: the stop message once a member has ``max_skips`` consecutive updates not applied."""
    if not cfg.max_skips or int(skips.max()) < cfg.max_skips:
        return None
    s = int(np.argmax(skips))
    return (f"stopped at episode {ep}: {member_name(cfg, s)} had {int(skips[s])} consecutive meta-updates not "
            f"applied (non-finite or spikes; --max-skips {cfg.max_skips}); the last finite Θ is in "
            f"{cfg.out}/{rundir.SUMMARY}" + ("" if cfg.guard == "rollback" else "; --guard rollback recovers "
                                             "instead of holding a diverging Θ"))


def summarize(cfg: TrainConfig, accs: np.ndarray, theta: np.ndarray, terms: tuple[int, ...],
              stopped: str | None, events: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """summary.json: last-100 accuracy (per member, mean, 98% bootstrap CI over seeds) and final Θ;
    ``events``: per-member counts of spikes, rollbacks, clipped and skipped updates. A sweep adds
    ``combinations``: the same per (λ, rate), over its seeds."""
    from plastic_jax.checkpoint import all_finite

    if not all_finite(theta):  # cannot happen: meta_step keeps the last finite Θ
        raise TrainingStopped("non-finite Θ; not written")
    done = len(accs)
    last = accs[-min(100, done):]
    # an episode whose adapted network overflowed has a NaN accuracy: left out of its seed's mean; a
    # seed with no finite accuracy in the window (diverged throughout) is left out of the mean over
    # seeds and counted, never averaged in as a number it does not have
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_seed = np.nanmean(last, axis=0)

    def over_seeds(per: np.ndarray) -> dict[str, Any]:
        """Mean and 98% percentile-bootstrap CI (500 resamples) over the seeds with a finite
        per-seed mean (docs/METHOD.md §6), and how many had none."""
        fin = per[np.isfinite(per)]
        _, lo, hi = bootstrap_ci(fin, level=0.98, n_resamples=500) if len(fin) > 1 else (0, np.nan, np.nan)
        return {"last100_accuracy": float(fin.mean()) if len(fin) else float("nan"),
                "last100_accuracy_ci98": [float(lo), float(hi)] if cfg.seeds > 1 else None,  # one seed: none
                "last100_seeds_without_accuracy": len(per) - len(fin)}

    overall = over_seeds(per_seed)
    summary = {
        "episodes": cfg.episodes,
        "seeds": [cfg.seed + s for s in range(cfg.seeds)],
        "last100_accuracy": overall["last100_accuracy"],
        "last100_accuracy_per_seed": [float(a) for a in per_seed],
        "last100_accuracy_ci98": overall["last100_accuracy_ci98"],
        "last100_seeds_without_accuracy": overall["last100_seeds_without_accuracy"],
        "theta": [theta_dict(t, terms) for t in theta],
    }
    if cfg.is_sweep:
        members = cfg.members()
        summary["members"] = [{"l1": lam, "meta_lr": lr, "seed": seed} for lam, lr, seed in members]
        summary["seeds"] = [seed for _, _, seed in members]
        combos = []
        for c in range(len(members) // cfg.seeds):
            sl = slice(c * cfg.seeds, (c + 1) * cfg.seeds)
            combos.append({"l1": members[sl.start][0], "meta_lr": members[sl.start][1], **over_seeds(per_seed[sl])})
        summary["combinations"] = combos
    if events is not None:
        summary["events"] = {k: [int(x) for x in v] for k, v in events.items()}
    if stopped:
        summary["episodes_completed"] = done
        summary["stopped"] = stopped
    return summary


def uses_adjoint(cfg: TrainConfig, n_theta: int) -> bool:
    """Whether the run's meta-gradient is the adjoint (``--meta-grad adjoint``, or ``auto``'s choice)."""
    from plastic_jax.estimators import resolve

    return resolve(cfg.estimator, n_theta, cfg.feedback) == "adjoint"


def warn_rebuild_failure(cfg: TrainConfig, ep: int, m: dict, warned: bool) -> bool:
    """With the adjoint, a non-finite meta-gradient of a finite meta-loss is a failed rebuild of
    W_t: issue ``adjoint.AdjointRebuildWarning`` for the first one of the run (``warned``: already
    issued); returns whether it has been issued now or before."""
    bad = ~np.isfinite(np.asarray(m["grad_norm"])) & np.isfinite(np.asarray(m["meta_loss"]))
    if warned or not bad.any():
        return warned
    from plastic_jax.adjoint import rebuild_failure_warning

    rebuild_failure_warning(ep, member_name(cfg, int(np.argmax(bad))))
    return True


def _count_events(events: dict[str, np.ndarray], i: int, rec: dict[str, Any]) -> None:
    for key, flag in (("spikes", "spike"), ("rollbacks", "rolled_back"), ("clipped", "clipped"),
                      ("skipped", "skipped")):
        events[key][i] += bool(rec.get(flag))


def progress_line(accs: np.ndarray, m: dict, events: dict[str, np.ndarray]) -> str:
    """The progress bar's postfix: last-100 accuracy, the median meta-gradient norm of this
    episode over members, and the spikes and rollbacks so far (named when there are any)."""
    line = f"acc(last 100)={accs.mean():.3f} |g|={float(np.nanmedian(m['grad_norm'])):.3g}"
    for key in ("spikes", "rollbacks"):
        n = int(events[key].sum())
        if n:
            line += f" {key}={n}"
    if "spike" in m and bool(np.any(m["spike"])):
        line += " SPIKE"
    return line


def compile_ahead(step: Any, analyze: Any, state: MetaState, keys: jax.Array, ci: Any,
                  analysis: bool, l1: jax.Array) -> tuple[Any, Any]:
    """``step`` (and ``analyze`` when ``analysis``) compiled ahead of time for these arguments,
    with "compiling … (N s)" on stderr, so the progress bar times episodes, not compilation."""
    import sys
    import time

    t0 = time.perf_counter()
    print("compiling …", end="", file=sys.stderr, flush=True)
    step = step.lower(state, keys, ci, l1).compile()
    if analysis:
        analyze = analyze.lower(state.theta, keys, ci).compile()
    print(f" ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    return step, analyze


def _progress_bar(cfg: TrainConfig, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.episodes, initial=start, unit="ep",
                desc=f"{cfg.rule if not cfg.terms else cfg.terms}+{cfg.feedback}")


def meta_train(cfg: TrainConfig, *, progress: bool = True, overwrite: bool = False, resume: bool = False,
               devices: Any = None) -> dict[str, Any]:
    """Run meta-training; returns the summary (also written to ``out/summary.json``).

    Everything is checked (settings, dataset, devices, the run directory) before anything on disk
    changes; ``resume`` continues the run in ``cfg.out`` from its newest usable checkpoint
    (``rundir.RunWriter.start``). Checkpoints: every ``cfg.checkpoint_every`` episodes, at the end and
    when the guard stops the run, which raises ``TrainingStopped`` after ``cfg.max_skips``
    consecutive skipped updates of a seed. SIGINT/SIGTERM stop the loop after the current episode:
    its records, a checkpoint and summary.json are written, then ``TrainingInterrupted``.
    ``devices``: the seed axis is sharded over these (None: all local devices; ``plastic_jax.sharding``).
    """
    from plastic_jax.checkpoint import CheckpointError
    from plastic_jax.sharding import seed_shardings

    exp = build(cfg)
    # config.json records the class split and what the run depends on (a resume with other data is refused)
    cfg = rundir.recorded_config(cfg, exp)
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1:
            raise ConfigError(f"--devices must be a positive integer, got {devices}")
        if devices > len(jax.local_devices()):
            raise ConfigError(f"--devices {devices}: this process has {len(jax.local_devices())} local device(s)")
    check_training_memory(cfg, exp.spec, exp.rule, devices if isinstance(devices, int) else None)
    if cfg.tensorboard:
        from plastic_jax.tensorboard import check_available

        check_available()  # before anything on disk changes
    n_members = len(cfg.members())
    seed_sh, repl = seed_shardings(n_members, devices)
    _, step = make_step(cfg, exp.rule, exp.spec)
    analyze, terms = make_analysis(exp.rule, exp.spec), exp.rule.theta_labels()
    accs = np.zeros((cfg.episodes, n_members))
    events = {k: np.zeros(n_members, np.int64) for k in ("spikes", "rollbacks", "clipped", "skipped")}
    from plastic_jax.tensorboard import open_writer

    with (rundir.open_run(cfg, resume=resume, overwrite=overwrite) as run, stop_on_signals() as caught,
          open_writer(cfg) as tb):
        fresh = init_state(cfg, exp.rule)
        start, state, records = run.start(fresh, legacy=legacy_state(cfg, jax.device_get(fresh)))
        for r in records:
            i = rundir.member_index(cfg, r)
            accs[r["episode"], i] = r["accuracy"]
            _count_events(events, i, r)
        l1 = jnp.asarray(member_hyperparameters(cfg)["l1"])
        state, base, ci, l1 = jax.device_put((state, seed_keys(cfg), exp.ci, l1), (seed_sh, seed_sh, repl, seed_sh))
        if progress and start < cfg.episodes:
            step, analyze = compile_ahead(step, analyze, state, episode_keys(base, start), ci, cfg.analysis_every > 0,
                                          l1)
        bar, stopped, done = _progress_bar(cfg, start) if progress else None, None, start
        adjoint, warned = uses_adjoint(cfg, exp.rule.n_theta), False
        for ep in range(start, cfg.episodes):
            keys = episode_keys(base, ep)
            # analysis: the same episode(s) as this step, with the Θ the step is given (pre-update)
            an = jax.device_get(analyze(state.theta, keys, ci)) if analysis_due(cfg, ep) else None
            state, m = step(state, keys, ci, l1)
            m, theta, skips = jax.device_get((m, state.theta, state.skips))
            accs[ep] = m["accuracy"]
            recs = episode_records(cfg, ep, m, theta, skips, an, terms)
            for i, r in enumerate(recs):
                _count_events(events, i, r)
            if adjoint:
                warned = warn_rebuild_failure(cfg, ep, m, warned)
            run.append(recs)
            tb.add(recs)
            done, stopped = ep + 1, guard(cfg, ep, skips)
            if not stopped and caught and done < cfg.episodes:
                stopped = f"interrupted at episode {done}"
            if run.checkpointing and checkpoint_due(cfg, done, stopped):
                try:
                    run.save_checkpoint(done, state)
                except CheckpointError as e:  # a non-finite state: never written
                    raise TrainingStopped(f"{e}; metrics.jsonl up to episode {ep} and the earlier checkpoints "
                                          f"in {cfg.out} are intact") from None
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(progress_line(accs[max(0, ep - 99): ep + 1], m, events))
            if stopped:
                break
        if bar is not None:
            bar.close()
        summary = summarize(cfg, accs[:done], np.asarray(jax.device_get(state.theta)), terms, stopped, events)
        run.write_summary(summary)
    if stopped and caught and stopped.startswith("interrupted"):
        how = (f"resume with: plastic-jax meta-train --resume {cfg.out}" if run.checkpointing else
               f"no checkpoint (--checkpoint-every 0): --resume {cfg.out} would restart at episode 0")
        raise TrainingInterrupted(f"{stopped}; {how}", caught["signum"])
    if stopped:
        raise TrainingStopped(stopped)
    return summary
