"""The outer loop (docs/METHOD.md §5): meta-loss, meta-gradient, and an optax meta-step.

Everything here is a pure function; the driver (``train.py``) jits and vmaps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from plastic_jax import checks
from plastic_jax.data.sampler import ClassIndex
from plastic_jax.episode import EpisodeSpec, batch_loss, check_episode, task_loss  # noqa: F401 - re-exported
from plastic_jax.inner import Rule

#: a meta-gradient estimator (``plastic_jax/estimators/``): (theta, rule, spec, key, ci) -> ((loss, acc), grad)
Estimator = Callable[..., tuple[tuple[jax.Array, jax.Array], jax.Array]]


class Guard(NamedTuple):
    """How a meta-step protects Θ from a bad meta-gradient (static: a hashable value, docs/RUNS.md).

    clip_factor: clip the meta-gradient's global norm at ``clip_factor`` × the median of the last
        ``window`` finite norms (each recorded as clipped, so one spike hardly moves the median while
        a lasting rise of the norms lifts it within half a window) (0: off). Relative to the run's
        own typical gradient, so nobody has to guess an absolute threshold.
    spike_factor: a meta-gradient whose norm exceeds ``spike_factor`` × that median is a spike
        (flagged in the metrics; 0: never). Spikes come from chaotic episodes.
    reject_spikes: skip the update of a spike (Θ and the optimizer state stay) instead of using it.
    rollback: on a non-finite update (loss, gradient, new Θ or optimizer state), return Θ and the
        optimizer state to the older of two snapshots (``snapshot_every`` … 2·``snapshot_every``
        accepted updates back) and multiply the step by ``backoff``; the step recovers by a factor
        2 over ``recover`` accepted updates. False: hold the last Θ (the skip guard).
    warmup: norms needed before clipping and spike detection act.
    """

    clip_factor: float = 0.0
    spike_factor: float = 0.0
    reject_spikes: bool = False
    rollback: bool = False
    window: int = 50
    warmup: int = 10
    snapshot_every: int = 25
    backoff: float = 0.5
    recover: int = 50


class GuardState(NamedTuple):
    """What ``Guard`` carries between meta-steps (per seed; all arrays, so it checkpoints)."""

    norms: jax.Array  # (window,) recent finite meta-gradient norms (capped at the clip), a ring buffer
    seen: jax.Array  # () int32: norms written so far (the ring buffer's write position)
    since: jax.Array  # () int32: accepted updates since the newer snapshot
    snap_new: tuple  # (theta, opt_state) at the newer snapshot
    snap_old: tuple  # (theta, opt_state) at the older snapshot: what a rollback restores
    step_scale: jax.Array  # () float32: the multiplier of the optimizer's step (1 = full)
    rollbacks: jax.Array  # () int32: rollbacks so far


class MetaState(NamedTuple):
    """What meta-training carries from one episode to the next (per seed)."""

    theta: jax.Array  # (R,)
    opt_state: optax.OptState
    skips: jax.Array  # () int32: consecutive updates not applied (non-finite, spike, rollback)
    guard: GuardState | None = None  # with a ``Guard`` (meta_init(..., guard=)), else None


def l1_penalty(theta: jax.Array, l1: float, n: int | None = None) -> tuple[jax.Array, jax.Array]:
    """λ Σ_r |θ_r| and its subgradient λ·sign(θ) (0 at θ_r = 0, so an unused term stays put),
    over the first ``n`` entries of Θ (all when None): the plasticity coefficients
    (``Rule.n_plastic``), not the feedback mode's Θ^B or gate parameters, which are not
    penalised (docs/METHOD.md §9)."""
    if n is None or n == theta.shape[0]:
        return l1 * jnp.sum(jnp.abs(theta)), l1 * jnp.sign(theta)
    mask = (jnp.arange(theta.shape[0]) < n).astype(theta.dtype)
    return l1 * jnp.sum(jnp.abs(theta) * mask), l1 * jnp.sign(theta) * mask


def guard_init(theta: jax.Array, opt_state: optax.OptState, guard: Guard) -> GuardState:
    """The guard's state before the first meta-step: no norms yet, both snapshots at the start."""
    snap = (theta, opt_state)
    return GuardState(jnp.zeros((guard.window,), jnp.float32), jnp.zeros((), jnp.int32),
                      jnp.zeros((), jnp.int32), snap, snap, jnp.ones((), jnp.float32), jnp.zeros((), jnp.int32))


def meta_init(theta: jax.Array, optimizer: optax.GradientTransformation, guard: Guard | None = None) -> MetaState:
    """The state before the first meta-step: Θ, the optimizer's state for Θ, no skips (and the
    guard's state when ``guard`` is given)."""
    if getattr(theta, "shape", None) is None or len(theta.shape) != 1:
        checks.fail("meta_init", f"theta must be a 1-D array (initial_theta(rule)), got {theta!r}")
    checks.check_finite_theta("meta_init", theta)
    if not callable(getattr(optimizer, "init", None)):
        checks.fail("meta_init", f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    if guard is not None and not isinstance(guard, Guard):
        checks.fail("meta_init", f"guard must be a meta.Guard, got {type(guard).__name__}")
    opt_state = optimizer.init(theta)
    return MetaState(theta, opt_state, jnp.zeros((), jnp.int32),
                     None if guard is None else guard_init(theta, opt_state, guard))


def tree_norm(tree: Any) -> jax.Array:
    """The global (Euclidean) norm of the leaves of ``tree``."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree)))


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def recent_median(norms: jax.Array, seen: jax.Array) -> jax.Array:
    """The median of the ring buffer ``norms`` (window,) once ``seen`` values were written (the
    first min(seen, window) entries hold them); NaN before the first."""
    window = norms.shape[0]
    n = jnp.minimum(seen, window)
    srt = jnp.sort(jnp.where(jnp.arange(window) < n, norms, jnp.inf))
    mid = 0.5 * (srt[jnp.maximum(n - 1, 0) // 2] + srt[n // 2 % window])
    return jnp.where(n > 0, mid, jnp.nan)


def second_moment_max(opt_state: optax.OptState) -> jax.Array:
    """max √ν over Adam's second moments in ``opt_state`` (NaN when it holds none): how far a
    past spike still shrinks the steps."""
    nus = [n for n in optax.tree_utils.tree_get_all_with_path(opt_state, "nu")]
    if not nus:
        return jnp.float32(jnp.nan)
    return jnp.sqrt(jnp.max(jnp.stack([jnp.max(jnp.asarray(v)) for _, v in nus])))


def check_meta_step(where: str, state: object, rule: Rule, spec: EpisodeSpec, ci: ClassIndex, optimizer: object,
                    l1: object, estimator: object) -> None:
    """The arguments of ``meta_step``: a ``MetaState`` whose Θ fits the episode
    (``episode.check_episode``), an optax optimizer, a callable estimator, ``l1`` >= 0."""
    if not isinstance(state, MetaState):
        checks.fail(where, f"state must be a meta.MetaState (meta_init(theta, optimizer)), got {type(state).__name__}")
    check_episode(where, state.theta, rule, spec, ci)
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        checks.fail(where, f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    if not callable(estimator):
        checks.fail(where, f"estimator must be a meta-gradient function (e.g. estimators.ESTIMATORS['auto']), "
                           f"got {estimator!r}")
    if isinstance(l1, (int, float)) and not (l1 >= 0):
        checks.fail(where, f"l1 must be >= 0, got {l1}")


def meta_step(
    state: MetaState,
    key: jax.Array,
    ci: ClassIndex,
    *,
    rule: Rule,
    spec: EpisodeSpec,
    optimizer: optax.GradientTransformation,
    l1: float | jax.Array = 0.0,
    estimator: Estimator,
    guard: Guard | None = None,
) -> tuple[MetaState, dict[str, jax.Array]]:
    """One meta-training episode: meta-gradient of the meta-loss, one optimizer update.

    ``estimator`` is the meta-gradient function itself (e.g. ``estimators.forward_grad`` or
    ``estimators.ESTIMATORS["auto"]``); the meta-step knows nothing of how it works. ``l1`` may be
    an array (a swept hyperparameter under ``vmap``).

    A non-finite meta-loss, meta-gradient, new Θ or new optimizer state is not applied and
    increments ``skips`` (an applied update resets it). Without ``guard`` Θ and the optimizer
    state stay. With a ``guard`` (its state from ``meta_init(..., guard=guard)``) the gradient is
    clipped relative to the run's own recent norms, spikes are flagged (and rejected), and a
    non-finite update rolls back to a snapshot (``Guard``).

    metrics: ``meta_loss``, ``query_loss``, ``accuracy``, ``skipped``; ``grad_norm`` (global norm
    of the meta-gradient with the L1 subgradient, before any clipping), ``update_norm`` (of the
    step applied; 0 when skipped), ``adam_nu_max`` (``second_moment_max`` after the step); with a
    guard also ``grad_norm_median``, ``clipped``, ``spike``, ``rolled_back``, ``step_scale``.

    Raises ``checks.PlasticJaxError`` (before tracing anything) when the state's Θ does not fit
    the rule, the rule the network of ``spec``, or ``spec`` the data ``ci``, or when ``guard`` and
    the state's guard do not go together.
    """
    check_meta_step("meta_step", state, rule, spec, ci, optimizer, l1, estimator)
    if (guard is None) != (state.guard is None):
        checks.fail("meta_step", "guard= and the state must go together: meta_init(theta, optimizer, guard=guard)"
                    if guard is not None else "the state carries a guard's state: pass guard= as to meta_init")
    if guard is not None and not isinstance(guard, Guard):
        checks.fail("meta_step", f"guard must be a meta.Guard, got {type(guard).__name__}")
    (loss, acc), grad = estimator(state.theta, rule, spec, key, ci)
    pen, pen_grad = l1_penalty(state.theta, l1, rule.n_plastic)
    grad = grad + pen_grad
    meta_loss = loss + pen
    norm = tree_norm(grad)
    metrics: dict[str, jax.Array] = {"meta_loss": meta_loss, "query_loss": loss, "accuracy": acc}
    if guard is not None:
        g = state.guard
        median = recent_median(g.norms, g.seen)
        ready = g.seen >= guard.warmup
        limit = jnp.where(ready & (guard.clip_factor > 0), guard.clip_factor * median, jnp.inf)
        spike = ready & (guard.spike_factor > 0) & (norm > guard.spike_factor * median)
        clipped = jnp.isfinite(norm) & (norm > limit)
        grad = jax.tree.map(lambda a: jnp.where(clipped, a * (limit / norm), a), grad)
    updates, opt_state = optimizer.update(grad, state.opt_state, state.theta)
    if guard is not None:
        updates = jax.tree.map(lambda u: u * g.step_scale, updates)
    theta = optax.apply_updates(state.theta, updates)
    # the optimizer state too: a finite but huge gradient overflows Adam's second moment (g² = inf in
    # float32) while Θ itself stays finite; such a state would poison every later update
    finite = jnp.isfinite(meta_loss) & jnp.all(jnp.isfinite(grad)) & jnp.all(jnp.isfinite(theta))
    finite = finite & _all_finite(opt_state)
    ok = finite
    if guard is None:
        new = MetaState(theta, opt_state, jnp.zeros((), jnp.int32))
        state = _select(ok, new, state._replace(skips=state.skips + 1))
    else:
        ok = finite & ~spike if guard.reject_spikes else finite
        state, rolled = _guarded(guard, state, theta, opt_state, jnp.minimum(norm, limit), ok, finite)
        metrics.update(grad_norm_median=median, clipped=clipped & ok, spike=spike, rolled_back=rolled,
                       step_scale=state.guard.step_scale)
    metrics.update(skipped=~ok, grad_norm=norm, update_norm=jnp.where(ok, tree_norm(updates), 0.0),
                   adam_nu_max=second_moment_max(state.opt_state))
    return state, metrics


def _select(ok: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)


def _guarded(guard: Guard, state: MetaState, theta: jax.Array, opt_state: optax.OptState, norm: jax.Array,
             ok: jax.Array, finite: jax.Array) -> tuple[MetaState, jax.Array]:
    """The guard's transition. Every finite ``norm`` (already capped at the clip) enters the ring
    buffer. Accepted (``ok``): the new Θ and optimizer state, maybe a snapshot, the step recovers.
    Not accepted: a finite spike holds Θ; a non-finite update rolls back (or holds)."""
    g = state.guard
    g = g._replace(norms=jnp.where(finite, g.norms.at[g.seen % guard.window].set(norm), g.norms),
                   seen=g.seen + finite.astype(jnp.int32))
    since = g.since + 1
    take = since >= guard.snapshot_every
    accepted_guard = g._replace(
        since=jnp.where(take, 0, since),
        snap_new=_select(take, (theta, opt_state), g.snap_new),
        snap_old=_select(take, g.snap_new, g.snap_old),
        step_scale=jnp.minimum(1.0, g.step_scale * 2.0 ** (1.0 / guard.recover)).astype(jnp.float32),
    )
    accepted = MetaState(theta, opt_state, jnp.zeros((), jnp.int32), accepted_guard)
    held = state._replace(skips=state.skips + 1, guard=g)
    if not guard.rollback:
        return _select(ok, accepted, held), jnp.bool_(False)
    back_theta, back_opt = g.snap_old
    rolled_guard = g._replace(since=jnp.zeros((), jnp.int32), snap_new=g.snap_old,
                              step_scale=(g.step_scale * guard.backoff).astype(jnp.float32), rollbacks=g.rollbacks + 1)
    rolled = MetaState(back_theta, back_opt, state.skips + 1, rolled_guard)
    roll = ~finite
    return _select(ok, accepted, _select(roll, rolled, held)), roll
