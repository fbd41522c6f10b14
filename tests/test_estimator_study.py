"""plastic_jax.paper.estimator_study (issue 23's experiment): the arms are compared over the seeds
they share and the episodes all have reached, a sweep's arm is its λ member, and each arm's
outcome counts come from the seed diagnoses of that window only."""

from plastic_jax.paper.estimator_study import STUDIES, main, study_section
from plastic_jax.paper.synthetic import synthetic_run


def layout(root, *, es_episodes=20):
    s20, chaos = root / "seeds20", root / "chaos"
    synthetic_run(str(s20 / "paper" / "bio-fa"), 30, {0: {}, 1: {"diverge_at": 9}, 2: {}, 3: {}}, rule="bio",
                  feedback="fa", preset="paper", acc=0.6)
    synthetic_run(str(s20 / "robust" / "bio-fa"), 30, 4, rule="bio", feedback="fa", acc=0.7)
    synthetic_run(str(chaos / "paper-es" / "bio-fa"), es_episodes, {0: {}, 1: {}, 2: {"acc": 0.3}}, rule="bio",
                  feedback="fa", preset="paper", estimator="es", acc=0.55, finished=False)
    # the exact pool sweep: λ = 0.1 collapses seed 0 at episode 5, λ = 1 does not
    synthetic_run(str(s20 / "paper" / "pool-fa-matrix-sweep"), 30, 2, rule="pool", feedback="fa", preset="paper",
                  l1=(0.1, 1.0), acc=0.4)
    return str(s20), str(chaos)


def rows_of(text, study):
    block = text.split(f"**{study}**")[1].split("**")[0]
    return {line.split(" | ")[0].strip("| "): line.split(" | ") for line in block.splitlines()
            if line.startswith("| ") and not line.startswith("| arm") and not line.startswith("| ---")}


def test_arms_are_compared_on_shared_seeds_and_the_episodes_all_reached(tmp_path):
    s20, chaos = layout(tmp_path)
    text = study_section(s20, chaos)
    assert "**bio+fa**: seeds 0–2 (3), episodes 0–19 (of 30" in text
    rows = rows_of(text, "bio+fa")
    assert set(rows) == {"es, paper preset", "exact, paper preset", "exact, robust preset"}
    es, exact, robust = rows["es, paper preset"], rows["exact, paper preset"], rows["exact, robust preset"]
    assert es[1] == "es" and es[3] == "running (at episode 19)"
    assert exact[1].startswith("auto: ") and exact[3] == "finished"
    # seed 1 of the exact paper arm diverged at episode 9, inside the window; seed 3 is not compared
    assert exact[4] == "2 / 0 / 1" and es[4] == "3 / 0 / 0" and robust[4] == "3 / 0 / 0"
    assert es[6].startswith("46.7 ")  # (0.55 + 0.55 + 0.3) / 3
    assert es[7] == "30.0 (seed 2)"
    assert exact[8] == "11"  # episodes 9-19 of seed 1 skipped


def test_a_later_diverging_seed_is_outside_a_shorter_window(tmp_path):
    s20, chaos = layout(tmp_path, es_episodes=9)
    rows = rows_of(study_section(s20, chaos), "bio+fa")
    assert rows["exact, paper preset"][4] == "3 / 0 / 0" and rows["exact, paper preset"][8] == "0"


def test_a_sweep_arm_is_its_lambda_member_and_a_missing_study_says_so(tmp_path):
    s20, chaos = layout(tmp_path)
    text = study_section(s20, chaos)
    for name in ("pool+fa, matrix reading, λ = 0.1", "pool+fa, matrix reading, λ = 1"):
        rows = rows_of(text, name)
        assert list(rows) == ["exact, paper preset"], name  # no es or robust sweep in this layout
    assert set(STUDIES) == {"bio+fa", "pool+fa, matrix reading, λ = 0.1", "pool+fa, matrix reading, λ = 1"}
    (tmp_path / "empty").mkdir()
    assert "**bio+fa**: no run yet." in study_section(str(tmp_path / "empty"), str(tmp_path / "empty"))


def test_write_replaces_only_its_section(tmp_path, capsys):
    s20, chaos = layout(tmp_path)
    out = tmp_path / "RESULTS.md"
    out.write_text("# Results\n\nbefore\n")
    assert main(["--seeds20", s20, "--chaos", chaos, "--write", str(out)]) == 0
    first = out.read_text()
    assert first.startswith("# Results\n\nbefore\n") and "estimator-study:begin" in first
    assert main(["--seeds20", s20, "--chaos", chaos, "--write", str(out)]) == 0
    assert out.read_text() == first
