"""Class splits: --holdout and explicit class lists; tasks come from the right side."""

import json
import os

import jax
import numpy as np
import pytest

from plastic_jax.cli import main
from plastic_jax.config import ConfigError, TrainConfig, class_split, validate
from plastic_jax.data import build_class_index, load_dataset, sample_task


@pytest.mark.parametrize("n_classes,holdout,n_test", [(10, 0.5, 5), (47, 0.2, 9), (47, 0.5, 24), (10, 0.1, 1)])
@pytest.mark.parametrize("split_seed", [0, 3])
def test_holdout_sides_are_disjoint_cover_everything_and_have_the_right_sizes(n_classes, holdout, n_test,
                                                                              split_seed):
    cfg = TrainConfig(holdout=holdout, split_seed=split_seed, M=1)
    train, test = class_split(cfg, n_classes)
    assert not set(train) & set(test)  # no class on both sides
    assert sorted(train + test) == list(range(n_classes))
    assert len(test) == n_test and len(train) == n_classes - n_test
    assert (train, test) == class_split(cfg, n_classes)  # deterministic


def test_split_seed_changes_the_split_and_no_holdout_means_no_split():
    splits = {class_split(TrainConfig(holdout=0.5, split_seed=s), 47)[1] for s in range(5)}
    assert len(splits) > 1
    assert class_split(TrainConfig(), 10) == (tuple(range(10)), None)


def test_explicit_lists_and_complements():
    assert class_split(TrainConfig(train_classes=(0, 1, 2, 3, 4)), 10) == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    assert class_split(TrainConfig(test_classes=(9, 2, 5, 7, 0)), 10) == ((1, 3, 4, 6, 8), (0, 2, 5, 7, 9))
    assert class_split(TrainConfig(M=2, train_classes=(0, 1), test_classes=(8, 9)), 10) == ((0, 1), (8, 9))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"holdout": 1.0}, "--holdout must be a fraction"),
        ({"holdout": -0.1}, "--holdout must be a fraction"),
        ({"holdout": 0.5, "train_classes": (0, 1, 2, 3, 4)}, "not both"),
        ({"train_classes": (0, 1, 2, 3, 4), "test_classes": (4, 5, 6, 7, 8)}, "[4] are in both"),
        ({"train_classes": (0, 1, 2, 3, 10)}, "outside 0..9"),
        ({"test_classes": (1, 1, 2, 3, 4)}, "lists a class twice"),
        ({"holdout": 0.5, "M": 6}, "--M 6 is larger than the 5 meta-training classes"),
        ({"holdout": 0.3, "M": 5}, "--M 5 is larger than the 3 held-out classes"),
        ({"test_classes": (0, 1, 2, 3, 4, 5)}, "--M 5 is larger than the 4 meta-training classes"),
    ],
)
def test_bad_splits_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        validate(TrainConfig(**kwargs), n_classes=10)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_json_round_trip_keeps_class_lists():
    cfg = TrainConfig(train_classes=(3, 1), test_classes=(7,), split_seed=2)
    back = TrainConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert back == cfg


def test_meta_train_records_the_split_and_draws_only_meta_training_classes(tmp_path):
    from plastic_jax.experiment import build

    out = str(tmp_path / "run")
    args = ["meta-train", "--holdout", "0.5", "--episodes", "1", "--hidden", "8", "--K", "3", "--Q", "2",
            "--out", out, "--no-progress"]
    assert main(args) == 0
    cfg_json = json.load(open(os.path.join(out, "config.json")))
    assert cfg_json["holdout"] == 0.5
    recorded = cfg_json["extra"]["class_split"]
    train, test = class_split(TrainConfig(holdout=0.5), 10)
    assert recorded == {"train": list(train), "test": list(test)}

    # the class index of the run samples only meta-training classes
    cfg = TrainConfig.from_json({**cfg_json, "extra": {}})
    exp = build(cfg)
    # the experiment carries the split; the config is left as it was (config.json records the split)
    assert (exp.train_classes, exp.test_classes) == (train, test) and cfg.extra == {}
    ci = exp.ci
    labels = np.concatenate([
        np.concatenate([np.asarray(t.ys), np.asarray(t.yq)])
        for t in (sample_task(jax.random.PRNGKey(i), ci, 5, 3, 2) for i in range(20))
    ])
    assert set(labels.tolist()) == set(train)


def test_test_side_index_draws_only_held_out_classes():
    data = load_dataset("digits")
    _, test = class_split(TrainConfig(holdout=0.5), 10)
    ci = build_class_index(data, test)
    labels = np.concatenate([np.asarray(sample_task(jax.random.PRNGKey(i), ci, 5, 3, 2).yq) for i in range(20)])
    assert set(labels.tolist()) == set(test)


def test_cli_too_large_M_for_a_side_exits_2(tmp_path, capsys):
    assert main(["meta-train", "--holdout", "0.5", "--M", "6", "--episodes", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--M 6 is larger than the 5 meta-training classes" in err and "\n" not in err
