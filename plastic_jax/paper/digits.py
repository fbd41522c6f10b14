"""The older small digits mode of scripts/reproduce.py (``--scale digits``, the default).

Each experiment is one in-process ``meta_train`` run on scikit-learn's 8×8 digits; the section
goes between the plain ``reproduce.py`` markers of ``--results``. ``--quick`` is CI-sized: a check
of the pipeline, not of the science.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from plastic_jax.config import ConfigError, TrainConfig
from plastic_jax.paper.diagnose import seed_diagnoses, seed_outcomes, skipped
from plastic_jax.paper.markdown import fmt_ci, write_section
from plastic_jax.paper.matrix import TABLE1, t1_name
from plastic_jax.paper.measures import last_window
from plastic_jax.plots import plot_runs
from plastic_jax.runs import Run, load_run, read_config, read_summary
from plastic_jax.stats import bootstrap_ci

#: name -> (settings, the paper's result for it (EMNIST, SPEC §7))
EXPERIMENTS: dict[str, tuple[dict, str]] = {
    "f0-bp": (dict(rule="f0", feedback="bp"), "≈ 70% (Fig. 3)"),
    "f0-fa": (dict(rule="f0", feedback="fa"), "≈ 25% (Fig. 3)"),
    # max_skips=0: a seed whose meta-update goes non-finite keeps its last finite Θ and goes on
    "pool-fa": (dict(rule="pool", feedback="fa", l1=None, max_skips=0),
                "approaches BP by ≈ 300 episodes; Θ keeps θ0, θ2, θ9 (Fig. 4)"),
    "ehebb-fa": (dict(rule="ehebb", feedback="fa"), "far above f0+fa, below bio (Fig. 5)"),
    "oja-fa": (dict(rule="oja", feedback="fa"), "much above f0+fa (Fig. 7)"),
}
#: which runs each figure overlays, and which panels it draws
FIGS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "fig3": (["f0-bp", "f0-fa"], ("accuracy", "loss", "theta", "alignment")),
    "fig4": (["pool-fa", "f0-fa", "f0-bp"], ("accuracy", "theta", "alignment")),
    "fig5": (["ehebb-fa", "f0-fa", "f0-bp"], ("accuracy", "theta", "alignment")),
    "fig7": (["oja-fa", "f0-fa", "f0-bp"], ("accuracy", "theta", "alignment")),
    "fig8": (["oja-fa", "ehebb-fa", "f0-fa", "f0-bp"], ("orthonormality",)),
    "table1": ([t1_name(r) for r in TABLE1], ("accuracy", "alignment")),
}


def configs(args: argparse.Namespace) -> dict[str, TrainConfig]:
    """Every run's config, by name (``args``: scripts/reproduce.py's, digits mode)."""
    if args.quick:
        # tiny: a check of the pipeline, not of the science (compiling dominates; 2 hidden layers)
        base = dict(episodes=3, seeds=2, M=3, K=4, Q=2, hidden=(10, 8), analysis_every=1)
        t1_hidden = (10, 8)
    else:
        base = dict(episodes=args.episodes, seeds=args.seeds, K=args.K, analysis_every=args.analysis_every)
        t1_hidden = (100, 100)
    base.update(dataset=args.dataset, data_dir=args.data_dir)
    out = {}
    for name, (kw, _) in EXPERIMENTS.items():
        kw = dict(kw)
        if "l1" in kw:
            kw["l1"] = args.l1
        out[name] = TrainConfig(**base, **kw, out=os.path.join(args.runs, name))
    for lr in TABLE1:
        name = t1_name(lr)
        out[name] = TrainConfig(**{**base, "hidden": t1_hidden}, layer_rules=lr, feedback="fa",
                                out=os.path.join(args.runs, name))
    return out


def report(args: argparse.Namespace, runs: dict[str, Run], cfgs: dict[str, TrainConfig], seconds: dict[str, float],
           total: float, argv: list[str]) -> str:
    """The digits-mode section: accuracies, Table 1, alignment, pool's Θ, the claims, caveats, figures."""
    rel = os.path.relpath(args.figures, os.path.dirname(os.path.abspath(args.results)))
    c0 = next(iter(cfgs.values()))
    t1_hidden = list(cfgs[next(k for k in cfgs if k.startswith("t1-"))].hidden)
    cmd = "python scripts/reproduce.py " + " ".join(argv)
    lines = [
        "### Reproduction of the paper's figures on digits (older, small scale)",
        "",
        f"Produced by `{cmd.strip()}` ({'QUICK CI MODE: tiny, meaningless numbers' if args.quick else 'full mode'}).",
        "",
        f"- Data: `{args.dataset}`; {c0.M}-way tasks, K = {c0.K} training and Q = {c0.Q} query examples per "
        f"class; hidden sizes {list(c0.hidden)} (Table 1: {t1_hidden}).",
        f"- {c0.episodes} meta-training episodes per run (the paper: 600), {c0.seeds} seeds per run "
        f"vmapped in one program (the paper: 20 trials), Adam 1e-3, θ0 = 1e-3; pool uses λ = {args.l1:g}.",
        "- Accuracy: query accuracy averaged over the last 100 episodes per seed, then mean over seeds with "
        "a 98% percentile-bootstrap CI (500 resamples over seeds), in %.",
        f"- Alignment and orthonormality are measured every {c0.analysis_every} episodes on a re-run of "
        "that episode with the Θ the meta-step was given (pre-update).",
        f"- Runtime: {total / 60:.1f} min in all on this machine ({platform.machine()}, {os.cpu_count()} "
        "CPU cores, shared with other jobs, so timings are upper bounds): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ".",
        "",
        "#### Final accuracies",
        "",
        "| run | rule | feedback | last-100 accuracy, % (98% CI) | non-finite updates skipped "
        "| paper (EMNIST, SPEC §7) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    accs = {}
    for name, (_, paper) in EXPERIMENTS.items():
        c = cfgs[name]
        if name not in runs:
            lines.append(f"| {name} | {c.rule} | {c.feedback} | not run | | {paper} |")
            continue
        acc, _ = last_window(runs[name])
        accs[name] = acc
        lines.append(f"| {name} | {c.rule} | {c.feedback} | {fmt_ci(acc)} | {skipped(runs[name])} | {paper} |")
    lines += ["", "#### Table 1: a 3-layer network, F0 or eHebb per layer (fa)", "",
              "| layer rules | accuracy, % (98% CI) | α_1 (°) | α_2 (°) | α_3 (°) |",
              "| --- | --- | --- | --- | --- |"]
    for lr in TABLE1:
        name = t1_name(lr)
        if name not in runs:
            lines.append(f"| {lr} | not run | | | |")
            continue
        acc, al = last_window(runs[name])
        accs[name] = acc
        cells = [fmt_ci(al[:, l], 1.0) if al is not None else "–" for l in range(3)]
        lines.append(f"| {lr} | {fmt_ci(acc)} | " + " | ".join(cells) + " |")
    lines += ["", "Alignment angles: mean over the analysis points of the last 100 episodes, per seed, "
              "then mean [98% CI] over seeds; α_3 is the output layer, 0 by construction.", ""]

    lines += ["#### Alignment per layer (last 100 episodes)", "",
              "| run | " + " | ".join(f"α_{l + 1} (°)" for l in range(len(c0.hidden) + 1)) + " |",
              "| --- |" + " --- |" * (len(c0.hidden) + 1)]
    for name in EXPERIMENTS:
        if name not in runs:
            continue
        _, al = last_window(runs[name])
        if al is not None:
            lines.append(f"| {name} | " + " | ".join(fmt_ci(al[:, l], 1.0) for l in range(al.shape[1])) + " |")
    lines.append("")

    # Θ of pool at the end: which terms survive the L1 penalty
    pool = runs.get("pool-fa")
    kept: list[str] = []
    if pool is not None:
        lines += _pool_lines(pool, kept)
    lines += _claims(runs, accs, c0, kept)
    lines += _caveats(runs)
    return _figures(lines, rel, runs)


def _pool_lines(pool: Run, kept: list[str]) -> list[str]:
    """Θ of pool at the last episode; fills ``kept`` with the terms that survive the L1 penalty."""
    final = {t: v[:, -1] for t, v in pool.theta.items()}
    big = max(np.abs(v).mean() for v in final.values())
    kept += [t for t, v in final.items() if np.abs(v).mean() >= 0.1 * big]
    return ["#### Θ of pool+fa at the last episode (mean over seeds)", "",
            "| " + " | ".join(final) + " |", "|" + " --- |" * len(final),
            "| " + " | ".join(f"{v.mean():+.2e}" for v in final.values()) + " |", "",
            f"Terms with |θ| at least a tenth of the largest: {', '.join(kept)} (the paper: F0, F2, F9).", ""]


def _claims(runs: dict, accs: dict, c0: TrainConfig, kept: list[str]) -> list[str]:
    """The paper's qualitative claims (SPEC §7), each checked on these runs where they exist."""
    lines = ["#### The paper's claims, checked on these runs", "",
             "| claim (SPEC §7) | holds here |", "| --- | --- |"]
    for a, b in (("f0-bp", "f0-fa"), ("pool-fa", "f0-fa"), ("ehebb-fa", "f0-fa"), ("oja-fa", "f0-fa")):
        if a in accs and b in accs:
            _, lo_a, _ = bootstrap_ci(accs[a])
            _, _, hi_b = bootstrap_ci(accs[b])
            verdict = "yes" if lo_a > hi_b else "no (98% CIs overlap or reversed)"
            lines.append(f"| {a.replace('-', '+')} above {b.replace('-', '+')} | {verdict} |")
    hid = slice(0, len(c0.hidden))

    def hidden_alignment(name: str) -> float | None:
        """Mean alignment angle of run ``name`` over its hidden layers (None: no alignment)."""
        if name not in runs:
            return None
        _, al = last_window(runs[name])
        return None if al is None else al[:, hid].mean()

    base = hidden_alignment("f0-fa")
    for name, what in (("ehebb-fa", "ehebb+fa better aligned than f0+fa (the paper: the best aligned)"),
                       ("oja-fa", "oja+fa better aligned than f0+fa (the paper: only slightly)")):
        a = hidden_alignment(name)
        if a is not None and base is not None:
            lines.append(f"| {what}; mean hidden α {a:.1f}° vs {base:.1f}° | {'yes' if a < base else 'no'} |")
    ortho = {n: runs[n].orthonormality[:, -1, hid].mean() for n in ("f0-fa", "oja-fa")
             if n in runs and runs[n].orthonormality is not None}
    if len(ortho) == 2:
        lines.append(f"| Oja makes hidden weights more orthonormal; final error {ortho['oja-fa']:.3g} vs "
                     f"{ortho['f0-fa']:.3g} | {'yes' if ortho['oja-fa'] < ortho['f0-fa'] else 'no'} |")
    if kept:
        verdict = "yes" if set(kept) == {"F0", "F2", "F9"} else "no"
        lines.append(f"| pool keeps F0, F2, F9 and drops the rest | {verdict} |")
    return [*lines, ""]


def _caveats(runs: dict) -> list[str]:
    """Facts about these runs that bound what they can show."""
    lines = ["#### What these runs can and cannot show", ""]
    for name in ("f0-bp", "f0-fa"):
        if name in runs and "F0" in runs[name].theta:
            th = runs[name].theta["F0"].mean(axis=0)
            k = min(20, len(th) - 1)
            lines.append(f"- θ0 of {name.replace('-', '+')} (mean over seeds) went from {th[-1 - k]:.4f} to "
                         f"{th[-1]:.4f} over the last {k} episodes"
                         + (" — still rising, not converged: accuracies are below what more episodes give."
                            if th[-1] > 1.05 * th[-1 - k] else " — about converged."))
    for name, run in runs.items():
        diag = seed_diagnoses(run)
        if not diag:
            continue
        learned = [s for s, (k, _) in seed_outcomes(run).items() if k == "learned"]
        lines.append(f"- {name}: {skipped(run)} meta-updates were skipped as non-finite. Per seed, from the run's "
                     "own metrics (last 100 episodes): "
                     + "; ".join(f"seed {s}: {d}" for s, d in sorted(diag.items())) + ". "
                     + (f"Seeds {', '.join(map(str, learned))} learned; " if learned else "No seed learned; ")
                     + "the others pull the mean accuracy down and widen its CI"
                     + ("; a diverged seed's alignment is nan, hence the nan in the alignment table."
                        if any(d.startswith("diverged") for d in diag.values()) else "."))
    lines.append("- The paper's numbers are for EMNIST (47 classes, 28×28, 784-170-130-100-70-47); "
                 "these runs use the data and sizes stated above, so only the ordering of the rules and "
                 "the direction of alignment and orthonormality effects are comparable, not the levels.")
    return [*lines, ""]


def _figures(lines: list[str], rel: str, runs: dict) -> str:
    lines += ["#### Figures", ""]
    for fig, (names, panels) in FIGS.items():
        if all(n in runs for n in names):
            lines.append(f"**{fig}**: " + " ".join(f"![{fig} {p}]({rel}/{fig}/{p}.png)" for p in panels))
            lines.append("")
    return "\n".join(lines)


def same_config(cfg: TrainConfig) -> bool:
    """Whether cfg.out holds a finished run of exactly this config."""
    try:
        old = read_config(cfg.out).to_json()
        done = read_summary(cfg.out) is not None
    except ConfigError:
        return False
    new = cfg.to_json()
    return done and all(old.get(k) == v for k, v in new.items() if k != "extra")


def digits_main(args: argparse.Namespace, argv: list[str]) -> int:
    """The digits mode: train (or reuse) each experiment, draw its figures, write its section."""
    from plastic_jax.train import TrainingStopped, meta_train

    cfgs = configs(args)
    only = [f for f in FIGS if f in args.only.split(",")] if args.only else list(FIGS)
    needed = [n for n in cfgs if any(n in FIGS[f][0] for f in only)]
    seconds: dict[str, float] = {}
    for name in needed:
        cfg = cfgs[name]
        timing = os.path.join(cfg.out, "reproduce_seconds.json")
        if args.reuse and same_config(cfg):
            if os.path.exists(timing):
                seconds[name] = json.load(open(timing))["seconds"]
            print(f"{name}: reusing {cfg.out}", flush=True)
            continue
        t = time.perf_counter()
        try:
            s = meta_train(cfg, progress=False, overwrite=True)
        except TrainingStopped as e:  # a diverged run is a result too: report what it logged
            print(f"{name}: {e}", flush=True)
            s = {"last100_accuracy": float("nan")}
        seconds[name] = time.perf_counter() - t
        json.dump({"seconds": seconds[name]}, open(timing, "w"))
        print(f"{name}: last-100 accuracy {s['last100_accuracy']:.4f}, {seconds[name]:.0f} s", flush=True)
    runs = {n: load_run(cfgs[n].out) for n in needed}
    window = 2 if args.quick else 20
    for fig in only:
        names, panels = FIGS[fig]
        plot_runs([runs[n] for n in names], os.path.join(args.figures, fig), window=window, names=panels,
                  title=fig)
    write_section(args.results, report(args, runs, cfgs, seconds, sum(seconds.values()), argv))
    print(f"wrote {args.results}")
    return 0
