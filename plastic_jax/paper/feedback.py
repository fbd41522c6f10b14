"""The report of scripts/feedback_pathways.py: the rules × feedback modes of docs/METHOD.md §9.

``FeedbackReport`` reads the matrix's runs (``Result``: one run's status and numbers) and builds
the section "Feedback pathways" of RESULTS.md: per rule a table of the modes (last-100-episode
accuracy with its 98% bootstrap CI over seeds, the seeds' accuracies and outcomes, the alignment
angle of each hidden layer at the end, the final Θ, Θ^B and the routing gates sigmoid(φ)), and
findings computed from those numbers (finished runs only). ``draw`` draws its figures. The runs
are made with the paper-scale flags (``plastic_jax.paper.matrix.paper_argv``) and their seeds
diagnosed as the paper report's (``plastic_jax.paper.diagnose``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import warnings

import numpy as np

from plastic_jax.config import ConfigError
from plastic_jax.paper.diagnose import N_CLASSES, N_INPUTS, seed_outcomes
from plastic_jax.paper.markdown import fmt_ci, fmt_theta
from plastic_jax.paper.measures import ci_separated, last_window
from plastic_jax.paper.status import PaperStatus, wall_seconds
from plastic_jax.plots import nan_moving_average, seed_band, sigmoid
from plastic_jax.runs import METRICS, load_run, read_summary, theta_key_order
from plastic_jax.stats import bootstrap_ci

BEGIN = "<!-- feedback-pathways:begin -->"
END = "<!-- feedback-pathways:end -->"
RULES = ("f0", "bio")
#: the modes of plastic_jax.feedback.FEEDBACK_MODES, in its order
MODES = ("bp", "fa", "dfa", "sign", "kp", "plastic", "routing")
#: alignment "at the end": the mean of a seed's last this many analysis records
END_RECORDS = 5
#: a gate whose sigmoid(φ) stays within this of ½ in every seed is said to have stayed at ½
GATE_TOL = 0.01
#: the last-N-episodes window of the accuracy
WINDOW = 100

# =========================================================================== per-run numbers


def kind_of(label: str) -> str:
    """``coef`` (F…), ``B`` (Θ^B of plastic) or ``gate`` (φ of routing)."""
    return "B" if label.startswith("B:") else "gate" if label.startswith("gate@") else "coef"


class Result:
    """One run of the matrix: its status and, when it logged anything, its numbers."""

    def __init__(self, st: PaperStatus):
        self.st = st
        self.name = st.run.name
        self.rule, self.mode = st.run.group, st.run.name[len(st.run.group) + 1:]
        self.run = None
        self.error = ""
        if st.state not in ("missing", "conflict") and os.path.exists(os.path.join(st.out, METRICS)):
            try:
                self.run = load_run(st.out)
            except ConfigError as e:  # an empty metrics.jsonl: the run has just started
                self.error = str(e)
        if self.run is None:
            return
        r = self.run
        self.acc = last_window(r, WINDOW)[0]  # (S,)
        self.outcomes = seed_outcomes(r, WINDOW)
        self.align = None  # (S, L-1): the hidden layers, mean of the last END_RECORDS analysis records
        if r.alignment is not None and r.alignment.shape[1]:
            a = r.alignment[:, -END_RECORDS:, :-1]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self.align = np.nanmean(np.where(np.isfinite(a), a, np.nan), axis=1)
        # final Θ per seed: summary.json's when finished, else the last logged record's
        summary = read_summary(st.out)
        if st.state == "done" and summary is not None and summary.get("theta"):
            rows = summary["theta"]
            labels = sorted({k for row in rows for k in row}, key=theta_key_order)
            self.theta = {k: np.array([np.nan if row.get(k) is None else row[k] for row in rows], float)
                          for k in labels}
            self.theta_from = "summary.json"
        else:
            self.theta = {k: v[:, -1] for k, v in r.theta.items()}
            self.theta_from = f"episode {int(r.episodes[-1])}"

    @property
    def done(self) -> bool:
        """Whether the run finished (and logged something)."""
        return self.st.state == "done" and self.run is not None

    @property
    def logged(self) -> int:
        """How many episodes every seed has logged."""
        return 0 if self.run is None else len(self.run.episodes)

    def status(self) -> str:
        """The status cell: done (with its wall time), missing, conflict, running or unfinished."""
        st = self.st
        wall = wall_seconds(st.out)
        w = "" if wall is None else f", {fmt_wall(wall)}"
        if st.state == "done":
            return f"done{w}"
        if st.state == "missing":
            return "missing"
        if st.state == "conflict":
            return "conflict: " + st.note
        how = "running" if st.state == "running" else "unfinished"
        note = f"; {st.note}" if st.note and st.state != "running" else ""
        return f"{how}: {self.logged} of {st.cfg.episodes} episodes logged{note}{w}"

    def gates(self) -> dict[str, np.ndarray]:
        """label -> the seeds' g = sigmoid(φ)."""
        return {k: sigmoid(v) for k, v in self.theta.items() if kind_of(k) == "gate"}

    def theta_of(self, kind: str) -> dict[str, np.ndarray]:
        """The final Θ entries of one ``kind_of`` kind: label -> the seeds' values."""
        return {k: v for k, v in self.theta.items() if kind_of(k) == kind}


def fmt_wall(s: float) -> str:
    """Seconds as ``N s``, ``N min`` or ``N.N h``."""
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def fmt_acc(acc: np.ndarray) -> str:
    """Mean over seeds in %, with the 98% bootstrap CI over seeds (``markdown.fmt_ci``) when ≥ 2 seeds."""
    if len(acc) < 2:
        return f"{100 * float(np.mean(acc)):.1f} (1 seed, no CI)"
    return fmt_ci(acc)


def coef_name(label: str) -> str:
    """A Θ label as the report writes it: ``F2`` -> θ2, ``B:kp`` -> θ^B_kp, ``gate@1`` -> g_1."""
    if kind_of(label) == "coef":
        return "θ" + label[1:]
    if kind_of(label) == "B":
        return "θ^B_" + label[2:]
    return "g_" + label[len("gate@"):]


# =========================================================================== the section


class FeedbackReport:
    """The section "Feedback pathways", from the matrix's statuses (``args``: the script's arguments,
    ``argv``: its command line, quoted in the section)."""

    def __init__(self, args: argparse.Namespace, statuses: list[PaperStatus], argv: list[str]):
        self.args, self.argv = args, argv
        self.results = [Result(st) for st in statuses]
        self.by = {(r.rule, r.mode): r for r in self.results}
        self.rel = os.path.relpath(args.figures, os.path.dirname(os.path.abspath(args.results)))
        self.cfg = statuses[0].cfg

    # ------------------------------------------------------------ helpers
    def setup(self) -> str:
        """The setup paragraph: data, held-out classes, network, tasks, episodes, seeds, optimiser."""
        c = self.cfg
        n_in = N_INPUTS.get(c.dataset, "?")
        C = N_CLASSES.get(c.dataset)
        net = "-".join(str(n) for n in (n_in, *c.hidden, C if C is not None else "?"))
        held = ""
        if C is not None and c.holdout:
            from plastic_jax.config import class_split

            test = class_split(c, C)[1] or ()
            held = (f", {len(test)} of its {C} classes held out for meta-test (--holdout {c.holdout:g}, never "
                    "trained on)")
        data = f"`{c.dataset}`" + (" (offline, printed characters with random distortions)"
                                   if c.dataset == "glyphs" else "")
        return (f"Setup: data {data}{held}; network {net} (softplus); M = {c.M}, K = {c.K}, Q = {c.Q}; "
                f"{c.episodes} episodes, {c.seeds} seeds (vmapped) per run; Adam, meta-lr {c.meta_lr:g}; "
                f"θ0 = {c.theta0:g} (every other θ, Θ^B and φ start at 0: gates at ½); alignment logged every "
                f"{c.analysis_every} episodes and at the last; `--max-skips 0`.")

    def done(self, rule: str, mode: str) -> Result | None:
        """The finished run of ``rule`` with feedback ``mode`` (None when it has not finished)."""
        r = self.by.get((rule, mode))
        return r if r is not None and r.done else None

    # ------------------------------------------------------------ tables
    def table(self, rule: str) -> list[str]:
        """The table of ``rule``'s modes."""
        rows = [r for r in self.results if r.rule == rule]
        L1 = max((r.align.shape[1] for r in rows if r.run is not None and r.align is not None),
                 default=len(self.cfg.hidden))
        layers = "α_1" if L1 == 1 else f"α_1 … α_{L1}"
        head = (f"| mode | status | accuracy, last {WINDOW} episodes, % [98% CI] | per seed, % | alignment {layers} at "
                "the end, ° | Θ (final, mean over seeds) | Θ^B / gates g = sigmoid(φ) |")
        out = [head, "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            if r.run is None:
                why = r.status() + (f" ({r.error})" if r.error else "")
                out.append(f"| {r.mode} | {why} | – | – | – | – | – |")
                continue
            seeds = []
            for i, s in enumerate(r.run.seeds):
                kind = r.outcomes.get(s, ("learned", ""))[0]
                seeds.append(f"{100 * r.acc[i]:.1f}" + ("" if kind == "learned" else f" ({kind})"))
            al = "–" if r.align is None else ", ".join(f"{v:.1f}" for v in np.nanmean(r.align, axis=0))
            coefs = ", ".join(f"{coef_name(k)} {fmt_theta(float(np.nanmean(v)))}"
                              for k, v in r.theta_of("coef").items())
            fb = [f"{coef_name(k)} {fmt_theta(float(np.nanmean(v)))}" for k, v in r.theta_of("B").items()]
            fb += [f"{coef_name(k)} {float(np.nanmean(v)):.3f}" for k, v in r.gates().items()]
            th_note = "" if r.theta_from == "summary.json" else f" (at {r.theta_from})"
            out.append(f"| {r.mode} | {r.status()} | {fmt_acc(r.acc)} | {', '.join(seeds)} | {al} | "
                       f"{coefs}{th_note} | {', '.join(fb) if fb else '–'} |")
        return out

    # ------------------------------------------------------------ findings
    def findings(self, rule: str) -> list[str]:
        """Plain comparisons of ``rule``'s finished modes (accuracy against fa and bp, alignment,
        the routing gates, Θ^B, the seeds that did not learn)."""
        out: list[str] = []
        done = {m: self.done(rule, m) for m in self.args.mode_list}
        done = {m: r for m, r in done.items() if r is not None}
        if not done:
            return [f"- `{rule}`: no finished run yet."]
        if len(done) == 1:
            out.append(f"- `{rule}`: only {next(iter(done))} has finished: no comparison between modes.")
        acc = {m: r.acc for m, r in done.items()}
        mean = {m: 100 * float(np.mean(a)) for m, a in acc.items()}
        few = [m for m, a in acc.items() if len(a) < 2]
        if few:
            out.append(f"- `{rule}`: {', '.join(few)} finished with one seed: no CI, left out of the CI comparisons.")
        multi = {m: a for m, a in acc.items() if len(a) >= 2}
        # against fa
        if "fa" in multi:
            others = [m for m in multi if m != "fa"]
            above = [m for m in others if ci_separated(multi[m], multi["fa"]) == 1]
            below = [m for m in others if ci_separated(multi[m], multi["fa"]) == -1]
            overlap = [m for m in others if m not in above and m not in below]
            parts = [f"{w}: {', '.join(ms)}" for w, ms in (("above fa's", above), ("below fa's", below),
                                                          ("overlapping fa's", overlap)) if ms]
            if parts:
                out.append(f"- `{rule}`, last-100-episode accuracy against fa ({fmt_acc(multi['fa'])}%), the "
                           "mode's 98% CI lies " + "; ".join(parts) + ".")
        elif multi:
            out.append(f"- `{rule}`: fa has not finished: no comparison with fa.")
        # kp and sign against bp, as a share of the fa → bp gap
        if "bp" in multi:
            for m in ("kp", "sign"):
                if m not in multi:
                    continue
                c = ci_separated(multi[m], multi["bp"])
                rel = {1: "lies above", -1: "lies below", 0: "overlaps"}[c]
                s = (f"- `{rule}`: {m}'s CI {rel} bp's ({mean[m]:.1f}% vs {mean['bp']:.1f}%, "
                     f"{mean[m] - mean['bp']:+.1f} points)")
                if "fa" in multi and ci_separated(multi["bp"], multi["fa"]) == 1:
                    share = (mean[m] - mean["fa"]) / (mean["bp"] - mean["fa"])
                    s += f"; it covers {100 * share:.0f}% of the gap from fa ({mean['fa']:.1f}%) to bp"
                elif "fa" in multi:
                    s += "; bp's CI does not lie above fa's, so no fa → bp gap is measured"
                out.append(s + ".")
        # alignment: the modes by their mean hidden-layer angle
        al = {m: float(np.nanmean(r.align)) for m, r in done.items() if r.align is not None}
        if len(al) >= 2:
            order = sorted(al, key=lambda m: al[m])
            out.append(f"- `{rule}`: mean alignment angle over the hidden layers at the end, smallest first: "
                       + ", ".join(f"{m} {al[m]:.1f}°" for m in order) + ".")
            if "fa" in al:
                lower = [m for m, r in done.items() if m != "fa" and r.align is not None
                         and done["fa"].align.shape[1] == r.align.shape[1]
                         and bool(np.all(np.nanmean(r.align, axis=0) < np.nanmean(done["fa"].align, axis=0)))]
                if lower:
                    out.append(f"- `{rule}`: a smaller angle than fa's at every hidden layer: {', '.join(lower)}.")
        # routing: where the gates went
        if "routing" in done:
            for k, g in done["routing"].gates().items():
                n = len(g)
                up, down = int((g > 0.5 + GATE_TOL).sum()), int((g < 0.5 - GATE_TOL).sum())
                s = f"- `{rule}`+routing: {coef_name(k)} = sigmoid(φ) ended at {np.nanmean(g):.3f} (seeds " + \
                    ", ".join(f"{v:.3f}" for v in g) + "): "
                if up == n:
                    s += f"above ½ + {GATE_TOL:g} in every seed, towards the layer-wise (fa) signal"
                elif down == n:
                    s += f"below ½ − {GATE_TOL:g} in every seed, towards the direct (dfa) signal"
                elif up == 0 and down == 0:
                    s += f"within {GATE_TOL:g} of its start ½ in every seed"
                else:
                    s += f"above ½ + {GATE_TOL:g} in {up}, below ½ − {GATE_TOL:g} in {down} of {n} seeds"
                out.append(s + ".")
        # plastic: how Θ^B moved from 0
        if "plastic" in done:
            moves = []
            for k, v in done["plastic"].theta_of("B").items():
                pos, neg = int((v > 0).sum()), int((v < 0).sum())
                sign = (f"positive in all {len(v)} seeds" if pos == len(v) else f"negative in all {len(v)} seeds"
                        if neg == len(v) else f"positive in {pos}, negative in {neg} of {len(v)} seeds")
                moves.append(f"{coef_name(k)} from 0 to {fmt_theta(float(np.nanmean(v)))} ({sign}, largest |θ^B| of "
                             f"a seed {float(np.nanmax(np.abs(v))):.3g})")
            if moves:
                out.append(f"- `{rule}`+plastic: Θ^B moved " + "; ".join(moves) + ".")
        # seeds that did not learn
        bad = [f"{m} seed {s} ({kind})" for m, r in done.items() for s, (kind, _) in r.outcomes.items()
               if kind != "learned"]
        if bad:
            out.append(f"- `{rule}`: seeds that diverged or collapsed to a uniform output: {', '.join(bad)} "
                       "(in the means above).")
        return out

    def rule_findings(self) -> list[str]:
        """bio against f0, mode by mode, where both finished with ≥ 2 seeds."""
        if not {"f0", "bio"} <= set(self.args.rule_list):
            return []
        above, below, overlap = [], [], []
        for m in self.args.mode_list:
            a, b = self.done("bio", m), self.done("f0", m)
            if a is None or b is None or len(a.acc) < 2 or len(b.acc) < 2:
                continue
            {1: above, -1: below, 0: overlap}[ci_separated(a.acc, b.acc)].append(m)
        parts = [f"{w}: {', '.join(ms)}" for w, ms in (("above f0's", above), ("below f0's", below),
                                                      ("overlapping f0's", overlap)) if ms]
        return ["- bio against f0 with the same feedback: bio's 98% CI of the last-100-episode accuracy lies "
                + "; ".join(parts) + "."] if parts else []

    # ------------------------------------------------------------ the whole section
    def build(self) -> str:
        """The whole section, in markdown."""
        a = self.args
        cmd = "python scripts/feedback_pathways.py " + shlex.join(self.argv)
        train = ["python", "scripts/feedback_pathways.py", "--train-only"] + [
            x for x in self.argv if x not in ("--report-only", "--train-only", "--dry-run")]
        L = ["## Feedback pathways", "",
             f"Generated by `{cmd.strip()}` (scripts/feedback_pathways.py; edits between the markers are "
             "overwritten). The feedback modes of docs/METHOD.md §9 (`--feedback` bp, fa, dfa, sign, kp, plastic, "
             "routing), each meta-trained with the rules " + ", ".join(f"`{r}`" for r in a.rule_list) + ".", "",
             self.setup(), "",
             f"Accuracy: the mean query accuracy of each seed over its last {WINDOW} episodes, then the mean over "
             "seeds with its 98% percentile-bootstrap CI over seeds (500 resamples; `plastic_jax.stats.bootstrap_ci`, "
             "as reproduce.py). A seed marked (collapsed) or (diverged) is diagnosed as in reproduce.py. Alignment: "
             f"α_ℓ of each hidden layer (degrees; the output layer's is 0 by construction), the mean of each seed's "
             f"last {END_RECORDS} analysis records, then over seeds. Θ, Θ^B: summary.json's final values, mean over "
             "seeds; gates: sigmoid(φ) of each seed, then the mean; g_ℓ mixes the error e_ℓ of neuron layer ℓ (g_0: "
             "the input layer's e_0, which only terms with a pre-synaptic error read; α_ℓ measures e_ℓ). An "
             "unfinished run's numbers are those logged so far (its Θ at the last logged episode); the findings use "
             "finished runs only.", ""]
        for rule in a.rule_list:
            L += [f"### Rule `{rule}`", "", *self.table(rule), ""]
            if os.path.exists(os.path.join(a.figures, f"accuracy-{rule}.png")):
                L += [f"![accuracy, {rule}]({self.rel}/accuracy-{rule}.png)", ""]
        figs = [(f, t) for f, t in (("alignment.png", "alignment at the end"),
                                    ("meta-params.png", "Θ^B and gates over meta-training"))
                if os.path.exists(os.path.join(a.figures, f))]
        if figs:
            L += [" ".join(f"![{t}]({self.rel}/{f})" for f, t in figs), ""]
        todo = [r.name for r in self.results if r.st.state != "done"]
        if todo:
            L += [f"Not finished: {', '.join(todo)}. `{shlex.join(train)}` starts the missing and resumes the "
                  "unfinished (finished runs are skipped).", ""]
        walls = [w for w in (wall_seconds(r.st.out) for r in self.results) if w is not None]
        if walls:
            L += [f"Wall time of the runs (wall_seconds.txt): {fmt_wall(sum(walls))} in all.", ""]
        L += ["### Findings", "",
              "Plain comparisons of the numbers above (finished runs only; \"lies above\" means the two 98% CIs "
              "do not overlap).", ""]
        for rule in a.rule_list:
            L += self.findings(rule)
        L += self.rule_findings()
        return "\n".join(L) + "\n"


# =========================================================================== figures


def mode_color(mode: str) -> tuple:
    """The colour of a feedback mode in every figure (tab10, in ``MODES`` order)."""
    import matplotlib.pyplot as plt

    return plt.get_cmap("tab10")(MODES.index(mode) % 10)


def _save_figure(fig, path: str, drawn: list[str]) -> None:
    """Lay out, write (PNG, 120 dpi) and close ``fig``; record ``path`` in ``drawn``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    drawn.append(path)


def draw(rep: FeedbackReport) -> list[str]:
    """Draw the figures of ``rep`` into ``rep.args.figures`` (a stale one of no run is removed); the paths drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = rep.args
    os.makedirs(a.figures, exist_ok=True)
    drawn = []
    for rule in a.rule_list:
        rs = [r for r in rep.results if r.rule == rule and r.run is not None]
        path = os.path.join(a.figures, f"accuracy-{rule}.png")
        if not rs:
            if os.path.exists(path):
                os.remove(path)
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in rs:
            ma = nan_moving_average(r.run.accuracy, a.window, axis=1)
            m, lo, hi, _ = seed_band(ma)
            label = r.mode + ("" if r.done else f" ({r.logged} of {r.st.cfg.episodes} episodes)")
            ax.plot(r.run.episodes, 100 * m, color=mode_color(r.mode), label=label, lw=1.5)
            if len(r.run.seeds) > 1:
                ax.fill_between(r.run.episodes, 100 * lo, 100 * hi, color=mode_color(r.mode), alpha=0.15, lw=0)
        ax.set_xlabel("episode")
        ax.set_ylabel(f"query accuracy, %, {a.window}-episode moving average")
        ax.set_title(f"{rule}: accuracy by feedback mode (mean over seeds, 98% band)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _save_figure(fig, path, drawn)
    # alignment at the end: grouped bars, one panel per rule
    path = os.path.join(a.figures, "alignment.png")
    with_al = [rule for rule in a.rule_list
               if any(r.rule == rule and r.run is not None and r.align is not None for r in rep.results)]
    if with_al:
        fig, axes = plt.subplots(1, len(with_al), figsize=(6 * len(with_al), 3.8), squeeze=False)
        for ax, rule in zip(axes[0], with_al):
            rs = [r for r in rep.results if r.rule == rule and r.run is not None and r.align is not None]
            n_l = max(r.align.shape[1] for r in rs)
            w = 0.8 / len(rs)
            for i, r in enumerate(rs):
                x = np.arange(r.align.shape[1]) + (i - (len(rs) - 1) / 2) * w
                m = np.nanmean(r.align, axis=0)
                kw = {}
                if r.align.shape[0] > 1:
                    _, lo, hi = bootstrap_ci(r.align, level=0.98, n_resamples=500)
                    kw = dict(yerr=np.vstack([m - lo, hi - m]), capsize=2)
                label = r.mode + ("" if r.done else " (unfinished)")
                ax.bar(x, m, w, color=mode_color(r.mode), label=label, **kw)
            ax.set_xticks(np.arange(n_l), [f"α_{l + 1}" for l in range(n_l)])
            ax.set_ylabel("alignment angle at the end, °")
            ax.set_title(f"{rule}: hidden layers (mean over seeds, 98% CI)", fontsize=10)
            ax.grid(alpha=0.3, axis="y")
            ax.legend(fontsize=7)
        _save_figure(fig, path, drawn)
    elif os.path.exists(path):
        os.remove(path)
    # Θ^B (plastic) and the gates (routing) over meta-training
    path = os.path.join(a.figures, "meta-params.png")
    panels = [(r, kind) for r in rep.results if r.run is not None
              for kind in ("B", "gate") if any(kind_of(k) == kind for k in r.run.theta)]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
        for ax, (r, kind) in zip(axes[0], panels):
            keys = [k for k in r.run.theta if kind_of(k) == kind]
            cmap = plt.get_cmap("tab10")
            for j, k in enumerate(keys):
                v = r.run.theta[k]
                v = sigmoid(v) if kind == "gate" else v
                for s in range(v.shape[0]):
                    ax.plot(r.run.episodes, v[s], color=cmap(j % 10), lw=0.6, alpha=0.35)
                ax.plot(r.run.episodes, np.nanmean(v, axis=0), color=cmap(j % 10), lw=1.6, label=coef_name(k))
            ax.axhline(0.5 if kind == "gate" else 0.0, color="0.4", ls="--", lw=0.8)
            ax.set_xlabel("episode")
            ax.set_title(f"{r.name}: " + ("gates g = sigmoid(φ)" if kind == "gate" else "Θ^B"), fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        _save_figure(fig, path, drawn)
    elif os.path.exists(path):
        os.remove(path)
    return drawn
