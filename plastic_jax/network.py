"""The learner network (docs/METHOD.md §1): a bias-free MLP with softplus(β=10) hidden units.

Weights are a tuple ``W = (W_1, ..., W_L)`` with ``W_l`` of shape ``(n_l, n_{l-1})``.
Feedback matrices ``B`` have the same structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

BETA = 10.0

Weights = tuple[jax.Array, ...]


def softplus(z: jax.Array, beta: float = BETA) -> jax.Array:
    """σ(z) = log(1 + exp(βz)) / β, computed stably."""
    return jax.nn.softplus(beta * z) / beta


def softplus_grad_from_y(y: jax.Array, beta: float = BETA) -> jax.Array:
    """σ'(z) expressed through the activation y = σ(z): 1 - exp(-βy)."""
    return -jnp.expm1(-beta * y)


def xavier_uniform(key: jax.Array, n_out: int, n_in: int, dtype=jnp.float32) -> jax.Array:
    """U(-r, r) with r = sqrt(6 / (n_in + n_out)); shape (n_out, n_in)."""
    r = (6.0 / (n_in + n_out)) ** 0.5
    return jax.random.uniform(key, (n_out, n_in), dtype, minval=-r, maxval=r)


def init_weights(key: jax.Array, sizes: Sequence[int], dtype=jnp.float32) -> Weights:
    """Xavier-uniform weights for layer sizes ``(n_0, ..., n_L)``."""
    keys = jax.random.split(key, len(sizes) - 1)
    return tuple(
        xavier_uniform(k, n_out, n_in, dtype)
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])
    )


def init_network(key: jax.Array, sizes: Sequence[int], dtype=jnp.float32) -> tuple[Weights, Weights]:
    """Fresh forward weights W and, independently, feedback matrices B."""
    kw, kb = jax.random.split(key)
    return init_weights(kw, sizes, dtype), init_weights(kb, sizes, dtype)


class Activations(NamedTuple):
    """One forward pass for a single input.

    ys: ``(y_0, ..., y_L)``; y_0 = x, y_l = σ(z_l) for 1 ≤ l < L, y_L = softmax(z_L).
    zs: ``(z_1, ..., z_L)``; z_L are the logits.
    """

    ys: tuple[jax.Array, ...]
    zs: tuple[jax.Array, ...]


def forward(W: Weights, x: jax.Array) -> Activations:
    """Forward pass; x has shape (n_0,) (or (batch, n_0): then every y, z gains that axis)."""
    ys = [x]
    zs = []
    y = x
    for i, w in enumerate(W):
        z = y @ w.T
        zs.append(z)
        y = jax.nn.softmax(z, axis=-1) if i == len(W) - 1 else softplus(z)
        ys.append(y)
    return Activations(tuple(ys), tuple(zs))
