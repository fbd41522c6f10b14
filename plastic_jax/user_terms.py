"""A user's plasticity terms from a Python file or module: the ``terms_from`` setting (``--terms-from``).

``--terms-from my_terms.py`` (a file path, read relative to the current directory) or
``--terms-from mypkg.terms`` (an importable module name) names a module that declares terms with
``@plasticity.term`` (docs/METHOD.md §3). The run's pool is the paper's ten terms, ids 0-9, followed
by the module's terms, ids 10, 11, …:

- the sequence ``POOL`` (or ``TERMS``) when the module defines one: it wins over declaration order.
  It lists the user's terms, optionally after a copy of the paper's ten (``PAPER_POOL + (a, b)``);
  every item must be a ``plasticity.Term``. Defining both ``POOL`` and ``TERMS`` is an error.
- else every ``plasticity.Term`` bound at the module's top level, in declaration order (the
  paper's own terms, when imported, are skipped; a term bound under two names counts once).

``--terms`` and ``--layer-rules`` then name a user term by id (``10``, ``F10``) or by its name
(``--terms 0,2,pre_decay``; case-insensitive). A term's name must not be the paper's (F0-F9), look
like a term id (``F12``, ``12``), be a named rule (``bio``) or repeat another user term's name.
Θ's labels stay ``F<id>`` (``F10``: the Θ-key grammar every run file is read by,
``pathways.TERM_KEY``); ``fingerprint`` records which name each id has.

**Loading.** A file is read once, hashed (sha256 of its bytes) and those very bytes are compiled and
run as a module named ``_plastic_jax_user_terms_<digest>`` (so nothing in ``sys.modules`` is
shadowed, and a changed file is a new module); a module name is imported as usual and its source
file hashed. A loaded pool is cached by path and digest: the same file gives the same ``Term``
objects, so rules built from it hash alike (jit static arguments); a module name gives the module's
own objects (``import mypkg.terms`` elsewhere sees the same terms). Every failure (no such file, a
syntax error, an exception while running it, no terms, a clashing name, an item of ``POOL`` that is
not a term) is a ``ConfigError`` of one line.

**Reproducibility.** A run records ``fingerprint(cfg)`` in config.json's ``extra["user_terms"]``
(``recorded_extra``; ``experiment.build`` puts it into ``cfg.extra``): the setting, the file's
absolute path, its sha256 and the names of ids 10, 11, …. Whenever a config carrying that record
builds its rule again (``--resume``, ``evaluate`` of the run, ``replay``), ``pool_of`` refuses a
file whose digest differs. ``terms_from`` itself may not change on resume (it is not in
``config.RESUME_MAY_CHANGE``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from plastic_jax.errors import ConfigError
from plastic_jax.plasticity import ELEMENTWISE_POOL, N_TERMS, PAPER_POOL, PAPER_POOLS, RULES, Pool, Term

if TYPE_CHECKING:
    from plastic_jax.config import TrainConfig

#: the key of ``TrainConfig.extra`` holding ``fingerprint``
EXTRA_KEY = "user_terms"
#: names a module may bind its explicit pool to (``POOL`` or ``TERMS``)
POOL_NAMES = ("POOL", "TERMS")
#: the largest terms file read
MAX_BYTES = 16 * 2**20


class UserTerms(NamedTuple):
    """A loaded ``terms_from``: the setting as given, the source file's absolute path, its sha256
    (hex) and the user's terms in pool order (ids 10, 11, …)."""

    source: str
    path: str
    sha256: str
    terms: tuple[Term, ...]

    @property
    def pool(self) -> Pool:
        """The run's pool: the paper's ten terms, then the user's."""
        return PAPER_POOL + self.terms

    @property
    def names(self) -> dict[str, str]:
        """Θ label -> term name of the user's terms: ``{"F10": "pre_decay", …}``."""
        return {f"F{N_TERMS + i}": t.name for i, t in enumerate(self.terms)}


#: (how loaded, path, digest) -> the loaded terms; a file run by path and the same file imported by
#: module name are different modules (different ``Term`` objects), so they are cached apart
_cache: dict[tuple[str, str, str], UserTerms] = {}


def _fail(source: str, msg: str) -> ConfigError:
    return ConfigError(f"--terms-from {source!r}: {' '.join(msg.split())}")


def _is_path(source: str) -> bool:
    return source.endswith(".py") or "/" in source or os.sep in source


def _read(source: str, path: str) -> bytes:
    if not os.path.exists(path):
        raise _fail(source, "no such file")
    if not os.path.isfile(path):
        raise _fail(source, "not a regular file; give a Python file (.py) or an importable module name")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise _fail(source, f"cannot read it: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise _fail(source, f"more than {MAX_BYTES} bytes; a terms file is a small Python module")
    return raw


def _line_in(e: BaseException, path: str) -> int | None:
    """The line of ``path`` where ``e`` was raised (the innermost frame in that file), or None."""
    if isinstance(e, SyntaxError) and e.filename and os.path.abspath(e.filename) == os.path.abspath(path):
        return e.lineno
    line, tb = None, e.__traceback__
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _load_error(source: str, path: str, e: BaseException) -> ConfigError:
    line = _line_in(e, path)
    at = f" at line {line}" if line is not None else ""
    if isinstance(e, SyntaxError):
        where = "" if line is not None or not e.filename else f" in {e.filename} line {e.lineno}"
        return _fail(source, f"syntax error{at}{where}: {e.msg}")
    return _fail(source, f"failed to load{at}: {type(e).__name__}: {e}")


def _run_file(source: str, path: str, raw: bytes, digest: str) -> types.ModuleType:
    """Compile and run the bytes ``raw`` of ``path`` as a fresh module (the bytes hashed are the
    bytes run)."""
    name = f"_plastic_jax_user_terms_{digest[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    try:
        code = compile(raw, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:  # ValueError: a NUL byte in the source
        raise _load_error(source, path, e) from None
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module  # dataclasses and pickling in the module look themselves up here
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - whatever the user's code raises is one line
        del sys.modules[name]
        raise _load_error(source, path, e) from None
    return module


def _import(source: str) -> tuple[str, bytes, types.ModuleType]:
    """(source file, its bytes, the module) of the module name ``source``."""
    try:
        spec = importlib.util.find_spec(source)
    except (ImportError, ValueError) as e:
        raise _fail(source, f"no such file, and no importable module ({type(e).__name__}: {e})") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a parent package's own code failed
        raise _fail(source, f"importing its package failed: {type(e).__name__}: {e}") from None
    if spec is None:
        raise _fail(source, "no such file, and no importable module of that name (a file path needs its .py; "
                            "a module must be on the Python path)")
    path = spec.origin
    if not path or not os.path.isfile(path):
        raise _fail(source, "a namespace package without a source file; name the module that declares the terms")
    raw = _read(source, path)
    try:
        module = importlib.import_module(source)
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise _load_error(source, path, e) from None
    return path, raw, module


def _describe(v: Any) -> str:
    what = type(v).__name__
    name = getattr(v, "__name__", None)
    return f"{what} {name!r}" if name else what


def _terms_of(source: str, module: types.ModuleType) -> tuple[Term, ...]:
    """The user's terms of ``module`` in pool order (module docstring)."""
    found = [k for k in POOL_NAMES if k in vars(module)]
    if len(found) > 1:
        raise _fail(source, f"defines both {' and '.join(found)}; keep one (it lists the terms in pool order)")
    paper = set(PAPER_POOL) | set(ELEMENTWISE_POOL)
    if found:
        key, seq = found[0], vars(module)[found[0]]
        if isinstance(seq, (str, bytes, dict)) or not hasattr(seq, "__iter__"):
            raise _fail(source, f"{key} must be a sequence of plasticity.Term, got {_describe(seq)}")
        items = tuple(seq)
        for base in PAPER_POOLS.values():
            if items[:N_TERMS] == base:  # PAPER_POOL + (mine, ...): the paper's ten come first anyway
                items = items[N_TERMS:]
                break
        for i, t in enumerate(items):
            if not isinstance(t, Term):
                raise _fail(source, f"{key} item {i} is {_describe(t)}, not a plasticity.Term (declare it with "
                                    "@plasticity.term)")
            if t in paper:
                raise _fail(source, f"{key} lists the paper's term {t.name} (the pool starts with F0-F9 already)")
        terms: list[Term] = []
        for t in items:
            if any(t is u for u in terms):
                raise _fail(source, f"{key} lists the term {t.name!r} twice")
            terms.append(t)
    else:
        terms = []
        for v in vars(module).values():
            if isinstance(v, Term) and v not in paper and not any(v is u for u in terms):
                terms.append(v)
    if not terms:
        raise _fail(source, "declares no plasticity terms (declare them with @plasticity.term, or list them in "
                            "POOL)")
    _check_names(source, terms)
    return tuple(terms)


def _check_names(source: str, terms: list[Term]) -> None:
    """Every name can be told apart from a term id, a named rule and the other terms."""
    seen: dict[str, str] = {}
    for t in terms:
        low = t.name.strip().lower()
        digits = low.removeprefix("f")
        if not low:
            raise _fail(source, "a term has an empty name")
        if digits.isascii() and digits.isdigit():
            paper = int(digits) < N_TERMS and low.startswith("f")
            raise _fail(source, f"term name {t.name!r} " + (f"clashes with the paper's F{int(digits)}" if paper else
                                                             "looks like a term id") + "; rename it")
        if low in RULES:
            raise _fail(source, f"term name {t.name!r} is also a named rule; rename it")
        if low in seen:
            raise _fail(source, f"two terms are named {t.name!r}; rename one")
        seen[low] = t.name


def load(source: str) -> UserTerms:
    """The terms ``source`` (a ``.py`` path or a module name) declares; ``ConfigError`` (one line)
    when it cannot be loaded or declares none. Cached by path and digest."""
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"--terms-from must name a Python file or module, got {source!r}")
    if _is_path(source):
        path = os.path.abspath(source)
        raw = _read(source, path)
        module = None
    elif all(part.isidentifier() for part in source.split(".")):
        path, raw, module = _import(source)
        path = os.path.abspath(path)
    else:
        raise _fail(source, "neither a Python file (.py) nor a module name (mypkg.terms)")
    digest = hashlib.sha256(raw).hexdigest()
    key = ("file" if module is None else source, path, digest)
    if key not in _cache:
        if module is None:
            module = _run_file(source, path, raw, digest)
        _cache[key] = UserTerms(source, path, digest, _terms_of(source, module))
    got = _cache[key]
    return got if got.source == source else got._replace(source=source)


def fingerprint(cfg: TrainConfig) -> dict[str, Any] | None:
    """What the run's pool depends on (None without ``terms_from``): the setting, the source file's
    absolute path, the sha256 of its bytes and the names of the user's ids, as recorded in
    ``cfg.extra["user_terms"]``."""
    if not cfg.terms_from:
        return None
    u = load(cfg.terms_from)
    return {"terms_from": u.source, "path": u.path, "sha256": u.sha256, "names": u.names}


def recorded_extra(cfg: TrainConfig) -> dict[str, Any]:
    """What a run's config.json records of its user terms in ``extra``: ``{"user_terms":
    fingerprint(cfg)}``, or {} without ``terms_from``."""
    fp = fingerprint(cfg)
    return {} if fp is None else {EXTRA_KEY: fp}


def change(cfg: TrainConfig) -> str | None:
    """Why the pool of ``cfg`` is not the one its recorded fingerprint names (None: the same, or
    nothing recorded, or the record is of another ``terms_from``: a new setting, which a resume
    refuses as a changed setting)."""
    old = cfg.extra.get(EXTRA_KEY)
    if not cfg.terms_from or not isinstance(old, dict) or old.get("terms_from") != cfg.terms_from:
        return None
    u = load(cfg.terms_from)
    if old.get("sha256") != u.sha256:
        return (f"--terms-from {cfg.terms_from!r}: {u.path} changed since the run recorded it (sha256 "
                f"{str(old.get('sha256'))[:12]}… then, {u.sha256[:12]}… now); the run's Θ belongs to the terms it "
                "was trained with: restore that file (or start a new run)")
    return None


def pool_of(cfg: TrainConfig) -> Pool | None:
    """The pool of ``cfg``'s rule: None (the paper's ten) without ``terms_from``, else the paper's ten
    and the user's terms. ``ConfigError`` when the file changed since ``cfg`` recorded it (``change``)."""
    if not cfg.terms_from:
        return None
    msg = change(cfg)
    if msg:
        raise ConfigError(msg)
    return load(cfg.terms_from).pool


def term_parser(cfg: TrainConfig) -> Callable[[str], tuple[int, ...]]:
    """``parse(spec)``: sorted term ids from a named rule or a comma list of ids (``10``, ``F10``) and
    user term names, each in the pool of ``cfg`` (loaded here: ``ConfigError`` when it cannot be)."""
    u = load(cfg.terms_from)
    n = N_TERMS + len(u.terms)
    by_name = {t.name.strip().lower(): N_TERMS + i for i, t in enumerate(u.terms)}

    def parse(spec: str) -> tuple[int, ...]:
        s = spec.strip().lower()
        if s in RULES:
            return RULES[s]
        ids = []
        for tok in s.split(","):
            t = tok.strip()
            digits = t.removeprefix("f")
            if t in by_name:
                ids.append(by_name[t])
            elif digits.isascii() and digits.isdigit():
                ids.append(int(digits))
            else:
                raise ConfigError(f"unknown term {t!r} in {spec!r}: use a named rule ({', '.join(RULES)}), term ids "
                                  f"0-{n - 1} or the names of --terms-from's terms ({', '.join(by_name)})")
        bad = sorted({i for i in ids if i >= n})
        if bad:
            raise ConfigError(f"term id(s) {bad} outside the pool of {n} terms (F0-F9 and --terms-from's "
                              f"{len(u.terms)}: ids 0-{n - 1})")
        return tuple(sorted(set(ids)))

    return parse
