"""Portfolio files: several systems traded together on one clock and one account.

```yaml
portfolio: majors_5m                  # id: letters, digits, _ and -
initial_capital: 20000                # the account; each system gets its weight of it
windows:                              # one clock: these replace the systems' own windows
  hygiene: {start: 2025-01-01, end: 2025-10-01}
  test: {start: 2025-10-01, end: 2026-07-21}
systems:                              # system configs, paths relative to this file
  - {config: ../examples/sma_cross_btc_5m.yaml, weight: 0.5}
  - {config: ../examples/ema_rsi_atr_btc_5m.yaml, weight: 0.5}
```

Weights are shares of the account's capital (they may sum to less than 1: the rest stays cash). Each
system keeps its own sub-account at the simulated exchange, so two systems on one symbol each hold their
own position, and every fill is attributed to the system that caused it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tradebus.configs.schema import (_ID_RE, ConfigError, SystemConfig, WindowSpec, _Strict, load_config, parse_config,
                                     parse_model, read_yaml)


class Member(_Strict):
    config: str = Field(description="path of a system config, relative to the portfolio file")
    weight: float = Field(gt=0, le=1, allow_inf_nan=False, description="share of the account's capital")


class PortfolioFile(_Strict):
    portfolio: str
    initial_capital: float = Field(gt=0, allow_inf_nan=False)
    windows: dict[Literal["hygiene", "test"], WindowSpec]
    systems: list[Member] = Field(min_length=1, max_length=64)

    @field_validator("portfolio")
    @classmethod
    def _token(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"{v!r} must be 1-64 characters of letters, digits, '_' or '-'")
        return v

    @field_validator("windows")
    @classmethod
    def _both_windows(cls, v: dict[str, WindowSpec]) -> dict[str, WindowSpec]:
        missing = {"hygiene", "test"} - set(v)
        if missing:
            raise ValueError(f"windows needs {' and '.join(sorted(missing))}")
        return v

    @model_validator(mode="after")
    def _weights(self) -> "PortfolioFile":
        total = sum(m.weight for m in self.systems)
        if total > 1 + 1e-9:
            raise ValueError(f"systems' weights sum to {total:g}: at most 1 (the account's whole capital)")
        return self


class Portfolio:
    """A validated portfolio: its id, account capital and the member systems' configs (capital and windows
    set from the portfolio)."""

    def __init__(self, name: str, initial_capital: float, systems: list[SystemConfig], weights: list[float]) -> None:
        self.name = name
        self.initial_capital = initial_capital
        self.systems = systems
        self.weights = weights


def is_portfolio(data: object) -> bool:
    """Whether loaded YAML is a portfolio file (it lists systems) rather than a system config."""
    return isinstance(data, dict) and "systems" in data and "strategy" not in data


def load_portfolio(path: Path | str) -> Portfolio:
    """Read and validate a portfolio file and every system config it names; errors name the file and field."""
    path = Path(path)
    spec = parse_model(PortfolioFile, read_yaml(path), path, "a portfolio file")
    systems = []
    for i, member in enumerate(spec.systems):
        where = (path.parent / member.config).resolve()
        try:
            config = load_config(where)
        except ConfigError as exc:  # say which entry of the portfolio named the file
            raise ConfigError(f"{path}: systems.{i}.config {member.config!r}:\n{exc}") from None
        data = config.model_dump(mode="json")
        data["initial_capital"] = spec.initial_capital * member.weight
        data["windows"] = {k: w.model_dump(mode="json", exclude_none=True) for k, w in spec.windows.items()}
        systems.append(parse_config(data, where))
        if sum(s.system == systems[-1].system for s in systems) > 1:
            raise ConfigError(f"{path}: systems.{i}.config: system {config.system!r} is listed twice "
                              "(each system has one id, its events and positions are keyed by it)")
    return Portfolio(spec.portfolio, spec.initial_capital, systems, [m.weight for m in spec.systems])
