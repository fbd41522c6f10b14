"""Each plasticity term and the fused update against the literal dense formulas of SPEC §3."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from plastic_jax.plasticity import RULES, TERMS, RuleError, dense_update, layer_update, parse_terms


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


@pytest.mark.parametrize("bad", ["nosuchrule", "0,10", "-1", "0,,x", ""])
def test_parse_terms_rejects_unknown_rules_and_ids(bad):
    with pytest.raises(RuleError):
        parse_terms(bad)
