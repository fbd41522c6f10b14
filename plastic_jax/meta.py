"""The outer loop (docs/METHOD.md §5): meta-loss, meta-gradient, and an optax meta-step.

Everything here is a pure function; the driver (``train.py``) jits and vmaps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from plastic_jax import checks
from plastic_jax.data.sampler import ClassIndex
from plastic_jax.episode import EpisodeSpec, batch_loss, task_loss  # noqa: F401 - re-exported
from plastic_jax.inner import Rule

#: a meta-gradient estimator (``estimators.py``): (theta, rule, spec, key, ci) -> ((loss, acc), grad)
Estimator = Callable[..., tuple[tuple[jax.Array, jax.Array], jax.Array]]


class MetaState(NamedTuple):
    """What meta-training carries from one episode to the next (per seed)."""

    theta: jax.Array  # (R,)
    opt_state: optax.OptState
    skips: jax.Array  # () int32: consecutive non-finite updates skipped


def l1_penalty(theta: jax.Array, l1: float, n: int | None = None) -> tuple[jax.Array, jax.Array]:
    """λ Σ_r |θ_r| and its subgradient λ·sign(θ) (0 at θ_r = 0, so an unused term stays put),
    over the first ``n`` entries of Θ (all when None): the plasticity coefficients
    (``Rule.n_plastic``), not the feedback mode's Θ^B or gate parameters, which are not
    penalised (docs/METHOD.md §9)."""
    if n is None or n == theta.shape[0]:
        return l1 * jnp.sum(jnp.abs(theta)), l1 * jnp.sign(theta)
    mask = (jnp.arange(theta.shape[0]) < n).astype(theta.dtype)
    return l1 * jnp.sum(jnp.abs(theta) * mask), l1 * jnp.sign(theta) * mask


def meta_init(theta: jax.Array, optimizer: optax.GradientTransformation) -> MetaState:
    """The state before the first meta-step: Θ, the optimizer's state for Θ, no skips."""
    if getattr(theta, "shape", None) is None or len(theta.shape) != 1:
        checks.fail("meta_init", f"theta must be a 1-D array (initial_theta(rule)), got {theta!r}")
    if not callable(getattr(optimizer, "init", None)):
        checks.fail("meta_init", f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))


def meta_step(
    state: MetaState,
    key: jax.Array,
    ci: ClassIndex,
    *,
    rule: Rule,
    spec: EpisodeSpec,
    optimizer: optax.GradientTransformation,
    l1: float = 0.0,
    estimator: Estimator,
) -> tuple[MetaState, dict[str, jax.Array]]:
    """One meta-training episode: meta-gradient of the meta-loss, one optimizer update.

    ``estimator`` is the meta-gradient function itself (e.g. ``estimators.forward_grad`` or
    ``estimators.ESTIMATORS["auto"]``); the meta-step knows nothing of how it works.

    A non-finite meta-loss, meta-gradient, new Θ or new optimizer state skips the update (Θ and
    the optimizer state stay) and increments ``skips``; a finite one resets it.

    Raises ``checks.PlasticJaxError`` (before tracing anything) when the state's Θ does not fit
    the rule, the rule the network of ``spec``, or ``spec`` the data ``ci``.
    """
    checks.check_meta_step("meta_step", state, rule, spec, ci, optimizer, l1, estimator)
    (loss, acc), grad = estimator(state.theta, rule, spec, key, ci)
    pen, pen_grad = l1_penalty(state.theta, l1, rule.n_plastic)
    grad = grad + pen_grad
    meta_loss = loss + pen
    updates, opt_state = optimizer.update(grad, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    # the optimizer state too: a finite but huge gradient overflows Adam's second moment (g² = inf in
    # float32) while Θ itself stays finite; such a state would poison every later update
    finite = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(opt_state) if jnp.issubdtype(a.dtype, jnp.inexact)]
    ok = jnp.isfinite(meta_loss) & jnp.all(jnp.isfinite(grad)) & jnp.all(jnp.isfinite(theta))
    ok = ok & jnp.all(jnp.stack(finite)) if finite else ok
    new = MetaState(theta, opt_state, jnp.zeros((), jnp.int32))
    old = state._replace(skips=state.skips + 1)
    state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    metrics = {"meta_loss": meta_loss, "query_loss": loss, "accuracy": acc, "skipped": ~ok}
    return state, metrics
