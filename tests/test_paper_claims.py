"""plastic_jax.paper's claims as data: each decide function on small synthetic runs, its verdict
flipping when the evidence flips, without building a report."""

import os

from plastic_jax.paper import CLAIMS, Claim, Verdict, context_from_runs, evaluate
from plastic_jax.paper.claims import verdict_text
from plastic_jax.paper.figures import MODULES, fig3, fig4, fig5, fig7, fig8, figS2, metatest, table1
from plastic_jax.paper.synthetic import synthetic_run
from plastic_jax.plots import load_run

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def accs(*values, **extra):
    """Seeds with these last-100 accuracies (and ``extra`` for each)."""
    return {i: {"acc": v, **extra} for i, v in enumerate(values)}


def ctx_of(tmp_path, named=None, **runs):
    """A context of synthetic runs: f0_bp=dict(rule=, feedback=, seeds=..., episodes=, finished=, ...) is
    the run f0-bp; ``named``: {name: dict} for names that are no identifiers."""
    loaded, finished = {}, {}
    for name, kw in {**{k.replace("_", "-"): v for k, v in runs.items()}, **(named or {})}.items():
        kw = dict(kw)
        episodes, seeds = kw.pop("episodes", 30), kw.pop("seeds", 4)
        finished[name] = kw.pop("finished", True)
        path = synthetic_run(str(tmp_path / name), episodes, seeds, finished=finished[name], **kw)
        loaded[name] = load_run(path)
    return context_from_runs(loaded)


BP = dict(rule="f0", feedback="bp", seeds=accs(0.70, 0.71, 0.72, 0.73), align=[0.0, 0.0])
FA = dict(rule="f0", feedback="fa", seeds=accs(0.20, 0.21, 0.22, 0.23), align=[85.0, 86.0], ortho=[50.0, 60.0, 70.0])


def test_the_registry_is_the_reports_claims_in_order():
    assert [c.key for c in CLAIMS] == ["fig3", "fig4-reach", "fig4-sparse", "eq7", "fig5", "fig7", "fig8", "table1",
                                       "metatest"]
    for c in CLAIMS:
        assert isinstance(c, Claim) and c.statement and c.paper and callable(c.decide)
    assert [c for m in MODULES for c in m.CLAIMS] == list(CLAIMS)


def test_fig3_verdict_flips_with_the_evidence(tmp_path):
    ctx = ctx_of(tmp_path / "a", f0_bp=BP, f0_fa=FA)
    v = evaluate(fig3.CLAIM, ctx)
    assert isinstance(v, Verdict) and v.verdict == "reproduced" and v.rests_on == ("f0-bp", "f0-fa")
    assert v.why.startswith("f0+bp 71.5% against f0+fa 21.5% (+50.0 points, 98% CIs disjoint)")
    # backprop no better than FA: the same evidence decides the other way
    ctx = ctx_of(tmp_path / "b", f0_bp={**BP, "seeds": accs(0.20, 0.22, 0.21, 0.23)}, f0_fa=FA)
    v = evaluate(fig3.CLAIM, ctx)
    assert v.verdict == "not reproduced" and "98% CIs overlapping" in v.why


def test_a_claim_without_its_runs_is_not_decided(tmp_path):
    ctx = ctx_of(tmp_path, f0_fa=FA)
    assert evaluate(fig3.CLAIM, ctx) is None and evaluate(fig8.CLAIM, ctx) is None
    assert evaluate(fig4.REACH, ctx) is None  # no pool run
    assert evaluate(table1.CLAIM, ctx) is None and evaluate(metatest.CLAIM, ctx) is None  # no t1 run, no meta-test


def test_an_unfinished_run_makes_the_verdict_provisional(tmp_path):
    ctx = ctx_of(tmp_path, f0_bp={**BP, "finished": False}, f0_fa=FA)
    assert verdict_text(ctx, evaluate(fig3.CLAIM, ctx)) == "reproduced (provisional: f0-bp not finished)"


def test_eq7_reaches_bp_partly_with_a_collapsed_seed_and_not_when_low(tmp_path):
    bio = dict(rule="bio", feedback="fa", theta={"F0": 0.01, "F2": -0.05, "F9": 0.005})
    ctx = ctx_of(tmp_path / "a", f0_bp=BP, bio_fa={**bio, "seeds": accs(0.69, 0.70, 0.71, 0.72)})
    v = evaluate(figS2.CLAIM, ctx)
    assert v.verdict == "reproduced" and "θ2 < 0 in 4 of 4 seeds" in v.why and "no pool run" in v.why
    seeds = accs(0.69, 0.70, 0.71, 0.72)
    seeds[3]["collapse_at"] = 10
    ctx = ctx_of(tmp_path / "b", f0_bp=BP, bio_fa={**bio, "seeds": seeds})
    v = evaluate(figS2.CLAIM, ctx)
    assert v.verdict == "partly (1 of 4 seeds degenerate)" and "over the 3 that learned" in v.why
    ctx = ctx_of(tmp_path / "c", f0_bp=BP, bio_fa={**bio, "seeds": accs(0.40, 0.41, 0.42, 0.43)})
    assert evaluate(figS2.CLAIM, ctx).verdict == "not reproduced"


def test_fig5_needs_the_best_alignment_and_fig7_only_slightly_better(tmp_path):
    runs = dict(f0_bp=BP, f0_fa=FA,
                bio_fa=dict(rule="bio", feedback="fa", seeds=accs(0.69, 0.70, 0.71, 0.72), align=[70.0, 40.0]),
                ehebb_fa=dict(rule="ehebb", feedback="fa", seeds=accs(0.50, 0.51, 0.52, 0.53), align=[60.0, 30.0]),
                oja_fa=dict(rule="oja", feedback="fa", seeds=accs(0.40, 0.41, 0.42, 0.43), align=[80.0, 80.0]))
    ctx = ctx_of(tmp_path / "a", **runs)
    assert evaluate(fig5.CLAIM, ctx).verdict == "reproduced"
    v = evaluate(fig7.CLAIM, ctx)
    assert v.verdict == "reproduced" and "mean hidden α 80.0° against f0+fa's 85.5° and ehebb+fa's 45.0°" in v.why
    # eHebb no longer the best aligned; Oja better aligned than eHebb, so not "only slightly"
    runs["ehebb_fa"] = {**runs["ehebb_fa"], "align": [75.0, 70.0]}
    runs["oja_fa"] = {**runs["oja_fa"], "align": [50.0, 40.0]}
    ctx = ctx_of(tmp_path / "b", **runs)
    v = evaluate(fig5.CLAIM, ctx)
    assert v.verdict == "partly" and "the lowest mean hidden α of the fa rules: oja-fa" in v.why
    assert evaluate(fig7.CLAIM, ctx).verdict == "partly"
    # a diverged seed of oja: at best partly
    seeds = accs(0.40, 0.41, 0.42, 0.43)
    seeds[0]["diverge_at"] = 5
    runs["oja_fa"] = {**runs["oja_fa"], "seeds": seeds, "align": [80.0, 80.0]}
    runs["ehebb_fa"] = {**runs["ehebb_fa"], "align": [60.0, 30.0]}
    assert evaluate(fig7.CLAIM, ctx_of(tmp_path / "c", **runs)).verdict == "partly (1 of 4 seeds degenerate)"


def test_fig8_orthonormality_per_hidden_layer(tmp_path):
    oja = dict(rule="oja", feedback="fa", seeds=accs(0.4, 0.41, 0.42, 0.43))
    ctx = ctx_of(tmp_path / "a", f0_fa=FA, oja_fa={**oja, "ortho": [5.0, 6.0, 500.0]})
    v = evaluate(fig8.CLAIM, ctx)
    assert v.verdict == "reproduced" and "hidden layers 1, 2 of 2" in v.why and "it is 500 against 70" in v.why
    ctx = ctx_of(tmp_path / "b", f0_fa=FA, oja_fa={**oja, "ortho": [5.0, 60.0, 500.0]})
    assert evaluate(fig8.CLAIM, ctx).verdict == "partly"
    ctx = ctx_of(tmp_path / "c", f0_fa=FA, oja_fa={**oja, "ortho": [50.0, 60.0, 70.0]})
    assert evaluate(fig8.CLAIM, ctx).verdict == "not reproduced"


POOL = "pool-fa-matrix-l1_1"


def _pool(theta):
    return dict(rule="pool", feedback="fa", l1=1.0, seeds=accs(0.69, 0.70, 0.71, 0.72), theta=theta)


def test_fig4_sparsity_and_reach(tmp_path):
    bio_terms = {f"F{t}": (0.02 if t in (0, 2, 9) else 0.0) for t in range(10)}
    ctx = ctx_of(tmp_path / "a", {POOL: _pool(bio_terms)}, f0_bp=BP)
    assert ctx.pool == (POOL,)
    v = evaluate(fig4.SPARSE, ctx)
    assert v.verdict == "reproduced" and f"exactly F0, F2, F9: {POOL};" in v.why
    assert evaluate(fig4.REACH, ctx).verdict == "reproduced"
    every = {f"F{t}": 0.02 for t in range(10)}
    ctx = ctx_of(tmp_path / "b", {POOL: _pool(every)})
    v = evaluate(fig4.SPARSE, ctx)
    assert v.verdict == "not reproduced" and "exactly F0, F2, F9: none" in v.why
    assert evaluate(fig4.REACH, ctx) == Verdict("not reproduced", f"The best pool setting so far is {POOL}. f0-bp "
                                                "has not run; its surviving terms: F0, F1, F2, F3, F4, F5, F6, F7, "
                                                "F8, F9.", (POOL,))


def test_table1_is_reported_with_its_mechanism(tmp_path):
    t1 = dict(layer_rules="f0,f0,f0", feedback="fa", seeds=accs(0.4, 0.41, 0.42, 0.43), align=[80.0, 80.0])
    ctx = ctx_of(tmp_path, t1_f0_f0_f0=t1, t1_f0_f0_ehebb={**t1, "layer_rules": "f0,f0,ehebb", "align": [80.0, 30.0]})
    v = evaluate(table1.CLAIM, ctx)
    assert v.verdict == "reported; the paper's values are not transcribed here (partly run)"
    assert "f0,f0,ehebb: +0.0 points, α_1 +0.0°, α_2 -50.0°" in v.why and "that mechanism holds here" in v.why


def test_metatest_is_reported_from_the_cache(tmp_path):
    import dataclasses

    ctx = ctx_of(tmp_path, f0_fa=FA)
    cache = {"baselines": {"rules": [{"name": "f0+bp", "mean_accuracy": 0.7}, {"name": "f0+fa", "mean_accuracy": 0.3}]},
             "runs": {"f0-fa": {"seeds": [{"seed_index": 0, "mean_accuracy": 0.25}]}}}
    v = evaluate(metatest.CLAIM, dataclasses.replace(ctx, cache=cache))
    assert v == Verdict("reported", "On the held-out classes: no learned rule yet; tuned f0+bp 70.0%, tuned f0+fa "
                                    "30.0%.", ("f0-fa",))


def test_the_package_is_a_library_the_core_does_not_import():
    for d, _, files in os.walk(os.path.join(ROOT, "plastic_jax")):
        if os.path.basename(d) in ("paper", "figures") or "paper" in d.split(os.sep):
            continue
        for f in files:
            if f.endswith(".py"):
                assert "plastic_jax.paper" not in open(os.path.join(d, f)).read(), f
    for script in ("reproduce.py", "feedback_pathways.py"):
        text = open(os.path.join(ROOT, "scripts", script)).read()
        assert "sys.path" not in text and len(text.splitlines()) < 300, script
