"""Time one meta-training episode of the authors' published PyTorch code (run with a Python that has torch).

    /path/to/torch-python scripts/bench_published.py --published-code DIR [--rule bio,f0] [--episodes 5]
        [--json out.json]

The published code of Shervani-Tabar & Rosenbaum (2023) is the GitHub repository
NeuralDynamicsAndComputing/MetaLearning-Plasticity. It is NOT bundled with plastic_jax: clone or download
it yourself and pass the folder holding its ``main.py``, ``optim.py``, ``utils.py`` and ``dataset.py``
(the 2023 "v1.0" layout: ``main.py`` has ``MyModel`` and ``MetaLearner``). This script imports those
modules from that folder; it copies nothing from them.

What it times, per episode: their ``MetaLearner.train()`` over a one-task dataset, i.e. exactly the body
of their meta-training loop for one episode: ``reinitialize`` (fresh Xavier weights and fixed random
feedback B, ``--fbk fix`` = feedback alignment), ``DataProcess`` (flatten 28×28 → 784, shuffle),
K·M = 50·5 = 250 online plasticity steps (``functional_call`` forward of the 784-170-130-100-70-47
network + their ``plasticity_rule``, building the autograd graph), the query forward on Q·M = 50 images,
the loss, their ``meta_stats`` (which also writes its small log files), ``loss.backward()`` through the
250 steps, one Adam step on the plasticity coefficients (lr 1e-3), and their per-episode log lines. Rules:
``bio`` is their F_bio (terms 0, 2, 9: pseudo-gradient, error-Hebbian, Oja; ``--vec 2 9``), ``f0`` the
pseudo-gradient term alone (``--vec`` empty); both with the paper's initial coefficients (θ0 = 1e-3,
others 0). After ``--warmup`` untimed episodes it times ``--episodes`` episodes and reports the median
wall and CPU seconds per episode and torch's thread count. Threads: ``--threads auto`` (default) runs one
untimed episode with 1 intra-op thread and one with torch's default count and times with the faster: the
ops are tiny (one sample), and on a shared machine torch's default of one thread per core was measured
14× slower than one thread (f0: 7.0 vs 0.51 s/episode, 2 cores, load ≈ 3), so the published code gets its
best setting; ``--threads N`` fixes it.

Not timed: loading the data. Their ``EmnistDataset`` reads EMNIST PNGs from disk (which the benchmark
machine need not have); the harness instead feeds each episode a batch shaped exactly like their
``DataLoader``'s (M×K and M×Q uniform random 28×28 images in [0, 1), labels of M distinct classes out of 47).

Runtime shims (applied in this process only, and only when needed; the JSON lists those applied; the
files on disk are never changed):

- ``torch.nn.utils._stateless`` (removed from newer torch) is aliased to ``torch.nn.utils.stateless``,
  whose ``functional_call`` it was;
- modules that only their EMNIST download/loader and plotting use (matplotlib, PIL, torchvision,
  requests) are replaced by placeholders when not installed; the harness calls neither;
- their end-of-training ``self.plot()`` is a no-op (their loop plots once after the last episode; the
  harness calls ``train()`` once per episode);
- if ``optim.py`` names the optimizer class ``my_optimizer`` while ``main.py`` imports ``MyOptimizer``,
  the one is aliased to the other;
- if ``plasticity_rule`` indexes Θ by term number (``Theta[2]``, ``Theta[9]``) while ``MetaLearner`` holds
  fewer coefficients (five), the terms are mapped in order onto the model's coefficients (Θ0 → a, Θ2 → b,
  Θ9 → c); the same tensors, so Adam and the arithmetic are unchanged.

Errors (a missing folder or file, torch not installed) are one line on stderr, exit code 2; a failure
inside the published code is one line, exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
import types
import warnings

REPO = "NeuralDynamicsAndComputing/MetaLearning-Plasticity"
FILES = ("main.py", "optim.py", "utils.py", "dataset.py")
#: the plasticity terms (their ``--vec``) of each rule; the pseudo-gradient term 0 is always on
VEC = {"bio": ["2", "9"], "f0": []}
M, K, Q, DIM, N_CLASSES = 5, 50, 10, 28, 47
#: torch's own intra-op thread count in this process (set in ``run``)
DEFAULT_THREADS = 1
#: modules their code imports only for the EMNIST download/loader and the plots
OPTIONAL_MODULES = ("matplotlib", "matplotlib.pyplot", "PIL", "PIL.Image", "torchvision",
                    "torchvision.transforms", "requests")


class HarnessError(Exception):
    """A user error (exit 2) or, with ``code=1``, a failure inside the published code."""

    def __init__(self, msg: str, code: int = 2):
        super().__init__(msg)
        self.code = code


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_published.py",
        description="Time meta-training episodes of the authors' published PyTorch code (GitHub: "
                    f"{REPO}; not bundled with plastic_jax: clone it yourself) on this machine's CPU, with "
                    "synthetic EMNIST-shaped data. Run it with a Python that has torch (and numpy).",
        epilog="What is timed per episode, and the runtime shims it may apply: see the docstring at the top "
               "of this file.")
    p.add_argument("--published-code", required=True, metavar="DIR",
                   help=f"your checkout of {REPO} (the folder with {', '.join(FILES)})")
    p.add_argument("--rule", default="bio",
                   help="comma-separated rules: bio (F_bio: terms 0, 2, 9) and/or f0 (default: bio); "
                        "feedback is always fixed random B (their --fbk fix, 'fa')")
    p.add_argument("--episodes", type=int, default=5, help="timed episodes per rule (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed episodes first (default: %(default)s)")
    p.add_argument("--threads", default="auto",
                   help="torch.set_num_threads: a number, or auto (default): one warm-up episode with 1 thread "
                        "and one with torch's default count, then time with the faster (on a shared or "
                        "small machine, torch's intra-op threads on these tiny 1-sample ops can be many times "
                        "slower than one thread)")
    p.add_argument("--seed", type=int, default=0, help="seed of torch, numpy and the data (default: 0)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON")
    args = p.parse_args(argv)
    rules = [r.strip() for r in args.rule.split(",") if r.strip()]
    bad = [r for r in rules if r not in VEC]
    if bad or not rules:
        p.error(f"--rule: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(VEC)}")
    args.rules = rules
    if args.episodes < 1 or args.warmup < 0:
        p.error("--episodes must be ≥ 1 and --warmup ≥ 0")
    if args.threads != "auto":
        try:
            args.threads = int(args.threads)
        except ValueError:
            p.error(f"--threads must be a number or auto, got {args.threads!r}")
        if args.threads < 1:
            p.error("--threads must be ≥ 1")
    return args


def check_code_dir(path: str) -> str:
    """The absolute folder, after checking it holds the published files (``HarnessError`` otherwise)."""
    if not os.path.isdir(path):
        raise HarnessError(f"--published-code {path!r} is not a folder; clone {REPO} and pass its folder "
                           "(the code is not bundled)")
    missing = [f for f in FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise HarnessError(f"--published-code {path!r} lacks {', '.join(missing)}: not a checkout of {REPO} "
                           f"(needs {', '.join(FILES)})")
    return os.path.abspath(path)


def _placeholder(name: str) -> types.ModuleType:
    class Placeholder(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise RuntimeError(f"{name} is not installed (bench_published.py placeholder); the harness "
                               "does not load EMNIST or plot")

    return Placeholder(name)


def install_shims_before_import(torch) -> list[str]:
    """The import-time shims (see the module docstring); returns what was applied."""
    applied = []
    try:
        importlib.import_module("torch.nn.utils._stateless")
    except ImportError:
        from torch.nn.utils import stateless

        sys.modules["torch.nn.utils._stateless"] = stateless
        torch.nn.utils._stateless = stateless
        applied.append("torch.nn.utils._stateless -> torch.nn.utils.stateless (functional_call)")
    stubbed, missing_tops = [], set()
    for name in OPTIONAL_MODULES:
        top = name.split(".")[0]
        if top not in missing_tops:
            if top in sys.modules or importlib.util.find_spec(top) is not None:
                continue  # installed: their code imports the real module
            missing_tops.add(top)
        mod = _placeholder(name)
        sys.modules[name] = mod
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(sys.modules[parent], child, mod)
        stubbed.append(name)
    if stubbed:
        applied.append("placeholders for modules not installed (EMNIST loader / plots only): " + ", ".join(stubbed))
    return applied


def import_published(code_dir: str, torch):
    """Import their ``optim`` and ``main`` from ``code_dir``; returns (main, optim, shims applied)."""
    shims = install_shims_before_import(torch)
    sys.path.insert(0, code_dir)
    for name in ("main", "optim", "utils", "dataset"):
        mod = sys.modules.get(name)
        if mod is not None and not os.path.abspath(getattr(mod, "__file__", "") or "").startswith(code_dir):
            del sys.modules[name]  # a same-named module from elsewhere must not shadow theirs
    try:
        optim = importlib.import_module("optim")
        if not hasattr(optim, "MyOptimizer") and hasattr(optim, "my_optimizer"):
            optim.MyOptimizer = optim.my_optimizer
            shims.append("optim.MyOptimizer = optim.my_optimizer (main.py imports the former)")
        main = importlib.import_module("main")
    except Exception as e:  # their import failed: one line
        raise HarnessError(f"importing the published code from {code_dir} failed: {type(e).__name__}: {e}",
                           code=1) from None
    for need in ("MetaLearner", "MyModel"):
        if not hasattr(main, need):
            raise HarnessError(f"{code_dir}/main.py has no {need}: this harness needs the 2023 'v1.0' layout of "
                               f"{REPO} (MyModel, MetaLearner, optim.plasticity_rule)")
    return main, optim, shims


def make_learner(main, optim, torch, rule: str, res_dir: str, seed: int):
    """Their ``MetaLearner`` for ``rule`` with fixed random feedback, at the paper's settings."""
    args = argparse.Namespace(
        device=torch.device("cpu"), K=K, M=M, Q=Q, database="emnist", dim=DIM, a=1e-3, lamb=0.0,
        lr_meta=1e-3, fbk="fix", vec=list(VEC[rule]), res_dir=res_dir, avg_window=10, evl=False, seed=seed,
        gpu_mode=0, episodes=1, test_name="", res=res_dir)
    learner = main.MetaLearner([], args)
    learner.plot = lambda *a, **k: None  # they plot once after the last episode; not part of an episode
    shims = []
    rule_fn = getattr(learner.OptimAdpt, "update_rule", None) or getattr(optim, "plasticity_rule", None)
    try:
        import inspect

        src = inspect.getsource(rule_fn)
    except (TypeError, OSError):
        src = ""
    used = sorted({int(i) for i in re.findall(r"Theta\[(\d+)\]", src)})
    theta = list(learner.Theta)
    if used and used[-1] >= len(theta):
        if len(used) > len(theta):
            raise HarnessError(f"plasticity_rule uses Θ terms {used} but MetaLearner has {len(theta)} "
                               "coefficients", code=1)
        view = [torch.zeros(()) for _ in range(used[-1] + 1)]
        names = [n for n, p in learner.model.named_parameters() if getattr(p, "meta_fwd", False)]
        for j, p in zip(used, theta):
            view[j] = p
        learner.Theta = view
        shims.append("Θ terms mapped onto the model's coefficients: " + ", ".join(
            f"Theta[{j}] -> {n}" for j, n in zip(used, names)))
    return learner, shims


def synthetic_batch(torch, gen):
    """One episode's data, shaped like their DataLoader batch of M ``EmnistDataset`` items."""
    classes = torch.randperm(N_CLASSES, generator=gen)[:M]
    x_trn = torch.rand((M, K, DIM, DIM), generator=gen)
    x_qry = torch.rand((M, Q, DIM, DIM), generator=gen)
    y_trn = classes[:, None].expand(M, K).clone()
    y_qry = classes[:, None].expand(M, Q).clone()
    return x_trn, y_trn, x_qry, y_qry


def time_rule(main, optim, torch, np, rule: str, episodes: int, warmup: int, seed: int, threads) -> dict:
    """Median seconds per episode of ``rule`` (after the warm-up or thread probe), with details."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    out = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="bench_published_") as res_dir:
        learner, shims = make_learner(main, optim, torch, rule, res_dir, seed)

        def episode(i: int) -> tuple[float, float]:
            learner.metatrain_dataset = [synthetic_batch(torch, gen)]
            t, c = time.perf_counter(), time.process_time()
            try:
                with contextlib.redirect_stdout(out):
                    learner.train()
            except Exception as e:
                raise HarnessError(f"the published code failed in episode {i + 1} ({rule}): "
                                   f"{type(e).__name__}: {e}", code=1) from None
            return time.perf_counter() - t, time.process_time() - c

        n = 0
        probe = {}
        if threads == "auto":  # one untimed episode per thread count; keep the faster
            for c in sorted({1, DEFAULT_THREADS}):
                torch.set_num_threads(c)
                probe[c] = round(episode(n)[0], 3)
                n += 1
            threads = min(probe, key=probe.get)
        torch.set_num_threads(threads)
        for _ in range(max(warmup - n, 0) if probe else warmup):
            episode(n)
            n += 1
        wall, cpu = [], []
        for _ in range(episodes):
            w, c = episode(n)
            n += 1
            wall.append(w)
            cpu.append(c)
    lines = out.getvalue().strip().splitlines()
    return {"rule": rule, "feedback": "fa", "vec": VEC[rule], "s_per_episode": round(statistics.median(wall), 4),
            "cpu_s_per_episode": round(statistics.median(cpu), 4), "times_s": [round(w, 4) for w in wall],
            "threads": torch.get_num_threads(), "thread_probe_s": {str(k): v for k, v in probe.items()},
            "episodes": episodes, "untimed_episodes": n - episodes, "last_line": lines[-1] if lines else "",
            "shims": shims}


def file_digests(code_dir: str) -> dict:
    out = {}
    for f in FILES:
        with open(os.path.join(code_dir, f), "rb") as fh:
            out[f] = hashlib.sha256(fh.read()).hexdigest()[:16]
    return out


def run(args: argparse.Namespace) -> dict:
    code_dir = check_code_dir(args.published_code)
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            raise HarnessError(f"--json {args.json!r}: folder {parent!r} does not exist")
    try:
        import numpy as np
        import torch
    except ImportError as e:
        raise HarnessError(f"{e.name or 'torch'} is not installed in this Python ({sys.executable}); run this "
                           "script with a Python that has torch and numpy") from None
    warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.stateless.functional_call is deprecated
    global DEFAULT_THREADS
    DEFAULT_THREADS = torch.get_num_threads()
    main, optim, shims = import_published(code_dir, torch)
    load0 = os.getloadavg()
    cases = [time_rule(main, optim, torch, np, r, args.episodes, args.warmup, args.seed, args.threads)
             for r in args.rules]
    load1 = os.getloadavg()
    return {"published_code": code_dir, "repository": REPO, "files_sha256_16": file_digests(code_dir),
            "torch": torch.__version__, "default_threads": DEFAULT_THREADS,
            "interop_threads": torch.get_num_interop_threads(), "cpus": os.cpu_count(),
            "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in load1],
            "M": M, "K": K, "Q": Q, "sizes": [784, 170, 130, 100, 70, 47], "shims": shims, "cases": cases}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        res = run(args)
    except HarnessError as e:
        print(f"bench_published.py: error: {e}", file=sys.stderr)
        return e.code
    for c in res["cases"]:
        probe = ", ".join(f"{k} thread(s) {v:.2f} s" for k, v in c["thread_probe_s"].items())
        print(f"published {c['rule']}+fa: {c['s_per_episode']:.3f} s/episode (median of {c['episodes']}; "
              f"CPU {c['cpu_s_per_episode']:.3f} s), torch {res['torch']}, {c['threads']} thread(s)"
              + (f" (warm-up probe: {probe})" if probe else ""))
    for s in res["shims"] + res["cases"][0]["shims"]:
        print(f"shim: {s}")
    print(f"load average {res['load_avg_start'][0]:.2f} at start, {res['load_avg_end'][0]:.2f} at end "
          f"({res['cpus']} CPU(s))")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
