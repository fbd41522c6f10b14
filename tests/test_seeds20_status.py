"""scripts/seeds20_status.py: a seed with no finite accuracy is left out of the mean, which says so."""

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

HERE = os.path.dirname(__file__)


def _script():
    spec = importlib.util.spec_from_file_location("seeds20_status", os.path.join(HERE, "..", "scripts",
                                                                                   "seeds20_status.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _copy_run(tmp_path, diverge_seed=None):
    run = tmp_path / "runs" / "paper" / "bio-fa"
    shutil.copytree(os.path.join(HERE, "data", "old_run"), run)
    recs = [json.loads(line) for line in open(run / "metrics.jsonl")]
    for r in recs:
        if r["seed"] == diverge_seed:
            r["accuracy"] = r["query_loss"] = r["meta_loss"] = None
    with open(run / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    return str(run), recs


def _mean_percent(row: str) -> float:
    return float(row.split("|")[5].split("%")[0])


def test_a_seed_without_a_finite_accuracy_is_left_out_of_the_mean_and_the_row_says_so(tmp_path):
    run, recs = _copy_run(tmp_path, diverge_seed=1)
    (row,) = _script().status(run)
    seed0 = np.mean([r["accuracy"] for r in recs if r["seed"] == 0])
    assert _mean_percent(row) == pytest.approx(100 * seed0, abs=0.05)
    assert "(over 1)" in row and "nan%" not in row  # (one seed left: its 98% CI is undefined)
    assert "1 diverged" in row


def test_a_run_whose_seeds_all_have_accuracies_averages_them_all(tmp_path):
    run, recs = _copy_run(tmp_path)
    (row,) = _script().status(run)
    per_seed = [np.mean([r["accuracy"] for r in recs if r["seed"] == s]) for s in (0, 1)]
    assert _mean_percent(row) == pytest.approx(100 * np.mean(per_seed), abs=0.05)
    assert "(over" not in row
