"""System configs: one YAML file per trading system, validated strictly.

Every error names the file, the field path, the bad value and what is allowed, e.g.::

    configs/x.yaml: fill: Input should be 'on_close' or 'next_open'; got 'tomorrow'

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, TypeVar

import msgspec
from pydantic import AfterValidator, BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator

from tradebus.components import strategies
from tradebus.components.policy import PolicySpec
from tradebus.components.strategies.pool import Member
from tradebus.components.strict import StrictModel
from tradebus.components.timeframes import TIMEFRAMES, check_resample
from tradebus.configs import yamlfile

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PRESET_RE = re.compile(r"^(first|last)_(\d{1,2})pct$|^last_(\d{1,5})d$")


class ConfigError(ValueError):
    """A config that cannot be used, with every problem spelled out."""


def _known_strategy(v: str) -> str:
    strategies.get(v)  # a StrategyError (a ValueError) says why not
    return v


def _known_timeframe(v: str) -> str:
    if v not in TIMEFRAMES:
        raise ValueError(f"timeframe {v!r}; allowed: {', '.join(TIMEFRAMES)}")
    return v


StrategyId = Annotated[str, AfterValidator(_known_strategy)]
"""A registered strategy's id (system configs and sweep jobs)."""
Timeframe = Annotated[str, AfterValidator(_known_timeframe)]


class _Strict(StrictModel):
    pass


class WindowSpec(_Strict):
    """Dates (UTC, end exclusive) or a preset: first_70pct, last_30pct (of the data), last_90d."""

    start: date | None = None
    end: date | None = None
    preset: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "WindowSpec":
        if self.preset is not None:
            if self.start or self.end:
                raise ValueError("give either start/end dates or a preset, not both")
            if not _PRESET_RE.match(self.preset):
                raise ValueError(f"preset {self.preset!r}: allowed first_NNpct, last_NNpct, last_NNNd")
        elif self.start is None or self.end is None:
            raise ValueError("give start and end dates (YYYY-MM-DD), or a preset")
        elif self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class StrategySpec(_Strict):
    id: StrategyId
    params: dict[str, Any] = {}


class StopRule(_Strict):
    kind: Literal["none", "atr", "percent"] = "none"
    atr_period: int = Field(14, ge=2)
    atr_mult: float = Field(2.0, gt=0)
    percent: float = Field(0.02, gt=0, lt=1)
    take_profit_rr: float | None = Field(None, gt=0)


class RiskProfile(_Strict):
    sizing: Literal["fixed_fraction", "risk_per_trade"] = "fixed_fraction"
    fraction: float = Field(1.0, gt=0, description="share of equity per position (before leverage)")
    risk_per_trade: float = Field(0.01, gt=0, lt=1, description="share of equity lost if the stop is hit")
    max_leverage: float = Field(1.0, gt=0, le=100)
    max_position_notional: float | None = Field(None, gt=0)
    stop: StopRule = StopRule()
    qty_step: float = Field(0.0, ge=0, allow_inf_nan=False,
                            description="the venue's quantity step: sizes round down to it (0: none)")

    @model_validator(mode="after")
    def _stop_for_risk_sizing(self) -> "RiskProfile":
        if self.sizing == "risk_per_trade" and self.stop.kind == "none":
            raise ValueError("sizing risk_per_trade needs a stop rule (stop.kind atr or percent)")
        return self


class Slippage(_Strict):
    model: Literal["none", "fixed_bps", "volume"] = "none"
    bps: float = Field(0.0, ge=0, description="fixed_bps: slippage per fill")
    impact: float = Field(0.1, ge=0, description="volume: bps of slippage per 1% of the bar's volume taken")


class CostModel(_Strict):
    maker_fee: float = Field(0.0002, ge=-0.01, le=0.01)
    taker_fee: float = Field(0.00055, ge=0, le=0.01)
    spread_bps: float = Field(0.0, ge=0, description="full bid-ask spread; half is paid on each fill")
    slippage: Slippage = Slippage()
    funding: bool = True


ADDED_FIELDS = (("risk", "qty_step"),)


class ForecasterRef(_Strict):
    """The forecast model a system's snapshots feed: a registry model id and a version (default: the one
    promoted when the run or daemon starts; the run's manifest names it)."""

    id: str
    version: str | None = None

    @field_validator("id")
    @classmethod
    def _token(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"{v!r} must be 1-64 characters of letters, digits, '_' or '-'")
        return v


class SystemConfig(_Strict):
    system: str
    venue: str = "bybit"
    market: Literal["linear", "spot"] = "linear"
    symbol: str
    timeframe: Timeframe
    higher_timeframes: tuple[str, ...] = ()
    windows: dict[Literal["hygiene", "test"], WindowSpec]
    strategy: StrategySpec
    risk: RiskProfile = RiskProfile()
    costs: CostModel = CostModel()
    fill: Literal["on_close", "next_open"] = "next_open"
    participation: float | None = Field(None, gt=0, le=1, description="max share of a bar's volume one order may fill")
    maintenance_margin: float = Field(0.005, ge=0, lt=1)
    initial_capital: float = Field(10_000.0, gt=0)
    forecaster: ForecasterRef | None = None
    # A composite system: a pool of strategies, the policy that picks among them on each forecast. The pool
    # becomes the strategy ``pool`` (its members' features, run by the pool host).
    policy: PolicySpec | None = None
    pool: dict[str, Member] | None = None

    @model_validator(mode="before")
    @classmethod
    def _pool_is_the_strategy(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pool") is not None:
            if isinstance(data.get("strategy"), dict) and data["strategy"].get("id") != "pool":
                raise ValueError("a composite system has a pool instead of a strategy: give one, not both")
            data = {**data, "strategy": {"id": "pool", "params": {"members": data["pool"]}}}
        return data

    @model_validator(mode="after")
    def _composite_parts(self) -> "SystemConfig":
        if self.pool is None:
            if self.policy is not None:
                raise ValueError("policy: a policy needs a pool of strategies to choose from")
            if self.strategy.id == "pool":
                raise ValueError("strategy pool: write the members as the config's pool section")
            return self
        if self.forecaster is None or self.policy is None:
            raise ValueError("a composite system (pool) needs a forecaster and a policy")
        self.policy.check_members(list(self.pool))
        return self

    @field_validator("system", "symbol")
    @classmethod
    def _token(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"{v!r} must be 1-64 characters of letters, digits, '_' or '-'")
        return v

    @model_validator(mode="after")
    def _windows_and_htf(self) -> "SystemConfig":
        missing = {"hygiene", "test"} - set(self.windows)
        if missing:
            raise ValueError(f"windows needs {' and '.join(sorted(missing))}")
        for htf in self.higher_timeframes:
            if htf not in TIMEFRAMES:
                raise ValueError(f"higher_timeframes: {htf!r}; allowed: {', '.join(TIMEFRAMES)}")
            check_resample(self.timeframe, htf)
        return self

    # -- derived ----------------------------------------------------------------------------------

    # What the strategy section derives, computed once: a sweep trial asks for it a dozen times. Keyed by the
    # strategy section itself, so a copy with another strategy (``model_copy``) never reads a stale one.
    _derived: dict[str, Any] = PrivateAttr(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["__pydantic_private__"] = {"_derived": {}}  # compiled steps stay in their process
        return state

    def _of_strategy(self, name: str, make: Callable[[], Any]) -> Any:
        d = self._derived
        if d.get("for") is not self.strategy:
            d.clear()
            d["for"] = self.strategy
        if name not in d:
            d[name] = make()
        return d[name]

    def params(self) -> strategies.Params:
        """The strategy's parameters, validated by the strategy's own model."""
        return self._of_strategy("params", lambda: strategies.get(self.strategy.id).params.model_validate(
            self.strategy.params))

    def strategy_def(self) -> strategies.StrategyDef:
        """The strategy definition that runs this config (a composable spec's is compiled for it)."""
        return self._of_strategy("defn", lambda: strategies.for_params(self.strategy.id, self.params()))

    def all_higher_timeframes(self) -> tuple[str, ...]:
        """Declared higher timeframes plus any the strategy reads, sorted by length."""
        needed = set(self.higher_timeframes) | set(strategies.get(self.strategy.id).htf_features(self.params()))
        return tuple(sorted(needed, key=TIMEFRAMES.__getitem__))

    def member(self, name: str, symbol: str | None = None) -> "SystemConfig":
        """One pool member of a composite as a system of its own (the composite's risk, costs and windows)."""
        assert self.pool is not None
        data = self.model_dump(mode="json", exclude={"pool", "policy", "forecaster", "strategy"})
        m = self.pool[name]
        return parse_config({**data, "system": f"{self.system}-{name}", "symbol": symbol or self.symbol,
                             "strategy": {"id": m.id, "params": m.params}})

    def canonical(self) -> dict[str, Any]:
        """The validated config as JSON data, strategy parameters included with their defaults and types,
        so equal configs written differently are equal here."""
        data = self.model_dump(mode="json")
        data["strategy"]["params"] = self.params().model_dump(mode="json")
        for added in ("forecaster", "policy", "pool"):  # added later: a system without them keeps its ids
            if data[added] is None:
                del data[added]
        # Fields added since ids were first stored are left out at their default, so those ids hold.
        for section, name in ADDED_FIELDS:
            if data[section][name] == type(self).model_fields[section].default.model_dump(mode="json")[name]:
                del data[section][name]
        return data

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of the config and, for a strategy of the user's own, of its file's
        digest (the package's own code is in every id already)."""
        h = hashlib.sha256(msgspec.json.encode(self.canonical(), order="sorted"))
        source = strategies.get(self.strategy.id).source
        if source:
            h.update(b"\0strategy source " + source.encode())
        return h.hexdigest()


def _format(path: Path | str, exc: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in (prefix, *err["loc"]) if x != "")
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f"; got {yamlfile.clip(repr(got), 120)}"
        lines.append(f"{path}: {loc or '(top level)'}: {msg}{shown}")
    return lines


def parse_config(data: Any, source: Path | str = "<config>") -> SystemConfig:
    """Validate already-loaded config data."""
    config = parse_model(SystemConfig, data, source, "a system config")
    try:
        config.params()
    except ValidationError as exc:
        raise ConfigError("\n".join(_format(source, exc, "strategy.params"))) from None
    try:
        config.strategy_def()  # features declared well, the step compiles
    except strategies.StrategyError as exc:
        raise ConfigError(f"{source}: strategy.id: {exc}") from None
    for htf in config.all_higher_timeframes():
        try:
            check_resample(config.timeframe, htf)
        except ValueError as exc:
            raise ConfigError(f"{source}: strategy.params: {exc}") from None
    return config


def read_yaml(path: Path | str) -> Any:
    """A YAML file's data, read under ``configs.yamlfile``'s bounds; a file that cannot be read or parsed is
    a ConfigError naming it (and the line, where YAML knows it)."""
    try:
        return yamlfile.read(path)
    except yamlfile.YamlError as exc:
        raise ConfigError(str(exc)) from None


M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], data: Any, source: Path | str, what: str) -> M:
    """Validate loaded data as ``model``; errors name the source, each field, the value and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {what} is a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format(source, exc))) from None


def load_config(path: Path | str) -> SystemConfig:
    """Read and validate a system config YAML file."""
    return parse_config(read_yaml(path), path)
