"""``plastic-jax benchmark``: time and memory of meta-training episodes (issue 3).

For every case (rule × feedback × estimator × stream length T × meta-batch) on the EMNIST-sized
network with synthetic inputs it measures, in a fresh subprocess (RSS is a high-water mark):

- ``ms_per_episode``: one jitted meta-training step (meta-gradient + Adam), median of
  ``--repeats`` (5 by default) calls after the first; ``compile_s``: tracing + compilation;
- ``forward_ms``: the forward-only episode (the same tasks, no gradient), median likewise;
- ``peak_mem_mb``: the process's peak RSS (``resource.getrusage``) on CPU, the device's
  ``peak_bytes_in_use`` on a GPU; ``base_rss_mb`` is the RSS before anything was compiled, and
  ``xla_temp_mb`` XLA's own count of the meta-step's scratch memory;
- ``cpu_ms_per_episode``: process CPU time per step (steadier than wall time on a shared machine).

With T = 250 and meta-batch 1 it also measures the naive baseline once per rule and feedback:
the same online step jitted on its own, called from a Python loop over the samples and
differentiated with ``jax.grad`` of that loop (what a straightforward port does), and reports
``naive_ms`` (median of 2 calls after a first, compiling one; it is slow) and
``speedup_vs_naive``.

The ``published`` column compares the paper's episode (T = 250, meta-batch 1, EMNIST sizes) with the
authors' PyTorch code. Without a measurement it says so ("not measured") rather than quote a time taken
elsewhere (``PUBLISHED_S``, the figures once quoted for their code on a 2-core CPU, is kept for reference
only: on this project's machine their code measured 1.0–2.1 s for bio+fa, not 3.5 s). With
``--published-code DIR --torch-python PYTHON`` it *measures* their code in the
same run: once, before the JAX cases, it runs ``scripts/bench_published.py`` under ``PYTHON`` on the user's
checkout ``DIR`` of NeuralDynamicsAndComputing/MetaLearning-Plasticity (not bundled) for the selected
rules among f0 and bio with fa feedback (``--repeats`` timed episodes each), and the column reads
``"3001 ms measured (31×)"``; the JSON records get ``published_ms``, ``published_source`` ("measured"),
``published_cpu_ms``, ``published_threads``, ``published_episodes``, ``published_torch`` and
``speedup_vs_published`` (published wall time / ours).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from plastic_jax.atomic import atomic_write_json
from plastic_jax.pathways import FEEDBACK_MODES

EMNIST_SIZES = (784, 170, 130, 100, 70, 47)
RULE_CHOICES = ("f0", "bio", "pool", "pool-per-layer")
#: the rules measured by default (pool-per-layer: the pool with one row of Θ per layer, R = 10·L)
DEFAULT_RULES = ("f0", "bio", "pool")
DEFAULT_FEEDBACK = ("fa", "bp")
#: every registered pathway (``pathways.REGISTRY``, at import), the default two first
FEEDBACK_CHOICES = DEFAULT_FEEDBACK + tuple(m for m in FEEDBACK_MODES if m not in DEFAULT_FEEDBACK)
#: the published PyTorch code on a 2-core CPU, seconds per meta-training episode (SPEC §8)
PUBLISHED_S = {("f0", "fa"): 1.0, ("bio", "fa"): 3.5}
#: the rules scripts/bench_published.py can run with the published code (feedback: fa)
PUBLISHED_RULES = ("f0", "bio")
#: the files a checkout of the published code must have
PUBLISHED_FILES = ("main.py", "optim.py", "utils.py", "dataset.py")
#: the harness that runs the published code (under --torch-python)
PUBLISHED_HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                                 "bench_published.py")
M, Q = 5, 10


def _csv(choices: tuple[str, ...] | None, cast=str):
    def parse(s: str):
        vals = tuple(cast(v.strip()) for v in s.split(",") if v.strip())
        if choices is not None:
            bad = [v for v in vals if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(map(str, bad))}; choose from {', '.join(choices)}")
        if not vals:
            raise argparse.ArgumentTypeError("empty list")
        return vals

    return parse


def add_benchmark_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``plastic-jax benchmark`` (shared by scripts/benchmark.py)."""
    p.add_argument("--rule", type=_csv(RULE_CHOICES), default=DEFAULT_RULES,
                   help="rules, comma-separated: f0, bio, pool, pool-per-layer (default: f0,bio,pool)")
    p.add_argument("--feedback", type=_csv(FEEDBACK_CHOICES), default=DEFAULT_FEEDBACK,
                   help="feedback modes, comma-separated, of " + ",".join(FEEDBACK_CHOICES) + " (default: fa,bp)")
    from plastic_jax.estimators import REGISTRY, names

    default = tuple(n for n, r in REGISTRY.items() if r.benchmark)
    p.add_argument("--estimator", type=_csv(names()), default=default,
                   help=f"meta-gradient estimators, comma-separated, of {','.join(names())} (default: "
                        f"{','.join(default)}; auto is reported with the estimator it picks; es runs with its "
                        "default σ and P)")
    p.add_argument("--T", type=_csv(None, int), default=(250, 2500),
                   help=f"stream lengths, multiples of M={M} (default: 250,2500)")
    p.add_argument("--meta-batch", type=_csv(None, int), default=(1, 16),
                   help="tasks per meta-step (default: 1,16)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (default: %(default)s)")
    p.add_argument("--sizes", type=_csv(None, int), default=EMNIST_SIZES,
                   help="layer sizes (default: 784,170,130,100,70,47)")
    p.add_argument("--naive", choices=("auto", "yes", "no"), default="auto",
                   help="measure the naive baseline: auto = at T=250, meta-batch 1 (default)")
    p.add_argument("--max-mem-gb", type=float, default=None,
                   help="skip cases whose estimated memory exceeds this (default: 60%% of RAM)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the cases as a JSON list")
    p.add_argument("--published-code", default=None, metavar="DIR",
                   help="your checkout of the authors' PyTorch code (GitHub: NeuralDynamicsAndComputing/"
                        "MetaLearning-Plasticity; not bundled): measure it in this run (f0/bio with fa, T=250) "
                        "for the 'published' column instead of quoting a reference time; needs --torch-python")
    p.add_argument("--torch-python", default=None, metavar="PATH",
                   help="a Python with torch and numpy that runs scripts/bench_published.py for --published-code")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)


# ----------------------------------------------------------------------------- one case (worker)


def _rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_class_index(T: int, sizes: tuple[int, ...], seed: int = 0):
    """A ``ClassIndex`` of uniform random images for M = 5 classes, K = T / 5 training and
    Q = 10 query examples each (exactly K + Q images per class, so only the needed data exists)."""
    import jax.numpy as jnp
    import numpy as np

    from plastic_jax.data.sampler import ClassIndex

    n_classes, dim = sizes[-1], sizes[0]
    per = T // M + Q
    rng = np.random.default_rng(seed)
    x = rng.random((M * per, dim), dtype=np.float32)
    y = np.repeat(np.arange(M), per).astype(np.int32)
    index = np.zeros((n_classes, per), np.int32)
    count = np.zeros(n_classes, np.int32)
    for c in range(M):
        index[c] = np.arange(c * per, (c + 1) * per)
        count[c] = per
    return ClassIndex(jnp.asarray(x), jnp.asarray(y), jnp.asarray(index), jnp.asarray(count),
                      jnp.arange(M, dtype=jnp.int32))


def _timed(f, args_of, repeats: int) -> tuple[float, float, float]:
    """(first-call seconds, median wall ms, median CPU ms) of ``f(*args_of(i))``."""
    import jax

    t = time.perf_counter()
    jax.block_until_ready(f(*args_of(0)))
    first = time.perf_counter() - t
    wall, cpu = [], []
    for i in range(1, repeats + 1):
        a = args_of(i)
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(*a))
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return first, 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def naive_baseline_ms(rule, sizes, ci, repeats: int = 2) -> float:
    """Median ms of jax.grad of a Python loop over a jitted ``online_step`` (one task)."""
    import jax

    from plastic_jax.data.sampler import sample_task
    from plastic_jax.inner import initial_theta, online_step, query_loss
    from plastic_jax.network import init_network

    step = jax.jit(online_step, static_argnums=(1,))
    task = sample_task(jax.random.PRNGKey(0), ci, M, (ci.index.shape[1] - Q), Q)
    W0, B = init_network(jax.random.PRNGKey(1), sizes)
    theta = initial_theta(rule)

    def loss(theta):
        W = W0
        for t in range(task.xs.shape[0]):  # the Python loop over samples
            W = step(theta, rule, W, B, task.xs[t], task.ys[t])
        return query_loss(W, task.xq, task.yq)[0]

    grad = jax.grad(loss)
    _, ms, _ = _timed(grad, lambda i: (theta,), repeats)  # the first call (compiling) is not counted
    return ms


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Measure one case in this process; returns the JSON record."""
    import jax
    import optax

    from plastic_jax.episode import batch_loss
    from plastic_jax.estimators import ESTIMATORS, resolve
    from plastic_jax.inner import initial_theta
    from plastic_jax.meta import meta_init, meta_step

    sizes = tuple(case["sizes"])
    T, mb = case["T"], case["meta_batch"]
    rule, spec = _rule_and_spec(case["rule"], case["feedback"], T, mb, sizes)
    ci = synthetic_class_index(T, sizes)
    est = case["estimator"]
    resolved = resolve(est, rule.n_theta, rule.feedback)
    base_rss = _rss_mb()
    opt = optax.adam(1e-3)
    state = meta_init(initial_theta(rule), opt)
    keys = [jax.random.PRNGKey(i) for i in range(case["repeats"] + 1)]

    t = time.perf_counter()
    step = jax.jit(lambda s, k, ci: meta_step(s, k, ci, rule=rule, spec=spec, optimizer=opt, estimator=ESTIMATORS[est]))
    step = step.lower(state, keys[0], ci).compile()
    compile_s = time.perf_counter() - t
    xla_temp = None
    try:
        mem = step.memory_analysis()
        xla_temp = round(mem.temp_size_in_bytes / 2**20, 1) if mem is not None else None
    except Exception:  # memory analysis is best effort (not every backend has it)
        pass
    _, ms, cpu_ms = _timed(step, lambda i: (state, keys[i], ci), case["repeats"])

    fwd = jax.jit(lambda th, k, ci: batch_loss(th, rule, spec, k, ci))
    fwd_compile_s, fwd_ms, fwd_cpu_ms = _timed(fwd, lambda i: (state.theta, keys[i], ci), case["repeats"])

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        peak = _rss_mb()
    else:
        stats = dev.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use", 0) / 2**20
    rec = {
        "rule": case["rule"], "feedback": case["feedback"], "estimator": est,
        "resolved_estimator": resolved, "T": T, "meta_batch": mb,
        "ms_per_episode": round(ms, 2), "forward_ms": round(fwd_ms, 2),
        "grad_over_forward": round(ms / fwd_ms, 2),
        "cpu_ms_per_episode": round(cpu_ms, 2), "forward_cpu_ms": round(fwd_cpu_ms, 2),
        "peak_mem_mb": round(peak, 1), "base_rss_mb": round(base_rss, 1), "xla_temp_mb": xla_temp,
        "compile_s": round(compile_s, 2), "forward_compile_s": round(fwd_compile_s, 2),
        "episodes_per_s": round(mb / (ms / 1e3), 2), "repeats": case["repeats"],
        "sizes": list(sizes), "device": f"{dev.platform}:{dev.device_kind}",
    }
    if case.get("naive") and case["feedback"] in ("bp", "fa"):  # the naive port has the paper's two
        naive = naive_baseline_ms(rule, sizes, ci)
        rec["naive_ms"] = round(naive, 1)
        rec["speedup_vs_naive"] = round(naive / ms, 1)
    return rec


# ----------------------------------------------------------------------------- driver


def _rule_and_spec(name: str, feedback: str, T: int, mb: int, sizes) -> tuple[Any, Any]:
    """The ``Rule`` and ``EpisodeSpec`` of a case (rule name as ``RULE_CHOICES``)."""
    from plastic_jax.episode import EpisodeSpec
    from plastic_jax.inner import make_rule
    from plastic_jax.plasticity import RULES

    rule = make_rule(RULES[name.removesuffix("-per-layer")], len(sizes) - 1, feedback,
                     per_layer=name.endswith("-per-layer"))
    return rule, EpisodeSpec(tuple(sizes), M, T // M, Q, mb)


def _estimate_mem_gb(est: str, rule: str, feedback: str, T: int, mb: int, sizes) -> float:
    """Rough GB the estimator keeps per meta-step, for skipping hopeless cases: the registry's
    memory model (``estimators.memory_bytes``, the one the training memory check uses) with a
    margin of 1.5 for XLA's temporaries."""
    from plastic_jax.estimators import memory_bytes

    r, spec = _rule_and_spec(rule, feedback, T, mb, sizes)
    return memory_bytes(est, spec, r) * 1.5 / 1e9


def _cases(args) -> list[dict[str, Any]]:
    out = []
    for T in args.T:
        for mb in args.meta_batch:
            for rule in args.rule:
                for fb in args.feedback:
                    for est in args.estimator:
                        out.append({"rule": rule, "feedback": fb, "estimator": est, "T": T,
                                    "meta_batch": mb, "repeats": args.repeats, "sizes": list(args.sizes)})
    return out


def _run_worker(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case in a fresh Python process; its last stdout line is the JSON record."""
    cmd = [sys.executable, "-m", "plastic_jax.benchmark", "--worker", json.dumps(case)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {**case, "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def is_paper_episode(r: dict[str, Any]) -> bool:
    """The paper's episode (T = 250, meta-batch 1, EMNIST sizes), which the published code runs."""
    return r.get("T") == 250 and r.get("meta_batch") == 1 and tuple(r.get("sizes", EMNIST_SIZES)) == EMNIST_SIZES


def _published_cell(r: dict[str, Any]) -> str:
    """The 'published' column: the measured time when this run measured it, else the quoted one."""
    if r.get("published_source") == "measured":
        ratio = r["speedup_vs_published"]
        return f"{r['published_ms']:.0f} ms measured ({ratio:.0f}×)" if ratio >= 10 else \
            f"{r['published_ms']:.0f} ms measured ({ratio:.1f}×)"
    if (r["rule"], r["feedback"]) in PUBLISHED_S and r["T"] == 250 and r["meta_batch"] == 1:
        return "not measured (--published-code DIR)"
    return ""


def markdown_table(recs: list[dict[str, Any]]) -> str:
    """The cases as a markdown table."""
    head = ("| rule | fb | estimator | T | meta-batch | ms/episode | forward ms | grad/fwd | CPU ms/episode "
            "| peak MB (base) | XLA temp MB | compile s | naive ms | speedup | published |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in recs:
        est = r["estimator"] if r["estimator"] != "auto" else f"auto→{r.get('resolved_estimator', '?')}"
        if "error" in r or "skipped" in r:
            why = r.get("error") or r.get("skipped")
            lines.append(f"| {r['rule']} | {r['feedback']} | {est} | {r['T']} | {r['meta_batch']} | "
                         f"{why} |" + " |" * 10)
            continue
        temp = r["xla_temp_mb"] if r["xla_temp_mb"] is not None else ""
        pub_s = _published_cell(r)
        lines.append(
            f"| {r['rule']} | {r['feedback']} | {est} | {r['T']} | {r['meta_batch']} | {r['ms_per_episode']:.1f} "
            f"| {r['forward_ms']:.1f} | {r['grad_over_forward']:.1f} | {r['cpu_ms_per_episode']:.1f} "
            f"| {r['peak_mem_mb']:.0f} ({r['base_rss_mb']:.0f}) | {temp} "
            f"| {r['compile_s']:.1f} | {r.get('naive_ms', '')} | "
            f"{str(r['speedup_vs_naive']) + '×' if 'speedup_vs_naive' in r else ''} | {pub_s} |")
    return "\n".join(lines)


#: at most this many timed calls per case (a case at the EMNIST sizes takes up to seconds per call)
MAX_REPEATS = 1000


def check_args(args: argparse.Namespace) -> None:
    """Every check of the command line, before any case runs (``ConfigError``, one line)."""
    import math

    from plastic_jax.config import INT_MAX, ConfigError
    from plastic_jax.evaluate import check_json_out

    if not 1 <= args.repeats <= MAX_REPEATS:
        raise ConfigError(f"--repeats must be in 1 … {MAX_REPEATS}, got {args.repeats}")
    bad_T = [T for T in args.T if T <= 0 or T % M or T > INT_MAX]
    if bad_T:
        raise ConfigError(f"--T must be positive multiples of M={M} (at most {INT_MAX}), got {bad_T}")
    if any(not 0 < mb <= INT_MAX for mb in args.meta_batch):
        raise ConfigError(f"--meta-batch must be positive integers (at most {INT_MAX}), got {list(args.meta_batch)}")
    if len(args.sizes) < 2 or any(not 0 < s <= INT_MAX for s in args.sizes) or args.sizes[-1] < M:
        raise ConfigError(f"--sizes needs ≥ 2 positive layer sizes and ≥ {M} outputs, got {list(args.sizes)}")
    if args.max_mem_gb is not None and not (args.max_mem_gb > 0 and math.isfinite(args.max_mem_gb)):
        raise ConfigError(f"--max-mem-gb must be a positive number, got {args.max_mem_gb}")
    check_json_out(args.json)
    check_published_args(args)


def published_rules(args: argparse.Namespace) -> list[str]:
    """The rules of this run that the published code can be measured for (with fa, at the paper's T)."""
    if "fa" not in args.feedback or 250 not in args.T or 1 not in args.meta_batch \
            or tuple(args.sizes) != EMNIST_SIZES:
        return []
    return [r for r in PUBLISHED_RULES if r in args.rule]


def check_published_args(args: argparse.Namespace) -> None:
    """--published-code / --torch-python: both or neither, an existing checkout and Python (one line)."""
    from plastic_jax.config import ConfigError

    code, py = getattr(args, "published_code", None), getattr(args, "torch_python", None)
    if code is None and py is None:
        return
    if code is None or py is None:
        raise ConfigError("--published-code and --torch-python go together: the folder of the published code and "
                          "a Python with torch to run it")
    if not os.path.isdir(code):
        raise ConfigError(f"--published-code {code!r} is not a folder (clone NeuralDynamicsAndComputing/"
                          "MetaLearning-Plasticity; it is not bundled)")
    missing = [f for f in PUBLISHED_FILES if not os.path.isfile(os.path.join(code, f))]
    if missing:
        raise ConfigError(f"--published-code {code!r} lacks {', '.join(missing)}: not a checkout of "
                          "NeuralDynamicsAndComputing/MetaLearning-Plasticity")
    if not (os.path.isfile(py) and os.access(py, os.X_OK)):
        raise ConfigError(f"--torch-python {py!r} is not an executable file")
    if not os.path.isfile(PUBLISHED_HARNESS):
        raise ConfigError(f"--published-code needs the harness {PUBLISHED_HARNESS} (a source checkout of plastic_jax)")
    if not published_rules(args):
        raise ConfigError("--published-code measures the paper's episode: select --rule f0 and/or bio, --feedback "
                          "fa, --T 250, --meta-batch 1 and the EMNIST --sizes")


def run_published(args: argparse.Namespace) -> dict[str, Any]:
    """Run scripts/bench_published.py once under --torch-python; its JSON (``ConfigError`` on failure)."""
    import tempfile

    from plastic_jax.config import ConfigError

    rules = published_rules(args)
    with tempfile.TemporaryDirectory(prefix="plastic_jax_published_") as tmp:
        out = os.path.join(tmp, "published.json")
        cmd = [args.torch_python, PUBLISHED_HARNESS, "--published-code", args.published_code,
               "--rule", ",".join(rules), "--episodes", str(args.repeats), "--json", out]
        print(f"measuring the published code ({', '.join(r + '+fa' for r in rules)}, {args.repeats} episodes "
              "each) …", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.isfile(out):
            tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
            raise ConfigError(f"measuring the published code failed (exit {proc.returncode}): {tail}")
        try:
            with open(out) as f:
                res = json.load(f)
            cases = {c["rule"]: c for c in res["cases"]}
            if any(not float(cases[r]["s_per_episode"]) > 0 for r in rules):
                raise ValueError("a non-positive time")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"the published-code harness wrote an unreadable result: {e}") from None
    print(proc.stdout.strip(), file=sys.stderr, flush=True)
    return res


def attach_published(recs: list[dict[str, Any]], published: dict[str, Any]) -> None:
    """Put the measured published time and the ratio on the paper-episode rows it applies to."""
    cases = {c["rule"]: c for c in published["cases"]}
    for r in recs:
        c = cases.get(r["rule"])
        if c is None or r["feedback"] != "fa" or "ms_per_episode" not in r or not is_paper_episode(r):
            continue
        ms = 1e3 * float(c["s_per_episode"])
        r["published_ms"] = round(ms, 1)
        r["published_source"] = "measured"
        r["published_threads"] = c.get("threads")
        r["published_episodes"] = c.get("episodes")
        if c.get("cpu_s_per_episode") is not None:
            r["published_cpu_ms"] = round(1e3 * float(c["cpu_s_per_episode"]), 1)
        r["published_torch"] = published.get("torch")
        r["speedup_vs_published"] = round(ms / r["ms_per_episode"], 2)


def run_benchmark(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure every selected case (one subprocess each); print the table; write --json."""
    check_args(args)
    max_gb = args.max_mem_gb
    if max_gb is None:
        max_gb = 0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    recs = []
    naive_done = set()
    load0 = os.getloadavg()
    published = run_published(args) if getattr(args, "published_code", None) else None
    for case in _cases(args):
        key = (case["rule"], case["feedback"])
        want_naive = args.naive == "yes" or (args.naive == "auto" and case["T"] == 250 and case["meta_batch"] == 1)
        case["naive"] = want_naive and key not in naive_done
        load_case = os.getloadavg()[0]
        need = _estimate_mem_gb(case["estimator"], case["rule"], case["feedback"], case["T"], case["meta_batch"],
                                args.sizes)
        if need > max_gb:
            rec = {**case, "skipped": f"skipped: needs ~{need:.0f} GB > {max_gb:.0f} GB"}
        else:
            rec = _run_worker(case)
        if "naive_ms" in rec:
            naive_done.add(key)
        rec.pop("naive", None)
        rec["load_before"] = round(load_case, 2)  # the 1-minute load average as this case started
        recs.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    for r in recs:  # the whole run's, beside each case: every figure carries the load it was taken under
        r["load_start"], r["load_end"], r["cpus"] = round(load0[0], 2), round(load1[0], 2), os.cpu_count()
    # the naive baseline was measured once per (rule, feedback): attach it to its other rows
    naive = {(r["rule"], r["feedback"]): r["naive_ms"] for r in recs if "naive_ms" in r}
    for r in recs:
        k = (r["rule"], r["feedback"])
        if k in naive and "naive_ms" not in r and "ms_per_episode" in r and r["T"] == 250 and r["meta_batch"] == 1:
            r["naive_ms"] = naive[k]
            r["speedup_vs_naive"] = round(naive[k] / r["ms_per_episode"], 1)
    if published is not None:
        attach_published(recs, published)
    print(f"machine: {os.cpu_count()} CPU(s), load average {load0[0]:.1f} at start, {load1[0]:.1f} at end")
    if published is not None:
        for c in published["cases"]:
            print(f"published code ({published.get('published_code')}): {c['rule']}+fa "
                  f"{1e3 * float(c['s_per_episode']):.0f} ms/episode, median of {c.get('episodes')} episodes, "
                  f"torch {published.get('torch')}, {c.get('threads')} thread(s), measured in this run")
    print(markdown_table(recs))
    if args.json:
        from plastic_jax.config import ConfigError

        try:  # through a temporary file: a failed write leaves an earlier file as it was
            atomic_write_json(args.json, recs)
        except OSError as e:
            raise ConfigError(f"cannot write --json {args.json!r}: {e.strerror or e}") from None
    return recs


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.worker:
        from plastic_jax.config import ConfigError

        try:
            case = json.loads(args.worker)
            if not isinstance(case, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as e:
            raise ConfigError(f"--worker (internal) needs one case as a JSON object: {e}") from None
        print(json.dumps(run_case(case)))
        return 0
    run_benchmark(args)
    return 0


def main(argv=None) -> int:
    """``python -m plastic_jax.benchmark ...``: ``plastic-jax benchmark ...`` (one-line errors)."""
    from plastic_jax.cli import main as cli_main

    return cli_main(["benchmark", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
