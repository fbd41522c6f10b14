"""--config FILE (TOML or JSON): flags given on the command line override it; every bad value is
one line and exit code 2; a run's config.json reruns the run."""

import json
import os

import pytest

from plastic_jax.cli import build_parser, config_from_args, given_flags, main
from plastic_jax.config import ConfigError, TrainConfig, load_config_file, validate


def _cfg(argv):
    args = build_parser().parse_args(argv)
    args._given = given_flags(argv)
    return config_from_args(args)


TOML = """
rule = "ehebb"
hidden = [16, 12]
K = 7
meta-lr = 0.01        # dashes work as in the flags
theta0 = 2            # an integer where a number is expected is fine
checkpoint_every = 5
out = "runs/from-toml"
"""


def test_toml_values_are_used_and_given_flags_override_them(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    cfg = _cfg(["meta-train", "--config", str(path)])
    assert (cfg.rule, cfg.hidden, cfg.K, cfg.meta_lr, cfg.theta0) == ("ehebb", (16, 12), 7, 0.01, 2.0)
    assert cfg.checkpoint_every == 5 and cfg.out == "runs/from-toml"
    assert cfg.Q == TrainConfig().Q  # not in the file, not given: the default
    # a flag given on the command line wins, even when it equals the flag's default (K = 50)
    cfg = _cfg(["meta-train", "--config", str(path), "--K", "50", "--hidden", "8", "--out", "elsewhere"])
    assert (cfg.K, cfg.hidden, cfg.out, cfg.rule) == (50, (8,), "elsewhere", "ehebb")


def test_without_config_the_flags_and_defaults_make_the_config():
    cfg = _cfg(["meta-train", "--rule", "oja", "--seed", "3"])
    assert cfg == TrainConfig(rule="oja", seed=3, out="runs/oja-fa-s3")


def test_json_config_round_trips():
    cfg = TrainConfig(rule="bio", hidden=(5, 6), train_classes=(0, 1, 2), max_skips=4)
    assert TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


@pytest.mark.parametrize(
    "text,message",
    [
        ('rule = "bio"\nepisodez = 3\n', "unknown config key(s): episodez"),
        ('K = "5"\n', "K (--K) must be an integer, got '5'"),
        ("K = 5.5\n", "K (--K) must be an integer"),
        ("K = true\n", "K (--K) must be an integer"),
        ('hidden = "16"\n', "hidden (--hidden) must be a list of integers"),
        ('hidden = [16, "a"]\n', "hidden (--hidden) must be a list of integers"),
        ('meta_lr = "fast"\n', "meta_lr (--meta-lr) must be a number"),
        ('download = "yes"\n', "download (--download) must be true or false"),
        ('terms = 3\n', "terms (--terms) must be a string or null"),
        ("max_skips = -1\n", "--max-skips must be an integer >= 0"),
        ("keep_checkpoints = 1\n", "--keep-checkpoints must be an integer >= 2"),
        ("checkpoint_every = -2\n", "--checkpoint-every must be an integer >= 0"),
        ("theta0 = nan\n", "theta0 must be finite"),
        ("K = \n", "does not parse"),
        ("M = 0\n", "--M must be a positive integer"),
    ],
)
def test_every_bad_value_is_one_line_and_exit_code_2(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = str(tmp_path / "run")
    assert main(["meta-train", "--config", str(path), "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "content,message",
    [("[1, 2]", "must hold a table of settings"), ("{not json", "does not parse"), (None, "cannot read --config")],
)
def test_bad_json_files(tmp_path, content, message):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config_file(str(path))


def test_bad_flag_values_go_through_the_same_validate(tmp_path, capsys):
    assert main(["meta-train", "--max-skips", "-3", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "--max-skips must be an integer >= 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="hidden"):
        validate(TrainConfig(hidden=(16, 2.5)))


def test_a_runs_config_json_reruns_it(tmp_path):
    first = str(tmp_path / "first")
    # the small program of test_checkpoint.py (shared compilation cache), another seed
    args = ["--hidden", "8", "--M", "2", "--K", "3", "--Q", "1", "--rule", "bio", "--episodes", "3",
            "--seed", "4", "--analysis-every", "4", "--no-progress"]
    assert main(["meta-train", *args, "--out", first]) == 0
    again = str(tmp_path / "again")
    # the file names its own run directory; --out sends the rerun elsewhere
    assert main(["meta-train", "--config", os.path.join(first, "config.json"), "--out", again,
                 "--no-progress"]) == 0
    a = json.load(open(os.path.join(first, "config.json")))
    b = json.load(open(os.path.join(again, "config.json")))
    # each run has its own id (extra.run_id, checked against its checkpoints); the rest is the same
    for c in (a, b):
        c["extra"].pop("run_id", None)
    assert {**a, "out": None} == {**b, "out": None}
    with open(os.path.join(first, "metrics.jsonl")) as f1, open(os.path.join(again, "metrics.jsonl")) as f2:
        assert f1.read() == f2.read()
    # without --out it would land on the first run: refused, not overwritten
    assert main(["meta-train", "--config", os.path.join(first, "config.json"), "--no-progress"]) == 2


# --- the declaration: every setting is written once, the rest is derived ---------------------

#: the flags of meta-train before the settings were declared once (they all keep working)
OLD_FLAGS = ["--K", "--M", "--Q", "--analysis-every", "--checkpoint-every", "--config", "--data-dir", "--dataset",
             "--devices", "--download", "--episodes", "--feedback", "--hidden", "--holdout", "--keep-checkpoints",
             "--l1", "--layer-rules", "--max-skips", "--meta-batch", "--meta-grad", "--meta-lr", "--no-progress",
             "--out", "--overwrite", "--resume", "--rule", "--seed", "--seeds", "--split", "--split-seed", "--terms",
             "--test-classes", "--theta0", "--train-classes"]


def test_every_setting_is_declared_once_and_its_flag_derived():
    import argparse
    import dataclasses

    from plastic_jax.cli import add_train_args
    from plastic_jax.config import FIELD_TYPES, RESUME_MAY_CHANGE, SETTINGS, flag_of

    assert list(SETTINGS) == [f.name for f in dataclasses.fields(TrainConfig)] == list(FIELD_TYPES)
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    usage = parser.format_usage()
    for flag in [*OLD_FLAGS, "--bp-grad", "--f5-f8"]:
        assert f"[{flag}" in usage, flag
    for name, s in SETTINGS.items():
        if s.group is not None:
            assert f"[{flag_of(name)}" in usage, name
    assert flag_of("estimator") == "--meta-grad"
    assert set(RESUME_MAY_CHANGE) == {"episodes", "checkpoint_every", "keep_checkpoints", "max_skips", "out", "extra",
                                      "estimator", "tensorboard"}
    assert given_flags(["meta-train", "--meta-grad", "forward", "--M", "5", "--download"]) == {"estimator", "M",
                                                                                               "download"}


def test_bp_grad_and_f5_f8_flags_files_and_old_runs():
    cfg = _cfg(["meta-train", "--feedback", "bp", "--bp-grad", "through", "--f5-f8", "elementwise"])
    assert (cfg.bp_grad, cfg.f5_f8) == ("through", "elementwise")
    assert (TrainConfig().bp_grad, TrainConfig().f5_f8) == ("frozen", "matrix")
    # a run's config.json written before the settings existed: the semantics it ran with
    old = TrainConfig.from_run_json({"rule": "bio", "feedback": "bp"})
    assert (old.bp_grad, old.f5_f8) == ("through", "matrix")


def test_a_config_file_lacking_the_new_settings_gets_the_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('rule = "bio"\nfeedback = "bp"\n')
    cfg = _cfg(["meta-train", "--config", str(path)])
    assert (cfg.bp_grad, cfg.f5_f8) == ("frozen", "matrix")
    path.write_text('bp-grad = "through"\nf5_f8 = "elementwise"\n')
    cfg = _cfg(["meta-train", "--config", str(path)])
    assert (cfg.bp_grad, cfg.f5_f8) == ("through", "elementwise")


@pytest.mark.parametrize("args,message", [
    (["--bp-grad", "exact"], "unknown --bp-grad 'exact'; choose one of frozen, through"),
    (["--f5-f8", "outer"], "unknown --f5-f8 'outer'; choose one of matrix, elementwise"),
    (["--meta-grad", "bogus"], "unknown meta-gradient estimator 'bogus'"),
])
def test_a_bad_choice_is_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    assert main(["meta-train", *args, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not os.path.exists(tmp_path / "r")


def test_the_default_run_directory_is_fresh_when_the_same_command_runs_twice(tmp_path, monkeypatch):
    from plastic_jax.config import default_out

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(rule="bio", feedback="fa", seed=3)
    assert default_out(cfg) == "runs/bio-fa-s3"
    os.makedirs("runs/bio-fa-s3")
    assert default_out(cfg) == "runs/bio-fa-s3-2"
    os.makedirs("runs/bio-fa-s3-2")
    assert default_out(cfg) == "runs/bio-fa-s3-3"


def test_presets_resolve_the_settings_left_open_and_a_given_flag_wins():
    robust, paper = TrainConfig(), TrainConfig(preset="paper")
    assert (robust.meta_lr, robust.clip_factor, robust.guard) == (1e-3, 3.0, "rollback")
    assert (paper.meta_lr, paper.clip_factor, paper.guard) == (1e-3, 0.0, "skip")
    # robust pool (F5-F8 present) takes the lower rate; the paper preset keeps 1e-3
    assert TrainConfig(rule="pool").meta_lr == 1e-4 and TrainConfig(rule="pool", preset="paper").meta_lr == 1e-3
    assert TrainConfig(terms="0,2,6").meta_lr == 1e-4 and TrainConfig(terms="0,2,9").meta_lr == 1e-3
    assert TrainConfig(rule="pool", meta_lr=1e-3).meta_lr == 1e-3
    assert TrainConfig.from_json({"preset": "paper", "clip_factor": 3}).clip_factor == 3.0
    # config.json records the resolved values; a run from before presets reads as the paper's
    assert TrainConfig().to_json()["guard"] == "rollback"
    old = TrainConfig.from_run_json({"meta_lr": 1e-3})
    assert (old.preset, old.clip_factor, old.guard) == ("paper", 0.0, "skip")


def test_a_train_config_is_frozen_and_a_changed_one_is_a_new_config():
    import dataclasses

    cfg = TrainConfig(rule="bio", out="runs/a")
    for name, value in (("out", "runs/b"), ("meta_batch", 2), ("extra", {}), ("meta_lr", 1e-4)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, name, value)
    assert (cfg.out, cfg.meta_batch, cfg.meta_lr) == ("runs/a", 1, 1e-3)
    moved = dataclasses.replace(cfg, out="runs/b")
    assert moved.out == "runs/b" and cfg.out == "runs/a"
    assert {**moved.to_json(), "out": "runs/a"} == cfg.to_json()
    # the preset's values are resolved when a config is made, a replaced one included
    assert dataclasses.replace(TrainConfig(preset="paper"), rule="pool").meta_lr == 1e-3
    assert dataclasses.replace(TrainConfig(), rule="pool", meta_lr=None).meta_lr == 1e-4


def test_the_default_out_is_a_new_config_not_a_changed_one():
    args = build_parser().parse_args(["meta-train", "--rule", "bio", "--seed", "3"])
    cfg = config_from_args(args)
    assert cfg.out.startswith("runs/bio-fa-s3")


def test_swept_settings_parse_as_lists_and_single_values_stay_numbers():
    cfg = TrainConfig.from_json({"l1": [0, 1, 10], "meta_lr": [1e-3, 1e-4], "seeds": 2})
    assert cfg.l1 == (0.0, 1.0, 10.0) and cfg.meta_lr == (1e-3, 1e-4) and cfg.is_sweep
    assert len(cfg.members()) == 12 and cfg.members()[:3] == [(0.0, 1e-3, 0), (0.0, 1e-3, 1), (0.0, 1e-4, 0)]
    one = TrainConfig.from_json({"l1": [0.5]})
    assert one.l1 == 0.5 and not one.is_sweep
    for bad, words in (({"l1": [0, 0]}, "lists a value twice"), ({"meta_lr": [1e-3, -1.0]}, "must be positive"),
                       ({"l1": ["a"]}, "must be a number or a list of numbers")):
        with pytest.raises(ConfigError, match=words):
            validate(TrainConfig.from_json(bad))


def test_a_typo_in_a_config_key_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"hiden \(did you mean hidden\?\)"):
        TrainConfig.from_json({"hiden": [10]})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\): zzz$"):
        TrainConfig.from_json({"zzz": 1})
