"""Each plasticity term and the fused update against the literal dense formulas of docs/METHOD.md §3."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from plastic_jax.inner import make_rule
from plastic_jax.plasticity import (
    ELEMENTWISE_POOL,
    NEEDS_E_PRE,
    NEEDS_WT_POST,
    PAPER_POOL,
    PAPER_POOLS,
    RULES,
    TERMS,
    Hadamard,
    Outer,
    RuleError,
    Scale,
    Term,
    TermError,
    Vectors,
    dense_update,
    fuse,
    layer_update,
    parse_terms,
    term,
    with_reading,
)

# ----------------------------------------------------------------------------- a user's terms
# Declared here, outside the package, the way a user adds terms: one declaration each.


@term("pre_decay", reads=("post", "pre"), formula="-W ⊙ (1 preᵀ): presynaptic-activity-gated decay")
def pre_decay(v):
    return [Hadamard(-jnp.ones_like(v.post), v.pre)]


@term("hebb_sq", reads=("post", "pre"), formula="post (pre ⊙ pre)ᵀ - W/2")
def hebb_sq(v):
    return [Outer(v.post, v.prod("pre", "pre")), Scale(-0.5)]


@term("err_gate", reads=("e_post", "post", "e_pre", "wt_post"), formula="-(e_post ⊙ post) e_preᵀ - W ⊙ (1 (Wᵀpost)ᵀ)")
def err_gate(v):
    return [Outer(-v.prod("e_post", "post"), v.e_pre), Hadamard(-jnp.ones_like(v.post), v.wt_post)]


def dense_user_term(name, W, pre, post, e_pre, e_post):
    """The user terms' formulas written out in NumPy, independently of their declarations."""
    if name == "pre_decay":
        return -W * pre[None, :]
    if name == "hebb_sq":
        return np.outer(post, pre**2) - 0.5 * W
    if name == "err_gate":
        return -np.outer(e_post * post, e_pre) - W * (post @ W)[None, :]
    raise ValueError(name)


USER_TERMS = (pre_decay, hebb_sq, err_gate)


def _random_layer(seed, n_post=7, n_pre=5):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n_post, n_pre))
    pre = rng.uniform(0, 1, n_pre)
    post = rng.uniform(0, 1, n_post)
    e_pre = rng.normal(size=n_pre)
    e_post = rng.normal(size=n_post)
    return W, pre, post, e_pre, e_post


@pytest.mark.parametrize("r", range(10))
@pytest.mark.parametrize("shape", [(7, 5), (3, 11), (1, 4)])
def test_each_term_matches_dense_spec_formula(r, shape):
    with jax.enable_x64(True):
        args = _random_layer(r + 10 * shape[0], *shape)
        got = np.asarray(TERMS[r](*(jnp.asarray(a) for a in args)))
        want = ref.term(r, *args)
        assert got.shape == shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("terms", [(0,), (0, 2, 9), (0, 9), tuple(range(10)), (1, 4, 8), (3, 5, 6, 7)])
def test_fused_update_equals_sum_of_dense_terms(terms):
    with jax.enable_x64(True):
        W, pre, post, e_pre, e_post = _random_layer(len(terms))
        theta = np.random.default_rng(1).normal(size=len(terms))
        want = W + sum(theta[i] * ref.term(r, W, pre, post, e_pre, e_post) for i, r in enumerate(terms))
        j = [jnp.asarray(a) for a in (W, pre, post, e_pre, e_post)]
        got = layer_update(jnp.asarray(theta), terms, terms, *j, z=j[0] @ j[1])
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)
        got_dense = j[0] + dense_update(jnp.asarray(theta), terms, *j)
        np.testing.assert_allclose(np.asarray(got_dense), want, rtol=1e-10, atol=1e-12)


def test_fused_update_applies_only_the_layers_terms():
    with jax.enable_x64(True):
        W, pre, post, e_pre, e_post = _random_layer(3)
        terms = (0, 2, 9)
        theta = np.array([0.3, -0.2, 0.1])
        want = W + 0.3 * ref.term(0, W, pre, post, e_pre, e_post)
        j = [jnp.asarray(a) for a in (W, pre, post, e_pre, e_post)]
        got = layer_update(jnp.asarray(theta), terms, (0,), *j, z=j[0] @ j[1])
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)


def test_parse_terms_accepts_names_ids_and_prefixed_ids():
    assert parse_terms("bio") == (0, 2, 9)
    assert parse_terms("9,0,2") == (0, 2, 9)
    assert parse_terms("F0,F2") == (0, 2)
    assert parse_terms([2, 2, 0]) == (0, 2)
    assert RULES["pool"] == tuple(range(10))


@pytest.mark.parametrize("bad", ["nosuchrule", "0,10", "-1", "0,,x", "", (0.5,), ["F0"], [True], 7, ()])
def test_parse_terms_rejects_unknown_rules_and_ids(bad):
    # a float, a string or a bool in a sequence is not an id (0.5 is not silently term 0)
    with pytest.raises(RuleError, match="^unknown (rule or )?term id"):
        parse_terms(bad)


def test_make_rule_parses_terms_with_parse_terms_for_any_pool_size():
    # one parser: make_rule's term errors are parse_terms's RuleError, prefixed with its name
    assert parse_terms((10, 0), 11) == (0, 10) == parse_terms("F10,F0", 11)
    assert parse_terms((), where="make_rule", empty_ok=True) == ()
    for bad in ("bo", (0, 10), (0.5,)):
        with pytest.raises(RuleError, match="^make_rule: ") as e:
            make_rule(bad, n_layers=2)
        assert isinstance(e.value, ValueError)
    with pytest.raises(RuleError, match=r"^make_rule: term id\(s\) \[11\] outside the pool of 11 terms"):
        make_rule((0, 11), n_layers=2, pool=PAPER_POOL + USER_TERMS[:1])


# ----------------------------------------------------------------------------- both readings, pools


@pytest.mark.parametrize("reading", ["matrix", "elementwise"])
@pytest.mark.parametrize("r", range(10))
@pytest.mark.parametrize("shape", [(7, 5), (3, 11), (1, 4)])
def test_each_term_of_both_readings_matches_the_reference(reading, r, shape):
    with jax.enable_x64(True):
        args = _random_layer(100 + r + 10 * shape[0], *shape)
        got = np.asarray(PAPER_POOLS[reading][r](*(jnp.asarray(a) for a in args)))
        want = ref.term(r, *args, reading=reading)
        assert got.shape == shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_elementwise_f7_and_f8_coincide_and_differ_from_the_matrix_reading():
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in _random_layer(5)]
        np.testing.assert_allclose(np.asarray(ELEMENTWISE_POOL[7](*args)), np.asarray(ELEMENTWISE_POOL[8](*args)),
                                   rtol=1e-14)
        for r in (5, 6, 7, 8):
            assert not np.allclose(np.asarray(ELEMENTWISE_POOL[r](*args)), np.asarray(PAPER_POOL[r](*args)))
        for r in (0, 1, 2, 3, 4, 9):
            assert ELEMENTWISE_POOL[r] is PAPER_POOL[r]


def test_declared_reads_give_the_paper_flags():
    assert NEEDS_E_PRE == {1, 2, 4, 6, 7, 8}
    assert NEEDS_WT_POST == {6, 7, 9}
    assert {r for r, t in enumerate(ELEMENTWISE_POOL) if t.needs_e_pre} == NEEDS_E_PRE
    # element-wise F6/F7 need no Wᵀ post: they scale W_jk directly
    assert {r for r, t in enumerate(ELEMENTWISE_POOL) if t.needs_wt_post} == {9}


NAMED = sorted(RULES.items()) + [("subset", (1, 4, 8)), ("f3-f8", (3, 5, 6, 7, 8))]


@pytest.mark.parametrize("reading", ["matrix", "elementwise"])
@pytest.mark.parametrize("name,terms", NAMED)
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_update_equals_the_dense_sum_for_random_theta(reading, name, terms, seed):
    with jax.enable_x64(True):
        W, pre, post, e_pre, e_post = _random_layer(seed + 7, 6, 9)
        theta = np.random.default_rng(seed).normal(size=len(terms))
        pool = PAPER_POOLS[reading]
        want = W + sum(theta[i] * ref.term(r, W, pre, post, e_pre, e_post, reading) for i, r in enumerate(terms))
        j = [jnp.asarray(a) for a in (W, pre, post, e_pre, e_post)]
        got = layer_update(jnp.asarray(theta), terms, terms, *j, pool=pool)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)
        dense = j[0] + dense_update(jnp.asarray(theta), terms, *j, pool=pool)
        np.testing.assert_allclose(np.asarray(dense), want, rtol=1e-10, atol=1e-12)
        # a layer applying part of Θ's terms (per-layer rules)
        part = terms[: max(1, len(terms) // 2)]
        want_part = W + sum(theta[terms.index(r)] * ref.term(r, W, pre, post, e_pre, e_post, reading) for r in part)
        got_part = layer_update(jnp.asarray(theta), terms, part, *j, pool=pool)
        np.testing.assert_allclose(np.asarray(got_part), want_part, rtol=1e-10, atol=1e-12)


def test_fusion_groups_pairs_sharing_a_vector():
    W, pre, post, e_pre, e_post = (jnp.asarray(a) for a in _random_layer(2))
    theta = jnp.ones(10)
    pool_ids = tuple(range(10))
    # matrix reading: a preᵀ + b e_preᵀ + c (Wᵀpost)ᵀ, keep = 1 - θ3
    f = fuse(theta, pool_ids, pool_ids, Vectors(W, pre, post, e_pre, e_post), PAPER_POOL)
    assert f.keep is not None and len(f.outer) == 3 and not f.hadamard
    # element-wise: the same three outer pairs, and F6 | F7 + F8 as two Hadamard pairs
    f = fuse(theta, pool_ids, pool_ids, Vectors(W, pre, post, e_pre, e_post), ELEMENTWISE_POOL)
    assert f.keep is not None and len(f.outer) == 3 and len(f.hadamard) == 2
    f = fuse(theta[:2], (0, 9), (0, 9), Vectors(W, pre, post, e_pre, e_post), PAPER_POOL)
    assert f.keep is None and len(f.outer) == 2  # F0 and F9's post preᵀ share pre


# ----------------------------------------------------------------------------- a user's terms


@pytest.mark.parametrize("name", ["pre_decay", "hebb_sq", "err_gate"])
def test_user_term_matches_its_dense_formula(name):
    t = {u.name: u for u in USER_TERMS}[name]
    with jax.enable_x64(True):
        args = _random_layer(3, 6, 4)
        got = np.asarray(t(*(jnp.asarray(a) for a in args)))
        np.testing.assert_allclose(got, dense_user_term(name, *args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reading", ["matrix", "elementwise"])
@pytest.mark.parametrize("terms", [(10,), (0, 10), (0, 2, 9, 10, 11, 12), tuple(range(13)), (3, 6, 11, 12)])
def test_fused_update_with_a_user_pool_equals_the_dense_formulas(reading, terms):
    pool = with_reading(PAPER_POOL + USER_TERMS, reading)
    with jax.enable_x64(True):
        W, pre, post, e_pre, e_post = _random_layer(len(terms) + 20, 5, 8)
        theta = np.random.default_rng(len(terms)).normal(size=len(terms))
        want = W.copy()
        for i, r in enumerate(terms):
            if r < 10:
                want += theta[i] * ref.term(r, W, pre, post, e_pre, e_post, reading)
            else:
                want += theta[i] * dense_user_term(USER_TERMS[r - 10].name, W, pre, post, e_pre, e_post)
        j = [jnp.asarray(a) for a in (W, pre, post, e_pre, e_post)]
        got = layer_update(jnp.asarray(theta), terms, terms, *j, pool=pool)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)
        dense = j[0] + dense_update(jnp.asarray(theta), terms, *j, pool=pool)
        np.testing.assert_allclose(np.asarray(dense), want, rtol=1e-10, atol=1e-12)


def test_with_reading_swaps_only_the_papers_f5_to_f8():
    pool = PAPER_POOL + USER_TERMS
    ew = with_reading(pool, "elementwise")
    assert ew[:10] == ELEMENTWISE_POOL and ew[10:] == USER_TERMS
    assert with_reading(ew, "matrix") == pool
    with pytest.raises(ValueError):
        with_reading(pool, "nosuchreading")


def test_a_term_reading_an_undeclared_vector_is_an_error():
    @term("sneaky", reads=("pre",))
    def sneaky(v):
        return [Outer(v.post, v.pre)]

    W, pre, post, e_pre, e_post = (jnp.asarray(a) for a in _random_layer(4))
    with pytest.raises(TermError, match="reads 'post'"):
        sneaky(W, pre, post, e_pre, e_post)
    with pytest.raises(TermError, match="unknown vectors"):
        Term("bad", sneaky.factors, frozenset({"nonsense"}))

    @term("not_a_factor", reads=("pre",))
    def not_a_factor(v):
        return [v.pre]

    with pytest.raises(TermError, match="Outer, Scale or Hadamard"):
        not_a_factor(W, pre, post, e_pre, e_post)


def test_rules_with_a_user_pool_are_hashable_and_validated():
    pool = PAPER_POOL + USER_TERMS
    a = make_rule((0, 10), n_layers=2, pool=pool)
    b = make_rule((0, 10), n_layers=2, pool=pool)
    assert a == b and hash(a) == hash(b) and a.term_pool == pool
    assert make_rule((0, 10), n_layers=2, pool=pool, f5_f8="elementwise").term_pool[5] is ELEMENTWISE_POOL[5]
    assert make_rule((0, 5), n_layers=2, f5_f8="elementwise").term_pool == ELEMENTWISE_POOL
    assert make_rule((0,), n_layers=2).term_pool == PAPER_POOL
    with pytest.raises(ValueError, match="outside the pool"):
        make_rule((0, 13), n_layers=2, pool=pool)
    with pytest.raises(ValueError, match="outside the pool"):
        make_rule((0, 10), n_layers=2)
    with pytest.raises(ValueError, match="Term"):
        make_rule((0,), n_layers=2, pool=(lambda v: [],))


def test_vectors_dot_is_the_scalar_product_cached_and_checked():
    W, pre, post, e_pre, e_post = _random_layer(4)
    v = Vectors(jnp.asarray(W), *(jnp.asarray(a) for a in (pre, post, e_pre, e_post)))
    # against NumPy: one name is a sum, two a dot product, three the sum of the product
    np.testing.assert_allclose(v.dot("post"), post.sum(), rtol=1e-5)
    np.testing.assert_allclose(v.dot("wt_post", "e_pre"), (post @ W) @ e_pre, rtol=1e-5)
    np.testing.assert_allclose(v.dot("e_post", "z"), e_post @ (W @ pre), rtol=1e-5)
    np.testing.assert_allclose(v.dot("pre", "e_pre", "wt_post"), np.sum(pre * e_pre * (post @ W)), rtol=1e-5)
    # the same object for either order of the names, and listed in ``dots``
    assert v.dot("e_pre", "wt_post") is v.dot("wt_post", "e_pre")
    assert set(v.dots) == {("post",), ("e_pre", "wt_post"), ("e_post", "z"), ("e_pre", "pre", "wt_post")}
    # values handed in are used, not recomputed
    given = Vectors(None, *(jnp.asarray(a) for a in (pre, post, e_pre, e_post)), dots={("post",): jnp.float32(7.0)})
    assert float(given.dot("post")) == 7.0
    with pytest.raises(TermError, match="named vectors"):
        v.dot("nonsense")

    @term("sneaky_dot", reads=("pre", "e_post"))
    def sneaky_dot(v):
        return [Outer(v.dot("post") * v.e_post, v.pre)]

    with pytest.raises(TermError, match="reads 'post'"):
        sneaky_dot(*(jnp.asarray(a) for a in (W, pre, post, e_pre, e_post)))
