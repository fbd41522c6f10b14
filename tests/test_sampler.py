"""The episode sampler (docs/METHOD.md §4) and the digits source."""

import jax
import numpy as np
import pytest

from plastic_jax.data import build_class_index, load_dataset, sample_task


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_are_scaled_to_unit_interval_with_ten_classes(digits):
    assert digits.x.shape == (1797, 64) and digits.x.dtype == np.float32
    assert digits.x.min() == 0.0 and digits.x.max() == 1.0
    assert set(np.unique(digits.y)) == set(range(10)) and digits.n_classes == 10


@pytest.mark.parametrize("seed", range(5))
def test_task_has_distinct_classes_and_disjoint_train_and_query(digits, seed):
    ci = build_class_index(digits)
    M, K, Q = 5, 50, 10
    task = jax.jit(sample_task, static_argnums=(2, 3, 4))(jax.random.PRNGKey(seed), ci, M, K, Q)
    xs, ys, xq, yq = (np.asarray(a) for a in task)
    assert xs.shape == (M * K, 64) and xq.shape == (M * Q, 64)
    classes = np.unique(ys)
    assert len(classes) == M and set(np.unique(yq)) == set(classes)
    assert all((ys == c).sum() == K and (yq == c).sum() == Q for c in classes)
    # rows are images: recover their ids to check disjointness and that labels are the global ones
    lookup = {row.tobytes(): i for i, row in enumerate(digits.x)}
    ids_s = [lookup[r.tobytes()] for r in xs]
    ids_q = [lookup[r.tobytes()] for r in xq]
    assert len(set(ids_s)) == M * K and not set(ids_s) & set(ids_q)
    np.testing.assert_array_equal(digits.y[ids_s], ys)
    # the stream is shuffled, not grouped by class
    assert (np.diff(ys) != 0).sum() > M


def test_sampler_is_deterministic_for_a_key_and_varies_across_keys(digits):
    ci = build_class_index(digits)
    a = sample_task(jax.random.PRNGKey(1), ci, 5, 10, 2)
    b = sample_task(jax.random.PRNGKey(1), ci, 5, 10, 2)
    c = sample_task(jax.random.PRNGKey(2), ci, 5, 10, 2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert not np.array_equal(np.asarray(a.xs), np.asarray(c.xs))


def test_sampler_draws_only_allowed_classes(digits):
    ci = build_class_index(digits, classes=[1, 3, 5, 7, 9])
    for s in range(5):
        t = sample_task(jax.random.PRNGKey(s), ci, 5, 10, 2)
        assert set(np.unique(np.asarray(t.ys))) == {1, 3, 5, 7, 9}
