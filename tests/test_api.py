"""The public API: ``plastic_jax.__all__`` resolves and is documented, the README's example runs,
and every public entry point refuses misuse with one line (``PlasticJaxError``)."""

import functools
import inspect
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plastic_jax as pj
from plastic_jax import estimators
from plastic_jax.data import load_dataset
from plastic_jax.episode import EpisodeSpec, batch_loss, draw, run, task_loss
from plastic_jax.inner import adapt, initial_theta, make_rule, online_step, query_loss
from plastic_jax.meta import meta_init, meta_step
from plastic_jax.network import init_network

ROOT = os.path.join(os.path.dirname(__file__), "..")
README = os.path.join(ROOT, "README.md")

# ----------------------------------------------------------------------------- the API


def test_import_is_light_and_loads_no_jax():
    code = "import sys, plastic_jax; assert 'jax' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_dir_lists_the_api_and_all_matches_the_declaration():
    assert pj.__all__ == list(pj._EXPORTS)
    assert len(set(pj.__all__)) == len(pj.__all__)
    assert set(pj.__all__) <= set(dir(pj))


@pytest.mark.parametrize("name", pj.__all__)
def test_every_public_name_resolves_and_has_a_docstring(name):
    obj = getattr(pj, name)
    assert obj is not None
    module, attr = pj._EXPORTS[name]
    assert obj is getattr(__import__(f"plastic_jax.{module}", fromlist=[attr]), attr)
    if inspect.isclass(obj) or callable(obj):
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        assert own and own.strip(), f"{name} has no docstring of its own"
        # a NamedTuple without a docstring gets "Name(field, ...)": not documentation
        assert not re.fullmatch(rf"{obj.__name__}\(.*\)", own.strip()), f"{name}: only the generated docstring"
    # constants (RULES, PAPER_POOL, ESTIMATORS, ...) are documented in the package docstring,
    # which lists every public name by topic
    assert re.search(rf"\b{name}\b", pj.__doc__), f"{name} is missing from plastic_jax's docstring"


def test_unknown_attribute_is_an_attribute_error_and_submodules_load_on_access():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pj.nope  # noqa: B018
    assert pj.episode.run is pj.run_episode


def _readme_example() -> str:
    text = open(README, encoding="utf-8").read()
    m = re.search(r"<!-- api-example:start -->\s*```python\n(.*?)```\s*<!-- api-example:end -->", text, re.S)
    assert m, "README.md lost its 'Use it from Python' example (markers api-example:start/end)"
    return m.group(1)


def test_the_readme_example_runs_exactly_as_printed(capsys):
    code = _readme_example()
    assert "import plastic_jax as pj" in code
    exec(compile(code, "README.md:api-example", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert re.search(r"learned Θ: \{'F0': -?\d", out), out
    m = re.search(r"held-out query accuracy: learned (\d\.\d+), f0 with θ0 = 0.03 (\d\.\d+)", out)
    assert m, out
    assert 0.0 <= float(m.group(1)) <= 1.0 and 0.0 <= float(m.group(2)) <= 1.0


# ----------------------------------------------------------------------------- make_rule


def test_make_rule_reads_a_string_as_a_rule_name_or_a_comma_list():
    assert make_rule("bio", n_layers=2).layer_terms == ((0, 2, 9),) * 2
    assert make_rule(" BIO ", n_layers=2) == make_rule((9, 2, 0, 2), n_layers=2)
    assert make_rule("0,2,9", n_layers=2) == make_rule("F0,F2,F9", n_layers=2) == make_rule("bio", n_layers=2)
    assert make_rule(layer_terms=["f0", "ehebb", (0, 9)]).layer_terms == ((0,), (0, 2), (0, 9))
    assert make_rule(np.array([0, 2]), n_layers=1).terms == (0, 2)


MAKE_RULE_MISUSE = [
    (dict(terms="bo"), "unknown rule 'bo'"),
    (dict(terms="0,x"), "unknown rule '0,x'"),
    (dict(terms=(0, 10)), r"term id\(s\) \[10\] outside the pool of 10 terms"),
    (dict(terms=(-1,)), r"term id\(s\) \[-1\]"),
    (dict(terms=("F0", "F2")), "term ids must be integers"),
    (dict(terms=(0.5,)), "term ids must be integers"),
    (dict(terms=7), "terms must be a rule name or a sequence of term ids"),
    (dict(), "give either terms .* or layer_terms"),
    (dict(terms=(0,), layer_terms=[(0,)]), "give either terms .*, not both"),
    (dict(terms=(0,), n_layers=0), "n_layers must be an integer >= 1, got 0"),
    (dict(terms=(0,), n_layers=2.0), "n_layers must be an integer >= 1"),
    (dict(terms=(0,), n_layers=True), "n_layers must be an integer >= 1"),
    (dict(terms=(), n_layers=2), "the rule has no terms"),
    (dict(layer_terms=[(), ()]), "the rule has no terms"),
    (dict(layer_terms=[]), "layer_terms is empty"),
    (dict(layer_terms="bio"), "layer_terms must be a sequence with one entry per layer"),
    (dict(layer_terms=[(0,), (2,)], n_layers=3), "n_layers=3 but layer_terms has 2 entries"),
    (dict(terms=(0,), feedback="FA"), "unknown feedback 'FA'; choose one of"),
    (dict(terms=(0,), bp_grad="exact"), "unknown bp_grad 'exact'"),
    (dict(terms=(0,), f5_f8="local"), "unknown f5_f8 'local'"),
    (dict(terms=(0,), pool=5), "a pool is a non-empty sequence of plasticity.Term"),
    (dict(terms=(0,), pool=[lambda v: []]), "a pool is a non-empty sequence of plasticity.Term"),
    (dict(terms=(0,), pool=()), "a pool is a non-empty sequence of plasticity.Term"),
]


@pytest.mark.parametrize("kwargs,message", MAKE_RULE_MISUSE, ids=[m for _, m in MAKE_RULE_MISUSE])
def test_make_rule_misuse_is_one_line(kwargs, message):
    with pytest.raises(pj.PlasticJaxError, match=f"^make_rule: {message}") as e:
        make_rule(**kwargs)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- episodes


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def ci(digits):
    return pj.build_class_index(digits)


SIZES = (64, 12, 10)
SPEC = EpisodeSpec(SIZES, M=3, K=4, Q=2)
RULE = make_rule("bio", n_layers=2)
THETA = initial_theta(RULE)
KEY = jax.random.PRNGKey(0)

ENTRY_POINTS = {
    "run": run,
    "task_loss": task_loss,
    "batch_loss": batch_loss,
    **{f.__name__: f for f in (estimators.reverse_grad, estimators.reverse_remat_grad,
                              estimators.forward_grad, estimators.auto_grad)},
}


def _episode_misuse(ci5):
    """(theta, rule, spec, ci) -> message; ``ci5`` allows only classes 0-4."""
    return [
        ((THETA[:2], RULE, SPEC, None), r"theta has shape \(2,\) but the rule needs shape \(3,\)"),
        ((THETA.astype(jnp.int32), RULE, SPEC, None), "theta must be a floating-point array"),
        (([1e-3, 0.0, 0.0], RULE, SPEC, None), "theta must be a JAX or NumPy array, got list"),
        ((initial_theta(make_rule("bio")), make_rule("bio"), SPEC, None),
         r"the rule has 5 layer\(s\) but spec.sizes \(64, 12, 10\) makes a network of 2"),
        ((THETA, "bio", SPEC, None), "rule must be an inner.Rule"),
        ((THETA, RULE, SIZES, None), "spec must be an episode.EpisodeSpec"),
        ((THETA, RULE, EpisodeSpec((63, 12, 10), 3, 4, 2), None), "the data have 64 features but spec.sizes"),
        ((THETA, RULE, EpisodeSpec((64, 12, 5), 3, 4, 2), None),
         r"the data have 10 classes \(labels 0-9\) but the network has 5 outputs"),
        ((THETA, RULE, EpisodeSpec((64, 0, 10), 3, 4, 2), None), "every layer size in spec.sizes must be"),
        ((THETA, RULE, EpisodeSpec((64, 12, 10), 0, 4, 2), None), "spec.M must be an integer >= 1, got 0"),
        ((THETA, RULE, EpisodeSpec((64, 12, 10), 3, 4, 0), None), "spec.Q must be an integer >= 1"),
        ((THETA, RULE, EpisodeSpec((64, 12, 10), 11, 4, 2), None),
         "spec.M = 11 is larger than the 10 classes tasks may be drawn from"),
        ((THETA, RULE, EpisodeSpec((64, 12, 10), 6, 4, 2), ci5),
         "spec.M = 6 is larger than the 5 classes tasks may be drawn from"),
        ((THETA, RULE, EpisodeSpec((64, 12, 10), 3, 170, 20), None),
         r"spec.K \+ spec.Q = 190 is larger than the largest class \(183 examples\)"),
        ((THETA, RULE, EpisodeSpec((64, 12, 10), 3, 170, 10), None),
         r"spec.K \+ spec.Q = 180 is larger than the smallest allowed class \(class 8: 174 examples\)"),
        ((THETA, RULE, SPEC, "digits"), "ci must be a data.ClassIndex"),
    ]


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_episode_entry_point_refuses_every_misuse_in_one_line(entry, ci, digits):
    fn = ENTRY_POINTS[entry]
    ci5 = pj.build_class_index(digits, range(5))
    for (theta, rule, spec, ci_), message in _episode_misuse(ci5):
        with pytest.raises(pj.PlasticJaxError, match=f"^{entry}: {message}") as e:
            fn(theta, rule, spec, KEY, ci if ci_ is None else ci_)
        assert "\n" not in str(e.value)


def test_draw_checks_spec_and_data(ci):
    with pytest.raises(pj.PlasticJaxError, match="^draw: the data have 64 features but spec.sizes"):
        draw(EpisodeSpec((63, 10), 3, 4, 2), KEY, ci)


def test_checks_are_on_shapes_so_jit_and_vmap_still_work_and_still_check(ci):
    # the driver's shape of call: jit(vmap(meta_step)) over seeds, ci traced
    opt = optax.adam(1e-3)
    step = functools.partial(meta_step, rule=RULE, spec=SPEC, optimizer=opt, estimator=estimators.forward_grad)
    state = jax.vmap(lambda th: meta_init(th, opt))(jnp.stack([THETA, THETA]))
    new, m = jax.jit(jax.vmap(step, in_axes=(0, 0, None)))(state, jax.random.split(KEY, 2), ci)
    assert new.theta.shape == (2, 3) and bool(jnp.all(jnp.isfinite(m["meta_loss"])))
    # under jit the static checks still fire (at trace time), with the same message
    jitted = jax.jit(task_loss, static_argnames=("rule", "spec"))
    assert np.isfinite(float(jitted(THETA, rule=RULE, spec=SPEC, key=KEY, ci=ci)[0]))
    with pytest.raises(pj.PlasticJaxError, match="^task_loss: the rule has 5 layer"):
        jitted(initial_theta(make_rule("bio")), rule=make_rule("bio"), spec=SPEC, key=KEY, ci=ci)
    with pytest.raises(pj.PlasticJaxError, match=r"^task_loss: spec.K \+ spec.Q = 190 is larger than the largest"):
        jitted(THETA, rule=RULE, spec=EpisodeSpec(SIZES, 3, 170, 20), key=KEY, ci=ci)


def test_per_layer_theta_shape_is_checked_when_rules_have_it(ci):
    if "per_layer" not in pj.Rule._fields:
        pytest.skip("Rule has no per_layer field")
    rule = RULE._replace(per_layer=True)
    assert float(task_loss(initial_theta(rule), rule, SPEC, KEY, ci)[1]) >= 0.0
    with pytest.raises(pj.PlasticJaxError, match=r"^task_loss: theta has shape \(3,\) but the rule needs shape \(6,\)"):
        task_loss(THETA, rule, SPEC, KEY, ci)


# ----------------------------------------------------------------------------- inner loop, meta-step


def test_inner_loop_misuse(ci):
    W, B = init_network(KEY, SIZES)
    x, y = ci.x[:5], ci.y[:5]
    for fn, args, message in [
        (online_step, (THETA, RULE, W[:1], B[:1], x[0], y[0]), "the rule has 2 layer\\(s\\) but W has 1"),
        (online_step, (THETA, RULE, W, B[::-1], x[0], y[0]), "B must match W's shapes"),
        (online_step, (THETA, RULE, W, B, x[0, :10], y[0]), r"x must have shape \(64,\)"),
        (online_step, (THETA, RULE, W, B, x[0], y[:2]), "label must be a scalar"),
        (online_step, (THETA[:1], RULE, W, B, x[0], y[0]), "theta has shape"),
        (adapt, (THETA, RULE, W, B, x[0], y), r"xs must have shape \(N, 64\)"),
        (adapt, (THETA, RULE, W, B, x, y[:4]), r"labels must have shape \(5,\)"),
        (adapt, (THETA, RULE, (W[1], W[0]), B, x, y), "W must be chained"),
        (query_loss, (W, x[:, :10], y), r"xq must have shape \(N, 64\)"),
        (query_loss, ((), x, y), "W must be a non-empty tuple"),
        (initial_theta, ("bio",), "rule must be an inner.Rule"),
    ]:
        with pytest.raises(pj.PlasticJaxError, match=f"^{fn.__name__}: {message}"):
            fn(*args)


def test_meta_step_misuse(ci):
    opt = optax.adam(1e-3)
    state = meta_init(THETA, opt)
    kw = dict(rule=RULE, spec=SPEC, optimizer=opt, estimator=estimators.forward_grad)
    for changes, message in [
        (dict(rule=make_rule("bio")), "the rule has 5 layer"),
        (dict(optimizer=optax.adam), "optimizer must be an optax.GradientTransformation"),
        (dict(estimator="forward"), "estimator must be a meta-gradient function"),
        (dict(l1=-0.1), "l1 must be >= 0"),
        (dict(rule=make_rule("f0", n_layers=2)), r"theta has shape \(3,\) but the rule needs shape \(1,\)"),
    ]:
        with pytest.raises(pj.PlasticJaxError, match=f"^meta_step: {message}"):
            meta_step(state, KEY, ci, **{**kw, **changes})
    with pytest.raises(pj.PlasticJaxError, match="^meta_step: state must be a meta.MetaState"):
        meta_step(THETA, KEY, ci, **kw)
    with pytest.raises(pj.PlasticJaxError, match="^meta_init: theta must be a 1-D array"):
        meta_init([0.1], opt)
    with pytest.raises(pj.PlasticJaxError, match="^meta_init: optimizer must be"):
        meta_init(THETA, "adam")


def test_task_accuracies_checks_its_thetas(ci):
    with pytest.raises(pj.PlasticJaxError, match="^task_accuracies: thetas must be 2-D"):
        pj.task_accuracies(THETA, jax.random.split(KEY, 2), ci, rule=RULE, spec=SPEC)
    with pytest.raises(pj.PlasticJaxError, match="^task_accuracies: theta has shape"):
        pj.task_accuracies(THETA[None, :2], jax.random.split(KEY, 2), ci, rule=RULE, spec=SPEC)
