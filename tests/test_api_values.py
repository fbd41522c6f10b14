"""The public API checks values, not only shapes (README: "API values are validated where it costs
nothing under jit, or produce NaN, never a plausible number"): a non-finite Θ is refused outside
jit and gives NaN accuracy under it, bad class lists are refused before any array is built, and a
dataset name of the wrong type is a one-line error."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plastic_jax as pj
from plastic_jax import checks, estimators
from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, batch_loss, run, task_loss
from plastic_jax.evaluate import task_accuracies
from plastic_jax.inner import adapt, initial_theta, make_rule
from plastic_jax.meta import MetaState, meta_init, meta_step
from plastic_jax.network import init_network

SPEC = EpisodeSpec((64, 8, 10), M=3, K=2, Q=1)
RULE = make_rule((0,), n_layers=2)
KEY = jax.random.PRNGKey(0)
KEYS = jax.random.split(KEY, 6)
BAD = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def ci(digits):
    return build_class_index(digits)


# ----------------------------------------------------------------------------- a non-finite Θ


EPISODE_ENTRY_POINTS = {"run": run, "task_loss": task_loss, "batch_loss": batch_loss,
                        "reverse_grad": estimators.reverse_grad, "auto_grad": estimators.auto_grad}


@pytest.mark.parametrize("value", list(BAD))
@pytest.mark.parametrize("entry", list(EPISODE_ENTRY_POINTS))
def test_episode_entry_points_refuse_a_non_finite_theta_outside_jit(entry, value, ci):
    theta = jnp.array([BAD[value]], jnp.float32)
    with pytest.raises(pj.PlasticJaxError, match=f"^{entry}: theta must be finite, got F0={value}") as e:
        EPISODE_ENTRY_POINTS[entry](theta, RULE, SPEC, KEY, ci)
    assert "\n" not in str(e.value)


def test_the_message_names_the_bad_entries_of_a_longer_theta(ci):
    rule = make_rule((0, 2, 9), n_layers=2)
    theta = jnp.array([1e-3, np.nan, 0.0], jnp.float32)
    with pytest.raises(pj.PlasticJaxError, match=r"^run: theta must be finite, got F2=nan;"):
        run(theta, rule, SPEC, KEY, ci)


def test_adapt_refuses_a_nan_theta():
    W, B = init_network(KEY, SPEC.sizes)
    xs, ys = jnp.zeros((4, 64)), jnp.zeros((4,), jnp.int32)
    with pytest.raises(pj.PlasticJaxError, match="^adapt: theta must be finite"):
        adapt(jnp.array([np.nan]), RULE, W, B, xs, ys)


def test_a_huge_but_finite_theta_is_accepted_outside_jit(ci):
    # finite values are the user's business: only NaN/inf are refused
    out = run(jnp.array([1e30], jnp.float32), RULE, SPEC, KEY, ci)
    assert out.loss.shape == ()


@pytest.mark.parametrize("theta0", [np.nan, np.inf, -np.inf, 1e39, "0.1", True])
def test_initial_theta_refuses_a_theta0_that_is_not_a_finite_number(theta0):
    with pytest.raises(pj.PlasticJaxError, match="^initial_theta: theta0 must be a finite number"):
        initial_theta(RULE, theta0=theta0)


def test_initial_theta_still_takes_a_number_and_a_traced_theta0():
    assert float(initial_theta(RULE, theta0=0.5)[0]) == 0.5
    got = jax.jit(lambda t: initial_theta(RULE, theta0=t))(jnp.float32(0.25))
    assert float(got[0]) == 0.25


def test_meta_step_refuses_a_nan_theta_outside_jit(ci):
    opt = optax.adam(1e-2)
    state = MetaState(jnp.array([np.nan]), opt.init(jnp.zeros(1)), jnp.zeros((), jnp.int32))
    with pytest.raises(pj.PlasticJaxError, match="^meta_step: theta must be finite, got F0=nan"):
        meta_step(state, KEY, ci, rule=RULE, spec=SPEC, optimizer=opt, estimator=estimators.reverse_grad)


def test_meta_step_under_jit_skips_a_nan_theta_it_cannot_read(ci):
    # under jit Θ is a tracer: not refused, but never applied (the step is skipped)
    opt = optax.adam(1e-2)
    state = MetaState(jnp.array([np.nan]), opt.init(jnp.zeros(1)), jnp.zeros((), jnp.int32))
    step = jax.jit(functools.partial(meta_step, rule=RULE, spec=SPEC, optimizer=opt,
                                     estimator=estimators.reverse_grad))
    new, m = step(state, KEY, ci)
    assert bool(m["skipped"]) and int(new.skips) == 1


def test_check_finite_theta_refuses_concrete_and_skips_traced_values():
    with pytest.raises(pj.PlasticJaxError, match=r"^meta_init: theta must be finite, got \[1\]=inf"):
        checks.check_finite_theta("meta_init", jnp.array([0.1, np.inf]))
    checks.check_finite_theta("meta_init", jnp.array([0.1, 1e30]))
    jax.jit(lambda t: checks.check_finite_theta("meta_init", t) or t)(jnp.array([np.nan]))


def test_meta_init_refuses_a_nan_theta():
    with pytest.raises(pj.PlasticJaxError, match="^meta_init: theta must be finite"):
        meta_init(jnp.array([np.nan]), optax.adam(1e-2))


# ----------------------------------------------------------------------------- task_accuracies


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e30])
def test_task_accuracies_is_nan_for_a_non_finite_or_overflowing_theta(value, ci):
    thetas = jnp.array([[1e-2], [value]], jnp.float32)
    acc = np.asarray(task_accuracies(thetas, KEYS, ci, rule=RULE, spec=SPEC))
    assert acc.shape == (2, len(KEYS))
    assert np.isfinite(acc[0]).all(), "a finite Θ's row must keep its accuracies"
    assert np.isnan(acc[1]).all(), f"Θ = {value} gave {acc[1]} instead of NaN"


@pytest.mark.parametrize("value", [np.nan, 1e30])
def test_task_accuracies_is_nan_under_an_outer_jit(value, ci):
    f = jax.jit(lambda th, ks, c: task_accuracies(th, ks, c, rule=RULE, spec=SPEC))
    acc = np.asarray(f(jnp.array([[value]], jnp.float32), KEYS, ci))
    assert np.isnan(acc).all(), f"Θ = {value} under jit gave {acc} instead of NaN"


def test_a_nan_theta_under_jit_never_gives_a_plausible_accuracy(ci):
    """The issue's report: every task scored a chance-level number (argmax of NaN logits)."""
    f = jax.jit(lambda th: task_accuracies(th, KEYS, ci, rule=RULE, spec=SPEC))
    acc = np.asarray(f(jnp.full((3, 1), np.nan, jnp.float32)))
    assert not np.any((acc >= 0) & (acc <= 1))


# ----------------------------------------------------------------------------- build_class_index


@pytest.mark.parametrize("classes, message", [
    ([0, 1, 99], r"class 99 is outside the dataset's 10 classes \(valid classes are 0\.\.9\)"),
    ([-1, 2, 3], r"class -1 is outside the dataset's 10 classes \(valid classes are 0\.\.9\)"),
    ([1, 2, 2, 3], r"class\(es\) \[2\] listed more than once; .*valid classes are 0\.\.9"),
    ([], r"classes is empty: list at least one class \(valid classes are 0\.\.9\)"),
    ([0, 1.5, 2], r"class ids must be integers \(valid classes are 0\.\.9\), got 1\.5"),
    ([0, 2.0], r"class ids must be integers \(valid classes are 0\.\.9\), got 2\.0"),
    ([True, 2], r"class ids must be integers \(valid classes are 0\.\.9\), got True"),
    (["3"], r"class ids must be integers \(valid classes are 0\.\.9\), got '3'"),
    ("0123", r"classes must be a sequence of class ids \(valid classes are 0\.\.9\), got '0123'"),
    (3, r"classes must be a sequence of class ids"),
    (np.array([[0, 1], [2, 3]]), r"classes must be a 1-D sequence of class ids"),
])
def test_build_class_index_refuses_bad_classes_in_one_line(digits, classes, message):
    with pytest.raises(pj.PlasticJaxError, match=f"^build_class_index: {message}") as e:
        build_class_index(digits, classes)
    assert "\n" not in str(e.value)


def test_build_class_index_takes_ranges_arrays_and_numpy_ints(digits):
    for classes in (range(5), np.arange(3, 8), [np.int64(1), np.int32(4), 7], (9,)):
        ci = build_class_index(digits, classes)
        assert np.asarray(ci.classes).tolist() == [int(c) for c in classes]


def test_build_class_index_refuses_before_a_jitted_loss_could_clamp(digits):
    # the README's pattern: a ClassIndex fed to a jitted loss; class 99 would clamp to 9 silently
    loss = jax.jit(functools.partial(task_loss, rule=RULE, spec=SPEC))
    with pytest.raises(pj.PlasticJaxError, match="class 99 is outside"):
        loss(initial_theta(RULE), key=KEY, ci=build_class_index(digits, [0, 1, 99]))


# ----------------------------------------------------------------------------- load_dataset


@pytest.mark.parametrize("name", [123, None, b"digits", ["digits"], 1.5])
def test_load_dataset_refuses_a_name_that_is_not_a_string_or_path(name):
    with pytest.raises(pj.PlasticJaxError,
                       match=r"^load_dataset: expected a dataset name \(digits, emnist, glyphs\) or the path of "
                             r"an \.npz file \(str or os\.PathLike\), got ") as e:
        load_dataset(name)
    assert "\n" not in str(e.value)


def test_load_dataset_takes_a_pathlike(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.random((12, 5)).astype(np.float32), y=np.repeat(np.arange(3), 4).astype(np.int32))
    data = load_dataset(pathlib.Path(path))
    assert data.x.shape == (12, 5) and data.n_classes == 3
