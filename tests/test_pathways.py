"""The feedback-pathway registry (plastic_jax/pathways.py): every list of pathways, ``--feedback``'s
choices and help and the run reader's Θ-key grammar are derived from it, with today's values; and a
pathway registered at run time (a copy of ``fa`` with one meta-parameter) is accepted by all of them
without any other edit, and gone again afterwards."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

from plastic_jax import adjoint, benchmark, estimators, feedback, pathways, rundir
from plastic_jax.cli import build_parser
from plastic_jax.config import ConfigError, TrainConfig, choices_of, validate
from plastic_jax.estimators import base
from plastic_jax.inner import adapt_with_feedback, make_rule

ALL = ("bp", "fa", "dfa", "sign", "kp", "plastic", "routing")
#: --feedback's help as it was written out by hand before the registry
OLD_HELP = (
    "teaching-signal pathway: bp (B = W), fa (fixed random B), dfa (direct: every layer from the "
    "output error), sign (sign(W)·|random|), kp (Kolen-Pollack: B gets W's own update), plastic (B "
    "has its own meta-learned rule Θ^B, logged as B:kp, B:decay, B:err) or routing (a meta-learned "
    "gate per layer mixes fa and dfa, logged as gate@<layer>); docs/METHOD.md §9")
#: rundir.THETA_KEY as it was written out by hand before the registry
OLD_THETA_KEY = re.compile(r"F(\d+)(?:@(\d+))?|B:(kp|decay|err)|gate@(\d+)")
LABELS = ("F0", "F12", "F2@1", "F9@10", "B:kp", "B:decay", "B:err", "gate@0", "gate@12",
          "B:foo", "gate@x", "gate@", "G0", "B:kp@1", "F", "toy:a", "")


def test_the_derived_lists_have_todays_values():
    assert tuple(pathways.REGISTRY) == ALL
    assert feedback.FEEDBACK_MODES == ALL and tuple(feedback.FEEDBACK_MODES) == ALL
    assert feedback.DIRECT_MODES == ("dfa", "routing")
    assert feedback.STATEFUL_MODES == ("kp", "plastic")
    assert base.PLAIN_MODES == estimators.PLAIN_MODES == adjoint.PLAIN_MODES == ("bp", "fa")
    assert pathways.CONSTANT_B_MODES == ("fa", "dfa", "routing")
    assert benchmark.FEEDBACK_CHOICES == ("fa", "bp", "dfa", "sign", "kp", "plastic", "routing")
    assert feedback.PLASTIC_B_TERMS == rundir.B_TERMS == ("kp", "decay", "err")
    # tuple-like: repr, membership, indexing, concatenation, hashing as the tuples they were
    assert repr(feedback.FEEDBACK_MODES) == repr(ALL) and "kp" in feedback.STATEFUL_MODES
    assert feedback.FEEDBACK_MODES[1] == "fa" and feedback.FEEDBACK_MODES.index("kp") == 4
    assert feedback.DIRECT_MODES + ("x",) == ("dfa", "routing", "x") and hash(feedback.DIRECT_MODES) == hash(
        ("dfa", "routing"))
    assert [pathways.REGISTRY[m].matrices for m in ALL] == ["W", "B", "B", "sign", "B", "B", "B"]
    assert [m for m in ALL if pathways.REGISTRY[m].gated] == ["routing"]
    assert [feedback.n_feedback_params(m, 4) for m in ALL] == [0, 0, 0, 0, 0, 3, 3]
    assert feedback.feedback_labels("routing", 3) == ("gate@0", "gate@1")
    assert feedback.feedback_labels("nope", 3) == () and feedback.n_feedback_params("nope", 3) == 0


def test_the_cli_and_the_run_reader_read_the_registry():
    assert choices_of("feedback") == ALL
    assert pathways.feedback_help() == OLD_HELP
    assert _squash(OLD_HELP) in _help()
    for label in LABELS:  # the same language and the same groups as the hand-written regex
        m, old = rundir.THETA_KEY.fullmatch(label), OLD_THETA_KEY.fullmatch(label)
        assert (m is None) == (old is None), label
        if m is not None:
            assert m.groups() == old.groups(), label
    keys = ["gate@1", "B:err", "F2@1", "gate@10", "F0", "B:kp", "odd", "gate@2", "F2"]
    assert sorted(keys, key=rundir.theta_key_order) == ["F0", "F2", "F2@1", "B:kp", "B:err", "gate@1",
                                                          "gate@2", "gate@10", "odd"]
    assert pathways.label_owner("gate@3") == ("routing", "3") and pathways.label_owner("F0") is None


def test_a_pathway_is_declared_consistently():
    with pytest.raises(pathways.PathwayError, match="already registered"):
        pathways.register(pathways.Pathway("fa", "again"))
    with pytest.raises(pathways.PathwayError, match="description"):
        pathways.Pathway("x", " ")
    with pytest.raises(pathways.PathwayError, match="go together"):
        pathways.Pathway("x", "y", labels=lambda n: ("x:0",))
    with pytest.raises(pathways.PathwayError, match="exactly one capturing group"):
        pathways.Pathway("x", "y", labels=lambda n: ("x:0",), label_pattern=r"x:\d")
    with pytest.raises(pathways.PathwayError, match="must match"):
        pathways.Pathway("x", "y", labels=lambda n: ("F3",), label_pattern=r"F(\d)")
    with pytest.raises(pathways.PathwayError, match="matrices"):
        pathways.Pathway("x", "y", matrices="D")
    with pytest.raises(pathways.PathwayError, match="gated needs direct"):
        pathways.Pathway("x", "y", gated=True)
    assert tuple(pathways.REGISTRY) == ALL


#: a copy of fa under a new name, with one meta-parameter (read by nothing: the signals are fa's)
TOY = pathways.Pathway("toyfa", "fa with one idle meta-parameter, logged as toy:a",
                       labels=lambda n_layers: ("toy:a",), label_pattern="toy:(a)", label_order=lambda s: 0)


@pytest.fixture
def toy():
    before = dict(pathways.REGISTRY)
    with pathways.registered(TOY) as p:
        yield p
    assert pathways.REGISTRY == before  # restored


def _write_run(tmp_path, theta):
    d = tmp_path / "run"
    d.mkdir()
    rec = {"episode": 0, "seed": 0, "accuracy": 0.2, "meta_loss": 1.0, "theta": theta}
    (d / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    return str(d)


def test_a_registered_pathway_is_accepted_everywhere_without_another_edit(toy, tmp_path):
    # the derived lists
    assert feedback.FEEDBACK_MODES == (*ALL, "toyfa")
    assert "toyfa" not in feedback.DIRECT_MODES + feedback.STATEFUL_MODES + base.PLAIN_MODES
    assert "toyfa" in pathways.CONSTANT_B_MODES
    # the CLI: a choice, with its line in --help
    assert choices_of("feedback") == (*ALL, "toyfa")
    assert build_parser().parse_args(["meta-train", "--feedback", "toyfa"]).feedback == "toyfa"
    validate(TrainConfig(feedback="toyfa", hidden=(16,)))  # the run's settings check accepts it
    assert _squash("or toyfa (fa with one idle meta-parameter, logged as toy:a); docs/METHOD.md §9") in _help()
    # Θ: the meta-parameter after the coefficients, with its label
    rule = make_rule("f0", 2, "toyfa")
    assert rule.n_theta == rule.n_plastic + 1 and rule.theta_labels()[-1] == "toy:a"
    assert estimators.choose_estimator(rule.n_theta, "toyfa") in estimators.names()
    # the run reader accepts its label and sorts it after routing's
    assert rundir.THETA_KEY.fullmatch("toy:a") and not rundir.THETA_KEY.fullmatch("toy:b")
    recs = rundir.read_records(_write_run(tmp_path, {"toy:a": 0.5, "F0": 0.1, "gate@0": 0.0}))
    assert sorted(recs[0]["theta"], key=rundir.theta_key_order) == ["F0", "gate@0", "toy:a"]
    assert pathways.label_owner("toy:a") == ("toyfa", "a")
    # and it trains: the signals are fa's, its idle meta-parameter changes nothing
    rng = np.random.default_rng(0)
    sizes = (6, 5, 3)
    W = tuple(jnp.asarray(rng.normal(scale=0.5, size=(o, i)), jnp.float32) for i, o in zip(sizes[:-1], sizes[1:]))
    B = tuple(jnp.asarray(rng.normal(scale=0.5, size=w.shape), jnp.float32) for w in W)
    xs = jnp.asarray(rng.random((4, sizes[0])), jnp.float32)
    ys = jnp.asarray(rng.integers(0, sizes[-1], 4), jnp.int32)
    fa = make_rule("f0", 2, "fa")
    theta = jnp.full((fa.n_theta,), 0.1, jnp.float32)
    W_fa, _ = adapt_with_feedback(theta, fa, W, B, xs, ys)
    W_toy, _ = adapt_with_feedback(jnp.concatenate([theta, jnp.array([0.7], jnp.float32)]), rule, W, B, xs, ys)
    for a, b in zip(W_toy, W_fa):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_registry_is_restored_after_the_toy(tmp_path):
    assert tuple(pathways.REGISTRY) == ALL and feedback.FEEDBACK_MODES == ALL
    assert choices_of("feedback") == ALL and pathways.feedback_help() == OLD_HELP
    assert not rundir.THETA_KEY.fullmatch("toy:a")
    with pytest.raises(ConfigError, match="not a valid record"):
        rundir.read_records(_write_run(tmp_path, {"F0": 0.1, "toy:a": 0.5}))
    with pytest.raises(ConfigError, match="unknown feedback 'toyfa'"):
        validate(TrainConfig(feedback="toyfa"))


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _help() -> str:
    """``meta-train --help`` without whitespace (argparse wraps lines, also after a hyphen)."""
    return _squash(build_parser().commands["meta-train"].format_help())


def test_plots_title_a_registered_pathways_label_as_it_is_and_keep_the_built_in_ones(toy):
    from plastic_jax.plots import is_gate, theta_title

    assert theta_title("toy:a") == "toy:a" and not is_gate("toy:a")  # was "θ_None (toy:a)"
    assert theta_title("B:kp") == r"$\theta^B_{\mathrm{kp}}$ (B:kp)"
    assert theta_title("gate@3") == r"gate $g_{3}$ = sigmoid($\phi_{3}$) (gate@3)" and is_gate("gate@3")
    assert theta_title("F2@1") == r"$\theta_{2}$, layer 1 (F2@1)" and not is_gate("F2@1")
