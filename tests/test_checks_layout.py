"""Where the argument checks live and how often they run (issue 22): ``checks.py`` is a leaf that
imports nothing of the package, each type's checks sit beside the type, the core has no import
cycle (counting imports inside functions), and a public call validates its arguments once."""

import ast
import os
import subprocess
import sys

import jax
import pytest

from plastic_jax import checks, episode, estimators, inner
from plastic_jax.data import load_dataset
from plastic_jax.data import sampler as sampler_mod
from plastic_jax.data.sampler import build_class_index
from plastic_jax.episode import EpisodeSpec
from plastic_jax.inner import initial_theta, make_rule

ROOT = os.path.join(os.path.dirname(__file__), "..")
PACKAGE = os.path.join(ROOT, "plastic_jax")
#: the modules that formed one import cycle with checks.py before issue 22
CORE = ("plastic_jax.checks", "plastic_jax.inner", "plastic_jax.episode", "plastic_jax.meta",
        "plastic_jax.data.sampler", "plastic_jax.plasticity")


# ----------------------------------------------------------------------------- imports


def _module_files() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".").removesuffix(".__init__")
                out[name] = path
    return out


def _package_imports(name: str, path: str, mods: dict[str, str], typing_only: bool = True) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (top level, inside functions and,
    with ``typing_only``, under ``if TYPE_CHECKING``, which never runs)."""
    pkg = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(open(path).read())
    if not typing_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names)
    return {m for m in found if m in mods and m != name}


def test_checks_module_imports_nothing_of_the_package():
    mods = _module_files()
    assert _package_imports("plastic_jax.checks", mods["plastic_jax.checks"], mods) == set()


def test_no_import_cycle_through_the_core_counting_imports_inside_functions():
    mods = _module_files()
    graph = {m: _package_imports(m, p, mods) for m, p in mods.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for n in graph[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    cycles = {m: sorted(n for n in reach(m) if m in reach(n)) for m in CORE}
    assert all(not c for c in cycles.values()), cycles


def test_no_import_cycle_anywhere_in_the_package_counting_imports_inside_functions():
    """Every import that runs (top level or inside a function; not the annotations-only ``if
    TYPE_CHECKING`` blocks): the package's import graph has no cycle."""
    mods = _module_files()
    graph = {m: _package_imports(m, p, mods, typing_only=False) for m, p in mods.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, path: list[str]) -> bool:  # depth-first; True when a cycle is found
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle.extend(path[path.index(n):] + [m, n] if n in path else [m, n])
                return True
            if n not in state and visit(n, path + [m]):
                return True
        state[m] = 2
        return False

    assert not any(visit(m, []) for m in sorted(mods) if m not in state), " -> ".join(cycle)


@pytest.mark.slow  # end to end; the default suite's time (README)
def test_the_core_modules_import_in_every_order_in_a_fresh_interpreter():
    # one interpreter (JAX loads once); the package's modules are dropped before each order
    code = f"""
import importlib, itertools, sys
names = {[m for m in CORE if m != "plastic_jax.plasticity"]!r}
for order in itertools.permutations(names):
    for m in [m for m in sys.modules if m == "plastic_jax" or m.startswith("plastic_jax.")]:
        del sys.modules[m]
    for m in order:
        importlib.import_module(m)
print("orders", len(list(itertools.permutations(names))))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["orders", "120"]


def test_each_types_checks_sit_beside_the_type():
    assert inner.check_rule and inner.check_theta and inner.check_weights and inner.theta_shape
    assert episode.check_spec and episode.check_episode
    assert sampler_mod.check_class_index
    for moved in ("check_rule", "check_theta", "check_weights", "check_spec", "check_episode",
                  "check_class_index", "check_meta_step", "term_ids", "theta_shape"):
        assert not hasattr(checks, moved), moved


# ----------------------------------------------------------------------------- validate once


@pytest.fixture(scope="module")
def ci():
    return build_class_index(load_dataset("digits"))


SPEC = EpisodeSpec((64, 8, 10), M=3, K=2, Q=2, meta_batch=3)
RULE = make_rule("bio", n_layers=2)
THETA = initial_theta(RULE)
KEY = jax.random.PRNGKey(0)

#: every type check an episode can run
TYPE_CHECKS = [episode.check_episode, inner.check_theta, episode.check_spec, sampler_mod.check_class_index,
               inner.check_weights, checks.check_stream]


def _count_checks(monkeypatch) -> dict[str, int]:
    """Count the calls of each of ``TYPE_CHECKS`` under every name the package's modules hold it by."""
    counts: dict[str, int] = {}

    def counting(fn):
        def wrapper(*args, **kwargs):
            counts[fn.__name__] = counts.get(fn.__name__, 0) + 1
            return fn(*args, **kwargs)
        return wrapper

    wrappers = {id(fn): counting(fn) for fn in TYPE_CHECKS}
    for mod in [m for name, m in sys.modules.items() if name.startswith("plastic_jax")]:
        for attr, value in list(vars(mod).items()):
            if id(value) in wrappers:
                monkeypatch.setattr(mod, attr, wrappers[id(value)])
    return counts


@pytest.mark.parametrize("entry", ["batch_loss", "task_loss", "run", "reverse_grad", "reverse_remat_grad",
                                   "es_grad", "forward_grad", "adjoint_grad", "adjoint_batch_loss", "forward_task"])
def test_a_public_call_checks_the_episode_once_not_once_per_task(entry, ci, monkeypatch):
    fn = getattr(episode, entry, None) or getattr(estimators, entry)
    counts = _count_checks(monkeypatch)
    # tracing is enough: the checks run at trace time; meta_batch = 3 tasks
    jax.make_jaxpr(lambda th: fn(th, RULE, SPEC, KEY, ci))(THETA)
    assert counts == {"check_episode": 1, "check_theta": 1, "check_spec": 1, "check_class_index": 1}

