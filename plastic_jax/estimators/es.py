"""``es``: antithetic evolution strategies, the gradient of the Gaussian-smoothed meta-loss.

At some Θ the 250-step episode is chaotic: a 10⁻⁶ change of Θ grows 10³–10⁵-fold along the
episode, finite differences flip sign and the exact estimators (which all compute the same
dL/dΘ) give meta-gradient spikes (``sensitivity.py``, scripts/spike_study.py). ES estimates
instead the gradient of the smoothed meta-loss L_σ(Θ) = E_ε L(Θ + σε), ε ~ N(0, I) (Metz et al.
2019, "Understanding and correcting pathologies in the training of learned optimizers"):

    g = 1/(2σP) Σ_{p=1..P} [L(Θ + σε_p) − L(Θ − σε_p)] ε_p,

unbiased for ∇L_σ(Θ) = E_ε[∇L(Θ + σε)] (Stein's lemma), whose variance stays bounded where ∇L
itself explodes. It needs forward episodes only (2P + 1 of them: vmapped on an accelerator, one
after the other on a CPU, ``default_chunk``), so it works unchanged for every rule, feedback mode,
shared or per-layer Θ and meta-batch, and its memory does not grow with T (only the perturbed
networks in flight).

**Common random numbers.** Every perturbation sees the same tasks, streams, initial W and B: the
tasks come from ``key`` exactly as in every other estimator (``episode.mean_over_tasks``,
``episode.draw``), and ε from ``jax.random.fold_in(key, ES_FOLD)``, a stream of its own, so the
tasks do not change with it. The difference L(Θ + σε) − L(Θ − σε) therefore carries no task
noise, and the same ε is used for every task of the meta-batch.

**Not PES.** Persistent ES (Vicol et al. 2021) removes the bias of *truncated* unrolls, whose
state carries over between meta-steps; here every meta-step unrolls its whole episode from a
fresh network, so PES reduces to this estimator and is not implemented.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import jax
import jax.numpy as jnp

from plastic_jax import checks
from plastic_jax.episode import EpisodeSpec, _draw, check_episode, mean_over_tasks
from plastic_jax.estimators.base import Estimator, weight_copies_bytes
from plastic_jax.inner import Rule, _adapt_with_feedback, _query_loss

#: folded into the episode key for the perturbations ε (the tasks use the key itself)
ES_FOLD = 0x6573  # "es"
#: default σ. Θ starts at θ0 = 10⁻³ (the rest 0) and Adam (rate 10⁻³) moves every entry by about
#: 10⁻³ per meta-step; learned coefficients are 10⁻²-sized (bio: θ0 ≈ 0.01–0.02, θ2 ≈ −0.05,
#: docs/RESULTS.md). σ = 10⁻³ smooths over about one Adam step, a tenth of a learned coefficient,
#: and 100–1000× the scale at which chaotic episodes amplify a change of Θ (10⁻⁶ grows to
#: 10⁻³–10⁻¹), while keeping θ0 + σε positive for |ε| < 1 at the start. Measured on digits
#: (bio + fa, 64-170-130-100-70-10, T = 250, P = 8, 6 tasks): cosine with the exact gradient
#: 0.66–0.97 at the start and 0.89–1.0 at a learned Θ with σ = 10⁻³; with σ = 10⁻² at the start
#: −0.59–0.52, norms 6–107× the exact one and one NaN (a perturbed episode diverged)
ES_SIGMA = 1e-3
#: default number of antithetic pairs P (2P + 1 = 17 forward episodes per meta-step)
ES_PAIRS = 8


def default_chunk(n: int) -> int:
    """How many of the ``n`` = 2P + 1 episodes run at once when ``chunk`` is None: one at a time
    on a CPU, all of them (one vmapped scan) on an accelerator. On the shared 2-core CPU (one core,
    bio + fa, EMNIST sizes, T = 250, P = 8, process CPU time per meta-gradient) the 17 vmapped
    episodes took 1420–1650 ms, chunks of 4 780 ms, one at a time (a plain scan) 335 ms, about 16
    forward episodes: XLA's CPU batched matrix–vector products over 17 weight matrices are slower
    than 17 plain ones, and the perturbed networks share nothing that batching could reuse. Not
    measured on an accelerator."""
    return 1 if jax.default_backend() == "cpu" else n


def check_es_options(where: str, sigma: Any, pairs: Any, chunk: Any = None) -> tuple[float, int, int | None]:
    """(σ, P, chunk) as Python numbers; ``PlasticJaxError`` (one line) unless σ is a positive finite
    number, P an integer ≥ 1 and chunk None or an integer ≥ 1."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (math.isfinite(sigma) and sigma > 0):
        checks.fail(where, f"sigma must be a positive finite number, got {sigma!r}")
    pairs = checks.check_int(where, "pairs", pairs, 1)
    if chunk is not None:
        chunk = checks.check_int(where, "chunk", chunk, 1)
    return float(sigma), pairs, chunk


def es_directions(theta: jax.Array, key: jax.Array, pairs: int) -> jax.Array:
    """The perturbation directions ε_p ~ N(0, I) of the episode ``key``: (P, R), Θ's dtype; drawn
    from ``fold_in(key, ES_FOLD)``, so the episode's tasks (drawn from ``key``) do not change."""
    return jax.random.normal(jax.random.fold_in(key, ES_FOLD), (pairs, theta.shape[0]), theta.dtype)


def _es_losses(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: Any, eps: jax.Array,
              sigma: float, chunk: int | None = None) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """The meta-losses along the directions ``eps`` (P, R): ((loss, accuracy) at Θ, () each;
    losses (2, P) at Θ + σε_p (row 0) and Θ − σε_p (row 1)), each a mean over the meta-batch of
    ``key``'s tasks, every Θ on the same tasks. Unchecked: the public callers check once.

    The 2P + 1 episodes of a task run ``chunk`` at a time (vmapped; ``jax.lax.map`` over the
    chunks, which also bounds the memory); None: ``default_chunk`` (one at a time on a CPU, all at
    once elsewhere). The numbers do not depend on it beyond rounding.
    """
    P = eps.shape[0]
    thetas = jnp.concatenate([theta[None], theta + sigma * eps, theta - sigma * eps])  # (2P + 1, R)

    def per_task(k):
        task, W, B = _draw(spec, k, ci, theta.dtype, rule.feedback)

        def episode(th):
            W_T, _ = _adapt_with_feedback(th, rule, W, B, task.xs, task.ys)
            return _query_loss(W_T, task.xq, task.yq)

        n = thetas.shape[0]
        c = default_chunk(n) if chunk is None else chunk
        if c >= n:
            return jax.vmap(episode)(thetas)
        if c == 1:  # a scan over the perturbations: each episode as in batch_loss
            return jax.lax.map(episode, thetas)
        return jax.lax.map(episode, thetas, batch_size=c)

    losses, accs = mean_over_tasks(per_task, spec, key)  # (2P + 1,) each
    return (losses[0], accs[0]), losses[1:].reshape(2, P)


def es_samples(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: Any, *,
               sigma: float = ES_SIGMA, pairs: int = ES_PAIRS,
               chunk: int | None = None) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """The P per-pair estimates g_p = [L(Θ + σε_p) − L(Θ − σε_p)] / (2σ) · ε_p: ((loss, accuracy)
    at Θ, g (P, R)); ``es_grad`` is their mean, and their spread its standard error."""
    check_episode("es_samples", theta, rule, spec, ci)
    sigma, pairs, chunk = check_es_options("es_samples", sigma, pairs, chunk)
    return _es_samples(theta, rule, spec, key, ci, sigma, pairs, chunk)


def _es_samples(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: Any, sigma: float, pairs: int,
                chunk: int | None) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """``es_samples`` without the checks (the caller has made them)."""
    eps = es_directions(theta, key, pairs)
    center, losses = _es_losses(theta, rule, spec, key, ci, eps, sigma, chunk)
    return center, ((losses[0] - losses[1]) / (2 * sigma))[:, None] * eps


def es_grad(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: Any, *,
            sigma: float = ES_SIGMA, pairs: int = ES_PAIRS,
            chunk: int | None = None) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Antithetic ES: the gradient of the Gaussian-smoothed meta-loss L_σ(Θ) = E_ε L(Θ + σε).

    theta (R,) -> ((loss, accuracy), grad): loss and accuracy () are the meta-batch means **at the
    unperturbed Θ** (as every estimator reports them; it costs one forward episode more, 2P + 1
    in all), grad (R,) = 1/(2σP) Σ_p [L(Θ + σε_p) − L(Θ − σε_p)] ε_p, an unbiased estimate of
    ∇L_σ(Θ) (not of ∇L(Θ): the two differ by O(σ²) where L is smooth). ``sigma`` (σ > 0) and
    ``pairs`` (P ≥ 1) are static Python numbers; ``chunk`` is how many of the 2P + 1 episodes run
    at once (vmapped; None: ``default_chunk``, one at a time on a CPU, all on an accelerator).
    A non-finite loss at any perturbed Θ makes the gradient non-finite (``meta_step`` then skips).
    """
    check_episode("es_grad", theta, rule, spec, ci)
    sigma, pairs, chunk = check_es_options("es_grad", sigma, pairs, chunk)
    center, g = _es_samples(theta, rule, spec, key, ci, sigma, pairs, chunk)
    return center, jnp.mean(g, axis=0)


def es_memory(spec: EpisodeSpec, rule: Rule, pairs: int = ES_PAIRS, chunk: int | None = None, **_: Any) -> int:
    """The initial W and B, and W with its update for each of the episodes in flight (``chunk``
    of the 2P + 1; None: ``default_chunk``), per task: bytes."""
    n = 2 * operator.index(pairs) + 1
    live = min(n, default_chunk(n) if chunk is None else operator.index(chunk))
    return weight_copies_bytes(spec, 2 + 2 * live)


ESTIMATOR = Estimator(
    name="es",
    fn=es_grad,
    description="antithetic evolution strategies, the gradient of the meta-loss smoothed over N(Θ, σ²I): "
                "bounded variance on chaotic episodes, 2P+1 forward episodes (--es-sigma, --es-pairs)",
    memory=es_memory,
    options={"es_sigma": "sigma", "es_pairs": "pairs"},
    benchmark=False,
    exact=False,
    lower_memory="--es-pairs (on an accelerator all 2P + 1 episodes are in flight at once)",
)
