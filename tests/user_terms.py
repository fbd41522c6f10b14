"""A user's plasticity terms, declared once for the tests that train with a user pool.

- ``pre_decay``: a presynaptic-activity-gated decay, a W ⊙ (a bᵀ) factor.
- ``post_err``: a heterosynaptic error term on the post-synaptic side, an outer product on a
  derived vector.
- ``dot_terms``: outer products scaled by scalar products (``v.dot``) of one, two (the same
  vector twice) and three named vectors; ``1ᵀpre`` at the first layer is a constant (the input).
"""

import jax.numpy as jnp

from plastic_jax.plasticity import PAPER_POOL, Hadamard, Outer, term


@term("pre_decay", reads=("post", "pre"), formula="-W ⊙ (1 preᵀ)")
def pre_decay(v):
    return [Hadamard(-jnp.ones_like(v.post), v.pre)]


@term("post_err", reads=("post", "e_post", "e_pre"), formula="-(post ⊙ e_post) e_preᵀ")
def post_err(v):
    return [Outer(-v.prod("post", "e_post"), v.e_pre)]


@term("dot_terms", reads=("pre", "post", "e_pre", "e_post", "wt_post"),
      formula="-(postᵀpost) e_post preᵀ - (Σ pre ⊙ e_pre ⊙ Wᵀpost) post e_preᵀ - (1ᵀpre) e_post e_preᵀ")
def dot_terms(v):
    return [Outer(-v.dot("post", "post") * v.e_post, v.pre),
            Outer(-v.dot("pre", "e_pre", "wt_post") * v.post, v.e_pre),
            Outer(-v.dot("pre") * v.e_post, v.e_pre)]


USER_POOL = PAPER_POOL + (pre_decay, post_err, dot_terms)
