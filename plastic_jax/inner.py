"""The inner loop (docs/METHOD.md §4): online adaptation as one ``lax.scan`` over the stream.

A ``Rule`` (static) names the active terms per layer, the feedback mode, the two reading
choices and, optionally, a user's pool of terms; Θ is an array. Drawing a whole episode (task,
fresh network, query loss) lives in ``episode.py``.

**Checks.** The rule's argument checks live here (``check_rule``, ``check_theta``,
``check_weights``): each public function calls them once, first, and raises
``checks.PlasticJaxError`` (one line); the work is done by unchecked private functions
(``_adapt_with_feedback``, ``_query_loss``) that ``episode.py`` calls after its own checks. The
checks read static shapes and Python values, so they run at trace time and cost nothing inside a
compiled program; the one value check, a non-finite Θ, runs only when Θ is concrete
(``checks.check_finite_theta``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from plastic_jax import checks
from plastic_jax.feedback import (
    BP_GRADS,
    DIRECT_MODES,
    FEEDBACK_MODES,
    STATEFUL_MODES,
    feedback_fused,
    feedback_labels,
    feedback_shapes,
    n_feedback_params,
    signals,
)
from plastic_jax.network import Weights, forward
from plastic_jax.plasticity import (
    PAPER_POOLS,
    Pool,
    Term,
    Vectors,
    apply_fused,
    fuse,
    parse_terms,
    union_terms,
    with_reading,
)

#: readings of terms F5–F8 (docs/METHOD.md §3)
F5_F8_READINGS = tuple(PAPER_POOLS)


class Rule(NamedTuple):
    """Static description of a plasticity rule (hashable: usable as a jit static argument).

    layer_terms: one tuple of term ids per weight layer (L entries).
    feedback: a feedback pathway (``feedback.FEEDBACK_MODES``: ``"bp"``, ``"fa"``, ``"dfa"``,
      ``"sign"``, ``"kp"``, ``"plastic"``, ``"routing"``; docs/METHOD.md §9). ``plastic`` and
      ``routing`` add their meta-parameters (Θ^B, the gates' φ) after the plasticity
      coefficients in Θ (``n_feedback``).
    bp_grad: with ``bp``, ``"frozen"`` (the paper's code: the meta-gradient holds B = W constant)
      or ``"through"`` (the exact gradient through B = W); see ``feedback.feedback_matrices``.
    f5_f8: the reading of terms F5–F8, ``"matrix"`` or ``"elementwise"`` (docs/METHOD.md §3).
    pool: the terms the ids index into: None for the paper's ten, or a user's tuple of
      ``plasticity.Term`` (hashable by identity). The paper's F5–F8, where they appear in it,
      follow ``f5_f8`` (``plasticity.with_reading``); ``term_pool`` is the pool in effect.
    per_layer: every layer has its own row of coefficients (the paper's Discussion proposes
      relaxing the sharing). Θ is then flat, shape (L·R,) with R = len(terms), layer-major:
      Θ[ℓ·R + j] is the coefficient of term ``terms[j]`` in weight layer ℓ (0-based);
      ``layer_theta`` slices a layer's row. False (the paper's): Θ (R,) shared by every layer.
    """

    layer_terms: tuple[tuple[int, ...], ...]
    feedback: str = "fa"
    bp_grad: str = "frozen"
    f5_f8: str = "matrix"
    pool: Pool | None = None
    per_layer: bool = False

    @property
    def term_pool(self) -> Pool:
        """The terms Θ's ids index into, F5–F8 in the rule's reading."""
        return with_reading(PAPER_POOLS["matrix"] if self.pool is None else self.pool, self.f5_f8)

    @property
    def terms(self) -> tuple[int, ...]:
        """The entries of Θ: the union of the layers' terms, sorted."""
        return union_terms(self.layer_terms)

    @property
    def n_layers(self) -> int:
        return len(self.layer_terms)

    @property
    def n_plastic(self) -> int:
        """Plasticity coefficients in Θ: R = len(terms), or L·R with ``per_layer``."""
        return len(self.terms) * (self.n_layers if self.per_layer else 1)

    @property
    def n_feedback(self) -> int:
        """The feedback mode's meta-parameters after them (``feedback.n_feedback_params``)."""
        return n_feedback_params(self.feedback, self.n_layers)

    @property
    def n_theta(self) -> int:
        """Entries of Θ: ``n_plastic`` + ``n_feedback``."""
        return self.n_plastic + self.n_feedback

    def plastic_theta(self, theta: jax.Array) -> jax.Array:
        """The plasticity coefficients of Θ (its first ``n_plastic`` entries)."""
        return theta[:self.n_plastic] if self.n_feedback else theta

    def feedback_params(self, theta: jax.Array) -> jax.Array | None:
        """The feedback mode's meta-parameters (Θ^B or the gates' φ), or None."""
        return theta[self.n_plastic:] if self.n_feedback else None

    def layer_theta(self, theta: jax.Array, layer: int) -> jax.Array:
        """The coefficients weight layer ``layer`` (0-based) applies, indexed like ``terms``:
        the plasticity part of Θ when shared, its row Θ[ℓ·R:(ℓ+1)·R] with ``per_layer``."""
        if not self.per_layer:
            return self.plastic_theta(theta)
        R = len(self.terms)
        return theta[layer * R:(layer + 1) * R]

    def theta_labels(self) -> tuple[str, ...]:
        """One label per entry of Θ, as metrics.jsonl and summary.json key it: "F<id>" ("F0"), with
        ``per_layer`` "F<id>@<layer>", the layer 1-based ("F0@1", "F2@1", …, "F0@2", …, layer-major
        like Θ); then the feedback mode's (``feedback.feedback_labels``: "B:kp", "gate@0", …)."""
        names = [f"F{r}" for r in self.terms]
        if self.per_layer:
            names = [f"{n}@{l + 1}" for l in range(self.n_layers) for n in names]
        return tuple(names) + feedback_labels(self.feedback, self.n_layers)


# ----------------------------------------------------------------------------- checks


def check_rule(where: str, rule: object) -> None:
    """``rule`` is a ``Rule`` (as ``make_rule`` builds) with at least one term."""
    if not isinstance(rule, Rule):
        checks.fail(where, f"rule must be an inner.Rule (build it with make_rule), got {type(rule).__name__}")
    if not rule.layer_terms:
        checks.fail(where, "the rule has no layers")
    if not rule.terms:
        checks.fail(where, "the rule has no terms")


def theta_shape(rule: Rule) -> tuple[int, ...]:
    """The shape Θ must have for ``rule``: (``rule.n_theta``,), one entry per term (per layer
    with ``per_layer``), then the feedback mode's meta-parameters."""
    return (rule.n_theta,)


def check_theta(where: str, theta: object, rule: object) -> None:
    """``rule`` is a ``Rule`` and Θ a floating array of shape ``theta_shape(rule)``, finite when
    concrete (``checks.check_finite_theta``; under ``jit`` a non-finite Θ gives NaN instead)."""
    check_rule(where, rule)
    shape, dtype = getattr(theta, "shape", None), getattr(theta, "dtype", None)
    if shape is None or dtype is None:
        checks.fail(where, f"theta must be a JAX or NumPy array, got {type(theta).__name__} "
                           "(use initial_theta(rule) or jnp.asarray)")
    if not jnp.issubdtype(dtype, jnp.floating):
        checks.fail(where, f"theta must be a floating-point array, got dtype {dtype}")
    want = theta_shape(rule)
    if tuple(shape) != want:
        checks.fail(where, f"theta has shape {tuple(shape)} but the rule needs shape {want} "
                           f"(entries {', '.join(rule.theta_labels())})")
    checks.check_finite_theta(where, theta, rule)


def check_weights(where: str, rule: Rule, W: Sequence[jax.Array], B: Sequence[jax.Array] | None = None) -> None:
    """W (and B) are one (n_ℓ, n_{ℓ-1}) matrix per layer of ``rule``, chained; B is the feedback
    state of ``rule.feedback`` for them (``feedback.feedback_shapes``)."""
    if not isinstance(W, (tuple, list)):
        checks.fail(where, f"W must be a tuple of weight matrices, got {type(W).__name__}")
    if len(W) != rule.n_layers:
        checks.fail(where, f"the rule has {rule.n_layers} layer(s) but W has {len(W)} weight matrices")
    shapes = [tuple(w.shape) for w in W]
    if any(len(s) != 2 for s in shapes) or any(a[0] != b[1] for a, b in zip(shapes, shapes[1:])):
        checks.fail(where, f"W must be chained (n_l, n_(l-1)) matrices, got shapes {shapes}")
    if B is not None:
        sizes = [shapes[0][1]] + [s[0] for s in shapes]
        want = feedback_shapes(rule.feedback, sizes)
        if not isinstance(B, (tuple, list)) or [tuple(b.shape) for b in B] != want:
            got = [tuple(b.shape) for b in B] if isinstance(B, (tuple, list)) else type(B).__name__
            what = (f"W's shapes then the direct matrices (feedback {rule.feedback!r}: draw them with "
                    "episode.draw or feedback.init_direct)" if rule.feedback in DIRECT_MODES else "W's shapes")
            checks.fail(where, f"B must match {what} {want}, got {got}")


# ----------------------------------------------------------------------------- rules and the inner loop


def make_rule(
    terms: str | Sequence[int] | None = None,
    n_layers: int | None = None,
    feedback: str = "fa",
    layer_terms: Sequence[str | Sequence[int]] | None = None,
    *,
    bp_grad: str = "frozen",
    f5_f8: str = "matrix",
    pool: Sequence[Term] | None = None,
    per_layer: bool = False,
) -> Rule:
    """A rule shared by all ``n_layers`` layers (``terms``), or a per-layer one (``layer_terms``).

    terms: a named rule (``"bio"``: see ``plasticity.RULES``), a comma list (``"0,2,9"``,
      ``"F0,F2"``) or a sequence of term ids (``(0, 2, 9)``). layer_terms: one such entry per
      weight layer, instead of ``terms`` (a layer may have no terms; the rule as a whole needs one).
    n_layers: the number of weight layers (default 5; with ``layer_terms``, ``len(layer_terms)``).
    feedback: ``"fa"`` or ``"bp"``; bp_grad: ``"frozen"`` or ``"through"``; f5_f8: ``"matrix"`` or
      ``"elementwise"`` (see ``Rule``).
    pool: a user's terms (``plasticity.Term``), e.g. ``PAPER_POOL + (my_term,)``; term ids
      index into it. None: the paper's ten terms.
    per_layer: one row of Θ per weight layer instead of one Θ shared by all (``Rule.per_layer``).

    Raises ``checks.PlasticJaxError`` (a ``ValueError``, one line) for an unknown rule name or
    term id (``plasticity.RuleError``, from ``plasticity.parse_terms``), terms given both ways or
    not at all, a bad ``n_layers`` or an unknown choice.
    """
    where = "make_rule"
    for name, value, allowed in (("feedback", feedback, FEEDBACK_MODES), ("bp_grad", bp_grad, BP_GRADS),
                                 ("f5_f8", f5_f8, F5_F8_READINGS)):
        if value not in allowed:
            checks.fail(where, f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    if pool is not None:
        try:
            pool = tuple(pool)
        except TypeError:
            checks.fail(where, f"a pool is a non-empty sequence of plasticity.Term, got {pool!r}")
        bad = [t for t in pool if not isinstance(t, Term)]
        if bad or not pool:
            checks.fail(where, f"a pool is a non-empty sequence of plasticity.Term, got {bad or pool!r}")
    n = len(PAPER_POOLS["matrix"] if pool is None else pool)
    if (terms is None) == (layer_terms is None):
        checks.fail(where, "give either terms (one rule for every layer) or layer_terms (one entry per layer)"
                    + (", not both" if terms is not None else ""))
    if layer_terms is None:
        n_layers = checks.check_int(where, "n_layers", 5 if n_layers is None else n_layers, 1)
        layer_terms = (parse_terms(terms, n, where=where, empty_ok=True),) * n_layers
    else:
        if isinstance(layer_terms, str):
            checks.fail(where, f"layer_terms must be a sequence with one entry per layer, got {layer_terms!r}")
        layer_terms = tuple(parse_terms(t, n, where=where, empty_ok=True) for t in layer_terms)
        if not layer_terms:
            checks.fail(where, "layer_terms is empty: give one entry per weight layer")
        if n_layers is not None and checks.check_int(where, "n_layers", n_layers, 1) != len(layer_terms):
            checks.fail(where, f"n_layers={n_layers} but layer_terms has {len(layer_terms)} entries")
    if not union_terms(layer_terms):
        checks.fail(where, "the rule has no terms; give at least one term id")
    return Rule(layer_terms, feedback, bp_grad, f5_f8, pool, bool(per_layer))


def initial_theta(rule: Rule, dtype=jnp.float32, theta0: float = 1e-3) -> jax.Array:
    """docs/METHOD.md §5: θ_0 = 1e-3, every other θ_r = 0; shape (rule.n_theta,) (with
    ``per_layer`` every layer's row starts so). The feedback mode's meta-parameters start at 0
    (Θ^B = 0: ``plastic`` starts as ``fa``; φ = 0: every routing gate at ½).

    Raises ``checks.PlasticJaxError`` for a non-floating ``dtype`` or a ``theta0`` that is not a
    finite number in ``dtype`` (NaN, ±inf, 1e39 in float32); a traced ``theta0`` is not checked."""
    check_rule("initial_theta", rule)
    if not jnp.issubdtype(dtype, jnp.floating):
        checks.fail("initial_theta", f"dtype must be a floating-point type, got {jnp.dtype(dtype)}")
    if not checks.is_tracer(theta0):
        if isinstance(theta0, (bool, str, bytes)) or jnp.ndim(theta0) != 0:
            checks.fail("initial_theta", f"theta0 must be a finite number, got {theta0!r}")
        try:
            v = float(theta0)
        except (TypeError, ValueError):
            checks.fail("initial_theta", f"theta0 must be a finite number, got {theta0!r}")
        if not abs(v) <= float(jnp.finfo(dtype).max):  # NaN fails too
            checks.fail("initial_theta", f"theta0 must be a finite number in {jnp.dtype(dtype)}, got {theta0!r}")
    row = [theta0 if r == 0 else 0.0 for r in rule.terms]
    return jnp.array(row * (rule.n_layers if rule.per_layer else 1) + [0.0] * rule.n_feedback, dtype)


def step_factors(theta: jax.Array, rule: Rule, W: Weights, B: Weights, x: jax.Array, label: jax.Array):
    """One online step's ingredients: each layer's fused update of W (``plasticity.Fused``) and,
    for the modes whose B changes (``kp``, ``plastic``), each layer's fused update of B (else
    None). Shapes as ``online_step``."""
    act = forward(W, x)
    pool = rule.term_pool
    need_e0 = any(pool[r].needs_e_pre for r in rule.layer_terms[0])
    phi = rule.feedback_params(theta)
    es = signals(rule.feedback, W, B, phi, act, label, need_e0=need_e0, bp_grad=rule.bp_grad)
    fW, fB = [], []
    for i in range(len(W)):
        v = Vectors(W[i], act.ys[i], act.ys[i + 1], es[i], es[i + 1], act.zs[i])
        f = fuse(rule.layer_theta(theta, i), rule.terms, rule.layer_terms[i], v, pool)
        fW.append(f)
        if rule.feedback in STATEFUL_MODES:
            fB.append(feedback_fused(rule.feedback, f, phi, es[i + 1], act.ys[i]))
    return tuple(fW), (tuple(fB) if fB else None)


def state_step(
    theta: jax.Array, rule: Rule, W: Weights, B: Weights, x: jax.Array, label: jax.Array
) -> tuple[Weights, Weights]:
    """``online_step`` and the feedback state's own step: (new W, new B). B is returned unchanged
    except under ``kp`` and ``plastic`` (``feedback.feedback_fused``), where its first L matrices
    change."""
    fW, fB = step_factors(theta, rule, W, B, x, label)
    new_W = tuple(apply_fused(w, f) for w, f in zip(W, fW))
    if fB is None:
        return new_W, B
    L = len(W)
    return new_W, tuple(apply_fused(b, f) for b, f in zip(B[:L], fB)) + tuple(B[L:])


def online_step(
    theta: jax.Array,
    rule: Rule,
    W: Weights,
    B: Weights,
    x: jax.Array,
    label: jax.Array,
) -> Weights:
    """One online update: forward, teaching signals, W_l ← W_l + Σ θ_r F^r for every layer.

    W: tuple of (n_ℓ, n_{ℓ-1}); B: the feedback state (``feedback.feedback_shapes``: W's shapes,
    plus the direct matrices for ``dfa``/``routing``); theta (rule.n_theta,); x: (n_0,),
    label: () int. All layers use the pre-update weights and errors; the update of each layer is
    built from the declarations of ``rule.term_pool`` (``plasticity.fuse``). Returns the new W
    (``state_step`` also returns the new B of ``kp``/``plastic``).
    """
    check_theta("online_step", theta, rule)
    check_weights("online_step", rule, W, B)
    checks.check_stream("online_step", W, x, label, stream=False)
    fW, _ = step_factors(theta, rule, W, B, x, label)
    return tuple(apply_fused(w, f) for w, f in zip(W, fW))


def adapt_with_feedback(
    theta: jax.Array, rule: Rule, W: Weights, B: Weights, xs: jax.Array, labels: jax.Array
) -> tuple[Weights, Weights]:
    """Online learning over the stream xs (T, n_0), labels (T,): the adapted (W, B) (B changes
    only under ``kp`` and ``plastic``)."""
    check_theta("adapt", theta, rule)
    check_weights("adapt", rule, W, B)
    checks.check_stream("adapt", W, xs, labels, stream=True)
    return _adapt_with_feedback(theta, rule, W, B, xs, labels)


def _adapt_with_feedback(
    theta: jax.Array, rule: Rule, W: Weights, B: Weights, xs: jax.Array, labels: jax.Array
) -> tuple[Weights, Weights]:
    """``adapt_with_feedback`` without the checks (the caller has made them)."""
    B = tuple(B)

    def body(WB, xy):
        return state_step(theta, rule, *WB, *xy), None

    (W, B), _ = jax.lax.scan(body, (tuple(W), B), (xs, labels))
    return W, B


def adapt(
    theta: jax.Array, rule: Rule, W: Weights, B: Weights, xs: jax.Array, labels: jax.Array
) -> Weights:
    """Online learning over the stream: xs (T, n_0), labels (T,). Returns the adapted W."""
    return adapt_with_feedback(theta, rule, W, B, xs, labels)[0]


def query_loss(W: Weights, xq: jax.Array, yq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy of W on the query set xq (N, n_0), yq (N,); the accuracy is
    NaN when any output is not finite (never a plausible number from a diverged network)."""
    if not isinstance(W, (tuple, list)) or not W:
        checks.fail("query_loss", f"W must be a non-empty tuple of weight matrices, got {type(W).__name__}")
    checks.check_stream("query_loss", W, xq, yq, stream=True, names=("xq", "yq"))
    return _query_loss(W, xq, yq)


def _query_loss(W: Weights, xq: jax.Array, yq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``query_loss`` without the checks (the caller has made them)."""
    z = forward(W, xq).zs[-1]
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, yq))
    # argmax of NaN logits is 0, a plausible class: an accuracy of non-finite outputs is NaN
    acc = jnp.where(jnp.all(jnp.isfinite(z)), jnp.mean(jnp.argmax(z, axis=-1) == yq), jnp.nan)
    return loss, acc
