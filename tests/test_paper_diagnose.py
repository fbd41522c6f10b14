"""plastic_jax.paper.diagnose: a seed that collapses to a uniform output is named a collapse, with
the episode of the meta-gradient spike before it where the records carry telemetry and without a
cause where they do not (older runs); divergence and recovered skips as before."""

import math

from plastic_jax.paper import diagnose_seed, seed_outcomes
from plastic_jax.paper.synthetic import config, seed_series, synthetic_run, write_run
from plastic_jax.plots import load_run, load_runs

LN47 = math.log(47)


def test_a_collapse_without_telemetry_names_no_cause():
    rs = seed_series(40, collapse_at=12)
    assert not any("spike" in r for r in rs)
    d = diagnose_seed(rs, 47, theta0=1e-3)
    assert d.kind == "collapsed"
    assert d.text == (f"collapsed (uniform output; θ0 = -0.002; median query loss {LN47 * 1.002:.3f} ≈ ln 47 = "
                      f"{LN47:.3f}, since episode 12)")


def test_a_collapse_after_a_spike_names_the_last_spike_before_it():
    d = diagnose_seed(seed_series(40, collapse_at=12, spikes=(3, 11, 35)), 47)
    assert d.kind == "collapsed"
    assert d.text.startswith("collapsed (uniform output) after a meta-gradient spike at episode 11 (θ0 = -0.002; ")
    assert d.text.endswith("since episode 12)")
    rs = seed_series(40, collapse_at=12, spikes=(11,))
    rs[11]["rolled_back"] = True
    assert "after a meta-gradient spike at episode 11 (rolled back) (" in diagnose_seed(rs, 47).text


def test_telemetry_without_a_spike_before_the_collapse_says_so():
    for rs in (seed_series(40, collapse_at=12, telemetry=True), seed_series(40, collapse_at=12, spikes=(30,))):
        assert diagnose_seed(rs, 47).text.startswith("collapsed (uniform output; no meta-gradient spike recorded "
                                                     "before it; θ0 = -0.002;")


def test_diverged_recovered_and_learned_seeds():
    d = diagnose_seed(seed_series(40, diverge_at=20, spikes=(19,)), 47)
    assert d.kind == "diverged" and d.text.startswith("diverged (20 skipped updates, the first at episode 20, the last "
                                                      "20 in a row; query loss non-finite in 20 of its last 40")
    rs = seed_series(40)
    rs[5]["skipped"] = True
    assert diagnose_seed(rs, 47).text == "1 skipped updates (episodes 5), recovered"
    assert diagnose_seed(seed_series(40), 47) is None
    # θ0 above its start: not a collapse, even at loss ln C
    rs = seed_series(40, loss=LN47)
    assert diagnose_seed(rs, 47) is None and diagnose_seed(rs, None) is None


def test_old_and_new_records_of_a_run(tmp_path):
    """Records without telemetry or member keys (older runs) and with them (newer) both read."""
    old = load_run(synthetic_run(str(tmp_path / "old"), 40, {0: {}, 1: {"collapse_at": 12}}, rule="bio",
                                 feedback="fa"))
    new = load_run(synthetic_run(str(tmp_path / "new"), 40, {0: {}, 1: {"collapse_at": 12, "spikes": (11,)}},
                                 rule="bio", feedback="fa"))
    assert not old.telemetry and new.telemetry["spike"].sum() == 1
    (k0, t0), (k1, t1) = seed_outcomes(old).values()
    assert (k0, t0) == ("learned", "50.0%") and k1 == "collapsed"
    assert t1.startswith("16.5%; collapsed (uniform output; θ0 = ")
    assert seed_outcomes(new)[1][1].startswith("16.5%; collapsed (uniform output) after a meta-gradient spike at "
                                               "episode 11 (")


def test_a_sweep_members_seeds_are_diagnosed_on_its_own_records(tmp_path):
    cfg = config(str(tmp_path / "sweep"), episodes=40, seeds=1, rule="pool", feedback="fa", l1=(0.1, 1.0))
    lr = cfg.meta_lr_values[0]
    write_run(cfg, {"a": seed_series(40, member=(0.1, lr)),
                    "b": seed_series(40, member=(1.0, lr), collapse_at=12, spikes=(11,))})
    low, high = load_runs(cfg.out)
    assert seed_outcomes(low) == {0: ("learned", "50.0%")}
    assert seed_outcomes(high)[0][0] == "collapsed"
