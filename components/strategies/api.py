"""The strategy API: parameters, declared features, a decision step, and the registry that finds them.

A strategy is a class::

    from tradebus.components.strategies import FLAT, HOLD, LONG, SHORT, Field, Params, Strategy, f

    class CrossParams(Params):
        fast: int = Field(10, ge=1)
        slow: int = Field(30, ge=2)

    class Cross(Strategy):
        \"\"\"Long when the fast SMA crosses above the slow one; out (or short) on the cross below.\"\"\"
        params = CrossParams

        @staticmethod
        def features(p):
            return {"fast": f("sma", p.fast), "slow": f("sma", p.slow)}

        @staticmethod
        def decide(cur, prev, pos, p):
            if prev.fast < prev.slow and cur.fast > cur.slow:
                return LONG
            if prev.fast > prev.slow and cur.fast < cur.slow:
                return SHORT if p.allow_short else FLAT
            return HOLD

``features`` names what the step reads: library indicators (``f("ema", 20)``), so warm-up comes from their
lookbacks and every value is the one known at the bar's close. ``higher`` (optional) adds features of
higher timeframes, ``{"1h": {"trend": f("adx", 14)}}``, each the last *closed* higher bar's. ``decide``
sees this bar's row (``cur``) and the previous one (``prev``), by the names declared, the position's
direction ``pos`` (-1, 0, 1) and the parameters ``p`` by name (numbers as floats, booleans as 0/1). It
returns LONG, SHORT, FLAT or HOLD (no opinion), and must be a pure function of those: the replay asks it
ahead of time on bars where nothing else happens.

With ``compiled = True`` (the default) the step is compiled by numba: the replay, the daemons and the
sweep kernel all run that one compiled function, and a sweep runs it at full speed. Helpers it calls must
be compiled too (decorate them with ``helper``). With ``compiled = False`` the step is plain Python (any
library, any code): replay, paper, demo and live run it; a sweep refuses it, saying so.

A config names a strategy by id: a built-in (``sma_cross``), ``module:Class`` for a class in an importable
module (the working directory is searched too), or the name of an entry point in the group
``tradebus.strategies``. A plugin's run and trial ids include a digest of the file that defines it, so
results from an edited strategy are never mistaken for the old one's.
"""

from __future__ import annotations

import ast
import collections
import hashlib
import importlib
import inspect
import keyword
import re
import sys
import textwrap
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar

import numba as nb
import numpy as np
from numba.core.errors import NumbaError
from pydantic import BaseModel, Field, model_validator

from tradebus.components.features import Feature, f
from tradebus.components.strict import StrictModel
from tradebus.components.timeframes import TIMEFRAMES

__all__ = ["LONG", "SHORT", "FLAT", "HOLD", "Params", "FastSlowParams", "Strategy", "StrategyDef", "StrategyError",
           "Field", "Feature", "f", "helper", "require_below", "define", "register", "get", "for_params", "known",
           "decision_function", "DECIDE", "ENTRY_POINTS"]

LONG, SHORT, FLAT, HOLD = 1, -1, 0, 2
TARGETS = (LONG, SHORT, FLAT, HOLD)
ENTRY_POINTS = "tradebus.strategies"

helper = nb.njit(cache=True, nogil=True)
"""Decorate a function a compiled ``decide`` calls (numba's ``njit``, cached beside its file)."""


class StrategyError(ValueError):
    """A strategy that cannot be found, loaded or compiled, with the reason."""


class Params(StrictModel):
    """Base of strategy parameters: strict, immutable, no unknown keys, finite numbers."""

    allow_short: bool = False

    def numbers(self) -> list[str]:
        """Names of the numeric parameters (bools count), in declaration order: what ``decide`` reads as
        ``p``; text parameters, such as a timeframe, shape the features, not the decision."""
        return [k for k in type(self).model_fields if not isinstance(getattr(self, k), str)]

    def vector(self) -> np.ndarray:
        """The numeric parameters as float64, in ``numbers()`` order."""
        return np.array([float(getattr(self, k)) for k in self.numbers()], dtype=np.float64)


def require_below(model: BaseModel, low: str, high: str) -> None:
    """Refuse parameters whose ``low`` field is not below their ``high`` one (fast < slow, ...)."""
    a, b = getattr(model, low), getattr(model, high)
    if a >= b:
        raise ValueError(f"{low} ({a}) must be < {high} ({b})")


class FastSlowParams(Params):
    """Parameters of a strategy built on a fast and a slow average; fast must be the shorter."""

    fast: int = Field(10, ge=1)
    slow: int = Field(30, ge=2)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> "FastSlowParams":
        require_below(self, "fast", "slow")
        return self


class Strategy:
    """Subclass this to write a strategy (see the module's documentation)."""

    id: ClassVar[str] = ""  # built-ins set it; a plugin's id is how the config names it
    params: ClassVar[type[Params]] = Params
    compiled: ClassVar[bool] = True

    @staticmethod
    def features(p: Any) -> dict[str, Feature]:
        raise NotImplementedError

    @staticmethod
    def higher(p: Any) -> dict[str, dict[str, Feature]]:
        return {}

    @staticmethod
    def decide(cur: Any, prev: Any, pos: int, p: Any) -> int:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class StrategyDef:
    """What the engine runs: features, and a decision step over rows laid out as ``row_names`` says.

    ``decide(cur, prev, pos, p)`` takes the rows as float arrays (or tuples) and ``p`` as the parameter
    vector. A family whose step depends on its parameters' shape (feature names, a composable spec's
    blocks) has ``specialize``, which returns the definition compiled for given parameters.
    """

    id: str
    params: type[Params]
    features: Callable[[Params], list[Feature]]
    decide: Callable[[Any, Any, int, Any], int]
    htf_features: Callable[[Params], dict[str, list[Feature]]] = field(default=lambda p: {})
    description: str = ""
    specialize: Callable[[Params], "StrategyDef"] | None = None
    compiled: bool = True  # False: a plain-Python step (replay and daemons only, never a sweep)
    source: str = ""  # a plugin's file digest (ids include it); built-ins are covered by the code digest


REGISTRY: dict[str, StrategyDef] = {}
_BUILTINS = ("builtin", "composable", "adaptive", "pool")


def register(defn: StrategyDef) -> StrategyDef:
    REGISTRY[defn.id] = defn
    return defn


def known() -> dict[str, StrategyDef]:
    """Built-in strategies and the plugins loaded so far, by id."""
    for name in _BUILTINS:  # imported here, not at the top: they import this module
        importlib.import_module(f"tradebus.components.strategies.{name}")
    return REGISTRY


def get(strategy_id: str) -> StrategyDef:
    """A strategy by id: built-in, ``module:Class``, or an entry point; StrategyError says why not."""
    defs = known()
    if strategy_id in defs:
        return defs[strategy_id]
    if ":" in strategy_id:
        return register(_load(strategy_id, strategy_id))
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name == strategy_id:
            return register(_load(ep.value, strategy_id))
    raise StrategyError(f"unknown strategy {strategy_id!r}; built-in: {', '.join(sorted(_builtin_ids()))}; "
                        "or name your own as module:Class")


def _builtin_ids() -> list[str]:
    return [sid for sid, d in known().items() if not d.source]


def for_params(strategy_id: str, params: Params) -> StrategyDef:
    """The definition that runs these parameters (compiled for their feature layout or spec)."""
    defn = get(strategy_id)
    return defn.specialize(params) if defn.specialize is not None else defn


_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _load(target: str, strategy_id: str) -> StrategyDef:
    """Import ``module:Class`` and define it; the working directory is searched after installed packages."""
    module_name, _, attr = target.partition(":")
    if not _MODULE_RE.match(module_name) or not attr.isidentifier():
        raise StrategyError(f"strategy {strategy_id!r}: give module:Class, e.g. my_strategies:Breakout")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise StrategyError(f"strategy {strategy_id!r}: no module {module_name!r} in {cwd} or the installed "
                                "packages") from None
        raise StrategyError(f"strategy {strategy_id!r}: importing {module_name} failed: {exc}") from None
    except Exception as exc:  # the user's module raised while importing: say what and where
        raise StrategyError(f"strategy {strategy_id!r}: importing {module_name} raised "
                            f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise StrategyError(f"strategy {strategy_id!r}: {module_name} has no Strategy subclass {attr!r}")
    path = inspect.getsourcefile(module)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else "no-source"
    return define(cls, strategy_id, source=digest)


# --- from a Strategy class to what the engine runs ---------------------------------------------------


def define(cls: type[Strategy], strategy_id: str = "", *, source: str = "") -> StrategyDef:
    """The definition of a Strategy class; the step is compiled per feature layout when first used."""
    sid = strategy_id or cls.id
    if not sid:
        raise StrategyError(f"{cls.__qualname__}: give it an id (class attribute) or name it module:Class")
    if not (isinstance(cls.params, type) and issubclass(cls.params, Params)):
        raise StrategyError(f"strategy {sid!r}: params must be a subclass of Params, got {cls.params!r}")
    for name in ("features", "decide"):
        if getattr(cls, name) is getattr(Strategy, name):
            raise StrategyError(f"strategy {sid!r}: {cls.__qualname__} does not define {name}()")
    user = cls.decide
    reads = _attributes_read(user)
    step = helper(user) if cls.compiled else user
    layouts: dict[tuple[tuple[str, ...], tuple[str, ...]], StrategyDef] = {}

    def own(p: Params) -> list[Feature]:
        return list(_declared(cls, sid, p)[0].values())

    def higher(p: Params) -> dict[str, list[Feature]]:
        return {tf: list(feats.values()) for tf, feats in _declared(cls, sid, p)[1].items()}

    def specialize(p: Params) -> StrategyDef:
        names = tuple(_row_names(sid, *_declared(cls, sid, p)))
        key = (names, tuple(p.numbers()))
        if key not in layouts:
            _check_reads(sid, reads, names, key[1])
            decide = _adapter(sid, step, *key, cls.compiled)
            layouts[key] = StrategyDef(sid, cls.params, own, decide, higher, base.description,
                                       compiled=cls.compiled, source=source)
        return layouts[key]

    doc = inspect.getdoc(cls) or ""
    base = StrategyDef(sid, cls.params, own, _unspecialized, higher, doc.split("\n\n")[0].replace("\n", " "),
                       specialize, cls.compiled, source)
    return base


def _unspecialized(cur: Any, prev: Any, pos: int, p: Any) -> int:
    raise TypeError("a strategy's step runs for given parameters: use for_params(id, params).decide")


def _declared(cls: type[Strategy], sid: str, p: Params) -> tuple[dict[str, Feature], dict[str, dict[str, Feature]]]:
    """The strategy's own and higher-timeframe features by name, checked."""
    own, higher = cls.features(p), cls.higher(p)
    if not isinstance(own, dict) or not own or not all(isinstance(v, Feature) for v in own.values()):
        raise StrategyError(f"strategy {sid!r}: features() returns a non-empty dict of name -> f(...), "
                            f"got {own!r}")
    if not isinstance(higher, dict) or not all(isinstance(v, dict) and all(isinstance(x, Feature) for x in v.values())
                                               for v in higher.values()):
        raise StrategyError(f"strategy {sid!r}: higher() returns {{timeframe: {{name: f(...)}}}}, got {higher!r}")
    for tf in higher:
        if tf not in TIMEFRAMES:
            raise StrategyError(f"strategy {sid!r}: higher(): timeframe {tf!r}; allowed: {', '.join(TIMEFRAMES)}")
    return own, higher


def _row_names(sid: str, own: dict[str, Feature], higher: dict[str, dict[str, Feature]]) -> list[str]:
    """Names in row order: own features, then each higher timeframe's (timeframes sorted as ``row_names``
    in the strategy host sorts them)."""
    names = list(own) + [n for tf in sorted(higher) for n in higher[tf]]
    for n in names:
        if not n.isidentifier() or keyword.iskeyword(n) or n.startswith("_"):
            raise StrategyError(f"strategy {sid!r}: feature name {n!r}: use a Python identifier that does not "
                                "start with '_'")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise StrategyError(f"strategy {sid!r}: feature names {sorted(dup)} are declared twice")
    return names


def _attributes_read(fn: Callable) -> dict[str, set[str]]:
    """Which attributes ``decide`` reads of each argument (``cur.fast``), by argument position name; empty
    when its source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return {}
    fn_node = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if fn_node is None or len(fn_node.args.args) != 4:
        return {}
    args = [a.arg for a in fn_node.args.args]
    reads: dict[str, set[str]] = {"cur": set(), "prev": set(), "p": set()}
    roles = {args[0]: "cur", args[1]: "prev", args[3]: "p"}
    for node in ast.walk(fn_node):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in roles:
            reads[roles[node.value.id]].add(node.attr)
    return reads


def _check_reads(sid: str, reads: dict[str, set[str]], names: tuple[str, ...], numbers: tuple[str, ...]) -> None:
    """A step that reads a feature or parameter nobody declared is refused before it runs."""
    for role, allowed, what in (("cur", names, "features"), ("prev", names, "features"), ("p", numbers, "numeric parameters")):
        unknown = sorted(reads.get(role, set()) - set(allowed))
        if unknown:
            raise StrategyError(f"strategy {sid!r}: decide reads {role}.{unknown[0]}, which is not declared; "
                                f"its {what}: {', '.join(allowed)}")


def _adapter(sid: str, step: Callable, names: tuple[str, ...], numbers: tuple[str, ...], compiled: bool) -> Callable:
    """``decide`` over float rows and a parameter vector, handing the user's step named tuples.

    Compiled: generated code builds the tuples field by field (numba cannot unpack an array), and LLVM
    folds them away; the result is checked to compile before anything runs. Plain Python: the result is
    checked to be a target on every call.
    """
    Row = collections.namedtuple("Row", names)  # type: ignore[misc]
    P = collections.namedtuple("P", numbers)  # type: ignore[misc]
    if not compiled:
        def decide(cur: Any, prev: Any, pos: int, p: Any) -> int:
            target = step(Row(*cur), Row(*prev), pos, P(*p))
            if target not in TARGETS:
                raise StrategyError(f"strategy {sid!r}: decide returned {target!r}; allowed: LONG (1), SHORT (-1), "
                                    "FLAT (0), HOLD (2)")
            return int(target)
        return decide
    row = ", ".join(f"{{0}}[{i}]" for i in range(len(names)))
    vec = ", ".join(f"p[{i}]" for i in range(len(numbers)))
    source = (f"def decide(cur, prev, pos, p):\n"
              f"    return step(Row({row.format('cur')}), Row({row.format('prev')}), pos, P({vec}))\n")
    scope: dict[str, Any] = {"step": step, "Row": Row, "P": P}
    exec(compile(source, f"<strategy {sid}>", "exec"), scope)  # the source is built above, not read
    decide = nb.njit(nogil=True)(scope["decide"])
    try:
        decide.compile(DECIDE.args)
    except NumbaError as exc:
        raise StrategyError(f"strategy {sid!r}: decide does not compile with numba ({_first_line(exc)}); "
                            "fix it, or set compiled = False to run it as plain Python (replay and daemons, "
                            "not sweeps)") from None
    return decide


def _first_line(exc: Exception) -> str:
    """The line of a numba error that says what is wrong (its messages open with pipeline noise)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # numba colours its messages
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    useful = [x for x in lines if not x.startswith(("Failed in", "During:", "File ", "^", "<source"))]
    return (useful or lines or ["unknown error"])[0][:300]


DECIDE = nb.types.int64(nb.types.float64[::1], nb.types.float64[::1], nb.types.int64, nb.types.float64[::1])
_DECISIONS: dict[StrategyDef, Callable] = {}


def decision_function(defn: StrategyDef) -> Callable:
    """The strategy's decision step as a first-class compiled function (signature ``DECIDE``): one
    compilation of a loop that takes it serves every strategy. Steps with a file of their own are cached
    on disk; a generated one compiles once per process."""
    if not defn.compiled:
        raise StrategyError(f"strategy {defn.id!r} has a plain-Python step (compiled = False): only replay and "
                            "daemons run it")
    fn = _DECISIONS.get(defn)
    if fn is None:
        py = defn.decide.py_func
        fn = _DECISIONS[defn] = nb.cfunc(DECIDE, cache=Path(py.__code__.co_filename).is_file())(py)
    return fn
