"""A user's plasticity terms, declared once for the tests that train with a user pool.

- ``pre_decay``: a presynaptic-activity-gated decay, a W ⊙ (a bᵀ) factor.
- ``post_err``: a heterosynaptic error term on the post-synaptic side, an outer product on a
  derived vector.
"""

import jax.numpy as jnp

from plastic_jax.plasticity import PAPER_POOL, Hadamard, Outer, term


@term("pre_decay", reads=("post", "pre"), formula="-W ⊙ (1 preᵀ)")
def pre_decay(v):
    return [Hadamard(-jnp.ones_like(v.post), v.pre)]


@term("post_err", reads=("post", "e_post", "e_pre"), formula="-(post ⊙ e_post) e_preᵀ")
def post_err(v):
    return [Outer(-v.prod("post", "e_post"), v.e_pre)]


USER_POOL = PAPER_POOL + (pre_decay, post_err)
