"""plastic_jax: meta-learning biologically plausible plasticity rules in JAX.

A deep network learns online, one example at a time, through fixed random feedback; its
weights change by Σ_r θ_r F^r over local plasticity terms F^r; Θ is meta-learned by
differentiating through the whole episode (Shervani-Tabar & Rosenbaum, Nat. Commun. 2023).
README.md, "Use it from Python", shows these names at work; docs/METHOD.md explains the method.

The public API (``plastic_jax.__all__``). Each name is imported on first use, so
``import plastic_jax`` itself stays instant and loads no JAX:

Rules (``inner``, ``plasticity``)
  make_rule, Rule, initial_theta: a rule (named, e.g. ``"bio"``, term ids, per-layer terms, a
  user's pool) and its starting Θ. RULES: the named rules (name -> term ids). parse_terms: term
  ids from a name or a comma list. PAPER_POOL, ELEMENTWISE_POOL: the paper's ten terms F0-F9
  (F5-F8 in the matrix or the element-wise reading). Term, term, Outer, Scale, Hadamard: declare
  your own term (docs/METHOD.md §3) and pass ``pool=PAPER_POOL + (my_term,)`` to make_rule.
The network and the inner loop (``network``, ``inner``)
  init_network: Xavier-uniform W and feedback B. online_step, adapt, query_loss: one online
  update, a whole stream (one ``lax.scan``), the query loss and accuracy.
Episodes (``episode``)
  EpisodeSpec: layer sizes, M-way, K shots, Q queries, meta-batch. draw: the task and the fresh
  network of a key. run_episode: draw, adapt, measure (``episode.run``). task_loss, batch_loss:
  one task's, a meta-batch's query loss and accuracy.
Meta-gradients and the meta-step (``estimators``, ``meta``)
  ESTIMATORS: the meta-gradient estimators by name (``"auto"``, ``"forward"``, ``"reverse"``,
  ...), all ``(theta, rule, spec, key, ci) -> ((loss, accuracy), grad)``. MetaState, meta_init,
  meta_step: an optax meta-step with its telemetry; Guard: relative clipping, spike rejection
  and rollback for it. replay_episode: the exact tasks, initial weights and Θ of one meta-step
  of a run (``replay``).
Data (``data``)
  load_dataset: ``"digits"``, ``"emnist"``, ``"glyphs"`` or the path of your own ``.npz``;
  load_npz: that loader. Dataset, Task, ClassIndex, build_class_index, sample_task: the data in
  memory, one episode's data, the per-class index tasks are drawn from (restricted to a class
  split), the jittable sampler.
Evaluation and analysis (``evaluate``, ``metrics``)
  task_accuracies: query accuracy of many Θ on many tasks, one jitted call. evaluate_rule,
  evaluate_run: the CLI's meta-test on held-out classes against f0+bp and f0+fa (and f0
  with the run's own feedback for the other modes), as a dict.
  episode_analysis, alignment_angles, orthonormality_errors: what the paper measures.
Runs from a config (``config``, ``experiment``, ``train``)
  TrainConfig: every setting of a run. build_experiment: the data, class index, rule and spec of
  a config (``experiment.build``); Experiment: what it returns. meta_train: the CLI's
  ``meta-train`` as a function (writes the run directory).
Errors
  PlasticJaxError: a public function called with arguments that cannot work (a ValueError).
  RuleError: an unknown rule or term id (a PlasticJaxError). ConfigError: a bad setting.
  DataUnavailableError: a dataset that is missing or a data file that is malformed. Every
  message is one line.

Submodules (``plastic_jax.episode``, ``plastic_jax.meta``, ...) are importable as before and are
also loaded on attribute access.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (import time)

__version__ = "0.1.0"

#: public name -> (module, attribute): the single place the API is declared
_EXPORTS: dict[str, tuple[str, str]] = {
    # rules
    "make_rule": ("inner", "make_rule"),
    "Rule": ("inner", "Rule"),
    "initial_theta": ("inner", "initial_theta"),
    "RULES": ("plasticity", "RULES"),
    "parse_terms": ("plasticity", "parse_terms"),
    "PAPER_POOL": ("plasticity", "PAPER_POOL"),
    "ELEMENTWISE_POOL": ("plasticity", "ELEMENTWISE_POOL"),
    "Term": ("plasticity", "Term"),
    "term": ("plasticity", "term"),
    "Outer": ("plasticity", "Outer"),
    "Scale": ("plasticity", "Scale"),
    "Hadamard": ("plasticity", "Hadamard"),
    # the network and the inner loop
    "init_network": ("network", "init_network"),
    "online_step": ("inner", "online_step"),
    "adapt": ("inner", "adapt"),
    "query_loss": ("inner", "query_loss"),
    # episodes
    "EpisodeSpec": ("episode", "EpisodeSpec"),
    "draw": ("episode", "draw"),
    "run_episode": ("episode", "run"),
    "task_loss": ("episode", "task_loss"),
    "batch_loss": ("episode", "batch_loss"),
    # meta-gradients and the meta-step
    "ESTIMATORS": ("estimators", "ESTIMATORS"),
    "MetaState": ("meta", "MetaState"),
    "meta_init": ("meta", "meta_init"),
    "meta_step": ("meta", "meta_step"),
    "Guard": ("meta", "Guard"),
    "replay_episode": ("replay", "replay_episode"),
    # data
    "load_dataset": ("data", "load_dataset"),
    "load_npz": ("data.npz", "load_npz"),
    "Dataset": ("data.base", "Dataset"),
    "Task": ("data.base", "Task"),
    "ClassIndex": ("data.sampler", "ClassIndex"),
    "build_class_index": ("data.sampler", "build_class_index"),
    "sample_task": ("data.sampler", "sample_task"),
    # evaluation and analysis
    "task_accuracies": ("evaluate", "task_accuracies"),
    "evaluate_rule": ("evaluate", "evaluate_rule"),
    "evaluate_run": ("evaluate", "evaluate_run"),
    "episode_analysis": ("metrics", "episode_analysis"),
    "alignment_angles": ("metrics", "alignment_angles"),
    "orthonormality_errors": ("metrics", "orthonormality_errors"),
    # runs from a config
    "TrainConfig": ("config", "TrainConfig"),
    "build_experiment": ("experiment", "build"),
    "Experiment": ("experiment", "Experiment"),
    "meta_train": ("train", "meta_train"),
    # errors
    "PlasticJaxError": ("checks", "PlasticJaxError"),
    "RuleError": ("plasticity", "RuleError"),
    "ConfigError": ("config", "ConfigError"),
    "DataUnavailableError": ("data.base", "DataUnavailableError"),
}

#: the same names as ``_EXPORTS`` (spelled out for tools that read ``__all__`` statically)
__all__ = [
    "make_rule", "Rule", "initial_theta", "RULES", "parse_terms", "PAPER_POOL", "ELEMENTWISE_POOL", "Term",
    "term", "Outer", "Scale", "Hadamard", "init_network", "online_step", "adapt", "query_loss", "EpisodeSpec",
    "draw", "run_episode", "task_loss", "batch_loss", "ESTIMATORS", "MetaState", "meta_init", "meta_step",
    "Guard", "replay_episode",
    "load_dataset", "load_npz", "Dataset", "Task", "ClassIndex", "build_class_index", "sample_task",
    "task_accuracies", "evaluate_rule", "evaluate_run", "episode_analysis", "alignment_angles",
    "orthonormality_errors", "TrainConfig", "build_experiment", "Experiment", "meta_train", "PlasticJaxError",
    "RuleError", "ConfigError", "DataUnavailableError",
]

#: submodules loaded on attribute access (``plastic_jax.episode`` without importing it first)
_SUBMODULES = frozenset({
    "benchmark", "checkpoint", "checks", "cli", "config", "data", "episode", "estimators", "evaluate",
    "experiment", "feedback", "inner", "meta", "metrics", "network", "plasticity", "plots", "rundir",
    "sharding", "stats", "train", "replay", "runs", "atomic", "errors", "pathways", "sensitivity",
    "stability", "user_terms",
})


def __getattr__(name: str) -> object:
    """Import a public name (or a submodule) on first access and keep it."""
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily (above)
    from plastic_jax.checks import PlasticJaxError
    from plastic_jax.config import ConfigError, TrainConfig
    from plastic_jax.data import load_dataset
    from plastic_jax.data.base import Dataset, DataUnavailableError, Task
    from plastic_jax.data.npz import load_npz
    from plastic_jax.data.sampler import ClassIndex, build_class_index, sample_task
    from plastic_jax.episode import EpisodeSpec, batch_loss, draw, task_loss
    from plastic_jax.episode import run as run_episode
    from plastic_jax.estimators import ESTIMATORS
    from plastic_jax.evaluate import evaluate_rule, evaluate_run, task_accuracies
    from plastic_jax.experiment import Experiment
    from plastic_jax.experiment import build as build_experiment
    from plastic_jax.inner import Rule, adapt, initial_theta, make_rule, online_step, query_loss
    from plastic_jax.meta import Guard, MetaState, meta_init, meta_step
    from plastic_jax.metrics import alignment_angles, episode_analysis, orthonormality_errors
    from plastic_jax.network import init_network
    from plastic_jax.plasticity import (
        ELEMENTWISE_POOL,
        PAPER_POOL,
        RULES,
        Hadamard,
        Outer,
        RuleError,
        Scale,
        Term,
        parse_terms,
        term,
    )
    from plastic_jax.replay import replay_episode
    from plastic_jax.train import meta_train
