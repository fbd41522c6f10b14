"""episode.py: one key, one episode — the same task, network and loss for every consumer, jitted or not."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, batch_loss, draw, mean_over_tasks, run, task_loss
from plastic_jax.inner import make_rule

SPEC = EpisodeSpec((64, 12, 10), M=3, K=4, Q=2, meta_batch=3)
RULE = make_rule((0, 2, 9), n_layers=2, feedback="fa")
THETA = jnp.array([0.05, -0.01, 0.01])


def _ci():
    return build_class_index(load_dataset("digits"))


class EpisodeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_draw_has_the_shapes_of_the_spec(self):
        ci = _ci()
        task, W, B = self.variant(lambda k: draw(SPEC, k, ci))(jax.random.PRNGKey(0))
        chex.assert_shape(task.xs, (SPEC.M * SPEC.K, 64))
        chex.assert_shape(task.xq, (SPEC.M * SPEC.Q, 64))
        chex.assert_shape((task.ys, task.yq), [(SPEC.M * SPEC.K,), (SPEC.M * SPEC.Q,)])
        chex.assert_shape(W, [(12, 64), (10, 12)])
        chex.assert_trees_all_equal_shapes(W, B)

    @chex.variants(with_jit=True, without_jit=True)
    def test_the_same_key_gives_the_same_episode(self):
        ci = _ci()
        f = self.variant(lambda k: run(THETA, RULE, SPEC, k, ci))
        a, b = f(jax.random.PRNGKey(4)), f(jax.random.PRNGKey(4))
        chex.assert_trees_all_close(a, b, rtol=0, atol=0)
        c = f(jax.random.PRNGKey(5))
        assert not np.array_equal(np.asarray(a.task.xs), np.asarray(c.task.xs))

    @chex.variants(with_jit=True, without_jit=True)
    def test_batch_loss_is_the_mean_of_the_task_losses_of_the_split_keys(self):
        ci = _ci()
        key = jax.random.PRNGKey(2)
        loss, acc = self.variant(lambda k: batch_loss(THETA, RULE, SPEC, k, ci))(key)
        per = [task_loss(THETA, RULE, SPEC, k, ci) for k in jax.random.split(key, SPEC.meta_batch)]
        chex.assert_trees_all_close((loss, acc), tuple(np.mean(np.array(per), axis=0)), rtol=1e-6)
        got = mean_over_tasks(lambda k: task_loss(THETA, RULE, SPEC, k, ci), SPEC, key)
        chex.assert_trees_all_close(got, (loss, acc), rtol=1e-6)
