"""plastic_jax.paper.presets: the claims table with one verdict column per preset, from a synthetic
two-preset layout of scripts/seeds20_runs.sh (plain runs, one-program λ sweeps, extra seeds of one
setting), each verdict with its runs' degenerate-seed rate and 98% Clopper–Pearson CI."""

from plastic_jax.paper.presets import (
    Source,
    claims_table,
    preset_context,
    preset_section,
    runs_table,
    seeds20_layout,
)
from plastic_jax.paper.synthetic import synthetic_run
from plastic_jax.stats import proportion_ci

E = 30
POOL_THETA = {f"F{t}": (0.02 if t in (0, 2, 9) else 0.0) for t in range(10)}


def accs(*values, **extra):
    return {i: {"acc": v, **extra} for i, v in enumerate(values)}


def rate(k, n):
    _, lo, hi = proportion_ci(k, n, 0.98)
    return f"{k} of {n} [{100 * lo:.0f}%, {100 * hi:.0f}%]"


def make_layout(root):
    """runs/seeds20 as scripts/seeds20_runs.sh leaves it, tiny: robust complete, paper partial."""
    for preset in ("robust", "paper"):
        d = root / preset

        def run(name, seeds, *, preset=preset, d=d, **kw):
            synthetic_run(str(d / name), E, seeds, preset=preset, **kw)

        run("f0-bp", accs(0.70, 0.71, 0.72, 0.73), rule="f0", feedback="bp", align=[0.0, 0.0])
        run("f0-fa", accs(0.20, 0.21, 0.22, 0.23), rule="f0", feedback="fa", align=[85.0, 86.0])
        bio = accs(0.69, 0.70, 0.71, 0.72)
        if preset == "paper":  # two seeds collapse after a meta-gradient spike
            bio[1].update(collapse_at=10, spikes=(9,))
            bio[2].update(collapse_at=12, spikes=(4, 11))
        run("bio-fa", bio, rule="bio", feedback="fa", align=[70.0, 40.0],
            theta={"F0": 0.01, "F2": -0.05, "F9": 0.005})
        run("ehebb-fa", accs(0.50, 0.51, 0.52, 0.53), rule="ehebb", feedback="fa", align=[60.0, 30.0])
        run("pool-fa-elementwise-sweep", accs(0.60, 0.61, 0.62), rule="pool", feedback="fa", f5_f8="elementwise",
            l1=(0.1, 1.0), theta=POOL_THETA, finished=preset == "robust")
        if preset == "robust":
            run("oja-fa", accs(0.40, 0.41, 0.42, 0.43), rule="oja", feedback="fa", align=[80.0, 80.0])
            run("pool-fa-matrix-sweep", accs(0.30, 0.31, 0.32), rule="pool", feedback="fa", l1=(0.1, 1.0),
                theta=POOL_THETA)
            run("pool-fa-elementwise-l1_0.1-s10", accs(0.63, 0.64, 0.65), rule="pool", feedback="fa",
                f5_f8="elementwise", l1=0.1, seed=3, theta=POOL_THETA)


def test_the_layout_maps_claim_runs_to_directories_and_sweep_members(tmp_path):
    make_layout(tmp_path)
    layout = seeds20_layout(str(tmp_path), "robust")
    assert sorted(layout) == ["bio-fa", "ehebb-fa", "f0-bp", "f0-fa", "oja-fa", "pool-fa-elementwise-l1_0.1",
                              "pool-fa-elementwise-l1_1", "pool-fa-matrix-l1_0.1", "pool-fa-matrix-l1_1"]
    sweep = str(tmp_path / "robust" / "pool-fa-elementwise-sweep")
    lr = 1e-4  # the robust preset's Adam rate for pool
    assert layout["pool-fa-elementwise-l1_0.1"] == (
        Source(sweep, 0.1, lr), Source(str(tmp_path / "robust" / "pool-fa-elementwise-l1_0.1-s10")))
    assert layout["pool-fa-elementwise-l1_1"] == (Source(sweep, 1.0, lr),)
    assert "oja-fa" not in seeds20_layout(str(tmp_path), "paper")
    # the sweep member and the extra seeds are one run of six seeds
    ctx = preset_context(layout)
    best = ctx.runs["pool-fa-elementwise-l1_0.1"]
    assert best.seeds == [0, 1, 2, 3, 4, 5] and best.accuracy.shape == (6, E) and best.config["l1"] == 0.1
    assert sorted(ctx.records["pool-fa-elementwise-l1_0.1"]) == [0, 1, 2, 3, 4, 5]
    assert ctx.best_pool == "pool-fa-elementwise-l1_0.1" and len(ctx.pool) == 4
    assert ctx.finished["pool-fa-elementwise-l1_0.1"]


def test_one_verdict_column_per_preset_with_degenerate_rates(tmp_path):
    make_layout(tmp_path)
    contexts = {p: preset_context(seeds20_layout(str(tmp_path), p)) for p in ("robust", "paper")}
    lines = claims_table(contexts)
    assert lines[0] == "| claim | the paper | robust preset | paper preset |"
    rows = {line.split(" | ")[0][2:]: line[:-2].split(" | ")[2:] for line in lines[2:] if line.startswith("| ")}
    robust, paper = rows["Eq. 7, F_bio performs like the pool rule and near BP"]
    assert robust == (f"reproduced; degenerate seeds: bio-fa {rate(0, 4)}; f0-bp {rate(0, 4)}; "
                      f"pool-fa-elementwise-l1_0.1 {rate(0, 6)}")
    # the same claim flips at the other preset, where two of bio's four seeds collapsed
    assert paper == (f"partly (2 of 4 seeds degenerate) (provisional: pool-fa-elementwise-l1_0.1 not finished); "
                     f"degenerate seeds: bio-fa {rate(2, 4)}; f0-bp {rate(0, 4)}; "
                     f"pool-fa-elementwise-l1_0.1 {rate(0, 3)}")
    robust, paper = rows["Fig. 7, Oja much above FA with only slightly better alignment"]
    assert robust.startswith("reproduced; degenerate seeds: oja-fa") and paper == "not decided: not run (oja-fa)"
    robust, paper = rows["Fig. 4, pool reaches BP's accuracy"]
    assert f"pool (4 settings) {rate(0, 15)}" in robust and f"pool (2 settings) {rate(0, 6)}" in paper
    robust, paper = rows["Table 1, eHebb's effect depends on the layer"]
    assert robust == "not decided: not run (t1-f0-f0-f0)"
    evidence = "\n".join(lines)
    assert "- Eq. 7, F_bio performs like the pool rule and near BP, paper: bio-fa: " in evidence
    table = {line.split(" | ")[0][2:]: line for line in runs_table(contexts) if line.startswith("| ")}
    assert f"{rate(2, 4)} (2 collapsed)" in table["bio-fa"] and table["oja-fa"].endswith("| – |")
    assert "30 of 30 (running)" in table["pool-fa-elementwise-l1_1"]


def test_the_section_from_a_runs_directory(tmp_path):
    make_layout(tmp_path)
    text = preset_section(str(tmp_path))
    assert text.startswith("### The claims at each preset") and "| f0-bp | 30 of 30; 71.5 [" in text
    assert "| claim | the paper | robust preset | paper preset |" in text


def test_write_replaces_only_its_own_section(tmp_path):
    from plastic_jax.paper import presets

    root = tmp_path / "runs"
    root.mkdir()
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"# Results\n\nbefore\n\n{presets.BEGIN}\nstale\n{presets.END}\n\nafter\n")
    assert presets.main([str(root), "--write", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Results\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "stale" not in text and "### The claims at each preset" in text
    assert text.count(presets.BEGIN) == 1 and text.count(presets.END) == 1


def test_a_missing_runs_directory_is_one_line(tmp_path, capsys):
    import pytest

    from plastic_jax.paper import presets

    doc = tmp_path / "RESULTS.md"
    with pytest.raises(SystemExit) as e:
        presets.main([str(tmp_path / "nope"), "--write", str(doc)])
    assert e.value.code == 2 and "no runs directory" in capsys.readouterr().err and not doc.exists()


def test_a_seed_diverged_throughout_the_window_is_named_not_a_nan_mean(tmp_path):
    for preset in ("robust", "paper"):
        seeds = accs(0.60, 0.70, 0.80)
        if preset == "paper":
            seeds[2].update(diverge_at=0)  # no finite accuracy in any episode
        synthetic_run(str(tmp_path / preset / "bio-fa"), E, seeds, preset=preset, rule="bio", feedback="fa",
                      theta={"F0": 0.01, "F2": -0.05, "F9": 0.005})
    text = "\n".join(runs_table({p: preset_context(seeds20_layout(str(tmp_path), p)) for p in ("robust", "paper")}))
    row = next(line for line in text.splitlines() if line.startswith("| bio-fa |"))
    assert "nan" not in row.lower()
    assert "65.0" in row and "(over 2 seeds: 1 with no finite accuracy)" in row  # the mean of 0.60 and 0.70
    assert "70.0" in row  # robust: the mean of all three


def test_a_claims_evidence_gives_the_mean_over_finite_seeds_not_nan(tmp_path):
    """Fig. 7's evidence names oja+fa's mean; one seed with no finite accuracy made it "nan%"."""
    runs = {"f0-fa": accs(0.20, 0.21, 0.22), "ehebb-fa": accs(0.50, 0.51, 0.52),
            "oja-fa": {**accs(0.40, 0.50, 0.60), 2: {"acc": 0.6, "diverge_at": 0}}}
    for name, seeds in runs.items():
        synthetic_run(str(tmp_path / "paper" / name), E, seeds, preset="paper", rule=name.split("-")[0],
                      feedback="fa", align=[80.0, 80.0])
    ctx = preset_context(seeds20_layout(str(tmp_path), "paper"))
    text = "\n".join(claims_table({"paper": ctx}))
    fig7 = next(line for line in text.splitlines() if line.startswith("- Fig. 7") and "paper:" in line)
    assert "nan" not in fig7.lower()
    assert "oja+fa 45.0% (over the 2 of 3 seeds with a finite accuracy)" in fig7  # the mean of 0.40 and 0.50
